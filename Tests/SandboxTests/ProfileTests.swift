import Foundation
import Glibc
import XCTest

@testable import Sandbox

final class ProfileTests: XCTestCase {
    private let policies = SandboxHarness.packageRoot + "/policies/sandbox"

    func testFilesAndBuiltinsAgree() throws {
        for name in BuiltinProfiles.names {
            let loaded = try ProfileLoader.load(file: "\(policies)/\(name).json")
            XCTAssertEqual(loaded, BuiltinProfiles.named(name), name)
        }
    }

    func testBuiltinsValidate() throws {
        for name in BuiltinProfiles.names {
            let profile = try XCTUnwrap(BuiltinProfiles.named(name))
            XCTAssertNoThrow(try ProfileLoader.validate(profile, file: "(built-in \(name))"))
        }
    }

    /// The rules a TCP connection needs, read as the seccomp compiler and the Landlock preparation apply them: both
    /// system calls (an allow-list profile allows `socket` through its family rule), a family of the target's, and
    /// the port where Landlock restricts TCP and the kernel enforces it (the escape tests check the built-in
    /// profiles' answers against a real connect).
    func testTCPConnectRefusalReadsTheRules() {
        XCTAssertNil(BuiltinProfiles.default.tcpConnectRefusal(port: 80))
        XCTAssertEqual(
            BuiltinProfiles.noNetwork.tcpConnectRefusal(port: 80),
            "the profile no-network allows only sockets of the families AF_UNIX")
        XCTAssertEqual(
            BuiltinProfiles.strict.tcpConnectRefusal(port: 80),
            "the profile strict allows only sockets of the families AF_UNIX")
        // An allow-list profile with an internet family can connect, though `socket` is not in its allow list.
        var strictWithInternet = BuiltinProfiles.strict
        strictWithInternet.socketFamilies = .init(allow: ["AF_UNIX", "AF_INET"])
        XCTAssertNil(strictWithInternet.tcpConnectRefusal(port: 80, families: ["AF_INET"]))
        XCTAssertNotNil(strictWithInternet.tcpConnectRefusal(port: 80, families: ["AF_INET6"]))
        // The allow list wins over a deny list, as in the filter.
        strictWithInternet.socketFamilies = .init(allow: ["AF_INET"], deny: ["AF_INET"])
        XCTAssertNil(strictWithInternet.tcpConnectRefusal(port: 80, families: ["AF_INET"]))
        var profile = BuiltinProfiles.default
        profile.deny.append(.init(syscalls: ["connect"], errno: "EACCES"))
        XCTAssertEqual(
            profile.tcpConnectRefusal(port: 80), "the profile default does not allow the connect system call")
        var allowList = BuiltinProfiles.strict
        allowList.socketFamilies = nil
        XCTAssertEqual(
            allowList.tcpConnectRefusal(port: 80), "the profile strict does not allow the socket system call")
        profile = BuiltinProfiles.default
        profile.socketFamilies = .init(deny: ["AF_INET"])
        XCTAssertNil(profile.tcpConnectRefusal(port: 80), "a host name may resolve to AF_INET6")
        XCTAssertEqual(
            profile.tcpConnectRefusal(port: 80, families: ["AF_INET"]), "the profile default denies AF_INET sockets")
        profile = BuiltinProfiles.default
        profile.landlock?.tcpConnect = [80, 443]
        XCTAssertNil(profile.tcpConnectRefusal(port: 443, landlockABI: 4))
        XCTAssertEqual(
            profile.tcpConnectRefusal(port: 8080, landlockABI: 4),
            "the profile default lets tasks connect to TCP ports 80, 443 only")
        XCTAssertNil(profile.tcpConnectRefusal(port: 8080, landlockABI: 3), "Landlock before ABI 4 leaves TCP alone")
        profile.landlock?.tcpConnect = nil
        profile.landlock?.tcpBind = [8080]
        XCTAssertEqual(
            profile.tcpConnectRefusal(port: 8080, landlockABI: 4),
            "the profile default lets tasks connect to no TCP port")
    }

    private func loadError(_ json: String) -> SandboxError? {
        do {
            _ = try ProfileLoader.load(data: Data(json.utf8), file: "bad.json")
            return nil
        } catch {
            return error
        }
    }

