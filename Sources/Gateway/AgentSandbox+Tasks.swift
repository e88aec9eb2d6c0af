import CorralJSON
import MCPCore
import Policy

/// MCP tasks (the Tasks extension) through the sandbox: connect with `useTasks: true`, and a call the server
/// turns into a task comes back with a `taskID`. Only handles created through this sandbox can be named here (any
/// other is refused with -32602 and never sent), so `tasks/cancel` cannot reach what the policy keeps from the agent.
extension AgentSandbox {
    /// The task as the server reports it now (`tasks/get`): `status`, and `result` once `completed`.
    public func task(_ taskID: String) async throws -> JSONValue {
        try await taskRequest("tasks/get", taskID, [:])
    }

    /// Asks the server to cancel the task (`tasks/cancel`, an acknowledgement; the task ends `cancelled`).
    public func cancelTask(_ taskID: String) async throws {
        _ = try await taskRequest("tasks/cancel", taskID, [:])
    }

    /// Answers the task's outstanding input requests (`tasks/update`), by their keys.
    public func answerTask(_ taskID: String, inputResponses: [String: JSONValue]) async throws {
        _ = try await taskRequest("tasks/update", taskID, ["inputResponses": .object(inputResponses)])
    }

    /// Polls until the task is terminal (at the server's suggested interval, within `minimum` and one second) and
    /// returns it; an `input_required` task is returned too, so that the agent can answer it.
    public func awaitTask(_ taskID: String, minimum: Duration = .milliseconds(10)) async throws -> JSONValue {
        while true {
            let current = try await task(taskID)
            let status = current["status"]?.stringValue ?? ""
            if ["completed", "failed", "cancelled", "input_required"].contains(status) { return current }
            let suggested = Duration.milliseconds(min(current["pollIntervalMs"]?.intValue ?? 100, 1000))
            try await Task.sleep(for: max(minimum, suggested))
        }
    }

    private func taskRequest(_ method: String, _ taskID: String, _ extra: [String: JSONValue]) async throws -> JSONValue {
        let start = ContinuousClock.now
        var known = false
        var storeProblem: String?
        do {
            known = try await taskHandles.isOwned(taskID, by: identity.grant)
        } catch {
            storeProblem = error.message
        }
        let auditProblem = recordAudit(
            AuditEntry(
                taskMethod: method, handle: taskID, forwarded: known, identity: identity,
                policyRevision: evaluator.policy.revision.hex,
                latencyMicroseconds: (ContinuousClock.now - start).microseconds,
                era: era?.isModern == true ? "modern" : "legacy", storeProblem: storeProblem),
            in: audit)
        if let storeProblem {
            throw AgentSandboxError.server(
                code: JSONRPCError.internalErrorCode, message: "\(PolicyDenial.prefix) policy store unavailable: \(storeProblem)")
        }
        guard known else {
            let refusal = TaskHandles.refusal(method, taskID)
            throw AgentSandboxError.server(code: refusal.code, message: refusal.message)
        }
        if let auditProblem {
            throw AgentSandboxError.server(
                code: JSONRPCError.internalErrorCode,
                message: "\(PolicyDenial.prefix) the audit trail could not record this request: \(auditProblem)")
        }
        var params = extra
        params["taskId"] = .string(taskID)
        return try await request(method, .object(params))
    }
}
