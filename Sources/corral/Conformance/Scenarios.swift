import CorralJSON
import Foundation
import AllcanuseMock
import Gateway

/// One gateway conformance scenario: a policy the gateway is started with, and checks of what the client was told
/// against what allcanuse-mock actually received.
struct ConformanceScenario: Sendable {
    let name: String
    let summary: String
    /// The eras it applies to (`batch` is 2025-11-25 only; approval replay is 2026-07-28's input_required).
    var eras: Set<ConformanceEra> = [.legacy, .modern]
    /// Needs the gateway's HTTP endpoint (`--gateway-url`): header rules exist only there.
    var needsHTTP = false
    let policy: JSONValue
    /// Returns a one-line account of what passed; throws `ConformanceFailure` with what did not.
    let run: @Sendable (ScenarioSession) throws -> String
}

/// A running gateway (with the mock behind it) as a scenario sees it.
final class ScenarioSession: @unchecked Sendable {  // used by one scenario on one thread
    let client: any ScenarioWire
    let callLog: String
    let timeout: Duration
    let era: ConformanceEra
    private var nextID = 100

    init(client: any ScenarioWire, callLog: String, timeout: Duration, era: ConformanceEra) {
        self.client = client
        self.callLog = callLog
        self.timeout = timeout
        self.era = era
    }

    /// The 2026-07-28 `_meta` of this kit's requests.
    static let meta: JSONValue = [
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": ["elicitation": [:]],
        "io.modelcontextprotocol/clientInfo": ["name": "corral-conformance", "version": "1"],
    ]

    /// Params as this session's era sends them (an object gets the 2026-07-28 `_meta`; anything else is sent as is).
    func params(_ params: JSONValue) -> JSONValue {
        guard era == .modern, var object = params.objectValue else { return params }
        object["_meta"] = Self.meta
        return .object(object)
    }

    /// A request in this session's era.
    func request(_ method: String, _ params: JSONValue) throws -> JSONValue {
        try client.request(newID(), method, self.params(params), timeout: timeout)
    }

    func newID() -> Int {
        nextID += 1
        return nextID
    }

    func initialize() throws {
        if era == .modern {
            let answer = try request("server/discover", [:])
            guard answer["result"]?["supportedVersions"]?.arrayValue?.contains("2026-07-28") == true else {
                throw ConformanceFailure("server/discover did not offer 2026-07-28: \(answer.jsonString().prefix(300))")
            }
            return
        }
        let answer = try client.request(
            1, "initialize",
            ["protocolVersion": "2025-06-18", "capabilities": [:], "clientInfo": ["name": "corral-conformance", "version": "1"]],
            timeout: timeout)
        guard answer["result"]?["serverInfo"] != nil else { throw ConformanceFailure("initialize failed: \(answer.jsonString())") }
        client.send(["jsonrpc": "2.0", "method": "notifications/initialized"])
    }

    func call(_ tool: String, _ arguments: JSONValue = [:]) throws -> JSONValue {
        try request("tools/call", ["name": .string(tool), "arguments": arguments])
    }

    func listTools() throws -> [String] {
        let answer = try request("tools/list", [:])
        guard let tools = answer["result"]?["tools"]?.arrayValue else {
            throw ConformanceFailure("tools/list failed: \(answer.jsonString().prefix(300))")
        }
        return tools.compactMap { $0["name"]?.stringValue }
    }

    /// Every tools/call that reached the mock, in order.
    func received() throws -> [JSONValue] {
        guard FileManager.default.fileExists(atPath: callLog) else { return [] }
        let text = try String(contentsOfFile: callLog, encoding: .utf8)
        return try text.split(separator: "\n").map { try JSONValue.parse(Data($0.utf8)) }
    }

    func receivedTools() throws -> [String] { try received().compactMap { $0["tool"]?.stringValue } }
}

/// The MCP era a scenario runs in.
enum ConformanceEra: String, Sendable, CaseIterable {
    case legacy, modern
}

/// A response is a denial if it is a tool result with `isError` or a JSON-RPC error: gateways answer either way.
func isDenied(_ response: JSONValue) -> Bool {
    response["error"] != nil || response["result"]?["isError"] == true
}

func isSuccess(_ response: JSONValue) -> Bool {
    response["result"] != nil && response["result"]?["isError"] != true
}

