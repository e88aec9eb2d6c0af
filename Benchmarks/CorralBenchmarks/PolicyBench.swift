import ArgumentParser
import CorralJSON
import Foundation
import Glibc
import Policy
import PolicyPostgres

/// `corral bench policy`: policy decisions per second and their p50/p99, per counter store.
struct PolicyBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Measure decisions per second and p50/p99 latency (build with scripts/bench, or `source scripts/env.sh; release_build --product corral`).")

    @Option(help: "Decisions per in-memory scenario.") var iterations: Int = 200_000
    @Option(help: "Decisions for the SQLite and PostgreSQL scenarios.") var sqliteIterations: Int = 20_000
    @Option(help: "Also measure a PostgreSQL-counted decision against this database (postgres://USER@HOST[:PORT]/DB); its counters table gets a bench row.")
    var postgres: String?
    @Option(help: "Run only one scenario: allow, conditions, memory, sqlite or postgres.") var only: String?

    func validate() throws {
        guard iterations >= 100, sqliteIterations >= 100 else { throw ValidationError("need at least 100 iterations") }
    }

    func run() async throws {
        let policy = try Policy.load(text: Self.benchPolicy)
        let heavyArguments: JSONValue = [
            "command": "cargo build --release", "cwd": "/work/project", "timeout_ms": 30000,
            "argv": ["cargo", "build", "--release"], "env": ["RUST_LOG": "info"], "label": "build-42",
        ]
        row(["scenario", "decisions/s", "p50 ns", "p99 ns"], widths: Self.widths)
        let memory = PolicyEvaluator(policy: policy, store: MemoryPolicyStore())
        let identity = CallIdentity(grant: "bench-grant", session: "bench-session")
        let pauseArguments: JSONValue = ["task_id": "t1"]
        func wanted(_ name: String) -> Bool { only == nil || only == name }
        if wanted("allow") {
            report("allow", await measure(iterations) { await memory.decide(tool: "list_background_tasks", arguments: [:], identity: identity) })
        }
        if wanted("conditions") {
            report("conditions (10, regex)", await measure(iterations) {
                await memory.decide(tool: "create_background_task", arguments: heavyArguments, identity: identity)
            })
        }
        if wanted("memory") {
            report("memory counter", await measure(iterations) {
                await memory.decide(tool: "pause_background_task", arguments: pauseArguments, identity: identity)
            })
        }
        if wanted("sqlite") {
            let path = "/tmp/corral-policy-bench-\(getpid()).sqlite"
            defer { for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) } }
            let sqlite = PolicyEvaluator(policy: policy, store: try SQLitePolicyStore(path: path))
            report("sqlite counter", await measure(sqliteIterations) {
                await sqlite.decide(tool: "pause_background_task", arguments: pauseArguments, identity: identity)
            })
        }
        if let postgres, wanted("postgres") {
            let store = try await PostgresPolicyStore.connect(try PostgresLocation(url: postgres))
            let counted = PolicyEvaluator(policy: policy, store: store)
            // A grant of this run's own, so that earlier runs' rows do not count.
            let own = CallIdentity(grant: "bench-\(getpid())-\(Int.random(in: 0..<1_000_000))", session: "bench-session")
            report("postgres counter", await measure(sqliteIterations) {
                await counted.decide(tool: "pause_background_task", arguments: pauseArguments, identity: own)
            })
        }
    }

    private static let widths = [22, 12, 12, 12]

    private struct Result {
        let perSecond: Double
        let p50: UInt64
        let p99: UInt64
    }

    private func measure(_ count: Int, _ body: () async -> Decision) async -> Result {
        var denied = 0
        for _ in 0..<Swift.min(1000, count / 10) where !(await body().isAllowed) { denied += 1 }  // warm-up
        var samples = [UInt64](repeating: 0, count: count)
        let start = Self.nanoseconds()
        for index in 0..<count {
            let before = Self.nanoseconds()
            if !(await body().isAllowed) { denied += 1 }
            samples[index] = Self.nanoseconds() - before
        }
        let total = Self.nanoseconds() - start
        if denied > 0 { FileHandle.standardError.write(Data("warning: \(denied) decisions were denials\n".utf8)) }
        samples.sort()
        return Result(
            perSecond: Double(count) / (Double(total) / 1e9), p50: samples[count / 2],
            p99: samples[Swift.min(count - 1, count * 99 / 100)])
    }

    private func report(_ name: String, _ result: Result) {
        row([name, String(Int(result.perSecond)), String(result.p50), String(result.p99)], widths: Self.widths)
    }

    private static func nanoseconds() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
    }

    /// One policy for every scenario: a plain allow, ten conditions (two of them regexes), and a counter large
    /// enough never to refuse during the run.
    static let benchPolicy = """
        {
          "version": "1", "default": "deny",
          "tools": {
            "list_background_tasks": {},
            "create_background_task": {
              "require": [
                {"path": "args.command", "op": "exists", "value": true},
                {"path": "args.command", "op": "regex", "value": "^[a-z]+( [-a-z0-9]+)*$"},
                {"path": "args.command", "op": "len_lte", "value": 200},
                {"path": "args.cwd", "op": "regex", "value": "^/work/"},
                {"path": "args.timeout_ms", "op": "lte", "value": 600000},
                {"path": "args.timeout_ms", "op": "gt", "value": 0},
                {"path": "args.argv.0", "op": "in", "value": ["cargo", "swift", "make"]},
                {"path": "args.argv", "op": "len_gte", "value": 1},
                {"path": "args.env.RUST_LOG", "op": "neq", "value": "trace"},
                {"path": "args.label", "op": "type", "value": "string"}
              ]
            },
            "pause_background_task": {
              "limits": [{"counter": "pause_rate", "window": "day", "max": 1000000000, "scope": "grant"}]
            }
          }
        }
        """
}
