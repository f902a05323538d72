// Samples a process's resident memory on its own thread, keeping the peak.
import Dispatch
import Foundation
import Synchronization

final class MemorySampler: Sendable {
    private struct State {
        var peakKiB = 0
        var samples = 0
        var stopRequested = false
        var error: String?
    }

    private let state = Mutex(State())
    private let finished = DispatchSemaphore(value: 0)

    /// Starts sampling /proc/PID/status (VmRSS) every `interval`.
    init(pid: Int32, interval: Duration = .milliseconds(20)) {
        let thread = Thread { [self] in
            while !state.withLock({ $0.stopRequested }) {
                if let kib = MemorySampler.residentKiB(pid: pid) {
                    state.withLock {
                        $0.peakKiB = max($0.peakKiB, kib)
                        $0.samples += 1
                    }
                } else {
                    state.withLock { $0.error = "could not read /proc/\(pid)/status" }
                }
                pause(interval)
            }
            finished.signal()
        }
        thread.name = "rss sampler \(pid)"
        thread.start()
    }

    deinit { _ = stop() }

    /// Stops sampling (idempotent) and returns the peak VmRSS and number of samples.
    @discardableResult
    func stop() -> (peakKiB: Int, samples: Int, error: String?) {
        let first = state.withLock { state -> Bool in
            defer { state.stopRequested = true }
            return !state.stopRequested
        }
        if first { _ = finished.wait(timeout: .now() + 5) }
        return state.withLock { ($0.peakKiB, $0.samples, $0.error) }
    }

    static func residentKiB(pid: Int32) -> Int? {
        guard let status = readProcFile("/proc/\(pid)/status") else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if fields.count >= 2 { return Int(fields[1]) }
        }
        return nil
    }
}
