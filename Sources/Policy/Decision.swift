import CorralJSON
import Synchronization

/// Who is calling: the ids that `grant` and `session` scoped counters are keyed by.
public struct CallIdentity: Sendable, Hashable {
    /// The caller's credential or agent id.
    public var grant: String?
    /// The MCP session id.
    public var session: String?

    public init(grant: String? = nil, session: String? = nil) {
        self.grant = grant
        self.session = session
    }
}

/// A counter as it stands after a decision.
public struct CounterReading: Sendable, Hashable {
    public let key: CounterKey
    /// The limit that owns the counter, e.g. `tools.pause_background_task.limits[0]`.
    public let rule: String
    public let value: Int
    public let max: Int
    public let window: CounterWindow
    public let windowEndMs: Int64
}

/// The verdict on one call.
public struct Decision: Sendable {
    public enum Outcome: String, Sendable, Hashable {
        case allow, deny
        /// The tool needs a human's approval: resolve with `PolicyEvaluator.resolveApproval`.
        case approvalRequired = "approval_required"
    }

    public let outcome: Outcome
    /// Which rule decided: `hide`, `lookalike`, `invalid_call`, `default_deny`, `default_allow`, `policy_store`,
    /// `policy_store_fail_open`, `tools.NAME`, `tools.NAME.action`, `tools.NAME.deny_if[i]`, `tools.NAME.require[i]`,
    /// `tools.NAME.limits[i]`, `all_tools.limits[i]`; and `audit`, from a gateway that could not record the call.
    public let rule: String
    public let message: String
    /// For a rate limit: milliseconds until the window that refused the call resets.
    public let retryAfterMs: Int64?
    /// The tool name as called.
    public let tool: String
    public let revision: PolicyRevision
    /// The counters of every limit that applied, after the decision.
    public let counters: [CounterReading]
    /// For an allowed call that reserved counters: roll it back when the server answers with a JSON-RPC error.
    public let reservation: Reservation?
    /// For `approvalRequired`: what to hand back once a human decided.
    public let pendingApproval: PendingApproval?

    public var isAllowed: Bool { outcome == .allow }

    init(
        _ outcome: Outcome, rule: String, message: String, tool: String, revision: PolicyRevision,
        retryAfterMs: Int64? = nil, counters: [CounterReading] = [], reservation: Reservation? = nil,
        pendingApproval: PendingApproval? = nil
    ) {
        self.outcome = outcome
        self.rule = rule
        self.message = message
        self.tool = tool
        self.revision = revision
        self.retryAfterMs = retryAfterMs
        self.counters = counters
        self.reservation = reservation
        self.pendingApproval = pendingApproval
    }

    /// The MCP tool result for a call that is not allowed (deny, or approval still required); nil when allowed.
    public var deniedToolResult: JSONValue? {
        // Not a ternary: there `nil` would become `JSONValue.null` (JSONValue is ExpressibleByNilLiteral).
        guard !isAllowed else { return Optional.none }
        return PolicyDenial.toolResult(rule: rule, message: message, retryAfterMs: retryAfterMs)
    }

    /// This call denied after all, by the gateway around the policy (an audit line it could not write): same tool,
    /// revision and counter readings, no reservation and no approval left to ask for. The caller gives the
    /// reservation's counters back.
    public func overruled(rule: String, message: String) -> Decision {
        Decision(.deny, rule: rule, message: message, tool: tool, revision: revision, counters: counters)
    }
}

/// How a denial reaches the agent: a normal tool result, as PolicyLayer renders it.
public enum PolicyDenial {
    public static let prefix = "[POLICY DENIED]"

    /// `{content: [{type: "text", text: "[POLICY DENIED] …"}], isError: true, structuredContent: {rule, message,
    /// retry_after_ms?}}`.
    public static func toolResult(rule: String, message: String, retryAfterMs: Int64? = nil) -> JSONValue {
        var structured: [String: JSONValue] = ["rule": .string(rule), "message": .string(message)]
        if let retryAfterMs { structured["retry_after_ms"] = .int(Int(retryAfterMs)) }
        return .object([
            "content": .array([.object(["type": "text", "text": .string("\(prefix) \(message)")])]),
            "isError": .bool(true),
            "structuredContent": .object(structured),
        ])
    }
}

/// Counters reserved for one allowed call. Roll back at most once (later calls do nothing).
public final class Reservation: Sendable {
    public let requests: [CounterRequest]
    private let store: any PolicyStore
    private let released = Atomic<Bool>(false)

    init(requests: [CounterRequest], store: any PolicyStore) {
        self.requests = requests
        self.store = store
    }

    /// Takes the reserved amounts back. Returns false when already rolled back.
    @discardableResult
    public func rollback() async throws(PolicyStoreError) -> Bool {
        guard released.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else {
            return false
        }
        do {
            try await store.release(requests)
        } catch {
            released.store(false, ordering: .releasing)  // allow a retry
            throw error
        }
        return true
    }

    public var isRolledBack: Bool { released.load(ordering: .acquiring) }
}

/// A call waiting for a human. Hand it to `PolicyEvaluator.resolveApproval` with the answer.
public struct PendingApproval: Sendable {
    public let tool: String
    public let arguments: [String: JSONValue]
    public let identity: CallIdentity
    /// `tools.NAME.action`.
    public let rule: String
    /// The `reason` of the rule, or a default, to show the approver.
    public let message: String
    public let revision: PolicyRevision
}
