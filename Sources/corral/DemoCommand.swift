import ArgumentParser
import Foundation
import Sandbox
import TaskRuntime

/// `corral demo`: a short walk through the runtime with real processes.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run a short demonstration of the task runtime with real child processes.",
        discussion: """
            Starts a supervisor on a state directory, runs a task that prints a line every 200 ms, pauses it (the \
            kernel reports its processes stopped), resumes it, waits for it, prints its output and its events; then \
            cancels a task whose child escaped into a session of its own and shows that no process of it is left.
            """
    )

    @Option(help: "State directory (SQLite and output). Default: a new temporary directory, removed afterwards.")
    var stateDir: String?

    func run() async throws {
        let directory = try stateDir ?? makeTemporaryDirectory("corral-demo")
        defer { if stateDir == nil { try? FileManager.default.removeItem(atPath: directory) } }
        let supervisor = try await TaskSupervisor.start(.init(stateDirectory: directory, graceMilliseconds: 500))
        print("state directory: \(directory)")
        print("per-task cgroups: \(supervisor.cgroupUnavailableReason.map { "unavailable (\($0))" } ?? "yes")")

        let ticker = try await supervisor.create(
            TaskSpec(
                title: "ticker",
                command: .shell("for i in 1 2 3 4 5; do echo tick $i; sleep 0.2; done"),
                timeoutMilliseconds: 10_000))
        print("\ncreated \(ticker.taskID): \(ticker.status.rawValue), pid \(ticker.pid ?? 0)")
        try await Task.sleep(for: .milliseconds(300))
        let paused = try await supervisor.pause(ticker.taskID, reason: "demo")
        let state = ticker.pid.flatMap { ProcessTable.status(of: $0) }.map { String($0.state) } ?? "?"
        let frozen = paused.task.cgroupPath.flatMap { readSmallFile($0 + "/cgroup.events") }?
            .split(separator: "\n").first { $0.hasPrefix("frozen") } ?? "no cgroup"
        print("paused: \(paused.task.status.rawValue); pid \(ticker.pid ?? 0) state \(state), cgroup.events: \(frozen)")
        try await Task.sleep(for: .milliseconds(500))
        let resumed = try await supervisor.resume(ticker.taskID)
        print("resumed: \(resumed.task.status.rawValue)")
        let outcome = try await supervisor.wait(for: ticker.taskID, timeout: .seconds(10))
        let ended = outcome.task
        print(
            "ended: \(ended.status.rawValue), exit code \(ended.exitCode.map(String.init) ?? "-"), "
                + "running \(ended.runningMilliseconds) ms (paused time excluded)")
        let output = try await supervisor.output(of: ticker.taskID, stream: .stdout)
        print("stdout (\(output.totalBytes) bytes):")
        print(output.text.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
        print("events:")
        for event in try await supervisor.events(of: ticker.taskID) {
            print("  [\(event.type)] \(event.message)")
        }

        let tree = try await supervisor.create(
            TaskSpec(
                title: "tree",
                command: .shell("setsid sleep 300 & sleep 300 & trap '' TERM; sleep 300")))
        try await Task.sleep(for: .milliseconds(200))
        print("\ncreated \(tree.taskID): a shell that ignores SIGTERM, a child and a setsid child")
        let cancelled = try await supervisor.cancel(tree.taskID, reason: "demo")
        let remaining = cancelled.task.cgroupPath.map { _ in "none (cgroup empty and removed)" } ?? "see process group"
        print(
            "cancelled: \(cancelled.task.status.rawValue) (\(cancelled.task.signal.map(signalName) ?? "-")); "
                + "processes left: \(remaining)")
        await supervisor.shutdown()
    }
}
