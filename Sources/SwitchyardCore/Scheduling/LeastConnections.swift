// least_conn, weighted: the candidate minimising (active + 1) / effectiveWeight, i.e. the load the
// server would have after taking this connection. Compared exactly by integer cross-multiplication
// (effective weights are fixed point, weight × thousandths of the slow-start factor).
//
// Ties go to the server picked least recently, so equal servers share load evenly even when
// connections are short (acquire/release/acquire/... rotates rather than always hitting server 0).
//
// Index: `TieredServerHeaps` keyed by (load ratio, last-picked sequence number); all keys are
// distinct, so the order is total and the result is the same as a linear scan. Pick O(1),
// taken/released/state change O(log n); panic mode scans the tier, O(n).

struct LeastConnections: SchedulingAlgorithm {
    private var heaps: TieredServerHeaps
    private var order: LoadOrder
    private var clock: UInt64

    /// (active + 1) / effective weight, then least recently picked.
    struct LoadOrder: ServerOrder {
        /// Per server: the sequence number of its last pick (initially its index, so the first tie
        /// goes to the first server).
        var lastPicked: [UInt64]

        @inline(__always)
        func precedes(_ a: Int, _ b: Int, pool: ServerPool) -> Bool {
            let lhs = (pool.active[a] + 1) * pool.effectiveWeight[b]
            let rhs = (pool.active[b] + 1) * pool.effectiveWeight[a]
            if lhs != rhs { return lhs < rhs }
            return lastPicked[a] < lastPicked[b]
        }
    }

    init(pool: ServerPool) {
        let n = pool.count
        heaps = TieredServerHeaps(pool: pool)
        order = LoadOrder(lastPicked: (0..<n).map { UInt64($0) })
        clock = UInt64(n)
        for server in 0..<n where pool.usable[server] {
            heaps.insert(server, by: order, pool: pool)
        }
    }

    mutating func pick(from tier: ServerTier, panic: Bool, client: ClientKey, excluding tried: ServerSet, pool: ServerPool) -> Int? {
        if panic { return TieredServerHeaps.scan(tier, excluding: tried, by: order, pool: pool) }
        return heaps.best(tier, excluding: tried, by: order, pool: pool)
    }

    mutating func connectionTaken(_ server: Int, pool: ServerPool) {
        order.lastPicked[server] = clock
        clock &+= 1
        // Both the load and the sequence number went up: the key only grew.
        heaps.keyIncreased(server, by: order, pool: pool)
    }

    mutating func connectionReleased(_ server: Int, pool: ServerPool) {
        heaps.keyDecreased(server, by: order, pool: pool)
    }

    mutating func serverStateChanged(_ server: Int, _ change: ServerStateChange, pool: ServerPool) {
        switch change {
        case .usability:
            if pool.usable[server] && !heaps.contains(server) {
                heaps.insert(server, by: order, pool: pool)
            } else if !pool.usable[server] {
                heaps.remove(server, by: order, pool: pool)
            }
        case .weight:
            heaps.keyChanged(server, by: order, pool: pool)
        }
    }
}
