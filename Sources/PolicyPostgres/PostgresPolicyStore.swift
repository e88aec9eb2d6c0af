import Logging
import NIOSSL
import Policy
import PostgresNIO
import Synchronization

/// The policy store in PostgreSQL: counters, single-use records and task owners that several gateway instances
/// share, so that any of them can answer any stateless request with exact limits.
///
/// A reservation is one statement (`corral_reserve`, a function the schema installs): it runs in one transaction,
/// locks its counters in key order (no deadlock between overlapping reservations), and applies all or none. Every
/// operation has a deadline: when the database does not answer in time, the caller gets a `PolicyStoreError` (and
/// the evaluator denies the call); the connection pool reconnects by itself when the database is back.
public final class PostgresPolicyStore: PolicyStore {
    public let location: PostgresLocation
    private let client: PostgresClient
    private let runner: Task<Void, Never>
    private let deadline: Duration
    private let purgeInterval: Int
    private let writes = Atomic<Int>(0)
    /// Whether the last operation reached the database: a change either way is logged once, not every call.
    private let reachable = Atomic<Bool>(true)
    private let logger: Logger

    /// Connects, creates or migrates the schema, and returns the store; throws, saying why, when the database
    /// cannot be reached, refuses the login, or holds a schema newer than this build knows.
    /// - Parameters:
    ///   - deadline: how long one operation may take before it fails (closed).
    ///   - purgeInterval: expired windows, records and owners are deleted every this many writes.
    ///   - logger: where the store says it lost or regained the database (the pool's own chatter stays quiet).
    public static func connect(
        _ location: PostgresLocation, deadline: Duration = .seconds(2), purgeInterval: Int = 1024,
        maximumConnections: Int = 8, logger: Logger = Logger(label: "corral.policy.postgres")
    ) async throws(PolicyStoreError) -> PostgresPolicyStore {
        var quiet = logger
        quiet.logLevel = .critical
        // One connection of its own first: an unreachable database or a refused login is reported as it is, at once
        // (the pool would keep retrying in silence).
        do {
            var configuration = PostgresConnection.Configuration(
                host: location.host, port: location.port, username: location.user, password: location.password,
                database: location.database, tls: try connectionTLS(location.tls))
            configuration.options.connectTimeout = .seconds(Int64(max(deadline, .seconds(5)).components.seconds))
            let connection = try await PostgresConnection.connect(configuration: configuration, id: 0, logger: quiet)
            do {
                try await PostgresSchema.migrate(connection, logger: quiet)
            } catch {
                try? await connection.close()
                throw error
            }
            try await connection.close()
        } catch {
            throw PolicyStoreError("policy store \(location): \(describe(error))")
        }
        return PostgresPolicyStore(
            location, deadline: deadline, purgeInterval: purgeInterval, maximumConnections: maximumConnections,
            logger: logger, poolLogger: quiet)
    }

    private static func connectionTLS(_ mode: PostgresLocation.TLSMode) throws -> PostgresConnection.Configuration.TLS {
        switch mode {
        case .disable: return .disable
        case .prefer: return .prefer(try NIOSSLContext(configuration: .makeClientConfiguration()))
        case .require: return .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
        }
    }

    private init(
        _ location: PostgresLocation, deadline: Duration, purgeInterval: Int, maximumConnections: Int, logger: Logger,
        poolLogger: Logger
    ) {
        self.location = location
        self.deadline = deadline
        self.purgeInterval = max(1, purgeInterval)
        self.logger = logger
        let tls: PostgresClient.Configuration.TLS
        switch location.tls {
        case .disable: tls = .disable
        case .prefer: tls = .prefer(.makeClientConfiguration())
        case .require: tls = .require(.makeClientConfiguration())
        }
        var configuration = PostgresClient.Configuration(
            host: location.host, port: location.port, username: location.user, password: location.password,
            database: location.database, tls: tls)
        configuration.options.connectTimeout = deadline
        configuration.options.maximumConnections = max(1, maximumConnections)
        let client = PostgresClient(configuration: configuration, backgroundLogger: poolLogger)
        self.client = client
        runner = Task { await client.run() }
    }

