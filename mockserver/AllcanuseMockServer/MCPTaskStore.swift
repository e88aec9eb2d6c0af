import CorralJSON
import Foundation
import GRDB
import SQLiteWAL
import MCPCore

/// A task handle as kept: the MCP task, and what the server needs to carry it on.
struct StoredMCPTask: Sendable, Equatable {
    var task: MCPTask
    /// The tool whose call became the task.
    var tool: String
    /// `wait_for_background_task`: the background task it waits on (which a cancel of this handle never touches).
    var waitsOn: String?
    /// Input requests asked so far (keys are unique over the task's life).
    var questionsAsked: Int

    var expiresAt: Date? {
        guard let ttl = task.ttlMilliseconds, let created = Timestamp.parse(task.createdAt) else { return nil }
        return created.addingTimeInterval(Double(ttl) / 1000)
    }

    var json: JSONValue {
        [
            "task": task.detailed, "tool": .string(tool), "waits_on": waitsOn.map(JSONValue.string) ?? .null,
            "questions_asked": .int(questionsAsked),
        ]
    }

    init(task: MCPTask, tool: String, waitsOn: String?, questionsAsked: Int = 0) {
        self.task = task
        self.tool = tool
        self.waitsOn = waitsOn
        self.questionsAsked = questionsAsked
    }

    init?(json: JSONValue) {
        let detail = json["task"]
        guard let taskID = detail?["taskId"]?.stringValue,
            let status = detail?["status"]?.stringValue.flatMap(MCPTaskStatus.init(rawValue:)),
            let created = detail?["createdAt"]?.stringValue, let updated = detail?["lastUpdatedAt"]?.stringValue,
            let tool = json["tool"]?.stringValue
        else { return nil }
        task = MCPTask(
            taskID: taskID, status: status, createdAt: created, lastUpdatedAt: updated,
            ttlMilliseconds: detail?["ttlMs"]?.intValue, pollIntervalMilliseconds: detail?["pollIntervalMs"]?.intValue,
            statusMessage: detail?["statusMessage"]?.stringValue, result: detail?["result"], error: detail?["error"],
            inputRequests: detail?["inputRequests"])
        self.tool = tool
        waitsOn = json["waits_on"]?.stringValue
        questionsAsked = json["questions_asked"]?.intValue ?? 0
    }
}

/// MCP task handles in SQLite beside the task store (WAL): a handle is written before the client hears of it,
/// and every change is one statement, so `tasks/get` still knows every handle it answered after a `kill -9`.
final class MCPTaskStore: Sendable {
    private let database: DatabasePool
    /// Checkpoints the log off the commits (see `WALCheckpointer`).
    private let checkpointer: WALCheckpointer

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    init(path: String) throws(Failure) {
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        // Bounded as the task store is (TaskStore): two readers, 256 KiB of page cache per connection.
        configuration.maximumReaderCount = 2
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            try db.execute(sql: "PRAGMA cache_size = -256")
        }
        do {
            if !FileManager.default.fileExists(atPath: path) {
                // Pre-created 0600, so that the WAL and SHM files get the same mode.
                guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]) else {
                    throw Failure(description: "cannot create \(path)")
                }
            }
            database = try DatabasePool(path: path, configuration: configuration)
            var migrator = DatabaseMigrator()
            migrator.registerMigration("v1") { db in
                try db.execute(
                    sql: """
                        CREATE TABLE mcp_tasks (
                            task_id TEXT PRIMARY KEY NOT NULL,
                            status TEXT NOT NULL,
                            expires_at TEXT,
                            record TEXT NOT NULL
                        );
                        CREATE INDEX mcp_tasks_by_expiry ON mcp_tasks(expires_at) WHERE expires_at IS NOT NULL;
                        CREATE INDEX mcp_tasks_by_status ON mcp_tasks(status);
                        """)
            }
            try migrator.migrate(database)
        } catch let failure as Failure {
            throw failure
        } catch {
            throw Failure(description: "cannot open \(path): \(error)")
        }
        // Once the file is there, in WAL mode.
        checkpointer = WALCheckpointer(writer: database)
    }

    func save(_ stored: StoredMCPTask) throws(Failure) {
        do {
            try database.write { db in
                try db.execute(
                    sql: """
                        INSERT INTO mcp_tasks (task_id, status, expires_at, record) VALUES (?, ?, ?, ?)
                        ON CONFLICT(task_id) DO UPDATE SET status = excluded.status, record = excluded.record
                        """,
                    arguments: [
                        stored.task.taskID, stored.task.status.rawValue, stored.expiresAt.map(Timestamp.format),
                        stored.json.jsonString(),
                    ])
            }
        } catch {
            throw Failure(description: "cannot save task handle \(stored.task.taskID): \(error)")
        }
    }

    func load(_ taskID: String) throws(Failure) -> StoredMCPTask? {
        do {
            let text = try database.read { db in
                try String.fetchOne(db, sql: "SELECT record FROM mcp_tasks WHERE task_id = ?", arguments: [taskID])
            }
            guard let text else { return nil }
            guard let value = try? JSONValue.parse(text), let stored = StoredMCPTask(json: value) else {
                throw Failure(description: "task handle \(taskID) is unreadable")
            }
            return stored
        } catch let failure as Failure {
            throw failure
        } catch {
            throw Failure(description: "cannot read task handle \(taskID): \(error)")
        }
    }

    /// Handles past their time to live are gone (they become unknown ids).
    func pruneExpired(now: Date = Date()) throws(Failure) {
        do {
            try database.write { db in
                try db.execute(
                    sql: "DELETE FROM mcp_tasks WHERE expires_at IS NOT NULL AND expires_at < ?",
                    arguments: [Timestamp.format(now)])
            }
        } catch {
            throw Failure(description: "cannot prune task handles: \(error)")
        }
    }

    /// Handles that were not terminal when the previous server stopped.
    func unfinished() throws(Failure) -> [StoredMCPTask] {
        do {
            let rows = try database.read { db in
                try String.fetchAll(
                    db, sql: "SELECT record FROM mcp_tasks WHERE status IN ('working', 'input_required')")
            }
            return rows.compactMap { (try? JSONValue.parse($0)).flatMap(StoredMCPTask.init(json:)) }
        } catch {
            throw Failure(description: "cannot read task handles: \(error)")
        }
    }
}
