import CLibUV
import Dispatch
import Logging
import Synchronization
import SwitchyardCore
import SwitchyardUV
#if canImport(Glibc)
import Glibc
#endif

/// A running Switchyard process: its workers (event-loop threads), the services they share, the
/// admin endpoint and the signal handlers.
///
/// Worker 0 runs on the main thread and is the control worker: signals, admin, health probes,
/// reload and shutdown happen there. Other workers talk to it, and it to them, only through
/// `EventLoop.execute`. Shared state is the services' scheduling and health state (each behind
/// its own lock, taken when a connection starts, fails or ends) and a few atomics.
public final class ProxyRuntime: @unchecked Sendable {
    // @unchecked Sendable: the properties marked "control" are touched only on worker 0's loop
    // thread; the others are immutable, atomics, or behind a Mutex.
    public enum StartError: Error, CustomStringConvertible {
        case listen(service: String, address: String, error: String)
        case adminListen(address: String, error: String)
        case loop(String)

        public var description: String {
            switch self {
            case .listen(let service, let address, let error):
                return "service \(service): cannot listen on \(address): \(error)"
            case .adminListen(let address, let error):
                return "admin endpoint: cannot listen on \(address): \(error)"
            case .loop(let error):
                return "cannot start the event loop: \(error)"
            }
        }
    }

    enum Lifecycle { case starting, running, draining, stopped }

    let logger: Logger
    let workerCount: Int
    /// Reads the configuration file again (with the environment) for a reload.
    private let reloadSource: () throws(ConfigError) -> SwitchyardConfig

    // control
    public private(set) var config: SwitchyardConfig
    private(set) var workers: [Worker] = []
    private(set) var services: [SharedService] = []
    private var healthControls: [String: HealthControl] = [:]
    private var signals: [UVSignal] = []
    private(set) var lifecycle = Lifecycle.starting
    private var drainTimer: UVTimer?
    private var drainedWorkers = Set<Int>()
    private(set) var reloadsSucceeded: UInt64 = 0
    private(set) var reloadsFailed: UInt64 = 0
    /// While a reload's names are looked up off the loop: who waits for its outcome (nil: none runs).
    private var reloadWaiters: [(ReloadOutcome) -> Void]?
    /// Reloads asked for meanwhile: one more reload runs for all of them when that one ends.
    private var queuedReload: (triggers: [String], waiters: [(ReloadOutcome) -> Void]) = ([], [])
    /// Looks servers' DNS names up again every `resolve_interval` (nil when off).
    private var resolveTimer: UVTimer?
    private var resolveIntervalMs: UInt64 = 0
    /// A periodic lookup is running off the loop.
    private var refreshingNames = false
    /// Bumped by every applied reload: a periodic lookup begun before one is stale.
    private var configGeneration: UInt64 = 0
    /// Services a reload removed, while connections to them may still be open (their series stay
    /// in /metrics until the last one ends), and the counters of every removed service by name
    /// (the same name added back continues them; one entry per name a configuration ever had).
    private var retiredServices: [SharedService] = []
    private var retiredCounters: [String: SharedService.Counters] = [:]
    var admin: AdminServer?
    private(set) var startedAt: UInt64 = 0
    /// The settings a reload cannot change (workers, busy_poll, logging), as the process started
    /// with them: a reload warns when its file asks for others.
    private let startGlobal: GlobalConfig

    // shared
    private let openConnections = Atomic<Int>(0)
    private let maxConnections: Atomic<Int>
    private let rejectLog = Mutex<(count: Int, last: UInt64)>((0, 0))

    public init(
        config: SwitchyardConfig, logger: Logger,
        reload: @escaping () throws(ConfigError) -> SwitchyardConfig
    ) throws {
        self.config = config
        self.startGlobal = config.global
        self.logger = logger
        self.reloadSource = reload
        self.maxConnections = Atomic(config.global.maxConnections)
        let cpus = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        self.workerCount = max(1, config.global.workers ?? min(max(1, cpus), SwitchyardConfig.maxWorkers))
    }

