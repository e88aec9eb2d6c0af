import ArgumentParser
import CorralJSON
import Foundation
import Glibc

/// `corral bench watch`: condition watchers end to end, against the raw kernel event as the floor.
struct WatchBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch",
        abstract: "Condition watchers: condition met → task completed → seen by tasks/get; their cost; 1,000 at once.",
        discussion: """
            Starts the allcanuse-mock built beside this binary (allcanuse-watch beside it too) and talks to it with \
            a raw 2026-07-28 client that declares the Tasks extension. Measures, from the moment the test makes the \
            condition true (creates the file, opens the port) to the first tasks/get (or get_background_task) that \
            reports it completed: for a file (inotify) and a port (polled every --port-poll-ms), each as an MCP task \
            and as a background task; the floor is an inotify event read in this process. Then one waiting watcher's \
            resident memory (RSS and PSS) and CPU time over --idle-seconds, and --concurrent watchers at once: how \
            long creating them takes, their memory, and one of them completing while the others wait.
            """
    )

    @Option(help: "Rounds per latency figure.") var rounds = 40
    @Option(help: "Poll interval of the port watcher, in milliseconds.") var portPollMs = 10
    @Option(help: "Watcher tasks running at once for the scale figure.") var concurrent = 1000
    @Option(help: "Seconds over which a waiting watcher's CPU time is measured.") var idleSeconds = 3

    func run() async throws {
        let directory = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        let binary = directory.appendingPathComponent("allcanuse-mock")
        guard FileManager.default.isExecutableFile(atPath: binary.path),
            FileManager.default.isExecutableFile(atPath: directory.appendingPathComponent("allcanuse-watch").path)
        else {
            throw ValidationError("allcanuse-mock and allcanuse-watch must be beside corral (\(directory.path)); build them first")
        }
        let state = try makeTemporaryDirectory("corral-watchbench")
        let scratch = try makeTemporaryDirectory("corral-watched")
        defer {
            try? FileManager.default.removeItem(atPath: state)
            try? FileManager.default.removeItem(atPath: scratch)
        }
        chmod(scratch, 0o755)  // the watcher runs as the task user; inotify needs read access
        let client = try RawClient(
            binary: binary, arguments: ["--state-dir", state, "--log-level", "error", "--grace-ms", "200"], tasks: true)
        defer { client.close() }

        let widths = [46, 10, 10, 10]
        print("condition met → completed, seen by the client (µs, \(rounds) rounds)")
        row(["variant", "p50", "p90", "p99"], widths: widths)
        print(samplesRow("floor: inotify event read in this process", inotifyFloor(scratch), widths))
        print(samplesRow("file, MCP task (wait_for_file) → tasks/get", try fileLatency(client, scratch, mcp: true), widths))
        print(samplesRow("file, background task (wait_file) → get", try fileLatency(client, scratch, mcp: false), widths))
        print(samplesRow("port, MCP task, poll \(portPollMs) ms → tasks/get", try portLatency(client, mcp: true), widths))
        print(samplesRow("port, background task, poll \(portPollMs) ms → get", try portLatency(client, mcp: false), widths))
        print("(the real Allcanuse server checks every task from one thread every 500 ms)")

        try measureCost(client, scratch)
        try measureScale(client, scratch)
    }

    private func samplesRow(_ label: String, _ samples: Samples, _ widths: [Int]) -> String {
        var line = ""
        for (index, column) in [label, format(samples.percentile(50)), format(samples.percentile(90)), format(samples.percentile(99))].enumerated() {
            line += index == 0
                ? column.padding(toLength: max(widths[0], column.count), withPad: " ", startingAt: 0)
                : String(repeating: " ", count: max(0, widths[index] - column.count)) + column
        }
        return line
    }

    private func inotifyFloor(_ scratch: String) -> Samples {
        var samples = Samples()
        let fd = inotify_init1(Int32(IN_CLOEXEC))
        defer { close(fd) }
        _ = inotify_add_watch(fd, scratch, UInt32(IN_CREATE | IN_CLOSE_WRITE))
        var buffer = [UInt8](repeating: 0, count: 4096)
        for round in 0..<rounds {
            let path = scratch + "/floor-\(round)"
            let start = ContinuousClock.now
            let file = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)
            close(file)
            _ = read(fd, &buffer, buffer.count)
            samples.add(ContinuousClock.now - start)
            unlink(path)
        }
        return samples
    }

    /// Starts a watch, lets the watcher make its first check, makes the condition true, polls until completed.
    private func measureRounds(
        _ client: RawClient, start: (Int) throws -> String, trigger: (Int) throws -> Void, mcp: Bool,
        cleanup: (Int) -> Void = { _ in }
    ) throws -> Samples {
        var samples = Samples()
        for round in 0..<rounds {
            let handle = try start(round)
            // The watcher's first check must be behind us: a background task says so; an MCP task gets the same time.
            let armed = ContinuousClock.now + .seconds(5)
            if mcp {
                usleep(30_000)
            } else {
                while try client.callTool("get_background_task", ["task_id": handle])["check_count"] as? Int ?? 0 < 1 {
                    guard ContinuousClock.now < armed else { throw ValidationError("the watcher never checked") }
                    usleep(1000)
                }
            }
            let begin = ContinuousClock.now
            try trigger(round)
            let deadline = begin + .seconds(10)
            while true {
                let status: String?
                if mcp {
                    status = try client.request("tasks/get", ["taskId": handle])["status"] as? String
                } else {
                    status = try client.callTool("get_background_task", ["task_id": handle])["status"] as? String
                }
                if status == "completed" { break }
                guard ContinuousClock.now < deadline, status != "failed", status != "cancelled" else {
                    throw ValidationError("round \(round): the watch ended \(status ?? "unknown")")
                }
            }
            samples.add(ContinuousClock.now - begin)
            cleanup(round)
        }
        return samples
    }

    private func fileLatency(_ client: RawClient, _ scratch: String, mcp: Bool) throws -> Samples {
        let prefix = scratch + "/\(mcp ? "mcp" : "bg")-"
        return try measureRounds(
            client,
            start: { round in
                let path = prefix + String(round)
                if mcp {
                    let created = try client.request("tools/call", [
                        "name": "wait_for_file", "arguments": ["path": path, "timeout_ms": 20000, "poll_interval_ms": 60000],
                    ])
                    return created["taskId"] as? String ?? ""
                }
                return try client.callTool("create_background_task", [
                    "title": "bench", "goal": "file", "task_type": "wait_file", "condition": ["path": path],
                    "poll_interval_ms": 60000, "timeout_ms": 20000,
                ])["task_id"] as? String ?? ""
            },
            trigger: { round in
                let file = open(prefix + String(round), O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)
                close(file)
            }, mcp: mcp, cleanup: { round in unlink(prefix + String(round)) })
    }

    private func portLatency(_ client: RawClient, mcp: Bool) throws -> Samples {
        var listeners: [Int: Int32] = [:]
        var ports: [Int: Int] = [:]
        return try measureRounds(
            client,
            start: { round in
                let port = Self.freePort()
                ports[round] = port
                if mcp {
                    let created = try client.request("tools/call", [
                        "name": "wait_for_port",
                        "arguments": ["host": "127.0.0.1", "port": port, "timeout_ms": 20000, "poll_interval_ms": portPollMs],
                    ])
                    return created["taskId"] as? String ?? ""
                }
                return try client.callTool("create_background_task", [
                    "title": "bench", "goal": "port", "task_type": "wait_port",
                    "condition": ["host": "127.0.0.1", "port": port], "poll_interval_ms": portPollMs, "timeout_ms": 20000,
                ])["task_id"] as? String ?? ""
            },
            trigger: { round in listeners[round] = try Self.listen(port: ports[round] ?? 0) },
            mcp: mcp, cleanup: { round in if let fd = listeners[round] { close(fd) } })
    }

    /// One waiting watcher's memory and CPU time; the server's memory.
    private func measureCost(_ client: RawClient, _ scratch: String) throws {
        print("\none waiting watcher (the watcher process itself)")
        row(["variant", "RSS KiB", "PSS KiB", "CPU ms/s"], widths: [46, 10, 10, 10])
        for (label, kind, condition, poll) in [
            ("file (inotify), poll 60 s", "wait_file", ["path": scratch + "/never"] as [String: Any], 60000),
            ("port, poll 1000 ms (the default)", "wait_port", ["host": "127.0.0.1", "port": Self.freePort()], 1000),
            ("port, poll 10 ms", "wait_port", ["host": "127.0.0.1", "port": Self.freePort()], 10),
        ] {
            let task = try client.callTool("create_background_task", [
                "title": "cost", "goal": "cost", "task_type": kind, "condition": condition, "poll_interval_ms": poll,
            ])
            guard let id = task["task_id"] as? String, let pid = task["pid"] as? Int else {
                throw ValidationError("no watcher started: \(task)")
            }
            usleep(300_000)
            let before = Self.cpuNanoseconds(Int32(pid))
            usleep(UInt32(idleSeconds) * 1_000_000)
            let after = Self.cpuNanoseconds(Int32(pid))
            let perSecond = Double(after - before) / 1e6 / Double(idleSeconds)
            row([label, String(Self.memoryKiB(Int32(pid), "Rss")), String(Self.memoryKiB(Int32(pid), "Pss")), format(perSecond, digits: 2)],
                widths: [46, 10, 10, 10])
            _ = try client.callTool("cancel_background_task", ["task_id": id])
        }
        print("server: RSS \(Self.memoryKiB(client.pid, "Rss")) KiB")
    }

    /// `concurrent` file watchers at once: creation, memory, one completing among them, cancelling them all.
    private func measureScale(_ client: RawClient, _ scratch: String) throws {
        print("\n\(concurrent) file watcher tasks at once")
        var ids: [String] = []
        var pids: [Int32] = []
        let created = ContinuousClock.now
        for index in 0..<concurrent {
            let task = try client.callTool("create_background_task", [
                "title": "many", "goal": "scale", "task_type": "wait_file", "condition": ["path": scratch + "/many-\(index)"],
                "poll_interval_ms": 1000,
            ])
            guard let id = task["task_id"] as? String, task["status"] as? String == "waiting_for_condition" else {
                throw ValidationError("watcher \(index) did not start: \(task["last_error"] ?? task)")
            }
            ids.append(id)
            if let pid = task["pid"] as? Int { pids.append(Int32(pid)) }
        }
        let creating = ContinuousClock.now - created
        usleep(500_000)
        let pss = pids.reduce(0) { $0 + Self.memoryKiB($1, "Pss") }
        let rss = pids.reduce(0) { $0 + Self.memoryKiB($1, "Rss") }
        let cpuBefore = pids.reduce(0) { $0 + Self.cpuNanoseconds($1) }
        usleep(UInt32(idleSeconds) * 1_000_000)
        let cpuAfter = pids.reduce(0) { $0 + Self.cpuNanoseconds($1) }
        // Past fs.inotify.max_user_instances (128 by default) a watcher has no inotify instance and polls.
        var wakeups: [String: [Int]] = [:]
        for (index, id) in ids.enumerated() {
            let mode = try client.callTool("get_background_task", ["task_id": id])["watcher_wakeup"] as? String ?? "unknown"
            wakeups[mode, default: []].append(index)
        }
        print("created in \(format(Double(creating.components.seconds) * 1000 + Double(creating.components.attoseconds) / 1e15)) ms "
              + "(\(format(Double(concurrent) / max(0.001, Double(creating.components.seconds) + Double(creating.components.attoseconds) / 1e18))) a second)")
        print("watchers: PSS \(pss / 1024) MiB in all (\(pss / max(1, pids.count)) KiB each), RSS \(rss / 1024) MiB summed; "
              + "CPU \(format(Double(cpuAfter - cpuBefore) / 1e6 / Double(idleSeconds), digits: 2)) ms/s for all of them while waiting (poll 1000 ms)")
        print("woken by: " + wakeups.keys.sorted().map { "\($0) \(wakeups[$0]?.count ?? 0)" }.joined(separator: ", ")
              + " (inotify instances are limited by fs.inotify.max_user_instances, \((try? String(contentsOfFile: "/proc/sys/fs/inotify/max_user_instances", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?") here)")
        print("server: RSS \(Self.memoryKiB(client.pid, "Rss")) KiB with \(concurrent) live tasks")
        var triggered: Set<Int> = []
        for (mode, indexes) in wakeups.sorted(by: { $0.key < $1.key }) {
            guard let index = indexes.last else { continue }
            triggered.insert(index)
            let begin = ContinuousClock.now
            close(open(scratch + "/many-\(index)", O_CREAT | O_WRONLY | O_CLOEXEC, 0o644))
            while try client.callTool("get_background_task", ["task_id": ids[index]])["status"] as? String != "completed" {
                guard ContinuousClock.now - begin < .seconds(10) else { throw ValidationError("the watcher did not complete") }
            }
            let seen = ContinuousClock.now - begin
            print("one of them (\(mode)) met → completed, seen by get: \(format(Double(seen.components.attoseconds) / 1e12 + Double(seen.components.seconds) * 1e6)) µs")
        }
        let cancelling = ContinuousClock.now
        for (index, id) in ids.enumerated() where !triggered.contains(index) {
            _ = try client.callTool("cancel_background_task", ["task_id": id])
        }
        let cancelled = ContinuousClock.now - cancelling
        print("cancelled the other \(concurrent - triggered.count) in \(format(Double(cancelled.components.seconds) * 1000 + Double(cancelled.components.attoseconds) / 1e15)) ms")
    }

    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = bind(fd, $0, length) }
        }
        withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func listen(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, Glibc.listen(fd, 16) == 0 else {
            close(fd)
            throw ValidationError("cannot listen on port \(port): \(String(cString: strerror(errno)))")
        }
        return fd
    }

    /// Time a process spent on a CPU, in nanoseconds (/proc/PID/schedstat; clock ticks are too coarse here).
    static func cpuNanoseconds(_ pid: Int32) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/schedstat", encoding: .utf8) else { return 0 }
        return Int(text.split(separator: " ").first ?? "0") ?? 0
    }

    /// A field of /proc/PID/smaps_rollup, in KiB.
    static func memoryKiB(_ pid: Int32, _ field: String) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
            return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
        }
        return 0
    }
}
