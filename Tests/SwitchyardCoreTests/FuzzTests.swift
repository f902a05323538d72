// Deterministic, seeded fuzz and property tests of the pure core's input parsers: config files
// (INI + loader), value parsers, the admin HTTP request parser and router, and health probe replies.
//
// Every case draws from its own SplitMix64 generator seeded from (test seed, case number), and every
// failed expectation names both, so a failure reproduces by rerunning that one case (see `fuzzCases`).
// Overflow and out-of-range traps crash the test process: a crash here is a bug in the parser.

import Foundation
import Testing
@testable import SwitchyardCore

// MARK: - Deterministic randomness

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, good enough to drive a fuzzer.
private struct FuzzRandom: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    /// The generator of case `index` of a test seeded with `seed`.
    init(seed: UInt64, case index: Int) {
        state = seed ^ (UInt64(index) &* 0xD1B5_4A32_D192_ED03)
        _ = next()
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &self) }
    mutating func below(_ n: Int) -> Int { Int.random(in: 0..<n, using: &self) }
    mutating func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &self) < p }
    mutating func byte() -> UInt8 { UInt8.random(in: 0...255, using: &self) }
    mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in byte() } }
    mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }

    /// `count` elements of `alphabet`, concatenated.
    mutating func string(_ alphabet: [String], count: Int) -> String {
        (0..<count).map { _ in pick(alphabet) }.joined()
    }

    /// A UInt64 biased towards the edges: small values, powers of two and their neighbours, maxima.
    mutating func edgyUInt64() -> UInt64 {
        switch below(4) {
        case 0: return UInt64(below(1000))
        case 1:
            let p = UInt64(1) << UInt64(below(64))
            return p &+ UInt64(bitPattern: Int64(int(-2...2)))
        case 2: return UInt64.max &- UInt64(below(3))
        default: return next()
        }
    }
}

/// Runs `body` for cases 0..<count, each with its own generator; `label` is for messages.
private func fuzzCases(seed: UInt64, count: Int, _ body: (inout FuzzRandom, _ label: String) throws -> Void) rethrows {
    for index in 0..<count {
        var rng = FuzzRandom(seed: seed, case: index)
        try body(&rng, "seed 0x\(String(seed, radix: 16)) case \(index)")
    }
}

/// Bytes shown in a message: printable ASCII as is, the rest as \xHH, cut at `limit`.
private func show<C: Collection>(_ bytes: C, limit: Int = 300) -> String where C.Element == UInt8 {
    var s = ""
    for b in bytes.prefix(limit) {
        if b >= 0x20 && b < 0x7F && b != UInt8(ascii: "\\") { s.append(Character(Unicode.Scalar(b))) }
        else { s += "\\x" + String(b, radix: 16) }
    }
    return bytes.count > limit ? s + "...(\(bytes.count) bytes)" : s
}

private func show(_ s: String, limit: Int = 300) -> String { show(Array(s.utf8), limit: limit) }

private let lf = UInt8(ascii: "\n")

// MARK: - 1. Config files

/// The repository root, found from this file's path (Tests/SwitchyardCoreTests/FuzzTests.swift).
private let repositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// Every `*.ini` under conf/, as (path relative to the repository, bytes), sorted by path.
private func configFiles() throws -> [(path: String, bytes: [UInt8])] {
    let conf = repositoryRoot.appendingPathComponent("conf")
    guard let walker = FileManager.default.enumerator(atPath: conf.path) else { return [] }
    var files: [(String, [UInt8])] = []
    for case let relative as String in walker where relative.hasSuffix(".ini") {
        let data = try Data(contentsOf: conf.appendingPathComponent(relative))
        files.append(("conf/" + relative, Array(data)))
    }
    return files.sorted { $0.0 < $1.0 }
}

/// The lines of `text` as an editor numbers them, split independently of INIParser: at LF bytes
/// (a CR before the LF stays on the line), a leading BOM removed, a final newline ending the last line.
private func editorLines(_ text: String) -> [String] {
    var bytes = Array(text.utf8)[...]
    if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes = bytes.dropFirst(3) }
    // A CR not followed by LF ends a line too (old Mac files).
    for i in bytes.indices where bytes[i] == 0x0D && (i + 1 == bytes.endIndex || bytes[i + 1] != lf) { bytes[i] = lf }
    var lines = bytes.split(separator: lf, omittingEmptySubsequences: false)
    if lines.count > 1, lines.last?.isEmpty == true { lines.removeLast() }
    return lines.map { String(decoding: $0, as: UTF8.self) }
}

/// The line with surrounding whitespace (in the Character.isWhitespace sense) removed.
private func trimmed(_ line: String) -> Substring {
    let s = Substring(line)
    guard let start = s.firstIndex(where: { !$0.isWhitespace }), let end = s.lastIndex(where: { !$0.isWhitespace })
    else { return "" }
    return s[start...end]
}

/// A header or KEY = VALUE line: not blank, not a comment.
private func isMeaningful(_ line: String) -> Bool {
    guard let first = trimmed(line).first else { return false }
    return first != ";" && first != "#"
}

private let knownKeys: [String] = ConfigSchema.global.map(\.key) + ConfigSchema.service.map(\.key)

private let interestingValues: [String] = [
    "", "0", "1", "-1", "+1", "01", "1.5", "0x10", "256", "257", "1000", "1001", "65535", "65536",
    "9223372036854775807", "9223372036854775808", "-9223372036854775808", "99999999999999999999",
    "18446744073709551616", "99999999999999999999s", "99999999999999999999us", "9223372036854775807us",
    "9223372036854775808us", "9223372036854775ms", "9223372036854776ms", "9223372036854s", "9223372036855s",
    "153722867m", "153722867280912m", "153722867280913m", "2562047788h", "2562047788015h", "2562047788016h",
    "2562047788h54s775ms807us", "2562047788h54s775ms808us", "153722867280m", "153722867281m",
    "1h30m", "30s1m", "1s1s", "250ms", "10ms", "10001us", "10000us", "50us", "0s", "0us", "-5s", "5S", "5 s", "1.5s",
    "auto", "on", "off", "yes", "no", "ON", "True", "2", "least_conn", "ip_hash", "round_robin", "random",
    "tcp", "none", "redis", "pgsql", "mysql", "up", "down", "keep", "close", "debug", "json", "text",
    "0.0.0.0:0", "0.0.0.0:6432", "[::]:6432", "[::1]:80", "[::1]", "[::1:80", "::1:80", "127.0.0.1:65536",
    "127.0.0.1:9000", "127.0.0.1:99999999999999999999", "[fe80::1%eth0]:80", "[1:2:3:4:5:6:7:8:9]:1",
    "[::ffff:1.2.3.4]:5", "01.2.3.4:5", "256.1.1.1:1", "db.local:5432", "db.local.:5432", "-bad-:1", ":80",
    "a b", "pg9 10.0.0.9:5432 weight=256", "pg9 10.0.0.9:5432 weight=257", "x 1.1.1.1:1 weight=0",
    "x 1.1.1.1:1 weight=99999999999999999999", "x 1.1.1.1:1 weight=-1", "x 1.1.1.1:0", "x 1.1.1.1:1 backup backup",
    "x 1.1.1.1:1 backup weight=3", "x 1.1.1.1:1 weight=2 weight=3", "x", "x:1", "x 1.1.1.1:1 bogus",
    "\\x00\\xff\\r\\n", "PING\\r\\n", "+PONG", "\\x0", "\\", "\\q", "${A}", "${UNSET}", "${A:-5s}", "${UNSET:-7}",
    "${", "${1BAD}", "${A", "$$", "$", "a;b", "a ;b", "#", "é", "\u{0}", "\u{FEFF}",
]

private let sectionHeaders: [String] = [
    "[global]", "[service x]", "[service pg]", "[service redis]", "[service  spaced ]", "[service]", "[service a b]",
    "[service bad/name]", "[service é]", "[global x]", "[other]", "[", "[]", "[ ]", "[service", "[[service x]]",
    "[service x] ; comment", "[service x] junk", "[service ${A}]", "[global]]",
]

/// A random value: from the pool above, or generated numbers, durations and junk.
private func randomValue(_ rng: inout FuzzRandom) -> String {
    switch rng.below(6) {
    case 0, 1, 2: return rng.pick(interestingValues)
    case 3: return (rng.chance(0.3) ? "-" : "") + rng.string((0...9).map(String.init), count: rng.int(1...40))
    case 4:
        return (0..<rng.int(1...3)).map { _ in
            String(rng.edgyUInt64() >> UInt64(rng.below(64))) + rng.pick(["us", "ms", "s", "m", "h", "", "x"])
        }.joined()
    default:
        return rng.string(["a", "Z", "0", "9", " ", "\t", ":", "=", "[", "]", ";", "#", "$", "{", "}", "\\", ".", "-", "_", "é", "\u{0}"],
                          count: rng.int(0...30))
    }
}

private func randomKey(_ rng: inout FuzzRandom) -> String {
    switch rng.below(5) {
    case 0, 1, 2: return rng.pick(knownKeys)
    case 3:
        // A near miss: one letter changed, dropped or doubled.
        var key = Array(rng.pick(knownKeys).utf8)
        let i = rng.below(key.count)
        switch rng.below(3) {
        case 0: key[i] = UInt8(ascii: "a") + UInt8(rng.below(26))
        case 1: key.remove(at: i)
        default: key.insert(key[i], at: i)
        }
        return String(decoding: key, as: UTF8.self)
    default:
        return rng.string(["k", "E", "y", "_", "0", " ", "[", "é", "\u{0}", ";"], count: rng.int(1...12))
    }
}

/// Indices of lines that look like `KEY = VALUE` (not blank, not a comment or a header).
private func entryIndices(_ lines: [[UInt8]]) -> [Int] {
    lines.indices.filter { i in
        guard let first = lines[i].first(where: { $0 != 0x20 && $0 != 0x09 }) else { return false }
        return first != UInt8(ascii: ";") && first != UInt8(ascii: "#") && first != UInt8(ascii: "[")
            && lines[i].contains(UInt8(ascii: "="))
    }
}

