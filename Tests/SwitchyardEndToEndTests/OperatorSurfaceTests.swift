// What an operator sees when a configuration goes wrong in ways the file alone cannot show:
// listeners that meet on one socket only once names are resolved, another process on the port
// (with several workers the listening sockets set SO_REUSEPORT, so a plain bind would not
// notice), a server moved by the file, a server down from the start, reload warnings.
import Foundation
import Glibc
import Testing

@Suite("Operator surface")
struct OperatorSurfaceTests {
    /// Global section with the admin endpoint on and an explicit worker count.
    static func global(workers: Int, extra: [String] = []) -> String {
        var text = "[global]\nadmin = 127.0.0.1:0\nlog_level = info\nlog_format = json\nworkers = \(workers)\n"
        for line in extra { text += line + "\n" }
        return text + "\n"
    }

    /// A service with its own `splice` (not SWITCHYARD_TEST_SPLICE's) and no probes.
    static func service(_ name: String, server: String, extra: [String]) -> String {
        "[service \(name)]\nlisten = 127.0.0.1:0\nserver = \(server)\ncheck = none\n" + extra.map { $0 + "\n" }.joined() + "\n"
    }

    /// `localhost` must be 127.0.0.1 first (switchyard takes a name's first IPv4 answer).
    static func requireLocalhostIsLoopback() throws {
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo("localhost", "1", &hints, &result) == 0, let first = result else {
            throw HarnessError("localhost does not resolve to an IPv4 address here")
        }
        defer { freeaddrinfo(first) }
        let ip = first.pointee.ai_addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr.s_addr }
        guard ip == inet_addr("127.0.0.1") else { throw HarnessError("localhost is not 127.0.0.1 here") }
    }

    @Test("Two listeners that meet on one socket once resolved (localhost and 127.0.0.1) stop the start, naming both", arguments: [1, 2])
    func resolvedListenClashStopsTheStart(workers: Int) throws {
        try Self.requireLocalhostIsLoopback()
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let port = try reserveLoopbackPort()
        let config = Self.global(workers: workers)
            + OpsConfig.service("a", listen: "localhost:\(port)", servers: ["s \(echo.address)"])
            + OpsConfig.service("b", listen: "127.0.0.1:\(port)", servers: ["s \(echo.address)"])
        let proxy = try SwitchyardProcess(config: config, waitForStart: false)
        defer { proxy.stop() }
        let status = try proxy.child.waitForExit(timeout: .seconds(20))
        proxy.child.waitForOutputEnd()
        #expect(status == .exited(1), "\(status); stderr:\n\(proxy.stderrText)")
        let failure = try #require(proxy.logLines.first { $0.message == "cannot start" }, "\(proxy.stderrText)")
        #expect(failure["error"] == "service b: cannot listen on 127.0.0.1:\(port): it is 127.0.0.1:\(port), where service a listens too (listen localhost:\(port))",
                "\(failure.raw)")
    }

    @Test("A second instance on a port another switchyard listens on fails to start instead of sharing its traffic (listeners set SO_REUSEPORT)",
          arguments: [1, 2])
    func secondInstanceOnATakenPortFails(workers: Int) throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let port = try reserveLoopbackPort()
        let config = Self.global(workers: workers) + OpsConfig.service("a", listen: "127.0.0.1:\(port)", servers: ["s \(echo.address)"])
        let first = try SwitchyardProcess(config: config)
        defer { first.stop() }
        let second = try SwitchyardProcess(config: config, waitForStart: false)
        defer { second.stop() }
        let status = try second.child.waitForExit(timeout: .seconds(20))
        second.child.waitForOutputEnd()
        #expect(status == .exited(1), "\(status); stderr:\n\(second.stderrText)")
        let failure = try #require(second.logLines.first { $0.message == "cannot start" }, "\(second.stderrText)")
        #expect(failure["error"] == "service a: cannot listen on 127.0.0.1:\(port): address already in use (another process listens there)",
                "\(failure.raw)")
        // The first one still has every connection.
        let client = try TestClient(port: port)
        defer { client.close() }
        try client.roundTrip("still mine\n")
    }

    @Test("Swapping the admin endpoint's and a listener's addresses fails and says to do it in two reloads (both directions)")
    func adminListenerSwapSaysTwoReloads() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let adminPort = try reserveLoopbackPort()
        var listenPort = try reserveLoopbackPort()
        while listenPort == adminPort { listenPort = try reserveLoopbackPort() }
        func config(admin: UInt16, listen: UInt16) -> String {
            OpsConfig.global(admin: "127.0.0.1:\(admin)") + OpsConfig.service("a", listen: "127.0.0.1:\(listen)", servers: ["s \(echo.address)"])
        }
        let proxy = try SwitchyardProcess(config: config(admin: adminPort, listen: listenPort))
        defer { proxy.stop() }
        // Both swap: the listener's move meets the running admin endpoint.
        try proxy.rewriteConfig(config(admin: listenPort, listen: adminPort))
        var reply = try AdminHTTP.request(port: adminPort, method: "POST", path: "/reload")
        #expect(reply.status == 400 && reply.text.contains("the running admin endpoint has it: move the admin endpoint away in a reload of its own first"),
                "\(reply)")
        // The listener moves to a free port and the admin endpoint onto its old one (still open
        // until the reload is applied).
        var freePort = try reserveLoopbackPort()
        while freePort == adminPort || freePort == listenPort { freePort = try reserveLoopbackPort() }
        try proxy.rewriteConfig(config(admin: listenPort, listen: freePort))
        reply = try AdminHTTP.request(port: adminPort, method: "POST", path: "/reload")
        #expect(reply.status == 400 && reply.text.contains("a listener of the running configuration has it"), "\(reply)")
        // Nothing changed.
        let client = try TestClient(port: listenPort)
        defer { client.close() }
        try client.roundTrip("still here\n")
        #expect(try AdminHTTP.request(port: adminPort, method: "GET", path: "/healthz").status == 200)
    }

    @Test("A start whose admin endpoint cannot listen fails, naming it, and logs no listener as listening")
    func adminBindFailureStopsTheStart() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let taken = try Socket.makeLoopbackListener()
        defer { close(taken.fd) }
        let proxy = try SwitchyardProcess(
            config: OpsConfig.global(admin: "127.0.0.1:\(taken.port)") + OpsConfig.service("a", servers: ["s \(echo.address)"]),
            waitForStart: false)
        defer { proxy.stop() }
        let status = try proxy.child.waitForExit(timeout: .seconds(20))
        proxy.child.waitForOutputEnd()
        #expect(status == .exited(1), "\(status); stderr:\n\(proxy.stderrText)")
        let failure = try #require(proxy.logLines.first { $0.message == "cannot start" }, "\(proxy.stderrText)")
        #expect(failure["error"]?.hasPrefix("admin endpoint: cannot listen on 127.0.0.1:\(taken.port): address already in use") == true, "\(failure.raw)")
        #expect(proxy.logCount("listening") == 0, "a listener of the failed start was logged as listening:\n\(proxy.stderrText)")
    }

    @Test("A reload whose listeners meet on one socket once resolved fails and changes nothing; with two workers too", arguments: [1, 2])
    func resolvedListenClashFailsTheReload(workers: Int) throws {
        try Self.requireLocalhostIsLoopback()
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let port = try reserveLoopbackPort()
        let spare = try reserveLoopbackPort()
        let before = Self.global(workers: workers) + OpsConfig.service("a", listen: "127.0.0.1:\(port)", servers: ["s \(echo.address)"])
        let proxy = try SwitchyardProcess(config: before)
        defer { proxy.stop() }
        // c binds a new port first; then b's name meets a's socket: the reload fails, and c's
        // listener, closed again, is never logged as listening.
        try proxy.rewriteConfig(before
            + OpsConfig.service("c", listen: "127.0.0.1:\(spare)", servers: ["s \(echo.address)"])
            + OpsConfig.service("b", listen: "localhost:\(port)", servers: ["s \(echo.address)"]))
        proxy.child.signal(SIGHUP)
        let failure = try proxy.waitForLogLine("reload failed") { $0.message == "reload failed; keeping the running configuration" }
        #expect(failure["error"] == "service b: cannot listen on localhost:\(port): it is 127.0.0.1:\(port), where service a listens too (listen 127.0.0.1:\(port))",
                "\(failure.raw)")
        #expect(proxy.listenAddresses(service: "c").isEmpty, "c was logged as listening:\n\(proxy.recentLog())")
        #expect(throws: (any Error).self, "c's port must be closed again") { try TestClient(port: spare).close() }
        // Every connection still goes to service a.
        for _ in 0..<10 {
            let client = try TestClient(port: port)
            try client.roundTrip("a\n")
            client.close()
        }
        let status = try proxy.status()
        #expect(status.service("b") == nil, "\(status)")
        #expect(status.service("a")?["accepted_total"] as? Int == 10, "\(status)")
    }

    @Test("A reload moves a listener between overlapping addresses (127.0.0.1:P to 0.0.0.0:P and back); another spelling (localhost:P) keeps the socket",
          arguments: [1, 2])
    func overlappingMoveStillReloads(workers: Int) throws {
        try Self.requireLocalhostIsLoopback()
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let port = try reserveLoopbackPort()
        func config(_ listen: String) -> String {
            Self.global(workers: workers) + OpsConfig.service("a", listen: listen, servers: ["s \(echo.address)"])
        }
        let proxy = try SwitchyardProcess(config: config("127.0.0.1:\(port)"))
        defer { proxy.stop() }
        let moves = [("0.0.0.0:\(port)", "0.0.0.0:\(port)"), ("127.0.0.1:\(port)", "127.0.0.1:\(port)"), ("localhost:\(port)", "127.0.0.1:\(port)")]
        for (n, (listen, bound)) in moves.enumerated() {
            let opened = proxy.logCount("listening")
            let closed = proxy.logCount("stopped listening")
            try proxy.rewriteConfig(config(listen))
            try proxy.reloadBySignal(expectSuccessCount: n + 1)
            #expect(proxy.logCount("reload failed; keeping the running configuration") == 0, "\(proxy.recentLog())")
            #expect(try proxy.status().service("a")?["listeners"] as? [String] == [bound], "after the move to \(listen)")
            if listen.hasPrefix("localhost") {
                #expect(proxy.logCount("listening") == opened && proxy.logCount("stopped listening") == closed,
                        "the same socket was opened anew:\n\(proxy.recentLog())")
            } else {
                #expect(proxy.logCount("listening") == opened + 1 && proxy.logCount("stopped listening") == closed + 1, "\(proxy.recentLog())")
            }
            let client = try TestClient(port: port)
            try client.roundTrip("after the move to \(listen)\n")
            client.close()
        }
    }

    @Test("A server whose address the file changes stays disabled (and drained), and the log says it moved", arguments: ["disable", "drain"])
    func movedServerKeepsItsAdminState(action: String) throws {
        let a = try Backend(name: "a", behavior: .identify)
        defer { a.stop() }
        let b = try Backend(name: "b", behavior: .identify)
        defer { b.stop() }
        let aMoved = try Backend(name: "a-moved", behavior: .identify)
        defer { aMoved.stop() }
        func config(_ aAddress: String) -> String {
            OpsConfig.global() + OpsConfig.service("web", servers: ["a \(aAddress)", "b \(b.address)"])
        }
        let proxy = try SwitchyardProcess(config: config(a.address))
        defer { proxy.stop() }
        try proxy.waitForServersUp(service: "web", servers: ["a", "b"])
        let reply = try proxy.admin("POST", "/services/web/servers/a/\(action)")
        #expect(reply.status == 200, "\(reply)")
        let expected = action == "disable" ? "disabled" : "draining"
        #expect(try proxy.status().state("web", "a") == expected)

        try proxy.rewriteConfig(config(aMoved.address))
        try proxy.reloadBySignal(expectSuccessCount: 1)
        let moved = try proxy.waitForLogLine("server moved") { ($0.message?.hasPrefix("server moved") == true) }
        #expect(moved["server"] == "a" && moved["from"] == a.address && moved["to"] == aMoved.address, "\(moved.raw)")
        #expect(!proxy.logLines.contains { ($0.message?.hasPrefix("server removed") == true) }, "\(proxy.recentLog())")
        // Give the moved server's probes time to find it up: it must stay out all the same.
        func passed() throws -> Double {
            try proxy.metrics().value("switchyard_health_checks_total", ["service": "web", "server": "a", "result": "success"])
        }
        let passedAtReload = try passed()
        try waitUntil("two probes of the moved server to pass", timeout: .seconds(5)) { try passed() >= passedAtReload + 2 }
        #expect(try proxy.status().state("web", "a") == expected)
        let seen = try ReloadTests.identifyMany(port: try proxy.port("web"), count: 6)
        #expect(seen == ["b": 6], "a new connection reached the \(expected) server: \(seen)")
    }

    @Test("A server down from the start is logged at warning with its probe's error, which /status shows")
    func serverDownFromTheStartIsLogged() throws {
        let up = try Backend(name: "up", behavior: .echo)
        defer { up.stop() }
        let closedPort = try reserveLoopbackPort()  // nothing listens there once it returns
        let proxy = try SwitchyardProcess(config: OpsConfig.global()
            + OpsConfig.service("web", servers: ["up \(up.address)", "gone 127.0.0.1:\(closedPort)"]))
        defer { proxy.stop() }
        let line = try proxy.waitForLogLine("server gone down") { $0.message == "server gone down: first probe failed" }
        #expect(line["level"] == "warning" && line["service"] == "web" && line["state"] == "down", "\(line.raw)")
        #expect(line["error"]?.contains("connection refused") == true, "\(line.raw)")
        #expect(!proxy.logLines.contains { ($0.message?.hasPrefix("server up down") == true) }, "\(proxy.recentLog())")
        // /status says why too, and only for the failing server.
        let status = try proxy.status()
        #expect((status.server("web", "gone")?["last_probe_error"] as? String)?.contains("connection refused") == true, "\(status)")
        #expect(status.server("web", "up")?["last_probe_error"] is NSNull, "\(status)")
    }

    @Test("Reload warnings compare with what runs: going back to the running log level warns no more")
    func reloadWarningsCompareWithTheRunningValues() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let service = OpsConfig.service("web", servers: ["echo \(echo.address)"])
        let proxy = try SwitchyardProcess(config: OpsConfig.global() + service)
        defer { proxy.stop() }
        let warning = "reload: a change of log_level or log_format takes effect at the next start"
        try proxy.rewriteConfig(OpsConfig.global().replacingOccurrences(of: "log_level = info", with: "log_level = debug") + service)
        try proxy.reloadBySignal(expectSuccessCount: 1)
        #expect(proxy.logCount(warning) == 1, "\(proxy.recentLog())")
        try proxy.rewriteConfig(OpsConfig.global() + service)
        try proxy.reloadBySignal(expectSuccessCount: 2)
        #expect(proxy.logCount(warning) == 1, "the file is back to the running values:\n\(proxy.recentLog())")
    }

    @Test("A connection whose reader stopped is cut at idle_timeout after the last byte moved, not twice that", arguments: ["off", "on"])
    func stalledConnectionIsCutOnTime(splice: String) throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let proxy = try SwitchyardProcess(config: TestConfig.global()
            + Self.service("stall", server: "echo \(echo.address)", extra: ["idle_timeout = 4s", "splice = \(splice)"]))
        defer { proxy.stop() }
        // The client writes and never reads: the echo backs up until nothing moves any more.
        let client = try TestClient(port: try proxy.port("stall"), receiveBuffer: 16 * 1024)
        defer { client.close() }
        let connected = ContinuousClock.now
        var lastSend = connected
        let chunk = [UInt8](repeating: 0x61, count: 16 * 1024)
        while (try? client.send(chunk, timeout: .milliseconds(500))) != nil {
            lastSend = .now
            if lastSend - connected > .seconds(3) { break }
        }
        let stalledAfterMs = Int((lastSend - connected) / .milliseconds(1))
        #expect(stalledAfterMs < 3000, "the client could still send after 3 s: nothing stalled")
        let line = try proxy.waitForConnectionClosed(client: client.localAddress, timeout: .seconds(15))
        #expect(line["end"] == "idle_timeout", "\(line.raw)")
        // Nothing moved since about `stalledAfterMs`: the cut is due then + 4 s (the checks come
        // every quarter, so up to 1 s later). It used to come at 8 s, a whole timeout late.
        let duration = try #require(line["duration_ms"].flatMap { Int($0) })
        #expect(duration >= 4000, "\(line.raw)")
        #expect(duration < stalledAfterMs + 4000 + 1000 + 1000, "cut \(duration) ms after the start; the last byte moved at about \(stalledAfterMs) ms: \(line.raw)")
    }

    @Test("A client that closes before reading the answer: logged the same with and without splice (closed, not an error)", arguments: ["off", "on"])
    func closeBeforeAnswerIsAPlainClose(splice: String) throws {
        let backend = try Backend(name: "late", behavior: .replyAfterEOF(replyBytes: 9))
        defer { backend.stop() }
        let proxy = try SwitchyardProcess(config: TestConfig.global()
            + Self.service("late", server: "late \(backend.address)", extra: ["splice = \(splice)"]))
        defer { proxy.stop() }
        let port = try proxy.port("late")
        var clients: [String] = []
        for _ in 0..<20 {
            let client = try TestClient(port: port)
            try client.send("hello\n")
            clients.append(client.localAddress)
            client.close()  // its kernel answers the 9-byte reply with a reset
        }
        for address in clients {
            let line = try proxy.waitForConnectionClosed(client: address)
            #expect(["closed", "client_reset"].contains(line["end"]), "\(line.raw)")
            #expect(line["end"] != "client_error" && line["error"] != "socket is not connected", "\(line.raw)")
        }
    }

    @Test("A log reader that stops reading never stalls traffic: lines past the buffer are dropped, counted in /metrics, and a notice says how many")
    func stalledLogReaderStallsNothing() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let proxy = try SwitchyardProcess(config: Self.global(workers: 1)
            + Self.service("logged", server: "echo \(echo.address)", extra: []))
        defer { proxy.stop() }
        let port = try proxy.port("logged")
        _ = try proxy.adminPort()  // read from the log before it stops being read
        proxy.child.stderr.pause()
        var resumed = false
        defer { if !resumed { proxy.child.stderr.resume() } }
        // One `connection closed` line (~250 bytes) each: the 64 KiB pipe is full after ~260 and
        // the 1 MiB queue after ~4,200 more. A switchyard that wrote on its loop stopped at the
        // first of those: this connection's round trip timed out. Go on until lines are dropped,
        // then 500 more.
        var connections = 0
        var droppedFrom: Int?
        while droppedFrom.map({ connections < $0 + 500 }) ?? (connections < 20_000) {
            let client = try TestClient(port: port)
            do {
                try client.roundTrip("hello \(connections)\n")
            } catch {
                client.close()
                throw HarnessError("connection \(connections + 1) with the log unread: \(error)")
            }
            client.close()
            connections += 1
            if droppedFrom == nil, connections % 250 == 0, try proxy.metrics().value("switchyard_log_lines_dropped_total") > 0 {
                droppedFrom = connections
            }
        }
        #expect(droppedFrom != nil, "nothing dropped after \(connections) connections: the reader never fell behind?")
        // Every line is written or dropped, none is lost unsaid; wait for the last to be either.
        // (The admin endpoint answers all along: the loop never waits for the log.)
        try waitUntil("all \(connections) lines queued or dropped", timeout: .seconds(10)) {
            try proxy.status().root["active_connections"] as? Int == 0
        }
        let dropped = try proxy.metrics().value("switchyard_log_lines_dropped_total")
        #expect(dropped > 0, "nothing was dropped: the reader never fell behind?")
        proxy.child.stderr.resume()
        resumed = true
        // Once read again, the next line is preceded by the notice of what was lost.
        // (From another address: thousands of connections reused the ephemeral ports.)
        let client = try TestClient(port: port, sourceIP: "127.0.0.2")
        try client.roundTrip("after\n")
        client.close()
        // Behind ~1 MiB of queued lines, which this process reads and parses first: on a busy
        // machine that takes seconds.
        let last = try proxy.waitForConnectionClosed(client: client.localAddress, timeout: .seconds(60))
        let lines = proxy.logLines
        let notices = lines.filter { $0.message == "log lines dropped: standard error was not read fast enough" }
        #expect(notices.count == 1, "\(notices.map(\.raw))")
        #expect(notices.first?["level"] == "warning")
        #expect(notices.first.flatMap { $0["dropped"] }.flatMap(Double.init) == dropped)
        let closedLines = lines.filter { $0.message == "connection closed" && $0["service"] == "logged" }
        #expect(closedLines.count + Int(dropped) == connections + 1,
                "\(closedLines.count) lines written + \(Int(dropped)) dropped for \(connections + 1) connections")
        // The notice comes right before the line that found room again.
        let noticeIndex = try #require(lines.firstIndex { $0.message == notices.first?.message })
        #expect(noticeIndex + 1 < lines.count && lines[noticeIndex + 1].raw == last.raw)
    }

    /// A long answer is more than one read holds (the relay passes on what it has, then resets).
    enum AbortCase: String, CaseIterable, Sendable { case firstAnswer, answerToAnUpload, longAnswerToAnUpload }

    @Test("A server that answers and resets at once: the client gets the answer, then the reset (first answer; an upload refused while the client still sends; a long answer: what was read, then the reset, never a clean end)",
          arguments: AbortCase.allCases, ["off", "on"])
    func answerBeforeAResetArrives(abort: AbortCase, splice: String) throws {
        let listener = try Socket.makeLoopbackListener()
        defer { close(listener.fd) }
        let proxy = try SwitchyardProcess(config: TestConfig.global()
            + Self.service("abort", server: "s 127.0.0.1:\(listener.port)", extra: ["splice = \(splice)", "retries = 0"]))
        defer { proxy.stop() }
        let client = try TestClient(port: try proxy.port("abort"))
        defer { client.close() }
        try client.send("request\n")
        // The server side: accept, read the request.
        let server = try waitFor("the connection at the server", timeout: .seconds(5)) { Socket.acceptNonBlocking(listener.fd) }
        var serverOpen = true
        defer { if serverOpen { close(server) } }
        var request: [UInt8] = []
        try waitUntil("the request at the server", timeout: .seconds(5)) {
            var chunk = [UInt8](repeating: 0, count: 64)
            let n = recv(server, &chunk, chunk.count, 0)
            if n > 0 { request += chunk[..<n] }
            return request.count >= 8
        }
        // With switchyard stopped, so that it finds everything at once when it wakes: (for the
        // upload) the client's next bytes, which the server will never read, then the server's
        // answer and its reset. Without care the answer was lost: the first answer's look for an
        // end behind it failed on the reset, and a write to the reset server failed first.
        try proxy.suspend()
        var resumed = false
        defer { if !resumed { proxy.resume() } }
        if abort != .firstAnswer {
            try client.send([UInt8](repeating: 0x75, count: 64 * 1024))
        }
        var answer = Array("refused: \(String(repeating: "x", count: 990))\n".utf8)
        if abort == .longAnswerToAnUpload {
            answer = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 % 251) }
        }
        // Whatever the socket takes at once (a long answer: some of it).
        let sent = send(server, answer, answer.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
        if abort == .longAnswerToAnUpload { #expect(sent > 0) } else { #expect(sent == answer.count) }
        answer = Array(answer[..<max(sent, 0)])
        Socket.setLingerZero(server)
        close(server)  // a reset, right behind the answer
        serverOpen = false
        kill(proxy.pid, SIGCONT)
        resumed = true
        let (bytes, end) = try client.readToEnd(timeout: .seconds(10))
        if abort == .longAnswerToAnUpload {
            // What the relay had read arrives in order; the rest is lost with the reset, which
            // must reach the client: a clean end here would pass a cut answer off as whole.
            #expect(!bytes.isEmpty && bytes.count <= answer.count && bytes[...] == answer[..<bytes.count],
                    "the client got \(bytes.count) bytes, not a prefix of the \(answer.count)-byte answer")
        } else {
            #expect(bytes == answer, "the client got \(bytes.count) bytes of the \(answer.count)-byte answer")
        }
        #expect(end == .reset, "an aborted stream must not end like a complete one (got \(end) after \(bytes.count) bytes)")
        let line = try proxy.waitForConnectionClosed(client: client.localAddress)
        #expect(line["end"] == "server_reset", "\(line.raw)")
    }
}
