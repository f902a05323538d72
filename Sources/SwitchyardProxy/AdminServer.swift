import SwitchyardCore
import SwitchyardUV

/// The admin HTTP endpoint, served from the event loop: /metrics, /status, /healthz, /readyz and
/// the mutations (drain/disable/enable a server, reload). One request per connection
/// (`Connection: close`). A slow or malicious client cannot stall relaying: reads are
/// non-blocking, requests are bounded (8 KiB head, 64 KiB body), each connection has 10 s to
/// send its request, and at most 64 admin connections are open at once. When all 64 are taken, a
/// new connection closes the oldest one still waiting for its request rather than being refused
/// itself (nginx's and HAProxy's answer to idle-connection floods): 64 idle sockets cannot lock
/// out a liveness probe, which sends its request as soon as it connects.
final class AdminServer {
    static let maxConnections = 64
    static let requestTimeoutMs: UInt64 = 10_000

    private unowned let runtime: ProxyRuntime
    private let listener: TCPListener
    private var connections: [ObjectIdentifier: AdminConnection] = [:]
    /// Connections accepted so far: each connection's serial number, oldest lowest.
    private var accepted: UInt64 = 0
    let boundAddress: SocketAddress

    init(runtime: ProxyRuntime, address: HostPort) throws {
        self.runtime = runtime
        let resolved: SocketAddress
        do {
            guard let first = try SocketAddress.resolve(host: address.host, port: address.port).first else {
                throw ProxyRuntime.StartError.listen(service: "admin", address: address.description, error: "no address")
            }
            resolved = first
        } catch let error as UVError {
            throw ProxyRuntime.StartError.listen(service: "admin", address: address.description, error: error.description)
        }
        var accept: ((TCPListener) -> Void)?
        do {
            listener = try TCPListener(loop: runtime.loop, address: resolved, backlog: 64) { l in accept?(l) }
        } catch {
            throw ProxyRuntime.StartError.listen(service: "admin", address: address.description, error: error.description)
        }
        boundAddress = listener.boundAddress
        accept = { [unowned self] l in self.accept(l) }
        runtime.logger.info("admin listening", metadata: ["address": "\(boundAddress)"])
    }

    /// Stops accepting; open connections carry on (see `close`).
    func stopListening() {
        listener.close()
    }

    /// Stops listening and drops the connections still waiting for their request; those being
    /// answered (even from inside `respond`, as a reload that moves the endpoint does) finish
    /// sending the answer (each holds this server until its close callback).
    func close() {
        listener.close()
        for connection in connections.values where !connection.answered { connection.abort() }
    }

    private func accept(_ l: TCPListener) {
        guard let stream = try? l.accept() else { return }
        // Closing connections stay in the table until their close callback: count the others.
        let open = connections.values.filter { !$0.aborted }
        if open.count >= Self.maxConnections {
            guard let oldestWaiting = open.filter({ !$0.answered }).min(by: { $0.serial < $1.serial }) else {
                stream.close()  // every one is being answered: refuse the newcomer
                return
            }
            oldestWaiting.abort()
        }
        accepted += 1
        let connection = AdminConnection(stream: stream, server: self, serial: accepted)
        connections[ObjectIdentifier(connection)] = connection
        connection.start()
    }

    fileprivate func connectionClosed(_ connection: AdminConnection) {
        connections[ObjectIdentifier(connection)] = nil
    }

    fileprivate func respond(to request: HTTPRequest) -> HTTPResponse {
        let route: AdminRoute
        switch AdminRoute.resolve(request) {
        case .success(let r): route = r
        case .failure(let error): return error.response
        }
        if route.isMutation && !AdminRoute.authorize(request: request, token: runtime.config.global.adminToken) {
            return .unauthorized()
        }
        switch route {
        case .healthz:
            return .text(.ok, "ok\n")
        case .readyz:
            if let reason = runtime.notReadyReason() {
                return .text(.serviceUnavailable, "not ready: \(reason)\n")
            }
            return .text(.ok, "ready\n")
        case .metrics:
            return HTTPResponse(status: .ok, contentType: PrometheusWriter.contentType, body: MetricsExporter.render(runtime))
        case .status:
            return HTTPResponse(status: .ok, contentType: "application/json", body: StatusExporter.render(runtime))
        case .reload:
            switch runtime.reload(trigger: "admin") {
            case .reloaded: return .text(.ok, "reloaded\n")
            case .failed(let error): return .error(.badRequest, "reload failed: \(error)")
            case .ignored(let reason): return .error(.serviceUnavailable, "not reloading: \(reason)")
            }
        case .serverAction(let serviceName, let serverName, let action):
            guard let service = runtime.services.first(where: { $0.name == serviceName }) else {
                return .error(.notFound, "no service \(serviceName)")
            }
            guard let server = service.server(named: serverName) else {
                return .error(.notFound, "no server \(serverName) in service \(serviceName)")
            }
            let state: AdminState
            switch action {
            case .drain: state = .draining
            case .disable: state = .disabled
            case .enable: state = .enabled
            }
            runtime.setAdminState(server, of: service, state)
            return .text(.ok, "\(serviceName)/\(serverName): \(state.rawValue)\n")
        }
    }
}

/// One admin client connection: read a request, answer it, close.
private final class AdminConnection: TCPStreamDelegate {
    private let stream: TCPStream
    /// Strong: the server's table holds this connection until its close callback, and the server
    /// must outlive that callback even when the endpoint is being shut down.
    private let server: AdminServer
    private var parser = HTTPRequestParser()
    private var timer: UVTimer?
    private(set) var answered = false
    /// Closed (or closing): no longer counts against the connection limit.
    private(set) var aborted = false
    /// Order of acceptance (the oldest waiting connection makes room for a new one).
    let serial: UInt64

    init(stream: TCPStream, server: AdminServer, serial: UInt64) {
        self.stream = stream
        self.server = server
        self.serial = serial
        stream.delegate = self
    }

    func start() {
        do {
            let timer = try UVTimer(loop: stream.loop) { [unowned self] in self.abort() }
            self.timer = timer
            timer.start(timeout: AdminServer.requestTimeoutMs)
            try stream.startReading()
        } catch {
            abort()
        }
    }

    func abort() {
        aborted = true
        timer?.close()
        timer = nil
        stream.close()
    }

    private func send(_ response: HTTPResponse, includeBody: Bool) {
        answered = true
        stream.stopReading()
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
            // Shut down at once (everything written) or after the queued writes: then close.
            if try stream.shutdown() { abort() }
        } catch {
            abort()
        }
    }

    func stream(_ stream: TCPStream, didRead buffer: UnsafeMutableRawPointer, count: Int) {
        let result = parser.feed(UnsafeRawBufferPointer(start: buffer, count: count))
        stream.loop.buffers.give(buffer)
        guard !answered else { return }
        switch result {
        case .needMore:
            break
        case .complete(let request):
            answered = true  // before `respond`, which may close the endpoint (see `close`)
            send(server.respond(to: request), includeBody: request.method != "HEAD")
        case .error(let status, let message):
            send(.error(status, message), includeBody: true)
        }
    }

    func streamDidReachEOF(_ stream: TCPStream) {
        if !answered { abort() }
    }

    func stream(_ stream: TCPStream, didFail error: UVError) { abort() }
    func stream(_ stream: TCPStream, didConnect error: UVError?) {}
    func streamDidDrain(_ stream: TCPStream) {}
    func streamDidShutdown(_ stream: TCPStream) { abort() }

    func streamDidClose(_ stream: TCPStream) {
        timer?.close()
        timer = nil
        server.connectionClosed(self)
    }
}
