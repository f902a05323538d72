// A Prometheus-style histogram value: fixed upper bounds, a count per bucket, the sum and the count.

public struct Histogram: Equatable, Sendable {
    /// Finite, strictly increasing upper bounds (inclusive, `le`). The implicit last bucket is +Inf.
    public let upperBounds: [Double]
    /// Observations per bucket (not cumulative): `upperBounds.count + 1` entries, the last for +Inf.
    public private(set) var bucketCounts: [UInt64]
    /// Sum of the observed values.
    public private(set) var sum: Double

    /// Latency buckets in seconds (the Prometheus client default).
    public static let defaultSecondsBounds: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    /// An empty histogram. `upperBounds` is sorted, deduplicated and stripped of non-finite values
    /// (+Inf is always the implicit last bucket).
    public init(upperBounds: [Double]) {
        var bounds: [Double] = []
        for b in upperBounds.filter(\.isFinite).sorted() where bounds.last != b {
            bounds.append(b)
        }
        self.upperBounds = bounds
        self.bucketCounts = Array(repeating: 0, count: bounds.count + 1)
        self.sum = 0
    }

    /// Rebuilds a histogram from counters kept elsewhere (e.g. per worker). `bucketCounts` are per
    /// bucket, not cumulative, with one more entry than `upperBounds` (the +Inf bucket); nil when the
    /// bounds are not finite and strictly increasing or the counts do not fit them.
    public init?(upperBounds: [Double], bucketCounts: [UInt64], sum: Double) {
        guard bucketCounts.count == upperBounds.count + 1,
              upperBounds.allSatisfy(\.isFinite),
              zip(upperBounds, upperBounds.dropFirst()).allSatisfy({ $0 < $1 })
        else { return nil }
        self.upperBounds = upperBounds
        self.bucketCounts = bucketCounts
        self.sum = sum
    }

    /// Total number of observations.
    public var count: UInt64 { bucketCounts.reduce(0, &+) }

    /// Cumulative counts for `le = upperBounds[i]`, then for `le = +Inf` (equal to `count`).
    public var cumulativeCounts: [UInt64] {
        var running: UInt64 = 0
        return bucketCounts.map { c in
            running &+= c
            return running
        }
    }

    /// Adds one observation to the first bucket whose bound is >= `value`. NaN is ignored (it would
    /// poison the sum forever).
    public mutating func observe(_ value: Double) {
        guard !value.isNaN else { return }
        var lo = 0
        var hi = upperBounds.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if upperBounds[mid] >= value { hi = mid } else { lo = mid + 1 }
        }
        bucketCounts[lo] &+= 1
        sum += value
    }

    /// Adds `other`'s observations; false (and nothing changes) when the bounds differ.
    @discardableResult
    public mutating func merge(_ other: Histogram) -> Bool {
        guard other.upperBounds == upperBounds else { return false }
        for i in bucketCounts.indices { bucketCounts[i] &+= other.bucketCounts[i] }
        sum += other.sum
        return true
    }
}
