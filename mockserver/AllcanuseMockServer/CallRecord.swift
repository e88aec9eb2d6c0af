import CorralJSON
import Foundation
import Synchronization

/// Every tool call that reached the mock, in order: what gateway tests check against what the client was told.
/// `--call-log FILE` appends one JSON line per `tools/call` (`{"seq","time","tool","arguments","executed"}`, and
/// `"refused_by"` with the rule when the mock's own policy refused it, so `executed` is false). Arguments are kept
/// as sent, because this is a test server and the values are the point.
public final class CallRecord: Sendable {
    private struct State {
        var sequence = 0
        var file: FileHandle?
    }

    private let state: Mutex<State>

    /// Appends to `path` (created if missing). Each line is written with one `write`, so readers see whole lines.
    public init(path: String) throws {
        if !FileManager.default.fileExists(atPath: path) {
            guard FileManager.default.createFile(atPath: path, contents: nil) else {
                throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
            }
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seekToEnd()
        state = Mutex(State(file: handle))
    }

    func record(tool: String, arguments: JSONValue?, refusedBy rule: String?) {
        state.withLock { state in
            state.sequence += 1
            let line: JSONValue = [
                "seq": .int(state.sequence),
                "time": .string(Date().formatted(.iso8601.time(includingFractionalSeconds: true).year().month().day())),
                "tool": .string(tool), "arguments": arguments ?? [:], "executed": .bool(rule == nil),
            ]
            let entry = rule.map { line.merging(["refused_by": .string($0)]) } ?? line
            state.file?.write(Data((entry.jsonString() + "\n").utf8))
        }
    }

    /// Reads a call log back (for tests and `corral conformance`).
    public static func read(path: String) throws -> [JSONValue] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        return try text.split(separator: "\n").map { try JSONValue.parse(Data($0.utf8)) }
    }
}
