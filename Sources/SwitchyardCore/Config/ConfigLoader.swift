// Turns INI text into a validated SwitchyardConfig. All-or-nothing: the first error (in file order)
// is thrown as ConfigError(FILE, LINE, message) and nothing is returned.
//
// Adding a key: add a field (with its default) to the model in ConfigModel.swift, then one line in
// `ConfigSchema.global` or `ConfigSchema.service` below, e.g.
//     .single("drain_timeout", .duration, \.drainTimeout),
// `.single` keys may appear once per section, `.repeated` keys append to an array in file order,
// `.custom` gets the raw value (after `${VAR}` substitution) for anything more involved.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

public enum ConfigLoader {
    /// Reads and parses a file. File read errors become
    /// ConfigError(file: path, line: 0, message: "cannot read file: <reason>"), or the line of the
    /// first byte that is not UTF-8.
    public static func load(path: String, environment: [String: String] = [:]) throws(ConfigError) -> SwitchyardConfig {
        let text: String
        do {
            text = try readTextFile(path)
        } catch {
            throw ConfigError(file: path, line: error.line, message: "cannot read file: \(error.message)")
        }
        return try parse(text, file: path, environment: environment)
    }

    /// Parses text that claims to come from `file`.
    public static func parse(_ text: String, file: String, environment: [String: String] = [:]) throws(ConfigError) -> SwitchyardConfig {
        var loader = Loader(file: file, environment: environment)
        var parser = INIParser(text, file: file)
        while let event = try parser.next() {
            switch event {
            case let .section(name, argument, line):
                try loader.finishSection()
                try loader.beginSection(name: name, argument: argument, line: line)
            case let .entry(key, value, line):
                try loader.entry(key: key, rawValue: value, line: line)
            }
        }
        try loader.finishSection()
        try loader.checkDefaultAdminAddress()
        guard !loader.config.services.isEmpty else {
            throw ConfigError(
                file: file, line: parser.lineCount,
                message: "no [service] section: add at least one [service NAME] with listen and server lines")
        }
        return loader.config
    }
}

// MARK: - The schema: every section's keys, in one place

enum ConfigSchema {
    static var global: [KeyRule<GlobalConfig>] {
        [
            .single("workers", .workers, \.workers),
            .single("admin", .optionalHostPort, \.admin),
            .single("log_level", .oneOf(LogLevel.self), \.logLevel),
            .single("log_format", .oneOf(LogFormat.self), \.logFormat),
            .single("max_connections", .intInRange(1...SwitchyardConfig.maxConnectionsLimit), \.maxConnections),
            .single("admin_token", .optionalText, \.adminToken),
            .single("drain_timeout", .duration, \.drainTimeout),
            .single("busy_poll", .busyPollWindow, \.busyPoll),
            .single("resolve_interval", .resolveInterval, \.resolveInterval),
        ]
    }

    static var service: [KeyRule<ServiceConfig>] {
        [
            .repeated("listen", .hostPort, \.listen),
            .single("balance", .oneOf(BalanceAlgorithm.self), \.balance),
            .custom("server", repeatable: true, addServer),
            .single("connect_timeout", .positiveDuration, \.connectTimeout),
            .single("idle_timeout", .duration, \.idleTimeout),
            .single("splice", .oneOf(SpliceMode.self), \.splice),
            .single("server_keepalive", .onOff, \.serverKeepAlive),
            // Health and failover (see HealthSettings for the meaning of each).
            .single("check", .oneOf(HealthCheckKind.self), \.health.check),
            .single("check_interval", .checkInterval, \.health.checkInterval),
            .single("check_timeout", .positiveDuration, \.health.checkTimeout),
            .single("check_port", .optionalPort, \.health.checkPort),
            .single("check_send", .escapedBytes, \.health.checkSend),
            .single("check_expect", .escapedBytes, \.health.checkExpect),
            .single("check_user", .optionalText, \.health.checkUser),
            .single("check_database", .optionalText, \.health.checkDatabase),
            .single("check_initial", .oneOf(InitialHealthState.self), \.health.checkInitial),
            .single("rise", .positiveInt, \.health.rise),
            .single("fall", .positiveInt, \.health.fall),
            .single("eject_after", .intInRange(0...1000), \.health.ejectAfter),
            .single("eject_time", .positiveDuration, \.health.ejectTime),
            .single("eject_time_max", .positiveDuration, \.health.ejectTimeMax),
            .single("max_ejection_percent", .intInRange(0...100), \.health.maxEjectionPercent),
            .single("retries", .intInRange(0...10), \.health.retries),
            .single("panic", .onOff, \.health.panic),
            .single("on_down", .oneOf(OnDownPolicy.self), \.health.onDown),
            .single("slow_start", .duration, \.health.slowStart),
        ]
    }

