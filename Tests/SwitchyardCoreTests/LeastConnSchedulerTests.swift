import Testing
@testable import SwitchyardCore

/// The specification of weighted least_conn as a plain O(n) scan, independent of the heap:
/// candidates = not tried and usable (all servers when none is usable and panic is on); primaries
/// before backups; minimise (active+1)/effectiveWeight exactly, ties to the least recently picked
/// (initially: lowest index).
struct ReferenceLeastConn {
    var weight: [Int]
    var backup: [Bool]
    var milli: [Int]
    var usable: [Bool]
    var active: [Int]
    var lastPicked: [Int]
    var clock: Int
    let panic: Bool

    init(_ servers: [BackendSpec], panic: Bool) {
        weight = servers.map { min(max($0.weight, 1), 1_000_000) }
        backup = servers.map(\.backup)
        milli = Array(repeating: 1000, count: servers.count)
        usable = Array(repeating: true, count: servers.count)
        active = Array(repeating: 0, count: servers.count)
        lastPicked = Array(servers.indices)
        clock = servers.count
        self.panic = panic
    }

    mutating func acquire(excluding tried: Set<Int>) -> Int? {
        let anyUsable = usable.contains(true)
        if !anyUsable && !panic { return nil }
        for tierIsBackup in [false, true] {
            var best: Int? = nil
            for s in weight.indices where backup[s] == tierIsBackup && !tried.contains(s) && (!anyUsable || usable[s]) {
                guard let b = best else { best = s; continue }
                // (active[s]+1)/w[s] < (active[b]+1)/w[b], by cross-multiplication.
                let lhs = (active[s] + 1) * weight[b] * milli[b]
                let rhs = (active[b] + 1) * weight[s] * milli[s]
                if lhs < rhs || (lhs == rhs && lastPicked[s] < lastPicked[b]) { best = s }
            }
            if let s = best {
                active[s] += 1
                lastPicked[s] = clock
                clock += 1
                return s
            }
        }
        return nil
    }

    mutating func release(_ s: Int) { if active[s] > 0 { active[s] -= 1 } }

    mutating func setFactor(_ s: Int, _ f: Double) {
        milli[s] = min(max(Int((min(max(f, 0.1), 1.0) * 1000).rounded()), 100), 1000)
    }
}

@Suite struct LeastConnSchedulerTests {
    @Test func equalServersShareHeldConnectionsEvenly() {
        var b = Balancer(algorithm: .leastConn, servers: schedServers("a", "b", "c"))
        #expect(b.schedHold(30) == [10, 10, 10])
        #expect((0..<3).map { b.activeConnections($0) } == [10, 10, 10])
    }

    @Test func tiesRotateWhenConnectionsAreShort() {
        var b = Balancer(algorithm: .leastConn, servers: schedServers("a", "b", "c"))
        let sequence = b.schedSequence(30)
        #expect(sequence.prefix(6) == [0, 1, 2, 0, 1, 2])
        let counts = (0..<3).map { s in sequence.filter { $0 == s }.count }
        #expect(counts == [10, 10, 10])
    }

    @Test func tiesRotateWithMixedHoldsAndReleases() {
        var b = Balancer(algorithm: .leastConn, servers: schedServers("a", "b", "c"))
        var counts = [0, 0, 0]
        var held: [Int] = []
        for i in 0..<300 {
            let s = b.acquire(client: .none)!
            counts[s] += 1
            held.append(s)
            if i % 3 != 2 { b.release(held.removeFirst()) }
        }
        #expect(counts.allSatisfy { (99...101).contains($0) }, "\(counts)")
    }

    @Test func weightsTwoToOne() {
        var b = Balancer(algorithm: .leastConn, servers: schedServers("a", "b", weights: [2, 1]))
        #expect(b.schedHold(30) == [20, 10])
    }

