import CCorral
import Glibc
import Synchronization

/// The output pipes of one running task, drained on the reactor thread into bounded files.
///
/// Both pipes are read as soon as they are readable, whatever else happens (a paused or chatty task never blocks on a
/// full pipe because of us).
final class TaskIO: Sendable {
    private struct State {
        var writers: [OutputStream: StreamWriter]
        var openFDs: [OutputStream: Int32]
        var closedWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let reactor: Reactor
    private let state: Mutex<State>

    init(reactor: Reactor, directory: String, limit: Int, stdoutFD: Int32, stderrFD: Int32) {
        self.reactor = reactor
        var writers: [OutputStream: StreamWriter] = [:]
        for stream in OutputStream.allCases {
            writers[stream] = StreamWriter(layout: OutputLayout(directory: directory, stream: stream, limit: limit))
        }
        state = Mutex(State(writers: writers, openFDs: [.stdout: stdoutFD, .stderr: stderrFD]))
    }

    /// Starts draining both pipes.
    func start() throws(RuntimeError) {
        let fds = state.withLock { $0.openFDs }
        for (stream, fd) in fds {
            _ = corral_set_nonblocking(fd)
            try reactor.register(fd) { [self] _ in self.drain(stream) }
        }
    }

    /// Bytes written so far to each stream.
    var totals: (stdout: Int64, stderr: Int64) {
        state.withLock { state in
            (state.writers[.stdout]?.total ?? 0, state.writers[.stderr]?.total ?? 0)
        }
    }

    var isClosed: Bool { state.withLock { $0.openFDs.isEmpty } }

    /// What each stream could not keep because of an error (a full disk), in the streams' order; empty when nothing
    /// was lost.
    var losses: [(stream: OutputStream, loss: OutputLoss)] {
        let writers = state.withLock { $0.writers }
        return OutputStream.allCases.compactMap { stream in
            guard let loss = writers[stream]?.loss, loss.bytes > 0 || loss.error != 0 else { return nil }
            return (stream, loss)
        }
    }

    /// Waits until both pipes reached end-of-file, or closes them after `timeout` (a descendant that escaped the
    /// task's process group may hold them open forever).
    func waitUntilClosed(timeout: Duration) async {
        // The reactor has usually seen both ends close before the exit is handled: then no timer is needed.
        if isClosed { return }
        let timer = Task { [self] in
            try? await Task.sleep(for: timeout)
            if !Task.isCancelled {
                await reactor.perform { self.closeAll() }
            }
        }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let closed = state.withLock { state -> Bool in
                if state.openFDs.isEmpty { return true }
                state.closedWaiters.append(continuation)
                return false
            }
            if closed { continuation.resume() }
        }
        timer.cancel()
    }

    /// Runs on the reactor thread only.
    private func drain(_ stream: OutputStream) {
        let chunk = 65536
        // Not zeroed: `read` fills what is used. A zeroed array was 64 KiB of memset per readable event, twice per
        // task that only exits (its two ends of file): 12 % of a short task's instructions in the server.
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 16)
        defer { buffer.deallocate() }
        // A bounded number of reads per wake-up keeps one chatty task from starving the others.
        for _ in 0..<16 {
            guard let fd = state.withLock({ $0.openFDs[stream] }) else { return }
            let count = read(fd, buffer.baseAddress, chunk)
            if count > 0 {
                let writer = state.withLock { $0.writers[stream] }
                writer?.append(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
                continue
            }
            if count < 0 && (errno == EAGAIN || errno == EINTR) { return }
            close(stream)  // end of file, or an error that will not go away
            return
        }
    }

    private func closeAll() {
        for stream in OutputStream.allCases { close(stream) }
    }

    private func close(_ stream: OutputStream) {
        let (fd, waiters) = state.withLock { state -> (Int32?, [CheckedContinuation<Void, Never>]) in
            guard let fd = state.openFDs.removeValue(forKey: stream) else { return (nil, []) }
            state.writers[stream]?.close()
            guard state.openFDs.isEmpty else { return (fd, []) }
            defer { state.closedWaiters.removeAll() }
            return (fd, state.closedWaiters)
        }
        if let fd {
            reactor.deregister(fd)
            Glibc.close(fd)
        }
        for waiter in waiters { waiter.resume() }
    }
}
