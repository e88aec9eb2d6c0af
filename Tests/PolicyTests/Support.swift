import CorralJSON
import Foundation
import Testing

@testable import Policy

/// Loads policy text or fails the test with every issue.
func load(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> Policy {
    do {
        return try Policy.load(text: text)
    } catch {
        Issue.record("policy did not load: \(error)", sourceLocation: sourceLocation)
        throw error
    }
}

/// The issues a policy is refused with (empty when it loads).
func issues(_ text: String) -> [PolicyIssue] {
    do {
        _ = try Policy.load(text: text)
        return []
    } catch {
        return error.issues
    }
}

/// An evaluator over `text` with a manual clock at a fixed, window-aligned instant (2026-01-01T00:00:00Z).
func evaluator(
    _ text: String, store: any PolicyStore = MemoryPolicyStore(), clock: ManualClock = ManualClock(milliseconds: epoch2026)
) throws -> PolicyEvaluator {
    PolicyEvaluator(policy: try load(text), store: store, clock: clock)
}

let epoch2026: Int64 = 1_767_225_600_000

/// `{"version": "1", "default": "deny", "tools": {NAME: RULE}}`.
func toolPolicy(_ name: String, _ rule: String, default effect: String = "deny") -> String {
    #"{"version": "1", "default": "\#(effect)", "tools": {"\#(name)": \#(rule)}}"#
}

/// The package root, derived from this file's path (Tests/PolicyTests/Support.swift).
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// A fresh temporary SQLite path.
func temporarySQLitePath() -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("corral-policy-test-\(UUID().uuidString).sqlite").path
}

func removeSQLite(_ path: String) {
    for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
}
