import CCorral
import Foundation
import Glibc
import XCTest

@testable import Sandbox

/// Runs commands confined by a profile and compiles the C probe, for the sandbox tests.
enum SandboxHarness {
    static let lock = NSLock()
    nonisolated(unsafe) static var probePath: String?

    static var packageRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
    }

    /// Compiles Resources/probe.c once per test run into a temp directory.
    static func probe() throws -> String {
        lock.lock()
        defer { lock.unlock() }
        if let probePath { return probePath }
        let directory = try makeDirectory("corral-probe")
        let output = directory + "/probe"
        let source = packageRoot + "/Tests/SandboxTests/Resources/probe.c"
        let result = try runUnconfined(["/usr/bin/cc", "-O1", "-o", output, source])
        guard result.status == 0 else { throw HarnessError("cc failed: \(result.output)") }
        probePath = output
        return output
    }

    static func removeProbe() {
        lock.lock()
        defer { lock.unlock() }
        if let probePath { try? FileManager.default.removeItem(atPath: (probePath as NSString).deletingLastPathComponent) }
        probePath = nil
    }

    struct HarnessError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    static func makeDirectory(_ prefix: String) throws -> String {
        var template = Array((NSTemporaryDirectory() + "/\(prefix).XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw HarnessError("mkdtemp failed") }
        return String(cString: made)
    }

    static func runUnconfined(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let (exit, output) = try run(arguments, confinement: .none)
        return (exit.shellStatus, output)
    }

    /// Spawns with `profile` prepared for `workingDirectory` (and a temp directory), waits on the pidfd with
    /// poll(2), returns the exit and the combined output.
    static func run(
        _ arguments: [String], profile: SandboxProfile, workingDirectory: String, temporaryDirectory: String? = nil
    ) throws -> (ExitInfo, String, [String]) {
        let prepared = try SandboxPreparation.prepare(
            profile, workingDirectory: workingDirectory, temporaryDirectory: temporaryDirectory)
        defer { prepared.cleanup() }
        let (exit, output) = try run(
            arguments, confinement: prepared.confinement, workingDirectory: workingDirectory,
            temporaryDirectory: temporaryDirectory)
        return (exit, output, prepared.summary)
    }

    static func run(
        _ arguments: [String], confinement: ChildConfinement, workingDirectory: String? = nil,
        temporaryDirectory: String? = nil
    ) throws -> (ExitInfo, String) {
        var fds: [Int32] = [-1, -1]
        guard corral_pipe_cloexec(&fds) == 0 else { throw HarnessError("pipe failed") }
        let devNull = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer { close(devNull) }
        var environment = ["PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workingDirectory ?? "/tmp", "LANG": "C"]
        environment["TMPDIR"] = temporaryDirectory
        let configuration = SpawnConfiguration(
            arguments: arguments, environment: environment,
            workingDirectory: workingDirectory, standardInput: devNull, standardOutput: fds[1], standardError: fds[1],
            confinement: confinement)
        let child: ChildProcess
        do {
            child = try Spawner.spawn(configuration)
        } catch {
            close(fds[0])
            close(fds[1])
            throw error
        }
        close(fds[1])
        var output = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(fds[0], &buffer, buffer.count)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            output.append(contentsOf: buffer[0..<count])
        }
        close(fds[0])
        defer { child.close() }
        while true {
            var descriptor = pollfd(fd: child.pidfd, events: Int16(POLLIN), revents: 0)
            _ = poll(&descriptor, 1, 10_000)
            if let exit = child.reap() { return (exit, String(decoding: output, as: UTF8.self)) }
        }
    }

    /// "name=result errno=X" lines as name → "result errno=X".
    static func parse(_ output: String) -> [String: String] {
        var lines: [String: String] = [:]
        for line in output.split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            lines[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        return lines
    }
}
