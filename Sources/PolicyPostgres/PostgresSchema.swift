import Logging
import PostgresNIO

/// The store's tables and functions, versioned: `corral_schema` holds the version, and each migration runs once,
/// in order, under an advisory lock (instances that start together queue instead of racing).
enum PostgresSchema {
    /// Statements of each version, oldest first; a new version is a new entry, never an edit of an old one.
    static let migrations: [[PostgresQuery]] = [
        // 1: counters, single-use records, task owners, and the all-or-nothing reservation.
        [
            """
            CREATE TABLE corral_counters (
                scope text NOT NULL, scope_id text NOT NULL, tool text NOT NULL, counter text NOT NULL,
                window_start_ms bigint NOT NULL, value bigint NOT NULL, expires_at_ms bigint NOT NULL,
                PRIMARY KEY (scope, scope_id, tool, counter, window_start_ms)
            )
            """,
            "CREATE INDEX corral_counters_expiry ON corral_counters (expires_at_ms)",
            "CREATE TABLE corral_claims (token text PRIMARY KEY, expires_at_ms bigint NOT NULL)",
            "CREATE INDEX corral_claims_expiry ON corral_claims (expires_at_ms)",
            """
            CREATE TABLE corral_task_owners (
                handle text PRIMARY KEY, grant_id text NOT NULL, expires_at_ms bigint NOT NULL
            )
            """,
            "CREATE INDEX corral_task_owners_expiry ON corral_task_owners (expires_at_ms)",
            // Rows are created at 0, then locked in key order, then checked and added to together: one
            // transaction, so a reservation of several counters is all or nothing, and overlapping ones queue on
            // the row locks instead of deadlocking. Each statement of a volatile function sees what was committed
            // before it, so the check after the lock reads the latest values.
            """
            CREATE FUNCTION corral_reserve(
                p_scope text[], p_scope_id text[], p_tool text[], p_counter text[], p_window bigint[],
                p_amount bigint[], p_max bigint[], p_expires bigint[]
            ) RETURNS TABLE (reserved boolean, vals bigint[]) LANGUAGE plpgsql VOLATILE AS $$
            DECLARE
                current_values bigint[];
                fits boolean;
            BEGIN
                INSERT INTO corral_counters AS c (scope, scope_id, tool, counter, window_start_ms, value, expires_at_ms)
                SELECT k.s, k.i, k.t, k.n, k.w, 0, k.e
                FROM unnest(p_scope, p_scope_id, p_tool, p_counter, p_window, p_expires) AS k(s, i, t, n, w, e)
                ORDER BY k.s, k.i, k.t, k.n, k.w
                ON CONFLICT DO NOTHING;
                PERFORM 1 FROM corral_counters c
                JOIN unnest(p_scope, p_scope_id, p_tool, p_counter, p_window) AS k(s, i, t, n, w)
                    ON (c.scope, c.scope_id, c.tool, c.counter, c.window_start_ms) = (k.s, k.i, k.t, k.n, k.w)
                ORDER BY c.scope, c.scope_id, c.tool, c.counter, c.window_start_ms
                FOR UPDATE OF c;
                SELECT array_agg(c.value ORDER BY k.ord), bool_and(c.value <= k.m - k.a)
                INTO current_values, fits
                FROM unnest(p_scope, p_scope_id, p_tool, p_counter, p_window, p_amount, p_max)
                    WITH ORDINALITY AS k(s, i, t, n, w, a, m, ord)
                JOIN corral_counters c
                    ON (c.scope, c.scope_id, c.tool, c.counter, c.window_start_ms) = (k.s, k.i, k.t, k.n, k.w);
                IF NOT fits THEN
                    RETURN QUERY SELECT false, current_values;
                    RETURN;
                END IF;
                UPDATE corral_counters c
                SET value = c.value + k.a, expires_at_ms = GREATEST(c.expires_at_ms, k.e)
                FROM unnest(p_scope, p_scope_id, p_tool, p_counter, p_window, p_amount, p_expires) AS k(s, i, t, n, w, a, e)
                WHERE (c.scope, c.scope_id, c.tool, c.counter, c.window_start_ms) = (k.s, k.i, k.t, k.n, k.w);
                RETURN QUERY SELECT true, ARRAY(
                    SELECT x.v + x.a FROM unnest(current_values, p_amount) WITH ORDINALITY AS x(v, a, ord) ORDER BY x.ord);
            END
            $$
            """,
        ]
    ]

    static var latestVersion: Int { migrations.count }

    /// Brings the database to `latestVersion`; refuses a database written by a newer build.
    static func migrate(_ connection: PostgresConnection, logger: Logger) async throws {
        try await connection.withTransaction(logger: logger) { connection in
            // Any fixed key will do; it only has to be the same for every instance.
            try await connection.execute("SELECT pg_advisory_xact_lock(7262201300)", logger: logger)
            try await connection.execute(
                "CREATE TABLE IF NOT EXISTS corral_schema (version integer NOT NULL)", logger: logger)
            var version = 0
            var hasRow = false
            for try await current in try await connection.query("SELECT version FROM corral_schema", logger: logger)
                .decode(Int32.self)
            {
                version = Int(current)
                hasRow = true
            }
            guard version <= latestVersion else {
                throw StoreProblem(
                    "the database's schema is version \(version), newer than this corral knows (\(latestVersion)); upgrade corral")
            }
            for index in version..<latestVersion {
                for statement in migrations[index] { try await connection.execute(statement, logger: logger) }
            }
            let latest = Int32(latestVersion)
            if hasRow {
                try await connection.execute("UPDATE corral_schema SET version = \(latest)", logger: logger)
            } else {
                try await connection.execute("INSERT INTO corral_schema (version) VALUES (\(latest))", logger: logger)
            }
        }
    }
}

extension PostgresConnection {
    /// Runs a statement to its end (its rows, if any, are read and dropped), so that its errors surface here.
    func execute(_ query: PostgresQuery, logger: Logger) async throws {
        for try await _ in try await self.query(query, logger: logger) {}
    }
}
