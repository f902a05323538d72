import SwitchyardCore

/// Sums of one server's counters over every worker.
private struct ServerTotals {
    var connectionsTotal: UInt64 = 0
    var connectionsActive: UInt64 = 0
    var connecting: UInt64 = 0
    var bytesFromClients: UInt64 = 0
    var bytesToClients: UInt64 = 0
    var healthChecksPassed: UInt64 = 0
    var healthChecksFailed: UInt64 = 0
    var ejections: UInt64 = 0
    var connectFailures = Array(repeating: UInt64(0), count: ConnectFailureReason.allCases.count)
    var connectDuration = LatencyHistogram(boundsUs: LatencyHistogram.connect)

    init(_ stats: [ServerStats]) {
        for s in stats {
            connectionsTotal &+= s.connectionsTotal.value
            // Connecting read first: a connection moves from connecting to active (active is
            // counted before connecting drops), so it is never missed by both.
            connecting &+= s.connectsPending.acquiringValue
            connectionsActive &+= s.connectionsActive.value
            bytesFromClients &+= s.bytesFromClients.value
            bytesToClients &+= s.bytesToClients.value
            healthChecksPassed &+= s.healthChecksPassed.value
            healthChecksFailed &+= s.healthChecksFailed.value
            ejections &+= s.ejections.value
            let failures = s.connectFailures.withLock { $0 }
            for i in connectFailures.indices { connectFailures[i] &+= failures[i] }
            let histogram = s.connectDuration.withLock { $0 }
            connectDuration.merge(histogram)
        }
    }
}

/// Sums of one service's counters over every worker.
private struct ServiceTotals {
    var accepted: UInt64 = 0
    var retries: UInt64 = 0
    var rejected = Array(repeating: UInt64(0), count: RejectReason.allCases.count)
    var connectionDuration = LatencyHistogram(boundsUs: LatencyHistogram.connection)

    init(_ stats: [ServiceStats]) {
        for s in stats {
            accepted &+= s.accepted.value
            retries &+= s.retries.value
            let r = s.rejected.withLock { $0 }
            for i in rejected.indices { rejected[i] &+= r[i] }
            let histogram = s.connectionDuration.withLock { $0 }
            connectionDuration.merge(histogram)
        }
    }
}

/// A consistent-enough picture of every service for one scrape (counters are read without
/// stopping the workers, as any Prometheus exporter does).
private struct Picture {
    struct Server {
        var descriptor: ServerDescriptor
        var config: ServerConfig
        var status: ServerStatus
        var usable: Bool
        var totals: ServerTotals
    }
    struct Service {
        var shared: SharedService
        var config: ServiceConfig
        var servers: [Server]
        /// Servers a reload removed whose connections are still open (they finish; see `update`).
        var draining: [(name: String, totals: ServerTotals)]
        var totals: ServiceTotals
    }
    var services: [Service]
    /// Services a reload removed whose connections are still open: only their servers with
    /// connections open, as `draining`, and their service counters.
    var retired: [Service]

    init(_ runtime: ProxyRuntime, now: UInt64) {
        // Servers no longer configured whose connections are still open.
        func stillOpen(_ shared: SharedService, onlyRemoved: Bool) -> [(name: String, totals: ServerTotals)] {
            shared.serverStats(onlyRemoved: onlyRemoved)
                .map { (name: $0.name, totals: ServerTotals($0.stats)) }
                .filter { $0.totals.connectionsActive > 0 || $0.totals.connecting > 0 }
        }
        runtime.pruneRetiredServices()
        retired = runtime.drainingRetiredServices.map { shared in
            Service(
                shared: shared, config: shared.config, servers: [], draining: stillOpen(shared, onlyRemoved: false),
                totals: ServiceTotals(shared.serviceStats))
        }
        services = runtime.services.map { shared in
            let snapshot = shared.snapshot(now: now)
            let config = shared.config
            let servers = snapshot.enumerated().map { index, entry in
                Server(
                    descriptor: entry.0, config: config.servers[index], status: entry.1, usable: entry.2,
                    totals: ServerTotals(shared.stats(for: entry.0)))
            }
            return Service(
                shared: shared, config: config, servers: servers, draining: stillOpen(shared, onlyRemoved: true),
                totals: ServiceTotals(shared.serviceStats))
        }
    }
}

