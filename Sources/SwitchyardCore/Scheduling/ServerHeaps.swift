// The index least_conn and round_robin pick from: one indexed binary min-heap per tier over the
// usable servers, ordered by the algorithm's own key (a `ServerOrder`). The heaps hold server
// indices only; the keys live in the algorithm, which says after every change which way a key
// moved. The top is the next pick, O(1); a key change, insertion or removal is O(log n).
//
// With `tried` servers (failover retries) the best untried one is found by descending only through
// tried nodes: O(k) for k tried servers. Panic mode (no usable server: the heaps are empty) scans
// the tier instead, O(n).

/// A strict total order on servers: whether `a` is to be picked before `b`. Keys must be distinct
/// (break ties, e.g. by the last pick), so that the heap's answer is the one a linear scan gives.
protocol ServerOrder {
    func precedes(_ a: Int, _ b: Int, pool: ServerPool) -> Bool
}

struct TieredServerHeaps: Sendable {
    /// Both heaps in one buffer: the primary heap occupies `slots[0 ..< primaries.count]`, the backup
    /// heap `slots[primaries.count ..< n]`; each holds only its tier's usable servers.
    private var slots: [Int]
    private let heapBase: (Int, Int)
    private var heapSize: (Int, Int) = (0, 0)
    /// Per server: its position in its tier's heap, or -1 when it is not in the heap (unusable).
    private var position: [Int]

    /// Empty heaps for the servers of `pool`; the algorithm inserts the usable ones.
    init(pool: ServerPool) {
        slots = Array(repeating: -1, count: pool.count)
        heapBase = (0, pool.primaries.count)
        position = Array(repeating: -1, count: pool.count)
    }

    @inline(__always)
    func contains(_ server: Int) -> Bool { position[server] >= 0 }

    @inline(__always)
    private func base(_ t: ServerTier) -> Int { t == .primary ? heapBase.0 : heapBase.1 }

    @inline(__always)
    private func size(_ t: ServerTier) -> Int { t == .primary ? heapSize.0 : heapSize.1 }

    @inline(__always)
    private mutating func setSize(_ t: ServerTier, _ n: Int) {
        if t == .primary { heapSize.0 = n } else { heapSize.1 = n }
    }

    @inline(__always)
    private func node(_ t: ServerTier, _ i: Int) -> Int { slots[base(t) + i] }

    @inline(__always)
    private mutating func place(_ server: Int, _ t: ServerTier, at i: Int) {
        slots[base(t) + i] = server
        position[server] = i
    }

    // MARK: picking

    /// The first usable server of `tier` in `order` that is not in `tried`, or nil.
    func best<Order: ServerOrder>(_ tier: ServerTier, excluding tried: ServerSet, by order: Order, pool: ServerPool) -> Int? {
        guard size(tier) > 0 else { return nil }
        let top = node(tier, 0)
        if tried.isEmpty || !tried.contains(top) { return top }
        return bestUntried(tier, at: 0, excluding: tried, by: order, pool: pool)
    }

    /// The best untried server in the subtree rooted at heap position `i`. An untried node is the
    /// best of its subtree (heap order), so only tried nodes are descended through.
    private func bestUntried<Order: ServerOrder>(_ t: ServerTier, at i: Int, excluding tried: ServerSet,
                                                 by order: Order, pool: ServerPool) -> Int? {
        guard i < size(t) else { return nil }
        let server = node(t, i)
        if !tried.contains(server) { return server }
        let left = bestUntried(t, at: 2 * i + 1, excluding: tried, by: order, pool: pool)
        let right = bestUntried(t, at: 2 * i + 2, excluding: tried, by: order, pool: pool)
        switch (left, right) {
        case let (l?, r?): return order.precedes(r, l, pool: pool) ? r : l
        case let (l?, nil): return l
        case let (nil, r?): return r
        case (nil, nil): return nil
        }
    }

