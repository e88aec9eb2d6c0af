import ArgumentParser
import Foundation

/// `corral bench proxy`: what `corral proxy` adds to a tool call, measured against calling the server directly.
struct ProxyBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proxy",
        abstract: "Added latency of corral proxy per tool call: allcanuse-mock directly vs through the proxy, one run.",
        discussion: "Both run the same get_background_task calls, one at a time, over stdio; the policy allows everything."
    )

    @Option(help: "Calls per variant.") var calls = 500

    func run() async throws {
        let directory = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        let mock = directory.appendingPathComponent("allcanuse-mock")
        let corral = directory.appendingPathComponent("corral")
        guard FileManager.default.isExecutableFile(atPath: mock.path) else {
            throw ValidationError("allcanuse-mock not found beside corral (\(mock.path)); build it first")
        }
        let scratch = try makeTemporaryDirectory("corral-proxybench")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let policy = scratch + "/policy.json"
        try #"{"version": "1", "default": "allow"}"#.write(toFile: policy, atomically: true, encoding: .utf8)
        let widths = [44, 10, 10, 10]
        print("get_background_task over stdio, one call at a time (µs)")
        row(["variant", "p50", "p90", "p99"], widths: widths)
        var medians: [Double] = []
        for (label, binary, arguments) in [
            ("allcanuse-mock directly (peer)", mock, ["--state-dir", scratch + "/direct", "--log-level", "error"]),
            ("through corral proxy", corral,
             ["proxy", "--policy", policy, "--", mock.path, "--state-dir", scratch + "/proxied", "--log-level", "error"]),
        ] {
            let client = try RawClient(binary: binary, arguments: arguments)
            _ = try client.request("initialize", [
                "protocolVersion": "2025-06-18", "capabilities": [String: Any](), "clientInfo": ["name": "bench", "version": "1"],
            ])
            client.notify("notifications/initialized")
            let created = try client.callTool("create_background_task", [
                "title": "bench", "goal": "bench", "task_type": "sleep", "condition": ["duration_ms": 600_000],
            ])
            guard let taskID = created["task_id"] as? String else { throw ValidationError("create failed: \(created)") }
            var samples = Samples()
            for _ in 0..<calls {
                let begin = ContinuousClock.now
                _ = try client.callTool("get_background_task", ["task_id": taskID])
                samples.add(ContinuousClock.now - begin)
            }
            client.close()
            medians.append(samples.median)
            row([label, format(samples.median), format(samples.percentile(90)), format(samples.percentile(99))], widths: widths)
        }
        if medians.count == 2 {
            print("added by the proxy, p50: \(format(medians[1] - medians[0])) µs (goal: under 100 µs)")
        }
    }
}
