import CorralJSON

/// A parsed `args.…` path: dot-separated keys with array indexes written either as a segment (`args.argv.0`) or in
/// brackets (`args.argv[0]`).
public struct ArgumentPath: Sendable, Hashable, CustomStringConvertible {
    public enum Segment: Sendable, Hashable {
        /// A dot segment: a key on an object, or an index on an array when it is a decimal number.
        case name(String, index: Int?)
        /// A bracketed index: only ever an array index.
        case index(Int)
    }

    public let segments: [Segment]
    /// The path exactly as written in the policy.
    public let text: String

    public var description: String { text }

    /// Parses `args`, `args.a.b`, `args.a.0`, `args.a[0].b`; returns a message when the path is malformed.
    public static func parse(_ text: String) -> Result<ArgumentPath, PathError> {
        if text == "state" || text.hasPrefix("state.") {
            return .failure(PathError(message: "\"state.\" paths are not supported; conditions read \"args.\" paths"))
        }
        guard text == "args" || text.hasPrefix("args.") || text.hasPrefix("args[") else {
            return .failure(PathError(message: "\(quoted(text)) must start with \"args.\""))
        }
        var segments: [Segment] = []
        var rest = Substring(text.dropFirst(4))
        while !rest.isEmpty {
            if rest.first == "[" {
                guard let close = rest.firstIndex(of: "]"), let index = Int(rest[rest.index(after: rest.startIndex)..<close]),
                    index >= 0
                else { return .failure(PathError(message: "\(quoted(text)) has a malformed [index]")) }
                segments.append(.index(index))
                rest = rest[rest.index(after: close)...]
            } else if rest.first == "." {
                rest = rest.dropFirst()
                let end = rest.firstIndex(where: { $0 == "." || $0 == "[" }) ?? rest.endIndex
                let name = String(rest[..<end])
                guard !name.isEmpty else { return .failure(PathError(message: "\(quoted(text)) has an empty segment")) }
                let index = name.allSatisfy(\.isASCIIDigit) ? Int(name) : nil
                segments.append(.name(name, index: index))
                rest = rest[end...]
            } else {
                return .failure(PathError(message: "\(quoted(text)) is not a valid path"))
            }
        }
        return .success(ArgumentPath(segments: segments, text: text))
    }

    /// The value at this path, or nil when any step is missing.
    public func resolve(in arguments: [String: JSONValue]) -> JSONValue? {
        var current = JSONValue.object(arguments)
        for segment in segments {
            switch (segment, current) {
            case (.name(let key, _), .object(let object)):
                guard let next = object[key] else { return nil }
                current = next
            case (.name(_, let index?), .array(let array)), (.index(let index), .array(let array)):
                guard index < array.count else { return nil }
                current = array[index]
            default:
                return nil
            }
        }
        return current
    }
}

public struct PathError: Error, Sendable, Hashable {
    public let message: String
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}

/// A string in JSON quotes, for messages.
func quoted(_ text: String) -> String { JSONValue.string(text).jsonString() }
