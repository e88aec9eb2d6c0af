/// A cgroup controller behind one of the limits a task may have.
public enum CgroupController: String, Sendable, CaseIterable, Hashable {
    case pids, memory, cpu

    var v2Name: String { rawValue }

    init?(v1Name: String) { self.init(rawValue: v1Name) }

    /// The limit's key in profiles and `sandbox.limits`.
    var limitName: String {
        switch self {
        case .pids: return "processes"
        case .memory: return "memory"
        case .cpu: return "cpu_percent"
        }
    }
}

/// Limits enforced by the task's cgroup, which a task cannot raise or leave whatever its uid (unlike RLIMIT_NPROC,
/// which holds nothing for root and counts every process of the uid across tasks).
public struct CgroupLimits: Sendable, Hashable, Codable {
    /// Processes and threads at once (`pids.max`).
    public var processes: UInt64?
    /// Bytes of memory, page cache included (`memory.max`, v1 `memory.limit_in_bytes`); the task is OOM-killed past it.
    public var memory: UInt64?
    /// Share of one CPU, in percent (`cpu.max`, v1 `cpu.cfs_quota_us`); 200 is two CPUs.
    public var cpuPercent: UInt64?

    public static let keys = ["processes", "memory", "cpu_percent"]

    /// The largest value each key accepts (a request is outside input: it must not overflow what it is turned into).
    public static let maxima: [String: UInt64] = [
        "processes": 4_194_304,  // PID_MAX_LIMIT
        "memory": 1 << 50,  // 1 PiB
        "cpu_percent": 100_000,  // a thousand CPUs
    ]

    /// Why a value cannot be used for `key`; nil when it can.
    public static func refusal(_ key: String, _ value: UInt64) -> String? {
        if value == 0 { return "must be positive" }
        if let maximum = maxima[key], value > maximum { return "must be at most \(maximum)" }
        return nil
    }

    public init(processes: UInt64? = nil, memory: UInt64? = nil, cpuPercent: UInt64? = nil) {
        self.processes = processes
        self.memory = memory
        self.cpuPercent = cpuPercent
    }

    enum CodingKeys: String, CodingKey {
        case processes, memory, cpuPercent = "cpu_percent"
    }

    public var isEmpty: Bool { processes == nil && memory == nil && cpuPercent == nil }

    public subscript(key: String) -> UInt64? {
        get {
            switch key {
            case "processes": return processes
            case "memory": return memory
            case "cpu_percent": return cpuPercent
            default: return nil
            }
        }
        set {
            switch key {
            case "processes": processes = newValue
            case "memory": memory = newValue
            case "cpu_percent": cpuPercent = newValue
            default: break
            }
        }
    }

    /// Each limit at most the other's (a request only tightens its floor).
    public func tightened(by other: CgroupLimits) -> CgroupLimits {
        func least(_ a: UInt64?, _ b: UInt64?) -> UInt64? {
            switch (a, b) {
            case (let a?, let b?): return Swift.min(a, b)
            default: return a ?? b
            }
        }
        return CgroupLimits(
            processes: least(processes, other.processes), memory: least(memory, other.memory),
            cpuPercent: least(cpuPercent, other.cpuPercent))
    }

    /// "processes=16,memory=67108864" for the task's protections.
    public var summary: String {
        CgroupLimits.keys.compactMap { key in self[key].map { "\(key)=\($0)" } }.joined(separator: ",")
    }

    var controllers: [CgroupController] {
        var result: [CgroupController] = []
        if processes != nil { result.append(.pids) }
        if memory != nil { result.append(.memory) }
        if cpuPercent != nil { result.append(.cpu) }
        return result
    }

    /// The files (and values) that set this limit in a controller's directory; a file marked optional may be missing
    /// (swap accounting is a kernel option).
    func settings(for controller: CgroupController, unified: Bool) -> [(file: String, value: String, optional: Bool)] {
        let period: UInt64 = 100_000
        switch controller {
        case .pids:
            return processes.map { [("pids.max", String($0), false)] } ?? []
        case .memory:
            guard let memory else { return [] }
            // No swap either, where the kernel accounts it: the limit is on memory, not on what can be paged out.
            return unified
                ? [("memory.max", String(memory), false), ("memory.swap.max", "0", true)]
                : [("memory.limit_in_bytes", String(memory), false), ("memory.memsw.limit_in_bytes", String(memory), true)]
        case .cpu:
            guard let cpuPercent else { return [] }
            let (product, overflow) = cpuPercent.multipliedReportingOverflow(by: period)
            let quota = Swift.max(1000, overflow ? UInt64.max / 100 : product / 100)
            return unified
                ? [("cpu.max", "\(quota) \(period)", false)]
                : [("cpu.cfs_period_us", String(period), false), ("cpu.cfs_quota_us", String(quota), false)]
        }
    }
}

/// What a task's cgroup counted, read when it has ended.
public struct CgroupAccounting: Sendable, Equatable {
    /// The most memory the task's processes held at once (with a memory cgroup).
    public var peakMemoryBytes: Int64?
    /// How many times the memory limit made the kernel kill one of the task's processes.
    public var oomKills: Int64?
    /// How many times a fork failed at the process limit.
    public var processLimitHits: Int64?

    public init() {}
}
