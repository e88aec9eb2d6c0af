import CorralJSON
import Foundation
import Policy
import Testing

@testable import Gateway

/// The sealed requestState of a 2026-07-28 approval: every way to misuse one is refused.
struct ApprovalStatesTests {
    private let arguments: JSONValue = ["task_id": "t", "message": "m"]

    private func refusal(_ result: Result<Void, ApprovalStates.Refusal>) -> ApprovalStates.Refusal? {
        if case .failure(let refusal) = result { return refusal }
        return nil
    }

    @Test func aStateIsRedeemedOnceForItsOwnCall() async {
        let states = ApprovalStates(lifetime: .seconds(60))
        let state = states.issue(grant: "team-a", tool: "append_task_event", arguments: arguments)
        #expect(refusal(await states.redeem(state, grant: "team-b", tool: "append_task_event", arguments: arguments)) == .boundElsewhere("grant"))
        #expect(refusal(await states.redeem(state, grant: "team-a", tool: "cancel_background_task", arguments: arguments)) == .boundElsewhere("tool"))
        #expect(refusal(await states.redeem(state, grant: "team-a", tool: "append_task_event", arguments: ["task_id": "t"])) == .boundElsewhere("set of arguments"))
        #expect(refusal(await states.redeem(state, grant: "team-a", tool: "append_task_event", arguments: arguments)) == nil)
        #expect(refusal(await states.redeem(state, grant: "team-a", tool: "append_task_event", arguments: arguments)) == .replayed)
    }

    @Test func forgedExpiredAndForeignStatesAreRefused() async {
        let states = ApprovalStates(lifetime: .seconds(60))
        let issued = Date(timeIntervalSince1970: 1_800_000_000)
        let state = states.issue(grant: nil, tool: "x", arguments: nil, now: issued)
        #expect(refusal(await states.redeem(state, grant: nil, tool: "x", arguments: nil, now: issued.addingTimeInterval(61))) == .expired)
        #expect(refusal(await states.redeem("", grant: nil, tool: "x", arguments: nil)) == .malformed)
        #expect(refusal(await states.redeem("a.b.c", grant: nil, tool: "x", arguments: nil)) == .malformed)
        let parts = state.split(separator: ".")
        #expect(refusal(await states.redeem(String(parts[0]) + ".AAAA", grant: nil, tool: "x", arguments: nil, now: issued)) == .forged)
        // Another proxy's key: its states are not ours, unless the two share a secret.
        let other = ApprovalStates(lifetime: .seconds(60))
        #expect(refusal(await other.redeem(state, grant: nil, tool: "x", arguments: nil, now: issued)) == .forged)
        let secret = [UInt8](repeating: 7, count: 32)
        let a = ApprovalStates(secret: secret, lifetime: .seconds(60))
        let b = ApprovalStates(secret: secret, lifetime: .seconds(60))
        let shared = a.issue(grant: "g", tool: "x", arguments: nil)
        #expect(refusal(await b.redeem(shared, grant: "g", tool: "x", arguments: nil)) == nil)
    }

    /// Proxies that share a store (and a secret) honour a state once between them: a replay on the other is refused.
    @Test func aSharedStoreRefusesAReplayOnAnotherProxy() async {
        let secret = [UInt8](repeating: 9, count: 32)
        let store = MemoryPolicyStore()
        let a = ApprovalStates(secret: secret, lifetime: .seconds(60), store: store)
        let b = ApprovalStates(secret: secret, lifetime: .seconds(60), store: store)
        let state = a.issue(grant: "g", tool: "x", arguments: ["n": 1])
        #expect(refusal(await a.redeem(state, grant: "g", tool: "x", arguments: ["n": 1])) == nil)
        #expect(refusal(await b.redeem(state, grant: "g", tool: "x", arguments: ["n": 1])) == .replayed)
    }
}
