// The admin endpoint as an operator sees it: every route, its errors and authorisation, and the
// metrics moving with real traffic (checked by promtool).
import Foundation
import Glibc
import Testing

@Suite("Admin endpoint")
struct AdminEndpointTests {
    static let token = "e2e-s3cret-token"

    @Test("Routes: /healthz, /readyz, /status, /metrics; 404, 405 with Allow, 400, HEAD without a body")
    func routes() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let proxy = try SwitchyardProcess(config: OpsConfig.global()
            + OpsConfig.service("web", balance: "least_conn", servers: ["a \(echo.address) weight=2"]))
        defer { proxy.stop() }
        try proxy.waitForServersUp(service: "web", servers: ["a"])

        let healthz = try proxy.admin("GET", "/healthz")
        #expect(healthz.status == 200, "\(healthz)")
        #expect(healthz.text == "ok\n", "\(healthz)")
        #expect(healthz.header("Connection")?.lowercased() == "close", "\(healthz)")

        let readyz = try proxy.admin("GET", "/readyz")
        #expect(readyz.status == 200, "GET /readyz with every server up: \(readyz)")

        // /status: JSON with the service, its real listening address and the server's state.
        let statusReply = try proxy.admin("GET", "/status")
        #expect(statusReply.status == 200, "\(statusReply)")
        #expect(statusReply.header("Content-Type")?.hasPrefix("application/json") == true, "\(statusReply)")
        let status = try StatusSnapshot(text: statusReply.text)
        let service = try #require(status.service("web"), "no service web in /status: \(status)")
        #expect(service["balance"] as? String == "least_conn")
        #expect(service["listeners"] as? [String] == proxy.listenAddresses(service: "web"), "\(status)")
        let server = try #require(status.server("web", "a"), "no server a in /status: \(status)")
        #expect(server["address"] as? String == echo.address)
        #expect(server["weight"] as? Int == 2)
        #expect(server["backup"] as? Bool == false)
        #expect(server["state"] as? String == "up")
        #expect(server["usable"] as? Bool == true)
        #expect(server["active_connections"] as? Int == 0)
        #expect(server["connections_total"] as? Int == 0)
        #expect((server["probe_successes"] as? Int ?? 0) >= 1, "\(status)")
        #expect(server["ejections_total"] as? Int == 0)
        #expect(server.keys.contains("ejection_remaining_ms"), "\(status)")
        #expect(server["weight_factor"] is NSNumber, "\(status)")
        #expect(server["ejection_held_back"] as? Bool == false, "\(status)")

        let metrics = try proxy.admin("GET", "/metrics")
        #expect(metrics.status == 200, "\(metrics)")
        let contentType = metrics.header("Content-Type") ?? ""
        #expect(contentType.hasPrefix("text/plain") && contentType.contains("version=0.0.4"), "Content-Type \(contentType)")
        let snapshot = try MetricsSnapshot(text: metrics.text)
        #expect(try snapshot.value("switchyard_server_up", ["service": "web", "server": "a"]) == 1)
        #expect(try snapshot.value("switchyard_build_info") == 1)

        let unknown = try proxy.admin("GET", "/nothing-here")
        #expect(unknown.status == 404, "\(unknown)")

        let postMetrics = try proxy.admin("POST", "/metrics")
        #expect(postMetrics.status == 405, "\(postMetrics)")
        #expect(Self.allowList(postMetrics) == ["GET", "HEAD"], "\(postMetrics)")

        let getReload = try proxy.admin("GET", "/reload")
        #expect(getReload.status == 405, "\(getReload)")
        #expect(Self.allowList(getReload) == ["POST"], "\(getReload)")

        let garbage = try AdminHTTP.exchange(port: try proxy.adminPort(), raw: Array("this is not http\r\n\r\n".utf8))
        #expect(garbage.status == 400, "\(garbage)")

        let head = try proxy.admin("HEAD", "/healthz")
        #expect(head.status == 200, "\(head)")
        #expect(head.body.isEmpty, "HEAD /healthz carried a body: \(head)")

