// The admin endpoint's HTTP vocabulary: status codes, header lists and the parsed request.
// The parser is in HTTPRequestParser.swift, the response writer in HTTPResponse.swift.

/// A response status: code and reason phrase. The admin endpoint uses the named constants.
public struct HTTPStatus: Hashable, Sendable, CustomStringConvertible {
    public let code: Int
    public let reason: String

    public init(code: Int, reason: String) {
        self.code = code
        self.reason = reason
    }

    public static let ok = HTTPStatus(code: 200, reason: "OK")
    public static let accepted = HTTPStatus(code: 202, reason: "Accepted")
    public static let noContent = HTTPStatus(code: 204, reason: "No Content")
    public static let badRequest = HTTPStatus(code: 400, reason: "Bad Request")
    public static let unauthorized = HTTPStatus(code: 401, reason: "Unauthorized")
    public static let forbidden = HTTPStatus(code: 403, reason: "Forbidden")
    public static let notFound = HTTPStatus(code: 404, reason: "Not Found")
    public static let methodNotAllowed = HTTPStatus(code: 405, reason: "Method Not Allowed")
    public static let lengthRequired = HTTPStatus(code: 411, reason: "Length Required")
    /// RFC 9110 name (was "Payload Too Large" in RFC 7231).
    public static let contentTooLarge = HTTPStatus(code: 413, reason: "Content Too Large")
    public static let requestHeaderFieldsTooLarge = HTTPStatus(code: 431, reason: "Request Header Fields Too Large")
    public static let internalServerError = HTTPStatus(code: 500, reason: "Internal Server Error")
    public static let notImplemented = HTTPStatus(code: 501, reason: "Not Implemented")
    public static let serviceUnavailable = HTTPStatus(code: 503, reason: "Service Unavailable")
    public static let httpVersionNotSupported = HTTPStatus(code: 505, reason: "HTTP Version Not Supported")

    /// Every named status, in code order.
    public static let all: [HTTPStatus] = [
        .ok, .accepted, .noContent, .badRequest, .unauthorized, .forbidden, .notFound, .methodNotAllowed,
        .lengthRequired, .contentTooLarge, .requestHeaderFieldsTooLarge, .internalServerError,
        .notImplemented, .serviceUnavailable, .httpVersionNotSupported,
    ]

    /// The named status with this code, if any.
    public init?(code: Int) {
        guard let known = Self.all.first(where: { $0.code == code }) else { return nil }
        self = known
    }

    /// Whether a response with this status may carry content (not 1xx, 204 or 304; RFC 9110 §6.4.1).
    public var allowsContent: Bool { code >= 200 && code != 204 && code != 304 }

    /// `"404 Not Found"`.
    public var description: String { "\(code) \(reason)" }
}

/// An ordered list of header fields. Names keep their spelling; lookups ignore ASCII case.
public struct HTTPHeaders: Equatable, Sendable, Sequence, ExpressibleByDictionaryLiteral {
    public struct Field: Equatable, Sendable {
        public var name: String
        public var value: String

        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    public private(set) var fields: [Field] = []

    public init() {}

    public init(_ fields: [(String, String)]) {
        self.fields = fields.map { Field(name: $0.0, value: $0.1) }
    }

    /// Keeps the literal's order: `["Allow": "GET, HEAD"]`.
    public init(dictionaryLiteral elements: (String, String)...) {
        self.init(elements)
    }

    public mutating func add(_ name: String, _ value: String) {
        fields.append(Field(name: name, value: value))
    }

    /// The first value of `name` (ASCII case-insensitive), or nil.
    public subscript(name: String) -> String? {
        fields.first { HTTPSyntax.equalsIgnoringCase($0.name, name) }?.value
    }

    /// Every value of `name` (ASCII case-insensitive), in order.
    public func values(for name: String) -> [String] {
        fields.filter { HTTPSyntax.equalsIgnoringCase($0.name, name) }.map(\.value)
    }

    public func contains(_ name: String) -> Bool { self[name] != nil }

    public var count: Int { fields.count }
    public var isEmpty: Bool { fields.isEmpty }

    public func makeIterator() -> IndexingIterator<[Field]> { fields.makeIterator() }
}

/// `HTTP/major.minor` from the request line.
public struct HTTPVersion: Hashable, Sendable, CustomStringConvertible {
    public var major: Int
    public var minor: Int

    public init(major: Int, minor: Int) {
        self.major = major
        self.minor = minor
    }

    public static let http1_0 = HTTPVersion(major: 1, minor: 0)
    public static let http1_1 = HTTPVersion(major: 1, minor: 1)

    public var description: String { "HTTP/\(major).\(minor)" }
}

/// One parsed request.
public struct HTTPRequest: Equatable, Sendable {
    /// Case-sensitive, as sent (`GET`, `POST`, ...).
    public var method: String
    /// The request-target exactly as sent (`/metrics?x=1`, or absolute-form `http://h/metrics`).
    public var target: String
    /// The path of the target, still percent-encoded (the router decodes it segment by segment, so
    /// that `%2F` inside a name cannot create a segment). For absolute-form targets the scheme and
    /// authority are removed; `"*"` for the asterisk-form.
    public var path: String
    /// What follows the first `?`, raw (not decoded); nil when the target has no `?`.
    public var query: String?
    public var version: HTTPVersion
    public var headers: HTTPHeaders
    public var body: [UInt8]

    public init(method: String, target: String, path: String, query: String? = nil,
                version: HTTPVersion = .http1_1, headers: HTTPHeaders = [:], body: [UInt8] = []) {
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.version = version
        self.headers = headers
        self.body = body
    }

    /// Convenience for building requests in code and tests: splits `target` into path and query.
    public init(method: String, target: String, headers: HTTPHeaders = [:], body: [UInt8] = []) {
        let (path, query) = HTTPRequest.splitTarget(Substring(target))
        self.init(method: method, target: target, path: path, query: query, headers: headers, body: body)
    }

    /// `(path, query)` of an origin-form, absolute-form or asterisk-form target.
    static func splitTarget(_ target: Substring) -> (path: String, query: String?) {
        var rest = target
        // absolute-form: scheme "://" authority [path-abempty] ["?" query]
        if let schemeEnd = rest.utf8.firstIndex(of: HTTPSyntax.colon),
           rest.utf8.first != UInt8(ascii: "/"),
           rest[schemeEnd...].hasPrefix("://") {
            let afterScheme = rest[rest.index(schemeEnd, offsetBy: 3)...]
            let pathStart = afterScheme.firstIndex { $0 == "/" || $0 == "?" } ?? afterScheme.endIndex
            rest = afterScheme[pathStart...]
            if rest.first != "/" { rest = Substring("/" + String(rest)) }
        }
        if let q = rest.firstIndex(of: "?") {
            return (String(rest[..<q]), String(rest[rest.index(after: q)...]))
        }
        return (String(rest), nil)
    }
}
