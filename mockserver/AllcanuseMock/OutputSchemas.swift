import CorralJSON

/// The MCP `outputSchema` of every tool: a JSON Schema (type object) that the tool's `structuredContent` satisfies on
/// success (an `isError` result is `{error}` and is not covered, as MCP asks). Every field the service always writes
/// is `required`, with `null` allowed where it can be null; objects stay open (`additionalProperties: true`) so that a
/// field added later does not break a client that validates (the Python SDK validates every result against these).
public enum OutputSchemas {
    /// The schema of `tool`'s structured result. Every tool of `ToolCatalog` has one: a missing one is a programming
    /// error and stops the server the first time the catalog is built (so any test that lists the tools catches it).
    public static func schema(for tool: String) -> JSONValue {
        guard let schema = byTool[tool] else { preconditionFailure("OutputSchemas: no output schema for tool \(tool)") }
        return schema
    }

    /// The schemas by tool name (exactly the names of `ToolCatalog`).
    public static let byTool: [String: JSONValue] = [
        "create_background_task": task,
        "list_background_tasks": object([
            "count": count("Tasks in this page."),
            "total_count": count("Tasks matching the statuses filter, over all pages."),
            "tasks": array(task, "The page, newest first."),
        ]),
        "get_background_task": task,
        "pause_background_task": taskWithNote,
        "resume_background_task": taskWithNote,
        "cancel_background_task": taskWithNote,
        "wait_for_background_task": object([
            "ok": ["type": "boolean", "description": "Whether the task reached a target status in time (false at the deadline)."],
            "condition_met": ["type": "boolean", "description": "Whether the task reached a target status in time."],
            "attempts": integer(minimum: 1),
            "started_at": timestamp, "finished_at": timestamp,
            "timeout_ms": ["type": "integer", "description": "As asked; negative: no timeout."],
            "poll_interval_ms": ["type": "integer"],
            "waited_ms": integer(minimum: 0),
            "last_result": object([
                "condition_met": ["type": "boolean"], "task_id": string, "status": status, "task": task,
            ]),
        ]),
        "wait": plainWait,
        "wait_until": object(
            (plainWait["properties"]?.objectValue ?? [:]).merging(
                ["target_time": timestamp, "remaining_ms_when_started": count("0 for a time in the past.")]) { $1 }),
        "wait_for_file": conditionWait("path, state, exists, is_file, size_bytes, text_match"),
        "wait_for_process": conditionWait("pid, name, state, matched_count, matches (up to 20 of {pid, name, status})"),
        "wait_for_port": conditionWait("host, port, state, is_open, error"),
        "wait_for_http": conditionWait("url, final_url, method, status, reason, expected_statuses, text_match, error"),
        "wait_for_window": conditionWait("error: no graphical desktop session (fatal_error)"),
        "wait_for_desktop_change": conditionWait("error: no graphical desktop session (fatal_error)"),
        "append_task_event": event,
        "create_task_plan": task,
        "update_task_step": task,
        "record_task_artifact": artifact,
        "summarize_background_task": object([
            "task": task,
            "recent_events": array(event, "The newest events, oldest first."),
            "summary": ["type": "string", "description": "One line: title, type, status, error, plan progress."],
        ]),
        "get_task_handoff": object([
            "task_id": string, "status": status, "goal": string, "task_type": string,
            "current_step": step.merging([
                "type": ["object", "null"],
                "description": "The step in progress, else the first pending one, else the last; null without a plan.",
            ]),
            "completed_steps": array(step), "pending_steps": array(step, "Every step not completed."),
            "recent_events": array(event), "last_result": lastResult, "last_error": string,
            "artifacts": array(artifact),
            "blocker": ["type": "string", "description": "What holds the task up, else its newest event's message."],
            "suggested_next_actions": array(string), "handoff": string, "summary": string,
        ]),
        "mark_task_waiting_for_user": taskWithNote,
        "mark_task_waiting_for_condition": taskWithNote,
        "get_scheduler_time": object([
            "local_time": timestamp, "local_timezone": string, "utc_time": timestamp,
            "monotonic_seconds": ["type": "number", "minimum": 0, "description": "CLOCK_MONOTONIC, in seconds."],
            "runtime_tasks_dir": string,
            "task_status_counts": [
                "type": "object", "additionalProperties": count(),
                "description": "Tasks by the status get_background_task shows; statuses without a task are left out.",
            ],
            "scheduler": object([
                "running": ["type": "boolean"], "scheduler_interval_ms": count("0: event-driven, no polling loop."),
                "last_error": string, "last_error_at": string, "load_issue_count": count(),
                "recent_load_issues": array(["type": "object"]),
                "kind": string, "engine": string, "cgroups": ["type": "boolean"],
            ]),
        ]),
        "get_task_output": object([
            "task_id": string,
            "stream": ["type": "string", "enum": ["stdout", "stderr"]],
            "text": ["type": "string", "description": "The bytes read, as UTF-8 (invalid sequences replaced)."],
            "offset": ["type": "integer", "minimum": 0, "description": "Where text starts in the stream."],
            "bytes": count("Bytes read."),
            "total_bytes": count("Bytes the task wrote to the stream."),
            "dropped_bytes": count("Bytes beyond the output limit, counted but not kept."),
            "truncated": ["type": "boolean", "description": "Whether some of the stream was dropped."],
        ]),
        "list_task_events": object([
            "task_id": string, "count": count(), "events": array(event, "In order of sequence."),
            "next_since": [
                "type": ["integer", "null"],
                "description": "Pass as since for the next page: the last event's sequence, else the since given.",
            ],
        ]),
    ]

