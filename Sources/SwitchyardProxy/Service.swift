import Logging
import SwitchyardCore
import SwitchyardUV

/// One upstream server of a service, with its resolved address and counters. The same object
/// lives on across reloads while a server of that name and address stays in the service.
final class UpstreamServer {
    private(set) var config: ServerConfig
    /// Index in the service's current Balancer and health state.
    fileprivate(set) var index: Int
    /// Removed from the service by a reload: its connections finish, nothing new goes to it.
    fileprivate(set) var removed = false
    /// Nil when the host could not be resolved; the server is then unusable.
    let address: SocketAddress?
    let resolveError: String?
    let stats = ServerStats()
    /// Balancer slots this server holds (connects in flight + relayed connections).
    fileprivate(set) var held = 0

    init(config: ServerConfig, index: Int) {
        self.config = config
        self.index = index
        do {
            address = try SocketAddress.resolve(host: config.address.host, port: config.address.port).first
            resolveError = nil
        } catch {
            address = nil
            resolveError = "cannot resolve \(config.address.host): \(error)"
        }
    }

    var name: String { config.name }

    fileprivate func reconfigure(_ config: ServerConfig, index: Int) {
        self.config = config
        self.index = index
    }
}

/// A listening socket and the service it currently feeds (a reload may hand it to another
/// service object of the same address, so the accept path looks the service up here).
final class ServiceListener {
    let listener: TCPListener
    unowned var service: ServiceRuntime
    var address: HostPort

    init(listener: TCPListener, service: ServiceRuntime, address: HostPort) {
        self.listener = listener
        self.service = service
        self.address = address
    }
}

/// A balanced service as it runs: its servers, scheduler, health state, probers and listeners.
///
/// Loop-confined: with one event loop everything here is touched by that loop's thread only.
/// The relay path never comes here; sessions call in only when a connection starts, fails to
/// connect, or ends. A reload updates the object in place (`update(to:listeners:)`).
final class ServiceRuntime {
    private(set) var config: ServiceConfig
    private(set) var servers: [UpstreamServer]
    private(set) var balancer: Balancer
    private(set) var health: ServiceHealth
    var listeners: [ServiceListener] = []
    let stats = ServiceStats()
    private(set) var connectTimeoutMs: UInt64
    private(set) var idleTimeoutMs: UInt64
    var logger: Logger
    unowned let loop: EventLoop
    /// Called when a server goes down (`on_down = close`) or is disabled: close its connections.
    var onServerDown: ((ServiceRuntime, UpstreamServer) -> Void)?

    private var probers: [HealthProber] = []
    /// Servers whose first probe has not answered yet; `onFirstProbeRound` runs when it empties.
    private var awaitingFirstProbe = Set<Int>()
    var onFirstProbeRound: (() -> Void)?
    var firstProbeRoundDone: Bool { awaitingFirstProbe.isEmpty }
    private var healthTimer: UVTimer?
    private var healthTimerDue: UInt64?
    private var rampTimer: UVTimer?
    private var random = SystemRandomNumberGenerator()

    init(config: ServiceConfig, loop: EventLoop, logger: Logger) {
        self.config = config
        self.loop = loop
        self.servers = config.servers.enumerated().map { UpstreamServer(config: $1, index: $0) }
        self.balancer = Self.makeBalancer(config)
        self.connectTimeoutMs = max(1, config.connectTimeout.wholeMilliseconds)
        self.idleTimeoutMs = config.idleTimeout.wholeMilliseconds
        self.health = ServiceHealth(
            settings: config.health, serverNames: config.servers.map(\.name), now: loop.now,
            connectTimeout: config.connectTimeout)
        var logger = logger
        logger[metadataKey: "service"] = "\(config.name)"
        self.logger = logger
        syncAll()
        logUnresolved(servers)
    }

    private static func makeBalancer(_ config: ServiceConfig) -> Balancer {
        Balancer(
            algorithm: config.balance,
            servers: config.servers.map { BackendSpec(name: $0.name, weight: $0.weight, backup: $0.backup) },
            panic: config.health.panic)
    }

    private func logUnresolved(_ list: [UpstreamServer]) {
        for server in list where server.address == nil {
            logger.error(
                "server address unresolved; server unusable",
                metadata: ["server": "\(server.name)", "error": "\(server.resolveError ?? "")"])
        }
    }

    var name: String { config.name }

