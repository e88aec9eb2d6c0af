import CorralJSON
import Foundation
import Sandbox

/// The Allcanuse status set.
public enum TaskStatus: String, Sendable, Codable, CaseIterable {
    case pending, running, waiting, waitingForUser = "waiting_for_user"
    case waitingForCondition = "waiting_for_condition", paused, completed, failed, cancelled

    /// A final task never changes status again.
    public var isFinal: Bool {
        self == .completed || self == .failed || self == .cancelled
    }

    public static let finalStatuses: Set<TaskStatus> = [.completed, .failed, .cancelled]
}

/// What a task runs.
public enum TaskCommand: Sendable, Equatable {
    /// A program and its arguments, executed directly (no shell).
    case argv([String])
    /// A command line for `/bin/sh -c`.
    case shell(String)

    var arguments: [String] {
        switch self {
        case .argv(let arguments): return arguments
        case .shell(let command): return ["/bin/sh", "-c", command]
        }
    }
}

/// A request to start a task.
public struct TaskSpec: Sendable {
    public var title: String
    public var kind: String
    public var command: TaskCommand
    /// Working directory; nil: the task's own directory under the state directory.
    public var workingDirectory: String?
    /// Added to the runtime's minimal base environment (nothing else of the supervisor's environment is inherited).
    public var environment: [String: String]
    /// Written to the task's standard input; nil: `/dev/null`.
    public var standardInput: String?
    /// A descriptor the task gets as its standard input instead (duplicated; the caller keeps and closes its own),
    /// such as a pidfd a condition watcher polls.
    public var standardInputDescriptor: Int32?
    /// Running time allowed, in milliseconds; time spent paused does not count.
    public var timeoutMilliseconds: Int?
    /// Bytes kept on disk per stream (head and tail); the rest is counted and dropped.
    public var outputLimitBytes: Int
    /// A sandbox profile the task runs under: its seccomp filter, Landlock rules (with the task's working and temp
    /// directories writable) and resource limits are prepared for this task and installed between fork and exec.
    public var sandbox: SandboxProfile?
    /// Extra confinement installed in the child between fork and exec (the sandbox's hook point), used when
    /// `sandbox` is nil; with a sandbox, only its resource limits are added.
    public var confinement: ChildConfinement
    /// What the confinement enforces, recorded on the task ("seccomp:default", "landlock", …).
    public var confinementSummary: [String]
    /// Opaque to the runtime: stored and returned with the task (the mock server keeps its Allcanuse fields here).
    public var metadata: JSONValue

    public static let defaultOutputLimit = 1 << 20

    public init(
        title: String,
        kind: String = "command",
        command: TaskCommand,
        workingDirectory: String? = nil,
        environment: [String: String] = [:],
        standardInput: String? = nil,
        timeoutMilliseconds: Int? = nil,
        outputLimitBytes: Int = TaskSpec.defaultOutputLimit,
        sandbox: SandboxProfile? = nil,
        confinement: ChildConfinement = .none,
        confinementSummary: [String] = [],
        metadata: JSONValue = .object([:])
    ) {
        self.title = title
        self.kind = kind
        self.command = command
        self.workingDirectory = workingDirectory
        self.environment = environment
        self.standardInput = standardInput
        self.timeoutMilliseconds = timeoutMilliseconds
        self.outputLimitBytes = outputLimitBytes
        self.sandbox = sandbox
        self.confinement = confinement
        self.confinementSummary = confinementSummary
        self.metadata = metadata
    }
}

