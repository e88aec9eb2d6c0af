import Glibc

/// A profile made ready for one spawn: the confinement for `SpawnConfiguration`, what it enforces, and the
/// Landlock descriptor to close once the child has started.
public struct PreparedSandbox: Sendable {
    public var confinement: ChildConfinement
    /// What is enforced, for the task record: "seccomp:default", "no_new_privs", "rlimits:core=0",
    /// "landlock:abi6" (or "landlock:unavailable"), "landlock-net".
    public var summary: [String]
    /// The paths of the Landlock rules and the files they named when the ruleset was made.
    public var boundPaths: [BoundPath] = []

    /// Whether every rule's path still names the file it named when the ruleset was made (nil: still missing). A
    /// ruleset binds files, not names: one made ahead of its task is used only if nothing was created, removed or
    /// renamed at its paths since, so that it grants what one made at the task's start would.
    public func stillBindsTheSameFiles() -> Bool {
        boundPaths.allSatisfy { FileIdentity(path: $0.path) == $0.identity }
    }

    /// Closes the Landlock ruleset descriptor. Call once, after the spawn (the child holds its own restriction).
    public func cleanup() {
        if let fd = confinement.landlockRulesetFD { close(fd) }
    }
}

/// A Landlock rule's path and the file it named (nil: missing, so no rule was added for it).
public struct BoundPath: Sendable, Equatable {
    public var path: String
    public var identity: FileIdentity?
}

/// A file by device and inode, as stat(2) finds it through its path (symlinks followed, as the rules' opens do).
public struct FileIdentity: Sendable, Equatable {
    public var device: UInt64
    public var inode: UInt64

    public init?(path: String) {
        var status = stat()
        guard stat(path, &status) == 0 else { return nil }
        device = UInt64(status.st_dev)
        inode = UInt64(status.st_ino)
    }
}

public enum SandboxPreparation {
    /// Prepares `profile` for a task whose working directory is `workingDirectory` and whose private temp directory
    /// is `temporaryDirectory`. Without Landlock in the kernel the task runs without it (the summary says so),
    /// unless `requireLandlock`; the same for a profile's TCP rules where Landlock is older than ABI 4.
    public static func prepare(
        _ profile: SandboxProfile, workingDirectory: String, temporaryDirectory: String?,
        requireLandlock: Bool = false, landlockABI: Int = Landlock.abiVersion
    ) throws(SandboxError) -> PreparedSandbox {
        let program = try SeccompCompiler.program(for: profile)
        var summary = ["seccomp:\(profile.name)", "no_new_privs"]
        let limits = profile.resourceLimits
        if !limits.isEmpty {
            summary.append("rlimits:" + limits.map { "\($0.resource.rawValue)=\($0.value)" }.joined(separator: ","))
        }
        var rulesetFD: Int32?
        var boundPaths: [BoundPath] = []
        if let rules = profile.landlock {
            if landlockABI >= 1 {
                let ruleset = try Landlock.makeRuleset(
                    rules, workingDirectory: workingDirectory, temporaryDirectory: temporaryDirectory, abi: landlockABI)
                rulesetFD = ruleset.fd
                boundPaths = ruleset.bound
                summary.append("landlock:abi\(landlockABI)")
                if ruleset.restrictsTCP {
                    summary.append("landlock-net")
                } else if rules.tcpBind != nil || rules.tcpConnect != nil {
                    // The files are confined, the network is not: never silently.
                    if requireLandlock {
                        close(ruleset.fd)
                        throw .landlockNetworkUnavailable(abi: landlockABI)
                    }
                    summary.append("landlock-net:unavailable")
                }
            } else if requireLandlock {
                throw .landlockUnavailable
            } else {
                summary.append("landlock:unavailable")
            }
        }
        let confinement = ChildConfinement(
            resourceLimits: limits, noNewPrivileges: true, seccompProgram: program, landlockRulesetFD: rulesetFD)
        return PreparedSandbox(confinement: confinement, summary: summary, boundPaths: boundPaths)
    }
}
