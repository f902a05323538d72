// ip_hash: Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
// Load Balancer", NSDI 2016, §3.4), weighted.
//
// A lookup table of M entries (M prime, default 65537) maps `client.hash mod M` to a server. Each
// server has a permutation of the slots derived from its NAME only: offset = h1(name) mod M,
// skip = h2(name) mod (M − 1) + 1, slot_j = (offset + j × skip) mod M. The table is filled in rounds,
// servers in name order: each round every server adds its weight to its credit and, while the credit
// reaches the largest weight, pays that and claims its next preferred free slot. Shares are thus
// proportional to weights, and when a server leaves, mostly only its own slots change hands.
//
// Because only names and weights enter the build (in name order), replicas with the same server
// list build identical tables whatever the configuration order, in every process.
//
// One table per tier, built over that tier's candidates (usable servers, or all in panic mode) and
// rebuilt lazily, on the next pick, when a usable flag in the tier changed (per-tier generation
// counter). Building reuses its buffers (no allocation after the first) and costs O(M log M)
// expected slot probes. Lookup is O(1); a tried server is skipped by walking forward in the table.
// Slow-start factors are ignored: changing shares gradually would remap clients back and forth.

/// Identifies a client for ip_hash: its IP address bytes only (never the port).
public struct ClientKey: Hashable, Sendable {
    /// The first 16 address bytes, big-endian packed; bytes 0..<8 in `high`.
    @usableFromInline let high: UInt64
    @usableFromInline let low: UInt64
    @usableFromInline let length: Int
    /// Stable across processes and machines: FNV-1a 64 of the address bytes, then MurmurHash3's
    /// fmix64 finaliser. An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is the IPv4 address a.b.c.d,
    /// so a client keeps its server whether it arrives on an IPv4 or a dual-stack socket.
    public let hash: UInt64

    /// 4 (IPv4) or 16 (IPv6) bytes, network order. Other lengths are accepted and hashed as given.
    @inlinable
    public init<C: Collection>(addressBytes: C) where C.Element == UInt8 {
        var high: UInt64 = 0
        var low: UInt64 = 0
        var length = 0
        var hash = StableHash.fnvOffsetBasis
        for byte in addressBytes {
            if length < 8 {
                high = high << 8 | UInt64(byte)
            } else if length < 16 {
                low = low << 8 | UInt64(byte)
            }
            hash = StableHash.fnv1aStep(hash, byte)
            length += 1
        }
        if length == 16 && high == 0 && low >> 32 == 0xffff {
            // ::ffff:a.b.c.d → a.b.c.d, packed and hashed exactly as the 4-byte form.
            high = low & 0xffff_ffff
            low = 0
            length = 4
            hash = StableHash.fnvOffsetBasis
            hash = StableHash.fnv1aStep(hash, UInt8(truncatingIfNeeded: high >> 24))
            hash = StableHash.fnv1aStep(hash, UInt8(truncatingIfNeeded: high >> 16))
            hash = StableHash.fnv1aStep(hash, UInt8(truncatingIfNeeded: high >> 8))
            hash = StableHash.fnv1aStep(hash, UInt8(truncatingIfNeeded: high))
        }
        self.high = high
        self.low = low
        self.length = length
        self.hash = StableHash.finalize(hash)
    }

    /// No address (e.g. a Unix-socket client): all such clients share one server under ip_hash.
    public static let none = ClientKey(addressBytes: EmptyCollection<UInt8>())
}

struct MaglevHash: SchedulingAlgorithm {
    /// Seeds of the two name hashes (h1: the standard FNV basis; h2: the golden-ratio constant).
    static let offsetSeed: UInt64 = 0
    static let skipSeed: UInt64 = 0x9e37_79b9_7f4a_7c15

    private struct Table {
        /// Server index per slot, or -1 while building. Empty until first built.
        var entries: [Int32] = []
        /// The tier generation and mode it was built for; `nil` = never built.
        var builtFor: (generation: UInt64, panic: Bool)? = nil
        /// Servers that own at least one slot.
        var holders = 0
    }

    let tableSize: Int
    /// Per server, from its name.
    private let offset: [Int]
    private let skip: [Int]
    /// Server indices of each tier sorted by name (then weight, then index for duplicate names).
    private let order: [[Int]]
    /// Bumped whenever a usable flag changes in the tier.
    private var generation: [UInt64] = [0, 0]
    private var tables: [Table] = [Table(), Table()]
    /// Build scratch, per server: next permutation position, credit, slots owned in its tier's table.
    private var cursor: [Int]
    private var credit: [Int]
    private var owned: [Int]
    /// Build scratch: the tier's candidates in name order.
    private var members: [Int] = []

