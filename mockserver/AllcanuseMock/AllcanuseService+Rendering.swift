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

    static func lastResult(_ record: TaskRecord) -> JSONValue {
        guard record.status.isFinal else { return .null }
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

    static func render(_ event: TaskEvent) -> JSONValue {
        [
            "event_id": .string(event.eventID), "task_id": .string(event.taskID),
            "timestamp": .string(Timestamp.format(event.timestamp)), "type": .string(event.type),
            "message": .string(event.message), "data": event.data, "sequence": .int(Int(event.sequence)),
        ]
    }

    /// The Allcanuse task object, plus the process fields of a real task.
    func render(_ record: TaskRecord) async throws -> JSONValue {
        await render(record, lastEvent: try await supervisor.lastEvent(of: record.taskID))
    }

    /// The same, with the task's newest event already read (a listing reads them with its page).
    func render(_ record: TaskRecord, lastEvent last: TaskEvent?) async -> JSONValue {
        let meta = record.metadata
        let rendered: JSONValue = [
            "task_id": .string(record.taskID), "title": .string(record.title), "goal": meta["goal"] ?? .null,
            "task_type": .string(record.kind), "condition": meta["condition"] ?? [:],
            "status": .string(Self.displayStatus(record)), "priority": meta["priority"] ?? 50, "owner": meta["owner"] ?? .null,
            "tags": meta["tags"] ?? .null, "notes": meta["notes"] ?? .null,
            "created_at": .string(Timestamp.format(record.createdAt)), "updated_at": .string(Timestamp.format(record.updatedAt)),
            "started_at": record.startedAt.map { .string(Timestamp.format($0)) } ?? .null,
            "completed_at": record.completedAt.map { .string(Timestamp.format($0)) } ?? .null,
            "last_checked_at": .null, "next_check_at": .null, "deadline_at": .null,
            "timeout_ms": record.timeoutMilliseconds.map { .int($0) } ?? .null,
            "poll_interval_ms": meta["poll_interval_ms"] ?? 5000, "check_count": 0,
            "last_result": Self.lastResult(record), "last_error": record.lastError.map(JSONValue.string) ?? .null,
            "plan_steps": meta["plan_steps"] ?? [], "artifacts": meta["artifacts"] ?? [],
            "last_event_at": last.map { .string(Timestamp.format($0.timestamp)) } ?? .null,
            "last_event": last.map(Self.render) ?? .null,
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
