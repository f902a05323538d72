// The plug-in interface between the Balancer (common policy: tiers, exclusions, panic, counting)
// and one load-balancing algorithm (HAProxy's lb_ops, gobetween's Balancer).
//
// The Balancer owns the per-server state (`ServerPool`) and decides WHICH servers may be picked;
// the algorithm decides WHICH ONE of them, and keeps whatever index it needs (a heap, a hash table,
// running weights) up to date through the hooks. The Balancer calls the hooks only for real changes.

/// Primaries are used first; backups only when no primary is eligible (HAProxy semantics).
enum ServerTier: Int, Sendable {
    case primary = 0
    case backup = 1
}

/// What `serverStateChanged` reports.
enum ServerStateChange: Sendable {
    /// `pool.usable[server]` flipped.
    case usability
    /// `pool.effectiveWeight[server]` changed (slow-start factor).
    case weight
}

/// Per-server state owned by the Balancer and shown read-only to the algorithms.
struct ServerPool: Sendable {
    /// Configured weights are clamped to this range (weight × 1000 × active stays far below Int.max).
    static let weightRange = 1...1_000_000
    /// Slow-start factors are kept in thousandths, clamped to 0.1...1.0.
    static let factorScale = 1000
    static let factorRange = 100...1000

    var specs: [BackendSpec]
    /// Configured weight, clamped to `weightRange`. Used by ip_hash (which ignores slow start).
    var weight: [Int]
    /// Slow-start factor in thousandths (100...1000).
    var factorMilli: [Int]
    /// `weight × factorMilli`: the fixed-point effective weight of least_conn and round_robin.
    var effectiveWeight: [Int]
    var usable: [Bool]
    var active: [Int]
    var tier: [ServerTier]
    /// Server indices of each tier, in configuration order.
    var primaries: [Int]
    var backups: [Int]
    var usablePrimaries: Int
    var usableBackups: Int

    init(_ servers: [BackendSpec]) {
        specs = servers
        weight = servers.map { Swift.min(Swift.max($0.weight, Self.weightRange.lowerBound), Self.weightRange.upperBound) }
        factorMilli = Array(repeating: Self.factorScale, count: servers.count)
        effectiveWeight = weight.map { $0 * Self.factorScale }
        usable = Array(repeating: true, count: servers.count)
        active = Array(repeating: 0, count: servers.count)
        tier = servers.map { $0.backup ? .backup : .primary }
        primaries = servers.indices.filter { !servers[$0].backup }
        backups = servers.indices.filter { servers[$0].backup }
        usablePrimaries = primaries.count
        usableBackups = backups.count
    }

    var count: Int { specs.count }

    @inline(__always)
    func members(_ t: ServerTier) -> [Int] { t == .primary ? primaries : backups }

    @inline(__always)
    func usableCount(_ t: ServerTier) -> Int { t == .primary ? usablePrimaries : usableBackups }

    /// Usable servers of both tiers (0: panic, when enabled).
    @inline(__always)
    var usableTotal: Int { usablePrimaries + usableBackups }

    /// Whether `server` may be picked in the current mode (`panic`: every server, usable or not).
    @inline(__always)
    func isCandidate(_ server: Int, panic: Bool) -> Bool { panic || usable[server] }
}

/// One load-balancing algorithm. Implementations are value types; the Balancer dispatches to them
/// through `AnyScheduler` (no existential boxes; every call is statically resolved).
protocol SchedulingAlgorithm: Sendable {
    /// Picks one server of `tier` that is a candidate (usable, or any server when `panic`) and not
    /// in `tried`, or nil when there is none. Must not change `pool`; the Balancer then counts the
    /// connection and calls `connectionTaken`.
    mutating func pick(from tier: ServerTier, panic: Bool, client: ClientKey, excluding tried: ServerSet, pool: ServerPool) -> Int?
    /// `pool.active[server]` has just been incremented.
    mutating func connectionTaken(_ server: Int, pool: ServerPool)
    /// `pool.active[server]` has just been decremented.
    mutating func connectionReleased(_ server: Int, pool: ServerPool)
    /// The server's usable flag or effective weight has just changed in `pool`.
    mutating func serverStateChanged(_ server: Int, _ change: ServerStateChange, pool: ServerPool)
}

/// The closed set of algorithms, dispatched without an existential.
///
/// Exactly one of the optionals is set. Calls go through `x!.method()`, which mutates the payload
/// in place (an enum payload would have to be moved out and back, retaining and releasing every
/// array it holds on each call).
struct AnyScheduler: SchedulingAlgorithm {
    private let kind: BalanceAlgorithm
    private var leastConn: LeastConnections?
    private var ipHash: MaglevHash?
    private var roundRobin: WeightedRoundRobin?

    init(_ algorithm: BalanceAlgorithm, pool: ServerPool, maglevTableSize: Int, roundRobinRebaseAt: UInt64) {
        kind = algorithm
        switch algorithm {
        case .leastConn: leastConn = LeastConnections(pool: pool)
        case .ipHash: ipHash = MaglevHash(pool: pool, tableSize: maglevTableSize)
        case .roundRobin: roundRobin = WeightedRoundRobin(pool: pool, rebaseAt: roundRobinRebaseAt)
        }
    }

    mutating func pick(from tier: ServerTier, panic: Bool, client: ClientKey, excluding tried: ServerSet, pool: ServerPool) -> Int? {
        switch kind {
        case .leastConn: leastConn!.pick(from: tier, panic: panic, client: client, excluding: tried, pool: pool)
        case .ipHash: ipHash!.pick(from: tier, panic: panic, client: client, excluding: tried, pool: pool)
        case .roundRobin: roundRobin!.pick(from: tier, panic: panic, client: client, excluding: tried, pool: pool)
        }
    }

    /// See `Balancer.carryTurns` (round_robin only: the other algorithms keep no turns).
    mutating func carryTurns(from old: AnyScheduler, pairs: [(old: Int, new: Int)], pool: ServerPool, oldPool: ServerPool) {
        guard kind == .roundRobin, old.kind == .roundRobin else { return }
        roundRobin!.carryTurns(from: old.roundRobin!, pairs: pairs, pool: pool, oldPool: oldPool)
    }

    mutating func connectionTaken(_ server: Int, pool: ServerPool) {
        switch kind {
        case .leastConn: leastConn!.connectionTaken(server, pool: pool)
        case .ipHash: ipHash!.connectionTaken(server, pool: pool)
        case .roundRobin: roundRobin!.connectionTaken(server, pool: pool)
        }
    }

    mutating func connectionReleased(_ server: Int, pool: ServerPool) {
        switch kind {
        case .leastConn: leastConn!.connectionReleased(server, pool: pool)
        case .ipHash: ipHash!.connectionReleased(server, pool: pool)
        case .roundRobin: roundRobin!.connectionReleased(server, pool: pool)
        }
    }

    mutating func serverStateChanged(_ server: Int, _ change: ServerStateChange, pool: ServerPool) {
        switch kind {
        case .leastConn: leastConn!.serverStateChanged(server, change, pool: pool)
        case .ipHash: ipHash!.serverStateChanged(server, change, pool: pool)
        case .roundRobin: roundRobin!.serverStateChanged(server, change, pool: pool)
        }
    }
}
