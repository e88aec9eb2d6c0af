import CorralJSON
import Foundation
import Sandbox
import TaskRuntime
import WatchConditions

/// The Allcanuse background-task tools over the task runtime: same names, arguments, defaults and result fields as
/// the real server, with every task a real (sandboxed) child process. MCP-free: the server maps its calls here.
public final class AllcanuseService: Sendable {
    /// The result of one tool call: the JSON object, and whether it is an error.
    public struct Outcome: Sendable, Equatable {
        public var value: JSONValue
        public var isError: Bool

        static func error(_ message: String) -> Outcome {
            Outcome(value: ["error": .string(message)], isError: true)
        }
    }

    public let supervisor: TaskSupervisor
    /// The least strict sandbox a task may run with; a task can only ask for stricter.
    public let sandboxFloor: SandboxProfile

    public static let supportedTaskTypes = [
        "command", "sleep", "wait_file", "wait_process", "wait_port", "wait_http", "wait_window", "wait_desktop_change",
    ]
    /// The Allcanuse wait tools (beside `wait_for_background_task`).
    public static let waitTools = [
        "wait", "wait_until", "wait_for_file", "wait_for_process", "wait_for_port", "wait_for_http", "wait_for_window",
        "wait_for_desktop_change",
    ]
    static let allStatuses = TaskStatus.allCases.map(\.rawValue)
    static let stepStatuses = ["pending", "in_progress", "completed", "failed", "skipped"]

    /// Where a client may point a task's `cwd` (it becomes writable for the task); nil: tasks run in their own
    /// directory only, and a `cwd` is refused.
    public let workspace: String?

    /// Display-status changes the runtime does not see (the waiting marks).
    public let signals = StatusSignals()

    /// The condition watcher (`allcanuse-watch`); nil: none was found, and condition waits say so.
    public let watcherExecutable: String?

    public init(
        supervisor: TaskSupervisor, sandboxFloor: SandboxProfile = BuiltinProfiles.default, workspace: String? = nil,
        watcherExecutable: String? = AllcanuseService.defaultWatcherExecutable()
    ) {
        self.supervisor = supervisor
        self.watcherExecutable = watcherExecutable.map { Self.runnableByTasks($0, supervisor: supervisor) }
        self.sandboxFloor = sandboxFloor
        self.workspace = workspace.map { resolvedPath($0) ?? $0 }
    }

    /// `ALLCANUSE_WATCH` when set, else `allcanuse-watch` beside this process's executable.
    public static func defaultWatcherExecutable() -> String? {
        if let configured = ProcessInfo.processInfo.environment["ALLCANUSE_WATCH"], !configured.isEmpty {
            return configured
        }
        guard let executable = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else {
            return nil
        }
        let candidate = URL(fileURLWithPath: executable).deletingLastPathComponent().appendingPathComponent("allcanuse-watch").path
        return access(candidate, X_OK) == 0 ? candidate : nil
    }

    /// The watcher where the task user can run it: where it was built if the task user can reach and execute it,
    /// else a copy this server owns (0755, in a 0711 directory of the task root, which the task user can reach
    /// but not write), as for a checkout in /root or under a 0700 temporary directory.
    static func runnableByTasks(_ path: String, supervisor: TaskSupervisor) -> String {
        let identity = supervisor.identity
        var info = stat()
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        guard identity.changesUser, stat(path, &info) == 0,
            identity.searchRefusal(directory) != nil || info.st_mode & 0o001 == 0
        else { return path }
        let home = supervisor.taskRoot + "/.watcher"
        let copy = home + "/allcanuse-watch"
        let partial = copy + ".partial"
        guard mkdir(home, 0o711) == 0 || errno == EEXIST, chmod(home, 0o711) == 0 else { return path }
        unlink(partial)
        guard (try? FileManager.default.copyItem(atPath: path, toPath: partial)) != nil, chmod(partial, 0o755) == 0,
            rename(partial, copy) == 0
        else { return path }
        return copy
    }

