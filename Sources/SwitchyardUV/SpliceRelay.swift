import CLibUV
#if canImport(Glibc)
import Glibc
#endif

/// What a `SpliceRelay` reports. All calls happen on the loop thread, from libuv callbacks.
public protocol SpliceRelayDelegate: AnyObject {
    /// `count` bytes were read from `side`'s socket (into the pipe towards the other side).
    func relay(_ relay: SpliceRelay, didRead count: Int, from side: SpliceRelay.Side)
    /// `side`'s peer finished sending (FIN); the other side is shut down once the pipe is flushed.
    func relay(_ relay: SpliceRelay, didReachEOF side: SpliceRelay.Side)
    /// Both directions ended: each EOF has been passed on as a write shutdown of the other socket.
    func relayDidFinish(_ relay: SpliceRelay)
    /// A splice, shutdown or poll on `side`'s socket failed (reset, broken pipe, …). The relay has
    /// stopped moving data; the delegate closes it.
    func relay(_ relay: SpliceRelay, side: SpliceRelay.Side, didFail error: UVError)
    /// Every poll handle is closed and every descriptor (sockets, pipes) with it.
    func relayDidClose(_ relay: SpliceRelay)
}

#if os(Linux)

/// Zero-copy relay between two connected TCP sockets with Linux `splice(2)`: socket → pipe →
/// socket, one pipe per direction, the bytes never entering user space.
///
/// libuv keeps one watcher per descriptor, so the sockets leave libuv's stream machinery first:
/// each stream's descriptor is duplicated (`F_DUPFD_CLOEXEC`) and the `uv_tcp_t` is closed (which
/// deregisters and closes the original descriptor; the socket lives on through the duplicate).
/// The duplicates are then watched with `uv_poll_t` handles (pinned memory, owned the same way as
/// every other handle: `handle.data` retains the owner until the close callback, which frees the
/// memory and closes the socket's descriptor).
///
/// Per direction: when the source is readable and the pipe empty, `splice(src → pipe)`, then
/// `splice(pipe → dst)`. While the pipe holds bytes the destination cannot take, the source is not
/// polled for readable and the destination is polled for writable instead (backpressure: at most
/// one pipe of data in flight per direction, and that memory is the kernel's). A read of 0 bytes
/// (EOF) becomes `shutdown(dst, SHUT_WR)` once the pipe is empty. Any error stops the relay and is
/// reported; `close(reset: true)` then closes both sockets with a reset (`SO_LINGER` 0).
///
/// Nothing is allocated per transfer. The process must ignore `SIGPIPE` (a splice into a socket
/// whose peer is gone raises it). Linux only: elsewhere `takeOver` throws `UV_ENOSYS`.
public final class SpliceRelay {
    public enum Side: UInt8, Sendable {
        case a, b

        public var other: Side { self == .a ? .b : .a }
    }

    public let loop: EventLoop
    /// Receives the relay's events. Kept until `relayDidClose`, then released.
    public var delegate: (any SpliceRelayDelegate)?
    /// The pipe capacities in use (towards b, towards a), as the kernel reports them.
    public let pipeCapacities: (Int, Int)
    public private(set) var isClosing = false
    private var stopped = false
    private var toB: Direction
    private var toA: Direction
    private let pollA: SocketPoll
    private let pollB: SocketPoll
    private var openPolls = 2
    /// Bytes read from a source in one wake-up at most, so that one busy connection cannot starve
    /// the others on the loop (the level-triggered poll fires again next iteration).
    private let readBudget: Int

    /// The default pipe size: 512 KiB per direction. Measured on loopback bulk transfers: the
    /// kernel's default 64 KiB pipe is no faster than the buffered relay; 256 KiB is clearly
    /// faster, 512 KiB and 1 MiB a little more (and 1 MiB is the unprivileged maximum).
    public static let defaultPipeSize = 512 * 1024

