// allcanuse-watch: a condition watcher, run by allcanuse-mock as a confined task like any other (so pause freezes
// it, cancel kills it, its time limit is the task's). It checks its condition, writes one JSON line per check on
// standard output (`{"check_count", "checked_at", "condition_met", "last_result", "fatal_error"?}`), and exits 0
// when the condition is met, 3 when it can never be, 1 after a single unmet check (`--once`), 2 on bad usage.
// Kernel events wake it where they exist (inotify for a file, a pidfd on standard input for a pid); otherwise it
// checks every poll interval. Each report says which (`wakeup`: inotify, pidfd or poll).
import CorralJSON
import Foundation
import Glibc
import WatchConditions

struct Usage: Error { var message: String }

struct Options {
    var condition: WatchCondition
    var pollMilliseconds: Int32 = 1000
    var once = false
    var pidfdOnStandardInput = false
    var inotifyOnStandardInput = false

    init(_ arguments: [String]) throws(Usage) {
        guard arguments.count >= 2 else {
            throw Usage(message: "usage: allcanuse-watch KIND CONDITION_JSON [--poll-ms N] [--once] [--pidfd-stdin | --inotify-stdin]")
        }
        let fields: [String: JSONValue]
        do {
            guard let object = try JSONValue.parse(arguments[1]).objectValue else { throw Usage(message: "the condition must be a JSON object") }
            fields = object
        } catch let usage as Usage {
            throw usage
        } catch {
            throw Usage(message: "the condition is not JSON: \(error)")
        }
        do {
            condition = try WatchCondition(kind: arguments[0], fields: fields, context: "condition")
        } catch {
            throw Usage(message: error.message)
        }
        var index = 2
        while index < arguments.count {
            switch arguments[index] {
            case "--poll-ms":
                guard index + 1 < arguments.count, let value = Int32(arguments[index + 1]), value > 0 else {
                    throw Usage(message: "--poll-ms needs a positive number of milliseconds")
                }
                pollMilliseconds = value
                index += 1
            case "--once": once = true
            case "--pidfd-stdin": pidfdOnStandardInput = true
            case "--inotify-stdin": inotifyOnStandardInput = true
            default: throw Usage(message: "unknown option \(arguments[index])")
            }
            index += 1
        }
    }
}

/// What wakes the watcher before its poll interval is over.
final class Wakeups {
    private var inotifyFD: Int32 = -1
    private var watch: Int32 = -1
    private var watchedPath = ""
    private let pidfd: Int32

    init(_ options: Options) {
        // Only a real pidfd or inotify instance: anything else on standard input would be readable at once, and
        // forever.
        var link = [CChar](repeating: 0, count: 64)
        let length = readlink("/proc/self/fd/0", &link, link.count - 1)
        let standardInput = length > 0 ? String(decoding: link[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
        pidfd = options.pidfdOnStandardInput && standardInput == "anon_inode:[pidfd]" ? 0 : -1
        if case .file = options.condition {
            // The server's instance when it gave one: the last close of an inotify instance waits for an SRCU
            // grace period (10 ms here), and the server, not the finished watcher, should pay it. Else our own.
            inotifyFD = options.inotifyOnStandardInput && standardInput == "anon_inode:inotify"
                ? 0 : inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        }
    }

    /// How the watcher is woken: by an event, or only by its poll interval.
    var mode: String {
        if pidfd >= 0 { return "pidfd" }
        if inotifyFD >= 0 && watch >= 0 { return "inotify" }
        return "poll"
    }

    /// Points inotify at the nearest existing directory on the way to the file (again after every change).
    func arm(for condition: FileCondition) {
        guard inotifyFD >= 0 else { return }
        let directory = condition.watchedDirectory
        guard directory != watchedPath || watch < 0 else { return }
        if watch >= 0 { inotify_rm_watch(inotifyFD, watch) }
        let mask = UInt32(IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM | IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB
            | IN_DELETE_SELF | IN_MOVE_SELF)
        watch = inotify_add_watch(inotifyFD, directory, mask)
        watchedPath = directory
    }

    /// Sleeps until an event (inotify, or the watched process's exit on its pidfd) or the poll interval.
    func wait(milliseconds: Int32) {
        var fds: [pollfd] = []
        if inotifyFD >= 0 { fds.append(pollfd(fd: inotifyFD, events: Int16(POLLIN), revents: 0)) }
        if pidfd >= 0 { fds.append(pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)) }
        _ = poll(&fds, nfds_t(fds.count), milliseconds)
        if inotifyFD >= 0 {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while buffer.withUnsafeMutableBytes({ read(inotifyFD, $0.baseAddress, $0.count) }) > 0 {}
        }
    }
}

func emit(_ check: CheckResult, count: Int, wakeup: String) {
    var line: [String: JSONValue] = [
        "check_count": .int(count), "checked_at": .string(Timestamp.format(Date())),
        "condition_met": .bool(check.conditionMet), "last_result": check.lastResult, "wakeup": .string(wakeup),
    ]
    if check.fatal { line["fatal_error"] = true }
    let bytes = Array((JSONValue.object(line).jsonString() + "\n").utf8)
    var written = 0
    while written < bytes.count {
        let count = bytes[written...].withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        guard count > 0 else { exit(4) }  // nobody reads the reports any more
        written += count
    }
}

func evaluate(_ condition: WatchCondition) -> CheckResult {
    switch condition {
    case .file(let file): return file.check()
    case .process(let process): return process.check()
    case .port(let port): return port.check()
    case .http(let http): return http.check()
    case .window(let window): return window.check()
    }
}

let options: Options
do {
    options = try Options(Array(CommandLine.arguments.dropFirst()))
} catch {
    FileHandle.standardError.write(Data(("allcanuse-watch: " + error.message + "\n").utf8))
    exit(2)
}
signal(SIGPIPE, SIG_IGN)
let wakeups = Wakeups(options)
var checks = 0
while true {
    if case .file(let file) = options.condition { wakeups.arm(for: file) }
    checks += 1
    let result = evaluate(options.condition)
    emit(result, count: checks, wakeup: wakeups.mode)
    // _exit: the reports went out with write(2), nothing is buffered, and exit(3)'s teardown of the runtime took
    // 13 ms here, most of the time between a met condition and the task's completion.
    if result.conditionMet { _exit(0) }
    if result.fatal { _exit(3) }
    if options.once { _exit(1) }
    wakeups.wait(milliseconds: options.pollMilliseconds)
}
