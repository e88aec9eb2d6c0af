import CorralJSON
import MCPCore
import XCTest

/// A `tools/call` result with only `structuredContent` leaves with the spec's text block added (the same JSON as
/// text), written once, alike as text and as a value, in both eras; other results are not touched.
final class ToolResultTextTests: XCTestCase {
    private static let structured: JSONValue = [
        "task_id": "t1", "status": "running", "quote": "a \"quoted\"\nline é✓", "nested": ["n": 1, "list": [true, .null]],
        "zeta": 2.5,
    ]

    private func core(returning result: JSONValue) -> MCPServerCore {
        MCPServerCore(description: ServerDescription(name: "t", version: "1")) { method, _, _ throws(JSONRPCError) in
            guard method == "tools/call" else { throw .methodNotFound(method) }
            return result
        }
    }

    private func context(modern: Bool) -> RequestContext {
        RequestContext(
            id: 1, era: modern ? .modern(version: "2026-07-28") : .legacy(version: "2025-11-25"), envelope: nil,
            legacyCapabilities: nil, session: nil, notify: { _ in })
    }

    func testTheTextBlockIsTheStructuredContentAndTextAndValueAgree() async throws {
        let core = core(returning: ["structuredContent": Self.structured, "isError": false])
        for modern in [false, true] {
            let text = await core.respondText(id: 7, method: "tools/call", params: ["name": "x"], context: context(modern: modern))
            XCTAssertEqual(text.status, 200)
            let parsed = try JSONValue.parse(text.text)
            XCTAssertEqual(parsed["id"], 7)
            let result = try XCTUnwrap(parsed["result"])
            XCTAssertEqual(result["structuredContent"], Self.structured)
            XCTAssertEqual(result["isError"], false)
            let block = try XCTUnwrap(result["content"]?.arrayValue?.first)
            XCTAssertEqual(block["type"], "text")
            XCTAssertEqual(try JSONValue.parse(XCTUnwrap(block["text"]?.stringValue)), Self.structured)
            XCTAssertEqual(block["text"]?.stringValue, Self.structured.jsonString(), "the compact sorted text")
            XCTAssertEqual(result["resultType"], modern ? "complete" : nil, "each era's shape")
            // The value path (batches) gives the same answer.
            let value = await core.respond(id: 7, method: "tools/call", params: ["name": "x"], context: context(modern: modern))
            XCTAssertEqual(value, parsed)
        }
    }

    func testResultsWithContentOrWithoutStructuredContentAreLeftAlone() async throws {
        let withContent: JSONValue = [
            "content": [["type": "text", "text": "denied: rule r"]], "structuredContent": ["error": "denied"], "isError": true,
        ]
        let plain: JSONValue = ["content": [["type": "text", "text": "hello"]]]
        let empty: JSONValue = ["isError": false]
        for result in [withContent, plain, empty] {
            XCTAssertEqual(ToolResultText.completed(result), result)
            let text = await core(returning: result).respondText(
                id: 1, method: "tools/call", params: ["name": "x"], context: context(modern: false))
            XCTAssertEqual(try JSONValue.parse(text.text)["result"], result)
        }
    }

    func testAToolErrorIsAnErrorAnswer() async throws {
        let core = MCPServerCore(description: ServerDescription(name: "t", version: "1")) { _, _, _ throws(JSONRPCError) in
            throw .invalidParams("no such tool")
        }
        let text = await core.respondText(id: 3, method: "tools/call", params: ["name": "x"], context: context(modern: true))
        let parsed = try JSONValue.parse(text.text)
        XCTAssertEqual(parsed["error"]?["code"], .int(JSONRPCError.invalidParamsCode))
        XCTAssertEqual(text.status, 400, "the status its code maps to, as for any method")
    }
}
