import CCorral
import Glibc

/// Why per-task cgroups are not used on this machine (the runtime then falls back to process-group signals).
public struct CgroupUnavailable: Error, Sendable, CustomStringConvertible {
    public var description: String

    public init(description: String) {
        self.description = description
    }
}

/// A writable cgroup v2 directory under which each task gets a cgroup of its own.
///
/// In a hybrid setup the v2 hierarchy is the `unified` mount; we create our directory below the cgroup this process
/// is in, so that delegated (non-root) setups work too.
public struct CgroupHierarchy: Sendable {
    /// `<cgroup2 mount>/<our cgroup>/<name>`
    public let root: String

    /// Finds the cgroup v2 mount, creates `name` under our own cgroup and checks that `cgroup.freeze` and `cgroup.kill`
    /// exist (Linux 5.2 and 5.14).
    public static func prepare(name: String) -> Result<CgroupHierarchy, CgroupUnavailable> {
        guard let mount = cgroup2Mount() else {
            return .failure(CgroupUnavailable(description: "no cgroup v2 hierarchy is mounted"))
        }
        guard let own = ownCgroupPath() else {
            return .failure(CgroupUnavailable(description: "this process is not in a cgroup v2 hierarchy"))
        }
        let relative = own.hasPrefix(mount.root) ? String(own.dropFirst(mount.root.count)) : own
        let base = (mount.mountPoint + "/" + relative).replacingDoubleSlashes()
        let root = base + "/" + name
        if mkdir(root, 0o755) != 0 && errno != EEXIST {
            return .failure(CgroupUnavailable(description: "cannot create \(root): \(errnoDescription(errno))"))
        }
        for file in ["cgroup.freeze", "cgroup.kill", "cgroup.events", "cgroup.procs"] {
            if access(root + "/" + file, W_OK) != 0 && file != "cgroup.events" {
                rmdir(root)
                return .failure(
                    CgroupUnavailable(description: "\(root)/\(file) is not writable: \(errnoDescription(errno))"))
            }
        }
        return .success(CgroupHierarchy(root: root))
    }

    /// Creates the cgroup of one task.
    public func createTaskCgroup(named name: String) throws(CgroupUnavailable) -> TaskCgroup {
        let path = root + "/" + name
        if mkdir(path, 0o755) != 0 && errno != EEXIST {
            throw CgroupUnavailable(description: "cannot create \(path): \(errnoDescription(errno))")
        }
        let procsFD = open(path + "/cgroup.procs", O_WRONLY | O_CLOEXEC)
        guard procsFD >= 0 else {
            let error = errno
            rmdir(path)
            throw CgroupUnavailable(description: "cannot open \(path)/cgroup.procs: \(errnoDescription(error))")
        }
        return TaskCgroup(path: path, procsFD: procsFD)
    }

    /// Removes the root directory if no task cgroup is left in it.
    public func removeIfEmpty() {
        rmdir(root)
    }

    /// Names of the task cgroups left under the root (after a crash).
    public func leftoverCgroups() -> [String] {
        guard let dir = opendir(root) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if entry.pointee.d_type == UInt8(DT_DIR) && !name.hasPrefix(".") {
                names.append(name)
            }
        }
        return names
    }

    private static func cgroup2Mount() -> (mountPoint: String, root: String)? {
        guard let text = readSmallFile("/proc/self/mountinfo") else { return nil }
        for line in text.split(separator: "\n") {
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
            let halves = line.split(separator: " - ", maxSplits: 1)
            guard halves.count == 2, halves[1].split(separator: " ").first == "cgroup2" else { continue }
            let fields = halves[0].split(separator: " ")
            guard fields.count >= 5 else { continue }
            return (unescapeMountField(String(fields[4])), unescapeMountField(String(fields[3])))
        }
        return nil
    }

    private static func ownCgroupPath() -> String? {
        guard let text = readSmallFile("/proc/self/cgroup") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("0::") {
            return String(line.dropFirst(3))
        }
        return nil
    }

    private static func unescapeMountField(_ field: String) -> String {
        field.replacing("\\040", with: " ")
    }
}

/// One task's cgroup: freeze, thaw and kill act on every process in it, also those that left the process group.
public final class TaskCgroup: Sendable {
    public let path: String
    /// Open `cgroup.procs`: the child writes "0" to it between clone and exec, joining the cgroup before it runs any
    /// code of the task. -1 for a cgroup found on disk after a restart.
    public let procsFD: Int32

    init(path: String, procsFD: Int32) {
        self.path = path
        self.procsFD = procsFD
    }

    /// A cgroup found on disk (after a restart); it is only killed and removed.
    public static func existing(path: String) -> TaskCgroup? {
        guard access(path + "/cgroup.kill", F_OK) == 0 else { return nil }
        return TaskCgroup(path: path, procsFD: -1)
    }

