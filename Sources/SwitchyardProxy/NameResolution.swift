import CLibUV
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
    /// Whether `resolve` may look a name up itself (blocking): only for `.none`, at start-up.
    private var mayBlock = false

    /// No answers: `resolve` resolves (IP literals at once, names blocking): for start-up.
    static let none = ResolvedNames(mayBlock: true)

    private init(mayBlock: Bool = false) { self.mayBlock = mayBlock }

    /// Whether `host` needs no lookup (an IPv4 or IPv6 literal).
    static func isLiteral(_ host: String) -> Bool {
        (try? SocketAddress(ip: host, port: 0)) != nil
    }

    /// How long one round (a reload's, or a periodic one) waits for its lookups in all. The
    /// resolver's own limit is its timeout × attempts × name servers (glibc's defaults: 5 s × 2 ×
    /// up to 3, more with search domains); a name still unanswered then counts as not resolved
    /// (a new server unusable until a later lookup resolves it), so that one dead name server
    /// cannot hold a reload back for longer.
    static let lookupDeadlineSeconds = 30

    /// Lookups running now (any round), by address: a periodic round skips an address whose
    /// previous lookup has not come back (DNS hanging), so that lookups never pile up.
    private static let inFlight = Mutex<[HostPort: Int]>([:])

    /// Looks up every address among `addresses` whose host is a name, all at once, each on a
    /// thread of its own (not a shared pool, where lookups stuck on a dead DNS server would
    /// queue the next round's, a reload's included, behind them). Blocking, for up to
    /// `lookupDeadlineSeconds`: off the loop. A lookup still running then keeps its thread until
    /// the resolver gives up; its answer is dropped.
    ///
    /// `skippingInFlight` (periodic rounds): addresses still being looked up by an earlier round
    /// are left out (no answer: nothing changes for them).
    static func lookUp(_ addresses: [HostPort], skippingInFlight: Bool = false) -> ResolvedNames {
        var seen = Set<HostPort>()
        let candidates = addresses.filter { !isLiteral($0.host) && seen.insert($0).inserted }
        let wanted = inFlight.withLock { running -> [HostPort] in
            let picked = skippingInFlight ? candidates.filter { running[$0, default: 0] == 0 } : candidates
            for address in picked { running[address, default: 0] += 1 }
            return picked
        }
        let answers = Mutex<[HostPort: Result<[SocketAddress], UVError>]>([:])
        let group = DispatchGroup()
        for address in wanted {
            group.enter()
            let rc = startDetachedThread {
                let answer = Result { () throws(UVError) in try SocketAddress.resolve(host: address.host, port: address.port) }
                answers.withLock { $0[address] = answer }
                finished(address)
                group.leave()
            }
            if rc != 0 {
                answers.withLock { $0[address] = .failure(UVError(-rc)) }
                finished(address)
                group.leave()
            }
        }
        _ = group.wait(timeout: .now() + .seconds(lookupDeadlineSeconds))
        var names = ResolvedNames()
        names.answers = answers.withLock { $0 }
        for address in wanted where names.answers[address] == nil {
            names.answers[address] = .failure(.timedOut)
        }
        return names
    }

    private static func finished(_ address: HostPort) {
        inFlight.withLock { running in
            let left = running[address, default: 1] - 1
            running[address] = left > 0 ? left : nil
        }
    }

    /// The answer looked up for `address`; nil if it was not looked up.
    func answer(for address: HostPort) -> Result<[SocketAddress], UVError>? { answers[address] }

    /// Takes `resolved` as the answer for `address` (an address bound before, to bind it again).
    mutating func remember(_ address: HostPort, as resolved: SocketAddress) {
        answers[address] = .success([resolved])
    }

    /// The answer looked up for `address`; for one not looked up, an IP literal's address, and a
    /// name's lookup only for `.none` (answers from `lookUp` never block the loop: a name they
    /// lack, one a periodic round skipped, counts as not resolved).
    func resolve(_ address: HostPort) throws(UVError) -> [SocketAddress] {
        switch answers[address] {
        case .success(let addresses): return addresses
        case .failure(let error): throw error
        case nil:
            guard mayBlock || Self.isLiteral(address.host) else { throw UVError(Int32(UV_EAI_AGAIN.rawValue)) }
            return try SocketAddress.resolve(host: address.host, port: address.port)
        }
    }
}
