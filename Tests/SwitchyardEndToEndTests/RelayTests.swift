// The data path: bytes both ways unchanged, backpressure, half-close, resets, and the byte counts
// in the `connection closed` log line.
import Foundation
import Testing

@Suite("Relay")
struct RelayTests {
    @Test("4 MiB each way at the same time arrive intact")
    func bidirectionalBulk() throws {
        let size = 4 << 20
        let backendSeed: UInt64 = 0xB0B_0001
        let clientSeed: UInt64 = 0xC11E_0001
        let backend = try Backend(name: "bulk", behavior: .bulk(sendBytes: size, seed: backendSeed))
        defer { backend.stop() }
        let proxy = try SwitchyardProcess(
            config: TestConfig.global() + TestConfig.service("bulk", servers: ["bulk \(backend.address)"]))
        defer { proxy.stop() }

        let client = try TestClient(port: try proxy.port("bulk"))
        defer { client.close() }
        let result = try client.transfer(sendCount: size, sendSeed: clientSeed, timeout: .seconds(60))

        #expect(result.sendError == nil, "client could not send everything: \(result)")
        #expect(result.bytesSent == size)
        #expect(result.bytesReceived == size, "client received \(result.bytesReceived) of \(size) bytes")
        #expect(result.receivedChecksum == PayloadStream.checksum(seed: backendSeed, count: size),
                "bytes from the backend arrived altered")
        #expect(result.end == .eof, "stream to the client ended with \(result.end), not an orderly EOF")

