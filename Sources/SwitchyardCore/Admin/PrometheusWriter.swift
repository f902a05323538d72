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

    /// A label set rendered once (`a="x",b="y"`), for series that share it across families (a
    /// server's `service` and `server`): far cheaper than the pairs for every sample.
    public struct Labels: Sendable {
        var rendered: [UInt8] = []

        public init(_ pairs: [(String, String)]) {
            PrometheusWriter.appendLabels(&rendered, pairs)
        }

        /// These labels and one more.
        public func adding(_ name: String, _ value: String) -> Labels {
            var copy = self
            if !copy.rendered.isEmpty { copy.rendered.append(UInt8(ascii: ",")) }
            PrometheusWriter.appendLabels(&copy.rendered, [(name, value)])
            return copy
        }
    }

    /// Samples of one counter, gauge or untyped family.
    public struct Samples: Sendable {
        public let name: String
        fileprivate var lines: [UInt8] = []

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

        public mutating func add(_ labels: Labels, value: UInt64) {
            PrometheusWriter.appendSample(&lines, name, labels.rendered, String(value))
        }

        public mutating func add(_ labels: Labels, value: Int) {
            PrometheusWriter.appendSample(&lines, name, labels.rendered, String(value))
        }
    }

    /// Samples of one histogram family.
    public struct HistogramSamples: Sendable {
        public let name: String
        fileprivate var lines: [UInt8] = []

        fileprivate init(name: String) { self.name = name }

        /// `le` values of the last bounds seen (every series of a family has the same bounds):
        /// formatted once, not once per series.
        private var boundsText: (bounds: [Double], text: [String]) = ([], [])

        public mutating func add(labels: [(String, String)] = [], _ histogram: Histogram) {
            add(Labels(labels), histogram)
        }

        public mutating func add(_ labels: Labels, _ histogram: Histogram) {
            let cumulative = histogram.cumulativeCounts
            let bounds = histogram.upperBounds
            if boundsText.bounds != bounds { boundsText = (bounds, bounds.map(PrometheusWriter.format)) }
            // `NAME_bucket{LABELS,le="` once; each bucket adds its bound and count.
            var head: [UInt8] = []
            head += name + "_bucket{"
            head += labels.rendered
            head += labels.rendered.isEmpty ? "le=\"" : ",le=\""
            for i in bounds.indices {
                lines += head
                lines += boundsText.text[i]
                lines += "\"} "
                lines += String(cumulative[i])
                lines += "\n"
            }
            lines += head
            lines += "+Inf\"} "
            lines += String(histogram.count)
            lines += "\n"
            PrometheusWriter.appendSample(&lines, name + "_sum", labels.rendered, PrometheusWriter.format(histogram.sum))
            PrometheusWriter.appendSample(&lines, name + "_count", labels.rendered, String(histogram.count))
        }
    }

    private struct Family: Sendable {
        var name: String
        var help: String
        var type: MetricType
        var lines: [UInt8] = []
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
    public var text: String { String(decoding: bytes, as: UTF8.self) }

    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(families.reduce(0) { $0 + $1.lines.count + 200 })
        for family in families {
            out += "# HELP \(family.name) \(Self.escapeHelp(family.help))\n"
            out += "# TYPE \(family.name) \(family.type.rawValue)\n"
            out += family.lines
        }
        return out
    }

    // MARK: - Formatting

    fileprivate static func appendSample(_ out: inout [UInt8], _ name: String, _ labels: [(String, String)], _ value: String) {
        out += name
        if !labels.isEmpty {
            out += "{"
            appendLabels(&out, labels)
            out += "}"
        }
        out += " "
        out += value
        out += "\n"
    }

    fileprivate static func appendSample(_ out: inout [UInt8], _ name: String, _ renderedLabels: [UInt8], _ value: String) {
        out += name
        if !renderedLabels.isEmpty {
            out.append(UInt8(ascii: "{"))
            out += renderedLabels
            out.append(UInt8(ascii: "}"))
        }
        out.append(UInt8(ascii: " "))
        out += value
        out.append(UInt8(ascii: "\n"))
    }

    /// `a="x",b="y"` (no braces).
    fileprivate static func appendLabels(_ out: inout [UInt8], _ labels: [(String, String)]) {
        for (i, (label, labelValue)) in labels.enumerated() {
            if i > 0 { out += "," }
            out += sanitize(label, allowColon: false)
            out += "=\""
            out += escapeLabelValue(labelValue)
            out += "\""
        }
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
        // Names are nearly always valid already: no copy then.
        let valid = name.utf8.enumerated().allSatisfy { i, b in
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "_"): return true
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return i > 0
            case UInt8(ascii: ":"): return allowColon
            default: return false
            }
        }
        if valid && !name.isEmpty { return name }
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

/// Text into a byte buffer (the exposition is built as bytes: far cheaper than growing Strings).
fileprivate func += (bytes: inout [UInt8], text: String) {
    bytes.append(contentsOf: text.utf8)
}
