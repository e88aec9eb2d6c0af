import Foundation
import Synchronization

/// Runs async work to completion on the calling thread: a reader thread handles each line it read itself, in order,
/// instead of handing it to the task pool. On a VM each hand-over (a futex wake of another thread) cost 50–100 µs,
/// twice per message through a proxy. Work that truly waits (a database answer) parks the thread until its
/// continuation is enqueued here; default actors run here too (they follow the task's executor preference).
///
/// Written by hand: the standard library has the protocol (`TaskExecutor`) but no executor that drains on a thread
/// the caller owns, and NIO's event loops would own the thread instead.
public final class ThreadLane: TaskExecutor, Sendable {
    private let jobs = Mutex<[UnownedJob]>([])
    private let wake = DispatchSemaphore(value: 0)

    public init() {}

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        jobs.withLock { $0.append(job) }
        wake.signal()
    }

    /// Runs `body` here and returns when it has finished. One caller at a time (the lane's own thread).
    public func run(_ body: @escaping @Sendable () async -> Void) {
        let finished = Finished()
        Task(executorPreference: self) {
            await body()
            finished.flag.store(true, ordering: .releasing)
            self.wake.signal()
        }
        let executor = asUnownedTaskExecutor()
        while true {
            wake.wait()
            let ready = jobs.withLock { jobs -> [UnownedJob] in
                defer { jobs.removeAll(keepingCapacity: true) }
                return jobs
            }
            for job in ready { job.runSynchronously(on: executor) }
            // Extra wake-ups (one per job already drained) are harmless: the next wait returns, finds nothing.
            if finished.flag.load(ordering: .acquiring), jobs.withLock({ $0.isEmpty }) { return }
        }
    }

    /// Reads `fd` on a thread of its own named `name`, handling each line on it through a lane of its own, in
    /// order; then calls `ended`.
    ///
    /// One task reads the whole stream: its job blocks in `read(2)` between lines, which is safe because nothing
    /// else waits for this lane's thread then (each line's work has finished). A task per line cost 4 % of a
    /// proxied call's CPU to create, enqueue and free (`perf`: `swift_task_create_common`, the executor preference's
    /// status record and its mutex).
    public static func readLines(
        from fd: Int32, threadName name: String, _ handle: @escaping @Sendable (Data) async -> Void,
        ended: @escaping @Sendable () -> Void
    ) {
        let thread = Thread {
            ThreadLane().run {
                var splitter = LineSplitter()
                var lines: [Data] = []
                var open = true
                while open {
                    open = splitter.read(from: fd) { lines.append($0) }
                    if !open { splitter.finish { lines.append($0) } }
                    for line in lines { await handle(line) }
                    lines.removeAll(keepingCapacity: true)
                }
            }
            ended()
        }
        thread.name = name
        thread.start()
    }

    private final class Finished: Sendable {
        let flag = Atomic<Bool>(false)
    }
}
