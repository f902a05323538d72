import CLibUV

/// Base class of every libuv handle owner.
///
/// The handle is pinned heap memory allocated by the subclass. Once `uv_*_init` has succeeded,
/// `handle.data` holds a retained reference to this object; `close()` calls `uv_close`, and the
/// close callback is the only place where the handle memory is freed and that reference released.
/// So an owner lives at least as long as its handle, whoever else lets go of it.
public class UVHandle {
    public let loop: EventLoop
    let handle: UnsafeMutablePointer<uv_handle_t>
    public private(set) var isClosing = false

    /// Call right after a successful `uv_*_init` on `handle`.
    init(loop: EventLoop, handle: UnsafeMutablePointer<uv_handle_t>) {
        self.loop = loop
        self.handle = handle
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
    }

    /// Closes the handle (idempotent). Pending requests complete with `UV_ECANCELED` first;
    /// `didClose()` runs in the close callback.
    public func close() {
        guard beginClose() else { return }
        uv_close(handle, uvHandleCloseCallback)
    }

    /// Marks the handle as closing; false if it already was. Subclasses that close through another
    /// libuv call (e.g. `uv_tcp_close_reset`) call this first and pass `uvHandleCloseCallback`.
    func beginClose() -> Bool {
        if isClosing { return false }
        isClosing = true
        return true
    }

    /// Keeps the loop alive while this handle is active (the default) or not.
    public func setKeepsLoopAlive(_ keep: Bool) {
        if keep { uv_ref(handle) } else { uv_unref(handle) }
    }

    /// Called once, in the close callback, after the handle memory is freed.
    func didClose() {}
}

let uvHandleCloseCallback: uv_close_cb = { handle in
    guard let handle else { return }
    let data = handle.pointee.data
    UnsafeMutableRawPointer(handle).deallocate()
    guard let data else { return }
    let owner = Unmanaged<UVHandle>.fromOpaque(data).takeRetainedValue()
    owner.didClose()
}