func require(_ condition: Bool, _ message: @autoclosure () -> String) throws {
    if !condition { throw ConformanceFailure(message()) }
}

func summary(_ response: JSONValue) -> String {
    if let error = response["error"] { return "JSON-RPC error \(error.jsonString().prefix(160))" }
    let text = response["result"]?["content"]?.arrayValue?.first?["text"]?.stringValue ?? response.jsonString()
    return String(text.prefix(160))
}

enum Scenarios {
    static let all: [ConformanceScenario] = [
        rateLimit, hiddenTool, defaultDeny, argumentConditions, batch, malformedParams, duplicateKeys, passthrough,
        approvalReplay, headerMismatch, tasksBypass,
    ]

    static let rateLimit = ConformanceScenario(
        name: "rate-limit",
        summary: "10 calls a minute: the 11th is denied and the server never sees it",
        policy: [
            "version": "1", "default": "allow",
            "tools": ["get_scheduler_time": ["limits": [["counter": "ten-a-minute", "window": "minute", "max": 10, "scope": "grant"]]]],
        ]
    ) { session in
        for n in 1...10 {
            let answer = try session.call("get_scheduler_time")
            try require(isSuccess(answer), "call \(n) of 10 was not allowed: \(summary(answer))")
        }
        let eleventh = try session.call("get_scheduler_time")
        try require(isDenied(eleventh), "the 11th call was not denied: \(summary(eleventh))")
        let seen = try session.receivedTools().filter { $0 == "get_scheduler_time" }.count
        try require(seen == 10, "the server received \(seen) calls, expected 10")
        return "10 allowed, 11th denied, server saw 10"
    }

    static let hiddenTool = ConformanceScenario(
        name: "hidden-tool",
        summary: "a hidden tool is absent from tools/list, its call is denied and never reaches the server",
        policy: ["version": "1", "default": "allow", "hide": ["cancel_background_task"]]
    ) { session in
        let names = try session.listTools()
        try require(!names.contains("cancel_background_task"), "tools/list still lists cancel_background_task")
        try require(names.contains("get_scheduler_time"), "tools/list lost tools that are not hidden: \(names)")
        let answer = try session.call("cancel_background_task", ["task_id": "task-that-does-not-exist"])
        try require(isDenied(answer), "the hidden tool's call was not denied: \(summary(answer))")
        _ = try session.call("get_scheduler_time")  // a later call the server sees, so a late forward shows
        try require(try !session.receivedTools().contains("cancel_background_task"), "the server received the hidden tool's call")
        return "absent from \(names.count) listed tools, call denied, server saw none"
    }

    static let defaultDeny = ConformanceScenario(
        name: "default-deny",
        summary: "under default deny only listed tools pass",
        policy: ["version": "1", "default": "deny", "tools": ["list_background_tasks": [:]]]
    ) { session in
        let listed = try session.call("list_background_tasks")
        try require(isSuccess(listed), "a tool the policy lists was not allowed: \(summary(listed))")
        for tool in ["get_scheduler_time", "create_background_task"] {
            let answer = try session.call(tool, tool == "create_background_task"
                ? ["title": "t", "goal": "g", "task_type": "sleep", "condition": ["duration_ms": 1]] : [:])
            try require(isDenied(answer), "\(tool) was not denied: \(summary(answer))")
        }
        _ = try session.call("list_background_tasks")
        let seen = try session.receivedTools()
        try require(seen == ["list_background_tasks", "list_background_tasks"], "the server received \(seen)")
        return "listed tool allowed, 2 others denied, server saw only the listed one"
    }

    static let argumentConditions = ConformanceScenario(
        name: "argument-conditions",
        summary: "deny_if and require judge the arguments before the server sees them",
        policy: [
            "version": "1", "default": "allow",
            "tools": [
                "create_background_task": [
                    "deny_if": [["conditions": [["path": "args.goal", "op": "contains", "value": "production"]], "on_deny": "No production tasks"]],
                    "require": [["path": "args.title", "op": "exists", "value": true]],
                ]
            ],
        ]
    ) { session in
        let sleep: JSONValue = ["duration_ms": 1]
        let forbidden = try session.call(
            "create_background_task", ["title": "t", "goal": "wipe the production db", "task_type": "sleep", "condition": sleep])
        try require(isDenied(forbidden), "deny_if did not deny: \(summary(forbidden))")
        let untitled = try session.call("create_background_task", ["goal": "g", "task_type": "sleep", "condition": sleep])
        try require(isDenied(untitled), "require did not deny a call without args.title: \(summary(untitled))")
        let fine = try session.call("create_background_task", ["title": "t", "goal": "tidy up", "task_type": "sleep", "condition": sleep])
        try require(isSuccess(fine), "a call meeting every condition was not allowed: \(summary(fine))")
        let goals = try session.received().compactMap { $0["arguments"]?["goal"]?.stringValue }
        try require(goals == ["tidy up"], "the server received goals \(goals)")
        return "deny_if and require denied, a clean call passed, server saw only it"
    }

