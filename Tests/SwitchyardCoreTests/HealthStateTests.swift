import Testing
@testable import SwitchyardCore

private func service(_ names: [String] = ["a", "b", "c", "d"], now: UInt64 = 0,
                     _ configure: (inout HealthSettings) -> Void = { _ in }) -> ServiceHealth {
    var s = HealthSettings()
    configure(&s)
    return ServiceHealth(settings: s, serverNames: names, now: now)
}

/// Passive-only service (check = none), so that servers start up.
private func passive(_ names: [String] = ["a", "b", "c", "d"], _ configure: (inout HealthSettings) -> Void = { _ in }) -> ServiceHealth {
    service(names) { s in
        s.check = .none
        configure(&s)
    }
}

extension ServiceHealth {
    /// `n` failed connects on `server` at `now`; returns the last event.
    @discardableResult
    mutating func failConnects(_ server: Int, _ n: Int, now: UInt64, reason: String = "connection refused", random: Double = 0) -> HealthEvent? {
        var last: HealthEvent? = nil
        for _ in 0..<n { last = connectFailed(server, now: now, reason: reason, random: random) }
        return last
    }

    /// Runs `tick` at the ejection's end and admits (and fails or succeeds) the single trial.
    mutating func expireAndTrial(_ server: Int, now: UInt64) -> Admission {
        _ = tick(now: now)
        return admit(server, now: now)
    }
}

@Suite struct HealthActiveTests {
    @Test func fallCountsConsecutiveFailuresAndASuccessResetsIt() {
        var h = service { $0.checkInitial = .up }
        #expect(h.isUsable(0))
        #expect(h.probeFailed(0, now: 1, reason: "connection refused") == nil)
        #expect(h.probeFailed(0, now: 2, reason: "connection refused") == nil)
        #expect(h.probeSucceeded(0, now: 3) == nil)  // resets the fall count
        #expect(h.probeFailed(0, now: 4, reason: "timeout") == nil)
        #expect(h.probeFailed(0, now: 5, reason: "timeout") == nil)
        #expect(h.isUsable(0))
        let down = h.probeFailed(0, now: 6, reason: "connection refused")
        #expect(down?.transition == .down(reason: "3 consecutive probe failures: connection refused"))
        #expect(down?.usable == false)
        #expect(down?.description == "server a down: 3 consecutive probe failures: connection refused")
        #expect(!h.isUsable(0))
        #expect(h.probeFailed(0, now: 7, reason: "timeout") == nil)  // reported once
        #expect(h.status(now: 7)[0].lastProbeError == "timeout")
        _ = h.probeSucceeded(0, now: 8)
        #expect(h.status(now: 8)[0].lastProbeError == nil)
    }

    @Test func riseCountsConsecutiveSuccessesAndAFailureResetsIt() {
        var h = service { $0.checkInitial = .up }
        _ = h.probeFailed(0, now: 1, reason: "x"); _ = h.probeFailed(0, now: 2, reason: "x"); _ = h.probeFailed(0, now: 3, reason: "x")
        #expect(!h.isUsable(0))
        #expect(h.probeSucceeded(0, now: 4) == nil)
        #expect(h.probeFailed(0, now: 5, reason: "x") == nil)  // resets the rise count
        #expect(h.probeSucceeded(0, now: 6) == nil)
        #expect(!h.isUsable(0))
        let up = h.probeSucceeded(0, now: 7)
        #expect(up?.transition == .up(reason: "2 consecutive probe successes"))
        #expect(up?.usable == true)
        #expect(up?.description == "server a up: 2 consecutive probe successes")
        #expect(h.isUsable(0))
    }

