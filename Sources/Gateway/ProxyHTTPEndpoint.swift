import CorralJSON
import Foundation
import MCPCore
import MCPHTTP
import Synchronization

/// `corral proxy --http`: the policy between Streamable HTTP clients of both eras and an MCP server (a stdio
/// command, or a Streamable HTTP endpoint: `UpstreamServer`).
///
/// A 2025-11-25 client gets a server process per session, as before: its session is one `ProxyCore` between the
/// session's streams and that process. 2026-07-28 clients have no session, so all of them share one server
/// connection (started at the first modern request, and again after it ends), with one `ProxyCore` per grant
/// deciding their calls (the grant is the one the request's bearer token maps to, `--grants`, or the proxy's own),
/// and ids of the proxy's own on the pipe: each exchange's id and progress token are replaced on the way in and
/// restored on the way out, so that clients which reuse ids never meet, and each answer goes back through the
/// core that sent its request. `subscriptions/listen` is answered here (a reload
/// announces `tools/list_changed` on it). A server that speaks only 2025-11-25 gets the handshake from an
/// `EraBridge`, which translates the modern clients' requests.
final class ProxyHTTPEndpoint: MCPHTTPEndpoint {
    private struct Exchange {
        let clientID: JSONValue
        let progressToken: JSONValue?
        let notify: @Sendable (JSONValue) async -> Void
        /// Takes the first answer only (the server's, or the cancellation's).
        let answer: AsyncStream<JSONValue>.Continuation
        /// The core that sent the request: the answer goes back through it (its counters, its task handles).
        let core: ProxyCore
    }

    private struct Upstream {
        let server: any UpstreamConnection
        let bridge: EraBridge
        /// By grant ("" for the proxy's own).
        var cores: [String: ProxyCore] = [:]
    }

    private struct Modern {
        var upstream: Upstream?
        var exchanges: [String: Exchange] = [:]
        /// Exchanges whose client closed the stream, by key, oldest first: a late answer still goes back through
        /// the core that sent the request (which frees its id and settles its counters there). Bounded by
        /// `ProxyCore.cancelledLimit`, as that core's own record of them.
        var abandoned: [String: ProxyCore] = [:]
        var abandonedOrder: [String] = []
        var next = 0
    }

    private let proxy: PolicyProxy
    private let upstreamServer: UpstreamServer
    private let modern = Mutex(Modern())
    let listeners = ListenRegistry()

    init(proxy: PolicyProxy, upstream: UpstreamServer) {
        self.proxy = proxy
        self.upstreamServer = upstream
        // These streams carry the proxy's own tools/list_changed; no task's notifications reach them (the server's
        // are not listened to), so a listen honours no task id, and its acknowledgement says so.
        listeners.honourTasks { _ in [] }
    }

    // MARK: - 2025-11-25 sessions

    func openLegacySession(id: String, principal: String?, outlet: LegacyOutlet) async throws(JSONRPCError) -> any LegacySession {
        let server: any UpstreamConnection
        do {
            server = try upstreamServer.connect()
        } catch {
            throw .internalError("cannot start the server: \(error)")
        }
        let core = proxy.makeCore(
            session: id, grant: principal,
            toClient: { data in outlet.send(Self.readable(data)) },
            toServer: server.send)
        let proxy = self.proxy
        Task {
            for await line in server.messages() { await core.fromServer(line) }
            // What the server still owed is answered with an error, and the session ends with it.
            core.serverEnded(server.exitDescription())
            proxy.forget(core)
            outlet.endSession()
        }
        return ProxyLegacySession(core: core, server: server, proxy: proxy)
    }

    // MARK: - 2026-07-28 exchanges

    func exchange(_ request: ModernHTTPRequest, notify: @escaping @Sendable (JSONValue) async -> Void) async
        -> (text: String, status: Int)
    {
        let answer = await answer(request, notify: notify)
        return (answer.jsonString(), answer["error"].flatMap(JSONRPCError.init(json:))?.httpStatus ?? 200)
    }