    /// Takes the connected streams `a` and `b` out of libuv and relays between them with splice.
    ///
    /// Both streams must be open and have nothing queued (`queuedBytes == 0`), otherwise `UV_EBUSY`
    /// is thrown; and the caller must not have shut either down (closing the stream would cancel a
    /// pending `uv_shutdown`). On success both streams are closed at once (their delegates
    /// still get `streamDidClose`) and their sockets carry on in the relay, polled for readable.
    /// On any failure (descriptors exhausted, …) the error is thrown and the streams are untouched,
    /// so the caller can keep relaying through them.
    ///
    /// `pipeSize`: the capacity of each pipe (`F_SETPIPE_SZ`); 0 keeps the kernel's default. If the
    /// kernel will not grant it (an unprivileged user past `pipe-user-pages-soft`, 64 MiB of pipes
    /// in all by default), `UV_ENOBUFS` is thrown: through a small pipe splice does not pay.
    public static func takeOver(
        _ a: TCPStream, _ b: TCPStream, pipeSize: Int = SpliceRelay.defaultPipeSize,
        delegate: (any SpliceRelayDelegate)?
    ) throws(UVError) -> SpliceRelay {
        guard a.loop === b.loop, !a.isClosing, !b.isClosing, a.queuedBytes == 0, b.queuedBytes == 0 else {
            throw UVError(Int32(UV_EBUSY.rawValue))
        }
        let loop = a.loop
        let fdA = try a.fileDescriptor()
        let fdB = try b.fileDescriptor()
        var pipeToB: (read: Int32, write: Int32, capacity: Int) = (-1, -1, 0)
        var pipeToA: (read: Int32, write: Int32, capacity: Int) = (-1, -1, 0)
        var dupA: Int32 = -1
        var dupB: Int32 = -1
        var pollA: SocketPoll?
        var pollB: SocketPoll?
        do throws(UVError) {
            pipeToB = try makePipe(size: pipeSize)
            pipeToA = try makePipe(size: pipeSize)
            dupA = try duplicate(fdA)
            dupB = try duplicate(fdB)
            pollA = try SocketPoll(loop: loop, fd: dupA, side: .a)
            dupA = -1  // owned by pollA now
            pollB = try SocketPoll(loop: loop, fd: dupB, side: .b)
            dupB = -1
        } catch {
            for fd in [pipeToB.read, pipeToB.write, pipeToA.read, pipeToA.write, dupA, dupB] where fd >= 0 {
                _ = Glibc.close(fd)
            }
            pollA?.close()  // closes its descriptor in the close callback
            pollB?.close()
            throw error
        }
        // From here nothing fails: retire the streams (closing the original descriptors).
        a.stopReading()
        b.stopReading()
        // The sockets stay open through the duplicates, so closing the originals alone would
        // leave them registered in the epoll set: libuv's close deregisters them first.
        a.closeDeregistering()
        b.closeDeregistering()
        let relay = SpliceRelay(
            loop: loop, pollA: pollA!, pollB: pollB!, pipeToB: pipeToB, pipeToA: pipeToA, delegate: delegate)
        relay.updateWatches()
        return relay
    }

    private init(
        loop: EventLoop, pollA: SocketPoll, pollB: SocketPoll,
        pipeToB: (read: Int32, write: Int32, capacity: Int), pipeToA: (read: Int32, write: Int32, capacity: Int),
        delegate: (any SpliceRelayDelegate)?
    ) {
        self.loop = loop
        self.pollA = pollA
        self.pollB = pollB
        self.delegate = delegate
        toB = Direction(src: pollA.fd, dst: pollB.fd, pipeRead: pipeToB.read, pipeWrite: pipeToB.write, capacity: pipeToB.capacity)
        toA = Direction(src: pollB.fd, dst: pollA.fd, pipeRead: pipeToA.read, pipeWrite: pipeToA.write, capacity: pipeToA.capacity)
        pipeCapacities = (pipeToB.capacity, pipeToA.capacity)
        readBudget = 4 * max(pipeToB.capacity, pipeToA.capacity)
        pollA.relay = self
        pollB.relay = self
    }

    /// The descriptors the relay owns (two sockets, two pipes), for tests and diagnostics.
    public var descriptors: [Int32] {
        [pollA.fd, pollB.fd, toB.pipeRead, toB.pipeWrite, toA.pipeRead, toA.pipeWrite]
    }

    /// Bytes read from one socket and not yet written to the other (in the pipes): what a close
    /// now would drop.
    public var bufferedBytes: Int { toB.inPipe + toA.inPipe }

    /// Bytes on their way to either peer that it has not acknowledged yet: in the pipes and in
    /// both sockets' kernel send queues (`SIOCOUTQ`). Two system calls: for timers, not per I/O.
    /// 0 once closed.
    public var unacknowledgedBytes: Int {
        guard !isClosing else { return 0 }
        return bufferedBytes + unacknowledgedSendBytes(pollA.fd) + unacknowledgedSendBytes(pollB.fd)
    }

