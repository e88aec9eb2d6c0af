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
