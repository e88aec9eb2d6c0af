import CCorral
import Glibc

/// Why tasks are not put in a PID namespace here (they then die with the server only through the parent-death
/// signal of their first process, as before).
public struct PIDNamespaceUnavailable: Error, Sendable, CustomStringConvertible {
    public var description: String
}

/// The PID namespace a server's tasks are born in, held by its first process, the keeper (keeper.c).
///
/// When the keeper dies the kernel SIGKILLs every process left in the namespace, whatever its depth or session,
/// and the keeper dies with the server: `PR_SET_PDEATHSIG` towards the thread that started it, and a pidfd of the
/// server it watches. So after `kill -9` of the server no task process survives, without waiting for a restart.
///
/// One namespace per server rather than one per task: a task's first process then is not the namespace's init (init
/// ignores signals it has no handler for, and would have to reap), and a spawn costs two `setns` calls instead of a
/// second process. Tasks of one server share the namespace; signals between them are stopped by Landlock's signal
/// scope (ABI 6) where the profile has Landlock.
public final class PIDNamespaceKeeper: Sendable {
    public let keeper: ChildProcess
    /// /proc/<keeper>/ns/pid: what a spawn enters for its child.
    let namespaceFD: Int32
    /// /proc/self/ns/pid: what the spawning thread goes back to.
    let ownNamespaceFD: Int32

    private init(keeper: ChildProcess, namespaceFD: Int32, ownNamespaceFD: Int32) {
        self.keeper = keeper
        self.namespaceFD = namespaceFD
        self.ownNamespaceFD = ownNamespaceFD
    }

    /// Starts the keeper. Call it on the thread that will spawn the tasks (the parent-death signal follows it).
    /// Needs CAP_SYS_ADMIN (a server running as root).
    public static func start() -> Result<PIDNamespaceKeeper, PIDNamespaceUnavailable> {
        guard geteuid() == 0 else {
            return .failure(.init(description: "a PID namespace for tasks needs a server running as root"))
        }
        let ownNamespace = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC)
        guard ownNamespace >= 0 else {
            return .failure(.init(description: "cannot open /proc/self/ns/pid: \(errnoDescription(errno))"))
        }
        let serverPidFD = corral_pidfd_open(getpid())
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer {
            if serverPidFD >= 0 { close(serverPidFD) }
            if null >= 0 { close(null) }
        }
        guard serverPidFD >= 0, null >= 0 else {
            close(ownNamespace)
            return .failure(.init(description: "cannot open a pidfd of the server: \(errnoDescription(errno))"))
        }
        var configuration = SpawnConfiguration(
            arguments: ["/proc/self/exe"], environment: ["CORRAL_KEEPER": "1"], workingDirectory: "/",
            standardInput: serverPidFD, standardOutput: null, standardError: null, newSession: true,
            parentDeathSignal: SIGKILL)
        configuration.argv0 = "corral-keeper"
        configuration.newPIDNamespace = true
        let keeper: ChildProcess
        do {
            keeper = try Spawner.spawn(configuration)
        } catch {
            close(ownNamespace)
            return .failure(.init(description: "cannot start the PID namespace keeper: \(error)"))
        }
        let namespace = open("/proc/\(keeper.pid)/ns/pid", O_RDONLY | O_CLOEXEC)
        guard namespace >= 0 else {
            let reason = errnoDescription(errno)
            keeper.signal(SIGKILL)
            _ = keeper.waitForExit()
            close(ownNamespace)
            return .failure(.init(description: "cannot open the keeper's PID namespace: \(reason)"))
        }
        return .success(PIDNamespaceKeeper(keeper: keeper, namespaceFD: namespace, ownNamespaceFD: ownNamespace))
    }

    /// Whether the keeper (and so the namespace) is still there; a namespace whose init died takes no new process.
    public var isAlive: Bool { !keeper.hasExited }

    /// Ends the namespace: every process still in it is killed by the kernel.
    public func stop() {
        keeper.signal(SIGKILL)
        _ = keeper.waitForExit()
        keeper.close()
        close(namespaceFD)
        close(ownNamespaceFD)
    }
}
