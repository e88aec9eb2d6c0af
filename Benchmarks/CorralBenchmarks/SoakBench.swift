import ArgumentParser
import Foundation

/// `corral bench soak`: a long, bounded run of mixed calls and real tasks against one allcanuse-mock, watching what
/// the server holds.
struct SoakBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "soak",
        abstract: "A bounded soak of allcanuse-mock: mixed calls and real tasks; its descriptors, threads and memory must end where they started.",
        discussion: """
            One raw 2026-07-28 client over stdio (the server on a policy that allows all, uncounted) sends --calls \
            calls, one at a time: every (calls / tasks)-th is a create_background_task of /bin/true, the others \
            rotate through get_background_task, wait_for_background_task, get_task_output, list_background_tasks \
            {limit: 10}, append_task_event, list_task_events, summarize_background_task, tools/list and \
            server/discover. The server's descriptors, threads and resident memory (from /proc) are printed after a \
            warm-up (10 % of the calls, by when its bounded caches are full: they count as the start), in the \
            middle, and at the end after a second of idle. Exit status 1 when the end exceeds the start by more than \
            the slack, or when --max-seconds ends the run first.
            """
    )

    @Option(help: "Calls in all, creates included.") var calls = 100_000
    @Option(help: "Tasks created (each a real process).") var tasks = 10_000
    @Option(help: "Stop after this many seconds, with the figures so far.") var maxSeconds = 900
    @Option(help: "Descriptors the end may hold beyond the start.") var slackDescriptors = 2
    @Option(help: "Threads the end may hold beyond the start.") var slackThreads = 2
    @Option(help: "Resident MiB the end may hold beyond the start.") var slackMib = 4

    func validate() throws {
        guard calls >= 100, tasks >= 1, tasks <= calls else {
            throw ValidationError("need --calls ≥ 100 and 1 ≤ --tasks ≤ --calls")
        }
    }

    func run() async throws {
        let binary = try MockBinary.beside()
        let scratch = try makeTemporaryDirectory("corral-soak")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        // The embedded policy caps a session at 6000 calls a minute; a soak goes faster on purpose.
        let policy = scratch + "/allow-all.json"
        try #"{"version": "1", "default": "allow"}"#.write(toFile: policy, atomically: true, encoding: .utf8)
        let client = try RawClient(
            binary: binary, arguments: ["--state-dir", scratch + "/state", "--policy", policy, "--log-level", "error"],
            modern: true)
        defer { client.close() }
        _ = try client.request("server/discover", [:])
        let first = try ProcessFootprint(pid: client.pid)
        print("allcanuse-mock soak: \(calls) calls, \(tasks) tasks (pid \(client.pid))")
        print("after server/discover: \(first)")

        let long = try client.callTool("create_background_task", [
            "title": "soak", "goal": "soak", "task_type": "sleep", "condition": ["duration_ms": 86_400_000],
        ])
        guard let longID = long["task_id"] as? String else { throw ValidationError("create failed: \(long)") }
        var recent = longID
        let createEvery = max(1, calls / tasks)
        // Past the warm-up the server's bounded caches (512 finished records, a tools/list text) are full.
        let warmUp = calls / 10
        let deadline = ContinuousClock.now + .seconds(maxSeconds)
        var start: ProcessFootprint?
        var middle: ProcessFootprint?
        var created = 0
        var done = 0
        var latency = Samples()
        let began = ContinuousClock.now
        for index in 0..<calls {
            if ContinuousClock.now > deadline { break }
            if index == warmUp { start = try ProcessFootprint(pid: client.pid) }
            if index == calls / 2 { middle = try ProcessFootprint(pid: client.pid) }
            let callBegan = ContinuousClock.now
            if index % createEvery == 0 && created < tasks {
                let task = try client.callTool("create_background_task", [
                    "title": "t\(index)", "goal": "soak", "task_type": "command", "condition": ["argv": ["/bin/true"]],
                ])
                guard let taskID = task["task_id"] as? String else { throw ValidationError("create failed: \(task)") }
                recent = taskID
                created += 1
            } else {
                let (method, params) = Self.mixed(index, recent: recent, long: longID)
                try client.requestUnparsed(method, params)
            }
            latency.add(ContinuousClock.now - callBegan)
            done += 1
        }
        let elapsed = ContinuousClock.now - began
        try await Task.sleep(for: .seconds(1))
        let end = try ProcessFootprint(pid: client.pid)
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        print("start (after \(warmUp) calls): \(start.map(String.init(describing:)) ?? "not reached")")
        print("middle (after \(calls / 2) calls): \(middle.map(String.init(describing:)) ?? "not reached")")
        print("end (after \(done) calls, \(created) tasks, 1 s idle): \(end)")
        print("calls: \(format(Double(done) / seconds, digits: 0))/s, p50 \(format(latency.median)) µs, p99 \(format(latency.percentile(99))) µs")

        guard done == calls else {
            print("not flat-checked: --max-seconds \(maxSeconds) ended the run after \(done) of \(calls) calls")
            throw ExitCode(1)
        }
        guard let start else { throw ExitCode(1) }
        let growth = (
            descriptors: end.descriptors - start.descriptors, threads: end.threads - start.threads,
            mib: Double(end.residentKiB - start.residentKiB) / 1024)
        let flat = growth.descriptors <= slackDescriptors && growth.threads <= slackThreads && growth.mib <= Double(slackMib)
        print("growth from start to end: \(growth.descriptors) fds, \(growth.threads) threads, \(format(growth.mib)) MiB: \(flat ? "flat" : "NOT flat") (slack \(slackDescriptors) fds, \(slackThreads) threads, \(slackMib) MiB)")
        if !flat { throw ExitCode(1) }
    }

    /// The rotation of calls between creates.
    private static func mixed(_ index: Int, recent: String, long: String) -> (String, [String: Any]) {
        func tool(_ name: String, _ arguments: [String: Any]) -> (String, [String: Any]) {
            ("tools/call", ["name": name, "arguments": arguments])
        }
        switch index % 10 {
        case 0, 1: return tool("get_background_task", ["task_id": recent])
        case 2: return tool("wait_for_background_task", ["task_id": recent, "timeout_ms": 10_000])
        case 3: return tool("get_task_output", ["task_id": recent])
        case 4: return tool("list_background_tasks", ["limit": 10])
        case 5: return tool("append_task_event", ["task_id": long, "message": "soak \(index)"])
        case 6: return tool("list_task_events", ["task_id": long, "since": max(0, index / 10 - 20), "limit": 20])
        case 7: return tool("summarize_background_task", ["task_id": recent])
        case 8: return ("tools/list", [:])
        default: return ("server/discover", [:])
        }
    }
}
