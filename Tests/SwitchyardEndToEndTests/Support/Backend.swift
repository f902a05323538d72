// Test backends: one thread per backend running a poll(2) loop over its listener and all of its
// connections (non-blocking), so a backend can hold hundreds of connections and push bulk data
// with real TCP backpressure.
import Dispatch
import Foundation
import Glibc
import Synchronization

/// What a backend does with each accepted connection.
enum BackendBehavior: Sendable {
    /// Echoes everything; on EOF flushes, then shuts down writing and closes.
    case echo
    /// On accept sends its name + "\n", then behaves like `echo` (so a held connection stays open).
    case identify
    /// Reads (and checksums) until EOF, then sends `replyBytes` bytes of
    /// `PayloadStream(seed: checksum of the request)`, then closes.
    case replyAfterEOF(replyBytes: Int)
    /// Sends `sendBytes` bytes of `PayloadStream(seed:)` as fast as the peer takes them, then shuts
    /// down writing; meanwhile reads and checksums everything; closes after reading EOF.
    case bulk(sendBytes: Int, seed: UInt64)
    /// Accepts and closes at once (FIN).
    case closeOnAccept
    /// Accepts and resets at once (SO_LINGER 0 close, RST).
    case resetOnAccept
    /// Echoes what it reads at once (small exchanges: whatever the socket takes); a read that
    /// contains `abortOn` is echoed and the connection reset right behind it (an aborting server).
    case echoThenAbort(abortOn: UInt8)
}

/// What a backend saw on one connection, recorded when the connection is gone.
struct BackendConnectionRecord: Sendable, CustomStringConvertible {
    enum Closing: String, Sendable {
        /// We closed after an orderly exchange (both directions finished).
        case finished
        /// The peer reset the connection or a socket error occurred.
        case peerReset
        /// We reset it (`resetAllConnections()` or `.resetOnAccept`).
        case resetByBackend
        /// We closed at once (`.closeOnAccept`) or because the backend stopped.
        case closedByBackend
    }

    var id: Int
    var peer: String
    var bytesReceived: Int
    var receivedChecksum: UInt64
    var bytesSent: Int
    /// True when the peer's FIN was read.
    var sawEOF: Bool
    var closing: Closing

    var description: String {
        "#\(id) from \(peer): received \(bytesReceived) B, sent \(bytesSent) B, sawEOF \(sawEOF), \(closing.rawValue)"
    }
}

/// A backend server on 127.0.0.1 (or another loopback address) with an ephemeral port. Call `stop()` (tests do so in a `defer`);
/// deinit stops it too.
final class Backend: Sendable {
    let name: String
    let port: UInt16
    private let core: BackendCore

    /// The loopback address it listens on (127.0.0.1 unless another of 127/8 was asked for).
    let ip: String

    /// `ip`, `port`: another loopback address, a given port (0: any free one).
    init(name: String, behavior: BackendBehavior, ip: String = "127.0.0.1", port: UInt16 = 0) throws {
        self.name = name
        self.ip = ip
        let listener = try Socket.makeLoopbackListener(ip: ip, port: port)
        let wake: (read: Int32, write: Int32)
        do {
            wake = try Socket.makePipe()
            try Socket.setNonBlocking(wake.read)
            try Socket.setNonBlocking(wake.write)
        } catch {
            close(listener.fd)
            throw error
        }
        self.port = listener.port
        core = BackendCore(
            name: name, behavior: behavior, listenFD: listener.fd,
            wakeRead: wake.read, wakeWrite: wake.write
        )
        let core = self.core
        let thread = Thread { core.run() }
        thread.name = "backend \(name)"
        thread.start()
    }

    deinit { core.stop() }

    /// "IP:PORT", for `server =` lines.
    var address: String { "\(ip):\(port)" }

    func stop() { core.stop() }

    /// Resets (RST) every connection currently open.
    func resetAllConnections() { core.request { $0.resetRequested = true } }

    /// Connections accepted so far. Includes switchyard's health probes (a probe connects and
    /// closes without sending), so tests that count relayed connections use `dataConnectionCount`.
    var acceptedCount: Int { core.shared.withLock { $0.accepted } }
    /// Connections (open or finished) on which at least one byte was received: relayed client
    /// traffic, never a bare health probe.
    var dataConnectionCount: Int { core.shared.withLock { $0.withData } }
    var activeCount: Int { core.shared.withLock { $0.active } }
    var finishedConnections: [BackendConnectionRecord] { core.shared.withLock { $0.finished } }

    /// Waits until at least `count` connections have finished; returns the records.
    func waitForFinishedConnections(_ count: Int, timeout: Duration = .seconds(5)) throws -> [BackendConnectionRecord] {
        try waitFor("backend \(name) to see \(count) connection(s) finish (now \(finishedConnections))", timeout: timeout) {
            let records = finishedConnections
            return records.count >= count ? records : nil
        }
    }

