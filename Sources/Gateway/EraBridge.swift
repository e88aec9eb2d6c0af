import CorralJSON
import Foundation
import MCPCore
import Synchronization

/// Lets 2026-07-28 clients use a stdio server that speaks only 2025-11-25, between a `ProxyCore` (whose decisions
/// are made already) and the server process.
///
/// At a modern client's first request the server is asked `server/discover`. A server that answers it is modern
/// and everything passes untouched from then on. A server that does not (-32601, or any other non-discover
/// answer, as the Python SDK's probe rules say) gets an `initialize` and `notifications/initialized` from the
/// bridge itself, and from then on each modern request is sent as 2025-11-25: `_meta`'s protocol keys come off,
/// and the answer comes back stamped as a 2026-07-28 result (`resultType`, `serverInfo`, cache hints on
/// `tools/list`). `server/discover` is answered from the handshake. The server's own requests (which a modern
/// client cannot be sent) are refused with -32601, `subscriptions/listen` is held here and hears the server's
/// `tools/list_changed`. A legacy client's `initialize` makes the bridge step aside for good.
final class EraBridge: Sendable {
    private enum Mode {
        case undecided
        /// Waiting for the server's answer to our discover (then our initialize); client messages wait.
        case probing(queue: [Data], meta: JSONValue)
        case transparent
        case translating(handshake: Handshake)
    }

    private struct Handshake {
        let serverInfo: JSONValue
        let capabilities: JSONValue
        let instructions: JSONValue?
        /// The server as a 2026-07-28 result names it, and the text every answer is stamped with (both made once).
        let description: ServerDescription
        let stamp: AnswerStamp

        init(serverInfo: JSONValue, capabilities: JSONValue, instructions: JSONValue?) {
            self.serverInfo = serverInfo
            self.capabilities = capabilities
            self.instructions = instructions
            description = ServerDescription(
                name: serverInfo["name"]?.stringValue ?? "unknown", version: serverInfo["version"]?.stringValue ?? "0",
                instructions: instructions?.stringValue)
            stamp = AnswerStamp(description)
        }
    }

    private struct State {
        var mode = Mode.undecided
        /// Requests sent as 2025-11-25, by id: their method (a tools/list answer gets cache hints).
        var translated: [String: String] = [:]
        /// Held `subscriptions/listen` requests (their ids), for the server's tools/list_changed.
        var listens: [JSONValue] = []
        var initializeSent = false
    }

    /// How long a server may leave our `server/discover` unanswered before it gets an `initialize` anyway (a
    /// strict 2025-11-25 server may ignore requests before its handshake).
    static let discoverPatience: Duration = .seconds(3)

    static let discoverID: JSONValue = "corral-era-discover"
    static let initializeID: JSONValue = "corral-era-initialize"

    private let toServer: @Sendable (Data) async -> Void
    /// In a class, not as a bare function value: a function type inside `Mutex`'s generic storage was reabstracted
    /// on every `withLock` and written back wrapped in two more thunks, so each message through the bridge made
    /// the next one slower (a proxy's added latency grew from 0.3 to 1.5 ms over 6,000 calls).
    private final class CoreSink: Sendable {
        let deliver: @Sendable (Data) async -> Void
        init(_ deliver: @escaping @Sendable (Data) async -> Void) { self.deliver = deliver }
    }
    private let toCore = Mutex<CoreSink?>(nil)
    private let state = Mutex(State())

    init(toServer: @escaping @Sendable (Data) async -> Void) {
        self.toServer = toServer
    }

    /// Where what the server (or the bridge in its place) answers goes: the core's `fromServer`.
    func attach(_ sink: @escaping @Sendable (Data) async -> Void) {
        toCore.withLock { $0 = CoreSink(sink) }
    }

    // MARK: - core → server

    /// A message the core lets through to the server.
    func send(_ data: Data) async {
        enum Next {
            case forward(Data)
            case translate(Data, Handshake)
            case probe(JSONValue)
            case held
        }
        let next = state.withLock { state -> Next in
            switch state.mode {
            case .transparent:
                return .forward(data)
            case .translating(let handshake):
                return .translate(data, handshake)
            case .probing(let queue, let meta):
                state.mode = .probing(queue: queue + [data], meta: meta)
                return .held
            case .undecided:
                guard let message = try? JSONValue.parse(data), message.objectValue != nil else {
                    return .forward(data)  // nothing we could read: the server refuses it, and it settles nothing
                }
                // Only a request settles the era: a notification (the proxy's own `notifications/cancelled` for a
                // closed stream has no `_meta`) may come before any.
                guard message["id"] != nil else { return .forward(data) }
                guard message["method"] != nil, message["params"]?.hasModernEnvelope == true,
                    let meta = message["params"]?["_meta"]
                else {
                    state.mode = .transparent  // a 2025-11-25 client: not ours
                    return .forward(data)
                }
                state.mode = .probing(queue: [data], meta: meta)
                return .probe(meta)
            }
        }
        switch next {
        case .forward(let data): await toServer(data)
        case .translate(let data, let handshake): await translate(data, handshake)
        case .probe(let meta):
            await send(JSONRPC.request(id: Self.discoverID, "server/discover", ["_meta": meta]), to: toServer)
            Task { [weak self] in
                try? await Task.sleep(for: Self.discoverPatience)
                await self?.initializeIfStillProbing(meta)
            }
        case .held: break
        }
    }

