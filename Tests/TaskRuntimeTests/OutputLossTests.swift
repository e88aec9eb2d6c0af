import Foundation
import XCTest

@testable import TaskRuntime

/// A task's output on a disk that fills up: what could not be kept reads as a gap, never as other bytes at its
/// offset, and the task's end says how much was lost and why. The disk is a real tmpfs, filled by a file the test owns.
final class OutputLossTests: XCTestCase {
    private var directory = ""
    private var mounted: String?

    override func setUp() async throws {
        guard getuid() == 0 else { throw XCTSkip("mounting a tmpfs needs root (CI runs as root)") }
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("corral-loss-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDown() async throws {
        if let mounted { umount2(mounted, Int32(MNT_DETACH)) }  // detached even while a file on it is open
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Mounts a tmpfs of `size` bytes at `path` (created) and fills all of it but `free` bytes with `filler`.
    private func fullDisk(at path: String, size: Int, free: Int) throws -> String {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        guard mount("tmpfs", path, "tmpfs", 0, "size=\(size),mode=0755") == 0 else {
            throw XCTSkip("mount tmpfs at \(path): \(String(cString: strerror(errno)))")
        }
        mounted = path
        let filler = path + "/filler"
        try Data(count: size - free).write(to: URL(fileURLWithPath: filler))
        return filler
    }

    private static func pattern(_ range: Range<Int>) -> [UInt8] { range.map { UInt8(truncatingIfNeeded: $0 % 251) } }

    func testAFileAWriteFailedOnIsWrittenNoMore() throws {
        let page = sysconf(Int32(_SC_PAGESIZE))
        let filler = try fullDisk(at: directory + "/disk", size: 2 * page, free: page)
        let layout = OutputLayout(directory: directory + "/disk", stream: .stdout, limit: 16 * page)  // head: 8 pages
        let writer = StreamWriter(layout: layout)
        defer { writer.close() }
        let first = Self.pattern(0..<(page + 1000))
        first.withUnsafeBytes { writer.append($0) }
        XCTAssertEqual(writer.loss, OutputLoss(bytes: 1000, error: ENOSPC), "one page fits; the rest is lost")
        // Room again: the head, which failed, is not appended to (its next bytes would land at the wrong offset);
        // the first tail segment, a file of its own, is written.
        try FileManager.default.removeItem(atPath: filler)
        let second = Self.pattern((page + 1000)..<(8 * page + 500))
        second.withUnsafeBytes { writer.append($0) }
        XCTAssertEqual(writer.total, Int64(8 * page + 500))
        XCTAssertEqual(writer.loss.bytes, Int64(7 * page))
        let chunk = OutputReader.read(layout: layout, tailBytes: nil, offset: 0, maxBytes: 1 << 20)
        // The reader goes on across a dropped range to the next piece kept (and says the range was cut).
        XCTAssertEqual(
            chunk.bytes, Self.pattern(0..<page) + Self.pattern((8 * page)..<(8 * page + 500)),
            "the head is an exact prefix, and the segment holds its own range")
        XCTAssertTrue(chunk.truncated)
        let tail = OutputReader.read(layout: layout, tailBytes: 500, offset: nil, maxBytes: 1 << 20)
        XCTAssertEqual(tail.bytes, Self.pattern((8 * page)..<(8 * page + 500)), "the segment holds its own range")
        XCTAssertEqual(tail.offset, Int64(8 * page))
        XCTAssertEqual(tail.totalBytes, Int64(8 * page + 500))
        XCTAssertEqual(tail.droppedBytes, Int64(7 * page))
    }

    /// A real task whose output fills the disk its task directory is on: it completes, its end event says how many
    /// bytes of stdout were lost and why, and what it kept reads back exactly.
    func testATaskEndSaysWhatOutputItLost() async throws {
        let page = sysconf(Int32(_SC_PAGESIZE))
        // The store stays on the ordinary disk; only the task directories are on the small one.
        _ = try fullDisk(at: directory + "/tasks", size: 64 * page, free: 16 * page)
        let supervisor = try await TaskSupervisor.start(.init(stateDirectory: directory, graceMilliseconds: 300))
        addTeardownBlock { await supervisor.shutdown(cancelRunning: true) }  // before tearDown unmounts
        let script = "i=0; while [ $i -lt 2000 ]; do printf '%0100d\\n' $i; i=$((i+1)); done"
        let task = try await supervisor.create(
            TaskSpec(title: "chatty", command: .argv(["/bin/sh", "-c", script]), outputLimitBytes: 1 << 20))
        let outcome = try await supervisor.wait(for: task.taskID, timeout: .seconds(20))
        XCTAssertEqual(outcome.task.status, .completed)
        XCTAssertEqual(outcome.task.stdoutBytes, 2000 * 101)
        let last = try await supervisor.lastEvent(of: task.taskID)
        let end = try XCTUnwrap(last)
        let lost = try XCTUnwrap(end.data["output_lost_bytes"]?["stdout"]?.intValue, "\(end.data)")
        XCTAssertGreaterThan(lost, 0)
        XCTAssertTrue(
            end.message.hasSuffix("; \(lost) bytes of stdout could not be kept (\(String(cString: strerror(ENOSPC))))"),
            end.message)
        let kept = try await supervisor.output(of: task.taskID, stream: .stdout, offset: 0, maxBytes: 1 << 20)
        let head = directory + "/tasks/\(task.taskID)/stdout.head"
        let headSize = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: head)[.size] as? Int)
        XCTAssertGreaterThan(headSize, 0)
        let expected = (0..<2000).map { String(format: "%0100d\n", $0) }.joined()
        XCTAssertEqual(kept.bytes.count, headSize, "nothing was kept past the head, which the disk cut")
        XCTAssertEqual(kept.text, String(expected.prefix(headSize)), "what was kept is the task's own output, in place")
        XCTAssertEqual(kept.droppedBytes, Int64(lost))
        XCTAssertEqual(headSize + lost, 2000 * 101)
        // What was lost is at the stream's end here: a tail read says it did not get the real tail.
        let tail = try await supervisor.output(of: task.taskID, stream: .stdout, tailBytes: 100)
        XCTAssertTrue(tail.truncated)
        XCTAssertEqual(tail.totalBytes, 2000 * 101)
    }
}
