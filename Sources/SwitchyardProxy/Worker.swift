import Dispatch
import Logging
import Synchronization
import SwitchyardCore
import SwitchyardUV
#if canImport(Glibc)
import Glibc
#endif

/// Which listener this is: the service's name, the `listen` value and, when a service lists the
/// same value more than once (port 0), which one. A reload keeps a listener whose key stays, and
/// hands a listener with a fixed port to whichever service now lists that address.
struct ListenerKey: Hashable, Sendable {
    var service: String
    var address: String
    var occurrence: Int
}

/// One `listen` address in a plan: what to listen on, and the existing listener to keep, if any.
struct ListenPlan: Sendable {
    var key: ListenerKey
    var address: HostPort
    var resolved: SocketAddress
    var reuse: ListenerKey?
}

/// A listening socket and the service it currently feeds (a reload may hand it to another
/// service of the same address, so the accept path looks the service up here).
final class ServiceListener {
    let listener: TCPListener
    /// Weak: the service holds its listeners; a listener bound ahead of a reload has none yet.
    weak var service: WorkerService?
    var key: ListenerKey

    init(listener: TCPListener, service: WorkerService?, key: ListenerKey) {
        self.listener = listener
        self.service = service
        self.key = key
    }
}

/// What a session needs of its service's configuration, taken once per configuration (not per
/// connection, which would copy the whole configuration out of the shared lock).
struct SessionSettings {
    var connectTimeoutMs: UInt64
    var idleTimeoutMs: UInt64
    var maxAttempts: Int
    /// ip_hash: the client address picks the server.
    var hashesClientAddress: Bool
    /// The per-connection log line is on (info or more verbose).
    var logsConnections: Bool
    var splice: SpliceMode
    var serverKeepAlive: Bool

    init(_ config: ServiceConfig, logLevel: Logger.Level) {
        connectTimeoutMs = max(1, config.connectTimeout.wholeMilliseconds)
        idleTimeoutMs = config.idleTimeout.wholeMilliseconds
        maxAttempts = 1 + config.health.retries
        hashesClientAddress = config.balance == .ipHash
        logsConnections = logLevel <= .info
        splice = config.splice
        serverKeepAlive = config.serverKeepAlive
    }
}

/// A service as one worker sees it: the shared scheduling state, this worker's listeners and
/// counters. Loop-confined to its worker.
final class WorkerService {
    let shared: SharedService
    /// Refreshed by `Worker.apply` when a reload changes the service.
    var settings: SessionSettings
    var listeners: [ServiceListener] = []
    let stats: ServiceStats
    let logger: Logger
    let workerID: Int
    /// Removed by a reload: listeners closed, connections finish.
    var removed = false

    init(shared: SharedService, workerID: Int, logger: Logger) {
        self.shared = shared
        self.workerID = workerID
        self.stats = shared.serviceStats[workerID]
        var logger = logger
        logger[metadataKey: "service"] = "\(shared.name)"
        self.logger = logger
        self.settings = SessionSettings(shared.config, logLevel: logger.logLevel)
    }

    var name: String { shared.name }

    /// This worker's counters for `server`.
    @inline(__always)
    func stats(for server: ServerDescriptor) -> ServerStats { server.stats[workerID] }
}

/// One event-loop thread: its loop, listeners (one socket per address and worker, with
/// `SO_REUSEPORT` when there are several workers so the kernel spreads connections), sessions
/// and counters. Worker 0 runs on the main thread and is also the control worker (signals,
/// admin, probes, reload). Other threads reach a worker only through `loop.execute`.
final class Worker: @unchecked Sendable {
    // @unchecked Sendable: every mutable property is touched only on this worker's loop thread;
    // other threads call `loop.execute` (thread-safe) and nothing else.
    let id: Int
    let loop: EventLoop
    unowned let runtime: ProxyRuntime
    private(set) var services: [String: WorkerService] = [:]
    /// Open sessions, as an intrusive doubly linked list (no hashing or allocation per connection).
    private var sessionsHead: ProxySession?
    private(set) var sessionCount = 0
    private var nextSessionID: UInt64 = 0
    private var pendingAccepts: [ServiceListener] = []
    private(set) var accepting = false
    private(set) var draining = false
    private var stopped = false
    var logger: Logger

