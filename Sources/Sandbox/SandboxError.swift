/// Why a sandbox could not be loaded, tightened or prepared.
public enum SandboxError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A profile file (or built-in) is invalid: the file, the key path ("deny[2].syscalls[0]") and why.
    case invalidProfile(file: String, key: String, reason: String)
    case unknownProfile(String)
    /// A request asked for something looser than the server's floor.
    case tighteningRefused(String)
    /// libseccomp failed while compiling or exporting a filter.
    case seccomp(operation: String, errno: Int32)
    /// The Landlock ruleset could not be built.
    case landlock(operation: String, errno: Int32)
    /// Landlock was required but the kernel has none.
    case landlockUnavailable
    /// Landlock was required, the profile restricts TCP, and the kernel's Landlock cannot (ABI < 4).
    case landlockNetworkUnavailable(abi: Int)
    /// The task user cannot be used (`--task-user`, `--user`).
    case identity(String)
    /// Cgroup limits were asked for but cannot be enforced here.
    case cgroup(String)

    public var description: String {
        switch self {
        case .invalidProfile(let file, let key, let reason):
            return "\(file): \(key): \(reason)"
        case .unknownProfile(let name):
            return "unknown sandbox profile '\(name)' (built-in: \(BuiltinProfiles.names.joined(separator: ", ")); "
                + "or give a path to a .json file)"
        case .tighteningRefused(let reason):
            return "sandbox request refused: \(reason)"
        case .seccomp(let operation, let code):
            return "seccomp: \(operation) failed: \(errnoDescription(code))"
        case .landlock(let operation, let code):
            return "landlock: \(operation) failed: \(errnoDescription(code))"
        case .landlockUnavailable:
            return "Landlock is required but this kernel has none (or it is disabled)"
        case .landlockNetworkUnavailable(let abi):
            return "Landlock is required and the profile restricts TCP ports (tcp_bind, tcp_connect), but this kernel's "
                + "Landlock (ABI \(abi)) cannot: that needs ABI 4 (Linux 6.7)"
        case .identity(let reason):
            return "task user: \(reason)"
        case .cgroup(let reason):
            return "cgroup: \(reason)"
        }
    }
}
