import CorralJSON
import Foundation
import Logging
import MCP
import Policy
import Synchronization

/// The in-process gateway an agent links: every tool call is decided by the policy before it reaches the MCP
/// server, tool lists are filtered, counters are rolled back when the server answers a call with a JSON-RPC error,
/// approval-required calls go to the agent's approval handler, and every decision goes to the audit sink.
///
/// The MCP side is the official SDK's `Client`; tool lists and results travel as raw JSON (`JSONValue`) so fields
/// the SDK's typed `Tool` does not know (e.g. `execution`) survive.
public final class AgentSandbox: Sendable {
    /// Where the MCP server is.
    public enum Connection: Sendable {
        /// Any SDK transport, e.g. one half of `InMemoryTransport.createConnectedPair()` with the server in-process.
        case transport(any Transport)
        /// A stdio MCP server run as a child process (`command[0]` is looked up in `PATH`); it is stopped by `close()`.
        case process(command: [String], environment: [String: String]? = nil)
        /// A Streamable HTTP endpoint, e.g. `http://127.0.0.1:8765/mcp`.
        case http(URL)
    }

    /// What the approval handler is asked.
    public struct ApprovalRequest: Sendable {
        public let tool: String
        public let arguments: [String: JSONValue]
        /// `tools.NAME.action`.
        public let rule: String
        /// The rule's `reason`, or a default: what to show the human.
        public let message: String
    }

    /// Returns true to let the call through (it is then still subject to the policy's limits).
    public typealias ApprovalHandler = @Sendable (ApprovalRequest) async -> Bool

    /// The outcome of `callTool`: the server's result, or the policy's denial rendered as a tool result.
    public struct ToolCallResult: Sendable {
        /// The final decision (after approval, if one was asked for).
        public let decision: Decision
        /// The MCP `CallToolResult` object as the server sent it, or the denial (`isError`, `[POLICY DENIED] …`).
        public let result: JSONValue

        public var isError: Bool { result["isError"]?.boolValue ?? false }
        public var wasDenied: Bool { !decision.isAllowed }
        public var structuredContent: JSONValue? { result["structuredContent"] }
        /// The text content items, joined by newlines.
        public var text: String {
            (result["content"]?.arrayValue ?? []).compactMap { $0["text"]?.stringValue }.joined(separator: "\n")
        }
    }

    public let evaluator: PolicyEvaluator
    public let identity: CallIdentity
    private let client: Client
    private let connectionState: ConnectionState
    private let approval: ApprovalHandler?
    private let audit: (any AuditSink)?
    /// What the server said about itself in `initialize`.
    public let serverInfo: JSONValue

    private init(
        evaluator: PolicyEvaluator, identity: CallIdentity, client: Client, connectionState: ConnectionState,
        approval: ApprovalHandler?, audit: (any AuditSink)?, serverInfo: JSONValue
    ) {
        self.evaluator = evaluator
        self.identity = identity
        self.client = client
        self.connectionState = connectionState
        self.approval = approval
        self.audit = audit
        self.serverInfo = serverInfo
    }

    /// Connects and initializes. `approval`: with none, approval-required calls are denied with a message saying so.
    public static func connect(
        policy: PolicyEvaluator, identity: CallIdentity, to connection: Connection,
        approval: ApprovalHandler? = nil, audit: (any AuditSink)? = nil,
        clientName: String = "corral-agent", logger: Logger? = nil
    ) async throws -> AgentSandbox {
        let client = Client(name: clientName, version: "1")
        let state = ConnectionState()
        let transport: any Transport
        switch connection {
        case .transport(let given):
            transport = given
        case .process(let command, let environment):
            transport = try ChildProcessTransport(
                command: command, environment: environment, logger: logger,
                onPeerClosed: { reason in
                    // The SDK client would wait forever (or spin) on a dead peer: fail what is pending now.
                    state.markLost(reason)
                    Task { await client.disconnect() }
                })
        case .http(let url):
            transport = StreamableHTTPClientTransport(
                endpoint: url, logger: logger, onAnswerLost: { id in state.markAnswerLost(id) })
        }
        let initialized: Initialize.Result
        do {
            initialized = try await client.connect(transport: transport)
        } catch {
            await client.disconnect()
            throw AgentSandboxError.cannotConnect(describe(error))
        }
        let info: JSONValue = [
            "name": .string(initialized.serverInfo.name), "version": .string(initialized.serverInfo.version),
            "protocolVersion": .string(initialized.protocolVersion),
        ]
        return AgentSandbox(
            evaluator: policy, identity: identity, client: client, connectionState: state, approval: approval,
            audit: audit, serverInfo: info)
    }

