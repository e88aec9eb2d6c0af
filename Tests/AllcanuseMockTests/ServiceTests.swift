import CorralJSON
import Foundation
import Sandbox
import TaskRuntime
import XCTest

@testable import AllcanuseMock

/// The Allcanuse tools against real processes, without MCP in between.
final class ServiceTests: XCTestCase {
    var directory = ""
    var supervisor: TaskSupervisor?
    var service: AllcanuseService?

    override func setUp() async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("corral-mock-\(UUID().uuidString)").path
        let supervisor = try await TaskSupervisor.start(.init(stateDirectory: directory, graceMilliseconds: 300))
        self.supervisor = supervisor
        service = AllcanuseService(supervisor: supervisor)
    }

    override func tearDown() async throws {
        await supervisor?.shutdown()
        try? FileManager.default.removeItem(atPath: directory)
    }

    @discardableResult
    private func call(_ tool: String, _ arguments: JSONValue, expectError: Bool = false,
                      file: StaticString = #filePath, line: UInt = #line) async throws -> JSONValue {
        let service = try XCTUnwrap(service)
        let outcome = await service.call(tool, arguments: arguments)
        XCTAssertEqual(outcome.isError, expectError, "\(tool): \(outcome.value.jsonString())", file: file, line: line)
        return outcome.value
    }

    private func commandTask(_ condition: JSONValue, timeout: Int? = nil) async throws -> JSONValue {
        var arguments: [String: JSONValue] = [
            "title": "t", "goal": "g", "task_type": "command", "condition": condition,
        ]
        if let timeout { arguments["timeout_ms"] = .int(timeout) }
        return try await call("create_background_task", .object(arguments))
    }

    /// The family a watcher's target needs: an address literal's own, either for a name.
    func testAddressFamiliesOfAWatchersHost() {
        XCTAssertEqual(AllcanuseService.addressFamilies(of: "127.0.0.1"), ["AF_INET"])
        XCTAssertEqual(AllcanuseService.addressFamilies(of: "::1"), ["AF_INET6"])
        XCTAssertEqual(AllcanuseService.addressFamilies(of: "[::1]"), ["AF_INET6"])
        XCTAssertEqual(AllcanuseService.addressFamilies(of: "localhost"), ["AF_INET", "AF_INET6"])
        XCTAssertEqual(AllcanuseService.addressFamilies(of: "1.2.3"), ["AF_INET", "AF_INET6"], "not a literal")
    }

    func testCreateRunsARealSandboxedProcessAndWaitReportsCompletion() async throws {
        let task = try await commandTask(["command": "echo hello; grep '^Seccomp:' /proc/self/status"])
        XCTAssertEqual(task["status"], "running")
        XCTAssertEqual(task["priority"], 50)
        XCTAssertEqual(task["poll_interval_ms"], 5000)
        XCTAssertEqual(task["task_id"]?.stringValue?.count, 32)
        XCTAssertEqual(task["sandbox_profile"], "default")
        let id = try XCTUnwrap(task["task_id"])
        let waited = try await call("wait_for_background_task", ["task_id": id, "timeout_ms": 10000])
        XCTAssertEqual(waited["ok"], true)
        XCTAssertEqual(waited["condition_met"], true)
        XCTAssertEqual(waited["last_result"]?["status"], "completed")
        XCTAssertEqual(waited["attempts"], 1)
        let output = try await call("get_task_output", ["task_id": id])
        XCTAssertEqual(output["text"], "hello\nSeccomp:\t2\n")
        let events = try await call("list_task_events", ["task_id": id])
        let types = events["events"]?.arrayValue?.compactMap { $0["type"]?.stringValue }
        XCTAssertEqual(types?.contains("wait_started"), false, "a wait only reads the task: \(types ?? [])")
    }

    /// As the real server: `ok` is false when the deadline passes first (it was always true here), and an empty
    /// `target_statuses` means the final ones.
    func testAWaitThatTimesOutIsNotOK() async throws {
        let task = try await commandTask(["argv": ["/bin/sleep", "30"]])
        let id = try XCTUnwrap(task["task_id"])
        let waited = try await call("wait_for_background_task", ["task_id": id, "timeout_ms": 100, "target_statuses": []])
        XCTAssertEqual(waited["ok"], false)
        XCTAssertEqual(waited["condition_met"], false)
        XCTAssertEqual(waited["last_result"]?["status"], "running")
        _ = try await call("cancel_background_task", ["task_id": id])
        let ended = try await call("wait_for_background_task", ["task_id": id, "target_statuses": []])
        XCTAssertEqual(ended["ok"], true)
        XCTAssertEqual(ended["last_result"]?["status"], "cancelled")
    }

    func testPauseResumeCancelActOnTheProcess() async throws {
        let task = try await commandTask(["argv": ["/bin/sleep", "30"]])
        let id = try XCTUnwrap(task["task_id"])
        let pid = try XCTUnwrap(task["pid"]?.intValue)
        let paused = try await call("pause_background_task", ["task_id": id, "reason": "test"])
        XCTAssertEqual(paused["status"], "paused")
        let resumed = try await call("resume_background_task", ["task_id": id])
        XCTAssertEqual(resumed["status"], "running")
        let marked = try await call("mark_task_waiting_for_user", ["task_id": id, "question": "continue?"])
        XCTAssertEqual(marked["status"], "waiting_for_user")
        // Resuming a marked task takes it back to work (the real server's resume does), the process untouched.
        let unmarked = try await call("resume_background_task", ["task_id": id, "reason": "answered"])
        XCTAssertEqual(unmarked["status"], "running")
        XCTAssertNil(unmarked["note"])
        XCTAssertEqual(unmarked["last_event"]?["data"]?["previous_status"], "waiting_for_user")
        XCTAssertEqual(kill(pid_t(pid), 0), 0, "the process still runs")
        let remarked = try await call("mark_task_waiting_for_condition", ["task_id": id, "note": "n"])
        XCTAssertEqual(remarked["status"], "waiting_for_condition")
        let cancelled = try await call("cancel_background_task", ["task_id": id])
        XCTAssertEqual(cancelled["status"], "cancelled")
        XCTAssertEqual(kill(pid_t(pid), 0), -1, "the process is gone")
        // A final task is returned unchanged, and cannot be brought back to life.
        let again = try await call("cancel_background_task", ["task_id": id])
        XCTAssertEqual(again["status"], "cancelled")
        let revived = try await call("mark_task_waiting_for_condition", ["task_id": id, "note": "x"])
        XCTAssertEqual(revived["status"], "cancelled")
        XCTAssertNotNil(revived["note"]?.stringValue)
    }

    func testPlansStepsArtifactsAndHandoff() async throws {
        let task = try await call(
            "create_background_task",
            ["title": "nap", "goal": "rest", "task_type": "sleep", "condition": ["duration_ms": 50]])
        let id = try XCTUnwrap(task["task_id"])
        let planned = try await call("create_task_plan", ["task_id": id, "steps": ["one", "two"]])
        XCTAssertEqual(planned["plan_steps"]?.arrayValue?.count, 2)
        let stepped = try await call("update_task_step", ["task_id": id, "step_index": 1, "status": "completed"])
        XCTAssertEqual(stepped["plan_steps"]?.arrayValue?.first?["status"], "completed")
        try await call("update_task_step", ["task_id": id, "step_index": 3, "status": "completed"], expectError: true)
        try await call("update_task_step", ["task_id": id, "step_index": 1, "status": "done"], expectError: true)
        let artifact = try await call("record_task_artifact", ["task_id": id, "path": "/etc/hostname"])
        XCTAssertEqual(artifact["exists"], true)
        _ = try await call("wait_for_background_task", ["task_id": id])
        let handoff = try await call("get_task_handoff", ["task_id": id])
        XCTAssertEqual(handoff["status"], "completed")
        XCTAssertEqual(handoff["completed_steps"]?.arrayValue?.count, 1)
        XCTAssertEqual(handoff["pending_steps"]?.arrayValue?.count, 1)
        XCTAssertEqual(handoff["artifacts"]?.arrayValue?.count, 1)
        let summary = try await call("summarize_background_task", ["task_id": id])
        XCTAssertEqual(summary["summary"], "nap [sleep] is completed; plan 1/2 steps completed.")
        let event = try await call("append_task_event", ["task_id": id, "message": "note", "data": ["k": 1]])
        XCTAssertEqual(event["type"], "info")
        XCTAssertEqual(event["data"], ["k": 1])
        let listing = try await call("list_background_tasks", ["statuses": ["completed"]])
        XCTAssertEqual(listing["count"], 1)
        XCTAssertEqual(listing["total_count"], 1)
        let time = try await call("get_scheduler_time", [:])
        XCTAssertEqual(time["task_status_counts"]?["completed"], 1)
    }

    /// The fields a client written for the real server reads, with its types and its rules (found by comparing
    /// the two servers call by call).
    func testFieldsHaveTheRealServersTypesAndRules() async throws {
        let task = try await call(
            "create_background_task", ["title": " ", "goal": "", "task_type": "sleep", "condition": ["duration_ms": 60000]])
        let id = try XCTUnwrap(task["task_id"])
        XCTAssertEqual(task["title"], "sleep", "a blank title is the task type")
        XCTAssertEqual(task["goal"], "sleep", "a blank goal is the title")
        for field in ["owner", "notes", "completed_at", "last_checked_at", "next_check_at", "deadline_at", "last_error"] {
            XCTAssertEqual(task[field], "", field)
        }
        XCTAssertEqual(task["tags"], [])
        XCTAssertEqual(task["last_result"], [:])
        XCTAssertNotNil(task["condition"]?["wake_at"]?.stringValue, "the sleep's end, as the real server keeps it")
        XCTAssertEqual(task["last_event"]?["type"], "progress", "a status change is a progress event")

        let timed = try await commandTask(["argv": ["/bin/sleep", "30"]], timeout: 60000)
        let deadline = try XCTUnwrap(timed["deadline_at"]?.stringValue.flatMap(Timestamp.parse))
        XCTAssertEqual(deadline.timeIntervalSinceNow, 60, accuracy: 5)
        _ = try await call("cancel_background_task", ["task_id": try XCTUnwrap(timed["task_id"])])

        let planned = try await call("create_task_plan", ["task_id": id, "steps": ["one", "two"]])
        XCTAssertEqual(planned["plan_steps"]?.arrayValue?.first?["step_id"]?.stringValue?.count, 32)
        XCTAssertEqual(planned["plan_steps"]?.arrayValue?.first?["note"], "")
        XCTAssertEqual(planned["last_event"]?["type"], "decision")
        XCTAssertEqual(planned["last_event"]?["data"], ["step_count": 2])
        _ = try await call("update_task_step", ["task_id": id, "step_index": 1, "status": "in_progress", "note": "first"])
        let kept = try await call("update_task_step", ["task_id": id, "step_index": 1, "status": "failed"])
        XCTAssertEqual(kept["plan_steps"]?.arrayValue?.first?["note"], "first", "an update without a note keeps the note")
        _ = try await call("update_task_step", ["task_id": id, "step_index": 2, "status": "skipped"])
        let handoff = try await call("get_task_handoff", ["task_id": id])
        XCTAssertEqual(handoff["pending_steps"]?.arrayValue?.count, 2, "failed and skipped steps are not completed")
        XCTAssertEqual(handoff["current_step"]?["index"], 2, "no step in progress or pending: the last one")
        XCTAssertEqual(handoff["blocker"]?.stringValue?.isEmpty, false)
        XCTAssertEqual(handoff["last_error"], "")

        let home = try XCTUnwrap(ProcessInfo.processInfo.environment["HOME"])
        let artifact = try await call("record_task_artifact", ["task_id": id, "path": "~"])
        XCTAssertEqual(artifact["path"]?.stringValue, URL(fileURLWithPath: home).resolvingSymlinksInPath().path)
        XCTAssertEqual(artifact["exists"], true)
        XCTAssertEqual(artifact["description"], "")
        let relative = try await call("record_task_artifact", ["task_id": id, "path": "some/file"])
        XCTAssertEqual(relative["path"]?.stringValue?.hasPrefix("/"), true)

        let event = try await call("append_task_event", ["task_id": id, "message": "m"])
        XCTAssertEqual(event["data"], [:])
        try await call("append_task_event", ["task_id": id, "message": "m", "data": "text"], expectError: true)
        let cancelled = try await call("cancel_background_task", ["task_id": id])
        XCTAssertEqual(cancelled["last_event"]?["type"], "warning", "a cancellation is a warning event")
        XCTAssertNotEqual(cancelled["completed_at"], "")
    }

    func testTimeoutAndBadInputAreClearErrors() async throws {
        let slow = try await commandTask(["argv": ["/bin/sleep", "30"]], timeout: 200)
        let waited = try await call("wait_for_background_task", ["task_id": try XCTUnwrap(slow["task_id"])])
        XCTAssertEqual(waited["last_result"]?["task"]?["last_error"], "timed out after 200 ms")

        let cases: [(String, JSONValue, String)] = [
            ("get_background_task", ["task_id": "nope"], "unknown task id nope"),
            ("get_background_task", [:], "get_background_task: missing required argument task_id"),
            ("get_background_task", ["task_id": 5], "get_background_task: argument task_id must be a string, got number"),
            ("get_background_task", ["task_id": "x", "extra": 1], "get_background_task: unknown argument extra (accepted: task_id)"),
            ("create_background_task", ["title": "t", "goal": "g", "task_type": "wait_http", "condition": [:]],
             "create_background_task: condition: missing required field url"),
            ("create_background_task", ["title": "t", "goal": "g", "task_type": "wait_gui", "condition": [:]],
             "create_background_task: task_type wait_gui is not supported by this mock; supported: command, sleep, wait_file, wait_process, wait_port, wait_http, wait_window, wait_desktop_change"),
            ("list_background_tasks", ["statuses": ["bogus"]],
             "list_background_tasks: unknown status bogus; statuses are pending, running, waiting, waiting_for_user, waiting_for_condition, paused, completed, failed, cancelled"),
            ("nonexistent_tool", [:], "unknown tool nonexistent_tool"),
        ]
        for (tool, arguments, message) in cases {
            let value = try await call(tool, arguments, expectError: true)
            XCTAssertEqual(value["error"]?.stringValue, message)
        }
        let service = try XCTUnwrap(service)
        let notObject = await service.call("get_background_task", arguments: .array([]))
        XCTAssertTrue(notObject.isError)
        let looser = try await call(
            "create_background_task",
            ["title": "t", "goal": "g", "task_type": "command",
             "condition": ["argv": ["/bin/true"], "sandbox": ["allow_write": ["/"]]]], expectError: true)
        XCTAssertTrue(looser["error"]?.stringValue?.contains("sandbox refused") == true, looser.jsonString())
    }
}

