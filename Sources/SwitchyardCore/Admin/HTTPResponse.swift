// The admin endpoint's response: one per connection, always `Connection: close`.

/// A complete response. `serialize()` gives the bytes to write before closing the connection.
///
/// Header layout: status line, `Content-Type` (when there is content), `Content-Length` (except for
/// statuses that carry no content, e.g. 204), `Connection: close`, then `headers` in order. The
/// writer owns `Content-Type`, `Content-Length`, `Connection` and `Transfer-Encoding`: such names in
/// `headers` are skipped, as are fields whose name is not a token. CR, LF and NUL in values become
/// spaces, so a value can never start a new header line. No `Date` header: the core has no clock
/// (RFC 9110 §6.6.1 lets a server without a clock omit it).
public struct HTTPResponse: Equatable, Sendable {
    public var status: HTTPStatus
    /// Sent only when `body` is not empty.
    public var contentType: String?
    /// Extra fields, e.g. `Allow` for 405 or `WWW-Authenticate` for 401.
    public var headers: HTTPHeaders
    public var body: [UInt8]

    public static let plainTextContentType = "text/plain; charset=utf-8"

    public init(status: HTTPStatus, contentType: String? = nil, headers: HTTPHeaders = [:], body: [UInt8] = []) {
        self.status = status
        self.contentType = contentType
        self.headers = headers
        self.body = body
    }

    /// A `text/plain; charset=utf-8` response. (JSON: `contentType: JSONWriter.contentType`;
    /// metrics: `contentType: PrometheusWriter.contentType`.)
    public static func text(_ status: HTTPStatus, _ text: String, headers: HTTPHeaders = [:]) -> HTTPResponse {
        HTTPResponse(status: status, contentType: plainTextContentType, headers: headers, body: Array(text.utf8))
    }

    /// An error response whose body is `message` and a newline (plain text, for curl users).
    public static func error(_ status: HTTPStatus, _ message: String, headers: HTTPHeaders = [:]) -> HTTPResponse {
        text(status, message.hasSuffix("\n") ? message : message + "\n", headers: headers)
    }

    /// 401 with `WWW-Authenticate: Bearer` (RFC 6750).
    public static func unauthorized(_ message: String = "missing or invalid bearer token") -> HTTPResponse {
        error(.unauthorized, message, headers: ["WWW-Authenticate": "Bearer"])
    }

    /// The wire form. `includeBody: false` answers a HEAD request: same headers (including the
    /// `Content-Length` a GET would get), no content.
    public func serialize(includeBody: Bool = true) -> [UInt8] {
        var head = "HTTP/1.1 \(status.code) \(Self.clean(status.reason))\r\n"
        let hasContent = status.allowsContent
        if hasContent {
            if !body.isEmpty, let contentType {
                head += "Content-Type: \(Self.clean(contentType))\r\n"
            }
            head += "Content-Length: \(body.count)\r\n"
        }
        head += "Connection: close\r\n"
        for field in headers where HTTPSyntax.isToken(field.name.utf8) && !Self.isManaged(field.name) {
            head += "\(field.name): \(Self.clean(field.value))\r\n"
        }
        head += "\r\n"
        var out = Array(head.utf8)
        if hasContent && includeBody {
            out += body
        }
        return out
    }

    private static func isManaged(_ name: String) -> Bool {
        ["content-type", "content-length", "connection", "transfer-encoding"].contains {
            HTTPSyntax.equalsIgnoringCase($0, name)
        }
    }

    /// Replaces CR, LF and NUL (which would break the framing) with spaces.
    private static func clean(_ value: String) -> String {
        guard value.utf8.contains(where: { $0 == HTTPSyntax.cr || $0 == HTTPSyntax.lf || $0 == 0 }) else {
            return value
        }
        return String(decoding: value.utf8.map { $0 == HTTPSyntax.cr || $0 == HTTPSyntax.lf || $0 == 0 ? HTTPSyntax.space : $0 },
                      as: UTF8.self)
    }
}
