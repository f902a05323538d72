// Draining: the whole process on SIGTERM (drain_timeout, second signal), and single servers through
// the admin endpoint (drain, disable, enable).
import Foundation
import Glibc
import Testing

@Suite("Shutdown drain")
struct ShutdownDrainTests {
    @Test("SIGTERM: a transfer in progress finishes intact, new connections are refused, /readyz is 503, exit 0")
    func transferFinishesDuringDrain() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let proxy = try SwitchyardProcess(config: OpsConfig.global(drainTimeout: "20s")
            + OpsConfig.service("web", servers: ["echo \(echo.address)"]))
        defer { proxy.stop() }
        try proxy.waitForServersUp(service: "web", servers: ["echo"])
        let port = try proxy.port("web")
        #expect(try proxy.admin("GET", "/readyz").status == 200)

        // An idle connection keeps the drain going (and the admin endpoint up) until we close it.
        let idle = try TestClient(port: port)
        defer { idle.close() }
        try idle.roundTrip("idle\n")

        // A slow reader pulling 16 MiB back through the echo: at least 256 reads with a 3 ms pause each.
        let total = 16 << 20
        let seed: UInt64 = 0x5EED
        let transfer = BackgroundTask("slow transfer") { () throws -> (TransferResult, ContinuousClock.Instant) in
            let client = try TestClient(port: port)
            defer { client.close() }
            let result = try client.transfer(
                sendCount: total, sendSeed: seed, readChunk: 65536, pauseAfterRead: .milliseconds(3), timeout: .seconds(60))
            return (result, ContinuousClock.now)
        }
        // Signal once the transfer's bytes are flowing back to its client (beyond the idle one's).
        let idleBytes = "idle\n".utf8.count
        try waitUntil("the transfer to be under way", timeout: .seconds(10)) {
            let echoed = try proxy.status().server("web", "echo")?["bytes_sent_total"] as? Int ?? 0
            return echoed >= idleBytes + 256 * 1024
        }
        let signalledAt = ContinuousClock.now
        proxy.child.signal(SIGTERM)
        let draining = try proxy.waitForLogLine("draining") { $0.message == "draining" }
        #expect(draining["connections"] == "2", "\(draining)")

        let readyz = try proxy.admin("GET", "/readyz")
        #expect(readyz.status == 503 && readyz.text.contains("draining"), "GET /readyz while draining: \(readyz)")
        #expect(try proxy.admin("GET", "/healthz").status == 200, "/healthz while draining")
        // A reload now has nothing to apply to: 503, and not counted as a failed reload.
        let reload = try proxy.admin("POST", "/reload")
        #expect(reload.status == 503 && reload.text.contains("draining"), "POST /reload while draining: \(reload)")
        #expect(try proxy.metrics().value("switchyard_config_reloads_total", ["result": "failure"]) == 0)

        // The listener is closed: a new connection is refused (or, at worst, closed at once).
        do {
            let late = try TestClient(port: port, timeout: .seconds(2))
            defer { late.close() }
            let end = try late.waitForEnd(timeout: .seconds(1))
            #expect(end != nil, "a connection made during the drain was accepted and kept open")
        } catch {
            // Refused: what a draining listener should do.
        }
        try idle.roundTrip("still relaying while draining\n")

        let (result, finishedAt) = try transfer.wait(timeout: .seconds(60))
        #expect(result.sendError == nil && result.end == .eof, "\(result)")
        #expect(result.bytesSent == total && result.bytesReceived == total, "\(result)")
        #expect(result.receivedChecksum == PayloadStream.checksum(seed: seed, count: total), "echoed bytes differ from the bytes sent: \(result)")
        #expect(finishedAt > signalledAt, "the transfer finished before the signal, so it tested nothing")
        #expect(proxy.isRunning, "switchyard exited while a connection was still open")

