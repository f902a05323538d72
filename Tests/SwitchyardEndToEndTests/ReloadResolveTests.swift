// A reload that has to look up host names (a server added by DNS name) while DNS is slow: the
// lookup happens off the event loop, so relaying, new connections and the admin endpoint carry on
// meanwhile; reloads asked for in the meantime are queued, not lost; a drain does not wait for it.
//
// DNS is made slow without touching the machine's resolver: an LD_PRELOAD library, compiled here,
// wraps getaddrinfo; for names under `.switchyard.test` it writes the name to a file (so the test
// knows the lookup started), waits until a gate file exists, then answers 127.0.0.1.
import Foundation
import Glibc
import Synchronization
import Testing

@Suite("Reload with slow name resolution")
struct ReloadResolveTests {
    /// The wrapper library (built once per test run) and, in a folder of its own per test, the
    /// files it reads and writes. `remove()` deletes the folder.
    struct SlowResolver {
        let directory: URL
        let library: String
        let gate: String
        let started: String
        let map: String

        static let source = """
            #define _GNU_SOURCE
            #include <dlfcn.h>
            #include <netdb.h>
            #include <stdio.h>
            #include <stdlib.h>
            #include <string.h>
            #include <sys/stat.h>
            #include <unistd.h>

            typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

            int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                            struct addrinfo **res) {
                gai_fn real = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo");
                const char *suffix = ".switchyard.test";
                size_t n = node ? strlen(node) : 0, m = strlen(suffix);
                if (n > m && strcmp(node + n - m, suffix) == 0) {
                    const char *started = getenv("SLOW_DNS_STARTED");
                    const char *gate = getenv("SLOW_DNS_GATE");
                    const char *map = getenv("SLOW_DNS_MAP");
                    if (started) {
                        FILE *f = fopen(started, "a");
                        if (f) { fprintf(f, "%s\\n", node); fclose(f); }
                    }
                    /* A name in the map file ("NAME IP" lines; IP "-" = no such name) is answered
                       at once. */
                    FILE *mf = map ? fopen(map, "r") : NULL;
                    if (mf) {
                        char name[256], ip[64];
                        while (fscanf(mf, "%255s %63s", name, ip) == 2) {
                            if (strcmp(name, node) == 0) {
                                fclose(mf);
                                if (strcmp(ip, "-") == 0) return EAI_NONAME;
                                return real(ip, service, hints, res);
                            }
                        }
                        fclose(mf);
                    }
                    struct stat st;
                    /* The slow DNS server itself: poll the gate, at most 60 s, so that a failed
                       test does not leave a thread waiting forever. */
                    for (int i = 0; gate && i < 6000 && stat(gate, &st) != 0; i++) usleep(10000);
                    return real("127.0.0.1", service, hints, res);
                }
                return real(node, service, hints, res);
            }
            """

        init() throws {
            library = try Self.built.get()
            directory = FileManager.default.temporaryDirectory
                .appendingPathComponent("switchyard-slowdns-\(UUID().uuidString)", isDirectory: true)
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            gate = directory.appendingPathComponent("gate").path
            started = directory.appendingPathComponent("started").path
            map = directory.appendingPathComponent("map").path
        }

        func remove() { try? FileManager.default.removeItem(at: directory) }

        /// The compiled wrapper's path, or why it could not be built.
        static let built = Result { () throws -> String in
            let directory = FileManager.default.temporaryDirectory
                .appendingPathComponent("switchyard-slowdns-lib-\(UUID().uuidString)", isDirectory: true)
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let sourcePath = directory.appendingPathComponent("slowdns.c").path
            let library = directory.appendingPathComponent("slowdns.so").path
            try source.write(toFile: sourcePath, atomically: true, encoding: .utf8)
            // The Swift toolchain brings clang; Debian's cc will do as well.
            guard let compiler = ChildProcess.locate("clang") ?? ChildProcess.locate("cc") else {
                throw HarnessError("no C compiler (clang or cc) on PATH to build the getaddrinfo wrapper")
            }
            let build = try ChildProcess.run(compiler, ["-shared", "-fPIC", "-O1", "-o", library, sourcePath, "-ldl"])
            guard build.status == .exited(0) else {
                throw HarnessError("building the getaddrinfo wrapper failed (\(build.status)):\n\(build.stderr)")
            }
            return library
        }

