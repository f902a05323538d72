// `busy_poll`: workers poll for a short while after I/O instead of sleeping at once. Traffic must
// relay as usual, and once it stops every thread must go back to sleep (a loop that kept spinning
// would burn a core on an idle balancer).
import Foundation
import Testing

@Suite("Busy polling")
struct BusyPollTests {
    /// The scheduler state (R, S, …) of each of the process's threads.
    private func threadStates(_ pid: Int32) -> [String: String] {
        let dir = "/proc/\(pid)/task"
        let tids = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        var states: [String: String] = [:]
        for tid in tids {
            guard let text = readProcFile("\(dir)/\(tid)/stat"), let close = text.lastIndex(of: ")") else { continue }
            // `PID (name) STATE …`: the state follows the name, which may contain spaces.
            let rest = text[text.index(after: close)...].split(separator: " ")
            if let state = rest.first { states[tid] = String(state) }
        }
        return states
    }

    @Test("busy_poll = 500us relays traffic, then every thread sleeps once it stops")
    func pollsThenSleeps() throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let proxy = try SwitchyardProcess(config: TestConfig.global().replacingOccurrences(
            of: "[global]\n", with: "[global]\nbusy_poll = 500us\n") + """
            [service bp]
            listen = 127.0.0.1:0
            server = echo \(echo.address)

            """)
        defer { proxy.stop() }
        try proxy.waitForServersUp(service: "bp", servers: ["echo"])

        let client = try TestClient(port: try proxy.port("bp"))
        defer { client.close() }
        for i in 0..<200 { try client.roundTrip("request \(i)\n") }

        // Idle now (the connection stays open): within the deadline, every thread is asleep at the
        // same moment. A loop stuck polling would stay in state R.
        var states: [String: String] = [:]
        let slept = (try? waitUntil("every switchyard thread asleep", timeout: .seconds(5)) {
            states = threadStates(proxy.pid)
            return !states.isEmpty && states.values.allSatisfy { $0 == "S" }
        }) != nil
        #expect(slept, "thread states while idle: \(states)")

        try client.roundTrip("after the pause\n")
        client.close()
        let line = try proxy.waitForConnectionClosed(client: client.localAddress)
        #expect(line["end"] == "closed", "\(line)")
    }
}
