// round_robin: nginx's smooth weighted round robin (ngx_http_upstream_get_peer).
//
// Every pick, each candidate's running weight grows by its effective weight; the largest wins
// (first in configuration order on a tie) and drops by the total. Weights 5/1/1 give
// a a b a c a a: each server's picks are spread out rather than bunched. O(n) per pick over the
// tier, as in nginx, with no allocation; connections taken/released do not matter.

struct SmoothRoundRobin: SchedulingAlgorithm {
    /// nginx's `current_weight`, per server.
    private var current: [Int]

    init(pool: ServerPool) {
        current = Array(repeating: 0, count: pool.count)
    }

    mutating func pick(from tier: ServerTier, panic: Bool, client: ClientKey, excluding tried: ServerSet, pool: ServerPool) -> Int? {
        var best = -1
        var total = 0
        for server in pool.members(tier) where pool.isCandidate(server, panic: panic) && !tried.contains(server) {
            let weight = pool.effectiveWeight[server]
            current[server] += weight
            total += weight
            if best < 0 || current[server] > current[best] { best = server }
        }
        guard best >= 0 else { return nil }
        current[best] -= total
        return best
    }

    mutating func connectionTaken(_ server: Int, pool: ServerPool) {}

    mutating func connectionReleased(_ server: Int, pool: ServerPool) {}

    mutating func serverStateChanged(_ server: Int, _ change: ServerStateChange, pool: ServerPool) {
        // A server coming back (or leaving) starts from a neutral running weight, so it neither
        // bursts nor starves because of credit accumulated in another configuration of the tier.
        if change == .usability { current[server] = 0 }
    }
}
