import Testing
@testable import SwitchyardCore

// MARK: - Shared helpers for the scheduling tests

/// SplitMix64: a tiny deterministic PRNG, so that every "random" test is reproducible.
struct SchedTestRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    mutating func chance(_ percent: Int) -> Bool { below(100) < percent }
}

func schedIPv4(_ x: UInt32) -> ClientKey {
    ClientKey(addressBytes: [UInt8(x >> 24), UInt8(truncatingIfNeeded: x >> 16), UInt8(truncatingIfNeeded: x >> 8), UInt8(truncatingIfNeeded: x)])
}

func schedServers(_ names: String..., weights: [Int]? = nil) -> [BackendSpec] {
    names.enumerated().map { BackendSpec(name: $0.element, weight: weights?[$0.offset] ?? 1) }
}

extension Balancer {
    /// Acquires `n` connections (held), returning how many went to each server.
    mutating func schedHold(_ n: Int, client: (Int) -> ClientKey = { _ in .none }) -> [Int] {
        var counts = Array(repeating: 0, count: count)
        for i in 0..<n {
            guard let s = acquire(client: client(i)) else { continue }
            counts[s] += 1
        }
        return counts
    }

    /// Acquires and releases at once, `n` times, returning the picked sequence.
    mutating func schedSequence(_ n: Int, client: ClientKey = .none) -> [Int?] {
        (0..<n).map { _ in
            let s = acquire(client: client)
            if let s { release(s) }
            return s
        }
    }
}

// MARK: - Policy common to every algorithm

@Suite struct BalancerPolicyTests {
    /// p1, p2 primaries (0, 1); b1, b2 backups (2, 3).
    static func tiered(_ algorithm: BalanceAlgorithm, panic: Bool = true) -> Balancer {
        Balancer(algorithm: algorithm, servers: [
            BackendSpec(name: "p1"), BackendSpec(name: "p2"),
            BackendSpec(name: "b1", backup: true), BackendSpec(name: "b2", backup: true),
        ], panic: panic, maglevTableSize: 1009)
    }

    static func key(_ i: Int) -> ClientKey { schedIPv4(UInt32(truncatingIfNeeded: i &* 2_654_435_761)) }

