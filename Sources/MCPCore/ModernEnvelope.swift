import CorralJSON
import Foundation

/// What a 2026-07-28 request says about its client, after the envelope passed every check.
public struct ModernEnvelope: Sendable, Hashable {
    public let protocolVersion: String
    /// `ClientCapabilities` as sent (`{}` declares none).
    public let clientCapabilities: JSONValue
    public let clientInfo: JSONValue?
    public let logLevel: String?

    /// Whether the client declared extension `id` (`clientCapabilities.extensions[id]`).
    public func declaresExtension(_ id: String) -> Bool {
        clientCapabilities["extensions"]?[id].map { !$0.isNull } ?? false
    }

    /// Whether the client can answer `elicitation/create` input requests.
    public var canElicit: Bool { clientCapabilities["elicitation"].map { !$0.isNull } ?? false }

    /// The checks of a modern request, first failure wins (the order of the spec and the Python SDK):
    /// 1. `params._meta` is an object with the protocol version and client capabilities (-32602 naming what is
    ///    missing), each of the right type;
    /// 2. over HTTP, `MCP-Protocol-Version`, `Mcp-Method` and (for named methods) `Mcp-Name` equal the body
    ///    (-32020) — before the version check, so a client that disagrees with itself is told so;
    /// 3. the version is one this server speaks (-32022 with `data.supported`), and is date-shaped (-32602).
    public static func validate(
        method: String, params: JSONValue, headers: HTTPHeaderView?
    ) -> Result<ModernEnvelope, JSONRPCError> {
        guard let meta = params["_meta"]?.objectValue else {
            return .failure(
                .invalidParams(
                    "params._meta must be an object carrying \(MetaKey.protocolVersion) and \(MetaKey.clientCapabilities)"))
        }
        // A null member is as good as missing (it carries nothing).
        let missing = [MetaKey.protocolVersion, MetaKey.clientCapabilities].filter { meta[$0]?.isNull ?? true }
        guard missing.isEmpty else {
            return .failure(.invalidParams("params._meta is missing \(missing.joined(separator: ", "))"))
        }
        let version = meta[MetaKey.protocolVersion] ?? .null
        let capabilities = meta[MetaKey.clientCapabilities] ?? .null
        guard capabilities.objectValue != nil else {
            return .failure(.invalidParams("\(MetaKey.clientCapabilities) must be an object"))
        }
        if let info = meta[MetaKey.clientInfo], !info.isNull, info.objectValue == nil {
            return .failure(.invalidParams("\(MetaKey.clientInfo) must be an object"))
        }
        var logLevel: String?
        if let level = meta[MetaKey.logLevel], !level.isNull {
            guard let text = level.stringValue, Self.logLevels.contains(text) else {
                return .failure(.invalidParams("\(MetaKey.logLevel) must be one of \(Self.logLevels.joined(separator: ", "))"))
            }
            logLevel = text
        }
        // The types first (-32602), then whether the headers agree with them (-32020): a version of the wrong type
        // is the body's fault whatever the header says.
        guard let text = version.stringValue else {
            return .failure(.invalidParams("\(MetaKey.protocolVersion) must be a string"))
        }
        if let headers {
            if let failure = checkHeaders(headers, method: method, params: params, version: version) {
                return .failure(failure)
            }
        }
        guard ProtocolVersions.isDateShaped(text) else {
            return .failure(
                JSONRPCError(
                    code: JSONRPCError.invalidParamsCode,
                    message: "Invalid params: \(MetaKey.protocolVersion) \(version.jsonString()) is not a YYYY-MM-DD version",
                    data: ["supported": .array(ProtocolVersions.supported.map(JSONValue.string)), "requested": version]))
        }
        guard ProtocolVersions.modern.contains(text) else { return .failure(.unsupportedProtocolVersion(version)) }
        let info = meta[MetaKey.clientInfo].flatMap { $0.isNull ? nil : $0 }
        return .success(
            ModernEnvelope(protocolVersion: text, clientCapabilities: capabilities, clientInfo: info, logLevel: logLevel))
    }

    static let logLevels = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]

    /// The params key each named method mirrors in `Mcp-Name`.
    public static func nameKey(for method: String) -> String? {
        switch method {
        case "tools/call", "prompts/get": "name"
        case "resources/read": "uri"
        case _ where method.hasPrefix("tasks/"): "taskId"
        default: nil
        }
    }

    private static func checkHeaders(
        _ headers: HTTPHeaderView, method: String, params: JSONValue, version: JSONValue
    ) -> JSONRPCError? {
        for name in [MCPHeader.protocolVersion, MCPHeader.method, MCPHeader.name] where headers.count(of: name) > 1 {
            return .headerMismatch("\(name) appears more than once")
        }
        guard let sent = headers[MCPHeader.protocolVersion] else {
            return .headerMismatch("the MCP-Protocol-Version header is missing")
        }
        guard version.stringValue == sent else {
            return .headerMismatch("MCP-Protocol-Version \(sent) differs from the body's \(version.jsonString())")
        }
        guard let sentMethod = headers[MCPHeader.method] else {
            return .headerMismatch("the Mcp-Method header is missing")
        }
        guard sentMethod == method else {
            return .headerMismatch("Mcp-Method \(sentMethod) differs from the body's method \(method)")
        }
        if let key = nameKey(for: method), let bodyValue = params[key]?.stringValue {
            guard let raw = headers[MCPHeader.name] else {
                return .headerMismatch("the Mcp-Name header is missing (the body's \(key) is \(bodyValue))")
            }
            guard let decoded = HeaderValueCodec.decode(raw), decoded == bodyValue else {
                return .headerMismatch("Mcp-Name \(raw) differs from the body's \(key) \(bodyValue)")
            }
        }
        return nil
    }
}

