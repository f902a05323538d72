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
