import Testing
@testable import SwitchyardUV

@Suite struct BufferPoolTests {
    @Test func buffersAreRecycled() {
        let pool = BufferPool(bufferSize: 1024, maxFree: 2)
        let a = pool.take()
        let b = pool.take()
        #expect(pool.outstanding == 2)
        pool.give(a)
        #expect(pool.outstanding == 1)
        #expect(pool.freeCount == 1)
        let c = pool.take()
        #expect(c == a, "a returned buffer is handed out again before a new one is allocated")
        pool.give(b)
        pool.give(c)
        #expect(pool.outstanding == 0)
    }

    @Test func freeListIsCapped() {
        let pool = BufferPool(bufferSize: 64, maxFree: 2)
        let buffers = (0..<5).map { _ in pool.take() }
        for b in buffers { pool.give(b) }
        #expect(pool.freeCount == 2, "beyond maxFree, returned buffers are freed, not cached")
        #expect(pool.outstanding == 0)
    }

    @Test("releaseUnused frees what no one took since the last call, and keeps what a steady load uses")
    func unusedBuffersAreReleased() {
        let pool = BufferPool(bufferSize: 64, maxFree: 100)
        // A burst: 50 buffers at once, all back.
        let burst = (0..<50).map { _ in pool.take() }
        for b in burst { pool.give(b) }
        #expect(pool.freeCount == 50)
        // The interval of the burst: the free list was empty at its lowest; nothing goes.
        #expect(pool.releaseUnused() == 0)
        #expect(pool.freeCount == 50)
        // A steady load of 5 at a time through the next interval: 45 sat unused all along.
        for _ in 0..<3 {
            let load = (0..<5).map { _ in pool.take() }
            for b in load { pool.give(b) }
        }
        #expect(pool.releaseUnused() == 45)
        #expect(pool.freeCount == 5)
        // Still the same load: it keeps its 5.
        let load = (0..<5).map { _ in pool.take() }
        for b in load { pool.give(b) }
        #expect(pool.releaseUnused() == 0)
        #expect(pool.freeCount == 5)
        // Idle for an interval: the rest goes too.
        #expect(pool.releaseUnused() == 5)
        #expect(pool.freeCount == 0 && pool.outstanding == 0)
    }

    @Test("The loop frees a burst's buffers once it is over (on its trim timer, which keeps no loop alive)")
    func loopReleasesABurstsBuffers() throws {
        let loop = try EventLoop(bufferSize: 1024, trimIntervalMilliseconds: 20)
        let burst = (0..<40).map { _ in loop.buffers.take() }
        for b in burst { loop.buffers.give(b) }
        #expect(loop.buffers.freeCount == 40)
        runLoop(loop, until: { loop.buffers.freeCount == 0 })
        #expect(loop.buffersReleased == 40)
        closeLoop(loop)
    }

    @Test func buffersAreWritableToTheirFullSize() {
        let pool = BufferPool(bufferSize: 4096, maxFree: 1)
        let b = pool.take()
        b.initializeMemory(as: UInt8.self, repeating: 0xAB, count: 4096)
        #expect(b.load(fromByteOffset: 4095, as: UInt8.self) == 0xAB)
        pool.give(b)
    }
}
