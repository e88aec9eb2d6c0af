import AllcanuseMock
import CorralJSON
import Foundation
import Logging
import MCPCore

/// MCP's Tasks extension over the mock's blocking tools: for a client that declares the extension, a call that may
/// block (`wait_for_background_task` and the 8 wait tools) becomes a task handle at once, durably recorded first,
/// while the very same call runs on; `tasks/get` then shows its CallToolResult. A `wait_for_background_task` whose
/// background task asks its user a question turns `input_required`, and the answer (`tasks/update`) goes to that
/// task. Cancelling a handle ends the call (a wait tool's watcher is killed), never the background task waited on.
public actor MCPTaskBridge {
    public static let taskTools: Set<String> = Set(AllcanuseService.waitTools + ["wait_for_background_task"])
    public static let defaultTTLMilliseconds = 3_600_000

    public nonisolated let listeners: ListenRegistry
    private let store: MCPTaskStore
    private let service: AllcanuseService
    private let ttlMilliseconds: Int?
    private let logger: Logger
    private var runners: [String: Task<Void, Never>] = [:]
    private var questionWatchers: [String: Task<Void, Never>] = [:]
    /// States a background step could not save (the store refused a write): served from here, and saved again every
    /// 200 ms until the store takes them, so that a finished call's result is never lost to a busy or full disk.
    private var unsaved: [String: StoredMCPTask] = [:]
    private var savingUnsaved: Task<Void, Never>?

    public struct OpenError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Opens the handle store in `stateDirectory` (`mcp-tasks.sqlite`); handles left working by a previous run are
    /// failed, saying the server stopped. `ttlMilliseconds` nil: handles never expire. `listeners`: where task status
    /// is announced (the protocol core's listen streams).
    public init(
        stateDirectory: String, service: AllcanuseService, ttlMilliseconds: Int? = MCPTaskBridge.defaultTTLMilliseconds,
        listeners: ListenRegistry = ListenRegistry(), logger: Logger = Logger(label: "allcanuse-mock.tasks")
    ) throws(OpenError) {
        do {
            store = try MCPTaskStore(path: stateDirectory + "/mcp-tasks.sqlite")
            try store.pruneExpired()
            for var stored in try store.unfinished() {
                let previous = stored.task.status.rawValue
                stored.task.status = .failed
                stored.task.error = [
                    "code": .int(JSONRPCError.internalErrorCode),
                    "message": .string("the server stopped while this task was \(previous); its call did not finish"),
                ]
                stored.task.statusMessage = "the server stopped"
                stored.task.inputRequests = nil
                stored.task.lastUpdatedAt = Timestamp.format(Date())
                try store.save(stored)
            }
        } catch {
            throw OpenError(description: "MCP task handles: \(error.description)")
        }
        self.service = service
        self.ttlMilliseconds = ttlMilliseconds
        self.logger = logger
        self.listeners = listeners
    }

    // MARK: - tools/call → a task

    /// Records the handle, starts the call, and returns the `CreateTaskResult`. `canElicit`: whether the client
    /// declared elicitation; only then does a waited-on task's question make the handle `input_required` (an
    /// elicitation it never said it could show would leave it stuck), else the handle stays `working`.
    public func start(tool: String, arguments: JSONValue?, canElicit: Bool) throws(JSONRPCError) -> JSONValue {
        let now = Timestamp.format(Date())
        let poll = min(max(arguments?["poll_interval_ms"]?.intValue ?? 1000, 100), 5000)
        let waitsOn = tool == "wait_for_background_task" ? arguments?["task_id"]?.stringValue : nil
        let task = MCPTask(
            taskID: UUID().uuidString.lowercased(), status: .working, createdAt: now, lastUpdatedAt: now,
            ttlMilliseconds: ttlMilliseconds, pollIntervalMilliseconds: poll, statusMessage: "\(tool) is running")
        let stored = StoredMCPTask(task: task, tool: tool, waitsOn: waitsOn)
        try save(stored)
        let taskID = task.taskID
        let service = self.service
        runners[taskID] = Task.detached { [weak self] in
            let outcome = await service.call(tool, arguments: arguments)
            await self?.finish(
                taskID, result: ToolResultText.completed(MockServer.result(outcome.value, isError: outcome.isError)))
        }
        let askedFor = arguments?["target_statuses"]?.arrayValue?.compactMap(\.stringValue) ?? []
        if let waitsOn, canElicit, !askedFor.contains("waiting_for_user") {
            questionWatchers[taskID] = Task.detached { [weak self] in
                let changes = service.signals.changes(of: waitsOn)
                await self?.review(taskID, waitsOn: waitsOn)
                for await _ in changes {
                    guard !Task.isCancelled else { return }
                    await self?.review(taskID, waitsOn: waitsOn)
                }
            }
        }
        try? store.pruneExpired()
        return task.createResult
    }

    private func finish(_ taskID: String, result: JSONValue) {
        runners[taskID] = nil
        questionWatchers.removeValue(forKey: taskID)?.cancel()
        guard var stored = try? load(taskID), !stored.task.status.isTerminal else { return }
        stored.task.status = .completed
        stored.task.result = result
        stored.task.inputRequests = nil
        stored.task.statusMessage = result["isError"]?.boolValue == true ? "\(stored.tool) answered an error" : "\(stored.tool) finished"
        stored.task.lastUpdatedAt = Timestamp.format(Date())
        keep(stored)
    }

    /// Follows the waited-on background task's question: asked → `input_required`; gone → `working` again.
    private func review(_ taskID: String, waitsOn: String) async {
        guard let state = try? await service.displayState(of: waitsOn) else { return }
        guard var stored = try? load(taskID), !stored.task.status.isTerminal else { return }
        if let question = state.question, stored.task.status == .working {
            stored.questionsAsked += 1
            let key = "question-\(stored.questionsAsked)"
            stored.task.status = .inputRequired
            stored.task.statusMessage = "background task \(waitsOn) is waiting for its user"
            stored.task.inputRequests = .object([
                key: [
                    "method": "elicitation/create",
                    "params": [
                        "mode": "form", "message": .string(question),
                        "requestedSchema": [
                            "type": "object",
                            "properties": ["answer": ["type": "string", "description": "The answer to the question."]],
                            "required": ["answer"],
                        ],
                    ],
                ],
            ])
        } else if state.question == nil, stored.task.status == .inputRequired {
            stored.task.status = .working
            stored.task.inputRequests = nil
            stored.task.statusMessage = "\(stored.tool) is running"
        } else {
            return
        }
        stored.task.lastUpdatedAt = Timestamp.format(Date())
        keep(stored)
    }

    // MARK: - tasks/*

    /// Those of `taskIDs` that are handles of this server's, not expired (what a listen honours).
    public func known(_ taskIDs: [String]) -> [String] {
        taskIDs.filter { (try? current($0)) != nil }
    }

    public func get(_ params: JSONValue) throws(JSONRPCError) -> JSONValue {
        try current(TasksExtension.taskID(params)).task.getResult
    }

    /// Acknowledges at once; a task not yet terminal is cancelled and its call ended.
    public func cancel(_ params: JSONValue) throws(JSONRPCError) -> JSONValue {
        var stored = try current(TasksExtension.taskID(params))
        let taskID = stored.task.taskID
        guard !stored.task.status.isTerminal else { return [:] }
        stored.task.status = .cancelled
        stored.task.inputRequests = nil
        stored.task.statusMessage = "cancelled by the client"
        stored.task.lastUpdatedAt = Timestamp.format(Date())
        try save(stored)
        runners.removeValue(forKey: taskID)?.cancel()
        questionWatchers.removeValue(forKey: taskID)?.cancel()
        return [:]
    }

    /// Answers to outstanding input requests go to the background task waited on (a `decision` event); answers to
    /// keys that are not outstanding are ignored, as the extension asks.
    public func update(_ params: JSONValue) async throws(JSONRPCError) -> JSONValue {
        let stored = try current(TasksExtension.taskID(params))
        guard let responses = params["inputResponses"]?.objectValue else {
            throw .invalidParams("tasks/update needs inputResponses: {key: result}")
        }
        guard stored.task.status == .inputRequired, let waitsOn = stored.waitsOn,
            let outstanding = stored.task.inputRequests?.objectValue
        else { return [:] }
        for (key, response) in responses where outstanding[key] != nil {
            guard let action = response["action"]?.stringValue, ["accept", "decline", "cancel"].contains(action) else {
                throw .invalidParams("tasks/update: inputResponses.\(key) must be an ElicitResult {action: accept|decline|cancel, content?}")
            }
            // An accepted answer must fit the schema asked for ({answer: string}); anything else is not an answer.
            if action == "accept", response["content"]?["answer"]?.stringValue == nil {
                throw .invalidParams("tasks/update: inputResponses.\(key) accepts with content {answer: string}, as its requestedSchema asks")
            }
            do {
                try await service.answerQuestion(of: waitsOn, action: action, content: response["content"])
            } catch {
                throw .internalError("cannot give the answer to background task \(waitsOn): \(error)")
            }
            await review(stored.task.taskID, waitsOn: waitsOn)
            break  // one question is outstanding at a time
        }
        return [:]
    }

    /// A known handle that has not expired.
    private func current(_ taskID: String) throws(JSONRPCError) -> StoredMCPTask {
        let stored = try load(taskID)
        guard let stored else { throw TasksExtension.unknownTask(taskID) }
        if let expires = stored.expiresAt, expires < Date() {
            unsaved[taskID] = nil  // an expired handle is not brought back by a later save
            try? store.pruneExpired()
            throw TasksExtension.unknownTask(taskID)
        }
        return stored
    }

    /// The handle's newest state: one not yet saved, else the store's.
    private func load(_ taskID: String) throws(JSONRPCError) -> StoredMCPTask? {
        if let stored = unsaved[taskID] { return stored }
        do {
            return try store.load(taskID)
        } catch {
            throw .internalError(error.description)
        }
    }

    /// Saves a state a client asked for: a failure is the client's error, and nothing changes.
    private func save(_ stored: StoredMCPTask) throws(JSONRPCError) {
        do {
            try store.save(stored)
        } catch {
            throw .internalError(error.description)
        }
        unsaved[stored.task.taskID] = nil
        listeners.announce(stored.task)
    }

    /// Saves a state no client waits on (a call that finished, a question asked): one the store refuses is kept
    /// here, served as it is, and saved again until the store takes it.
    private func keep(_ stored: StoredMCPTask) {
        do {
            try store.save(stored)
            unsaved[stored.task.taskID] = nil
        } catch {
            logger.error("\(error.description); kept in memory and saved again until the store takes it")
            unsaved[stored.task.taskID] = stored
            if savingUnsaved == nil {
                savingUnsaved = Task { [weak self] in
                    while await self?.saveUnsaved() == false { try? await Task.sleep(for: .milliseconds(200)) }
                }
            }
        }
        listeners.announce(stored.task)
    }

    /// Saves what the store refused before; true once nothing is left.
    private func saveUnsaved() -> Bool {
        let now = Date()
        for (taskID, stored) in unsaved {
            if let expires = stored.expiresAt, expires < now {
                unsaved[taskID] = nil
            } else if (try? store.save(stored)) != nil {
                unsaved[taskID] = nil
            }
        }
        guard unsaved.isEmpty else { return false }
        savingUnsaved = nil
        return true
    }
}
