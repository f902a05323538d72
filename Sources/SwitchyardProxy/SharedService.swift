import Synchronization
import SwitchyardCore
import SwitchyardUV

/// An upstream server's identity (name and address) and resolved address: immutable, shared by
/// every worker. A reload keeps the same descriptor for a server whose name and address stay (its
/// weight and backup flag live in the service's current configuration).
final class ServerDescriptor: Sendable {
    let name: String
    let configuredAddress: HostPort
    /// Nil when the host could not be resolved; the server is then unusable.
    let address: SocketAddress?
    /// `address != nil`, without copying the 128-byte address to find out.
    let hasAddress: Bool
    let resolveError: String?
    /// Counters, one set per worker (index = worker id); each worker writes only its own. They
    /// belong to the server's name: a descriptor that replaces another of the same name (a moved
    /// address, a name resolved again, a server removed and added back) takes them over, so that
    /// counters do not restart and connections still open on the old one stay counted.
    let stats: [ServerStats]
    /// Scheduling bookkeeping, read and written only under the owning service's lock.
    let slot = ServerSlot()

    /// `names`: answers looked up ahead (a reload's, off the loop); without one, resolves now.
    init(config: ServerConfig, workers: Int, stats: [ServerStats]? = nil, names: ResolvedNames = .none) {
        self.name = config.name
        self.stats = stats ?? (0..<workers).map { _ in ServerStats() }
        self.configuredAddress = config.address
        do {
            address = try names.resolve(config.address).first
            resolveError = nil
        } catch {
            address = nil
            resolveError = "cannot resolve \(config.address.host): \(error)"
        }
        hasAddress = address != nil
    }

    var id: ObjectIdentifier { ObjectIdentifier(self) }
}

/// A server's place in its service's scheduler and how many connection slots it holds.
final class ServerSlot: @unchecked Sendable {
    // @unchecked Sendable: read and written only while holding the SharedService lock of the
    // service the server belongs to.
    /// Position in the current Balancer and ServiceHealth; nil once a reload removed the server.
    var index: Int?
    /// Balancer slots held by every worker (connect attempts + relayed connections), kept across
    /// reloads so that least_conn stays exact.
    var held = 0
}

/// What a state change asks of the wiring: log it, and maybe close a server's connections.
struct HealthNotice: Sendable {
    var event: HealthEvent
    var server: ServerDescriptor
    /// The server went down (or was disabled) and `on_down = close`: the `end` reason to close
    /// its connections with; nil to leave them.
    var closeConnections: String?
}

/// The scheduling and health state of one service, shared by every event-loop worker.
///
/// Workers call in under the lock when a connection starts, fails to connect or ends, and the
/// control worker when a probe answers or a timer fires. The relay path (reads and writes)
/// never comes here. With one worker the lock is never contended.
final class SharedService: Sendable {
    struct State {
        var config: ServiceConfig
        /// Current servers; the position is the Balancer's and ServiceHealth's index (also in
        /// each server's `slot.index`).
        var servers: [ServerDescriptor]
        var balancer: Balancer
        var health: ServiceHealth
        var random = SystemRandomNumberGenerator()
        /// Changes whenever a reload replaces the server list (and so may renumber it): the server
        /// indices a connection has tried belong to one layout.
        var layout: UInt64 = 0
        /// Every server name this service has had, with its counters (see `ServerDescriptor.stats`).
        var statsByName: [String: [ServerStats]] = [:]

        init(config: ServiceConfig, servers: [ServerDescriptor], now: UInt64) {
            self.config = config
            self.servers = servers
            for server in servers { statsByName[server.name] = server.stats }
            for (index, server) in servers.enumerated() { server.slot.index = index }
            self.balancer = Balancer(
                algorithm: config.balance,
                servers: config.servers.map { BackendSpec(name: $0.name, weight: $0.weight, backup: $0.backup) },
                panic: config.health.panic)
            self.health = ServiceHealth(
                settings: config.health, serverNames: config.servers.map(\.name), now: now,
                connectTimeout: config.connectTimeout, backups: config.servers.map(\.backup))
        }

        /// Name → configured address of every current server whose address resolved.
        var resolvedAddresses: [String: HostPort] {
            Dictionary(servers.filter(\.hasAddress).map { ($0.name, $0.configuredAddress) }, uniquingKeysWith: { first, _ in first })
        }

