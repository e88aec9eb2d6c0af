import CCorral
import CorralJSON
import Foundation
import MCP
import MCPCore
import Policy
import Synchronization

/// `corral proxy`: a `ProxyCore` between MCP clients and a stdio MCP server — one client on this process's stdio
/// (`runStdio`), or one server process per Streamable HTTP session (`startSession`). Every connection shares the
/// policy, its counters and the audit sink; a reload is announced to all of them.
public final class PolicyProxy: Sendable {
    private let cores = Mutex<[ObjectIdentifier: ProxyCore]>([:])
    private let stdioServer = Mutex<ServerProcess?>(nil)
    private let evaluator: PolicyEvaluator
    private let grant: String?
    private let audit: (any AuditSink)?
    private let dryRun: Bool
    private let approvalTimeout: Duration
    private let approvalStates: ApprovalStates

    /// `dryRun`: decisions are made and audited as usual, but every call is forwarded (for rolling out a policy).
    /// `approvalSecret`: the key that seals 2026-07-28 approval states (shared by proxies that must honour each
    /// other's); without one, a key is drawn for this process.
    public init(
        policy: PolicyEvaluator, grant: String?, audit: (any AuditSink)?, dryRun: Bool = false,
        approvalTimeout: Duration = .seconds(60), approvalSecret: [UInt8]? = nil
    ) {
        self.approvalStates = ApprovalStates(secret: approvalSecret, lifetime: approvalTimeout)
        self.evaluator = policy
        self.grant = grant
        self.audit = audit
        self.dryRun = dryRun
        self.approvalTimeout = approvalTimeout
    }

    /// Replaces the policy if `path` now holds a valid one. A valid change applies to the next call and every client
    /// is told the tool list changed; an invalid file is refused (every error returned) and the old policy stays.
    public func reload(from path: String) -> Result<Bool, PolicyLoadError> {
        PolicyReload.apply(path, to: evaluator).map { changed in
            if changed {
                for core in cores.withLock({ Array($0.values) }) { core.announceToolListChanged() }
            }
            return changed
        }
    }

    private func makeCore(session: String, toClient: @escaping ProxyCore.Sink, toServer: @escaping ProxyCore.Sink) -> ProxyCore {
        let core = ProxyCore(
            evaluator: evaluator, identity: CallIdentity(grant: grant, session: session), audit: audit, dryRun: dryRun,
            approvalTimeout: approvalTimeout, approvalStates: approvalStates, toClient: toClient, toServer: toServer)
        cores.withLock { $0[ObjectIdentifier(core)] = core }
        return core
    }

    private func forget(_ core: ProxyCore) {
        cores.withLock { $0[ObjectIdentifier(core)] = nil }
    }

    // MARK: - stdio

    /// Runs the server command and proxies this process's stdio until the client's input ends or the server exits;
    /// returns the server's exit status (128+N for a signal).
    public func runStdio(serverCommand: [String]) throws -> Int32 {
        let server = try ServerProcess(command: serverCommand)
        stdioServer.withLock { $0 = server }
        let clientOutput = Mutex(())
        let core = makeCore(
            session: UUID().uuidString.lowercased(),
            toClient: { line in clientOutput.withLock { _ in _ = writeLine(line, to: STDOUT_FILENO) } },
            toServer: server.write)
        defer { forget(core) }
        let clientThread = Thread {
            LineReader.readLines(from: FileHandle.standardInput) { core.fromClient($0) }
            // The client is gone: the server's input ends too, and it shuts down as it would without us.
            server.closeInput()
        }
        clientThread.start()
        LineReader.readLines(from: server.output) { core.fromServer($0) }
        return server.waitForExit()
    }

    /// Passes a signal on to the stdio server (the proxy then exits with the server's status, as usual).
    public func signalServer(_ signal: Int32) {
        stdioServer.withLock { $0 }?.signal(signal)
    }

    // MARK: - Streamable HTTP

    /// Starts a server process for one HTTP session and proxies between it and the session's transport. The
    /// returned closure ends the session (and the server process). When the server exits on its own, the requests
    /// it still owed get JSON-RPC errors and `onServerExit` is called (to drop the session).
    public func startSession(
        id: String, transport: any Transport, serverCommand: [String],
        onServerExit: @escaping @Sendable () -> Void = {}
    ) async throws -> @Sendable () async -> Void {
        try await transport.connect()
        let server = try ServerProcess(command: serverCommand)
        // Answers go out in order through one sender; the transport routes each to its request's stream.
        let (outbound, outboundQueue) = AsyncStream<Data>.makeStream()
        let core = makeCore(session: id, toClient: { outboundQueue.yield($0) }, toServer: server.write)
        let sender = Task {
            for await message in outbound { try? await transport.send(message) }
        }
        let receiver = Task {
            do {
                for try await message in await transport.receive() { core.fromClient(message) }
            } catch {}
            server.closeInput()
        }
        let reader = Thread {
            LineReader.readLines(from: server.output) { core.fromServer($0) }
            core.serverEnded(server.exitDescription())
            outboundQueue.finish()
            onServerExit()
        }
        reader.start()
        return { [weak self] in
            receiver.cancel()
            server.closeInput()
            await server.stop(grace: .seconds(2))
            outboundQueue.finish()
            await sender.value
            await transport.disconnect()
            self?.forget(core)
        }
    }
}

/// Loading a changed policy file into a running evaluator.
public enum PolicyReload {
    /// `.success(true)` when a valid, different policy now applies; `.success(false)` when nothing changed.
    public static func apply(_ path: String, to evaluator: PolicyEvaluator) -> Result<Bool, PolicyLoadError> {
        let loaded: Policy
        do {
            loaded = try Policy.load(contentsOfFile: path)
        } catch {
            return .failure(error)
        }
        guard loaded.revision != evaluator.policy.revision else { return .success(false) }
        _ = evaluator.replacePolicy(loaded)
        return .success(true)
    }
}
