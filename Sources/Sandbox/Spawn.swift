import CCorral
import Glibc

/// A resource limit applied in the child between fork and exec.
public struct ResourceLimit: Sendable, Hashable {
    public enum Resource: String, Sendable, CaseIterable, Codable {
        case cpuSeconds = "cpu"
        case addressSpace = "as"
        case openFiles = "nofile"
        case processes = "nproc"
        case fileSize = "fsize"
        case core = "core"

        /// The asm-generic numbers, shared by x86_64 and arm64 (glibc's enum imports unevenly into Swift).
        var rawResource: Int32 {
            switch self {
            case .cpuSeconds: return 0
            case .fileSize: return 1
            case .core: return 4
            case .processes: return 6
            case .openFiles: return 7
            case .addressSpace: return 9
            }
        }
    }

    public var resource: Resource
    /// Soft and hard limit alike: a confined task may not raise it again.
    public var value: UInt64

    public init(_ resource: Resource, _ value: UInt64) {
        self.resource = resource
        self.value = value
    }
}

/// What the child installs on itself right before `execve`: the hook point of the sandbox.
///
/// Order in the child: rlimits, `PR_SET_NO_NEW_PRIVS`, Landlock, then the seccomp filter (last, so that it does not
/// have to allow the setup calls).
public struct ChildConfinement: Sendable {
    public var resourceLimits: [ResourceLimit]
    public var noNewPrivileges: Bool
    /// A classic BPF program (`struct sock_filter` array, 8 bytes an instruction) compiled in the parent.
    public var seccompProgram: [UInt64]?
    /// A Landlock ruleset descriptor prepared in the parent; the spawner does not close it.
    public var landlockRulesetFD: Int32?

    public init(
        resourceLimits: [ResourceLimit] = [],
        noNewPrivileges: Bool = true,
        seccompProgram: [UInt64]? = nil,
        landlockRulesetFD: Int32? = nil
    ) {
        self.resourceLimits = resourceLimits
        self.noNewPrivileges = noNewPrivileges
        self.seccompProgram = seccompProgram
        self.landlockRulesetFD = landlockRulesetFD
    }

    public static let none = ChildConfinement(noNewPrivileges: false)
}

/// Everything needed to start one child process.
public struct SpawnConfiguration: Sendable {
    /// `argv[0]` is the program: a path, or a name looked up in the `PATH` of `environment`.
    public var arguments: [String]
    /// The child's whole environment (nothing is inherited implicitly).
    public var environment: [String: String]
    public var workingDirectory: String?
    public var standardInput: Int32
    public var standardOutput: Int32
    public var standardError: Int32
    public var newSession: Bool
    /// Signal the child receives when the spawning thread dies (`PR_SET_PDEATHSIG`); nil for none.
    public var parentDeathSignal: Int32?
    public var cgroup: TaskCgroup?
    public var confinement: ChildConfinement
    /// Who the child becomes before it runs the program: nil keeps the caller's identity and capabilities.
    public var identity: TaskIdentity?
    /// Empty every capability set of the child (bounding set too where this process may drop it).
    public var dropCapabilities: Bool
    /// The PID namespace the child is born in (nil: the caller's).
    public var pidNamespace: PIDNamespaceKeeper?
    /// The child is the init of a new PID namespace (the keeper).
    public var newPIDNamespace = false
    /// `argv[0]` when it should differ from the program path.
    public var argv0: String?
    /// Born in `cgroup` by clone3(CLONE_INTO_CGROUP) where the kernel can; false joins through cgroup.procs, which
    /// after an idle spell waits for an RCU grace period (kept to measure that difference).
    public var cgroupAtBirth = true

    public init(
        arguments: [String],
        environment: [String: String],
        workingDirectory: String? = nil,
        standardInput: Int32,
        standardOutput: Int32,
        standardError: Int32,
        newSession: Bool = true,
        parentDeathSignal: Int32? = SIGKILL,
        cgroup: TaskCgroup? = nil,
        confinement: ChildConfinement = .none,
        identity: TaskIdentity? = nil,
        dropCapabilities: Bool = false,
        pidNamespace: PIDNamespaceKeeper? = nil
    ) {
        self.arguments = arguments
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.standardInput = standardInput
        self.standardOutput = standardOutput
        self.standardError = standardError
        self.newSession = newSession
        self.parentDeathSignal = parentDeathSignal
        self.cgroup = cgroup
        self.confinement = confinement
        self.identity = identity
        self.dropCapabilities = dropCapabilities
        self.pidNamespace = pidNamespace
    }
}

