import CLibUV
import Synchronization

/// Something to run once more at the end of the current loop iteration, after every I/O callback of
/// this turn (see `EventLoop.atEndOfTurn`).
public protocol EndOfTurnTarget: AnyObject {
    func endOfTurn()
}

/// One libuv loop and the per-loop resources that go with it (buffer and request pools).
///
/// Everything here runs on the loop's own thread, except `execute(_:)`, the only cross-thread
/// entry point: it appends to a locked inbox and calls `uv_async_send`, which libuv documents as
/// thread-safe and which coalesces several sends into one wake-up.
public final class EventLoop: @unchecked Sendable {
    // @unchecked Sendable: all state is confined to the loop thread except `inbox`, a Mutex that
    // holds the pending jobs and the async handle's pointer: `execute` sends only under that lock
    // and only while the pointer is set, and `closeInbox` clears it under the lock before it
    // closes the handle, so no send can reach the handle once its memory may be freed.
    public let raw: UnsafeMutablePointer<uv_loop_t>
    public let buffers: BufferPool
    let writeRequests = RequestPool<uv_write_t>()
    let connectRequests = RequestPool<uv_connect_t>(maxFree: 256)
    private let inbox = Mutex(Inbox())
    /// The wake-up handle's owner; loop thread only (other threads go through `inbox.async`).
    private var wakeup: AsyncWakeup?
    private var finished = false
    /// Targets waiting for the end of this turn, and the array being run (swapped, no allocation).
    private var endOfTurn: [any EndOfTurnTarget] = []
    private var endOfTurnRunning: [any EndOfTurnTarget] = []
    private var endOfTurnCheck: EndOfTurnCheck?
    /// Busy polling: after a turn that handled I/O, keep polling (epoll with a zero timeout) for
    /// this many nanoseconds before blocking. 0 (the default) always blocks. Set before `run()`.
    public var busyPollNanoseconds: UInt64 = 0
    /// Bumped by the stream and listener callbacks: tells `run()` that a turn handled I/O.
    var ioActivity: UInt = 0
    /// Loop iterations so far (bumped in the check phase, after each poll): two callbacks with the
    /// same value ran in the same turn.
    private(set) var turn: UInt = 0
    private var stopRequested = false
    /// Every `trimIntervalMilliseconds`: buffers unused all that while are freed and, if there
    /// were any, `malloc_trim` gives the heap's free pages back (RSS falls after a burst).
    private var trimTimer: UVTimer?
    public let trimIntervalMilliseconds: UInt64

    public init(bufferSize: Int = 64 * 1024, trimIntervalMilliseconds: UInt64 = 10_000) throws(UVError) {
        self.trimIntervalMilliseconds = trimIntervalMilliseconds
        raw = .allocate(capacity: 1)
        let rc = uv_loop_init(raw)
        if rc < 0 {
            raw.deallocate()
            throw UVError(rc)
        }
        buffers = BufferPool(bufferSize: bufferSize)
        do {
            let async = try AsyncWakeup(loop: self)
            wakeup = async
            inbox.withLock { $0.async = AsyncPointer(pointer: async.asyncHandle) }
            endOfTurnCheck = try EndOfTurnCheck(loop: self)
            let timer = try UVTimer(loop: self) { [unowned self] in self.trimMemory() }
            timer.setKeepsLoopAlive(false)
            timer.start(timeout: trimIntervalMilliseconds, repeat: trimIntervalMilliseconds)
            trimTimer = timer
        } catch {
            inbox.withLock { $0.async = nil }
            wakeup?.close()
            wakeup = nil
            endOfTurnCheck?.close()
            endOfTurnCheck = nil
            uv_run(raw, UV_RUN_NOWAIT)
            uv_loop_close(raw)
            raw.deallocate()
            throw error
        }
    }

    /// The loop's cached clock in milliseconds (updated once per loop iteration; cheap).
    @inline(__always)
    public var now: UInt64 { uv_now(raw) }

    /// A monotonic clock in nanoseconds, read now (`uv_hrtime`, a vDSO call): for durations shorter
    /// than the loop's millisecond clock can tell, such as a connect on a local network.
    @inline(__always)
    public var preciseNanoseconds: UInt64 { uv_hrtime() }

    /// Runs the loop until no active handle remains (or `stop()` is called).
    ///
    /// With `busyPollNanoseconds` set, a turn that handled I/O is followed by non-blocking turns
    /// until that long has passed without any, and only then does the loop block in epoll_wait.
    /// The next packet of a request/response exchange usually arrives within tens of microseconds:
    /// finding it by polling saves the wake-up of a sleeping thread, and on a virtual machine the
    /// wake-up of an idle virtual CPU, which is most of the latency a proxy adds there (HAProxy's
    /// `busy-polling`, Linux's `busy_poll`, but bounded: an idle loop sleeps). The price is CPU:
    /// up to one core while traffic keeps arriving less than the window apart.
    public func run() {
        stopRequested = false
        let window = busyPollNanoseconds
        guard window > 0 else {
            uv_run(raw, UV_RUN_DEFAULT)
            return
        }
        var lastIO = uv_hrtime()
        while !stopRequested {
            let seen = ioActivity
            let polling = uv_hrtime() &- lastIO < window
            if uv_run(raw, polling ? UV_RUN_NOWAIT : UV_RUN_ONCE) == 0 { break }
            if ioActivity != seen { lastIO = uv_hrtime() }
        }
    }

    /// Stops `run()` after the current iteration. Loop thread only.
    public func stop() {
        stopRequested = true
        uv_stop(raw)
    }