    @Test func initialDownNeedsOnlyTheFirstSuccessThenRiseLater() {
        var h = service { $0.rise = 3 }
        #expect(!h.isUsable(0))
        #expect(h.status(now: 0)[0].state == .down)
        #expect(h.probeFailed(0, now: 1, reason: "connection refused") == nil)
        #expect(h.probeFailed(0, now: 2, reason: "connection refused") == nil)
        #expect(h.probeFailed(0, now: 3, reason: "connection refused") == nil)  // already down: no event
        let first = h.probeSucceeded(0, now: 4)
        #expect(first?.transition == .up(reason: "first probe succeeded"))
        #expect(h.isUsable(0))
        for t in 5...7 { _ = h.probeFailed(0, now: UInt64(t), reason: "timeout") }
        #expect(!h.isUsable(0))
        #expect(h.probeSucceeded(0, now: 8) == nil)
        #expect(h.probeSucceeded(0, now: 9) == nil)
        #expect(h.probeSucceeded(0, now: 10)?.transition == .up(reason: "3 consecutive probe successes"))
    }

    @Test func initialUpStartsUsableAndSilent() {
        var h = service { $0.checkInitial = .up }
        #expect((0..<4).allSatisfy { h.isUsable($0) })
        #expect(h.probeSucceeded(0, now: 1) == nil)
        #expect(h.status(now: 1)[0].state == .up)
    }

    @Test func checkNoneIsUpAndIgnoresProbes() {
        var h = passive()
        #expect(h.probe == nil)
        #expect(h.isUsable(0))
        for t in 0..<5 { #expect(h.probeFailed(0, now: UInt64(t), reason: "x") == nil) }
        #expect(h.isUsable(0))
        #expect(h.probeSucceeded(0, now: 9) == nil)
    }

    @Test func riseAndFallOfOneActAsOne() {
        var h = service { $0.checkInitial = .up; $0.rise = 0; $0.fall = 1 }
        #expect(h.probeFailed(0, now: 1, reason: "timeout")?.transition == .down(reason: "1 consecutive probe failure: timeout"))
        #expect(h.probeSucceeded(0, now: 2)?.transition == .up(reason: "1 consecutive probe success"))
    }
}

@Suite struct HealthPassiveTests {
    @Test func ejectsAfterConsecutiveConnectFailures() {
        var h = passive()
        #expect(h.connectFailed(0, now: 100, reason: "connection refused", random: 0) == nil)
        #expect(h.connectFailed(0, now: 100, reason: "connection refused", random: 0) == nil)
        #expect(h.isUsable(0))
        let e = h.connectFailed(0, now: 100, reason: "connection refused", random: 0)
        #expect(e?.transition == .ejected(for: .seconds(10), reason: "3 consecutive connect failures: connection refused"))
        #expect(e?.usable == false)
        #expect(e?.description == "server a ejected for 10s: 3 consecutive connect failures: connection refused")
        #expect(!h.isUsable(0))
        #expect(h.admit(0, now: 200) == .refused)
        #expect(h.admit(1, now: 200) == .allowed)
        #expect(h.nextDeadline() == 10_100)
        let st = h.status(now: 2_100)[0]
        #expect(st.state == .ejected)
        #expect(st.ejectionRemaining == .seconds(8))
        #expect(st.totalEjections == 1 && st.consecutiveEjections == 1)
    }

    @Test func aSuccessfulConnectResetsTheCount() {
        var h = passive()
        h.failConnects(0, 2, now: 1)
        #expect(h.connectSucceeded(0, now: 2) == nil)
        #expect(h.failConnects(0, 2, now: 3) == nil)
        #expect(h.isUsable(0))
        #expect(h.status(now: 3)[0].connectFailures == 2)
        #expect(h.connectFailed(0, now: 4, reason: "timeout", random: 0)?.transition.name == "ejected")
    }

    @Test func ejectAfterZeroTurnsEjectionOff() {
        var h = passive { $0.ejectAfter = 0 }
        #expect(h.failConnects(0, 50, now: 1) == nil)
        #expect(h.isUsable(0))
    }

