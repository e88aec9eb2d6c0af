import CorralJSON
import Foundation
import GRDB

/// Tasks and events in SQLite (WAL). Every status change is one transaction with its event, so a `kill -9` of the
/// supervisor loses nothing it has reported: WAL with `synchronous=NORMAL` is durable across process crashes (a power
/// loss may drop the last transactions).
final class TaskStore: Sendable {
    private let database: DatabasePool

    init(path: String) throws(RuntimeError) {
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
        }
        do {
            database = try DatabasePool(path: path, configuration: configuration)
            try TaskStore.migrator.migrate(database)
        } catch {
            throw RuntimeError.storage("cannot open \(path): \(error)")
        }
    }

    private static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE tasks (
                        task_id TEXT PRIMARY KEY NOT NULL,
                        status TEXT NOT NULL,
                        created_at TEXT NOT NULL,
                        updated_at TEXT NOT NULL,
                        record TEXT NOT NULL
                    );
                    CREATE INDEX tasks_by_status ON tasks(status);
                    CREATE TABLE events (
                        seq INTEGER PRIMARY KEY AUTOINCREMENT,
                        event_id TEXT NOT NULL UNIQUE,
                        task_id TEXT NOT NULL,
                        timestamp TEXT NOT NULL,
                        type TEXT NOT NULL,
                        message TEXT NOT NULL,
                        data TEXT NOT NULL
                    );
                    CREATE INDEX events_by_task ON events(task_id, seq);
                    """)
        }
        return migrator
    }

    /// A new event, not yet stored.
    struct NewEvent: Sendable {
        var type: String
        var message: String
        var data: JSONValue
    }

    /// Inserts or replaces the task and appends the events, in one transaction.
    @discardableResult
    func save(_ record: TaskRecord, events: [NewEvent] = []) throws(RuntimeError) -> [TaskEvent] {
        let recordJSON = try encode(record)
        do {
            return try database.write { db in
                try db.execute(
                    sql: """
                        INSERT INTO tasks (task_id, status, created_at, updated_at, record) VALUES (?, ?, ?, ?, ?)
                        ON CONFLICT(task_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at,
                            record = excluded.record
                        """,
                    arguments: [
                        record.taskID, record.status.rawValue, Timestamp.format(record.createdAt),
                        Timestamp.format(record.updatedAt), recordJSON,
                    ])
                return try events.map { event in
                    try TaskStore.insert(event, taskID: record.taskID, at: record.updatedAt, db: db)
                }
            }
        } catch {
            throw RuntimeError.storage("cannot save task \(record.taskID): \(error)")
        }
    }

    func appendEvent(_ event: NewEvent, taskID: String, at date: Date) throws(RuntimeError) -> TaskEvent {
        do {
            return try database.write { db in
                try TaskStore.insert(event, taskID: taskID, at: date, db: db)
            }
        } catch {
            throw RuntimeError.storage("cannot append an event to \(taskID): \(error)")
        }
    }

    private static func insert(_ event: NewEvent, taskID: String, at date: Date, db: Database) throws -> TaskEvent {
        let eventID = Identifiers.make()
        try db.execute(
            sql: "INSERT INTO events (event_id, task_id, timestamp, type, message, data) VALUES (?, ?, ?, ?, ?, ?)",
            arguments: [eventID, taskID, Timestamp.format(date), event.type, event.message, event.data.jsonString()])
        return TaskEvent(
            sequence: db.lastInsertedRowID, eventID: eventID, taskID: taskID, timestamp: date, type: event.type,
            message: event.message, data: event.data)
    }

    func task(_ taskID: String) throws(RuntimeError) -> TaskRecord? {
        let json: String?
        do {
            json = try database.read { db in
                try String.fetchOne(db, sql: "SELECT record FROM tasks WHERE task_id = ?", arguments: [taskID])
            }
        } catch {
            throw RuntimeError.storage("cannot read task \(taskID): \(error)")
        }
        guard let json else { return nil }
        return try decode(json)
    }

    /// Tasks, newest first, optionally only those with the given statuses; and how many match in all.
    func tasks(statuses: Set<TaskStatus>?, limit: Int) throws(RuntimeError) -> (tasks: [TaskRecord], total: Int) {
        let rows: ([String], Int)
        do {
            rows = try database.read { db in
                var filter = ""
                var arguments = StatementArguments()
                if let statuses {
                    let names = statuses.map(\.rawValue).sorted()
                    filter = "WHERE status IN (" + names.map { _ in "?" }.joined(separator: ",") + ")"
                    arguments = StatementArguments(names)
                }
                let total =
                    try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM tasks \(filter)", arguments: arguments) ?? 0
                var pageArguments = arguments
                pageArguments += [max(0, limit)]
                let records = try String.fetchAll(
                    db, sql: "SELECT record FROM tasks \(filter) ORDER BY created_at DESC, rowid DESC LIMIT ?",
                    arguments: pageArguments)
                return (records, total)
            }
        } catch {
            throw RuntimeError.storage("cannot list tasks: \(error)")
        }
        var records: [TaskRecord] = []
        for json in rows.0 {
            records.append(try decode(json))
        }
        return (records, rows.1)
    }

    /// Counts of tasks by status.
    func statusCounts() throws(RuntimeError) -> [TaskStatus: Int] {
        do {
            let rows = try database.read { db in
                try Row.fetchAll(db, sql: "SELECT status, COUNT(*) AS n FROM tasks GROUP BY status")
            }
            var counts: [TaskStatus: Int] = [:]
            for row in rows {
                if let status = TaskStatus(rawValue: row["status"]) { counts[status] = row["n"] }
            }
            return counts
        } catch {
            throw RuntimeError.storage("cannot count tasks: \(error)")
        }
    }

    /// Events of a task in order; `after` is an exclusive sequence number.
    func events(taskID: String, after: Int64? = nil, limit: Int) throws(RuntimeError) -> [TaskEvent] {
        do {
            return try database.read { db in
                let rows = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT * FROM events WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT ?
                        """, arguments: [taskID, after ?? 0, max(0, limit)])
                return rows.map(TaskStore.event(from:))
            }
        } catch {
            throw RuntimeError.storage("cannot read events of \(taskID): \(error)")
        }
    }

    /// The newest `limit` events of a task, oldest first.
    func recentEvents(taskID: String, limit: Int) throws(RuntimeError) -> [TaskEvent] {
        do {
            return try database.read { db in
                let rows = try Row.fetchAll(
                    db, sql: "SELECT * FROM events WHERE task_id = ? ORDER BY seq DESC LIMIT ?",
                    arguments: [taskID, max(0, limit)])
                return rows.reversed().map(TaskStore.event(from:))
            }
        } catch {
            throw RuntimeError.storage("cannot read events of \(taskID): \(error)")
        }
    }

    private static func event(from row: Row) -> TaskEvent {
        let dataText: String = row["data"]
        let timestampText: String = row["timestamp"]
        return TaskEvent(
            sequence: row["seq"], eventID: row["event_id"], taskID: row["task_id"],
            timestamp: Timestamp.parse(timestampText) ?? Date(timeIntervalSince1970: 0), type: row["type"],
            message: row["message"], data: (try? JSONValue.parse(dataText)) ?? .null)
    }

    private func encode(_ record: TaskRecord) throws(RuntimeError) -> String {
        record.jsonValue.jsonString()
    }

    private func decode(_ json: String) throws(RuntimeError) -> TaskRecord {
        do {
            return try JSONDecoder.runtime.decode(TaskRecord.self, from: Data(json.utf8))
        } catch {
            throw RuntimeError.storage("cannot decode a stored task: \(error)")
        }
    }
}
