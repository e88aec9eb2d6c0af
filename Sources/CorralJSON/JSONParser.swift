#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Why a text is not JSON, and where.
public struct JSONParseError: Error, CustomStringConvertible, Sendable {
    public let offset: Int
    public let reason: String
    public var description: String { "invalid JSON at byte \(offset): \(reason)" }
}

/// What `JSONValue.summarizeMessage` reads off a JSON-RPC message.
public struct JSONMessageSummary: Sendable, Hashable {
    public var id: JSONValue?
    public var method: String?
    public var hasResult = false
    public var hasError = false
    /// Where the values of `params` and `result` lie in the text summarized (byte offsets), for rewriting them in
    /// place without reading the message again.
    public var paramsSpan: Range<Int>?
    public var resultSpan: Range<Int>?
}

/// One member of an object as it lies in a text (`JSONValue.memberSpans`): its key, where the key's opening quote
/// is, and the bytes of its value.
public struct JSONMemberSpan: Sendable, Hashable {
    public let key: String
    public let keyStart: Int
    public let value: Range<Int>
}

/// A strict RFC 8259 parser straight into `JSONValue`.
///
/// Written by hand because the gateway parses every message on the hot path of each tool call: `JSONDecoder`
/// through `JSONValue`'s `Codable` conformance tries each case in turn (one thrown error per miss) and costs tens of
/// microseconds for a small request; this is one pass over the bytes. Numbers with an integral value that fits
/// `Int` become `.int` (`1E3`, `2.0` too, as JSONDecoder decides), every other number `.double`; strings must be valid UTF-8; nesting is limited to 512 levels; a repeated object key
/// keeps its first value, as JSONDecoder does (or is an error, for gatekeepers, with keys that differ only in
/// letter case too where they ask: `JSONKeyFolding`).
struct JSONParser: ~Copyable {
    private let bytes: UnsafeRawBufferPointer
    private var index = 0
    private var depth = 0
    private let rejectsDuplicateKeys: Bool
    private let rejectsCaseVariantKeys: Bool
    /// The folded-key hashes of the objects being read, innermost last (`rejectsCaseVariantKeys`).
    private var foldedKeys: [UInt64] = []
    private static let maximumDepth = 512

    init(_ bytes: UnsafeRawBufferPointer, rejectsDuplicateKeys: Bool = false, rejectsCaseVariantKeys: Bool = false) {
        self.bytes = bytes
        self.rejectsDuplicateKeys = rejectsDuplicateKeys || rejectsCaseVariantKeys
        self.rejectsCaseVariantKeys = rejectsCaseVariantKeys
        if rejectsCaseVariantKeys { foldedKeys.reserveCapacity(32) }  // one allocation for a usual message
    }

    static func parse(
        _ bytes: UnsafeRawBufferPointer, rejectsDuplicateKeys: Bool = false, rejectsCaseVariantKeys: Bool = false
    ) throws(JSONParseError) -> JSONValue {
        var parser = JSONParser(bytes, rejectsDuplicateKeys: rejectsDuplicateKeys, rejectsCaseVariantKeys: rejectsCaseVariantKeys)
        parser.skipWhitespace()
        let value = try parser.parseValue()
        parser.skipWhitespace()
        guard parser.index == bytes.count else { throw parser.error("unexpected text after the value") }
        return value
    }