    /// `server = NAME HOST:PORT [weight=N] [backup]`
    static func addServer(_ service: inout ServiceConfig, _ value: String, _ line: Int) throws(ValueError) {
        let usage = "expected server = NAME HOST:PORT [weight=N] [backup]"
        let words = value.split(whereSeparator: \.isWhitespace).map(String.init)
        guard let name = words.first else { throw ValueError("missing value for server (\(usage))") }
        guard words.count >= 2 else {
            if name.contains(":") { throw ValueError("server \"\(name)\" has no name (\(usage))") }
            throw ValueError("server \(name) has no address (\(usage))")
        }
        guard isValidName(name) else {
            throw ValueError("bad server name \"\(name)\" (use letters, digits, -, _ and .)")
        }
        let address: HostPort
        do throws(ValueError) {
            address = try hostPort(words[1])
        } catch {
            throw ValueError("bad address \"\(words[1])\" for server \(name): \(error.message) (expected HOST:PORT, e.g. 10.0.0.1:5432)")
        }
        guard address.port != 0 else { throw ValueError("bad address \"\(words[1])\" for server \(name): port 0 is not allowed for a server") }

        var server = ServerConfig(name: name, address: address, line: line)
        var sawWeight = false
        var sawBackup = false
        for option in words.dropFirst(2) {
            if option == "backup" {
                guard !sawBackup else { throw ValueError("backup given twice for server \(name)") }
                sawBackup = true
                server.backup = true
            } else if option.hasPrefix("weight=") {
                guard !sawWeight else { throw ValueError("weight given twice for server \(name)") }
                sawWeight = true
                let text = option.dropFirst("weight=".count)
                guard text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
                      let weight = Int(text), (1...256).contains(weight)
                else { throw ValueError("bad weight \"\(text)\" for server \(name) (expected a whole number from 1 to 256)") }
                server.weight = weight
            } else {
                throw ValueError("unknown option \"\(option)\" for server \(name) (expected weight=N or backup)")
            }
        }
        // (Duplicate names are caught by the loader, which keeps them in a dictionary.)
        service.servers.append(server)
    }
}

// MARK: - Rules and value parsers

/// One key of a section: its name, whether it may repeat, and how it changes the section's model.
struct KeyRule<Target> {
    let key: String
    let repeatable: Bool
    let apply: (_ target: inout Target, _ value: String, _ line: Int) throws(ValueError) -> Void

    /// A key given at most once; its value replaces the model's default.
    static func single<V>(_ key: String, _ parser: ValueParser<V>, _ path: WritableKeyPath<Target, V>) -> KeyRule {
        KeyRule(key: key, repeatable: false) { target, value, _ throws(ValueError) in
            target[keyPath: path] = try parser.parse(value, key)
        }
    }

    /// A key that may repeat; each value is appended in file order.
    static func repeated<V>(_ key: String, _ parser: ValueParser<V>, _ path: WritableKeyPath<Target, [V]>) -> KeyRule {
        KeyRule(key: key, repeatable: true) { target, value, _ throws(ValueError) in
            target[keyPath: path].append(try parser.parse(value, key))
        }
    }

    static func custom(
        _ key: String, repeatable: Bool,
        _ apply: @escaping (_ target: inout Target, _ value: String, _ line: Int) throws(ValueError) -> Void
    ) -> KeyRule {
        KeyRule(key: key, repeatable: repeatable, apply: apply)
    }
}

/// Turns a value into V, or says what was expected.
struct ValueParser<V> {
    let parse: (_ value: String, _ key: String) throws(ValueError) -> V

