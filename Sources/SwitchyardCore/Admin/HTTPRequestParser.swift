// Incremental HTTP/1.x request parser for the admin endpoint (one request per connection).
//
// Feed it the bytes as they arrive; it answers `.needMore` until the request is complete or wrong.
// Memory is bounded whatever the client does: the head (request line + header lines, counting line
// endings, the final empty line and any empty lines before the request line) is at most
// `maxHeadBytes` (8 KiB; beyond it 431), and the body is read only after its announced
// `Content-Length` has been checked against `maxBodyBytes` (64 KiB; beyond it 413). Nothing else
// is buffered.
//
// Grammar (RFC 9112, strict where leniency would only help smuggling or confusion):
//   - Lines end with CRLF or a bare LF. A CR anywhere else is an error (400).
//   - Request line: `METHOD SP request-target SP HTTP/D.D`, single spaces. METHOD is a token
//     (case-sensitive). The target is origin-form (`/path?query`), absolute-form
//     (`http://host/path?query`) or `*`, made of visible ASCII except `#` (else 400).
//   - Version: `HTTP/1.x` is accepted (x any digit); another major version (`HTTP/2.0`) is 505; anything
//     not shaped `HTTP/D.D` is 400.
//   - Header lines: `name: value`; the name is a token with nothing between it and the colon; OWS around
//     the value is trimmed; control characters other than HTAB in a value are 400; obsolete line
//     folding (a line starting with SP or HTAB) is 400. Non-ASCII bytes in values are kept, decoded as
//     UTF-8 with replacement.
//   - Body: `Content-Length` (digits only; repeated fields or a comma list must agree, else 400). No
//     Content-Length means no body. `Transfer-Encoding` is not supported: with `chunked` as the final
//     coding the answer is 411 Length Required (the client can resend with Content-Length); with any
//     other coding, or together with Content-Length, it is 400 (RFC 9112 §6.1/§6.3: the framing
//     cannot be trusted).
//   - More than one `Host` field is 400. A missing `Host` is tolerated even in HTTP/1.1: the admin
//     endpoint has a single origin, and bare health-check probes often omit it.
//   - `Expect: 100-continue` is not answered; clients send the body after their timeout anyway.
//
// After `.complete` or `.error` the parser is finished: later calls to `feed` return the same result
// and do not look at the bytes. Bytes after a complete request (a pipelined second request, or junk)
// are ignored and counted in `ignoredByteCount`, in the completing call and after it; the endpoint
// answers one request per connection and then closes it. `requestMethod` tells, even after an error,
// whether the request line said HEAD (an error answer to HEAD carries no content either).

public enum ParseResult: Equatable, Sendable {
    case needMore
    case complete(HTTPRequest)
    /// The response status to send (400, 411, 413, 431, 505) and a short reason for the body or logs.
    case error(HTTPStatus, String)
}

public struct HTTPRequestParser: Sendable {
    public static let defaultMaxHeadBytes = 8 * 1024
    public static let defaultMaxBodyBytes = 64 * 1024

    public let maxHeadBytes: Int
    public let maxBodyBytes: Int

    /// Bytes received after the end of the complete request and not parsed.
    public private(set) var ignoredByteCount = 0

    /// The method of the request line once that line has been read and is well formed (nil before,
    /// and when the line itself is malformed), kept when a later line makes the request fail. An
    /// error answer needs it: to a HEAD request it must carry no content (RFC 9110 §9.3.2), and most
    /// errors (431, 413, 411, a bad header line) are found after the request line. Also set when the
    /// line is well formed but names another major version (505): the method was still understood.
    public private(set) var requestMethod: String?

    private enum State: Sendable {
        case requestLine
        case headerLines
        case body(remaining: Int)
        case finished(ParseResult)
    }

    private var state: State = .requestLine
    /// The current, unfinished line of the head (without its LF).
    private var line: [UInt8] = []
    private var headBytes = 0
    private var target = ""
    private var version = HTTPVersion.http1_1
    private var headers = HTTPHeaders()
    private var body: [UInt8] = []

    public init(maxHeadBytes: Int = defaultMaxHeadBytes, maxBodyBytes: Int = defaultMaxBodyBytes) {
        self.maxHeadBytes = maxHeadBytes
        self.maxBodyBytes = maxBodyBytes
    }

