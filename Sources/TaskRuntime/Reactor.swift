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
        /// Tokens of descriptors whose writer may still be running when they wake this thread
        /// (`register(_:writerRunsOn:handler:)`).
        var writerTokens: Set<UInt64> = []
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

    /// Watches `fd` for readability (and hang-up); the handler runs on the reactor thread. `writerRunsOn`: `fd` is
    /// the read end of a pipe whose writer (a task) goes on running after it writes; when such descriptors alone
    /// wake this thread, it lets whatever is runnable on its CPU go first (see `run()`).
    func register(_ fd: Int32, writerRunsOn: Bool = false, handler: @escaping Handler) throws(RuntimeError) {
        let token = state.withLock { state -> UInt64 in
            let token = state.nextToken
            state.nextToken += 1
            state.handlers[token] = handler
            state.tokensByFD[fd] = token
            if writerRunsOn { state.writerTokens.insert(token) }
            return token
        }
        if corral_epoll_add(epollFD, fd, corral_epollin(), token) != 0 {
            let error = errno
            state.withLock { state in
                state.handlers[token] = nil
                state.tokensByFD[fd] = nil
                state.writerTokens.remove(token)
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
            state.writerTokens.remove(token)
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

    /// Adds `count` events to `ready`, one entry per descriptor (level-triggered: a second wait may report one
    /// again), and drains the wake-up eventfd. False if any of them is not from a `writerRunsOn` descriptor.
    private func collect(
        _ tokens: [UInt64], _ events: [UInt32], _ count: Int, into ready: inout [(token: UInt64, events: UInt32)]
    ) -> Bool {
        var onlyWriters = true
        for index in 0..<count {
            let token = tokens[index]
            if token == Reactor.wakeToken {
                _ = corral_eventfd_drain(wakeFD)
                onlyWriters = false
                continue
            }
            if !state.withLock({ $0.writerTokens.contains(token) }) { onlyWriters = false }
            if let known = ready.firstIndex(where: { $0.token == token }) {
                ready[known].events |= events[index]
            } else {
                ready.append((token, events[index]))
            }
        }
        return onlyWriters
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
            var ready: [(token: UInt64, events: UInt32)] = []
            let onlyWriters = collect(tokens, events, Int(count), into: &ready)
            if onlyWriters, !ready.isEmpty, state.withLock({ $0.jobs.isEmpty }) {
                // Task output woke this thread, and the kernel put it on the CPU of the task that wrote it (a pipe
                // write is a sync wake-up, made for a writer about to sleep), with that task still running: draining
                // at once ran in front of the rest of the task, most often its exit. perf sched on this project's
                // VM: the exit waited 150-180 µs behind the drain while the other CPU was idle, and the wait
                // wake-up with it. A yield lets what is runnable here go first; what it caused meanwhile (the
                // task's exit, its pipes' ends) is collected, so one pass handles it all. With nothing else
                // runnable the yield returns at once; a task that writes without pause keeps the CPU for the rest
                // of its slice, or until its pipe is full.
                sched_yield()
                let more = corral_epoll_wait(epollFD, &tokens, &events, 64, 0)
                if more > 0 { _ = collect(tokens, events, Int(more), into: &ready) }
            }
            for (token, readiness) in ready {
                // Looked up as its turn comes: a handler before it may have deregistered this descriptor.
                let handler = state.withLock { $0.handlers[token] }
                handler?(readiness)
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