        idle.close()
        let status = try proxy.child.waitForExit(timeout: .seconds(5))
        #expect(status == .exited(0), "\(status); log:\n\(proxy.recentLog())")
        proxy.child.waitForOutputEnd()
        #expect(proxy.logLines.contains { $0.message == "drained: every connection finished" }, "\(proxy.recentLog())")
        #expect(!proxy.logLines.contains { $0.message?.hasPrefix("drain_timeout reached") == true })
    }

    /// An echo service with `drain_timeout`, a connection through it ("hello\n" echoed), then
    /// SIGTERM and the `draining` log line; returns them and when the signal was sent.
    private func drainingWithHeldConnection(drainTimeout: String) throws
        -> (Backend, SwitchyardProcess, TestClient, ContinuousClock.Instant)
    {
        let echo = try Backend(name: "echo", behavior: .echo)
        let proxy = try SwitchyardProcess(config: OpsConfig.global(drainTimeout: drainTimeout)
            + OpsConfig.service("web", servers: ["echo \(echo.address)"]))
        try proxy.waitForServersUp(service: "web", servers: ["echo"])
        let held = try TestClient(port: try proxy.port("web"))
        try held.roundTrip("hello\n")
        let signalledAt = ContinuousClock.now
        proxy.child.signal(SIGTERM)
        _ = try proxy.waitForLogLine("draining") { $0.message == "draining" }
        return (echo, proxy, held, signalledAt)
    }

    @Test("drain_timeout: a connection still open is closed when it runs out, then exit 0")
    func drainTimeoutClosesConnection() throws {
        let (echo, proxy, held, signalledAt) = try drainingWithHeldConnection(drainTimeout: "1s")
        defer { held.close(); proxy.stop(); echo.stop() }
        try held.roundTrip("not cut off at once\n")

        let end = try held.waitForEnd(timeout: .seconds(5))
        let closedAfter = millisecondsSince(signalledAt)
        #expect(end != nil, "the held connection is still open 5 s after SIGTERM with drain_timeout = 1s")
        #expect(closedAfter >= 900, "the held connection was closed \(closedAfter) ms after SIGTERM, before drain_timeout (1 s)")
        let status = try proxy.child.waitForExit(timeout: .seconds(5))
        let exitedAfter = millisecondsSince(signalledAt)
        #expect(status == .exited(0), "\(status); log:\n\(proxy.recentLog())")
        #expect(exitedAfter < 4000, "exit took \(exitedAfter) ms after SIGTERM with drain_timeout = 1s")
        proxy.child.waitForOutputEnd()
        #expect(proxy.logLines.contains { $0.message?.hasPrefix("drain_timeout reached") == true }, "\(proxy.recentLog())")
        let record = try echo.waitForRecord("the held connection") { $0.bytesReceived > 0 }
        #expect(record.bytesReceived == "hello\n".utf8.count + "not cut off at once\n".utf8.count, "\(record)")
    }

    @Test("A second SIGTERM during the drain exits at once with status 0")
    func secondSignalExitsAtOnce() throws {
        let (echo, proxy, held, _) = try drainingWithHeldConnection(drainTimeout: "60s")
        defer { held.close(); proxy.stop(); echo.stop() }
        try held.roundTrip("draining, still open\n")
        #expect(proxy.isRunning)

        let secondAt = ContinuousClock.now
        let status = try proxy.terminate(signal: SIGTERM, timeout: .seconds(3))
        #expect(status == .exited(0), "\(status)")
        #expect(millisecondsSince(secondAt) < 2000, "exit took \(millisecondsSince(secondAt)) ms after the second SIGTERM")
        #expect(try held.waitForEnd(timeout: .seconds(2)) != nil, "the held connection was not closed at exit")
    }
}

@Suite("Server drain, disable and enable")
struct ServerDrainTests {
    static func backends() throws -> (Backend, Backend) {
        let a = try Backend(name: "a", behavior: .identify)
        do {
            return (a, try Backend(name: "b", behavior: .identify))
        } catch {
            a.stop()
            throw error
        }
    }

    /// A connection greeted by server `name` (round robin gets there within a few tries).
    static func connect(to name: String, port: UInt16) throws -> TestClient {
        for _ in 0..<10 {
            let (client, greeting) = try ReloadTests.connectAndIdentify(port: port)
            if greeting == name { return client }
            client.close()
        }
        throw HarnessError("10 new connections never reached server \(name)")
    }

    static func start(a: Backend, b: Backend, extra: [String] = []) throws -> SwitchyardProcess {
        let proxy = try SwitchyardProcess(config: OpsConfig.global()
            + OpsConfig.service("web", balance: "round_robin", servers: ["a \(a.address)", "b \(b.address)"], extra: extra))
        do {
            try proxy.waitForServersUp(service: "web", servers: ["a", "b"])
        } catch {
            proxy.stop()
            throw error
        }
        return proxy
    }

