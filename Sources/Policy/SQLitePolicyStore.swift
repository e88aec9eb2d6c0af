import GRDB
import SQLiteWAL
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Counters, single-use records and task owners in a SQLite file (WAL), shared by every process that opens the
/// same path on one machine.
///
/// Each reservation is one `BEGIN IMMEDIATE` transaction: the write lock is taken before the counters are read, so
/// concurrent processes queue on the busy timeout instead of reading a stale value (which a deferred transaction
/// would allow) — that is what keeps a `max: 10` counter exact across processes. Any SQLite error surfaces as a
/// `PolicyStoreError`, and the evaluator denies the call. The schema is versioned (`PRAGMA user_version`).
public final class SQLitePolicyStore: PolicyStore {
    private let queue: DatabaseQueue
    /// Checkpoints the log off the reservations' commits (see `WALCheckpointer`).
    let checkpointer: WALCheckpointer
    private let purgeInterval: Int
    private let writes = Atomic<Int>(0)

    /// Opens (creating or migrating if needed) the store in the database at `path`.
    /// - Parameter busyTimeout: how long a writer waits for another process's lock before failing (closed).
    public init(path: String, busyTimeout: Double = 10, purgeInterval: Int = 1024) throws(PolicyStoreError) {
        var configuration = Configuration()
        configuration.journalMode = .wal
        configuration.busyMode = .timeout(busyTimeout)
        configuration.label = "corral.policy.store"
        self.purgeInterval = purgeInterval
        do {
            queue = try Self.open(path: path, configuration: configuration, patience: .seconds(busyTimeout))
        } catch let error as PolicyStoreError {
            throw PolicyStoreError("policy store \(path): \(error.message)")
        } catch {
            throw PolicyStoreError("policy store \(path) cannot be opened: \(error)")
        }
        // Once the file is there, in WAL mode.
        checkpointer = WALCheckpointer(writer: queue)
    }

    /// Opens the file in WAL mode and migrates it, trying again while another process holds a lock that SQLite
    /// will not wait for.
    ///
    /// Switching a file to WAL (`PRAGMA journal_mode = WAL`, which GRDB runs on opening) reads it under a shared lock
    /// and then asks for an exclusive one. While another process holds the write lock, SQLite answers SQLITE_BUSY at
    /// once instead of calling the busy handler (waiting there could deadlock), so the busy timeout never applies:
    /// six `corral policy explain` processes opening one new file together lost one of them to "database is locked"
    /// about once in twenty runs on a loaded machine. Each attempt opens a new connection, so no lock is held between
    /// attempts.
    private static func open(path: String, configuration: Configuration, patience: Duration) throws -> DatabaseQueue {
        let deadline = ContinuousClock.now + patience
        var pause = Duration.milliseconds(1)
        while true {
            do {
                let queue = try DatabaseQueue(path: path, configuration: configuration)
                try queue.writeWithoutTransaction { db in
                    // NORMAL is durable against process crashes in WAL mode; only power loss can drop the last
                    // commits.
                    try db.execute(sql: "PRAGMA synchronous = NORMAL")
                    try migrate(db)
                }
                return queue
            } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY && ContinuousClock.now < deadline {
                usleep(UInt32(pause / .microseconds(1)))
                pause = min(pause * 2, .milliseconds(50))
            }
        }
    }

    /// The schema, by version (`PRAGMA user_version`); a new version is a new entry, never an edit of an old one.
    /// Version 1 says IF NOT EXISTS: files written before the versioning hold its table already.
    private static let migrations = [
        """
        CREATE TABLE IF NOT EXISTS policy_counters (
            scope TEXT NOT NULL,
            scope_id TEXT NOT NULL,
            tool TEXT NOT NULL,
            counter TEXT NOT NULL,
            window_start_ms INTEGER NOT NULL,
            value INTEGER NOT NULL,
            expires_at_ms INTEGER NOT NULL,
            PRIMARY KEY (scope, scope_id, tool, counter, window_start_ms)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE policy_claims (token TEXT PRIMARY KEY, expires_at_ms INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE policy_task_owners (
            handle TEXT PRIMARY KEY, grant_id TEXT NOT NULL, expires_at_ms INTEGER NOT NULL
        ) WITHOUT ROWID;
        """,
    ]

    /// Reads the version and applies what is missing in one IMMEDIATE transaction: processes opening a new file
    /// together queue on the write lock, and each finds the work done or does it whole.
    private static func migrate(_ db: Database) throws {
        try db.inTransaction(.immediate) {
            let version = try Int.fetchOne(db, sql: "PRAGMA user_version") ?? 0
            guard version <= migrations.count else {
                throw PolicyStoreError(
                    "its schema is version \(version), newer than this corral knows (\(migrations.count)); upgrade corral")
            }
            for statements in migrations[version...] { try db.execute(sql: statements) }
            try db.execute(sql: "PRAGMA user_version = \(migrations.count)")
            return .commit
        }
    }

