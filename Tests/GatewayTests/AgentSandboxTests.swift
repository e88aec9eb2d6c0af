import AllcanuseMock
import AllcanuseMockServer
import CorralJSON
import Foundation
import Gateway
import Logging
import MCPCore
import Policy
import Synchronization
import TaskRuntime
import XCTest

/// The in-process API against real servers: allcanuse-mock in the same process (in-memory transport), as a child
/// over stdio, and over Streamable HTTP.
final class AgentSandboxTests: XCTestCase {
    private var directory = ""
    private var supervisor: TaskSupervisor?

    override func setUp() {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("corral-gw-\(UUID().uuidString)").path
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDown() async throws {
        await supervisor?.shutdown(cancelRunning: true)
        try? FileManager.default.removeItem(atPath: directory)
    }

    static let policyText = """
        {"version": "1", "default": "deny", "hide": ["cancel_background_task"],
         "tools": {
           "create_background_task": {"limits": [{"counter": "creates", "window": "minute", "max": 3, "scope": "grant"}],
                                      "deny_if": [{"conditions": [{"path": "args.goal", "op": "contains", "value": "drop the database"}], "on_deny": "Not that goal"}]},
           "list_background_tasks": {}, "get_background_task": {},
           "append_task_event": {"action": "require_approval", "reason": "Events are visible to the whole team"}
         }}
        """

    static let mockBinary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        .appendingPathComponent("allcanuse-mock").path

    /// allcanuse-mock in this process, permissive on its own side and recording every call it executes.
    private func inProcessMock(callLog name: String = "calls", tasks: Bool = false) async throws -> (InProcessServerTransport, String) {
        let supervisor: TaskSupervisor
        if let running = self.supervisor {
            supervisor = running
        } else {
            supervisor = try await TaskSupervisor.start(.init(stateDirectory: directory + "/state", graceMilliseconds: 300))
            self.supervisor = supervisor
        }
        let callLog = directory + "/\(name).jsonl"
        let service = AllcanuseService(supervisor: supervisor)
        let policy = PolicyEvaluator(policy: try Policy.load(text: MockServer.embeddedDefaultPolicy))
        let identity = CallIdentity(grant: "mock", session: "s")
        let record = try CallRecord(path: callLog)
        let bridge = tasks ? try MCPTaskBridge(stateDirectory: directory + "/state", service: service) : nil
        let core = MockServer.core(
            service: service, policy: policy, identity: { _ in identity }, logger: Logger(label: "mock"), callRecord: record,
            tasks: bridge)
        return (InProcessServerTransport(core: core), callLog)
    }

    private func executed(_ callLog: String) throws -> [String] {
        try CallRecord.read(path: callLog).compactMap { $0["tool"]?.stringValue }
    }

    private static let sleepTask: JSONValue = [
        "title": "t", "goal": "secret-goal-value", "task_type": "sleep", "condition": ["duration_ms": 30000],
    ]

    func testTasksPassOnlyForHandlesCreatedThroughTheSandbox() async throws {
        let (transport, callLog) = try await inProcessMock(tasks: true)
        let entries = Mutex<[AuditEntry]>([])
        let sandbox = try await AgentSandbox.connect(
            policy: PolicyEvaluator(policy: try Policy.load(text: #"{"version": "1", "default": "allow", "hide": ["cancel_background_task"]}"#)),
            identity: CallIdentity(grant: "agent-1"), to: .transport(transport),
            audit: ClosureAuditSink { entry in entries.withLock { $0.append(entry) } }, useTasks: true)
        XCTAssertEqual(sandbox.era?.isModern, true)
        let background = try await sandbox.callTool("create_background_task", arguments: Self.sleepTask)
        let backgroundID = try XCTUnwrap(background.structuredContent?["task_id"]?.stringValue)
        XCTAssertNil(background.taskID, "a call that does not block is no task")
        let waiting = try await sandbox.callTool(
            "wait_for_background_task", arguments: ["task_id": .string(backgroundID), "timeout_ms": -1])
        let handle = try XCTUnwrap(waiting.taskID, waiting.text)
        let current = try await sandbox.task(handle)
        XCTAssertEqual(current["status"], "working")
        for other in [backgroundID, "guess"] {
            do {
                _ = try await sandbox.task(other)
                XCTFail("\(other) is not a handle of this sandbox's")
            } catch AgentSandboxError.server(let code, _) {
                XCTAssertEqual(code, JSONRPCError.invalidParamsCode)
            }
        }
        try await sandbox.cancelTask(handle)
        let ended = try await sandbox.awaitTask(handle)
        XCTAssertEqual(ended["status"], "cancelled")
        let still = try await sandbox.callTool("get_background_task", arguments: ["task_id": .string(backgroundID)])
        XCTAssertEqual(still.structuredContent?["runtime_status"], "running", "cancelling the wait never touches the task waited on")

        let nap = try await sandbox.callTool("wait", arguments: ["duration_ms": 5])
        let napHandle = try XCTUnwrap(nap.taskID)
        let done = try await sandbox.awaitTask(napHandle)
        XCTAssertEqual(done["status"], "completed")
        XCTAssertEqual(done["result"]?["structuredContent"]?["ok"], true)
        let tasksAudited = entries.withLock { $0 }.filter { $0.tool.hasPrefix("tasks/") }.map { "\($0.tool) \($0.decision)" }
        XCTAssertTrue(tasksAudited.contains("tasks/get refused") && tasksAudited.contains("tasks/cancel forwarded"), "\(tasksAudited)")
        XCTAssertEqual(try executed(callLog).filter { $0 == "wait_for_background_task" }.count, 1)
    }

    /// A call the agent's audit sink cannot record never reaches the server, and its counter is given back.
    func testACallTheAuditSinkCannotRecordIsRefused() async throws {
        let (transport, callLog) = try await inProcessMock()
        let failing = Mutex(true)
        let sandbox = try await AgentSandbox.connect(
            policy: PolicyEvaluator(policy: try Policy.load(text: Self.policyText)),
            identity: CallIdentity(grant: "agent-1", session: "s1"), to: .transport(transport),
            audit: ClosureAuditSink { _ in
                if failing.withLock({ $0 }) { throw AuditFailure("the agent's log is down") }
            })
        for _ in 0..<3 {
            let refused = try await sandbox.callTool("create_background_task", arguments: Self.sleepTask)
            XCTAssertTrue(refused.wasDenied)
            XCTAssertEqual(
                refused.text, "[POLICY DENIED] the audit trail could not record this call, so it was not forwarded: the agent's log is down")
            XCTAssertEqual(refused.decision.rule, "audit")
        }
        XCTAssertEqual(try executed(callLog), [])
        do {
            _ = try await sandbox.task("0123456789abcdef0123456789abcdef")
            XCTFail("a handle the sandbox did not create must be refused")
        } catch let AgentSandboxError.server(code, _) {
            XCTAssertEqual(code, -32602, "a handle it does not own is refused as such, audit or not")
        }
        failing.withLock { $0 = false }
        let allowed = try await sandbox.callTool("create_background_task", arguments: Self.sleepTask)
        XCTAssertFalse(allowed.wasDenied, "the three refused calls gave their counters back: \(allowed.text)")
        XCTAssertEqual(try executed(callLog), ["create_background_task"])
        await sandbox.close()
    }

    func testPolicyDecidesBeforeTheMockInProcess() async throws {
        let (transport, callLog) = try await inProcessMock()
        let entries = Mutex<[AuditEntry]>([])
        let sandbox = try await AgentSandbox.connect(
            policy: PolicyEvaluator(policy: try Policy.load(text: Self.policyText)),
            identity: CallIdentity(grant: "agent-1", session: "s1"), to: .transport(transport),
            audit: ClosureAuditSink { entry in entries.withLock { $0.append(entry) } })

        let names = try await sandbox.listTools().compactMap { $0["name"]?.stringValue }
        XCTAssertTrue(names.contains("create_background_task"))
        XCTAssertFalse(names.contains("cancel_background_task"), "hidden tools are not listed")
        XCTAssertEqual(names.count, 25)

        var taskID: JSONValue = .null
        var outcomes: [Bool] = []
        for _ in 0..<5 {
            let result = try await sandbox.callTool("create_background_task", arguments: Self.sleepTask)
            outcomes.append(result.wasDenied)
            if !result.wasDenied {
                XCTAssertFalse(result.isError, result.text)
                taskID = result.structuredContent?["task_id"] ?? .null
            } else {
                XCTAssertTrue(result.isError)
                XCTAssertTrue(result.text.hasPrefix("[POLICY DENIED] Rate limit of 3 per minute"), result.text)
            }
        }
        XCTAssertEqual(outcomes, [false, false, false, true, true], "exactly three creates are allowed")
        // The task is a real process the mock started.
        let task = try await sandbox.callTool("get_background_task", arguments: ["task_id": taskID])
        XCTAssertEqual(task.structuredContent?["runtime_status"], "running")
        XCTAssertEqual(task.structuredContent?["status"], "waiting", "a sleep task shows waiting, as the real server's")

        let hidden = try await sandbox.callTool("cancel_background_task", arguments: ["task_id": taskID])
        XCTAssertTrue(hidden.wasDenied && hidden.isError)
        XCTAssertTrue(hidden.text.contains("hidden by policy"), hidden.text)
        let unlisted = try await sandbox.callTool("get_scheduler_time")
        XCTAssertEqual(unlisted.decision.rule, "default_deny")
        let dangerous = try await sandbox.callTool(
            "create_background_task",
            arguments: ["title": "t", "goal": "then drop the database", "task_type": "sleep", "condition": ["duration_ms": 1]])
        XCTAssertEqual(dangerous.decision.rule, "tools.create_background_task.deny_if[0]")

        // What the mock actually executed: three creates and one get, nothing denied.
        XCTAssertEqual(try executed(callLog), Array(repeating: "create_background_task", count: 3) + ["get_background_task"])

        let audit = entries.withLock { $0 }
        XCTAssertEqual(audit.count, 9)
        XCTAssertEqual(audit.filter { $0.tool == "create_background_task" }.map(\.decision),
                       ["allow", "allow", "allow", "deny", "deny", "deny"])
        let first = try XCTUnwrap(audit.first)
        XCTAssertEqual(first.grant, "agent-1")
        XCTAssertEqual(first.argumentKeys, ["condition", "goal", "task_type", "title"])
        XCTAssertFalse(first.jsonValue.jsonString().contains("secret-goal-value"), "audit entries never hold values")
        await sandbox.close()
    }

    func testApprovalHandlerDecides() async throws {
        let (transport, callLog) = try await inProcessMock()
        let asked = Mutex<[String]>([])
        let answer = Mutex(false)
        let sandbox = try await AgentSandbox.connect(
            policy: PolicyEvaluator(policy: try Policy.load(text: Self.policyText)),
            identity: CallIdentity(grant: "agent-1"), to: .transport(transport),
            approval: { request in
                asked.withLock { $0.append("\(request.tool): \(request.message)") }
                return answer.withLock { $0 }
            })
        let created = try await sandbox.callTool("create_background_task", arguments: Self.sleepTask)
        let taskID = try XCTUnwrap(created.structuredContent?["task_id"])

        let declined = try await sandbox.callTool("append_task_event", arguments: ["task_id": taskID, "message": "m"])
        XCTAssertTrue(declined.wasDenied)
        XCTAssertTrue(declined.text.contains("was refused"), declined.text)
        answer.withLock { $0 = true }
        let accepted = try await sandbox.callTool("append_task_event", arguments: ["task_id": taskID, "message": "m"])
        XCTAssertFalse(accepted.wasDenied || accepted.isError, accepted.text)
        XCTAssertEqual(accepted.structuredContent?["message"], "m")
        XCTAssertEqual(asked.withLock { $0 }, Array(repeating: "append_task_event: Events are visible to the whole team", count: 2))
        XCTAssertEqual(try executed(callLog), ["create_background_task", "append_task_event"])
        await sandbox.close()

        // Without a handler the call is denied, saying why.
        let (transport2, _) = try await inProcessMock(callLog: "second")
        let strict = try await AgentSandbox.connect(
            policy: PolicyEvaluator(policy: try Policy.load(text: Self.policyText)),
            identity: CallIdentity(grant: "agent-2"), to: .transport(transport2))
        let denied = try await strict.callTool("append_task_event", arguments: ["task_id": taskID, "message": "m"])
        XCTAssertEqual(denied.decision.outcome, .approvalRequired)
        XCTAssertTrue(denied.isError)
        XCTAssertTrue(denied.text.contains("approval was required but this agent has no approval handler"), denied.text)
        await strict.close()
    }

    /// A server that answers one tool with a JSON-RPC error: the call must not count against the limit.
    func testCountersRollBackOnJSONRPCError() async throws {
        let calls = Mutex(0)
        let server = MCPServerCore(description: ServerDescription(name: "erroring", version: "1")) {
            method, params, _ throws(JSONRPCError) in
            switch method {
            case "tools/list":
                return ["tools": [["name": "flaky", "description": "fails on request", "inputSchema": ["type": "object"]]]]
            case "tools/call":
                let n = calls.withLock { $0 += 1; return $0 }
                if params["arguments"]?["fail"] == true { throw .invalidParams("no such thing (\(n))") }
                return ["content": [["type": "text", "text": .string("ok \(n)")]], "isError": false]
            default:
                throw .methodNotFound(method)
            }
        }
        let transport = InProcessServerTransport(core: server)
        let policy = try Policy.load(text: """
            {"version": "1", "default": "deny",
             "tools": {"flaky": {"limits": [{"counter": "c", "window": "minute", "max": 2, "scope": "grant"}]}}}
            """)
        let sandbox = try await AgentSandbox.connect(
            policy: PolicyEvaluator(policy: policy), identity: CallIdentity(grant: "g"), to: .transport(transport))
        for _ in 0..<3 {
            do {
                _ = try await sandbox.callTool("flaky", arguments: ["fail": true])
                XCTFail("a JSON-RPC error must throw")
            } catch let error as AgentSandboxError {
                guard case .server(let code, let message) = error else { return XCTFail("\(error)") }
                XCTAssertEqual(code, -32602)
                XCTAssertTrue(message.contains("no such thing"), message)
            }
        }
        // Three failed calls did not use up the limit of two.
        let first = try await sandbox.callTool("flaky")
        let second = try await sandbox.callTool("flaky")
        let third = try await sandbox.callTool("flaky")
        XCTAssertEqual([first.text, second.text], ["ok 4", "ok 5"])
        XCTAssertTrue(third.wasDenied)
        XCTAssertEqual(calls.withLock { $0 }, 5, "the denied call never reached the server")
        await sandbox.close()
    }

    func testChildProcessOverStdioAndItsDeath() async throws {
        let callLog = directory + "/calls.jsonl"
        let sandbox = try await AgentSandbox.connect(
            policy: PolicyEvaluator(policy: try Policy.load(text: Self.policyText)),
            identity: CallIdentity(grant: "agent-1"),
            to: .process(command: [Self.mockBinary, "--state-dir", directory + "/child", "--call-log", callLog,
                                   "--grace-ms", "200", "--log-level", "warning"]))
        XCTAssertEqual(sandbox.serverInfo["name"], "allcanuse-mock")
        XCTAssertEqual(sandbox.era, .modern(version: "2026-07-28"), "server/discover answered: the modern era")
        let tools = try await sandbox.listTools()
        XCTAssertFalse(tools.contains { $0["name"] == "cancel_background_task" })
        let created = try await sandbox.callTool("create_background_task", arguments: Self.sleepTask)
        XCTAssertFalse(created.isError, created.text)
        let denied = try await sandbox.callTool("get_scheduler_time")
        XCTAssertTrue(denied.wasDenied)
        XCTAssertEqual(try executed(callLog), ["create_background_task"])

        // The server dies: the next call fails promptly with a clear error instead of hanging.
        let pid = try XCTUnwrap(Self.childPID(of: ProcessInfo.processInfo.processIdentifier, named: "allcanuse-mock"))
        XCTAssertEqual(kill(pid, SIGKILL), 0)
        let start = ContinuousClock.now
        var failure: AgentSandboxError?
        for _ in 0..<50 {  // the death is noticed asynchronously; a call sent before that may still be in flight
            do {
                _ = try await sandbox.callTool("list_background_tasks")
                try await Task.sleep(for: .milliseconds(20))
            } catch let error as AgentSandboxError {
                failure = error
                break
            }
        }
        guard case .connectionLost(let why)? = failure else { return XCTFail("expected connectionLost, got \(String(describing: failure))") }
        XCTAssertTrue(why.contains("signal 9"), why)
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(5))
        await sandbox.close()
    }

    func testStreamableHTTP() async throws {
        let callLog = directory + "/calls.jsonl"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.mockBinary)
        process.arguments = ["--http", "127.0.0.1:0", "--state-dir", directory + "/http", "--call-log", callLog, "--grace-ms", "200"]
        let stderr = Pipe()
        process.standardError = stderr
        try process.run()
        defer {
            process.terminate()
            process.waitUntilExit()
        }
        var url: URL?
        var seen = ""
        while url == nil {
            let chunk = stderr.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            seen += String(decoding: chunk, as: UTF8.self)
            if let range = seen.range(of: #"listening on (http://\S+)"#, options: .regularExpression) {
                url = URL(string: String(seen[range].dropFirst("listening on ".count)))
            }
        }
        let endpoint = try XCTUnwrap(url, seen)
        let sandbox = try await AgentSandbox.connect(
            policy: PolicyEvaluator(policy: try Policy.load(text: Self.policyText)),
            identity: CallIdentity(grant: "agent-1"), to: .http(endpoint))
        XCTAssertEqual(sandbox.serverInfo["name"], "allcanuse-mock")
        XCTAssertEqual(sandbox.era, .modern(version: "2026-07-28"))
        let tools = try await sandbox.listTools()
        XCTAssertEqual(tools.count, 25)
        let created = try await sandbox.callTool("create_background_task", arguments: Self.sleepTask)
        XCTAssertFalse(created.isError, created.text)
        let listed = try await sandbox.callTool("list_background_tasks")
        XCTAssertEqual(listed.structuredContent?["total_count"], 1)
        let hidden = try await sandbox.callTool("cancel_background_task", arguments: ["task_id": "x"])
        XCTAssertTrue(hidden.wasDenied)
        XCTAssertEqual(try executed(callLog), ["create_background_task", "list_background_tasks"])
        await sandbox.close()
    }

    func testBadConnectionsFailClearly() async throws {
        let policy = PolicyEvaluator(policy: try Policy.load(text: Self.policyText))
        do {
            _ = try await AgentSandbox.connect(
                policy: policy, identity: CallIdentity(), to: .process(command: ["/bin/sh", "-c", "exit 3"]))
            XCTFail("a server that exits at once cannot be connected")
        } catch let error as AgentSandboxError {
            XCTAssertTrue("\(error)".contains("cannot connect"), "\(error)")
        }
        let start = ContinuousClock.now
        do {
            _ = try await AgentSandbox.connect(
                policy: policy, identity: CallIdentity(), to: .http(try XCTUnwrap(URL(string: "http://127.0.0.1:9/mcp"))))
            XCTFail("nothing listens on port 9")
        } catch let error as AgentSandboxError {
            XCTAssertTrue("\(error)".contains("cannot connect"), "\(error)")
        }
        // A refused connection fails at once, not after the client's 10 s connect timeout of retries.
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(5))
    }

