import Foundation
import Glibc
import XCTest

@testable import Sandbox

/// A task cgroup reads `cgroup.events` and `cpu.stat` through descriptors opened when it was made: each read must
/// still say what is current (the kernel regenerates the text at offset 0), not what the first read saw.
final class CgroupFileTests: XCTestCase {
    func testKeptDescriptorsReadTheCgroupAsItIsNow() throws {
        let hierarchy = try delegatedHierarchy()
        defer { hierarchy.removeIfEmpty() }
        let cgroup = try hierarchy.createTaskCgroup(named: "kept")
        defer { cgroup.remove() }
        XCTAssertTrue(cgroup.isEmpty, "a new cgroup reads as populated")
        let idleCPU = try XCTUnwrap(cgroup.cpuUsage(), "cpu.stat was not readable")

        // A process that burns CPU for a moment, moved into the cgroup.
        let burner = Process()
        burner.executableURL = URL(fileURLWithPath: "/bin/sh")
        burner.arguments = ["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 5"]
        try burner.run()
        defer { if burner.isRunning { kill(burner.processIdentifier, SIGKILL) } }
        let procs = try FileHandle(forWritingTo: URL(fileURLWithPath: cgroup.path + "/cgroup.procs"))
        try procs.write(contentsOf: Data("\(burner.processIdentifier)".utf8))
        try procs.close()
        XCTAssertTrue(cgroup.isPopulated, "the kept cgroup.events still said empty")
        XCTAssertFalse(cgroup.isEmpty)
        var busyCPU = idleCPU
        let deadline = ContinuousClock.now + .seconds(10)
        while busyCPU.user + busyCPU.system <= idleCPU.user + idleCPU.system, ContinuousClock.now < deadline {
            usleep(20_000)
            busyCPU = try XCTUnwrap(cgroup.cpuUsage())
        }
        XCTAssertGreaterThan(busyCPU.user + busyCPU.system, idleCPU.user + idleCPU.system, "the kept cpu.stat never moved")

        kill(burner.processIdentifier, SIGKILL)
        burner.waitUntilExit()
        XCTAssertTrue(cgroup.waitUntilEmpty(timeoutMilliseconds: 5000))
        XCTAssertTrue(cgroup.isEmpty, "the kept cgroup.events still said populated")
    }

    /// The kill goes through `cgroup.kill` opened when the cgroup was made: it needs no new descriptor (a server out
    /// of them can still end a task's tree) and no path. Here the path leads nowhere, so only the kept one can kill.
    func testTheKillNeedsNoNewDescriptor() throws {
        let hierarchy = try delegatedHierarchy()
        defer { hierarchy.removeIfEmpty() }
        let cgroup = try hierarchy.createTaskCgroup(named: "kill")
        defer { cgroup.remove() }
        let sleeper = Process()
        sleeper.executableURL = URL(fileURLWithPath: "/bin/sleep")
        sleeper.arguments = ["30"]
        try sleeper.run()
        defer { if sleeper.isRunning { kill(sleeper.processIdentifier, SIGKILL) } }
        let procs = try FileHandle(forWritingTo: URL(fileURLWithPath: cgroup.path + "/cgroup.procs"))
        try procs.write(contentsOf: Data("\(sleeper.processIdentifier)".utf8))
        try procs.close()
        let procsCopy = fcntl(cgroup.procsFD, F_DUPFD_CLOEXEC, 0)
        let directoryCopy = fcntl(cgroup.directoryFD, F_DUPFD_CLOEXEC, 0)
        XCTAssertGreaterThanOrEqual(min(procsCopy, directoryCopy), 0, String(cString: strerror(errno)))
        let elsewhere = TaskCgroup(path: "/nonexistent/\(UUID().uuidString)", procsFD: procsCopy, directoryFD: directoryCopy)
        elsewhere.keepReadersOpen()
        defer { elsewhere.remove() }
        try elsewhere.killAll()
        sleeper.waitUntilExit()
        XCTAssertEqual(sleeper.terminationReason, .uncaughtSignal)
        XCTAssertEqual(sleeper.terminationStatus, SIGKILL)
        XCTAssertTrue(cgroup.waitUntilEmpty(timeoutMilliseconds: 5000))
    }

    /// A cgroup hierarchy of this test's own, or a skip where cgroups are not delegated to us.
    private func delegatedHierarchy() throws -> CgroupHierarchy {
        switch CgroupHierarchy.prepare(name: "corral-test-\(UInt32.random(in: 0...UInt32.max))") {
        case .success(let prepared): return prepared
        case .failure(let reason): throw XCTSkip("no delegated cgroups here: \(reason)")
        }
    }
}
