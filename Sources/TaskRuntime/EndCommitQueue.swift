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
        var pending: [ExitJournal.Entry] = []
        var jobQueued = false
        /// For tests: the job leaves the ends pending, as a crash right after their answers would.
        var jobHeld = false
        /// A commit failed: its line stays in the journal until a start commits it.
        var journalHoldsUncommittedEnd = false
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
                    state.pending.append(end)
                    return true
                } catch {
                    logger.error("cannot journal the end of task \(end.record.taskID), committing it at once: \(error)")
                }
            }
            commitPending(&state)
            commit(end, &state)
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

    /// Commits every pending end, oldest first (before any use of the store).
    func commitPending() {
        state.withLock { state in commitPending(&state) }
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

    /// Commits what is pending and empties the journal (at shutdown).
    func close() {
        state.withLock { state in
            commitPending(&state)
            clearJournal(&state)
        }
    }

    func holdJob(_ held: Bool) {
        state.withLock { $0.jobHeld = held }
    }

    private func commitPending(_ state: inout State) {
        guard !state.pending.isEmpty else { return }
        for end in state.pending { commit(end, &state) }
        state.pending.removeAll(keepingCapacity: true)
        // Lines of committed ends are harmless (a replay skips them): the file is emptied only once it is large.
        if state.journal?.isLarge == true { clearJournal(&state) }
    }

    private func commit(_ end: ExitJournal.Entry, _ state: inout State) {
        do {
            try store.save(end.record, prepared: [end.event])
        } catch {
            state.journalHoldsUncommittedEnd = state.journal != nil
            logger.error("cannot store the end of task \(end.record.taskID): \(error)")
        }
    }

    private func clearJournal(_ state: inout State) {
        guard let journal = state.journal, !state.journalHoldsUncommittedEnd else { return }
        do {
            try journal.clear()
        } catch {
            logger.warning("cannot empty \(journal.path): \(error)")
        }
    }
}