    /// Closes both sockets and both pipes (idempotent). With `reset`, the sockets are closed with a
    /// TCP reset (`SO_LINGER` 0) so that neither peer mistakes a cut-off stream for a complete one.
    /// Bytes still in a pipe are dropped. `relayDidClose` follows once both poll handles are closed.
    public func close(reset: Bool = false) {
        guard !isClosing else { return }
        isClosing = true
        stopped = true
        for fd in [toB.pipeRead, toB.pipeWrite, toA.pipeRead, toA.pipeWrite] {
            _ = Glibc.close(fd)
        }
        if reset {
            setLingerZero(pollA.fd)
            setLingerZero(pollB.fd)
        }
        pollA.close()
        pollB.close()
    }

    // MARK: Events

    fileprivate func pollFired(_ poll: SocketPoll, status: Int32, events: Int32) {
        guard !stopped else { return }
        let side = poll.side
        if status < 0 {
            // libuv reports POLLERR as UV_EBADF (and stops the handle): the socket's pending error
            // (ECONNRESET, …) says what really happened. Bytes that arrived before it (a server
            // that resets right behind its answer) still go through first: splice returns them
            // before the error, and reports the error itself once the socket is drained.
            poll.noteStoppedByLibuv()
            pump(from: side)
            if stopped { return }
            fail(side, takePendingSocketError(poll.fd) ?? UVError(status))
            return
        }
        if events & Int32(UV_READABLE.rawValue) != 0 {
            // Data (or EOF) from `side`: the direction towards the other side.
            pump(from: side)
            if stopped { return }
        }
        if events & Int32(UV_WRITABLE.rawValue) != 0 {
            // `side` can take more: flush the direction towards it (and read on if it empties).
            pump(from: side.other)
            if stopped { return }
        }
        updateWatches()
    }

    /// Moves what it can in the direction from `source` to the other side, then reports.
    private func pump(from source: Side) {
        var read = 0
        var sawEOF = false
        // While passing on a failed peer's last words, its end is its reset, not a FIN: the
        // failed write took the socket's error, so the read after its bytes returns 0.
        let endIsReset = passingOnLastWords
        // The mutation ends before any delegate call (which may close the relay).
        let failure = source == .a
            ? toB.pump(budget: readBudget, read: &read, sawEOF: &sawEOF, endIsReset: endIsReset)
            : toA.pump(budget: readBudget, read: &read, sawEOF: &sawEOF, endIsReset: endIsReset)
        if read > 0 { delegate?.relay(self, didRead: read, from: source) }
        if sawEOF { delegate?.relay(self, didReachEOF: source) }
        if stopped { return }  // the delegate closed the relay
        switch failure {
        case nil: break
        case .source(let e): fail(source, UVError(-e))
        case .destination(let e):
            // A peer that went away with our bytes unread (EPIPE, ECONNRESET: a server refusing
            // an upload) may have answered first: what it sent goes the other way before the
            // relay stops (once; its own failure, if any, is then the one reported).
            if !passingOnLastWords {
                passingOnLastWords = true
                pump(from: source.other)
                if stopped { return }
            }
            fail(source.other, UVError(-e))
        }
    }

    /// A failed write is being followed by a last read of the peer that failed (see `pump`).
    private var passingOnLastWords = false

    /// Polls each socket for what its two directions need; reports the end once both are done.
    private func updateWatches() {
        let readable = Int32(UV_READABLE.rawValue)
        let writable = Int32(UV_WRITABLE.rawValue)
        let eventsA = (toB.wantsRead ? readable : 0) | (toA.wantsWrite ? writable : 0)
        let eventsB = (toA.wantsRead ? readable : 0) | (toB.wantsWrite ? writable : 0)
        if let error = pollA.watch(eventsA) {
            fail(.a, error)
            return
        }
        if let error = pollB.watch(eventsB) {
            fail(.b, error)
            return
        }
        if toB.shutDown && toA.shutDown {
            stopped = true
            delegate?.relayDidFinish(self)
        }
    }

    private func fail(_ side: Side, _ error: UVError) {
        guard !stopped else { return }
        stopped = true
        _ = pollA.watch(0)
        _ = pollB.watch(0)
        delegate?.relay(self, side: side, didFail: error)
    }