/// Why a spawn failed: the step in the child (or parent) and the errno.
public struct SpawnError: Error, Sendable, CustomStringConvertible, Equatable {
    public enum Stage: Int32, Sendable {
        case invalidArguments = -1
        case clone = 1, setsid, parentDeathSignal, cgroup, redirect, chdir, resourceLimit, signals
        case noNewPrivileges, landlock, seccomp, exec, pipe, identity, capabilities, pidNamespace, timeout
    }

    public var stage: Stage
    public var errno: Int32
    public var detail: String

    public init(stage: Stage, errno: Int32, detail: String) {
        self.stage = stage
        self.errno = errno
        self.detail = detail
    }

    public var description: String {
        let reason = errno == 0 ? "" : ": " + errnoDescription(errno)
        switch stage {
        case .invalidArguments: return detail
        case .exec: return "cannot execute \(detail)\(reason)"
        case .chdir: return "cannot change to working directory \(detail)\(reason)"
        case .clone: return "cannot create the process\(reason)"
        case .setsid: return "cannot create a session\(reason)"
        case .parentDeathSignal: return "cannot set the parent-death signal\(reason)"
        case .cgroup: return "cannot join the task's cgroup\(reason)"
        case .redirect: return "cannot redirect standard streams\(reason)"
        case .resourceLimit: return "cannot apply resource limits\(reason)"
        case .signals: return "cannot reset signals\(reason)"
        case .noNewPrivileges: return "cannot set no_new_privs\(reason)"
        case .landlock: return "cannot apply the Landlock ruleset\(reason)"
        case .seccomp: return "cannot load the seccomp filter\(reason)"
        case .pipe: return "cannot create the status pipe\(reason)"
        case .identity: return "cannot switch to the task user\(reason)"
        case .capabilities: return "cannot drop capabilities\(reason)"
        case .pidNamespace: return "cannot enter the tasks' PID namespace\(reason)"
        case .timeout:
            return "the new process did not reach execve within 2 s (stopped by another process of the task user?) "
                + "and was killed"
        }
    }
}

/// `strerror` text for an errno value ("No such file or directory").
public func errnoDescription(_ code: Int32) -> String {
    String(cString: strerror(code))
}

/// The name of a signal, with the `SIG` prefix ("SIGKILL"), or "signal N".
public func signalName(_ signal: Int32) -> String {
    guard let name = corral_signal_name(signal) else { return "signal \(signal)" }
    return "SIG" + String(cString: name)
}

/// A started child process, owned through its pidfd.
///
/// The pid is kept for reaping (with resource usage) and for `/proc` reads; signals go through the pidfd so that
/// they can never reach a process that reused the pid.
public final class ChildProcess: Sendable {
    public let pid: pid_t
    /// -1 on kernels without pidfds (before 5.3).
    public let pidfd: Int32
    /// Process start time in clock ticks since boot, as a lower bound (never later than the kernel's): with the pid,
    /// "started no earlier than this task" recognises its processes after a restart.
    public let startTime: UInt64

    init(pid: pid_t, pidfd: Int32, startTime: UInt64) {
        self.pid = pid
        self.pidfd = pidfd
        self.startTime = startTime
    }

    /// Sends a signal to the process itself. Returns false when it is already gone.
    @discardableResult
    public func signal(_ signal: Int32) -> Bool {
        if pidfd >= 0 {
            return corral_pidfd_send_signal(pidfd, signal, 0) == 0
        }
        return kill(pid, signal) == 0
    }

    /// Sends a signal to the process group the child leads (it called `setsid`).
    ///
    /// Safe from pid reuse while the child is not reaped: a pid stays allocated as long as it names a process group
    /// with members or an unreaped zombie.
    @discardableResult
    public func signalGroup(_ signal: Int32) -> Bool {
        if pidfd >= 0 {
            if corral_pidfd_signal_group(pidfd, signal) == 0 { return true }
            // Only a kernel without PIDFD_SIGNAL_PROCESS_GROUP (before 6.9) falls back to the pid; ESRCH means
            // the group is gone, and its number may already name someone else's.
            guard errno == EINVAL else { return false }
        }
        return kill(-pid, signal) == 0
    }

    /// What a non-blocking reap found.
    public enum ReapOutcome: Sendable {
        case exited(ExitInfo)
        case running
        /// Not a child of this process (any more): someone reaped it, or it never was.
        case notAChild
    }

    /// Reaps the child if it has exited, saying whether it runs on or is no child to reap.
    public func tryReap() -> ReapOutcome {
        var info = corral_exit_info()
        switch corral_reap(pid, &info) {
        case 1: return .exited(ExitInfo(info))
        case 0: return .running
        default: return .notAChild
        }
    }

