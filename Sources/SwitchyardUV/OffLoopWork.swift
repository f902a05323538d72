#if canImport(Glibc)
import Glibc
#endif

extension EventLoop {
    /// Runs `work` on a thread of its own, then `completion` with its result on this loop's
    /// thread. For a blocking call that must not stall the loop, such as `getaddrinfo` while a
    /// reload resolves new server names: the loop goes on relaying meanwhile.
    ///
    /// The thread is detached and takes no signals (they stay with the loop threads' handlers).
    /// If the loop shuts down first (`closeInbox`), `completion` is dropped and the process does
    /// not wait for `work` (a resolver waiting for an unreachable DNS server must not delay a
    /// drain's end). A new thread rather than libuv's thread pool for that reason: an active
    /// `uv_work_t` keeps `uv_run` from returning until it is done. Loop thread only; throws when
    /// no thread can be created.
    public func runOffLoop<T: Sendable>(
        _ work: @escaping @Sendable () -> T,
        then completion: @escaping @Sendable (T) -> Void
    ) throws(UVError) {
        let started = startDetachedThread { [self] in
            let result = work()
            execute { completion(result) }
        }
        guard started == 0 else { throw UVError(-started) }
    }
}

/// Runs `body` on a new detached thread that takes no signals (all blocked: they stay with the
/// loop threads' libuv handlers). Returns 0, or the error number `pthread_create` gave.
public func startDetachedThread(_ body: @escaping @Sendable () -> Void) -> Int32 {
    let job = OffLoopJob(body)
    // The new thread inherits this mask: block everything while creating it.
    var all = sigset_t()
    var previous = sigset_t()
    sigfillset(&all)
    pthread_sigmask(SIG_SETMASK, &all, &previous)
    defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
    let box = Unmanaged.passRetained(job).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(&thread, nil, { arg in
        Unmanaged<OffLoopJob>.fromOpaque(arg!).takeRetainedValue().body()
        return nil
    }, box)
    guard rc == 0 else {
        Unmanaged<OffLoopJob>.fromOpaque(box).release()
        return rc
    }
    pthread_detach(thread)
    return 0
}

/// What the off-loop thread runs (handed over once, retained through `pthread_create`'s argument).
private final class OffLoopJob: Sendable {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}
