// Health checking and failover as a client sees them: servers die and come back under traffic,
// and switchyard's probes, retries, passive ejection, backups, on_down and panic decide where (and
// whether) each new connection goes. Intervals are short (check_interval = 200ms, eject_time =
// 300ms) so every state change takes well under a second.
import Glibc
import Testing

@Suite("Health checks and failover", .serialized)
struct HealthFailoverTests {
    /// Starts one `identify` backend per name (each greets with its name, then echoes).
    private static func backends(_ names: [String]) throws -> [HealthBackend] {
        var started: [HealthBackend] = []
        do {
            for name in names { started.append(try HealthBackend(name: name)) }
        } catch {
            started.forEach { $0.shutdown() }
            throw error
        }
        return started
    }

    /// Counts per server name.
    private static func tally(_ names: some Sequence<String>) -> [String: Int] {
        Dictionary(names.map { ($0, 1) }, uniquingKeysWith: +)
    }

    // MARK: 1. Retries hide a dying server

    @Test("500 short connections in a row while one of 3 servers dies after 150: not one client connection fails")
    func noClientConnectionFailsWhenAServerDies() throws {
        let backends = try Self.backends(["a", "b", "c"])
        defer { backends.forEach { $0.shutdown() } }
        // Debug level: switchyard logs each failed upstream connect ("connect failed"), which shows
        // that the retries really had failures to hide.
        let proxy = try SwitchyardProcess(config: TestConfig.global(logLevel: "debug")
            + HealthTestConfig.service("svc", servers: backends.map(\.serverLine)))
        defer { proxy.stop() }
        let port = try proxy.port("svc")
        try proxy.waitForServersUp(service: "svc", servers: ["a", "b", "c"])

        let victim = backends[2]
        var served: [String] = []
        var failures: [String] = []
        var mark = 0
        for i in 0..<500 {
            if i == 150 {
                mark = proxy.healthLogMark
                try victim.stop()  // listener closed, open connections reset
            }
            do {
                served.append(try HealthClient.exchange(port: port, payload: "request \(i)\n"))
            } catch {
                failures.append("connection \(i + 1): \(error)")
                served.append("-")
            }
        }

        #expect(failures.isEmpty, "\(failures.count) of 500 client connections failed; first: \(failures.prefix(3))")
        #expect(Set(served[..<150]) == ["a", "b", "c"], "before the stop not every server took connections: \(Self.tally(served[..<150]))")
        let after = Self.tally(served[150...])
        #expect(after["c"] == nil, "connections reached the stopped server: \(after)")
        #expect((after["a"] ?? 0) > 100 && (after["b"] ?? 0) > 100, "the other two servers did not share the rest: \(after)")

        // The dead server was really tried (the retries hid failed connects) and then taken out.
        let failedConnects = proxy.healthLines(message: "connect failed", service: "svc", server: "c", after: mark)
        #expect(!failedConnects.isEmpty, "no connect to the stopped server failed: failover was not exercised")
        try proxy.waitForHealthEvent(service: "svc", server: "c", state: "down", after: mark)
        #expect(proxy.isRunning)
    }

    // MARK: 2. Probe timing