/// A task as stored and reported.
public struct TaskRecord: Sendable, Codable, Equatable {
    public var taskID: String
    public var title: String
    public var kind: String
    public var status: TaskStatus
    public var createdAt: Date
    public var updatedAt: Date
    public var startedAt: Date?
    public var completedAt: Date?
    public var timeoutMilliseconds: Int?
    public var command: [String]
    public var workingDirectory: String
    public var pid: Int32?
    /// Process start time in clock ticks since boot: with the pid, it names the process even after pid reuse.
    public var processStartTime: UInt64?
    public var exitCode: Int32?
    public var signal: Int32?
    public var lastError: String?
    public var cgroupPath: String?
    /// Which protections are active for this task (e.g. "own_session", "pidfd", "pdeathsig", "cgroup").
    public var protections: [String]
    public var outputLimitBytes: Int
    public var stdoutBytes: Int64
    public var stderrBytes: Int64
    public var cpuUserMicroseconds: Int64?
    public var cpuSystemMicroseconds: Int64?
    public var maxResidentKiB: Int64?
    /// The user the task ran as.
    public var uid: Int64?
    public var gid: Int64?
    /// The most memory the task held at once, from its memory cgroup (a task with a memory limit, or any task where
    /// the v2 memory controller is delegated); nil without one.
    public var peakMemoryBytes: Int64?
    /// Storage I/O of the first process and the children it waited for (/proc/PID/io).
    public var ioReadBytes: Int64?
    public var ioWriteBytes: Int64?
    /// Running time so far, paused time excluded.
    public var runningMilliseconds: Int64
    public var metadata: JSONValue

    enum CodingKeys: String, CodingKey {
        case taskID = "task_id", title, kind = "task_type", status
        case createdAt = "created_at", updatedAt = "updated_at", startedAt = "started_at"
        case completedAt = "completed_at", timeoutMilliseconds = "timeout_ms", command
        case workingDirectory = "cwd", pid, processStartTime = "process_start_time", exitCode = "exit_code", signal
        case lastError = "last_error", cgroupPath = "cgroup", protections, outputLimitBytes = "output_limit_bytes"
        case stdoutBytes = "stdout_bytes", stderrBytes = "stderr_bytes"
        case cpuUserMicroseconds = "cpu_user_us", cpuSystemMicroseconds = "cpu_system_us"
        case maxResidentKiB = "max_rss_kib", runningMilliseconds = "running_ms", metadata, uid, gid
        case peakMemoryBytes = "peak_memory_bytes", ioReadBytes = "io_read_bytes", ioWriteBytes = "io_write_bytes"
    }
}

extension TaskRecord {
    /// The status shown and filtered on: `metadata.label` (a string, such as the Allcanuse `waiting_for_user` and
    /// `waiting_for_condition` an agent sets) stands for a running task's status, else `metadata.idle_status` (what
    /// a running watcher shows between checks); every other task shows its own. An internal task (one a tool runs
    /// for its own use, `metadata.internal`) shows `TaskRecord.internalStatus`, which lists and counts leave out.
    public var displayStatus: String {
        if metadata["internal"]?.boolValue == true { return Self.internalStatus }
        if status == .running, let label = metadata["label"]?.stringValue { return label }
        if status == .running, let idle = metadata["idle_status"]?.stringValue { return idle }
        return status.rawValue
    }

    public static let internalStatus = "internal"

    public var isInternal: Bool { metadata["internal"]?.boolValue == true }
}

/// An entry of a task's history.
public struct TaskEvent: Sendable, Codable, Equatable {
    /// Order of insertion across all tasks (for `since` queries).
    public var sequence: Int64
    public var eventID: String
    public var taskID: String
    public var timestamp: Date
    public var type: String
    public var message: String
    public var data: JSONValue

    enum CodingKeys: String, CodingKey {
        case sequence, eventID = "event_id", taskID = "task_id", timestamp, type, message, data
    }
}

/// The result of pause, resume and cancel: the task, and a note when nothing was done (e.g. pausing a final task).
public struct TaskOperationResult: Sendable {
    public var task: TaskRecord
    public var changed: Bool
    public var note: String?
}

/// The result of a wait.
public struct WaitOutcome: Sendable {
    public var task: TaskRecord
    public var conditionMet: Bool
    public var waitedMilliseconds: Int64

    public init(task: TaskRecord, conditionMet: Bool, waitedMilliseconds: Int64) {
        self.task = task
        self.conditionMet = conditionMet
        self.waitedMilliseconds = waitedMilliseconds
    }
}

public enum RuntimeError: Error, Sendable, CustomStringConvertible, Equatable {
    case unknownTask(String)
    case invalidArgument(String)
    case stateDirectoryInUse(path: String, holder: String)
    case system(String, Int32)
    case storage(String)
    case shutDown

