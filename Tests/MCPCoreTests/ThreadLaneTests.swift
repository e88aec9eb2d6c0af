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

    /// One task reads the whole stream (its job blocks in `read` between lines): suspensions inside a line, actor
    /// hops and continuations resumed from other threads still come back to the reader's thread, lines stay in
    /// order, and a last line without a newline is handled before `ended`.
    func testLinesAreReadAndHandledInOrderOnTheReaderThread() throws {
        var fds: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&fds), 0)
        let seen = Seen()
        let counter = ExecutorTestCounter()
        let endedOnEveryLine = Mutex(false)
        let ended = expectation(description: "the reader reached the end of its input")
        ThreadLane.readLines(from: fds[0], threadName: "lane-test", { line in
            let number = Int(String(decoding: line, as: UTF8.self)) ?? -1
            seen.threads.withLock { _ = $0.insert(currentThreadID()) }
            try? await Task.sleep(for: .microseconds(200))  // a suspension in the middle of a line
            _ = await counter.increment()
            await withCheckedContinuation { (resumed: CheckedContinuation<Void, Never>) in
                DispatchQueue.global().async { resumed.resume() }
            }
            seen.threads.withLock { _ = $0.insert(currentThreadID()) }
            seen.order.withLock { $0.append(number) }
        }, ended: {
            endedOnEveryLine.withLock { $0 = seen.order.withLock { $0.count } == 200 }
            ended.fulfill()
        })
        // Written in pieces, so that reads end inside lines; the last line has no newline.
        let text = Array((0..<200).map(String.init).joined(separator: "\n").utf8)
        for start in stride(from: 0, to: text.count, by: 97) {
            let piece = Array(text[start..<min(start + 97, text.count)])
            _ = piece.withUnsafeBytes { write(fds[1], $0.baseAddress, $0.count) }
            usleep(200)
        }
        close(fds[1])
        wait(for: [ended], timeout: 30)
        close(fds[0])
        XCTAssertEqual(seen.order.withLock { $0 }, Array(0..<200))
        XCTAssertEqual(seen.threads.withLock { $0.count }, 1, "every line ran on the reader's own thread")
        XCTAssertTrue(endedOnEveryLine.withLock { $0 }, "ended is called after the last line was handled")
    }
}
