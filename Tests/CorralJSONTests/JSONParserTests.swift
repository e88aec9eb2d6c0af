import Foundation
import Testing

@testable import CorralJSON

/// The hand-written parser against Foundation's JSONDecoder (through JSONValue's Codable conformance) as the
/// reference: same values for valid text, an error for invalid text.
@Suite struct JSONParserTests {
    static func reference(_ text: Data) -> JSONValue? { try? JSONDecoder().decode(JSONValue.self, from: text) }

    static let valid: [String] = [
        "null", "true", "false", "0", "-0", "42", "-17", "9223372036854775807", "1.5", "-2.25e-3", "1E10", "2.0", "-0.0", "1e-2", "6.02e+23", "1e19",
        "\"\"", "\"plain\"", #""esc \" \\ \/ \b \f \n \r \t""#, #""\u00e9\u4e2d\ud83d\ude00""#, "\"é中😀\"",
        "[]", "{}", "[1,[2,[3,{}]]]", #"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#,
        " \n\t{ \"spaced\" : [ 1 , 2 ] } \r\n",
        #"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","arguments":{"k":"{not json}"}}}"#,
        #"{"name":"first","name":"second","n":{"a":1,"a":2}}"#,
    ]

    @Test(arguments: valid)
    func validTextMatchesJSONDecoder(_ text: String) throws {
        let data = Data(text.utf8)
        let parsed = try JSONValue.parse(data)
        #expect(parsed == Self.reference(data), "\(text)")
    }

    static let invalid: [String] = [
        "", " ", "tru", "nul", "[1,]", "[,1]", "{\"a\" 1}", "{\"a\":1,}", "{a:1}", "{\"a\":1", "[1 2]", "01", "1.", ".5",
        "+1", "-", "1e", "--1", "\"unterminated", #""bad \x escape""#, #""\ud800""#, #""\udc00\ud800""#,
        "\"tab\tinside\"", "\"line\nbreak\"", "{} x", "[] []", "NaN", "Infinity", "1e400", "'single'",
        String(repeating: "[", count: 600) + String(repeating: "]", count: 600),
    ]

    @Test(arguments: invalid)
    func invalidTextIsRefused(_ text: String) {
        #expect(throws: JSONParseError.self, "\(text)") { try JSONValue.parse(Data(text.utf8)) }
    }