    /// O(n) fallback over every server of the tier, usable or not (panic mode).
    static func scan<Order: ServerOrder>(_ tier: ServerTier, excluding tried: ServerSet, by order: Order, pool: ServerPool) -> Int? {
        var best = -1
        for server in pool.members(tier) where !tried.contains(server) {
            if best < 0 || order.precedes(server, best, pool: pool) { best = server }
        }
        return best < 0 ? nil : best
    }

    // MARK: changes

    /// `server` (usable, not yet in its heap) joins it.
    mutating func insert<Order: ServerOrder>(_ server: Int, by order: Order, pool: ServerPool) {
        let t = pool.tier[server]
        let i = size(t)
        setSize(t, i + 1)
        place(server, t, at: i)
        siftUp(t, from: i, by: order, pool: pool)
    }

    /// `server` leaves its heap (no-op when it is not in it).
    mutating func remove<Order: ServerOrder>(_ server: Int, by order: Order, pool: ServerPool) {
        guard position[server] >= 0 else { return }
        let t = pool.tier[server]
        let i = position[server]
        let last = size(t) - 1
        let moved = node(t, last)
        setSize(t, last)
        position[server] = -1
        slots[base(t) + last] = -1
        guard i != last else { return }
        // Fill the hole with the former last node and restore heap order around it.
        place(moved, t, at: i)
        siftUp(t, from: i, by: order, pool: pool)
        siftDown(t, from: position[moved], by: order, pool: pool)
    }

    /// `server`'s key grew (it is to be picked later): O(log n). No-op when it is not in a heap.
    mutating func keyIncreased<Order: ServerOrder>(_ server: Int, by order: Order, pool: ServerPool) {
        guard position[server] >= 0 else { return }
        siftDown(pool.tier[server], from: position[server], by: order, pool: pool)
    }

    /// `server`'s key shrank (it is to be picked sooner). No-op when it is not in a heap.
    mutating func keyDecreased<Order: ServerOrder>(_ server: Int, by order: Order, pool: ServerPool) {
        guard position[server] >= 0 else { return }
        siftUp(pool.tier[server], from: position[server], by: order, pool: pool)
    }

    /// `server`'s key changed either way. No-op when it is not in a heap.
    mutating func keyChanged<Order: ServerOrder>(_ server: Int, by order: Order, pool: ServerPool) {
        guard position[server] >= 0 else { return }
        let t = pool.tier[server]
        siftUp(t, from: position[server], by: order, pool: pool)
        siftDown(t, from: position[server], by: order, pool: pool)
    }

    /// Restores heap order of a whole tier after many keys changed at once: O(n).
    mutating func reorder<Order: ServerOrder>(_ tier: ServerTier, by order: Order, pool: ServerPool) {
        var i = size(tier) / 2
        while i > 0 {
            i -= 1
            siftDown(tier, from: i, by: order, pool: pool)
        }
    }

    private mutating func siftUp<Order: ServerOrder>(_ t: ServerTier, from start: Int, by order: Order, pool: ServerPool) {
        var i = start
        let server = node(t, i)
        while i > 0 {
            let parent = (i - 1) / 2
            let above = node(t, parent)
            guard order.precedes(server, above, pool: pool) else { break }
            place(above, t, at: i)
            i = parent
        }
        place(server, t, at: i)
    }

    private mutating func siftDown<Order: ServerOrder>(_ t: ServerTier, from start: Int, by order: Order, pool: ServerPool) {
        var i = start
        let server = node(t, i)
        let n = size(t)
        while true {
            let left = 2 * i + 1
            if left >= n { break }
            var child = left
            let right = left + 1
            if right < n && order.precedes(node(t, right), node(t, left), pool: pool) { child = right }
            let below = node(t, child)
            guard order.precedes(below, server, pool: pool) else { break }
            place(below, t, at: i)
            i = child
        }
        place(server, t, at: i)
    }
}
