import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A task executor that runs its jobs on one NIO event loop: the loop that reads and writes the server's sockets.
///
/// Hummingbird runs each connection in a child task of its server's task group; on the default executor, every
/// request then crossed threads twice (event loop → task pool for the handler, and back to write the answer), and
/// on a small machine each crossing that wakes a sleeping thread costs about as much as serving the request. With
/// this executor preferred for the whole server (children inherit it, and default actors honour it), a job enqueued
/// from the loop's own thread is appended to its queue without a wake-up. NIO 2.101 makes an event loop a serial
/// executor but not a task executor, hence this adapter.
package final class EventLoopTaskExecutor: TaskExecutor {
    let eventLoop: any EventLoop

    /// While the loop stays awake (`stayAwake(for:)`), the jobs enqueued here wait in `jobs` for the spinning loop
    /// instead of going through NIO's queue.
    private struct Stay {
        var spinning = false
        var jobs: [QueuedJob] = []
        /// Requests to stay awake not yet ended, and until when the latest of them holds.
        var requests = 0
        var until = NIODeadline.uptimeNanoseconds(0)
    }
    private let stay = Mutex(Stay())

    /// Housekeeping jobs (`UnownedJob.isHousekeeping`) wait until no other job of this executor's is queued or
    /// running, as on allcanuse-mock's stdio loop: what an exit queues behind its waiters (its commit, its cgroup's
    /// removal) then runs after their answers, which are several jobs away (an actor, then this loop again, each job
    /// queued before the previous one ends). NIO runs its queue in order and has no idle hook, so the count is kept
    /// here.
    private struct Housekeeping {
        var otherJobs = 0
        var waiting: [QueuedJob] = []
    }
    private let housekeeping = Mutex(Housekeeping())

    package init(_ eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    package func enqueue(_ job: consuming ExecutorJob) {
        // A job's priority is read once, here: it may be raised before the job runs.
        let unowned = UnownedJob(job)
        let job = QueuedJob(job: unowned, isHousekeeping: unowned.isHousekeeping)
        let waits = housekeeping.withLock { housekeeping in
            if !job.isHousekeeping {
                housekeeping.otherJobs += 1
                return false
            }
            guard housekeeping.otherJobs > 0 else { return false }
            housekeeping.waiting.append(job)
            return true
        }
        if !waits { schedule(job) }
    }

    private struct QueuedJob {
        let job: UnownedJob
        let isHousekeeping: Bool
        /// The first housekeeping job released behind answers: it lets whatever they woke run first.
        var yieldsFirst = false
    }

    private func schedule(_ job: QueuedJob) {
        let taken = stay.withLock { stay in
            guard stay.spinning else { return false }
            stay.jobs.append(job)
            return true
        }
        if !taken { eventLoop.execute { self.run(job) } }
    }

    private func run(_ job: QueuedJob) {
        // The answers just written woke their clients, most likely onto this CPU (a loopback socket's wake-up is a
        // sync one: the kernel expects the writer to sleep next). Housekeeping is not worth their wait.
        if job.yieldsFirst { sched_yield() }
        job.job.runSynchronously(on: asUnownedTaskExecutor())
        guard !job.isHousekeeping else { return }
        let released = housekeeping.withLock { housekeeping -> [QueuedJob] in
            housekeeping.otherJobs -= 1
            guard housekeeping.otherJobs == 0 else { return [] }
            defer { housekeeping.waiting = [] }
            return housekeeping.waiting
        }
        for (index, var job) in released.enumerated() {
            job.yieldsFirst = index == 0
            schedule(job)
        }
    }

    /// Keeps the loop's thread running, not sleeping in `epoll_wait`, for up to `duration` or until
    /// `endStayingAwake()`: for a job about to be queued from another thread (a spawn's answer), which then runs
    /// without a wake-up. A thread woken from sleep can be queued behind whatever took its CPU meanwhile (on this
    /// project's VM, behind the child the spawn had just started, with the other CPU idle).
    ///
    /// NIO cannot poll without sleeping, so one job of NIO's takes the thread: it runs this executor's jobs as they
    /// come, yielding the CPU while there are none, until the stay ends. Meanwhile NIO's own tasks and the sockets
    /// wait: keep `duration` to the few milliseconds of a spawn. The jobs bypass NIO's queue because its lock is a
    /// plain mutex: taken by the spinning thread at every turn, it made the thread sleep on it whenever another
    /// thread queued the job it was waiting for (`perf` showed the futex wait), whereas `Mutex` spins first.
    package func stayAwake(for duration: Duration) {
        let until = NIODeadline.now() + TimeAmount(duration)
        let start = stay.withLock { stay in
            stay.requests += 1
            stay.until = max(stay.until, until)
            guard !stay.spinning else { return false }
            stay.spinning = true
            return true
        }
        if start { eventLoop.execute { self.spin() } }
    }

    /// Ends one `stayAwake(for:)` (once the job it was for has come): with none left, the loop sleeps again when
    /// idle.
    package func endStayingAwake() {
        stay.withLock { $0.requests -= 1 }
    }

    private func spin() {
        while true {
            let now = NIODeadline.now()
            let jobs = stay.withLock { stay -> [QueuedJob]? in
                if !stay.jobs.isEmpty {
                    defer { stay.jobs = [] }
                    return stay.jobs
                }
                guard stay.requests > 0, now < stay.until else {
                    stay.spinning = false
                    return nil
                }
                return []
            }
            guard let jobs else { return }
            if jobs.isEmpty { sched_yield() }
            for job in jobs { run(job) }
        }
    }
}
