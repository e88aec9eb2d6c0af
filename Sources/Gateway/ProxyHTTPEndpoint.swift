import CorralJSON
import Foundation
import MCPCore
import MCPHTTP
import Synchronization

/// `corral proxy --http`: the policy between Streamable HTTP clients of both eras and a stdio MCP server.
///
/// A 2025-11-25 client gets a server process per session, as before: its session is one `ProxyCore` between the
/// session's streams and that process. 2026-07-28 clients have no session, so all of them share one server process
/// (started at the first modern request, and again after it exits), one `ProxyCore` deciding their calls, and ids
/// of the proxy's own on the pipe: each exchange's id and progress token are replaced on the way in and restored
/// on the way out, so that clients which reuse ids never meet. `subscriptions/listen` is answered here (a reload
/// announces `tools/list_changed` on it). A server that speaks only 2025-11-25 gets the handshake from an
/// `EraBridge`, which translates the modern clients' requests.
final class ProxyHTTPEndpoint: MCPHTTPEndpoint {
    private struct Exchange {
        let clientID: JSONValue
        let progressToken: JSONValue?
        let notify: @Sendable (JSONValue) async -> Void
        let answer: CheckedContinuation<JSONValue, Never>
    }

    private struct Modern {
        var server: ServerProcess?
        var core: ProxyCore?
        var exchanges: [String: Exchange] = [:]
        var next = 0
    }

    private let proxy: PolicyProxy
    private let serverCommand: [String]
    private let modern = Mutex(Modern())
    let listeners = ListenRegistry()

    init(proxy: PolicyProxy, serverCommand: [String]) {
        self.proxy = proxy
        self.serverCommand = serverCommand
    }

    // MARK: - 2025-11-25 sessions

    func openLegacySession(id: String, outlet: LegacyOutlet) async throws(JSONRPCError) -> any LegacySession {
        let server: ServerProcess
        do {
            server = try ServerProcess(command: serverCommand)
        } catch {
            throw .internalError("cannot start the server: \(error)")
        }
        let core = proxy.makeCore(
            session: id,
            toClient: { data in
                guard let message = try? JSONValue.parse(data) else { return }
                outlet.send(message)
            },
            toServer: server.write)
        let proxy = self.proxy
        let reader = Thread {
            LineReader.readLines(from: server.output) { core.fromServer($0) }
            // What the server still owed is answered with an error, and the session ends with it.
            core.serverEnded(server.exitDescription())
            proxy.forget(core)
            outlet.endSession()
        }
        reader.start()
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
            core = try upstream()
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
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (answer: CheckedContinuation<JSONValue, Never>) in
                modern.withLock {
                    $0.exchanges[key] = Exchange(clientID: request.id, progressToken: token, notify: notify, answer: answer)
                }
                core.fromClient(Data(forwarded.jsonString().utf8))
            }
        } onCancel: {
            // The client closed the stream: the server is told, and the exchange ends without an answer.
            core.fromClient(Data(JSONRPC.notification("notifications/cancelled", ["requestId": .string(key)]).jsonString().utf8))
            self.finish(key, with: JSONRPC.error(id: request.id, .internalError("cancelled: the client closed the stream")))
        }
    }

    /// The shared server process for modern clients, started when there is none (or it exited).
    private func upstream() throws -> ProxyCore {
        try modern.withLock { state throws -> ProxyCore in
            if let core = state.core { return core }
            let server = try ServerProcess(command: serverCommand)
            // The server may speak only 2025-11-25: the bridge then does the handshake and translates.
            let bridge = EraBridge(toServer: server.write)
            let core = proxy.makeCore(
                session: nil,
                toClient: { [weak self] data in self?.fromUpstream(data) },
                toServer: bridge.send)
            bridge.attach(core.fromServer)
            state.server = server
            state.core = core
            let reader = Thread { [weak self] in
                LineReader.readLines(from: server.output) { bridge.received($0) }
                core.serverEnded(server.exitDescription())
                self?.upstreamEnded(core)
            }
            reader.start()
            return core
        }
    }

    private func upstreamEnded(_ core: ProxyCore) {
        proxy.forget(core)
        modern.withLock { state in
            if state.core === core {
                state.core = nil
                state.server = nil
            }
        }
    }

    /// A message from the proxy's core for a modern client: an answer (restored to the client's id) or a
    /// notification for one exchange (its progress token restored). Anything else has no stream to go to.
    private func fromUpstream(_ data: Data) {
        guard let message = try? JSONValue.parse(data) else { return }
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

    private func finish(_ key: String, with answer: JSONValue) {
        modern.withLock { $0.exchanges.removeValue(forKey: key) }?.answer.resume(returning: answer)
    }

    /// Stops the shared server (at shutdown) and ends listen streams.
    func stop() async {
        listeners.closeAll()
        let server = modern.withLock { state -> ServerProcess? in
            defer {
                state.server = nil
                state.core = nil
            }
            return state.server
        }
        await server?.stop(grace: .seconds(2))
    }
}

/// One 2025-11-25 HTTP session of the proxy: its messages go through its `ProxyCore` to its own server process.
final class ProxyLegacySession: LegacySession {
    private let core: ProxyCore
    private let server: ServerProcess
    private let proxy: PolicyProxy

    init(core: ProxyCore, server: ServerProcess, proxy: PolicyProxy) {
        self.core = core
        self.server = server
        self.proxy = proxy
    }

    func receive(_ message: JSONValue) {
        core.fromClient(Data(message.jsonString().utf8))
    }

    func close() async {
        await server.stop(grace: .seconds(2))
        proxy.forget(core)
    }
}
