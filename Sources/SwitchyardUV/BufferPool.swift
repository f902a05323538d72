/// Fixed-size I/O buffers recycled through a free list. One pool per event loop, used only on that
/// loop's thread, so it needs no lock.
///
/// The relay reads into a pooled buffer and hands that same buffer to the write on the other socket;
/// the buffer comes back here when the write completes (or at once when `uv_try_write` took it all).
/// An idle connection holds no buffer: libuv asks for one only when the socket is readable.
public final class BufferPool {
    public let bufferSize: Int
    /// Free buffers kept for reuse at most; beyond that, returned buffers are freed.
    public let maxFree: Int
    private var free: [UnsafeMutableRawPointer] = []
    /// Buffers currently handed out (reads in flight or writes queued).
    public private(set) var outstanding = 0
    /// The fewest free buffers since the last `releaseUnused()`: that many sat unused all along.
    private var lowWater = 0

    public init(bufferSize: Int = 64 * 1024, maxFree: Int = 256) {
        precondition(bufferSize > 0 && maxFree >= 0)
        self.bufferSize = bufferSize
        self.maxFree = maxFree
        free.reserveCapacity(maxFree)
    }

    @inline(__always)
    public func take() -> UnsafeMutableRawPointer {
        outstanding += 1
        if let b = free.popLast() {
            if free.count < lowWater { lowWater = free.count }
            return b
        }
        return UnsafeMutableRawPointer.allocate(byteCount: bufferSize, alignment: 64)
    }

    /// Frees the buffers no one took since the last call (the free list's low-water mark), so
    /// that memory a burst needed goes back once the burst is over, while a steady load keeps
    /// what it uses. Returns how many were freed.
    @discardableResult
    public func releaseUnused() -> Int {
        let unused = min(lowWater, free.count)
        for _ in 0..<unused { free.removeLast().deallocate() }
        lowWater = free.count
        return unused
    }

    @inline(__always)
    public func give(_ buffer: UnsafeMutableRawPointer) {
        outstanding -= 1
        if free.count < maxFree {
            free.append(buffer)
        } else {
            buffer.deallocate()
        }
    }

    /// Free buffers currently cached.
    public var freeCount: Int { free.count }

    deinit {
        for b in free { b.deallocate() }
    }
}

/// A free list of fixed-size request structs (uv_write_t and friends), one per loop, no lock.
final class RequestPool<Request> {
    private var free: [UnsafeMutablePointer<Request>] = []
    private let maxFree: Int

    init(maxFree: Int = 1024) { self.maxFree = maxFree }

    @inline(__always)
    func take() -> UnsafeMutablePointer<Request> {
        free.popLast() ?? UnsafeMutablePointer<Request>.allocate(capacity: 1)
    }

    @inline(__always)
    func give(_ request: UnsafeMutablePointer<Request>) {
        if free.count < maxFree { free.append(request) } else { request.deallocate() }
    }

    deinit {
        for r in free { r.deallocate() }
    }
}