    /// A client-chosen working directory, checked after resolving symlinks: it must exist and lie in the workspace.
    private func checkedWorkingDirectory(_ cwd: String?) throws(ToolError) -> String? {
        guard let cwd else { return nil }
        let tool = "create_background_task"
        guard let workspace else {
            throw ToolError(
                "\(tool): condition.cwd is not allowed: this server has no workspace (start it with --workspace DIR)")
        }
        guard let real = resolvedPath(cwd) else {
            throw ToolError("\(tool): condition.cwd \(cwd) does not exist")
        }
        guard real == workspace || real.hasPrefix(workspace.hasSuffix("/") ? workspace : workspace + "/") else {
            throw ToolError("\(tool): condition.cwd \(cwd) is outside the workspace \(workspace)")
        }
        return real
    }

    /// Reports how a long call is going: progress so far, the total if known, and a message.
    public typealias ProgressReporter = @Sendable (_ progress: Double, _ total: Double?, _ message: String) async -> Void

    /// Calls a tool by name. Never throws: every failure is an `isError` outcome with a message. `progress` is called
    /// during a wait (every `poll_interval_ms`) when the client asked for progress.
    public func call(_ name: String, arguments: JSONValue?, progress: ProgressReporter? = nil) async -> Outcome {
        do {
            let value: JSONValue
            switch name {
            case "create_background_task": value = try await create(arguments)
            case "list_background_tasks": value = try await list(arguments)
            case "get_background_task": value = try await render(try await task(arguments, tool: name))
            case "pause_background_task", "resume_background_task", "cancel_background_task":
                value = try await control(name, arguments)
            case "wait_for_background_task": value = try await wait(arguments, progress: progress)
            case "append_task_event": value = try await appendEvent(arguments)
            case "create_task_plan": value = try await createPlan(arguments)
            case "update_task_step": value = try await updateStep(arguments)
            case "record_task_artifact": value = try await recordArtifact(arguments)
            case "summarize_background_task": value = try await summarize(arguments)
            case "get_task_handoff": value = try await handoff(arguments)
            case "mark_task_waiting_for_user", "mark_task_waiting_for_condition":
                value = try await markWaiting(name, arguments)
            case "get_scheduler_time": value = try await schedulerTime(arguments)
            case "get_task_output": value = try await output(arguments)
            case "list_task_events": value = try await listEvents(arguments)
            case _ where Self.waitTools.contains(name): value = try await waitTool(name, arguments)
            default:
                return .error("unknown tool \(name)")
            }
            return Outcome(value: value, isError: false)
        } catch let error as ToolError {
            return .error(error.message)
        } catch let error as RuntimeError {
            return .error(error.description)
        } catch {
            return .error("\(name): \(error)")
        }
    }

    // MARK: - create

