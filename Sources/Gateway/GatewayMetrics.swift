import MCPCore
import Metrics
import Policy
import Synchronization

/// What a gateway reports through swift-metrics (a no-op until the executable bootstraps a backend, Prometheus for
/// `corral proxy --metrics`). Names follow Prometheus conventions: `_total` counters, `_seconds` timers.
///
/// Metrics are made once and reused, as swift-metrics intends: making one per event asked the factory (a lock, and
/// a registry lookup under Prometheus) and allocated a handle, twice on every decided call. A handle keeps the
/// backend it was made with, so a process bootstraps its backend before its first decision (the executable does so
/// at start).
enum GatewayMetrics {
    private struct DecisionKey: Hashable {
        let tool: String
        let outcome: String
        let rule: String
    }

    /// Bounded by the policy: tools it names (or `(unlisted)`), three outcomes, its rules.
    private static let decisions = Mutex<[DecisionKey: Counter]>([:])
    private static let decisionSeconds = Timer(label: "corral_decision_seconds")
    private static let upstreamResults = Timer(label: "corral_upstream_seconds", dimensions: [("outcome", "result")])
    private static let upstreamErrors = Timer(label: "corral_upstream_seconds", dimensions: [("outcome", "error")])

    /// One decision: `tool` is the policy's name for it, or `(unlisted)` for a name the policy does not mention, so
    /// that a client inventing tool names cannot grow the metrics without bound.
    static func decided(_ decision: Decision, policy: Policy, microseconds: Int) {
        let tool = policy.tools[decision.tool] != nil || policy.hidden.contains(decision.tool) ? decision.tool : "(unlisted)"
        let key = DecisionKey(tool: tool, outcome: decision.outcome.rawValue, rule: decision.rule)
        let counter = decisions.withLock { counters in
            if let counter = counters[key] { return counter }
            let counter = Counter(
                label: "corral_decisions_total", dimensions: [("tool", key.tool), ("decision", key.outcome), ("rule", key.rule)])
            counters[key] = counter
            return counter
        }
        counter.increment()
        decisionSeconds.recordMicroseconds(microseconds)
    }

    /// A notification or a client's answer that the upstream server could not be sent (no answer can say so).
    static func upstreamMessageLost() { upstreamLostMessages.increment() }
    private static let upstreamLostMessages = Counter(label: "corral_upstream_lost_messages_total")

    /// An audit entry that could not be kept (its call was refused, unless `--dry-run`).
    static func auditFailed() { auditFailures.increment() }
    private static let auditFailures = Counter(label: "corral_audit_failures_total")

    /// A `tasks/*` request passed on or refused. A method the Tasks extension does not define counts as `(other)`:
    /// the client names it, and must not be able to grow the metrics without bound.
    static func taskRequest(method: String, forwarded: Bool) {
        let method = TasksExtension.methods.contains(method) ? method : "(other)"
        Counter(
            label: "corral_task_requests_total", dimensions: [("method", method), ("decision", forwarded ? "forwarded" : "refused")]
        ).increment()
    }

    /// From forwarding a `tools/call` to the server's answer.
    static func upstreamAnswered(after duration: Duration, error: Bool) {
        (error ? upstreamErrors : upstreamResults)
            .recordNanoseconds(duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
    }
}

/// A policy store that reports each operation's latency (`corral_store_seconds`) and failures
/// (`corral_store_errors_total`), by operation.
public struct MeteredPolicyStore: PolicyStore {
    public let base: any PolicyStore

    public init(_ base: any PolicyStore) { self.base = base }

    private func measured<T>(_ operation: String, _ body: () async throws(PolicyStoreError) -> T) async throws(PolicyStoreError) -> T {
        let start = ContinuousClock.now
        do {
            let value = try await body()
            Self.record(operation, since: start)
            return value
        } catch {
            Self.record(operation, since: start)
            Counter(label: "corral_store_errors_total", dimensions: [("operation", operation)]).increment()
            throw error
        }
    }

    private static func record(_ operation: String, since start: ContinuousClock.Instant) {
        let elapsed = ContinuousClock.now - start
        Timer(label: "corral_store_seconds", dimensions: [("operation", operation)])
            .recordNanoseconds(elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
    }

    public func reserve(_ requests: [CounterRequest], nowMs: Int64) async throws(PolicyStoreError) -> ReserveOutcome {
        try await measured("reserve") { () async throws(PolicyStoreError) in try await base.reserve(requests, nowMs: nowMs) }
    }

    public func release(_ requests: [CounterRequest]) async throws(PolicyStoreError) {
        try await measured("release") { () async throws(PolicyStoreError) in try await base.release(requests) }
    }

    public func values(_ keys: [CounterKey]) async throws(PolicyStoreError) -> [Int] {
        try await measured("values") { () async throws(PolicyStoreError) in try await base.values(keys) }
    }

    public func claimOnce(_ token: String, expiresAtMs: Int64, nowMs: Int64) async throws(PolicyStoreError) -> Bool {
        try await measured("claim") { () async throws(PolicyStoreError) in
            try await base.claimOnce(token, expiresAtMs: expiresAtMs, nowMs: nowMs)
        }
    }

    public func recordOwner(of handle: String, grant: String, expiresAtMs: Int64, nowMs: Int64) async throws(PolicyStoreError) {
        try await measured("record_owner") { () async throws(PolicyStoreError) in
            try await base.recordOwner(of: handle, grant: grant, expiresAtMs: expiresAtMs, nowMs: nowMs)
        }
    }

    public func owner(of handle: String, nowMs: Int64) async throws(PolicyStoreError) -> String? {
        try await measured("owner") { () async throws(PolicyStoreError) in try await base.owner(of: handle, nowMs: nowMs) }
    }
}
