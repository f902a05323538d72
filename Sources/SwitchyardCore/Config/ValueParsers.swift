// Parsers for the value types found in the config: durations, HOST:PORT, sizes, booleans, names,
// and `${VAR}` environment substitution. Pure functions on strings.

// MARK: - Public parsers

/// `50us`, `250ms`, `2s`, `5m`, `1h`, combined largest unit first (`1h30m`, `1m30s`, `2s500ms`), or
/// plain `0`.
/// Units are lowercase; a bare number other than 0 is refused (ambiguous). nil if bad.
public func parseDuration(_ text: String) -> Duration? {
    let bytes = Array(text.utf8)
    guard !bytes.isEmpty else { return nil }
    if bytes.allSatisfy(isDigit) { return bytes.allSatisfy { $0 == UInt8(ascii: "0") } ? .zero : nil }

    var total: Int64 = 0
    var lastRank = Int.max
    var i = 0
    while i < bytes.count {
        guard let (number, afterNumber) = parseDigits(bytes, from: i) else { return nil }
        var j = afterNumber
        while j < bytes.count, bytes[j] >= UInt8(ascii: "a"), bytes[j] <= UInt8(ascii: "z") { j += 1 }
        let rank: Int
        let micros: Int64
        switch String(decoding: bytes[afterNumber..<j], as: UTF8.self) {
        case "us": (rank, micros) = (0, 1)
        case "ms": (rank, micros) = (1, 1000)
        case "s": (rank, micros) = (2, 1_000_000)
        case "m": (rank, micros) = (3, 60_000_000)
        case "h": (rank, micros) = (4, 3_600_000_000)
        default: return nil
        }
        guard rank < lastRank else { return nil }  // `30s1m`, `1s1s`
        lastRank = rank
        let (part, o1) = number.multipliedReportingOverflow(by: micros)
        let (sum, o2) = total.addingReportingOverflow(part)
        guard !o1, !o2 else { return nil }
        total = sum
        i = j
    }
    return .microseconds(total)
}

/// `0.0.0.0:6432`, `[::]:6432`, `[::1]:80`, `db.local:5432`. HOST is an IPv4 literal, a bracketed IPv6
/// literal (stored without brackets) or a DNS name; PORT is 0...65535. nil if bad.
public func parseHostPort(_ text: String) -> HostPort? {
    try? hostPort(text)
}

/// A byte count: `65536`, `64k`, `16KiB`, `1m`, `1MB`, `2g` (case-insensitive; k/m/g are powers of 1024).
public func parseSize(_ text: String) -> Int? {
    let bytes = Array(text.utf8)
    guard let (number, end) = parseDigits(bytes, from: 0) else { return nil }
    let multiplier: Int64
    switch asciiLowercased(bytes[end...]) {
    case "", "b": multiplier = 1
    case "k", "kb", "kib": multiplier = 1 << 10
    case "m", "mb", "mib": multiplier = 1 << 20
    case "g", "gb", "gib": multiplier = 1 << 30
    default: return nil
    }
    let (result, overflow) = number.multipliedReportingOverflow(by: multiplier)
    guard !overflow, let size = Int(exactly: result) else { return nil }
    return size
}

/// `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0` (case-insensitive).
public func parseBool(_ text: String) -> Bool? {
    switch asciiLowercased(text.utf8[...]) {
    case "true", "yes", "on", "1": return true
    case "false", "no", "off", "0": return false
    default: return nil
    }
}

// MARK: - Internals shared with the loader

/// `bytes` with A–Z lowered, as text. Units and keywords are ASCII: Unicode lowering would also
/// accept look-alikes (the Kelvin sign U+212A lowers to `k`, so "64\u{212A}" would read as 64k).
func asciiLowercased<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> String {
    String(decoding: bytes.map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 }, as: UTF8.self)
}