    @Test func halfOpenAllowsExactlyOneTrial() {
        var h = passive()
        h.failConnects(0, 3, now: 0)
        #expect(h.tick(now: 9_999).isEmpty)
        #expect(!h.isUsable(0))
        let events = h.tick(now: 10_000)
        #expect(events.map(\.transition) == [.halfOpen])
        #expect(events.first?.usable == true)
        #expect(events.first?.description == "server a half-open: ejection over, allowing one trial connection")
        #expect(h.isUsable(0))
        #expect(h.status(now: 10_000)[0].state == .halfOpen)
        #expect(h.admit(0, now: 10_001) == .trial)
        #expect(!h.isUsable(0))  // trial in flight: the Balancer should not pick it again
        #expect(h.admit(0, now: 10_002) == .refused)
        #expect(h.admit(0, now: 10_003) == .refused)
        #expect(h.tick(now: 10_004).isEmpty)  // no second half-open event
    }

    @Test func trialSuccessClosesTheCircuitAndResetsBackoff() {
        var h = passive()
        var now: UInt64 = 0
        h.failConnects(0, 3, now: now)                      // 10 s
        now += 10_000
        #expect(h.expireAndTrial(0, now: now) == .trial)
        #expect(h.connectFailed(0, now: now, reason: "timeout", random: 0)?.transition
            == .ejected(for: .seconds(20), reason: "trial connection failed: timeout"))
        now += 20_000
        #expect(h.expireAndTrial(0, now: now) == .trial)
        let restored = h.connectSucceeded(0, now: now)
        #expect(restored?.transition == .restored(reason: "trial connection succeeded"))
        #expect(restored?.usable == true)
        #expect(h.admit(0, now: now) == .allowed)
        let st = h.status(now: now)[0]
        #expect(st.state == .up && st.connectFailures == 0 && st.consecutiveEjections == 0 && st.totalEjections == 2)
        // Backoff starts over at eject_time.
        #expect(h.failConnects(0, 2, now: now) == nil)      // and the count too
        #expect(h.connectFailed(0, now: now, reason: "x", random: 0)?.transition == .ejected(for: .seconds(10), reason: "3 consecutive connect failures: x"))
    }

    @Test func trialFailureReEjectsAtTheNextStepUpToTheCap() {
        var h = passive { $0.ejectTimeMax = .seconds(60) }
        var now: UInt64 = 0
        h.failConnects(0, 3, now: now)
        var lengths: [Duration] = [.seconds(10)]
        for _ in 0..<4 {
            now += lengths.last!.wholeMilliseconds
            #expect(h.expireAndTrial(0, now: now) == .trial)
            guard case .ejected(let d, _)? = h.connectFailed(0, now: now, reason: "refused", random: 0)?.transition else {
                Issue.record("trial failure did not re-eject"); return
            }
            lengths.append(d)
        }
        #expect(lengths == [.seconds(10), .seconds(20), .seconds(40), .seconds(60), .seconds(60)])
    }

    @Test func ejectionJitterIsWithinTenPercent() {
        var rng = HealthTestRandom(seed: 3)
        for _ in 0..<200 {
            var h = passive()
            let r = rng.next()
            guard case .ejected(let d, _)? = h.failConnects(0, 3, now: 0, random: r)?.transition else {
                Issue.record("not ejected"); return
            }
            #expect(d >= .seconds(10) && d <= .seconds(11))
        }
        var h = passive()
        guard case .ejected(let d, _)? = h.failConnects(0, 3, now: 0, random: 0.95)?.transition else { Issue.record("not ejected"); return }
        #expect(d == .milliseconds(10_950))
    }

    @Test func cancelledOrLostTrialFreesTheSlot() {
        var h = passive()
        h.failConnects(0, 3, now: 0)
        #expect(h.expireAndTrial(0, now: 10_000) == .trial)
        h.cancelTrial(0)
        #expect(h.isUsable(0))
        #expect(h.admit(0, now: 10_001) == .trial)
        // Lost without cancel: after 2 × connect_timeout (default 2 s) the slot is free again.
        #expect(h.nextDeadline() == 14_001)
        #expect(h.tick(now: 14_000).isEmpty)
        #expect(h.admit(0, now: 14_000) == .refused)
        #expect(h.tick(now: 14_001).isEmpty)
        #expect(h.isUsable(0))
        #expect(h.admit(0, now: 14_002) == .trial)
    }

