import ArgumentParser
import CorralJSON
import Foundation
import Gateway
import Policy
import Synchronization

/// `corral bench proxy-core`: the proxy's own work per call, without pipes, threads or a server process — one task
/// hands each request line to a `ProxyCore` whose server answers at once, in process. What `bench proxy` measures
/// minus the pipes and wake-ups; the figure to read under callgrind (`valgrind --tool=callgrind`, instructions per
/// call = the difference of two runs over the difference of their calls), since a proxy that spawns its server
/// cannot run under valgrind.
struct ProxyCoreBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proxy-core",
        abstract: "The proxy's decision path per tools/call, in process (no pipes, no server process).",
        discussion: """
            The policy and audit trail of `corral bench proxy` (a counted limit, an audit line per call to a file); \
            the server's answer is the echo server's, made before the clock starts. Prints the time per call (p50, \
            p90, p99) for 2025-11-25 and 2026-07-28 calls.
            """)

    @Option(help: "Calls per era.") var calls = 20_000
    @Option(help: "The MCP era of the calls: legacy (2025-11-25), modern (2026-07-28) or both.") var era = "both"

    func run() async throws {
        let eras = try ProxyBench.modernFlags(era)
        guard calls >= 10 else { throw ValidationError("--calls must be at least 10") }
        let scratch = try makeTemporaryDirectory("corral-proxycore")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let policy = try Policy.load(text: ProxyBench.policy)
        let audit = try AuditLog(path: scratch + "/audit.jsonl")
        let widths = [44, 10, 10, 10]
        print("one tools/call through ProxyCore in process, \(calls) per era (µs)")
        row(["variant", "p50", "p90", "p99"], widths: widths)
        for modern in eras {
            let samples = try await measure(modern: modern, policy: policy, audit: audit)
            row(
                [modern ? "2026-07-28 call" : "2025-11-25 call", format(samples.median), format(samples.percentile(90)),
                 format(samples.percentile(99))], widths: widths)
        }
    }

    private func measure(modern: Bool, policy: Policy, audit: AuditLog) async throws -> Samples {
        let answered = Mutex(0)
        let server = EchoAnswers()
        let core = ProxyCore(
            evaluator: PolicyEvaluator(policy: policy), identity: CallIdentity(grant: "bench", session: "s"),
            audit: audit, toClient: { _ in answered.withLock { $0 += 1 } },
            toServer: { line in await server.answer(line) })
        server.core = core
        let meta = modern
            ? #","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1"}}"#
            : ""
        let requests = (0..<calls).map { id in
            Data(
                #"{"jsonrpc":"2.0","id":\#(id),"method":"tools/call","params":{"name":"echo","arguments":{"task_id":"0123456789abcdef0123456789abcdef"}\#(meta)}}"#
                    .utf8)
        }
        server.answers = (0..<calls).map { id in
            Data(
                #"{"jsonrpc":"2.0","id":\#(id),"result":{"content":[{"type":"text","text":"{\"ok\":true}"}],"structuredContent":{"ok":true},"isError":false}}"#
                    .utf8)
        }
        var samples = Samples()
        let clock = ContinuousClock()
        for (index, request) in requests.enumerated() {
            server.next = index
            let start = clock.now
            await core.fromClient(request)
            samples.add(clock.now - start)
        }
        guard answered.withLock({ $0 }) == calls else {
            throw ValidationError("\(answered.withLock { $0 }) of \(calls) calls were answered: the policy refused some")
        }
        return samples
    }
}

/// The server side of the in-process bench: answers the request it is handed with the answer made for it.
private final class EchoAnswers: @unchecked Sendable {
    // @unchecked: set before the measuring loop, then read by the one task that runs it.
    var core: ProxyCore?
    var answers: [Data] = []
    var next = 0

    func answer(_ line: Data) async {
        await core?.fromServer(answers[next])
    }
}
