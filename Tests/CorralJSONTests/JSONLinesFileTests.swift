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
        await withTaskGroup(of: Void.self) { group in
            for thread in 0..<8 {
                group.addTask {
                    for n in 0..<250 {
                        writers[thread % 2].append(["thread": .int(thread), "n": .int(n), "pad": .string(String(repeating: "x", count: 200))])
                    }
                }
            }
        }
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 2000)
        let parsed = try lines.map { try JSONValue.parse(Data($0.utf8)) }
        #expect(Set(parsed.map { "\($0["thread"]?.intValue ?? -1)-\($0["n"]?.intValue ?? -1)" }).count == 2000)
    }

    @Test func aPathThatCannotBeOpenedSaysWhy() {
        #expect(throws: JSONLinesFileError.self) { try JSONLinesFile(appendingTo: "/nonexistent-dir/x.jsonl") }
    }
}
