import ArgumentParser
import CorralJSON
import Foundation
import Glibc
@_spi(Benchmarks) import TaskRuntime

/// `corral bench latency`: the latency an agent feels, one call at a time after it has been thinking for a while.
struct LatencyBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "latency",
        abstract: "What an agent feels: allcanuse-mock calls after idle gaps, over stdio and HTTP, beside peers and floors.",
        discussion: """
            Starts the allcanuse-mock built beside this binary and talks to it with a raw client (no MCP library in \
            between). Each call waits an idle gap first (default 0, 10 and 100 ms): back to back, the server's \
            threads are hot; after a gap they have gone to sleep, which is what an agent that thinks between calls \
            sees. A call is timed from its request's write to its answer's arrival: the client encodes the request \
            before and checks the answer after. Figures are p50 and p99 in microseconds, in this run:
              calls      ping (2025-11-25), server/discover, tools/list,
                         get_background_task, append_task_event and create_background_task
                         (answered once the task runs), over stdio and over HTTP, and
                         discover and get from a server started with --busy-poll-us 100;
                         peers: the Python MCP SDK's own stdio server answering ping (with
                         --python, or .venv/bin/python), and posix_spawn of /bin/true in
                         this process (the floor for a create); floors: a process that
                         answers at once with as many bytes as discover, get and tools/list
                         (pipe floor).
              wake-up    a task prints CLOCK_REALTIME and exits; the time until
                         wait_for_background_task's answer reaches the client, over stdio
                         and HTTP. Floor: waitpid on the same command spawned by this
                         process.
              stored     list_background_tasks {limit: 10} (all, and filtered by a status)
                         with N tasks stored, and fresh servers' start → first answer and →
                         first tool call answered (ms, --starts each).
            """
    )

    @Option(help: "Idle gaps before each call, in milliseconds (comma-separated).") var gaps = "0,10,100"
    @Option(help: "Calls per kind, gap and transport after a gap (back to back: ten times as many).") var samples = 40
    @Option(help: "Wake-up samples.") var wakeups = 30
    @Option(help: "Stored task counts for the listing and start-up figures (comma-separated; empty: none).")
    var storedTasks = "100,10000,100000"
    @Option(help: "list_background_tasks calls per stored count.") var lists = 200
    @Option(help: "Fresh server starts per stored count (start → first answer, → first tool call).") var starts = 15
    @Option(help: "A Python with the MCP SDK (mcp 2.x) for the SDK's stdio server as the ping peer. Default: .venv/bin/python if it exists.")
    var python: String?

    func validate() throws {
        guard samples >= 5 else { throw ValidationError("--samples must be at least 5") }
        guard !gapList.isEmpty, gapList.allSatisfy({ $0 >= 0 }) else {
            throw ValidationError("--gaps wants milliseconds ≥ 0, comma-separated, e.g. 0,10,100")
        }
    }

    private var gapList: [Int] {
        gaps.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
    }

    func run() async throws {
        let binary = try MockBinary.beside()
        let widths = [40] + Array(repeating: 9, count: gapList.count * 2)
        print("calls after an idle gap, one at a time (µs)")
        row(["variant"] + gapList.flatMap { ["\($0)ms p50", "p99"] }, widths: widths)

        let state = try makeTemporaryDirectory("corral-latency")
        defer { try? FileManager.default.removeItem(atPath: state) }
        let legacy = try RawClient(binary: binary, arguments: ["--state-dir", state + "/legacy", "--log-level", "error"])
        _ = try legacy.request("initialize", Self.initialize)
        legacy.notify("notifications/initialized")
        try await report("ping, stdio 2025-11-25", widths) { try legacy.requestUnparsed("ping", [:]) }
        legacy.close()
        if let peer = try startPythonPeer(state: state) {
            try await report("ping, Python SDK stdio server (peer)", widths) { try peer.requestUnparsed("ping", [:]) }
            peer.close()
        }

        let stdio = try RawClient(
            binary: binary, arguments: ["--state-dir", state + "/stdio", "--log-level", "error"], modern: true)
        var answerBytes: [(String, Int)] = []
        try await measureCalls(label: "stdio", widths: widths) { method, params in
            try stdio.requestUnparsed(method, params)
        } parsed: { method, params in
            try stdio.request(method, params)
        } answered: { name in
            if ["server/discover", "tools/list", "get_background_task"].contains(name) {
                answerBytes.append((name, stdio.lastAnswerBytes))
            }
        }
        try await reportFloors(answerBytes, widths: widths)
        try await report("posix_spawn /bin/true (floor for create)", widths) { try Self.posixSpawnTrue() }
        // The same server with its reading thread spinning 100 µs before it sleeps: what that buys this client.
        let spinning = try RawClient(
            binary: binary,
            arguments: ["--state-dir", state + "/stdio-spinning", "--log-level", "error", "--busy-poll-us", "100"],
            modern: true)
        try await measureCalls(
            label: "stdio, busy-poll 100", widths: widths, only: ["server/discover", "get_background_task"]
        ) { method, params in
            try spinning.requestUnparsed(method, params)
        } parsed: { method, params in
            try spinning.request(method, params)
        }
        spinning.close()

        let (server, endpoint) = try MockBinary.startHTTP(binary, state: state + "/http")
        defer {
            server.interrupt()
            server.waitUntilExit()
        }
        let http = HTTPClient(endpoint: endpoint, modern: true)
        try await measureCalls(label: "HTTP", widths: widths) { method, params in
            try await http.requestUnparsed(method, params)
        } parsed: { method, params in
            try await http.request(method, params)
        }

        print("\nwait wake-up: the task prints CLOCK_REALTIME and exits; until the waiter's answer (µs)")
        row(["variant", "p50", "p90", "p99"], widths: [40, 9, 9, 9])
        let wake = try await measureWakeups({ try stdio.callTool($0, $1) }, lastArrival: { stdio.lastArrival })
        row(["wait_for_background_task, stdio", format(wake.median), format(wake.percentile(90)), format(wake.percentile(99))],
            widths: [40, 9, 9, 9])
        let httpWake = try await measureWakeups({ try await http.callTool($0, $1) }, lastArrival: { http.lastArrival })
        row(["wait_for_background_task, HTTP", format(httpWake.median), format(httpWake.percentile(90)),
             format(httpWake.percentile(99))], widths: [40, 9, 9, 9])
        let floor = try measureWaitpidFloor()
        row(["waitpid in this process (floor)", format(floor.median), format(floor.percentile(90)), format(floor.percentile(99))],
            widths: [40, 9, 9, 9])
        stdio.close()

        try await measureStored(binary: binary)
    }

    static var initialize: [String: Any] {
        ["protocolVersion": "2025-11-25", "capabilities": [String: Any](), "clientInfo": ["name": "bench", "version": "1"]]
    }

    /// One row: the call after each idle gap. `call` returns its own round trip (see `RawClient`: encoding and
    /// checking stay outside it).
    private func report(_ label: String, _ widths: [Int], _ call: () async throws -> Duration) async throws {
        var columns = [label]
        for gap in gapList {
            var measured = Samples()
            for _ in 0..<(gap == 0 ? samples * 10 : samples) {
                if gap > 0 { try await Task.sleep(for: .milliseconds(gap)) }
                measured.add(try await call())
            }
            columns += [format(measured.median), format(measured.percentile(99))]
        }
        row(columns, widths: widths)
    }

    /// The 2026-07-28 calls on one transport, on one long task (get, append) and fresh ones (create).
    /// `only`: the kinds of call to measure (nil: all).
    private func measureCalls(
        label: String, widths: [Int], only: Set<String>? = nil, _ call: (String, [String: Any]) async throws -> Duration,
        parsed: (String, [String: Any]) async throws -> [String: Any], answered: (String) -> Void = { _ in }
    ) async throws {
        func tool(_ name: String, _ arguments: [String: Any]) -> [String: Any] { ["name": name, "arguments": arguments] }
        let created = try await parsed(
            "tools/call",
            tool("create_background_task", [
                "title": "bench", "goal": "bench", "task_type": "sleep", "condition": ["duration_ms": 3_600_000],
            ]))
        guard let content = created["structuredContent"] as? [String: Any], let taskID = content["task_id"] as? String else {
            throw ValidationError("create failed: \(created)")
        }
        let create = tool("create_background_task", [
            "title": "b", "goal": "b", "task_type": "command", "condition": ["argv": ["/bin/true"]],
        ])
        let check = try await parsed("tools/call", create)["structuredContent"] as? [String: Any]
        guard check?["status"] as? String == "running" || check?["status"] as? String == "completed" else {
            throw ValidationError("create answered \(check ?? [:]), not a running task")
        }
        for (name, method, params) in [
            ("server/discover", "server/discover", [:]),
            ("tools/list", "tools/list", [:]),
            ("get_background_task", "tools/call", tool("get_background_task", ["task_id": taskID])),
            ("append_task_event", "tools/call", tool("append_task_event", ["task_id": taskID, "message": "bench"])),
            ("create → running", "tools/call", create),
        ] as [(String, String, [String: Any])] where only?.contains(name) ?? true {
            try await report("\(name), \(label)", widths) { try await call(method, params) }
            answered(name)
        }
    }

    /// The floor under a stdio call: `corral bench pipe-echo` answering each request with as many bytes as the
    /// server's answer, timed by the same client.
    private func reportFloors(_ answerBytes: [(String, Int)], widths: [Int]) async throws {
        let corral = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        for (name, bytes) in answerBytes {
            let echo = try RawClient(binary: corral, arguments: ["bench", "pipe-echo", "--bytes", String(bytes)], modern: true)
            defer { echo.close() }
            let request = try echo.encode("tools/call", ["name": "echo", "arguments": [String: Any]()])
            try await report("pipe floor, \(bytes) B (as \(name))", widths) { try echo.timed(request) }
        }
    }

    /// posix_spawn of /bin/true, timed until it returns (glibc's returns once the child has exec'd: the program
    /// runs, as a created task does when create answers); reaped after the clock stopped.
    private static func posixSpawnTrue() throws -> Duration {
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
        defer { argv.forEach { free($0) } }
        let began = ContinuousClock.now
        let spawned = posix_spawn(&pid, "/bin/true", nil, nil, argv, environ)
        let elapsed = ContinuousClock.now - began
        guard spawned == 0 else { throw ValidationError("posix_spawn: \(String(cString: strerror(spawned)))") }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        return elapsed
    }

    /// The Python SDK's stdio server, initialised, or nil (with a note) when no Python with the SDK is at hand.
    private func startPythonPeer(state: String) throws -> RawClient? {
        let interpreter = python ?? ".venv/bin/python"
        guard FileManager.default.isExecutableFile(atPath: interpreter) else {
            print("(peer skipped: no \(interpreter); give --python with the MCP SDK installed)")
            return nil
        }
        let script = state + "/sdk_ping_server.py"
        try Self.pythonPeer.write(toFile: script, atomically: true, encoding: .utf8)
        let peer = try RawClient(binary: URL(fileURLWithPath: interpreter), arguments: [script])
        do {
            _ = try peer.request("initialize", Self.initialize)
        } catch {
            print("(peer skipped: \(interpreter) \(script) did not answer initialize: \(error))")
            peer.close()
            return nil
        }
        peer.notify("notifications/initialized")
        return peer
    }

    private static let pythonPeer = """
        from mcp.server.mcpserver import MCPServer

        MCPServer("sdk-peer").run()
        """

    /// A task prints its CLOCK_REALTIME in nanoseconds and exits at once; the sample is the time from that print
    /// to the arrival of the waiter's answer.
    private func measureWakeups(
        _ callTool: (String, [String: Any]) async throws -> [String: Any], lastArrival: () -> ContinuousClock.Instant
    ) async throws -> Samples {
        var measured = Samples()
        for _ in 0..<wakeups {
            let created = try await callTool("create_background_task", [
                "title": "wake", "goal": "wake", "task_type": "command",
                "condition": ["command": "sleep 0.05; exec date +%s%N"],
            ])
            guard let taskID = created["task_id"] as? String else { throw ValidationError("create failed: \(created)") }
            let waited = try await callTool("wait_for_background_task", ["task_id": taskID, "timeout_ms": 10_000])
            // When the answer arrived, not when this client had decoded it.
            let sinceArrival = ContinuousClock.now - lastArrival()
            let woke = Self.realtimeNanoseconds() - Double(sinceArrival.components.attoseconds) / 1e9
                - Double(sinceArrival.components.seconds) * 1e9
            guard waited["condition_met"] as? Bool == true else { throw ValidationError("wait failed: \(waited)") }
            let output = try await callTool("get_task_output", ["task_id": taskID])
            guard let printed = Double((output["text"] as? String ?? "").trimmingCharacters(in: .whitespacesAndNewlines))
            else { throw ValidationError("no clock in the task's output: \(output)") }
            measured.add(microseconds: (woke - printed) / 1000)
        }
        return measured
    }

    /// The same command, spawned here and waited for with a blocking waitpid: exit teardown and one wake-up.
    private func measureWaitpidFloor() throws -> Samples {
        var measured = Samples()
        for _ in 0..<wakeups {
            var pipeFDs: [Int32] = [-1, -1]
            guard pipe(&pipeFDs) == 0 else { throw ValidationError("pipe: \(String(cString: strerror(errno)))") }
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
            posix_spawn_file_actions_addclose(&actions, pipeFDs[0])
            let argv: [UnsafeMutablePointer<CChar>?] = [
                strdup("/bin/sh"), strdup("-c"), strdup("sleep 0.05; exec date +%s%N"), nil,
            ]
            var pid: pid_t = 0
            let spawned = posix_spawn(&pid, "/bin/sh", &actions, nil, argv, environ)
            posix_spawn_file_actions_destroy(&actions)
            argv.forEach { free($0) }
            close(pipeFDs[1])
            defer { close(pipeFDs[0]) }
            guard spawned == 0 else { throw ValidationError("posix_spawn: \(String(cString: strerror(spawned)))") }
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            let woke = Self.realtimeNanoseconds()
            var buffer = [UInt8](repeating: 0, count: 64)
            let count = buffer.withUnsafeMutableBytes { read(pipeFDs[0], $0.baseAddress, $0.count) }
            guard count > 0, let printed = Double(String(decoding: buffer[0..<count], as: UTF8.self)
                .trimmingCharacters(in: .whitespacesAndNewlines))
            else { continue }
            measured.add(microseconds: (woke - printed) / 1000)
        }
        return measured
    }

    private static func realtimeNanoseconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Double(now.tv_sec) * 1e9 + Double(now.tv_nsec)
    }

    /// list_background_tasks {limit: 10} (all, and filtered by a status) and start → first answer, with N tasks
    /// stored (one real task, the rest finished copies of it written straight into the store).
    private func measureStored(binary: URL) async throws {
        let counts = storedTasks.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !counts.isEmpty else { return }
        let widths = [44, 9, 9, 9, 10]
        var startupRows: [(Int, Samples, Samples)] = []
        print("\nallcanuse-mock over stdio with N tasks stored (µs; start → first answer p50 in ms)")
        row(["variant", "p50", "p90", "p99", "start ms"], widths: widths)
        for count in counts where count > 0 {
            let state = try makeTemporaryDirectory("corral-listbench")
            defer { try? FileManager.default.removeItem(atPath: state) }
            let supervisor = try await TaskSupervisor.start(.init(stateDirectory: state))
            let seed = try await supervisor.create(TaskSpec(title: "seed", command: .argv(["/bin/true"])))
            _ = try await supervisor.wait(for: seed.taskID, timeout: .seconds(10))
            try await supervisor.storeFinishedCopies(of: seed.taskID, count: count - 1)
            await supervisor.shutdown()
            let (firstAnswer, firstCall) = try measureStarts(binary: binary, state: state, count: count)
            let client = try RawClient(binary: binary, arguments: ["--state-dir", state, "--log-level", "error"])
            _ = try client.request("initialize", Self.initialize)
            client.notify("notifications/initialized")
            var startColumn = format(firstAnswer.median / 1000)
            startupRows.append((count, firstAnswer, firstCall))
            for (label, arguments) in [
                ("list(limit 10), \(count) stored", ["limit": 10] as [String: Any]),
                ("list(limit 10, completed), \(count) stored", ["limit": 10, "statuses": ["completed"]]),
            ] {
                let answer = try client.callTool("list_background_tasks", arguments)
                guard answer["total_count"] as? Int == count, (answer["tasks"] as? [Any])?.count == min(10, count) else {
                    throw ValidationError("list counted \(answer["total_count"] ?? "nothing"), expected \(count)")
                }
                // Timed unparsed, as the other calls: decoding ten full records here cost more than the server.
                var measured = Samples()
                let params: [String: Any] = ["name": "list_background_tasks", "arguments": arguments]
                for _ in 0..<lists { measured.add(try client.requestUnparsed("tools/call", params)) }
                row([label, format(measured.median), format(measured.percentile(90)), format(measured.percentile(99)),
                     startColumn], widths: widths)
                startColumn = ""
            }
            client.close()
        }
        print("\nstart with N tasks stored, \(starts) starts each (ms): the first answer (initialize), and the first tool call")
        print("(list_background_tasks {limit: 1}); the supervisor starts beside the first answers, a tool call waits for it")
        row(["variant", "p50", "p90", "p99"], widths: [52, 9, 9, 9])
        for (count, firstAnswer, firstCall) in startupRows {
            for (label, samples) in [("start → first answer, \(count) stored", firstAnswer),
                                     ("start → first tool call answered, \(count) stored", firstCall)] {
                row([label, format(samples.median / 1000), format(samples.percentile(90) / 1000),
                     format(samples.percentile(99) / 1000)], widths: [52, 9, 9, 9])
            }
        }
    }

    /// `starts` fresh servers on the state directory: launch → initialize answered, and → a first tool call
    /// answered (in microseconds, like every sample here).
    private func measureStarts(binary: URL, state: String, count: Int) throws -> (Samples, Samples) {
        var firstAnswer = Samples()
        var firstCall = Samples()
        for _ in 0..<starts {
            let launched = ContinuousClock.now
            let client = try RawClient(binary: binary, arguments: ["--state-dir", state, "--log-level", "error"])
            _ = try client.request("initialize", Self.initialize)
            firstAnswer.add(ContinuousClock.now - launched)
            client.notify("notifications/initialized")
            let listed = try client.callTool("list_background_tasks", ["limit": 1])
            firstCall.add(ContinuousClock.now - launched)
            guard listed["total_count"] as? Int == count else {
                throw ValidationError("a fresh server counted \(listed["total_count"] ?? "nothing"), expected \(count)")
            }
            client.close()
        }
        return (firstAnswer, firstCall)
    }
}