    public var description: String {
        switch self {
        case .unknownTask(let id): return "unknown task id \(id)"
        case .invalidArgument(let message): return message
        case .stateDirectoryInUse(let path, let holder):
            return "state directory \(path) is in use by another supervisor (\(holder))"
        case .system(let call, let code): return "\(call) failed: \(errnoDescription(code))"
        case .storage(let message): return "task store: \(message)"
        case .shutDown: return "the supervisor is shut down"
        }
    }
}

public enum Identifiers {
    /// 32 lowercase hex characters, as Allcanuse task ids.
    public static func make() -> String {
        var generator = SystemRandomNumberGenerator()
        let high = generator.next() as UInt64
        let low = generator.next() as UInt64
        return hex(high) + hex(low)
    }

    private static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}

extension JSONEncoder {
    static var runtime: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(Timestamp.format(date))
        }
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }
}

extension JSONDecoder {
    static var runtime: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            guard let date = Timestamp.parse(text) else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "bad timestamp \(text)")
            }
            return date
        }
        return decoder
    }
}

extension TaskRecord {
    /// Reads what `jsonValue` writes: the inverse written by hand, as that is, because `JSONDecoder` took most of
    /// the time of listing and reading tasks. nil when a required field is missing or of the wrong type.
    public init?(json: JSONValue) {
        guard case .object(let fields) = json else { return nil }
        func string(_ key: String) -> String? { fields[key]?.stringValue }
        func date(_ key: String) -> Date? { string(key).flatMap(Timestamp.parse) }
        func int(_ key: String) -> Int? { fields[key]?.intValue }
        func int64(_ key: String) -> Int64? { int(key).map(Int64.init) }
        func strings(_ key: String) -> [String]? {
            guard let array = fields[key]?.arrayValue else { return nil }
            let values = array.compactMap(\.stringValue)
            return values.count == array.count ? values : nil
        }
        guard let taskID = string("task_id"), let title = string("title"), let kind = string("task_type"),
            let status = string("status").flatMap(TaskStatus.init(rawValue:)), let createdAt = date("created_at"),
            let updatedAt = date("updated_at"), let command = strings("command"), let cwd = string("cwd"),
            let protections = strings("protections"), let outputLimit = int("output_limit_bytes"),
            let stdoutBytes = int64("stdout_bytes"), let stderrBytes = int64("stderr_bytes"),
            let running = int64("running_ms")
        else { return nil }
        self.init(
            taskID: taskID, title: title, kind: kind, status: status, createdAt: createdAt, updatedAt: updatedAt,
            startedAt: date("started_at"), completedAt: date("completed_at"), timeoutMilliseconds: int("timeout_ms"),
            command: command, workingDirectory: cwd, pid: int("pid").map { Int32(truncatingIfNeeded: $0) },
            processStartTime: int("process_start_time").map { UInt64(clamping: $0) },
            exitCode: int("exit_code").map { Int32(truncatingIfNeeded: $0) },
            signal: int("signal").map { Int32(truncatingIfNeeded: $0) }, lastError: string("last_error"),
            cgroupPath: string("cgroup"), protections: protections, outputLimitBytes: outputLimit,
            stdoutBytes: stdoutBytes, stderrBytes: stderrBytes, cpuUserMicroseconds: int64("cpu_user_us"),
            cpuSystemMicroseconds: int64("cpu_system_us"), maxResidentKiB: int64("max_rss_kib"), uid: int64("uid"),
            gid: int64("gid"), peakMemoryBytes: int64("peak_memory_bytes"), ioReadBytes: int64("io_read_bytes"),
            ioWriteBytes: int64("io_write_bytes"), runningMilliseconds: running, metadata: fields["metadata"] ?? [:])
    }