/// A problem with a value, in plain words; the loader adds FILE:LINE.
struct ValueError: Error, Equatable {
    var message: String
    init(_ message: String) { self.message = message }
}

/// Like `parseHostPort` but says what is wrong.
func hostPort(_ text: String) throws(ValueError) -> HostPort {
    let bytes = Array(text.utf8)
    guard !bytes.isEmpty else { throw ValueError("empty address") }
    let host: String
    let portBytes: ArraySlice<UInt8>
    if bytes[0] == UInt8(ascii: "[") {
        guard let close = bytes.firstIndex(of: UInt8(ascii: "]")) else {
            throw ValueError("missing \"]\" after IPv6 address")
        }
        let inner = bytes[1..<close]
        guard parseIPv6(inner) != nil else {
            throw ValueError("\"\(String(decoding: inner, as: UTF8.self))\" is not an IPv6 address")
        }
        guard close + 1 < bytes.count else { throw ValueError("missing port") }
        guard bytes[close + 1] == UInt8(ascii: ":") else { throw ValueError("expected \":PORT\" after \"]\"") }
        host = String(decoding: inner, as: UTF8.self)
        portBytes = bytes[(close + 2)...]
    } else {
        guard let colon = bytes.lastIndex(of: UInt8(ascii: ":")) else { throw ValueError("missing port") }
        let hostBytes = bytes[..<colon]
        if hostBytes.contains(UInt8(ascii: ":")) {
            throw ValueError("an IPv6 address must be in brackets, e.g. [::1]:80")
        }
        guard !hostBytes.isEmpty else { throw ValueError("missing host") }
        if hostBytes.allSatisfy({ isDigit($0) || $0 == UInt8(ascii: ".") }) {
            guard parseIPv4(hostBytes) != nil else {
                throw ValueError("\"\(String(decoding: hostBytes, as: UTF8.self))\" is not an IPv4 address")
            }
        } else if !isDNSName(hostBytes) {
            throw ValueError("\"\(String(decoding: hostBytes, as: UTF8.self))\" is not a valid host name")
        }
        host = String(decoding: hostBytes, as: UTF8.self)
        portBytes = bytes[(colon + 1)...]
    }
    guard !portBytes.isEmpty else { throw ValueError("missing port") }
    guard portBytes.allSatisfy(isDigit) else {
        throw ValueError("port \"\(String(decoding: portBytes, as: UTF8.self))\" is not a number")
    }
    // Leading zeros are allowed (`00080` is 80), whatever their number.
    let significant = portBytes.drop { $0 == UInt8(ascii: "0") }
    guard significant.count <= 5, let port = UInt16(significant.isEmpty ? "0" : String(decoding: significant, as: UTF8.self)) else {
        throw ValueError("port \(String(decoding: portBytes, as: UTF8.self)) is greater than 65535")
    }
    return HostPort(host: host, port: port)
}

/// How two listen addresses compare for "same socket" purposes, without resolving names.
enum ListenHost: Hashable {
    case ipv4([UInt8])
    case ipv6([UInt16], zone: String?)
    case name(String)

    init(_ host: String) {
        let bytes = Array(host.utf8)
        if let v6 = parseIPv6(bytes[...]) {
            self = .ipv6(v6.groups, zone: v6.zone)
        } else if let v4 = parseIPv4(bytes[...]) {
            self = .ipv4(v4)
        } else {
            self = .name(host.lowercased())
        }
    }

    var isWildcard: Bool {
        switch self {
        case .ipv4(let octets): return octets.allSatisfy { $0 == 0 }
        case .ipv6(let groups, let zone): return zone == nil && groups.allSatisfy { $0 == 0 }
        case .name: return false
        }
    }

    func sameFamily(as other: ListenHost) -> Bool {
        switch (self, other) {
        case (.ipv4, .ipv4), (.ipv6, .ipv6): return true
        default: return false
        }
    }
}

