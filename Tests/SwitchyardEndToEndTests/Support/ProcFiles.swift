// Reading /proc files whole: they report size 0, and some (/proc/net/tcp with many lingering
// sockets) are longer than a page, so they are read to the end rather than by their stated size.
import Foundation

func readProcFile(_ path: String) -> String? {
    guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
    defer { try? handle.close() }
    guard let data = try? handle.readToEnd() else { return nil }
    return String(data: data, encoding: .utf8)
}