    @Test("A stopped server is down within fall × check_interval + check_timeout, up again within rise × check_interval of its restart")
    func downAndUpWithinProbeBudget() throws {
        let backends = try Self.backends(["a", "b"])
        defer { backends.forEach { $0.shutdown() } }
        let a = backends[0]
        let proxy = try SwitchyardProcess(config: TestConfig.global()
            + HealthTestConfig.service("svc", servers: backends.map(\.serverLine), extra: ["rise = 2", "fall = 3"]))
        defer { proxy.stop() }
        let port = try proxy.port("svc")
        try proxy.waitForServersUp(service: "svc", servers: ["a", "b"])

        // check_interval 200ms (±10% jitter), check_timeout 200ms; margin for a busy machine.
        let interval = 200.0, checkTimeout = 200.0, margin = 700.0
        let downLimit = Int64(3 * interval * 1.1 + checkTimeout + margin)
        let upLimit = Int64(2 * interval * 1.1 + margin)

        var mark = proxy.healthLogMark
        let stoppedAt = ContinuousClock.now
        try a.stop()
        let down = try proxy.waitForHealthEvent(service: "svc", server: "a", state: "down", after: mark)
        let downMs = (down.seenAt - stoppedAt).milliseconds
        #expect(downMs <= downLimit, "server a marked down \(downMs) ms after it stopped (limit \(downLimit) ms)")
        // Three failures at least 0.9 × check_interval apart cannot all happen sooner.
        #expect(downMs >= Int64(2 * interval * 0.9) - 10, "server a marked down after only \(downMs) ms: fall = 3 not honoured")
        #expect(down.message.hasPrefix("server a down: 3 consecutive probe failures: "), "\(down)")
        #expect(down.message.contains("connection refused"), "\(down)")
        #expect(down.line["level"] == "notice", "\(down)")
        #expect(proxy.healthEvents(service: "svc", server: "a", state: "down", after: mark).count == 1, "down logged more than once")
        let whileDown = Self.tally(try HealthClient.names(port: port, count: 10))
        #expect(whileDown == ["b": 10], "new connections while a is down: \(whileDown)")

        mark = proxy.healthLogMark
        let restartedAt = ContinuousClock.now
        try a.listen()  // same port
        let up = try proxy.waitForHealthEvent(service: "svc", server: "a", state: "up", after: mark)
        let upMs = (up.seenAt - restartedAt).milliseconds
        #expect(upMs <= upLimit, "server a up \(upMs) ms after it listened again (limit \(upLimit) ms)")
        #expect(upMs >= Int64(interval * 0.9) - 10, "server a up after only \(upMs) ms: rise = 2 not honoured")
        #expect(up.message == "server a up: 2 consecutive probe successes", "\(up)")
        let afterUp = Self.tally(try HealthClient.names(port: port, count: 10))
        #expect((afterUp["a"] ?? 0) >= 3, "server a takes no (or few) new connections after coming up: \(afterUp)")
    }

    // MARK: 3. Passive ejection alone (check = none)

    @Test("check = none: passive ejection keeps connections off a dead server; the half-open trial brings it back")
    func passiveEjectionAndHalfOpenTrial() throws {
        let backends = try Self.backends(["a", "b", "c"])
        defer { backends.forEach { $0.shutdown() } }
        let c = backends[2]
        let proxy = try SwitchyardProcess(config: TestConfig.global(logLevel: "debug")
            + HealthTestConfig.service("svc", servers: backends.map(\.serverLine), keys: [
                "check = none", "eject_after = 3", "eject_time = 300ms", "eject_time_max = 1s",
                "max_ejection_percent = 50",  // 1 of 3 servers
            ]))
        defer { proxy.stop() }
        let port = try proxy.port("svc")
        #expect(Set(try HealthClient.names(port: port, count: 9)) == ["a", "b", "c"])

        var mark = proxy.healthLogMark
        try c.stop()
        // Round robin would send every third of these to c; retries hide the failed connects.
        var served: [String] = []
        var failures: [String] = []
        for i in 0..<60 {
            do {
                served.append(try HealthClient.exchange(port: port, payload: "request \(i)\n"))
            } catch {
                failures.append("connection \(i + 1): \(error)")
            }
        }
        #expect(failures.isEmpty, "\(failures.count) of 60 connections failed while c was dead; first: \(failures.prefix(3))")
        #expect(!served.contains("c"))
        let ejected = try proxy.waitForHealthEvent(service: "svc", server: "c", state: "ejected", after: mark)
        #expect(ejected.message.hasPrefix("server c ejected for "), "\(ejected)")
        #expect(ejected.message.contains("3 consecutive connect failures: connection refused"), "\(ejected)")
        // Once ejected by its 3 consecutive failures, c is tried only by the single trial of each
        // half-open period: failed connects ≤ 3 per streak ejection + 1 per half-open period (with
        // one event loop: 3 + half-opens, where round robin alone would fail 20 of these 60).
        let failedConnects = proxy.healthLines(message: "connect failed", service: "svc", server: "c", after: mark).count
        let halfOpens = proxy.healthEvents(service: "svc", server: "c", state: "half_open", after: mark).count
        let streakEjections = proxy.healthEvents(service: "svc", server: "c", state: "ejected", after: mark)
            .filter { $0.line.message?.contains("consecutive connect failures") == true }.count
        #expect(failedConnects >= 3 && failedConnects <= 3 * streakEjections + halfOpens,
                "\(failedConnects) connects to the dead server failed over 60 connections (\(streakEjections) ejection(s), \(halfOpens) half-open period(s)); ejection did not keep traffic away")
        #expect(proxy.healthEvents(service: "svc", server: "c", state: "down").isEmpty, "check = none logged a probe-driven down")