    static let batch = ConformanceScenario(
        name: "batch",
        summary: "each call in a JSON-RPC batch is decided alone (2025-11-25; 2026-07-28 has no batches)",
        eras: [.legacy],
        policy: ["version": "1", "default": "allow", "hide": ["cancel_background_task"]]
    ) { session in
        let (a, b, c) = (session.newID(), session.newID(), session.newID())
        session.client.send([
            ["jsonrpc": "2.0", "id": .int(a), "method": "tools/call", "params": ["name": "get_scheduler_time", "arguments": [:]]],
            ["jsonrpc": "2.0", "id": .int(b), "method": "tools/call", "params": ["name": "cancel_background_task", "arguments": ["task_id": "x"]]],
            ["jsonrpc": "2.0", "id": .int(c), "method": "tools/call", "params": ["name": "list_background_tasks", "arguments": "not an object"]],
        ])
        let answers = try session.client.responses([a, b, c], timeout: session.timeout)
        try require(answers[a].map(isSuccess) == true, "the allowed call in the batch failed: \(summary(answers[a] ?? .null))")
        try require(answers[b].map(isDenied) == true, "the hidden call in the batch was not denied: \(summary(answers[b] ?? .null))")
        try require(answers[c].map(isDenied) == true, "the malformed call in the batch was not denied: \(summary(answers[c] ?? .null))")
        let seen = try session.receivedTools()
        try require(seen == ["get_scheduler_time"], "the server received \(seen)")
        return "3 answers; allowed passed, hidden and malformed denied, server saw one"
    }

    static let malformedParams = ConformanceScenario(
        name: "malformed-params",
        summary: "tools/call whose params do not parse is denied, not forwarded",
        policy: ["version": "1", "default": "allow"]
    ) { session in
        let cases: [(String, JSONValue)] = [
            ("arguments not an object", ["name": "get_scheduler_time", "arguments": "x"]),
            ("params an array", ["get_scheduler_time"]),
            ("no tool name", ["arguments": [:]]),
            ("tool name not a string", ["name": 42, "arguments": [:]]),
        ]
        for (label, params) in cases {
            let answer = try session.request("tools/call", params)
            try require(isDenied(answer), "\(label): not denied: \(summary(answer))")
        }
        _ = try session.call("get_scheduler_time")
        let seen = try session.received()
        try require(seen.count == 1, "the server received \(seen.count - 1) malformed call(s): \(seen.dropLast().map { $0.jsonString() })")
        return "\(cases.count) malformed calls denied, server saw none"
    }

    static let duplicateKeys = ConformanceScenario(
        name: "duplicate-keys",
        summary: "a repeated key cannot smuggle a hidden tool past the policy, whichever copy the server keeps",
        policy: ["version": "1", "default": "allow", "hide": ["cancel_background_task"]]
    ) { session in
        // Written by hand: a JSONValue cannot hold a repeated key.
        let meta = session.era == .modern ? #""_meta":\#(ScenarioSession.meta.jsonString()),"# : ""
        let hidden = meta + #""name":"cancel_background_task","arguments":{"task_id":"x"}"#
        let allowed = meta + #""name":"get_scheduler_time","arguments":{}"#
        let texts = [
            #"{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":{\#(hidden),\#(allowed)}}"#,
            #"{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":{\#(allowed),\#(hidden)}}"#,
            #"{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":{\#(hidden)},"method":"ping"}"#,
            #"{"jsonrpc":"2.0","id":ID,"method":"ping","params":{\#(hidden)},"method":"tools/call"}"#,
        ]
        var ids: Set<Int> = []
        for text in texts {
            let id = session.newID()
            ids.insert(id)
            session.client.sendRaw(text.replacingOccurrences(of: "ID", with: String(id)))
        }
        // A gateway may refuse such a text without an id (JSON-RPC's answer to an unreadable request); wait for
        // what comes, then look at what the server executed.
        _ = try? session.client.responses(ids, timeout: .seconds(2))
        _ = try session.call("get_scheduler_time")
        let executed = try session.received().filter { $0["executed"] == true }.compactMap { $0["tool"]?.stringValue }
        try require(!executed.contains("cancel_background_task"), "the server executed the hidden tool: \(executed)")
        return "\(texts.count) ambiguous texts, the hidden tool never ran"
    }