    fileprivate func pollDidClose() {
        openPolls -= 1
        if openPolls == 0 {
            let d = delegate
            delegate = nil
            d?.relayDidClose(self)
        }
    }
}

// MARK: - One direction

/// One direction of the relay: source socket → pipe → destination socket.
private struct Direction {
    let src: Int32
    let dst: Int32
    let pipeRead: Int32
    let pipeWrite: Int32
    let capacity: Int
    /// Bytes in the pipe (spliced in, not yet out).
    var inPipe = 0
    var srcEOF = false
    /// `shutdown(dst, SHUT_WR)` done: this direction is over.
    var shutDown = false

    init(src: Int32, dst: Int32, pipeRead: Int32, pipeWrite: Int32, capacity: Int) {
        self.src = src
        self.dst = dst
        self.pipeRead = pipeRead
        self.pipeWrite = pipeWrite
        self.capacity = capacity
    }

    /// Poll the source for readable: only with an empty pipe (backpressure).
    var wantsRead: Bool { !srcEOF && inPipe == 0 }
    /// Poll the destination for writable: while the pipe holds what it could not take.
    var wantsWrite: Bool { inPipe > 0 }

    enum Failure { case source(Int32), destination(Int32) }

    /// A read shorter than this is taken to have drained the source (see `pump`).
    static let shortReadThreshold = 64 * 1024
    var shortRead: Int { Swift.min(capacity, Direction.shortReadThreshold) }

    /// Moves bytes until the source has none (or `budget` bytes were read) or the destination is
    /// full. `read` gets the bytes read from the source; `sawEOF` is set when the source ended.
    ///
    /// Like libuv's stream reads, a short read (less than the pipe holds) is taken to mean that
    /// the source is drained, and a short write that the destination is full: the poll says when
    /// to go on (it is level-triggered, so a wrong guess costs a loop iteration, never a stall).
    /// That saves the extra call that would only return EAGAIN, per request and per response.
    /// With `endIsReset`, the source's end is reported as `.source(ECONNRESET)` instead: nothing
    /// is shut down on the destination, so it cannot take the stream for complete.
    mutating func pump(budget: Int, read: inout Int, sawEOF: inout Bool, endIsReset: Bool = false) -> Failure? {
        let flags = SWITCHYARD_SPLICE_F_MOVE | SWITCHYARD_SPLICE_F_NONBLOCK
        var budget = budget
        var sourceDrained = false
        while true {
            if inPipe > 0 {
                let n = switchyard_splice(pipeRead, dst, inPipe, flags)
                if n > 0 {
                    inPipe -= n
                    if inPipe > 0 || sourceDrained { return nil }
                    continue
                }
                if n < 0 {
                    let e = errno
                    if e == EINTR { continue }
                    if e == EAGAIN { return nil }  // destination full: wait for writable
                    return .destination(e)
                }
                // 0 would mean an empty pipe with no writer: impossible, we hold the write end.
                // Fail rather than poll for writable forever.
                return .destination(EIO)
            }
            if srcEOF {
                if !shutDown {
                    shutDown = true
                    // ENOTCONN: the destination was reset after taking its last bytes (a peer
                    // that closed without reading an answer): nothing is left to shut, and the
                    // buffered relay, which closes instead of shutting down here, ends the same.
                    if Glibc.shutdown(dst, Int32(SHUT_WR)) < 0 && errno != ENOTCONN { return .destination(errno) }
                }
                return nil
            }
            if budget <= 0 { return nil }  // more next time: the source stays polled
            let n = switchyard_splice(src, pipeWrite, capacity, flags)
            if n > 0 {
                inPipe = n
                read += n
                budget -= n
                sourceDrained = n < shortRead
                continue
            }
            if n == 0 {
                if endIsReset { return .source(ECONNRESET) }
                srcEOF = true
                sawEOF = true
                continue
            }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN { return nil }  // nothing to read: wait for readable
            return .source(e)
        }
    }
}

// MARK: - The poll handle

/// A `uv_poll_t` on one of the relay's socket descriptors, which it owns: the descriptor is closed
/// in the close callback, after libuv has stopped watching it.
final class SocketPoll: UVHandle {
    let fd: Int32
    let side: SpliceRelay.Side
    /// The relay; kept until the close callback, then released (breaks the cycle).
    var relay: SpliceRelay?
    private(set) var events: Int32 = 0

