import CorralJSON
import Foundation
import GRDB
import SQLiteWAL
import Synchronization
import Testing

@testable import Policy

/// Every store, so every limit test runs against each: PostgreSQL when `CORRAL_TEST_POSTGRES_URL` names a
/// (throwaway) server, as `scripts/test` does.
enum StoreKind: String, Sendable, CaseIterable, CustomTestStringConvertible {
    case memory, sqlite, postgres
    var testDescription: String { rawValue }

    static var allCases: [StoreKind] { PostgresTestServer.location == nil ? [.memory, .sqlite] : [.memory, .sqlite, .postgres] }

    func make(purgeInterval: Int? = nil) async throws -> (any PolicyStore, cleanup: () -> Void) {
        switch self {
        case .memory: return (MemoryPolicyStore(purgeInterval: purgeInterval ?? 4096), {})
        case .sqlite:
            let path = temporarySQLitePath()
            return (try SQLitePolicyStore(path: path, purgeInterval: purgeInterval ?? 1024), { removeSQLite(path) })
        case .postgres:
            return (try await PostgresTestServer.freshStore(purgeInterval: purgeInterval ?? 1024), {})
        }
    }
}

/// A store that always fails, to prove the evaluator fails closed.
struct BrokenStore: PolicyStore {
    func reserve(_ requests: [CounterRequest], nowMs: Int64) throws(PolicyStoreError) -> ReserveOutcome {
        throw PolicyStoreError("disk I/O error")
    }
    func release(_ requests: [CounterRequest]) throws(PolicyStoreError) { throw PolicyStoreError("disk I/O error") }
    func values(_ keys: [CounterKey]) throws(PolicyStoreError) -> [Int] { throw PolicyStoreError("disk I/O error") }
    func claimOnce(_ token: String, expiresAtMs: Int64, nowMs: Int64) throws(PolicyStoreError) -> Bool {
        throw PolicyStoreError("disk I/O error")
    }
    func recordOwner(of handle: String, grant: String, expiresAtMs: Int64, nowMs: Int64) throws(PolicyStoreError) {
        throw PolicyStoreError("disk I/O error")
    }
    func owner(of handle: String, nowMs: Int64) throws(PolicyStoreError) -> String? { throw PolicyStoreError("disk I/O error") }
}

