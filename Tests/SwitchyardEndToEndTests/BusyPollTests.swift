// `busy_poll`: workers poll for a short while after I/O instead of sleeping at once. Traffic must
// relay as usual, and once it stops every thread must go back to sleep (a loop that kept spinning
// would burn a core on an idle balancer).
import Foundation
import Testing

@Suite("Busy polling")
struct BusyPollTests {
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
            states = threadStates(pid: proxy.pid)
            return !states.isEmpty && states.values.allSatisfy { $0 == "S" }
        }) != nil
        #expect(slept, "thread states while idle: \(states)")

        try client.roundTrip("after the pause\n")
        client.close()
        let line = try proxy.waitForConnectionClosed(client: client.localAddress)
        #expect(line["end"] == "closed", "\(line)")
    }
}