    /// Methods the bridge answers itself instead of sending them on.
    private static let answeredHere: Set<String> = [
        "server/discover", "ping", "logging/setLevel", "initialize", "subscriptions/listen",
    ]

    private func translate(_ data: Data, _ handshake: Handshake) async {
        // The usual request goes on as its text with the protocol keys cut out (`strippedRequest`); others are parsed.
        if let summary = JSONValue.summarizeMessage(data), let method = summary.method, let id = summary.id,
            !Self.answeredHere.contains(method), let legacy = ModernEnvelope.strippedRequest(data, summary: summary)
        {
            state.withLock { $0.translated[JSONRPC.key(id)] = method }
            await toServer(legacy)
            return
        }
        guard let message = try? JSONValue.parse(data), let method = message["method"]?.stringValue else {
            await toServer(data)  // an answer to a server request, or what the server will refuse
            return
        }
        let id = message["id"]
        if let id {
            switch method {
            case "server/discover":
                await reply(JSONRPC.response(id: id, result: discoverResult(handshake)))
                return
            case "ping", "logging/setLevel", "initialize":
                await reply(JSONRPC.error(id: id, .methodNotFound(method, "removed in 2026-07-28")))
                return
            case "subscriptions/listen":
                await listen(id: id, params: message["params"] ?? [:])
                return
            default:
                state.withLock { $0.translated[JSONRPC.key(id)] = method }
            }
        } else if method == "notifications/cancelled", let cancelled = message["params"]?["requestId"] {
            // The server need not answer a cancelled request (MCP says it should not): what is kept for its answer
            // goes now, or every cancellation would leave it behind. A late answer passes as the server wrote it.
            state.withLock { state in
                state.translated[JSONRPC.key(cancelled)] = nil
                state.listens.removeAll { $0 == cancelled }
            }
        }
        await send(message.merging(["params": ModernEnvelope.strippedParams(message["params"])]), to: toServer)
    }

    private func discoverResult(_ handshake: Handshake) -> JSONValue {
        var capabilities = handshake.capabilities.objectValue ?? [:]
        capabilities["extensions"] = capabilities["extensions"] ?? [:]
        var result: [String: JSONValue] = [
            "resultType": "complete", "supportedVersions": .array(ProtocolVersions.modern.map(JSONValue.string)),
            "capabilities": .object(capabilities), "serverInfo": handshake.serverInfo,
            "ttlMs": 3_600_000, "cacheScope": "public", "_meta": [MetaKey.serverInfo: handshake.serverInfo],
        ]
        if let instructions = handshake.instructions { result["instructions"] = instructions }
        return .object(result)
    }

    private func listen(id: JSONValue, params: JSONValue) async {
        let tools = params["notifications"]?["toolsListChanged"]?.boolValue ?? false
        let meta: JSONValue = [MetaKey.subscriptionID: id]
        await reply(JSONRPC.notification(
            "notifications/subscriptions/acknowledged",
            ["notifications": tools ? ["toolsListChanged": true] : [:], "_meta": meta]))
        if tools { state.withLock { $0.listens.append(id) } }
    }

    // MARK: - server → core

