// The zero-copy relay (`splice`): which connections use it (seen as pipes in /proc/PID/fd), and
// that it gives every descriptor back. (The rest of the suite runs through it with
// SWITCHYARD_TEST_SPLICE=on.)
import Foundation
import Testing

@Suite("Splice")
struct SpliceTests {
    /// Pipes the process has open (its stdout and stderr to the harness are two).
    private func pipeCount(_ proxy: SwitchyardProcess) -> Int {
        let dir = "/proc/\(proxy.pid)/fd"
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return fds.filter { ((try? FileManager.default.destinationOfSymbolicLink(atPath: "\(dir)/\($0)")) ?? "").hasPrefix("pipe:") }.count
    }

    @Test("splice = auto keeps small exchanges buffered, moves bulk to a pipe pair, and releases it",
          arguments: ["auto", "on", "off"])
    func whichConnectionsSplice(mode: String) throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let proxy = try SwitchyardProcess(config: TestConfig.global() + """
            [service bulk]
            listen = 127.0.0.1:0
            server = echo \(echo.address)
            splice = \(mode)

            """)
        defer { proxy.stop() }
        try proxy.waitForServersUp(service: "bulk", servers: ["echo"])
        let baseline = pipeCount(proxy)

        let client = try TestClient(port: try proxy.port("bulk"))
        defer { client.close() }
        try client.roundTrip("small\n")
        #expect(pipeCount(proxy) == baseline + (mode == "on" ? 2 * 2 : 0),
                "splice = \(mode): pipes after a small exchange")

        // 4 × 256 KiB echoed: reads fill whole buffers.
        var total = 6
        for round in 0..<4 {
            let chunk = [UInt8](repeating: UInt8(round + 1), count: 256 * 1024)
            try client.send(chunk, timeout: .seconds(10))
            #expect(try client.readExactly(chunk.count, timeout: .seconds(10)) == chunk)
            total += chunk.count
        }
        let expected = baseline + (mode == "off" ? 0 : 2 * 2)
        var pipes = -1
        let reached = (try? waitUntil("\(expected) pipes", timeout: .seconds(3)) {
            pipes = pipeCount(proxy)
            return pipes == expected
        }) != nil
        #expect(reached, "splice = \(mode): \(pipes) pipes during a bulk exchange, expected \(expected)")

        try client.roundTrip("still relaying\n")
        total += 15
        client.close()
        let line = try proxy.waitForConnectionClosed(client: client.localAddress)
        #expect(line["bytes_in"] == "\(total)" && line["bytes_out"] == "\(total)", "\(line)")
        #expect(line["end"] == "closed", "\(line)")
        let released = (try? waitUntil("pipes released", timeout: .seconds(3)) { pipeCount(proxy) == baseline }) != nil
        #expect(released, "splice = \(mode): \(pipeCount(proxy)) pipes after the connection closed, \(baseline) before")
    }
}
