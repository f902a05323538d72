import Testing
import CLibUV
#if canImport(Glibc)
import Glibc
#endif
@testable import SwitchyardUV

/// The descriptors registered in `loop`'s epoll set (the `tfd:` lines of its fdinfo).
func epollSet(_ loop: EventLoop) throws -> Set<Int32> {
    let path = "/proc/self/fdinfo/\(uv_backend_fd(loop.raw))"
    guard let file = fopen(path, "r") else { throw UVError(-errno) }
    defer { fclose(file) }
    var fds = Set<Int32>()
    var line: UnsafeMutablePointer<CChar>?
    var capacity = 0
    while getline(&line, &capacity, file) > 0 {
        let text = String(cString: line!)
        if text.hasPrefix("tfd:"), let n = Int32(text.dropFirst(4).split(separator: " ").first ?? "") {
            fds.insert(n)
        }
    }
    free(line)
    return fds
}

/// On its first read, closes `other` (unless it is already closing) and, in the same loop turn,
/// opens and connects a new stream: its socket usually gets the number just freed.
final class CloseOtherOnRead: TCPStreamDelegate {
    var other: TCPStream?
    var reads = 0
    var closed = false
    var replacement: TCPStream?
    let replacementSide = Recorder()
    let connectTo: SocketAddress

    init(connectTo: SocketAddress) { self.connectTo = connectTo }

    func stream(_ stream: TCPStream, didRead buffer: UnsafeMutableRawPointer, count: Int) {
        reads += 1
        stream.loop.buffers.give(buffer)
        if let other, !other.isClosing {
            other.close()
            replacement = try? TCPStream(loop: stream.loop, family: .ipv4)
            replacement?.delegate = replacementSide
            try? replacement?.connect(to: connectTo)
        }
    }
    func streamDidReachEOF(_ stream: TCPStream) {}
    func stream(_ stream: TCPStream, didFail error: UVError) {}
    func stream(_ stream: TCPStream, didConnect error: UVError?) {}
    func streamDidDrain(_ stream: TCPStream) {}
    func streamDidShutdown(_ stream: TCPStream) {}
    func streamDidClose(_ stream: TCPStream) { closed = true }
}

/// `TCPStream.close` closes an idle socket itself (no `epoll_ctl(DEL)` first, see
/// `switchyard_tcp_close`); these check what that must keep: the peer sees the FIN, the loop's
/// epoll set forgets the descriptor, and an event already fetched for it is never delivered.
@Suite struct TCPStreamCloseTests {
    init() { signal(SIGPIPE, SIG_IGN) }

    @Test(arguments: [false, true])
    func closingAStreamSendsFINAndLeavesTheEpollSet(afterEOF: Bool) throws {
        let loop = try EventLoop()
        let pair = try ConnectedPair(loop)
        try pair.server.startReading()
        try pair.client.startReading()
        #expect(write([1, 2, 3], to: pair.client) == nil)
        runLoop(loop) { pair.serverSide.received.count == 3 }
        if afterEOF {
            // libuv stops reading at EOF but leaves the descriptor in the epoll set.
            _ = try pair.client.shutdown()
            runLoop(loop) { pair.serverSide.eof }
        }
        let fd = try pair.server.fileDescriptor()
        #expect(try epollSet(loop).contains(fd))

        pair.server.close()
        runLoop(loop) { pair.serverSide.closed && pair.clientSide.eof }
        #expect(try !epollSet(loop).contains(fd), "closing the socket took it out of the epoll set")
        #expect(pair.clientSide.failures.isEmpty, "a FIN, not a reset")
        pair.client.close()
        pair.listener.close()
        runLoop(loop) { pair.clientSide.closed }
        #expect(loop.buffers.outstanding == 0)
        closeLoop(loop)
    }

    @Test func anEventFetchedForAStreamClosedInTheSameTurnIsNotDelivered() throws {
        var reusedInSameTurn = 0
        for _ in 0..<20 {
            let loop = try EventLoop()
            var accepted: [TCPStream] = []
            let extra = try TCPListener(loop: loop, address: SocketAddress(ip: "127.0.0.1", port: 0)) { l in
                if let s = try? l.accept() { accepted.append(s) }
            }
            let a = try ConnectedPair(loop)
            let b = try ConnectedPair(loop)
            let aSide = CloseOtherOnRead(connectTo: extra.boundAddress)
            let bSide = CloseOtherOnRead(connectTo: extra.boundAddress)
            a.server.delegate = aSide
            b.server.delegate = bSide
            aSide.other = b.server
            bSide.other = a.server
            try a.server.startReading()
            try b.server.startReading()
            let fds = [try a.server.fileDescriptor(), try b.server.fileDescriptor()]
            // Both servers are readable before the loop polls: one epoll_wait returns both, and
            // whichever is dispatched first closes the other.
            #expect(write([1], to: a.client) == nil)
            #expect(write([2], to: b.client) == nil)
            runLoop(loop) { aSide.closed || bSide.closed }
            #expect(aSide.reads + bSide.reads == 1, "only the first stream read; the one it closed got nothing (\(aSide.reads), \(bSide.reads))")

            let (survivor, closedFd) = aSide.closed ? (bSide, fds[0]) : (aSide, fds[1])
            let replacement = try #require(survivor.replacement)
            runLoop(loop) { survivor.replacementSide.connected != nil && accepted.count == 1 }
            #expect(survivor.replacementSide.connected == .some(nil), "a socket opened in the same turn connects")
            let reused = try replacement.fileDescriptor() == closedFd
            if reused { reusedInSameTurn += 1 }
            #expect(try epollSet(loop).contains(closedFd) == reused, "only a new socket with that number is registered")

            for s in [a.client, a.server, b.client, b.server, replacement] + accepted { s.close() }
            for l in [a.listener, b.listener, extra] { l.close() }
            runLoop(loop) { aSide.closed && bSide.closed && survivor.replacementSide.closed && a.clientSide.closed && b.clientSide.closed }
            #expect(loop.buffers.outstanding == 0)
            closeLoop(loop)
        }
        // Tests run in parallel and may take the freed number first; most rounds still reuse it.
        print("descriptor reused in the same loop turn in \(reusedInSameTurn) of 20 rounds")
    }
}

