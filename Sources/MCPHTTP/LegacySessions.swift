import CorralJSON
import MCPCore
import Foundation
import Synchronization

/// The open 2025-11-25 sessions of an HTTP server, and where each one's messages go.
final class LegacySessionTable: Sendable {
    final class Entry: Sendable {
        let id: String
        /// Who opened it (the grant of its bearer token, when the server authenticates): only they may use it.
        let principal: String?
        let router = LegacyRouter()
        let session = Mutex<(any LegacySession)?>(nil)
        let lastUsed = Mutex(ContinuousClock.now)

        init(id: String, principal: String?) {
            self.id = id
            self.principal = principal
        }

        var current: (any LegacySession)? { session.withLock { $0 } }
    }

    private let entries = Mutex<[String: Entry]>([:])
    private let idleTimeout: Duration
    /// The server's: handed to each session through its outlet.
    private let executor: any TaskExecutor

    init(idleTimeout: Duration, executor: any TaskExecutor) {
        self.idleTimeout = idleTimeout
        self.executor = executor
    }

    var count: Int { entries.withLock { $0.count } }

    /// A new session: the endpoint opens it with an outlet routed to this entry.
    func open(_ endpoint: any MCPHTTPEndpoint, principal: String?) async throws(JSONRPCError) -> Entry {
        let id = UUID().uuidString.lowercased()
        let entry = Entry(id: id, principal: principal)
        let router = entry.router
        let outlet = LegacyOutlet(
            route: { router.route($0) },
            end: { [weak self] in Task { await self?.close(id) } }, executor: executor)
        let session = try await endpoint.openLegacySession(id: id, principal: principal, outlet: outlet)
        entry.session.withLock { $0 = session }
        entries.withLock { $0[id] = entry }
        return entry
    }

    func lookup(_ id: String) -> Entry? {
        let entry = entries.withLock { $0[id] }
        entry?.lastUsed.withLock { $0 = .now }
        return entry
    }

    func close(_ id: String) async {
        guard let entry = entries.withLock({ $0.removeValue(forKey: id) }) else { return }
        // The session first (what it still answers goes out), then its streams.
        await entry.current?.close()
        entry.router.closeAll()
    }

    func closeAll() async {
        let all = entries.withLock { entries in
            defer { entries.removeAll() }
            return Array(entries.values)
        }
        await withTaskGroup(of: Void.self) { group in
            for entry in all {
                group.addTask {
                    await entry.current?.close()
                    entry.router.closeAll()
                }
            }
        }
    }

    /// Ends sessions unused for the idle timeout (a client that vanished without DELETE).
    func reapIdle() async {
        for id in idleSessions() { await close(id) }
    }

    /// The same, for a caller that cannot wait: the closing (rare) runs in a task of its own.
    func reapIdleInBackground() {
        let idle = idleSessions()
        guard !idle.isEmpty else { return }
        Task { for id in idle { await close(id) } }
    }

    private func idleSessions() -> [String] {
        let cutoff = ContinuousClock.now - idleTimeout
        return entries.withLock { entries in entries.values.filter { $0.lastUsed.withLock { $0 } < cutoff }.map(\.id) }
    }
}

/// Routes one legacy session's messages to its open response streams.
final class LegacyRouter: Sendable {
    private struct PostStream {
        let queue: MessageQueue
        var pending: Set<String>
        var progressTokens: Set<String>
    }

    private struct State {
        var posts: [Int: PostStream] = [:]
        var getStream: MessageQueue?
        var next = 0
    }

    private let state = Mutex(State())

    /// A stream for the answers to `requestIDs` (finished once each is answered), knowing their progress tokens.
    func openPostStream(requestIDs: [JSONValue], progressTokens: [JSONValue]) -> (key: Int, queue: MessageQueue) {
        let queue = MessageQueue()
        let key = state.withLock { state -> Int in
            state.next += 1
            state.posts[state.next] = PostStream(
                queue: queue, pending: Set(requestIDs.map(JSONRPC.key)), progressTokens: Set(progressTokens.map(JSONRPC.key)))
            return state.next
        }
        return (key, queue)
    }

    /// The client cancelled a request: no answer will come for it, so its stream stops waiting for one, and ends
    /// once it waits for nothing more (it stayed open, sending keep-alives, until the client hung up).
    func cancelled(_ id: JSONValue) {
        let key = JSONRPC.key(id)
        let ended = state.withLock { state -> MessageQueue? in
            guard let (streamKey, stream) = state.posts.first(where: { $0.value.pending.contains(key) }) else { return nil }
            state.posts[streamKey]?.pending.remove(key)
            guard stream.pending.count == 1 else { return nil }
            state.posts[streamKey] = nil
            return stream.queue
        }
        ended?.finish()
    }

    /// The client closed a POST stream before every answer came.
    func dropPostStream(_ key: Int) {
        _ = state.withLock { $0.posts.removeValue(forKey: key) }
    }

    /// Opens the session's GET stream (replacing an earlier one, which ends).
    func openGetStream() -> MessageQueue {
        let queue = MessageQueue()
        let previous = state.withLock { state -> MessageQueue? in
            defer { state.getStream = queue }
            return state.getStream
        }
        previous?.finish()
        return queue
    }

    func dropGetStream(_ queue: MessageQueue) {
        state.withLock { state in
            if state.getStream === queue { state.getStream = nil }
        }
    }

    func route(_ outgoing: LegacyOutlet.Message) {
        let message: JSONValue
        let queued: MessageQueue.Outgoing
        switch outgoing {
        case .message(let value):
            message = value
            queued = .message(value)
        case .answer(let id, let text):
            message = ["id": id]
            queued = .answer(text: text, status: 200)
        }
        let target = state.withLock { state -> (MessageQueue, finish: Bool)? in
            if message["method"] == nil, let id = message["id"] {
                let key = JSONRPC.key(id)
                guard let (streamKey, _) = state.posts.first(where: { $0.value.pending.contains(key) }) else { return nil }
                state.posts[streamKey]?.pending.remove(key)
                guard let stream = state.posts[streamKey] else { return nil }
                if stream.pending.isEmpty { state.posts[streamKey] = nil }
                return (stream.queue, stream.pending.isEmpty)
            }
            if let token = message["params"]?["progressToken"], message["method"]?.stringValue == "notifications/progress",
                let stream = state.posts.values.first(where: { $0.progressTokens.contains(JSONRPC.key(token)) })
            {
                return (stream.queue, false)
            }
            if let get = state.getStream { return (get, false) }
            if let newest = state.posts.keys.max(), let stream = state.posts[newest] { return (stream.queue, false) }
            return nil
        }
        guard let (queue, finish) = target else { return }
        queue.push(queued)
        if finish { queue.finish() }
    }

    func closeAll() {
        let queues = state.withLock { state -> [MessageQueue] in
            defer {
                state.posts.removeAll()
                state.getStream = nil
            }
            return state.posts.values.map(\.queue) + (state.getStream.map { [$0] } ?? [])
        }
        for queue in queues { queue.finish() }
    }
}