/// Header values that are not plain printable ASCII travel as `=?base64?…?=` (SEP-2243).
public enum HeaderValueCodec {
    public static func encode(_ value: String) -> String {
        let plain = value.utf8.allSatisfy { $0 >= 0x20 && $0 <= 0x7E }
        if plain, value == value.trimmingWhitespace, !(value.hasPrefix("=?base64?") && value.hasSuffix("?=")) {
            return value
        }
        return "=?base64?" + Data(value.utf8).base64EncodedString() + "?="
    }

    /// Nil for a malformed sentinel, so a corrupt header never matches a body value by accident.
    public static func decode(_ value: String) -> String? {
        guard value.hasPrefix("=?base64?"), value.hasSuffix("?="), value.count >= 11 else { return value }
        let payload = String(value.dropFirst(9).dropLast(2))
        // Canonical only (re-encoding gives the same text): padding bits or line breaks must not make two spellings.
        guard let bytes = Data(base64Encoded: payload), bytes.base64EncodedString() == payload else { return nil }
        return String(validating: bytes, as: UTF8.self)
    }
}

extension String {
    var trimmingWhitespace: String {
        var view = Substring(self)
        while let first = view.first, first == " " || first == "\t" { view = view.dropFirst() }
        while let last = view.last, last == " " || last == "\t" { view = view.dropLast() }
        return String(view)
    }
}

/// The HTTP headers of one request (a name may repeat), looked up by name in any ASCII case.
///
/// A list, not a dictionary: a request has about ten headers, and comparing a few names byte by byte costs less than
/// lowercasing and hashing every name of every request into a dictionary (11,500 instructions a request).
public struct HTTPHeaderView: Sendable {
    private let fields: [(name: String, value: String)]

    public init(_ pairs: [(name: String, value: String)]) {
        fields = pairs
    }

    /// The first value of `name`.
    public subscript(name: String) -> String? {
        fields.first { Self.sameName($0.name, name) }?.value
    }

    public func count(of name: String) -> Int {
        fields.reduce(0) { $0 + (Self.sameName($1.name, name) ? 1 : 0) }
    }

    public func values(_ name: String) -> [String] {
        fields.compactMap { Self.sameName($0.name, name) ? $0.value : nil }
    }

    /// Field names are ASCII tokens: equal when their bytes are, ignoring ASCII case.
    static func sameName(_ a: String, _ b: String) -> Bool {
        guard a.utf8.count == b.utf8.count else { return false }
        var a = a, b = b
        return a.withUTF8 { x in
            b.withUTF8 { y in
                for index in 0..<x.count where ASCII.lower(x[index]) != ASCII.lower(y[index]) { return false }
                return true
            }
        }
    }
}

/// ASCII case without Foundation: `String.lowercased()` allocates, and Foundation's case-insensitive search went
/// through NSString (10,000 instructions for one `Accept` header).
enum ASCII {
    static func lower(_ byte: UInt8) -> UInt8 { byte &- 0x41 < 26 ? byte | 0x20 : byte }

    /// Whether `bytes` spell `text` (lowercase ASCII), ignoring ASCII case.
    static func equal(_ bytes: Slice<UnsafeBufferPointer<UInt8>>, lowercase text: StaticString) -> Bool {
        guard bytes.count == text.utf8CodeUnitCount else { return false }
        return text.withUTF8Buffer { pattern in
            zip(bytes, pattern).allSatisfy { lower($0) == $1 }
        }
    }

    /// Whether `text` contains `needle` (lowercase ASCII), ignoring ASCII case.
    static func contains(_ text: String, lowercase needle: String) -> Bool {
        var text = text, needle = needle
        return text.withUTF8 { haystack in
            needle.withUTF8 { pattern in
                guard !pattern.isEmpty else { return true }
                guard haystack.count >= pattern.count else { return false }
                for start in 0...(haystack.count - pattern.count) {
                    var index = 0
                    while index < pattern.count, lower(haystack[start + index]) == pattern[index] { index += 1 }
                    if index == pattern.count { return true }
                }
                return false
            }
        }
    }
}
