import Foundation
import MCPCore
import Synchronization
import XCTest

/// The lane runs async work on the thread that calls `run`, actors and waits included, and returns only when the
/// work is done.
final class ThreadLaneTests: XCTestCase {
    private final class Seen: Sendable {
        let threads = Mutex<Set<UInt>>([])
        let order = Mutex<[Int]>([])
    }

    func testWorkRunsOnTheCallingThreadThroughActorsAndWaits() {
        let seen = Seen()
        let counter = ExecutorTestCounter()
        let done = expectation(description: "the lane's thread ran every line")
        let caller = Mutex<UInt>(0)
        let thread = Thread {
            caller.withLock { $0 = currentThreadID() }
            let lane = ThreadLane()
            for line in 0..<50 {
                lane.run {
                    seen.threads.withLock { _ = $0.insert(currentThreadID()) }
                    _ = await counter.increment()  // a default actor follows the task's executor preference
                    seen.threads.withLock { _ = $0.insert(currentThreadID()) }
                    // A wait resumed from another thread: the continuation comes back to the lane.
                    await withCheckedContinuation { (resumed: CheckedContinuation<Void, Never>) in
                        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(1)) { resumed.resume() }
                    }
                    seen.threads.withLock { _ = $0.insert(currentThreadID()) }
                    seen.order.withLock { $0.append(line) }
                }
                // `run` returned: the line is finished before the next one starts.
                XCTAssertEqual(seen.order.withLock { $0.last }, line)
            }
            done.fulfill()
        }
        thread.start()
        wait(for: [done], timeout: 30)
        XCTAssertEqual(seen.order.withLock { $0 }, Array(0..<50))
        XCTAssertEqual(seen.threads.withLock { $0 }, [caller.withLock { $0 }], "every step ran on the lane's own thread")
    }

    func testLinesAreReadAndHandledInOrderOnTheReaderThread() throws {
        var fds: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&fds), 0)
        let seen = Seen()
        let ended = expectation(description: "the reader reached the end of its input")
        ThreadLane.readLines(from: fds[0], threadName: "lane-test", { line in
            let number = Int(String(decoding: line, as: UTF8.self)) ?? -1
            try? await Task.sleep(for: .microseconds(200))  // a suspension in the middle of a line
            seen.order.withLock { $0.append(number) }
        }, ended: { ended.fulfill() })
        let text = (0..<200).map(String.init).joined(separator: "\n") + "\n"
        _ = text.withCString { write(fds[1], $0, strlen($0)) }
        close(fds[1])
        wait(for: [ended], timeout: 30)
        close(fds[0])
        XCTAssertEqual(seen.order.withLock { $0 }, Array(0..<200))
    }
}
