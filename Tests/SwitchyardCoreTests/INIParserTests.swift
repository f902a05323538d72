import Testing
@testable import SwitchyardCore

/// Lines joined with "\n": line N of the file is argument N.
private func lines(_ lines: String...) -> String { lines.joined(separator: "\n") }

private func parse(_ text: String) throws(ConfigError) -> INIDocument {
    try INIParser.parse(text, file: "t.ini")
}

/// The error the user would see (`FILE:LINE: message`), or nil when the text parses.
private func parseError(_ text: String) -> String? {
    do {
        _ = try parse(text)
        return nil
    } catch {
        return error.description
    }
}

@Suite struct INIParserTests {
    @Test func commentsAndBlankLinesAreIgnored() throws {
        let doc = try parse(lines(
            "; a comment",
            "# another",
            "",
            "   ",
            "[s]",
            "  ; indented comment",
            "a = 1 ; trailing",
            "b = 2 # trailing hash",
            "c = x#y",
            "d = x;y",
            "e = ; nothing but a comment",
            "f =",
            "g = two  words\t; kept inner spaces",
        ))
        #expect(doc.sections.count == 1)
        let entries = doc.sections[0].entries
        #expect(entries.map(\.key) == ["a", "b", "c", "d", "e", "f", "g"])
        #expect(entries.map(\.value) == ["1", "2", "x#y", "x;y", "", "", "two  words"])
        #expect(entries.map(\.line) == [7, 8, 9, 10, 11, 12, 13])
    }

    @Test func whitespaceAroundEqualsIsFree() throws {
        let doc = try parse(lines("[s]", "a=1", "b   =    2", "\tc\t=\t3  ", "d = a=b"))
        let entries = doc.sections[0].entries
        #expect(entries.map(\.key) == ["a", "b", "c", "d"])
        #expect(entries.map(\.value) == ["1", "2", "3", "a=b"])
    }

    @Test func repeatedKeysKeepTheirOrder() throws {
        let doc = try parse(lines("[service pg]", "server = a 1.1.1.1:1", "listen = x:1", "server = b 2.2.2.2:2", "server = c 3.3.3.3:3"))
        #expect(doc.sections[0].values("server") == ["a 1.1.1.1:1", "b 2.2.2.2:2", "c 3.3.3.3:3"])
        #expect(doc.sections[0].entries.map(\.line) == [2, 3, 4, 5])
    }

