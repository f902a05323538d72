import Logging
import SwitchyardCore
import SwitchyardUV

/// The health machinery of one service, run by the control worker (worker 0): one prober per
/// server, the timer for ejection expiry and lost trials, and the slow-start ramp. Results go
/// into the shared state; what changes is logged and acted on by the runtime.
final class HealthControl {
    let shared: SharedService
    private unowned let runtime: ProxyRuntime
    private let loop: EventLoop
    private var probers: [HealthProber] = []
    private var healthTimer: UVTimer?
    private var healthTimerDue: UInt64?
    private var rampTimer: UVTimer?
    /// Servers whose first probe has not answered yet.
    private var awaitingFirstProbe = Set<ObjectIdentifier>()
    var onFirstProbeRound: (() -> Void)?
    var firstProbeRoundDone: Bool { awaitingFirstProbe.isEmpty }

    init(shared: SharedService, runtime: ProxyRuntime, loop: EventLoop) {
        self.shared = shared
        self.runtime = runtime
        self.loop = loop
    }

    /// Starts the active probes: the first round at once (so that traffic starts on a true picture
    /// of the servers); later rounds drift apart through the ±10% interval jitter.
    func start() throws(UVError) {
        healthTimer = try UVTimer(loop: loop) { [unowned self] in self.healthTimerFired() }
        deadlineChanged()
        startRampIfNeeded()
        let settings = shared.config.health
        guard let probe = HealthProbe(settings: settings) else { return }
        for server in shared.servers {
            guard let prober = HealthProber(server: server, service: self, settings: settings, probe: probe, loop: loop)
            else { continue }
            probers.append(prober)
            awaitingFirstProbe.insert(server.id)
            try prober.start(after: 0)
        }
    }

    func stop() {
        for prober in probers { prober.stop() }
        probers.removeAll()
        awaitingFirstProbe.removeAll()
        healthTimer?.close()
        healthTimer = nil
        healthTimerDue = nil
        rampTimer?.close()
        rampTimer = nil
    }

    // MARK: Probe results

    func probeSucceeded(_ server: ServerDescriptor) {
        runtime.controlStats(of: shared, server).healthChecksPassed.add(1)
        if let notice = shared.probeSucceeded(server, now: loop.now) { runtime.handle(notice, of: shared) }
        probeAnswered(server)
    }

    func probeFailed(_ server: ServerDescriptor, reason: String) {
        runtime.controlStats(of: shared, server).healthChecksFailed.add(1)
        runtime.logger.debug("probe failed", metadata: ["service": "\(shared.name)", "server": "\(server.name)", "error": "\(reason)"])
        if let notice = shared.probeFailed(server, reason: reason, now: loop.now) {
            runtime.handle(notice, of: shared)
        } else if awaitingFirstProbe.contains(server.id), !shared.isUsable(server) {
            // Down from the start (or since before a reload) and failing: no transition to log,
            // but the operator must hear which server is down, and why, without debug logs.
            runtime.logger.warning(
                "server \(server.name) down: first probe failed",
                metadata: ["service": "\(shared.name)", "server": "\(server.name)", "state": "down", "error": "\(reason)"])
        }
        probeAnswered(server)
    }

    /// A probe that could not start for want of a local resource: neither a pass nor a failure.
    /// Logged once per run of such probes of a server.
    /// It still ends the server's part of the first probe round (its state stays as
    /// `check_initial` says), so that a shortage at start does not keep the listeners shut.
    func probeSkipped(_ server: ServerDescriptor, reason: String, firstInARow: Bool) {
        if firstInARow {
            runtime.logger.warning(
                "probe skipped: out of a local resource, not held against the server",
                metadata: ["service": "\(shared.name)", "server": "\(server.name)", "error": "\(reason)"])
        }
        probeAnswered(server)
    }

    func nextProbeDelay() -> UInt64 { shared.probeDelay() }

    private func probeAnswered(_ server: ServerDescriptor) {
        guard !awaitingFirstProbe.isEmpty, awaitingFirstProbe.remove(server.id) != nil, awaitingFirstProbe.isEmpty
        else { return }
        let callback = onFirstProbeRound
        onFirstProbeRound = nil
        callback?()
    }

    // MARK: Timers

    /// Re-arms the health timer if the earliest deadline moved earlier; starts the ramp if needed.
    func deadlineChanged() {
        startRampIfNeeded()
        guard let due = shared.nextDeadline() else { return }
        if let armed = healthTimerDue, armed <= due { return }
        healthTimerDue = due
        let now = loop.now
        healthTimer?.start(timeout: due > now ? due - now : 0)
    }

    private func healthTimerFired() {
        healthTimerDue = nil
        for notice in shared.tick(now: loop.now) { runtime.handle(notice, of: shared) }
        deadlineChanged()
    }

    /// Slow start: while a server's weight ramps up, push its factor 20 times over the ramp.
    private func startRampIfNeeded() {
        let slowStart = shared.config.health.slowStart
        guard slowStart > .zero, shared.isRamping(now: loop.now) else { return }
        if rampTimer == nil {
            rampTimer = try? UVTimer(loop: loop) { [unowned self] in
                if !self.shared.rampTick(now: self.loop.now) { self.rampTimer?.stop() }
            }
        }
        let step = max(50, slowStart.wholeMilliseconds / 20)
        rampTimer?.start(timeout: step, repeat: step)
        _ = shared.rampTick(now: loop.now)
    }
}
