import CCorral
import Glibc

/// What `/proc/PID/stat` says about one process.
public struct ProcessStatus: Sendable, Equatable {
    public var pid: pid_t
    /// R, S, D, T (stopped), t (traced), Z (zombie), X, I
    public var state: Character
    public var parentPID: pid_t
    public var processGroup: pid_t
    public var session: pid_t
    /// User plus system CPU time in clock ticks.
    public var cpuTicks: UInt64
    /// Clock ticks since boot.
    public var startTime: UInt64

    public var isStopped: Bool { state == "T" || state == "t" }
    public var isGone: Bool { state == "Z" || state == "X" }
}

/// Reads of `/proc` used where no cgroup holds the task's processes.
public enum ProcessTable {
    public static func status(of pid: pid_t) -> ProcessStatus? {
        guard let text = readSmallFile("/proc/\(pid)/stat"), let close = text.lastIndex(of: ")") else { return nil }
        // Fields after the command name, which may itself hold spaces and ')'.
        let fields = text[text.index(after: close)...].split(separator: " ")
        // fields[0] is field 3 (state): field N is fields[N - 3].
        guard fields.count > 19, let state = fields[0].first,
            let parent = pid_t(fields[1]), let group = pid_t(fields[2]), let session = pid_t(fields[3]),
            let user = UInt64(fields[11]), let system = UInt64(fields[12]), let start = UInt64(fields[19])
        else { return nil }
        return ProcessStatus(
            pid: pid, state: state, parentPID: parent, processGroup: group, session: session,
            cpuTicks: user + system, startTime: start)
    }

    /// Every process whose process group is `group`.
    public static func members(ofGroup group: pid_t) -> [ProcessStatus] {
        allPIDs().compactMap { pid in
            guard let status = status(of: pid), status.processGroup == group else { return nil }
            return status
        }
    }

    public static func allPIDs() -> [pid_t] {
        guard let dir = opendir("/proc") else { return [] }
        defer { closedir(dir) }
        var pids: [pid_t] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if let pid = pid_t(name) { pids.append(pid) }
        }
        return pids
    }

    /// Clock ticks per second, for `cpuTicks`.
    public static let ticksPerSecond: Int = Int(sysconf(Int32(_SC_CLK_TCK)))
}
