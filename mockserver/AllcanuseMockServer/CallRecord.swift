import CorralJSON
import MCPCore
import Foundation
import Synchronization

/// Every tool call that reached the mock, in order: what gateway tests check against what the client was told.
/// `--call-log FILE` appends one JSON line per `tools/call` (`{"seq","time","tool","arguments","executed"}`, and
/// `"refused_by"` with the rule when the mock's own policy refused it, so `executed` is false), and one per
/// `tasks/*` request (`{"seq","time","method","task_id"}`). Arguments are kept as sent, because this is a test
/// server and the values are the point. A call whose line cannot be written (a full disk) is not run: the mock
/// answers it with an error instead, so that the log never misses a call that ran.
public final class CallRecord: Sendable {
    private let file: JSONLinesFile
    /// Numbers the lines; held while writing, so the file is in `seq` order.
    private let sequence = Mutex(0)

    /// Appends to `path` (created if missing).
    public init(path: String) throws(JSONLinesFileError) {
        file = try JSONLinesFile(appendingTo: path)
    }

    func record(tool: String, arguments: JSONValue?, refusedBy rule: String?) throws(JSONRPCError) {
        var line: JSONValue = ["tool": .string(tool), "arguments": arguments ?? [:], "executed": .bool(rule == nil)]
        if let rule { line = line.merging(["refused_by": .string(rule)]) }
        try append(line)
    }

    /// A `tasks/*` request (Tasks extension) and the handle it names.
    func record(taskMethod method: String, taskID: String?) throws(JSONRPCError) {
        try append(["method": .string(method), "task_id": taskID.map(JSONValue.string) ?? .null])
    }

    private func append(_ fields: JSONValue) throws(JSONRPCError) {
        let failure = sequence.withLock { sequence -> JSONLinesFileError? in
            do throws(JSONLinesFileError) {
                try file.append(fields.merging(["seq": .int(sequence + 1), "time": .string(Timestamp.format(Date()))]))
                sequence += 1
                return nil
            } catch {
                return error
            }
        }
        if let failure { throw .internalError("not run: the call log could not record it (\(failure))") }
    }

    /// Reads a call log back (for tests and `corral conformance`). A line a full disk cut short is skipped: it is
    /// what is left of a call that was refused, not run, because its line could not be written.
    public static func read(path: String) throws -> [JSONValue] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        return text.split(separator: "\n").compactMap { try? JSONValue.parse(Data($0.utf8)) }
    }
}
