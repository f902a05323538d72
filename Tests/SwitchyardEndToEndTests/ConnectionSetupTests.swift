// Connection set-up shortcuts, seen from the client and the server: a client's first bytes that
// are waiting when the connect to the server completes (read at once, sent with the handshake's
// last ACK), and a server's first answer with its end right behind (sent to the client with the
// FIN). Whatever the timing, every byte and every end must arrive, in order.
import Foundation
import Glibc
import Testing

@Suite("Connection set-up")
struct ConnectionSetupTests {
    /// Stops switchyard until every thread is stopped, so that connections made now wait in the
    /// kernel's accept queue, with whatever their clients send.
    private func pause(_ proxy: SwitchyardProcess) throws {
        try proxy.suspend()
    }

    @Test("A request sent before switchyard accepted reaches the server, after a refused first attempt too, and the reply comes back")
    func bytesWaitingAtAccept() throws {
        let requestSize = 3000
        let replySize = 20_000
        let refusing = try RefusingPort()
        defer { refusing.close() }
        let backend = try Backend(name: "replier", behavior: .replyAfterEOF(replyBytes: replySize))
        defer { backend.stop() }
        // Weighted round robin picks the heavier server first: the refusing one, so the
        // first client's connect fails and is retried on the replier with the same bytes. No
        // probes: they would take the refusing server down before any client tries it.
        let proxy = try SwitchyardProcess(config: TestConfig.global(logLevel: "debug") + TestConfig.service(
            "early", balance: "round_robin",
            servers: ["refusing 127.0.0.1:\(refusing.port) weight=100", "replier \(backend.address) weight=1"],
            extra: ["check = none"]))
        defer { proxy.stop() }
        let port = try proxy.port("early")

        try pause(proxy)
        var resumed = false
        defer { if !resumed { proxy.child.signal(SIGCONT) } }
        var clients: [(client: TestClient, seed: UInt64)] = []
        for i in 0..<3 {
            let client = try TestClient(port: port)
            let seed = 0xEA_0000 + UInt64(i)
            try client.send(PayloadStream.bytes(seed: seed, count: requestSize))
            if i > 0 { try client.shutdownWrite() }  // the first keeps its write side open a while
            clients.append((client, seed))
        }
        proxy.child.signal(SIGCONT)
        resumed = true

        try clients[0].client.shutdownWrite()
        for (client, seed) in clients {
            let requestChecksum = PayloadStream.checksum(seed: seed, count: requestSize)
            let (bytes, end) = try client.readToEnd(timeout: .seconds(10))
            #expect(bytes.count == replySize, "client \(seed): \(bytes.count) of \(replySize) reply bytes")
            #expect(bytes == PayloadStream.bytes(seed: requestChecksum, count: replySize),
                    "client \(seed): the reply answers a different request: its bytes were altered")
            #expect(end == .eof)
            client.close()
        }
        let records = try waitFor("3 finished connections with data", timeout: .seconds(5)) {
            let relayed = backend.finishedConnections.filter { $0.bytesReceived > 0 || $0.sawEOF }
            return relayed.count >= 3 ? relayed : nil
        }
        for record in records {
            #expect(record.bytesReceived == requestSize, "\(record)")
            #expect(record.sawEOF, "\(record)")
        }
        #expect(proxy.logLines.contains { $0.message == "connect failed" && $0["server"] == "refusing" },
                "the refused first attempt (and so the retry with the bytes in hand) did happen")
    }

    /// 100 bytes: one read, with the server's FIN usually right behind it. 300 000 bytes: the first
    /// read may be short with more already behind it, which must follow it in order.
    @Test("A server that answers at once and half-closes: the client gets the answer and the end, and can still send", arguments: [100, 300_000])
    func answerThenEnd(answerSize: Int) throws {
        let answerSeed: UInt64 = 0xA45_0000 + UInt64(answerSize)
        let backend = try Backend(name: "greeter", behavior: .bulk(sendBytes: answerSize, seed: answerSeed))
        defer { backend.stop() }
        let proxy = try SwitchyardProcess(config: TestConfig.global() + TestConfig.service(
            "greet", servers: ["greeter \(backend.address)"]))
        defer { proxy.stop() }

        let client = try TestClient(port: try proxy.port("greet"))
        defer { client.close() }
        let (bytes, end) = try client.readToEnd(timeout: .seconds(10))
        #expect(bytes.count == answerSize, "\(bytes.count) of \(answerSize) bytes before the end")
        #expect(bytes == PayloadStream.bytes(seed: answerSeed, count: answerSize), "the answer arrived altered")
        #expect(end == .eof, "the server's half-close reached the client as \(end)")

        // The other direction is still open: the server reads everything the client sends.
        let requestSeed: UInt64 = 0x5E_0001
        let requestSize = 50_000
        try client.send(PayloadStream.bytes(seed: requestSeed, count: requestSize))
        try client.shutdownWrite()
        let record = try backend.waitForRelayedConnection()
        #expect(record.bytesReceived == requestSize, "\(record)")
        #expect(record.receivedChecksum == PayloadStream.checksum(seed: requestSeed, count: requestSize))
        #expect(record.sawEOF, "\(record)")
        let line = try proxy.waitForConnectionClosed(client: client.localAddress)
        #expect(line["end"] == "closed", "\(line)")
        #expect(line["bytes_out"] == "\(answerSize)" && line["bytes_in"] == "\(requestSize)", "\(line)")
    }

    /// The server socket connects with its last handshake ACK held back for the client's first
    /// bytes; with none, switchyard must send it at once. If it did not, the server would see each
    /// connection only when the kernel's delayed-ACK timer fires, 200 ms later: 20 greetings would
    /// take 4 s instead of a few milliseconds. The bound leaves a factor of 40 for a slow machine.
    @Test("A server that speaks first greets at once: its connection is not held up by a delayed ACK")
    func serverFirstIsNotDelayed() throws {
        let greeter = try Backend(name: "greeter", behavior: .identify)
        defer { greeter.stop() }
        let proxy = try SwitchyardProcess(config: TestConfig.global() + TestConfig.service(
            "greet", servers: ["greeter \(greeter.address)"], extra: ["check = none"]))
        defer { proxy.stop() }
        let port = try proxy.port("greet")

        let started = ContinuousClock.now
        for _ in 0..<20 {
            let client = try TestClient(port: port)
            #expect(try client.readLine(timeout: .seconds(5)) == "greeter")
            client.close()
        }
        let elapsed = ContinuousClock.now - started
        #expect(elapsed < .seconds(2), "20 greetings through switchyard took \(elapsed)")
    }

    @Test("Clients that send at once while the server is slow to accept: switchyard holds none of their bytes while it connects")
    func nothingHeldWhileConnecting() throws {
        // A listener whose accept queue is full drops every further SYN: connects to it hang.
        let stalled = try StalledListener()
        defer { stalled.close() }
        let proxy = try SwitchyardProcess(config: OpsConfig.global() + TestConfig.service(
            "slow", servers: ["stalled 127.0.0.1:\(stalled.port)"], connectTimeout: "30s", extra: ["check = none"]))
        defer { proxy.stop() }
        let port = try proxy.port("slow")
        let baselineKiB = try proxy.residentMemoryKiB()

        // Each client sends 60 KB (less than its socket takes) while switchyard is paused: its
        // bytes are there when switchyard accepts it, and wait in the kernel until the connect.
        let clientCount = 200
        var clients: [TestClient] = []
        defer { for client in clients { client.close() } }
        try pause(proxy)
        var resumed = false
        defer { if !resumed { proxy.child.signal(SIGCONT) } }
        for i in 0..<clientCount {
            let client = try TestClient(port: port)
            try client.send(PayloadStream.bytes(seed: UInt64(i), count: 60_000))
            clients.append(client)
        }
        proxy.child.signal(SIGCONT)
        resumed = true
        try waitUntil("\(clientCount) connections admitted", timeout: .seconds(10)) {
            try proxy.status().root["active_connections"] as? Int == clientCount
        }
        let growthKiB = try proxy.residentMemoryKiB() - baselineKiB
        // About 500 KiB here; a 64 KiB pool buffer per waiting client would be 12 800 KiB more.
        #expect(growthKiB < clientCount * 16,
                "RSS grew by \(growthKiB) KiB for \(clientCount) clients waiting on a connect")
        #expect(try proxy.status().root["active_connections"] as? Int == clientCount, "none gave up yet")
    }
}
