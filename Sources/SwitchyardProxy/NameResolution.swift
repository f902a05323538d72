import SwitchyardCore
import SwitchyardUV

/// Host names looked up ahead of time, away from the event loop.
///
/// `getaddrinfo` blocks for as long as DNS takes to answer: seconds, when a DNS server is down.
/// At start-up that is fine, but a reload runs on the control worker's loop, which also relays
/// connections (all of them with one worker). So a reload first collects the names it will need
/// (new and moved servers, servers that did not resolve before, new listen addresses), looks
/// them up on a thread of their own (`lookUp`), and applies the new configuration on the loop
/// with the answers. IP literals need no lookup and are never collected.
struct ResolvedNames: Sendable {
    private var answers: [HostPort: Result<[SocketAddress], UVError>] = [:]

    /// No answers: `resolve` resolves (IP literals at once, names blocking).
    static let none = ResolvedNames()

    /// Whether `host` needs no lookup (an IPv4 or IPv6 literal).
    static func isLiteral(_ host: String) -> Bool {
        (try? SocketAddress(ip: host, port: 0)) != nil
    }

    /// Looks up every address among `addresses` whose host is a name. Blocking: off the loop.
    static func lookUp(_ addresses: [HostPort]) -> ResolvedNames {
        var names = ResolvedNames()
        for address in addresses where names.answers[address] == nil && !isLiteral(address.host) {
            do {
                names.answers[address] = .success(try SocketAddress.resolve(host: address.host, port: address.port))
            } catch {
                names.answers[address] = .failure(error)
            }
        }
        return names
    }

    /// The answer looked up for `address`, or, for one not looked up (an IP literal), resolved now.
    func resolve(_ address: HostPort) throws(UVError) -> [SocketAddress] {
        switch answers[address] {
        case .success(let addresses): return addresses
        case .failure(let error): throw error
        case nil: return try SocketAddress.resolve(host: address.host, port: address.port)
        }
    }
}
