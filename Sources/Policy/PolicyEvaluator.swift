import CorralJSON
import Synchronization

/// Decides tool calls against the current policy. Thread-safe; the policy can be swapped at any time (hot reload),
/// calls in flight finish against the policy they started with.
public final class PolicyEvaluator: Sendable {
    /// What a call that needs a counter gets while the store cannot be reached.
    public enum StoreFailure: Sendable {
        /// Denied, with `[POLICY DENIED] policy store unavailable: …` (the default: fail closed).
        case deny
        /// Allowed without counting (`--store-fail-open`: an explicit choice, and every such call is audited
        /// under rule `policy_store_fail_open`).
        case allowUncounted
    }

    private let current: Mutex<Policy>
    public let store: any PolicyStore
    public let clock: any PolicyClock
    public let storeFailure: StoreFailure

    public init(
        policy: Policy, store: any PolicyStore = MemoryPolicyStore(), clock: any PolicyClock = SystemClock(),
        storeFailure: StoreFailure = .deny
    ) {
        current = Mutex(policy)
        self.store = store
        self.clock = clock
        self.storeFailure = storeFailure
    }

    /// The policy in force.
    public var policy: Policy { current.withLock { $0 } }

    /// Installs a new policy (counters are kept: they are keyed by names, not by revision). Returns the old one.
    @discardableResult
    public func replacePolicy(_ policy: Policy) -> Policy {
        current.withLock { old in
            let previous = old
            old = policy
            return previous
        }
    }

    /// Decides one `tools/call`. `arguments == nil` means none were sent (an empty object); anything else that is
    /// not an object is denied.
    public func decide(tool name: String?, arguments: JSONValue?, identity: CallIdentity = CallIdentity()) async -> Decision {
        let policy = self.policy
        let tool = name ?? ""
        guard let name, !name.isEmpty else {
            return Decision(.deny, rule: "invalid_call", message: "Tool call has no tool name", tool: tool, revision: policy.revision)
        }
        let args: [String: JSONValue]
        switch arguments {
        case nil: args = [:]
        case .object(let members)?: args = members
        case let other?:
            return Decision(
                .deny, rule: "invalid_call", message: "Tool call arguments must be a JSON object, got \(other.typeName)",
                tool: name, revision: policy.revision)
        }
        return await evaluate(policy, name: name, args: args, identity: identity, approved: false)
    }

    /// Finishes a call that needed approval. Refused: denied. Approved: evaluated again against the policy in force
    /// now (it may have changed), skipping only the approval step, so limits are still counted.
    public func resolveApproval(_ pending: PendingApproval, approved: Bool) async -> Decision {
        let policy = self.policy
        guard approved else {
            return Decision(
                .deny, rule: pending.rule, message: "Approval for tool \(quoted(pending.tool)) was refused",
                tool: pending.tool, revision: policy.revision)
        }
        return await evaluate(policy, name: pending.tool, args: pending.arguments, identity: pending.identity, approved: true)
    }

    /// The current counters of every limit that applies to `tool` for `identity` (for `explain` and dashboards).
    /// Spend counters whose amount cannot be read still report their value.
    public func counters(tool: String, identity: CallIdentity = CallIdentity()) async throws(PolicyStoreError) -> [CounterReading] {
        let policy = self.policy
        let limits = (policy.tools[tool]?.limits ?? []) + policy.allToolsLimits
        let now = clock.nowMilliseconds()
        let keys = limits.map { key(for: $0, identity: identity, now: now) }
        let values = try await store.values(keys)
        return zip(limits, zip(keys, values)).map { limit, pair in
            CounterReading(
                key: pair.0, rule: limit.rule, value: pair.1, max: limit.max, window: limit.window,
                windowEndMs: pair.0.windowStartMs + limit.window.milliseconds)
        }
    }

