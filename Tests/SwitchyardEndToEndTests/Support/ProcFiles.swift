// Reading /proc files whole: they report size 0, and some (/proc/net/tcp with many lingering
// sockets) are longer than a page, so they are read to the end rather than by their stated size.
import Foundation

func readProcFile(_ path: String) -> String? {
    guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
    defer { try? handle.close() }
    guard let data = try? handle.readToEnd() else { return nil }
    return String(data: data, encoding: .utf8)
}

/// The scheduler state (R, S, T, …) of each of a process's threads, by thread id.
func threadStates(pid: Int32) -> [String: String] {
    let dir = "/proc/\(pid)/task"
    let tids = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
    var states: [String: String] = [:]
    for tid in tids {
        guard let text = readProcFile("\(dir)/\(tid)/stat"), let close = text.lastIndex(of: ")") else { continue }
        // `PID (name) STATE …`: the state follows the name, which may contain spaces.
        let rest = text[text.index(after: close)...].split(separator: " ")
        if let state = rest.first { states[tid] = String(state) }
    }
    return states
}
