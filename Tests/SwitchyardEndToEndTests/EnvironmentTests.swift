// `${VAR}` and `${VAR:-default}` in configuration values, through the real binary and a real
// process environment.
import Foundation
import Testing

@Suite("Environment substitution")
struct EnvironmentTests {
    /// This process's environment with `set` applied and every name in `unset` removed.
    static func environment(set: [String: String] = [:], unset: [String] = []) -> [String: String] {
        var env = ProcessInfo.processInfo.environment
        for (key, value) in set { env[key] = value }
        for key in unset { env[key] = nil }
        return env
    }

    static func writeConfig(_ text: String) throws -> (dir: URL, path: String) {
        let dir = try SwitchyardProcess.makeTemporaryDirectory()
        let path = dir.appendingPathComponent("env.ini").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return (dir, path)
    }

    @Test("switchyard check shows values taken from the environment and from defaults")
    func checkSubstitutes() throws {
        let config = """
            [global]
            admin =
            log_format = json

            [service env]
            listen = 127.0.0.1:${SWY_E2E_LISTEN_PORT:-0}
            balance = ${SWY_E2E_BALANCE:-round_robin}
            server = ${SWY_E2E_NAME} ${SWY_E2E_HOST}:${SWY_E2E_PORT} weight=${SWY_E2E_WEIGHT:-3}
            server = second 127.0.0.1:${SWY_E2E_PORT2:-4568}${SWY_E2E_BACKUP_FLAG:- backup}

            """
        let (dir, path) = try Self.writeConfig(config)
        defer { try? FileManager.default.removeItem(at: dir) }
        let env = Self.environment(
            set: [
                "SWY_E2E_NAME": "primary", "SWY_E2E_HOST": "127.0.0.1", "SWY_E2E_PORT": "4567",
                "SWY_E2E_BALANCE": "ip_hash",  // set: overrides the default
                "SWY_E2E_WEIGHT": "",  // set but empty: the default applies, as in the shell
            ],
            unset: ["SWY_E2E_LISTEN_PORT", "SWY_E2E_PORT2", "SWY_E2E_BACKUP_FLAG"])
        let result = try ChildProcess.run(try SwitchyardProcess.binaryPath(), ["check", "--config", path], environment: env)
        #expect(result.status == .exited(0), "\(result.status)\nstdout:\n\(result.stdout)\nstderr:\n\(result.stderr)")
        let expected = "[service env] ip_hash on 127.0.0.1:0 -> primary=127.0.0.1:4567 weight=3, second=127.0.0.1:4568 backup"
        #expect(result.stdout.contains(expected), "expected \(expected.debugDescription) in:\n\(result.stdout)")
    }

    @Test("switchyard run takes the backend, the admin address and the admin token from the environment")
    func runSubstitutes() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let token = "token-from-env-\(UInt32.random(in: 0...UInt32.max))"
        let config = """
            [global]
            admin = ${SWY_E2E_ADMIN}
            admin_token = ${SWY_E2E_TOKEN}
            log_format = ${SWY_E2E_LOG_FORMAT:-json}
            workers = 1

            [service env]
            listen = ${SWY_E2E_LISTEN:-127.0.0.1:0}
            server = echo ${SWY_E2E_BACKEND}

            """
        let env = Self.environment(
            set: ["SWY_E2E_ADMIN": "127.0.0.1:0", "SWY_E2E_TOKEN": token, "SWY_E2E_BACKEND": echo.address],
            unset: ["SWY_E2E_LOG_FORMAT", "SWY_E2E_LISTEN"])
        let proxy = try SwitchyardProcess(config: config, environment: env)
        defer { proxy.stop() }

        // Relays to the backend named only in the environment.
        let client = try TestClient(port: try proxy.port("env"))
        defer { client.close() }
        try client.roundTrip("through ${SWY_E2E_BACKEND}\n")
        #expect(try proxy.status().server("env", "echo")?["address"] as? String == echo.address)
        // The token came from the environment too.
        #expect(try proxy.admin("POST", "/reload").status == 401)
        #expect(try proxy.admin("POST", "/reload", token: "${SWY_E2E_TOKEN}").status == 401)
        #expect(try proxy.admin("POST", "/reload", token: token).status == 200)
        // A reload reads the environment again: still the same backend.
        try proxy.waitForLogLineCount("configuration reloaded", 1)
        try client.roundTrip("after the reload\n")
    }

    @Test("An unset variable without a default: exit 1 with FILE:LINE on stderr", arguments: ["check", "run"])
    func unsetVariableFails(command: String) throws {
        let config = """
            [global]
            admin =
            log_format = json

            [service env]
            listen = 127.0.0.1:0
            server = a 127.0.0.1:${SWY_E2E_DEFINITELY_UNSET}

            """
        let (dir, path) = try Self.writeConfig(config)
        defer { try? FileManager.default.removeItem(at: dir) }
        let env = Self.environment(unset: ["SWY_E2E_DEFINITELY_UNSET"])
        let result = try ChildProcess.run(
            try SwitchyardProcess.binaryPath(), [command, "--config", path], timeout: .seconds(10), environment: env)
        #expect(result.status == .exited(1), "switchyard \(command): \(result.status)\nstderr:\n\(result.stderr)")
        let prefix = "\(path):7: "
        let line = result.stderr.split(separator: "\n").first { $0.hasPrefix(prefix) }
        #expect(line != nil, "expected a stderr line starting with \(prefix.debugDescription); stderr:\n\(result.stderr)")
        #expect(line?.contains("SWY_E2E_DEFINITELY_UNSET") == true, "the error does not name the variable: \(line ?? "")")
    }

    @Test("log_format = text: a value holding a newline stays on its record's line, escaped; it cannot forge a record")
    func textLogEscapesControlCharacters() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let forged = "2026-01-01T00:00:00.000Z critical forged record"
        let base = """
            [global]
            admin =
            log_format = text

            [service env]
            listen = 127.0.0.1:0

            """
        let env = Self.environment(set: ["SWY_E2E_MULTILINE": "bad\n\(forged)\tand\\more"])
        let proxy = try SwitchyardProcess(config: base + "server = echo \(echo.address)\n", waitForStart: false, environment: env)
        defer { proxy.stop() }
        try waitUntil("the text-format \"started\" line", timeout: .seconds(20)) { proxy.stderrText.contains(" info started ") }
        // A reload whose error carries the variable's value (not an address: the reload fails).
        try proxy.rewriteConfig(base + "server = echo \(echo.address)\nbalance = ${SWY_E2E_MULTILINE}\n")
        proxy.child.signal(SIGHUP)
        try waitUntil("the reload failure line", timeout: .seconds(5)) { proxy.stderrText.contains("reload failed") }
        let lines = proxy.stderrText.split(separator: "\n")
        let failure = lines.first { $0.contains("reload failed") }.map(String.init) ?? ""
        #expect(failure.contains("bad\\n\(forged)\\tand\\\\more"), "value not escaped on its line: \(failure)")
        #expect(!lines.contains { $0.hasPrefix(forged) }, "a forged record appeared:\n\(proxy.stderrText)")
        #expect(proxy.isRunning)
    }
}
