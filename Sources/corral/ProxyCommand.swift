import ArgumentParser
import Foundation
import Gateway
import Policy

/// `corral proxy`: a policy gateway in front of any stdio MCP server.
struct ProxyCommand: ParsableCommand {
    static func modificationDate(_ path: String) -> Date? {
        (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date
    }

    static let configuration = CommandConfiguration(
        commandName: "proxy",
        abstract: "Sit between an MCP client (this process's stdio) and a stdio MCP server, enforcing a policy.",
        discussion: """
            Every message is forwarded as it is, except: tools/list results lose the tools the policy hides, and each
            tools/call (also inside a JSON-RPC batch) is decided first — a denial is answered here with isError and
            "[POLICY DENIED] …", and the server never sees the call. Calls whose params do not parse are denied.
            Counters are rolled back when the server answers a call with a JSON-RPC error. A require_approval call is
            put to the user through MCP elicitation (accept lets it through, anything else or no answer within
            --approval-timeout denies it); a client without the elicitation capability gets a denial saying approval
            was required. Exits with the server's status; when the client's input ends, the server's input is closed.
            """
    )

    @Option(help: "The PolicyLayer-format policy.json.") var policy: String
    @Option(help: "Grant id for grant-scoped counters.") var grant = "local"
    @Option(help: "Append one JSON line per decision to this file (argument keys and a hash, never values).")
    var audit: String?
    @Flag(help: "Record the real decisions (audit) but forward every call: for rolling out a new policy.")
    var dryRun = false
    @Option(help: "How long a require_approval call waits for the user's answer (asked through MCP elicitation), in seconds; then it is denied.")
    var approvalTimeout = 60
    @Option(help: "How often the policy file is checked for changes, in milliseconds (0: never).")
    var reloadIntervalMs = 500
    @Argument(parsing: .captureForPassthrough, help: "The server command and its arguments, after --.")
    var server: [String] = []

    func run() throws {
        let command = server.first == "--" ? Array(server.dropFirst()) : server
        guard approvalTimeout > 0 else { throw ValidationError("--approval-timeout must be at least 1 second") }
        guard !command.isEmpty else { throw ValidationError("no server command; usage: corral proxy --policy FILE -- CMD ARGS…") }
        let loaded: Policy
        do {
            loaded = try Policy.load(contentsOfFile: policy)
        } catch {
            FileHandle.standardError.write(Data("corral proxy: \(policy): \(error)\n".utf8))
            throw ExitCode(2)
        }
        signal(SIGPIPE, SIG_IGN)
        let proxy = StdioProxy(
            policy: PolicyEvaluator(policy: loaded),
            identity: CallIdentity(grant: grant, session: UUID().uuidString.lowercased()),
            audit: try audit.map { try AuditLog(path: $0) }, dryRun: dryRun, approvalTimeout: .seconds(approvalTimeout))
        if reloadIntervalMs > 0 {
            // Hot reload: a valid new file applies to the next call; an invalid one is refused and the old stays.
            let path = policy
            let interval = reloadIntervalMs
            let watcher = Thread {
                var lastModified = Self.modificationDate(path)
                while true {
                    Thread.sleep(forTimeInterval: Double(interval) / 1000)
                    let modified = Self.modificationDate(path)
                    guard modified != lastModified else { continue }
                    lastModified = modified
                    switch proxy.reload(from: path) {
                    case .success(true): FileHandle.standardError.write(Data("corral proxy: policy reloaded\n".utf8))
                    case .success(false): break
                    case .failure(let error):
                        FileHandle.standardError.write(
                            Data("corral proxy: new policy refused, keeping the old one: \(error)\n".utf8))
                    }
                }
            }
            watcher.start()
        }
        let status = try proxy.run(serverCommand: command)
        throw ExitCode(status)
    }
}
