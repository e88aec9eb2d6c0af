import Foundation
import MCPCore

/// A stdio MCP server run as a child process (`ServerProcess`): a thread does blocking reads, and the end of the
/// server's output ends the stream with an error that says how the server ended, and calls `onPeerClosed`.
public actor ChildProcessTransport: MessageTransport {
    private let command: [String]
    private let environment: [String: String]?
    private var server: ServerProcess?
    private let stream: AsyncThrowingStream<Data, any Error>
    private let continuation: AsyncThrowingStream<Data, any Error>.Continuation
    private let onPeerClosed: @Sendable (String) -> Void

    /// `command[0]` is looked up in `PATH`. The server's stderr goes to ours.
    public init(
        command: [String], environment: [String: String]? = nil,
        onPeerClosed: @escaping @Sendable (String) -> Void = { _ in }
    ) throws(TransportError) {
        guard !command.isEmpty else { throw TransportError("empty server command") }
        self.command = command
        self.environment = environment
        (stream, continuation) = AsyncThrowingStream.makeStream()
        self.onPeerClosed = onPeerClosed
    }

    public func connect() async throws(TransportError) {
        guard server == nil else { return }
        let server: ServerProcess
        do {
            server = try ServerProcess(command: command, environment: environment)
        } catch {
            throw TransportError("cannot start \(command[0]): \(error)")
        }
        self.server = server
        let continuation = continuation
        let onPeerClosed = onPeerClosed
        Thread {
            LineReader.readLines(from: server.output) { continuation.yield($0) }
            let reason = "the server " + server.exitDescription()
            continuation.finish(throwing: TransportError(reason))
            onPeerClosed(reason)
        }.start()
    }

    /// Closes the server's input (how a stdio server is asked to stop), then SIGTERM and SIGKILL if it lingers.
    public func disconnect() async {
        await server?.stop(grace: .seconds(2))
    }

    public func send(_ data: Data) async throws(TransportError) {
        guard let server else { throw TransportError("not connected") }
        guard !server.writeLine(data) else { return }
        // The server closed its input, most likely by exiting: say how it ended if it does so soon.
        let deadline = ContinuousClock.now + .seconds(1)
        while server.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(5)) }
        let reason = server.isRunning ? "the server closed its input" : "the server " + server.exitDescription()
        throw TransportError(reason)
    }

    public nonisolated func receive() -> AsyncThrowingStream<Data, any Error> { stream }

    /// The server's process id, once connected (for tests and diagnostics).
    public var pid: Int32? { server?.pid }
}
