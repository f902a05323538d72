// Deadlines and polling: every wait in this suite is "check a condition every few milliseconds
// until it holds or a deadline passes, then fail with a message saying what was awaited".
import Foundation

/// A failure of the harness or of an expectation checked inside a helper; its description is the
/// message Swift Testing shows.
struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension Duration {
    /// Whole milliseconds (rounded down).
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

/// A point in time after which a wait gives up.
struct Deadline: Sendable {
    let end: ContinuousClock.Instant

    init(after duration: Duration) { end = ContinuousClock.now + duration }

    var hasPassed: Bool { ContinuousClock.now >= end }

    var remaining: Duration {
        let left = end - ContinuousClock.now
        return left > .zero ? left : .zero
    }

    /// Remaining time as a `poll(2)` timeout, at least 1 ms so a final check still happens.
    var pollTimeout: Int32 {
        let ms = remaining.milliseconds
        return Int32(clamping: max(1, min(ms + 1, Int64(Int32.max))))
    }
}

/// Sleeps the calling thread. Only for deliberate pauses that are the behaviour under test, and
/// for the interval between two checks of a polled condition.
func pause(_ duration: Duration) {
    guard duration > .zero else { return }
    Thread.sleep(forTimeInterval: duration.seconds)
}

/// Polls `condition` every `interval` until it returns true; throws once `timeout` has passed.
func waitUntil(
    _ what: @autoclosure () -> String,
    timeout: Duration,
    interval: Duration = .milliseconds(10),
    _ condition: () throws -> Bool
) throws {
    _ = try waitFor(what(), timeout: timeout, interval: interval) { try condition() ? true : nil }
}

/// Polls `produce` every `interval` until it returns a value; throws once `timeout` has passed.
func waitFor<T>(
    _ what: @autoclosure () -> String,
    timeout: Duration,
    interval: Duration = .milliseconds(10),
    _ produce: () throws -> T?
) throws -> T {
    let deadline = Deadline(after: timeout)
    while true {
        if let value = try produce() { return value }
        if deadline.hasPassed {
            throw HarnessError("timed out after \(timeout) waiting for \(what())")
        }
        pause(interval)
    }
}

/// Milliseconds elapsed since `start`.
func millisecondsSince(_ start: ContinuousClock.Instant) -> Int64 {
    (ContinuousClock.now - start).milliseconds
}
