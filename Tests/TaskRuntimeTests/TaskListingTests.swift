import CorralJSON
import Foundation
import GRDB
import XCTest

@testable import TaskRuntime

/// Listing by index: display statuses (a running task's label), newest first, counts kept by triggers, the query
/// plans, and the migration of a store written before the index existed.
final class TaskListingTests: XCTestCase {
    var directory = ""

    override func setUp() {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("corral-listing-\(UUID().uuidString)")
            .path
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func record(_ id: String, _ status: TaskStatus, label: String? = nil, at milliseconds: Double) -> TaskRecord {
        let date = Date(timeIntervalSince1970: 1_800_000_000 + milliseconds / 1000)
        return TaskRecord(
            taskID: id, title: id, kind: "command", status: status, createdAt: date, updatedAt: date, startedAt: nil,
            completedAt: nil, timeoutMilliseconds: nil, command: ["/bin/true"], workingDirectory: "/", pid: nil,
            processStartTime: nil, exitCode: nil, signal: nil, lastError: nil, cgroupPath: nil, protections: [],
            outputLimitBytes: 0, stdoutBytes: 0, stderrBytes: 0, cpuUserMicroseconds: nil, cpuSystemMicroseconds: nil,
            maxResidentKiB: nil, runningMilliseconds: 0, metadata: label.map { ["label": .string($0)] } ?? [:])
    }

    func testDisplayStatusesOrderAndCountsFollowEveryChange() throws {
        let store = try TaskStore(path: directory + "/tasks.sqlite")
        try store.save(record("a", .completed, at: 1))
        try store.save(record("b", .running, at: 2))
        try store.save(record("c", .running, label: "waiting_for_user", at: 3))
        try store.save(record("d", .failed, at: 3))  // same millisecond as c: insertion order decides
        try store.save(record("e", .completed, label: "waiting_for_user", at: 4))  // a label only counts while running

        var page = try store.tasks(displayStatuses: nil, limit: 10)
        XCTAssertEqual(page.tasks.map(\.taskID), ["e", "d", "c", "b", "a"])
        XCTAssertEqual(page.total, 5)
        page = try store.tasks(displayStatuses: ["completed"], limit: 10)
        XCTAssertEqual(page.tasks.map(\.taskID), ["e", "a"])
        XCTAssertEqual(page.total, 2)
        page = try store.tasks(displayStatuses: ["waiting_for_user", "failed"], limit: 1)
        XCTAssertEqual(page.tasks.map(\.taskID), ["d"])
        XCTAssertEqual(page.total, 2)

        // The label goes when the task ends; the counts move with it.
        try store.save(record("c", .completed, at: 3))
        XCTAssertEqual(try store.tasks(displayStatuses: ["waiting_for_user"], limit: 10).total, 0)
        XCTAssertEqual(try store.tasks(displayStatuses: ["completed"], limit: 10).tasks.map(\.taskID), ["e", "c", "a"])
        XCTAssertEqual(try store.tasks(displayStatuses: nil, limit: 0).total, 5)
        XCTAssertEqual(try store.tasks(displayStatuses: ["paused"], limit: 10).total, 0)
    }

    func testThePlansUseTheIndexesWithoutSortingOrScanning() throws {
        _ = try TaskStore(path: directory + "/tasks.sqlite")
        let database = try DatabaseQueue(path: directory + "/tasks.sqlite")
        try database.read { db in
            for sql in [
                "SELECT created_at, rowid, record FROM tasks INDEXED BY tasks_newest ORDER BY created_at DESC, rowid DESC LIMIT 10",
                "SELECT created_at, rowid, record FROM tasks INDEXED BY tasks_by_display_status WHERE display_status = 'completed' ORDER BY created_at DESC, rowid DESC LIMIT 10",
            ] {
                let plan = try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + sql).map { $0["detail"] as String }
                XCTAssertFalse(plan.contains { $0.contains("TEMP B-TREE") }, "\(plan)")
                XCTAssertTrue(plan.contains { $0.contains("USING INDEX") }, "\(plan)")
            }
        }
    }

    func testAStoreFromBeforeTheIndexIsMigrated() throws {
        // The v1 schema, with a running task labelled waiting_for_condition and a completed one.
        let path = directory + "/tasks.sqlite"
        let old = try DatabaseQueue(path: path)
        try old.write { db in
            try db.execute(sql: OldStoreSchemas.v1)
            for item in [record("x", .running, label: "waiting_for_condition", at: 1), record("y", .completed, at: 2)] {
                try db.execute(
                    sql: "INSERT INTO tasks VALUES (?, ?, ?, ?, ?)",
                    arguments: [item.taskID, item.status.rawValue, Timestamp.format(item.createdAt),
                                Timestamp.format(item.updatedAt), item.jsonValue.jsonString()])
            }
        }
        try old.close()
        let store = try TaskStore(path: path)
        XCTAssertEqual(try store.tasks(displayStatuses: ["waiting_for_condition"], limit: 10).tasks.map(\.taskID), ["x"])
        XCTAssertEqual(try store.tasks(displayStatuses: nil, limit: 10).total, 2)
        XCTAssertEqual(try store.tasks(displayStatuses: ["running"], limit: 10).total, 0)
    }
}
