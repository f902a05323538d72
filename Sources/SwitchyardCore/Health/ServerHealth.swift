// One server's health: the active probe state (rise/fall), the passive circuit breaker (ejection
// with exponential backoff and a single half-open trial), the administrative state and the
// slow-start ramp. Mutated only through `ServiceHealth`, which adds the service-wide ejection cap;
// the read-only view is public for status output.

/// A change worth one log line. The reason is human-readable and includes what the caller passed in
/// (`"3 consecutive connect failures: connection refused"`).
public enum HealthTransition: Equatable, Sendable {
    /// Active checks: the server came up (first success, or `rise` consecutive successes).
    case up(reason: String)
    /// Active checks: `fall` consecutive probe failures. Ends any ejection (the server is out anyway).
    case down(reason: String)
    /// Passive: taken out for `for` (backoff and jitter applied).
    case ejected(for: Duration, reason: String)
    /// Passive: would have been ejected, but `max_ejection_percent` is reached; stays usable.
    /// Reported once per streak of failures.
    case ejectionSkipped(reason: String)
    /// Passive: the ejection time is over; one trial connection may be sent.
    case halfOpen
    /// Passive: back in service (trial connection succeeded, or a probe succeeded while ejected).
    case restored(reason: String)
    /// The wiring changed the administrative state.
    case adminState(AdminState)

    /// A short label for structured logs: `up`, `down`, `ejected`, `ejection_skipped`, `half_open`,
    /// `restored`, `enabled`, `draining`, `disabled`.
    public var name: String {
        switch self {
        case .up: "up"
        case .down: "down"
        case .ejected: "ejected"
        case .ejectionSkipped: "ejection_skipped"
        case .halfOpen: "half_open"
        case .restored: "restored"
        case .adminState(let state): state.rawValue
        }
    }

    /// The human-readable reason ("" for `halfOpen` and admin changes).
    public var reason: String {
        switch self {
        case .up(let r), .down(let r), .ejected(_, let r), .ejectionSkipped(let r), .restored(let r): r
        case .halfOpen, .adminState: ""
        }
    }
}

/// Status name of a server, most important first: an admin state beats `down`, which beats the
/// passive states.
public enum ServerState: String, CaseIterable, Sendable {
    case up
    case down
    case ejected
    /// Ejection over, waiting for (or running) its single trial connection.
    case halfOpen = "half-open"
    case draining
    case disabled
}

/// Answer to "may I send a new connection to this server now?".
public enum Admission: Equatable, Sendable {
    case allowed
    /// Allowed as the half-open trial: report its result (`connectSucceeded`/`connectFailed`), or
    /// `cancelTrial` if it is abandoned before the connect finishes.
    case trial
    case refused
}

/// One line of status output.
public struct ServerStatus: Equatable, Sendable {
    public var name: String
    public var state: ServerState
    public var usable: Bool
    /// Consecutive probe successes / failures (the one not counting is 0).
    public var probeSuccesses: Int
    public var probeFailures: Int
    /// Consecutive failed upstream connects.
    public var connectFailures: Int
    /// Ejections since the last successful connect (the backoff step).
    public var consecutiveEjections: Int
    /// Ejections since the start.
    public var totalEjections: Int
    /// Why the last probe failed, while probes fail (nil once one passes).
    public var lastProbeError: String?
    /// Time left of the current ejection; nil unless ejected (zero when half-open).
    public var ejectionRemaining: Duration?
    /// Slow-start factor now (1.0 when not ramping).
    public var weightFactor: Double
    /// Enough connects failed to eject it, but `max_ejection_percent` was reached: it stays in
    /// use until room appears (its next failure tries again) or a connect succeeds.
    public var ejectionHeldBack: Bool = false
}

public struct ServerHealth: Sendable {
    enum Circuit: Equatable, Sendable {
        case closed
        /// Ejected until this time (ms).
        case open(until: UInt64)
        /// Ejection over; `trialSince` is when the single trial was admitted (nil: none in flight).
        case halfOpen(trialSince: UInt64?)
    }

    public internal(set) var name: String
    public internal(set) var adminState: AdminState = .enabled
    /// Active state (always true with `check = none`).
    public internal(set) var isActiveUp: Bool
    public internal(set) var probeSuccesses = 0
    public internal(set) var probeFailures = 0
    /// Why the last probe failed; nil once one passes.
    public internal(set) var lastProbeError: String?
    public internal(set) var connectFailures = 0
    public internal(set) var consecutiveEjections = 0
    public internal(set) var totalEjections = 0
    /// Whether an active probe has ever found it up (or it started up).
    var everUp: Bool
    var circuit: Circuit = .closed
    /// The ejection cap already blocked an ejection in this streak of failures (report it once).
    var ejectionBlocked = false
    /// Start of the slow-start ramp (ms), nil when not ramping.
    var rampStart: UInt64? = nil

