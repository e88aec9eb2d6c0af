import CorralJSON
import Foundation
import Logging
import MCPCore
import Policy
import Synchronization

/// The in-process gateway an agent links: every tool call is decided by the policy before it reaches the MCP
/// server, tool lists are filtered, counters are rolled back when the server answers a call with a JSON-RPC error,
/// approval-required calls go to the agent's approval handler, and every decision goes to the audit sink.
///
/// The MCP side is our `MCPClient`, in whichever era the server speaks (2026-07-28 when `server/discover` answers,
/// else 2025-11-25); tool lists and results travel as raw JSON (`JSONValue`), so unknown fields survive. A server
/// that asks the user something — a 2026-07-28 `input_required` result, a 2025-11-25 `elicitation/create` request
/// (a gateway in front asking for approval, say) — is answered by the approval handler.
public final class AgentSandbox: Sendable {
    /// Where the MCP server is.
    public enum Connection: Sendable {
        /// Any transport, e.g. `InProcessServerTransport` with the server in this process.
        case transport(any MessageTransport)
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
        /// The task handle, when the server answered the call with a task (Tasks extension, `useTasks`).
        public var taskID: String? { TaskHandles.createdHandle(in: result) }
        /// The text content items, joined by newlines.
        public var text: String {
            (result["content"]?.arrayValue ?? []).compactMap { $0["text"]?.stringValue }.joined(separator: "\n")
        }
    }

    public let evaluator: PolicyEvaluator
    public let identity: CallIdentity
    private let client: MCPClient
    private let approval: ApprovalHandler?
    let audit: (any AuditSink)?
    /// Task handles this sandbox (or one sharing its store) saw created: the only ones its `tasks/*` calls may name.
    let taskHandles: TaskHandles
    /// What the server said about itself (`name`, `version`) and the `protocolVersion` in use.
    public let serverInfo: JSONValue

    private init(
        evaluator: PolicyEvaluator, identity: CallIdentity, client: MCPClient, approval: ApprovalHandler?,
        audit: (any AuditSink)?, serverInfo: JSONValue
    ) {
        self.evaluator = evaluator
        self.taskHandles = TaskHandles(store: evaluator.store)
        self.identity = identity
        self.client = client
        self.approval = approval
        self.audit = audit
        self.serverInfo = serverInfo
    }

    /// The MCP era of the connection.
    public var era: MCPEra? { client.era }

    /// Connects (settling the era). `approval`: with none, approval-required calls are denied with a message saying
    /// so, and a server's questions are declined.
    public static func connect(
        policy: PolicyEvaluator, identity: CallIdentity, to connection: Connection,
        approval: ApprovalHandler? = nil, audit: (any AuditSink)? = nil,
        clientName: String = "corral-agent", useTasks: Bool = false, logger: Logger? = nil
    ) async throws -> AgentSandbox {
        let transport: any MessageTransport
        switch connection {
        case .transport(let given):
            transport = given
        case .process(let command, let environment):
            do {
                transport = try ChildProcessTransport(command: command, environment: environment)
            } catch {
                throw AgentSandboxError.cannotConnect(error.description)
            }
        case .http(let url):
            transport = StreamableHTTPClientTransport(endpoint: url)
        }
        // A 2025-11-25 server's question (elicitation/create) goes to the approval handler.
        let client = MCPClient(
            transport: transport, name: clientName, canElicit: approval != nil,
            extensions: useTasks ? [TasksExtension.id] : []
        ) { method, params in
            guard method == "elicitation/create" else { return nil }
            return await Self.answer(question: params, tool: "(asked by the server)", arguments: [:], approval: approval)
        }
        let info: JSONValue
        do {
            info = try await client.connect()
        } catch {
            await client.close()
            throw AgentSandboxError.cannotConnect(error.description)
        }
        return AgentSandbox(
            evaluator: policy, identity: identity, client: client, approval: approval, audit: audit, serverInfo: info)
    }

