import AllcanuseMock
import CorralJSON
import Foundation
import GRDB
import TaskRuntime
import XCTest

@testable import AllcanuseMockServer

/// MCP task handles (Tasks extension) whose store refuses writes for a while: a call that finishes meanwhile keeps
/// its result, served from memory, and saved once the store takes writes again.
final class MCPTaskBridgeTests: XCTestCase {
    func testAResultTheStoreRefusedIsServedAndSavedLater() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("corral-bridge-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let supervisor = try await TaskSupervisor.start(.init(stateDirectory: directory, graceMilliseconds: 300))
        let tasks = try MCPTaskBridge(stateDirectory: directory, service: AllcanuseService(supervisor: supervisor))
        let created = try await tasks.start(tool: "wait", arguments: ["duration_ms": 1500], canElicit: false)
        let handle = try XCTUnwrap(created["task"]?["taskId"]?.stringValue ?? created["taskId"]?.stringValue, "\(created)")
        var patient = Configuration()
        patient.busyMode = .timeout(10)  // the bridge may be writing the handle when the trigger goes in
        let saboteur = try DatabaseQueue(path: directory + "/mcp-tasks.sqlite", configuration: patient)
        try await saboteur.write { db in
            try db.execute(sql: "CREATE TRIGGER refuse BEFORE UPDATE ON mcp_tasks BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
        }
        func status() async throws -> String? {
            try await tasks.get(["taskId": .string(handle)])["status"]?.stringValue
        }
        let deadline = ContinuousClock.now + .seconds(10)
        while try await status() != "completed", ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        let served = try await status()
        XCTAssertEqual(served, "completed", "the finished call's result is served though the store refused it")
        let stored = { try saboteur.read { db in try String.fetchOne(db, sql: "SELECT status FROM mcp_tasks WHERE task_id = ?", arguments: [handle]) } }
        XCTAssertEqual(try stored(), "working")
        try await saboteur.write { db in try db.execute(sql: "DROP TRIGGER refuse") }
        while try stored() != "completed", ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        XCTAssertEqual(try stored(), "completed", "saved once the store takes writes again")
        await supervisor.shutdown()
    }
}
