// The health and failover keys of a [service] section, through ConfigLoader.parse: each key lands
// in ServiceConfig.health with the right type and value, absent keys keep their defaults, and a bad
// value is reported as FILE:LINE: message at the line that holds it.
import Testing
import SwitchyardCore

/// A one-service file: lines 1-3 are the section header, a listen and a server line; `extra`
/// starts at line 4.
private func healthConfigText(_ extra: [String]) -> String {
    (["[service pg]", "listen = 127.0.0.1:6432", "server = a 10.0.0.1:5432"] + extra).joined(separator: "\n")
}

private func parseHealth(_ extra: String..., environment: [String: String] = [:]) throws -> HealthSettings {
    let config = try ConfigLoader.parse(healthConfigText(extra), file: "sy.ini", environment: environment)
    return try #require(config.services.first).health
}

/// `FILE:LINE: message`, or nil when the text loads.
private func healthConfigError(_ extra: String...) -> String? {
    do {
        _ = try ConfigLoader.parse(healthConfigText(extra), file: "sy.ini")
        return nil
    } catch {
        return error.description
    }
}

@Suite struct HealthConfigTests {
    // MARK: Values

    @Test func defaultsWhenNoHealthKeyIsGiven() throws {
        let h = try parseHealth()
        #expect(h == HealthSettings())
        #expect(h.check == .tcp)
        #expect(h.checkInterval == .seconds(2))
        #expect(h.checkTimeout == .seconds(1))
        #expect(h.checkPort == nil)
        #expect(h.checkSend == nil)
        #expect(h.checkExpect == nil)
        #expect(h.checkInitial == .down)
        #expect(h.rise == 2)
        #expect(h.fall == 3)
        #expect(h.ejectAfter == 3)
        #expect(h.ejectTime == .seconds(10))
        #expect(h.ejectTimeMax == .seconds(300))
        #expect(h.maxEjectionPercent == 50)
        #expect(h.retries == 2)
        #expect(h.panic == true)
        #expect(h.onDown == .keep)
        #expect(h.slowStart == .zero)
    }

    @Test func everyKeyIsParsedIntoHealthSettings() throws {
        let h = try parseHealth(
            "check = tcp",
            "check_interval = 250ms",
            "check_timeout = 750ms",
            "check_port = 8008",
            #"check_send = PING\r\n\x00\t\\end"#,
            #"check_expect = +PONG\r\n"#,
            "check_initial = up",
            "rise = 5",
            "fall = 7",
            "eject_after = 0",
            "eject_time = 30s",
            "eject_time_max = 10m",
            "max_ejection_percent = 100",
            "retries = 10",
            "panic = off",
            "on_down = close",
            "slow_start = 1m")
        #expect(h.check == .tcp)
        #expect(h.checkInterval == .milliseconds(250))
        #expect(h.checkTimeout == .milliseconds(750))
        #expect(h.checkPort == 8008)
        #expect(h.checkSend == Array("PING\r\n".utf8) + [0x00, 0x09, 0x5C] + Array("end".utf8))
        #expect(h.checkExpect == Array("+PONG\r\n".utf8))
        #expect(h.checkInitial == .up)
        #expect(h.rise == 5)
        #expect(h.fall == 7)
        #expect(h.ejectAfter == 0)
        #expect(h.ejectTime == .seconds(30))
        #expect(h.ejectTimeMax == .seconds(600))
        #expect(h.maxEjectionPercent == 100)
        #expect(h.retries == 10)
        #expect(h.panic == false)
        #expect(h.onDown == .close)
        #expect(h.slowStart == .seconds(60))
    }

    @Test("check = each kind", arguments: [
        ("tcp", HealthCheckKind.tcp), ("none", .none), ("redis", .redis), ("pgsql", .pgsql), ("mysql", .mysql),
    ])
    func checkKinds(text: String, kind: HealthCheckKind) throws {
        #expect(try parseHealth("check = \(text)").check == kind)
    }

    @Test func enumAndSwitchValues() throws {
        #expect(try parseHealth("check_initial = down").checkInitial == .down)
        #expect(try parseHealth("on_down = keep").onDown == .keep)
        #expect(try parseHealth("panic = on").panic == true)
        #expect(try parseHealth("panic = off").panic == false)
    }

    @Test func rangeEdgesAreAccepted() throws {
        #expect(try parseHealth("retries = 0").retries == 0)
        #expect(try parseHealth("max_ejection_percent = 0").maxEjectionPercent == 0)
        #expect(try parseHealth("check_port = 1").checkPort == 1)
        #expect(try parseHealth("check_port = 65535").checkPort == 65535)
        #expect(try parseHealth("rise = 1", "fall = 1").rise == 1)
        #expect(try parseHealth("slow_start = 0").slowStart == .zero)
        #expect(try parseHealth("eject_time = 1ms").ejectTime == .milliseconds(1))
    }

    @Test func checkSendAndExpectWithCheckTcp() throws {
        // Only one of them is fine too; the escapes accept either hex case.
        let h = try parseHealth("check_expect = \\x2bOK\\x0d\\x0A")
        #expect(h.checkSend == nil)
        #expect(h.checkExpect == Array("+OK\r\n".utf8))
        #expect(try parseHealth("check = tcp", "check_send = hello").checkSend == Array("hello".utf8))
    }

