import Synchronization

/// Tells whoever listens that a task's *display* status may have changed: the marks an agent sets
/// (`waiting_for_user`, `waiting_for_condition`) and clears live in the service, not in the runtime, so the
/// runtime's own waiters cannot see them. A wait on such a status and an MCP task waiting for a question listen here.
public final class StatusSignals: Sendable {
    private struct State {
        var listeners: [String: [Int: AsyncStream<Void>.Continuation]] = [:]
        var next = 0
    }

    private let state = Mutex(State())

    public init() {}

    /// Changes of `taskID` from now on (one element per change, the newest kept if the reader is slow).
    public func changes(of taskID: String) -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let key = state.withLock { state -> Int in
            state.next += 1
            state.listeners[taskID, default: [:]][state.next] = continuation
            return state.next
        }
        continuation.onTermination = { [weak self] _ in
            self?.state.withLock { state in
                state.listeners[taskID]?[key] = nil
                if state.listeners[taskID]?.isEmpty == true { state.listeners[taskID] = nil }
            }
        }
        return stream
    }

    public func signal(_ taskID: String) {
        let listening = state.withLock { Array(($0.listeners[taskID] ?? [:]).values) }
        for continuation in listening { continuation.yield() }
    }
}