        let record = try backend.waitForRelayedConnection()
        #expect(record.bytesReceived == size, "backend received \(record.bytesReceived) of \(size) bytes")
        #expect(record.receivedChecksum == PayloadStream.checksum(seed: clientSeed, count: size),
                "bytes from the client arrived altered")
        #expect(record.sawEOF, "backend never saw the client's EOF: \(record)")
    }

    @Test("A slow reader gets all 32 MiB intact while switchyard's memory stays bounded")
    func slowReaderBackpressure() throws {
        let size = 32 << 20
        let backendSeed: UInt64 = 0x5105_0002
        let clientSeed: UInt64 = 0xC11E_0002
        let backend = try Backend(name: "bulk", behavior: .bulk(sendBytes: size, seed: backendSeed))
        defer { backend.stop() }
        let proxy = try SwitchyardProcess(
            config: TestConfig.global() + TestConfig.service("bulk", servers: ["bulk \(backend.address)"]))
        defer { proxy.stop() }

        let baselineKiB = try proxy.residentMemoryKiB()
        let sampler = MemorySampler(pid: proxy.pid)
        defer { sampler.stop() }

        // A small pinned receive buffer keeps the kernel from absorbing the backlog on our side,
        // so it has to wait in switchyard (or, with backpressure, in the backend's socket).
        let client = try TestClient(port: try proxy.port("bulk"), receiveBuffer: 64 * 1024)
        defer { client.close() }
        // Read nothing for a second, then 32 KiB at a time with a pause after each read.
        let result = try client.transfer(
            sendCount: 1024, sendSeed: clientSeed,
            holdReadsFor: .seconds(1), readChunk: 32 * 1024, pauseAfterRead: .milliseconds(1),
            timeout: .seconds(90))
        let (peakKiB, samples, samplerError) = sampler.stop()

        #expect(result.bytesReceived == size, "client received \(result.bytesReceived) of \(size) bytes")
        #expect(result.receivedChecksum == PayloadStream.checksum(seed: backendSeed, count: size),
                "bytes from the backend arrived altered")
        #expect(result.end == .eof)
        let record = try backend.waitForRelayedConnection()
        #expect(record.bytesReceived == 1024)
        #expect(record.receivedChecksum == PayloadStream.checksum(seed: clientSeed, count: 1024))

        #expect(samplerError == nil)
        #expect(samples > 10, "too few memory samples (\(samples)) to judge the peak")
        let growthKiB = peakKiB - baselineKiB
        #expect(growthKiB < 24 * 1024,
                "switchyard's RSS grew by \(growthKiB) KiB (idle \(baselineKiB) KiB, peak \(peakKiB) KiB) relaying 32 MiB to a slow reader: no backpressure")
    }

    @Test("Half-close: after the client shuts down writing it still gets the whole reply, then EOF")
    func halfClose() throws {
        let requestSize = 100_000
        let replySize = 1 << 20
        let requestSeed: UInt64 = 0x4A1F_0003
        let backend = try Backend(name: "replier", behavior: .replyAfterEOF(replyBytes: replySize))
        defer { backend.stop() }
        let proxy = try SwitchyardProcess(
            config: TestConfig.global() + TestConfig.service("reply", servers: ["replier \(backend.address)"]))
        defer { proxy.stop() }

        let client = try TestClient(port: try proxy.port("reply"))
        defer { client.close() }
        // Sends the request, shuts down writing, then reads until the backend's EOF.
        let result = try client.transfer(sendCount: requestSize, sendSeed: requestSeed, timeout: .seconds(30))

        let requestChecksum = PayloadStream.checksum(seed: requestSeed, count: requestSize)
        #expect(result.bytesSent == requestSize)
        #expect(result.bytesReceived == replySize, "client received \(result.bytesReceived) of the \(replySize)-byte reply")
        #expect(result.receivedChecksum == PayloadStream.checksum(seed: requestChecksum, count: replySize),
                "reply arrived altered")
        #expect(result.end == .eof, "reply ended with \(result.end), not EOF")

        let record = try backend.waitForRelayedConnection()
        #expect(record.bytesReceived == requestSize)
        #expect(record.receivedChecksum == requestChecksum)
        #expect(record.sawEOF, "the client's write shutdown never reached the backend")
        #expect(record.bytesSent == replySize)
    }

    /// An echo backend behind switchyard (service "echo") and a client with one round trip done
    /// through it, its backend connection open.
    private func echoConnection() throws -> (Backend, SwitchyardProcess, TestClient) {
        let backend = try Backend(name: "echo", behavior: .echo)
        let proxy = try SwitchyardProcess(
            config: TestConfig.global() + TestConfig.service("echo", servers: ["echo \(backend.address)"]))
        let client = try TestClient(port: try proxy.port("echo"))
        try client.roundTrip("before the reset\n")
        try backend.waitForActive(1)
        return (backend, proxy, client)
    }

    @Test("A backend reset mid-stream closes the client connection promptly")
    func backendResetClosesClient() throws {
        let (backend, proxy, client) = try echoConnection()
        defer { client.close(); proxy.stop(); backend.stop() }

        backend.resetAllConnections()
        let end = try client.waitForEnd(timeout: .seconds(2))
        #expect(end != nil, "client connection still open 2 s after the backend reset its side")
        // Closed, not merely half-closed: switchyard ends the session while our socket is still open.
        let line = try proxy.waitForConnectionClosed(client: client.localAddress, timeout: .seconds(2))
        #expect(line["service"] == "echo")
        #expect(proxy.isRunning)
    }

    @Test("A client reset mid-stream closes the backend connection promptly")
    func clientResetClosesBackend() throws {
        let (backend, proxy, client) = try echoConnection()
        defer { client.close(); proxy.stop(); backend.stop() }

        client.reset()
        let record = try backend.waitForRelayedConnection(timeout: .seconds(2))
        #expect(record.sawEOF || record.closing == .peerReset,
                "backend connection ended without seeing EOF or a reset: \(record)")
        let line = try proxy.waitForConnectionClosed(client: client.localAddress, timeout: .seconds(2))
        #expect(line["service"] == "echo")
        #expect(proxy.isRunning)
    }

    @Test("The connection-closed log line carries the bytes each way")
    func closedLineCountsBytes() throws {
        let requestSize = 12_345
        let replySize = 54_321
        let backend = try Backend(name: "replier", behavior: .replyAfterEOF(replyBytes: replySize))
        defer { backend.stop() }
        let proxy = try SwitchyardProcess(
            config: TestConfig.global() + TestConfig.service("counted", servers: ["replier \(backend.address)"]))
        defer { proxy.stop() }

        let client = try TestClient(port: try proxy.port("counted"))
        defer { client.close() }
        let result = try client.transfer(sendCount: requestSize, sendSeed: 13, timeout: .seconds(10))
        #expect(result.bytesReceived == replySize)
        client.close()

        let line = try proxy.waitForConnectionClosed(client: client.localAddress)
        #expect(line.isJSON)
        #expect(line["level"] == "info")
        #expect(line["service"] == "counted")
        #expect(line["server"] == "replier")
        #expect(line["bytes_in"] == "\(requestSize)", "bytes_in should be what the client sent: \(line)")
        #expect(line["bytes_out"] == "\(replySize)", "bytes_out should be what the client received: \(line)")
        #expect(line["duration_ms"].flatMap { Int($0) } != nil, "duration_ms is not a whole number: \(line)")
        #expect(!(line["end"] ?? "").isEmpty, "no end field: \(line)")
        #expect(line["time"] != nil)
        #expect(line.nonStringKeys.isEmpty, "log values must all be JSON strings; not strings: \(line.nonStringKeys) in \(line)")
    }
}