        mutating func syncUsable(_ index: Int) {
            balancer.setUsable(index, health.isUsable(index) && servers[index].hasAddress)
        }

        mutating func syncAll(now: UInt64) {
            health.apply(to: &balancer, now: now)
            for (i, server) in servers.enumerated() where !server.hasAddress { balancer.setUsable(i, false) }
        }

        mutating func notice(_ event: HealthEvent?) -> HealthNotice? {
            guard let event else { return nil }
            syncUsable(event.server)
            var close: String?
            if config.health.onDown == .close {
                switch event.transition {
                case .down: close = "server_down"
                case .adminState(.disabled): close = "server_disabled"
                default: break
                }
            }
            return HealthNotice(event: event, server: servers[event.server], closeConnections: close)
        }

        mutating func randomUnit() -> Double { Double.random(in: 0..<1, using: &random) }
    }

    let name: String
    private let state: Mutex<State>
    /// Counters, one set per worker (index = worker id); each worker writes only its own.
    let serviceStats: [ServiceStats]
    let workerCount: Int
    /// Client connections of this service open now on every worker, from accept to close
    /// (connecting ones included): tells when a service a reload removed has finished.
    let openSessions = Atomic<Int>(0)

    /// The counters of a service, kept by the runtime when a reload removes it: the same name
    /// added back continues them.
    struct Counters: Sendable {
        var service: [ServiceStats]
        var servers: [String: [ServerStats]]
    }

    /// `carrying`: the counters of a service of the same name removed earlier.
    init(config: ServiceConfig, now: UInt64, workers: Int, names: ResolvedNames = .none, carrying: Counters? = nil) {
        name = config.name
        workerCount = workers
        precondition(carrying.map { $0.service.count == workers } ?? true, "counters of another worker count")
        serviceStats = carrying?.service ?? (0..<workers).map { _ in ServiceStats() }
        let servers = config.servers.map {
            ServerDescriptor(config: $0, workers: workers, stats: carrying?.servers[$0.name], names: names)
        }
        var initial = State(config: config, servers: servers, now: now)
        if let carried = carrying?.servers { initial.statsByName.merge(carried) { current, _ in current } }
        initial.syncAll(now: now)
        state = Mutex(initial)
    }

    /// Every worker's counters for `server`.
    func stats(for server: ServerDescriptor) -> [ServerStats] { server.stats }

    var config: ServiceConfig { state.withLock { $0.config } }
    var servers: [ServerDescriptor] { state.withLock { $0.servers } }

    // MARK: Connections (any worker)

    /// Picks a server (not one in `tried`), admits it through the health state (half-open servers
    /// take one trial at a time) and counts the connection as taken.
    /// `tried`: the indices, in server list `layout`, of `triedServers` (the servers this
    /// connection tried). When a reload has replaced the list since, the indices may name other
    /// servers: they are worked out again from the servers (one removed since is not in the list).
    func acquire(
        client: ClientKey, excluding tried: inout ServerSet, layout: inout UInt64, triedServers: [ServerDescriptor], now: UInt64
    ) -> (server: ServerDescriptor, index: Int, trial: Bool)? {
        state.withLock { s in
            if layout != s.layout {
                tried = ServerSet()
                for server in triedServers {
                    if let index = server.slot.index { tried.insert(index) }
                }
                layout = s.layout
            }
            var excluded = tried
            for _ in 0...s.servers.count {
                guard let index = s.balancer.acquire(client: client, excluding: excluded) else { return nil }
                let admission = s.health.admit(index, now: now, panicking: s.balancer.isPanicking)
                s.syncUsable(index)
                let server = s.servers[index]
                switch admission {
                case .allowed, .trial:
                    if !server.hasAddress {
                        // Unresolved: only reachable in panic mode; never a real candidate.
                        s.balancer.release(index)
                        excluded.insert(index)
                        continue
                    }
                    server.slot.held += 1
                    return (server, index, admission == .trial)
                case .refused:
                    s.balancer.release(index)
                    excluded.insert(index)
                }
            }
            return nil
        }
    }

    /// The connection (or connect attempt) to `server` ended.
    func release(_ server: ServerDescriptor) {
        state.withLock { s in
            server.slot.held -= 1
            if let index = server.slot.index { s.balancer.release(index) }
        }
    }

    func cancelTrial(_ server: ServerDescriptor) {
        state.withLock { s in
            guard let index = server.slot.index else { return }
            s.health.cancelTrial(index)
            s.syncUsable(index)
        }
    }

