import CorralJSON
import Foundation
import Synchronization
import XCTest

@testable import MCPCore

/// The stdio connection's era rules over an in-process connection and a small core.
final class StdioEraTests: XCTestCase {
    private let meta: JSONValue = [
        "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": [:],
    ]

    private func makeConnection() -> (StdioServerConnection, Inbox) {
        let core = MCPServerCore(description: ServerDescription(name: "t", version: "1")) { method, params, context throws(JSONRPCError) in
            switch method {
            case "tools/list": return ["tools": [["name": "echo", "inputSchema": ["type": "object"]]]]
            case "slow":
                try? await Task.sleep(for: .seconds(30))
                return ["cancelled": .bool(Task.isCancelled)]
            case "echo/era": return ["era": .string(context.era.name)]
            default: throw .methodNotFound(method)
            }
        }
        let received = Inbox()
        let connection = StdioServerConnection(core: core, connectionID: "c") { data in
            if let message = try? JSONValue.parse(data) { received.withLock { $0.append(message) } }
        }
        return (connection, received)
    }

    private func send(_ connection: StdioServerConnection, _ message: JSONValue) {
        connection.ingest(Data(message.jsonString().utf8))
    }

    private func answer(_ received: Inbox, id: JSONValue) async throws -> JSONValue {
        for _ in 0..<200 {
            if let found = received.withLock({ $0.first { $0["id"] == id && $0["method"] == nil } }) { return found }
            try await Task.sleep(for: .milliseconds(5))
        }
        throw XCTSkip("no answer to \(id)")
    }

