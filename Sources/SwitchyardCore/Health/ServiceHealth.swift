// The health of one service's servers: the object the wiring owns, one per service, with server
// indices equal to the Balancer's. Everything is called from the event loop; time is passed in as
// monotonic milliseconds (`uv_now`), randomness as a Double in [0, 1).
//
// How the wiring drives it:
//   - at start: `apply(to: &balancer, now:)` (servers may start down), then probe every server
//     (probe `i` when `probe != nil`, after `probeDelay(random:)` each time).
//   - probe result: `probeSucceeded(i, now:)` / `probeFailed(i, now:, reason:)`.
//   - after the Balancer picks server i for a new connection: `admit(i, now:, panicking:)`;
//     `.refused` → release it and pick again excluding i; `.trial` → remember that this connection is
//     the half-open trial (for `cancelTrial`).
//   - upstream connect result: `connectSucceeded(i, now:)` / `connectFailed(i, now:, reason:, random:)`.
//   - a timer at `nextDeadline()`: `tick(now:)`.
//   - while `isRamping(now:)`: a timer (say every second) that pushes `weightFactor` to the Balancer.
// Every mutating call returns the change to log (at most one; `tick` a list). After any call, push the
// usable flags (and weight factors) to the Balancer: `apply(to:now:)` does all of it, or per server
// `balancer.setUsable(i, isUsable(i))` — `admit` and `tick` can change usability without an event
// (a trial in flight makes a half-open server unusable until its result).
//
// Choices where the issue is silent:
//   - max_ejection_percent: at most `servers × percent / 100`, rounded down, are ejected (or
//     half-open) at once: it is never exceeded, so one server at 50% is never ejected (set 100 to
//     allow it); 0 turns passive ejection off, as does eject_after = 0. One exception: while a
//     backup server is usable, primaries may be ejected past it (all of them), since the backup
//     takes over; backups themselves stay under the cap. A server blocked by the cap
//     stays usable, its failure count keeps growing, and its next failure tries again (so one more may
//     be ejected once another comes back). The block is reported once per streak (`ejectionSkipped`).
//   - Backoff step = ejections since the last successful connect: a probe that un-ejects a server
//     keeps the step; the next successful connect resets it.
//   - While ejected (before half-open), connect results are ignored (connects begun before the
//     ejection, or panic traffic). While half-open, the first result decides, trial or not.
//   - Passive results are ignored while the active state is down; going down ends any ejection (the
//     active check owns the server until it comes up again).
//   - Jitter makes an ejection 0–10% longer, then eject_time_max caps it (the cap is strict).
//   - A trial that reports nothing for 2 × connect_timeout (lost without `cancelTrial`) frees the slot.
//   - Slow start ramps after down → up, after an ejection ends (trial success or probe), and after
//     disabled → enabled; not for servers up at start (check_initial = up or check = none), nor for the
//     first up of a `check_initial = down` server within the first probe round (check_interval + 10% +
//     check_timeout after creation): at start every server would ramp together, which changes nothing
//     but delays full capacity. A server first seen up later (it was dead at start) does ramp.
//   - `admit` refuses draining and disabled servers even in panic; otherwise in panic it allows all.

/// A transition of one server, to log and to push to the Balancer.
public struct HealthEvent: Equatable, Sendable, CustomStringConvertible {
    /// Index (the Balancer's server id).
    public var server: Int
    public var name: String
    public var transition: HealthTransition
    /// Whether the server is usable after the change.
    public var usable: Bool

    /// `server a down: 3 consecutive probe failures: connection refused`,
    /// `server a ejected for 10.4s: 3 consecutive connect failures: timeout`.
    public var description: String {
        var head = "server \(name) "
        switch transition {
        case .ejected(let duration, _): head += "ejected for \(healthFormatMillis(duration.wholeMilliseconds))"
        case .ejectionSkipped: head += "not ejected"
        case .halfOpen: return head + "half-open: ejection over, allowing one trial connection"
        case .adminState(let state): return head + state.rawValue
        default: head += transition.name
        }
        return head + ": " + transition.reason
    }
}

public struct ServiceHealth: Sendable {
    public let settings: HealthSettings
    /// What to send and expect on probes; nil when `check = none`.
    public let probe: HealthProbe?
    /// Per server, indices as in the Balancer.
    public private(set) var servers: [ServerHealth]
    /// End of the first probe round (no slow start for a first up before it).
    private(set) var startupEnds: UInt64
    /// A trial connection with no result after this long (ms) frees the half-open slot.
    let trialTimeout: UInt64
    /// Per server: a backup (takes traffic only when no primary is usable).
    public let isBackup: [Bool]