    func connectSucceeded(_ server: ServerDescriptor, now: UInt64) -> HealthNotice? {
        state.withLock { s in
            guard let index = server.slot.index else { return nil }
            return s.notice(s.health.connectSucceeded(index, now: now))
        }
    }

    func connectFailed(_ server: ServerDescriptor, reason: String, now: UInt64) -> HealthNotice? {
        state.withLock { s in
            guard let index = server.slot.index else { return nil }
            let event = s.health.connectFailed(index, now: now, reason: reason, random: s.randomUnit())
            if event == nil { s.syncUsable(index) }
            return s.notice(event)
        }
    }

    func retryDelay(attempt: Int) -> UInt64 {
        state.withLock { s in
            SwitchyardCore.retryDelay(attempt: attempt, cap: s.config.connectTimeout, random: s.randomUnit())
        }
    }

    // MARK: Health (control worker)

    func probeSucceeded(_ server: ServerDescriptor, now: UInt64) -> HealthNotice? {
        state.withLock { s in
            guard let index = server.slot.index else { return nil }
            return s.notice(s.health.probeSucceeded(index, now: now))
        }
    }

    func probeFailed(_ server: ServerDescriptor, reason: String, now: UInt64) -> HealthNotice? {
        state.withLock { s in
            guard let index = server.slot.index else { return nil }
            return s.notice(s.health.probeFailed(index, now: now, reason: reason))
        }
    }

    func setAdminState(_ server: ServerDescriptor, _ adminState: AdminState, now: UInt64) -> HealthNotice? {
        state.withLock { s in
            guard let index = server.slot.index else { return nil }
            let event = s.health.setAdminState(index, adminState, now: now)
            if event == nil { s.syncUsable(index) }
            return s.notice(event)
        }
    }

    func tick(now: UInt64) -> [HealthNotice] {
        state.withLock { s in
            let events = s.health.tick(now: now)
            for i in s.servers.indices { s.syncUsable(i) }
            return events.compactMap { s.notice($0) }
        }
    }

    func nextDeadline() -> UInt64? { state.withLock { $0.health.nextDeadline() } }

    func probeDelay() -> UInt64 { state.withLock { s in s.health.probeDelay(random: s.randomUnit()) } }

    /// Slow start: pushes the current weight factors; true while some server still ramps.
    func rampTick(now: UInt64) -> Bool {
        state.withLock { s in
            for i in s.servers.indices { s.balancer.setWeightFactor(i, s.health.weightFactor(i, now: now)) }
            return s.health.isRamping(now: now)
        }
    }

    func isRamping(now: UInt64) -> Bool { state.withLock { $0.health.isRamping(now: now) } }

    func isUsable(_ server: ServerDescriptor) -> Bool {
        state.withLock { s in server.slot.index.map { s.balancer.isUsable($0) } ?? false }
    }

    var hasUsableServer: Bool {
        state.withLock { s in s.servers.indices.contains { s.balancer.isUsable($0) } }
    }

    func server(named name: String) -> ServerDescriptor? {
        state.withLock { s in s.servers.first { $0.name == name } }
    }

    var counters: Counters {
        Counters(service: serviceStats, servers: state.withLock(\.statsByName))
    }

    /// Counters by server name, in name order, of every server this service has had, or only of
    /// those a reload removed (their connections may still be open; a name added back is a
    /// current server again, not one of these).
    func serverStats(onlyRemoved: Bool) -> [(name: String, stats: [ServerStats])] {
        state.withLock { s in
            let current = onlyRemoved ? Set(s.servers.map(\.name)) : []
            return s.statsByName.filter { !current.contains($0.key) }.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        }
    }

    /// Per server, in order: descriptor, health status, usable.
    func snapshot(now: UInt64) -> [(ServerDescriptor, ServerStatus, Bool)] {
        state.withLock { s in
            let statuses = s.health.status(now: now)
            return s.servers.indices.map { (s.servers[$0], statuses[$0], s.balancer.isUsable($0)) }
        }
    }

    // MARK: Reload (control worker)

    /// The server addresses a reload to `newConfig` would resolve: those of new and moved servers
    /// and of servers whose name did not resolve before (the others keep their descriptor).
    func addressesToResolve(for newConfig: ServiceConfig) -> [HostPort] {
        let known = state.withLock(\.resolvedAddresses)
        return newConfig.servers.filter { known[$0.name] != $0.address }.map(\.address)
    }

