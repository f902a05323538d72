// Thin POSIX socket helpers (IPv4, loopback only). Every descriptor is created close-on-exec so
// that a switchyard child started by a concurrently running test never inherits (and keeps open)
// a socket that belongs to another test.
import Glibc

/// How a peer ended a stream, as seen by a reader.
enum StreamEnd: String, Sendable, Equatable, CustomStringConvertible {
    /// Orderly FIN (`recv` returned 0).
    case eof
    /// Connection reset or another socket error.
    case reset

    var description: String { rawValue }
}

func posixError(_ what: String, _ code: Int32 = errno) -> HarnessError {
    HarnessError("\(what): \(String(cString: strerror(code))) (errno \(code))")
}

enum Socket {
    /// A new TCP/IPv4 socket, close-on-exec.
    static func makeTCP() throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw posixError("socket") }
        return fd
    }

    static func address(_ ip: String, _ port: UInt16) throws -> sockaddr_in {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        guard inet_pton(AF_INET, ip, &addr.sin_addr) == 1 else {
            throw HarnessError("not an IPv4 address: \(ip)")
        }
        return addr
    }

    static func bind(_ fd: Int32, ip: String, port: UInt16) throws {
        var addr = try address(ip, port)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else { throw posixError("bind \(ip):\(port)") }
    }

    static func setNonBlocking(_ fd: Int32) throws {
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 else { throw posixError("fcntl O_NONBLOCK") }
    }

    static func setCloseOnExec(_ fd: Int32) {
        _ = fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC)
    }

    /// A pipe whose both ends are close-on-exec.
    static func makePipe() throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw posixError("pipe") }
        setCloseOnExec(fds[0])
        setCloseOnExec(fds[1])
        return (fds[0], fds[1])
    }

    /// Accepts one pending connection as a non-blocking, close-on-exec socket; nil when none is pending.
    static func acceptNonBlocking(_ listenFD: Int32) -> Int32? {
        while true {
            let fd = accept(listenFD, nil, nil)
            if fd < 0 {
                if errno == EINTR { continue }
                return nil
            }
            setCloseOnExec(fd)
            _ = try? setNonBlocking(fd)
            return fd
        }
    }

    static func setReuseAddress(_ fd: Int32) {
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// SO_LINGER {on, 0}: a later `close` sends RST instead of FIN.
    static func setLingerZero(_ fd: Int32) {
        var lingerOption = linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &lingerOption, socklen_t(MemoryLayout<linger>.size))
    }

    static func setReceiveBuffer(_ fd: Int32, bytes: Int32) {
        var size = bytes
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }

    static func pendingError(_ fd: Int32) -> Int32 {
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        _ = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
        return err
    }

    private static func format(_ addr: sockaddr_in) -> (ip: String, port: UInt16) {
        var a = addr.sin_addr
        var buffer = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        _ = inet_ntop(AF_INET, &a, &buffer, socklen_t(buffer.count))
        let ip = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        return (ip, UInt16(bigEndian: addr.sin_port))
    }

    static func localAddress(_ fd: Int32) -> (ip: String, port: UInt16) {
        var addr = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return format(addr)
    }

    static func peerAddress(_ fd: Int32) -> (ip: String, port: UInt16) {
        var addr = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &len) }
        }
        return format(addr)
    }

    /// A non-blocking listening socket on 127.0.0.1 with an ephemeral port.
    static func makeLoopbackListener(backlog: Int32 = 1024, ip: String = "127.0.0.1", port: UInt16 = 0) throws -> (fd: Int32, port: UInt16) {
        let fd = try makeTCP()
        do {
            setReuseAddress(fd)
            try bind(fd, ip: ip, port: port)
            guard listen(fd, backlog) == 0 else { throw posixError("listen") }
            try setNonBlocking(fd)
        } catch {
            close(fd)
            throw error
        }
        return (fd, localAddress(fd).port)
    }

    /// Waits for `events` on `fd` until the deadline. Returns the revents (0 on timeout).
    static func waitFor(_ fd: Int32, events: Int16, deadline: Deadline) throws -> Int16 {
        while true {
            var p = pollfd(fd: fd, events: events, revents: 0)
            let rc = poll(&p, 1, deadline.pollTimeout)
            if rc < 0 {
                if errno == EINTR { continue }
                throw posixError("poll")
            }
            if rc > 0 { return p.revents }
            if deadline.hasPassed { return 0 }
        }
    }

    /// A free loopback TCP port: bound to port 0, read back, closed. (Racy by nature; only for
    /// programs such as redis-server that must be told a port.)
    static func freeLoopbackPort() throws -> UInt16 {
        let fd = try makeTCP()
        defer { close(fd) }
        try bind(fd, ip: "127.0.0.1", port: 0)
        return localAddress(fd).port
    }
}

let pollIn = Int16(POLLIN)
let pollOut = Int16(POLLOUT)
let pollErr = Int16(POLLERR)
let pollHup = Int16(POLLHUP)

/// A port on 127.0.0.1 that refuses connections: a socket is bound to it (so no one else takes
/// the port) but never listens, so the kernel answers SYNs with RST.
final class RefusingPort {
    private var fd: Int32
    let port: UInt16

    init() throws {
        fd = try Socket.makeTCP()
        do {
            try Socket.bind(fd, ip: "127.0.0.1", port: 0)
        } catch {
            Glibc.close(fd)
            throw error
        }
        port = Socket.localAddress(fd).port
    }

    func close() {
        if fd >= 0 {
            Glibc.close(fd)
            fd = -1
        }
    }

    deinit { close() }
}

/// A listening socket with a backlog of 0 whose one queue slot is taken (by a connection it never
/// accepts): the kernel drops every further SYN, so connects to it stay pending.
final class StalledListener {
    private var listenFD: Int32 = -1
    private var filler: TestClient?
    let port: UInt16

    init() throws {
        let (fd, port) = try Socket.makeLoopbackListener(backlog: 0)
        listenFD = fd
        self.port = port
        filler = try TestClient(port: port)
    }

    func close() {
        filler?.close()
        filler = nil
        if listenFD >= 0 {
            Glibc.close(listenFD)
            listenFD = -1
        }
    }

    deinit { close() }
}
