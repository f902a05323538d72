import Logging
import SwitchyardCore
#if canImport(Glibc)
import Glibc
#endif

/// A swift-log handler that writes one line per record to standard error, as text or as JSON
/// (one object per line). Each line goes out in a single `write(2)`, so lines from several threads
/// never interleave.
public struct StderrLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public let format: LogFormat
    public let label: String

    public init(label: String, format: LogFormat, level: Logger.Level) {
        self.label = label
        self.format = format
        self.logLevel = level
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
        var line = ""
        line.reserveCapacity(160)
        let time = Self.timestamp()
        switch format {
        case .text:
            line += time
            line += " "
            line += event.level.rawValue
            line += " "
            Self.appendTextEscaped(event.message.description, to: &line)
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
            line += event.level.rawValue
            line += "\",\"message\":"
            Self.appendJSONString(event.message.description, to: &line)
            for key in merged.keys.sorted() {
                line += ","
                Self.appendJSONString(key, to: &line)
                line += ":"
                Self.appendJSONString(merged[key]!.description, to: &line)
            }
            line += "}"
        }
        line += "\n"
        var bytes = Array(line.utf8)
        bytes.withUnsafeMutableBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(2, raw.baseAddress! + offset, raw.count - offset)
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