    @Test(arguments: BalanceAlgorithm.allCases)
    func backupsOnlyWhenNoPrimaryIsUsable(_ algorithm: BalanceAlgorithm) {
        var b = Self.tiered(algorithm)
        var counts = b.schedHold(200, client: Self.key)
        #expect(counts[2] == 0 && counts[3] == 0)
        #expect(counts[0] + counts[1] == 200)

        b.setUsable(0, false)
        counts = b.schedHold(100, client: Self.key)
        #expect(counts == [0, 100, 0, 0])

        b.setUsable(1, false)
        counts = b.schedHold(100, client: Self.key)
        #expect(counts[0] == 0 && counts[1] == 0)
        #expect(counts[2] + counts[3] == 100)
        if algorithm != .ipHash { #expect(counts[2] > 0 && counts[3] > 0) }

        b.setUsable(1, true)
        counts = b.schedHold(100, client: Self.key)
        #expect(counts == [0, 100, 0, 0])
        #expect(!b.isPanicking)
    }

    @Test(arguments: BalanceAlgorithm.allCases)
    func triedServersAreNeverPickedAndTriedPrimariesFallThroughToBackups(_ algorithm: BalanceAlgorithm) {
        var b = Self.tiered(algorithm)
        for i in 0..<100 {
            let s = b.acquire(client: Self.key(i), excluding: [0])
            #expect(s == 1)
        }
        for i in 0..<100 {
            let s = b.acquire(client: Self.key(i), excluding: [0, 1])
            #expect(s == 2 || s == 3)
            let t = b.acquire(client: Self.key(i), excluding: [0, 1, 2])
            #expect(t == 3)
        }
        #expect(b.acquire(client: Self.key(0), excluding: [0, 1, 2, 3]) == nil)
    }

    @Test(arguments: BalanceAlgorithm.allCases)
    func failoverSequenceVisitsEveryServerOnce(_ algorithm: BalanceAlgorithm) {
        var b = Self.tiered(algorithm)
        for i in 0..<50 {
            var tried = ServerSet()
            var order: [Int] = []
            while let s = b.acquire(client: Self.key(i), excluding: tried) {
                b.release(s) // the connect failed
                #expect(!tried.contains(s))
                tried.insert(s)
                order.append(s)
            }
            #expect(order.count == 4)
            #expect(Set(order.prefix(2)) == [0, 1], "primaries before backups")
            #expect(Set(order.suffix(2)) == [2, 3])
        }
        #expect((0..<4).allSatisfy { b.activeConnections($0) == 0 })
    }

    @Test(arguments: BalanceAlgorithm.allCases)
    func panicPicksAmongAllServersWhenNoneIsUsable(_ algorithm: BalanceAlgorithm) {
        var b = Self.tiered(algorithm)
        for s in 0..<4 { b.setUsable(s, false) }
        #expect(b.isPanicking)
        let counts = b.schedHold(100, client: Self.key)
        #expect(counts[0] + counts[1] == 100, "panic still prefers primaries")
        #expect(b.acquire(client: .none, excluding: [0, 1]).map { $0 >= 2 } == true)
        #expect(b.acquire(client: .none, excluding: [0, 1, 2]) == 3)
        #expect(b.acquire(client: .none, excluding: [0, 1, 2, 3]) == nil)

        // One usable backup ends panic: only it is eligible now, primaries included.
        b.setUsable(2, true)
        #expect(!b.isPanicking)
        #expect(b.schedHold(20, client: Self.key) == [0, 0, 20, 0])
        #expect(b.acquire(client: .none, excluding: [2]) == nil, "not panic: unusable servers stay out")
    }

    @Test(arguments: BalanceAlgorithm.allCases)
    func panicDisabledRefuses(_ algorithm: BalanceAlgorithm) {
        var b = Self.tiered(algorithm, panic: false)
        for s in 0..<4 { b.setUsable(s, false) }
        #expect(b.acquire(client: Self.key(1)) == nil)
        b.setUsable(3, true)
        #expect(b.acquire(client: Self.key(1)) == 3)
    }

    @Test(arguments: BalanceAlgorithm.allCases)
    func emptyBalancerPicksNothing(_ algorithm: BalanceAlgorithm) {
        var b = Balancer(algorithm: algorithm, servers: [])
        #expect(b.count == 0)
        #expect(b.acquire(client: .none) == nil)
        b.release(0)
        b.setUsable(0, false)
        #expect(!b.isUsable(0))
    }

    @Test(arguments: BalanceAlgorithm.allCases)
    func activeCountsAndStrayReleases(_ algorithm: BalanceAlgorithm) {
        var b = Balancer(algorithm: algorithm, servers: schedServers("a", "b"))
        let s = b.acquire(client: Self.key(7))!
        #expect(b.activeConnections(s) == 1)
        b.release(s)
        b.release(s) // unmatched: ignored, never negative
        b.release(99)
        b.release(-1)
        #expect(b.activeConnections(s) == 0)
        #expect(b.activeConnections(99) == 0)
        b.setUsable(5, false)
        b.setWeightFactor(5, 0.5)
        #expect(b.isUsable(0) && b.isUsable(1))
    }

    /// A server at 10% slow start gets about a tenth of a full server's share.
    @Test(arguments: [BalanceAlgorithm.leastConn, .roundRobin])
    func slowStartFactorScalesTheShare(_ algorithm: BalanceAlgorithm) {
        var b = Balancer(algorithm: algorithm, servers: schedServers("warming", "full"))
        b.setWeightFactor(0, 0.1)
        #expect(b.weightFactor(0) == 0.1)
        let counts = b.schedHold(1100)
        #expect((95...105).contains(counts[0]), "\(counts)")
        #expect(counts[0] + counts[1] == 1100)

        // Back to full weight: shares equalise again (least_conn catches up on held connections).
        b.setWeightFactor(0, 1.0)
        let more = b.schedHold(1000)
        if algorithm == .leastConn {
            #expect(more[0] > 850, "\(more)")
        } else {
            #expect(more == [500, 500])
        }
    }

    @Test func weightFactorIsClamped() {
        var b = Balancer(algorithm: .roundRobin, servers: schedServers("a", "b"))
        b.setWeightFactor(0, 0.0)
        #expect(b.weightFactor(0) == 0.1)
        b.setWeightFactor(0, 7)
        #expect(b.weightFactor(0) == 1.0)
        b.setWeightFactor(0, .nan)
        #expect(b.weightFactor(0) == 1.0)
        b.setWeightFactor(0, -.infinity)
        #expect(b.weightFactor(0) == 0.1)
    }

    @Test(arguments: BalanceAlgorithm.allCases)
    func nonPositiveWeightsActAsOne(_ algorithm: BalanceAlgorithm) {
        var b = Balancer(algorithm: algorithm, servers: schedServers("a", "b", weights: [0, -3]), maglevTableSize: 1009)
        let counts = b.schedHold(1000, client: Self.key)
        #expect(counts[0] > 400 && counts[1] > 400, "\(counts)")
    }
}

@Suite struct BalancerServerSetTests {
    @Test func smallAndLargeIndices() {
        var s = ServerSet()
        #expect(s.isEmpty)
        for i in [1000, 127, 0, 63, 64, 128, -5, 64] { s.insert(i) }
        #expect(!s.isEmpty)
        #expect(s.count == 6)
        for i in [0, 63, 64, 127, 128, 1000] { #expect(s.contains(i)) }
        for i in [-5, 1, 62, 65, 126, 129, 999] { #expect(!s.contains(i)) }
        var order: [Int] = []
        s.forEach { order.append($0) }
        #expect(order == [0, 63, 64, 127, 128, 1000])
    }

    @Test func equalityIsSetEquality() {
        var a = ServerSet()
        for i in [300, 3, 70, 200, 3, 70, 300] { a.insert(i) }
        let b: ServerSet = [70, 200, 3, 300]
        #expect(a == b)
        #expect(a != [3, 70, 200])
        #expect(a != [3, 70, 300])
        var onlySpill = ServerSet()
        onlySpill.insert(500)
        #expect(!onlySpill.isEmpty)
        #expect(onlySpill.contains(500))
    }
}