    /// The top-level members of a JSON-RPC message that a gateway routes on, without building the rest: `id` is
    /// parsed, every other value is only skipped over. Nil when the text is not a single JSON object followed by
    /// nothing but whitespace, or when a member routing depends on is repeated (which copy would the receiver
    /// take?). `lenient`: for answering a refused text — text after the object is ignored, a repeated member keeps
    /// its first copy (as JSONDecoder does).
    static func summarize(_ bytes: UnsafeRawBufferPointer, lenient: Bool = false) -> JSONMessageSummary? {
        var parser = JSONParser(bytes)
        parser.skipWhitespace()
        guard parser.current == UInt8(ascii: "{") else { return nil }
        parser.index += 1
        var summary = JSONMessageSummary()
        var seen: UInt8 = 0  // a bit per routing member (`routingBit`): a Set of names hashed every key
        do {
            parser.skipWhitespace()
            if parser.current != UInt8(ascii: "}") {
                members: while true {
                    parser.skipWhitespace()
                    guard parser.current == UInt8(ascii: "\"") else { return lenient ? summary : nil }
                    let key = try parser.parseString()
                    parser.skipWhitespace()
                    guard parser.current == UInt8(ascii: ":") else { return lenient ? summary : nil }
                    parser.index += 1
                    parser.skipWhitespace()
                    let bit = Self.routingBit(key)
                    // A member that only differs in letter case is the member itself to some receivers.
                    if bit == 0, !lenient, Self.routingBit(JSONKeyFolding.fold(key)) != 0 { return nil }
                    let repeated = seen & bit != 0
                    seen |= bit
                    if repeated && !lenient { return nil }
                    switch key {
                    case "id" where !repeated: summary.id = try parser.parseValue()
                    case "method" where !repeated: summary.method = try parser.parseValue().stringValue
                    case "error": summary.hasError = true; try parser.skipValue()
                    case "result", "params":
                        let start = parser.index
                        try parser.skipValue()
                        if key == "result" { summary.hasResult = true }
                        guard !repeated else { break }
                        if key == "result" { summary.resultSpan = start..<parser.index } else { summary.paramsSpan = start..<parser.index }
                    default: try parser.skipValue()
                    }
                    parser.skipWhitespace()
                    switch parser.current {
                    case UInt8(ascii: ","): parser.index += 1
                    case UInt8(ascii: "}"): break members
                    default: return lenient ? summary : nil
                    }
                }
            }
            parser.index += 1
            parser.skipWhitespace()
            // Text after the object is a second message to a receiver that splits differently (a bare \r).
            return parser.index == bytes.count || lenient ? summary : nil
        } catch {
            return lenient ? summary : nil
        }
    }

    /// The members of the object whose `{` is at `start`, in the text's order, their values skipped (checked only
    /// for brackets and strings, as `summarize` does), and the index just past its `}`. Nil when the text there is
    /// not an object or ends inside it.
    static func memberSpans(_ bytes: UnsafeRawBufferPointer, objectAt start: Int) -> (members: [JSONMemberSpan], end: Int)? {
        var parser = JSONParser(bytes)
        parser.index = start
        guard parser.current == UInt8(ascii: "{") else { return nil }
        parser.index += 1
        var members: [JSONMemberSpan] = []
        do {
            parser.skipWhitespace()
            if parser.current == UInt8(ascii: "}") { return (members, parser.index + 1) }
            while true {
                parser.skipWhitespace()
                guard parser.current == UInt8(ascii: "\"") else { return nil }
                let keyStart = parser.index
                let key = try parser.parseString()
                parser.skipWhitespace()
                guard parser.current == UInt8(ascii: ":") else { return nil }
                parser.index += 1
                parser.skipWhitespace()
                let valueStart = parser.index
                try parser.skipValue()
                guard parser.index > valueStart else { return nil }  // `"key":,`
                members.append(JSONMemberSpan(key: key, keyStart: keyStart, value: valueStart..<parser.index))
                parser.skipWhitespace()
                switch parser.current {
                case UInt8(ascii: ","): parser.index += 1
                case UInt8(ascii: "}"): return (members, parser.index + 1)
                default: return nil
                }
            }
        } catch {
            return nil
        }
    }

    /// The members routing depends on, a bit each; 0 for any other.
    private static func routingBit(_ key: String) -> UInt8 {
        switch key {
        case "id": 1
        case "method": 2
        case "params": 4
        case "result": 8
        case "error": 16
        case "jsonrpc": 32
        default: 0
        }
    }

