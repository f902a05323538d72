import Testing
@testable import SwitchyardCore

@Suite struct ServerKeepAliveConfigTests {
    private func parse(_ extra: String...) throws -> ServiceConfig {
        let text = (["[service pg]", "listen = 0.0.0.0:6432", "server = a 10.0.0.1:5432"] + extra).joined(separator: "\n")
        return try #require(try ConfigLoader.parse(text, file: "sy.ini").services.first)
    }

    @Test func serverKeepAliveIsOffUnlessTurnedOn() throws {
        #expect(try parse().serverKeepAlive == false, "default")
        #expect(try parse("server_keepalive = on").serverKeepAlive == true)
        #expect(try parse("server_keepalive = off").serverKeepAlive == false)
    }

    @Test func aBadServerKeepAliveValueNamesTheLine() {
        #expect(throws: ConfigError(file: "sy.ini", line: 4, message: "bad value \"60s\" for server_keepalive (expected on or off)")) {
            _ = try parse("server_keepalive = 60s")
        }
    }
}

@Suite struct BusyPollConfigTests {
    private func parse(_ extra: String...) throws -> GlobalConfig {
        let text = (["[global]"] + extra + ["[service pg]", "listen = 0.0.0.0:6432", "server = a 10.0.0.1:5432"])
            .joined(separator: "\n")
        return try ConfigLoader.parse(text, file: "sy.ini").global
    }

    @Test func busyPollIsOffUnlessGivenAWindow() throws {
        #expect(try parse().busyPoll == .zero, "default")
        #expect(try parse("busy_poll = 50us").busyPoll == .microseconds(50))
        #expect(try parse("busy_poll = 0").busyPoll == .zero)
        #expect(try parse("busy_poll = 10ms").busyPoll == .milliseconds(10))
    }

    @Test func aBusyPollWindowOver10msIsRefusedWithItsLine() {
        #expect(throws: ConfigError(file: "sy.ini", line: 2, message: "bad duration \"1s\" for busy_poll (at most 10ms; e.g. 50us)")) {
            _ = try parse("busy_poll = 1s")
        }
        #expect(throws: ConfigError(file: "sy.ini", line: 2, message: "bad duration \"fast\" for busy_poll (expected e.g. 250ms, 2s, 5m, 1h)")) {
            _ = try parse("busy_poll = fast")
        }
    }
}

@Suite struct ResolveIntervalConfigTests {
    private func parse(_ extra: String...) throws -> GlobalConfig {
        let text = (["[global]"] + extra + ["[service pg]", "listen = 0.0.0.0:6432", "server = a db.internal:5432"])
            .joined(separator: "\n")
        return try ConfigLoader.parse(text, file: "sy.ini").global
    }

    @Test func namesAreLookedUpAgainEvery30sUnlessSetOtherwise() throws {
        #expect(try parse().resolveInterval == .seconds(30), "default")
        #expect(try parse("resolve_interval = 5s").resolveInterval == .seconds(5))
        #expect(try parse("resolve_interval = 0").resolveInterval == .zero, "off")
        #expect(try parse("resolve_interval = 100ms").resolveInterval == .milliseconds(100), "the shortest")
    }

    @Test func aBadResolveIntervalNamesTheLine() {
        #expect(throws: ConfigError(file: "sy.ini", line: 2, message: "bad duration \"often\" for resolve_interval (expected e.g. 250ms, 2s, 5m, 1h)")) {
            _ = try parse("resolve_interval = often")
        }
        #expect(throws: ConfigError(file: "sy.ini", line: 2, message: "bad duration \"50ms\" for resolve_interval (0 = off, or at least 100ms; e.g. 30s)")) {
            _ = try parse("resolve_interval = 50ms")
        }
    }
}