    /// Raises the soft limit on open descriptors to the hard one (as nginx, HAProxy and Go do:
    /// systemd and container runtimes often start a process at 1024, about 500 connections), and
    /// warns when even that is short for `max_connections` (two descriptors per connection, six
    /// while spliced): past the limit, accepted clients are closed and connects fail.
    private func raiseDescriptorLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        var target = limit.rlim_max
        if target == rlim_t.max {  // RLIM_INFINITY, which the kernel refuses for RLIMIT_NOFILE
            target = rlim_t(readNumber("/proc/sys/fs/nr_open") ?? 1 << 20)
        }
        if limit.rlim_cur < target {
            let before = limit.rlim_cur
            limit.rlim_cur = target
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
                logger.info("open file limit raised", metadata: ["from": "\(before)", "to": "\(target)"])
            } else {
                limit.rlim_cur = before
            }
        }
        let needed = UInt64(config.global.maxConnections) * 2 + 64  // at most 2 × 10^8 + 64 (the loader's cap)
        if UInt64(limit.rlim_cur) < needed {
            logger.warning(
                "open file limit is low for max_connections: raise the hard limit (ulimit -Hn, LimitNOFILE=, --ulimit nofile=) or lower max_connections",
                metadata: ["limit": "\(limit.rlim_cur)", "max_connections": "\(config.global.maxConnections)", "needed": "\(needed)"])
        }
    }

    var control: Worker { workers[0] }
    var loop: EventLoop { workers[0].loop }

    /// Client connections open now, over every worker.
    public var activeConnections: Int { openConnections.load(ordering: .relaxed) }

    // MARK: Start

    /// Binds every listener on every worker, installs signal handlers and runs until stopped.
    /// Returns the process exit status.
    public func run() throws -> Int32 {
        // A write to a socket whose peer is gone must fail with EPIPE, not kill the process.
        signal(SIGPIPE, SIG_IGN)
        // Start from a known signal mask whatever the parent left blocked (some launchers block
        // SIGTERM/SIGINT in their threads, and children inherit the mask): SIGINT, SIGTERM, SIGQUIT and
        // SIGHUP stay blocked until their handlers exist, so that one arriving during start-up
        // (slow name resolution, say) waits for them instead of being lost (as PID 1 in a
        // container, where an unhandled SIGTERM is ignored) or killing the process without a
        // drain. The worker threads inherit the block and never take these signals.
        var handled = sigset_t()
        sigemptyset(&handled)
        for signum in [SIGINT, SIGTERM, SIGQUIT, SIGHUP] { sigaddset(&handled, signum) }
        pthread_sigmask(SIG_SETMASK, &handled, nil)
        raiseDescriptorLimit()

        let control: Worker
        do {
            control = try Worker(id: 0, runtime: self, logger: logger)
        } catch {
            throw StartError.loop(error.description)
        }
        workers = [control]
        startedAt = control.loop.now
        services = config.services.map { SharedService(config: $0, now: control.loop.now, workers: workerCount) }
        for shared in services { logUnresolved(shared.servers, of: shared) }

        // Worker 0 resolves and binds; the others bind what it got (port 0 = the same port).
        let plan: [(SharedService, [ListenPlan])]
        do {
            plan = try zip(services, config.services).map { shared, serviceConfig in
                (shared, try Self.listenerKeys(of: serviceConfig).map { key, address in
                    ListenPlan(key: key, address: address, resolved: try resolveListen(address, service: shared.name), reuse: nil)
                })
            }
            try checkListenPlan(plan.flatMap { shared, entries in entries.map { (shared.name, $0) } }, ownOpen: [])
            let bound = try bindOrThrow(control, plan)
            let boundPlan = zip(plan, bound).map { entry, addresses in
                (entry.0, zip(entry.1, addresses).map { item, boundAddress in
                    var item = item
                    item.resolved = boundAddress
                    return item
                })
            }
            try startOtherWorkers(boundPlan)
            if let address = config.global.admin {
                admin = try AdminServer(runtime: self, address: address)
            }
            // Logged once every socket is bound (a start that fails binds nothing for good).
            for (entry, addresses) in zip(boundPlan, bound) {
                for address in addresses {
                    logger.info("listening", metadata: ["service": "\(entry.0.name)", "address": "\(address)"])
                }
            }
            for shared in services {
                let health = HealthControl(shared: shared, runtime: self, loop: control.loop)
                healthControls[shared.name] = health
                health.onFirstProbeRound = { [unowned self] in self.openIfStarted() }
                try health.start()
            }
            try scheduleNameRefresh()
            for signum in [SIGINT, SIGTERM, SIGQUIT, SIGHUP] {
                signals.append(try UVSignal(loop: control.loop, signal: signum) { [unowned self] signum in
                    self.handleSignal(signum)
                })
            }
            // As PID 1 (a container without an init) or a subreaper, orphaned processes (left
            // by `docker exec`, `kubectl exec`) become ours: reap them, as an init would.
            if getpid() == 1 || switchyard_is_child_subreaper() != 0 {
                signals.append(try UVSignal(loop: control.loop, signal: SIGCHLD) { _ in reapChildren() })
                reapChildren()
            }
            // Handlers in place: let the signals in (one already pending is delivered now).
            pthread_sigmask(SIG_UNBLOCK, &handled, nil)
        } catch {
            abortStart()
            throw error
        }
        openIfStarted()
        control.loop.run()
        for worker in workers.dropFirst() { worker.joinThread() }
        if !control.loop.finish() {
            logger.error("event loop closed with handles still open")
        }
        logger.info("stopped")
        return 0
    }

    /// A server whose host does not resolve is unusable; say so once, loudly.
    private func logUnresolved(_ servers: [ServerDescriptor], of shared: SharedService) {
        for server in servers where server.address == nil {
            logger.error(
                "server address unresolved; server unusable",
                metadata: ["service": "\(shared.name)", "server": "\(server.name)", "error": "\(server.resolveError ?? "")"])
        }
    }

    private func resolveListen(_ address: HostPort, service: String, names: ResolvedNames = .none) throws -> SocketAddress {
        do {
            guard let first = try names.resolve(address).first else {
                throw StartError.listen(service: service, address: address.description, error: "no address")
            }
            return first
        } catch let error as UVError {
            throw StartError.listen(service: service, address: address.description, error: error.description)
        }
    }

    /// Before binding `entries` (service name, listener), in order: two of them on one socket
    /// — names that resolve to one address, say — are an error, as is an address another
    /// process listens on. (Those listeners set `SO_REUSEPORT`, so that the bind
    /// itself would succeed and the two would split the connections silently.) `ownOpen`: the
    /// addresses this process listens on now (a reload may move a listener onto an overlapping
    /// one, which the check cannot tell from a stranger's: not checked).
    private func checkListenPlan(_ entries: [(service: String, entry: ListenPlan)], ownOpen: [SocketAddress]) throws {
        for i in entries.indices {
            try checkListen(entries[i], after: entries[..<i], ownOpen: ownOpen)
        }
    }

    /// `checkListenPlan` for one listener, bound after `earlier` (checked already).
    private func checkListen(
        _ new: (service: String, entry: ListenPlan), after earlier: ArraySlice<(service: String, entry: ListenPlan)>,
        ownOpen: [SocketAddress]
    ) throws {
        let (service, entry) = new
        if let (other, otherEntry) = earlier.first(where: { $0.entry.resolved.listensOverlap(entry.resolved) }) {
            let owner = other == service ? "this service" : "service \(other)"
            throw StartError.listen(
                service: service, address: entry.address.description,
                error: "it is \(entry.resolved), where \(owner) listens too (listen \(otherEntry.address))")
        }
        guard entry.reuse == nil, !ownOpen.contains(where: { $0.listensOverlap(entry.resolved) })
        else { return }
        do {
            try TCPListener.checkAddressFree(entry.resolved)
        } catch {
            var why = ""
            if error.code == -EADDRINUSE {
                why = admin.map { $0.boundAddress.listensOverlap(entry.resolved) } == true
                    ? " (the running admin endpoint has it: move the admin endpoint away in a reload of its own first)"
                    : " (another process listens there)"
            }
            throw StartError.listen(service: service, address: entry.address.description, error: "\(error)\(why)")
        }
    }

    private func bindOrThrow(_ worker: Worker, _ plan: [(SharedService, [ListenPlan])]) throws -> [[SocketAddress]] {
        do {
            return try worker.install(plan)
        } catch {
            // Name the address that failed: try them one by one for the message.
            for (shared, entries) in plan {
                for entry in entries {
                    do {
                        let probe = try TCPListener(loop: worker.loop, address: entry.resolved, reusePort: worker.reusePort) { _ in }
                        probe.close()
                    } catch let bindError {
                        throw StartError.listen(service: shared.name, address: entry.address.description, error: bindError.description)
                    }
                }
            }
            throw StartError.listen(service: "-", address: "-", error: error.description)
        }
    }

    /// Workers 1..N-1: each creates its loop and listeners on its own thread, reports, then runs.
    private func startOtherWorkers(_ plan: [(SharedService, [ListenPlan])]) throws {
        guard workerCount > 1 else { return }
        let board = StartBoard()
        for id in 1..<workerCount {
            WorkerStarter(id: id, runtime: self, logger: logger, plan: plan, board: board).launch()
        }
        for _ in 1..<workerCount { board.ready.wait() }
        let outcome = board.results.withLock { $0 }
        var failure: StartError?
        for id in 1..<workerCount {
            switch outcome[id] {
            case .success(let worker): workers.append(worker)
            case .failure(let error): failure = failure ?? error
            case nil: failure = failure ?? .loop("worker \(id) did not start")
            }
        }
        if let failure { throw failure }
    }

    private func abortStart() {
        for worker in workers.dropFirst() {
            worker.loop.execute { worker.stop() }
        }
        for worker in workers.dropFirst() { worker.joinThread() }
        for health in healthControls.values { health.stop() }
        resolveTimer?.close()
        resolveTimer = nil
        admin?.close()
        admin = nil
        for s in signals { s.close() }
        signals.removeAll()
        control.closeAllListeners()
        control.loop.closeInbox()
        control.loop.run()
        control.loop.finish()
    }

    /// Starts accepting once every service has heard back from its first probe round, so that the
    /// first connections are spread on a true picture of the servers. Until then the listeners are
    /// bound and connections wait in the kernel's backlog: a client sees a slower connect, never a
    /// refusal. Each probe answers within `check_timeout`.
    private func openIfStarted() {
        guard lifecycle == .starting, healthControls.values.allSatisfy(\.firstProbeRoundDone) else { return }
        lifecycle = .running
        logger.info(
            "started",
            metadata: [
                "services": "\(services.count)", "workers": "\(workerCount)", "pid": "\(getpid())",
                "version": "\(SwitchyardVersion.current)",
            ])
        broadcast { $0.startAccepting() }
        startQueuedReload()
    }

    /// Runs `body` on every worker's loop (at once for the control worker).
    private func broadcast(_ body: @escaping @Sendable (Worker) -> Void) {
        for worker in workers {
            if worker.id == 0 { body(worker) } else { worker.loop.execute { body(worker) } }
        }
    }

    // MARK: Connections (any worker)

    /// Counts a new client connection against `max_connections`; false when over the cap.
    func admitConnection() -> Bool {
        let open = openConnections.wrappingAdd(1, ordering: .relaxed).newValue
        if open > maxConnections.load(ordering: .relaxed) {
            openConnections.wrappingSubtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    func connectionClosed() {
        openConnections.wrappingSubtract(1, ordering: .relaxed)
    }

    /// Rejections at the connection cap are logged at most once a second, with a count.
    func noteRejected(at now: UInt64) {
        let report: Int? = rejectLog.withLock { state in
            state.count += 1
            guard state.last == 0 || now &- state.last >= 1000 else { return nil }
            let count = state.count
            state = (0, now)
            return count
        }
        if let report {
            logger.warning(
                "max_connections reached; new connections closed",
                metadata: ["max_connections": "\(maxConnections.load(ordering: .relaxed))", "rejected": "\(report)"])
        }
    }

    /// A health change (from any worker): log it once; the control worker re-arms timers and, for
    /// `on_down = close`, every worker closes that server's connections.
    func handle(_ notice: HealthNotice, of shared: SharedService) {
        logger.notice(
            "\(notice.event.description)",
            metadata: ["service": "\(shared.name)", "server": "\(notice.server.name)", "state": "\(notice.event.transition.name)"])
        let server = notice.server
        let close = notice.closeConnections
        let ejected: Bool
        if case .ejected = notice.event.transition { ejected = true } else { ejected = false }
        let control = self.control
        control.loop.execute { [self] in
            if ejected { controlStats(of: shared, server).ejections.add(1) }
            healthControls[shared.name]?.deadlineChanged()
            if let close {
                broadcast { $0.closeConnections(to: server, reason: close) }
            }
        }
    }

    /// A half-open trial started somewhere: its deadline goes into the control worker's timer.
    func healthDeadlineChanged(_ shared: SharedService) {
        control.loop.execute { [self] in healthControls[shared.name]?.deadlineChanged() }
    }

    /// Worker 0's counters, written only on the control thread (probes, ejections).
    func controlStats(of shared: SharedService, _ server: ServerDescriptor) -> ServerStats {
        shared.stats(for: server)[0]
    }

    // MARK: Signals: reload, drain, stop (control)

    private func handleSignal(_ signum: Int32) {
        switch signum {
        case SIGHUP:
            reload(trigger: "SIGHUP")
        default:
            let name = signum == SIGTERM ? "SIGTERM" : signum == SIGQUIT ? "SIGQUIT" : "SIGINT"
            if lifecycle == .draining {
                logger.notice("second signal: closing every connection now", metadata: ["signal": "\(name)"])
                finishShutdown()
            } else {
                beginDrain(signal: name)
            }
        }
    }

    /// SIGTERM/SIGINT/SIGQUIT (nginx's graceful stop): close the listeners at once, let
    /// established connections finish for up to `drain_timeout`, then close the rest and stop.
    private func beginDrain(signal name: String) {
        guard lifecycle == .running || lifecycle == .starting else { return }
        lifecycle = .draining
        for health in healthControls.values { health.stop() }
        let timeout = config.global.drainTimeout.wholeMilliseconds
        logger.notice(
            "draining",
            metadata: ["signal": "\(name)", "connections": "\(activeConnections)", "drain_timeout_ms": "\(timeout)"])
        if timeout == 0 {
            finishShutdown()
            return
        }
        drainTimer = try? UVTimer(loop: control.loop) { [unowned self] in
            self.logger.notice(
                "drain_timeout reached: closing remaining connections", metadata: ["connections": "\(self.activeConnections)"])
            self.finishShutdown()
        }
        drainTimer?.start(timeout: timeout)
        broadcast { $0.beginDrain() }
    }

    /// A worker has no connection left while draining (from any worker).
    func workerDrained(_ id: Int) {
        let body: @Sendable () -> Void = { [self] in
            guard lifecycle == .draining else { return }
            drainedWorkers.insert(id)
            if drainedWorkers.count == workerCount {
                logger.notice("drained: every connection finished")
                finishShutdown()
            }
        }
        if id == 0 { body() } else { control.loop.execute(body) }
    }

    /// Closes every remaining connection and handle on every worker, so that the loops return.
    private func finishShutdown() {
        guard lifecycle != .stopped else { return }
        lifecycle = .stopped
        // A reload still looking up names will not come back (the inbox closes below).
        let waiting = (reloadWaiters ?? []) + queuedReload.waiters
        reloadWaiters = nil
        queuedReload = ([], [])
        for waiter in waiting { waiter(.ignored("draining")) }
        broadcast { $0.stop() }
        for health in healthControls.values { health.stop() }
        resolveTimer?.close()
        resolveTimer = nil
        drainTimer?.close()
        drainTimer = nil
        admin?.close(abortAll: true)
        admin = nil
        for s in signals { s.close() }
        signals.removeAll()
        // Without a handler a SIGHUP would kill the process while it writes out its last log
        // lines; a reload is moot now.
        signal(SIGHUP, SIG_IGN)
        control.loop.closeInbox()
    }

    // MARK: Reload (control)

    /// Re-reads the configuration and applies it in place on every worker; `completion` gets the
    /// outcome on the control loop. An invalid file, or a new listener that cannot be bound,
    /// changes nothing.
    ///
    /// Host names the new configuration brings (new or moved servers, servers that did not resolve
    /// before, new listen addresses) are looked up on a thread of their own first, so that a slow
    /// DNS server does not stall the connections this loop relays; the completion then comes
    /// later. A reload asked for meanwhile is queued: when the running one ends, one more reload
    /// (reading the file again) runs for every request queued, and answers them all.
    func reload(trigger: String, completion: @escaping (ReloadOutcome) -> Void = { _ in }) {
        if lifecycle == .starting {
            // The file may have changed after it was read (a ConfigMap updated as the pod
            // starts): read it again once started rather than lose the request.
            queuedReload.triggers.append(trigger)
            queuedReload.waiters.append(completion)
            logger.notice("reload queued until started", metadata: ["trigger": "\(trigger)"])
            return
        }
        guard lifecycle == .running else {
            // Starting or shutting down: nothing to reload into, and nothing failed.
            logger.notice("reload ignored", metadata: ["trigger": "\(trigger)", "state": "\(lifecycle)"])
            completion(.ignored(notReadyReason() ?? "\(lifecycle)"))
            return
        }
        if reloadWaiters != nil {
            queuedReload.triggers.append(trigger)
            queuedReload.waiters.append(completion)
            logger.info("reload queued behind the one resolving names", metadata: ["trigger": "\(trigger)"])
            return
        }
        startReload(trigger: trigger, waiters: [completion])
    }

    private func startReload(trigger: String, waiters: [(ReloadOutcome) -> Void]) {
        let newConfig: SwitchyardConfig
        do {
            newConfig = try reloadSource()
        } catch {
            return finishReload(reloadFailed(error.description, trigger: trigger), waiters: waiters)
        }
        let names = addressesToResolve(for: newConfig)
        guard !names.isEmpty else {
            return finishReload(applyReload(newConfig, names: .none, trigger: trigger), waiters: waiters)
        }
        reloadWaiters = waiters
        logger.info("reload: resolving names", metadata: ["trigger": "\(trigger)", "names": "\(names.count)"])
        do {
            try control.loop.runOffLoop({ ResolvedNames.lookUp(names) }) { [self] answers in
                // Back on the control loop (dropped if it shut down meanwhile; see finishShutdown).
                let waiters = reloadWaiters ?? []
                reloadWaiters = nil
                guard lifecycle == .running else {
                    logger.notice("reload ignored", metadata: ["trigger": "\(trigger)", "state": "\(lifecycle)"])
                    return finishReload(.ignored(notReadyReason() ?? "\(lifecycle)"), waiters: waiters)
                }
                finishReload(applyReload(newConfig, names: answers, trigger: trigger), waiters: waiters)
            }
        } catch {
            reloadWaiters = nil
            finishReload(reloadFailed("cannot start resolving names: \(error)", trigger: trigger), waiters: waiters)
        }
    }

    /// Answers a reload's callers, then starts the queued reload if there is one.
    private func finishReload(_ outcome: ReloadOutcome, waiters: [(ReloadOutcome) -> Void]) {
        for waiter in waiters { waiter(outcome) }
        startQueuedReload()
    }

    /// Runs the reload queued behind another one or behind the start, if any.
    private func startQueuedReload() {
        guard reloadWaiters == nil, !queuedReload.waiters.isEmpty else { return }
        let queued = queuedReload
        queuedReload = ([], [])
        var seen = Set<String>()
        let trigger = queued.triggers.filter { seen.insert($0).inserted }.joined(separator: ",")
        guard lifecycle == .running else {
            for waiter in queued.waiters { waiter(.ignored(notReadyReason() ?? "\(lifecycle)")) }
            return
        }
        startReload(trigger: trigger, waiters: queued.waiters)
    }

    /// Each `listen` address of a service with its listener key (the same address twice in one
    /// service is two listeners: `occurrence` tells them apart).
    static func listenerKeys(of service: ServiceConfig) -> [(key: ListenerKey, address: HostPort)] {
        var seen: [String: Int] = [:]
        return service.listen.map { address in
            let text = address.description
            let occurrence = seen[text, default: 0]
            seen[text] = occurrence + 1
            return (ListenerKey(service: service.name, address: text, occurrence: occurrence), address)
        }
    }

    /// The control worker's open listeners, by key, with their bound addresses.
    private var openListeners: [ListenerKey: SocketAddress] {
        var open: [ListenerKey: SocketAddress] = [:]
        for service in control.services.values {
            for l in service.listeners { open[l.key] = l.listener.boundAddress }
        }
        return open
    }

    /// The current services by name.
    private var servicesByName: [String: SharedService] {
        Dictionary(services.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
    }

    /// Names (not IP literals) a reload to `newConfig` has to look up: servers that are new,
    /// moved or unresolved until now, listen addresses not open yet, a moved admin endpoint.
    private func addressesToResolve(for newConfig: SwitchyardConfig) -> [HostPort] {
        let byName = servicesByName
        let open = openListeners
        var addresses: [HostPort] = []
        for serviceConfig in newConfig.services {
            addresses += byName[serviceConfig.name]?.addressesToResolve(for: serviceConfig) ?? serviceConfig.servers.map(\.address)
            // Any listener not open under the same key (one that `applyReload` then takes over
            // from another service needed no lookup, but one too many does no harm).
            addresses += Self.listenerKeys(of: serviceConfig).filter { open[$0.key] == nil }.map(\.address)
        }
        if let admin = newConfig.global.admin, admin != config.global.admin {
            addresses.append(admin)
        }
        var seen = Set<HostPort>()
        return addresses.filter { !ResolvedNames.isLiteral($0.host) && seen.insert($0).inserted }
    }

    /// Applies a parsed configuration whose names `names` holds (see `reload`).
    private func applyReload(_ newConfig: SwitchyardConfig, names: ResolvedNames, trigger: String) -> ReloadOutcome {
        if (newConfig.global.workers ?? workerCount) != workerCount && newConfig.global.workers != nil {
            logger.warning("reload: a change of workers takes effect at the next start")
        }
        if newConfig.global.busyPoll != startGlobal.busyPoll {
            logger.warning("reload: a change of busy_poll takes effect at the next start")
        }
        if newConfig.global.logLevel != startGlobal.logLevel || newConfig.global.logFormat != startGlobal.logFormat {
            logger.warning("reload: a change of log_level or log_format takes effect at the next start")
        }
        // Listeners already open keep their socket: the same service's first, then (for a fixed
        // port) any service's. New addresses are bound on the control worker first, so that a
        // failure changes nothing.
        var open = openListeners
        let ownOpen = Array(open.values)
        var prebound: [ListenerKey: ServiceListener] = [:]
        var resolvedPlan: [(ServiceConfig, [ListenPlan])] = []
        var planned: [(service: String, entry: ListenPlan)] = []
        // Logged once the reload has succeeded (a failure closes them again).
        var newlyListening: [(service: String, address: SocketAddress)] = []
        do {
            for serviceConfig in newConfig.services {
                var entries: [ListenPlan] = []
                for (key, address) in Self.listenerKeys(of: serviceConfig) {
                    let text = key.address
                    // Keeps the open listener `reuse` for this address.
                    func keep(_ reuse: ListenerKey) throws -> Bool {
                        guard let bound = open.removeValue(forKey: reuse) else { return false }
                        let entry = ListenPlan(key: key, address: address, resolved: bound, reuse: reuse)
                        try checkListen((serviceConfig.name, entry), after: planned[...], ownOpen: ownOpen)
                        planned.append((serviceConfig.name, entry))
                        entries.append(entry)
                        return true
                    }
                    var reuse: ListenerKey? = open[key] != nil ? key : nil
                    if reuse == nil && address.port != 0 {
                        reuse = open.keys.first { $0.address == text }
                    }
                    if let reuse, try keep(reuse) { continue }
                    let resolved = try resolveListen(address, service: serviceConfig.name, names: names)
                    // Another spelling of a socket already open (localhost:P for 127.0.0.1:P):
                    // that socket stays.
                    if resolved.port != 0, let same = open.first(where: { $0.value == resolved })?.key, try keep(same) {
                        continue
                    }
                    try checkListen(
                        (serviceConfig.name, ListenPlan(key: key, address: address, resolved: resolved, reuse: nil)),
                        after: planned[...], ownOpen: ownOpen)
                    let l: ServiceListener
                    do {
                        l = try control.bind(key, resolved: resolved, for: nil)
                    } catch {
                        var why = error.description
                        if let oldAdmin = config.global.admin, listenAddressesConflict(oldAdmin, address) {
                            why += " (the running admin endpoint has it: move the admin endpoint away in a reload of its own first)"
                        }
                        throw StartError.listen(service: serviceConfig.name, address: text, error: why)
                    }
                    prebound[key] = l
                    let entry = ListenPlan(key: key, address: address, resolved: l.listener.boundAddress, reuse: nil)
                    planned.append((serviceConfig.name, entry))
                    entries.append(entry)
                    newlyListening.append((serviceConfig.name, l.listener.boundAddress))
                }
                resolvedPlan.append((serviceConfig, entries))
            }
        } catch {
            for l in prebound.values { l.listener.close() }
            return reloadFailed("\(error)", trigger: trigger)
        }
        // A moved admin endpoint is bound now too: if it cannot be, nothing changes. On the same
        // port as the old address (127.0.0.1:9000 to 0.0.0.0:9000) the old socket must go first;
        // if the new one cannot be bound then, the old address is bound again.
        let oldAdmin = config.global.admin
        let adminMoves = newConfig.global.admin != oldAdmin
        var newAdmin: AdminServer?
        if adminMoves, let address = newConfig.global.admin {
            let overlaps = oldAdmin.map { listenAddressesConflict($0, address) } ?? false
            if overlaps { admin?.stopListening() }
            do {
                newAdmin = try AdminServer(runtime: self, address: address, names: names)
            } catch var error {
                if case .adminListen(let text, let why)? = error as? StartError,
                   config.services.contains(where: { $0.listen.contains { listenAddressesConflict($0, address) } }) {
                    error = StartError.adminListen(
                        address: text,
                        error: why + " (a listener of the running configuration has it: move that listener away in a reload of its own first)")
                }
                if overlaps, let oldAdmin, let old = admin {
                    // Again at the address it had (no name to look up on the loop).
                    var known = ResolvedNames.none
                    known.remember(oldAdmin, as: old.boundAddress)
                    old.close()
                    admin = try? AdminServer(runtime: self, address: oldAdmin, names: known)
                    if admin == nil { logger.error("reload: admin endpoint could not be bound again", metadata: ["address": "\(oldAdmin)"]) }
                }
                for l in prebound.values { l.listener.close() }
                return reloadFailed("\(error)", trigger: trigger)
            }
        }
        // Apply: shared state first, then every worker's listeners and services.
        var byName = servicesByName
        var next: [SharedService] = []
        var plan: [(SharedService, [ListenPlan])] = []
        let now = control.loop.now
        for (serviceConfig, addresses) in resolvedPlan {
            let shared: SharedService
            if let existing = byName.removeValue(forKey: serviceConfig.name) {
                shared = existing
                healthControls[shared.name]?.stop()
                let before = Set(shared.servers.map(\.id))
                for gone in shared.update(to: serviceConfig, now: now, names: names) {
                    if let moved = serviceConfig.servers.first(where: { $0.name == gone.name }) {
                        logger.notice(
                            "server moved; new connections go to the new address, those open finish on the old one",
                            metadata: [
                                "service": "\(shared.name)", "server": "\(gone.name)",
                                "from": "\(gone.configuredAddress)", "to": "\(moved.address)",
                            ])
                    } else {
                        logger.notice("server removed; its connections finish", metadata: ["service": "\(shared.name)", "server": "\(gone.name)"])
                    }
                }
                logUnresolved(shared.servers.filter { !before.contains($0.id) }, of: shared)
            } else {
                shared = SharedService(
                    config: serviceConfig, now: now, workers: workerCount, names: names,
                    carrying: retiredCounters.removeValue(forKey: serviceConfig.name))
                retiredServices.removeAll { $0.name == serviceConfig.name }
                logger.notice("service added", metadata: ["service": "\(shared.name)"])
                logUnresolved(shared.servers, of: shared)
            }
            next.append(shared)
            plan.append((shared, addresses))
        }
        // Forget services retired by earlier reloads that have finished (workers applied those
        // long ago), then retire this reload's.
        pruneRetiredServices()
        for removed in byName.values {
            retiredServices.append(removed)
            retiredCounters[removed.name] = removed.counters
            healthControls[removed.name]?.stop()
            healthControls[removed.name] = nil
            logger.notice("service removed; its connections finish", metadata: ["service": "\(removed.name)"])
        }
        services = next
        let finalPlan = plan
        let handover = prebound
        control.apply(finalPlan, prebound: handover)
        for worker in workers.dropFirst() {
            worker.loop.execute { worker.apply(finalPlan) }
        }
        for shared in services { restartHealth(of: shared) }
        maxConnections.store(newConfig.global.maxConnections, ordering: .relaxed)
        config = newConfig
        configGeneration &+= 1
        do {
            try scheduleNameRefresh()
        } catch {
            logger.error("reload: cannot start the periodic name lookups", metadata: ["error": "\(error)"])
        }
        if adminMoves {
            // A request being answered (this reload's, if it came through the endpoint) still
            // gets its answer on the old address.
            if let old = admin {
                logger.info("admin stopped listening", metadata: ["address": "\(old.boundAddress)"])
                old.close()
            }
            admin = newAdmin
        }
        // What no service listens on any more was closed by `apply` (its connections finish).
        for (key, address) in open.sorted(by: { ($0.key.service, $0.key.address) < ($1.key.service, $1.key.address) }) {
            logger.info("stopped listening", metadata: ["service": "\(key.service)", "address": "\(address)"])
        }
        for (service, address) in newlyListening {
            logger.info("listening", metadata: ["service": "\(service)", "address": "\(address)"])
        }
        reloadsSucceeded &+= 1
        logger.notice("configuration reloaded", metadata: ["trigger": "\(trigger)", "services": "\(services.count)"])
        return .reloaded
    }

    /// (Re)starts a service's probes on its current servers (after a reload or a server moved).
    private func restartHealth(of shared: SharedService) {
        healthControls[shared.name]?.stop()
        let health = HealthControl(shared: shared, runtime: self, loop: control.loop)
        healthControls[shared.name] = health
        do {
            try health.start()
        } catch {
            logger.error("cannot start health checks", metadata: ["service": "\(shared.name)", "error": "\(error)"])
        }
    }

    // MARK: Periodic name lookups (control)

    /// Starts, restarts (a new interval) or stops the timer of `refreshNames`.
    private func scheduleNameRefresh() throws(UVError) {
        let interval = UInt64(config.global.resolveInterval.wholeMilliseconds)
        guard interval != resolveIntervalMs || (interval > 0) != (resolveTimer != nil) else { return }
        resolveIntervalMs = interval
        resolveTimer?.close()
        resolveTimer = nil
        guard interval > 0 else { return }
        let timer = try UVTimer(loop: control.loop) { [unowned self] in self.refreshNames() }
        timer.start(timeout: interval, repeat: interval)
        resolveTimer = timer
    }

    /// Looks the DNS names of every server up again, off the loop (as a reload does), and moves a
    /// server whose address is no longer among the answers to the first new one: backends whose
    /// address changes (a container or pod started again) are followed without a reload, as
    /// Envoy's STRICT_DNS clusters and HAProxy's `resolvers` do. A server that did not resolve is
    /// retried the same way. A failed lookup changes nothing (the last address stays, HAProxy's
    /// `hold nx`). Skipped while a reload or another lookup runs; dropped if a reload applied
    /// meanwhile (it looked up what it needed itself).
    private func refreshNames() {
        guard lifecycle == .running, reloadWaiters == nil, !refreshingNames else { return }
        var seen = Set<HostPort>()
        let names = services.flatMap { $0.servers.map(\.configuredAddress) }
            .filter { !ResolvedNames.isLiteral($0.host) && seen.insert($0).inserted }
        guard !names.isEmpty else { return }
        refreshingNames = true
        let generation = configGeneration
        do {
            try control.loop.runOffLoop({ ResolvedNames.lookUp(names, skippingInFlight: true) }) { [self] answers in
                refreshingNames = false
                guard lifecycle == .running, generation == configGeneration else { return }
                followMovedServers(answers)
            }
        } catch {
            refreshingNames = false
            logger.error("cannot start the periodic name lookups", metadata: ["error": "\(error)"])
        }
    }

    private func followMovedServers(_ answers: ResolvedNames) {
        let now = control.loop.now
        for shared in services {
            var moved = Set<String>()
            for server in shared.servers {
                guard case .success(let addresses)? = answers.answer(for: server.configuredAddress) else { continue }
                if let current = server.address, addresses.contains(current) { continue }
                moved.insert(server.name)
                logger.notice(
                    "server address changed; new connections go to the new one",
                    metadata: [
                        "service": "\(shared.name)", "server": "\(server.name)", "host": "\(server.configuredAddress.host)",
                        "from": "\(server.address.map { "\($0)" } ?? "unresolved")", "to": "\(addresses[0])",
                    ])
            }
            guard !moved.isEmpty else { continue }
            _ = shared.update(to: shared.config, now: now, names: answers, moved: moved)
            restartHealth(of: shared)
        }
    }

    enum ReloadOutcome {
        case reloaded
        /// The file or the new listeners were rejected; the running configuration stays.
        case failed(String)
        /// Not running (starting, draining): nothing was tried. The reason.
        case ignored(String)
    }

    private func reloadFailed(_ message: String, trigger: String) -> ReloadOutcome {
        reloadsFailed &+= 1
        logger.error("reload failed; keeping the running configuration", metadata: ["trigger": "\(trigger)", "error": "\(message)"])
        return .failed(message)
    }

    // MARK: Admin (control)

    /// Nil when ready (every listener bound, every service has a usable server), else why not.
    func notReadyReason() -> String? {
        switch lifecycle {
        case .starting: return "starting"
        case .draining, .stopped: return "draining"
        case .running: break
        }
        for shared in services {
            let listening = control.services[shared.name]?.listeners.count ?? 0
            if listening != shared.config.listen.count {
                return "service \(shared.name): not every listener is bound"
            }
            if !shared.hasUsableServer {
                return "service \(shared.name): no usable server"
            }
        }
        return nil
    }

    /// drain / disable / enable from the admin endpoint.
    func setAdminState(_ server: ServerDescriptor, of shared: SharedService, _ state: AdminState) {
        let notice = shared.setAdminState(server, state, now: control.loop.now)
        if let notice {
            handle(notice, of: shared)
        } else if state == .disabled && shared.config.health.onDown == .close {
            broadcast { $0.closeConnections(to: server, reason: "server_disabled") }
        }
    }

    /// Services a reload removed that still have open connections (control). Drained ones are
    /// forgotten first (their counters stay in `retiredCounters`). A service is retired before the
    /// other workers apply the reload, which may still accept a connection for it: a scrape in
    /// that instant could forget it early (its connection then shows in the totals only).
    func pruneRetiredServices() {
        retiredServices.removeAll { $0.openSessions.load(ordering: .relaxed) == 0 }
    }

    /// Services a reload removed, not yet found finished by `pruneRetiredServices` (control).
    var drainingRetiredServices: [SharedService] { retiredServices }

    /// Listener addresses of a service as bound (control worker's sockets).
    func boundAddresses(of shared: SharedService) -> [SocketAddress] {
        control.services[shared.name]?.listeners.map(\.listener.boundAddress) ?? []
    }
}

/// Where starting workers report back to the main thread.
private final class StartBoard: Sendable {
    let results = Mutex<[Int: Result<Worker, ProxyRuntime.StartError>]>([:])
    let ready = DispatchSemaphore(value: 0)
}

/// Starts one non-control worker on its own thread: creates its loop and listeners there,
/// reports the outcome, then runs the loop until the worker is stopped.
private final class WorkerStarter: @unchecked Sendable {
    // @unchecked Sendable: handed to the new thread once; the runtime is only used through its
    // thread-safe parts until the worker is published through `results`.
    let id: Int
    unowned let runtime: ProxyRuntime
    let logger: Logger
    let plan: [(SharedService, [ListenPlan])]
    let board: StartBoard
    var ready: DispatchSemaphore { board.ready }

    init(id: Int, runtime: ProxyRuntime, logger: Logger, plan: [(SharedService, [ListenPlan])], board: StartBoard) {
        self.id = id
        self.runtime = runtime
        self.logger = logger
        self.plan = plan
        self.board = board
    }

    func launch() {
        var thread = pthread_t()
        let box = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&thread, nil, { arg in
            let me = Unmanaged<WorkerStarter>.fromOpaque(arg!).takeRetainedValue()
            me.body()
            return nil
        }, box)
        if rc != 0 {
            Unmanaged<WorkerStarter>.fromOpaque(box).release()
            board.results.withLock { $0[id] = .failure(.loop("cannot create thread \(id): \(rc)")) }
            ready.signal()
        } else {
            pthread_detach(thread)
        }
    }

    private func body() {
        let worker: Worker
        do {
            worker = try Worker(id: id, runtime: runtime, logger: logger)
            _ = try worker.install(plan)
        } catch {
            board.results.withLock { $0[id] = .failure(.loop("worker \(id): \(error)")) }
            ready.signal()
            return
        }
        board.results.withLock { $0[id] = .success(worker) }
        ready.signal()
        worker.loop.run()
        _ = worker.loop.finish()
        worker.threadFinished()
    }
}

public enum SwitchyardVersion {
    public static let current = "0.1.0"
}

/// The number a one-line file such as /proc/sys/fs/nr_open holds, or nil.
private func readNumber(_ path: String) -> UInt? {
    guard let file = fopen(path, "r") else { return nil }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 32)
    guard fgets(&line, Int32(line.count), file) != nil else { return nil }
    let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return UInt(text.filter(\.isNumber))
}

/// Collects every child that has exited (orphans re-parented to this process included).
private func reapChildren() {
    var status: Int32 = 0
    while waitpid(-1, &status, WNOHANG) > 0 {}
}