    /// Waits for a finished connection matching `predicate` (e.g. the one that carried data, as
    /// opposed to a health probe) and returns its record.
    func waitForRecord(
        _ what: String, timeout: Duration = .seconds(5), where predicate: (BackendConnectionRecord) -> Bool
    ) throws -> BackendConnectionRecord {
        try waitFor("backend \(name) to record \(what) (finished so far: \(finishedConnections))", timeout: timeout) {
            finishedConnections.first(where: predicate)
        }
    }

    /// The finished connection that received data: the relayed one in single-connection tests.
    func waitForRelayedConnection(timeout: Duration = .seconds(5)) throws -> BackendConnectionRecord {
        try waitForRecord("a finished connection that received data", timeout: timeout) { $0.bytesReceived > 0 }
    }

    /// Waits until exactly `count` connections are open.
    func waitForActive(_ count: Int, timeout: Duration = .seconds(5)) throws {
        try waitUntil("backend \(name) to have \(count) open connection(s) (now \(activeCount))", timeout: timeout) {
            activeCount == count
        }
    }
}

/// Shared between the test thread and the backend thread; all mutable state is in `shared`.
private final class BackendCore: Sendable {
    struct Shared {
        var accepted = 0
        var active = 0
        var withData = 0
        var finished: [BackendConnectionRecord] = []
        var stopRequested = false
        var resetRequested = false
    }

    let name: String
    let behavior: BackendBehavior
    let listenFD: Int32
    let wakeRead: Int32
    let wakeWrite: Int32
    let shared = Mutex(Shared())
    let stopped = DispatchSemaphore(value: 0)

    init(name: String, behavior: BackendBehavior, listenFD: Int32, wakeRead: Int32, wakeWrite: Int32) {
        self.name = name
        self.behavior = behavior
        self.listenFD = listenFD
        self.wakeRead = wakeRead
        self.wakeWrite = wakeWrite
    }

    func request(_ change: (inout Shared) -> Void) {
        shared.withLock { change(&$0) }
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }

    func stop() {
        let first = shared.withLock { state -> Bool in
            defer { state.stopRequested = true }
            return !state.stopRequested
        }
        guard first else { return }
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
        if stopped.wait(timeout: .now() + 10) == .timedOut {
            // The loop thread is stuck; leak its descriptors rather than closing them under it.
            return
        }
        close(wakeWrite)
    }

    // MARK: The loop (runs on the backend's own thread; `conns` is local to it)

    private struct Conn {
        let fd: Int32
        let id: Int
        let peer: String
        var out: [UInt8] = []
        var outOffset = 0
        var readEOF = false
        var sentFIN = false
        var bytesReceived = 0
        var checksum = Checksum()
        var bytesSent = 0
        var generator: PayloadStream?
        var generateRemaining = 0
        var pendingOut: Int { out.count - outOffset }
    }

    private static let chunkSize = 65536
    private static let echoBufferLimit = 256 * 1024

