import ArgumentParser
import Foundation
import TaskRuntime

/// `corral supervise`: one task under a supervisor, in the foreground.
struct SuperviseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "supervise",
        abstract: "Run one command as a supervised task and print the task record as JSON lines.",
        discussion: """
            Prints the task when it starts and again when it ends (one JSON object per line) and exits with the \
            task's status (128+N for a signal). The state directory keeps the task, its events and its output, so a \
            later supervisor on the same directory can read them; if this process is killed, that later supervisor \
            marks the task failed and makes sure none of its processes are left.
            """
    )

    @Option(help: "State directory (SQLite database, output files, lock).") var stateDir: String
    @Option(help: "Running-time limit in milliseconds (paused time does not count).") var timeoutMs: Int?
    @Option(help: "Bytes of output kept per stream (head and tail).") var outputLimit = TaskSpec.defaultOutputLimit
    @Option(help: "Grace period between SIGTERM and SIGKILL, in milliseconds.") var graceMs = 2000
    @Flag(help: "Do not give the task a cgroup of its own.") var noCgroup = false
    @Flag(help: "Run the command line through /bin/sh -c.") var shell = false
    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments (after --).")
    var command: [String]

    func run() async throws {
        let arguments = command.first == "--" ? Array(command.dropFirst()) : command
        guard !arguments.isEmpty else { throw ValidationError("no command given; usage: corral supervise --state-dir DIR -- CMD ARGS…") }
        let supervisor = try await TaskSupervisor.start(
            .init(stateDirectory: stateDir, graceMilliseconds: graceMs, useCgroups: !noCgroup))
        let spec = TaskSpec(
            title: arguments.joined(separator: " "),
            command: shell ? .shell(arguments.joined(separator: " ")) : .argv(arguments),
            timeoutMilliseconds: timeoutMs, outputLimitBytes: outputLimit)
        let started = try await supervisor.create(spec)
        printJSON(started)
        let outcome = try await supervisor.wait(for: started.taskID)
        printJSON(outcome.task)
        await supervisor.shutdown()
        let status: Int32 = outcome.task.signal.map { 128 + $0 } ?? outcome.task.exitCode ?? (outcome.task.status == .completed ? 0 : 1)
        throw ExitCode(status)
    }

    private func printJSON(_ record: TaskRecord) {
        // One write per line, unbuffered: a reader may kill this process right after the line.
        FileHandle.standardOutput.write(Data((record.jsonText + "\n").utf8))
    }
}
