import CorralJSON
import MCPCore
import Policy

/// The MCP task handles (Tasks extension) a gateway saw its server create, and for which grant, kept in the policy
/// store (so that gateways sharing a store let a grant use its handle through any of them). Only those may pass
/// through `tasks/*`: any other `taskId` (a background task's own id, another grant's handle, a guess) is answered
/// -32602 by the gateway and never reaches the server, so a `tasks/cancel` cannot stand in for a tool call the
/// policy denies or hides.
public struct TaskHandles: Sendable {
    public let store: any PolicyStore
    /// How long an owner is kept; a server's own handles expire sooner (the mock's after an hour by default).
    public let lifetime: Duration
    private let clock: any PolicyClock

    public init(store: any PolicyStore = MemoryPolicyStore(), lifetime: Duration = .seconds(86_400), clock: any PolicyClock = SystemClock()) {
        self.store = store
        self.lifetime = lifetime
        self.clock = clock
    }

    public func record(_ handle: String, grant: String?) async throws(PolicyStoreError) {
        let now = clock.nowMilliseconds()
        let lifetimeMs = lifetime.components.seconds * 1000 + lifetime.components.attoseconds / 1_000_000_000_000_000
        try await store.recordOwner(of: handle, grant: grant ?? "", expiresAtMs: now + lifetimeMs, nowMs: now)
    }

    public func isOwned(_ handle: String, by grant: String?) async throws(PolicyStoreError) -> Bool {
        try await store.owner(of: handle, nowMs: clock.nowMilliseconds()) == (grant ?? "")
    }

    /// The handle a `tools/call` result hands out, if it is a task (`resultType: "task"`).
    public static func createdHandle(in result: JSONValue?) -> String? {
        guard result?["resultType"]?.stringValue == "task" else { return nil }
        return result?["taskId"]?.stringValue
    }

    /// The -32602 a gateway answers for a handle it does not let through.
    public static func refusal(_ method: String, _ handle: String?) -> JSONRPCError {
        .invalidParams("Failed to retrieve task: no task \(handle ?? "(no taskId)") known for this grant (\(method) refused by corral)")
    }
}
