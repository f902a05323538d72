import Logging
import SwitchyardCore
import SwitchyardUV
#if canImport(Glibc)
import Glibc
#endif

/// A running Switchyard process: its event loop, services, listeners, sessions and signal handlers.
public final class ProxyRuntime {
    public enum StartError: Error, CustomStringConvertible {
        case listen(service: String, address: String, error: String)
        case loop(String)

        public var description: String {
            switch self {
            case .listen(let service, let address, let error):
                return "service \(service): cannot listen on \(address): \(error)"
            case .loop(let error):
                return "cannot start the event loop: \(error)"
            }
        }
    }

    public let config: SwitchyardConfig
    let loop: EventLoop
    var logger: Logger
    private var services: [ServiceRuntime] = []
    private var sessions: [UInt64: ProxySession] = [:]
    private var nextSessionID: UInt64 = 0
    private var signals: [UVSignal] = []
    private var stopping = false
    private var rejectedSinceLog = 0
    private var lastRejectLog: UInt64 = 0

    /// Client connections open now (sessions not yet fully closed).
    public var activeConnections: Int { sessions.count }

    public init(config: SwitchyardConfig, logger: Logger) throws {
        self.config = config
        self.logger = logger
        do {
            self.loop = try EventLoop()
        } catch {
            throw StartError.loop(error.description)
        }
    }

    /// Binds every listener, installs signal handlers and runs the loop until a stop signal.
    /// Returns the process exit status.
    public func run() throws -> Int32 {
        // A write to a socket whose peer is gone must fail with EPIPE, not kill the process.
        signal(SIGPIPE, SIG_IGN)
        if let workers = config.global.workers, workers != 1 {
            logger.warning("workers=\(workers) requested; this build runs one event loop")
        } else if config.global.workers == nil {
            logger.warning("workers=auto requested; this build runs one event loop")
        }
        do {
            try startServices()
        } catch {
            for service in services {
                for listener in service.listeners { listener.close() }
                service.stopHealthChecks()
            }
            loop.closeInbox()
            loop.run()
            loop.finish()
            throw error
        }
        for signum in [SIGINT, SIGTERM] {
            signals.append(try UVSignal(loop: loop, signal: signum) { [unowned self] signum in
                self.stop(signal: signum)
            })
        }
        logger.info(
            "started",
            metadata: ["services": "\(services.count)", "pid": "\(getpid())", "version": "\(SwitchyardVersion.current)"])
        loop.run()
        if !loop.finish() {
            logger.error("event loop closed with handles still open")
        }
        logger.info("stopped")
        return 0
    }

    private func startServices() throws {
        for serviceConfig in config.services {
            let service = ServiceRuntime(config: serviceConfig, loop: loop, logger: logger)
            service.onServerDown = { [unowned self] service, server in
                self.closeConnections(of: service, to: server, reason: "server_down")
            }
            services.append(service)
            for listen in serviceConfig.listen {
                let address: SocketAddress
                do {
                    guard let resolved = try SocketAddress.resolve(host: listen.host, port: listen.port).first else {
                        throw StartError.listen(service: service.name, address: listen.description, error: "no address")
                    }
                    address = resolved
                } catch let error as UVError {
                    throw StartError.listen(service: service.name, address: listen.description, error: error.description)
                }
                do {
                    let listener = try TCPListener(loop: loop, address: address) { [unowned self, unowned service] listener in
                        self.accept(on: listener, for: service)
                    }
                    listener.onError = { [unowned self] _, error in
                        self.logger.error("accept failed", metadata: ["service": "\(service.name)", "error": "\(error)"])
                    }
                    service.listeners.append(listener)
                    logger.info(
                        "listening",
                        metadata: [
                            "service": "\(service.name)",
                            "address": "\(listener.boundAddress)",
                            "balance": "\(serviceConfig.balance.rawValue)",
                        ])
                } catch {
                    throw StartError.listen(service: service.name, address: listen.description, error: error.description)
                }
            }
        }
        for service in services {
            try service.startHealthChecks()
        }
    }

    /// `on_down = close`: ends the established connections of `service` to `server`.
    func closeConnections(of service: ServiceRuntime, to server: UpstreamServer, reason: String) {
        let doomed = sessions.values.filter { $0.service === service && $0.server === server }
        for session in doomed { session.finish(reason, reset: true) }
    }

    private func accept(on listener: TCPListener, for service: ServiceRuntime) {
        let client: TCPStream
        do {
            client = try listener.accept()
        } catch {
            logger.error("accept failed", metadata: ["service": "\(service.name)", "error": "\(error)"])
            return
        }
        if stopping {
            client.close()
            return
        }
        if sessions.count >= config.global.maxConnections {
            client.close()
            noteRejected()
            return
        }
        nextSessionID &+= 1
        let session = ProxySession(id: nextSessionID, client: client, service: service, runtime: self)
        sessions[session.id] = session
        session.start()
    }

    /// Rejections at the connection cap are logged at most once a second, with a count.
    private func noteRejected() {
        rejectedSinceLog += 1
        let now = loop.now
        if lastRejectLog == 0 || now &- lastRejectLog >= 1000 {
            logger.warning(
                "max_connections reached; new connections closed",
                metadata: ["max_connections": "\(config.global.maxConnections)", "rejected": "\(rejectedSinceLog)"])
            rejectedSinceLog = 0
            lastRejectLog = now
        }
    }

    func sessionEnded(_ session: ProxySession) {
        sessions[session.id] = nil
        session.logClosed(session.service.logger)
    }

    /// SIGINT/SIGTERM: close listeners and every connection, then let the loop run out.
    private func stop(signal signum: Int32) {
        guard !stopping else { return }
        stopping = true
        logger.notice("stopping", metadata: ["signal": "\(signum == SIGTERM ? "SIGTERM" : signum == SIGINT ? "SIGINT" : String(signum))"])
        for service in services {
            for listener in service.listeners { listener.close() }
            service.listeners.removeAll()
            service.stopHealthChecks()
        }
        for session in sessions.values {
            session.finish("shutdown")
        }
        for s in signals { s.close() }
        signals.removeAll()
        loop.closeInbox()
    }
}

public enum SwitchyardVersion {
    public static let current = "0.1.0"
}