/// True when binding both addresses would clash: same port (not 0) and the same host, or a wildcard
/// (0.0.0.0 / ::) and any address of the same family.
public func listenAddressesConflict(_ a: HostPort, _ b: HostPort) -> Bool {
    guard a.port == b.port, a.port != 0 else { return false }
    let ha = ListenHost(a.host)
    let hb = ListenHost(b.host)
    if ha == hb { return true }
    return ha.sameFamily(as: hb) && (ha.isWildcard || hb.isWildcard)
}

/// Service and server names: letters, digits, `-`, `_`, `.`; not empty.
func isValidName(_ name: String) -> Bool {
    !name.isEmpty && name.utf8.allSatisfy { isAlphanumeric($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") }
}

/// Replaces `${VAR}` and `${VAR:-default}` from `environment`. `${VAR:-default}` uses the default when
/// VAR is unset or empty (as in the shell); `${VAR}` with VAR unset is an error. `$` not followed by
/// `{` is kept as is (so `$$` is two dollars).
func substituteEnvironment(_ value: String, environment: [String: String]) throws(ValueError) -> String {
    var setButEmpty: [String] = []
    return try substituteEnvironment(value, environment: environment, setButEmpty: &setButEmpty)
}

/// The same, also listing the `${VAR}` references without a default whose variable is set but
/// empty (for a value that must not be empty by accident, such as `admin_token`).
func substituteEnvironment(
    _ value: String, environment: [String: String], setButEmpty: inout [String]
) throws(ValueError) -> String {
    guard value.contains("$") else { return value }
    var output = ""
    var i = value.startIndex
    while i < value.endIndex {
        let next = value.index(after: i)
        guard value[i] == "$", next < value.endIndex, value[next] == "{" else {
            output.append(value[i])
            i = next
            continue
        }
        let bodyStart = value.index(after: next)
        guard let close = value[bodyStart...].firstIndex(of: "}") else {
            throw ValueError("\"${\" without a closing \"}\" in \"\(value)\"")
        }
        let body = value[bodyStart..<close]
        let name: Substring
        let fallback: Substring?
        if let range = body.firstRange(of: ":-") {
            name = body[..<range.lowerBound]
            fallback = body[range.upperBound...]
        } else {
            name = body
            fallback = nil
        }
        guard isVariableName(name) else {
            throw ValueError("bad environment variable name \"\(name)\" in \"${\(body)}\" (use letters, digits and _)")
        }
        if let fallback {
            let current = environment[String(name)] ?? ""
            output += current.isEmpty ? String(fallback) : current
        } else if let current = environment[String(name)] {
            if current.isEmpty { setButEmpty.append(String(name)) }
            output += current
        } else {
            throw ValueError("environment variable \(name) is not set (write ${\(name):-default} to give a default)")
        }
        i = value.index(after: close)
    }
    return output
}

// MARK: - Byte-level helpers

private func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }

private func isAlphanumeric(_ c: UInt8) -> Bool {
    isDigit(c) || (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
}

private func hexValue(_ c: UInt8) -> UInt16? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt16(c - UInt8(ascii: "0"))
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt16(c - UInt8(ascii: "a") + 10)
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt16(c - UInt8(ascii: "A") + 10)
    default: return nil
    }
}

private func isVariableName(_ name: Substring) -> Bool {
    guard let first = name.utf8.first, !isDigit(first) else { return false }
    return name.utf8.allSatisfy { isAlphanumeric($0) || $0 == UInt8(ascii: "_") }
}

/// One or more decimal digits starting at `from`; the value and the index after them.
private func parseDigits(_ bytes: [UInt8], from start: Int) -> (Int64, Int)? {
    var i = start
    var value: Int64 = 0
    while i < bytes.count, isDigit(bytes[i]) {
        let (times10, o1) = value.multipliedReportingOverflow(by: 10)
        let (sum, o2) = times10.addingReportingOverflow(Int64(bytes[i] - UInt8(ascii: "0")))
        guard !o1, !o2 else { return nil }
        value = sum
        i += 1
    }
    return i > start ? (value, i) : nil
}

