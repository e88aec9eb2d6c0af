import ArgumentParser
import CorralJSON
import Foundation
import Glibc

/// The 2026-07-28 `_meta` a raw client puts on every request.
enum ModernMeta {
    /// `tasks`: the client declares the Tasks extension.
    static func stamp(_ params: [String: Any], tasks: Bool = false) -> [String: Any] {
        var params = params
        params["_meta"] = [
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities":
                tasks ? ["extensions": ["io.modelcontextprotocol/tasks": [String: Any]()]] : [String: Any](),
            "io.modelcontextprotocol/clientInfo": ["name": "bench", "version": "1"],
        ]
        return params
    }
}

/// The allcanuse-mock built beside this binary: benchmarks run the build they are part of.
enum MockBinary {
    static func beside() throws -> URL {
        let directory = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        let binary = directory.appendingPathComponent("allcanuse-mock")
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw ValidationError("allcanuse-mock not found beside corral (\(binary.path)); build it first")
        }
        return binary
    }

    /// Starts `allcanuse-mock --http 127.0.0.1:0` and reads the endpoint it logs; the caller interrupts it.
    static func startHTTP(_ binary: URL, state: String) throws -> (process: Process, endpoint: URL) {
        let process = Process()
        process.executableURL = binary
        process.arguments = ["--http", "127.0.0.1:0", "--state-dir", state, "--log-level", "error"]
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        var text = ""
        while true {
            let chunk = errors.fileHandleForReading.availableData
            if chunk.isEmpty { throw ValidationError("allcanuse-mock --http did not start: \(text.suffix(300))") }
            text += String(decoding: chunk, as: UTF8.self)
            if let range = text.range(of: #"http://127\.0\.0\.1:\d+/mcp"#, options: .regularExpression),
                let url = URL(string: String(text[range]))
            {
                // Keep draining its log so that it never blocks on a full pipe.
                Thread.detachNewThread { while !errors.fileHandleForReading.availableData.isEmpty {} }
                return (process, url)
            }
        }
    }
}

/// What a server process holds, from /proc: the figures a soak run must end with where it started.
struct ProcessFootprint: CustomStringConvertible {
    var descriptors: Int
    var threads: Int
    var residentKiB: Int
    /// Of the resident memory: the process's own heap and stacks, and pages of its binary and libraries (shared
    /// with every process that maps them).
    var anonymousKiB: Int
    var fileKiB: Int

    init(pid: Int32) throws {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else {
            throw ValidationError("process \(pid) is gone")
        }
        // The mock makes itself non-dumpable: only root (or CAP_SYS_PTRACE) may list its descriptors.
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else {
            throw ValidationError("cannot list /proc/\(pid)/fd (the server is not dumpable): run the soak as root")
        }
        func field(_ name: String) -> Int {
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return 0 }
            return Int(line.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces).split(separator: " ")[0]) ?? 0
        }
        descriptors = entries.count
        threads = field("Threads")
        residentKiB = field("VmRSS")
        anonymousKiB = field("RssAnon")
        fileKiB = field("RssFile")
    }

    var description: String {
        "\(descriptors) fds, \(threads) threads, \(format(Double(residentKiB) / 1024)) MiB resident (\(format(Double(anonymousKiB) / 1024)) anonymous, \(format(Double(fileKiB) / 1024)) file)"
    }
}