    deinit { runner.cancel() }

    /// Closes the connections (the store is unusable afterwards).
    public func close() { runner.cancel() }

    public func reserve(_ requests: [CounterRequest], nowMs: Int64) async throws(PolicyStoreError) -> ReserveOutcome {
        purgeIfDue(nowMs: nowMs)
        if requests.count == 1, let request = requests.first, request.amount <= request.max {
            return try await reserveOne(request)
        }
        let keys = KeyColumns(requests.map(\.key))
        let amounts = requests.map { Int64($0.amount) }
        let maxes = requests.map { Int64($0.max) }
        let expiries = requests.map(\.expiresAtMs)
        let statement = ReserveStatement(keys: keys, amounts: amounts, maxes: maxes, expiries: expiries)
        let (reserved, values) = try await withDeadline("reserving counters") { client, logger in
            for try await row in try await client.execute(statement, logger: logger) { return row }
            throw StoreProblem("corral_reserve returned no row")
        }
        let counts = values.map { Int($0) }
        guard counts.count == requests.count else {
            throw PolicyStoreError("corral_reserve returned \(counts.count) values for \(requests.count) counters")
        }
        return reserved ? .reserved(valuesAfter: counts) : .refused(current: counts)
    }

    /// One counter (the common case: a tool's one limit) is one upsert that adds only if the sum stays within
    /// `max`: atomic on its own, and no function call. Only a refusal reads the value it refused at.
    private func reserveOne(_ request: CounterRequest) async throws(PolicyStoreError) -> ReserveOutcome {
        let key = request.key
        let statement = ReserveOneStatement(request: request)
        let after = try await withDeadline("reserving a counter") { client, logger -> Int64? in
            for try await value in try await client.execute(statement, logger: logger) { return value }
            return nil
        }
        if let after { return .reserved(valuesAfter: [Int(after)]) }
        return .refused(current: try await values([key]))
    }

    public func release(_ requests: [CounterRequest]) async throws(PolicyStoreError) {
        let keys = KeyColumns(requests.map(\.key))
        let amounts = requests.map { Int64($0.amount) }
        try await withDeadline("releasing counters") { client, logger in
            try await client.execute(
                """
                UPDATE corral_counters c SET value = GREATEST(0, c.value - k.amount)
                FROM unnest(\(keys.scopes)::text[], \(keys.scopeIDs)::text[], \(keys.tools)::text[], \
                \(keys.counters)::text[], \(keys.windows)::bigint[], \(amounts)::bigint[]) \
                AS k(scope, scope_id, tool, counter, window_start_ms, amount)
                WHERE (c.scope, c.scope_id, c.tool, c.counter, c.window_start_ms)
                    = (k.scope, k.scope_id, k.tool, k.counter, k.window_start_ms)
                """, logger: logger)
        }
    }

    public func values(_ keys: [CounterKey]) async throws(PolicyStoreError) -> [Int] {
        let columns = KeyColumns(keys)
        return try await withDeadline("reading counters") { client, logger in
            let rows = try await client.query(
                """
                SELECT COALESCE(c.value, 0)
                FROM unnest(\(columns.scopes)::text[], \(columns.scopeIDs)::text[], \(columns.tools)::text[], \
                \(columns.counters)::text[], \(columns.windows)::bigint[]) WITH ORDINALITY \
                AS k(scope, scope_id, tool, counter, window_start_ms, ord)
                LEFT JOIN corral_counters c ON (c.scope, c.scope_id, c.tool, c.counter, c.window_start_ms)
                    = (k.scope, k.scope_id, k.tool, k.counter, k.window_start_ms)
                ORDER BY k.ord
                """, logger: logger)
            var values: [Int] = []
            for try await value in rows.decode(Int64.self) { values.append(Int(value)) }
            return values
        }
    }

