import AllcanuseMock
import AllcanuseMockServer
import ArgumentParser
import CorralJSON
import Foundation
import Gateway
import MCPCore
import Logging
import Policy
import Synchronization
import TaskRuntime

/// `tools/call` with raw JSON both ways, as AgentSandbox sends it.

/// `corral bench agent`: what the in-process API (`AgentSandbox`) adds to a tool call, against `MCPClient` calling
/// the same in-process allcanuse-mock directly (over `InProcessServerTransport`), in one run.
struct AgentBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Added latency of AgentSandbox per tool call: MCPClient to an in-process allcanuse-mock, directly vs through AgentSandbox.",
        discussion: """
            Both variants call get_background_task on one running task, one call at a time, with Corral's MCPClient \
            over an in-process transport (InProcessServerTransport) to an allcanuse-mock server in this process. \
            AgentSandbox decides each call with a policy that counts it against a limit (the common case) and writes \
            an audit entry to a closure sink.
            """
    )

    @Option(help: "Calls per variant.") var calls = 2000

    func run() async throws {
        let scratch = try makeTemporaryDirectory("corral-agentbench")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let supervisor = try await TaskSupervisor.start(.init(stateDirectory: scratch + "/state", graceMilliseconds: 200))
        let service = AllcanuseService(supervisor: supervisor)
        let mockPolicy = PolicyEvaluator(policy: try Policy.load(text: #"{"version": "1", "default": "allow"}"#))
        func connectedMock() async throws -> InProcessServerTransport {
            let logger = Logger(label: "bench", factory: { _ in SwiftLogNoOpLogHandler() })
            let core = MockServer.core(
                service: service, policy: mockPolicy, identity: { _ in CallIdentity(grant: "bench") }, logger: logger)
            return InProcessServerTransport(core: core)
        }

        let direct = MCPClient(transport: try await connectedMock(), name: "bench")
        _ = try await direct.connect()
        let created = try await direct.request("tools/call", [
            "name": "create_background_task",
            "arguments": ["title": "bench", "goal": "bench", "task_type": "sleep", "condition": ["duration_ms": 600_000]],
        ])
        guard case .string(let taskID)? = created["structuredContent"]?["task_id"] else {
            throw ValidationError("create_background_task failed")
        }

        let policy = try Policy.load(text: """
            {"version": "1", "default": "deny", "hide": ["cancel_background_task"],
             "tools": {"get_background_task": {"limits": [{"counter": "gets", "window": "minute", "max": 100000000, "scope": "grant"}]}}}
            """)
        let decisionLatencies = Mutex<[Int]>([])
        let sandbox = try await AgentSandbox.connect(
            policy: PolicyEvaluator(policy: policy), identity: CallIdentity(grant: "bench", session: "s"),
            to: .transport(try await connectedMock()),
            audit: ClosureAuditSink { entry in decisionLatencies.withLock { $0.append(entry.latencyMicroseconds) } })

        let widths = [44, 10, 10, 10]
        print("get_background_task in process, one call at a time, \(calls) per variant, alternating (µs)")
        row(["variant", "p50", "p90", "p99"], widths: widths)
        let arguments: JSONValue = ["task_id": .string(taskID)]
        let variants: [(String, () async throws -> Void)] = [
            ("MCPClient → mock directly (peer)", {
                // The same raw tools/call AgentSandbox sends, without the policy.
                let result = try await direct.request("tools/call", ["name": "get_background_task", "arguments": arguments])
                if result["isError"] == true { throw ValidationError("call failed: \(result)") }
            }),
            ("AgentSandbox → mock", {
                let result = try await sandbox.callTool("get_background_task", arguments: arguments)
                if result.isError { throw ValidationError("call failed: \(result.text)") }
            }),
        ]
        var samples = [Samples(), Samples()]
        for round in 0..<(calls + 100) {
            for (index, variant) in variants.enumerated() {
                let begin = ContinuousClock.now
                try await variant.1()
                if round >= 100 { samples[index].add(ContinuousClock.now - begin) }  // the first 100 warm up
            }
        }
        for (variant, sample) in zip(variants, samples) {
            row([variant.0, format(sample.median), format(sample.percentile(90)), format(sample.percentile(99))], widths: widths)
        }
        var decisions = Samples()
        for latency in decisionLatencies.withLock({ $0 }) { decisions.add(microseconds: Double(latency)) }
        print("added by AgentSandbox, p50: \(format(samples[1].median - samples[0].median)) µs "
            + "(\(format(samples[1].median / samples[0].median, digits: 2))×); its policy decision alone: "
            + "\(format(decisions.median)) µs p50, \(format(decisions.percentile(99))) µs p99 (a counted limit, audited)")
        await sandbox.close()
        await direct.close()
        await supervisor.shutdown(cancelRunning: true)
    }
}
