import Logging
import Synchronization

/// Tasks' ends that their waiters are told of before the store commits them.
///
/// An end's transaction was 200-300 µs of each wait's wake-up (its CPU and its page writes). Here it is journaled
/// first (`ExitJournal`, one `write(2)`), the waiters are answered, and the commit runs in a job of its own, off the
/// supervisor's actor so that the waiters' next steps never queue behind it. Until the job has run, every use of the
/// store commits what is pending first (`commitPending`), under the same lock as the job: nothing reads the store
/// older than what a client was told, and events go in in the order of their numbers.
final class EndCommitQueue: Sendable {
    private struct State: ~Copyable {
        var journal: ExitJournal?
        /// Ends told and not yet committed, oldest first; one whose commit failed stays, and is tried again at the
        /// next use of the store (ends are committed in order, so that events go in in the order of their numbers).
        var pending: [PendingEnd] = []
        var jobQueued = false
        /// For tests: the job leaves the ends pending, as a crash right after their answers would.
        var jobHeld = false
    }

    private struct PendingEnd {
        let entry: ExitJournal.Entry
        /// Its line is in the journal: a start after a crash commits it, so the journal is not emptied meanwhile.
        var journaled: Bool
    }

    private let store: TaskStore
    private let logger: Logger
    private let state: Mutex<State>

    /// Without a journal every end is committed at once (`journalOrCommit`).
    init(store: TaskStore, journal: sending ExitJournal?, logger: Logger) {
        self.store = store
        self.logger = logger
        state = Mutex(State(journal: journal))
    }

    /// Journals the end and holds its commit back (true: the caller queues a job, `claimJob`); without a journal, or
    /// when the line cannot be written, commits it now (false).
    func journalOrCommit(_ end: ExitJournal.Entry) -> Bool {
        state.withLock { state in
            if let journal = state.journal {
                do {
                    try journal.append(end)
                    state.pending.append(PendingEnd(entry: end, journaled: true))
                    return true
                } catch {
                    logger.error("cannot journal the end of task \(end.record.taskID), committing it at once: \(error)")
                }
            }
            state.pending.append(PendingEnd(entry: end, journaled: false))
            commitPending(&state)
            return false
        }
    }

    /// Whether the caller is to queue a job that calls `runJob` (none is queued yet).
    func claimJob() -> Bool {
        state.withLock { state in
            guard !state.jobQueued else { return false }
            state.jobQueued = true
            return true
        }
    }

    func runJob() {
        state.withLock { state in
            state.jobQueued = false
            guard !state.jobHeld else { return }
            commitPending(&state)
        }
    }

    /// Commits every pending end, oldest first (before any use of the store). Throws when one is still pending:
    /// the use must not go ahead of it (an event committed first would carry a higher number than the end's, and a
    /// reader of events after N would never see the end).
    func commitPending() throws(RuntimeError) {
        try state.withLock { (state) throws(RuntimeError) in
            commitPending(&state)
            guard let first = state.pending.first else { return }
            throw RuntimeError.storage(
                "the end of task \(first.entry.record.taskID) is not stored yet (the store refused it; tried again at the next use)")
        }
    }

    /// Commits what the journal of an earlier run holds that the store does not: ends whose waiters were answered
    /// just before that run stopped. Only a task the store still has unfinished takes its end from the journal.
    func replayJournal() throws(RuntimeError) {
        try state.withLock { (state) throws(RuntimeError) in
            guard let journal = state.journal else { return }
            let read = journal.entries()
            var replayed = 0
            for entry in read.entries {
                guard let stored = try store.task(entry.record.taskID), !stored.status.isFinal else { continue }
                try store.save(entry.record, prepared: [entry.event])
                replayed += 1
            }
            if replayed > 0 || read.unreadable > 0 {
                logger.info(
                    "committed \(replayed) task end(s) from \(journal.path) that the previous run had not; \(read.unreadable) unreadable line(s) skipped"
                )
            }
            try journal.clear()
        }
    }

    /// Commits what is pending and empties the journal (at shutdown). An end that still cannot be committed is
    /// left in the journal for the next start to commit.
    func close() {
        state.withLock { state in
            commitPending(&state)
            for index in state.pending.indices where !state.pending[index].journaled {
                let end = state.pending[index].entry
                guard let journal = state.journal else {
                    logger.error("the end of task \(end.record.taskID) is lost: the store did not take it, and there is no journal")
                    continue
                }
                do {
                    try journal.append(end)
                    state.pending[index].journaled = true
                } catch {
                    logger.error("the end of task \(end.record.taskID) is lost: neither the store nor the journal took it: \(error)")
                }
            }
            clearJournal(&state)
        }
    }

    func holdJob(_ held: Bool) {
        state.withLock { $0.jobHeld = held }
    }

    private func commitPending(_ state: inout State) {
        guard !state.pending.isEmpty else { return }
        var committed = 0
        for pending in state.pending {
            do {
                try store.save(pending.entry.record, prepared: [pending.entry.event])
                committed += 1
            } catch {
                logger.error("cannot store the end of task \(pending.entry.record.taskID) (tried again at the next use of the store): \(error)")
                break
            }
        }
        state.pending.removeFirst(committed)
        // Lines of committed ends are harmless (a replay skips them): the file is emptied only once it is large.
        if state.journal?.isLarge == true { clearJournal(&state) }
    }

    private func clearJournal(_ state: inout State) {
        guard let journal = state.journal, !state.pending.contains(where: \.journaled) else { return }
        do {
            try journal.clear()
        } catch {
            logger.warning("cannot empty \(journal.path): \(error)")
        }
    }
}
