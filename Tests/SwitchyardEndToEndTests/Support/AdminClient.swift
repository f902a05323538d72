// Operations-side helpers: an HTTP/1.1 client for the admin endpoint, parsed /metrics and /status,
// configs with the admin endpoint on, work on a background thread, and promtool.
import Foundation
import Glibc
import Synchronization

// MARK: - Configuration text

/// INI text for the operations tests: admin on 127.0.0.1:0, JSON logs, one worker, fast probes.
enum OpsConfig {
    static func global(adminToken: String? = nil, drainTimeout: String? = nil, admin: String = "127.0.0.1:0") -> String {
        var text = """
            [global]
            admin = \(admin)
            log_level = info
            log_format = json
            max_connections = 10000
            workers = \(TestConfig.workers)

            """
        if let adminToken { text += "admin_token = \(adminToken)\n" }
        if let drainTimeout { text += "drain_timeout = \(drainTimeout)\n" }
        return text + "\n"
    }

    /// A `[service NAME]` section; `servers` are the text after `server = `. `extra` are more
    /// `key = value` lines (e.g. "on_down = close").
    static func service(
        _ name: String,
        listen: String = "127.0.0.1:0",
        balance: String = "round_robin",
        servers: [String],
        checkInterval: String = "200ms",
        extra: [String] = []
    ) -> String {
        var text = "[service \(name)]\nlisten = \(listen)\nbalance = \(balance)\n"
        for server in servers { text += "server = \(server)\n" }
        text += "connect_timeout = 2s\nidle_timeout = 1h\ncheck_interval = \(checkInterval)\n"
        for line in extra { text += line + "\n" }
        return text + "\n"
    }
}

/// A loopback port that nothing listens on right now, for configs that must name a fixed listen
/// port (reload keeps or closes listeners by address). Taken below the kernel's ephemeral range
/// (32768+), so no outgoing connection of a concurrently running test can be holding it.
func reserveLoopbackPort() throws -> UInt16 {
    for _ in 0..<200 {
        let port = UInt16.random(in: 20_000..<32_000)
        let fd = try Socket.makeTCP()
        defer { close(fd) }
        guard (try? Socket.bind(fd, ip: "127.0.0.1", port: port)) != nil, listen(fd, 1) == 0 else { continue }
        return port
    }
    throw HarnessError("no free loopback port found in 20000..<32000")
}

// MARK: - HTTP

/// One parsed HTTP response from the admin endpoint.
struct HTTPReply: CustomStringConvertible {
    var status: Int
    var reason: String
    var headers: [(name: String, value: String)]
    var body: [UInt8]

    var text: String { String(decoding: body, as: UTF8.self) }

    /// First value of `name` (case-insensitive).
    func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    var description: String {
        "HTTP \(status) \(reason); headers \(headers.map { "\($0.name): \($0.value)" }); body \(text.debugDescription)"
    }
}

enum AdminHTTP {
    /// Sends `raw` on a new connection to 127.0.0.1:`port` and reads the whole response (the
    /// endpoint answers one request per connection and closes).
    static func exchange(port: UInt16, raw: [UInt8], timeout: Duration = .seconds(5)) throws -> HTTPReply {
        let client = try TestClient(port: port, timeout: timeout)
        defer { client.close() }
        try client.send(raw, timeout: timeout)
        let (bytes, end) = try client.readToEnd(timeout: timeout)
        guard let reply = parse(bytes) else {
            throw HarnessError("unparsable admin response (stream end \(end)): \(String(decoding: bytes, as: UTF8.self).debugDescription)")
        }
        return reply
    }

    static func request(
        port: UInt16, method: String, path: String, headers: [(String, String)] = [], body: String = "",
        timeout: Duration = .seconds(5)
    ) throws -> HTTPReply {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if !body.isEmpty || method == "POST" { head += "Content-Length: \(body.utf8.count)\r\n" }
        head += "\r\n"
        return try exchange(port: port, raw: Array((head + body).utf8), timeout: timeout)
    }

    /// Status line, header fields, then the body (the rest of the stream).
    static func parse(_ bytes: [UInt8]) -> HTTPReply? {
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        guard bytes.count >= 4,
              let headEnd = (0...(bytes.count - 4)).first(where: { Array(bytes[$0..<$0 + 4]) == separator })
        else { return nil }
        let head = String(decoding: bytes[..<headEnd], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst()
        let parts = statusLine.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]) else { return nil }
        var headers: [(name: String, value: String)] = []
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { return nil }
            headers.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        return HTTPReply(
            status: status, reason: parts.count > 2 ? String(parts[2]) : "", headers: headers,
            body: Array(bytes[(headEnd + 4)...]))
    }
}

// MARK: - /metrics

struct MetricSample {
    var name: String
    var labels: [String: String]
    var value: Double
}

/// A parsed Prometheus text exposition.
struct MetricsSnapshot: CustomStringConvertible {
    let text: String
    let samples: [MetricSample]

