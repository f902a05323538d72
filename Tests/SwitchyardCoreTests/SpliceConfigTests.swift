import Testing
@testable import SwitchyardCore

@Suite struct SpliceConfigTests {
    private func parse(_ extra: String...) throws -> ServiceConfig {
        let text = (["[service pg]", "listen = 0.0.0.0:6432", "server = a 10.0.0.1:5432"] + extra).joined(separator: "\n")
        return try #require(try ConfigLoader.parse(text, file: "sy.ini").services.first)
    }

    @Test func spliceTakesAutoOnOrOff() throws {
        #expect(try parse().splice == .auto, "default")
        #expect(try parse("splice = auto").splice == .auto)
        #expect(try parse("splice = on").splice == .on)
        #expect(try parse("splice = off").splice == .off)
    }

    @Test func aBadSpliceValueNamesTheChoices() {
        #expect(throws: ConfigError(file: "sy.ini", line: 4, message: "bad value \"yes\" for splice (expected one of auto, on, off)")) {
            _ = try parse("splice = yes")
        }
    }
}
