import Foundation
import Logging
import Policy
import PolicyPostgres
import PostgresNIO

/// The PostgreSQL server the tests may use: `CORRAL_TEST_POSTGRES_URL` (scripts/test starts a throwaway cluster
/// and sets it). Each store gets a database of its own, so tests never see each other's counters.
enum PostgresTestServer {
    static let location: PostgresLocation? = ProcessInfo.processInfo.environment["CORRAL_TEST_POSTGRES_URL"]
        .flatMap { try? PostgresLocation(url: $0) }

    struct NotConfigured: Error {}

    static func freshDatabase() async throws -> PostgresLocation {
        guard let location else { throw NotConfigured() }
        let name = "corral_test_\(UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: ""))"
        try await run(location, "CREATE DATABASE \(unescaped: name)")
        return location.replacingDatabase(name)
    }

    static func freshStore(purgeInterval: Int = 1024) async throws -> PostgresPolicyStore {
        try await PostgresPolicyStore.connect(try await freshDatabase(), purgeInterval: purgeInterval)
    }

    /// Rows in the store's counter table (expired ones included).
    static func counterRows(_ store: any PolicyStore) async throws -> Int {
        guard let store = store as? PostgresPolicyStore else { return 0 }
        var count = 0
        try await withConnection(store.location) { connection in
            for try await rows in try await connection.query("SELECT count(*) FROM corral_counters", logger: logger)
                .decode(Int64.self)
            { count = Int(rows) }
        }
        return count
    }

    static func run(_ location: PostgresLocation, _ query: PostgresQuery) async throws {
        try await withConnection(location) { connection in
            for try await _ in try await connection.query(query, logger: logger) {}
        }
    }

    /// True once `condition` holds, false if it still does not after 5 s.
    static func poll(_ condition: () async throws -> Bool) async throws -> Bool {
        for _ in 0..<100 {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    private static let logger = Logger(label: "corral.tests.postgres")

    private static func withConnection(_ location: PostgresLocation, _ body: (PostgresConnection) async throws -> Void) async throws {
        let configuration = PostgresConnection.Configuration(
            host: location.host, port: location.port, username: location.user, password: location.password,
            database: location.database, tls: .disable)
        let connection = try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger)
        do {
            try await body(connection)
        } catch {
            try? await connection.close()
            throw error
        }
        try await connection.close()
    }
}