    @Test("disable: new connections never reach the server, established ones stay (on_down = keep); enable: they reach it again")
    func disableThenEnable() throws {
        let (a, b) = try Self.backends()
        defer { a.stop(); b.stop() }
        let proxy = try Self.start(a: a, b: b)
        defer { proxy.stop() }
        let port = try proxy.port("web")
        let held = try Self.connect(to: "a", port: port)
        defer { held.close() }
        try held.roundTrip("before\n")

        let disable = try proxy.admin("POST", "/services/web/servers/a/disable")
        #expect(disable.status == 200 && disable.text == "web/a: disabled\n", "\(disable)")
        let status = try proxy.status()
        #expect(status.state("web", "a") == "disabled" && status.server("web", "a")?["usable"] as? Bool == false, "\(status)")
        #expect(try proxy.metrics().value("switchyard_server_up", ["service": "web", "server": "a"]) == 0)
        let whileDisabled = try ReloadTests.identifyMany(port: port, count: 20)
        #expect(whileDisabled == ["b": 20], "new connections while a is disabled: \(whileDisabled)")
        try held.roundTrip("a is disabled, this connection stays (on_down = keep)\n")

        let enable = try proxy.admin("POST", "/services/web/servers/a/enable")
        #expect(enable.status == 200 && enable.text == "web/a: enabled\n", "\(enable)")
        #expect(try proxy.status().state("web", "a") == "up")
        let afterEnable = try ReloadTests.identifyMany(port: port, count: 10)
        #expect((afterEnable["a"] ?? 0) >= 3 && (afterEnable["b"] ?? 0) >= 3, "new connections after enabling a: \(afterEnable)")
        try held.roundTrip("after\n")
    }

    @Test("drain: an established connection to the server keeps working while new ones go elsewhere")
    func drainKeepsEstablished() throws {
        let (a, b) = try Self.backends()
        defer { a.stop(); b.stop() }
        let proxy = try Self.start(a: a, b: b)
        defer { proxy.stop() }
        let port = try proxy.port("web")
        let held = try Self.connect(to: "a", port: port)
        defer { held.close() }
        var heldBytes = 0
        func heldRoundTrip(_ text: String) throws {
            try held.roundTrip(text)
            heldBytes += text.utf8.count
        }
        try heldRoundTrip("before\n")

        let drain = try proxy.admin("POST", "/services/web/servers/a/drain")
        #expect(drain.status == 200 && drain.text == "web/a: draining\n", "\(drain)")
        let status = try proxy.status()
        #expect(status.state("web", "a") == "draining", "\(status)")
        #expect(status.server("web", "a")?["active_connections"] as? Int == 1, "\(status)")
        let whileDraining = try ReloadTests.identifyMany(port: port, count: 20)
        #expect(whileDraining == ["b": 20], "new connections while a drains: \(whileDraining)")
        for i in 0..<3 { try heldRoundTrip("draining, exchange \(i)\n") }

        held.close()
        let line = try proxy.waitForConnectionClosed(client: held.localAddress)
        #expect(line["end"] == "closed" && line["server"] == "a", "\(line)")
        let record = try a.waitForRecord("the held connection") { $0.bytesReceived == heldBytes }
        #expect(record.closing == .finished, "\(record)")
        try waitUntil("a's active connections to reach 0", timeout: .seconds(3)) {
            try proxy.status().server("web", "a")?["active_connections"] as? Int == 0
        }
        #expect(try proxy.status().state("web", "a") == "draining", "a drained server stays draining until enabled")
    }

    @Test("disable with on_down = close closes the established connection to the server")
    func disableClosesWithOnDownClose() throws {
        let (a, b) = try Self.backends()
        defer { a.stop(); b.stop() }
        let proxy = try Self.start(a: a, b: b, extra: ["on_down = close"])
        defer { proxy.stop() }
        let port = try proxy.port("web")
        let held = try Self.connect(to: "a", port: port)
        defer { held.close() }
        try held.roundTrip("before\n")
        let other = try Self.connect(to: "b", port: port)
        defer { other.close() }

        let disable = try proxy.admin("POST", "/services/web/servers/a/disable")
        #expect(disable.status == 200, "\(disable)")
        let end = try held.waitForEnd(timeout: .seconds(3))
        #expect(end != nil, "the connection to the disabled server is still open 3 s later (on_down = close)")
        let line = try proxy.waitForConnectionClosed(client: held.localAddress)
        #expect(line["server"] == "a" && line["end"] == "server_disabled", "\(line)")
        // The connection to b is untouched; new connections go to b.
        try other.roundTrip("b is fine\n")
        #expect(try ReloadTests.identifyMany(port: port, count: 6) == ["b": 6])
    }
}
