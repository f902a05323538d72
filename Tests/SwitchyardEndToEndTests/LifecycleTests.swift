// Process-level behaviour: no descriptor leaks, signals, the command line.
import Foundation
import Glibc
import Testing

@Suite("Lifecycle")
struct LifecycleTests {
    @Test("After 1000 connections the open descriptors return to their starting count")
    func noDescriptorLeak() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let proxy = try SwitchyardProcess(config: TestConfig.global()
            + TestConfig.service("echo", servers: ["echo \(echo.address)"]))
        defer { proxy.stop() }
        let port = try proxy.port("echo")
        // The first health probe's socket must be gone before the baseline is taken.
        try proxy.waitForServersUp(service: "echo", servers: ["echo"])
        let baseline = try proxy.openDescriptorCount()

        // 40 batches of 25 concurrent connections, each doing one round trip.
        var completed = 0
        for batch in 0..<40 {
            var clients: [TestClient] = []
            defer { clients.forEach { $0.close() } }
            for _ in 0..<25 { clients.append(try TestClient(port: port)) }
            for (index, client) in clients.enumerated() {
                try client.roundTrip("batch \(batch) client \(index)\n")
                completed += 1
            }
        }
        #expect(completed == 1000)
        try waitUntil("the backend to see 1000 relayed connections finish", timeout: .seconds(10)) {
            echo.finishedConnections.filter { $0.bytesReceived > 0 }.count >= 1000
        }