    /// A line the server wrote.
    func received(_ line: Data) async {
        enum Next {
            case pass
            case probeAnswered(JSONValue, queue: [Data], meta: JSONValue)
            case translate(Handshake)
        }
        let next = state.withLock { state -> Next in
            switch state.mode {
            case .undecided, .transparent: return .pass
            case .probing(let queue, let meta):
                guard let message = try? JSONValue.parse(line), message["method"] == nil,
                    let id = message["id"], id == Self.discoverID || id == Self.initializeID
                else { return .pass }
                return .probeAnswered(message, queue: queue, meta: meta)
            case .translating(let handshake):
                return .translate(handshake)  // a final mode: the line is read outside the lock, once
            }
        }
        switch next {
        case .pass:
            await deliver(line)
        case .probeAnswered(let message, let queue, let meta):
            await probeAnswered(message, queue: queue, meta: meta)
        case .translate(let handshake):
            // The usual answer is stamped as its text (`AnswerStamp`); others are parsed.
            if let summary = JSONValue.summarizeMessage(line), summary.method == nil, let id = summary.id {
                let method = state.withLock { $0.translated.removeValue(forKey: JSONRPC.key(id)) }
                guard let method, summary.hasResult else { return await deliver(line) }
                if let stamped = handshake.stamp.stamped(line, method: method, summary: summary) { return await deliver(stamped) }
                guard let message = try? JSONValue.parse(line) else { return await deliver(line) }
                return await translateAnswer(message, line: line, method: method, handshake)
            }
            guard let message = try? JSONValue.parse(line) else { return await deliver(line) }
            var method: String?
            if message["method"] == nil, let id = message["id"] {
                method = state.withLock { $0.translated.removeValue(forKey: JSONRPC.key(id)) }
            }
            await translateAnswer(message, line: line, method: method, handshake)
        }
    }

    private func probeAnswered(_ message: JSONValue, queue: [Data], meta: JSONValue) async {
        if message["id"] == Self.discoverID {
            if message["result"]?["supportedVersions"]?.arrayValue?.contains(where: { ProtocolVersions.modern.contains($0.stringValue ?? "") }) == true {
                state.withLock { $0.mode = .transparent }
                for data in queue { await toServer(data) }
                return
            }
            await sendInitialize(meta)
            return
        }
        guard let result = message["result"] else {
            // Neither era: every waiting request is answered, and the next one tries again.
            state.withLock { state in
                state.mode = .undecided
                state.initializeSent = false
            }
            let reason = message["error"]?["message"]?.stringValue ?? "no answer"
            for data in queue {
                guard let request = try? JSONValue.parse(data), let id = request["id"] else { continue }
                await reply(JSONRPC.error(id: id, .internalError("the server behind corral proxy speaks neither 2026-07-28 nor 2025-11-25 (initialize: \(reason))")))
            }
            return
        }
        let handshake = Handshake(
            serverInfo: result["serverInfo"] ?? ["name": "unknown", "version": "0"],
            capabilities: result["capabilities"] ?? [:], instructions: result["instructions"])
        await send(JSONRPC.notification("notifications/initialized"), to: toServer)
        state.withLock { $0.mode = .translating(handshake: handshake) }
        for data in queue { await translate(data, handshake) }
    }

    private func translateAnswer(_ message: JSONValue, line: Data, method: String?, _ handshake: Handshake) async {
        if let request = message["method"]?.stringValue {
            if let id = message["id"] {
                // A 2026-07-28 client takes no requests from its server: the server hears so at once.
                await send(JSONRPC.error(id: id, .methodNotFound(request, "the client behind corral proxy speaks 2026-07-28, which has no server requests")), to: toServer)
                return
            }
            if request == "notifications/tools/list_changed" {
                for id in state.withLock({ $0.listens }) {
                    await reply(JSONRPC.notification("notifications/tools/list_changed", ["_meta": [MetaKey.subscriptionID: id]]))
                }
                return
            }
            return await deliver(line)  // progress and other notifications
        }
        guard let method, let result = message["result"] else { return await deliver(line) }
        await reply(message.merging(["result": handshake.description.stamp(result, method: method)]))
    }

    private func initializeIfStillProbing(_ meta: JSONValue) async {
        let waiting = state.withLock { state -> Bool in
            guard case .probing = state.mode, !state.initializeSent else { return false }
            return true
        }
        if waiting { await sendInitialize(meta) }
    }

    private func sendInitialize(_ meta: JSONValue) async {
        let first = state.withLock { state -> Bool in
            defer { state.initializeSent = true }
            return !state.initializeSent
        }
        guard first else { return }
        let clientInfo = meta[MetaKey.clientInfo] ?? ["name": "corral-proxy", "version": "1"]
        await send(JSONRPC.request(id: Self.initializeID, "initialize", [
            "protocolVersion": .string(ProtocolVersions.latestLegacy), "capabilities": [:], "clientInfo": clientInfo,
        ]), to: toServer)
    }

    // MARK: - helpers

    private func reply(_ message: JSONValue) async {
        await deliver(Data(message.jsonString().utf8))
    }

    private func deliver(_ line: Data) async {
        await toCore.withLock { $0 }?.deliver(line)
    }

    private func send(_ message: JSONValue, to sink: @Sendable (Data) async -> Void) async {
        await sink(Data(message.jsonString().utf8))
    }
}
