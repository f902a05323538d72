// Scheduler micro-benchmark: the cost of one pick (acquire + release) of the pure `Balancer`, and
// the Maglev (ip_hash) lookup-table build time, measured through the public API only.
//
//   swift run -c release switchyard-bench [--quick]
//
// Pick cost: a steady state with W connections outstanding (W = 4 × servers, at least 64): each
// operation releases the oldest outstanding connection and acquires one for the next client
// (clients cycle through 4096 distinct IPv4 addresses). That keeps least_conn's heap non-trivial
// and spreads ip_hash over its whole table. Reported: the median of 7 timed batches, ns per
// (acquire + release).
//
// Maglev build: the table is rebuilt lazily on the first pick after a usable flag changed, so one
// build = setUsable(s, false/true) + acquire + release; the toggle and the pick are negligible next
// to filling 65537 slots. Reported: the median of the timed builds, microseconds. "cold" adds the
// Balancer's construction (first table allocation) to the first build.
//
// Every result feeds a checksum that is printed, so the optimiser cannot delete the work.

import SwitchyardCore
#if canImport(Glibc)
import Glibc
#endif

@inline(never)
func nowNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

func median(_ values: [Double]) -> Double {
    let s = values.sorted()
    if s.isEmpty { return .nan }
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func fmt(_ value: Double, _ decimals: Int) -> String {
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let rounded = (value * scale).rounded() / scale
    var text = "\(rounded)"
    if decimals == 0, text.hasSuffix(".0") { text.removeLast(2) }
    // Pad missing decimals ("1.5" → "1.50").
    if decimals > 0, let dot = text.firstIndex(of: ".") {
        let have = text.distance(from: dot, to: text.endIndex) - 1
        if have < decimals { text += String(repeating: "0", count: decimals - have) }
    }
    return text
}

func pad(_ s: String, _ width: Int, left: Bool = false) -> String {
    let n = s.count
    if n >= width { return s }
    let fill = String(repeating: " ", count: width - n)
    return left ? s + fill : fill + s
}

let arguments = CommandLine.arguments.dropFirst()
let quick = arguments.contains("--quick")
if arguments.contains("--help") || arguments.contains("-h") {
    print("usage: switchyard-bench [--quick]   (pick cost and Maglev build time of the schedulers)")
    exit(0)
}

struct Bench {
    let quick: Bool
    var checksum: UInt64 = 0

    /// 4096 distinct client addresses 10.x.y.z.
    let clients: [ClientKey] = (0..<4096).map { i in
        ClientKey(addressBytes: [10, UInt8(truncatingIfNeeded: i >> 16), UInt8(truncatingIfNeeded: i >> 8), UInt8(truncatingIfNeeded: i)])
    }

    static func servers(_ n: Int) -> [BackendSpec] {
        (0..<n).map { BackendSpec(name: "server-\($0)", weight: 1 + $0 % 3) }
    }

    /// ns per (acquire + release) in steady state.
    mutating func pickCost(_ algorithm: BalanceAlgorithm, servers n: Int) -> Double {
        var balancer = Balancer(algorithm: algorithm, servers: Self.servers(n))
        let window = max(64, 4 * n)
        var outstanding = [Int](repeating: -1, count: window)
        var head = 0
        var client = 0
        var sum: UInt64 = 0
        // Fill the window (and build ip_hash's table) before timing.
        for i in 0..<window {
            let s = balancer.acquire(client: clients[client & 4095]) ?? -1
            client &+= 1
            outstanding[i] = s
            sum &+= UInt64(bitPattern: Int64(s))
        }
        let opsPerBatch = quick ? 20_000 : 200_000
        let batches = quick ? 3 : 7
        var results: [Double] = []
        for batch in 0..<(batches + 1) { // batch 0 is a warm-up
            let start = nowNanos()
            for _ in 0..<opsPerBatch {
                balancer.release(outstanding[head])
                let s = balancer.acquire(client: clients[client & 4095]) ?? -1
                client &+= 1
                outstanding[head] = s
                head += 1
                if head == window { head = 0 }
                sum &+= UInt64(bitPattern: Int64(s))
            }
            let elapsed = nowNanos() - start
            if batch > 0 { results.append(Double(elapsed) / Double(opsPerBatch)) }
        }
        checksum &+= sum
        return median(results)
    }

    /// Microseconds per Maglev table build (warm: buffers reused), and the cold first build including
    /// the Balancer's construction.
    mutating func maglevBuild(servers n: Int) -> (warm: Double, cold: Double) {
        let specs = Self.servers(n)
        var sum: UInt64 = 0
        var colds: [Double] = []
        for _ in 0..<(quick ? 2 : 5) {
            let start = nowNanos()
            var b = Balancer(algorithm: .ipHash, servers: specs)
            let s = b.acquire(client: clients[7]) ?? -1
            let elapsed = nowNanos() - start
            b.release(s)
            sum &+= UInt64(bitPattern: Int64(s))
            colds.append(Double(elapsed) / 1000)
        }
        var balancer = Balancer(algorithm: .ipHash, servers: specs)
        if let s = balancer.acquire(client: clients[0]) { balancer.release(s) }
        var warms: [Double] = []
        let builds = quick ? 6 : 40
        for i in 0..<builds {
            let victim = (i / 2) % n
            let start = nowNanos()
            balancer.setUsable(victim, i % 2 == 1) // down on even i, back up on odd i
            let s = balancer.acquire(client: clients[i & 4095]) ?? -1
            let elapsed = nowNanos() - start
            balancer.release(s)
            sum &+= UInt64(bitPattern: Int64(s))
            warms.append(Double(elapsed) / 1000)
        }
        checksum &+= sum
        return (median(warms), median(colds))
    }
}

var bench = Bench(quick: quick)

let algorithms: [(BalanceAlgorithm, String)] = [(.leastConn, "least_conn"), (.ipHash, "ip_hash"), (.roundRobin, "round_robin")]
let sizes = [10, 100, 1000]

print("Scheduler pick cost: ns per acquire+release (steady state, 4×servers outstanding; median of \(quick ? 3 : 7) batches)")
print("")
print("| algorithm   | " + sizes.map { pad("\($0) servers", 12) }.joined(separator: " | ") + " |")
print("|-------------|" + sizes.map { _ in "-------------:" }.joined(separator: "|") + "|")
for (algorithm, name) in algorithms {
    let cells = sizes.map { pad(fmt(bench.pickCost(algorithm, servers: $0), 1), 12) }
    print("| \(pad(name, 11, left: true)) | " + cells.joined(separator: " | ") + " |")
}
print("")
print("Maglev (ip_hash) table build, 65537 slots: microseconds per build")
print("")
print("| servers | rebuild (warm) | first build (cold, incl. init) |")
print("|--------:|---------------:|-------------------------------:|")
for n in [100, 1000] {
    let r = bench.maglevBuild(servers: n)
    print("| \(pad("\(n)", 7)) | \(pad(fmt(r.warm, 0), 14)) | \(pad(fmt(r.cold, 0), 30)) |")
}
print("")
print("checksum \(bench.checksum)")
