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

/// A listener on 127.0.0.1 and one connection through it, on one loop: `client` (connected by
/// us, created with `clientFamily` when given, i.e. its socket made before `connect`) and `server`
/// (accepted), each with a `Recorder` as its delegate and neither reading yet.
struct ConnectedPair {
    let listener: TCPListener
    let client: TCPStream
    let clientSide: Recorder
    let server: TCPStream
    let serverSide: Recorder

    init(_ loop: EventLoop, clientFamily: SocketAddress.Family? = nil,
         sourceLocation: SourceLocation = #_sourceLocation) throws {
        var accepted: TCPStream?
        let listener = try TCPListener(loop: loop, address: SocketAddress(ip: "127.0.0.1", port: 0)) { l in
            accepted = try? l.accept()
        }
        let client = try TCPStream(loop: loop, family: clientFamily)
        let clientSide = Recorder()
        client.delegate = clientSide
        try client.connect(to: listener.boundAddress)
        runLoop(loop, until: { clientSide.connected != nil && accepted != nil }, sourceLocation: sourceLocation)
        #expect(clientSide.connected == .some(nil), sourceLocation: sourceLocation)
        let server = try #require(accepted, sourceLocation: sourceLocation)
        let serverSide = Recorder()
        server.delegate = serverSide
        (self.listener, self.client, self.clientSide, self.server, self.serverSide) = (listener, client, clientSide, server, serverSide)
    }

    /// Closes both streams and the listener, waits for the close callbacks, checks that every pool
    /// buffer came back and that the loop can be closed.
    func closeAll(_ loop: EventLoop, sourceLocation: SourceLocation = #_sourceLocation) {
        client.close()
        server.close()
        listener.close()
        let (clientSide, serverSide) = (self.clientSide, self.serverSide)
        runLoop(loop, until: { clientSide.closed && serverSide.closed }, sourceLocation: sourceLocation)
        #expect(loop.buffers.outstanding == 0, "every buffer went back to the pool", sourceLocation: sourceLocation)
        closeLoop(loop, sourceLocation: sourceLocation)
    }
}
