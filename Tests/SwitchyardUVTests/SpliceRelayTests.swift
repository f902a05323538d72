import CLibUV
import Foundation
import Glibc
import Testing
@testable import SwitchyardUV

/// Records a relay's events; closes it (with a reset) when it fails, as a proxy session does.
final class RelayRecorder: SpliceRelayDelegate {
    var read: [SpliceRelay.Side: Int] = [.a: 0, .b: 0]
    var reads = 0
    var eof: Set<SpliceRelay.Side> = []
    var finished = false
    var failures: [(SpliceRelay.Side, UVError)] = []
    var closed = false

    func relay(_ relay: SpliceRelay, didRead count: Int, from side: SpliceRelay.Side) {
        #expect(count > 0)
        read[side, default: 0] += count
        reads += 1
    }
    func relay(_ relay: SpliceRelay, didReachEOF side: SpliceRelay.Side) {
        #expect(!eof.contains(side), "EOF reported once per side")
        eof.insert(side)
    }
    func relayDidFinish(_ relay: SpliceRelay) {
        #expect(!finished)
        finished = true
    }
    func relay(_ relay: SpliceRelay, side: SpliceRelay.Side, didFail error: UVError) {
        failures.append((side, error))
        relay.close(reset: true)
    }
    func relayDidClose(_ relay: SpliceRelay) { closed = true }
}

/// Two loopback connections on one loop, spliced together in the middle:
/// `peerA` ⇄ [a ⇄ relay ⇄ b] ⇄ `peerB`.
final class SplicedPair {
    let loop: EventLoop
    let listener: TCPListener
    let peerA: TCPStream
    let peerB: TCPStream
    let recA = Recorder()
    let recB = Recorder()
    let a: TCPStream
    let b: TCPStream
    let recMiddleA = Recorder()
    let recMiddleB = Recorder()
    let events = RelayRecorder()
    var relay: SpliceRelay!
    /// The targets (`socket:[N]`, `pipe:[N]`) of the relay's descriptors while it ran.
    var relayTargets: [String] = []

    /// `prepare` runs on the connected pair before the relay takes over (socket options, …).
    init(loop: EventLoop, splice: Bool = true, prepare: ((SplicedPair) throws -> Void)? = nil) throws {
        self.loop = loop
        var accepted: [TCPStream] = []
        listener = try TCPListener(loop: loop, address: SocketAddress(ip: "127.0.0.1", port: 0)) { l in
            if let s = try? l.accept() { accepted.append(s) }
        }
        // peerA connects; its accepted end is the relay's `a`.
        peerA = try TCPStream(loop: loop)
        peerA.delegate = recA
        try peerA.connect(to: listener.boundAddress)
        runLoop(loop) { [recA] in recA.connected != nil && accepted.count == 1 }
        a = accepted[0]
        // The relay's `b` connects; its accepted end is peerB.
        b = try TCPStream(loop: loop)
        b.delegate = recMiddleB
        try b.connect(to: listener.boundAddress)
        runLoop(loop) { [recMiddleB] in recMiddleB.connected != nil && accepted.count == 2 }
        peerB = accepted[1]
        a.delegate = recMiddleA
        peerB.delegate = recB
        try peerA.startReading()
        try peerB.startReading()
        try prepare?(self)
        if splice {
            let originals = [try a.fileDescriptor(), try b.fileDescriptor()]
            relay = try SpliceRelay.takeOver(a, b, delegate: events)
            // The sockets live on through duplicates: the originals' registrations must be gone
            // from the epoll set, or it reports events under numbers that are closed (or reused).
            let registered = try epollSet(loop)
            #expect(registered.isDisjoint(with: originals), "still registered: \(registered.intersection(originals))")
            relayTargets = relay.descriptors.map(descriptorTarget)
            #expect(relayTargets.allSatisfy { $0.hasPrefix("socket:") || $0.hasPrefix("pipe:") }, "\(relayTargets)")
        }
    }

    /// Closes everything and checks that nothing of the relay is left open.
    func tearDown(sourceLocation: SourceLocation = #_sourceLocation) {
        if let relay {
            relay.close()
            runLoop(loop, until: { [events] in events.closed }, sourceLocation: sourceLocation)
            let open = Set(openDescriptorTargets())
            let leaked = relayTargets.filter(open.contains)
            #expect(leaked.isEmpty, "the relay's descriptors are still open: \(leaked)", sourceLocation: sourceLocation)
        }
        peerA.close()
        peerB.close()
        listener.close()
        runLoop(loop, until: { [recA, recB, recMiddleA, recMiddleB] in
            recA.closed && recB.closed && recMiddleA.closed && recMiddleB.closed
        }, sourceLocation: sourceLocation)
        #expect(loop.buffers.outstanding == 0, sourceLocation: sourceLocation)
        closeLoop(loop, sourceLocation: sourceLocation)
    }
}

/// What `fd` refers to (`socket:[123]`, `pipe:[456]`, a path), from /proc/self/fd.
func descriptorTarget(_ fd: Int32) -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)")) ?? "closed"
}

