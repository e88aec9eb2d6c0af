import Crypto
#if canImport(FoundationEssentials)
import FoundationEssentials  // DataProtocol, which swift-crypto's hash takes (the inlinable code names it)
#else
import Foundation
#endif

/// SHA-256 fingerprints: a policy file's revision, an audit line's digest of the arguments. swift-crypto's (BoringSSL's
/// assembly): the hand-written one this replaces was a tenth of a proxied call's instructions, for the audit digest.
public enum SHA256 {
    // Inlinable so that each caller gets a copy specialized for its byte collection: unspecialized, the contiguous
    // storage check and the hex loop over the digest went through witness tables on every audit line.

    /// The 32-byte digest of `bytes`.
    @inlinable
    public static func digest<Bytes: Collection>(_ bytes: Bytes) -> [UInt8] where Bytes.Element == UInt8 {
        Array(hash(bytes))
    }

    /// The digest as 64 lowercase hex characters.
    @inlinable
    public static func hex<Bytes: Collection>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        let digits: StaticString = "0123456789abcdef"
        return String(unsafeUninitializedCapacity: 64) { out in
            digits.withUTF8Buffer { digits in
                var index = 0
                for byte in hash(bytes) {
                    out[index] = digits[Int(byte >> 4)]
                    out[index + 1] = digits[Int(byte & 0x0f)]
                    index += 2
                }
                return index
            }
        }
    }

    @inlinable
    static func hash<Bytes: Collection>(_ bytes: Bytes) -> Crypto.SHA256.Digest where Bytes.Element == UInt8 {
        if let digest = bytes.withContiguousStorageIfAvailable({ Crypto.SHA256.hash(data: UnsafeRawBufferPointer($0)) }) {
            return digest
        }
        return Crypto.SHA256.hash(data: Array(bytes))
    }
}

/// Identifies one policy file's exact bytes (SHA-256, lowercase hex), recorded with decisions for audit.
public struct PolicyRevision: Sendable, Hashable, CustomStringConvertible {
    public let hex: String
    public init(hex: String) { self.hex = hex }
    public init<Bytes: Collection>(of bytes: Bytes) where Bytes.Element == UInt8 { hex = SHA256.hex(bytes) }
    public var description: String { hex }
}
