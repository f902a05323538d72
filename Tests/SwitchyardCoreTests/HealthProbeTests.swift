import Testing
@testable import SwitchyardCore

private func probe(_ check: HealthCheckKind, send: String? = nil, expect: String? = nil,
                   user: String? = nil, database: String? = nil) -> HealthProbe {
    var s = HealthSettings()
    s.check = check
    s.checkSend = send.map { Array($0.utf8) }
    s.checkExpect = expect.map { Array($0.utf8) }
    s.checkUser = user
    s.checkDatabase = database
    return HealthProbe(settings: s)!
}

private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

private func isFail(_ v: ProbeVerdict, containing text: String) -> Bool {
    if case .fail(let reason) = v { return reason.contains(text) }
    return false
}

/// A MySQL packet: 3-byte little-endian length, sequence id, payload.
private func mysqlPacket(_ payload: [UInt8], sequence: UInt8 = 0) -> [UInt8] {
    let n = payload.count
    return [UInt8(n & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n >> 16), sequence] + payload
}

@Suite struct HealthProbeTests {
    @Test func noneHasNoProbe() {
        var s = HealthSettings()
        s.check = .none
        #expect(HealthProbe(settings: s) == nil)
        #expect(ServiceHealth(settings: s, serverNames: ["a"], now: 0).probe == nil)
    }

    @Test func plainTCPPassesOnConnect() {
        let p = probe(.tcp)
        #expect(p.kind == .connect)
        #expect(p.request.isEmpty)
        #expect(!p.readsReply)
        #expect(p.evaluate(received: [UInt8]()) == .pass)
    }

    @Test func customSendWithoutExpectPassesOnceWritten() {
        let p = probe(.tcp, send: "HELLO\n")
        #expect(p.request == bytes("HELLO\n"))
        #expect(!p.readsReply)
        #expect(p.evaluate(received: [UInt8]()) == .pass)
    }

    @Test func customExpectMatchesAPrefixIncrementally() {
        let p = probe(.tcp, send: "GET /health HTTP/1.0\r\n\r\n", expect: "HTTP/1.1 200")
        #expect(p.readsReply)
        #expect(p.request == bytes("GET /health HTTP/1.0\r\n\r\n"))
        #expect(p.evaluate(received: [UInt8]()) == .needMore)
        #expect(p.evaluate(received: bytes("HTTP/1.")) == .needMore)
        #expect(p.evaluate(received: bytes("HTTP/1.1 200 OK\r\n")) == .pass)
        #expect(p.evaluate(received: bytes("HTTP/1.1 200")) == .pass)
        let bad = p.evaluate(received: bytes("HTTP/1.1 503 Service Unavailable\r\n"))
        #expect(isFail(bad, containing: "unexpected reply: \"HTTP/1.1 503 Service Unavailable\\r\\n\""))
        #expect(isFail(p.evaluate(received: bytes("HTTX")), containing: "unexpected reply"))
        // A banner with no send.
        let banner = probe(.tcp, expect: "SSH-2.0")
        #expect(banner.request.isEmpty && banner.readsReply)
        #expect(banner.evaluate(received: bytes("SSH-2.0-OpenSSH_9.6\r\n")) == .pass)
    }

    @Test func endOfStreamTurnsNeedMoreIntoFailure() {
        let p = probe(.tcp, expect: "OK")
        #expect(isFail(p.evaluateAtEndOfStream(received: [UInt8]()), containing: "closed without a reply"))
        #expect(isFail(p.evaluateAtEndOfStream(received: bytes("O")), containing: "partial reply: O"))
        #expect(p.evaluateAtEndOfStream(received: bytes("OK")) == .pass)
    }

    @Test func replyLimitBoundsNeedMore() {
        let p = probe(.redis)
        let long = [UInt8(ascii: "-")] + Array(repeating: UInt8(ascii: "x"), count: 2000)
        #expect(isFail(p.evaluate(received: long), containing: "redis error: xxx"))
        #expect(p.maxReplyBytes == 1024)
        let big = probe(.tcp, expect: String(repeating: "y", count: 3000))
        #expect(big.maxReplyBytes == 3000)
    }

    // MARK: redis

