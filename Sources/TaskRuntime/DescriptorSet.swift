import CCorral
import Foundation
import Synchronization

/// An epoll set whose descriptors each have a handler, run by whichever thread asks the set what is ready
/// (`dispatchReady`). The set's own descriptor (`fd`) is readable while a member is: so one thread can watch it among
/// its other descriptors and run the set's handlers itself, as the reactor does and as the thread that answers a
/// task's waiters can (`DescriptorWatchingExecutor`).
///
/// Hand-written for the reason the reactor is: SwiftNIO cannot watch a pidfd.
final class DescriptorSet: Sendable {
    typealias Handler = @Sendable (_ events: UInt32) -> Void

    private struct State {
        var handlers: [UInt64: Handler] = [:]
        var tokensByFD: [Int32: UInt64] = [:]
        var nextToken: UInt64 = 1
        var closed = false
    }

    /// The epoll descriptor: readable while a member is ready.
    let fd: Int32
    private let state = Mutex(State())

    init() throws(RuntimeError) {
        let fd = corral_epoll_create()
        guard fd >= 0 else { throw RuntimeError.system("epoll_create1", errno) }
        self.fd = fd
    }

    /// Watches `member` for readability (and hang-up); `handler` runs on the thread that dispatches.
    func register(_ member: Int32, handler: @escaping Handler) throws(RuntimeError) {
        let token = state.withLock { state -> UInt64? in
            guard !state.closed else { return nil }
            let token = state.nextToken
            state.nextToken += 1
            state.handlers[token] = handler
            state.tokensByFD[member] = token
            return token
        }
        guard let token else { throw RuntimeError.system("epoll_ctl", EBADF) }
        if corral_epoll_add(fd, member, corral_epollin(), token) != 0 {
            let error = errno
            state.withLock { state in
                state.handlers[token] = nil
                state.tokensByFD[member] = nil
            }
            throw RuntimeError.system("epoll_ctl", error)
        }
    }

    /// Stops watching `member`. The caller closes it afterwards; a stale event for it is dropped because tokens are
    /// never reused.
    func deregister(_ member: Int32) {
        let token = state.withLock { state -> UInt64? in
            guard let token = state.tokensByFD.removeValue(forKey: member) else { return nil }
            state.handlers[token] = nil
            return token
        }
        if token != nil { _ = corral_epoll_del(fd, member) }
    }

    /// Waits up to `timeoutMilliseconds` (-1: until something is ready) and runs the handlers of what is ready, each
    /// looked up when its turn comes: a handler that deregisters a later descriptor of the same pass stops that one's
    /// handler. Returns false if the set is closed or broken (not EINTR, retried inside).
    @discardableResult
    func dispatchReady(timeoutMilliseconds: Int32 = 0) -> Bool {
        if state.withLock({ $0.closed }) { return false }
        let capacity = 16
        return withUnsafeTemporaryAllocation(of: UInt64.self, capacity: capacity) { tokens in
            withUnsafeTemporaryAllocation(of: UInt32.self, capacity: capacity) { events in
                guard let tokenBase = tokens.baseAddress, let eventBase = events.baseAddress else { return false }
                let count = corral_epoll_wait(fd, tokenBase, eventBase, Int32(capacity), timeoutMilliseconds)
                if count < 0 { return false }
                for index in 0..<Int(count) {
                    let token = tokenBase[index]
                    let handler = state.withLock { $0.handlers[token] }
                    handler?(eventBase[index])
                }
                return true
            }
        }
    }

    /// Closes the set: registering fails from now on and dispatching does nothing. Members belong to their owners.
    func close() {
        let wasOpen = state.withLock { state -> Bool in
            defer { state.closed = true }
            state.handlers.removeAll()
            state.tokensByFD.removeAll()
            return !state.closed
        }
        if wasOpen { Foundation.close(fd) }
    }
}
