import Testing
import Synchronization
@testable import SwitchyardUV

/// Records a stream's events and echoes or collects what it reads.
final class Recorder: TCPStreamDelegate {
    var received: [UInt8] = []
    var eof = false
    var connected: UVError?? = .none
    var failures: [UVError] = []
    var drained = 0
    var shutdowns = 0
    var closed = false
    var echoTo: TCPStream?

    func stream(_ stream: TCPStream, didRead buffer: UnsafeMutableRawPointer, count: Int) {
        if let echoTo {
            _ = echoTo.write(buffer: buffer, count: count)
        } else {
            received.append(contentsOf: UnsafeRawBufferPointer(start: buffer, count: count))
            stream.loop.buffers.give(buffer)
        }
    }
    func streamDidReachEOF(_ stream: TCPStream) { eof = true }
    func stream(_ stream: TCPStream, didFail error: UVError) { failures.append(error) }
    func stream(_ stream: TCPStream, didConnect error: UVError?) { connected = .some(error) }
    func streamDidDrain(_ stream: TCPStream) { drained += 1 }
    func streamDidShutdown(_ stream: TCPStream) { shutdowns += 1 }
    func streamDidClose(_ stream: TCPStream) { closed = true }
}

func write(_ bytes: [UInt8], to stream: TCPStream) -> UVError? {
    let pool = stream.loop.buffers
    var offset = 0
    while offset < bytes.count {
        let n = min(pool.bufferSize, bytes.count - offset)
        let b = pool.take()
        bytes.withUnsafeBytes { src in b.copyMemory(from: src.baseAddress! + offset, byteCount: n) }
        if let error = stream.write(buffer: b, count: n) { return error }
        offset += n
    }
    return nil
}

@Suite struct TCPStreamTests {
    /// As the runtime does: a write to a reset connection must fail with EPIPE, not kill the process.
    init() { signal(SIGPIPE, SIG_IGN) }

    @Test func listenerReportsTheRealPortAndAcceptsAConnection() throws {
        let loop = try EventLoop()
        let pair = try ConnectedPair(loop)
        let (client, clientSide, serverSide) = (pair.client, pair.clientSide, pair.serverSide)
        #expect(pair.listener.boundAddress.port != 0)
        #expect(pair.listener.boundAddress.ip == "127.0.0.1")
        try pair.server.startReading()

        let payload = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        #expect(write(payload, to: client) == nil)
        let shutDownAtOnce = try client.shutdown()
        runLoop(loop) { serverSide.eof }
        #expect(serverSide.received == payload, "every byte arrives, in order")
        #expect(clientSide.shutdowns == (shutDownAtOnce ? 0 : 1), "a deferred shutdown is reported once, an immediate one never")
        #expect(pair.server.peerAddress()?.port == client.localAddress()?.port)
        pair.closeAll(loop)
    }

    @Test func shutdownWithNothingQueuedIsImmediate() throws {
        let loop = try EventLoop()
        let pair = try ConnectedPair(loop)
        try pair.server.startReading()
        #expect(write([1, 2, 3], to: pair.client) == nil)
        #expect(try pair.client.shutdown(), "nothing queued: the FIN goes out at once")
        runLoop(loop) { pair.serverSide.eof }
        #expect(pair.serverSide.received == [1, 2, 3])
        #expect(pair.clientSide.shutdowns == 0)
        pair.closeAll(loop)
    }

    @Test func connectToAClosedPortFails() throws {
        let loop = try EventLoop()
        // Find a port nobody listens on: bind one, note it, close it.
        let probe = try TCPListener(loop: loop, address: SocketAddress(ip: "127.0.0.1", port: 0)) { _ in }
        let port = probe.boundAddress.port
        probe.close()
        runLoop(loop) { probe.isClosing }

        let client = try TCPStream(loop: loop)
        let rec = Recorder()
        client.delegate = rec
        try client.connect(to: SocketAddress(ip: "127.0.0.1", port: port))
        runLoop(loop) { rec.connected != nil }
        #expect(rec.connected == .some(.connectionRefused))
        client.close()
        runLoop(loop) { rec.closed }
        closeLoop(loop)
    }

