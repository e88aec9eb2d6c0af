import CorralJSON
import Foundation
import Policy
import Synchronization

/// The policy gateway between one MCP client and one MCP server, independent of how messages travel (stdio lines
/// or Streamable HTTP): every message is forwarded byte for byte except what the policy decides. `tools/list`
/// results lose hidden tools; each `tools/call` (also inside a batch) is decided before it reaches the server, and
/// a denial is answered here; calls whose params do not parse are denied; counters reserved for a call are rolled
/// back when the server answers it with a JSON-RPC error; a call that needs approval is put to the user through
/// MCP elicitation when the client supports it, and denied otherwise.
public final class ProxyCore: Sendable {
    public typealias Sink = @Sendable (Data) -> Void

    private struct AwaitingApproval {
        let call: JSONValue
        let callID: JSONValue
        let arguments: JSONValue?
        let pending: PendingApproval
    }

    private struct State {
        var toolLists: Set<String> = []
        var reservations: [String: Reservation] = [:]
        var clientCanElicit = false
        var approvals: [String: AwaitingApproval] = [:]
        var nextApproval = 0
        /// Requests forwarded and not yet answered (only with `tracksRequests`), by their id's JSON.
        var forwarded: [String: JSONValue] = [:]
    }

    public let evaluator: PolicyEvaluator
    public let identity: CallIdentity
    private let audit: (any AuditSink)?
    private let dryRun: Bool
    private let approvalTimeout: Duration
    private let tracksRequests: Bool
    private let toClient: Sink
    private let toServer: Sink
    private let state = Mutex(State())
    /// Only tools/list answers and counted calls need the server's lines parsed; this keeps the common path a copy.
    /// Written only under `state`'s lock, so a set and a clear cannot cross.
    private let serverLinesNeedParsing = Atomic<Bool>(false)

    /// `tracksRequests`: remember every forwarded request until it is answered, so that `serverEnded()` can answer
    /// them (Streamable HTTP, where a request whose answer never comes would hang its POST).
    /// `toClient` and `toServer` receive one JSON-RPC message (or batch) each, without a line terminator; they may be
    /// called from any thread and must keep the order of their calls.
    public init(
        evaluator: PolicyEvaluator, identity: CallIdentity, audit: (any AuditSink)?, dryRun: Bool = false,
        approvalTimeout: Duration = .seconds(60), tracksRequests: Bool = false,
        toClient: @escaping Sink, toServer: @escaping Sink
    ) {
        self.tracksRequests = tracksRequests
        self.evaluator = evaluator
        self.identity = identity
        self.audit = audit
        self.dryRun = dryRun
        self.approvalTimeout = approvalTimeout
        self.toClient = toClient
        self.toServer = toServer
    }

    /// Tells the client its tool list changed (after a policy reload).
    public func announceToolListChanged() {
        send(["jsonrpc": "2.0", "method": "notifications/tools/list_changed"], to: toClient)
    }

    // MARK: - client → server

    public func fromClient(_ line: Data) {
        // Most messages are not ours to judge: a skim of the top level tells, without building the message.
        if let summary = JSONValue.summarizeMessage(line), !Self.needsFullParse(summary) {
            if tracksRequests, summary.method != nil, let id = summary.id { remember(id) }
            toServer(line)
            return
        }
        let message: JSONValue
        do {
            message = try JSONValue.parseRejectingDuplicateKeys(line)
        } catch {
            // Fail closed: a text we cannot read might still read as a tool call to a more lenient server (NaN,
            // comments, a repeated "method" or "name" of which it keeps the other copy), so it is answered here.
            let duplicate = (error as? JSONParseError)?.reason.hasPrefix("duplicate key") ?? false
            send([
                "jsonrpc": "2.0", "id": nil,
                "error": [
                    "code": duplicate ? -32600 : -32700,
                    "message": .string("\(duplicate ? "Invalid Request" : "Parse error"): \(error) (refused by corral proxy)"),
                ],
            ], to: toClient)
            return
        }
        switch message {
        case .array(let batch):
            // Each call in a batch is decided alone; allowed messages go on as one batch, denials are answered here.
            var forwarded: [JSONValue] = []
            for element in batch {
                switch route(element) {
                case .forward: forwarded.append(element)
                case .answer(let answer): send(answer, to: toClient)
                case .consumed: break
                }
            }
            if !forwarded.isEmpty {
                forwarded.forEach(rememberIfRequest)
                send(.array(forwarded), to: toServer)
            }
        default:
            switch route(message) {
            case .forward:
                rememberIfRequest(message)
                toServer(line)
            case .answer(let answer): send(answer, to: toClient)
            case .consumed: break
            }
        }
    }

