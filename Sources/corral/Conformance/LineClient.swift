import AsyncHTTPClient
import CorralJSON
import Foundation
import Gateway
import MCPCore
import NIOCore
import NIOPosix

/// A raw JSON-RPC client on a gateway command's stdio, for `corral conformance`.
///
/// Hand-written rather than the SDK's `Client`: the scenarios must send what a well-behaved client never would
/// (batches, params that are not objects) and see the gateway's answers byte for byte.
final class LineClient: ScenarioWire, @unchecked Sendable {  // the process is used from one thread; `inbox` locks
    private let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private let inbox = AnswerInbox()
    let stderrPath: String
    private let pidFile: String

    /// Runs `command` with `/bin/sh -c`; its stderr goes to `stderrPath`.
    init(shellCommand command: String, environment: [String: String], stderrPath: String) throws {
        self.stderrPath = stderrPath
        FileManager.default.createFile(atPath: stderrPath, contents: nil)
        // In a session of its own, so that close() can end everything the command started, not just the shell. The
        // shell writes its pid (the new group's id): setsid(1) forks when it already leads a group, so the pid of
        // the process started here is not always the group's.
        pidFile = stderrPath + ".pid"
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setsid")
        process.arguments = ["/bin/sh", "-c", "echo $$ > \(shellQuoted(pidFile)); " + command]
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardInput = input
        process.standardOutput = output
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrPath))
        try process.run()
        let reader = output.fileHandleForReading
        let inbox = self.inbox
        Thread {
            LineReader.readLines(from: reader) { line in
                guard let message = try? JSONValue.parse(line) else { return }
                inbox.add(message.arrayValue ?? [message])
            }
            inbox.close(because: "the gateway closed its output")
        }.start()
    }

    func send(_ message: JSONValue) {
        sendRaw(message.jsonString())
    }

    func sendRaw(_ text: String) {
        writeLine(Data(text.utf8), to: input.fileHandleForWriting.fileDescriptor)
    }

    func responses(_ ids: Set<Int>, timeout: Duration) throws -> [Int: JSONValue] {
        try inbox.responses(ids, timeout: timeout)
    }

    /// `terminate`: send SIGTERM at once (an HTTP gateway does not end at the end of its input).
    func close(terminate: Bool = false) {
        try? input.fileHandleForWriting.close()
        let written = (try? String(contentsOfFile: pidFile, encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        let group = written ?? process.processIdentifier
        if terminate { kill(-group, SIGTERM) }
        for signal in [SIGTERM, SIGKILL] {
            let deadline = Date().addingTimeInterval(5)
            while Self.groupIsAlive(group) && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
            guard Self.groupIsAlive(group) else { break }
            kill(-group, signal)
        }
        process.waitUntilExit()
    }

    private static func groupIsAlive(_ group: Int32) -> Bool { kill(-group, 0) == 0 }
}

/// How a scenario reaches the gateway: its stdio (`LineClient`) or its HTTP endpoint (`ConformanceHTTPClient`).
protocol ScenarioWire: AnyObject, Sendable {
    func send(_ message: JSONValue)
    func sendRaw(_ text: String)
    /// Waits for the responses with these ids (in any order, alone or in batches).
    func responses(_ ids: Set<Int>, timeout: Duration) throws -> [Int: JSONValue]
}

extension ScenarioWire {
    func request(_ id: Int, _ method: String, _ params: JSONValue, timeout: Duration) throws -> JSONValue {
        send(["jsonrpc": "2.0", "id": .int(id), "method": .string(method), "params": params])
        return try responses([id], timeout: timeout)[id] ?? .null
    }
}

/// The gateway's Streamable HTTP endpoint: each message is POSTed (in 2026-07-28 with its headers, else in the
/// session `initialize` opened) and the answers, JSON or SSE, are collected once each exchange is complete.
final class ConformanceHTTPClient: ScenarioWire, @unchecked Sendable {  // `sessionID` guarded by `lock`
    let endpoint: URL
    private let inbox = AnswerInbox()
    private let lock = NSLock()
    private var sessionID: String?
    /// A client of its own (not the gateway transports' shared one), so that `close()` can drop its connections.
    private let client = HTTPClient(eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
    /// One exchange's limit: a scenario's slowest call (a wait) is well inside it.
    private static let exchangeTimeout = TimeAmount.seconds(300)

    init(endpoint: URL) { self.endpoint = endpoint }

    func send(_ message: JSONValue) { sendRaw(message.jsonString()) }

    func sendRaw(_ text: String) {
        let data = Data(text.utf8)
        post(data, headers: StreamableHTTPClientTransport.modernHeaders(data) ?? [:])
    }

    /// POSTs `body` with exactly these MCP headers (a scenario that sends headers a client never would), and
    /// returns the HTTP status once the answer is complete (0 if none came).
    @discardableResult
    func post(_ body: Data, headers: [String: String]) -> Int {
        var fields: [(String, String)] = [("Content-Type", "application/json"), ("Accept", "application/json, text/event-stream")]
        let modern = headers["MCP-Protocol-Version"] != nil
        lock.lock()
        if !modern, let sessionID { fields.append(("Mcp-Session-Id", sessionID)) }
        lock.unlock()
        fields += headers.map { ($0.key, $0.value) }
        // One exchange at a time, as the scenarios send them (the session id of an initialize is needed next).
        guard let request = try? HTTPClient.Request(url: endpoint.absoluteString, method: .POST, headers: .init(fields), body: .data(body)),
            let response = try? client.execute(request: request, deadline: .now() + Self.exchangeTimeout).wait()
        else { return 0 }
        let text = response.body.map { String(buffer: $0) } ?? ""
        var messages: [JSONValue] = []
        if (response.headers.first(name: "Content-Type") ?? "").hasPrefix("text/event-stream") {
            for line in text.split(separator: "\n") where line.hasPrefix("data:") {
                if let message = try? JSONValue.parse(Data(line.dropFirst(5).utf8)) { messages.append(message) }
            }
        } else if let message = try? JSONValue.parse(Data(text.utf8)) {
            messages += message.arrayValue ?? [message]
        }
        lock.lock()
        if let id = response.headers.first(name: "Mcp-Session-Id") { sessionID = id }
        lock.unlock()
        inbox.add(messages)
        return Int(response.status.code)
    }

    func responses(_ ids: Set<Int>, timeout: Duration) throws -> [Int: JSONValue] {
        try inbox.responses(ids, timeout: timeout)
    }

    /// Drops the kept-alive connections (a server shutting down gracefully waits for open ones).
    func close() { try? client.syncShutdown() }

    /// Waits until the endpoint answers at all (the gateway is starting).
    func waitUntilUp(timeout: Duration) throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let request = try? HTTPClient.Request(url: endpoint.absoluteString, method: .GET),
                (try? client.execute(request: request, deadline: .now() + .seconds(5)).wait()) != nil
            {
                return
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw ConformanceFailure("the gateway did not answer at \(endpoint) within \(timeout.components.seconds) s")
    }
}

/// The answers a scenario's client has received, and waiting for some of them.
final class AnswerInbox: @unchecked Sendable {  // guarded by `condition`
    private let condition = NSCondition()
    private var received: [JSONValue] = []
    private var closedBecause: String?

    func add(_ messages: [JSONValue]) {
        condition.lock()
        received += messages
        condition.broadcast()
        condition.unlock()
    }

    func close(because reason: String) {
        condition.lock()
        closedBecause = reason
        condition.broadcast()
        condition.unlock()
    }

    /// Waits for the responses with these ids (in any order, alone or in batches).
    func responses(_ ids: Set<Int>, timeout: Duration) throws -> [Int: JSONValue] {
        let deadline = Date().addingTimeInterval(Double(timeout.components.seconds))
        condition.lock()
        defer { condition.unlock() }
        while true {
            var found: [Int: JSONValue] = [:]
            for message in received where message["method"] == nil {
                if case .int(let id)? = message["id"], ids.contains(id) { found[id] = message }
            }
            if found.count == ids.count { return found }
            let missing = ids.subtracting(found.keys).sorted()
            if let closedBecause { throw ConformanceFailure("\(closedBecause) before answering ids \(missing)") }
            if !condition.wait(until: deadline) {
                throw ConformanceFailure("no answer to ids \(missing) within \(timeout.components.seconds) s")
            }
        }
    }
}

struct ConformanceFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
