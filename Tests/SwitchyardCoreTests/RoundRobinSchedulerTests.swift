import Testing
@testable import SwitchyardCore

@Suite struct RoundRobinSchedulerTests {
    @Test func smoothWeightedSequence() {
        var b = Balancer(algorithm: .roundRobin, servers: schedServers("a", "b", "c", weights: [5, 1, 1]))
        let names = b.schedSequence(14).map { b.servers[$0!].name }
        #expect(names.joined() == "aabacaa" + "aabacaa")
    }

    @Test func heldConnectionsDoNotChangeTheSequence() {
        var b = Balancer(algorithm: .roundRobin, servers: schedServers("a", "b", "c", weights: [5, 1, 1]))
        var names = ""
        for _ in 0..<7 { names += b.servers[b.acquire(client: .none)!].name }
        #expect(names == "aabacaa")
    }

    @Test func equalWeightsRotate() {
        var b = Balancer(algorithm: .roundRobin, servers: schedServers("a", "b", "c"))
        #expect(b.schedSequence(7) == [0, 1, 2, 0, 1, 2, 0])
    }

    @Test func unusableServersAreSkipped() {
        var b = Balancer(algorithm: .roundRobin, servers: schedServers("a", "b", "c"))
        b.setUsable(1, false)
        #expect(b.schedSequence(4) == [0, 2, 0, 2])
        b.setUsable(1, true)
        let again = b.schedSequence(30)
        #expect((0..<3).map { s in again.filter { $0 == s }.count } == [10, 10, 10])
    }

    @Test func weightsAreHonouredExactlyOverAPeriod() {
        var b = Balancer(algorithm: .roundRobin, servers: schedServers("a", "b", "c", weights: [1, 2, 3]))
        let seq = b.schedSequence(600)
        #expect((0..<3).map { s in seq.filter { $0 == s }.count } == [100, 200, 300])
    }

    @Test func weightFactorScalesTheShare() {
        var b = Balancer(algorithm: .roundRobin, servers: schedServers("a", "b"))
        b.setWeightFactor(1, 0.5)
        let seq = b.schedSequence(300)
        #expect((0..<2).map { s in seq.filter { $0 == s }.count } == [200, 100])
        // Half weight is spread out, never two in a row.
        for i in 1..<seq.count { #expect(!(seq[i] == 1 && seq[i - 1] == 1)) }
    }
}
