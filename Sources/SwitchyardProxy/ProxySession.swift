import Logging
import SwitchyardCore
import SwitchyardUV

/// One client connection and its upstream connection: connect, then relay both ways.
///
/// Relay: a read on one side hands its pooled buffer straight to a write on the other (no copy).
/// When the other side has more than its high-water mark queued, this side stops reading, and
/// resumes once that queue drains to the low-water mark, so memory per connection stays bounded.
/// EOF on one side becomes a shutdown of the other once its queued writes are flushed; the other
/// direction keeps flowing until it ends too. An error on either side closes both at once.
final class ProxySession: TCPStreamDelegate, UVTimerTarget, EndOfTurnTarget {
    enum Phase { case connecting, backingOff, relaying, finished }
    static let clientTag: UInt8 = 0
    static let upstreamTag: UInt8 = 1

    let id: UInt64
    /// Links of the worker's list of open sessions (the worker owns them).
    var listNext: ProxySession?
    unowned(unsafe) var listPrev: ProxySession?
    let service: WorkerService
    unowned let worker: Worker
    let client: TCPStream
    private(set) var upstream: TCPStream?
    private var timer: UVTimer?
    private(set) var phase = Phase.connecting
    /// The server of the current connect attempt, then of the relayed connection.
    private(set) var server: ServerDescriptor?
    private var clientKey = ClientKey.none
    private var tried = ServerSet()
    /// The same servers (those whose attempt failed since the last backoff), and the server list
    /// their indices in `tried` refer to: a reload may renumber it (see `SharedService.acquire`).
    private var triedServers: [ServerDescriptor] = []
    private var triedLayout: UInt64 = 0
    private var attempts = 0
    /// The last failed attempt: its server (for the closing line when no connect succeeded) and
    /// why it failed (the end of a client whose retries then find no server).
    private var lastFailure: (server: ServerDescriptor, reason: String, timeout: Bool)?
    /// When the current connect attempt started (`preciseNanoseconds`).
    private var connectStartedAt: UInt64 = 0
    /// The relayed server's counters (set once relaying starts).
    private var serverStats: ServerStats?
    /// This attempt is a half-open server's single trial connection.
    private var attemptIsTrial = false
    /// The client's address: taken only when something needs it (ip_hash, or the info-level log
    /// line), which saves a getpeername on every connection otherwise.
    private var clientAddress: SocketAddress?
    /// TCP keepalive idle time (client sockets always; server sockets with `server_keepalive = on`).
    static let keepAliveSeconds: UInt32 = 60

    private var bytesIn: UInt64 = 0   // from the client
    private var bytesOut: UInt64 = 0  // to the client
    private let startedAt: UInt64
    private var lastActivity: UInt64
    /// Bytes on their way out and not yet acknowledged, at the last idle check (see `timerFired`),
    /// and when that check was.
    private var unacknowledgedAtLastCheck = 0
    private var lastIdleCheck: UInt64 = 0
    private var clientEOF = false
    private var upstreamEOF = false
    /// Our write side towards that peer is shut, or will be once its queued writes flush.
    private var clientShutdownStarted = false
    private var upstreamShutdownStarted = false
    /// An EOF waits for the end of the loop turn (`endOfTurn`).
    private var eofForwardPending = false
    private var openStreams = 1
    private var endReason = "closed"
    private let connectTimeoutMs: UInt64
    private let idleTimeoutMs: UInt64
    private let maxAttempts: Int
    private var endError: String?
    // splice hook: the zero-copy relay that takes over both sockets (see the extension below).
    private var spliceMode: SpliceMode
    private var splice: SpliceRelay?
    private var spliceWanted = false

    init(id: UInt64, client: TCPStream, service: WorkerService, worker: Worker) {
        self.id = id
        self.client = client
        self.service = service
        self.worker = worker
        let settings = service.settings
        self.connectTimeoutMs = settings.connectTimeoutMs
        self.idleTimeoutMs = settings.idleTimeoutMs
        self.maxAttempts = settings.maxAttempts
        self.spliceMode = settings.splice  // splice hook
        self.startedAt = client.loop.now
        self.lastActivity = startedAt
        client.tag = Self.clientTag
        client.delegate = self
    }

