import ArgumentParser
import CorralBenchmarks

@main
struct Corral: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "corral",
        abstract: "An agent-side sandbox for MCP tool calls: confined tasks, policies, a policy gateway (proxy), a conformance kit for gateways, benchmarks.",
        discussion: """
            Every task runs as a real child process in its own session (and cgroup, where the machine has a writable \
            cgroup v2 hierarchy), watched through a pidfd. corral proxy is a policy gateway in front of any MCP \
            server; corral conformance tests any gateway against allcanuse-mock.
            """,
        subcommands: [DemoCommand.self, SuperviseCommand.self, ProxyCommand.self, GrantsCommand.self, ConformanceCommand.self, BenchCommand.self, PolicyCommand.self, ExecCommand.self]
    )
}
