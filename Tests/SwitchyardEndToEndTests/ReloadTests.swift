// Reloading the configuration (SIGHUP and POST /reload) under traffic: established connections
// are never dropped, listeners whose address is unchanged stay open, a broken file changes nothing.
import Foundation
import Glibc
import Testing

@Suite("Reload")
struct ReloadTests {
    /// Opens a connection and returns it with the name its server greeted it with.
    static func connectAndIdentify(port: UInt16) throws -> (TestClient, String) {
        let client = try TestClient(port: port)
        do {
            return (client, try client.readLine())
        } catch {
            client.close()
            throw error
        }
    }

    /// Names of the servers that greet `count` new, short connections.
    static func identifyMany(port: UInt16, count: Int) throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for _ in 0..<count {
            let (client, name) = try connectAndIdentify(port: port)
            client.close()
            counts[name, default: 0] += 1
        }
        return counts
    }

    /// The line number (1-based) of the first line of `text` containing `needle`.
    static func lineNumber(of needle: String, in text: String) -> Int? {
        text.components(separatedBy: "\n").firstIndex { $0.contains(needle) }.map { $0 + 1 }
    }

    @Test("A held connection relays through 3 reloads (add a server, change a weight, remove its server); a looping client is never refused")
    func heldConnectionSurvivesReloads() throws {
        let a = try Backend(name: "a", behavior: .identify)
        defer { a.stop() }
        let b = try Backend(name: "b", behavior: .identify)
        defer { b.stop() }
        func config(_ servers: [String]) -> String {
            OpsConfig.global() + OpsConfig.service("web", balance: "round_robin", servers: servers)
        }
        let proxy = try SwitchyardProcess(config: config(["a \(a.address)"]))
        defer { proxy.stop() }
        try proxy.waitForServersUp(service: "web", servers: ["a"])
        let port = try proxy.port("web")

        let (held, greeting) = try Self.connectAndIdentify(port: port)
        defer { held.close() }
        #expect(greeting == "a")
        var heldBytes = 0
        func heldRoundTrip(_ text: String) throws {
            try held.roundTrip(text)
            heldBytes += text.utf8.count
        }
        try heldRoundTrip("before the reloads\n")

        let loop = ConnectionLoop(port: port)
        defer { _ = try? loop.stop() }
        try loop.waitForProgress(10)

        // (a) Add server b.
        try proxy.rewriteConfig(config(["a \(a.address)", "b \(b.address)"]))
        try proxy.reloadBySignal(expectSuccessCount: 1)
        try heldRoundTrip("after reload 1 (server b added)\n")
        // a's health carried over: still up at once (a fresh server starts down until probed).
        #expect(try proxy.status().state("web", "a") == "up")
        try proxy.waitForServersUp(service: "web", servers: ["b"])
        // New connections reach b (the looping client shares the round robin, so poll).
        var seenAfterAdd: [String: Int] = [:]
        try waitUntil("a new connection to reach the added server b (seen \(seenAfterAdd))", timeout: .seconds(3)) {
            let (client, name) = try Self.connectAndIdentify(port: port)
            client.close()
            seenAfterAdd[name, default: 0] += 1
            return name == "b"
        }
        try loop.waitForProgress(10)

        // (b) Change b's weight.
        try proxy.rewriteConfig(config(["a \(a.address)", "b \(b.address) weight=3"]))
        try proxy.reloadBySignal(expectSuccessCount: 2)
        try heldRoundTrip("after reload 2 (weight changed)\n")
        let statusB = try proxy.status()
        #expect(statusB.server("web", "b")?["weight"] as? Int == 3, "\(statusB)")
        #expect(statusB.state("web", "a") == "up" && statusB.state("web", "b") == "up", "\(statusB)")
        #expect(statusB.server("web", "a")?["active_connections"] as? Int ?? 0 >= 1, "\(statusB)")
        try loop.waitForProgress(10)

        // (c) Remove server a, which the held connection is relayed to.
        try proxy.rewriteConfig(config(["b \(b.address) weight=3"]))
        try proxy.reloadBySignal(expectSuccessCount: 3)
        try heldRoundTrip("after reload 3 (its own server removed)\n")
        let statusC = try proxy.status()
        #expect(statusC.servers(of: "web").compactMap { $0["name"] as? String } == ["b"], "\(statusC)")
        let afterRemove = try Self.identifyMany(port: port, count: 10)
        #expect(afterRemove == ["b": 10], "new connections after removing a: \(afterRemove)")
        try loop.waitForProgress(10)

        let tally = try loop.stop()
        #expect(tally.failures.isEmpty, "\(tally.failures.count) of \(tally.total) looping connections failed during the reloads: \(tally.failures.prefix(5))")
        #expect(tally.successes >= 40, "the looping client made only \(tally.successes) connections")
        #expect((tally.servers["b"] ?? 0) > 0, "the looping client never reached b: \(tally.servers)")

        // The held connection still works, and ends cleanly on both sides.
        try heldRoundTrip("last words\n")
        held.close()
        let line = try proxy.waitForConnectionClosed(client: held.localAddress)
        #expect(line["end"] == "closed" && line["server"] == "a", "\(line)")
        let record = try a.waitForRecord("the held connection") { $0.bytesReceived == heldBytes }
        #expect(record.closing == .finished && record.sawEOF, "\(record)")
        #expect(proxy.logCount("reload failed; keeping the running configuration") == 0)
        #expect(proxy.isRunning)
    }

    @Test("A server moved to another address, or removed and added back, keeps its counters; its connections still open stay counted")
    func countersFollowTheServerName() throws {
        let first = try Backend(name: "first", behavior: .identify)
        defer { first.stop() }
        let second = try Backend(name: "second", behavior: .identify)
        defer { second.stop() }
        func config(_ servers: [String]) -> String {
            OpsConfig.global() + OpsConfig.service("web", servers: servers, extra: ["check = none"])
        }
        let proxy = try SwitchyardProcess(config: config(["a \(first.address)"]))
        defer { proxy.stop() }
        let port = try proxy.port("web")
        let labels = ["service": "web", "server": "a"]

        let (held, greeting) = try Self.connectAndIdentify(port: port)
        defer { held.close() }
        #expect(greeting == "first")
        try held.roundTrip("0123456789\n")  // 11 bytes each way
        #expect(try proxy.metrics().value("switchyard_connections_active", labels) == 1)

        // (a) a moves to the second backend: its held connection (still to the first) stays counted.
        try proxy.rewriteConfig(config(["a \(second.address)"]))
        try proxy.reloadBySignal(expectSuccessCount: 1)
        let moved = try proxy.metrics()
        #expect(try moved.value("switchyard_connections_total", labels) == 1, "\(moved.text)")
        #expect(try moved.value("switchyard_connections_active", labels) == 1, "\(moved.text)")
        let (fresh, freshGreeting) = try Self.connectAndIdentify(port: port)
        #expect(freshGreeting == "second")
        try fresh.roundTrip("abc\n")  // 4 bytes each way
        fresh.close()
        _ = try proxy.waitForConnectionClosed(client: fresh.localAddress)
        try held.roundTrip("still here\n")  // 11 more
        held.close()
        _ = try proxy.waitForConnectionClosed(client: held.localAddress)
        let after = try proxy.metrics()
        #expect(try after.value("switchyard_connections_total", labels) == 2)
        #expect(try after.value("switchyard_connections_active", labels) == 0)
        #expect(try after.value("switchyard_bytes_received_total", labels) == 26)

        // (b) a removed, then added back: its counters continue.
        try proxy.rewriteConfig(config(["b \(first.address)"]))
        try proxy.reloadBySignal(expectSuccessCount: 2)
        try proxy.rewriteConfig(config(["a \(second.address)", "b \(first.address)"]))
        try proxy.reloadBySignal(expectSuccessCount: 3)
        let readded = try proxy.metrics()
        #expect(try readded.value("switchyard_connections_total", labels) == 2, "\(readded.text)")
        #expect(try readded.value("switchyard_bytes_received_total", labels) == 26)
    }

    @Test("A server a reload removed keeps its series (server_up 0) and a /status entry while its connections finish; they go with the last one")
    func removedServerSeriesStayWhileDraining() throws {
        let first = try Backend(name: "first", behavior: .identify)
        defer { first.stop() }
        let second = try Backend(name: "second", behavior: .identify)
        defer { second.stop() }
        func config(_ servers: [String]) -> String {
            OpsConfig.global() + OpsConfig.service("web", servers: servers, extra: ["check = none"])
        }
        let proxy = try SwitchyardProcess(config: config(["a \(first.address)", "b \(second.address)"]))
        defer { proxy.stop() }
        let port = try proxy.port("web")
        let a = ["service": "web", "server": "a"]

        var held: [TestClient] = []
        defer { held.forEach { $0.close() } }
        while held.count < 2 {  // round robin: two connections to a, one to b
            let (client, name) = try Self.connectAndIdentify(port: port)
            if name == "first" { held.append(client) } else { client.close() }
        }
        for client in held { try client.roundTrip("abc\n") }
        #expect(try proxy.metrics().value("switchyard_connections_active", a) == 2)

        // a removed: its two connections stay, and so do its series.
        try proxy.rewriteConfig(config(["b \(second.address)"]))
        try proxy.reloadBySignal(expectSuccessCount: 1)
        let removed = try proxy.metrics()
        #expect(try removed.value("switchyard_connections_active", a) == 2, "\(removed.text)")
        #expect(try removed.value("switchyard_connections_total", a) == 2)
        #expect(try removed.value("switchyard_bytes_received_total", a) == 8)
        #expect(try removed.value("switchyard_server_up", a) == 0)
        #expect(try removed.value("switchyard_server_up", ["service": "web", "server": "b"]) == 1)
        let status = try proxy.status()
        let entries = status.service("web")?["removed_servers"] as? [[String: Any]] ?? []
        #expect(entries.count == 1 && entries.first?["name"] as? String == "a"
                && entries.first?["active_connections"] as? Int == 2, "\(status)")
        #expect(status.servers(of: "web").compactMap { $0["name"] as? String } == ["b"], "\(status)")

        // Still relayed; one ends: still there with 1; the last ends: gone from both.
        try held[0].roundTrip("still relayed\n")
        held[0].close()
        _ = try proxy.waitForConnectionClosed(client: held[0].localAddress)
        #expect(try proxy.metrics().value("switchyard_connections_active", a) == 1)
        held[1].close()
        _ = try proxy.waitForConnectionClosed(client: held[1].localAddress)
        let drained = try proxy.metrics()
        #expect(!drained.samples.contains { $0.labels["server"] == "a" }, "\(drained.text)")
        let after = try proxy.status()
        #expect((after.service("web")?["removed_servers"] as? [[String: Any]])?.isEmpty == true, "\(after)")
    }

    @Test("A server a reload removed while a connection to it is still connecting keeps its series (connecting 1) until the attempt ends; the client is then relayed to the new server")
    func removedServerSeriesStayWhileConnecting() throws {
        let pending = try PendingConnect(server: "a")
        defer { pending.close() }
        let (stalled, proxy, client) = (pending.stalled, pending.proxy, pending.client)
        let second = try Backend(name: "second", behavior: .identify)
        defer { second.stop() }
        let config = PendingConnect.config
        let a = ["service": "web", "server": "a"]

        let before = try proxy.status()
        #expect(before.servers(of: "web").first?["connecting"] as? Int == 1, "\(before)")
        #expect(before.servers(of: "web").first?["active_connections"] as? Int == 0, "\(before)")

        // a removed while its connect is pending: its series and /status entry stay.
        try proxy.rewriteConfig(config(["b \(second.address)"]))
        try proxy.reloadBySignal(expectSuccessCount: 1)
        let removed = try proxy.metrics()
        #expect(try removed.value("switchyard_connections_connecting", a) == 1, "\(removed.text)")
        #expect(try removed.value("switchyard_server_up", a) == 0)
        let status = try proxy.status()
        let entries = status.service("web")?["removed_servers"] as? [[String: Any]] ?? []
        #expect(entries.count == 1 && entries.first?["name"] as? String == "a"
                && entries.first?["connecting"] as? Int == 1 && entries.first?["active_connections"] as? Int == 0,
                "\(status)")

        // a's listener goes: the attempt is refused at the next SYN retransmit (1, 3, 7, 15 s after
        // the first), and the retry goes to b (a's old index is b's now: the tried set of the
        // old server list is forgotten, so no backoff), which relays the client.
        stalled.close()
        #expect(try client.readLine(timeout: .seconds(40)) == "second")
        try client.roundTrip("relayed\n")
        let after = try proxy.metrics()
        #expect(!after.samples.contains { $0.labels["server"] == "a" }, "\(after.text)")
        #expect(try after.value("switchyard_connections_active", ["service": "web", "server": "b"]) == 1)
        #expect(try after.value("switchyard_connections_connecting", ["service": "web", "server": "b"]) == 0)
    }

    @Test("A connect that fails after a reload renumbered the servers is retried on a server it has not tried, not on the one that failed")
    func retryAfterARenumberingReloadSkipsTheFailedServer() throws {
        let pending = try PendingConnect(server: "x")
        defer { pending.close() }
        let (stalled, proxy, client, x) = (pending.stalled, pending.proxy, pending.client, pending.serverLine)
        let fresh = try Backend(name: "fresh", behavior: .identify)
        defer { fresh.stop() }
        let config = PendingConnect.config

        // y takes x's index 0, x (kept: same name and address) moves to 1.
        try proxy.rewriteConfig(config(["y \(fresh.address)", x]))
        try proxy.reloadBySignal(expectSuccessCount: 1)
        // x's listener goes: the pending connect is refused at the next SYN retransmit. The retry
        // must go to y; x, which now refuses at once, is not tried again.
        stalled.close()
        #expect(try client.readLine(timeout: .seconds(40)) == "fresh")
        let metrics = try proxy.metrics()
        #expect(try metrics.value("switchyard_connect_failures_total", ["service": "web", "server": "x", "reason": "refused"]) == 1,
                "\(metrics.text)")
        #expect(try metrics.value("switchyard_retries_total", ["service": "web"]) == 1)
    }

    @Test("round_robin goes on where it was across a reload: the next connection goes to the next server, not to the first again")
    func roundRobinRotationSurvivesAReload() throws {
        let backends = try ["first", "second", "third"].map { try Backend(name: $0, behavior: .identify) }
        defer { backends.forEach { $0.stop() } }
        func config(connectTimeout: String) -> String {
            OpsConfig.global() + TestConfig.service(
                "web", balance: "round_robin",
                servers: ["a \(backends[0].address)", "b \(backends[1].address)", "c \(backends[2].address)"],
                connectTimeout: connectTimeout, extra: ["check = none"])
        }
        let proxy = try SwitchyardProcess(config: config(connectTimeout: "2s"))
        defer { proxy.stop() }
        let port = try proxy.port("web")
        var seen: [String] = []
        for _ in 0..<4 {
            let (client, name) = try Self.connectAndIdentify(port: port)
            client.close()
            seen.append(name)
        }
        #expect(seen == ["first", "second", "third", "first"])

        // A reload (the service is rebuilt with a new connect timeout, its servers stay): b is
        // next, then c, then a; before, the rotation started again at a.
        try proxy.rewriteConfig(config(connectTimeout: "3s"))
        try proxy.reloadBySignal(expectSuccessCount: 1)
        var after: [String] = []
        for _ in 0..<3 {
            let (client, name) = try Self.connectAndIdentify(port: port)
            client.close()
            after.append(name)
        }
        #expect(after == ["second", "third", "first"], "\(after)")
    }

    @Test("A service a reload removed keeps its series and a /status entry while its connections finish; added back, its counters continue")
    func removedServiceSeriesStayAndCountersContinue() throws {
        let a = try Backend(name: "a", behavior: .identify)
        defer { a.stop() }
        let b = try Backend(name: "b", behavior: .identify)
        defer { b.stop() }
        let web = OpsConfig.service("web", servers: ["a \(a.address)"], extra: ["check = none"])
        let other = OpsConfig.service("other", servers: ["b \(b.address)"], extra: ["check = none"])
        let proxy = try SwitchyardProcess(config: OpsConfig.global() + web + other)
        defer { proxy.stop() }
        let port = try proxy.port("web")
        let labels = ["service": "web", "server": "a"]
        let (held, greeting) = try Self.connectAndIdentify(port: port)
        defer { held.close() }
        #expect(greeting == "a")
        try held.roundTrip("abc\n")

        // web removed: its connection goes on, and its series with it.
        try proxy.rewriteConfig(OpsConfig.global() + other)
        try proxy.reloadBySignal(expectSuccessCount: 1)
        let removed = try proxy.metrics()
        #expect(try removed.value("switchyard_connections_active", labels) == 1, "\(removed.text)")
        #expect(try removed.value("switchyard_connections_total", labels) == 1)
        #expect(try removed.value("switchyard_server_up", labels) == 0)
        #expect(try removed.value("switchyard_retries_total", ["service": "web"]) == 0)
        let status = try proxy.status()
        let entries = status.root["removed_services"] as? [[String: Any]] ?? []
        #expect(entries.count == 1 && entries.first?["name"] as? String == "web"
                && entries.first?["active_connections"] as? Int == 1, "\(status)")
        #expect(status.service("web") == nil)
        try held.roundTrip("still relayed\n")
        held.close()
        _ = try proxy.waitForConnectionClosed(client: held.localAddress)
        let drained = try proxy.metrics()
        #expect(!drained.samples.contains { $0.labels["service"] == "web" }, "\(drained.text)")
        #expect((try proxy.status().root["removed_services"] as? [[String: Any]])?.isEmpty == true)

        // Added back: its counters go on from where they were.
        try proxy.rewriteConfig(OpsConfig.global() + web + other)
        try proxy.reloadBySignal(expectSuccessCount: 2)
        let newPort = try proxy.ports("web").last ?? port
        let (again, _) = try Self.connectAndIdentify(port: newPort)
        try again.roundTrip("xy\n")
        again.close()
        _ = try proxy.waitForConnectionClosed(client: again.localAddress)
        let back = try proxy.metrics()
        #expect(try back.value("switchyard_connections_total", labels) == 2, "\(back.text)")
        #expect(try back.value("switchyard_bytes_received_total", labels) == 21)  // 4 + 14 + 3
        #expect(try proxy.status().service("web")?["accepted_total"] as? Int == 2)
    }

    @Test("A broken file: the running configuration keeps serving, the error has FILE:LINE, failure counted; POST /reload applies the fixed file")
    func brokenFileKeepsRunningConfig() throws {
        let a = try Backend(name: "a", behavior: .identify)
        defer { a.stop() }
        let b = try Backend(name: "b", behavior: .identify)
        defer { b.stop() }
        let good = OpsConfig.global() + OpsConfig.service("web", servers: ["a \(a.address)"])
        let proxy = try SwitchyardProcess(config: good)
        defer { proxy.stop() }
        try proxy.waitForServersUp(service: "web", servers: ["a"])
        let port = try proxy.port("web")
        let (held, greeting) = try Self.connectAndIdentify(port: port)
        defer { held.close() }
        #expect(greeting == "a")
        try held.roundTrip("before\n")

        // Same services, plus a second server, but one bad value.
        let broken = OpsConfig.global()
            + OpsConfig.service("web", balance: "fastest", servers: ["a \(a.address)", "b \(b.address)"])
        let badLine = try #require(Self.lineNumber(of: "balance = fastest", in: broken))
        try proxy.rewriteConfig(broken)
        proxy.child.signal(SIGHUP)
        let failure = try proxy.waitForLogLine("reload failed") { $0.message == "reload failed; keeping the running configuration" }
        let prefix = "\(proxy.configPath):\(badLine): "
        #expect(failure["error"]?.hasPrefix(prefix) == true, "expected the error to start with \(prefix.debugDescription): \(failure)")
        #expect(failure["trigger"] == "SIGHUP", "\(failure)")

        // Still the old configuration: the held connection and new ones work, only on a.
        try held.roundTrip("after the failed reload\n")
        #expect(try Self.identifyMany(port: port, count: 4) == ["a": 4])
        let status = try proxy.status()
        #expect(status.servers(of: "web").compactMap { $0["name"] as? String } == ["a"], "\(status)")
        #expect(status.service("web")?["balance"] as? String == "round_robin", "\(status)")
        var metrics = try proxy.metrics()
        #expect(try metrics.value("switchyard_config_reloads_total", ["result": "failure"]) == 1)
        #expect(try metrics.value("switchyard_config_reloads_total", ["result": "success"]) == 0)

        // POST /reload with the file still broken: 400 with the location.
        let refused = try proxy.admin("POST", "/reload")
        #expect(refused.status == 400, "\(refused)")
        #expect(refused.text.contains("\(proxy.configPath):\(badLine):"), "\(refused)")

        // Fixed: POST /reload applies it.
        try proxy.rewriteConfig(OpsConfig.global() + OpsConfig.service("web", servers: ["a \(a.address)", "b \(b.address)"]))
        let applied = try proxy.admin("POST", "/reload")
        #expect(applied.status == 200, "\(applied)")
        let reloaded = try proxy.waitForLogLine("configuration reloaded") { $0.message == "configuration reloaded" }
        #expect(reloaded["trigger"] == "admin", "\(reloaded)")
        try proxy.waitForServersUp(service: "web", servers: ["b"])
        let spread = try Self.identifyMany(port: port, count: 6)
        #expect((spread["b"] ?? 0) > 0, "no new connection reached b after the fixed reload: \(spread)")
        metrics = try proxy.metrics()
        #expect(try metrics.value("switchyard_config_reloads_total", ["result": "failure"]) == 2)
        #expect(try metrics.value("switchyard_config_reloads_total", ["result": "success"]) == 1)
        try held.roundTrip("after the good reload\n")
    }

    @Test("A service added by reload starts listening; a removed one stops listening while its connections finish")
    func addAndRemoveService() throws {
        let m = try Backend(name: "m", behavior: .identify)
        defer { m.stop() }
        let x = try Backend(name: "x", behavior: .identify)
        defer { x.stop() }
        let mainPort = try reserveLoopbackPort()
        var extraPort = try reserveLoopbackPort()
        while extraPort == mainPort { extraPort = try reserveLoopbackPort() }
        let base = OpsConfig.global() + OpsConfig.service("main", listen: "127.0.0.1:\(mainPort)", servers: ["m \(m.address)"])
        let withExtra = base + OpsConfig.service("extra", listen: "127.0.0.1:\(extraPort)", servers: ["x \(x.address)"])

        let proxy = try SwitchyardProcess(config: base)
        defer { proxy.stop() }
        try proxy.waitForServersUp(service: "main", servers: ["m"])
        #expect(throws: (any Error).self, "something already listens on the extra port before the reload") {
            _ = try TestClient(port: extraPort, timeout: .seconds(2))
        }
        let (heldMain, mainGreeting) = try Self.connectAndIdentify(port: mainPort)
        defer { heldMain.close() }
        #expect(mainGreeting == "m")

        try proxy.rewriteConfig(withExtra)
        try proxy.reloadBySignal(expectSuccessCount: 1)
        let listening = try proxy.waitForLogLine("listening for service extra") {
            $0.message == "listening" && $0["service"] == "extra"
        }
        #expect(listening["address"] == "127.0.0.1:\(extraPort)", "\(listening)")
        try proxy.waitForServersUp(service: "extra", servers: ["x"])
        let (heldExtra, extraGreeting) = try Self.connectAndIdentify(port: extraPort)
        defer { heldExtra.close() }
        #expect(extraGreeting == "x")
        try heldExtra.roundTrip("via the new service\n")
        #expect(try Self.identifyMany(port: mainPort, count: 3) == ["m": 3])
        #expect(try proxy.status().services.compactMap { $0["name"] as? String } == ["main", "extra"])

        try proxy.rewriteConfig(base)
        try proxy.reloadBySignal(expectSuccessCount: 2)
        // The log says which listener went (logged with the reload, before its `reloaded` line).
        let stopped = proxy.logLines.filter { $0.message == "stopped listening" }
        #expect(stopped.count == 1 && stopped.first?["service"] == "extra" && stopped.first?["address"] == "127.0.0.1:\(extraPort)",
                "\(stopped.map(\.raw))")
        #expect(throws: (any Error).self, "the removed service's port still accepts connections") {
            let client = try TestClient(port: extraPort, timeout: .seconds(2))
            // Accepted anyway? Then it must at least be closed at once.
            if try client.waitForEnd(timeout: .milliseconds(500)) != nil { throw HarnessError("closed at once") }
        }
        // Its established connection finishes normally.
        try heldExtra.roundTrip("the service is gone, this connection is not\n")
        heldExtra.close()
        let closed = try proxy.waitForConnectionClosed(client: heldExtra.localAddress)
        #expect(closed["end"] == "closed", "\(closed)")
        // The unchanged service kept its listener and its connection.
        try heldMain.roundTrip("main is untouched\n")
        #expect(try Self.identifyMany(port: mainPort, count: 3) == ["m": 3])
        #expect(try proxy.status().services.compactMap { $0["name"] as? String } == ["main"])
        #expect(proxy.listenAddresses(service: "main") == ["127.0.0.1:\(mainPort)"], "main was re-bound by a reload")
    }

    @Test("A reload that changes nothing keeps each service on its own listener (two services on 127.0.0.1:0)")
    func unchangedReloadKeepsPortZeroListeners() throws {
        let m = try Backend(name: "m", behavior: .identify)
        defer { m.stop() }
        let x = try Backend(name: "x", behavior: .identify)
        defer { x.stop() }
        let proxy = try SwitchyardProcess(config: OpsConfig.global()
            + OpsConfig.service("main", servers: ["m \(m.address)"])
            + OpsConfig.service("extra", servers: ["x \(x.address)"]))
        defer { proxy.stop() }
        try proxy.waitForServersUp(service: "main", servers: ["m"])
        try proxy.waitForServersUp(service: "extra", servers: ["x"])
        let mainPort = try proxy.port("main")
        let extraPort = try proxy.port("extra")

        try proxy.reloadBySignal(expectSuccessCount: 1)
        #expect(proxy.logCount("stopped listening") == 0, "\(proxy.logLines.filter { $0.message == "stopped listening" }.map(\.raw))")
        #expect(proxy.listenAddresses(service: "main").count == 1 && proxy.listenAddresses(service: "extra").count == 1,
                "a reload of an unchanged file bound new listeners: \(proxy.logLines.filter { $0.message == "listening" }.map(\.raw))")
        #expect(try Self.identifyMany(port: mainPort, count: 3) == ["m": 3], "main's port after the reload")
        #expect(try Self.identifyMany(port: extraPort, count: 3) == ["x": 3], "extra's port after the reload")
        let status = try proxy.status()
        #expect(status.service("main")?["listeners"] as? [String] == ["127.0.0.1:\(mainPort)"], "\(status)")
        #expect(status.service("extra")?["listeners"] as? [String] == ["127.0.0.1:\(extraPort)"], "\(status)")

        let exit = try proxy.terminate(timeout: .seconds(5))
        #expect(exit == .exited(0))
    }
}