    /// `bad KIND "VALUE" for KEY (expected EXPECTED)`, or `missing value for KEY (expected ...)`.
    static func simple(kind: String, expected: String, _ convert: @escaping (String) -> V?) -> ValueParser {
        ValueParser { value, key throws(ValueError) in
            if let result = convert(value) { return result }
            if value.isEmpty { throw ValueError("missing value for \(key) (expected \(expected))") }
            throw ValueError("bad \(kind) \"\(value)\" for \(key) (expected \(expected))")
        }
    }
}

let durationExamples = "e.g. 250ms, 2s, 5m, 1h"

extension ValueParser where V == Duration {
    static var duration: ValueParser {
        .simple(kind: "duration", expected: durationExamples, parseDuration)
    }
    /// `busy_poll`: 0 (off) up to 10ms; spinning longer than that only burns CPU.
    static var busyPollWindow: ValueParser {
        ValueParser { value, key throws(ValueError) in
            let duration = try ValueParser.duration.parse(value, key)
            guard duration <= .milliseconds(10) else {
                throw ValueError("bad duration \"\(value)\" for \(key) (at most 10ms; e.g. 50us)")
            }
            return duration
        }
    }

    /// 0 (off) or at least 100ms: anything shorter would look names up back to back (and under
    /// 1ms would read as 0 on the loop's millisecond timer, turning lookups off unannounced).
    static var resolveInterval: ValueParser {
        ValueParser { value, key throws(ValueError) in
            let duration = try ValueParser.duration.parse(value, key)
            guard duration == .zero || duration >= .milliseconds(100) else {
                throw ValueError("bad duration \"\(value)\" for \(key) (0 = off, or at least 100ms; e.g. 30s)")
            }
            return duration
        }
    }

    /// At least 1ms: the loop's timers count whole milliseconds, so anything shorter would be 0
    /// (a connect or probe that times out at once).
    static var positiveDuration: ValueParser {
        ValueParser { value, key throws(ValueError) in
            let duration = try ValueParser.duration.parse(value, key)
            guard duration > .zero else { throw ValueError("bad duration \"\(value)\" for \(key) (must be greater than 0)") }
            guard duration >= .milliseconds(1) else { throw ValueError("bad duration \"\(value)\" for \(key) (at least 1ms)") }
            return duration
        }
    }

    /// `check_interval`: at least 10ms. Each probe is a connection to the server, so a slip such
    /// as `2us` for `2s` would open hundreds per second to every server.
    static var checkInterval: ValueParser {
        ValueParser { value, key throws(ValueError) in
            let duration = try ValueParser.positiveDuration.parse(value, key)
            guard duration >= .milliseconds(10) else { throw ValueError("bad duration \"\(value)\" for \(key) (at least 10ms; e.g. 2s)") }
            return duration
        }
    }
}

extension ValueParser where V == Int {
    static var positiveInt: ValueParser {
        .simple(kind: "number", expected: "a whole number greater than 0", parsePositiveInt)
    }
}

extension ValueParser where V == Int {
    static func intInRange(_ range: ClosedRange<Int>) -> ValueParser {
        .simple(kind: "number", expected: "a whole number from \(range.lowerBound) to \(range.upperBound)") { text in
            guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
                  let value = Int(text), range.contains(value)
            else { return nil }
            return value
        }
    }
}

extension ValueParser where V == String? {
    /// Any text; empty means "not set".
    static var optionalText: ValueParser {
        ValueParser { value, _ in value.isEmpty ? nil : value }
    }
}

extension ValueParser where V == Bool {
    /// on/off (also true/false, yes/no, 1/0).
    static var onOff: ValueParser {
        .simple(kind: "value", expected: "on or off", parseBool)
    }
}

extension ValueParser where V == UInt16? {
    /// A port 1-65535; empty means "not set".
    static var optionalPort: ValueParser {
        .simple(kind: "port", expected: "a port from 1 to 65535") { text in
            if text.isEmpty { return .some(nil) }
            guard text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
                  let port = Int(text), (1...65535).contains(port)
            else { return nil }
            return .some(UInt16(port))
        }
    }
}

