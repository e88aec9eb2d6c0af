import CorralJSON

/// The schemas shared between tools: the task object (`AllcanuseService.render(_: TaskRecord)`), its events, plan
/// steps, artifacts and last result.
extension OutputSchemas {
    /// The Allcanuse task object, plus the process fields of the mock. The Allcanuse fields have the real server's
    /// types (`""` until a time or text is set); the mock's nullable process fields are null until they are known (a
    /// task that failed to start has no pid, uid or cgroup).
    static let task: JSONValue = object([
        "task_id": ["type": "string", "description": "32 hex characters."],
        "title": string,
        "goal": ["type": "string", "description": "As given; a blank goal is the title."],
        "task_type": ["type": "string", "description": "command, sleep, or a condition type (wait_file, …)."],
        "condition": ["type": "object", "description": "The condition the task was created with, as given."],
        "status": status.merging([
            "description": "The status a client sees: waiting_for_user or waiting_for_condition while a running task is so marked.",
        ]),
        "priority": ["type": "integer"],
        "owner": string,
        "tags": array(string),
        "notes": string,
        "created_at": timestamp, "updated_at": timestamp,
        "started_at": unsetOrTimestamp, "completed_at": unsetOrTimestamp,
        "last_checked_at": unsetOrTimestamp, "next_check_at": unsetOrTimestamp,
        "deadline_at": unsetOrTimestamp.merging([
            "description": "When the running time reaches timeout_ms (paused time does not count); \"\" without a timeout.",
        ]),
        "timeout_ms": nullable("integer", "Running time allowed; paused time does not count."),
        "poll_interval_ms": ["type": "integer"],
        "check_count": count(),
        "last_result": lastResult,
        "last_error": ["type": "string", "description": "Why the task failed; \"\" otherwise."],
        "plan_steps": array(step),
        "artifacts": array(artifact),
        "last_event_at": unsetOrTimestamp,
        "last_event": ["anyOf": [event, emptyObject], "description": "The newest event, {} before the first."],
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
        "data": ["description": "An object ({} when none was given); events stored by older versions may hold null."],
        "sequence": ["type": "integer", "description": "Order over all tasks; pass as since to list_task_events."],
    ])

    static let step: JSONValue = object([
        "step_id": ["type": "string", "description": "32 hex characters."],
        "index": integer(minimum: 1),
        "title": string,
        "status": ["type": "string", "enum": .array(AllcanuseService.stepStatuses.map(JSONValue.string))],
        "note": ["type": "string", "description": "The latest note given (an update without one keeps it)."],
        "updated_at": timestamp,
    ])

    static let artifact: JSONValue = object([
        "artifact_id": string,
        "path": ["type": "string", "description": "As the real server records it: ~ expanded, absolute, links resolved."],
        "description": string,
        "exists": ["type": "boolean", "description": "Whether the path existed when it was recorded."],
        "recorded_at": timestamp,
    ])

    /// A command or sleep task: how it ended (exit_code, signal, output sizes, running_ms), `{}` until it is final.
    /// A watcher task: its newest check (`{condition_met, …}` as the matching wait tool's), `{}` before the first.
    static let lastResult: JSONValue = [
        "type": "object",
        "description": "How a command or sleep task ended ({} until final), or a watcher task's newest check.",
        "additionalProperties": true,
    ]
}
