import SwitchyardCore
import SwitchyardUV

/// The admin HTTP endpoint, served from the event loop: /metrics, /status, /healthz, /readyz and
/// the mutations (drain/disable/enable a server, reload). One request per connection
/// (`Connection: close`). A slow or malicious client cannot stall relaying: reads are
/// non-blocking, requests are bounded (8 KiB head, 64 KiB body), each connection has 10 s to
/// send its request, and at most 64 admin connections are open at once. When all 64 are taken, a
/// new connection closes the oldest lingering one (below), else the oldest still waiting for its
/// request, else the oldest waiting for a reload's answer, rather than being refused itself
/// (nginx's and HAProxy's answer to idle-connection floods): 64 idle sockets cannot lock out a
/// liveness probe, which sends its request as soon as it connects. Only when all 64 are writing
/// their answers (10 s at most each) is a newcomer refused.
///
/// After the answer a connection lingers (nginx's `lingering_close`): the write side is shut down
/// (FIN after the answer) but the socket stays open, reading and dropping whatever the client still
/// sends, until the client's FIN, `lingerTimeoutMs` or `maxLingerBytes`. Closing at once would
/// leave any bytes sent beyond the request (a body the endpoint refused, a pipelined request,
/// junk) unread in the kernel, and a close with unread bytes sends a reset (RFC 1122 §4.2.2.13),
/// which drops the part of the answer not yet sent: the client sees ECONNRESET instead of the end
/// of the answer. A lingering connection still holds one of the 64 places, but it is the
/// first to make room for a new connection: its answer is out.
final class AdminServer {
    static let maxConnections = 64
    static let requestTimeoutMs: UInt64 = 10_000
    /// How long a connection may linger after its answer, in all (not per read). A client that
    /// sent its extra bytes along with the request has them on the wire already; 2 s covers their
    /// arrival and the client reading the answer and closing over any network an admin endpoint is
    /// reached through (many round trips), while the 64 places, and the loop at shutdown, are not
    /// held for long by clients that never close. (nginx's 30 s `lingering_time` is for large
    /// uploads; requests here are at most 72 KiB.)
    static let lingerTimeoutMs: UInt64 = 2_000
    /// Bytes read past the request after which a lingering connection is closed anyway (reset if
    /// more is unread): far beyond what a well-behaved client sends after a request (a refused body
    /// of a few hundred KiB), and a bound on the work a client streaming junk can cause.
    static let maxLingerBytes = 1 << 20

    private unowned let runtime: ProxyRuntime
    private let listener: TCPListener
    private var connections: [ObjectIdentifier: AdminConnection] = [:]
    /// Connections accepted so far: each connection's serial number, oldest lowest.
    private var accepted: UInt64 = 0
    let boundAddress: SocketAddress

    /// `names`: a reload's answers, looked up off the loop (without one, a name resolves now).
    init(runtime: ProxyRuntime, address: HostPort, names: ResolvedNames = .none) throws {
        self.runtime = runtime
        let resolved: SocketAddress
        do {
            guard let first = try names.resolve(address).first else {
                throw ProxyRuntime.StartError.adminListen(address: address.description, error: "no address")
            }
            resolved = first
        } catch let error as UVError {
            throw ProxyRuntime.StartError.adminListen(address: address.description, error: error.description)
        }
        var accept: ((TCPListener) -> Void)?
        do {
            listener = try TCPListener(loop: runtime.loop, address: resolved, backlog: 64) { l in accept?(l) }
        } catch {
            throw ProxyRuntime.StartError.adminListen(address: address.description, error: error.description)
        }
        boundAddress = listener.boundAddress
        accept = { [unowned self] l in self.accept(l) }
        runtime.logger.info("admin listening", metadata: ["address": "\(boundAddress)"])
    }

    /// Stops accepting; open connections carry on (see `close`).
    func stopListening() {
        listener.close()
    }

    /// Stops listening and drops the connections still waiting for their request and those
    /// lingering (their answer is out); those being answered (even from inside `respond`, as a
    /// reload that moves the endpoint does) finish sending the answer and linger (each holds this
    /// server until its close callback). `abortAll` (the process is stopping): every connection
    /// goes now, so that no client reading slowly keeps the loop from returning.
    func close(abortAll: Bool = false) {
        listener.close()
        closingAll = abortAll
        for connection in connections.values where abortAll || !connection.answered || connection.lingering {
            connection.abort()
        }
    }

    /// Set by `close(abortAll: true)`: a connection finishing its answer closes instead of lingering.
    private(set) var closingAll = false