    public func claimOnce(_ token: String, expiresAtMs: Int64, nowMs: Int64) async throws(PolicyStoreError) -> Bool {
        purgeIfDue(nowMs: nowMs)
        return try await withDeadline("claiming a single-use record") { client, logger in
            // An expired record no longer guards anything: it is taken over.
            let rows = try await client.query(
                """
                INSERT INTO corral_claims (token, expires_at_ms) VALUES (\(token), \(expiresAtMs))
                ON CONFLICT (token) DO UPDATE SET expires_at_ms = EXCLUDED.expires_at_ms
                WHERE corral_claims.expires_at_ms <= \(nowMs)
                RETURNING 1
                """, logger: logger)
            var claimed = false
            for try await _ in rows.decode(Int32.self) { claimed = true }
            return claimed
        }
    }

    public func recordOwner(of handle: String, grant: String, expiresAtMs: Int64, nowMs: Int64) async throws(PolicyStoreError) {
        purgeIfDue(nowMs: nowMs)
        try await withDeadline("recording a task owner") { client, logger in
            try await client.execute(
                """
                INSERT INTO corral_task_owners (handle, grant_id, expires_at_ms) VALUES (\(handle), \(grant), \(expiresAtMs))
                ON CONFLICT (handle) DO NOTHING
                """, logger: logger)
        }
    }

    public func owner(of handle: String, nowMs: Int64) async throws(PolicyStoreError) -> String? {
        try await withDeadline("reading a task owner") { client, logger in
            let rows = try await client.query(
                "SELECT grant_id FROM corral_task_owners WHERE handle = \(handle) AND expires_at_ms > \(nowMs)",
                logger: logger)
            for try await grant in rows.decode(String.self) { return grant }
            return nil
        }
    }

    // MARK: - internals

    /// Every `purgeInterval` writes, what has expired is deleted, off the caller's path.
    private func purgeIfDue(nowMs: Int64) {
        guard writes.add(1, ordering: .relaxed).newValue % purgeInterval == 0 else { return }
        Task {
            do {
                try await withDeadline("pruning expired rows") { client, logger in
                    try await client.execute("DELETE FROM corral_counters WHERE expires_at_ms <= \(nowMs)", logger: logger)
                    try await client.execute("DELETE FROM corral_claims WHERE expires_at_ms <= \(nowMs)", logger: logger)
                    try await client.execute("DELETE FROM corral_task_owners WHERE expires_at_ms <= \(nowMs)", logger: logger)
                }
            } catch {
                logger.warning("policy store: \(error)")
            }
        }
    }

    /// Runs `body` against the pool; past `limit` (the store's deadline by default) the caller gets an error at once,
    /// even if the pool is still waiting for a connection that the database will never give.
    private func withDeadline<T: Sendable>(
        _ what: String, limit: Duration? = nil,
        _ body: @escaping @Sendable (PostgresClient, Logger) async throws -> T
    ) async throws(PolicyStoreError) -> T {
        // Whichever comes first, the work or the deadline, is the outcome (the stream keeps only the first).
        let (outcomes, first) = AsyncStream.makeStream(
            of: Result<T, PolicyStoreError>.self, bufferingPolicy: .bufferingOldest(1))
        let client = self.client
        let logger = self.logger
        let work = Task {
            do {
                first.yield(.success(try await body(client, logger)))
            } catch {
                first.yield(.failure(PolicyStoreError("\(what) failed: \(Self.describe(error))")))
            }
        }
        let limit = limit ?? deadline
        let timer = Task {
            try? await Task.sleep(for: limit)
            first.yield(.failure(PolicyStoreError("\(what): PostgreSQL did not answer within \(limit)")))
        }
        var outcome = Result<T, PolicyStoreError>.failure(PolicyStoreError("\(what): cancelled"))
        for await result in outcomes {
            outcome = result
            break
        }
        first.finish()
        timer.cancel()
        switch outcome {
        case .success:
            if !reachable.exchange(true, ordering: .relaxed) { logger.warning("policy store \(location) is reachable again") }
        case .failure(let error):
            work.cancel()
            if reachable.exchange(false, ordering: .relaxed) {
                logger.warning("policy store \(location) unavailable, calls that need it are denied: \(error.message)")
            }
        }
        return try outcome.get()
    }