    private static func needsFullParse(_ summary: JSONMessageSummary) -> Bool {
        switch summary.method {
        case "tools/call"?, "tools/list"?, "initialize"?: return true
        case nil: return summary.id?.stringValue?.hasPrefix(approvalPrefix) ?? false
        default: return false
        }
    }

    private enum Route {
        case forward
        case answer(JSONValue)
        /// Kept here: an answer to our own elicitation, or a call waiting for approval.
        case consumed
    }

    private func route(_ message: JSONValue) -> Route {
        guard let method = message["method"]?.stringValue else {
            if let id = message["id"]?.stringValue, id.hasPrefix(Self.approvalPrefix) {
                approvalAnswered(id: id, response: message)
                return .consumed
            }
            return .forward
        }
        let id = message["id"]
        switch method {
        case "initialize":
            let canElicit = message["params"]?["capabilities"]?["elicitation"].map { !$0.isNull } ?? false
            state.withLock { $0.clientCanElicit = canElicit }
            return .forward
        case "tools/list":
            if let id, !dryRun {  // a dry run changes nothing the client sees, tool lists included
                state.withLock {
                    _ = $0.toolLists.insert(id.jsonString())
                    serverLinesNeedParsing.store(true, ordering: .relaxed)
                }
            }
            return .forward
        case "tools/call":
            return decideCall(message, id: id)
        default:
            return .forward
        }
    }

    private func decideCall(_ message: JSONValue, id: JSONValue?) -> Route {
        // Whatever the params look like, the policy judges them (fail closed): a missing name or arguments that are
        // not an object are denied and never reach the server.
        let params = message["params"]
        let name = params?["name"]?.stringValue
        let arguments = params?.objectValue == nil ? JSONValue.string("(params not an object)") : params?["arguments"]
        let start = ContinuousClock.now
        let decision = evaluator.decide(tool: name, arguments: arguments, identity: identity)
        record(decision, arguments, since: start)
        if dryRun { return .forward }
        guard let id else { return decision.isAllowed ? .forward : .consumed }  // an unanswerable denial is dropped
        if decision.outcome == .approvalRequired, let pending = decision.pendingApproval {
            return askForApproval(call: message, callID: id, arguments: arguments, pending: pending)
        }
        return admit(decision, callID: id)
    }

    private func admit(_ decision: Decision, callID: JSONValue) -> Route {
        if let denial = decision.deniedToolResult {
            return .answer(["jsonrpc": "2.0", "id": callID, "result": denial])
        }
        if let reservation = decision.reservation {
            state.withLock {
                $0.reservations[callID.jsonString()] = reservation
                serverLinesNeedParsing.store(true, ordering: .relaxed)
            }
        }
        return .forward
    }

    // MARK: - approval through elicitation

    static let approvalPrefix = "corral-approval-"

    private func askForApproval(call: JSONValue, callID: JSONValue, arguments: JSONValue?, pending: PendingApproval) -> Route {
        let approvalID: String? = state.withLock { state in
            guard state.clientCanElicit else { return nil }
            state.nextApproval += 1
            let id = Self.approvalPrefix + String(state.nextApproval)
            state.approvals[id] = AwaitingApproval(call: call, callID: callID, arguments: arguments, pending: pending)
            return id
        }
        guard let approvalID else {
            let message = "\(pending.message); approval was required, but the client does not support elicitation"
            return .answer(["jsonrpc": "2.0", "id": callID, "result": PolicyDenial.toolResult(rule: pending.rule, message: message)])
        }
        let keys = pending.arguments.keys.sorted().joined(separator: ", ")
        send([
            "jsonrpc": "2.0", "id": .string(approvalID), "method": "elicitation/create",
            "params": [
                "message": .string(
                    "Allow the call to tool \"\(pending.tool)\"\(keys.isEmpty ? "" : " (arguments: \(keys))")? \(pending.message)"),
                "requestedSchema": ["type": "object", "properties": [:]],
            ],
        ], to: toClient)
        let timeout = approvalTimeout
        Task { [weak self] in
            try? await Task.sleep(for: timeout)
            self?.approvalTimedOut(id: approvalID)
        }
        return .consumed
    }

    private func approvalAnswered(id: String, response: JSONValue) {
        guard let waiting = state.withLock({ $0.approvals.removeValue(forKey: id) }) else { return }  // timed out
        let action = response["result"]?["action"]?.stringValue
        let start = ContinuousClock.now
        let decision = evaluator.resolveApproval(waiting.pending, approved: action == "accept")
        record(decision, waiting.arguments, since: start)
        switch admit(decision, callID: waiting.callID) {
        case .forward:
            rememberIfRequest(waiting.call)
            send(waiting.call, to: toServer)
        case .answer(let answer): send(answer, to: toClient)
        case .consumed: break
        }
    }