/// `GET /metrics`: the Prometheus text exposition of every counter, summed over workers.
enum MetricsExporter {
    static func render(_ runtime: ProxyRuntime) -> [UInt8] {
        let picture = Picture(runtime, now: runtime.loop.now)
        var w = PrometheusWriter()
        // Every server's totals, whether it may take new connections, and its labels. A server a
        // reload removed keeps its series while its connections finish (not usable), so that the
        // per-server series still add up to what is open; they go once the last one ends.
        let allServices = picture.services + picture.retired
        // Each server's labels are rendered once for all its families.
        var series: [(totals: ServerTotals, usable: Bool, labels: PrometheusWriter.Labels)] = []
        for service in allServices {
            for server in service.servers {
                series.append((server.totals, server.usable,
                               PrometheusWriter.Labels([("service", service.shared.name), ("server", server.descriptor.name)])))
            }
            for server in service.draining {
                series.append((server.totals, false, PrometheusWriter.Labels([("service", service.shared.name), ("server", server.name)])))
            }
        }
        func each(_ body: (ServerTotals, Bool, PrometheusWriter.Labels) -> Void) {
            for entry in series { body(entry.totals, entry.usable, entry.labels) }
        }
        w.gauge("switchyard_build_info", help: "Build information; always 1.") { f in
            f.add(labels: [("version", SwitchyardVersion.current)], value: 1)
        }
        w.counter("switchyard_connections_total", help: "Client connections relayed to a server.") { f in
            each { totals, _, labels in f.add(labels, value: totals.connectionsTotal) }
        }
        w.gauge("switchyard_connections_active", help: "Client connections being relayed to a server now.") { f in
            each { totals, _, labels in f.add(labels, value: totals.connectionsActive) }
        }
        w.gauge("switchyard_connections_connecting", help: "Client connections whose connect to the server is in progress.") { f in
            each { totals, _, labels in f.add(labels, value: totals.connecting) }
        }
        w.counter("switchyard_bytes_received_total", help: "Bytes received from clients.") { f in
            each { totals, _, labels in f.add(labels, value: totals.bytesFromClients) }
        }
        w.counter("switchyard_bytes_sent_total", help: "Bytes sent to clients.") { f in
            each { totals, _, labels in f.add(labels, value: totals.bytesToClients) }
        }
        w.counter("switchyard_connect_failures_total", help: "Failed upstream connect attempts, by reason.") { f in
            each { totals, _, labels in
                for reason in ConnectFailureReason.allCases {
                    f.add(labels.adding("reason", reason.label), value: totals.connectFailures[reason.rawValue])
                }
            }
        }
        w.gauge("switchyard_server_up", help: "1 when the server may take new connections.") { f in
            each { _, usable, labels in f.add(labels, value: usable ? 1 : 0) }
        }
        w.counter("switchyard_server_ejections_total", help: "Passive ejections (circuit breaker opened).") { f in
            each { totals, _, labels in f.add(labels, value: totals.ejections) }
        }
        w.counter("switchyard_health_checks_total", help: "Active health probes, by result.") { f in
            each { totals, _, labels in
                f.add(labels.adding("result", "success"), value: totals.healthChecksPassed)
                f.add(labels.adding("result", "failure"), value: totals.healthChecksFailed)
            }
        }
        w.counter("switchyard_rejected_connections_total", help: "Client connections closed without being relayed, by reason.") { f in
            for service in allServices {
                for reason in RejectReason.allCases {
                    f.add(labels: [("service", service.shared.name), ("reason", reason.label)], value: service.totals.rejected[reason.rawValue])
                }
            }
        }
        w.counter("switchyard_retries_total", help: "Connect attempts retried on another server.") { f in
            for service in allServices { f.add(labels: [("service", service.shared.name)], value: service.totals.retries) }
        }
        w.histogram("switchyard_connect_duration_seconds", help: "Time to connect to a server.") { f in
            each { totals, _, labels in f.add(labels, histogram(totals.connectDuration)) }
        }
        w.histogram("switchyard_connection_duration_seconds", help: "Lifetime of client connections.") { f in
            for service in allServices {
                f.add(labels: [("service", service.shared.name)], histogram(service.totals.connectionDuration))
            }
        }
        w.counter("switchyard_config_reloads_total", help: "Configuration reloads, by result.") { f in
            f.add(labels: [("result", "success")], value: runtime.reloadsSucceeded)
            f.add(labels: [("result", "failure")], value: runtime.reloadsFailed)
        }
        w.counter("switchyard_log_lines_dropped_total", help: "Log lines dropped because standard error was not read fast enough.") { f in
            f.add(labels: [], value: LogWriter.standardError.droppedLines)
        }
        return w.bytes
    }