    /// The record as JSON, with the same keys as its `Codable` form. Written by hand because Foundation's
    /// `JSONEncoder` took most of the time of a status change's database commit.
    /// `jsonValue.jsonString()`, byte for byte, written member by member in the keys' sorted order: the store writes
    /// a record at each change (twice for a task that only runs and exits), and building the dictionary and sorting
    /// its 31 keys each time was most of that.
    public var jsonText: String {
        func time(_ date: Date?) -> String? { date.map(Timestamp.format) }
        func int<T: BinaryInteger>(_ value: T?) -> Int? { value.map { Int(clamping: $0) } }
        var text = JSONObjectWriter()
        text.member("cgroup", cgroupPath)
        text.member("command", command)
        text.member("completed_at", time(completedAt))
        text.member("cpu_system_us", int(cpuSystemMicroseconds))
        text.member("cpu_user_us", int(cpuUserMicroseconds))
        text.member("created_at", Timestamp.format(createdAt))
        text.member("cwd", workingDirectory)
        text.member("exit_code", int(exitCode))
        text.member("gid", int(gid))
        text.member("io_read_bytes", int(ioReadBytes))
        text.member("io_write_bytes", int(ioWriteBytes))
        text.member("last_error", lastError)
        text.member("max_rss_kib", int(maxResidentKiB))
        text.member("metadata", metadata)
        text.member("output_limit_bytes", outputLimitBytes)
        text.member("peak_memory_bytes", int(peakMemoryBytes))
        text.member("pid", int(pid))
        text.member("process_start_time", int(processStartTime))
        text.member("protections", protections)
        text.member("running_ms", Int(clamping: runningMilliseconds))
        text.member("signal", int(signal))
        text.member("started_at", time(startedAt))
        text.member("status", status.rawValue)
        text.member("stderr_bytes", Int(clamping: stderrBytes))
        text.member("stdout_bytes", Int(clamping: stdoutBytes))
        text.member("task_id", taskID)
        text.member("task_type", kind)
        text.member("timeout_ms", timeoutMilliseconds)
        text.member("title", title)
        text.member("uid", int(uid))
        text.member("updated_at", Timestamp.format(updatedAt))
        return text.string()
    }

    public var jsonValue: JSONValue {
        func optional<T>(_ value: T?, _ transform: (T) -> JSONValue) -> JSONValue {
            value.map(transform) ?? .null
        }
        return .object([
            "task_id": .string(taskID), "title": .string(title), "task_type": .string(kind),
            "status": .string(status.rawValue), "created_at": .string(Timestamp.format(createdAt)),
            "updated_at": .string(Timestamp.format(updatedAt)),
            "started_at": optional(startedAt) { .string(Timestamp.format($0)) },
            "completed_at": optional(completedAt) { .string(Timestamp.format($0)) },
            "timeout_ms": optional(timeoutMilliseconds) { .int($0) },
            "command": .array(command.map(JSONValue.string)), "cwd": .string(workingDirectory),
            "pid": optional(pid) { .int(Int($0)) },
            "process_start_time": optional(processStartTime) { .int(Int(clamping: $0)) },
            "exit_code": optional(exitCode) { .int(Int($0)) }, "signal": optional(signal) { .int(Int($0)) },
            "last_error": optional(lastError) { .string($0) }, "cgroup": optional(cgroupPath) { .string($0) },
            "protections": .array(protections.map(JSONValue.string)), "output_limit_bytes": .int(outputLimitBytes),
            "stdout_bytes": .int(Int(stdoutBytes)), "stderr_bytes": .int(Int(stderrBytes)),
            "cpu_user_us": optional(cpuUserMicroseconds) { .int(Int($0)) },
            "cpu_system_us": optional(cpuSystemMicroseconds) { .int(Int($0)) },
            "max_rss_kib": optional(maxResidentKiB) { .int(Int($0)) },
            "uid": optional(uid) { .int(Int($0)) }, "gid": optional(gid) { .int(Int($0)) },
            "peak_memory_bytes": optional(peakMemoryBytes) { .int(Int($0)) },
            "io_read_bytes": optional(ioReadBytes) { .int(Int($0)) },
            "io_write_bytes": optional(ioWriteBytes) { .int(Int($0)) },
            "running_ms": .int(Int(runningMilliseconds)), "metadata": metadata,
        ])
    }
}
