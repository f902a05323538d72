// A switchyard out of file descriptors: the connects it cannot even start are its own fault, not
// the server's, so the server is neither charged nor ejected.
import Glibc
import Testing

@Suite("Local resource shortage")
struct LocalResourceTests {
    @Test("Out of descriptors (RLIMIT_NOFILE 64): the server socket that cannot be made is not held against the server")
    func descriptorShortageIsNotTheServersFault() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        // One failed connect would eject the server (eject_after = 1, even the last one).
        let proxy = try SwitchyardProcess(
            config: OpsConfig.global()
                + TestConfig.service("svc", servers: ["a \(echo.address)"],
                                     extra: ["eject_after = 1", "max_ejection_percent = 100", "retries = 0", "check = none"]),
            launcher: ["/usr/bin/prlimit", "--nofile=64:64"])
        defer { proxy.stop() }
        let port = try proxy.port("svc")
        let adminPort = try proxy.adminPort()

        // Fill the descriptor table with relayed connections (two descriptors each) until one
        // is not relayed. A client accepted with exactly one descriptor left has no server socket:
        // that is the case under test. With none left, the accept itself fails (libuv closes the
        // connection); then one relayed connection goes and an idle admin connection takes one of
        // the two descriptors it freed, so that the next client gets the last one.
        var held: [TestClient] = []
        defer { held.forEach { $0.close() } }
        var idleAdmin: TestClient?
        defer { idleAdmin?.close() }
        var shortage: LogLine?
        for _ in 0..<80 where shortage == nil {
            let client = try TestClient(port: port)
            if (try? client.roundTrip("ping\n", timeout: .seconds(1))) != nil {
                held.append(client)
                continue
            }
            let address = client.localAddress
            client.close()
            if let line = try? proxy.waitForConnectionClosed(client: address, timeout: .seconds(1)) {
                shortage = line
            } else if idleAdmin == nil, let freed = held.popLast() {
                let freedAddress = freed.localAddress
                freed.close()
                _ = try proxy.waitForConnectionClosed(client: freedAddress)
                idleAdmin = try TestClient(port: adminPort)
            }
        }
        let line = try #require(shortage, "never ran out of descriptors with the server socket; log:\n\(proxy.recentLog())")
        #expect(line["end"] == "connect_failed", "\(line.raw)")
        #expect(line["error"]?.lowercased().contains("too many open files") == true, "\(line.raw)")

        // Descriptors back (every held connection's close logged, the admin one's soon after):
        // the server takes the next connections, nothing was ejected (an ejected only server
        // would refuse them for eject_time, 10 s).
        idleAdmin?.close()
        idleAdmin = nil
        for client in held {
            let address = client.localAddress
            client.close()
            _ = try proxy.waitForConnectionClosed(client: address)
        }
        held.removeAll()
        var relayed = 0
        try waitUntil("a connection relayed after the shortage", timeout: .seconds(3)) {
            let after = try TestClient(port: port)
            defer { after.close() }
            if (try? after.roundTrip("after the shortage\n", timeout: .seconds(1))) != nil { relayed += 1 }
            return relayed > 0
        }
        #expect(!proxy.logLines.contains { $0["state"] == "ejected" }, "server ejected for a local shortage:\n\(proxy.recentLog())")
        let metrics = try proxy.metrics()
        #expect(try metrics.value("switchyard_connect_failures_total", ["service": "svc", "server": "a", "reason": "local"]) >= 1)
        #expect(proxy.isRunning)
    }
}
