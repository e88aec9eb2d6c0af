import Synchronization

/// Identifies one counter in one window: (scope, scope id, tool or `*`, counter name, window start).
public struct CounterKey: Sendable, Hashable, CustomStringConvertible {
    public let scope: CounterScope
    /// The grant or session id; empty for `global` (and for a call without that identity: such calls share one
    /// anonymous counter, which can only make the limit stricter).
    public let scopeID: String
    /// The tool name, or `*` for `all_tools` limits.
    public let tool: String
    public let counter: String
    public let windowStartMs: Int64

    public init(scope: CounterScope, scopeID: String, tool: String, counter: String, windowStartMs: Int64) {
        self.scope = scope
        self.scopeID = scopeID
        self.tool = tool
        self.counter = counter
        self.windowStartMs = windowStartMs
    }

    public var description: String {
        "\(counter)[\(scope.rawValue)=\(quoted(scopeID)), tool=\(quoted(tool)), window_start_ms=\(windowStartMs)]"
    }
}

/// Asks to add `amount` to `key` without passing `max`.
public struct CounterRequest: Sendable, Hashable {
    public let key: CounterKey
    public let amount: Int
    public let max: Int
    /// When the window ends; the store may forget the counter afterwards.
    public let expiresAtMs: Int64

    public init(key: CounterKey, amount: Int, max: Int, expiresAtMs: Int64) {
        self.key = key
        self.amount = amount
        self.max = max
        self.expiresAtMs = expiresAtMs
    }
}

public enum ReserveOutcome: Sendable, Hashable {
    /// Every request was applied; the values after, in request order.
    case reserved(valuesAfter: [Int])
    /// Nothing was applied, because at least one request would pass its max; the current values, in request order.
    case refused(current: [Int])
}

/// The store could not be read or written; the evaluator denies the call (fail closed).
public struct PolicyStoreError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// What a gateway keeps between calls: rate-limit counters, single-use records (a redeemed approval), and which
/// grant owns each task handle. One store may serve several processes (SQLite on one machine, PostgreSQL across
/// machines): then every instance sees the same counters and records, so any of them can answer any request.
///
/// Implementations must make `reserve` atomic: all requests applied or none, with no other reservation
/// interleaved (also across processes, for a shared store); and `claimOnce` must succeed once per token.
public protocol PolicyStore: Sendable {
    func reserve(_ requests: [CounterRequest], nowMs: Int64) async throws(PolicyStoreError) -> ReserveOutcome
    /// Takes back what a reservation added (never below zero).
    func release(_ requests: [CounterRequest]) async throws(PolicyStoreError)
    /// Current values (0 for counters never touched), in key order.
    func values(_ keys: [CounterKey]) async throws(PolicyStoreError) -> [Int]
    /// True the first time `token` is claimed; false ever after, until `expiresAtMs` has passed (then it may be
    /// forgotten: what it guards must have expired with it).
    func claimOnce(_ token: String, expiresAtMs: Int64, nowMs: Int64) async throws(PolicyStoreError) -> Bool
    /// Records that `grant` owns task `handle` (the first owner stays).
    func recordOwner(of handle: String, grant: String, expiresAtMs: Int64, nowMs: Int64) async throws(PolicyStoreError)
    /// The grant that owns `handle`, if it is known and not expired.
    func owner(of handle: String, nowMs: Int64) async throws(PolicyStoreError) -> String?
}

/// Counters and records in process memory, behind one mutex. The default for in-process use and a single proxy.
public final class MemoryPolicyStore: PolicyStore {
    private struct Entry {
        var value: Int
        let expiresAtMs: Int64
    }

    private struct State {
        var counters: [CounterKey: Entry] = [:]
        var claimed: [String: Int64] = [:]
        var owners: [String: (grant: String, expiresAtMs: Int64)] = [:]
        var writesSincePurge = 0

        /// Expired windows, records and owners are dropped every `interval` writes, so memory stays bounded.
        mutating func purgeIfDue(interval: Int, nowMs: Int64) {
            writesSincePurge += 1
            guard writesSincePurge >= interval else { return }
            writesSincePurge = 0
            counters = counters.filter { $0.value.expiresAtMs > nowMs }
            claimed = claimed.filter { $0.value > nowMs }
            owners = owners.filter { $0.value.expiresAtMs > nowMs }
        }
    }

    private let state = Mutex(State())
    private let purgeInterval: Int

    public init(purgeInterval: Int = 4096) {
        self.purgeInterval = purgeInterval
    }

    public func reserve(_ requests: [CounterRequest], nowMs: Int64) throws(PolicyStoreError) -> ReserveOutcome {
        state.withLock { state in
            state.purgeIfDue(interval: purgeInterval, nowMs: nowMs)
            // Check everything first: all or nothing. (Keys within one reservation are distinct: counter names are
            // unique per policy.)
            var current: [Int] = []
            current.reserveCapacity(requests.count)
            var fits = true
            for request in requests {
                let value = state.counters[request.key]?.value ?? 0
                current.append(value)
                if value > request.max - request.amount { fits = false }
            }
            guard fits else { return .refused(current: current) }
            var after = current
            for index in requests.indices {
                let request = requests[index]
                after[index] += request.amount
                state.counters[request.key] = Entry(value: after[index], expiresAtMs: request.expiresAtMs)
            }
            return .reserved(valuesAfter: after)
        }
    }

    public func release(_ requests: [CounterRequest]) throws(PolicyStoreError) {
        state.withLock { state in
            for request in requests {
                guard let entry = state.counters[request.key] else { continue }
                state.counters[request.key] = Entry(
                    value: Swift.max(0, entry.value - request.amount), expiresAtMs: entry.expiresAtMs)
            }
        }
    }

    public func values(_ keys: [CounterKey]) throws(PolicyStoreError) -> [Int] {
        state.withLock { state in keys.map { state.counters[$0]?.value ?? 0 } }
    }

    public func claimOnce(_ token: String, expiresAtMs: Int64, nowMs: Int64) throws(PolicyStoreError) -> Bool {
        state.withLock { state in
            state.purgeIfDue(interval: purgeInterval, nowMs: nowMs)
            if let expiry = state.claimed[token], expiry > nowMs { return false }
            state.claimed[token] = expiresAtMs
            return true
        }
    }

    public func recordOwner(of handle: String, grant: String, expiresAtMs: Int64, nowMs: Int64) throws(PolicyStoreError) {
        state.withLock { state in
            state.purgeIfDue(interval: purgeInterval, nowMs: nowMs)
            if state.owners[handle] == nil { state.owners[handle] = (grant, expiresAtMs) }
        }
    }

    public func owner(of handle: String, nowMs: Int64) throws(PolicyStoreError) -> String? {
        state.withLock { state in
            guard let owner = state.owners[handle], owner.expiresAtMs > nowMs else { return nil }
            return owner.grant
        }
    }

    /// How many counters are held (for tests of the purge).
    public var count: Int { state.withLock { $0.counters.count } }
}