        /// This process's environment plus the wrapper.
        var environment: [String: String] {
            var env = ProcessInfo.processInfo.environment
            env["LD_PRELOAD"] = library
            env["SLOW_DNS_GATE"] = gate
            env["SLOW_DNS_STARTED"] = started
            env["SLOW_DNS_MAP"] = map
            return env
        }

        /// Names answered at once: name → IP, or "-" for "no such name". Replaced whole.
        func setMap(_ entries: [String: String]) throws {
            let text = entries.map { "\($0.key) \($0.value)\n" }.joined()
            try text.write(toFile: map, atomically: true, encoding: .utf8)
        }

        /// How many lookups of `name` have started so far.
        func lookupCount(of name: String) -> Int { lookups.filter { $0 == name }.count }

        /// Names whose lookup has started.
        var lookups: [String] {
            ((try? String(contentsOfFile: started, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }

        func waitForLookup(of name: String) throws {
            try waitUntil("the lookup of \(name) to start", timeout: .seconds(10)) { lookups.contains(name) }
        }

        func open() throws {
            guard FileManager.default.createFile(atPath: gate, contents: Data()) else {
                throw HarnessError("cannot create \(gate)")
            }
        }
    }

    @Test("While a reload waits for DNS, a held connection relays, new connections and /healthz are served; queued reloads run after it, and the new server gets traffic")
    func relayingGoesOnWhileAReloadResolves() throws {
        let dns = try SlowResolver()
        defer { dns.remove() }
        let a = try Backend(name: "a", behavior: .identify)
        defer { a.stop() }
        let slow = try Backend(name: "slow", behavior: .identify)
        defer { slow.stop() }
        let slowPort = slow.port
        let a2 = try Backend(name: "a2", behavior: .identify)
        defer { a2.stop() }
        let a2Port = a2.port
        func config(_ servers: [String]) -> String {
            OpsConfig.global() + OpsConfig.service("web", balance: "round_robin", servers: servers)
        }
        let proxy = try SwitchyardProcess(config: config(["a \(a.address)"]), environment: dns.environment)
        defer { proxy.stop() }  // SIGKILL: a lookup waiting at the gate goes with the process
        try proxy.waitForServersUp(service: "web", servers: ["a"])
        let port = try proxy.port("web")
        let (held, greeting) = try ReloadTests.connectAndIdentify(port: port)
        defer { held.close() }
        #expect(greeting == "a")
        try held.roundTrip("before the reload\n")

        // Add two servers by name; their lookups (both at once) block until the gate opens.
        try proxy.rewriteConfig(config([
            "a \(a.address)", "slow slow.switchyard.test:\(slowPort)", "other other.switchyard.test:\(a2Port)",
        ]))
        proxy.child.signal(SIGHUP)
        try dns.waitForLookup(of: "slow.switchyard.test")
        try dns.waitForLookup(of: "other.switchyard.test")

        // Meanwhile the loop goes on: the held connection relays, a new connection is served by
        // the old configuration, the admin endpoint answers.
        try held.roundTrip("while the reload resolves\n", timeout: .seconds(3))
        let (fresh, freshGreeting) = try ReloadTests.connectAndIdentify(port: port)
        fresh.close()
        #expect(freshGreeting == "a")
        let health = try AdminHTTP.request(port: try proxy.adminPort(), method: "GET", path: "/healthz", timeout: .seconds(3))
        #expect(health.status == 200)
        try proxy.waitForLogLineCount("reload: resolving names", 1)
        #expect(try proxy.metrics().value("switchyard_config_reloads_total", ["result": "success"]) == 0)

        // Two more requests while it waits: a signal and POST /reload. They are queued and
        // answered by one more reload once this one is done.
        proxy.child.signal(SIGHUP)
        try proxy.waitForLogLineCount("reload queued behind the one resolving names", 1)
        let adminPort = try proxy.adminPort()
        let answer = Mutex<Result<HTTPReply, any Error>?>(nil)
        let poster = Thread {
            let result = Result { try AdminHTTP.request(port: adminPort, method: "POST", path: "/reload", timeout: .seconds(20)) }
            answer.withLock { $0 = result }
        }
        poster.start()
        try proxy.waitForLogLineCount("reload queued behind the one resolving names", 2)
        #expect(answer.withLock { $0 } == nil, "POST /reload was answered before its reload ran")

        try dns.open()
        try proxy.waitForLogLineCount("configuration reloaded", 2, timeout: .seconds(10))
        try waitUntil("the answer to POST /reload", timeout: .seconds(10)) { answer.withLock { $0 } != nil }
        let reply = try #require(try answer.withLock { $0 }?.get())
        #expect(reply.status == 200 && reply.text == "reloaded\n", "\(reply)")
        #expect(try proxy.metrics().value("switchyard_config_reloads_total", ["result": "success"]) == 2)
        #expect(try proxy.metrics().value("switchyard_config_reloads_total", ["result": "failure"]) == 0)

        // The named server is in and gets new connections; the held one is still relayed to a.
        try proxy.waitForServersUp(service: "web", servers: ["slow", "other"])
        var seen: [String: Int] = [:]
        try waitUntil("a new connection to reach the server added by name (seen \(seen))", timeout: .seconds(5)) {
            let (client, name) = try ReloadTests.connectAndIdentify(port: port)
            client.close()
            seen[name, default: 0] += 1
            return name == "slow"
        }
        try held.roundTrip("after the reload\n")
        #expect(proxy.logCount("reload failed; keeping the running configuration") == 0)
        #expect(proxy.isRunning)
    }

    @Test("POST /reload while DNS holds a reload: answered 202 after 10 s (the reload still applies); 64 such requests do not lock out /healthz")
    func pendingReloadAnswersAreBounded() throws {
        let dns = try SlowResolver()
        defer { dns.remove() }
        let a = try Backend(name: "a", behavior: .identify)
        defer { a.stop() }
        func config(_ servers: [String]) -> String {
            OpsConfig.global() + OpsConfig.service("web", servers: servers, extra: ["check = none"])
        }
        let proxy = try SwitchyardProcess(config: config(["a \(a.address)"]), environment: dns.environment)
        defer { proxy.stop() }  // SIGKILL: a lookup waiting at the gate goes with the process
        let adminPort = try proxy.adminPort()
        let aPort = a.port
        try proxy.rewriteConfig(config(["a \(a.address)", "named named.switchyard.test:\(aPort)"]))
        proxy.child.signal(SIGHUP)
        try dns.waitForLookup(of: "named.switchyard.test")

        // One POST /reload whose client waits: queued behind the held reload.
        let post = Array("POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".utf8)
        let patient = try TestClient(port: adminPort, timeout: .seconds(20))
        defer { patient.close() }
        try patient.send(post)
        try proxy.waitForLogLineCount("reload queued behind the one resolving names", 1)

        // 64 more: every place of the endpoint holds a request waiting for that reload. The
        // liveness probe still gets in (each probe takes the place of the oldest waiting one).
        var waiting: [TestClient] = []
        defer { waiting.forEach { $0.close() } }
        for i in 0..<64 {
            let client = try TestClient(port: adminPort)
            waiting.append(client)
            try client.send(post)
            try proxy.waitForLogLineCount("reload queued behind the one resolving names", 2 + i)
        }
        for _ in 0..<3 {
            let reply = try AdminHTTP.request(port: adminPort, method: "GET", path: "/healthz", timeout: .seconds(3))
            #expect(reply.status == 200, "\(reply)")
        }

        // The patient client was among the oldest, so evicted without an answer; a new one waits
        // its 10 s and gets 202.
        let (evicted, _) = try patient.readToEnd(timeout: .seconds(5))
        #expect(evicted.isEmpty, "the oldest waiting request was answered: \(String(decoding: evicted, as: UTF8.self))")
        let late = try TestClient(port: adminPort, timeout: .seconds(20))
        defer { late.close() }
        let lateSent = ContinuousClock.now
        try late.send(post)
        let (bytes, end) = try late.readToEnd(timeout: .seconds(20))
        let waited = millisecondsSince(lateSent)
        let reply = try #require(AdminHTTP.parse(bytes), "\(end): \(String(decoding: bytes, as: UTF8.self).debugDescription)")
        #expect(reply.status == 202 && reply.text.hasPrefix("reload in progress"), "\(reply)")
        #expect(waited >= 9_000, "answered after \(waited) ms, before the 10 s an answer may take")
        #expect(try proxy.metrics().value("switchyard_config_reloads_total", ["result": "success"]) == 0)

        // The reload itself still applies, and so does the queued one.
        try dns.open()
        try proxy.waitForLogLineCount("configuration reloaded", 2, timeout: .seconds(10))
        let status = try proxy.status()
        #expect(status.state("web", "named") == "up" && status.server("web", "named")?["usable"] as? Bool == true, "\(status)")
        #expect(proxy.isRunning)
    }

    @Test("A reload that moves the admin endpoint to a DNS name looks it up off the loop too")
    func movedAdminNameIsLookedUpOffTheLoop() throws {
        let dns = try SlowResolver()
        defer { dns.remove() }
        let a = try Backend(name: "a", behavior: .identify)
        defer { a.stop() }
        let service = OpsConfig.service("web", servers: ["a \(a.address)"], extra: ["check = none"])
        let proxy = try SwitchyardProcess(config: OpsConfig.global() + service, environment: dns.environment)
        defer { proxy.stop() }  // SIGKILL: a lookup waiting at the gate goes with the process
        let port = try proxy.port("web")
        let (held, _) = try ReloadTests.connectAndIdentify(port: port)
        defer { held.close() }
        try proxy.rewriteConfig(OpsConfig.global(admin: "control.switchyard.test:0") + service)
        proxy.child.signal(SIGHUP)
        try dns.waitForLookup(of: "control.switchyard.test")
        try held.roundTrip("while the admin address resolves\n", timeout: .seconds(3))
        let health = try AdminHTTP.request(port: try proxy.adminPort(), method: "GET", path: "/healthz", timeout: .seconds(3))
        #expect(health.status == 200)
        try dns.open()
        try proxy.waitForLogLineCount("configuration reloaded", 1, timeout: .seconds(10))
        try proxy.waitForLogLineCount("admin listening", 2)
        try held.roundTrip("after\n")
    }

    @Test("resolve_interval: a server whose DNS name moves to another address is followed without a reload; its open connection stays; a failed lookup keeps the last address")
    func serversFollowTheirNames() throws {
        let dns = try SlowResolver()
        defer { dns.remove() }
        // The same port on another loopback address: only the name's answer tells them apart. The
        // port is free on 127.0.0.1, not necessarily on 127.0.0.2 (a client of another test may
        // hold it there): a few tries.
        var pair: (old: Backend, new: Backend)?
        for _ in 0..<20 where pair == nil {
            let old = try Backend(name: "old", behavior: .identify)
            if let new = try? Backend(name: "new", behavior: .identify, ip: "127.0.0.2", port: old.port) {
                pair = (old, new)
            } else {
                old.stop()
            }
        }
        let (old, new) = try #require(pair, "no port free on both 127.0.0.1 and 127.0.0.2")
        defer { old.stop() }
        defer { new.stop() }
        let name = "db.switchyard.test"
        try dns.setMap([name: "127.0.0.1"])
        let config = OpsConfig.global() + "resolve_interval = 100ms\n\n"
            + OpsConfig.service("db", servers: ["db \(name):\(old.port)"], checkInterval: "100ms")
        let proxy = try SwitchyardProcess(config: config, environment: dns.environment)
        defer { proxy.stop() }
        try proxy.waitForServersUp(service: "db", servers: ["db"])
        let port = try proxy.port("db")
        let (held, greeting) = try ReloadTests.connectAndIdentify(port: port)
        defer { held.close() }
        #expect(greeting == "old")
        // Looked up again and again; the same answer changes nothing.
        let before = dns.lookupCount(of: name)
        try waitUntil("two more lookups of \(name)", timeout: .seconds(5)) { dns.lookupCount(of: name) >= before + 2 }
        #expect(proxy.logCount("server address changed; new connections go to the new one") == 0)

        // The name moves: new connections follow it, the held one stays where it was.
        try dns.setMap([name: "127.0.0.2"])
        let moved = try proxy.waitForLogLine("server address changed") {
            $0.message == "server address changed; new connections go to the new one"
        }
        #expect(moved["server"] == "db" && moved["from"] == "127.0.0.1:\(old.port)" && moved["to"] == "127.0.0.2:\(old.port)", "\(moved)")
        var seen: [String: Int] = [:]
        try waitUntil("a new connection to reach the new address (seen \(seen))", timeout: .seconds(5)) {
            let (client, greeting) = try ReloadTests.connectAndIdentify(port: port)
            client.close()
            seen[greeting, default: 0] += 1
            return greeting == "new"
        }
        #expect(try ReloadTests.identifyMany(port: port, count: 5) == ["new": 5])
        try held.roundTrip("still on the old address\n")
        #expect(try proxy.metrics().value("switchyard_server_up", ["service": "db", "server": "db"]) == 1)

        // The name stops resolving: the last address stays.
        try dns.setMap([name: "-"])
        let failedFrom = dns.lookupCount(of: name)
        try waitUntil("two failed lookups of \(name)", timeout: .seconds(5)) { dns.lookupCount(of: name) >= failedFrom + 2 }
        #expect(try ReloadTests.identifyMany(port: port, count: 5) == ["new": 5])
        #expect(proxy.logCount("server address changed; new connections go to the new one") == 1)
        #expect(try proxy.metrics().value("switchyard_config_reloads_total", ["result": "success"]) == 0)
        try held.roundTrip("last\n")
        #expect(proxy.isRunning)
    }

    @Test("SIGTERM while a reload waits for DNS: the drain ends and the process exits 0 without waiting for the answer")
    func drainDoesNotWaitForALookup() throws {
        let dns = try SlowResolver()
        defer { dns.remove() }
        let a = try Backend(name: "a", behavior: .identify)
        defer { a.stop() }
        func config(_ servers: [String]) -> String {
            OpsConfig.global(drainTimeout: "5s") + OpsConfig.service("web", balance: "round_robin", servers: servers)
        }
        let proxy = try SwitchyardProcess(config: config(["a \(a.address)"]), environment: dns.environment)
        defer { proxy.stop() }  // SIGKILL: a lookup waiting at the gate goes with the process
        try proxy.waitForServersUp(service: "web", servers: ["a"])
        try proxy.rewriteConfig(config(["a \(a.address)", "later later.switchyard.test:9"]))
        proxy.child.signal(SIGHUP)
        try dns.waitForLookup(of: "later.switchyard.test")

        // No connection open: the drain ends at once, and the lookup (waiting up to 60 s for a
        // gate that never opens) does not keep the process alive.
        let status = try proxy.terminate(signal: SIGTERM, timeout: .seconds(5))
        #expect(status == .exited(0), "\(proxy.recentLog())")
        #expect(proxy.logCount("configuration reloaded") == 0)
        #expect(proxy.logCount("event loop closed with handles still open") == 0)
    }
}
