import CorralJSON

/// The tools the mock serves: names, descriptions, complete input and output schemas and honest annotations, as MCP
/// `tools/list` entries (JSON, so a server can hand them out untouched).
public enum ToolCatalog {
    private static let taskID: JSONValue = ["type": "string", "description": "The task's id (32 hex characters)."]
    private static let reason: JSONValue = ["type": ["string", "null"], "default": .null, "description": "Why; recorded in the task's events."]
    private static let waitTimeout: JSONValue = [
        "type": "integer", "default": 60000, "description": "Negative: wait forever; 0: check once.",
    ]
    private static let statusEnum: JSONValue = .array(AllcanuseService.allStatuses.map(JSONValue.string))

    private static func schema(_ properties: [String: JSONValue], required: [String]) -> JSONValue {
        ["type": "object", "properties": .object(properties), "required": .array(required.map(JSONValue.string)),
         "additionalProperties": false]
    }

    private static func tool(
        _ name: String, _ description: String, _ properties: [String: JSONValue], required: [String],
        readOnly: Bool = false, destructive: Bool = false, idempotent: Bool = false, openWorld: Bool = false
    ) -> JSONValue {
        [
            "name": .string(name), "description": .string(description),
            "inputSchema": schema(properties, required: required),
            "outputSchema": OutputSchemas.schema(for: name),
            "annotations": [
                "readOnlyHint": .bool(readOnly), "destructiveHint": .bool(destructive),
                "idempotentHint": .bool(idempotent), "openWorldHint": .bool(openWorld),
            ],
        ]
    }