    private func accept(_ l: TCPListener) {
        guard let stream = try? l.accept() else { return }
        // Closing connections stay in the table until their close callback: count the others.
        let open = connections.values.filter { !$0.aborted }
        if open.count >= Self.maxConnections {
            // A lingering connection first (its answer is out: closing it costs at most a reset of
            // bytes it should not have sent), else the oldest still waiting for its request, else
            // the oldest waiting for a reload to finish (the reload goes on; only its answer is
            // lost). Not a waiting one first: under a flood of lingering connections that would be
            // the newest arrival, a probe about to send its request.
            let older = { (a: AdminConnection, b: AdminConnection) in a.serial < b.serial }
            guard let victim = open.filter(\.lingering).min(by: older)
                ?? open.filter({ !$0.answered }).min(by: older)
                ?? open.filter(\.awaitingAnswer).min(by: older)
            else {
                stream.close()  // every one is writing its answer (10 s at most): refuse the newcomer
                return
            }
            victim.abort()
        }
        accepted += 1
        let connection = AdminConnection(stream: stream, server: self, serial: accepted)
        connections[ObjectIdentifier(connection)] = connection
        connection.start()
    }

    fileprivate func connectionClosed(_ connection: AdminConnection) {
        connections[ObjectIdentifier(connection)] = nil
    }

    /// Answers `request` through `answer`: at once, except a reload, which answers when it is
    /// applied (after any DNS lookups it needs; see `ProxyRuntime.reload`).
    fileprivate func respond(to request: HTTPRequest, answer: @escaping (HTTPResponse) -> Void) {
        let route: AdminRoute
        switch AdminRoute.resolve(request) {
        case .success(let r): route = r
        case .failure(let error): return answer(error.response)
        }
        if route.isMutation && !AdminRoute.authorize(request: request, token: runtime.config.global.adminToken) {
            return answer(.unauthorized())
        }
        switch route {
        case .healthz:
            answer(.text(.ok, "ok\n"))
        case .readyz:
            if let reason = runtime.notReadyReason() {
                answer(.text(.serviceUnavailable, "not ready: \(reason)\n"))
            } else {
                answer(.text(.ok, "ready\n"))
            }
        case .metrics:
            answer(HTTPResponse(status: .ok, contentType: PrometheusWriter.contentType, body: MetricsExporter.render(runtime)))
        case .status:
            answer(HTTPResponse(status: .ok, contentType: "application/json", body: StatusExporter.render(runtime)))
        case .reload:
            runtime.reload(trigger: "admin") { outcome in
                switch outcome {
                case .reloaded: answer(.text(.ok, "reloaded\n"))
                case .failed(let error): answer(.error(.badRequest, "reload failed: \(error)"))
                case .ignored(let reason): answer(.error(.serviceUnavailable, "not reloading: \(reason)"))
                }
            }
        case .serverAction(let serviceName, let serverName, let action):
            guard let service = runtime.services.first(where: { $0.name == serviceName }) else {
                return answer(.error(.notFound, "no service \(serviceName)"))
            }
            guard let server = service.server(named: serverName) else {
                return answer(.error(.notFound, "no server \(serverName) in service \(serviceName)"))
            }
            let state: AdminState
            switch action {
            case .drain: state = .draining
            case .disable: state = .disabled
            case .enable: state = .enabled
            }
            runtime.setAdminState(server, of: service, state)
            answer(.text(.ok, "\(serviceName)/\(serverName): \(state.rawValue)\n"))
        }
    }
}

/// One admin client connection: read a request, answer it, linger (see `AdminServer`), close.
private final class AdminConnection: TCPStreamDelegate {
    private let stream: TCPStream
    /// Strong: the server's table holds this connection until its close callback, and the server
    /// must outlive that callback even when the endpoint is being shut down.
    private let server: AdminServer
    private var parser = HTTPRequestParser()
    private var timer: UVTimer?
    /// The request is complete (being answered, answered or lingering).
    private(set) var answered = false
    /// The request is complete and its answer not begun: a reload resolving names.
    private(set) var awaitingAnswer = false
    /// Answered, the write side shut down: reading and dropping until the client's FIN, the linger
    /// timeout or `maxLingerBytes`.
    private(set) var lingering = false
    /// Closed (or closing): no longer counts against the connection limit.
    private(set) var aborted = false
    /// The client's FIN came while the answer was still being written: close once it is out.
    private var clientFinished = false
    /// Bytes read (and dropped) since the answer began.
    private var droppedBytes = 0
    /// False for a HEAD request.
    private var includeBody = true
    /// Order of acceptance: the oldest lingering, else waiting for its request, else waiting for a
    /// reload's answer, makes room for a new connection.
    let serial: UInt64

