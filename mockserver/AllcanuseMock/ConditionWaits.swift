import CCorral
import CorralJSON
import Dispatch
import Foundation
import Glibc
import Sandbox
import TaskRuntime
import WatchConditions

/// The 8 Allcanuse wait tools and the watcher task types. Every condition is checked by `allcanuse-watch`, a real
/// process confined like any task (the server's sandbox floor, the task user): the server never opens a path,
/// a connection or a URL a client named with its own privileges, and pause, cancel and time limits are the task
/// runtime's own.
extension AllcanuseService {
    /// The report a watcher writes after each check (the newest line of its standard output).
    struct WatchReport {
        var checkCount: Int
        var checkedAt: String?
        var lastResult: JSONValue
        var fatal: Bool
        /// What wakes the watcher: inotify, pidfd, or poll (its interval only).
        var wakeup: String?

        init?(line: Substring) {
            guard let value = try? JSONValue.parse(String(line)), let count = value["check_count"]?.intValue else {
                return nil
            }
            checkCount = count
            checkedAt = value["checked_at"]?.stringValue
            lastResult = value["last_result"] ?? ["condition_met": false]
            fatal = value["fatal_error"]?.boolValue ?? false
            wakeup = value["wakeup"]?.stringValue
        }
    }

    /// The exit status with which a watcher says its condition can never be met.
    static let watcherFatalStatus: Int32 = 3
    static let watcherOutputLimit = 64 << 10

    /// The newest complete report of a watcher task, from its output files (so it survives a restart too).
    func latestReport(_ taskID: String) async -> WatchReport? {
        guard let chunk = try? await supervisor.output(of: taskID, stream: .stdout, tailBytes: 16384) else { return nil }
        for line in chunk.text.split(separator: "\n").reversed() {
            if let report = WatchReport(line: line) { return report }
        }
        return nil
    }

    /// Parses a condition, with a client's path made absolute as the real server does (`~` and the server's
    /// working directory); the watcher, not the server, then looks at it.
    func parseCondition(kind: String, fields: [String: JSONValue], context: String, forTool: Bool) throws(ToolError)
        -> WatchCondition
    {
        var fields = fields
        if kind == "wait_file", let path = fields["path"]?.stringValue, !path.isEmpty {
            fields["path"] = .string(Self.absolutePath(path))
        }
        do {
            return try WatchCondition(kind: kind, fields: fields, context: context, requireWindowFilter: !forTool)
        } catch {
            throw ToolError(error.message)
        }
    }

    static func absolutePath(_ path: String) -> String {
        var expanded = path
        if path == "~" || path.hasPrefix("~/") {
            expanded = (ProcessInfo.processInfo.environment["HOME"] ?? "/") + path.dropFirst()
        }
        if !expanded.hasPrefix("/") {
            expanded = FileManager.default.currentDirectoryPath + "/" + expanded
        }
        return URL(fileURLWithPath: expanded).standardizedFileURL.path
    }

    /// The task that runs a watcher for `condition`; `once`: a single check. `descriptor` is what the watcher gets
    /// on its standard input (a pidfd, an inotify instance), which the caller closes with `release` once the task
    /// has started (a pidfd) or ended (an inotify instance: its last close waits for an SRCU grace period, 10 ms
    /// here, which the server pays off the request path instead of the watcher on its way to completion).
    func watcherSpec(
        _ condition: WatchCondition, title: String, pollInterval: Int, timeout: Int?, once: Bool, isInternal: Bool,
        metadata: JSONValue
    ) throws(ToolError) -> (spec: TaskSpec, descriptor: WatcherDescriptor?) {
        guard let executable = watcherExecutable else {
            throw ToolError(
                "the condition watcher allcanuse-watch was not found beside this server's executable; build it "
                    + "(swift build --product allcanuse-watch) or name it with ALLCANUSE_WATCH=PATH")
        }
        if let (host, port) = Self.tcpTarget(of: condition),
            let refusal = sandboxFloor.tcpConnectRefusal(port: port, families: Self.addressFamilies(of: host))
        {
            throw ToolError(
                "a \(condition.kind) condition is checked by a watcher task that connects over TCP, and tasks run "
                    + "under the server's sandbox floor, which forbids it: \(refusal); start allcanuse-mock with a "
                    + "--sandbox-floor that allows TCP connections to wait on ports or URLs")
        }
        var arguments = [executable, condition.kind, condition.jsonValue.jsonString(), "--poll-ms", String(max(1, pollInterval))]
        if once { arguments.append("--once") }
        var descriptor: WatcherDescriptor?
        if case .process(let process) = condition, let pid = process.pid, process.state == .exited {
            // Opened here, where the pid means what the client meant: the watcher lives in the tasks' PID namespace.
            let pidfd = corral_pidfd_open(pid)
            if pidfd >= 0 {
                descriptor = .pidfd(pidfd)
                arguments.append("--pidfd-stdin")
            }
        }
        if case .file = condition {
            let instance = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
            if instance >= 0 {
                descriptor = .inotify(instance)
                arguments.append("--inotify-stdin")
            }
        }
        var spec = TaskSpec(
            title: title, kind: condition.kind, command: .argv(arguments), timeoutMilliseconds: timeout,
            outputLimitBytes: Self.watcherOutputLimit, sandbox: sandboxFloor)
        spec.standardInputDescriptor = descriptor?.fd
        var fields = metadata.objectValue ?? [:]
        fields["watcher"] = true
        if isInternal { fields["internal"] = true } else { fields["idle_status"] = "waiting_for_condition" }
        spec.metadata = .object(fields)
        return (spec, descriptor)
    }

