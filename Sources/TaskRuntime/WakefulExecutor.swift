/// An executor whose thread can stay awake for a moment instead of sleeping (allcanuse-mock's stdio loop and its HTTP
/// server's event loop).
///
/// A create waits for its child to reach execve on the reactor thread, then for the thread it runs on to wake. On
/// this project's VM the kernel queued that thread behind the new child on the child's CPU while the other CPU sat
/// idle, for as long as the child ran (0.5-0.8 ms after idle; perf sched traces). Awake, the thread never leaves its
/// CPU and runs the create's next job as soon as it is queued.
public protocol WakefulExecutor: TaskExecutor {
    /// Keeps the executor's thread polling, not sleeping, for up to `duration` or until `endStayingAwake()`.
    func stayAwake(for duration: Duration)
    /// Ends one `stayAwake(for:)`.
    func endStayingAwake()
}
