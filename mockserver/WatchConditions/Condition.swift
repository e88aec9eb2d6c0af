import CorralJSON

/// A bad condition: the message names the field and what it accepts.
public struct ConditionError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// What a condition watcher waits for: the Allcanuse `wait_file`, `wait_process`, `wait_port` and `wait_http`
/// conditions (the fields of the matching `wait_for_*` tools), checked and normalised once, in the server, so that
/// the watcher process gets only conditions it can evaluate.
public enum WatchCondition: Sendable, Equatable {
    case file(FileCondition)
    case process(ProcessCondition)
    case port(PortCondition)
    case http(HTTPCondition)
    case window(WindowCondition)

    /// The task types that are condition watchers, with the `wait_for_*` tool of each.
    public static let taskTypes = ["wait_file", "wait_process", "wait_port", "wait_http", "wait_window"]

    /// Parses a condition object of task type `kind`; errors are prefixed with `context` (a tool or field path).
    /// `requireWindowFilter`: a `wait_window` task needs a filter, the `wait_for_window` tool does not.
    public init(
        kind: String, fields: [String: JSONValue], context: String, requireWindowFilter: Bool = true
    ) throws(ConditionError) {
        let reader = FieldReader(fields: fields, context: context)
        switch kind {
        case "wait_file": self = .file(try FileCondition(reader))
        case "wait_process": self = .process(try ProcessCondition(reader))
        case "wait_port": self = .port(try PortCondition(reader))
        case "wait_http": self = .http(try HTTPCondition(reader))
        case "wait_window": self = .window(try WindowCondition(reader, requireFilter: requireWindowFilter))
        default:
            throw ConditionError("\(context): \(kind) is not a condition type (\(Self.taskTypes.joined(separator: ", ")))")
        }
    }

    public var kind: String {
        switch self {
        case .file: return "wait_file"
        case .process: return "wait_process"
        case .port: return "wait_port"
        case .http: return "wait_http"
        case .window: return "wait_window"
        }
    }

    /// The condition with every default filled in: what the watcher is given and what a task shows.
    public var jsonValue: JSONValue {
        switch self {
        case .file(let condition): return condition.jsonValue
        case .process(let condition): return condition.jsonValue
        case .port(let condition): return condition.jsonValue
        case .http(let condition): return condition.jsonValue
        case .window(let condition): return condition.jsonValue
        }
    }

    /// Whether a kernel event can wake the watcher (otherwise it checks every poll interval).
    public var hasEvents: Bool {
        switch self {
        case .file: return true
        case .process(let condition): return condition.pid != nil && condition.state == .exited
        case .port, .http, .window: return false
        }
    }
}

/// One evaluation of a condition.
public struct CheckResult: Sendable, Equatable {
    public var conditionMet: Bool
    /// The tool's `last_result` object (always with `condition_met`).
    public var lastResult: JSONValue
    /// The condition can never be met (the watcher stops).
    public var fatal: Bool

    public init(conditionMet: Bool, lastResult: [String: JSONValue], fatal: Bool = false) {
        self.conditionMet = conditionMet
        var result = lastResult
        result["condition_met"] = .bool(conditionMet)
        if fatal { result["fatal_error"] = true }
        self.lastResult = .object(result)
        self.fatal = fatal
    }
}

/// Typed reads of a condition's fields, with messages that name the field.
struct FieldReader {
    let fields: [String: JSONValue]
    let context: String

    private func present(_ name: String) -> JSONValue? {
        guard let value = fields[name], !value.isNull else { return nil }
        return value
    }

    func error(_ text: String) -> ConditionError { ConditionError("\(context): \(text)") }

    func allowOnly(_ names: Set<String>) throws(ConditionError) {
        let unknown = fields.keys.filter { !names.contains($0) }.sorted()
        guard unknown.isEmpty else {
            throw error(
                "unknown field\(unknown.count > 1 ? "s" : "") \(unknown.joined(separator: ", ")) "
                    + "(accepted: \(names.sorted().joined(separator: ", ")))")
        }
    }

    func string(_ name: String) throws(ConditionError) -> String {
        guard let value = try optionalString(name) else { throw error("missing required field \(name)") }
        return value
    }

    func optionalString(_ name: String) throws(ConditionError) -> String? {
        guard let value = present(name) else { return nil }
        guard let string = value.stringValue else { throw error("\(name) must be a string, got \(value.typeName)") }
        return string
    }

    func optionalInt(_ name: String) throws(ConditionError) -> Int? {
        guard let value = present(name) else { return nil }
        guard let number = value.intValue else { throw error("\(name) must be an integer, got \(value.typeName)") }
        return number
    }

    func int(_ name: String, default fallback: Int) throws(ConditionError) -> Int {
        try optionalInt(name) ?? fallback
    }

    func positiveInt(_ name: String, default fallback: Int) throws(ConditionError) -> Int {
        let value = try int(name, default: fallback)
        guard value > 0 else { throw error("\(name) must be positive, got \(value)") }
        return value
    }

    func choice<T: RawRepresentable & CaseIterable>(_ name: String, default fallback: T) throws(ConditionError) -> T
    where T.RawValue == String {
        // As the real server: case does not matter, and an empty state is the default one.
        guard let text = try optionalString(name)?.lowercased(), !text.isEmpty else { return fallback }
        guard let value = T(rawValue: text) else {
            let allowed = T.allCases.map(\.rawValue).joined(separator: ", ")
            throw error("\(name) must be one of \(allowed), got \(text)")
        }
        return value
    }

    func optionalObject(_ name: String) throws(ConditionError) -> [String: JSONValue]? {
        guard let value = present(name) else { return nil }
        guard let object = value.objectValue else { throw error("\(name) must be an object, got \(value.typeName)") }
        return object
    }

    func optionalInts(_ name: String) throws(ConditionError) -> [Int]? {
        guard let value = present(name) else { return nil }
        guard let array = value.arrayValue else { throw error("\(name) must be a list of integers, got \(value.typeName)") }
        var numbers: [Int] = []
        for (index, element) in array.enumerated() {
            guard let number = element.intValue else {
                throw error("\(name)[\(index)] must be an integer, got \(element.typeName)")
            }
            numbers.append(number)
        }
        return numbers
    }
}

extension Optional where Wrapped == String {
    var json: JSONValue { map(JSONValue.string) ?? .null }
}

extension Optional where Wrapped == Int {
    var json: JSONValue { map(JSONValue.int) ?? .null }
}
