import ArgumentParser
import CCorral
import Foundation
import Glibc
import Sandbox

/// `corral exec`: runs one command confined, in the foreground, and exits with its status.
///
/// The command stays in corral's session and process group (no setsid) so that the terminal's Ctrl-C and Ctrl-\
/// reach it; corral ignores SIGINT and SIGQUIT while it waits (as system(3) does) and the child starts with default
/// dispositions. If corral itself is killed, the parent-death signal (SIGKILL) ends the command.
struct ExecCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec",
        abstract: "Run a command confined by a sandbox profile (seccomp, no_new_privs, rlimits, Landlock, cgroup limits), as an unprivileged user.",
        discussion: """
            Profiles: default, no-network, strict, or a path to a JSON profile (see policies/sandbox/). The command \
            gets the current directory read-write, a private temp directory ($TMPDIR) and everything else read-only \
            (where the kernel has Landlock). Exit status: the command's, 128+N if it was killed by signal N, 125 if \
            corral could not set up the sandbox, 126/127 if the command cannot be run.
            Run as root, the command runs as an unprivileged user (--user, default uid 65530 'corral-task') with no \
            capabilities at all, in a PID namespace that ends with corral: whatever the command leaves running is \
            killed when it exits or corral dies; --keep-root keeps root and its capabilities, and says so. Limits \
            processes, memory and cpu_percent are enforced by a cgroup of the command's own (they hold for root \
            too).
            Examples:
              corral exec -- python3 -c 'print(1)'
              corral exec --profile strict --no-network --limit cpu=10 --limit as=1G \\
                  -- make test
              corral exec --limit processes=16 --limit memory=256M --report -- ./build.sh
              corral exec --print-filter no-network
              corral exec --print-profile --profile strict --limit memory=256M
            """
    )

    @Option(help: "Profile: a built-in name or a JSON file.") var profile = "default"
    @Option(name: .customLong("allow-read"), help: "Also allow reading beneath this path.") var allowRead: [String] = []
    @Option(name: .customLong("allow-write"), help: "Also allow writing beneath this path.")
    var allowWrite: [String] = []
    @Flag(name: .customLong("no-network"), help: "No sockets except AF_UNIX.") var noNetwork = false
    @Option(name: .customLong("limit"), help: "A limit, KEY=VALUE: rlimits cpu, as, nofile, nproc, fsize, core; cgroup limits processes, memory, cpu_percent (K/M/G).")
    var limits: [String] = []
    @Option(name: .customLong("user"), help: "Run as this user (name, UID or UID:GID) when corral runs as root. Default: uid/gid 65530, or the user 'corral-task' if it exists.")
    var user: String?
    @Flag(name: .customLong("keep-root"), help: "Run as root with root's capabilities (a warning is printed). Only with good reason.")
    var keepRoot = false
    @Flag(name: .customLong("report"), help: "Print what the command used on stderr when it ends: CPU time, peak memory, I/O.")
    var report = false
    @Option(name: .customLong("require"), help: "Refuse to run without this protection (landlock).")
    var require: [String] = []
    @Option(name: .customLong("print-filter"), help: "Print the profile's filter in libseccomp's PFC form and exit.")
    var printFilter: String?
    @Flag(name: .customLong("print-profile"), help: "Print the resolved profile as JSON and exit.")
    var printProfile = false
    @Argument(parsing: .postTerminator, help: "The command and its arguments, after --.") var command: [String] = []

    func validate() throws {
        if keepRoot && user != nil { throw ValidationError("--keep-root and --user exclude each other") }
        for item in require where item != "landlock" {
            throw ValidationError("--require knows only 'landlock', not '\(item)'")
        }
        if printFilter == nil && !printProfile && command.isEmpty {
            throw ValidationError("give a command after --")
        }
    }

    func run() throws {
        let status: Int32?
        do {
            status = try perform()
        } catch {
            FileHandle.standardError.write(Data("corral exec: \(error)\n".utf8))
            status = 125
        }
        if let status { Glibc.exit(status) }
    }

    /// The command's exit status, or nil when only something was printed.
    private func perform() throws(SandboxError) -> Int32? {
        if let printFilter {
            print(try SeccompCompiler.printFilter(ProfileLoader.resolve(printFilter)), terminator: "")
            return nil
        }
        let confined = try resolvedProfile()
        if printProfile {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: (try? encoder.encode(confined)) ?? Data(), as: UTF8.self))
            return nil
        }
        return try execute(confined)
    }

    /// The profile with the command-line additions: the local user may widen the paths of their own command.
    private func resolvedProfile() throws(SandboxError) -> SandboxProfile {
        var result = try ProfileLoader.resolve(profile)
        if !allowRead.isEmpty || !allowWrite.isEmpty {
            var rules = result.landlock ?? .init(readOnly: [], readWrite: [])
            rules.readOnly += allowRead.map(absolute)
            rules.readWrite += allowWrite.map(absolute)
            result.landlock = rules
        }
        if noNetwork { result.socketFamilies = .init(allow: ["AF_UNIX"]) }
        for item in limits {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            let known = ResourceLimit.Resource.allCases.map(\.rawValue) + CgroupLimits.keys
            guard parts.count == 2, known.contains(parts[0]), let value = Self.size(parts[1]) else {
                throw .invalidProfile(
                    file: "--limit", key: item, reason: "expected KEY=VALUE with KEY one of " + known.joined(separator: ", "))
            }
            if CgroupLimits.keys.contains(parts[0]) {
                if let refusal = CgroupLimits.refusal(parts[0], value) {
                    throw .invalidProfile(file: "--limit", key: item, reason: "\(parts[0]) \(refusal)")
                }
                var cgroupLimits = result.cgroupLimits ?? CgroupLimits()
                cgroupLimits[parts[0]] = value
                result.cgroupLimits = cgroupLimits
            } else {
                result.rlimits[parts[0]] = value
            }
        }
        try ProfileLoader.validate(result, file: profile)
        return result
    }

    private func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }

    static func size(_ text: String) -> UInt64? {
        let multipliers: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
        if let last = text.last, let multiplier = multipliers[Character(last.uppercased())] {
            return UInt64(text.dropLast()).map { $0 * multiplier }
        }
        return UInt64(text)
    }

    private func execute(_ confined: SandboxProfile) throws(SandboxError) -> Int32 {
        let identity = try TaskIdentity.resolve(user, keepRoot: keepRoot)
        if keepRoot {
            FileHandle.standardError.write(Data("corral exec: warning: --keep-root: the command runs as root with every capability\n".utf8))
        }
        let cwd = FileManager.default.currentDirectoryPath
        if identity.changesUser, let refusal = identity.writeRefusal(cwd) {
            FileHandle.standardError.write(Data("corral exec: note: \(refusal); the command can read it but not write there\n".utf8))
        }
        var template = Array("/tmp/corral-exec.XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw .landlock(operation: "mkdtemp", errno: errno) }
        let temporary = String(cString: made)
        defer { Self.removeTemporary(temporary, as: identity) }
        if identity.changesUser && chown(temporary, identity.uid, identity.gid) != 0 {
            throw .identity("cannot give \(temporary) to \(identity.description): \(errnoDescription(errno))")
        }
        let cgroup = try commandCgroup(confined.cgroupLimits ?? CgroupLimits())
        defer {
            if let cgroup {
                try? cgroup.cgroup.killAll()
                cgroup.cgroup.waitUntilEmpty(timeoutMilliseconds: 2000)
                cgroup.cgroup.remove()
                cgroup.hierarchy.removeIfEmpty()
            }
        }

        let prepared = try SandboxPreparation.prepare(
            confined, workingDirectory: cwd, temporaryDirectory: temporary,
            requireLandlock: require.contains("landlock"))
        // As root, the command and whatever it starts live in a PID namespace that ends with corral (kill -9
        // included) or when the command exits: nothing it left running survives.
        var keeper: PIDNamespaceKeeper?
        if !keepRoot && geteuid() == 0 {
            switch PIDNamespaceKeeper.start() {
            case .success(let started): keeper = started
            case .failure(let reason):
                FileHandle.standardError.write(Data("corral exec: note: \(reason); what the command leaves running may outlive it\n".utf8))
            }
        }
        defer { keeper?.stop() }
        var environment = ProcessInfo.processInfo.environment
        environment["TMPDIR"] = temporary
        if identity.changesUser {
            environment["HOME"] = temporary
            environment["USER"] = identity.name
            environment["LOGNAME"] = identity.name
        }
        let configuration = SpawnConfiguration(
            arguments: command, environment: environment, workingDirectory: cwd, standardInput: 0, standardOutput: 1,
            standardError: 2, newSession: false, cgroup: cgroup?.cgroup, confinement: prepared.confinement,
            identity: identity.changesUser ? identity : nil, dropCapabilities: !keepRoot, pidNamespace: keeper)

        // Like system(3): the terminal's signals go to the command, not to us.
        signal(SIGINT, SIG_IGN)
        signal(SIGQUIT, SIG_IGN)
        let child: ChildProcess
        do {
            child = try Spawner.spawn(configuration)
        } catch {
            prepared.cleanup()
            FileHandle.standardError.write(Data("corral exec: \(error)\n".utf8))
            if error.stage == .exec { return error.errno == ENOENT ? 127 : 126 }
            return 125
        }
        prepared.cleanup()
        defer { child.close() }
        var info = siginfo_t()
        while waitid(P_PID, id_t(child.pid), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR {}
        // Still a zombie: its I/O counters can be read before the reap.
        var ioRead: Int64 = -1
        var ioWrite: Int64 = -1
        _ = corral_process_io_bytes(child.pid, &ioRead, &ioWrite)
        guard let exit = child.reap() else { return 125 }
        if let cgroup { cgroup.cgroup.waitUntilEmpty(timeoutMilliseconds: 2000) }
        let accounting = cgroup?.cgroup.accounting() ?? CgroupAccounting()
        if let kills = accounting.oomKills, kills > 0, let memory = confined.cgroupLimits?.memory {
            FileHandle.standardError.write(Data("corral exec: killed by the memory limit (\(memory) bytes)\n".utf8))
        }
        if report {
            let cpu = cgroup?.cgroup.cpuUsage() ?? (exit.userMicroseconds, exit.systemMicroseconds)
            var line = "corral exec: \(Self.describe(exit.termination)); CPU time: user \(Self.milliseconds(cpu.user)), "
                + "system \(Self.milliseconds(cpu.system))"
            // Only a memory cgroup knows the peak: the kernel's ru_maxrss of a vfork child includes the parent's.
            if let peak = accounting.peakMemoryBytes { line += "; peak memory: \(Self.bytes(peak))" }
            if ioRead >= 0 && ioWrite >= 0 { line += "; I/O: read \(Self.bytes(ioRead)), written \(Self.bytes(ioWrite))" }
            line += "; user: \(keepRoot ? "root (kept)" : identity.description)"
            if keeper == nil && !keepRoot { line += "; no PID namespace (needs root)" }
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
        return exit.shellStatus
    }

    /// Removes the command's temp directory. Once it belongs to the task user, root does not walk it: anything of
    /// that user's could swap a directory for a symlink mid-walk and have root delete elsewhere. `rm -rf` runs as
    /// the task user instead, then root removes the (empty) directory itself.
    static func removeTemporary(_ path: String, as identity: TaskIdentity) {
        guard identity.changesUser else {
            try? FileManager.default.removeItem(atPath: path)
            return
        }
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { close(devNull) }
        let configuration = SpawnConfiguration(
            arguments: ["/bin/rm", "-rf", "--one-file-system", path + "/"], environment: ["PATH": ExecutableLookup.defaultPath],
            workingDirectory: "/", standardInput: devNull, standardOutput: devNull, standardError: devNull,
            confinement: ChildConfinement(noNewPrivileges: true), identity: identity, dropCapabilities: true)
        if let child = try? Spawner.spawn(configuration) {
            _ = child.waitForExit()
            child.close()
        }
        rmdir(path)
    }

    /// A cgroup of the command's own when it has cgroup limits or a report wants the cgroup's figures; nil when
    /// neither, or (report only) when this machine gives none.
    private func commandCgroup(_ limits: CgroupLimits) throws(SandboxError) -> (hierarchy: CgroupHierarchy, cgroup: TaskCgroup)? {
        guard !limits.isEmpty || report else { return nil }
        let hierarchy: CgroupHierarchy
        switch CgroupHierarchy.prepare(name: "corral-exec-\(getpid())") {
        case .success(let found): hierarchy = found
        case .failure(let reason):
            if limits.isEmpty { return nil }
            throw .cgroup("limits (\(limits.summary)) cannot be enforced: \(reason.description)")
        }
        do {
            return (hierarchy, try hierarchy.createTaskCgroup(named: "command", limits: limits, accounting: report ? [.memory] : []))
        } catch {
            hierarchy.removeIfEmpty()
            if limits.isEmpty { return nil }
            throw .cgroup("limits (\(limits.summary)) cannot be enforced: \(error.description)")
        }
    }

    static func describe(_ termination: ExitInfo.Termination) -> String {
        switch termination {
        case .exited(let code): return "exited with status \(code)"
        case .signaled(let signal): return "killed by \(signalName(signal))"
        }
    }

    static func milliseconds(_ microseconds: Int64) -> String {
        String(format: "%.1f ms", Double(microseconds) / 1000)
    }

    static func bytes(_ count: Int64) -> String {
        if count < 1 << 10 { return "\(count) B" }
        if count < 1 << 20 { return String(format: "%.1f KiB", Double(count) / 1024) }
        return String(format: "%.1f MiB", Double(count) / 1_048_576)
    }
}