    static let passthrough = ConformanceScenario(
        name: "passthrough",
        summary: "what the policy does not judge passes untouched: ping, unknown methods, tool schemas",
        policy: ["version": "1", "default": "allow"]
    ) { session in
        // 2026-07-28 removed ping; server/discover is its own unjudged request.
        let first = session.era == .modern ? "server/discover" : "ping"
        let ping = try session.request(first, [:])
        try require(ping["result"] != nil, "\(first) was not answered with a result: \(ping.jsonString())")
        let unknown = try session.request("corral/no-such-method", [:])
        try require(unknown["error"]?["code"] == -32601, "an unknown method did not reach the server's -32601: \(unknown.jsonString())")
        let answer = try session.request("tools/list", [:])
        let tools = answer["result"]?["tools"]?.arrayValue ?? []
        let offered = ToolCatalog.names.count
        try require(tools.count == offered, "tools/list has \(tools.count) tools, the server offers \(offered)")
        let incomplete = tools.filter { $0["inputSchema"]?["properties"] == nil || $0["annotations"] == nil }
        try require(incomplete.isEmpty, "tools lost schema or annotations: \(incomplete.compactMap { $0["name"]?.stringValue })")
        return "\(first), -32601 and \(offered) complete tool schemas passed through"
    }

    static let approvalReplay = ConformanceScenario(
        name: "approval-replay",
        summary: "2026-07-28 approval: input_required, the approved retry runs once; replayed, altered or moved, never",
        eras: [.modern],
        policy: [
            "version": "1", "default": "allow",
            "tools": ["append_task_event": ["action": "require_approval", "reason": "Team-visible"]],
        ]
    ) { session in
        let event: JSONValue = ["task_id": .string(String(repeating: "0", count: 32)), "message": "once"]
        let asked = try session.call("append_task_event", event)
        guard asked["result"]?["resultType"] == "input_required", let state = asked["result"]?["requestState"]?.stringValue,
            let key = asked["result"]?["inputRequests"]?.objectValue?.keys.first
        else { throw ConformanceFailure("a require_approval call was not answered input_required: \(summary(asked))") }
        func retry(_ arguments: JSONValue, _ state: String) throws -> JSONValue {
            try session.request("tools/call", [
                "name": "append_task_event", "arguments": arguments, "requestState": .string(state),
                "inputResponses": [key: ["action": "accept", "content": [:]]],
            ])
        }
        let moved = try retry(["task_id": event["task_id"] ?? "", "message": "other"], state)
        try require(moved["result"]?["resultType"] != "input_required" && isDenied(moved),
                    "an approval was accepted for other arguments: \(summary(moved))")
        let altered = try retry(event, String(state.dropLast()) + (state.last == "A" ? "B" : "A"))
        try require(isDenied(altered), "an altered requestState was accepted: \(summary(altered))")
        let approved = try retry(event, state)
        try require(approved["result"] != nil && approved["result"]?["resultType"] != "input_required",
                    "the approved retry did not run: \(summary(approved))")
        let replayed = try retry(event, state)
        try require(isDenied(replayed), "a replayed approval ran again: \(summary(replayed))")
        let seen = try session.receivedTools().filter { $0 == "append_task_event" }.count
        try require(seen == 1, "the server received the approved call \(seen) times, expected once")
        return "input_required, one approved run; moved, altered and replayed states denied"
    }

