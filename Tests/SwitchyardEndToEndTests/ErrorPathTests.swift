// Failures and limits: a dead upstream, idle timeout, max_connections.
import Testing

@Suite("Error paths and limits")
struct ErrorPathTests {
    @Test("A service whose only server refuses closes the client; another service keeps relaying")
    func refusedUpstream() throws {
        let refusing = try RefusingPort()
        defer { refusing.close() }
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let proxy = try SwitchyardProcess(config: TestConfig.global()
            + TestConfig.service("dead", servers: ["nobody 127.0.0.1:\(refusing.port)"])
            + TestConfig.service("live", servers: ["echo \(echo.address)"]))
        defer { proxy.stop() }

        let live = try TestClient(port: try proxy.port("live"))
        defer { live.close() }
        try live.roundTrip("before\n")

        let dead = try TestClient(port: try proxy.port("dead"))
        defer { dead.close() }
        let end = try dead.waitForEnd(timeout: .seconds(3))
        #expect(end != nil, "client of a service whose only server refuses is still open after 3 s")

        // The other service is unaffected, on an existing and on a new connection.
        try live.roundTrip("after\n")
        let live2 = try TestClient(port: try proxy.port("live"))
        defer { live2.close() }
        try live2.roundTrip("new connection\n")
        #expect(proxy.isRunning)

        dead.close()
        let line = try proxy.waitForConnectionClosed(client: dead.localAddress)
        #expect(line["service"] == "dead")
        #expect(line["client"] == dead.localAddress)
    }

    @Test("A server that accepts then closes or resets at once: the client is closed", arguments: ["close", "reset"])
    func upstreamClosesAtOnce(mode: String) throws {
        let backend = try Backend(name: "flaky", behavior: mode == "close" ? .closeOnAccept : .resetOnAccept)
        defer { backend.stop() }
        let proxy = try SwitchyardProcess(config: TestConfig.global()
            + TestConfig.service("flaky", servers: ["flaky \(backend.address)"]))
        defer { proxy.stop() }

        let client: TestClient
        do {
            client = try TestClient(port: try proxy.port("flaky"))
        } catch let error as HarnessError where error.description.contains("Connection reset by peer") {
            // Switchyard accepted, tried every attempt and reset the client before this thread
            // polled its connect: the client was closed, which is the behaviour under test.
            #expect(proxy.isRunning)
            return
        }
        defer { client.close() }
        let end = try client.waitForEnd(timeout: .seconds(3))
        #expect(end != nil, "client still open 3 s after the only server \(mode == "close" ? "closed" : "reset") the upstream connection")

        client.close()
        let line = try proxy.waitForConnectionClosed(client: client.localAddress)
        #expect(line["service"] == "flaky")
        #expect(proxy.isRunning)
    }

    @Test("idle_timeout closes an idle connection and spares one that keeps talking")
    func idleTimeout() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let proxy = try SwitchyardProcess(config: TestConfig.global()
            + TestConfig.service("idle", servers: ["echo \(echo.address)"], idleTimeout: "300ms"))
        defer { proxy.stop() }
        let port = try proxy.port("idle")

        // A byte every ~100 ms for a second: never idle for 300 ms, so it must survive.
        let busy = try TestClient(port: port)
        defer { busy.close() }
        let busyStart = ContinuousClock.now
        var exchanges = 0
        while ContinuousClock.now - busyStart < .seconds(1) {
            try busy.roundTrip("x")
            exchanges += 1
            pause(.milliseconds(100))  // the traffic pattern under test
        }
        try busy.roundTrip("still open\n")
        #expect(exchanges >= 5)

        // An idle connection is closed by switchyard, not before ~300 ms and well within 3 s.
        let idle = try TestClient(port: port)
        defer { idle.close() }
        try idle.roundTrip("hello\n")
        let lastTraffic = ContinuousClock.now
        let end = try idle.waitForEnd(timeout: .seconds(3))
        let idleFor = millisecondsSince(lastTraffic)
        #expect(end != nil, "idle connection still open 3 s after its last byte (idle_timeout = 300ms)")
        #expect(idleFor >= 250, "idle connection closed after only \(idleFor) ms (idle_timeout = 300ms)")
        #expect(proxy.isRunning)
    }

    @Test("max_connections = 5: the 6th connection is closed at once, a freed slot is usable again")
    func maxConnections() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let proxy = try SwitchyardProcess(config: TestConfig.global(maxConnections: 5)
            + TestConfig.service("capped", servers: ["echo \(echo.address)"]))
        defer { proxy.stop() }
        let port = try proxy.port("capped")

        var held: [TestClient] = []
        defer { held.forEach { $0.close() } }
        for i in 0..<5 {
            let client = try TestClient(port: port)
            held.append(client)
            try client.roundTrip("client \(i)\n")
        }
        try echo.waitForActive(5)

        #expect(echo.dataConnectionCount == 5)

        // The 6th is closed at once; what it sends must not reach a server.
        let sixth = try TestClient(port: port)
        defer { sixth.close() }
        try? sixth.send("knock\n")  // may already fail: the connection is closed at once
        let end = try sixth.waitForEnd(timeout: .seconds(2))
        #expect(end != nil, "6th connection (max_connections = 5) still open after 2 s")
        #expect(echo.dataConnectionCount == 5, "the connection over the limit was relayed to a server")
        for client in held { try client.roundTrip("still here\n") }

        // Close one of the five; once switchyard has logged it closed, a new connection works.
        let freed = held.removeFirst()
        freed.close()
        _ = try proxy.waitForConnectionClosed(client: freed.localAddress)
        let again = try TestClient(port: port)
        defer { again.close() }
        try again.roundTrip("room again\n")
    }
}
