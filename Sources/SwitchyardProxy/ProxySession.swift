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
final class ProxySession: TCPStreamDelegate {
    enum Phase { case connecting, backingOff, relaying, finished }
    static let clientTag: UInt8 = 0
    static let upstreamTag: UInt8 = 1

    let id: UInt64
    let service: ServiceRuntime
    unowned let runtime: ProxyRuntime
    let client: TCPStream
    private(set) var upstream: TCPStream?
    private var timer: UVTimer?
    private(set) var phase = Phase.connecting
    /// The server of the current connect attempt, then of the relayed connection.
    private(set) var server: UpstreamServer?
    private var clientKey = ClientKey.none
    private var tried = ServerSet()
    private var attempts = 0
    private var connectStartedAt: UInt64 = 0
    /// The relayed server's counters (set once relaying starts).
    private var serverStats: ServerStats?
    /// This attempt is a half-open server's single trial connection.
    private var attemptIsTrial = false
    private let clientAddress: SocketAddress?

    private var bytesIn: UInt64 = 0   // from the client
    private var bytesOut: UInt64 = 0  // to the client
    private let startedAt: UInt64
    private var lastActivity: UInt64
    private var clientEOF = false
    private var upstreamEOF = false
    private var clientShutDown = false   // our write side towards the client is shut
    private var upstreamShutDown = false
    private var openStreams = 1
    private var endReason = "closed"
    private var endError: String?

    init(id: UInt64, client: TCPStream, service: ServiceRuntime, runtime: ProxyRuntime) {
        self.id = id
        self.client = client
        self.service = service
        self.runtime = runtime
        self.clientAddress = client.peerAddress()
        self.startedAt = client.loop.now
        self.lastActivity = startedAt
        client.tag = Self.clientTag
        client.delegate = self
    }