    init(name: String, settings: HealthSettings) {
        self.name = name
        let up = settings.check == .none || settings.checkInitial == .up
        isActiveUp = up
        everUp = up
    }

    /// Ejected or half-open (counts against `max_ejection_percent`).
    public var isEjected: Bool { circuit != .closed }

    public var isHalfOpen: Bool {
        if case .halfOpen = circuit { return true }
        return false
    }

    /// May the Balancer pick it: enabled, active state up, not ejected (half-open counts as usable
    /// while its single trial is not in flight).
    public var isUsable: Bool {
        guard adminState == .enabled, isActiveUp else { return false }
        switch circuit {
        case .closed: return true
        case .open: return false
        case .halfOpen(let trialSince): return trialSince == nil
        }
    }

    public var state: ServerState {
        switch adminState {
        case .disabled: return .disabled
        case .draining: return .draining
        case .enabled: break
        }
        if !isActiveUp { return .down }
        switch circuit {
        case .closed: return .up
        case .open: return .ejected
        case .halfOpen: return .halfOpen
        }
    }

    /// Slow-start weight factor: linear from 0.1 at the ramp's start to 1.0 after `slowStart`.
    public func weightFactor(now: UInt64, settings: HealthSettings) -> Double {
        guard let start = rampStart else { return 1.0 }
        let length = settings.slowStart.wholeMilliseconds
        guard length > 0 else { return 1.0 }
        let elapsed = now >= start ? now - start : 0
        guard elapsed < length else { return 1.0 }
        return 0.1 + 0.9 * Double(elapsed) / Double(length)
    }

    public func isRamping(now: UInt64, settings: HealthSettings) -> Bool {
        weightFactor(now: now, settings: settings) < 1.0
    }

    /// Milliseconds of ejection left (0 when half-open), nil when not ejected.
    public func ejectionRemaining(now: UInt64) -> UInt64? {
        switch circuit {
        case .closed: return nil
        case .open(let until): return until > now ? until - now : 0
        case .halfOpen: return 0
        }
    }

    // MARK: - Mutations (through ServiceHealth)

    mutating func startRamp(now: UInt64, settings: HealthSettings) {
        rampStart = settings.slowStart > .zero ? now : nil
    }

    mutating func closeCircuit() {
        circuit = .closed
        connectFailures = 0
        ejectionBlocked = false
    }

    mutating func admit(now: UInt64, panicking: Bool) -> Admission {
        guard adminState == .enabled else { return .refused }
        if panicking { return .allowed }
        guard isActiveUp else { return .refused }
        switch circuit {
        case .closed:
            return .allowed
        case .open:
            return .refused
        case .halfOpen(let trialSince):
            guard trialSince == nil else { return .refused }
            circuit = .halfOpen(trialSince: now)
            return .trial
        }
    }

    mutating func cancelTrial() {
        if case .halfOpen(.some) = circuit { circuit = .halfOpen(trialSince: nil) }
    }

    mutating func connectSucceeded(now: UInt64, settings: HealthSettings) -> HealthTransition? {
        // A down server's connects (panic traffic) are the active check's business.
        guard isActiveUp else { return nil }
        switch circuit {
        case .closed:
            connectFailures = 0
            consecutiveEjections = 0
            ejectionBlocked = false
            return nil
        case .open:
            // A connect begun before the ejection, or panic traffic: wait for the trial.
            return nil
        case .halfOpen:
            closeCircuit()
            consecutiveEjections = 0
            startRamp(now: now, settings: settings)
            return .restored(reason: "trial connection succeeded")
        }
    }

    /// `mayEject`: the service-wide cap allows one more ejected server.
    mutating func connectFailed(now: UInt64, reason: String, random: Double, settings: HealthSettings,
                                mayEject: Bool, capNote: @autoclosure () -> String) -> HealthTransition? {
        // `max_ejection_percent = 0` turns ejection off, as `eject_after = 0` does: nothing to
        // count, nothing held back.
        guard isActiveUp, settings.ejectAfter > 0, settings.maxEjectionPercent > 0 else { return nil }
        switch circuit {
        case .open:
            return nil
        case .halfOpen:
            // Already counted as ejected, so the cap does not apply.
            connectFailures += 1
            return eject(now: now, random: random, settings: settings, reason: "trial connection failed: \(reason)")
        case .closed:
            connectFailures += 1
            guard connectFailures >= settings.ejectAfter else { return nil }
            let why = "\(healthPlural(connectFailures, "consecutive connect failure")): \(reason)"
            if mayEject {
                return eject(now: now, random: random, settings: settings, reason: why)
            }
            guard !ejectionBlocked else { return nil }
            ejectionBlocked = true
            return .ejectionSkipped(reason: "\(why); \(capNote())")
        }
    }

