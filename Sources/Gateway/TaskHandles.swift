import CorralJSON
import MCPCore
import Synchronization

/// The MCP task handles (Tasks extension) a gateway saw its server create, and for which grant. Only those may pass
/// through `tasks/*`: any other `taskId` (a background task's own id, another grant's handle, a guess) is answered
/// -32602 by the gateway and never reaches the server, so a `tasks/cancel` cannot stand in for a tool call the
/// policy denies or hides.
public final class TaskHandles: Sendable {
    private struct State {
        var owners: [String: String] = [:]
        var order: [String] = []
        var start = 0
    }

    /// Handles kept at most (the oldest are forgotten first); a server's own handles expire much sooner.
    public let capacity: Int
    private let state = Mutex(State())

    public init(capacity: Int = 100_000) {
        self.capacity = max(1, capacity)
    }

    public func record(_ handle: String, grant: String?) {
        state.withLock { state in
            guard state.owners.updateValue(grant ?? "", forKey: handle) == nil else { return }
            state.order.append(handle)
            if state.order.count - state.start > capacity {
                state.owners[state.order[state.start]] = nil
                state.start += 1
                if state.start > capacity {  // compact now and then, not on every eviction
                    state.order.removeFirst(state.start)
                    state.start = 0
                }
            }
        }
    }

    public func isOwned(_ handle: String, by grant: String?) -> Bool {
        state.withLock { $0.owners[handle] == (grant ?? "") }
    }

    public var count: Int { state.withLock { $0.owners.count } }

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
