import CCorral
import MCPCore
import Foundation
import Sandbox
import CorralJSON
import Synchronization
import XCTest

@testable import TaskRuntime

/// Real processes, real signals, real cgroups. XCTest runs these one after another, which the descriptor and thread
/// counts need.
final class SupervisorTests: XCTestCase {
    var directory = ""
    var supervisor: TaskSupervisor?

    override func setUp() async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("corral-test-\(UUID().uuidString)")
            .path
    }

    override func tearDown() async throws {
        await supervisor?.shutdown()
        supervisor = nil
        try? FileManager.default.removeItem(atPath: directory)
    }

    func start(cgroups: Bool = true, graceMilliseconds: Int = 500) async throws -> TaskSupervisor {
        let started = try await TaskSupervisor.start(
            .init(stateDirectory: directory, graceMilliseconds: graceMilliseconds, useCgroups: cgroups))
        supervisor = started
        return started
    }

    // MARK: lifecycle

    func testExitZeroCompletesAndOutputIsCaptured() async throws {
        let supervisor = try await start()
        let task = try await supervisor.create(
            TaskSpec(title: "echo", command: .argv(["/bin/sh", "-c", "echo out; echo err >&2"])))
        XCTAssertEqual(task.status, .running)
        XCTAssertNotNil(task.pid)
        let outcome = try await supervisor.wait(for: task.taskID, timeout: .seconds(10))
        XCTAssertTrue(outcome.conditionMet)
        XCTAssertEqual(outcome.task.status, .completed)
        XCTAssertEqual(outcome.task.exitCode, 0)
        XCTAssertNil(outcome.task.lastError)
        let stdout = try await supervisor.output(of: task.taskID, stream: .stdout)
        let stderr = try await supervisor.output(of: task.taskID, stream: .stderr)
        XCTAssertEqual(stdout.text, "out\n")
        XCTAssertEqual(stderr.text, "err\n")
        XCTAssertEqual(outcome.task.stdoutBytes, 4)
    }

    func testNonZeroExitFailsWithReadableError() async throws {
        let supervisor = try await start()
        let task = try await supervisor.create(TaskSpec(title: "exit 3", command: .shell("exit 3")))
        let outcome = try await supervisor.wait(for: task.taskID, timeout: .seconds(10))
        XCTAssertEqual(outcome.task.status, .failed)
        XCTAssertEqual(outcome.task.exitCode, 3)
        XCTAssertEqual(outcome.task.lastError, "exited with status 3")
    }

    func testKilledBySignalFailsWithSignalName() async throws {
        let supervisor = try await start()
        let task = try await supervisor.create(TaskSpec(title: "kill", command: .shell("kill -9 $$")))
        let outcome = try await supervisor.wait(for: task.taskID, timeout: .seconds(10))
        XCTAssertEqual(outcome.task.status, .failed)
        XCTAssertEqual(outcome.task.signal, 9)
        XCTAssertEqual(outcome.task.lastError, "killed by signal 9 (SIGKILL)")
    }

    func testSpawnFailuresAreClearFailedTasks() async throws {
        let supervisor = try await start()
        let missing = try await supervisor.create(
            TaskSpec(title: "missing", command: .argv(["/nonexistent/program"])))
        XCTAssertEqual(missing.status, .failed)
        XCTAssertEqual(
            missing.lastError, "failed to start: cannot execute /nonexistent/program: No such file or directory")

        let notInPath = try await supervisor.create(
            TaskSpec(title: "missing", command: .argv(["no-such-program-corral"])))
        XCTAssertEqual(notInPath.status, .failed)
        XCTAssertTrue(notInPath.lastError?.contains("No such file or directory") == true, "\(notInPath.lastError ?? "")")

        let badCwd = try await supervisor.create(
            TaskSpec(title: "cwd", command: .argv(["/bin/true"]), workingDirectory: "/nonexistent/dir"))
        XCTAssertEqual(
            badCwd.lastError,
            "failed to start: cannot change to working directory /nonexistent/dir: No such file or directory")

        let script = directory + "/not-executable.sh"
        XCTAssertTrue(FileManager.default.createFile(atPath: script, contents: Data("#!/bin/sh\n".utf8)))
        let denied = try await supervisor.create(TaskSpec(title: "perm", command: .argv([script])))
        XCTAssertEqual(denied.lastError, "failed to start: cannot execute \(script): Permission denied")

        let events = try await supervisor.events(of: denied.taskID)
        XCTAssertEqual(events.last?.type, "error")
        XCTAssertEqual(events.last?.data["status"], "failed")
        // A final task is final: wait returns at once.
        let outcome = try await supervisor.wait(for: denied.taskID, timeout: .seconds(1))
        XCTAssertEqual(outcome.task.status, .failed)
    }

    func testInvalidSpecsAreRejected() async throws {
        let supervisor = try await start()
        for spec in [
            TaskSpec(title: "empty", command: .argv([])),
            TaskSpec(title: "blank", command: .shell("   ")),
            TaskSpec(title: "timeout", command: .argv(["/bin/true"]), timeoutMilliseconds: 0),
            TaskSpec(title: "cwd", command: .argv(["/bin/true"]), workingDirectory: "relative"),
        ] {
            do {
                _ = try await supervisor.create(spec)
                XCTFail("\(spec.title) was accepted")
            } catch {
                guard case .invalidArgument = error else { return XCTFail("\(error)") }
            }
        }
        do {
            _ = try await supervisor.task("0123")
            XCTFail("unknown id accepted")
        } catch {
            XCTAssertEqual(error, .unknownTask("0123"))
        }
    }

    func testEnvironmentIsCleanAndStdinIsDelivered() async throws {
        setenv("CORRAL_TEST_SECRET", "hunter2", 1)
        defer { unsetenv("CORRAL_TEST_SECRET") }
        let supervisor = try await start()
        let task = try await supervisor.create(
            TaskSpec(
                title: "env", command: .shell("env; echo; cat"), environment: ["GREETING": "hello"],
                standardInput: "from stdin\n"))
        _ = try await supervisor.wait(for: task.taskID, timeout: .seconds(10))
        let text = try await supervisor.output(of: task.taskID, stream: .stdout).text
        XCTAssertFalse(text.contains("hunter2"), text)
        XCTAssertTrue(text.contains("GREETING=hello"), text)
        XCTAssertTrue(text.contains("PATH=/usr/local/bin:/usr/bin:/bin"), text)
        XCTAssertTrue(text.hasSuffix("from stdin\n"), text)
    }

    func testOwnSessionProcessGroupAndCgroup() async throws {
        let supervisor = try await start()
        let task = try await supervisor.create(TaskSpec(title: "sleep", command: .argv(["/bin/sleep", "30"])))
        let pid = try XCTUnwrap(task.pid)
        let status = try XCTUnwrap(ProcessTable.status(of: pid))
        XCTAssertEqual(status.session, pid)
        XCTAssertEqual(status.processGroup, pid)
        XCTAssertEqual(status.parentPID, getpid())
        if let cgroup = task.cgroupPath {
            XCTAssertTrue(readSmallFile(cgroup + "/cgroup.procs")?.contains("\(pid)") == true)
            XCTAssertTrue(task.protections.contains("cgroup"))
        } else {
            XCTAssertTrue(task.protections.contains("process_group_signals"))
        }
        // Nothing of the supervisor's leaks into the task: only 0, 1, 2 are open. The dynamic loader of the new
        // program opens and closes descriptors of its own just after the exec, so a leak is what stays.
        var fds: [String] = []
        for _ in 0..<100 {
            fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").sorted()
            if fds == ["0", "1", "2"] { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        XCTAssertEqual(fds, ["0", "1", "2"])
        _ = try await supervisor.cancel(task.taskID)
    }

    // MARK: pause, resume, cancel

    func testPauseFreezesTheTreeAndCPUTimeStops() async throws {
        try await pauseStopsTheTree(cgroups: true)
    }

    func testPauseWithoutCgroupStopsTheGroup() async throws {
        try await pauseStopsTheTree(cgroups: false)
    }

    private func pauseStopsTheTree(cgroups: Bool) async throws {
        let supervisor = try await start(cgroups: cgroups)
        // A busy loop in a grandchild: CPU time advances whenever it runs.
        let task = try await supervisor.create(
            TaskSpec(title: "spin", command: .shell("sh -c 'while :; do :; done' & wait")))
        let pid = try XCTUnwrap(task.pid)
        try await Task.sleep(for: .milliseconds(300))
        let members = ProcessTable.members(ofGroup: pid)
        XCTAssertGreaterThanOrEqual(members.count, 2)

        let paused = try await supervisor.pause(task.taskID, reason: "test")
        XCTAssertTrue(paused.changed)
        XCTAssertEqual(paused.task.status, .paused)
        if cgroups, let cgroup = paused.task.cgroupPath {
            XCTAssertTrue(readSmallFile(cgroup + "/cgroup.events")?.contains("frozen 1") == true)
        } else {
            for member in ProcessTable.members(ofGroup: pid) {
                XCTAssertEqual(member.state, "T", "pid \(member.pid) is \(member.state)")
            }
        }
        let before = ProcessTable.members(ofGroup: pid).map(\.cpuTicks).reduce(0, +)
        try await Task.sleep(for: .milliseconds(500))
        let after = ProcessTable.members(ofGroup: pid).map(\.cpuTicks).reduce(0, +)
        XCTAssertEqual(before, after, "CPU time advanced while paused")

        let again = try await supervisor.pause(task.taskID)
        XCTAssertFalse(again.changed)
        XCTAssertEqual(again.note, "task is paused; only a running task can be paused")

        let resumed = try await supervisor.resume(task.taskID)
        XCTAssertEqual(resumed.task.status, .running)
        try await Task.sleep(for: .milliseconds(300))
        let later = ProcessTable.members(ofGroup: pid).map(\.cpuTicks).reduce(0, +)
        XCTAssertGreaterThan(later, after, "CPU time did not advance after resume")
        let notPaused = try await supervisor.resume(task.taskID)
        XCTAssertFalse(notPaused.changed)
        XCTAssertEqual(notPaused.note, "task is running; only a paused task can be resumed")

        let cancelled = try await supervisor.cancel(task.taskID)
        XCTAssertEqual(cancelled.task.status, .cancelled)
        XCTAssertTrue(ProcessTable.members(ofGroup: pid).filter { !$0.isGone }.isEmpty)
        let events = try await supervisor.events(of: task.taskID).map { $0.data["status"]?.stringValue }
        XCTAssertEqual(events, ["pending", "running", "paused", "running", "cancelled"])
    }

    func testCancelKillsTreeIncludingSetsidChildAndSigtermIgnorer() async throws {
        let supervisor = try await start(graceMilliseconds: 300)
        let marker = "corral-marker-\(UInt32.random(in: 0...UInt32.max))"
        // The shell ignores SIGTERM; one grandchild leaves the process group with setsid.
        let task = try await supervisor.create(
            TaskSpec(
                title: "tree",
                command: .shell("trap '' TERM; setsid \(sleeper(marker)) & \(sleeper(marker)) & wait")))
        try await Task.sleep(for: .milliseconds(300))
        XCTAssertEqual(processesWithArgument(marker).count, 2)
        let start = ContinuousClock.now
        let cancelled = try await supervisor.cancel(task.taskID, reason: "test")
        let elapsed = ContinuousClock.now - start
        XCTAssertEqual(cancelled.task.status, .cancelled)
        XCTAssertTrue(cancelled.changed)
        if cancelled.task.cgroupPath != nil {
            XCTAssertEqual(processesWithArgument(marker), [], "a process of the tree survived")
            XCTAssertEqual(cancelled.task.signal, SIGKILL)  // the shell ignored SIGTERM
            XCTAssertGreaterThanOrEqual(elapsed, .milliseconds(300))  // the grace period was given
            XCTAssertFalse(FileManager.default.fileExists(atPath: cancelled.task.cgroupPath ?? ""))
        }
        let again = try await supervisor.cancel(task.taskID)
        XCTAssertFalse(again.changed)
        XCTAssertEqual(again.task.status, .cancelled)
        XCTAssertEqual(again.note, "task is already cancelled")
    }

    func testCancelOfPausedTask() async throws {
        for cgroups in [true, false] {
            let supervisor = try await start(cgroups: cgroups)
            let task = try await supervisor.create(TaskSpec(title: "sleep", command: .argv(["/bin/sleep", "60"])))
            _ = try await supervisor.pause(task.taskID)
            let cancelled = try await supervisor.cancel(task.taskID)
            XCTAssertEqual(cancelled.task.status, .cancelled)
            XCTAssertEqual(cancelled.task.signal, SIGTERM, "a paused task is continued, then terminated")
            await supervisor.shutdown()
            self.supervisor = nil
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    /// The task's `/proc/PID/io` is opened after its create (a housekeeping job), read at its exit, and closed then.
    func testAnExitReadsTheIOCountersKeptOpenForIt() async throws {
        let supervisor = try await start()
        let task = try await supervisor.create(
            TaskSpec(title: "io", command: .shell("head -c 1048576 /dev/zero > written; sleep 0.3")))
        let path = "/proc/\(try XCTUnwrap(task.pid))/io"
        var kept = false
        for _ in 0..<100 where !kept {
            kept = Self.descriptorTargets().contains(path)
            if !kept { try await Task.sleep(for: .milliseconds(10)) }
        }
        XCTAssertTrue(kept, "\(path) was not kept open for the exit")
        let outcome = try await supervisor.wait(for: task.taskID, timeout: .seconds(10))
        XCTAssertEqual(outcome.task.status, .completed, outcome.task.lastError ?? "")
        XCTAssertFalse(Self.descriptorTargets().contains(path), "\(path) stayed open after the exit")
        let written = try XCTUnwrap(outcome.task.ioWriteBytes, "no I/O counters were read")
        // Dirtied page-cache pages count as written where there is a block device behind them (not on tmpfs).
        if Self.filesystemType(of: outcome.task.workingDirectory) != "tmpfs" {
            XCTAssertGreaterThanOrEqual(written, 1 << 20)
        }
    }

    /// The type of the mount that holds `path` (the longest mount point that is a prefix of it), from /proc/mounts.
    private static func filesystemType(of path: String) -> String? {
        let mounts = (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? ""
        var best: (point: String, type: String)?
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 2 else { continue }
            let point = String(fields[1])
            let inside = path == point || path.hasPrefix(point.hasSuffix("/") ? point : point + "/")
            if inside, point.count >= (best?.point.count ?? -1) { best = (point, String(fields[2])) }
        }
        return best?.type
    }

    /// What this process's descriptors point at.
    private static func descriptorTargets() -> Set<String> {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return Set(names.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + $0) })
    }

    func testExitedTaskLeavesNoDescendants() async throws {
        let supervisor = try await start()
        let marker = "corral-orphan-\(UInt32.random(in: 0...UInt32.max))"
        let task = try await supervisor.create(TaskSpec(title: "orphan", command: .shell("\(sleeper(marker)) & exit 0")))
        let outcome = try await supervisor.wait(for: task.taskID, timeout: .seconds(10))
        XCTAssertEqual(outcome.task.status, .completed)
        XCTAssertEqual(processesWithArgument(marker), [])
    }

    // MARK: timeouts and waiting

    func testTimeoutCountsRunningTimeOnly() async throws {
        let supervisor = try await start(graceMilliseconds: 200)
        let task = try await supervisor.create(
            TaskSpec(title: "slow", command: .argv(["/bin/sleep", "30"]), timeoutMilliseconds: 600))
        try await Task.sleep(for: .milliseconds(300))
        _ = try await supervisor.pause(task.taskID)
        try await Task.sleep(for: .milliseconds(800))  // past the timeout in wall-clock time
        let paused = try await supervisor.task(task.taskID)
        XCTAssertEqual(paused.status, .paused, "paused time counted against the timeout")
        _ = try await supervisor.resume(task.taskID)
        let start = ContinuousClock.now
        let outcome = try await supervisor.wait(for: task.taskID, timeout: .seconds(10))
        let afterResume = ContinuousClock.now - start
        XCTAssertEqual(outcome.task.status, .failed)
        XCTAssertEqual(outcome.task.lastError, "timed out after 600 ms")
        XCTAssertGreaterThanOrEqual(afterResume, .milliseconds(200))
        XCTAssertLessThan(afterResume, .milliseconds(2000))
        XCTAssertGreaterThanOrEqual(outcome.task.runningMilliseconds, 600)
        XCTAssertLessThan(outcome.task.runningMilliseconds, 1500)
    }

    func testManyWaitersOnOneTaskAndOnManyTasks() async throws {
        let supervisor = try await start()
        let tasks = try await withThrowingTaskGroup(of: TaskRecord.self) { group in
            for index in 0..<8 {
                group.addTask {
                    try await supervisor.create(
                        TaskSpec(title: "t\(index)", command: .argv(["/bin/sleep", "0.\(index + 2)"])))
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let outcomes = try await withThrowingTaskGroup(of: WaitOutcome.self) { group in
            for task in tasks {
                for _ in 0..<10 {
                    group.addTask { try await supervisor.wait(for: task.taskID, timeout: .seconds(20)) }
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        XCTAssertEqual(outcomes.count, 80)
        XCTAssertTrue(outcomes.allSatisfy { $0.conditionMet && $0.task.status == .completed })

        // A wait with a target status and a timeout that passes first.
        let sleeper = try await supervisor.create(TaskSpec(title: "s", command: .argv(["/bin/sleep", "5"])))
        let early = try await supervisor.wait(for: sleeper.taskID, until: [.completed], timeout: .milliseconds(100))
        XCTAssertFalse(early.conditionMet)
        XCTAssertEqual(early.task.status, .running)
        XCTAssertGreaterThanOrEqual(early.waitedMilliseconds, 100)

        // Waiting for "paused" wakes on the pause.
        async let pausedWait = supervisor.wait(for: sleeper.taskID, until: [.paused], timeout: .seconds(5))
        try await Task.sleep(for: .milliseconds(50))
        _ = try await supervisor.pause(sleeper.taskID)
        let pausedOutcome = try await pausedWait
        XCTAssertTrue(pausedOutcome.conditionMet)

        // A cancelled waiter returns at once.
        let waiter = Task { try await supervisor.wait(for: sleeper.taskID, timeout: .seconds(30)) }
        try await Task.sleep(for: .milliseconds(50))
        waiter.cancel()
        let cancelledOutcome = try await waiter.value
        XCTAssertFalse(cancelledOutcome.conditionMet)
        XCTAssertLessThan(cancelledOutcome.waitedMilliseconds, 5000)
    }

    func testExitsAreHandledOnTheExecutorGiven() async throws {
        let supervisor = try await start()
        let executor = CountingExecutor()
        // Waits without a timeout and no retention (no timer, no pruning): only the exit itself can use the executor.
        let before = try await supervisor.create(TaskSpec(title: "pool", command: .argv(["/bin/true"])))
        _ = try await supervisor.wait(for: before.taskID)
        XCTAssertEqual(executor.jobs, 0)
        await supervisor.handleExits(on: executor)
        let task = try await supervisor.create(TaskSpec(title: "lane", command: .argv(["/bin/true"])))
        let outcome = try await supervisor.wait(for: task.taskID)
        XCTAssertEqual(outcome.task.status, .completed)
        XCTAssertGreaterThan(executor.jobs, 0, "the exit was not handled on the executor given")

        // The ended task's cgroup goes behind the waiter's answer; at shutdown, whatever an exit left goes with the
        // server's own cgroup.
        guard let cgroup = outcome.task.cgroupPath else { return }  // no delegated cgroups here
        let deadline = ContinuousClock.now + .seconds(5)
        while FileManager.default.fileExists(atPath: cgroup), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: cgroup), "the ended task's cgroup stayed")
        let last = try await supervisor.create(TaskSpec(title: "last", command: .argv(["/bin/true"])))
        _ = try await supervisor.wait(for: last.taskID)
        await supervisor.shutdown()
        let root = (cgroup as NSString).deletingLastPathComponent
        XCTAssertFalse(FileManager.default.fileExists(atPath: root), "the server's cgroup stayed after shutdown")
    }

    func testACreateKeepsTheCreatesExecutorAwakeThroughItsSpawn() async throws {
        let supervisor = try await start()
        let executor = WakefulCountingExecutor()
        await supervisor.handleExits(on: executor)
        let unwoken = try await supervisor.create(TaskSpec(title: "exits only", command: .argv(["/bin/true"])))
        XCTAssertEqual(executor.requests, [], "the exits' executor is not the creates' unless it is said to be")
        await supervisor.keepAwakeThroughSpawns(executor)
        // No stay while a spare is being made (see below).
        _ = try await adoptedSpare(of: supervisor, besides: [unwoken.taskID])
        let task = try await supervisor.create(TaskSpec(title: "awake", command: .argv(["/bin/true"])))
        XCTAssertEqual(executor.requests, [TaskSupervisor.spawnWakefulness], "one request per create, for its spawn")
        XCTAssertEqual(executor.ends, 1, "the request ended with the spawn")
        _ = try await supervisor.wait(for: task.taskID, timeout: .seconds(10))
        await supervisor.shutdown()
    }

    /// A create while the next spare is being made spawns without a stay: the spinning thread would leave the spawn,
    /// its child and the spare's maker one CPU between them. Once the spare is made, creates stay awake again.
    func testACreateWhileASpareIsMadeIsNotKeptAwake() async throws {
        let supervisor = try await start()
        let executor = WakefulCountingExecutor()
        await supervisor.keepAwakeThroughSpawns(executor)
        let first = try await supervisor.create(TaskSpec(title: "first", command: .argv(["/bin/true"])))
        let spare = try await adoptedSpare(of: supervisor, besides: [first.taskID])
        XCTAssertNotNil(spare, "no spare after a create")
        let before = executor.requests.count  // the first create's depends on whether the start's spare was made
        let gate = AsyncStream<Void>.makeStream()
        await supervisor.holdSpares { for await _ in gate.stream { break } }
        let second = try await supervisor.create(TaskSpec(title: "takes the spare", command: .argv(["/bin/true"])))
        XCTAssertEqual(second.taskID, spare, "the ready spare was not taken")
        let third = try await supervisor.create(TaskSpec(title: "while one is made", command: .argv(["/bin/true"])))
        XCTAssertEqual(executor.requests.count, before + 1, "kept awake while a spare was being made")
        gate.continuation.finish()
        _ = try await adoptedSpare(of: supervisor, besides: [first.taskID, second.taskID, third.taskID])
        _ = try await supervisor.create(TaskSpec(title: "after", command: .argv(["/bin/true"])))
        XCTAssertEqual(executor.requests.count, before + 2, "not kept awake once the spare was made")
        XCTAssertEqual(executor.ends, executor.requests.count)
        await supervisor.shutdown()
    }

    func testEndedCgroupIsRemovedAfterTheWaitersAnswer() async throws {
        let supervisor = try await start()
        // allcanuse-mock's stdio loop, its input a pipe left open until the end.
        var fds: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&fds), 0)
        let loop = try XCTUnwrap(ReadLoop())
        let input = fds[0]
        let loopEnded = expectation(description: "the loop ended")
        Thread {
            loop.run(reading: input, { _ in }, endOfInput: {}, isIdle: { true })
            loopEnded.fulfill()
        }.start()
        await supervisor.handleExits(on: loop)
        let task = try await supervisor.create(TaskSpec(title: "loop", command: .shell("sleep 0.05")))
        // The waiter runs on the loop, as a request does there, and its answer is several hops away (an actor, then
        // the loop again): when it comes, the ended task's cgroup (an rmdir of 50-190 µs) must still be there.
        let waiter = Task(executorPreference: loop) { () -> (TaskRecord, Bool) in
            let outcome = try await supervisor.wait(for: task.taskID, timeout: .seconds(10))
            let answered = await Hop().answer(outcome)
            return (answered.task, answered.task.cgroupPath.map { FileManager.default.fileExists(atPath: $0) } ?? false)
        }
        let (record, cgroupStillThere) = try await waiter.value
        XCTAssertEqual(record.status, .completed)
        let cgroup = record.cgroupPath
        if let cgroup {
            XCTAssertTrue(cgroupStillThere, "the cgroup was removed before the waiter's answer")
            let deadline = ContinuousClock.now + .seconds(5)
            while FileManager.default.fileExists(atPath: cgroup), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(5))
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: cgroup), "the ended task's cgroup stayed")
        }
        await supervisor.shutdown()
        close(fds[1])
        await fulfillment(of: [loopEnded], timeout: 10)
        close(fds[0])
        if cgroup == nil { throw XCTSkip("no delegated cgroups here: nothing to remove") }
    }

    /// Exits are watched by the exits' executor's own thread where it can wait on descriptors (allcanuse-mock's stdio
    /// loop), and by the reactor again once that thread has ended: a task that ends after the loop is still seen.
    func testExitsAreWatchedOnTheLoopThreadAndByTheReactorAfterTheLoopEnds() async throws {
        let supervisor = try await start()
        var fds: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&fds), 0)
        let watcher = try XCTUnwrap(LoopWatcher())
        let input = fds[0]
        let loopThread = Mutex<UInt>(0)
        let loopEnded = expectation(description: "the loop ended")
        Thread {
            loopThread.withLock { $0 = UInt(pthread_self()) }
            watcher.loop.run(reading: input, { _ in }, endOfInput: {}, isIdle: { true })
            loopEnded.fulfill()
        }.start()
        await supervisor.handleExits(on: watcher)
        XCTAssertEqual(watcher.watching, 1, "the pidfds' set was not given to the loop")

        let task = try await supervisor.create(TaskSpec(title: "on the loop", command: .shell("sleep 0.05")))
        let outcome = try await supervisor.wait(for: task.taskID, timeout: .seconds(10))
        XCTAssertEqual(outcome.task.status, .completed)
        XCTAssertEqual(Set(watcher.readableThreads), [loopThread.withLock { $0 }], "the exit was not seen on the loop")

        // This one ends only once the loop has: it reads its standard input, a pipe written to after the loop ended.
        var gate: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&gate), 0)
        var spec = TaskSpec(title: "after the loop", command: .shell("read line"))
        spec.standardInputDescriptor = gate[0]
        let late = try await supervisor.create(spec)
        close(gate[0])
        close(fds[1])
        await fulfillment(of: [loopEnded], timeout: 10)
        let seenByLoop = watcher.readableThreads.count
        XCTAssertEqual(write(gate[1], "go\n", 3), 3)
        close(gate[1])
        let lateOutcome = try await supervisor.wait(for: late.taskID, timeout: .seconds(10))
        XCTAssertEqual(lateOutcome.task.status, .completed, "the exit after the loop's end was not seen")
        XCTAssertEqual(watcher.readableThreads.count, seenByLoop, "the ended loop was still asked")
        close(fds[0])
        guard lateOutcome.task.status == .completed else {
            // Its shutdown would wait for ever: the PID namespace's keeper cannot end while a task of the namespace
            // is left unreaped.
            self.supervisor = nil
            return
        }
        await supervisor.shutdown()
    }

    func testWaiterWakesPromptlyOnExit() async throws {
        let supervisor = try await start()
        var latencies: [Double] = []
        for _ in 0..<10 {
            let task = try await supervisor.create(
                TaskSpec(title: "wake", command: .shell("sleep 0.05; exec date +%s%N")))
            let outcome = try await supervisor.wait(for: task.taskID, timeout: .seconds(10))
            var now = timespec()
            clock_gettime(CLOCK_REALTIME, &now)
            XCTAssertTrue(outcome.conditionMet)
            let text = try await supervisor.output(of: task.taskID, stream: .stdout).text
            let printed = try XCTUnwrap(Double(text.trimmingCharacters(in: .whitespacesAndNewlines)))
            latencies.append((Double(now.tv_sec) * 1e9 + Double(now.tv_nsec) - printed) / 1e6)
        }
        latencies.sort()
        // The median includes `date`'s own exit; a polling loop would show its period here.
        XCTAssertLessThan(latencies[latencies.count / 2], 20, "\(latencies)")
    }

    // MARK: output

    func testFiftyMiBOfOutputIsDrainedAndBounded() async throws {
        let supervisor = try await start()
        let task = try await supervisor.create(
            TaskSpec(
                title: "chatty", command: .shell("head -c 52428800 /dev/zero | tr '\\0' 'x'; echo; echo END"),
                outputLimitBytes: 1 << 20))
        let outcome = try await supervisor.wait(for: task.taskID, timeout: .seconds(60))
        XCTAssertEqual(outcome.task.status, .completed)
        XCTAssertEqual(outcome.task.stdoutBytes, 52_428_800 + 5)
        let tail = try await supervisor.output(of: task.taskID, stream: .stdout, tailBytes: 10)
        XCTAssertEqual(tail.text, "xxxxx\nEND\n")
        XCTAssertEqual(tail.totalBytes, 52_428_805)
        XCTAssertGreaterThan(tail.droppedBytes, 50_000_000)
        let head = try await supervisor.output(of: task.taskID, stream: .stdout, offset: 0, maxBytes: 100)
        XCTAssertEqual(head.bytes, [UInt8](repeating: UInt8(ascii: "x"), count: 100))
        XCTAssertTrue(head.truncated)
        // An offset in the dropped middle skips to the first kept byte and says so.
        let middle = try await supervisor.output(of: task.taskID, stream: .stdout, offset: 10_000_000, maxBytes: 10)
        XCTAssertTrue(middle.truncated)
        XCTAssertGreaterThan(middle.offset, 10_000_000)
        // On disk: at most the limit.
        let taskDirectory = directory + "/tasks/" + task.taskID
        let onDisk = try FileManager.default.contentsOfDirectory(atPath: taskDirectory)
            .filter { $0.hasPrefix("stdout") }
            .map { try FileManager.default.attributesOfItem(atPath: taskDirectory + "/" + $0)[.size] as? Int ?? 0 }
            .reduce(0, +)
        XCTAssertLessThanOrEqual(onDisk, 1 << 20)
    }

    // MARK: persistence

    func testSecondSupervisorOnSameStateDirectoryIsRefused() async throws {
        _ = try await start()
        do {
            _ = try await TaskSupervisor.start(.init(stateDirectory: directory))
            XCTFail("a second supervisor started")
        } catch {
            guard case .stateDirectoryInUse(_, let holder) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(holder, "pid \(getpid())")
        }
    }

    func testEventsAndRecordsSurviveARestart() async throws {
        var supervisor = try await start()
        let task = try await supervisor.create(TaskSpec(title: "persist", command: .shell("echo kept")))
        _ = try await supervisor.wait(for: task.taskID)
        let event = try await supervisor.appendEvent(
            to: task.taskID, message: "note", type: "decision", data: ["k": [1, 2]])
        await supervisor.shutdown()
        supervisor = try await start()
        let events = try await supervisor.events(of: task.taskID)
        let last = try XCTUnwrap(events.last)
        XCTAssertEqual(last.eventID, event.eventID)
        XCTAssertEqual(last.sequence, event.sequence)
        XCTAssertEqual(last.data, event.data)
        XCTAssertEqual(last.type, "decision")
        XCTAssertEqual(Timestamp.format(last.timestamp), Timestamp.format(event.timestamp))
        let stored = try await supervisor.task(task.taskID)
        XCTAssertEqual(stored.status, .completed)
        let kept = try await supervisor.output(of: task.taskID, stream: .stdout).text
        XCTAssertEqual(kept, "kept\n")
        let listing = try await supervisor.tasks(statuses: [.completed])
        XCTAssertEqual(listing.total, 1)
    }

    // MARK: spare directories

    /// The id of the spare `supervisor` holds ready, once it is none of `taken`, or nil after 5 s.
    private func adoptedSpare(of supervisor: TaskSupervisor, besides taken: Set<String>) async throws -> String? {
        for _ in 0..<500 {
            if let id = await supervisor.spareTaskID, !taken.contains(id) { return id }
            try await Task.sleep(for: .milliseconds(10))
        }
        return nil
    }

    /// The id the spare marker names once a spare with that id, none of `taken`, is ready (its directories made), or
    /// nil after 5 s.
    private func readySpare(besides taken: Set<String>) async throws -> String? {
        for _ in 0..<500 {
            if let text = readSmallFile(directory + "/spare-task") {
                let id = text.trimmingCharacters(in: .whitespacesAndNewlines)
                if !taken.contains(id), FileManager.default.fileExists(atPath: directory + "/tasks/\(id)/work") {
                    return id
                }
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        return nil
    }

    func testEachCreateTakesTheSpareMadeBeforeItAndANewOneIsMade() async throws {
        let supervisor = try await start()
        let first = try await supervisor.create(TaskSpec(title: "a", command: .argv(["/bin/true"])))
        let madeSpare = try await adoptedSpare(of: supervisor, besides: [first.taskID])
        let spareID = try XCTUnwrap(madeSpare, "no spare after a create")
        XCTAssertNotEqual(spareID, first.taskID)
        let tasks = directory + "/tasks/"
        func mode(_ path: String) -> mode_t? {
            var info = stat()
            return stat(path, &info) == 0 ? info.st_mode & 0o777 : nil
        }
        for sub in ["tmp", "work"] {
            var info = stat()
            XCTAssertEqual(stat(tasks + spareID + "/" + sub, &info), 0, sub)
            XCTAssertEqual(info.st_mode & 0o777, 0o700, sub)
            XCTAssertEqual(info.st_uid, supervisor.identity.uid, sub)
        }
        // A waiting spare is closed to the task user (no task can reach its successor's directories)…
        XCTAssertEqual(mode(tasks + spareID), 0o700)
        XCTAssertEqual(mode(tasks + first.taskID), 0o711)
        if let firstCgroup = first.cgroupPath {
            let spareCgroup = URL(fileURLWithPath: firstCgroup).deletingLastPathComponent().appendingPathComponent(spareID).path
            XCTAssertTrue(FileManager.default.fileExists(atPath: spareCgroup + "/cgroup.procs"))
        }

        let second = try await supervisor.create(
            TaskSpec(title: "b", command: .shell("pwd; echo $TMPDIR; cat /proc/self/cgroup")))
        XCTAssertEqual(second.taskID, spareID, "the create did not take the spare")
        XCTAssertEqual(mode(tasks + spareID), 0o711)  // …and opened once a create takes it
        _ = try await supervisor.wait(for: second.taskID, timeout: .seconds(10))
        let lines = try await supervisor.output(of: second.taskID, stream: .stdout).text.split(separator: "\n")
        XCTAssertEqual(lines.first.map(String.init), tasks + spareID + "/work")
        XCTAssertEqual(lines.dropFirst().first.map(String.init), tasks + spareID + "/tmp")
        if second.cgroupPath != nil {
            XCTAssertTrue(lines.contains { $0.hasPrefix("0::") && $0.hasSuffix("/" + spareID) }, "\(lines)")
        }

        // A task with a cwd of its own does not keep the spare's unused work directory.
        let madeNext = try await adoptedSpare(of: supervisor, besides: [spareID])
        let nextID = try XCTUnwrap(madeNext)
        XCTAssertNotEqual(nextID, spareID)
        let elsewhere = try await supervisor.create(TaskSpec(title: "c", command: .argv(["/bin/true"]), workingDirectory: "/"))
        XCTAssertEqual(elsewhere.taskID, nextID)
        XCTAssertEqual(elsewhere.workingDirectory, "/")
        XCTAssertFalse(FileManager.default.fileExists(atPath: tasks + nextID + "/work"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: tasks + nextID + "/tmp"))

        // Shutdown removes the spare no create took, and its marker.
        let madeUnused = try await adoptedSpare(of: supervisor, besides: [nextID])
        let unused = try XCTUnwrap(madeUnused)
        await supervisor.shutdown()
        self.supervisor = nil
        XCTAssertFalse(FileManager.default.fileExists(atPath: tasks + unused))
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/spare-task"))
        if let firstCgroup = first.cgroupPath {
            let spareCgroup = URL(fileURLWithPath: firstCgroup).deletingLastPathComponent().appendingPathComponent(unused).path
            XCTAssertFalse(FileManager.default.fileExists(atPath: spareCgroup))
        }
    }

    /// A task of the task user tries to plant a file in the waiting spare's temp directory (the next task's home):
    /// refused, while its own temp directory takes one.
    func testATaskCannotReachTheSpareWaitingAfterIt() async throws {
        let supervisor = try await start()
        try XCTSkipUnless(supervisor.identity.changesUser, "tasks run as this server's own user: they own the spare too")
        let planter = try await supervisor.create(
            TaskSpec(
                title: "plant",
                command: .shell(
                    #"while [ ! -e "$TMPDIR/go" ]; do sleep 0.01; done; touch "$(cat "$TMPDIR/target")"; r=$?; touch "$TMPDIR/own"; exit $r"#
                )))
        let made = try await adoptedSpare(of: supervisor, besides: [planter.taskID])
        let spareID = try XCTUnwrap(made)
        let tasks = directory + "/tasks/"
        let target = tasks + spareID + "/tmp/.profile"
        try target.write(toFile: tasks + planter.taskID + "/tmp/target", atomically: false, encoding: .utf8)
        try "".write(toFile: tasks + planter.taskID + "/tmp/go", atomically: false, encoding: .utf8)
        let outcome = try await supervisor.wait(for: planter.taskID, timeout: .seconds(10))
        XCTAssertEqual(outcome.task.exitCode, 1, "the spare's directory took a file from another task")
        XCTAssertFalse(FileManager.default.fileExists(atPath: target))
        XCTAssertTrue(FileManager.default.fileExists(atPath: tasks + planter.taskID + "/tmp/own"))
    }

    /// What a crash leaves of a spare goes at the next start; a task the marker names that reached the store stays,
    /// and a marker that is not an id this code writes never names anything to remove.
    func testAStartRemovesOnlyTheSpareACrashLeft() async throws {
        let tasks = directory + "/tasks/"
        var supervisor = try await start()
        let kept = try await supervisor.create(TaskSpec(title: "kept", command: .shell("echo kept")))
        _ = try await supervisor.wait(for: kept.taskID, timeout: .seconds(10))
        await supervisor.shutdown()

        let crashed = "0123456789abcdef0123456789abcdef"
        for sub in ["tmp", "work"] {
            try FileManager.default.createDirectory(atPath: tasks + crashed + "/" + sub, withIntermediateDirectories: true)
        }
        try (crashed + "\n").write(toFile: directory + "/spare-task", atomically: false, encoding: .utf8)
        supervisor = try await start()
        XCTAssertFalse(FileManager.default.fileExists(atPath: tasks + crashed), "the crashed spare is still there")
        await supervisor.shutdown()

        try (kept.taskID + "\n").write(toFile: directory + "/spare-task", atomically: false, encoding: .utf8)
        supervisor = try await start()
        let output = try await supervisor.output(of: kept.taskID, stream: .stdout).text
        XCTAssertEqual(output, "kept\n")
        await supervisor.shutdown()

        let outside = directory + "/outside"
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        // Short, and as long as an id (32 characters) but not hex: neither names anything to remove.
        for marker in ["../outside", "./././././././././././../outside"] {
            try (marker + "\n").write(toFile: directory + "/spare-task", atomically: false, encoding: .utf8)
            supervisor = try await start()
            XCTAssertTrue(FileManager.default.fileExists(atPath: outside), marker)
            await supervisor.shutdown()
        }
        self.supervisor = nil
    }

    func testRestartAfterKillMinus9MarksTasksFailedAndKeepsEverything() async throws {
        for cgroups in [true, false] {
            try await restartAfterCrash(cgroups: cgroups)
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    private func restartAfterCrash(cgroups: Bool) async throws {
        let marker = "corral-crash-\(UInt32.random(in: 0...UInt32.max))"
        let host = Process()
        host.executableURL = try corralExecutable()
        host.arguments =
            ["supervise", "--state-dir", directory, "--shell"] + (cgroups ? [] : ["--no-cgroup"])
            + ["--", "echo before-crash; \(sleeper(marker)) & \(sleeper(marker))"]
        let pipe = Pipe()
        host.standardOutput = pipe
        try host.run()
        let firstLine = try XCTUnwrap(readLine(from: pipe.fileHandleForReading))
        let started = try JSONDecoder.runtime.decode(TaskRecord.self, from: Data(firstLine.utf8))
        try await Task.sleep(for: .milliseconds(300))
        XCTAssertEqual(processesWithArgument(marker).count, 2)
        let madeSpare = try await readySpare(besides: [started.taskID])
        let spareID = try XCTUnwrap(madeSpare, "the crashed supervisor made no spare")
        kill(host.processIdentifier, SIGKILL)
        host.waitUntilExit()
        let spareCgroup = started.cgroupPath.map {
            URL(fileURLWithPath: $0).deletingLastPathComponent().appendingPathComponent(spareID).path
        }
        if let spareCgroup { XCTAssertTrue(FileManager.default.fileExists(atPath: spareCgroup)) }

        let supervisor = try await start(cgroups: cgroups)
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/tasks/" + spareID), "the crashed spare is left")
        if let spareCgroup { XCTAssertFalse(FileManager.default.fileExists(atPath: spareCgroup)) }
        let recovered = try await supervisor.task(started.taskID)
        XCTAssertEqual(recovered.status, .failed)
        XCTAssertEqual(recovered.lastError, "supervisor stopped while the task was running")
        try await Task.sleep(for: .milliseconds(100))
        XCTAssertEqual(processesWithArgument(marker), [], "a process of the crashed supervisor's task survived")
        let events = try await supervisor.events(of: started.taskID).map(\.message)
        XCTAssertEqual(events.first, "task created")
        XCTAssertTrue(events.contains("task started"))
        XCTAssertEqual(events.last, "supervisor stopped while the task was running")
        let output = try await supervisor.output(of: started.taskID, stream: .stdout).text
        XCTAssertEqual(output, "before-crash\n")
        if let cgroup = started.cgroupPath {
            XCTAssertFalse(FileManager.default.fileExists(atPath: cgroup))
        }
        await supervisor.shutdown()
        self.supervisor = nil
    }

    // MARK: hygiene

    func testThousandTasksLeaveNoDescriptorsThreadsOrZombies() async throws {
        let supervisor = try await start()
        func runBatch(_ count: Int) async throws {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<count {
                    if index >= 8 { try await group.next() }
                    group.addTask {
                        let task = try await supervisor.create(
                            TaskSpec(title: "t", command: .argv(["/bin/true"]), outputLimitBytes: 4096))
                        let outcome = try await supervisor.wait(for: task.taskID, timeout: .seconds(30))
                        XCTAssertEqual(outcome.task.status, .completed)
                    }
                }
                try await group.waitForAll()
            }
        }
        try await runBatch(50)  // warm-up: lazily created pools and caches
        // Counted with the next create's spare made: it holds four descriptors (its cgroup's), and one made late
        // after the warm-up showed as a leak once.
        _ = try await adoptedSpare(of: supervisor, besides: [])
        let fdsBefore = corral_count_open_fds()
        let threadsBefore = corral_count_threads()
        try await runBatch(1000)
        _ = try await adoptedSpare(of: supervisor, besides: [])
        var fdsAfter = corral_count_open_fds()
        var threadsAfter = corral_count_threads()
        for _ in 0..<50 where fdsAfter > fdsBefore || threadsAfter > threadsBefore {
            try await Task.sleep(for: .milliseconds(100))
            fdsAfter = corral_count_open_fds()
            threadsAfter = corral_count_threads()
        }
        XCTAssertLessThanOrEqual(fdsAfter, fdsBefore, "descriptors leaked")
        // A thread per task would show as hundreds. Up to two more are the runtime's own pools growing late (CI once
        // saw 13 after 12, with Dispatch starting a worker during the batch and keeping it).
        XCTAssertLessThanOrEqual(threadsAfter, threadsBefore + 2, "threads leaked")
        // No zombie children: every child was reaped.
        let zombies = ProcessTable.allPIDs().compactMap(ProcessTable.status(of:))
            .filter { $0.parentPID == getpid() && $0.state == "Z" }
        XCTAssertEqual(zombies, [])
    }

    // MARK: helpers

    /// A shell that sleeps, with `marker` as its $0 so that it can be found in /proc (the `; true` keeps the shell
    /// from exec-ing sleep).
    private func sleeper(_ marker: String) -> String {
        "sh -c 'sleep 300; true' \(marker)"
    }

    private func processesWithArgument(_ marker: String) -> [pid_t] {
        ProcessTable.allPIDs().filter { pid in
            guard let cmdline = readSmallFile("/proc/\(pid)/cmdline") else { return false }
            return cmdline.split(separator: "\0").contains { $0 == marker }
                && ProcessTable.status(of: pid)?.isGone == false
        }
    }

    private func readLine(from handle: FileHandle) -> String? {
        var data = Data()
        while true {
            let byte = handle.readData(ofLength: 1)
            if byte.isEmpty { return data.isEmpty ? nil : String(decoding: data, as: UTF8.self) }
            if byte == Data("\n".utf8) { return String(decoding: data, as: UTF8.self) }
            data.append(byte)
        }
    }
}

/// The `corral` executable built beside the test bundle.
func corralExecutable() throws -> URL {
    let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    let candidate = executable.deletingLastPathComponent().appendingPathComponent("corral")
    guard FileManager.default.isExecutableFile(atPath: candidate.path) else {
        throw RuntimeError.invalidArgument("corral executable not found at \(candidate.path); run `swift build` first")
    }
    return candidate
}

final class TaskRecordCodingTests: XCTestCase {
    /// The hand-written JSON of a record must decode to the same record as the Codable form.
    /// The text the store writes is the record's JSON value written with sorted keys, byte for byte, whatever is set.
    func testRecordTextIsItsValueWritten() {
        var generator = SystemRandomNumberGenerator()
        func maybe<T>(_ value: T) -> T? { Bool.random(using: &generator) ? value : nil }
        for round in 0..<300 {
            let now = Date(timeIntervalSince1970: 1_800_000_000 + Double(round) * 1.001)
            let record = TaskRecord(
                taskID: Identifiers.make(), title: ["t", "q \"x\"\n\u{1}", "é \u{2028}", ""][round % 4],
                kind: round % 2 == 0 ? "command" : "wait_for_file", status: TaskStatus.allCases[round % TaskStatus.allCases.count],
                createdAt: now, updatedAt: now.addingTimeInterval(1), startedAt: maybe(now), completedAt: maybe(now),
                timeoutMilliseconds: maybe(Int.random(in: 0...Int.max, using: &generator)),
                command: round % 3 == 0 ? [] : ["/bin/sh", "-c", "echo \\ \"é\""], workingDirectory: "/w/\(round)",
                pid: maybe(Int32.random(in: 1...Int32.max, using: &generator)),
                processStartTime: maybe(UInt64.random(in: 0...UInt64.max, using: &generator)),
                exitCode: maybe(Int32.random(in: Int32.min...Int32.max, using: &generator)), signal: maybe(9),
                lastError: maybe("exited \t with status 3"), cgroupPath: maybe("/sys/fs/cgroup/x"),
                protections: round % 2 == 0 ? [] : ["pidfd", "cgroup"], outputLimitBytes: round,
                stdoutBytes: Int64(round) * 7, stderrBytes: -1, cpuUserMicroseconds: maybe(Int64.max),
                cpuSystemMicroseconds: maybe(Int64.min), maxResidentKiB: maybe(0), runningMilliseconds: Int64(round),
                metadata: round % 5 == 0 ? .null : ["goal": "g", "z": [1, 2.5, true], "a": ["b": .null]])
            var full = record
            full.uid = maybe(65530)
            full.gid = maybe(65530)
            full.peakMemoryBytes = maybe(1 << 40)
            full.ioReadBytes = maybe(3)
            full.ioWriteBytes = maybe(4)
            XCTAssertEqual(full.jsonText, full.jsonValue.jsonString(), "round \(round)")
        }
    }

    func testHandWrittenJSONRoundTrips() throws {
        let now = Date(timeIntervalSince1970: 1_800_000_000.5)
        let record = TaskRecord(
            taskID: "0123456789abcdef0123456789abcdef", title: "t \"q\"\n", kind: "command", status: .failed,
            createdAt: now, updatedAt: now, startedAt: now, completedAt: nil, timeoutMilliseconds: 5,
            command: ["/bin/sh", "-c", "echo é"], workingDirectory: "/w", pid: 42, processStartTime: 123_456_789,
            exitCode: 3, signal: nil, lastError: "exited with status 3", cgroupPath: nil, protections: ["pidfd"],
            outputLimitBytes: 1024, stdoutBytes: 7, stderrBytes: 0, cpuUserMicroseconds: 10,
            cpuSystemMicroseconds: nil, maxResidentKiB: 2048, runningMilliseconds: 99,
            metadata: ["goal": "g", "tags": ["a"], "n": 1.5])
        let text = record.jsonValue.jsonString()
        let decoded = try JSONDecoder.runtime.decode(TaskRecord.self, from: Data(text.utf8))
        XCTAssertEqual(decoded, record)
        // The hand-written reader gives the same record; a record missing a required field is not read.
        XCTAssertEqual(TaskRecord(json: try JSONValue.parse(text)), record)
        var missing = try XCTUnwrap(try JSONValue.parse(text).objectValue)
        missing["status"] = nil
        XCTAssertNil(TaskRecord(json: .object(missing)))
        // The same keys and values as the Codable form, which leaves out nil fields where this writes null.
        let viaCodable = try JSONValue.parse(try JSONEncoder.runtime.encode(record))
        let handWritten = try XCTUnwrap(try JSONValue.parse(text).objectValue).filter { !$0.value.isNull }
        XCTAssertEqual(JSONValue.object(handWritten), viaCodable)
    }
}

/// Tasks under a sandbox profile: the runtime prepares it per task and the kernel enforces it.
final class SandboxedTaskTests: XCTestCase {
    var directory = ""
    var supervisor: TaskSupervisor?

    override func setUp() async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("corral-sbx-\(UUID().uuidString)").path
        supervisor = try await TaskSupervisor.start(.init(stateDirectory: directory + "/state", graceMilliseconds: 300))
        // Tasks run as the supervisor's task user: the test's scratch directory is theirs to write.
        if let identity = supervisor?.identity { chown(directory, identity.uid, identity.gid) }
    }

    override func tearDown() async throws {
        await supervisor?.shutdown()
        try? FileManager.default.removeItem(atPath: directory)
    }

    func testTaskRunsUnderTheProfileWithLandlock() async throws {
        let supervisor = try XCTUnwrap(supervisor)
        let outside = directory + "/outside"
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        let task = try await supervisor.create(
            TaskSpec(
                title: "confined",
                command: .shell(
                    "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; echo inside > ./kept && cat ./kept; "
                        + "echo escape > \(outside)/x && echo WROTE-OUTSIDE; echo tmp > $TMPDIR/t && echo tmp-ok; "
                        + "kill -0 \(getpid()) 2>/dev/null && echo SIGNALLED-SUPERVISOR; "
                        + "sleep 5 & kill $! && echo own-child-signalled"),
                sandbox: BuiltinProfiles.default))
        XCTAssertTrue(task.protections.contains("seccomp:default"), "\(task.protections)")
        let outcome = try await supervisor.wait(for: task.taskID, timeout: .seconds(20))
        let text = try await supervisor.output(of: task.taskID, stream: .stdout).text
        XCTAssertTrue(text.contains("Seccomp:\t2"), text)
        XCTAssertTrue(text.contains("NoNewPrivs:\t1"), text)
        XCTAssertTrue(text.contains("inside"), text)
        XCTAssertTrue(text.contains("tmp-ok"), text)
        XCTAssertTrue(text.contains("own-child-signalled"), text)
        if Landlock.abiVersion >= 6 {
            XCTAssertFalse(text.contains("SIGNALLED-SUPERVISOR"), "a sandboxed task could signal the supervisor")
        }
        if task.protections.contains(where: { $0.hasPrefix("landlock:abi") }) {
            XCTAssertFalse(text.contains("WROTE-OUTSIDE"), text)
            XCTAssertFalse(FileManager.default.fileExists(atPath: outside + "/x"))
        }
        XCTAssertEqual(outcome.task.status, .completed)
    }

    func testKillBySeccompNamesTheSandbox() async throws {
        let supervisor = try XCTUnwrap(supervisor)
        // A 32-bit system call from a 64-bit program: the filter knows only the native architecture, so the kernel
        // kills the process (libseccomp's bad-arch action). The program refuses to run without a filter on itself.
        let source = directory + "/int80.c"
        let binary = directory + "/int80"
        try """
            #include <stdio.h>
            #include <string.h>
            int main(void) {
                FILE *f = fopen("/proc/self/status", "r"); char line[256]; int filtered = 0;
                while (f && fgets(line, sizeof line, f)) if (strncmp(line, "Seccomp:\\t2", 10) == 0) filtered = 1;
                if (!filtered) { fprintf(stderr, "refusing to run without a seccomp filter\\n"); return 2; }
                long ret; __asm__ volatile("int $0x80" : "=a"(ret) : "a"(20) : "memory");
                printf("int 0x80 returned %ld\\n", ret); return 0;
            }
            """.write(toFile: source, atomically: true, encoding: .utf8)
        let cc = try await supervisor.create(
            TaskSpec(title: "cc", command: .argv(["cc", "-O0", "-o", binary, source])))
        let compiled = try await supervisor.wait(for: cc.taskID, timeout: .seconds(60))
        XCTAssertEqual(compiled.task.status, .completed, compiled.task.lastError ?? "")

        let unconfined = try await supervisor.create(TaskSpec(title: "plain", command: .argv([binary])))
        let refused = try await supervisor.wait(for: unconfined.taskID, timeout: .seconds(10))
        XCTAssertEqual(refused.task.exitCode, 2, "the probe must refuse to run unfiltered")

        let task = try await supervisor.create(
            TaskSpec(title: "int80", command: .argv([binary]), sandbox: BuiltinProfiles.default))
        let outcome = try await supervisor.wait(for: task.taskID, timeout: .seconds(10))
        XCTAssertEqual(outcome.task.status, .failed)
        XCTAssertEqual(outcome.task.signal, SIGSYS)
        XCTAssertEqual(
            outcome.task.lastError,
            "killed by signal 31 (SIGSYS): the sandbox's seccomp filter stopped a forbidden system call")
    }

    func testLandlockDeniesWhatTheProfileDoesNotAllow() async throws {
        let supervisor = try XCTUnwrap(supervisor)
        try XCTSkipIf(Landlock.abiVersion == 0, "no Landlock in this kernel")
        // Nothing readable but a path that does not exist: not even the program can be executed.
        var profile = BuiltinProfiles.default
        profile.landlock?.readOnly = ["/nonexistent-corral-path"]
        let task = try await supervisor.create(
            TaskSpec(title: "bad", command: .argv(["/bin/true"]), sandbox: profile))
        XCTAssertEqual(task.status, .failed)
        XCTAssertEqual(task.lastError, "failed to start: cannot execute /bin/true: Permission denied")
    }
}

final class TimestampTests: XCTestCase {
    /// Formatting a parsed timestamp gives the same text back (events read from SQLite compare equal).
    func testFormatParseRoundTrip() throws {
        for milliseconds in [0, 1, 59, 60, 61, 499, 500, 998, 999] {
            let text = "2026-11-21T19:11:46.\(String(format: "%03d", milliseconds))Z"
            XCTAssertEqual(Timestamp.format(try XCTUnwrap(Timestamp.parse(text))), text)
        }
    }

    /// The hand-written format agrees with the `String(format:)` one it replaced (to the nearest millisecond) and
    /// the fast parse with Foundation's ISO 8601 parser, on random instants before and after 1970; the fast path
    /// refuses what `format` never writes, leaving it to Foundation.
    func testHandWrittenTimestampsAgreeWithFoundation() throws {
        var generator = SystemRandomNumberGenerator()
        let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        func reference(_ date: Date) -> String {
            let milliseconds = Int64((date.timeIntervalSince1970 * 1000).rounded())
            var seconds = time_t((Double(milliseconds) / 1000).rounded(.down))
            var parts = tm()
            gmtime_r(&seconds, &parts)
            let fraction = Int(milliseconds - Int64(seconds) * 1000)
            return String(
                format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
                Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), fraction)
        }
        func milliseconds(_ date: Date?) -> Int64? { date.map { Int64(($0.timeIntervalSince1970 * 1000).rounded()) } }
        // Years 0001 to 9999 (gmtime_r's whole range of four-digit years), and the days around leap days and
        // century years, where the calendar arithmetic would go wrong first.
        let edges: [Int64] = [
            0, -1, 1, 86_399_999, 86_400_000, -86_400_000, -86_400_001, 951_782_400_000, 951_868_799_999,
            951_868_800_000, -2_203_891_200_001, -2_203_891_200_000, 4_107_542_399_999, 4_107_542_400_000,
            -62_135_596_800_000, 253_402_300_799_999, 68_169_600_000 - 1, 1_709_164_800_000,
        ]
        let randoms = (0..<20_000).map { _ in
            Int64.random(in: -62_135_596_800_000...253_402_300_799_999, using: &generator)
        }
        for value in edges + randoms {
            let date = Date(timeIntervalSince1970: Double(value) / 1000)
            let text = Timestamp.format(date)
            XCTAssertEqual(text, reference(date), "\(value)")
            XCTAssertEqual(milliseconds(Timestamp.parseFormatted(text)), value, text)
            if (1970...2100).contains(Int(text.prefix(4)) ?? 0) {  // Foundation's parser is slow: its own era only
                XCTAssertEqual(milliseconds(Timestamp.parseFormatted(text)), milliseconds(try style.parse(text)), text)
            }
        }
        // A leap second (:60) and year 0 are refused on both paths, as Python refuses them (timegm took both).
        for invalid in ["2026-02-30T00:00:00.000Z", "2026-13-01T00:00:00.000Z", "2026-01-01T24:00:00.000Z", "0826-11-21T19:11:60.123Z", "0000-02-29T23:59:50.123Z",
                        "2026-01-01T00:00:00.00Z", "2026-01-01 00:00:00.000Z", "2026-01-01T00:00:00.000+", "x"] {
            XCTAssertNil(Timestamp.parseFormatted(invalid), invalid)
        }
        XCTAssertEqual(Timestamp.parse("2026-11-21T19:11:46Z"), Date(timeIntervalSince1970: 1795288306))
    }

    /// The forms Python's `fromisoformat` reads (the Allcanuse server's parser), each the instant Foundation gives for
    /// the same time; and the texts Foundation took wrongly (a 12-digit year became year 0, February 30th March 2nd,
    /// an offset of 99 hours an offset) refused.
    func testISO8601IsReadAsPythonReadsItAndImpossibleTimesAreRefused() throws {
        let base = 1_795_288_306.0  // 2026-11-21T19:11:46Z
        let cases: [(String, Double)] = [
            ("2026-11-21T19:11:46Z", base), ("2026-11-21t19:11:46z", base), ("2026-11-21 19:11:46", base),
            ("2026-11-21T19:11:46+00:00", base), ("2026-11-21T21:11:46+02:00", base), ("2026-11-21T21:11:46+0200", base),
            ("2026-11-21T21:11:46+02", base), ("2026-11-21T14:41:46-04:30", base), ("2026-11-21T19:11:46.5Z", base + 0.5),
            ("2026-11-21T19:11:46.123456789Z", base + 0.123456789), ("2026-11-21T19:11Z", base - 46),
            ("2026-11-21", base - 19 * 3600 - 11 * 60 - 46), ("2024-02-29T00:00:00Z", 1_709_164_800),
            ("0001-01-01T00:00:00Z", -62_135_596_800), ("9999-12-31T23:59:59Z", 253_402_300_799),
        ]
        for (text, seconds) in cases {
            let parsed = try XCTUnwrap(Timestamp.parseISO8601(text), text)
            XCTAssertEqual(parsed.timeIntervalSince1970, seconds, accuracy: 1e-6, text)
        }
        let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        XCTAssertEqual(Timestamp.parse("2026-11-21T21:11:46.250+02:00"), try style.parse("2026-11-21T21:11:46.250+02:00"))
        for invalid in [
            "292277026596-12-04T15:30:07Z", "2026-02-30T00:00:00Z", "2025-02-29T00:00:00Z", "1900-02-29", "2026-11-21T19:11:46+99:00",
            "2026-11-21T19:11:46+02:60", "2026-11-21T24:00:00Z", "2026-11-21T19:60:00Z", "2026-11-21T19:11:60Z", "0000-01-01",
            "2026-13-01", "2026-00-10", "2026-11-21T", "2026-11-21T19", "2026-11-21T19:11:46.", "2026-11-21T19:11:46.1234567890Z",
            "2026-11-21T19:11:46Zx", "2026-11-21T19:11:46 Z", "+2026-11-21", "2026-1-21", "", "now",
        ] {
            XCTAssertNil(Timestamp.parse(invalid), invalid)
        }
    }
}