    private func approvalTimedOut(id: String) {
        guard let waiting = state.withLock({ $0.approvals.removeValue(forKey: id) }) else { return }  // answered
        let start = ContinuousClock.now
        record(evaluator.resolveApproval(waiting.pending, approved: false), waiting.arguments, since: start)
        send([
            "jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": ["requestId": .string(id), "reason": "approval timed out"],
        ], to: toClient)
        let seconds = approvalTimeout.components.seconds
        let message = "\(waiting.pending.message); approval was not given within \(seconds) s"
        send([
            "jsonrpc": "2.0", "id": waiting.callID,
            "result": PolicyDenial.toolResult(rule: waiting.pending.rule, message: message),
        ], to: toClient)
    }

    // MARK: - server → client

    public func fromServer(_ line: Data) {
        if tracksRequests { forgetAnswered(line) }
        guard serverLinesNeedParsing.load(ordering: .relaxed) else {
            toClient(line)
            return
        }
        if let summary = JSONValue.summarizeMessage(line) {
            // One message: its id and whether it is an error are enough, unless it answers a tools/list.
            guard summary.method == nil, let id = summary.id?.jsonString() else {
                toClient(line)
                return
            }
            let (isToolList, reservation) = takePending(id)
            if summary.hasError { _ = try? reservation?.rollback() }
            if isToolList, let message = try? JSONValue.parse(line), let result = message["result"] {
                send(message.merging(["result": evaluator.policy.filterToolsListResult(result)]), to: toClient)
            } else {
                toClient(line)
            }
            return
        }
        guard let message = try? JSONValue.parse(line) else {
            toClient(line)
            return
        }
        let messages = message.arrayValue ?? [message]
        var rewritten = false
        var out: [JSONValue] = []
        for element in messages {
            guard element["method"] == nil, let id = element["id"]?.jsonString() else {
                out.append(element)
                continue
            }
            let (isToolList, reservation) = takePending(id)
            if element["error"] != nil { _ = try? reservation?.rollback() }
            if isToolList, let result = element["result"] {
                out.append(element.merging(["result": evaluator.policy.filterToolsListResult(result)]))
                rewritten = true
            } else {
                out.append(element)
            }
        }
        if rewritten {
            send(message.arrayValue == nil ? out[0] : .array(out), to: toClient)
        } else {
            toClient(line)
        }
    }

    // MARK: - requests in flight (tracksRequests)

    private func remember(_ id: JSONValue) {
        state.withLock { $0.forwarded[id.jsonString()] = id }
    }

    private func rememberIfRequest(_ message: JSONValue) {
        guard tracksRequests, message["method"] != nil, let id = message["id"] else { return }
        remember(id)
    }

    private func forgetAnswered(_ line: Data) {
        let ids: [JSONValue]
        if let summary = JSONValue.summarizeMessage(line) {
            ids = summary.method == nil ? summary.id.map { [$0] } ?? [] : []
        } else {
            ids = ((try? JSONValue.parse(line))?.arrayValue ?? []).filter { $0["method"] == nil }.compactMap { $0["id"] }
        }
        guard !ids.isEmpty else { return }
        state.withLock { state in
            for id in ids { state.forwarded[id.jsonString()] = nil }
        }
    }

    /// The server is gone: every request it still owed an answer gets a JSON-RPC error instead of silence.
    public func serverEnded(_ reason: String) {
        let owed = state.withLock { state in
            defer { state.forwarded.removeAll() }
            return Array(state.forwarded.values)
        }
        for id in owed {
            send([
                "jsonrpc": "2.0", "id": id,
                "error": ["code": -32000, "message": .string("The MCP server behind corral proxy \(reason)")],
            ], to: toClient)
        }
    }

    // MARK: - helpers

    /// Whether `id` answers a tools/list we track, and the reservation of the call it answers.
    private func takePending(_ id: String) -> (Bool, Reservation?) {
        state.withLock { state in
            let found = (state.toolLists.remove(id) != nil, state.reservations.removeValue(forKey: id))
            if state.toolLists.isEmpty && state.reservations.isEmpty {
                serverLinesNeedParsing.store(false, ordering: .relaxed)
            }
            return found
        }
    }

    private func send(_ message: JSONValue, to sink: Sink) {
        sink(Data(message.jsonString().utf8))
    }

    private func record(_ decision: Decision, _ arguments: JSONValue?, since start: ContinuousClock.Instant) {
        guard let audit else { return }
        audit.record(
            AuditEntry(
                decision: decision, arguments: arguments, identity: identity,
                latencyMicroseconds: (ContinuousClock.now - start).microseconds, dryRun: dryRun))
    }
}
