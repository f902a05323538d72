import Testing
@testable import SwitchyardUV

/// Records the order in which end-of-turn targets run; `next` is queued from inside the pass.
private final class TurnProbe: EndOfTurnTarget {
    let name: String
    let log: Log
    var next: TurnProbe?
    init(_ name: String, _ log: Log) { self.name = name; self.log = log }
    func endOfTurn() {
        log.entries.append("end:\(name)")
        if let next { log.loop?.atEndOfTurn(next) }
    }
}

private final class Log {
    var entries: [String] = []
    weak var loop: EventLoop?
}

@Suite struct EventLoopRunTests {
    @Test func endOfTurnTargetsRunAfterTheTurnsCallbacksAndNeverKeepTheLoopAlive() throws {
        let loop = try EventLoop()
        let log = Log()
        log.loop = loop
        let first = TurnProbe("first", log)
        first.next = TurnProbe("queued-during-pass", log)
        var timer: UVTimer?
        timer = try UVTimer(loop: loop) {
            loop.atEndOfTurn(first)
            loop.atEndOfTurn(TurnProbe("second", log))
            log.entries.append("timer")
            timer?.close()
        }
        timer?.start(timeout: 1)
        loop.closeInbox()
        loop.run()  // returns once the timer is closed: the check handle does not hold the loop
        #expect(log.entries == ["timer", "end:first", "end:second", "end:queued-during-pass"])
        #expect(loop.finish(), "every handle was closed")
    }

    @Test func busyPollingRelaysAnExchangeAndReturnsOnceEverythingIsClosed() throws {
        let loop = try EventLoop()
        loop.busyPollNanoseconds = 200_000
        var accepted: TCPStream?
        let serverSide = Recorder()
        let listener = try TCPListener(loop: loop, address: SocketAddress(ip: "127.0.0.1", port: 0)) { l in
            accepted = try? l.accept()
            accepted?.delegate = serverSide
            serverSide.echoTo = accepted
            try? accepted?.startReading()
        }
        let client = try TCPStream(loop: loop)
        let clientSide = Recorder()
        client.delegate = clientSide
        try client.connect(to: listener.boundAddress)
        let payload = Array("ping through a busy-polling loop".utf8)
        var sent = false
        var finished = false
        var gaveUp = false
        let watchdog = try UVTimer(loop: loop) {
            gaveUp = true
            loop.stop()
        }
        watchdog.start(timeout: 5000)
        // Everything happens inside `run()`: a 1 ms timer sends once connected, then closes all.
        var poller: UVTimer?
        poller = try UVTimer(loop: loop) {
            if !sent, clientSide.connected == .some(nil) {
                sent = write(payload, to: client) == nil
                try? client.startReading()
            }
            if sent, clientSide.received.count >= payload.count, !finished {
                finished = true
                client.close()
                accepted?.close()
                listener.close()
                watchdog.close()
                poller?.close()
            }
        }
        poller?.start(timeout: 1, repeat: 1)
        loop.closeInbox()
        loop.run()
        #expect(!gaveUp, "the exchange finished and run() returned within 5 s")
        #expect(clientSide.received == payload, "the echo came back intact")
        if gaveUp {
            client.close()
            accepted?.close()
            listener.close()
            poller?.close()
            watchdog.close()
            loop.run()
        }
        #expect(loop.finish(), "every handle was closed")
    }
}
