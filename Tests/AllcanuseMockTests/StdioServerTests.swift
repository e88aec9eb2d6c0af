import CorralJSON
import Foundation
import XCTest

/// The built `allcanuse-mock` binary over stdio, driven with raw JSON-RPC lines (responses matched by id: the SDK
/// answers concurrently handled requests in any order).
final class StdioServerTests: XCTestCase {
    private var directory = ""

    override func setUp() {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("corral-stdio-\(UUID().uuidString)").path
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private final class Session: @unchecked Sendable {  // used by one test at a time
        let process = Process()
        let stdin = Pipe()
        let stdout = Pipe()
        private var buffer = Data()

        init(arguments: [String]) throws {
            let binary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
                .appendingPathComponent("allcanuse-mock")
            process.executableURL = binary
            process.arguments = arguments
            process.standardInput = stdin
            process.standardOutput = stdout
            process.standardError = FileHandle.nullDevice
            try process.run()
        }

        func send(_ line: String) {
            stdin.fileHandleForWriting.write(Data((line + "\n").utf8))
        }

        func closeInput() throws {
            try stdin.fileHandleForWriting.close()
        }

        /// The next message, or nil at end of output.
        func next() -> JSONValue? {
            while true {
                if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = buffer[buffer.startIndex..<newline]
                    buffer = Data(buffer[buffer.index(after: newline)...])
                    return try? JSONValue.parse(Data(line))
                }
                let chunk = stdout.fileHandleForReading.availableData
                if chunk.isEmpty { return nil }
                buffer.append(chunk)
            }
        }

        /// Like `responses`, but gives up after `timeout` seconds (nil then).
        func responses(_ ids: Set<Int>, timeout: TimeInterval) -> [Int: JSONValue]? {
            let done = DispatchSemaphore(value: 0)
            nonisolated(unsafe) var found: [Int: JSONValue] = [:]
            DispatchQueue.global().async {
                found = self.responses(ids)
                done.signal()
            }
            return done.wait(timeout: .now() + timeout) == .success ? found : nil
        }

        /// Messages until every id in `ids` has been answered.
        func responses(_ ids: Set<Int>) -> [Int: JSONValue] {
            var found: [Int: JSONValue] = [:]
            while found.count < ids.count, let message = next() {
                if let id = message["id"]?.intValue, ids.contains(id) { found[id] = message }
            }
            return found
        }
    }

    private func initialize(_ session: Session, experimental: JSONValue = [:]) -> JSONValue? {
        let request: JSONValue = [
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": ["protocolVersion": "2025-06-18", "capabilities": ["experimental": experimental],
                       "clientInfo": ["name": "test", "version": "1"]],
        ]
        session.send(request.jsonString())
        session.send(#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        return session.responses([0])[0]
    }

    private func call(_ id: Int, _ tool: String, _ arguments: JSONValue) -> String {
        JSONValue.object([
            "jsonrpc": "2.0", "id": .int(id), "method": "tools/call",
            "params": ["name": .string(tool), "arguments": arguments],
        ]).jsonString()
    }