    /// Applies a new configuration of this service in place. Servers that stay (same name and
    /// address) keep their health state, counters and open connections; removed servers drain
    /// (their connections finish, nothing new goes to them); new servers start fresh.
    /// `listeners` are the service's listeners under the new configuration (kept and new ones).
    func update(to newConfig: ServiceConfig, listeners: [ServiceListener]) throws(UVError) {
        var kept: [String: UpstreamServer] = [:]
        for server in servers { kept[server.name] = server }
        var newServers: [UpstreamServer] = []
        var carried: [(UpstreamServer, ServerHealth)] = []
        for (index, serverConfig) in newConfig.servers.enumerated() {
            if let old = kept[serverConfig.name], old.config.address == serverConfig.address {
                kept[serverConfig.name] = nil
                carried.append((old, health.servers[old.index]))
                old.reconfigure(serverConfig, index: index)
                newServers.append(old)
            } else {
                newServers.append(UpstreamServer(config: serverConfig, index: index))
            }
        }
        for removed in kept.values {
            removed.removed = true
            logger.notice("server removed; its connections finish", metadata: ["server": "\(removed.name)"])
        }
        stopHealthChecks()
        config = newConfig
        servers = newServers
        connectTimeoutMs = max(1, newConfig.connectTimeout.wholeMilliseconds)
        idleTimeoutMs = newConfig.idleTimeout.wholeMilliseconds
        balancer = Self.makeBalancer(newConfig)
        health = ServiceHealth(
            settings: newConfig.health, serverNames: newConfig.servers.map(\.name), now: loop.now,
            connectTimeout: newConfig.connectTimeout)
        for (server, state) in carried {
            health.adopt(state, at: server.index)
            balancer.assumeTaken(server.index, count: server.held)
        }
        for listener in listeners { listener.service = self }
        self.listeners = listeners
        syncAll()
        logUnresolved(newServers.filter { server in !carried.contains { $0.0 === server } })
        try startHealthChecks()
    }

    /// Starts the active probes: the first round at once (so that traffic starts on a true picture
    /// of the servers); later rounds drift apart through the ±10% interval jitter.
    func startHealthChecks() throws(UVError) {
        healthTimer = try UVTimer(loop: loop) { [unowned self] in self.healthTimerFired() }
        scheduleHealthTimer()
        startRampIfNeeded()
        guard let probe = HealthProbe(settings: config.health) else { return }
        for server in servers {
            guard let prober = HealthProber(server: server, service: self, probe: probe, loop: loop) else { continue }
            probers.append(prober)
            awaitingFirstProbe.insert(server.index)
            try prober.start(after: 0)
        }
    }

    private func probeAnswered(_ server: UpstreamServer) {
        guard !awaitingFirstProbe.isEmpty, awaitingFirstProbe.remove(server.index) != nil,
              awaitingFirstProbe.isEmpty
        else { return }
        let callback = onFirstProbeRound
        onFirstProbeRound = nil
        callback?()
    }

    /// Stops probes and timers (the service is going away, or being reconfigured).
    func stopHealthChecks() {
        for prober in probers { prober.stop() }
        probers.removeAll()
        awaitingFirstProbe.removeAll()
        healthTimer?.close()
        healthTimer = nil
        healthTimerDue = nil
        rampTimer?.close()
        rampTimer = nil
    }

    /// Closes the listeners (shutdown, or the service was removed by a reload).
    func closeListeners() {
        for l in listeners { l.listener.close() }
        listeners.removeAll()
    }

    func server(named name: String) -> UpstreamServer? {
        servers.first { $0.name == name }
    }

    /// True when at least one server may take a new connection (panic mode counts).
    var hasUsableServer: Bool {
        servers.indices.contains { balancer.isUsable($0) } || (config.health.panic && servers.contains { server in
            server.address != nil && health.servers[server.index].adminState == .enabled
        })
    }

    // MARK: What a session asks of its service

    /// Connect attempts per client connection: the first plus `retries`.
    var maxAttempts: Int { 1 + config.health.retries }

    /// Picks a server (not one in `tried`), admits it through the health state (half-open servers
    /// take one trial at a time) and counts the connection as taken.
    func acquire(client: ClientKey, excluding tried: ServerSet) -> (server: UpstreamServer, trial: Bool)? {
        var excluded = tried
        let now = loop.now
        for _ in 0...servers.count {
            guard let index = balancer.acquire(client: client, excluding: excluded) else { return nil }
            let admission = health.admit(index, now: now, panicking: balancer.isPanicking)
            syncUsable(index)
            switch admission {
            case .allowed, .trial:
                let server = servers[index]
                if server.address == nil {
                    // Unresolved: only reachable in panic mode; never a real candidate.
                    balancer.release(index)
                    excluded.insert(index)
                    continue
                }
                server.held += 1
                if admission == .trial { scheduleHealthTimer() }
                return (server, admission == .trial)
            case .refused:
                balancer.release(index)
                excluded.insert(index)
            }
        }
        return nil
    }

    /// The connection (or connect attempt) to `server` ended.
    func release(_ server: UpstreamServer) {
        server.held -= 1
        if !server.removed { balancer.release(server.index) }
    }

    /// A half-open trial connection was abandoned before its connect finished.
    func cancelTrial(_ server: UpstreamServer) {
        guard !server.removed else { return }
        health.cancelTrial(server.index)
        syncUsable(server.index)
    }