    private mutating func eject(now: UInt64, random: Double, settings: HealthSettings, reason: String) -> HealthTransition {
        let ms = Self.ejectionMillis(step: consecutiveEjections, random: random, settings: settings)
        circuit = .open(until: now &+ ms)
        consecutiveEjections += 1
        totalEjections += 1
        ejectionBlocked = false
        rampStart = nil
        return .ejected(for: .healthMillis(ms), reason: reason)
    }

    /// `eject_time × 2^step × (1 + 10% × random)`, capped at `eject_time_max`; at least 1 ms.
    static func ejectionMillis(step: Int, random: Double, settings: HealthSettings) -> UInt64 {
        let base = Double(settings.ejectTime.wholeMilliseconds)
        let cap = Swift.max(base, Double(settings.ejectTimeMax.wholeMilliseconds))
        let doubled = base * Double(sign: .plus, exponent: Swift.min(step, 1000), significand: 1)
        let jittered = Swift.min(cap, doubled * (1 + 0.1 * healthUnit(random)))
        return Swift.max(1, UInt64(jittered.rounded(.down)))
    }

    /// Ejection over → half-open. Returns true when it changed.
    mutating func expire(now: UInt64, trialTimeout: UInt64) -> Bool {
        switch circuit {
        case .open(let until) where now >= until:
            circuit = .halfOpen(trialSince: nil)
            return true
        case .halfOpen(let since?) where now >= since &+ trialTimeout:
            // The trial never reported (a lost connection attempt): allow another one.
            circuit = .halfOpen(trialSince: nil)
            return false
        default:
            return false
        }
    }

    /// The next time `expire` has something to do.
    func deadline(trialTimeout: UInt64) -> UInt64? {
        switch circuit {
        case .closed, .halfOpen(trialSince: nil): return nil
        case .open(let until): return until
        case .halfOpen(let since?): return since &+ trialTimeout
        }
    }

    /// `inStartup`: still in the first probe round after the service was created (no slow start then).
    mutating func probeSucceeded(now: UInt64, settings: HealthSettings, inStartup: Bool) -> HealthTransition? {
        guard settings.check != .none else { return nil }
        probeFailures = 0
        lastProbeError = nil
        probeSuccesses += 1
        if !isActiveUp {
            let first = !everUp
            guard first || probeSuccesses >= settings.riseCount else { return nil }
            isActiveUp = true
            everUp = true
            if !(first && inStartup) { startRamp(now: now, settings: settings) }
            return .up(reason: first ? "first probe succeeded" : "\(healthPlural(probeSuccesses, "consecutive probe success", "consecutive probe successes"))")
        }
        if isEjected {
            closeCircuit()
            startRamp(now: now, settings: settings)
            return .restored(reason: "probe succeeded")
        }
        return nil
    }

    mutating func probeFailed(now: UInt64, reason: String, settings: HealthSettings) -> HealthTransition? {
        guard settings.check != .none else { return nil }
        probeSuccesses = 0
        probeFailures += 1
        lastProbeError = reason
        guard isActiveUp, probeFailures >= settings.fallCount else { return nil }
        isActiveUp = false
        // Down supersedes an ejection: the active check now owns the server. The backoff step is kept.
        closeCircuit()
        rampStart = nil
        return .down(reason: "\(healthPlural(probeFailures, "consecutive probe failure")): \(reason)")
    }

    mutating func setAdminState(_ newState: AdminState, now: UInt64, settings: HealthSettings) -> HealthTransition? {
        guard newState != adminState else { return nil }
        let old = adminState
        adminState = newState
        // Back from `disabled` (cold) ramps; back from `draining` (still serving) does not.
        if newState == .enabled, old == .disabled, isUsable { startRamp(now: now, settings: settings) }
        return .adminState(newState)
    }

    func status(now: UInt64, settings: HealthSettings) -> ServerStatus {
        ServerStatus(
            name: name, state: state, usable: isUsable,
            probeSuccesses: probeSuccesses, probeFailures: probeFailures,
            connectFailures: connectFailures,
            consecutiveEjections: consecutiveEjections, totalEjections: totalEjections,
            lastProbeError: lastProbeError,
            ejectionRemaining: ejectionRemaining(now: now).map { .healthMillis($0) },
            weightFactor: weightFactor(now: now, settings: settings),
            ejectionHeldBack: ejectionBlocked && circuit == .closed)
    }
}

/// `1 consecutive connect failure`, `3 consecutive connect failures`.
func healthPlural(_ n: Int, _ singular: String, _ pluralForm: String? = nil) -> String {
    "\(n) \(n == 1 ? singular : (pluralForm ?? singular + "s"))"
}
