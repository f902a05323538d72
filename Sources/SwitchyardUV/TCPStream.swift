import CLibUV
#if canImport(Glibc)
import Glibc
#endif

/// What a `TCPStream` reports. All calls happen on the loop thread, from libuv callbacks.
public protocol TCPStreamDelegate: AnyObject {
    /// `count` bytes arrived in `buffer`, a buffer of `stream.loop.buffers`. The delegate owns it
    /// now: it hands it to `write(buffer:count:)` on another stream or gives it back to the pool.
    func stream(_ stream: TCPStream, didRead buffer: UnsafeMutableRawPointer, count: Int)
    /// The peer finished sending (FIN).
    func streamDidReachEOF(_ stream: TCPStream)
    /// A read, write or shutdown failed (reset, broken pipe, …). `UV_ECANCELED` is never reported.
    func stream(_ stream: TCPStream, didFail error: UVError)
    /// The outgoing connect finished; `error` is nil on success.
    func stream(_ stream: TCPStream, didConnect error: UVError?)
    /// Queued writes fell to the low-water mark after having crossed the high-water mark.
    func streamDidDrain(_ stream: TCPStream)
    /// The write side was shut down after every queued write was flushed.
    func streamDidShutdown(_ stream: TCPStream)
    /// The handle is closed and its memory freed.
    func streamDidClose(_ stream: TCPStream)
}

/// A TCP connection on a loop: reads into pooled buffers, writes pooled buffers without copying,
/// and tracks how much it has queued so that the relay can apply backpressure.
public final class TCPStream: UVHandle {
    /// Receives this stream's events. Kept until the close callback, then released.
    public var delegate: (any TCPStreamDelegate)? {
        didSet { fastDelegate = delegate }
    }
    /// The same delegate, unretained, for the per-read and per-write calls: `delegate` keeps it
    /// alive until the close callback, after which no event is delivered (saves ARC per event).
    private unowned(unsafe) var fastDelegate: (any TCPStreamDelegate)?
    /// The loop's buffer pool, unretained: the loop (and so its pool) outlives every handle on it.
    private unowned(unsafe) let pool: BufferPool
    private unowned(unsafe) let writeRequests: RequestPool<uv_write_t>
    /// The loop, unretained, for the per-event activity count (see `EventLoop.run`).
    fileprivate unowned(unsafe) let eventLoop: EventLoop
    /// Bytes of pool buffers pinned by writes that have not completed yet.
    public private(set) var queuedBytes = 0
    /// Above this many queued bytes the relay stops reading the other side.
    public var highWaterMark = 256 * 1024
    /// `streamDidDrain` is reported once queued bytes fall to this after crossing the high-water mark.
    public var lowWaterMark = 64 * 1024
    public private(set) var isReading = false
    /// `EventLoop.turn` of the last read that returned data.
    private var dataReadTurn: UInt = .max
    private var drainPending = false
    /// A small tag for the owner (e.g. which side of a proxy session this is).
    public var tag: UInt8 = 0