    /// An answer that is not JSON we can read (an unpaired surrogate, as a server that cuts text inside an emoji
    /// sends) ends its call with an error at once, instead of leaving it waiting for ever; its counter stays spent.
    func testAnUnreadableAnswerEndsItsCall() async throws {
        let server = #"""
            import json, sys
            for line in sys.stdin:
                message = json.loads(line)
                if "id" not in message:
                    continue
                method, answer = message.get("method"), {"jsonrpc": "2.0", "id": message["id"]}
                if method == "initialize":
                    answer["result"] = {"protocolVersion": message["params"]["protocolVersion"], "capabilities": {"tools": {}},
                                        "serverInfo": {"name": "cuts-emoji", "version": "1"}}
                elif method == "tools/call" and message["params"]["name"] == "cut":
                    answer["result"] = {"content": [{"type": "text", "text": "\ud83d"}]}
                elif method == "tools/call":
                    answer["result"] = {"content": [{"type": "text", "text": "fine"}]}
                else:
                    answer["error"] = {"code": -32601, "message": "Method not found"}
                print(json.dumps(answer), flush=True)
            """#
        let policy = PolicyEvaluator(
            policy: try Policy.load(
                text: #"{"version": "1", "default": "allow", "tools": {"cut": {"limits": [{"counter": "c", "window": "hour", "max": 1}]}}}"#))
        let sandbox = try await AgentSandbox.connect(
            policy: policy, identity: CallIdentity(), to: .process(command: ["python3", "-c", server]))
        let start = ContinuousClock.now
        do {
            _ = try await sandbox.callTool("cut")
            XCTFail("an unreadable answer must fail the call")
        } catch AgentSandboxError.unreadableAnswer(let why) {
            XCTAssertTrue(why.contains("surrogate"), why)
        }
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(5))
        let fine = try await sandbox.callTool("other")
        XCTAssertEqual(fine.text, "fine", "the connection goes on")
        let again = try await sandbox.callTool("cut")
        XCTAssertTrue(again.wasDenied, "the call may have run: its counter stays spent")
        await sandbox.close()
    }

    /// The direct child of `parent` whose command name is `name`.
    static func childPID(of parent: Int32, named name: String) -> Int32? {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        for entry in entries {
            guard let pid = Int32(entry),
                let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            let command = stat[stat.index(after: stat.firstIndex(of: "(") ?? stat.startIndex)..<close]
            let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
            if command.hasPrefix(name.prefix(15)), fields.count > 1, Int32(fields[1]) == parent { return pid }
        }
        return nil
    }

    static let corralBinary = URL(fileURLWithPath: mockBinary).deletingLastPathComponent().appendingPathComponent("corral").path

    /// A server that knows only the handshake (`corral bench echo-server` answers server/discover -32601): the
    /// sandbox falls back to 2025-11-25, as the Python SDK does.
    func testALegacyOnlyServerGetsTheHandshake() async throws {
        let sandbox = try await AgentSandbox.connect(
            policy: PolicyEvaluator(policy: try Policy.load(text: #"{"version": "1", "default": "allow"}"#)),
            identity: CallIdentity(grant: "g"), to: .process(command: [Self.corralBinary, "bench", "echo-server"]))
        XCTAssertEqual(sandbox.era, .legacy(version: "2025-06-18"))
        XCTAssertEqual(sandbox.serverInfo["name"], "echo")
        let echoed = try await sandbox.callTool("echo")
        XCTAssertEqual(echoed.structuredContent, ["ok": true])
        await sandbox.close()
    }

    /// Through corral proxy, whose policy wants approval: the proxy asks with an input_required result (2026-07-28),
    /// the sandbox's approval handler answers, and the call runs once if approved.
    func testTheProxysInputRequiredIsAnsweredByTheApprovalHandler() async throws {
        let proxyPolicy = directory + "/proxy-policy.json"
        try #"{"version": "1", "default": "allow", "tools": {"append_task_event": {"action": "require_approval", "reason": "Team-visible"}}}"#
            .write(toFile: proxyPolicy, atomically: true, encoding: .utf8)
        let callLog = directory + "/proxied.jsonl"
        let asked = Mutex<[String]>([])
        let answers = Mutex([true, false])
        let sandbox = try await AgentSandbox.connect(
            policy: PolicyEvaluator(policy: try Policy.load(text: #"{"version": "1", "default": "allow"}"#)),
            identity: CallIdentity(grant: "g"),
            to: .process(command: [
                Self.corralBinary, "proxy", "--policy", proxyPolicy, "--", Self.mockBinary, "--state-dir", directory + "/proxied",
                "--call-log", callLog, "--log-level", "warning",
            ]),
            approval: { request in
                asked.withLock { $0.append(request.message) }
                return answers.withLock { $0.removeFirst() }
            })
        XCTAssertEqual(sandbox.era, .modern(version: "2026-07-28"))
        let task = try await sandbox.callTool("create_background_task", arguments: Self.sleepTask)
        let taskID = try XCTUnwrap(task.structuredContent?["task_id"])
        let approved = try await sandbox.callTool("append_task_event", arguments: ["task_id": taskID, "message": "ok"])
        XCTAssertFalse(approved.isError, approved.text)
        XCTAssertEqual(approved.structuredContent?["message"], "ok")
        let declined = try await sandbox.callTool("append_task_event", arguments: ["task_id": taskID, "message": "no"])
        XCTAssertTrue(declined.isError && declined.text.contains("[POLICY DENIED]"), declined.text)
        XCTAssertEqual(asked.withLock { $0.count }, 2)
        XCTAssertTrue(asked.withLock { $0[0] }.contains("append_task_event"))
        XCTAssertEqual(try executed(callLog), ["create_background_task", "append_task_event"])
        await sandbox.close()
    }
}
