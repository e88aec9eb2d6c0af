#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Wall-clock time for counter windows; injected so tests can cross window boundaries.
public protocol PolicyClock: Sendable {
    /// Milliseconds since the Unix epoch (UTC).
    func nowMilliseconds() -> Int64
}

/// The real clock (`CLOCK_REALTIME`): windows follow UTC, as PolicyLayer's do.
public struct SystemClock: PolicyClock {
    public init() {}
    public func nowMilliseconds() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
    }
}

/// A clock that only moves when told to (tests, dry runs).
public final class ManualClock: PolicyClock {
    private let now: Atomic<Int64>
    public init(milliseconds: Int64) { now = Atomic(milliseconds) }
    public func nowMilliseconds() -> Int64 { now.load(ordering: .relaxed) }
    public func set(milliseconds: Int64) { now.store(milliseconds, ordering: .relaxed) }
    public func advance(milliseconds: Int64) { now.add(milliseconds, ordering: .relaxed) }
}
