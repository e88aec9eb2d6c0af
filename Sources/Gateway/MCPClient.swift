import CorralJSON
import Foundation
import MCPCore
import Synchronization

/// The client side of MCP in both eras, over any `MessageTransport`: what `AgentSandbox` talks through.
///
/// `connect` probes `server/discover` at 2026-07-28 (as the Python SDK's `mode="auto"` does): a discover result
/// naming a modern version means 2026-07-28, and every request then carries its `_meta`; anything else (an error, an
/// unreadable answer) means 2025-11-25, and the client does the `initialize` handshake. Requests run concurrently,
/// matched by id. A server request (2025-11-25 `elicitation/create`) goes to `onServerRequest`; the server's
/// notifications are dropped.
public final class MCPClient: Sendable {
    public enum CallError: Error, Sendable, Equatable, CustomStringConvertible {
        /// The server answered with a JSON-RPC error.
        case server(code: Int, message: String)
        /// The server went away (or its answer did not come): the request may have run.
        case connectionLost(String)
        /// The server's answer came but is not JSON this client can read: the request may have run.
        case unreadableAnswer(String)

        public var description: String {
            switch self {
            case .server(let code, let message): "the MCP server answered with error \(code): \(message)"
            case .connectionLost(let why): "the MCP server went away: \(why)"
            case .unreadableAnswer(let why): "the MCP server's answer could not be read (the request may have run): \(why)"
            }
        }
    }

    /// Marks a JSON-RPC error that a transport made up because the answer never came (`data[answerLostKey]`): the
    /// call may have run, so it is reported as a lost connection, not as the server's refusal.
    public static let answerLostKey = "corral/answerLost"

    /// Answers a server's request (its method and params) with a result, or nil for "method not found".
    public typealias ServerRequestHandler = @Sendable (_ method: String, _ params: JSONValue) async -> JSONValue?

    private struct State {
        var pending: [String: CheckedContinuation<Result<JSONValue, CallError>, Never>] = [:]
        var next = 0
        var lost: String?
        var era: MCPEra?
    }

    private let transport: any MessageTransport
    private let clientInfo: JSONValue
    private let capabilities: JSONValue
    private let onServerRequest: ServerRequestHandler?
    private let state = Mutex(State())

    /// `canElicit`: declare the elicitation capability (the client answers `elicitation/create`, in 2025-11-25 as
    /// a server request, in 2026-07-28 as an input request).
    /// `extensions`: extensions to declare in 2026-07-28 (`clientCapabilities.extensions`), such as the Tasks one.
    public init(
        transport: any MessageTransport, name: String, version: String = "1", canElicit: Bool = false,
        extensions: [String] = [], onServerRequest: ServerRequestHandler? = nil
    ) {
        self.transport = transport
        self.clientInfo = ["name": .string(name), "version": .string(version)]
        var capabilities: [String: JSONValue] = canElicit ? ["elicitation": [:]] : [:]
        if !extensions.isEmpty {
            capabilities["extensions"] = .object(Dictionary(uniqueKeysWithValues: extensions.map { ($0, [:]) }))
        }
        self.capabilities = .object(capabilities)
        self.onServerRequest = onServerRequest
    }

    /// The era settled by `connect`.
    public var era: MCPEra? { state.withLock { $0.era } }

    /// Connects, settles the era and returns what the server said about itself (`name`, `version`,
    /// `protocolVersion`).
    public func connect() async throws(CallError) -> JSONValue {
        do {
            try await transport.connect()
        } catch {
            throw .connectionLost(error.description)
        }
        let incoming = transport.receive()
        Task { [self] in
            do {
                for try await message in incoming { received(message) }
                lose("the server closed the connection")
            } catch {
                lose((error as? TransportError)?.description ?? "\(error)")
            }
        }
        state.withLock { $0.era = .modern(version: ProtocolVersions.latestModern) }
        if let discovered = try? await request("server/discover", [:]),
            let versions = discovered["supportedVersions"]?.arrayValue?.compactMap(\.stringValue),
            let version = ProtocolVersions.modern.last(where: versions.contains)
        {
            state.withLock { $0.era = .modern(version: version) }
            let info = discovered["_meta"]?[MetaKey.serverInfo] ?? discovered["serverInfo"] ?? [:]
            return info.merging(["protocolVersion": .string(version)])
        }
        if let lost = state.withLock({ $0.lost }) { throw .connectionLost(lost) }
        state.withLock { $0.era = .legacy(version: ProtocolVersions.latestLegacy) }
        let initialized = try await request(
            "initialize",
            ["protocolVersion": .string(ProtocolVersions.latestLegacy), "capabilities": capabilities, "clientInfo": clientInfo])
        let version = initialized["protocolVersion"]?.stringValue ?? ProtocolVersions.latestLegacy
        state.withLock { $0.era = .legacy(version: version) }
        try await notify("notifications/initialized")
        return (initialized["serverInfo"] ?? [:]).merging(["protocolVersion": .string(version)])
    }