        // c listens again: the next half-open trial succeeds and restores it. A trial needs traffic,
        // so keep connecting (paced) until switchyard says so.
        mark = proxy.healthLogMark
        try c.listen()
        let restored = try waitFor("server c restored after listening again (log:\n\(proxy.recentLog(20)))", timeout: .seconds(6)) { () throws -> HealthEventLine? in
            _ = try HealthClient.exchange(port: port)
            if let event = proxy.healthEvents(service: "svc", server: "c", state: "restored", after: mark).first {
                return HealthEventLine(index: event.index, line: event.line, seenAt: .now)
            }
            pause(.milliseconds(20))  // traffic pacing, not synchronisation
            return nil
        }
        #expect(restored.message == "server c restored: trial connection succeeded", "\(restored)")
        let halfOpen = proxy.healthEvents(service: "svc", server: "c", state: "half_open").last { $0.index < restored.index }
        #expect(halfOpen != nil, "restored without a half-open period before it")
        let afterRestore = Self.tally(try HealthClient.names(port: port, count: 30))
        #expect((afterRestore["c"] ?? 0) >= 5, "c takes no (or few) new connections after it was restored: \(afterRestore)")
    }

    // MARK: 4. ip_hash stability

    @Test("ip_hash, 30 client IPs: when a server goes down only its clients move; every other client keeps its server")
    func ipHashMovesOnlyTheDownServersClients() throws {
        let backends = try Self.backends(["a", "b", "c"])
        defer { backends.forEach { $0.shutdown() } }
        let proxy = try SwitchyardProcess(config: TestConfig.global()
            + HealthTestConfig.service("hashed", balance: "ip_hash", servers: backends.map(\.serverLine)))
        defer { proxy.stop() }
        let port = try proxy.port("hashed")
        try proxy.waitForServersUp(service: "hashed", servers: ["a", "b", "c"])

        let ips = (2...31).map { "127.0.0.\($0)" }
        var before: [String: String] = [:]
        for ip in ips { before[ip] = try HealthClient.exchange(port: port, sourceIP: ip) }
        let counts = Self.tally(before.values)
        #expect(Set(counts.keys) == ["a", "b", "c"], "30 client IPs did not reach all 3 servers: \(counts)")

        // Stop the server with the most clients (name order breaks ties).
        let victimName = counts.max { $0.value < $1.value || ($0.value == $1.value && $0.key > $1.key) }!.key
        let victim = backends.first { $0.name == victimName }!
        let mark = proxy.healthLogMark
        try victim.stop()
        try proxy.waitForHealthEvent(service: "hashed", server: victimName, state: "down", after: mark)

        var moved: [String] = []
        var stranded: [String] = []
        for ip in ips {
            let now = try HealthClient.exchange(port: port, sourceIP: ip)
            if before[ip] == victimName {
                if now == victimName { stranded.append(ip) }
            } else if now != before[ip] {
                moved.append("\(ip): \(before[ip]!) → \(now)")
            }
        }
        #expect(stranded.isEmpty, "clients of the down server \(victimName) still reach it: \(stranded)")
        #expect(moved.isEmpty, "clients of healthy servers changed server when \(victimName) went down: \(moved)")
    }

    // MARK: 6. Backup

    @Test("Backup server: idle while a primary is up, takes over when both are down, idle again once one is back")
    func backupTakesOverOnlyWithoutPrimaries() throws {
        let backends = try Self.backends(["p1", "p2", "bk"])
        defer { backends.forEach { $0.shutdown() } }
        let (p1, p2, bk) = (backends[0], backends[1], backends[2])
        let proxy = try SwitchyardProcess(config: TestConfig.global()
            + HealthTestConfig.service("svc", servers: [p1.serverLine, p2.serverLine, bk.serverLine + " backup"]))
        defer { proxy.stop() }
        let port = try proxy.port("svc")
        try proxy.waitForServersUp(service: "svc", servers: ["p1", "p2", "bk"])

        let normal = Self.tally(try HealthClient.names(port: port, count: 20))
        #expect(Set(normal.keys) == ["p1", "p2"], "with both primaries up: \(normal)")
        #expect(bk.dataConnectionCount == 0)

        var mark = proxy.healthLogMark
        try p1.stop()
        try p2.stop()
        try proxy.waitForHealthEvent(service: "svc", server: "p1", state: "down", after: mark)
        try proxy.waitForHealthEvent(service: "svc", server: "p2", state: "down", after: mark)
        let failover = Self.tally(try HealthClient.names(port: port, count: 10))
        #expect(failover == ["bk": 10], "with both primaries down: \(failover)")

        mark = proxy.healthLogMark
        try p1.listen()
        try proxy.waitForHealthEvent(service: "svc", server: "p1", state: "up", after: mark)
        let backupServed = bk.dataConnectionCount
        let failback = Self.tally(try HealthClient.names(port: port, count: 10))
        #expect(failback == ["p1": 10], "with p1 back up: \(failback)")
        #expect(bk.dataConnectionCount == backupServed)
    }

    @Test("check = none, two dead primaries and a backup: both primaries are ejected (past max_ejection_percent) and the backup serves every client")
    func passiveEjectionHandsOverToTheBackup() throws {
        let backends = try Self.backends(["p1", "p2", "bk"])
        defer { backends.forEach { $0.shutdown() } }
        let (p1, p2, bk) = (backends[0], backends[1], backends[2])
        let proxy = try SwitchyardProcess(config: OpsConfig.global()
            + HealthTestConfig.service("svc", servers: [p1.serverLine, p2.serverLine, bk.serverLine + " backup"], keys: [
                "check = none", "eject_after = 3", "eject_time = 30s", "max_ejection_percent = 50",  // 1 of 3
            ]))
        defer { proxy.stop() }
        let port = try proxy.port("svc")
        #expect(Set(try HealthClient.names(port: port, count: 10)) == ["p1", "p2"])

        let mark = proxy.healthLogMark
        try p1.stop()
        try p2.stop()
        // Retries hide the refused connects; each primary fails 3 times and goes.
        let failover = Self.tally(try HealthClient.names(port: port, count: 20))
        #expect(failover == ["bk": 20], "\(failover)")
        try proxy.waitForHealthEvent(service: "svc", server: "p1", state: "ejected", after: mark)
        try proxy.waitForHealthEvent(service: "svc", server: "p2", state: "ejected", after: mark)
        #expect(proxy.healthEvents(service: "svc", server: "p1", state: "ejection_skipped", after: mark).isEmpty
                && proxy.healthEvents(service: "svc", server: "p2", state: "ejection_skipped", after: mark).isEmpty,
                "a primary was kept in use (each new client tried it first) though the backup could take over")
        // From now on no connect goes to a dead primary: the backup answers at once.
        func primaryConnectFailures() throws -> Double {
            let metrics = try proxy.metrics()
            return try ["p1", "p2"].reduce(0) { sum, server in
                sum + (try metrics.value("switchyard_connect_failures_total", ["server": server, "reason": "refused"]))
            }
        }
        let failedBefore = try primaryConnectFailures()
        #expect(failedBefore >= 6)
        #expect(Self.tally(try HealthClient.names(port: port, count: 10)) == ["bk": 10])
        #expect(try primaryConnectFailures() == failedBefore, "new clients still tried a dead primary first")
    }

    @Test("panic = off: a client whose own failed connect ejects the last server ends as connect_failed (its error, attempts), not no_server")
    func ownFailureThatEmptiesTheServiceIsAConnectFailure() throws {
        let port = try reserveLoopbackPort()  // nothing listens: refused
        let proxy = try SwitchyardProcess(config: OpsConfig.global()
            + HealthTestConfig.service("svc", servers: ["only 127.0.0.1:\(port)"], keys: [
                "check = none", "eject_after = 1", "eject_time = 30s", "max_ejection_percent = 100", "panic = off", "retries = 2",
            ]))
        defer { proxy.stop() }
        let client = try TestClient(port: try proxy.port("svc"))
        defer { client.close() }
        #expect(try client.waitForEnd(timeout: .seconds(5)) != nil)
        let line = try proxy.waitForConnectionClosed(client: client.localAddress)
        #expect(line["end"] == "connect_failed" && line["error"] == "connection refused", "\(line.raw)")
        #expect(line["server"] == "only" && line["attempts"] == "1", "\(line.raw)")
        let metrics = try proxy.metrics()
        #expect(try metrics.value("switchyard_rejected_connections_total", ["service": "svc", "reason": "connect_failed"]) == 1)
        #expect(try metrics.value("switchyard_rejected_connections_total", ["service": "svc", "reason": "no_server"]) == 0)
        // The next client finds the service empty: that one is no_server.
        let next = try TestClient(port: try proxy.port("svc"))
        defer { next.close() }
        #expect(try next.waitForEnd(timeout: .seconds(5)) != nil)
        #expect(try proxy.waitForConnectionClosed(client: next.localAddress)["end"] == "no_server")
    }

    @Test("A client gone while its connects fail stops the retries: closed without a byte, it ends as client_left after one attempt of five; reset, as client_reset; one that sent and half-closed keeps all five")
    func retriesStopWhenTheClientHasGone() throws {
        let port = try reserveLoopbackPort()  // nothing listens: refused
        let proxy = try SwitchyardProcess(config: OpsConfig.global()
            + HealthTestConfig.service("svc", servers: ["only 127.0.0.1:\(port)"], keys: [
                "check = none", "eject_after = 0", "retries = 4",
            ]))
        defer { proxy.stop() }
        let servicePort = try proxy.port("svc")
        for (n, reset) in [false, true].enumerated() {
            // Switchyard stopped: the client connects and leaves before it even accepts, so the
            // first failed connect finds the client gone. (A reset client's address is gone with
            // it: logged as client=-, so the line is found by count.)
            try proxy.suspend()
            let client = try TestClient(port: servicePort)
            if reset { client.reset() } else { client.close() }
            proxy.resume()
            try proxy.waitForLogLineCount("connection closed", n + 1)
            let line = try #require(proxy.logLines.last { $0.message == "connection closed" })
            #expect(line["end"] == (reset ? "client_reset" : "client_left"), "\(line.raw)")
            #expect(line["attempts"] == "1", "retried for a client that had gone: \(line.raw)")
        }
        var metrics = try proxy.metrics()
        #expect(try metrics.value("switchyard_connect_failures_total", ["server": "only", "reason": "refused"]) == 2)
        #expect(try metrics.value("switchyard_retries_total", ["service": "svc"]) == 0)

        // A client that sent its request and half-closed is still there: every attempt runs.
        try proxy.suspend()
        let halfClosed = try TestClient(port: servicePort)
        defer { halfClosed.close() }
        try halfClosed.send("request\n")
        try halfClosed.shutdownWrite()
        proxy.resume()
        let line = try proxy.waitForConnectionClosed(client: halfClosed.localAddress, timeout: .seconds(10))
        #expect(line["end"] == "connect_failed" && line["attempts"] == "5", "\(line.raw)")
        metrics = try proxy.metrics()
        #expect(try metrics.value("switchyard_retries_total", ["service": "svc"]) == 4)
    }

    // MARK: 7. on_down = close

    @Test("on_down = close: a server's established connection is closed when probes take it down; on_down = keep leaves it open")
    func onDownCloseEndsEstablishedConnections() throws {
        let backends = try Self.backends(["x", "y"])
        defer { backends.forEach { $0.shutdown() } }
        let (x, y) = (backends[0], backends[1])
        let proxy = try SwitchyardProcess(config: TestConfig.global()
            + HealthTestConfig.service("closing", servers: [x.serverLine], extra: ["on_down = close"])
            + HealthTestConfig.service("keeping", servers: [y.serverLine], extra: ["on_down = keep"]))
        defer { proxy.stop() }
        try proxy.waitForServersUp(service: "closing", servers: ["x"])
        try proxy.waitForServersUp(service: "keeping", servers: ["y"])

        let toX = try TestClient(port: try proxy.port("closing"))
        defer { toX.close() }
        let toY = try TestClient(port: try proxy.port("keeping"))
        defer { toY.close() }
        #expect(try toX.readLine() == "x")
        #expect(try toY.readLine() == "y")

        // Both servers stop accepting; their established connections stay up and keep working, so
        // only a failing probe can end one.
        let mark = proxy.healthLogMark
        try x.closeListener()
        try y.closeListener()
        try toX.roundTrip("after the listener closed\n")
        try toY.roundTrip("after the listener closed\n")

        let downX = try proxy.waitForHealthEvent(service: "closing", server: "x", state: "down", after: mark)
        try proxy.waitForHealthEvent(service: "keeping", server: "y", state: "down", after: mark)
        let end = try toX.waitForEnd(timeout: .seconds(3))
        #expect(end != nil, "the connection to x is still open 3 s after x went down (on_down = close)")
        let closed = try proxy.waitForClosedLine(client: toX.localAddress)
        #expect(closed.line["end"] == "server_down", "\(closed.line)")
        #expect(closed.index > downX.index, "the connection ended before x was marked down: \(closed.line)")
        try x.waitForActive(0)  // switchyard closed its side towards x too

        // on_down = keep: y is down too, but its established connection still relays.
        try toY.roundTrip("still relayed after y went down\n")
        #expect(y.activeCount == 1)
    }

    // MARK: 8. panic

    @Test("Every server down: panic = off closes new clients at once; panic = on still relays to a server that accepts")
    func panicOffRefusesPanicOnTries() throws {
        // Both servers accept and relay, but fail the custom probe (they echo HELLO, not +OK).
        let strictServer = try Backend(name: "s1", behavior: .echo)
        defer { strictServer.stop() }
        let lenientServer = try Backend(name: "l1", behavior: .echo)
        defer { lenientServer.stop() }
        let probe = [#"check_send = HELLO\r\n"#, "check_expect = +OK", "check_initial = up", "fall = 2"]
        let proxy = try SwitchyardProcess(config: TestConfig.global()
            + HealthTestConfig.service("strict", servers: ["s1 \(strictServer.address)"], extra: probe + ["panic = off"])
            + HealthTestConfig.service("lenient", servers: ["l1 \(lenientServer.address)"], extra: probe))
        defer { proxy.stop() }
        let strictDown = try proxy.waitForHealthEvent(service: "strict", server: "s1", state: "down")
        let lenientDown = try proxy.waitForHealthEvent(service: "lenient", server: "l1", state: "down")
        for down in [strictDown, lenientDown] {
            #expect(down.message.contains(#"2 consecutive probe failures: unexpected reply: "HELLO\r\n", expected "+OK""#), "\(down)")
        }

        // panic = off: accepted, then closed at once without reaching the server.
        let start = ContinuousClock.now
        let refused = try TestClient(port: try proxy.port("strict"))
        defer { refused.close() }
        try? refused.send("knock\n")  // may fail: the connection may already be closed
        let end = try refused.waitForEnd(timeout: .seconds(3))
        let elapsed = millisecondsSince(start)
        #expect(end != nil, "panic = off: a new client is still open 3 s after connecting with every server down")
        #expect(elapsed < 1000, "panic = off: the client was closed only after \(elapsed) ms")
        let refusedLine = try proxy.waitForClosedLine(client: refused.localAddress)
        #expect(refusedLine.line["end"] == "no_server", "\(refusedLine.line)")
        #expect(refusedLine.line["server"] == "-", "\(refusedLine.line)")

        // panic = on (default): the down server is tried anyway and relays.
        let relayed = try TestClient(port: try proxy.port("lenient"))
        defer { relayed.close() }
        try relayed.roundTrip("hello through panic\n")
        relayed.close()
        let relayedLine = try proxy.waitForClosedLine(client: relayed.localAddress)
        #expect(relayedLine.line["server"] == "l1", "\(relayedLine.line)")
        #expect(relayedLine.line["end"] == "closed", "\(relayedLine.line)")
    }
}