    /// Convenience: loads the policy from a file (every error with its JSON path on failure).
    public static func connect(
        policyFile: String, identity: CallIdentity, to connection: Connection,
        approval: ApprovalHandler? = nil, audit: (any AuditSink)? = nil
    ) async throws -> AgentSandbox {
        let policy = try Policy.load(contentsOfFile: policyFile)
        return try await connect(
            policy: PolicyEvaluator(policy: policy), identity: identity, to: connection, approval: approval,
            audit: audit)
    }

    /// The server's tools (every page) without those the policy hides, as raw JSON objects.
    public func listTools() async throws -> [JSONValue] {
        var tools: [JSONValue] = []
        var cursor: JSONValue? = nil
        var seenCursors: Set<JSONValue> = []
        repeat {
            let params: JSONValue = cursor.map { ["cursor": $0] } ?? [:]
            let page = try await request(RawListTools.self, params)
            tools += page["tools"]?.arrayValue ?? []
            cursor = page["nextCursor"].flatMap { $0.isNull ? nil : $0 }
            if let next = cursor, !seenCursors.insert(next).inserted {
                throw AgentSandboxError.server(code: -32603, message: "tools/list returned cursor \(next.jsonString()) twice")
            }
        } while cursor != nil
        return evaluator.filterToolList(tools)
    }

    /// Decides the call, asks for approval if the policy wants it, and forwards it when allowed. A denial is a
    /// normal result (`isError`, text `[POLICY DENIED] …`) and the server never sees the call. Throws
    /// `AgentSandboxError.server` when the server answers with a JSON-RPC error (the call's counters are rolled
    /// back first) and `.connectionLost` when the server went away.
    public func callTool(_ name: String, arguments: JSONValue = [:]) async throws -> ToolCallResult {
        var decision = decide(name, arguments)
        if decision.outcome == .approvalRequired, let pending = decision.pendingApproval {
            guard let approval else {
                let message = "\(pending.message); approval was required but this agent has no approval handler"
                return ToolCallResult(
                    decision: decision, result: PolicyDenial.toolResult(rule: pending.rule, message: message))
            }
            let approved = await approval(
                ApprovalRequest(tool: pending.tool, arguments: pending.arguments, rule: pending.rule, message: pending.message))
            let start = ContinuousClock.now
            decision = evaluator.resolveApproval(pending, approved: approved)
            record(decision, arguments, since: start)
        }
        if let denial = decision.deniedToolResult {
            return ToolCallResult(decision: decision, result: denial)
        }
        var params: [String: JSONValue] = ["name": .string(name)]
        if arguments.objectValue?.isEmpty == false { params["arguments"] = arguments }
        do {
            let result = try await request(RawCallTool.self, .object(params))
            return ToolCallResult(decision: decision, result: result)
        } catch let error as AgentSandboxError {
            // The server refused the call as a request: it did not run, so it does not count. (A lost connection
            // is not that: the call may have run.)
            if case .server = error { _ = try? decision.reservation?.rollback() }
            throw error
        }
    }

    /// Replaces the policy; applies to the next call. Returns the previous one.
    @discardableResult
    public func replacePolicy(_ policy: Policy) -> Policy { evaluator.replacePolicy(policy) }