extension ValueParser where V == [UInt8]? {
    /// Text with escapes \\r \\n \\t \\\\ \\xHH, as raw bytes.
    static var escapedBytes: ValueParser {
        .simple(kind: "escape", expected: "text with escapes \\r \\n \\t \\\\ \\xHH") { text in
            if text.isEmpty { return .some(nil) }
            return parseEscapedBytes(text).map { .some($0) }
        }
    }
}

extension ValueParser where V == Int? {
    /// 1...`maxWorkers`, or `auto` (nil).
    static var workers: ValueParser {
        .simple(kind: "number", expected: "a whole number from 1 to \(SwitchyardConfig.maxWorkers), or auto") { text in
            if text == "auto" { return .some(nil) }
            return parsePositiveInt(text).flatMap { $0 <= SwitchyardConfig.maxWorkers ? .some($0) : nil }
        }
    }
}

extension ValueParser where V == HostPort {
    static var hostPort: ValueParser {
        ValueParser { value, key throws(ValueError) in
            let expected = "expected HOST:PORT, e.g. 0.0.0.0:6432 or [::]:6432"
            if value.isEmpty { throw ValueError("missing value for \(key) (\(expected))") }
            do throws(ValueError) {
                return try SwitchyardCore.hostPort(value)
            } catch {
                throw ValueError("bad address \"\(value)\" for \(key): \(error.message) (\(expected))")
            }
        }
    }
}

extension ValueParser where V == HostPort? {
    /// HOST:PORT, or empty for "off" (nil).
    static var optionalHostPort: ValueParser {
        ValueParser { value, key throws(ValueError) in
            if value.isEmpty { return nil }
            return try ValueParser<HostPort>.hostPort.parse(value, key)
        }
    }
}

extension ValueParser where V: RawRepresentable & CaseIterable, V.RawValue == String {
    static func oneOf(_ type: V.Type) -> ValueParser {
        let names = V.allCases.map(\.rawValue)
        let expected = "one of " + names.joined(separator: ", ")
        return .simple(kind: "value", expected: expected) { V(rawValue: $0) }
    }
}

private func parsePositiveInt(_ text: String) -> Int? {
    guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
          let value = Int(text), value > 0
    else { return nil }
    return value
}

// MARK: - The loading state machine

private struct Loader {
    let file: String
    let environment: [String: String]
    var config: SwitchyardConfig

    private enum Current {
        case none
        case global(GlobalConfig)
        case service(ServiceConfig)
    }

    private var current = Current.none
    /// Label for messages, e.g. `[service pg]`.
    private var sectionLabel = ""
    /// First line of each key seen in the current section.
    private var seenKeys: [String: Int] = [:]
    private var globalLine: Int?
    private var serviceLines: [String: Int] = [:]
    /// Line of each server name of the current service.
    private var serverLines: [String: Int] = [:]
    /// Listen addresses (and the admin address, service "") accepted so far, to catch two
    /// listeners on one socket.
    private var bound: [(address: HostPort, service: String, line: Int)] = []

    init(file: String, environment: [String: String]) {
        self.file = file
        self.environment = environment
        self.config = SwitchyardConfig(file: file)
    }

    private func error(_ line: Int, _ message: String) -> ConfigError {
        ConfigError(file: file, line: line, message: message)
    }

    mutating func beginSection(name: String, argument: String?, line: Int) throws(ConfigError) {
        seenKeys = [:]
        serverLines = [:]
        switch name {
        case "global":
            if let argument { throw error(line, "[global] takes no name (found \"\(argument)\")") }
            if let first = globalLine { throw error(line, "duplicate [global] section (first at line \(first))") }
            globalLine = line
            sectionLabel = "[global]"
            current = .global(config.global)
        case "service":
            guard let serviceName = argument else {
                throw error(line, "missing service name (expected [service NAME])")
            }
            guard isValidName(serviceName) else {
                throw error(line, "bad service name \"\(serviceName)\" (use letters, digits, -, _ and .)")
            }
            if let first = serviceLines[serviceName] {
                throw error(line, "duplicate service \(serviceName) (first at line \(first))")
            }
            serviceLines[serviceName] = line
            sectionLabel = "[service \(serviceName)]"
            current = .service(ServiceConfig(name: serviceName, line: line))
        default:
            let shown = argument.map { "[\(name) \($0)]" } ?? "[\(name)]"
            throw error(line, "unknown section \(shown) (expected [global] or [service NAME])")
        }
    }