    /// Moves past one value, checking only its brackets and strings.
    private mutating func skipValue() throws(JSONParseError) {
        guard let byte = current else { throw error("unexpected end of text") }
        switch byte {
        case UInt8(ascii: "\""):
            try skipString()
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            var nesting = 0
            while let byte = current {
                switch byte {
                case UInt8(ascii: "\""): try skipString(); continue
                case UInt8(ascii: "{"), UInt8(ascii: "["): nesting += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    nesting -= 1
                    if nesting == 0 {
                        index += 1
                        return
                    }
                default: break
                }
                index += 1
            }
            throw error("unterminated value")
        default:
            // A number or a literal: up to the next delimiter.
            while let byte = current, byte != UInt8(ascii: ","), byte != UInt8(ascii: "}"), byte != UInt8(ascii: "]"),
                byte != 0x20, byte != 0x0A, byte != 0x0D, byte != 0x09
            {
                index += 1
            }
        }
    }

    /// From one quote to the next quote that no backslash escapes: found with `memchr` (a byte-by-byte walk was most of
    /// what a proxy spent reading an answer's summary), then told escaped or not by the parity of the backslashes just
    /// before it, which is how a left-to-right reading pairs them. Each backslash is counted at most once.
    private mutating func skipString() throws(JSONParseError) {
        index += 1
        guard let base = bytes.baseAddress else { throw error("unterminated string") }
        var from = index
        while from < bytes.count, let found = memchr(base + from, 0x22, bytes.count - from) {
            let quote = base.distance(to: UnsafeRawPointer(found))
            var backslashes = 0
            while quote - backslashes - 1 >= index, bytes[quote - backslashes - 1] == UInt8(ascii: "\\") { backslashes += 1 }
            if backslashes % 2 == 0 {
                index = quote + 1
                return
            }
            from = quote + 1
        }
        index = bytes.count
        throw error("unterminated string")
    }

    private func error(_ reason: String) -> JSONParseError { JSONParseError(offset: index, reason: reason) }

    private var current: UInt8? { index < bytes.count ? bytes[index] : nil }

    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    private mutating func parseValue() throws(JSONParseError) -> JSONValue {
        guard let byte = current else { throw error("unexpected end of text") }
        switch byte {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw error("unexpected character \(Self.describe(byte))")
        }
    }

    private mutating func expectLiteral(_ literal: StaticString) throws(JSONParseError) {
        let count = literal.utf8CodeUnitCount
        guard index + count <= bytes.count else { throw error("unexpected end of text") }
        let matches = literal.withUTF8Buffer { expected in
            (0..<count).allSatisfy { bytes[index + $0] == expected[$0] }
        }
        guard matches else { throw error("unknown literal") }
        index += count
    }

    private mutating func enter() throws(JSONParseError) {
        depth += 1
        if depth > Self.maximumDepth { throw error("nested deeper than \(Self.maximumDepth) levels") }
    }