    func run() {
        var conns: [Int32: Conn] = [:]
        var nextID = 0
        var readBuffer = [UInt8](repeating: 0, count: BackendCore.chunkSize)

        loop: while true {
            var order: [Int32] = []
            var fds = [pollfd(fd: wakeRead, events: pollIn, revents: 0), pollfd(fd: listenFD, events: pollIn, revents: 0)]
            for (fd, conn) in conns {
                order.append(fd)
                fds.append(pollfd(fd: fd, events: interest(conn), revents: 0))
            }
            let rc = poll(&fds, nfds_t(fds.count), 1000)
            if rc < 0 && errno != EINTR { break loop }

            if fds[0].revents != 0 {
                var sink = [UInt8](repeating: 0, count: 64)
                while read(wakeRead, &sink, sink.count) > 0 {}
            }
            let (stop, resetAll) = shared.withLock { state -> (Bool, Bool) in
                defer { state.resetRequested = false }
                return (state.stopRequested, state.resetRequested)
            }
            if stop { break loop }
            if resetAll {
                for (_, conn) in conns {
                    Socket.setLingerZero(conn.fd)
                    finish(conn, .resetByBackend)
                }
                conns.removeAll()
                continue loop
            }
            if rc <= 0 { continue loop }

            if fds[1].revents & pollIn != 0 {
                while true {
                    guard let fd = Socket.acceptNonBlocking(listenFD) else { break }
                    let peer = Socket.peerAddress(fd)
                    nextID += 1
                    var conn = Conn(fd: fd, id: nextID, peer: "\(peer.ip):\(peer.port)")
                    shared.withLock {
                        $0.accepted += 1
                        $0.active += 1
                    }
                    switch behavior {
                    case .closeOnAccept:
                        finish(conn, .closedByBackend)
                        continue
                    case .resetOnAccept:
                        Socket.setLingerZero(fd)
                        finish(conn, .resetByBackend)
                        continue
                    case .identify:
                        conn.out = Array("\(name)\n".utf8)
                    case .bulk(let sendBytes, let seed):
                        conn.generator = PayloadStream(seed: seed)
                        conn.generateRemaining = sendBytes
                    case .echo, .replyAfterEOF, .echoThenAbort:
                        break
                    }
                    conns[fd] = conn
                }
            }

            for (index, fd) in order.enumerated() {
                let revents = fds[index + 2].revents
                guard revents != 0, var conn = conns[fd] else { continue }
                var closing: BackendConnectionRecord.Closing?

                // Read side.
                if !conn.readEOF && revents & (pollIn | pollHup | pollErr) != 0 {
                    let n = readBuffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, BackendCore.chunkSize, 0) }
                    if n > 0 {
                        if conn.bytesReceived == 0 { shared.withLock { $0.withData += 1 } }
                        conn.bytesReceived += n
                        readBuffer.withUnsafeBytes { conn.checksum.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                        if case .echoThenAbort(let marker) = behavior {
                            let chunk = Array(readBuffer[0..<n])
                            let sent = chunk.withUnsafeBytes { Glibc.send(fd, $0.baseAddress!, n, Int32(MSG_NOSIGNAL)) }
                            if sent > 0 { conn.bytesSent += sent }
                            if chunk.contains(marker) {
                                Socket.setLingerZero(fd)
                                conns[fd] = nil
                                finish(conn, .resetByBackend)
                                continue
                            }
                            conns[fd] = conn
                            continue
                        }
                        switch behavior {
                        case .echo, .identify:
                            if conn.outOffset == conn.out.count {
                                conn.out.removeAll(keepingCapacity: true)
                                conn.outOffset = 0
                            } else if conn.outOffset > BackendCore.echoBufferLimit {
                                conn.out.removeFirst(conn.outOffset)
                                conn.outOffset = 0
                            }
                            conn.out += readBuffer[0..<n]
                        default:
                            break
                        }
                    } else if n == 0 {
                        conn.readEOF = true
                        if case .replyAfterEOF(let replyBytes) = behavior {
                            conn.generator = PayloadStream(seed: conn.checksum.value)
                            conn.generateRemaining = replyBytes
                        }
                    } else if errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR {
                        closing = .peerReset
                    }
                } else if conn.readEOF && revents & pollErr != 0 {
                    closing = .peerReset
                }

                // Write side.
                if closing == nil {
                    closing = flush(&conn)
                }
                if closing == nil && conn.readEOF && conn.sentFIN {
                    closing = .finished
                }
                if let closing {
                    conns[fd] = nil
                    finish(conn, closing)
                } else {
                    conns[fd] = conn
                }
            }
        }

        for (_, conn) in conns { finish(conn, .closedByBackend) }
        close(listenFD)
        close(wakeRead)
        stopped.signal()
    }

    private func interest(_ conn: Conn) -> Int16 {
        var events: Int16 = 0
        if !conn.readEOF {
            switch behavior {
            case .echo, .identify:
                if conn.pendingOut < BackendCore.echoBufferLimit { events |= pollIn }
            default:
                events |= pollIn
            }
        }
        if conn.pendingOut > 0 || conn.generateRemaining > 0 { events |= pollOut }
        return events
    }

    /// Writes what can be written without blocking; sends FIN when this behaviour is done writing.
    /// Returns a closing reason if the connection broke.
    private func flush(_ conn: inout Conn) -> BackendConnectionRecord.Closing? {
        while true {
            if conn.pendingOut == 0 && conn.generateRemaining > 0, var generator = conn.generator {
                conn.out = generator.next(min(BackendCore.chunkSize, conn.generateRemaining))
                conn.outOffset = 0
                conn.generateRemaining -= conn.out.count
                conn.generator = generator
            }
            guard conn.pendingOut > 0 else { break }
            let offset = conn.outOffset
            let n = conn.out.withUnsafeBytes { raw in
                send(conn.fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
            }
            if n > 0 {
                conn.outOffset += n
                conn.bytesSent += n
                continue
            }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) { return nil }
            return .peerReset
        }
        // Everything queued is written.
        guard !conn.sentFIN else { return nil }
        let doneWriting: Bool
        switch behavior {
        case .bulk: doneWriting = true
        case .echo, .identify, .replyAfterEOF: doneWriting = conn.readEOF
        case .closeOnAccept, .resetOnAccept: doneWriting = true
        case .echoThenAbort: doneWriting = conn.readEOF
        }
        if doneWriting {
            _ = shutdown(conn.fd, Int32(SHUT_WR))
            conn.sentFIN = true
        }
        return nil
    }

    private func finish(_ conn: Conn, _ closing: BackendConnectionRecord.Closing) {
        close(conn.fd)
        let record = BackendConnectionRecord(
            id: conn.id, peer: conn.peer, bytesReceived: conn.bytesReceived,
            receivedChecksum: conn.checksum.value, bytesSent: conn.bytesSent,
            sawEOF: conn.readEOF, closing: closing
        )
        shared.withLock {
            $0.active -= 1
            $0.finished.append(record)
        }
    }
}
