// A real PostgreSQL server for the `check = pgsql` tests: initdb into a temporary folder, the
// postmaster run in the foreground on a free loopback port, stopped with `pg_ctl stop -m immediate`
// and removed by `stop()`/deinit.
//
// PostgreSQL refuses to run as root. When the tests run as root (as in CI), the folder is given to
// the `postgres` system user (created by the Debian package) and initdb, postgres and pg_ctl run through
// `runuser -u postgres --`.
import Foundation
import Glibc

/// Message for a missing PostgreSQL: the README's test command installs it.
let postgresMissingMessage =
    "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl): run the README test command, "
    + "which installs postgresql before `swift test`"

final class PostgresInstance {
    let port: UInt16
    let directory: String
    private let binDirectory: String
    private let dataDirectory: String
    /// `runuser -u postgres --` when running as root, else empty.
    private let runAs: [String]
    private var stopped = false
    /// The postmaster, in the foreground (through runuser when we are root). Not `pg_ctl start`:
    /// a daemonised postmaster would inherit the descriptor by which Foundation's Process notices
    /// that its child exited, so pg_ctl would never seem to finish.
    private let server: ChildProcess

    /// The newest `/usr/lib/postgresql/VERSION/bin` with initdb and pg_ctl (PATH is not consulted).
    static func binDirectory() throws -> String {
        let root = "/usr/lib/postgresql"
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        let usable = versions.filter { version in
            ["initdb", "pg_ctl", "postgres"].allSatisfy {
                FileManager.default.isExecutableFile(atPath: "\(root)/\(version)/bin/\($0)")
            }
        }
        // Numeric order: 9.6 < 10 < 15 < 16.
        let newest = usable.max { a, b in
            let x = a.split(separator: ".").map { Int($0) ?? 0 }
            let y = b.split(separator: ".").map { Int($0) ?? 0 }
            return x.lexicographicallyPrecedes(y)
        }
        guard let newest else { throw HarnessError(postgresMissingMessage) }
        return "\(root)/\(newest)/bin"
    }

