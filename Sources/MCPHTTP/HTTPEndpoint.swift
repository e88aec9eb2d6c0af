import CorralJSON
import MCPCore
import Synchronization

/// What an MCP application serves over Streamable HTTP: stateless 2026-07-28 exchanges, and 2025-11-25 sessions.
/// `MCPHTTPServer` does the HTTP (headers, statuses, SSE, sessions); `CoreHTTPEndpoint` serves an
/// `MCPServerCore`, and a gateway brings its own.
public protocol MCPHTTPEndpoint: Sendable {
    /// One modern request whose envelope and headers passed every check. `notify` puts a notification on the
    /// request's own response stream; the returned answer (a response or an error under `request.id`, as JSON text,
    /// with the HTTP status of its error code) ends it. Cancelled when the client closes the stream.
    func exchange(_ request: ModernHTTPRequest, notify: @escaping @Sendable (JSONValue) async -> Void) async
        -> (text: String, status: Int)

    /// A legacy session, opened by an `initialize` POST (which `receive` then gets as its first message);
    /// `principal` is who opened it, when the server authenticates.
    func openLegacySession(id: String, principal: String?, outlet: LegacyOutlet) async throws(JSONRPCError) -> any LegacySession

    /// The answer to a modern request when it needs no waiting (see `MCPServerCore.immediateAnswer`): the server
    /// sends it from the request's own handler, without a task of its own. Nil for everything else.
    func immediateAnswer(_ request: ModernHTTPRequest) -> (text: String, status: Int)?
}

extension MCPHTTPEndpoint {
    public func immediateAnswer(_ request: ModernHTTPRequest) -> (text: String, status: Int)? { nil }
}

/// A modern request over HTTP.
public struct ModernHTTPRequest: Sendable {
    public let id: JSONValue
    public let method: String
    public let params: JSONValue
    public let envelope: ModernEnvelope
    public let headers: HTTPHeaderView
    /// The request body as it arrived (what a gateway forwards).
    public let body: [UInt8]
    /// Who sent it: what its bearer token maps to, when the server authenticates (`MCPHTTPServer.Configuration`).
    public let principal: String?
}

/// One legacy (2025-11-25) HTTP session as the application sees it: it gets every message the client POSTs and
/// answers through its `LegacyOutlet`.
public protocol LegacySession: Sendable {
    func receive(_ message: JSONValue)
    /// The client ended the session (DELETE), it expired, or the server is stopping.
    func close() async
}

/// Where a legacy session's messages to the client go: an answer to the POST stream of its request; a progress
/// notification to the stream of the request with that token; anything else to the session's GET stream, or,
/// without one, to the newest open POST stream (where a client waiting on a call will see, say, an elicitation).
public final class LegacyOutlet: Sendable {
    enum Message: Sendable {
        case message(JSONValue)
        case answer(id: JSONValue, text: String)
    }

    let route: @Sendable (Message) -> Void
    let end: @Sendable () -> Void
    /// The server's event loop, where its handlers run: a session whose requests' work can run there (no blocking
    /// call) starts their tasks with it, instead of crossing to the task pool and back for each request.
    public let executor: (any TaskExecutor)?

    init(
        route: @escaping @Sendable (Message) -> Void, end: @escaping @Sendable () -> Void,
        executor: (any TaskExecutor)? = nil
    ) {
        self.route = route
        self.end = end
        self.executor = executor
    }

    public func send(_ message: JSONValue) { route(.message(message)) }

    /// An answer already serialized (routed by `id`).
    public func sendAnswer(id: JSONValue, text: String) { route(.answer(id: id, text: text)) }

    /// The application ended the session on its own (e.g. its server process died); later requests get 404.
    public func endSession() { end() }
}

/// Serves an `MCPServerCore` over HTTP.
public struct CoreHTTPEndpoint: MCPHTTPEndpoint {
    public let core: MCPServerCore

    public init(core: MCPServerCore) { self.core = core }

    public func exchange(_ request: ModernHTTPRequest, notify: @escaping @Sendable (JSONValue) async -> Void) async
        -> (text: String, status: Int)
    {
        await core.respondText(id: request.id, method: request.method, params: request.params, context: context(request, notify))
    }

