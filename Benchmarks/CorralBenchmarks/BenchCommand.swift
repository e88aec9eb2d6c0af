import ArgumentParser
import Foundation
import Glibc
import Sandbox
import TaskRuntime

/// `corral bench`: benchmarks that print figures, each against a peer or a floor measured in the same run. They live
/// in a target of their own so that the product's commands do not carry them; `corral` only links them in.
public struct BenchCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure Corral against its peers and print the figures (build with scripts/bench, or `source scripts/env.sh; release_build --product corral`).",
        subcommands: [
            LatencyBench.self, SoakBench.self, RuntimeBench.self, SandboxBench.self, MockBench.self, WatchBench.self,
            ProxyBench.self, ProxyCoreBench.self, GatewayBench.self, PolicyBench.self, AgentBench.self, EchoServer.self, PipeEchoServer.self,
            PipeRelay.self,
        ]
    )

    public init() {}
}

struct RuntimeBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runtime",
        abstract: "Spawn-to-running, pause, resume and wait wake-up latency of the task runtime.",
        discussion: """
            Peers in the same run: plain posix_spawn of the same binary (the floor for spawning), and the bare spawn \
            shim (vfork-style clone with a pidfd, no bookkeeping). Times are microseconds; for real figures, use a \
            release build (scripts/bench, or `source scripts/env.sh; release_build --product corral`).
            """
    )

    @Option(help: "Spawns per variant.") var iterations = 300
    @Option(help: "Pause/resume cycles.") var cycles = 200
    @Option(help: "Wake-up samples.") var wakeups = 40
    @Option(help: "Program to spawn.") var program = "/bin/true"
    @Option(help: "Idle gap before each create of the after-idle variant, in milliseconds.") var idleMs = 100
    @Option(help: "Creates after an idle gap.") var idleCreates = 30

    func run() async throws {
        let directory = try makeTemporaryDirectory("corral-bench")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let widths = [44, 10, 10, 10, 10]
        print("spawn to running, \(iterations) spawns of \(program) (µs)")
        row(["variant", "p50", "p90", "p99", "×p50"], widths: widths)

        let posix = measurePosixSpawn()
        let shim = measureShim()
        let withCgroups = try await measureRuntime(directory: directory + "/cg", cgroups: true)
        let afterIdle = try await measureRuntime(directory: directory + "/idle", cgroups: true, idle: .milliseconds(idleMs))
        let withoutCgroups = try await measureRuntime(directory: directory + "/pg", cgroups: false)
        let floor = posix.median
        for (name, samples) in [
            ("posix_spawn (peer)", posix), ("spawn shim: clone(VM|VFORK|PIDFD)", shim),
            ("runtime create(), cgroup per task", withCgroups.samples),
            ("runtime create(), process group only", withoutCgroups.samples),
            ("runtime create() after \(idleMs) ms idle, cgroup", afterIdle.samples),
        ] {
            row(
                [name, format(samples.median), format(samples.percentile(90)), format(samples.percentile(99)),
                 format(samples.median / floor, digits: 2)], widths: widths)
        }
        if let reason = withCgroups.cgroupNote {
            print("note: cgroups were unavailable: \(reason)")
        }

        print("\npause and resume of a running task, \(cycles) cycles (µs)")
        row(["variant", "p50", "p90", "p99"], widths: widths)
        for cgroups in [true, false] {
            let (pause, resume) = try await measurePauseResume(directory: directory + "/pr\(cgroups)", cgroups: cgroups)
            let label = cgroups ? "cgroup.freeze" : "SIGSTOP/SIGCONT + /proc check"
            row(["pause (\(label))", format(pause.median), format(pause.percentile(90)), format(pause.percentile(99))],
                widths: widths)
            row(["resume (\(label))", format(resume.median), format(resume.percentile(90)),
                 format(resume.percentile(99))], widths: widths)
        }

        print("\nwait wake-up: the task prints CLOCK_REALTIME and exits; latency to the waiter's return (µs)")
        row(["variant", "p50", "p90", "p99"], widths: widths)
        let wake = try await measureWakeup(directory: directory + "/wake")
        row(["wait_for (event-driven)", format(wake.median), format(wake.percentile(90)), format(wake.percentile(99))],
            widths: widths)
    }

    private func measurePosixSpawn() -> Samples {
        var samples = Samples()
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup(program), nil]
        let envp: [UnsafeMutablePointer<CChar>?] = [strdup("PATH=/usr/bin:/bin"), nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        for _ in 0..<iterations {
            var pid: pid_t = 0
            let start = ContinuousClock.now
            let result = posix_spawn(&pid, program, nil, nil, argv, envp)
            let elapsed = ContinuousClock.now - start
            guard result == 0 else { continue }
            samples.add(elapsed)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
        return samples
    }

    private func measureShim() -> Samples {
        var samples = Samples()
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { close(devNull) }
        let configuration = SpawnConfiguration(
            arguments: [program], environment: ["PATH": "/usr/bin:/bin"], standardInput: devNull,
            standardOutput: devNull, standardError: devNull)
        for _ in 0..<iterations {
            let start = ContinuousClock.now
            guard let child = try? Spawner.spawn(configuration) else { continue }
            samples.add(ContinuousClock.now - start)
            while child.reap() == nil { usleep(100) }
            child.close()
        }
        return samples
    }

    private func measureRuntime(directory: String, cgroups: Bool, idle: Duration? = nil) async throws -> (
        samples: Samples, cgroupNote: String?
    ) {
        let supervisor = try await TaskSupervisor.start(.init(stateDirectory: directory, useCgroups: cgroups))
        var samples = Samples()
        for _ in 0..<(idle == nil ? iterations : idleCreates) {
            if let idle { try await Task.sleep(for: idle) }
            let start = ContinuousClock.now
            let task = try await supervisor.create(TaskSpec(title: "bench", command: .argv([program])))
            samples.add(ContinuousClock.now - start)
            _ = try await supervisor.wait(for: task.taskID)
        }
        let note = supervisor.cgroupUnavailableReason
        await supervisor.shutdown()
        return (samples, cgroups ? note : nil)
    }

    private func measurePauseResume(directory: String, cgroups: Bool) async throws -> (Samples, Samples) {
        let supervisor = try await TaskSupervisor.start(
            .init(stateDirectory: directory, graceMilliseconds: 100, useCgroups: cgroups))
        let task = try await supervisor.create(
            TaskSpec(title: "bench", command: .shell("sleep 600 & sleep 600 & wait")))
        try await Task.sleep(for: .milliseconds(100))
        var pause = Samples()
        var resume = Samples()
        for _ in 0..<cycles {
            var start = ContinuousClock.now
            _ = try await supervisor.pause(task.taskID)
            pause.add(ContinuousClock.now - start)
            start = ContinuousClock.now
            _ = try await supervisor.resume(task.taskID)
            resume.add(ContinuousClock.now - start)
        }
        await supervisor.shutdown()
        return (pause, resume)
    }

    private func measureWakeup(directory: String) async throws -> Samples {
        let supervisor = try await TaskSupervisor.start(.init(stateDirectory: directory))
        var samples = Samples()
        for _ in 0..<wakeups {
            let task = try await supervisor.create(
                TaskSpec(title: "bench", command: .shell("sleep 0.02; exec date +%s%N")))
            let outcome = try await supervisor.wait(for: task.taskID, timeout: .seconds(10))
            var now = timespec()
            clock_gettime(CLOCK_REALTIME, &now)
            let output = try await supervisor.output(of: task.taskID, stream: .stdout)
            guard outcome.conditionMet,
                let printed = Double(output.text.trimmingCharacters(in: .whitespacesAndNewlines))
            else { continue }
            let woke = Double(now.tv_sec) * 1e9 + Double(now.tv_nsec)
            samples.add(microseconds: (woke - printed) / 1000)
        }
        await supervisor.shutdown()
        return samples
    }
}
