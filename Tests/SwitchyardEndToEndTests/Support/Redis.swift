// A real redis-server on a free loopback port, for driving switchyard with redis-benchmark.
import Foundation

/// Message for a missing redis program: the README's test command installs it.
func redisMissingMessage(_ program: String) -> String {
    "\(program) is not installed (looked in PATH, /usr/bin, /usr/local/bin): run the README test command, "
        + "which installs redis-server and redis-tools before `swift test`"
}

final class RedisServer {
    let child: ChildProcess
    let port: UInt16
    private let directory: URL

    init() throws {
        guard let executable = ChildProcess.locate("redis-server") else {
            throw HarnessError(redisMissingMessage("redis-server"))
        }
        directory = try SwitchyardProcess.makeTemporaryDirectory()
        var lastError: Error = HarnessError("redis-server did not start")
        // The free port is found by binding port 0 and closing; another process may take it in
        // between, so try again with a new port if redis-server cannot bind.
        for _ in 0..<3 {
            let port = try Socket.freeLoopbackPort()
            let child = try ChildProcess(
                executable: executable,
                arguments: ["--port", "\(port)", "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
                directory: directory
            )
            do {
                try waitUntil("redis-server to answer PING on port \(port)", timeout: .seconds(10)) {
                    if let status = child.exitStatus {
                        throw HarnessError("redis-server exited (\(status)): \(child.stdout.text)\(child.stderr.text)")
                    }
                    return RedisServer.ping(port: port)
                }
                self.child = child
                self.port = port
                return
            } catch {
                child.kill()
                lastError = error
            }
        }
        try? FileManager.default.removeItem(at: directory)
        throw lastError
    }

    deinit { stop() }

    func stop() {
        child.kill()
        try? FileManager.default.removeItem(at: directory)
    }

    static func ping(port: UInt16) -> Bool {
        guard let client = try? TestClient(port: port, timeout: .seconds(1)) else { return false }
        defer { client.close() }
        guard (try? client.send("PING\r\n", timeout: .seconds(1))) != nil else { return false }
        return (try? client.readLine(timeout: .seconds(1))) == "+PONG\r"
    }

    /// `INFO section` on `port` (redis itself or switchyard in front of it), as key → value.
    static func info(port: UInt16, section: String) throws -> [String: String] {
        let client = try TestClient(port: port)
        defer { client.close() }
        try client.send("INFO \(section)\r\n")
        let header = try client.readLine()
        guard header.hasPrefix("$"), let length = Int(header.dropFirst().trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw HarnessError("unexpected reply to INFO: \(header.debugDescription)")
        }
        let body = String(decoding: try client.readExactly(length + 2), as: UTF8.self)
        var fields: [String: String] = [:]
        for line in body.split(whereSeparator: \.isNewline) where !line.hasPrefix("#") {
            if let colon = line.firstIndex(of: ":") {
                fields[String(line[..<colon])] = String(line[line.index(after: colon)...])
            }
        }
        return fields
    }
}