    func connectSucceeded(_ server: UpstreamServer, after milliseconds: UInt64) {
        server.stats.connectionsTotal &+= 1
        server.stats.connectionsActive += 1
        server.stats.connectDuration.observe(ms: milliseconds)
        guard !server.removed else { return }
        let event = health.connectSucceeded(server.index, now: loop.now)
        if let event { handle(event) }
    }

    func connectFailed(_ server: UpstreamServer, error: UVError?, reason: String, timeout: Bool) {
        server.stats.connectFailures[ConnectFailureReason(error, timeout: timeout).rawValue] &+= 1
        logger.debug("connect failed", metadata: ["server": "\(server.name)", "error": "\(reason)"])
        guard !server.removed else { return }
        let event = health.connectFailed(
            server.index, now: loop.now, reason: timeout ? "timeout" : reason,
            random: Double.random(in: 0..<1, using: &random))
        if let event { handle(event) } else { syncUsable(server.index) }
    }

    func noteRetry() { stats.retries &+= 1 }

    /// A client connection of this service ended after `milliseconds` (relayed or not).
    func connectionEnded(_ server: UpstreamServer?, relayed: Bool, milliseconds: UInt64) {
        if relayed, let server { server.stats.connectionsActive -= 1 }
        stats.connectionDuration.observe(ms: milliseconds)
    }

    /// Backoff before starting over once every candidate was tried: exponential with full jitter,
    /// base 50ms, capped at connect_timeout.
    func retryDelay(attempt: Int) -> UInt64 {
        SwitchyardCore.retryDelay(
            attempt: attempt, cap: config.connectTimeout, random: Double.random(in: 0..<1, using: &random))
    }

    // MARK: Administration

    /// drain / disable / enable from the admin endpoint. Disabling closes established connections
    /// when `on_down = close`.
    func setAdminState(_ server: UpstreamServer, _ state: AdminState) {
        let event = health.setAdminState(server.index, state, now: loop.now)
        if let event { handle(event) } else { syncUsable(server.index) }
        if state == .disabled && config.health.onDown == .close {
            onServerDown?(self, server)
        }
    }

    // MARK: Probes and timers

    func probeSucceeded(_ server: UpstreamServer) {
        server.stats.healthChecksPassed &+= 1
        let event = health.probeSucceeded(server.index, now: loop.now)
        if let event { handle(event) }
        probeAnswered(server)
    }

    func probeFailed(_ server: UpstreamServer, reason: String) {
        server.stats.healthChecksFailed &+= 1
        logger.debug("probe failed", metadata: ["server": "\(server.name)", "error": "\(reason)"])
        let event = health.probeFailed(server.index, now: loop.now, reason: reason)
        if let event { handle(event) }
        probeAnswered(server)
    }

    func nextProbeDelay() -> UInt64 {
        health.probeDelay(random: Double.random(in: 0..<1, using: &random))
    }

    private func handle(_ event: HealthEvent) {
        if case .ejected = event.transition { servers[event.server].stats.ejections &+= 1 }
        logger.notice("\(event.description)", metadata: ["server": "\(event.name)", "state": "\(event.transition.name)"])
        syncUsable(event.server)
        scheduleHealthTimer()
        startRampIfNeeded()
        if case .down = event.transition, config.health.onDown == .close {
            onServerDown?(self, servers[event.server])
        }
    }

    private func syncUsable(_ index: Int) {
        balancer.setUsable(index, health.isUsable(index) && servers[index].address != nil)
    }

    private func syncAll() {
        health.apply(to: &balancer, now: loop.now)
        for server in servers where server.address == nil { balancer.setUsable(server.index, false) }
    }

    /// Arms the health timer for the earliest ejection expiry or lost-trial deadline.
    private func scheduleHealthTimer() {
        guard let due = health.nextDeadline() else { return }
        if let armed = healthTimerDue, armed <= due { return }
        healthTimerDue = due
        let now = loop.now
        healthTimer?.start(timeout: due > now ? due - now : 0)
    }

    private func healthTimerFired() {
        healthTimerDue = nil
        for event in health.tick(now: loop.now) { handle(event) }
        for index in servers.indices { syncUsable(index) }
        scheduleHealthTimer()
    }

    /// Slow start: while a server's weight ramps up, push its factor to the balancer 20 times over the ramp.
    private func startRampIfNeeded() {
        guard config.health.slowStart > .zero, health.isRamping(now: loop.now) else { return }
        if rampTimer == nil {
            rampTimer = try? UVTimer(loop: loop) { [unowned self] in self.rampTick() }
        }
        let step = max(50, config.health.slowStart.wholeMilliseconds / 20)
        rampTimer?.start(timeout: step, repeat: step)
        syncAll()
    }

    private func rampTick() {
        let now = loop.now
        for index in servers.indices {
            balancer.setWeightFactor(index, health.weightFactor(index, now: now))
        }
        if !health.isRamping(now: now) { rampTimer?.stop() }
    }
}