    @Test func queuedWritesCrossTheHighWaterMarkAndDrain() throws {
        let loop = try EventLoop(bufferSize: 16 * 1024)
        let pair = try ConnectedPair(loop)
        let (client, clientSide) = (pair.client, pair.clientSide)
        client.highWaterMark = 64 * 1024
        client.lowWaterMark = 16 * 1024

        // The server does not read: the kernel buffers fill and writes start to queue.
        let chunk = [UInt8](repeating: 7, count: 16 * 1024)
        var written = 0
        while !client.isAboveHighWaterMark && written < 64 * 1024 * 1024 {
            #expect(write(chunk, to: client) == nil)
            written += chunk.count
        }
        #expect(client.isAboveHighWaterMark, "writes queue up once the peer stops reading")
        #expect(clientSide.drained == 0)

        try pair.server.startReading()
        runLoop(loop, seconds: 10) { clientSide.drained == 1 }
        runLoop(loop, seconds: 10) { pair.serverSide.received.count == written }
        #expect(client.queuedBytes == 0)
        pair.closeAll(loop)
    }

    @Test func aWriteToAResetConnectionFailsAtOnceAndGivesItsBufferBack() throws {
        let loop = try EventLoop()
        let pair = try ConnectedPair(loop)
        pair.server.closeWithReset()
        runLoop(loop) { pair.serverSide.closed }
        // The RST has reached the client's socket (loopback delivers it inside the server's close):
        // the synchronous send fails, nothing is queued, and the buffer is back in the pool.
        let buffer = loop.buffers.take()
        let error = pair.client.write(buffer: buffer, count: 100)
        #expect(error == .connectionReset || error == UVError(-EPIPE), "\(String(describing: error))")
        #expect(pair.client.queuedBytes == 0)
        #expect(loop.buffers.outstanding == 0)
        pair.client.close()
        pair.listener.close()
        runLoop(loop) { pair.clientSide.closed }
        #expect(pair.clientSide.failures.isEmpty, "a write that fails at once is returned, not reported again")
        closeLoop(loop)
    }

    @Test func closingWithQueuedWritesReturnsTheirBuffers() throws {
        let loop = try EventLoop(bufferSize: 16 * 1024)
        let pair = try ConnectedPair(loop)
        let chunk = [UInt8](repeating: 1, count: 16 * 1024)
        while pair.client.queuedBytes == 0 { _ = write(chunk, to: pair.client) }
        #expect(loop.buffers.outstanding > 0)
        // closeAll checks that every buffer is back in the pool once the handles are closed.
        pair.closeAll(loop)
        #expect(pair.clientSide.failures.isEmpty, "cancelled writes are not reported as failures")
    }
}

@Suite struct EventLoopTests {
    @Test func executeRunsWorkFromAnotherThreadOnTheLoop() throws {
        let loop = try EventLoop()
        let counter = Mutex(0)
        let done = Mutex(false)
        let thread = Thread0 {
            for _ in 0..<100 { loop.execute { counter.withLock { $0 += 1 } } }
            loop.execute { done.withLock { $0 = true } }
        }
        thread.start()
        runLoop(loop) { done.withLock { $0 } }
        #expect(counter.withLock { $0 } == 100, "every submitted job ran, even when wake-ups coalesce")
        thread.join()
        closeLoop(loop)
    }

    @Test func timerFiresAndStops() throws {
        let loop = try EventLoop()
        var fired = 0
        let timer = try UVTimer(loop: loop) { fired += 1 }
        timer.start(timeout: 5, repeat: 5)
        runLoop(loop) { fired >= 3 }
        timer.stop()
        let count = fired
        timer.close()
        closeLoop(loop)
        #expect(fired == count)
    }

    @Test func resolvesLiteralsAndLocalhost() throws {
        let v4 = try SocketAddress(ip: "10.1.2.3", port: 80)
        #expect(v4.description == "10.1.2.3:80")
        #expect(v4.withAddressBytes { Array($0) } == [10, 1, 2, 3])
        let v6 = try SocketAddress(ip: "::1", port: 443)
        #expect(v6.description == "[::1]:443")
        #expect(v6.family == .ipv6)
        #expect(try SocketAddress(ip: "0.0.0.0", port: 1).isWildcard)
        let local = try SocketAddress.resolve(host: "localhost", port: 5432)
        #expect(local.first?.port == 5432)
        #expect(throws: UVError.self) { try SocketAddress(ip: "not an ip", port: 1) }
    }
}

/// A minimal joinable thread over pthreads (Foundation-free).
import Glibc
final class Thread0: @unchecked Sendable {
    // @unchecked Sendable: `body` is set once at init and run once on the new thread; `thread` is
    // written by start() and read by join() on the creating thread.
    private let body: @Sendable () -> Void
    private var thread = pthread_t()
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    func start() {
        let box = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { arg in
            let me = Unmanaged<Thread0>.fromOpaque(arg!).takeRetainedValue()
            me.body()
            return nil
        }, box)
    }
    func join() { pthread_join(thread, nil) }
}