    private func answer(_ request: ModernHTTPRequest, notify: @escaping @Sendable (JSONValue) async -> Void) async -> JSONValue {
        if request.method == "subscriptions/listen" {
            let context = RequestContext(
                id: request.id, era: .modern(version: request.envelope.protocolVersion), envelope: request.envelope,
                legacyCapabilities: nil, session: nil, notify: notify)
            do throws(JSONRPCError) {
                let result = try await listeners.listen(params: request.params, context: context)
                return JSONRPC.response(id: request.id, result: result)
            } catch {
                return JSONRPC.error(id: request.id, error)
            }
        }
        let core: ProxyCore
        do {
            core = try upstream(grant: request.principal)
        } catch {
            return JSONRPC.error(id: request.id, .internalError("cannot start the server behind corral proxy: \(error)"))
        }
        let key = modern.withLock { state -> String in
            state.next += 1
            return "corral-\(state.next)"
        }
        var params = request.params.objectValue ?? [:]
        let token = params["_meta"]?["progressToken"]
        if token != nil, var meta = params["_meta"]?.objectValue {
            meta["progressToken"] = .string(key)
            params["_meta"] = .object(meta)
        }
        let forwarded = JSONRPC.request(id: .string(key), request.method, .object(params))
        let (answers, answer) = AsyncStream.makeStream(of: JSONValue.self, bufferingPolicy: .bufferingOldest(1))
        modern.withLock {
            $0.exchanges[key] = Exchange(clientID: request.id, progressToken: token, notify: notify, answer: answer, core: core)
        }
        return await withTaskCancellationHandler {
            // Requests of stateless clients are decided concurrently; an answer that comes first is kept.
            await core.fromClient(Data(forwarded.jsonString().utf8))
            for await first in answers { return first }
            return JSONRPC.error(id: request.id, .internalError("cancelled: the client closed the stream"))
        } onCancel: {
            // The client closed the stream: the server is told, and the exchange ends without an answer.
            self.finish(key, with: JSONRPC.error(id: request.id, .internalError("cancelled: the client closed the stream")), abandoned: true)
            Task {
                await core.fromClient(
                    Data(JSONRPC.notification("notifications/cancelled", ["requestId": .string(key)]).jsonString().utf8))
            }
        }
    }

    /// The grant's core on the shared server connection of modern clients; the connection is made when there is
    /// none (or it ended).
    private func upstream(grant: String?) throws -> ProxyCore {
        try modern.withLock { state throws -> ProxyCore in
            var upstream: Upstream
            if let existing = state.upstream {
                upstream = existing
            } else {
                let server = try upstreamServer.connect()
                // The server may speak only 2025-11-25: the bridge then does the handshake and translates.
                let bridge = EraBridge(toServer: server.send)
                bridge.attach { [weak self] line in await self?.fromServer(line) }
                upstream = Upstream(server: server, bridge: bridge)
                Task { [weak self] in
                    for await line in server.messages() { await bridge.received(line) }
                    self?.upstreamEnded(bridge, server.exitDescription())
                }
            }
            if let core = upstream.cores[grant ?? ""] { return core }
            let core = proxy.makeCore(
                session: nil, grant: grant,
                toClient: { [weak self] data in self?.fromUpstream(data) },
                toServer: upstream.bridge.send)
            upstream.cores[grant ?? ""] = core
            state.upstream = upstream
            return core
        }
    }

    /// What the server sent: an answer or an exchange's progress goes to the core of that exchange; anything else
    /// (it has no stream to go to) through any core, which passes it on or drops it as usual.
    private func fromServer(_ line: Data) async {
        let summary = JSONValue.summarizeMessage(line, lenient: true)
        let key = summary?.method == nil ? summary?.id?.stringValue : nil
        let core = modern.withLock { state -> ProxyCore? in
            if let key, let exchange = state.exchanges[key] { return exchange.core }
            if let key, let core = state.abandoned.removeValue(forKey: key) { return core }
            if key == nil, summary?.method == "notifications/progress",
                let token = (try? JSONValue.parse(line))?["params"]?["progressToken"]?.stringValue,
                let exchange = state.exchanges[token]
            {
                return exchange.core
            }
            return state.upstream?.cores.values.first
        }
        await core?.fromServer(line)
    }

