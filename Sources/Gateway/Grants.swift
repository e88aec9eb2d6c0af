import CorralJSON
import Crypto
import Foundation
import MCPCore
import Synchronization

/// `--grants FILE`: which bearer token stands for which grant, `{"grants": [{"id": "team-a", "token_sha256":
/// "<64 hex digits>"}]}`. Tokens are stored only as SHA-256 digests, never in clear; a grant may have several
/// tokens (rotation), a token one grant only. Replaced as a whole by `reload`, like the policy: an invalid file
/// is refused and the old table stays.
public final class GrantTable: BearerAuthenticator {
    public struct Grant: Sendable, Hashable {
        public let id: String
        let digest: [UInt8]
    }

    public struct LoadError: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    private let grants: Mutex<[Grant]>

    public init(contentsOfFile path: String) throws(LoadError) {
        grants = Mutex(try Self.load(path))
    }

    public init(text: String) throws(LoadError) {
        grants = Mutex(try Self.parse(Data(text.utf8), source: "grants"))
    }

    /// The grant ids, in file order (for logs).
    public var ids: [String] { grants.withLock { $0.map(\.id) } }

    /// Replaces the table with the file's, if it is valid.
    public func reload(from path: String) -> Result<Void, LoadError> {
        do {
            let loaded = try Self.load(path)
            grants.withLock { $0 = loaded }
            return .success(())
        } catch {
            return .failure(error)
        }
    }

    /// Compares the token's digest with every entry, without stopping at a match or at the first differing byte,
    /// so that the time taken says nothing about which digest, or how much of one, matched.
    public func principal(forToken token: String) -> String? {
        let digest = Array(SHA256.hash(data: Data(token.utf8)))
        return grants.withLock { grants in
            var found: String?
            for grant in grants {
                var difference: UInt8 = 0
                for index in 0..<32 { difference |= grant.digest[index] ^ digest[index] }
                if difference == 0 { found = grant.id }
            }
            return found
        }
    }

    /// The SHA-256 of a token, as the file holds it (what `corral grants hash` prints).
    public static func digestHex(of token: String) -> String {
        SHA256.hash(data: Data(token.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    private static func load(_ path: String) throws(LoadError) -> [Grant] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw LoadError(description: "\(path): cannot be read")
        }
        return try parse(data, source: path)
    }

    static func parse(_ data: Data, source: String) throws(LoadError) -> [Grant] {
        func fail(_ why: String) -> LoadError { LoadError(description: "\(source): \(why)") }
        let document: JSONValue
        do {
            document = try JSONValue.parseRejectingDuplicateKeys(data)
        } catch {
            throw fail("not valid JSON: \(error)")
        }
        guard let root = document.objectValue else { throw fail("the top level must be an object {\"grants\": [...]}") }
        if let unknown = root.keys.first(where: { $0 != "grants" }) { throw fail("unknown key \"\(unknown)\" (only \"grants\")") }
        guard let entries = root["grants"]?.arrayValue else { throw fail("\"grants\" must be an array") }
        var grants: [Grant] = []
        var owners: [String: String] = [:]
        for (index, entry) in entries.enumerated() {
            let at = "grants[\(index)]"
            guard let object = entry.objectValue else { throw fail("\(at) must be an object") }
            if let unknown = object.keys.first(where: { $0 != "id" && $0 != "token_sha256" }) {
                throw fail("\(at): unknown key \"\(unknown)\" (only \"id\" and \"token_sha256\"; tokens are never stored in clear)")
            }
            guard let id = object["id"]?.stringValue, !id.isEmpty else { throw fail("\(at).id must be a non-empty string") }
            guard let hex = object["token_sha256"]?.stringValue else { throw fail("\(at).token_sha256 must be a string") }
            guard let digest = Self.bytes(hex: hex) else {
                throw fail("\(at).token_sha256 must be 64 hex digits (a SHA-256), got \(hex.count) characters")
            }
            let key = hex.lowercased()
            if let other = owners[key] {
                throw fail("\(at): the same token as grant \"\(other)\" (a token stands for one grant only)")
            }
            owners[key] = id
            grants.append(Grant(id: id, digest: digest))
        }
        return grants
    }

    private static func bytes(hex: String) -> [UInt8]? {
        let digits = Array(hex.utf8)
        guard digits.count == 64 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(32)
        for index in stride(from: 0, to: 64, by: 2) {
            guard let high = nibble(digits[index]), let low = nibble(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
        }
        return bytes
    }

    private static func nibble(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
