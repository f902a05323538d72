// A blocking TCP client for tests. The socket is non-blocking underneath and every operation
// waits with poll(2) against a deadline, so no call can hang a test.
import Glibc

/// Outcome of a duplex transfer (see `TestClient.transfer`).
struct TransferResult: Sendable, CustomStringConvertible {
    var bytesSent = 0
    var bytesReceived = 0
    var receivedChecksum: UInt64 = 0
    /// How the peer ended the stream we read.
    var end: StreamEnd = .eof
    /// Set when sending stopped early because the connection was closed under us.
    var sendError: String?

    var description: String {
        "sent \(bytesSent) B, received \(bytesReceived) B (checksum \(String(receivedChecksum, radix: 16))), end \(end)"
            + (sendError.map { ", send error: \($0)" } ?? "")
    }
}

/// One client connection. Not shared between threads; closed on `close()`/`reset()` or deinit.
final class TestClient {
    private(set) var fd: Int32
    let localIP: String
    let localPort: UInt16
    /// Bytes read from the socket but not yet handed out (e.g. past a line end).
    private var buffered: [UInt8] = []

    /// `ip:port` of this end, as switchyard reports it in its `client` log field.
    var localAddress: String { "\(localIP):\(localPort)" }

    /// Connects to `host:port`, optionally from `sourceIP` (any 127.x.y.z address).
    /// `receiveBuffer` pins SO_RCVBUF (turning off receive autotuning) for slow-reader tests.
    init(
        port: UInt16,
        host: String = "127.0.0.1",
        sourceIP: String? = nil,
        receiveBuffer: Int32? = nil,
        timeout: Duration = .seconds(5)
    ) throws {
        let fd = try Socket.makeTCP()
        do {
            try Socket.setNonBlocking(fd)
            if let receiveBuffer { Socket.setReceiveBuffer(fd, bytes: receiveBuffer) }
            if let sourceIP { try Socket.bind(fd, ip: sourceIP, port: 0) }
            var addr = try Socket.address(host, port)
            let rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            if rc != 0 {
                guard errno == EINPROGRESS else { throw posixError("connect to \(host):\(port)") }
                let revents = try Socket.waitFor(fd, events: pollOut, deadline: Deadline(after: timeout))
                guard revents != 0 else { throw HarnessError("connect to \(host):\(port) timed out after \(timeout)") }
                let err = Socket.pendingError(fd)
                guard err == 0 else { throw posixError("connect to \(host):\(port)", err) }
            }
        } catch {
            Glibc.close(fd)
            throw error
        }
        self.fd = fd
        (localIP, localPort) = Socket.localAddress(fd)
    }

    deinit { close() }

    func close() {
        if fd >= 0 {
            Glibc.close(fd)
            fd = -1
        }
    }

    /// Closes with SO_LINGER 0, so the peer gets a RST.
    func reset() {
        if fd >= 0 { Socket.setLingerZero(fd) }
        close()
    }

    func shutdownWrite() throws {
        guard shutdown(fd, Int32(SHUT_WR)) == 0 else { throw posixError("shutdown(SHUT_WR)") }
    }

    // MARK: Writing

    func send(_ text: String, timeout: Duration = .seconds(5)) throws {
        try send(Array(text.utf8), timeout: timeout)
    }

