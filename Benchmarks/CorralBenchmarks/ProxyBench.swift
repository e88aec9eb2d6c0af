import ArgumentParser
import CorralJSON
import Foundation

/// `corral bench proxy`: what `corral proxy` adds to a tool call, measured against calling the server directly.
struct ProxyBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proxy",
        abstract: "Added latency of corral proxy per tool call: the same server directly vs through the proxy, one run.",
        discussion: """
            Two servers: an echo server (corral bench echo-server, a hidden helper: answers each tools/call with a \
            fixed result, so what is measured is the proxy and the pipes, not the server) and allcanuse-mock \
            (get_background_task). For each, three clients alive at once, alternating call by call so that drift on \
            the machine hits all alike: one talks to the server directly, one through a bare byte relay (corral \
            bench relay: two threads that read and write, the floor of any stdio proxy's two extra pipe hops), one \
            through corral proxy. For allcanuse-mock, a fourth client goes through corral proxy to the mock over Streamable \
            HTTP (--upstream-url), for what the proxy's HTTP client adds. The policy allows the tool and counts it against a limit, as a real policy would; \
            the proxy writes an audit line per call. Beside each row: the CPU the process the client talks to ran \
            per call (the server, the relay or the proxy; its threads' schedstat), which the machine's wake-ups do \
            not inflate as they do the latencies. On a VM whose idle vCPUs halt at once, a relay's chain of three \
            processes pays a hypervisor wake-up per hop; `taskset -c 0 corral bench proxy` keeps the chain on one \
            CPU.
            """
    )

    /// The policy of both proxy benches: the tool allowed and counted against a limit, as a real policy would.
    static let policy = """
        {"version": "1", "default": "allow", "hide": ["cancel_background_task"],
         "all_tools": {"limits": [{"counter": "all", "window": "minute", "max": 100000000, "scope": "grant"}]}}
        """

    /// `--era` of both proxy benches: legacy, modern or both, as whether each run's client is modern.
    static func modernFlags(_ era: String) throws -> [Bool] {
        switch era {
        case "legacy": return [false]
        case "modern": return [true]
        case "both": return [false, true]
        default: throw ValidationError("--era is legacy, modern or both; got \(era)")
        }
    }

    @Option(help: "Calls per variant.") var calls = 2000
    @Option(help: "The MCP era of the clients: legacy (2025-11-25), modern (2026-07-28) or both.") var era = "both"
    @Option(help: ArgumentHelp(
        "Calls each client makes in a row before the next client's turn: 1 (the default) alternates call by call, so that each call finds its processes' caches used by the other clients' since its last; more measures back-to-back calls, warm.",
        valueName: "calls"))
    var inARow = 1

    func validate() throws {
        guard calls >= 1 else { throw ValidationError("--calls must be at least 1, got \(calls)") }
        guard inARow >= 1 else { throw ValidationError("--in-a-row must be at least 1, got \(inARow)") }
    }

    func run() async throws {
        let mock = try MockBinary.beside()
        let corral = mock.deletingLastPathComponent().appendingPathComponent("corral")
        let scratch = try makeTemporaryDirectory("corral-proxybench")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let policy = scratch + "/policy.json"
        try Self.policy.write(toFile: policy, atomically: true, encoding: .utf8)
        let proxy = ["proxy", "--policy", policy, "--audit", scratch + "/audit.jsonl", "--"]
        for modern in try Self.modernFlags(era) {
            try measure(modern: modern, corral: corral, mock: mock, proxy: proxy, scratch: scratch + (modern ? "/m" : "/l"))
        }
    }

    private func measure(modern: Bool, corral: URL, mock: URL, proxy: [String], scratch: String) throws {
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        let widths = [44, 10, 10, 10, 12]
        print("\(modern ? "2026-07-28" : "2025-11-25"): one tools/call at a time over stdio, \(calls) per variant, alternating \(inARow == 1 ? "call by call" : "every \(inARow) calls") (µs; CPU: what the process the client talks to ran per call)")
        row(["variant", "p50", "p90", "p99", "CPU/call"], widths: widths)
        let relay = ["bench", "relay", "--"]

        let echo = [corral.path, "bench", "echo-server"]
        let noArguments: [String: Any] = [:]
        let echoVariants: [(String, RawClient, [String: Any])] = [
            ("echo server directly (peer)", try RawClient(binary: corral, arguments: Array(echo.dropFirst()), modern: modern), noArguments),
            ("echo server through a bare relay (floor)", try RawClient(binary: corral, arguments: relay + echo, modern: modern), noArguments),
            ("echo server through corral proxy", try RawClient(binary: corral, arguments: proxy + echo, modern: modern), noArguments),
        ]
        let echoMedians = try compare(echoVariants, tool: "echo", widths: widths)

        let mockArguments = { (state: String) in [mock.path, "--state-dir", scratch + "/" + state, "--log-level", "error"] }
        // The same server over Streamable HTTP behind the proxy (--upstream-url): what the proxy's HTTP client adds.
        let (httpMock, endpoint) = try MockBinary.startHTTP(mock, state: scratch + "/http")
        defer {
            httpMock.interrupt()
            httpMock.waitUntilExit()
        }
        let upstreamProxy = Array(proxy.prefix(3)) + ["--audit", scratch + "/audit-http.jsonl", "--upstream-url", endpoint.absoluteString]
        let clients = [
            ("allcanuse-mock directly (peer)", try RawClient(binary: mock, arguments: Array(mockArguments("direct").dropFirst()), modern: modern)),
            ("allcanuse-mock through a bare relay (floor)", try RawClient(binary: corral, arguments: relay + mockArguments("relayed"), modern: modern)),
            ("allcanuse-mock through corral proxy", try RawClient(binary: corral, arguments: proxy + mockArguments("proxied"), modern: modern)),
            ("allcanuse-mock over HTTP behind corral proxy", try RawClient(binary: corral, arguments: upstreamProxy, modern: modern)),
        ]
        var variants: [(String, RawClient, [String: Any])] = []
        for (label, client) in clients {
            try Self.initialize(client)
            let created = try client.callTool("create_background_task", [
                "title": "bench", "goal": "bench", "task_type": "sleep", "condition": ["duration_ms": 600_000],
            ])
            guard let taskID = created["task_id"] as? String else { throw ValidationError("create failed: \(created)") }
            variants.append((label, client, ["task_id": taskID]))
        }
        let mockMedians = try compare(variants, tool: "get_background_task", widths: widths)

        for (server, medians) in [("the echo server", echoMedians), ("allcanuse-mock", mockMedians)] {
            let proxy = medians[2] - medians[0]
            let relay = medians[1] - medians[0]
            print("added p50 with \(server): corral proxy \(format(proxy)) µs (goal: at most 50 µs), a bare relay "
                + "\(format(relay)) µs; the proxy's own part \(format(proxy - relay)) µs")
        }
        print("the proxy's upstream over HTTP instead of stdio: \(format(mockMedians[3] - mockMedians[2])) µs more at p50")
        print("")
    }

    /// A 2025-11-25 client's handshake (a 2026-07-28 client needs none: each request carries its `_meta`).
    private static func initialize(_ client: RawClient) throws {
        guard !client.modern, !client.initialized else { return }
        _ = try client.request("initialize", [
            "protocolVersion": "2025-06-18", "capabilities": [String: Any](), "clientInfo": ["name": "bench", "version": "1"],
        ])
        client.notify("notifications/initialized")
        client.initialized = true
    }

    /// Alternates calls between the clients, so that drift on the machine hits all alike; prints a row for each
    /// and returns their medians, in the order given.
    private func compare(_ variants: [(String, RawClient, [String: Any])], tool: String, widths: [Int]) throws -> [Double] {
        for (_, client, _) in variants { try Self.initialize(client) }
        let requests = try variants.map { _, client, arguments in
            try client.encode("tools/call", ["name": tool, "arguments": arguments])
        }
        var samples = Array(repeating: Samples(), count: variants.count)
        for (index, (_, client, _)) in variants.enumerated() {
            for _ in 0..<100 { try client.timed(requests[index]) }  // warming up
        }
        let cpuAtStart = variants.map { cpuMicroseconds(of: $0.1.pid) }
        for round in stride(from: 0, to: calls, by: inARow) {
            for (index, (_, client, _)) in variants.enumerated() {
                for _ in round..<min(round + inARow, calls) { samples[index].add(try client.timed(requests[index])) }
            }
        }
        let cpuPerCall = zip(variants, cpuAtStart).map { variant, start -> String in
            guard let start, let end = cpuMicroseconds(of: variant.1.pid) else { return "?" }
            return format((end - start) / Double(calls))
        }
        for (_, client, _) in variants { client.close() }
        for (index, (label, _, _)) in variants.enumerated() {
            let sample = samples[index]
            row([label, format(sample.median), format(sample.percentile(90)), format(sample.percentile(99)), cpuPerCall[index]], widths: widths)
        }
        return samples.map(\.median)
    }
}

/// `corral bench echo-server`: the cheapest possible stdio MCP server, the peer that isolates a proxy's own cost.
struct EchoServer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "echo-server", abstract: "A minimal stdio MCP server for benchmarks (one tool, echo).",
        shouldDisplay: false)

    func run() throws {
        let result = #""result":{"content":[{"type":"text","text":"{\"ok\":true}"}],"structuredContent":{"ok":true},"isError":false}"#
        let tools = #""result":{"tools":[{"name":"echo","description":"Answers at once.","inputSchema":{"type":"object"}}]}"#
        let initialize = #""result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"echo","version":"1"}}"#
        while let line = readLine(strippingNewline: true) {
            guard let message = try? JSONValue.parse(line), let id = message["id"], let method = message["method"]?.stringValue
            else { continue }
            let body: String
            switch method {
            case "initialize": body = initialize
            case "tools/list": body = tools
            case "tools/call": body = result
            case "ping": body = #""result":{}"#
            default: body = #""error":{"code":-32601,"message":"Method not found"}"#
            }
            FileHandle.standardOutput.write(Data(#"{"jsonrpc":"2.0","id":\#(id.jsonString()),\#(body)}"#.utf8 + [0x0A]))
        }
    }
}