    /// Picks a server and starts connecting to it.
    func start() {
        if let clientAddress {
            clientKey = clientAddress.withAddressBytes { ClientKey(addressBytes: $0) }
        }
        do {
            let timer = try UVTimer(loop: client.loop) { [unowned self] in self.timerFired() }
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
        let picked = service.acquire(client: clientKey, excluding: tried)
        if picked == nil && !tried.isEmpty {
            // Every candidate was tried: back off, then try them all again.
            let delay = service.retryDelay(attempt: attempts)
            phase = .backingOff
            timer?.start(timeout: delay)
            return
        }
        guard let (chosen, trial) = picked else {
            finish("no_server", error: "no usable server")
            return
        }
        self.server = chosen
        attemptIsTrial = trial
        attempts += 1
        tried.insert(chosen.index)
        guard let address = chosen.address else {
            connectFailed(error: nil, reason: chosen.resolveError ?? "unresolved address", timeout: false)
            return
        }
        do {
            let upstream = try TCPStream(loop: client.loop)
            upstream.tag = Self.upstreamTag
            upstream.delegate = self
            self.upstream = upstream
            openStreams += 1
            connectStartedAt = client.loop.now
            try upstream.connect(to: address)
            timer?.start(timeout: service.connectTimeoutMs)
        } catch {
            connectFailed(error: error, reason: error.description, timeout: false)
        }
    }

    /// The current attempt failed: report it, give the server slot back and try the next one.
    private func connectFailed(error: UVError?, reason: String, timeout: Bool) {
        guard let failed = server else { return }
        server = nil
        service.connectFailed(failed, error: error, reason: reason, timeout: timeout)
        service.release(failed)
        if let upstream {
            upstream.delegate = self  // still counted until its close callback
            upstream.close()
            self.upstream = nil
        }
        if attempts < service.maxAttempts {
            service.noteRetry()
            connectNext()
        } else {
            finish(timeout ? "connect_timeout" : "connect_failed", error: reason)
        }
    }

    // MARK: Timer: connect timeout, retry backoff, then idle timeout

    private func timerFired() {
        switch phase {
        case .connecting:
            connectFailed(error: nil, reason: "timeout after \(service.connectTimeoutMs)ms", timeout: true)
        case .backingOff:
            phase = .connecting
            tried = ServerSet()
            connectNext()
        case .relaying:
            let idle = service.idleTimeoutMs
            let now = client.loop.now
            let quiet = now &- lastActivity
            if quiet >= idle {
                finish("idle_timeout")
            } else {
                timer?.start(timeout: idle - quiet)
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
        serverStats = server.stats
        service.connectSucceeded(server, after: client.loop.now &- connectStartedAt)
        do {
            try client.setNoDelay(true)
            try upstream.setNoDelay(true)
            try client.setKeepAlive(true)
            try upstream.setKeepAlive(true)
            try client.startReading()
            try upstream.startReading()
        } catch {
            finish("error", error: error.description)
            return
        }
        if service.idleTimeoutMs > 0 {
            timer?.start(timeout: service.idleTimeoutMs)
        } else {
            timer?.stop()
        }
    }

    func stream(_ stream: TCPStream, didRead buffer: UnsafeMutableRawPointer, count: Int) {
        guard phase == .relaying, let upstream else {
            stream.loop.buffers.give(buffer)
            return
        }
        lastActivity = stream.loop.now
        let target: TCPStream
        if stream.tag == Self.clientTag {
            bytesIn &+= UInt64(count)
            serverStats?.bytesFromClients &+= UInt64(count)
            target = upstream
        } else {
            bytesOut &+= UInt64(count)
            serverStats?.bytesToClients &+= UInt64(count)
            target = client
        }
        if let error = target.write(buffer: buffer, count: count) {
            fail(side: target, error)
            return
        }
        if target.isAboveHighWaterMark {
            stream.stopReading()
        }
    }

    func streamDidDrain(_ stream: TCPStream) {
        guard phase == .relaying else { return }
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
        guard phase == .relaying, let upstream else { return }
        lastActivity = stream.loop.now
        // Half-close: shut down the other side's write direction once its queue is flushed.
        let other: TCPStream = stream.tag == Self.clientTag ? upstream : client
        if stream.tag == Self.clientTag { clientEOF = true } else { upstreamEOF = true }
        do {
            try other.shutdown()
        } catch {
            fail(side: other, error)
        }
    }

    func streamDidShutdown(_ stream: TCPStream) {
        guard phase == .relaying else { return }
        if stream.tag == Self.clientTag { clientShutDown = true } else { upstreamShutDown = true }
        if clientShutDown && upstreamShutDown {
            finish("closed")
        }
    }

    func stream(_ stream: TCPStream, didFail error: UVError) {
        fail(side: stream, error)
    }

    func streamDidClose(_ stream: TCPStream) {
        openStreams -= 1
        if openStreams == 0 && phase == .finished {
            runtime.sessionEnded(self)
        }
    }

    // MARK: Ending

    private func fail(side: TCPStream, _ error: UVError) {
        let who = side.tag == Self.clientTag ? "client" : "server"
        let what = error == .connectionReset ? "reset" : "error"
        finish("\(who)_\(what)", error: error.description, reset: true)
    }

    /// Ends the session: closes both sides (with a reset when it ended in error, so that neither
    /// peer mistakes a cut-off stream for a complete one) and releases the server slot.
    func finish(_ reason: String, error: String? = nil, reset: Bool = false) {
        guard phase != .finished else { return }
        let wasConnecting = phase == .connecting
        let wasRelaying = phase == .relaying || serverStats != nil
        phase = .finished
        service.connectionEnded(server, relayed: wasRelaying, milliseconds: client.loop.now &- startedAt)
        if reason == "no_server" { service.stats.rejected[RejectReason.noServer.rawValue] &+= 1 }
        if reason == "connect_failed" || reason == "connect_timeout" {
            service.stats.rejected[RejectReason.connectFailed.rawValue] &+= 1
        }
        endReason = reason
        endError = error
        timer?.close()
        timer = nil
        if let server {
            if wasConnecting && attemptIsTrial { service.cancelTrial(server) }
            service.release(server)
        }
        if reset {
            client.closeWithReset()
            upstream?.closeWithReset()
        } else {
            client.close()
            upstream?.close()
        }
    }

    /// The closing log line; called once both streams are closed.
    func logClosed(_ logger: Logger) {
        let duration = client.loop.now &- startedAt
        var metadata: Logger.Metadata = [
            "client": "\(clientAddress?.description ?? "-")",
            "server": "\(server?.name ?? "-")",
            "bytes_in": "\(bytesIn)",
            "bytes_out": "\(bytesOut)",
            "duration_ms": "\(duration)",
            "end": "\(endReason)",
        ]
        if let endError { metadata["error"] = "\(endError)" }
        logger.info("connection closed", metadata: metadata)
    }
}
