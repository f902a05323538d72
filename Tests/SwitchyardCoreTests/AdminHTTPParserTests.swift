import Testing
@testable import SwitchyardCore

private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

/// Feeds `text` in one go.
private func parse(_ text: String, maxHead: Int = HTTPRequestParser.defaultMaxHeadBytes,
                   maxBody: Int = HTTPRequestParser.defaultMaxBodyBytes) -> ParseResult {
    var p = HTTPRequestParser(maxHeadBytes: maxHead, maxBodyBytes: maxBody)
    return p.feed(bytes(text))
}

/// Feeds `data` in pieces of `chunk` bytes; every result before the last must be `.needMore`.
private func parseChunked(_ data: [UInt8], chunk: Int) -> ParseResult {
    var p = HTTPRequestParser()
    var result = ParseResult.needMore
    var i = 0
    while i < data.count {
        #expect(result == .needMore)
        let end = min(i + chunk, data.count)
        result = p.feed(Array(data[i..<end]))
        i = end
    }
    return result
}

private func request(_ result: ParseResult) -> HTTPRequest? {
    if case .complete(let r) = result { return r }
    return nil
}

private func status(_ result: ParseResult) -> Int? {
    if case .error(let s, _) = result { return s.code }
    return nil
}

@Suite struct AdminHTTPParserTests {
    @Test func simpleGet() throws {
        let r = try #require(request(parse("GET /metrics HTTP/1.1\r\nHost: localhost:9000\r\nUser-Agent: curl/8\r\n\r\n")))
        #expect(r.method == "GET")
        #expect(r.target == "/metrics")
        #expect(r.path == "/metrics")
        #expect(r.query == nil)
        #expect(r.version == .http1_1)
        #expect(r.headers["host"] == "localhost:9000")
        #expect(r.headers["USER-AGENT"] == "curl/8")
        #expect(r.headers.count == 2)
        #expect(r.body.isEmpty)
    }

    @Test func http10WithoutHeaders() throws {
        let r = try #require(request(parse("GET /healthz HTTP/1.0\r\n\r\n")))
        #expect(r.version == .http1_0)
        #expect(r.headers.isEmpty)
    }

    @Test func queryIsSplitFromPath() throws {
        let r = try #require(request(parse("GET /status?verbose=1&x=%20 HTTP/1.1\r\n\r\n")))
        #expect(r.path == "/status")
        #expect(r.query == "verbose=1&x=%20")
        let empty = try #require(request(parse("GET /status? HTTP/1.1\r\n\r\n")))
        #expect(empty.query == "")
    }

    @Test func absoluteFormAndAsterisk() throws {
        let r = try #require(request(parse("GET http://admin.local:9000/metrics?a=b HTTP/1.1\r\n\r\n")))
        #expect(r.path == "/metrics")
        #expect(r.query == "a=b")
        let bare = try #require(request(parse("GET HTTP://admin.local HTTP/1.1\r\n\r\n")))
        #expect(bare.path == "/")
        let star = try #require(request(parse("OPTIONS * HTTP/1.1\r\n\r\n")))
        #expect(star.path == "*")
    }

    @Test func headerValuesAreTrimmedAndNamesCaseInsensitive() throws {
        let r = try #require(request(parse("POST /reload HTTP/1.1\r\nX-A:   spaced\t value \t\r\nx-a:second\r\nEmpty:\r\n\r\n")))
        #expect(r.headers["X-A"] == "spaced\t value")
        #expect(r.headers.values(for: "x-A") == ["spaced\t value", "second"])
        #expect(r.headers["empty"] == "")
        #expect(r.headers.contains("EMPTY"))
        #expect(!r.headers.contains("missing"))
        #expect(r.headers.fields.map(\.name) == ["X-A", "x-a", "Empty"])
    }

    @Test func bareLFLineEndings() throws {
        let r = try #require(request(parse("GET /readyz HTTP/1.1\nHost: a\n\n")))
        #expect(r.path == "/readyz")
        #expect(r.headers["host"] == "a")
        let mixed = try #require(request(parse("GET /readyz HTTP/1.1\r\nHost: a\n\r\n")))
        #expect(mixed.headers["host"] == "a")
    }

    @Test func leadingEmptyLinesAreIgnored() throws {
        let r = try #require(request(parse("\r\n\nGET /healthz HTTP/1.1\r\n\r\n")))
        #expect(r.path == "/healthz")
    }

