import CorralJSON
import Foundation
import GRDB
import XCTest

@testable import TaskRuntime

/// The events table rebuilt without its UNIQUE index on event_id: events survive, and the AUTOINCREMENT sequence
/// carries over, so that a pruned event's sequence number (a client's `since` cursor) is never given out again.
final class EventStoreMigrationTests: XCTestCase {
    var directory = ""

    override func setUp() {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("corral-events-\(UUID().uuidString)").path
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func testEventsAndTheirSequenceSurviveTheRebuild() throws {
        // A v1 store with three events of task t, the newest of which was pruned since.
        let path = directory + "/tasks.sqlite"
        let old = try DatabaseQueue(path: path)
        try old.write { db in
            try db.execute(sql: OldStoreSchemas.v1)
            try db.execute(sql: """
                INSERT INTO events (event_id, task_id, timestamp, type, message, data) VALUES
                    ('e1', 't', '2026-12-06T10:00:00.000Z', 'info', 'one', '{"n":1}'),
                    ('e2', 't', '2026-12-06T10:00:01.000Z', 'info', 'two', 'null'),
                    ('e3', 't', '2026-12-06T10:00:02.000Z', 'info', 'three', 'null');
                DELETE FROM events WHERE event_id = 'e3';
                """)
        }
        try old.close()

        let store = try TaskStore(path: path)
        let kept = try store.events(taskID: "t", limit: 10)
        XCTAssertEqual(kept.map(\.sequence), [1, 2])
        XCTAssertEqual(kept.map(\.eventID), ["e1", "e2"])
        XCTAssertEqual(kept.first?.data, ["n": 1])
        let next = try store.appendEvent(.init(type: "info", message: "four", data: .null), taskID: "t", at: Date())
        XCTAssertEqual(next.sequence, 4, "sequence 3 belonged to a pruned event")

        let database = try DatabaseQueue(path: path)
        try database.read { db in
            let unique = try Row.fetchAll(db, sql: "PRAGMA index_list(events)").filter { ($0["unique"] as Int) == 1 }
            XCTAssertEqual(unique.count, 0, "no unique index is left on events: \(unique)")
            let plan = try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN SELECT * FROM events WHERE task_id = 't' ORDER BY seq")
                .map { $0["detail"] as String }
            XCTAssertTrue(plan.contains { $0.contains("events_by_task") }, "\(plan)")
        }
    }

    func testAFreshStoreStartsItsSequenceAtOne() throws {
        let store = try TaskStore(path: directory + "/tasks.sqlite")
        let first = try store.appendEvent(.init(type: "info", message: "m", data: .null), taskID: "t", at: Date())
        XCTAssertEqual(first.sequence, 1)
    }
}
