import CorralJSON
import Foundation
import Synchronization

/// Every tool call that reached the mock, in order: what gateway tests check against what the client was told.
/// `--call-log FILE` appends one JSON line per `tools/call` (`{"seq","time","tool","arguments","executed"}`, and
/// `"refused_by"` with the rule when the mock's own policy refused it, so `executed` is false). Arguments are kept
/// as sent, because this is a test server and the values are the point.
public final class CallRecord: Sendable {
    private let file: JSONLinesFile
    /// Numbers the lines; held while writing, so the file is in `seq` order.
    private let sequence = Mutex(0)

    /// Appends to `path` (created if missing).
    public init(path: String) throws(JSONLinesFileError) {
        file = try JSONLinesFile(appendingTo: path)
    }

    func record(tool: String, arguments: JSONValue?, refusedBy rule: String?) {
        sequence.withLock { sequence in
            sequence += 1
            var line: JSONValue = [
                "seq": .int(sequence),
                "time": .string(Date().formatted(.iso8601.time(includingFractionalSeconds: true).year().month().day())),
                "tool": .string(tool), "arguments": arguments ?? [:], "executed": .bool(rule == nil),
            ]
            if let rule { line = line.merging(["refused_by": .string(rule)]) }
            file.append(line)
        }
    }

    /// Reads a call log back (for tests and `corral conformance`).
    public static func read(path: String) throws -> [JSONValue] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        return try text.split(separator: "\n").map { try JSONValue.parse(Data($0.utf8)) }
    }
}