    static let tasksBypass = ConformanceScenario(
        name: "tasks-bypass",
        summary: "Tasks extension: tasks/* pass only for handles made through the gateway; a task id cannot reach a hidden tool's effect",
        eras: [.modern],
        policy: ["version": "1", "default": "allow", "hide": ["cancel_background_task"]]
    ) { session in
        var meta = ScenarioSession.meta.objectValue ?? [:]
        meta["io.modelcontextprotocol/clientCapabilities"] = ["extensions": ["io.modelcontextprotocol/tasks": [:]]]
        func send(_ method: String, _ params: JSONValue) throws -> JSONValue {
            try session.client.request(
                session.newID(), method, params.merging(["_meta": .object(meta)]), timeout: session.timeout)
        }
        let created = try send("tools/call", [
            "name": "create_background_task",
            "arguments": ["title": "protected", "goal": "g", "task_type": "sleep", "condition": ["duration_ms": 60000]],
        ])
        guard let protected = created["result"]?["structuredContent"]?["task_id"]?.stringValue else {
            throw ConformanceFailure("create_background_task failed: \(summary(created))")
        }
        let waiting = try send("tools/call", ["name": "wait_for_background_task", "arguments": ["task_id": .string(protected), "timeout_ms": -1]])
        guard waiting["result"]?["resultType"] == "task", let handle = waiting["result"]?["taskId"]?.stringValue else {
            throw ConformanceFailure("wait_for_background_task did not become a task for a client with the extension: \(summary(waiting))")
        }
        let own = try send("tasks/get", ["taskId": .string(handle)])
        try require(own["result"]?["status"] != nil, "tasks/get of a handle made through the gateway failed: \(summary(own))")
        for (label, id) in [("the protected background task's id", protected), ("a guessed id", String(repeating: "f", count: 32))] {
            let answer = try send("tasks/cancel", ["taskId": .string(id)])
            try require(answer["error"]?["code"] == -32602, "tasks/cancel with \(label) was not refused with -32602: \(summary(answer))")
        }
        _ = try send("tasks/cancel", ["taskId": .string(handle)])
        let task = try send("tools/call", ["name": "get_background_task", "arguments": ["task_id": .string(protected)]])
        try require(task["result"]?["structuredContent"]?["runtime_status"] == "running",
                    "the protected task is no longer running: \(summary(task))")
        let reached = try session.received().filter { $0["method"] != nil }
        let foreign = reached.filter { $0["task_id"]?.stringValue != handle }
        try require(foreign.isEmpty, "the server received tasks/* for handles the gateway never saw made: \(foreign.map { $0.jsonString() })")
        try require(!(try session.receivedTools().contains("cancel_background_task")), "the server received cancel_background_task")
        return "own handle passed; the task's id and a guess refused with -32602 and never reached the server; the task runs"
    }

    static let headerMismatch = ConformanceScenario(
        name: "header-mismatch",
        summary: "2026-07-28 over HTTP: headers that disagree with the body are refused and never reach the server",
        eras: [.modern], needsHTTP: true,
        policy: ["version": "1", "default": "allow", "hide": ["cancel_background_task"]]
    ) { session in
        guard let http = session.client as? ConformanceHTTPClient else {
            throw ConformanceFailure("needs --gateway-url")
        }
        func body(_ tool: String, _ id: Int) -> Data {
            let params = session.params(["name": .string(tool), "arguments": ["task_id": "x"]])
            return Data((["jsonrpc": "2.0", "id": .int(id), "method": "tools/call", "params": params] as JSONValue).jsonString().utf8)
        }
        let cases: [(String, String, [String: String])] = [
            ("a hidden tool behind an allowed Mcp-Name", "cancel_background_task",
             ["MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "get_scheduler_time"]),
            ("Mcp-Method other than the body's", "get_scheduler_time",
             ["MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list", "Mcp-Name": "get_scheduler_time"]),
            ("no MCP-Protocol-Version", "get_scheduler_time", ["Mcp-Method": "tools/call", "Mcp-Name": "get_scheduler_time"]),
            ("an older MCP-Protocol-Version", "get_scheduler_time",
             ["MCP-Protocol-Version": "2025-11-25", "Mcp-Method": "tools/call", "Mcp-Name": "get_scheduler_time"]),
        ]
        for (label, tool, headers) in cases {
            let status = http.post(body(tool, session.newID()), headers: headers)
            try require((400..<500).contains(status), "\(label): HTTP \(status), expected a 4xx refusal")
        }
        let seen = try session.received()
        try require(seen.isEmpty, "the server received \(seen.map { $0.jsonString() })")
        return "\(cases.count) mismatched requests refused with 4xx, the server saw none"
    }
}
