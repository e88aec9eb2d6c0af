import Foundation
import HTTPTypes
import Hummingbird
import Logging
import MCP
import MCPCore
import ServiceLifecycle

/// Streamable HTTP for MCP servers (allcanuse-mock, `corral proxy --http`): the SDK's `StatefulHTTPServerTransport`
/// (one per MCP session) hosted on Hummingbird. A POST `initialize` creates a session, whose endpoint the factory
/// starts on the session's transport; later requests are routed by `Mcp-Session-Id`; DELETE ends the session.
public actor MCPSessionTable {
    /// What serves one session: started on the session's transport, stopped when the session ends. An endpoint
    /// that ends on its own (its server died) calls `end`, and the session is dropped.
    public typealias EndpointFactory =
        @Sendable (_ sessionID: String, _ transport: StatefulHTTPServerTransport, _ end: @escaping @Sendable () -> Void)
            async throws -> SessionEndpoint

    public struct SessionEndpoint: Sendable {
        public let stop: @Sendable () async -> Void
        public init(stop: @escaping @Sendable () async -> Void) { self.stop = stop }

        /// An SDK `Server` started on the session's transport.
        public static func server(_ server: Server, on transport: StatefulHTTPServerTransport) async throws -> SessionEndpoint {
            try await server.start(transport: transport)
            return SessionEndpoint { await server.stop() }
        }
    }

    private struct Session {
        var endpoint: SessionEndpoint
        var transport: StatefulHTTPServerTransport
        var lastUsed: Date
    }

    private struct FixedSessionID: SessionIDGenerator {
        let id: String
        func generateSessionID() -> String { id }
    }

    private var sessions: [String: Session] = [:]
    private let makeEndpoint: EndpointFactory
    private let logger: Logger
    private let idleTimeout: TimeInterval

    public init(idleTimeout: TimeInterval = 3600, logger: Logger, makeEndpoint: @escaping EndpointFactory) {
        self.makeEndpoint = makeEndpoint
        self.logger = logger
        self.idleTimeout = idleTimeout
    }

    public var count: Int { sessions.count }

    public func handle(_ request: MCP.HTTPRequest) async -> MCP.HTTPResponse {
        reapIdle()
        let sessionID = request.header(HTTPHeaderName.sessionID)
        if let sessionID, var session = sessions[sessionID] {
            session.lastUsed = Date()
            sessions[sessionID] = session
            let response = await session.transport.handleRequest(request)
            if request.method.uppercased() == "DELETE" && response.statusCode == 200 {
                sessions[sessionID] = nil
                await session.endpoint.stop()
                logger.info("session \(sessionID) closed by the client")
            }
            return response
        }
        if sessionID == nil, request.method.uppercased() == "POST", Self.isInitialize(request.body) {
            return await createSession(request)
        }
        if sessionID != nil {
            return .error(statusCode: 404, .invalidRequest("Not Found: unknown or expired session"))
        }
        return .error(statusCode: 400, .invalidRequest("Bad Request: missing \(HTTPHeaderName.sessionID) header"))
    }

    /// Ends one session (its endpoint stopped); later requests for it get 404, so the client starts a new one.
    public func close(_ id: String) async {
        guard let session = sessions.removeValue(forKey: id) else { return }
        await session.endpoint.stop()
        logger.info("session \(id) closed by its endpoint")
    }

    public func closeAll() async {
        for (_, session) in sessions {
            await session.endpoint.stop()
        }
        sessions.removeAll()
    }

    private func createSession(_ request: MCP.HTTPRequest) async -> MCP.HTTPResponse {
        let id = UUID().uuidString.lowercased()
        let transport = StatefulHTTPServerTransport(sessionIDGenerator: FixedSessionID(id: id), logger: logger)
        let endpoint: SessionEndpoint
        do {
            endpoint = try await makeEndpoint(id, transport) { [weak self] in
                Task { await self?.close(id) }
            }
        } catch {
            return .error(statusCode: 500, .internalError("cannot start a session: \(error)"))
        }
        sessions[id] = Session(endpoint: endpoint, transport: transport, lastUsed: Date())
        let response = await transport.handleRequest(request)
        if case .error = response {
            // Refused (a bad Origin, Accept or protocol version): no session stays behind.
            sessions[id] = nil
            await endpoint.stop()
        } else {
            logger.info("session \(id) opened")
        }
        return response
    }

    private func reapIdle() {
        let cutoff = Date().addingTimeInterval(-idleTimeout)
        for (id, session) in sessions where session.lastUsed < cutoff {
            sessions[id] = nil
            let endpoint = session.endpoint
            Task { await endpoint.stop() }
            logger.info("session \(id) expired")
        }
    }

    /// The SDK's own message classifier is package-internal; a JSON look at `method` is enough here.
    static func isInitialize(_ body: Data?) -> Bool {
        guard let body, let object = try? JSONSerialization.jsonObject(with: body) as? [String: Any] else { return false }
        return object["method"] as? String == "initialize"
    }
}