    @Test func resultsWhileEjectedAreIgnoredButHalfOpenResultsDecide() {
        var h = passive()
        h.failConnects(0, 3, now: 0)
        #expect(h.connectSucceeded(0, now: 5) == nil)           // a connect begun before the ejection
        #expect(h.connectFailed(0, now: 6, reason: "x", random: 0) == nil)
        #expect(!h.isUsable(0))
        _ = h.tick(now: 10_000)
        // Panic traffic (no trial admitted) still decides in half-open.
        #expect(h.connectSucceeded(0, now: 10_001)?.transition == .restored(reason: "trial connection succeeded"))
    }

    @Test func probeSuccessUnEjectsAndKeepsTheBackoffStep() {
        var h = service { $0.checkInitial = .up }
        h.failConnects(0, 3, now: 0)
        #expect(!h.isUsable(0))
        let r = h.probeSucceeded(0, now: 1_000)
        #expect(r?.transition == .restored(reason: "probe succeeded"))
        #expect(r?.description == "server a restored: probe succeeded")
        #expect(h.isUsable(0))
        #expect(h.status(now: 1_000)[0].consecutiveEjections == 1)
        // Failing again right away: the next step (20 s).
        #expect(h.failConnects(0, 3, now: 2_000)?.transition == .ejected(for: .seconds(20), reason: "3 consecutive connect failures: connection refused"))
        // Probe during half-open un-ejects too.
        _ = h.tick(now: 22_000)
        #expect(h.admit(0, now: 22_000) == .trial)
        #expect(h.probeSucceeded(0, now: 22_001)?.transition == .restored(reason: "probe succeeded"))
        #expect(h.admit(0, now: 22_002) == .allowed)
        // A successful connect then resets the step.
        #expect(h.connectSucceeded(0, now: 23_000) == nil)
        #expect(h.failConnects(0, 3, now: 24_000)?.transition == .ejected(for: .seconds(10), reason: "3 consecutive connect failures: connection refused"))
    }

    @Test func goingDownEndsTheEjectionAndPassiveResultsWaitForUp() {
        var h = service { $0.checkInitial = .up }
        h.failConnects(0, 3, now: 0)
        #expect(h.ejectedCount == 1)
        for t in 1...3 { _ = h.probeFailed(0, now: UInt64(t), reason: "timeout") }
        #expect(h.status(now: 3)[0].state == .down)
        #expect(h.ejectedCount == 0)
        #expect(h.nextDeadline() == nil)
        #expect(h.failConnects(0, 10, now: 4) == nil)  // panic traffic to a down server
        #expect(h.admit(0, now: 4) == .refused)
        #expect(h.admit(0, now: 4, panicking: true) == .allowed)
        _ = h.probeSucceeded(0, now: 5)
        #expect(h.probeSucceeded(0, now: 6)?.transition == .up(reason: "2 consecutive probe successes"))
        #expect(h.isUsable(0))
    }
}