    private func create(_ raw: JSONValue?) async throws -> JSONValue {
        let tool = "create_background_task"
        let args = try Arguments(
            raw, tool: tool,
            allowed: ["title", "goal", "task_type", "condition", "poll_interval_ms", "timeout_ms", "priority", "owner",
                      "tags", "notes"])
        let givenTitle = try args.string("title").trimmingCharacters(in: .whitespacesAndNewlines)
        let givenGoal = try args.string("goal").trimmingCharacters(in: .whitespacesAndNewlines)
        let taskType = try args.string("task_type")
        // Blank title and goal fall back as the real server's do: the title to the task type, the goal to the title.
        let title = givenTitle.isEmpty ? taskType : givenTitle
        let goal = givenGoal.isEmpty ? title : givenGoal
        guard var condition = try args.optionalObject("condition") else {
            throw ToolError("\(tool): missing required argument condition")
        }
        let pollInterval = try args.int("poll_interval_ms", default: 5000)
        let timeout = try args.optionalInt("timeout_ms")
        let priority = try args.int("priority", default: 50)
        let owner = try args.optionalString("owner")
        let tags = try args.optionalStrings("tags")
        let notes = try args.optionalString("notes")
        if let timeout, timeout <= 0 { throw ToolError("\(tool): timeout_ms must be positive, got \(timeout)") }
        guard pollInterval > 0 else { throw ToolError("\(tool): poll_interval_ms must be positive") }

        let command: TaskCommand
        var spec = TaskSpec(title: title, kind: taskType, command: .argv(["/bin/true"]), timeoutMilliseconds: timeout)
        switch taskType {
        case "command":
            let conditionArgs = try Arguments(
                .object(condition), tool: "\(tool): condition",
                allowed: ["argv", "command", "cwd", "env", "stdin", "output_limit_bytes", "sandbox"])
            let argv = try conditionArgs.optionalStrings("argv")
            let shell = try conditionArgs.optionalString("command")
            switch (argv, shell) {
            case (let argv?, nil): command = .argv(argv)
            case (nil, let shell?): command = .shell(shell)
            default: throw ToolError("\(tool): a command task's condition needs exactly one of argv (a list) or command (a string)")
            }
            // The task may write its working directory, so a client may only choose one inside the workspace.
            spec.workingDirectory = try checkedWorkingDirectory(conditionArgs.optionalString("cwd"))
            if let env = try conditionArgs.optionalObject("env") {
                var environment: [String: String] = [:]
                for (key, value) in env {
                    guard let string = value.stringValue else {
                        throw ToolError("\(tool): condition.env.\(key) must be a string, got \(value.typeName)")
                    }
                    environment[key] = string
                }
                spec.environment = environment
            }
            spec.standardInput = try conditionArgs.optionalString("stdin")
            if let limit = try conditionArgs.optionalInt("output_limit_bytes") {
                guard limit >= 0 else { throw ToolError("\(tool): condition.output_limit_bytes must not be negative") }
                spec.outputLimitBytes = limit
            }
            spec.sandbox = try sandbox(for: conditionArgs.value("sandbox"))
        case "sleep":
            let conditionArgs = try Arguments(.object(condition), tool: "\(tool): condition", allowed: ["duration_ms", "wake_at"])
            let milliseconds: Int
            if let duration = try conditionArgs.optionalInt("duration_ms") {
                milliseconds = duration
            } else if let wakeAt = try conditionArgs.optionalString("wake_at") {
                guard let date = Timestamp.parse(wakeAt) else {
                    throw ToolError("\(tool): condition.wake_at must be an ISO-8601 time, got \(wakeAt)")
                }
                milliseconds = max(0, Int(date.timeIntervalSinceNow * 1000))
            } else {
                throw ToolError("\(tool): a sleep task's condition needs duration_ms or wake_at")
            }
            guard milliseconds >= 0 else { throw ToolError("\(tool): condition.duration_ms must not be negative") }
            // The condition as the real server keeps it: with the time the sleep ends.
            if condition["wake_at"] == nil {
                condition["wake_at"] = .string(Timestamp.format(Date().addingTimeInterval(Double(milliseconds) / 1000)))
            }
            command = .argv(["/bin/sleep", String(format: "%.3f", Double(milliseconds) / 1000)])
            spec.sandbox = sandboxFloor
        case _ where WatchCondition.taskTypes.contains(taskType) || taskType == "wait_desktop_change":
            let record = try await watcherTask(
                kind: taskType, condition: condition, title: title, pollInterval: pollInterval, timeout: timeout,
                metadata: [
                    "goal": .string(goal), "poll_interval_ms": .int(pollInterval), "priority": .int(priority),
                    "owner": owner.map(JSONValue.string) ?? .null,
                    "tags": tags.map { .array($0.map(JSONValue.string)) } ?? .null,
                    "notes": notes.map(JSONValue.string) ?? .null, "plan_steps": [], "artifacts": [], "label": .null,
                    "sandbox_profile": .string(sandboxFloor.name),
                ])
            return try await render(record)
        default:
            throw ToolError(
                "\(tool): task_type \(taskType) is not supported by this mock; supported: "
                    + Self.supportedTaskTypes.joined(separator: ", "))
        }
        spec.command = command
        spec.metadata = [
            "goal": .string(goal), "condition": .object(condition), "poll_interval_ms": .int(pollInterval),
            "priority": .int(priority), "owner": owner.map(JSONValue.string) ?? .null,
            "tags": tags.map { .array($0.map(JSONValue.string)) } ?? .null, "notes": notes.map(JSONValue.string) ?? .null,
            "plan_steps": [], "artifacts": [], "label": .null, "sandbox_profile": .string(spec.sandbox?.name ?? "none"),
            // Between its start and its end a sleep task shows what the real server's does.
            "idle_status": taskType == "sleep" ? "waiting" : .null,
        ]
        let record = try await supervisor.create(spec)
        return try await render(record)
    }

