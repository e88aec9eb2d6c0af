import Foundation
import MCPCore

/// An `MCPServerCore` in the same process (an agent that embeds its server, tests, benchmarks): messages go through
/// the same connection logic as stdio, without a pipe.
public actor InProcessServerTransport: MessageTransport {
    private let connection: StdioServerConnection
    private let stream: AsyncThrowingStream<Data, any Error>
    private let continuation: AsyncThrowingStream<Data, any Error>.Continuation

    public init(core: MCPServerCore) {
        let (stream, continuation) = AsyncThrowingStream<Data, any Error>.makeStream()
        self.stream = stream
        self.continuation = continuation
        connection = StdioServerConnection(core: core, connectionID: UUID().uuidString.lowercased()) { continuation.yield($0) }
    }

    public func connect() async throws(TransportError) {}

    public func disconnect() async {
        connection.endOfInput()
        continuation.finish()
    }

    public func send(_ data: Data) async throws(TransportError) {
        connection.ingest(data)
    }

    public nonisolated func receive() -> AsyncThrowingStream<Data, any Error> { stream }
}
