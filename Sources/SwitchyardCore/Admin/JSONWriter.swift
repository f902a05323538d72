// A small streaming JSON writer with compact output (no spaces, no newline), for `/status`.
//
//   var json = JSONWriter()
//   json.object { j in
//       j.field("version", "1.2")
//       j.field("uptime_seconds", 42)
//       j.array("services") { j in
//           for service in services {
//               j.object { j in j.field("name", service.name) }
//           }
//       }
//   }
//   let body = json.bytes
//
// Strings escape `"` and `\` with a backslash and every control character (U+0000-U+001F) as
// `\u00XX`; everything else (including non-ASCII) is written as UTF-8. Doubles use the shortest
// round-trip form (`0.1`, `1e-07`, `2.0`); NaN and infinities become `null`. Object keys are written
// in call order; duplicates are not detected. Misuse (a value in an object without a key, a key in an
// array, two top-level values) is a programming error: it traps in debug builds and in release
// builds writes what it can (a key without a value gets `null`).

/// A value `JSONWriter` can write: strings, booleans, integers, doubles and optionals of them (nil is `null`).
public protocol JSONScalar {
    func appendJSON(to json: inout JSONWriter)
}

public struct JSONWriter: Sendable {
    public static let contentType = "application/json"

    private struct Container: Sendable {
        var isObject: Bool
        var count = 0
        var hasKey = false
    }

    public private(set) var bytes: [UInt8] = []
    private var stack: [Container] = []
    private var wroteTopLevel = false

    public init() {}

    /// The output as a String.
    public var string: String { String(decoding: bytes, as: UTF8.self) }

    /// Whether exactly one top-level value has been written and every container is closed.
    public var isComplete: Bool { wroteTopLevel && stack.isEmpty }

    // MARK: Values (top level, in arrays, or after `key`)

    public mutating func value<T: JSONScalar>(_ value: T) {
        value.appendJSON(to: &self)
    }

    public mutating func null() {
        beginValue()
        append("null")
    }

    public mutating func object(_ body: (inout JSONWriter) -> Void) {
        beginValue()
        bytes.append(UInt8(ascii: "{"))
        stack.append(Container(isObject: true))
        body(&self)
        if stack.last?.hasKey == true {   // a key with no value: keep the JSON valid
            assertionFailure("JSONWriter: key without a value")
            append("null")
        }
        stack.removeLast()
        bytes.append(UInt8(ascii: "}"))
    }

    public mutating func array(_ body: (inout JSONWriter) -> Void) {
        beginValue()
        bytes.append(UInt8(ascii: "["))
        stack.append(Container(isObject: false))
        body(&self)
        stack.removeLast()
        bytes.append(UInt8(ascii: "]"))
    }

    // MARK: Object members

    /// Starts a member; the next value written is its value.
    public mutating func key(_ key: String) {
        guard let top = stack.last, top.isObject, !top.hasKey else {
            assertionFailure("JSONWriter: key \"\(key)\" outside an object or right after another key")
            return
        }
        if top.count > 0 { bytes.append(UInt8(ascii: ",")) }
        appendString(key)
        bytes.append(UInt8(ascii: ":"))
        stack[stack.count - 1].hasKey = true
    }

    public mutating func field<T: JSONScalar>(_ key: String, _ value: T) {
        self.key(key)
        value.appendJSON(to: &self)
    }

    public mutating func nullField(_ key: String) {
        self.key(key)
        null()
    }

    public mutating func object(_ key: String, _ body: (inout JSONWriter) -> Void) {
        self.key(key)
        object(body)
    }

    public mutating func array(_ key: String, _ body: (inout JSONWriter) -> Void) {
        self.key(key)
        array(body)
    }

    // MARK: Scalars (used by the JSONScalar conformances)

    public mutating func writeString(_ s: String) {
        beginValue()
        appendString(s)
    }

    public mutating func writeBool(_ b: Bool) {
        beginValue()
        append(b ? "true" : "false")
    }

    public mutating func writeInteger<I: BinaryInteger>(_ i: I) {
        beginValue()
        append(String(i))
    }

    /// Finite values in shortest round-trip form; NaN and infinities as `null`.
    public mutating func writeDouble(_ d: Double) {
        beginValue()
        append(d.isFinite ? d.description : "null")
    }

    // MARK: - Internals

    private mutating func beginValue() {
        guard let top = stack.last else {
            assert(!wroteTopLevel, "JSONWriter: more than one top-level value")
            if wroteTopLevel { bytes.append(UInt8(ascii: ",")) }  // release: keep the tokens apart
            wroteTopLevel = true
            return
        }
        if top.isObject {
            if !top.hasKey {
                assertionFailure("JSONWriter: value in an object without a key")
                key("")
            }
            stack[stack.count - 1].hasKey = false
        } else if top.count > 0 {
            bytes.append(UInt8(ascii: ","))
        }
        stack[stack.count - 1].count += 1
    }

    private mutating func append(_ s: String) {
        bytes.append(contentsOf: s.utf8)
    }

    private mutating func appendString(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                bytes.append(UInt8(ascii: "\\"))
                bytes.append(b)
            case 0x00..<0x20:
                bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                                          HTTPSyntax.hexDigit(b >> 4), HTTPSyntax.hexDigit(b & 0xF)])
            default:
                bytes.append(b)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}

extension String: JSONScalar {
    public func appendJSON(to json: inout JSONWriter) { json.writeString(self) }
}

extension Substring: JSONScalar {
    public func appendJSON(to json: inout JSONWriter) { json.writeString(String(self)) }
}

extension Bool: JSONScalar {
    public func appendJSON(to json: inout JSONWriter) { json.writeBool(self) }
}

extension Double: JSONScalar {
    public func appendJSON(to json: inout JSONWriter) { json.writeDouble(self) }
}

extension Int: JSONScalar {
    public func appendJSON(to json: inout JSONWriter) { json.writeInteger(self) }
}

extension Int64: JSONScalar {
    public func appendJSON(to json: inout JSONWriter) { json.writeInteger(self) }
}

extension Int32: JSONScalar {
    public func appendJSON(to json: inout JSONWriter) { json.writeInteger(self) }
}

extension UInt: JSONScalar {
    public func appendJSON(to json: inout JSONWriter) { json.writeInteger(self) }
}

extension UInt64: JSONScalar {
    public func appendJSON(to json: inout JSONWriter) { json.writeInteger(self) }
}

extension UInt32: JSONScalar {
    public func appendJSON(to json: inout JSONWriter) { json.writeInteger(self) }
}

extension Optional: JSONScalar where Wrapped: JSONScalar {
    public func appendJSON(to json: inout JSONWriter) {
        switch self {
        case .some(let value): value.appendJSON(to: &json)
        case .none: json.null()
        }
    }
}
