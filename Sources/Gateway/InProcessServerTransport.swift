import Foundation
import Logging
import MCP
import MCPCore

/// An SDK `Transport` to an `MCPServerCore` in the same process (an agent that embeds its server, tests,
/// benchmarks): messages go through the same connection logic as stdio, without a pipe.
public actor InProcessServerTransport: Transport {
    public nonisolated let logger: Logger
    private let connection: StdioServerConnection
    private let stream: AsyncThrowingStream<Data, Swift.Error>
    private let continuation: AsyncThrowingStream<Data, Swift.Error>.Continuation

    public init(core: MCPServerCore, logger: Logger? = nil) {
        self.logger = logger ?? Logger(label: "corral.gateway.inprocess", factory: { _ in SwiftLogNoOpLogHandler() })
        let (stream, continuation) = AsyncThrowingStream<Data, Swift.Error>.makeStream()
        self.stream = stream
        self.continuation = continuation
        connection = StdioServerConnection(core: core, connectionID: UUID().uuidString.lowercased()) { continuation.yield($0) }
    }

    public func connect() async throws {}

    public func disconnect() async {
        connection.endOfInput()
        continuation.finish()
    }

    public func send(_ data: Data) async throws {
        connection.ingest(data)
    }

    public nonisolated func receive() -> AsyncThrowingStream<Data, Swift.Error> { stream }
}
