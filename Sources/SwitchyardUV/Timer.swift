import CLibUV

/// Something a timer calls when it fires (an alternative to a closure that needs no allocation
/// of its own; the timer does not retain the target, whose owner must close the timer first).
public protocol UVTimerTarget: AnyObject {
    func timerFired(_ timer: UVTimer)
}

/// A libuv timer. The callback runs on the loop thread.
public final class UVTimer: UVHandle {
    private var onFire: (() -> Void)?
    private unowned(unsafe) var target: (any UVTimerTarget)?

    /// A timer that calls `target.timerFired` (not retained: close the timer before the target goes).
    public init(loop: EventLoop, target: any UVTimerTarget) throws(UVError) {
        self.target = target
        super.init(loop: loop, handle: try Self.makeHandle(loop))
    }

    var timer: UnsafeMutablePointer<uv_timer_t> {
        UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_timer_t.self)
    }

    public init(loop: EventLoop, onFire: @escaping () -> Void) throws(UVError) {
        self.onFire = onFire
        super.init(loop: loop, handle: try Self.makeHandle(loop))
    }

    private static func makeHandle(_ loop: EventLoop) throws(UVError) -> UnsafeMutablePointer<uv_handle_t> {
        let h = UnsafeMutablePointer<uv_timer_t>.allocate(capacity: 1)
        let rc = uv_timer_init(loop.raw, h)
        if rc < 0 {
            h.deallocate()
            throw UVError(rc)
        }
        return asHandle(h)
    }

    /// Fires after `timeout` ms, then every `repeat` ms if non-zero. Restarts if already running.
    public func start(timeout: UInt64, repeat: UInt64 = 0) {
        guard !isClosing else { return }
        // uv_timer_start only fails for a closing handle, excluded above.
        _ = uv_timer_start(timer, { t in
            guard let t, let data = t.pointee.data else { return }
            let me = Unmanaged<UVTimer>.fromOpaque(data).takeUnretainedValue()
            if let target = me.target { target.timerFired(me) } else { me.onFire?() }
        }, timeout, `repeat`)
    }

    public func stop() {
        guard !isClosing else { return }
        uv_timer_stop(timer)
    }

    override func didClose() {
        onFire = nil
        target = nil
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