    /// Where a port or HTTP watcher connects first (an HTTP redirect may lead elsewhere).
    private static func tcpTarget(of condition: WatchCondition) -> (host: String, port: Int)? {
        switch condition {
        case .port(let port): return (port.host, port.port)
        case .http(let http): return (try? HTTPTarget(http.url)).map { ($0.host, $0.port) }
        default: return nil
        }
    }

    /// The socket family an address literal needs; a name may resolve to either.
    static func addressFamilies(of host: String) -> Set<String> {
        let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        var address = in6_addr()
        if inet_pton(AF_INET, bare, &address) == 1 { return ["AF_INET"] }
        if inet_pton(AF_INET6, bare, &address) == 1 { return ["AF_INET6"] }
        return ["AF_INET", "AF_INET6"]
    }

    /// A descriptor handed to a watcher, and when the server's copy may go.
    enum WatcherDescriptor {
        case pidfd(Int32)
        case inotify(Int32)

        var fd: Int32 {
            switch self {
            case .pidfd(let fd), .inotify(let fd): return fd
            }
        }

        /// Closes the server's copy: a pidfd at once; an inotify instance once `ended` returns, on a thread of its
        /// own (the close blocks for a grace period).
        func release(after ended: (@Sendable () async -> Void)? = nil) {
            switch self {
            case .pidfd(let fd):
                close(fd)
            case .inotify(let fd):
                Task.detached {
                    await ended?()
                    DispatchQueue.global(qos: .utility).async { close(fd) }
                }
            }
        }
    }

    // MARK: - the standalone wait tools

    func waitTool(_ tool: String, _ raw: JSONValue?) async throws -> JSONValue {
        switch tool {
        case "wait": return try await plainWait(raw)
        case "wait_until": return try await waitUntil(raw)
        default: break
        }
        let kinds = [
            "wait_for_file": "wait_file", "wait_for_process": "wait_process", "wait_for_port": "wait_port",
            "wait_for_http": "wait_http", "wait_for_window": "wait_window",
        ]
        if tool == "wait_for_desktop_change" { return try desktopChange(raw) }
        guard let kind = kinds[tool] else { throw ToolError("unknown tool \(tool)") }
        let waitFields: Set<String> = ["timeout_ms", "poll_interval_ms"]
        let conditionFields: Set<String> = switch kind {
        case "wait_file": ["path", "state", "min_size_bytes", "text_contains", "encoding"]
        case "wait_process": ["pid", "name", "state"]
        case "wait_port": ["host", "port", "state", "connect_timeout_ms"]
        case "wait_http": ["url", "expected_statuses", "method", "headers", "body", "request_timeout_ms", "text_contains"]
        default: ["title_filter", "hwnd", "process_name", "state", "include_invisible", "limit"]
        }
        let args = try Arguments(raw, tool: tool, allowed: waitFields.union(conditionFields))
        let timeout = try args.int("timeout_ms", default: 60000)
        let pollInterval = try args.int("poll_interval_ms", default: kind == "wait_http" ? 2000 : 1000)
        var fields: [String: JSONValue] = [:]
        for name in conditionFields { if let value = args.value(name) { fields[name] = value } }
        let condition = try parseCondition(kind: kind, fields: fields, context: tool, forTool: true)
        if case .window(let window) = condition {
            // No process to run: the answer of a machine without a desktop session, at once.
            let now = Timestamp.format(Date())
            return [
                "ok": false, "condition_met": false, "fatal_error": true, "attempts": 1, "started_at": .string(now),
                "finished_at": .string(now), "timeout_ms": .int(timeout), "poll_interval_ms": .int(pollInterval),
                "waited_ms": 0, "last_result": window.check().lastResult,
            ]
        }
        return try await runWatcher(
            tool, condition, timeout: timeout, pollInterval: pollInterval)
    }

