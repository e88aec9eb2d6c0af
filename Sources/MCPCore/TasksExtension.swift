import CorralJSON

/// The wire format of the Tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663): the task object, the
/// results that carry it, and the extension's errors. What a task *does* is the server's; this is only its shape.
public enum TasksExtension {
    public static let id = "io.modelcontextprotocol/tasks"
    /// The extension's methods; `tasks/list` and `tasks/result` do not exist (they are unknown methods, -32601).
    public static let methods: Set<String> = ["tasks/get", "tasks/update", "tasks/cancel"]

    /// Whether this request's client declared the extension (only a 2026-07-28 request can).
    public static func isDeclared(by context: RequestContext) -> Bool {
        context.envelope?.declaresExtension(id) ?? false
    }

    /// -32021 for a `tasks/*` request (or a task listen) from a client that did not declare the extension.
    public static func notDeclared(_ what: String) -> JSONRPCError {
        .missingClientCapability(["extensions": [id: [:]]], "\(what) needs the \(id) extension declared in clientCapabilities")
    }

    /// -32602 for a task id this server does not know (never created, expired, or not a task handle at all).
    public static func unknownTask(_ taskID: String) -> JSONRPCError {
        .invalidParams("Failed to retrieve task: no task \(taskID) (unknown or expired)")
    }

    /// The `taskId` of a `tasks/*` request's params.
    public static func taskID(_ params: JSONValue) throws(JSONRPCError) -> String {
        guard let taskID = params["taskId"]?.stringValue, !taskID.isEmpty else {
            throw .invalidParams("tasks/* needs params.taskId (a string)")
        }
        return taskID
    }
}

/// A task's status: `working` and `input_required` until one of the three terminal ones.
public enum MCPTaskStatus: String, Sendable, CaseIterable {
    case working, inputRequired = "input_required", completed, failed, cancelled

    public var isTerminal: Bool { self == .completed || self == .failed || self == .cancelled }
}

/// A task as `tasks/get` and `notifications/tasks` carry it (the extension's `DetailedTask`).
public struct MCPTask: Sendable, Equatable {
    public var taskID: String
    public var status: MCPTaskStatus
    public var createdAt: String
    public var lastUpdatedAt: String
    /// From creation; nil: unlimited.
    public var ttlMilliseconds: Int?
    public var pollIntervalMilliseconds: Int?
    public var statusMessage: String?
    /// `completed`: the CallToolResult (also one with `isError: true`).
    public var result: JSONValue?
    /// `failed`: the JSON-RPC error object.
    public var error: JSONValue?
    /// `input_required`: the outstanding input requests, by key.
    public var inputRequests: JSONValue?

    public init(
        taskID: String, status: MCPTaskStatus, createdAt: String, lastUpdatedAt: String, ttlMilliseconds: Int?,
        pollIntervalMilliseconds: Int?, statusMessage: String? = nil, result: JSONValue? = nil,
        error: JSONValue? = nil, inputRequests: JSONValue? = nil
    ) {
        self.taskID = taskID
        self.status = status
        self.createdAt = createdAt
        self.lastUpdatedAt = lastUpdatedAt
        self.ttlMilliseconds = ttlMilliseconds
        self.pollIntervalMilliseconds = pollIntervalMilliseconds
        self.statusMessage = statusMessage
        self.result = result
        self.error = error
        self.inputRequests = inputRequests
    }

    /// The fields every task has.
    private var base: [String: JSONValue] {
        var fields: [String: JSONValue] = [
            "taskId": .string(taskID), "status": .string(status.rawValue), "createdAt": .string(createdAt),
            "lastUpdatedAt": .string(lastUpdatedAt), "ttlMs": ttlMilliseconds.map(JSONValue.int) ?? .null,
        ]
        if let pollIntervalMilliseconds { fields["pollIntervalMs"] = .int(pollIntervalMilliseconds) }
        if let statusMessage { fields["statusMessage"] = .string(statusMessage) }
        return fields
    }

    /// The `DetailedTask`: with `result`, `error` or `inputRequests` as the status has them.
    public var detailed: JSONValue {
        var fields = base
        switch status {
        case .completed: fields["result"] = result ?? [:]
        case .failed: fields["error"] = error ?? ["code": .int(JSONRPCError.internalErrorCode), "message": "failed"]
        case .inputRequired: fields["inputRequests"] = inputRequests ?? [:]
        case .working, .cancelled: break
        }
        return .object(fields)
    }

    /// The `tools/call` result that hands the client this task (`CreateTaskResult`).
    public var createResult: JSONValue {
        var fields = base
        fields["resultType"] = "task"
        return .object(fields)
    }

    /// The `tasks/get` result.
    public var getResult: JSONValue {
        detailed.merging(["resultType": "complete"])
    }
}
