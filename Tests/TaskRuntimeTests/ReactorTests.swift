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

    /// A descriptor set's own descriptor is readable while a member is (so that another thread's poll can watch the
    /// set, as allcanuse-mock's stdio loop watches the tasks' exits), and whoever dispatches runs the member's
    /// handler; once closed, it takes no member and dispatches nothing.
    func testADescriptorSetIsReadableWhileAMemberIsAndDispatchesOnTheCallersThread() throws {
        let set = try DescriptorSet()
        var member: [Int32] = [-1, -1]
        XCTAssertEqual(corral_pipe_cloexec(&member), 0)
        defer { for fd in member { close(fd) } }
        let calls = Mutex(0)
        try set.register(member[0]) { _ in calls.withLock { $0 += 1 } }
        var poller = pollfd(fd: set.fd, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&poller, 1, 0), 0, "readable with no member ready")
        XCTAssertEqual(write(member[1], "x", 1), 1)
        XCTAssertEqual(poll(&poller, 1, 1000), 1, "not readable with a member ready")
        XCTAssertTrue(set.dispatchReady())
        XCTAssertEqual(calls.withLock { $0 }, 1)
        set.deregister(member[0])
        XCTAssertTrue(set.dispatchReady())
        XCTAssertEqual(calls.withLock { $0 }, 1, "a deregistered member's handler ran")

        set.close()
        XCTAssertThrowsError(try set.register(member[0]) { _ in })
        XCTAssertFalse(set.dispatchReady(), "a closed set dispatched")
    }

    /// A set closed while another thread dispatches keeps its descriptor until that dispatch returns: the
    /// dispatcher never waits on a closed descriptor, or on another one opened under its number.
    func testAClosedSetKeepsItsDescriptorUntilADispatchInProgressReturns() throws {
        let set = try DescriptorSet()
        let returned = expectation(description: "the dispatch returned")
        Thread {
            set.dispatchReady(timeoutMilliseconds: 300)
            returned.fulfill()
        }.start()
        usleep(50_000)
        set.close()
        XCTAssertGreaterThanOrEqual(fcntl(set.fd, F_GETFD), 0, "closed under a dispatch in progress")
        wait(for: [returned], timeout: 5)
        XCTAssertEqual(fcntl(set.fd, F_GETFD), -1, "still open after the dispatch returned")
    }
}