    /// Picks a server and starts connecting to it.
    func start() {
        let settings = service.settings
        if settings.hashesClientAddress || settings.logsConnections {
            clientAddress = client.peerAddress()
        }
        if settings.hashesClientAddress, let clientAddress {
            clientKey = clientAddress.withAddressBytes { ClientKey(addressBytes: $0) }
        }
        do {
            let timer = try UVTimer(loop: client.loop, target: self)
            self.timer = timer
        } catch {
            finish("error", error: error.description)
            return
        }
        connectNext()
    }

    /// Failover: each attempt goes to a server not yet tried for this client; once every candidate
    /// has been tried, wait (exponential backoff, full jitter) and start over, within the budget of
    /// `1 + retries` attempts. No byte has been relayed yet, so the client only sees a slower connect.
    private func connectNext() {
        guard phase == .connecting else { return }
        let picked = service.shared.acquire(
            client: clientKey, excluding: &tried, layout: &triedLayout, triedServers: triedServers, now: client.loop.now)
        if picked == nil && !tried.isEmpty {
            // Every candidate was tried: back off, then try them all again.
            let delay = service.shared.retryDelay(attempt: attempts)
            phase = .backingOff
            timer?.start(timeout: delay)
            return
        }
        guard let (chosen, index, trial) = picked else {
            if lastFailure != nil {
                // Its own failures took the last usable server out (ejected, panic off): the
                // client's connect failed, it did not find the service empty.
                finishConnectFailed()
            } else {
                finish("no_server", error: "no usable server")
            }
            return
        }
        // A trial sets a deadline (a lost trial is forgotten): the control worker's timer must know.
        if trial { worker.runtime.healthDeadlineChanged(service.shared) }
        // Connecting from here until the attempt ends (relayed, failed or abandoned): while the
        // phase is .connecting and `server` is set.
        self.server = chosen
        service.stats(for: chosen).connectsPending.add(1)
        attemptIsTrial = trial
        attempts += 1
        tried.insert(index)
        guard let address = chosen.address else {
            connectFailed(error: nil, reason: chosen.resolveError ?? "unresolved address", timeout: false)
            return
        }
        do {
            // The socket exists before the connect, so that the handshake's last ACK can be held
            // back for the client's first bytes (see `sendFirstBytesOrAck`).
            let upstream = try TCPStream(loop: client.loop, family: address.family)
            upstream.tag = Self.upstreamTag
            upstream.delegate = self
            self.upstream = upstream
            openStreams += 1
            try upstream.setQuickAck(false)
            connectStartedAt = client.loop.preciseNanoseconds
            try upstream.connect(to: address)
            // Reading is armed with the connect, so that one epoll_ctl registers both (libuv
            // reports the connect first, and reads only once relaying has started).
            try upstream.startReading()
            timer?.start(timeout: connectTimeoutMs)
        } catch {
            connectFailed(error: error, reason: error.description, timeout: false)
        }
    }

    /// The current attempt failed: report it, give the server slot back and try the next one.
    private func connectFailed(error: UVError?, reason: String, timeout: Bool) {
        guard let failed = server else { return }
        server = nil
        lastFailure = (failed, reason, timeout)
        triedServers.append(failed)
        let stats = service.stats(for: failed)
        stats.connectsPending.releasingSubtract(1)
        stats.connectFailures.withLock { $0[ConnectFailureReason(error, timeout: timeout).rawValue] &+= 1 }
        service.logger.debug("connect failed", metadata: ["server": "\(failed.name)", "error": "\(reason)"])
        let notice: HealthNotice?
        if let error, error.isLocalResourceShortage {
            // Out of descriptors, memory or local ports: the server is not to blame.
            if attemptIsTrial { service.shared.cancelTrial(failed) }
            notice = nil
        } else {
            notice = service.shared.connectFailed(failed, reason: timeout ? "timeout" : reason, now: client.loop.now)
        }
        service.shared.release(failed)
        if let notice { worker.runtime.handle(notice, of: service.shared) }
        if let upstream {
            upstream.delegate = self  // still counted until its close callback
            upstream.close()
            self.upstream = nil
        }
        if attempts < maxAttempts {
            if clientLeft() { return }
            service.stats.retries.add(1)
            connectNext()
        } else {
            finishConnectFailed()
        }
    }

    /// Every attempt failed: the client ends with the last one's error.
    private func finishConnectFailed() {
        guard let last = lastFailure else { return }
        finish(last.timeout ? "connect_timeout" : "connect_failed", error: last.reason)
    }

