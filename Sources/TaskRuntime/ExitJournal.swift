import CorralJSON
import Foundation
import Glibc

/// Ends of tasks that their waiters were told of before the store committed them.
///
/// A task's end is a SQLite transaction of 200-300 µs (its CPU and its page writes). The waiters of an exit are
/// answered first, and the transaction runs behind their answers; one line here, one `write(2)` of about 1.5 KB, is
/// what makes that safe: if the server dies between an answer and its commit, the next start commits the line, so the
/// store says what a client was told. The same durability as the store's own commits (WAL with
/// `synchronous=NORMAL`): a crash of the process loses nothing, a power loss may.
///
/// Lines of ends already committed are harmless (a replay applies only an end the store does not have yet), so the
/// file is emptied only now and then, once it is large and everything in it is committed.
final class ExitJournal {
    struct Entry: Sendable {
        var record: TaskRecord
        var event: TaskEvent
    }

    let path: String
    private let descriptor: Int32
    private var bytesSinceClear = 0
    /// Past this the file is emptied at the next moment that nothing in it awaits its commit.
    private static let clearThreshold = 64 * 1024

    init(path: String) throws(RuntimeError) {
        let fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw RuntimeError.system("open \(path)", errno) }
        self.path = path
        descriptor = fd
        bytesSinceClear = Int(lseek(fd, 0, SEEK_END))
    }

    deinit { close(descriptor) }

    /// Appends the end in one `write(2)`: a crash leaves either the whole line or a torn last line, which a replay
    /// skips (its end was never told: the answer is written after this returns).
    func append(_ entry: Entry) throws(RuntimeError) {
        var line = Array("{\"event\":".utf8)
        line.append(contentsOf: Self.eventText(entry.event).utf8)
        line.append(contentsOf: ",\"record\":".utf8)
        line.append(contentsOf: entry.record.jsonText.utf8)
        line.append(contentsOf: "}\n".utf8)
        let written = line.withUnsafeBytes { bytes -> Int in
            var result: Int
            repeat { result = write(descriptor, bytes.baseAddress, bytes.count) } while result < 0 && errno == EINTR
            return result
        }
        guard written == line.count else {
            let code = written < 0 ? errno : EIO
            // A short write left part of a line: end it, so that the next line is whole.
            if written > 0 { _ = write(descriptor, "\n", 1) }
            throw RuntimeError.system("write \(path)", code)
        }
        bytesSinceClear += line.count
    }

    var isLarge: Bool { bytesSinceClear >= Self.clearThreshold }

    /// Empties the file; only when every end in it is committed.
    func clear() throws(RuntimeError) {
        guard ftruncate(descriptor, 0) == 0 else { throw RuntimeError.system("ftruncate \(path)", errno) }
        bytesSinceClear = 0
    }

    /// The ends in the file, oldest first. A line that does not read as an end (the torn last line of a crash) is
    /// skipped and counted.
    func entries() -> (entries: [Entry], unreadable: Int) {
        guard let data = FileManager.default.contents(atPath: path) else { return ([], 0) }
        var entries: [Entry] = []
        var unreadable = 0
        for line in data.split(separator: UInt8(ascii: "\n")) where !line.isEmpty {
            guard let value = try? JSONValue.parse(Data(line)), let entry = Self.entry(value) else {
                unreadable += 1
                continue
            }
            entries.append(entry)
        }
        return (entries, unreadable)
    }

    private static func eventText(_ event: TaskEvent) -> String {
        var text = JSONObjectWriter()
        text.member("data", event.data)
        text.member("event_id", event.eventID)
        text.member("message", event.message)
        text.member("sequence", Int(clamping: event.sequence))
        text.member("task_id", event.taskID)
        text.member("timestamp", Timestamp.format(event.timestamp))
        text.member("type", event.type)
        return text.string()
    }

    private static func entry(_ value: JSONValue) -> Entry? {
        guard let recordValue = value["record"], let record = TaskRecord(json: recordValue),
            let event = value["event"], let sequence = event["sequence"]?.intValue,
            let eventID = event["event_id"]?.stringValue, let taskID = event["task_id"]?.stringValue,
            taskID == record.taskID, let timestamp = event["timestamp"]?.stringValue.flatMap(Timestamp.parse),
            let type = event["type"]?.stringValue, let message = event["message"]?.stringValue,
            let data = event["data"]
        else { return nil }
        return Entry(
            record: record,
            event: TaskEvent(
                sequence: Int64(sequence), eventID: eventID, taskID: taskID, timestamp: timestamp, type: type,
                message: message, data: data))
    }
}