    /// - Parameters:
    ///   - serverNames: in the Balancer's order (for messages).
    ///   - now: monotonic ms.
    ///   - connectTimeout: the service's `connect_timeout` (a lost trial is forgotten after twice that).
    ///   - backups: per server, whether it is a backup (none when empty).
    public init(settings: HealthSettings, serverNames: [String], now: UInt64, connectTimeout: Duration = .seconds(2),
                backups: [Bool] = []) {
        self.settings = settings
        self.isBackup = backups.count == serverNames.count ? backups : Array(repeating: false, count: serverNames.count)
        self.probe = HealthProbe(settings: settings)
        self.servers = serverNames.map { ServerHealth(name: $0, settings: settings) }
        let round = settings.checkInterval.wholeMilliseconds * 11 / 10 + settings.checkTimeout.wholeMilliseconds
        self.startupEnds = now &+ round
        self.trialTimeout = Swift.max(1, connectTimeout.wholeMilliseconds * 2)
    }

    public var count: Int { servers.count }

    /// Takes over the start-up window of the health this one replaces (a reload, a server moved):
    /// the first probe round is the service's first, not the configuration's, so that a server
    /// added or moved later ramps up under `slow_start` when it first comes up, instead of taking
    /// full weight at once as servers do at start.
    public mutating func keepStartupWindow(of previous: ServiceHealth) {
        startupEnds = previous.startupEnds
    }

    /// Carries a server's state (counters, ejection, active up/down, admin state) over from the
    /// health of a previous configuration: a reload keeps what it knows of servers that stay.
    public mutating func adopt(_ state: ServerHealth, at server: Int) {
        guard servers.indices.contains(server) else { return }
        var carried = state
        carried.name = servers[server].name
        if settings.check == .none {
            // No probe will ever bring a server up again: with `check = none` every server is up.
            carried.isActiveUp = true
            carried.everUp = true
            carried.probeSuccesses = 0
            carried.probeFailures = 0
            carried.lastProbeError = nil
        }
        servers[server] = carried
    }

    /// Most servers that may be ejected (or half-open) at once.
    public var maxEjected: Int {
        let percent = Swift.min(Swift.max(settings.maxEjectionPercent, 0), 100)
        return servers.count * percent / 100
    }

    /// Servers ejected or half-open now, among those taking traffic: a drained or disabled server
    /// gets no trial to end its ejection (with `check = none` nothing else ends it), so it must not
    /// hold a share of `max_ejection_percent` that healthy servers' failures would need.
    public var ejectedCount: Int {
        servers.reduce(0) { $0 + ($1.isEjected && $1.adminState == .enabled ? 1 : 0) }
    }

    public func isUsable(_ server: Int) -> Bool {
        servers.indices.contains(server) && servers[server].isUsable
    }

    /// Slow-start factor for `Balancer.setWeightFactor` (1.0 when not ramping).
    public func weightFactor(_ server: Int, now: UInt64) -> Double {
        guard servers.indices.contains(server) else { return 1.0 }
        return servers[server].weightFactor(now: now, settings: settings)
    }

    /// True while any server's weight is still ramping (keep the slow-start timer running).
    public func isRamping(now: UInt64) -> Bool {
        servers.contains { $0.isRamping(now: now, settings: settings) }
    }

    /// Milliseconds until the next probe of a server (`check_interval` ±10%).
    public func probeDelay(random: Double) -> UInt64 { settings.probeDelay(random: random) }

    // MARK: - Connections

    /// May a new connection go to `server` now? `.trial` at most once per half-open period (until its
    /// result). With `panicking` (the Balancer is in panic: no server usable) any enabled server is
    /// `.allowed`.
    public mutating func admit(_ server: Int, now: UInt64, panicking: Bool = false) -> Admission {
        guard servers.indices.contains(server) else { return .refused }
        return servers[server].admit(now: now, panicking: panicking)
    }

    /// The trial connection admitted by `admit` ended before its connect finished (client gone, shutdown):
    /// the next connection may be the trial.
    public mutating func cancelTrial(_ server: Int) {
        guard servers.indices.contains(server) else { return }
        servers[server].cancelTrial()
    }

