import Testing
@testable import SwitchyardCore

private func json(_ build: (inout JSONWriter) -> Void) -> String {
    var w = JSONWriter()
    build(&w)
    #expect(w.isComplete)
    return w.string
}

/// One top-level scalar.
private func scalar<T: JSONScalar>(_ value: T) -> String {
    json { $0.value(value) }
}

@Suite struct AdminJSONTests {
    @Test func scalarsAtTopLevel() {
        #expect(scalar("hi") == "\"hi\"")
        #expect(scalar(true) == "true")
        #expect(scalar(false) == "false")
        let null = json { $0.null() }
        #expect(null == "null")
        #expect(scalar(42) == "42")
        #expect(scalar(-7) == "-7")
        #expect(scalar(Int64.min) == "-9223372036854775808")
        #expect(scalar(UInt64.max) == "18446744073709551615")
        #expect(scalar(nil as Int?) == "null")
        #expect(scalar(Optional(3)) == "3")
    }

    @Test func doubles() {
        #expect(scalar(0.1) == "0.1")
        #expect(scalar(2.0) == "2.0")
        #expect(scalar(-1.5e-7) == "-1.5e-07")
        #expect(scalar(1e300) == "1e+300")
        #expect(scalar(Double.nan) == "null")
        #expect(scalar(Double.infinity) == "null")
        #expect(scalar(-Double.infinity) == "null")
    }

    @Test func stringEscaping() {
        #expect(scalar("a\"b\\c/d") == #""a\"b\\c/d""#)
        #expect(scalar("line\nnext\ttab\r\u{0}\u{1F}\u{8}\u{C}")
            == #""line\u000anext\u0009tab\u000d\u0000\u001f\u0008\u000c""#)
        #expect(scalar("\u{7F} é ✓ 🚀") == "\"\u{7F} é ✓ 🚀\"")
        #expect(scalar("") == "\"\"")
    }

    @Test func nesting() {
        let out = json { j in
            j.object { j in
                j.field("name", "switchyard")
                j.field("version", "0.1")
                j.field("uptime_seconds", 12.5)
                j.field("ready", true)
                j.nullField("last_reload_error")
                j.field("maybe", nil as String?)
                j.array("services") { j in
                    j.object { j in
                        j.field("name", "pg")
                        j.field("active_connections", 3)
                        j.array("servers") { j in
                            j.object { j in
                                j.field("name", "db1")
                                j.field("state", "up")
                            }
                            j.object { _ in }
                        }
                    }
                    j.object { j in
                        j.field("name", "redis")
                        j.array("servers") { _ in }
                    }
                }
                j.object("empty") { _ in }
                j.array("mixed") { j in
                    j.value(1)
                    j.value("two")
                    j.null()
                    j.array { j in j.value(false) }
                    j.object { j in j.key("k"); j.value(0) }
                }
            }
        }
        #expect(out == #"{"name":"switchyard","version":"0.1","uptime_seconds":12.5,"ready":true,"#
            + #""last_reload_error":null,"maybe":null,"services":[{"name":"pg","active_connections":3,"#
            + #""servers":[{"name":"db1","state":"up"},{}]},{"name":"redis","servers":[]}],"empty":{},"#
            + #""mixed":[1,"two",null,[false],{"k":0}]}"#)
    }

    @Test func keysAreEscaped() {
        #expect(json { j in j.object { j in j.field("a\"b\n", 1) } } == #"{"a\"b\u000a":1}"#)
    }

    @Test func topLevelArray() {
        #expect(json { j in j.array { j in for i in 0..<3 { j.value(i) } } } == "[0,1,2]")
    }

    @Test func incompleteUntilWritten() {
        var w = JSONWriter()
        #expect(!w.isComplete)
        w.object { _ in }
        #expect(w.isComplete)
        #expect(w.bytes == Array("{}".utf8))
    }
}
