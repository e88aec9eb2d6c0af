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
        abstract: "Run a command confined by a sandbox profile (seccomp, no_new_privs, rlimits, Landlock).",
        discussion: """
            Profiles: default, no-network, strict, or a path to a JSON profile (see policies/sandbox/). The command \
            gets the current directory read-write, a private temp directory ($TMPDIR) and everything else \
            read-only (where the kernel has Landlock). Exit status: the command's, 128+N if it was killed by \
            signal N, 125 if corral could not set up the sandbox, 126/127 if the command cannot be run.
            Examples:
              corral exec -- python3 -c 'print(1)'
              corral exec --profile strict --no-network --limit cpu=10 --limit as=1G -- make test
              corral exec --print-filter no-network
            """
    )

    @Option(help: "Profile: a built-in name or a JSON file.") var profile = "default"
    @Option(name: .customLong("allow-read"), help: "Also allow reading beneath this path.") var allowRead: [String] = []
    @Option(name: .customLong("allow-write"), help: "Also allow writing beneath this path.")
    var allowWrite: [String] = []
    @Flag(name: .customLong("no-network"), help: "No sockets except AF_UNIX.") var noNetwork = false
    @Option(name: .customLong("limit"), help: "A limit, KEY=VALUE (cpu, as, nofile, nproc, fsize, core; K/M/G).")
    var limits: [String] = []
    @Option(name: .customLong("require"), help: "Refuse to run without this protection (landlock).")
    var require: [String] = []
    @Option(name: .customLong("print-filter"), help: "Print the profile's filter in libseccomp's PFC form and exit.")
    var printFilter: String?
    @Flag(name: .customLong("print-profile"), help: "Print the resolved profile as JSON and exit.")
    var printProfile = false
    @Argument(parsing: .postTerminator, help: "The command and its arguments, after --.") var command: [String] = []

    func validate() throws {
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
            guard parts.count == 2, ResourceLimit.Resource(rawValue: parts[0]) != nil, let value = Self.size(parts[1])
            else {
                throw .invalidProfile(file: "--limit", key: item, reason: "expected KEY=VALUE with KEY one of "
                    + ResourceLimit.Resource.allCases.map(\.rawValue).joined(separator: ", "))
            }
            result.rlimits[parts[0]] = value
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
        let cwd = FileManager.default.currentDirectoryPath
        var template = Array("/tmp/corral-exec.XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw .landlock(operation: "mkdtemp", errno: errno) }
        let temporary = String(cString: made)
        defer { try? FileManager.default.removeItem(atPath: temporary) }

        let prepared = try SandboxPreparation.prepare(
            confined, workingDirectory: cwd, temporaryDirectory: temporary,
            requireLandlock: require.contains("landlock"))
        var environment = ProcessInfo.processInfo.environment
        environment["TMPDIR"] = temporary
        let configuration = SpawnConfiguration(
            arguments: command, environment: environment, workingDirectory: cwd, standardInput: 0, standardOutput: 1,
            standardError: 2, newSession: false, confinement: prepared.confinement)

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
        while child.pidfd >= 0 {
            // The pidfd becomes readable when the child exits: no polling loop with sleeps.
            var descriptor = pollfd(fd: child.pidfd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, -1)
            if ready < 0 && errno != EINTR { break }
            if let exit = child.reap() { return exit.shellStatus }
        }
        // Kernels without pidfds (before 5.3): block until the child exits, leaving it for reap().
        var info = siginfo_t()
        while waitid(P_PID, id_t(child.pid), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR {}
        return child.reap()?.shellStatus ?? 125
    }
}
