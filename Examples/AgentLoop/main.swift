import CorralJSON
import Foundation
import Gateway
import Policy

// An agent loop: every tool call the model makes (scripted here) is decided by the policy before it reaches the server.
let policy = try Policy.load(text: """
    {"version": "1", "default": "deny", "hide": ["cancel_background_task"],
     "tools": {"create_background_task": {"limits": [{"counter": "c", "window": "minute", "max": 5, "scope": "grant"}]},
               "wait_for_background_task": {}, "get_task_output": {},
               "append_task_event": {"action": "require_approval", "reason": "Events are visible to the team"}}}
    """)
let state = NSTemporaryDirectory() + "agent-loop-\(getpid())"
let sandbox = try await AgentSandbox.connect(
    policy: PolicyEvaluator(policy: policy), identity: CallIdentity(grant: "agent-1"),
    to: .process(command: [CommandLine.arguments.dropFirst().first ?? "allcanuse-mock", "--state-dir", state, "--log-level", "warning"]),
    approval: { request in print("  approval asked: \(request.message) → yes"); return true },
    audit: ClosureAuditSink { print("  audit: \($0.tool) \($0.decision) (\($0.rule))") })
print("tools:", try await sandbox.listTools().compactMap { $0["name"]?.stringValue }.sorted().joined(separator: " "))

var taskID: JSONValue = .null
let steps: [(String, () -> JSONValue)] = [
    ("create_background_task", { ["title": "build", "goal": "compile", "task_type": "command", "condition": ["command": "echo built"]] }),
    ("wait_for_background_task", { ["task_id": taskID, "timeout_ms": 5000] }),
    ("get_task_output", { ["task_id": taskID] }),
    ("append_task_event", { ["task_id": taskID, "message": "build finished"] }),
    ("cancel_background_task", { ["task_id": taskID] }),  // hidden by the policy: denied here, never sent
]
for (tool, arguments) in steps {
    let result = try await sandbox.callTool(tool, arguments: arguments())
    if tool == "create_background_task" { taskID = result.structuredContent?["task_id"] ?? .null }
    print(result.wasDenied ? "denied" : "ok", tool, "→", result.text.prefix(90))
}
await sandbox.close()
try? FileManager.default.removeItem(atPath: state)