    @Test func byteByByteGivesTheSameResult() throws {
        let text = bytes("POST /services/pg/servers/db1/drain HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Length: 11\r\n\r\nhello world")
        let whole: ParseResult = {
            var p = HTTPRequestParser()
            return p.feed(text)
        }()
        let r = try #require(request(whole))
        #expect(r.body == bytes("hello world"))
        for chunk in [1, 2, 3, 7, 16, 64] {
            #expect(parseChunked(text, chunk: chunk) == whole, "chunk size \(chunk)")
        }
        // Every split point into two feeds.
        for split in 0...text.count {
            var p = HTTPRequestParser()
            let first = p.feed(Array(text[..<split]))
            let second = p.feed(Array(text[split...]))
            if split < text.count { #expect(first == .needMore, "split \(split)") }
            #expect(second == whole, "split \(split)")
        }
    }

    @Test func bodySplitAcrossFeeds() throws {
        var p = HTTPRequestParser()
        #expect(p.feed(bytes("POST /reload HTTP/1.1\r\nContent-Length: 10\r\n\r\n01")) == .needMore)
        #expect(p.feed(bytes("234")) == .needMore)
        #expect(p.feed([]) == .needMore)
        #expect(!p.isFinished)
        let r = try #require(request(p.feed(bytes("56789"))))
        #expect(r.body == bytes("0123456789"))
        #expect(p.isFinished)
        #expect(p.ignoredByteCount == 0)
    }

    @Test func pipelinedBytesAreIgnoredAndCounted() throws {
        var p = HTTPRequestParser()
        let result = p.feed(bytes("POST /reload HTTP/1.1\r\nContent-Length: 2\r\n\r\nokGET /metrics HTTP/1.1\r\n\r\n"))
        let r = try #require(request(result))
        #expect(r.body == bytes("ok"))
        #expect(p.ignoredByteCount == 25)
        // Finished: later feeds repeat the result and only count.
        #expect(p.feed(bytes("more")) == result)
        #expect(p.ignoredByteCount == 29)
        #expect(p.result == result)
    }

    @Test func contentLengthForms() throws {
        let zero = try #require(request(parse("POST /reload HTTP/1.1\r\nContent-Length: 0\r\n\r\n")))
        #expect(zero.body.isEmpty)
        let repeated = try #require(request(parse("POST /reload HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nab")))
        #expect(repeated.body == bytes("ab"))
        let list = try #require(request(parse("POST /reload HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\nab")))
        #expect(list.body == bytes("ab"))
        let noLength = try #require(request(parse("POST /reload HTTP/1.1\r\n\r\nignored")))
        #expect(noLength.body.isEmpty)
    }

    @Test(arguments: ["-1", "+1", "0x10", "1.0", "", "1 2", "abc", "1,2", "1,", "²"])
    func badContentLengthIs400(_ value: String) {
        #expect(status(parse("POST /reload HTTP/1.1\r\nContent-Length: \(value)\r\n\r\n")) == 400)
    }

    @Test func conflictingContentLengthsAre400() {
        #expect(status(parse("POST /reload HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")) == 400)
    }

    @Test func oversizedHeadersAre431() {
        let big = String(repeating: "a", count: 9000)
        #expect(status(parse("GET /metrics HTTP/1.1\r\nX-Big: \(big)\r\n\r\n")) == 431)
        // A never-ending request line is cut at the limit, not buffered.
        var p = HTTPRequestParser()
        let chunk = [UInt8](repeating: UInt8(ascii: "a"), count: 1000)
        var result = p.feed(bytes("GET /"))
        for _ in 0..<8 { result = p.feed(chunk) }
        #expect(result == .needMore)
        #expect(status(p.feed(chunk)) == 431)
        // Endless empty lines count too.
        #expect(status(parse(String(repeating: "\r\n", count: 5000))) == 431)
    }

    @Test func headLimitIsInclusive() throws {
        let prefix = "GET /metrics HTTP/1.1\r\nX: "
        let suffix = "\r\n\r\n"
        let fill = 100 - prefix.utf8.count - suffix.utf8.count
        let exact = prefix + String(repeating: "v", count: fill) + suffix
        #expect(exact.utf8.count == 100)
        #expect(request(parse(exact, maxHead: 100)) != nil)
        #expect(status(parse(exact, maxHead: 99)) == 431)
    }

    @Test func oversizedBodyIs413BeforeReadingIt() {
        var p = HTTPRequestParser()
        #expect(status(p.feed(bytes("POST /reload HTTP/1.1\r\nContent-Length: 65537\r\n\r\n"))) == 413)
        #expect(status(parse("POST /reload HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n")) == 413)
        let atLimit = "POST /reload HTTP/1.1\r\nContent-Length: 65536\r\n\r\n" + String(repeating: "x", count: 65536)
        #expect(request(parse(atLimit))?.body.count == 65536)
        #expect(status(parse("POST /reload HTTP/1.1\r\nContent-Length: 11\r\n\r\n", maxBody: 10)) == 413)
    }

    @Test(arguments: [
        "GET /metrics\r\n\r\n",                      // HTTP/0.9 style
        "GET  /metrics HTTP/1.1\r\n\r\n",            // double space
        "GET /metrics  HTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/1.1 \r\n\r\n",            // trailing space
        " GET /metrics HTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/1.1 extra\r\n\r\n",
        "GET metrics HTTP/1.1\r\n\r\n",              // not origin-form
        "GET /met rics HTTP/1.1\r\n\r\n",
        "GET /metrics#frag HTTP/1.1\r\n\r\n",
        "GET /m\u{7F} HTTP/1.1\r\n\r\n",
        "GET /é HTTP/1.1\r\n\r\n",
        "G(T /metrics HTTP/1.1\r\n\r\n",             // method not a token
        "GET /metrics http/1.1\r\n\r\n",
        "GET /metrics HTTP/1\r\n\r\n",
        "GET /metrics HTTP/1.1.1\r\n\r\n",
        "GET /metrics HTTP/11.0\r\n\r\n",
        "GET /metrics FTP/1.1\r\n\r\n",
        "GET /metrics HTTP/1.1\r\r\n\r\n",           // bare CR
        "GET /metrics\rHTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/1.1\tx\r\n\r\n",
        "GET 1://x/ HTTP/1.1\r\n\r\n",               // bad scheme
        "\r\nnonsense\r\n\r\n",                      // an empty line, then a bad one
    ])
    func badRequestLineIs400(_ text: String) {
        #expect(status(parse(text)) == 400, "\(text.debugDescription)")
    }

    @Test(arguments: [
        "NoColon\r\n",
        "Bad Name: x\r\n",
        "Name : x\r\n",              // whitespace before the colon
        ": empty name\r\n",
        " folded: x\r\n",
        "X: a\r\n continued\r\n",    // obs-fold
        "X: a\u{01}b\r\n",
        "X: a\rb\r\n",
        "X: a\u{7F}\r\n",
        "Host: a\r\nHost: b\r\n",
    ])
    func badHeaderIs400(_ header: String) {
        #expect(status(parse("GET /metrics HTTP/1.1\r\n\(header)\r\n")) == 400, "\(header.debugDescription)")
    }

    @Test func nonASCIIHeaderValuesAreKept() throws {
        let r = try #require(request(parse("GET / HTTP/1.1\r\nX-Name: caf\u{E9}\r\n\r\n")))
        #expect(r.headers["x-name"] == "café")
    }

    @Test func unsupportedVersionIs505() {
        #expect(status(parse("GET /metrics HTTP/2.0\r\n\r\n")) == 505)
        #expect(status(parse("GET /metrics HTTP/0.9\r\n\r\n")) == 505)
        #expect(status(parse("GET /metrics HTTP/3.0\r\nHost: x\r\n\r\n")) == 505)
        // 1.x minor versions are read as HTTP/1.
        #expect(request(parse("GET /metrics HTTP/1.2\r\n\r\n"))?.version == HTTPVersion(major: 1, minor: 2))
    }

    @Test func chunkedIs411AndOtherTransferEncodings400() {
        #expect(status(parse("POST /reload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")) == 411)
        #expect(status(parse("POST /reload HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n")) == 411)
        #expect(status(parse("POST /reload HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")) == 411)
        #expect(status(parse("POST /reload HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n")) == 400)
        #expect(status(parse("POST /reload HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n")) == 400)
        #expect(status(parse("POST /reload HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n")) == 400)
    }

    @Test func errorsAreFinal() {
        var p = HTTPRequestParser()
        let result = p.feed(bytes("BAD\r\n"))
        #expect(status(result) == 400)
        #expect(p.isFinished)
        #expect(p.feed(bytes("GET / HTTP/1.1\r\n\r\n")) == result)
        #expect(p.ignoredByteCount == 0)
    }

    @Test func errorAfterValidLinesInSameFeed() {
        // The limit applies to the whole head, across lines and feeds.
        var p = HTTPRequestParser(maxHeadBytes: 40)
        #expect(p.feed(bytes("GET / HTTP/1.1\r\nA: 1234567890\r\n")) == .needMore)
        #expect(status(p.feed(bytes("B: 1234567890\r\n"))) == 431)
    }

    @Test func requestMethodIsKnownFromTheRequestLineOnEvenAfterAnError() {
        var p = HTTPRequestParser(maxHeadBytes: 60)
        #expect(p.requestMethod == nil)
        #expect(p.feed(bytes("HEAD /healthz HT")) == .needMore)
        #expect(p.requestMethod == nil, "before the request line is complete")
        #expect(p.feed(bytes("TP/1.1\r\nA: 1234567890\r\n")) == .needMore)
        #expect(p.requestMethod == "HEAD")
        #expect(status(p.feed(bytes("B: 1234567890\r\nC: 1234567890\r\n"))) == 431)
        #expect(p.requestMethod == "HEAD", "kept after the error")

        // Every error found after the request line (or in a well-formed one naming HTTP/2) keeps it.
        let afterTheLine: [(String, Int)] = [
            ("HEAD /healthz HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
            ("HEAD /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
            ("HEAD /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("HEAD /healthz HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
            ("HEAD /healthz HTTP/1.1\r\n folded\r\n\r\n", 400),
            ("HEAD /healthz HTTP/2.0\r\n\r\n", 505),
        ]
        for (text, code) in afterTheLine {
            var p = HTTPRequestParser()
            #expect(status(p.feed(bytes(text))) == code, "\(text.debugDescription)")
            #expect(p.requestMethod == "HEAD", "\(text.debugDescription)")
        }

        // A malformed request line (or one too long to read) tells nothing.
        let badLines: [(String, Int)] = [
            ("HEAD  /healthz HTTP/1.1\r\n", 400),
            ("HEAD /healthz HTTX/1.1\r\n", 400),
            ("HEAD /a#b HTTP/1.1\r\n", 400),
            ("HEAD /healthz HTTP/1.1\rx\r\n", 400),
            ("HEAD /" + String(repeating: "a", count: 9000), 431),
        ]
        for (text, code) in badLines {
            var p = HTTPRequestParser()
            #expect(status(p.feed(bytes(text))) == code, "\(text.prefix(40).debugDescription)")
            #expect(p.requestMethod == nil, "\(text.prefix(40).debugDescription)")
        }

        // A complete request: the same as the request's.
        var complete = HTTPRequestParser()
        let r = request(complete.feed(bytes("GET /metrics HTTP/1.0\r\n\r\n")))
        #expect(r?.method == "GET" && complete.requestMethod == "GET")
    }
}

@Suite struct AdminHTTPResponseTests {
    private func text(_ r: HTTPResponse, includeBody: Bool = true) -> String {
        String(decoding: r.serialize(includeBody: includeBody), as: UTF8.self)
    }

    @Test func okWithBody() {
        let r = HTTPResponse(status: .ok, contentType: "application/json", body: bytes("{}"))
        #expect(text(r) == "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        #expect(text(r, includeBody: false) == "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n")
    }

    @Test func emptyBodyHasLengthZeroAndNoType() {
        let r = HTTPResponse(status: .accepted, contentType: "text/plain")
        #expect(text(r) == "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    }

    @Test func noContentHasNoLengthNorBody() {
        let r = HTTPResponse(status: .noContent, contentType: "text/plain", body: bytes("dropped"))
        #expect(text(r) == "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
    }

    @Test func extraHeadersMethodNotAllowedAndUnauthorized() {
        let r = AdminRouteError.methodNotAllowed(allowed: ["GET", "HEAD"]).response
        #expect(text(r) == "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 35\r\nConnection: close\r\nAllow: GET, HEAD\r\n\r\nmethod not allowed (use GET, HEAD)\n")
        let u = HTTPResponse.unauthorized()
        #expect(text(u).hasPrefix("HTTP/1.1 401 Unauthorized\r\n"))
        #expect(text(u).contains("\r\nWWW-Authenticate: Bearer\r\n"))
        #expect(text(u).hasSuffix("\r\n\r\nmissing or invalid bearer token\n"))
    }

    @Test func managedAndUnsafeHeadersAreNotEmitted() {
        let r = HTTPResponse(status: .ok, headers: [
            "Content-Length": "999", "connection": "keep-alive", "Bad Name": "x",
            "X-Injected": "a\r\nSet-Cookie: evil", "Cache-Control": "no-store",
        ])
        #expect(text(r) == "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\nX-Injected: a  Set-Cookie: evil\r\nCache-Control: no-store\r\n\r\n")
    }

    @Test func statusTable() {
        #expect(HTTPStatus.all.map(\.code) == [200, 202, 204, 400, 401, 403, 404, 405, 411, 413, 431, 500, 501, 503, 505])
        #expect(HTTPStatus(code: 431)?.reason == "Request Header Fields Too Large")
        #expect(HTTPStatus(code: 505)?.description == "505 HTTP Version Not Supported")
        #expect(HTTPStatus(code: 418) == nil)
        for s in HTTPStatus.all {
            let line = String(decoding: HTTPResponse.error(s, "x").serialize(), as: UTF8.self)
            #expect(line.hasPrefix("HTTP/1.1 \(s.code) \(s.reason)\r\n"))
        }
    }

    @Test func errorBodyEndsWithNewline() {
        #expect(HTTPResponse.error(.notFound, "not found").body == bytes("not found\n"))
        #expect(HTTPResponse.error(.notFound, "done\n").body == bytes("done\n"))
    }
}
