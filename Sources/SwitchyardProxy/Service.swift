import Logging
import SwitchyardCore
import SwitchyardUV

/// One upstream server of a service, with its resolved address.
final class UpstreamServer {
    let config: ServerConfig
    let index: Int
    /// Nil when the host could not be resolved; the server is then unusable.
    let address: SocketAddress?
    let resolveError: String?

    init(config: ServerConfig, index: Int) {
        self.config = config
        self.index = index
        do {
            address = try SocketAddress.resolve(host: config.address.host, port: config.address.port).first
            resolveError = nil
        } catch {
            address = nil
            resolveError = "cannot resolve \(config.address.host): \(error)"
        }
    }

    var name: String { config.name }
}

/// A balanced service as it runs: its servers, its scheduler and its listeners.
///
/// Loop-confined: with one event loop everything here is touched by that loop's thread only.
final class ServiceRuntime {
    let config: ServiceConfig
    let servers: [UpstreamServer]
    var balancer: Balancer
    var listeners: [TCPListener] = []
    let connectTimeoutMs: UInt64
    let idleTimeoutMs: UInt64
    var logger: Logger

    init(config: ServiceConfig, logger: Logger) {
        self.config = config
        self.servers = config.servers.enumerated().map { UpstreamServer(config: $1, index: $0) }
        self.balancer = Balancer(
            algorithm: config.balance,
            servers: config.servers.map { BackendSpec(name: $0.name, weight: $0.weight, backup: $0.backup) }
        )
        self.connectTimeoutMs = max(1, config.connectTimeout.wholeMilliseconds)
        self.idleTimeoutMs = config.idleTimeout.wholeMilliseconds
        var logger = logger
        logger[metadataKey: "service"] = "\(config.name)"
        self.logger = logger
        for server in servers where server.address == nil {
            balancer.setUsable(server.index, false)
            logger.error(
                "server address unresolved; server unusable",
                metadata: ["server": "\(server.name)", "error": "\(server.resolveError ?? "")"])
        }
    }

    var name: String { config.name }
}
