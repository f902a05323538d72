import SwitchyardCore

/// `GET /metrics`: the Prometheus text exposition of every counter.
enum MetricsExporter {
    static func render(_ runtime: ProxyRuntime) -> [UInt8] {
        var w = PrometheusWriter()
        let services = runtime.services
        func each(_ body: (ServiceRuntime, UpstreamServer, [(String, String)]) -> Void) {
            for service in services {
                for server in service.servers {
                    body(service, server, [("service", service.name), ("server", server.name)])
                }
            }
        }
        w.gauge("switchyard_build_info", help: "Build information; always 1.") { f in
            f.add(labels: [("version", SwitchyardVersion.current)], value: 1)
        }
        w.counter("switchyard_connections_total", help: "Client connections relayed to a server.") { f in
            each { _, server, labels in f.add(labels: labels, value: server.stats.connectionsTotal) }
        }
        w.gauge("switchyard_connections_active", help: "Client connections being relayed to a server now.") { f in
            each { _, server, labels in f.add(labels: labels, value: server.stats.connectionsActive) }
        }
        w.counter("switchyard_bytes_received_total", help: "Bytes received from clients.") { f in
            each { _, server, labels in f.add(labels: labels, value: server.stats.bytesFromClients) }
        }
        w.counter("switchyard_bytes_sent_total", help: "Bytes sent to clients.") { f in
            each { _, server, labels in f.add(labels: labels, value: server.stats.bytesToClients) }
        }
        w.counter("switchyard_connect_failures_total", help: "Failed upstream connect attempts, by reason.") { f in
            each { _, server, labels in
                for reason in ConnectFailureReason.allCases {
                    f.add(labels: labels + [("reason", reason.label)], value: server.stats.connectFailures[reason.rawValue])
                }
            }
        }
        w.gauge("switchyard_server_up", help: "1 when the server may take new connections.") { f in
            each { service, server, labels in f.add(labels: labels, value: service.balancer.isUsable(server.index) ? 1 : 0) }
        }
        w.counter("switchyard_server_ejections_total", help: "Passive ejections (circuit breaker opened).") { f in
            each { _, server, labels in f.add(labels: labels, value: server.stats.ejections) }
        }
        w.counter("switchyard_health_checks_total", help: "Active health probes, by result.") { f in
            each { _, server, labels in
                f.add(labels: labels + [("result", "success")], value: server.stats.healthChecksPassed)
                f.add(labels: labels + [("result", "failure")], value: server.stats.healthChecksFailed)
            }
        }
        w.counter("switchyard_rejected_connections_total", help: "Client connections closed without being relayed, by reason.") { f in
            for service in services {
                for reason in RejectReason.allCases {
                    f.add(labels: [("service", service.name), ("reason", reason.label)], value: service.stats.rejected[reason.rawValue])
                }
            }
        }
        w.counter("switchyard_retries_total", help: "Connect attempts retried on another server.") { f in
            for service in services { f.add(labels: [("service", service.name)], value: service.stats.retries) }
        }
        w.histogram("switchyard_connect_duration_seconds", help: "Time to connect to a server.") { f in
            each { _, server, labels in f.add(labels: labels, histogram(server.stats.connectDuration)) }
        }
        w.histogram("switchyard_connection_duration_seconds", help: "Lifetime of client connections.") { f in
            for service in services {
                f.add(labels: [("service", service.name)], histogram(service.stats.connectionDuration))
            }
        }
        w.counter("switchyard_config_reloads_total", help: "Configuration reloads, by result.") { f in
            f.add(labels: [("result", "success")], value: runtime.reloadsSucceeded)
            f.add(labels: [("result", "failure")], value: runtime.reloadsFailed)
        }
        return w.bytes
    }

    private static func histogram(_ h: LatencyHistogram) -> Histogram {
        Histogram(
            upperBounds: h.boundsMs.map { Double($0) / 1000 }, bucketCounts: h.counts,
            sum: Double(h.sumMs) / 1000)!
    }
}

/// `GET /status`: services, listeners, servers with their state and counters, as JSON.
enum StatusExporter {
    static func render(_ runtime: ProxyRuntime) -> [UInt8] {
        let now = runtime.loop.now
        var json = JSONWriter()
        json.object { j in
            j.field("version", SwitchyardVersion.current)
            j.field("state", runtime.notReadyReason() == nil ? "ready" : "not_ready")
            if let reason = runtime.notReadyReason() { j.field("reason", reason) }
            j.field("uptime_ms", Int(now &- runtime.startedAt))
            j.field("active_connections", runtime.activeConnections)
            j.field("max_connections", runtime.config.global.maxConnections)
            j.array("services") { j in
                for service in runtime.services {
                    j.object { j in
                        j.field("name", service.name)
                        j.field("balance", service.config.balance.rawValue)
                        j.array("listeners") { j in
                            for l in service.listeners { j.value(l.listener.boundAddress.description) }
                        }
                        j.field("accepted_total", service.stats.accepted)
                        j.field("retries_total", service.stats.retries)
                        let statuses = service.health.status(now: now)
                        j.array("servers") { j in
                            for server in service.servers {
                                let status = statuses[server.index]
                                j.object { j in
                                    j.field("name", server.name)
                                    j.field("address", server.config.address.description)
                                    j.field("weight", server.config.weight)
                                    j.field("backup", server.config.backup)
                                    j.field("state", status.state.rawValue)
                                    j.field("usable", service.balancer.isUsable(server.index))
                                    j.field("active_connections", server.stats.connectionsActive)
                                    j.field("connections_total", server.stats.connectionsTotal)
                                    j.field("bytes_received_total", server.stats.bytesFromClients)
                                    j.field("bytes_sent_total", server.stats.bytesToClients)
                                    j.field("probe_successes", status.probeSuccesses)
                                    j.field("probe_failures", status.probeFailures)
                                    j.field("connect_failures", status.connectFailures)
                                    j.field("ejections_total", status.totalEjections)
                                    if let left = status.ejectionRemaining {
                                        j.field("ejection_remaining_ms", Int(left.wholeMilliseconds))
                                    } else {
                                        j.nullField("ejection_remaining_ms")
                                    }
                                    j.field("weight_factor", status.weightFactor)
                                }
                            }
                        }
                    }
                }
            }
        }
        return json.bytes + [UInt8(ascii: "\n")]
    }
}
