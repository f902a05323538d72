import Dispatch
import Synchronization
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

    /// How long a reload waits for its lookups in all. The resolver's own limit is its timeout ×
    /// attempts × name servers (glibc's defaults: 5 s × 2 × up to 3); a name still unanswered
    /// then counts as not resolved (its server unusable until a later reload resolves it), so
    /// that one dead name server cannot hold every later reload back for longer.
    static let lookupDeadlineSeconds = 30

    /// Looks up every address among `addresses` whose host is a name, all at once (each on a
    /// thread of Dispatch's global pool). Blocking, for up to `lookupDeadlineSeconds`: off the loop.
    static func lookUp(_ addresses: [HostPort]) -> ResolvedNames {
        var seen = Set<HostPort>()
        let wanted = addresses.filter { !isLiteral($0.host) && seen.insert($0).inserted }
        let answers = Mutex<[HostPort: Result<[SocketAddress], UVError>]>([:])
        let group = DispatchGroup()
        for address in wanted {
            DispatchQueue.global().async(group: group) {
                let answer = Result { () throws(UVError) in try SocketAddress.resolve(host: address.host, port: address.port) }
                answers.withLock { $0[address] = answer }
            }
        }
        _ = group.wait(timeout: .now() + .seconds(lookupDeadlineSeconds))
        var names = ResolvedNames()
        // A lookup still running keeps its thread until the resolver gives up; its answer is dropped.
        names.answers = answers.withLock { $0 }
        for address in wanted where names.answers[address] == nil {
            names.answers[address] = .failure(.timedOut)
        }
        return names
    }

    /// The answer looked up for `address`; nil if it was not looked up.
    func answer(for address: HostPort) -> Result<[SocketAddress], UVError>? { answers[address] }

    /// Takes `resolved` as the answer for `address` (an address bound before, to bind it again).
    mutating func remember(_ address: HostPort, as resolved: SocketAddress) {
        answers[address] = .success([resolved])
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
