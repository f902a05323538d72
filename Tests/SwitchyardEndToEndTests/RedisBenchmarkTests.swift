// A real client no one here wrote: redis-benchmark through switchyard to a real redis-server.
import Foundation
import Testing

@Suite("redis-benchmark")
struct RedisBenchmarkTests {
    @Test("redis-benchmark through switchyard: every request succeeds")
    func redisBenchmark() throws {
        // Missing tools are a failure, not a skip: the README's test command installs them.
        guard let benchmark = ChildProcess.locate("redis-benchmark") else {
            throw HarnessError(redisMissingMessage("redis-benchmark"))
        }
        let redis = try RedisServer()
        defer { redis.stop() }
        let proxy = try SwitchyardProcess(config: TestConfig.global()
            + TestConfig.service("redis", servers: ["redis 127.0.0.1:\(redis.port)"]))
        defer { proxy.stop() }
        let port = try proxy.port("redis")
        let requests = 20_000

        let result = try ChildProcess.run(
            benchmark,
            ["-h", "127.0.0.1", "-p", "\(port)", "-n", "\(requests)", "-c", "20", "-t", "set,get,ping", "--csv"],
            timeout: .seconds(90))
        #expect(result.status == .exited(0), "redis-benchmark: \(result.status)\nstdout:\n\(result.stdout)\nstderr:\n\(result.stderr)")
        #expect(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty,
                "redis-benchmark reported errors:\n\(result.stderr)")

        // --csv: a header, then one row per test: "NAME","requests per second",...
        var rps: [String: Double] = [:]
        for line in result.stdout.split(whereSeparator: \.isNewline) {
            let fields = line.split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\" ")) }
            guard fields.count >= 2, fields[0] != "test" else { continue }
            rps[fields[0]] = Double(fields[1])
        }
        for test in ["PING_INLINE", "PING_MBULK", "SET", "GET"] {
            let value = rps[test] ?? 0
            #expect(value > 0, "no requests-per-second figure for \(test); output:\n\(result.stdout)")
        }

        // Every request reached redis: 4 tests x 20000 commands (plus redis-benchmark's own CONFIG).
        let stats = try RedisServer.info(port: port, section: "stats")
        let processed = Int(stats["total_commands_processed"] ?? "") ?? -1
        #expect(processed >= 4 * requests, "redis processed \(processed) commands; expected at least \(4 * requests)")
        #expect(proxy.isRunning)
    }
}
