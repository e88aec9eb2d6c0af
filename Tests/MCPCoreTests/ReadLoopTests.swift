import Foundation
import MCPCore
import Synchronization
import XCTest

/// The loop reads lines and runs the tasks they start on its own thread — actors, waits resumed from other threads
/// and many requests in flight at once — and ends only when the input has ended and nothing is in flight.
final class ReadLoopTests: XCTestCase {
    private final class Seen: Sendable {
        let threads = Mutex<Set<UInt>>([])
        let finished = Mutex<[Int]>([])
        let inFlight = Atomic<Int>(0)
        let mostInFlight = Atomic<Int>(0)
        let endedWhileInFlight = Atomic<Int>(-1)
    }

    func testTasksRunOnTheLoopThreadConcurrentlyAndTheLoopOutlivesItsInput() throws {
        var fds: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&fds), 0)
        let loop = try XCTUnwrap(ReadLoop())
        let input = fds[0]
        let seen = Seen()
        let counter = ExecutorTestCounter()
        let loopThread = Mutex<UInt>(0)
        let returned = expectation(description: "run returned")
        let lines = 100
        let thread = Thread {
            loopThread.withLock { $0 = currentThreadID() }
            loop.run(reading: input, { line in
                let number = Int(String(decoding: line, as: UTF8.self)) ?? -1
                let now = seen.inFlight.add(1, ordering: .relaxed).newValue
                _ = seen.mostInFlight.max(now, ordering: .relaxed)
                Task(executorPreference: loop) {
                    seen.threads.withLock { _ = $0.insert(currentThreadID()) }
                    _ = await counter.increment()  // a default actor follows the task's executor preference
                    // A wait resumed from another thread: the continuation comes back to the loop through its eventfd.
                    await withCheckedContinuation { (resumed: CheckedContinuation<Void, Never>) in
                        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(20 + number % 7)) { resumed.resume() }
                    }
                    seen.threads.withLock { _ = $0.insert(currentThreadID()) }
                    seen.finished.withLock { $0.append(number) }
                    seen.inFlight.subtract(1, ordering: .relaxed)
                }
            }, endOfInput: {
                seen.endedWhileInFlight.store(seen.inFlight.load(ordering: .relaxed), ordering: .relaxed)
            }, isIdle: { seen.inFlight.load(ordering: .relaxed) == 0 })
            returned.fulfill()
        }
        thread.start()
        let text = (0..<lines).map(String.init).joined(separator: "\n") + "\n"
        _ = text.withCString { write(fds[1], $0, strlen($0)) }
        close(fds[1])
        wait(for: [returned], timeout: 30)
        close(fds[0])
        XCTAssertEqual(seen.finished.withLock { $0 }.sorted(), Array(0..<lines), "every line's task finished before run returned")
        XCTAssertEqual(seen.threads.withLock { $0 }, [loopThread.withLock { $0 }], "every step ran on the loop's own thread")
        XCTAssertGreaterThan(seen.mostInFlight.load(ordering: .relaxed), 1, "tasks were in flight together: the loop kept reading")
        XCTAssertGreaterThan(seen.endedWhileInFlight.load(ordering: .relaxed), 0, "the input ended with tasks still waiting")
    }

    func testAJobAfterTheLoopEndedRunsElsewhere() async throws {
        var fds: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&fds), 0)
        let loop = try XCTUnwrap(ReadLoop())
        close(fds[1])
        let input = fds[0]
        let thread = Thread { loop.run(reading: input, { _ in }, endOfInput: {}, isIdle: { true }) }
        thread.start()
        // The loop has nothing in flight and its input is at its end: it returns at once, and a task that prefers it
        // later still runs (on the global executor), instead of waiting forever for a thread that is gone.
        try await Task.sleep(for: .milliseconds(100))
        let ran = await withTaskGroup(of: Bool.self) { group in
            group.addTask { await Task(executorPreference: loop) { true }.value }
            group.addTask {
                try? await Task.sleep(for: .seconds(10))
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        close(fds[0])
        XCTAssertTrue(ran)
    }

    /// The loop thread's voluntary context switches so far: each sleep in `poll` is one.
    private static func voluntarySwitches() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/thread-self/status", encoding: .utf8) else { return -1 }
        let line = status.split(separator: "\n").first { $0.hasPrefix("voluntary_ctxt_switches:") }
        return line.flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? -1
    }

    /// Two lines 20 ms apart: how many times the loop thread slept between handling them.
    private func sleepsBetweenTwoLines(busyPoll: Duration) throws -> Int {
        var fds: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&fds), 0)
        let loop = try XCTUnwrap(ReadLoop(busyPoll: busyPoll))
        let input = fds[0]
        let counts = Mutex<[Int]>([])
        let returned = expectation(description: "run returned")
        let thread = Thread {
            loop.run(reading: input, { _ in counts.withLock { $0.append(Self.voluntarySwitches()) } },
                     endOfInput: {}, isIdle: { true })
            returned.fulfill()
        }
        thread.start()
        _ = write(fds[1], "1\n", 2)
        let deadline = Date().addingTimeInterval(10)
        while counts.withLock({ $0.isEmpty }) && Date() < deadline { usleep(1000) }
        usleep(20_000)
        _ = write(fds[1], "2\n", 2)
        close(fds[1])
        wait(for: [returned], timeout: 30)
        close(fds[0])
        let seen = counts.withLock { $0 }
        XCTAssertEqual(seen.count, 2)
        XCTAssertFalse(seen.contains(-1), "/proc/thread-self/status was readable")
        return seen.count == 2 ? seen[1] - seen[0] : -1
    }

    /// Within its busy-poll window the loop never sleeps: the second line, 20 ms after the first, finds it still
    /// polling. Without one, it slept in `poll` in between.
    func testABusyPollingLoopDoesNotSleepBetweenLinesInsideItsWindow() throws {
        XCTAssertEqual(try sleepsBetweenTwoLines(busyPoll: .seconds(5)), 0, "no sleep inside a 5 s busy-poll window")
        XCTAssertGreaterThan(try sleepsBetweenTwoLines(busyPoll: .zero), 0, "without busy-polling the loop slept")
    }

    /// After its window the loop sleeps: an idle server spins for at most the window, not for ever.
    func testABusyPollingLoopSleepsAfterItsWindow() throws {
        XCTAssertGreaterThan(try sleepsBetweenTwoLines(busyPoll: .milliseconds(2)), 0, "the loop slept after 2 ms")
    }

    private actor Step {
        func take() {}
    }

    private final class Counts: Sendable {
        let values = Mutex<[Int]>([])
    }

    private final class Order: Sendable {
        let seen = Mutex<[String]>([])
        func append(_ step: String) { seen.withLock { $0.append(step) } }
    }

    /// A job of background priority waits until nothing else is queued: work queued while a line is handled (a
    /// started task, a resumed wait, an actor hop and back) runs before it, though it was queued first. Jobs without
    /// a priority of their own (a task started outside any task) are not held back.
    func testBackgroundJobsRunWhenNothingElseIsQueued() throws {
        var fds: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&fds), 0)
        let loop = try XCTUnwrap(ReadLoop())
        let input = fds[0]
        let order = Order()
        let returned = expectation(description: "run returned")
        let thread = Thread {
            loop.run(reading: input, { _ in
                Task(executorPreference: loop, priority: .background) { order.append("background") }
                Task(executorPreference: loop) {
                    order.append("line")
                    for hop in 0..<3 {
                        await Step().take()  // onto an actor and back to the loop
                        order.append("hop \(hop)")
                    }
                }
            }, endOfInput: {}, isIdle: { order.seen.withLock { $0.count } == 5 })
            returned.fulfill()
        }
        thread.start()
        _ = write(fds[1], "1\n", 2)
        close(fds[1])
        wait(for: [returned], timeout: 30)
        close(fds[0])
        XCTAssertEqual(order.seen.withLock { $0 }, ["line", "hop 0", "hop 1", "hop 2", "background"])
    }

    /// Voluntary context switches of the loop thread from a line's handling to a job queued 20 ms later from
    /// another thread (with or without the handler asking the loop to stay awake), and from that job, which ends
    /// the request, to a second one 20 ms after it.
    private func sleepsAroundJobsFromElsewhere(stayingAwake: Bool) throws -> (first: Int, second: Int) {
        var fds: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&fds), 0)
        let loop = try XCTUnwrap(ReadLoop())
        let input = fds[0]
        let counts = Counts()
        let returned = expectation(description: "run returned")
        let resumed = expectation(description: "the jobs from elsewhere ran")
        let thread = Thread {
            loop.run(reading: input, { _ in
                if stayingAwake { loop.stayAwake(for: .seconds(5)) }
                counts.values.withLock { $0.append(Self.voluntarySwitches()) }
                Task(executorPreference: loop) {
                    for _ in 0..<2 {
                        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(20)) { continuation.resume() }
                        }
                        counts.values.withLock { $0.append(Self.voluntarySwitches()) }
                        if stayingAwake, counts.values.withLock({ $0.count }) == 2 { loop.endStayingAwake() }
                    }
                    resumed.fulfill()
                }
            }, endOfInput: {}, isIdle: { counts.values.withLock { $0.count } == 3 })
            returned.fulfill()
        }
        thread.start()
        _ = write(fds[1], "1\n", 2)
        wait(for: [resumed], timeout: 30)
        close(fds[1])
        wait(for: [returned], timeout: 30)
        close(fds[0])
        let seen = counts.values.withLock { $0 }
        XCTAssertEqual(seen.count, 3)
        XCTAssertFalse(seen.contains(-1), "/proc/thread-self/status was readable")
        return seen.count == 3 ? (seen[1] - seen[0], seen[2] - seen[1]) : (-1, -1)
    }

    /// Asked to stay awake (a create, for its spawn's answer), the loop polls instead of sleeping until the job
    /// comes from another thread, and sleeps again once the request is ended; without the request it slept.
    func testALoopAskedToStayAwakeDoesNotSleepUntilTheRequestEnds() throws {
        let awake = try sleepsAroundJobsFromElsewhere(stayingAwake: true)
        XCTAssertEqual(awake.first, 0, "the loop slept while asked to stay awake")
        XCTAssertGreaterThan(awake.second, 0, "the loop went on spinning after the request ended")
        XCTAssertGreaterThan(try sleepsAroundJobsFromElsewhere(stayingAwake: false).first, 0, "without the request the loop slept")
    }

    private final class Watched: Sendable {
        let readableThreads = Mutex<[UInt]>([])
        let ended = Mutex<[String]>([])
        let loopThread = Mutex<UInt>(0)
        /// The loop thread's /proc entry, "PID/task/TID".
        let loopProcEntry = Mutex("")
    }

    /// A watched descriptor wakes the sleeping loop and its handler runs on the loop's thread; after `unwatch` it
    /// no longer does; when the loop ends, what is still watched gets `onEnd`, once, and a watch after the end is
    /// refused.
    func testAWatchedDescriptorWakesTheLoopOnItsThreadUntilUnwatchedOrTheLoopEnds() throws {
        var input: [Int32] = [-1, -1]
        var first: [Int32] = [-1, -1]
        var second: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&input), 0)
        XCTAssertEqual(pipe(&first), 0)
        XCTAssertEqual(pipe(&second), 0)
        defer { for fd in input + first + second { close(fd) } }
        let loop = try XCTUnwrap(ReadLoop())
        let watched = Watched()
        let inputFD = input[0]
        let returned = expectation(description: "run returned")
        Thread {
            watched.loopThread.withLock { $0 = currentThreadID() }
            loop.run(reading: inputFD, { _ in }, endOfInput: {}, isIdle: { true })
            returned.fulfill()
        }.start()
        let firstFD = first[0]
        XCTAssertTrue(loop.watch(firstFD, onReadable: {
            var byte: UInt8 = 0
            _ = read(firstFD, &byte, 1)  // level-triggered: take what woke us
            watched.readableThreads.withLock { $0.append(currentThreadID()) }
        }, onEnd: { watched.ended.withLock { $0.append("first") } }))
        XCTAssertTrue(loop.watch(second[0], onReadable: {}, onEnd: { watched.ended.withLock { $0.append("second") } }))
        usleep(50_000)  // the loop sleeps in poll
        _ = write(first[1], "x", 1)
        let deadline = Date().addingTimeInterval(10)
        while watched.readableThreads.withLock({ $0.isEmpty }) && Date() < deadline { usleep(1000) }
        XCTAssertEqual(watched.readableThreads.withLock { $0 }, [watched.loopThread.withLock { $0 }], "not on the loop's thread")

        loop.unwatch(firstFD)
        _ = write(first[1], "y", 1)
        usleep(100_000)
        XCTAssertEqual(watched.readableThreads.withLock { $0.count }, 1, "an unwatched descriptor's handler ran")

        close(input[1])
        input[1] = -1
        wait(for: [returned], timeout: 30)
        XCTAssertEqual(watched.ended.withLock { $0 }, ["second"], "onEnd: once, for what was still watched")
        XCTAssertFalse(loop.watch(second[0], onReadable: {}, onEnd: {}), "a watch after the loop ended was taken")
    }

    /// A watched descriptor closed without `unwatch` (poll reports it invalid at once, every time) is dropped: the
    /// loop does not spin on it.
    func testAWatchedDescriptorClosedWithoutUnwatchDoesNotMakeTheLoopSpin() throws {
        var input: [Int32] = [-1, -1]
        var watchedPipe: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&input), 0)
        XCTAssertEqual(pipe(&watchedPipe), 0)
        let loop = try XCTUnwrap(ReadLoop())
        let watched = Watched()
        let inputFD = input[0]
        let returned = expectation(description: "run returned")
        Thread {
            let entry = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self")) ?? ""
            watched.loopProcEntry.withLock { $0 = entry }
            loop.run(reading: inputFD, { _ in }, endOfInput: {}, isIdle: { true })
            returned.fulfill()
        }.start()
        XCTAssertTrue(loop.watch(watchedPipe[0], onReadable: {}, onEnd: {}))
        close(watchedPipe[0])
        close(watchedPipe[1])
        _ = Task(executorPreference: loop) {}  // wakes the loop: it polls the closed descriptor next
        usleep(50_000)
        let entry = watched.loopProcEntry.withLock { $0 }
        XCTAssertFalse(entry.isEmpty, "/proc/thread-self was readable")
        let before = try Self.cpuTicks(ofThread: entry)
        usleep(300_000)
        let after = try Self.cpuTicks(ofThread: entry)
        close(input[1])
        wait(for: [returned], timeout: 30)
        close(input[0])
        // Spinning, the loop would have used about 30 ticks of CPU (100 per second) in 300 ms.
        XCTAssertLessThanOrEqual(after - before, 3, "the loop spun on a closed descriptor")
    }

    /// utime + stime of a thread ("PID/task/TID"), in clock ticks.
    private static func cpuTicks(ofThread entry: String) throws -> Int {
        let stat = try String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8)
        // Fields after the command's closing parenthesis: state is field 3, utime 14 and stime 15.
        let fields = try XCTUnwrap(stat.split(separator: ")").last).split(separator: " ")
        return try XCTUnwrap(Int(fields[11])) + XCTUnwrap(Int(fields[12]))
    }
}
