import AllcanuseMock
import CorralJSON
import Foundation
import Logging
import MCPCore
import Synchronization
import Policy
import TaskRuntime
import XCTest

@testable import AllcanuseMockServer

/// Every tool through the protocol core in one process, in both eras: a raw JSON-RPC client on a connection.
final class InMemoryMCPTests: XCTestCase {
    /// Services still starting, in both eras: discover (or initialize) and tools/list are answered at once, a tool
    /// call waits for the start, a start that fails fails the waiting call with its reason (and every later one),
    /// and a call the client cancels while it waits starts nothing.
    func testFirstAnswersComeWhileServicesStartAndCallsWaitForThem() async throws {
        enum Outcome: CaseIterable { case fails, succeeds, cancelled }
        struct StartFailed: Error, CustomStringConvertible {
            var description: String { "state directory /x is in use by another supervisor (test)" }
        }
        let policy = PolicyEvaluator(policy: try Policy.load(text: MockServer.embeddedDefaultPolicy))
        for modern in [false, true] {
            for outcome in Outcome.allCases {
                let directory = FileManager.default.temporaryDirectory
                    .appendingPathComponent("corral-gate-\(UUID().uuidString)").path
                defer { try? FileManager.default.removeItem(atPath: directory) }
                let release = AsyncStream<Void>.makeStream()
                let listeners = ListenRegistry()
                let services = MockServices.starting(servesTasks: true, listeners: listeners) {
                    for await _ in release.stream { break }
                    guard outcome != .fails else { throw StartFailed() }
                    let supervisor = try await TaskSupervisor.start(.init(stateDirectory: directory, graceMilliseconds: 300))
                    let service = AllcanuseService(supervisor: supervisor)
                    let tasks = try MCPTaskBridge(stateDirectory: directory, service: service, listeners: listeners)
                    return MockServices.Ready(service: service, tasks: tasks)
                }
                let core = MockServer.core(
                    services: services, policy: policy, identity: { CallIdentity(grant: "test", session: $0.session) },
                    logger: Logger(label: "test"))
                let client = InProcessRawClient(core: core, modern: modern)
                // Answered while the start is held: a wait for the services here would fail the test, not hang it.
                let opening: (String, JSONValue) = modern
                    ? ("server/discover", [:])
                    : ("initialize", ["protocolVersion": "2025-11-25", "capabilities": [:], "clientInfo": ["name": "t", "version": "1"]])
                guard let opened = await Self.answer(within: .seconds(5), { await client.request(opening.0, opening.1) }),
                    let listed = await Self.answer(within: .seconds(5), { await client.request("tools/list", [:]) })
                else {
                    return XCTFail("\(opening.0) or tools/list waited for the services to start")
                }
                XCTAssertEqual(opened["result"]?["serverInfo"]?["name"], "allcanuse-mock", "\(opened)")
                XCTAssertEqual(listed["result"]?["tools"]?.arrayValue?.count, 26)

                let tool = outcome == .cancelled ? "create_background_task" : "list_background_tasks"
                let arguments: JSONValue = outcome == .cancelled
                    ? ["title": "t", "goal": "g", "task_type": "command", "condition": ["argv": ["/bin/sleep", "30"]]]
                    : [:]
                let answered = Mutex(false)
                let callID = client.lastRequestID + 1
                let call = Task {
                    let answer = await client.request("tools/call", ["name": .string(tool), "arguments": arguments])
                    answered.withLock { $0 = true }
                    return answer
                }
                try await Task.sleep(for: .milliseconds(150))
                XCTAssertFalse(answered.withLock { $0 }, "a tool call was answered before the services had started")
                if outcome == .cancelled { client.notify("notifications/cancelled", ["requestId": .int(callID)]) }
                release.continuation.yield()
                switch outcome {
                case .succeeds:
                    let answer = await call.value
                    XCTAssertEqual(answer["result"]?["structuredContent"]?["total_count"], 0, "\(answer)")
                case .cancelled:
                    // The cancelled call is never answered, and no task is made for it: listed once the services are
                    // up and a create would have had time to finish (one takes a few ms here).
                    _ = try await services.value()
                    try await Task.sleep(for: .milliseconds(500))
                    let listing = try await client.result(
                        "tools/call", ["name": "list_background_tasks", "arguments": [:]])
                    XCTAssertEqual(listing["structuredContent"]?["total_count"], 0, "\(listing)")
                    XCTAssertFalse(answered.withLock { $0 }, "the cancelled call was answered")
                case .fails:
                    let answer = await call.value
                    XCTAssertEqual(answer["error"]?["code"], -32603, "\(answer)")
                    XCTAssertEqual(
                        answer["error"]?["message"]?.stringValue,
                        "Internal error: the server could not start its task services: state directory /x is in use by another supervisor (test)")
                    let later = await client.request("tools/call", ["name": "get_background_task", "arguments": ["task_id": "x"]])
                    XCTAssertEqual(later["error"]?["code"], -32603, "\(later)")
                }
                if outcome != .fails {
                    let ready = try await services.value()
                    await ready.supervisor.shutdown()
                }
                client.close()
            }
        }
    }

    /// The answer if it comes within `limit`; nil (leaving the request waiting) if not.
    private static func answer(
        within limit: Duration, _ request: @escaping @Sendable () async -> JSONValue
    ) async -> JSONValue? {
        let answered = Mutex<JSONValue?>(nil)
        Task { let value = await request(); answered.withLock { $0 = value } }
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if let value = answered.withLock({ $0 }) { return value }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return nil
    }

