import CorralJSON

/// The three ways a condition can come out. `undecidable` (path missing, or a value of a type the op cannot judge)
/// is kept apart so that both `require` and `deny_if` can fail closed on it.
enum ConditionOutcome {
    case holds
    case fails
    case undecidable(String)
}

extension Condition {
    func evaluate(_ arguments: [String: JSONValue]) -> ConditionOutcome {
        let actual = path.resolve(in: arguments)
        if case .flag(let mustExist) = operand {
            return (actual != nil) == mustExist ? .holds : .fails
        }
        guard let actual else { return .undecidable("\(path) is missing") }
        switch operand {
        case .value(let expected):
            switch op {
            case .eq: return verdict(jsonEqual(actual, expected))
            case .neq: return verdict(!jsonEqual(actual, expected))
            default: return contains(actual, expected)
            }
        case .list(let list):
            let found = list.contains { jsonEqual(actual, $0) }
            return verdict(op == .in ? found : !found)
        case .number(let bound):
            guard let number = actual.doubleValue else { return mismatch(actual) }
            switch op {
            case .lt: return verdict(number < bound)
            case .lte: return verdict(number <= bound)
            case .gt: return verdict(number > bound)
            default: return verdict(number >= bound)
            }
        case .pattern(let regex):
            guard case .string(let text) = actual else { return mismatch(actual) }
            return verdict(regex.matches(text))
        case .length(let bound):
            let length: Int
            switch actual {
            case .string(let text): length = text.count
            case .array(let items): length = items.count
            case .object(let members): length = members.count
            default: return mismatch(actual)
            }
            return verdict(op == .lenLte ? length <= bound : length >= bound)
        case .jsonType(let name):
            switch name {
            case "integer":
                if case .int = actual { return .holds }
                if case .double(let value) = actual { return verdict(value.isFinite && value.rounded() == value) }
                return .fails
            default: return verdict(actual.typeName == name)
            }
        case .flag:
            return .fails  // handled above
        }
    }

    private func verdict(_ value: Bool) -> ConditionOutcome { value ? .holds : .fails }

    private func mismatch(_ actual: JSONValue) -> ConditionOutcome {
        .undecidable("\(path) is \(actual.typeName == "array" || actual.typeName == "object" ? "an" : "a") \(actual.typeName), which op \(quoted(op.rawValue)) cannot check")
    }

    /// `contains`: a substring of a string, or an element of a list.
    private func contains(_ actual: JSONValue, _ expected: JSONValue) -> ConditionOutcome {
        switch actual {
        case .string(let text):
            guard case .string(let needle) = expected else { return .fails }
            return verdict(text.contains(needle))
        case .array(let items):
            return verdict(items.contains { jsonEqual($0, expected) })
        default:
            return mismatch(actual)
        }
    }

    /// A short human description, e.g. `args.reason exists`, `args.amount lte 100`.
    public var summary: String {
        switch op {
        case .exists: return "\(path) \(value.boolValue == false ? "must not exist" : "exists")"
        default: return "\(path) \(op.rawValue) \(value.jsonString())"
        }
    }
}

/// JSON equality where `1` equals `1.0` (JSON has one number type).
func jsonEqual(_ a: JSONValue, _ b: JSONValue) -> Bool {
    switch (a, b) {
    case (.int(let x), .int(let y)): return x == y
    case (.int, .double), (.double, .int), (.double, .double): return a.doubleValue == b.doubleValue
    case (.array(let x), .array(let y)):
        return x.count == y.count && zip(x, y).allSatisfy { jsonEqual($0, $1) }
    case (.object(let x), .object(let y)):
        guard x.count == y.count else { return false }
        for (key, value) in x {
            guard let other = y[key], jsonEqual(value, other) else { return false }
        }
        return true
    default: return a == b
    }
}
