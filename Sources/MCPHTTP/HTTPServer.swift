import CorralJSON
import MCPCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import Metrics
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Streamable HTTP at `/mcp` for an `MCPHTTPEndpoint`, both eras on one endpoint at once, on Hummingbird.
///
/// Per request: a POST whose `MCP-Protocol-Version` header or body `_meta` says 2026-07-28 is served statelessly
/// (no `Mcp-Session-Id` in or out); an `initialize` POST opens a 2025-11-25 session; a POST, GET or DELETE with a
/// known `Mcp-Session-Id` belongs to that session. The spec's HTTP rules are here: 403 for a foreign `Origin`,
/// 406 for an `Accept` that admits neither JSON nor SSE, 413 past the body limit, the header checks of
/// `ModernEnvelope`, 404/-32601 for an `initialize` sent as 2026-07-28, 405 for a sessionless GET or DELETE, 202 for
/// notifications, an error's status from its code. An answer that comes quickly is one JSON body; a slow one, or one
/// preceded by notifications (progress), is an SSE stream with keep-alive comments, and a client closing that stream
/// cancels the request.
///
/// A POST that names a 2026-07-28 version in its header is served by `ModernPostHandler`, in each connection's
/// pipeline in front of Hummingbird's router (the same rules, half the instructions); the router serves the rest.
public final class MCPHTTPServer: Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        public var serverName: String
        /// Origins admitted besides loopback ones (`http://localhost:…`, `http://127.0.0.1:…`, `http://[::1]:…`).
        public var allowedOrigins: Set<String>
        public var maximumBodyBytes: Int
        public var sessionIdleTimeout: Duration
        /// How long an answer may take and still go out as plain JSON.
        public var jsonWindow: Duration
        /// Keep-alive comments on a silent SSE stream (how a closed one is noticed).
        public var keepAliveInterval: Duration
        /// How long a connection that owes the client nothing waits for its next request to arrive whole (head and
        /// body) before it is closed; see `ModernPostHandler`.
        public var requestTimeout: Duration
        /// Connections served at once; past it the server accepts no more until one closes (they wait in the
        /// listen backlog), so that clients cannot take every descriptor the process needs for its own work
        /// (tasks' pipes and pidfds, the stores, the servers a proxy starts).
        public var maximumConnections: Int
        /// When set, every request needs a bearer token that stands for a principal (401 otherwise, before its
        /// body is read); a legacy session is then used by the principal that opened it only (403 otherwise).
        public var authenticator: (any BearerAuthenticator)?
        /// Whether a body with a repeated JSON key is refused (-32700), as it should be; false reads it as lenient
        /// parsers do (the first copy is kept, as JSONDecoder keeps it), for a mock that tests what a gateway in
        /// front of it forwards.
        public var rejectsDuplicateKeys: Bool

        public init(
            host: String, port: Int, serverName: String, allowedOrigins: Set<String> = [],
            maximumBodyBytes: Int = 4 << 20, sessionIdleTimeout: Duration = .seconds(3600),
            jsonWindow: Duration = .milliseconds(100), keepAliveInterval: Duration = .seconds(1),
            requestTimeout: Duration = .seconds(60), maximumConnections: Int? = nil,
            authenticator: (any BearerAuthenticator)? = nil, rejectsDuplicateKeys: Bool = true
        ) {
            self.authenticator = authenticator
            self.rejectsDuplicateKeys = rejectsDuplicateKeys
            self.host = host
            self.port = port
            self.serverName = serverName
            self.allowedOrigins = allowedOrigins
            self.maximumBodyBytes = maximumBodyBytes
            self.sessionIdleTimeout = sessionIdleTimeout
            self.jsonWindow = jsonWindow
            self.keepAliveInterval = keepAliveInterval
            self.requestTimeout = requestTimeout
            self.maximumConnections = maximumConnections ?? Self.defaultMaximumConnections
        }

        /// Half the soft limit on open files, at most 10,000 (and at least 16).
        public static var defaultMaximumConnections: Int {
            var limit = rlimit()
            guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 512 }
            let files = Int(clamping: limit.rlim_cur)  // RLIM_INFINITY clamps to Int.max
            return min(10_000, max(16, files / 2))
        }
    }

    let configuration: Configuration
    let endpoint: any MCPHTTPEndpoint
    let sessions: LegacySessionTable
    /// Modern requests being answered, which a stopping server answers if they have not finished.
    let exchanges = InFlightExchanges()
    let logger: Logger
    /// One event loop serves the sockets, and the handlers run on it (`EventLoopTaskExecutor`): a request is read,
    /// answered and written on one thread, where it used to cross to the task pool and back.
    let eventLoops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    package let executor: EventLoopTaskExecutor

    public init(configuration: Configuration, endpoint: any MCPHTTPEndpoint, logger: Logger) {
        self.configuration = configuration
        self.endpoint = endpoint
        let executor = EventLoopTaskExecutor(eventLoops.next())
        self.sessions = LegacySessionTable(idleTimeout: configuration.sessionIdleTimeout, executor: executor)
        self.logger = logger
        self.executor = executor
    }

    public var legacySessionCount: Int { sessions.count }

    /// Serves until SIGTERM or SIGINT. Then `beforeShutdown` runs (end what open requests wait for), legacy sessions
    /// close, the server stops taking requests and finishes the open ones; after 10 s the rest is cancelled.
    public func run(
        beforeShutdown: @escaping @Sendable () async -> Void = {}, onRunning: @escaping @Sendable (Int) async -> Void
    ) async throws {
        let router = Router()
        router.post("/mcp") { request, _ in await self.post(request) }
        router.get("/mcp") { request, _ in await self.get(request) }
        router.delete("/mcp") { request, _ in await self.delete(request) }
        let app = Application(
            router: router,
            server: HTTPServerBuilder { responder in
                MCPHTTP1Channel(base: HTTP1Channel(responder: responder), server: self)
            },
            configuration: .init(
                address: .hostname(configuration.host, port: configuration.port), serverName: configuration.serverName,
                availableConnectionsDelegate: MaximumAvailableConnections(configuration.maximumConnections, logger: logger)),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? self.configuration.port) },
            eventLoopGroupProvider: .shared(eventLoops),
            logger: logger)
        let sessions = self.sessions
        let exchanges = self.exchanges
        // The group shuts services down last to first: the hook runs before the HTTP server drains. A request still
        // running a moment after `beforeShutdown` (a `wait` of an hour) is answered with an error, in either era.
        var group = ServiceGroupConfiguration(
            services: [app, ShutdownHook(action: {
                await beforeShutdown()
                await exchanges.waitUntilEmpty(timeout: .seconds(2))
                exchanges.answerAll(.serverStopping)
                await sessions.closeAll()
            })],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        group.maximumGracefulShutdownDuration = .seconds(10)
        group.maximumCancellationDuration = .seconds(5)
        do {
            // Every connection's task is a child of the server's, and inherits this preference.
            try await withTaskExecutorPreference(executor) {
                try await ServiceGroup(configuration: group).run()
            }
        } catch let error as ServiceGroupError {
            logger.warning("shutdown did not finish in time: \(error)")
        }
        await sessions.closeAll()
        try? await eventLoops.shutdownGracefully()
    }

    // MARK: - POST

    private func post(_ request: Request) async -> Response {
        await sessions.reapIdle()
        let headers = Self.headerView(request)
        let principal: String?
        switch admitPost(headers) {
        case .admitted(let who): principal = who
        case .refused(let reply): return Self.response(reply)
        }
        var request = request
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: configuration.maximumBodyBytes)
        } catch {
            return Self.response(bodyTooLarge)
        }
        let body = Array(buffer.readableBytesView)
        let route = HTTPRules.classifyPost(
            headers: headers, body: body, allowedOrigins: configuration.allowedOrigins,
            rejectsDuplicateKeys: configuration.rejectsDuplicateKeys)
        switch route {
        case .reply, .notAcceptable:
            return Self.response(PlainReply(route))
        case .legacySession(let id, let message):
            guard let entry = sessions.lookup(id) else {
                return Self.json(status: 404, JSONRPC.error(id: nil, .invalidRequest("unknown or expired session \(id)")))
            }
            if let refusal = Self.foreignSession(entry, principal) { return refusal }
            return await legacyPost(message, entry: entry)
        case .openSession(let message):
            let entry: LegacySessionTable.Entry
            do {
                entry = try await sessions.open(endpoint, principal: principal)
            } catch {
                return Self.json(status: 500, JSONRPC.error(id: message["id"], error))
            }
            logger.info("session \(entry.id) opened")
            var response = await legacyPost(message, entry: entry)
            if let name = HTTPField.Name("Mcp-Session-Id") { response.headers[name] = entry.id }
            return response
        case .modern(let id, let method, let params, let envelope):
            let exchange = ModernHTTPRequest(
                id: id, method: method, params: params, envelope: envelope, headers: headers, body: body, principal: principal)
            if let immediate = endpoint.immediateAnswer(exchange) {
                return Self.json(status: immediate.status, text: immediate.text)
            }
            // Served here only when the request has no 2026-07-28 version header (its version is in the body alone)
            // or came while an earlier request on its connection was still being answered here: the others are
            // served in front of Hummingbird (`ModernPostHandler`).
            let queue = MessageQueue()
            let endpoint = self.endpoint
            // Unstructured (it may outlive this handler, as an SSE stream), so the preference is given again.
            let exchanges = self.exchanges
            let key = exchanges.add(id: id) { text, status in
                queue.push(.answer(text: text, status: status))
                queue.finish()
            }
            let task = Task(executorPreference: executor) {
                let answer = await endpoint.exchange(exchange) { queue.push($0) }
                exchanges.remove(key)
                queue.push(.answer(text: answer.text, status: answer.status))
                queue.finish()
            }
            let logger = self.logger
            return await answer(
                from: queue, single: true,
                cancel: {
                    logger.info("cancelled \(method) \(id.jsonString()): the client closed its stream")
                    task.cancel()
                })
        }
    }

    enum Admission {
        case admitted(String?)
        case refused(PlainReply)
    }

    /// The checks a POST passes before its body is read: `Origin` (403), the bearer token (401) and `Accept` (406).
    func admitPost(_ headers: HTTPHeaderView) -> Admission {
        if let refusal = HTTPRules.originRefusal(headers, allowedOrigins: configuration.allowedOrigins) {
            return .refused(PlainReply(refusal))
        }
        switch authenticate(headers) {
        case .admitted(let principal):
            return HTTPRules.accepts(headers, sse: false) ? .admitted(principal) : .refused(PlainReply(status: 406))
        case .refused(let reply):
            return .refused(reply)
        }
    }

    /// 413, for a body past `maximumBodyBytes`.
    var bodyTooLarge: PlainReply {
        PlainReply(
            status: 413,
            JSONRPC.error(id: nil, .invalidRequest("the body is larger than \(configuration.maximumBodyBytes) bytes")))
    }

    private func authenticate(_ headers: HTTPHeaderView) -> Admission {
        switch BearerCheck.check(headers, with: configuration.authenticator, realm: configuration.serverName) {
        case .admitted(let principal):
            return .admitted(principal)
        case .refused(let challenge, let message):
            logger.info("refused a request: \(message)")
            var reply = PlainReply(status: 401, JSONRPC.error(id: nil, JSONRPCError(code: -32001, message: message)))
            reply.headers.append((name: "WWW-Authenticate", value: challenge))
            return .refused(reply)
        }
    }

    /// A session belongs to the principal that opened it.
    private static func foreignSession(_ entry: LegacySessionTable.Entry, _ principal: String?) -> Response? {
        guard entry.principal != principal else { return nil }
        return json(status: 403, JSONRPC.error(id: nil, .invalidRequest("session \(entry.id) belongs to another principal")))
    }

    // MARK: - legacy sessions

    private func legacyPost(_ message: JSONValue, entry: LegacySessionTable.Entry) async -> Response {
        guard let session = entry.current else {
            return Self.json(status: 404, JSONRPC.error(id: nil, .invalidRequest("session \(entry.id) is closed")))
        }
        let messages = message.arrayValue ?? [message]
        guard !messages.isEmpty else {
            return Self.json(status: 400, JSONRPC.error(id: nil, .invalidRequest("empty batch")))
        }
        var requestIDs: [JSONValue] = []
        var tokens: [JSONValue] = []
        // A message that is not JSON-RPC, and has no id to answer it under (`"id": 1.5`, `[1]`), is answered here
        // with -32600 and id null: the session's answer would go to no stream, and the client would wait forever.
        var refusals: [JSONValue] = []
        var deliverable: [JSONValue] = []
        for element in messages {
            if case .failure(let shape) = JSONRPCMessage.classify(element), shape.id == nil {
                refusals.append(JSONRPC.error(id: nil, shape.error))
                continue
            }
            deliverable.append(element)
            if element["method"] != nil, let id = element["id"], JSONRPC.isValidID(id) {
                requestIDs.append(id)
                if let token = element["params"]?["_meta"]?["progressToken"] { tokens.append(token) }
            }
        }
        for element in deliverable where element["method"]?.stringValue == "notifications/cancelled" {
            if let cancelled = element["params"]?["requestId"] { entry.router.cancelled(cancelled) }
        }
        guard !requestIDs.isEmpty else {
            for element in deliverable { session.receive(element) }
            guard !refusals.isEmpty else { return Response(status: .accepted) }
            return Self.json(status: 400, message.arrayValue == nil ? refusals[0] : .array(refusals))
        }
        let (key, queue) = entry.router.openPostStream(requestIDs: requestIDs, progressTokens: tokens)
        let cancellable = requestIDs
        for refusal in refusals { queue.push(.message(refusal)) }
        for element in deliverable { session.receive(element) }
        let router = entry.router
        return await answer(
            from: queue, single: message.arrayValue == nil,
            cancel: {
                // The client closed the stream: its requests are cancelled as a notification would.
                router.dropPostStream(key)
                for id in cancellable {
                    session.receive(JSONRPC.notification("notifications/cancelled", ["requestId": id, "reason": "stream closed"]))
                }
            })
    }

    private func get(_ request: Request) async -> Response {
        let headers = Self.headerView(request)
        if let refusal = HTTPRules.originRefusal(headers, allowedOrigins: configuration.allowedOrigins) {
            return Self.response(PlainReply(refusal))
        }
        let principal: String?
        switch authenticate(headers) {
        case .admitted(let who): principal = who
        case .refused(let reply): return Self.response(reply)
        }
        guard let sessionID = headers[MCPHeader.sessionID] else {
            return Response(status: .methodNotAllowed, headers: [.allow: "POST"])
        }
        guard let entry = sessions.lookup(sessionID) else {
            return Self.json(status: 404, JSONRPC.error(id: nil, .invalidRequest("unknown or expired session \(sessionID)")))
        }
        if let refusal = Self.foreignSession(entry, principal) { return refusal }
        guard HTTPRules.accepts(headers, sse: true) else { return Response(status: .notAcceptable) }
        let queue = entry.router.openGetStream()
        let router = entry.router
        return sse(first: nil, queue: queue, onClose: { router.dropGetStream(queue) })
    }

    private func delete(_ request: Request) async -> Response {
        let headers = Self.headerView(request)
        if let refusal = HTTPRules.originRefusal(headers, allowedOrigins: configuration.allowedOrigins) {
            return Self.response(PlainReply(refusal))
        }
        let principal: String?
        switch authenticate(headers) {
        case .admitted(let who): principal = who
        case .refused(let reply): return Self.response(reply)
        }
        guard let sessionID = headers[MCPHeader.sessionID] else {
            return Response(status: .methodNotAllowed, headers: [.allow: "POST"])
        }
        guard let entry = sessions.lookup(sessionID) else {
            return Self.json(status: 404, JSONRPC.error(id: nil, .invalidRequest("unknown or expired session \(sessionID)")))
        }
        if let refusal = Self.foreignSession(entry, principal) { return refusal }
        await sessions.close(sessionID)
        logger.info("session \(sessionID) closed by the client")
        return Response(status: .ok)
    }

    // MARK: - answers

    /// One JSON body when the stream's only message comes within the JSON window; SSE otherwise.
    private func answer(from queue: MessageQueue, single: Bool, cancel: @escaping @Sendable () -> Void) async -> Response {
        switch await queue.next(timeout: configuration.jsonWindow) {
        case .finished:
            return Response(status: .accepted)
        case .message(.answer(let text, let status)) where single:
            return Self.json(status: status, text: text)
        case .message(.message(let first)) where single && first["method"] == nil:
            let status = first["error"].flatMap(JSONRPCError.init(json:))?.httpStatus ?? 200
            return Self.json(status: status, first)
        case .message(let first):
            return sse(first: first, queue: queue, onClose: cancel)
        case .timeout:
            return sse(first: nil, queue: queue, onClose: cancel)
        }
    }

    private func sse(first: MessageQueue.Outgoing?, queue: MessageQueue, onClose: @escaping @Sendable () -> Void) -> Response {
        let interval = configuration.keepAliveInterval
        let body = ResponseBody { writer in
            Self.streamsChanged(by: 1)
            defer { Self.streamsChanged(by: -1) }
            do {
                if let first { try await writer.write(Self.event(first)) }
                loop: while true {
                    switch await queue.next(timeout: interval) {
                    case .message(let message): try await writer.write(Self.event(message))
                    case .timeout: try await writer.write(ByteBuffer(string: SSEText.keepAlive))
                    case .finished: break loop
                    }
                }
                try await writer.finish(nil)
            } catch {
                onClose()  // the client went away
                throw error
            }
        }
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache, no-transform"],
            body: body)
    }

    /// SSE streams open in this process (`corral_http_open_streams`), on either path.
    static let openStreams = Atomic<Int>(0)
    private static let openStreamsGauge = Gauge(label: "corral_http_open_streams")

    static func streamsChanged(by change: Int) {
        openStreamsGauge.record(openStreams.add(change, ordering: .relaxed).newValue)
    }

    /// Connections closed because a request did not arrive whole within `requestTimeout`.
    static let requestTimeouts = Counter(label: "corral_http_request_timeouts_total")

    private static func event(_ message: MessageQueue.Outgoing) -> ByteBuffer {
        ByteBuffer(string: SSEText.event(message.text))
    }

    static func response(_ reply: PlainReply) -> Response {
        var response =
            reply.json.map { json(status: reply.status, text: $0) } ?? Response(status: HTTPResponse.Status(code: reply.status))
        for header in reply.headers {
            if let name = HTTPField.Name(header.name) { response.headers[name] = header.value }
        }
        return response
    }

    static func json(status: Int, _ message: JSONValue) -> Response {
        json(status: status, text: message.jsonString())
    }

    static func json(status: Int, text: String) -> Response {
        Response(
            status: HTTPResponse.Status(code: status), headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    // MARK: - headers

    static func headerView(_ request: Request) -> HTTPHeaderView {
        HTTPHeaderView(request.headers.map { (name: $0.name.canonicalName, value: $0.value) })
    }
}

/// How both paths frame a stream: each message as one `message` event, and a comment that keeps a silent one alive.
enum SSEText {
    static func event(_ text: String) -> String { "event: message\ndata: \(text)\n\n" }
    static let keepAlive = ": keep-alive\n\n"
}

/// A service that does nothing until graceful shutdown begins, then runs `action`.
private struct ShutdownHook: Service {
    let action: @Sendable () async -> Void

    func run() async throws {
        try? await gracefulShutdown()
        await action()
    }
}

/// `HOST:PORT` as `--http` takes it (an IPv6 host in brackets; port 0 picks a free one). Nil when it is not that.
public struct HTTPAddress: Sendable, Hashable {
    public let host: String
    public let port: Int

    public init?(parsing text: String) {
        guard let colon = text.lastIndex(of: ":"), colon > text.startIndex,
            let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port)
        else { return nil }
        self.host = String(text[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        self.port = port
    }
}