    /// What a reload still resolving names answers once `requestTimeoutMs` has passed: it was
    /// accepted and applies when its lookups end (an HTTP client's patience is shorter than a
    /// resolver's timeouts, and the connection's place is better given back).
    static let stillReloading = HTTPResponse.text(
        .accepted, "reload in progress (resolving names): it applies when they are in; see the log or switchyard_config_reloads_total\n")

    init(stream: TCPStream, server: AdminServer, serial: UInt64) {
        self.stream = stream
        self.server = server
        self.serial = serial
        stream.delegate = self
    }

    func start() {
        do {
            let timer = try UVTimer(loop: stream.loop) { [unowned self] in self.timerFired() }
            self.timer = timer
            timer.start(timeout: AdminServer.requestTimeoutMs)
            try stream.startReading()
        } catch {
            abort()
        }
    }

    /// Waiting for the request, writing the answer or lingering: too long, close. Waiting for a
    /// reload's answer: say it is under way (202) instead.
    private func timerFired() {
        if awaitingAnswer {
            send(Self.stillReloading, includeBody: includeBody)
        } else {
            abort()
        }
    }

    /// Closes the connection (a FIN, unless unread bytes make the kernel reset it).
    func abort() {
        aborted = true
        lingering = false
        awaitingAnswer = false
        timer?.close()
        timer = nil
        stream.close()
    }

    /// Writes the answer and shuts down the write side, then lingers. Reading goes on meanwhile: the
    /// bytes a client sends past its request are dropped as they come, not left to cause a reset.
    private func send(_ response: HTTPResponse, includeBody: Bool) {
        answered = true
        awaitingAnswer = false
        // The answer has `requestTimeoutMs` to be written (a client that does not read it is cut
        // off), then the linger timeout starts.
        timer?.start(timeout: AdminServer.requestTimeoutMs)
        let bytes = response.serialize(includeBody: includeBody)
        let pool = stream.loop.buffers
        var offset = 0
        while offset < bytes.count {
            let n = min(pool.bufferSize, bytes.count - offset)
            let buffer = pool.take()
            bytes.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress! + offset, byteCount: n) }
            if stream.write(buffer: buffer, count: n) != nil {
                abort()
                return
            }
            offset += n
        }
        do {
            // Shut down at once (everything written) or after the queued writes: then linger.
            if try stream.shutdown() { linger() }
        } catch {
            abort()
        }
    }

    /// The answer is written and the FIN queued behind it: keep reading until the client's FIN (or
    /// close now if it came already), the linger timeout (the request timer, restarted) or the byte cap.
    private func linger() {
        guard !aborted else { return }
        guard !clientFinished, !server.closingAll, let timer else {
            abort()
            return
        }
        lingering = true
        timer.start(timeout: AdminServer.lingerTimeoutMs)
    }

    func stream(_ stream: TCPStream, didRead buffer: UnsafeMutableRawPointer, count: Int) {
        guard !answered else {
            // Past the request (being answered or lingering): dropped.
            stream.loop.buffers.give(buffer)
            droppedBytes += count
            if droppedBytes > AdminServer.maxLingerBytes { abort() }
            return
        }
        let result = parser.feed(UnsafeRawBufferPointer(start: buffer, count: count))
        stream.loop.buffers.give(buffer)
        switch result {
        case .needMore:
            break
        case .complete(let request):
            answered = true  // before `respond`, which may close the endpoint (see `close`)
            awaitingAnswer = true
            includeBody = request.method != "HEAD"
            // The answer has `requestTimeoutMs` to come (a reload may wait for DNS; then 202),
            // and `send` gives the writing as long again.
            timer?.start(timeout: AdminServer.requestTimeoutMs)
            server.respond(to: request) { [weak self] response in
                // Closed meanwhile (evicted, the endpoint shut down), or 202 already sent.
                guard let self, awaitingAnswer else { return }
                send(response, includeBody: includeBody)
            }
        case .error(let status, let message):
            // Most errors come after the request line: a HEAD request gets its answer without content.
            send(.error(status, message), includeBody: parser.requestMethod != "HEAD")
        }
    }

    func streamDidReachEOF(_ stream: TCPStream) {
        if answered && !lingering {
            clientFinished = true  // the answer is still being written: `linger` closes
        } else {
            abort()
        }
    }

    func stream(_ stream: TCPStream, didFail error: UVError) { abort() }
    func stream(_ stream: TCPStream, didConnect error: UVError?) {}
    func streamDidDrain(_ stream: TCPStream) {}
    func streamDidShutdown(_ stream: TCPStream) { linger() }

    func streamDidClose(_ stream: TCPStream) {
        timer?.close()
        timer = nil
        server.connectionClosed(self)
    }
}
