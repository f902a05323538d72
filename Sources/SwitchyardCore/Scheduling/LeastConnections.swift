// least_conn, weighted: the candidate minimising (active + 1) / effectiveWeight, i.e. the load the
// server would have after taking this connection. Compared exactly by integer cross-multiplication
// (effective weights are fixed point, weight × thousandths of the slow-start factor).
//
// Ties go to the server picked least recently, so equal servers share load evenly even when
// connections are short (acquire/release/acquire/... rotates rather than always hitting server 0).
//
// Index: one indexed binary min-heap per tier over the usable servers, keyed by
// (load ratio, last-picked sequence number); all keys are distinct, so the order is total and the
// result is the same as a linear scan. Pick O(1), taken/released/state change O(log n).
// With `tried` servers the best untried one is found by descending only through tried heap nodes:
// O(k) for k tried servers. Panic mode (no usable server: the heaps are empty) scans the tier, O(n).

struct LeastConnections: SchedulingAlgorithm {
    /// Both heaps in one buffer: the primary heap occupies `slots[0 ..< primaries.count]`, the backup
    /// heap `slots[primaries.count ..< n]`; each holds only its tier's usable servers.
    private var slots: [Int]
    private var heapBase: [Int]
    private var heapSize: [Int]
    /// Per server: its position in its tier's heap, or -1 when it is not in the heap (unusable).
    private var position: [Int]
    /// Per server: the sequence number of its last pick (initially its index, so the first tie goes
    /// to the first server).
    private var lastPicked: [UInt64]
    private var clock: UInt64

    init(pool: ServerPool) {
        let n = pool.count
        slots = Array(repeating: -1, count: n)
        heapBase = [0, pool.primaries.count]
        heapSize = [0, 0]
        position = Array(repeating: -1, count: n)
        lastPicked = (0..<n).map { UInt64($0) }
        clock = UInt64(n)
        for server in 0..<n where pool.usable[server] {
            insert(server, pool: pool)
        }
    }

    // MARK: hooks

    mutating func pick(from tier: ServerTier, panic: Bool, client: ClientKey, excluding tried: ServerSet, pool: ServerPool) -> Int? {
        if panic { return scan(tier, excluding: tried, pool: pool) }
        let t = tier.rawValue
        guard heapSize[t] > 0 else { return nil }
        let top = slots[heapBase[t]]
        if tried.isEmpty || !tried.contains(top) { return top }
        return bestUntried(t, at: 0, excluding: tried, pool: pool)
    }

    mutating func connectionTaken(_ server: Int, pool: ServerPool) {
        lastPicked[server] = clock
        clock &+= 1
        // Both the load and the sequence number went up: the key only grew.
        if position[server] >= 0 { siftDown(pool.tier[server].rawValue, from: position[server], pool: pool) }
    }

    mutating func connectionReleased(_ server: Int, pool: ServerPool) {
        if position[server] >= 0 { siftUp(pool.tier[server].rawValue, from: position[server], pool: pool) }
    }

    mutating func serverStateChanged(_ server: Int, _ change: ServerStateChange, pool: ServerPool) {
        let inHeap = position[server] >= 0
        switch change {
        case .usability:
            if pool.usable[server] && !inHeap {
                insert(server, pool: pool)
            } else if !pool.usable[server] && inHeap {
                remove(server, pool: pool)
            }
        case .weight:
            if inHeap {
                let t = pool.tier[server].rawValue
                siftUp(t, from: position[server], pool: pool)
                siftDown(t, from: position[server], pool: pool)
            }
        }
    }

    // MARK: ordering

    /// Whether `a` should be picked before `b`: smaller (active+1)/weight, then least recently picked.
    @inline(__always)
    private func precedes(_ a: Int, _ b: Int, pool: ServerPool) -> Bool {
        let lhs = (pool.active[a] + 1) * pool.effectiveWeight[b]
        let rhs = (pool.active[b] + 1) * pool.effectiveWeight[a]
        if lhs != rhs { return lhs < rhs }
        return lastPicked[a] < lastPicked[b]
    }

    /// O(n) fallback over every server of the tier (panic mode: usability is ignored).
    private func scan(_ tier: ServerTier, excluding tried: ServerSet, pool: ServerPool) -> Int? {
        var best = -1
        for server in pool.members(tier) where !tried.contains(server) {
            if best < 0 || precedes(server, best, pool: pool) { best = server }
        }
        return best < 0 ? nil : best
    }

    /// The best untried server in the subtree rooted at heap position `i`. An untried node is the
    /// best of its subtree (heap order), so only tried nodes are descended through.
    private func bestUntried(_ t: Int, at i: Int, excluding tried: ServerSet, pool: ServerPool) -> Int? {
        guard i < heapSize[t] else { return nil }
        let server = slots[heapBase[t] + i]
        if !tried.contains(server) { return server }
        let left = bestUntried(t, at: 2 * i + 1, excluding: tried, pool: pool)
        let right = bestUntried(t, at: 2 * i + 2, excluding: tried, pool: pool)
        switch (left, right) {
        case let (l?, r?): return precedes(r, l, pool: pool) ? r : l
        case let (l?, nil): return l
        case let (nil, r?): return r
        case (nil, nil): return nil
        }
    }

    // MARK: indexed heap

    @inline(__always)
    private func node(_ t: Int, _ i: Int) -> Int { slots[heapBase[t] + i] }

    @inline(__always)
    private mutating func place(_ server: Int, _ t: Int, at i: Int) {
        slots[heapBase[t] + i] = server
        position[server] = i
    }

    private mutating func siftUp(_ t: Int, from start: Int, pool: ServerPool) {
        var i = start
        let server = node(t, i)
        while i > 0 {
            let parent = (i - 1) / 2
            let above = node(t, parent)
            guard precedes(server, above, pool: pool) else { break }
            place(above, t, at: i)
            i = parent
        }
        place(server, t, at: i)
    }

    private mutating func siftDown(_ t: Int, from start: Int, pool: ServerPool) {
        var i = start
        let server = node(t, i)
        let size = heapSize[t]
        while true {
            let left = 2 * i + 1
            if left >= size { break }
            var child = left
            let right = left + 1
            if right < size && precedes(node(t, right), node(t, left), pool: pool) { child = right }
            let below = node(t, child)
            guard precedes(below, server, pool: pool) else { break }
            place(below, t, at: i)
            i = child
        }
        place(server, t, at: i)
    }

    private mutating func insert(_ server: Int, pool: ServerPool) {
        let t = pool.tier[server].rawValue
        let i = heapSize[t]
        heapSize[t] += 1
        place(server, t, at: i)
        siftUp(t, from: i, pool: pool)
    }

    private mutating func remove(_ server: Int, pool: ServerPool) {
        let t = pool.tier[server].rawValue
        let i = position[server]
        let last = heapSize[t] - 1
        let moved = node(t, last)
        heapSize[t] = last
        position[server] = -1
        slots[heapBase[t] + last] = -1
        guard i != last else { return }
        // Fill the hole with the former last node and restore heap order around it.
        place(moved, t, at: i)
        siftUp(t, from: i, pool: pool)
        siftDown(t, from: position[moved], pool: pool)
    }
}
