import AllcanuseMock
import CorralJSON
import Foundation
import Logging
import MCP
import Policy
import TaskRuntime
import XCTest

@testable import AllcanuseMockServer

/// Every tool through the SDK's in-memory transport: a real MCP client and server in one process.
final class InMemoryMCPTests: XCTestCase {
    func testEveryToolThroughTheSDK() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("corral-mcp-\(UUID().uuidString)").path
        let supervisor = try await TaskSupervisor.start(.init(stateDirectory: directory, graceMilliseconds: 300))
        let service = AllcanuseService(supervisor: supervisor)
        let policy = PolicyEvaluator(policy: try Policy.load(text: MockServer.embeddedDefaultPolicy))
        let server = await MockServer.make(
            service: service, policy: policy, identity: CallIdentity(grant: "test", session: "s"),
            logger: Logger(label: "test"))
        let pair = await InMemoryTransport.createConnectedPair()
        try await server.start(transport: pair.server)
        let client = Client(name: "test", version: "1")
        _ = try await client.connect(transport: pair.client)

        let listed = try await client.listTools()
        XCTAssertEqual(listed.tools.count, 18)
        XCTAssertEqual(listed.tools.first { $0.name == "get_background_task" }?.annotations.readOnlyHint, true)

        func call(_ tool: String, _ arguments: JSONValue, error: Bool = false) async throws -> JSONValue {
            let arguments = arguments.objectValue?.mapValues(Value.init(json:))
            let context = try await client.send(CallTool.request(.init(name: tool, arguments: arguments)))
            let result = try await context.value
            XCTAssertEqual(result.isError ?? false, error, "\(tool): \(result.content)")
            return result.structuredContent?.json ?? .null
        }

        let task = try await call(
            "create_background_task",
            ["title": "t", "goal": "g", "task_type": "command", "condition": ["command": "echo hi; sleep 30"]])
        let id = try XCTUnwrap(task["task_id"])
        var r = try await call("get_background_task", ["task_id": id])
        XCTAssertEqual(r["status"], "running")
        r = try await call("list_background_tasks", [:])
        XCTAssertEqual(r["count"], 1)
        r = try await call("pause_background_task", ["task_id": id])
        XCTAssertEqual(r["status"], "paused")
        r = try await call("wait_for_background_task", ["task_id": id, "timeout_ms": 50])
        XCTAssertEqual(r["condition_met"], false)
        r = try await call("resume_background_task", ["task_id": id])
        XCTAssertEqual(r["status"], "running")
        r = try await call("append_task_event", ["task_id": id, "message": "m"])
        XCTAssertEqual(r["message"], "m")
        r = try await call("create_task_plan", ["task_id": id, "steps": ["a"]])
        XCTAssertEqual(r["plan_steps"]?.arrayValue?.count, 1)
        r = try await call("update_task_step", ["task_id": id, "step_index": 1, "status": "in_progress"])
        XCTAssertEqual(r["plan_steps"]?.arrayValue?.first?["status"], "in_progress")
        _ = try await call("update_task_step", ["task_id": id, "step_index": 2, "status": "completed"], error: true)
        r = try await call("record_task_artifact", ["task_id": id, "path": "/nonexistent"])
        XCTAssertEqual(r["exists"], false)
        r = try await call("summarize_background_task", ["task_id": id])
        XCTAssertNotNil(r["summary"]?.stringValue)
        r = try await call("get_task_handoff", ["task_id": id])
        XCTAssertEqual(r["current_step"]?["title"], "a")
        r = try await call("mark_task_waiting_for_user", ["task_id": id, "question": "ok?"])
        XCTAssertEqual(r["status"], "waiting_for_user")
        r = try await call("mark_task_waiting_for_condition", ["task_id": id, "note": "n"])
        XCTAssertEqual(r["status"], "waiting_for_condition")
        try await Task.sleep(for: .milliseconds(100))
        r = try await call("get_task_output", ["task_id": id])
        XCTAssertEqual(r["text"], "hi\n")
        r = try await call("list_task_events", ["task_id": id])
        XCTAssertGreaterThan(r["count"]?.intValue ?? 0, 5)
        r = try await call("get_scheduler_time", [:])
        XCTAssertEqual(r["task_status_counts"]?["running"], 1)
        r = try await call("cancel_background_task", ["task_id": id])
        XCTAssertEqual(r["status"], "cancelled")
        _ = try await call("get_background_task", ["task_id": "missing"], error: true)

        await client.disconnect()
        await server.stop()
        await supervisor.shutdown()
        try? FileManager.default.removeItem(atPath: directory)
    }
}
