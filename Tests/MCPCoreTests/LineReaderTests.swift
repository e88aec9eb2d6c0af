import Foundation
import Synchronization
import XCTest

@testable import MCPCore

final class LineReaderTests: XCTestCase {
    /// Lines split across reads, empty lines, a long line, and a last line without its newline.
    func testLinesSurviveAnyChunking() throws {
        let long = String(repeating: "x", count: 200_000)
        let text = "a\n\nbb\n\(long)\nccc\r\nlast"
        let pipe = Pipe()
        let writer = pipe.fileHandleForWriting
        let bytes = Array(text.utf8)
        let thread = Thread {
            var offset = 0
            var size = 1
            while offset < bytes.count {
                let end = min(bytes.count, offset + size)
                writer.write(Data(bytes[offset..<end]))
                offset = end
                size = size * 3 + 1  // 1, 4, 13, … bytes: boundaries fall everywhere
            }
            try? writer.close()
        }
        thread.start()
        var lines: [String] = []
        LineReader.readLines(from: pipe.fileHandleForReading) { lines.append(String(decoding: $0, as: UTF8.self)) }
        XCTAssertEqual(lines, ["a", "bb", long, "ccc\r", "last"])
    }

    /// A line written as pieces arrives as their concatenation and one newline, whatever their sizes: empty pieces,
    /// and a piece larger than the pipe (so the write goes out in several parts while the reader drains it).
    func testALineWrittenAsPiecesArrivesWholeWithOneNewline() throws {
        var fds: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&fds), 0)
        let big = String(repeating: "0123456789abcdef", count: 20_000)  // 320 KB, more than a 64 KiB pipe holds
        let pieces = [#"{"id":7,"result":"#, "", big, "é✓", "}"]
        let reader = fds[0]
        let received = Mutex<[Data]>([])
        let done = expectation(description: "reader finished")
        let thread = Thread {
            LineReader.readLines(from: reader) { line in received.withLock { $0.append(line) } }
            done.fulfill()
        }
        thread.start()
        XCTAssertTrue(writeLine(pieces, to: fds[1]))
        XCTAssertTrue(writeLine(["second"], to: fds[1]))
        close(fds[1])
        wait(for: [done], timeout: 30)
        close(fds[0])
        let lines = received.withLock { $0 }.map { String(decoding: $0, as: UTF8.self) }
        XCTAssertEqual(lines, [pieces.joined(), "second"])
    }

    /// A reader that is gone is a false return, not a SIGPIPE.
    func testWritingPiecesToAClosedPipeFailsWithoutASignal() throws {
        var fds: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&fds), 0)
        close(fds[0])
        XCTAssertFalse(writeLine(["a", "b"], to: fds[1]))
        XCTAssertEqual(errno, EPIPE)
        close(fds[1])
    }
}