    /// Runs a watcher as an internal task and waits for it; a cancelled call (the client's
    /// `notifications/cancelled`, or its closed stream) ends the watcher.
    private func runWatcher(_ tool: String, _ condition: WatchCondition, timeout: Int, pollInterval: Int)
        async throws -> JSONValue
    {
        let startedAt = Date()
        let prepared = try watcherSpec(
            condition, title: tool, pollInterval: pollInterval, timeout: timeout > 0 ? timeout : nil,
            once: timeout == 0, isInternal: true, metadata: ["tool": .string(tool)])
        let created = try await startWatcher(prepared)
        let taskID = created.taskID
        let supervisor = self.supervisor
        var final = created
        if !created.status.isFinal {
            let outcome = try? await withTaskCancellationHandler {
                try await supervisor.wait(for: taskID)
            } onCancel: {
                Task { _ = try? await supervisor.cancel(taskID, reason: "the client cancelled \(tool)") }
            }
            final = outcome?.task ?? created
            if !final.status.isFinal {
                _ = try? await supervisor.cancel(taskID, reason: "the client cancelled \(tool)")
                final = (try? await supervisor.wait(for: taskID).task) ?? final
            }
        }
        let report = await latestReport(taskID)
        let stderr = (try? await supervisor.output(of: taskID, stream: .stderr, tailBytes: 2048).text) ?? ""
        try? await supervisor.discard(taskID)
        if report == nil, final.status == .failed, final.exitCode != 1 {
            // The watcher never checked: it could not start, or refused the condition.
            let reason = stderr.isEmpty ? (final.lastError ?? "the watcher failed") : stderr.trimmingCharacters(in: .whitespacesAndNewlines)
            throw ToolError("\(tool): \(reason)")
        }
        let met = final.status == .completed
        let fatal = report?.fatal ?? false
        var result: [String: JSONValue] = [
            "ok": .bool(met), "condition_met": .bool(met), "attempts": .int(report?.checkCount ?? 0),
            "started_at": .string(Timestamp.format(startedAt)), "finished_at": .string(Timestamp.format(Date())),
            "timeout_ms": .int(timeout), "poll_interval_ms": .int(pollInterval),
            "waited_ms": .int(Int(Date().timeIntervalSince(startedAt) * 1000)),
            "last_result": report?.lastResult ?? ["condition_met": false],
        ]
        if fatal { result["fatal_error"] = true }
        if final.status == .cancelled { result["cancelled"] = true }
        return .object(result)
    }

    private func plainWait(_ raw: JSONValue?) async throws -> JSONValue {
        let args = try Arguments(raw, tool: "wait", allowed: ["duration_ms", "reason"])
        guard let duration = try args.optionalInt("duration_ms") else {
            throw ToolError("wait: missing required argument duration_ms")
        }
        let reason = try args.optionalString("reason") ?? ""
        let startedAt = Date()
        try await Task.sleep(for: .milliseconds(max(0, duration)))
        let finishedAt = Date()
        return [
            "ok": true, "reason": .string(reason), "requested_duration_ms": .int(duration),
            "started_at": .string(Timestamp.format(startedAt)), "finished_at": .string(Timestamp.format(finishedAt)),
            "waited_ms": .int(Int(finishedAt.timeIntervalSince(startedAt) * 1000)),
        ]
    }

    private func waitUntil(_ raw: JSONValue?) async throws -> JSONValue {
        let args = try Arguments(raw, tool: "wait_until", allowed: ["timestamp", "reason"])
        let text = try args.string("timestamp")
        guard let target = Timestamp.parse(text) else {
            throw ToolError("wait_until: timestamp must be an ISO-8601 time such as 2026-12-02T10:00:00Z, got \(text)")
        }
        let reason = try args.optionalString("reason") ?? "wait_until"
        let startedAt = Date()
        let remaining = max(0, Int(target.timeIntervalSince(startedAt) * 1000))
        try await Task.sleep(for: .milliseconds(remaining))
        let finishedAt = Date()
        return [
            "ok": true, "reason": .string(reason), "requested_duration_ms": .int(remaining),
            "target_time": .string(Timestamp.format(target)), "remaining_ms_when_started": .int(remaining),
            "started_at": .string(Timestamp.format(startedAt)), "finished_at": .string(Timestamp.format(finishedAt)),
            "waited_ms": .int(Int(finishedAt.timeIntervalSince(startedAt) * 1000)),
        ]
    }

