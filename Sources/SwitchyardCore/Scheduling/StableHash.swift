// Hashes that give the same value in every process, on every machine, in every Swift version.
//
// Swift's `Hasher` is randomly seeded per process, so it must never decide anything that two
// replicas (or one replica before and after a restart) have to agree on: which server a client
// sticks to under ip_hash, or where a server sits in the Maglev table. These are FNV-1a 64 followed
// by MurmurHash3's 64-bit finaliser, so that every input bit reaches the low bits used by `% M`.

@usableFromInline
enum StableHash {
    /// FNV-1a 64 offset basis.
    @usableFromInline static var fnvOffsetBasis: UInt64 { 0xcbf2_9ce4_8422_2325 }

    /// One FNV-1a 64 step: xor the byte in, multiply by the FNV prime 2^40 + 2^8 + 0xb3.
    @inlinable @inline(__always)
    static func fnv1aStep(_ hash: UInt64, _ byte: UInt8) -> UInt64 {
        (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
    }

    /// FNV-1a 64 over `bytes`, starting from `basis` (the standard offset basis unless seeded).
    @inlinable
    static func fnv1a<S: Sequence>(_ bytes: S, basis: UInt64 = fnvOffsetBasis) -> UInt64 where S.Element == UInt8 {
        var hash = basis
        for byte in bytes { hash = fnv1aStep(hash, byte) }
        return hash
    }

    /// MurmurHash3's fmix64: a bijective avalanche of all 64 bits.
    @inlinable @inline(__always)
    static func finalize(_ x: UInt64) -> UInt64 {
        var k = x
        k ^= k >> 33
        k &*= 0xff51_afd7_ed55_8ccd
        k ^= k >> 33
        k &*= 0xc4ce_b9fe_1a85_ec53
        k ^= k >> 33
        return k
    }

    /// A stable 64-bit hash of a string's UTF-8 bytes. Different seeds give independent-looking hashes
    /// (the seed is folded into the FNV basis, so the whole byte stream is hashed differently).
    static func hash(_ string: String, seed: UInt64 = 0) -> UInt64 {
        finalize(fnv1a(string.utf8, basis: fnvOffsetBasis ^ seed))
    }
}
