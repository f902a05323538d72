import Testing
@testable import SwitchyardCore

/// Deterministic uniform values in [0, 1) for the health tests (SplitMix64).
struct HealthTestRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> Double {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        z ^= z >> 31
        return Double(z >> 11) / Double(UInt64(1) << 53)
    }
}

@Suite struct HealthSettingsTests {
    @Test func defaults() {
        let s = HealthSettings()
        #expect(s.check == .tcp)
        #expect(s.checkInterval == .seconds(2))
        #expect(s.checkTimeout == .seconds(1))
        #expect(s.checkPort == nil)
        #expect(s.checkSend == nil && s.checkExpect == nil)
        #expect(s.checkInitial == .down)
        #expect(s.rise == 2 && s.fall == 3)
        #expect(s.ejectAfter == 3)
        #expect(s.ejectTime == .seconds(10))
        #expect(s.ejectTimeMax == .seconds(300))
        #expect(s.maxEjectionPercent == 50)
        #expect(s.retries == 2)
        #expect(s.panic == true)
        #expect(s.onDown == .keep)
        #expect(s.slowStart == .zero)
        #expect(s.probePort(serverPort: 5432) == 5432)
        var t = s
        t.checkPort = 8008
        #expect(t.probePort(serverPort: 5432) == 8008)
        #expect(t != s)
    }

    @Test func rawValuesMatchTheINIWords() {
        #expect(HealthCheckKind(rawValue: "pgsql") == .pgsql)
        #expect(HealthCheckKind(rawValue: "none") == HealthCheckKind.none)
        #expect(InitialHealthState(rawValue: "up") == .up)
        #expect(OnDownPolicy(rawValue: "close") == .close)
        #expect(AdminState(rawValue: "draining") == .draining)
        #expect(ServerState.halfOpen.rawValue == "half-open")
    }

    // MARK: parseEscapedBytes

    @Test func escapesDecode() {
        #expect(parseEscapedBytes("PING\\r\\n") == Array("PING\r\n".utf8))
        #expect(parseEscapedBytes("a\\tb\\\\c") == [0x61, 0x09, 0x62, 0x5C, 0x63])
        #expect(parseEscapedBytes("\\x00\\xff\\xAb") == [0x00, 0xFF, 0xAB])
        #expect(parseEscapedBytes("") == [])
        #expect(parseEscapedBytes("plain") == Array("plain".utf8))
        #expect(parseEscapedBytes("é") == [0xC3, 0xA9])
    }

    @Test func badEscapesAreRejected() {
        #expect(parseEscapedBytes("\\q") == nil)
        #expect(parseEscapedBytes("abc\\") == nil)
        #expect(parseEscapedBytes("\\x4") == nil)
        #expect(parseEscapedBytes("\\x4g") == nil)
        #expect(parseEscapedBytes("\\xg4") == nil)
        #expect(parseEscapedBytes("\\0") == nil)
    }

    // MARK: Probe interval jitter

    @Test func probeDelayStaysWithinTenPercent() {
        var s = HealthSettings()
        s.checkInterval = .seconds(2)
        #expect(s.probeDelay(random: 0) == 1800)
        #expect(s.probeDelay(random: 0.5) == 2000)
        #expect(s.probeDelay(random: 0.999_999) == 2200)
        var rng = HealthTestRandom(seed: 7)
        for _ in 0..<1000 {
            let r = rng.next()
            let d = s.probeDelay(random: r)
            #expect(d >= 1800 && d <= 2200)
        }
        // Out-of-range randomness is clamped, not trusted.
        #expect(s.probeDelay(random: -3) == 1800)
        #expect(s.probeDelay(random: 7) == 2200)
        #expect(s.probeDelay(random: .nan) == 1800)
        s.checkInterval = .milliseconds(1)
        #expect(s.probeDelay(random: 0) >= 1)
    }

    // MARK: Retry backoff

    @Test func retryDelayIsFullJitterUnderTheExponentialCeiling() {
        let cap = Duration.seconds(2)
        // Ceiling 50, 100, 200, 400, 800, 1600, 2000 (capped), 2000 ...
        let ceilings: [UInt64] = [50, 100, 200, 400, 800, 1600, 2000, 2000]
        for (attempt, ceiling) in ceilings.enumerated() {
            #expect(retryDelay(attempt: attempt, cap: cap, random: 0) == 0)
            #expect(retryDelay(attempt: attempt, cap: cap, random: 0.999_999_9) == ceiling)
            #expect(retryDelay(attempt: attempt, cap: cap, random: 0.5) == (ceiling + 1) / 2)
        }
        var rng = HealthTestRandom(seed: 11)
        for attempt in 0..<10 {
            for _ in 0..<200 {
                let r = rng.next()
                #expect(retryDelay(attempt: attempt, cap: cap, random: r) <= ceilings[Swift.min(attempt, 7)])
            }
        }
        // Huge attempts do not overflow; negative acts as 0; a custom base.
        #expect(retryDelay(attempt: 500, cap: cap, random: 0.999_999_9) == 2000)
        #expect(retryDelay(attempt: -1, cap: cap, random: 0.999_999_9) == 50)
        #expect(retryDelay(attempt: 2, base: .milliseconds(10), cap: cap, random: 0.999_999_9) == 40)
    }

    // MARK: Ejection backoff

    @Test func ejectionTimeDoublesUpToTheCapWithBoundedJitter() {
        var s = HealthSettings()
        s.ejectTime = .seconds(10)
        s.ejectTimeMax = .seconds(300)
        let expected: [UInt64] = [10_000, 20_000, 40_000, 80_000, 160_000, 300_000, 300_000]
        for (step, base) in expected.enumerated() {
            #expect(ServerHealth.ejectionMillis(step: step, random: 0, settings: s) == base)
            let high = ServerHealth.ejectionMillis(step: step, random: 0.999_999, settings: s)
            #expect(high >= base && high <= Swift.min(300_000, base + base / 10))
            if base < 300_000 { #expect(high > base + base / 20) }  // the jitter is really there
        }
        #expect(ServerHealth.ejectionMillis(step: 10_000, random: 0.5, settings: s) == 300_000)
        // A cap below eject_time acts as eject_time.
        s.ejectTimeMax = .seconds(1)
        #expect(ServerHealth.ejectionMillis(step: 3, random: 0, settings: s) == 10_000)
    }

    @Test func durationsFormatForLogs() {
        #expect(healthFormatMillis(850) == "850ms")
        #expect(healthFormatMillis(10_000) == "10s")
        #expect(healthFormatMillis(10_420) == "10.4s")
        #expect(healthFormatMillis(300_000) == "5m")
        #expect(healthFormatMillis(150_000) == "2m30s")
    }
}