    public static let tools: [JSONValue] = [
        tool(
            "create_background_task",
            "Start a background task. task_type \"command\" runs condition.argv (a list) or condition.command (a /bin/sh -c string) as a real, sandboxed child process; \"sleep\" sleeps condition.duration_ms or until condition.wake_at; wait_file, wait_process, wait_port, wait_http and wait_window run a confined condition watcher that completes the task when its condition (the fields of the matching wait_for_* tool) is met.",
            [
                "title": ["type": "string", "description": "Short name of the task."],
                "goal": ["type": "string", "description": "What the task is for."],
                "task_type": [
                    "type": "string", "enum": .array(AllcanuseService.supportedTaskTypes.map(JSONValue.string)),
                    "description": "command, sleep, or a condition to watch.",
                ],
                "condition": [
                    "type": "object",
                    "description": "command: {argv | command, cwd, env, stdin, output_limit_bytes, sandbox: {profile, allow_read, allow_write, network, limits: {processes, memory, cpu_percent, cpu, as, nofile, nproc, fsize, core}}}; sleep: {duration_ms | wake_at}; wait_file: {path, state, min_size_bytes, text_contains, encoding}; wait_process: {pid | name, state}; wait_port: {host, port, state, connect_timeout_ms}; wait_http: {url, expected_statuses, method, headers, body, request_timeout_ms, text_contains}; wait_window: {title_filter | hwnd | process_name, state}.",
                ],
                "poll_interval_ms": ["type": "integer", "minimum": 1, "default": 5000, "description": "How often a watcher checks a condition no kernel event reports (ports, HTTP, process names)."],
                "timeout_ms": ["type": ["integer", "null"], "minimum": 1, "default": .null, "description": "Running time allowed; paused time does not count."],
                "priority": ["type": "integer", "default": 50, "description": "Priority (recorded)."],
                "owner": ["type": ["string", "null"], "default": .null],
                "tags": ["type": ["array", "null"], "items": ["type": "string"], "default": .null],
                "notes": ["type": ["string", "null"], "default": .null],
            ], required: ["title", "goal", "task_type", "condition"]),
        tool(
            "list_background_tasks", "List tasks, newest first.",
            [
                "statuses": ["type": ["array", "null"], "items": ["type": "string", "enum": statusEnum], "default": .null],
                "limit": ["type": "integer", "minimum": 0, "default": 100],
            ], required: [], readOnly: true, idempotent: true),
        tool("get_background_task", "Get one task.", ["task_id": taskID], required: ["task_id"], readOnly: true, idempotent: true),
        tool(
            "pause_background_task", "Stop the task's whole process tree (cgroup freeze); returns once it is stopped.",
            ["task_id": taskID, "reason": reason], required: ["task_id"], idempotent: true),
        tool(
            "resume_background_task", "Let a paused task go on.", ["task_id": taskID, "reason": reason],
            required: ["task_id"], idempotent: true),
        tool(
            "cancel_background_task",
            "End the task's whole process tree: SIGTERM, a grace period, then SIGKILL. A final task is returned unchanged.",
            ["task_id": taskID, "reason": reason], required: ["task_id"], destructive: true, idempotent: true),
        tool(
            "wait_for_background_task",
            "Wait until the task reaches one of target_statuses (default: completed, failed, cancelled) or timeout_ms passes (negative: forever).",
            [
                "task_id": taskID,
                "target_statuses": ["type": ["array", "null"], "items": ["type": "string", "enum": statusEnum], "default": .null],
                "timeout_ms": ["type": "integer", "default": 60000],
                "poll_interval_ms": ["type": "integer", "default": 1000, "description": "Kept for compatibility; the wait is event-driven."],
            ], required: ["task_id"], readOnly: true),
        tool(
            "wait", "Sleep for duration_ms (a negative duration does not sleep).",
            ["duration_ms": ["type": "integer"], "reason": ["type": ["string", "null"], "default": .null]],
            required: ["duration_ms"], readOnly: true, idempotent: true),
        tool(
            "wait_until", "Sleep until an ISO-8601 time (no zone: UTC); a time in the past returns at once.",
            ["timestamp": ["type": "string"], "reason": ["type": ["string", "null"], "default": .null]],
            required: ["timestamp"], readOnly: true, idempotent: true),
        tool(
            "wait_for_file", "Wait until a path exists (optionally with min_size_bytes and text_contains) or is missing; a confined watcher woken by inotify checks it as the task user.",
            [
                "path": ["type": "string", "description": "~ and relative paths are resolved as the server sees them."],
                "state": ["type": "string", "enum": ["exists", "missing"], "default": "exists"],
                "timeout_ms": waitTimeout, "poll_interval_ms": ["type": "integer", "minimum": 1, "default": 1000],
                "min_size_bytes": ["type": ["integer", "null"], "minimum": 0, "default": .null],
                "text_contains": ["type": ["string", "null"], "default": .null],
                "encoding": ["type": "string", "enum": ["utf-8", "ascii", "latin-1"], "default": "utf-8"],
            ], required: ["path"], readOnly: true),
        tool(
            "wait_for_process", "Wait until a process (pid, or name matched case-insensitively) is running or has exited; a pid's exit wakes the watcher through a pidfd.",
            [
                "pid": ["type": ["integer", "null"], "default": .null], "name": ["type": ["string", "null"], "default": .null],
                "state": ["type": "string", "enum": ["running", "exited"], "default": "running"],
                "timeout_ms": waitTimeout, "poll_interval_ms": ["type": "integer", "minimum": 1, "default": 1000],
            ], required: [], readOnly: true),
        tool(
            "wait_for_port", "Wait until a TCP port accepts connections (open) or no longer does (closed).",
            [
                "host": ["type": "string"], "port": ["type": "integer", "minimum": 1, "maximum": 65535],
                "state": ["type": "string", "enum": ["open", "closed"], "default": "open"],
                "timeout_ms": waitTimeout, "poll_interval_ms": ["type": "integer", "minimum": 1, "default": 1000],
                "connect_timeout_ms": ["type": "integer", "minimum": 1, "default": 1500],
            ], required: ["host", "port"], readOnly: true),
        tool(
            "wait_for_http", "Wait until an http:// URL answers with one of expected_statuses (default [200]) and, if given, a body containing text_contains. Redirects are followed.",
            [
                "url": ["type": "string"],
                "expected_statuses": ["type": ["array", "null"], "items": ["type": "integer"], "default": .null],
                "method": ["type": "string", "default": "GET"],
                "headers": ["type": ["object", "null"], "additionalProperties": ["type": "string"], "default": .null],
                "body": ["type": ["string", "null"], "default": .null],
                "timeout_ms": waitTimeout, "poll_interval_ms": ["type": "integer", "minimum": 1, "default": 2000],
                "request_timeout_ms": ["type": "integer", "minimum": 1, "default": 5000],
                "text_contains": ["type": ["string", "null"], "default": .null],
            ], required: ["url"], readOnly: true, openWorld: true),
        tool(
            "wait_for_window", "Wait for a window. This server has no graphical desktop session: the answer is fatal_error, as the real server's on such a machine.",
            [
                "title_filter": ["type": ["string", "null"], "default": .null],
                "hwnd": ["type": ["string", "integer", "null"], "default": .null],
                "process_name": ["type": ["string", "null"], "default": .null],
                "state": ["type": "string", "enum": ["appeared", "missing", "foreground"], "default": "appeared"],
                "include_invisible": ["type": "boolean", "default": false], "limit": ["type": "integer", "default": 500],
                "timeout_ms": waitTimeout, "poll_interval_ms": ["type": "integer", "minimum": 1, "default": 1000],
            ], required: [], readOnly: true),
        tool(
            "wait_for_desktop_change", "Wait for the desktop to change. This server has no graphical desktop session: the answer is fatal_error.",
            [
                "include_invisible": ["type": "boolean", "default": false], "limit": ["type": "integer", "default": 50],
                "baseline_snapshot": ["type": ["object", "null"], "default": .null],
                "timeout_ms": waitTimeout, "poll_interval_ms": ["type": "integer", "minimum": 1, "default": 1000],
            ], required: [], readOnly: true),
        tool(
            "append_task_event", "Add an event to a task's history.",
            [
                "task_id": taskID, "message": ["type": "string"], "event_type": ["type": "string", "default": "info"],
                "data": ["description": "Any JSON value.", "default": .null],
            ], required: ["task_id", "message"]),
        tool(
            "create_task_plan", "Give the task a plan of steps (replaces any plan).",
            ["task_id": taskID, "steps": ["type": "array", "items": ["type": "string"]]], required: ["task_id", "steps"]),
        tool(
            "update_task_step", "Set the status of one plan step (step_index counts from 1).",
            [
                "task_id": taskID, "step_index": ["type": "integer", "minimum": 1],
                "status": ["type": "string", "enum": .array(AllcanuseService.stepStatuses.map(JSONValue.string))],
                "note": ["type": ["string", "null"], "default": .null],
            ], required: ["task_id", "step_index", "status"]),
        tool(
            "record_task_artifact", "Record a file the task produced.",
            ["task_id": taskID, "path": ["type": "string"], "description": ["type": ["string", "null"], "default": .null]],
            required: ["task_id", "path"]),
        tool(
            "summarize_background_task", "The task, its recent events and a one-line summary.",
            ["task_id": taskID, "include_recent_events": ["type": "integer", "minimum": 0, "default": 10]],
            required: ["task_id"], readOnly: true, idempotent: true),
        tool(
            "get_task_handoff", "What another agent needs to take the task over.",
            ["task_id": taskID, "include_recent_events": ["type": "integer", "minimum": 0, "default": 10]],
            required: ["task_id"], readOnly: true, idempotent: true),
        tool(
            "mark_task_waiting_for_user", "Mark a running task as waiting for the user's answer.",
            ["task_id": taskID, "question": ["type": "string"]], required: ["task_id", "question"]),
        tool(
            "mark_task_waiting_for_condition", "Mark a running task as waiting for a condition.",
            ["task_id": taskID, "note": ["type": "string"]], required: ["task_id", "note"]),
        tool("get_scheduler_time", "The server's clocks and task counts.", [:], required: [], readOnly: true, idempotent: true),
        tool(
            "get_task_output", "Read a task's stdout or stderr: the last tail_bytes (default 65536), or from offset.",
            [
                "task_id": taskID, "stream": ["type": "string", "enum": ["stdout", "stderr"], "default": "stdout"],
                "tail_bytes": ["type": ["integer", "null"], "minimum": 0, "default": .null],
                "offset": ["type": ["integer", "null"], "minimum": 0, "default": .null],
            ], required: ["task_id"], readOnly: true, idempotent: true),
        tool(
            "list_task_events", "A task's events in order, after the sequence number since.",
            [
                "task_id": taskID, "since": ["type": ["integer", "null"], "default": .null],
                "limit": ["type": "integer", "minimum": 0, "default": 100],
            ], required: ["task_id"], readOnly: true, idempotent: true),
    ]

    public static var names: [String] { tools.compactMap { $0["name"]?.stringValue } }
}