    init(id: Int, runtime: ProxyRuntime, logger: Logger) throws(UVError) {
        self.id = id
        self.runtime = runtime
        self.loop = try EventLoop()
        loop.busyPollNanoseconds = runtime.config.global.busyPoll.wholeNanoseconds
        var logger = logger
        if runtime.workerCount > 1 { logger[metadataKey: "worker"] = "\(id)" }
        self.logger = logger
        // Session ids are unique per worker; keep them distinct across workers for logs.
        nextSessionID = UInt64(id) << 48
    }

    /// Always, even with one worker: a reload can then open a listener on an address that
    /// overlaps one of its own (127.0.0.1:P to 0.0.0.0:P) before closing the old one. Another
    /// process's socket is caught before binding (`ProxyRuntime.checkListen`).
    var reusePort: Bool { true }

    // MARK: Listeners

    /// Opens this worker's listener on `address` for `service`. `bound` is the address worker 0
    /// actually bound (so that port 0 means the same port on every worker).
    func bind(_ key: ListenerKey, resolved: SocketAddress, for service: WorkerService?) throws(UVError) -> ServiceListener {
        var binding: ServiceListener?
        let listener = try TCPListener(loop: loop, address: resolved, reusePort: reusePort) { [unowned self] _ in
            guard let binding else { return }
            self.accept(on: binding)
        }
        // Accepted sockets inherit these from the listener (Linux), so sessions need not set them.
        try listener.setAcceptedSocketOptions(noDelay: true, keepAliveSeconds: ProxySession.keepAliveSeconds)
        listener.onError = { [unowned self] _, error in
            self.logger.error("accept failed", metadata: ["service": "\(binding?.service?.name ?? "")", "error": "\(error)"])
        }
        binding = ServiceListener(listener: listener, service: service, key: key)
        return binding!
    }

    /// Sets up `services` with their listeners at start. Worker 0 resolves and binds first; the
    /// others bind the addresses it got.
    func install(_ plan: [(SharedService, [ListenPlan])]) throws(UVError) -> [[SocketAddress]] {
        var bound: [[SocketAddress]] = []
        do throws(UVError) {
            for (shared, addresses) in plan {
                let service = WorkerService(shared: shared, workerID: id, logger: logger)
                services[shared.name] = service
                var addressesBound: [SocketAddress] = []
                for entry in addresses {
                    let l = try bind(entry.key, resolved: entry.resolved, for: service)
                    service.listeners.append(l)
                    addressesBound.append(l.listener.boundAddress)
                }
                bound.append(addressesBound)
            }
        } catch {
            closeAllListeners()
            throw error
        }
        return bound
    }

    func closeAllListeners() {
        for service in services.values {
            for l in service.listeners { l.listener.close() }
            service.listeners.removeAll()
        }
    }

    // MARK: Accepting

    /// Called once the first probe round is in: connections waiting in the backlog are accepted.
    func startAccepting() {
        guard !accepting, !draining else { return }
        accepting = true
        let waiting = pendingAccepts
        pendingAccepts.removeAll()
        for binding in waiting { accept(on: binding) }
    }

    private func accept(on binding: ServiceListener) {
        if !accepting && !draining {
            // Leave it in libuv's hands: the listener pauses until we call accept.
            if !pendingAccepts.contains(where: { $0 === binding }) { pendingAccepts.append(binding) }
            return
        }
        guard let service = binding.service else { return }
        let client: TCPStream
        do {
            client = try binding.listener.accept()
        } catch {
            logger.error("accept failed", metadata: ["service": "\(service.name)", "error": "\(error)"])
            return
        }
        service.stats.accepted.add(1)
        if draining {
            client.close()
            service.stats.reject(.draining)
            return
        }
        guard runtime.admitConnection() else {
            client.close()
            service.stats.reject(.maxConnections)
            runtime.noteRejected(at: loop.now)
            return
        }
        nextSessionID &+= 1
        service.shared.openSessions.wrappingAdd(1, ordering: .relaxed)
        let session = ProxySession(id: nextSessionID, client: client, service: service, worker: self)
        session.listNext = sessionsHead
        sessionsHead?.listPrev = session
        sessionsHead = session
        sessionCount += 1
        session.start()
    }