    private static let selectSQL = """
        SELECT value FROM policy_counters
        WHERE scope = ? AND scope_id = ? AND tool = ? AND counter = ? AND window_start_ms = ?
        """
    private static let upsertSQL = """
        INSERT INTO policy_counters (scope, scope_id, tool, counter, window_start_ms, value, expires_at_ms)
        VALUES (?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (scope, scope_id, tool, counter, window_start_ms) DO UPDATE SET value = value + excluded.value, expires_at_ms = MAX(expires_at_ms, excluded.expires_at_ms)
        """

    /// Whether this write should also drop what has expired.
    private var purgeDue: Bool { writes.add(1, ordering: .relaxed).newValue % purgeInterval == 0 }

    private static func purge(_ db: Database, nowMs: Int64) throws {
        try db.execute(sql: "DELETE FROM policy_counters WHERE expires_at_ms <= ?", arguments: [nowMs])
        try db.execute(sql: "DELETE FROM policy_claims WHERE expires_at_ms <= ?", arguments: [nowMs])
        try db.execute(sql: "DELETE FROM policy_task_owners WHERE expires_at_ms <= ?", arguments: [nowMs])
    }

    public func reserve(_ requests: [CounterRequest], nowMs: Int64) async throws(PolicyStoreError) -> ReserveOutcome {
        let purge = purgeDue
        return try await run { db in
            var outcome = ReserveOutcome.refused(current: [])
            try db.inTransaction(.immediate) {
                if purge { try Self.purge(db, nowMs: nowMs) }
                let current = try requests.map { try Self.value(db, $0.key) }
                let fits = zip(requests, current).allSatisfy { request, value in value <= request.max - request.amount }
                guard fits else {
                    outcome = .refused(current: current)
                    return .rollback
                }
                let upsert = try db.cachedStatement(sql: Self.upsertSQL)
                for request in requests {
                    let key = request.key
                    try upsert.execute(arguments: [
                        key.scope.rawValue, key.scopeID, key.tool, key.counter, key.windowStartMs, request.amount,
                        request.expiresAtMs,
                    ])
                }
                outcome = .reserved(valuesAfter: zip(current, requests).map { $0 + $1.amount })
                return .commit
            }
            return outcome
        }
    }

    public func release(_ requests: [CounterRequest]) async throws(PolicyStoreError) {
        try await run { db in
            try db.inTransaction(.immediate) {
                for request in requests {
                    let key = request.key
                    try db.execute(
                        sql: """
                            UPDATE policy_counters SET value = MAX(0, value - ?)
                            WHERE scope = ? AND scope_id = ? AND tool = ? AND counter = ? AND window_start_ms = ?
                            """,
                        arguments: [request.amount, key.scope.rawValue, key.scopeID, key.tool, key.counter, key.windowStartMs])
                }
                return .commit
            }
        }
    }

    public func values(_ keys: [CounterKey]) async throws(PolicyStoreError) -> [Int] {
        try await run { db in try keys.map { try Self.value(db, $0) } }
    }

    public func claimOnce(_ token: String, expiresAtMs: Int64, nowMs: Int64) async throws(PolicyStoreError) -> Bool {
        let purge = purgeDue
        return try await run { db in
            var claimed = false
            try db.inTransaction(.immediate) {
                if purge { try Self.purge(db, nowMs: nowMs) }
                // An expired record no longer guards anything: it is replaced.
                try db.execute(
                    sql: """
                        INSERT INTO policy_claims (token, expires_at_ms) VALUES (?, ?)
                        ON CONFLICT (token) DO UPDATE SET expires_at_ms = excluded.expires_at_ms
                        WHERE policy_claims.expires_at_ms <= ?
                        """,
                    arguments: [token, expiresAtMs, nowMs])
                claimed = db.changesCount == 1
                return .commit
            }
            return claimed
        }
    }

    public func recordOwner(of handle: String, grant: String, expiresAtMs: Int64, nowMs: Int64) async throws(PolicyStoreError) {
        let purge = purgeDue
        try await run { db in
            try db.inTransaction(.immediate) {
                if purge { try Self.purge(db, nowMs: nowMs) }
                try db.execute(
                    sql: "INSERT INTO policy_task_owners (handle, grant_id, expires_at_ms) VALUES (?, ?, ?) ON CONFLICT (handle) DO NOTHING",
                    arguments: [handle, grant, expiresAtMs])
                return .commit
            }
        }
    }

    public func owner(of handle: String, nowMs: Int64) async throws(PolicyStoreError) -> String? {
        try await run { db in
            try String.fetchOne(
                db, sql: "SELECT grant_id FROM policy_task_owners WHERE handle = ? AND expires_at_ms > ?",
                arguments: [handle, nowMs])
        }
    }

    private static func value(_ db: Database, _ key: CounterKey) throws -> Int {
        let statement = try db.cachedStatement(sql: selectSQL)
        return try Int.fetchOne(
            statement, arguments: [key.scope.rawValue, key.scopeID, key.tool, key.counter, key.windowStartMs]) ?? 0
    }

    /// Runs on the serialized connection, outside GRDB's implicit transaction (we open our own IMMEDIATE one), off
    /// the caller's thread (a busy timeout must not hold a thread of the concurrency pool).
    private func run<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws(PolicyStoreError) -> T {
        do {
            return try await queue.writeWithoutTransaction(body)
        } catch {
            throw PolicyStoreError("policy store failed: \(error)")
        }
    }
}