    private mutating func parseObject() throws(JSONParseError) -> JSONValue {
        try enter()
        index += 1
        skipWhitespace()
        if current == UInt8(ascii: "}") {
            index += 1
            depth -= 1
            return .object([:])
        }
        // Room for six members at once: grown from empty, a four-member object was allocated and rehashed three
        // times (inserting was most of the cost of parsing a request).
        var members = [String: JSONValue](minimumCapacity: 6)
        let firstKey = foldedKeys.count
        defer { if rejectsCaseVariantKeys { foldedKeys.removeLast(foldedKeys.count - firstKey) } }
        var manyKeys: Set<UInt64> = []  // past 32 keys, instead of comparing each with all before it
        while true {
            skipWhitespace()
            guard current == UInt8(ascii: "\"") else { throw error("expected a string key") }
            let keyStart = index + 1
            let key = try parseString()
            let keyEnd = index - 1
            skipWhitespace()
            guard current == UInt8(ascii: ":") else { throw error("expected ':' after an object key") }
            index += 1
            skipWhitespace()
            let keyOffset = index
            let value = try parseValue()
            // One lookup for the usual new key; a repeated one puts its first copy back.
            if let first = members.updateValue(value, forKey: key) {
                if rejectsDuplicateKeys { throw JSONParseError(offset: keyOffset, reason: "duplicate key \"\(key)\"") }
                members[key] = first  // the first copy stays, as with JSONDecoder (and so the SDK on the other side)
            }
            if rejectsCaseVariantKeys {
                // Equal hashes are taken as equal keys: a collision only refuses a text, never lets one through.
                // Over the key's bytes in the text when it had no escape (same length as the key).
                let raw = UnsafeRawBufferPointer(rebasing: bytes[keyStart..<keyEnd])
                let hash =
                    (raw.count == key.utf8.count ? JSONKeyFolding.foldedHash(raw) : nil) ?? JSONKeyFolding.slowFoldedHash(key)
                let seen = foldedKeys.count - firstKey
                let variant = seen < 32 ? foldedKeys[firstKey...].contains(hash) : !manyKeys.insert(hash).inserted
                if variant {
                    throw JSONParseError(offset: keyOffset, reason: "duplicate key \"\(key)\" (another key of the object differs from it only in letter case)")
                }
                if seen == 31 { manyKeys = Set(foldedKeys[firstKey...]).union([hash]) }
                foldedKeys.append(hash)
            }
            skipWhitespace()
            switch current {
            case UInt8(ascii: ","): index += 1
            case UInt8(ascii: "}"):
                index += 1
                depth -= 1
                return .object(members)
            default: throw error("expected ',' or '}' in an object")
            }
        }
    }

    private mutating func parseArray() throws(JSONParseError) -> JSONValue {
        try enter()
        index += 1
        var elements: [JSONValue] = []
        skipWhitespace()
        if current == UInt8(ascii: "]") {
            index += 1
            depth -= 1
            return .array(elements)
        }
        while true {
            skipWhitespace()
            elements.append(try parseValue())
            skipWhitespace()
            switch current {
            case UInt8(ascii: ","): index += 1
            case UInt8(ascii: "]"):
                index += 1
                depth -= 1
                return .array(elements)
            default: throw error("expected ',' or ']' in an array")
            }
        }
    }

