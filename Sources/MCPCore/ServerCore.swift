import CorralJSON
import Synchronization

/// What a server says about itself, in `server/discover` and in `initialize`.
public struct ServerDescription: Sendable {
    public var name: String
    public var version: String
    public var instructions: String?
    /// Capabilities beyond `tools` (which is always there) and `extensions`.
    public var extraCapabilities: [String: JSONValue]
    /// Extensions advertised under `capabilities.extensions` (modern) — e.g. `io.modelcontextprotocol/tasks`.
    public var extensions: [String: JSONValue]
    /// Cache hints: `server/discover` and `tools/list` must carry them in 2026-07-28.
    public var discoverTTLMilliseconds: Int
    public var toolsListTTLMilliseconds: Int
    /// `public` when every client sees the same list; `private` when it depends on who asks (a policy per grant).
    public var toolsListCacheScope: String

    public init(
        name: String, version: String, instructions: String? = nil, extraCapabilities: [String: JSONValue] = [:],
        extensions: [String: JSONValue] = [:], discoverTTLMilliseconds: Int = 3_600_000,
        toolsListTTLMilliseconds: Int = 300_000, toolsListCacheScope: String = "public"
    ) {
        self.name = name
        self.version = version
        self.instructions = instructions
        self.extraCapabilities = extraCapabilities
        self.extensions = extensions
        self.discoverTTLMilliseconds = discoverTTLMilliseconds
        self.toolsListTTLMilliseconds = toolsListTTLMilliseconds
        self.toolsListCacheScope = toolsListCacheScope
    }

    public var serverInfo: JSONValue { ["name": .string(name), "version": .string(version)] }

    /// A result as 2026-07-28 sends it: `resultType` (complete unless it has one), this server's identity in `_meta`,
    /// and the cache hints on `tools/list`. Fields already there are kept.
    public func stamp(_ result: JSONValue, method: String) -> JSONValue {
        guard var object = result.objectValue else { return result }
        if object["resultType"] == nil { object["resultType"] = "complete" }
        if method == "tools/list", object["resultType"]?.stringValue == "complete" {
            if object["ttlMs"] == nil { object["ttlMs"] = .int(toolsListTTLMilliseconds) }
            if object["cacheScope"] == nil { object["cacheScope"] = .string(toolsListCacheScope) }
        }
        var meta = object["_meta"]?.objectValue ?? [:]
        if meta[MetaKey.serverInfo] == nil { meta[MetaKey.serverInfo] = serverInfo }
        object["_meta"] = .object(meta)
        return .object(object)
    }
}

/// An answer's JSON text as the pieces it was assembled from: a transport that can write them as one (`writev`)
/// never copies a cached body (the 95 KB `tools/list`) into a new string for every request.
public struct AnswerText: Sendable {
    public let pieces: [String]

    public init(_ text: String) { pieces = [text] }
    public init(pieces: [String]) { self.pieces = pieces }

    public var text: String { pieces.count == 1 ? pieces[0] : pieces.joined() }
}

/// Serves what a server application provides (`tools/list`, `tools/call`, anything else) in both eras, and the
/// protocol's own methods itself: `server/discover`, `initialize`, `ping`, `logging/setLevel`,
/// `subscriptions/listen`. Results are shaped per era here (`resultType`, `serverInfo`, cache hints), so the
/// application writes each result once.
public final class MCPServerCore: Sendable {
    public typealias Handler = @Sendable (_ method: String, _ params: JSONValue, _ context: RequestContext)
        async throws(JSONRPCError) -> JSONValue

    public let description: ServerDescription
    private let handler: Handler
    private let toolsListVersion: (@Sendable () -> String)?
    /// `tools/list` answers as sent, by (version, era): the list only changes when its version does.
    private let toolsListText = Mutex<[String: String]>([:])
    /// The `server/discover` result as sent: it only depends on the description, which never changes. Building and
    /// writing it per request was most of a discover's instructions (40 of 50 thousand).
    private let discoverText: String
    public let listeners: ListenRegistry

    /// `handler` answers every method the core does not (throw `JSONRPCError.methodNotFound` for unknown ones).
    /// `toolsListVersion`, when given, names the current tool list (a policy revision, say): `tools/list` answers are
    /// then serialized once per version and era instead of per request. `listeners`: the listen streams, shared with
    /// whoever announces to them (a task bridge).
    public init(
        description: ServerDescription, listeners: ListenRegistry = ListenRegistry(),
        toolsListVersion: (@Sendable () -> String)? = nil, handler: @escaping Handler
    ) {
        self.description = description
        self.listeners = listeners
        self.toolsListVersion = toolsListVersion
        self.handler = handler
        discoverText = description.stamp(Self.discoverResult(description), method: "server/discover").jsonString()
    }