    public mutating func connectSucceeded(_ server: Int, now: UInt64) -> HealthEvent? {
        guard servers.indices.contains(server) else { return nil }
        let change = servers[server].connectSucceeded(now: now, settings: settings)
        return event(server, change)
    }

    /// A failed or timed-out upstream connect. `reason`: "connection refused", "timeout", ...
    /// `random` in [0, 1) sets the ejection jitter.
    public mutating func connectFailed(_ server: Int, now: UInt64, reason: String, random: Double) -> HealthEvent? {
        guard servers.indices.contains(server) else { return nil }
        // Counting the ejected servers is O(n): only when this failure may eject.
        let candidate = servers[server]
        let mayDecide = candidate.circuit == .closed && candidate.connectFailures + 1 >= settings.ejectAfter
        let ejected = mayDecide ? ejectedCount : 0
        let limit = maxEjected
        let percent = settings.maxEjectionPercent
        let total = servers.count
        // Backups are there to take over: while one is usable, failing primaries may all be
        // ejected, past the cap (which still holds for the backups themselves).
        let backupStandsIn = mayDecide && ejected + 1 > limit && !isBackup[server]
            && servers.indices.contains { isBackup[$0] && servers[$0].isUsable }
        let change = servers[server].connectFailed(
            now: now, reason: reason, random: random, settings: settings,
            mayEject: ejected + 1 <= limit || backupStandsIn,
            capNote: "max_ejection_percent \(percent)% reached (\(ejected) of \(total) servers ejected)")
        return event(server, change)
    }

    // MARK: - Probes

    public mutating func probeSucceeded(_ server: Int, now: UInt64) -> HealthEvent? {
        guard servers.indices.contains(server) else { return nil }
        let change = servers[server].probeSucceeded(now: now, settings: settings, inStartup: now < startupEnds)
        return event(server, change)
    }

    /// `reason`: "connection refused", "timeout", or a `ProbeVerdict.fail` reason.
    public mutating func probeFailed(_ server: Int, now: UInt64, reason: String) -> HealthEvent? {
        guard servers.indices.contains(server) else { return nil }
        let change = servers[server].probeFailed(now: now, reason: reason, settings: settings)
        return event(server, change)
    }

    // MARK: - Admin, timers, status

    public mutating func setAdminState(_ server: Int, _ state: AdminState, now: UInt64) -> HealthEvent? {
        guard servers.indices.contains(server) else { return nil }
        let change = servers[server].setAdminState(state, now: now, settings: settings)
        // An ejected server taken out of service stopped counting against the cap (see
        // `ejectedCount`); back in service with the cap already reached by others, it comes
        // back closed rather than push the count past `max_ejection_percent`.
        if change != nil, state == .enabled, servers[server].isEjected, ejectedCount > maxEjected {
            servers[server].closeCircuit()
        }
        return event(server, change)
    }

    /// Ends ejections whose time is up (→ `halfOpen`) and forgets lost trials. Call at `nextDeadline()`
    /// (calling it more often is harmless).
    public mutating func tick(now: UInt64) -> [HealthEvent] {
        var events: [HealthEvent] = []
        for i in servers.indices where servers[i].expire(now: now, trialTimeout: trialTimeout) {
            events.append(HealthEvent(server: i, name: servers[i].name, transition: .halfOpen, usable: servers[i].isUsable))
        }
        return events
    }

    /// The earliest time (ms) at which `tick` has something to do; nil when nothing is pending.
    public func nextDeadline() -> UInt64? {
        servers.compactMap { $0.deadline(trialTimeout: trialTimeout) }.min()
    }

    public func status(now: UInt64) -> [ServerStatus] {
        servers.map { $0.status(now: now, settings: settings) }
    }

    /// Pushes every server's usable flag and slow-start factor into the Balancer (same indices).
    public func apply(to balancer: inout Balancer, now: UInt64) {
        for i in 0..<Swift.min(servers.count, balancer.count) {
            balancer.setUsable(i, servers[i].isUsable)
            balancer.setWeightFactor(i, servers[i].weightFactor(now: now, settings: settings))
        }
    }

    /// Call with the transition already computed (not inline: a non-mutating call on `self` would read
    /// `self` before the argument's mutation).
    private func event(_ server: Int, _ transition: HealthTransition?) -> HealthEvent? {
        guard let transition else { return nil }
        return HealthEvent(server: server, name: servers[server].name, transition: transition, usable: servers[server].isUsable)
    }
}