    @Test func sectionHeadersWithAndWithoutArguments() throws {
        let doc = try parse(lines(
            "[global]",
            "[service pg]",
            "[  service   pg-1.a_b  ]",
            "[global] ; comment after a header",
            "[weird two words]",
        ))
        #expect(doc.sections == [
            INISection(name: "global", argument: nil, line: 1),
            INISection(name: "service", argument: "pg", line: 2),
            INISection(name: "service", argument: "pg-1.a_b", line: 3),
            INISection(name: "global", argument: nil, line: 4),
            INISection(name: "weird", argument: "two words", line: 5),
        ])
    }

    @Test func crlfLineEndingsGiveTheSameResultAsLF() throws {
        let source = ["; c", "[service pg]", "", "listen = 0.0.0.0:1 ; c", "server = a 1.2.3.4:5"]
        let lf = try parse(source.joined(separator: "\n") + "\n")
        let crlf = try parse(source.joined(separator: "\r\n") + "\r\n")
        #expect(crlf == lf)
        #expect(crlf.sections[0].entries.map(\.value) == ["0.0.0.0:1", "a 1.2.3.4:5"])
        #expect(crlf.sections[0].entries.map(\.line) == [4, 5])
        #expect(crlf.lineCount == 5)
        #expect(parseError("[s]\r\nnope\r\n") == "t.ini:2: line has no \"=\": \"nope\" (expected KEY = VALUE)")
    }

    @Test func lineCountAndByteOrderMark() throws {
        #expect(try parse("").lineCount == 1)
        #expect(try parse("[a]").lineCount == 1)
        #expect(try parse("[a]\n").lineCount == 1)
        #expect(try parse("[a]\n\nk = v\n\n").lineCount == 4)
        let bom = try parse("\u{FEFF}[a]\nk = v")
        #expect(bom.sections == [INISection(name: "a", argument: nil, line: 1, entries: [INIEntry(key: "k", value: "v", line: 2)])])
    }

    @Test(arguments: [
        (lines("; header comes later", "workers = 1", "[global]"),
         "t.ini:2: \"workers = 1\" is outside any section (put it under a [section] header)"),
        (lines("[global]", "[service pg"),
         "t.ini:2: malformed section header \"[service pg\" (expected [NAME] or [NAME ARGUMENT])"),
        (lines("[]"), "t.ini:1: malformed section header \"[]\" (expected [NAME] or [NAME ARGUMENT])"),
        (lines("", "[  ]"), "t.ini:2: malformed section header \"[  ]\" (expected [NAME] or [NAME ARGUMENT])"),
        (lines("[global] extra"), "t.ini:1: malformed section header \"[global] extra\" (expected [NAME] or [NAME ARGUMENT])"),
        (lines("[a [b]]"), "t.ini:1: malformed section header \"[a [b]]\" (expected [NAME] or [NAME ARGUMENT])"),
        (lines("[s]", "a = 1", "listen 0.0.0.0:6432"),
         "t.ini:3: line has no \"=\": \"listen 0.0.0.0:6432\" (expected KEY = VALUE)"),
        (lines("[s]", "  = 5"), "t.ini:2: missing key before \"=\" in \"= 5\""),
    ])
    func syntaxErrorsNameTheLine(text: String, expected: String) {
        #expect(parseError(text) == expected)
    }

    @Test func firstErrorInFileOrderWins() {
        #expect(parseError(lines("[s]", "bad line", "[broken")) == "t.ini:2: line has no \"=\": \"bad line\" (expected KEY = VALUE)")
    }

    @Test func parserIsLazySoEventsBeforeAnErrorAreDelivered() throws {
        var parser = INIParser(lines("[s]", "a = 1", "oops"), file: "t.ini")
        #expect(try parser.next() == .section(name: "s", argument: nil, line: 1))
        #expect(try parser.next() == .entry(key: "a", value: "1", line: 2))
        #expect(throws: ConfigError(file: "t.ini", line: 3, message: "line has no \"=\": \"oops\" (expected KEY = VALUE)")) {
            _ = try parser.next()
        }
    }
}

extension INIParserTests {
    @Suite struct Durations {
        @Test(arguments: [
            ("250ms", Duration.milliseconds(250)),
            ("2s", .seconds(2)),
            ("5m", .seconds(300)),
            ("1h", .seconds(3600)),
            ("0", .zero),
            ("0s", .zero),
            ("0ms", .zero),
            ("1m30s", .seconds(90)),
            ("1h30m", .seconds(5400)),
            ("2s500ms", .milliseconds(2500)),
            ("1h2m3s4ms", .milliseconds(3_723_004)),
            ("90s", .seconds(90)),
            ("50us", .microseconds(50)),
            ("1ms500us", .microseconds(1500)),
        ])
        func valid(text: String, expected: Duration) {
            #expect(parseDuration(text) == expected)
        }

        @Test(arguments: [
            "", "5x", "5", "-1s", "1.5s", "s", "ms", "2 s", " 2s", "2s ", "30s1m", "1s1s", "2S", "1d",
            "99999999999999999999h", "9223372036854775807h", "1m30", "0x10s", "us", "500us1ms", "5µs",
        ])
        func invalid(text: String) {
            #expect(parseDuration(text) == nil)
        }
    }

    @Suite struct HostPorts {
        @Test(arguments: [
            ("0.0.0.0:6432", "0.0.0.0", 6432),
            ("127.0.0.1:9000", "127.0.0.1", 9000),
            ("[::]:6432", "::", 6432),
            ("[::1]:80", "::1", 80),
            ("[2001:db8:0:0:0:0:0:1]:443", "2001:db8:0:0:0:0:0:1", 443),
            ("[::ffff:10.0.0.1]:5432", "::ffff:10.0.0.1", 5432),
            ("[fe80::1%eth0]:80", "fe80::1%eth0", 80),
            ("db.local:5432", "db.local", 5432),
            ("localhost:0", "localhost", 0),
            ("my_host-1.Example.com:65535", "my_host-1.Example.com", 65535),
            ("pg.default.svc.cluster.local.:5432", "pg.default.svc.cluster.local.", 5432),  // fully qualified
        ] as [(String, String, UInt16)])
        func valid(text: String, host: String, port: UInt16) {
            let parsed = parseHostPort(text)
            #expect(parsed == HostPort(host: host, port: port))
            #expect(parsed?.description == text)
        }