    /// The answer as JSON text, and the HTTP status its error code maps to (200 for a result).
    public func respondText(id: JSONValue, method: String, params: JSONValue, context: RequestContext) async -> (text: String, status: Int) {
        if let answer = immediateAnswer(id: id, method: method, params: params, context: context) { return (answer.text, 200) }
        if method == "tools/list", let key = toolsListKey(params: params, context: context) {
            let answer = await respond(id: id, method: method, params: params, context: context)
            guard let value = answer["result"] else { return (answer.jsonString(), Self.status(answer)) }
            let result = value.jsonString()
            toolsListText.withLock { cache in
                if cache.count > 16 { cache.removeAll() }  // old versions go
                cache[key] = result
            }
            return (Self.response(id: id, resultText: result).text, 200)
        }
        if method == "tools/call" {
            do throws(JSONRPCError) {
                let result = try await shapedResult(method: method, params: params, context: context)
                if let text = ToolResultText.text(result) { return (Self.response(id: id, resultText: text).text, 200) }
                return (JSONRPC.response(id: id, result: result).jsonString(), 200)
            } catch {
                let answer = JSONRPC.error(id: id, error)
                return (answer.jsonString(), Self.status(answer))
            }
        }
        let answer = await respond(id: id, method: method, params: params, context: context)
        return (answer.jsonString(), Self.status(answer))
    }

    /// The answer when it needs no waiting: `ping`, `server/discover`, and a `tools/list` already serialized for
    /// the current version. A transport sends it from the thread that read the request: for answers this small, the
    /// hop to the task pool and back was most of the round trip.
    public func immediateAnswer(id: JSONValue, method: String, params: JSONValue, context: RequestContext) -> AnswerText? {
        switch (method, context.era.isModern) {
        case ("ping", false):
            return Self.response(id: id, resultText: "{}")
        case ("server/discover", true):
            return Self.response(id: id, resultText: discoverText)
        case ("tools/list", _):
            guard let key = toolsListKey(params: params, context: context) else { return nil }
            return toolsListText.withLock { $0[key] }.map { Self.response(id: id, resultText: $0) }
        default:
            return nil
        }
    }

    /// The cache key of a first-page `tools/list`, when the application names its list versions.
    private func toolsListKey(params: JSONValue, context: RequestContext) -> String? {
        guard let version = toolsListVersion?(), params["cursor"] == nil else { return nil }
        return version + (context.era.isModern ? "|modern" : "|legacy")
    }