/// Runs its jobs on the task pool and records what it is asked to stay awake for.
private final class WakefulCountingExecutor: WakefulExecutor, Sendable {
    private let asked = Mutex<[Duration]>([])
    private let ended = Mutex(0)
    var requests: [Duration] { asked.withLock { $0 } }
    var ends: Int { ended.withLock { $0 } }

    func enqueue(_ job: consuming ExecutorJob) { globalConcurrentExecutor.enqueue(job) }
    func stayAwake(for duration: Duration) { asked.withLock { $0.append(duration) } }
    func endStayingAwake() { ended.withLock { $0 += 1 } }
}

/// allcanuse-mock's stdio loop as the exits' executor and their watcher (its own conformance is declared in
/// AllcanuseMockServer), counting what it is asked.
private final class LoopWatcher: DescriptorWatchingExecutor, Sendable {
    let loop: ReadLoop
    private let watches = Mutex(0)
    private let readable = Mutex<[UInt]>([])
    var watching: Int { watches.withLock { $0 } }
    /// The threads the watched descriptors' handlers ran on, one entry per call.
    var readableThreads: [UInt] { readable.withLock { $0 } }

    init?() {
        guard let loop = ReadLoop() else { return nil }
        self.loop = loop
    }

    func enqueue(_ job: consuming ExecutorJob) { loop.enqueue(job) }

    func watch(_ fd: Int32, onReadable: @escaping @Sendable () -> Void, onEnd: @escaping @Sendable () -> Void) -> Bool {
        let taken = loop.watch(fd, onReadable: { [self] in
            readable.withLock { $0.append(UInt(pthread_self())) }
            onReadable()
        }, onEnd: onEnd)
        if taken { watches.withLock { $0 += 1 } }
        return taken
    }

    func unwatch(_ fd: Int32) {
        watches.withLock { $0 -= 1 }
        loop.unwatch(fd)
    }
}

/// Counts the jobs it is given and runs them on the task pool.
private final class CountingExecutor: TaskExecutor, Sendable {
    private let count = Mutex(0)
    var jobs: Int { count.withLock { $0 } }

    func enqueue(_ job: consuming ExecutorJob) {
        count.withLock { $0 += 1 }
        globalConcurrentExecutor.enqueue(job)
    }
}


/// A step of a request's answer on an actor of its own, as the mock's services are.
private actor Hop {
    func answer(_ outcome: WaitOutcome) -> WaitOutcome { outcome }
}
