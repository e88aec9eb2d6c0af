import CCorral
import Foundation
import Synchronization

/// One thread with an epoll set: it wakes on task output (pipes) and on child exits (the supervisor's set of pidfds,
/// unless the thread that answers waiters watches that set itself), and it is the thread that spawns every task.
///
/// Hand-written because SwiftNIO cannot watch a pidfd, and a Dispatch source per descriptor would add threads that
/// come and go; this keeps the runtime at exactly one thread of its own. Spawning happens here too because
/// `PR_SET_PDEATHSIG` fires when the *spawning thread* exits, so that thread must live as long as the supervisor.
final class Reactor: Sendable {
    typealias Handler = DescriptorSet.Handler

    private struct State {
        var jobs: [@Sendable () -> Void] = []
        var stopping = false
    }

    private let descriptors: DescriptorSet
    private let wakeFD: Int32
    private let state = Mutex(State())
    private let finished = Mutex<CheckedContinuation<Void, Never>?>(nil)
    private let threadDone = Mutex(false)

    init() throws(RuntimeError) {
        let descriptors = try DescriptorSet()
        let wakeFD = corral_eventfd()
        guard wakeFD >= 0 else {
            descriptors.close()
            throw RuntimeError.system("eventfd", errno)
        }
        do {
            try descriptors.register(wakeFD) { _ in _ = corral_eventfd_drain(wakeFD) }
        } catch {
            descriptors.close()
            close(wakeFD)
            throw error
        }
        self.descriptors = descriptors
        self.wakeFD = wakeFD
        let thread = Thread { [self] in self.run() }
        thread.name = "corral-reactor"
        thread.start()
    }

    /// Watches `fd` for readability (and hang-up); the handler runs on the reactor thread.
    func register(_ fd: Int32, handler: @escaping Handler) throws(RuntimeError) {
        try descriptors.register(fd, handler: handler)
    }

    /// Stops watching `fd`. The caller closes it afterwards; a stale event for it is dropped.
    func deregister(_ fd: Int32) {
        descriptors.deregister(fd)
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
        while true {
            if !descriptors.dispatchReady(timeoutMilliseconds: -1) {
                // A broken epoll set. Do not spin; leave if shutting down.
                if state.withLock({ $0.stopping }) { break }
                usleep(1000)
                continue
            }
            let (jobs, stopping) = state.withLock { state in
                defer { state.jobs.removeAll() }
                return (state.jobs, state.stopping)
            }
            for job in jobs { job() }
            if stopping { break }
        }
        descriptors.close()
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
