import CorralJSON
import Foundation
import GRDB
import SQLiteWAL
import Synchronization

/// Tasks and events in SQLite (WAL). Every status change is one transaction with its event, so a `kill -9` of the
/// supervisor loses nothing it has reported: WAL with `synchronous=NORMAL` is durable across process crashes (a power
/// loss may drop the last transactions).
final class TaskStore: Sendable {
    private let database: DatabasePool
    let checkpointer: WALCheckpointer
    /// The newest event sequence number given out. Events get theirs before they are inserted: a task's end is told
    /// to its waiters, with its event, ahead of its commit (see `ExitJournal`). Only one supervisor writes a store
    /// (the state directory's lock), so the numbers here are the store's own.
    private let lastSequence: Mutex<Int64>

    init(path: String) throws(RuntimeError) {
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        // Memory stays flat as the store grows: at most two readers beside the writer, 256 KiB of page cache each
        // (SQLite's default is 2 MiB; every query here is an indexed lookup with a LIMIT, and pages it misses come
        // from the kernel's page cache). 1 MiB each held 0.75 MiB more after a mixed run, for no faster listing at
        // 100,000 stored tasks.
        configuration.maximumReaderCount = 2
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            try db.execute(sql: "PRAGMA cache_size = -256")
        }
        do {
            database = try DatabasePool(path: path, configuration: configuration)
            try TaskStore.migrator.migrate(database)
            // AUTOINCREMENT's own rule: past the highest number ever used, pruned events' included.
            lastSequence = Mutex(
                try database.read { db in
                    try Int64.fetchOne(
                        db,
                        sql: """
                            SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),
                                       COALESCE((SELECT MAX(seq) FROM events), 0))
                            """) ?? 0
                })
        } catch {
            throw RuntimeError.storage("cannot open \(path): \(error)")
        }
        // Once the file is there, in WAL mode.
        checkpointer = WALCheckpointer(writer: database)
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
        // Listing by index: the status a client sees (a running task's label stands for it), newest first, and a
        // count per display status kept by triggers in the same transaction as every change.
        migrator.registerMigration("v2-indexed-listing") { db in
            try db.execute(
                sql: """
                    ALTER TABLE tasks ADD COLUMN display_status TEXT NOT NULL DEFAULT '';
                    UPDATE tasks SET display_status = CASE
                        WHEN status = 'running' AND json_type(record, '$.metadata.label') = 'text'
                        THEN json_extract(record, '$.metadata.label') ELSE status END;
                    CREATE INDEX tasks_newest ON tasks(created_at);
                    CREATE INDEX tasks_by_display_status ON tasks(display_status, created_at);
                    CREATE TABLE task_counts (display_status TEXT PRIMARY KEY NOT NULL, n INTEGER NOT NULL);
                    INSERT INTO task_counts SELECT display_status, COUNT(*) FROM tasks GROUP BY display_status;
                    CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks BEGIN
                        INSERT INTO task_counts VALUES (NEW.display_status, 1)
                            ON CONFLICT(display_status) DO UPDATE SET n = n + 1;
                    END;
                    CREATE TRIGGER task_counts_update AFTER UPDATE OF display_status ON tasks
                        WHEN OLD.display_status IS NOT NEW.display_status BEGIN
                        UPDATE task_counts SET n = n - 1 WHERE display_status = OLD.display_status;
                        INSERT INTO task_counts VALUES (NEW.display_status, 1)
                            ON CONFLICT(display_status) DO UPDATE SET n = n + 1;
                    END;
                    CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks BEGIN
                        UPDATE task_counts SET n = n - 1 WHERE display_status = OLD.display_status;
                    END;
                    """)
        }
        // Pruning by retention: finished tasks by the time of their last change.
        migrator.registerMigration("v3-retention") { db in
            try db.execute(
                sql: """
                    CREATE INDEX tasks_by_status_updated ON tasks(status, updated_at);
                    DROP INDEX tasks_by_status;
                    """)
        }
        // Events without a UNIQUE index on event_id: nothing looks an event up by it (ids are 128 random bits), and
        // keeping it sorted put a random page of its own into every event's insert (a status change's commit and
        // append_task_event's). SQLite cannot drop a column constraint, so the table is rebuilt; its AUTOINCREMENT
        // sequence is carried over, so that the sequence numbers of pruned events are never given out again.
        migrator.registerMigration("v4-events-without-id-index") { db in
            let sequence = try Int64.fetchOne(db, sql: "SELECT seq FROM sqlite_sequence WHERE name = 'events'")
            try db.execute(
                sql: """
                    CREATE TABLE events_v4 (
                        seq INTEGER PRIMARY KEY AUTOINCREMENT,
                        event_id TEXT NOT NULL,
                        task_id TEXT NOT NULL,
                        timestamp TEXT NOT NULL,
                        type TEXT NOT NULL,
                        message TEXT NOT NULL,
                        data TEXT NOT NULL
                    );
                    INSERT INTO events_v4 SELECT seq, event_id, task_id, timestamp, type, message, data FROM events;
                    DROP TABLE events;
                    ALTER TABLE events_v4 RENAME TO events;
                    CREATE INDEX events_by_task ON events(task_id, seq);
                    """)
            if let sequence {
                try db.execute(sql: "DELETE FROM sqlite_sequence WHERE name = 'events'")
                try db.execute(sql: "INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", arguments: [sequence])
            }
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
        let prepared = events.map { prepare($0, taskID: record.taskID, at: record.updatedAt) }
        try save(record, prepared: prepared)
        return prepared
    }