    /// Disconnects (and stops a server run with `.process`). Calls still in flight fail with `connectionLost`
    /// (their counters stay spent: the server may have run them).
    public func close() async {
        connectionState.markLost("the agent closed the connection")
        await client.disconnect()
    }

    // MARK: - internals

    private func decide(_ name: String, _ arguments: JSONValue) -> Decision {
        let start = ContinuousClock.now
        let decision = evaluator.decide(tool: name, arguments: arguments, identity: identity)
        record(decision, arguments, since: start)
        return decision
    }

    private func record(_ decision: Decision, _ arguments: JSONValue, since start: ContinuousClock.Instant) {
        guard let audit else { return }
        let elapsed = (ContinuousClock.now - start).microseconds
        audit.record(AuditEntry(decision: decision, arguments: arguments, identity: identity, latencyMicroseconds: elapsed))
    }

    private func request<M: Method>(_ method: M.Type, _ params: M.Parameters) async throws -> M.Result {
        if let reason = connectionState.lostReason { throw AgentSandboxError.connectionLost(reason) }
        let request = M.request(params)
        do {
            let context = try await client.send(request)
            return try await context.value
        } catch let error as MCPError {
            if let reason = connectionState.lostReason { throw AgentSandboxError.connectionLost(reason) }
            // The transport made this error up because the answer never came: the call may have run.
            if connectionState.takeAnswerLost(JSONValue(request.id)) {
                throw AgentSandboxError.connectionLost(Self.describe(error))
            }
            switch error {
            case .transportError(let underlying):
                throw AgentSandboxError.connectionLost(Self.describe(underlying))
            case .connectionClosed:
                throw AgentSandboxError.connectionLost(Self.describe(error))
            default:
                throw AgentSandboxError.server(code: error.code, message: Self.describe(error))
            }
        } catch let error as AgentSandboxError {
            throw error
        } catch {
            if let reason = connectionState.lostReason { throw AgentSandboxError.connectionLost(reason) }
            throw AgentSandboxError.connectionLost(Self.describe(error))
        }
    }

    static func describe(_ error: any Error) -> String {
        (error as? MCPError)?.errorDescription ?? (error as? LocalizedError)?.errorDescription ?? "\(error)"
    }
}

public enum AgentSandboxError: Error, CustomStringConvertible, Equatable {
    /// The connection or `initialize` failed.
    case cannotConnect(String)
    /// The server answered with a JSON-RPC error.
    case server(code: Int, message: String)
    /// The server went away (its process exited, the HTTP endpoint stopped answering).
    case connectionLost(String)

    public var description: String {
        switch self {
        case .cannotConnect(let why): "cannot connect to the MCP server: \(why)"
        case .server(let code, let message): "the MCP server answered with error \(code): \(message)"
        case .connectionLost(let why): "the MCP server went away: \(why)"
        }
    }
}

/// `tools/list` and `tools/call` with raw JSON both ways: the SDK's typed results drop unknown fields.
enum RawListTools: MCP.Method {
    static let name = "tools/list"
    typealias Parameters = JSONValue
    typealias Result = JSONValue
}

enum RawCallTool: MCP.Method {
    static let name = "tools/call"
    typealias Parameters = JSONValue
    typealias Result = JSONValue
}

/// Set once when the peer is gone, read by every call.
final class ConnectionState: Sendable {
    private let reason = Mutex<String?>(nil)
    private let lostAnswers = Mutex<Set<JSONValue>>([])
    func markLost(_ why: String) { reason.withLock { if $0 == nil { $0 = why } } }
    var lostReason: String? { reason.withLock { $0 } }
    func markAnswerLost(_ id: JSONValue) { lostAnswers.withLock { _ = $0.insert(id) } }
    func takeAnswerLost(_ id: JSONValue) -> Bool { lostAnswers.withLock { $0.remove(id) != nil } }
}

extension JSONValue {
    /// A JSON-RPC id as the SDK holds it.
    init(_ id: MCP.ID) {
        switch id {
        case .string(let text): self = .string(text)
        case .number(let number): self = .int(number)
        }
    }
}
