import CCorral
import Foundation
import XCTest

@testable import Sandbox

final class SpawnTests: XCTestCase {
    private func spawnAndWait(_ configuration: SpawnConfiguration) throws -> ExitInfo {
        let child = try Spawner.spawn(configuration)
        defer { child.close() }
        while true {
            if let exit = child.reap() { return exit }
            usleep(1000)
        }
    }

    private func capture(_ arguments: [String], confinement: ChildConfinement = .none) throws -> (ExitInfo, String) {
        var fds: [Int32] = [-1, -1]
        XCTAssertEqual(corral_pipe_cloexec(&fds), 0)
        let devNull = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer { close(devNull) }
        let configuration = SpawnConfiguration(
            arguments: arguments, environment: ["PATH": "/usr/bin:/bin"], standardInput: devNull,
            standardOutput: fds[1], standardError: fds[1], confinement: confinement)
        let exit = try spawnAndWait(configuration)
        close(fds[1])
        var output = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(fds[0], &buffer, buffer.count)
            if count <= 0 { break }
            output.append(contentsOf: buffer[0..<count])
        }
        close(fds[0])
        return (exit, String(decoding: output, as: UTF8.self))
    }

    func testExitStatusAndSignal() throws {
        XCTAssertEqual(try capture(["/bin/sh", "-c", "exit 7"]).0.termination, .exited(7))
        XCTAssertEqual(try capture(["/bin/sh", "-c", "kill -TERM $$"]).0.termination, .signaled(SIGTERM))
    }

    func testPathLookupUsesTheChildEnvironment() throws {
        let (exit, output) = try capture(["echo", "found"])
        XCTAssertEqual(exit.termination, .exited(0))
        XCTAssertEqual(output, "found\n")
    }

    func testResourceLimitsAreAppliedBeforeExec() throws {
        let confinement = ChildConfinement(
            resourceLimits: [ResourceLimit(.openFiles, 64), ResourceLimit(.core, 0)], noNewPrivileges: true)
        let (_, output) = try capture(["/bin/sh", "-c", "ulimit -n; ulimit -c; grep NoNewPrivs /proc/self/status"],
            confinement: confinement)
        XCTAssertEqual(output, "64\n0\nNoNewPrivs:\t1\n")
    }

    func testSignalsAreResetInTheChild() throws {
        // The Swift runtime ignores SIGPIPE in this process; a task must start with the default disposition.
        signal(SIGPIPE, SIG_IGN)
        let (_, output) = try capture(["/bin/sh", "-c", "grep -E 'SigIgn|SigBlk' /proc/self/status"])
        XCTAssertEqual(output, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n")
    }

    func testFailuresNameTheStageAndErrno() {
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { close(devNull) }
        func spawn(_ arguments: [String], cwd: String? = nil) -> SpawnError? {
            do {
                let child = try Spawner.spawn(
                    SpawnConfiguration(
                        arguments: arguments, environment: [:], workingDirectory: cwd, standardInput: devNull,
                        standardOutput: devNull, standardError: devNull))
                while child.reap() == nil { usleep(1000) }
                child.close()
                return nil
            } catch {
                return error
            }
        }
        XCTAssertEqual(spawn(["/nonexistent"])?.stage, .exec)
        XCTAssertEqual(spawn(["/nonexistent"])?.errno, ENOENT)
        XCTAssertEqual(spawn(["/etc/passwd"])?.errno, EACCES)
        XCTAssertEqual(spawn(["/bin/true"], cwd: "/nonexistent")?.stage, .chdir)
        XCTAssertEqual(spawn([])?.stage, .invalidArguments)
        XCTAssertEqual(spawn(["/bin/true\0x"])?.stage, .invalidArguments)
    }

    func testSignalNames() {
        XCTAssertEqual(signalName(SIGKILL), "SIGKILL")
        XCTAssertEqual(signalName(SIGSYS), "SIGSYS")
    }

    func testLookupCandidates() {
        XCTAssertEqual(ExecutableLookup.candidates(for: "/bin/ls", path: "/x"), ["/bin/ls"])
        XCTAssertEqual(ExecutableLookup.candidates(for: "ls", path: "/a:/b"), ["/a/ls", "/b/ls"])
        XCTAssertEqual(ExecutableLookup.candidates(for: "ls", path: "/a:"), ["/a/ls", "./ls"])
    }
}