    /// The result so far, without feeding anything.
    public var result: ParseResult {
        if case .finished(let result) = state { return result }
        return .needMore
    }

    /// Whether `feed` has returned `.complete` or `.error` (it will keep doing so).
    public var isFinished: Bool {
        if case .finished = state { return true }
        return false
    }

    public mutating func feed(_ bytes: UnsafeRawBufferPointer) -> ParseResult {
        var i = 0
        let n = bytes.count
        while i < n {
            switch state {
            case .requestLine, .headerLines:
                // Up to the end of this line, or of the bytes we have.
                var j = i
                while j < n && bytes[j] != HTTPSyntax.lf { j += 1 }
                let lineEnded = j < n
                let consumed = j - i + (lineEnded ? 1 : 0)
                if headBytes + consumed > maxHeadBytes {
                    return fail(.requestHeaderFieldsTooLarge,
                                "request line and headers exceed \(maxHeadBytes) bytes")
                }
                headBytes += consumed
                line.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[i..<j]))
                i += consumed
                if lineEnded {
                    if line.last == HTTPSyntax.cr { line.removeLast() }
                    let complete = line
                    line.removeAll(keepingCapacity: true)
                    processLine(complete)
                }
            case .body(let remaining):
                let take = min(remaining, n - i)
                body.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[i..<(i + take)]))
                i += take
                if take == remaining {
                    finishRequest()
                } else {
                    state = .body(remaining: remaining - take)
                }
            case .finished(let result):
                if case .complete = result { ignoredByteCount += n - i }
                return result
            }
        }
        return result
    }

    /// Convenience for tests and callers holding an array.
    public mutating func feed(_ bytes: [UInt8]) -> ParseResult {
        bytes.withUnsafeBytes { feed($0) }
    }

    // MARK: - Lines

    private mutating func processLine(_ line: [UInt8]) {
        if line.contains(HTTPSyntax.cr) {
            fail(.badRequest, "bare CR in request head")
            return
        }
        switch state {
        case .requestLine:
            // RFC 9112 §2.2: empty lines before the request line are ignored (they count towards the limit).
            if !line.isEmpty { parseRequestLine(line[...]) }
        case .headerLines:
            if line.isEmpty {
                endOfHead()
            } else {
                parseHeaderLine(line[...])
            }
        default:
            break
        }
    }

    private mutating func parseRequestLine(_ line: ArraySlice<UInt8>) {
        let parts = line.split(separator: HTTPSyntax.space, maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3 else {
            fail(.badRequest, "malformed request line")
            return
        }
        let (methodBytes, targetBytes, versionBytes) = (parts[0], parts[1], parts[2])
        guard HTTPSyntax.isToken(methodBytes) else {
            fail(.badRequest, "malformed method")
            return
        }
        guard isValidTarget(targetBytes) else {
            fail(.badRequest, "malformed request target")
            return
        }
        // HTTP-version = "HTTP/" DIGIT "." DIGIT
        let v = Array(versionBytes)
        guard v.count == 8, v[0..<5].elementsEqual("HTTP/".utf8), HTTPSyntax.isDigit(v[5]),
              v[6] == UInt8(ascii: "."), HTTPSyntax.isDigit(v[7])
        else {
            fail(.badRequest, "malformed HTTP version")
            return
        }
        let parsed = HTTPVersion(major: Int(v[5] - UInt8(ascii: "0")), minor: Int(v[7] - UInt8(ascii: "0")))
        requestMethod = String(decoding: methodBytes, as: UTF8.self)
        guard parsed.major == 1 else {
            fail(.httpVersionNotSupported, "\(parsed) is not supported (HTTP/1.0 or HTTP/1.1 only)")
            return
        }
        target = String(decoding: targetBytes, as: UTF8.self)
        version = parsed
        state = .headerLines
    }

    private func isValidTarget(_ t: ArraySlice<UInt8>) -> Bool {
        guard let first = t.first else { return false }
        // Visible ASCII, no fragment.
        guard t.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "#") }) else { return false }
        if first == UInt8(ascii: "/") { return true }                  // origin-form
        if t.elementsEqual("*".utf8) { return true }                    // asterisk-form
        // absolute-form: scheme "://" ... (scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ))
        guard let colon = t.firstIndex(of: HTTPSyntax.colon), colon > t.startIndex,
              t[colon...].starts(with: "://".utf8)
        else { return false }
        let scheme = t[..<colon]
        let isAlpha = { (b: UInt8) in HTTPSyntax.lowercased(b) >= UInt8(ascii: "a") && HTTPSyntax.lowercased(b) <= UInt8(ascii: "z") }
        return isAlpha(scheme[scheme.startIndex])
            && scheme.allSatisfy { isAlpha($0) || HTTPSyntax.isDigit($0) || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") }
    }

    private mutating func parseHeaderLine(_ line: ArraySlice<UInt8>) {
        if let first = line.first, HTTPSyntax.isOWS(first) {
            fail(.badRequest, "obsolete header line folding")
            return
        }
        guard let colon = line.firstIndex(of: HTTPSyntax.colon) else {
            fail(.badRequest, "header line without a colon")
            return
        }
        let name = line[..<colon]
        guard HTTPSyntax.isToken(name) else {
            fail(.badRequest, "malformed header name")
            return
        }
        let value = HTTPSyntax.trimOWS(line[(colon + 1)...])
        guard value.allSatisfy({ $0 == HTTPSyntax.tab || ($0 >= 0x20 && $0 != 0x7F) }) else {
            fail(.badRequest, "control character in header \(String(decoding: name, as: UTF8.self))")
            return
        }
        headers.add(String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self))
    }

    // MARK: - Framing

    private mutating func endOfHead() {
        if headers.values(for: "Host").count > 1 {
            fail(.badRequest, "more than one Host header")
            return
        }
        let transferEncodings = headers.values(for: "Transfer-Encoding")
        let contentLengths = headers.values(for: "Content-Length")
        if !transferEncodings.isEmpty {
            if !contentLengths.isEmpty {
                fail(.badRequest, "both Transfer-Encoding and Content-Length")
                return
            }
            let codings = transferEncodings.joined(separator: ",").split(separator: ",").map { HTTPSyntax.trimOWS($0) }
            if let last = codings.last, HTTPSyntax.equalsIgnoringCase(String(last), "chunked") {
                fail(.lengthRequired, "chunked request bodies are not supported; send Content-Length")
            } else {
                fail(.badRequest, "unsupported Transfer-Encoding")
            }
            return
        }
        var length: Int? = nil
        for field in contentLengths {
            for item in field.split(separator: ",", omittingEmptySubsequences: false) {
                guard let value = parseContentLength(HTTPSyntax.trimOWS(item)) else {
                    fail(.badRequest, "malformed Content-Length")
                    return
                }
                if let length, length != value {
                    fail(.badRequest, "conflicting Content-Length values")
                    return
                }
                length = value
            }
        }
        let bodyLength = length ?? 0
        if bodyLength > maxBodyBytes {
            fail(.contentTooLarge, "request body exceeds \(maxBodyBytes) bytes")
            return
        }
        if bodyLength == 0 {
            finishRequest()
        } else {
            body.reserveCapacity(bodyLength)
            state = .body(remaining: bodyLength)
        }
    }

    /// 1*DIGIT; values too large for an Int saturate to Int.max (413 follows, not 400).
    private func parseContentLength(_ text: Substring) -> Int? {
        guard !text.isEmpty, text.utf8.allSatisfy(HTTPSyntax.isDigit) else { return nil }
        var value = 0
        for digit in text.utf8 {
            let (times10, o1) = value.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(Int(digit - UInt8(ascii: "0")))
            if o1 || o2 { return Int.max }
            value = sum
        }
        return value
    }

    private mutating func finishRequest() {
        let (path, query) = HTTPRequest.splitTarget(Substring(target))
        // Set: the head (and so the request line) was complete.
        let request = HTTPRequest(method: requestMethod ?? "", target: target, path: path, query: query,
                                  version: version, headers: headers, body: body)
        state = .finished(.complete(request))
        line = []
        body = []
    }

    @discardableResult
    private mutating func fail(_ status: HTTPStatus, _ message: String) -> ParseResult {
        let result = ParseResult.error(status, message)
        state = .finished(result)
        line = []
        body = []
        return result
    }
}
