import CorralJSON
import Glibc

/// `wait_port` / `wait_for_port`: a TCP port accepts connections (or no longer does).
public struct PortCondition: Sendable, Equatable {
    public enum State: String, Sendable, CaseIterable { case open, closed }

    public var host: String
    public var port: Int
    public var state: State
    public var connectTimeoutMilliseconds: Int

    static let fields: Set<String> = ["host", "port", "state", "connect_timeout_ms"]

    init(_ reader: FieldReader) throws(ConditionError) {
        try reader.allowOnly(Self.fields)
        host = try reader.string("host")
        guard !host.isEmpty else { throw reader.error("host must not be empty") }
        guard let port = try reader.optionalInt("port") else { throw reader.error("missing required field port") }
        guard (1...65535).contains(port) else { throw reader.error("port must be between 1 and 65535, got \(port)") }
        self.port = port
        state = try reader.choice("state", default: State.open)
        connectTimeoutMilliseconds = try reader.positiveInt("connect_timeout_ms", default: 1500)
    }

    var jsonValue: JSONValue {
        [
            "host": .string(host), "port": .int(port), "state": .string(state.rawValue),
            "connect_timeout_ms": .int(connectTimeoutMilliseconds),
        ]
    }

    public func check() -> CheckResult {
        let outcome = TCPConnection.open(host: host, port: port, timeoutMilliseconds: connectTimeoutMilliseconds)
        var error = ""
        switch outcome {
        case .success(let fd): close(fd)
        case .failure(let failure): error = failure.message
        }
        let isOpen = error.isEmpty
        return CheckResult(
            conditionMet: state == .open ? isOpen : !isOpen,
            lastResult: [
                "host": .string(host), "port": .int(port), "state": .string(state.rawValue), "is_open": .bool(isOpen),
                "error": .string(error),
            ])
    }
}

/// A connection attempt that failed, and why.
struct ConnectFailure: Error {
    var message: String
}

/// A TCP connection with a deadline, to every address the host resolves to in turn.
enum TCPConnection {
    static func open(host: String, port: Int, timeoutMilliseconds: Int) -> Result<Int32, ConnectFailure> {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let first = list else {
            return .failure(ConnectFailure(message: "cannot resolve \(host): \(String(cString: gai_strerror(status)))"))
        }
        defer { freeaddrinfo(first) }
        var lastError = ECONNREFUSED
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let current = entry {
            entry = current.pointee.ai_next
            let fd = socket(current.pointee.ai_family, current.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), current.pointee.ai_protocol)
            guard fd >= 0 else {
                lastError = errno
                continue
            }
            if connect(fd, current.pointee.ai_addr, current.pointee.ai_addrlen) == 0 {
                return .success(fd)
            }
            guard errno == EINPROGRESS else {
                lastError = errno
                close(fd)
                continue
            }
            var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            let ready = poll(&poller, 1, Int32(clamping: timeoutMilliseconds))
            if ready == 0 {
                close(fd)
                return .failure(ConnectFailure(message: "connect to \(host):\(port) timed out after \(timeoutMilliseconds) ms"))
            }
            var code: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &length)
            if ready > 0 && code == 0 { return .success(fd) }
            lastError = code != 0 ? code : errno
            close(fd)
        }
        return .failure(ConnectFailure(message: "connect to \(host):\(port): \(String(cString: strerror(lastError)))"))
    }
}