    /// PSQLError's own description hides the server's message (it may hold data); the message and code say why.
    static func describe(_ error: any Error) -> String {
        if let psql = error as? PSQLError {
            if let message = psql.serverInfo?[.message] {
                return "\(message) (SQLSTATE \(psql.serverInfo?[.sqlState] ?? "?"))"
            }
            return "\(psql.code)" + (psql.underlying.map { ": \($0)" } ?? "")
        }
        if let problem = error as? StoreProblem { return problem.message }
        return "\(error)"
    }
}

extension PostgresClient {
    /// Runs a statement to its end (its rows, if any, are read and dropped), so that its errors surface here.
    func execute(_ query: PostgresQuery, logger: Logger) async throws {
        for try await _ in try await self.query(query, logger: logger) {}
    }
}

/// A problem found in what the database returned.
struct StoreProblem: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

/// The reservation, prepared once per connection (the hot path: parsing and planning it every call cost about a
/// tenth of a decision).
private struct ReserveStatement: PostgresPreparedStatement {
    static let sql = "SELECT reserved, vals FROM corral_reserve($1, $2, $3, $4, $5, $6, $7, $8)"
    typealias Row = (Bool, [Int64])

    let keys: KeyColumns
    let amounts: [Int64]
    let maxes: [Int64]
    let expiries: [Int64]

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 8)
        bindings.append(keys.scopes)
        bindings.append(keys.scopeIDs)
        bindings.append(keys.tools)
        bindings.append(keys.counters)
        bindings.append(keys.windows)
        bindings.append(amounts)
        bindings.append(maxes)
        bindings.append(expiries)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// One counter's reservation (see `reserveOne`): the row is created at `amount` (which the caller checked is
/// within `max`), or added to while the sum stays within `max`; no row back means refused.
private struct ReserveOneStatement: PostgresPreparedStatement {
    static let sql = """
        INSERT INTO corral_counters AS c (scope, scope_id, tool, counter, window_start_ms, value, expires_at_ms)
        VALUES ($1, $2, $3, $4, $5, $6, $8)
        ON CONFLICT (scope, scope_id, tool, counter, window_start_ms) DO UPDATE
        SET value = c.value + EXCLUDED.value, expires_at_ms = GREATEST(c.expires_at_ms, EXCLUDED.expires_at_ms)
        WHERE c.value <= $7 - EXCLUDED.value
        RETURNING c.value
        """
    typealias Row = Int64

    let request: CounterRequest

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 8)
        bindings.append(request.key.scope.rawValue)
        bindings.append(request.key.scopeID)
        bindings.append(request.key.tool)
        bindings.append(request.key.counter)
        bindings.append(request.key.windowStartMs)
        bindings.append(Int64(request.amount))
        bindings.append(Int64(request.max))
        bindings.append(request.expiresAtMs)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Int64.self) }
}

/// Counter keys as the parallel arrays `unnest` takes.
private struct KeyColumns: Sendable {
    let scopes: [String]
    let scopeIDs: [String]
    let tools: [String]
    let counters: [String]
    let windows: [Int64]

    init(_ keys: [CounterKey]) {
        scopes = keys.map(\.scope.rawValue)
        scopeIDs = keys.map(\.scopeID)
        tools = keys.map(\.tool)
        counters = keys.map(\.counter)
        windows = keys.map(\.windowStartMs)
    }
}
