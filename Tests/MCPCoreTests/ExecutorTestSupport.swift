import Foundation

/// A default actor: a task that prefers an executor runs its methods there, which the executor tests check.
actor ExecutorTestCounter {
    private(set) var value = 0

    func increment() -> Int {
        value += 1
        return value
    }
}

/// The calling thread, to compare where each step of a task ran.
func currentThreadID() -> UInt { UInt(pthread_self()) }
