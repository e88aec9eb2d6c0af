import AsyncHTTPClient
import NIOCore
import NIOPosix

/// The HTTP client every Streamable HTTP MCP transport of a process shares (AsyncHTTPClient over NIO).
///
/// Not Foundation's URLSession: on Linux it runs over libcurl, where requests stalling under concurrency are known
/// (swift-corelibs-foundation #3287, #3876), and a request of `corral proxy --http` to its server once stalled
/// for minutes behind it: no connection to the server left, the client's answer stream kept open by keep-alives.
/// NIO sees a server close an idle connection as it happens and drops it from the pool, and the pool is ours to
/// size. One client for the process, never shut down (a global is never deinitialised), as `HTTPClient.shared`
/// is, with a configuration of its own.
enum MCPHTTPClient {
    static let eventLoopGroup = MultiThreadedEventLoopGroup.singleton
    static let shared = HTTPClient(eventLoopGroup: eventLoopGroup, configuration: configuration)

    /// How long a request may wait for its answer's head, and an answer stream for its next byte:
    /// `wait_for_background_task` may hold a request for long.
    static let requestTimeout = TimeAmount.hours(1)

    static var configuration: HTTPClient.Configuration {
        var pool = HTTPClient.Configuration.ConnectionPool(
            // Shorter than a server's usual idle close (allcanuse-mock's and many others' 60 s), so that the client,
            // not the server, ends an idle connection; no cap that long waits could exhaust (the default is 8 per host).
            idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 4096)
        // A server that refuses the connection fails the call at once, as it did before; a caller may retry.
        pool.retryConnectionEstablishment = false
        var configuration = HTTPClient.Configuration(
            // The deadline of `execute` ends with the answer's head; a body (an event stream) is bounded by the
            // read timeout instead: an hour without a byte, as URLSession's request timeout was.
            timeout: .init(connect: .seconds(10), read: requestTimeout),
            connectionPool: pool)
        // HTTP/1.1 only: a long call holds a connection of its own, where HTTP/2 would queue calls past the server's
        // stream limit behind one connection.
        configuration.httpVersion = .http1Only
        return configuration
    }
}
