// Prometheus text exposition format 0.0.4.
//
//   var w = PrometheusWriter()
//   w.counter("switchyard_connections_total", help: "Client connections accepted.") { f in
//       f.add(labels: [("service", "pg")], value: 3)
//   }
//   w.histogram("switchyard_connect_seconds", help: "Backend connect time.") { f in
//       f.add(labels: [("service", "pg")], latency)
//   }
//   let body = w.bytes   // serve with PrometheusWriter.contentType
//
// Each family gets `# HELP` and `# TYPE` once, then its samples; families come out in the order they
// were first declared, and declaring a name again appends samples to the existing family (the first
// help text and type win; samples of another kind than the family's are dropped). Names are made
// valid rather than rejected: characters outside `[a-zA-Z0-9_:]` (label names: `[a-zA-Z0-9_]`)
// become `_`, and a leading digit gets a `_` prefix. Label values are escaped (`\\`, `\"`, `\n`),
// HELP text too (`\\`, `\n`). Histograms print cumulative `_bucket{...,le="..."}` lines ending with
// `le="+Inf"`, then `_sum` and `_count`; their own labels must not include `le`. Numbers: `+Inf`,
// `-Inf`, `NaN`; integral values below 2^63 in plain digits (`3`, not `3.0` or `3e+00`); others in
// Swift's shortest round-trip form (`0.25`, `1e-07`), which Prometheus parses. No timestamps.

public struct PrometheusWriter: Sendable {
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    public enum MetricType: String, Sendable {
        case counter
        case gauge
        case histogram
        case untyped
    }

    /// Samples of one counter, gauge or untyped family.
    public struct Samples: Sendable {
        public let name: String
        fileprivate var lines = ""

        fileprivate init(name: String) { self.name = name }

        public mutating func add(labels: [(String, String)] = [], value: Double) {
            PrometheusWriter.appendSample(&lines, name, labels, PrometheusWriter.format(value))
        }

        /// Exact for any Int (a Double would round beyond 2^53).
        public mutating func add(labels: [(String, String)] = [], value: Int) {
            PrometheusWriter.appendSample(&lines, name, labels, String(value))
        }

        public mutating func add(labels: [(String, String)] = [], value: UInt64) {
            PrometheusWriter.appendSample(&lines, name, labels, String(value))
        }
    }

    /// Samples of one histogram family.
    public struct HistogramSamples: Sendable {
        public let name: String
        fileprivate var lines = ""

        fileprivate init(name: String) { self.name = name }

        public mutating func add(labels: [(String, String)] = [], _ histogram: Histogram) {
            let cumulative = histogram.cumulativeCounts
            for (i, bound) in histogram.upperBounds.enumerated() {
                PrometheusWriter.appendSample(&lines, name + "_bucket", labels + [("le", PrometheusWriter.format(bound))],
                                              String(cumulative[i]))
            }
            PrometheusWriter.appendSample(&lines, name + "_bucket", labels + [("le", "+Inf")], String(histogram.count))
            PrometheusWriter.appendSample(&lines, name + "_sum", labels, PrometheusWriter.format(histogram.sum))
            PrometheusWriter.appendSample(&lines, name + "_count", labels, String(histogram.count))
        }
    }

    private struct Family: Sendable {
        var name: String
        var help: String
        var type: MetricType
        var lines = ""
    }

    private var families: [Family] = []
    private var indexByName: [String: Int] = [:]

    public init() {}

    public mutating func counter(_ name: String, help: String, _ samples: (inout Samples) -> Void) {
        scalarFamily(name, type: .counter, help: help, samples)
    }

    public mutating func gauge(_ name: String, help: String, _ samples: (inout Samples) -> Void) {
        scalarFamily(name, type: .gauge, help: help, samples)
    }

    public mutating func untyped(_ name: String, help: String, _ samples: (inout Samples) -> Void) {
        scalarFamily(name, type: .untyped, help: help, samples)
    }

    public mutating func histogram(_ name: String, help: String, _ samples: (inout HistogramSamples) -> Void) {
        let index = familyIndex(name, type: .histogram, help: help)
        guard families[index].type == .histogram else { return }
        var h = HistogramSamples(name: families[index].name)
        samples(&h)
        families[index].lines += h.lines
    }

    private mutating func scalarFamily(_ name: String, type: MetricType, help: String, _ samples: (inout Samples) -> Void) {
        let index = familyIndex(name, type: type, help: help)
        guard families[index].type == type else { return }
        var s = Samples(name: families[index].name)
        samples(&s)
        families[index].lines += s.lines
    }

    private mutating func familyIndex(_ name: String, type: MetricType, help: String) -> Int {
        let name = Self.sanitize(name, allowColon: true)
        if let index = indexByName[name] { return index }
        families.append(Family(name: name, help: help, type: type))
        indexByName[name] = families.count - 1
        return families.count - 1
    }

    /// The exposition text (empty when nothing was declared).
    public var text: String {
        var out = ""
        for family in families {
            out += "# HELP \(family.name) \(Self.escapeHelp(family.help))\n"
            out += "# TYPE \(family.name) \(family.type.rawValue)\n"
            out += family.lines
        }
        return out
    }

    public var bytes: [UInt8] { Array(text.utf8) }

    // MARK: - Formatting

    fileprivate static func appendSample(_ out: inout String, _ name: String, _ labels: [(String, String)], _ value: String) {
        out += name
        if !labels.isEmpty {
            out += "{"
            for (i, (label, labelValue)) in labels.enumerated() {
                if i > 0 { out += "," }
                out += sanitize(label, allowColon: false)
                out += "=\""
                out += escapeLabelValue(labelValue)
                out += "\""
            }
            out += "}"
        }
        out += " "
        out += value
        out += "\n"
    }

    /// Prometheus float syntax: `+Inf`, `-Inf`, `NaN`; integers in plain digits; otherwise shortest round-trip.
    public static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value < 0 ? "-Inf" : "+Inf" }
        if value == value.rounded(.towardZero) && abs(value) < 9.223372036854775808e18 {
            return String(Int64(value))
        }
        return value.description
    }

    static func escapeLabelValue(_ s: String) -> String {
        guard s.utf8.contains(where: { $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "\"") || $0 == HTTPSyntax.lf }) else {
            return s
        }
        var out = ""
        for ch in s.unicodeScalars {
            switch ch {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out
    }

    static func escapeHelp(_ s: String) -> String {
        var out = ""
        for ch in s.unicodeScalars {
            switch ch {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out
    }

    /// Metric names: `[a-zA-Z_:][a-zA-Z0-9_:]*`; label names: `[a-zA-Z_][a-zA-Z0-9_]*`.
    static func sanitize(_ name: String, allowColon: Bool) -> String {
        var bytes = name.utf8.map { b -> UInt8 in
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"):
                return b
            case UInt8(ascii: ":") where allowColon:
                return b
            default:
                return UInt8(ascii: "_")
            }
        }
        if bytes.first.map(HTTPSyntax.isDigit) ?? true { bytes.insert(UInt8(ascii: "_"), at: 0) }
        return String(decoding: bytes, as: UTF8.self)
    }
}
