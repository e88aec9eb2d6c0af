import CCorral
import Foundation
import Synchronization

/// One thread with an epoll set: it wakes on child exits (pidfds) and task output (pipes), and it is the thread that
/// spawns every task.
///
/// Hand-written because SwiftNIO cannot watch a pidfd, and a Dispatch source per descriptor would add threads that
/// come and go; this keeps the runtime at exactly one thread of its own. Spawning happens here too because
/// `PR_SET_PDEATHSIG` fires when the *spawning thread* exits, so that thread must live as long as the supervisor.
final class Reactor: Sendable {
    typealias Handler = @Sendable (_ events: UInt32) -> Void

    private struct State {
        var handlers: [UInt64: Handler] = [:]
        var tokensByFD: [Int32: UInt64] = [:]
        var nextToken: UInt64 = 1
        var jobs: [@Sendable () -> Void] = []
        var stopping = false
    }

    private let epollFD: Int32
    private let wakeFD: Int32
    private let state = Mutex(State())
    private let finished = Mutex<CheckedContinuation<Void, Never>?>(nil)
    private let threadDone = Mutex(false)
    private static let wakeToken: UInt64 = 0

    init() throws(RuntimeError) {
        let epollFD = corral_epoll_create()
        guard epollFD >= 0 else { throw RuntimeError.system("epoll_create1", errno) }
        let wakeFD = corral_eventfd()
        guard wakeFD >= 0 else {
            close(epollFD)
            throw RuntimeError.system("eventfd", errno)
        }
        guard corral_epoll_add(epollFD, wakeFD, corral_epollin(), Reactor.wakeToken) == 0 else {
            close(epollFD)
            close(wakeFD)
            throw RuntimeError.system("epoll_ctl", errno)
        }
        self.epollFD = epollFD
        self.wakeFD = wakeFD
        let thread = Thread { [self] in self.run() }
        thread.name = "corral-reactor"
        thread.start()
    }

    /// Watches `fd` for readability (and hang-up); the handler runs on the reactor thread.
    func register(_ fd: Int32, handler: @escaping Handler) throws(RuntimeError) {
        let token = state.withLock { state -> UInt64 in
            let token = state.nextToken
            state.nextToken += 1
            state.handlers[token] = handler
            state.tokensByFD[fd] = token
            return token
        }
        if corral_epoll_add(epollFD, fd, corral_epollin(), token) != 0 {
            let error = errno
            state.withLock { state in
                state.handlers[token] = nil
                state.tokensByFD[fd] = nil
            }
            throw RuntimeError.system("epoll_ctl", error)
        }
    }

    /// Stops watching `fd`. The caller closes it afterwards; a stale event for it is dropped because tokens are never
    /// reused.
    func deregister(_ fd: Int32) {
        let token = state.withLock { state -> UInt64? in
            guard let token = state.tokensByFD.removeValue(forKey: fd) else { return nil }
            state.handlers[token] = nil
            return token
        }
        if token != nil { _ = corral_epoll_del(epollFD, fd) }
    }

    /// Runs `job` on the reactor thread and returns its result.
    func perform<T: Sendable, E: Error>(_ job: @escaping @Sendable () throws(E) -> T) async throws(E) -> T {
        let result: Result<T, E> = await withCheckedContinuation { continuation in
            let accepted = state.withLock { state -> Bool in
                guard !state.stopping else { return false }
                state.jobs.append {
                    do throws(E) {
                        continuation.resume(returning: .success(try job()))
                    } catch {
                        continuation.resume(returning: .failure(error))
                    }
                }
                return true
            }
            if accepted {
                _ = corral_eventfd_signal(wakeFD)
            } else {
                // Shutting down: run it here rather than never.
                do throws(E) {
                    continuation.resume(returning: .success(try job()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }

    /// Ends the thread and closes the epoll set. Registered descriptors belong to their owners.
    func shutdown() async {
        let alreadyStopping = state.withLock { state -> Bool in
            defer { state.stopping = true }
            return state.stopping
        }
        if alreadyStopping { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = threadDone.withLock { done -> Bool in
                if !done { finished.withLock { $0 = continuation } }
                return done
            }
            if done {
                continuation.resume()
            } else {
                _ = corral_eventfd_signal(wakeFD)
            }
        }
    }

    private func run() {
        var tokens = [UInt64](repeating: 0, count: 64)
        var events = [UInt32](repeating: 0, count: 64)
        while true {
            let count = corral_epoll_wait(epollFD, &tokens, &events, 64, -1)
            if count < 0 {
                // Not EINTR (retried inside): a broken epoll set. Do not spin; leave if shutting down.
                if state.withLock({ $0.stopping }) { break }
                usleep(1000)
                continue
            }
            for index in 0..<Int(count) {
                let token = tokens[index]
                if token == Reactor.wakeToken {
                    _ = corral_eventfd_drain(wakeFD)
                    continue
                }
                let handler = state.withLock { $0.handlers[token] }
                handler?(events[index])
            }
            let (jobs, stopping) = state.withLock { state in
                defer { state.jobs.removeAll() }
                return (state.jobs, state.stopping)
            }
            for job in jobs { job() }
            if stopping { break }
        }
        close(epollFD)
        close(wakeFD)
        let continuation = threadDone.withLock { done -> CheckedContinuation<Void, Never>? in
            done = true
            return finished.withLock { continuation in
                defer { continuation = nil }
                return continuation
            }
        }
        continuation?.resume()
    }
}
