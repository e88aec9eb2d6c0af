import ArgumentParser
import CorralJSON
import Foundation

/// `corral bench mock`: tool-call round trips through the allcanuse-mock binary over stdio.
struct MockBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mock",
        abstract: "Round-trip latency of allcanuse-mock in both MCP eras, over stdio and over HTTP.",
        discussion: """
            Starts the allcanuse-mock built beside this binary and talks to it with a raw client (no MCP library in \
            between) in 2025-11-25 (initialize, then requests) and in 2026-07-28 (stateless requests carrying their \
            _meta; over HTTP with the MCP-Protocol-Version, Mcp-Method and Mcp-Name headers). Measures \
            get_background_task round trips (p50/p99, calls per second, one request at a time), the \
            create_background_task round trip (spawn to running, through MCP). `corral bench latency` measures the \
            same calls after idle gaps, listing with many tasks stored, and start-up.
            """
    )

    @Option(help: "Calls per request kind (discover or ping, tools/list, get, append) and client.") var calls = 500
    @Option(help: "create_background_task calls per transport.") var creates = 50

    func run() async throws {
        let binary = try MockBinary.beside()
        let widths = [44, 10, 10, 10, 12]
        print("allcanuse-mock over stdio, one request at a time (µs)")
        row(["variant", "p50", "p90", "p99", "calls/s"], widths: widths)
        for (label, modern) in [("2025-11-25", false), ("2026-07-28", true)] {
            let state = try makeTemporaryDirectory("corral-mockbench")
            defer { try? FileManager.default.removeItem(atPath: state) }
            let client = try RawClient(binary: binary, arguments: ["--state-dir", state, "--log-level", "error"], modern: modern)
            if modern {
                _ = try client.request("server/discover", [:])
            } else {
                _ = try client.request("initialize", [
                    "protocolVersion": "2025-11-25", "capabilities": [String: Any](),
                    "clientInfo": ["name": "bench", "version": "1"],
                ])
                client.notify("notifications/initialized")
            }
            try await measureCalls(
                label: "stdio " + label, modern: modern, widths: widths, { method, params in try client.request(method, params) },
                timed: { method, params in try client.requestUnparsed(method, params) })
            client.close()
        }
        try await measureHTTP(binary: binary, widths: widths)
    }

    /// The same calls over Streamable HTTP, in a 2025-11-25 session and as stateless 2026-07-28 requests.
    private func measureHTTP(binary: URL, widths: [Int]) async throws {
        let state = try makeTemporaryDirectory("corral-mockbench-http")
        defer { try? FileManager.default.removeItem(atPath: state) }
        let (process, endpoint) = try MockBinary.startHTTP(binary, state: state)
        defer {
            process.interrupt()
            process.waitUntilExit()
        }
        let legacy = HTTPClient(endpoint: endpoint)
        _ = try await legacy.request("initialize", [
            "protocolVersion": "2025-11-25", "capabilities": [String: Any](), "clientInfo": ["name": "bench", "version": "1"],
        ])
        try await legacy.notify("notifications/initialized")
        try await measureCalls(
            label: "HTTP 2025-11-25", modern: false, widths: widths, { method, params in try await legacy.request(method, params) },
            timed: { method, params in try await legacy.requestUnparsed(method, params) })
        let modern = HTTPClient(endpoint: endpoint, modern: true)
        try await measureCalls(
            label: "HTTP 2026-07-28", modern: true, widths: widths, { method, params in try await modern.request(method, params) },
            timed: { method, params in try await modern.requestUnparsed(method, params) })
    }

    /// Round trips, one at a time: the era's own request (server/discover, or ping), tools/list, get_background_task
    /// and append_task_event on one long task, then create_background_task (spawn to running).
    private func measureCalls(
        label: String, modern: Bool, widths: [Int], _ request: (String, [String: Any]) async throws -> [String: Any],
        timed: (String, [String: Any]) async throws -> Duration
    ) async throws {
        func call(_ name: String, _ arguments: [String: Any]) async throws -> [String: Any] {
            let result = try await request("tools/call", ["name": name, "arguments": arguments])
            return result["structuredContent"] as? [String: Any] ?? [:]
        }
        let created = try await call("create_background_task", [
            "title": "bench", "goal": "bench", "task_type": "sleep", "condition": ["duration_ms": 600_000],
        ])
        guard let taskID = created["task_id"] as? String else { throw ValidationError("create failed: \(created)") }
        let variants: [(String, String, [String: Any])] = [
            (modern ? "server/discover" : "ping", modern ? "server/discover" : "ping", [:]),
            ("tools/list", "tools/list", [:]),
            ("get_background_task", "tools/call", ["name": "get_background_task", "arguments": ["task_id": taskID]]),
            ("append_task_event", "tools/call", [
                "name": "append_task_event", "arguments": ["task_id": taskID, "message": "bench"],
            ]),
        ]
        for (name, method, params) in variants {
            var samples = Samples()
            let start = ContinuousClock.now
            for _ in 0..<calls {
                samples.add(try await timed(method, params))
            }
            let elapsed = ContinuousClock.now - start
            let perSecond = Double(calls) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
            row([name + ", " + label, format(samples.median), format(samples.percentile(90)),
                 format(samples.percentile(99)), format(perSecond, digits: 0)], widths: widths)
        }
        var creates = Samples()
        let create: [String: Any] = [
            "name": "create_background_task",
            "arguments": ["title": "b", "goal": "b", "task_type": "command", "condition": ["argv": ["/bin/true"]]],
        ]
        for _ in 0..<self.creates { creates.add(try await timed("tools/call", create)) }
        row(["create → running, " + label, format(creates.median), format(creates.percentile(90)),
             format(creates.percentile(99)), ""], widths: widths)
    }
}