    /// Whether the child has exited (its pidfd is readable); false without a pidfd, where only a reap can tell.
    public var hasExited: Bool {
        guard pidfd >= 0 else { return false }
        var descriptor = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
        return poll(&descriptor, 1, 0) == 1
    }

    /// Reaps the child if it has exited (non-blocking).
    public func reap() -> ExitInfo? {
        var info = corral_exit_info()
        guard corral_reap(pid, &info) == 1 else { return nil }
        return ExitInfo(info)
    }

    /// Blocks until the child has exited and reaps it.
    public func waitForExit() -> ExitInfo? {
        while true {
            if let exit = reap() { return exit }
            var info = siginfo_t()
            if waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) != 0 && errno != EINTR { return nil }
        }
    }

    /// Closes the pidfd. Call once, after the child was reaped.
    public func close() {
        if pidfd >= 0 { _ = Glibc.close(pidfd) }
    }
}

/// How a child ended, with the resource usage the kernel reported when it was reaped.
public struct ExitInfo: Sendable, Equatable {
    public enum Termination: Sendable, Equatable {
        case exited(Int32)
        case signaled(Int32)
    }

    public var termination: Termination
    public var coreDumped: Bool
    public var userMicroseconds: Int64
    public var systemMicroseconds: Int64
    public var maxResidentKiB: Int64

    init(_ info: corral_exit_info) {
        termination = info.exited == 1 ? .exited(info.status) : .signaled(info.status)
        coreDumped = info.core_dumped == 1
        userMicroseconds = info.user_usec
        systemMicroseconds = info.system_usec
        maxResidentKiB = info.max_rss_kib
    }

    /// Shell convention: the exit status, or 128 + the signal number.
    public var shellStatus: Int32 {
        switch termination {
        case .exited(let status): return status
        case .signaled(let signal): return 128 + signal
        }
    }
}

public enum Spawner {
    /// Starts a child: `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)` as posix_spawn does, then in the child only raw
    /// system calls up to `execve` (joining its cgroup, session, stdio, rlimits, no_new_privs, Landlock, seccomp). Returns once the child has executed the program, or throws with the step
    /// that failed and its errno. Blocking; the parent-death signal is tied to the calling *thread*, so callers that
    /// use it spawn from a thread that lives as long as they do.
    public static func spawn(_ configuration: SpawnConfiguration) throws(SpawnError) -> ChildProcess {
        guard let program = configuration.arguments.first, !program.isEmpty else {
            throw SpawnError(stage: .invalidArguments, errno: 0, detail: "no program given")
        }
        if configuration.arguments.contains(where: { $0.utf8.contains(0) })
            || configuration.environment.contains(where: { $0.key.utf8.contains(0) || $0.value.utf8.contains(0) })
        {
            throw SpawnError(stage: .invalidArguments, errno: 0, detail: "arguments and environment may not hold NUL")
        }
        if configuration.environment.keys.contains(where: { $0.isEmpty || $0.contains("=") }) {
            throw SpawnError(stage: .invalidArguments, errno: 0, detail: "invalid environment variable name")
        }
        let candidates = ExecutableLookup.candidates(for: program, path: configuration.environment["PATH"])
        let environment = configuration.environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }

        var strings = CStringArena()
        defer { strings.free() }
        let execPaths = strings.array(candidates)
        var arguments = configuration.arguments
        if let argv0 = configuration.argv0 { arguments[0] = argv0 }
        let argv = strings.array(arguments)
        let envp = strings.array(environment)
        let cwd = configuration.workingDirectory.map { strings.string($0) }

        let limits = configuration.confinement.resourceLimits.map { limit in
            corral_rlimit(
                resource: limit.resource.rawResource,
                limit: rlimit(rlim_cur: rlim_t(limit.value), rlim_max: rlim_t(limit.value))
            )
        }

