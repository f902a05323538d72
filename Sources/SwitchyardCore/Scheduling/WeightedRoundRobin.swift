// round_robin, weighted: earliest virtual deadline first (Envoy's EDF scheduler, stride scheduling).
//
// Every server has a virtual deadline; the pick is the earliest one (ties: least recently picked),
// whose deadline then moves on by its stride, `unit / effective weight`. Each server's picks follow
// its share closely and are spread out: weights 5/1/1 give `a a a a b a c`, repeating (the cycle of
// nginx's smooth weighted round robin), and equal weights rotate in configuration order. Server i
// of a tier of n starts (i+1)/n of a stride into the cycle, so that servers of equal weight
// interleave instead of coming in pairs.
//
// Index: `TieredServerHeaps` keyed by (deadline, last pick). Pick O(log n) (the picked server's
// deadline moves on), state change O(log n); panic mode scans the tier, O(n), and entering or
// leaving it touches every server once. Connections taken and released do not matter.
//
// Virtual time, per tier: the deadline of the last pick. A server that leaves (unusable) keeps how
// far ahead of it its deadline was, and comes back that far ahead of the virtual time then: it
// resumes its turn, neither jumping the queue nor losing its place, however often it flaps. In
// panic (no usable server at all) every server resumes that way. A weight change (slow start)
// rescales what is left of the current stride. Deadlines are fixed point (`unit` per unit of
// effective weight); once a tier's virtual time reaches `rebaseAt` (2^62: the first time after at
// least 400,000 picks, then every 200,000 or more) every deadline of the tier moves back by half of
// that, O(n), which keeps their order.

struct WeightedRoundRobin: SchedulingAlgorithm {
    static let unit: UInt64 = 1 << 50
    static let defaultRebaseAt: UInt64 = 1 << 62

    private var heaps: TieredServerHeaps
    private var order: DeadlineOrder
    /// Per server: `unit / effective weight`, as last applied.
    private var stride: [UInt64]
    /// Per server out of its heap: how far ahead of its tier's virtual time its deadline was when
    /// it left (0...stride).
    private var lag: [UInt64]
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

    /// `rebaseAt`: at most 2^62 (so that no deadline can overflow), or `.max` for never (tests).
    init(pool: ServerPool, rebaseAt: UInt64 = defaultRebaseAt) {
        precondition(rebaseAt <= Self.defaultRebaseAt || rebaseAt == .max, "rebaseAt above 2^62")
        let n = pool.count
        self.rebaseAt = rebaseAt
        heaps = TieredServerHeaps(pool: pool)
        order = DeadlineOrder(deadline: Array(repeating: 0, count: n), lastPicked: (0..<n).map { UInt64($0) })
        stride = pool.effectiveWeight.map { Self.unit / UInt64($0) }
        // Server i of a tier of n starts (i+1)/n of its stride ahead.
        lag = Array(repeating: 0, count: n)
        for members in [pool.primaries, pool.backups] {
            for (k, server) in members.enumerated() {
                lag[server] = stride[server] / UInt64(members.count) * UInt64(k + 1)
                order.deadline[server] = lag[server]
            }
        }
        clock = UInt64(n)
        for server in 0..<n where pool.usable[server] {
            heaps.insert(server, by: order, pool: pool)
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
                if pool.usableTotal == 1 {
                    // The end of panic, whose picks moved every deadline on: where each stands now.
                    for s in 0..<pool.count { lag[s] = ahead(s, pool: pool) }
                }
                order.deadline[server] = now(pool.tier[server]) + lag[server]
                heaps.insert(server, by: order, pool: pool)
            } else if !pool.usable[server] && heaps.contains(server) {
                lag[server] = ahead(server, pool: pool)
                heaps.remove(server, by: order, pool: pool)
                if pool.usableTotal == 0 {
                    // Panic: every server is a candidate again, each resuming its turn.
                    for s in 0..<pool.count { order.deadline[s] = now(pool.tier[s]) + lag[s] }
                }
            }
        case .weight:
            let old = stride[server]
            let new = Self.unit / UInt64(pool.effectiveWeight[server])
            guard new != old else { return }
            // What is left of the current stride, rescaled.
            if deadlineIsLive(server, pool: pool) {
                let t = now(pool.tier[server])
                let d = order.deadline[server]
                // A server already due (passed over by a retry) stays due.
                if d > t {
                    order.deadline[server] = t + Self.rescale(d - t, from: old, to: new)
                    heaps.keyChanged(server, by: order, pool: pool)
                }
            } else {
                lag[server] = Self.rescale(lag[server], from: old, to: new)
            }
            stride[server] = new
        }
    }

    /// A reload built this scheduler afresh: each server of `pairs` (its index in `old`, its index
    /// here) takes over its place in `old`'s cycle (the same share of its stride ahead of the
    /// virtual time, the same last pick), so that the rotation goes on where it was instead of
    /// starting again at the first server. Servers new here keep their starting place.
    mutating func carryTurns(from old: WeightedRoundRobin, pairs: [(old: Int, new: Int)], pool: ServerPool, oldPool: ServerPool) {
        for (o, n) in pairs where pool.tier[n] == oldPool.tier[o] {
            let carried = Self.rescale(old.turnAhead(o, pool: oldPool), from: old.stride[o], to: stride[n])
            lag[n] = carried
            if heaps.contains(n) { order.deadline[n] = now(pool.tier[n]) + carried }
            order.lastPicked[n] = old.order.lastPicked[o]
        }
        clock = max(clock, old.clock)
        heaps.reorder(.primary, by: order, pool: pool)
        heaps.reorder(.backup, by: order, pool: pool)
    }

    /// Whether `server`'s deadline is the one that counts: in its heap, or (panic: no server
    /// usable) any server. Otherwise `lag` keeps its place.
    @inline(__always)
    private func deadlineIsLive(_ server: Int, pool: ServerPool) -> Bool {
        heaps.contains(server) || pool.usableTotal == 0
    }

    /// How far ahead of its tier's virtual time `server`'s turn is, within 0...stride.
    private func turnAhead(_ server: Int, pool: ServerPool) -> UInt64 {
        deadlineIsLive(server, pool: pool) ? ahead(server, pool: pool) : lag[server]
    }

    /// `left` of a stride `from` long, scaled to a stride `to` long: left × to / from (left
    /// capped at `from`, so that the quotient fits).
    private static func rescale(_ left: UInt64, from: UInt64, to: UInt64) -> UInt64 {
        from.dividingFullWidth(min(left, from).multipliedFullWidth(by: to)).quotient
    }

    /// How far `server`'s deadline is ahead of its tier's virtual time, within 0...stride.
    @inline(__always)
    private func ahead(_ server: Int, pool: ServerPool) -> UInt64 {
        let d = order.deadline[server]
        let t = now(pool.tier[server])
        return min(d > t ? d - t : 0, stride[server])
    }

    /// Moves the tier's virtual time and every deadline in it back by `now - rebaseAt/2`: the order
    /// stays (only a deadline more than rebaseAt/2 behind the virtual time, which no live server
    /// has, would become 0).
    private mutating func rebase(_ tier: ServerTier, pool: ServerPool) {
        let base = now(tier) - rebaseAt / 2
        for server in pool.members(tier) {
            let d = order.deadline[server]
            order.deadline[server] = d > base ? d - base : 0
        }
        setNow(tier, now(tier) - base)
        heaps.reorder(tier, by: order, pool: pool)
    }
}
