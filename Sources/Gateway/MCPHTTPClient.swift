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
    static let shared = HTTPClient(eventLoopGroup: MultiThreadedEventLoopGroup.singleton, configuration: configuration)

    /// How long one request and its answer stream may take: `wait_for_background_task` may hold a request for long.
    static let requestTimeout = TimeAmount.hours(1)

    static var configuration: HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration(
            timeout: .init(connect: .seconds(10), read: nil),
            // Shorter than a server's usual idle close (allcanuse-mock's and many others' 60 s), so that the client,
            // not the server, ends an idle connection; no cap that long waits could exhaust (the default is 8 per host).
            connectionPool: .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 4096))
        configuration.httpVersion = .automatic
        return configuration
    }
}
