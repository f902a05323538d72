import Foundation
import Testing
@testable import SwitchyardCore

/// Lines joined with "\n": line N of the file is argument N.
private func lines(_ lines: String...) -> String { lines.joined(separator: "\n") }

/// What `switchyard check` would print for this text (`FILE:LINE: message`), or nil if it loads.
private func loadError(_ text: String, environment: [String: String] = [:]) -> String? {
    do {
        _ = try ConfigLoader.parse(text, file: "sy.ini", environment: environment)
        return nil
    } catch {
        return error.description
    }
}

/// A valid one-service file; `extra` lines are appended to the service (starting at line 4).
private func service(_ extra: String...) -> String {
    (["[service pg]", "listen = 0.0.0.0:6432", "server = a 10.0.0.1:5432"] + extra).joined(separator: "\n")
}

@Suite struct ConfigLoaderTests {
    @Test func completeFileGivesTypedValues() throws {
        let text = """
            ; Switchyard example
            [global]
            workers = 4
            admin = 127.0.0.1:9100     ; admin HTTP
            log_level = debug
            log_format = json
            max_connections = 500

            [service pg]
            listen = 0.0.0.0:6432
            listen = [::]:6432
            balance = round_robin
            server = pg1 10.0.0.1:5432
            server = pg2 db2.local:5432 weight=3
            server = pg3 [fd00::3]:5432 backup weight=256
            connect_timeout = 250ms
            idle_timeout = 0

            [service redis]
            listen = 127.0.0.1:6379
            server = r1 10.0.1.1:6379
            """
        let config = try ConfigLoader.parse(text, file: "sy.ini")

        var global = GlobalConfig()
        global.workers = 4
        global.admin = HostPort(host: "127.0.0.1", port: 9100)
        global.logLevel = .debug
        global.logFormat = .json
        global.maxConnections = 500

        var pg = ServiceConfig(name: "pg", line: 9)
        pg.listen = [HostPort(host: "0.0.0.0", port: 6432), HostPort(host: "::", port: 6432)]
        pg.balance = .roundRobin
        pg.servers = [
            ServerConfig(name: "pg1", address: HostPort(host: "10.0.0.1", port: 5432), line: 13),
            ServerConfig(name: "pg2", address: HostPort(host: "db2.local", port: 5432), weight: 3, line: 14),
            ServerConfig(name: "pg3", address: HostPort(host: "fd00::3", port: 5432), weight: 256, backup: true, line: 15),
        ]
        pg.connectTimeout = .milliseconds(250)
        pg.idleTimeout = .zero

        var redis = ServiceConfig(name: "redis", line: 19)
        redis.listen = [HostPort(host: "127.0.0.1", port: 6379)]
        redis.servers = [ServerConfig(name: "r1", address: HostPort(host: "10.0.1.1", port: 6379), line: 21)]

        #expect(config == SwitchyardConfig(file: "sy.ini", global: global, services: [pg, redis]))
    }

    @Test func defaultsApplyWhenKeysAreAbsent() throws {
        let config = try ConfigLoader.parse(service(), file: "sy.ini")
        #expect(config.global.workers == 1)
        #expect(config.global.admin == HostPort(host: "127.0.0.1", port: 9000))
        #expect(config.global.logLevel == .info)
        #expect(config.global.logFormat == .text)
        #expect(config.global.maxConnections == 10_000)
        let pg = try #require(config.services.first)
        #expect(pg.balance == .leastConn)
        #expect(pg.connectTimeout == .seconds(2))
        #expect(pg.idleTimeout == .seconds(3600))
        #expect(pg.servers == [ServerConfig(name: "a", address: HostPort(host: "10.0.0.1", port: 5432), weight: 1, backup: false, line: 3)])
    }

    @Test func workersAutoAndAdminOff() throws {
        let config = try ConfigLoader.parse(lines("[global]", "workers = auto", "admin =", service()), file: "sy.ini")
        #expect(config.global.workers == nil)
        #expect(config.global.admin == nil)
    }

    @Test func globalMayComeAfterServicesAndCRLFWorks() throws {
        let text = ["[service pg]", "listen = [::1]:0", "server = a 10.0.0.1:5432", "[global]", "log_level = critical", ""]
            .joined(separator: "\r\n")
        let config = try ConfigLoader.parse(text, file: "sy.ini")
        #expect(config.global.logLevel == .critical)
        #expect(config.services.map(\.listen) == [[HostPort(host: "::1", port: 0)]])
    }

