import CorralJSON

/// Turns parsed JSON into a `Policy`, collecting every problem instead of stopping at the first: a person fixing a
/// policy should see the whole list at once.
struct PolicyValidator {
    private var issues: [PolicyIssue] = []
    /// Counter name → where it was first defined (a counter may be named only once per policy).
    private var counters: [String: String] = [:]

    static func validate(_ json: JSONValue, revision: PolicyRevision) throws(PolicyLoadError) -> Policy {
        var validator = PolicyValidator()
        let policy = validator.policy(json, revision: revision)
        guard validator.issues.isEmpty, let policy else {
            throw PolicyLoadError(issues: validator.issues)
        }
        return policy
    }

    // MARK: - Document

    private static let rootKeys = ["$schema", "version", "default", "hide", "all_tools", "tools"]

    private mutating func policy(_ json: JSONValue, revision: PolicyRevision) -> Policy? {
        guard let root = object(json, at: "", allowed: Self.rootKeys) else { return nil }

        if let schema = root["$schema"], schema.stringValue == nil {
            report("$schema", "must be a string, got \(schema.typeName)")
        }
        switch root["version"] {
        case nil: report("version", "is required (use \"1\")")
        case .string("1"): break
        case let other?: report("version", "\(other.jsonString()) is not a supported version (use the string \"1\")")
        }
        var defaultEffect = DefaultEffect.deny
        switch root["default"] {
        case nil: report("default", "is required (\"allow\" or \"deny\")")
        case .string(let text) where DefaultEffect(rawValue: text) != nil:
            defaultEffect = DefaultEffect(rawValue: text) ?? .deny
        case let other?: report("default", "\(other.jsonString()) is not \"allow\" or \"deny\"")
        }

        var hidden = Set<String>()
        var hidesEverything = false
        if let hide = root["hide"] {
            if let names = array(hide, at: "hide") {
                for (index, name) in names.enumerated() {
                    let path = "hide[\(index)]"
                    guard let text = nonEmptyString(name, at: path) else { continue }
                    if text == "*" {
                        hidesEverything = true
                    } else if !hidden.insert(text).inserted {
                        report(path, "\(quoted(text)) is listed twice")
                    }
                }
            }
        }

        var allToolsLimits: [Limit] = []
        if let allTools = root["all_tools"], let body = object(allTools, at: "all_tools", allowed: ["limits"]) {
            if let limits = body["limits"] {
                allToolsLimits = self.limits(limits, at: "all_tools.limits", toolKey: "*")
            }
        }

        var tools: [String: ToolRule] = [:]
        if let toolsJSON = root["tools"], let entries = object(toolsJSON, at: "tools", allowed: nil) {
            for name in entries.keys.sorted() {
                let path = child("tools", name)
                if name.isEmpty {
                    report(path, "a tool name must not be empty")
                    continue
                }
                if name == "*" {
                    report(path, "\"*\" is not a tool name; use all_tools for rules on every tool")
                    continue
                }
                if let value = entries[name], let rule = toolRule(value, name: name, at: path) {
                    tools[name] = rule
                }
            }
        }
        return Policy(
            defaultEffect: defaultEffect, hidden: hidden, hidesEverything: hidesEverything,
            allToolsLimits: allToolsLimits, tools: tools, revision: revision)
    }

    // MARK: - Tools

    private static let toolKeys = ["action", "reason", "require", "deny_if", "limits"]

    private mutating func toolRule(_ json: JSONValue, name: String, at path: String) -> ToolRule? {
        guard let body = object(json, at: path, allowed: Self.toolKeys) else { return nil }
        var action = ToolAction.allow
        var actionWritten = false
        if let value = body["action"] {
            if case .string(let text) = value, let parsed = ToolAction(rawValue: text) {
                action = parsed
                actionWritten = true
            } else {
                report(path + ".action", "\(value.jsonString()) is not \"allow\", \"deny\" or \"require_approval\"")
            }
        }
        var reason: String?
        if let value = body["reason"] {
            reason = nonEmptyString(value, at: path + ".reason")
            if actionWritten && action == .allow {
                report(path + ".reason", "only applies with action \"deny\" or \"require_approval\"")
            } else if !actionWritten && body["action"] == nil {
                report(path + ".reason", "needs an action (\"deny\" or \"require_approval\")")
            }
        }
        var require: [Condition] = []
        if let value = body["require"] {
            require = conditions(value, at: path + ".require")
        }
        var denyIf: [DenyRule] = []
        if let value = body["deny_if"], let items = array(value, at: path + ".deny_if") {
            for (index, item) in items.enumerated() {
                let itemPath = "\(path).deny_if[\(index)]"
                guard let entry = object(item, at: itemPath, allowed: ["conditions", "on_deny"]) else { continue }
                var conditions: [Condition] = []
                if let list = entry["conditions"] {
                    conditions = self.conditions(list, at: itemPath + ".conditions")
                } else {
                    report(itemPath + ".conditions", "is required (an empty list denies every call)")
                }
                let message = entry["on_deny"].flatMap { nonEmptyString($0, at: itemPath + ".on_deny") }
                denyIf.append(DenyRule(conditions: conditions, message: message, rule: itemPath))
            }
        }
        var limits: [Limit] = []
        if let value = body["limits"] {
            limits = self.limits(value, at: path + ".limits", toolKey: name)
        }
        return ToolRule(name: name, action: action, reason: reason, require: require, denyIf: denyIf, limits: limits)
    }

