import CCorral
import Foundation
import Synchronization
import XCTest

@testable import TaskRuntime

final class ReactorTests: XCTestCase {
    /// One wake-up can bring several descriptors; each handler is looked up when its turn comes, so one that
    /// deregisters a later descriptor (a task's pipes closed at its end) is never followed by that descriptor's.
    func testAHandlerThatDeregistersALaterDescriptorInTheSamePassStopsIt() async throws {
        let reactor = try Reactor()
        var first: [Int32] = [-1, -1]
        var second: [Int32] = [-1, -1]
        XCTAssertEqual(corral_pipe_cloexec(&first), 0)
        XCTAssertEqual(corral_pipe_cloexec(&second), 0)
        let calls = Mutex<[String]>([])
        let firstRead = first[0]
        let secondRead = second[0]
        try reactor.register(firstRead) { _ in
            var byte: UInt8 = 0
            _ = read(firstRead, &byte, 1)
            reactor.deregister(secondRead)
            calls.withLock { $0.append("first") }
        }
        try reactor.register(secondRead) { _ in
            calls.withLock { $0.append("second") }
        }
        // Both readable before the reactor looks, or the first alone: either way its handler runs first.
        XCTAssertEqual(write(first[1], "x", 1), 1)
        XCTAssertEqual(write(second[1], "y", 1), 1)
        for _ in 0..<200 where calls.withLock({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(5)) }
        try await Task.sleep(for: .milliseconds(50))
        XCTAssertEqual(calls.withLock { $0 }, ["first"])
        reactor.deregister(firstRead)
        await reactor.shutdown()
        for fd in first + second { close(fd) }
    }
}
