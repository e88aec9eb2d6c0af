import CorralJSON
import Foundation
import TaskRuntime

/// How the service shows tasks and events to a client: the Allcanuse task object (with the process fields of a
/// real task), its summary line and its last result.
extension AllcanuseService {
    /// The status a client sees: a running task an agent marked as waiting shows that mark.
    static func displayStatus(_ record: TaskRecord) -> String {
        record.displayStatus
    }

    /// How a command or sleep task ended; `{}` until it has, as the real server's empty `last_result`.
    static func lastResult(_ record: TaskRecord) -> JSONValue {
        guard record.status.isFinal else { return [:] }
        return [
            "exit_code": record.exitCode.map { .int(Int($0)) } ?? .null, "signal": record.signal.map { .int(Int($0)) } ?? .null,
            "stdout_bytes": .int(Int(record.stdoutBytes)), "stderr_bytes": .int(Int(record.stderrBytes)),
            "running_ms": .int(Int(record.runningMilliseconds)),
        ]
    }

    static func summary(_ record: TaskRecord) -> String {
        var text = "\(record.title) [\(record.kind)] is \(displayStatus(record))"
        if let pid = record.pid, !record.status.isFinal { text += " (pid \(pid))" }
        if let error = record.lastError { text += ": \(error)" }
        let steps = record.metadata["plan_steps"]?.arrayValue ?? []
        if !steps.isEmpty {
            let done = steps.filter { $0["status"]?.stringValue == "completed" }.count
            text += "; plan \(done)/\(steps.count) steps completed"
        }
        return text + "."
    }

    private static func orEmpty(_ value: JSONValue?) -> JSONValue {
        guard let value, !value.isNull else { return "" }
        return value
    }

    static func render(_ event: TaskEvent) -> JSONValue {
        [
            "event_id": .string(event.eventID), "task_id": .string(event.taskID),
            "timestamp": .string(Timestamp.format(event.timestamp)), "type": .string(event.type),
            "message": .string(event.message), "data": event.data, "sequence": .int(Int(event.sequence)),
        ]
    }

    /// When the task's running time reaches its timeout (paused time does not count): reckoned from now while it
    /// can still run, from its end once it is final. Nil without a timeout.
    static func deadline(_ record: TaskRecord, now: Date = Date()) -> Date? {
        guard let timeout = record.timeoutMilliseconds else { return nil }
        let left = Double(max(0, Int64(timeout) - record.runningMilliseconds)) / 1000
        return (record.status.isFinal ? record.completedAt ?? record.updatedAt : now).addingTimeInterval(left)
    }

    /// A time, or `""` when there is none: the real server's fields are empty strings until set, never null.
    private static func timeOrEmpty(_ date: Date?) -> JSONValue {
        date.map { .string(Timestamp.format($0)) } ?? ""
    }

    /// The Allcanuse task object, plus the process fields of a real task. Its own fields have the real server's
    /// types: a string field not yet set is `""`, `tags` `[]`, `last_result` and `last_event` `{}` (a client written
    /// for it may call string methods on them); the mock's process fields are null until known.
    func render(_ record: TaskRecord) async throws -> JSONValue {
        await render(record, lastEvent: try await supervisor.lastEvent(of: record.taskID))
    }

    /// The same, with the task's newest event already read (a listing reads them with its page).
    func render(_ record: TaskRecord, lastEvent last: TaskEvent?) async -> JSONValue {
        let meta = record.metadata
        let rendered: JSONValue = [
            "task_id": .string(record.taskID), "title": .string(record.title), "goal": Self.orEmpty(meta["goal"]),
            "task_type": .string(record.kind), "condition": meta["condition"] ?? [:],
            "status": .string(Self.displayStatus(record)), "priority": meta["priority"] ?? 50, "owner": Self.orEmpty(meta["owner"]),
            "tags": meta["tags"]?.arrayValue.map(JSONValue.array) ?? [], "notes": Self.orEmpty(meta["notes"]),
            "created_at": .string(Timestamp.format(record.createdAt)), "updated_at": .string(Timestamp.format(record.updatedAt)),
            "started_at": Self.timeOrEmpty(record.startedAt), "completed_at": Self.timeOrEmpty(record.completedAt),
            "last_checked_at": "", "next_check_at": "", "deadline_at": Self.timeOrEmpty(Self.deadline(record)),
            "timeout_ms": record.timeoutMilliseconds.map { .int($0) } ?? .null,
            "poll_interval_ms": meta["poll_interval_ms"] ?? 5000, "check_count": 0,
            "last_result": Self.lastResult(record), "last_error": .string(record.lastError ?? ""),
            "plan_steps": meta["plan_steps"] ?? [], "artifacts": meta["artifacts"] ?? [],
            "last_event_at": Self.timeOrEmpty(last?.timestamp),
            "last_event": last.map(Self.render) ?? [:],
            // Process fields of the mock.
            "runtime_status": .string(record.status.rawValue), "pid": record.pid.map { .int(Int($0)) } ?? .null,
            "exit_code": record.exitCode.map { .int(Int($0)) } ?? .null, "signal": record.signal.map { .int(Int($0)) } ?? .null,
            "command": .array(record.command.map(JSONValue.string)), "cwd": .string(record.workingDirectory),
            "running_ms": .int(Int(record.runningMilliseconds)), "stdout_bytes": .int(Int(record.stdoutBytes)),
            "stderr_bytes": .int(Int(record.stderrBytes)), "cpu_user_us": record.cpuUserMicroseconds.map { .int(Int($0)) } ?? .null,
            "cpu_system_us": record.cpuSystemMicroseconds.map { .int(Int($0)) } ?? .null,
            "sandbox_profile": meta["sandbox_profile"] ?? .null, "protections": .array(record.protections.map(JSONValue.string)),
            "question": meta["question"] ?? .null, "cgroup": record.cgroupPath.map(JSONValue.string) ?? .null,
            "uid": record.uid.map { .int(Int($0)) } ?? .null, "gid": record.gid.map { .int(Int($0)) } ?? .null,
            "peak_memory_bytes": record.peakMemoryBytes.map { .int(Int($0)) } ?? .null,
            "io_read_bytes": record.ioReadBytes.map { .int(Int($0)) } ?? .null,
            "io_write_bytes": record.ioWriteBytes.map { .int(Int($0)) } ?? .null,
        ]
        return rendered.merging(await watcherFields(record))
    }
}
