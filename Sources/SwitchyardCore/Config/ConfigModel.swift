// The typed configuration: what an INI file means once it has been parsed and validated.
// Pure values; the parser in INIParser.swift / ConfigLoader.swift produces them.

/// A configuration error always names the file and line it comes from.
public struct ConfigError: Error, Equatable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var message: String

    public init(file: String, line: Int, message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    /// `FILE:LINE: message`, the form printed by `switchyard check` and logged on a bad reload;
    /// `FILE: message` when no line is at fault (line 0: the file could not be read at all).
    public var description: String { line > 0 ? "\(file):\(line): \(message)" : "\(file): \(message)" }
}

/// `HOST:PORT` as written in the file. HOST is an IPv4 literal, an IPv6 literal (written `[::1]:80`
/// in the file, stored here without brackets) or a DNS name; resolution happens in the wiring.
public struct HostPort: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// True when `host` is an IPv6 literal (contains a colon).
    public var isIPv6Literal: Bool { host.contains(":") }

    /// Back to the file's notation: `1.2.3.4:80`, `[::1]:80`, `db.local:5432`.
    public var description: String { isIPv6Literal ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

public enum LogLevel: String, CaseIterable, Sendable {
    case trace, debug, info, notice, warning, error, critical
}

public enum LogFormat: String, CaseIterable, Sendable {
    case text, json
}

public enum BalanceAlgorithm: String, CaseIterable, Sendable {
    case leastConn = "least_conn"
    case ipHash = "ip_hash"
    case roundRobin = "round_robin"
}

/// Relaying with Linux `splice(2)` through a pipe pair (zero-copy) instead of user-space buffers.
public enum SpliceMode: String, CaseIterable, Sendable {
    /// A connection switches to splice once it looks like bulk (a read fills a whole buffer).
    case auto
    /// Every connection splices from the moment its upstream connects.
    case on
    /// Always the buffered relay.
    case off
}

public struct GlobalConfig: Equatable, Sendable {
    /// Event-loop threads. `nil` means `auto` (one per CPU).
    public var workers: Int? = 1
    /// Admin HTTP address; `nil` when empty (off).
    public var admin: HostPort? = HostPort(host: "127.0.0.1", port: 9000)
    public var logLevel: LogLevel = .info
    public var logFormat: LogFormat = .text
    /// Global cap on client connections; beyond it new ones are accepted and closed at once.
    public var maxConnections: Int = 10_000
    /// Bearer token required by the admin endpoint's mutations; nil (empty) = no token.
    public var adminToken: String? = nil
    /// On SIGTERM/SIGINT: how long established connections may finish before they are closed.
    public var drainTimeout: Duration = .seconds(30)
    /// After a loop turn that handled I/O, keep polling without sleeping for this long before
    /// blocking (`.zero`: off). Trades CPU for latency (see `EventLoop.busyPoll`).
    public var busyPoll: Duration = .zero
    /// How often the DNS names of servers are looked up again (`.zero`: never, only at start and
    /// reload). A server whose address is no longer among the answers moves to the new one.
    public var resolveInterval: Duration = .seconds(30)

    public init() {}
}

public struct ServerConfig: Equatable, Sendable {
    public var name: String
    public var address: HostPort
    public var weight: Int = 1
    public var backup: Bool = false
    /// Line of the `server =` entry, for messages that refer back to the file.
    public var line: Int = 0

    public init(name: String, address: HostPort, weight: Int = 1, backup: Bool = false, line: Int = 0) {
        self.name = name
        self.address = address
        self.weight = weight
        self.backup = backup
        self.line = line
    }
}

public struct ServiceConfig: Equatable, Sendable {
    public var name: String
    public var listen: [HostPort] = []
    public var balance: BalanceAlgorithm = .leastConn
    public var servers: [ServerConfig] = []
    public var connectTimeout: Duration = .seconds(2)
    /// `.zero` means off.
    public var idleTimeout: Duration = .seconds(3600)
    /// Zero-copy relay with splice(2): auto, on or off (see SpliceMode; auto measured best).
    public var splice: SpliceMode = .auto
    /// TCP keepalive on connections to servers (first probe after 60 s idle). Off by default, as
    /// in HAProxy, nginx and Envoy: it costs two system calls per connection. Client connections
    /// always have it (inherited from the listening socket, free).
    public var serverKeepAlive = false
    /// Active probes, passive ejection, failover retries, panic, slow start.
    public var health = HealthSettings()
    /// Line of the `[service NAME]` header.
    public var line: Int = 0

    public init(name: String, line: Int = 0) {
        self.name = name
        self.line = line
    }
}

public struct SwitchyardConfig: Equatable, Sendable {
    /// Most event-loop threads `workers` may ask for (and what `auto` is capped at).
    public static let maxWorkers = 256
    /// Most client connections `max_connections` may allow: each takes two descriptors (six while
    /// spliced), and Linux caps a process's descriptors at `fs.nr_open` (1,048,576 by default,
    /// 1 << 30 at most), so more could never be open.
    public static let maxConnectionsLimit = 100_000_000
    /// The file it was read from (for messages).
    public var file: String
    public var global: GlobalConfig
    public var services: [ServiceConfig]

    public init(file: String, global: GlobalConfig = GlobalConfig(), services: [ServiceConfig] = []) {
        self.file = file
        self.global = global
        self.services = services
    }
}

extension Duration {
    /// Whole nanoseconds (0 for a negative duration; `UInt64.max` beyond it, about 584 years, which
    /// `parseDuration` accepts: saturate rather than trap).
    public var wholeNanoseconds: UInt64 {
        // Not `seconds < 0`: `components` truncates towards zero, so -5ms is (0 s, -5e15 as).
        guard self > .zero else { return 0 }
        let (seconds, attoseconds) = components
        let (whole, o1) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        let (ns, o2) = whole.addingReportingOverflow(UInt64(attoseconds / 1_000_000_000))
        return o1 || o2 ? .max : ns
    }

    /// Whole milliseconds, rounded up so that a non-zero duration never becomes 0 (libuv timers are in ms).
    /// `UInt64.max` when it does not fit (saturates rather than traps).
    public var wholeMilliseconds: UInt64 {
        guard self > .zero else { return 0 }
        let (seconds, attoseconds) = components
        let (whole, o1) = UInt64(seconds).multipliedReportingOverflow(by: 1000)
        let (ms, o2) = whole.addingReportingOverflow(UInt64((attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000))
        return o1 || o2 ? .max : ms
    }
}
