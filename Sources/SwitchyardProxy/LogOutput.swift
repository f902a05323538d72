import Logging
import SwitchyardCore
import SwitchyardUV
#if canImport(Glibc)
import Glibc
#endif

/// A swift-log handler that writes one line per record to standard error, as text or as JSON
/// (one object per line), through a `LogWriter`: whole lines, in order, and never blocking the
/// thread that logs (an event loop) when whoever reads standard error falls behind.
public struct StderrLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public let format: LogFormat
    public let label: String
    public let writer: LogWriter

    public init(label: String, format: LogFormat, level: Logger.Level, writer: LogWriter = .standardError) {
        self.label = label
        self.format = format
        self.logLevel = level
        self.writer = writer
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// A `key=value` value in the text format: bare when it is plain, else quoted. One log record
    /// stays one line whatever the value holds (a newline in a reload error, in an environment
    /// value), so no value can pass for a record of its own.
    static func appendTextValue(_ value: String, to line: inout String) {
        let plain = !value.isEmpty && value.unicodeScalars.allSatisfy {
            $0.value > 0x20 && $0.value != 0x7F && $0 != "\"" && $0 != "=" && $0 != "\\"
        }
        if plain {
            line += value
            return
        }
        line += "\""
        appendTextEscaped(value, to: &line, escapingQuotes: true)
        line += "\""
    }

    /// Text format: control characters as `\n`, `\r`, `\t` or `\xNN`, a backslash doubled (and
    /// `"` as `\"` inside a quoted value).
    static func appendTextEscaped(_ text: String, to line: inout String, escapingQuotes: Bool = false) {
        appendEscaped(text, to: &line, escapingQuotes: escapingQuotes) { code in
            let hex = String(code, radix: 16, uppercase: true)
            return "\\x" + (hex.count < 2 ? "0" : "") + hex
        }
    }

    /// The escaping both formats share: `\n`, `\r`, `\t`, `\\`, optionally `\"`; any other control
    /// character (and DEL) as `control(code)`.
    private static func appendEscaped(
        _ text: String, to out: inout String, escapingQuotes: Bool, control: (UInt32) -> String
    ) {
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\\": out += "\\\\"
            case "\"" where escapingQuotes: out += "\\\""
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    out += control(scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata {
            merged.merge(extra) { _, new in new }
        }
        let format = self.format
        writer.submit(Array(Self.render(level: event.level, message: event.message.description, metadata: merged, format: format).utf8)) { dropped in
            // Said once the writer has room again, before the line that found it.
            Array(Self.render(
                level: .warning, message: "log lines dropped: standard error was not read fast enough",
                metadata: ["dropped": "\(dropped)"], format: format).utf8)
        }
    }

    /// One record as one line (with its newline).
    static func render(level: Logger.Level, message: String, metadata merged: Logger.Metadata, format: LogFormat) -> String {
        var line = ""
        line.reserveCapacity(160)
        let time = Self.timestamp()
        switch format {
        case .text:
            line += time
            line += " "
            line += level.rawValue
            line += " "
            Self.appendTextEscaped(message, to: &line)
            for key in merged.keys.sorted() {
                line += " "
                line += key
                line += "="
                Self.appendTextValue(merged[key]!.description, to: &line)
            }
        case .json:
            line += "{\"time\":\""
            line += time
            line += "\",\"level\":\""
            line += level.rawValue
            line += "\",\"message\":"
            Self.appendJSONString(message, to: &line)
            for key in merged.keys.sorted() {
                line += ","
                Self.appendJSONString(key, to: &line)
                line += ":"
                Self.appendJSONString(merged[key]!.description, to: &line)
            }
            line += "}"
        }
        line += "\n"
        return line
    }

    /// RFC 3339 UTC with milliseconds: 2026-11-21T12:00:00.123Z
    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var seconds = ts.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
        }
        return pad(parts.tm_year + 1900, 4) + "-" + pad(parts.tm_mon + 1, 2) + "-" + pad(parts.tm_mday, 2)
            + "T" + pad(parts.tm_hour, 2) + ":" + pad(parts.tm_min, 2) + ":" + pad(parts.tm_sec, 2)
            + "." + pad(Int32(ts.tv_nsec / 1_000_000), 3) + "Z"
    }

    static func appendJSONString(_ s: String, to out: inout String) {
        out += "\""
        appendEscaped(s, to: &out, escapingQuotes: true) { code in
            let hex = String(code, radix: 16)
            return "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        }
        out += "\""
    }
}

extension Logger.Level {
    public init(_ level: LogLevel) {
        switch level {
        case .trace: self = .trace
        case .debug: self = .debug
        case .info: self = .info
        case .notice: self = .notice
        case .warning: self = .warning
        case .error: self = .error
        case .critical: self = .critical
        }
    }
}

