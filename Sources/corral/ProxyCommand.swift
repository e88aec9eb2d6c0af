import ArgumentParser
import CorralJSON
import Foundation
import Gateway
import Logging
import MCPCore
import MCPHTTP
import Policy

/// `corral proxy`: a policy gateway in front of any stdio MCP server, for a client on stdio or over HTTP.
struct ProxyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proxy",
        abstract: "Sit between MCP clients and an MCP server (a stdio command or an HTTP endpoint), enforcing a policy.",
        discussion: """
            The client talks to this process's stdio, or, with --http, over Streamable HTTP; both MCP eras are \
            served (2026-07-28 stateless requests and 2025-11-25 sessions, with the same decisions; audit lines say \
            the era). Every message is forwarded as it is, except: tools/list results lose the tools the policy \
            hides, and each tools/call (also inside a JSON-RPC batch) is decided first — a denial is answered here \
            with isError and "[POLICY DENIED] …", and the server never sees the call. Calls whose params do not \
            parse are denied. Counters are rolled back when the server answers a call with a JSON-RPC error. A \
            require_approval call is put to the user through MCP elicitation (accept lets it through, anything else \
            or no answer within --approval-timeout denies it); a client without the elicitation capability gets a \
            denial saying approval was required. A 2026-07-28 client gets the question as an input_required result \
            (an elicitation and a sealed requestState) and its retry runs the call once; a tampered, expired, \
            replayed or misapplied state is denied. The policy file is watched: a valid change applies to the next \
            call and clients get notifications/tools/list_changed; an invalid one is refused and logged.
            On stdio, exits with the server's status; when the client's input ends, the server's input is closed. \
            In front of an HTTP server (--upstream-url), exits 0 once the server has answered what it owes after the \
            client's input ended, or at once on SIGTERM, SIGINT or SIGHUP.

            Several instances: give each the same --store postgres://… and --approval-secret-file, and put them \
            behind any load balancer: counters stay exact, an approval is honoured once across all of them, and a \
            task handle created through one is usable through any (by the same grant). When the store cannot be \
            reached, calls that need it are denied ("[POLICY DENIED] policy store unavailable"), and the proxy \
            recovers by itself when it is back. Over HTTP, --grants maps bearer tokens to grants: a request without \
            a valid token gets 401 and reaches neither the policy nor the server.

            Examples:
              corral proxy --policy policy.json --audit audit.jsonl -- allcanuse-mock
              corral proxy --http 127.0.0.1:8766 --policy policy.json \\
                  --grants grants.json --store postgres://corral@db:5432/corral \\
                  --approval-secret-file secret --metrics 127.0.0.1:9464 \\
                  -- allcanuse-mock
            """
    )

    @Option(help: "The PolicyLayer-format policy.json.") var policy: String
    @Option(help: "Grant id for grant-scoped counters (without --grants: every client's).") var grant = "local"
    @Option(help: "With --http: a JSON file mapping bearer tokens, as SHA-256, to grant ids ({\"grants\": [{\"id\": \"team-a\", \"token_sha256\": \"…\"}]}; `corral grants hash` prints a token's). Requests without a valid Authorization: Bearer token get 401. Reloaded when it changes (see --reload-interval-ms).")
    var grants: String?
    @Option(help: ArgumentHelp(StoreOption.help)) var store = "memory"
    @Flag(help: "When the store cannot be reached, allow calls without counting them (logged and audited as policy_store_fail_open) instead of denying them.")
    var storeFailOpen = false
    @Option(help: "Serve Prometheus metrics at http://HOST:PORT/metrics (decisions, store and upstream latency, open streams); port 0 picks one.")
    var metrics: String?
    @Option(help: "This instance's name in audit lines (\"instance\"); default: HOSTNAME-PID.")
    var instanceId: String?
    @Option(help: "Append one JSON line per decision to this file (argument keys and a hash, never values). A call whose line cannot be written (a full disk) is refused, not forwarded; stderr says when that starts and ends.")
    var audit: String?
    @Flag(help: "Record the real decisions (audit) but forward every call, even one whose audit line failed: for rolling out a new policy.")
    var dryRun = false
    @Option(help: "How long a require_approval call waits for the user's answer (asked through MCP elicitation), in seconds; then it is denied.")
    var approvalTimeout = 60
    @Option(help: "A file whose bytes (32 or more) key the seal of 2026-07-28 approval states, so that several proxies honour each other's; default: a key drawn at start.")
    var approvalSecretFile: String?
    @Option(help: "How often the policy file (and the --grants file) is checked for changes, in milliseconds (0: never, and neither is reloaded).")
    var reloadIntervalMs = 500
    @Option(help: "Serve Streamable HTTP at HOST:PORT (path /mcp) instead of stdio, e.g. 127.0.0.1:8766; port 0 picks a free one (printed on stderr). 2025-11-25 clients get a server process per session; 2026-07-28 clients share one.")
    var http: String?
    @Option(help: "An Origin (scheme://host[:port]) admitted over HTTP besides loopback ones; repeatable.")
    var allowOrigin: [String] = []
    @Option(help: "With --http: how long a connection that owes its client nothing (just opened, or its last answer sent) waits for the next request to arrive whole, head and body, in milliseconds; then it is closed. A request being answered, a stream included, is never cut. Guards against clients that hold connections open by sending nothing, or a byte at a time.")
    var httpRequestTimeoutMs = 60_000
    @Option(help: "With --http: how many connections are served at once; past it no more are accepted until one closes (they wait in the listen backlog), so that clients cannot take the descriptors the server needs for its own work. Default: half the open-file limit (ulimit -n), at most 10000.")
    var httpMaxConnections: Int?
    @Option(help: "The MCP server is this Streamable HTTP endpoint (e.g. http://127.0.0.1:8765/mcp) instead of a command: several proxy instances can then share one server. Credentials in the URL (http://user:password@host/mcp) are sent as Basic authorization; proxies from the environment (http_proxy) are not used.")
    var upstreamUrl: String?
    @Argument(parsing: .captureForPassthrough, help: "The server command and its arguments, after -- (or --upstream-url).")
    var server: [String] = []

    func run() async throws {
        let command = server.first == "--" ? Array(server.dropFirst()) : server
        guard approvalTimeout > 0 else { throw ValidationError("--approval-timeout must be at least 1 second") }
        guard httpRequestTimeoutMs > 0 else { throw ValidationError("--http-request-timeout-ms must be at least 1") }
        if let httpMaxConnections, httpMaxConnections < 1 { throw ValidationError("--http-max-connections must be at least 1") }
        let upstream: UpstreamServer
        switch (command.isEmpty, upstreamUrl) {
        case (true, nil):
            throw ValidationError("no server command; usage: corral proxy --policy FILE -- CMD ARGS…, or --upstream-url URL")
        case (false, _?):
            throw ValidationError("give a server command or --upstream-url, not both")
        case (false, nil):
            upstream = .command(command)
        case (true, let text?):
            guard let url = URL(string: text), ["http", "https"].contains(url.scheme?.lowercased() ?? ""), url.host != nil
            else { throw ValidationError("--upstream-url wants an http:// or https:// URL, e.g. http://127.0.0.1:8765/mcp; got \(text)") }
            upstream = .url(url)
        }
        let address = try http.map { text in
            guard let address = HTTPAddress(parsing: text) else {
                throw ValidationError("--http wants HOST:PORT, e.g. 127.0.0.1:8766; got \(text)")
            }
            return address
        }
        let metricsAddress = try metrics.map { text in
            guard let address = HTTPAddress(parsing: text) else {
                throw ValidationError("--metrics wants HOST:PORT, e.g. 127.0.0.1:9464; got \(text)")
            }
            return address
        }
        guard grants == nil || address != nil else {
            throw ValidationError("--grants needs --http (bearer tokens come in HTTP headers; on stdio, --grant names the one grant)")
        }
        let storeOption = try StoreOption(parsing: store)
        let grantTable = try grants.map { path in
            do {
                return try GrantTable(contentsOfFile: path)
            } catch {
                throw ValidationError("--grants \(error)")
            }
        }
        let loaded: Policy
        do {
            loaded = try Policy.load(contentsOfFile: policy)
        } catch {
            FileHandle.standardError.write(Data("corral proxy: \(policy): \(error)\n".utf8))
            throw ExitCode(2)
        }
        // A client or server that closes its end is an EPIPE, never a signal. Ignored once here when the server will
        // still start with SIGPIPE at its default (run through `env --default-signal=PIPE`, GNU env ≥ 8.31), so
        // that no line is written with SIGPIPE blocked and restored around it (three system calls per write, two
        // writes per call); elsewhere a stdio proxy keeps the per-write mask, since an ignored SIGPIPE survives
        // exec. The HTTP server's sockets need it ignored either way.
        if address != nil || ServerLaunch.resetsSIGPIPE { ignoreSIGPIPEProcessWide() }
        let instance = instanceId ?? "\(ProcessInfo.processInfo.hostName)-\(getpid())"
        let auditLog: AuditLog?
        do {
            auditLog = try audit.map { path throws(JSONLinesFileError) in
                try AuditLog(path: path, instance: instance) { [dryRun] failure in
                    let text =
                        if let failure {
                            dryRun
                                ? "corral proxy: \(failure); audit lines are lost, calls still forwarded (--dry-run)\n"
                                : "corral proxy: \(failure); calls are refused until their audit lines can be written\n"
                        } else {
                            "corral proxy: --audit \(path): audit lines are written again\n"
                        }
                    FileHandle.standardError.write(Data(text.utf8))
                }
            }
        } catch {
            throw ValidationError("--audit: \(error)")
        }
        let registry = metricsAddress.map { _ in MetricsEndpoint.bootstrap() }
        var policyStore: any PolicyStore
        do {
            policyStore = try await storeOption.open()
        } catch {
            FileHandle.standardError.write(Data("corral proxy: --store \(storeOption): \(error)\n".utf8))
            throw ExitCode(2)
        }
        if registry != nil { policyStore = MeteredPolicyStore(policyStore) }
        if storeFailOpen {
            FileHandle.standardError.write(
                Data("corral proxy: --store-fail-open: calls will be allowed uncounted while the store is unreachable\n".utf8))
        }
        let secret = try approvalSecretFile.map { path -> [UInt8] in
            guard let bytes = FileManager.default.contents(atPath: path) else {
                throw ValidationError("--approval-secret-file \(path) cannot be read")
            }
            guard bytes.count >= 32 else {
                throw ValidationError("--approval-secret-file \(path) holds \(bytes.count) bytes; at least 32 are needed")
            }
            return Array(bytes)
        }
        let proxy = PolicyProxy(
            policy: PolicyEvaluator(policy: loaded, store: policyStore, storeFailure: storeFailOpen ? .allowUncounted : .deny),
            grant: grant, audit: auditLog, dryRun: dryRun, approvalTimeout: .seconds(approvalTimeout), approvalSecret: secret)
        if reloadIntervalMs > 0 { watchFiles(proxy, grants: grantTable) }
        var logger = Logger(label: "corral-proxy")
        logger.logLevel = .warning
        var metricsTask: Task<Void, Never>?
        if let registry, let address = metricsAddress {
            metricsTask = Task {
                do {
                    try await MetricsEndpoint.serve(registry, at: address, logger: logger) { bound in
                        FileHandle.standardError.write(
                            Data("corral proxy: metrics on http://\(address.host):\(bound)/metrics\n".utf8))
                    }
                } catch {
                    FileHandle.standardError.write(Data("corral proxy: --metrics \(address.host):\(address.port): \(error)\n".utf8))
                }
            }
        }
        defer { metricsTask?.cancel() }
        guard let address else {
            // SIGTERM, SIGINT and SIGHUP go on to the server; the proxy exits with its status, so the server never
            // outlives the proxy because of a signal sent to the proxy alone.
            var sources: [DispatchSourceSignal] = []
            for number in [SIGTERM, SIGINT, SIGHUP] {
                signal(number, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: number)
                source.setEventHandler { proxy.signalServer(number) }
                source.resume()
                sources.append(source)
            }
            defer { sources.forEach { $0.cancel() } }
            throw ExitCode(try await proxy.runStdio(upstream: upstream))
        }
        let server = MCPHTTPServer(
            configuration: .init(
                host: address.host, port: address.port, serverName: "corral-proxy", allowedOrigins: Set(allowOrigin),
                requestTimeout: .milliseconds(httpRequestTimeoutMs), maximumConnections: httpMaxConnections,
                authenticator: grantTable),
            endpoint: proxy.httpEndpoint(upstream: upstream), logger: logger)
        try await server.run(
            beforeShutdown: { await proxy.stopHTTP() }  // servers stop; what they owed is answered with an error
        ) { bound in
            FileHandle.standardError.write(Data("corral proxy: listening on http://\(address.host):\(bound)/mcp\n".utf8))
        }
        await proxy.stopHTTP()
    }

    /// Hot reload of the policy and the grants: a valid new file applies to the next request; an invalid one is
    /// refused (and logged) and the old one stays.
    private func watchFiles(_ proxy: PolicyProxy, grants table: GrantTable?) {
        let path = policy
        let grantsPath = grants
        let interval = reloadIntervalMs
        let watcher = Thread {
            var lastModified = Self.modificationDate(path)
            var grantsModified = grantsPath.flatMap(Self.modificationDate)
            while true {
                Thread.sleep(forTimeInterval: Double(interval) / 1000)
                let modified = Self.modificationDate(path)
                if modified != lastModified {
                    lastModified = modified
                    switch proxy.reload(from: path) {
                    case .success(true): FileHandle.standardError.write(Data("corral proxy: policy reloaded\n".utf8))
                    case .success(false): break
                    case .failure(let error):
                        FileHandle.standardError.write(
                            Data("corral proxy: new policy refused, keeping the old one: \(error)\n".utf8))
                    }
                }
                if let table, let grantsPath {
                    let modified = Self.modificationDate(grantsPath)
                    guard modified != grantsModified else { continue }
                    grantsModified = modified
                    switch table.reload(from: grantsPath) {
                    case .success: FileHandle.standardError.write(Data("corral proxy: grants reloaded\n".utf8))
                    case .failure(let error):
                        FileHandle.standardError.write(
                            Data("corral proxy: new grants refused, keeping the old ones: \(error)\n".utf8))
                    }
                }
            }
        }
        watcher.start()
    }

    static func modificationDate(_ path: String) -> Date? {
        (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date
    }
}
