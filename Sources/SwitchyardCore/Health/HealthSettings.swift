// Health settings of one service: active probes, passive ejection (circuit breaker), slow start,
// failover retries. Pure values; the config loader fills `HealthSettings` from the INI keys of the
// same names (`check`, `check_interval`, ... `slow_start`).

/// `check =`: what an active probe does. `none` turns active probes off (passive tracking stays).
public enum HealthCheckKind: String, CaseIterable, Sendable {
    /// Pass on TCP connect; with `check_send`/`check_expect`, a custom exchange (see `HealthProbe`).
    case tcp
    case none
    /// `PING\r\n`, expects `+PONG`.
    case redis
    /// SSLRequest, expects `S` or `N`.
    case pgsql
    /// Reads the server greeting, expects protocol version 10.
    case mysql
}

/// `check_initial =`: a server's active state before any probe has answered.
public enum InitialHealthState: String, CaseIterable, Sendable {
    /// Up from the start (full weight); `fall` failures take it down.
    case up
    /// No traffic until its first successful probe (a single success suffices the first time).
    case down
}

/// `on_down =`: what the wiring does with a down server's established connections.
public enum OnDownPolicy: String, CaseIterable, Sendable {
    case keep
    case close
}

/// Administrative state, set by the wiring (admin endpoint, later). Anything but `enabled` makes
/// the server unusable for new connections; `draining` means existing ones are left to finish.
public enum AdminState: String, CaseIterable, Sendable {
    case enabled
    case draining
    case disabled
}

public struct HealthSettings: Equatable, Sendable {
    /// `check`
    public var check: HealthCheckKind = .tcp
    /// `check_interval`: time between probes of one server (±10% jitter, see `probeDelay`).
    public var checkInterval: Duration = .seconds(2)
    /// `check_timeout`: a probe that has not passed by then has failed ("timeout").
    public var checkTimeout: Duration = .seconds(1)
    /// `check_port`: nil probes the server's own port.
    public var checkPort: UInt16? = nil
    /// `check_send`: raw bytes written after connect (only with `check = tcp`). See `parseEscapedBytes`.
    public var checkSend: [UInt8]? = nil
    /// `check_expect`: the reply must start with these bytes (only with `check = tcp`).
    public var checkExpect: [UInt8]? = nil
    /// `check_user` (only with `check = pgsql`): log in as this user (a StartupMessage) instead of
    /// sending an SSLRequest, so that a server refusing logins (too many clients, shutting down,
    /// starting up) fails the probe. nil: the SSLRequest probe.
    public var checkUser: String? = nil
    /// `check_database` (only with `check_user`): the database to name; nil lets the server use
    /// the user's name.
    public var checkDatabase: String? = nil
    /// `check_initial`
    public var checkInitial: InitialHealthState = .down
    /// `rise`: consecutive probe successes that bring a down server up (values below 1 act as 1).
    public var rise: Int = 2
    /// `fall`: consecutive probe failures that take an up server down (values below 1 act as 1).
    public var fall: Int = 3
    /// `eject_after`: consecutive failed upstream connects that eject a server; 0 turns passive
    /// ejection off.
    public var ejectAfter: Int = 3
    /// `eject_time`: first ejection's length; each consecutive ejection doubles it.
    public var ejectTime: Duration = .seconds(10)
    /// `eject_time_max`: cap on an ejection's length (jitter included). Taken as `eject_time` if smaller.
    public var ejectTimeMax: Duration = .seconds(300)
    /// `max_ejection_percent`: at most `servers × percent / 100` (rounded down) ejected at once.
    public var maxEjectionPercent: Int = 50
    /// `retries`: failover attempts on other servers after a failed connect (used by the wiring).
    public var retries: Int = 2
    /// `panic`: when no server is usable, use them all (the Balancer implements it).
    public var panic: Bool = true
    /// `on_down`
    public var onDown: OnDownPolicy = .keep
    /// `slow_start`: weight ramp from 0.1 to 1.0 after a server comes back; `.zero` = off.
    public var slowStart: Duration = .zero

    public init() {}

    /// The port to probe for a server listening on `serverPort`.
    public func probePort(serverPort: UInt16) -> UInt16 { checkPort ?? serverPort }

    /// Milliseconds until the next probe of a server: `check_interval` ±10%, from `random` in [0, 1)
    /// (0 → 90%, 0.5 → 100%, just below 1 → 110%). At least 1.
    public func probeDelay(random: Double) -> UInt64 {
        let interval = Double(checkInterval.wholeMilliseconds)
        let factor = 0.9 + 0.2 * healthUnit(random)
        return Swift.max(1, UInt64((interval * factor).rounded()))
    }

