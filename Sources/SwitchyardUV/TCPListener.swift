import CLibUV
#if canImport(Glibc)
import Glibc
#endif

/// A listening TCP socket. Reports each pending connection; the owner accepts it with `accept()`.
public final class TCPListener: UVHandle {
    public typealias ConnectionHandler = (TCPListener) -> Void
    private var onConnection: ConnectionHandler?
    /// Called when accepting fails; the listener keeps listening. Not for EMFILE/ENFILE: libuv
    /// 1.44 then frees its reserve descriptor, accepts and closes every pending connection and
    /// reports nothing (`uv__emfile_trick`), so those clients are closed unseen.
    /// `max_connections` against the open-file limit (checked at start) is what prevents it.
    public var onError: ((TCPListener, UVError) -> Void)?
    /// The address actually bound (with the real port when port 0 was asked for).
    public private(set) var boundAddress: SocketAddress
    private var closeHandler: (() -> Void)?

    var tcp: UnsafeMutablePointer<uv_tcp_t> {
        UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_tcp_t.self)
    }

    /// Binds and listens. With `reusePort`, sets `SO_REUSEPORT` before binding so that several
    /// loops can each have their own listening socket on one address (the kernel spreads
    /// connections among them). IPv6 sockets are IPv6-only, so `0.0.0.0:P` and `[::]:P` can coexist.
    public init(
        loop: EventLoop, address: SocketAddress, backlog: Int32 = 511, reusePort: Bool = false,
        onConnection: @escaping ConnectionHandler
    ) throws(UVError) {
        let h = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        let rc = uv_tcp_init_ex(loop.raw, h, UInt32(address.family == .ipv6 ? AF_INET6 : AF_INET))
        if rc < 0 {
            h.deallocate()
            throw UVError(rc)
        }
        self.boundAddress = address
        self.onConnection = onConnection
        super.init(loop: loop, handle: asHandle(h))
        do throws(UVError) {
            if reusePort {
                var fd: uv_os_fd_t = -1
                try UVError.check(uv_fileno(handle, &fd))
                var one: Int32 = 1
                if setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size)) != 0 {
                    throw UVError(-errno)
                }
            }
            let flags: UInt32 = address.family == .ipv6 ? UInt32(UV_TCP_IPV6ONLY.rawValue) : 0
            try UVError.check(address.withSockaddr { uv_tcp_bind(tcp, $0, flags) })
            try UVError.check(uv_listen(asStream(tcp), backlog) { server, status in
                guard let server, let data = server.pointee.data else { return }
                let me = Unmanaged<TCPListener>.fromOpaque(data).takeUnretainedValue()
                me.loop.ioActivity &+= 1
                if status < 0 {
                    me.onError?(me, UVError(status))
                } else {
                    me.onConnection?(me)
                }
            })
            var storage = sockaddr_storage()
            var length = Int32(MemoryLayout<sockaddr_storage>.size)
            let nameRC = withUnsafeMutableBytes(of: &storage) { raw in
                uv_tcp_getsockname(tcp, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), &length)
            }
            if nameRC == 0 { boundAddress = SocketAddress(storage: storage) }
        } catch {
            close()
            throw error
        }
    }

    /// Fails with `UV_EADDRINUSE` if some socket already listens on `address` (port not 0): binds
    /// a plain socket there — `SO_REUSEADDR` as libuv sets it, but no `SO_REUSEPORT` — and closes
    /// it at once. Listeners bound with `reusePort` would instead share the address, silently, with
    /// any other `SO_REUSEPORT` socket of the same user (another instance of this program).
    public static func checkAddressFree(_ address: SocketAddress) throws(UVError) {
        let fd = socket(address.family == .ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw UVError(-errno) }
        defer { _ = Glibc.close(fd) }
        var one: Int32 = 1
        let size = socklen_t(MemoryLayout<Int32>.size)
        guard setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, size) == 0 else { throw UVError(-errno) }
        if address.family == .ipv6 {
            guard setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, size) == 0 else { throw UVError(-errno) }
        }
        let length = socklen_t(address.family == .ipv6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
        guard address.withSockaddr({ Glibc.bind(fd, $0, length) }) == 0 else { throw UVError(-errno) }
    }

    /// Sets `TCP_NODELAY` and TCP keepalive on the listening socket. Linux copies both to every
    /// accepted socket, which saves those system calls on each new connection.
    public func setAcceptedSocketOptions(noDelay: Bool, keepAliveSeconds: UInt32?) throws(UVError) {
        try UVError.check(uv_tcp_nodelay(tcp, noDelay ? 1 : 0))
        if let keepAliveSeconds {
            try UVError.check(uv_tcp_keepalive(tcp, 1, keepAliveSeconds))
        }
    }

    /// Accepts one pending connection into a new stream.
    public func accept() throws(UVError) -> TCPStream {
        let client = try TCPStream(loop: loop)
        let rc = uv_accept(asStream(tcp), client.stream)
        if rc < 0 {
            client.close()
            throw UVError(rc)
        }
        return client
    }

    /// Closes the listener; `then` runs once the socket is really closed.
    public func close(then: @escaping () -> Void) {
        closeHandler = then
        close()
    }

    override func didClose() {
        onConnection = nil
        onError = nil
        let handler = closeHandler
        closeHandler = nil
        handler?()
    }
}