    private func sandbox(for request: JSONValue?) throws -> SandboxProfile {
        guard let request else { return sandboxFloor }
        guard request.objectValue != nil else {
            throw ToolError("create_background_task: condition.sandbox must be an object, got \(request.typeName)")
        }
        let decoded: SandboxRequest
        do {
            decoded = try JSONDecoder().decode(SandboxRequest.self, from: Data(request.jsonString().utf8))
        } catch {
            throw ToolError(
                "create_background_task: condition.sandbox must be {profile, allow_read, allow_write, network, limits}")
        }
        do {
            return try decoded.apply(over: sandboxFloor)
        } catch {
            throw ToolError("create_background_task: sandbox refused: \(error.description)")
        }
    }

    // MARK: - reading

    private func task(_ raw: JSONValue?, tool: String, allowed: Set<String> = ["task_id"]) async throws -> TaskRecord {
        let args = try Arguments(raw, tool: tool, allowed: allowed)
        let taskID = try args.string("task_id")
        let record = try await supervisor.task(taskID)
        // A wait tool's own watcher is not a background task of the client's.
        guard !record.isInternal else { throw RuntimeError.unknownTask(taskID) }
        return record
    }

    private func list(_ raw: JSONValue?) async throws -> JSONValue {
        let tool = "list_background_tasks"
        let args = try Arguments(raw, tool: tool, allowed: ["statuses", "limit"])
        let statuses = try args.optionalStrings("statuses")
        let limit = try args.int("limit", default: 100)
        guard limit >= 0 else { throw ToolError("\(tool): limit must not be negative") }
        if let bad = statuses?.first(where: { !Self.allStatuses.contains($0) }) {
            throw ToolError("\(tool): unknown status \(bad); statuses are \(Self.allStatuses.joined(separator: ", "))")
        }
        // One indexed query for the page and a maintained count: the same cost at 100 tasks and at 100,000.
        let page = try await supervisor.tasksWithNewestEvents(displayStatuses: statuses.map(Set.init), limit: limit)
        var tasks: [JSONValue] = []
        for (record, newestEvent) in page.tasks {
            tasks.append(await render(record, lastEvent: newestEvent))
        }
        return ["count": .int(tasks.count), "total_count": .int(page.total), "tasks": .array(tasks)]
    }

    private func output(_ raw: JSONValue?) async throws -> JSONValue {
        let tool = "get_task_output"
        let args = try Arguments(raw, tool: tool, allowed: ["task_id", "stream", "tail_bytes", "offset"])
        let taskID = try args.string("task_id")
        let streamName = try args.optionalString("stream") ?? "stdout"
        guard let stream = OutputStream(rawValue: streamName) else {
            throw ToolError("\(tool): stream must be stdout or stderr, got \(streamName)")
        }
        let tail = try args.optionalInt("tail_bytes")
        let offset = try args.optionalInt("offset")
        if tail != nil && offset != nil { throw ToolError("\(tool): give tail_bytes or offset, not both") }
        if let tail, tail < 0 { throw ToolError("\(tool): tail_bytes must not be negative") }
        if let offset, offset < 0 { throw ToolError("\(tool): offset must not be negative") }
        let chunk = try await supervisor.output(
            of: taskID, stream: stream, tailBytes: tail.map(Int64.init) ?? (offset == nil ? 65536 : nil),
            offset: offset.map(Int64.init), maxBytes: 1 << 20)
        return [
            "task_id": .string(taskID), "stream": .string(streamName), "text": .string(chunk.text),
            "offset": .int(Int(chunk.offset)), "bytes": .int(chunk.bytes.count), "total_bytes": .int(Int(chunk.totalBytes)),
            "dropped_bytes": .int(Int(chunk.droppedBytes)), "truncated": .bool(chunk.truncated),
        ]
    }

    private func listEvents(_ raw: JSONValue?) async throws -> JSONValue {
        let tool = "list_task_events"
        let args = try Arguments(raw, tool: tool, allowed: ["task_id", "since", "limit"])
        let taskID = try args.string("task_id")
        let since = try args.optionalInt("since")
        let limit = try args.int("limit", default: 100)
        guard limit >= 0 else { throw ToolError("\(tool): limit must not be negative") }
        let events = try await supervisor.events(of: taskID, after: since.map(Int64.init), limit: limit)
        return [
            "task_id": .string(taskID), "count": .int(events.count), "events": .array(events.map(Self.render)),
            "next_since": events.last.map { .int(Int($0.sequence)) } ?? (since.map { .int($0) } ?? .null),
        ]
    }