@Suite struct HealthEjectionCapTests {
    @Test func atMostHalfOfFourServersAreEjected() {
        var h = passive()
        #expect(h.maxEjected == 2)
        #expect(h.failConnects(0, 3, now: 0)?.transition.name == "ejected")
        #expect(h.failConnects(1, 3, now: 0)?.transition.name == "ejected")
        let skipped = h.failConnects(2, 3, now: 0)
        #expect(skipped?.transition == .ejectionSkipped(reason:
            "3 consecutive connect failures: connection refused; max_ejection_percent 50% reached (2 of 4 servers ejected)"))
        #expect(skipped?.usable == true)
        #expect(skipped?.description.hasPrefix("server c not ejected: 3 consecutive") == true)
        #expect(h.status(now: 0).map(\.ejectionHeldBack) == [false, false, true, false])
        #expect(h.isUsable(2))
        #expect(h.connectFailed(2, now: 1, reason: "x", random: 0) == nil)  // reported once per streak
        #expect(h.failConnects(3, 3, now: 1)?.transition.name == "ejection_skipped")
        #expect(h.failConnects(3, 2, now: 1) == nil)
        #expect(h.ejectedCount == 2)
        // Half-open still counts as ejected.
        _ = h.tick(now: 10_000)
        #expect(h.connectFailed(2, now: 10_000, reason: "x", random: 0) == nil)
        #expect(h.ejectedCount == 2)
        // a comes back: room for one more; c's next failure ejects it.
        #expect(h.admit(0, now: 10_000) == .trial)
        #expect(h.connectSucceeded(0, now: 10_001)?.transition.name == "restored")
        #expect(h.connectFailed(2, now: 10_002, reason: "timeout", random: 0)?.transition
            == .ejected(for: .seconds(10), reason: "6 consecutive connect failures: timeout"))
        #expect(h.status(now: 10_002)[2].ejectionHeldBack == false, "ejected now, not held back")
        #expect(h.connectFailed(3, now: 10_003, reason: "timeout", random: 0) == nil)  // full again, already reported
        #expect(h.ejectedCount == 2)
    }

    @Test func theCapIsRoundedDownAndNeverExceeded() {
        #expect(passive(["a"]).maxEjected == 0)
        #expect(passive(["a", "b", "c"]).maxEjected == 1)
        #expect(passive(["a", "b", "c"]) { $0.maxEjectionPercent = 100 }.maxEjected == 3)
        #expect(passive(["a", "b"]) { $0.maxEjectionPercent = 0 }.maxEjected == 0)
        #expect(passive(["a", "b"]) { $0.maxEjectionPercent = 250 }.maxEjected == 2)

        var single = passive(["a"])
        #expect(single.failConnects(0, 3, now: 0)?.transition.name == "ejection_skipped")
        #expect(single.isUsable(0))
        var allowed = passive(["a"]) { $0.maxEjectionPercent = 100 }
        #expect(allowed.failConnects(0, 3, now: 0)?.transition.name == "ejected")

        var three = passive(["a", "b", "c"])
        #expect(three.failConnects(0, 3, now: 0)?.transition.name == "ejected")
        #expect(three.failConnects(1, 3, now: 0)?.transition.name == "ejection_skipped")
        #expect(three.ejectedCount == 1)
    }

    @Test("While a backup is usable, failing primaries are all ejected past the cap; the backup itself stays under it")
    func aUsableBackupLetsEveryPrimaryGo() {
        var s = HealthSettings()
        s.check = .none
        // conf/switchyard.ini's layout: two primaries and a backup, 50%: a cap of 1.
        var h = ServiceHealth(settings: s, serverNames: ["pg1", "pg2", "pg3"], now: 0, backups: [false, false, true])
        #expect(h.maxEjected == 1)
        #expect(h.failConnects(0, 3, now: 0)?.transition.name == "ejected")
        // Was: skipped (1 of 3 ejected), so every client waited for pg2's connect timeout first.
        #expect(h.failConnects(1, 3, now: 0)?.transition.name == "ejected")
        #expect(h.ejectedCount == 2 && !h.isUsable(0) && !h.isUsable(1) && h.isUsable(2))
        // The backup failing too is not ejected: the service is not emptied.
        #expect(h.failConnects(2, 3, now: 0)?.transition.name == "ejection_skipped")
        #expect(h.isUsable(2))

        // No usable backup (it was drained): the cap holds for primaries as before.
        var drained = ServiceHealth(settings: s, serverNames: ["pg1", "pg2", "pg3"], now: 0, backups: [false, false, true])
        _ = drained.setAdminState(2, .draining, now: 0)
        #expect(drained.failConnects(0, 3, now: 0)?.transition.name == "ejected")
        #expect(drained.failConnects(1, 3, now: 0)?.transition.name == "ejection_skipped")

        // Without backups nothing changes.
        var plain = ServiceHealth(settings: s, serverNames: ["pg1", "pg2", "pg3"], now: 0)
        #expect(plain.failConnects(0, 3, now: 0)?.transition.name == "ejected")
        #expect(plain.failConnects(1, 3, now: 0)?.transition.name == "ejection_skipped")

        // max_ejection_percent = 0 still turns ejection off, backups or not.
        var off = s
        off.maxEjectionPercent = 0
        var none = ServiceHealth(settings: off, serverNames: ["pg1", "pg2", "pg3"], now: 0, backups: [false, false, true])
        #expect(none.failConnects(0, 3, now: 0) == nil)
        #expect(none.status(now: 0)[0].ejectionHeldBack == false && none.isUsable(0))
    }

    @Test func trialFailureReEjectsEvenWhenTheCapIsReached() {
        var h = passive(["a", "b"])
        h.failConnects(0, 3, now: 0)
        #expect(h.failConnects(1, 3, now: 0)?.transition.name == "ejection_skipped")
        #expect(h.expireAndTrial(0, now: 10_000) == .trial)
        #expect(h.connectFailed(0, now: 10_001, reason: "x", random: 0)?.transition.name == "ejected")
    }

    /// With `check = none` a disabled or drained server is never given the trial that would end
    /// its ejection: it must not keep the cap from ejecting a server that takes traffic.
    @Test func aDisabledOrDrainedServerDoesNotHoldTheCap() {
        for state in [AdminState.disabled, .draining] {
            var h = passive(["a", "b", "c"])
            #expect(h.failConnects(0, 3, now: 0)?.transition.name == "ejected")
            _ = h.tick(now: 20_000)  // a: half-open, and no trial while not enabled
            _ = h.setAdminState(0, state, now: 20_000)
            #expect(h.ejectedCount == 0)
            #expect(h.failConnects(1, 3, now: 20_001)?.transition.name == "ejected", "\(state)")
            // Enabled again with the cap taken by b, a comes back closed (see the next test).
            _ = h.setAdminState(0, .enabled, now: 20_002)
            #expect(h.admit(0, now: 20_002) == .allowed)
            #expect(h.ejectedCount == 1)
        }
    }

    /// Re-enabled while others fill the cap, an ejected server comes back closed: the count never
    /// passes `max_ejection_percent`.
    @Test func reEnablingAnEjectedServerNeverExceedsTheCap() {
        var h = passive(["a", "b", "c", "d"])  // cap 2
        #expect(h.failConnects(0, 3, now: 0)?.transition.name == "ejected")
        _ = h.setAdminState(0, .disabled, now: 1)
        #expect(h.failConnects(1, 3, now: 2)?.transition.name == "ejected")
        #expect(h.failConnects(2, 3, now: 2)?.transition.name == "ejected")
        #expect(h.ejectedCount == 2)
        _ = h.setAdminState(0, .enabled, now: 3)
        #expect(h.ejectedCount == 2)
        #expect(h.isUsable(0), "back in service, closed")
        // With room under the cap, a re-enabled server keeps its ejection.
        var roomy = passive(["a", "b", "c", "d"])
        #expect(roomy.failConnects(0, 3, now: 0)?.transition.name == "ejected")
        _ = roomy.setAdminState(0, .disabled, now: 1)
        _ = roomy.setAdminState(0, .enabled, now: 2)
        #expect(roomy.ejectedCount == 1)
        #expect(!roomy.isUsable(0))
    }

    @Test func panicAdmitsEveryEnabledServer() {
        var h = passive(["a", "b"]) { $0.maxEjectionPercent = 100 }
        h.failConnects(0, 3, now: 0)
        h.failConnects(1, 3, now: 0)
        #expect(!h.isUsable(0) && !h.isUsable(1))
        #expect(h.admit(0, now: 1) == .refused)
        #expect(h.admit(0, now: 1, panicking: true) == .allowed)
        _ = h.setAdminState(1, .disabled, now: 1)
        #expect(h.admit(1, now: 1, panicking: true) == .refused)
    }
}

