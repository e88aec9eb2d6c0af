import CorralJSON
import Foundation
import Synchronization
import Testing

@testable import Policy

/// Both stores, so every limit test runs against each.
enum StoreKind: String, Sendable, CaseIterable, CustomTestStringConvertible {
    case memory, sqlite
    var testDescription: String { rawValue }

    func make() throws -> (any CounterStore, cleanup: () -> Void) {
        switch self {
        case .memory: return (MemoryCounterStore(), {})
        case .sqlite:
            let path = temporarySQLitePath()
            return (try SQLiteCounterStore(path: path), { removeSQLite(path) })
        }
    }
}

/// A store that always fails, to prove the evaluator fails closed.
struct BrokenStore: CounterStore {
    func reserve(_ requests: [CounterRequest], nowMs: Int64) throws(CounterStoreError) -> ReserveOutcome {
        throw CounterStoreError("disk I/O error")
    }
    func release(_ requests: [CounterRequest]) throws(CounterStoreError) { throw CounterStoreError("disk I/O error") }
    func values(_ keys: [CounterKey]) throws(CounterStoreError) -> [Int] { throw CounterStoreError("disk I/O error") }
}

@Suite struct LimitTests {
    @Test(arguments: StoreKind.allCases)
    func scopes(kind: StoreKind) throws {
        let (store, cleanup) = try kind.make()
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
        func allowed(_ tool: String, _ who: CallIdentity) -> Bool { engine.decide(tool: tool, arguments: [:], identity: who).isAllowed }

        // grant: A's two sessions share; B has its own.
        #expect([allowed("g", a1), allowed("g", a2), allowed("g", a1), allowed("g", b1), allowed("g", b2), allowed("g", b1)]
            == [true, true, false, true, true, false])
        // session: session 1 is shared by A and B; session 2 separate.
        #expect([allowed("s", a1), allowed("s", b1), allowed("s", a1), allowed("s", a2), allowed("s", b2), allowed("s", a2)]
            == [true, true, false, true, true, false])
        // global: everybody shares.
        #expect([allowed("x", a1), allowed("x", b2), allowed("x", a2)] == [true, true, false])

        let reading = try #require(engine.decide(tool: "g", arguments: [:], identity: a1).counters.first)
        #expect(reading.key == CounterKey(scope: .grant, scopeID: "A", tool: "g", counter: "g_rate", windowStartMs: epoch2026))
        let global = try #require(engine.decide(tool: "x", arguments: [:], identity: a1).counters.first)
        #expect(global.key.scopeID == "")
        #expect(try engine.counters(tool: "s", identity: b2).map(\.value) == [2])
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
    func windowBoundaries(_ c: WindowCase, kind: StoreKind) throws {
        let (store, cleanup) = try kind.make()
        defer { cleanup() }
        let length = c.seconds * 1000
        // Start in the middle of a window, away from any boundary of the others.
        let windowStart = (epoch2026 / length + 1) * length
        let clock = ManualClock(milliseconds: windowStart + length / 2)
        let engine = try evaluator(
            toolPolicy("t", #"{"limits": [{"counter": "c", "window": \#(c.window), "max": 2, "scope": "grant"}]}"#),
            store: store, clock: clock)
        #expect(engine.decide(tool: "t", arguments: [:]).isAllowed)
        #expect(engine.decide(tool: "t", arguments: [:]).isAllowed)
        let refused = engine.decide(tool: "t", arguments: [:])
        #expect(refused.outcome == .deny)
        #expect(refused.rule == "tools.t.limits[0]")
        #expect(refused.retryAfterMs == length - length / 2)
        let word = c.seconds == 90 ? "90 seconds" : c.window.replacingOccurrences(of: "\"", with: "")
        #expect(refused.message == "Rate limit of 2 per \(word) reached. Try again later.")

        clock.set(milliseconds: windowStart + length - 1)
        #expect(engine.decide(tool: "t", arguments: [:]).retryAfterMs == 1)
        clock.set(milliseconds: windowStart + length)
        let next = engine.decide(tool: "t", arguments: [:])
        #expect(next.isAllowed)
        #expect(next.counters.first?.key.windowStartMs == windowStart + length)
        #expect(next.counters.first?.value == 1)
        #expect(next.counters.first?.windowEndMs == windowStart + 2 * length)
    }

    @Test func windowsAlignToUTC() {
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
    func allOrNothing(kind: StoreKind) throws {
        let (store, cleanup) = try kind.make()
        defer { cleanup() }
        let engine = try evaluator(
            """
            {"version": "1", "default": "allow",
             "all_tools": {"limits": [{"counter": "any", "window": "minute", "max": 3, "scope": "grant"}]},
             "tools": {"t": {"limits": [{"counter": "t_rate", "window": "minute", "max": 1, "scope": "grant"}]}}}
            """, store: store)
        let first = engine.decide(tool: "t", arguments: [:])
        #expect(first.isAllowed)
        #expect(first.counters.map(\.value) == [1, 1])
        #expect(first.counters.map(\.key.tool) == ["t", "*"])
        let second = engine.decide(tool: "t", arguments: [:])
        #expect(second.rule == "tools.t.limits[0]")
        #expect(second.counters.map(\.value) == [1, 1])  // the all_tools counter was not charged
        #expect(engine.decide(tool: "other", arguments: [:]).isAllowed)
        #expect(engine.decide(tool: "other", arguments: [:]).isAllowed)
        let fourth = engine.decide(tool: "other", arguments: [:])
        #expect(fourth.rule == "all_tools.limits[0]")
        #expect(try engine.counters(tool: "t").map(\.value) == [1, 3])
    }

    @Test(arguments: StoreKind.allCases)
    func rollback(kind: StoreKind) throws {
        let (store, cleanup) = try kind.make()
        defer { cleanup() }
        let engine = try evaluator(
            toolPolicy("t", #"{"limits": [{"counter": "c", "window": "minute", "max": 2}, {"counter": "d", "window": "hour", "max": 5, "increment": 2}]}"#),
            store: store)
        let decision = engine.decide(tool: "t", arguments: [:])
        #expect(decision.counters.map(\.value) == [1, 2])
        let reservation = try #require(decision.reservation)
        #expect(try reservation.rollback())
        #expect(reservation.isRolledBack)
        #expect(try engine.counters(tool: "t").map(\.value) == [0, 0])
        #expect(try reservation.rollback() == false)  // only once
        #expect(try engine.counters(tool: "t").map(\.value) == [0, 0])
        #expect(engine.decide(tool: "t", arguments: [:]).isAllowed)
        #expect(engine.decide(tool: "t", arguments: [:]).isAllowed)
        #expect(engine.decide(tool: "t", arguments: [:]).rule == "tools.t.limits[0]")
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
    func spendCounters(_ c: SpendCase) throws {
        let engine = try evaluator(
            toolPolicy("refund", #"{"limits": [{"counter": "spend", "window": "day", "max": 10, "increment_from": "args.amount"}]}"#))
        let args: JSONValue = c.amount.map { ["amount": $0] } ?? [:]
        let decision = engine.decide(tool: "refund", arguments: args)
        #expect(decision.isAllowed == c.allowed, "\(decision.message)")
        if !c.allowed {
            #expect(decision.rule == "tools.refund.limits[0]")
            #expect(decision.message.contains(c.fragment))
            #expect(try engine.counters(tool: "refund").first?.value == 0)
        } else {
            #expect(decision.counters.first?.value == c.amount?.intValue)
        }
    }

    @Test func spendAccumulates() throws {
        let engine = try evaluator(
            toolPolicy("refund", #"{"limits": [{"counter": "spend", "window": "day", "max": 10, "increment_from": "args.cost.amount"}]}"#))
        let outcomes = [4, 5, 2, 1].map { engine.decide(tool: "refund", arguments: ["cost": ["amount": .int($0)]]).isAllowed }
        #expect(outcomes == [true, true, false, true])
        #expect(try engine.counters(tool: "refund").first?.value == 10)
    }

    @Test func storeErrorsFailClosed() throws {
        let engine = try evaluator(toolPolicy("t", #"{"limits": [{"counter": "c", "window": "minute", "max": 5}]}"#), store: BrokenStore())
        let decision = engine.decide(tool: "t", arguments: [:])
        #expect(decision.outcome == .deny)
        #expect(decision.rule == "counter_store")
        #expect(decision.message.contains("disk I/O error"))
        // A tool without limits does not touch the store.
        let free = try evaluator(toolPolicy("t", "{}"), store: BrokenStore())
        #expect(free.decide(tool: "t", arguments: [:]).isAllowed)
    }

    @Test func unopenableSQLiteStoreThrows() {
        #expect(throws: CounterStoreError.self) { try SQLiteCounterStore(path: "/nonexistent-dir/counters.sqlite") }
    }

    @Test func sqliteCountersSurviveReopen() throws {
        let path = temporarySQLitePath()
        defer { removeSQLite(path) }
        let text = toolPolicy("t", #"{"limits": [{"counter": "c", "window": "minute", "max": 3}]}"#)
        do {
            let engine = try evaluator(text, store: try SQLiteCounterStore(path: path))
            #expect(engine.decide(tool: "t", arguments: [:]).isAllowed)
            #expect(engine.decide(tool: "t", arguments: [:]).isAllowed)
        }
        let reopened = try evaluator(text, store: try SQLiteCounterStore(path: path))
        #expect(reopened.decide(tool: "t", arguments: [:]).counters.first?.value == 3)
        #expect(reopened.decide(tool: "t", arguments: [:]).outcome == .deny)
    }

    @Test(arguments: StoreKind.allCases)
    func expiredWindowsArePurged(kind: StoreKind) throws {
        let store: any CounterStore
        var cleanup: () -> Void = {}
        var memory: MemoryCounterStore?
        switch kind {
        case .memory:
            memory = MemoryCounterStore(purgeInterval: 3)
            store = try #require(memory)
        case .sqlite:
            let path = temporarySQLitePath()
            store = try SQLiteCounterStore(path: path, purgeInterval: 3)
            cleanup = { removeSQLite(path) }
        }
        defer { cleanup() }
        let clock = ManualClock(milliseconds: epoch2026)
        let engine = try evaluator(toolPolicy("t", #"{"limits": [{"counter": "c", "window": "second", "max": 5}]}"#), store: store, clock: clock)
        for _ in 0..<3 {
            #expect(engine.decide(tool: "t", arguments: [:]).isAllowed)
            clock.advance(milliseconds: 1000)
        }
        if let memory { #expect(memory.count <= 2) }
        // Old windows are gone, the current one counts from zero.
        let old = CounterKey(scope: .grant, scopeID: "", tool: "t", counter: "c", windowStartMs: epoch2026)
        #expect(try store.values([old]) == [0])
    }
}