    /// A response around a result already serialized, with the keys in the order `jsonString()` writes them.
    private static func response(id: JSONValue, resultText: String) -> AnswerText {
        AnswerText(pieces: [#"{"id":"# + id.jsonString() + #","jsonrpc":"2.0","result":"#, resultText, "}"])
    }

    static func status(_ answer: JSONValue) -> Int {
        answer["error"].flatMap(JSONRPCError.init(json:))?.httpStatus ?? 200
    }

    /// The answer to one request whose era is settled (a message with `result` or `error`).
    public func respond(id: JSONValue, method: String, params: JSONValue, context: RequestContext) async -> JSONValue {
        do throws(JSONRPCError) {
            let result = try await shapedResult(method: method, params: params, context: context)
            return JSONRPC.response(id: id, result: method == "tools/call" ? ToolResultText.completed(result) : result)
        } catch {
            return JSONRPC.error(id: id, error)
        }
    }

    /// The result as the request's era sends it (a `tools/call` result still without the text block that
    /// `ToolResultText` adds).
    private func shapedResult(method: String, params: JSONValue, context: RequestContext) async throws(JSONRPCError)
        -> JSONValue
    {
        let result = try await result(method: method, params: params, context: context)
        return context.era.isModern ? stamp(result, method: method) : result
    }

    private func result(method: String, params: JSONValue, context: RequestContext) async throws(JSONRPCError) -> JSONValue {
        switch (method, context.era.isModern) {
        case ("server/discover", true):
            return discoverResult()
        case ("server/discover", false):
            throw .methodNotFound(method, "server/discover is 2026-07-28; this connection uses \(context.era.version)")
        case ("ping", false):
            return [:]
        case ("logging/setLevel", false):
            return [:]
        case ("ping", true), ("logging/setLevel", true), ("initialize", true):
            throw .methodNotFound(method, "removed in 2026-07-28")
        case ("subscriptions/listen", true):
            return try await listeners.listen(params: params, context: context)
        case ("subscriptions/listen", false):
            throw .methodNotFound(method, "subscriptions/listen is 2026-07-28")
        default:
            return try await handler(method, params, context)
        }
    }

    private func stamp(_ result: JSONValue, method: String) -> JSONValue {
        description.stamp(result, method: method)
    }

    public func discoverResult() -> JSONValue {
        Self.discoverResult(description)
    }

    private static func discoverResult(_ description: ServerDescription) -> JSONValue {
        var capabilities = description.extraCapabilities
        capabilities["tools"] = ["listChanged": true]
        capabilities["extensions"] = .object(description.extensions)
        var result: [String: JSONValue] = [
            "resultType": "complete",
            "supportedVersions": .array(ProtocolVersions.supported.map(JSONValue.string)),
            "capabilities": .object(capabilities),
            "serverInfo": description.serverInfo,
            "ttlMs": .int(description.discoverTTLMilliseconds), "cacheScope": "public",
            "_meta": [MetaKey.serverInfo: description.serverInfo],
        ]
        if let instructions = description.instructions { result["instructions"] = .string(instructions) }
        return .object(result)
    }

    /// The `initialize` result and the version settled on.
    public func initializeResult(_ params: JSONValue) -> (result: JSONValue, version: String) {
        let version = ProtocolVersions.negotiateLegacy(params["protocolVersion"]?.stringValue)
        var capabilities = description.extraCapabilities
        capabilities["tools"] = ["listChanged": true]
        var result: [String: JSONValue] = [
            "protocolVersion": .string(version), "capabilities": .object(capabilities),
            "serverInfo": description.serverInfo,
        ]
        if let instructions = description.instructions { result["instructions"] = .string(instructions) }
        return (.object(result), version)
    }

    /// Tells every listening client (modern listen streams asking for it, legacy connections) that the tool list
    /// changed.
    public func announceToolsListChanged() {
        listeners.announceToolsListChanged()
    }
}

/// One request as a handler sees it.
public struct RequestContext: Sendable {
    public let id: JSONValue
    public let era: MCPEra
    /// A modern request's validated `_meta`.
    public let envelope: ModernEnvelope?
    /// A legacy connection's `initialize` capabilities.
    public let legacyCapabilities: JSONValue?
    /// The legacy session (HTTP) or connection (stdio) this request belongs to; nil for a modern request, which
    /// belongs to none.
    public let session: String?
    /// Sends a notification on this request's own stream (stdio: the one output; HTTP: its response stream).
    public let notify: @Sendable (JSONValue) async -> Void

    public init(
        id: JSONValue, era: MCPEra, envelope: ModernEnvelope?, legacyCapabilities: JSONValue?, session: String?,
        notify: @escaping @Sendable (JSONValue) async -> Void
    ) {
        self.id = id
        self.era = era
        self.envelope = envelope
        self.legacyCapabilities = legacyCapabilities
        self.session = session
        self.notify = notify
    }

    /// Whether the client can answer elicitation (declared per request in 2026-07-28, at `initialize` before).
    public var clientCanElicit: Bool {
        if let envelope { return envelope.canElicit }
        return legacyCapabilities?["elicitation"].map { !$0.isNull } ?? false
    }

    /// A `notifications/progress` reporter when the request carries a progress token.
    public func progressReporter(_ params: JSONValue) -> (@Sendable (Double, Double?, String) async -> Void)? {
        guard let token = params["_meta"]?["progressToken"], JSONRPC.isValidID(token) else { return nil }
        let notify = self.notify
        return { done, total, message in
            var update: [String: JSONValue] = ["progressToken": token, "progress": .double(done), "message": .string(message)]
            if let total { update["total"] = .double(total) }
            await notify(JSONRPC.notification("notifications/progress", .object(update)))
        }
    }
}

/// Who hears about list changes: modern `subscriptions/listen` streams and legacy connections.
public final class ListenRegistry: Sendable {
    private struct Subscription {
        let id: JSONValue
        let toolsListChanged: Bool
        /// Tasks whose changes this stream hears (`notifications/tasks`, Tasks extension).
        let taskIDs: Set<String>
        let notify: @Sendable (JSONValue) async -> Void
        let close: CheckedContinuation<Void, Never>
    }

    private struct State {
        var subscriptions: [Int: Subscription] = [:]
        var legacy: [Int: @Sendable (JSONValue) -> Void] = [:]
        var next = 0
        var closed = false
    }

    private let state = Mutex(State())
    /// Which of a listen's `taskIds` the server knows (`honourTasks`); without it every id is acknowledged.
    private let knownTasks = Mutex<(@Sendable ([String]) async -> [String])?>(nil)

    public init() {}

    /// Gives the server's answer to "which of these task ids are tasks of mine": a listen acknowledges, and streams,
    /// only those (the acknowledgement is "the subset the server will honour"), so that a client is not led to wait
    /// for notifications of a task that does not exist.
    public func honourTasks(_ known: @escaping @Sendable ([String]) async -> [String]) {
        knownTasks.withLock { $0 = known }
    }

    /// A legacy connection's sink for `notifications/tools/list_changed`; the returned closure removes it.
    public func addLegacy(_ sink: @escaping @Sendable (JSONValue) -> Void) -> @Sendable () -> Void {
        let key = state.withLock { state -> Int in
            state.next += 1
            state.legacy[state.next] = sink
            return state.next
        }
        return { _ = self.state.withLock { $0.legacy.removeValue(forKey: key) } }
    }

    public var openSubscriptions: Int { state.withLock { $0.subscriptions.count } }

    /// Serves one `subscriptions/listen` request: acknowledges, then holds the stream until it is cancelled (the
    /// client left) or `closeAll` ends it gracefully.
    public func listen(params: JSONValue, context: RequestContext) async throws(JSONRPCError) -> JSONValue {
        guard let requested = params["notifications"]?.objectValue else {
            throw .invalidParams("subscriptions/listen needs notifications: {toolsListChanged?: bool}, and taskIds?: […] beside it")
        }
        let tools = requested["toolsListChanged"]?.boolValue ?? false
        // `taskIds` sits beside `notifications` in the revision's params; inside it is this server's earlier reading,
        // still accepted. The acknowledgement answers in the place asked.
        var taskIDs: [String] = []
        var nested = false
        for (asked, path) in [(params["taskIds"], "taskIds"), (requested["taskIds"], "notifications.taskIds")] {
            guard let asked, !asked.isNull else { continue }
            guard TasksExtension.isDeclared(by: context) else { throw TasksExtension.notDeclared("a listen with taskIds") }
            guard let list = asked.arrayValue, list.allSatisfy({ $0.stringValue != nil }) else {
                throw .invalidParams("subscriptions/listen: \(path) must be a list of task ids")
            }
            taskIDs += list.compactMap(\.stringValue).filter { !taskIDs.contains($0) }
            if path != "taskIds" { nested = true }
        }
        if !taskIDs.isEmpty, let known = knownTasks.withLock({ $0 }) {
            let exist = Set(await known(taskIDs))
            taskIDs = taskIDs.filter(exist.contains)
        }
        let idMeta: JSONValue = [MetaKey.subscriptionID: context.id]
        var honoured: [String: JSONValue] = [:]
        if tools { honoured["toolsListChanged"] = true }
        var acknowledged: [String: JSONValue] = ["_meta": idMeta]
        if !taskIDs.isEmpty {
            if nested { honoured["taskIds"] = .array(taskIDs.map(JSONValue.string)) } else { acknowledged["taskIds"] = .array(taskIDs.map(JSONValue.string)) }
        }
        acknowledged["notifications"] = .object(honoured)
        await context.notify(JSONRPC.notification("notifications/subscriptions/acknowledged", .object(acknowledged)))
        let key = state.withLock { state -> Int in
            state.next += 1
            return state.next
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (close: CheckedContinuation<Void, Never>) in
                let shutDown = state.withLock { state -> Bool in
                    if state.closed || Task.isCancelled { return true }
                    state.subscriptions[key] = Subscription(
                        id: context.id, toolsListChanged: tools, taskIDs: Set(taskIDs), notify: context.notify,
                        close: close)
                    return false
                }
                if shutDown { close.resume() }
            }
        } onCancel: {
            self.end(key)
        }
        return ["resultType": "complete", "_meta": idMeta]
    }

    private func end(_ key: Int) {
        state.withLock { $0.subscriptions.removeValue(forKey: key) }?.close.resume()
    }

    /// Ends every listen stream gracefully (their requests are answered) and refuses new ones: at shutdown.
    public func closeAll() {
        let open = state.withLock { state -> [Subscription] in
            state.closed = true
            defer { state.subscriptions.removeAll() }
            return Array(state.subscriptions.values)
        }
        for subscription in open { subscription.close.resume() }
    }

    /// Sends the task, as it is now, to every listen stream opened with its id (`notifications/tasks`).
    public func announce(_ task: MCPTask) {
        let listening = state.withLock { state in state.subscriptions.values.filter { $0.taskIDs.contains(task.taskID) } }
        for subscription in listening {
            let message = JSONRPC.notification(
                "notifications/tasks", task.detailed.merging(["_meta": [MetaKey.subscriptionID: subscription.id]]))
            let notify = subscription.notify
            Task { await notify(message) }
        }
    }

    public func announceToolsListChanged() {
        let (modern, legacy) = state.withLock { state in
            (state.subscriptions.values.filter(\.toolsListChanged), Array(state.legacy.values))
        }
        for sink in legacy { sink(JSONRPC.notification("notifications/tools/list_changed")) }
        for subscription in modern {
            let message = JSONRPC.notification(
                "notifications/tools/list_changed", ["_meta": [MetaKey.subscriptionID: subscription.id]])
            let notify = subscription.notify
            Task { await notify(message) }
        }
    }
}
