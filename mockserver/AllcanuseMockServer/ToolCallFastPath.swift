import AllcanuseMock
import CorralJSON
import Foundation
import Logging
import MCP

/// A transport in front of the SDK's `Server` that answers `tools/call` itself, straight from raw JSON, and passes
/// everything else on to the server.
///
/// Why: the SDK's request handler encodes every result and decodes it back into `Value`, whose decoder compiles a
/// data-URL regular expression for every string (perf: 55 % of the mock's CPU per call). Here a call's params are
/// parsed once into `JSONValue`, the same `MockServer.call` runs, and the answer is written as JSON; strings that
/// look like data URLs also come back as they were. A batch still goes through the SDK (it is rare, and the SDK
/// answers batches as a whole). `notifications/cancelled` cancels a call running here.
public actor ToolCallFastPath: Transport {
    public typealias Handler = @Sendable (_ params: JSONValue, _ progress: AllcanuseService.ProgressReporter?) async -> JSONValue

    public nonisolated let logger: Logger
    private let inner: any Transport
    private let handle: Handler
    private var running: [String: (serial: Int, task: Task<Void, Never>)] = [:]
    private var serial = 0
    private let messages: AsyncThrowingStream<Data, Swift.Error>
    private let messageSink: AsyncThrowingStream<Data, Swift.Error>.Continuation
    private var pump: Task<Void, Never>?

    public init(wrapping inner: any Transport, logger: Logger, handle: @escaping Handler) {
        self.inner = inner
        self.logger = logger
        self.handle = handle
        (messages, messageSink) = AsyncThrowingStream.makeStream()
    }

    public func connect() async throws {
        try await inner.connect()
        let incoming = await inner.receive()
        pump = Task {
            do {
                for try await message in incoming { self.route(message) }
                messageSink.finish()
            } catch {
                messageSink.finish(throwing: error)
            }
        }
    }

    public func disconnect() async {
        for call in running.values { call.task.cancel() }
        running.removeAll()
        pump?.cancel()
        await inner.disconnect()
        messageSink.finish()
    }

    public func send(_ data: Data) async throws {
        try await inner.send(data)
    }

    public nonisolated func receive() -> AsyncThrowingStream<Data, Swift.Error> { messages }

    private func route(_ message: Data) {
        guard let summary = JSONValue.summarizeMessage(message) else {
            messageSink.yield(message)  // a batch, or something the SDK answers with an error
            return
        }
        switch summary.method {
        case "tools/call"?:
            // Only ids MCP allows (a string or an integer); anything else is the SDK's to refuse.
            guard let id = summary.id, id.stringValue != nil || id.intValue != nil,
                let request = try? JSONValue.parseRejectingDuplicateKeys(message)
            else { break }
            start(id: id, params: request["params"] ?? .null)
            return
        case "notifications/cancelled"?:
            if let request = try? JSONValue.parse(message), let id = request["params"]?["requestId"] {
                running.removeValue(forKey: id.jsonString())?.task.cancel()
            }
        default:
            break
        }
        messageSink.yield(message)
    }

    private func start(id: JSONValue, params: JSONValue) {
        let key = id.jsonString()
        let handle = self.handle
        let logger = self.logger
        var progress: AllcanuseService.ProgressReporter?
        if let token = params["_meta"]?["progressToken"], token.stringValue != nil || token.intValue != nil {
            progress = { [weak self] done, total, text in
                var update: [String: JSONValue] = ["progressToken": token, "progress": .double(done), "message": .string(text)]
                if let total { update["total"] = .double(total) }
                let notification: JSONValue = ["jsonrpc": "2.0", "method": "notifications/progress", "params": .object(update)]
                try? await self?.send(Data(notification.jsonString().utf8))
            }
        }
        serial += 1
        let mine = serial
        let task = Task {
            // A cancelled call stops early and still answers with what it has (a wait: condition not met), as
            // the service does under the SDK's handler.
            let result = await handle(params, progress)
            let answer: JSONValue = ["jsonrpc": "2.0", "id": id, "result": result]
            do {
                try await self.send(Data(answer.jsonString().utf8))
            } catch {
                logger.warning("could not send the answer to \(key): \(error)")
            }
            self.finished(key, serial: mine)
        }
        running[key] = (mine, task)
    }

    /// Only this call's entry: a client that reused the id (against the protocol) has its own.
    private func finished(_ key: String, serial: Int) {
        if running[key]?.serial == serial { running[key] = nil }
    }
}
