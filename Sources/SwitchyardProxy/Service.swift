import Logging
import SwitchyardCore
import SwitchyardUV

/// One upstream server of a service, with its resolved address.
final class UpstreamServer {
    let config: ServerConfig
    let index: Int
    /// Nil when the host could not be resolved; the server is then unusable.
    let address: SocketAddress?
    let resolveError: String?

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
}

/// A balanced service as it runs: its servers, scheduler, health state, probers and listeners.
///
/// Loop-confined: with one event loop everything here is touched by that loop's thread only.
/// The relay path never comes here; sessions call in only when a connection starts, fails to
/// connect, or ends.
final class ServiceRuntime {
    let config: ServiceConfig
    let servers: [UpstreamServer]
    private(set) var balancer: Balancer
    private(set) var health: ServiceHealth
    var listeners: [TCPListener] = []
    let connectTimeoutMs: UInt64
    let idleTimeoutMs: UInt64
    var logger: Logger
    unowned let loop: EventLoop
    /// Called when a server goes down and `on_down = close`: close its established connections.
    var onServerDown: ((ServiceRuntime, UpstreamServer) -> Void)?

    private var probers: [HealthProber] = []
    private var healthTimer: UVTimer?
    private var healthTimerDue: UInt64?
    private var rampTimer: UVTimer?
    private var random = SystemRandomNumberGenerator()

    init(config: ServiceConfig, loop: EventLoop, logger: Logger) {
        self.config = config
        self.loop = loop
        self.servers = config.servers.enumerated().map { UpstreamServer(config: $1, index: $0) }
        self.balancer = Balancer(
            algorithm: config.balance,
            servers: config.servers.map { BackendSpec(name: $0.name, weight: $0.weight, backup: $0.backup) },
            panic: config.health.panic
        )
        self.connectTimeoutMs = max(1, config.connectTimeout.wholeMilliseconds)
        self.idleTimeoutMs = config.idleTimeout.wholeMilliseconds
        self.health = ServiceHealth(
            settings: config.health, serverNames: config.servers.map(\.name), now: loop.now,
            connectTimeout: config.connectTimeout)
        var logger = logger
        logger[metadataKey: "service"] = "\(config.name)"
        self.logger = logger
        health.apply(to: &balancer, now: loop.now)
        for server in servers where server.address == nil {
            balancer.setUsable(server.index, false)
            logger.error(
                "server address unresolved; server unusable",
                metadata: ["server": "\(server.name)", "error": "\(server.resolveError ?? "")"])
        }
    }

    var name: String { config.name }

    /// Starts the active probes (first round at once, spread over the first 10% of the interval).
    func startHealthChecks() throws(UVError) {
        healthTimer = try UVTimer(loop: loop) { [unowned self] in self.healthTimerFired() }
        guard let probe = HealthProbe(settings: config.health) else { return }
        let spread = max(1, config.health.checkInterval.wholeMilliseconds / 10)
        for server in servers {
            guard let prober = HealthProber(server: server, service: self, probe: probe, loop: loop) else { continue }
            probers.append(prober)
            try prober.start(after: servers.count == 1 ? 0 : UInt64.random(in: 0...spread, using: &random))
        }
    }

    /// Stops probes and timers (the service is going away).
    func stopHealthChecks() {
        for prober in probers { prober.stop() }
        probers.removeAll()
        healthTimer?.close()
        healthTimer = nil
        rampTimer?.close()
        rampTimer = nil
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
            case .allowed:
                return (servers[index], false)
            case .trial:
                scheduleHealthTimer()
                return (servers[index], true)
            case .refused:
                balancer.release(index)
                excluded.insert(index)
            }
        }
        return nil
    }

    /// The connection (or connect attempt) to `server` ended.
    func release(_ server: UpstreamServer) {
        balancer.release(server.index)
    }

    /// A half-open trial connection was abandoned before its connect finished.
    func cancelTrial(_ server: UpstreamServer) {
        health.cancelTrial(server.index)
        syncUsable(server.index)
    }

    func connectSucceeded(_ server: UpstreamServer, after milliseconds: UInt64) {
        let event = health.connectSucceeded(server.index, now: loop.now)
        if let event { handle(event) }
    }

    func connectFailed(_ server: UpstreamServer, reason: String, timeout: Bool) {
        logger.debug("connect failed", metadata: ["server": "\(server.name)", "error": "\(reason)"])
        let event = health.connectFailed(
            server.index, now: loop.now, reason: timeout ? "timeout" : reason,
            random: Double.random(in: 0..<1, using: &random))
        if let event { handle(event) } else { syncUsable(server.index) }
    }

    func noteRetry() {}

    /// Backoff before starting over once every candidate was tried: exponential with full jitter,
    /// base 50ms, capped at connect_timeout.
    func retryDelay(attempt: Int) -> UInt64 {
        SwitchyardCore.retryDelay(
            attempt: attempt, cap: config.connectTimeout, random: Double.random(in: 0..<1, using: &random))
    }

    // MARK: Probes and timers

    func probeSucceeded(_ server: UpstreamServer) {
        let event = health.probeSucceeded(server.index, now: loop.now)
        if let event { handle(event) }
    }

    func probeFailed(_ server: UpstreamServer, reason: String) {
        logger.debug("probe failed", metadata: ["server": "\(server.name)", "error": "\(reason)"])
        let event = health.probeFailed(server.index, now: loop.now, reason: reason)
        if let event { handle(event) }
    }

    func nextProbeDelay() -> UInt64 {
        health.probeDelay(random: Double.random(in: 0..<1, using: &random))
    }

    private func handle(_ event: HealthEvent) {
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
        health.apply(to: &balancer, now: loop.now)
        for index in servers.indices where servers[index].address == nil { balancer.setUsable(index, false) }
    }

    private func rampTick() {
        let now = loop.now
        for index in servers.indices {
            balancer.setWeightFactor(index, health.weightFactor(index, now: now))
        }
        if !health.isRamping(now: now) { rampTimer?.stop() }
    }
}