    private static func histogram(_ h: LatencyHistogram) -> Histogram {
        Histogram(
            upperBounds: h.boundsUs.map { Double($0) / 1_000_000 }, bucketCounts: h.counts,
            sum: Double(h.sumUs) / 1_000_000)!
    }
}

/// `GET /status`: services, listeners, servers with their state and counters, as JSON.
enum StatusExporter {
    static func render(_ runtime: ProxyRuntime) -> [UInt8] {
        let now = runtime.loop.now
        let picture = Picture(runtime, now: now)
        let notReady = runtime.notReadyReason()
        var json = JSONWriter()
        json.object { j in
            j.field("version", SwitchyardVersion.current)
            j.field("state", notReady == nil ? "ready" : "not_ready")
            if let notReady { j.field("reason", notReady) }
            j.field("workers", runtime.workerCount)
            j.field("uptime_ms", Int(now &- runtime.startedAt))
            j.field("active_connections", runtime.activeConnections)
            j.field("max_connections", runtime.config.global.maxConnections)
            j.array("services") { j in
                for service in picture.services {
                    j.object { j in
                        j.field("name", service.shared.name)
                        j.field("balance", service.config.balance.rawValue)
                        j.array("listeners") { j in
                            for address in runtime.boundAddresses(of: service.shared) { j.value(address.description) }
                        }
                        j.field("accepted_total", service.totals.accepted)
                        j.field("retries_total", service.totals.retries)
                        j.array("servers") { j in
                            for server in service.servers {
                                let status = server.status
                                j.object { j in
                                    j.field("name", server.descriptor.name)
                                    j.field("address", server.config.address.description)
                                    j.field("weight", server.config.weight)
                                    j.field("backup", server.config.backup)
                                    j.field("state", status.state.rawValue)
                                    j.field("usable", server.usable)
                                    j.field("active_connections", server.totals.connectionsActive)
                                    j.field("connecting", server.totals.connecting)
                                    j.field("connections_total", server.totals.connectionsTotal)
                                    j.field("bytes_received_total", server.totals.bytesFromClients)
                                    j.field("bytes_sent_total", server.totals.bytesToClients)
                                    j.field("probe_successes", status.probeSuccesses)
                                    j.field("probe_failures", status.probeFailures)
                                    if let error = status.lastProbeError {
                                        j.field("last_probe_error", error)
                                    } else {
                                        j.nullField("last_probe_error")
                                    }
                                    j.field("connect_failures", status.connectFailures)
                                    j.field("ejections_total", status.totalEjections)
                                    j.field("ejection_held_back", status.ejectionHeldBack)
                                    if let left = status.ejectionRemaining {
                                        j.field("ejection_remaining_ms", Int(left.wholeMilliseconds))
                                    } else {
                                        j.nullField("ejection_remaining_ms")
                                    }
                                    // Thousandths, as the balancer uses it (no 0.21250000000000002).
                                    j.field("weight_factor", (status.weightFactor * 1000).rounded() / 1000)
                                }
                            }
                        }
                        // Removed by a reload, connections still open or connecting (they take no new ones).
                        j.array("removed_servers") { j in
                            for server in service.draining {
                                j.object { j in
                                    j.field("name", server.name)
                                    j.field("active_connections", server.totals.connectionsActive)
                                    j.field("connecting", server.totals.connecting)
                                    j.field("connections_total", server.totals.connectionsTotal)
                                }
                            }
                        }
                    }
                }
            }
            // Removed by a reload, connections still open.
            j.array("removed_services") { j in
                for service in picture.retired {
                    j.object { j in
                        j.field("name", service.shared.name)
                        j.field("active_connections", service.draining.reduce(0) { $0 &+ $1.totals.connectionsActive })
                        j.field("connecting", service.draining.reduce(0) { $0 &+ $1.totals.connecting })
                    }
                }
            }
        }
        return json.bytes + [UInt8(ascii: "\n")]
    }
}
