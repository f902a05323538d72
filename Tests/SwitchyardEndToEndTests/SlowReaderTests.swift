// Cut streams: idle_timeout against readers that are slow or stopped (bytes a reader takes are
// traffic), and servers that abort. A stream cut short ends in a reset, never in a clean EOF.
import Testing

@Suite("Slow readers and cut streams")
struct SlowReaderTests {
    @Test("idle_timeout = 300ms: a slow reader of a 1 MiB answer (2.6 s) gets all of it and a normal end")
    func slowReaderIsNotIdle() throws {
        let size = 1 << 20
        let seed: UInt64 = 0x510_0001
        let backend = try Backend(name: "bulk", behavior: .bulk(sendBytes: size, seed: seed))
        defer { backend.stop() }
        let proxy = try SwitchyardProcess(config: TestConfig.global()
            + TestConfig.service("slow", servers: ["bulk \(backend.address)"], idleTimeout: "300ms"))
        defer { proxy.stop() }

        // Reading 8 KiB every 20 ms, the client takes ~2.6 s. Switchyard reads from the server
        // only as its queue towards the client drains (every ~0.5 s at this pace) and not at all
        // once the server has sent everything: the traffic it sees is the client taking bytes.
        let client = try TestClient(port: try proxy.port("slow"), receiveBuffer: 16 * 1024)
        defer { client.close() }
        let started = ContinuousClock.now
        let result = try client.transfer(
            sendCount: 0, sendSeed: 0, shutdownAfterSend: false, readChunk: 8 * 1024,
            pauseAfterRead: .milliseconds(20), timeout: .seconds(60))
        client.close()
        let tookMs = millisecondsSince(started)

        #expect(result.bytesReceived == size, "\(result)")
        #expect(result.receivedChecksum == PayloadStream.checksum(seed: seed, count: size))
        #expect(result.end == .eof)
        #expect(tookMs > 1000, "the transfer took \(tookMs) ms: too fast to test anything")
        let line = try proxy.waitForConnectionClosed(client: client.localAddress)
        #expect(line["end"] == "closed", "\(line.raw)")
        #expect(line["bytes_out"] == "\(size)")
    }

    @Test("idle_timeout = 300ms: a reader that stops reading mid-answer is cut with a reset, not an EOF")
    func stalledReaderGetsAReset() throws {
        let size = 64 << 20  // far more than every socket buffer on the way can hold
        let seed: UInt64 = 0x510_0002
        let backend = try Backend(name: "bulk", behavior: .bulk(sendBytes: size, seed: seed))
        defer { backend.stop() }
        let proxy = try SwitchyardProcess(config: TestConfig.global()
            + TestConfig.service("stall", servers: ["bulk \(backend.address)"], idleTimeout: "300ms"))
        defer { proxy.stop() }

        let client = try TestClient(port: try proxy.port("stall"), receiveBuffer: 16 * 1024)
        defer { client.close() }
        // Read nothing until switchyard has given up on the connection, then everything that came.
        _ = try proxy.waitForConnectionClosed(client: client.localAddress, timeout: .seconds(10))
        let result = try client.transfer(sendCount: 0, sendSeed: 0, shutdownAfterSend: false, timeout: .seconds(30))

        #expect(result.bytesReceived < size)
        #expect(result.end == .reset, "a cut answer must not end like a complete one: \(result)")
        let line = try proxy.waitForConnectionClosed(client: client.localAddress)
        #expect(line["end"] == "idle_timeout", "\(line.raw)")
        #expect(proxy.isRunning)
    }

    @Test("A server that aborts (RST) right behind an answer: the client gets the answer, then a reset, not a clean end")
    func serverAbortReachesTheClient() throws {
        let backend = try Backend(name: "abort", behavior: .echoThenAbort(abortOn: UInt8(ascii: "!")))
        defer { backend.stop() }
        let proxy = try SwitchyardProcess(config: TestConfig.global()
            + TestConfig.service("abort", servers: ["abort \(backend.address)"]))
        defer { proxy.stop() }

        for _ in 0..<5 {
            let client = try TestClient(port: try proxy.port("abort"))
            defer { client.close() }
            try client.roundTrip("first\n")
            // The echo and the reset right behind it reach switchyard together.
            try client.send("bye!\n")
            let (bytes, end) = try client.readToEnd(timeout: .seconds(5))
            #expect(bytes == Array("bye!\n".utf8))
            #expect(end == .reset, "an aborted stream must not end like a complete one")
            let line = try proxy.waitForConnectionClosed(client: client.localAddress)
            #expect(line["end"] == "server_reset", "\(line.raw)")
        }
        #expect(proxy.isRunning)
    }
}