    /// `tools/list` filtering with the policy in force (see `Policy.filterToolList`).
    public func filterToolList(_ tools: [JSONValue]) -> [JSONValue] { policy.filterToolList(tools) }

    // MARK: - The pipeline

    /// hide → explicit deny → default deny → deny_if → require → approval → limits → allow.
    private func evaluate(
        _ policy: Policy, name: String, args: [String: JSONValue], identity: CallIdentity, approved: Bool
    ) async -> Decision {
        let revision = policy.revision
        func deny(_ rule: String, _ message: String) -> Decision {
            Decision(.deny, rule: rule, message: message, tool: name, revision: revision)
        }

        if policy.hidesEverything || policy.hidden.contains(name) {
            return deny("hide", "Tool \(quoted(name)) is hidden by policy")
        }
        let rule = policy.tools[name]
        if rule == nil {
            // An imitation of a name the policy mentions never falls through to `default: allow`.
            let folded = NameFolding.fold(name)
            if policy.lookalikeTarget(of: name, folded: folded) != nil {
                return deny("lookalike", "Tool \(quoted(name)) is denied by policy: its name imitates a tool the policy names")
            }
            if folded.isEmpty {
                return deny("invalid_call", "Tool name \(quoted(name)) has no visible characters")
            }
        }
        if let rule, rule.action == .deny {
            return deny(rule.actionRule, rule.reason ?? "Tool \(quoted(name)) is denied by policy")
        }
        guard let rule else {
            if policy.defaultEffect == .deny {
                return deny("default_deny", "Tool \(quoted(name)) is not permitted by policy")
            }
            return await limitsThenAllow(policy, name: name, rule: nil, args: args, identity: identity)
        }

        for denyRule in rule.denyIf {
            var undecidable: [String] = []
            var matched = true
            for condition in denyRule.conditions {
                switch condition.evaluate(args) {
                case .holds: continue
                case .fails: matched = false
                case .undecidable(let why): undecidable.append(why)
                }
                if !matched { break }
            }
            if matched {
                let base = denyRule.message ?? "Tool \(quoted(name)) is denied by policy rule \(denyRule.rule)"
                let detail = undecidable.isEmpty ? "" : " (\(undecidable.joined(separator: "; ")), so the rule cannot be checked)"
                return deny(denyRule.rule, base + detail)
            }
        }
        for (index, condition) in rule.require.enumerated() {
            switch condition.evaluate(args) {
            case .holds: continue
            case .fails:
                return deny("tools.\(name).require[\(index)]", "Required condition not met: \(condition.summary)")
            case .undecidable(let why):
                return deny("tools.\(name).require[\(index)]", "Required condition not met: \(condition.summary) (\(why))")
            }
        }
        if rule.action == .requireApproval && !approved {
            let ruleID = rule.actionRule
            let message = rule.reason ?? "Tool \(quoted(name)) requires approval"
            let pending = PendingApproval(
                tool: name, arguments: args, identity: identity, rule: ruleID, message: message, revision: revision)
            return Decision(
                .approvalRequired, rule: ruleID, message: message, tool: name, revision: revision, pendingApproval: pending)
        }
        return await limitsThenAllow(policy, name: name, rule: rule, args: args, identity: identity)
    }

