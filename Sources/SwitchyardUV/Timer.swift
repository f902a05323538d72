import CLibUV

/// A libuv timer. The callback runs on the loop thread.
public final class UVTimer: UVHandle {
    private var onFire: (() -> Void)?

    var timer: UnsafeMutablePointer<uv_timer_t> {
        UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_timer_t.self)
    }

    public init(loop: EventLoop, onFire: @escaping () -> Void) throws(UVError) {
        let h = UnsafeMutablePointer<uv_timer_t>.allocate(capacity: 1)
        let rc = uv_timer_init(loop.raw, h)
        if rc < 0 {
            h.deallocate()
            throw UVError(rc)
        }
        self.onFire = onFire
        super.init(loop: loop, handle: asHandle(h))
    }

    /// Fires after `timeout` ms, then every `repeat` ms if non-zero. Restarts if already running.
    public func start(timeout: UInt64, repeat: UInt64 = 0) {
        guard !isClosing else { return }
        // uv_timer_start only fails for a closing handle, excluded above.
        _ = uv_timer_start(timer, { t in
            guard let t, let data = t.pointee.data else { return }
            Unmanaged<UVTimer>.fromOpaque(data).takeUnretainedValue().onFire?()
        }, timeout, `repeat`)
    }

    public func stop() {
        guard !isClosing else { return }
        uv_timer_stop(timer)
    }

    override func didClose() {
        onFire = nil
    }
}

/// A libuv signal watcher: the single owner of one signal for the process.
public final class UVSignal: UVHandle {
    private var onSignal: ((Int32) -> Void)?

    var signal: UnsafeMutablePointer<uv_signal_t> {
        UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_signal_t.self)
    }

    public init(loop: EventLoop, signal signum: Int32, onSignal: @escaping (Int32) -> Void) throws(UVError) {
        let h = UnsafeMutablePointer<uv_signal_t>.allocate(capacity: 1)
        let rc = uv_signal_init(loop.raw, h)
        if rc < 0 {
            h.deallocate()
            throw UVError(rc)
        }
        self.onSignal = onSignal
        super.init(loop: loop, handle: asHandle(h))
        let startRC = uv_signal_start(signal, { s, signum in
            guard let s, let data = s.pointee.data else { return }
            Unmanaged<UVSignal>.fromOpaque(data).takeUnretainedValue().onSignal?(signum)
        }, signum)
        if startRC < 0 {
            close()
            throw UVError(startRC)
        }
    }

    override func didClose() {
        onSignal = nil
    }
}