    func testToolsOverStdioWithARealProcess() throws {
        let session = try Session(arguments: ["--state-dir", directory])
        let initialized = initialize(session, experimental: ["corral": ["nested": true]])
        XCTAssertEqual(initialized?["result"]?["serverInfo"]?["name"], "allcanuse-mock", "an object in experimental must not fail initialize")
        session.send(#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        let tools = session.responses([1])[1]?["result"]?["tools"]?.arrayValue ?? []
        XCTAssertEqual(tools.count, 26)
        let cancel = tools.first { $0["name"] == "cancel_background_task" }
        XCTAssertEqual(cancel?["annotations"]?["destructiveHint"], true)
        XCTAssertEqual(cancel?["inputSchema"]?["required"], ["task_id"])

        session.send(call(2, "create_background_task", [
            "title": "t", "goal": "g", "task_type": "command", "condition": ["argv": ["/bin/sh", "-c", "echo out; sleep 30"]],
        ]))
        let created = session.responses([2])[2]?["result"]
        XCTAssertEqual(created?["isError"], false)
        let task = try XCTUnwrap(created?["structuredContent"])
        let id = try XCTUnwrap(task["task_id"])
        let pid = try XCTUnwrap(task["pid"]?.intValue)
        XCTAssertEqual(kill(pid_t(pid), 0), 0, "the task's process runs")
        XCTAssertEqual(try JSONValue.parse(created?["content"]?.arrayValue?.first?["text"]?.stringValue ?? ""), task)

        // A long wait does not block other requests: the pause is answered while the wait still waits.
        session.send(call(3, "wait_for_background_task", ["task_id": id, "timeout_ms": 20000]))
        session.send(call(4, "pause_background_task", ["task_id": id]))
        let paused = session.responses([4])[4]?["result"]?["structuredContent"]
        XCTAssertEqual(paused?["status"], "paused")
        session.send(call(5, "cancel_background_task", ["task_id": id]))
        let answers = session.responses([3, 5])
        XCTAssertEqual(answers[5]?["result"]?["structuredContent"]?["status"], "cancelled")
        XCTAssertEqual(answers[3]?["result"]?["structuredContent"]?["last_result"]?["status"], "cancelled")
        XCTAssertEqual(kill(pid_t(pid), 0), -1, "no process of the task is left")
        try session.closeInput()
        session.process.waitUntilExit()
        XCTAssertEqual(session.process.terminationStatus, 0)
    }

    /// tools/call is answered by the mock's fast path, not the SDK's handler, which rewrote any string that looks
    /// like a data URL into base64 (`data:text/plain,hello` came back as `data:text/plain;base64,aGVsbG8=`).
    func testStringsThatLookLikeDataURLsComeBackAsSent() throws {
        let session = try Session(arguments: ["--state-dir", directory, "--grace-ms", "200"])
        _ = initialize(session)
        session.send(call(1, "create_background_task", [
            "title": "data:text/plain,hello", "goal": "g", "task_type": "sleep", "condition": ["duration_ms": 1],
        ]))
        let task = session.responses([1])[1]?["result"]
        XCTAssertEqual(task?["structuredContent"]?["title"], "data:text/plain,hello")
        let text = task?["content"]?.arrayValue?.first?["text"]?.stringValue ?? ""
        XCTAssertTrue(text.contains(#""title":"data:text/plain,hello""#), text)
        try session.closeInput()
        session.process.waitUntilExit()
    }

    func testCancelledNotificationStopsAWait() throws {
        let session = try Session(arguments: ["--state-dir", directory, "--grace-ms", "200"])
        _ = initialize(session)
        session.send(call(1, "create_background_task", [
            "title": "t", "goal": "g", "task_type": "sleep", "condition": ["duration_ms": 30000],
        ]))
        let id = try XCTUnwrap(session.responses([1])[1]?["result"]?["structuredContent"]?["task_id"])
        session.send(call(2, "wait_for_background_task", ["task_id": id, "timeout_ms": 25000]))
        Thread.sleep(forTimeInterval: 0.3)
        session.send(#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2,"reason":"test"}}"#)
        // A cancelled request is not answered (the spec: receivers SHOULD NOT), the task keeps running, and the wait
        // holds nothing up: the next request is answered, and the end of input ends the server at once instead of
        // after the wait's 25 s.
        session.send(call(3, "get_background_task", ["task_id": id]))
        var seen: [JSONValue] = []
        while let message = session.next() {
            seen.append(message)
            if message["id"] == 3 { break }
        }
        XCTAssertEqual(seen.last?["result"]?["structuredContent"]?["runtime_status"], "running")
        XCTAssertFalse(seen.contains { $0["id"] == 2 }, "a cancelled request was answered")
        XCTAssertNil(session.responses([2], timeout: 0.5), "a cancelled request was answered")
        let closed = ContinuousClock.now
        try session.closeInput()
        session.process.waitUntilExit()
        XCTAssertLessThan(ContinuousClock.now - closed, .seconds(10))
        XCTAssertEqual(session.process.terminationStatus, 0)
    }

    /// The SDK's `.strict` mode drops a request that races `initialize`; the mock runs non-strict, so requests
    /// written right behind initialize, before its answer, are all answered.
    func testRequestsRightBehindInitializeAreAnswered() throws {
        let session = try Session(arguments: ["--state-dir", directory])
        session.send(#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#)
        session.send(#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        session.send(#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        session.send(call(2, "get_scheduler_time", [:]))
        let answers = session.responses([0, 1, 2], timeout: 10)
        XCTAssertEqual(answers?.count, 3)
        XCTAssertEqual(answers?[1]?["result"]?["tools"]?.arrayValue?.count, 26)
        try session.closeInput()
        session.process.waitUntilExit()
    }

    func testMalformedInputGetsTheRightErrors() throws {
        let session = try Session(arguments: ["--state-dir", directory])
        _ = initialize(session)
        session.send("this is not json")
        let parseError = session.next()
        XCTAssertEqual(parseError?["error"]?["code"], -32700)
        XCTAssertEqual(parseError?["id"], .null)
        session.send(#"{"jsonrpc":"2.0","id":7}"#)
        XCTAssertEqual(session.responses([7])[7]?["error"]?["code"], -32600)
        session.send(#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"get_background_task","arguments":"x"}}"#)
        let denied = session.responses([8])[8]?["result"]
        XCTAssertEqual(denied?["isError"], true)
        session.send(call(9, "get_background_task", ["task_id": "nope"]))
        XCTAssertEqual(session.responses([9])[9]?["result"]?["structuredContent"]?["error"], "unknown task id nope")
        try session.closeInput()
        session.process.waitUntilExit()
        XCTAssertEqual(session.process.terminationStatus, 0)
    }

    func testRequestsInFlightAtEndOfInputAreAnswered() throws {
        let session = try Session(arguments: ["--state-dir", directory, "--grace-ms", "200"])
        _ = initialize(session)
        session.send(call(1, "create_background_task", [
            "title": "t", "goal": "g", "task_type": "sleep", "condition": ["duration_ms": 400],
        ]))
        let id = try XCTUnwrap(session.responses([1])[1]?["result"]?["structuredContent"]?["task_id"])
        // The wait is in flight when stdin ends: the SDK alone would exit and lose its answer.
        session.send(call(2, "wait_for_background_task", ["task_id": id, "timeout_ms": 10000]))
        try session.closeInput()
        let answer = session.responses([2])[2]
        XCTAssertNotNil(answer?["result"], "the in-flight wait was not answered")
        session.process.waitUntilExit()
        XCTAssertEqual(session.process.terminationStatus, 0)
    }

    func testPolicyHidesAndDenies() throws {
        let policyPath = directory + "-policy.json"
        try #"{"version": "1", "default": "allow", "hide": ["cancel_background_task"], "tools": {"get_scheduler_time": {"action": "deny", "reason": "not here"}}}"#
            .write(toFile: policyPath, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: policyPath) }
        let session = try Session(arguments: ["--state-dir", directory, "--policy", policyPath])
        _ = initialize(session)
        session.send(#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        let names = session.responses([1])[1]?["result"]?["tools"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? []
        XCTAssertEqual(names.count, 25)
        XCTAssertFalse(names.contains("cancel_background_task"))
        session.send(call(2, "cancel_background_task", ["task_id": "x"]))
        session.send(call(3, "get_scheduler_time", [:]))
        let answers = session.responses([2, 3])
        XCTAssertEqual(
            answers[2]?["result"]?["content"]?.arrayValue?.first?["text"],
            "[POLICY DENIED] Tool \"cancel_background_task\" is hidden by policy")
        XCTAssertEqual(answers[3]?["result"]?["content"]?.arrayValue?.first?["text"], "[POLICY DENIED] not here")
        try session.closeInput()
        session.process.waitUntilExit()
    }
}