/// Everything this process has open (other tests run in parallel, so compare identities, not counts).
func openDescriptorTargets() -> [String] {
    let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    return fds.compactMap { Int32($0) }.map(descriptorTarget)
}

func pattern(_ count: Int, seed: UInt32) -> [UInt8] {
    var x = seed | 1
    return (0..<count).map { _ in
        x ^= x << 13
        x ^= x >> 17
        x ^= x << 5
        return UInt8(truncatingIfNeeded: x)
    }
}

/// FNV-1a, for failure messages that name a checksum rather than dump megabytes.
func checksum(_ bytes: [UInt8]) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    return h
}

@Suite struct SpliceRelayTests {
    init() { signal(SIGPIPE, SIG_IGN) }

    @Test func bytesBothWaysArriveIntactThenBothEOFsFinishTheRelay() throws {
        let loop = try EventLoop()
        let pair = try SplicedPair(loop: loop)
        #expect(pair.relay.pipeCapacities.0 >= 64 * 1024)
        let toB = pattern(6 << 20, seed: 0xA11CE)
        let toA = pattern(5 << 20 + 12345, seed: 0xB0B)
        #expect(write(toB, to: pair.peerA) == nil)
        #expect(write(toA, to: pair.peerB) == nil)
        try pair.peerA.shutdown()
        try pair.peerB.shutdown()
        runLoop(loop, seconds: 30) { pair.recA.eof && pair.recB.eof && pair.events.finished }

        #expect(pair.recB.received.count == toB.count)
        #expect(checksum(pair.recB.received) == checksum(toB), "a → b arrived altered")
        #expect(pair.recA.received.count == toA.count)
        #expect(checksum(pair.recA.received) == checksum(toA), "b → a arrived altered")
        #expect(pair.events.read[.a] == toB.count, "bytes read from a are counted")
        #expect(pair.events.read[.b] == toA.count, "bytes read from b are counted")
        #expect(pair.events.eof == [.a, .b])
        #expect(pair.events.failures.isEmpty, "\(pair.events.failures)")
        #expect(pair.recA.failures.isEmpty && pair.recB.failures.isEmpty)
        // The streams the relay took over were closed, and reported it.
        #expect(pair.recMiddleA.closed && pair.recMiddleB.closed)
        pair.tearDown()
    }

    @Test(arguments: [SpliceRelay.Side.a, .b])
    func halfCloseOneWayThenTheOther(first: SpliceRelay.Side) throws {
        let loop = try EventLoop()
        let pair = try SplicedPair(loop: loop)
        let (firstPeer, firstReceiver) = first == .a ? (pair.peerA, pair.recB) : (pair.peerB, pair.recA)
        let (secondPeer, secondReceiver) = first == .a ? (pair.peerB, pair.recA) : (pair.peerA, pair.recB)
        let request = pattern(1 << 20, seed: 7)
        let reply = pattern(2 << 20 + 1, seed: 8)

        // One side sends and shuts down: the other gets everything, then EOF; the relay goes on.
        #expect(write(request, to: firstPeer) == nil)
        try firstPeer.shutdown()
        runLoop(loop, seconds: 20) { firstReceiver.eof }
        #expect(checksum(firstReceiver.received) == checksum(request))
        #expect(firstReceiver.received.count == request.count)
        #expect(!pair.events.finished, "one direction ended, the other is still open")
        #expect(pair.events.eof == [first])

        // The other direction still flows: a reply after the EOF, then its own EOF.
        #expect(write(reply, to: secondPeer) == nil)
        try secondPeer.shutdown()
        runLoop(loop, seconds: 20) { secondReceiver.eof && pair.events.finished }
        #expect(checksum(secondReceiver.received) == checksum(reply))
        #expect(secondReceiver.received.count == reply.count)
        #expect(pair.events.failures.isEmpty, "\(pair.events.failures)")
        pair.tearDown()
    }

    @Test(arguments: [SpliceRelay.Side.a, .b])
    func aResetOnOneSideClosesBothWithAReset(side: SpliceRelay.Side) throws {
        let loop = try EventLoop()
        let pair = try SplicedPair(loop: loop)
        let (resetter, survivorRec) = side == .a ? (pair.peerA, pair.recB) : (pair.peerB, pair.recA)
        // Some traffic first.
        #expect(write(pattern(100_000, seed: 3), to: resetter) == nil)
        runLoop(loop) { survivorRec.received.count == 100_000 }

        resetter.closeWithReset()
        runLoop(loop) { !pair.events.failures.isEmpty && pair.events.closed }
        #expect(pair.events.failures.first?.0 == side, "the failure is reported on the side that was reset")
        #expect(pair.events.failures.first?.1 == .connectionReset, "\(pair.events.failures)")
        #expect(pair.events.failures.count == 1)
        // The survivor sees a reset, not an orderly EOF.
        runLoop(loop) { !survivorRec.failures.isEmpty || survivorRec.eof }
        #expect(survivorRec.failures == [.connectionReset], "survivor: failures \(survivorRec.failures), eof \(survivorRec.eof)")
        pair.tearDown()
    }

