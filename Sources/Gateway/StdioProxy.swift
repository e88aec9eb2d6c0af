import CCorral
import CorralJSON
import Foundation
import Policy
import Synchronization

/// `corral proxy` over stdio: an MCP client on this process's stdin/stdout, a stdio MCP server as a child, and a
/// `ProxyCore` between them.
public final class StdioProxy: Sendable {
    private let core: Mutex<ProxyCore?> = Mutex(nil)
    private let evaluator: PolicyEvaluator
    private let identity: CallIdentity
    private let audit: (any AuditSink)?
    private let dryRun: Bool
    private let approvalTimeout: Duration

    /// `dryRun`: decisions are made and audited as usual, but every call is forwarded (for rolling out a policy).
    public init(
        policy: PolicyEvaluator, identity: CallIdentity, audit: (any AuditSink)?, dryRun: Bool = false,
        approvalTimeout: Duration = .seconds(60)
    ) {
        self.evaluator = policy
        self.identity = identity
        self.audit = audit
        self.dryRun = dryRun
        self.approvalTimeout = approvalTimeout
    }

    /// Replaces the policy if `path` now holds a valid one. A valid change applies to the next call and the client
    /// is told the tool list changed; an invalid file is refused (every error returned) and the old policy stays.
    public func reload(from path: String) -> Result<Bool, PolicyLoadError> {
        PolicyReload.apply(path, to: evaluator).map { changed in
            if changed { core.withLock { $0 }?.announceToolListChanged() }
            return changed
        }
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
        let serverInput = toServer.fileHandleForWriting.fileDescriptor
        let clientOutput = Mutex(())
        let core = ProxyCore(
            evaluator: evaluator, identity: identity, audit: audit, dryRun: dryRun, approvalTimeout: approvalTimeout,
            toClient: { line in clientOutput.withLock { _ in Self.writeLine(line, to: STDOUT_FILENO) } },
            toServer: { line in Self.writeLine(line, to: serverInput) })
        self.core.withLock { $0 = core }

        let clientThread = Thread {
            LineReader.readLines(from: FileHandle.standardInput) { core.fromClient($0) }
            // The client is gone: the server's input ends too, and it shuts down as it would without us.
            try? toServer.fileHandleForWriting.close()
        }
        clientThread.start()
        LineReader.readLines(from: fromServer.fileHandleForReading) { core.fromServer($0) }
        server.waitUntilExit()
        return server.terminationReason == .uncaughtSignal ? 128 + server.terminationStatus : server.terminationStatus
    }

    /// One message and its newline in a single write, so concurrent writers never interleave inside a line.
    static func writeLine(_ message: Data, to fd: Int32) {
        var line = message
        line.append(UInt8(ascii: "\n"))
        _ = line.withUnsafeBytes { corral_write_all_nosigpipe(fd, $0.baseAddress, $0.count) }
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
