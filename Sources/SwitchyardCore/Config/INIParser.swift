// A small INI reader: sections, KEY = VALUE entries, comments, line numbers. It knows nothing about
// Switchyard's keys; ConfigLoader gives the entries their meaning.
//
// Syntax:
//   - `;` or `#` as the first non-blank character makes the line a comment; blank lines are ignored.
//   - `[NAME]` or `[NAME ARGUMENT]` starts a section (`[service pg]`); a comment may follow the `]`.
//   - `KEY = VALUE` (whitespace around `=` is free). In VALUE, a `;` or `#` at its start or preceded by
//     whitespace starts a comment, so `secret = a#b` keeps `a#b`.
//   - Lines end with LF, CRLF or a lone CR (old Mac files); a leading UTF-8 BOM is ignored. Lines
//     are numbered from 1.
//
// The parser is lazy (`next()`), so a loader that consumes it reports errors in file order.

/// One line of meaning in an INI file.
public enum INIEvent: Equatable, Sendable {
    /// `[name]` or `[name argument]`; `argument` is nil when absent.
    case section(name: String, argument: String?, line: Int)
    /// `key = value` with the trailing comment removed and both sides trimmed.
    case entry(key: String, value: String, line: Int)
}

public struct INIEntry: Equatable, Sendable {
    public var key: String
    public var value: String
    public var line: Int

    public init(key: String, value: String, line: Int) {
        self.key = key
        self.value = value
        self.line = line
    }
}

public struct INISection: Equatable, Sendable {
    public var name: String
    public var argument: String?
    /// Line of the `[...]` header.
    public var line: Int
    /// Entries in file order; repeated keys are kept, in order.
    public var entries: [INIEntry]

    public init(name: String, argument: String?, line: Int, entries: [INIEntry] = []) {
        self.name = name
        self.argument = argument
        self.line = line
        self.entries = entries
    }

    /// All values of `key`, in file order.
    public func values(_ key: String) -> [String] {
        entries.filter { $0.key == key }.map(\.value)
    }
}

public struct INIDocument: Equatable, Sendable {
    public var sections: [INISection]
    /// Number of lines in the file as an editor counts them (at least 1).
    public var lineCount: Int

    public init(sections: [INISection], lineCount: Int) {
        self.sections = sections
        self.lineCount = lineCount
    }
}

public struct INIParser: Sendable {
    public let file: String
    private let lines: [Substring]
    private var index = 0
    private var inSection = false

    public init(_ text: String, file: String) {
        self.file = file
        var body = Substring(text)
        if body.first == "\u{FEFF}" { body = body.dropFirst() }
        // "\r\n" is a single Character in Swift, hence the separate separators.
        var lines = body.split(omittingEmptySubsequences: false) { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }
        // A final newline ends the last line; it does not start a new one.
        if lines.count > 1, lines.last?.isEmpty == true { lines.removeLast() }
        self.lines = lines
    }

    /// Number of lines as an editor counts them (at least 1, even for an empty file).
    public var lineCount: Int { max(lines.count, 1) }

    /// The next section header or entry; nil at the end of the file.
    public mutating func next() throws(ConfigError) -> INIEvent? {
        while index < lines.count {
            let lineNumber = index + 1
            let line = lines[index].trimmingWhitespace()
            index += 1

            guard let first = line.first, first != ";", first != "#" else { continue }

            if first == "[" {
                let (name, argument) = try parseHeader(line, lineNumber: lineNumber)
                inSection = true
                return .section(name: name, argument: argument, line: lineNumber)
            }

            guard let equals = line.firstIndex(of: "=") else {
                throw ConfigError(
                    file: file, line: lineNumber,
                    message: "line has no \"=\": \"\(excerpt(line))\" (expected KEY = VALUE)")
            }
            let key = line[..<equals].trimmingWhitespace()
            let value = stripComment(line[line.index(after: equals)...]).trimmingWhitespace()
            if key.isEmpty {
                throw ConfigError(file: file, line: lineNumber, message: "missing key before \"=\" in \"\(excerpt(line))\"")
            }
            if !inSection {
                throw ConfigError(
                    file: file, line: lineNumber,
                    message: "\"\(excerpt("\(key) = \(value)"))\" is outside any section (put it under a [section] header)")
            }
            return .entry(key: String(key), value: String(value), line: lineNumber)
        }
        return nil
    }

    /// Reads the whole text into sections. Throws the first error in file order.
    public static func parse(_ text: String, file: String) throws(ConfigError) -> INIDocument {
        var parser = INIParser(text, file: file)
        var sections: [INISection] = []
        while let event = try parser.next() {
            switch event {
            case let .section(name, argument, line):
                sections.append(INISection(name: name, argument: argument, line: line))
            case let .entry(key, value, line):
                // `next()` never yields an entry before a section.
                sections[sections.count - 1].entries.append(INIEntry(key: key, value: value, line: line))
            }
        }
        return INIDocument(sections: sections, lineCount: parser.lineCount)
    }

    private func parseHeader(_ line: Substring, lineNumber: Int) throws(ConfigError) -> (String, String?) {
        let malformed = ConfigError(
            file: file, line: lineNumber,
            message: "malformed section header \"\(excerpt(line))\" (expected [NAME] or [NAME ARGUMENT])")
        guard let close = line.firstIndex(of: "]") else { throw malformed }
        let inner = line[line.index(after: line.startIndex)..<close].trimmingWhitespace()
        let rest = line[line.index(after: close)...].trimmingWhitespace()
        if let first = rest.first, first != ";", first != "#" { throw malformed }
        if inner.isEmpty || inner.contains("[") { throw malformed }

        guard let space = inner.firstIndex(where: \.isWhitespace) else { return (String(inner), nil) }
        let name = String(inner[..<space])
        let argument = inner[space...].trimmingWhitespace()
        return (name, String(argument))
    }

    /// Cuts VALUE at a `;` or `#` that starts it or follows whitespace.
    private func stripComment(_ value: Substring) -> Substring {
        var previousIsSpace = true
        for i in value.indices {
            let c = value[i]
            if (c == ";" || c == "#") && previousIsSpace { return value[..<i] }
            previousIsSpace = c.isWhitespace
        }
        return value
    }
}

/// Longest piece of the file's text an error message repeats.
let excerptLength = 80

/// `text` as an error message shows it: at most `excerptLength` characters (then `…`), control
/// characters escaped (a stray CR must not garble the terminal).
func excerpt(_ text: some StringProtocol) -> String {
    var out = ""
    for (n, c) in text.enumerated() {
        if n == excerptLength { out += "…"; break }
        for scalar in c.unicodeScalars {
            switch scalar {
            case "\r": out += "\\r"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\u{00}"..."\u{1F}", "\u{7F}": out += "\\x" + (scalar.value < 16 ? "0" : "") + String(scalar.value, radix: 16)
            default: out.unicodeScalars.append(scalar)
            }
        }
    }
    return out
}

extension Substring {
    func trimmingWhitespace() -> Substring {
        guard let start = firstIndex(where: { !$0.isWhitespace }),
              let end = lastIndex(where: { !$0.isWhitespace })
        else { return self[endIndex...] }
        return self[start...end]
    }
}

extension String {
    func trimmingWhitespace() -> String { String(Substring(self).trimmingWhitespace()) }
}
