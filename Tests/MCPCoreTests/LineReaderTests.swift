import Foundation
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
}
