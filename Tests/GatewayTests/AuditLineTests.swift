import CorralJSON
import Foundation
import Policy
import XCTest

@testable import Gateway

/// The audit line written member by member is the line `jsonValue(instance:)` describes, byte for byte.
final class AuditLineTests: XCTestCase {
    private func decision(_ tool: String, policy: String) async throws -> Decision {
        try await PolicyEvaluator(policy: try Policy.load(text: policy)).decide(
            tool: tool, arguments: ["q": "x"], identity: CallIdentity(grant: "g"))
    }

    func testTheWrittenLineIsTheValuesLine() async throws {
        let allow = try await decision("echo", policy: #"{"version": "1", "default": "allow"}"#)
        let deny = try await decision(
            "tool \"quoted\"\n", policy: #"{"version": "1", "default": "deny", "tools": {"x": {"action": "allow"}}}"#)
        let arguments: [JSONValue?] = [
            nil, ["b": 1, "a": "\u{1}\u{7f}é\"\\", "c": [true, nil]], .string("not an object"),
        ]
        var entries: [AuditEntry] = []
        for (decision, argument) in [(allow, arguments[0]), (deny, arguments[1]), (allow, arguments[2])] {
            for dryRun in [false, true] {
                for era in [nil, "modern"] {
                    for grant in [nil, "grant \u{2028}"] {
                        entries.append(
                            AuditEntry(
                                decision: decision, arguments: argument,
                                identity: CallIdentity(grant: grant, session: grant == nil ? nil : "s\t1"),
                                latencyMicroseconds: dryRun ? 0 : 123_456, dryRun: dryRun, era: era,
                                time: Date(timeIntervalSince1970: 1_796_000_000.123)))
                    }
                }
            }
        }
        for forwarded in [false, true] {
            entries.append(
                AuditEntry(
                    taskMethod: "tasks/get", handle: forwarded ? "t-1" : nil, forwarded: forwarded,
                    identity: CallIdentity(grant: "g"), policyRevision: "r", latencyMicroseconds: -5,
                    storeProblem: forwarded ? nil : "down"))
        }
        for entry in entries {
            for instance in [nil, "gw \"a\""] {
                let expected = Array((entry.jsonValue(instance: instance).jsonString() + "\n").utf8)
                XCTAssertEqual(
                    String(decoding: entry.line(instance: instance), as: UTF8.self),
                    String(decoding: expected, as: UTF8.self))
            }
        }
    }

    func testTheLogHoldsOneParsableLinePerEntry() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("audit-\(UUID().uuidString).jsonl").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let log = try AuditLog(path: path, instance: "i")
        let entry = AuditEntry(
            taskMethod: "tasks/get", handle: "t\n2", forwarded: true, identity: CallIdentity(grant: "g"),
            policyRevision: "r", latencyMicroseconds: 7)
        try log.record(entry)
        try log.record(entry)
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        XCTAssertEqual(lines.count, 3)
        XCTAssertEqual(lines.last, "")
        for line in lines.dropLast() {
            XCTAssertEqual(try JSONValue.parse(String(line)), entry.jsonValue(instance: "i"))
        }
    }
}