    mutating func finishSection() throws(ConfigError) {
        switch current {
        case .none:
            break
        case .global(let global):
            config.global = global
        case .service(let service):
            if service.listen.isEmpty {
                throw error(service.line, "service \(service.name) has no listen address (add listen = HOST:PORT)")
            }
            if service.servers.isEmpty {
                throw error(service.line, "service \(service.name) has no server (add server = NAME HOST:PORT)")
            }
            if let line = seenKeys["eject_time_max"], service.health.ejectTimeMax < service.health.ejectTime {
                throw error(line, "eject_time_max is shorter than eject_time: an ejection lasts at least eject_time")
            }
            if service.health.check != .tcp {
                for key in ["check_send", "check_expect"] {
                    if let line = seenKeys[key] {
                        throw error(line, "\(key) applies only with check = tcp (this service has check = \(service.health.check.rawValue))")
                    }
                }
            }
            if service.health.check != .pgsql, let line = seenKeys["check_user"] {
                throw error(line, "check_user applies only with check = pgsql (this service has check = \(service.health.check.rawValue))")
            }
            if service.health.checkUser == nil, let line = seenKeys["check_database"] {
                throw error(line, "check_database applies only with check_user (the login probe of check = pgsql)")
            }
            config.services.append(service)
        }
        current = .none
    }

    mutating func entry(key: String, rawValue: String, line: Int) throws(ConfigError) {
        switch current {
        case .none:
            // INIParser never yields an entry outside a section, and a bad header throws.
            throw error(line, "\"\(key)\" is outside any section")
        case .global(var global):
            try apply(ConfigSchema.global, to: &global, key: key, rawValue: rawValue, line: line)
            if key == "admin", let address = global.admin {
                try bind(address, service: "", line: line)
            }
            current = .global(global)
        case .service(var service):
            let listenCount = service.listen.count
            let serverCount = service.servers.count
            try apply(ConfigSchema.service, to: &service, key: key, rawValue: rawValue, line: line)
            for address in service.listen[listenCount...] {
                try bind(address, service: service.name, line: line)
            }
            for server in service.servers[serverCount...] {
                if let first = serverLines[server.name] {
                    throw error(line, "duplicate server \(server.name) in service \(service.name) (first at line \(first))")
                }
                serverLines[server.name] = line
            }
            current = .service(service)
        }
    }

    private mutating func apply<T>(_ rules: [KeyRule<T>], to target: inout T, key: String, rawValue: String, line: Int) throws(ConfigError) {
        guard let rule = rules.first(where: { $0.key == key }) else {
            let names = rules.map(\.key)
            // A key of the other kind of section: say where it goes.
            let inGlobal = ConfigSchema.global.contains { $0.key == key }
            if inGlobal || ConfigSchema.service.contains(where: { $0.key == key }) {
                let home = inGlobal ? "[global]" : "each [service NAME]"
                throw error(line, "key \(key) does not belong in \(sectionLabel) (it goes in \(home))")
            }
            if let close = names.min(by: { editDistance($0, key) < editDistance($1, key) }),
               editDistance(close, key) <= max(1, key.count / 4) {
                throw error(line, "unknown key \"\(key)\" in \(sectionLabel) (did you mean \(close)?)")
            }
            throw error(line, "unknown key \"\(excerpt(key))\" in \(sectionLabel) (known keys: \(names.joined(separator: ", ")))")
        }
        if !rule.repeatable, let first = seenKeys[key] {
            throw error(line, "duplicate key \(key) in \(sectionLabel) (first at line \(first))")
        }
        seenKeys[key] = seenKeys[key] ?? line
        do throws(ValueError) {
            var setButEmpty: [String] = []
            let value = try substituteEnvironment(rawValue, environment: environment, setButEmpty: &setButEmpty)
            // `admin_token = ${ADMIN_TOKEN}` (no default: the token is required) with the variable
            // set but empty — a Secret made from an empty shell variable — would silently leave the
            // mutations open: refuse it. `${ADMIN_TOKEN:-}` says that no token is fine.
            if key == "admin_token" && value.isEmpty, let name = setButEmpty.first {
                throw ValueError("admin_token: environment variable \(name) is set but empty, which would leave "
                    + "the admin mutations unprotected (write ${\(name):-} if running without a token is intended)")
            }
            do throws(ValueError) {
                try rule.apply(&target, value, line)
            } catch {
                var message = error.message
                // A long value is shown cut short (a whole pasted file helps nobody).
                if value.count > excerptLength { message = message.replacing(value, with: excerpt(value)) }
                if !setButEmpty.isEmpty {
                    let names = setButEmpty.map { "${\($0)}" }.joined(separator: ", ")
                    // `server = pg1 ${PG1}`, `listen = 127.0.0.1:${PORT}` with the variable empty.
                    message += value.isEmpty
                        ? " (the value comes from \(names), which is set but empty)"
                        : " (\(names) in it is set but empty)"
                }
                throw ValueError(message)
            }
        } catch {
            throw self.error(line, error.message)
        }
    }