    /// The same with events given their sequence numbers and ids already (by `prepare`).
    func save(_ record: TaskRecord, prepared events: [TaskEvent]) throws(RuntimeError) {
        let recordJSON = try encode(record)
        do {
            try database.write { db in
                // Prepared once per connection: compiling this upsert with its triggers was most of a save.
                try db.cachedStatement(
                    sql: """
                        INSERT INTO tasks (task_id, status, created_at, updated_at, record, display_status)
                        VALUES (?, ?, ?, ?, ?, ?)
                        ON CONFLICT(task_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at,
                            record = excluded.record, display_status = excluded.display_status
                        """
                ).execute(
                    arguments: [
                        record.taskID, record.status.rawValue, Timestamp.format(record.createdAt),
                        Timestamp.format(record.updatedAt), recordJSON, record.displayStatus,
                    ])
                for event in events { try TaskStore.insert(event, db: db) }
            }
        } catch {
            throw RuntimeError.storage("cannot save task \(record.taskID): \(error)")
        }
        // Events numbered by an earlier run (a journal's) are past what this one has given out.
        if let newest = events.map(\.sequence).max() {
            lastSequence.withLock { $0 = max($0, newest) }
        }
    }

    /// The event as it will be stored: the next sequence number and a new id. The number of an event that never
    /// reaches the store (a failed save) is not given out again: the sequence has a gap, as AUTOINCREMENT's may.
    func prepare(_ event: NewEvent, taskID: String, at date: Date) -> TaskEvent {
        let sequence = lastSequence.withLock { last in
            last += 1
            return last
        }
        return TaskEvent(
            sequence: sequence, eventID: Identifiers.make(), taskID: taskID, timestamp: date, type: event.type,
            message: event.message, data: event.data)
    }

    /// Stores `count` copies of a finished record under new ids, created one millisecond apart from `start`, in one
    /// transaction (for benchmarks of a large store).
    func insertCopies(of template: TaskRecord, count: Int, from start: Date) throws(RuntimeError) {
        do {
            try database.write { db in
                let statement = try db.makeStatement(
                    sql: """
                        INSERT INTO tasks (task_id, status, created_at, updated_at, record, display_status)
                        VALUES (?, ?, ?, ?, ?, ?)
                        """)
                for index in 0..<count {
                    var record = template
                    record.taskID = Identifiers.make()
                    record.createdAt = start.addingTimeInterval(Double(index) / 1000)
                    record.updatedAt = record.createdAt
                    try statement.execute(arguments: [
                        record.taskID, record.status.rawValue, Timestamp.format(record.createdAt),
                        Timestamp.format(record.updatedAt), record.jsonText, record.displayStatus,
                    ])
                }
            }
        } catch {
            throw RuntimeError.storage("cannot insert tasks: \(error)")
        }
    }

    func appendEvent(_ event: NewEvent, taskID: String, at date: Date) throws(RuntimeError) -> TaskEvent {
        let prepared = prepare(event, taskID: taskID, at: date)
        do {
            // One INSERT is atomic by itself: a transaction around it only added its BEGIN and COMMIT.
            try database.writeWithoutTransaction { db in try TaskStore.insert(prepared, db: db) }
        } catch {
            throw RuntimeError.storage("cannot append an event to \(taskID): \(error)")
        }
        return prepared
    }

