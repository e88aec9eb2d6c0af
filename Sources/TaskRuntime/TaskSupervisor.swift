import CCorral
import CorralJSON
import Foundation
import Logging
import Sandbox
import Synchronization

/// Owns background tasks, each one a real child process: spawn, pause, resume, cancel, wait, timeouts, output and
/// events, persisted in a state directory.
public actor TaskSupervisor {
    public struct Configuration: Sendable {
        /// SQLite database, output files and the lock live here.
        public var stateDirectory: String
        /// Time between SIGTERM and SIGKILL when a task is cancelled.
        public var graceMilliseconds: Int
        /// Give each task its own cgroup v2 (freeze, kill) where a writable hierarchy exists.
        public var useCgroups: Bool
        /// The environment every task starts from; the supervisor's own environment is not inherited.
        public var baseEnvironment: [String: String]
        /// Who tasks run as: nil is `TaskIdentity.resolve(nil)` (a root server's tasks get an unprivileged uid).
        public var taskIdentity: TaskIdentity?
        /// Put tasks in a PID namespace held by a keeper process, so that none outlives the supervisor.
        public var usePIDNamespace: Bool
        /// Which finished tasks are kept (with their events and output); the others are pruned at start and soon
        /// after tasks finish.
        public var retention: TaskRetention
        public var logger: Logger

        public init(
            stateDirectory: String,
            graceMilliseconds: Int = 2000,
            useCgroups: Bool = true,
            baseEnvironment: [String: String] = TaskSupervisor.minimalEnvironment(),
            taskIdentity: TaskIdentity? = nil,
            usePIDNamespace: Bool = true,
            retention: TaskRetention = .all,
            logger: Logger = Logger(label: "corral.runtime")
        ) {
            self.retention = retention
            self.stateDirectory = stateDirectory
            self.graceMilliseconds = graceMilliseconds
            self.useCgroups = useCgroups
            self.baseEnvironment = baseEnvironment
            self.taskIdentity = taskIdentity
            self.usePIDNamespace = usePIDNamespace
            self.logger = logger
        }
    }

    /// `PATH`, `LANG`, `HOME` and `USER` only: tokens and keys in the supervisor's environment stay there.
    public static func minimalEnvironment() -> [String: String] {
        let own = ProcessInfo.processInfo.environment
        var environment = ["PATH": ExecutableLookup.defaultPath, "LANG": "C.UTF-8"]
        if let home = own["HOME"] { environment["HOME"] = home }
        if let user = own["USER"] { environment["USER"] = user }
        return environment
    }

    private enum StopReason {
        case cancelled(String?)
        case timedOut(Int)
    }

    /// A task whose process has not been finalised yet.
    private final class LiveTask {
        var record: TaskRecord
        let process: ChildProcess
        let cgroup: TaskCgroup?
        let io: TaskIO
        var stopReason: StopReason?
        var exitSeen = false
        var runningSince: ContinuousClock.Instant?
        var runningBefore: Duration = .zero
        var timeoutTimer: Task<Void, Never>?
        var limits = CgroupLimits()
        /// `/proc/PID/io`, opened after the create's answer (`keepIOCountersOpen`) and read at the exit; -1: not yet.
        var ioCountersFD: Int32 = -1

        init(record: TaskRecord, process: ChildProcess, cgroup: TaskCgroup?, io: TaskIO) {
            self.record = record
            self.process = process
            self.cgroup = cgroup
            self.io = io
        }

        var runningTime: Duration {
            runningBefore + (runningSince.map { ContinuousClock.now - $0 } ?? .zero)
        }
    }

    private struct Waiter {
        var targets: Set<TaskStatus>
        var continuation: CheckedContinuation<Bool, Never>
        var timer: Task<Void, Never>?
    }

    public nonisolated let configuration: Configuration
    /// Why tasks get no cgroup on this machine; nil when they do.
    public nonisolated let cgroupUnavailableReason: String?
    /// Who tasks run as.
    public nonisolated let identity: TaskIdentity
    /// Why tasks are not in a PID namespace of their server's; nil when they are.
    public private(set) var pidNamespaceUnavailableReason: String?
    private var keeper: PIDNamespaceKeeper?
    /// The first keeper's start, until a spawn or the shutdown has waited for it.
    private var keeperStarting: Task<Void, Never>?
    /// Whether the spawning thread's bounding set is empty, so that tasks' is too.
    private var boundingSetEmptied = false
    /// Where tasks' working and temp directories are made (see `StateDirectoryAccess.taskRoot`).
    public nonisolated let taskRoot: String

    /// The store as committed; read and written through `store`.
    private let storage: TaskStore
    /// Every read and write of the store goes through here, after the ends that waiters were told of ahead of their
    /// commit are committed (see `EndCommitQueue`); while one cannot be, the store is not used.
    private var store: TaskStore {
        get throws(RuntimeError) {
            try endCommits.commitPending()
            return storage
        }
    }
    private let endCommits: EndCommitQueue
    private let reactor: Reactor
    /// The running tasks' pidfds. The reactor waits on this set, unless the exit executor's thread can
    /// (`handleExits(on:)`).
    private let exits: DescriptorSet
    /// The exit executor, when it waits on `exits` itself.
    private var exitWatcher: (any DescriptorWatchingExecutor)?
    /// Set at shutdown: a loop that ends from then on does not hand `exits` back to the reactor, which is stopping.
    /// Checked and acted on under its lock, from the loop's thread.
    private nonisolated let exitsRetired = Mutex(false)
    private let lockFD: Int32
    private let cgroups: CgroupHierarchy?
    private let logger: Logger
    private var live: [String: LiveTask] = [:]
    /// The newest final records, so that a waiter (and the reads right after it) need not go back to SQLite.
    private var recentlyFinished: [String: TaskRecord] = [:]
    private var recentlyFinishedOrder: [String] = []
    private static let recentlyFinishedCapacity = 512
    /// The newest event of each task recently written or read.
    private var lastEvents: [String: TaskEvent] = [:]
    private static let lastEventCapacity = 4096
    private var waiters: [String: [UInt64: Waiter]] = [:]
    private var nextWaiterID: UInt64 = 1
    private var busyTasks: Set<String> = []
    private var pruneScheduled = false
    private static let pruneDelay: Duration = .milliseconds(200)
    private var operationQueue: [String: [CheckedContinuation<Void, Never>]] = [:]
    private var isShutDown = false
    /// Where tasks' directories and cgroups go.
    private nonisolated let layout: ProvisionedTask.Layout
    /// The next create's id, directories and cgroup, made while nothing waits (see `ProvisionedTask`).
    private var spare: ProvisionedTask?
    /// The making of `spare`, off the actor.
    private var provisioning: Task<Void, Never>?
    private var spareFailureLogged = false
    /// Where exits are handled (see `handleExits(on:)`).
    private var exitExecutor: (any TaskExecutor)?
    /// Kept awake through each create's spawn (see `keepAwakeThroughSpawns(_:)`).
    private var spawnWaker: (any WakefulExecutor)?
    /// The sandbox profile the last create asked for: the spare's sandbox is prepared for it.
    private var lastSandboxProfile: SandboxProfile?
    /// Creates that took the spare's sandbox (for tests).
    private(set) var sandboxesTakenReady = 0
    /// Ended tasks' cgroups waiting for their removal (see `removeAfterWaiters`). Outside the actor: the removal
    /// runs as a background job, which must not hold the actor (jobs queued behind it would wait at its priority).
    private nonisolated let endedCgroups = Mutex<[TaskCgroup]>([])

    /// Opens (or creates) the state directory, takes its lock, and recovers from a previous crash: tasks that were
    /// running are marked failed and their processes are made sure to be gone.
    public static func start(_ configuration: Configuration) async throws(RuntimeError) -> TaskSupervisor {
        let directory = configuration.stateDirectory
        do {
            try FileManager.default.createDirectory(
                atPath: directory + "/tasks", withIntermediateDirectories: true)
        } catch {
            throw RuntimeError.storage("cannot create state directory \(directory): \(error)")
        }
        let identity: TaskIdentity
        if let configured = configuration.taskIdentity {
            identity = configured
        } else {
            do throws(SandboxError) {
                identity = try TaskIdentity.resolve(nil)
            } catch {
                throw RuntimeError.invalidArgument(error.description)
            }
        }
        try StateDirectoryAccess.closeToTasks(directory)
        if !identity.changesUser && geteuid() != 0 {
            configuration.logger.warning(
                "tasks run as this server's own uid \(identity.uid): they own the state directory too, and only Landlock's scope (where the profile has it) stops them signalling the server; run the server as root for a task user of their own")
        }
        // Tasks may share the server's uid (a server not running as root): even then its environment, memory and
        // descriptors under /proc stay closed to them.
        _ = corral_set_non_dumpable()
        raiseOpenFileLimit(configuration.logger)
        let lockFD = try takeLock(directory)
        let store: TaskStore
        let reactor: Reactor
        let exits: DescriptorSet
        do throws(RuntimeError) {
            try StateDirectoryAccess.createPrivateFile(directory + "/tasks.sqlite")
            store = try TaskStore(path: directory + "/tasks.sqlite")
            exits = try DescriptorSet()
            do throws(RuntimeError) {
                reactor = try Reactor()
            } catch {
                exits.close()
                throw error
            }
            do throws(RuntimeError) {
                try watchExits(exits, on: reactor)
            } catch {
                exits.close()
                await reactor.shutdown()
                throw error
            }
        } catch {
            close(lockFD)
            throw error
        }
        var exitJournal: ExitJournal?
        do {
            exitJournal = try ExitJournal(path: directory + "/exits.journal")
        } catch {
            configuration.logger.warning(
                "no exit journal (\(error)): a task's end is committed before its waiters are answered")
        }
        // Names derived from the state directory: stable across restarts, one per state directory.
        let canonical = (try? FileManager.default.destinationOfSymbolicLink(atPath: directory)) ?? directory
        let stateName = stableHash(URL(fileURLWithPath: canonical).path)
        var cgroups: CgroupHierarchy?
        var reason: String?
        if configuration.useCgroups {
            switch CgroupHierarchy.prepare(name: "corral-" + stateName) {
            case .success(let hierarchy): cgroups = hierarchy
            case .failure(let error): reason = error.description
            }
        } else {
            reason = "disabled by configuration"
        }
        if let reason {
            configuration.logger.info("per-task cgroups unavailable, using process-group signals: \(reason)")
        }
        let taskRoot: String
        do {
            taskRoot = try StateDirectoryAccess.taskRoot(stateDirectory: directory, identity: identity, name: stateName)
        } catch {
            exits.close()
            await reactor.shutdown()
            close(lockFD)
            throw error
        }
        let supervisor = TaskSupervisor(
            configuration: configuration, store: store,
            endCommits: EndCommitQueue(store: store, journal: exitJournal, logger: configuration.logger),
            reactor: reactor, exits: exits, lockFD: lockFD, cgroups: cgroups, cgroupUnavailableReason: reason,
            identity: identity, taskRoot: taskRoot)
        do throws(RuntimeError) {
            try await supervisor.recover()
        } catch {
            await supervisor.shutdown(cancelRunning: false)
            throw error
        }
        await supervisor.beginStartingKeeper()
        await supervisor.provisionSpare()
        return supervisor
    }

    private init(
        configuration: Configuration, store: TaskStore, endCommits: EndCommitQueue, reactor: Reactor,
        exits: DescriptorSet, lockFD: Int32, cgroups: CgroupHierarchy?, cgroupUnavailableReason: String?,
        identity: TaskIdentity, taskRoot: String
    ) {
        self.identity = identity
        self.taskRoot = taskRoot
        self.configuration = configuration
        self.storage = store
        self.endCommits = endCommits
        self.reactor = reactor
        self.exits = exits
        self.lockFD = lockFD
        self.cgroups = cgroups
        self.cgroupUnavailableReason = cgroupUnavailableReason
        self.logger = configuration.logger
        self.layout = ProvisionedTask.Layout(
            stateDirectory: configuration.stateDirectory, taskRoot: taskRoot, identity: identity, cgroups: cgroups)
    }

    /// Starts the keeper without waiting for it: spawning it (a vfork until its exec) and its own start-up were on
    /// the server's path to its first answer. Every spawn waits for it (`keeperReady`).
    private func beginStartingKeeper() {
        keeperStarting = Task { await self.startKeeper() }
    }

    /// Returns once the first keeper has started (or failed to): no task is spawned outside its namespace.
    private func keeperReady() async {
        guard let starting = keeperStarting else { return }
        await starting.value
        keeperStarting = nil
    }

    /// Starts (or, after it died, restarts) the keeper of the tasks' PID namespace, on the reactor thread: the
    /// keeper's parent-death signal follows the thread that spawned it, and every task is spawned there too.
    private func startKeeper() async {
        if !boundingSetEmptied {
            // Children of the reactor thread (every task) inherit its empty bounding set and locked securebits.
            boundingSetEmptied = await reactor.perform { corral_drop_thread_bounding_set() } == 0
            if !boundingSetEmptied {
                logger.warning("tasks keep the bounding set (this server has no CAP_SETPCAP); their other capability sets are empty and no_new_privs is set")
            }
        }
        guard configuration.usePIDNamespace else {
            pidNamespaceUnavailableReason = "disabled by configuration"
            return
        }
        let started = await reactor.perform { PIDNamespaceKeeper.start() }
        switch started {
        case .success(let keeper):
            self.keeper = keeper
            pidNamespaceUnavailableReason = nil
        case .failure(let reason):
            pidNamespaceUnavailableReason = reason.description
            logger.info("tasks get no PID namespace, only the parent-death signal: \(reason.description)")
        }
    }

    /// How long a create keeps the creates' executor awake for its spawn: a spawn after idle took 0.4-0.9 ms.
    static let spawnWakefulness = Duration.milliseconds(2)

    /// Handles tasks' exits (their records, their waiters) on `executor`: the one the waiting requests run on, so
    /// that an exit wakes that one thread instead of a pool thread that then wakes it (on this project's VM each
    /// wake-up was 50–150 µs of a waiter's answer). The timers an exit cancels (a waiter's timeout, the task's own)
    /// and the pruning it schedules run there too: cancelling a timer on the pool woke a pool thread, which took the
    /// CPU from the answer. Nil: the task pool. For tasks created and waits begun from now on.
    ///
    /// An executor that can wait on descriptors (`DescriptorWatchingExecutor`) also waits on the tasks' pidfds, of
    /// all tasks, instead of the reactor: an exit then wakes that thread directly and not the reactor, which would
    /// then wake it (40 µs of each wait's wake-up). If its thread ends, the reactor takes them back.
    public func handleExits(on executor: (any TaskExecutor)?) {
        exitExecutor = executor
        let exits = self.exits
        let reactor = self.reactor
        if let previous = exitWatcher {
            previous.unwatch(exits.fd)
            exitWatcher = nil
            try? Self.watchExits(exits, on: reactor)
        }
        guard !isShutDown, let watcher = executor as? any DescriptorWatchingExecutor else { return }
        reactor.deregister(exits.fd)
        let logger = self.logger
        let watched = watcher.watch(exits.fd) {
            exits.dispatchReady()
        } onEnd: { [weak self] in
            self?.exitsRetired.withLock { retired in
                guard !retired else { return }
                do {
                    try Self.watchExits(exits, on: reactor)
                } catch {
                    logger.error("cannot watch the tasks' exits on the reactor again: \(error)")
                }
            }
        }
        if watched {
            exitWatcher = watcher
        } else {
            try? Self.watchExits(exits, on: reactor)
        }
    }

    /// Has the reactor wait on the tasks' pidfds (again: it replaces an earlier registration).
    private static func watchExits(_ exits: DescriptorSet, on reactor: Reactor) throws(RuntimeError) {
        reactor.deregister(exits.fd)
        try reactor.register(exits.fd) { _ in exits.dispatchReady() }
    }

    /// Keeps `executor`, the one the creates' requests run on, awake through each create's spawn: the spawn's answer
    /// then runs the create's next step at once instead of waking a thread that the kernel may queue behind the new
    /// child (see `WakefulExecutor`). Nil: nothing is kept awake.
    public func keepAwakeThroughSpawns(_ executor: (any WakefulExecutor)?) {
        spawnWaker = executor
    }

    // MARK: - Create

    /// Makes the next create's directories and cgroup off the actor, unless a spare is ready or being made. A failure
    /// is left to that create, which makes its own and says why.
    private func provisionSpare() {
        guard spare == nil, provisioning == nil, !isShutDown else { return }
        let layout = self.layout
        let expectedProfile = lastSandboxProfile
        let hold = spareHold
        provisioning = Task.detached {
            await hold?()
            do throws(RuntimeError) {
                let made = try ProvisionedTask.make(layout, spare: true, expectedProfile: expectedProfile)
                await self.adopt(made)
            } catch {
                await self.spareFailed(error)
            }
        }
    }

    /// Awaited before each spare is made (for tests that need one in the making).
    private var spareHold: (@Sendable () async -> Void)?
    func holdSpares(_ hold: (@Sendable () async -> Void)?) { spareHold = hold }

    /// The id the next create will take, once its place is ready (for tests).
    var spareTaskID: String? { spare?.taskID }
    /// The profile the spare's sandbox was prepared for (for tests).
    var spareSandboxProfile: SandboxProfile? { spare?.sandbox?.profile }

    private func spareFailed(_ error: RuntimeError) {
        provisioning = nil
        if !spareFailureLogged {
            spareFailureLogged = true
            logger.warning("cannot make the next task's directories ahead (each create makes its own): \(error)")
        }
    }

    private func adopt(_ made: ProvisionedTask) {
        provisioning = nil
        if isShutDown || spare != nil {
            made.discard(layout)
        } else {
            spare = made
        }
    }

    /// Starts a task. A spawn failure is not thrown: the task is returned `failed` with the reason in `lastError`.
    public func create(_ spec: TaskSpec) async throws(RuntimeError) -> TaskRecord {
        // Before anything is made for the task, and checked again after: a shutdown may have run meanwhile.
        await keeperReady()
        guard !isShutDown else { throw RuntimeError.shutDown }
        try validate(spec)
        if let cwd = spec.workingDirectory, identity.changesUser, let refusal = identity.writeRefusal(cwd) {
            throw RuntimeError.invalidArgument(
                "cwd \(cwd) cannot be used: \(refusal). Tasks run as \(identity.description); make the directory "
                    + "theirs (chown \(identity.uid):\(identity.gid) \(cwd)) or writable by them, or start the "
                    + "server with another --task-user")
        }
        let place: ProvisionedTask
        if let ready = spare {
            spare = nil
            place = ready
        } else {
            place = try ProvisionedTask.make(layout, spare: false)
        }
        // The next create's directories are made once this one has answered, with a sandbox for this one's profile.
        lastSandboxProfile = spec.sandbox
        defer { provisionSpare() }
        // The spare's sandbox, if this task does not take it, is closed on the way out.
        var spareSandbox = place.sandbox
        defer { spareSandbox?.prepared.cleanup() }
        let taskID = place.taskID
        let taskDirectory = place.taskDirectory
        let workDirectory = spec.workingDirectory ?? place.defaultWorkDirectory
        let temporaryDirectory = place.temporaryDirectory
        if spec.workingDirectory != nil { rmdir(place.defaultWorkDirectory) }
        try place.openToTask()
        let now = Date()
        var record = TaskRecord(
            taskID: taskID, title: spec.title, kind: spec.kind, status: .pending, createdAt: now, updatedAt: now,
            startedAt: nil, completedAt: nil, timeoutMilliseconds: spec.timeoutMilliseconds,
            command: spec.command.arguments, workingDirectory: workDirectory, pid: nil, processStartTime: nil,
            exitCode: nil, signal: nil, lastError: nil, cgroupPath: nil, protections: [],
            outputLimitBytes: spec.outputLimitBytes, stdoutBytes: 0, stderrBytes: 0, cpuUserMicroseconds: nil,
            cpuSystemMicroseconds: nil, maxResidentKiB: nil, runningMilliseconds: 0, metadata: spec.metadata)
        // Stored once the spawn has succeeded or failed, with the creation event in the same transaction: one commit
        // per create. A crash in between leaves no record, and the child dies with the spawning thread (its
        // cgroup is removed at the next start).
        let created = TaskStore.NewEvent(type: "info", message: "task created", data: ["status": "pending"])

        let pipes: (stdin: Int32, stdoutRead: Int32, stdoutWrite: Int32, stderrRead: Int32, stderrWrite: Int32)
        do {
            pipes = try openStandardStreams(spec, taskDirectory: taskDirectory)
        } catch {
            place.cgroup?.remove()
            return try failToStart(&record, reason: error.description, created: created)
        }
        var cgroup = place.cgroup
        var cgroupNote: String? = cgroupUnavailableReason
        if let cgroups, cgroup == nil {
            // No spare, or the spare's attempt failed (a descendant limit reached then, say): made now.
            do {
                cgroup = try cgroups.createTaskCgroup(named: taskID)
            } catch {
                cgroupNote = error.description
            }
        }
        let limits = spec.sandbox?.cgroupLimits ?? CgroupLimits()
        if let cgroups, let unlimited = cgroup, !limits.isEmpty {
            do {
                try cgroups.apply(limits, to: unlimited, named: taskID)
            } catch {
                unlimited.remove()
                cgroup = nil
                cgroupNote = error.description
            }
        }
        if !limits.isEmpty && cgroup == nil {
            // A limit that cannot be enforced is not silently dropped.
            close(pipes.stdin)
            close(pipes.stdoutWrite)
            close(pipes.stderrWrite)
            close(pipes.stdoutRead)
            close(pipes.stderrRead)
            return try failToStart(
                &record, reason: "cgroup limits (\(limits.summary)) cannot be enforced: \(cgroupNote ?? "no cgroup")",
                created: created)
        }
        var confinement = spec.confinement
        var sandboxSummary: [String] = []
        var prepared: PreparedSandbox?
        if let profile = spec.sandbox {
            do {
                let sandbox: PreparedSandbox
                if let ready = spareSandbox, ready.fits(profile, workingDirectory: spec.workingDirectory) {
                    sandbox = ready.prepared
                    spareSandbox = nil  // the spawn's now, closed after it as one made here
                    sandboxesTakenReady += 1
                } else {
                    sandbox = try SandboxPreparation.prepare(
                        profile, workingDirectory: workDirectory, temporaryDirectory: temporaryDirectory)
                }
                prepared = sandbox
                confinement = sandbox.confinement
                confinement.resourceLimits += spec.confinement.resourceLimits
                sandboxSummary = sandbox.summary
            } catch {
                close(pipes.stdin)
                close(pipes.stdoutWrite)
                close(pipes.stderrWrite)
                close(pipes.stdoutRead)
                close(pipes.stderrRead)
                cgroup?.remove()
                return try failToStart(&record, reason: "sandbox: \(error.description)", created: created)
            }
        }
        var environment = configuration.baseEnvironment
        environment["TMPDIR"] = temporaryDirectory
        if identity.changesUser {
            // The server's HOME is not the task user's to write.
            environment["HOME"] = temporaryDirectory
            environment["USER"] = identity.name
        }
        environment.merge(spec.environment) { _, new in new }
        if keeper?.isAlive == false {
            logger.error("the keeper of the tasks' PID namespace died; starting a new one")
            if let dead = keeper {
                // On the reactor thread, after any spawn still using its namespace descriptors.
                await reactor.perform { dead.stop() }
            }
            keeper = nil
            await startKeeper()
        }
        let spawnConfiguration = SpawnConfiguration(
            arguments: spec.command.arguments, environment: environment, workingDirectory: workDirectory,
            standardInput: pipes.stdin, standardOutput: pipes.stdoutWrite, standardError: pipes.stderrWrite,
            newSession: true, parentDeathSignal: SIGKILL, cgroup: cgroup, confinement: confinement,
            identity: identity.changesUser ? identity : nil, dropCapabilities: true, pidNamespace: keeper)

        let spawned: Result<ChildProcess, SpawnError>
        // The creates' executor stays awake until the spawn's answer, unless a spare is being made meanwhile: a
        // thread spinning on one of a small machine's CPUs leaves the spawn, its child and the spare's maker the
        // other (back to back over HTTP, creates took 2.75-2.97 ms kept awake against 1.97-2.38 ms not).
        let wakeful = provisioning == nil ? spawnWaker : nil
        wakeful?.stayAwake(for: Self.spawnWakefulness)
        do throws(SpawnError) {
            // On the reactor thread: the parent-death signal follows the spawning thread, and that thread's
            // bounding set is already empty (see startKeeper), which spares every child forty credential commits.
            spawned = .success(try await reactor.perform { () throws(SpawnError) -> ChildProcess in
                try Spawner.spawn(spawnConfiguration)
            })
        } catch {
            spawned = .failure(error)
        }
        wakeful?.endStayingAwake()
        prepared?.cleanup()
        close(pipes.stdin)
        close(pipes.stdoutWrite)
        close(pipes.stderrWrite)

        let process: ChildProcess
        switch spawned {
        case .failure(let error):
            close(pipes.stdoutRead)
            close(pipes.stderrRead)
            cgroup?.remove()
            return try failToStart(&record, reason: error.description, created: created)
        case .success(let child) where child.pidfd < 0:
            // Only kernels before 5.3 lack pidfds; without one there is no race-free wait or signal.
            child.signal(SIGKILL)
            while child.reap() == nil { usleep(1000) }
            close(pipes.stdoutRead)
            close(pipes.stderrRead)
            cgroup?.remove()
            return try failToStart(
                &record, reason: "this kernel has no pidfd support (Linux 5.3 or later is required)", created: created)
        case .success(let child):
            process = child
        }
        if isShutDown {
            // The shutdown ran while the spawn was on the reactor thread: its snapshot of live tasks missed this one,
            // so it ends here, before anyone is told it runs.
            if let cgroup { try? cgroup.killAll() } else { _ = process.signalGroup(SIGKILL) }
            var attempts = 0
            while process.reap() == nil && attempts < 10_000 {
                usleep(200)
                attempts += 1
            }
            cgroup?.waitUntilEmpty(timeoutMilliseconds: 2000)
            process.close()
            close(pipes.stdoutRead)
            close(pipes.stderrRead)
            cgroup?.remove()
            return try failToStart(
                &record, reason: "the supervisor shut down while the task was starting", created: created)
        }

        let io = TaskIO(
            reactor: reactor, directory: taskDirectory, limit: spec.outputLimitBytes, stdoutFD: pipes.stdoutRead,
            stderrFD: pipes.stderrRead)
        record.status = .running
        record.startedAt = Date()
        record.updatedAt = record.startedAt ?? now
        record.pid = process.pid
        record.processStartTime = process.startTime
        record.cgroupPath = cgroup?.path
        record.uid = Int64(identity.uid)
        record.gid = Int64(identity.gid)
        record.protections =
            ["own_session", "pidfd", "pdeathsig", cgroup != nil ? "cgroup" : "process_group_signals",
             boundingSetEmptied ? "capabilities:none" : "capabilities:none_effective,bounding_set_kept",
             keeper != nil ? "pid_namespace" : "pid_namespace:unavailable"]
            + (limits.isEmpty ? [] : ["cgroup_limits:" + limits.summary])
            + (spec.sandbox == nil && spec.confinement.noNewPrivileges ? ["no_new_privs"] : [])
            + (spec.sandbox == nil && !spec.confinement.resourceLimits.isEmpty ? ["rlimits"] : [])
            + sandboxSummary + spec.confinementSummary
        let task = LiveTask(record: record, process: process, cgroup: cgroup, io: io)
        task.limits = limits
        task.runningSince = .now
        live[taskID] = task

        var data: JSONValue = ["previous_status": "pending", "status": "running", "pid": .int(Int(process.pid))]
        if cgroup == nil, let cgroupNote { data = data.merging(["cgroup_unavailable": .string(cgroupNote)]) }
        // Watch first: whatever happens next (even a failed save), the task is never left unobserved.
        do {
            try io.start()
            let exitExecutor = self.exitExecutor
            try exits.register(process.pidfd) { [weak self, exits] _ in
                // Level-triggered: stop watching at once, the exit is handled once.
                exits.deregister(process.pidfd)
                guard let self else { return }
                Task(executorPreference: exitExecutor) { await self.processExited(taskID) }
            }
        } catch {
            logger.error("cannot watch task \(taskID): \(error)")
            killTree(task)
            Task { await self.processExited(taskID) }
        }
        do {
            try persist(record, events: [created, .init(type: "progress", message: "task started", data: data)])
        } catch {
            // A task the store does not know must not run: end it (its end is recorded if the store recovers).
            logger.error("cannot store task \(taskID), ending it: \(error)")
            task.stopReason = .cancelled("the task could not be stored")
            killTree(task)
            throw error
        }
        armTimeout(task)
        keepIOCountersOpen(task)
        return task.record
    }

    /// Opens the task's `/proc/PID/io` in a housekeeping job, after the create's answer, for its exit to read: the
    /// open was 29 µs of each wait's wake-up after an idle spell. The leader is not reaped before its exit is
    /// handled (`processExited`), so its pid cannot name another process meanwhile.
    private func keepIOCountersOpen(_ task: LiveTask) {
        let taskID = task.record.taskID
        Task(executorPreference: exitExecutor, priority: .background) { await self.openIOCounters(taskID) }
    }

    private func openIOCounters(_ taskID: String) {
        guard let task = live[taskID], !task.exitSeen, task.ioCountersFD < 0 else { return }
        task.ioCountersFD = corral_open_process_io(task.process.pid)
    }

    private func killTree(_ task: LiveTask) {
        if let cgroup = task.cgroup { try? cgroup.killAll() }
        if !task.exitSeen { task.process.signalGroup(SIGKILL) }
        task.process.signal(SIGKILL)
    }

    private func validate(_ spec: TaskSpec) throws(RuntimeError) {
        switch spec.command {
        case .argv(let arguments):
            guard let first = arguments.first, !first.isEmpty else {
                throw RuntimeError.invalidArgument("argv must name a program")
            }
        case .shell(let command):
            guard !command.trimmingCharacters(in: .whitespaces).isEmpty else {
                throw RuntimeError.invalidArgument("command must not be empty")
            }
        }
        if let timeout = spec.timeoutMilliseconds, timeout <= 0 {
            throw RuntimeError.invalidArgument("timeout_ms must be positive, got \(timeout)")
        }
        guard spec.outputLimitBytes >= 0 else {
            throw RuntimeError.invalidArgument("output_limit_bytes must not be negative")
        }
        if let cwd = spec.workingDirectory, !cwd.hasPrefix("/") {
            throw RuntimeError.invalidArgument("cwd must be an absolute path, got \(cwd)")
        }
    }

    private func openStandardStreams(_ spec: TaskSpec, taskDirectory: String) throws(RuntimeError) -> (
        stdin: Int32, stdoutRead: Int32, stdoutWrite: Int32, stderrRead: Int32, stderrWrite: Int32
    ) {
        var stdinFD: Int32
        if let descriptor = spec.standardInputDescriptor {
            stdinFD = fcntl(descriptor, F_DUPFD_CLOEXEC, 3)
        } else if let input = spec.standardInput {
            let path = taskDirectory + "/stdin"
            guard FileManager.default.createFile(atPath: path, contents: Data(input.utf8), attributes: [.posixPermissions: 0o600]) else {
                throw RuntimeError.storage("cannot write \(path)")
            }
            stdinFD = open(path, O_RDONLY | O_CLOEXEC)
        } else {
            stdinFD = open("/dev/null", O_RDONLY | O_CLOEXEC)
        }
        guard stdinFD >= 0 else { throw RuntimeError.system("open stdin", errno) }
        var out: [Int32] = [-1, -1]
        var err: [Int32] = [-1, -1]
        guard corral_pipe_cloexec(&out) == 0 else {
            let code = errno
            close(stdinFD)
            throw RuntimeError.system("pipe2", code)
        }
        guard corral_pipe_cloexec(&err) == 0 else {
            let code = errno
            close(stdinFD)
            close(out[0])
            close(out[1])
            throw RuntimeError.system("pipe2", code)
        }
        return (stdinFD, out[0], out[1], err[0], err[1])
    }

    private func failToStart(_ record: inout TaskRecord, reason: String, created: TaskStore.NewEvent)
        throws(RuntimeError) -> TaskRecord
    {
        let previous = record.status
        record.status = .failed
        record.lastError = "failed to start: \(reason)"
        record.updatedAt = Date()
        record.completedAt = record.updatedAt
        try persist(
            record,
            events: [
                created,
                .init(
                    type: "error", message: record.lastError ?? "failed to start",
                    data: ["previous_status": .string(previous.rawValue), "status": "failed"]),
            ])
        return record
    }

    // MARK: - Exit

    private func processExited(_ taskID: String) async {
        guard let task = live[taskID], !task.exitSeen else { return }
        task.exitSeen = true
        task.timeoutTimer?.cancel()
        // The leader is a zombie until reaped, so neither its pid nor its group id can have been reused yet. Whatever
        // it left behind belongs to the task and ends with it.
        // Most often the leader was the task's last process, and one read of cgroup.events says so: nothing to kill
        // and nothing to wait for (no process is left to fork a new one into the cgroup). Any other answer, or none,
        // takes the kill-and-wait path.
        let cgroupWasEmpty = task.cgroup?.isEmpty ?? false
        var killFailure: String?
        if let cgroup = task.cgroup {
            if !cgroupWasEmpty {
                do {
                    try cgroup.killAll()  // SIGKILL reaches frozen processes too
                } catch {
                    killFailure = error.description
                }
            }
        } else {
            task.process.signalGroup(SIGCONT)
            task.process.signalGroup(SIGKILL)
            // SIGKILLed members die asynchronously; wait (bounded) so that a finished task has no live process
            // left, as the cgroup path guarantees. The leader stays a zombie until reaped below, so the group id
            // cannot be reused meanwhile.
            let group = task.process.pid
            let deadline = ContinuousClock.now + .seconds(2)
            while ContinuousClock.now < deadline,
                ProcessTable.members(ofGroup: group).contains(where: { !$0.isGone && $0.pid != group })
            {
                try? await Task.sleep(for: .microseconds(250))
            }
        }
        // The first process is a zombie until reaped: its I/O counters (its own and its waited-for children's) are
        // still there to read.
        var ioRead: Int64 = -1
        var ioWrite: Int64 = -1
        if task.ioCountersFD >= 0 {
            _ = corral_process_io_bytes_at(task.ioCountersFD, 1, &ioRead, &ioWrite)
            task.ioCountersFD = -1
        } else {
            _ = corral_process_io_bytes(task.process.pid, &ioRead, &ioWrite)
        }
        var exit = task.process.reap()
        var attempts = 0
        while exit == nil && attempts < 5000 {
            // The pidfd said the process exited; the reap can only lag by a scheduler tick. Bounded, in case
            // someone else reaped it (ECHILD) and it can never succeed.
            try? await Task.sleep(for: .microseconds(200))
            exit = task.process.reap()
            attempts += 1
        }
        await task.io.waitUntilClosed(timeout: .milliseconds(500))
        var cpu: (user: Int64, system: Int64)?
        var accounting = CgroupAccounting()
        var leftBehind: [pid_t]?
        if let cgroup = task.cgroup {
            if !cgroupWasEmpty {
                await waitUntilEmpty(cgroup, timeout: .seconds(2))
                // Read through the kept cgroup.events; listing the pids needs a descriptor, which may be lacking.
                if cgroup.isPopulated { leftBehind = cgroup.processIDs() }
            }
            cpu = cgroup.cpuUsage()
            accounting = cgroup.accounting()
        }
        task.process.close()
        if let since = task.runningSince {
            task.runningBefore += .now - since
            task.runningSince = nil
        }
        var record = task.record
        let previous = record.status
        let totals = task.io.totals
        record.stdoutBytes = totals.stdout
        record.stderrBytes = totals.stderr
        record.runningMilliseconds = task.runningBefore.milliseconds
        record.cpuUserMicroseconds = cpu?.user ?? exit?.userMicroseconds
        record.cpuSystemMicroseconds = cpu?.system ?? exit?.systemMicroseconds
        record.maxResidentKiB = exit?.maxResidentKiB
        // Only a memory cgroup knows the peak (ru_maxrss of a vfork child includes its parent's resident set).
        record.peakMemoryBytes = accounting.peakMemoryBytes
        record.ioReadBytes = ioRead >= 0 ? ioRead : nil
        record.ioWriteBytes = ioWrite >= 0 ? ioWrite : nil
        var message: String
        switch exit?.termination {
        case nil:
            message = "exit status unavailable (the process was reaped elsewhere)"
        case .exited(let code)?:
            record.exitCode = code
            message = "exited with status \(code)"
        case .signaled(let signal)?:
            record.signal = signal
            message = "killed by signal \(signal) (\(signalName(signal)))"
            if signal == SIGSYS {
                message += ": the sandbox's seccomp filter stopped a forbidden system call"
            }
        }
        if let kills = accounting.oomKills, kills > 0, let memory = task.limits.memory {
            message = "killed by the memory limit (\(memory) bytes; \(kills) OOM kill\(kills == 1 ? "" : "s")): \(message)"
        }
        if leftBehind != nil || killFailure != nil {
            // Never reported as a clean end: the task's tree outlived it.
            let pids = (leftBehind ?? []).map(String.init).joined(separator: " ")
            message += "; processes left in its cgroup (\(pids.isEmpty ? "unknown" : pids)) could not be ended"
                + (killFailure.map { ": \($0)" } ?? "")
            logger.error("task \(taskID): \(message)")
        }
        let losses = task.io.losses
        for (stream, loss) in losses {
            // Said where a reader of the task's end looks: its output reads with a gap (dropped bytes) there.
            message += "; \(loss.bytes) bytes of \(stream.rawValue) could not be kept (\(String(cString: strerror(loss.error))))"
        }
        switch task.stopReason {
        case .cancelled(let reason):
            record.status = .cancelled
            message = "cancelled" + (reason.map { ": \($0)" } ?? "") + " (\(message))"
        case .timedOut(let milliseconds):
            record.status = .failed
            record.lastError = "timed out after \(milliseconds) ms"
            message = record.lastError ?? message
        case nil:
            if exit?.termination == .exited(0) {
                record.status = .completed
            } else {
                record.status = .failed
                record.lastError = message
            }
        }
        record.updatedAt = Date()
        record.completedAt = record.updatedAt
        task.record = record
        var endData: [String: JSONValue] = [
            "previous_status": .string(previous.rawValue), "status": .string(record.status.rawValue),
            "exit_code": record.exitCode.map { .int(Int($0)) } ?? .null,
            "signal": record.signal.map { .int(Int($0)) } ?? .null,
        ]
        if !losses.isEmpty {
            var byStream: [String: JSONValue] = [:]
            for (stream, loss) in losses { byStream[stream.rawValue] = .int(Int(loss.bytes)) }
            endData["output_lost_bytes"] = .object(byStream)
        }
        let end = storage.prepare(
            .init(type: Self.eventType(endingIn: record.status), message: message, data: .object(endData)),
            taskID: taskID, at: record.updatedAt)
        live[taskID] = nil
        remember(record)
        rememberLastEvent(end)
        let deferred = endCommits.journalOrCommit(ExitJournal.Entry(record: record, event: end))
        notifyWaiters(taskID, status: record.status)
        if deferred { queueCommitJob() }
        schedulePrune()
        if let cgroup = task.cgroup { removeAfterWaiters(cgroup) }
    }

    /// The commit of journaled ends, as a housekeeping job (background priority) of the exit executor, queued after
    /// the waiters' jobs: allcanuse-mock's stdio loop and its HTTP event loop run such a job once the jobs around it
    /// are done, so the waiters' answers go first. Without an exit executor it runs on the task pool. It runs off the
    /// actor, which the waiters' next steps need.
    private func queueCommitJob() {
        guard endCommits.claimJob() else { return }
        let endCommits = self.endCommits
        Task(executorPreference: exitExecutor, priority: .background) { endCommits.runJob() }
    }

    /// Holds the commit job (tests): ends stay journaled and uncommitted, as a crash right after their answers leaves
    /// them, until a use of the store commits them.
    func holdCommitJob(_ held: Bool) { endCommits.holdJob(held) }

    /// An ended task's (empty) cgroup is removed behind its waiters' answers: the rmdir of a cgroup took 50–190 µs
    /// on the way to them. Inline without an exit executor; whatever is left at shutdown goes then.
    private func removeAfterWaiters(_ cgroup: TaskCgroup) {
        guard let exitExecutor else {
            cgroup.remove()
            return
        }
        let queued = endedCgroups.withLock { ended in
            ended.append(cgroup)
            return ended.count > 1  // a job is queued already
        }
        guard !queued else { return }
        // Background priority: an executor that runs such jobs only when it has nothing else queued (allcanuse-mock's
        // stdio loop) runs this one after the waiters' answers, as long as each of their hops comes back to it.
        // Queued in order, it came first: the waiters are let go after the exit, as the actor finishes with it.
        Task(executorPreference: exitExecutor, priority: .background) { self.removeEndedCgroups() }
    }

    private nonisolated func removeEndedCgroups() {
        let ended = endedCgroups.withLock { ended in
            defer { ended.removeAll() }
            return ended
        }
        for cgroup in ended { cgroup.remove() }
    }

    /// Waits (bounded) for a killed cgroup to empty without holding the thread: exits may be handled on the thread
    /// that reads the client's requests (`handleExits(on:)`), which must go on answering meanwhile.
    private func waitUntilEmpty(_ cgroup: TaskCgroup, timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while !cgroup.isEmpty, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .microseconds(250))
        }
    }

    // MARK: - Pause, resume, cancel

    /// Stops the whole process tree and returns once it is really stopped. A task that is not running is returned
    /// unchanged with a note.
    public func pause(_ taskID: String, reason: String? = nil) async throws(RuntimeError) -> TaskOperationResult {
        await acquire(taskID)
        defer { release(taskID) }
        guard let task = live[taskID], !task.exitSeen else {
            let record = try storedOrLive(taskID)
            return TaskOperationResult(
                task: record, changed: false, note: "task is \(record.status.rawValue); only a running task can be paused")
        }
        guard task.record.status == .running else {
            return TaskOperationResult(
                task: current(task), changed: false,
                note: "task is \(task.record.status.rawValue); only a running task can be paused")
        }
        do throws(CgroupUnavailable) {
            if let cgroup = task.cgroup {
                try cgroup.setFrozen(true)
            } else {
                task.process.signalGroup(SIGSTOP)
                guard await waitForGroup(task.process.pid, stopped: true) else {
                    throw CgroupUnavailable(description: "the process group did not stop in time")
                }
            }
        } catch {
            // Half-stopped is worse than running: undo before reporting.
            if let cgroup = task.cgroup { try? cgroup.setFrozen(false, timeoutMilliseconds: 1000) }
            if !task.exitSeen { task.process.signalGroup(SIGCONT) }
            throw RuntimeError.invalidArgument("cannot pause task \(taskID): \(error.description)")
        }
        // The task may have ended while we waited: its final record must not be overwritten.
        guard live[taskID] === task, !task.exitSeen else {
            let record = await waitForFinal(task)
            return TaskOperationResult(task: record, changed: false, note: "task ended before it could be paused")
        }
        task.timeoutTimer?.cancel()
        if let since = task.runningSince {
            task.runningBefore += .now - since
            task.runningSince = nil
        }
        return try changeStatus(task, to: .paused, message: "task paused", reason: reason)
    }

    /// Lets a paused task go on. A task that is not paused is returned unchanged with a note.
    public func resume(_ taskID: String, reason: String? = nil) async throws(RuntimeError) -> TaskOperationResult {
        await acquire(taskID)
        defer { release(taskID) }
        guard let task = live[taskID], !task.exitSeen, task.record.status == .paused else {
            let record = try storedOrLive(taskID)
            return TaskOperationResult(
                task: record, changed: false, note: "task is \(record.status.rawValue); only a paused task can be resumed")
        }
        do throws(CgroupUnavailable) {
            if let cgroup = task.cgroup {
                try cgroup.setFrozen(false)
            } else {
                task.process.signalGroup(SIGCONT)
                guard await waitForGroup(task.process.pid, stopped: false) else {
                    throw CgroupUnavailable(description: "the process group did not continue in time")
                }
            }
        } catch {
            throw RuntimeError.invalidArgument("cannot resume task \(taskID): \(error.description)")
        }
        guard live[taskID] === task, !task.exitSeen else {
            let record = await waitForFinal(task)
            return TaskOperationResult(task: record, changed: false, note: "task ended before it could be resumed")
        }
        task.runningSince = .now
        let result = try changeStatus(task, to: .running, message: "task resumed", reason: reason)
        armTimeout(task)
        return result
    }

    /// Ends the whole process tree: SIGCONT if paused, SIGTERM to the group, the grace period, then SIGKILL (every
    /// process of the cgroup where there is one). Returns once every process of the task is gone. A final task is
    /// returned unchanged.
    public func cancel(_ taskID: String, reason: String? = nil) async throws(RuntimeError) -> TaskOperationResult {
        await acquire(taskID)
        defer { release(taskID) }
        return try await stop(taskID, because: .cancelled(reason))
    }

    private func stop(_ taskID: String, because stopReason: StopReason) async throws(RuntimeError)
        -> TaskOperationResult
    {
        guard let task = live[taskID] else {
            let record = try storedOrLive(taskID)
            return TaskOperationResult(
                task: record, changed: false, note: "task is already \(record.status.rawValue)")
        }
        if task.exitSeen {
            let record = await waitForFinal(task)
            return TaskOperationResult(task: record, changed: false, note: "task had already exited")
        }
        if task.stopReason == nil { task.stopReason = stopReason }
        task.timeoutTimer?.cancel()
        if task.record.status == .paused {
            if let cgroup = task.cgroup {
                try? cgroup.setFrozen(false, timeoutMilliseconds: 1000)
            }
            task.process.signalGroup(SIGCONT)
        }
        task.process.signalGroup(SIGTERM)
        let grace = Duration.milliseconds(configuration.graceMilliseconds)
        let exitedInGrace = await waitForFinal(taskID, timeout: grace) != nil
        // Once the exit was seen, the leader may be reaped and its pid free: no more group signals then.
        if !exitedInGrace && !task.exitSeen {
            if let cgroup = task.cgroup {
                try? cgroup.killAll()
            }
            task.process.signalGroup(SIGKILL)
            task.process.signal(SIGKILL)
        }
        let record = await waitForFinal(task)
        return TaskOperationResult(task: record, changed: true, note: nil)
    }

    /// The event type of a status change, as the Allcanuse server writes them: `progress`, a failure `error`, a
    /// cancellation `warning`.
    static func eventType(endingIn status: TaskStatus) -> String {
        switch status {
        case .failed: "error"
        case .cancelled: "warning"
        default: "progress"
        }
    }

    private func changeStatus(_ task: LiveTask, to status: TaskStatus, message: String, reason: String?)
        throws(RuntimeError) -> TaskOperationResult
    {
        let previous = task.record.status
        task.record.status = status
        task.record.updatedAt = Date()
        task.record.runningMilliseconds = task.runningTime.milliseconds
        var data: JSONValue = ["previous_status": .string(previous.rawValue), "status": .string(status.rawValue)]
        if let reason { data = data.merging(["reason": .string(reason)]) }
        try persist(
            task.record,
            events: [.init(type: "progress", message: message + (reason.map { ": \($0)" } ?? ""), data: data)])
        notifyWaiters(task.record.taskID, status: status)
        return TaskOperationResult(task: current(task), changed: true, note: nil)
    }

    /// SIGSTOP and SIGCONT take effect asynchronously: confirm through /proc that every member of the group is (or
    /// is no longer) stopped.
    private func waitForGroup(_ group: pid_t, stopped: Bool) async -> Bool {
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline {
            let members = ProcessTable.members(ofGroup: group).filter { !$0.isGone }
            if members.allSatisfy({ $0.isStopped == stopped }) { return true }
            try? await Task.sleep(for: .microseconds(250))
        }
        return false
    }

    // MARK: - Timeouts

    private func armTimeout(_ task: LiveTask) {
        guard let timeout = task.record.timeoutMilliseconds, task.record.status == .running else { return }
        task.timeoutTimer?.cancel()
        let remaining = Duration.milliseconds(timeout) - task.runningTime
        let taskID = task.record.taskID
        task.timeoutTimer = Task(executorPreference: exitExecutor) { [weak self] in
            if remaining > .zero {
                do {
                    try await Task.sleep(for: remaining)
                } catch {
                    return  // re-armed, paused or finished
                }
            }
            await self?.timeoutExpired(taskID)
        }
    }

    private func timeoutExpired(_ taskID: String) async {
        await acquire(taskID)
        defer { release(taskID) }
        guard let task = live[taskID], task.record.status == .running, !task.exitSeen,
            let timeout = task.record.timeoutMilliseconds
        else { return }
        // A pause that won the race stopped the clock; re-check the running time.
        guard task.runningTime >= .milliseconds(timeout) else {
            armTimeout(task)
            return
        }
        task.timeoutTimer = nil  // this very task: stop() must not cancel it
        _ = try? await stop(taskID, because: .timedOut(timeout))
    }

    // MARK: - Wait

    /// Waits until the task's status is one of `targets` (default: the final ones), or `timeout` passes (nil: no
    /// limit). Event-driven: a waiter is resumed by the status change itself. A final task that is not in `targets`
    /// ends the wait at once, unmet, since it will never change again.
    public func wait(
        for taskID: String, until targets: Set<TaskStatus> = TaskStatus.finalStatuses, timeout: Duration? = nil
    ) async throws(RuntimeError) -> WaitOutcome {
        let start = ContinuousClock.now
        let record = try storedOrLive(taskID)
        if targets.contains(record.status) || record.status.isFinal {
            return WaitOutcome(
                task: record, conditionMet: targets.contains(record.status), waitedMilliseconds: 0)
        }
        let waiterID = nextWaiterID
        nextWaiterID += 1
        let met = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                var waiter = Waiter(targets: targets, continuation: continuation, timer: nil)
                if let timeout {
                    waiter.timer = Task(executorPreference: exitExecutor) { [weak self] in
                        guard (try? await Task.sleep(for: timeout)) != nil else { return }
                        await self?.expireWaiter(taskID, waiterID)
                    }
                }
                waiters[taskID, default: [:]][waiterID] = waiter
                if Task.isCancelled { expireWaiter(taskID, waiterID) }
            }
        } onCancel: {
            Task { await self.expireWaiter(taskID, waiterID) }
        }
        let final = try storedOrLive(taskID)
        return WaitOutcome(
            task: final, conditionMet: met || targets.contains(final.status),
            waitedMilliseconds: (ContinuousClock.now - start).milliseconds)
    }

    private func expireWaiter(_ taskID: String, _ waiterID: UInt64) {
        guard let waiter = waiters[taskID]?.removeValue(forKey: waiterID) else { return }
        if waiters[taskID]?.isEmpty == true { waiters[taskID] = nil }
        waiter.continuation.resume(returning: false)
    }

    private func notifyWaiters(_ taskID: String, status: TaskStatus) {
        guard let list = waiters[taskID] else { return }
        var timers: [Task<Void, Never>] = []
        for (id, waiter) in list where waiter.targets.contains(status) || status.isFinal {
            waiters[taskID]?[id] = nil
            if let timer = waiter.timer { timers.append(timer) }
            waiter.continuation.resume(returning: waiter.targets.contains(status))
        }
        if waiters[taskID]?.isEmpty == true { waiters[taskID] = nil }
        guard !timers.isEmpty else { return }
        if let exitExecutor {
            // Cancelling a sleeping timer wakes the thread that keeps timers, which took the CPU from the answer:
            // cancelled in a background job, run behind the waiters' (a timer that fires meanwhile finds no waiter).
            Task(executorPreference: exitExecutor, priority: .background) { for timer in timers { timer.cancel() } }
        } else {
            for timer in timers { timer.cancel() }
        }
    }

    /// The final record, once the task has ended; nil if `timeout` passed first. Deaf to the calling task's
    /// cancellation: a cancel or timeout that has started killing a tree must see it through.
    private func waitForFinal(_ taskID: String, timeout: Duration?) async -> TaskRecord? {
        guard let record = try? storedOrLive(taskID) else { return nil }
        if record.status.isFinal { return record }
        let waiterID = nextWaiterID
        nextWaiterID += 1
        _ = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            var waiter = Waiter(targets: TaskStatus.finalStatuses, continuation: continuation, timer: nil)
            if let timeout {
                // A detached timer: the caller's cancellation must not cut the wait short.
                waiter.timer = Task.detached { [weak self] in
                    guard (try? await Task.sleep(for: timeout)) != nil else { return }
                    await self?.expireWaiter(taskID, waiterID)
                }
            }
            waiters[taskID, default: [:]][waiterID] = waiter
        }
        guard let final = try? storedOrLive(taskID), final.status.isFinal else { return nil }
        return final
    }

    /// The final record, once the task has ended. A task gone from the store meanwhile (an internal task discarded
    /// once its call ended, a finished one pruned) has no record to read: `task`'s own stands for it. (Without that
    /// the loop below found nothing to wait for, again and again, holding the actor: a shutdown hung in it.)
    private func waitForFinal(_ task: LiveTask) async -> TaskRecord {
        let taskID = task.record.taskID
        while true {
            if let record = await waitForFinal(taskID, timeout: nil) { return record }
            guard let record = try? storedOrLive(taskID) else { return task.record }
            // Only a shutdown resumes a waiter without a final status; the record is what it is then.
            if isShutDown { return record }
        }
    }

    // MARK: - Reading

    /// The task as it is now (running time and output sizes up to date for a live task).
    public func task(_ taskID: String) throws(RuntimeError) -> TaskRecord {
        try storedOrLive(taskID)
    }

    /// Tasks, newest first, and the total matching count.
    public func tasks(statuses: Set<TaskStatus>? = nil, limit: Int = 100) throws(RuntimeError) -> (
        tasks: [TaskRecord], total: Int
    ) {
        try tasks(displayStatuses: statuses.map { Set($0.map(\.rawValue)) }, limit: limit)
    }

    /// Tasks newest first whose `displayStatus` is one of `displayStatuses` (nil: all), and how many match in all:
    /// an indexed query and a maintained count, O(limit) whatever the number of tasks stored.
    public func tasks(displayStatuses: Set<String>?, limit: Int = 100) throws(RuntimeError) -> (
        tasks: [TaskRecord], total: Int
    ) {
        // Live and recently finished tasks come from memory (as current as the store, and fresher for a running
        // task's counters); only the others are decoded.
        try store.tasks(displayStatuses: displayStatuses, limit: limit) { taskID in
            live[taskID].map(current) ?? recentlyFinished[taskID]
        }
    }

    /// The same page, each task with its newest event, read in one call: a task listed cannot be gone (pruned) by
    /// the time its event is asked for, as it could be between two calls (a listing then failed with "unknown task").
    public func tasksWithNewestEvents(displayStatuses: Set<String>?, limit: Int = 100) throws(RuntimeError) -> (
        tasks: [(record: TaskRecord, newestEvent: TaskEvent?)], total: Int
    ) {
        let page = try tasks(displayStatuses: displayStatuses, limit: limit)
        var tasks: [(record: TaskRecord, newestEvent: TaskEvent?)] = []
        tasks.reserveCapacity(page.tasks.count)
        for record in page.tasks { tasks.append((record, try newestEvent(of: record.taskID))) }
        return (tasks, page.total)
    }

    /// Fills the store with `count` finished copies of `template` (a task of this supervisor), for benchmarks of a
    /// large store; they have no output files.
    @_spi(Benchmarks)
    public func storeFinishedCopies(of template: String, count: Int) throws(RuntimeError) {
        let record = try storedOrLive(template)
        guard record.status.isFinal else { throw RuntimeError.invalidArgument("\(template) has not finished") }
        try store.insertCopies(of: record, count: count, from: record.createdAt.addingTimeInterval(-Double(count) / 1000))
    }

    /// Tasks by the status they show, statuses without a task left out (internal tasks are not counted).
    public func displayStatusCounts() throws(RuntimeError) -> [String: Int] {
        try store.displayStatusCounts()
    }

    /// Events of a task in order, after the sequence number `after`.
    public func events(of taskID: String, after: Int64? = nil, limit: Int = 100) throws(RuntimeError) -> [TaskEvent] {
        _ = try storedOrLive(taskID)
        return try store.events(taskID: taskID, after: after, limit: limit)
    }

    /// The newest event of a task, from memory when this supervisor wrote it (rendering a task needs it on every
    /// read, and a query per read was most of a `get`'s cost).
    public func lastEvent(of taskID: String) throws(RuntimeError) -> TaskEvent? {
        if let event = try newestEvent(of: taskID) { return event }
        // No event at all: is there such a task? (Checked only now: decoding its record first, for every task of a
        // listing that is not at hand, was a third of the listing's cost.)
        _ = try storedOrLive(taskID)
        return nil
    }

    private func newestEvent(of taskID: String) throws(RuntimeError) -> TaskEvent? {
        if let event = lastEvents[taskID] { return event }
        guard let event = try store.recentEvents(taskID: taskID, limit: 1).last else { return nil }
        rememberLastEvent(event)
        return event
    }

    /// Saves the record and its events in one transaction, keeping the newest event at hand.
    @discardableResult
    private func persist(_ record: TaskRecord, events: [TaskStore.NewEvent] = []) throws(RuntimeError) -> [TaskEvent] {
        let saved = try store.save(record, events: events)
        if let last = saved.last { rememberLastEvent(last) }
        return saved
    }

    /// Only for tasks at hand (live, or among the recently finished): a long run's finished tasks hold no memory.
    private func rememberLastEvent(_ event: TaskEvent) {
        guard live[event.taskID] != nil || recentlyFinished[event.taskID] != nil else { return }
        if lastEvents[event.taskID] == nil, lastEvents.count >= Self.lastEventCapacity {
            lastEvents.removeAll(keepingCapacity: true)  // bounded: the next reads fill it again from SQLite
        }
        lastEvents[event.taskID] = event
    }

    /// The newest `limit` events, oldest first.
    public func recentEvents(of taskID: String, limit: Int) throws(RuntimeError) -> [TaskEvent] {
        _ = try storedOrLive(taskID)
        return try store.recentEvents(taskID: taskID, limit: limit)
    }

    /// Adds an event from outside (an agent's note, progress, …).
    public func appendEvent(
        to taskID: String, message: String, type: String = "info", data: JSONValue = .null
    ) throws(RuntimeError) -> TaskEvent {
        _ = try storedOrLive(taskID)
        let event = try store.appendEvent(.init(type: type, message: message, data: data), taskID: taskID, at: Date())
        rememberLastEvent(event)
        return event
    }

    /// Replaces the opaque metadata of a task (the mock server's Allcanuse fields) and records an optional event.
    public func updateMetadata(
        of taskID: String, event: (type: String, message: String, data: JSONValue)? = nil,
        _ transform: @Sendable (JSONValue) throws(RuntimeError) -> JSONValue
    ) throws(RuntimeError) -> TaskRecord {
        var record: TaskRecord
        if let task = live[taskID] {
            task.record.metadata = try transform(task.record.metadata)
            task.record.updatedAt = Date()
            record = current(task)
        } else {
            guard var stored = try store.task(taskID) else { throw RuntimeError.unknownTask(taskID) }
            stored.metadata = try transform(stored.metadata)
            stored.updatedAt = Date()
            record = stored
            if recentlyFinished[taskID] != nil { recentlyFinished[taskID] = stored }
        }
        try persist(record, events: event.map { [.init(type: $0.type, message: $0.message, data: $0.data)] } ?? [])
        return record
    }

    /// Reads a task's output: the last `tailBytes`, or `maxBytes` from `offset`.
    public func output(
        of taskID: String, stream: OutputStream, tailBytes: Int64? = nil, offset: Int64? = nil,
        maxBytes: Int64 = 1 << 20
    ) throws(RuntimeError) -> OutputChunk {
        let record = try storedOrLive(taskID)
        let layout = OutputLayout(
            directory: configuration.stateDirectory + "/tasks/" + taskID, stream: stream,
            limit: record.outputLimitBytes)
        var chunk = OutputReader.read(layout: layout, tailBytes: tailBytes, offset: offset, maxBytes: maxBytes)
        // The writer counts what it dropped beyond the last segment too (a limit of 0 keeps nothing at all), and
        // what a write error lost at the end of a file: a read that reaches the files' end has not reached the
        // stream's.
        let total = stream == .stdout ? record.stdoutBytes : record.stderrBytes
        if total > chunk.totalBytes {
            if offset.map({ $0 + maxBytes > chunk.totalBytes }) ?? true { chunk.truncated = true }
            chunk.droppedBytes += total - chunk.totalBytes
            chunk.totalBytes = total
        }
        return chunk
    }

    /// Forgets a final internal task: its record, events and files. Other tasks are kept (their history is the
    /// client's).
    public func discard(_ taskID: String) throws(RuntimeError) {
        let record = try storedOrLive(taskID)
        guard record.isInternal else { throw RuntimeError.invalidArgument("only internal tasks can be discarded") }
        guard record.status.isFinal, live[taskID] == nil else {
            throw RuntimeError.invalidArgument("task \(taskID) has not finished")
        }
        try discardFiles(of: taskID)
    }

    private func discardFiles(of taskID: String) throws(RuntimeError) {
        try discardFiles(of: [taskID])
    }

    private func discardFiles(of taskIDs: [String]) throws(RuntimeError) {
        try store.delete(taskIDs)
        for taskID in taskIDs {
            lastEvents[taskID] = nil
            if recentlyFinished.removeValue(forKey: taskID) != nil {
                recentlyFinishedOrder.removeAll { $0 == taskID }
            }
            layout.removeDirectories(of: taskID)
        }
    }

    // MARK: - Retention

    /// Prunes soon rather than at every finish: a burst of finishes costs one pass.
    private func schedulePrune() {
        guard configuration.retention != .all, !pruneScheduled else { return }
        pruneScheduled = true
        Task(executorPreference: exitExecutor) {
            try? await Task.sleep(for: Self.pruneDelay)
            await self.pruneNow()
        }
    }

    /// Removes the finished tasks the retention no longer keeps, a bounded batch per transaction. Not after a
    /// shutdown: the state directory may be another supervisor's by then.
    private func pruneNow() {
        pruneScheduled = false
        guard !isShutDown else { return }
        var removed = 0
        do {
            while true {
                let candidates = try store.finishedBeyond(configuration.retention, now: Date(), limit: 500)
                    .filter { live[$0] == nil && !busyTasks.contains($0) }
                guard !candidates.isEmpty else { break }
                try discardFiles(of: candidates)
                removed += candidates.count
                if candidates.count < 500 { break }
            }
        } catch {
            logger.error("cannot prune finished tasks: \(error)")
        }
        if removed > 0 {
            logger.debug("pruned \(removed) finished tasks (retention \(configuration.retention))")
        }
    }

    private func remember(_ record: TaskRecord) {
        if recentlyFinished.updateValue(record, forKey: record.taskID) == nil {
            recentlyFinishedOrder.append(record.taskID)
        }
        if recentlyFinishedOrder.count > Self.recentlyFinishedCapacity {
            let forgotten = recentlyFinishedOrder.removeFirst()
            recentlyFinished[forgotten] = nil
            lastEvents[forgotten] = nil
        }
    }

    private func storedOrLive(_ taskID: String) throws(RuntimeError) -> TaskRecord {
        if let task = live[taskID] { return current(task) }
        if let record = recentlyFinished[taskID] { return record }
        guard let record = try store.task(taskID) else { throw RuntimeError.unknownTask(taskID) }
        return record
    }

    private func current(_ task: LiveTask) -> TaskRecord {
        var record = task.record
        if !record.status.isFinal {
            let totals = task.io.totals
            record.stdoutBytes = totals.stdout
            record.stderrBytes = totals.stderr
            record.runningMilliseconds = task.runningTime.milliseconds
        }
        return record
    }

    // MARK: - Serialising operations on one task

    private func acquire(_ taskID: String) async {
        if busyTasks.insert(taskID).inserted { return }
        await withCheckedContinuation { continuation in
            operationQueue[taskID, default: []].append(continuation)
        }
    }

    private func release(_ taskID: String) {
        if var queue = operationQueue[taskID], !queue.isEmpty {
            let next = queue.removeFirst()
            operationQueue[taskID] = queue.isEmpty ? nil : queue
            next.resume()  // the task stays busy: ownership passes to the next operation
        } else {
            busyTasks.remove(taskID)
        }
    }

    // MARK: - Shutdown and recovery

    /// Stops the supervisor: running tasks are cancelled (or, with `cancelRunning: false`, killed without a record
    /// and marked failed at the next start), then the thread and the lock are released.
    public func shutdown(cancelRunning: Bool = true) async {
        guard !isShutDown else { return }
        isShutDown = true
        if cancelRunning {
            let ids = Array(live.keys)
            await withTaskGroup(of: Void.self) { group in
                for id in ids {
                    group.addTask { _ = try? await self.cancel(id, reason: "supervisor shutting down") }
                }
            }
        }
        await endKeptTasks()
        await keeperReady()
        if let keeper {
            await reactor.perform { keeper.stop() }
        }
        keeper = nil
        exitsRetired.withLock { $0 = true }
        exitWatcher?.unwatch(exits.fd)
        exitWatcher = nil
        await reactor.shutdown()
        exits.close()
        for (_, list) in waiters {
            for (_, waiter) in list {
                waiter.timer?.cancel()
                waiter.continuation.resume(returning: false)
            }
        }
        waiters.removeAll()
        await provisioning?.value
        spare?.discard(layout)
        spare = nil
        unlink(layout.spareMarker)
        removeEndedCgroups()
        cgroups?.removeIfEmpty()
        endCommits.close()
        close(lockFD)
    }

    /// Tasks left running (`cancelRunning: false`, or a cancel that failed) end with the server all the same: they
    /// never outlive it, and the next start marks them failed. They are killed and reaped here, unrecorded, before
    /// the keeper goes: a PID namespace's init cannot finish dying while a process of its namespace waits to be
    /// reaped, and stopping the keeper blocks the reactor's thread, which may be the one that would reap it (an HTTP
    /// server with `--keep-tasks` hung at SIGTERM). A task that had already exited is recorded as it ended.
    private func endKeptTasks() async {
        for (taskID, task) in live where !task.exitSeen && task.process.hasExited {
            await processExited(taskID)
        }
        let kept = live.values.filter { !$0.exitSeen }
        for task in kept {
            killTree(task)
            task.exitSeen = true
            task.timeoutTimer?.cancel()
        }
        // SIGKILL ends a process at once, stopped or frozen; bounded all the same (one in uninterruptible sleep ends
        // when its I/O does), with one deadline for all.
        var waiting = kept
        let deadline = ContinuousClock.now + .seconds(2)
        while true {
            waiting.removeAll { task in
                if case .running = task.process.tryReap() { return false }
                return true
            }
            if waiting.isEmpty { return }
            guard ContinuousClock.now < deadline else {
                for task in waiting {
                    logger.warning("task \(task.record.taskID) did not end within 2 s of SIGKILL at shutdown")
                }
                return
            }
            try? await Task.sleep(for: .milliseconds(1))
        }
    }

    private func recover() throws(RuntimeError) {
        try endCommits.replayJournal()
        let unfinished = try store.tasks(
            statuses: Set(TaskStatus.allCases.filter { !$0.isFinal }), limit: Int.max
        ).tasks
        for var record in unfinished {
            Self.endRemains(of: record, cgroups: cgroups)
            let layout = { (stream: OutputStream) in
                OutputLayout(
                    directory: self.configuration.stateDirectory + "/tasks/" + record.taskID, stream: stream,
                    limit: record.outputLimitBytes)
            }
            let previous = record.status
            record.stdoutBytes = OutputReader.totalBytes(layout: layout(.stdout))
            record.stderrBytes = OutputReader.totalBytes(layout: layout(.stderr))
            record.status = .failed
            record.lastError = "supervisor stopped while the task was \(previous.rawValue)"
            record.updatedAt = Date()
            record.completedAt = record.updatedAt
            try persist(
                record,
                events: [
                    .init(
                        type: "error", message: record.lastError ?? "supervisor stopped",
                        data: ["previous_status": .string(previous.rawValue), "status": "failed"])
                ])
            logger.info("task \(record.taskID) was \(previous.rawValue) when the supervisor stopped; marked failed")
        }
        // Internal tasks serve one call of a previous run, which is gone with it.
        try discardFiles(of: try store.finishedInternalTasks())
        pruneNow()
        ProvisionedTask.removeCrashedSpare(layout) { taskID in
            // A store that cannot answer keeps the directories: they may be a stored task's output.
            do { return try store.task(taskID) != nil } catch { return true }
        }
        // Cgroups of tasks that never reached the store (a crash during spawn, a spare no create took).
        if let cgroups {
            for name in cgroups.leftoverCgroups() {
                if let cgroup = TaskCgroup.existing(path: cgroups.root + "/" + name) {
                    try? cgroup.killAll()
                    cgroup.waitUntilEmpty(timeoutMilliseconds: 2000)
                    cgroup.remove()
                }
                cgroups.removeLeftoverV1(named: name)
            }
        }
    }

    /// Makes sure no process of a task from a previous run is left, without ever signalling a reused pid.
    private static func endRemains(of record: TaskRecord, cgroups: CgroupHierarchy?) {
        if let path = record.cgroupPath, let cgroup = TaskCgroup.existing(path: path) {
            try? cgroup.killAll()
            cgroup.waitUntilEmpty(timeoutMilliseconds: 2000)
            cgroup.remove()
            cgroups?.removeLeftoverV1(named: record.taskID)
            return
        }
        guard let pid = record.pid, let startTime = record.processStartTime else { return }
        // Members of the task's process group that started no earlier than the task: each is pinned with a pidfd and
        // checked again before the signal, so a pid that was reused meanwhile is never hit.
        for member in ProcessTable.members(ofGroup: pid) where member.startTime >= startTime {
            let pidfd = corral_pidfd_open(member.pid)
            guard pidfd >= 0 else { continue }
            if let again = ProcessTable.status(of: member.pid), again.startTime == member.startTime,
                again.processGroup == pid
            {
                _ = corral_pidfd_send_signal(pidfd, SIGKILL, 0)
            }
            close(pidfd)
        }
    }

    private static func takeLock(_ directory: String) throws(RuntimeError) -> Int32 {
        let path = directory + "/supervisor.lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw RuntimeError.system("open \(path)", errno) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let holder = readSmallFile(path)?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            close(fd)
            throw RuntimeError.stateDirectoryInUse(
                path: directory, holder: holder.isEmpty ? "unknown process" : "pid \(holder)")
        }
        ftruncate(fd, 0)
        let pid = "\(getpid())\n"
        _ = pid.withCString { pwrite(fd, $0, strlen($0), 0) }
        return fd
    }

    /// FNV-1a, to name the supervisor's cgroup after its state directory (stable across restarts).
    private static func stableHash(_ text: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x100_0000_01b3
        }
        let digits = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}

extension Duration {
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
