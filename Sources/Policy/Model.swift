import CorralJSON

/// What happens to tools not listed under `tools`.
public enum DefaultEffect: String, Sendable, Hashable {
    case allow, deny
}

/// The `action` shorthand on a tool rule.
public enum ToolAction: String, Sendable, Hashable {
    case allow, deny
    case requireApproval = "require_approval"
}

/// Whose calls a counter counts.
public enum CounterScope: String, Sendable, Hashable, CaseIterable {
    /// Per credential or agent id (`CallIdentity.grant`).
    case grant
    /// Per MCP session (`CallIdentity.session`).
    case session
    /// One counter for everybody.
    case global
}

/// A fixed window length; windows start at multiples of the length since the Unix epoch, so minute, hour and day
/// windows are aligned to UTC.
public struct CounterWindow: Sendable, Hashable, CustomStringConvertible {
    public let seconds: Int64
    /// The word it was written as (`minute`), or nil when written as a number of seconds.
    public let word: String?

    public static let words: [(String, Int64)] = [("second", 1), ("minute", 60), ("hour", 3600), ("day", 86400)]

    public init?(word: String) {
        guard let match = Self.words.first(where: { $0.0 == word }) else { return nil }
        seconds = match.1
        self.word = word
    }

    public init?(seconds: Int64) {
        guard seconds > 0 else { return nil }
        self.seconds = seconds
        word = nil
    }

    /// `minute`, or `60 seconds` when written as a number.
    public var description: String {
        if let word { return word }
        return seconds == 1 ? "second" : "\(seconds) seconds"
    }

    public var milliseconds: Int64 { seconds * 1000 }

    /// The start of the window containing `nowMs` (floor, also before 1970).
    public func start(containing nowMs: Int64) -> Int64 {
        let length = milliseconds
        let quotient = nowMs / length
        return (nowMs % length < 0 ? quotient - 1 : quotient) * length
    }
}

/// The op of a condition.
public enum ConditionOp: String, Sendable, Hashable, CaseIterable {
    case eq, neq
    case `in`
    case notIn = "not_in"
    case lt, lte, gt, gte
    case regex, contains, exists
    case lenLte = "len_lte"
    case lenGte = "len_gte"
    case type
}

/// `{path, op, value}`, with the value checked and compiled at load.
/// (Rules are immutable final classes rather than structs: evaluation then retains one reference per rule instead of
/// every field, which is most of the cost of a decision.)
public final class Condition: Sendable {
    public let path: ArgumentPath
    public let op: ConditionOp
    /// The value as written (for `exists` without a value: `true`).
    public let value: JSONValue
    let operand: Operand

    init(path: ArgumentPath, op: ConditionOp, value: JSONValue, operand: Operand) {
        self.path = path
        self.op = op
        self.value = value
        self.operand = operand
    }
}

/// The compiled right-hand side of a condition.
enum Operand: Sendable {
    case value(JSONValue)
    case list([JSONValue])
    case number(Double)
    case pattern(CompiledRegex)
    case flag(Bool)
    case length(Int)
    case jsonType(String)
}

/// A regex compiled once at load. `Regex` is an immutable value whose matching is thread-safe, but its `Output`
/// (`AnyRegexOutput`) is not declared `Sendable`, so the box vouches for it.
struct CompiledRegex: @unchecked Sendable {
    let regex: Regex<AnyRegexOutput>
    func matches(_ text: String) -> Bool { (try? regex.firstMatch(in: text)) != nil }
}

/// One `deny_if` item: when every condition holds (or cannot be checked), the call is denied.
public final class DenyRule: Sendable {
    public let conditions: [Condition]
    public let message: String?
    /// Stable id: `tools.NAME.deny_if[i]`.
    public let rule: String

    init(conditions: [Condition], message: String?, rule: String) {
        self.conditions = conditions
        self.message = message
        self.rule = rule
    }
}

/// One `limits` item.
public final class Limit: Sendable {
    public enum Increment: Sendable, Hashable {
        case fixed(Int)
        /// A spend counter: the amount is read from the call's arguments.
        case fromArgument(ArgumentPath)
    }

    public let counter: String
    public let window: CounterWindow
    public let max: Int
    public let scope: CounterScope
    public let increment: Increment
    /// Stable id: `tools.NAME.limits[i]` or `all_tools.limits[i]`.
    public let rule: String
    /// The tool part of the counter key: the tool name, or `*` for `all_tools`.
    public let toolKey: String
    /// Precomputed: `Rate limit of N per WINDOW reached. Try again later.`
    public let message: String

    init(
        counter: String, window: CounterWindow, max: Int, scope: CounterScope, increment: Increment, rule: String,
        toolKey: String
    ) {
        self.counter = counter
        self.window = window
        self.max = max
        self.scope = scope
        self.increment = increment
        self.rule = rule
        self.toolKey = toolKey
        message = "Rate limit of \(max) per \(window) reached. Try again later."
    }
}

/// The rules of one tool under `tools`.
public final class ToolRule: Sendable {
    public let name: String
    public let action: ToolAction
    public let reason: String?
    public let require: [Condition]
    public let denyIf: [DenyRule]
    public let limits: [Limit]
    /// Precomputed rule ids (`tools.NAME`, `tools.NAME.action`), so a decision does not build strings.
    public let allowRule: String
    public let actionRule: String

    init(name: String, action: ToolAction, reason: String?, require: [Condition], denyIf: [DenyRule], limits: [Limit]) {
        self.name = name
        self.action = action
        self.reason = reason
        self.require = require
        self.denyIf = denyIf
        self.limits = limits
        allowRule = "tools.\(name)"
        actionRule = "tools.\(name).action"
    }
}
