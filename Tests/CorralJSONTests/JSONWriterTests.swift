import Foundation
import Testing

@testable import CorralJSON

/// The writer's text is hashed (audit lines, approval states bind a SHA-256 of the arguments), so it must stay the
/// same byte for byte: these are the texts it has always written.
@Suite struct JSONWriterTests {
    @Test func escapesAsBefore() {
        let value = JSONValue.string("a\"b\\c\n\r\t\u{01}\u{1F}\u{7F} é 😀 /")
        #expect(value.jsonString() == "\"a\\\"b\\\\c\\n\\r\\t\\u0001\\u001f\u{7F} é 😀 /\"")
    }

    /// Escapes at the start, the end, side by side and between runs of plain bytes: the text reads back as the
    /// same string, and Foundation reads it the same way.
    @Test func escapedRunsReadBackAsWritten() throws {
        let pieces = ["\"", "\\", "\n", "\u{00}", "\u{1F}", "plain", "é", "😀", " ", "{\"k\": [1, 2]}", ""]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let text = (0..<Int.random(in: 0...12, using: &generator))
                .map { _ in pieces.randomElement(using: &generator) ?? "" }.joined()
            let written = JSONValue.string(text).jsonString()
            #expect(try JSONValue.parse(written) == .string(text), "\(written)")
            let foundation = try JSONSerialization.jsonObject(with: Data(written.utf8), options: .fragmentsAllowed)
            #expect(foundation as? String == text)
        }
    }

    /// Byte for byte what escaping one byte at a time writes, with escapes at every offset of the eight-byte words
    /// the writer copies at once (and words of only plain bytes, UTF-8 included, between them).
    @Test func escapesWordsAsByteByByte() {
        let pieces = [
            "\"", "\\", "\n", "\r", "\t", "\u{00}", "\u{1F}", "\u{7F}", " ", "!", "#", "[", "]", "~", "a", "é", "😀",
            "0123456789abcdef",
        ]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<5000 {
            let text = (0..<Int.random(in: 0...40, using: &generator))
                .map { _ in pieces.randomElement(using: &generator) ?? "" }.joined()
            var expected: [UInt8] = [UInt8(ascii: "\"")]
            for byte in text.utf8 {
                switch byte {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"): expected += [UInt8(ascii: "\\"), byte]
                case UInt8(ascii: "\n"): expected += Array("\\n".utf8)
                case UInt8(ascii: "\r"): expected += Array("\\r".utf8)
                case UInt8(ascii: "\t"): expected += Array("\\t".utf8)
                case 0..<0x20: expected += Array(String(format: "\\u%04x", Int(byte)).utf8)
                default: expected.append(byte)
                }
            }
            expected.append(UInt8(ascii: "\""))
            #expect(Array(JSONValue.string(text).jsonString().utf8) == expected, "\(text.debugDescription)")
        }
    }

    @Test func objectsAreSortedAndNumbersPlain() {
        let value: JSONValue = ["b": [1, 2.5, -3, 1e20, .null, true, false], "a": [:], "é": [], "A": "x", "10": 10]
        #expect(value.jsonString() == #"{"10":10,"A":"x","a":{},"b":[1,2.5,-3,1e+20,null,true,false],"é":[]}"#)
    }

    @Test func prettyIndentsByTwo() {
        let value: JSONValue = ["k": [1, ["x": "y"]]]
        #expect(value.jsonString(pretty: true) == "{\n  \"k\": [\n    1,\n    {\n      \"x\": \"y\"\n    }\n  ]\n}")
    }

    @Test(arguments: [0, 7, 9, 10, -1, -10, 1_000_000, Int.max, Int.min])
    func integers(_ number: Int) {
        #expect(JSONValue.int(number).jsonString() == String(number))
    }

    /// Members come in String's `<` order of their keys, as they always have (hashes depend on it), however the
    /// writer gets there: keys sharing their first eight bytes, keys that are prefixes of others, and non-ASCII
    /// keys whose canonical order is not their byte order (an "h" followed by a combining mark sorts after "i").
    @Test func membersInStringOrder() {
        let pieces = ["a", "b", "Z", "_", "0", "abcdefgh", "abcdefghi", "abcdefgi", "h\u{308}", "i", "é", "e\u{301}", "😀", ""]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            var object: [String: JSONValue] = [:]
            for index in 0..<Int.random(in: 0...12, using: &generator) {
                let key = (0..<Int.random(in: 1...3, using: &generator))
                    .map { _ in pieces.randomElement(using: &generator) ?? "" }.joined()
                object[key] = .int(index)
            }
            let written = JSONWriter.sortedMembers(object).map(\.key)
            #expect(written == object.keys.sorted(), "\(written)")
        }
        let task: JSONValue = ["last_event_at": 1, "last_event": 2, "last_error": 3, "abcdefgh\u{308}": 4, "abcdefgi": 5]
        #expect(task.jsonString() == #"{"abcdefgi":5,"abcdefgḧ":4,"last_error":3,"last_event":2,"last_event_at":1}"#)
    }

    /// Control characters written as \u00XX make the text longer than the room first made for it (two bytes each).
    @Test func longRunsOfControlCharacters() throws {
        let text = String(repeating: "\u{01}\u{1F}\"x", count: 500)
        let written = JSONValue.string(text).jsonString()
        #expect(written.utf8.count == 2 + 500 * (6 + 6 + 2 + 1))
        #expect(try JSONValue.parse(written) == .string(text))
    }
}