@Suite struct HealthSlowStartTests {
    @Test func rampsLinearlyAfterAnEjection() {
        var h = passive { $0.slowStart = .seconds(10) }
        #expect(h.weightFactor(0, now: 0) == 1.0)  // up at start: full weight
        #expect(!h.isRamping(now: 0))
        h.failConnects(0, 3, now: 0)
        #expect(h.expireAndTrial(0, now: 10_000) == .trial)
        #expect(h.weightFactor(0, now: 10_000) == 1.0)  // not ramping before the circuit closes
        _ = h.connectSucceeded(0, now: 20_000)
        #expect(h.weightFactor(0, now: 20_000) == 0.1)
        #expect(abs(h.weightFactor(0, now: 22_500) - 0.325) < 1e-9)
        #expect(abs(h.weightFactor(0, now: 25_000) - 0.55) < 1e-9)
        #expect(h.isRamping(now: 29_999))
        #expect(h.weightFactor(0, now: 30_000) == 1.0)
        #expect(h.weightFactor(0, now: 99_000) == 1.0)
        #expect(!h.isRamping(now: 30_000))
        #expect(h.weightFactor(1, now: 22_500) == 1.0)  // only the server that came back
        #expect(abs(h.status(now: 22_500)[0].weightFactor - 0.325) < 1e-9)
    }