    private func upstreamEnded(_ bridge: EraBridge, _ reason: String) {
        let cores = modern.withLock { state -> [ProxyCore] in
            guard let upstream = state.upstream, upstream.bridge === bridge else { return [] }
            state.upstream = nil
            return Array(upstream.cores.values)
        }
        for core in cores {
            core.serverEnded(reason)
            proxy.forget(core)
        }
    }

    /// A message from the proxy's core for a modern client: an answer (restored to the client's id) or a
    /// notification for one exchange (its progress token restored). Anything else has no stream to go to.
    private func fromUpstream(_ data: Data) {
        let message = Self.readable(data)
        if message["method"] == nil, let key = message["id"]?.stringValue {
            guard let exchange = modern.withLock({ $0.exchanges[key] }) else { return }
            finish(key, with: message.merging(["id": exchange.clientID]))
            return
        }
        guard message["method"]?.stringValue == "notifications/progress",
            let key = message["params"]?["progressToken"]?.stringValue,
            let exchange = modern.withLock({ $0.exchanges[key] }), let token = exchange.progressToken,
            var params = message["params"]?.objectValue
        else { return }
        params["progressToken"] = token
        let restored = message.merging(["params": .object(params)])
        Task { await exchange.notify(restored) }
    }

    /// `abandoned`: the client is gone, but the server may still answer (see `Modern.abandoned`).
    private func finish(_ key: String, with answer: JSONValue, abandoned: Bool = false) {
        let exchange = modern.withLock { state -> Exchange? in
            guard let exchange = state.exchanges.removeValue(forKey: key) else { return nil }
            if abandoned {
                state.abandoned[key] = exchange.core
                state.abandonedOrder.append(key)
                if state.abandonedOrder.count > ProxyCore.cancelledLimit {
                    state.abandoned[state.abandonedOrder.removeFirst()] = nil
                }
            }
            return exchange
        }
        guard let exchange else { return }
        exchange.answer.yield(answer)
        exchange.answer.finish()
    }

    /// A message from a core for an HTTP client, parsed. One the proxy cannot read (a lone surrogate escape, a
    /// number out of range) becomes an error under its id when one can be read: dropping it would leave the
    /// client waiting for an answer that never comes.
    static func readable(_ data: Data) -> JSONValue {
        if let message = try? JSONValue.parse(data) { return message }
        let id = JSONValue.summarizeMessage(data, lenient: true)?.id ?? .null
        return JSONRPC.error(id: id, .internalError("The server's message could not be read (refused by corral proxy)"))
    }

    /// Stops the shared servers (at shutdown) and ends listen streams.
    func stop() async {
        listeners.closeAll()
        let upstream = modern.withLock { state -> Upstream? in
            defer { state.upstream = nil }
            return state.upstream
        }
        await upstream?.server.stop(grace: .seconds(2))
    }
}

/// One 2025-11-25 HTTP session of the proxy: its messages go through its `ProxyCore` to its own server process,
/// one at a time and in the order they came (a session is one ordered stream, as on stdio).
final class ProxyLegacySession: LegacySession {
    private let core: ProxyCore
    private let server: any UpstreamConnection
    private let proxy: PolicyProxy
    private let inbox: AsyncStream<JSONValue>.Continuation

    init(core: ProxyCore, server: any UpstreamConnection, proxy: PolicyProxy) {
        self.core = core
        self.server = server
        self.proxy = proxy
        let (messages, inbox) = AsyncStream.makeStream(of: JSONValue.self)
        self.inbox = inbox
        Task {
            for await message in messages { await core.fromClient(Data(message.jsonString().utf8)) }
        }
    }

    func receive(_ message: JSONValue) {
        inbox.yield(message)
    }

    func close() async {
        inbox.finish()
        await server.stop(grace: .seconds(2))
        proxy.forget(core)
    }
}
