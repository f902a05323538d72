import SwitchyardUV

// Counters behind /metrics and /status. Loop-confined plain integers: the loop thread that relays
// is the only writer, and the admin endpoint reads them on that same loop, so counting costs the
// relay path one add to memory it already touches, no lock and no allocation.

/// Why an upstream connect failed, as a metric label.
enum ConnectFailureReason: Int, CaseIterable {
    case refused, timeout, unreachable, reset, resolve, other

    var label: String {
        switch self {
        case .refused: return "refused"
        case .timeout: return "timeout"
        case .unreachable: return "unreachable"
        case .reset: return "reset"
        case .resolve: return "resolve"
        case .other: return "other"
        }
    }

    init(_ error: UVError?, timeout: Bool) {
        if timeout {
            self = .timeout
            return
        }
        guard let error else {
            self = .resolve
            return
        }
        switch error.name {
        case "ECONNREFUSED": self = .refused
        case "ETIMEDOUT": self = .timeout
        case "EHOSTUNREACH", "ENETUNREACH", "EADDRNOTAVAIL": self = .unreachable
        case "ECONNRESET", "ECONNABORTED": self = .reset
        default: self = .other
        }
    }
}

/// Why a client connection was closed without being relayed, as a metric label.
enum RejectReason: Int, CaseIterable {
    case maxConnections, noServer, connectFailed, draining

    var label: String {
        switch self {
        case .maxConnections: return "max_connections"
        case .noServer: return "no_server"
        case .connectFailed: return "connect_failed"
        case .draining: return "draining"
        }
    }
}

/// Bucket counts of a latency histogram (seconds), Prometheus-style upper bounds.
struct LatencyHistogram {
    /// Upper bounds in milliseconds.
    let boundsMs: [UInt64]
    /// counts[i]: observations <= boundsMs[i] and > boundsMs[i-1]; the last slot is +Inf.
    private(set) var counts: [UInt64]
    private(set) var sumMs: UInt64 = 0
    private(set) var count: UInt64 = 0

    init(boundsMs: [UInt64]) {
        self.boundsMs = boundsMs
        self.counts = Array(repeating: 0, count: boundsMs.count + 1)
    }

    mutating func observe(ms: UInt64) {
        var i = 0
        while i < boundsMs.count && ms > boundsMs[i] { i += 1 }
        counts[i] &+= 1
        sumMs &+= ms
        count &+= 1
    }

    static let connect: [UInt64] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000]
    static let connection: [UInt64] = [10, 100, 1000, 10_000, 60_000, 300_000, 1_800_000, 3_600_000, 14_400_000]
}

/// Counters of one upstream server. Carried over by a reload while the server stays.
final class ServerStats {
    var connectionsTotal: UInt64 = 0
    var connectionsActive = 0
    /// Bytes received from clients (and sent to this server).
    var bytesFromClients: UInt64 = 0
    /// Bytes sent to clients (received from this server).
    var bytesToClients: UInt64 = 0
    var connectFailures = Array(repeating: UInt64(0), count: ConnectFailureReason.allCases.count)
    var healthChecksPassed: UInt64 = 0
    var healthChecksFailed: UInt64 = 0
    var ejections: UInt64 = 0
    var connectDuration = LatencyHistogram(boundsMs: LatencyHistogram.connect)
}

/// Counters of one service.
final class ServiceStats {
    var accepted: UInt64 = 0
    var rejected = Array(repeating: UInt64(0), count: RejectReason.allCases.count)
    var retries: UInt64 = 0
    var connectionDuration = LatencyHistogram(boundsMs: LatencyHistogram.connection)
}
