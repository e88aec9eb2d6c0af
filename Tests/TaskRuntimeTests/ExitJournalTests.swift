import Foundation
import GRDB
import XCTest

@testable import TaskRuntime

/// A task's end is told to its waiters before the store commits it (`ExitJournal`, `EndCommitQueue`): these check
/// that nothing reads the store older than what a waiter was told, and that a crash between the answer and the
/// commit loses nothing.
final class ExitJournalTests: XCTestCase {
    var directory = ""

    override func setUp() async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("corral-test-\(UUID().uuidString)")
            .path
    }

    override func tearDown() async throws {
        try? FileManager.default.removeItem(atPath: directory)
        try? FileManager.default.removeItem(atPath: directory + "-crashed")
    }

    /// The status the store file itself holds for a task, read by a connection of the test's own.
    private func storedStatus(_ taskID: String, in stateDirectory: String) throws -> String? {
        let queue = try DatabaseQueue(path: stateDirectory + "/tasks.sqlite")
        return try queue.read { db in
            try String.fetchOne(db, sql: "SELECT status FROM tasks WHERE task_id = ?", arguments: [taskID])
        }
    }

    private func journal(in stateDirectory: String) throws -> String {
        try String(contentsOfFile: stateDirectory + "/exits.journal", encoding: .utf8)
    }

    /// A supervisor whose commit job is held, and a task of `command` run to its end: the waiter's outcome and the
    /// end's event as the waiter was told it.
    private func toldEnd(_ command: String) async throws -> (TaskSupervisor, TaskRecord, WaitOutcome, TaskEvent) {
        let supervisor = try await TaskSupervisor.start(.init(stateDirectory: directory))
        await supervisor.holdCommitJob(true)
        let task = try await supervisor.create(TaskSpec(title: "told", command: .shell(command)))
        let outcome = try await supervisor.wait(for: task.taskID, timeout: .seconds(10))
        let lastEvent = try await supervisor.lastEvent(of: task.taskID)
        return (supervisor, task, outcome, try XCTUnwrap(lastEvent))
    }

    func testAWaiterIsToldBeforeTheCommitAndNoReadSeesTheStoreOlder() async throws {
        let (supervisor, task, outcome, told) = try await toldEnd("exit 3")
        XCTAssertEqual(outcome.task.status, .failed)
        XCTAssertEqual(outcome.task.exitCode, 3)
        XCTAssertEqual(told.type, "error")

        // Told, not committed: the store file still says running, and the journal holds the end.
        XCTAssertEqual(try storedStatus(task.taskID, in: directory), "running")
        XCTAssertTrue(try journal(in: directory).contains(told.eventID))

        // Any use of the store commits it first: a listing shows the end, and so does the file.
        let failed = try await supervisor.tasks(statuses: [.failed])
        XCTAssertEqual(failed.tasks.map(\.taskID), [task.taskID])
        XCTAssertEqual(failed.total, 1)
        XCTAssertEqual(try storedStatus(task.taskID, in: directory), "failed")
        let events = try await supervisor.events(of: task.taskID)
        XCTAssertEqual(events.last?.eventID, told.eventID)
        XCTAssertEqual(events.last?.sequence, told.sequence)
        XCTAssertEqual(events.filter { $0.eventID == told.eventID }.count, 1)
        // The numbers go on after the one the waiter was told.
        let note = try await supervisor.appendEvent(to: task.taskID, message: "after the end")
        XCTAssertEqual(note.sequence, told.sequence + 1)

        // A second end, left pending until the shutdown: committed then, and the journal emptied.
        let second = try await supervisor.create(TaskSpec(title: "second", command: .argv(["/bin/true"])))
        _ = try await supervisor.wait(for: second.taskID, timeout: .seconds(10))
        XCTAssertEqual(try storedStatus(second.taskID, in: directory), "running")
        await supervisor.shutdown()
        XCTAssertEqual(try storedStatus(second.taskID, in: directory), "completed")
        XCTAssertEqual(try journal(in: directory), "")
    }

    func testAStartCommitsTheEndsACrashLeftJournaled() async throws {
        let (supervisor, task, outcome, told) = try await toldEnd("echo done")
        XCTAssertEqual(outcome.task.status, .completed)

        // The files as a crash right after the answer leaves them (nothing writes meanwhile: the commit is held),
        // and a torn last line, as a crash in the middle of a journal write leaves one.
        let crashed = directory + "-crashed"
        try FileManager.default.createDirectory(atPath: crashed, withIntermediateDirectories: true)
        for name in ["tasks.sqlite", "tasks.sqlite-wal", "exits.journal"]
        where FileManager.default.fileExists(atPath: directory + "/" + name) {
            try FileManager.default.copyItem(atPath: directory + "/" + name, toPath: crashed + "/" + name)
        }
        XCTAssertEqual(try storedStatus(task.taskID, in: crashed), "running")
        let torn = try FileHandle(forWritingTo: URL(fileURLWithPath: crashed + "/exits.journal"))
        try torn.seekToEnd()
        try torn.write(contentsOf: Data("{\"event\":{\"data\":{\"previous_st".utf8))
        try torn.close()
        await supervisor.shutdown()

        let restarted = try await TaskSupervisor.start(.init(stateDirectory: crashed))
        let recovered = try await restarted.task(task.taskID)
        XCTAssertEqual(recovered.status, .completed, "the start marked the told end \(recovered.status)")
        XCTAssertEqual(recovered.exitCode, 0)
        XCTAssertEqual(recovered.stdoutBytes, 5)
        let events = try await restarted.events(of: task.taskID)
        XCTAssertEqual(events.last?.eventID, told.eventID)
        XCTAssertEqual(events.last?.sequence, told.sequence)
        XCTAssertEqual(events.last?.message, told.message)
        XCTAssertFalse(events.contains { $0.message.hasPrefix("supervisor stopped") })
        XCTAssertEqual(try journal(in: crashed), "")
        let next = try await restarted.appendEvent(to: task.taskID, message: "after the restart")
        XCTAssertGreaterThan(next.sequence, told.sequence)
        await restarted.shutdown()
    }

    /// A commit that fails (the store refuses writes for a while) is tried again at the next use of the store: the
    /// end the waiter was told reaches the store in this run, not only after a restart.
    func testAnEndWhoseCommitFailedIsCommittedOnceTheStoreTakesWritesAgain() async throws {
        let (supervisor, task, outcome, told) = try await toldEnd("exit 4")
        XCTAssertEqual(outcome.task.exitCode, 4)
        let saboteur = try DatabaseQueue(path: directory + "/tasks.sqlite")
        try await saboteur.write { db in
            try db.execute(sql: "CREATE TRIGGER refuse BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
        }
        // A use of the store tries the commit, which fails; the use fails too, rather than go ahead of the end (an
        // event appended now would be numbered after it and stored before it).
        for attempt in 0..<2 {
            do {
                if attempt == 0 {
                    _ = try await supervisor.tasks(statuses: [.running])
                } else {
                    _ = try await supervisor.appendEvent(to: task.taskID, message: "ahead of the end?")
                }
                XCTFail("a use of the store went ahead of an end not yet stored")
            } catch {
                XCTAssertTrue("\(error)".contains("the end of task \(task.taskID) is not stored yet"), "\(error)")
            }
        }
        XCTAssertEqual(try storedStatus(task.taskID, in: directory), "running")
        try await saboteur.write { db in try db.execute(sql: "DROP TRIGGER refuse") }
        // The next use commits it.
        let failed = try await supervisor.tasks(statuses: [.failed])
        XCTAssertEqual(failed.tasks.map(\.taskID), [task.taskID])
        XCTAssertEqual(try storedStatus(task.taskID, in: directory), "failed")
        let events = try await supervisor.events(of: task.taskID)
        XCTAssertEqual(events.last?.eventID, told.eventID)
        await supervisor.shutdown()
        XCTAssertEqual(try journal(in: directory), "")
    }
}
