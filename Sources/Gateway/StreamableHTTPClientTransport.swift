import Foundation
import Logging
import MCP

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// An SDK `Transport` to a Streamable HTTP MCP endpoint.
///
/// Not the SDK's `HTTPClientTransport`: on Linux it cannot read `text/event-stream`, and servers answer POSTed
/// requests on an SSE stream. Each POST's response body is read whole (the server ends that stream once the
/// request is answered) and split into events here. Notifications the server sends on its GET stream are not
/// read: an agent's tool calls do not need them.
public actor StreamableHTTPClientTransport: Transport {
    public nonisolated let logger: Logger
    private let endpoint: URL
    private let session: URLSession
    private var sessionID: String?
    private var protocolVersion: String?
    private let stream: AsyncThrowingStream<Data, Swift.Error>
    private let continuation: AsyncThrowingStream<Data, Swift.Error>.Continuation

    public init(endpoint: URL, logger: Logger? = nil) {
        self.endpoint = endpoint
        self.logger = logger ?? Logger(label: "corral.gateway.http", factory: { _ in SwiftLogNoOpLogHandler() })
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = 3600  // wait_for_background_task may hold a request for long
        session = URLSession(configuration: configuration)
        (stream, continuation) = AsyncThrowingStream.makeStream()
    }

    public func connect() async throws {}

    public func disconnect() async {
        if let sessionID {
            var request = URLRequest(url: endpoint)
            request.httpMethod = "DELETE"
            request.setValue(sessionID, forHTTPHeaderField: "Mcp-Session-Id")
            _ = try? await session.data(for: request)
            self.sessionID = nil
        }
        continuation.finish()
    }

    public func send(_ data: Data) async throws {
        var request = URLRequest(url: endpoint)
        request.httpMethod = "POST"
        request.httpBody = data
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.setValue("application/json, text/event-stream", forHTTPHeaderField: "Accept")
        if let sessionID { request.setValue(sessionID, forHTTPHeaderField: "Mcp-Session-Id") }
        if let protocolVersion { request.setValue(protocolVersion, forHTTPHeaderField: "MCP-Protocol-Version") }
        let body: Data
        let response: URLResponse
        do {
            (body, response) = try await session.data(for: request)
        } catch {
            throw MCPError.transportError(error)
        }
        guard let http = response as? HTTPURLResponse else { throw MCPError.transportError(URLError(.badServerResponse)) }
        if let id = http.value(forHTTPHeaderField: "Mcp-Session-Id") { sessionID = id }
        guard (200..<300).contains(http.statusCode) else {
            // A transport failure, not a JSON-RPC error from the server: the request may or may not have run.
            let text = String(decoding: body.prefix(500), as: UTF8.self)
            throw MCPError.transportError(HTTPStatusError(status: http.statusCode, endpoint: endpoint, body: text))
        }
        let contentType = http.value(forHTTPHeaderField: "Content-Type") ?? ""
        let messages = contentType.hasPrefix("text/event-stream") ? Self.events(in: body) : (body.isEmpty ? [] : [body])
        for message in messages {
            rememberProtocolVersion(message)
            continuation.yield(message)
        }
    }

    public nonisolated func receive() -> AsyncThrowingStream<Data, Swift.Error> { stream }

    /// Later requests must carry the negotiated version.
    private func rememberProtocolVersion(_ message: Data) {
        guard protocolVersion == nil,
            let object = try? JSONSerialization.jsonObject(with: message) as? [String: Any],
            let result = object["result"] as? [String: Any], let version = result["protocolVersion"] as? String
        else { return }
        protocolVersion = version
    }

    /// The `data` of each event in an SSE body (multi-line data joined with newlines, as the SSE spec says).
    static func events(in body: Data) -> [Data] {
        var events: [Data] = []
        var data: [Substring] = []
        let text = String(decoding: body, as: UTF8.self)
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = line.hasSuffix("\r") ? line.dropLast() : line
            if line.isEmpty {
                if !data.isEmpty { events.append(Data(data.joined(separator: "\n").utf8)) }
                data = []
            } else if line.hasPrefix("data:") {
                let value = line.dropFirst(5)
                data.append(value.hasPrefix(" ") ? value.dropFirst() : value)
            }
        }
        if !data.isEmpty { events.append(Data(data.joined(separator: "\n").utf8)) }
        return events.filter { !$0.isEmpty }
    }
}

struct HTTPStatusError: LocalizedError {
    let status: Int
    let endpoint: URL
    let body: String
    var errorDescription: String? { "HTTP \(status) from \(endpoint): \(body)" }
}