/// Service "web" (round robin, 60 s connect timeout, no probes) whose only server is a listener
/// with a full accept queue: connects to it hang (SYNs dropped) until it closes, when the next
/// SYN retransmit (1, 3, 7, 15 s after the first) is refused. A client's connect to it is in
/// progress once this returns.
struct PendingConnect {
    let stalled: StalledListener
    let proxy: SwitchyardProcess
    let client: TestClient
    /// The stalled server's `server =` value, "NAME 127.0.0.1:PORT".
    let serverLine: String

    static func config(_ servers: [String]) -> String {
        OpsConfig.global() + TestConfig.service(
            "web", balance: "round_robin", servers: servers, connectTimeout: "60s", extra: ["check = none"])
    }

    init(server name: String) throws {
        stalled = try StalledListener()
        serverLine = "\(name) 127.0.0.1:\(stalled.port)"
        do {
            proxy = try SwitchyardProcess(config: Self.config([serverLine]))
        } catch {
            stalled.close()
            throw error
        }
        do {
            client = try TestClient(port: try proxy.port("web"))
        } catch {
            proxy.stop()
            stalled.close()
            throw error
        }
        let (proxy, labels) = (proxy, ["service": "web", "server": name])
        do {
            try waitUntil("the connect to \(name) is in progress", timeout: .seconds(10)) {
                try proxy.metrics().value("switchyard_connections_connecting", labels) == 1
            }
        } catch {
            close()
            throw error
        }
    }

    func close() {
        client.close()
        proxy.stop()
        stalled.close()
    }
}