    static let plainWait: JSONValue = object([
        "ok": ["type": "boolean"], "reason": string, "requested_duration_ms": ["type": "integer"],
        "started_at": timestamp, "finished_at": timestamp, "waited_ms": count(),
    ])

    /// A `wait_for_*` result: the condition's newest check in `last_result`.
    static func conditionWait(_ checkFields: String) -> JSONValue {
        object(
            [
                "ok": ["type": "boolean", "description": "Whether the condition was met."],
                "condition_met": ["type": "boolean"],
                "fatal_error": ["type": "boolean", "description": "Present (true) when the condition can never be met."],
                "cancelled": ["type": "boolean", "description": "Present (true) when the client cancelled the wait."],
                "attempts": count("Checks made."),
                "started_at": timestamp, "finished_at": timestamp,
                "timeout_ms": ["type": "integer", "description": "As asked; negative: no timeout; 0: one check."],
                "poll_interval_ms": ["type": "integer"],
                "waited_ms": count(),
                "last_result": object(["condition_met": ["type": "boolean"]], description: "The newest check: condition_met, " + checkFields + "."),
            ], optional: ["fatal_error", "cancelled"])
    }

    // MARK: - building blocks

    /// An object whose properties are all required except `optional`; extra fields allowed.
    static func object(_ properties: [String: JSONValue], optional: Set<String> = [], description: String? = nil) -> JSONValue {
        var schema: JSONValue = [
            "type": "object", "properties": .object(properties),
            "required": .array(properties.keys.filter { !optional.contains($0) }.sorted().map(JSONValue.string)),
            "additionalProperties": true,
        ]
        if let description { schema = schema.merging(["description": .string(description)]) }
        return schema
    }

    static func array(_ items: JSONValue, _ description: String? = nil) -> JSONValue {
        let schema: JSONValue = ["type": "array", "items": items]
        return description.map { schema.merging(["description": .string($0)]) } ?? schema
    }

    static func nullable(_ type: String, _ description: String? = nil) -> JSONValue {
        let schema: JSONValue = ["type": [.string(type), "null"]]
        return description.map { schema.merging(["description": .string($0)]) } ?? schema
    }

    static func integer(minimum: Int) -> JSONValue { ["type": "integer", "minimum": .int(minimum)] }

    static func count(_ description: String? = nil) -> JSONValue {
        description.map { integer(minimum: 0).merging(["description": .string($0)]) } ?? integer(minimum: 0)
    }

    static let string: JSONValue = ["type": "string"]
    /// UTC ISO 8601 with milliseconds, "2026-12-01T20:21:07.123Z" (local_time carries the local offset).
    static let timestamp: JSONValue = ["type": "string", "format": "date-time"]
    /// A time not yet set is `""`, as the real server writes it.
    static let unsetOrTimestamp: JSONValue = ["anyOf": [timestamp, ["type": "string", "maxLength": 0]]]
    static let emptyObject: JSONValue = ["type": "object", "maxProperties": 0]
    static let status: JSONValue = ["type": "string", "enum": .array(AllcanuseService.allStatuses.map(JSONValue.string))]
}
