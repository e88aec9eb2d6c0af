import Foundation
import XCTest

@testable import Sandbox

/// Attempts to get past the floor that an adversarial review found, each now refused.
final class TighteningHolesTests: XCTestCase {
    func testWritablePathThroughASymlinkIsRefused() throws {
        try XCTSkipIf(Landlock.abiVersion == 0, "no Landlock in this kernel")
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("corral-link-\(UUID().uuidString)").path
        let work = base + "/work"
        let outside = base + "/outside"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: base) }
        // A previous task left a symlink in a directory it could write.
        try FileManager.default.createSymbolicLink(atPath: work + "/x", withDestinationPath: outside)

        let request = SandboxRequest(allowWrite: ["$CWD/x"])
        let profile = try request.apply(over: BuiltinProfiles.default)  // lexically beneath $CWD: accepted here…
        do {
            let prepared = try SandboxPreparation.prepare(profile, workingDirectory: work, temporaryDirectory: nil)
            prepared.cleanup()
            XCTFail("a writable path resolving through a symlink was accepted")
        } catch {
            XCTAssertTrue(error.description.contains("symlink"), error.description)  // …but refused when prepared
        }
        // Written less plainly, the same path is refused too (by the request, or when prepared: the standardizing
        // branch).
        for spelled in ["$CWD/./x", "$CWD//x", "$CWD/sub/../x"] {
            XCTAssertThrowsError(
                try SandboxPreparation.prepare(
                    try SandboxRequest(allowWrite: [spelled]).apply(over: BuiltinProfiles.default),
                    workingDirectory: work, temporaryDirectory: nil
                ).cleanup(),
                spelled)
        }
        XCTAssertEqual(Landlock.expectedPath("/dev/null", under: []), "/dev/null")
        XCTAssertEqual(Landlock.expectedPath("/dev/./null", under: []), "/dev/null")
        XCTAssertEqual(Landlock.expectedPath("/dev//null", under: []), "/dev/null")
        XCTAssertEqual(Landlock.expectedPath("/dev/pts/../null", under: []), "/dev/null")
        // A plain subdirectory is fine.
        try FileManager.default.createDirectory(atPath: work + "/sub", withIntermediateDirectories: true)
        let fine = try SandboxPreparation.prepare(
            try SandboxRequest(allowWrite: ["$CWD/sub"]).apply(over: BuiltinProfiles.default), workingDirectory: work,
            temporaryDirectory: nil)
        fine.cleanup()
    }

    func testACustomFloorBorrowingABuiltinNameIsNotReplaced() throws {
        var floor = BuiltinProfiles.default
        floor.rlimits["nproc"] = 64  // custom: stricter than the built-in of the same name
        XCTAssertThrowsError(try SandboxRequest(profile: "strict").apply(over: floor))
        // The built-in floor may be tightened to strict, and its limits survive the switch.
        let strict = try SandboxRequest(profile: "strict").apply(over: BuiltinProfiles.default)
        XCTAssertEqual(strict.name, "strict")
        for (key, value) in BuiltinProfiles.default.rlimits {
            XCTAssertLessThanOrEqual(strict.rlimits[key] ?? UInt64.max, value, key)
        }
    }

    func testNoNetworkIsForcedWhenOnlyIPv4WasDenied() throws {
        var floor = BuiltinProfiles.default
        floor.socketFamilies = .init(deny: ["AF_INET"])
        XCTAssertTrue(SandboxRequest.allowsNetwork(floor), "IPv6 is still open")
        let narrowed = try SandboxRequest(network: false).apply(over: floor)
        XCTAssertFalse(SandboxRequest.allowsNetwork(narrowed))
    }
}