final class CatalogTests: XCTestCase {
    /// Every tool the catalog announces is one the service answers, and every schema names its required arguments.
    func testEveryCatalogToolIsServed() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("corral-cat-\(UUID().uuidString)").path
        let supervisor = try await TaskSupervisor.start(.init(stateDirectory: directory))
        let service = AllcanuseService(supervisor: supervisor)
        XCTAssertEqual(ToolCatalog.names.count, 26)
        XCTAssertEqual(Set(ToolCatalog.names).count, 26)
        for tool in ToolCatalog.tools {
            let name = try XCTUnwrap(tool["name"]?.stringValue)
            let outcome = await service.call(name, arguments: [:])
            XCTAssertNotEqual(outcome.value["error"]?.stringValue, "unknown tool \(name)")
            let required = tool["inputSchema"]?["required"]?.arrayValue?.compactMap(\.stringValue) ?? []
            let properties = tool["inputSchema"]?["properties"]?.objectValue ?? [:]
            XCTAssertTrue(required.allSatisfy { properties[$0] != nil }, name)
            if let first = required.first {
                XCTAssertTrue(outcome.isError, "\(name) accepted a call without \(first)")
            }
        }
        await supervisor.shutdown()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

final class WorkspaceTests: XCTestCase {
    /// A task's cwd becomes writable for it, so a client may only choose one inside the server's workspace.
    func testCwdIsConfinedToTheWorkspace() async throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("corral-ws-\(UUID().uuidString)").path
        let workspace = base + "/workspace"
        try FileManager.default.createDirectory(atPath: workspace + "/project", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: base + "/elsewhere", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: workspace + "/escape", withDestinationPath: base + "/elsewhere")
        defer { try? FileManager.default.removeItem(atPath: base) }
        let supervisor = try await TaskSupervisor.start(.init(stateDirectory: base + "/state"))
        func create(_ service: AllcanuseService, cwd: String) async -> AllcanuseService.Outcome {
            await service.call(
                "create_background_task",
                arguments: ["title": "t", "goal": "g", "task_type": "command",
                            "condition": ["argv": ["/bin/pwd"], "cwd": .string(cwd)]])
        }
        let closed = AllcanuseService(supervisor: supervisor)
        let refused = await create(closed, cwd: workspace)
        XCTAssertTrue(refused.isError)
        XCTAssertTrue(refused.value["error"]?.stringValue?.contains("--workspace") == true)

        let open = AllcanuseService(supervisor: supervisor, workspace: workspace)
        // A directory the task user cannot write is refused, saying how to fix it.
        let notWritable = await create(open, cwd: workspace + "/project")
        XCTAssertTrue(notWritable.isError)
        let message = notWritable.value["error"]?.stringValue ?? ""
        XCTAssertTrue(message.contains("not writable by the task user"), message)
        XCTAssertTrue(message.contains("chown \(supervisor.identity.uid):\(supervisor.identity.gid)"), message)
        XCTAssertEqual(chown(workspace + "/project", supervisor.identity.uid, supervisor.identity.gid), 0)
        let inside = await create(open, cwd: workspace + "/project")
        XCTAssertFalse(inside.isError, inside.value.jsonString())
        for outside in ["/etc", workspace + "/escape", workspace + "/../elsewhere", workspace + "/missing"] {
            let outcome = await create(open, cwd: outside)
            XCTAssertTrue(outcome.isError, "cwd \(outside) was accepted")
        }
        await supervisor.shutdown()
    }
}
