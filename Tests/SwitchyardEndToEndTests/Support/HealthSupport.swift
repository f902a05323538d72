// Support for the health-check and failover tests: a backend that can die and come back on the
// same port (or stop accepting while keeping its connections), health-event log helpers, a config
// builder with short health intervals and a one-shot client exchange.
import Dispatch
import Foundation
import Glibc
import Synchronization

// MARK: - Config

/// Service sections with health keys, on top of `TestConfig`.
enum HealthTestConfig {
    /// Short intervals so that a probe-driven state change takes well under a second.
    static let fastKeys = [
        "check_interval = 200ms",
        "check_timeout = 200ms",
        "eject_time = 300ms",
        "eject_time_max = 1s",
    ]

    /// `TestConfig.service(...)` followed by `keys` (each "key = value"), which belong to the same section.
    static func service(
        _ name: String,
        balance: String = "round_robin",
        servers: [String],
        keys: [String] = fastKeys,
        extra: [String] = []
    ) -> String {
        TestConfig.service(name, balance: balance, servers: servers)
            + (keys + extra).map { $0 + "\n" }.joined() + "\n"
    }
}

// MARK: - Log helpers

/// A health state change as logged (`notice`, with `service`, `server` and `state`).
struct HealthEventLine: CustomStringConvertible {
    /// Position in the log (a later event has a larger index).
    var index: Int
    var line: LogLine
    /// When the test saw it.
    var seenAt: ContinuousClock.Instant

    var message: String { line.message ?? "" }
    var description: String { line.raw }
}

extension SwitchyardProcess {
    /// Cursor into the log: events at or after this index happened after this call.
    var healthLogMark: Int { logLines.count }

    /// Health events of `server` in `service` with `state`, from index `after` on.
    func healthEvents(service: String, server: String, state: String, after mark: Int = 0) -> [(index: Int, line: LogLine)] {
        let lines = logLines
        guard mark < lines.count else { return [] }
        return (max(0, mark)..<lines.count).compactMap { i in
            let line = lines[i]
            guard line["service"] == service, line["server"] == server, line["state"] == state else { return nil }
            return (i, line)
        }
    }

    /// Waits for a health event (`up`, `down`, `ejected`, `half_open`, `restored`, ...) of `server`
    /// logged at or after `mark`.
    @discardableResult
    func waitForHealthEvent(
        service: String, server: String, state: String, after mark: Int = 0, timeout: Duration = .seconds(5)
    ) throws -> HealthEventLine {
        do {
            return try waitFor("\"\(state)\" event of server \(server) in service \(service)", timeout: timeout, interval: .milliseconds(5)) {
                healthEvents(service: service, server: server, state: state, after: mark).first.map {
                    HealthEventLine(index: $0.index, line: $0.line, seenAt: .now)
                }
            }
        } catch {
            throw HarnessError("\(error); recent log:\n\(recentLog(40))")
        }
    }

    /// Lines with `message` from `service` (and `server`, if given) at or after `mark`.
    func healthLines(message: String, service: String, server: String? = nil, after mark: Int = 0) -> [LogLine] {
        let lines = logLines
        guard mark < lines.count else { return [] }
        return lines[max(0, mark)...].filter {
            $0.message == message && $0["service"] == service && (server == nil || $0["server"] == server)
        }
    }

    /// Index of the `connection closed` line of the client at `client` ("ip:port").
    func waitForClosedLine(client: String, timeout: Duration = .seconds(5)) throws -> (index: Int, line: LogLine) {
        do {
            return try waitFor("\"connection closed\" for client \(client)", timeout: timeout) {
                let lines = logLines
                return lines.indices.first { lines[$0].message == "connection closed" && lines[$0]["client"] == client }
                    .map { ($0, lines[$0]) }
            }
        } catch {
            throw HarnessError("\(error); recent log:\n\(recentLog(40))")
        }
    }
}

// MARK: - Clients

