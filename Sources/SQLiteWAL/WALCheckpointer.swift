import Dispatch
import GRDB
import GRDBSQLite
import Synchronization

/// Copies a SQLite store's write-ahead log back into the database off the commit path.
///
/// SQLite's automatic checkpoint runs inside the commit that fills the log past 1,000 pages, fsyncs included: in the
/// task store, one status change in about seventy took 15 ms (144 ms once) while a waiter waited for its answer. Here
/// the writer's commit only notes the log's size (`sqlite3_wal_hook`, which replaces the automatic checkpoint on that
/// connection), and a connection of the checkpointer's own runs PASSIVE checkpoints on a utility queue: they wait
/// for no reader and no writer, and a writer appends to the log meanwhile and starts it over once everything was
/// copied. A writer that never pauses outruns them (each copies what was there when it started), and a checkpointer
/// without its connection does nothing: past `inlinePages` the writer's commit checkpoints itself, PASSIVE, as
/// SQLite's automatic checkpoint does at 1,000, so the log stays bounded either way and no writer ever waits for a
/// checkpoint of another connection. GRDB has no hook of its own for this, hence the C API.
public final class WALCheckpointer: Sendable {
    /// SQLite's own default for `wal_autocheckpoint`: the log's size from which a checkpoint is queued.
    public static let thresholdPages: Int32 = 1000
    /// The log's size from which the writer's commits checkpoint themselves.
    public static let inlinePages: Int32 = 4 * thresholdPages

    private let queue = DispatchQueue(label: "corral.sqlite.checkpoint", qos: .utility)
    /// The store's writer, whose commits report here (kept, so that the hook goes before the connection does).
    private let writer: any DatabaseWriter
    /// Opened with the checkpointer, once the store's file exists in WAL mode, and kept: a connection opened later
    /// would create the file (GRDB always opens with SQLITE_OPEN_CREATE) if it was gone, with the default mode; and
    /// SQLite keeps a closed connection's descriptors while others of the process hold locks on the file. Nil when
    /// it could not be opened: then only the writer's own checkpoints past `inlinePages` run.
    private let connection: Mutex<DatabaseQueue?>
    private let scheduled = Atomic<Bool>(false)
    /// The log's size when the last checkpoint was queued (0 once the log started over): the next one waits until
    /// `thresholdPages` more were written. A checkpoint overtaken by a writer leaves the log as long as it was, and
    /// queuing another at every commit past the threshold ran one per commit, each reading the whole log's index
    /// (357 checkpoints for 1,100 appends, more instructions than the appends themselves).
    private let queuedAt = Atomic<Int32>(0)
    private let held = Atomic<Bool>(false)
    private let completed = Atomic<Int>(0)

    /// Takes over the checkpoints of `writer`'s store, which must be open, its file in WAL mode: its commits report
    /// their log's size here instead of checkpointing at 1,000 pages, until this checkpointer goes.
    public init(writer: any DatabaseWriter) {
        self.writer = writer
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        connection = Mutex(try? DatabaseQueue(path: writer.path, configuration: configuration))
        // Unretained: the hook is removed in deinit, before the checkpointer goes.
        let context = Unmanaged.passUnretained(self).toOpaque()
        _ = writer.writeWithoutTransaction { sqlite3_wal_hook($0.sqliteConnection, walHook, context) }
    }

    deinit {
        _ = writer.writeWithoutTransaction { sqlite3_wal_hook($0.sqliteConnection, nil, nil) }
    }

    /// Whether background checkpoints can run (their connection opened).
    public var isActive: Bool { connection.withLock { $0 != nil } }

    /// Background checkpoints run so far (for tests).
    public var checkpointCount: Int { completed.load(ordering: .relaxed) }

    /// For tests that must see what commits do alone: while held, commits queue no checkpoint; once released, the
    /// next commit past the threshold queues one.
    public func holdCheckpoints(_ hold: Bool) {
        held.store(hold, ordering: .releasing)
    }

    /// Called by the writer's commits with the log's size in pages: at most one checkpoint is queued at a time.
    fileprivate func logGrew(to pages: Int32, writer: OpaquePointer?, name: UnsafePointer<CChar>?) {
        if pages >= Self.inlinePages {
            // What SQLite's own hook does (sqlite3WalDefaultHook): a PASSIVE checkpoint by the writer, which no
            // append interrupts. An error leaves the log longer; the next commit tries again.
            _ = sqlite3_wal_checkpoint_v2(writer, name, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
            return
        }
        var last = queuedAt.load(ordering: .relaxed)
        if pages < last {  // started over
            queuedAt.store(0, ordering: .relaxed)
            last = 0
        }
        guard pages >= last + Self.thresholdPages, !held.load(ordering: .acquiring),
            !scheduled.exchange(true, ordering: .acquiringAndReleasing)
        else { return }
        queuedAt.store(pages, ordering: .relaxed)
        queue.async { [self] in
            defer { scheduled.store(false, ordering: .releasing) }
            checkpoint()
        }
    }

    /// A PASSIVE checkpoint now, on the calling thread, on the checkpointer's connection. A failure (the file gone)
    /// leaves the log longer; the next commit past the threshold tries again.
    public func checkpoint() {
        connection.withLock { connection in
            guard let connection, (try? connection.writeWithoutTransaction({ try $0.checkpoint(.passive) })) != nil
            else { return }
            completed.add(1, ordering: .relaxed)
        }
    }
}

private func walHook(
    _ context: UnsafeMutableRawPointer?, _ connection: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ pages: Int32
) -> Int32 {
    guard let context else { return SQLITE_OK }
    Unmanaged<WALCheckpointer>.fromOpaque(context).takeUnretainedValue().logGrew(
        to: pages, writer: connection, name: name)
    return SQLITE_OK
}