        @Test(arguments: [
            "10.0.0.1:70000", "10.0.0.1:65536", "10.0.0.1", "10.0.0.1:", "10.0.0.1:http", "10.0.0.1:-1",
            "10.0.0.1:+80", "[::1]", "[::1]80", "[::1:80", "::1:80", "[1::2::3]:80", "[1:2:3:4:5:6:7:8:9]:80",
            "[1:2:3]:80", "[10.0.0.1]:80", "[]:80", "256.0.0.1:80", "10.0.0:80", "01.2.3.4:80", ":80", "",
            "host name:80", "-bad.example:80", "bad..example:80", "db.local:5432 ", ".:80", "db.local..:80", ".db.local:80",
        ])
        func invalid(text: String) {
            #expect(parseHostPort(text) == nil)
        }

        @Test(arguments: [
            ("10.0.0.1:70000", "port 70000 is greater than 65535"),
            ("10.0.0.1", "missing port"),
            ("10.0.0.1:", "missing port"),
            ("[::1]", "missing port"),
            ("10.0.0.1:http", "port \"http\" is not a number"),
            ("::1:80", "an IPv6 address must be in brackets, e.g. [::1]:80"),
            ("300.1.1.1:80", "\"300.1.1.1\" is not an IPv4 address"),
            ("[1::2::3]:80", "\"1::2::3\" is not an IPv6 address"),
            ("a b:80", "\"a b\" is not a valid host name"),
        ])
        func reasonsAreSpelledOut(text: String, reason: String) {
            #expect(throws: ValueError(reason)) { try hostPort(text) }
        }
    }

    @Suite struct SizesAndBools {
        @Test func sizes() {
            #expect(parseSize("65536") == 65536)
            #expect(parseSize("64k") == 65536)
            #expect(parseSize("16KiB") == 16384)
            #expect(parseSize("1m") == 1 << 20)
            #expect(parseSize("1MB") == 1 << 20)
            #expect(parseSize("2g") == 2 << 30)
            #expect(parseSize("0") == 0)
            for bad in ["", "k", "-1", "1.5k", "1t", "1 k", "99999999999999999999",
                        "64\u{212A}", "64\u{212A}b"] {  // the Kelvin sign, which Unicode lowers to k
                #expect(parseSize(bad) == nil, "\(bad)")
            }
        }

        @Test func bools() {
            for yes in ["true", "yes", "on", "1", "TRUE", "Yes"] { #expect(parseBool(yes) == true, "\(yes)") }
            for no in ["false", "no", "off", "0", "Off"] { #expect(parseBool(no) == false, "\(no)") }
            for bad in ["", "y", "2", "enable"] { #expect(parseBool(bad) == nil, "\(bad)") }
        }
    }

    @Suite struct EnvironmentSubstitution {
        let env = ["HOST": "10.0.0.1", "PORT": "5432", "EMPTY": ""]

        @Test(arguments: [
            ("${HOST}:${PORT}", "10.0.0.1:5432"),
            ("${MISSING:-0.0.0.0}:${PORT}", "0.0.0.0:5432"),
            ("${HOST:-ignored}", "10.0.0.1"),
            ("${EMPTY:-fallback}", "fallback"),
            ("[${EMPTY}]", "[]"),
            ("${MISSING:-}", ""),
            ("$$", "$$"),
            ("$HOST", "$HOST"),
            ("price $5", "price $5"),
            ("$${HOST}", "$10.0.0.1"),
            ("a${HOST}b${PORT}c", "a10.0.0.1b5432c"),
            ("${MISSING:-a:-b}", "a:-b"),
            ("plain", "plain"),
        ])
        func substitutes(text: String, expected: String) throws {
            #expect(try substituteEnvironment(text, environment: env) == expected)
        }

        @Test(arguments: [
            ("${MISSING}", "environment variable MISSING is not set (write ${MISSING:-default} to give a default)"),
            ("x ${HOST", "\"${\" without a closing \"}\" in \"x ${HOST\""),
            ("${}", "bad environment variable name \"\" in \"${}\" (use letters, digits and _)"),
            ("${1A}", "bad environment variable name \"1A\" in \"${1A}\" (use letters, digits and _)"),
            ("${A-B}", "bad environment variable name \"A-B\" in \"${A-B}\" (use letters, digits and _)"),
        ])
        func errors(text: String, message: String) {
            #expect(throws: ValueError(message)) { try substituteEnvironment(text, environment: env) }
        }
    }
}
