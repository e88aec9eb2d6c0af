// Full Foundation: NFKC normalization (`precomposedStringWithCompatibilityMapping`) is not in FoundationEssentials.
import Foundation

/// Folds a tool name so that names a human (or a model) would read as the same collide: case, NFKC compatibility
/// forms (fullwidth letters, ligatures), common Cyrillic/Greek look-alikes, and invisible characters.
/// Used only to refuse imitations of names the policy mentions, never to grant anything.
enum NameFolding {
    static func fold(_ name: String) -> String {
        // Fast path: plain ASCII only needs lowercasing, and a name without capitals (most tool names) is its own
        // fold: no copy, for a check that runs on every call of a tool the policy does not list.
        if name.utf8.allSatisfy({ $0 < 0x80 }) {
            guard name.utf8.contains(where: { $0 >= 0x41 && $0 <= 0x5a }) else { return name }
            return String(decoding: name.utf8.map { $0 >= 0x41 && $0 <= 0x5a ? $0 + 0x20 : $0 }, as: UTF8.self)
        }
        var visible = String.UnicodeScalarView()
        for scalar in name.unicodeScalars where !isInvisible(scalar) { visible.append(scalar) }
        let normalized = String(visible).precomposedStringWithCompatibilityMapping
        var mapped = String.UnicodeScalarView()
        for scalar in normalized.unicodeScalars where !isInvisible(scalar) {
            if let latin = confusables[scalar] {
                mapped.append(latin)
            } else {
                mapped.append(scalar)
            }
        }
        return String(mapped).lowercased()
    }

    /// Zero-width and other format characters (ZWSP, ZWJ, ZWNJ, BOM, soft hyphen, word joiner…), variation
    /// selectors and combining grapheme joiner: they change the bytes but not what a reader sees.
    private static func isInvisible(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x034F, 0x180B...0x180E, 0xFE00...0xFE0F, 0xE0100...0xE01EF: return true
        default: return scalar.properties.generalCategory == .format
        }
    }

    /// Case-preserving map from look-alike letters to the Latin letter they imitate (applied before lowercasing,
    /// because e.g. Greek `Ν` looks like `N` while its lowercase `ν` looks like `v`).
    private static let confusables: [Unicode.Scalar: Unicode.Scalar] = {
        let pairs: [(String, String)] = [
            // Cyrillic capitals
            ("А", "A"), ("В", "B"), ("Е", "E"), ("К", "K"), ("М", "M"), ("Н", "H"), ("О", "O"), ("Р", "P"),
            ("С", "C"), ("Т", "T"), ("Х", "X"), ("У", "Y"), ("Ѕ", "S"), ("І", "I"), ("Ј", "J"), ("Ԛ", "Q"),
            ("Ԝ", "W"), ("Ӏ", "l"),
            // Cyrillic small
            ("а", "a"), ("е", "e"), ("о", "o"), ("р", "p"), ("с", "c"), ("у", "y"), ("х", "x"), ("ѕ", "s"),
            ("і", "i"), ("ј", "j"), ("ԁ", "d"), ("һ", "h"), ("ԛ", "q"), ("ԝ", "w"), ("ӏ", "l"), ("к", "k"),
            ("м", "m"), ("н", "h"), ("т", "t"), ("в", "b"), ("ь", "b"), ("г", "r"), ("п", "n"),
            // Greek capitals
            ("Α", "A"), ("Β", "B"), ("Ε", "E"), ("Ζ", "Z"), ("Η", "H"), ("Ι", "I"), ("Κ", "K"), ("Μ", "M"),
            ("Ν", "N"), ("Ο", "O"), ("Ρ", "P"), ("Τ", "T"), ("Υ", "Y"), ("Χ", "X"),
            // Greek small
            ("α", "a"), ("ε", "e"), ("ι", "i"), ("κ", "k"), ("ν", "v"), ("ο", "o"), ("ρ", "p"), ("τ", "t"),
            ("υ", "u"), ("χ", "x"), ("η", "n"), ("β", "b"),
            // Latin look-alikes outside ASCII
            ("ı", "i"), ("ɑ", "a"), ("ɡ", "g"), ("ℓ", "l"),
        ]
        var table: [Unicode.Scalar: Unicode.Scalar] = [:]
        for (from, to) in pairs {
            if let source = from.unicodeScalars.first, let target = to.unicodeScalars.first { table[source] = target }
        }
        return table
    }()
}
