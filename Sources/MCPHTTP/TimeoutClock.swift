import Foundation

/// One thread that fires every timeout of a server's message queues (the JSON window of each POST, the keep-alive
/// of each SSE stream).
///
/// A timer task per wait — created, put to sleep, and cancelled when the answer came first, as it does for almost
/// every request — cost two extra jobs on the task pool per request, and on a small machine each job that wakes a
/// pool thread costs about as much as the answer itself. Here a wait whose deadline is later than the one the thread
/// sleeps until (the common case: windows are all the same length) only takes a lock.
final class TimeoutClock: @unchecked Sendable {
    struct Ticket: Sendable, Hashable {
        fileprivate let serial: UInt64
    }

    static let shared = TimeoutClock()

    // Guarded by `condition` (an NSCondition: Synchronization's Mutex has no condition variable).
    private let condition = NSCondition()
    private var pending: [UInt64: (deadline: ContinuousClock.Instant, fire: @Sendable () -> Void)] = [:]
    private var serial: UInt64 = 0
    /// What the thread sleeps until; nil while it waits for a first deadline.
    private var sleepingUntil: ContinuousClock.Instant?
    private var started = false

    private init() {}

    /// Calls `fire` on the clock's thread once `timeout` has passed, unless cancelled before.
    func schedule(after timeout: Duration, _ fire: @escaping @Sendable () -> Void) -> Ticket {
        let deadline = ContinuousClock.now + timeout
        condition.lock()
        defer { condition.unlock() }
        serial &+= 1
        pending[serial] = (deadline, fire)
        if !started {
            started = true
            let thread = Thread { [self] in run() }
            thread.name = "corral-timeouts"
            thread.start()
        } else if sleepingUntil.map({ deadline < $0 }) ?? true {
            condition.signal()
        }
        return Ticket(serial: serial)
    }

    func cancel(_ ticket: Ticket) {
        condition.lock()
        pending.removeValue(forKey: ticket.serial)
        condition.unlock()
    }

    private func run() {
        condition.lock()
        while true {
            let now = ContinuousClock.now
            var due: [@Sendable () -> Void] = []
            var earliest: ContinuousClock.Instant?
            for (key, entry) in pending {
                if entry.deadline <= now {
                    due.append(entry.fire)
                    pending.removeValue(forKey: key)
                } else if earliest.map({ entry.deadline < $0 }) ?? true {
                    earliest = entry.deadline
                }
            }
            if !due.isEmpty {
                condition.unlock()
                for fire in due { fire() }
                condition.lock()
                continue
            }
            sleepingUntil = earliest
            if let earliest {
                // The wall clock only paces the wait: a deadline is judged on the monotonic clock when the thread
                // wakes, and a wait is never longer than a second, so a wall-clock jump delays a timeout by ≤ 1 s.
                let seconds = min(1.0, Self.seconds(earliest - now))
                _ = condition.wait(until: Date(timeIntervalSinceNow: seconds))
            } else {
                condition.wait()
            }
        }
    }

    private static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