    /// Freezes (or thaws) every process and waits until the kernel reports it done.
    public func setFrozen(_ frozen: Bool, timeoutMilliseconds: Int32 = 5000) throws(CgroupUnavailable) {
        try write(frozen ? "1" : "0", to: "cgroup.freeze")
        guard waitForEvent("frozen", frozen ? "1" : "0", timeoutMilliseconds: timeoutMilliseconds) else {
            throw CgroupUnavailable(description: "\(path) did not become \(frozen ? "frozen" : "thawed") in time")
        }
    }

    /// SIGKILLs every process in the cgroup (frozen ones too).
    public func killAll() throws(CgroupUnavailable) {
        try write("1", to: "cgroup.kill")
    }

    /// Waits until no process is left in the cgroup. Returns false on timeout.
    @discardableResult
    public func waitUntilEmpty(timeoutMilliseconds: Int32 = 5000) -> Bool {
        waitForEvent("populated", "0", timeoutMilliseconds: timeoutMilliseconds)
    }

    public var isPopulated: Bool {
        events()["populated"] == "1"
    }

    public var isFrozen: Bool {
        events()["frozen"] == "1"
    }

    /// The pids of every process in the cgroup.
    public func processIDs() -> [pid_t] {
        guard let text = readSmallFile(path + "/cgroup.procs") else { return [] }
        return text.split(separator: "\n").compactMap { pid_t($0) }
    }

    /// CPU time used by every process that ever ran in the cgroup, in microseconds (user, system).
    public func cpuUsage() -> (user: Int64, system: Int64)? {
        guard let text = readSmallFile(path + "/cpu.stat") else { return nil }
        var user: Int64?
        var system: Int64?
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            guard parts.count == 2 else { continue }
            if parts[0] == "user_usec" { user = Int64(parts[1]) }
            if parts[0] == "system_usec" { system = Int64(parts[1]) }
        }
        guard let user, let system else { return nil }
        return (user, system)
    }

    /// Closes the descriptors and removes the (empty) directory.
    public func remove() {
        if procsFD >= 0 { close(procsFD) }
        rmdir(path)
    }

    private func write(_ value: String, to file: String) throws(CgroupUnavailable) {
        let fd = open(path + "/" + file, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw CgroupUnavailable(description: "cannot open \(path)/\(file): \(errnoDescription(errno))")
        }
        defer { close(fd) }
        let written = value.withCString { Glibc.write(fd, $0, strlen($0)) }
        guard written >= 0 else {
            throw CgroupUnavailable(description: "cannot write \(path)/\(file): \(errnoDescription(errno))")
        }
    }

    private func events() -> [Substring: Substring] {
        guard let text = readSmallFile(path + "/cgroup.events") else { return [:] }
        return parseEvents(text)
    }

    /// cgroup.events raises POLLPRI when it changes, so this sleeps in poll(2) rather than spinning.
    private func waitForEvent(_ key: Substring, _ value: Substring, timeoutMilliseconds: Int32) -> Bool {
        let fd = open(path + "/cgroup.events", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var start = timespec()
        clock_gettime(CLOCK_MONOTONIC, &start)
        while true {
            var buffer = [UInt8](repeating: 0, count: 512)
            let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
            if count > 0 {
                let text = String(decoding: buffer[0..<count], as: UTF8.self)
                if parseEvents(text)[key] == value { return true }
            }
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            let elapsed = Int32((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1_000_000)
            let remaining = timeoutMilliseconds - elapsed
            if remaining <= 0 { return false }
            // The kernel rate-limits cgroup.events notifications to one per 10 ms, while a freeze usually completes
            // in tens of microseconds: look again every 100 µs for the first 2 ms, then rely on the notification.
            var descriptor = pollfd(fd: fd, events: Int16(POLLPRI), revents: 0)
            if elapsed < 2 {
                _ = corral_poll_microseconds(&descriptor, 1, 100)
            } else {
                _ = poll(&descriptor, 1, remaining)
            }
        }
    }

    private func parseEvents(_ text: String) -> [Substring: Substring] {
        var result: [Substring: Substring] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2 { result[parts[0]] = parts[1] }
        }
        return result
    }
}

/// Reads a small file (procfs, cgroupfs) whole; nil when it cannot be opened.
public func readSmallFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var data: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 16384)
    while true {
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { break }
        data.append(contentsOf: buffer[0..<count])
    }
    return String(decoding: data, as: UTF8.self)
}

extension String {
    fileprivate func replacingDoubleSlashes() -> String {
        var result = self
        while result.contains("//") {
            result = result.replacing("//", with: "/")
        }
        if result.count > 1 && result.hasSuffix("/") { result.removeLast() }
        return result
    }
}