        let v1Joins = configuration.cgroup?.v1ProcsFDs ?? []
        // The start time as a lower bound, from the clock the kernel stamps new processes with, read just before the
        // clone: /proc/PID/stat read right after the spawn waits while the child is still exec'ing (0.2–0.5 ms).
        var now = timespec()
        clock_gettime(CLOCK_BOOTTIME, &now)
        let nanosecondsPerTick = UInt64(1_000_000_000 / max(1, ProcessTable.ticksPerSecond))
        let startTime = (UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)) / nanosecondsPerTick
        var result = corral_spawn_result()
        let status: Int32 = v1Joins.withUnsafeBufferPointer { joinBuffer in
          limits.withUnsafeBufferPointer { limitBuffer in
            withSeccompProgram(configuration.confinement.seccompProgram) { filter in
                var attr = corral_spawn_attr()
                attr.exec_paths = execPaths
                attr.argv = argv
                attr.envp = envp
                attr.cwd = cwd
                attr.stdin_fd = configuration.standardInput
                attr.stdout_fd = configuration.standardOutput
                attr.stderr_fd = configuration.standardError
                attr.new_session = configuration.newSession ? 1 : 0
                attr.pdeathsig = configuration.parentDeathSignal ?? 0
                attr.expected_parent = getpid()
                attr.cgroup_procs_fd = configuration.cgroup?.procsFD ?? -1
                attr.rlimits = limitBuffer.baseAddress
                attr.rlimit_count = Int32(limitBuffer.count)
                attr.no_new_privs = configuration.confinement.noNewPrivileges ? 1 : 0
                attr.landlock_ruleset_fd = configuration.confinement.landlockRulesetFD ?? -1
                attr.seccomp_instructions = filter.pointer
                attr.seccomp_length = filter.count
                attr.seccomp_flags = 0
                attr.cgroup_dir_fd = configuration.cgroupAtBirth ? configuration.cgroup?.directoryFD ?? -1 : -1
                attr.extra_procs_fds = joinBuffer.baseAddress
                attr.extra_procs_count = Int32(joinBuffer.count)
                attr.uid = configuration.identity?.uid ?? uid_t.max
                attr.gid = configuration.identity?.gid ?? gid_t.max
                attr.drop_capabilities = configuration.dropCapabilities ? 1 : 0
                attr.pid_namespace_fd = configuration.pidNamespace?.namespaceFD ?? -1
                attr.own_pid_namespace_fd = configuration.pidNamespace?.ownNamespaceFD ?? -1
                attr.new_pid_namespace = configuration.newPIDNamespace ? 1 : 0
                return corral_spawn(&attr, &result)
            }
          }
        }
        guard status == 0 else {
            let stage = SpawnError.Stage(rawValue: result.failed_stage) ?? .clone
            let detail: String
            switch stage {
            case .exec: detail = program
            case .chdir: detail = configuration.workingDirectory ?? ""
            default: detail = ""
            }
            throw SpawnError(stage: stage, errno: result.error, detail: detail)
        }
        return ChildProcess(pid: result.pid, pidfd: result.pidfd, startTime: startTime)
    }

    private static func withSeccompProgram<R>(
        _ program: [UInt64]?,
        _ body: ((pointer: UnsafeRawPointer?, count: UInt16)) -> R
    ) -> R {
        guard let program, !program.isEmpty else { return body((nil, 0)) }
        return program.withUnsafeBufferPointer { instructions in
            body((UnsafeRawPointer(instructions.baseAddress), UInt16(clamping: instructions.count)))
        }
    }
}

/// C strings that live until `free()`; the child reads them after the clone, so nothing may be allocated there.
struct CStringArena {
    private var allocations: [UnsafeMutableRawPointer] = []
    private var arrays: [UnsafeMutablePointer<UnsafePointer<CChar>?>] = []

    mutating func string(_ value: String) -> UnsafePointer<CChar> {
        guard let pointer = strdup(value) else { fatalError("out of memory") }
        allocations.append(UnsafeMutableRawPointer(pointer))
        return UnsafePointer(pointer)
    }

    mutating func array(_ values: [String]) -> UnsafePointer<UnsafePointer<CChar>?> {
        let array = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: values.count + 1)
        arrays.append(array)
        for (index, value) in values.enumerated() {
            array[index] = string(value)
        }
        array[values.count] = nil
        return UnsafePointer(array)
    }

    mutating func free() {
        for pointer in allocations {
            Glibc.free(pointer)
        }
        for array in arrays {
            array.deallocate()
        }
        allocations.removeAll()
        arrays.removeAll()
    }
}

/// PATH lookup done in the parent, so that the child only tries ready-made paths.
public enum ExecutableLookup {
    public static let defaultPath = "/usr/local/bin:/usr/bin:/bin"

    public static func candidates(for program: String, path: String?) -> [String] {
        if program.contains("/") { return [program] }
        let directories = (path ?? defaultPath).split(separator: ":", omittingEmptySubsequences: false)
        return directories.map { directory in
            // An empty PATH entry means the current directory, as in execvp.
            directory.isEmpty ? "./\(program)" : "\(directory)/\(program)"
        }
    }
}
