import CorralJSON
import Foundation
import SQLiteWAL
import XCTest

@testable import TaskRuntime

/// The task store's write-ahead log is checkpointed off the commit path: a commit that fills the log past SQLite's
/// threshold queues a checkpoint on another connection instead of running one (fsyncs included) itself.
final class WALCheckpointTests: XCTestCase {
    var directory = ""

    override func setUp() {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("corral-wal-\(UUID().uuidString)").path
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func testCommitsDoNotCheckpointAndTheCheckpointerKeepsTheLogBounded() throws {
        let store = try TaskStore(path: directory + "/tasks.sqlite")
        let walPath = directory + "/tasks.sqlite-wal"
        let pageSize = 4096
        let threshold = Int(WALCheckpointer.thresholdPages) * pageSize
        let payload = JSONValue.string(String(repeating: "x", count: 3000))
        func append(until walBytes: Int) throws {
            var appended = 0
            while fileSize(walPath) < walBytes {
                _ = try store.appendEvent(.init(type: "info", message: "m", data: payload), taskID: "t", at: Date())
                appended += 1
                XCTAssertLessThan(appended, 100_000, "the log never grew")
                if appended >= 100_000 { return }
            }
        }

        // With checkpoints held back, the log grows well past the threshold: no commit checkpointed by itself (an
        // automatic checkpoint would have started the log over at about the threshold).
        store.checkpointer.holdCheckpoints(true)
        try append(until: threshold * 3 / 2)
        XCTAssertGreaterThan(fileSize(walPath), threshold * 3 / 2)

        // Released, the next commit queues a checkpoint, which runs on the checkpointer's own connection.
        store.checkpointer.holdCheckpoints(false)
        _ = try store.appendEvent(.init(type: "info", message: "m", data: payload), taskID: "t", at: Date())
        let deadline = Date().addingTimeInterval(10)
        while store.checkpointer.checkpointCount == 0 && Date() < deadline { usleep(1000) }
        XCTAssertGreaterThanOrEqual(store.checkpointer.checkpointCount, 1)

        // Without background checkpoints (held back, as when a writer never pauses or the checkpointer has no
        // connection), the writer's own commits checkpoint past `inlinePages`: three times that many pages written
        // leave the log at about that size.
        store.checkpointer.holdCheckpoints(true)
        let grown = fileSize(walPath)
        let bound = max(grown, Int(WALCheckpointer.inlinePages) * pageSize) + threshold / 4
        var written = 0
        while written < 3 * Int(WALCheckpointer.inlinePages) * pageSize {
            let before = fileSize(walPath)
            _ = try store.appendEvent(.init(type: "info", message: "m", data: payload), taskID: "t", at: Date())
            written += max(fileSize(walPath) - before, 3 * pageSize)
            XCTAssertLessThanOrEqual(fileSize(walPath), bound, "the log kept growing")
            if fileSize(walPath) > bound { break }
        }
        store.checkpointer.holdCheckpoints(false)
        XCTAssertTrue(store.checkpointer.isActive)
        XCTAssertEqual(try store.events(taskID: "t", limit: 1).count, 1)
    }

    /// A checkpoint that a writer overtakes leaves the log as long as it was; the next is queued only once another
    /// threshold's worth was written, not at every commit (which ran one checkpoint per commit, each reading the
    /// whole log's index).
    func testAWriterThatNeverPausesQueuesACheckpointPerThresholdNotPerCommit() throws {
        let store = try TaskStore(path: directory + "/tasks.sqlite")
        let walPath = directory + "/tasks.sqlite-wal"
        let payload = JSONValue.string(String(repeating: "x", count: 3000))
        var pagesWritten = 0
        var lastSize = fileSize(walPath)
        for _ in 0..<1500 {
            _ = try store.appendEvent(.init(type: "info", message: "m", data: payload), taskID: "t", at: Date())
            let size = fileSize(walPath)
            pagesWritten += max(size - lastSize, 0) / 4096 + (size == lastSize ? 3 : 0)
            lastSize = size
        }
        usleep(200_000)  // the last queued checkpoint finishes
        let allowed = pagesWritten / Int(WALCheckpointer.thresholdPages) + 2
        XCTAssertGreaterThanOrEqual(store.checkpointer.checkpointCount, 1)
        XCTAssertLessThanOrEqual(store.checkpointer.checkpointCount, allowed, "\(pagesWritten) pages written")
    }

    private func fileSize(_ path: String) -> Int {
        var status = stat()
        return stat(path, &status) == 0 ? Int(status.st_size) : 0
    }
}
