import CorralJSON
import Glibc

/// `wait_process` / `wait_for_process`: a process (by pid, or by name) is running or has exited.
public struct ProcessCondition: Sendable, Equatable {
    public enum State: String, Sendable, CaseIterable { case running, exited }

    public var pid: Int32?
    public var name: String?
    public var state: State

    static let fields: Set<String> = ["pid", "name", "state"]
    static let matchLimit = 20

    init(_ reader: FieldReader) throws(ConditionError) {
        try reader.allowOnly(Self.fields)
        let pid = try reader.optionalInt("pid")
        name = try reader.optionalString("name")
        if name?.isEmpty == true { name = nil }
        guard pid != nil || name != nil else { throw reader.error("requires pid or name") }
        if let pid {
            guard pid > 0, pid <= Int(Int32.max) else { throw reader.error("pid must be a positive process id, got \(pid)") }
            self.pid = Int32(pid)
        }
        state = try reader.choice("state", default: State.running)
    }

    var jsonValue: JSONValue {
        ["pid": pid.map { .int(Int($0)) } ?? .null, "name": name.json, "state": .string(state.rawValue)]
    }

    /// One check, from /proc (the host's, as mounted: a watcher in its own PID namespace still sees every pid).
    /// Given both a pid and a name, the process must have both. A zombie has exited (the real server counts it as
    /// running, one of the faults the mock must not have).
    public func check() -> CheckResult {
        var matches: [JSONValue] = []
        var count = 0
        if let pid {
            if let entry = Self.entry(pid), entry.status != "zombie",
                name.map({ entry.name.lowercased() == $0.lowercased() }) ?? true
            {
                count = 1
                matches.append(entry.json)
            }
        } else if let name, let directory = opendir("/proc") {
            defer { closedir(directory) }
            let wanted = name.lowercased()
            while let item = readdir(directory) {
                let text = withUnsafeBytes(of: item.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                guard let number = Int32(text), let entry = Self.entry(number), entry.status != "zombie",
                    entry.name.lowercased() == wanted
                else { continue }
                count += 1
                if matches.count < Self.matchLimit { matches.append(entry.json) }
            }
        }
        let met = state == .running ? count > 0 : count == 0
        return CheckResult(
            conditionMet: met,
            lastResult: [
                "pid": pid.map { .int(Int($0)) } ?? .null, "name": .string(name ?? ""), "state": .string(state.rawValue),
                "matched_count": .int(count), "matches": .array(matches),
            ])
    }

    private struct Entry {
        var pid: Int32
        var name: String
        var status: String
        var json: JSONValue { ["pid": .int(Int(pid)), "name": .string(name), "status": .string(status)] }
    }

    /// The name and state from /proc/PID/stat ("PID (NAME) S …"; the name may itself hold parentheses).
    private static func entry(_ pid: Int32) -> Entry? {
        let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 512)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        let bytes = buffer[0..<count]
        guard let open = bytes.firstIndex(of: UInt8(ascii: "(")), let close = bytes.lastIndex(of: UInt8(ascii: ")")),
            close + 2 < bytes.endIndex
        else { return nil }
        let name = String(decoding: bytes[(open + 1)..<close], as: UTF8.self)
        let states: [UInt8: String] = [
            UInt8(ascii: "R"): "running", UInt8(ascii: "S"): "sleeping", UInt8(ascii: "D"): "disk-sleep",
            UInt8(ascii: "Z"): "zombie", UInt8(ascii: "T"): "stopped", UInt8(ascii: "t"): "tracing-stop",
            UInt8(ascii: "X"): "dead", UInt8(ascii: "I"): "idle", UInt8(ascii: "P"): "parked",
        ]
        return Entry(pid: pid, name: name, status: states[bytes[close + 2]] ?? "unknown")
    }
}
