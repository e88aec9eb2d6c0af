import AllcanuseMock
import AllcanuseMockServer
import ArgumentParser
import Foundation
import Logging
import MCPCore
import MCPHTTP
import Policy
import Sandbox
import TaskRuntime

struct AllcanuseMockCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allcanuse-mock",
        abstract: "An MCP server with the Allcanuse background-task tools, every task a real sandboxed child process.",
        usage: "allcanuse-mock [<options>]",
        discussion: """
            Speaks MCP 2026-07-28 (stateless) and 2025-11-25 side by side, over stdio (newline-delimited JSON-RPC; \
            the first request settles the era of the connection) or, with --http, Streamable HTTP (each request in \
            its own era: 2026-07-28 requests statelessly, an initialize opens a 2025-11-25 session). Logs go to \
            stderr, never stdout. At the end of stdin or on SIGTERM it answers every request in flight, cancels \
            running tasks (unless --keep-tasks), and exits 0.
            Over stdio, discover, initialize and tools/list are answered while the task supervisor starts; a tool \
            call waits for it, and a start that fails (the state directory in use by another server) fails the calls \
            with its reason and exits 1.
            Without --policy an embedded policy allows every tool, capped at 6000 calls a minute per session.
            Every condition (the wait_for_* tools, and tasks of type wait_file, wait_process, wait_port, wait_http, \
            wait_window) is checked by the condition watcher allcanuse-watch, a task like any other: \
            $ALLCANUSE_WATCH when set, else allcanuse-watch beside this binary; without one, those calls fail saying \
            so.
            """
    )

    @Option(help: "State directory: SQLite database, task output, lock. Default: $XDG_STATE_HOME/corral/allcanuse-mock (or ~/.local/state/…).")
    var stateDir: String?
    @Option(help: "A PolicyLayer-format policy.json deciding every call (default: the embedded permissive policy).")
    var policy: String?
    @Option(help: "Grant id the policy's grant-scoped counters use for this server's client.")
    var grant = "local"
    @Option(help: "The least strict sandbox a task may run under: default, no-network, strict, or a profile file.")
    var sandboxFloor = "default"
    @Option(help: "A directory tasks may use as their cwd (condition.cwd must lie inside it; the task can write there). Without it, tasks run in their own directory and cwd is refused.")
    var workspace: String?
    @Option(help: "The user tasks run as when the server runs as root: a name, UID or UID:GID (never root). Default: uid/gid 65530, or the user 'corral-task' if it exists. A server running as another user keeps its uid for tasks, always without capabilities.")
    var taskUser: String?
    @Option(help: "Grace period between SIGTERM and SIGKILL when a task is cancelled, in milliseconds.")
    var graceMs = 2000
    @Option(help: "Log level on stderr: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"
    @Flag(help: "At exit, end running tasks without recording them cancelled: they end with the server all the same (a task never outlives it), and the next start marks them failed with the reason.")
    var keepTasks = false
    @Option(help: "Serve Streamable HTTP at HOST:PORT (path /mcp) instead of stdio, e.g. 127.0.0.1:8765; port 0 picks a free one. A request with an Origin header is admitted only from a loopback origin or one given with --allow-origin.")
    var http: String?
    @Flag(help: "Read a message with a repeated JSON key as lenient parsers do (the first copy is kept, as JSONDecoder keeps it) instead of refusing the message with -32700, over stdio and HTTP: for testing that a gateway in front does not forward ambiguous texts (corral conformance uses it).")
    var acceptDuplicateKeys = false
    @Option(help: "An Origin (scheme://host[:port]) admitted over HTTP besides loopback ones; repeatable.")
    var allowOrigin: [String] = []
    @Option(help: "With --http: how long a connection that owes its client nothing (just opened, or its last answer sent) waits for the next request to arrive whole, head and body, in milliseconds; then it is closed. A request being answered, a stream included, is never cut. Guards against clients that hold connections open by sending nothing, or a byte at a time.")
    var httpRequestTimeoutMs = 60_000
    @Option(help: "With --http: how many connections are served at once; past it no more are accepted until one closes (they wait in the listen backlog), so that clients cannot take the descriptors the server needs for its own work. Default: half the open-file limit (ulimit -n), at most 10000.")
    var httpMaxConnections: Int?
    @Option(help: "How long an MCP task handle (Tasks extension) is kept after its creation, in milliseconds; 0: for ever. Expired handles are unknown ids.")
    var mcpTaskTtlMs = MCPTaskBridge.defaultTTLMilliseconds
    @Option(help: "Append one JSON line per tools/call that reached this server (tool, arguments, executed, and refused_by when its own --policy refused it) to this file: what gateway tests compare with what the client was told. A call whose line cannot be written (a full disk) is not run, and is answered with an error that says so.")
    var callLog: String?
    @Option(help: "Over stdio, how long the reading thread keeps polling for the next request before it sleeps, in microseconds (0: never). For a fast client that sends its next request within the window (a raw client, a gateway in a test loop), each back-to-back call skips a thread wake-up (40-60 µs here with a Python raw client); it costs up to this much CPU after each answer, and a client slower than the window (an MCP SDK takes ~1 ms per call) gains nothing.")
    var busyPollUs = 0
    @Option(help: "Which finished tasks to keep, with their events and output files: all, a count (1000: the newest thousand) or days (30d: those finished in the last 30 days). Pruned at start and shortly after tasks finish; running, paused and waiting tasks are never pruned.")
    var retainFinished = "all"

    func run() async throws {
        // A closed client is an EPIPE, never a signal; said once here, so that no answer blocks it per write.
        ignoreSIGPIPEProcessWide()
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("unknown --log-level \(logLevel)")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "allcanuse-mock")
        let floor: SandboxProfile
        do {
            floor = try ProfileLoader.resolve(sandboxFloor)
        } catch {
            throw ValidationError("--sandbox-floor: \(error.description)")
        }
        let loaded: Policy
        do {
            loaded = try policy.map { try Policy.load(contentsOfFile: $0) } ?? Policy.load(text: MockServer.embeddedDefaultPolicy)
        } catch let error as PolicyLoadError {
            throw ValidationError("--policy: \(error)")
        }
        // Every flag is checked before the supervisor starts (and recovers the state directory).
        if let workspace {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: workspace, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw ValidationError("--workspace \(workspace) is not a directory")
            }
        }
        let address = try http.map { text in
            guard let address = HTTPAddress(parsing: text) else {
                throw ValidationError("--http wants HOST:PORT, e.g. 127.0.0.1:8765; got \(text)")
            }
            return address
        }
        let retention: TaskRetention
        do {
            retention = try TaskRetention(parsing: retainFinished)
        } catch {
            throw ValidationError("--retain-finished: \(error.description)")
        }
        guard mcpTaskTtlMs >= 0 else { throw ValidationError("--mcp-task-ttl-ms must not be negative") }
        guard (0...100_000).contains(busyPollUs) else { throw ValidationError("--busy-poll-us wants 0 to 100000 microseconds") }
        guard httpRequestTimeoutMs > 0 else { throw ValidationError("--http-request-timeout-ms must be at least 1") }
        if let httpMaxConnections, httpMaxConnections < 1 { throw ValidationError("--http-max-connections must be at least 1") }
        let callRecord: CallRecord?
        do {
            callRecord = try callLog.map { try CallRecord(path: $0) }
        } catch {
            throw ValidationError("--call-log: \(error)")
        }
        let taskIdentity: TaskIdentity
        do {
            taskIdentity = try TaskIdentity.resolve(taskUser)
        } catch {
            throw ValidationError("--task-user: \(error.description)")
        }
        if let workspace, taskIdentity.changesUser, let refusal = taskIdentity.writeRefusal(workspace) {
            logger.warning("\(refusal): tasks cannot write in --workspace until it is theirs (chown \(taskIdentity.uid):\(taskIdentity.gid) \(workspace))")
        }
        let directory = stateDir ?? Self.defaultStateDirectory()
        // The supervisor starts beside the first answers (see MockServices); every flag was checked above.
        let listeners = ListenRegistry()
        let configuration = TaskSupervisor.Configuration(
            stateDirectory: directory, graceMilliseconds: graceMs, taskIdentity: taskIdentity, retention: retention,
            logger: logger)
        let floorProfile = floor
        let workspace = self.workspace
        let ttl = mcpTaskTtlMs == 0 ? nil : mcpTaskTtlMs
        let services = MockServices.starting(servesTasks: true, listeners: listeners) {
            let supervisor = try await TaskSupervisor.start(configuration)
            logger.info("tasks run as \(taskIdentity.description), without capabilities")
            let service = AllcanuseService(supervisor: supervisor, sandboxFloor: floorProfile, workspace: workspace)
            do {
                let tasks = try MCPTaskBridge(
                    stateDirectory: directory, service: service, ttlMilliseconds: ttl, listeners: listeners,
                    logger: logger)
                return MockServices.Ready(service: service, tasks: tasks)
            } catch {
                await supervisor.shutdown(cancelRunning: false)
                throw error
            }
        }
        let evaluator = PolicyEvaluator(policy: loaded)
        if let address {
            // Over HTTP the server listens once the services are up: a failed start ends it before it has bound.
            let ready = try await services.value()
            try await serveHTTP(
                address, services: services, supervisor: ready.supervisor, policy: evaluator, callRecord: callRecord,
                logger: logger)
            return
        }
        let grant = self.grant
        let core = MockServer.core(
            services: services, policy: evaluator,
            identity: { context in CallIdentity(grant: grant, session: context.session) }, logger: logger,
            callRecord: callRecord)
        let connection = StdioServerConnection(
            core: core, connectionID: UUID().uuidString.lowercased(), rejectsDuplicateKeys: !acceptDuplicateKeys,
            busyPoll: .microseconds(busyPollUs))
        // Whichever comes first, the end of stdin or SIGTERM. Not a task group: it would wait for the stdin watcher,
        // which cannot be cancelled, so a SIGTERM with stdin still open never ended the server. Caught before the
        // first answer: a SIGTERM while the supervisor starts ends the server cleanly once it has started.
        let stop = AsyncStream<Void>.makeStream()
        let source = DispatchSource.makeSignalSource(signal: SIGTERM)
        signal(SIGTERM, SIG_IGN)
        source.setEventHandler { stop.continuation.yield() }
        source.resume()
        connection.start()
        let supervisor: TaskSupervisor
        do {
            supervisor = try await services.value().supervisor
            await supervisor.handleExits(on: connection.executor)
            await supervisor.keepAwakeThroughSpawns(connection.executor as? any WakefulExecutor)
        } catch {
            // A start fails within a millisecond, before the client's first calls may have been read: go on
            // answering them (each with the reason) until stdin ends or a short while has passed, then end with it.
            // (Unstructured, as below: the stdin watcher cannot be cancelled.)
            core.listeners.closeAll()
            Task {
                await connection.waitForEndOfInput()
                stop.continuation.yield()
            }
            Task {
                try? await Task.sleep(for: .seconds(2))
                stop.continuation.yield()
            }
            for await _ in stop.stream { break }
            await connection.waitUntilDrained(timeout: .seconds(2))
            throw error
        }
        logger.info("serving MCP on stdio; state in \(directory)")

        Task {
            await connection.waitForEndOfInput()
            stop.continuation.yield()
        }
        for await _ in stop.stream { break }
        logger.info("shutting down: answering \(connection.requestsInFlight) request(s) in flight")
        // Listen streams end gracefully; waits blocked on tasks end when their tasks are cancelled; what is still
        // running after a moment (a `wait` of an hour, a wait on a task kept running) is answered with an error.
        core.listeners.closeAll()
        if !keepTasks { await supervisor.shutdown(cancelRunning: true) }
        await connection.waitUntilDrained(timeout: .seconds(2))
        connection.answerRemaining(.serverStopping)
        if keepTasks { await supervisor.shutdown(cancelRunning: false) }
    }

    private func serveHTTP(
        _ address: HTTPAddress, services: MockServices, supervisor: TaskSupervisor, policy: PolicyEvaluator,
        callRecord: CallRecord?, logger: Logger
    ) async throws {
        let grant = self.grant
        let core = MockServer.core(
            services: services, policy: policy,
            identity: { context in CallIdentity(grant: grant, session: context.session) }, logger: logger,
            callRecord: callRecord)
        let server = MCPHTTPServer(
            configuration: .init(
                host: address.host, port: address.port, serverName: "allcanuse-mock", allowedOrigins: Set(allowOrigin),
                requestTimeout: .milliseconds(httpRequestTimeoutMs), maximumConnections: httpMaxConnections,
                rejectsDuplicateKeys: !acceptDuplicateKeys),
            endpoint: CoreHTTPEndpoint(core: core), logger: logger)
        // The requests run on the server's event loop: it stays awake through a create's spawn, and exits are
        // handled there, as over stdio, so that an exit wakes that one thread. An exit's commit runs on the loop
        // too, after its waiters' answers (a housekeeping job, see EventLoopTaskExecutor): wake-up 0.73-0.89 ms p50
        // against 1.1-1.4 ms with exits on the task pool and their commits ahead of the answers.
        await supervisor.keepAwakeThroughSpawns(server.executor)
        await supervisor.handleExits(on: server.executor)
        let keepTasks = self.keepTasks
        try await server.run(
            beforeShutdown: {
                // Listen streams end gracefully; waits blocked on tasks end when their tasks do.
                core.listeners.closeAll()
                await supervisor.shutdown(cancelRunning: !keepTasks)
            }
        ) { bound in
            // One line on stderr that scripts and tests can wait for.
            FileHandle.standardError.write(Data("allcanuse-mock: listening on http://\(address.host):\(bound)/mcp\n".utf8))
        }
        logger.info("shutting down")
        await supervisor.shutdown(cancelRunning: !keepTasks)
    }

    static func defaultStateDirectory() -> String {
        let environment = ProcessInfo.processInfo.environment
        let base = environment["XDG_STATE_HOME"] ?? ((environment["HOME"] ?? "/tmp") + "/.local/state")
        return base + "/corral/allcanuse-mock"
    }
}