    // MARK: - Conditions

    private static let typeNames: Set<String> = ["null", "boolean", "number", "integer", "string", "array", "object"]

    private mutating func conditions(_ json: JSONValue, at path: String) -> [Condition] {
        guard let items = array(json, at: path) else { return [] }
        var result: [Condition] = []
        for (index, item) in items.enumerated() {
            if let condition = condition(item, at: "\(path)[\(index)]") { result.append(condition) }
        }
        return result
    }

    private mutating func condition(_ json: JSONValue, at path: String) -> Condition? {
        guard let body = object(json, at: path, allowed: ["path", "op", "value"]) else { return nil }
        var argumentPath: ArgumentPath?
        switch body["path"] {
        case nil: report(path + ".path", "is required")
        case .string(let text)?:
            switch ArgumentPath.parse(text) {
            case .success(let parsed): argumentPath = parsed
            case .failure(let error): report(path + ".path", error.message)
            }
        case let other?: report(path + ".path", "must be a string, got \(other.typeName)")
        }
        var op: ConditionOp?
        switch body["op"] {
        case nil: report(path + ".op", "is required")
        case .string(let text)?:
            op = ConditionOp(rawValue: text)
            if op == nil {
                let known = ConditionOp.allCases.map(\.rawValue)
                report(path + ".op", "\(quoted(text)) is not an op\(suggestion(text, known)) (one of: \(known.joined(separator: ", ")))")
            }
        case let other?: report(path + ".op", "must be a string, got \(other.typeName)")
        }
        guard let op else { return nil }
        let valuePath = path + ".value"
        let written = body["value"]
        let fallback: JSONValue? = op == .exists ? .bool(true) : nil
        guard let value = written ?? fallback else {
            report(valuePath, "is required for op \(quoted(op.rawValue))")
            return nil
        }
        let operand: Operand?
        switch op {
        case .eq, .neq, .contains:
            operand = .value(value)
        case .in, .notIn:
            if let list = value.arrayValue {
                operand = .list(list)
            } else {
                report(valuePath, "op \(quoted(op.rawValue)) needs a list, got \(value.typeName)")
                operand = nil
            }
        case .lt, .lte, .gt, .gte:
            if let number = value.doubleValue {
                operand = .number(number)
            } else {
                report(valuePath, "op \(quoted(op.rawValue)) needs a number, got \(value.typeName)")
                operand = nil
            }
        case .regex:
            if let pattern = value.stringValue {
                do {
                    operand = .pattern(CompiledRegex(regex: try Regex(pattern)))
                } catch {
                    report(valuePath, "regex \(quoted(pattern)) does not compile: \(error)")
                    operand = nil
                }
            } else {
                report(valuePath, "op \"regex\" needs a string pattern, got \(value.typeName)")
                operand = nil
            }
        case .exists:
            if let flag = value.boolValue {
                operand = .flag(flag)
            } else {
                report(valuePath, "op \"exists\" needs true or false, got \(value.typeName)")
                operand = nil
            }
        case .lenLte, .lenGte:
            if case .int(let length) = value, length >= 0 {
                operand = .length(length)
            } else {
                report(valuePath, "op \(quoted(op.rawValue)) needs a non-negative integer, got \(value.jsonString())")
                operand = nil
            }
        case .type:
            if let name = value.stringValue, Self.typeNames.contains(name) {
                operand = .jsonType(name)
            } else {
                report(valuePath, "\(value.jsonString()) is not a JSON type (one of: \(Self.typeNames.sorted().joined(separator: ", ")))")
                operand = nil
            }
        }
        guard let argumentPath, let operand else { return nil }
        return Condition(path: argumentPath, op: op, value: value, operand: operand)
    }

    // MARK: - Limits

    private static let limitKeys = ["counter", "window", "max", "scope", "increment", "increment_from"]

    private mutating func limits(_ json: JSONValue, at path: String, toolKey: String) -> [Limit] {
        guard let items = array(json, at: path) else { return [] }
        var result: [Limit] = []
        for (index, item) in items.enumerated() {
            if let limit = limit(item, at: "\(path)[\(index)]", toolKey: toolKey) { result.append(limit) }
        }
        return result
    }