/// Writes log lines to a descriptor (standard error) from a thread of its own, so that a reader
/// that falls behind (a stalled log shipper, a paused pipe) never blocks an event loop: lines wait
/// in a queue of at most `capacity` bytes; when it is full a line is dropped and counted, and once
/// there is room again a notice of how many were lost goes out first. Lines keep their order and
/// each goes out whole (one queue, one writer). `flush` waits for the queue to empty (at exit).
///
/// `@unchecked Sendable`: every mutable field is guarded by `mutex`; the writer thread touches
/// the descriptor only outside it.
public final class LogWriter: @unchecked Sendable {
    /// Standard error, 1 MiB of lines: thousands of connection lines, a burst a reader that keeps
    /// reading absorbs.
    public static let standardError = LogWriter(fd: 2, capacity: 1 << 20)

    public let fd: Int32
    public let capacity: Int
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    /// Signalled when lines arrive (the writer waits on it).
    private let linesArrived = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    /// Broadcast when the writer has written everything (`flush` waits on it).
    private let drained = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var queue: [UInt8] = []
    /// The writer holds a batch it has not finished writing.
    private var writing = false
    private var droppedSinceNotice = 0
    private var droppedTotal = 0
    private var writerState = WriterState.notStarted
    private enum WriterState { case notStarted, running, failedToStart }

    public init(fd: Int32, capacity: Int) {
        self.fd = fd
        self.capacity = capacity
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(linesArrived, nil)
        pthread_cond_init(drained, nil)
    }

    deinit {
        // Only writers never started (tests) go away: the thread keeps its writer alive.
        pthread_cond_destroy(drained)
        pthread_cond_destroy(linesArrived)
        pthread_mutex_destroy(mutex)
        drained.deallocate()
        linesArrived.deallocate()
        mutex.deallocate()
    }

    /// Lines dropped because the queue was full, since start.
    public var droppedLines: Int { locked { droppedTotal } }

    /// Queues `line` (a whole line, newline included), or drops it when the queue is full.
    /// `notice(n)` renders the line that reports `n` dropped lines.
    public func submit(_ line: [UInt8], notice: (Int) -> [UInt8]) {
        pthread_mutex_lock(mutex)
        if writerState == .notStarted { startWriter() }
        guard writerState == .running else {
            // No thread: write here (as before there was one).
            pthread_mutex_unlock(mutex)
            writeAll(line)
            return
        }
        var pending = line
        if droppedSinceNotice > 0 {
            pending = notice(droppedSinceNotice) + line
        }
        if queue.count + pending.count > capacity {
            droppedSinceNotice += 1
            droppedTotal += 1
        } else {
            droppedSinceNotice = 0
            let wasEmpty = queue.isEmpty
            queue += pending
            if wasEmpty { pthread_cond_signal(linesArrived) }
        }
        pthread_mutex_unlock(mutex)
    }

    /// Waits until every queued line is written, or `timeoutMilliseconds` passed (a reader that
    /// never reads must not hold the exit). True when all was written.
    @discardableResult
    public func flush(timeoutMilliseconds: Int) -> Bool {
        var deadline = timespec()
        clock_gettime(CLOCK_REALTIME, &deadline)
        let nanoseconds = Int(deadline.tv_nsec) + (timeoutMilliseconds % 1000) * 1_000_000
        deadline.tv_sec += timeoutMilliseconds / 1000 + nanoseconds / 1_000_000_000
        deadline.tv_nsec = nanoseconds % 1_000_000_000
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while writerState == .running && (!queue.isEmpty || writing) {
            if pthread_cond_timedwait(drained, mutex, &deadline) == ETIMEDOUT { return false }
        }
        return true
    }

    /// With `mutex` held.
    private func startWriter() {
        let rc = startDetachedThread { [self] in runWriter() }
        writerState = rc == 0 ? .running : .failedToStart
    }

    private func runWriter() {
        var batch: [UInt8] = []
        pthread_mutex_lock(mutex)
        while true {
            while queue.isEmpty { pthread_cond_wait(linesArrived, mutex) }
            swap(&batch, &queue)
            writing = true
            pthread_mutex_unlock(mutex)
            writeAll(batch)
            batch.removeAll(keepingCapacity: batch.capacity <= capacity)
            pthread_mutex_lock(mutex)
            writing = false
            if queue.isEmpty { pthread_cond_broadcast(drained) }
        }
    }

    /// Blocking, whole; gives up on an error other than EINTR (a closed descriptor).
    private func writeAll(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n > 0 {
                    offset += n
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    break
                }
            }
        }
    }

    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }
}