        #expect(proxy.isRunning)
    }

    @Test("Mutations need the bearer token: 401 without it or with a wrong one, 200 with it")
    func tokenRequired() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let proxy = try SwitchyardProcess(config: OpsConfig.global(adminToken: Self.token)
            + OpsConfig.service("web", servers: ["a \(echo.address)"]))
        defer { proxy.stop() }
        try proxy.waitForServersUp(service: "web", servers: ["a"])

        for path in ["/reload", "/services/web/servers/a/disable"] {
            let none = try proxy.admin("POST", path)
            #expect(none.status == 401, "POST \(path) without a token: \(none)")
            #expect(none.header("WWW-Authenticate")?.hasPrefix("Bearer") == true, "\(none)")
            let wrong = try proxy.admin("POST", path, token: Self.token + "x")
            #expect(wrong.status == 401, "POST \(path) with a wrong token: \(wrong)")
            let otherScheme = try proxy.admin("POST", path, headers: [("Authorization", "Basic \(Self.token)")])
            #expect(otherScheme.status == 401, "POST \(path) with Basic: \(otherScheme)")
        }
        // Refused mutations changed nothing.
        #expect(try proxy.status().state("web", "a") == "up")
        #expect(try proxy.metrics().value("switchyard_config_reloads_total", ["result": "success"]) == 0)
        #expect(proxy.logCount("configuration reloaded") == 0)

        // Reads need no token.
        #expect(try proxy.admin("GET", "/status").status == 200)

        let disable = try proxy.admin("POST", "/services/web/servers/a/disable", token: Self.token)
        #expect(disable.status == 200, "\(disable)")
        #expect(try proxy.status().state("web", "a") == "disabled")
        let enable = try proxy.admin("POST", "/services/web/servers/a/enable", token: Self.token)
        #expect(enable.status == 200, "\(enable)")
        #expect(try proxy.status().state("web", "a") == "up")

        let reload = try proxy.admin("POST", "/reload", token: Self.token)
        #expect(reload.status == 200, "\(reload)")
        try proxy.waitForLogLineCount("configuration reloaded", 1)

        let unknownServer = try proxy.admin("POST", "/services/web/servers/zz/drain", token: Self.token)
        #expect(unknownServer.status == 404, "\(unknownServer)")
        let unknownService = try proxy.admin("POST", "/services/nope/servers/a/drain", token: Self.token)
        #expect(unknownService.status == 404, "\(unknownService)")
    }

    @Test("A reload that moves the endpoint: to an address in use it fails and changes nothing; to a free one (or the same port on every address) it is answered on the old address, then the endpoint serves on the new one")
    func reloadMovingTheEndpoint() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let service = OpsConfig.service("web", servers: ["a \(echo.address)"])
        let proxy = try SwitchyardProcess(config: OpsConfig.global() + service)
        defer { proxy.stop() }
        let oldPort = try proxy.adminPort()

        let (busy, busyPort) = try HealthBackend.makeListenerOutsideEphemeralRange()
        defer { close(busy) }
        try proxy.rewriteConfig(OpsConfig.global(admin: "127.0.0.1:\(busyPort)") + service)
        let refused = try AdminHTTP.request(port: oldPort, method: "POST", path: "/reload")
        #expect(refused.status == 400, "\(refused)")
        #expect(refused.text.contains("reload failed"), "\(refused)")
        #expect(try AdminHTTP.request(port: oldPort, method: "GET", path: "/healthz").status == 200, "the endpoint left its address")
        #expect(try proxy.metrics().value("switchyard_config_reloads_total", ["result": "failure"]) == 1)

        let newPort = try reserveLoopbackPort()
        try proxy.rewriteConfig(OpsConfig.global(admin: "127.0.0.1:\(newPort)") + service)
        let reply = try AdminHTTP.request(port: oldPort, method: "POST", path: "/reload")
        #expect(reply.status == 200, "\(reply)")
        #expect(reply.text == "reloaded\n")
        try waitUntil("the endpoint answering on its new port", timeout: .seconds(5)) {
            (try? AdminHTTP.request(port: newPort, method: "GET", path: "/healthz"))?.status == 200
        }
        #expect((try? AdminHTTP.request(port: oldPort, method: "GET", path: "/healthz")) == nil, "the old port still answers")

        // The same port on every address: the old socket has to go first (two sockets cannot
        // listen on overlapping addresses).
        try proxy.rewriteConfig(OpsConfig.global(admin: "0.0.0.0:\(newPort)") + service)
        let widened = try AdminHTTP.request(port: newPort, method: "POST", path: "/reload")
        #expect(widened.status == 200, "\(widened)")
        #expect(try AdminHTTP.request(port: newPort, method: "GET", path: "/healthz").status == 200)
        // The log line is written before the answer, but read from the child's stderr by another
        // thread of this process: it may come in just after the answer.
        try proxy.waitForLogLineCount("configuration reloaded", 2)
        #expect(proxy.logCount("configuration reloaded") == 2)
        // Each move says which address the endpoint left.
        let left = proxy.logLines.filter { $0.message == "admin stopped listening" }.compactMap { $0["address"] }
        #expect(left == ["127.0.0.1:\(oldPort)", "127.0.0.1:\(newPort)"], "\(left)")
        #expect(proxy.isRunning)
    }

    @Test("80 idle connections to the admin endpoint (its limit is 64) do not lock out /healthz: the oldest idle ones make room")
    func idleFloodDoesNotLockOutProbes() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let proxy = try SwitchyardProcess(config: OpsConfig.global() + OpsConfig.service("web", servers: ["echo \(echo.address)"]))
        defer { proxy.stop() }
        let port = try proxy.adminPort()
        // Connected, sending nothing: each holds one of the 64 places for up to 10 s.
        var idle: [TestClient] = []
        defer { idle.forEach { $0.close() } }
        for _ in 0..<80 { idle.append(try TestClient(port: port)) }
        // A liveness probe still gets its answer, every time.
        for _ in 0..<5 {
            let reply = try AdminHTTP.request(port: port, method: "GET", path: "/healthz", timeout: .seconds(3))
            #expect(reply.status == 200, "\(reply)")
        }
        // The ones closed to make room are the oldest: the first 16 of the flood (then one more per
        // probe), while the newest are still open.
        let closedOldest = try idle.prefix(16).map { try $0.waitForEnd(timeout: .seconds(3)) }
        #expect(closedOldest.allSatisfy { $0 != nil }, "oldest idle connections still open: \(closedOldest)")
        let newest = try idle.suffix(40).map { try $0.waitForEnd(timeout: .milliseconds(50)) }
        #expect(newest.allSatisfy { $0 == nil }, "the newest idle connections were closed: \(newest)")
        #expect(proxy.isRunning)
    }

    @Test("/readyz is 503 with the reason while every server of a service is down")
    func readyzNotReady() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let refusing1 = try RefusingPort()
        defer { refusing1.close() }
        let refusing2 = try RefusingPort()
        defer { refusing2.close() }
        // panic = on (the default): a service with no healthy server still tries them all, but
        // that does not make it ready.
        let proxy = try SwitchyardProcess(config: OpsConfig.global()
            + OpsConfig.service("live", servers: ["echo \(echo.address)"])
            + OpsConfig.service("dead", servers: ["x 127.0.0.1:\(refusing1.port)", "y 127.0.0.1:\(refusing2.port)"]))
        defer { proxy.stop() }
        try proxy.waitForServersUp(service: "live", servers: ["echo"])

        let readyz = try proxy.admin("GET", "/readyz")
        #expect(readyz.status == 503, "\(readyz)")
        #expect(readyz.text.contains("dead") && readyz.text.contains("no usable server"), "\(readyz)")
        let head = try proxy.admin("HEAD", "/readyz")
        #expect(head.status == 503 && head.body.isEmpty, "\(head)")

        let status = try proxy.status()
        #expect(status.root["state"] as? String == "not_ready", "\(status)")
        for name in ["x", "y"] {
            #expect(status.state("dead", name) == "down", "\(status)")
            #expect(status.server("dead", name)?["usable"] as? Bool == false, "\(status)")
        }
        #expect(status.state("live", "echo") == "up")
        let metrics = try proxy.metrics()
        #expect(try metrics.value("switchyard_server_up", ["service": "dead", "server": "x"]) == 0)
        #expect(try metrics.value("switchyard_server_up", ["service": "live", "server": "echo"]) == 1)

        // Liveness is not readiness.
        #expect(try proxy.admin("GET", "/healthz").status == 200)
    }

    @Test("Counters match the traffic exactly; failures and reloads are counted; promtool accepts /metrics")
    func metricsFollowTraffic() throws {
        let replyBytes = 3000
        let backend = try Backend(name: "replier", behavior: .replyAfterEOF(replyBytes: replyBytes))
        defer { backend.stop() }
        let refusing = try RefusingPort()
        defer { refusing.close() }
        let proxy = try SwitchyardProcess(config: OpsConfig.global()
            + OpsConfig.service("web", servers: ["r \(backend.address)"])
            // No probes and no ejection: every client connection makes exactly one refused connect.
            + OpsConfig.service("dead", servers: ["nobody 127.0.0.1:\(refusing.port)"],
                                extra: ["check = none", "retries = 0", "eject_after = 0"]))
        defer { proxy.stop() }
        try proxy.waitForServersUp(service: "web", servers: ["r"])
        let port = try proxy.port("web")

        let before = try proxy.metrics()
        let labels = ["service": "web", "server": "r"]
        #expect(try before.value("switchyard_connections_total", labels) == 0)
        #expect(try before.value("switchyard_bytes_received_total", labels) == 0)
        #expect(try before.value("switchyard_bytes_sent_total", labels) == 0)

        // 5 connections sending 100, 1100, ... bytes; each gets 3000 bytes back.
        var sent = 0
        for i in 0..<5 {
            let client = try TestClient(port: port)
            defer { client.close() }
            let count = 100 + 1000 * i
            let result = try client.transfer(sendCount: count, sendSeed: UInt64(i), timeout: .seconds(10))
            #expect(result.bytesSent == count && result.bytesReceived == replyBytes && result.end == .eof, "\(result)")
            sent += count
            client.close()
            _ = try proxy.waitForConnectionClosed(client: client.localAddress)
        }
        let after = try proxy.metrics()
        #expect(try after.value("switchyard_connections_total", labels) == 5)
        #expect(try after.value("switchyard_connections_active", labels) == 0)
        #expect(try after.value("switchyard_bytes_received_total", labels) == Double(sent))
        #expect(try after.value("switchyard_bytes_sent_total", labels) == Double(5 * replyBytes))
        #expect(try after.value("switchyard_connection_duration_seconds_count", ["service": "web"]) == 5)
        #expect(try after.value("switchyard_connect_duration_seconds_count", labels) == 5)
        // Connects on loopback take microseconds: measured as such, not as 0 ms.
        let connectSum = try after.value("switchyard_connect_duration_seconds_sum", labels)
        #expect(connectSum > 0 && connectSum < 5, "connect duration sum \(connectSum) s for 5 loopback connects")
        #expect(try after.value("switchyard_connect_duration_seconds_bucket", labels.merging(["le": "5"]) { $1 }) == 5)
        let status = try proxy.status()
        #expect(status.server("web", "r")?["connections_total"] as? Int == 5, "\(status)")
        #expect(status.server("web", "r")?["bytes_received_total"] as? Int == sent, "\(status)")
        #expect(status.server("web", "r")?["bytes_sent_total"] as? Int == 5 * replyBytes, "\(status)")

        // A refusing server: one refused connect per client connection.
        let deadLabels = ["service": "dead", "server": "nobody"]
        #expect(try after.value("switchyard_connect_failures_total", deadLabels.merging(["reason": "refused"]) { $1 }) == 0)
        let deadPort = try proxy.port("dead")
        for _ in 0..<3 {
            let client = try TestClient(port: deadPort)
            defer { client.close() }
            #expect(try client.waitForEnd(timeout: .seconds(3)) != nil, "client of the refusing server was not closed")
            client.close()
            let line = try proxy.waitForConnectionClosed(client: client.localAddress)
            // The log names the server that failed, and how many attempts there were.
            #expect(line["end"] == "connect_failed" && line["server"] == "nobody" && line["attempts"] == "1", "\(line.raw)")
        }
        let failed = try proxy.metrics()
        #expect(try failed.value("switchyard_connect_failures_total", deadLabels.merging(["reason": "refused"]) { $1 }) == 3)
        #expect(try failed.value("switchyard_connect_failures_total", deadLabels.merging(["reason": "timeout"]) { $1 }) == 0)
        #expect(try failed.value("switchyard_rejected_connections_total", ["service": "dead", "reason": "connect_failed"]) == 3)
        #expect(try failed.value("switchyard_connections_total", deadLabels) == 0)

        // Reloads: success by the admin endpoint and by SIGHUP, failure with a broken file.
        #expect(try failed.value("switchyard_config_reloads_total", ["result": "success"]) == 0)
        #expect(try failed.value("switchyard_config_reloads_total", ["result": "failure"]) == 0)
        #expect(try proxy.admin("POST", "/reload").status == 200)
        try proxy.reloadBySignal(expectSuccessCount: 2)
        let goodConfig = try String(contentsOfFile: proxy.configPath, encoding: .utf8)
        try proxy.rewriteConfig(goodConfig + "[service broken]\n")
        let failedReload = try proxy.admin("POST", "/reload")
        #expect(failedReload.status == 400, "\(failedReload)")
        let reloads = try proxy.metrics()
        #expect(try reloads.value("switchyard_config_reloads_total", ["result": "success"]) == 2)
        #expect(try reloads.value("switchyard_config_reloads_total", ["result": "failure"]) == 1)
        // The counters survived the reloads (same servers).
        #expect(try reloads.value("switchyard_connections_total", labels) == 5)
        #expect(try reloads.value("switchyard_bytes_received_total", labels) == Double(sent))

        // The whole exposition, after real traffic, passes promtool.
        let check = try Promtool.checkMetrics(reloads.text)
        #expect(check.status == .exited(0), "promtool check metrics: \(check.status)\n\(check.output)\nmetrics:\n\(reloads.text)")
        #expect(proxy.isRunning)
    }

    @Test("A request followed at once by 256 KiB more (a pipelined request, bytes the endpoint does not read), from a client with a small receive buffer: the whole answer arrives, then a FIN, not a reset, 20 times out of 20 (lingering close)")
    func answerSurvivesUnreadBytes() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let proxy = try SwitchyardProcess(config: OpsConfig.global() + OpsConfig.service("web", servers: ["echo \(echo.address)"]))
        defer { proxy.stop() }
        let port = try proxy.adminPort()
        var stream = PayloadStream(seed: 42)
        let raw = Array("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".utf8) + stream.next(256 * 1024)
        for attempt in 1...20 {
            // A 4 KiB receive buffer holds less than the answer (5 KiB or more of metrics): part of it
            // is still in the endpoint's send queue when it is done with the connection, and a close
            // with unread bytes resets the connection, dropping that part.
            let outcome = try Self.exchange(port: port, raw: raw, receiveBuffer: 4096)
            let reply = AdminHTTP.parse(outcome.bytes)
            #expect(outcome.sendError == nil, "attempt \(attempt): sending was cut short: \(outcome)")
            #expect(reply?.status == 200, "attempt \(attempt): \(outcome)")
            let length = reply.flatMap { Int($0.header("Content-Length") ?? "") }
            #expect(length != nil && reply?.body.count == length, "attempt \(attempt): \(reply?.body.count ?? 0) body bytes of \(length ?? -1): \(outcome)")
            #expect(outcome.end == .eof, "attempt \(attempt): \(outcome)")
        }
        #expect(proxy.isRunning)
    }

    @Test("An answered connection lingers, reading, until its client's FIN, or for at most 2 s without one; lingering ones do not lock out /healthz")
    func lingeringConnections() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let proxy = try SwitchyardProcess(config: OpsConfig.global() + OpsConfig.service("web", servers: ["echo \(echo.address)"]))
        defer { proxy.stop() }
        let port = try proxy.adminPort()
        var stream = PayloadStream(seed: 7)
        let raw = Array("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".utf8) + stream.next(16 * 1024)

        // Answered (the answer and the endpoint's FIN read), the client still open: the endpoint
        // keeps its socket until the client's FIN, which closes it well before the linger timeout.
        let first = try TestClient(port: port)
        defer { first.close() }
        try first.send(raw)
        let (firstBytes, firstEnd) = try first.readToEnd()
        #expect(AdminHTTP.parse(firstBytes)?.status == 200 && firstEnd == .eof, "\(firstEnd): \(String(decoding: firstBytes, as: UTF8.self).debugDescription)")
        #expect(Self.endpointHolds(port: port, client: first), "the endpoint closed the connection before its client's FIN")
        first.close()
        try waitUntil("the lingering connection to close after its client's FIN", timeout: .seconds(1)) {
            !Self.endpointHolds(port: port, client: first)
        }

        // A client that never closes: the linger timeout ends it.
        let second = try TestClient(port: port)
        defer { second.close() }
        try second.send(raw)
        let (secondBytes, secondEnd) = try second.readToEnd()
        let answered = ContinuousClock.now
        #expect(AdminHTTP.parse(secondBytes)?.status == 200 && secondEnd == .eof, "\(secondEnd)")
        #expect(Self.endpointHolds(port: port, client: second), "the endpoint closed the connection before the linger timeout")
        try waitUntil("the linger timeout to close a connection whose client stays open", timeout: .seconds(5)) {
            !Self.endpointHolds(port: port, client: second)
        }
        let lingered = millisecondsSince(answered)
        #expect(lingered >= 1500, "closed \(lingered) ms after the answer, before the 2 s linger timeout")

        // 70 lingering connections (more than the 64 places): probes still get in, each taking the
        // place of a lingering one.
        var lingering: [TestClient] = []
        defer { lingering.forEach { $0.close() } }
        for i in 0..<70 {
            let client = try TestClient(port: port)
            lingering.append(client)
            try client.send(raw)
            let (bytes, end) = try client.readToEnd()
            #expect(AdminHTTP.parse(bytes)?.status == 200 && end == .eof, "lingering client \(i): \(end)")
        }
        let held = lingering.filter { Self.endpointHolds(port: port, client: $0) }.count
        #expect(held <= 64, "\(held) lingering connections held (the limit is 64)")
        for _ in 0..<5 {
            let reply = try AdminHTTP.request(port: port, method: "GET", path: "/healthz", timeout: .seconds(3))
            #expect(reply.status == 200, "\(reply)")
        }
        #expect(proxy.isRunning)
    }

    @Test("A client that keeps sending after its request is cut off once about 1 MiB more has been read, its answer delivered first")
    func lingeringIsBoundedInBytes() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let proxy = try SwitchyardProcess(config: OpsConfig.global() + OpsConfig.service("web", servers: ["echo \(echo.address)"]))
        defer { proxy.stop() }
        let client = try TestClient(port: try proxy.adminPort())
        defer { client.close() }
        try client.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        // Junk for as long as the endpoint takes it: on loopback the linger timeout alone would let
        // far more than 256 MiB through in its 2 s.
        let result = try client.transfer(sendCount: 256 << 20, sendSeed: 3, shutdownAfterSend: false, timeout: .seconds(10))
        #expect(result.sendError != nil && result.bytesSent < 64 << 20, "\(result)")
        #expect(result.bytesReceived > 0, "no answer before the cut: \(result)")
        #expect(proxy.isRunning)
    }

    @Test("HEAD answers carry no body, whatever the answer: parser errors after the request line (431, 413, 411, 400, 505) and route errors (404, 405)")
    func headErrorsWithoutBody() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let proxy = try SwitchyardProcess(config: OpsConfig.global() + OpsConfig.service("web", servers: ["echo \(echo.address)"]))
        defer { proxy.stop() }
        let port = try proxy.adminPort()
        let filler = String(repeating: "a", count: 8300)
        let cases: [(status: Int, request: String)] = [
            (431, "HEAD /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: \(filler)\r\n\r\n"),
            (413, "HEAD /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"),
            (411, "HEAD /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
            (400, "HEAD /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"),
            (505, "HEAD /healthz HTTP/2.0\r\n\r\n"),
            (404, "HEAD /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n"),
            (405, "HEAD /reload HTTP/1.1\r\nHost: x\r\n\r\n"),
        ]
        for (status, request) in cases {
            let reply = try AdminHTTP.exchange(port: port, raw: Array(request.utf8))
            #expect(reply.status == status, "\(request.prefix(40).debugDescription): \(reply)")
            // The same header fields as for GET, Content-Length included (RFC 9110 §9.3.2), and nothing after them.
            #expect(Int(reply.header("Content-Length") ?? "") ?? 0 > 0, "\(reply)")
            #expect(reply.body.isEmpty, "HEAD answered \(status) with a body: \(reply)")
            // The same request as GET does get the body the HEAD answer announced.
            let get = try AdminHTTP.exchange(port: port, raw: Array(request.replacingOccurrences(of: "HEAD ", with: "GET ").utf8))
            #expect(get.status == status && get.body.count == Int(reply.header("Content-Length") ?? "") ?? -1, "GET: \(get)")
        }
        #expect(proxy.isRunning)
    }

    /// Sends `raw` in one go, as a client that sends a body or a second request without waiting for
    /// the answer, then reads to the end of the stream. A send cut short (the endpoint reset the
    /// connection) is recorded rather than thrown, and the reading goes on: what arrives shows what
    /// the reset left of the answer.
    private static func exchange(port: UInt16, raw: [UInt8], receiveBuffer: Int32? = nil) throws -> ExchangeOutcome {
        let client = try TestClient(port: port, receiveBuffer: receiveBuffer)
        defer { client.close() }
        var outcome = ExchangeOutcome()
        do {
            try client.send(raw)
        } catch {
            outcome.sendError = "\(error)"
        }
        (outcome.bytes, outcome.end) = try client.readToEnd()
        return outcome
    }

    private struct ExchangeOutcome: CustomStringConvertible {
        var sendError: String?
        var bytes: [UInt8] = []
        var end = StreamEnd.eof

        var description: String {
            "\(bytes.count) bytes read, then \(end)" + (sendError.map { ", send error: \($0)" } ?? "")
                + ": " + String(decoding: bytes.prefix(300), as: UTF8.self).debugDescription
        }
    }

    /// Whether the endpoint on `port` still holds (has not closed) its socket of `client`'s
    /// connection: the socket is in /proc/net/tcp with an inode (a socket the process closed, left
    /// in FIN-WAIT-2 or TIME-WAIT, has inode 0; a reset one is gone).
    private static func endpointHolds(port: UInt16, client: TestClient) -> Bool {
        guard let text = readProcFile("/proc/net/tcp") else { return false }
        return text.split(separator: "\n").dropFirst().contains { line in
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count > 9,
                  let local = f[1].split(separator: ":").last, let remote = f[2].split(separator: ":").last,
                  UInt16(local, radix: 16) == port, UInt16(remote, radix: 16) == client.localPort
            else { return false }
            return f[9] != "0"
        }
    }

    private static func allowList(_ reply: HTTPReply) -> [String] {
        (reply.header("Allow") ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.sorted()
    }
}
