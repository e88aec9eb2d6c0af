import CorralJSON
import XCTest

@testable import MCPCore

final class ModernEnvelopeTests: XCTestCase {
    private let meta: JSONValue = [
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": [:],
        "io.modelcontextprotocol/clientInfo": ["name": "t", "version": "1"],
    ]

    private func headers(_ pairs: [(String, String)]) -> HTTPHeaderView {
        HTTPHeaderView(pairs.map { (name: $0.0, value: $0.1) })
    }

    private func code(_ result: Result<ModernEnvelope, JSONRPCError>) -> Int? {
        if case .failure(let error) = result { return error.code }
        return nil
    }

    func testAValidEnvelopePassesWithAndWithoutHeaders() throws {
        let params: JSONValue = ["name": "get_background_task", "_meta": meta]
        let envelope = try ModernEnvelope.validate(method: "tools/call", params: params, headers: nil).get()
        XCTAssertEqual(envelope.protocolVersion, "2026-07-28")
        XCTAssertEqual(envelope.clientInfo?["name"], "t")
        let http = headers([("MCP-Protocol-Version", "2026-07-28"), ("Mcp-Method", "tools/call"), ("Mcp-Name", "get_background_task")])
        XCTAssertNoThrow(try ModernEnvelope.validate(method: "tools/call", params: params, headers: http).get())
    }

    func testMissingAndMistypedMetaAreInvalidParams() {
        XCTAssertEqual(code(ModernEnvelope.validate(method: "tools/list", params: [:], headers: nil)), -32602)
        XCTAssertEqual(code(ModernEnvelope.validate(method: "tools/list", params: ["_meta": "x"], headers: nil)), -32602)
        let noCapabilities: JSONValue = ["_meta": ["io.modelcontextprotocol/protocolVersion": "2026-07-28"]]
        XCTAssertEqual(code(ModernEnvelope.validate(method: "tools/list", params: noCapabilities, headers: nil)), -32602)
        let badCapabilities: JSONValue = [
            "_meta": ["io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": 3],
        ]
        XCTAssertEqual(code(ModernEnvelope.validate(method: "tools/list", params: badCapabilities, headers: nil)), -32602)
        let numberVersion: JSONValue = [
            "_meta": ["io.modelcontextprotocol/protocolVersion": 2026, "io.modelcontextprotocol/clientCapabilities": [:]],
        ]
        XCTAssertEqual(code(ModernEnvelope.validate(method: "tools/list", params: numberVersion, headers: nil)), -32602)
        // Over HTTP too: a version of the wrong type is the body's fault (-32602), whatever the headers say, and a
        // null one is missing.
        for (version, header) in [(JSONValue.int(5), "5"), (.null, "2026-07-28"), (["2026-07-28"], "2026-07-28")] {
            let typed: JSONValue = [
                "_meta": ["io.modelcontextprotocol/protocolVersion": version, "io.modelcontextprotocol/clientCapabilities": [:]],
            ]
            let http = headers([("MCP-Protocol-Version", header), ("Mcp-Method", "tools/list")])
            XCTAssertEqual(code(ModernEnvelope.validate(method: "tools/list", params: typed, headers: http)), -32602, "\(version)")
        }
        let badLevel: JSONValue = [
            "_meta": [
                "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": [:],
                "io.modelcontextprotocol/logLevel": "loud",
            ],
        ]
        XCTAssertEqual(code(ModernEnvelope.validate(method: "tools/list", params: badLevel, headers: nil)), -32602)
    }

    func testVersionsThatAreNotDatesAndUnsupportedDates() {
        func params(_ version: String) -> JSONValue {
            ["_meta": ["io.modelcontextprotocol/protocolVersion": .string(version), "io.modelcontextprotocol/clientCapabilities": [:]]]
        }
        XCTAssertEqual(code(ModernEnvelope.validate(method: "tools/list", params: params("latest"), headers: nil)), -32602)
        XCTAssertEqual(code(ModernEnvelope.validate(method: "tools/list", params: params("2026-7-28"), headers: nil)), -32602)
        guard case .failure(let unsupported) = ModernEnvelope.validate(method: "tools/list", params: params("2027-03-01"), headers: nil)
        else { return XCTFail("a future version was accepted") }
        XCTAssertEqual(unsupported.code, -32022)
        XCTAssertEqual(unsupported.data?["supported"], ["2026-07-28", "2025-11-25"])
        XCTAssertEqual(unsupported.data?["requested"], "2027-03-01")
    }

    func testHeadersMustMatchTheBody() {
        let params: JSONValue = ["name": "get_background_task", "_meta": meta]
        let cases: [[(String, String)]] = [
            [("Mcp-Method", "tools/call"), ("Mcp-Name", "get_background_task")],  // no version header
            [("MCP-Protocol-Version", "2025-11-25"), ("Mcp-Method", "tools/call"), ("Mcp-Name", "get_background_task")],
            [("MCP-Protocol-Version", "2026-07-28"), ("Mcp-Name", "get_background_task")],  // no method header
            [("MCP-Protocol-Version", "2026-07-28"), ("Mcp-Method", "tools/list"), ("Mcp-Name", "get_background_task")],
            [("MCP-Protocol-Version", "2026-07-28"), ("Mcp-Method", "tools/call")],  // no name header
            [("MCP-Protocol-Version", "2026-07-28"), ("Mcp-Method", "tools/call"), ("Mcp-Name", "cancel_background_task")],
            [("MCP-Protocol-Version", "2026-07-28"), ("MCP-Protocol-Version", "2026-07-28"), ("Mcp-Method", "tools/call"),
             ("Mcp-Name", "get_background_task")],  // repeated
            [("MCP-Protocol-Version", "2026-07-28"), ("Mcp-Method", "tools/call"), ("Mcp-Name", "=?base64?!!?=")],
        ]
        for pairs in cases {
            XCTAssertEqual(
                code(ModernEnvelope.validate(method: "tools/call", params: params, headers: headers(pairs))), -32020, "\(pairs)")
        }
        // A name in base64 matches its decoded value.
        let encoded = headers([
            ("MCP-Protocol-Version", "2026-07-28"), ("Mcp-Method", "tools/call"),
            ("Mcp-Name", HeaderValueCodec.encode("get_background_task ")),
        ])
        let spaced: JSONValue = ["name": "get_background_task ", "_meta": meta]
        XCTAssertNil(code(ModernEnvelope.validate(method: "tools/call", params: spaced, headers: encoded)))
    }

