// Everything at once: clients that transfer, reset, abandon or vanish, while the configuration is
// reloaded over and over and the admin endpoint is polled and fed garbage. What a user must see:
// every well-behaved transfer arrives whole, the process lives, and once the storm passes nothing
// is left behind (no connection counted active, no descriptor, no handle at exit).
import Foundation
import Glibc
import Synchronization
import Testing

@Suite("Storm")
struct StormTests {
    /// What one storm client does with its connection.
    enum Behaviour: CaseIterable {
        /// Sends a random amount, half-closes, reads the whole echo to EOF, checks it.
        case transfer
        /// The same, reading in small chunks with pauses (a slow reader).
        case slowTransfer
        /// Sends, reads a little of the echo, then resets (RST) mid-stream.
        case resetMidStream
        /// Sends and half-closes, then closes without reading (the unread echo makes it a RST).
        case abandon
        /// Connects and closes at once, before sending anything.
        case vanish
    }

    /// Outcome counts of one client thread; `failures` are well-behaved transfers that went wrong.
    struct Tally: Sendable {
        var connections = 0
        var transfers = 0
        var bytesSent = 0
        var failures: [String] = []
    }

    /// A seeded generator (the payloads' SplitMix64 words), so that a failing storm can be replayed.
    struct SeededGenerator: RandomNumberGenerator {
        let state: UInt64
        private var index = 0
        init(state: UInt64) { self.state = state }
        mutating func next() -> UInt64 {
            index += 1
            return PayloadStream.word(seed: state, index: index)
        }
    }

    static let connectionsPerThread = 300

    /// Set once the storm should end early (the reload loop ran out of time).
    final class StopFlag: Sendable {
        private let flag = Atomic<Bool>(false)
        var isSet: Bool { flag.load(ordering: .relaxed) }
        func set() { flag.store(true, ordering: .relaxed) }
    }

    static func runClient(port: UInt16, thread: Int, connections: Int, stop: StopFlag) -> Tally {
        var random = SeededGenerator(state: 0x5157_0000 + UInt64(thread))
        var tally = Tally()
        let sourceIP = "127.0.0.\(2 + thread)"
        for index in 0..<connections where !stop.isSet {
            let behaviour = Behaviour.allCases.randomElement(using: &random)!
            let count = Int.random(in: 0...(192 << 10), using: &random)
            let seed = UInt64(thread) << 32 | UInt64(index)
            tally.connections += 1
            do {
                let client = try TestClient(port: port, sourceIP: sourceIP)
                defer { client.close() }
                switch behaviour {
                case .transfer, .slowTransfer:
                    let slow = behaviour == .slowTransfer
                    let result = try client.transfer(
                        sendCount: count, sendSeed: seed,
                        readChunk: slow ? 4096 : 65536,
                        pauseAfterRead: slow ? .microseconds(200) : .zero,
                        timeout: .seconds(20))
                    tally.transfers += 1
                    tally.bytesSent += result.bytesSent
                    let expected = PayloadStream.checksum(seed: seed, count: count)
                    if result.bytesSent != count || result.bytesReceived != count || result.end != .eof
                        || result.receivedChecksum != expected || result.sendError != nil {
                        tally.failures.append("thread \(thread) connection \(index) (\(behaviour), \(count) B): \(result)")
                    }
                case .resetMidStream:
                    let bytes = PayloadStream.bytes(seed: seed, count: min(count, 32 << 10) + 1)
                    try client.send(bytes, timeout: .seconds(10))
                    _ = try client.readExactly(min(bytes.count, 1000), timeout: .seconds(10))
                    client.reset()
                case .abandon:
                    try client.send(PayloadStream.bytes(seed: seed, count: min(count, 8192) + 1), timeout: .seconds(10))
                    try client.shutdownWrite()
                    client.close()
                case .vanish:
                    client.close()
                }
            } catch {
                // Only the well-behaved kinds promise anything; the others may meet a closed
                // connection by design (that is the point of them).
                if behaviour == .transfer || behaviour == .slowTransfer {
                    tally.failures.append("thread \(thread) connection \(index) (\(behaviour), \(count) B): \(error)")
                }
            }
        }
        return tally
    }

