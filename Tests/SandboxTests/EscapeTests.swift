import CCorral
import Foundation
import Glibc
import XCTest

@testable import Sandbox

/// The escape suite: the C probe tries each forbidden thing under each profile; every line is asserted.
final class EscapeTests: XCTestCase {
    private var base = ""
    private var listener: Int32 = -1
    private var port: UInt16 = 0

    override func setUpWithError() throws {
        base = try SandboxHarness.makeDirectory("corral-escape")
        for name in ["work", "outside", "mnt", "a", "b", "tmp"] {
            XCTAssertEqual(mkdir(base + "/" + name, 0o755), 0)
        }
        // A TCP listener on 127.0.0.1 the probe tries to reach.
        listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                _ = bind(listener, $0, length)
                _ = getsockname(listener, $0, &length)
            }
        }
        XCTAssertEqual(listen(listener, 16), 0)
        port = UInt16(bigEndian: address.sin_port)
    }

    override class func tearDown() {
        SandboxHarness.removeProbe()
        super.tearDown()
    }

    override func tearDownWithError() throws {
        close(listener)
        try? FileManager.default.removeItem(atPath: base)
    }

    private func probe(_ profile: SandboxProfile, _ arguments: [String]) throws -> (ExitInfo, [String: String], String) {
        let probe = try SandboxHarness.probe()
        let (exit, output, _) = try SandboxHarness.run(
            [probe] + arguments, profile: profile, workingDirectory: base + "/work", temporaryDirectory: base + "/tmp")
        return (exit, SandboxHarness.parse(output), output)
    }

    static let kernelWide = [
        "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "pivot_root", "chroot", "unshare",
        "setns", "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup",
        "io_uring_enter", "io_uring_register", "kexec_load", "kexec_file_load", "init_module", "finit_module",
        "delete_module", "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "personality_addr_no_randomize",
        "ioctl_tiocsti", "ioctl_tiocsti_high", "ioctl_tioclinux", "ioctl_tioclinux_high", "clone_newuser",
        "clone_newuser_high", "clone_newnet", "clone_newns", "socket_netlink", "socket_netlink_high", "socket_packet",
        "socket_packet_high", "socket_vsock", "socket_alg", "socket_bluetooth",
    ]
    static let enosys = [
        "clone3", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr", "open_tree_attr",
    ]
    static let network = ["socket_inet", "socket_inet_high", "socket_inet6", "connect_tcp"]

    private func expectations(network allowed: Bool) -> [String: String] {
        var expected: [String: String] = [:]
        for name in Self.kernelWide { expected[name] = "fail errno=EPERM" }
        for name in Self.enosys { expected[name] = "fail errno=ENOSYS" }
        for name in Self.network { expected[name] = allowed ? "ok errno=0" : "fail errno=EPERM" }
        expected["socketpair_inet_high"] = allowed ? "fail errno=EOPNOTSUPP" : "fail errno=EPERM"
        expected["personality_query"] = "ok errno=0"
        expected["clone_plain"] = "ok errno=0"
        expected["socket_unix"] = "ok errno=0"
        expected["socketpair_unix"] = "ok errno=0"
        expected["ioctl_tcgets"] = "fail errno=EBADF"  // reaches the kernel: the filter let it through
        expected["write_outside"] = "fail errno=EACCES"  // Landlock
        expected["write_inside"] = "ok errno=0"
        // Only x86_64 is in the filter: a 32-bit or x32 call hits the bad-architecture action.
        expected["int80"] = "killed signal=SYS"
        expected["x32"] = "killed signal=SYS"
        return expected
    }

    private func assertLines(_ lines: [String: String], _ expected: [String: String], _ output: String,
        file: StaticString = #filePath, line: UInt = #line)
    {
        for (name, result) in expected.sorted(by: { $0.key < $1.key }) {
            XCTAssertEqual(lines[name], result, "\(name)\n\(output)", file: file, line: line)
        }
        XCTAssertEqual(Set(lines.keys), Set(expected.keys), "unexpected or missing lines", file: file, line: line)
    }

    private func requireLandlock() throws {
        try XCTSkipIf(Landlock.abiVersion < 1, "no Landlock in this kernel")
    }

    func testProbeRefusesToRunWithoutAFilter() throws {
        let probe = try SandboxHarness.probe()
        let (status, output) = try SandboxHarness.runUnconfined([probe, "escape", base])
        XCTAssertEqual(status, 2)
        XCTAssertTrue(output.contains("refusing"), output)
    }

    func testDefaultProfile() throws {
        try requireLandlock()
        let (exit, lines, output) = try probe(BuiltinProfiles.default, ["escape", base, String(port)])
        XCTAssertEqual(exit.termination, .exited(0), output)
        assertLines(lines, expectations(network: true), output)
        // What the watchers' check reads from the rules is what the kernel did to the probe's connect.
        let refused = BuiltinProfiles.default.tcpConnectRefusal(port: Int(port)) != nil
        XCTAssertEqual(refused, lines["connect_tcp"] != "ok errno=0", output)
    }

    func testNoNetworkProfile() throws {
        try requireLandlock()
        let (exit, lines, output) = try probe(BuiltinProfiles.noNetwork, ["escape", base, String(port)])
        XCTAssertEqual(exit.termination, .exited(0), output)
        assertLines(lines, expectations(network: false), output)
        // What the watchers' check reads from the rules is what the kernel did to the probe's connect.
        let refused = BuiltinProfiles.noNetwork.tcpConnectRefusal(port: Int(port)) != nil
        XCTAssertEqual(refused, lines["connect_tcp"] != "ok errno=0", output)
    }

    func testStrictProfile() throws {
        try requireLandlock()
        let (exit, lines, output) = try probe(BuiltinProfiles.strict, ["escape", base, String(port)])
        XCTAssertEqual(exit.termination, .exited(0), output)
        assertLines(lines, expectations(network: false), output)
        // What the watchers' check reads from the rules is what the kernel did to the probe's connect.
        let refused = BuiltinProfiles.strict.tcpConnectRefusal(port: Int(port)) != nil
        XCTAssertEqual(refused, lines["connect_tcp"] != "ok errno=0", output)
    }

    /// The suite can fail: with the ioctl and clone rules removed the probe gets through, and the lines show it.
    func testAWeakenedProfileIsDetected() throws {
        var weak = BuiltinProfiles.default
        weak.name = "weakened"
        weak.ioctl = nil
        weak.landlock = nil
        weak.socketFamilies = nil
        let (_, lines, output) = try probe(weak, ["escape", base])
        XCTAssertEqual(lines["ioctl_tiocsti"], "fail errno=EBADF", output)
        XCTAssertEqual(lines["ioctl_tiocsti_high"], "fail errno=EBADF", output)
        XCTAssertEqual(lines["socket_packet"], "ok errno=0", output)
        XCTAssertEqual(lines["write_outside"], "ok errno=0", output)
    }

    /// The pitfall the masked compare avoids is real: a hand-written filter comparing socket's family as a full 64-bit
    /// value is bypassed by setting the high bits (the kernel ignores them), and the probe reports it.
    func testAnUnmaskedCompareIsBypassedWithHighBits() throws {
        #if arch(x86_64)
        func op(_ code: UInt64, _ k: UInt32, _ jt: UInt64 = 0, _ jf: UInt64 = 0) -> UInt64 {
            code | jt << 16 | jf << 24 | UInt64(k) << 32
        }
        let ld: UInt64 = 0x20, jeq: UInt64 = 0x15, ret: UInt64 = 0x06
        let naive = [
            op(ld, 4), op(jeq, 0xC000_003E, 0, 8),  // arch x86_64, else kill
            op(ld, 0), op(jeq, 41, 0, 4),  // socket
            op(ld, 20), op(jeq, 0, 0, 2),  // a0 high half == 0
            op(ld, 16), op(jeq, 17, 1, 0),  // a0 low half == AF_PACKET
            op(ret, 0x7FFF_0000), op(ret, 0x0005_0001), op(ret, 0x8000_0000),
        ]
        let (_, output) = try SandboxHarness.run(
            [try SandboxHarness.probe(), "escape", base],
            confinement: ChildConfinement(noNewPrivileges: true, seccompProgram: naive), workingDirectory: base + "/work")
        let lines = SandboxHarness.parse(output)
        XCTAssertEqual(lines["socket_packet"], "fail errno=EPERM", output)
        XCTAssertEqual(lines["socket_packet_high"], "ok errno=0", "the naive filter is bypassed\n\(output)")
        #endif
    }

    func testMemoryHogUnderAddressSpaceLimit() throws {
        var profile = BuiltinProfiles.default
        profile.rlimits["as"] = 512 << 20
        var (_, lines, output) = try probe(profile, ["hog", "1024"])
        XCTAssertEqual(lines["hog"], "fail errno=ENOMEM", output)
        (_, lines, output) = try probe(profile, ["hog", "16"])
        XCTAssertEqual(lines["hog"], "ok errno=0", output)
    }

    /// RLIMIT_NPROC does not bind root (the kernel exempts it; the cgroup's pids.max does): the bomb runs as nobody.
    func testForkBombUnderProcessLimit() throws {
        let probe = try SandboxHarness.probe()
        chmod((probe as NSString).deletingLastPathComponent, 0o755)
        var profile = BuiltinProfiles.default
        profile.rlimits["nproc"] = 10
        let (_, output, _) = try SandboxHarness.run(
            ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", probe, "forkbomb", "200"],
            profile: profile, workingDirectory: "/", temporaryDirectory: nil)
        let line = SandboxHarness.parse(output)["forkbomb"] ?? ""
        XCTAssertTrue(line.hasPrefix("fail errno=EAGAIN count="), output)
        let count = Int(line.split(separator: "=").last ?? "") ?? 999
        XCTAssertLessThan(count, 10, output)
    }

    /// Landlock ABI >= 4: TCP connect only to listed ports.
    func testLandlockTCPPortRules() throws {
        try XCTSkipIf(Landlock.abiVersion < 4, "Landlock ABI < 4 has no TCP rules")
        let script = "import socket\ntry:\n socket.create_connection(('127.0.0.1', \(port))); print('connected')\n"
            + "except OSError as e:\n print('refused', e.errno)"
        var profile = BuiltinProfiles.default
        profile.landlock?.tcpConnect = []
        var (_, output, summary) = try SandboxHarness.run(
            ["/usr/bin/python3", "-c", script], profile: profile, workingDirectory: base + "/work")
        XCTAssertEqual(output, "refused 13\n")  // EACCES
        XCTAssertTrue(summary.contains("landlock-net"), "\(summary)")
        profile.landlock?.tcpConnect = [port]
        (_, output, _) = try SandboxHarness.run(
            ["/usr/bin/python3", "-c", script], profile: profile, workingDirectory: base + "/work")
        XCTAssertEqual(output, "connected\n")
    }

    func testOrdinaryProgramsWorkUnderEachProfile() throws {
        let source = base + "/work/hello.c"
        try "#include <stdio.h>\nint main(void) { puts(\"compiled\"); return 0; }\n"
            .write(toFile: source, atomically: true, encoding: .utf8)
        // A Swift binary: the corral CLI built alongside the tests (Foundation, the Swift runtime, threads).
        let corral = SandboxHarness.packageRoot + "/.build/debug/corral"
        let swiftBinary: [([String], String?)] =
            access(corral, X_OK) == 0 ? [([corral, "exec", "--print-filter", "strict"], nil)] : []
        for profile in [BuiltinProfiles.default, BuiltinProfiles.noNetwork, BuiltinProfiles.strict] {
            let cwd = base + "/work"
            for (arguments, expected) in [
                (["/bin/sh", "-c", "echo hi | tr a-z A-Z"], "HI\n"),
                (["/bin/ls", "/work-none-\(profile.name)", "/"], nil),
                (["/usr/bin/python3", "-c", "import os, socket; print(sum(range(10)), os.getcwd() != '')"],
                 "45 True\n"),
                (["/bin/sh", "-c", "cc -o hello hello.c && ./hello"], "compiled\n"),
            ] + swiftBinary as [([String], String?)] {
                let (exit, output, _) = try SandboxHarness.run(
                    arguments, profile: profile, workingDirectory: cwd, temporaryDirectory: base + "/tmp")
                if let expected {
                    XCTAssertEqual(exit.termination, .exited(0), "\(profile.name) \(arguments): \(output)")
                    XCTAssertEqual(output, expected, "\(profile.name) \(arguments)")
                } else if arguments[0] == corral {
                    XCTAssertEqual(exit.termination, .exited(0), "\(profile.name) \(arguments): \(output)")
                    XCTAssertTrue(output.contains("# filter for arch"), "\(profile.name) \(arguments): \(output)")
                } else {
                    // ls of a missing path and "/": exit 2, yet "/" is listed.
                    XCTAssertTrue(output.contains("usr"), "\(profile.name) \(arguments): \(output)")
                }
            }
        }
    }
}
