import CSeccomp
import Foundation

/// Loads sandbox profiles from JSON and validates every name in them, so that a bad profile fails at load time
/// with the file and the key instead of at spawn time.
public enum ProfileLoader {
    static let topKeys: Set<String> = [
        "$schema", "name", "description", "default_action", "default_errno", "allow", "deny",
        "deny_clone_namespaces", "personality", "socket_families", "ioctl", "rlimits", "landlock", "cgroup_limits",
        "deny_syscalls_above",
    ]
    static let cgroupLimitKeys = Set(CgroupLimits.keys)
    static let denyKeys: Set<String> = ["syscalls", "errno"]
    static let valueRuleKeys: Set<String> = ["allow", "deny"]
    static let landlockKeys: Set<String> = ["read_only", "read_write", "tcp_bind", "tcp_connect"]

    /// A built-in profile name, or a path to a JSON file.
    public static func resolve(_ nameOrPath: String) throws(SandboxError) -> SandboxProfile {
        if let builtin = BuiltinProfiles.named(nameOrPath) { return builtin }
        if nameOrPath.contains("/") || nameOrPath.hasSuffix(".json") { return try load(file: nameOrPath) }
        throw .unknownProfile(nameOrPath)
    }

    public static func load(file path: String) throws(SandboxError) -> SandboxProfile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .invalidProfile(file: path, key: "(file)", reason: "cannot read the file")
        }
        return try load(data: data, file: path)
    }

    public static func load(data: Data, file: String) throws(SandboxError) -> SandboxProfile {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw .invalidProfile(file: file, key: "(file)", reason: "not valid JSON: \(error.localizedDescription)")
        }
        guard let top = object as? [String: Any] else {
            throw .invalidProfile(file: file, key: "(root)", reason: "must be a JSON object")
        }
        try checkKeys(top, allowed: topKeys, path: "", file: file)
        for (index, rule) in (top["deny"] as? [Any] ?? []).enumerated() {
            try checkKeys(rule as? [String: Any] ?? [:], allowed: denyKeys, path: "deny[\(index)].", file: file)
        }
        for key in ["socket_families", "ioctl"] {
            if let rule = top[key] as? [String: Any] {
                try checkKeys(rule, allowed: valueRuleKeys, path: key + ".", file: file)
            }
        }
        if let landlock = top["landlock"] as? [String: Any] {
            try checkKeys(landlock, allowed: landlockKeys, path: "landlock.", file: file)
        }
        if let limits = top["cgroup_limits"] as? [String: Any] {
            try checkKeys(limits, allowed: cgroupLimitKeys, path: "cgroup_limits.", file: file)
        }
        let profile: SandboxProfile
        do {
            profile = try JSONDecoder().decode(SandboxProfile.self, from: data)
        } catch let DecodingError.keyNotFound(key, context) {
            throw .invalidProfile(
                file: file, key: keyPath(context.codingPath + [key]), reason: "required key is missing")
        } catch let DecodingError.typeMismatch(_, context) {
            throw .invalidProfile(file: file, key: keyPath(context.codingPath), reason: context.debugDescription)
        } catch let DecodingError.dataCorrupted(context) {
            throw .invalidProfile(file: file, key: keyPath(context.codingPath), reason: context.debugDescription)
        } catch {
            throw .invalidProfile(file: file, key: "(root)", reason: "\(error)")
        }
        try validate(profile, file: file)
        return profile
    }

    /// Checks every name a profile uses: syscalls (against libseccomp's table for this architecture), errno names,
    /// socket families, ioctl requests, personality values, rlimit keys and Landlock ports.
    public static func validate(_ profile: SandboxProfile, file: String) throws(SandboxError) {
        func fail(_ key: String, _ reason: String) -> SandboxError {
            .invalidProfile(file: file, key: key, reason: reason)
        }
        if profile.name.isEmpty { throw fail("name", "must not be empty") }
        switch profile.defaultAction {
        case .allow:
            if !profile.allow.isEmpty { throw fail("allow", "an allow-list needs \"default_action\": \"deny\"") }
            if profile.defaultErrno != nil { throw fail("default_errno", "only for \"default_action\": \"deny\"") }
        case .deny:
            if profile.allow.isEmpty { throw fail("allow", "an allow-list profile must allow some system calls") }
        }
        if let name = profile.defaultErrno, SandboxNames.errnos[name] == nil {
            throw fail("default_errno", "unknown errno name '\(name)'")
        }
        for (index, name) in profile.allow.enumerated() where !isSyscall(name) {
            throw fail("allow[\(index)]", "unknown system call '\(name)'")
        }
        for (index, rule) in profile.deny.enumerated() {
            if SandboxNames.errnos[rule.errno] == nil {
                throw fail("deny[\(index)].errno", "unknown errno name '\(rule.errno)'")
            }
            for (position, name) in rule.syscalls.enumerated() where !isSyscall(name) {
                throw fail("deny[\(index)].syscalls[\(position)]", "unknown system call '\(name)'")
            }
        }
        for (index, value) in (profile.personality ?? []).enumerated()
        where SandboxNames.value(value, in: [:]) == nil {
            throw fail("personality[\(index)]", "not a 32-bit number: '\(value)'")
        }
        for (key, rule, table) in [
            ("socket_families", profile.socketFamilies, SandboxNames.socketFamilies),
            ("ioctl", profile.ioctl, SandboxNames.ioctls),
        ] {
            guard let rule else { continue }
            if rule.allow != nil && rule.deny != nil { throw fail(key, "give either \"allow\" or \"deny\", not both") }
            for (list, values) in [("allow", rule.allow ?? []), ("deny", rule.deny ?? [])] {
                for (index, value) in values.enumerated() where SandboxNames.value(value, in: table) == nil {
                    throw fail("\(key).\(list)[\(index)]", "unknown name '\(value)'")
                }
            }
        }
        for key in profile.rlimits.keys.sorted() where ResourceLimit.Resource(rawValue: key) == nil {
            throw fail(
                "rlimits.\(key)",
                "unknown limit (known: \(ResourceLimit.Resource.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        if let limits = profile.cgroupLimits {
            for key in CgroupLimits.keys {
                if let value = limits[key], let refusal = CgroupLimits.refusal(key, value) {
                    throw fail("cgroup_limits.\(key)", refusal)
                }
            }
        }
        if let above = profile.denySyscallsAbove {
            if profile.defaultAction != .allow {
                throw fail("deny_syscalls_above", "only a default-allow profile needs it (an allow-list denies the rest)")
            }
            if SandboxNames.syscallNumber(above) == nil { throw fail("deny_syscalls_above", "unknown system call '\(above)'") }
        }
        if let landlock = profile.landlock {
            for (list, paths) in [("read_only", landlock.readOnly), ("read_write", landlock.readWrite)] {
                for (index, path) in paths.enumerated() where !(path.hasPrefix("/") || path.hasPrefix("$CWD")
                    || path.hasPrefix("$TMP"))
                {
                    throw fail("landlock.\(list)[\(index)]", "must be absolute or start with $CWD or $TMP")
                }
            }
        }
    }

    static func isSyscall(_ name: String) -> Bool {
        SandboxNames.syscallNumber(name) != nil
    }

    private static func checkKeys(_ object: [String: Any], allowed: Set<String>, path: String, file: String)
        throws(SandboxError)
    {
        for key in object.keys.sorted() where !allowed.contains(key) {
            throw .invalidProfile(file: file, key: path + key, reason: "unknown key")
        }
    }

    private static func keyPath(_ path: [any CodingKey]) -> String {
        var text = ""
        for key in path {
            if let index = key.intValue {
                text += "[\(index)]"
            } else {
                text += (text.isEmpty ? "" : ".") + key.stringValue
            }
        }
        return text.isEmpty ? "(root)" : text
    }
}
