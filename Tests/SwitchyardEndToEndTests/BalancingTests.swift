// Scheduling as a client sees it: which server answers (identify backends greet with their name).
import Testing

@Suite("Balancing")
struct BalancingTests {
    /// Starts one identify backend per name.
    private static func identifyBackends(_ names: [String]) throws -> [Backend] {
        var backends: [Backend] = []
        do {
            for name in names { backends.append(try Backend(name: name, behavior: .identify)) }
        } catch {
            backends.forEach { $0.stop() }
            throw error
        }
        return backends
    }

    /// Identify backends named `names` behind one switchyard service `service` (server lines
    /// "NAME ADDRESS", plus `serverSuffixes[i]` when given), every server up; returns the listening port.
    private static func identifiedService(
        _ service: String, balance: String, names: [String], serverSuffixes: [String] = []
    ) throws -> (backends: [Backend], proxy: SwitchyardProcess, port: UInt16) {
        let backends = try identifyBackends(names)
        do {
            let servers = backends.enumerated().map { i, backend in
                "\(backend.name) \(backend.address)" + (i < serverSuffixes.count ? " " + serverSuffixes[i] : "")
            }
            let proxy = try SwitchyardProcess(config: TestConfig.global() + TestConfig.service(
                service, balance: balance, servers: servers))
            let port = try proxy.port(service)
            try proxy.waitForServersUp(service: service, servers: names)
            return (backends, proxy, port)
        } catch {
            backends.forEach { $0.stop() }
            throw error
        }
    }

    /// Opens a connection and returns it with the name of the server that greeted it.
    private static func connectAndIdentify(port: UInt16, sourceIP: String? = nil) throws -> (TestClient, String) {
        let client = try TestClient(port: port, sourceIP: sourceIP)
        do {
            return (client, try client.readLine())
        } catch {
            client.close()
            throw error
        }
    }

    @Test("least_conn spreads 30 held connections over 3 servers 10/10/10")
    func leastConnEven() throws {
        let (backends, proxy, port) = try Self.identifiedService("lc", balance: "least_conn", names: ["a", "b", "c"])
        defer { proxy.stop(); backends.forEach { $0.stop() } }

        var clients: [TestClient] = []
        defer { clients.forEach { $0.close() } }
        var counts: [String: Int] = [:]
        for _ in 0..<30 {
            let (client, name) = try Self.connectAndIdentify(port: port)
            clients.append(client)
            counts[name, default: 0] += 1
        }
        #expect(counts == ["a": 10, "b": 10, "c": 10])
        // The servers agree (polled: a health probe may be open for a moment).
        for backend in backends { try backend.waitForActive(10, timeout: .seconds(2)) }
    }

    @Test("least_conn honours weights: weight=2 and weight=1 take 30 held connections 20/10")
    func leastConnWeighted() throws {
        let (backends, proxy, port) = try Self.identifiedService(
            "weighted", balance: "least_conn", names: ["heavy", "light"], serverSuffixes: ["weight=2", "weight=1"])
        defer { proxy.stop(); backends.forEach { $0.stop() } }

        var clients: [TestClient] = []
        defer { clients.forEach { $0.close() } }
        var counts: [String: Int] = [:]
        for _ in 0..<30 {
            let (client, name) = try Self.connectAndIdentify(port: port)
            clients.append(client)
            counts[name, default: 0] += 1
        }
        #expect(counts == ["heavy": 20, "light": 10])
    }

    @Test("ip_hash keeps one client IP on one server and spreads 40 IPs over all 3 servers")
    func ipHash() throws {
        let (backends, proxy, port) = try Self.identifiedService("hashed", balance: "ip_hash", names: ["a", "b", "c"])
        defer { proxy.stop(); backends.forEach { $0.stop() } }

        // 20 connections from 127.0.0.2, each from a new source port.
        var namesForOneIP: [String] = []
        var sourcePorts: Set<UInt16> = []
        for _ in 0..<20 {
            let (client, name) = try Self.connectAndIdentify(port: port, sourceIP: "127.0.0.2")
            #expect(client.localIP == "127.0.0.2")
            sourcePorts.insert(client.localPort)
            namesForOneIP.append(name)
            client.close()
        }
        #expect(sourcePorts.count == 20, "the 20 connections did not use 20 different source ports")
        #expect(Set(namesForOneIP).count == 1, "connections from 127.0.0.2 reached several servers: \(namesForOneIP)")

        // 40 client IPs reach every server, and each IP again reaches the same server.
        var mapping: [String: String] = [:]
        for i in 2...41 {
            let ip = "127.0.0.\(i)"
            let (client, name) = try Self.connectAndIdentify(port: port, sourceIP: ip)
            mapping[ip] = name
            client.close()
        }
        #expect(Set(mapping.values) == ["a", "b", "c"], "40 client IPs did not reach all 3 servers: \(mapping)")
        #expect(mapping["127.0.0.2"] == namesForOneIP.first)
        var moved: [String] = []
        for i in 2...41 {
            let ip = "127.0.0.\(i)"
            let (client, name) = try Self.connectAndIdentify(port: port, sourceIP: ip)
            if name != mapping[ip] { moved.append("\(ip): \(mapping[ip] ?? "?") then \(name)") }
            client.close()
        }
        #expect(moved.isEmpty, "client IPs changed server between two passes: \(moved)")
    }

    @Test("round_robin over 3 equal servers: 30 sequential connections go 10/10/10")
    func roundRobin() throws {
        let (backends, proxy, port) = try Self.identifiedService("rr", balance: "round_robin", names: ["a", "b", "c"])
        defer { proxy.stop(); backends.forEach { $0.stop() } }

        var sequence: [String] = []
        for _ in 0..<30 {
            let (client, name) = try Self.connectAndIdentify(port: port)
            sequence.append(name)
            client.close()
        }
        let counts = Dictionary(sequence.map { ($0, 1) }, uniquingKeysWith: +)
        #expect(counts == ["a": 10, "b": 10, "c": 10], "sequence: \(sequence)")
        // Equal weights: every window of 3 consecutive picks covers all 3 servers.
        let windowsMissingAServer = stride(from: 0, to: 30, by: 3).filter { Set(sequence[$0..<$0 + 3]).count != 3 }
        #expect(windowsMissingAServer.isEmpty, "round robin repeated a server within a round: \(sequence)")
    }
}
