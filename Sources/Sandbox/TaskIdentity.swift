import Glibc

/// The user a task runs as. A server running as root never lends tasks its root: they run as an unprivileged uid
/// and gid of their own, with every capability set empty (bounding and ambient included). A server running as
/// another user keeps its uid for tasks, with no capabilities.
public struct TaskIdentity: Sendable, Hashable, CustomStringConvertible {
    public var uid: uid_t
    public var gid: gid_t
    /// For messages and `USER`: the passwd name, or the number.
    public var name: String
    /// false only when the server keeps its own uid (not root), or root was kept on purpose (`--keep-root`).
    public var changesUser: Bool

    /// The dedicated id a root server gives its tasks when no `--task-user` names another: outside the ranges
    /// Debian hands out to people (1000–59999) and systemd to dynamic users (61184–65519), below `nobody`.
    public static let defaultUID: uid_t = 65530
    public static let defaultName = "corral-task"

    public var description: String { "\(name) (uid \(uid), gid \(gid))" }

    /// What tasks of this process run as: `spec` is nil (the default), a user name, a uid, or `UID:GID`.
    public static func resolve(_ spec: String?, keepRoot: Bool = false) throws(SandboxError) -> TaskIdentity {
        let ownUID = geteuid()
        let ownGID = getegid()
        if keepRoot {
            guard ownUID == 0 else { throw .identity("--keep-root is only for a server running as root") }
            return TaskIdentity(uid: 0, gid: 0, name: "root", changesUser: false)
        }
        guard let spec else {
            if ownUID != 0 { return TaskIdentity(uid: ownUID, gid: ownGID, name: userName(ownUID), changesUser: false) }
            if let entry = getpwnam(defaultName) {
                let named = TaskIdentity(
                    uid: entry.pointee.pw_uid, gid: entry.pointee.pw_gid, name: defaultName, changesUser: true)
                guard Self.isUsable(named) else {
                    throw .identity("the user '\(defaultName)' in /etc/passwd has uid or gid 0 (or -1); give --task-user")
                }
                return named
            }
            return TaskIdentity(uid: defaultUID, gid: defaultUID, name: defaultName, changesUser: true)
        }
        let identity = try parse(spec)
        guard isUsable(identity) else {
            throw .identity(
                "the task user may not be root (uid 0 or gid 0) nor uid/gid 4294967295 (-1): \(spec); --keep-root says so explicitly")
        }
        if ownUID != 0 && identity.uid != ownUID {
            throw .identity("tasks can run as \(spec) only when the server runs as root (it runs as uid \(ownUID))")
        }
        return identity
    }

    /// Neither root nor -1 (which the kernel's set*id calls take as "leave unchanged").
    private static func isUsable(_ identity: TaskIdentity) -> Bool {
        identity.uid != 0 && identity.gid != 0 && identity.uid != uid_t.max && identity.gid != gid_t.max
    }

    private static func parse(_ spec: String) throws(SandboxError) -> TaskIdentity {
        let parts = spec.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard parts.count <= 2, let first = parts.first, !first.isEmpty else {
            throw .identity("expected a user name, UID or UID:GID, got '\(spec)'")
        }
        var uid: uid_t
        var gid: gid_t
        var name: String
        if let number = uid_t(first) {
            uid = number
            gid = getpwuid(number)?.pointee.pw_gid ?? number
            name = userName(number)
        } else if let entry = getpwnam(first) {
            uid = entry.pointee.pw_uid
            gid = entry.pointee.pw_gid
            name = first
        } else {
            throw .identity("no user named '\(first)' (give a numeric UID or UID:GID instead)")
        }
        if parts.count == 2 {
            if let number = gid_t(parts[1]) {
                gid = number
            } else if let group = getgrnam(parts[1]) {
                gid = group.pointee.gr_gid
            } else {
                throw .identity("no group named '\(parts[1])'")
            }
        }
        return TaskIdentity(uid: uid, gid: gid, name: name, changesUser: uid != geteuid() || gid != getegid())
    }

    private static func userName(_ uid: uid_t) -> String {
        guard let entry = getpwuid(uid), let name = entry.pointee.pw_name else { return String(uid) }
        return String(cString: name)
    }

    /// Why this identity cannot write into `directory` (each component searchable, the last writable), judged by
    /// owner, group and mode bits as the kernel would for a process without capabilities; nil when it can, and
    /// when the directory does not exist (starting the task then fails, saying so).
    public func writeRefusal(_ directory: String) -> String? {
        accessRefusal(directory, write: true)
    }

    /// Why this identity cannot reach `directory` (every component searchable); nil when it can.
    public func searchRefusal(_ directory: String) -> String? {
        accessRefusal(directory, write: false)
    }

    private func accessRefusal(_ directory: String, write: Bool) -> String? {
        var path = ""
        let components = directory.split(separator: "/")
        for (index, component) in components.enumerated() {
            path += "/" + component
            var info = stat()
            guard stat(path, &info) == 0 else { return errno == ENOENT ? nil : "\(path): \(errnoDescription(errno))" }
            let last = index == components.count - 1
            let needed: mode_t = last && write ? 0o3 : 0o1  // write+search for the target, search for its parents
            if !permits(info, needed) {
                return last && write
                    ? "\(path) is not writable by the task user \(description)"
                    : "\(path) cannot be entered by the task user \(description)"
            }
        }
        return nil
    }

    private func permits(_ info: stat, _ bits: mode_t) -> Bool {
        let mode = info.st_mode
        if info.st_uid == uid { return (mode >> 6) & bits == bits }
        if info.st_gid == gid { return (mode >> 3) & bits == bits }
        return mode & bits == bits
    }
}