    @Test func rampsAfterDownButNotAtStart() {
        var h = service { $0.slowStart = .seconds(4) }
        // First round (interval 2 s × 1.1 + timeout 1 s = 3.2 s): the first up gets full weight.
        _ = h.probeSucceeded(0, now: 3_199)
        #expect(h.isUsable(0) && h.weightFactor(0, now: 3_199) == 1.0)
        // A server first seen up later (dead at start) ramps.
        _ = h.probeSucceeded(1, now: 3_200)
        #expect(h.weightFactor(1, now: 3_200) == 0.1)
        #expect(abs(h.weightFactor(1, now: 4_200) - 0.325) < 1e-9)
        // Down → up ramps.
        for t in 10...12 { _ = h.probeFailed(0, now: UInt64(t), reason: "x") }
        _ = h.probeSucceeded(0, now: 20)
        _ = h.probeSucceeded(0, now: 40)
        #expect(h.weightFactor(0, now: 40) == 0.1)
        #expect(h.weightFactor(0, now: 4_040) == 1.0)
        // A probe that un-ejects ramps too.
        var p = service { $0.slowStart = .seconds(4); $0.checkInitial = .up }
        p.failConnects(0, 3, now: 0)
        _ = p.probeSucceeded(0, now: 100)
        #expect(p.weightFactor(0, now: 1_100) == 0.325)
    }

    @Test func aServerAddedOrMovedLaterRampsWhenItFirstComesUp() {
        // The service started at 0; a reload (or a server moved by DNS) at 60 s builds a new
        // health that keeps the service's start-up window: its new server ramps.
        let first = service { $0.slowStart = .seconds(4) }
        var later = service(now: 60_000) { $0.slowStart = .seconds(4) }
        later.keepStartupWindow(of: first)
        _ = later.probeSucceeded(0, now: 60_010)
        #expect(later.isUsable(0) && later.weightFactor(0, now: 60_010) == 0.1)
        // Without it, the new health's own first round would give full weight at once.
        var fresh = service(now: 60_000) { $0.slowStart = .seconds(4) }
        _ = fresh.probeSucceeded(0, now: 60_010)
        #expect(fresh.weightFactor(0, now: 60_010) == 1.0)
    }

    @Test func offMeansFullWeight() {
        var h = passive()
        h.failConnects(0, 3, now: 0)
        _ = h.tick(now: 10_000)
        _ = h.connectSucceeded(0, now: 10_000)
        #expect(h.weightFactor(0, now: 10_000) == 1.0)
        #expect(!h.isRamping(now: 10_000))
    }
}

