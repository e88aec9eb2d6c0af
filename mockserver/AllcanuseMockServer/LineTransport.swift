import Foundation
import Gateway
import Glibc
import Logging
import MCP

/// Newline-delimited JSON-RPC over two file descriptors (stdio), replacing the SDK's `StdioTransport`, which polls a
/// non-blocking stdin with 10 ms sleeps (up to 10 ms added to every call) and ends the server at EOF while requests
/// are still running (their responses are lost).
///
/// A dedicated thread blocks in read(2); one consumer task keeps the order of lines. The transport answers what the
/// SDK would answer wrongly (a parse error gets id null, not a random id), removes non-string `experimental`
/// capabilities from `initialize` (the SDK's client type holds only strings), and counts requests in flight so that
/// the server can answer all of them before it exits.
public actor LineTransport: Transport {
    public nonisolated let logger: Logger
    private let input: Int32
    private let output: Int32
    private let messages: AsyncThrowingStream<Data, Swift.Error>
    private let messageSink: AsyncThrowingStream<Data, Swift.Error>.Continuation
    private var inFlight: Set<String> = []
    private var inputEnded = false
    private var drainWaiters: [CheckedContinuation<Void, Never>] = []
    private var endWaiters: [CheckedContinuation<Void, Never>] = []
    private var connected = false

    public init(input: Int32 = STDIN_FILENO, output: Int32 = STDOUT_FILENO, logger: Logger) {
        self.input = input
        self.output = output
        self.logger = logger
        (messages, messageSink) = AsyncThrowingStream<Data, Swift.Error>.makeStream()
    }

    public func connect() async throws {
        guard !connected else { return }
        connected = true
        // Blocking reads on a thread of their own: no polling, and nothing else waits behind them.
        let flags = fcntl(input, F_GETFL)
        if flags >= 0 { _ = fcntl(input, F_SETFL, flags & ~O_NONBLOCK) }
        let (lines, lineSink) = AsyncStream<Data?>.makeStream()
        let fd = input
        let thread = Thread {
            LineReader.readLines(from: fd) { line in
                if !line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") }) { lineSink.yield(line) }
            }
            lineSink.yield(nil)
            lineSink.finish()
        }
        thread.name = "allcanuse-mock-stdin"
        thread.start()
        Task {
            for await line in lines {
                if let line {
                    await self.ingest(line)
                } else {
                    await self.endOfInput()
                }
            }
        }
    }

    public func disconnect() async {
        messageSink.finish()
    }

    public func send(_ data: Data) async throws {
        var framed = data
        framed.append(UInt8(ascii: "\n"))
        try writeAll(framed)
        noteOutgoing(data)
    }

    public nonisolated func receive() -> AsyncThrowingStream<Data, Swift.Error> {
        messages
    }

    /// Returns once stdin has ended (EOF).
    public func waitForEndOfInput() async {
        if inputEnded { return }
        await withCheckedContinuation { endWaiters.append($0) }
    }

    /// Returns once every request received has been answered (or cancelled by the client), or after `timeout`.
    public func waitUntilDrained(timeout: Duration) async {
        if inFlight.isEmpty { return }
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            await self?.releaseDrainWaiters()
        }
        await withCheckedContinuation { drainWaiters.append($0) }
        timer.cancel()
    }

    /// Requests received and not yet answered.
    public var requestsInFlight: Int { inFlight.count }

    // MARK: - inbound

    private func ingest(_ line: Data) {
        guard let parsed = try? JSONSerialization.jsonObject(with: line, options: [.fragmentsAllowed]) else {
            answer(id: nil, code: -32700, message: "Parse error")
            return
        }
        if let batch = parsed as? [Any] {
            guard !batch.isEmpty else {
                answer(id: nil, code: -32600, message: "Invalid Request: empty batch")
                return
            }
            for case let message as [String: Any] in batch { track(message) }
            messageSink.yield(line)
            return
        }
        guard var message = parsed as? [String: Any] else {
            answer(id: nil, code: -32600, message: "Invalid Request: not a JSON-RPC object")
            return
        }
        let isRequest = message["method"] != nil
        let isResponse = message["result"] != nil || message["error"] != nil
        guard isRequest || isResponse else {
            answer(id: message["id"], code: -32600, message: "Invalid Request: no method, result or error")
            return
        }
        if message["method"] as? String == "initialize", var params = message["params"] as? [String: Any],
            var capabilities = params["capabilities"] as? [String: Any],
            let experimental = capabilities["experimental"] as? [String: Any],
            experimental.values.contains(where: { !($0 is String) })
        {
            // Spec-valid objects here would fail the SDK's decoding of the whole initialize.
            capabilities["experimental"] = nil
            params["capabilities"] = capabilities
            message["params"] = params
            if let rewritten = try? JSONSerialization.data(withJSONObject: message) {
                track(message)
                messageSink.yield(rewritten)
                return
            }
        }
        track(message)
        messageSink.yield(line)
    }

    private func track(_ message: [String: Any]) {
        if message["method"] as? String == "notifications/cancelled",
            let params = message["params"] as? [String: Any], let id = params["requestId"]
        {
            inFlight.remove(Self.key(id))
            releaseIfDrained()
        } else if message["method"] != nil, let id = message["id"] {
            inFlight.insert(Self.key(id))
        }
    }

    private func endOfInput() {
        inputEnded = true
        let waiters = endWaiters
        endWaiters.removeAll()
        for waiter in waiters { waiter.resume() }
    }

    // MARK: - outbound

    private func noteOutgoing(_ data: Data) {
        guard let parsed = try? JSONSerialization.jsonObject(with: data) else { return }
        let messages = (parsed as? [Any]) ?? [parsed]
        for case let message as [String: Any] in messages
        where message["method"] == nil && (message["result"] != nil || message["error"] != nil) {
            if let id = message["id"] { inFlight.remove(Self.key(id)) }
        }
        releaseIfDrained()
    }

    private func releaseIfDrained() {
        if inFlight.isEmpty { releaseDrainWaiters() }
    }

    private func releaseDrainWaiters() {
        let waiters = drainWaiters
        drainWaiters.removeAll()
        for waiter in waiters { waiter.resume() }
    }

    private func answer(id: Any?, code: Int, message: String) {
        var response: [String: Any] = ["jsonrpc": "2.0", "error": ["code": code, "message": message]]
        response["id"] = id ?? NSNull()
        guard let data = try? JSONSerialization.data(withJSONObject: response) else { return }
        var framed = data
        framed.append(UInt8(ascii: "\n"))
        try? writeAll(framed)
    }

    private func writeAll(_ data: Data) throws {
        try data.withUnsafeBytes { raw in
            guard let base = raw.baseAddress else { return }
            var written = 0
            while written < raw.count {
                let result = write(output, base + written, raw.count - written)
                if result < 0 {
                    if errno == EINTR { continue }
                    throw MCPError.transportError(POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO))
                }
                written += result
            }
        }
    }

    /// JSON-RPC ids are strings or numbers; "1" and 1 are different ids.
    /// Numbers by value: the SDK writes `1.0` back as `1` and `1e2` as `100`, and the two must match.
    private static func key(_ id: Any) -> String {
        if let string = id as? String { return "s:" + string }
        if let number = id as? NSNumber {
            let value = number.doubleValue
            if value.rounded() == value, let exact = Int(exactly: value) { return "n:\(exact)" }
            return "n:\(value)"
        }
        return "n:\(id)"
    }
}