        var current = -1
        let settled = (try? waitUntil("descriptors to settle", timeout: .seconds(10)) {
            current = try proxy.openDescriptorCount()
            return current == baseline
        }) != nil
        #expect(settled, "switchyard has \(current) open descriptors after 1000 closed connections; \(baseline) before")
        #expect(proxy.isRunning)
    }

    @Test("A SIGTERM that arrives during start-up is not lost: switchyard drains and exits 0 once its handlers exist")
    func signalDuringStartup() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        // The launcher blocks SIGTERM, sends it to itself and execs switchyard: the signal is
        // pending from the first instruction on (a pending signal survives exec), exactly as if it
        // had arrived during a slow start-up.
        let launcher = [
            "/usr/bin/python3", "-c",
            "import os, signal, sys; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}); "
                + "os.kill(os.getpid(), signal.SIGTERM); os.execv(sys.argv[1], sys.argv[1:])",
        ]
        let proxy = try SwitchyardProcess(
            config: TestConfig.global() + TestConfig.service("echo", servers: ["echo \(echo.address)"]),
            waitForStart: false, launcher: launcher)
        defer { proxy.stop() }
        let status = try proxy.child.waitForExit(timeout: .seconds(20))
        proxy.child.waitForOutputEnd()
        #expect(status == .exited(0), "\(status); stderr:\n\(proxy.stderrText)")
        #expect(proxy.logLines.contains { $0.message == "draining" && $0["signal"] == "SIGTERM" }, "\(proxy.stderrText)")
    }

    @Test("Started with standard input, output or error closed, switchyard relays and exits 0 (libuv's descriptors never take 0–2)",
          arguments: ["0", "1", "2", "0 1 2"])
    func closedStandardDescriptors(closed: String) throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let port = try reserveLoopbackPort()
        // The launcher closes the descriptors, then execs switchyard.
        let launcher = [
            "/usr/bin/python3", "-c",
            "import os, sys\nfor fd in sys.argv[1].split(): os.close(int(fd))\nos.execv(sys.argv[2], sys.argv[2:])",
            closed,
        ]
        let proxy = try SwitchyardProcess(
            config: TestConfig.global() + OpsConfig.service("echo", listen: "127.0.0.1:\(port)", servers: ["echo \(echo.address)"]),
            waitForStart: false, launcher: launcher)
        defer { proxy.stop() }
        // Its log may be gone (stderr closed): the listener says when it is up.
        let client = try waitFor("switchyard listening on \(port)", timeout: .seconds(20)) { () -> TestClient? in
            #expect(proxy.child.isRunning, "switchyard exited: \(proxy.stderrText)")
            return try? TestClient(port: port, timeout: .seconds(1))
        }
        try client.roundTrip("hello with fds \(closed) closed\n")
        client.close()
        // The exit used to abort (libuv refuses to close its epoll descriptor as fd 0, 1 or 2).
        let status = try proxy.terminate(timeout: .seconds(10))
        #expect(status == .exited(0), "\(status); stderr:\n\(proxy.stderrText)")
        if !closed.contains("2") {
            proxy.child.waitForOutputEnd()
            #expect(proxy.logLines.contains { $0.message == "stopped" }, "\(proxy.stderrText)")
        }
    }

    @Test("As PID 1 or a subreaper, switchyard reaps the orphans re-parented to it (no zombies pile up)")
    func orphansAreReaped() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        // The launcher makes itself a subreaper (kept across exec, as PID 1's role is), starts
        // a shell that leaves three background children behind and exits, then execs
        // switchyard: the shell (its child) and the orphans (re-parented to it) all end while
        // it runs, and each stays a zombie until it is reaped.
        let launcher = [
            "/usr/bin/python3", "-c",
            "import ctypes, os, sys\n"
                + "assert ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0\n"  // PR_SET_CHILD_SUBREAPER
                + "if os.fork() == 0:\n"
                + "    os.execv('/bin/sh', ['sh', '-c', 'sleep 3 & sleep 3 & sleep 3 & exit 0'])\n"
                + "os.execv(sys.argv[1], sys.argv[1:])",
        ]
        let proxy = try SwitchyardProcess(
            config: TestConfig.global() + TestConfig.service("echo", servers: ["echo \(echo.address)"]), launcher: launcher)
        defer { proxy.stop() }
        let pid = proxy.pid
        /// Processes whose parent is switchyard: (pid, state letter).
        func children() -> [(Int32, String)] {
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
            return entries.compactMap { name -> (Int32, String)? in
                guard let child = Int32(name),
                      let stat = try? String(contentsOfFile: "/proc/\(name)/stat", encoding: .utf8),
                      let close = stat.lastIndex(of: ")") else { return nil }
                let fields = stat[stat.index(after: close)...].split(separator: " ")
                guard fields.count > 2, Int32(fields[1]) == pid else { return nil }
                return (child, String(fields[0]))
            }
        }
        // The orphans reach switchyard (they sleep 3 s), then end and are reaped.
        try waitUntil("the sleeps re-parented to switchyard", timeout: .seconds(10)) {
            children().filter { $0.1 != "Z" }.count >= 3
        }
        try waitUntil("no child of switchyard left (zombies: \(children().filter { $0.1 == "Z" }.map(\.0)))", timeout: .seconds(10)) {
            children().isEmpty
        }
        // Still relaying, and a normal exit.
        let client = try TestClient(port: try proxy.port("echo"))
        try client.roundTrip("hello\n")
        client.close()
        #expect(try proxy.terminate(timeout: .seconds(5)) == .exited(0))
    }

    @Test("A SIGHUP while starting is not lost: the reload runs once started, reading the file as it is then")
    func reloadDuringStartup() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        // A server that accepts and never answers: the first redis probe takes its whole
        // check_timeout, and the start waits for it.
        let silent = try Socket.makeLoopbackListener()
        defer { close(silent.fd) }
        let slow = "[service slow]\nlisten = 127.0.0.1:0\nserver = quiet 127.0.0.1:\(silent.port)\ncheck = redis\ncheck_timeout = 3s\n\n"
        let proxy = try SwitchyardProcess(config: TestConfig.global() + slow, waitForStart: false)
        defer { proxy.stop() }
        _ = try proxy.waitForLogLine("listening (bound before the start)") { $0.message == "listening" && $0["service"] == "slow" }
        #expect(!proxy.logLines.contains { $0.message == "started" }, "started before its probe answered")
        try proxy.rewriteConfig(TestConfig.global() + slow + TestConfig.service("added", servers: ["echo \(echo.address)"]))
        proxy.child.signal(SIGHUP)
        _ = try proxy.waitForLogLine("reload queued until started") { $0.message == "reload queued until started" && $0["trigger"] == "SIGHUP" }
        let reloaded = try proxy.waitForLogLine("configuration reloaded", timeout: .seconds(10)) { $0.message == "configuration reloaded" }
        #expect(reloaded["trigger"] == "SIGHUP")
        let lines = proxy.logLines
        let started = try #require(lines.firstIndex { $0.message == "started" })
        #expect(started < (lines.firstIndex { $0.message == "configuration reloaded" } ?? 0), "reloaded before it started")
        #expect(!lines.contains { $0.message == "reload ignored" })
        // The service the new file adds relays.
        let client = try TestClient(port: try proxy.port("added"))
        defer { client.close() }
        try client.roundTrip("added by the reload sent while starting\n")
    }

    @Test("SIGTERM, SIGINT and SIGQUIT make an idle switchyard drain and exit with status 0", arguments: [SIGTERM, SIGINT, SIGQUIT])
    func signalExitsZero(signal: Int32) throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let proxy = try SwitchyardProcess(config: TestConfig.global()
            + TestConfig.service("echo", servers: ["echo \(echo.address)"]))
        defer { proxy.stop() }

        // Some traffic first, so shutdown happens after real work; then idle.
        let client = try TestClient(port: try proxy.port("echo"))
        try client.roundTrip("hello\n")
        client.close()
        _ = try proxy.waitForConnectionClosed(client: client.localAddress)

        let status = try proxy.terminate(signal: signal, timeout: .seconds(5))
        #expect(status == .exited(0), "switchyard ended with \(status) after signal \(signal); log:\n\(proxy.recentLog())")
        proxy.child.waitForOutputEnd()
        let names = [SIGTERM: "SIGTERM", SIGINT: "SIGINT", SIGQUIT: "SIGQUIT"]
        #expect(proxy.logLines.contains { $0.message == "draining" && $0["signal"] == names[signal] }, "\(proxy.recentLog())")
    }
}