    @Test func environmentSubstitutionInValues() throws {
        let text = lines(
            "[global]",
            "admin = ${ADMIN_ADDR:-127.0.0.1:9999}",
            "[service pg]",
            "listen = ${LISTEN_HOST:-0.0.0.0}:${PG_PORT}",
            "server = a ${BACKEND}:5432 weight=${W:-2}",
        )
        let config = try ConfigLoader.parse(text, file: "sy.ini", environment: ["PG_PORT": "7000", "BACKEND": "db.internal"])
        #expect(config.global.admin == HostPort(host: "127.0.0.1", port: 9999))
        #expect(config.services[0].listen == [HostPort(host: "0.0.0.0", port: 7000)])
        #expect(config.services[0].servers.map(\.address) == [HostPort(host: "db.internal", port: 5432)])
        #expect(config.services[0].servers.map(\.weight) == [2])

        #expect(loadError(text, environment: ["BACKEND": "db.internal"])
            == "sy.ini:4: environment variable PG_PORT is not set (write ${PG_PORT:-default} to give a default)")
        #expect(loadError(text, environment: ["PG_PORT": "x", "BACKEND": "db"])
            == "sy.ini:4: bad address \"0.0.0.0:x\" for listen: port \"x\" is not a number (expected HOST:PORT, e.g. 0.0.0.0:6432 or [::]:6432)")
        #expect(loadError(lines("[global]", "admin = ${X"))
            == "sy.ini:2: \"${\" without a closing \"}\" in \"${X\"")
    }

    @Test func adminTokenFromAnEmptyVariableIsRefused() throws {
        let text = lines("[global]", "admin_token = ${ADMIN_TOKEN}", "[service pg]", "listen = 127.0.0.1:0",
                         "server = a 10.0.0.1:5432")
        #expect(try ConfigLoader.parse(text, file: "sy.ini", environment: ["ADMIN_TOKEN": "s3cret"]).global.adminToken == "s3cret")
        // Set but empty (a Secret made from an empty shell variable): refused, not "no token".
        #expect(loadError(text, environment: ["ADMIN_TOKEN": ""])
            == "sy.ini:2: admin_token: environment variable ADMIN_TOKEN is set but empty, which would leave the admin mutations unprotected (write ${ADMIN_TOKEN:-} if running without a token is intended)")
        // No token on purpose: an empty default, or an empty value (the mutations are open, as documented).
        for optional in ["admin_token = ${ADMIN_TOKEN:-}", "admin_token ="] {
            let open = lines("[global]", optional, "[service pg]", "listen = 127.0.0.1:0", "server = a 10.0.0.1:5432")
            #expect(try ConfigLoader.parse(open, file: "sy.ini", environment: ["ADMIN_TOKEN": ""]).global.adminToken == nil)
            #expect(try ConfigLoader.parse(open, file: "sy.ini").global.adminToken == nil)
        }
    }

    @Test(arguments: [
        // Structure
        ("", "sy.ini:1: no [service] section: add at least one [service NAME] with listen and server lines"),
        (lines("; only comments", "[global]", "workers = 2", ""),
         "sy.ini:3: no [service] section: add at least one [service NAME] with listen and server lines"),
        (lines("workers = 1", service()),
         "sy.ini:1: \"workers = 1\" is outside any section (put it under a [section] header)"),
        (lines(service(), "[global"), "sy.ini:4: malformed section header \"[global\" (expected [NAME] or [NAME ARGUMENT])"),
        (lines(service(), "[servers x]"), "sy.ini:4: unknown section [servers x] (expected [global] or [service NAME])"),
        (lines("[globals]"), "sy.ini:1: unknown section [globals] (expected [global] or [service NAME])"),
        (lines("[global main]"), "sy.ini:1: [global] takes no name (found \"main\")"),
        (lines("[service]"), "sy.ini:1: missing service name (expected [service NAME])"),
        (lines("[service pg/1]"), "sy.ini:1: bad service name \"pg/1\" (use letters, digits, -, _ and .)"),
        (lines("[global]", "[global]"), "sy.ini:2: duplicate [global] section (first at line 1)"),
        (lines(service(), "", "[service pg]"), "sy.ini:5: duplicate service pg (first at line 1)"),
        (lines("[service pg]", "server = a 1.2.3.4:5", "[global]"),
         "sy.ini:1: service pg has no listen address (add listen = HOST:PORT)"),
        (lines("[global]", "[service pg]", "listen = 0.0.0.0:1"),
         "sy.ini:2: service pg has no server (add server = NAME HOST:PORT)"),
        // Keys
        (service("conect_timeout = 2s"),
         "sy.ini:4: unknown key \"conect_timeout\" in [service pg] (did you mean connect_timeout?)"),
        (lines("[global]", "threads = 2"),
         "sy.ini:2: unknown key \"threads\" in [global] (known keys: workers, admin, log_level, log_format, max_connections, admin_token, drain_timeout, busy_poll, resolve_interval)"),
        (service("listen 0.0.0.0:1"), "sy.ini:4: line has no \"=\": \"listen 0.0.0.0:1\" (expected KEY = VALUE)"),
        (service("connect_timeout = 1s", "balance = ip_hash", "connect_timeout = 2s"),
         "sy.ini:6: duplicate key connect_timeout in [service pg] (first at line 4)"),
        (lines("[global]", "workers = 1", "workers = 2"), "sy.ini:3: duplicate key workers in [global] (first at line 2)"),
        // Values
        (service("connect_timeout = 5x"), "sy.ini:4: bad duration \"5x\" for connect_timeout (expected e.g. 250ms, 2s, 5m, 1h)"),
        (service("connect_timeout = 0"),
         "sy.ini:4: bad duration \"0\" for connect_timeout (must be greater than 0)"),
        (service("idle_timeout = 10"), "sy.ini:4: bad duration \"10\" for idle_timeout (expected e.g. 250ms, 2s, 5m, 1h)"),
        (service("idle_timeout ="), "sy.ini:4: missing value for idle_timeout (expected e.g. 250ms, 2s, 5m, 1h)"),
        (service("balance = random"),
         "sy.ini:4: bad value \"random\" for balance (expected one of least_conn, ip_hash, round_robin)"),
        (lines("[global]", "log_level = verbose"),
         "sy.ini:2: bad value \"verbose\" for log_level (expected one of trace, debug, info, notice, warning, error, critical)"),
        (lines("[global]", "log_format = xml"), "sy.ini:2: bad value \"xml\" for log_format (expected one of text, json)"),
        (lines("[global]", "workers = 0"), "sy.ini:2: bad number \"0\" for workers (expected a whole number from 1 to 256, or auto)"),
        (lines("[global]", "workers = 257"), "sy.ini:2: bad number \"257\" for workers (expected a whole number from 1 to 256, or auto)"),
        (lines("[global]", "workers = +2"), "sy.ini:2: bad number \"+2\" for workers (expected a whole number from 1 to 256, or auto)"),
        (lines("[global]", "max_connections = -5"),
         "sy.ini:2: bad number \"-5\" for max_connections (expected a whole number from 1 to 100000000)"),
        (lines("[global]", "admin = localhost"),
         "sy.ini:2: bad address \"localhost\" for admin: missing port (expected HOST:PORT, e.g. 0.0.0.0:6432 or [::]:6432)"),
        (service("listen = 0.0.0.0:70000"),
         "sy.ini:4: bad address \"0.0.0.0:70000\" for listen: port 70000 is greater than 65535 (expected HOST:PORT, e.g. 0.0.0.0:6432 or [::]:6432)"),
        (service("listen = :::80"),
         "sy.ini:4: bad address \":::80\" for listen: an IPv6 address must be in brackets, e.g. [::1]:80 (expected HOST:PORT, e.g. 0.0.0.0:6432 or [::]:6432)"),
        (service("listen ="), "sy.ini:4: missing value for listen (expected HOST:PORT, e.g. 0.0.0.0:6432 or [::]:6432)"),
        // Server lines
        (service("server = b"), "sy.ini:4: server b has no address (expected server = NAME HOST:PORT [weight=N] [backup])"),
        (service("server = 10.0.0.2:5432"),
         "sy.ini:4: server \"10.0.0.2:5432\" has no name (expected server = NAME HOST:PORT [weight=N] [backup])"),
        (service("server ="), "sy.ini:4: missing value for server (expected server = NAME HOST:PORT [weight=N] [backup])"),
        (service("server = b@x 10.0.0.2:5432"), "sy.ini:4: bad server name \"b@x\" (use letters, digits, -, _ and .)"),
        (service("server = b 10.0.0.2"),
         "sy.ini:4: bad address \"10.0.0.2\" for server b: missing port (expected HOST:PORT, e.g. 10.0.0.1:5432)"),
        (service("server = b 10.0.0.2:0"),
         "sy.ini:4: bad address \"10.0.0.2:0\" for server b: port 0 is not allowed for a server"),
        (service("server = b 10.0.0.2:5432 weight=0"),
         "sy.ini:4: bad weight \"0\" for server b (expected a whole number from 1 to 256)"),
        (service("server = b 10.0.0.2:5432 weight=257"),
         "sy.ini:4: bad weight \"257\" for server b (expected a whole number from 1 to 256)"),
        (service("server = b 10.0.0.2:5432 weight=x"),
         "sy.ini:4: bad weight \"x\" for server b (expected a whole number from 1 to 256)"),
        (service("server = b 10.0.0.2:5432 weight="),
         "sy.ini:4: bad weight \"\" for server b (expected a whole number from 1 to 256)"),
        (service("server = b 10.0.0.2:5432 weight=2 weight=3"), "sy.ini:4: weight given twice for server b"),
        (service("server = b 10.0.0.2:5432 backup backup"), "sy.ini:4: backup given twice for server b"),
        (service("server = b 10.0.0.2:5432 primary"),
         "sy.ini:4: unknown option \"primary\" for server b (expected weight=N or backup)"),
        (service("server = b 10.0.0.2:5432", "server = a 10.0.0.3:5432"),
         "sy.ini:5: duplicate server a in service pg (first at line 3)"),
        // Listen conflicts
        (service("listen = 0.0.0.0:6432"), "sy.ini:4: listen address 0.0.0.0:6432 is already used by this service (line 2)"),
        (lines(service(), "[service other]", "listen = 127.0.0.1:6432"),
         "sy.ini:5: listen address 127.0.0.1:6432 conflicts with 0.0.0.0:6432 of service pg (line 2)"),
        (lines("[service a]", "listen = 10.1.1.1:80", "server = s 1.1.1.1:1", "[service b]", "listen = 0.0.0.0:80"),
         "sy.ini:5: listen address 0.0.0.0:80 conflicts with 10.1.1.1:80 of service a (line 2)"),
        (lines("[service a]", "listen = [::]:80", "server = s 1.1.1.1:1", "[service b]", "listen = [fd00::1]:80"),
         "sy.ini:5: listen address [fd00::1]:80 conflicts with [::]:80 of service a (line 2)"),
        (lines("[service a]", "listen = [::1]:80", "server = s 1.1.1.1:1", "[service b]", "listen = [0:0::1]:80"),
         "sy.ini:5: listen address [0:0::1]:80 conflicts with [::1]:80 of service a (line 2)"),
        (lines("[service a]", "listen = DB.local:80", "server = s 1.1.1.1:1", "[service b]", "listen = db.local:80"),
         "sy.ini:5: listen address db.local:80 conflicts with DB.local:80 of service a (line 2)"),
        (lines("[global]", "admin = 127.0.0.1:6432", "[service pg]", "listen = 0.0.0.0:6432", "server = s 1.1.1.1:1"),
         "sy.ini:4: listen address 0.0.0.0:6432 conflicts with 127.0.0.1:6432 of the admin endpoint (line 2)"),
        (lines("[service pg]", "listen = 127.0.0.1:9000", "server = s 1.1.1.1:1", "[global]", "admin = 127.0.0.1:9000"),
         "sy.ini:5: admin address 127.0.0.1:9000 is already used by service pg (line 2)"),
        (lines("[service pg]", "listen = 0.0.0.0:1", "server = s 1.1.1.1:1", "eject_time = 30s", "eject_time_max = 20s"),
         "sy.ini:5: eject_time_max is shorter than eject_time: an ejection lasts at least eject_time"),
        (lines("[service pg]", "listen = 0.0.0.0:9000", "server = s 1.1.1.1:1"),
         "sy.ini:2: listen address 0.0.0.0:9000 conflicts with the admin endpoint's default address 127.0.0.1:9000 (move it with admin = HOST:PORT, or turn it off with admin =, in [global])"),
    ])
    func errorsNameFileAndLine(text: String, expected: String) {
        #expect(loadError(text) == expected)
    }

    @Test func nonConflictingListenAddresses() throws {
        let text = lines(
            "[service a]",
            "listen = 0.0.0.0:80",
            "listen = [::1]:80",        // other family than 0.0.0.0
            "listen = 0.0.0.0:0",
            "listen = 127.0.0.1:0",      // port 0 never conflicts
            "server = s 1.1.1.1:1",
            "[service b]",
            "listen = 0.0.0.0:0",
            "listen = 0.0.0.0:81",       // other port
            "listen = [::2]:80",         // other specific IPv6 address
            "server = s 1.1.1.1:1",
        )
        let config = try ConfigLoader.parse(text, file: "sy.ini")
        #expect(config.services.map { $0.listen.count } == [4, 3])
    }

    @Test func theFirstErrorInFileOrderIsReported() {
        // Line 2 (bad value) comes before line 4 (syntax error) and line 5 (unknown key).
        #expect(loadError(lines("[service pg]", "balance = x", "listen = 0.0.0.0:1", "nonsense", "foo = 1"))
            == "sy.ini:2: bad value \"x\" for balance (expected one of least_conn, ip_hash, round_robin)")
        // A service missing its listen line is reported before an error in a later section.
        #expect(loadError(lines("[service a]", "server = s 1.1.1.1:1", "[service b]", "listen = bad"))
            == "sy.ini:1: service a has no listen address (add listen = HOST:PORT)")
    }

    @Test func loadReadsAFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-config-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }

        let good = dir.appendingPathComponent("good.ini").path
        try service("idle_timeout = ${IDLE}").write(toFile: good, atomically: true, encoding: .utf8)
        let config = try ConfigLoader.load(path: good, environment: ["IDLE": "5m"])
        #expect(config.file == good)
        #expect(config.services.map(\.idleTimeout) == [.seconds(300)])

        let bad = dir.appendingPathComponent("bad.ini").path
        try service("idle_timeout = 5x").write(toFile: bad, atomically: true, encoding: .utf8)
        #expect(throws: ConfigError(file: bad, line: 4, message: "bad duration \"5x\" for idle_timeout (expected e.g. 250ms, 2s, 5m, 1h)")) {
            try ConfigLoader.load(path: bad)
        }

        let missing = dir.appendingPathComponent("missing.ini").path
        #expect(throws: ConfigError(file: missing, line: 0, message: "cannot read file: No such file or directory")) {
            try ConfigLoader.load(path: missing)
        }
        #expect(throws: ConfigError(file: dir.path, line: 0, message: "cannot read file: Is a directory")) {
            try ConfigLoader.load(path: dir.path)
        }

        #expect(ConfigError(file: missing, line: 0, message: "cannot read file: No such file or directory").description
            == "\(missing): cannot read file: No such file or directory")

        let binary = dir.appendingPathComponent("binary.ini").path
        try Data([0x5B, 0xFF, 0xFE, 0x5D]).write(to: URL(fileURLWithPath: binary))
        #expect(throws: ConfigError(file: binary, line: 1, message: "cannot read file: not valid UTF-8 text (save the file as UTF-8)")) {
            try ConfigLoader.load(path: binary)
        }
        // A Latin-1 é in a comment on line 3: that line is named.
        let latin1 = dir.appendingPathComponent("latin1.ini").path
        try Data(Array("[service pg]\nlisten = 0.0.0.0:1\n; caf".utf8) + [0xE9] + Array("\nserver = a 10.0.0.1:1\n".utf8))
            .write(to: URL(fileURLWithPath: latin1))
        #expect(throws: ConfigError(file: latin1, line: 3, message: "cannot read file: not valid UTF-8 text (save the file as UTF-8)")) {
            try ConfigLoader.load(path: latin1)
        }
    }

    @Test("Limits that keep a running process sane: max_connections, sub-millisecond timeouts, probe interval")
    func limits() throws {
        #expect(loadError(lines("[global]", "max_connections = 4611686018427387872", service()))
            == "sy.ini:2: bad number \"4611686018427387872\" for max_connections (expected a whole number from 1 to 100000000)")
        #expect(loadError(lines("[global]", "max_connections = 100000001", service()))
            == "sy.ini:2: bad number \"100000001\" for max_connections (expected a whole number from 1 to 100000000)")
        #expect(try ConfigLoader.parse(lines("[global]", "max_connections = 100000000", service()), file: "sy.ini")
            .global.maxConnections == 100_000_000)
        #expect(loadError(service("check_interval = 2us"))
            == "sy.ini:4: bad duration \"2us\" for check_interval (at least 1ms)")
        #expect(loadError(service("check_interval = 9ms"))
            == "sy.ini:4: bad duration \"9ms\" for check_interval (at least 10ms; e.g. 2s)")
        #expect(try ConfigLoader.parse(service("check_interval = 10ms"), file: "sy.ini").services[0].health.checkInterval == .milliseconds(10))
        for key in ["connect_timeout", "check_timeout", "eject_time"] {
            #expect(loadError(service("\(key) = 999us")) == "sy.ini:4: bad duration \"999us\" for \(key) (at least 1ms)")
        }
        #expect(try ConfigLoader.parse(service("connect_timeout = 1ms"), file: "sy.ini").services[0].connectTimeout == .milliseconds(1))
    }

    @Test("Messages for slips: a key in the wrong section, an empty variable, a long value, a port with leading zeros, old Mac line ends")
    func helpfulMessages() throws {
        #expect(loadError(service("workers = 2")) == "sy.ini:4: key workers does not belong in [service pg] (it goes in [global])")
        #expect(loadError(lines("[global]", "balance = round_robin", service()))
            == "sy.ini:2: key balance does not belong in [global] (it goes in each [service NAME])")
        #expect(loadError(service("balance = ${BAL}"), environment: ["BAL": ""])
            == "sy.ini:4: missing value for balance (expected one of least_conn, ip_hash, round_robin) (the value comes from ${BAL}, which is set but empty)")
        // Part of a value, as README's `server = pg1 ${PG1}` shows.
        let partial = try #require(loadError(lines("[service pg]", "listen = 127.0.0.1:${PORT}", "server = pg1 ${PG1}"), environment: ["PORT": "", "PG1": ""]))
        #expect(partial.hasPrefix("sy.ini:2: ") && partial.hasSuffix(" (${PORT} in it is set but empty)"), "\(partial)")
        let server = try #require(loadError(lines("[service pg]", "listen = 127.0.0.1:1", "server = pg1 ${PG1}"), environment: ["PG1": ""]))
        #expect(server.hasPrefix("sy.ini:3: ") && server.hasSuffix(" (${PG1} in it is set but empty)"), "\(server)")
        // A long value is cut short in the message, with control characters escaped.
        let long = String(repeating: "x", count: 100_000)
        let message = try #require(loadError(service("balance = \(long)")))
        #expect(message == "sy.ini:4: bad value \"\(String(repeating: "x", count: 80))…\" for balance (expected one of least_conn, ip_hash, round_robin)")
        #expect(loadError(lines("[service pg]", "listen 0.0.0.0:1\u{1}" + long)) == "sy.ini:2: line has no \"=\": \"listen 0.0.0.0:1\\x01\(String(repeating: "x", count: 63))…\" (expected KEY = VALUE)")
        // Leading zeros in a port.
        #expect(try ConfigLoader.parse(lines("[service pg]", "listen = 127.0.0.1:000080", "server = a 10.0.0.1:0005432"), file: "sy.ini")
            .services[0].listen == [HostPort(host: "127.0.0.1", port: 80)])
        #expect(loadError(lines("[service pg]", "listen = 127.0.0.1:0065536", "server = a 10.0.0.1:1"))
            == "sy.ini:2: bad address \"127.0.0.1:0065536\" for listen: port 0065536 is greater than 65535 (expected HOST:PORT, e.g. 0.0.0.0:6432 or [::]:6432)")
        // Lines ended by a lone CR (old Mac files) are lines.
        let config = try ConfigLoader.parse("[global]\rworkers = 2\r[service pg]\rlisten = 0.0.0.0:1\rserver = a 10.0.0.1:1\r", file: "sy.ini")
        #expect(config.global.workers == 2 && config.services.map(\.name) == ["pg"])
        #expect(loadError("[service pg]\rlisten = 0.0.0.0:1\rserver = a 10.0.0.1:1\rnonsense = 1") == "sy.ini:4: unknown key \"nonsense\" in [service pg] (known keys: listen, balance, server, connect_timeout, idle_timeout, splice, server_keepalive, check, check_interval, check_timeout, check_port, check_send, check_expect, check_user, check_database, check_initial, rise, fall, eject_after, eject_time, eject_time_max, max_ejection_percent, retries, panic, on_down, slow_start)")
    }

    @Test("A service of 50,000 servers loads; a duplicate name at the end is still named")
    func manyServers() throws {
        var text = "[service big]\nlisten = 0.0.0.0:1\n"
        for i in 0..<50_000 { text += "server = s\(i) 10.0.\(i / 256 % 256).\(i % 256):\(1 + i / 65_536)\n" }
        let config = try ConfigLoader.parse(text, file: "sy.ini")
        #expect(config.services[0].servers.count == 50_000)
        #expect(loadError(text + "server = s7 10.9.9.9:9\n") == "sy.ini:50003: duplicate server s7 in service big (first at line 10)")
    }
}
