import Foundation
import Policy
import PolicyPostgres
import Testing

/// The PostgreSQL store against a real server: several instances (as several proxies) on one database stay exact,
/// records are single-use across instances, and bad locations fail with the reason.
@Suite(.enabled(if: PostgresTestServer.location != nil, "set CORRAL_TEST_POSTGRES_URL (scripts/test starts a throwaway cluster)"))
struct PostgresStoreTests {
    static let policyText = #"{"version": "1", "default": "allow", "tools": {"t": {"limits": [{"counter": "c", "window": "minute", "max": 10, "scope": "grant"}]}}}"#

    /// Three stores (three gateways' connection pools) and 16 concurrent callers on a `max: 10` counter.
    @Test func threeInstancesSixteenCallersExactlyTen() async throws {
        let location = try await PostgresTestServer.freshDatabase()
        var stores: [PostgresPolicyStore] = []
        for _ in 0..<3 { stores.append(try await PostgresPolicyStore.connect(location)) }
        let policy = try load(Self.policyText)
        let clock = ManualClock(milliseconds: epoch2026)
        let engines = stores.map { PolicyEvaluator(policy: policy, store: $0, clock: clock) }
        let tally = Tally()
        await concurrently(16) { index in
            for _ in 0..<4 {
                await tally.add(engines[index % 3].decide(tool: "t", arguments: [:], identity: CallIdentity(grant: "g")))
            }
        }
        #expect(tally.allowed == 10)
        #expect(tally.denied == 16 * 4 - 10)
        // Another grant has its own counter; a new store on the same database (a restart) sees the spent one.
        let restarted = PolicyEvaluator(policy: policy, store: try await PostgresPolicyStore.connect(location), clock: clock)
        #expect(await restarted.decide(tool: "t", arguments: [:], identity: CallIdentity(grant: "g")).outcome == .deny)
        #expect(await restarted.decide(tool: "t", arguments: [:], identity: CallIdentity(grant: "other")).isAllowed)
    }

    @Test func recordsAreSingleUseAcrossInstancesAndOwnersAreShared() async throws {
        let location = try await PostgresTestServer.freshDatabase()
        let a = try await PostgresPolicyStore.connect(location)
        let b = try await PostgresPolicyStore.connect(location)
        let now = epoch2026
        #expect(try await a.claimOnce("n1", expiresAtMs: now + 1000, nowMs: now))
        #expect(try await b.claimOnce("n1", expiresAtMs: now + 1000, nowMs: now) == false)
        // Past its expiry a record guards nothing and may be claimed again.
        #expect(try await b.claimOnce("n1", expiresAtMs: now + 5000, nowMs: now + 1000))
        try await a.recordOwner(of: "h", grant: "team-a", expiresAtMs: now + 1000, nowMs: now)
        try await b.recordOwner(of: "h", grant: "team-b", expiresAtMs: now + 1000, nowMs: now)
        #expect(try await b.owner(of: "h", nowMs: now) == "team-a")
        #expect(try await b.owner(of: "h", nowMs: now + 1000) == nil)
    }

    @Test func aSecondSchemaMigrationChangesNothingAndANewerSchemaIsRefused() async throws {
        let location = try await PostgresTestServer.freshDatabase()
        _ = try await PostgresPolicyStore.connect(location)
        _ = try await PostgresPolicyStore.connect(location)
        try await PostgresTestServer.run(location, "UPDATE corral_schema SET version = 99")
        let error = await #expect(throws: PolicyStoreError.self) { try await PostgresPolicyStore.connect(location) }
        #expect(error?.message.contains("schema is version 99, newer than this corral knows") == true)
    }

    @Test func anUnreachableServerOrAMissingDatabaseIsAClearError() async throws {
        let location = try #require(PostgresTestServer.location)
        let closed = try PostgresLocation(url: "postgres://corral@127.0.0.1:1/postgres?sslmode=disable")
        let start = ContinuousClock.now
        let refused = await #expect(throws: PolicyStoreError.self) { try await PostgresPolicyStore.connect(closed) }
        #expect(refused?.message.contains("Connection refused") == true, "\(refused?.message ?? "")")
        #expect(ContinuousClock.now - start < .seconds(5))
        let missing = await #expect(throws: PolicyStoreError.self) {
            try await PostgresPolicyStore.connect(location.replacingDatabase("no_such_database"))
        }
        #expect(missing?.message.contains("no_such_database") == true, "\(missing?.message ?? "")")
    }
}

@Suite struct PostgresLocationTests {
    @Test func wellFormedURLs() throws {
        let full = try PostgresLocation(url: "postgres://al%40ice:s%3Acret@db.example:6432/corral?sslmode=require")
        #expect(full.user == "al@ice")
        #expect(full.password == "s:cret")
        #expect(full.host == "db.example")
        #expect(full.port == 6432)
        #expect(full.database == "corral")
        #expect(full.tls == .require)
        #expect(full.description == "postgres://al@ice:***@db.example:6432/corral")
        let short = try PostgresLocation(url: "postgresql://corral@[::1]/d")
        #expect(short.host == "::1")
        #expect(short.port == 5432)
        #expect(short.tls == .prefer)
        #expect(short.password == nil)
    }

    @Test(arguments: [
        ("mysql://u@h/d", "the scheme is mysql"),
        ("postgres://h/d", "no USER@"),
        ("postgres://u@h", "no /DB"),
        ("postgres://u@h/", "no database name"),
        ("postgres://u@h:x/d", "the port is not a number"),
        ("postgres://u@h:70000/d", "not in 1–65535"),
        ("postgres://u:secret@h/d?sslmode=maybe", "sslmode must be"),
        ("postgres://u:secret@h/d?user=x", "unknown parameter user"),
        ("postgres://@h/d", "no user name"),
    ])
    func malformedURLsSayWhy(url: String, reason: String) {
        let error = #expect(throws: PostgresLocation.ParseError.self) { try PostgresLocation(url: url) }
        #expect(error?.description.contains(reason) == true, "\(error?.description ?? "")")
        #expect(error?.description.contains("secret") == false, "a password is never printed")
    }
}
