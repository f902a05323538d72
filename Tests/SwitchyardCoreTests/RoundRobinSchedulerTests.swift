import Testing
@testable import SwitchyardCore

@Suite struct RoundRobinSchedulerTests {
    /// Weights 5/1/1: the cycle of nginx's smooth weighted round robin (`a a b a c a a`), starting
    /// at another point of it; the light servers are never next to each other.
    @Test func weightedSequenceSpreadsEachServer() {
        var b = Balancer(algorithm: .roundRobin, servers: schedServers("a", "b", "c", weights: [5, 1, 1]))
        let names = b.schedSequence(14).map { b.servers[$0!].name }.joined()
        #expect(names == "aaaabac" + "aaaabac")
        let nginx = "aabacaa"
        #expect((0..<7).contains { k in String((nginx + nginx).dropFirst(k).prefix(7)) == "aaaabac" })
    }

    @Test func heldConnectionsDoNotChangeTheSequence() {
        var b = Balancer(algorithm: .roundRobin, servers: schedServers("a", "b", "c", weights: [5, 1, 1]))
        var names = ""
        for _ in 0..<7 { names += b.servers[b.acquire(client: .none)!].name }
        #expect(names == "aaaabac")
    }

    @Test func equalWeightsRotate() {
        var b = Balancer(algorithm: .roundRobin, servers: schedServers("a", "b", "c"))
        #expect(b.schedSequence(7) == [0, 1, 2, 0, 1, 2, 0])
    }

    /// A thousand equal servers rotate in configuration order, the pick staying O(log n).
    @Test func aThousandServersRotateInOrder() {
        let specs = (0..<1000).map { BackendSpec(name: "s\($0)") }
        var b = Balancer(algorithm: .roundRobin, servers: specs)
        let seq = b.schedSequence(3000)
        #expect(seq == (0..<3000).map { $0 % 1000 })
    }

