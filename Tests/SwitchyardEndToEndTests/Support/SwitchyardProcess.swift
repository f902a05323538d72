// A switchyard process under test: config written to a temp folder, stderr (JSON logs) collected,
// listener addresses taken from the `listening` lines, /proc probes, and a kill on every exit path.
import Foundation
import Glibc

/// INI text for tests: admin always off, JSON logs, one worker (or `SWITCHYARD_TEST_WORKERS`,
/// so that the whole suite can run against several event-loop threads).
enum TestConfig {
    static var workers: Int {
        guard let text = getenv("SWITCHYARD_TEST_WORKERS"), let n = Int(String(cString: text)), n > 0 else { return 1 }
        return n
    }

    /// `SWITCHYARD_TEST_SPLICE`: when set, every service gets `splice = on` (or the value itself
    /// when it is `auto`, `on` or `off`), so that the whole suite can run through the splice relay.
    static var splice: String? {
        guard let text = getenv("SWITCHYARD_TEST_SPLICE") else { return nil }
        let value = String(cString: text)
        if value.isEmpty { return nil }
        return ["auto", "on", "off"].contains(value) ? value : "on"
    }

    static func global(maxConnections: Int = 10_000, logLevel: String = "info") -> String {
        """
        [global]
        admin =
        log_level = \(logLevel)
        log_format = json
        max_connections = \(maxConnections)
        workers = \(workers)

        """
    }

    /// A `[service NAME]` section; `servers` are the text after `server = `, e.g. "a 127.0.0.1:80 weight=2".
    static func service(
        _ name: String,
        balance: String = "least_conn",
        servers: [String],
        listeners: Int = 1,
        connectTimeout: String = "2s",
        idleTimeout: String = "1h",
        extra: [String] = []
    ) -> String {
        var text = "[service \(name)]\n"
        for _ in 0..<listeners { text += "listen = 127.0.0.1:0\n" }
        text += "balance = \(balance)\n"
        for server in servers { text += "server = \(server)\n" }
        text += "connect_timeout = \(connectTimeout)\n"
        text += "idle_timeout = \(idleTimeout)\n"
        if let splice { text += "splice = \(splice)\n" }
        for line in extra { text += line + "\n" }
        text += "\n"
        return text
    }
}

final class SwitchyardProcess {
    let child: ChildProcess
    let directory: URL
    let configPath: String