    // MARK: - control

    private func control(_ tool: String, _ raw: JSONValue?) async throws -> JSONValue {
        let args = try Arguments(raw, tool: tool, allowed: ["task_id", "reason"])
        let taskID = try args.string("task_id")
        let reason = try args.optionalString("reason")
        if tool == "resume_background_task", let resumed = try await clearWaitingMark(taskID, reason: reason) { return resumed }
        let result: TaskOperationResult
        switch tool {
        case "pause_background_task": result = try await supervisor.pause(taskID, reason: reason)
        case "resume_background_task": result = try await supervisor.resume(taskID, reason: reason)
        default: result = try await supervisor.cancel(taskID, reason: reason)
        }
        if result.changed, case .object(let metadata) = result.task.metadata, metadata["label"]?.isNull == false {
            _ = try await supervisor.updateMetadata(of: taskID) { value in value.merging(["label": .null]) }
        }
        if result.changed { signals.signal(taskID) }
        var rendered = try await render(try await supervisor.task(taskID))
        if let note = result.note { rendered = rendered.merging(["note": .string(note)]) }
        return rendered
    }

    /// A running task an agent marked as waiting (for the user, for a condition) goes on when resumed, as the real
    /// server's resume takes a waiting task back to work; its process never stopped, so only the mark goes. Nil when
    /// the task carries no mark.
    private func clearWaitingMark(_ taskID: String, reason: String?) async throws -> JSONValue? {
        let current = try await supervisor.task(taskID)
        guard current.status == .running, let label = current.metadata["label"]?.stringValue else { return nil }
        var data: JSONValue = ["previous_status": .string(label), "status": "running"]
        if let reason { data = data.merging(["reason": .string(reason)]) }
        let record = try await supervisor.updateMetadata(
            of: taskID, event: ("progress", "task resumed" + (reason.map { ": \($0)" } ?? ""), data)
        ) { value in value.merging(["label": .null]) }
        signals.signal(taskID)
        return try await render(record)
    }

    private func wait(_ raw: JSONValue?, progress: ProgressReporter?) async throws -> JSONValue {
        let tool = "wait_for_background_task"
        let args = try Arguments(raw, tool: tool, allowed: ["task_id", "target_statuses", "timeout_ms", "poll_interval_ms"])
        let taskID = try args.string("task_id")
        let targetNames = try args.optionalStrings("target_statuses")
        let timeout = try args.int("timeout_ms", default: 60000)
        let pollInterval = try args.int("poll_interval_ms", default: 1000)
        var targets = TaskStatus.finalStatuses
        if let targetNames {
            var parsed: Set<TaskStatus> = []
            for name in targetNames {
                guard let status = TaskStatus(rawValue: name) else {
                    throw ToolError("\(tool): unknown status \(name); statuses are \(Self.allStatuses.joined(separator: ", "))")
                }
                parsed.insert(status)
            }
            // An empty list means the final statuses, as the real server's `target_statuses or [...]` does.
            if !parsed.isEmpty { targets = parsed }
        }
        let startedAt = Date()
        // Nothing is written to the task: a wait only reads it (the real server's does too), so waiting leaves the
        // task's recent events as they were.
        // Event-driven: one attempt that sleeps until the status changes; a negative timeout waits forever. Progress
        // notifications (when asked for) are a heartbeat beside it, with the task's status.
        var heartbeat: Task<Void, Never>?
        if let progress, pollInterval > 0 {
            let supervisor = self.supervisor
            heartbeat = Task {
                let start = ContinuousClock.now
                while !Task.isCancelled {
                    let status = (try? await supervisor.task(taskID)).map(Self.displayStatus) ?? "unknown"
                    let waited = ContinuousClock.now - start
                    let milliseconds = Double(waited.components.seconds) * 1000 + Double(waited.components.attoseconds) / 1e15
                    await progress(milliseconds, timeout < 0 ? nil : Double(timeout), "waiting; task is \(status)")
                    try? await Task.sleep(for: .milliseconds(pollInterval))
                }
            }
        }
        defer { heartbeat?.cancel() }
        let outcome = try await waitForStatus(taskID, targets, timeout: timeout < 0 ? nil : .milliseconds(timeout))
        let finishedAt = Date()
        let task = try await render(outcome.task)
        // `ok` is whether the target was reached, as the real server reports it (false at the deadline).
        return [
            "ok": .bool(outcome.conditionMet), "condition_met": .bool(outcome.conditionMet), "attempts": 1,
            "started_at": .string(Timestamp.format(startedAt)), "finished_at": .string(Timestamp.format(finishedAt)),
            "timeout_ms": .int(timeout), "poll_interval_ms": .int(pollInterval),
            "waited_ms": .int(Int(outcome.waitedMilliseconds)),
            "last_result": [
                "condition_met": .bool(outcome.conditionMet), "task_id": .string(taskID),
                "status": task["status"] ?? .null, "task": task,
            ],
        ]
    }

