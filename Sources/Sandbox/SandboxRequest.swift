/// What an agent may ask for its task: a stricter profile, narrower paths, no network, lower limits. Applied over
/// the server's floor (`--sandbox-floor`); anything looser than the floor is refused.
public struct SandboxRequest: Codable, Sendable, Equatable {
    /// A built-in profile at least as strict as the floor.
    public var profile: String?
    /// Replaces the floor's read-only paths; each must lie beneath a path the floor lets the task read.
    public var allowRead: [String]?
    /// Replaces the floor's read-write paths; each must lie beneath a path the floor lets the task write.
    public var allowWrite: [String]?
    /// false: no network (at least `no-network`); true is only accepted when the floor allows the network.
    public var network: Bool?
    /// Limits by key: rlimits (cpu, as, nofile, nproc, fsize, core) and cgroup limits (processes, memory,
    /// cpu_percent); each at most the floor's.
    public var limits: [String: UInt64]?

    public init(
        profile: String? = nil, allowRead: [String]? = nil, allowWrite: [String]? = nil, network: Bool? = nil,
        limits: [String: UInt64]? = nil
    ) {
        self.profile = profile
        self.allowRead = allowRead
        self.allowWrite = allowWrite
        self.network = network
        self.limits = limits
    }

    enum CodingKeys: String, CodingKey {
        case profile, network, limits
        case allowRead = "allow_read", allowWrite = "allow_write"
    }

    /// The profile the task runs with, or why the request is refused.
    public func apply(over floor: SandboxProfile) throws(SandboxError) -> SandboxProfile {
        var result = floor
        // Only a floor that *is* a built-in is ranked: a custom file that merely borrows a built-in's name is not.
        let floorRank = BuiltinProfiles.named(floor.name) == floor ? BuiltinProfiles.rank(of: floor.name) : nil
        if let name = profile, name != floor.name {
            guard let requested = BuiltinProfiles.named(name), let rank = BuiltinProfiles.rank(of: name) else {
                let known = BuiltinProfiles.names.joined(separator: ", ")
                throw .tighteningRefused("unknown profile '\(name)' (built-in: \(known))")
            }
            // Only the built-ins are ordered; a custom floor admits only itself.
            guard let floorRank, rank >= floorRank else {
                throw .tighteningRefused("profile '\(name)' is looser than the server's floor '\(floor.name)'")
            }
            result = requested
            result.landlock = floor.landlock ?? requested.landlock
            for (key, value) in floor.rlimits {
                result.rlimits[key] = min(value, result.rlimits[key] ?? value)
            }

        }
        if network == true && !Self.allowsNetwork(result) {
            throw .tighteningRefused("network access is not allowed by the floor '\(floor.name)'")
        }
        if network == false && Self.allowsNetwork(result) {
            result.socketFamilies = .init(allow: ["AF_UNIX"])
            result.name += "+no-network"
        }
        for (key, value) in (limits ?? [:]).sorted(by: { $0.key < $1.key }) where CgroupLimits.keys.contains(key) {
            if let refusal = CgroupLimits.refusal(key, value) { throw .tighteningRefused("limit \(key) \(refusal)") }
            var cgroupLimits = result.cgroupLimits ?? CgroupLimits()
            if let current = cgroupLimits[key], value > current {
                throw .tighteningRefused("limit \(key)=\(value) is larger than the floor's \(current)")
            }
            cgroupLimits[key] = value
            result.cgroupLimits = cgroupLimits
        }
        for (key, value) in (limits ?? [:]).sorted(by: { $0.key < $1.key }) where !CgroupLimits.keys.contains(key) {
            guard ResourceLimit.Resource(rawValue: key) != nil else {
                let known = ResourceLimit.Resource.allCases.map(\.rawValue) + CgroupLimits.keys
                throw .tighteningRefused("unknown limit '\(key)' (known: \(known.joined(separator: ", ")))")
            }
            if let current = result.rlimits[key], value > current {
                throw .tighteningRefused("limit \(key)=\(value) is larger than the floor's \(current)")
            }
            result.rlimits[key] = value
        }
        if allowRead != nil || allowWrite != nil {
            guard var rules = result.landlock else {
                throw .tighteningRefused("the floor '\(floor.name)' has no filesystem rules to narrow")
            }
            let readable = rules.readOnly + rules.readWrite
            if let allowRead {
                for path in allowRead where !Self.isBeneath(path, anyOf: readable) {
                    throw .tighteningRefused("allow_read \(path) is outside what the floor lets the task read")
                }
                rules.readOnly = allowRead
            }
            if let allowWrite {
                for path in allowWrite where !Self.isBeneath(path, anyOf: rules.readWrite) {
                    throw .tighteningRefused("allow_write \(path) is outside what the floor lets the task write")
                }
                rules.readWrite = allowWrite
            }
            result.landlock = rules
        }
        return result
    }

    static func allowsNetwork(_ profile: SandboxProfile) -> Bool {
        guard let families = profile.socketFamilies else { return true }
        if let allow = families.allow { return allow.contains { $0 == "AF_INET" || $0 == "AF_INET6" } }
        let denied = families.deny ?? []
        return !denied.contains("AF_INET") || !denied.contains("AF_INET6")
    }

    /// Lexical containment on normalised components ("$CWD/x" is beneath "$CWD"); ".." is never accepted.
    static func isBeneath(_ path: String, anyOf roots: [String]) -> Bool {
        let parts = path.split(separator: "/")
        if parts.contains("..") { return false }
        return roots.contains { root in
            let rootParts = root.split(separator: "/")
            return parts.count >= rootParts.count && Array(parts.prefix(rootParts.count)) == rootParts
                && path.hasPrefix("/") == root.hasPrefix("/")
        }
    }
}