    @Test func unusableServersAreSkipped() {
        var b = Balancer(algorithm: .roundRobin, servers: schedServers("a", "b", "c"))
        b.setUsable(1, false)
        #expect(b.schedSequence(4) == [0, 2, 0, 2])
        b.setUsable(1, true)
        let again = b.schedSequence(30)
        #expect((0..<3).map { s in again.filter { $0 == s }.count } == [10, 10, 10])
        // Back in the rotation: never twice within three picks.
        for i in 2..<again.count { #expect(Set(again[(i - 2)...i]).count == 3, "\(again)") }
    }

    @Test func weightsAreHonouredExactlyOverAPeriod() {
        var b = Balancer(algorithm: .roundRobin, servers: schedServers("a", "b", "c", weights: [1, 2, 3]))
        let seq = b.schedSequence(600)
        #expect((0..<3).map { s in seq.filter { $0 == s }.count } == [100, 200, 300])
        // Every window of one period (6 picks) holds each server's share to within one.
        for start in 0...(seq.count - 6) {
            let window = seq[start..<(start + 6)]
            for (s, share) in [(0, 1), (1, 2), (2, 3)] {
                #expect(abs(window.filter { $0 == s }.count - share) <= 1, "\(start): \(Array(window))")
            }
        }
    }

    @Test func weightFactorScalesTheShare() {
        var b = Balancer(algorithm: .roundRobin, servers: schedServers("a", "b"))
        b.setWeightFactor(1, 0.5)
        let seq = b.schedSequence(300)
        #expect((0..<2).map { s in seq.filter { $0 == s }.count } == [200, 100])
        // Half weight is spread out, never two in a row.
        for i in 1..<seq.count { #expect(!(seq[i] == 1 && seq[i - 1] == 1)) }
    }

    /// A server passed over for a retry (already tried for that client) keeps its turn: it is the
    /// next pick for the next client.
    @Test func aServerPassedOverForARetryKeepsItsTurn() {
        var b = Balancer(algorithm: .roundRobin, servers: schedServers("a", "b", "c"))
        #expect(b.acquire(client: .none) == 0)
        #expect(b.acquire(client: .none, excluding: [1]) == 2)
        #expect(b.acquire(client: .none) == 1)
        let rest = b.schedSequence(30)
        #expect((0..<3).map { s in rest.filter { $0 == s }.count } == [10, 10, 10])
    }

    /// Panic (no server usable): the rotation goes on over all of them.
    @Test func panicRotatesOverEveryServer() {
        var b = Balancer(algorithm: .roundRobin, servers: schedServers("a", "b", "c", weights: [2, 1, 1]))
        for s in 0..<3 { b.setUsable(s, false) }
        let seq = b.schedSequence(40)
        #expect((0..<3).map { s in seq.filter { $0 == s }.count } == [20, 10, 10])
    }

    /// The virtual clock is moved back long before it could overflow: one server at 10% slow start
    /// (the longest stride) picked two million times (without the rebase the deadline passes 2^64
    /// after about 1.64 million picks, which traps).
    @Test func theVirtualClockNeverOverflows() {
        var b = Balancer(algorithm: .roundRobin, servers: schedServers("a", "b"))
        b.setWeightFactor(0, 0.1)
        b.setUsable(1, false)
        var picks = 0
        for _ in 0..<2_000_000 where b.acquire(client: .none) == 0 {
            b.release(0)
            picks += 1
        }
        #expect(picks == 2_000_000)
        // Both servers share again once b is back.
        b.setUsable(1, true)
        b.setWeightFactor(0, 1.0)
        let seq = b.schedSequence(100)
        #expect((0..<2).map { s in seq.filter { $0 == s }.count } == [50, 50])
    }

    /// Moving the virtual clock back keeps the order: the same picks with a rebase every hundred
    /// or so picks as without one, through retries, servers going and coming back, slow start,
    /// backups and panic.
    @Test func rebasingKeepsTheSequence() {
        let specs = schedServers("a", "b", "c", "d", "e", weights: [5, 3, 1, 1, 2]).enumerated().map {
            BackendSpec(name: $0.element.name, weight: $0.element.weight, backup: $0.offset == 4)
        }
        var often = Balancer(algorithm: .roundRobin, servers: specs, roundRobinRebaseAt: 1 << 46)
        var never = Balancer(algorithm: .roundRobin, servers: specs, roundRobinRebaseAt: .max)
        var random = SchedTestRandom(seed: 7)
        var held: [Int] = []
        for i in 0..<100_000 {
            switch random.below(100) {
            case 0..<3:
                let s = random.below(specs.count)
                let usable = random.chance(60)
                often.setUsable(s, usable)
                never.setUsable(s, usable)
            case 3..<5:
                let s = random.below(specs.count)
                let factor = [0.1, 0.25, 0.5, 1.0][random.below(4)]
                often.setWeightFactor(s, factor)
                never.setWeightFactor(s, factor)
            default:
                var tried = ServerSet()
                if random.chance(10) { tried.insert(random.below(specs.count)) }
                let x = often.acquire(client: .none, excluding: tried)
                let y = never.acquire(client: .none, excluding: tried)
                if x != y {
                    Issue.record("step \(i): \(String(describing: x)) with rebases, \(String(describing: y)) without")
                    return
                }
                if let x { held.append(x) }
                if held.count > 20 {
                    let s = held.removeFirst()
                    often.release(s)
                    never.release(s)
                }
            }
        }
    }

    /// Slow start ending right after the warming server's pick: what is left of its (long) stride
    /// shrinks with it, so it is not picked again at once, nor kept waiting.
    @Test func aWeightChangeRescalesTheRestOfTheStride() {
        var b = Balancer(algorithm: .roundRobin, servers: schedServers("a", "b"))
        b.setWeightFactor(0, 0.1)
        var seq = b.schedSequence(12)
        #expect(seq.filter { $0 == 0 }.count == 1, "\(seq)")
        while seq.last != 0 { seq = b.schedSequence(1) }  // a was just picked
        b.setWeightFactor(0, 1.0)
        #expect(b.schedSequence(6) == [1, 0, 1, 0, 1, 0])
        // The same in panic (every server down, picks among all by their turns).
        b.setWeightFactor(0, 0.1)
        b.setUsable(0, false)
        b.setUsable(1, false)
        seq = b.schedSequence(22)
        #expect(seq.filter { $0 == 0 }.count == 2, "\(seq)")
        while seq.last != 0 { seq = b.schedSequence(1) }
        b.setWeightFactor(0, 1.0)
        #expect(b.schedSequence(6) == [1, 0, 1, 0, 1, 0])
    }

    /// A reload builds a new Balancer: with the turns carried over, the same servers go on with
    /// exactly the sequence the old Balancer would have given, a server down included.
    @Test func carriedTurnsContinueTheSequence() {
        let specs = schedServers("a", "b", "c", "d", weights: [3, 1, 2, 1])
        var old = Balancer(algorithm: .roundRobin, servers: specs)
        _ = old.schedSequence(9)
        old.setUsable(2, false)
        _ = old.schedSequence(4)
        old.setWeightFactor(3, 0.5)
        var reference = old
        var new = Balancer(algorithm: .roundRobin, servers: specs)
        new.carryTurns(from: old, pairs: (0..<4).map { (old: $0, new: $0) })
        new.setUsable(2, false)  // the health state is applied after, as a reload does
        new.setWeightFactor(3, 0.5)
        #expect(new.schedSequence(40) == reference.schedSequence(40))
        new.setUsable(2, true)
        reference.setUsable(2, true)
        #expect(new.schedSequence(40) == reference.schedSequence(40))
    }

    /// Servers reordered and one added by a reload: the rotation goes on by name (b and c, then
    /// a, just picked, last), and the new server joins it at its starting place (a quarter of a
    /// stride in, before b's third).
    @Test func carriedTurnsFollowTheServersByName() {
        var old = Balancer(algorithm: .roundRobin, servers: schedServers("a", "b", "c"))
        #expect(old.schedSequence(4) == [0, 1, 2, 0])
        var new = Balancer(algorithm: .roundRobin, servers: schedServers("d", "c", "b", "a"))
        new.carryTurns(from: old, pairs: [(old: 0, new: 3), (old: 1, new: 2), (old: 2, new: 1)])
        let names = new.schedSequence(12).map { new.servers[$0!].name }.joined()
        #expect(names == "dbcadbcadbca")
        // Without the carry the new Balancer starts with its first server.
        var fresh = Balancer(algorithm: .roundRobin, servers: schedServers("d", "c", "b", "a"))
        #expect(fresh.schedSequence(1) == [0])
    }

    /// A server down for a long time does not get a run of picks when panic starts: every server
    /// resumes its turn.
    @Test func panicAfterALongOutageRotates() {
        var b = Balancer(algorithm: .roundRobin, servers: schedServers("a", "b", "c"))
        b.setUsable(0, false)
        _ = b.schedSequence(3000)
        b.setUsable(1, false)
        b.setUsable(2, false)
        let seq = b.schedSequence(30)
        #expect((0..<3).map { s in seq.filter { $0 == s }.count } == [10, 10, 10], "\(seq)")
        #expect(zip(seq, seq.dropFirst()).allSatisfy { $0 != $1 }, "\(seq)")
        // Out of panic: b back, then a and c; each again a third.
        b.setUsable(1, true)
        #expect(b.schedSequence(3) == [1, 1, 1])
        b.setUsable(0, true)
        b.setUsable(2, true)
        let after = b.schedSequence(30)
        #expect((0..<3).map { s in after.filter { $0 == s }.count } == [10, 10, 10], "\(after)")
    }

    /// A server that goes and comes back between two picks (a flapping health check) keeps its
    /// turn exactly: the sequence is the one without the flaps, wherever it stands in the list.
    @Test(arguments: [0, 3])
    func aFlappingServerKeepsItsShare(_ flapping: Int) {
        var steady = Balancer(algorithm: .roundRobin, servers: schedServers("a", "b", "c", "d"))
        var flappy = Balancer(algorithm: .roundRobin, servers: schedServers("a", "b", "c", "d"))
        var seq: [Int?] = []
        for i in 0..<400 {
            if i % 2 == 0 {
                flappy.setUsable(flapping, false)
                flappy.setUsable(flapping, true)
            }
            seq += flappy.schedSequence(1)
        }
        #expect(seq == steady.schedSequence(400))
        // Down for one pick in every five: it misses those picks, no more.
        var down = Balancer(algorithm: .roundRobin, servers: schedServers("a", "b", "c", "d"))
        var counts = [0, 0, 0, 0]
        for i in 0..<4000 {
            down.setUsable(flapping, i % 5 != 0)
            if let s = down.schedSequence(1).first ?? nil { counts[s] += 1 }
        }
        #expect(counts[flapping] >= 800 && counts[flapping] <= 1000, "\(counts)")
    }
}

/// The indexed heaps of least_conn and round_robin against a linear scan, under random insertions,
/// removals, key changes and tried sets.
@Suite struct ServerHeapsTests {
    struct Keys: ServerOrder {
        var key: [Int]
        func precedes(_ a: Int, _ b: Int, pool: ServerPool) -> Bool {
            key[a] != key[b] ? key[a] < key[b] : a < b
        }
    }

    @Test(arguments: [1, 2, 7, 40, 200])
    func bestIsTheLinearScansAnswer(_ n: Int) {
        var random = SchedTestRandom(seed: UInt64(n))
        let specs = (0..<n).map { BackendSpec(name: "s\($0)", backup: random.chance(30)) }
        let pool = ServerPool(specs)
        var heaps = TieredServerHeaps(pool: pool)
        var keys = Keys(key: (0..<n).map { _ in random.below(50) })
        var inHeap = Array(repeating: false, count: n)
        for step in 0..<4000 {
            let s = random.below(n)
            switch random.below(5) {
            case 0:
                if !inHeap[s] { heaps.insert(s, by: keys, pool: pool); inHeap[s] = true }
            case 1:
                heaps.remove(s, by: keys, pool: pool)
                inHeap[s] = false
            case 2:
                keys.key[s] += 1 + random.below(10)
                heaps.keyIncreased(s, by: keys, pool: pool)
            case 3:
                keys.key[s] -= 1 + random.below(10)
                heaps.keyDecreased(s, by: keys, pool: pool)
            default:
                keys.key[s] = random.below(60)
                heaps.keyChanged(s, by: keys, pool: pool)
            }
            #expect(heaps.contains(s) == inHeap[s])
            var tried = ServerSet()
            for _ in 0..<random.below(4) { tried.insert(random.below(n)) }
            for tier in [ServerTier.primary, .backup] {
                let expected = pool.members(tier).filter { inHeap[$0] && !tried.contains($0) }
                    .min { keys.precedes($0, $1, pool: pool) }
                let got = heaps.best(tier, excluding: tried, by: keys, pool: pool)
                if got != expected {
                    Issue.record("step \(step), \(tier): \(String(describing: got)), scan says \(String(describing: expected))")
                    return
                }
            }
        }
        // After changing every key at once, reorder restores both heaps.
        for s in 0..<n { keys.key[s] = random.below(1000) }
        heaps.reorder(.primary, by: keys, pool: pool)
        heaps.reorder(.backup, by: keys, pool: pool)
        for tier in [ServerTier.primary, .backup] {
            let expected = pool.members(tier).filter { inHeap[$0] }.min { keys.precedes($0, $1, pool: pool) }
            #expect(heaps.best(tier, excluding: ServerSet(), by: keys, pool: pool) == expected)
        }
    }
}