    public func immediateAnswer(_ request: ModernHTTPRequest) -> (text: String, status: Int)? {
        core.immediateAnswer(id: request.id, method: request.method, params: request.params, context: context(request, { _ in }))
            .map { ($0.text, 200) }
    }

    private func context(_ request: ModernHTTPRequest, _ notify: @escaping @Sendable (JSONValue) async -> Void) -> RequestContext {
        RequestContext(
            id: request.id, era: .modern(version: request.envelope.protocolVersion), envelope: request.envelope,
            legacyCapabilities: nil, session: nil, notify: notify)
    }

    public func openLegacySession(id: String, principal: String?, outlet: LegacyOutlet) async throws(JSONRPCError) -> any LegacySession {
        CoreLegacySession(core: core, id: id, outlet: outlet)
    }
}

/// A 2025-11-25 session over an `MCPServerCore`: `initialize` settles the version, requests run concurrently,
/// `notifications/cancelled` cancels one (without an answer), modern requests are refused.
final class CoreLegacySession: LegacySession {
    private struct State {
        var version = ProtocolVersions.latestLegacy
        var capabilities: JSONValue = [:]
        var running: [String: (id: JSONValue, task: Task<Void, Never>)] = [:]
        var removeListener: (@Sendable () -> Void)?
    }

    private let core: MCPServerCore
    private let id: String
    private let outlet: LegacyOutlet
    private let state = Mutex(State())

    init(core: MCPServerCore, id: String, outlet: LegacyOutlet) {
        self.core = core
        self.id = id
        self.outlet = outlet
        let remove = core.listeners.addLegacy { [outlet] in outlet.send($0) }
        state.withLock { $0.removeListener = remove }
    }

    func receive(_ message: JSONValue) {
        switch JSONRPCMessage.classify(message) {
        case .failure(let shape):
            outlet.send(JSONRPC.error(id: shape.id, shape.error))
        case .success(.request(let requestID, let method, let params)):
            if method == "initialize" {
                let (result, version) = core.initializeResult(params)
                state.withLock { state in
                    state.version = version
                    state.capabilities = params["capabilities"] ?? [:]
                }
                outlet.send(JSONRPC.response(id: requestID, result: result))
                return
            }
            if params.hasModernEnvelope {
                outlet.send(
                    JSONRPC.error(
                        id: requestID,
                        .invalidRequest("this session serves a handshake revision; 2026-07-28 requests carry no Mcp-Session-Id")))
                return
            }
            let (version, capabilities) = state.withLock { ($0.version, $0.capabilities) }
            let outlet = self.outlet
            let context = RequestContext(
                id: requestID, era: .legacy(version: version), envelope: nil, legacyCapabilities: capabilities,
                session: id, notify: { outlet.send($0) })
            let key = JSONRPC.key(requestID)
            let core = self.core
            state.withLock { state in
                // On the server's loop, as a 2026-07-28 request's work is (`ModernPostHandler`).
                let task = Task(executorPreference: outlet.executor) { [weak self] in
                    let answer = await core.respondText(id: requestID, method: method, params: params, context: context)
                    // Whoever takes the request's entry answers it: here, unless the client cancelled it or the
                    // session's end answered it.
                    guard self?.state.withLock({ $0.running.removeValue(forKey: key) }) != nil else { return }
                    outlet.sendAnswer(id: requestID, text: answer.text)
                }
                state.running[key] = (requestID, task)
            }
        case .success(.notification(let method, let params)):
            if method == "notifications/cancelled", let cancelled = params["requestId"] {
                state.withLock { $0.running.removeValue(forKey: JSONRPC.key(cancelled)) }?.task.cancel()
            }
        case .success:
            break
        }
    }

    /// Every request still running is answered (with an error) before its work is cancelled: a client whose
    /// session ends while it waits gets an answer, not a stream that ends without one.
    func close() async {
        let (requests, remove) = state.withLock { state in
            defer { state.running.removeAll() }
            return (Array(state.running.values), state.removeListener)
        }
        remove?()
        for request in requests {
            request.task.cancel()
            outlet.sendAnswer(id: request.id, text: JSONRPC.error(id: request.id, Self.ended).jsonString())
        }
    }

    static let ended = JSONRPCError(
        code: -32000, message: "the session ended before the request finished (the server is stopping, or the session was deleted or expired)")
}
