import Glibc

/// A profile made ready for one spawn: the confinement for `SpawnConfiguration`, what it enforces, and the
/// Landlock descriptor to close once the child has started.
public struct PreparedSandbox: Sendable {
    public var confinement: ChildConfinement
    /// What is enforced, for the task record: "seccomp:default", "no_new_privs", "rlimits:core=0",
    /// "landlock:abi6" (or "landlock:unavailable"), "landlock-net".
    public var summary: [String]

    /// Closes the Landlock ruleset descriptor. Call once, after the spawn (the child holds its own restriction).
    public func cleanup() {
        if let fd = confinement.landlockRulesetFD { close(fd) }
    }
}

public enum SandboxPreparation {
    /// Prepares `profile` for a task whose working directory is `workingDirectory` and whose private temp directory
    /// is `temporaryDirectory`. Without Landlock in the kernel the task runs without it (the summary says so),
    /// unless `requireLandlock`.
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
        if let rules = profile.landlock {
            if landlockABI >= 1 {
                let ruleset = try Landlock.makeRuleset(
                    rules, workingDirectory: workingDirectory, temporaryDirectory: temporaryDirectory, abi: landlockABI)
                rulesetFD = ruleset.fd
                summary.append("landlock:abi\(landlockABI)")
                if ruleset.restrictsTCP { summary.append("landlock-net") }
            } else if requireLandlock {
                throw .landlockUnavailable
            } else {
                summary.append("landlock:unavailable")
            }
        }
        let confinement = ChildConfinement(
            resourceLimits: limits, noNewPrivileges: true, seccompProgram: program, landlockRulesetFD: rulesetFD)
        return PreparedSandbox(confinement: confinement, summary: summary)
    }
}
