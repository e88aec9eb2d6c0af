import CorralJSON

/// A tool call that cannot be carried out: returned to the client as an `isError: true` result.
public struct ToolError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}

/// Typed access to a tool call's arguments, with the error messages a client needs to fix its call.
struct Arguments {
    private let values: [String: JSONValue]
    private let tool: String

    /// Refuses arguments that are not an object and names the tool's unknown arguments (a typo must not be ignored).
    init(_ arguments: JSONValue?, tool: String, allowed: Set<String>) throws(ToolError) {
        switch arguments {
        case nil, .null?:
            values = [:]
        case .object(let object)?:
            values = object
        case let other?:
            throw ToolError("\(tool): arguments must be an object, got \(other.typeName)")
        }
        self.tool = tool
        let unknown = values.keys.filter { !allowed.contains($0) }.sorted()
        if !unknown.isEmpty {
            throw ToolError(
                "\(tool): unknown argument\(unknown.count > 1 ? "s" : "") \(unknown.joined(separator: ", ")) "
                    + "(accepted: \(allowed.sorted().joined(separator: ", ")))")
        }
    }

    private func present(_ name: String) -> JSONValue? {
        guard let value = values[name], !value.isNull else { return nil }
        return value
    }

    func string(_ name: String) throws(ToolError) -> String {
        guard let value = try optionalString(name) else { throw ToolError("\(tool): missing required argument \(name)") }
        return value
    }

    func optionalString(_ name: String) throws(ToolError) -> String? {
        guard let value = present(name) else { return nil }
        guard let string = value.stringValue else { throw typeError(name, "a string", value) }
        return string
    }

    func optionalInt(_ name: String) throws(ToolError) -> Int? {
        guard let value = present(name) else { return nil }
        guard let number = value.intValue else { throw typeError(name, "an integer", value) }
        return number
    }

    func int(_ name: String, default fallback: Int) throws(ToolError) -> Int {
        try optionalInt(name) ?? fallback
    }

    func optionalObject(_ name: String) throws(ToolError) -> [String: JSONValue]? {
        guard let value = present(name) else { return nil }
        guard let object = value.objectValue else { throw typeError(name, "an object", value) }
        return object
    }

    func optionalStrings(_ name: String) throws(ToolError) -> [String]? {
        guard let value = present(name) else { return nil }
        guard let array = value.arrayValue else { throw typeError(name, "a list of strings", value) }
        var strings: [String] = []
        for (index, element) in array.enumerated() {
            guard let string = element.stringValue else {
                throw ToolError("\(tool): \(name)[\(index)] must be a string, got \(element.typeName)")
            }
            strings.append(string)
        }
        return strings
    }

    func value(_ name: String) -> JSONValue? {
        present(name)
    }

    private func typeError(_ name: String, _ expected: String, _ value: JSONValue) -> ToolError {
        ToolError("\(tool): argument \(name) must be \(expected), got \(value.typeName)")
    }
}