    // MARK: - events, plans, artifacts

    private func appendEvent(_ raw: JSONValue?) async throws -> JSONValue {
        let tool = "append_task_event"
        let args = try Arguments(raw, tool: tool, allowed: ["task_id", "message", "event_type", "data"])
        let taskID = try args.string("task_id")
        let message = try args.string("message")
        let type = try args.optionalString("event_type") ?? "info"
        guard !type.isEmpty else { throw ToolError("\(tool): event_type must not be empty") }
        // An object, `{}` when none is given: the real server's `data: dict | None`, stored as `data or {}`.
        let data = try args.optionalObject("data").map(JSONValue.object) ?? [:]
        let event = try await supervisor.appendEvent(to: taskID, message: message, type: type, data: data)
        return Self.render(event)
    }

    private func createPlan(_ raw: JSONValue?) async throws -> JSONValue {
        let tool = "create_task_plan"
        let args = try Arguments(raw, tool: tool, allowed: ["task_id", "steps"])
        let taskID = try args.string("task_id")
        guard let steps = try args.optionalStrings("steps") else { throw ToolError("\(tool): missing required argument steps") }
        let now = JSONValue.string(Timestamp.format(Date()))
        let plan = JSONValue.array(
            steps.enumerated().map { index, title in
                [
                    "step_id": .string(Identifiers.make()), "index": .int(index + 1), "title": .string(title), "status": "pending",
                    "note": "", "updated_at": now,
                ]
            })
        let record = try await supervisor.updateMetadata(
            of: taskID, event: ("decision", "plan created with \(steps.count) steps", ["step_count": .int(steps.count)])
        ) { value in value.merging(["plan_steps": plan]) }
        return try await render(record)
    }

    private func updateStep(_ raw: JSONValue?) async throws -> JSONValue {
        let tool = "update_task_step"
        let args = try Arguments(raw, tool: tool, allowed: ["task_id", "step_index", "status", "note"])
        let taskID = try args.string("task_id")
        guard let index = try args.optionalInt("step_index") else { throw ToolError("\(tool): missing required argument step_index") }
        let status = try args.string("status")
        let note = try args.optionalString("note")
        guard Self.stepStatuses.contains(status) else {
            throw ToolError("\(tool): status must be one of \(Self.stepStatuses.joined(separator: ", ")), got \(status)")
        }
        let current = try await supervisor.task(taskID)
        let steps = current.metadata["plan_steps"]?.arrayValue ?? []
        guard index >= 1, index <= steps.count else {
            throw ToolError(
                steps.isEmpty
                    ? "\(tool): task \(taskID) has no plan; create one with create_task_plan"
                    : "\(tool): step_index must be between 1 and \(steps.count), got \(index)")
        }
        let now = JSONValue.string(Timestamp.format(Date()))
        // A step's note stays when an update gives none (the real server's `note or matched["note"]`).
        let kept = note.flatMap { $0.isEmpty ? nil : $0 } ?? steps[index - 1]["note"]?.stringValue ?? ""
        let record = try await supervisor.updateMetadata(
            of: taskID,
            event: ("progress", "step \(index) \(status)", ["step_index": .int(index), "status": .string(status), "note": .string(kept)])
        ) { value throws(RuntimeError) in
            var updated = value["plan_steps"]?.arrayValue ?? []
            guard index <= updated.count else { throw RuntimeError.invalidArgument("the plan changed meanwhile") }
            updated[index - 1] = updated[index - 1].merging(["status": .string(status), "note": .string(kept), "updated_at": now])
            return value.merging(["plan_steps": .array(updated)])
        }
        return try await render(record)
    }