    func sessionEnded(_ session: ProxySession) {
        if let prev = session.listPrev { prev.listNext = session.listNext } else { sessionsHead = session.listNext }
        session.listNext?.listPrev = session.listPrev
        session.listNext = nil
        session.listPrev = nil
        sessionCount -= 1
        session.service.shared.openSessions.wrappingSubtract(1, ordering: .relaxed)
        runtime.connectionClosed()
        session.logClosed()
        if draining && sessionCount == 0 { runtime.workerDrained(id) }
    }

    /// The open sessions, for the rare walks (closing a server's connections, stopping).
    var sessions: [ProxySession] {
        var all: [ProxySession] = []
        all.reserveCapacity(sessionCount)
        var cursor = sessionsHead
        while let session = cursor {
            all.append(session)
            cursor = session.listNext
        }
        return all
    }

    /// Ends this worker's established connections to `server` (on_down = close, disable).
    func closeConnections(to server: ServerDescriptor, reason: String) {
        let doomed = sessions.filter { $0.server === server }
        for session in doomed { session.finish(reason, reset: true) }
    }

    // MARK: Drain and stop

    /// Stop accepting: listeners close at once, established connections go on.
    func beginDrain() {
        guard !draining else { return }
        draining = true
        closeAllListeners()
        if sessionCount == 0 { runtime.workerDrained(id) }
    }

    /// Closes every connection and every handle of this worker, so that its loop returns.
    func stop() {
        guard !stopped else { return }
        stopped = true
        draining = true
        closeAllListeners()
        for session in sessions { session.finish("shutdown") }
        if id != 0 { loop.closeInbox() }
    }

    // MARK: Reload

    /// Applies a reload on this worker: services by name, each with its listeners. A plan entry
    /// with `reuse` takes that existing listener; one without is bound anew (or taken from
    /// `prebound`, the control worker's listeners bound ahead to check the reload).
    func apply(_ plan: [(SharedService, [ListenPlan])], prebound: [ListenerKey: ServiceListener] = [:]) {
        var prebound = prebound
        var old = services
        var open: [ListenerKey: ServiceListener] = [:]
        for service in old.values {
            for l in service.listeners { open[l.key] = l }
        }
        var next: [String: WorkerService] = [:]
        for (shared, entries) in plan {
            let service: WorkerService
            if let existing = old.removeValue(forKey: shared.name), existing.shared === shared {
                service = existing
                service.settings = SessionSettings(shared.config, logLevel: service.logger.logLevel)
            } else {
                service = WorkerService(shared: shared, workerID: id, logger: logger)
            }
            var listeners: [ServiceListener] = []
            for entry in entries {
                if let reuse = entry.reuse, let existing = open.removeValue(forKey: reuse) {
                    existing.service = service
                    existing.key = entry.key
                    listeners.append(existing)
                } else if let ready = prebound.removeValue(forKey: entry.key) {
                    ready.service = service
                    listeners.append(ready)
                } else {
                    do {
                        listeners.append(try bind(entry.key, resolved: entry.resolved, for: service))
                    } catch {
                        logger.error(
                            "reload: cannot listen",
                            metadata: ["service": "\(shared.name)", "address": "\(entry.address)", "error": "\(error)"])
                    }
                }
            }
            service.listeners = listeners
            next[shared.name] = service
        }
        for l in open.values { l.listener.close() }
        for l in prebound.values { l.listener.close() }
        for removed in old.values {
            removed.removed = true
            removed.listeners.removeAll()
        }
        services = next
    }

    // MARK: Thread

    private let finished = DispatchSemaphore(value: 0)

    /// The worker's thread ran its loop to the end.
    func threadFinished() { finished.signal() }

    /// Waits for the worker's thread to finish its loop.
    func joinThread() { finished.wait() }
}