/// What a cut stream must look like to its peer, and how a timer sees a reader's progress.
@Suite struct TCPStreamPendingOutputTests {
    init() { signal(SIGPIPE, SIG_IGN) }

    /// Reads a non-blocking socket outside libuv until it ends: the bytes read, and 0 for an EOF or
    /// the errno of the error that ended it (-1: still open after 5 s).
    private func readRaw(_ fd: Int32) -> (Int, Int32) {
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var total = 0
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&pfd, 1, 100)
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 { total += n; continue }
            if n == 0 { return (total, 0) }
            if errno == EAGAIN || errno == EINTR { continue }
            return (total, errno)
        }
        return (total, -1)
    }

    /// Writes 64 KiB chunks to `stream` until libuv has to queue some (the peer is not reading).
    private func fillUntilQueued(_ stream: TCPStream, _ loop: EventLoop) -> Int {
        let chunk = [UInt8](repeating: 0x5a, count: loop.buffers.bufferSize)
        var written = 0
        while stream.queuedBytes == 0 && written < 256 << 20 {
            #expect(write(chunk, to: stream) == nil)
            written += chunk.count
        }
        return written
    }

    /// A shutdown waiting behind queued writes makes libuv refuse `uv_tcp_close_reset`; the close
    /// must still be a reset, or the peer would take the bytes it got, and a FIN, for the whole.
    @Test func closeWithResetResetsEvenWithAShutdownWaitingBehindQueuedWrites() throws {
        let loop = try EventLoop()
        let pair = try ConnectedPair(loop)
        let written = fillUntilQueued(pair.server, loop)
        #expect(pair.server.queuedBytes > 0)
        #expect(try pair.server.shutdown() == false, "the shutdown waits for the queued writes")
        pair.server.closeWithReset()
        // Read the peer's socket directly: libuv 1.44 reports a reset that arrives behind data as
        // an EOF (its POLLHUP shortcut after a short read), which would hide the difference.
        let (received, end) = readRaw(try pair.client.fileDescriptor())
        #expect(end == ECONNRESET, "a reset, not a FIN (0 = EOF)")
        #expect(received < written)
        pair.client.close()
        pair.listener.close()
        runLoop(loop) { pair.clientSide.closed && pair.serverSide.closed }
        #expect(loop.buffers.outstanding == 0)
        closeLoop(loop)
    }

    /// libuv 1.44 reports POLLHUP after a short read as an EOF: a reset that arrives right behind
    /// data must still be reported as the reset it is, not as the peer's clean end.
    @Test func aResetRightBehindDataIsReportedAsAResetNotAnEOF() throws {
        let loop = try EventLoop()
        let pair = try ConnectedPair(loop)
        try pair.client.startReading()
        #expect(write(Array("last words".utf8), to: pair.server) == nil)
        pair.server.closeWithReset()  // data and RST reach the client before its next poll
        runLoop(loop) { !pair.clientSide.failures.isEmpty || pair.clientSide.eof }
        #expect(pair.clientSide.received == Array("last words".utf8))
        #expect(pair.clientSide.failures == [.connectionReset])
        #expect(!pair.clientSide.eof, "reported as a clean end")
        pair.closeAll(loop)
    }

    /// A clean FIN right behind data, with our own side already shut down (POLLHUP too), stays an
    /// EOF.
    @Test func aFINRightBehindDataAfterOurShutdownIsAnEOF() throws {
        let loop = try EventLoop()
        let pair = try ConnectedPair(loop)
        try pair.client.startReading()
        try pair.server.startReading()
        #expect(try pair.client.shutdown())
        runLoop(loop) { pair.serverSide.eof }
        #expect(write(Array("answer".utf8), to: pair.server) == nil)
        #expect(try pair.server.shutdown())
        runLoop(loop) { !pair.clientSide.failures.isEmpty || pair.clientSide.eof }
        #expect(pair.clientSide.received == Array("answer".utf8))
        #expect(pair.clientSide.eof)
        #expect(pair.clientSide.failures.isEmpty)
        pair.closeAll(loop)
    }

    /// `unacknowledgedBytes` counts libuv's queue and the kernel's send queue, stays put while the
    /// peer reads nothing, and falls to 0 once it has read everything.
    @Test func unacknowledgedBytesFollowThePeersReading() throws {
        let loop = try EventLoop()
        let pair = try ConnectedPair(loop)
        let written = fillUntilQueued(pair.server, loop)
        let first = pair.server.unacknowledgedBytes
        #expect(first > pair.server.queuedBytes, "the kernel's send queue is counted too")
        #expect(first <= written)
        runLoop(loop) { pair.server.queuedBytes == 0 || pair.server.unacknowledgedBytes == first }
        #expect(pair.server.unacknowledgedBytes == first, "nothing moves while the peer does not read")
        try pair.client.startReading()
        runLoop(loop) { pair.clientSide.received.count == written }
        runLoop(loop) { pair.server.unacknowledgedBytes == 0 }
        #expect(pair.server.unacknowledgedBytes == 0)
        pair.server.close()
        #expect(pair.server.unacknowledgedBytes == 0, "0 once closed")
        pair.closeAll(loop)  // closing the server again is a no-op
    }
}