@Suite("Command line")
struct CommandLineTests {
    /// The repository root: this file is Tests/SwitchyardEndToEndTests/LifecycleTests.swift.
    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func iniFiles(under directory: URL) -> [String] {
        guard let enumerator = FileManager.default.enumerator(atPath: directory.path) else { return [] }
        var files: [String] = []
        while let relative = enumerator.nextObject() as? String {
            if relative.hasSuffix(".ini") { files.append(directory.appendingPathComponent(relative).path) }
        }
        return files.sorted()
    }

    @Test("switchyard check accepts every *.ini under conf/")
    func checkShippedConfigs() throws {
        let binary = try SwitchyardProcess.binaryPath()
        let files = Self.iniFiles(under: Self.repositoryRoot.appendingPathComponent("conf"))
        try #require(!files.isEmpty, "no *.ini files under \(Self.repositoryRoot.path)/conf")
        for file in files {
            let result = try ChildProcess.run(binary, ["check", "--config", file])
            #expect(result.status == .exited(0), "check \(file): \(result.status)\nstdout:\n\(result.stdout)\nstderr:\n\(result.stderr)")
            #expect(!result.stdout.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
                        || !result.stderr.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty,
                    "check \(file) printed no summary")
        }
    }

    @Test("switchyard check accepts the configuration the end-to-end tests use")
    func checkTestConfig() throws {
        let binary = try SwitchyardProcess.binaryPath()
        let dir = try SwitchyardProcess.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("test.ini").path
        try (TestConfig.global(maxConnections: 5)
            + TestConfig.service("one", balance: "ip_hash", servers: ["a 127.0.0.1:1", "b 127.0.0.1:2 weight=3"],
                                 listeners: 2, connectTimeout: "500ms", idleTimeout: "300ms")
            + TestConfig.service("two", balance: "round_robin", servers: ["c 127.0.0.1:3", "d 127.0.0.1:4 backup"],
                                 idleTimeout: "0"))
            .write(toFile: path, atomically: true, encoding: .utf8)
        let result = try ChildProcess.run(binary, ["check", "--config", path])
        #expect(result.status == .exited(0), "\(result.status)\nstdout:\n\(result.stdout)\nstderr:\n\(result.stderr)")
    }

    /// Broken configurations and the line their error is on.
    static let brokenConfigs: [(name: String, text: String, line: Int)] = [
        ("bad balance value", """
            [global]
            admin =
            log_format = json

            [service web]
            listen = 127.0.0.1:0
            balance = fastest
            server = a 127.0.0.1:8080

            """, 7),
        ("server without a port", """
            [global]
            admin =
            [service web]
            listen = 127.0.0.1:0
            server = a 127.0.0.1

            """, 5),
        ("unknown key", """
            [global]
            admin =
            ; a comment
            no_such_key = 1

            """, 4),
    ]

    @Test("switchyard check reports FILE:LINE: and exits 1 on a bad file", arguments: 0..<3)
    func checkReportsErrors(index: Int) throws {
        let broken = Self.brokenConfigs[index]
        let binary = try SwitchyardProcess.binaryPath()
        let dir = try SwitchyardProcess.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("broken.ini").path
        try broken.text.write(toFile: path, atomically: true, encoding: .utf8)

        let result = try ChildProcess.run(binary, ["check", "--config", path])
        #expect(result.status == .exited(1), "\(broken.name): \(result.status)\nstderr:\n\(result.stderr)")
        let prefix = "\(path):\(broken.line): "
        #expect(result.stderr.split(separator: "\n").contains { $0.hasPrefix(prefix) },
                "\(broken.name): expected a stderr line starting with \(prefix.debugDescription); stderr:\n\(result.stderr)")
    }

    @Test("switchyard --version prints a version")
    func version() throws {
        let result = try ChildProcess.run(try SwitchyardProcess.binaryPath(), ["--version"])
        #expect(result.status == .exited(0))
        let output = (result.stdout + result.stderr).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!output.isEmpty && output.contains(where: \.isNumber), "--version printed \(output.debugDescription)")
    }
}