    private static func insert(_ event: TaskEvent, db: Database) throws {
        try db.cachedStatement(
            sql: """
                INSERT INTO events (seq, event_id, task_id, timestamp, type, message, data)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                """
        ).execute(
            arguments: [
                event.sequence, event.eventID, event.taskID, Timestamp.format(event.timestamp), event.type,
                event.message, event.data.jsonString(),
            ])
    }

    func task(_ taskID: String) throws(RuntimeError) -> TaskRecord? {
        let json: String?
        do {
            json = try database.read { db in
                try String.fetchOne(
                    db.cachedStatement(sql: "SELECT record FROM tasks WHERE task_id = ?"), arguments: [taskID])
            }
        } catch {
            throw RuntimeError.storage("cannot read task \(taskID): \(error)")
        }
        guard let json else { return nil }
        return try decode(json)
    }

    /// Tasks, newest first, optionally only those with the given display statuses; and how many match in all.
    /// Each status is its own walk of `tasks_by_display_status` (newest first, at most `limit` rows), merged here;
    /// the total comes from `task_counts`. Nothing reads more than `limit` rows per status.
    /// `known`: a record the caller already holds for a task id (a live task's, say), used instead of decoding the
    /// stored copy — decoding was most of a listing's cost when the listed tasks were live.
    func tasks(
        displayStatuses: Set<String>?, limit: Int, known: (String) -> TaskRecord? = { _ in nil }
    ) throws(RuntimeError) -> (tasks: [TaskRecord], total: Int) {
        let limit = max(0, limit)
        // Ties in created_at (the same millisecond) go by insertion order: rowid, the last key of every index.
        let rows: (records: [(createdAt: String, rowID: Int64, taskID: String, json: String)], total: Int)
        do {
            rows = try database.read { db in
                var found: [(createdAt: String, rowID: Int64, taskID: String, json: String)] = []
                var total = 0
                if let displayStatuses {
                    for status in displayStatuses.sorted() {
                        let page = try Row.fetchAll(
                            db.cachedStatement(
                                sql: """
                                    SELECT created_at, rowid, task_id, record FROM tasks INDEXED BY tasks_by_display_status
                                    WHERE display_status = ? ORDER BY created_at DESC, rowid DESC LIMIT ?
                                    """), arguments: [status, limit])
                        found += page.map { ($0["created_at"], $0["rowid"], $0["task_id"], $0["record"]) }
                        total += try Int.fetchOne(
                            db.cachedStatement(sql: "SELECT n FROM task_counts WHERE display_status = ?"),
                            arguments: [status]) ?? 0
                    }
                } else {
                    let page = try Row.fetchAll(
                        db.cachedStatement(
                            sql: """
                                SELECT created_at, rowid, task_id, record FROM tasks INDEXED BY tasks_newest
                                WHERE display_status != ? ORDER BY created_at DESC, rowid DESC LIMIT ?
                                """), arguments: [TaskRecord.internalStatus, limit])
                    found = page.map { ($0["created_at"], $0["rowid"], $0["task_id"], $0["record"]) }
                    total = try Int.fetchOne(
                        db.cachedStatement(sql: "SELECT COALESCE(SUM(n), 0) FROM task_counts WHERE display_status != ?"),
                        arguments: [TaskRecord.internalStatus]) ?? 0
                }
                return (found, total)
            }
        } catch {
            throw RuntimeError.storage("cannot list tasks: \(error)")
        }
        let newest = rows.records.sorted { ($0.createdAt, $0.rowID) > ($1.createdAt, $1.rowID) }.prefix(limit)
        var records: [TaskRecord] = []
        for row in newest {
            if let record = known(row.taskID) {
                records.append(record)
            } else {
                records.append(try decode(row.json))
            }
        }
        return (records, rows.total)
    }

    /// Tasks with any of the given statuses (for recovery), newest first.
    func tasks(statuses: Set<TaskStatus>, limit: Int) throws(RuntimeError) -> (tasks: [TaskRecord], total: Int) {
        let rows: [String]
        do {
            rows = try database.read { db in
                let names = statuses.map(\.rawValue).sorted()
                let marks = names.map { _ in "?" }.joined(separator: ",")
                var arguments = StatementArguments(names)
                arguments += [max(0, limit)]
                return try String.fetchAll(
                    db, sql: "SELECT record FROM tasks WHERE status IN (\(marks)) ORDER BY created_at DESC LIMIT ?",
                    arguments: arguments)
            }
        } catch {
            throw RuntimeError.storage("cannot list tasks: \(error)")
        }
        var records: [TaskRecord] = []
        for json in rows {
            records.append(try decode(json))
        }
        return (records, records.count)
    }