    /// Before a retry: a client that has gone (reset, or closed without sending a byte) is not
    /// worth more connects to a failing server. Ends the session then. Only on the failure path:
    /// the first attempt never pays for the look.
    private func clientLeft() -> Bool {
        switch client.peerState() {
        case .present:
            return false
        case .ended:
            finish("client_left", error: "the client closed before a server could be reached")
        case .failed(let error):
            finish("client_reset", error: error.description)
        }
        return true
    }

    // MARK: Timer: connect timeout, retry backoff, then idle timeout

    func timerFired(_ firing: UVTimer) {
        switch phase {
        case .connecting:
            connectFailed(error: nil, reason: "timeout after \(connectTimeoutMs)ms", timeout: true)
        case .backingOff:
            phase = .connecting
            if clientLeft() { return }
            tried = ServerSet()
            triedServers.removeAll(keepingCapacity: true)
            connectNext()
        case .relaying:
            let idle = idleTimeoutMs
            let now = client.loop.now
            // Bytes leaving count as activity too, not only bytes arriving: a slow reader taking a
            // long answer after its server went quiet keeps the connection (nginx's
            // proxy_timeout counts reads and writes alike). The bytes not yet acknowledged fall
            // as the reader takes them: while some are pending the checks come every quarter of
            // the timeout, and a change since the last check is progress, dated to this check —
            // if that check came after the last read, so that the count it took was of bytes
            // already on their way (otherwise the change may be only what that read queued, and
            // a reader stalled since would get a whole timeout more). So a reader that stops is
            // cut at most a quarter late.
            let unacknowledged = unacknowledgedOutput()
            if unacknowledged != unacknowledgedAtLastCheck && lastIdleCheck >= lastActivity {
                lastActivity = now
            }
            unacknowledgedAtLastCheck = unacknowledged
            lastIdleCheck = now
            let quiet = now &- lastActivity
            if quiet >= idle {
                finish("idle_timeout")
            } else {
                timer?.start(timeout: unacknowledged > 0 ? max(1, idle / 4) : idle - quiet)
            }
        case .finished:
            break
        }
    }

    // MARK: TCPStreamDelegate

    func stream(_ stream: TCPStream, didConnect error: UVError?) {
        guard phase == .connecting, let upstream, stream === upstream, let server else { return }
        if let error {
            connectFailed(error: error, reason: error.description, timeout: error == .timedOut)
            return
        }
        phase = .relaying
        let stats = service.stats(for: server)
        serverStats = stats
        stats.connectionsTotal.add(1)
        // Active before it stops connecting (a releasing store: a scrape that sees the connect
        // over sees the connection active), so that it is never seen as neither.
        stats.connectionsActive.add(1)
        stats.connectsPending.releasingSubtract(1)
        let now = client.loop.now
        let connectUs = (client.loop.preciseNanoseconds &- connectStartedAt) / 1000
        stats.connectDuration.withLock { $0.observe(us: connectUs) }
        if let notice = service.shared.connectSucceeded(server, now: now) {
            worker.runtime.handle(notice, of: service.shared)
        }
        do {
            // The client socket inherited TCP_NODELAY and keepalive from its listener.
            if service.settings.serverKeepAlive {
                try upstream.setNoDelayAndKeepAlive(keepAliveSeconds: Int32(Self.keepAliveSeconds))
            } else {
                try upstream.setNoDelay(true)
            }
            try client.startReading()
            try upstream.startReading()
        } catch {
            finish("error", error: error.description)
            return
        }
        guard sendFirstBytesOrAck(upstream) else { return }
        if spliceMode == .on { switchToSplice() }  // splice hook
        if idleTimeoutMs > 0 {
            timer?.start(timeout: idleTimeoutMs)
        } else {
            timer?.stop()
        }
    }

    /// The server socket connected with its last handshake ACK held back (`TCP_QUICKACK` off, as
    /// HAProxy's `tcp-smart-connect`). Client-first protocols (HTTP, Redis, PostgreSQL, TLS) have
    /// usually sent their first bytes by now: read at once, they go to the server with that ACK, one
    /// segment fewer and one loop turn sooner. With nothing there (a server-first protocol, or a
    /// slower client) the ACK goes now, so that no server waits for it. False when the session
    /// ended.
    private func sendFirstBytesOrAck(_ upstream: TCPStream) -> Bool {
        switch readAtOnce(client) {
        case .bytes(let buffer, let count):
            self.stream(client, didRead: buffer, count: count)
            return phase == .relaying
        case .failed(let error):
            fail(side: client, error)
            return false
        case .nothing, .end:
            break  // an end is found again by libuv's reading
        }
        do {
            try upstream.setQuickAck(true)
        } catch {
            fail(side: upstream, error)
            return false
        }
        return true
    }

