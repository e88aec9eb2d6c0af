import CorralJSON
import Foundation
import Logging
import MCPCore
import Synchronization

/// The MCP server behind a proxy: a stdio command it starts (one process per legacy session, one per grant for
/// modern clients), or a Streamable HTTP endpoint it connects to (shared by every proxy instance in front of it,
/// which is what lets several instances serve the same tasks).
public enum UpstreamServer: Sendable, CustomStringConvertible {
    case command([String])
    case url(URL)

    func connect() throws -> any UpstreamConnection {
        switch self {
        case .command(let command): return try ServerProcess(command: command)
        case .url(let url): return HTTPUpstream(url)
        }
    }

    public var description: String {
        switch self {
        case .command(let command): command.joined(separator: " ")
        case .url(let url): url.absoluteString
        }
    }
}

/// One connection to the server: messages in, messages out, in order.
protocol UpstreamConnection: Sendable {
    /// One message for the server.
    func send(_ message: Data) async
    /// What the server sends, one message at a time, until it is gone.
    func messages() -> any AsyncSequence<Data, Never>
    /// The client's input ended: no more messages for the server. A stdio server's input ends at once, and it
    /// shuts down as it would without us, answering what it was asked first. An HTTP server does not see the
    /// client go: the connection ends once `answersOwed` returns, so that no answer the client is owed is cut off.
    func clientEnded(answersOwed: @escaping @Sendable () async -> Void)
    /// Ends the connection (a process gets SIGTERM, then SIGKILL after `grace`).
    func stop(grace: Duration) async
    /// Why it ended, for the errors of requests it still owed.
    func exitDescription() -> String
    /// The descriptor its messages arrive on as lines (a stdio server's output), for a reader that handles each on
    /// its own thread; nil when they come otherwise (HTTP).
    var lineDescriptor: Int32? { get }
}

extension ServerProcess: UpstreamConnection {
    func send(_ message: Data) async {
        writeLine(message)
    }

    /// The lines themselves: a second stream in between would cost every answer another thread hop.
    func messages() -> any AsyncSequence<Data, Never> {
        LineReader.lines(from: output.fileDescriptor)
    }

    func clientEnded(answersOwed: @escaping @Sendable () async -> Void) {
        closeInput()
    }

    var lineDescriptor: Int32? { output.fileDescriptor }
}

/// A Streamable HTTP server as the upstream: each message is POSTed (2026-07-28 ones statelessly, others in the
/// session their `initialize` opened). A request the server cannot be reached for gets a JSON-RPC error, so the
/// client is never left waiting; a request whose answer is slow does not hold up the next one (the transport's
/// `send` does not wait for answers), so requests may reach the server in another order than they were sent, as
/// concurrent HTTP requests do.
final class HTTPUpstream: UpstreamConnection {
    private let transport: StreamableHTTPClientTransport
    private let url: URL
    private let ended = Mutex<String?>(nil)
    private let logger = Logger(label: "corral.proxy")

    init(_ url: URL) {
        self.url = url
        transport = StreamableHTTPClientTransport(endpoint: url)
    }

    func send(_ message: Data) async {
        do {
            try await transport.send(message)
        } catch {
            guard let summary = JSONValue.summarizeMessage(message), summary.method != nil, let id = summary.id else {
                // A notification (a cancellation) or the client's answer to the server's request: no answer of the
                // client's can carry the failure, so it is said here, and counted.
                let what = JSONValue.summarizeMessage(message).map { summary in
                    summary.method ?? "the client's answer to request \(summary.id?.jsonString() ?? "null")"
                } ?? "a batch"
                logger.error("\(what) could not be delivered to the MCP server at \(url.absoluteString): \(error)")
                GatewayMetrics.upstreamMessageLost()
                return
            }
            // Whether the request reached the server is not known (an HTTP error from a proxy in between may come
            // after it ran): marked as a lost answer, the call keeps its counters.
            await transport.answerInPlace(
                of: id, because: "The MCP server at \(url.absoluteString) behind corral proxy cannot be reached: \(error)")
        }
    }

    func messages() -> any AsyncSequence<Data, Never> {
        Messages(upstream: self, transport: transport.receive())
    }

    /// The transport's messages as they come, with no task in between (one would add another thread's wake-up to
    /// every answer); how they ended is kept for `exitDescription`.
    private struct Messages: AsyncSequence {
        typealias Element = Data
        typealias Failure = Never
        let upstream: HTTPUpstream
        let transport: AsyncThrowingStream<Data, any Error>

        struct AsyncIterator: AsyncIteratorProtocol {
            typealias Element = Data
            typealias Failure = Never
            let upstream: HTTPUpstream
            var transport: AsyncThrowingStream<Data, any Error>.AsyncIterator
            var finished = false

            mutating func next() async -> Data? {
                guard !finished else { return nil }
                do {
                    if let message = try await transport.next() { return message }
                    upstream.end("closed the connection")
                } catch {
                    upstream.end("failed: \(error)")
                }
                finished = true
                return nil
            }
        }

        func makeAsyncIterator() -> AsyncIterator {
            AsyncIterator(upstream: upstream, transport: transport.makeAsyncIterator())
        }
    }

    private func end(_ reason: String) {
        ended.withLock { $0 = $0 ?? reason }
    }

    func clientEnded(answersOwed: @escaping @Sendable () async -> Void) {
        let transport = self.transport
        Task {
            await answersOwed()
            await transport.disconnect()
        }
    }

    func stop(grace: Duration) async {
        end("was disconnected")
        await transport.disconnect()
    }

    func exitDescription() -> String { ended.withLock { $0 } ?? "was disconnected" }

    var lineDescriptor: Int32? { nil }
}