/// Dotted quad, each part 0...255 without leading zeros (as inet_pton).
private func parseIPv4(_ bytes: ArraySlice<UInt8>) -> [UInt8]? {
    let parts = bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
    guard parts.count == 4 else { return nil }
    var octets: [UInt8] = []
    for part in parts {
        guard (1...3).contains(part.count), part.allSatisfy(isDigit) else { return nil }
        if part.count > 1 && part.first == UInt8(ascii: "0") { return nil }
        guard let value = UInt8(String(decoding: part, as: UTF8.self)) else { return nil }
        octets.append(value)
    }
    return octets
}

/// An IPv6 literal (without brackets), optionally with a trailing dotted quad and a `%zone`.
private func parseIPv6(_ text: ArraySlice<UInt8>) -> (groups: [UInt16], zone: String?)? {
    var address = text
    var zone: String?
    if let percent = text.firstIndex(of: UInt8(ascii: "%")) {
        let zoneBytes = text[(percent + 1)...]
        guard !zoneBytes.isEmpty,
              zoneBytes.allSatisfy({ isAlphanumeric($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") })
        else { return nil }
        zone = String(decoding: zoneBytes, as: UTF8.self)
        address = text[..<percent]
    }
    guard address.contains(UInt8(ascii: ":")) else { return nil }

    // Split at "::" (at most one).
    var head = address
    var tail: ArraySlice<UInt8>?
    var k = address.startIndex
    while k + 1 < address.endIndex {
        if address[k] == UInt8(ascii: ":") && address[k + 1] == UInt8(ascii: ":") {
            guard tail == nil else { return nil }
            head = address[..<k]
            tail = address[(k + 2)...]
            k += 2
        } else {
            k += 1
        }
    }

    func groups(_ part: ArraySlice<UInt8>, allowIPv4Tail: Bool) -> [UInt16]? {
        if part.isEmpty { return [] }
        let pieces = part.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
        var result: [UInt16] = []
        for (n, piece) in pieces.enumerated() {
            if allowIPv4Tail, n == pieces.count - 1, piece.contains(UInt8(ascii: ".")) {
                guard let v4 = parseIPv4(piece) else { return nil }
                result.append(UInt16(v4[0]) << 8 | UInt16(v4[1]))
                result.append(UInt16(v4[2]) << 8 | UInt16(v4[3]))
                continue
            }
            guard (1...4).contains(piece.count) else { return nil }
            var value: UInt16 = 0
            for c in piece {
                guard let h = hexValue(c) else { return nil }
                value = value << 4 | h
            }
            result.append(value)
        }
        return result
    }

    if let tail {
        guard let h = groups(head, allowIPv4Tail: false), let t = groups(tail, allowIPv4Tail: true),
              h.count + t.count <= 7
        else { return nil }
        return (h + Array(repeating: 0, count: 8 - h.count - t.count) + t, zone)
    }
    guard let all = groups(head, allowIPv4Tail: true), all.count == 8 else { return nil }
    return (all, zone)
}

/// Labels of letters, digits, `-` and `_` (1...63 each, not starting or ending with `-`), dot-separated;
/// one trailing dot allowed (a fully-qualified name: `db.svc.cluster.local.` skips search domains).
private func isDNSName(_ name: ArraySlice<UInt8>) -> Bool {
    var bytes = name
    if bytes.count > 1, bytes.last == UInt8(ascii: ".") { bytes = bytes.dropLast() }
    guard !bytes.isEmpty, bytes.count <= 253 else { return false }
    for label in bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false) {
        guard (1...63).contains(label.count),
              label.allSatisfy({ isAlphanumeric($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") }),
              label.first != UInt8(ascii: "-"), label.last != UInt8(ascii: "-")
        else { return false }
    }
    return true
}