    /// The switchyard executable: `$SWITCHYARD_BINARY`, else `switchyard` next to the test bundle.
    static func binaryPath() throws -> String {
        if let override = ProcessInfo.processInfo.environment["SWITCHYARD_BINARY"], !override.isEmpty {
            guard FileManager.default.isExecutableFile(atPath: override) else {
                throw HarnessError("SWITCHYARD_BINARY=\(override) is not an executable file")
            }
            return override
        }
        var directories: [URL] = []
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            directories.append(URL(fileURLWithPath: exe).deletingLastPathComponent())
        }
        if let first = CommandLine.arguments.first {
            directories.append(URL(fileURLWithPath: first).standardizedFileURL.deletingLastPathComponent())
        }
        if let bundleExe = Bundle.main.executableURL {
            directories.append(bundleExe.deletingLastPathComponent())
        }
        // The test runner sits in the build folder next to the executable (a bundle layout,
        // NAME.xctest/Contents/MacOS/NAME, puts it up to three levels deeper).
        for dir in directories {
            var candidate = dir
            for _ in 0..<4 {
                let path = candidate.appendingPathComponent("switchyard").path
                if FileManager.default.isExecutableFile(atPath: path) { return path }
                candidate = candidate.deletingLastPathComponent()
            }
        }
        throw HarnessError(
            "switchyard binary not found next to the test bundle (looked in \(directories.map(\.path))); "
                + "build it with `swift build` or set SWITCHYARD_BINARY"
        )
    }

    /// A fresh temporary folder for one test's files.
    static func makeTemporaryDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("switchyard-e2e-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    /// Writes `config`, starts `switchyard run --config PATH` and (by default) waits for `started`.
    /// `environment`: the child's whole environment (nil: inherit this process's). `launcher`: a
    /// command that execs the rest of its arguments (same process), e.g. `prlimit --nofile=64`.
    init(
        config: String, waitForStart: Bool = true, startTimeout: Duration = .seconds(20),
        environment: [String: String]? = nil, launcher: [String] = []
    ) throws {
        let binary = try SwitchyardProcess.binaryPath()
        directory = try SwitchyardProcess.makeTemporaryDirectory()
        configPath = directory.appendingPathComponent("switchyard.ini").path
        do {
            try config.write(toFile: configPath, atomically: true, encoding: .utf8)
            let command = launcher + [binary, "run", "--config", configPath]
            child = try ChildProcess(executable: command[0], arguments: Array(command.dropFirst()), environment: environment)
        } catch {
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
        if waitForStart {
            do {
                try waitUntilStarted(timeout: startTimeout)
            } catch {
                stop()
                throw error
            }
        }
    }

    deinit { stop() }

    /// Stops switchyard (SIGSTOP) and waits until every thread is stopped, so that what happens
    /// next (connections, closes, resets) waits in the kernel until `resume()`.
    func suspend() throws {
        child.signal(SIGSTOP)
        try waitUntil("every switchyard thread stopped", timeout: .seconds(5)) {
            let states = threadStates(pid: pid)
            return !states.isEmpty && states.values.allSatisfy { $0 == "T" || $0 == "t" }
        }
    }

    func resume() {
        child.signal(SIGCONT)
    }

    /// SIGKILL if still running; removes the temp folder. Idempotent.
    func stop() {
        child.kill()
        try? FileManager.default.removeItem(at: directory)
    }

    var pid: Int32 { child.pid }
    var isRunning: Bool { child.isRunning }
    var logLines: [LogLine] { child.stderr.lines }
    var stderrText: String { child.stderr.text }

    /// The last `count` stderr lines, for failure messages.
    func recentLog(_ count: Int = 30) -> String {
        logLines.suffix(count).map(\.raw).joined(separator: "\n")
    }

    func waitUntilStarted(timeout: Duration) throws {
        let deadline = Deadline(after: timeout)
        while true {
            if logLines.contains(where: { $0.message == "started" }) { return }
            if let status = child.exitStatus {
                child.waitForOutputEnd(timeout: .seconds(2))
                throw HarnessError("switchyard exited (\(status)) before logging \"started\"; stderr:\n\(stderrText)")
            }
            if deadline.hasPassed {
                throw HarnessError("switchyard did not log \"started\" within \(timeout); stderr so far:\n\(stderrText)")
            }
            pause(.milliseconds(10))
        }
    }

    /// Waits for a stderr line satisfying `predicate`; throws with the recent log on timeout.
    @discardableResult
    func waitForLogLine(
        _ what: String, timeout: Duration = .seconds(5), where predicate: (LogLine) -> Bool
    ) throws -> LogLine {
        do {
            return try waitFor("log line: \(what)", timeout: timeout) { logLines.first(where: predicate) }
        } catch {
            throw HarnessError("\(error); recent log:\n\(recentLog())")
        }
    }

    /// The `connection closed` line for the client connection from `client` ("ip:port").
    func waitForConnectionClosed(client: String, timeout: Duration = .seconds(5)) throws -> LogLine {
        try waitForLogLine("\"connection closed\" for client \(client)", timeout: timeout) {
            $0.message == "connection closed" && $0["client"] == client
        }
    }

    /// Waits until every server in `servers` of `service` has been reported up by the health checks.
    ///
    /// By default switchyard probes its servers (`check = tcp`) and counts them down until a first
    /// probe passes (`check_initial = down`); meanwhile panic mode uses all of them. The first probe
    /// round is spread over the first 10% of `check_interval` after `started`, so during those
    /// ~200 ms the set of usable servers changes under the balancer. Tests of how connections are
    /// spread wait for this so they measure the steady state.
    func waitForServersUp(service: String, servers: [String], timeout: Duration = .seconds(5)) throws {
        for server in servers {
            try waitForLogLine("server \(server) of service \(service) up", timeout: timeout) {
                $0["service"] == service && $0["server"] == server && $0["state"] == "up"
            }
        }
    }

    /// Actual bound addresses of `service`, from its `listening` lines.
    func listenAddresses(service: String) -> [String] {
        logLines.filter { $0.message == "listening" && $0["service"] == service }.compactMap { $0["address"] }
    }

    /// Port of the (first) listener of `service`.
    func port(_ service: String) throws -> UInt16 {
        try ports(service).first!
    }

    /// Ports of all listeners of `service`.
    func ports(_ service: String) throws -> [UInt16] {
        let addresses = listenAddresses(service: service)
        guard !addresses.isEmpty else {
            throw HarnessError("no \"listening\" line for service \(service); log:\n\(recentLog())")
        }
        return try addresses.map { address in
            guard let colon = address.lastIndex(of: ":"), let port = UInt16(address[address.index(after: colon)...]), port != 0 else {
                throw HarnessError("service \(service) logged an unusable listening address \(address.debugDescription)")
            }
            return port
        }
    }

    /// Number of entries in /proc/PID/fd.
    func openDescriptorCount() throws -> Int {
        do {
            return try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count
        } catch {
            throw HarnessError("cannot list /proc/\(pid)/fd: \(error)")
        }
    }

    /// VmRSS from /proc/PID/status, in KiB.
    func residentMemoryKiB() throws -> Int {
        let status: String
        do {
            status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        } catch {
            throw HarnessError("cannot read /proc/\(pid)/status: \(error)")
        }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if fields.count >= 2, let kib = Int(fields[1]) { return kib }
        }
        throw HarnessError("no VmRSS in /proc/\(pid)/status")
    }

    /// SigBlk/SigIgn/SigCgt of the process, for failure messages about signals.
    func signalMasks() -> String {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return "no /proc status" }
        return status.split(separator: "\n").filter { $0.hasPrefix("SigBlk") || $0.hasPrefix("SigIgn") || $0.hasPrefix("SigCgt") }
            .map { $0.replacingOccurrences(of: "\t", with: " ") }.joined(separator: ", ")
    }

    /// Sends `signal` (SIGTERM by default) and waits for the exit; throws if it does not exit in time.
    func terminate(signal: Int32 = SIGTERM, timeout: Duration = .seconds(10)) throws -> ExitStatus {
        child.signal(signal)
        do {
            return try child.waitForExit(timeout: timeout)
        } catch {
            throw HarnessError("\(error) after signal \(signal) (\(signalMasks())); recent log:\n\(recentLog())")
        }
    }
}
