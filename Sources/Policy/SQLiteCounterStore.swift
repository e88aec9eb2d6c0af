import GRDB
import Synchronization

/// Counters in a SQLite file (WAL), shared by every process that opens the same path.
///
/// Each reservation is one `BEGIN IMMEDIATE` transaction: the write lock is taken before the counters are read, so
/// concurrent processes queue on the busy timeout instead of reading a stale value (which a deferred transaction
/// would allow) — that is what keeps a `max: 10` counter exact across processes. Any SQLite error surfaces as a
/// `CounterStoreError`, and the evaluator denies the call.
public final class SQLiteCounterStore: CounterStore {
    private let queue: DatabaseQueue
    private let purgeInterval: Int
    private let reservations = Atomic<Int>(0)

    /// Opens (creating if needed) the counter table in the database at `path`.
    /// - Parameter busyTimeout: how long a writer waits for another process's lock before failing (closed).
    public init(path: String, busyTimeout: Double = 10, purgeInterval: Int = 1024) throws(CounterStoreError) {
        var configuration = Configuration()
        configuration.journalMode = .wal
        configuration.busyMode = .timeout(busyTimeout)
        configuration.label = "corral.policy.counters"
        self.purgeInterval = purgeInterval
        do {
            queue = try DatabaseQueue(path: path, configuration: configuration)
            try queue.writeWithoutTransaction { db in
                // NORMAL is durable against process crashes in WAL mode; only power loss can drop the last commits.
                try db.execute(sql: "PRAGMA synchronous = NORMAL")
                try db.inTransaction(.immediate) {
                    try db.execute(
                        sql: """
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
                            """)
                    return .commit
                }
            }
        } catch {
            throw CounterStoreError("counter store \(path) cannot be opened: \(error)")
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

    public func reserve(_ requests: [CounterRequest], nowMs: Int64) throws(CounterStoreError) -> ReserveOutcome {
        let purge = reservations.add(1, ordering: .relaxed).newValue % purgeInterval == 0
        return try run { db in
            var outcome = ReserveOutcome.refused(current: [])
            try db.inTransaction(.immediate) {
                if purge {
                    try db.execute(sql: "DELETE FROM policy_counters WHERE expires_at_ms <= ?", arguments: [nowMs])
                }
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

    public func release(_ requests: [CounterRequest]) throws(CounterStoreError) {
        try run { db in
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

    public func values(_ keys: [CounterKey]) throws(CounterStoreError) -> [Int] {
        try run { db in try keys.map { try Self.value(db, $0) } }
    }

    private static func value(_ db: Database, _ key: CounterKey) throws -> Int {
        let statement = try db.cachedStatement(sql: selectSQL)
        return try Int.fetchOne(
            statement, arguments: [key.scope.rawValue, key.scopeID, key.tool, key.counter, key.windowStartMs]) ?? 0
    }

    /// Runs on the serialized connection, outside GRDB's implicit transaction (we open our own IMMEDIATE one).
    private func run<T>(_ body: (Database) throws -> T) throws(CounterStoreError) -> T {
        do {
            return try queue.writeWithoutTransaction(body)
        } catch {
            throw CounterStoreError("policy counter store failed: \(error)")
        }
    }
}