    @Test("Transfers, resets, abandoned and vanishing clients during 20+ reloads and admin garbage: every transfer intact, nothing left behind")
    func storm() throws {
        let e1 = try Backend(name: "e1", behavior: .echo)
        defer { e1.stop() }
        let e2 = try Backend(name: "e2", behavior: .echo)
        defer { e2.stop() }
        let e3 = try Backend(name: "e3", behavior: .echo)
        defer { e3.stop() }
        let listen = try reserveLoopbackPort()
        // Two configurations to flip between: servers added and removed (with their connections
        // still open), weights and the balancing algorithm changed.
        func config(_ flip: Bool) -> String {
            OpsConfig.global()
                + OpsConfig.service(
                    "echo", listen: "127.0.0.1:\(listen)", balance: flip ? "least_conn" : "round_robin",
                    servers: flip
                        ? ["e1 \(e1.address) weight=3", "e3 \(e3.address)"]
                        : ["e1 \(e1.address)", "e2 \(e2.address)"],
                    extra: TestConfig.splice.map { ["splice = \($0)"] } ?? [])
        }
        let proxy = try SwitchyardProcess(config: config(false))
        defer { proxy.stop() }
        try proxy.waitForServersUp(service: "echo", servers: ["e1", "e2"])
        let adminPort = try proxy.adminPort()
        let baseline = try proxy.openDescriptorCount()

        let stop = StopFlag()
        let threads = 6
        let clients = (0..<threads).map { thread in
            BackgroundTask("storm client \(thread)") {
                Self.runClient(port: listen, thread: thread, connections: Self.connectionsPerThread, stop: stop)
            }
        }

        // Garbage and real requests on the admin endpoint, while the storm runs.
        let adminTask = BackgroundTask("admin storm") { () -> [String] in
            var problems: [String] = []
            var random = SeededGenerator(state: 0xAD01)
            var round = 0
            while !stop.isSet && round < 400 {
                round += 1
                if round % 2 == 0 {
                    let path = round % 4 == 0 ? "/metrics" : "/status"
                    do {
                        let reply = try AdminHTTP.request(port: adminPort, method: "GET", path: path)
                        if reply.status != 200 { problems.append("GET \(path): \(reply.status)") }
                    } catch {
                        problems.append("GET \(path): \(error)")
                    }
                } else {
                    // Random bytes: the endpoint must answer 4xx or close, never hang or die.
                    let garbage = (0..<Int.random(in: 1...600, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
                    do {
                        let client = try TestClient(port: adminPort)
                        defer { client.close() }
                        try? client.send(garbage)
                        try? client.shutdownWrite()
                        let (bytes, _) = try client.readToEnd(timeout: .seconds(5))
                        if let reply = AdminHTTP.parse(bytes), !(400..<500).contains(reply.status) {
                            problems.append("garbage got \(reply.status)")
                        }
                    } catch {
                        problems.append("garbage: \(error)")
                    }
                }
            }
            return problems
        }

        // Reload, alternating the two configurations, until the clients are done.
        var reloads = 0
        let reloadDeadline = Deadline(after: .seconds(120))
        while !clients.allSatisfy(\.isFinished) || reloads < 20 {
            guard !reloadDeadline.hasPassed else { break }
            reloads += 1
            try proxy.rewriteConfig(config(reloads % 2 == 1))
            try proxy.reloadBySignal(expectSuccessCount: reloads, timeout: .seconds(10))
            pause(.milliseconds(30))  // the reload cadence, not a wait for anything
        }
        stop.set()
        let tallies = try clients.map { try $0.wait(timeout: .seconds(60)) }
        let adminProblems = try adminTask.wait(timeout: .seconds(30))

        let failures = tallies.flatMap(\.failures)
        let transfers = tallies.map(\.transfers).reduce(0, +)
        let connections = tallies.map(\.connections).reduce(0, +)
        #expect(failures.isEmpty, "\(failures.count) of \(transfers) transfers failed: \(failures.prefix(5))\n\(proxy.recentLog())")
        #expect(connections == threads * Self.connectionsPerThread, "the storm stopped early (reload deadline): \(connections) connections")
        #expect(transfers >= 100, "only \(transfers) well-behaved transfers in the mix")
        #expect(reloads >= 20 && proxy.logCount("reload failed; keeping the running configuration") == 0)
        #expect(adminProblems.isEmpty, "admin endpoint: \(adminProblems.prefix(5))")
        #expect(proxy.isRunning)

        // Nothing left behind: no active connection, the descriptors back to where they were.
        var active = -1.0
        let drained = (try? waitUntil("no connection active", timeout: .seconds(10)) {
            let metrics = try proxy.metrics()
            active = ["e1", "e2", "e3"].map { name -> Double in
                (try? metrics.value("switchyard_connections_active", ["service": "echo", "server": name])) ?? 0
            }.reduce(0, +)
            return active == 0
        }) != nil
        #expect(drained, "\(active) connections still counted active after the storm")
        // The servers' descriptors as well: the last configuration is in place and probed.
        var current = -1
        let settled = (try? waitUntil("descriptors back to the baseline", timeout: .seconds(10)) {
            current = try proxy.openDescriptorCount()
            return current == baseline
        }) != nil
        #expect(settled, "\(current) open descriptors after the storm, \(baseline) before")

        // Still relaying, then a clean exit with every handle closed.
        let client = try TestClient(port: listen)
        try client.roundTrip("after the storm\n")
        client.close()
        #expect(try proxy.terminate() == .exited(0))
        #expect(proxy.logCount("event loop closed with handles still open") == 0, "\(proxy.recentLog())")
    }
}
