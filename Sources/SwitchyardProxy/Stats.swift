import Synchronization
import SwitchyardUV

// Counters behind /metrics and /status. Each worker (event-loop thread) has its own set and is the
// only writer of it; the admin endpoint reads every worker's set from its own thread. Single-writer
// counters are atomics updated with a relaxed load and store (a plain add on x86, no lock prefix),
// so counting costs the relay path no lock and no allocation. Histograms, touched once per
// connection, sit behind an uncontended mutex.

/// Why an upstream connect failed, as a metric label.
enum ConnectFailureReason: Int, CaseIterable {
    case refused, timeout, unreachable, reset, resolve, local, other

    var label: String {
        switch self {
        case .refused: return "refused"
        case .timeout: return "timeout"
        case .unreachable: return "unreachable"
        case .reset: return "reset"
        case .resolve: return "resolve"
        case .local: return "local"
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
        case "EHOSTUNREACH", "ENETUNREACH": self = .unreachable
        case _ where error.isLocalResourceShortage: self = .local
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

/// Bucket counts of a latency histogram (seconds), Prometheus-style upper bounds, kept in
/// microseconds (a connect on a local network takes well under a millisecond).
struct LatencyHistogram {
    /// Upper bounds in microseconds.
    let boundsUs: [UInt64]
    /// counts[i]: observations <= boundsUs[i] and > boundsUs[i-1]; the last slot is +Inf.
    fileprivate(set) var counts: [UInt64]
    fileprivate(set) var sumUs: UInt64 = 0
    fileprivate(set) var count: UInt64 = 0

    init(boundsUs: [UInt64]) {
        self.boundsUs = boundsUs
        self.counts = Array(repeating: 0, count: boundsUs.count + 1)
    }

    mutating func observe(us: UInt64) {
        var i = 0
        while i < boundsUs.count && us > boundsUs[i] { i += 1 }
        counts[i] &+= 1
        sumUs &+= us
        count &+= 1
    }

    /// 100 µs … 5 s.
    static let connect: [UInt64] = [100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
                                    1_000_000, 2_500_000, 5_000_000]
    /// 10 ms … 4 h.
    static let connection: [UInt64] = [10, 100, 1000, 10_000, 60_000, 300_000, 1_800_000, 3_600_000, 14_400_000].map { $0 * 1000 }
}

/// A counter written by one thread and read by any.
struct SingleWriterCounter: ~Copyable, Sendable {
    let atomic = Atomic<UInt64>(0)

    /// Only the owning thread may call this.
    @inline(__always)
    func add(_ n: UInt64) {
        atomic.store(atomic.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }

    @inline(__always)
    func subtract(_ n: UInt64) {
        atomic.store(atomic.load(ordering: .relaxed) &- n, ordering: .relaxed)
    }

    var value: UInt64 { atomic.load(ordering: .relaxed) }

    /// `subtract` whose store is ordered after the owner's earlier writes (pairs with
    /// `acquiringValue`: a reader that sees the new value sees those writes too).
    @inline(__always)
    func releasingSubtract(_ n: UInt64) {
        atomic.store(atomic.load(ordering: .relaxed) &- n, ordering: .releasing)
    }

    var acquiringValue: UInt64 { atomic.load(ordering: .acquiring) }
}

/// One worker's counters for one upstream server.
final class ServerStats: Sendable {
    let connectionsTotal = SingleWriterCounter()
    /// Relayed connections open now (gauge: incremented and decremented by the owner).
    let connectionsActive = SingleWriterCounter()
    /// Connects to this server in progress (gauge: a connection counts here until it is relayed
    /// or its attempt fails).
    let connectsPending = SingleWriterCounter()
    /// Bytes received from clients (and sent to this server).
    let bytesFromClients = SingleWriterCounter()
    /// Bytes sent to clients (received from this server).
    let bytesToClients = SingleWriterCounter()
    let healthChecksPassed = SingleWriterCounter()
    let healthChecksFailed = SingleWriterCounter()
    let ejections = SingleWriterCounter()
    let connectFailures = Mutex(Array(repeating: UInt64(0), count: ConnectFailureReason.allCases.count))
    let connectDuration = Mutex(LatencyHistogram(boundsUs: LatencyHistogram.connect))
}

/// One worker's counters for one service.
final class ServiceStats: Sendable {
    let accepted = SingleWriterCounter()
    let retries = SingleWriterCounter()
    let rejected = Mutex(Array(repeating: UInt64(0), count: RejectReason.allCases.count))
    let connectionDuration = Mutex(LatencyHistogram(boundsUs: LatencyHistogram.connection))

    func reject(_ reason: RejectReason) {
        rejected.withLock { $0[reason.rawValue] &+= 1 }
    }
}

extension LatencyHistogram {
    /// Adds another histogram with the same bounds.
    mutating func merge(_ other: LatencyHistogram) {
        for i in counts.indices { counts[i] &+= other.counts[i] }
        sumUs &+= other.sumUs
        count &+= other.count
    }
}