    /// Counts of tasks by the status they show (`TaskRecord.displayStatus`), statuses without a task left out: read
    /// from the counters the triggers keep, not by counting the tasks.
    func displayStatusCounts() throws(RuntimeError) -> [String: Int] {
        do {
            let rows = try database.read { db in
                try Row.fetchAll(
                    db, sql: "SELECT display_status, n FROM task_counts WHERE n > 0 AND display_status != ?",
                    arguments: [TaskRecord.internalStatus])
            }
            var counts: [String: Int] = [:]
            for row in rows { counts[row["display_status"]] = row["n"] }
            return counts
        } catch {
            throw RuntimeError.storage("cannot count tasks: \(error)")
        }
    }

    /// Finished tasks that `retention` no longer keeps, oldest first, at most `limit` of them. Their age is that of
    /// their last change (`updated_at`: the finish, or a later note). Internal tasks are their caller's to discard.
    func finishedBeyond(_ retention: TaskRetention, now: Date, limit: Int) throws(RuntimeError) -> [String] {
        let final = TaskStatus.allCases.filter(\.isFinal).map { "'\($0.rawValue)'" }.joined(separator: ",")
        let sql: String
        let arguments: StatementArguments
        switch retention {
        case .all:
            return []
        case .newest(let count):
            sql = """
                SELECT task_id FROM tasks WHERE status IN (\(final)) AND display_status != ? AND task_id NOT IN (
                    SELECT task_id FROM tasks WHERE status IN (\(final)) AND display_status != ?
                    ORDER BY updated_at DESC LIMIT ?)
                ORDER BY updated_at LIMIT ?
                """
            arguments = [TaskRecord.internalStatus, TaskRecord.internalStatus, count, limit]
        case .days(let days):
            let cutoff = now.addingTimeInterval(-Double(days) * 86_400)
            sql = """
                SELECT task_id FROM tasks WHERE status IN (\(final)) AND display_status != ? AND updated_at < ?
                ORDER BY updated_at LIMIT ?
                """
            arguments = [TaskRecord.internalStatus, Timestamp.format(cutoff), limit]
        }
        do {
            return try database.read { db in try String.fetchAll(db, sql: sql, arguments: arguments) }
        } catch {
            throw RuntimeError.storage("cannot find tasks to prune: \(error)")
        }
    }

    /// Removes tasks and their events, in one transaction.
    func delete(_ taskIDs: [String]) throws(RuntimeError) {
        guard !taskIDs.isEmpty else { return }
        do {
            try database.write { db in
                for taskID in taskIDs {
                    try db.execute(sql: "DELETE FROM events WHERE task_id = ?", arguments: [taskID])
                    try db.execute(sql: "DELETE FROM tasks WHERE task_id = ?", arguments: [taskID])
                }
            }
        } catch {
            throw RuntimeError.storage("cannot delete \(taskIDs.count) tasks: \(error)")
        }
    }

    /// Final internal tasks (left by a crash before they were discarded).
    func finishedInternalTasks() throws(RuntimeError) -> [String] {
        do {
            return try database.read { db in
                try String.fetchAll(
                    db, sql: "SELECT task_id FROM tasks WHERE display_status = ?", arguments: [TaskRecord.internalStatus])
            }
        } catch {
            throw RuntimeError.storage("cannot list internal tasks: \(error)")
        }
    }

    /// Events of a task in order; `after` is an exclusive sequence number.
    func events(taskID: String, after: Int64? = nil, limit: Int) throws(RuntimeError) -> [TaskEvent] {
        do {
            return try database.read { db in
                let rows = try Row.fetchAll(
                    db.cachedStatement(sql: "SELECT * FROM events WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT ?"),
                    arguments: [taskID, after ?? 0, max(0, limit)])
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
                    db.cachedStatement(sql: "SELECT * FROM events WHERE task_id = ? ORDER BY seq DESC LIMIT ?"),
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
        record.jsonText
    }

    /// The one-pass parser and the hand-written reader; `JSONDecoder` for anything they do not take, so that no
    /// record written by an older version is lost.
    private func decode(_ json: String) throws(RuntimeError) -> TaskRecord {
        if let value = try? JSONValue.parse(json), let record = TaskRecord(json: value) { return record }
        do {
            return try JSONDecoder.runtime.decode(TaskRecord.self, from: Data(json.utf8))
        } catch {
            throw RuntimeError.storage("cannot decode a stored task: \(error)")
        }
    }
}