    private mutating func parseString() throws(JSONParseError) -> String {
        index += 1  // the opening quote
        let start = index
        var seen: UInt8 = 0  // every byte or'ed together: below 0x80, the string is ASCII
        // Fast path: no escapes.
        while index < bytes.count {
            let byte = bytes[index]
            seen |= byte
            if byte == UInt8(ascii: "\"") {
                let string = try makeString(start..<index, ascii: seen < 0x80)
                index += 1
                return string
            }
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { throw error("control character in a string") }
            index += 1
        }
        var scalars: [UInt8] = []
        scalars.reserveCapacity(index - start + 16)
        scalars.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start..<index]))
        while true {
            guard index < bytes.count else { throw error("unterminated string") }
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                index += 1
                guard let string = scalars.withUnsafeBufferPointer(Self.validUTF8) else { throw error("invalid UTF-8 in a string") }
                return string
            case UInt8(ascii: "\\"):
                index += 1
                guard let escape = current else { throw error("unterminated escape") }
                index += 1
                switch escape {
                case UInt8(ascii: "\""): scalars.append(0x22)
                case UInt8(ascii: "\\"): scalars.append(0x5C)
                case UInt8(ascii: "/"): scalars.append(0x2F)
                case UInt8(ascii: "b"): scalars.append(0x08)
                case UInt8(ascii: "f"): scalars.append(0x0C)
                case UInt8(ascii: "n"): scalars.append(0x0A)
                case UInt8(ascii: "r"): scalars.append(0x0D)
                case UInt8(ascii: "t"): scalars.append(0x09)
                case UInt8(ascii: "u"):
                    var code = try parseHex4()
                    if (0xD800..<0xDC00).contains(code) {
                        // A high surrogate must be followed by an escaped low one.
                        guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u")
                        else { throw error("unpaired surrogate") }
                        index += 2
                        let low = try parseHex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw error("unpaired surrogate") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00..<0xE000).contains(code) {
                        throw error("unpaired surrogate")
                    }
                    guard let scalar = Unicode.Scalar(code) else { throw error("invalid \\u escape") }
                    scalars.append(contentsOf: UTF8.encode(scalar)!)
                default: throw error("unknown escape \\\(Self.describe(escape))")
                }
            default:
                if byte < 0x20 { throw error("control character in a string") }
                scalars.append(byte)
                index += 1
            }
        }
    }

    private mutating func parseHex4() throws(JSONParseError) -> UInt32 {
        guard index + 4 <= bytes.count else { throw error("short \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw error("invalid hex digit in \\u escape")
            }
            value = value << 4 | UInt32(digit)
            index += 1
        }
        return value
    }

    /// ASCII needs no validation: `String(decoding:)` over the contiguous bytes is the standard library's fast path,
    /// where `String(validating:)` over a raw buffer went through its generic one (a tenth of a task listing's CPU).
    private func makeString(_ range: Range<Int>, ascii: Bool) throws(JSONParseError) -> String {
        let slice = UnsafeRawBufferPointer(rebasing: bytes[range])
        if ascii { return String(decoding: slice.assumingMemoryBound(to: UInt8.self), as: UTF8.self) }
        guard let string = Self.validUTF8(slice.assumingMemoryBound(to: UInt8.self)) else { throw error("invalid UTF-8 in a string") }
        return string
    }

    /// `bytes` as a String when they are valid UTF-8, else nil. `String(validating:as:)` is generic and not inlinable:
    /// each call instantiated its generic metadata at run time, most of the cost of a string with an escape such as
    /// the `tools\/call` that Foundation's encoders write (`perf`, a proxied call). `String(decoding:)` has a concrete
    /// fast path but repairs instead of failing, so its bytes are compared with the input: the same bytes mean
    /// nothing was repaired.
    static func validUTF8(_ bytes: UnsafeBufferPointer<UInt8>) -> String? {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return "" }
        var string = String(decoding: bytes, as: UTF8.self)
        let unrepaired = string.withUTF8 { decoded in
            guard let start = decoded.baseAddress, decoded.count == bytes.count else { return false }
            return memcmp(start, base, bytes.count) == 0
        }
        return unrepaired ? string : nil
    }

    private mutating func parseNumber() throws(JSONParseError) -> JSONValue {
        let start = index
        var integral = true
        if current == UInt8(ascii: "-") { index += 1 }
        guard let first = current, Self.isDigit(first) else { throw error("expected a digit") }
        if first == UInt8(ascii: "0") {
            index += 1
        } else {
            while let byte = current, Self.isDigit(byte) { index += 1 }
        }
        if current == UInt8(ascii: ".") {
            integral = false
            index += 1
            guard let byte = current, Self.isDigit(byte) else { throw error("expected a digit after '.'") }
            while let byte = current, Self.isDigit(byte) { index += 1 }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            integral = false
            index += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { index += 1 }
            guard let byte = current, Self.isDigit(byte) else { throw error("expected a digit in the exponent") }
            while let byte = current, Self.isDigit(byte) { index += 1 }
        }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        if integral, let value = Int(text) { return .int(value) }
        guard let value = Double(text), value.isFinite else { throw error("number out of range") }
        // As JSONDecoder does (and so JSONValue's Codable path): a number with an integral value is an integer.
        if value.rounded(.towardZero) == value, let exact = Int(exactly: value) { return .int(exact) }
        return .double(value)
    }

    private static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    private static func describe(_ byte: UInt8) -> String {
        byte >= 0x20 && byte < 0x7F ? "'\(Character(Unicode.Scalar(byte)))'" : "0x" + String(byte, radix: 16)
    }
}
