import Foundation

/// Percentiles over measured durations, in microseconds.
struct Samples {
    private(set) var values: [Double] = []

    mutating func add(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        values.append(Double(seconds) * 1e6 + Double(attoseconds) / 1e12)
    }

    mutating func add(microseconds: Double) {
        values.append(microseconds)
    }

    func percentile(_ p: Double) -> Double {
        guard !values.isEmpty else { return .nan }
        let sorted = values.sorted()
        let index = min(sorted.count - 1, max(0, Int((p / 100 * Double(sorted.count - 1)).rounded())))
        return sorted[index]
    }

    var median: Double { percentile(50) }
}

/// Prints a row of a fixed-width table.
func row(_ columns: [String], widths: [Int]) {
    var line = ""
    for (index, column) in columns.enumerated() {
        let width = index < widths.count ? widths[index] : 12
        let padded = index == 0
            ? column.padding(toLength: max(width, column.count), withPad: " ", startingAt: 0)
            : String(repeating: " ", count: max(0, width - column.count)) + column
        line += padded
    }
    print(line)
}

func format(_ value: Double, digits: Int = 1) -> String {
    String(format: "%.\(digits)f", value)
}

/// A fresh temporary directory for state that is removed afterwards.
func makeTemporaryDirectory(_ prefix: String) throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// The CPU time a process's threads have run, in µs, from each thread's `schedstat` (nanoseconds, unlike the 10 ms
/// ticks of `/proc/PID/stat`): what a process in a call's path spends per call, apart from how long the machine
/// takes to wake it.
func cpuMicroseconds(of pid: Int32) -> Double? {
    let tasks = "/proc/\(pid)/task"
    guard let threads = try? FileManager.default.contentsOfDirectory(atPath: tasks) else { return nil }
    var total = 0.0
    for thread in threads {
        // A thread that ended between the listing and the read took its time with it: the figure is a floor.
        guard let text = try? String(contentsOfFile: "\(tasks)/\(thread)/schedstat", encoding: .utf8),
            let field = text.split(separator: " ").first, let nanoseconds = Double(field)
        else { continue }
        total += nanoseconds / 1000
    }
    return total
}