    /// An elicitation answered by the approval handler: `accept` when it approves, `decline` otherwise.
    static func answer(question: JSONValue, tool: String, arguments: [String: JSONValue], approval: ApprovalHandler?) async -> JSONValue {
        guard let approval else { return ["action": "decline"] }
        let message = question["message"]?.stringValue ?? "The server asks for approval."
        let approved = await approval(ApprovalRequest(tool: tool, arguments: arguments, rule: "server", message: message))
        return approved ? ["action": "accept", "content": [:]] : ["action": "decline"]
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
            let page = try await request("tools/list", params)
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
    /// back first), `.connectionLost` when the server went away and `.unreadableAnswer` when its answer is not JSON
    /// (for these two the counters stay spent: the call may have run).
    public func callTool(_ name: String, arguments: JSONValue = [:]) async throws -> ToolCallResult {
        var decision = await decide(name, arguments)
        if decision.outcome == .approvalRequired, let pending = decision.pendingApproval {
            guard let approval else {
                let message = "\(pending.message); approval was required but this agent has no approval handler"
                return ToolCallResult(
                    decision: decision, result: PolicyDenial.toolResult(rule: pending.rule, message: message))
            }
            let approved = await approval(
                ApprovalRequest(tool: pending.tool, arguments: pending.arguments, rule: pending.rule, message: pending.message))
            let start = ContinuousClock.now
            decision = await audited(await evaluator.resolveApproval(pending, approved: approved), arguments, since: start)
        }
        if let denial = decision.deniedToolResult {
            return ToolCallResult(decision: decision, result: denial)
        }
        var params: [String: JSONValue] = ["name": .string(name)]
        if arguments.objectValue?.isEmpty == false { params["arguments"] = arguments }
        do {
            let result = try await callAnsweringInput(name, params: params)
            if let handle = TaskHandles.createdHandle(in: result) {
                // Unrecorded, the handle is refused by `task(_:)` later (fail closed); the call itself ran.
                try? await taskHandles.record(handle, grant: identity.grant)
            }
            return ToolCallResult(decision: decision, result: result)
        } catch let error as AgentSandboxError {
            // The server refused the call as a request: it did not run, so it does not count. (A lost connection
            // is not that: the call may have run.)
            if case .server = error { _ = try? await decision.reservation?.rollback() }
            throw error
        }
    }

    /// Replaces the policy; applies to the next call. Returns the previous one.
    @discardableResult
    public func replacePolicy(_ policy: Policy) -> Policy { evaluator.replacePolicy(policy) }

    /// Disconnects (and stops a server run with `.process`). Calls still in flight fail with `connectionLost`
    /// (their counters stay spent: the server may have run them).
    public func close() async {
        await client.close()
    }

    /// A tools/call, answering the server's `input_required` rounds (2026-07-28: each elicitation goes to the
    /// approval handler, and the call is sent again with the answers and the server's `requestState`).
    private func callAnsweringInput(_ name: String, params: [String: JSONValue]) async throws -> JSONValue {
        var params = params
        for _ in 0..<4 {
            let result = try await request("tools/call", .object(params))
            guard result["resultType"]?.stringValue == "input_required", let requests = result["inputRequests"]?.objectValue
            else { return result }
            var responses: [String: JSONValue] = [:]
            for (key, input) in requests {
                guard input["method"]?.stringValue == "elicitation/create" else {
                    throw AgentSandboxError.server(
                        code: JSONRPCError.invalidRequestCode,
                        message: "the server asked for \(input["method"]?.stringValue ?? "an input") this agent cannot give")
                }
                responses[key] = await Self.answer(
                    question: input["params"] ?? [:], tool: name, arguments: params["arguments"]?.objectValue ?? [:],
                    approval: approval)
            }
            params["inputResponses"] = .object(responses)
            params["requestState"] = result["requestState"]
        }
        throw AgentSandboxError.server(code: JSONRPCError.invalidRequestCode, message: "the server kept asking for input (4 rounds)")
    }

    // MARK: - internals

    private func decide(_ name: String, _ arguments: JSONValue) async -> Decision {
        let start = ContinuousClock.now
        return await audited(await evaluator.decide(tool: name, arguments: arguments, identity: identity), arguments, since: start)
    }

    /// A call the audit sink could not record is denied (rule `audit`), its counters given back.
    private func audited(_ decision: Decision, _ arguments: JSONValue, since start: ContinuousClock.Instant) async -> Decision {
        let elapsed = (ContinuousClock.now - start).microseconds
        return await decision.audited(
            AuditEntry(decision: decision, arguments: arguments, identity: identity, latencyMicroseconds: elapsed), to: audit)
    }

    func request(_ method: String, _ params: JSONValue) async throws -> JSONValue {
        do {
            return try await client.request(method, params)
        } catch {
            switch error {
            case .server(let code, let message): throw AgentSandboxError.server(code: code, message: message)
            case .connectionLost(let why): throw AgentSandboxError.connectionLost(why)
            case .unreadableAnswer(let why): throw AgentSandboxError.unreadableAnswer(why)
            }
        }
    }
}

public enum AgentSandboxError: Error, CustomStringConvertible, Equatable {
    /// The connection or `initialize` failed.
    case cannotConnect(String)
    /// The server answered with a JSON-RPC error.
    case server(code: Int, message: String)
    /// The server went away (its process exited, the HTTP endpoint stopped answering).
    case connectionLost(String)
    /// The server's answer is not JSON that can be read (the call may have run: its counters stay spent).
    case unreadableAnswer(String)

    public var description: String {
        switch self {
        case .cannotConnect(let why): "cannot connect to the MCP server: \(why)"
        case .server(let code, let message): "the MCP server answered with error \(code): \(message)"
        case .connectionLost(let why): "the MCP server went away: \(why)"
        case .unreadableAnswer(let why): "the MCP server's answer could not be read (the call may have run): \(why)"
        }
    }
}
