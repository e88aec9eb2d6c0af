import CCorral
import Foundation
import Glibc
import XCTest

@testable import Sandbox

/// The task user, cgroup limits in profiles and requests, and the ENOSYS bound for syscalls newer than a profile.
final class TaskIdentityAndLimitsTests: XCTestCase {
    func testTheTaskUserIsNeverRoot() throws {
        try XCTSkipIf(geteuid() != 0, "choosing a task user needs root")
        let standard = try TaskIdentity.resolve(nil)
        XCTAssertTrue(standard.changesUser)
        XCTAssertNotEqual(standard.uid, 0)
        XCTAssertEqual(try TaskIdentity.resolve("65534:65534").uid, 65534)
        XCTAssertEqual(try TaskIdentity.resolve("nobody").uid, getpwnam("nobody")?.pointee.pw_uid)
        for spec in ["0", "root", "1000:0", "", "a:b:c", "4294967295", "65534:4294967295"] {
            XCTAssertThrowsError(try TaskIdentity.resolve(spec), spec)
        }
        XCTAssertThrowsError(try TaskIdentity.resolve("no-such-user-here")) {
            XCTAssertTrue("\($0)".contains("no user named 'no-such-user-here'"), "\($0)")
        }
        let kept = try TaskIdentity.resolve(nil, keepRoot: true)
        XCTAssertEqual(kept.uid, 0)
        XCTAssertFalse(kept.changesUser)
    }

    func testWriteRefusalFollowsOwnersAndModes() throws {
        let identity = TaskIdentity(uid: 65530, gid: 65530, name: "t", changesUser: true)
        // The messages name paths as the kernel walks them: no doubled slashes.
        let base = try SandboxHarness.makeDirectory("corral-identity").replacing("//", with: "/")
        defer { try? FileManager.default.removeItem(atPath: base) }
        chmod(base, 0o755)
        let inner = base + "/inner"
        XCTAssertEqual(mkdir(inner, 0o755), 0)
        XCTAssertEqual(identity.writeRefusal(inner), "\(inner) is not writable by the task user t (uid 65530, gid 65530)")
        chown(inner, 65530, 65530)
        XCTAssertNil(identity.writeRefusal(inner))
        chmod(base, 0o700)
        XCTAssertEqual(identity.writeRefusal(inner), "\(base) cannot be entered by the task user t (uid 65530, gid 65530)")
        XCTAssertNotNil(identity.searchRefusal(inner))
        chmod(base, 0o711)
        XCTAssertNil(identity.searchRefusal(inner))
        XCTAssertNil(identity.writeRefusal(base + "/missing"), "a missing directory is left to the spawn to report")
    }

    func testCgroupLimitsOnlyTighten() throws {
        var floor = BuiltinProfiles.default
        floor.cgroupLimits = CgroupLimits(processes: 64, memory: 1 << 30)
        let tighter = try SandboxRequest(limits: ["processes": 16, "cpu_percent": 50]).apply(over: floor)
        XCTAssertEqual(tighter.cgroupLimits, CgroupLimits(processes: 16, memory: 1 << 30, cpuPercent: 50))
        XCTAssertThrowsError(try SandboxRequest(limits: ["processes": 128]).apply(over: floor)) {
            XCTAssertTrue("\($0)".contains("processes=128 is larger than the floor's 64"), "\($0)")
        }
        XCTAssertThrowsError(try SandboxRequest(limits: ["memory": 0]).apply(over: floor)) {
            XCTAssertTrue("\($0)".contains("must be positive"), "\($0)")
        }
        XCTAssertThrowsError(try SandboxRequest(limits: ["threads": 1]).apply(over: floor)) {
            XCTAssertTrue("\($0)".contains("known: cpu, as, nofile, nproc, fsize, core, processes, memory, cpu_percent"), "\($0)")
        }
        XCTAssertEqual(CgroupLimits(processes: 16, cpuPercent: 50).summary, "processes=16,cpu_percent=50")
        XCTAssertThrowsError(try SandboxRequest(limits: ["cpu_percent": 1 << 60]).apply(over: floor)) {
            XCTAssertTrue("\($0)".contains("at most 100000"), "\($0)")
        }
        // The largest accepted value still makes a valid quota (no overflow trap).
        let settings = CgroupLimits(cpuPercent: 100_000).settings(for: .cpu, unified: true)
        XCTAssertEqual(settings.first?.value, "100000000 100000")
    }

    func testLoaderChecksTheNewKeys() throws {
        func load(_ text: String) -> String {
            do {
                _ = try ProfileLoader.load(data: Data(text.utf8), file: "p.json")
                return "loaded"
            } catch {
                return error.description
            }
        }
        let head = #"{"name": "p", "default_action": "allow", "#
        XCTAssertEqual(load(head + #""cgroup_limits": {"processes": 4, "memory": 1048576, "cpu_percent": 20}}"#), "loaded")
        XCTAssertEqual(load(head + #""cgroup_limits": {"threads": 4}}"#), "p.json: cgroup_limits.threads: unknown key")
        XCTAssertEqual(load(head + #""cgroup_limits": {"processes": 0}}"#), "p.json: cgroup_limits.processes: must be positive")
        XCTAssertEqual(load(head + #""deny_syscalls_above": "open_tree_attr"}"#), "loaded")
        XCTAssertEqual(
            load(head + #""deny_syscalls_above": "no_such_call"}"#),
            "p.json: deny_syscalls_above: unknown system call 'no_such_call'")
        let allowList = load(#"{"name": "p", "default_action": "deny", "allow": ["read"], "deny_syscalls_above": "read"}"#)
        XCTAssertTrue(allowList.contains("only a default-allow profile needs it"), allowList)
    }

    /// The hand-written prologue: a syscall numbered above the bound fails with ENOSYS, one at or below it runs.
    /// landlock_create_ruleset (444) asking for the ABI version is harmless and answers > 0 when it runs.
    func testSyscallsAboveTheBoundFailWithENOSYS() throws {
        try XCTSkipIf(Landlock.abiVersion < 1, "needs a syscall above mount_setattr that answers: Landlock")
        let directory = try SandboxHarness.makeDirectory("corral-bound")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let script = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nr = libc.syscall(444, None, 0, 1)\n"
            + "print(r, ctypes.get_errno())"
        var profile = BuiltinProfiles.default
        profile.landlock = nil
        var (exit, output, _) = try SandboxHarness.run(["/usr/bin/python3", "-c", script], profile: profile, workingDirectory: directory)
        XCTAssertEqual(exit.termination, .exited(0), output)
        XCTAssertEqual(output, "\(Landlock.abiVersion) 0\n")
        profile.denySyscallsAbove = "mount_setattr"  // 442
        (exit, output, _) = try SandboxHarness.run(["/usr/bin/python3", "-c", script], profile: profile, workingDirectory: directory)
        XCTAssertEqual(exit.termination, .exited(0), output)
        XCTAssertEqual(output, "-1 \(ENOSYS)\n")
        XCTAssertEqual(BuiltinProfiles.default.denySyscallsAbove, "file_setattr")
        XCTAssertEqual(SandboxNames.syscallNumber("file_setattr"), 469)
    }
}
