// Routing and authorisation for the admin endpoint.
//
//   GET  /metrics                                          Prometheus text format 0.0.4
//   GET  /status                                           JSON
//   GET  /healthz, GET /readyz
//   POST /services/NAME/servers/SERVER/(drain|disable|enable)
//   POST /reload
//
// HEAD is accepted wherever GET is (RFC 9110 §9.3.2); answer it with `serialize(includeBody: false)`.
// The path is matched segment by segment after percent-decoding each segment, so `%2F` never splits
// a segment and `/%6Detrics` is `/metrics`. Matching is exact: no trailing slash, no empty or dot
// segment removal. Service and server names are what the config accepts (letters, digits, `-`, `_`,
// `.`); a segment that decodes to anything else cannot name one, so the path is 404. A malformed
// percent-escape is 400. An unknown path is 404 whatever the method; a known path with another
// method is 405 with `Allow`.
//
// Suggested order in the wiring: parse, `resolve`, then for mutations `authorize` (401 via
// `HTTPResponse.unauthorized()` when it fails), then look up the service and server.

public enum AdminRoute: Hashable, Sendable {
    case metrics
    case status
    case healthz
    case readyz
    case serverAction(service: String, server: String, action: ServerAction)
    case reload

    public enum ServerAction: String, CaseIterable, Hashable, Sendable {
        case drain
        case disable
        case enable
    }

    /// Methods of the read-only routes, in `Allow` order.
    public static let readMethods = ["GET", "HEAD"]
    /// Methods of the mutating routes.
    public static let mutationMethods = ["POST"]

    /// Whether the route changes state (and so needs the bearer token when one is configured).
    public var isMutation: Bool {
        switch self {
        case .metrics, .status, .healthz, .readyz: return false
        case .serverAction, .reload: return true
        }
    }

    /// The methods this route answers.
    public var allowedMethods: [String] { isMutation ? Self.mutationMethods : Self.readMethods }

    public static func resolve(_ request: HTTPRequest) -> Result<AdminRoute, AdminRouteError> {
        resolve(method: request.method, path: request.path)
    }

    /// Matches a method (case-sensitive) and a raw, still percent-encoded path without query.
    public static func resolve(method: String, path: String) -> Result<AdminRoute, AdminRouteError> {
        guard path.utf8.first == UInt8(ascii: "/") else { return .failure(.notFound) }
        var segments: [[UInt8]] = []
        for raw in path.utf8.dropFirst().split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false) {
            guard let decoded = percentDecode(raw) else {
                return .failure(.badRequest("malformed percent-encoding in path"))
            }
            segments.append(decoded)
        }
        guard let route = match(segments) else { return .failure(.notFound) }
        guard route.allowedMethods.contains(method) else {
            return .failure(.methodNotAllowed(allowed: route.allowedMethods))
        }
        return .success(route)
    }

    private static func match(_ s: [[UInt8]]) -> AdminRoute? {
        func literal(_ i: Int, _ text: String) -> Bool { s[i].elementsEqual(text.utf8) }
        switch s.count {
        case 1:
            if literal(0, "metrics") { return .metrics }
            if literal(0, "status") { return .status }
            if literal(0, "healthz") { return .healthz }
            if literal(0, "readyz") { return .readyz }
            if literal(0, "reload") { return .reload }
            return nil
        case 5:
            guard literal(0, "services"), literal(2, "servers"),
                  let service = name(s[1]), let server = name(s[3]),
                  let action = ServerAction(rawValue: String(decoding: s[4], as: UTF8.self))
            else { return nil }
            return .serverAction(service: service, server: server, action: action)
        default:
            return nil
        }
    }

    /// A service or server name, with the config's rule (see `isValidName` in Config).
    private static func name(_ bytes: [UInt8]) -> String? {
        let ok = !bytes.isEmpty && bytes.allSatisfy { b in
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."):
                return true
            default:
                return false
            }
        }
        return ok ? String(decoding: bytes, as: UTF8.self) : nil
    }

    /// `%XX` to the byte; nil when a `%` is not followed by two hex digits. `+` stays `+` (paths are not forms).
    static func percentDecode<C: Collection>(_ raw: C) -> [UInt8]? where C.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity(raw.count)
        var i = raw.startIndex
        while i != raw.endIndex {
            let b = raw[i]
            if b == UInt8(ascii: "%") {
                let h = raw.index(after: i)
                guard h != raw.endIndex, let hi = HTTPSyntax.hexValue(raw[h]) else { return nil }
                let l = raw.index(after: h)
                guard l != raw.endIndex, let lo = HTTPSyntax.hexValue(raw[l]) else { return nil }
                out.append(hi << 4 | lo)
                i = raw.index(after: l)
            } else {
                out.append(b)
                i = raw.index(after: i)
            }
        }
        return out
    }

    // MARK: - Authorisation

    /// Whether `request` may proceed. GET and HEAD always may. Any other method may when `token` is
    /// nil (no token configured); otherwise it needs exactly one `Authorization: Bearer TOKEN` field
    /// (scheme case-insensitive) whose token equals `token`, compared in time independent of where
    /// they differ. An empty configured token matches nothing (fails closed).
    public static func authorize(request: HTTPRequest, token: String?) -> Bool {
        if readMethods.contains(request.method) { return true }
        guard let token else { return true }
        let fields = request.headers.values(for: "Authorization")
        guard fields.count == 1, let presented = bearerToken(fields[0]) else { return false }
        let matches = constantTimeEquals(Array(presented.utf8), Array(token.utf8))
        return matches && !token.isEmpty
    }

    /// The credentials of `Bearer <token>`, or nil for another scheme or an empty token.
    static func bearerToken(_ value: String) -> Substring? {
        let trimmed = HTTPSyntax.trimOWS(Substring(value))
        guard let space = trimmed.utf8.firstIndex(of: HTTPSyntax.space) else { return nil }
        guard HTTPSyntax.equalsIgnoringCase(String(trimmed[..<space]), "Bearer") else { return nil }
        let credentials = HTTPSyntax.trimOWS(trimmed[space...])
        return credentials.isEmpty ? nil : credentials
    }

    /// Compares every byte of `expected` whatever `presented` holds: the time depends only on the
    /// length of `expected`, not on where (or whether) the two differ.
    @inline(never)
    static func constantTimeEquals(_ presented: [UInt8], _ expected: [UInt8]) -> Bool {
        var diff = UInt(bitPattern: presented.count ^ expected.count)
        for i in 0..<expected.count {
            let p: UInt8 = i < presented.count ? presented[i] : 0
            diff |= UInt(p ^ expected[i])
        }
        return diff == 0
    }
}

/// Why a request matched no route; `response` is what to send.
public enum AdminRouteError: Error, Hashable, Sendable {
    case notFound
    case methodNotAllowed(allowed: [String])
    case badRequest(String)

    public var response: HTTPResponse {
        switch self {
        case .notFound:
            return .error(.notFound, "not found")
        case .methodNotAllowed(let allowed):
            let list = allowed.joined(separator: ", ")
            return .error(.methodNotAllowed, "method not allowed (use \(list))", headers: ["Allow": list])
        case .badRequest(let message):
            return .error(.badRequest, message)
        }
    }
}
