// Running programs (switchyard, redis-server, redis-benchmark) with their output collected on
// background threads, waits with deadlines, and a kill on every exit path.
import Foundation
import Glibc
import Synchronization

/// How a child ended.
enum ExitStatus: Equatable, Sendable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    var description: String {
        switch self {
        case .exited(let code): "exit status \(code)"
        case .signaled(let signal): "killed by signal \(signal)"
        }
    }
}

/// One line of a child's output; when the line is a JSON object its members are in `fields`.
struct LogLine: Sendable, CustomStringConvertible {
    let raw: String
    /// Members of the JSON object, every value rendered as a string (numbers and booleans too).
    let fields: [String: String]
    /// Members whose JSON value was not a string (the contract says every value is a string).
    let nonStringKeys: [String]
    let isJSON: Bool

    init(raw: String) {
        self.raw = raw
        var fields: [String: String] = [:]
        var nonString: [String] = []
        var isJSON = false
        if raw.first == "{",
           let object = (try? JSONSerialization.jsonObject(with: Data(raw.utf8))) as? [String: Any] {
            isJSON = true
            for (key, value) in object {
                if let text = value as? String {
                    fields[key] = text
                } else {
                    nonString.append(key)
                    fields[key] = "\(value)"
                }
            }
        }
        self.fields = fields
        self.nonStringKeys = nonString.sorted()
        self.isJSON = isJSON
    }

    subscript(key: String) -> String? { fields[key] }
    var message: String? { fields["message"] }
    var description: String { raw }
}

/// Reads a descriptor to its end on its own thread, keeping all bytes and complete lines.
final class OutputCollector: Sendable {
    private struct State {
        var bytes: [UInt8] = []
        var lines: [LogLine] = []
        var partial: [UInt8] = []
        var closed = false
        /// Changed only with `gate` locked too, so the reader cannot miss the wake-up.
        var paused = false
    }

    private let state = Mutex(State())
    /// The reader waits on it while paused.
    private let gate = NSCondition()

    /// Takes ownership of `fd` (closed at end of stream).
    init(fd: Int32, name: String) {
        let thread = Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                gate.lock()
                while state.withLock({ $0.paused }) { gate.wait() }
                gate.unlock()
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                append(buffer[0..<n])
            }
            close(fd)
            state.withLock { state in
                if !state.partial.isEmpty {
                    state.lines.append(LogLine(raw: String(decoding: state.partial, as: UTF8.self)))
                    state.partial.removeAll()
                }
                state.closed = true
            }
        }
        thread.name = name
        thread.start()
    }

    private func append(_ chunk: ArraySlice<UInt8>) {
        state.withLock { state in
            state.bytes += chunk
            state.partial += chunk
            var start = state.partial.startIndex
            var newLines: [LogLine] = []
            while let newline = state.partial[start...].firstIndex(of: UInt8(ascii: "\n")) {
                newLines.append(LogLine(raw: String(decoding: state.partial[start..<newline], as: UTF8.self)))
                start = newline + 1
            }
            if start > state.partial.startIndex { state.partial.removeFirst(start - state.partial.startIndex) }
            state.lines += newLines
        }
    }

    /// Stops reading (after the read in progress, if any): the writer finds the pipe full once
    /// it holds 64 KiB. `resume` reads on.
    func pause() {
        gate.lock()
        state.withLock { $0.paused = true }
        gate.unlock()
    }

    func resume() {
        gate.lock()
        state.withLock { $0.paused = false }
        gate.broadcast()
        gate.unlock()
    }

    var text: String { state.withLock { String(decoding: $0.bytes, as: UTF8.self) } }
    var lines: [LogLine] { state.withLock { $0.lines } }
    var isClosed: Bool { state.withLock { $0.closed } }
}

/// A running child process with stdout and stderr collected. Killed (SIGKILL) by `kill()` or deinit.
final class ChildProcess {
    private let process: Process
    let stdout: OutputCollector
    let stderr: OutputCollector
    let commandLine: String