    private func desktopChange(_ raw: JSONValue?) throws -> JSONValue {
        let tool = "wait_for_desktop_change"
        let args = try Arguments(
            raw, tool: tool, allowed: ["include_invisible", "limit", "baseline_snapshot", "timeout_ms", "poll_interval_ms"])
        let timeout = try args.int("timeout_ms", default: 60000)
        let pollInterval = try args.int("poll_interval_ms", default: 1000)
        let limit = try args.int("limit", default: 50)
        let includeInvisible = args.value("include_invisible")?.boolValue ?? false
        let now = Timestamp.format(Date())
        var lastResult: [String: JSONValue] = [
            "condition_met": false, "fatal_error": true, "error": .string(WindowCondition.noDesktop),
            "include_invisible": .bool(includeInvisible), "limit": .int(limit),
        ]
        if let baseline = args.value("baseline_snapshot") { lastResult["baseline_snapshot"] = baseline }
        return [
            "ok": false, "condition_met": false, "fatal_error": true,
            "attempts": .int(args.value("baseline_snapshot") == nil ? 0 : 1), "started_at": .string(now),
            "finished_at": .string(now), "timeout_ms": .int(timeout), "poll_interval_ms": .int(pollInterval),
            "waited_ms": 0, "last_result": .object(lastResult),
        ]
    }

    // MARK: - watcher tasks

    /// A `wait_*` task of `create_background_task`: the watcher is the task's process.
    func watcherTask(
        kind: String, condition fields: [String: JSONValue], title: String, pollInterval: Int, timeout: Int?,
        metadata: JSONValue
    ) async throws -> TaskRecord {
        let tool = "create_background_task"
        if kind == "wait_desktop_change" {
            // The real server captures a baseline at creation, which fails without a desktop: no task is made.
            throw ToolError("\(tool): \(WindowCondition.noDesktop)")
        }
        let condition = try parseCondition(kind: kind, fields: fields, context: "\(tool): condition", forTool: false)
        let prepared = try watcherSpec(
            condition, title: title, pollInterval: pollInterval, timeout: timeout, once: false, isInternal: false,
            metadata: metadata.merging(["condition": condition.jsonValue]))
        return try await startWatcher(prepared)
    }

    /// Starts the watcher's task; the server's copy of what it handed the watcher goes once the task has ended
    /// (at once when it could not start).
    private func startWatcher(_ prepared: (spec: TaskSpec, descriptor: WatcherDescriptor?)) async throws -> TaskRecord {
        let record: TaskRecord
        do {
            record = try await supervisor.create(prepared.spec)
        } catch {
            prepared.descriptor?.release()
            throw error
        }
        let supervisor = self.supervisor
        let taskID = record.taskID
        prepared.descriptor?.release(after: { _ = try? await supervisor.wait(for: taskID) })
        return record
    }

    /// The Allcanuse check fields of a watcher task, from its newest report.
    func watcherFields(_ record: TaskRecord) async -> [String: JSONValue] {
        guard record.metadata["watcher"]?.boolValue == true else { return [:] }
        let report = await latestReport(record.taskID)
        var fields: [String: JSONValue] = [
            "check_count": .int(report?.checkCount ?? 0),
            "last_result": report?.lastResult ?? [:],
            "last_checked_at": report?.checkedAt.map(JSONValue.string) ?? "",
            // The mock's own: what wakes the watcher (inotify, pidfd, or poll when no event source was available).
            "watcher_wakeup": report?.wakeup.map(JSONValue.string) ?? .null,
        ]
        let poll = record.metadata["poll_interval_ms"]?.intValue ?? 5000
        if !record.status.isFinal {
            let base = report?.checkedAt.flatMap(Timestamp.parse) ?? record.startedAt ?? record.createdAt
            fields["next_check_at"] = .string(Timestamp.format(base.addingTimeInterval(Double(poll) / 1000)))
        }
        if record.status == .failed, record.exitCode == Self.watcherFatalStatus {
            fields["last_error"] = .string(report?.lastResult["error"]?.stringValue ?? "the condition can never be met")
        }
        return fields
    }
}