    /// The rule counts the connection about to be added: (active+1)/weight, not active/weight.
    @Test func loadCountsTheConnectionBeingAdded() {
        // heavy (weight 3) with 1 active: 2/3 < light (weight 1) with 0 active: 1/1.
        // (active/weight would say 1/3 > 0 and pick light.)
        var b = Balancer(algorithm: .leastConn, servers: schedServers("heavy", "light", weights: [3, 1]))
        #expect(b.acquire(client: .none) == 0)
        #expect(b.acquire(client: .none) == 0)
        // heavy with 2 active: 3/3 == 1/1: a tie, and light is the less recently picked.
        #expect(b.acquire(client: .none) == 1)
        // heavy 2 active (3/3) vs light 1 active (2/1).
        #expect(b.acquire(client: .none) == 0)
        // heavy 3 active (4/3) vs light 1 active (2/1).
        #expect(b.acquire(client: .none) == 0)
        // heavy 4 active (5/3) < light (2/1).
        #expect(b.acquire(client: .none) == 0)
        // heavy 5 active (6/3) == light (2/1): tie; light picked less recently.
        #expect(b.acquire(client: .none) == 1)
        b.release(1)
        b.release(1)
        // light 0 active (1/1) < heavy (6/3).
        #expect(b.acquire(client: .none) == 1)
    }

    @Test func releaseMakesAServerPreferredAgain() {
        var b = Balancer(algorithm: .leastConn, servers: schedServers("a", "b", "c"))
        _ = b.schedHold(9)
        b.release(1)
        #expect(b.acquire(client: .none) == 1)
        b.release(2)
        b.release(2)
        #expect(b.acquire(client: .none) == 2)
        #expect(b.acquire(client: .none) == 2)
    }

    @Test func unusableServersAreSkippedAndComeBack() {
        var b = Balancer(algorithm: .leastConn, servers: schedServers("a", "b", "c"))
        b.setUsable(1, false)
        #expect(!b.isUsable(1))
        #expect(b.schedHold(10) == [5, 0, 5])
        b.setUsable(1, true)
        // b has nothing: it takes the next five before the others get any.
        #expect(b.schedHold(5) == [0, 5, 0])
    }

    /// The heap must pick exactly what the O(n) reference picks, whatever happens in between.
    @Test(arguments: [
        (seed: UInt64(1), servers: 7, backups: 2, ops: 10_000, panic: true),
        (seed: UInt64(2), servers: 7, backups: 2, ops: 10_000, panic: false),
        (seed: UInt64(3), servers: 1, backups: 0, ops: 2_000, panic: true),
        (seed: UInt64(4), servers: 150, backups: 10, ops: 4_000, panic: true), // tried indices beyond the bitmask
    ])
    func heapMatchesReferenceOnRandomOperations(_ c: (seed: UInt64, servers: Int, backups: Int, ops: Int, panic: Bool)) {
        var rng = SchedTestRandom(seed: c.seed)
        let specs = (0..<c.servers).map { i in
            BackendSpec(name: "s\(i)", weight: 1 + rng.below(4), backup: i >= c.servers - c.backups)
        }
        var b = Balancer(algorithm: .leastConn, servers: specs, panic: c.panic)
        var model = ReferenceLeastConn(specs, panic: c.panic)
        var held: [Int] = []
        var acquires = 0
        for step in 0..<c.ops {
            let op = rng.below(100)
            switch op {
            case 0..<45:
                var tried = ServerSet()
                var triedModel = Set<Int>()
                if rng.chance(20) {
                    for _ in 0..<(1 + rng.below(3)) {
                        let t = rng.below(c.servers)
                        tried.insert(t)
                        triedModel.insert(t)
                    }
                }
                let got = b.acquire(client: .none, excluding: tried)
                let want = model.acquire(excluding: triedModel)
                #expect(got == want, "step \(step)")
                if got != want { return }
                if let s = got { held.append(s); acquires += 1 }
            case 45..<85:
                guard !held.isEmpty else { continue }
                let s = held.remove(at: rng.below(held.count))
                b.release(s)
                model.release(s)
            case 85..<95:
                let s = rng.below(c.servers)
                // Mostly usable, so that panic happens but is not the normal state.
                let usable = rng.chance(70)
                b.setUsable(s, usable)
                model.usable[s] = usable
            default:
                let s = rng.below(c.servers)
                let f = [0.1, 0.25, 0.5, 0.999, 1.0][rng.below(5)]
                b.setWeightFactor(s, f)
                model.setFactor(s, f)
            }
            for s in 0..<c.servers where b.activeConnections(s) != model.active[s] {
                Issue.record("active count of \(s) differs at step \(step)")
                return
            }
        }
        #expect(acquires > c.ops / 5)
    }
}