    init(text: String) throws {
        self.text = text
        var samples: [MetricSample] = []
        for line in text.split(separator: "\n") where !line.hasPrefix("#") && !line.isEmpty {
            guard let sample = MetricsSnapshot.parseLine(Substring(line)) else {
                throw HarnessError("unparsable metrics line \(String(line).debugDescription)")
            }
            samples.append(sample)
        }
        self.samples = samples
    }

    private static func parseLine(_ line: Substring) -> MetricSample? {
        var labels: [String: String] = [:]
        let name: String
        var rest: Substring
        if let brace = line.firstIndex(of: "{") {
            name = String(line[..<brace])
            var i = line.index(after: brace)
            while i < line.endIndex && line[i] != "}" {
                guard let eq = line[i...].firstIndex(of: "=") else { return nil }
                let key = String(line[i..<eq]).trimmingCharacters(in: CharacterSet(charactersIn: ", "))
                var j = line.index(after: eq)
                guard j < line.endIndex, line[j] == "\"" else { return nil }
                j = line.index(after: j)
                var value = ""
                while j < line.endIndex && line[j] != "\"" {
                    if line[j] == "\\" {
                        j = line.index(after: j)
                        guard j < line.endIndex else { return nil }
                        value.append(line[j] == "n" ? "\n" : line[j])
                    } else {
                        value.append(line[j])
                    }
                    j = line.index(after: j)
                }
                guard j < line.endIndex else { return nil }
                labels[key] = value
                i = line.index(after: j)
                if i < line.endIndex && line[i] == "," { i = line.index(after: i) }
            }
            guard i < line.endIndex else { return nil }
            rest = line[line.index(after: i)...]
        } else {
            guard let space = line.firstIndex(of: " ") else { return nil }
            name = String(line[..<space])
            rest = line[space...]
        }
        let fields = rest.split(separator: " ")
        guard let first = fields.first else { return nil }
        let value: Double
        switch first {
        case "+Inf": value = .infinity
        case "-Inf": value = -.infinity
        case "NaN": value = .nan
        default:
            guard let v = Double(first) else { return nil }
            value = v
        }
        return MetricSample(name: name, labels: labels, value: value)
    }

    /// The value of the one sample named `name` whose labels include `labels`; throws if there is
    /// none or more than one.
    func value(_ name: String, _ labels: [String: String] = [:]) throws -> Double {
        let matches = samples.filter { sample in
            sample.name == name && labels.allSatisfy { sample.labels[$0.key] == $0.value }
        }
        guard matches.count == 1 else {
            let family = samples.filter { $0.name == name }.map { "\($0.labels) \($0.value)" }
            throw HarnessError("\(matches.count) samples of \(name) match \(labels) (samples of \(name): \(family))")
        }
        return matches[0].value
    }

    var description: String { text }
}

// MARK: - /status

/// The parsed /status document.
struct StatusSnapshot: CustomStringConvertible {
    let text: String
    let root: [String: Any]

    init(text: String) throws {
        self.text = text
        guard let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw HarnessError("/status is not a JSON object: \(text)")
        }
        root = object
    }

    var services: [[String: Any]] { root["services"] as? [[String: Any]] ?? [] }

    func service(_ name: String) -> [String: Any]? {
        services.first { $0["name"] as? String == name }
    }

    func servers(of service: String) -> [[String: Any]] {
        self.service(service)?["servers"] as? [[String: Any]] ?? []
    }

    func server(_ service: String, _ name: String) -> [String: Any]? {
        servers(of: service).first { $0["name"] as? String == name }
    }

    /// `state` of a server ("up", "down", "draining", "disabled", ...), nil when not listed.
    func state(_ service: String, _ server: String) -> String? {
        self.server(service, server)?["state"] as? String
    }

    var description: String { text }
}

// MARK: - A switchyard with its admin endpoint

extension SwitchyardProcess {
    /// Port of the admin endpoint, from the `admin listening` line.
    func adminPort() throws -> UInt16 {
        guard let line = logLines.first(where: { $0.message == "admin listening" }) else {
            throw HarnessError("no \"admin listening\" line; log:\n\(recentLog())")
        }
        guard let address = line["address"], let colon = address.lastIndex(of: ":"),
              let port = UInt16(address[address.index(after: colon)...]), port != 0
        else { throw HarnessError("unusable admin address in \(line.raw)") }
        return port
    }

    func admin(_ method: String, _ path: String, token: String? = nil, headers: [(String, String)] = []) throws -> HTTPReply {
        var all = headers
        if let token { all.append(("Authorization", "Bearer \(token)")) }
        return try AdminHTTP.request(port: try adminPort(), method: method, path: path, headers: all)
    }

    func metrics() throws -> MetricsSnapshot {
        let reply = try admin("GET", "/metrics")
        guard reply.status == 200 else { throw HarnessError("GET /metrics: \(reply)") }
        return try MetricsSnapshot(text: reply.text)
    }

    func status() throws -> StatusSnapshot {
        let reply = try admin("GET", "/status")
        guard reply.status == 200 else { throw HarnessError("GET /status: \(reply)") }
        return try StatusSnapshot(text: reply.text)
    }

