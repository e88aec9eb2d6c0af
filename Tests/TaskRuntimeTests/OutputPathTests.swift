import CCorral
import Foundation
import Synchronization
import XCTest

@testable import TaskRuntime

/// The way a task's output takes to its files: head files opened ahead with the spare, and the reactor's pass over
/// what one wake-up brings.
final class OutputPathTests: XCTestCase {
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

    /// The paths this process has open under `prefix` (its descriptors, read back through /proc).
    private func openPaths(under prefix: String) -> Set<String> {
        let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        var paths: Set<String> = []
        for name in descriptors {
            if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + name),
                target.hasPrefix(prefix)
            {
                paths.insert(target)
            }
        }
        return paths
    }

    /// The spare's id, once the supervisor holds one that is none of `taken` (nil after 5 s).
    private func spare(of supervisor: TaskSupervisor, besides taken: Set<String>) async throws -> String? {
        for _ in 0..<500 {
            if let id = await supervisor.spareTaskID, !taken.contains(id) { return id }
            try await Task.sleep(for: .milliseconds(10))
        }
        return nil
    }

    func testASpareKeepsItsHeadFilesOpenForItsTasksOutputAndNothingIsLeftOpenAfter() async throws {
        let supervisor = try await TaskSupervisor.start(.init(stateDirectory: directory, useCgroups: false))
        self.supervisor = supervisor
        let first = try await supervisor.create(TaskSpec(title: "a", command: .argv(["/bin/true"])))
        _ = try await supervisor.wait(for: first.taskID, timeout: .seconds(10))
        let madeSpare = try await spare(of: supervisor, besides: [first.taskID])
        let spareID = try XCTUnwrap(madeSpare, "no spare")
        let heads = Set(["stdout", "stderr"].map { directory + "/tasks/\(spareID)/\($0).head" })
        XCTAssertEqual(openPaths(under: directory + "/tasks/\(spareID)/"), heads, "the spare's heads are not held open")

        let task = try await supervisor.create(
            TaskSpec(title: "b", command: .shell("printf out; printf err >&2")))
        XCTAssertEqual(task.taskID, spareID)
        let final = try await supervisor.wait(for: task.taskID, timeout: .seconds(10))
        XCTAssertEqual(final.task.status, .completed)
        let out = try await supervisor.output(of: task.taskID, stream: .stdout).text
        let err = try await supervisor.output(of: task.taskID, stream: .stderr).text
        XCTAssertEqual(out, "out")
        XCTAssertEqual(err, "err")
        XCTAssertEqual(final.task.stdoutBytes, 3)
        XCTAssertEqual(final.task.stderrBytes, 3)
        XCTAssertEqual(openPaths(under: directory + "/tasks/\(spareID)/"), [], "an ended task's heads stay open")

        // A spare no create took is closed with the supervisor.
        let nextSpare = try await spare(of: supervisor, besides: [first.taskID, spareID])
        let next = try XCTUnwrap(nextSpare, "no next spare")
        XCTAssertEqual(openPaths(under: directory + "/tasks/\(next)/").count, 2)
        await supervisor.shutdown()
        self.supervisor = nil
        XCTAssertEqual(openPaths(under: directory + "/tasks/"), [], "task files left open after the shutdown")
    }

    func testHeadFilesTakenOnceAndTheRestClosedWithTheirHolder() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var heads: OutputHeadFiles? = try OutputLayout.createEmptyHeads(in: directory)
        let stdout = try XCTUnwrap(heads?.take(.stdout))
        XCTAssertGreaterThanOrEqual(stdout, 0)
        XCTAssertEqual(heads?.take(.stdout), -1, "a head file was given twice")
        // Opened for appending: what is written lands at the end whatever the offset.
        XCTAssertEqual(write(stdout, "ab", 2), 2)
        XCTAssertEqual(lseek(stdout, 0, SEEK_SET), 0)
        XCTAssertEqual(write(stdout, "c", 1), 1)
        close(stdout)
        XCTAssertEqual(try String(contentsOfFile: directory + "/stdout.head", encoding: .utf8), "abc")
        XCTAssertEqual(openPaths(under: directory), [directory + "/stderr.head"])
        heads = nil
        XCTAssertEqual(openPaths(under: directory), [], "the untaken head file was not closed")
        // Made only once: a second spare in the same place is refused, not truncated.
        XCTAssertThrowsError(try OutputLayout.createEmptyHeads(in: directory))
        XCTAssertEqual(openPaths(under: directory), [], "a failed creation left a descriptor open")
    }

    /// One wake-up can bring several descriptors; each handler is looked up when its turn comes, so one that
    /// deregisters a later descriptor (a task's exit closing its pipes) is never followed by that descriptor's.
    func testAHandlerThatDeregistersALaterDescriptorInTheSamePassStopsIt() async throws {
        let reactor = try Reactor()
        var first: [Int32] = [-1, -1]
        var second: [Int32] = [-1, -1]
        XCTAssertEqual(corral_pipe_cloexec(&first), 0)
        XCTAssertEqual(corral_pipe_cloexec(&second), 0)
        let calls = Mutex<[String]>([])
        let secondRead = second[0]
        let firstRead = first[0]
        try reactor.register(firstRead, writerRunsOn: true) { _ in
            var byte: UInt8 = 0
            _ = read(firstRead, &byte, 1)
            reactor.deregister(secondRead)
            calls.withLock { $0.append("first") }
        }
        try reactor.register(secondRead, writerRunsOn: true) { _ in
            calls.withLock { $0.append("second") }
        }
        // Both readable before the reactor can look (or the first alone: its handler still runs first).
        XCTAssertEqual(write(first[1], "x", 1), 1)
        XCTAssertEqual(write(second[1], "y", 1), 1)
        for _ in 0..<200 where calls.withLock({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(5)) }
        try await Task.sleep(for: .milliseconds(50))
        XCTAssertEqual(calls.withLock { $0 }, ["first"])
        reactor.deregister(firstRead)
        await reactor.shutdown()
        for fd in first + second { close(fd) }
    }
}
