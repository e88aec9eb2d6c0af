import Foundation
import GRDB
import TaskRuntime
import XCTest

final class RetentionTests: XCTestCase {
    var directory = ""

    override func setUp() async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("corral-retain-\(UUID().uuidString)")
            .path
    }

    override func tearDown() async throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func start(_ retention: TaskRetention) async throws -> TaskSupervisor {
        try await TaskSupervisor.start(.init(stateDirectory: directory, graceMilliseconds: 300, retention: retention))
    }

    private func finishedTask(_ supervisor: TaskSupervisor, _ text: String) async throws -> String {
        let task = try await supervisor.create(TaskSpec(title: text, command: .argv(["/bin/echo", text])))
        let outcome = try await supervisor.wait(for: task.taskID, timeout: .seconds(10))
        XCTAssertEqual(outcome.task.status, .completed)
        return task.taskID
    }

    private func taskDirectoryExists(_ taskID: String) -> Bool {
        FileManager.default.fileExists(atPath: directory + "/tasks/" + taskID)
    }

    func testTheNewestFinishedTasksAreKeptWithTheirOutputAndTheRestGo() async throws {
        let supervisor = try await start(.newest(3))
        var finished: [String] = []
        for index in 0..<6 { finished.append(try await finishedTask(supervisor, "t\(index)")) }
        let running = try await supervisor.create(TaskSpec(title: "long", command: .argv(["/bin/sleep", "30"])))
        XCTAssertTrue(finished.allSatisfy(taskDirectoryExists), "each finished task has its output directory")

        // Pruning runs shortly after the finishes, not at each one.
        var total = Int.max
        for _ in 0..<50 where total != 4 {
            try await Task.sleep(for: .milliseconds(100))
            total = try await supervisor.tasks(limit: 100).total
        }
        XCTAssertEqual(total, 4, "the 3 newest finished tasks and the running one")
        for old in finished.prefix(3) {
            do {
                _ = try await supervisor.task(old)
                XCTFail("\(old) should be pruned")
            } catch RuntimeError.unknownTask(let id) {
                XCTAssertEqual(id, old)
            }
            XCTAssertFalse(taskDirectoryExists(old), "the pruned task's output goes with it")
        }
        let database = try DatabaseQueue(path: directory + "/tasks.sqlite")
        let pruned = Array(finished.prefix(3))
        let orphanEvents = try await database.read { db in
            try Int.fetchOne(
                db, sql: "SELECT COUNT(*) FROM events WHERE task_id IN (?, ?, ?)", arguments: StatementArguments(pruned))
        }
        XCTAssertEqual(orphanEvents, 0, "the pruned tasks' events go with them")
        try database.close()
        for kept in finished.suffix(3) {
            let output = try await supervisor.output(of: kept, stream: .stdout).text
            XCTAssertEqual(output, "t\(finished.firstIndex(of: kept) ?? -1)\n")
        }
        let stillRunning = try await supervisor.task(running.taskID).status
        XCTAssertEqual(stillRunning, .running, "running tasks are never pruned")
        _ = try await supervisor.cancel(running.taskID)
        await supervisor.shutdown()
    }

    func testTasksOlderThanTheDaysArePrunedAtStart() async throws {
        var supervisor = try await start(.all)
        let old = try await finishedTask(supervisor, "old")
        let recent = try await finishedTask(supervisor, "recent")
        await supervisor.shutdown()
        // Age one of them by three days, as if the server had been stopped since.
        let database = try DatabaseQueue(path: directory + "/tasks.sqlite")
        try await database.write { db in
            try db.execute(
                sql: "UPDATE tasks SET updated_at = '2020-01-01T00:00:00.000Z' WHERE task_id = ?", arguments: [old])
        }
        try database.close()

        supervisor = try await start(.days(2))
        let listed = try await supervisor.tasks(limit: 10)
        XCTAssertEqual(listed.tasks.map(\.taskID), [recent])
        XCTAssertEqual(listed.total, 1)
        XCTAssertFalse(taskDirectoryExists(old))
        XCTAssertTrue(taskDirectoryExists(recent))
        await supervisor.shutdown()
    }

    func testRetentionIsParsedOrRefusedWithTheReason() throws {
        XCTAssertEqual(try TaskRetention(parsing: "all"), .all)
        XCTAssertEqual(try TaskRetention(parsing: "1000"), .newest(1000))
        XCTAssertEqual(try TaskRetention(parsing: "0"), .newest(0))
        XCTAssertEqual(try TaskRetention(parsing: "30d"), .days(30))
        for bad in ["", "-1", "0d", "d", "7 days", "1e3", "12h"] {
            XCTAssertThrowsError(try TaskRetention(parsing: bad), bad) { error in
                XCTAssertTrue("\(error)".contains("count of finished tasks"), "\(error)")
            }
        }
    }
}