    func testErrorsNameTheFileAndTheKey() {
        let head = #""name": "x", "default_action": "allow""#
        XCTAssertEqual(
            loadError("{\(head), \"deny\": [{\"syscalls\": [\"ptrace\", \"no_such_call\"], \"errno\": \"EPERM\"}]}"),
            .invalidProfile(file: "bad.json", key: "deny[0].syscalls[1]", reason: "unknown system call 'no_such_call'"))
        XCTAssertEqual(
            loadError("{\(head), \"deny\": [{\"syscalls\": [\"ptrace\"], \"errno\": \"EWHATEVER\"}]}"),
            .invalidProfile(file: "bad.json", key: "deny[0].errno", reason: "unknown errno name 'EWHATEVER'"))
        XCTAssertEqual(
            loadError("{\(head), \"colour\": 1}"), .invalidProfile(file: "bad.json", key: "colour", reason: "unknown key"))
        XCTAssertEqual(
            loadError("{\(head), \"landlock\": {\"read_only\": [], \"read_write\": [], \"writable\": []}}"),
            .invalidProfile(file: "bad.json", key: "landlock.writable", reason: "unknown key"))
        XCTAssertEqual(
            loadError("{\(head), \"socket_families\": {\"deny\": [\"AF_NOPE\"]}}"),
            .invalidProfile(file: "bad.json", key: "socket_families.deny[0]", reason: "unknown name 'AF_NOPE'"))
        XCTAssertEqual(
            loadError("{\(head), \"rlimits\": {\"stack\": 1}}")?.description.hasPrefix("bad.json: rlimits.stack:"),
            true)
        XCTAssertEqual(
            loadError(#"{"name": "x"}"#),
            .invalidProfile(file: "bad.json", key: "default_action", reason: "required key is missing"))
    }

    func testResolveByNameOrPath() throws {
        XCTAssertEqual(try ProfileLoader.resolve("strict"), BuiltinProfiles.strict)
        XCTAssertEqual(try ProfileLoader.resolve("\(policies)/no-network.json"), BuiltinProfiles.noNetwork)
        XCTAssertThrowsError(try ProfileLoader.resolve("lenient"))
    }

    func testComplementCubesCoverExactlyTheOtherValues() {
        let values: Set<UInt32> = [0, 8, 0x20000, 0x20008, 0xFFFF_FFFF]
        let cubes = SeccompCompiler.complement(of: values)
        func covered(_ x: UInt32) -> Bool { cubes.contains { x & $0.mask == $0.value } }
        for value in values { XCTAssertFalse(covered(value), String(value, radix: 16)) }
        for other: UInt32 in [1, 7, 9, 0x40000, 0x20001, 0xFFFF_FFFE, 0x8000_0000, 0x7FFF_FFFF, 0x8002_0008] {
            XCTAssertTrue(covered(other), String(other, radix: 16))
        }
        XCTAssertEqual(cubes.count, 32, "the compact cover applies to the personality set")
        // Both covers against each other on random values and on every value with one or two bits changed.
        let prefix = SeccompCompiler.prefixComplement(of: values)
        func prefixCovered(_ x: UInt32) -> Bool { prefix.contains { x & $0.mask == $0.value } }
        var samples = (0..<20000).map { _ in UInt32.random(in: 0...UInt32.max) }
        for value in values {
            for i in 0..<32 {
                samples.append(value ^ (1 << UInt32(i)))
                for j in 0..<32 { samples.append(value ^ (1 << UInt32(i)) ^ (1 << UInt32(j))) }
            }
        }
        for x in samples {
            XCTAssertEqual(covered(x), !values.contains(x), String(x, radix: 16))
            XCTAssertEqual(prefixCovered(x), !values.contains(x), String(x, radix: 16))
        }
        // A single value (the no-network family rule) uses the prefix cover.
        let unix = SeccompCompiler.complement(of: [1])
        XCTAssertFalse(unix.contains { 1 & $0.mask == $0.value })
        for x: UInt32 in [0, 2, 3, 10, 0x8000_0001, 0xFFFF_FFFF] { XCTAssertTrue(unix.contains { x & $0.mask == $0.value }) }
    }

    func testFilterIsCachedAndPrintable() throws {
        let first = try SeccompCompiler.program(for: BuiltinProfiles.default)
        let second = try SeccompCompiler.program(for: BuiltinProfiles.default)
        XCTAssertEqual(first, second)
        XCTAssertGreaterThan(first.count, 10)
        let text = try SeccompCompiler.printFilter(BuiltinProfiles.default)
        XCTAssertTrue(text.contains("x86_64") || text.contains("aarch64"), text)
        XCTAssertFalse(text.contains("x32"), "the x32 ABI must not be in the filter")
        XCTAssertTrue(text.contains("ERRNO(38)"), "ENOSYS rules")
        XCTAssertTrue(text.contains("$a1.hi32 & 0x00000000 == 0"), "the high half of ioctl's request is masked out")
        XCTAssertTrue(text.contains("$a1.lo32 & 0xffffffff == 21522"), "TIOCSTI is compared on the low 32 bits only")
        XCTAssertTrue(text.contains("action KILL;"), "bad-architecture action")
    }

    func testTighteningAcceptsStricterAndRefusesLooser() throws {
        let floor = BuiltinProfiles.noNetwork
        XCTAssertEqual(try SandboxRequest(profile: "strict").apply(over: floor).name, "strict")
        XCTAssertThrowsError(try SandboxRequest(profile: "default").apply(over: floor)) {
            XCTAssertTrue("\($0)".contains("looser than the server's floor 'no-network'"), "\($0)")
        }
        XCTAssertThrowsError(try SandboxRequest(network: true).apply(over: floor))
        let offline = try SandboxRequest(network: false).apply(over: BuiltinProfiles.default)
        XCTAssertFalse(SandboxRequest.allowsNetwork(offline))

        var limited = BuiltinProfiles.default
        limited.rlimits["nofile"] = 256
        XCTAssertEqual(try SandboxRequest(limits: ["nofile": 64]).apply(over: limited).rlimits["nofile"], 64)
        XCTAssertThrowsError(try SandboxRequest(limits: ["nofile": 1024]).apply(over: limited))
        XCTAssertEqual(try SandboxRequest(limits: ["cpu": 5]).apply(over: limited).rlimits["cpu"], 5)

        let narrowed = try SandboxRequest(allowRead: ["/usr", "/etc"], allowWrite: ["$CWD/out"]).apply(over: floor)
        XCTAssertEqual(narrowed.landlock?.readOnly, ["/usr", "/etc"])
        XCTAssertEqual(narrowed.landlock?.readWrite, ["$CWD/out"])
        XCTAssertThrowsError(try SandboxRequest(allowWrite: ["/etc"]).apply(over: floor))
        XCTAssertThrowsError(try SandboxRequest(allowWrite: ["$CWD/../x"]).apply(over: floor))
    }

    func testSummaryWithLandlockAndCleanupClosesTheRuleset() throws {
        let abi = Landlock.abiVersion
        try XCTSkipIf(abi < 1, "no Landlock in this kernel")
        let prepared = try SandboxPreparation.prepare(
            BuiltinProfiles.strict, workingDirectory: "/tmp", temporaryDirectory: nil)
        XCTAssertEqual(
            prepared.summary, ["seccomp:strict", "no_new_privs", "rlimits:core=0,nofile=4096", "landlock:abi\(abi)"])
        let fd = try XCTUnwrap(prepared.confinement.landlockRulesetFD)
        XCTAssertGreaterThanOrEqual(fcntl(fd, F_GETFD), 0)
        prepared.cleanup()
        XCTAssertEqual(fcntl(fd, F_GETFD), -1)
    }

    func testACustomFloorAdmitsOnlyItself() throws {
        var custom = BuiltinProfiles.strict
        custom.name = "site"
        XCTAssertThrowsError(try SandboxRequest(profile: "strict").apply(over: custom))
        XCTAssertEqual(try SandboxRequest(profile: "site", limits: ["cpu": 1]).apply(over: custom).name, "site")
    }

    func testSummaryAndDegradationWithoutLandlock() throws {
        let prepared = try SandboxPreparation.prepare(
            BuiltinProfiles.default, workingDirectory: "/tmp", temporaryDirectory: nil, landlockABI: 0)
        defer { prepared.cleanup() }
        XCTAssertEqual(prepared.summary, ["seccomp:default", "no_new_privs", "rlimits:core=0", "landlock:unavailable"])
        XCTAssertNil(prepared.confinement.landlockRulesetFD)
        XCTAssertThrowsError(
            try SandboxPreparation.prepare(
                BuiltinProfiles.default, workingDirectory: "/tmp", temporaryDirectory: nil, requireLandlock: true,
                landlockABI: 0)
        ) { XCTAssertEqual($0 as? SandboxError, .landlockUnavailable) }
    }

    /// Landlock before ABI 4 confines files but not TCP: a profile's port rules are then not enforced, and the
    /// summary (the task's `protections`) says so; with Landlock required, the task is refused.
    func testTCPRulesOnALandlockWithoutNetworkSupportAreNeverSilentlyDropped() throws {
        guard Landlock.abiVersion >= 3 else { throw XCTSkip("needs a kernel with Landlock ABI 3 or later") }
        var profile = BuiltinProfiles.default
        profile.landlock?.tcpConnect = [443]
        let older = try SandboxPreparation.prepare(profile, workingDirectory: "/tmp", temporaryDirectory: nil, landlockABI: 3)
        defer { older.cleanup() }
        XCTAssertEqual(Array(older.summary.suffix(2)), ["landlock:abi3", "landlock-net:unavailable"])
        XCTAssertThrowsError(
            try SandboxPreparation.prepare(
                profile, workingDirectory: "/tmp", temporaryDirectory: nil, requireLandlock: true, landlockABI: 3)
        ) { XCTAssertEqual($0 as? SandboxError, .landlockNetworkUnavailable(abi: 3)) }
        if Landlock.abiVersion >= 4 {
            let current = try SandboxPreparation.prepare(
                profile, workingDirectory: "/tmp", temporaryDirectory: nil, requireLandlock: true)
            defer { current.cleanup() }
            XCTAssertEqual(current.summary.last, "landlock-net")
        }
    }
}
