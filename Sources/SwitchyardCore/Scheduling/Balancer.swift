// One service's server picker: the common policy (tiers, exclusions, panic, connection counts)
// around one pluggable `SchedulingAlgorithm`.
//
// Pure value type: no clock, no randomness, no I/O, no locks. The wiring keeps one per service
// behind its own lock and calls `acquire` once per new client connection and `release` once when
// that connection ends (or its connect fails). Neither allocates in the common case.

/// A server as the balancer sees it: a name (for ip_hash, which hashes names so that the mapping
/// does not depend on configuration order or addresses), a weight and whether it is a backup.
public struct BackendSpec: Equatable, Sendable {
    public var name: String
    /// Relative share. Clamped to 1...1_000_000 by the Balancer.
    public var weight: Int
    /// Used only when no primary server is eligible.
    public var backup: Bool

    public init(name: String, weight: Int = 1, backup: Bool = false) {
        self.name = name
        self.weight = weight
        self.backup = backup
    }
}

public struct Balancer: Sendable {
    public let algorithm: BalanceAlgorithm
    /// When every server is unusable, pick among all of them anyway rather than refusing.
    public let panicEnabled: Bool

    var pool: ServerPool
    var scheduler: AnyScheduler

    /// - Parameters:
    ///   - servers: indices into this array are the server ids used by every other method.
    ///   - panic: see `acquire`.
    ///   - maglevTableSize: ip_hash lookup table size; rounded up to a prime if it is not one.
    ///     65537 keeps the remapping on a server change near the theoretical minimum for up to
    ///     a few hundred servers (Maglev's recommendation: M ≥ 100 × servers).
    public init(algorithm: BalanceAlgorithm, servers: [BackendSpec], panic: Bool = true, maglevTableSize: Int = 65537) {
        self.init(algorithm: algorithm, servers: servers, panic: panic, maglevTableSize: maglevTableSize,
                  roundRobinRebaseAt: WeightedRoundRobin.defaultRebaseAt)
    }

    /// Tests: `roundRobinRebaseAt` is when round_robin moves its virtual clock back (see
    /// `WeightedRoundRobin`), made small to exercise it.
    init(algorithm: BalanceAlgorithm, servers: [BackendSpec], panic: Bool = true, maglevTableSize: Int = 65537,
         roundRobinRebaseAt: UInt64) {
        self.algorithm = algorithm
        self.panicEnabled = panic
        let pool = ServerPool(servers)
        self.pool = pool
        self.scheduler = AnyScheduler(algorithm, pool: pool, maglevTableSize: maglevTableSize,
                                      roundRobinRebaseAt: roundRobinRebaseAt)
    }

    /// Number of servers (primaries and backups).
    public var count: Int { pool.count }

    /// The servers as configured; indices are the server ids.
    public var servers: [BackendSpec] { pool.specs }

    /// True when no server is usable (so `acquire` is in panic mode, or refuses when panic is off).
    public var isPanicking: Bool { pool.usableTotal == 0 }

    /// Picks a server for a new connection and counts it as taken (active += 1). nil when no server is eligible.
    /// `tried`: servers already tried for this client (failover retries); never picked again.
    ///
    /// Eligible = usable and not in `tried`. Primaries first; backups only when no primary is eligible.
    /// Panic: when no server at all is usable and panic is enabled, every server not in `tried` is a
    /// candidate (still primaries before backups); with panic disabled the answer is nil.
    public mutating func acquire(client: ClientKey, excluding tried: ServerSet = ServerSet()) -> Int? {
        let panicking: Bool
        if pool.usableTotal > 0 {
            panicking = false
        } else if panicEnabled {
            panicking = true
        } else {
            return nil
        }
        var chosen: Int? = nil
        if hasCandidates(.primary, panic: panicking) {
            chosen = scheduler.pick(from: .primary, panic: panicking, client: client, excluding: tried, pool: pool)
        }
        if chosen == nil, hasCandidates(.backup, panic: panicking) {
            chosen = scheduler.pick(from: .backup, panic: panicking, client: client, excluding: tried, pool: pool)
        }
        guard let server = chosen else { return nil }
        pool.active[server] += 1
        scheduler.connectionTaken(server, pool: pool)
        return server
    }