    private mutating func limit(_ json: JSONValue, at path: String, toolKey: String) -> Limit? {
        guard let body = object(json, at: path, allowed: Self.limitKeys) else { return nil }
        var counter: String?
        if let value = body["counter"] {
            counter = nonEmptyString(value, at: path + ".counter")
            if let name = counter {
                if let first = counters[name] {
                    report(path + ".counter", "counter \(quoted(name)) is already defined at \(first)")
                    counter = nil
                } else {
                    counters[name] = path
                }
            }
        } else {
            report(path + ".counter", "is required")
        }

        var window: CounterWindow?
        switch body["window"] {
        case nil: report(path + ".window", "is required")
        case .string(let word)?:
            window = CounterWindow(word: word)
            if window == nil {
                report(path + ".window", "\(quoted(word)) is not a window\(suggestion(word, CounterWindow.words.map(\.0))) (use second, minute, hour, day or a positive number of seconds)")
            }
        case let value?:
            if case .int(let seconds) = value, seconds > 0 {
                window = CounterWindow(seconds: Int64(seconds))
            } else {
                report(path + ".window", "\(value.jsonString()) is not a window (use second, minute, hour, day or a positive number of seconds)")
            }
        }

        var max: Int?
        switch body["max"] {
        case nil: report(path + ".max", "is required")
        case .int(let value)? where value > 0: max = value
        case let value?: report(path + ".max", "must be a positive integer, got \(value.jsonString())")
        }

        var scope = CounterScope.grant
        if let value = body["scope"] {
            if case .string(let text) = value, let parsed = CounterScope(rawValue: text) {
                scope = parsed
            } else {
                report(path + ".scope", "\(value.jsonString()) is not a scope (one of: grant, session, global)")
            }
        }

        var increment = Limit.Increment.fixed(1)
        if body["increment"] != nil && body["increment_from"] != nil {
            report(path, "use either increment or increment_from, not both")
        }
        if let value = body["increment"] {
            if case .int(let amount) = value, amount > 0 {
                increment = .fixed(amount)
            } else {
                report(path + ".increment", "must be a positive integer, got \(value.jsonString())")
            }
        }
        if let value = body["increment_from"] {
            if case .string(let text) = value {
                switch ArgumentPath.parse(text) {
                case .success(let parsed) where !parsed.segments.isEmpty: increment = .fromArgument(parsed)
                case .success: report(path + ".increment_from", "must name an argument, e.g. \"args.amount\"")
                case .failure(let error): report(path + ".increment_from", error.message)
                }
            } else {
                report(path + ".increment_from", "must be a string path like \"args.amount\", got \(value.typeName)")
            }
        }
        if let max, case .fixed(let amount) = increment, amount > max {
            report(path + ".increment", "\(amount) is larger than max \(max), so every call would be denied")
        }
        guard let counter, let window, let max else { return nil }
        return Limit(
            counter: counter, window: window, max: max, scope: scope, increment: increment, rule: path, toolKey: toolKey)
    }

    // MARK: - Helpers

    private mutating func report(_ path: String, _ message: String) {
        issues.append(PolicyIssue(path: path.isEmpty ? "(root)" : path, message: message))
    }

    /// The object's members, reporting a wrong type and every unknown key (`allowed == nil`: any key).
    private mutating func object(_ json: JSONValue, at path: String, allowed: [String]?) -> [String: JSONValue]? {
        guard case .object(let members) = json else {
            report(path, "must be an object, got \(json.typeName)")
            return nil
        }
        if let allowed {
            for key in members.keys.sorted() where !allowed.contains(key) {
                report(child(path, key), "unknown key\(suggestion(key, allowed)) (allowed: \(allowed.joined(separator: ", ")))")
            }
        }
        return members
    }

    private mutating func array(_ json: JSONValue, at path: String) -> [JSONValue]? {
        guard case .array(let items) = json else {
            report(path, "must be a list, got \(json.typeName)")
            return nil
        }
        return items
    }

    private mutating func nonEmptyString(_ json: JSONValue, at path: String) -> String? {
        guard case .string(let text) = json else {
            report(path, "must be a string, got \(json.typeName)")
            return nil
        }
        guard !text.isEmpty else {
            report(path, "must not be empty")
            return nil
        }
        return text
    }

    /// `parent.key`, or `parent["key"]` when the key is not a plain identifier (so the path stays unambiguous).
    private func child(_ parent: String, _ key: String) -> String {
        let plain = !key.isEmpty && key.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
                || byte == 0x5f || byte == 0x2d || byte == 0x24
        }
        if plain { return parent.isEmpty ? key : parent + "." + key }
        return parent + "[" + quoted(key) + "]"
    }

    /// ` (did you mean "limits"?)` when a known word is within two edits.
    private func suggestion(_ word: String, _ known: [String]) -> String {
        let best = known.map { ($0, editDistance(word, $0)) }.min { $0.1 < $1.1 }
        guard let best, best.1 <= 2 else { return "" }
        return " (did you mean \(quoted(best.0))?)"
    }

    private func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty || b.isEmpty { return Swift.max(a.count, b.count) }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                current[j] = Swift.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}
