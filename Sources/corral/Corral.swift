import ArgumentParser
import CorralBenchmarks

@main
struct Corral: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "corral",
        abstract: "An agent-side sandbox for MCP tool calls: confined tasks, policies, benchmarks.",
        discussion: """
            Every task runs as a real child process in its own session (and cgroup, where the machine has a writable
            cgroup v2 hierarchy), watched through a pidfd.
            """,
        subcommands: [DemoCommand.self, SuperviseCommand.self, ProxyCommand.self, GrantsCommand.self, ConformanceCommand.self, BenchCommand.self, PolicyCommand.self, ExecCommand.self]
    )
}
