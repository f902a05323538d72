// A switchyard out of file descriptors: the connects it cannot even start are its own fault, not
// the server's, so the server is neither charged nor ejected.
import Foundation
import Glibc
import Testing

@Suite("Local resource shortage")
struct LocalResourceTests {
    @Test("Out of descriptors (RLIMIT_NOFILE 64): neither a server socket nor a probe that cannot be made is held against the server")
    func descriptorShortageIsNotTheServersFault() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        // One failed connect would eject the server (eject_after = 1, even the last one), one
        // failed probe would take it down (fall = 1).
        let proxy = try SwitchyardProcess(
            config: OpsConfig.global()
                + TestConfig.service("svc", servers: ["a \(echo.address)"],
                                     extra: ["eject_after = 1", "max_ejection_percent = 100", "retries = 0",
                                             "check = tcp", "check_interval = 100ms", "fall = 1"]),
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

        // One descriptor was left (the failed session's client socket is closed again): an idle
        // admin connection takes it, so that the next probe cannot make its socket either.
        let pin = try TestClient(port: adminPort)
        defer { pin.close() }
        let skipped = try proxy.waitForLogLine("probe skipped", timeout: .seconds(5)) {
            ($0.message ?? "").hasPrefix("probe skipped") && $0["server"] == "a"
        }
        #expect(skipped["error"]?.lowercased().contains("too many open files") == true, "\(skipped.raw)")
        pin.close()

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
        #expect(!proxy.logLines.contains { $0["state"] == "down" }, "server taken down by a probe that could not start:\n\(proxy.recentLog())")
        let metrics = try proxy.metrics()
        #expect(try metrics.value("switchyard_connect_failures_total", ["service": "svc", "server": "a", "reason": "local"]) >= 1)
        #expect(proxy.isRunning)
    }

    @Test("At start the open file limit is raised to the hard limit, with a warning when that is short for max_connections")
    func openFileLimitIsRaised() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        for (maxConnections, warned) in [(10_000, true), (1_000, false)] {
            let proxy = try SwitchyardProcess(
                config: TestConfig.global(maxConnections: maxConnections)
                    + TestConfig.service("svc", servers: ["a \(echo.address)"]),
                launcher: ["/usr/bin/prlimit", "--nofile=256:4096"])
            defer { proxy.stop() }
            let limits = try String(contentsOfFile: "/proc/\(proxy.pid)/limits", encoding: .utf8)
            let row = limits.split(separator: "\n").first { $0.hasPrefix("Max open files") }.map(String.init) ?? ""
            #expect(row.split(separator: " ").filter { !$0.isEmpty }.dropFirst(3).prefix(2) == ["4096", "4096"], "\(row)")
            let raised = try proxy.waitForLogLine("open file limit raised") { $0.message == "open file limit raised" }
            #expect(raised["from"] == "256" && raised["to"] == "4096", "\(raised.raw)")
            let warning = proxy.logLines.first { ($0.message ?? "").hasPrefix("open file limit is low") }
            #expect((warning != nil) == warned, "max_connections \(maxConnections): \(warning?.raw ?? "no warning")")
            let client = try TestClient(port: try proxy.port("svc"))
            defer { client.close() }
            try client.roundTrip("still relaying\n")
        }
    }
}
