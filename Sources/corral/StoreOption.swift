import ArgumentParser
import Policy
import PolicyPostgres

/// `--store memory|sqlite:PATH|postgres://USER[:PASSWORD]@HOST[:PORT]/DB`, as `corral proxy` and
/// `corral policy explain` take it.
enum StoreOption: Sendable, CustomStringConvertible {
    case memory
    case sqlite(path: String)
    case postgres(PostgresLocation)

    static let help = "Where counters, single-use approvals and task owners live: memory (this process), sqlite:PATH (processes on this machine) or postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=disable|prefer|require] (several instances)."

    init(parsing text: String) throws(ValidationError) {
        if text == "memory" {
            self = .memory
        } else if text.hasPrefix("sqlite:") {
            let path = String(text.dropFirst("sqlite:".count))
            guard !path.isEmpty else { throw ValidationError("--store sqlite:PATH needs a path") }
            self = .sqlite(path: path)
        } else if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") {
            do {
                self = .postgres(try PostgresLocation(url: text))
            } catch {
                throw ValidationError("--store: \(error)")
            }
        } else {
            throw ValidationError("--store must be memory, sqlite:PATH or postgres://USER@HOST[:PORT]/DB; got \(PostgresLocation.redacted(text))")
        }
    }

    /// Opens the store; a database that cannot be reached at start is an error, not a silent fallback.
    func open() async throws(PolicyStoreError) -> any PolicyStore {
        switch self {
        case .memory: return MemoryPolicyStore()
        case .sqlite(let path): return try SQLitePolicyStore(path: path)
        case .postgres(let location): return try await PostgresPolicyStore.connect(location)
        }
    }

    var description: String {
        switch self {
        case .memory: "memory"
        case .sqlite(let path): "sqlite:\(path)"
        case .postgres(let location): location.description
        }
    }
}
