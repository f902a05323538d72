import CLibUV

/// A libuv error code (always negative), with libuv's own name and message.
public struct UVError: Error, Equatable, Hashable, Sendable, CustomStringConvertible {
    public let code: Int32

    public init(_ code: Int32) { self.code = code }

    /// `ECONNREFUSED`, `ETIMEDOUT`, …
    public var name: String { String(cString: uv_err_name(code)) }
    /// `connection refused`, …
    public var message: String { String(cString: uv_strerror(code)) }
    public var description: String { message }

    public static let canceled = UVError(Int32(UV_ECANCELED.rawValue))
    public static let eof = UVError(Int32(UV_EOF.rawValue))
    public static let timedOut = UVError(Int32(UV_ETIMEDOUT.rawValue))
    public static let again = UVError(Int32(UV_EAGAIN.rawValue))
    public static let connectionRefused = UVError(Int32(UV_ECONNREFUSED.rawValue))
    public static let connectionReset = UVError(Int32(UV_ECONNRESET.rawValue))
    public static let brokenPipe = UVError(Int32(UV_EPIPE.rawValue))
    public static let notConnected = UVError(Int32(UV_ENOTCONN.rawValue))
}

extension UVError {
    /// This process or host ran short of something (descriptors, memory, local ports) before a
    /// packet left: not the peer's fault (HAProxy's `SF_ERR_RESOURCE`), so the wiring does not hold
    /// it against a server's health.
    public var isLocalResourceShortage: Bool {
        switch code {
        case Int32(UV_EMFILE.rawValue), Int32(UV_ENFILE.rawValue), Int32(UV_ENOBUFS.rawValue),
             Int32(UV_ENOMEM.rawValue), Int32(UV_EADDRNOTAVAIL.rawValue):
            return true
        default:
            return false
        }
    }

    /// Throws when a libuv call returned an error code.
    @inline(__always)
    static func check(_ rc: Int32) throws(UVError) {
        if rc < 0 { throw UVError(rc) }
    }
}

/// Conversions between libuv's handle "subclasses" (C structs sharing a prefix).
@inline(__always)
func asHandle<T>(_ p: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<uv_handle_t> {
    UnsafeMutableRawPointer(p).assumingMemoryBound(to: uv_handle_t.self)
}

@inline(__always)
func asStream<T>(_ p: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<uv_stream_t> {
    UnsafeMutableRawPointer(p).assumingMemoryBound(to: uv_stream_t.self)
}