    func stream(_ stream: TCPStream, didRead buffer: UnsafeMutableRawPointer, count: Int) {
        guard phase == .relaying, let upstream else {
            stream.loop.buffers.give(buffer)
            return
        }
        lastActivity = stream.now
        let target: TCPStream
        var behind = ReadAtOnce.nothing
        if stream.tag == Self.clientTag {
            bytesIn &+= UInt64(count)
            serverStats?.bytesFromClients.add(UInt64(count))
            target = upstream
        } else {
            // The server's first answer, if short, may have its end right behind it.
            if bytesOut == 0 && count < stream.loop.buffers.bufferSize {
                // A server that answers and closes at once (HTTP with `Connection: close`, health
                // checks, one-shot protocols) has usually sent its FIN right behind the answer:
                // then the answer goes to the client with our FIN in the same segment (up to three
                // segments fewer on the client side, and no loop turn spent on the EOF). A server
                // that keeps the connection costs one empty read, once per connection.
                // A server that aborts right behind its answer (a reset: an HTTP server refusing an
                // upload, say) fails this read: the answer still goes first (`.failed` below).
                behind = readAtOnce(upstream)
            }
            bytesOut &+= UInt64(count)
            serverStats?.bytesToClients.add(UInt64(count))
            target = client
        }
        if let error = target.write(buffer: buffer, count: count, endFollows: behind == .end) {
            // `write` gave its buffer back; bytes found behind it are not relayed either.
            if case .bytes(let spare, _) = behind { stream.loop.buffers.give(spare) }
            fail(side: target, error)
            return
        }
        switch behind {
        case .failed(let error):
            fail(side: upstream, error)
            return
        case .end:
            // libuv has not seen this end: its reading stops here, and the EOF goes the usual way
            // (end of this loop turn), where the shutdown or close sends the FIN with the answer.
            upstream.stopReading()
            streamDidReachEOF(upstream)
            return
        case .bytes(let spare, let n):
            self.stream(upstream, didRead: spare, count: n)
            return
        case .nothing:
            break
        }
        if target.isAboveHighWaterMark {
            stream.stopReading()
        }
        // splice hook: a read that fills a whole buffer looks like bulk (HAProxy's splice-auto).
        if spliceMode == .auto && (spliceWanted || count == stream.loop.buffers.bufferSize) { switchToSplice() }
    }

    /// Bytes relayed towards either peer that it has not acknowledged yet (libuv's queues, the
    /// pipes, the kernel's send queues).
    private func unacknowledgedOutput() -> Int {
        if let splice { return splice.unacknowledgedBytes }
        return client.unacknowledgedBytes + (upstream?.unacknowledgedBytes ?? 0)
    }

    private enum ReadAtOnce: Equatable {
        case nothing, end
        case failed(UVError)
        case bytes(UnsafeMutableRawPointer, Int)
    }

    /// Reads what `side`'s socket already holds, outside libuv's reading (`TCPStream.readNow`):
    /// `.bytes` hands over a pool buffer; `.failed`: the read failed (the caller ends the session).
    private func readAtOnce(_ side: TCPStream) -> ReadAtOnce {
        let pool = client.loop.buffers
        let buffer = pool.take()
        do {
            switch try side.readNow(into: buffer, capacity: pool.bufferSize) {
            case .some(0):
                pool.give(buffer)
                return .end
            case .some(let n):
                return .bytes(buffer, n)
            case .none:
                pool.give(buffer)
                return .nothing
            }
        } catch {
            pool.give(buffer)
            return .failed(error)
        }
    }

    func streamDidDrain(_ stream: TCPStream) {
        guard phase == .relaying else { return }
        if spliceWanted { switchToSplice(); if splice != nil { return } }  // splice hook
        // `stream` drained: resume reading the side that feeds it, unless that side has ended.
        let feeder: TCPStream?
        let feederEnded: Bool
        if stream.tag == Self.clientTag {
            feeder = upstream
            feederEnded = upstreamEOF
        } else {
            feeder = client
            feederEnded = clientEOF
        }
        if let feeder, !feederEnded {
            do {
                try feeder.startReading()
            } catch {
                fail(side: feeder, error)
            }
        }
    }