    /// initdb, then the postmaster; returns once it answers on its port.
    /// `settings`: more `-c NAME=VALUE` server settings (e.g. `max_connections=3`).
    init(settings: [String] = []) throws {
        binDirectory = try PostgresInstance.binDirectory()

        var runAs: [String] = []
        var owner: (uid: uid_t, gid: gid_t)?
        if geteuid() == 0 {
            guard let entry = getpwnam("postgres") else {
                throw HarnessError("running as root but there is no `postgres` user: \(postgresMissingMessage)")
            }
            guard let runuser = ChildProcess.locate("runuser") else {
                throw HarnessError("running as root and `runuser` (util-linux) is not installed: cannot start PostgreSQL as user postgres")
            }
            runAs = [runuser, "-u", "postgres", "--"]
            owner = (entry.pointee.pw_uid, entry.pointee.pw_gid)
        }
        self.runAs = runAs

        var template = Array("/tmp/switchyard-pg-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw posixError("mkdtemp") }
        directory = String(cString: made)
        dataDirectory = directory + "/data"
        // Traversable by the postgres user, and owned by it so that it can create the data folder,
        // its socket and its log there.
        chmod(directory, 0o755)
        if let owner, chown(directory, owner.uid, owner.gid) != 0 {
            let error = posixError("chown \(directory) to postgres")
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }

        do {
            let (bin, folder, dataDirectory) = (binDirectory, directory, dataDirectory)
            let run = { (program: String, arguments: [String], timeout: Duration) throws in
                try Self.run(program, arguments, bin: bin, runAs: runAs, directory: folder, timeout: timeout)
            }
            try run("initdb", ["-D", dataDirectory, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-locale", "--no-sync"], .seconds(120))
            var lastError: Error = HarnessError("postgres did not start")
            var started: (port: UInt16, child: ChildProcess)?
            // The port is free when chosen but may be taken before postgres binds it: retry.
            for _ in 0..<3 {
                let port = try HealthBackend.freePortOutsideEphemeralRange()
                let child = try Self.spawn(
                    "postgres",
                    ["-D", dataDirectory, "-p", "\(port)", "-c", "listen_addresses=127.0.0.1",
                     "-c", "unix_socket_directories=\(folder)", "-c", "fsync=off"] + settings.flatMap { ["-c", $0] },
                    bin: bin, runAs: runAs, directory: folder)
                do {
                    try waitUntil("postgres to answer on 127.0.0.1:\(port)", timeout: .seconds(60), interval: .milliseconds(50)) {
                        if let status = child.exitStatus {
                            child.waitForOutputEnd(timeout: .seconds(2))
                            throw HarnessError("postgres exited (\(status)):\n\(child.stderr.text)")
                        }
                        return PostgresInstance.answersSSLRequest(port: port)
                    }
                    started = (port, child)
                    break
                } catch {
                    lastError = HarnessError("\(error)\npostgres output:\n\(child.stderr.text.suffix(2000))")
                    // A half-started server must not survive the retry.
                    _ = try? run("pg_ctl", ["-D", dataDirectory, "-m", "immediate", "-w", "-t", "20", "stop"], .seconds(30))
                    Self.killPostmaster(dataDirectory: dataDirectory)
                    child.kill()
                }
            }
            guard let started else { throw lastError }
            server = started.child
            port = started.port
        } catch {
            Self.killPostmaster(dataDirectory: dataDirectory)
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    deinit { stop() }

    /// `pg_ctl stop -m immediate` (then SIGKILL to the postmaster if it is still there); removes the
    /// folder. Idempotent.
    func stop() {
        guard !stopped else { return }
        stopped = true
        _ = try? Self.run(
            "pg_ctl", ["-D", dataDirectory, "-m", "immediate", "-w", "-t", "20", "stop"],
            bin: binDirectory, runAs: runAs, directory: directory, timeout: .seconds(30))
        Self.killPostmaster(dataDirectory: dataDirectory)
        server.kill()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// "127.0.0.1:PORT".
    var address: String { "127.0.0.1:\(port)" }

    /// What the server logged so far (its standard error).
    var log: String { server.stderr.text }

    /// Opens a session as `postgres` over TCP (trust) and returns once it is ready for queries;
    /// the caller closes it.
    func openSession() throws -> TestClient {
        let client = try TestClient(port: port)
        var body: [UInt8] = [0x00, 0x03, 0x00, 0x00] + Array("user\0postgres\0\0".utf8)
        let length = UInt32(body.count + 4)
        body = [UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)] + body
        try client.send(body)
        // Whole messages (type, Int32 length, body) until ReadyForQuery.
        for _ in 0..<100 {
            let header = try client.readExactly(5)
            let length = Int(header[1]) << 24 | Int(header[2]) << 16 | Int(header[3]) << 8 | Int(header[4])
            let body = try client.readExactly(max(0, length - 4))
            if header[0] == UInt8(ascii: "E") {
                throw HarnessError("postgres refused the session: \(String(decoding: body, as: UTF8.self))")
            }
            if header[0] == UInt8(ascii: "Z") { return client }
        }
        throw HarnessError("no ReadyForQuery from postgres")
    }

    /// True when 127.0.0.1:`port` answers an SSLRequest with S or N (PostgreSQL accepts connections).
    static func answersSSLRequest(port: UInt16) -> Bool {
        guard let client = try? TestClient(port: port, timeout: .seconds(1)) else { return false }
        defer { client.close() }
        guard (try? client.send([0x00, 0x00, 0x00, 0x08, 0x04, 0xD2, 0x16, 0x2F], timeout: .seconds(1))) != nil,
              let reply = try? client.readExactly(1, timeout: .seconds(1))
        else { return false }
        return reply == [UInt8(ascii: "N")] || reply == [UInt8(ascii: "S")]
    }

    /// Starts a PostgreSQL program (as the postgres user when we are root) from `directory` (the
    /// postgres user may not be able to enter ours).
    private static func spawn(
        _ program: String, _ arguments: [String], bin binDirectory: String, runAs: [String], directory: String
    ) throws -> ChildProcess {
        let executable = binDirectory + "/" + program
        let command = runAs.isEmpty ? executable : runAs[0]
        let args = runAs.isEmpty ? arguments : Array(runAs.dropFirst()) + [executable] + arguments
        return try ChildProcess(executable: command, arguments: args, directory: URL(fileURLWithPath: directory))
    }

    /// Runs a PostgreSQL program that does not leave a daemon behind; throws unless it exits 0.
    private static func run(
        _ program: String, _ arguments: [String], bin binDirectory: String, runAs: [String], directory: String, timeout: Duration
    ) throws {
        let child = try spawn(program, arguments, bin: binDirectory, runAs: runAs, directory: directory)
        defer { child.kill() }
        let status = try child.waitForExit(timeout: timeout)
        child.waitForOutputEnd()
        guard status == .exited(0) else {
            throw HarnessError("\(child.commandLine) failed (\(status)):\n\(child.stdout.text)\(child.stderr.text)")
        }
    }

    /// SIGKILL to the postmaster named in postmaster.pid, if it is still running.
    private static func killPostmaster(dataDirectory: String) {
        guard let text = try? String(contentsOfFile: dataDirectory + "/postmaster.pid", encoding: .utf8),
              let first = text.split(separator: "\n").first, let pid = Int32(first), pid > 1
        else { return }
        // Only if that process is still a postgres (the file may be stale and the pid reused).
        guard let comm = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8),
              comm.hasPrefix("postgres") else { return }
        _ = Glibc.kill(pid, SIGKILL)
    }

    private static func tail(_ path: String, lines: Int = 20) -> String {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return "(no log)" }
        return text.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }
}
