#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
/// A JSON value that is `Sendable`, `Hashable` and round-trips through `Codable`.
///
/// Shared by the runtime (event data, task metadata) and the policy layer (tool arguments), which must not depend on
/// the MCP SDK's own `Value` type.
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])
}

extension JSONValue: Codable {
    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int.self) {
            self = .int(value)
        } else if let value = try? container.decode(Double.self) {
            self = .double(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else if let value = try? container.decode([String: JSONValue].self) {
            self = .object(value)
        } else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a JSON value")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        case .double(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}

extension JSONValue: ExpressibleByNilLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByStringLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    public init(nilLiteral: ()) { self = .null }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
}

extension JSONValue {
    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    public var boolValue: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }

    /// The integer value; a double is accepted only when it has no fractional part.
    public var intValue: Int? {
        switch self {
        case .int(let value): return value
        case .double(let value) where value.rounded() == value && abs(value) < 9.0e15: return Int(value)
        default: return nil
        }
    }

    /// Any JSON number as a double.
    public var doubleValue: Double? {
        switch self {
        case .int(let value): return Double(value)
        case .double(let value): return value
        default: return nil
        }
    }

    public var arrayValue: [JSONValue]? {
        if case .array(let value) = self { return value }
        return nil
    }

    public var objectValue: [String: JSONValue]? {
        if case .object(let value) = self { return value }
        return nil
    }

    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// The JSON type's name, as used in error messages and the policy layer's `type` operator.
    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .int, .double: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }

    public subscript(key: String) -> JSONValue? {
        objectValue?[key]
    }

    /// The object with `other`'s members added (replacing same-named ones); any other value is returned as it is.
    public func merging(_ other: [String: JSONValue]) -> JSONValue {
        guard case .object(var object) = self else { return self }
        object.merge(other) { _, new in new }
        return .object(object)
    }
}

extension JSONValue {
    /// Parses JSON text (any value at the top level).
    public static func parse(_ text: String) throws -> JSONValue {
        try parse(Data(text.utf8))
    }

    /// `id`, `method` and whether `result`/`error` are present, skipping over everything else; nil unless `data`
    /// holds one JSON object and nothing after it, with no routing member repeated. For routing messages without
    /// building them. `lenient`: best effort, for answering a text that is being refused.
    public static func summarizeMessage(_ data: Data, lenient: Bool = false) -> JSONMessageSummary? {
        data.withUnsafeBytes { JSONParser.summarize($0, lenient: lenient) }
    }

    /// The members of the object whose `{` is at byte `start` of `bytes`, where each lies in the text, without
    /// building their values (which are checked only for brackets and strings); and the index past its `}`. For
    /// changing a message's text in place instead of rebuilding all of it. Nil when there is no whole object there.
    public static func memberSpans(
        _ bytes: UnsafeRawBufferPointer, objectAt start: Int
    ) -> (members: [JSONMemberSpan], end: Int)? {
        JSONParser.memberSpans(bytes, objectAt: start)
    }

    /// Strict RFC 8259 over raw bytes (a part of a larger text, found with `memberSpans`).
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(JSONParseError) -> JSONValue {
        try JSONParser.parse(bytes)
    }

    /// Strict RFC 8259 (see `JSONParser`); throws `JSONParseError` saying where the text stops being JSON.
    public static func parse(_ data: Data) throws -> JSONValue {
        try data.withUnsafeBytes { bytes throws(JSONParseError) in try JSONParser.parse(bytes) }
    }

    /// As `parse`, but an object with a repeated key is an error: where a gatekeeper and the receiver might keep
    /// different copies of a key, the text is ambiguous.
    public static func parseRejectingDuplicateKeys(_ data: Data) throws -> JSONValue {
        try data.withUnsafeBytes { bytes throws(JSONParseError) in try JSONParser.parse(bytes, rejectsDuplicateKeys: true) }
    }

    /// As `parseRejectingDuplicateKeys`, and keys of one object that differ only in letter case are an error too:
    /// a receiver that matches keys regardless of case keeps the last of them (`JSONKeyFolding`).
    public static func parseRejectingAmbiguousKeys(_ data: Data) throws -> JSONValue {
        try data.withUnsafeBytes { bytes throws(JSONParseError) in
            try JSONParser.parse(bytes, rejectsDuplicateKeys: true, rejectsCaseVariantKeys: true)
        }
    }
}
