import CCorral
import Foundation
import Synchronization

/// One thread that reads a descriptor's lines and runs the tasks they start: a task executor drained between reads.
///
/// A stdio server that reads on one thread and answers on the task pool wakes a pool thread for every request, and
/// on this project's VM that wake-up (a futex, then the scheduler) cost about as much as answering a
/// `get_background_task`. Here a request read by the loop starts a task that prefers the loop, so its jobs are
/// appended to the loop's queue without waking anyone and run as soon as the read is handled; jobs enqueued from
/// other threads (a waiter resumed by the task supervisor, a store's answer) wake the loop's `poll` through an
/// eventfd. Many requests are still in flight at once: each suspends, and the loop goes on reading.
///
/// Written by hand: the standard library has the protocol (`TaskExecutor`) but no executor that also waits on a
/// descriptor, and NIO's event loops would bring NIO into every stdio server and own the descriptor.
public final class ReadLoop: TaskExecutor, Sendable {
    private struct State {
        var jobs: [UnownedJob] = []
        /// The loop thread is in `poll`, or about to be: an enqueue must wake it.
        var polling = false
        /// The loop has ended: jobs that still come run on the global executor.
        var closed = false
        /// Other descriptors the loop waits on (`watch`), and a count of their changes, for the loop to notice one.
        var watches: [Int32: Watch] = [:]
        var watchGeneration = 0
    }

    private struct Watch {
        var onReadable: @Sendable () -> Void
        var onEnd: @Sendable () -> Void
    }

    private enum Handoff {
        case queued, wake, elsewhere
    }

    private let state = Mutex(State())
    private let wake: Int32
    private let busyPollWindow: Duration
    /// Requests to stay awake not yet ended, and until when (CLOCK_MONOTONIC, ns) the latest of them holds
    /// (`stayAwake(for:)`).
    private let awakeRequests = Atomic<Int>(0)
    private let awakeUntil = Atomic<Int64>(0)

    /// `busyPoll`: how long the loop keeps asking its descriptors (`poll` without a timeout) before it sleeps in
    /// `poll`. On this project's VM a thread woken from sleep takes 50–100 µs to run again, and its first request
    /// after a sleep costs several times the CPU of one handled awake (cold caches, a descheduled vCPU), so a client
    /// that sends its next request within the window saves a wake-up per call. Spinning costs at most the window
    /// of CPU after each wake-up and nothing while idle; a client slower than the window gains nothing from it.
    /// `.zero` (the default) never spins.
    /// Nil when no eventfd can be made (the process is out of descriptors): the caller then uses the task pool.
    public init?(busyPoll: Duration = .zero) {
        wake = corral_eventfd()
        if wake < 0 { return nil }
        busyPollWindow = busyPoll
    }

    deinit { close(wake) }

    /// Keeps the loop polling, not sleeping, for up to `duration` or until `endStayingAwake()`: for a job about to
    /// be queued from another thread (a spawn's answer), which then runs without a wake-up. A thread woken from sleep
    /// can be queued behind whatever took its CPU meanwhile (on this project's VM, behind the child the spawn had
    /// just started, with the other CPU idle). Meant to be called on the loop's own thread, by a job it runs; from
    /// another thread, while the loop sleeps, it holds from the loop's next wake-up.
    public func stayAwake(for duration: Duration) {
        _ = awakeUntil.max(Self.monotonicNanoseconds() + duration.nanoseconds, ordering: .relaxed)
        awakeRequests.add(1, ordering: .relaxed)
    }

    /// Ends one `stayAwake(for:)` (once the job it was for has come): with none left, the loop sleeps again when
    /// idle.
    public func endStayingAwake() {
        awakeRequests.subtract(1, ordering: .relaxed)
    }