    private func recordArtifact(_ raw: JSONValue?) async throws -> JSONValue {
        let tool = "record_task_artifact"
        let args = try Arguments(raw, tool: tool, allowed: ["task_id", "path", "description"])
        let taskID = try args.string("task_id")
        let path = try args.string("path")
        let description = try args.optionalString("description") ?? ""
        let resolved = Self.artifactPath(path)
        let artifact: JSONValue = [
            "artifact_id": .string(Identifiers.make()),
            "path": .string(resolved), "description": .string(description),
            "exists": .bool(FileManager.default.fileExists(atPath: resolved)),
            "recorded_at": .string(Timestamp.format(Date())),
        ]
        _ = try await supervisor.updateMetadata(of: taskID, event: ("artifact", "artifact recorded: \(resolved)", artifact)) { value in
            value.merging(["artifacts": .array((value["artifacts"]?.arrayValue ?? []) + [artifact])])
        }
        return artifact
    }

    /// The path as the real server records it (`Path(path).expanduser().resolve()`): `~` expanded, made absolute
    /// against the server's working directory, and symbolic links resolved as far as the path exists.
    static func artifactPath(_ path: String) -> String {
        let expanded = (path as NSString).expandingTildeInPath
        let absolute = expanded.hasPrefix("/") ? expanded : FileManager.default.currentDirectoryPath + "/" + expanded
        return URL(fileURLWithPath: absolute).standardizedFileURL.resolvingSymlinksInPath().path
    }

    private func markWaiting(_ tool: String, _ raw: JSONValue?) async throws -> JSONValue {
        let forUser = tool == "mark_task_waiting_for_user"
        let key = forUser ? "question" : "note"
        let args = try Arguments(raw, tool: tool, allowed: ["task_id", key])
        let taskID = try args.string("task_id")
        let text = try args.string(key)
        let current = try await supervisor.task(taskID)
        // A final task never changes again (the real server's fault is to bring it back to life).
        guard current.status == .running else {
            return try await render(current).merging(
                ["note": .string("task is \(current.status.rawValue); only a running task can be marked waiting")])
        }
        let label = forUser ? "waiting_for_user" : "waiting_for_condition"
        let record = try await supervisor.updateMetadata(
            of: taskID,
            event: (forUser ? "warning" : "info", forUser ? "waiting for user: \(text)" : "waiting for condition: \(text)",
                    ["previous_status": .string(Self.displayStatus(current)), "status": .string(label), key: .string(text)])
        ) { value in value.merging(["label": .string(label), key == "question" ? "question" : "waiting_note": .string(text)]) }
        signals.signal(taskID)
        return try await render(record)
    }

    // MARK: - summaries

    private func summarize(_ raw: JSONValue?) async throws -> JSONValue {
        let tool = "summarize_background_task"
        let args = try Arguments(raw, tool: tool, allowed: ["task_id", "include_recent_events"])
        let record = try await supervisor.task(try args.string("task_id"))
        let count = max(0, try args.int("include_recent_events", default: 10))
        let events = try await supervisor.recentEvents(of: record.taskID, limit: count)
        return ["task": try await render(record), "recent_events": .array(events.map(Self.render)), "summary": .string(Self.summary(record))]
    }