    func streamDidReachEOF(_ stream: TCPStream) {
        guard phase == .relaying else { return }
        lastActivity = stream.now
        if stream.tag == Self.clientTag { clientEOF = true } else { upstreamEOF = true }
        // Forwarded at the end of this loop turn: when the other end closed too and its EOF is in
        // the same batch of events (a request/response peer closing as soon as it has the answer),
        // both sockets are simply closed — one shutdown and a stray wake-up fewer, and the peer
        // that closed first keeps the TIME_WAIT, as with HAProxy.
        if !eofForwardPending {
            eofForwardPending = true
            client.loop.atEndOfTurn(self)
        }
    }

    /// End of the loop turn in which an EOF was read: passes each EOF on as a shutdown of the other
    /// side once its queued writes are flushed, or closes both when both directions have ended.
    func endOfTurn() {
        eofForwardPending = false
        guard phase == .relaying, let upstream else { return }
        if finishIfBothEnded() { return }
        if clientEOF && !upstreamShutdownStarted {
            upstreamShutdownStarted = true
            guard shutDown(upstream) else { return }
        }
        if upstreamEOF && !clientShutdownStarted {
            clientShutdownStarted = true
            _ = shutDown(client)
        }
    }

    /// Shuts `side`'s write side down once its queue is flushed; false when that failed (the
    /// session is ending then).
    private func shutDown(_ side: TCPStream) -> Bool {
        do {
            try side.shutdown()
            return true
        } catch {
            fail(side: side, error)
            return false
        }
    }

    /// Both directions have ended and every byte read has been handed to the kernel: closing sends
    /// the FIN a shutdown would (after the data), one system call and one loop turn sooner. Checked
    /// at the end of a turn with an EOF and when a deferred shutdown completes (its queue is empty
    /// then, and a side shut down at once had an empty queue already).
    private func finishIfBothEnded() -> Bool {
        guard clientEOF && upstreamEOF, client.queuedBytes == 0, upstream?.queuedBytes ?? 0 == 0 else { return false }
        finish("closed")
        return true
    }

    func streamDidShutdown(_ stream: TCPStream) {
        guard phase == .relaying else { return }
        _ = finishIfBothEnded()
    }

    func stream(_ stream: TCPStream, didFail error: UVError) {
        fail(side: stream, error)
    }

    func streamDidClose(_ stream: TCPStream) {
        openStreams -= 1
        if openStreams == 0 && phase == .finished {
            worker.sessionEnded(self)
        }
    }

    // MARK: Ending

    private func fail(side: TCPStream, _ error: UVError) {
        if side !== client, phase == .relaying { passOnServerLastWords() }
        let who = side.tag == Self.clientTag ? "client" : "server"
        // A write or shutdown on a socket the peer reset fails with EPIPE or ENOTCONN: a reset too.
        let what = error == .connectionReset || error == .brokenPipe || error == .notConnected ? "reset" : "error"
        finish("\(who)_\(what)", error: error.description, reset: true)
    }

    /// The server socket failed (a write to a server that closed with bytes unread — an answer
    /// refusing an upload — fails with EPIPE or ECONNRESET): what the server sent before it went
    /// is still readable, and goes to the client before the session ends (a reset follows it, so
    /// the client still sees the abort). Buffered relay only (the splice relay has the sockets
    /// then and reads up to the error itself); at most a few buffers.
    private func passOnServerLastWords() {
        guard splice == nil, let upstream, !upstreamEOF else { return }
        for _ in 0..<4 {
            switch readAtOnce(upstream) {
            case .bytes(let buffer, let count):
                bytesOut &+= UInt64(count)
                serverStats?.bytesToClients.add(UInt64(count))
                if client.write(buffer: buffer, count: count, endFollows: false) != nil { return }
            case .nothing, .end, .failed:
                return
            }
        }
    }