/// One to four random edits of a config file, at line level and byte level.
private func mutateConfig(_ original: [UInt8], _ rng: inout FuzzRandom) -> [UInt8] {
    var lines = original.split(separator: lf, omittingEmptySubsequences: false).map { Array($0) }
    func join() -> [UInt8] { Array(lines.joined(separator: [lf])) }
    func resplit(_ bytes: [UInt8]) { lines = bytes.split(separator: lf, omittingEmptySubsequences: false).map { Array($0) } }
    func randomLine(_ rng: inout FuzzRandom) -> Int { rng.below(lines.count) }

    for _ in 0..<rng.int(1...4) {
        let mutation = rng.below(16)
        let entries = (3...5).contains(mutation) ? entryIndices(lines) : []
        switch mutation {
        case 0: // delete a line
            if lines.count > 1 { lines.remove(at: randomLine(&rng)) }
        case 1: // duplicate a line somewhere
            let line = lines[randomLine(&rng)]
            lines.insert(line, at: rng.int(0...lines.count))
        case 2: // swap two lines
            lines.swapAt(randomLine(&rng), randomLine(&rng))
        case 3: // new value for an entry
            guard let i = entries.isEmpty ? nil : rng.pick(entries), let eq = lines[i].firstIndex(of: UInt8(ascii: "=")) else { break }
            lines[i] = Array(lines[i][...eq]) + Array((" " + randomValue(&rng)).utf8)
        case 4: // new key for an entry
            guard let i = entries.isEmpty ? nil : rng.pick(entries), let eq = lines[i].firstIndex(of: UInt8(ascii: "=")) else { break }
            lines[i] = Array((randomKey(&rng) + " ").utf8) + Array(lines[i][eq...])
        case 5: // remove the "=" of an entry
            guard let i = entries.isEmpty ? nil : rng.pick(entries), let eq = lines[i].firstIndex(of: UInt8(ascii: "=")) else { break }
            lines[i].remove(at: eq)
        case 6: // a section header
            lines.insert(Array(rng.pick(sectionHeaders).utf8), at: rng.int(0...lines.count))
        case 7: // a new entry
            lines.insert(Array("\(randomKey(&rng)) = \(randomValue(&rng))".utf8), at: rng.int(0...lines.count))
        case 8: // a very long line
            let n = rng.chance(0.05) ? rng.int(20_000...40_000) : rng.int(300...3_000)
            let long: String
            switch rng.below(4) {
            case 0: long = "server = " + String(repeating: "a", count: n) + " 10.0.0.1:1"
            case 1: long = "connect_timeout = " + String(repeating: "9", count: n) + "s"
            case 2: long = "[service " + String(repeating: "b", count: n) + "]"
            default: long = String(repeating: "x", count: n)
            }
            lines.insert(Array(long.utf8), at: rng.int(0...lines.count))
        case 9: // truncate at a random byte
            let bytes = join()
            resplit(Array(bytes.prefix(rng.int(0...bytes.count))))
        case 10: // insert random bytes, NUL and invalid UTF-8 included
            var bytes = join()
            let junk = (0..<rng.int(1...8)).map { _ in
                rng.pick([0x00, 0xFF, 0xC0, 0x80, 0xED, 0x0D, 0x0A, 0x5B, 0x5D, 0x3D, 0x23, 0x3B, 0x24, 0x7B, 0x7D, 0x20, rng.byte()] as [UInt8])
            }
            bytes.insert(contentsOf: junk, at: rng.int(0...bytes.count))
            resplit(bytes)
        case 11: // overwrite one byte
            var bytes = join()
            if !bytes.isEmpty { bytes[rng.below(bytes.count)] = rng.byte() }
            resplit(bytes)
        case 12: // line endings and BOM
            switch rng.below(3) {
            case 0: lines = lines.map { $0 + [0x0D] }
            case 1: lines[0] = [0xEF, 0xBB, 0xBF] + lines[0]
            default: let i = randomLine(&rng); lines[i].insert(0x0D, at: rng.int(0...lines[i].count))
            }
        case 13: // a header without its "]"
            let headers = lines.indices.filter { lines[$0].first == UInt8(ascii: "[") }
            guard let i = headers.isEmpty ? nil : rng.pick(headers) else { break }
            lines[i].removeAll { $0 == UInt8(ascii: "]") }
        case 14: // a number somewhere becomes an edge value
            let withDigits = lines.indices.filter { lines[$0].contains { $0 >= 0x30 && $0 <= 0x39 } }
            guard let i = withDigits.isEmpty ? nil : rng.pick(withDigits),
                  let start = lines[i].firstIndex(where: { $0 >= 0x30 && $0 <= 0x39 }) else { break }
            let end = lines[i][start...].firstIndex { !($0 >= 0x30 && $0 <= 0x39) } ?? lines[i].endIndex
            let edge = rng.pick(["0", "-1", "65535", "65536", "9223372036854775807", "9223372036854775808",
                                 "99999999999999999999", "18446744073709551615", String(rng.edgyUInt64())])
            lines[i].replaceSubrange(start..<end, with: Array(edge.utf8))
        default: // a new server line with random options
            let options = (0..<rng.int(0...3)).map { _ in
                rng.pick(["backup", "weight=1", "weight=256", "weight=257", "weight=0", "weight=", "weight=x",
                          "weight=9223372036854775808", "weight=\(rng.int(-5...300))", "junk"])
            }
            let name = rng.pick(["s\(rng.below(5))", "pg1", "redis1", "bad/name", "é", "a.b-c_d"])
            let address = rng.pick(["10.0.0.\(rng.below(300)):\(rng.int(0...70000))", "[::1]:\(rng.below(70000))", "h.example:1", "nohost"])
            lines.insert(Array((["server =", name, address] + options).joined(separator: " ").utf8), at: rng.int(0...lines.count))
        }
        if lines.isEmpty { lines = [[]] }
    }
    return join()
}

/// Where a config case failed, rendered only when a message needs it.
private struct Where: CustomStringConvertible {
    let label: String, file: String, text: String
    var description: String { "\(label) (\(file)): \(show(text, limit: 2000))" }
}

