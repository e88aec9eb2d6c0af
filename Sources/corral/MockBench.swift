import ArgumentParser
import Foundation

/// `corral bench mock`: tool-call round trips through the allcanuse-mock binary over stdio.
struct MockBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mock",
        abstract: "Round-trip latency of allcanuse-mock over stdio: our transport against the SDK's, in one run.",
        discussion: """
            Starts the allcanuse-mock built beside this binary twice: with its own line transport, and with the MCP
            Swift SDK's StdioTransport (--sdk-stdio-transport), which polls stdin with 10 ms sleeps. Measures
            get_background_task round trips (p50/p99, calls per second, one request at a time) and the
            create_background_task round trip (spawn to running, through MCP).
            """
    )

    @Option(help: "get_background_task calls per transport.") var calls = 500
    @Option(help: "create_background_task calls per transport.") var creates = 50

    func run() async throws {
        let directory = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        let binary = directory.appendingPathComponent("allcanuse-mock")
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw ValidationError("allcanuse-mock not found beside corral (\(binary.path)); build it first")
        }
        let widths = [44, 10, 10, 10, 12]
        print("allcanuse-mock over stdio, one request at a time (µs)")
        row(["variant", "p50", "p90", "p99", "calls/s"], widths: widths)
        for (label, flags) in [("line transport (ours)", [String]()), ("SDK StdioTransport (peer)", ["--sdk-stdio-transport"])] {
            let state = try makeTemporaryDirectory("corral-mockbench")
            defer { try? FileManager.default.removeItem(atPath: state) }
            let client = try RawClient(binary: binary, arguments: ["--state-dir", state, "--log-level", "error"] + flags)
            _ = try client.request("initialize", [
                "protocolVersion": "2025-06-18", "capabilities": [String: Any](),
                "clientInfo": ["name": "bench", "version": "1"],
            ])
            client.notify("notifications/initialized")
            let created = try client.callTool("create_background_task", [
                "title": "bench", "goal": "bench", "task_type": "sleep", "condition": ["duration_ms": 600_000],
            ])
            guard let taskID = created["task_id"] as? String else { throw ValidationError("create failed: \(created)") }
            var gets = Samples()
            let start = ContinuousClock.now
            for _ in 0..<calls {
                let begin = ContinuousClock.now
                _ = try client.callTool("get_background_task", ["task_id": taskID])
                gets.add(ContinuousClock.now - begin)
            }
            let elapsed = ContinuousClock.now - start
            let perSecond = Double(calls) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
            row(["get_background_task, " + label, format(gets.median), format(gets.percentile(90)),
                 format(gets.percentile(99)), format(perSecond, digits: 0)], widths: widths)
            var createSamples = Samples()
            for _ in 0..<creates {
                let begin = ContinuousClock.now
                _ = try client.callTool("create_background_task", [
                    "title": "b", "goal": "b", "task_type": "command", "condition": ["argv": ["/bin/true"]],
                ])
                createSamples.add(ContinuousClock.now - begin)
            }
            row(["create → running, " + label, format(createSamples.median), format(createSamples.percentile(90)),
                 format(createSamples.percentile(99)), ""], widths: widths)
            client.close()
        }
    }
}

/// Newline-delimited JSON-RPC to a child process: enough for a benchmark, no MCP library in between.
final class RawClient {
    private let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private var buffer = Data()
    private var nextID = 1

    init(binary: URL, arguments: [String]) throws {
        process.executableURL = binary
        process.arguments = arguments
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    func notify(_ method: String) {
        send(["jsonrpc": "2.0", "method": method])
    }

    func request(_ method: String, _ params: [String: Any]) throws -> [String: Any] {
        let id = nextID
        nextID += 1
        send(["jsonrpc": "2.0", "id": id, "method": method, "params": params])
        while true {
            let message = try readMessage()
            if message["id"] as? Int == id {
                if let error = message["error"] { throw ValidationError("\(method) failed: \(error)") }
                return message["result"] as? [String: Any] ?? [:]
            }
        }
    }

    func callTool(_ name: String, _ arguments: [String: Any]) throws -> [String: Any] {
        let result = try request("tools/call", ["name": name, "arguments": arguments])
        return result["structuredContent"] as? [String: Any] ?? [:]
    }

    func close() {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
    }

    private func send(_ message: [String: Any]) {
        guard var data = try? JSONSerialization.data(withJSONObject: message) else { return }
        data.append(UInt8(ascii: "\n"))
        input.fileHandleForWriting.write(data)
    }

    private func readMessage() throws -> [String: Any] {
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = buffer[buffer.startIndex..<newline]
                buffer = Data(buffer[buffer.index(after: newline)...])
                if let message = try? JSONSerialization.jsonObject(with: line) as? [String: Any] { return message }
                continue
            }
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { throw ValidationError("allcanuse-mock closed its output") }
            buffer.append(chunk)
        }
    }
}
