import Foundation
import FuzzEntryPoints
import XCTest

/// Every seed and every input the fuzzer once broke (Fuzz/regressions) through the same entry points, so that a
/// fixed bug stays fixed without a fuzzing build.
final class FuzzCorpusTests: XCTestCase {
    private let fuzz = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Fuzz").standardized

    private func inputs(_ target: String) throws -> [URL] {
        var found: [URL] = []
        for folder in ["corpus", "regressions"] {
            let directory = fuzz.appendingPathComponent(folder).appendingPathComponent(target)
            let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
            found += names.filter { !$0.hasPrefix(".") }.map { directory.appendingPathComponent($0) }
        }
        return found
    }

    func testHTTPPostInputs() throws {
        let files = try inputs("http-post")
        XCTAssertGreaterThan(files.count, 3)
        for file in files {
            XCTAssertNoThrow(try FuzzEntryPoints.httpPost(Array(try Data(contentsOf: file))), file.lastPathComponent)
        }
    }

    func testWatchInputs() throws {
        let files = try inputs("watch")
        XCTAssertGreaterThan(files.count, 3)
        for file in files {
            XCTAssertNoThrow(try FuzzEntryPoints.watch(Array(try Data(contentsOf: file))), file.lastPathComponent)
        }
    }

    func testGatekeeperJSONInputs() throws {
        let files = try inputs("gatekeeper-json")
        XCTAssertGreaterThan(files.count, 5)
        for file in files {
            XCTAssertNoThrow(try FuzzEntryPoints.gatekeeperJSON(Array(try Data(contentsOf: file))), file.lastPathComponent)
        }
    }

    func testTimestampInputs() throws {
        let files = try inputs("timestamp")
        XCTAssertGreaterThan(files.count, 5)
        for file in files {
            XCTAssertNoThrow(try FuzzEntryPoints.timestamp(Array(try Data(contentsOf: file))), file.lastPathComponent)
        }
    }

    func testStdioInputs() throws {
        let files = try inputs("stdio")
        XCTAssertGreaterThan(files.count, 1)
        for file in files {
            XCTAssertNoThrow(try FuzzEntryPoints.stdio(Array(try Data(contentsOf: file))), file.lastPathComponent)
        }
    }
}