/// Every promise ConfigLoader makes about a config it returns (see ConfigLoader.swift, ConfigModel.swift).
private func checkInvariants(_ config: SwitchyardConfig, file: String, lines: [String], _ label: some CustomStringConvertible) {
    func validName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b | 0x20 >= 0x61 && b | 0x20 <= 0x7A) || b == 0x2D || b == 0x5F || b == 0x2E
        }
    }
    func lineText(_ n: Int) -> Substring? { (1...lines.count).contains(n) ? trimmed(lines[n - 1]) : nil }
    func reparses(_ hp: HostPort) -> Bool { parseHostPort(hp.description) == hp }

    #expect(config.file == file, "\(label)")
    #expect(!config.services.isEmpty, "\(label)")
    let g = config.global
    #expect(g.workers.map { (1...SwitchyardConfig.maxWorkers).contains($0) } ?? true, "\(label): workers \(String(describing: g.workers))")
    #expect((1...SwitchyardConfig.maxConnectionsLimit).contains(g.maxConnections), "\(label)")
    #expect(g.adminToken.map { !$0.isEmpty } ?? true, "\(label)")
    #expect(g.drainTimeout >= .zero, "\(label)")
    #expect(g.resolveInterval == .zero || g.resolveInterval >= .milliseconds(100), "\(label): resolve_interval \(g.resolveInterval)")
    #expect(g.busyPoll >= .zero && g.busyPoll <= .milliseconds(10), "\(label): busy_poll \(g.busyPoll)")
    if let admin = g.admin { #expect(reparses(admin), "\(label): admin \(admin)") }

    var names = Set<String>()
    var bound: [HostPort] = g.admin.map { [$0] } ?? []
    for service in config.services {
        let s = service.name
        #expect(validName(s) && names.insert(s).inserted, "\(label): service name \(show(s))")
        #expect(lineText(service.line).map { $0.hasPrefix("[") } == true, "\(label): service \(s) line \(service.line)")
        #expect(!service.listen.isEmpty, "\(label): service \(s) without listen")
        #expect(!service.servers.isEmpty, "\(label): service \(s) without server")
        #expect(service.connectTimeout > .zero, "\(label)")
        #expect(service.idleTimeout >= .zero, "\(label)")
        for address in service.listen {
            #expect(reparses(address), "\(label): listen \(address)")
            for other in bound {
                #expect(!listenAddressesConflict(address, other), "\(label): listen \(address) conflicts with \(other)")
            }
            bound.append(address)
        }
        var serverNames = Set<String>()
        for server in service.servers {
            #expect(validName(server.name) && serverNames.insert(server.name).inserted, "\(label): server name \(show(server.name))")
            #expect((1...256).contains(server.weight), "\(label): weight \(server.weight)")
            #expect(server.address.port != 0, "\(label): server port 0")
            #expect(reparses(server.address), "\(label): server address \(server.address)")
            #expect(lineText(server.line).map { $0.hasPrefix("server") } == true, "\(label): server \(server.name) line \(server.line)")
        }
        let h = service.health
        #expect(h.checkInterval >= .milliseconds(10), "\(label): check_interval \(h.checkInterval)")
        #expect(h.checkTimeout >= .milliseconds(1) && h.ejectTime >= .milliseconds(1) && h.ejectTimeMax >= .milliseconds(1), "\(label)")
        #expect(service.connectTimeout >= .milliseconds(1), "\(label)")
        #expect(h.slowStart >= .zero, "\(label)")
        #expect(h.rise > 0 && h.fall > 0, "\(label)")
        #expect((0...1000).contains(h.ejectAfter) && (0...100).contains(h.maxEjectionPercent) && (0...10).contains(h.retries), "\(label)")
        #expect(h.checkPort.map { $0 >= 1 } ?? true, "\(label)")
        if h.check != .tcp { #expect(h.checkSend == nil && h.checkExpect == nil, "\(label): check_send/expect with check = \(h.check)") }
        #expect((HealthProbe(settings: h) == nil) == (h.check == .none), "\(label)")
    }
}

/// Microseconds of a duration the config accepts (whole microseconds, not negative).
private func micros(_ d: Duration) -> Int64 {
    let (seconds, attoseconds) = d.components
    return seconds * 1_000_000 + attoseconds / 1_000_000_000_000
}

/// The config notation of a duration, largest unit first: `2h5m`, `1s250ms`, `0`.
private func formatDuration(_ d: Duration) -> String {
    var rest = micros(d)
    if rest == 0 { return "0" }
    var out = ""
    for (unit, size) in [("h", Int64(3_600_000_000)), ("m", 60_000_000), ("s", 1_000_000), ("ms", 1000), ("us", 1)] where rest >= size {
        out += "\(rest / size)\(unit)"
        rest %= size
    }
    return out
}

/// Writes `config` back as INI (with `admin_token` left out when no line can carry it), and the
/// config that text must load to. Line numbers are not compared.
private func render(_ config: SwitchyardConfig) -> (text: String, expected: SwitchyardConfig) {
    var expected = config
    let g = config.global
    var out = ["[global]",
               "workers = \(g.workers.map(String.init) ?? "auto")",
               "admin = \(g.admin?.description ?? "")",
               "log_level = \(g.logLevel.rawValue)", "log_format = \(g.logFormat.rawValue)",
               "max_connections = \(g.maxConnections)",
               "drain_timeout = \(formatDuration(g.drainTimeout))", "busy_poll = \(formatDuration(g.busyPoll))",
               "resolve_interval = \(formatDuration(g.resolveInterval))"]
    if let token = g.adminToken {
        var previousIsSpace = true
        let commentFree = token.allSatisfy { c in
            defer { previousIsSpace = c.isWhitespace }
            return !((c == ";" || c == "#") && previousIsSpace)
        }
        if commentFree, !token.contains("$"), trimmed(token) == token {
            out.append("admin_token = \(token)")
        } else {
            expected.global.adminToken = nil
        }
    }
    func escaped(_ bytes: [UInt8]) -> String { bytes.map { "\\x" + String($0, radix: 16) }.joined() }
    for (n, s) in config.services.enumerated() {
        let h = s.health
        out.append("[service \(s.name)]")
        out += s.listen.map { "listen = \($0)" }
        out.append("balance = \(s.balance.rawValue)")
        out += s.servers.map { "server = \($0.name) \($0.address) weight=\($0.weight)\($0.backup ? " backup" : "")" }
        out += ["connect_timeout = \(formatDuration(s.connectTimeout))", "idle_timeout = \(formatDuration(s.idleTimeout))",
                "splice = \(s.splice.rawValue)", "server_keepalive = \(s.serverKeepAlive ? "on" : "off")",
                "check = \(h.check.rawValue)", "check_interval = \(formatDuration(h.checkInterval))",
                "check_timeout = \(formatDuration(h.checkTimeout))", "check_port = \(h.checkPort.map(String.init) ?? "")",
                "check_initial = \(h.checkInitial.rawValue)", "rise = \(h.rise)", "fall = \(h.fall)",
                "eject_after = \(h.ejectAfter)", "eject_time = \(formatDuration(h.ejectTime))",
                "max_ejection_percent = \(h.maxEjectionPercent)", "retries = \(h.retries)", "panic = \(h.panic ? "yes" : "no")",
                "on_down = \(h.onDown.rawValue)", "slow_start = \(formatDuration(h.slowStart))"]
        // Left at its default it may be below eject_time, which the loader refuses only when written.
        if h.ejectTimeMax != HealthSettings().ejectTimeMax { out.append("eject_time_max = \(formatDuration(h.ejectTimeMax))") }
        if let send = h.checkSend { out.append("check_send = \(escaped(send))") }
        if let expect = h.checkExpect { out.append("check_expect = \(escaped(expect))") }
        expected.services[n].line = 0
        for i in expected.services[n].servers.indices { expected.services[n].servers[i].line = 0 }
    }
    return (out.joined(separator: "\n") + "\n", expected)
}

private func withoutLines(_ config: SwitchyardConfig) -> SwitchyardConfig {
    var c = config
    for n in c.services.indices {
        c.services[n].line = 0
        for i in c.services[n].servers.indices { c.services[n].servers[i].line = 0 }
    }
    return c
}

private let fuzzEnvironment: [String: String] = [
    "A": "5s", "EMPTY": "", "ADMIN_TOKEN": "s3cret #x", "BACKEND_1": "backend.internal:6543", "LISTEN_PORT": "65535",
    "CHECK": "mysql", "DRAIN_TIMEOUT": "9223372036854775807us", "PG_PRIMARY": "::1", "MAX_CONNECTIONS": "100000000",
]

// MARK: - 2. Value parsers: independent references

/// Microseconds of a duration by the documented grammar, in 128-bit arithmetic; nil if bad or beyond Int64.
private func referenceDuration(_ text: String) -> Int64? {
    let b = Array(text.utf8)
    let isDigit = { (c: UInt8) in c >= 0x30 && c <= 0x39 }
    if b.isEmpty { return nil }
    if b.allSatisfy(isDigit) { return b.allSatisfy { $0 == 0x30 } ? 0 : nil }
    var total: Int128 = 0
    var i = 0
    var lastUnit = Int128.max
    while i < b.count {
        let digitsStart = i
        while i < b.count, isDigit(b[i]) { i += 1 }
        guard i > digitsStart else { return nil }
        let significant = b[digitsStart..<i].drop { $0 == 0x30 }
        guard significant.count <= 19 else { return nil }
        let number = significant.reduce(Int128(0)) { $0 * 10 + Int128($1 - 0x30) }
        guard number <= Int128(Int64.max) else { return nil }
        let unitStart = i
        while i < b.count, b[i] >= 0x61, b[i] <= 0x7A { i += 1 }
        let size: Int128
        switch String(decoding: b[unitStart..<i], as: UTF8.self) {
        case "us": size = 1
        case "ms": size = 1000
        case "s": size = 1_000_000
        case "m": size = 60_000_000
        case "h": size = 3_600_000_000
        default: return nil
        }
        guard size < lastUnit else { return nil }
        lastUnit = size
        guard number * size <= Int128(Int64.max) else { return nil }
        total += number * size
        guard total <= Int128(Int64.max) else { return nil }
    }
    return Int64(total)
}

/// A byte count by the documented grammar, in 128-bit arithmetic; nil if bad or beyond Int.
private func referenceSize(_ text: String) -> Int? {
    let b = Array(text.utf8)
    var i = 0
    while i < b.count, b[i] >= 0x30, b[i] <= 0x39 { i += 1 }
    guard i > 0 else { return nil }
    let significant = b[..<i].drop { $0 == 0x30 }
    guard significant.count <= 19 else { return nil }
    let number = significant.reduce(Int128(0)) { $0 * 10 + Int128($1 - 0x30) }
    let suffix = String(decoding: b[i...].map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 }, as: UTF8.self)
    let multiplier: Int128
    switch suffix {
    case "", "b": multiplier = 1
    case "k", "kb", "kib": multiplier = 1 << 10
    case "m", "mb", "mib": multiplier = 1 << 20
    case "g", "gb", "gib": multiplier = 1 << 30
    default: return nil
    }
    guard number <= Int128(Int64.max), number * multiplier <= Int128(Int.max) else { return nil }
    return Int(number * multiplier)
}

/// `parseEscapedBytes` by its documentation; nil on a bad escape.
private func referenceUnescape(_ text: String) -> [UInt8]? {
    let b = Array(text.utf8)
    func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x61...0x66: return c - 0x61 + 10
        case 0x41...0x46: return c - 0x41 + 10
        default: return nil
        }
    }
    var out: [UInt8] = []
    var i = 0
    while i < b.count {
        if b[i] != 0x5C { out.append(b[i]); i += 1; continue }
        guard i + 1 < b.count else { return nil }
        switch b[i + 1] {
        case UInt8(ascii: "r"): out.append(13)
        case UInt8(ascii: "n"): out.append(10)
        case UInt8(ascii: "t"): out.append(9)
        case 0x5C: out.append(0x5C)
        case UInt8(ascii: "x"):
            guard i + 3 < b.count, let hi = hex(b[i + 2]), let lo = hex(b[i + 3]) else { return nil }
            out.append(hi * 16 + lo)
            i += 2
        default: return nil
        }
        i += 2
    }
    return out
}

/// Random case for ASCII letters.
private func randomCase(_ s: String, _ rng: inout FuzzRandom) -> String {
    String(decoding: s.utf8.map { c in
        let letter = (c | 0x20) >= 0x61 && (c | 0x20) <= 0x7A
        return letter && rng.chance(0.5) ? c ^ 0x20 : c
    }, as: UTF8.self)
}

// MARK: - 3. Admin HTTP: generated requests

