/// Task stores as earlier versions of the runtime left them on disk, for the migration tests.
enum OldStoreSchemas {
    /// The v1 schema (tasks and events, events with a UNIQUE event_id), with its migration recorded as applied.
    static let v1 = """
        CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY);
        INSERT INTO grdb_migrations VALUES ('v1');
        CREATE TABLE tasks (task_id TEXT PRIMARY KEY NOT NULL, status TEXT NOT NULL, created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL, record TEXT NOT NULL);
        CREATE INDEX tasks_by_status ON tasks(status);
        CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,
            task_id TEXT NOT NULL, timestamp TEXT NOT NULL, type TEXT NOT NULL, message TEXT NOT NULL,
            data TEXT NOT NULL);
        CREATE INDEX events_by_task ON events(task_id, seq);
        """
}
