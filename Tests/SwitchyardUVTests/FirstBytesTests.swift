// The stream primitives behind the relay's connection-setup shortcuts: holding the handshake's last
// ACK for the first bytes (`setQuickAck`), reading what the kernel already holds outside libuv's
// reading (`readNow`), and sending the last bytes with the FIN in one segment (`write(endFollows:)`).
import Testing
import Glibc
@testable import SwitchyardUV

/// `tcpi_segs_out` of a socket: segments sent so far, ACKs included (struct tcp_info in
/// <linux/tcp.h>: 8 bytes of flags, 24 × u32, 4 × u64, then segs_out).
private func segmentsSent(_ stream: TCPStream) throws -> UInt32 {
    let fd = try stream.fileDescriptor()
    var info = [UInt8](repeating: 0, count: 256)
    var length = socklen_t(info.count)
    let rc = info.withUnsafeMutableBytes { getsockopt(fd, Int32(IPPROTO_TCP), TCP_INFO, $0.baseAddress, &length) }
    #expect(rc == 0 && length >= 144, "TCP_INFO: rc \(rc), \(length) bytes")
    return info.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 136, as: UInt32.self) }
}

@Suite struct FirstBytesTests {
    @Test func readNowFindsNothingThenTheBytesThenTheEndWhichLibuvStillSees() throws {
        let loop = try EventLoop()
        let pair = try ConnectedPair(loop, clientFamily: .ipv4)
        let (client, server, serverSide) = (pair.client, pair.server, pair.serverSide)
        var buffer = [UInt8](repeating: 0, count: 64)

        #expect(try buffer.withUnsafeMutableBytes { try server.readNow(into: $0.baseAddress!, capacity: 64) } == nil,
                "nothing sent yet: no bytes, no end")

        #expect(write([7, 8, 9], to: client) == nil)
        var got: Int?
        runLoop(loop) {
            got = try? buffer.withUnsafeMutableBytes { try server.readNow(into: $0.baseAddress!, capacity: 64) }
            return got != nil
        }
        #expect(got == 3)
        #expect(Array(buffer.prefix(3)) == [7, 8, 9])

        #expect(try client.shutdown())
        runLoop(loop) {
            got = try? buffer.withUnsafeMutableBytes { try server.readNow(into: $0.baseAddress!, capacity: 64) }
            return got != nil
        }
        #expect(got == 0, "the client's FIN reads as end of stream")

        // The relay leaves an end found this way for libuv's reading to find again.
        try server.startReading()
        runLoop(loop) { serverSide.eof }
        #expect(serverSide.received.isEmpty)

        pair.closeAll(loop)
    }

    @Test(arguments: [true, false])
    func bytesWrittenWithEndFollowingLeaveWithTheFIN(endFollows: Bool) throws {
        let loop = try EventLoop()
        let pair = try ConnectedPair(loop)
        let (client, clientSide, server) = (pair.client, pair.clientSide, pair.server)
        try client.startReading()
        try server.setNoDelay(true)
        let before = try segmentsSent(server)

        let payload: [UInt8] = Array("HTTP/1.0 200 OK\r\n\r\nbye".utf8)
        let buffer = loop.buffers.take()
        payload.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: payload.count) }
        #expect(server.write(buffer: buffer, count: payload.count, endFollows: endFollows) == nil)
        #expect(server.queuedBytes == 0, "a small write goes straight to the kernel")
        #expect(try server.shutdown())
        runLoop(loop) { clientSide.eof }
        #expect(clientSide.received == payload, "every byte arrives before the end")

        let sent = try segmentsSent(server) &- before
        #expect(sent == (endFollows ? 1 : 2),
                "endFollows \(endFollows): \(sent) segments for the bytes and the FIN")

        pair.closeAll(loop)
    }

    /// A client socket connected with `TCP_QUICKACK` off: the kernel holds the handshake's last
    /// ACK. `sendBytes`: the ACK leaves with them (SYN + one segment). Otherwise turning quick ACK
    /// back on sends it within the call. (Either check can only be misled by the test thread
    /// stalling for 200 ms, the delayed-ACK timer, between the connect and the check.)
    @Test(arguments: [true, false])
    func aHeldHandshakeAckLeavesWithTheFirstBytesOrWhenQuickAckIsBack(sendBytes: Bool) throws {
        let loop = try EventLoop()
        var accepted: TCPStream?
        let listener = try TCPListener(loop: loop, address: SocketAddress(ip: "127.0.0.1", port: 0)) { l in
            accepted = try? l.accept()
        }
        let client = try TCPStream(loop: loop, family: .ipv4)
        let clientSide = Recorder()
        client.delegate = clientSide
        try client.setQuickAck(false)
        try client.connect(to: listener.boundAddress)
        runLoop(loop) { clientSide.connected != nil }
        #expect(clientSide.connected == .some(nil))
        #expect(try segmentsSent(client) == 1, "connected, and only the SYN has left: the ACK is held")

        if sendBytes {
            #expect(write([1, 2, 3], to: client) == nil)
            #expect(try segmentsSent(client) == 2, "the bytes carried the ACK: no segment of its own")
        } else {
            try client.setQuickAck(true)
            #expect(try segmentsSent(client) == 2, "quick ACK on again: the held ACK left at once")
        }
        runLoop(loop) { accepted != nil }
        let server = try #require(accepted)
        let serverSide = Recorder()
        server.delegate = serverSide
        try server.startReading()
        if sendBytes {
            runLoop(loop) { serverSide.received.count == 3 }
            #expect(serverSide.received == [1, 2, 3])
        }
        client.close()
        server.close()
        listener.close()
        runLoop(loop) { clientSide.closed && serverSide.closed }
        closeLoop(loop)
    }
}
