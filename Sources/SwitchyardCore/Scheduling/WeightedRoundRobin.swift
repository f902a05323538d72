// round_robin, weighted: earliest virtual deadline first (Envoy's EDF scheduler, stride scheduling).
//
// Every server has a virtual deadline; the pick is the earliest one (ties: least recently picked),
// whose deadline then moves on by its stride, `unit / effective weight`. Each server's picks stay
// within one of its share over any stretch, and are spread out: weights 5/1/1 give
// `a a a a b a c`, repeating (the cycle of nginx's smooth weighted round robin), and equal weights
// rotate in configuration order. Server i of a tier of n starts (i+1)/n of a stride into the cycle,
// so that servers of equal weight interleave instead of coming in pairs.
//
// Index: `TieredServerHeaps` keyed by (deadline, last pick). Pick O(log n) (the picked server's
// deadline moves on), state change O(log n); panic mode scans the tier, O(n). Connections taken
// and released do not matter.
//
// Virtual time, per tier: the deadline of the last pick. A server that becomes usable starts its
// (i+1)/n of a stride after it, so it neither bursts nor starves because of where it stood before;
// a weight change (slow start) rescales what is left of its current stride. Deadlines are fixed
// point (`unit` per unit of effective weight); once a tier's virtual time reaches `rebaseAt`
// (2^62: after at least 400,000 picks) every deadline of the tier moves back by it, O(n).

struct WeightedRoundRobin: SchedulingAlgorithm {
    static let unit: UInt64 = 1 << 50

    private var heaps: TieredServerHeaps
    private var order: DeadlineOrder
    /// Per server: `unit / effective weight`, as last applied.
    private var stride: [UInt64]
    /// Per server: its position in its tier, plus one (its share of the initial stagger).
    private let phase: [UInt64]
    /// Virtual time of each tier.
    private var now: (UInt64, UInt64) = (0, 0)
    private var clock: UInt64
    private let rebaseAt: UInt64

    /// (deadline, last pick).
    struct DeadlineOrder: ServerOrder {
        var deadline: [UInt64]
        /// Per server: the sequence number of its last pick (initially its index).
        var lastPicked: [UInt64]

        @inline(__always)
        func precedes(_ a: Int, _ b: Int, pool: ServerPool) -> Bool {
            if deadline[a] != deadline[b] { return deadline[a] < deadline[b] }
            return lastPicked[a] < lastPicked[b]
        }
    }

    init(pool: ServerPool, rebaseAt: UInt64 = 1 << 62) {
        let n = pool.count
        self.rebaseAt = rebaseAt
        heaps = TieredServerHeaps(pool: pool)
        order = DeadlineOrder(deadline: Array(repeating: 0, count: n), lastPicked: (0..<n).map { UInt64($0) })
        stride = pool.effectiveWeight.map { Self.unit / UInt64($0) }
        var phase = Array(repeating: UInt64(0), count: n)
        for members in [pool.primaries, pool.backups] {
            for (k, server) in members.enumerated() { phase[server] = UInt64(k + 1) }
        }
        self.phase = phase
        clock = UInt64(n)
        for server in 0..<n where pool.usable[server] {
            start(server, pool: pool)
        }
    }

    @inline(__always)
    private func now(_ t: ServerTier) -> UInt64 { t == .primary ? now.0 : now.1 }

    @inline(__always)
    private mutating func setNow(_ t: ServerTier, _ value: UInt64) {
        if t == .primary { now.0 = value } else { now.1 = value }
    }

    mutating func pick(from tier: ServerTier, panic: Bool, client: ClientKey, excluding tried: ServerSet, pool: ServerPool) -> Int? {
        let chosen = panic
            ? TieredServerHeaps.scan(tier, excluding: tried, by: order, pool: pool)
            : heaps.best(tier, excluding: tried, by: order, pool: pool)
        guard let server = chosen else { return nil }
        let due = order.deadline[server]
        if due > now(tier) { setNow(tier, due) }
        order.deadline[server] = due + stride[server]
        order.lastPicked[server] = clock
        clock &+= 1
        heaps.keyIncreased(server, by: order, pool: pool)
        if now(tier) >= rebaseAt { rebase(tier, pool: pool) }
        return server
    }

    mutating func connectionTaken(_ server: Int, pool: ServerPool) {}

    mutating func connectionReleased(_ server: Int, pool: ServerPool) {}

    mutating func serverStateChanged(_ server: Int, _ change: ServerStateChange, pool: ServerPool) {
        switch change {
        case .usability:
            if pool.usable[server] && !heaps.contains(server) {
                start(server, pool: pool)
            } else if !pool.usable[server] {
                heaps.remove(server, by: order, pool: pool)
            }
        case .weight:
            let old = stride[server]
            let new = Self.unit / UInt64(pool.effectiveWeight[server])
            stride[server] = new
            guard heaps.contains(server), new != old else { return }
            // What is left of the current stride, rescaled: remaining × new / old, where
            // remaining ≤ old except for a server passed over by retries (then clamped).
            let t = pool.tier[server]
            let remaining = min(order.deadline[server] - min(order.deadline[server], now(t)), old)
            let scaled = old.dividingFullWidth(remaining.multipliedFullWidth(by: new)).quotient
            order.deadline[server] = now(t) + scaled
            heaps.keyChanged(server, by: order, pool: pool)
        }
    }

    /// `server` (usable) joins its tier's cycle, (i+1)/n of its stride after the tier's virtual time.
    private mutating func start(_ server: Int, pool: ServerPool) {
        let t = pool.tier[server]
        let members = UInt64(pool.members(t).count)
        order.deadline[server] = now(t) + stride[server] / members * phase[server]
        heaps.insert(server, by: order, pool: pool)
    }

    /// Moves the tier's virtual time and every deadline in it back by the virtual time, which keeps
    /// the order (a deadline already behind it becomes 0; ties then go by last pick).
    private mutating func rebase(_ tier: ServerTier, pool: ServerPool) {
        let base = now(tier)
        for server in pool.members(tier) {
            let d = order.deadline[server]
            order.deadline[server] = d > base ? d - base : 0
        }
        setNow(tier, 0)
        heaps.reorder(tier, by: order, pool: pool)
    }
}
