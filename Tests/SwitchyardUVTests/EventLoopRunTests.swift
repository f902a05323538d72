import Dispatch
import Foundation
import Synchronization
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

/// Jobs run by the loop, counted from any thread.
private final class JobCounter: Sendable {
    let ran = Atomic<Int>(0)
    let submitted = Atomic<Int>(0)
    let stop = Atomic<Bool>(false)
}

@Suite struct EventLoopInboxTests {
    /// Other threads keep submitting work while the loop closes its inbox and frees the wake-up
    /// handle: no submission may reach the freed handle (a crash or heap corruption), work that
    /// came before the close ran, and work after it is dropped.
    @Test func executeFromOtherThreadsRacesSafelyWithClosingTheInbox() throws {
        for _ in 0..<40 {
            let loop = try EventLoop()
            let counter = JobCounter()
            let senders = DispatchGroup()
            for _ in 0..<2 {
                // Threads of their own: on 2 cores the global queue's threads may all be taken by
                // other tests, and the senders would not start before the close gives up.
                senders.enter()
                Thread.detachNewThread {
                    while !counter.stop.load(ordering: .relaxed) {
                        loop.execute { counter.ran.add(1, ordering: .relaxed) }
                        counter.submitted.add(1, ordering: .relaxed)
                    }
                    senders.leave()
                }
            }
            // Close from a job once the senders' work is flowing: the loop then runs out of
            // handles and returns while the senders are still submitting.
            let giveUp = ContinuousClock.now + .seconds(5)
            @Sendable func closeWhenBusy() {
                if counter.ran.load(ordering: .relaxed) >= 100 || ContinuousClock.now > giveUp {
                    loop.closeInbox()
                } else {
                    loop.execute(closeWhenBusy)
                }
            }
            loop.execute(closeWhenBusy)
            loop.run()
            #expect(counter.ran.load(ordering: .relaxed) >= 100, "work from other threads ran before the close")
            let afterClose = counter.ran.load(ordering: .relaxed)
            // The wake-up handle is closed and freed now; let the senders submit a while longer.
            let submittedAtClose = counter.submitted.load(ordering: .relaxed)
            let deadline = ContinuousClock.now + .seconds(5)
            while counter.submitted.load(ordering: .relaxed) < submittedAtClose + 1000 && ContinuousClock.now < deadline {}
            counter.stop.store(true, ordering: .relaxed)
            senders.wait()
            #expect(counter.ran.load(ordering: .relaxed) == afterClose, "no work runs after the close")
            #expect(loop.finish(), "every handle was closed")
        }
    }
}
