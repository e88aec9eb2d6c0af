import Foundation
import CCorral
import Glibc

/// Landlock rulesets, built in the parent; the child only calls `landlock_restrict_self` on the descriptor.
public enum Landlock {
    /// The kernel's Landlock ABI version; 0 when Landlock is missing or disabled.
    public static var abiVersion: Int { Int(corral_landlock_abi_version()) }

    /// Builds a ruleset for `rules`, with `$CWD` and `$TMP` expanded. Paths that do not exist are skipped (a
    /// machine without /dev/tty still runs tasks); a `$TMP` rule is skipped when there is no temp directory.
    /// Returns the ruleset fd, whether TCP is restricted, and the rules' paths with the files they named.
    static func makeRuleset(
        _ rules: SandboxProfile.LandlockRules, workingDirectory: String, temporaryDirectory: String?, abi: Int
    ) throws(SandboxError) -> (fd: Int32, restrictsTCP: Bool, bound: [BoundPath]) {
        let restrictsTCP = abi >= 4 && (rules.tcpBind != nil || rules.tcpConnect != nil)
        let fd = corral_landlock_create_ruleset(Int32(abi), restrictsTCP ? 1 : 0)
        guard fd >= 0 else { throw .landlock(operation: "landlock_create_ruleset", errno: errno) }
        var bound: [BoundPath] = []
        do throws(SandboxError) {
            for (paths, writable) in [(rules.readOnly, false), (rules.readWrite, true)] {
                for pattern in paths {
                    guard let path = expand(pattern, workingDirectory: workingDirectory,
                        temporaryDirectory: temporaryDirectory)
                    else { continue }
                    // The task's directories themselves are taken as they resolve (see `expectedPath`): checking
                    // them was two realpath walks each, to compare a result with itself.
                    if writable, path != workingDirectory, path != temporaryDirectory, let target = resolvedPath(path),
                        target != expectedPath(path, under: [workingDirectory, temporaryDirectory])
                    {
                        // A writable path must be what it says: a symlink planted by a task (in a directory it can
                        // write) would otherwise turn "$CWD/x" into write access to wherever x points.
                        throw .landlock(operation: "allow \(path) (it resolves through a symlink to \(target))",
                                        errno: ELOOP)
                    }
                    bound.append(BoundPath(path: path, identity: FileIdentity(path: path)))
                    if corral_landlock_allow_path(fd, Int32(abi), path, writable ? 1 : 0) != 0 && errno != ENOENT {
                        throw .landlock(operation: "allow \(path)", errno: errno)
                    }
                }
            }
            if restrictsTCP {
                let bind = Set(rules.tcpBind ?? []), connect = Set(rules.tcpConnect ?? [])
                for port in bind.union(connect).sorted() {
                    if corral_landlock_allow_port(fd, UInt64(port), bind.contains(port) ? 1 : 0,
                        connect.contains(port) ? 1 : 0) != 0
                    {
                        throw .landlock(operation: "allow TCP port \(port)", errno: errno)
                    }
                }
            }
        } catch {
            close(fd)
            throw error
        }
        return (fd, restrictsTCP, bound)
    }

    /// Where `path` should resolve to if no component of it is a symlink: the task's own directories (whose parents
    /// the operator chose) are taken as resolved, the rest must resolve to itself.
    static func expectedPath(_ path: String, under bases: [String?]) -> String {
        // Profiles' paths are normally written plainly; Foundation's URL standardization only for those that are not.
        let plain = path.hasPrefix("/") && !path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
            .contains { $0.isEmpty || $0 == "." || $0 == ".." }
        let lexical = plain ? path : URL(fileURLWithPath: path).standardizedFileURL.path
        for case let base? in bases where lexical == base || lexical.hasPrefix(base + "/") {
            if let resolvedBase = resolvedPath(base) { return resolvedBase + lexical.dropFirst(base.count) }
        }
        return lexical
    }

    static func resolvedPath(_ path: String) -> String? {
        Sandbox.resolvedPath(path)
    }

    static func expand(_ pattern: String, workingDirectory: String, temporaryDirectory: String?) -> String? {
        if pattern.hasPrefix("$CWD") { return workingDirectory + pattern.dropFirst(4) }
        if pattern.hasPrefix("$TMP") { return temporaryDirectory.map { $0 + pattern.dropFirst(4) } }
        return pattern
    }
}

/// realpath(3): the path with every symlink, "." and ".." resolved; nil when it does not exist.
public func resolvedPath(_ path: String) -> String? {
    guard let resolved = realpath(path, nil) else { return nil }
    defer { free(resolved) }
    return String(cString: resolved)
}