    /// The admin endpoint's default address (no `admin` line) must not be a service's too.
    func checkDefaultAdminAddress() throws(ConfigError) {
        guard !bound.contains(where: { $0.service.isEmpty }), let admin = config.global.admin,
              let other = bound.first(where: { listenAddressesConflict($0.address, admin) })
        else { return }
        throw error(other.line, "listen address \(other.address) conflicts with the admin endpoint's default address \(admin) (move it with admin = HOST:PORT, or turn it off with admin =, in [global])")
    }

    /// `service`: the listening service's name, or "" for the admin endpoint.
    private mutating func bind(_ address: HostPort, service: String, line: Int) throws(ConfigError) {
        if let other = bound.first(where: { listenAddressesConflict($0.address, address) }) {
            let owner = other.service.isEmpty ? "the admin endpoint"
                : other.service == service ? "this service" : "service \(other.service)"
            let what = service.isEmpty ? "admin address" : "listen address"
            if other.address == address {
                throw error(line, "\(what) \(address) is already used by \(owner) (line \(other.line))")
            }
            throw error(line, "\(what) \(address) conflicts with \(other.address) of \(owner) (line \(other.line))")
        }
        bound.append((address, service, line))
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
func editDistance(_ a: String, _ b: String) -> Int {
    let x = Array(a.utf8), y = Array(b.utf8)
    if x.isEmpty { return y.count }
    if y.isEmpty { return x.count }
    var previous = Array(0...y.count)
    var current = Array(repeating: 0, count: y.count + 1)
    for i in 1...x.count {
        current[0] = i
        for j in 1...y.count {
            let substitution = previous[j - 1] + (x[i - 1] == y[j - 1] ? 0 : 1)
            current[j] = min(substitution, previous[j] + 1, current[j - 1] + 1)
        }
        swap(&previous, &current)
    }
    return previous[y.count]
}

// MARK: - Reading the file (the only I/O in SwitchyardCore)

private let maxConfigFileSize = 16 << 20

/// Why a file could not be read, and the line at fault if one is (0: none).
private struct ReadError: Error {
    var message: String
    var line = 0
}

private func readTextFile(_ path: String) throws(ReadError) -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw ReadError(message: errnoDescription()) }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            throw ReadError(message: errnoDescription())
        }
        if n == 0 { break }
        bytes.append(contentsOf: chunk[..<n])
        if bytes.count > maxConfigFileSize { throw ReadError(message: "file is larger than 16 MiB") }
    }
    guard let text = String(validating: bytes, as: UTF8.self) else {
        // Name the first line that is not UTF-8 (a Latin-1 é in a comment, say).
        var line = 1
        for lineBytes in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            if String(validating: lineBytes, as: UTF8.self) == nil { break }
            line += 1
        }
        throw ReadError(message: "not valid UTF-8 text (save the file as UTF-8)", line: line)
    }
    return text
}

private func errnoDescription() -> String {
    guard let message = strerror(errno) else { return "error \(errno)" }
    return String(cString: message)
}