@Suite struct HealthAdminAndStatusTests {
    @Test func adminStateOverridesUsability() {
        var h = passive { $0.slowStart = .seconds(10) }
        let e = h.setAdminState(0, .draining, now: 0)
        #expect(e?.transition == .adminState(.draining))
        #expect(e?.usable == false)
        #expect(e?.description == "server a draining")
        #expect(h.setAdminState(0, .draining, now: 0) == nil)
        #expect(!h.isUsable(0))
        #expect(h.admit(0, now: 0) == .refused)
        #expect(h.status(now: 0)[0].state == .draining)
        #expect(h.setAdminState(0, .enabled, now: 1)?.usable == true)
        #expect(h.weightFactor(0, now: 1) == 1.0)  // back from draining: no ramp
        _ = h.setAdminState(0, .disabled, now: 2)
        #expect(h.status(now: 2)[0].state == .disabled)
        _ = h.setAdminState(0, .enabled, now: 3)
        #expect(h.weightFactor(0, now: 3) == 0.1)  // back from disabled: ramp
    }

    @Test func statusListsEveryServer() {
        var h = service(["a", "b", "c", "d"]) { $0.checkInitial = .up }
        h.failConnects(0, 3, now: 0, random: 0)
        _ = h.probeFailed(1, now: 0, reason: "x"); _ = h.probeFailed(1, now: 0, reason: "x"); _ = h.probeFailed(1, now: 0, reason: "x")
        _ = h.setAdminState(2, .disabled, now: 0)
        _ = h.connectFailed(3, now: 0, reason: "x", random: 0)
        _ = h.probeSucceeded(3, now: 0)
        let st = h.status(now: 4_000)
        #expect(st.map(\.name) == ["a", "b", "c", "d"])
        #expect(st.map(\.state) == [.ejected, .down, .disabled, .up])
        #expect(st.map(\.usable) == [false, false, false, true])
        #expect(st[0].ejectionRemaining == .seconds(6))
        #expect(st[0].connectFailures == 3)
        #expect(st[1].probeFailures == 3 && st[1].probeSuccesses == 0)
        #expect(st[1].ejectionRemaining == nil)
        #expect(st[3].probeSuccesses == 1 && st[3].connectFailures == 1)
    }

    @Test func applyPushesFlagsAndFactorsIntoTheBalancer() {
        var h = service(["a", "b", "c"]) { $0.slowStart = .seconds(10) }
        var balancer = Balancer(algorithm: .roundRobin, servers: [BackendSpec(name: "a"), BackendSpec(name: "b"), BackendSpec(name: "c")])
        h.apply(to: &balancer, now: 0)
        #expect((0..<3).allSatisfy { !balancer.isUsable($0) })  // check_initial = down
        _ = h.probeSucceeded(1, now: 10)
        h.apply(to: &balancer, now: 10)
        #expect(balancer.isUsable(1) && !balancer.isUsable(0))
        #expect(balancer.weightFactor(1) == 1.0)
        _ = h.probeSucceeded(0, now: 60_000)  // first seen up long after start: ramps
        h.apply(to: &balancer, now: 62_500)
        #expect(balancer.isUsable(0))
        #expect(balancer.weightFactor(0) == 0.325)
        // Unknown indices are ignored.
        #expect(h.admit(7, now: 0) == .refused)
        #expect(h.connectFailed(-1, now: 0, reason: "x", random: 0) == nil)
        #expect(!h.isUsable(9))
    }
}

@Suite struct HealthAdoptionTests {
    /// A reload to `check = none` keeps a server's counters but not a down state no probe would
    /// ever lift.
    @Test func adoptingIntoCheckNoneBringsADownServerUp() {
        var probed = service(["a"]) { $0.checkInitial = .up }
        for t in 1...3 { _ = probed.probeFailed(0, now: UInt64(t), reason: "refused") }
        #expect(!probed.isUsable(0))
        var unprobed = passive(["a"])
        unprobed.adopt(probed.servers[0], at: 0)
        #expect(unprobed.isUsable(0))
        #expect(unprobed.servers[0].state == .up)

        // With probes still on, the down state is carried over.
        var stillProbed = service(["a"]) { $0.checkInitial = .up }
        stillProbed.adopt(probed.servers[0], at: 0)
        #expect(!stillProbed.isUsable(0))
    }
}