    /// Also waits on `fd`, calling `onReadable` on the loop's thread whenever it is readable, until `unwatch(fd)`. If
    /// the loop ends first, it calls `onEnd` instead, once, as its last act. False: the loop has ended already. (A
    /// descriptor closed while watched is dropped at the next poll, without `onEnd`.)
    /// (allcanuse-mock's task supervisor watches its tasks' exits here: an exit then wakes this thread, which answers
    /// the exit's waiters, and not another thread that would wake this one: 40 µs of each wait's wake-up.)
    public func watch(
        _ fd: Int32, onReadable: @escaping @Sendable () -> Void, onEnd: @escaping @Sendable () -> Void
    ) -> Bool {
        let handoff = state.withLock { state -> Handoff? in
            guard !state.closed else { return nil }
            state.watches[fd] = Watch(onReadable: onReadable, onEnd: onEnd)
            state.watchGeneration += 1
            guard state.polling else { return .queued }
            state.polling = false
            return .wake
        }
        guard let handoff else { return false }
        // A sleeping loop must wake to wait on the new descriptor too.
        if case .wake = handoff { _ = corral_eventfd_signal(wake) }
        return true
    }

    /// Stops watching `fd`; the caller may close it at once. (A sleeping loop is not woken: it may still be waiting
    /// on the closed descriptor's number, and then it wakes at most once more for it, and waits without it after.)
    public func unwatch(_ fd: Int32) {
        state.withLock { state in
            guard state.watches.removeValue(forKey: fd) != nil else { return }
            state.watchGeneration += 1
        }
    }

    private func endWatches() {
        let ended = state.withLock { state in
            defer { state.watches.removeAll() }
            return Array(state.watches.values)
        }
        for watch in ended { watch.onEnd() }
    }

