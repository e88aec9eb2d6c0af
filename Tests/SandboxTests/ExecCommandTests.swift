import Foundation
import XCTest

/// `corral exec` end to end: the built binary, real confinement, real exit statuses.
final class ExecCommandTests: XCTestCase {
    private func corral(_ arguments: [String], stdin: String? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("corral")
        guard FileManager.default.isExecutableFile(atPath: executable.path) else {
            throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: executable.path])
        }
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        // As root, the command runs as the task user: start it where that user may write.
        process.currentDirectoryURL = URL(fileURLWithPath: try Self.taskUserDirectory())
        let out = Pipe()
        let err = Pipe()
        let input = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = input
        try process.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
    }

    /// A scratch directory owned by the default task user (uid 65530), made once.
    private static func taskUserDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("corral-exec-cwd").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        chmod(path, 0o755)
        chown(path, 65530, 65530)
        return path
    }

    func testExitStatusesPassThrough() throws {
        XCTAssertEqual(try corral(["exec", "--", "/bin/sh", "-c", "exit 3"]).status, 3)
        XCTAssertEqual(try corral(["exec", "--", "/bin/sh", "-c", "kill -TERM $$"]).status, 128 + SIGTERM)
        XCTAssertEqual(try corral(["exec", "--", "/nonexistent/program"]).status, 127)
    }

    func testStandardStreamsPassThroughAndTheFilterIsActive() throws {
        let result = try corral(
            ["exec", "--profile", "strict", "--", "/bin/sh", "-c", "cat; grep '^Seccomp:' /proc/self/status; echo e >&2"],
            stdin: "from stdin\n")
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertEqual(result.stdout, "from stdin\nSeccomp:\t2\n")
        XCTAssertEqual(result.stderr, "e\n")
    }

    func testNoNetworkRefusesAnInetSocket() throws {
        let result = try corral([
            "exec", "--no-network", "--", "python3", "-c",
            "import socket\ntry:\n socket.socket(socket.AF_INET, socket.SOCK_STREAM); print('socket-allowed')\nexcept OSError as e:\n print('denied', e.errno)",
        ])
        XCTAssertEqual(result.stdout, "denied 1\n", result.stderr)
    }

    func testLimitsAndLandlockWriteRules() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("corral-exec-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        chown(directory.path, 65530, 65530)
        defer { try? FileManager.default.removeItem(at: directory) }
        let limited = try corral(["exec", "--limit", "nofile=32", "--", "/bin/sh", "-c", "ulimit -n"])
        XCTAssertEqual(limited.stdout, "32\n")
        let target = directory.appendingPathComponent("f").path
        let denied = try corral(["exec", "--require", "landlock", "--", "/bin/sh", "-c", "echo x > \(target)"])
        XCTAssertNotEqual(denied.status, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: target))
        let allowed = try corral([
            "exec", "--require", "landlock", "--allow-write", directory.path, "--", "/bin/sh", "-c", "echo x > \(target)",
        ])
        XCTAssertEqual(allowed.status, 0, allowed.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: target))
    }

    func testPrintFilterAndBadInput() throws {
        let filter = try corral(["exec", "--print-filter", "default"])
        XCTAssertEqual(filter.status, 0)
        XCTAssertTrue(filter.stdout.contains("ptrace"), String(filter.stdout.prefix(400)))
        let unknown = try corral(["exec", "--profile", "no-such-profile", "--", "/bin/true"])
        XCTAssertEqual(unknown.status, 125)
        XCTAssertTrue(unknown.stderr.contains("no-such-profile"), unknown.stderr)
        let looser = try corral(["exec", "--limit", "bogus=1", "--", "/bin/true"])
        XCTAssertNotEqual(looser.status, 0)
        XCTAssertFalse(looser.stderr.isEmpty)
    }
}