    func testHeaderNamesMatchInAnyASCIICaseAndRepeat() {
        let view = headers([("MCP-Protocol-Version", "2026-07-28"), ("accept", "a"), ("ACCEPT", "b"), ("X-Émoji", "é")])
        XCTAssertEqual(view["mcp-protocol-version"], "2026-07-28")
        XCTAssertEqual(view["Mcp-Protocol-VERSION"], "2026-07-28")
        XCTAssertEqual(view["Accept"], "a")
        XCTAssertEqual(view.count(of: "accept"), 2)
        XCTAssertEqual(view.values("Accept"), ["a", "b"])
        XCTAssertNil(view["mcp-protocol-versio"])
        XCTAssertNil(view["mcp-protocol-versionx"])
        XCTAssertEqual(view["x-Émoji"], "é")  // non-ASCII bytes compare as they are
        XCTAssertNil(view["x-émoji"])
        XCTAssertEqual(view.count(of: "origin"), 0)
    }

    func testAcceptIsReadInAnyCase() {
        func accepts(_ value: String?, sse: Bool) -> Bool {
            HTTPRules.accepts(headers(value.map { [("Accept", $0)] } ?? []), sse: sse)
        }
        XCTAssertTrue(accepts("Application/JSON", sse: false))
        XCTAssertFalse(accepts("Application/JSON", sse: true))
        XCTAssertTrue(accepts("application/json, TEXT/EVENT-STREAM;q=0.9", sse: true))
        XCTAssertTrue(accepts("*/*", sse: true))
        XCTAssertFalse(accepts("text/html", sse: false))
        XCTAssertFalse(accepts("application/jso", sse: false))
        XCTAssertFalse(accepts("", sse: false))
        XCTAssertTrue(accepts(nil, sse: false))
        // By media range, not by substring: a wildcard subtype admits its type, q=0 admits nothing.
        XCTAssertTrue(accepts("application/*", sse: false))
        XCTAssertFalse(accepts("application/*", sse: true))
        XCTAssertTrue(accepts("text/*", sse: true))
        XCTAssertTrue(accepts(" text/html;level=1 , Text/*;q=0.5", sse: false))
        XCTAssertFalse(accepts("application/json;q=0", sse: false))
        XCTAssertFalse(accepts("text/event-stream; Q=0.0, application/json", sse: true))
        XCTAssertFalse(accepts("application/jsonx", sse: false))
        XCTAssertFalse(accepts("xapplication/json", sse: false))
        XCTAssertFalse(accepts(nil, sse: true))
        // Space and tab around ranges and parameters are HTTP's whitespace (RFC 9110 OWS).
        XCTAssertTrue(accepts("text/plain ,\t*/*\t;q=0.5", sse: true))
        XCTAssertFalse(accepts("application/json\t;\tq = 0", sse: false))
        XCTAssertTrue(accepts("application/json\t;\tq=0.001", sse: false))
        XCTAssertTrue(accepts(";application/json", sse: false), "an empty first part is skipped, as before")
        XCTAssertTrue(accepts("application/json;q=x", sse: false), "a q that is not a number does not refuse")
        XCTAssertFalse(accepts("\u{00A0}application/json", sse: false), "only space and tab are trimmed")
        XCTAssertTrue(ASCII.contains("xxAPPLICATION/JSONxx", lowercase: "application/json"))
        XCTAssertFalse(ASCII.contains("ab", lowercase: "abc"))
        XCTAssertTrue(ASCII.contains("", lowercase: ""))
    }

    func testHeaderValueCodecRoundTripsAndRejectsNonCanonicalBase64() {
        for value in ["plain", " leading", "naïve", "tab\there", "=?base64?abc?="] {
            let encoded = HeaderValueCodec.encode(value)
            XCTAssertTrue(encoded.utf8.allSatisfy { $0 >= 0x20 && $0 <= 0x7E }, encoded)
            XCTAssertEqual(HeaderValueCodec.decode(encoded), value)
        }
        XCTAssertEqual(HeaderValueCodec.encode("plain"), "plain")
        XCTAssertNil(HeaderValueCodec.decode("=?base64?YR==?="), "non-canonical padding bits")
        XCTAssertNil(HeaderValueCodec.decode("=?base64?////?="), "not UTF-8")
    }

    func testErrorStatusesFollowTheSpecTable() {
        XCTAssertEqual(JSONRPCError.headerMismatch("x").httpStatus, 400)
        XCTAssertEqual(JSONRPCError.methodNotFound("x").httpStatus, 404)
        XCTAssertEqual(JSONRPCError.unsupportedProtocolVersion("x").httpStatus, 400)
        XCTAssertEqual(JSONRPCError.internalError("x").httpStatus, 200)
    }
}