enum HealthClient {
    /// One short connection through an `identify` backend: connect (optionally from `sourceIP`),
    /// read the greeting, echo `payload`, close. Returns the name of the server that answered.
    static func exchange(port: UInt16, sourceIP: String? = nil, payload: String = "ping\n", timeout: Duration = .seconds(5)) throws -> String {
        let client = try TestClient(port: port, sourceIP: sourceIP, timeout: timeout)
        defer { client.close() }
        let name = try client.readLine(timeout: timeout)
        try client.roundTrip(payload, timeout: timeout)
        return name
    }

    /// `count` exchanges; the name of the server of each, in order. Throws at the first failure.
    static func names(port: UInt16, count: Int) throws -> [String] {
        try (0..<count).map { i in
            do {
                return try exchange(port: port, payload: "request \(i)\n")
            } catch {
                throw HarnessError("connection \(i + 1) of \(count) failed: \(error)")
            }
        }
    }
}

// MARK: - A backend that can die and come back

/// What a `HealthBackend` does with each connection.
enum HealthBackendBehavior: Sendable {
    /// Sends its name + "\n" on accept, then echoes.
    case identify
    /// Echoes.
    case echo
    /// After each read, sends these bytes (what was read is discarded); never closes first.
    case reply([UInt8])
}

/// A TCP server on 127.0.0.1 run by its own thread (a poll loop). Unlike `Backend` it can
///   - `stop()`: die as a crashed server does: listener closed, every connection reset;
///   - `closeListener()`: stop accepting (connects are refused) while established connections go on;
///   - `listen()`: listen again on the same port (SO_REUSEADDR), as a restarted server does.
/// Its port is chosen below the kernel's ephemeral range, so that while it is down no outgoing
/// connection (a probe, a proxied connect) can take the port as its own source port (which would
/// stop it from listening again, or connect to itself).
final class HealthBackend: Sendable {
    let name: String
    let port: UInt16
    private let core: HealthBackendCore

    init(name: String, behavior: HealthBackendBehavior = .identify) throws {
        self.name = name
        let listener = try HealthBackend.makeListenerOutsideEphemeralRange()
        let wake: (read: Int32, write: Int32)
        do {
            wake = try Socket.makePipe()
            try Socket.setNonBlocking(wake.read)
            try Socket.setNonBlocking(wake.write)
        } catch {
            Glibc.close(listener.fd)
            throw error
        }
        port = listener.port
        core = HealthBackendCore(
            name: name, behavior: behavior, port: listener.port, listenFD: listener.fd,
            wakeRead: wake.read, wakeWrite: wake.write)
        let core = self.core
        let thread = Thread { core.run() }
        thread.name = "health backend \(name)"
        thread.start()
    }

    deinit { core.shutdown() }

    /// "127.0.0.1:PORT".
    var address: String { "127.0.0.1:\(port)" }
    /// "NAME 127.0.0.1:PORT", for `server =` lines.
    var serverLine: String { "\(name) \(address)" }

    /// The server dies: listener closed (connects are refused), open connections reset.
    func stop() throws {
        try core.perform(.closeListener)
        try core.perform(.resetConnections)
    }

    /// Stops accepting; connections already established stay open and keep working.
    func closeListener() throws { try core.perform(.closeListener) }

    /// Resets every open connection.
    func resetConnections() throws { try core.perform(.resetConnections) }

    /// Listens again on the same port.
    func listen() throws { try core.perform(.listen) }

    /// Ends the backend for good (closes everything). Idempotent; deinit does it too.
    func shutdown() { core.shutdown() }

    /// Connections accepted (probes included).
    var acceptedCount: Int { core.shared.withLock { $0.accepted } }
    /// Connections that carried at least one byte from the peer.
    var dataConnectionCount: Int { core.shared.withLock { $0.withData } }
    /// Connections open now.
    var activeCount: Int { core.shared.withLock { $0.active } }

    func waitForActive(_ count: Int, timeout: Duration = .seconds(5)) throws {
        try waitUntil("backend \(name) to have \(count) open connection(s) (now \(activeCount))", timeout: timeout) {
            activeCount == count
        }
    }

    // MARK: Listening sockets