    private func handoff(_ raw: JSONValue?) async throws -> JSONValue {
        let tool = "get_task_handoff"
        let args = try Arguments(raw, tool: tool, allowed: ["task_id", "include_recent_events"])
        let record = try await supervisor.task(try args.string("task_id"))
        let count = max(0, try args.int("include_recent_events", default: 10))
        let events = try await supervisor.recentEvents(of: record.taskID, limit: count)
        let steps = record.metadata["plan_steps"]?.arrayValue ?? []
        // As the real server: every step not completed is pending, and the current step is the one in progress, else
        // the first pending one, else the last.
        let completed = steps.filter { $0["status"]?.stringValue == "completed" }
        let pending = steps.filter { $0["status"]?.stringValue != "completed" }
        let current = steps.first { $0["status"]?.stringValue == "in_progress" }
            ?? steps.first { $0["status"]?.stringValue == "pending" } ?? steps.last ?? .null
        let task = try await render(record)
        let status = Self.displayStatus(record)
        // The rendered task's, as `last_result` below: a watcher task's come from its newest check.
        let lastError = task["last_error"]?.stringValue ?? ""
        // Always a string, as the real server's: what holds the task up, else its newest event's message.
        let blocker: String
        var next: [JSONValue]
        switch status {
        case "waiting_for_user":
            blocker = record.metadata["question"]?.stringValue ?? task["last_event"]?["message"]?.stringValue ?? "waiting for the user"
            next = ["answer the question, then resume_background_task to take the task back to work"]
        case "waiting_for_condition":
            blocker = lastError.isEmpty ? record.metadata["waiting_note"]?.stringValue ?? "waiting for a condition" : lastError
            next = ["wait_for_background_task, or check back with get_background_task"]
        case "paused": blocker = "task is paused; resume it to go on"; next = ["resume_background_task when ready", "cancel_background_task if no longer needed"]
        case "failed": blocker = lastError.isEmpty ? "failed" : lastError; next = ["read get_task_output (stderr)", "create a corrected task"]
        default:
            blocker = events.last?.message ?? ""
            next = status == "running"
                ? ["wait_for_background_task", "get_task_output to follow progress"] : ["read get_task_output", "record artifacts"]
        }
        if let step = current.objectValue, step["status"]?.stringValue != "completed",
            let index = step["index"]?.intValue, let title = step["title"]?.stringValue
        {
            next.append(.string("work on the current step: \(index). \(title)"))
        }
        return [
            "task_id": .string(record.taskID), "status": .string(status), "goal": task["goal"] ?? "",
            "task_type": .string(record.kind), "current_step": current, "completed_steps": .array(completed),
            "pending_steps": .array(pending), "recent_events": .array(events.map(Self.render)),
            "last_result": task["last_result"] ?? [:], "last_error": .string(lastError),
            "artifacts": record.metadata["artifacts"] ?? [], "blocker": .string(blocker), "suggested_next_actions": .array(next),
            "handoff": .string("Task \(record.title) (\(record.taskID)) is \(status). Goal: \(task["goal"]?.stringValue ?? "")."),
            "summary": .string(Self.summary(record)),
        ]
    }

    private func schedulerTime(_ raw: JSONValue?) async throws -> JSONValue {
        _ = try Arguments(raw, tool: "get_scheduler_time", allowed: [])
        let now = Date()
        var uptime = timespec()
        clock_gettime(CLOCK_MONOTONIC, &uptime)
        // As the real server: the statuses that have tasks, each as `get_background_task` shows it.
        let counts = try await supervisor.displayStatusCounts().mapValues(JSONValue.int)
        let zone = TimeZone.current
        let local = ISO8601DateFormatter.string(from: now, timeZone: zone, formatOptions: [.withInternetDateTime, .withFractionalSeconds])
        return [
            "local_time": .string(local), "local_timezone": .string(zone.identifier),
            "utc_time": .string(Timestamp.format(now)),
            "monotonic_seconds": .double(Double(uptime.tv_sec) + Double(uptime.tv_nsec) / 1e9),
            "runtime_tasks_dir": .string(supervisor.configuration.stateDirectory + "/tasks"),
            "task_status_counts": .object(counts),
            // The real server's scheduler fields, then this mock's own. There is no polling loop here (an exit or a
            // status change wakes what waits on it: `scheduler_interval_ms` 0, no loop errors), and no task files
            // to load one by one (the store is one SQLite database: no load issues).
            "scheduler": [
                "running": true, "scheduler_interval_ms": 0, "last_error": "", "last_error_at": "", "load_issue_count": 0,
                "recent_load_issues": [], "kind": "event-driven", "engine": "corral task runtime (real child processes)",
                "cgroups": .bool(supervisor.cgroupUnavailableReason == nil),
            ],
        ]
    }
}
