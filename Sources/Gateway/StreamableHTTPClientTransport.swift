import AsyncHTTPClient
import CorralJSON
import Foundation
import MCPCore
import MCPHTTP
import NIOCore
import NIOHTTP1

/// A Streamable HTTP MCP endpoint, in both eras: a message carrying the 2026-07-28 `_meta` is POSTed with the
/// `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers and without a session; anything else within the
/// 2025-11-25 session that `initialize` opened.
///
/// Each POST's answer is read as it arrives (AsyncHTTPClient's streamed body, `MCPHTTPClient`), as one JSON body or
/// as SSE events, so a server may send notifications or requests before its answer and get the client's reply while
/// the stream is still open. A JSON-RPC error that comes with a 4xx status (2026-07-28 does that) is delivered as the
/// answer. If a stream ends without the answer, the request gets a JSON-RPC error instead of waiting forever. The GET
/// stream is not opened: an agent's tool calls do not need it.
public actor StreamableHTTPClientTransport: MessageTransport {
    private let endpoint: URL
    private var sessionID: String?
    private var protocolVersion: String?
    /// The id of the `initialize` whose answer names the version (only that answer is read for it).
    private var initializeID: JSONValue?
    /// The POSTs not waited for (requests), so that `disconnect()` can end them.
    private var exchanges: [Int: Task<Void, Never>] = [:]
    private var nextExchange = 0
    private let stream: AsyncThrowingStream<Data, any Error>
    private let continuation: AsyncThrowingStream<Data, any Error>.Continuation

    private let onAnswerLost: @Sendable (JSONValue) -> Void

    /// One event loop of the HTTP client's, where this transport's exchanges run: AsyncHTTPClient then uses that
    /// loop for their connections, and its answers resume them there. On the task pool, the answer's head and its
    /// body each crossed threads (a wake-up each) before `receive()` had the message. The reader of `receive()` is
    /// left on its own executor: what it does with a message (a blocking write to a slow client, a database call)
    /// must not hold up the loop that every connection of the process shares.
    nonisolated let executor: any TaskExecutor

    /// A JSON answer larger than this is refused (a tools/list of thousands of tools is a few MB).
    static let maximumJSONAnswer = 64 << 20

    /// `onAnswerLost` is told the id of each request whose answer never came (it gets a made-up JSON-RPC error,
    /// and the caller may want to know that the call may still have run).
    public init(endpoint: URL, onAnswerLost: @escaping @Sendable (JSONValue) -> Void = { _ in }) {
        self.endpoint = endpoint
        self.onAnswerLost = onAnswerLost
        executor = EventLoopTaskExecutor(MCPHTTPClient.eventLoopGroup.next())
        (stream, continuation) = AsyncThrowingStream.makeStream()
    }

    public func connect() async throws(TransportError) {}

    public func disconnect() async {
        if let sessionID {
            var request = newRequest()
            request.method = .DELETE
            request.headers.add(name: "Mcp-Session-Id", value: sessionID)
            // The answer does not matter; the session is over either way.
            if let response = try? await MCPHTTPClient.shared.execute(request, timeout: .seconds(10)) {
                _ = try? await response.body.collect(upTo: 1 << 20)
            }
            self.sessionID = nil
        }
        for exchange in exchanges.values { exchange.cancel() }
        exchanges.removeAll()
        continuation.finish()
    }

    /// Sends one message. A request other than `initialize` (or a batch with requests) is on its way once this
    /// returns: each answer, or a JSON-RPC error in its place when none can come (the server cannot be reached, an
    /// HTTP error, a stream that ends first), follows through `receive()`; so a server that holds one answer (a JSON
    /// answer to a long wait) does not hold up what the caller sends next. Anything else returns once the server
    /// accepted it (an `initialize`'s answer is in, so its session and version go on what follows), and throws if
    /// it did not.
    public func send(_ data: Data) async throws(TransportError) {
        var request = newRequest()
        request.method = .POST
        request.body = .bytes(ByteBuffer(bytes: data))
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "Accept", value: "application/json, text/event-stream")
        if let modern = Self.modernHeaders(data) {
            for (name, value) in modern { request.headers.replaceOrAdd(name: name, value: value) }
        } else {
            if let sessionID { request.headers.add(name: "Mcp-Session-Id", value: sessionID) }
            if let protocolVersion { request.headers.add(name: "MCP-Protocol-Version", value: protocolVersion) }
        }
        let summary = JSONValue.summarizeMessage(data)
        let owed = Self.requestIDs(data, summary)
        if summary?.method == "initialize" { initializeID = summary?.id }
        if !owed.isEmpty, summary?.method != "initialize" {
            let key = nextExchange
            nextExchange += 1
            exchanges[key] = Task(executorPreference: executor) {
                await self.exchange(request, accepted: nil, answering: owed, key: key)
            }
            return
        }
        let prepared = request
        do {
            try await withCheckedThrowingContinuation { (accepted: CheckedContinuation<Void, Error>) in
                Task(executorPreference: executor) { await self.exchange(prepared, accepted: accepted, answering: owed) }
            }
        } catch {
            throw (error as? TransportError) ?? TransportError("\(error)")
        }
    }

    /// The ids of the requests a message carries: its own, or those of a batch's requests.
    static func requestIDs(_ data: Data, _ summary: JSONMessageSummary?) -> Set<JSONValue> {
        if let summary {
            guard summary.method != nil, let id = summary.id else { return [] }
            return [id]
        }
        guard data.first(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }) == UInt8(ascii: "["),
            let batch = (try? JSONValue.parse(data))?.arrayValue
        else { return [] }
        return Set(batch.compactMap { $0["method"] != nil ? $0["id"] : nil })
    }

    /// A request to the endpoint, with Basic credentials when its URL carries them (`http://user:password@host/mcp`,
    /// which libcurl used to send and AsyncHTTPClient does not on its own).
    private func newRequest() -> HTTPClientRequest {
        var request = HTTPClientRequest(url: endpoint.absoluteString)
        if let user = endpoint.user(percentEncoded: false) {
            request.setBasicAuth(username: user, password: endpoint.password(percentEncoded: false) ?? "")
        }
        return request
    }

    /// The headers of a 2026-07-28 message (nil for anything else): the version, the method and, for named methods,
    /// the name (base64-wrapped when it is not plain ASCII).
    public static func modernHeaders(_ data: Data) -> [String: String]? {
        guard let message = try? JSONValue.parse(data), let method = message["method"]?.stringValue,
            let params = message["params"], params.hasModernEnvelope,
            let version = params["_meta"]?[MetaKey.protocolVersion]?.stringValue
        else { return nil }
        var headers = ["MCP-Protocol-Version": version, "Mcp-Method": method]
        if let key = ModernEnvelope.nameKey(for: method), let name = params[key]?.stringValue {
            headers["Mcp-Name"] = HeaderValueCodec.encode(name)
        }
        return headers
    }

    public nonisolated func receive() -> AsyncThrowingStream<Data, any Error> { stream }

    /// Sends one POST and reads its answer. `accepted`, when given, is resumed exactly once: when an event stream
    /// opens, or when the whole answer (or the failure) is in; without it, a failure becomes the request's answer.
    private func exchange(
        _ request: HTTPClientRequest, accepted: CheckedContinuation<Void, Error>?, answering owed: Set<JSONValue>,
        key: Int? = nil
    ) async {
        // Runs on the actor, which `send` holds until it has filed the exchange under `key`.
        defer { if let key { exchanges[key] = nil } }
        var owed = owed
        func fail(_ reason: String) {
            if let accepted {
                accepted.resume(throwing: TransportError(reason))
            } else {
                answerLost(owed, reason)
            }
        }
        let response: HTTPClientResponse
        do {
            response = try await MCPHTTPClient.shared.execute(request, timeout: MCPHTTPClient.requestTimeout)
        } catch {
            return fail("no HTTP response from \(endpoint): \(error)")
        }
        if let id = response.headers.first(name: "Mcp-Session-Id") { sessionID = id }
        let status = Int(response.status.code)
        guard (200..<300).contains(status) else {
            let data = await Self.prefix(of: response.body, limit: 4096)
            // A JSON-RPC error under the request's id is the server's answer (2026-07-28 sends errors with 4xx);
            // anything else is a transport failure, after which the request may or may not have run.
            if let summary = JSONValue.summarizeMessage(data), summary.hasError, let id = summary.id, owed.contains(id) {
                deliver(data, owed: &owed)
                accepted?.resume()
                return answerLost(owed, "the server's answer did not carry the request's id")  // a batch's others
            }
            let text = String(decoding: data.prefix(500), as: UTF8.self)
            return fail("HTTP \(status) from \(endpoint): \(text)")
        }
        if (response.headers.first(name: "Content-Type") ?? "").hasPrefix("text/event-stream") {
            accepted?.resume()  // the events follow as they come
            await readEvents(response.body, owed: owed)
            return
        }
        let body: ByteBuffer
        do {
            body = try await response.body.collect(upTo: Self.maximumJSONAnswer)
        } catch {
            return fail("the answer from \(endpoint) could not be read: \(error)")
        }
        let data = Data(body.readableBytesView)
        if !data.isEmpty { deliver(data, owed: &owed) }
        accepted?.resume()
        answerLost(owed, "the server's answer did not carry the request's id")
    }

    /// An event stream's messages, delivered as they arrive; the request's answer must be among them.
    private func readEvents(_ body: HTTPClientResponse.Body, owed: Set<JSONValue>) async {
        var owed = owed
        var parser = SSEParser()
        do {
            for try await chunk in body {
                for message in parser.feed(Data(chunk.readableBytesView)) { deliver(message, owed: &owed) }
            }
            for message in parser.finish() { deliver(message, owed: &owed) }
            answerLost(owed, "the server's event stream ended before the answer")
        } catch {
            answerLost(owed, "the server's event stream failed: \(error)")
        }
    }

    /// Hands a server message to the client, and takes the ids it answers (one, or a batch's) off `owed`.
    private func deliver(_ message: Data, owed: inout Set<JSONValue>) {
        if let summary = JSONValue.summarizeMessage(message) {
            if summary.method == nil, let id = summary.id {
                owed.remove(id)
                if id == initializeID { rememberProtocolVersion(message) }
            }
        } else if !owed.isEmpty, let batch = (try? JSONValue.parse(message))?.arrayValue {
            for answer in batch where answer["method"] == nil { if let id = answer["id"] { owed.remove(id) } }
        }
        continuation.yield(message)
    }

    /// The first `limit` bytes of a body (the rest is read and dropped, so the connection can be reused); what a
    /// failed read left is what there is.
    private static func prefix(of body: HTTPClientResponse.Body, limit: Int) async -> Data {
        var data = Data()
        do {
            for try await chunk in body where data.count < limit {
                data.append(contentsOf: chunk.readableBytesView.prefix(limit - data.count))
            }
        } catch {}
        return data
    }

    /// Puts a JSON-RPC error in the place of the answer to `id`, which will not come (for a caller whose `send`
    /// threw: an `initialize` the server did not accept).
    public func answerInPlace(of id: JSONValue, because reason: String) {
        answerLost([id], reason)
    }

    /// The request will get no answer on its stream: a JSON-RPC error in its place, so its caller is not left waiting.
    private func answerLost(_ owed: Set<JSONValue>, _ reason: String) {
        for requestID in owed {
            onAnswerLost(requestID)
            let message = JSONRPC.error(
                id: requestID, JSONRPCError(code: JSONRPCError.internalErrorCode, message: reason, data: [MCPClient.answerLostKey: true]))
            continuation.yield(Data(message.jsonString().utf8))
        }
    }

    /// Later requests must carry the negotiated version. It is read from the `initialize` answer alone: looking
    /// for it in every answer cost a full parse of each (a 2026-07-28 client never sends `initialize`).
    private func rememberProtocolVersion(_ message: Data) {
        initializeID = nil
        guard let version = (try? JSONValue.parse(message))?["result"]?["protocolVersion"]?.stringValue else { return }
        protocolVersion = version
    }
}