    init(pool: ServerPool, tableSize requested: Int) {
        let m = Self.prime(atLeast: Swift.max(requested, 3))
        tableSize = m
        offset = pool.specs.map { Int(StableHash.hash($0.name, seed: Self.offsetSeed) % UInt64(m)) }
        skip = pool.specs.map { Int(StableHash.hash($0.name, seed: Self.skipSeed) % UInt64(m - 1)) + 1 }
        let byName: (Int, Int) -> Bool = { a, b in
            let (x, y) = (pool.specs[a], pool.specs[b])
            if x.name != y.name { return x.name.utf8.lexicographicallyPrecedes(y.name.utf8) }
            if pool.weight[a] != pool.weight[b] { return pool.weight[a] < pool.weight[b] }
            return a < b
        }
        order = [pool.primaries.sorted(by: byName), pool.backups.sorted(by: byName)]
        cursor = Array(repeating: 0, count: pool.count)
        credit = Array(repeating: 0, count: pool.count)
        owned = Array(repeating: 0, count: pool.count)
        members.reserveCapacity(pool.count)
    }

    static func prime(atLeast n: Int) -> Int {
        func isPrime(_ x: Int) -> Bool {
            if x < 2 { return false }
            if x % 2 == 0 { return x == 2 }
            var d = 3
            while d * d <= x {
                if x % d == 0 { return false }
                d += 2
            }
            return true
        }
        var candidate = n
        while !isPrime(candidate) { candidate += 1 }
        return candidate
    }

    // MARK: hooks

    mutating func pick(from tier: ServerTier, panic: Bool, client: ClientKey, excluding tried: ServerSet, pool: ServerPool) -> Int? {
        let t = tier.rawValue
        if let built = tables[t].builtFor, built.generation == generation[t], built.panic == panic {
            // up to date
        } else {
            build(t, panic: panic, pool: pool)
        }
        guard tables[t].holders > 0 else { return nil }
        var slot = Int(client.hash % UInt64(tableSize))
        let server = Int(tables[t].entries[slot])
        if tried.isEmpty || !tried.contains(server) { return server }

        // Failover retry: walk forward to the next slot owned by an untried server, unless every
        // slot owner has been tried already (then the walk would cover the whole table for nothing).
        var triedHolders = 0
        tried.forEach { i in
            if i < pool.count && pool.tier[i] == tier && owned[i] > 0 && pool.isCandidate(i, panic: panic) {
                triedHolders += 1
            }
        }
        if triedHolders < tables[t].holders {
            for _ in 1..<tableSize {
                slot += 1
                if slot == tableSize { slot = 0 }
                let next = Int(tables[t].entries[slot])
                if !tried.contains(next) { return next }
            }
        }
        // Only candidates that own no slot at all (extreme weight ratios) can be left.
        for candidate in order[t] where pool.isCandidate(candidate, panic: panic) && !tried.contains(candidate) {
            return candidate
        }
        return nil
    }

    mutating func connectionTaken(_ server: Int, pool: ServerPool) {}

    mutating func connectionReleased(_ server: Int, pool: ServerPool) {}

    mutating func serverStateChanged(_ server: Int, _ change: ServerStateChange, pool: ServerPool) {
        if change == .usability { generation[pool.tier[server].rawValue] &+= 1 }
    }

    // MARK: population

    private mutating func build(_ t: Int, panic: Bool, pool: ServerPool) {
        let m = tableSize
        members.removeAll(keepingCapacity: true)
        var maxWeight = 0
        for server in order[t] {
            owned[server] = 0
            guard pool.isCandidate(server, panic: panic) else { continue }
            members.append(server)
            cursor[server] = offset[server]
            credit[server] = 0
            maxWeight = Swift.max(maxWeight, pool.weight[server])
        }
        if tables[t].entries.count != m {
            tables[t].entries = Array(repeating: -1, count: m)
        } else {
            for i in 0..<m { tables[t].entries[i] = -1 }
        }
        tables[t].builtFor = (generation[t], panic)
        tables[t].holders = 0
        guard !members.isEmpty else { return }

        var filled = 0
        fill: while true {
            for server in members {
                credit[server] += pool.weight[server]
                guard credit[server] >= maxWeight else { continue }
                credit[server] -= maxWeight
                // Claim this server's next preferred slot that is still free.
                let step = skip[server]
                var c = cursor[server]
                while tables[t].entries[c] >= 0 {
                    c += step
                    if c >= m { c -= m }
                }
                tables[t].entries[c] = Int32(truncatingIfNeeded: server)
                c += step
                if c >= m { c -= m }
                cursor[server] = c
                if owned[server] == 0 { tables[t].holders += 1 }
                owned[server] += 1
                filled += 1
                if filled == m { break fill }
            }
        }
    }
}
