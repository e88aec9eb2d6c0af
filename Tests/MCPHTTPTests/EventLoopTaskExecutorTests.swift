import Dispatch
import Foundation
import NIOCore
import NIOPosix
import Synchronization
import XCTest

@testable import MCPHTTP

/// The HTTP server's executor kept awake through a spawn: its loop thread runs, never sleeping, until the job from
/// another thread has come and the stay ended, and sleeps again afterwards.
final class EventLoopTaskExecutorTests: XCTestCase {
    /// The loop thread's voluntary context switches from a job on it to a job queued 20 ms later from another
    /// thread (with or without a stay asked for), and from that job, which ends the stay, to a second one 20 ms
    /// after it.
    private func sleepsAroundJobsFromElsewhere(stayingAwake: Bool) async throws -> (first: Int, second: Int) {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let executor = EventLoopTaskExecutor(group.next())
        let recorded = Task(executorPreference: executor) { await recordSleeps(executor, stayingAwake: stayingAwake) }
        let (counts, onTheLoop) = await recorded.value
        try await group.shutdownGracefully()
        XCTAssertTrue(onTheLoop, "the jobs ran off the loop")
        XCTAssertEqual(counts.count, 3)
        XCTAssertFalse(counts.contains(-1), "/proc/thread-self/status was readable")
        return counts.count == 3 ? (counts[1] - counts[0], counts[2] - counts[1]) : (-1, -1)
    }

    func testALoopAskedToStayAwakeDoesNotSleepUntilTheStayEnds() async throws {
        let awake = try await sleepsAroundJobsFromElsewhere(stayingAwake: true)
        XCTAssertEqual(awake.first, 0, "the loop slept while asked to stay awake")
        XCTAssertGreaterThan(awake.second, 0, "the loop went on spinning after the stay ended")
        let asleep = try await sleepsAroundJobsFromElsewhere(stayingAwake: false)
        XCTAssertGreaterThan(asleep.first, 0, "without a stay the loop slept")
    }

    /// A housekeeping job (background priority) waits until no other job of the executor's is queued or running:
    /// queued first, from a job on the loop, it runs after that job's whole chain (an actor hop and back, three
    /// times), as a commit queued by an exit runs after its waiter's answer. Held back without a chain, it is not.
    func testHousekeepingRunsAfterTheJobsQueuedAroundIt() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let executor = EventLoopTaskExecutor(group.next())
        let order = Order()
        let chain = Task(executorPreference: executor) {
            let housekeeping = Task(executorPreference: executor, priority: .background) { order.append("housekeeping") }
            order.append("job")
            for hop in 0..<3 {
                await Step().take()
                order.append("hop \(hop)")
            }
            return housekeeping
        }
        await chain.value.value
        XCTAssertEqual(order.seen.withLock { $0 }, ["job", "hop 0", "hop 1", "hop 2", "housekeeping"])
        // Nothing else queued: it runs at once.
        await Task(executorPreference: executor, priority: .background) { order.append("alone") }.value
        XCTAssertEqual(order.seen.withLock { $0 }.last, "alone")
        try await group.shutdownGracefully()
    }

    /// A stay nobody ends lasts its duration, no longer: the loop then sleeps between jobs again.
    func testAStayEndsAtItsDeadline() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let executor = EventLoopTaskExecutor(group.next())
        let recorded = Task(executorPreference: executor) { await recordSleepsAfterAStay(executor) }
        let counts = await recorded.value
        try await group.shutdownGracefully()
        XCTAssertEqual(counts.count, 3)
        // The first sleep began inside the stay and ended after it; the second was all after it.
        XCTAssertGreaterThan(counts[2] - counts[1], 0, "the loop went on spinning past the stay's deadline")
    }
}

private final class Order: Sendable {
    let seen = Mutex<[String]>([])
    func append(_ step: String) { seen.withLock { $0.append(step) } }
}

private actor Step {
    func take() {}
}

private func voluntarySwitches() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/thread-self/status", encoding: .utf8) else { return -1 }
    let line = status.split(separator: "\n").first { $0.hasPrefix("voluntary_ctxt_switches:") }
    return line.flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? -1
}

/// On the loop: the switch counts at the start and after each of two jobs queued 20 ms apart from another thread;
/// the stay, if asked for, ends after the first. And whether every job ran on the loop.
private func recordSleeps(_ executor: EventLoopTaskExecutor, stayingAwake: Bool) async -> ([Int], Bool) {
    if stayingAwake { executor.stayAwake(for: .seconds(5)) }
    var counts = [voluntarySwitches()]
    var onTheLoop = executor.eventLoop.inEventLoop
    for round in 0..<2 {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(20)) { continuation.resume() }
        }
        onTheLoop = onTheLoop && executor.eventLoop.inEventLoop
        counts.append(voluntarySwitches())
        if stayingAwake, round == 0 { executor.endStayingAwake() }
    }
    return (counts, onTheLoop)
}

/// On the loop: a 30 ms stay not ended before its deadline, and the switch counts at its start and after two 50 ms
/// sleeps.
private func recordSleepsAfterAStay(_ executor: EventLoopTaskExecutor) async -> [Int] {
    executor.stayAwake(for: .milliseconds(30))
    var counts = [voluntarySwitches()]
    for _ in 0..<2 {
        try? await Task.sleep(for: .milliseconds(50))
        counts.append(voluntarySwitches())
    }
    executor.endStayingAwake()  // only now: a stay that outlived its deadline fails the test instead of hanging it
    return counts
}