    /// `environment`: the child's whole environment (nil: inherit this process's).
    init(executable: String, arguments: [String], directory: URL? = nil, environment: [String: String]? = nil) throws {
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw HarnessError("not an executable file: \(executable)")
        }
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = directory }
        if let environment { process.environment = environment }
        commandLine = ([executable] + arguments).map { $0.contains(" ") || $0.isEmpty ? "'\($0)'" : $0 }.joined(separator: " ")

        // Our own close-on-exec pipes, so no other concurrently started child inherits them.
        let out = try Socket.makePipe()
        let err: (read: Int32, write: Int32)
        do { err = try Socket.makePipe() } catch {
            close(out.read)
            close(out.write)
            throw error
        }
        let outWrite = FileHandle(fileDescriptor: out.write, closeOnDealloc: true)
        let errWrite = FileHandle(fileDescriptor: err.write, closeOnDealloc: true)
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = outWrite
        process.standardError = errWrite
        do {
            // posix_spawn hands the calling thread's signal mask to the child, and Swift
            // concurrency / Dispatch worker threads block almost every signal (SIGTERM and SIGINT
            // included). Spawn with an empty mask, as a shell or systemd would, and restore ours.
            var empty = sigset_t()
            var saved = sigset_t()
            sigemptyset(&empty)
            pthread_sigmask(SIG_SETMASK, &empty, &saved)
            defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
            try process.run()
        } catch {
            try? outWrite.close()
            try? errWrite.close()
            close(out.read)
            close(err.read)
            throw HarnessError("could not start \(commandLine): \(error)")
        }
        // The child has its copies; ours must go so that the readers see end-of-stream at exit.
        try? outWrite.close()
        try? errWrite.close()
        stdout = OutputCollector(fd: out.read, name: "stdout of \(URL(fileURLWithPath: executable).lastPathComponent)")
        stderr = OutputCollector(fd: err.read, name: "stderr of \(URL(fileURLWithPath: executable).lastPathComponent)")
    }

    deinit { kill() }

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }

    /// Exit status once the process is gone, nil while it runs.
    var exitStatus: ExitStatus? {
        guard !process.isRunning else { return nil }
        return process.terminationReason == .exit ? .exited(process.terminationStatus) : .signaled(process.terminationStatus)
    }

    func signal(_ signal: Int32) {
        if process.isRunning { _ = Glibc.kill(process.processIdentifier, signal) }
    }

    /// Waits for the process to exit; throws if it is still running at the deadline.
    @discardableResult
    func waitForExit(timeout: Duration) throws -> ExitStatus {
        try waitFor("\(commandLine) (pid \(pid)) to exit", timeout: timeout) { exitStatus }
    }

    /// Waits (briefly) for the output streams to reach their end, so `text` is complete.
    func waitForOutputEnd(timeout: Duration = .seconds(5)) {
        _ = try? waitUntil("output of \(commandLine) to end", timeout: timeout) { stdout.isClosed && stderr.isClosed }
    }

    /// SIGKILL if still running, then wait for it.
    func kill() {
        guard process.isRunning else { return }
        _ = Glibc.kill(process.processIdentifier, SIGKILL)
        _ = try? waitForExit(timeout: .seconds(10))
    }

    /// Runs a program to completion (killing it at the deadline) and returns its status and output.
    static func run(
        _ executable: String, _ arguments: [String], timeout: Duration = .seconds(30),
        environment: [String: String]? = nil
    ) throws -> (status: ExitStatus, stdout: String, stderr: String) {
        let child = try ChildProcess(executable: executable, arguments: arguments, environment: environment)
        defer { child.kill() }
        let status: ExitStatus
        do {
            status = try child.waitForExit(timeout: timeout)
        } catch {
            child.kill()
            child.waitForOutputEnd()
            throw HarnessError("\(error)\nstdout:\n\(child.stdout.text)\nstderr:\n\(child.stderr.text)")
        }
        child.waitForOutputEnd()
        return (status, child.stdout.text, child.stderr.text)
    }

    /// An executable named `name`: from PATH, else /usr/bin, /usr/local/bin, /usr/sbin.
    static func locate(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let dirs = path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/local/bin", "/usr/sbin", "/bin"]
        for dir in dirs where !dir.isEmpty {
            let candidate = dir + "/" + name
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}