    private func limitsThenAllow(
        _ policy: Policy, name: String, rule: ToolRule?, args: [String: JSONValue], identity: CallIdentity
    ) async -> Decision {
        let revision = policy.revision
        let allowRule = rule?.allowRule ?? "default_allow"
        let toolLimits = rule?.limits ?? []
        let allTools = policy.allToolsLimits
        guard !toolLimits.isEmpty || !allTools.isEmpty else {
            return Decision(.allow, rule: allowRule, message: "Allowed by policy", tool: name, revision: revision)
        }

        let now = clock.nowMilliseconds()
        // Arrays are copy-on-write: only concatenate when both lists are non-empty.
        let limits = allTools.isEmpty ? toolLimits : toolLimits.isEmpty ? allTools : toolLimits + allTools
        var requests: [CounterRequest] = []
        requests.reserveCapacity(limits.count)
        for limit in limits {
            let amount: Int
            switch limit.increment {
            case .fixed(let fixed): amount = fixed
            case .fromArgument(let path):
                switch Self.spendAmount(path.resolve(in: args)) {
                case .success(let value): amount = value
                case .failure(let problem):
                    return Decision(
                        .deny, rule: limit.rule, message: "Spend amount \(path) \(problem.message); call denied",
                        tool: name, revision: revision)
                }
            }
            let key = key(for: limit, identity: identity, now: now)
            requests.append(
                CounterRequest(
                    key: key, amount: amount, max: limit.max, expiresAtMs: key.windowStartMs + limit.window.milliseconds))
        }

        let outcome: ReserveOutcome
        do {
            outcome = try await store.reserve(requests, nowMs: now)
        } catch {
            switch storeFailure {
            case .deny:
                return Decision(
                    .deny, rule: "policy_store", message: "policy store unavailable, call denied: \(error.message)",
                    tool: name, revision: revision)
            case .allowUncounted:
                return Decision(
                    .allow, rule: "policy_store_fail_open",
                    message: "Allowed without counting: policy store unavailable (\(error.message)); --store-fail-open",
                    tool: name, revision: revision)
            }
        }
        switch outcome {
        case .reserved(let after):
            let readings = Self.readings(limits, requests, after)
            return Decision(
                .allow, rule: allowRule, message: "Allowed by policy", tool: name, revision: revision, counters: readings,
                reservation: Reservation(requests: requests, store: store))
        case .refused(let current):
            var first: Int?
            var retryAfter: Int64 = 0
            for index in requests.indices where current[index] > requests[index].max - requests[index].amount {
                if first == nil { first = index }
                retryAfter = Swift.max(retryAfter, requests[index].expiresAtMs - now)
            }
            let culprit = first ?? 0
            return Decision(
                .deny, rule: limits[culprit].rule, message: limits[culprit].message, tool: name, revision: revision,
                retryAfterMs: Swift.max(1, retryAfter), counters: Self.readings(limits, requests, current))
        }
    }

    private func key(for limit: Limit, identity: CallIdentity, now: Int64) -> CounterKey {
        let scopeID: String
        switch limit.scope {
        case .grant: scopeID = identity.grant ?? ""
        case .session: scopeID = identity.session ?? ""
        case .global: scopeID = ""
        }
        return CounterKey(
            scope: limit.scope, scopeID: scopeID, tool: limit.toolKey, counter: limit.counter,
            windowStartMs: limit.window.start(containing: now))
    }

    private static func readings(_ limits: [Limit], _ requests: [CounterRequest], _ values: [Int]) -> [CounterReading] {
        zip(limits, zip(requests, values)).map { limit, pair in
            CounterReading(
                key: pair.0.key, rule: limit.rule, value: pair.1, max: limit.max, window: limit.window,
                windowEndMs: pair.0.expiresAtMs)
        }
    }

    /// A spend amount must be a non-negative whole number; anything else denies the call.
    static func spendAmount(_ value: JSONValue?) -> Result<Int, PathError> {
        switch value {
        case nil: return .failure(PathError(message: "is missing"))
        case .int(let amount)?:
            return amount >= 0 ? .success(amount) : .failure(PathError(message: "is negative (\(amount))"))
        case .double(let amount)?:
            guard amount.isFinite, amount.rounded() == amount else {
                return .failure(PathError(message: "is not a whole number (\(amount))"))
            }
            guard amount >= 0 else { return .failure(PathError(message: "is negative (\(amount))")) }
            guard amount < 9.0e15 else { return .failure(PathError(message: "is too large")) }
            return .success(Int(amount))
        case let other?:
            return .failure(PathError(message: "is not a number (got \(other.typeName))"))
        }
    }
}