@Suite struct LimitTests {
    @Test(arguments: StoreKind.allCases)
    func scopes(kind: StoreKind) async throws {
        let (store, cleanup) = try await kind.make()
        defer { cleanup() }
        let engine = try evaluator(
            """
            {"version": "1", "default": "deny", "tools": {
               "g": {"limits": [{"counter": "g_rate", "window": "minute", "max": 2, "scope": "grant"}]},
               "s": {"limits": [{"counter": "s_rate", "window": "minute", "max": 2, "scope": "session"}]},
               "x": {"limits": [{"counter": "x_rate", "window": "minute", "max": 2, "scope": "global"}]}}}
            """, store: store)
        let a1 = CallIdentity(grant: "A", session: "1"), a2 = CallIdentity(grant: "A", session: "2")
        let b1 = CallIdentity(grant: "B", session: "1"), b2 = CallIdentity(grant: "B", session: "2")
        func allowed(_ tool: String, _ who: CallIdentity) async -> Bool { await engine.decide(tool: tool, arguments: [:], identity: who).isAllowed }

        // grant: A's two sessions share; B has its own.
        #expect(await [allowed("g", a1), allowed("g", a2), allowed("g", a1), allowed("g", b1), allowed("g", b2), allowed("g", b1)]
            == [true, true, false, true, true, false])
        // session: session 1 is shared by A and B; session 2 separate.
        #expect(await [allowed("s", a1), allowed("s", b1), allowed("s", a1), allowed("s", a2), allowed("s", b2), allowed("s", a2)]
            == [true, true, false, true, true, false])
        // global: everybody shares.
        #expect(await [allowed("x", a1), allowed("x", b2), allowed("x", a2)] == [true, true, false])

        let reading = try #require(await engine.decide(tool: "g", arguments: [:], identity: a1).counters.first)
        #expect(reading.key == CounterKey(scope: .grant, scopeID: "A", tool: "g", counter: "g_rate", windowStartMs: epoch2026))
        let global = try #require(await engine.decide(tool: "x", arguments: [:], identity: a1).counters.first)
        #expect(global.key.scopeID == "")
        #expect(try await engine.counters(tool: "s", identity: b2).map(\.value) == [2])
    }

    struct WindowCase: Sendable, CustomTestStringConvertible {
        let window: String
        let seconds: Int64
        var testDescription: String { window }
    }

    /// Windows are fixed and aligned: the last millisecond of a window still refuses (retry_after_ms = 1), the first
    /// of the next one allows again.
    @Test(arguments: [
        WindowCase(window: #""second""#, seconds: 1), WindowCase(window: #""minute""#, seconds: 60),
        WindowCase(window: #""hour""#, seconds: 3600), WindowCase(window: #""day""#, seconds: 86400),
        WindowCase(window: "90", seconds: 90),
    ], StoreKind.allCases)
    func windowBoundaries(_ c: WindowCase, kind: StoreKind) async throws {
        let (store, cleanup) = try await kind.make()
        defer { cleanup() }
        let length = c.seconds * 1000
        // Start in the middle of a window, away from any boundary of the others.
        let windowStart = (epoch2026 / length + 1) * length
        let clock = ManualClock(milliseconds: windowStart + length / 2)
        let engine = try evaluator(
            toolPolicy("t", #"{"limits": [{"counter": "c", "window": \#(c.window), "max": 2, "scope": "grant"}]}"#),
            store: store, clock: clock)
        #expect(await engine.decide(tool: "t", arguments: [:]).isAllowed)
        #expect(await engine.decide(tool: "t", arguments: [:]).isAllowed)
        let refused = await engine.decide(tool: "t", arguments: [:])
        #expect(refused.outcome == .deny)
        #expect(refused.rule == "tools.t.limits[0]")
        #expect(refused.retryAfterMs == length - length / 2)
        let word = c.seconds == 90 ? "90 seconds" : c.window.replacingOccurrences(of: "\"", with: "")
        #expect(refused.message == "Rate limit of 2 per \(word) reached. Try again later.")

        clock.set(milliseconds: windowStart + length - 1)
        #expect(await engine.decide(tool: "t", arguments: [:]).retryAfterMs == 1)
        clock.set(milliseconds: windowStart + length)
        let next = await engine.decide(tool: "t", arguments: [:])
        #expect(next.isAllowed)
        #expect(next.counters.first?.key.windowStartMs == windowStart + length)
        #expect(next.counters.first?.value == 1)
        #expect(next.counters.first?.windowEndMs == windowStart + 2 * length)
    }

    @Test func windowsAlignToUTC() async {
        let minute = CounterWindow(word: "minute")
        let day = CounterWindow(word: "day")
        // 2026-01-01T13:45:30.250Z
        let now = epoch2026 + ((13 * 60 + 45) * 60 + 30) * 1000 + 250
        #expect(minute?.start(containing: now) == epoch2026 + (13 * 60 + 45) * 60_000)
        #expect(day?.start(containing: now) == epoch2026)
        #expect(CounterWindow(seconds: 60)?.start(containing: -1) == -60_000)
    }

    /// all_tools and tool limits are reserved together: a refusal by one leaves the other untouched.
    @Test(arguments: StoreKind.allCases)
    func allOrNothing(kind: StoreKind) async throws {
        let (store, cleanup) = try await kind.make()
        defer { cleanup() }
        let engine = try evaluator(
            """
            {"version": "1", "default": "allow",
             "all_tools": {"limits": [{"counter": "any", "window": "minute", "max": 3, "scope": "grant"}]},
             "tools": {"t": {"limits": [{"counter": "t_rate", "window": "minute", "max": 1, "scope": "grant"}]}}}
            """, store: store)
        let first = await engine.decide(tool: "t", arguments: [:])
        #expect(first.isAllowed)
        #expect(first.counters.map(\.value) == [1, 1])
        #expect(first.counters.map(\.key.tool) == ["t", "*"])
        let second = await engine.decide(tool: "t", arguments: [:])
        #expect(second.rule == "tools.t.limits[0]")
        #expect(second.counters.map(\.value) == [1, 1])  // the all_tools counter was not charged
        #expect(await engine.decide(tool: "other", arguments: [:]).isAllowed)
        #expect(await engine.decide(tool: "other", arguments: [:]).isAllowed)
        let fourth = await engine.decide(tool: "other", arguments: [:])
        #expect(fourth.rule == "all_tools.limits[0]")
        #expect(try await engine.counters(tool: "t").map(\.value) == [1, 3])
    }

    @Test(arguments: StoreKind.allCases)
    func rollback(kind: StoreKind) async throws {
        let (store, cleanup) = try await kind.make()
        defer { cleanup() }
        let engine = try evaluator(
            toolPolicy("t", #"{"limits": [{"counter": "c", "window": "minute", "max": 2}, {"counter": "d", "window": "hour", "max": 5, "increment": 2}]}"#),
            store: store)
        let decision = await engine.decide(tool: "t", arguments: [:])
        #expect(decision.counters.map(\.value) == [1, 2])
        let reservation = try #require(decision.reservation)
        #expect(try await reservation.rollback())
        #expect(reservation.isRolledBack)
        #expect(try await engine.counters(tool: "t").map(\.value) == [0, 0])
        #expect(try await reservation.rollback() == false)  // only once
        #expect(try await engine.counters(tool: "t").map(\.value) == [0, 0])
        #expect(await engine.decide(tool: "t", arguments: [:]).isAllowed)
        #expect(await engine.decide(tool: "t", arguments: [:]).isAllowed)
        #expect(await engine.decide(tool: "t", arguments: [:]).rule == "tools.t.limits[0]")
    }

    struct SpendCase: Sendable, CustomTestStringConvertible {
        let amount: JSONValue?
        let allowed: Bool
        let fragment: String
        var testDescription: String { amount?.jsonString() ?? "missing" }
    }

    @Test(arguments: [
        SpendCase(amount: 3, allowed: true, fragment: ""),
        SpendCase(amount: 0, allowed: true, fragment: ""),
        SpendCase(amount: .double(4.0), allowed: true, fragment: ""),
        SpendCase(amount: 10, allowed: true, fragment: ""),
        SpendCase(amount: 11, allowed: false, fragment: "Rate limit of 10 per day"),
        SpendCase(amount: -1, allowed: false, fragment: "is negative"),
        SpendCase(amount: .double(-2.0), allowed: false, fragment: "is negative"),
        SpendCase(amount: .double(1.5), allowed: false, fragment: "is not a whole number"),
        SpendCase(amount: .double(.infinity), allowed: false, fragment: "is not a whole number"),
        SpendCase(amount: "5", allowed: false, fragment: "is not a number"),
        SpendCase(amount: true, allowed: false, fragment: "is not a number"),
        SpendCase(amount: .null, allowed: false, fragment: "is not a number"),
        SpendCase(amount: nil, allowed: false, fragment: "is missing"),
    ])
    func spendCounters(_ c: SpendCase) async throws {
        let engine = try evaluator(
            toolPolicy("refund", #"{"limits": [{"counter": "spend", "window": "day", "max": 10, "increment_from": "args.amount"}]}"#))
        let args: JSONValue = c.amount.map { ["amount": $0] } ?? [:]
        let decision = await engine.decide(tool: "refund", arguments: args)
        #expect(decision.isAllowed == c.allowed, "\(decision.message)")
        if !c.allowed {
            #expect(decision.rule == "tools.refund.limits[0]")
            #expect(decision.message.contains(c.fragment))
            #expect(try await engine.counters(tool: "refund").first?.value == 0)
        } else {
            #expect(decision.counters.first?.value == c.amount?.intValue)
        }
    }

    @Test func spendAccumulates() async throws {
        let engine = try evaluator(
            toolPolicy("refund", #"{"limits": [{"counter": "spend", "window": "day", "max": 10, "increment_from": "args.cost.amount"}]}"#))
        var outcomes: [Bool] = []
        for amount in [4, 5, 2, 1] {
            outcomes.append(await engine.decide(tool: "refund", arguments: ["cost": ["amount": .int(amount)]]).isAllowed)
        }
        #expect(outcomes == [true, true, false, true])
        #expect(try await engine.counters(tool: "refund").first?.value == 10)
    }

    @Test func storeErrorsFailClosed() async throws {
        let engine = try evaluator(toolPolicy("t", #"{"limits": [{"counter": "c", "window": "minute", "max": 5}]}"#), store: BrokenStore())
        let decision = await engine.decide(tool: "t", arguments: [:])
        #expect(decision.outcome == .deny)
        #expect(decision.rule == "policy_store")
        #expect(decision.message.contains("disk I/O error"))
        // A tool without limits does not touch the store.
        let free = try evaluator(toolPolicy("t", "{}"), store: BrokenStore())
        #expect(await free.decide(tool: "t", arguments: [:]).isAllowed)
    }

    @Test func unopenableSQLiteStoreThrows() async {
        #expect(throws: PolicyStoreError.self) { try SQLitePolicyStore(path: "/nonexistent-dir/counters.sqlite") }
    }

    /// Another process holds the write lock on a new file, still in rollback mode, while the store opens: turning
    /// the file to WAL gets SQLITE_BUSY without SQLite's busy handler, and the store waits for the lock all the same,
    /// within its busy timeout.
    @Test(arguments: [(hold: 0.4, patience: 10.0, opens: true), (hold: 2.0, patience: 0.2, opens: false)])
    func openingWaitsForAnotherWriterWithinTheBusyTimeout(hold: Double, patience: Double, opens: Bool) async throws {
        let path = temporarySQLitePath()
        defer { removeSQLite(path) }
        let holder = try DatabaseQueue(path: path)  // the default (rollback) journal, as a file another process made
        let locked = DispatchSemaphore(value: 0)
        let released = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            try? holder.writeWithoutTransaction { db in
                try db.inTransaction(.immediate) {
                    try db.execute(sql: "CREATE TABLE other_process (x)")
                    locked.signal()
                    Thread.sleep(forTimeInterval: hold)
                    return .commit
                }
            }
            released.signal()
        }
        locked.wait()
        let started = ContinuousClock.now
        if opens {
            let store = try SQLitePolicyStore(path: path, busyTimeout: patience)
            #expect(ContinuousClock.now - started >= .seconds(hold) * 0.5, "it opened before the lock was released")
            let request = CounterRequest(
                key: CounterKey(scope: .grant, scopeID: "g", tool: "t", counter: "c", windowStartMs: 0), amount: 1, max: 1,
                expiresAtMs: .max)
            #expect(try await store.reserve([request], nowMs: 0) == .reserved(valuesAfter: [1]))
        } else {
            let error = #expect(throws: PolicyStoreError.self) { try SQLitePolicyStore(path: path, busyTimeout: patience) }
            #expect(error?.message.contains("database is locked") == true, "\(error?.message ?? "")")
            #expect(ContinuousClock.now - started >= .seconds(patience), "it gave up before its busy timeout")
        }
        released.wait()
    }

    @Test func aSQLiteFileOfANewerSchemaIsRefused() async throws {
        let path = temporarySQLitePath()
        defer { removeSQLite(path) }
        _ = try SQLitePolicyStore(path: path)
        _ = try SQLitePolicyStore(path: path)  // a second open finds the schema in place
        try await DatabaseQueue(path: path).write { db in try db.execute(sql: "PRAGMA user_version = 99") }
        let error = #expect(throws: PolicyStoreError.self) { try SQLitePolicyStore(path: path) }
        #expect(error?.message.contains("schema is version 99, newer than this corral knows") == true, "\(error?.message ?? "")")
    }

    /// The store's commits leave checkpoints to its checkpointer (a reservation never pays one's fsyncs): with them
    /// held back the log grows past SQLite's threshold, and released, the checkpointer runs.
    @Test func sqliteCommitsLeaveCheckpointsToTheCheckpointer() async throws {
        let path = temporarySQLitePath()
        defer { removeSQLite(path) }
        let store = try SQLitePolicyStore(path: path)
        let threshold = Int(WALCheckpointer.thresholdPages) * 4096
        func walSize() -> Int {
            var status = stat()
            return stat(path + "-wal", &status) == 0 ? Int(status.st_size) : 0
        }
        store.checkpointer.holdCheckpoints(true)
        var claims = 0
        while walSize() < threshold * 3 / 2 && claims < 100_000 {
            _ = try await store.claimOnce("token-\(claims)", expiresAtMs: Int64.max, nowMs: 0)
            claims += 1
        }
        #expect(walSize() >= threshold * 3 / 2, "a commit checkpointed by itself")
        store.checkpointer.holdCheckpoints(false)
        _ = try await store.claimOnce("token-\(claims)", expiresAtMs: Int64.max, nowMs: 0)
        let deadline = ContinuousClock.now + .seconds(10)
        while store.checkpointer.checkpointCount == 0 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(1))
        }
        #expect(store.checkpointer.checkpointCount >= 1)
    }

    @Test func sqliteCountersSurviveReopen() async throws {
        let path = temporarySQLitePath()
        defer { removeSQLite(path) }
        let text = toolPolicy("t", #"{"limits": [{"counter": "c", "window": "minute", "max": 3}]}"#)
        do {
            let engine = try evaluator(text, store: try SQLitePolicyStore(path: path))
            #expect(await engine.decide(tool: "t", arguments: [:]).isAllowed)
            #expect(await engine.decide(tool: "t", arguments: [:]).isAllowed)
        }
        let reopened = try evaluator(text, store: try SQLitePolicyStore(path: path))
        #expect(await reopened.decide(tool: "t", arguments: [:]).counters.first?.value == 3)
        #expect(await reopened.decide(tool: "t", arguments: [:]).outcome == .deny)
    }

    @Test(arguments: StoreKind.allCases)
    func expiredWindowsArePurged(kind: StoreKind) async throws {
        let (store, cleanup) = try await kind.make(purgeInterval: 3)
        defer { cleanup() }
        let memory = store as? MemoryPolicyStore
        let clock = ManualClock(milliseconds: epoch2026)
        let engine = try evaluator(toolPolicy("t", #"{"limits": [{"counter": "c", "window": "second", "max": 5}]}"#), store: store, clock: clock)
        for _ in 0..<3 {
            #expect(await engine.decide(tool: "t", arguments: [:]).isAllowed)
            clock.advance(milliseconds: 1000)
        }
        if let memory { #expect(memory.count <= 2) }
        if kind == .postgres {
            // Pruning runs beside the call there: wait for it.
            let rows = try await PostgresTestServer.poll { try await PostgresTestServer.counterRows(store) <= 2 }
            #expect(rows, "expired windows were not deleted")
        }
        // Old windows are gone, the current one counts from zero.
        let old = CounterKey(scope: .grant, scopeID: "", tool: "t", counter: "c", windowStartMs: epoch2026)
        #expect(try await store.values([old]) == [0])
    }
}
