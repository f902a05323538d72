import Testing
@testable import SwitchyardUV

/// Runs `loop` until `done()` is true or `seconds` pass (then records a failure). Checks `done`
/// after each loop iteration through a repeating timer; no fixed sleeps.
func runLoop(_ loop: EventLoop, seconds: Double = 5, until done: @escaping () -> Bool,
             sourceLocation: SourceLocation = #_sourceLocation) {
    let start = loop.now
    var timedOut = false
    let ticker = try! UVTimer(loop: loop) {}
    ticker.start(timeout: 1, repeat: 1)
    while !done() {
        uv_run_once(loop)
        if Double(loop.now &- start) > seconds * 1000 {
            timedOut = true
            break
        }
    }
    ticker.close()
    #expect(!timedOut, "condition not reached within \(seconds)s", sourceLocation: sourceLocation)
}

import CLibUV
func uv_run_once(_ loop: EventLoop) {
    uv_run(loop.raw, UV_RUN_ONCE)
}

/// Closes everything still open on the loop and checks that the loop can be closed (no leak).
func closeLoop(_ loop: EventLoop, sourceLocation: SourceLocation = #_sourceLocation) {
    loop.closeInbox()
    uv_run(loop.raw, UV_RUN_DEFAULT)
    #expect(loop.finish(), "every handle was closed", sourceLocation: sourceLocation)
}
