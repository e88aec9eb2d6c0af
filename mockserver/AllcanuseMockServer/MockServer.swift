import AllcanuseMock
import CorralJSON
import Foundation
import Logging
import MCP
import Policy

/// `tools/list` and `tools/call` as raw JSON: the SDK's typed `Tool` drops fields it does not know, and a typed
/// `CallTool.Parameters` that fails to decode (arguments not an object) is answered -32603 instead of a clear result.
enum RawListTools: MCP.Method {
    static let name = "tools/list"
    typealias Parameters = Value
    typealias Result = Value
}

enum RawCallTool: MCP.Method {
    static let name = "tools/call"
    typealias Parameters = Value
    typealias Result = Value
}

/// The allcanuse-mock MCP server: the Allcanuse tools over `AllcanuseService`, each call decided by the policy first.
public enum MockServer {
    public static let version = "0.1.0"

    /// The policy used without `--policy`: everything allowed, with a generous per-session cap so that a runaway
    /// agent loop is still stopped. Documented in the README.
    public static let embeddedDefaultPolicy = """
        {
          "version": "1",
          "default": "allow",
          "all_tools": { "limits": [ { "counter": "all_calls", "window": "minute", "max": 6000, "scope": "session" } ] }
        }
        """

    /// A server with the tool handlers registered; start it on a transport.
    public static func make(
        service: AllcanuseService, policy: PolicyEvaluator, identity: CallIdentity, logger: Logger,
        callRecord: CallRecord? = nil
    ) async -> Server {
        let server = Server(
            name: "allcanuse-mock", version: version,
            instructions: "Background tasks backed by real, sandboxed child processes (a mock of the Allcanuse task tools).",
            capabilities: .init(tools: .init(listChanged: false)))
        await server.withMethodHandler(RawListTools.self) { _ in
            let tools = policy.filterToolList(ToolCatalog.tools)
            return Value(json: ["tools": .array(tools)])
        }
        await server.withMethodHandler(RawCallTool.self) { [weak server] params in
            var progress: AllcanuseService.ProgressReporter?
            if let token = progressToken(params), let server {
                progress = { done, total, message in
                    try? await server.notify(
                        ProgressNotification.message(
                            .init(progressToken: token, progress: done, total: total, message: message)))
                }
            }
            return await call(
                params, service: service, policy: policy, identity: identity, logger: logger, progress: progress,
                callRecord: callRecord)
        }
        return server
    }

    /// Starts `server` on `transport` with `tools/call` answered by `ToolCallFastPath` (same policy, record and
    /// service as the server's own handler, which remains for batches).
    public static func start(
        _ server: Server, on transport: any Transport, service: AllcanuseService, policy: PolicyEvaluator,
        identity: CallIdentity, logger: Logger, callRecord: CallRecord? = nil
    ) async throws {
        let fast = ToolCallFastPath(wrapping: transport, logger: logger) { params, progress in
            await call(
                json: params, service: service, policy: policy, identity: identity, logger: logger, progress: progress,
                callRecord: callRecord)
        }
        try await server.start(transport: fast)
    }

    static func progressToken(_ params: Value) -> ProgressToken? {
        switch params.json["_meta"]?["progressToken"] {
        case .string(let token)?: return .string(token)
        case .int(let token)?: return .integer(token)
        default: return nil
        }
    }

    static func call(
        _ params: Value, service: AllcanuseService, policy: PolicyEvaluator, identity: CallIdentity, logger: Logger,
        progress: AllcanuseService.ProgressReporter? = nil, callRecord: CallRecord? = nil
    ) async -> Value {
        Value(
            json: await call(
                json: params.json, service: service, policy: policy, identity: identity, logger: logger,
                progress: progress, callRecord: callRecord))
    }

    /// `tools/call` params in, `CallToolResult` out, as raw JSON (the fast path and the SDK handler share it).
    public static func call(
        json request: JSONValue, service: AllcanuseService, policy: PolicyEvaluator, identity: CallIdentity,
        logger: Logger, progress: AllcanuseService.ProgressReporter? = nil, callRecord: CallRecord? = nil
    ) async -> JSONValue {
        let name = request["name"]?.stringValue
        let arguments = request["arguments"]
        // The policy sees exactly what arrived: a missing name or arguments that are not an object are denied there.
        let decision = policy.decide(tool: name, arguments: arguments, identity: identity)
        callRecord?.record(tool: name ?? "", arguments: arguments, refusedBy: decision.isAllowed ? nil : decision.rule)
        if let denial = decision.deniedToolResult {
            logger.info("denied \(name ?? "(no name)"): \(decision.rule): \(decision.message)")
            return denial
        }
        guard let name else {
            return result(["error": "tools/call needs a tool name"], isError: true)
        }
        let outcome = await service.call(name, arguments: arguments, progress: progress)
        return result(outcome.value, isError: outcome.isError)
    }

    /// The JSON object as `structuredContent` and as text, as the issue asks.
    static func result(_ value: JSONValue, isError: Bool) -> JSONValue {
        let text = isError ? (value["error"]?.stringValue ?? value.jsonString()) : value.jsonString(pretty: false)
        return [
            "content": [["type": "text", "text": .string(text)]],
            "structuredContent": value,
            "isError": .bool(isError),
        ]
    }
}

extension Value {
    /// From our JSON value (a data-URL-looking string stays a string here; the SDK may still rewrite it on encode).
    init(json: JSONValue) {
        switch json {
        case .null: self = .null
        case .bool(let value): self = .bool(value)
        case .int(let value): self = .int(value)
        case .double(let value): self = .double(value)
        case .string(let value): self = .string(value)
        case .array(let values): self = .array(values.map(Value.init(json:)))
        case .object(let object): self = .object(object.mapValues(Value.init(json:)))
        }
    }

    var json: JSONValue {
        switch self {
        case .null: return .null
        case .bool(let value): return .bool(value)
        case .int(let value): return .int(value)
        case .double(let value): return .double(value)
        case .string(let value): return .string(value)
        case .data(let mimeType, let data):
            // The SDK turned a data-URL string into bytes while decoding; give the agent's string back.
            return .string("data:\(mimeType ?? "");base64,\(data.base64EncodedString())")
        case .array(let values): return .array(values.map(\.json))
        case .object(let object): return .object(object.mapValues(\.json))
        }
    }
}
