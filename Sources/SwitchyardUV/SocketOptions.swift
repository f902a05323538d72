import CLibUV
#if canImport(Glibc)
import Glibc
#endif

// Socket calls that libuv does not wrap, shared by `TCPStream` and `SpliceRelay`.

/// The socket's pending error (`SO_ERROR`, which reading it clears); nil if there is none.
func takePendingSocketError(_ fd: Int32) -> UVError? {
    var value: Int32 = 0
    var length = socklen_t(MemoryLayout<Int32>.size)
    guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &length) == 0, value != 0 else { return nil }
    return UVError(-value)
}

/// Makes the next close of `fd` send a reset (RST) instead of a FIN.
func setLingerZero(_ fd: Int32) {
    var option = linger(l_onoff: 1, l_linger: 0)
    _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, socklen_t(MemoryLayout<linger>.size))
}

/// Bytes in the socket's kernel send queue that the peer has not acknowledged yet (`SIOCOUTQ`);
/// 0 if the call fails.
func unacknowledgedSendBytes(_ fd: Int32) -> Int {
    Int(max(0, switchyard_socket_unacked(fd)))
}