    var poll: UnsafeMutablePointer<uv_poll_t> {
        UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_poll_t.self)
    }

    /// On failure the descriptor stays the caller's.
    init(loop: EventLoop, fd: Int32, side: SpliceRelay.Side) throws(UVError) {
        let h = UnsafeMutablePointer<uv_poll_t>.allocate(capacity: 1)
        let rc = uv_poll_init(loop.raw, h, fd)
        if rc < 0 {
            h.deallocate()
            throw UVError(rc)
        }
        self.fd = fd
        self.side = side
        super.init(loop: loop, handle: asHandle(h))
    }

    /// Watches for `events` (UV_READABLE | UV_WRITABLE; 0 stops), touching libuv only on a change.
    func watch(_ events: Int32) -> UVError? {
        guard !isClosing, events != self.events else { return nil }
        self.events = events
        if events == 0 {
            _ = uv_poll_stop(poll)
            return nil
        }
        let rc = uv_poll_start(poll, events, socketPollCallback)
        return rc < 0 ? UVError(rc) : nil
    }

    /// libuv stopped the handle itself (on POLLERR).
    func noteStoppedByLibuv() {
        events = 0
    }

    override func didClose() {
        // libuv no longer watches the descriptor: this is the socket's last one (FIN, or RST
        // with SO_LINGER 0).
        _ = Glibc.close(fd)
        let r = relay
        relay = nil
        r?.pollDidClose()
    }
}

private let socketPollCallback: uv_poll_cb = { handle, status, events in
    guard let handle, let data = handle.pointee.data else { return }
    let me = Unmanaged<SocketPoll>.fromOpaque(data).takeUnretainedValue()
    me.loop.ioActivity &+= 1
    guard !me.isClosing, let relay = me.relay else { return }
    relay.pollFired(me, status: status, events: events)
}

// MARK: - Descriptor helpers

/// A non-blocking, close-on-exec pipe of at least `size` bytes (0: the kernel's default).
///
/// `UV_ENOBUFS` when the kernel will not make it that large: above `/proc/sys/fs/pipe-max-size`,
/// or for an unprivileged user once its pipes hold `pipe-user-pages-soft` pages in all (64 MiB by
/// default; past that, new pipes even shrink to two pages). Splicing through a small pipe is no
/// faster than the buffered relay, so the caller had better keep that.
private func makePipe(size: Int) throws(UVError) -> (read: Int32, write: Int32, capacity: Int) {
    var fds: (Int32, Int32) = (-1, -1)
    let rc = withUnsafeMutablePointer(to: &fds) {
        $0.withMemoryRebound(to: Int32.self, capacity: 2) { switchyard_pipe2($0, O_NONBLOCK | O_CLOEXEC) }
    }
    if rc < 0 { throw UVError(-errno) }
    if size > 0 {
        _ = fcntl(fds.0, SWITCHYARD_F_SETPIPE_SZ, Int32(clamping: size))
    }
    let capacity = Int(fcntl(fds.0, SWITCHYARD_F_GETPIPE_SZ))
    if capacity <= 0 || capacity < size {
        _ = Glibc.close(fds.0)
        _ = Glibc.close(fds.1)
        throw UVError(Int32(UV_ENOBUFS.rawValue))
    }
    return (fds.0, fds.1, capacity)
}

private func duplicate(_ fd: Int32) throws(UVError) -> Int32 {
    let copy = fcntl(fd, F_DUPFD_CLOEXEC, 0)
    if copy < 0 { throw UVError(-errno) }
    return copy
}

#else

public final class SpliceRelay {
    public enum Side: UInt8, Sendable {
        case a, b

        public var other: Side { self == .a ? .b : .a }
    }

    public static let defaultPipeSize = 512 * 1024
    public var delegate: (any SpliceRelayDelegate)?
    public var descriptors: [Int32] { [] }
    public var bufferedBytes: Int { 0 }
    public var unacknowledgedBytes: Int { 0 }

    private init() {}

    /// splice(2) is Linux's: not available here.
    public static func takeOver(
        _ a: TCPStream, _ b: TCPStream, pipeSize: Int = SpliceRelay.defaultPipeSize,
        delegate: (any SpliceRelayDelegate)?
    ) throws(UVError) -> SpliceRelay {
        throw UVError(Int32(UV_ENOSYS.rawValue))
    }

    public func close(reset: Bool = false) {}
}

#endif