    @Test func gatekeepersCanRefuseRepeatedKeys() throws {
        let text = Data(#"{"method":"tools/call","params":{"name":"a","name":"b"}}"#.utf8)
        #expect(try JSONValue.parse(text)["params"]?["name"] == "a")
        do {
            _ = try JSONValue.parseRejectingDuplicateKeys(text)
            Issue.record("a repeated key must be refused")
        } catch let error as JSONParseError {
            #expect(error.reason == #"duplicate key "name""#)
        }
        #expect(JSONValue.summarizeMessage(Data(#"{"method":"ping","id":1,"method":"tools/call"}"#.utf8)) == nil)
    }

    /// Keys that fold alike (`JSONKeyFolding`) are one key to a receiver that matches keys regardless of case.
    @Test func gatekeepersCanRefuseKeysThatDifferOnlyInCase() throws {
        let ambiguous = [
            #"{"name":"a","Name":"b"}"#, #"{"x":{"y":[{"path":"/ok","PATH":"/etc"}]}}"#,
            #"{"taskId":"a","tas\u212AId":"b"}"#, #"{"arguments":1,"argumentſ":2}"#, #"{"Ä":1,"ä":2}"#,
        ]
        for text in ambiguous {
            #expect(try JSONValue.parseRejectingDuplicateKeys(Data(text.utf8)).objectValue != nil, "\(text)")
            do {
                _ = try JSONValue.parseRejectingAmbiguousKeys(Data(text.utf8))
                Issue.record("\(text) must be refused")
            } catch let error as JSONParseError {
                #expect(error.reason.hasPrefix("duplicate key"), "\(error)")
            }
        }
        // Past 32 keys the check goes by a set: still caught, at either end.
        let many = (0..<100).map { #""key\#($0)":\#($0)"# }
        let late = "{" + (many + [#""KEY7":0"#]).joined(separator: ",") + "}"
        #expect(throws: JSONParseError.self) { try JSONValue.parseRejectingAmbiguousKeys(Data(late.utf8)) }
        let distinct = "{" + (many + [#""Key":0"#, #""ke":{"Ke":{"kE":1}}"#]).joined(separator: ",") + "}"
        #expect(try JSONValue.parseRejectingAmbiguousKeys(Data(distinct.utf8)).objectValue?.count == 102)
        // The same key in sibling or nested objects is no ambiguity.
        #expect(throws: Never.self) { try JSONValue.parseRejectingAmbiguousKeys(Data(#"[{"Name":1},{"name":2,"x":{"NAME":3}}]"#.utf8)) }
        // A routing member spelled in another case makes the summary refuse the text (the full parse decides it).
        for text in [#"{"jsonrpc":"2.0","id":1,"Method":"tools/call"}"#, #"{"jsonrpc":"2.0","ID":1,"method":"ping"}"#, #"{"jſonrpc":"2.0","id":1,"method":"ping"}"#] {
            #expect(JSONValue.summarizeMessage(Data(text.utf8)) == nil, "\(text)")
        }
        #expect(JSONValue.summarizeMessage(Data(#"{"jsonrpc":"2.0","id":1,"method":"ping","extra":{"Method":1}}"#.utf8)) != nil)
    }

    @Test func keysFoldAsGoFoldsThem() {
        #expect(JSONKeyFolding.fold("taskId") == "taskid")
        #expect(JSONKeyFolding.fold("name") == "name")
        #expect(JSONKeyFolding.fold("tas\u{212A}Id") == "taskid")
        #expect(JSONKeyFolding.fold("argumentſ") == "arguments")
        #expect(JSONKeyFolding.fold("ÄB") == JSONKeyFolding.fold("äb"))
        #expect(JSONKeyFolding.foldedHash("TaskId") == JSONKeyFolding.foldedHash("taskid"))
        #expect(JSONKeyFolding.foldedHash("tas\u{212A}id") == JSONKeyFolding.foldedHash("TASKID"))
        #expect(JSONKeyFolding.foldedHash("task") != JSONKeyFolding.foldedHash("tasks"))
        #expect(JSONKeyFolding.folds("TaskID", to: "taskid") && JSONKeyFolding.folds("taskid", to: "taskid"))
        #expect(JSONKeyFolding.folds("tas\u{212A}Id", to: "taskid") && JSONKeyFolding.folds("argumentſ", to: "arguments"))
        #expect(!JSONKeyFolding.folds("task", to: "taskid") && !JSONKeyFolding.folds("taskie", to: "taskid"))
    }

    @Test func invalidUTF8IsRefused() {
        for bytes in [[0x22, 0xFF, 0x22], [0x22, 0xC3, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22]] as [[UInt8]] {
            #expect(throws: JSONParseError.self) { try JSONValue.parse(Data(bytes)) }
        }
    }

    /// The parser's own UTF-8 check (decode, then compare) against the standard library's validating initializer:
    /// random bytes, mostly near-valid sequences, in strings with and without an escape (the two paths).
    @Test func utf8IsJudgedAsTheStandardLibraryJudgesIt() throws {
        var generator = SystemRandomNumberGenerator()
        let pieces: [[UInt8]] = [
            [0x61], [0xC3, 0xA9], [0xE2, 0x82, 0xAC], [0xF0, 0x9F, 0x98, 0x80], [0xC3], [0xE2, 0x82], [0xF0, 0x9F, 0x98],
            [0x80], [0xBF], [0xED, 0xA0, 0x80], [0xC0, 0xAF], [0xF4, 0x90, 0x80, 0x80], [0xFF], [0xE0, 0x80, 0x80],
        ]
        var invalid = 0
        for _ in 0..<3_000 {
            var content: [UInt8] = []
            for _ in 0..<Int.random(in: 1...6, using: &generator) { content += pieces.randomElement(using: &generator)! }
            let expected = String(validating: content, as: UTF8.self)
            if expected == nil { invalid += 1 }
            for escaped in [false, true] {
                let text = [0x22] + (escaped ? Array(#"\/"#.utf8) : []) + content + [0x22]
                let parsed = try? JSONValue.parse(Data(text))
                #expect(parsed == expected.map { .string((escaped ? "/" : "") + $0) }, "\(content)")
            }
        }
        #expect(invalid > 300 && invalid < 2_900)  // both verdicts were exercised
    }

    @Test func errorsSayWhere() throws {
        do {
            _ = try JSONValue.parse(Data(#"{"a": [1, 2,, 3]}"#.utf8))
            Issue.record("must throw")
        } catch let error as JSONParseError {
            #expect(error.offset == 12)
            #expect(error.description.contains("byte 12"))
        }
    }

    /// Random trees (deep nesting, every escape class, astral characters) survive a round trip and agree with
    /// the reference.
    @Test func randomTreesRoundTrip() throws {
        var generator = SystemRandomNumberGenerator()
        let alphabet: [String] = ["a", "Z", "0", " ", "\"", "\\", "/", "\n", "\t", "\u{01}", "\u{1F}", "é", "中", "😀", "\u{FFFF}", "{", "]"]
        func string() -> String { (0..<Int.random(in: 0...12, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! }.joined() }
        func value(_ depth: Int) -> JSONValue {
            switch Int.random(in: 0..<(depth > 4 ? 5 : 7), using: &generator) {
            case 0: return .null
            case 1: return .bool(Bool.random(using: &generator))
            case 2: return .int(Int.random(in: Int.min...Int.max, using: &generator))
            case 3: return .double(Double.random(in: -1e6...1e6, using: &generator))
            case 4: return .string(string())
            case 5: return .array((0..<Int.random(in: 0...4, using: &generator)).map { _ in value(depth + 1) })
            default:
                var object: [String: JSONValue] = [:]
                for _ in 0..<Int.random(in: 0...4, using: &generator) { object[string()] = value(depth + 1) }
                return .object(object)
            }
        }
        for _ in 0..<500 {
            let tree = value(0)
            let text = Data(tree.jsonString().utf8)
            let parsed = try JSONValue.parse(text)
            #expect(parsed.jsonString() == tree.jsonString())
            #expect(parsed == Self.reference(text))
        }
    }

    @Test func summaryReadsOnlyTheTopLevel() throws {
        let call = Data(#"{"params":{"error":{"id":9},"s":"}{\"]"},"jsonrpc":"2.0","method":"tools/call","id":"a\"b"}"#.utf8)
        let summary = try #require(JSONValue.summarizeMessage(call))
        #expect(summary.id == .string("a\"b"))
        #expect(summary.method == "tools/call")
        #expect(!summary.hasError && !summary.hasResult, "members of params are not the message's own")

        let failure = try #require(JSONValue.summarizeMessage(Data(#"{"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"x"}}"#.utf8)))
        #expect(failure.id == .int(3) && failure.hasError && failure.method == nil)
        let answer = try #require(JSONValue.summarizeMessage(Data(#" {"id":null,"result":[1,{"a":"]"}]} "#.utf8)))
        #expect(answer.id == .null && answer.hasResult)

        #expect(JSONValue.summarizeMessage(Data("[{\"id\":1}]".utf8)) == nil, "a batch is not summarized")
        #expect(JSONValue.summarizeMessage(Data("{\"id\":1,".utf8)) == nil)
        #expect(JSONValue.summarizeMessage(Data("{\"result\":\"unterminated}".utf8)) == nil)
    }

    /// Skipped strings end at the first quote an even run of backslashes precedes (none, two, four…): the summary
    /// must see the same members as a full parse, whatever the backslashes and quotes inside the skipped values.
    @Test func skippedStringsEndWhereAFullParseEndsThem() throws {
        let cases = [
            #"{"result":"a\\","id":1}"#, #"{"result":"\"","id":2}"#, #"{"result":"\\\"\\","id":3}"#,
            #"{"result":"","id":4}"#, #"{"result":["\\\\",{"k\"":"\\"}],"id":5}"#, #"{"result":"\u0022\\","id":6}"#,
        ]
        for text in cases {
            let summary = try #require(JSONValue.summarizeMessage(Data(text.utf8)), "\(text)")
            #expect(summary.id == (try JSONValue.parse(text))["id"], "\(text)")
            #expect(summary.hasResult)
        }
        // A quote that an odd run of backslashes escapes does not end the string: here it never ends.
        #expect(JSONValue.summarizeMessage(Data(#"{"result":"a\\\","id":7}"#.utf8)) == nil)
        #expect(JSONValue.summarizeMessage(Data(#"{"result":"\"#.utf8)) == nil)

        var generator = SystemRandomNumberGenerator()
        let pieces = ["\\", "\\\\", "\\\"", "\"", "a", "{", "]", "\\u0041", "é"]
        for _ in 0..<2000 {
            let inner = (0..<Int.random(in: 0...12, using: &generator)).map { _ in pieces.randomElement(using: &generator) ?? "" }
            let text = #"{"result":""# + inner.joined() + #"","id":9}"#
            let parsed = try? JSONValue.parse(text)
            let summary = JSONValue.summarizeMessage(Data(text.utf8))
            // Where the full parser reads one string, the summary must end it at the same quote and find the id.
            if let parsed { #expect(summary?.id == parsed["id"], "\(text)") }
        }
    }
}
