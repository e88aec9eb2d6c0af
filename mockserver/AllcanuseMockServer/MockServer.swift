import AllcanuseMock
import CorralJSON
import Logging
import MCPCore
import Policy

/// The allcanuse-mock MCP server: the Allcanuse tools over `AllcanuseService`, each call decided by the policy
/// first, served in both MCP eras by `MCPServerCore`.
public enum MockServer {
    public static let version = "0.2.0"

    /// The policy used without `--policy`: everything allowed, with a generous per-session cap so that a runaway
    /// agent loop is still stopped. Documented in the README.
    public static let embeddedDefaultPolicy = """
        {
          "version": "1",
          "default": "allow",
          "all_tools": { "limits": [ { "counter": "all_calls", "window": "minute", "max": 6000, "scope": "session" } ] }
        }
        """

    public static let description = ServerDescription(
        name: "allcanuse-mock", version: version,
        instructions: "Background tasks backed by real, sandboxed child processes (a mock of the Allcanuse task tools).")

    /// What `server/discover` says when MCP tasks are served: the Tasks extension.
    public static let descriptionWithTasks: ServerDescription = {
        var described = description
        described.extensions[TasksExtension.id] = [:]
        return described
    }()

    /// Who a request's calls count against: the grant, and the legacy session or stdio connection (a modern request
    /// has none, so its session-scoped counters are shared by every modern client of the grant).
    public typealias IdentityOf = @Sendable (RequestContext) -> CallIdentity

    /// The protocol core serving the tools. `tools/list` is the policy-filtered catalog; the core serializes it once
    /// per policy revision (and era), so it is built here only when the policy changed.
    /// `tasks`: the MCP task bridge (the Tasks extension is advertised and served); nil: no MCP tasks, every call
    /// blocks as in 2025-11-25.
    public static func core(
        service: AllcanuseService, policy: PolicyEvaluator, identity: @escaping IdentityOf, logger: Logger,
        callRecord: CallRecord? = nil, tasks: MCPTaskBridge? = nil
    ) -> MCPServerCore {
        core(
            services: .ready(service: service, tasks: tasks), policy: policy, identity: identity, logger: logger,
            callRecord: callRecord)
    }

    /// The same core over services that may still be starting: discover, initialize and `tools/list` are answered
    /// at once, tool calls and MCP task requests once the services are ready (see `MockServices`).
    public static func core(
        services: MockServices, policy: PolicyEvaluator, identity: @escaping IdentityOf, logger: Logger,
        callRecord: CallRecord? = nil
    ) -> MCPServerCore {
        return MCPServerCore(
            description: services.servesTasks ? descriptionWithTasks : description,
            listeners: services.listeners, toolsListVersion: { policy.policy.revision.hex }
        ) {
            method, params, context throws(JSONRPCError) in
            switch method {
            case "tools/list":
                return ["tools": .array(policy.filterToolList(ToolCatalog.tools))]
            case "tools/call":
                guard params.objectValue != nil else { throw .invalidParams("tools/call params must be an object") }
                let ready = try await services.forRequest()
                // A call the client cancelled while it waited for the start must not start anything now.
                if Task.isCancelled { throw .internalError("cancelled by the client") }
                let name = params["name"]?.stringValue
                if let tasks = ready.tasks, let name, MCPTaskBridge.taskTools.contains(name),
                    TasksExtension.isDeclared(by: context)
                {
                    // Decided and counted once, when the task is made.
                    if let denial = try await admit(
                        json: params, policy: policy, identity: identity(context), logger: logger, callRecord: callRecord)
                    {
                        return denial
                    }
                    return try await tasks.start(
                        tool: name, arguments: params["arguments"], canElicit: context.envelope?.canElicit ?? false)
                }
                return try await call(
                    json: params, service: ready.service, policy: policy, identity: identity(context), logger: logger,
                    progress: context.progressReporter(params), callRecord: callRecord)
            case _ where TasksExtension.methods.contains(method):
                try callRecord?.record(taskMethod: method, taskID: params["taskId"]?.stringValue)
                guard services.servesTasks, context.era.isModern else { throw .methodNotFound(method) }
                guard TasksExtension.isDeclared(by: context) else { throw TasksExtension.notDeclared(method) }
                guard let tasks = try await services.forRequest().tasks else { throw .methodNotFound(method) }
                switch method {
                case "tasks/get": return try await tasks.get(params)
                case "tasks/cancel": return try await tasks.cancel(params)
                default: return try await tasks.update(params)
                }
            default:
                throw .methodNotFound(method)
            }
        }
    }

    /// The policy's decision on a `tools/call`: the denial result, or nil when the call may go on. Throws when the
    /// call log cannot record the call (it is then not run).
    static func admit(
        json request: JSONValue, policy: PolicyEvaluator, identity: CallIdentity, logger: Logger, callRecord: CallRecord?
    ) async throws(JSONRPCError) -> JSONValue? {
        let name = request["name"]?.stringValue
        let arguments = request["arguments"]
        // The policy sees exactly what arrived: a missing name or arguments that are not an object are denied there.
        let decision = await policy.decide(tool: name, arguments: arguments, identity: identity)
        do {
            try callRecord?.record(tool: name ?? "", arguments: arguments, refusedBy: decision.isAllowed ? nil : decision.rule)
        } catch {
            _ = try? await decision.reservation?.rollback()  // not run, so not counted
            logger.error("\(name ?? "(no name)"): \(error.message)")
            throw error
        }
        if let denial = decision.deniedToolResult {
            logger.info("denied \(name ?? "(no name)"): \(decision.rule): \(decision.message)")
            return denial
        }
        return nil
    }

    /// `tools/call` params in, `CallToolResult` out, as raw JSON.
    public static func call(
        json request: JSONValue, service: AllcanuseService, policy: PolicyEvaluator, identity: CallIdentity,
        logger: Logger, progress: AllcanuseService.ProgressReporter? = nil, callRecord: CallRecord? = nil
    ) async throws(JSONRPCError) -> JSONValue {
        if let denial = try await admit(json: request, policy: policy, identity: identity, logger: logger, callRecord: callRecord) {
            return denial
        }
        let arguments = request["arguments"]
        guard let name = request["name"]?.stringValue else {
            return result(["error": "tools/call needs a tool name"], isError: true)
        }
        let outcome = await service.call(name, arguments: arguments, progress: progress)
        return result(outcome.value, isError: outcome.isError)
    }

    /// The JSON object as `structuredContent`; an error also says its message as text. A success's text block (the
    /// same JSON) is added by the protocol core, which writes the object once for both (`ToolResultText`).
    static func result(_ value: JSONValue, isError: Bool) -> JSONValue {
        guard isError else { return ["structuredContent": value, "isError": false] }
        return [
            "content": [["type": "text", "text": .string(value["error"]?.stringValue ?? value.jsonString())]],
            "structuredContent": value,
            "isError": true,
        ]
    }
}
