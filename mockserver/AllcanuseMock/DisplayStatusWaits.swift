import CorralJSON
import Foundation
import TaskRuntime

/// Waiting on the statuses a client sees, and answering a task's question: the marks (`waiting_for_user`,
/// `waiting_for_condition`) and the watchers' idle statuses are display statuses the runtime's waiters never see,
/// so a wait on them listens to `signals` beside the runtime's own wait.
extension AllcanuseService {
    /// Statuses that exist only as display statuses of a running task.
    static let displayOnlyStatuses: Set<TaskStatus> = [.waiting, .waitingForUser, .waitingForCondition]

    /// Waits until the task's display status is one of `targets` (or it ends, or `timeout` passes).
    func waitForStatus(_ taskID: String, _ targets: Set<TaskStatus>, timeout: Duration?) async throws -> WaitOutcome {
        let displayTargets = Set(targets.intersection(Self.displayOnlyStatuses).map(\.rawValue))
        guard !displayTargets.isEmpty else { return try await supervisor.wait(for: taskID, until: targets, timeout: timeout) }
        let start = ContinuousClock.now
        let changes = signals.changes(of: taskID)  // before the first look, so no change falls in between
        let supervisor = self.supervisor
        func metNow() async throws -> WaitOutcome? {
            let record = try await supervisor.task(taskID)
            guard displayTargets.contains(record.displayStatus) else { return nil }
            return WaitOutcome(task: record, conditionMet: true, waitedMilliseconds: Int64((ContinuousClock.now - start) / .milliseconds(1)))
        }
        if let met = try await metNow() { return met }
        return try await withThrowingTaskGroup(of: WaitOutcome?.self) { group in
            group.addTask { try await supervisor.wait(for: taskID, until: targets, timeout: timeout) }
            group.addTask {
                for await _ in changes {
                    if let met = try await metNow() { return met }
                }
                return nil
            }
            defer { group.cancelAll() }
            while let next = try await group.next() {
                if let outcome = next { return outcome }
            }
            return WaitOutcome(task: try await supervisor.task(taskID), conditionMet: false,
                               waitedMilliseconds: Int64((ContinuousClock.now - start) / .milliseconds(1)))
        }
    }

    /// The status a client sees, and the open question of a task waiting for its user.
    public func displayState(of taskID: String) async throws -> (status: String, question: String?, isFinal: Bool) {
        let record = try await supervisor.task(taskID)
        let status = record.displayStatus
        return (status, status == "waiting_for_user" ? record.metadata["question"]?.stringValue : nil, record.status.isFinal)
    }

    /// The user's answer to a task's question, from outside a tool call (an MCP task's `tasks/update`): recorded as
    /// a `decision` event holding the answer, and the task no longer waits for its user. A decline or cancel is
    /// recorded the same way, with the action.
    @discardableResult
    public func answerQuestion(of taskID: String, action: String, content: JSONValue?) async throws -> TaskEvent {
        let current = try await supervisor.task(taskID)
        let question = current.metadata["question"]?.stringValue
        let accepted = action == "accept"
        let message = accepted
            ? "the user answered: \(content?["answer"]?.stringValue ?? content?.jsonString() ?? "")"
            : "the user did not answer (\(action))"
        let event = try await supervisor.appendEvent(
            to: taskID, message: message, type: "decision",
            data: ["question": question.map(JSONValue.string) ?? .null, "action": .string(action), "answer": content ?? .null])
        if current.displayStatus == "waiting_for_user" {
            _ = try await supervisor.updateMetadata(
                of: taskID,
                event: ("info", "no longer waiting for the user", ["previous_status": "waiting_for_user", "status": .string(current.status.rawValue)])
            ) { value in value.merging(["label": .null]) }
        }
        signals.signal(taskID)
        return event
    }
}
