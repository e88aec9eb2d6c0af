import Foundation
import Logging
import MCP
import MCPCore

/// An SDK `Transport` to a stdio MCP server run as a child process (`ServerProcess`).
///
/// Not the SDK's `StdioTransport`: that one polls a non-blocking fd and sleeps 10 ms whenever it is empty, which
/// adds up to 10 ms to every call, and it finishes its stream quietly at EOF, after which the SDK client spins.
/// Here a thread does blocking reads, and the end of the server's output ends the stream with an error and calls
/// `onPeerClosed`.
public actor ChildProcessTransport: Transport {
    public nonisolated let logger: Logger
    private let command: [String]
    private let environment: [String: String]?
    private var server: ServerProcess?
    private let stream: AsyncThrowingStream<Data, Swift.Error>
    private let continuation: AsyncThrowingStream<Data, Swift.Error>.Continuation
    private let onPeerClosed: @Sendable (String) -> Void

    /// `command[0]` is looked up in `PATH`. The server's stderr goes to ours.
    public init(
        command: [String], environment: [String: String]? = nil, logger: Logger? = nil,
        onPeerClosed: @escaping @Sendable (String) -> Void = { _ in }
    ) throws {
        guard !command.isEmpty else { throw MCPError.internalError("empty server command") }
        self.logger = logger ?? Logger(label: "corral.gateway.child", factory: { _ in SwiftLogNoOpLogHandler() })
        self.command = command
        self.environment = environment
        (stream, continuation) = AsyncThrowingStream.makeStream()
        self.onPeerClosed = onPeerClosed
    }

    public func connect() async throws {
        guard server == nil else { return }
        let server: ServerProcess
        do {
            server = try ServerProcess(command: command, environment: environment)
        } catch {
            throw MCPError.transportError(error)
        }
        self.server = server
        let continuation = continuation
        let onPeerClosed = onPeerClosed
        Thread {
            LineReader.readLines(from: server.output) { continuation.yield($0) }
            let reason = "the server " + server.exitDescription()
            continuation.finish(throwing: MCPError.transportError(PeerClosed(reason: reason)))
            onPeerClosed(reason)
        }.start()
    }

    /// Closes the server's input (how a stdio server is asked to stop), then SIGTERM and SIGKILL if it lingers.
    public func disconnect() async {
        await server?.stop(grace: .seconds(2))
    }

    public func send(_ data: Data) async throws {
        guard let server else { throw MCPError.connectionClosed }
        guard !server.send(data) else { return }
        // The server closed its input, most likely by exiting: say how it ended if it does so soon.
        let deadline = ContinuousClock.now + .seconds(1)
        while server.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(5)) }
        let reason = server.isRunning ? "the server closed its input" : "the server " + server.exitDescription()
        throw MCPError.transportError(PeerClosed(reason: reason))
    }

    public nonisolated func receive() -> AsyncThrowingStream<Data, Swift.Error> { stream }

    /// The server's process id, once connected (for tests and diagnostics).
    public var pid: Int32? { server?.pid }
}

struct PeerClosed: LocalizedError, CustomStringConvertible {
    let reason: String
    var description: String { reason }
    var errorDescription: String? { reason }
}
