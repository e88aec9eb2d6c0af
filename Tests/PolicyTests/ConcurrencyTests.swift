import CorralJSON
import Dispatch
import Foundation
import Synchronization
import Testing

@testable import Policy

final class Tally: Sendable {
    private let state = Mutex<(allowed: Int, denied: Int)>((0, 0))
    func add(_ decision: Decision) {
        state.withLock { decision.isAllowed ? ($0.allowed += 1) : ($0.denied += 1) }
    }
    var allowed: Int { state.withLock { $0.allowed } }
    var denied: Int { state.withLock { $0.denied } }
}

@Suite struct ConcurrencyTests {
    static let policyText = toolPolicy(
        "pause_background_task", #"{"limits": [{"counter": "pause_rate", "window": "minute", "max": 10, "scope": "grant"}]}"#)

    /// 16 threads hammer one `max: 10` counter in one engine: exactly 10 pass per window, in two windows.
    @Test func sixteenCallersInMemory() async throws {
        let clock = ManualClock(milliseconds: epoch2026)
        let engine = try evaluator(Self.policyText, store: MemoryPolicyStore(), clock: clock)
        for window in 0..<2 {
            let tally = Tally()
            await concurrently(16) { _ in
                for _ in 0..<20 {
                    await tally.add(engine.decide(tool: "pause_background_task", arguments: [:], identity: CallIdentity(grant: "g")))
                }
            }
            #expect(tally.allowed == 10, "window \(window)")
            #expect(tally.denied == 16 * 20 - 10)
            clock.advance(milliseconds: 60_000)
        }
    }

    /// 16 threads, each with its own SQLite connection to one file: the IMMEDIATE transactions keep it exact.
    @Test func sixteenCallersInSQLite() async throws {
        let path = temporarySQLitePath()
        defer { removeSQLite(path) }
        let clock = ManualClock(milliseconds: epoch2026)
        let policy = try load(Self.policyText)
        let engines = try (0..<16).map { _ in PolicyEvaluator(policy: policy, store: try SQLitePolicyStore(path: path), clock: clock) }
        for window in 0..<2 {
            let tally = Tally()
            await concurrently(16) { index in
                for _ in 0..<8 {
                    await tally.add(engines[index].decide(tool: "pause_background_task", arguments: [:], identity: CallIdentity(grant: "g")))
                }
            }
            #expect(tally.allowed == 10, "window \(window)")
            #expect(tally.denied == 16 * 8 - 10)
            clock.advance(milliseconds: 60_000)
        }
        // And one shared connection used from 16 threads.
        let shared = PolicyEvaluator(policy: policy, store: try SQLitePolicyStore(path: path), clock: clock)
        let tally = Tally()
        await concurrently(16) { _ in
            for _ in 0..<4 { await tally.add(shared.decide(tool: "pause_background_task", arguments: [:], identity: CallIdentity(grant: "g"))) }
        }
        #expect(tally.allowed == 10)
    }

    /// Several `corral policy explain --store sqlite:PATH` processes on one file: exactly 10 allowed in total.
    @Test func severalProcessesOnOneSQLiteFile() async throws {
        let binary = try #require(Self.corralBinary(), "the corral executable was not found next to the test bundle")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("corral-policy-mp-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let policyFile = directory.appendingPathComponent("policy.json")
        // A day window: the run cannot straddle a boundary unless it starts seconds before UTC midnight (checked below).
        try toolPolicy("pause_background_task", #"{"limits": [{"counter": "pause_rate", "window": "day", "max": 10, "scope": "grant"}]}"#)
            .write(to: policyFile, atomically: true, encoding: .utf8)
        let database = directory.appendingPathComponent("counters.sqlite").path

        let day = { Int(Date().timeIntervalSince1970) / 86400 }
        let startDay = day()
        let processes = try (0..<6).map { _ in
            let process = Process()
            process.executableURL = binary
            process.arguments = [
                "policy", "explain", policyFile.path, "--tool", "pause_background_task", "--grant", "agent-1",
                "--repeat", "8", "--store", "sqlite:\(database)", "--quiet",
            ]
            let output = Pipe(), errors = Pipe()
            process.standardOutput = output
            process.standardError = errors  // a few lines at most: read after the output without filling the pipe
            try process.run()
            return (process, output, errors)
        }
        var allowed = 0, denied = 0
        for (process, output, errors) in processes {
            let data = output.fileHandleForReading.readDataToEndOfFile()
            let complaint = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus == 0, "\(complaint)")
            let text = String(decoding: data, as: UTF8.self)
            let summary = try #require(text.split(separator: "\n").last(where: { $0.hasPrefix("allowed=") }), "\(text)")
            let fields = Dictionary(uniqueKeysWithValues: summary.split(separator: " ").compactMap { field -> (String, Int)? in
                let parts = field.split(separator: "=", maxSplits: 1)
                guard parts.count == 2, let value = Int(parts[1]) else { return nil }
                return (String(parts[0]), value)
            })
            allowed += fields["allowed"] ?? -1000
            denied += fields["denied"] ?? -1000
        }
        guard day() == startDay else { return }  // crossed UTC midnight: two windows, nothing to assert
        #expect(allowed == 10)
        #expect(denied == 6 * 8 - 10)
    }

    /// The built `corral` next to the test bundle (`.build/<triple>/debug/`), else `<package>/.build/debug/corral`.
    static func corralBinary() -> URL? {
        var candidates: [URL] = []
        if let override = ProcessInfo.processInfo.environment["CORRAL_BINARY"] { candidates.append(URL(fileURLWithPath: override)) }
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<4 {  // the bundle may be a directory (…/X.xctest/Contents/MacOS/X) or a file
            candidates.append(directory.appendingPathComponent("corral"))
            directory = directory.deletingLastPathComponent()
        }
        candidates.append(packageRoot.appendingPathComponent(".build/debug/corral"))
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }
}

/// Runs `body` for 0..<count as that many concurrent tasks, and waits for all.
func concurrently(_ count: Int, _ body: @escaping @Sendable (Int) async -> Void) async {
    await withTaskGroup(of: Void.self) { group in
        for index in 0..<count { group.addTask { await body(index) } }
    }
}
