import ArgumentParser
import Foundation
import Gateway
import Glibc
import Synchronization

/// `corral bench gateway`: decisions per second and per-decision latency of `corral proxy --http` instances,
/// under load from this process (a bounded loopback load generator), with each store and 1…N instances.
struct GatewayBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Measure corral proxy --http instances under load: decisions per second, p50/p99 (build with scripts/bench, or `source scripts/env.sh; release_build --product corral`).",
        discussion: """
            Starts the instances (each in front of its own allcanuse-mock over stdio), then --clients connections \
            (keep-alive, one request at a time each, a bearer token of its own: 2026-07-28 tools/call of a counted \
            tool) spread over the instances, for --seconds. Every call is decided by the policy (a grant-scoped \
            counter in the store) and answered by the mock. Then one client after 100 ms idle gaps, for the latency \
            a lone agent sees. The floor is the memory store with one instance; PostgreSQL rows need --postgres.
            """)

    @Option(help: "PostgreSQL to count in (postgres://USER@HOST[:PORT]/DB); without it only memory and SQLite run.")
    var postgres: String?
    @Option(help: "Instance counts to measure with a shared store, comma-separated.") var instances = "1,2,3"
    @Option(help: "Concurrent client connections.") var clients = 16
    @Option(help: "Seconds of load per row.") var seconds = 5.0
    @Option(help: "Requests after an idle gap of 100 ms (one client, one instance).") var idleSamples = 40

    func validate() throws {
        guard clients >= 1, clients <= 256 else { throw ValidationError("--clients must be 1…256") }
        guard seconds > 0, seconds <= 120 else { throw ValidationError("--seconds must be in (0, 120]") }
        guard parsedInstances.allSatisfy({ (1...8).contains($0) }), !parsedInstances.isEmpty else {
            throw ValidationError("--instances must be numbers 1…8, e.g. 1,2,3")
        }
    }

    private var parsedInstances: [Int] { instances.split(separator: ",").compactMap { Int($0) } }

    func run() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("corral-gateway-bench-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let setup = try Setup(directory: directory, clients: clients)

        print("corral bench gateway: \(clients) clients, \(format(seconds)) s per row, tools/call of a grant-counted tool (2026-07-28, bearer tokens)")
        let widths = [30, 14, 11, 11, 10, 10]
        row(["store × instances", "decisions/s", "p50 µs", "p99 µs", "×1 inst.", "CPU busy"], widths: widths)
        var stores: [(String, String)] = [("memory", "memory"), ("sqlite", "sqlite:" + directory.appendingPathComponent("store.sqlite").path)]
        if let postgres { stores.append(("postgres", postgres)) }
        for (name, store) in stores {
            var single: Double?
            // Memory counters are per process: more instances would not share limits, so one instance only.
            for count in name == "memory" ? [1] : parsedInstances {
                let fleet = try await Fleet.start(count: count, store: store, setup: setup)
                defer { fleet.stop() }
                let before = CPUTime.read()
                let result = try load(urls: fleet.urls, setup: setup)
                let busy = CPUTime.read()?.busyFraction(since: before)
                let ratio = single.map { result.perSecond / $0 }
                if count == 1 { single = result.perSecond }
                row([
                    "\(name) × \(count)", String(Int(result.perSecond)), format(result.samples.median),
                    format(result.samples.percentile(99)), ratio.map { format($0, digits: 2) + "×" } ?? "",
                    busy.map { format($0 * 100, digits: 0) + " %" } ?? "?",
                ], widths: widths)
            }
        }
        let fleet = try await Fleet.start(count: 1, store: postgres ?? "memory", setup: setup)
        defer { fleet.stop() }
        let idle = try idleGaps(url: fleet.urls[0], setup: setup)
        print("after 100 ms idle (\(postgres == nil ? "memory" : "postgres") × 1): p50 \(format(idle.median)) µs, p99 \(format(idle.percentile(99))) µs")
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; every instance, mock, the database and this load generator share them")
    }

    // MARK: - load

    /// The machine's CPU time from /proc/stat: how busy every core was during a row (a saturated machine cannot
    /// show more instances doing more).
    private struct CPUTime {
        let busy: Double
        let total: Double

        static func read() -> CPUTime? {
            guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
                let line = text.split(separator: "\n").first, line.hasPrefix("cpu ")
            else { return nil }
            let fields = line.split(separator: " ").dropFirst().compactMap { Double($0) }
            guard fields.count >= 5 else { return nil }
            let idle = fields[3] + fields[4]  // idle + iowait
            let total = fields.prefix(8).reduce(0, +)
            return CPUTime(busy: total - idle, total: total)
        }

        func busyFraction(since start: CPUTime?) -> Double? {
            guard let start, total > start.total else { return nil }
            return (busy - start.busy) / (total - start.total)
        }
    }

    private struct LoadResult {
        let perSecond: Double
        let samples: Samples
    }

    private func load(urls: [URL], setup: Setup) throws -> LoadResult {
        let end = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        let results = Mutex<[Samples]>([])
        let failures = Mutex<[String]>([])
        let threads = (0..<clients).map { index in
            Thread {
                let url = urls[index % urls.count]
                let connection = KeepAliveConnection(host: url.host ?? "127.0.0.1", port: url.port ?? 80)
                let request = setup.request(path: url.path, client: index)
                var samples = Samples()
                do {
                    for _ in 0..<20 { try Self.exchange(connection, request) }  // warm-up
                    while ContinuousClock.now < end {
                        let start = ContinuousClock.now
                        try Self.exchange(connection, request)
                        samples.add(ContinuousClock.now - start)
                    }
                } catch {
                    failures.withLock { $0.append("\(error)") }
                }
                results.withLock { $0.append(samples) }
            }
        }
        let started = ContinuousClock.now
        threads.forEach { $0.start() }
        while results.withLock({ $0.count }) < clients { usleep(10_000) }
        let elapsed = ContinuousClock.now - started
        if let failure = failures.withLock({ $0.first }) { throw ValidationError("a client failed: \(failure)") }
        var all = Samples()
        for samples in results.withLock({ $0 }) { for value in samples.values { all.add(microseconds: value) } }
        let wall = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return LoadResult(perSecond: Double(all.values.count) / wall, samples: all)
    }

    private func idleGaps(url: URL, setup: Setup) throws -> Samples {
        let connection = KeepAliveConnection(host: url.host ?? "127.0.0.1", port: url.port ?? 80)
        let request = setup.request(path: url.path, client: 0)
        var samples = Samples()
        for _ in 0..<5 { try Self.exchange(connection, request) }
        for _ in 0..<idleSamples {
            usleep(100_000)
            let start = ContinuousClock.now
            try Self.exchange(connection, request)
            samples.add(ContinuousClock.now - start)
        }
        return samples
    }

    /// One call; anything but an allowed, answered call is a failure (the figures would not be decisions).
    private static func exchange(_ connection: KeepAliveConnection, _ request: [UInt8]) throws {
        let response = try connection.exchange(request)
        guard response.status == 200 else {
            throw ValidationError("HTTP \(response.status): \(String(decoding: response.body.prefix(200), as: UTF8.self))")
        }
        if response.body.count < 4096, String(decoding: response.body, as: UTF8.self).contains("[POLICY DENIED]") {
            throw ValidationError("denied: \(String(decoding: response.body.prefix(300), as: UTF8.self))")
        }
    }

    // MARK: - the instances

    /// The files every instance shares: policy, grants (one token per client), the approval secret, and the
    /// mock's own permissive policy.
    private struct Setup {
        let directory: URL
        let policy: String
        let grants: String
        let mockPolicy: String
        let tokens: [String]

        init(directory: URL, clients: Int) throws {
            self.directory = directory
            tokens = (0..<clients).map { "bench-token-\($0)-\(UUID().uuidString)" }
            policy = directory.appendingPathComponent("policy.json").path
            grants = directory.appendingPathComponent("grants.json").path
            mockPolicy = directory.appendingPathComponent("mock-policy.json").path
            try #"{"version": "1", "default": "allow", "tools": {"list_background_tasks": {"limits": [{"counter": "lists", "window": "day", "max": 1000000000, "scope": "grant"}]}}}"#
                .write(toFile: policy, atomically: true, encoding: .utf8)
            try #"{"version": "1", "default": "allow"}"#.write(toFile: mockPolicy, atomically: true, encoding: .utf8)
            let run = UUID().uuidString.prefix(8)
            let entries = tokens.enumerated().map { index, token in
                #"{"id": "bench-\#(run)-\#(index)", "token_sha256": "\#(GrantTable.digestHex(of: token))"}"#
            }
            try #"{"grants": [\#(entries.joined(separator: ", "))]}"#.write(toFile: grants, atomically: true, encoding: .utf8)
        }

        func request(path: String, client: Int) -> [UInt8] {
            let body = #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_background_tasks","arguments":{"limit":1},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#
            let head = "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + "Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\n"
                + "Mcp-Method: tools/call\r\nMcp-Name: list_background_tasks\r\nAuthorization: Bearer \(tokens[client])\r\n"
                + "Content-Length: \(body.utf8.count)\r\n\r\n"
            return Array((head + body).utf8)
        }
    }

    private struct Fleet {
        let processes: [Process]
        let urls: [URL]

        static func start(count: Int, store: String, setup: Setup) async throws -> Fleet {
            let binaries = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
            var processes: [Process] = []
            var urls: [URL] = []
            for index in 0..<count {
                let state = setup.directory.appendingPathComponent("mock-\(UUID().uuidString.prefix(8))-\(index)").path
                let process = Process()
                process.executableURL = binaries.appendingPathComponent("corral")
                process.arguments = [
                    "proxy", "--http", "127.0.0.1:0", "--policy", setup.policy, "--grants", setup.grants, "--store", store,
                    "--reload-interval-ms", "0", "--", binaries.appendingPathComponent("allcanuse-mock").path,
                    "--state-dir", state, "--policy", setup.mockPolicy,
                ]
                let errors = Pipe()
                process.standardError = errors
                try process.run()
                processes.append(process)
                guard let url = Self.listeningURL(errors.fileHandleForReading) else {
                    processes.forEach { $0.terminate() }
                    throw ValidationError("instance \(index) did not start (store \(store))")
                }
                urls.append(url)
            }
            return Fleet(processes: processes, urls: urls)
        }

        /// Reads the instance's stderr until it says where it listens; the rest of its stderr is drained.
        private static func listeningURL(_ handle: FileHandle) -> URL? {
            var text = ""
            while case let chunk = handle.availableData, !chunk.isEmpty {
                text += String(decoding: chunk, as: UTF8.self)
                if let range = text.range(of: #"listening on (http://\S+)"#, options: .regularExpression) {
                    let url = URL(string: String(text[range].dropFirst("listening on ".count)))
                    Thread { while !handle.availableData.isEmpty {} }.start()
                    return url
                }
            }
            return nil
        }

        func stop() {
            for process in processes where process.isRunning { process.terminate() }
            for process in processes { process.waitUntilExit() }
        }
    }
}
