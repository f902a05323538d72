import CLibUV
#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 socket address (a `sockaddr_storage`), as libuv takes and returns them.
public struct SocketAddress: @unchecked Sendable, Equatable, CustomStringConvertible {
    // @unchecked Sendable: a plain value (C struct of integers), copied, never shared.
    public private(set) var storage = sockaddr_storage()

    public enum Family: Sendable { case ipv4, ipv6 }

    /// From an IP literal (no brackets) and a port.
    public init(ip: String, port: UInt16) throws(UVError) {
        var rc: Int32
        if ip.contains(":") {
            rc = withUnsafeMutableBytes(of: &storage) { raw in
                uv_ip6_addr(ip, Int32(port), raw.baseAddress!.assumingMemoryBound(to: sockaddr_in6.self))
            }
        } else {
            rc = withUnsafeMutableBytes(of: &storage) { raw in
                uv_ip4_addr(ip, Int32(port), raw.baseAddress!.assumingMemoryBound(to: sockaddr_in.self))
            }
        }
        if rc < 0 { throw UVError(rc) }
    }

    /// Copies a `sockaddr` of either family. Nil for other families.
    public init?(_ address: UnsafePointer<sockaddr>) {
        let family = Int32(address.pointee.sa_family)
        let length: Int
        switch family {
        case AF_INET: length = MemoryLayout<sockaddr_in>.size
        case AF_INET6: length = MemoryLayout<sockaddr_in6>.size
        default: return nil
        }
        withUnsafeMutableBytes(of: &storage) { dst in
            dst.copyMemory(from: UnsafeRawBufferPointer(start: address, count: length))
        }
    }

    init(storage: sockaddr_storage) { self.storage = storage }

    /// Resolves a host (IP literal or DNS name) with the system resolver (blocking; used when a
    /// configuration is loaded, never on the loop's hot path). IPv4 results come first.
    public static func resolve(host: String, port: UInt16) throws(UVError) -> [SocketAddress] {
        if let literal = try? SocketAddress(ip: host, port: port) { return [literal] }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &result)
        guard rc == 0, let first = result else {
            throw UVError(Int32(UV_EAI_NONAME.rawValue))
        }
        defer { freeaddrinfo(first) }
        var v4: [SocketAddress] = []
        var v6: [SocketAddress] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let ai = cursor {
            if let sa = ai.pointee.ai_addr, let address = SocketAddress(UnsafePointer(sa)) {
                switch address.family {
                case .ipv4: if !v4.contains(address) { v4.append(address) }
                case .ipv6: if !v6.contains(address) { v6.append(address) }
                }
            }
            cursor = ai.pointee.ai_next
        }
        let all = v4 + v6
        if all.isEmpty { throw UVError(Int32(UV_EAI_NONAME.rawValue)) }
        return all
    }

    public var family: Family {
        Int32(storage.ss_family) == AF_INET6 ? .ipv6 : .ipv4
    }

    public var port: UInt16 {
        withSockaddr { sa in
            switch family {
            case .ipv4: return UInt16(bigEndian: UnsafeRawPointer(sa).load(as: sockaddr_in.self).sin_port)
            case .ipv6: return UInt16(bigEndian: UnsafeRawPointer(sa).load(as: sockaddr_in6.self).sin6_port)
            }
        }
    }

    /// The IP as text, without port or brackets.
    public var ip: String {
        var buffer = [CChar](repeating: 0, count: 64)
        withUnsafeBytes(of: storage) { raw in
            switch family {
            case .ipv4: _ = uv_ip4_name(raw.baseAddress!.assumingMemoryBound(to: sockaddr_in.self), &buffer, buffer.count)
            case .ipv6: _ = uv_ip6_name(raw.baseAddress!.assumingMemoryBound(to: sockaddr_in6.self), &buffer, buffer.count)
            }
        }
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    /// `1.2.3.4:80` or `[::1]:80`.
    public var description: String {
        family == .ipv6 ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }

    /// The address bytes (4 or 16, network order), without the port: what ip_hash keys on.
    public func withAddressBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        withUnsafeBytes(of: storage) { raw in
            switch family {
            case .ipv4:
                let offset = MemoryLayout<sockaddr_in>.offset(of: \sockaddr_in.sin_addr)!
                return body(UnsafeRawBufferPointer(rebasing: raw[offset ..< offset + 4]))
            case .ipv6:
                let offset = MemoryLayout<sockaddr_in6>.offset(of: \sockaddr_in6.sin6_addr)!
                return body(UnsafeRawBufferPointer(rebasing: raw[offset ..< offset + 16]))
            }
        }
    }

    /// True for 0.0.0.0 and ::.
    public var isWildcard: Bool {
        withAddressBytes { bytes in bytes.allSatisfy { $0 == 0 } }
    }

    /// True when two listening sockets on these addresses would take the same connections: the
    /// same family (IPv6 listeners are IPv6-only) and port (not 0), and the same IP or either one
    /// a wildcard.
    public func listensOverlap(_ other: SocketAddress) -> Bool {
        guard family == other.family, port == other.port, port != 0 else { return false }
        return isWildcard || other.isWildcard || self == other
    }

    public func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>) -> R) -> R {
        withUnsafeBytes(of: storage) { raw in
            body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self))
        }
    }

    public static func == (a: SocketAddress, b: SocketAddress) -> Bool {
        guard a.family == b.family, a.port == b.port else { return false }
        return a.withAddressBytes { x in b.withAddressBytes { y in x.elementsEqual(y) } }
    }
}
