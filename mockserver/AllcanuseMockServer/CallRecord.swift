import CorralJSON
import Foundation
import Synchronization

/// Every tool call that reached the mock, in order: what gateway tests check against what the client was told.
/// `--call-log FILE` appends one JSON line per `tools/call` (`{"seq","time","tool","arguments","executed"}`, and
/// `"refused_by"` with the rule when the mock's own policy refused it, so `executed` is false), and one per
/// `tasks/*` request (`{"seq","time","method","task_id"}`). Arguments are kept as sent, because this is a test
/// server and the values are the point.
public final class CallRecord: Sendable {
    private let file: JSONLinesFile
    /// Numbers the lines; held while writing, so the file is in `seq` order.
    private let sequence = Mutex(0)

    /// Appends to `path` (created if missing).
    public init(path: String) throws(JSONLinesFileError) {
        file = try JSONLinesFile(appendingTo: path)
    }

    func record(tool: String, arguments: JSONValue?, refusedBy rule: String?) {
        var line: JSONValue = ["tool": .string(tool), "arguments": arguments ?? [:], "executed": .bool(rule == nil)]
        if let rule { line = line.merging(["refused_by": .string(rule)]) }
        append(line)
    }

    /// A `tasks/*` request (Tasks extension) and the handle it names.
    func record(taskMethod method: String, taskID: String?) {
        append(["method": .string(method), "task_id": taskID.map(JSONValue.string) ?? .null])
    }

    private func append(_ fields: JSONValue) {
        sequence.withLock { sequence in
            sequence += 1
            file.append(
                fields.merging(["seq": .int(sequence), "time": .string(Timestamp.format(Date()))]))
        }
    }

    /// Reads a call log back (for tests and `corral conformance`).
    public static func read(path: String) throws -> [JSONValue] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        return try text.split(separator: "\n").map { try JSONValue.parse(Data($0.utf8)) }
    }
}
