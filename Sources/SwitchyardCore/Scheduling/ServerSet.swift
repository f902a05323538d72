/// A small set of server indices, for the servers already tried for one client (failover retries).
///
/// Indices 0..<128 live in two bitmask words, so the common case never touches the heap; larger
/// indices go to a sorted spill array, which allocates only when one is actually inserted.
/// Negative indices are never server indices and are ignored.
public struct ServerSet: Sendable, Equatable, ExpressibleByArrayLiteral {
    @usableFromInline var low: UInt64 = 0   // 0..<64
    @usableFromInline var high: UInt64 = 0  // 64..<128
    /// Indices ≥ 128, sorted ascending, without duplicates (so that `==` is set equality).
    @usableFromInline var spill: [Int] = []

    @inlinable
    public init() {}

    @inlinable
    public init(arrayLiteral elements: Int...) {
        for element in elements { insert(element) }
    }

    @inlinable
    public mutating func insert(_ i: Int) {
        if i < 0 { return }
        if i < 64 {
            low |= 1 &<< UInt64(i)
        } else if i < 128 {
            high |= 1 &<< UInt64(i - 64)
        } else {
            insertSpill(i)
        }
    }

    @usableFromInline
    mutating func insertSpill(_ i: Int) {
        var lo = 0
        var hi = spill.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if spill[mid] < i { lo = mid + 1 } else { hi = mid }
        }
        if lo < spill.count && spill[lo] == i { return }
        spill.insert(i, at: lo)
    }

    @inlinable
    public func contains(_ i: Int) -> Bool {
        if i < 0 { return false }
        if i < 64 { return low & (1 &<< UInt64(i)) != 0 }
        if i < 128 { return high & (1 &<< UInt64(i - 64)) != 0 }
        return !spill.isEmpty && spill.contains(i)
    }

    @inlinable
    public var isEmpty: Bool { low == 0 && high == 0 && spill.isEmpty }

    /// Number of indices in the set.
    public var count: Int { low.nonzeroBitCount + high.nonzeroBitCount + spill.count }

    /// Calls `body` with every index in ascending order (no allocation).
    func forEach(_ body: (Int) -> Void) {
        var rest = low
        while rest != 0 {
            body(rest.trailingZeroBitCount)
            rest &= rest &- 1
        }
        rest = high
        while rest != 0 {
            body(64 + rest.trailingZeroBitCount)
            rest &= rest &- 1
        }
        for i in spill { body(i) }
    }
}
