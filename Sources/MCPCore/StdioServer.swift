import CCorral
import CorralJSON
import Foundation
import Synchronization

/// An MCP server on a pair of file descriptors (stdio): newline-delimited JSON-RPC, both eras.
///
/// The first request settles the connection's era, once, as the Python SDK does: a request with the 2026-07-28
/// `_meta` opens a modern connection (each request validated on its own, no handshake); anything else — above all
/// `initialize` — opens a legacy one. The other era is then refused: `initialize` on a modern connection gets -32022
/// naming what is served, a modern request on a legacy one -32600.
///
/// A dedicated thread reads the input and runs the requests' tasks between reads (`ReadLoop`); each request runs as
/// its own task, so a long wait never holds up the next request; `notifications/cancelled` cancels one, and no answer is sent for it. At the end of
/// input the owner decides when to stop (`waitForEndOfInput`, then `waitUntilDrained`), so no answer is lost.
public final class StdioServerConnection: Sendable {
    private enum Era {
        case undecided
        case legacy(version: String, capabilities: JSONValue)
        case modern
    }

    private struct State {
        var era = Era.undecided
        /// Requests being answered, by key: whoever takes a request's entry answers it (its task, a stopping
        /// server's `answerRemaining`), or nobody (the client cancelled it).
        var running: [String: (serial: Int, ids: [JSONValue], batch: Bool, task: Task<Void, Never>)] = [:]
        var serial = 0
        var inputEnded = false
        var endWaiters: [CheckedContinuation<Void, Never>] = []
        var drainWaiters: [CheckedContinuation<Void, Never>] = []
        var removeLegacyListener: (@Sendable () -> Void)?
    }

    private let core: MCPServerCore
    private let input: Int32
    /// Writes one message, given as pieces of its text.
    private let output: @Sendable ([String]) -> Void
    private let connectionID: String
    private let rejectsDuplicateKeys: Bool
    private let state = Mutex(State())
    /// Where requests read from a descriptor run; nil in process (fed with `ingest`) or without an eventfd.
    private let loop: ReadLoop?

    /// Over two file descriptors; `start()` begins reading.
    /// `rejectsDuplicateKeys: false` reads a repeated key as lenient parsers do (the first copy is kept, as
    /// JSONDecoder keeps it): for a mock that must behave like such a server.
    /// `busyPoll`: how long the reading thread spins before it sleeps (see `ReadLoop.init(busyPoll:)`).
    public convenience init(
        core: MCPServerCore, input: Int32 = STDIN_FILENO, output: Int32 = STDOUT_FILENO, connectionID: String,
        rejectsDuplicateKeys: Bool = true, busyPoll: Duration = .zero
    ) {
        let writeLock = Mutex(())
        // A pipe of 1 MiB (the unprivileged maximum) instead of 64 KiB: a tools/list answer (95 KB) is then one
        // write that never waits for the client to drain the pipe. Not a pipe, or refused: nothing changes.
        _ = corral_set_pipe_size(output, 1 << 20)
        self.init(
            core: core, input: input, connectionID: connectionID, rejectsDuplicateKeys: rejectsDuplicateKeys,
            busyPoll: busyPoll
        ) { pieces in
            writeLock.withLock { _ in _ = writeLine(pieces, to: output) }
        }
    }

    /// In process: messages go in through `ingest`, and out through `send` (one message per call, in order).
    public convenience init(core: MCPServerCore, connectionID: String, send: @escaping @Sendable (Data) -> Void) {
        self.init(core: core, input: -1, connectionID: connectionID, rejectsDuplicateKeys: true, busyPoll: .zero) { pieces in
            send(Data(pieces.joined().utf8))
        }
    }

    private init(
        core: MCPServerCore, input: Int32, connectionID: String, rejectsDuplicateKeys: Bool, busyPoll: Duration,
        output: @escaping @Sendable ([String]) -> Void
    ) {
        self.rejectsDuplicateKeys = rejectsDuplicateKeys
        self.core = core
        self.input = input
        self.output = output
        self.connectionID = connectionID
        self.loop = input >= 0 ? ReadLoop(busyPoll: busyPoll) : nil
    }

    /// Starts reading the input descriptor on a thread of its own.
    public func start() {
        precondition(input >= 0, "start() reads a file descriptor; an in-process connection is fed with ingest")
        let flags = fcntl(input, F_GETFL)
        if flags >= 0 { _ = fcntl(input, F_SETFL, flags & ~O_NONBLOCK) }
        let thread = Thread { [self] in
            let handle = { (line: Data) in
                if !line.allSatisfy({ $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }) { self.ingest(line) }
            }
            if let loop {
                loop.run(reading: input, handle, endOfInput: endOfInput, isIdle: { state.withLock { $0.running.isEmpty } })
            } else {
                LineReader.readLines(from: input, handle)
                endOfInput()
            }
        }
        thread.name = "mcp-stdin"
        thread.start()
    }

