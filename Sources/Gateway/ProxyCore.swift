import CorralJSON
import MCPCore
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
    /// Where messages for the client go (a stdout line, an HTTP stream): quick, never waits.
    public typealias Sink = @Sendable (Data) -> Void
    /// Where messages for the server go; may wait (an era bridge answers some itself, through `fromServer`).
    public typealias ServerSink = @Sendable (Data) async -> Void

    private struct AwaitingApproval {
        let call: JSONValue
        let callID: JSONValue
        let arguments: JSONValue?
        let pending: PendingApproval
    }

    private struct State {
        /// Ids of client requests that await an answer from the server's side: forwarded, or held for approval. A
        /// request reusing one is refused, so one answer can only ever match one request. Every id here is a string
        /// or an integer (others are refused first), keyed as parsed: hashing the value itself, not its JSON text
        /// (six `jsonString()`s were 4 % of a proxied call's instructions).
        var inFlight: Set<JSONValue> = []
        var toolLists: Set<JSONValue> = []
        var reservations: [JSONValue: Reservation] = [:]
        var clientCanElicit = false
        var approvals: [String: AwaitingApproval] = [:]
        var nextApproval = 0
        /// Ids of forwarded calls from clients that declared the Tasks extension: their answers may hand out a
        /// task handle, which is then recorded for this grant.
        var taskCapableCalls: Set<JSONValue> = []
        /// When each forwarded `tools/call` left for the server (for the upstream latency).
        var callsSent: [JSONValue: ContinuousClock.Instant] = [:]
        /// Forwarded requests the client cancelled and the server has not answered, oldest first (`cancelledOrder`;
        /// the set says which are still owed). Their ids stay taken: the server may answer anyway (the Python SDK
        /// answers each with an error), and that answer must not be taken for a later request under the same id
        /// (a tools/list passed on unfiltered, a counter given back for a call that ran). MCP ids are unique in a
        /// session anyway. Past `cancelledLimit` the oldest is forgotten, so a client cannot grow this forever.
        var cancelled: Set<JSONValue> = []
        var cancelledOrder: [JSONValue] = []
        /// Who waits for every request to be answered (`waitUntilAnswered`).
        var answeredWaiters: [CheckedContinuation<Void, Never>] = []

        /// No request is owed an answer from the server: none in flight but calls held for an approval (the server
        /// never saw them) and calls the client cancelled (a server should not answer those).
        var owesNothing: Bool {
            guard inFlight.count <= approvals.count + cancelled.count else { return false }
            return inFlight.subtracting(cancelled).isSubset(of: Set(approvals.values.map(\.callID)))
        }
    }

    static let cancelledLimit = 4096

    public let evaluator: PolicyEvaluator
    public let identity: CallIdentity
    private let audit: (any AuditSink)?
    private let dryRun: Bool
    private let approvalTimeout: Duration
    private let approvalStates: ApprovalStates
    private let toClient: Sink
    private let toServer: ServerSink
    private let taskHandles: TaskHandles
    private let state = Mutex(State())

    /// `toClient` and `toServer` receive one JSON-RPC message (or batch) each, without a line terminator; they may be
    /// called from any thread and must keep the order of their calls. Approval states and task handles default to
    /// the evaluator's store.
    public init(
        evaluator: PolicyEvaluator, identity: CallIdentity, audit: (any AuditSink)?, dryRun: Bool = false,
        approvalTimeout: Duration = .seconds(60), approvalStates: ApprovalStates? = nil,
        taskHandles: TaskHandles? = nil, toClient: @escaping Sink, toServer: @escaping ServerSink
    ) {
        self.taskHandles = taskHandles ?? TaskHandles(store: evaluator.store)
        self.approvalStates = approvalStates ?? ApprovalStates(lifetime: approvalTimeout, store: evaluator.store)
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

    /// One message (or batch) from the client. A connection's messages are handed in one at a time, in order;
    /// requests of stateless clients may come concurrently.
    public func fromClient(_ text: Data) async {
        // Raw CR and LF can only be whitespace in JSON (inside strings they must be escaped), but to a stdio server
        // they end a line: a message hidden after one (in an HTTP body, or after a bare CR that Python's universal
        // newlines split on) would reach it unjudged. As spaces they mean the same and split nothing.
        let line = Self.lineBreaksAsSpaces(text)
        // Most messages are not ours to judge: a skim of the top level tells, without building the message.
        if let summary = JSONValue.summarizeMessage(line), !Self.needsFullParse(summary) {
            if summary.method != nil, let id = summary.id {
                guard Self.isValidID(id) else {
                    refuse(line, code: -32600, "Invalid Request: \(Self.idRule)")
                    return
                }
                guard claim(id) else {
                    refuse(line, code: -32600, "Invalid Request: id \(id.jsonString()) is already in use by a request in flight")
                    return
                }
            }
            await toServer(line)
            return
        }
        let message: JSONValue
        do {
            message = try JSONValue.parseRejectingAmbiguousKeys(line)
        } catch {
            // Fail closed: a text we cannot read might still read as a tool call to a more lenient server (NaN,
            // comments, a repeated "method" or "name" of which it keeps the other copy), so it is answered here.
            let duplicate = (error as? JSONParseError)?.reason.hasPrefix("duplicate key") ?? false
            refuse(line, code: duplicate ? -32600 : -32700, "\(duplicate ? "Invalid Request" : "Parse error"): \(error)")
            return
        }
        switch message {
        case .array(let batch):
            // Each call in a batch is decided alone; allowed messages go on as one batch, denials are answered here.
            var forwarded: [JSONValue] = []
            for element in batch {
                switch await route(element) {
                case .forward: forwarded.append(element)
                case .forwardMessage(let rewritten): forwarded.append(rewritten)
                case .answer(let answer): send(answer, to: toClient)
                case .consumed: break
                }
            }
            if !forwarded.isEmpty { await send(.array(forwarded), to: toServer) }
        default:
            switch await route(message) {
            case .forward: await toServer(line)
            case .forwardMessage(let rewritten): await send(rewritten, to: toServer)
            case .answer(let answer): send(answer, to: toClient)
            case .consumed: break
            }
        }
    }

    static func lineBreaksAsSpaces(_ text: Data) -> Data {
        // Over the raw bytes: Data's element-by-element iteration was 7 % of a proxied call's CPU.
        let hasBreak = text.withUnsafeBytes { raw in raw.contains { $0 == 0x0A || $0 == 0x0D } }
        guard hasBreak else { return text }
        return Data(text.map { $0 == 0x0A || $0 == 0x0D ? 0x20 : $0 })
    }

    /// The JSON-RPC members, and the members of a judged request's params, that a receiver matching keys regardless
    /// of letter case would take a differently spelled key for (`JSONKeyFolding`): `{"Method":"tools/call"}` is a
    /// call to it, and an answer to us. Keys of one object that fold alike are refused by the parser already.
    private static let routedMembers = spellings(["jsonrpc", "id", "method", "params", "result", "error"])
    private static let routedParams = spellings(["name", "arguments", "_meta", "taskId", "requestState", "inputResponses", "requestId"])

    private static func spellings(_ names: [String]) -> [(spelling: String, folded: String)] {
        names.map { ($0, JSONKeyFolding.fold($0)) }
    }

    /// What is wrong when `message` spells a routed member in another case ("\"Method\" is not \"method\"").
    /// Keys spelled as the protocol spells them are compared once each; only others are folded.
    static func caseVariant(in message: JSONValue) -> String? {
        func variant(_ object: [String: JSONValue], _ members: [(spelling: String, folded: String)]) -> String? {
            for key in object.keys where !members.contains(where: { $0.spelling == key }) {
                for member in members where JSONKeyFolding.folds(key, to: member.folded) {
                    return "\"\(key)\" is not \"\(member.spelling)\""
                }
            }
            return nil
        }
        guard let object = message.objectValue else { return nil }
        if let found = variant(object, routedMembers) { return found }
        guard let params = object["params"]?.objectValue else { return nil }
        return variant(params, routedParams)
    }

    /// MCP: "the ID MUST be a string or integer" (and not null). Others are refused before they can collide. An
    /// integer must also be exact in a double (|id| < 2^53): a JavaScript server answers 9007199254740993 as
    /// ...992, an answer no request would match, and a tools/list answer must never go unmatched.
    static func isValidID(_ id: JSONValue) -> Bool {
        if id.stringValue != nil { return true }
        guard let integer = id.intValue else { return false }
        return integer.magnitude <= maximumExactInteger
    }

    static let maximumExactInteger: UInt = 1 << 53 - 1
    static let idRule = "an id must be a string or an integer between -(2^53 - 1) and 2^53 - 1"

    private static func needsFullParse(_ summary: JSONMessageSummary) -> Bool {
        switch summary.method {
        case "tools/call"?, "tools/list"?, "initialize"?, "notifications/cancelled"?: return true
        case nil: return summary.id?.stringValue?.hasPrefix(approvalPrefix) ?? false
        case let method?: return method.hasPrefix("tasks/")
        }
    }

    /// Answers a text that is not forwarded, under its id when one can be read (else the POST of an HTTP client
    /// would wait for an answer it can never be matched to).
    private func refuse(_ line: Data, code: Int, _ message: String) {
        let id = JSONValue.summarizeMessage(line, lenient: true)?.id ?? .null
        send([
            "jsonrpc": "2.0", "id": id,
            "error": ["code": .int(code), "message": .string("\(message) (refused by corral proxy)")],
        ], to: toClient)
    }

    private enum Route {
        case forward
        /// Forwarded with changes (an approved 2026-07-28 call without its input responses).
        case forwardMessage(JSONValue)
        case answer(JSONValue)
        /// Kept here: an answer to our own elicitation, or a call waiting for approval.
        case consumed
    }

    private func route(_ message: JSONValue) async -> Route {
        if let variant = Self.caseVariant(in: message) {
            let id = message["id"].flatMap { Self.isValidID($0) ? $0 : nil } ?? .null
            return .answer([
                "jsonrpc": "2.0", "id": id,
                "error": [
                    "code": -32600,
                    "message": .string("Invalid Request: \(variant) (refused by corral proxy: a server that matches keys regardless of case would read it otherwise)"),
                ],
            ])
        }
        guard let method = message["method"]?.stringValue else {
            if let id = message["id"]?.stringValue, id.hasPrefix(Self.approvalPrefix) {
                await approvalAnswered(id: id, response: message)
                return .consumed
            }
            return .forward  // an answer to a server's request, or something the server will refuse
        }
        let id = message["id"]
        if let id, !Self.isValidID(id) {
            return .answer([
                // An integer too big for a double is still the client's id, to match the refusal with its request.
                "jsonrpc": "2.0", "id": id.intValue != nil ? id : .null,
                "error": ["code": -32600, "message": .string("Invalid Request: \(Self.idRule) (refused by corral proxy)")],
            ])
        }
        if let id, state.withLock({ $0.inFlight.contains(id) }) {
            return .answer([
                "jsonrpc": "2.0", "id": id,
                "error": [
                    "code": -32600,
                    "message": .string("Invalid Request: id \(id.jsonString()) is already in use by a request in flight (refused by corral proxy)"),
                ],
            ])
        }
        let route: Route
        switch method {
        case "initialize":
            let canElicit = message["params"]?["capabilities"]?["elicitation"].map { !$0.isNull } ?? false
            state.withLock { $0.clientCanElicit = canElicit }
            route = .forward
        case "tools/list":
            if let id, !dryRun {  // a dry run changes nothing the client sees, tool lists included
                state.withLock { _ = $0.toolLists.insert(id) }
            }
            route = .forward
        case "tools/call":
            route = await decideCall(message, id: id)
        case "notifications/cancelled":
            if let cancelled = message["params"]?["requestId"] { clientCancelled(cancelled) }
            route = .forward
        case _ where method.hasPrefix("tasks/"):
            route = await decideTaskRequest(message, method: method, id: id)
        default:
            route = .forward
        }
        switch route {
        case .forward, .forwardMessage: if let id { _ = claim(id) }
        default: break
        }
        return route
    }

    private func decideCall(_ message: JSONValue, id: JSONValue?) async -> Route {
        // Whatever the params look like, the policy judges them (fail closed): a missing name or arguments that are
        // not an object are denied and never reach the server.
        let params = message["params"]
        let name = params?["name"]?.stringValue
        let arguments = params?.objectValue == nil ? JSONValue.string("(params not an object)") : params?["arguments"]
        let modern = params?.hasModernEnvelope ?? false
        let start = ContinuousClock.now
        let decision = await audited(
            await evaluator.decide(tool: name, arguments: arguments, identity: identity), arguments, since: start,
            modern: modern)
        if dryRun { return .forward }
        guard let id else { return decision.isAllowed ? .forward : .consumed }  // an unanswerable denial is dropped
        let route: Route
        if decision.outcome == .approvalRequired, let pending = decision.pendingApproval {
            if modern { route = await approveStatelessly(message, callID: id, arguments: arguments, pending: pending) }
            else { return askForApproval(call: message, callID: id, arguments: arguments, pending: pending) }
        } else {
            route = admit(decision, callID: id, modern: modern)
        }
        switch route {
        case .forward, .forwardMessage:
            let taskCapable = modern && params?["_meta"]?[MetaKey.clientCapabilities]?["extensions"]?[TasksExtension.id] != nil
            let now = ContinuousClock.now
            state.withLock { state in
                if taskCapable { state.taskCapableCalls.insert(id) }
                state.callsSent[id] = now
            }
        default: break
        }
        return route
    }

    // MARK: - tasks/* (Tasks extension)

    /// Only handles this gateway (or one sharing its store) saw created for this grant pass; the call that created
    /// one was decided (and counted) once already, so its `tasks/*` are not decided again, only audited. When the
    /// store cannot tell, the request is refused (fail closed).
    private func decideTaskRequest(_ message: JSONValue, method: String, id: JSONValue?) async -> Route {
        let start = ContinuousClock.now
        let handle = message["params"]?["taskId"]?.stringValue
        var storeProblem: String?
        var known = false
        if let handle {
            do {
                known = try await taskHandles.isOwned(handle, by: identity.grant)
            } catch {
                storeProblem = error.message
            }
        }
        let auditProblem = recordAudit(
            AuditEntry(
                taskMethod: method, handle: handle, forwarded: known, identity: identity,
                policyRevision: evaluator.policy.revision.hex,
                latencyMicroseconds: (ContinuousClock.now - start).microseconds, storeProblem: storeProblem),
            in: audit)
        let forwarded = dryRun || (known && auditProblem == nil)
        GatewayMetrics.taskRequest(method: method, forwarded: forwarded)
        if forwarded { return .forward }
        guard let id else { return .consumed }
        if known, let auditProblem {
            return .answer(
                JSONRPC.error(
                    id: id,
                    .internalError("\(PolicyDenial.prefix) the audit trail could not record this request: \(auditProblem) (\(method) refused by corral)")))
        }
        if let storeProblem {
            return .answer(JSONRPC.error(id: id, .internalError("\(PolicyDenial.prefix) policy store unavailable: \(storeProblem) (\(method) refused by corral)")))
        }
        return .answer(JSONRPC.error(id: id, TaskHandles.refusal(method, handle)))
    }

    /// Records the handle a call's answer hands out, before the client can hear of it.
    private func noteTaskHandle(_ id: JSONValue, answer: @autoclosure () -> JSONValue?) async {
        guard state.withLock({ $0.taskCapableCalls.remove(id) != nil }) else { return }
        guard let handle = TaskHandles.createdHandle(in: answer()?["result"]) else { return }
        do {
            try await taskHandles.record(handle, grant: identity.grant)
        } catch {
            // The client gets its handle, but no gateway will let it through: say so in the audit trail (if that
            // fails too, the audit log's own failure is on stderr and in the metrics).
            _ = recordAudit(
                AuditEntry(
                    taskMethod: "tools/call", handle: handle, forwarded: false, identity: identity,
                    policyRevision: evaluator.policy.revision.hex, latencyMicroseconds: 0, storeProblem: error.message),
                in: audit)
        }
    }

    // MARK: - approval as an input_required round trip (2026-07-28)

    static let inputKey = "corral-approval"

    /// 2026-07-28 has no server→client requests: the call is answered `input_required` with an elicitation and a
    /// sealed `requestState`; the client's retry carries the answer and the state, and runs the call once if both
    /// hold. Nothing is kept here between the two but the redeemed nonces.
    private func approveStatelessly(
        _ message: JSONValue, callID: JSONValue, arguments: JSONValue?, pending: PendingApproval
    ) async -> Route {
        let params = message["params"]
        if let sealed = params?["requestState"] {
            let start = ContinuousClock.now
            let verified: Result<Void, ApprovalStates.Refusal>
            if let text = sealed.stringValue {
                verified = await approvalStates.redeem(text, grant: identity.grant, tool: pending.tool, arguments: arguments)
            } else {
                verified = .failure(.malformed)
            }
            if case .failure(let refusal) = verified {
                _ = await audited(await evaluator.resolveApproval(pending, approved: false), arguments, since: start, modern: true)
                let text = "\(pending.message); approval refused: \(refusal)"
                return .answer(["jsonrpc": "2.0", "id": callID, "result": Self.modernResult(PolicyDenial.toolResult(rule: pending.rule, message: text))])
            }
            let action = params?["inputResponses"]?[Self.inputKey]?["action"]?.stringValue
            let resolved = await evaluator.resolveApproval(pending, approved: action == "accept")
            let decision = await audited(resolved, arguments, since: start, modern: true)
            guard decision.isAllowed else {
                let text = resolved.isAllowed ? decision.message : "\(pending.message); the user answered \(action ?? "nothing")"
                return .answer(["jsonrpc": "2.0", "id": callID, "result": Self.modernResult(PolicyDenial.toolResult(rule: decision.rule, message: text))])
            }
            if let reservation = decision.reservation {
                state.withLock { $0.reservations[callID] = reservation }
            }
            // The server did not ask for input: it gets the call as the client first sent it.
            var stripped = params?.objectValue ?? [:]
            stripped["requestState"] = nil
            stripped["inputResponses"] = nil
            return .forwardMessage(message.merging(["params": .object(stripped)]))
        }
        let canElicit = params?["_meta"]?[MetaKey.clientCapabilities]?["elicitation"].map { !$0.isNull } ?? false
        guard canElicit else {
            let text = "\(pending.message); approval was required, but the client does not support elicitation"
            return .answer(["jsonrpc": "2.0", "id": callID, "result": Self.modernResult(PolicyDenial.toolResult(rule: pending.rule, message: text))])
        }
        let result: JSONValue = [
            "resultType": "input_required",
            "inputRequests": [
                Self.inputKey: [
                    "method": "elicitation/create",
                    "params": ["message": .string(Self.approvalQuestion(pending)), "requestedSchema": ["type": "object", "properties": [:]]],
                ],
            ],
            "requestState": .string(approvalStates.issue(grant: identity.grant, tool: pending.tool, arguments: arguments)),
        ]
        return .answer(["jsonrpc": "2.0", "id": callID, "result": result])
    }

    /// The question put to the user: the tool and its arguments as the client sent them (so the user sees what
    /// is approved; the client has them already, and the audit trail still keeps only their keys and hash), cut
    /// after `shownArguments` characters, then the policy's reason.
    static func approvalQuestion(_ pending: PendingApproval) -> String {
        var arguments = ""
        if !pending.arguments.isEmpty {
            let text = JSONValue.object(pending.arguments).jsonString()
            arguments = " with arguments " + (text.count > shownArguments ? text.prefix(shownArguments) + "…" : text)
        }
        return "Allow the call to tool \"\(pending.tool)\"\(arguments)? \(pending.message)"
    }

    static let shownArguments = 1_000

    /// A result this proxy writes for a 2026-07-28 client.
    private static func modernResult(_ result: JSONValue) -> JSONValue {
        result.merging(["resultType": "complete"])
    }

    private func admit(_ decision: Decision, callID: JSONValue, modern: Bool = false) -> Route {
        if let denial = decision.deniedToolResult {
            return .answer(["jsonrpc": "2.0", "id": callID, "result": modern ? Self.modernResult(denial) : denial])
        }
        if let reservation = decision.reservation {
            state.withLock { $0.reservations[callID] = reservation }
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
            state.inFlight.insert(callID)  // held: the client still awaits an answer under this id
            return id
        }
        guard let approvalID else {
            let message = "\(pending.message); approval was required, but the client does not support elicitation"
            return .answer(["jsonrpc": "2.0", "id": callID, "result": PolicyDenial.toolResult(rule: pending.rule, message: message)])
        }
        send([
            "jsonrpc": "2.0", "id": .string(approvalID), "method": "elicitation/create",
            "params": [
                "message": .string(Self.approvalQuestion(pending)),
                "requestedSchema": ["type": "object", "properties": [:]],
            ],
        ], to: toClient)
        let timeout = approvalTimeout
        Task { [weak self] in
            try? await Task.sleep(for: timeout)
            await self?.approvalTimedOut(id: approvalID)
        }
        return .consumed
    }

    private func approvalAnswered(id: String, response: JSONValue) async {
        guard let waiting = state.withLock({ $0.approvals.removeValue(forKey: id) }) else { return }  // timed out
        let action = response["result"]?["action"]?.stringValue
        let start = ContinuousClock.now
        let decision = await audited(
            await evaluator.resolveApproval(waiting.pending, approved: action == "accept"), waiting.arguments, since: start)
        switch admit(decision, callID: waiting.callID) {
        case .forward, .forwardMessage: await send(waiting.call, to: toServer)  // its id stays in flight until the server answers
        case .answer(let answer):
            release(waiting.callID)
            send(answer, to: toClient)
        case .consumed: break
        }
    }

    private func approvalTimedOut(id: String) async {
        guard let waiting = state.withLock({ $0.approvals.removeValue(forKey: id) }) else { return }  // answered
        let start = ContinuousClock.now
        _ = await audited(await evaluator.resolveApproval(waiting.pending, approved: false), waiting.arguments, since: start)
        send([
            "jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": ["requestId": .string(id), "reason": "approval timed out"],
        ], to: toClient)
        let seconds = approvalTimeout.components.seconds
        let message = "\(waiting.pending.message); approval was not given within \(seconds) s"
        release(waiting.callID)
        send([
            "jsonrpc": "2.0", "id": waiting.callID,
            "result": PolicyDenial.toolResult(rule: waiting.pending.rule, message: message),
        ], to: toClient)
    }

    // MARK: - server → client

    /// One message (or batch) from the server, in the order the server wrote them.
    public func fromServer(_ line: Data) async {
        if let summary = JSONValue.summarizeMessage(line) {
            // One message: its id and whether it is an error are enough, unless it answers a tools/list.
            guard summary.method == nil, let id = summary.id else {
                toClient(line)  // a server notification or request: not ours to judge
                return
            }
            let (awaited, isToolList, reservation, upstream) = answered(id)
            if summary.hasError, !Self.answerWasLost(line) { await rollBack(reservation) }
            await noteTaskHandle(id, answer: try? JSONValue.parse(line))
            if isToolList {
                send(filteredToolList(try? JSONValue.parse(line), id: id), to: toClient)
            } else if !awaited, summary.hasResult {
                // An answer no request of ours awaits (a server that changed the id, a forgotten cancellation):
                // whatever it is, a tool list in it is filtered.
                sendUnawaited(line, id: id)
            } else {
                toClient(line)
            }
            upstreamAnswered(upstream, error: summary.hasError)
            return
        }
        guard let message = try? JSONValue.parse(line), let batch = message.arrayValue else {
            // Not one message we can read (a repeated key, text after it): if it answers something of ours, the
            // id is cleared, and an answer to a tools/list is not passed on unfiltered.
            if let loose = JSONValue.summarizeMessage(line, lenient: true), loose.method == nil, let id = loose.id {
                let (_, isToolList, _, upstream) = answered(id)  // counters stay spent: we cannot tell an error from a result
                upstreamAnswered(upstream, error: true)
                if isToolList {
                    send(filteredToolList(nil, id: id), to: toClient)
                    return
                }
            }
            toClient(line)
            return
        }
        var rewritten = false
        var out: [JSONValue] = []
        var upstreams: [(Duration?, error: Bool)] = []
        for element in batch {
            guard element["method"] == nil, let id = element["id"] else {
                out.append(element)
                continue
            }
            let (awaited, isToolList, reservation, upstream) = answered(id)
            upstreams.append((upstream, element["error"] != nil))
            if element["error"] != nil, element["error"]?["data"]?[MCPClient.answerLostKey] != true { await rollBack(reservation) }
            await noteTaskHandle(id, answer: element)
            if isToolList || (!awaited && element["result"]?["tools"] != nil) {
                out.append(filteredToolList(element, id: id))
                rewritten = true
            } else {
                out.append(element)
            }
        }
        if rewritten {
            send(.array(out), to: toClient)
        } else {
            toClient(line)
        }
        for (upstream, error) in upstreams { upstreamAnswered(upstream, error: error) }
    }

    /// An answer that matches no request in flight: passed on, its tool list filtered when it carries one.
    private func sendUnawaited(_ line: Data, id: JSONValue) {
        guard let answer = try? JSONValue.parse(line), answer["result"]?["tools"] != nil else { return toClient(line) }
        send(filteredToolList(answer, id: id), to: toClient)
    }

    /// The answer to a tools/list without hidden tools; an answer that cannot be read is replaced by an error
    /// (passing it on could show what the policy hides).
    private func filteredToolList(_ answer: JSONValue?, id: JSONValue) -> JSONValue {
        if let answer, let result = answer["result"] {
            return answer.merging(["result": evaluator.policy.filterToolsListResult(result)])
        }
        if let answer, answer["error"] != nil { return answer }
        return [
            "jsonrpc": "2.0", "id": id,
            "error": ["code": -32603, "message": "The server's tools/list answer could not be read (refused by corral proxy)"],
        ]
    }

    /// The server is gone: every request it still owed an answer gets a JSON-RPC error instead of silence.
    public func serverEnded(_ reason: String) {
        let owed = state.withLock { state in
            defer { state.inFlight.removeAll() }
            return Array(state.inFlight)
        }
        for id in owed {
            send([
                "jsonrpc": "2.0", "id": id,
                "error": ["code": -32000, "message": .string("The MCP server behind corral proxy \(reason)")],
            ], to: toClient)
        }
        resumeAnsweredWaiters()
    }

    /// Returns once the server owes no answer to a request of the client's (calls held for approval or cancelled
    /// by the client aside). An HTTP server does not see the client's input end, as a stdio server does: the
    /// proxy waits for this before it ends that connection, so that no answer the client is owed is cut off.
    public func waitUntilAnswered() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state -> Bool in
                guard state.owesNothing else {
                    state.answeredWaiters.append(waiter)
                    return false
                }
                return true
            }
            if done { waiter.resume() }
        }
    }

    private func resumeAnsweredWaiters() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard !state.answeredWaiters.isEmpty, state.owesNothing else { return [] }
            defer { state.answeredWaiters.removeAll() }
            return state.answeredWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    // MARK: - requests in flight

    /// The client gave up on a request. A call held for approval was never forwarded: it is dropped and its id is
    /// free. A forwarded request keeps its id, counters and filtering until the server answers it (see
    /// `State.cancelled`).
    private func clientCancelled(_ id: JSONValue) {
        defer { resumeAnsweredWaiters() }
        state.withLock { state in
            let held = state.approvals.filter { $0.value.callID == id }.keys
            if !held.isEmpty {
                for key in held { state.approvals[key] = nil }
                state.inFlight.remove(id)
                state.reservations[id] = nil
                return
            }
            guard state.inFlight.contains(id), state.cancelled.insert(id).inserted else { return }
            state.cancelledOrder.append(id)
            guard state.cancelledOrder.count > Self.cancelledLimit else { return }
            let oldest = state.cancelledOrder.removeFirst()
            guard state.cancelled.remove(oldest) != nil else { return }  // answered since
            state.inFlight.remove(oldest)
            state.toolLists.remove(oldest)
            state.reservations[oldest] = nil
            state.callsSent[oldest] = nil
            state.taskCapableCalls.remove(oldest)
        }
    }

    /// Marks `id` as awaiting an answer; false when a request in flight already uses it.
    private func claim(_ id: JSONValue) -> Bool {
        state.withLock { state in state.inFlight.insert(id).inserted }
    }

    private func release(_ id: JSONValue) {
        _ = state.withLock { $0.inFlight.remove(id) }
        resumeAnsweredWaiters()
    }

    /// The server answered `id`: whether a request of the client's awaited it, whether it was a tools/list we
    /// filter, the reservation of the call, and how long the server took if it was a forwarded call. Found by id
    /// even after the client cancelled (the server may answer anyway).
    private func answered(_ id: JSONValue) -> (awaited: Bool, isToolList: Bool, Reservation?, upstream: Duration?) {
        defer { resumeAnsweredWaiters() }
        let (awaited, isToolList, reservation, sent) = state.withLock { state in
            let awaited = state.inFlight.remove(id) != nil
            if awaited, !state.cancelled.isEmpty { state.cancelled.remove(id) }
            return (
                awaited, state.toolLists.remove(id) != nil, state.reservations.removeValue(forKey: id),
                state.callsSent.removeValue(forKey: id)
            )
        }
        return (awaited, isToolList, reservation, sent.map { ContinuousClock.now - $0 })
    }

    /// Reports a forwarded call's upstream latency, once its answer has gone on (the client need not wait for it).
    private func upstreamAnswered(_ upstream: Duration?, error: Bool) {
        if let upstream { GatewayMetrics.upstreamAnswered(after: upstream, error: error) }
    }

    // MARK: - helpers

    /// An error a transport made up because the server's answer never came (`MCPClient.answerLostKey`): the call
    /// may have run, so it keeps its counters. Read only for errors, which are rare.
    private static func answerWasLost(_ line: Data) -> Bool {
        (try? JSONValue.parse(line))?["error"]?["data"]?[MCPClient.answerLostKey] == true
    }

    /// A call the server refused with a JSON-RPC error did not run: its counters are given back. If the store
    /// cannot take them back now, they stay spent (stricter, never looser).
    private func rollBack(_ reservation: Reservation?) async {
        _ = try? await reservation?.rollback()
    }

    private func send(_ message: JSONValue, to sink: Sink) {
        sink(Data(message.jsonString().utf8))
    }

    private func send(_ message: JSONValue, to sink: ServerSink) async {
        await sink(Data(message.jsonString().utf8))
    }

    /// The decision once audited: a call the audit trail could not record is refused (`Decision.audited`).
    private func audited(
        _ decision: Decision, _ arguments: JSONValue?, since start: ContinuousClock.Instant, modern: Bool = false
    ) async -> Decision {
        let latency = (ContinuousClock.now - start).microseconds
        let final = await decision.audited(
            AuditEntry(
                decision: decision, arguments: arguments, identity: identity, latencyMicroseconds: latency, dryRun: dryRun,
                era: modern ? "modern" : "legacy"),
            to: audit, enforced: !dryRun)
        GatewayMetrics.decided(final, policy: evaluator.policy, microseconds: latency)
        return final
    }
}
