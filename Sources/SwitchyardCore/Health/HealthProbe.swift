// What an active probe sends and how its reply is judged. Pure: the wiring connects (to
// `settings.probePort(serverPort:)`), writes `request`, accumulates what it reads and calls
// `evaluate(received:)` after every read until the verdict is not `.needMore`; the connect itself
// failing, or `check_timeout` passing first, is a probe failure the wiring reports itself.

public enum ProbeVerdict: Equatable, Sendable {
    /// Keep reading (the verdict needs more bytes).
    case needMore
    case pass
    case fail(reason: String)
}

public struct HealthProbe: Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        /// Pass as soon as the TCP connect succeeds (`check = tcp`, nothing to send or expect).
        case connect
        /// `check = tcp` with `check_send` and/or `check_expect`: the reply must start with `expect`
        /// (no `check_expect`: pass once connected and `check_send` written).
        case custom(expect: [UInt8])
        case redis
        /// An SSLRequest: any `S`/`N` passes (the postmaster answers it before it checks whether
        /// it can take a connection).
        case pgsql
        /// `check = pgsql` with `check_user`: a StartupMessage (a login, as HAProxy's
        /// `pgsql-check user`). An authentication request passes (the server takes logins; we
        /// leave before answering it, which PostgreSQL does not log); AuthenticationOk passes
        /// once the session is ready (then a Terminate); an ErrorResponse fails with its message.
        case pgsqlLogin
        case mysql
    }

    public let kind: Kind
    /// Bytes to write right after the connect (may be empty).
    public let request: [UInt8]

    /// nil when `settings.check == .none` (no active probes). `check_send`/`check_expect` apply to
    /// `check = tcp` only and are ignored with the protocol checks.
    public init?(settings: HealthSettings) {
        switch settings.check {
        case .none:
            return nil
        case .tcp:
            let send = settings.checkSend ?? []
            if send.isEmpty, settings.checkExpect == nil {
                kind = .connect
            } else {
                kind = .custom(expect: settings.checkExpect ?? [])
            }
            request = send
        case .redis:
            kind = .redis
            request = Array("PING\r\n".utf8)
        case .pgsql:
            if let user = settings.checkUser {
                kind = .pgsqlLogin
                request = Self.pgsqlStartupMessage(user: user, database: settings.checkDatabase)
            } else {
                kind = .pgsql
                // SSLRequest: Int32 length 8, Int32 code 80877103 (0x04D2162F), big-endian.
                request = [0x00, 0x00, 0x00, 0x08, 0x04, 0xD2, 0x16, 0x2F]
            }
        case .mysql:
            kind = .mysql
            request = []
        }
    }

    /// False when the probe passes on connect (once `request`, if any, is written) without reading.
    public var readsReply: Bool {
        switch kind {
        case .connect: return false
        case .custom(let expect): return !expect.isEmpty
        case .redis, .pgsql, .pgsqlLogin, .mysql: return true
        }
    }

    /// What to write before closing a probe connection that passed on `received`: a Terminate
    /// for a PostgreSQL session the login opened, so that the server ends it cleanly.
    public func farewell<C: Collection>(received: C) -> [UInt8] where C.Element == UInt8 {
        guard kind == .pgsqlLogin, Self.pgsqlMessages(Array(received)).contains(where: { $0.type == UInt8(ascii: "Z") }) else {
            return []
        }
        return [UInt8(ascii: "X"), 0, 0, 0, 4]
    }

    /// The verdict is never `.needMore` once this many bytes have been received, so the wiring can
    /// stop reading there.
    public var maxReplyBytes: Int {
        if case .custom(let expect) = kind { return Swift.max(expect.count, Self.defaultReplyLimit) }
        return Self.defaultReplyLimit
    }

    static let defaultReplyLimit = 1024

    /// Judges everything received so far on the probe connection (pass the whole accumulated reply
    /// each time, not only the newest chunk).
    public func evaluate<C: Collection>(received: C) -> ProbeVerdict where C.Element == UInt8 {
        let bytes = Array(received.prefix(maxReplyBytes))
        let complete = received.count >= maxReplyBytes
        switch kind {
        case .connect:
            return .pass
        case .custom(let expect):
            return Self.evaluatePrefix(bytes, expect: expect)
        case .redis:
            return Self.evaluateRedis(bytes, complete: complete)
        case .pgsql:
            return Self.evaluatePgsql(bytes, complete: complete)
        case .pgsqlLogin:
            return Self.evaluatePgsqlLogin(bytes, complete: complete)
        case .mysql:
            return Self.evaluateMysql(bytes, complete: complete)
        }
    }

    /// The verdict when the server closed the connection after sending `received`: the same as
    /// `evaluate`, except that `.needMore` becomes a failure.
    public func evaluateAtEndOfStream<C: Collection>(received: C) -> ProbeVerdict where C.Element == UInt8 {
        let verdict = evaluate(received: received)
        guard verdict == .needMore else { return verdict }
        if received.isEmpty { return .fail(reason: "connection closed without a reply") }
        return .fail(reason: "connection closed after a partial reply: \(healthDescribeBytes(received))")
    }

    // MARK: - Matchers

    static func evaluatePrefix(_ bytes: [UInt8], expect: [UInt8]) -> ProbeVerdict {
        let n = Swift.min(bytes.count, expect.count)
        if bytes[..<n].elementsEqual(expect[..<n]) {
            return n == expect.count ? .pass : .needMore
        }
        return .fail(reason: "unexpected reply: \"\(healthDescribeBytes(bytes))\", expected \"\(healthDescribeBytes(expect))\"")
    }

    /// The whole line: `+PONGGARBAGE` is not Redis.
    static let pong = Array("+PONG\r\n".utf8)

    static func evaluateRedis(_ bytes: [UInt8], complete: Bool) -> ProbeVerdict {
        guard let first = bytes.first else { return .needMore }
        if first == UInt8(ascii: "-") {
            // An error line: `-NOAUTH Authentication required.\r\n`, `-LOADING ...\r\n`.
            if let cr = bytes.firstIndex(of: 0x0D) {
                return .fail(reason: "redis error: \(healthDescribeBytes(bytes[1..<cr], limit: 200))")
            }
            if complete { return .fail(reason: "redis error: \(healthDescribeBytes(bytes.dropFirst(), limit: 200))") }
            return .needMore
        }
        let n = Swift.min(bytes.count, pong.count)
        if bytes[..<n].elementsEqual(pong[..<n]) {
            return n == pong.count ? .pass : .needMore
        }
        return .fail(reason: "unexpected redis reply: \"\(healthDescribeBytes(bytes))\"")
    }

    static func evaluatePgsql(_ bytes: [UInt8], complete: Bool) -> ProbeVerdict {
        guard let first = bytes.first else { return .needMore }
        switch first {
        case UInt8(ascii: "S"), UInt8(ascii: "N"):
            return .pass
        case UInt8(ascii: "E"):
            // ErrorResponse: 'E', Int32 length (itself included), fields (type byte, C string), 0.
            guard bytes.count >= 5 else { return complete ? .fail(reason: "pgsql error response") : .needMore }
            let length = pgsqlInt32(bytes, at: 1)
            guard length >= 4 else { return .fail(reason: "pgsql error response (bad length \(length))") }
            if bytes.count < 1 + length, !complete { return .needMore }
            let body = bytes[5..<Swift.min(bytes.count, 1 + length)]
            if let message = pgsqlErrorMessage(body) {
                return .fail(reason: "pgsql error: \(message)")
            }
            return .fail(reason: "pgsql error response")
        default:
            return .fail(reason: "unexpected pgsql reply to SSLRequest: \"\(healthDescribeBytes(bytes.prefix(16)))\"")
        }
    }

    /// A big-endian Int32 (PostgreSQL's lengths and codes) at `index`; four bytes must be there.
    static func pgsqlInt32<C: Collection>(_ bytes: C, at index: C.Index) -> Int where C.Element == UInt8 {
        bytes[index...].prefix(4).reduce(0) { $0 << 8 | Int($1) }
    }

    /// StartupMessage, protocol 3.0: Int32 length, Int32 196608, then name/value C strings and a
    /// final 0.
    static func pgsqlStartupMessage(user: String, database: String?) -> [UInt8] {
        var body: [UInt8] = [0x00, 0x03, 0x00, 0x00]
        func add(_ name: String, _ value: String) {
            body += Array(name.utf8) + [0] + Array(value.utf8) + [0]
        }
        add("user", user)
        if let database { add("database", database) }
        add("application_name", "switchyard health check")
        body.append(0)
        let length = UInt32(body.count + 4)
        return [UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)] + body
    }

    /// The whole backend messages at the start of `bytes` (type, body); a message cut short ends the list.
    static func pgsqlMessages(_ bytes: [UInt8]) -> [(type: UInt8, body: ArraySlice<UInt8>)] {
        var messages: [(type: UInt8, body: ArraySlice<UInt8>)] = []
        var i = 0
        while i + 5 <= bytes.count {
            let length = pgsqlInt32(bytes, at: i + 1)
            guard length >= 4, i + 1 + length <= bytes.count else { break }
            messages.append((bytes[i], bytes[(i + 5)..<(i + 1 + length)]))
            i += 1 + length
        }
        return messages
    }

    static func evaluatePgsqlLogin(_ bytes: [UInt8], complete: Bool) -> ProbeVerdict {
        guard let first = bytes.first else { return .needMore }
        if first == UInt8(ascii: "E") {
            return evaluatePgsql(bytes, complete: complete)  // the error's message
        }
        guard first == UInt8(ascii: "R") else {
            return .fail(reason: "unexpected pgsql reply to StartupMessage: \"\(healthDescribeBytes(bytes.prefix(16)))\"")
        }
        if bytes.count >= 5 {
            let length = pgsqlInt32(bytes, at: 1)
            guard length >= 8 else { return .fail(reason: "pgsql authentication message with a bad length (\(length))") }
        }
        var authenticated = false
        for message in pgsqlMessages(bytes) {
            switch message.type {
            case UInt8(ascii: "R"):
                guard message.body.count >= 4 else { return .fail(reason: "pgsql authentication message cut short") }
                let code = pgsqlInt32(message.body, at: message.body.startIndex)
                // A password or SASL exchange asked for: the server takes logins.
                if code != 0 { return .pass }
                authenticated = true
            case UInt8(ascii: "Z"):
                return .pass  // ReadyForQuery: the session is open
            case UInt8(ascii: "E"):
                // After AuthenticationOk: the session could not start (too many clients for this
                // role, database gone, shutting down).
                return .fail(reason: "pgsql error: \(pgsqlErrorMessage(message.body) ?? "error response")")
            default:
                continue  // ParameterStatus, BackendKeyData, NoticeResponse
            }
        }
        if complete { return authenticated ? .pass : .fail(reason: "pgsql reply cut short") }
        return .needMore
    }

    /// The `M` (message) field of an ErrorResponse body.
    private static func pgsqlErrorMessage(_ body: ArraySlice<UInt8>) -> String? {
        var i = body.startIndex
        while i < body.endIndex, body[i] != 0 {
            let type = body[i]
            let start = i + 1
            guard let end = body[start...].firstIndex(of: 0) else {
                // Cut short: use what there is of the message.
                return type == UInt8(ascii: "M") ? healthDescribeBytes(body[start...], limit: 200) : nil
            }
            if type == UInt8(ascii: "M") { return healthDescribeBytes(body[start..<end], limit: 200) }
            i = end + 1
        }
        return nil
    }

    static func evaluateMysql(_ bytes: [UInt8], complete: Bool) -> ProbeVerdict {
        // Packet: 3-byte little-endian payload length, 1-byte sequence id, payload.
        guard bytes.count >= 5 else {
            if bytes.count >= 4 {
                let length = Int(bytes[0]) | Int(bytes[1]) << 8 | Int(bytes[2]) << 16
                if length == 0 { return .fail(reason: "mysql greeting with an empty payload") }
            }
            return complete ? .fail(reason: "mysql greeting cut short") : .needMore
        }
        let length = Int(bytes[0]) | Int(bytes[1]) << 8 | Int(bytes[2]) << 16
        let sequence = bytes[3]
        guard length > 0 else { return .fail(reason: "mysql greeting with an empty payload") }
        guard sequence == 0 else { return .fail(reason: "unexpected mysql packet sequence id \(sequence) (expected 0)") }
        switch bytes[4] {
        case 10:
            return .pass
        case 0xFF:
            // ERR packet: 0xFF, error code (2 bytes LE), [`#` + 5-byte SQL state], message.
            if bytes.count < 4 + length, !complete { return .needMore }
            let payload = bytes[4..<Swift.min(bytes.count, 4 + length)]
            guard payload.count >= 3 else { return .fail(reason: "mysql error packet") }
            let code = Int(payload[payload.startIndex + 1]) | Int(payload[payload.startIndex + 2]) << 8
            var messageStart = payload.startIndex + 3
            if payload.count >= 9, payload[messageStart] == UInt8(ascii: "#") { messageStart += 6 }
            let message = healthDescribeBytes(payload[messageStart...], limit: 200)
            return .fail(reason: message.isEmpty ? "mysql error packet \(code)" : "mysql error packet \(code): \(message)")
        default:
            return .fail(reason: "unsupported mysql protocol version \(bytes[4]) (expected 10)")
        }
    }
}