    func testEveryToolInBothEras() async throws {
        for modern in [false, true] {
            try await everyTool(modern: modern)
        }
    }

    private func everyTool(modern: Bool) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("corral-mcp-\(UUID().uuidString)").path
        let supervisor = try await TaskSupervisor.start(.init(stateDirectory: directory, graceMilliseconds: 300))
        let service = AllcanuseService(supervisor: supervisor)
        let policy = PolicyEvaluator(policy: try Policy.load(text: MockServer.embeddedDefaultPolicy))
        let core = MockServer.core(
            service: service, policy: policy, identity: { CallIdentity(grant: "test", session: $0.session) },
            logger: Logger(label: "test"))
        let client = InProcessRawClient(core: core, modern: modern)
        if modern {
            let discovered = try await client.result("server/discover", [:])
            XCTAssertEqual(discovered["supportedVersions"], ["2026-07-28", "2025-11-25"])
        } else {
            let initialized = try await client.result(
                "initialize", ["protocolVersion": "2025-11-25", "capabilities": [:], "clientInfo": ["name": "t", "version": "1"]])
            XCTAssertEqual(initialized["protocolVersion"], "2025-11-25")
        }

        let listed = try await client.result("tools/list", [:])
        let tools = listed["tools"]?.arrayValue ?? []
        XCTAssertEqual(tools.count, 26)
        XCTAssertEqual(tools.first { $0["name"] == "get_background_task" }?["annotations"]?["readOnlyHint"], true)
        XCTAssertEqual(listed["resultType"], modern ? "complete" : nil)
        XCTAssertEqual(listed["cacheScope"], modern ? "public" : nil)

        func call(_ tool: String, _ arguments: JSONValue, error: Bool = false) async throws -> JSONValue {
            let result = try await client.result("tools/call", ["name": .string(tool), "arguments": arguments])
            XCTAssertEqual(result["isError"]?.boolValue ?? false, error, "\(tool): \(result)")
            XCTAssertEqual(result["resultType"], modern ? "complete" : nil, tool)
            return result["structuredContent"] ?? .null
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
        // Counted as get_background_task shows it (the mark), statuses without a task left out, as the real server.
        XCTAssertEqual(r["task_status_counts"]?["waiting_for_condition"], 1)
        XCTAssertNil(r["task_status_counts"]?["running"])
        XCTAssertNil(r["task_status_counts"]?["paused"])
        r = try await call("cancel_background_task", ["task_id": id])
        XCTAssertEqual(r["status"], "cancelled")
        _ = try await call("get_background_task", ["task_id": "missing"], error: true)

        client.close()
        await supervisor.shutdown()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// The stdio server's loop is the executor allcanuse-mock handles exits on (`handleExits(on:)`) and has the supervisor
/// keep awake through a create's spawn (`keepAwakeThroughSpawns(_:)`), which takes a `WakefulExecutor`: the
/// conformance the server relies on.
final class StdioLoopWakefulnessTests: XCTestCase {
    func testTheStdioLoopCanStayAwakeForASpawn() throws {
        let loop: any TaskExecutor = try XCTUnwrap(ReadLoop())
        XCTAssertTrue(loop is any WakefulExecutor, "creates over stdio would wait for the loop thread to wake")
    }
}

/// A JSON-RPC client on an in-process `StdioServerConnection`: requests in, answers matched by id.
final class InProcessRawClient: Sendable {
    private let connection: StdioServerConnection
    private final class Waiting: Sendable {
        let map = Mutex<[String: CheckedContinuation<JSONValue, Never>]>([:])
    }
    private let waiting = Waiting()
    private let nextID = Mutex(0)
    private let modern: Bool

    init(core: MCPServerCore, modern: Bool) {
        self.modern = modern
        let waiting = self.waiting
        connection = StdioServerConnection(core: core, connectionID: "test") { data in
            guard let message = try? JSONValue.parse(data), message["method"] == nil, let id = message["id"] else { return }
            waiting.map.withLock { $0.removeValue(forKey: id.jsonString()) }?.resume(returning: message)
        }
    }

    /// The whole answer message.
    func request(_ method: String, _ params: JSONValue) async -> JSONValue {
        let id = nextID.withLock { next -> Int in
            next += 1
            return next
        }
        var params = params
        if modern, var object = params.objectValue {
            object["_meta"] = [
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": [:],
            ]
            params = .object(object)
        }
        let message: JSONValue = ["jsonrpc": "2.0", "id": .int(id), "method": .string(method), "params": params]
        return await withCheckedContinuation { continuation in
            waiting.map.withLock { $0[JSONValue.int(id).jsonString()] = continuation }
            connection.ingest(Data(message.jsonString().utf8))
        }
    }

    func result(_ method: String, _ params: JSONValue) async throws -> JSONValue {
        let answer = await request(method, params)
        guard let result = answer["result"] else { throw ClientError(answer: answer) }
        return result
    }

    /// The id of the last request sent (the next one gets this plus one).
    var lastRequestID: Int { nextID.withLock { $0 } }

    func notify(_ method: String, _ params: JSONValue) {
        let message: JSONValue = ["jsonrpc": "2.0", "method": .string(method), "params": params]
        connection.ingest(Data(message.jsonString().utf8))
    }

    func close() { connection.endOfInput() }

    struct ClientError: Error { let answer: JSONValue }
}
