import Foundation

/// A pipe of JSON-RPC messages to one MCP server (a child's stdio, Streamable HTTP, a server in this process), for
/// `MCPClient`. Each `Data` is one message (or batch) without framing.
public protocol MessageTransport: Sendable {
    func connect() async throws(TransportError)
    /// Returns once the message is on its way (over HTTP: once the server accepted the POST).
    func send(_ message: Data) async throws(TransportError)
    /// The server's messages; ends, throwing a `TransportError` that says why, when the server is gone.
    func receive() -> AsyncThrowingStream<Data, any Error>
    func disconnect() async
}

/// Why a transport failed: the server went away, refused the connection, or answered outside JSON-RPC.
public struct TransportError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
