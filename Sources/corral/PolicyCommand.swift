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
        abstract: "Check and explain policy.json files (corral bench policy measures decisions).",
        subcommands: [Check.self, Explain.self]
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
                With --store sqlite:PATH or postgres://…, counters are shared with every other process (a proxy \
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
