import CorralJSON
import Foundation
import Gateway
import MCPCore
import Policy
import Synchronization
import XCTest

/// `tasks/*` through ProxyCore: only handles the gateway saw created, for the same grant, reach the server.
final class ProxyTaskHandleTests: XCTestCase {
    private final class Wire: Sendable {
        let toServer = Mutex<[String]>([])
        let toClient = Mutex<[String]>([])
        let audit = Mutex<[AuditEntry]>([])
        var server: [JSONValue] { toServer.withLock { $0 }.compactMap { try? JSONValue.parse($0) } }
        var client: [JSONValue] { toClient.withLock { $0 }.compactMap { try? JSONValue.parse($0) } }
    }

    private func core(grant: String, handles: TaskHandles, wire: Wire, auditFails: Bool = false) throws -> ProxyCore {
        ProxyCore(
            evaluator: PolicyEvaluator(policy: try Policy.load(text: #"{"version": "1", "default": "allow"}"#)),
            identity: CallIdentity(grant: grant),
            audit: ClosureAuditSink { entry in
                if auditFails { throw AuditFailure("disk full") }
                wire.audit.withLock { $0.append(entry) }
            },
            taskHandles: handles,
            toClient: { data in wire.toClient.withLock { $0.append(String(decoding: data, as: UTF8.self)) } },
            toServer: { data in wire.toServer.withLock { $0.append(String(decoding: data, as: UTF8.self)) } })
    }

    private func meta(tasks: Bool) -> JSONValue {
        [
            MetaKey.protocolVersion: "2026-07-28",
            MetaKey.clientCapabilities: tasks ? ["extensions": [TasksExtension.id: [:]]] : [:],
        ]
    }

    private func send(_ proxy: ProxyCore, _ message: JSONValue) async {
        await proxy.fromClient(Data(message.jsonString().utf8))
    }

    func testOnlyHandlesCreatedForTheSameGrantPass() async throws {
        let handles = TaskHandles()
        let wireA = Wire()
        let wireB = Wire()
        let proxyA = try core(grant: "team-a", handles: handles, wire: wireA)
        let proxyB = try core(grant: "team-b", handles: handles, wire: wireB)
        // A call from a client with the extension; the server answers with a task.
        await send(proxyA, ["jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": ["name": "wait", "arguments": ["duration_ms": 1], "_meta": meta(tasks: true)]])
        XCTAssertEqual(wireA.server.count, 1)
        await proxyA.fromServer(Data(#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"task","taskId":"h-1","status":"working"}}"#.utf8))
        XCTAssertEqual(wireA.client.last?["result"]?["taskId"], "h-1")
        let ownedByA = try await handles.isOwned("h-1", by: "team-a")
        let ownedByB = try await handles.isOwned("h-1", by: "team-b")
        XCTAssertTrue(ownedByA)
        XCTAssertFalse(ownedByB)

        let get: (Int, String) -> JSONValue = { id, handle in
            ["jsonrpc": "2.0", "id": .int(id), "method": "tasks/cancel", "params": ["taskId": .string(handle), "_meta": self.meta(tasks: true)]]
        }
        await send(proxyA, get(2, "h-1"))
        XCTAssertEqual(wireA.server.count, 2, "the owner's tasks/cancel is forwarded")
        // Another grant, a guess, a background task's id, no id at all: answered here, never forwarded.
        await send(proxyB, get(3, "h-1"))
        await send(proxyA, get(4, "0123456789abcdef0123456789abcdef"))
        await send(proxyA, ["jsonrpc": "2.0", "id": 5, "method": "tasks/get", "params": ["_meta": meta(tasks: true)]])
        XCTAssertEqual(wireB.server.count, 0)
        XCTAssertEqual(wireA.server.count, 2)
        XCTAssertEqual(wireB.client.last?["error"]?["code"], -32602)
        XCTAssertEqual(wireA.client.suffix(2).map { $0["error"]?["code"] }, [-32602, -32602])
        let audited = wireA.audit.withLock { $0 }.filter { $0.taskID != nil || $0.tool.hasPrefix("tasks/") }
        XCTAssertEqual(audited.map(\.decision), ["forwarded", "refused", "refused"])
        XCTAssertEqual(audited.first?.jsonValue["task_id"], "h-1")
    }

    func testAHandleInTheAnswerToAClientWithoutTheExtensionIsNotRecorded() async throws {
        let handles = TaskHandles()
        let wire = Wire()
        let proxy = try core(grant: "g", handles: handles, wire: wire)
        await send(proxy, ["jsonrpc": "2.0", "id": 1, "method": "tools/call",
                     "params": ["name": "wait", "arguments": [:], "_meta": meta(tasks: false)]])
        await proxy.fromServer(Data(#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"task","taskId":"h-2","status":"working"}}"#.utf8))
        let recorded = try await handles.isOwned("h-2", by: "g")
        XCTAssertFalse(recorded)
        await send(proxy, ["jsonrpc": "2.0", "id": 2, "method": "tasks/get", "params": ["taskId": "h-2", "_meta": meta(tasks: true)]])
        XCTAssertEqual(wire.client.last?["error"]?["code"], -32602)
    }

    /// The owner's own `tasks/*` request is refused when its audit line cannot be written.
    func testATaskRequestTheAuditTrailCannotRecordIsRefused() async throws {
        let handles = TaskHandles()
        try await handles.record("h-3", grant: "g")
        let wire = Wire()
        let proxy = try core(grant: "g", handles: handles, wire: wire, auditFails: true)
        await send(proxy, ["jsonrpc": "2.0", "id": 1, "method": "tasks/get", "params": ["taskId": "h-3", "_meta": meta(tasks: true)]])
        XCTAssertEqual(wire.server.count, 0)
        XCTAssertEqual(wire.client.last?["error"]?["code"], -32603)
        XCTAssertEqual(
            wire.client.last?["error"]?["message"],
            "Internal error: [POLICY DENIED] the audit trail could not record this request: disk full (tasks/get refused by corral)")
    }

    func testOwnersExpireAndTheFirstOwnerStays() async throws {
        let clock = ManualClock(milliseconds: 1_800_000_000_000)
        let handles = TaskHandles(store: MemoryPolicyStore(), lifetime: .seconds(10), clock: clock)
        try await handles.record("h", grant: "g")
        try await handles.record("h", grant: "intruder")  // a second claim on a handle changes nothing
        var owned = try await handles.isOwned("h", by: "g")
        XCTAssertTrue(owned)
        owned = try await handles.isOwned("h", by: "intruder")
        XCTAssertFalse(owned)
        clock.advance(milliseconds: 10_001)
        owned = try await handles.isOwned("h", by: "g")
        XCTAssertFalse(owned, "an expired owner no longer lets anyone through")
    }
}