    @Test func aSlowReaderHoldsTheSenderBackInsteadOfFillingMemory() throws {
        let loop = try EventLoop()
        // Small kernel buffers around the relay, so that what it holds back is visible.
        let pair = try SplicedPair(loop: loop) { pair in
            for (stream, option) in [(pair.peerB, SO_RCVBUF), (pair.b, SO_SNDBUF), (pair.a, SO_RCVBUF)] {
                var size: Int32 = 64 * 1024
                let fd = try stream.fileDescriptor()
                #expect(setsockopt(fd, SOL_SOCKET, option, &size, socklen_t(MemoryLayout<Int32>.size)) == 0)
            }
        }
        let payload = pattern(16 << 20, seed: 11)
        pair.peerB.stopReading()
        #expect(write(payload, to: pair.peerA) == nil)
        // Let the relay run for a while: it moves what the kernel buffers take, then stalls.
        var lastRead = -1
        var stable = 0
        runLoop(loop, seconds: 10) {
            let now = pair.events.read[.a] ?? 0
            stable = now == lastRead ? stable + 1 : 0
            lastRead = now
            return stable > 200
        }
        let inFlight = pair.events.read[.a] ?? 0
        #expect(inFlight > 0)
        #expect(inFlight < 4 << 20, "the relay read \(inFlight) bytes while nobody read the other end")
        #expect(pair.peerA.queuedBytes > 0, "the sender is held back")

        try pair.peerB.startReading()
        try pair.peerA.shutdown()
        runLoop(loop, seconds: 30) { pair.recB.eof }
        #expect(pair.recB.received.count == payload.count)
        #expect(checksum(pair.recB.received) == checksum(payload))
        pair.tearDown()
    }

    @Test func refusesStreamsWithQueuedWritesAndLeavesThemWorking() throws {
        let loop = try EventLoop(bufferSize: 16 * 1024)
        let pair = try SplicedPair(loop: loop, splice: false)
        // peerB does not read: writes from b queue up in libuv.
        pair.peerB.stopReading()
        let chunk = [UInt8](repeating: 9, count: 16 * 1024)
        while pair.b.queuedBytes == 0 { #expect(write(chunk, to: pair.b) == nil) }
        let sockets = [descriptorTarget(try pair.a.fileDescriptor()), descriptorTarget(try pair.b.fileDescriptor())]
        let before = Set(openDescriptorTargets())
        #expect(throws: UVError(Int32(UV_EBUSY.rawValue))) {
            _ = try SpliceRelay.takeOver(pair.a, pair.b, delegate: pair.events)
        }
        #expect(!pair.a.isClosing && !pair.b.isClosing, "the streams are untouched")
        // Nothing of a relay is left open: no duplicate of either socket (same target), and every
        // pipe that appeared closes again (tests running in parallel open pipes of their own; a
        // leaked one never closes).
        let open = openDescriptorTargets()
        for socket in sockets {
            #expect(open.filter { $0 == socket }.count == 1, "\(socket) is open more than once")
        }
        let newPipes = Set(open).subtracting(before).filter { $0.hasPrefix("pipe:") }
        runLoop(loop, seconds: 30) { newPipes.isDisjoint(with: openDescriptorTargets()) }
        // Still a working stream: a → peerA.
        #expect(write([1, 2, 3], to: pair.a) == nil)
        runLoop(loop) { pair.recA.received == [1, 2, 3] }
        pair.a.close()
        pair.b.close()
        pair.tearDown()
    }

    @Test func aPipeTheKernelWillNotGrantKeepsTheStreams() throws {
        let loop = try EventLoop()
        let pair = try SplicedPair(loop: loop, splice: false)
        let before = Set(openDescriptorTargets())
        // Far beyond any pipe size the kernel accepts (even for root): splice would not pay.
        #expect(throws: UVError(Int32(UV_ENOBUFS.rawValue))) {
            _ = try SpliceRelay.takeOver(pair.a, pair.b, pipeSize: Int(Int32.max), delegate: pair.events)
        }
        #expect(!pair.a.isClosing && !pair.b.isClosing, "the streams are untouched")
        // Tests running in parallel open (and close) pipes of their own: every pipe that appeared
        // must close again; one the refused relay leaked never does.
        let newPipes = Set(openDescriptorTargets()).subtracting(before).filter { $0.hasPrefix("pipe:") }
        runLoop(loop, seconds: 30) { newPipes.isDisjoint(with: openDescriptorTargets()) }
        let pipesLeft = newPipes.intersection(openDescriptorTargets())
        #expect(pipesLeft.isEmpty, "pipes of the refused relay still open: \(pipesLeft)")
        #expect(write([4, 5, 6], to: pair.a) == nil)
        runLoop(loop) { pair.recA.received == [4, 5, 6] }
        pair.a.close()
        pair.b.close()
        pair.tearDown()
    }
}