    /// Sends every byte or throws (timeout, or the connection was closed/reset).
    func send(_ bytes: [UInt8], timeout: Duration = .seconds(5)) throws {
        let deadline = Deadline(after: timeout)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { raw in
                Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
            }
            if n > 0 {
                offset += n
                continue
            }
            let err = errno
            if n < 0 && err == EINTR { continue }
            guard n < 0 && (err == EAGAIN || err == EWOULDBLOCK) else {
                throw posixError("send (\(offset) of \(bytes.count) bytes sent)", err)
            }
            if try Socket.waitFor(fd, events: pollOut, deadline: deadline) == 0 {
                throw HarnessError("send timed out after \(timeout) (\(offset) of \(bytes.count) bytes sent)")
            }
        }
    }

    // MARK: Reading

    enum ReadResult: Equatable {
        case data([UInt8])
        case end(StreamEnd)
    }

    /// One `recv` of up to `maxBytes`, waiting until data or the end of the stream arrives.
    /// Returns nil when nothing arrived before the deadline.
    func receiveSome(maxBytes: Int = 65536, deadline: Deadline) throws -> ReadResult? {
        if !buffered.isEmpty {
            let chunk = Array(buffered.prefix(maxBytes))
            buffered.removeFirst(chunk.count)
            return .data(chunk)
        }
        var chunk = [UInt8](repeating: 0, count: maxBytes)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, maxBytes, 0) }
            if n > 0 { return .data(Array(chunk[0..<n])) }
            if n == 0 { return .end(.eof) }
            let err = errno
            if err == EINTR { continue }
            if err != EAGAIN && err != EWOULDBLOCK { return .end(.reset) }
            if try Socket.waitFor(fd, events: pollIn, deadline: deadline) == 0 { return nil }
        }
    }

    /// Reads exactly `count` bytes; throws on timeout or if the stream ends first.
    func readExactly(_ count: Int, timeout: Duration = .seconds(5)) throws -> [UInt8] {
        let deadline = Deadline(after: timeout)
        var result: [UInt8] = []
        result.reserveCapacity(count)
        while result.count < count {
            guard let read = try receiveSome(maxBytes: min(65536, count - result.count), deadline: deadline) else {
                throw HarnessError("read timed out after \(timeout): got \(result.count) of \(count) bytes")
            }
            switch read {
            case .data(let bytes): result += bytes
            case .end(let end): throw HarnessError("stream ended (\(end)) after \(result.count) of \(count) bytes")
            }
        }
        return result
    }

    /// Reads up to and including "\n"; returns the line without it.
    func readLine(timeout: Duration = .seconds(5), maxLength: Int = 4096) throws -> String {
        let deadline = Deadline(after: timeout)
        var line: [UInt8] = []
        while true {
            if let newline = buffered.firstIndex(of: UInt8(ascii: "\n")) {
                line += buffered[..<newline]
                buffered.removeFirst(newline + 1)
                return String(decoding: line, as: UTF8.self)
            }
            line += buffered
            buffered.removeAll()
            guard line.count <= maxLength else { throw HarnessError("line longer than \(maxLength) bytes") }
            guard let read = try receiveSome(deadline: deadline) else {
                throw HarnessError("readLine timed out after \(timeout) (partial: \(String(decoding: line, as: UTF8.self).debugDescription))")
            }
            switch read {
            case .data(let bytes): buffered = bytes
            case .end(let end):
                throw HarnessError("stream ended (\(end)) before a full line (partial: \(String(decoding: line, as: UTF8.self).debugDescription))")
            }
        }
    }

    /// Reads until the peer ends the stream; throws on timeout or if more than `limit` bytes arrive.
    func readToEnd(timeout: Duration = .seconds(5), limit: Int = 64 << 20) throws -> (bytes: [UInt8], end: StreamEnd) {
        let deadline = Deadline(after: timeout)
        var result: [UInt8] = []
        while true {
            guard let read = try receiveSome(deadline: deadline) else {
                throw HarnessError("stream still open after \(timeout) (\(result.count) bytes read)")
            }
            switch read {
            case .data(let bytes):
                result += bytes
                guard result.count <= limit else { throw HarnessError("more than \(limit) bytes before the end of stream") }
            case .end(let end):
                return (result, end)
            }
        }
    }

    /// Waits until the peer ends the stream (discarding any data); nil if still open at the deadline.
    func waitForEnd(timeout: Duration) throws -> StreamEnd? {
        let deadline = Deadline(after: timeout)
        while true {
            guard let read = try receiveSome(deadline: deadline) else { return nil }
            if case .end(let end) = read { return end }
        }
    }

    /// Sends `text` and expects exactly the same bytes back (echo through the proxy).
    func roundTrip(_ text: String, timeout: Duration = .seconds(5)) throws {
        try send(text, timeout: timeout)
        let back = try readExactly(text.utf8.count, timeout: timeout)
        guard back == Array(text.utf8) else {
            throw HarnessError("echo mismatch: sent \(text.debugDescription), got \(String(decoding: back, as: UTF8.self).debugDescription)")
        }
    }

    // MARK: Duplex transfer

    /// Sends `sendCount` bytes of `PayloadStream(seed: sendSeed)` while reading and checksumming
    /// everything that comes back, until all is sent and the peer has ended the stream.
    /// - `shutdownAfterSend`: half-close (SHUT_WR) once everything is sent.
    /// - `holdReadsFor`: read nothing at all for this long first (a stalled reader).
    /// - `readChunk` / `pauseAfterRead`: a slow reader, taking at most `readChunk` bytes per read
    ///   and pausing after each read.
    func transfer(
        sendCount: Int,
        sendSeed: UInt64,
        shutdownAfterSend: Bool = true,
        holdReadsFor: Duration = .zero,
        readChunk: Int = 65536,
        pauseAfterRead: Duration = .zero,
        timeout: Duration
    ) throws -> TransferResult {
        let deadline = Deadline(after: timeout)
        let readsAllowedAt = ContinuousClock.now + holdReadsFor
        var result = TransferResult()
        var checksum = Checksum()
        var stream = PayloadStream(seed: sendSeed)
        var chunk: [UInt8] = []
        var chunkOffset = 0
        var sendDone = sendCount == 0
        var readDone = false
        var readBuffer = [UInt8](repeating: 0, count: readChunk)
        if sendDone && shutdownAfterSend { try shutdownWrite() }

        while !(sendDone && readDone) {
            if deadline.hasPassed {
                throw HarnessError("transfer timed out after \(timeout): \(result)")
            }
            let reading = !readDone && ContinuousClock.now >= readsAllowedAt
            var events: Int16 = 0
            if reading { events |= pollIn }
            if !sendDone { events |= pollOut }
            var timeoutMs = deadline.pollTimeout
            if !readDone && !reading {
                timeoutMs = min(timeoutMs, Int32(clamping: (readsAllowedAt - ContinuousClock.now).milliseconds + 1))
            }
            var p = pollfd(fd: fd, events: events, revents: 0)
            let rc = poll(&p, 1, timeoutMs)
            if rc < 0 {
                if errno == EINTR { continue }
                throw posixError("poll")
            }
            if rc == 0 { continue }

            if reading && p.revents & (pollIn | pollHup | pollErr) != 0 {
                let n = readBuffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, readChunk, 0) }
                if n > 0 {
                    readBuffer.withUnsafeBytes { checksum.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                    result.bytesReceived += n
                    pause(pauseAfterRead)
                } else if n == 0 {
                    result.end = .eof
                    readDone = true
                } else if errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR {
                    result.end = .reset
                    readDone = true
                    // A reset connection cannot carry the rest of our data either.
                    if !sendDone {
                        result.sendError = "connection reset while sending"
                        sendDone = true
                    }
                }
            }

            if !sendDone && p.revents & (pollOut | pollErr | pollHup) != 0 {
                if chunkOffset == chunk.count {
                    chunk = stream.next(min(65536, sendCount - result.bytesSent))
                    chunkOffset = 0
                }
                let n = chunk.withUnsafeBytes { raw in
                    Glibc.send(fd, raw.baseAddress! + chunkOffset, raw.count - chunkOffset, Int32(MSG_NOSIGNAL))
                }
                if n > 0 {
                    chunkOffset += n
                    result.bytesSent += n
                    if result.bytesSent == sendCount {
                        sendDone = true
                        if shutdownAfterSend { try shutdownWrite() }
                    }
                } else if n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR {
                    result.sendError = String(cString: strerror(errno))
                    sendDone = true
                }
            }
        }
        result.receivedChecksum = checksum.value
        return result
    }
}
