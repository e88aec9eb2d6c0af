import CCorral
import CorralJSON
import Foundation
import MCPCore
import MCPHTTP
import Policy
import Synchronization

/// `corral proxy`: a `ProxyCore` between MCP clients and an MCP server (a stdio command, or a Streamable HTTP
/// endpoint) — one client on this process's stdio (`runStdio`), or Streamable HTTP clients of both eras
/// (`httpEndpoint`). Every connection shares the policy, its store and the audit sink; a reload is announced to
/// all of them.
public final class PolicyProxy: Sendable {
    private let cores = Mutex<[ObjectIdentifier: ProxyCore]>([:])
    /// The server of the stdio run, for `signalServer`.
    private let stdioServer = Mutex<(any UpstreamConnection)?>(nil)
    private let httpEndpoints = Mutex<[ProxyHTTPEndpoint]>([])
    private let evaluator: PolicyEvaluator
    private let grant: String?
    private let audit: (any AuditSink)?
    private let dryRun: Bool
    private let approvalTimeout: Duration
    private let approvalStates: ApprovalStates
    /// Task handles created through this proxy (or any sharing its store), for every client and upstream process.
    let taskHandles: TaskHandles

    /// `dryRun`: decisions are made and audited as usual, but every call is forwarded (for rolling out a policy).
    /// `approvalSecret`: the key that seals 2026-07-28 approval states (shared by proxies that must honour each
    /// other's); without one, a key is drawn for this process. Redeemed states and task owners are kept in the
    /// evaluator's store, so proxies sharing it (and the secret) act as one.
    public init(
        policy: PolicyEvaluator, grant: String?, audit: (any AuditSink)?, dryRun: Bool = false,
        approvalTimeout: Duration = .seconds(60), approvalSecret: [UInt8]? = nil
    ) {
        self.approvalStates = ApprovalStates(secret: approvalSecret, lifetime: approvalTimeout, store: policy.store)
        self.taskHandles = TaskHandles(store: policy.store)
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
                for endpoint in httpEndpoints.withLock({ $0 }) { endpoint.listeners.announceToolsListChanged() }
            }
            return changed
        }
    }

    /// A core for one client connection (or all modern clients of one grant); `grant` nil means the proxy's own.
    func makeCore(
        session: String?, grant: String? = nil, toClient: @escaping ProxyCore.Sink, toServer: @escaping ProxyCore.ServerSink
    ) -> ProxyCore {
        let core = ProxyCore(
            evaluator: evaluator, identity: CallIdentity(grant: grant ?? self.grant, session: session), audit: audit,
            dryRun: dryRun, approvalTimeout: approvalTimeout, approvalStates: approvalStates, taskHandles: taskHandles,
            toClient: toClient, toServer: toServer)
        cores.withLock { $0[ObjectIdentifier(core)] = core }
        return core
    }

    func forget(_ core: ProxyCore) {
        cores.withLock { $0[ObjectIdentifier(core)] = nil }
    }

    // MARK: - stdio

    /// Connects to the server (runs its command) and proxies this process's stdio until the client's input ends or
    /// the server is gone; returns a command's exit status (128+N for a signal), 0 for an HTTP server.
    public func runStdio(upstream: UpstreamServer) async throws -> Int32 {
        let server = try upstream.connect()
        stdioServer.withLock { $0 = server }
        let clientOutput = Mutex(())
        // A 2026-07-28 client in front of a 2025-11-25-only server: the bridge does the handshake and translates.
        let bridge = EraBridge(toServer: server.send)
        // A stdio server's lines have no raw line break; an HTTP server's messages may (pretty-printed JSON, an SSE
        // event's data lines joined): as spaces they mean the same, and the client's line stays one message.
        let joinsLines = server.lineDescriptor == nil
        let core = makeCore(
            session: UUID().uuidString.lowercased(),
            toClient: { line in
                let line = joinsLines ? ProxyCore.lineBreaksAsSpaces(line) : line
                clientOutput.withLock { _ in _ = writeLine(line, to: STDOUT_FILENO) }
            },
            toServer: bridge.send)
        bridge.attach(core.fromServer)
        defer { forget(core) }
        // Each direction one line at a time, in order (a decision may wait for the store), each on the thread that
        // read the line: no hand-over to the task pool and back per message.
        // The client is gone: the server's input ends too (see `clientEnded`).
        ThreadLane.readLines(from: STDIN_FILENO, threadName: "proxy-client", core.fromClient) {
            server.clientEnded(answersOwed: core.waitUntilAnswered)
        }
        if let descriptor = server.lineDescriptor {
            await withCheckedContinuation { (ended: CheckedContinuation<Void, Never>) in
                ThreadLane.readLines(from: descriptor, threadName: "proxy-server", bridge.received) { ended.resume() }
            }
        } else {
            for await line in server.messages() { await bridge.received(line) }
        }
        guard let process = server as? ServerProcess else { return 0 }
        return await withCheckedContinuation { exited in
            Thread { exited.resume(returning: process.waitForExit()) }.start()
        }
    }

    /// Passes a signal on to the stdio server (the proxy then exits with the server's status, as usual). An HTTP
    /// server is not ours to signal: its connection ends instead, and with it the run (the answers it still owed
    /// are not waited for).
    public func signalServer(_ signal: Int32) {
        switch stdioServer.withLock({ $0 }) {
        case let process as ServerProcess: process.signal(signal)
        case let server?: Task { await server.stop(grace: .zero) }
        case nil: break
        }
    }

    // MARK: - Streamable HTTP

    /// Serves HTTP clients of both eras in front of `upstream` (see `ProxyHTTPEndpoint`); give it to an
    /// `MCPHTTPServer`, and call `stopHTTP` when the server has stopped.
    public func httpEndpoint(upstream: UpstreamServer) -> any MCPHTTPEndpoint {
        let endpoint = ProxyHTTPEndpoint(proxy: self, upstream: upstream)
        httpEndpoints.withLock { $0.append(endpoint) }
        return endpoint
    }

    /// Stops what the HTTP endpoints started (the shared server of modern clients) and ends their listen streams.
    public func stopHTTP() async {
        for endpoint in httpEndpoints.withLock({ $0 }) { await endpoint.stop() }
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
