import CorralJSON
import Foundation
import MCPCore
import Synchronization

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A Streamable HTTP MCP endpoint, in both eras: a message carrying the 2026-07-28 `_meta` is POSTed with the
/// `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers and without a session; anything else within the
/// 2025-11-25 session that `initialize` opened.
///
/// Each POST's answer is read as it arrives (a URLSession data delegate), as one JSON body or as SSE events, so a
/// server may send notifications or requests before its answer and get the client's reply while the stream is still
/// open. A JSON-RPC error that comes with a 4xx status (2026-07-28 does that) is delivered as the answer. If a stream
/// ends without the answer, the request gets a JSON-RPC error instead of waiting forever. The GET stream is not
/// opened: an agent's tool calls do not need it.
public actor StreamableHTTPClientTransport: MessageTransport {
    private let endpoint: URL
    private let session: URLSession
    private let delegate: StreamingDelegate
    private var sessionID: String?
    private var protocolVersion: String?
    private let stream: AsyncThrowingStream<Data, any Error>
    private let continuation: AsyncThrowingStream<Data, any Error>.Continuation

    private let onAnswerLost: @Sendable (JSONValue) -> Void

    /// `onAnswerLost` is told the id of each request whose answer never came (it gets a made-up JSON-RPC error,
    /// and the caller may want to know that the call may still have run).
    public init(endpoint: URL, onAnswerLost: @escaping @Sendable (JSONValue) -> Void = { _ in }) {
        self.endpoint = endpoint
        self.onAnswerLost = onAnswerLost
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = 3600  // wait_for_background_task may hold a request for long
        delegate = StreamingDelegate()
        session = URLSession(configuration: configuration, delegate: delegate, delegateQueue: nil)
        (stream, continuation) = AsyncThrowingStream.makeStream()
    }

    public func connect() async throws(TransportError) {}

    public func disconnect() async {
        if let sessionID {
            var request = URLRequest(url: endpoint)
            request.httpMethod = "DELETE"
            request.setValue(sessionID, forHTTPHeaderField: "Mcp-Session-Id")
            let task = session.dataTask(with: request)
            let events = delegate.events(for: task)
            task.resume()
            do {
                for try await _ in events {}  // the answer does not matter; the session is over either way
            } catch {}
            self.sessionID = nil
        }
        session.finishTasksAndInvalidate()  // a URLSession keeps its delegate until invalidated
        continuation.finish()
    }

    /// Returns once the server accepted the message: for an answer on an SSE stream, when the stream opens (its
    /// events follow through `receive()`); for a JSON answer or a failure, when the body is complete.
    public func send(_ data: Data) async throws(TransportError) {
        var request = URLRequest(url: endpoint)
        request.httpMethod = "POST"
        request.httpBody = data
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.setValue("application/json, text/event-stream", forHTTPHeaderField: "Accept")
        if let modern = Self.modernHeaders(data) {
            for (name, value) in modern { request.setValue(value, forHTTPHeaderField: name) }
        } else {
            if let sessionID { request.setValue(sessionID, forHTTPHeaderField: "Mcp-Session-Id") }
            if let protocolVersion { request.setValue(protocolVersion, forHTTPHeaderField: "MCP-Protocol-Version") }
        }
        let summary = JSONValue.summarizeMessage(data)
        let requestID = summary?.method != nil ? summary?.id : nil
        let task = session.dataTask(with: request)
        let events = delegate.events(for: task)
        task.resume()
        do {
            try await withCheckedThrowingContinuation { (accepted: CheckedContinuation<Void, Error>) in
                Task { await self.read(events, accepted: accepted, answering: requestID) }
            }
        } catch {
            throw (error as? TransportError) ?? TransportError("\(error.localizedDescription)")
        }
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

    private enum Body {
        case awaitingHead
        case json(Data)
        case sse(SSEParser)
        case failed(HTTPURLResponse, Data)
    }

    /// Reads one POST's response; resumes `accepted` exactly once.
    private func read(
        _ events: AsyncThrowingStream<StreamingDelegate.Event, Error>, accepted: CheckedContinuation<Void, Error>,
        answering requestID: JSONValue?
    ) async {
        var body = Body.awaitingHead
        var answered = false
        func deliver(_ message: Data) {
            if let requestID, let summary = JSONValue.summarizeMessage(message), summary.method == nil,
                summary.id == requestID
            {
                answered = true
            }
            rememberProtocolVersion(message)
            continuation.yield(message)
        }
        do {
            for try await event in events {
                switch (event, body) {
                case (.response(let response), .awaitingHead):
                    guard let http = response as? HTTPURLResponse else { throw TransportError("not an HTTP response") }
                    if let id = http.value(forHTTPHeaderField: "Mcp-Session-Id") { sessionID = id }
                    if !(200..<300).contains(http.statusCode) {
                        body = .failed(http, Data())
                    } else if (http.value(forHTTPHeaderField: "Content-Type") ?? "").hasPrefix("text/event-stream") {
                        body = .sse(SSEParser())
                        accepted.resume()  // the events follow as they come
                    } else {
                        body = .json(Data())
                    }
                case (.chunk(let chunk), .json(var data)):
                    data.append(chunk)
                    body = .json(data)
                case (.chunk(let chunk), .failed(let http, var data)):
                    if data.count < 4096 { data.append(chunk) }
                    body = .failed(http, data)
                case (.chunk(let chunk), .sse(var parser)):
                    let messages = parser.feed(chunk)
                    body = .sse(parser)
                    messages.forEach(deliver)
                default:
                    break
                }
            }
            switch body {
            case .awaitingHead:
                accepted.resume(throwing: TransportError("no HTTP response from \(endpoint)"))
            case .json(let data):
                if !data.isEmpty { deliver(data) }
                accepted.resume()
                if !answered { answerLost(requestID, "the server's answer did not carry the request's id") }
            case .failed(let http, let data):
                // A JSON-RPC error under the request's id is the server's answer (2026-07-28 sends errors with 4xx);
                // anything else is a transport failure, after which the request may or may not have run.
                if let requestID, let summary = JSONValue.summarizeMessage(data), summary.hasError, summary.id == requestID {
                    deliver(data)
                    accepted.resume()
                    return
                }
                let text = String(decoding: data.prefix(500), as: UTF8.self)
                accepted.resume(throwing: TransportError("HTTP \(http.statusCode) from \(endpoint): \(text)"))
            case .sse(var parser):
                parser.finish().forEach(deliver)
                if !answered { answerLost(requestID, "the server's event stream ended before the answer") }
            }
        } catch {
            if case .sse = body {
                if !answered { answerLost(requestID, "the server's event stream failed: \(error.localizedDescription)") }
            } else {
                accepted.resume(throwing: (error as? TransportError) ?? TransportError(error.localizedDescription))
            }
        }
    }

    /// The request will get no answer on its stream: a JSON-RPC error in its place, so its caller is not left waiting.
    private func answerLost(_ requestID: JSONValue?, _ reason: String) {
        guard let requestID else { return }
        onAnswerLost(requestID)
        let message = JSONRPC.error(
            id: requestID, JSONRPCError(code: JSONRPCError.internalErrorCode, message: reason, data: [MCPClient.answerLostKey: true]))
        continuation.yield(Data(message.jsonString().utf8))
    }

    /// Later requests must carry the negotiated version.
    private func rememberProtocolVersion(_ message: Data) {
        guard protocolVersion == nil, let object = try? JSONValue.parse(message),
            let version = object["result"]?["protocolVersion"]?.stringValue
        else { return }
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

/// Hands each data task's response and body chunks to whoever awaits them, as they arrive.
final class StreamingDelegate: NSObject, URLSessionDataDelegate, Sendable {
    enum Event: Sendable {
        case response(URLResponse)
        case chunk(Data)
    }

    private let continuations = Mutex<[Int: AsyncThrowingStream<Event, Error>.Continuation]>([:])

    /// Call before `resume()`.
    func events(for task: URLSessionTask) -> AsyncThrowingStream<Event, Error> {
        let (stream, continuation) = AsyncThrowingStream<Event, Error>.makeStream()
        continuations.withLock { $0[task.taskIdentifier] = continuation }
        return stream
    }

    private func continuation(_ task: URLSessionTask) -> AsyncThrowingStream<Event, Error>.Continuation? {
        continuations.withLock { $0[task.taskIdentifier] }
    }

    func urlSession(
        _ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
        completionHandler: @escaping @Sendable (URLSession.ResponseDisposition) -> Void
    ) {
        continuation(dataTask)?.yield(.response(response))
        completionHandler(.allow)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        continuation(dataTask)?.yield(.chunk(data))
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: (any Error)?) {
        let continuation = continuations.withLock { $0.removeValue(forKey: task.taskIdentifier) }
        if let error { continuation?.finish(throwing: error) } else { continuation?.finish() }
    }
}
