import Logging
import SwitchyardCore
import SwitchyardUV
#if canImport(Glibc)
import Glibc
#endif

/// A running Switchyard process: its event loop, services, listeners, sessions, admin endpoint
/// and signal handlers. Everything runs on the loop thread.
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

    enum Lifecycle { case starting, running, draining, stopped }

    public private(set) var config: SwitchyardConfig
    let loop: EventLoop
    var logger: Logger
    /// Reads the configuration file again (with the environment) for a reload.
    private let reloadSource: () throws(ConfigError) -> SwitchyardConfig
    private(set) var services: [ServiceRuntime] = []
    private(set) var sessions: [UInt64: ProxySession] = [:]
    private var nextSessionID: UInt64 = 0
    private var signals: [UVSignal] = []
    private(set) var lifecycle = Lifecycle.starting
    private var drainTimer: UVTimer?
    /// Listeners with a connection waiting while starting (accepted once started).
    private var pendingAccepts: [ServiceListener] = []
    private var rejectedSinceLog = 0
    private var lastRejectLog: UInt64 = 0
    let startedAt: UInt64
    private(set) var reloadsSucceeded: UInt64 = 0
    private(set) var reloadsFailed: UInt64 = 0
    private(set) var lastReloadError: String?
    var admin: AdminServer?

    /// Client connections open now (sessions not yet fully closed).
    public var activeConnections: Int { sessions.count }

    public init(
        config: SwitchyardConfig, logger: Logger,
        reload: @escaping () throws(ConfigError) -> SwitchyardConfig
    ) throws {
        self.config = config
        self.logger = logger
        self.reloadSource = reload
        do {
            self.loop = try EventLoop()
        } catch {
            throw StartError.loop(error.description)
        }
        self.startedAt = loop.now
    }

    /// Binds every listener, installs signal handlers and runs the loop until stopped.
    /// Returns the process exit status.
    public func run() throws -> Int32 {
        // A write to a socket whose peer is gone must fail with EPIPE, not kill the process.
        signal(SIGPIPE, SIG_IGN)
        // Start from an empty signal mask whatever the parent left blocked (some launchers block
        // SIGTERM/SIGINT in their threads, and children inherit the mask).
        var none = sigset_t()
        sigemptyset(&none)
        pthread_sigmask(SIG_SETMASK, &none, nil)
        if let workers = config.global.workers, workers != 1 {
            logger.warning("workers=\(workers) requested; this build runs one event loop")
        } else if config.global.workers == nil {
            logger.warning("workers=auto requested; this build runs one event loop")
        }
        do {
            for serviceConfig in config.services {
                let service = makeService(serviceConfig)
                services.append(service)
                service.listeners = try serviceConfig.listen.map { address throws in
                    try bind(address, for: service)
                }
            }
            if let address = config.global.admin {
                admin = try AdminServer(runtime: self, address: address)
            }
            for service in services {
                service.onFirstProbeRound = { [unowned self] in self.openIfStarted() }
                try service.startHealthChecks()
            }
        } catch {
            closeEverything()
            loop.run()
            loop.finish()
            throw error
        }
        for signum in [SIGINT, SIGTERM, SIGHUP] {
            signals.append(try UVSignal(loop: loop, signal: signum) { [unowned self] signum in
                self.handleSignal(signum)
            })
        }
        openIfStarted()
        loop.run()
        if !loop.finish() {
            logger.error("event loop closed with handles still open")
        }
        logger.info("stopped")
        return 0
    }

    /// Starts accepting once every service has heard back from its first probe round, so that the
    /// first connections are spread on a true picture of the servers. Until then the listeners are
    /// bound and connections wait in the kernel's backlog: a client sees a slower connect, never a
    /// refusal. Each probe answers within `check_timeout`.
    private func openIfStarted() {
        guard lifecycle == .starting, services.allSatisfy(\.firstProbeRoundDone) else { return }
        lifecycle = .running
        logger.info(
            "started",
            metadata: ["services": "\(services.count)", "pid": "\(getpid())", "version": "\(SwitchyardVersion.current)"])
        let waiting = pendingAccepts
        pendingAccepts.removeAll()
        for binding in waiting { accept(on: binding) }
    }

    private func makeService(_ serviceConfig: ServiceConfig) -> ServiceRuntime {
        let service = ServiceRuntime(config: serviceConfig, loop: loop, logger: logger)
        service.onServerDown = { [unowned self] service, server in
            self.closeConnections(of: service, to: server, reason: "server_down")
        }
        return service
    }

    /// Opens a listener on `address` feeding `service` (the binding can be handed to another
    /// service object by a reload).
    private func bind(_ address: HostPort, for service: ServiceRuntime, named name: String? = nil) throws -> ServiceListener {
        let serviceName = name ?? service.name
        let resolved: SocketAddress
        do {
            guard let first = try SocketAddress.resolve(host: address.host, port: address.port).first else {
                throw StartError.listen(service: serviceName, address: address.description, error: "no address")
            }
            resolved = first
        } catch let error as UVError {
            throw StartError.listen(service: serviceName, address: address.description, error: error.description)
        }
        var binding: ServiceListener?
        do {
            let listener = try TCPListener(loop: loop, address: resolved) { [unowned self] _ in
                guard let binding else { return }
                self.accept(on: binding)
            }
            listener.onError = { [unowned self] _, error in
                self.logger.error("accept failed", metadata: ["service": "\(binding?.service.name ?? "")", "error": "\(error)"])
            }
            binding = ServiceListener(listener: listener, service: service, address: address)
            logger.info(
                "listening",
                metadata: [
                    "service": "\(serviceName)",
                    "address": "\(listener.boundAddress)",
                ])
            return binding!
        } catch {
            throw StartError.listen(service: serviceName, address: address.description, error: error.description)
        }
    }

    private func accept(on binding: ServiceListener) {
        if lifecycle == .starting {
            // Leave it in libuv's hands: the listener pauses until we call accept.
            if !pendingAccepts.contains(where: { $0 === binding }) { pendingAccepts.append(binding) }
            return
        }
        let service = binding.service
        let client: TCPStream
        do {
            client = try binding.listener.accept()
        } catch {
            logger.error("accept failed", metadata: ["service": "\(service.name)", "error": "\(error)"])
            return
        }
        service.stats.accepted &+= 1
        if lifecycle != .running {
            client.close()
            service.stats.rejected[RejectReason.draining.rawValue] &+= 1
            return
        }
        if sessions.count >= config.global.maxConnections {
            client.close()
            service.stats.rejected[RejectReason.maxConnections.rawValue] &+= 1
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
        if lifecycle == .draining && sessions.isEmpty {
            logger.notice("drained: every connection finished")
            finishShutdown()
        }
    }

    /// Ends the established connections of `service` to `server` (on_down = close, disable).
    func closeConnections(of service: ServiceRuntime, to server: UpstreamServer, reason: String) {
        let doomed = sessions.values.filter { $0.service === service && $0.server === server }
        for session in doomed { session.finish(reason, reset: true) }
    }

    // MARK: Signals: reload, drain, stop

    private func handleSignal(_ signum: Int32) {
        switch signum {
        case SIGHUP:
            _ = reload(trigger: "SIGHUP")
        default:
            let name = signum == SIGTERM ? "SIGTERM" : "SIGINT"
            if lifecycle == .draining {
                logger.notice("second signal: closing every connection now", metadata: ["signal": "\(name)"])
                finishShutdown()
            } else {
                beginDrain(signal: name)
            }
        }
    }

    /// SIGTERM/SIGINT: close the listeners at once, let established connections finish for up to
    /// `drain_timeout`, then close the rest and stop.
    private func beginDrain(signal name: String) {
        guard lifecycle == .running || lifecycle == .starting else { return }
        lifecycle = .draining
        for service in services {
            service.closeListeners()
            service.stopHealthChecks()
        }
        let timeout = config.global.drainTimeout.wholeMilliseconds
        logger.notice(
            "draining",
            metadata: ["signal": "\(name)", "connections": "\(sessions.count)", "drain_timeout_ms": "\(timeout)"])
        if sessions.isEmpty || timeout == 0 {
            finishShutdown()
            return
        }
        drainTimer = try? UVTimer(loop: loop) { [unowned self] in
            self.logger.notice("drain_timeout reached: closing remaining connections", metadata: ["connections": "\(self.sessions.count)"])
            self.finishShutdown()
        }
        drainTimer?.start(timeout: timeout)
    }

    /// Closes every remaining connection and handle so that the loop runs out and returns.
    private func finishShutdown() {
        guard lifecycle != .stopped else { return }
        lifecycle = .stopped
        for session in Array(sessions.values) { session.finish("shutdown") }
        closeEverything()
    }

    private func closeEverything() {
        for service in services {
            service.closeListeners()
            service.stopHealthChecks()
        }
        drainTimer?.close()
        drainTimer = nil
        admin?.close()
        admin = nil
        for s in signals { s.close() }
        signals.removeAll()
        loop.closeInbox()
    }

    // MARK: Reload

    /// Re-reads the configuration and applies it in place. An invalid file (or a listener that
    /// cannot be bound) changes nothing. Returns nil on success, else the error.
    @discardableResult
    func reload(trigger: String) -> String? {
        guard lifecycle == .running else { return "not running" }
        let newConfig: SwitchyardConfig
        do {
            newConfig = try reloadSource()
        } catch {
            return reloadFailed(error.description, trigger: trigger)
        }
        // Bind what is new first: if that fails nothing has changed yet.
        var open: [String: ServiceListener] = [:]  // by address text, from every current service
        for service in services {
            for l in service.listeners { open[l.address.description] = l }
        }
        var fresh: [ServiceListener] = []
        var plan: [(ServiceConfig, [ServiceListener])] = []
        do {
            for serviceConfig in newConfig.services {
                var listeners: [ServiceListener] = []
                for address in serviceConfig.listen {
                    if let existing = open[address.description] {
                        listeners.append(existing)
                        open[address.description] = nil
                    } else {
                        let placeholder = services.first { $0.name == serviceConfig.name } ?? services.first!
                        let l = try bind(address, for: placeholder, named: serviceConfig.name)
                        fresh.append(l)
                        listeners.append(l)
                    }
                }
                plan.append((serviceConfig, listeners))
            }
        } catch {
            for l in fresh { l.listener.close() }
            return reloadFailed("\(error)", trigger: trigger)
        }
        // Listeners no service claims any more: close them.
        for l in open.values { l.listener.close() }
        var byName: [String: ServiceRuntime] = [:]
        for service in services { byName[service.name] = service }
        var next: [ServiceRuntime] = []
        do {
            for (serviceConfig, listeners) in plan {
                if let service = byName.removeValue(forKey: serviceConfig.name) {
                    try service.update(to: serviceConfig, listeners: listeners)
                    next.append(service)
                } else {
                    let service = makeService(serviceConfig)
                    for l in listeners { l.service = service }
                    service.listeners = listeners
                    try service.startHealthChecks()
                    next.append(service)
                    logger.notice("service added", metadata: ["service": "\(service.name)"])
                }
            }
        } catch {
            logger.error("reload: cannot start health checks", metadata: ["error": "\(error)"])
        }
        for removed in byName.values {
            removed.listeners.removeAll()  // already closed or handed over above
            removed.stopHealthChecks()
            logger.notice("service removed; its connections finish", metadata: ["service": "\(removed.name)"])
        }
        services = next
        let oldAdmin = config.global.admin
        config = newConfig
        if oldAdmin != newConfig.global.admin {
            admin?.close()
            admin = nil
            if let address = newConfig.global.admin {
                do {
                    admin = try AdminServer(runtime: self, address: address)
                } catch {
                    logger.error("reload: admin endpoint not restarted", metadata: ["error": "\(error)"])
                }
            }
        }
        reloadsSucceeded &+= 1
        lastReloadError = nil
        logger.notice("configuration reloaded", metadata: ["trigger": "\(trigger)", "services": "\(services.count)"])
        return nil
    }

    private func reloadFailed(_ message: String, trigger: String) -> String {
        reloadsFailed &+= 1
        lastReloadError = message
        logger.error("reload failed; keeping the running configuration", metadata: ["trigger": "\(trigger)", "error": "\(message)"])
        return message
    }

    // MARK: Readiness

    /// Nil when ready (every listener bound, every service has a usable server), else why not.
    func notReadyReason() -> String? {
        switch lifecycle {
        case .starting: return "starting"
        case .draining, .stopped: return "draining"
        case .running: break
        }
        for service in services {
            if service.listeners.count != service.config.listen.count {
                return "service \(service.name): not every listener is bound"
            }
            if !service.servers.indices.contains(where: { service.balancer.isUsable($0) }) {
                return "service \(service.name): no usable server"
            }
        }
        return nil
    }
}

public enum SwitchyardVersion {
    public static let current = "0.1.0"
}