/// Splits an SSE byte stream into the `data` of its events (multi-line data joined with newlines, as the SSE spec
/// says), however the bytes are chunked.
struct SSEParser {
    private var pending = Data()
    private var data: [Substring] = []

    mutating func feed(_ chunk: Data) -> [Data] {
        pending.append(chunk)
        var events: [Data] = []
        while let newline = pending.firstIndex(of: 0x0A) {
            var line = String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)[...]
            pending = Data(pending[pending.index(after: newline)...])
            if line.hasSuffix("\r") { line = line.dropLast() }
            if line.isEmpty {
                if let event = dispatch() { events.append(event) }
            } else if line.hasPrefix("data:") {
                let value = line.dropFirst(5)
                data.append(value.hasPrefix(" ") ? value.dropFirst() : value)
            }  // event:, id:, retry: and comments carry nothing a client needs here
        }
        return events
    }

    /// What is left when the stream ends (an event without its blank line).
    mutating func finish() -> [Data] {
        if !pending.isEmpty { _ = feed(Data([0x0A])) }
        return dispatch().map { [$0] } ?? []
    }

    private mutating func dispatch() -> Data? {
        defer { data = [] }
        guard !data.isEmpty else { return nil }
        let event = Data(data.joined(separator: "\n").utf8)
        return event.isEmpty ? nil : event
    }
}
