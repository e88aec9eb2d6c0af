import Foundation

/// How many finished tasks a supervisor keeps, with their events and output: all of them (the default), the newest
/// N, or those finished in the last D days. Running, paused and waiting tasks are never pruned.
public enum TaskRetention: Sendable, Equatable, CustomStringConvertible {
    case all
    case newest(Int)
    case days(Int)

    /// `all`, a count (`1000`: the newest thousand finished tasks) or days (`30d`: finished in the last 30 days).
    public init(parsing text: String) throws(RuntimeError) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed == "all" {
            self = .all
        } else if let count = Int(trimmed), count >= 0 {
            self = .newest(count)
        } else if trimmed.hasSuffix("d"), let days = Int(trimmed.dropLast()), days > 0 {
            self = .days(days)
        } else {
            throw RuntimeError.invalidArgument(
                "retention must be all, a count of finished tasks (1000) or a number of days (30d); got \"\(text)\"")
        }
    }

    public var description: String {
        switch self {
        case .all: "all"
        case .newest(let count): "\(count)"
        case .days(let days): "\(days)d"
        }
    }
}