    /// Runs `work` on the loop thread soon. Callable from any thread. After `closeInbox()` the work
    /// is dropped (the loop is shutting down and will not run it).
    public func execute(_ work: @escaping @Sendable () -> Void) {
        inbox.withLock { box in
            guard let async = box.async else { return }
            box.jobs.append(work)
            // Thread-safe in libuv, cheap (coalesces), and under the lock: see `closeInbox`. It
            // returns 0 whatever happens (libuv 1.44), so there is nothing to check.
            _ = uv_async_send(async.pointer)
        }
    }

    /// Calls `target.endOfTurn()` at the end of the current loop iteration, once every I/O callback
    /// of this turn has run (a `uv_check_t`), holding a strong reference until then. Lets an owner
    /// see everything one `epoll_wait` reported before it acts, e.g. both ends of a connection
    /// closing. Loop thread only; a target queued from `endOfTurn()` runs in the same pass.
    @inline(__always)
    public func atEndOfTurn(_ target: any EndOfTurnTarget) {
        endOfTurn.append(target)
    }

    fileprivate func runEndOfTurn() {
        turn &+= 1
        while !endOfTurn.isEmpty {
            swap(&endOfTurn, &endOfTurnRunning)
            for target in endOfTurnRunning { target.endOfTurn() }
            endOfTurnRunning.removeAll(keepingCapacity: true)
        }
    }

    /// Closes the cross-thread wake-up handle so that the loop can run out of handles and return.
    /// Work not yet run, and work submitted after this (from any thread, even while this runs), is
    /// dropped. Loop thread only.
    public func closeInbox() {
        // First stop every sender (under the lock), then close: the handle's memory is freed in
        // its close callback, which no `uv_async_send` may race with.
        inbox.withLock { $0.async = nil }
        wakeup?.close()
        wakeup = nil
    }

    fileprivate func drainInbox() {
        let jobs = inbox.withLock { box -> [@Sendable () -> Void] in
            let taken = box.jobs
            box.jobs.removeAll(keepingCapacity: true)
            return taken
        }
        for job in jobs { job() }
    }

    /// Memory freed in the last trims (buffers), for tests and diagnostics.
    public private(set) var buffersReleased = 0

    private func trimMemory() {
        let freed = buffers.releaseUnused()
        guard freed > 0 else { return }
        buffersReleased += freed
        // The buffers (and whatever a burst's sessions left) are back in the heap; return its
        // free pages to the kernel. A few milliseconds at most, and only after a burst.
        _ = switchyard_malloc_trim()
    }

    /// Closes the loop after `run()` returned. Returns false if handles are still open (a leak).
    @discardableResult
    public func finish() -> Bool {
        guard !finished else { return true }
        runEndOfTurn()
        endOfTurnCheck?.close()
        endOfTurnCheck = nil
        trimTimer?.close()
        trimTimer = nil
        // Give close callbacks a chance to run.
        uv_run(raw, UV_RUN_NOWAIT)
        let rc = uv_loop_close(raw)
        if rc == 0 {
            finished = true
            raw.deallocate()
            return true
        }
        return false
    }
}

/// What other threads may touch, behind `EventLoop.inbox`'s lock.
private struct Inbox {
    var jobs: [@Sendable () -> Void] = []
    /// The wake-up handle while it is open; nil from `closeInbox()` on.
    var async: AsyncPointer?
}

/// The `uv_async_t` pointer, sent to other threads only inside `Inbox`.
private struct AsyncPointer: @unchecked Sendable {
    // @unchecked Sendable: used only for `uv_async_send` (thread-safe) while the inbox lock is
    // held and the handle is open (see `EventLoop.closeInbox`).
    let pointer: UnsafeMutablePointer<uv_async_t>
}

/// The loop's `uv_async_t`, owned by the loop.
private final class AsyncWakeup: UVHandle {
    private unowned let owner: EventLoop

    init(loop: EventLoop) throws(UVError) {
        owner = loop
        let h = UnsafeMutablePointer<uv_async_t>.allocate(capacity: 1)
        let rc = uv_async_init(loop.raw, h) { handle in
            guard let handle, let data = handle.pointee.data else { return }
            let me = Unmanaged<AsyncWakeup>.fromOpaque(data).takeUnretainedValue()
            me.owner.drainInbox()
        }
        if rc < 0 {
            h.deallocate()
            throw UVError(rc)
        }
        super.init(loop: loop, handle: asHandle(h))
        // The wake-up must not keep the loop alive on its own once everything else is closed:
        // it is closed explicitly by `closeInbox()`. While open it does keep the loop running.
    }

    var asyncHandle: UnsafeMutablePointer<uv_async_t> {
        UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_async_t.self)
    }
}

/// The loop's `uv_check_t` that runs `atEndOfTurn` targets. Unreferenced: it never keeps the loop
/// alive by itself; `finish()` closes it.
private final class EndOfTurnCheck: UVHandle {
    private unowned let owner: EventLoop

    init(loop: EventLoop) throws(UVError) {
        owner = loop
        let h = UnsafeMutablePointer<uv_check_t>.allocate(capacity: 1)
        let rc = uv_check_init(loop.raw, h)
        if rc < 0 {
            h.deallocate()
            throw UVError(rc)
        }
        super.init(loop: loop, handle: asHandle(h))
        // uv_check_start only fails for a NULL callback.
        _ = uv_check_start(h) { handle in
            guard let handle, let data = handle.pointee.data else { return }
            Unmanaged<EndOfTurnCheck>.fromOpaque(data)._withUnsafeGuaranteedRef { $0.owner.runEndOfTurn() }
        }
        setKeepsLoopAlive(false)
    }
}