    var riseCount: Int { Swift.max(1, rise) }
    var fallCount: Int { Swift.max(1, fall) }
}

/// Exponential backoff with full jitter, for failover retries: milliseconds uniform in
/// `[0, min(cap, base × 2^attempt)]` (both ends included), from `random` in [0, 1).
/// `attempt` counts from 0 (the first retry); negative values act as 0.
public func retryDelay(attempt: Int, base: Duration = .milliseconds(50), cap: Duration, random: Double) -> UInt64 {
    let baseMs = base.wholeMilliseconds
    let capMs = cap.wholeMilliseconds
    let shift = Swift.max(0, attempt)
    var upper = capMs
    if shift < 63, baseMs <= (UInt64.max >> UInt64(shift)) {
        upper = Swift.min(capMs, baseMs << UInt64(shift))
    }
    let value = UInt64((Double(upper) + 1) * healthUnit(random))
    return Swift.min(value, upper)
}

/// Decodes a `check_send` / `check_expect` value: the UTF-8 bytes of `s`, with the escapes `\r`, `\n`,
/// `\t`, `\\` and `\xHH` (exactly two hex digits, either case). nil on any other backslash sequence,
/// including a trailing lone backslash.
public func parseEscapedBytes(_ s: String) -> [UInt8]? {
    let input = Array(s.utf8)
    var out: [UInt8] = []
    out.reserveCapacity(input.count)
    var i = 0
    while i < input.count {
        let b = input[i]
        guard b == UInt8(ascii: "\\") else {
            out.append(b)
            i += 1
            continue
        }
        guard i + 1 < input.count else { return nil }
        switch input[i + 1] {
        case UInt8(ascii: "r"): out.append(0x0D); i += 2
        case UInt8(ascii: "n"): out.append(0x0A); i += 2
        case UInt8(ascii: "t"): out.append(0x09); i += 2
        case UInt8(ascii: "\\"): out.append(0x5C); i += 2
        case UInt8(ascii: "x"):
            guard i + 3 < input.count, let hi = hexValue(input[i + 2]), let lo = hexValue(input[i + 3]) else { return nil }
            out.append(hi << 4 | lo)
            i += 4
        default:
            return nil
        }
    }
    return out
}

// MARK: - Internals

private func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
    default: return nil
    }
}

/// A caller's random value forced into [0, 1) (NaN → 0).
func healthUnit(_ r: Double) -> Double {
    guard r.isFinite else { return r == .infinity ? (1.0).nextDown : 0 }
    return Swift.min(Swift.max(r, 0), (1.0).nextDown)
}

/// Bytes for a log line: printable ASCII as is, `\r \n \t \\` and `\xHH` otherwise, cut at `limit`
/// bytes with `...` appended.
func healthDescribeBytes<C: Collection>(_ bytes: C, limit: Int = 64) -> String where C.Element == UInt8 {
    var s = ""
    let digits = Array("0123456789abcdef")
    for b in bytes.prefix(limit) {
        switch b {
        case 0x0D: s += "\\r"
        case 0x0A: s += "\\n"
        case 0x09: s += "\\t"
        case 0x5C: s += "\\\\"
        case 0x20...0x7E: s.append(Character(Unicode.Scalar(b)))
        default:
            s += "\\x"
            s.append(digits[Int(b >> 4)])
            s.append(digits[Int(b & 0xF)])
        }
    }
    if bytes.count > limit { s += "..." }
    return s
}

/// `850ms`, `10s`, `10.4s`, `5m`, `2m30s` for log lines.
func healthFormatMillis(_ ms: UInt64) -> String {
    if ms < 1000 { return "\(ms)ms" }
    if ms < 60_000 {
        let tenths = (ms + 50) / 100
        return tenths % 10 == 0 ? "\(tenths / 10)s" : "\(tenths / 10).\(tenths % 10)s"
    }
    let seconds = (ms + 500) / 1000
    return seconds % 60 == 0 ? "\(seconds / 60)m" : "\(seconds / 60)m\(seconds % 60)s"
}

extension Duration {
    /// Milliseconds as a Duration (for event payloads).
    static func healthMillis(_ ms: UInt64) -> Duration { .milliseconds(Int64(clamping: ms)) }
}