    @Test func redisPingPong() {
        let p = probe(.redis)
        #expect(p.request == bytes("PING\r\n"))
        #expect(p.evaluate(received: [UInt8]()) == .needMore)
        #expect(p.evaluate(received: bytes("+PO")) == .needMore)
        #expect(p.evaluate(received: bytes("+PONG\r\n")) == .pass)
        #expect(p.evaluate(received: bytes("+PONG\r")) == .needMore)  // the whole line
        #expect(isFail(p.evaluate(received: bytes("+PONGGARBAGE")), containing: "unexpected redis reply"))
        #expect(p.evaluate(received: bytes("-ERR unknown")) == .needMore)  // waits for the whole line
        #expect(p.evaluate(received: bytes("-NOAUTH Authentication required.\r\n"))
            == .fail(reason: "redis error: NOAUTH Authentication required."))
        #expect(p.evaluate(received: bytes("-LOADING Redis is loading the dataset in memory\r\n"))
            == .fail(reason: "redis error: LOADING Redis is loading the dataset in memory"))
        #expect(isFail(p.evaluate(received: bytes("+OK\r\n")), containing: "unexpected redis reply: \"+OK\\r\\n\""))
        #expect(isFail(p.evaluate(received: bytes("$4\r\nPONG\r\n")), containing: "unexpected redis reply"))
        #expect(isFail(p.evaluateAtEndOfStream(received: bytes("-ERR")), containing: "partial reply: -ERR"))
    }

    // MARK: pgsql

    @Test func pgsqlSSLRequest() {
        let p = probe(.pgsql)
        #expect(p.request == [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F])
        // 80877103 big-endian.
        let code = p.request[4...].reduce(0) { $0 << 8 | Int($1) }
        #expect(code == 80_877_103)
        #expect(p.evaluate(received: [UInt8]()) == .needMore)
        #expect(p.evaluate(received: bytes("S")) == .pass)
        #expect(p.evaluate(received: bytes("N")) == .pass)
        #expect(isFail(p.evaluate(received: bytes("X")), containing: "unexpected pgsql reply"))
        #expect(isFail(p.evaluate(received: bytes("HTTP/1.1 400")), containing: "unexpected pgsql reply"))
    }

    @Test func pgsqlErrorResponseIsDecoded() {
        let p = probe(.pgsql)
        let fields = bytes("SFATAL") + [0] + bytes("C53300") + [0] + bytes("Msorry, too many clients already") + [0, 0]
        let length = fields.count + 4
        let message = [UInt8(ascii: "E"), 0, 0, UInt8(length >> 8), UInt8(length & 0xFF)] + fields
        #expect(p.evaluate(received: Array(message.prefix(3))) == .needMore)
        #expect(p.evaluate(received: Array(message.prefix(12))) == .needMore)
        #expect(p.evaluate(received: message) == .fail(reason: "pgsql error: sorry, too many clients already"))
        #expect(isFail(p.evaluateAtEndOfStream(received: Array(message.prefix(3))), containing: "connection closed"))
    }

    /// A backend message: type, Int32 length (itself included), body.
    private func pgMessage(_ type: Character, _ body: [UInt8]) -> [UInt8] {
        let length = body.count + 4
        return [UInt8(ascii: type.unicodeScalars.first!), UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)] + body
    }

    @Test("check_user: a StartupMessage as that user (protocol 3.0, the database when given)")
    func pgsqlLoginRequest() {
        let p = probe(.pgsql, user: "monitor")
        #expect(p.kind == .pgsqlLogin && p.readsReply)
        let body = [0, 3, 0, 0] + bytes("user") + [0] + bytes("monitor") + [0]
            + bytes("application_name") + [0] + bytes("switchyard health check") + [0, 0]
        let length = body.count + 4
        #expect(p.request == [0, 0, UInt8(length >> 8), UInt8(length & 0xFF)] + body)
        let withDatabase = probe(.pgsql, user: "monitor", database: "app")
        #expect(withDatabase.request.count == p.request.count + 13)
        #expect(String(decoding: withDatabase.request, as: UTF8.self).contains("database\u{0}app\u{0}"))
    }

    @Test("check_user: a password asked for passes at once (no goodbye); AuthenticationOk passes at ReadyForQuery, then a Terminate; refusals fail with their message")
    func pgsqlLoginVerdicts() {
        let p = probe(.pgsql, user: "monitor")
        // SCRAM (10, with the mechanism list) or MD5 (5): the server takes logins.
        let scram = pgMessage("R", [0, 0, 0, 10] + bytes("SCRAM-SHA-256") + [0, 0])
        for n in 0..<9 { #expect(p.evaluate(received: Array(scram.prefix(n))) == .needMore, "\(n) bytes") }
        #expect(p.evaluate(received: scram) == .pass)
        #expect(p.evaluate(received: pgMessage("R", [0, 0, 0, 5, 1, 2, 3, 4])) == .pass)
        #expect(p.farewell(received: scram).isEmpty, "a Terminate in place of a password would be logged")
        // trust: AuthenticationOk, parameters, key data, then ReadyForQuery.
        let session = pgMessage("R", [0, 0, 0, 0]) + pgMessage("S", bytes("server_version") + [0] + bytes("15.8") + [0])
            + pgMessage("K", [0, 0, 0, 1, 0, 0, 0, 2]) + pgMessage("Z", bytes("I"))
        for n in 0..<session.count { #expect(p.evaluate(received: Array(session.prefix(n))) == .needMore, "\(n) bytes") }
        #expect(p.evaluate(received: session) == .pass)
        #expect(p.farewell(received: session) == [UInt8(ascii: "X"), 0, 0, 0, 4])
        // Refused before or after authentication.
        let tooMany = pgMessage("E", bytes("SFATAL") + [0] + bytes("C53300") + [0] + bytes("Msorry, too many clients already") + [0, 0])
        #expect(p.evaluate(received: tooMany) == .fail(reason: "pgsql error: sorry, too many clients already"))
        let shutting = pgMessage("R", [0, 0, 0, 0]) + pgMessage("E", bytes("SFATAL") + [0] + bytes("Mthe database system is shutting down") + [0, 0])
        #expect(p.evaluate(received: shutting) == .fail(reason: "pgsql error: the database system is shutting down"))
        #expect(p.farewell(received: shutting).isEmpty)
        // Not PostgreSQL, or a broken authentication message.
        #expect(isFail(p.evaluate(received: bytes("N")), containing: "unexpected pgsql reply to StartupMessage"))
        #expect(isFail(p.evaluate(received: [UInt8(ascii: "R"), 0, 0, 0, 6]), containing: "bad length"))
        #expect(isFail(p.evaluateAtEndOfStream(received: Array(session.prefix(12))), containing: "connection closed"))
    }

    // MARK: mysql

    @Test func mysqlGreetingV10Passes() {
        let p = probe(.mysql)
        #expect(p.request.isEmpty && p.readsReply)
        let greeting = mysqlPacket([10] + bytes("8.0.36") + [0] + [1, 0, 0, 0] + Array(repeating: 0x41, count: 30))
        #expect(p.evaluate(received: [UInt8]()) == .needMore)
        #expect(p.evaluate(received: Array(greeting.prefix(4))) == .needMore)
        #expect(p.evaluate(received: Array(greeting.prefix(5))) == .pass)
        #expect(p.evaluate(received: greeting) == .pass)
    }

    @Test func mysqlOtherVersionsFail() {
        let p = probe(.mysql)
        #expect(p.evaluate(received: mysqlPacket([9] + bytes("3.22"))) == .fail(reason: "unsupported mysql protocol version 9 (expected 10)"))
        #expect(isFail(p.evaluate(received: mysqlPacket([10], sequence: 1)), containing: "sequence id 1"))
        #expect(isFail(p.evaluate(received: [0, 0, 0, 0]), containing: "empty payload"))
        // Not MySQL at all: "HTTP" read as a header is length 0x545448, sequence 'P'.
        #expect(isFail(p.evaluate(received: bytes("HTTP/1.1 400")), containing: "sequence id"))
    }

    @Test func mysqlErrorPacketIsDecoded() {
        let p = probe(.mysql)
        let text = "Host '10.0.0.5' is blocked because of many connection errors; unblock with 'mysqladmin flush-hosts'"
        let packet = mysqlPacket([0xFF, 0x69, 0x04] + bytes(text))  // 1129
        #expect(p.evaluate(received: Array(packet.prefix(20))) == .needMore)
        #expect(p.evaluate(received: packet) == .fail(reason: "mysql error packet 1129: \(text)"))
        // With the `#` SQL-state marker (protocol 4.1 form).
        let withState = mysqlPacket([0xFF, 0x10, 0x04, UInt8(ascii: "#")] + bytes("08004") + bytes("Too many connections"))
        #expect(p.evaluate(received: withState) == .fail(reason: "mysql error packet 1040: Too many connections"))
        // Cut short by the server closing.
        #expect(isFail(p.evaluateAtEndOfStream(received: Array(packet.prefix(20))), containing: "partial reply"))
    }
}
