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

    @Test func buffersAreWritableToTheirFullSize() {
        let pool = BufferPool(bufferSize: 4096, maxFree: 1)
        let b = pool.take()
        b.initializeMemory(as: UInt8.self, repeating: 0xAB, count: 4096)
        #expect(b.load(fromByteOffset: 4095, as: UInt8.self) == 0xAB)
        pool.give(b)
    }
}