    func testAModernConnectionRefusesInitializeAndRemovedMethods() async throws {
        let (connection, received) = makeConnection()
        send(connection, ["jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": ["_meta": meta]])
        let discovered = try await answer(received, id: 1)
        XCTAssertEqual(discovered["result"]?["resultType"], "complete")
        XCTAssertEqual(discovered["result"]?["ttlMs"], 3_600_000)
        XCTAssertEqual(discovered["result"]?["_meta"]?["io.modelcontextprotocol/serverInfo"]?["name"], "t")

        send(connection, ["jsonrpc": "2.0", "id": 2, "method": "initialize", "params": ["protocolVersion": "2025-11-25", "capabilities": [:]]])
        let refused = try await answer(received, id: 2)
        XCTAssertEqual(refused["error"]?["code"], -32022)
        XCTAssertEqual(refused["error"]?["data"]?["supported"], ["2026-07-28", "2025-11-25"])

        for (id, method) in [(3, "ping"), (4, "logging/setLevel")] {
            send(connection, ["jsonrpc": "2.0", "id": JSONValue.int(id), "method": JSONValue.string(method), "params": ["_meta": meta]])
            let removed = try await answer(received, id: JSONValue.int(id))
            XCTAssertEqual(removed["error"]?["code"], -32601, method)
        }
        send(connection, ["jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": [:]])
        let missing = try await answer(received, id: 5)
        XCTAssertEqual(missing["error"]?["code"], -32602)
        send(connection, ["jsonrpc": "2.0", "id": 6, "method": "tools/list", "params": ["_meta": meta]])
        let listed = try await answer(received, id: 6)
        XCTAssertEqual(listed["result"]?["cacheScope"], "public")
        XCTAssertEqual(listed["result"]?["ttlMs"], 300_000)
        XCTAssertEqual(listed["result"]?["resultType"], "complete")
        connection.ingest(Data("[]".utf8))
        connection.ingest(Data(#"[{"jsonrpc":"2.0","id":7,"method":"tools/list"}]"#.utf8))
        try await Task.sleep(for: .milliseconds(20))
        let batchErrors = received.withLock { $0.filter { $0["id"] == .null } }
        XCTAssertEqual(batchErrors.count, 2, "batches are refused on a modern connection")
    }

    func testALegacyConnectionRefusesModernRequests() async throws {
        let (connection, received) = makeConnection()
        send(connection, ["jsonrpc": "2.0", "id": 1, "method": "initialize", "params": ["protocolVersion": "2025-06-18", "capabilities": [:]]])
        let initialized = try await answer(received, id: 1)
        XCTAssertEqual(initialized["result"]?["protocolVersion"], "2025-06-18")
        send(connection, ["jsonrpc": "2.0", "id": 2, "method": "ping"])
        let pong = try await answer(received, id: 2)
        XCTAssertEqual(pong["result"], [:])
        send(connection, ["jsonrpc": "2.0", "id": 3, "method": "echo/era", "params": ["_meta": meta]])
        let refused = try await answer(received, id: 3)
        XCTAssertEqual(refused["error"]?["code"], -32600)
        send(connection, ["jsonrpc": "2.0", "id": 4, "method": "tools/list"])
        let listed = try await answer(received, id: 4)
        XCTAssertNil(listed["result"]?["resultType"], "legacy results are not stamped")
        // A batch mixing a modern request with a legacy one: the modern one is refused, the legacy one answered.
        connection.ingest(Data(#"[{"jsonrpc":"2.0","id":5,"method":"echo/era"},{"jsonrpc":"2.0","id":6,"method":"echo/era","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}]"#.utf8))
        for _ in 0..<100 where !received.withLock({ $0.contains { $0.arrayValue != nil } }) {
            try await Task.sleep(for: .milliseconds(5))
        }
        let batch = try XCTUnwrap(received.withLock { $0.first { $0.arrayValue != nil } }?.arrayValue)
        XCTAssertEqual(batch.first { $0["id"] == 5 }?["result"]?["era"], "legacy")
        XCTAssertEqual(batch.first { $0["id"] == 6 }?["error"]?["code"], -32600)
    }

    func testBadMessagesGetTheirErrorsWithTheirIDs() async throws {
        let (connection, received) = makeConnection()
        connection.ingest(Data("{not json".utf8))
        connection.ingest(Data(#"{"jsonrpc":"2.0","id":1,"method":"x","method":"y"}"#.utf8))
        connection.ingest(Data(#"{"jsonrpc":"1.0","id":2,"method":"tools/list"}"#.utf8))
        connection.ingest(Data(#"{"jsonrpc":"2.0","id":{"a":1},"method":"tools/list"}"#.utf8))
        connection.ingest(Data(#"{"jsonrpc":"2.0","id":3,"method":7}"#.utf8))
        connection.ingest(Data((String(repeating: "[", count: 600) + String(repeating: "]", count: 600)).utf8))
        try await Task.sleep(for: .milliseconds(20))
        let errors = received.withLock { $0 }
        XCTAssertEqual(errors.count, 6)
        XCTAssertEqual(errors.map { $0["error"]?["code"]?.intValue ?? 0 }, [-32700, -32700, -32600, -32600, -32600, -32700])
        XCTAssertEqual(errors[2]["id"], 2)
        XCTAssertEqual(errors[4]["id"], 3)
    }

    func testCancelledRequestsAreNotAnswered() async throws {
        let (connection, received) = makeConnection()
        send(connection, ["jsonrpc": "2.0", "id": 1, "method": "slow", "params": ["_meta": meta]])
        try await Task.sleep(for: .milliseconds(20))
        XCTAssertEqual(connection.requestsInFlight, 1)
        send(connection, ["jsonrpc": "2.0", "method": "notifications/cancelled", "params": ["requestId": 1]])
        await connection.waitUntilDrained(timeout: .seconds(5))
        XCTAssertEqual(connection.requestsInFlight, 0)
        try await Task.sleep(for: .milliseconds(50))
        XCTAssertTrue(received.withLock { $0.isEmpty }, "\(received.withLock { $0 })")
    }

    func testToolListsAreSerializedOncePerVersionAndEra() async throws {
        let version = Inbox()  // its count stands for the version
        let built = Inbox()
        let core = MCPServerCore(
            description: ServerDescription(name: "t", version: "1"), toolsListVersion: { "v\(version.withLock { $0.count })" }
        ) { method, _, _ throws(JSONRPCError) in
            built.withLock { $0.append(.string(method)) }
            return ["tools": [["name": .string("tool-\(version.withLock { $0.count })")]]]
        }
        let legacy = RequestContext(id: 1, era: .legacy(version: "2025-11-25"), envelope: nil, legacyCapabilities: nil, session: nil, notify: { _ in })
        let modern = RequestContext(id: 1, era: .modern(version: "2026-07-28"), envelope: nil, legacyCapabilities: nil, session: nil, notify: { _ in })
        let first = await core.respondText(id: 1, method: "tools/list", params: [:], context: legacy)
        let again = await core.respondText(id: 2, method: "tools/list", params: [:], context: legacy)
        XCTAssertEqual(built.withLock { $0.count }, 1, "served from the cache")
        XCTAssertEqual(try JSONValue.parse(again.text)["id"], 2)
        XCTAssertEqual(try JSONValue.parse(first.text)["result"], try JSONValue.parse(again.text)["result"])
        let stamped = try JSONValue.parse(await core.respondText(id: 3, method: "tools/list", params: [:], context: modern).text)
        XCTAssertEqual(stamped["result"]?["resultType"], "complete", "each era its own answer")
        version.withLock { $0.append(true) }  // a reload
        let reloaded = try JSONValue.parse(await core.respondText(id: 4, method: "tools/list", params: [:], context: legacy).text)
        XCTAssertEqual(reloaded["result"]?["tools"]?.arrayValue?.first?["name"], "tool-1")
        XCTAssertEqual(built.withLock { $0.count }, 3)
    }

    func testListenAcknowledgesAnnouncesAndClosesGracefully() async throws {
        let (connection, received) = makeConnection()
        let core = MCPServerCore(description: ServerDescription(name: "t", version: "1")) { method, _, _ throws(JSONRPCError) in
            throw .methodNotFound(method)
        }
        _ = core
        send(connection, [
            "jsonrpc": "2.0", "id": "L", "method": "subscriptions/listen",
            "params": ["notifications": ["toolsListChanged": true, "promptsListChanged": true], "_meta": meta],
        ])
        try await Task.sleep(for: .milliseconds(30))
        let ack = try XCTUnwrap(received.withLock { $0.first })
        XCTAssertEqual(ack["method"], "notifications/subscriptions/acknowledged")
        XCTAssertEqual(ack["params"]?["notifications"], ["toolsListChanged": true], "only what the server honours")
        XCTAssertEqual(ack["params"]?["_meta"]?["io.modelcontextprotocol/subscriptionId"], "L")
    }
}

/// What a test connection sent.
final class Inbox: Sendable {
    private let messages = Mutex<[JSONValue]>([])
    func withLock<R>(_ body: (inout [JSONValue]) -> R) -> R { messages.withLock { body(&$0) } }
}
