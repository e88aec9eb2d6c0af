import CorralJSON
import Foundation
import XCTest

@testable import Gateway

/// The sealed requestState of a 2026-07-28 approval: every way to misuse one is refused.
final class ApprovalStatesTests: XCTestCase {
    private let arguments: JSONValue = ["task_id": "t", "message": "m"]

    private func refusal(_ result: Result<Void, ApprovalStates.Refusal>) -> ApprovalStates.Refusal? {
        if case .failure(let refusal) = result { return refusal }
        return nil
    }

    func testAStateIsRedeemedOnceForItsOwnCall() {
        let states = ApprovalStates(lifetime: .seconds(60))
        let state = states.issue(grant: "team-a", tool: "append_task_event", arguments: arguments)
        XCTAssertEqual(refusal(states.redeem(state, grant: "team-b", tool: "append_task_event", arguments: arguments)), .boundElsewhere("grant"))
        XCTAssertEqual(refusal(states.redeem(state, grant: "team-a", tool: "cancel_background_task", arguments: arguments)), .boundElsewhere("tool"))
        XCTAssertEqual(refusal(states.redeem(state, grant: "team-a", tool: "append_task_event", arguments: ["task_id": "t"])),
                       .boundElsewhere("set of arguments"))
        XCTAssertEqual(refusal(states.redeem(state, grant: "team-a", tool: "append_task_event", arguments: arguments)), nil)
        XCTAssertEqual(refusal(states.redeem(state, grant: "team-a", tool: "append_task_event", arguments: arguments)), .replayed)
    }

    func testForgedExpiredAndForeignStatesAreRefused() {
        let states = ApprovalStates(lifetime: .seconds(60))
        let issued = Date(timeIntervalSince1970: 1_800_000_000)
        let state = states.issue(grant: nil, tool: "x", arguments: nil, now: issued)
        XCTAssertEqual(refusal(states.redeem(state, grant: nil, tool: "x", arguments: nil, now: issued.addingTimeInterval(61))), .expired)
        XCTAssertEqual(refusal(states.redeem("", grant: nil, tool: "x", arguments: nil)), .malformed)
        XCTAssertEqual(refusal(states.redeem("a.b.c", grant: nil, tool: "x", arguments: nil)), .malformed)
        let parts = state.split(separator: ".")
        XCTAssertEqual(refusal(states.redeem(String(parts[0]) + ".AAAA", grant: nil, tool: "x", arguments: nil, now: issued)), .forged)
        // Another proxy's key: its states are not ours, unless the two share a secret.
        let other = ApprovalStates(lifetime: .seconds(60))
        XCTAssertEqual(refusal(other.redeem(state, grant: nil, tool: "x", arguments: nil, now: issued)), .forged)
        let secret = [UInt8](repeating: 7, count: 32)
        let a = ApprovalStates(secret: secret, lifetime: .seconds(60))
        let b = ApprovalStates(secret: secret, lifetime: .seconds(60))
        let shared = a.issue(grant: "g", tool: "x", arguments: nil)
        XCTAssertEqual(refusal(b.redeem(shared, grant: "g", tool: "x", arguments: nil)), nil)
    }
}
