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
