import CorralJSON

/// The schemas shared between tools: the task object (`AllcanuseService.render(_: TaskRecord)`), its events, plan
/// steps, artifacts and last result.
extension OutputSchemas {
    /// The Allcanuse task object, plus the process fields of the mock. Nullable fields are null until they are known
    /// (a task that failed to start has no pid, start time, uid or cgroup).
    static let task: JSONValue = object([
        "task_id": ["type": "string", "description": "32 hex characters."],
        "title": string,
        "goal": nullable("string"),
        "task_type": ["type": "string", "description": "command, sleep, or a condition type (wait_file, …)."],
        "condition": ["type": "object", "description": "The condition the task was created with, as given."],
        "status": status.merging([
            "description": "The status a client sees: waiting_for_user or waiting_for_condition while a running task is so marked.",
        ]),
        "priority": ["type": "integer"],
        "owner": nullable("string"),
        "tags": ["type": ["array", "null"], "items": string],
        "notes": nullable("string"),
        "created_at": timestamp, "updated_at": timestamp,
        "started_at": nullableTimestamp, "completed_at": nullableTimestamp,
        "last_checked_at": nullableTimestamp, "next_check_at": nullableTimestamp, "deadline_at": nullableTimestamp,
        "timeout_ms": nullable("integer", "Running time allowed; paused time does not count."),
        "poll_interval_ms": ["type": "integer"],
        "check_count": count(),
        "last_result": lastResult,
        "last_error": nullable("string"),
        "plan_steps": array(step),
        "artifacts": array(artifact),
        "last_event_at": nullableTimestamp,
        "last_event": event.merging(["type": ["object", "null"]]),
        "runtime_status": status.merging(["description": "The process's own status (never a waiting mark)."]),
        "pid": nullable("integer"),
        "exit_code": nullable("integer"),
        "signal": nullable("integer", "The signal that ended the task."),
        "command": array(string, "The argv that runs (a command string runs as /bin/sh -c)."),
        "cwd": string,
        "running_ms": count("Running time so far, paused time excluded."),
        "stdout_bytes": count(), "stderr_bytes": count(),
        "cpu_user_us": nullable("integer"), "cpu_system_us": nullable("integer"),
        "sandbox_profile": nullable("string"),
        "protections": array(string, "The confinement in force (own_session, pidfd, cgroup, seccomp:…, landlock:…)."),
        "question": nullable("string", "The last question asked with mark_task_waiting_for_user."),
        "cgroup": nullable("string"),
        "uid": nullable("integer"), "gid": nullable("integer"),
        "peak_memory_bytes": nullable("integer"),
        "io_read_bytes": nullable("integer"), "io_write_bytes": nullable("integer"),
    ])

    /// The task as pause, resume, cancel and the waiting marks return it: with a note when nothing was done.
    static let taskWithNote: JSONValue = {
        var properties = task["properties"]?.objectValue ?? [:]
        properties["note"] = ["type": "string", "description": "Why nothing was done (e.g. the task is already final)."]
        return object(properties, optional: ["note"])
    }()

    static let event: JSONValue = object([
        "event_id": string, "task_id": string, "timestamp": timestamp,
        "type": ["type": "string", "description": "info, progress, error, artifact, wait_started, or a client's own."],
        "message": string,
        "data": ["description": "Any JSON value (null when none was given)."],
        "sequence": ["type": "integer", "description": "Order over all tasks; pass as since to list_task_events."],
    ])

    static let step: JSONValue = object([
        "index": integer(minimum: 1),
        "title": string,
        "status": ["type": "string", "enum": .array(AllcanuseService.stepStatuses.map(JSONValue.string))],
        "note": nullable("string"),
        "updated_at": timestamp,
    ])

    static let artifact: JSONValue = object([
        "artifact_id": string, "path": string, "description": nullable("string"),
        "exists": ["type": "boolean", "description": "Whether the path existed when it was recorded."],
        "recorded_at": timestamp,
    ])

    /// A command or sleep task: how it ended (exit_code, signal, output sizes, running_ms), null until it is final.
    /// A watcher task: its newest check (`{condition_met, …}` as the matching wait tool's), `{}` before the first.
    static let lastResult: JSONValue = [
        "type": ["object", "null"],
        "description": "How a command or sleep task ended (null until final), or a watcher task's newest check.",
        "additionalProperties": true,
    ]
}