/// Serves the session table on `host:port` at `/mcp` until SIGTERM or SIGINT.
public enum HTTPHost {
    /// On SIGTERM or SIGINT, `beforeShutdown` runs first (end what open requests wait for: tasks, sessions), then
    /// the server stops taking requests and finishes the open ones; after 10 s whatever is left is cancelled. A
    /// request waiting on something that never comes cannot keep the process alive.
    public static func run(
        host: String, port: Int, sessions: MCPSessionTable, serverName: String, logger: Logger,
        beforeShutdown: @escaping @Sendable () async -> Void = {},
        onRunning: @escaping @Sendable (Int) async -> Void
    ) async throws {
        let router = Router()
        let bridge: @Sendable (Request, BasicRequestContext) async throws -> Response = { request, _ in
            var request = request
            let body = try await request.collectBody(upTo: 16 << 20)
            var headers: [String: String] = [:]
            for field in request.headers {
                let name = field.name.canonicalName
                headers[name] = headers[name].map { $0 + ", " + field.value } ?? field.value
            }
            // HTTP/1 Host arrives as the :authority pseudo-header; the SDK's DNS-rebinding check reads "Host".
            if let authority = request.head.authority { headers["Host"] = authority }
            let mcpRequest = MCP.HTTPRequest(
                method: request.method.rawValue, headers: headers,
                body: body.readableBytes > 0 ? Data(body.readableBytesView) : nil, path: request.uri.path)
            let answer = await sessions.handle(mcpRequest)
            var fields = HTTPFields()
            for (name, value) in answer.headers {
                if let fieldName = HTTPField.Name(name) { fields[fieldName] = value }
            }
            let status = HTTPResponse.Status(code: answer.statusCode)
            if case .stream(let stream, _) = answer {
                return Response(
                    status: status, headers: fields,
                    body: ResponseBody { writer in
                        for try await chunk in stream {
                            try await writer.write(ByteBuffer(bytes: chunk))
                        }
                        try await writer.finish(nil)
                    })
            }
            return Response(
                status: status, headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(bytes: answer.bodyData ?? Data())))
        }
        router.post("/mcp", use: bridge)
        router.get("/mcp", use: bridge)
        router.delete("/mcp", use: bridge)
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: serverName),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? port) },
            logger: logger)
        // The group shuts services down last to first: the hook runs before the HTTP server drains.
        var configuration = ServiceGroupConfiguration(
            services: [app, ShutdownHook(action: beforeShutdown)], gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger)
        configuration.maximumGracefulShutdownDuration = .seconds(10)
        configuration.maximumCancellationDuration = .seconds(5)
        do {
            try await ServiceGroup(configuration: configuration).run()
        } catch let error as ServiceGroupError {
            logger.warning("shutdown did not finish in time: \(error)")
        }
    }
}

/// A service that does nothing until graceful shutdown begins, then runs `action`.
private struct ShutdownHook: Service {
    let action: @Sendable () async -> Void

    func run() async throws {
        try? await gracefulShutdown()
        await action()
    }
}