    /// Applies a new configuration of this service. Servers that stay (same name and address)
    /// keep their descriptor, health state and open connections; removed servers drain. A server
    /// whose name did not resolve gets a new descriptor, so that a reload resolves it again. A
    /// server whose address changed (in the file, or by DNS: `moved`) gets a new descriptor and
    /// health state; its drain or disable stays. Returns the old descriptors that go: those of
    /// removed servers and of moved ones (a name still in `newConfig`), whose connections finish.
    ///
    /// `names`: the answers for `addressesToResolve(for:)`, looked up off the loop; an address
    /// missing from them is resolved here (instant for an IP literal). `moved`: servers whose
    /// name now resolves to other addresses (see `ProxyRuntime.refreshNames`): each gets a new
    /// descriptor from `names`, as a server moved by the file would, and the old one drains.
    func update(
        to newConfig: ServiceConfig, now: UInt64, names: ResolvedNames = .none, moved: Set<String> = []
    ) -> [ServerDescriptor] {
        // New and moved servers, and those whose name did not resolve before, get their
        // descriptors before the lock is taken: workers pick servers of this service meanwhile.
        let (known, counters) = state.withLock { s in (s.resolvedAddresses, s.statsByName) }
        var created: [String: ServerDescriptor] = [:]
        for serverConfig in newConfig.servers
        where known[serverConfig.name] != serverConfig.address || moved.contains(serverConfig.name) {
            created[serverConfig.name] = ServerDescriptor(
                config: serverConfig, workers: workerCount, stats: counters[serverConfig.name], names: names)
        }
        return state.withLock { s in
            var kept: [String: ServerDescriptor] = [:]
            for server in s.servers { kept[server.name] = server }
            var servers: [ServerDescriptor] = []
            var carried: [(Int, ServerHealth, Int)] = []  // new index, state, held
            var adminStates: [(Int, AdminState)] = []  // unresolved servers resolved again
            for (newIndex, serverConfig) in newConfig.servers.enumerated() {
                let name = serverConfig.name
                if let old = kept[name], old.configuredAddress != serverConfig.address, let oldIndex = old.slot.index {
                    // Moved by the file: a new descriptor (new health), the old one's connections
                    // finish as a removed server's; an operator's drain or disable stays, as for a
                    // move found by DNS.
                    adminStates.append((newIndex, s.health.servers[oldIndex].adminState))
                } else if let old = kept[name], old.configuredAddress == serverConfig.address, let oldIndex = old.slot.index {
                    kept[name] = nil
                    if old.hasAddress && !moved.contains(name) {
                        carried.append((newIndex, s.health.servers[oldIndex], old.slot.held))
                        servers.append(old)
                        continue
                    }
                    // Unresolved until now (so never connected to), or its name resolves elsewhere
                    // now: replaced by its new descriptor; an operator's drain or disable stays. A
                    // moved one's connections finish on the old address, as a removed server's.
                    if old.hasAddress {
                        kept[name] = old
                    } else {
                        old.slot.index = nil
                    }
                    adminStates.append((newIndex, s.health.servers[oldIndex].adminState))
                }
                servers.append(created[name]
                    ?? ServerDescriptor(config: serverConfig, workers: workerCount, stats: s.statsByName[name], names: names))
            }
            var next = State(config: newConfig, servers: servers, now: now)
            // Round robin goes on where it was: each server that stays (by name, moved or not)
            // keeps its place in the cycle.
            var oldIndex: [String: Int] = [:]
            for (index, server) in s.servers.enumerated() { oldIndex[server.name] = index }
            next.balancer.carryTurns(
                from: s.balancer,
                pairs: servers.enumerated().compactMap { new, server in oldIndex[server.name].map { (old: $0, new: new) } })
            next.health.keepStartupWindow(of: s.health)
            next.random = s.random
            next.layout = s.layout &+ 1
            next.statsByName.merge(s.statsByName) { current, _ in current }
            for (index, health, held) in carried {
                next.health.adopt(health, at: index)
                next.balancer.assumeTaken(index, count: held)
            }
            for (index, adminState) in adminStates where adminState != .enabled {
                _ = next.health.setAdminState(index, adminState, now: now)
            }
            // Removed servers keep their held counts until their connections end.
            for removed in kept.values { removed.slot.index = nil }
            next.syncAll(now: now)
            s = next
            return Array(kept.values)
        }
    }
}
