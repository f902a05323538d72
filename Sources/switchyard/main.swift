import ArgumentParser
import Logging
import SwitchyardCore
import SwitchyardProxy
#if canImport(Glibc)
import Glibc
#endif

@main
struct Switchyard: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchyard",
        abstract: "A TCP (layer-4) load balancer.",
        version: SwitchyardVersion.current,
        subcommands: [Run.self, Check.self],
        defaultSubcommand: Run.self
    )

    static func main() {
        keepStandardDescriptorsOpen()
        main(nil)
    }
}

/// Started with standard input, output or error closed (`<&-`, some supervisors), the first
/// descriptors opened would take 0, 1 or 2: libuv's epoll descriptor (which libuv then refuses to
/// close, aborting the exit) or its signal pipe (into which log lines would go). As nginx and
/// HAProxy do, `/dev/null` fills any of them that is closed.
func keepStandardDescriptorsOpen() {
    for fd: Int32 in 0...2 where fcntl(fd, F_GETFD) == -1 && errno == EBADF {
        let opened = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY)
        if opened >= 0 && opened != fd {
            // Lower ones are open by now, so this is only reached if open() chose another slot.
            _ = dup2(opened, fd)
            _ = close(opened)
        }
    }
}

struct ConfigOption: ParsableArguments {
    @Option(name: .shortAndLong, help: "Path to the INI configuration file.")
    var config: String = "/etc/switchyard/switchyard.ini"

    /// Loads the file, or prints `FILE:LINE: message` to stderr and exits 1.
    func load() throws -> SwitchyardConfig {
        do {
            return try ConfigLoader.load(path: config, environment: processEnvironment())
        } catch {
            printError(error.description)
            throw ExitCode(1)
        }
    }
}

/// The process environment, for `${VAR}` substitution in the INI file.
func processEnvironment() -> [String: String] {
    var result: [String: String] = [:]
    var cursor = environ
    while let entry = cursor.pointee {
        let pair = String(cString: entry)
        if let eq = pair.firstIndex(of: "=") {
            result[String(pair[..<eq])] = String(pair[pair.index(after: eq)...])
        }
        cursor += 1
    }
    return result
}

func printError(_ message: String) {
    var bytes = Array((message + "\n").utf8)
    _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the load balancer (the default).")
    @OptionGroup var options: ConfigOption

    func run() throws {
        let config = try options.load()
        let format = config.global.logFormat
        let level = Logger.Level(config.global.logLevel)
        LoggingSystem.bootstrap { label in
            StderrLogHandler(label: label, format: format, level: level)
        }
        let logger = Logger(label: "switchyard")
        // Lines still queued reach standard error before the exit (unless nobody reads it).
        defer { LogWriter.standardError.flush(timeoutMilliseconds: 2000) }
        do {
            let path = options.config
            let runtime = try ProxyRuntime(config: config, logger: logger) { () throws(ConfigError) in
                try ConfigLoader.load(path: path, environment: processEnvironment())
            }
            let status = try runtime.run()
            if status != 0 { throw ExitCode(status) }
        } catch let exit as ExitCode {
            throw exit
        } catch {
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate a configuration file and print a summary (exit 1 with FILE:LINE on error).")
    @OptionGroup var options: ConfigOption

    func run() throws {
        let config = try options.load()
        let serverCount = config.services.reduce(0) { $0 + $1.servers.count }
        let listenerCount = config.services.reduce(0) { $0 + $1.listen.count }
        print("\(options.config): OK: \(config.services.count) service(s), \(listenerCount) listener(s), \(serverCount) server(s)")
        for service in config.services {
            let listens = service.listen.map(\.description).joined(separator: ", ")
            let servers = service.servers.map { server in
                var s = "\(server.name)=\(server.address)"
                if server.weight != 1 { s += " weight=\(server.weight)" }
                if server.backup { s += " backup" }
                return s
            }.joined(separator: ", ")
            print("  [service \(service.name)] \(service.balance.rawValue) on \(listens) -> \(servers)")
        }
    }
}
