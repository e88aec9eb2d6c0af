import Foundation
import Testing

@testable import CorralJSON

@Suite struct JSONLinesFileTests {
    /// Two writers on one path (as two proxies sharing an audit log), several threads each: every line lands whole
    /// and none overwrites another (a handle positioned at the end once would).
    @Test func concurrentWritersKeepEveryLine() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("corral-lines-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let writers = [try JSONLinesFile(appendingTo: path), try JSONLinesFile(appendingTo: path)]
        try await withThrowingTaskGroup(of: Void.self) { group in
            for thread in 0..<8 {
                group.addTask {
                    for n in 0..<250 {
                        try writers[thread % 2].append(["thread": .int(thread), "n": .int(n), "pad": .string(String(repeating: "x", count: 200))])
                    }
                }
            }
            try await group.waitForAll()
        }
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 2000)
        let parsed = try lines.map { try JSONValue.parse(Data($0.utf8)) }
        #expect(Set(parsed.map { "\($0["thread"]?.intValue ?? -1)-\($0["n"]?.intValue ?? -1)" }).count == 2000)
    }

    @Test func aPathThatCannotBeOpenedSaysWhy() {
        #expect(throws: JSONLinesFileError.self) { try JSONLinesFile(appendingTo: "/nonexistent-dir/x.jsonl") }
    }

    /// A write that fails is an error the caller sees, never a line silently lost.
    @Test func aFailedWriteIsAnError() throws {
        let full = try JSONLinesFile(appendingTo: "/dev/full")
        let error = try #require(throws: JSONLinesFileError.self) { try full.append(["a": 1]) }
        #expect(error.operation == .append)
        #expect(error.description == "cannot append to /dev/full: \(String(cString: strerror(ENOSPC)))")
    }

    /// A real full file system (a tmpfs of two pages): the line that does not fit lands partly and throws; once
    /// there is room again, the next line starts on a line of its own instead of being glued onto the fragment.
    @Test(.enabled(if: getuid() == 0, "mounting a tmpfs needs root"))
    func aLineCutByAFullDiskLeavesTheNextOneWhole() throws {
        try withFullDisk { directory, filler, page in
            let file = try JSONLinesFile(appendingTo: directory + "/lines.jsonl")
            let lineLength = page / 4 - 24
            let line: (Int) -> JSONValue = { ["n": .int($0), "pad": .string(String(repeating: "x", count: lineLength))] }
            var written = 0
            var failure: JSONLinesFileError?
            while failure == nil && written < 10 {
                do throws(JSONLinesFileError) {
                    try file.append(line(written))
                    written += 1
                } catch {
                    failure = error
                }
            }
            #expect(written == 4, "four lines of a bit less than a quarter page fit in the free page")
            #expect(failure?.reason == String(cString: strerror(ENOSPC)))
            try FileManager.default.removeItem(atPath: filler)
            try file.append(line(99))
            let lines = try String(contentsOfFile: directory + "/lines.jsonl", encoding: .utf8)
                .split(separator: "\n", omittingEmptySubsequences: false)
            #expect(lines.count == 7, "four lines, the cut one, the next one and the empty end")
            #expect(lines[4].count == page - lines[0..<4].reduce(0) { $0 + $1.count + 1 }, "the cut line holds what fitted")
            #expect((try? JSONValue.parse(String(lines[4]))) == nil)
            #expect(try JSONValue.parse(String(lines[5])) == line(99))
            #expect(lines[6].isEmpty)
        }
    }

    /// A line that lands whole but for its line feed reads as written: it counts (the call it records goes on), and
    /// the next line brings the break.
    @Test(.enabled(if: getuid() == 0, "mounting a tmpfs needs root"))
    func aLineShortOfOnlyItsLineFeedCounts() throws {
        try withFullDisk { directory, filler, page in
            let file = try JSONLinesFile(appendingTo: directory + "/lines.jsonl")
            let first = Array(repeating: UInt8(ascii: "1"), count: page / 2 - 1) + [0x0A]
            let second = Array(repeating: UInt8(ascii: "2"), count: page / 2) + [0x0A]  // its line feed does not fit
            try file.append(line: first)
            try file.append(line: second)
            #expect(throws: JSONLinesFileError.self) { try file.append(line: Array("3\n".utf8)) }
            try FileManager.default.removeItem(atPath: filler)
            try file.append(line: Array("4\n".utf8))
            let text = try String(contentsOfFile: directory + "/lines.jsonl", encoding: .utf8)
            #expect(text == String(decoding: first + second + Array("4\n".utf8), as: UTF8.self))
        }
    }

    /// A tmpfs of two pages whose first page a filler file takes: `body` gets its path, the filler's and the page size.
    private func withFullDisk(_ body: (String, String, Int) throws -> Void) throws {
        let page = sysconf(Int32(_SC_PAGESIZE))
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("corral-full-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        guard mount("tmpfs", directory, "tmpfs", 0, "size=\(2 * page),mode=0700") == 0 else {
            Issue.record("mount tmpfs at \(directory): \(String(cString: strerror(errno)))")
            return
        }
        defer { umount2(directory, Int32(MNT_DETACH)) }  // detached even if a file on it is still open
        let filler = directory + "/filler"
        try Data(count: page).write(to: URL(fileURLWithPath: filler))
        try body(directory, filler, page)
    }
}