private let tokenChars = Array("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)

private func randomToken(_ rng: inout FuzzRandom, _ length: ClosedRange<Int>) -> String {
    String(decoding: (0..<rng.int(length)).map { _ in rng.pick(tokenChars) }, as: UTF8.self)
}

/// Visible ASCII except `#` and `?` (which would end the path or make it a fragment).
private let pathChars = Array((0x21...0x7E).filter { $0 != 0x23 && $0 != 0x3F }.map(UInt8.init))

private struct GeneratedRequest {
    var bytes: [UInt8]
    /// Bytes that belong to the request; anything after them is trailing junk.
    var requestLength: Int
    var expected: HTTPRequest
}

/// A valid request (head well under 8 KiB, body under 64 KiB) with what the parser must make of it.
private func generateRequest(_ rng: inout FuzzRandom) -> GeneratedRequest {
    func eol(_ rng: inout FuzzRandom) -> [UInt8] { rng.chance(0.8) ? [13, 10] : [10] }
    let method = rng.chance(0.5) ? rng.pick(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]) : randomToken(&rng, 1...10)

    let target: String
    let path: String
    var query: String?
    if rng.chance(0.05) {
        (target, path) = ("*", "*")
    } else {
        var p = "/" + String(decoding: (0..<rng.int(0...40)).map { _ in rng.pick(pathChars) }, as: UTF8.self)
        if rng.chance(0.3) { p = "/" + rng.pick(["metrics", "status", "healthz", "services/pg/servers/a/drain", "reload"]) }
        if rng.chance(0.4) {
            query = String(decoding: (0..<rng.int(0...20)).map { _ in rng.pick(pathChars + [UInt8(ascii: "?")]) }, as: UTF8.self)
        }
        if rng.chance(0.2) {
            // absolute-form: the authority has neither "/" nor "?".
            let scheme = rng.pick(["http", "HTTPS", "h2c", "x+y-z.w"])
            let authority = String(decoding: (0..<rng.int(0...15)).map { _ in rng.pick(pathChars.filter { $0 != 0x2F }) }, as: UTF8.self)
            let explicitPath = rng.chance(0.7)
            if !explicitPath { p = "/" }
            target = scheme + "://" + authority + (explicitPath ? p : "") + (query.map { "?" + $0 } ?? "")
        } else {
            target = p + (query.map { "?" + $0 } ?? "")
        }
        path = p
    }
    let version = rng.chance(0.7) ? HTTPVersion.http1_1 : HTTPVersion(major: 1, minor: rng.below(10))

    var head: [UInt8] = []
    for _ in 0..<(rng.chance(0.1) ? rng.int(1...3) : 0) { head += eol(&rng) }  // empty lines before the request line
    head += Array("\(method) \(target) \(version)".utf8) + eol(&rng)

    var headers = HTTPHeaders()
    var names: [String] = (0..<rng.int(0...6)).map { _ in randomToken(&rng, 1...16) }
        .filter { !["host", "content-length", "transfer-encoding"].contains($0.lowercased()) }
    if rng.chance(0.5) { names.insert(randomCase("Host", &rng), at: rng.int(0...names.count)) }
    let body = rng.chance(0.3) ? rng.bytes(rng.int(0...300)) : []
    if !body.isEmpty || rng.chance(0.1) { names.insert(randomCase("Content-Length", &rng), at: rng.int(0...names.count)) }
    for name in names {
        var valueBytes: [UInt8]
        if name.lowercased() == "content-length" {
            valueBytes = Array((rng.chance(0.2) ? "\(body.count), \(body.count)" : String(body.count)).utf8)
        } else {
            // Visible ASCII, inner spaces and tabs, and bytes >= 0x80 (obs-text, any UTF-8 validity).
            valueBytes = (0..<rng.int(0...30)).map { _ in
                rng.chance(0.1) ? rng.pick([0x20, 0x09, 0x80, 0xC3, 0xA9, 0xFF] as [UInt8]) : UInt8(rng.int(0x21...0x7E))
            }
            while let f = valueBytes.first, f == 0x20 || f == 0x09 { valueBytes.removeFirst() }
            while let l = valueBytes.last, l == 0x20 || l == 0x09 { valueBytes.removeLast() }
        }
        headers.add(name, String(decoding: valueBytes, as: UTF8.self))
        let ows = { (rng: inout FuzzRandom) in (0..<rng.int(0...2)).map { _ in rng.pick([0x20, 0x09] as [UInt8]) } }
        head += Array(name.utf8) + [UInt8(ascii: ":")] + ows(&rng) + valueBytes + ows(&rng) + eol(&rng)
    }
    head += eol(&rng)
    let request = head + body
    let junk = rng.chance(0.3) ? rng.bytes(rng.int(1...20)) : []
    let expected = HTTPRequest(method: method, target: target, path: path, query: query, version: version,
                               headers: headers, body: body)
    return GeneratedRequest(bytes: request + junk, requestLength: request.count, expected: expected)
}

/// Cut points for feeding `count` bytes in pieces: sorted, distinct, inside 1..<count.
private func randomCuts(_ count: Int, _ rng: inout FuzzRandom) -> [Int] {
    guard count > 1 else { return [] }
    if count <= 2000 && rng.chance(0.1) { return Array(1..<count) }  // one byte at a time
    return Set((0..<rng.int(0...8)).map { _ in rng.int(1...(count - 1)) }).sorted()
}

/// Feeds `bytes` in the pieces given by `cuts`; every intermediate result and `ignoredByteCount`.
private func feedInPieces(_ parser: inout HTTPRequestParser, _ bytes: [UInt8], cuts: [Int]) -> [(fed: Int, result: ParseResult, ignored: Int)] {
    var results: [(Int, ParseResult, Int)] = []
    var start = 0
    for end in cuts + [bytes.count] {
        let result = parser.feed(Array(bytes[start..<end]))
        results.append((end, result, parser.ignoredByteCount))
        start = end
    }
    return results
}

private func outcomeName(_ r: ParseResult) -> String {
    switch r {
    case .needMore: return "needMore"
    case .complete: return "complete"
    case .error(let s, _): return "error \(s.code)"
    }
}

private func status(_ r: ParseResult) -> Int? {
    if case .error(let s, _) = r { return s.code }
    return nil
}

/// Percent-encodes `bytes`: unreserved characters as themselves (or encoded, at random), the rest `%XX`.
private func percentEncode(_ bytes: [UInt8], _ rng: inout FuzzRandom) -> String {
    var out = ""
    for b in bytes {
        let plain = (b | 0x20 >= 0x61 && b | 0x20 <= 0x7A) || (b >= 0x30 && b <= 0x39) || b == 0x2D || b == 0x5F || b == 0x2E || b == 0x7E
        if plain && rng.chance(0.8) {
            out.append(Character(Unicode.Scalar(b)))
        } else {
            let hex = String(b, radix: 16, uppercase: rng.chance(0.5))
            out += "%" + (hex.count == 1 ? "0" + hex : hex)
        }
    }
    return out
}

