/// Object keys as a decoder that matches them regardless of letter case sees them. Go's `encoding/json` (and so MCP
/// servers built on it) folds keys by Unicode simple case folding and keeps the last of the keys that fold alike:
/// to it `{"name":"a","Name":"b"}` names tool `b`, and `{"Method":"tools/call"}` is a call. A gatekeeper that reads
/// keys exactly must refuse such text rather than judge a message the server reads otherwise.
///
/// ASCII letters and the two non-ASCII letters that fold to ASCII ones (the Kelvin sign to `k`, the long s to `s`)
/// are folded exactly; any other key by lowercasing its uppercase form, which folds the other letters alike.
public enum JSONKeyFolding {
    /// The key folded; an ASCII key without capitals is returned as it is (no copy).
    public static func fold(_ key: String) -> String {
        let utf8 = key.utf8
        if utf8.allSatisfy({ $0 < 0x80 }) {
            guard utf8.contains(where: isUpper) else { return key }
            return String(decoding: utf8.map { isUpper($0) ? $0 | 0x20 : $0 }, as: UTF8.self)
        }
        var scalars = String.UnicodeScalarView()
        for scalar in key.unicodeScalars {
            switch scalar.value {
            case 0x212A: scalars.append("k")  // KELVIN SIGN
            case 0x017F: scalars.append("s")  // LATIN SMALL LETTER LONG S
            default: scalars.append(scalar)
            }
        }
        return String(scalars).uppercased().lowercased()
    }

    /// A hash of the folded key (FNV-1a), without building the folded key when it is ASCII.
    static func foldedHash(_ key: String) -> UInt64 {
        var copy = key
        return copy.withUTF8 { foldedHash(UnsafeRawBufferPointer($0)) } ?? slowFoldedHash(key)
    }

    /// The same over a key's raw UTF-8; nil when it is not ASCII (then the key is folded as a String).
    @inline(__always)
    static func foldedHash(_ bytes: UnsafeRawBufferPointer) -> UInt64? {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            guard byte < 0x80 else { return nil }
            hash = (hash ^ UInt64(byte &- 0x41 < 26 ? byte | 0x20 : byte)) &* 0x0000_0100_0000_01B3
        }
        return hash
    }

    static func slowFoldedHash(_ key: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in fold(key).utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return hash
    }

    /// Whether `key` folds to `folded` (an ASCII key already folded). No copy unless `key` holds a non-ASCII byte
    /// (only the Kelvin sign and the long s fold to ASCII letters).
    public static func folds(_ key: String, to folded: String) -> Bool {
        let keyBytes = key.utf8, foldedBytes = folded.utf8
        if keyBytes.count == foldedBytes.count {
            return zip(keyBytes, foldedBytes).allSatisfy { byte, expected in (isUpper(byte) ? byte | 0x20 : byte) == expected }
        }
        guard keyBytes.count > foldedBytes.count, keyBytes.contains(where: { $0 >= 0x80 }) else { return false }
        return fold(key) == folded
    }

    @inline(__always)
    private static func isUpper(_ byte: UInt8) -> Bool { byte >= 0x41 && byte <= 0x5A }
}
