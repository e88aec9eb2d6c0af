import ArgumentParser
import CorralJSON
import Policy

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `corral policy`: check, explain and benchmark PolicyLayer-format policy files, so a person can see what a policy
/// does before deploying it.
struct PolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Check, explain and benchmark policy.json files.",
        subcommands: [Check.self, Explain.self, Bench.self]
    )

    /// Loads a policy or prints every issue to stderr and exits 1.
    static func loadOrExit(_ file: String) throws -> Policy {
        do {
            return try Policy.load(contentsOfFile: file)
        } catch {
            printError("\(file): invalid policy (\(error.issues.count) error\(error.issues.count == 1 ? "" : "s"))")
            for issue in error.issues { printError("  \(issue)") }
            throw ExitCode(1)
        }
    }

    static func printError(_ line: String) {
        var stream = StandardError()
        print(line, to: &stream)
    }

    struct StandardError: TextOutputStream {
        mutating func write(_ string: String) {
            var text = string
            #if canImport(Glibc)
            text.withUTF8 { bytes in _ = Glibc.write(2, bytes.baseAddress, bytes.count) }
            #else
            text.withUTF8 { bytes in _ = Darwin.write(2, bytes.baseAddress, bytes.count) }
            #endif
        }
    }
}

// MARK: - check

extension PolicyCommand {
    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a policy file: prints \"ok\" (exit 0), or every error with its JSON path (exit 1).")

        @Argument(help: "Path to the policy.json file.") var file: String

        func run() async throws {
            _ = try PolicyCommand.loadOrExit(file)
            print("ok")
        }
    }
}

// MARK: - explain

extension PolicyCommand {
    struct Explain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Decide a tool call (optionally N times) and print each decision and the counters after it.",
            discussion: """
                The last line is a summary: allowed=N denied=M approval_required=K revision=SHA256.
                With --store sqlite:PATH or postgres://…, counters are shared with every other process (a proxy
                among them) using the same file or database: explain then shows, and spends, the real counters.
                """)

        @Argument(help: "Path to the policy.json file.") var file: String
        @Option(help: "Tool name.") var tool: String
        @Option(name: .customLong("args"), help: "Arguments as a JSON object.") var arguments: String?
        @Option(help: "Grant id (credential or agent id) for grant-scoped counters.") var grant: String?
        @Option(help: "Session id for session-scoped counters.") var session: String?
        @Option(name: .customLong("repeat"), help: "How many times to make the call.") var count: Int = 1
        @Option(help: ArgumentHelp(StoreOption.help)) var store: String = "memory"
        @Flag(help: "Resolve approval-required decisions as approved (the limits still count).") var approve = false
        @Flag(help: "Print only the summary line.") var quiet = false

        func validate() throws {
            guard count >= 1 else { throw ValidationError("--repeat must be at least 1") }
        }

        func run() async throws {
            let policy = try PolicyCommand.loadOrExit(file)
            var parsedArguments: JSONValue?
            if let arguments {
                do {
                    parsedArguments = try JSONValue.parse(arguments)
                } catch {
                    PolicyCommand.printError("--args is not valid JSON: \(error)")
                    throw ExitCode(1)
                }
            }
            let counterStore: any PolicyStore
            do {
                counterStore = try await StoreOption(parsing: store).open()
            } catch {
                PolicyCommand.printError("\(error)")
                throw ExitCode(1)
            }

            let evaluator = PolicyEvaluator(policy: policy, store: counterStore)
            let identity = CallIdentity(grant: grant, session: session)
            var tally: [Decision.Outcome: Int] = [:]
            for index in 1...count {
                var decision = await evaluator.decide(tool: tool, arguments: parsedArguments, identity: identity)
                if !quiet { print("[\(index)] " + describe(decision)) }
                if approve, let pending = decision.pendingApproval {
                    decision = await evaluator.resolveApproval(pending, approved: true)
                    if !quiet { print("[\(index)] approved -> " + describe(decision)) }
                }
                tally[decision.outcome, default: 0] += 1
                if !quiet {
                    for reading in decision.counters { print("    " + describe(reading, now: evaluator.clock.nowMilliseconds())) }
                }
            }
            print(
                "allowed=\(tally[.allow] ?? 0) denied=\(tally[.deny] ?? 0) "
                    + "approval_required=\(tally[.approvalRequired] ?? 0) revision=\(policy.revision)")
        }

        private func describe(_ decision: Decision) -> String {
            var line = "\(decision.outcome.rawValue) rule=\(decision.rule) message=\(JSONValue.string(decision.message).jsonString())"
            if let retry = decision.retryAfterMs { line += " retry_after_ms=\(retry)" }
            return line
        }

        private func describe(_ reading: CounterReading, now: Int64) -> String {
            let key = reading.key
            let who = key.scope == .global ? "global" : "\(key.scope.rawValue)=\(JSONValue.string(key.scopeID).jsonString())"
            return "counter \(key.counter) (\(reading.rule), \(who), tool=\(key.tool), window=\(reading.window)): "
                + "\(reading.value)/\(reading.max), resets in \(max(0, reading.windowEndMs - now)) ms"
        }
    }
}

// MARK: - bench

extension PolicyCommand {
    struct Bench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Measure decisions per second and p50/p99 latency (build with -c release).")

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
            print("scenario              decisions/s      p50 ns      p99 ns")
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
                let store = try await StoreOption(parsing: postgres).open()
                let counted = PolicyEvaluator(policy: policy, store: store)
                // A grant of this run's own, so that earlier runs' rows do not count.
                let own = CallIdentity(grant: "bench-\(getpid())-\(Int.random(in: 0..<1_000_000))", session: "bench-session")
                report("postgres counter", await measure(sqliteIterations) {
                    await counted.decide(tool: "pause_background_task", arguments: pauseArguments, identity: own)
                })
            }
        }

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
            if denied > 0 { PolicyCommand.printError("warning: \(denied) decisions were denials") }
            samples.sort()
            return Result(
                perSecond: Double(count) / (Double(total) / 1e9), p50: samples[count / 2],
                p99: samples[Swift.min(count - 1, count * 99 / 100)])
        }

        private func report(_ name: String, _ result: Result) {
            let padded = name.padding(22)
            print("\(padded)\(String(Int(result.perSecond)).leftPadding(11))\(String(result.p50).leftPadding(12))\(String(result.p99).leftPadding(12))")
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
}

extension String {
    fileprivate func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
    fileprivate func leftPadding(_ width: Int) -> String { count >= width ? self : String(repeating: " ", count: width - count) + self }
}
