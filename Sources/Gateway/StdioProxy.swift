import CorralJSON
import Foundation
import Policy
import Synchronization

/// `corral proxy` over stdio: sits between an MCP client (our stdin/stdout) and a stdio MCP server (a child),
/// forwarding every message byte for byte except what the policy decides: `tools/list` results are filtered and
/// `tools/call` requests are decided before they reach the server (a denial is answered here, and the server never
/// sees the call). Counters reserved for a call are rolled back when the server answers it with a JSON-RPC error.
public final class StdioProxy: Sendable {
    private struct Pending {
        var toolLists: Set<String> = []
        var reservations: [String: Reservation] = [:]
    }

    private let policy: PolicyEvaluator
    private let identity: CallIdentity
    private let audit: (any AuditSink)?
    private let dryRun: Bool
    private let pending = Mutex(Pending())
    private let outputLock = Mutex(())

    /// `dryRun`: decisions are made and audited as usual, but every call is forwarded (for rolling out a policy).
    public init(policy: PolicyEvaluator, identity: CallIdentity, audit: (any AuditSink)?, dryRun: Bool = false) {
        self.policy = policy
        self.identity = identity
        self.audit = audit
        self.dryRun = dryRun
    }

    /// Replaces the policy if `path` now holds a valid one. A valid change applies to the next call and clients are
    /// told the tool list changed; an invalid file is refused (every error returned) and the old policy stays.
    public func reload(from path: String) -> Result<Bool, PolicyLoadError> {
        let loaded: Policy
        do {
            loaded = try Policy.load(contentsOfFile: path)
        } catch {
            return .failure(error)
        }
        guard loaded.revision != policy.policy.revision else { return .success(false) }
        _ = policy.replacePolicy(loaded)
        writeToClient(["jsonrpc": "2.0", "method": "notifications/tools/list_changed"])
        return .success(true)
    }

    /// Runs the server command and proxies until the client's input ends or the server exits; returns the server's
    /// exit status (128+N for a signal).
    public func run(serverCommand: [String]) throws -> Int32 {
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        server.arguments = serverCommand
        let toServer = Pipe()
        let fromServer = Pipe()
        server.standardInput = toServer
        server.standardOutput = fromServer
        server.standardError = FileHandle.standardError
        try server.run()
        let serverWriter = toServer.fileHandleForWriting

        let clientThread = Thread { [self] in
            LineReader.readLines(from: FileHandle.standardInput) { line in
                self.fromClient(line, toServer: serverWriter)
            }
            // The client is gone: the server's input ends too, and it shuts down as it would without us.
            try? serverWriter.close()
        }
        clientThread.start()
        LineReader.readLines(from: fromServer.fileHandleForReading) { line in
            self.fromServer(line)
        }
        server.waitUntilExit()
        return server.terminationReason == .uncaughtSignal ? 128 + server.terminationStatus : server.terminationStatus
    }

    // MARK: - client → server

    func fromClient(_ line: Data, toServer server: FileHandle) {
        guard let message = try? JSONValue.parse(line) else {
            forward(line, to: server)  // not ours to judge: the server answers its own parse errors
            return
        }
        switch message {
        case .array(let batch):
            // Each call in a batch is decided alone; allowed messages go on as one batch, denials are answered here.
            var forwarded: [JSONValue] = []
            for element in batch {
                if let denial = decide(element) {
                    writeToClient(denial)
                } else {
                    forwarded.append(element)
                }
            }
            if !forwarded.isEmpty { forward(Data(JSONValue.array(forwarded).jsonString().utf8), to: server) }
        default:
            if let denial = decide(message) {
                writeToClient(denial)
            } else {
                forward(line, to: server)
            }
        }
    }

    /// The response to send back instead of forwarding, or nil to forward.
    func decide(_ message: JSONValue) -> JSONValue? {
        guard let method = message["method"]?.stringValue else { return nil }
        let id = message["id"]
        if method == "tools/list", let id {
            pending.withLock { _ = $0.toolLists.insert(id.jsonString()) }
            return nil
        }
        guard method == "tools/call" else { return nil }
        // Whatever the params look like, the policy judges them (fail closed): a missing name or arguments that are
        // not an object are denied and never reach the server.
        let params = message["params"]
        let name = params?["name"]?.stringValue
        let arguments = params?.objectValue == nil ? JSONValue.string("(params not an object)") : params?["arguments"]
        let start = ContinuousClock.now
        let decision = policy.decide(tool: name, arguments: arguments, identity: identity)
        let elapsed = ContinuousClock.now - start
        audit?.record(
            AuditEntry(
                decision: decision, arguments: arguments, identity: identity,
                latencyMicroseconds: elapsed.microseconds, dryRun: dryRun))
        if let denial = decision.deniedToolResult, !dryRun {
            guard let id else { return .null }  // a call without an id cannot be answered; it is dropped
            return ["jsonrpc": "2.0", "id": id, "result": denial]
        }
        if let id, let reservation = decision.reservation {
            pending.withLock { $0.reservations[id.jsonString()] = reservation }
        }
        return nil
    }

    // MARK: - server → client

    func fromServer(_ line: Data) {
        // Most answers need nothing from us: parse only while a tools/list or a counted call awaits its answer.
        let waiting = pending.withLock { !$0.toolLists.isEmpty || !$0.reservations.isEmpty }
        guard waiting, let message = try? JSONValue.parse(line) else {
            writeRawToClient(line)
            return
        }
        let messages = message.arrayValue ?? [message]
        var rewritten = false
        var out: [JSONValue] = []
        for element in messages {
            guard element["method"] == nil, let id = element["id"]?.jsonString() else {
                out.append(element)
                continue
            }
            let (isToolList, reservation) = pending.withLock { state in
                (state.toolLists.remove(id) != nil, state.reservations.removeValue(forKey: id))
            }
            if element["error"] != nil { _ = try? reservation?.rollback() }
            if isToolList, let result = element["result"] {
                out.append(element.merging(["result": policy.policy.filterToolsListResult(result)]))
                rewritten = true
            } else {
                out.append(element)
            }
        }
        if !rewritten {
            writeRawToClient(line)
        } else {
            writeToClient(message.arrayValue == nil ? out[0] : .array(out))
        }
    }

    // MARK: - output

    private func forward(_ line: Data, to server: FileHandle) {
        try? server.write(contentsOf: line + Data("\n".utf8))
    }

    private func writeToClient(_ message: JSONValue) {
        guard !message.isNull else { return }
        writeRawToClient(Data(message.jsonString().utf8))
    }

    private func writeRawToClient(_ line: Data) {
        outputLock.withLock { _ in
            try? FileHandle.standardOutput.write(contentsOf: line + Data("\n".utf8))
        }
    }
}
