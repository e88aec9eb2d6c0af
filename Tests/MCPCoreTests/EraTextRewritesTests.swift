import CorralJSON
import Foundation
import MCPCore
import XCTest

/// The text rewrites of a proxy between the eras against the rewrites of the parsed message: the same JSON, the
/// rest of the text as it was, and nil (the parsed path) where the text is not laid out for them.
final class EraTextRewritesTests: XCTestCase {
    private let meta = #""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"c","version":"1"}}"#

    func testARequestLosesOnlyTheProtocolKeys() throws {
        let requests = [
            // _meta alone, first, in the middle, last; with other keys of its own; empty; absent; spaced out
            #"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{\#(meta)}}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{\#(meta),"name":"echo","arguments":{"a":[1,{"b":"}"}]}}}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo",\#(meta),"arguments":{}}}"#,
            #"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"echo","arguments":{},\#(meta)}}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","_meta":{"progressToken":7,"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","_meta":{}}}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","arguments":{"_meta":{"io.modelcontextprotocol/x":1}}}}"#,
            " { \"params\" : { \"name\" : \"e\" , \"_meta\" : { \"io.modelcontextprotocol/protocolVersion\" : \"2026-07-28\" } } , \"id\" : 1 , \"method\" : \"tools/call\" } \n",
            #"{"id":1,"method":"tools/call","params":{"\u005fmeta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"},"name":"\u00e9"}}"#,
        ]
        for text in requests {
            let data = Data(text.utf8)
            let stripped = try XCTUnwrap(ModernEnvelope.strippedRequest(data), text)
            let parsed = try JSONValue.parse(data)
            XCTAssertEqual(
                try JSONValue.parse(stripped), parsed.merging(["params": ModernEnvelope.strippedParams(parsed["params"])]),
                String(decoding: stripped, as: UTF8.self))
            XCTAssertFalse(String(decoding: stripped, as: UTF8.self).contains("io.modelcontextprotocol/p"), text)
        }
        // What is not the protocol's passes byte for byte.
        let untouched = #"{"id":1,"method":"tools/call","params":{"name":"e","arguments":{"n":1.50,"s":"\u00e9"}}}"#
        XCTAssertEqual(ModernEnvelope.strippedRequest(Data(untouched.utf8)), Data(untouched.utf8))
        let kept = #"{"id":1,"method":"tools/call","params":{"arguments":{"n":1.50},"#
        let cut = try XCTUnwrap(ModernEnvelope.strippedRequest(Data((kept + meta + "}}").utf8)))
        XCTAssertEqual(String(decoding: cut, as: UTF8.self), #"{"id":1,"method":"tools/call","params":{"arguments":{"n":1.50}}}"#)
    }

    func testARequestTheTextCannotSayIsLeftToTheParsedPath() {
        let refused = [
            #"{"id":1,"method":"tools/list"}"#,  // no params: the parsed path adds them
            #"{"id":1,"method":"tools/list","params":[1]}"#,
            #"{"id":1,"method":"tools/list","params":{},"params":{\#(meta)}}"#,
            #"{"id":1,"method":"tools/list","params":{\#(meta),\#(meta)}}"#,
            #"{"id":1,"method":"tools/list","params":{"_meta":[]}}"#,
            // A bad value cut out would leave a text the server runs where the parsed path sent one it refuses.
            #"{"id":1,"method":"resources/read","params":{"uri":"a","_meta":{"io.modelcontextprotocol/x":tru}}}"#,
            #"{"id":1,"method":"resources/read","params":{"_meta":{"io.modelcontextprotocol/x":-,"k":1}}}"#,
            #"{"id":1,"method":"tools/list","params":{\#(meta)}} {}"#,
            #"{"id":1,"method":"tools/list","params":{\#(meta)}"#,
            #"{"id":1,"method":"tools/list","params":{"a":,\#(meta)}}"#,
        ]
        for text in refused {
            XCTAssertNil(ModernEnvelope.strippedRequest(Data(text.utf8)), text)
        }
    }

    func testAnAnswerIsStampedAsTheParsedOneIs() throws {
        let server = ServerDescription(name: "old", version: "1.0")
        let answers = [
            #"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"}{"}],"isError":false}}"#,
            #"{"jsonrpc":"2.0","id":1,"result":{}}"#,
            #"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#,
            #"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"ttlMs":5,"resultType":"complete"}}"#,
            #"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"cacheScope":"private"}}"#,
            #"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"resultType":"input_required"}}"#,
            #"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"resultType":7}}"#,
            " {\"result\" : { \"tools\" : [ ] } , \"id\" : \"a\" , \"jsonrpc\" : \"2.0\" }\r\n",
        ]
        for text in answers {
            for method in ["tools/list", "tools/call"] {
                let data = Data(text.utf8)
                let stamped = try XCTUnwrap(server.stampedAnswer(data, method: method), text)
                let parsed = try JSONValue.parse(data)
                let result = try XCTUnwrap(parsed["result"])
                XCTAssertEqual(
                    try JSONValue.parse(stamped), parsed.merging(["result": server.stamp(result, method: method)]),
                    "\(method): \(String(decoding: stamped, as: UTF8.self))")
            }
        }
        let refused = [
            #"{"jsonrpc":"2.0","id":1,"result":{"_meta":{"a":1}}}"#,  // stamp merges into the server's own _meta
            #"{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete","resultType":"x"}}"#,
            #"{"jsonrpc":"2.0","id":1,"result":{},"result":{}}"#,
            #"{"jsonrpc":"2.0","id":1,"result":[]}"#,
            #"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m"}}"#,
            #"{"jsonrpc":"2.0","id":1,"result":{}} x"#,
        ]
        for text in refused {
            XCTAssertNil(server.stampedAnswer(Data(text.utf8), method: "tools/list"), text)
        }
    }
}
