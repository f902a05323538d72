// The protocol probes (`check = redis`, `check = pgsql`) against real servers started by the
// tests, and against servers that answer something else.
import Testing

@Suite("Health check presets", .serialized)
struct HealthPresetTests {
    // MARK: redis

    @Test("check = redis: a real redis-server comes up and relays; stopped, it goes down")
    func redisUpThenDown() throws {
        let redis = try RedisServer()
        defer { redis.stop() }
        let proxy = try SwitchyardProcess(config: TestConfig.global()
            + HealthTestConfig.service("cache", servers: ["r1 127.0.0.1:\(redis.port)"], extra: ["check = redis"]))
        defer { proxy.stop() }
        let up = try proxy.waitForHealthEvent(service: "cache", server: "r1", state: "up")
        #expect(up.message == "server r1 up: first probe succeeded", "\(up)")

        let client = try TestClient(port: try proxy.port("cache"))
        defer { client.close() }
        try client.send("PING\r\n")
        #expect(try client.readLine() == "+PONG\r")
        client.close()

        let mark = proxy.healthLogMark
        redis.stop()
        let down = try proxy.waitForHealthEvent(service: "cache", server: "r1", state: "down", after: mark)
        #expect(down.message.hasPrefix("server r1 down: 3 consecutive probe failures: "), "\(down)")
        #expect(down.message.contains("connection refused"), "\(down)")
    }

    @Test("check = redis: servers answering -NOAUTH or something else than +PONG are marked down, the reply in the log")
    func redisWrongRepliesGoDown() throws {
        let noauth = try HealthBackend(name: "noauth", behavior: .reply(Array("-NOAUTH Authentication required.\r\n".utf8)))
        defer { noauth.shutdown() }
        let echo = try Backend(name: "echo", behavior: .echo)  // answers PING with PING
        defer { echo.stop() }
        let proxy = try SwitchyardProcess(config: TestConfig.global()
            + HealthTestConfig.service(
                "cache", servers: [noauth.serverLine, "echo \(echo.address)"],
                extra: ["check = redis", "check_initial = up", "fall = 2"]))
        defer { proxy.stop() }

        let noauthDown = try proxy.waitForHealthEvent(service: "cache", server: "noauth", state: "down")
        #expect(noauthDown.message == "server noauth down: 2 consecutive probe failures: redis error: NOAUTH Authentication required.",
                "\(noauthDown)")
        let echoDown = try proxy.waitForHealthEvent(service: "cache", server: "echo", state: "down")
        #expect(echoDown.message == #"server echo down: 2 consecutive probe failures: unexpected redis reply: "PING\r\n""#,
                "\(echoDown)")
        #expect(proxy.healthEvents(service: "cache", server: "noauth", state: "up").isEmpty)
    }

    // MARK: pgsql

    @Test("check = pgsql with check_user logs in: a PostgreSQL refusing logins (too many clients) goes down with its message, the SSLRequest probe cannot see it; PostgreSQL logs nothing for the probes")
    func pgsqlLoginProbeSeesRefusedLogins() throws {
        let postgres = try PostgresInstance(settings: ["max_connections=2", "superuser_reserved_connections=0"])
        defer { postgres.stop() }
        let proxy = try SwitchyardProcess(config: OpsConfig.global()
            + HealthTestConfig.service("login", servers: ["pg \(postgres.address)"], extra: [
                "check = pgsql", "check_user = postgres", "fall = 2", "rise = 1"])
            + HealthTestConfig.service("ssl", servers: ["pg \(postgres.address)"], extra: [
                "check = pgsql", "fall = 2"]))
        defer { proxy.stop() }
        try proxy.waitForServersUp(service: "login", servers: ["pg"])
        try proxy.waitForServersUp(service: "ssl", servers: ["pg"])

        // Take both connection slots: every further login is refused.
        var mark = proxy.healthLogMark
        var sessions: [TestClient] = []
        defer { sessions.forEach { $0.close() } }
        for _ in 0..<2 { sessions.append(try postgres.openSession()) }
        let down = try proxy.waitForHealthEvent(service: "login", server: "pg", state: "down", after: mark)
        #expect(down.message.contains("pgsql error: sorry, too many clients already"), "\(down)")
        let status = try proxy.status()
        #expect(status.server("login", "pg")?["last_probe_error"] as? String == "pgsql error: sorry, too many clients already", "\(status)")
        // The SSLRequest probe is answered before the server checks for room: still up.
        #expect(status.server("ssl", "pg")?["state"] as? String == "up", "\(status)")

        // A slot again: up at the next probe.
        mark = proxy.healthLogMark
        sessions.removeLast().close()
        try proxy.waitForHealthEvent(service: "login", server: "pg", state: "up", after: mark)

        // Probes that logged in ended their sessions with a Terminate (the server reports no
        // lost client), and the others left at the password-free handshake's end quietly.
        let serverLog = postgres.log
        for complaint in ["could not receive data from client", "unexpected EOF", "incomplete startup packet", "expected password response"] {
            #expect(!serverLog.contains(complaint), "PostgreSQL logged \"\(complaint)\" for the probes:\n\(serverLog.suffix(2000))")
        }
    }

    @Test("check = pgsql: a real PostgreSQL comes up and relays; a server that is not PostgreSQL goes down with the reason")
    func pgsqlAgainstRealPostgres() throws {
        let postgres = try PostgresInstance()
        defer { postgres.stop() }
        let echo = try Backend(name: "echo", behavior: .echo)  // answers the SSLRequest with itself
        defer { echo.stop() }
        let proxy = try SwitchyardProcess(config: TestConfig.global()
            + HealthTestConfig.service("db", servers: ["pg \(postgres.address)"], extra: ["check = pgsql"])
            + HealthTestConfig.service(
                "notdb", servers: ["echo \(echo.address)"], extra: ["check = pgsql", "check_initial = up", "fall = 2"]))
        defer { proxy.stop() }

        let up = try proxy.waitForHealthEvent(service: "db", server: "pg", state: "up")
        #expect(up.message == "server pg up: first probe succeeded", "\(up)")

        // Through switchyard, PostgreSQL answers an SSLRequest with S or N.
        let client = try TestClient(port: try proxy.port("db"))
        defer { client.close() }
        try client.send([0x00, 0x00, 0x00, 0x08, 0x04, 0xD2, 0x16, 0x2F])
        let answer = try client.readExactly(1)
        #expect(answer == Array("N".utf8) || answer == Array("S".utf8), "PostgreSQL answered the SSLRequest with \(answer)")
        client.close()

        let notPostgres = try proxy.waitForHealthEvent(service: "notdb", server: "echo", state: "down")
        #expect(notPostgres.message.hasPrefix("server echo down: 2 consecutive probe failures: unexpected pgsql reply to SSLRequest: "),
                "\(notPostgres)")

        let mark = proxy.healthLogMark
        postgres.stop()
        let down = try proxy.waitForHealthEvent(service: "db", server: "pg", state: "down", after: mark)
        #expect(down.message.hasPrefix("server pg down: 3 consecutive probe failures: "), "\(down)")
    }
}
