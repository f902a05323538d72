// Deterministic payloads and a streaming checksum, so both ends of a transfer can agree on what
// the bytes should be without keeping them.

/// An endless, deterministic byte stream: byte `i` of the stream with seed `s` is byte `i % 8`
/// (little-endian) of `splitmix64(s, i / 8)`. Stateless per word, so any chunking gives the same bytes.
struct PayloadStream: Sendable {
    let seed: UInt64
    private(set) var position: Int = 0

    init(seed: UInt64) { self.seed = seed }

    static func word(seed: UInt64, index: Int) -> UInt64 {
        var z = seed &+ (UInt64(truncatingIfNeeded: index) &+ 1) &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The next `count` bytes of the stream.
    mutating func next(_ count: Int) -> [UInt8] {
        guard count > 0 else { return [] }
        var bytes = [UInt8](repeating: 0, count: count)
        bytes.withUnsafeMutableBytes { raw in
            var i = 0
            var pos = position
            // Leading bytes up to a word boundary.
            while i < count && pos % 8 != 0 {
                raw[i] = UInt8(truncatingIfNeeded: PayloadStream.word(seed: seed, index: pos / 8) >> (8 * UInt64(pos % 8)))
                i += 1
                pos += 1
            }
            // Whole words.
            while count - i >= 8 {
                raw.storeBytes(of: PayloadStream.word(seed: seed, index: pos / 8).littleEndian, toByteOffset: i, as: UInt64.self)
                i += 8
                pos += 8
            }
            // Trailing bytes.
            while i < count {
                raw[i] = UInt8(truncatingIfNeeded: PayloadStream.word(seed: seed, index: pos / 8) >> (8 * UInt64(pos % 8)))
                i += 1
                pos += 1
            }
        }
        position += count
        return bytes
    }

    /// The first `count` bytes of the stream with `seed`.
    static func bytes(seed: UInt64, count: Int) -> [UInt8] {
        var stream = PayloadStream(seed: seed)
        return stream.next(count)
    }

    /// Checksum of the first `count` bytes of the stream with `seed`.
    static func checksum(seed: UInt64, count: Int) -> UInt64 {
        var stream = PayloadStream(seed: seed)
        var sum = Checksum()
        var left = count
        while left > 0 {
            let chunk = stream.next(min(left, 1 << 20))
            sum.update(chunk)
            left -= chunk.count
        }
        return sum.value
    }
}

/// A streaming 64-bit checksum over 8-byte little-endian words (xxhash-like rounds, murmur finaliser).
/// Chunking-independent: feeding the same bytes in any split gives the same value.
struct Checksum: Sendable, Equatable {
    private var state: UInt64 = 0xCBF2_9CE4_8422_2325
    private var pending: UInt64 = 0
    private var pendingCount = 0
    private(set) var length = 0

    init() {}

    private mutating func mix(_ word: UInt64) {
        let k = word &* 0x87C3_7B91_1142_53D5
        let x = state ^ k
        state = ((x << 31) | (x >> 33)) &* 0x4CF5_AD43_2745_937F
    }

    mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    mutating func update(_ buffer: UnsafeRawBufferPointer) {
        let n = buffer.count
        var i = 0
        length += n
        // Complete a word left over from the previous call.
        while pendingCount != 0 && i < n {
            pending |= UInt64(buffer[i]) << (8 * UInt64(pendingCount))
            pendingCount += 1
            i += 1
            if pendingCount == 8 {
                mix(pending)
                pending = 0
                pendingCount = 0
            }
        }
        while n - i >= 8 {
            mix(UInt64(littleEndian: buffer.loadUnaligned(fromByteOffset: i, as: UInt64.self)))
            i += 8
        }
        while i < n {
            pending |= UInt64(buffer[i]) << (8 * UInt64(pendingCount))
            pendingCount += 1
            i += 1
        }
    }

    var value: UInt64 {
        var copy = self
        if copy.pendingCount > 0 {
            copy.mix(copy.pending ^ (UInt64(copy.pendingCount) << 60))
        }
        var h = copy.state ^ UInt64(truncatingIfNeeded: length)
        h ^= h >> 33
        h = h &* 0xFF51_AFD7_ED55_8CCD
        h ^= h >> 33
        h = h &* 0xC4CE_B9FE_1A85_EC53
        h ^= h >> 33
        return h
    }

    static func of(_ bytes: [UInt8]) -> UInt64 {
        var sum = Checksum()
        sum.update(bytes)
        return sum.value
    }
}
