import ArgumentParser
import CCorral
import Foundation
import Glibc
import Sandbox

/// `corral bench sandbox`: confined spawn against plain posix_spawn and bubblewrap, and per-syscall filter cost.
struct SandboxBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sandbox",
        abstract: "Confined spawn vs posix_spawn vs bwrap, and the per-syscall overhead of each profile.",
        discussion: """
            Spawn figures are spawn-to-reaped wall time of the same binary (µs): plain posix_spawn (the floor), \
            Corral's shim with the default profile's confinement (filter compiled once, Landlock ruleset reused, as \
            the runtime does per profile), the same with the sandbox prepared for every spawn, and \
            `bwrap --ro-bind / / --unshare-net`. The syscall loop is a small C program compiled at bench time.
            """
    )

    @Option(help: "Spawns per variant.") var iterations = 200
    @Option(help: "Program to spawn.") var program = "/bin/true"
    @Option(help: "System calls per loop.") var calls = 2_000_000
    @Option(help: "Spawns per variant after an idle gap.") var idleSpawns = 20
    @Option(help: "The idle gap before each of those spawns, in milliseconds.") var idleMs = 100

    func run() throws {
        let directory = try makeTemporaryDirectory("corral-sandbox-bench")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let widths = [46, 10, 10, 10, 8]
        print("spawn to reaped, \(iterations) runs of \(program) (µs)")
        row(["variant", "p50", "p90", "p99", "×p50"], widths: widths)
        let prepared = try SandboxPreparation.prepare(
            BuiltinProfiles.default, workingDirectory: directory, temporaryDirectory: directory)
        defer { prepared.cleanup() }
        // Where the time goes: each protection alone.
        var seccompOnly = prepared.confinement
        seccompOnly.landlockRulesetFD = nil
        var landlockOnly = prepared.confinement
        landlockOnly.seccompProgram = nil
        var variants: [(String, (Int) -> Samples)] = [
            ("posix_spawn (peer)", { measurePosix([program], $0) }),
            ("spawn shim, unconfined", { measureShim($0) { .none } }),
            ("confined: default profile", { measureShim($0) { prepared.confinement } }),
            ("confined, sandbox prepared per spawn", { measureShim($0, prepareEach: directory) }),
            ("  seccomp + no_new_privs only", { measureShim($0) { seccompOnly } }),
            ("  Landlock + no_new_privs only", { measureShim($0) { landlockOnly } }),
            // One instruction, RET ALLOW: the fixed cost of attaching any filter.
            ("  trivial filter + no_new_privs", {
                measureShim($0) { ChildConfinement(noNewPrivileges: true, seccompProgram: [0x7FFF_0000 << 32 | 0x06]) }
            }),
        ]
        let task = TaskSpawner(directory: directory, confinement: prepared.confinement)
        if let task {
            variants.append(("task: + task user, no caps, PID ns, cgroup birth", { task.measure($0, program: program) }))
            variants.append(("  same, cgroup made and removed in the timing", {
                task.measure($0, program: program, timeCgroup: true)
            }))
            variants.append(("  task user, no caps, PID ns; no cgroup", { task.measure($0, program: program, cgroup: false) }))
            variants.append(("  task user, no caps; no cgroup, no PID ns", {
                task.measure($0, program: program, cgroup: false, pidNamespace: false)
            }))
            variants.append(("  PID ns only (root, caps kept)", {
                task.measure($0, program: program, cgroup: false, identity: false)
            }))
        } else {
            print("note: the task variant needs root (a task user, a PID namespace, a cgroup): skipped")
        }
        if access("/usr/bin/bwrap", X_OK) == 0 {
            variants.append(("bwrap --ro-bind / / --unshare-net (peer)", {
                measurePosix(["/usr/bin/bwrap", "--ro-bind", "/", "/", "--unshare-net", program], $0)
            }))
        } else {
            print("note: /usr/bin/bwrap is missing (apt-get install bubblewrap)")
        }
        // Interleaved rounds, so that load from elsewhere on the machine spreads over all variants alike.
        let rounds = 5
        var results = variants.map { ($0.0, Samples()) }
        for _ in 0..<rounds {
            for (index, variant) in variants.enumerated() {
                for value in variant.1(max(1, iterations / rounds)).values { results[index].1.add(microseconds: value) }
            }
        }
        let floor = results[0].1.median
        let confined = results[2].1.median
        for (name, samples) in results {
            row([name, format(samples.median), format(samples.percentile(90)), format(samples.percentile(99)),
                 format(samples.median / floor, digits: 2)], widths: widths)
        }
        print("filter: \(prepared.confinement.seccompProgram?.count ?? 0) BPF instructions")
        print("summary: \(prepared.summary.joined(separator: " "))")
        print("goal: confined within 1.3× of posix_spawn: \(confined / floor <= 1.3 ? "met" : "NOT met")")
        if let task, let taskIndex = results.firstIndex(where: { $0.0.hasPrefix("task:") }) {
            let ratio = results[taskIndex].1.median / floor
            print("goal: task confinement within 1.3× of posix_spawn: \(ratio <= 1.3 ? "met" : "NOT met") (\(format(ratio, digits: 2))×)")
            print("\nafter \(idleMs) ms idle, \(idleSpawns) spawns each (µs)")
            row(["variant", "p50", "p90", "p99", "×p50"], widths: widths)
            var idle: [(String, Samples)] = [("posix_spawn (peer)", Samples()), ("task: cgroup birth (clone3)", Samples()),
                                             ("task: cgroup.procs write (old path)", Samples())]
            for _ in 0..<idleSpawns {
                usleep(useconds_t(idleMs * 1000))
                idle[0].1.add(microseconds: measurePosix([program], 1).median)
                usleep(useconds_t(idleMs * 1000))
                idle[1].1.add(microseconds: task.measure(1, program: program).median)
                usleep(useconds_t(idleMs * 1000))
                idle[2].1.add(microseconds: task.measure(1, program: program, atBirth: false).median)
            }
            let idleFloor = idle[0].1.median
            for (name, samples) in idle {
                row([name, format(samples.median), format(samples.percentile(90)), format(samples.percentile(99)),
                     format(samples.median / idleFloor, digits: 2)], widths: widths)
            }
            print("clone3(CLONE_INTO_CGROUP): \(corral_clone3_available() == 1 ? "used" : "unavailable, fell back")")
            task.stop()
        }

        print("\nper-syscall cost, \(calls) calls in a loop (ns per call)")
        row(["variant", "getppid", "ioctl", "", ""], widths: widths)
        let loop = try compileLoop(in: directory)
        var filters: [(String, ChildConfinement)] = [("unfiltered", .none)]
        for name in BuiltinProfiles.names {
            guard let profile = BuiltinProfiles.named(name) else { continue }
            filters.append(("seccomp: \(name)",
                ChildConfinement(noNewPrivileges: true, seccompProgram: try SeccompCompiler.program(for: profile))))
        }
        for (name, confinement) in filters {
            let figures = ["getppid", "ioctl"].map { runLoop(loop, $0, confinement) }
            row([name] + figures + ["", ""], widths: widths)
        }
    }

    private func measurePosix(_ arguments: [String], _ count: Int) -> Samples {
        var samples = Samples()
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = [strdup("PATH=/usr/bin:/bin"), nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for _ in 0..<count {
            var pid: pid_t = 0
            let start = ContinuousClock.now
            guard posix_spawn(&pid, arguments[0], &actions, nil, argv, envp) == 0 else { continue }
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            samples.add(ContinuousClock.now - start)
        }
        return samples
    }

    private func measureShim(
        _ count: Int, prepareEach directory: String? = nil, _ confinement: () -> ChildConfinement = { .none }
    ) -> Samples {
        var samples = Samples()
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { close(devNull) }
        for _ in 0..<count {
            let start = ContinuousClock.now
            var perSpawn: PreparedSandbox?
            if let directory {
                perSpawn = try? SandboxPreparation.prepare(
                    BuiltinProfiles.default, workingDirectory: directory, temporaryDirectory: directory)
            }
            let configuration = SpawnConfiguration(
                arguments: [program], environment: ["PATH": "/usr/bin:/bin"], standardInput: devNull,
                standardOutput: devNull, standardError: devNull, confinement: perSpawn?.confinement ?? confinement())
            let child = try? Spawner.spawn(configuration)
            perSpawn?.cleanup()
            guard let child else { continue }
            wait(child)
            samples.add(ContinuousClock.now - start)
        }
        return samples
    }

    private func wait(_ child: ChildProcess) {
        defer { child.close() }
        while true {
            var descriptor = pollfd(fd: child.pidfd, events: Int16(POLLIN), revents: 0)
            _ = poll(&descriptor, 1, 1000)
            if child.reap() != nil { return }
        }
    }

    static let loopSource = """
        #include <stdio.h>
        #include <stdlib.h>
        #include <string.h>
        #include <sys/ioctl.h>
        #include <sys/syscall.h>
        #include <termios.h>
        #include <time.h>
        #include <unistd.h>
        int main(int argc, char **argv) {
            long n = atol(argv[2]);
            int ioctl_loop = strcmp(argv[1], "ioctl") == 0;
            struct termios t;
            struct timespec a, b;
            clock_gettime(CLOCK_MONOTONIC, &a);
            for (long i = 0; i < n; i++) {
                if (ioctl_loop) syscall(SYS_ioctl, 0, TCGETS, &t); else syscall(SYS_getppid);
            }
            clock_gettime(CLOCK_MONOTONIC, &b);
            printf("%.1f\\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
            return 0;
        }
        """

    private func compileLoop(in directory: String) throws -> String {
        let source = directory + "/loop.c", binary = directory + "/loop"
        try Self.loopSource.write(toFile: source, atomically: true, encoding: .utf8)
        let words: [String] = ["/usr/bin/cc", "-O2", "-o", binary, source]
        let argv: [UnsafeMutablePointer<CChar>?] = words.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        var status: Int32 = 0
        guard posix_spawn(&pid, "/usr/bin/cc", nil, nil, argv, environ) == 0, waitpid(pid, &status, 0) == pid,
            status == 0
        else { throw ValidationError("cannot compile the syscall loop with /usr/bin/cc") }
        return binary
    }

    /// Runs the loop program confined and returns what it printed (ns per call).
    private func runLoop(_ binary: String, _ kind: String, _ confinement: ChildConfinement) -> String {
        var fds: [Int32] = [-1, -1]
        guard corral_pipe_cloexec(&fds) == 0 else { return "?" }
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { close(devNull) }
        let configuration = SpawnConfiguration(
            arguments: [binary, kind, String(calls)], environment: [:], standardInput: devNull,
            standardOutput: fds[1], standardError: devNull, confinement: confinement)
        let child = try? Spawner.spawn(configuration)
        close(fds[1])
        var buffer = [UInt8](repeating: 0, count: 256)
        var text = ""
        while true {
            let count = read(fds[0], &buffer, buffer.count)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            text += String(decoding: buffer[0..<count], as: UTF8.self)
        }
        close(fds[0])
        if let child { wait(child) }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// A spawn as the runtime makes it for a task: the default profile, the task user without capabilities, the
/// server's PID namespace, and a cgroup of its own made for each spawn. nil unless running as root.
private final class TaskSpawner: @unchecked Sendable {  // used by one thread at a time
    let keeper: PIDNamespaceKeeper
    let hierarchy: CgroupHierarchy
    let identity: TaskIdentity
    let confinement: ChildConfinement
    private var counter = 0

    init?(directory: String, confinement: ChildConfinement) {
        guard geteuid() == 0, let identity = try? TaskIdentity.resolve(nil), identity.changesUser,
            case .success(let keeper) = PIDNamespaceKeeper.start()
        else { return nil }

        guard case .success(let hierarchy) = CgroupHierarchy.prepare(name: "corral-bench-\(getpid())") else {
            keeper.stop()
            return nil
        }
        self.keeper = keeper
        self.hierarchy = hierarchy
        self.identity = identity
        self.confinement = confinement
    }

    /// Spawn to reaped. The cgroup is made before the clock starts (the runtime could keep some ready) unless
    /// `timeCgroup`.
    func measure(
        _ count: Int, program: String, atBirth: Bool = true, timeCgroup: Bool = false, cgroup useCgroup: Bool = true,
        pidNamespace: Bool = true, identity useIdentity: Bool = true
    ) -> Samples {
        // On a thread of its own whose bounding set is emptied first, as the runtime's spawning thread is: the
        // children inherit it instead of dropping forty capabilities each (and this thread's other spawns, bwrap's
        // among them, keep root's).
        nonisolated(unsafe) var result = Samples()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            _ = corral_drop_thread_bounding_set()
            result = self.measureHere(
                count, program: program, atBirth: atBirth, timeCgroup: timeCgroup, cgroup: useCgroup,
                pidNamespace: pidNamespace, identity: useIdentity)
            done.signal()
        }
        thread.start()
        done.wait()
        return result
    }

    private func measureHere(
        _ count: Int, program: String, atBirth: Bool, timeCgroup: Bool, cgroup useCgroup: Bool, pidNamespace: Bool,
        identity useIdentity: Bool
    ) -> Samples {
        var samples = Samples()
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { close(devNull) }
        for _ in 0..<count {
            counter += 1
            var start = ContinuousClock.now
            guard let cgroup = try? hierarchy.createTaskCgroup(named: "spawn-\(counter)") else { continue }
            if !timeCgroup { start = ContinuousClock.now }
            var configuration = SpawnConfiguration(
                arguments: [program], environment: ["PATH": "/usr/bin:/bin"], workingDirectory: "/",
                standardInput: devNull, standardOutput: devNull, standardError: devNull, cgroup: useCgroup ? cgroup : nil,
                confinement: confinement, identity: useIdentity ? identity : nil, dropCapabilities: useIdentity,
                pidNamespace: pidNamespace ? keeper : nil)
            configuration.cgroupAtBirth = atBirth
            guard let child = try? Spawner.spawn(configuration) else {
                cgroup.remove()
                continue
            }
            _ = child.waitForExit()
            child.close()
            if !timeCgroup { samples.add(ContinuousClock.now - start) }
            if useCgroup { cgroup.waitUntilEmpty(timeoutMilliseconds: 1000) }
            cgroup.remove()
            if timeCgroup { samples.add(ContinuousClock.now - start) }
        }
        return samples
    }

    func stop() {
        keeper.stop()
        hierarchy.removeIfEmpty()
    }
}
