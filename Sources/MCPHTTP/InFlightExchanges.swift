import CorralJSON
import MCPCore
import Synchronization

/// The 2026-07-28 requests being answered, on either path (`ModernPostHandler`, or the router's), each with a way
/// to answer it at once: a stopping server answers what is still running with an error, where it used to keep the
/// stream open until its drain timed out and then drop the connection without an answer. Whichever answer comes
/// first is the one sent; the paths ignore a later one.
final class InFlightExchanges: Sendable {
    private struct State {
        var next = 0
        var answers: [Int: (id: JSONValue, answer: @Sendable (_ text: String, _ status: Int) -> Void)] = [:]
    }

    private let state = Mutex(State())

    func add(id: JSONValue, answer: @escaping @Sendable (_ text: String, _ status: Int) -> Void) -> Int {
        state.withLock { state in
            state.next += 1
            state.answers[state.next] = (id, answer)
            return state.next
        }
    }

    func remove(_ key: Int) {
        _ = state.withLock { $0.answers.removeValue(forKey: key) }
    }

    var isEmpty: Bool { state.withLock { $0.answers.isEmpty } }

    /// Waits (polling: a shutdown happens once) until every exchange has its own answer, or `timeout` passes.
    func waitUntilEmpty(timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while !isEmpty, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Answers every exchange still running with `error`.
    func answerAll(_ error: JSONRPCError) {
        let remaining = state.withLock { state in
            defer { state.answers.removeAll() }
            return Array(state.answers.values)
        }
        for exchange in remaining {
            let answer = JSONRPC.error(id: exchange.id, error)
            exchange.answer(answer.jsonString(), error.httpStatus)
        }
    }
}
