/// A sandbox profile: what the seccomp filter allows and denies, the resource limits and the Landlock rules of a task.
///
/// Profiles are data (policies/sandbox/*.json, validated by `ProfileLoader`); the built-in ones are the same data.
/// Names are the JSON keys; syscall, errno, socket family and ioctl names are kept as strings here and resolved when
/// the filter is compiled (the loader checks them first).
public struct SandboxProfile: Codable, Sendable, Hashable {
    /// What happens to a system call no rule names.
    public enum DefaultAction: String, Codable, Sendable, Hashable {
        /// Deny-list profile: everything not denied is allowed.
        case allow
        /// Allow-list profile: everything not allowed fails with `default_errno`.
        case deny
    }

    /// System calls that fail with an errno instead of running.
    public struct DenyRule: Codable, Sendable, Hashable {
        public var syscalls: [String]
        /// An errno name ("EPERM", "ENOSYS").
        public var errno: String

        public init(syscalls: [String], errno: String) {
            self.syscalls = syscalls
            self.errno = errno
        }
    }

    /// An argument rule: either only `allow` values pass, or the `deny` values are refused (EPERM).
    public struct ValueRule: Codable, Sendable, Hashable {
        public var allow: [String]?
        public var deny: [String]?

        public init(allow: [String]? = nil, deny: [String]? = nil) {
            self.allow = allow
            self.deny = deny
        }
    }

    /// Landlock rules. Paths may use `$CWD` (the task's working directory) and `$TMP` (its private temp directory).
    public struct LandlockRules: Codable, Sendable, Hashable {
        public var readOnly: [String]
        public var readWrite: [String]
        /// TCP ports the task may bind / connect to (Landlock ABI >= 4). nil: TCP is not restricted by Landlock.
        public var tcpBind: [UInt16]?
        public var tcpConnect: [UInt16]?

        public init(readOnly: [String], readWrite: [String], tcpBind: [UInt16]? = nil, tcpConnect: [UInt16]? = nil) {
            self.readOnly = readOnly
            self.readWrite = readWrite
            self.tcpBind = tcpBind
            self.tcpConnect = tcpConnect
        }

        enum CodingKeys: String, CodingKey {
            case readOnly = "read_only", readWrite = "read_write", tcpBind = "tcp_bind", tcpConnect = "tcp_connect"
        }
    }

    public var name: String
    public var description: String?
    public var defaultAction: DefaultAction
    /// The errno of the default action of an allow-list profile (`default_action: deny`).
    public var defaultErrno: String?
    /// Syscalls allowed unconditionally (allow-list profiles only).
    public var allow: [String]
    public var deny: [DenyRule]
    /// Refuse `clone` when any namespace flag is set (masked compare on the flags' low 32 bits).
    public var denyCloneNamespaces: Bool
    /// `personality` values that pass ("0x0", "0x8", ...); nil: not restricted.
    public var personality: [String]?
    /// `socket`/`socketpair` families ("AF_UNIX", ...).
    public var socketFamilies: ValueRule?
    /// `ioctl` requests ("TIOCSTI", "TCGETS", ...).
    public var ioctl: ValueRule?
    /// Resource limits by key: cpu, as, nofile, nproc, fsize, core.
    public var rlimits: [String: UInt64]
    /// Limits the task's cgroup enforces (processes, memory, cpu_percent): they hold for root too, and per task.
    public var cgroupLimits: CgroupLimits?
    public var landlock: LandlockRules?
    /// Default-allow profiles: every syscall numbered above this one (the newest the profile's author reviewed)
    /// fails with ENOSYS, so that a syscall newer than the deny-list cannot pass just because nobody named it.
    public var denySyscallsAbove: String?

    public init(
        name: String, description: String? = nil, defaultAction: DefaultAction, defaultErrno: String? = nil,
        allow: [String] = [], deny: [DenyRule] = [], denyCloneNamespaces: Bool = true, personality: [String]? = nil,
        socketFamilies: ValueRule? = nil, ioctl: ValueRule? = nil, rlimits: [String: UInt64] = [:],
        cgroupLimits: CgroupLimits? = nil, landlock: LandlockRules? = nil, denySyscallsAbove: String? = nil
    ) {
        self.name = name
        self.description = description
        self.defaultAction = defaultAction
        self.defaultErrno = defaultErrno
        self.allow = allow
        self.deny = deny
        self.denyCloneNamespaces = denyCloneNamespaces
        self.personality = personality
        self.socketFamilies = socketFamilies
        self.ioctl = ioctl
        self.rlimits = rlimits
        self.cgroupLimits = cgroupLimits
        self.landlock = landlock
        self.denySyscallsAbove = denySyscallsAbove
    }

    enum CodingKeys: String, CodingKey {
        case name, description, allow, deny, personality, ioctl, rlimits, landlock
        case defaultAction = "default_action", defaultErrno = "default_errno"
        case denyCloneNamespaces = "deny_clone_namespaces", socketFamilies = "socket_families"
        case cgroupLimits = "cgroup_limits", denySyscallsAbove = "deny_syscalls_above"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        description = try c.decodeIfPresent(String.self, forKey: .description)
        defaultAction = try c.decode(DefaultAction.self, forKey: .defaultAction)
        defaultErrno = try c.decodeIfPresent(String.self, forKey: .defaultErrno)
        allow = try c.decodeIfPresent([String].self, forKey: .allow) ?? []
        deny = try c.decodeIfPresent([DenyRule].self, forKey: .deny) ?? []
        denyCloneNamespaces = try c.decodeIfPresent(Bool.self, forKey: .denyCloneNamespaces) ?? true
        personality = try c.decodeIfPresent([String].self, forKey: .personality)
        socketFamilies = try c.decodeIfPresent(ValueRule.self, forKey: .socketFamilies)
        ioctl = try c.decodeIfPresent(ValueRule.self, forKey: .ioctl)
        rlimits = try c.decodeIfPresent([String: UInt64].self, forKey: .rlimits) ?? [:]
        cgroupLimits = try c.decodeIfPresent(CgroupLimits.self, forKey: .cgroupLimits)
        landlock = try c.decodeIfPresent(LandlockRules.self, forKey: .landlock)
        denySyscallsAbove = try c.decodeIfPresent(String.self, forKey: .denySyscallsAbove)
    }

    /// The profile's resource limits as `ResourceLimit`s (keys were validated by the loader; unknown ones are skipped).
    public var resourceLimits: [ResourceLimit] {
        rlimits.sorted { $0.key < $1.key }.compactMap { key, value in
            ResourceLimit.Resource(rawValue: key).map { ResourceLimit($0, value) }
        }
    }
}