    /// Returns once input has ended (EOF).
    public func waitForEndOfInput() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let ended = state.withLock { state -> Bool in
                if !state.inputEnded { state.endWaiters.append(waiter) }
                return state.inputEnded
            }
            if ended { waiter.resume() }
        }
    }

    /// Returns once every request received has been answered (or cancelled by the client), or after `timeout`.
    public func waitUntilDrained(timeout: Duration) async {
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            self?.releaseDrainWaiters()
        }
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let drained = state.withLock { state -> Bool in
                if !state.running.isEmpty { state.drainWaiters.append(waiter) }
                return state.running.isEmpty
            }
            if drained { waiter.resume() }
        }
        timer.cancel()
    }

    public var requestsInFlight: Int { state.withLock { $0.running.count } }

    /// The executor requests read from the descriptor run on (the reading thread), for work that ends in one of
    /// their answers; nil in process.
    public var executor: (any TaskExecutor)? { loop }

    // MARK: - inbound

    /// One message (or batch) from the client.
    public func ingest(_ line: Data) {
        let message: JSONValue
        do {
            message = try rejectsDuplicateKeys ? JSONValue.parseRejectingDuplicateKeys(line) : JSONValue.parse(line)
        } catch {
            send(JSONRPC.error(id: nil, .parseError("\(error)")))
            return
        }
        if let batch = message.arrayValue {
            ingestBatch(batch)
            return
        }
        switch JSONRPCMessage.classify(message) {
        case .failure(let shape):
            send(JSONRPC.error(id: shape.id, shape.error))
        case .success(.request(let id, let method, let params)):
            switch admit(id: id, method: method, params: params) {
            case .answer(let answer): send(answer)
            case .run(let context): run(id: id, method: method, params: params, context: context)
            }
        case .success(.notification(let method, let params)):
            notification(method, params)
        case .success(.response), .success(.errorResponse):
            break  // this server sends no requests, so there is nothing to match
        }
    }

    /// JSON-RPC batches exist only before 2026-07-28 (and 2025-06-18 dropped them too; old clients still send
    /// them): each element is answered, the answers as one array.
    private func ingestBatch(_ batch: [JSONValue]) {
        let modern = state.withLock { state -> Bool in
            if case .modern = state.era { return true }
            return false
        }
        guard !modern, !batch.isEmpty else {
            send(JSONRPC.error(id: nil, .invalidRequest(batch.isEmpty ? "empty batch" : "2026-07-28 has no batches")))
            return
        }
        var jobs: [(id: JSONValue, method: String, params: JSONValue, context: RequestContext)] = []
        var answers: [JSONValue] = []
        for element in batch {
            switch JSONRPCMessage.classify(element) {
            case .failure(let shape): answers.append(JSONRPC.error(id: shape.id, shape.error))
            case .success(.request(let id, let method, let params)):
                if params.hasModernEnvelope {
                    answers.append(JSONRPC.error(id: id, .invalidRequest("a batch cannot carry 2026-07-28 requests")))
                    continue
                }
                switch admit(id: id, method: method, params: params) {
                case .answer(let answer): answers.append(answer)
                case .run(let context): jobs.append((id, method, params, context))
                }
            case .success(.notification(let method, let params)): notification(method, params)
            case .success: break
            }
        }
        guard !jobs.isEmpty else {
            if !answers.isEmpty { send(.array(answers)) }
            return
        }
        let core = self.core
        let collected = answers
        let batchJobs = jobs
        track(key: "batch:" + JSONRPC.key(.array(batchJobs.map(\.id))), ids: batchJobs.map(\.id), batch: true) {
            var all = collected
            await withTaskGroup(of: JSONValue.self) { group in
                for job in batchJobs {
                    group.addTask { await core.respond(id: job.id, method: job.method, params: job.params, context: job.context) }
                }
                for await answer in group { all.append(answer) }
            }
            return JSONValue.array(all).jsonString()
        }
    }

    private enum Admission {
        case answer(JSONValue)
        case run(RequestContext)
    }

    /// Settles the era on the first request, and refuses what the settled era does not speak.
    private func admit(id: JSONValue, method: String, params: JSONValue) -> Admission {
        let modern = params.hasModernEnvelope && method != "initialize"
        let era = state.withLock { state -> Era in
            if case .undecided = state.era {
                state.era = modern ? .modern : .legacy(version: ProtocolVersions.latestLegacy, capabilities: [:])
            }
            return state.era
        }
        switch era {
        case .undecided:
            return .answer(JSONRPC.error(id: id, .internalError("no era")))
        case .modern:
            if method == "initialize" {
                var refusal = JSONRPCError.unsupportedProtocolVersion(params["protocolVersion"] ?? .null)
                refusal.message = "this connection serves 2026-07-28; the initialize handshake is not accepted"
                return .answer(JSONRPC.error(id: id, refusal))
            }
            switch ModernEnvelope.validate(method: method, params: params, headers: nil) {
            case .failure(let error): return .answer(JSONRPC.error(id: id, error))
            case .success(let envelope):
                return .run(context(id: id, era: .modern(version: envelope.protocolVersion), envelope: envelope, capabilities: nil))
            }
        case .legacy(let version, let capabilities):
            if method == "initialize" {
                let (result, settled) = core.initializeResult(params)
                let offered = params["capabilities"] ?? [:]
                // Held until the input ends (then removed), so it may hold the connection.
                let listener = core.listeners.addLegacy { self.send($0) }
                let previous = state.withLock { state -> (@Sendable () -> Void)? in
                    state.era = .legacy(version: settled, capabilities: offered)
                    defer { state.removeLegacyListener = listener }
                    return state.removeLegacyListener
                }
                previous?()
                return .answer(JSONRPC.response(id: id, result: result))
            }
            if params.hasModernEnvelope {
                return .answer(
                    JSONRPC.error(
                        id: id,
                        .invalidRequest(
                            "this connection serves \(version) (it began with initialize); 2026-07-28 requests are not accepted on it")))
            }
            return .run(context(id: id, era: .legacy(version: version), envelope: nil, capabilities: capabilities))
        }
    }

    private func context(id: JSONValue, era: MCPEra, envelope: ModernEnvelope?, capabilities: JSONValue?) -> RequestContext {
        RequestContext(
            id: id, era: era, envelope: envelope, legacyCapabilities: capabilities, session: connectionID,
            notify: { [weak self] message in self?.send(message) })
    }

    private func run(id: JSONValue, method: String, params: JSONValue, context: RequestContext) {
        let core = self.core
        let key = JSONRPC.key(id)
        if state.withLock({ $0.running[key] != nil }) {
            send(JSONRPC.error(id: id, .invalidRequest("id \(key) is already in use by a request in flight")))
            return
        }
        if let answer = core.immediateAnswer(id: id, method: method, params: params, context: context) {
            output(answer.pieces)
            return
        }
        track(key: key, ids: [id], batch: false) {
            await core.respondText(id: id, method: method, params: params, context: context).text
        }
    }

    /// Runs `body` as the request `key`, sends its answer unless the client cancelled it (or a stopping server
    /// answered it already), and keeps count.
    private func track(key: String, ids: [JSONValue], batch: Bool, _ body: @escaping @Sendable () async -> String) {
        state.withLock { state in
            state.serial += 1
            let serial = state.serial
            let task = Task(executorPreference: loop) { [weak self] in
                let answer = await body()
                guard let self else { return }
                let mine = self.state.withLock { state -> Bool in
                    guard state.running[key]?.serial == serial else { return false }
                    state.running[key] = nil
                    return true
                }
                if mine { self.output([answer]) }
                self.releaseIfDrained()
            }
            state.running[key] = (serial, ids, batch, task)
        }
    }

    /// Answers every request still running with `error` (a batch with one error per request) and cancels its work:
    /// a server that stops answers what it was asked, even what would take long (a `wait` of an hour).
    public func answerRemaining(_ error: JSONRPCError) {
        let remaining = state.withLock { state in
            defer { state.running.removeAll() }
            return Array(state.running.values)
        }
        for request in remaining {
            request.task.cancel()
            let answers = request.ids.map { JSONRPC.error(id: $0, error) }
            send(request.batch ? .array(answers) : answers[0])
        }
        releaseDrainWaiters()
    }

    private func notification(_ method: String, _ params: JSONValue) {
        guard method == "notifications/cancelled", let id = params["requestId"] else { return }
        let task = state.withLock { $0.running.removeValue(forKey: JSONRPC.key(id))?.task }
        task?.cancel()
        releaseIfDrained()
    }

    /// The client is gone (in process: it closed its end).
    public func endOfInput() {
        let (waiters, removeListener) = state.withLock { state in
            state.inputEnded = true
            defer { state.endWaiters.removeAll() }
            return (state.endWaiters, state.removeLegacyListener)
        }
        removeListener?()
        for waiter in waiters { waiter.resume() }
    }

    private func releaseIfDrained() {
        if state.withLock({ $0.running.isEmpty }) { releaseDrainWaiters() }
    }

    private func releaseDrainWaiters() {
        let waiters = state.withLock { state in
            defer { state.drainWaiters.removeAll() }
            return state.drainWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    // MARK: - outbound

    func send(_ message: JSONValue) {
        output([message.jsonString()])
    }
}