    /// Ends the session: closes both sides and releases the server slot. The close is a reset when
    /// the session ended in error, or when it drops bytes one peer sent and the other has not been
    /// given yet (queued in libuv or in a pipe: an idle timeout with a stalled reader, the end of a
    /// drain), so that no peer mistakes a cut-off stream for a complete one.
    func finish(_ reason: String, error: String? = nil, reset: Bool = false) {
        guard phase != .finished else { return }
        let dropsBytes = client.queuedBytes > 0 || (upstream?.queuedBytes ?? 0) > 0 || (splice?.bufferedBytes ?? 0) > 0
        let reset = reset || dropsBytes
        let wasConnecting = phase == .connecting
        phase = .finished
        serverStats?.connectionsActive.subtract(1)
        let lifetime = client.loop.now &- startedAt
        service.stats.connectionDuration.withLock { $0.observe(us: lifetime &* 1000) }
        if reason == "no_server" { service.stats.reject(.noServer) }
        if reason == "connect_failed" || reason == "connect_timeout" { service.stats.reject(.connectFailed) }
        endReason = reason
        endError = error
        timer?.close()
        timer = nil
        if let server {
            if wasConnecting {
                // The attempt in progress is abandoned.
                service.stats(for: server).connectsPending.releasingSubtract(1)
                if attemptIsTrial { service.shared.cancelTrial(server) }
            }
            service.shared.release(server)
        }
        if reset {
            client.closeWithReset()
            upstream?.closeWithReset()
        } else {
            client.close()
            upstream?.close()
        }
        splice?.close(reset: reset)  // splice hook
    }

    /// The closing log line; called once both streams are closed.
    func logClosed() {
        let logger = service.logger
        guard logger.logLevel <= .info else { return }
        let duration = client.loop.now &- startedAt
        var metadata: Logger.Metadata = [
            "client": "\(clientAddress?.description ?? "-")",
            "server": "\((server ?? lastFailure?.server)?.name ?? "-")",
            "bytes_in": "\(bytesIn)",
            "bytes_out": "\(bytesOut)",
            "duration_ms": "\(duration)",
            "end": "\(endReason)",
        ]
        if let endError { metadata["error"] = "\(endError)" }
        if server == nil, lastFailure != nil { metadata["attempts"] = "\(attempts)" }
        logger.info("connection closed", metadata: metadata)
    }
}

// MARK: - splice hook: the zero-copy relay (`splice = on | auto`)

extension ProxySession: SpliceRelayDelegate {
    /// Hands both sockets to a `SpliceRelay`: only while both directions are open and nothing is
    /// queued in libuv. While something is queued, the switch waits (`spliceWanted`): it is tried
    /// again on every read, and when a queue empties — the streams report a drain at 0 instead of
    /// at the low-water mark, so that a slow reader's side, which otherwise never empties between
    /// the water marks, does get there. If the relay cannot be set up (descriptors exhausted, the
    /// per-user pipe limit, …), this connection keeps the buffered relay.
    private func switchToSplice() {
        guard splice == nil, phase == .relaying, let upstream, !clientEOF, !upstreamEOF else { return }
        guard client.queuedBytes == 0, upstream.queuedBytes == 0 else {
            if !spliceWanted {
                spliceWanted = true
                client.lowWaterMark = 0
                upstream.lowWaterMark = 0
            }
            return
        }
        spliceWanted = false
        do {
            splice = try SpliceRelay.takeOver(client, upstream, delegate: self)
            openStreams += 1  // the relay's handles, until relayDidClose
        } catch {
            spliceMode = .off  // for this connection: no retry on every read
            service.logger.debug("splice unavailable, relaying through buffers", metadata: ["error": "\(error)"])
        }
    }

    func relay(_ relay: SpliceRelay, didRead count: Int, from side: SpliceRelay.Side) {
        lastActivity = client.loop.now
        if side == .a {
            bytesIn &+= UInt64(count)
            serverStats?.bytesFromClients.add(UInt64(count))
        } else {
            bytesOut &+= UInt64(count)
            serverStats?.bytesToClients.add(UInt64(count))
        }
    }

    func relay(_ relay: SpliceRelay, didReachEOF side: SpliceRelay.Side) {
        lastActivity = client.loop.now
        if side == .a { clientEOF = true } else { upstreamEOF = true }
    }

    func relayDidFinish(_ relay: SpliceRelay) {
        guard phase == .relaying else { return }
        finish("closed")
    }

    func relay(_ relay: SpliceRelay, side: SpliceRelay.Side, didFail error: UVError) {
        fail(side: side == .a ? client : upstream ?? client, error)
    }

    func relayDidClose(_ relay: SpliceRelay) {
        streamDidClose(client)  // counts like a stream's close callback
    }
}