    /// Binds 127.0.0.1:`port` (SO_REUSEADDR) and listens, non-blocking and close-on-exec.
    static func makeListener(port: UInt16) throws -> Int32 {
        let fd = try Socket.makeTCP()
        do {
            Socket.setReuseAddress(fd)
            try Socket.bind(fd, ip: "127.0.0.1", port: port)
            guard Glibc.listen(fd, 1024) == 0 else { throw posixError("listen on 127.0.0.1:\(port)") }
            try Socket.setNonBlocking(fd)
        } catch {
            Glibc.close(fd)
            throw error
        }
        return fd
    }

    /// A listener on a free port below the ephemeral range (random, retried on EADDRINUSE).
    static func makeListenerOutsideEphemeralRange() throws -> (fd: Int32, port: UInt16) {
        let ports = portsBelowEphemeralRange()
        var lastError: Error = HarnessError("no free port in \(ports)")
        for _ in 0..<100 {
            let port = UInt16.random(in: ports)
            do {
                return (try makeListener(port: port), port)
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    /// 10000 up to just below the first port of `net.ipv4.ip_local_port_range`.
    static func portsBelowEphemeralRange() -> ClosedRange<UInt16> {
        var low = 32768
        if let text = try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8),
           let first = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first,
           let value = Int(first) {
            low = value
        }
        // A kernel whose ephemeral range starts very low leaves no room: then use 40000-49999 and
        // accept the (tiny) risk.
        guard low > 11000 else { return 40000...49999 }
        return 10000...UInt16(min(low - 1, 65535))
    }

    /// A port below the ephemeral range that nothing listens on right now (for programs that must
    /// be told a port, such as postgres).
    static func freePortOutsideEphemeralRange() throws -> UInt16 {
        let (fd, port) = try makeListenerOutsideEphemeralRange()
        Glibc.close(fd)
        return port
    }
}

/// A request from the test thread to the backend thread, with its completion.
private final class HealthBackendCommand: Sendable {
    enum Kind: Sendable { case closeListener, resetConnections, listen }
    let kind: Kind
    let done = DispatchSemaphore(value: 0)
    let error = Mutex<String?>(nil)

    init(_ kind: Kind) { self.kind = kind }
}

private final class HealthBackendCore: Sendable {
    struct Shared {
        var accepted = 0
        var active = 0
        var withData = 0
        var commands: [HealthBackendCommand] = []
        var shutdownRequested = false
    }

    let name: String
    let behavior: HealthBackendBehavior
    let port: UInt16
    /// The first listener; later ones live in the loop's local state.
    let initialListenFD: Int32
    let wakeRead: Int32
    let wakeWrite: Int32
    let shared = Mutex(Shared())
    let stopped = DispatchSemaphore(value: 0)

    init(name: String, behavior: HealthBackendBehavior, port: UInt16, listenFD: Int32, wakeRead: Int32, wakeWrite: Int32) {
        self.name = name
        self.behavior = behavior
        self.port = port
        self.initialListenFD = listenFD
        self.wakeRead = wakeRead
        self.wakeWrite = wakeWrite
    }

    private func wake() {
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }

    /// Runs `kind` on the backend thread and waits for it.
    func perform(_ kind: HealthBackendCommand.Kind) throws {
        let command = HealthBackendCommand(kind)
        let accepted = shared.withLock { state -> Bool in
            guard !state.shutdownRequested else { return false }
            state.commands.append(command)
            return true
        }
        guard accepted else { throw HarnessError("backend \(name) is shut down") }
        wake()
        guard command.done.wait(timeout: .now() + 10) == .success else {
            throw HarnessError("backend \(name) did not carry out \(kind) within 10 s")
        }
        if let error = command.error.withLock({ $0 }) { throw HarnessError("backend \(name): \(kind): \(error)") }
    }

    func shutdown() {
        let first = shared.withLock { state -> Bool in
            defer { state.shutdownRequested = true }
            return !state.shutdownRequested
        }
        guard first else { return }
        wake()
        if stopped.wait(timeout: .now() + 10) == .timedOut { return }  // stuck loop: leak rather than race
        close(wakeWrite)
    }

    // MARK: The loop (on the backend's own thread)

    private struct Conn {
        let fd: Int32
        var out: [UInt8] = []
        var readEOF = false
        var sawData = false
    }

    func run() {
        var listenFD = initialListenFD
        var conns: [Int32: Conn] = [:]
        var buffer = [UInt8](repeating: 0, count: 65536)

        func closeConn(_ fd: Int32, reset: Bool) {
            if reset { Socket.setLingerZero(fd) }
            close(fd)
            conns[fd] = nil
            shared.withLock { $0.active -= 1 }
        }

        loop: while true {
            var order: [Int32] = []
            var fds = [pollfd(fd: wakeRead, events: pollIn, revents: 0), pollfd(fd: listenFD, events: pollIn, revents: 0)]
            for (fd, conn) in conns {
                order.append(fd)
                var events: Int16 = conn.readEOF ? 0 : pollIn
                if !conn.out.isEmpty { events |= pollOut }
                fds.append(pollfd(fd: fd, events: events, revents: 0))
            }
            // A negative descriptor is ignored by poll(2): the listener slot when not listening.
            let rc = poll(&fds, nfds_t(fds.count), 1000)
            if rc < 0 && errno != EINTR { break loop }

            if fds[0].revents != 0 {
                var sink = [UInt8](repeating: 0, count: 64)
                while read(wakeRead, &sink, sink.count) > 0 {}
            }
            let (commands, quit) = shared.withLock { state -> ([HealthBackendCommand], Bool) in
                defer { state.commands.removeAll() }
                return (state.commands, state.shutdownRequested)
            }
            if quit {
                for command in commands {
                    command.error.withLock { $0 = "shut down" }
                    command.done.signal()
                }
                break loop
            }
            if !commands.isEmpty {
                for command in commands {
                    switch command.kind {
                    case .closeListener:
                        if listenFD >= 0 {
                            close(listenFD)
                            listenFD = -1
                        }
                    case .resetConnections:
                        for fd in Array(conns.keys) { closeConn(fd, reset: true) }
                    case .listen:
                        if listenFD < 0 {
                            do {
                                listenFD = try HealthBackend.makeListener(port: port)
                            } catch {
                                command.error.withLock { $0 = "\(error)" }
                            }
                        }
                    }
                    command.done.signal()
                }
                continue loop  // the descriptor set changed under this poll's results
            }
            if rc <= 0 { continue loop }

            if listenFD >= 0 && fds[1].revents & pollIn != 0 {
                while let fd = Socket.acceptNonBlocking(listenFD) {
                    var conn = Conn(fd: fd)
                    if case .identify = behavior { conn.out = Array("\(name)\n".utf8) }
                    conns[fd] = conn
                    shared.withLock {
                        $0.accepted += 1
                        $0.active += 1
                    }
                }
            }

            for (index, fd) in order.enumerated() {
                let revents = fds[index + 2].revents
                guard revents != 0, var conn = conns[fd] else { continue }
                var broken = false
                if !conn.readEOF && revents & (pollIn | pollHup | pollErr) != 0 {
                    let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
                    if n > 0 {
                        if !conn.sawData {
                            conn.sawData = true
                            shared.withLock { $0.withData += 1 }
                        }
                        switch behavior {
                        case .identify, .echo: conn.out += buffer[0..<n]
                        case .reply(let bytes): conn.out += bytes
                        }
                    } else if n == 0 {
                        conn.readEOF = true
                    } else if errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR {
                        broken = true
                    }
                } else if revents & pollErr != 0 {
                    broken = true
                }
                while !broken && !conn.out.isEmpty {
                    let n = conn.out.withUnsafeBytes { send(fd, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
                    if n > 0 {
                        conn.out.removeFirst(n)
                    } else {
                        if n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR { broken = true }
                        break
                    }
                }
                if broken {
                    closeConn(fd, reset: true)
                } else if conn.readEOF && conn.out.isEmpty {
                    // The peer is done and everything it asked for was sent: close in order.
                    conns[fd] = conn
                    closeConn(fd, reset: false)
                } else {
                    conns[fd] = conn
                }
            }
        }

        for fd in Array(conns.keys) { closeConn(fd, reset: false) }
        if listenFD >= 0 { close(listenFD) }
        close(wakeRead)
        stopped.signal()
    }
}