    /// Number of log lines with this message.
    func logCount(_ message: String) -> Int {
        logLines.filter { $0.message == message }.count
    }

    /// Sends SIGHUP and waits for the `count`-th `configuration reloaded` line.
    func reloadBySignal(expectSuccessCount count: Int, timeout: Duration = .seconds(5)) throws {
        child.signal(SIGHUP)
        try waitForLogLineCount("configuration reloaded", count, timeout: timeout)
    }

    /// Waits until at least `count` lines carry `message`.
    func waitForLogLineCount(_ message: String, _ count: Int, timeout: Duration = .seconds(5)) throws {
        do {
            try waitUntil("\(count) \"\(message)\" log line(s)", timeout: timeout) { logCount(message) >= count }
        } catch {
            throw HarnessError("\(error); recent log:\n\(recentLog())")
        }
    }

    func rewriteConfig(_ text: String) throws {
        try text.write(toFile: configPath, atomically: true, encoding: .utf8)
    }
}

// MARK: - Background work

/// Runs `body` on its own thread; `wait` returns its result or rethrows its error.
final class BackgroundTask<T: Sendable>: Sendable {
    private let result = Mutex<Result<T, HarnessError>?>(nil)

    init(_ name: String, _ body: @escaping @Sendable () throws -> T) {
        let thread = Thread { [self] in
            let outcome: Result<T, HarnessError>
            do {
                outcome = .success(try body())
            } catch let error as HarnessError {
                outcome = .failure(error)
            } catch {
                outcome = .failure(HarnessError("\(error)"))
            }
            result.withLock { $0 = outcome }
        }
        thread.name = name
        thread.start()
    }

    var isFinished: Bool { result.withLock { $0 != nil } }

    func wait(timeout: Duration) throws -> T {
        let outcome = try waitFor("background task to finish", timeout: timeout) { result.withLock { $0 } }
        return try outcome.get()
    }
}

/// A client opening short connections in a loop (connect, read the identify greeting, one round
/// trip, close) until stopped, recording every failure.
final class ConnectionLoop: Sendable {
    struct Tally: Sendable {
        var successes = 0
        var failures: [String] = []
        var servers: [String: Int] = [:]
        var total: Int { successes + failures.count }
    }

    private let shared: LoopShared
    private let task: BackgroundTask<Void>

    init(port: UInt16, pace: Duration = .milliseconds(5)) {
        let shared = LoopShared()
        self.shared = shared
        task = BackgroundTask("connection loop") {
            var i = 0
            while !shared.stopped {
                i += 1
                do {
                    let client = try TestClient(port: port, timeout: .seconds(2))
                    defer { client.close() }
                    let name = try client.readLine(timeout: .seconds(2))
                    try client.roundTrip("loop \(i)\n", timeout: .seconds(2))
                    shared.record {
                        $0.successes += 1
                        $0.servers[name, default: 0] += 1
                    }
                } catch {
                    shared.record { $0.failures.append("connection \(i): \(error)") }
                }
                pause(pace)  // the traffic pattern: many short connections, not a flood
            }
        }
    }

    var current: Tally { shared.tally }

    func stop() throws -> Tally {
        shared.stop()
        try task.wait(timeout: .seconds(10))
        return shared.tally
    }

    /// Waits until `more` further connections have been tried.
    func waitForProgress(_ more: Int, timeout: Duration = .seconds(5)) throws {
        let base = current.total
        try waitUntil("the connection loop to make \(more) more connections (now \(current.total - base))", timeout: timeout) {
            current.total >= base + more
        }
    }
}

private final class LoopShared: Sendable {
    private let state = Mutex(ConnectionLoop.Tally())
    private let flag = Atomic<Bool>(false)

    var stopped: Bool { flag.load(ordering: .acquiring) }
    func stop() { flag.store(true, ordering: .releasing) }
    var tally: ConnectionLoop.Tally { state.withLock { $0 } }
    func record(_ change: (inout ConnectionLoop.Tally) -> Void) { state.withLock { change(&$0) } }
}

// MARK: - promtool

enum Promtool {
    /// `/usr/bin/promtool` (Debian package `prometheus`), or a failure saying how to install it.
    static func path() throws -> String {
        if let found = ChildProcess.locate("promtool") { return found }
        throw HarnessError(
            "promtool not found: run the README test command (apt-get install -y ... prometheus), "
                + "which installs /usr/bin/promtool")
    }

    /// Runs `promtool check metrics` on `text` (fed on stdin, as the tool expects).
    static func checkMetrics(_ text: String) throws -> (status: ExitStatus, output: String) {
        let tool = try path()
        let dir = try SwitchyardProcess.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("metrics.txt").path
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        let result = try ChildProcess.run("/bin/sh", ["-c", "exec \"$0\" check metrics < \"$1\"", tool, file], timeout: .seconds(30))
        return (result.status, result.stdout + result.stderr)
    }
}
