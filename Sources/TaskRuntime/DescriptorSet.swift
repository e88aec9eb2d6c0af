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
        /// Calls using `fd` outside the lock: `close()` leaves the descriptor to the last of them, so that none of
        /// them can reach a closed descriptor, or another one opened under its number meanwhile.
        var users = 0
        var descriptorClosed = false
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
            state.users += 1
            return token
        }
        guard let token else { throw RuntimeError.system("epoll_ctl", EBADF) }
        let added = corral_epoll_add(fd, member, corral_epollin(), token) == 0
        let error = errno
        endUse { state in
            if !added {
                state.handlers[token] = nil
                if state.tokensByFD[member] == token { state.tokensByFD[member] = nil }
            }
        }
        if !added { throw RuntimeError.system("epoll_ctl", error) }
    }

    /// Stops watching `member`. The caller closes it afterwards; a stale event for it is dropped because tokens are
    /// never reused.
    func deregister(_ member: Int32) {
        let found = state.withLock { state -> Bool in
            guard let token = state.tokensByFD.removeValue(forKey: member) else { return false }
            state.handlers[token] = nil
            guard !state.closed else { return false }
            state.users += 1
            return true
        }
        guard found else { return }
        _ = corral_epoll_del(fd, member)
        endUse { _ in }
    }

    /// Waits up to `timeoutMilliseconds` (-1: until something is ready) and runs the handlers of what is ready, each
    /// looked up when its turn comes: a handler that deregisters a later descriptor of the same pass stops that one's
    /// handler. Returns false if the set is closed or broken (not EINTR, retried inside).
    @discardableResult
    func dispatchReady(timeoutMilliseconds: Int32 = 0) -> Bool {
        let open = state.withLock { state -> Bool in
            guard !state.closed else { return false }
            state.users += 1
            return true
        }
        guard open else { return false }
        defer { endUse { _ in } }
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

    /// Closes the set: registering fails from now on and dispatching does nothing. The descriptor itself is closed
    /// once no call is using it. Members belong to their owners.
    func close() {
        endUse { state in
            state.closed = true
            state.handlers.removeAll()
            state.tokensByFD.removeAll()
            state.users += 1  // balanced by this very call's end of use
        }
    }

    /// Ends a use of `fd` (after `change`, under the lock); the last use after `close()` closes the descriptor.
    private func endUse(_ change: (inout State) -> Void) {
        let closeNow = state.withLock { state -> Bool in
            change(&state)
            state.users -= 1
            guard state.closed, state.users == 0, !state.descriptorClosed else { return false }
            state.descriptorClosed = true
            return true
        }
        if closeNow { Foundation.close(fd) }
    }
}