    @inline(__always)
    private func hasCandidates(_ tier: ServerTier, panic: Bool) -> Bool {
        panic ? !pool.members(tier).isEmpty : pool.usableCount(tier) > 0
    }

    /// A connection to `server` ended, or its connect failed.
    /// A release without a matching acquire, or of an unknown index, is ignored.
    public mutating func release(_ server: Int) {
        guard pool.specs.indices.contains(server), pool.active[server] > 0 else { return }
        pool.active[server] -= 1
        scheduler.connectionReleased(server, pool: pool)
    }

    /// Counts `count` connections as already open on `server` without picking it: a reload builds a new
    /// Balancer and carries over the connections that servers which stay in the list still hold.
    public mutating func assumeTaken(_ server: Int, count: Int) {
        guard pool.specs.indices.contains(server), count > 0 else { return }
        for _ in 0..<count {
            pool.active[server] += 1
            scheduler.connectionTaken(server, pool: pool)
        }
    }

    /// A reload builds a new Balancer: `pairs` (a server's index in `old`, its index here) carries
    /// each server's place in the round_robin cycle over, so that the rotation goes on where it
    /// was rather than starting again at the first server (least_conn needs nothing: the open
    /// connections are carried by `assumeTaken`; ip_hash keeps no turns). Pairs out of range are
    /// ignored.
    public mutating func carryTurns(from old: Balancer, pairs: [(old: Int, new: Int)]) {
        let valid = pairs.filter { old.pool.specs.indices.contains($0.old) && pool.specs.indices.contains($0.new) }
        scheduler.carryTurns(from: old.scheduler, pairs: valid, pool: pool, oldPool: old.pool)
    }

    /// Health layer: mark a server usable or not (down/ejected/disabled/draining).
    /// Servers start usable. Connections already counted on a server stay counted until released.
    public mutating func setUsable(_ server: Int, _ usable: Bool) {
        guard pool.specs.indices.contains(server), pool.usable[server] != usable else { return }
        pool.usable[server] = usable
        let delta = usable ? 1 : -1
        switch pool.tier[server] {
        case .primary: pool.usablePrimaries += delta
        case .backup: pool.usableBackups += delta
        }
        scheduler.serverStateChanged(server, .usability, pool: pool)
    }

    public func isUsable(_ server: Int) -> Bool {
        pool.specs.indices.contains(server) && pool.usable[server]
    }

    /// Slow start: effective weight = configured weight × factor, factor in [0.1, 1.0] (least_conn and
    /// round_robin; ip_hash ignores it to stay consistent). Out-of-range factors are clamped (NaN → 1.0);
    /// the factor is kept to a thousandth.
    public mutating func setWeightFactor(_ server: Int, _ factor: Double) {
        guard pool.specs.indices.contains(server) else { return }
        let clamped = factor.isNaN ? 1.0 : Swift.min(Swift.max(factor, 0.1), 1.0)
        let milli = Swift.min(Swift.max(Int((clamped * Double(ServerPool.factorScale)).rounded()),
                                        ServerPool.factorRange.lowerBound), ServerPool.factorRange.upperBound)
        guard milli != pool.factorMilli[server] else { return }
        pool.factorMilli[server] = milli
        pool.effectiveWeight[server] = pool.weight[server] * milli
        scheduler.serverStateChanged(server, .weight, pool: pool)
    }

    /// The slow-start factor currently applied to `server` (1.0 when none).
    public func weightFactor(_ server: Int) -> Double {
        guard pool.specs.indices.contains(server) else { return 1.0 }
        return Double(pool.factorMilli[server]) / Double(ServerPool.factorScale)
    }

    public func activeConnections(_ server: Int) -> Int {
        pool.specs.indices.contains(server) ? pool.active[server] : 0
    }
}
