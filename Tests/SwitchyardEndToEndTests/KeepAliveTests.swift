// TCP keepalive: always on the client side (inherited from the listening socket), on the server
// side only with `server_keepalive = on`. Seen from outside in /proc/net/tcp, where a socket with
// its keepalive timer armed shows timer kind 2 once it is idle.
import Foundation
import Testing

@Suite("Keepalive")
struct KeepAliveTests {
    /// One row of /proc/net/tcp: local and remote port, state, timer kind.
    private struct TCPRow {
        var localPort: UInt16
        var remotePort: UInt16
        var state: UInt8
        var timer: Int
    }

    private func tcpRows() -> [TCPRow] {
        guard let text = readProcFile("/proc/net/tcp") else { return [] }
        return text.split(separator: "\n").dropFirst().compactMap { line in
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count > 5,
                  let local = f[1].split(separator: ":").last, let remote = f[2].split(separator: ":").last,
                  let lp = UInt16(local, radix: 16), let rp = UInt16(remote, radix: 16),
                  let st = UInt8(f[3], radix: 16),
                  let tr = f[5].split(separator: ":").first, let timer = Int(tr, radix: 16)
            else { return nil }
            return TCPRow(localPort: lp, remotePort: rp, state: st, timer: timer)
        }
    }

    /// Waits until the established socket picked by `match` is idle (no retransmit timer) and
    /// returns whether its keepalive timer is armed.
    private func keepAliveArmed(_ what: String, _ match: @escaping (TCPRow) -> Bool) throws -> Bool {
        var row: TCPRow?
        try waitUntil("\(what) established and idle", timeout: .seconds(5)) {
            row = tcpRows().first { $0.state == 1 && match($0) }
            return row.map { $0.timer == 0 || $0.timer == 2 } ?? false
        }
        return row?.timer == 2
    }

    @Test("client sockets always have keepalive; server sockets only with server_keepalive = on",
          arguments: [nil, "off", "on"])
    func keepAliveTimers(setting: String?) throws {
        let echo = try Backend(name: "echo", behavior: .echo)
        defer { echo.stop() }
        let backendPort = try #require(UInt16(echo.address.split(separator: ":").last ?? ""))
        let proxy = try SwitchyardProcess(config: TestConfig.global() + """
            [service ka]
            listen = 127.0.0.1:0
            server = echo \(echo.address)
            check = none
            \(setting.map { "server_keepalive = \($0)" } ?? "")

            """)
        defer { proxy.stop() }
        let port = try proxy.port("ka")

        let client = try TestClient(port: port)
        defer { client.close() }
        try client.roundTrip("hello\n")
        try echo.waitForActive(1)

        let clientSide = try keepAliveArmed("balancer's socket to the client") {
            $0.localPort == port && $0.remotePort == client.localPort
        }
        #expect(clientSide, "the balancer's client-side socket has keepalive")
        // The balancer's socket to the server (remote port is the backend's; no probes here).
        let serverSide = try keepAliveArmed("balancer's socket to the server") {
            $0.remotePort == backendPort && $0.localPort != port
        }
        #expect(serverSide == (setting == "on"), "server_keepalive = \(setting ?? "(default)")")
        try client.roundTrip("still relaying\n")
    }
}
