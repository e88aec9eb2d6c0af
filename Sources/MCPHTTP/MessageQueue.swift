import CorralJSON
import MCPCore
import Synchronization

/// Messages on their way to one HTTP response (a POST's answer stream or a session's GET stream): pushed from any
/// thread, taken by the one writer, with a timeout so that the writer can decide between a JSON answer and SSE,
/// and send keep-alive comments on a silent stream (a failed write is how a closed stream is noticed).
final class MessageQueue: Sendable {
    /// What goes out: a message, or an answer already serialized (with its HTTP status).
    enum Outgoing: Sendable {
        case message(JSONValue)
        case answer(text: String, status: Int)

        var text: String {
            switch self {
            case .message(let message): message.jsonString()
            case .answer(let text, _): text
            }
        }
    }

    enum Event: Sendable {
        case message(Outgoing)
        case finished
        case timeout
    }

    private struct State {
        var buffered: [Outgoing] = []
        var finished = false
        var waiter: (serial: Int, continuation: CheckedContinuation<Event, Never>)?
        var serial = 0
        /// A timer that fired before its `next` call began waiting.
        var expiredSerial = 0
    }

    private let state = Mutex(State())

    func push(_ message: JSONValue) { push(.message(message)) }

    func push(_ message: Outgoing) {
        let waiter = state.withLock { state -> CheckedContinuation<Event, Never>? in
            guard !state.finished else { return nil }
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter.continuation
            }
            state.buffered.append(message)
            return nil
        }
        waiter?.resume(returning: .message(message))
    }

    func finish() {
        let waiter = state.withLock { state -> CheckedContinuation<Event, Never>? in
            state.finished = true
            defer { state.waiter = nil }
            return state.waiter?.continuation
        }
        waiter?.resume(returning: .finished)
    }

    var isFinished: Bool { state.withLock { $0.finished && $0.buffered.isEmpty } }

    /// The next message, `.finished` once finished and drained, or `.timeout` after `timeout` without either.
    func next(timeout: Duration) async -> Event {
        let serial = state.withLock { state -> Int in
            state.serial += 1
            return state.serial
        }
        let timer = TimeoutClock.shared.schedule(after: timeout) { [weak self] in self?.expire(serial) }
        defer { TimeoutClock.shared.cancel(timer) }
        return await withCheckedContinuation { (continuation: CheckedContinuation<Event, Never>) in
            let ready = state.withLock { state -> Event? in
                if !state.buffered.isEmpty { return .message(state.buffered.removeFirst()) }
                if state.finished { return .finished }
                if state.expiredSerial == serial { return .timeout }
                state.waiter = (serial, continuation)
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    private func expire(_ serial: Int) {
        let waiter = state.withLock { state -> CheckedContinuation<Event, Never>? in
            guard let waiter = state.waiter, waiter.serial == serial else {
                state.expiredSerial = serial
                return nil
            }
            state.waiter = nil
            return waiter.continuation
        }
        waiter?.resume(returning: .timeout)
    }
}
