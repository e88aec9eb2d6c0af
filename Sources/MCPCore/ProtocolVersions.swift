import CorralJSON

/// The two MCP eras Corral serves side by side.
///
/// 2026-07-28 is stateless: each request carries its version and the client's capabilities in `params._meta`, and
/// there is no `initialize`. 2025-11-25 (and the handshake revisions before it) negotiate once per stdio process or
/// HTTP session.
public enum MCPEra: Sendable, Hashable, CustomStringConvertible {
    /// A handshake-era connection, with the version `initialize` settled on.
    case legacy(version: String)
    /// A stateless request at this version.
    case modern(version: String)

    public var isModern: Bool {
        if case .modern = self { return true }
        return false
    }

    public var version: String {
        switch self {
        case .legacy(let version), .modern(let version): version
        }
    }

    /// `legacy` or `modern`, as audit lines write it.
    public var name: String { isModern ? "modern" : "legacy" }

    public var description: String { "\(name) (\(version))" }
}

public enum ProtocolVersions {
    /// The stateless revisions this implementation speaks, oldest first.
    public static let modern = ["2026-07-28"]
    /// Handshake revisions an `initialize` may ask for, newest first; another one is answered with the newest.
    public static let legacy = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"]
    public static let latestModern = "2026-07-28"
    public static let latestLegacy = "2025-11-25"
    /// What `server/discover` advertises, newest first.
    public static var supported: [String] { modern.reversed() + [latestLegacy] }

    /// The version an `initialize` asking for `requested` gets.
    public static func negotiateLegacy(_ requested: String?) -> String {
        guard let requested, legacy.contains(requested) else { return latestLegacy }
        return requested
    }

    /// Whether a version string has the spec's shape (`YYYY-MM-DD`); anything else is a malformed value, not merely
    /// an unsupported one.
    public static func isDateShaped(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard bytes.count == 10, bytes[4] == UInt8(ascii: "-"), bytes[7] == UInt8(ascii: "-") else { return false }
        return bytes.enumerated().allSatisfy { index, byte in
            index == 4 || index == 7 || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
        }
    }
}

/// The reserved `_meta` keys of 2026-07-28.
public enum MetaKey {
    public static let protocolVersion = "io.modelcontextprotocol/protocolVersion"
    public static let clientCapabilities = "io.modelcontextprotocol/clientCapabilities"
    public static let clientInfo = "io.modelcontextprotocol/clientInfo"
    public static let logLevel = "io.modelcontextprotocol/logLevel"
    public static let serverInfo = "io.modelcontextprotocol/serverInfo"
    public static let subscriptionID = "io.modelcontextprotocol/subscriptionId"
}

/// Streamable HTTP header names (compared case-insensitively).
public enum MCPHeader {
    public static let protocolVersion = "mcp-protocol-version"
    public static let method = "mcp-method"
    public static let name = "mcp-name"
    public static let sessionID = "mcp-session-id"
    public static let paramPrefix = "mcp-param-"
}

extension JSONValue {
    /// Whether a request's params carry the 2026-07-28 version key: the one signal of a modern request (legacy
    /// requests also have `_meta`, for a progress token).
    public var hasModernEnvelope: Bool {
        self["_meta"]?[MetaKey.protocolVersion] != nil
    }
}