    var tcp: UnsafeMutablePointer<uv_tcp_t> {
        UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_tcp_t.self)
    }

    var stream: UnsafeMutablePointer<uv_stream_t> { asStream(tcp) }

    /// A new, unconnected TCP handle on `loop`. With a `family`, the socket is created at once
    /// (`uv_tcp_init_ex`) so that options can be set before `connect`; otherwise libuv creates it
    /// in `connect` (or `accept`).
    public init(loop: EventLoop, family: SocketAddress.Family? = nil) throws(UVError) {
        let h = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        let rc: Int32
        if let family {
            rc = uv_tcp_init_ex(loop.raw, h, UInt32(family == .ipv6 ? AF_INET6 : AF_INET))
        } else {
            rc = uv_tcp_init(loop.raw, h)
        }
        if rc < 0 {
            h.deallocate()
            throw UVError(rc)
        }
        pool = loop.buffers
        writeRequests = loop.writeRequests
        eventLoop = loop
        super.init(loop: loop, handle: asHandle(h))
    }

    override func didClose() {
        let d = delegate
        delegate = nil
        d?.streamDidClose(self)
    }

    /// The loop's cached clock (ms), without touching the loop object.
    @inline(__always)
    public var now: UInt64 { uv_now(tcp.pointee.loop) }

    // MARK: Options and addresses

    public func setNoDelay(_ on: Bool) throws(UVError) {
        try UVError.check(uv_tcp_nodelay(tcp, on ? 1 : 0))
    }

    /// TCP keepalive with the first probe after `delaySeconds` of idleness.
    public func setKeepAlive(_ on: Bool, delaySeconds: UInt32 = 60) throws(UVError) {
        try UVError.check(uv_tcp_keepalive(tcp, on ? 1 : 0, delaySeconds))
    }

    /// `TCP_NODELAY` and keepalive (first probe after `keepAliveSeconds` idle, the kernel's
    /// defaults for interval and count) in three system calls, where libuv takes five.
    public func setNoDelayAndKeepAlive(keepAliveSeconds: Int32) throws(UVError) {
        let fd = try fileDescriptor()
        var one: Int32 = 1
        var idle = keepAliveSeconds
        let size = socklen_t(MemoryLayout<Int32>.size)
        if setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, size) != 0
            || setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, size) != 0
            || setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPIDLE, &idle, size) != 0
        {
            throw UVError(-errno)
        }
    }

    /// `TCP_QUICKACK`. Off before `connect`: the kernel holds back the ACK that completes the
    /// handshake, to send it with the first data segment (HAProxy's `tcp-smart-connect`); turning
    /// it on again sends a held ACK at once. Without one or the other a server would wait for the
    /// delayed-ACK timer (up to 200 ms) before it sees the connection.
    public func setQuickAck(_ on: Bool) throws(UVError) {
        let fd = try fileDescriptor()
        var value: Int32 = on ? 1 : 0
        if setsockopt(fd, Int32(IPPROTO_TCP), TCP_QUICKACK, &value, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            throw UVError(-errno)
        }
    }

    public func peerAddress() -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = Int32(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutableBytes(of: &storage) { raw in
            uv_tcp_getpeername(tcp, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), &length)
        }
        return rc == 0 ? SocketAddress(storage: storage) : nil
    }

    public func localAddress() -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = Int32(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutableBytes(of: &storage) { raw in
            uv_tcp_getsockname(tcp, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), &length)
        }
        return rc == 0 ? SocketAddress(storage: storage) : nil
    }

    /// The OS file descriptor (for socket options libuv does not wrap).
    public func fileDescriptor() throws(UVError) -> Int32 {
        var fd: uv_os_fd_t = -1
        try UVError.check(uv_fileno(handle, &fd))
        return fd
    }

    /// What a socket that is not being read says of its peer, without taking any byte.
    public enum PeerState: Equatable {
        /// Bytes wait, or nothing has happened.
        case present
        /// It closed its side without sending anything (still) unread.
        case ended
        /// It reset the connection (or another error is pending).
        case failed(UVError)
    }

    /// Peeks (`MSG_PEEK`, non-blocking) for the peer's end. Only for a socket not being read.
    public func peerState() -> PeerState {
        guard let fd = try? fileDescriptor() else { return .present }
        var byte: UInt8 = 0
        let n = Glibc.recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        if n > 0 { return .present }
        if n == 0 { return .ended }
        let e = errno
        if e == EAGAIN || e == EWOULDBLOCK || e == EINTR { return .present }
        return .failed(UVError(-e))
    }

    // MARK: Connect

    public func connect(to address: SocketAddress) throws(UVError) {
        let req = loop.connectRequests.take()
        let rc = address.withSockaddr { sa in
            uv_tcp_connect(req, tcp, sa) { req, status in
                guard let req else { return }
                // The request goes back to its loop's pool; the handle (and so the stream that
                // owns it) is alive until its close callback, which comes after this one.
                guard let streamHandle = req.pointee.handle, let data = streamHandle.pointee.data else {
                    req.deallocate()
                    return
                }
                let me = Unmanaged<TCPStream>.fromOpaque(data).takeUnretainedValue()
                me.loop.ioActivity &+= 1
                me.loop.connectRequests.give(req)
                if status == UVError.canceled.code { return }
                me.delegate?.stream(me, didConnect: status < 0 ? UVError(status) : nil)
            }
        }
        if rc < 0 {
            loop.connectRequests.give(req)
            throw UVError(rc)
        }
    }

    // MARK: Reading

    /// Starts reading (idempotent). Buffers are taken from the pool only when data is ready.
    public func startReading() throws(UVError) {
        guard !isReading, !isClosing else { return }
        try UVError.check(uv_read_start(stream, tcpAllocCallback, tcpReadCallback))
        isReading = true
    }

    /// Reads what the kernel already holds into `buffer`, bypassing libuv: the byte count, 0 at end
    /// of stream, nil when nothing is there (EAGAIN). Only where it cannot race libuv's own reads,
    /// which happen in the loop's poll phase alone: in a callback of this loop before reading is
    /// started or right after `startReading`, or inside this stream's read callback. `recv` rather
    /// than `read(2)`, as `sendNow`: the same socket call without the file layer.
    public func readNow(into buffer: UnsafeMutableRawPointer, capacity: Int) throws(UVError) -> Int? {
        let fd = try fileDescriptor()
        while true {
            let n = recv(fd, buffer, capacity, 0)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK { return nil }
            throw UVError(-errno)
        }
    }

    /// Stops reading (idempotent), e.g. while the other side's queue is above its high-water mark.
    public func stopReading() {
        guard isReading else { return }
        uv_read_stop(stream)
        isReading = false
    }

    @inline(__always)
    fileprivate func allocate(_ buf: UnsafeMutablePointer<uv_buf_t>) {
        buf.pointee = uv_buf_init(pool.take().assumingMemoryBound(to: CChar.self), UInt32(pool.bufferSize))
    }

    fileprivate func handleRead(_ nread: Int, _ base: UnsafeMutableRawPointer?) {
        if nread > 0, let base {
            dataReadTurn = eventLoop.turn
            if let delegate = fastDelegate {
                delegate.stream(self, didRead: base, count: nread)
            } else {
                pool.give(base)
            }
            return
        }
        if let base { pool.give(base) }
        if nread == 0 { return }  // EAGAIN: nothing to do
        let code = Int32(truncatingIfNeeded: nread)
        if code == UVError.eof.code {
            // libuv stops reading on EOF by itself.
            isReading = false
            // libuv 1.44 turns POLLHUP after a short read into an EOF without reading on
            // (`uv__stream_io`), so a reset that arrived right behind data looks like an EOF, and a
            // peer's abort would pass on as a clean end. Only then (data read in this same turn)
            // is the socket's pending error worth a system call.
            if dataReadTurn == eventLoop.turn, let fd = try? fileDescriptor(), let error = takePendingSocketError(fd) {
                fastDelegate?.stream(self, didFail: error)
                return
            }
            fastDelegate?.streamDidReachEOF(self)
        } else if code != UVError.canceled.code {
            stopReading()
            fastDelegate?.stream(self, didFail: UVError(code))
        }
    }

    // MARK: Writing

    /// Writes `count` bytes of `buffer`, a pool buffer whose ownership passes to the stream: it goes
    /// back to the pool once written. Tries a synchronous `send(2)` first when nothing is queued;
    /// queues the rest with `uv_write`. Returns an error if the write failed at once (the buffer is
    /// back in the pool then too).
    ///
    /// `endFollows`: this stream's write side will be shut down (or closed) in this loop turn, before
    /// anything else is written: the bytes are sent with `MSG_MORE`, so that the kernel sends them
    /// together with the FIN in one segment instead of two (HAProxy does the same). Never set it
    /// otherwise: the bytes would wait for the next write.
    @discardableResult
    public func write(buffer: UnsafeMutableRawPointer, count: Int, endFollows: Bool = false) -> UVError? {
        var buf = uv_buf_init(buffer.assumingMemoryBound(to: CChar.self), UInt32(count))
        var offset = 0
        if queuedBytes == 0 {
            let n = sendNow(buffer, count, more: endFollows)
            if n == count {
                pool.give(buffer)
                return nil
            }
            if n >= 0 {
                offset = Int(n)
            } else if n != UVError.again.code {
                pool.give(buffer)
                return UVError(n)
            }
            buf = uv_buf_init((buffer + offset).assumingMemoryBound(to: CChar.self), UInt32(count - offset))
        }
        let req = writeRequests.take()
        req.pointee.data = buffer
        let rc = uv_write(req, stream, &buf, 1, tcpWriteCallback)
        if rc < 0 {
            writeRequests.give(req)
            pool.give(buffer)
            return UVError(rc)
        }
        queuedBytes += pool.bufferSize
        if queuedBytes > highWaterMark { drainPending = true }
        return nil
    }

    /// `send(2)` (with `MSG_MORE` if `more`): the count sent or a negative libuv error code
    /// (`UV_EAGAIN`: nothing sent). Only with nothing queued (`queuedBytes == 0`: every libuv write
    /// on this stream goes through `write(buffer:)`, and its bytes count until its callback).
    /// `send` rather than `uv_try_write`'s `write(2)`: the same socket call without the file
    /// layer's checks (~0.1 µs less per call here, of ~3.5 µs for a small loopback send).
    @inline(__always)
    private func sendNow(_ buffer: UnsafeMutableRawPointer, _ count: Int, more: Bool) -> Int32 {
        guard let fd = try? fileDescriptor() else { return UVError.again.code }
        let flags = more ? Int32(MSG_MORE) | Int32(MSG_NOSIGNAL) : Int32(MSG_NOSIGNAL)
        while true {
            let n = send(fd, buffer, count, flags)
            if n >= 0 { return Int32(n) }
            if errno == EINTR { continue }
            return errno == EAGAIN || errno == EWOULDBLOCK ? UVError.again.code : -errno
        }
    }

    /// True while queued writes are above the high-water mark.
    public var isAboveHighWaterMark: Bool { queuedBytes > highWaterMark }

    /// Bytes written to this stream that the peer has not acknowledged yet: those still in libuv's
    /// queue and those in the kernel's send queue (`SIOCOUTQ`). It falls as the peer reads, so a
    /// change between two looks means the peer is taking data. One system call: for timers, not
    /// for every read or write. 0 once closed.
    public var unacknowledgedBytes: Int {
        guard !isClosing, let fd = try? fileDescriptor() else { return 0 }
        return uv_stream_get_write_queue_size(stream) + unacknowledgedSendBytes(fd)
    }

    fileprivate func handleWriteDone(_ req: UnsafeMutablePointer<uv_write_t>, status: Int32) {
        if let base = req.pointee.data { pool.give(base) }
        writeRequests.give(req)
        queuedBytes -= pool.bufferSize
        if status < 0 {
            if status != UVError.canceled.code { fastDelegate?.stream(self, didFail: UVError(status)) }
            return
        }
        if drainPending && queuedBytes <= lowWaterMark {
            drainPending = false
            fastDelegate?.streamDidDrain(self)
        }
    }

    /// Shuts down the write side once every queued write has been flushed. When nothing is
    /// queued it is done at once (returns true, and no `streamDidShutdown` follows); otherwise
    /// libuv does it after the last write (returns false; `streamDidShutdown` reports it).
    @discardableResult
    public func shutdown() throws(UVError) -> Bool {
        if queuedBytes == 0 && uv_stream_get_write_queue_size(stream) == 0 {
            let fd = try fileDescriptor()
            if Glibc.shutdown(fd, Int32(SHUT_WR)) == 0 { return true }
            throw UVError(-errno)
        }
        let req = UnsafeMutablePointer<uv_shutdown_t>.allocate(capacity: 1)
        let rc = uv_shutdown(req, stream) { req, status in
            guard let req else { return }
            let streamHandle = req.pointee.handle
            req.deallocate()
            guard let streamHandle, let data = streamHandle.pointee.data else { return }
            let me = Unmanaged<TCPStream>.fromOpaque(data).takeUnretainedValue()
            if status == UVError.canceled.code { return }
            if status < 0 {
                me.delegate?.stream(me, didFail: UVError(status))
            } else {
                me.delegate?.streamDidShutdown(me)
            }
        }
        if rc < 0 {
            req.deallocate()
            throw UVError(rc)
        }
        return false
    }

    /// Closes the handle (idempotent), as `UVHandle.close`, but when nothing is pending on the
    /// socket it is closed without libuv's redundant `epoll_ctl(EPOLL_CTL_DEL)` first (see
    /// `switchyard_tcp_close`): two system calls less per proxied connection. Only for a socket
    /// this stream alone holds open; see `closeDeregistering` for one that was duplicated.
    public override func close() {
        guard beginClose() else { return }
        switchyard_tcp_close(tcp, uvHandleCloseCallback)
    }

    /// Closes through libuv's own `uv_close`, which takes the descriptor out of the epoll set before
    /// closing it. For a socket whose file stays open through another descriptor (a duplicate, as
    /// `SpliceRelay` makes): closing this descriptor alone would leave its registration in the
    /// epoll set, reporting the socket's events under a number that is no longer open.
    func closeDeregistering() {
        super.close()
    }

    /// Closes with a TCP reset (RST) instead of FIN: for connections cut short by an error.
    public func closeWithReset() {
        guard beginClose() else { return }
        // uv_tcp_close_reset refuses (UV_EINVAL) while a shutdown is pending (libuv forbids mixing
        // the two for other platforms' sake). On Linux it is SO_LINGER 0 and a close, and a close
        // with linger 0 resets even then: the queued FIN was never sent (it waits behind writes).
        if uv_tcp_close_reset(tcp, uvHandleCloseCallback) != 0 {
            if let fd = try? fileDescriptor() { setLingerZero(fd) }
            uv_close(handle, uvHandleCloseCallback)
        }
    }
}

private let tcpAllocCallback: uv_alloc_cb = { handle, _, buf in
    guard let handle, let buf, let data = handle.pointee.data else { return }
    // The handle holds a reference to its stream until the close callback: borrow it, no retain.
    Unmanaged<TCPStream>.fromOpaque(data)._withUnsafeGuaranteedRef { me in
        me.allocate(buf)
    }
}

private let tcpReadCallback: uv_read_cb = { stream, nread, buf in
    guard let stream, let data = stream.pointee.data else { return }
    Unmanaged<TCPStream>.fromOpaque(data)._withUnsafeGuaranteedRef { me in
        me.eventLoop.ioActivity &+= 1
        me.handleRead(nread, UnsafeMutableRawPointer(buf?.pointee.base))
    }
}

private let tcpWriteCallback: uv_write_cb = { req, status in
    guard let req, let streamHandle = req.pointee.handle, let data = streamHandle.pointee.data else { return }
    Unmanaged<TCPStream>.fromOpaque(data)._withUnsafeGuaranteedRef { me in
        me.eventLoop.ioActivity &+= 1
        me.handleWriteDone(req, status: status)
    }
}