/// Input for the admin parser: random bytes, something request-shaped, or (with `garbageLine`) a
/// first line that cannot be a request line because it starts with a byte no method has.
private func randomAdminInput(_ rng: inout FuzzRandom, pieces: [[UInt8]]) -> (bytes: [UInt8], garbageLine: Bool) {
    func eol(_ rng: inout FuzzRandom) -> String { rng.pick(["\r\n", "\r\n", "\n", "\r", ""]) }
    switch rng.below(4) {
    case 0:
        return (rng.bytes(rng.int(0...700)), false)
    case 1: // a valid request, then a few random edits
        var bytes = generateRequest(&rng).bytes
        for _ in 0..<(rng.chance(0.3) ? 0 : rng.int(1...3)) {
            let at = rng.int(0...bytes.count)
            switch rng.below(4) {
            case 0: bytes.insert(contentsOf: rng.chance(0.3) ? [rng.byte()] : rng.pick(pieces), at: at)
            case 1: if at < bytes.count { bytes.remove(at: at) }
            case 2: if at < bytes.count { bytes[at] = rng.byte() }
            default: bytes = Array(bytes.prefix(at))
            }
        }
        return (bytes, false)
    case 2: // a request line, header lines and a body, each possibly wrong
        var text = rng.pick(["GET", "POST", "G T", ""]) + " " + rng.pick(["/", "/metrics", "*", "http://h/x", "/#", ""]) + " "
        text += rng.pick(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1"]) + eol(&rng)
        for _ in 0..<rng.int(0...4) {
            text += rng.pick(["Host", "Content-Length", "Transfer-Encoding", "X", " X", ""]) + rng.pick([":", ": ", ""])
            text += rng.pick(["0", "5", "300", "99999999999999999999", "chunked", "a,b", "\u{0}", "é", ""]) + eol(&rng)
        }
        var bytes = Array((text + eol(&rng)).utf8) + rng.bytes(rng.int(0...400))
        if rng.chance(0.3) {
            let insert = rng.chance(0.3) ? [rng.byte()] : rng.pick(pieces)
            bytes.insert(contentsOf: insert, at: rng.int(0...bytes.count))
        }
        return (bytes, false)
    default:
        let first = rng.pick([0x20, 0x00, 0x40, 0x80, 0xFF, 0x7F, 0x28] as [UInt8])
        let rest = rng.bytes(rng.int(0...200)).filter { $0 != 0x0A }
        return ([first] + rest + [0x0A] + rng.bytes(rng.int(0...50)), true)
    }
}

// MARK: - 4. Health probes

private func verdictKind(_ v: ProbeVerdict) -> String {
    switch v {
    case .needMore: return "needMore"
    case .pass: return "pass"
    case .fail: return "fail"
    }
}

private func probe(_ check: HealthCheckKind, expect: [UInt8]? = nil, send: [UInt8]? = nil, user: String? = nil) -> HealthProbe {
    var s = HealthSettings()
    s.check = check
    s.checkExpect = expect
    s.checkSend = send
    s.checkUser = user
    return HealthProbe(settings: s)!
}

/// Whether a reply is one the protocol calls healthy (what `.pass` must mean), judged on its first bytes.
private func isHealthyReply(_ kind: HealthProbe.Kind, _ bytes: [UInt8]) -> Bool {
    switch kind {
    case .connect: return true
    case .custom(let expect): return bytes.starts(with: expect)
    case .redis: return bytes.starts(with: Array("+PONG\r\n".utf8))
    case .pgsql: return bytes.first == UInt8(ascii: "S") || bytes.first == UInt8(ascii: "N")
    case .pgsqlLogin:
        // Whole messages from the start, the first an authentication request: a request for a
        // password (code ≠ 0) passes, as does ReadyForQuery after AuthenticationOk; an
        // ErrorResponse or a malformed authentication message fails. At the reply limit,
        // AuthenticationOk alone passes.
        let limited = Array(bytes.prefix(1024))
        var i = 0
        var authenticated = false
        func int32(_ at: Int) -> Int { Int(limited[at]) << 24 | Int(limited[at + 1]) << 16 | Int(limited[at + 2]) << 8 | Int(limited[at + 3]) }
        while i + 5 <= limited.count {
            let length = int32(i + 1)
            guard length >= 4, i + 1 + length <= limited.count else { break }
            let type = limited[i]
            if i == 0 && type != UInt8(ascii: "R") { return false }
            if type == UInt8(ascii: "R") {
                if length < 8 { return false }
                if int32(i + 5) != 0 { return true }
                authenticated = true
            } else if type == UInt8(ascii: "Z") {
                return true
            } else if type == UInt8(ascii: "E") {
                return false
            }
            i += 1 + length
        }
        return authenticated && bytes.count >= 1024
    case .mysql:
        // Initial handshake packet: non-empty payload, sequence id 0, protocol version 10.
        return bytes.count >= 5 && (Int(bytes[0]) | Int(bytes[1]) << 8 | Int(bytes[2]) << 16) > 0 && bytes[3] == 0 && bytes[4] == 10
    }
}

private func mysqlPacket(_ payload: [UInt8], sequence: UInt8 = 0) -> [UInt8] {
    let n = payload.count
    return [UInt8(n & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n >> 16), sequence] + payload
}

/// A random reply, often shaped like (or almost like) a real one.
private func randomReply(_ rng: inout FuzzRandom) -> [UInt8] {
    let prefixes: [[UInt8]] = [
        [], Array("+".utf8), Array("+PONG".utf8), Array("+PON".utf8), Array("+pong".utf8), Array("-".utf8), Array("-ERR x\r".utf8),
        Array("S".utf8), Array("N".utf8), Array("E".utf8), [UInt8(ascii: "E"), 0, 0, 0, 3], [UInt8(ascii: "E"), 0xFF, 0xFF, 0xFF, 0xFF],
        [UInt8(ascii: "E"), 0, 0, 0, 9, UInt8(ascii: "M")], [0, 0, 0, 0], [0, 0, 0, 0, 10], [5, 0, 0, 0, 10], [5, 0, 0, 1, 10],
        [0xFF, 0xFF, 0xFF, 0, 0xFF], [9, 0, 0, 0, 0xFF, 0x15, 0x04, UInt8(ascii: "#")], [1, 0, 0, 0, 9],
        // PostgreSQL authentication: MD5 password asked for, AuthenticationOk (+ ReadyForQuery), a short one.
        [UInt8(ascii: "R"), 0, 0, 0, 12, 0, 0, 0, 5], [UInt8(ascii: "R"), 0, 0, 0, 8, 0, 0, 0, 0],
        [UInt8(ascii: "R"), 0, 0, 0, 8, 0, 0, 0, 0, UInt8(ascii: "Z"), 0, 0, 0, 5, UInt8(ascii: "I")], [UInt8(ascii: "R"), 0, 0, 0, 6],
    ]
    let length = rng.chance(0.03) ? rng.int(1000...1100) : rng.int(0...40)
    return rng.pick(prefixes) + rng.bytes(length)
}

// MARK: - The tests

@Suite struct FuzzTests {
    // MARK: 1. Config files

    @Test func mutatedConfigFilesLoadOrFailAtALine() throws {
        let files = try configFiles()
        #expect(files.count >= 4, "conf/ under \(repositoryRoot.path) should hold the example configs")
        for file in files {
            // The unmutated files load (with and without the environment).
            for environment in [[:], fuzzEnvironment] where !(file.path.hasSuffix("postgresql.ini") && !environment.isEmpty) {
                do {
                    let config = try ConfigLoader.parse(String(decoding: file.bytes, as: UTF8.self), file: file.path, environment: environment)
                    checkInvariants(config, file: file.path, lines: editorLines(String(decoding: file.bytes, as: UTF8.self)), file.path)
                } catch {
                    Issue.record("\(file.path) does not load: \(error)")
                }
            }
        }

        var loaded = 0, failed = 0, roundTrips = 0
        fuzzCases(seed: 0xC0F1_6000_0000_0001, count: 2500) { rng, label in
            let file = files[rng.below(files.count)]
            let bytes = mutateConfig(file.bytes, &rng)
            let text = String(decoding: bytes, as: UTF8.self)  // invalid UTF-8 becomes U+FFFD, as a String must
            let environment = rng.chance(0.5) ? fuzzEnvironment : [:]
            let lines = editorLines(text)
            let where_ = Where(label: label, file: file.path, text: text)
            let config: SwitchyardConfig
            do throws(ConfigError) {
                config = try ConfigLoader.parse(text, file: file.path, environment: environment)
            } catch {
                failed += 1
                #expect(error.file == file.path, "\(where_)")
                #expect((1...lines.count).contains(error.line), "\(where_): line \(error.line) of \(lines.count): \(error.message)")
                #expect(error.description.hasPrefix("\(file.path):\(error.line): "), "\(where_): \(error.description)")
                #expect(!error.message.isEmpty, "\(where_)")
                if error.message.hasPrefix("no [service] section") {
                    #expect(error.line == lines.count, "\(where_): \(error)")
                } else if (1...lines.count).contains(error.line) {
                    // Every other error points at a header or KEY = VALUE line, not at a blank or a comment.
                    #expect(isMeaningful(lines[error.line - 1]), "\(where_): \(error) points at \(show(lines[error.line - 1]))")
                }
                return
            }
            loaded += 1
            checkInvariants(config, file: file.path, lines: lines, where_)
            // What loaded, written back out, loads to the same config.
            let (rendered, expected) = render(config)
            do {
                let again = try ConfigLoader.parse(rendered, file: file.path)
                #expect(withoutLines(again) == expected, "\(where_)\nrendered:\n\(rendered)")
                roundTrips += 1
            } catch {
                Issue.record("\(where_)\nrendered config does not load: \(error)\n\(rendered)")
            }
        }
        // Both outcomes are exercised, or the mutations are too weak (or too strong) to test anything.
        #expect(loaded >= 150 && failed >= 1000, "loaded \(loaded), failed \(failed)")
        #expect(roundTrips == loaded)
    }

    // MARK: 2. Value parsers

    @Test func durationsMatchTheGrammarAndRoundTrip() {
        let pieces = ["0", "1", "9", "00", "59", "999", "1000", "9223372036854775807", "9223372036854775808", "99999999999999999999",
                      "0000000000000000000000001", "2562047788015", "153722867280912", "9223372036854", "9223372036854775",
                      "us", "ms", "s", "m", "h", "", "x", "S", "MS", "sec", "µs", "mss", " ", "-", "+", ".", "\u{0}", "é"]
        fuzzCases(seed: 0xD0_2A71_0000_0002, count: 6000) { rng, label in
            // Random text in the duration alphabet: never traps, agrees with the 128-bit reference.
            let text = rng.chance(0.5)
                ? rng.string(pieces, count: rng.int(0...6))
                : (0..<rng.int(1...4)).map { _ in String(rng.edgyUInt64() >> UInt64(rng.below(64))) + rng.pick(["us", "ms", "s", "m", "h"]) }.joined()
            let parsed = parseDuration(text)
            let reference = referenceDuration(text)
            #expect(parsed == reference.map { .microseconds($0) }, "\(label): \(show(text)) -> \(String(describing: parsed)), expected \(String(describing: reference))")
            if let parsed {
                #expect(parsed >= .zero, "\(label)")
                // Printed canonically (largest unit first) it parses back to itself.
                #expect(parseDuration(formatDuration(parsed)) == parsed, "\(label): \(formatDuration(parsed))")
                // The conversions the runtime uses never trap; nanoseconds saturate.
                let us = UInt64(micros(parsed))
                #expect(parsed.wholeMilliseconds == (us + 999) / 1000, "\(label)")
                let (ns, overflow) = us.multipliedReportingOverflow(by: 1000)
                #expect(parsed.wholeNanoseconds == (overflow ? UInt64.max : ns), "\(label)")
            }

            // Any count of one unit, printed and parsed: exact, or nil exactly when it overflows Int64 µs.
            let n = Int64(bitPattern: rng.edgyUInt64() >> UInt64(rng.below(64))) & Int64.max
            for (unit, size) in [("us", Int64(1)), ("ms", 1000), ("s", 1_000_000), ("m", 60_000_000), ("h", 3_600_000_000)] {
                let (expected, overflow) = n.multipliedReportingOverflow(by: size)
                #expect(parseDuration("\(n)\(unit)") == (overflow ? nil : .microseconds(expected)), "\(label): \(n)\(unit)")
            }
        }
        // The documented edges, spelled out.
        #expect(parseDuration("9223372036854775807us") == .microseconds(Int64.max))
        #expect(parseDuration("9223372036854775808us") == nil)
        #expect(parseDuration("99999999999999999999s") == nil)
        #expect(parseDuration("2562047788h54s775ms807us") == .microseconds(Int64.max))
        #expect(parseDuration("2562047788h54s775ms808us") == nil)
        #expect(parseDuration("2562047788h") == .seconds(2_562_047_788 * 3600) && parseDuration("2562047789h") == nil)
        #expect(parseDuration("9223372036854775ms") == .milliseconds(9_223_372_036_854_775))
        #expect(parseDuration("9223372036854776ms") == nil)
    }

    @Test func durationConversionsSaturateInsteadOfTrapping() {
        // Whole Duration range, not only what the parser yields: these are public helpers.
        fuzzCases(seed: 0xD0_2A71_0000_0003, count: 3000) { rng, label in
            let seconds = Int64(bitPattern: rng.edgyUInt64())
            let attoseconds = Int64(rng.edgyUInt64() % 1_000_000_000_000_000_000)
            let d = Duration(secondsComponent: seconds, attosecondsComponent: attoseconds)
            let ms = d.wholeMilliseconds
            let ns = d.wholeNanoseconds
            if seconds < 0 {
                #expect(ms == 0 && ns == 0, "\(label): \(d)")
            } else {
                let exactMs = UInt128(UInt64(seconds)) * 1000 + UInt128((attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
                let exactNs = UInt128(UInt64(seconds)) * 1_000_000_000 + UInt128(attoseconds / 1_000_000_000)
                #expect(UInt128(ms) == min(exactMs, UInt128(UInt64.max)), "\(label): \(d) -> \(ms) ms")
                #expect(UInt128(ns) == min(exactNs, UInt128(UInt64.max)), "\(label): \(d) -> \(ns) ns")
            }
        }
        // Negative durations shorter than a second: `components` gives (0 s, negative as).
        #expect(Duration.milliseconds(-5).wholeMilliseconds == 0 && Duration.milliseconds(-5).wholeNanoseconds == 0)
        #expect(Duration.nanoseconds(-1).wholeNanoseconds == 0 && (Duration.seconds(-3) + .milliseconds(1)).wholeMilliseconds == 0)
        #expect(Duration.seconds(Int64.max).wholeNanoseconds == UInt64.max)
        #expect(Duration.seconds(Int64.max).wholeMilliseconds == UInt64.max)
        #expect(Duration.microseconds(Int64.max).wholeNanoseconds == UInt64.max)
        #expect(Duration.seconds(18_446_744_073).wholeNanoseconds == 18_446_744_073_000_000_000)
    }

    @Test func sizesMatchTheGrammar() {
        let pieces = ["0", "1", "7", "64", "1024", "8589934591", "8589934592", "9223372036854775807", "9223372036854775808",
                      "99999999999999999999", "000000000000000000000000012", "k", "K", "kb", "KiB", "m", "MB", "mib", "g", "GB",
                      "gib", "b", "B", "t", "kk", "i", " ", "-", "+", ".", "\u{0}", "é"]
        fuzzCases(seed: 0x517E_0000_0000_0004, count: 4000) { rng, label in
            let text = rng.string(pieces, count: rng.int(0...4))
            #expect(parseSize(text) == referenceSize(text), "\(label): \(show(text))")
            // Printed back in bytes it parses to itself.
            if let size = parseSize(text) { #expect(parseSize(String(size)) == size && size >= 0, "\(label)") }
            let n = Int(bitPattern: UInt(rng.edgyUInt64() >> UInt64(rng.below(64)))) & Int.max
            for (suffix, shift) in [("", 0), ("k", 10), ("MiB", 20), ("gb", 30)] {
                let (expected, overflow) = n.multipliedReportingOverflow(by: 1 << shift)
                #expect(parseSize("\(n)\(suffix)") == (overflow ? nil : expected), "\(label): \(n)\(suffix)")
            }
        }
    }

    @Test func booleansAcceptExactlyTheDocumentedWords() {
        let words = ["true", "false", "yes", "no", "on", "off", "1", "0"]
        let pieces = words + ["t", "rue", "o", "n", "ff", "es", "2", " ", "\t", "-", "\u{0}", "é", "ı", "İ", "\u{212A}", "ſ"]
        fuzzCases(seed: 0xB001_0000_0000_0005, count: 4000) { rng, label in
            let text = randomCase(rng.string(pieces, count: rng.int(0...3)), &rng)
            let lower = String(decoding: text.utf8.map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 }, as: UTF8.self)
            let expected: Bool? = ["true", "yes", "on", "1"].contains(lower) ? true : ["false", "no", "off", "0"].contains(lower) ? false : nil
            #expect(parseBool(text) == expected, "\(label): \(show(text))")
        }
    }

    @Test func hostPortsRoundTripAndRefuseJunk() {
        let alphabet = ["0", "1", "9", "25", "255", "256", "a", "F", "z", "-", "_", ".", ":", "::", "[", "]", "%", "eth0", "/", " ",
                        "@", "\u{0}", "é", "65535", "65536", "99999999999999999999", "ffff", "1.2.3.4", "localhost"]
        fuzzCases(seed: 0x4057_0000_0000_0006, count: 4000) { rng, label in
            // Junk: never traps; whatever parses prints back to itself.
            let text = rng.string(alphabet, count: rng.int(0...10))
            if let hp = parseHostPort(text) {
                #expect(!hp.host.isEmpty && parseHostPort(hp.description) == hp, "\(label): \(show(text)) -> \(hp)")
            }

            let port = rng.chance(0.2) ? rng.pick([0, 1, 65535]) : rng.int(0...65535)
            // IPv4 (leading zeros are refused, as by inet_pton).
            let octets = (0..<4).map { _ in rng.chance(0.1) ? rng.pick([0, 255, 256, 999]) : rng.int(0...255) }
            let zeroPadded = rng.chance(0.1)
            let v4 = octets.map { zeroPadded && $0 < 10 ? "0\($0)" : String($0) }.joined(separator: ".")
            let v4Valid = octets.allSatisfy { $0 <= 255 } && !(zeroPadded && octets.contains { $0 < 10 })
            #expect(parseHostPort("\(v4):\(port)") == (v4Valid ? HostPort(host: v4, port: UInt16(port)) : nil), "\(label): \(v4):\(port)")

            // IPv6: eight groups, written with random case, "::" compression, IPv4 tail and zone.
            var groups = (0..<8).map { _ in rng.chance(0.4) ? 0 : UInt16(truncatingIfNeeded: rng.next()) }
            var written = groups.map { String($0, radix: 16, uppercase: rng.chance(0.3)) }
            if rng.chance(0.2) {
                let (a, b) = (rng.byte(), rng.byte())
                groups[7] = UInt16(a) << 8 | UInt16(b)
                written[6] = "\(groups[6] >> 8).\(groups[6] & 0xFF).\(a).\(b)"
                written.removeLast()
            }
            var v6 = written.joined(separator: ":")
            if rng.chance(0.6) {
                // Compress one run of zero groups (of the plain hex groups) into "::".
                let hexCount = written.count == 7 ? 6 : 8
                let start = rng.below(hexCount)
                var end = start
                while end < hexCount, groups[end] == 0 { end += 1 }
                if end > start {
                    v6 = written[..<start].joined(separator: ":") + "::" + written[end...].joined(separator: ":")
                }
            }
            let zone = rng.chance(0.2) ? "%" + rng.pick(["eth0", "1", "lo", "en-0.1_x"]) : ""
            let host = v6 + zone
            #expect(parseHostPort("[\(host)]:\(port)") == HostPort(host: host, port: UInt16(port)), "\(label): [\(host)]:\(port)")
            #expect(ListenHost(host) == .ipv6(groups, zone: zone.isEmpty ? nil : String(zone.dropFirst())), "\(label): \(host)")
            #expect(parseHostPort("\(host):\(port)") == nil, "\(label): unbracketed \(host)")

            // Ports: digits only, at most 65535 (leading zeros allowed).
            let portText = rng.pick(["", "0", "65535", "65536", "00080", "000080", "0000000000065535", "-1", "+1", "1 ",
                                     "99999999999999999999", String(rng.edgyUInt64())])
            let significant = portText.drop { $0 == "0" }
            let portValue = !portText.isEmpty && portText.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } && significant.utf8.count <= 5
                ? Int(significant.isEmpty ? "0" : String(significant)) : nil
            let expectedPort = portValue.flatMap { $0 <= 65535 ? UInt16($0) : nil }
            #expect(parseHostPort("db.local:\(portText)") == expectedPort.map { HostPort(host: "db.local", port: $0) }, "\(label): port \(portText)")

            // DNS names: labels 1...63 bytes, whole name at most 253 (one trailing dot allowed).
            let labels = (0..<rng.int(1...6)).map { _ in
                String(repeating: rng.pick(["a", "b-c", "x_1", "Z9"]), count: rng.int(1...(rng.chance(0.2) ? 40 : 3)))
            }
            let name = labels.joined(separator: ".")
            let nameValid = labels.allSatisfy { (1...63).contains($0.utf8.count) } && name.utf8.count <= 253
                && !name.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2E }
            let dotted = rng.chance(0.2) ? name + "." : name
            #expect((parseHostPort("\(dotted):\(port)") != nil) == nameValid, "\(label): \(dotted) (\(name.utf8.count) bytes)")

            // Conflicts are symmetric, and an address clashes with itself unless its port is 0.
            let a = HostPort(host: rng.pick(["0.0.0.0", "127.0.0.1", "::", "::1", "db", "DB"]), port: UInt16(rng.pick([0, 80, 81])))
            let b = HostPort(host: rng.pick(["0.0.0.0", "127.0.0.1", "::", "0:0::0", "db"]), port: UInt16(rng.pick([0, 80, 81])))
            #expect(listenAddressesConflict(a, b) == listenAddressesConflict(b, a), "\(label): \(a) \(b)")
            #expect(listenAddressesConflict(a, a) == (a.port != 0), "\(label): \(a)")
        }
    }

    @Test func escapedBytesRoundTripAndEnvironmentSubstitutionNeverTraps() {
        fuzzCases(seed: 0xE5C0_0000_0000_0007, count: 4000) { rng, label in
            // Any bytes, escaped at random, decode back to themselves.
            let bytes = rng.bytes(rng.int(0...40))
            var text = ""
            for b in bytes {
                switch b {
                case 13 where rng.chance(0.5): text += "\\r"
                case 10 where rng.chance(0.5): text += "\\n"
                case 9 where rng.chance(0.5): text += "\\t"
                case 0x5C where rng.chance(0.5): text += "\\\\"
                case 0x20...0x7E where b != 0x5C && rng.chance(0.5): text.append(Character(Unicode.Scalar(b)))
                default:
                    let hex = String(b, radix: 16, uppercase: rng.chance(0.5))
                    text += "\\x" + (hex.count == 1 ? "0" + hex : hex)
                }
            }
            #expect(parseEscapedBytes(text) == bytes, "\(label): \(show(text))")

            // Junk with backslashes: agrees with the documented grammar.
            let junk = rng.string(["\\", "x", "X", "r", "n", "t", "0", "f", "G", "é", "\u{0}", "a"], count: rng.int(0...10))
            #expect(parseEscapedBytes(junk) == referenceUnescape(junk), "\(label): \(show(junk))")

            // ${VAR} substitution: never traps; text without "${" is kept as is.
            let value = rng.string(["$", "{", "}", ":-", ":", "-", "A", "B_1", "1", "EMPTY", "é", " ", "\u{0}"], count: rng.int(0...12))
            let substituted = try? substituteEnvironment(value, environment: ["A": "x", "EMPTY": "", "B_1": "${A}"])
            if !value.contains("${") { #expect(substituted == value, "\(label): \(show(value))") }
        }
    }

    // MARK: 3. Admin HTTP

    @Test func validRequestsParseTheSameHoweverSplit() {
        var withBody = 0, withJunk = 0
        fuzzCases(seed: 0x4775_0000_0000_0008, count: 3000) { rng, label in
            let g = generateRequest(&rng)
            if !g.expected.body.isEmpty { withBody += 1 }
            if g.bytes.count > g.requestLength { withJunk += 1 }
            var parser = HTTPRequestParser()
            let cuts = randomCuts(g.bytes.count, &rng)
            for (fed, result, ignored) in feedInPieces(&parser, g.bytes, cuts: cuts) {
                if fed < g.requestLength {
                    #expect(result == .needMore, "\(label): after \(fed) of \(g.requestLength) bytes: \(result)\n\(show(g.bytes))")
                } else {
                    #expect(result == .complete(g.expected), "\(label): cuts \(cuts)\n\(show(g.bytes))\ngot \(result)\nexpected \(g.expected)")
                    #expect(ignored == fed - g.requestLength, "\(label): \(ignored) bytes ignored after \(fed) of \(g.requestLength)")
                }
            }
            #expect(parser.isFinished, "\(label)")
            // Finished is final: more bytes change nothing.
            #expect(parser.feed(rng.bytes(rng.int(0...10))) == .complete(g.expected), "\(label)")

            // The router takes whatever the parser produced without trapping, and agrees with itself.
            let route = AdminRoute.resolve(g.expected)
            #expect(route == AdminRoute.resolve(method: g.expected.method, path: g.expected.path), "\(label)")
        }
        #expect(withBody > 300 && withJunk > 300)
    }

    @Test func brokenRequestsGetTheRightErrorHoweverSplit() {
        var seen: [Int: Int] = [:]
        fuzzCases(seed: 0xBAD0_4775_0000_0009, count: 3000) { rng, label in
            let host = "Host: admin\r\n"
            let filler = "X-A: b\r\n"
            let (request, expected): (String, Int?)
            switch rng.below(21) {
            case 0: // a bare CR inside a line
                (request, expected) = ("GET / HTTP/1.1\r\nX-\(rng.chance(0.5) ? "\r" : "A:\r")B: c\r\n\r\n", 400)
            case 1: (request, expected) = ("GET / HTTP/1.1\r\n\(host)NoColonHere\r\n\r\n", 400)
            case 2: (request, expected) = ("GET / HTTP/1.1\r\n\(filler)\(rng.pick([" ", "\t"]))folded\r\n\r\n", 400)
            case 3: (request, expected) = ("GET / HTTP/1.1\r\n\(host)\(filler)\(randomCase("host", &rng)): other\r\n\r\n", 400)
            case 4: // chunked last: 411, the client can resend with Content-Length
                let codings = rng.pick(["chunked", "gzip, chunked", "gzip,chunked", " chunked "])
                (request, expected) = ("POST /reload HTTP/1.1\r\n\(randomCase("Transfer-Encoding", &rng)): \(randomCase(codings, &rng))\r\n\r\n", 411)
            case 5:
                (request, expected) = ("POST /reload HTTP/1.1\r\nTransfer-Encoding: \(rng.pick(["gzip", "chunked, gzip", "identity", ""]))\r\n\r\n", 400)
            case 6: (request, expected) = ("POST /reload HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", 400)
            case 7: // huge Content-Length saturates, and is too large rather than malformed
                let digits = String((0..<rng.int(20...60)).map { _ in rng.pick(Array("123456789")) })
                (request, expected) = ("POST /reload HTTP/1.1\r\nContent-Length: \(digits)\r\n\r\n", 413)
            case 8:
                let length = HTTPRequestParser.defaultMaxBodyBytes + rng.int(1...100_000)
                (request, expected) = ("POST /reload HTTP/1.1\r\nContent-Length: \(length)\r\n\r\n", 413)
            case 9:
                let bad = rng.pick(["-1", "+1", "1.0", "0x10", "", "1 2", "١", "1e3", ",", "5,", "abc"])
                (request, expected) = ("POST /reload HTTP/1.1\r\nContent-Length: \(bad)\r\n\r\n", 400)
            case 10:
                (request, expected) = ("POST /reload HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\nabcd", 400)
            case 11:
                (request, expected) = ("GET / \(rng.pick(["HTTP/2.0", "HTTP/3.0", "HTTP/0.9", "HTTP/9.9"]))\r\n\r\n", 505)
            case 12:
                (request, expected) = ("GET / \(rng.pick(["HTTP/1.1x", "HTTP/11", "http/1.1", "HTTP/1", "HTTP/1.", "HTTP/a.1", "HTTP/1.1 ", ""]))\r\n\r\n", 400)
            case 13:
                (request, expected) = (rng.pick(["GET  / HTTP/1.1", " GET / HTTP/1.1", "GET /", "GET", "G(T / HTTP/1.1", "GET / HTTP/1.1 extra"]) + "\r\n\r\n", 400)
            case 14:
                (request, expected) = ("GET \(rng.pick(["/a#b", "/\u{0}", "/é", "a/b", "://x", "1http://x/", "/\u{7F}"])) HTTP/1.1\r\n\r\n", 400)
            case 15: // a head over 8 KiB (27 bytes besides the padding: 8166 of it make 8193)
                let pad = String(repeating: "v", count: HTTPRequestParser.defaultMaxHeadBytes + rng.int(-26...2000))
                (request, expected) = ("GET / HTTP/1.1\r\nX-Pad: \(pad)\r\n\r\n", 431)
            case 16: // no empty line yet: the parser waits (the wiring's timeout ends it)
                (request, expected) = ("GET / HTTP/1.1\r\n\(host)\(filler)", nil)
            case 17: // body shorter than announced
                let n = rng.int(1...500)
                (request, expected) = ("POST /reload HTTP/1.1\r\nContent-Length: \(n)\r\n\r\n" + String(repeating: "z", count: n - 1), nil)
            case 18:
                (request, expected) = ("GET / HTTP/1.1\r\nX-A: \(rng.pick(["\u{0}", "\u{1}", "\u{7F}", "a\u{1B}b"]))\r\n\r\n", 400)
            case 19:
                (request, expected) = ("GET / HTTP/1.1\r\n\(rng.pick(["X-A : b", "X A: b", ": b", "X(A): b", "é: b"]))\r\n\r\n", 400)
            default: // only empty lines, more than the head may hold
                (request, expected) = (String(repeating: rng.pick(["\r\n", "\n"]), count: HTTPRequestParser.defaultMaxHeadBytes + 1), 431)
            }
            let bytes = Array(request.utf8)
            var parser = HTTPRequestParser()
            let results = feedInPieces(&parser, bytes, cuts: randomCuts(bytes.count, &rng))
            let final = results.last!.result
            if let expected {
                #expect(status(final) == expected, "\(label): \(show(bytes)) -> \(final)")
                // Errors come once and stay: before the first one only .needMore, after it the same error.
                let firstError = results.firstIndex { $0.result != .needMore } ?? results.count
                #expect(results[firstError...].allSatisfy { $0.result == final }, "\(label)")
                #expect(parser.feed(Array("GET / HTTP/1.1\r\n\r\n".utf8)) == final, "\(label)")
                // The same bytes in one piece give the same answer.
                var whole = HTTPRequestParser()
                #expect(whole.feed(bytes) == final, "\(label)")
            } else {
                #expect(results.allSatisfy { $0.result == .needMore } && !parser.isFinished, "\(label): \(show(bytes)) -> \(final)")
            }
            seen[expected ?? 0, default: 0] += 1
        }
        #expect(Set(seen.keys) == [0, 400, 411, 413, 431, 505])
    }

    @Test func randomBytesNeverHangTheAdminParser() {
        let pieces: [[UInt8]] = ["GET", " ", "/", "HTTP/1.1", "\r\n", "\n", "\r", ":", "Host", "Content-Length", "0", ",", "\t", "#", "?", "%",
                                 "\u{0}", "é"].map { Array($0.utf8) }
        var outcomes: [String: Int] = [:]
        fuzzCases(seed: 0x9A9B_0000_0000_000A, count: 4000) { rng, label in
            let (bytes, garbageLine) = randomAdminInput(&rng, pieces: pieces)
            // Small limits so that the bounds are reached.
            let (maxHead, maxBody) = (256, 256)
            var parser = HTTPRequestParser(maxHeadBytes: maxHead, maxBodyBytes: maxBody)
            let results = feedInPieces(&parser, bytes, cuts: randomCuts(bytes.count, &rng))
            let final = results.last!.result
            var whole = HTTPRequestParser(maxHeadBytes: maxHead, maxBodyBytes: maxBody)
            let wholeResult = whole.feed(bytes)
            #expect(final == wholeResult, "\(label): split and whole disagree on \(show(bytes))")
            #expect(parser.ignoredByteCount == whole.ignoredByteCount, "\(label)")
            // Bounded: after maxHead + maxBody bytes the parser has decided.
            if bytes.count >= maxHead + maxBody { #expect(final != .needMore, "\(label): still waiting after \(bytes.count) bytes") }
            if case .complete(let r) = final {
                #expect(HTTPSyntax.isToken(r.method.utf8) && r.version.major == 1 && r.body.count <= maxBody, "\(label)")
                #expect(r.path == "*" || r.path.hasPrefix("/"), "\(label): path \(show(r.path))")
                _ = AdminRoute.resolve(r)
            }
            if case .error(let s, let reason) = final {
                #expect([400, 411, 413, 431, 505].contains(s.code) && !reason.isEmpty, "\(label): \(s) \(reason)")
            }
            outcomes[outcomeName(final), default: 0] += 1
            if garbageLine {
                #expect(status(final) == 400, "\(label): \(show(bytes)) -> \(final)")
            }
        }
        #expect(outcomes["complete", default: 0] > 50 && outcomes["error 400", default: 0] > 500 && outcomes["needMore", default: 0] > 50,
                "\(outcomes)")
    }

    @Test func adminRoutesSurvivePercentEncoding() {
        fuzzCases(seed: 0x2007_0000_0000_000B, count: 3000) { rng, label in
            // Any bytes, percent-encoded, decode back.
            let raw = rng.bytes(rng.int(0...30))
            let encoded = percentEncode(raw, &rng)
            #expect(AdminRoute.percentDecode(Array(encoded.utf8)) == raw, "\(label): \(encoded)")

            // A server action with encoded names routes to those names (valid names only).
            let nameChars = Array("abcXYZ019-_.".utf8)
            let service = (0..<rng.int(1...12)).map { _ in rng.pick(nameChars) }
            let server = rng.chance(0.2) ? rng.bytes(rng.int(0...6)) : (0..<rng.int(1...12)).map { _ in rng.pick(nameChars) }
            let action = rng.pick(AdminRoute.ServerAction.allCases)
            let path = "/services/\(percentEncode(service, &rng))/servers/\(percentEncode(server, &rng))/\(percentEncode(Array(action.rawValue.utf8), &rng))"
            let serverValid = !server.isEmpty && server.allSatisfy { b in
                (b | 0x20 >= 0x61 && b | 0x20 <= 0x7A) || (b >= 0x30 && b <= 0x39) || b == 0x2D || b == 0x5F || b == 0x2E
            }
            let method = rng.pick(["POST", "GET", "post"])
            let result = AdminRoute.resolve(method: method, path: path)
            if !serverValid {
                #expect(result == .failure(.notFound), "\(label): \(path)")
            } else if method == "POST" {
                #expect(result == .success(.serverAction(service: String(decoding: service, as: UTF8.self),
                                                         server: String(decoding: server, as: UTF8.self), action: action)), "\(label): \(path)")
            } else {
                #expect(result == .failure(.methodNotAllowed(allowed: ["POST"])), "\(label): \(path) \(method)")
            }

            // Through the parser: the same route.
            var parser = HTTPRequestParser()
            let bytes = Array("\(method) \(path)?x=1 HTTP/1.1\r\n\r\n".utf8)
            if case .complete(let request) = feedInPieces(&parser, bytes, cuts: randomCuts(bytes.count, &rng)).last!.result {
                #expect(AdminRoute.resolve(request) == result, "\(label)")
            } else {
                Issue.record("\(label): \(show(bytes)) did not parse")
            }

            // Junk paths: never trap; a bad escape is 400, not a crash.
            let junk = "/" + rng.string(["%", "%2", "%2F", "%zz", "%%", "/", "a", "metrics", "services", "servers", "drain", "é", ".."], count: rng.int(0...8))
            switch AdminRoute.resolve(method: "GET", path: junk) {
            case .failure(.badRequest): #expect(AdminRoute.percentDecode(Array(junk.utf8)) == nil, "\(label): \(junk)")
            default: #expect(AdminRoute.percentDecode(Array(junk.utf8)) != nil, "\(label): \(junk)")
            }
        }
    }

    // MARK: 4. Health probe replies

    @Test func probeRepliesPassOnlyWhenValid() {
        var passes = 0, fails = 0
        fuzzCases(seed: 0x4EA1_7400_0000_000C, count: 2000) { rng, label in
            let expect = rng.bytes(rng.int(1...(rng.chance(0.05) ? 1500 : 8)))
            let probes = [probe(.redis), probe(.pgsql), probe(.pgsql, user: "monitor"), probe(.mysql), probe(.tcp, expect: expect, send: rng.chance(0.5) ? [1] : nil)]
            let p = probes[rng.below(probes.count)]
            var reply = randomReply(&rng)
            if case .custom = p.kind, rng.chance(0.3) { reply = Array(expect.prefix(rng.int(0...expect.count))) + reply }

            // Every prefix (all of them for short replies, a sample for long ones, around the limit too).
            var lengths = reply.count <= 64 ? Array(0...reply.count) : (0..<20).map { _ in rng.int(0...reply.count) }
            lengths += [reply.count, p.maxReplyBytes - 1, p.maxReplyBytes, p.maxReplyBytes + 1].filter { $0 >= 0 && $0 <= reply.count }
            lengths.sort()
            var previous = "needMore"
            for n in lengths {
                let bytes = Array(reply.prefix(n))
                let verdict = p.evaluate(received: bytes)
                let kind = verdictKind(verdict)
                #expect((kind == "pass") == isHealthyReply(p.kind, bytes), "\(label): \(p.kind) \(show(bytes)) -> \(verdict)")
                #expect(kind != "needMore" || n < p.maxReplyBytes, "\(label): needMore after \(n) bytes")
                // A verdict, once given, stands as more bytes arrive.
                #expect(previous == "needMore" || kind == previous, "\(label): \(previous) then \(kind) at \(n) bytes of \(show(reply))")
                previous = kind
                if case .fail(let reason) = verdict {
                    // Reasons go to logs: printable ASCII only, bounded.
                    #expect(!reason.isEmpty && reason.utf8.count <= 1200 && reason.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F },
                            "\(label): \(show(reason))")
                }
                let atEnd = p.evaluateAtEndOfStream(received: bytes)
                #expect(atEnd != .needMore && (verdict == .needMore || atEnd == verdict), "\(label)")
            }
            #expect(p.evaluate(received: reply[...]) == p.evaluate(received: reply), "\(label): slice and array disagree")
            if previous == "pass" { passes += 1 } else if previous == "fail" { fails += 1 }
        }
        #expect(passes > 70 && fails > 700, "passes \(passes), fails \(fails)")
    }

    @Test func truncatedRepliesWaitAndErrorRepliesNeverPass() {
        fuzzCases(seed: 0x4EA1_7400_0000_000D, count: 1500) { rng, label in
            let printable = { (rng: inout FuzzRandom, n: Int) in (0..<n).map { _ in UInt8(rng.int(0x20...0x7E)) } }
            let junk = rng.chance(0.5) ? rng.bytes(rng.int(1...20)) : []
            let good: (HealthProbe, [UInt8], decisive: Int)
            switch rng.below(4) {
            case 0: good = (probe(.redis), Array("+PONG\r\n".utf8), 7)
            case 1: good = (probe(.pgsql), [rng.pick([UInt8(ascii: "S"), UInt8(ascii: "N")])], 1)
            case 2:
                let payload = [10] + printable(&rng, rng.int(0...120)) + [0] + rng.bytes(rng.int(0...60))
                good = (probe(.mysql), mysqlPacket(payload), 5)
            default:
                let expect = rng.bytes(rng.int(1...40))
                good = (probe(.tcp, expect: expect), expect, expect.count)
            }
            // A valid reply cut short waits for more, and fails if the server closes there.
            let (p, reply, decisive) = good
            for n in 0...(reply.count + junk.count) {
                let bytes = Array((reply + junk).prefix(n))
                let expected: ProbeVerdict = n < decisive ? .needMore : .pass
                #expect(p.evaluate(received: bytes) == expected, "\(label): \(p.kind) \(show(bytes))")
                if n < decisive {
                    if case .fail = p.evaluateAtEndOfStream(received: bytes) {} else { Issue.record("\(label): truncated reply at end of stream") }
                }
            }

            // Error replies: every prefix waits or fails, the whole reply fails with the server's message.
            let message = printable(&rng, rng.int(0...80))
            let errors: [(HealthProbe, [UInt8])] = [
                (probe(.redis), [UInt8(ascii: "-")] + message + Array("\r\n".utf8)),
                (probe(.pgsql), {
                    let body = [UInt8(ascii: "S")] + Array("FATAL".utf8) + [0, UInt8(ascii: "M")] + message + [0, 0]
                    let length = body.count + 4
                    return [UInt8(ascii: "E"), UInt8(length >> 24), UInt8((length >> 16) & 0xFF), UInt8((length >> 8) & 0xFF), UInt8(length & 0xFF)] + body
                }()),
                (probe(.mysql), mysqlPacket([0xFF, 0x15, 0x04] + Array("#28000".utf8) + message)),
            ]
            for (p, reply) in errors {
                for n in 0...reply.count {
                    let v = p.evaluate(received: reply.prefix(n))
                    #expect(v == .needMore || verdictKind(v) == "fail", "\(label): \(p.kind) \(show(reply.prefix(n))) -> \(v)")
                }
                let final = p.evaluate(received: reply)
                if case .fail(let reason) = final {
                    #expect(message.isEmpty || reason.contains(String(decoding: message, as: UTF8.self).replacingOccurrences(of: "\\", with: "\\\\")),
                            "\(label): \(reason)")
                } else {
                    Issue.record("\(label): \(p.kind) error reply \(show(reply)) -> \(final)")
                }
            }
        }
    }
}