    private static func monotonicNanoseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let handoff = state.withLock { state -> Handoff in
            if state.closed { return .elsewhere }
            state.jobs.append(job)
            guard state.polling else { return .queued }
            state.polling = false
            return .wake
        }
        switch handoff {
        case .queued: break
        case .wake: _ = corral_eventfd_signal(wake)
        case .elsewhere: globalConcurrentExecutor.enqueue(job)
        }
    }

    /// Reads `fd` on the calling thread to its end, calling `line` with each line, and runs this executor's jobs in
    /// between. At the end of input it calls `endOfInput`, then goes on running jobs until `isIdle` says nothing is
    /// in flight, and returns.
    public func run(reading fd: Int32, _ line: (Data) -> Void, endOfInput: () -> Void, isIdle: () -> Bool) {
        var splitter = LineSplitter()
        var reading = true
        // The eventfd, the input (-1 once it has ended: poll skips it), then the watched descriptors.
        var descriptors = [
            pollfd(fd: wake, events: Int16(POLLIN), revents: 0), pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
        ]
        var generation = 0
        while true {
            drain()
            if !reading, isIdle(), closeIfEmpty() {
                endWatches()
                return
            }
            guard let current = beginPolling() else { continue }
            if current != generation {
                generation = current
                descriptors.removeSubrange(2...)
                for watched in state.withLock({ Array($0.watches.keys) }) {
                    descriptors.append(pollfd(fd: watched, events: Int16(POLLIN), revents: 0))
                }
            }
            // After the input's end, a second's timeout re-asks `isIdle` should the last answer finish elsewhere.
            var ready = busyPoll(&descriptors)
            if ready == 0 { ready = poll(&descriptors, nfds_t(descriptors.count), reading ? -1 : 1000) }
            let failure = errno
            state.withLock { $0.polling = false }
            if ready < 0 {
                if failure == EINTR || failure == ENOMEM || failure == EAGAIN { continue }
                // Never spin on a descriptor poll cannot watch: treat it as the input's end.
                if reading {
                    reading = false
                    descriptors[1].fd = -1
                    splitter.finish(line)
                    endOfInput()
                }
                continue
            }
            if descriptors[0].revents != 0 { _ = corral_eventfd_drain(wake) }
            // Watched descriptors first: an exit's job is queued ahead of the requests read below.
            for index in descriptors.indices.dropFirst(2) where descriptors[index].revents != 0 {
                let watched = descriptors[index].fd
                // Closed without `unwatch`: poll would report it at once, every time. Dropped (without its
                // `onEnd`) only if no watch changed since the poll: its number may be another watch's now.
                if descriptors[index].revents & Int16(POLLNVAL) != 0 {
                    state.withLock { state in
                        guard state.watchGeneration == generation else { return }
                        state.watches[watched] = nil
                        state.watchGeneration += 1
                    }
                    continue
                }
                state.withLock { $0.watches[watched]?.onReadable }?()
            }
            if reading, descriptors[1].revents != 0, !splitter.read(from: fd, line) {
                reading = false
                descriptors[1].fd = -1
                splitter.finish(line)
                endOfInput()
            }
        }
    }

    /// `poll` without waiting, again and again until something is ready or both the busy-poll window and any
    /// `stayAwake` have passed.
    private func busyPoll(_ descriptors: inout [pollfd]) -> Int32 {
        let now = Self.monotonicNanoseconds()
        let window = busyPollWindow > .zero ? now + busyPollWindow.nanoseconds : 0
        let awake = awakeRequests.load(ordering: .relaxed) > 0 ? awakeUntil.load(ordering: .relaxed) : 0
        let deadline = max(window, awake)
        guard deadline > now else { return 0 }
        var ready: Int32 = 0
        repeat {
            ready = poll(&descriptors, nfds_t(descriptors.count), 0)
            // A pipe write wakes its reader on the writer's CPU (a sync wake-up: the kernel expects the writer to
            // sleep next). Yielding lets that client run here at once instead of after the window.
            if ready == 0 { sched_yield() }
        } while ready == 0 && Self.monotonicNanoseconds() < deadline
        return ready
    }

    /// Runs the queued jobs in order, except those of background or utility priority: each of them waits until
    /// nothing else is queued (and all run before the loop next polls, so none is held for long: the queue empties
    /// between the lines of a stdio client). Housekeeping queued while a request is handled (the removal of an ended
    /// task's cgroup, a cancelled timer) thus runs after that request's answer, even when the answer is several hops
    /// away (an actor, then this loop again), instead of in front of it. A job's priority is read once, when the
    /// loop takes it.
    private func drain() {
        let executor = asUnownedTaskExecutor()
        var background: [UnownedJob] = []
        var next = 0
        while true {
            let ready = state.withLock { state -> [UnownedJob] in
                var taken: [UnownedJob] = []
                swap(&taken, &state.jobs)
                return taken
            }
            if ready.isEmpty {
                guard next < background.count else { return }
                // The answers written above (if any) woke their clients, most likely onto this CPU (a pipe write's wake-up is
                // a sync one: the kernel expects the writer to sleep next). Housekeeping is not worth their wait:
                // perf sched showed a wait's client queued 300 µs behind an exit's commit here, the other CPU idle.
                if next == 0 { sched_yield() }
                background[next].runSynchronously(on: executor)
                next += 1
                continue
            }
            for job in ready {
                if job.isHousekeeping {
                    background.append(job)
                } else {
                    job.runSynchronously(on: executor)
                }
            }
        }
    }


    /// Nil when jobs came in since the last drain: the loop drains them before it sleeps. Otherwise the watched
    /// descriptors' generation, for the loop to see whether they changed.
    private func beginPolling() -> Int? {
        state.withLock { state in
            guard state.jobs.isEmpty else { return nil }
            state.polling = true
            return state.watchGeneration
        }
    }

    private func closeIfEmpty() -> Bool {
        state.withLock { state in
            guard state.jobs.isEmpty else { return false }
            state.closed = true
            return true
        }
    }
}

extension Duration {
    /// Clamped to 0...2^62 (about 146 years): added to a monotonic clock reading, it cannot overflow.
    fileprivate var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let limit: Int64 = 1 << 62
        guard seconds >= 0 else { return 0 }
        guard seconds < limit / 1_000_000_000 else { return limit }
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

extension UnownedJob {
    /// Background and utility priorities: housekeeping that an executor runs once its other jobs are done (see
    /// `ReadLoop.drain()`, `EventLoopTaskExecutor`). A job without a priority (a task started outside any task) is
    /// not.
    package var isHousekeeping: Bool {
        let priority = priority.rawValue
        return priority != 0 && priority <= TaskPriority.utility.rawValue
    }
}
