import SwitchyardCore
import SwitchyardUV

/// Active health probe of one server: every `check_interval` (±10%) a TCP connect to the server
/// (or its `check_port`), optionally a request written and a reply judged by `HealthProbe`, all
/// within `check_timeout`. Reports each result to its service. Runs on the loop; shares nothing
/// with the relay path.
final class HealthProber: TCPStreamDelegate {
    private let server: ServerDescriptor
    private unowned let service: HealthControl
    private let probe: HealthProbe
    private let loop: EventLoop
    private let target: SocketAddress
    private var timer: UVTimer?
    private var stream: TCPStream?
    private var received: [UInt8] = []
    private var inFlight = false
    private var stopped = false
    /// The last probe could not even start for want of a local resource (see `skip`).
    private var skipping = false

    private let settings: HealthSettings

    init?(server: ServerDescriptor, service: HealthControl, settings: HealthSettings, probe: HealthProbe, loop: EventLoop) {
        guard let address = server.address else { return nil }
        let port = settings.probePort(serverPort: server.configuredAddress.port)
        self.settings = settings
        guard let target = try? SocketAddress(ip: address.ip, port: port) else { return nil }
        self.server = server
        self.service = service
        self.probe = probe
        self.loop = loop
        self.target = target
    }

    /// Starts probing after `delay` ms (0: at once).
    func start(after delay: UInt64) throws(UVError) {
        let timer = try UVTimer(loop: loop) { [unowned self] in self.timerFired() }
        self.timer = timer
        timer.start(timeout: delay)
    }

    func stop() {
        stopped = true
        timer?.close()
        timer = nil
        stream?.close()
        stream = nil
    }

    private func timerFired() {
        if inFlight {
            finish(.fail(reason: "timeout after \(settings.checkTimeout.wholeMilliseconds)ms"))
        } else {
            begin()
        }
    }

    private func begin() {
        received.removeAll(keepingCapacity: true)
        inFlight = true
        do {
            let stream = try TCPStream(loop: loop)
            stream.delegate = self
            self.stream = stream
            try stream.connect(to: target)
            timer?.start(timeout: max(1, settings.checkTimeout.wholeMilliseconds))
        } catch {
            failed(error)
        }
    }

    /// A connect that failed: a verdict on the server, unless the shortage is ours (`skip`).
    private func failed(_ error: UVError) {
        if error.isLocalResourceShortage { skip(error) } else { finish(.fail(reason: error.description)) }
    }

    /// Out of descriptors, memory or local ports here: the probe says nothing about the server, so
    /// it counts neither way (as for client connects) and the next one comes at the usual time.
    private func skip(_ error: UVError) {
        guard inFlight else { return }
        inFlight = false
        stream?.close()
        stream = nil
        service.probeSkipped(server, reason: error.description, firstInARow: !skipping)
        skipping = true
        if !stopped {
            timer?.start(timeout: service.nextProbeDelay())
        }
    }

    private func finish(_ verdict: ProbeVerdict) {
        guard inFlight else { return }
        inFlight = false
        skipping = false
        if verdict == .pass, let stream {
            // A session the probe opened is ended the protocol's way (a PostgreSQL Terminate),
            // so that the server logs nothing.
            let farewell = probe.farewell(received: received)
            if !farewell.isEmpty { _ = write(farewell, to: stream) }  // best effort; the verdict stands
        }
        stream?.close()
        stream = nil
        switch verdict {
        case .pass:
            service.probeSucceeded(server)
        case .fail(let reason):
            service.probeFailed(server, reason: reason)
        case .needMore:
            service.probeFailed(server, reason: "incomplete reply")
        }
        if !stopped {
            timer?.start(timeout: service.nextProbeDelay())
        }
    }

    /// Writes `bytes` (at most one pooled buffer's worth) through a pooled buffer.
    private func write(_ bytes: [UInt8], to stream: TCPStream) -> UVError? {
        let pool = loop.buffers
        let buffer = pool.take()
        let count = min(bytes.count, pool.bufferSize)
        bytes.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: count) }
        return stream.write(buffer: buffer, count: count)
    }

    // MARK: TCPStreamDelegate

    func stream(_ stream: TCPStream, didConnect error: UVError?) {
        guard stream === self.stream else { return }
        if let error {
            failed(error)
            return
        }
        if !probe.request.isEmpty, let error = write(probe.request, to: stream) {
            finish(.fail(reason: error.description))
            return
        }
        guard probe.readsReply else {
            finish(.pass)
            return
        }
        do {
            try stream.startReading()
        } catch {
            finish(.fail(reason: error.description))
        }
    }

    func stream(_ stream: TCPStream, didRead buffer: UnsafeMutableRawPointer, count: Int) {
        let room = max(0, probe.maxReplyBytes - received.count)
        received.append(contentsOf: UnsafeRawBufferPointer(start: buffer, count: min(count, room)))
        loop.buffers.give(buffer)
        guard stream === self.stream else { return }
        let verdict = probe.evaluate(received: received)
        if verdict != .needMore { finish(verdict) }
    }

    func streamDidReachEOF(_ stream: TCPStream) {
        guard stream === self.stream else { return }
        finish(probe.evaluateAtEndOfStream(received: received))
    }

    func stream(_ stream: TCPStream, didFail error: UVError) {
        guard stream === self.stream else { return }
        finish(.fail(reason: error.description))
    }

    func streamDidDrain(_ stream: TCPStream) {}
    func streamDidShutdown(_ stream: TCPStream) {}
    func streamDidClose(_ stream: TCPStream) {}
}