    /// Sends a request and returns its result (in 2026-07-28 with the `_meta` this client adds).
    public func request(_ method: String, _ params: JSONValue) async throws(CallError) -> JSONValue {
        let (id, era) = state.withLock { state -> (Int, MCPEra?) in
            state.next += 1
            return (state.next, state.era)
        }
        var object = params.objectValue ?? [:]
        if case .modern(let version)? = era {
            var meta = object["_meta"]?.objectValue ?? [:]
            meta[MetaKey.protocolVersion] = .string(version)
            meta[MetaKey.clientCapabilities] = capabilities
            meta[MetaKey.clientInfo] = clientInfo
            object["_meta"] = .object(meta)
        }
        let message = JSONRPC.request(id: .int(id), method, .object(object))
        let key = JSONRPC.key(.int(id))
        let outcome = await withCheckedContinuation { (answer: CheckedContinuation<Result<JSONValue, CallError>, Never>) in
            let lost = state.withLock { state -> String? in
                if state.lost == nil { state.pending[key] = answer }
                return state.lost
            }
            if let lost {
                answer.resume(returning: .failure(.connectionLost(lost)))
                return
            }
            let transport = self.transport
            Task {
                do {
                    try await transport.send(Data(message.jsonString().utf8))
                } catch {
                    self.finish(key, .failure(.connectionLost((error as? TransportError)?.description ?? "\(error)")))
                }
            }
        }
        return try outcome.get()
    }

    public func notify(_ method: String, _ params: JSONValue? = nil) async throws(CallError) {
        do {
            try await transport.send(Data(JSONRPC.notification(method, params).jsonString().utf8))
        } catch {
            throw .connectionLost(error.description)
        }
    }

    public func close() async {
        lose("the client closed the connection")
        await transport.disconnect()
    }

    // MARK: - inbound

    private func received(_ data: Data) {
        let message: JSONValue
        do {
            message = try JSONValue.parse(data)
        } catch {
            // Its request still ends (or its caller would wait for ever), when the text says which one it answers: an
            // answer (a result or an error, no method); a server's own request has ids of the server's, which may
            // equal one of ours.
            if let summary = JSONValue.summarizeMessage(data, lenient: true), summary.method == nil,
                summary.hasResult || summary.hasError, let id = summary.id
            {
                finish(JSONRPC.key(id), .failure(.unreadableAnswer("\(error)")))
            }
            return
        }
        for element in message.arrayValue ?? [message] {
            switch JSONRPCMessage.classify(element) {
            case .success(.response(let id, let result)):
                finish(JSONRPC.key(id), .success(result))
            case .success(.errorResponse(let id, let error)):
                let failure = JSONRPCError(json: error) ?? .internalError("an unreadable error: \(error.jsonString())")
                if failure.data?[Self.answerLostKey] == true {
                    finish(JSONRPC.key(id), .failure(.connectionLost(failure.message)))
                } else {
                    finish(JSONRPC.key(id), .failure(.server(code: failure.code, message: failure.message)))
                }
            case .success(.request(let id, let method, let params)):
                answerServerRequest(id: id, method: method, params: params)
            default:
                break  // notifications (progress, logs): not needed by an agent's calls
            }
        }
    }

    private func answerServerRequest(id: JSONValue, method: String, params: JSONValue) {
        let handler = onServerRequest
        let transport = self.transport
        Task {
            let answer: JSONValue
            if method == "ping" {
                answer = JSONRPC.response(id: id, result: [:])
            } else if let result = await handler?(method, params) {
                answer = JSONRPC.response(id: id, result: result)
            } else {
                answer = JSONRPC.error(id: id, .methodNotFound(method))
            }
            try? await transport.send(Data(answer.jsonString().utf8))
        }
    }

    private func finish(_ key: String, _ outcome: Result<JSONValue, CallError>) {
        state.withLock { $0.pending.removeValue(forKey: key) }?.resume(returning: outcome)
    }

    private func lose(_ reason: String) {
        let pending = state.withLock { state -> [CheckedContinuation<Result<JSONValue, CallError>, Never>] in
            if state.lost == nil { state.lost = reason }
            defer { state.pending.removeAll() }
            return Array(state.pending.values)
        }
        let why = state.withLock { $0.lost } ?? reason
        for answer in pending { answer.resume(returning: .failure(.connectionLost(why))) }
    }
}
