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
    /// Where each limit's controller is: enabled for the task cgroups in the v2 tree, or a v1 hierarchy (a hybrid
    /// setup) with our directory `<v1 mount>/<our v1 cgroup>/<name>` in it. A limit whose controller is in neither
    /// cannot be enforced here, and a task asking for it is refused.
    public let controllers: [CgroupController: ControllerLocation]

    public enum ControllerLocation: Sendable, Equatable {
        case unified
        case v1(root: String)
    }

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
        return .success(CgroupHierarchy(root: root, controllers: locateControllers(unifiedRoot: root, name: name)))
    }

    /// Enables what the v2 tree delegates to us; looks for the rest in v1 hierarchies we may write.
    private static func locateControllers(unifiedRoot: String, name: String) -> [CgroupController: ControllerLocation] {
        var found: [CgroupController: ControllerLocation] = [:]
        let available = Set((readSmallFile(unifiedRoot + "/cgroup.controllers") ?? "").split(whereSeparator: \.isWhitespace))
        for controller in CgroupController.allCases where available.contains(Substring(controller.v2Name)) {
            let fd = open(unifiedRoot + "/cgroup.subtree_control", O_WRONLY | O_CLOEXEC)
            if fd >= 0 {
                let text = "+" + controller.v2Name
                if text.withCString({ Glibc.write(fd, $0, strlen($0)) }) >= 0 { found[controller] = .unified }
                close(fd)
            }
        }
        guard let table = readSmallFile("/proc/self/cgroup") else { return found }
        let mounts = v1Mounts()
        for line in table.split(separator: "\n") {
            // ID:CONTROLLERS:PATH
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3, !fields[1].isEmpty else { continue }
            for controllerName in fields[1].split(separator: ",") {
                guard let controller = CgroupController(v1Name: String(controllerName)), found[controller] == nil,
                    let mount = mounts[String(controllerName)]
                else { continue }
                let relative = fields[2].hasPrefix(mount.root) ? String(fields[2].dropFirst(mount.root.count)) : String(fields[2])
                let root = (mount.mountPoint + "/" + relative + "/" + name).replacingDoubleSlashes()
                if mkdir(root, 0o755) != 0 && errno != EEXIST { continue }
                guard access(root + "/cgroup.procs", W_OK) == 0 else { continue }
                if controller == .memory {
                    // Children of our directory are limited and accounted on their own (v1 default: hierarchical).
                    _ = writeFile(root + "/memory.use_hierarchy", "1")
                }
                found[controller] = .v1(root: root)
            }
        }
        return found
    }

    private static func v1Mounts() -> [String: (mountPoint: String, root: String)] {
        guard let text = readSmallFile("/proc/self/mountinfo") else { return [:] }
        var result: [String: (mountPoint: String, root: String)] = [:]
        for line in text.split(separator: "\n") {
            let halves = line.split(separator: " - ", maxSplits: 1)
            guard halves.count == 2 else { continue }
            let tail = halves[1].split(separator: " ")
            guard tail.count >= 3, tail[0] == "cgroup" else { continue }
            let fields = halves[0].split(separator: " ")
            guard fields.count >= 5 else { continue }
            for option in tail[2].split(separator: ",") where CgroupController(v1Name: String(option)) != nil {
                result[String(option)] = (unescapeMountField(String(fields[4])), unescapeMountField(String(fields[3])))
            }
        }
        return result
    }

    /// Creates the cgroup of one task, with its limits (only in the controllers the limits need: joining a v1
    /// cgroup costs the spawn an RCU grace period after an idle spell, 10 ms and more).
    /// `accounting`: controllers to join without a limit, for their figures (peak memory).
    public func createTaskCgroup(
        named name: String, limits: CgroupLimits = CgroupLimits(), accounting: Set<CgroupController> = []
    ) throws(CgroupUnavailable) -> TaskCgroup {
        let cgroup = try createTaskCgroup(named: name)
        do throws(CgroupUnavailable) {
            try apply(limits, accounting: accounting, to: cgroup, named: name)
        } catch {
            cgroup.remove()
            throw error
        }
        return cgroup
    }

    /// Creates the cgroup of one task without limits; `apply` gives it its limits before its first spawn.
    public func createTaskCgroup(named name: String) throws(CgroupUnavailable) -> TaskCgroup {
        let path = root + "/" + name
        if mkdir(path, 0o755) != 0 && errno != EEXIST {
            throw CgroupUnavailable(description: "cannot create \(path): \(errnoDescription(errno))")
        }
        let procsFD = open(path + "/cgroup.procs", O_WRONLY | O_CLOEXEC)
        let directoryFD = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard procsFD >= 0, directoryFD >= 0 else {
            let error = errno
            if procsFD >= 0 { close(procsFD) }
            if directoryFD >= 0 { close(directoryFD) }
            rmdir(path)
            throw CgroupUnavailable(description: "cannot open \(path): \(errnoDescription(error))")
        }
        let cgroup = TaskCgroup(path: path, procsFD: procsFD, directoryFD: directoryFD)
        cgroup.keepReadersOpen()
        return cgroup
    }

    /// Sets `limits` on a task cgroup made by `createTaskCgroup(named:)` that no process has joined yet. On an error
    /// the cgroup may be half limited: remove it.
    public func apply(
        _ limits: CgroupLimits, accounting: Set<CgroupController> = [], to cgroup: TaskCgroup, named name: String
    ) throws(CgroupUnavailable) {
        let wanted = limits.controllers + accounting.subtracting(limits.controllers).sorted { $0.rawValue < $1.rawValue }
        for controller in wanted {
            guard let location = controllers[controller] else {
                if !limits.controllers.contains(controller) { continue }  // figures only: do without
                throw CgroupUnavailable(
                    description: "the \(controller.limitName) limit needs the cgroup '\(controller.v2Name)' controller, "
                        + "which this machine does not delegate to the server")
            }
            var directory = cgroup.path
            if case .v1(let v1Root) = location {
                directory = v1Root + "/" + name
                try cgroup.addV1(directory)
            }
            for (file, value, optional) in limits.settings(for: controller, unified: location == .unified) {
                guard writeFile(directory + "/" + file, value) || (optional && errno == ENOENT) else {
                    throw CgroupUnavailable(
                        description: "cannot set \(directory)/\(file) to \(value): \(errnoDescription(errno))")
                }
            }
            cgroup.limited[controller] = directory
        }
    }

    /// Removes the root directory if no task cgroup is left in it.
    public func removeIfEmpty() {
        rmdir(root)
        for case .v1(let v1Root) in controllers.values { rmdir(v1Root) }
    }

    /// Removes a task's v1 directories left after a crash.
    public func removeLeftoverV1(named name: String) {
        for case .v1(let v1Root) in controllers.values { rmdir(v1Root + "/" + name) }
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
public final class TaskCgroup: @unchecked Sendable {
    // @unchecked: `limited` and the v1 lists are filled before the cgroup's first spawn, by its one owner (the
    // supervisor that made it, or took it ready-made), and only read after; `remove` clears the descriptors, by the
    // same owner, once nothing uses them.
    public let path: String
    /// Open `cgroup.procs`: the child writes "0" to it between clone and exec (where clone3 cannot put it there at
    /// birth), joining the cgroup before it runs any code of the task. -1 for a cgroup found after a restart.
    public private(set) var procsFD: Int32
    /// The directory, for clone3(CLONE_INTO_CGROUP) and reading the cgroup's files. -1 for a cgroup found after a
    /// restart, and once removed.
    public private(set) var directoryFD: Int32
    /// `cgroup.events` and `cpu.stat`, opened when the cgroup is made (ahead of its task) and read with `pread`: an
    /// exit reads both before its waiters are answered, and after an idle spell each open was most of a read (42 µs
    /// for `cgroup.events`, against 2 µs warm; a kept descriptor reads it in 0.1 µs warm). -1: read by path.
    private var eventsFD: Int32 = -1
    private var cpuStatFD: Int32 = -1
    /// `cgroup.kill`, opened with the others: a server that has run out of descriptors (many tasks, a low
    /// `ulimit -n`) can still end a task's whole tree. -1: opened by path.
    private var killFD: Int32 = -1
    /// cgroup.procs of the task's v1 cgroups (hybrid hierarchy), joined by the child.
    public private(set) var v1ProcsFDs: [Int32] = []
    public private(set) var v1Paths: [String] = []
    /// The directory holding each limited controller's files.
    public fileprivate(set) var limited: [CgroupController: String] = [:]

    init(path: String, procsFD: Int32, directoryFD: Int32) {
        self.path = path
        self.procsFD = procsFD
        self.directoryFD = directoryFD
    }

    func keepReadersOpen() {
        guard directoryFD >= 0 else { return }
        eventsFD = openat(directoryFD, "cgroup.events", O_RDONLY | O_CLOEXEC)
        cpuStatFD = openat(directoryFD, "cpu.stat", O_RDONLY | O_CLOEXEC)
        killFD = openat(directoryFD, "cgroup.kill", O_WRONLY | O_CLOEXEC)
    }

    fileprivate func addV1(_ directory: String) throws(CgroupUnavailable) {
        if mkdir(directory, 0o755) != 0 && errno != EEXIST {
            throw CgroupUnavailable(description: "cannot create \(directory): \(errnoDescription(errno))")
        }
        v1Paths.append(directory)
        let fd = open(directory + "/cgroup.procs", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw CgroupUnavailable(description: "cannot open \(directory)/cgroup.procs: \(errnoDescription(errno))")
        }
        v1ProcsFDs.append(fd)
    }

    /// A cgroup found on disk (after a restart); it is only killed and removed.
    public static func existing(path: String) -> TaskCgroup? {
        guard access(path + "/cgroup.kill", F_OK) == 0 else { return nil }
        return TaskCgroup(path: path, procsFD: -1, directoryFD: -1)
    }

    /// What the task used, read after it ended (see `TaskAccounting`).
    public func accounting() -> CgroupAccounting {
        var result = CgroupAccounting()
        if let directory = limited[.memory] {
            let v2 = directory == path
            result.peakMemoryBytes = readNumber(directory + (v2 ? "/memory.peak" : "/memory.max_usage_in_bytes"))
            let events = readSmallFile(directory + (v2 ? "/memory.events" : "/memory.oom_control")) ?? ""
            result.oomKills = Self.field("oom_kill", in: events)
        }
        if let directory = limited[.pids] {
            let events = readSmallFile(directory + "/pids.events") ?? ""
            result.processLimitHits = Self.field("max", in: events)
        }
        return result
    }

    private static func field(_ key: String, in text: String) -> Int64? {
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2 && parts[0] == key { return Int64(parts[1]) }
        }
        return nil
    }

    private func readNumber(_ file: String) -> Int64? {
        readSmallFile(file).flatMap { Int64($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// Freezes (or thaws) every process and waits until the kernel reports it done.
    public func setFrozen(_ frozen: Bool, timeoutMilliseconds: Int32 = 5000) throws(CgroupUnavailable) {
        try write(frozen ? "1" : "0", to: "cgroup.freeze")
        guard waitForEvent("frozen", frozen ? "1" : "0", timeoutMilliseconds: timeoutMilliseconds) else {
            throw CgroupUnavailable(description: "\(path) did not become \(frozen ? "frozen" : "thawed") in time")
        }
    }

    /// SIGKILLs every process in the cgroup (frozen ones too), through the kept descriptor when there is one.
    public func killAll() throws(CgroupUnavailable) {
        guard killFD >= 0 else { return try write("1", to: "cgroup.kill") }
        guard pwrite(killFD, "1", 1, 0) == 1 else {
            throw CgroupUnavailable(description: "cannot write \(path)/cgroup.kill: \(errnoDescription(errno))")
        }
    }

    /// Waits until no process is left in the cgroup. Returns false on timeout.
    @discardableResult
    public func waitUntilEmpty(timeoutMilliseconds: Int32 = 5000) -> Bool {
        waitForEvent("populated", "0", timeoutMilliseconds: timeoutMilliseconds)
    }

    public var isPopulated: Bool {
        events()["populated"] == "1"
    }

    /// True only when cgroup.events says no process is left; false when it says otherwise or cannot be read.
    public var isEmpty: Bool {
        events()["populated"] == "0"
    }

    public var isFrozen: Bool {
        events()["frozen"] == "1"
    }

    /// The pids of every process in the cgroup.
    public func processIDs() -> [pid_t] {
        guard let text = readOwnFile("cgroup.procs") else { return [] }
        return text.split(separator: "\n").compactMap { pid_t($0) }
    }

    /// CPU time used by every process that ever ran in the cgroup, in microseconds (user, system).
    public func cpuUsage() -> (user: Int64, system: Int64)? {
        guard let text = cpuStatFD >= 0 ? read(kept: cpuStatFD) : readOwnFile("cpu.stat") else { return nil }
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

    /// Closes the descriptors and removes the (empty) directories.
    public func remove() {
        // -1 after closing: a read after the removal must not go through whatever reuses the numbers.
        for fd in [procsFD, directoryFD, eventsFD, cpuStatFD, killFD] where fd >= 0 { close(fd) }
        procsFD = -1
        directoryFD = -1
        eventsFD = -1
        cpuStatFD = -1
        killFD = -1
        for fd in v1ProcsFDs { close(fd) }
        v1ProcsFDs = []
        for directory in v1Paths { rmdir(directory) }
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
        guard let text = eventsFD >= 0 ? read(kept: eventsFD) : readOwnFile("cgroup.events") else { return [:] }
        return parseEvents(text)
    }

    /// A file of this cgroup's own directory, opened from the directory's descriptor where there is one: an exit
    /// reads two of them before its waiters are answered, and each walk of the full path was most of a read.
    private func readOwnFile(_ name: String) -> String? {
        guard directoryFD >= 0 else { return readSmallFile(path + "/" + name) }
        return readSmallFile(at: openat(directoryFD, name, O_RDONLY | O_CLOEXEC))
    }

    /// A kept file read whole from its start (cgroup files regenerate their text at offset 0).
    private func read(kept fd: Int32) -> String? {
        var data: [UInt8] = []
        withUnsafeTemporaryAllocation(byteCount: 4096, alignment: 1) { buffer in
            var offset = 0
            while true {
                let count = pread(fd, buffer.baseAddress, buffer.count, off_t(offset))
                if count < 0 && errno == EINTR { continue }
                if count <= 0 { break }
                data.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
                offset += count
            }
        }
        return data.isEmpty ? nil : String(decoding: data, as: UTF8.self)
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

/// Writes a value to a cgroupfs or procfs file; false with errno set when refused.
func writeFile(_ path: String, _ value: String) -> Bool {
    let fd = open(path, O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    return value.withCString { Glibc.write(fd, $0, strlen($0)) } >= 0
}

/// Reads a small file (procfs, cgroupfs) whole; nil when it cannot be opened.
public func readSmallFile(_ path: String) -> String? {
    readSmallFile(at: open(path, O_RDONLY | O_CLOEXEC))
}

/// Reads an opened small file whole and closes it; nil for a descriptor below 0 (a failed open).
func readSmallFile(at fd: Int32) -> String? {
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var data: [UInt8] = []
    // Not zeroed: `read` fills what is used (these files are a few hundred bytes; a bigger one takes more reads).
    withUnsafeTemporaryAllocation(byteCount: 4096, alignment: 1) { buffer in
        while true {
            let count = read(fd, buffer.baseAddress, buffer.count)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            data.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
        }
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
