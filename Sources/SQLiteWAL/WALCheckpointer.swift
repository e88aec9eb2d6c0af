import Dispatch
import GRDB
import GRDBSQLite
import Synchronization

/// Copies a SQLite store's write-ahead log back into the database off the commit path.
///
/// SQLite's automatic checkpoint runs inside the commit that fills the log past 1,000 pages, fsyncs included: in the
/// task store, one status change in about seventy took 15 ms (144 ms once) while a waiter waited for its answer. Here
/// the writer's commit only notes the log's size (`sqlite3_wal_hook`, which replaces the automatic checkpoint on that
/// connection), and a connection of its own checkpoints on a utility queue (PASSIVE: it waits for no reader and no
/// writer; a writer appends to the log meanwhile and starts it over once everything was copied). A writer that never
/// pauses outruns PASSIVE checkpoints (each copies what was there when it started), so past `restartPages` the
/// checkpoint waits for the writers instead (RESTART) and the log stays bounded. GRDB has no hook of its own for
/// this, hence the C API.
public final class WALCheckpointer: Sendable {
    /// SQLite's own default for `wal_autocheckpoint`.
    public static let thresholdPages: Int32 = 1000
    /// The log's size past which a checkpoint holds the writers back until it is done.
    public static let restartPages: Int32 = 4 * thresholdPages

    private let path: String
    private let queue = DispatchQueue(label: "corral.sqlite.checkpoint", qos: .utility)
    /// The checkpoints' connection, opened as the store opens (on `queue`, off the start's path) and kept: SQLite
    /// keeps a closed connection's descriptors while other connections of the process hold locks on the file, so
    /// one opened per checkpoint left descriptors behind after the first.
    private let connection = Mutex<DatabaseQueue?>(nil)
    private let scheduled = Atomic<Bool>(false)
    private let held = Atomic<Bool>(false)
    private let logPages = Atomic<Int32>(0)
    private let completed = Atomic<Int>(0)

    /// `path` must be an existing database in WAL mode (its store opened): the connection opened here must neither
    /// create the file (with the default mode) nor race the store's own setup.
    public init(path: String) {
        self.path = path
        queue.async { [self] in connection.withLock { $0 = try? Self.open(path) } }
    }

    /// Checkpoints run so far (for tests).
    public var checkpointCount: Int { completed.load(ordering: .relaxed) }

    /// Makes `writer` report its log's size here instead of checkpointing in its commits. `self` must outlive the
    /// hook: `detach` before it goes.
    public func attach(to writer: Database) {
        sqlite3_wal_hook(writer.sqliteConnection, walHook, Unmanaged.passUnretained(self).toOpaque())
    }

    public func detach(from writer: Database) {
        sqlite3_wal_hook(writer.sqliteConnection, nil, nil)
    }

    /// Called by the writer's commits with the log's size in pages: at most one checkpoint is queued at a time.
    fileprivate func logGrew(to pages: Int32) {
        logPages.store(pages, ordering: .relaxed)
        guard pages >= Self.thresholdPages, !held.load(ordering: .acquiring),
            !scheduled.exchange(true, ordering: .acquiringAndReleasing)
        else { return }
        queue.async { [self] in
            defer { scheduled.store(false, ordering: .releasing) }
            checkpoint()
        }
    }

    /// For tests that must see what commits do alone: while held, commits queue no checkpoint; once released, the
    /// next commit past the threshold queues one.
    public func holdCheckpoints(_ hold: Bool) {
        held.store(hold, ordering: .releasing)
    }

    /// Checkpoints now, on the calling thread. A failure (the file gone, the writers busy past the timeout) leaves
    /// the log longer; the next commit past the threshold tries again.
    public func checkpoint() {
        connection.withLock { connection in
            let mode: Database.CheckpointMode =
                logPages.load(ordering: .relaxed) >= Self.restartPages ? .restart : .passive
            do {
                if connection == nil { connection = try Self.open(path) }
                try connection?.writeWithoutTransaction { try $0.checkpoint(mode) }
                completed.add(1, ordering: .relaxed)
            } catch {
                return
            }
        }
    }

    private static func open(_ path: String) throws -> DatabaseQueue {
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        return try DatabaseQueue(path: path, configuration: configuration)
    }
}

private func walHook(
    _ context: UnsafeMutableRawPointer?, _ connection: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ pages: Int32
) -> Int32 {
    guard let context else { return SQLITE_OK }
    Unmanaged<WALCheckpointer>.fromOpaque(context).takeUnretainedValue().logGrew(to: pages)
    return SQLITE_OK
}