    @Test func environmentSubstitutionInHealthKeys() throws {
        let h = try parseHealth("check_port = ${PROBE_PORT}", "check_interval = ${INTERVAL}",
                                environment: ["PROBE_PORT": "9187", "INTERVAL": "5s"])
        #expect(h.checkPort == 9187)
        #expect(h.checkInterval == .seconds(5))
    }

    @Test func healthSettingsArePerService() throws {
        let text = """
            [service a]
            listen = 127.0.0.1:1000
            server = a1 10.0.0.1:1
            check = redis
            retries = 0
            [service b]
            listen = 127.0.0.1:1001
            server = b1 10.0.0.2:1
            """
        let config = try ConfigLoader.parse(text, file: "sy.ini")
        #expect(config.services.map(\.health.check) == [.redis, .tcp])
        #expect(config.services.map(\.health.retries) == [0, 2])
    }

    // MARK: Errors

    @Test("Bad values are reported at their line", arguments: [
        ("check_interval = 2 seconds", #"sy.ini:4: bad duration "2 seconds" for check_interval"#),
        ("check_timeout = soon", #"sy.ini:4: bad duration "soon" for check_timeout"#),
        ("check_timeout = 0", #"sy.ini:4: bad duration "0" for check_timeout (must be greater than 0)"#),
        ("eject_time = 10", #"sy.ini:4: bad duration "10" for eject_time"#),
        ("slow_start = fast", #"sy.ini:4: bad duration "fast" for slow_start"#),
        ("rise = 0", #"sy.ini:4: bad number "0" for rise (expected a whole number greater than 0)"#),
        ("fall = -1", #"sy.ini:4: bad number "-1" for fall"#),
        ("max_ejection_percent = 101", #"sy.ini:4: bad number "101" for max_ejection_percent (expected a whole number from 0 to 100)"#),
        ("retries = 11", #"sy.ini:4: bad number "11" for retries (expected a whole number from 0 to 10)"#),
        ("eject_after = many", #"sy.ini:4: bad number "many" for eject_after"#),
        ("panic = maybe", #"sy.ini:4: bad value "maybe" for panic (expected on or off)"#),
        ("check = http", #"sy.ini:4: bad value "http" for check (expected one of tcp, none, redis, pgsql, mysql)"#),
        ("check_initial = unknown", #"sy.ini:4: bad value "unknown" for check_initial (expected one of up, down)"#),
        ("on_down = drain", #"sy.ini:4: bad value "drain" for on_down (expected one of keep, close)"#),
        (#"check_send = PING\q"#, #"sy.ini:4: bad escape "PING\q" for check_send"#),
        (#"check_send = \x4"#, #"sy.ini:4: bad escape "\x4" for check_send"#),
        (#"check_expect = +OK\"#, #"sy.ini:4: bad escape "+OK\" for check_expect"#),
        ("check_port = 70000", #"sy.ini:4: bad port "70000" for check_port (expected a port from 1 to 65535)"#),
        ("check_port = 0", #"sy.ini:4: bad port "0" for check_port"#),
    ])
    func badValue(line: String, expected: String) {
        let error = healthConfigError(line)
        #expect(error?.hasPrefix(expected) == true, "got \(error ?? "no error") for \(line.debugDescription)")
    }

    @Test func errorLineIsTheLineOfTheBadKey() {
        let error = healthConfigError("check = redis", "rise = 2", "fall = 0", "retries = 1")
        #expect(error?.hasPrefix(#"sy.ini:6: bad number "0" for fall"#) == true, "got \(error ?? "no error")")
    }

    @Test func checkSendOnlyAppliesToCheckTcp() {
        // The error points at the check_send line, whichever comes first.
        #expect(healthConfigError("check = redis", #"check_send = PING\r\n"#)
            == "sy.ini:5: check_send applies only with check = tcp (this service has check = redis)")
        #expect(healthConfigError(#"check_send = PING\r\n"#, "check_interval = 1s", "check = redis")
            == "sy.ini:4: check_send applies only with check = tcp (this service has check = redis)")
        #expect(healthConfigError("check = none", "check_expect = +OK")
            == "sy.ini:5: check_expect applies only with check = tcp (this service has check = none)")
    }

    @Test func checkUserOnlyWithPgsqlAndCheckDatabaseOnlyWithCheckUser() throws {
        #expect(healthConfigError("check = redis", "check_user = monitor")
            == "sy.ini:5: check_user applies only with check = pgsql (this service has check = redis)")
        #expect(healthConfigError("check = pgsql", "check_database = app")
            == "sy.ini:5: check_database applies only with check_user (the login probe of check = pgsql)")
        #expect(healthConfigError("check = pgsql", "check_user = monitor", "check_database = app") == nil)
        let config = try ConfigLoader.parse(healthConfigText(["check = pgsql", "check_user = monitor"]), file: "sy.ini")
        #expect(config.services[0].health.checkUser == "monitor" && config.services[0].health.checkDatabase == nil)
    }

    @Test func duplicateHealthKey() {
        let error = healthConfigError("retries = 1", "retries = 2")
        #expect(error == "sy.ini:5: duplicate key retries in [service pg] (first at line 4)")
    }
}
