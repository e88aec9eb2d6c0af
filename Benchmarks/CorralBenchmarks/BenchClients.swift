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

/// A minimal Streamable HTTP client for the benchmark: POST, then the JSON-RPC response from the JSON or SSE body.
final class HTTPClient: @unchecked Sendable {  // used from one task at a time
    private let endpoint: URL
    private var sessionID: String?
    private var nextID = 1
    private let modern: Bool

    init(endpoint: URL, modern: Bool = false) {
        self.endpoint = endpoint
        self.modern = modern
    }

    func notify(_ method: String) async throws {
        _ = try await post(["jsonrpc": "2.0", "method": method])
    }

    func request(_ method: String, _ params: [String: Any]) async throws -> [String: Any] {
        let id = nextID
        nextID += 1
        let body = try await post(
            ["jsonrpc": "2.0", "id": id, "method": method, "params": modern ? ModernMeta.stamp(params) : params])
        if let message = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any], message["id"] as? Int == id {
            return message["result"] as? [String: Any] ?? [:]
        }
        for line in body.split(separator: "\n") where line.hasPrefix("data:") {
            let payload = line.dropFirst(5).trimmingCharacters(in: .whitespaces)
            guard !payload.isEmpty, let message = try? JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any],
                message["id"] as? Int == id
            else { continue }
            return message["result"] as? [String: Any] ?? [:]
        }
        throw ValidationError("\(method): no response in \(body.prefix(200))")
    }

    func callTool(_ name: String, _ arguments: [String: Any]) async throws -> [String: Any] {
        let result = try await request("tools/call", ["name": name, "arguments": arguments])
        return result["structuredContent"] as? [String: Any] ?? [:]
    }

    /// A round trip whose answer is only checked (its id and that it is no error), not parsed: what is timed is
    /// the server and the wire, not this client's JSON decoding.
    func requestUnparsed(_ method: String, _ params: [String: Any]) async throws {
        let id = nextID
        nextID += 1
        let body = try await post(
            ["jsonrpc": "2.0", "id": id, "method": method, "params": modern ? ModernMeta.stamp(params) : params])
        let payload = body.hasPrefix("{") ? Substring(body) : body.split(separator: "\n").last { $0.hasPrefix("data:") }?.dropFirst(5)
        guard let payload, let summary = JSONValue.summarizeMessage(Data(payload.utf8)), summary.id == .int(id), !summary.hasError
        else { throw ValidationError("\(method): no answer in \(body.prefix(200))") }
    }

    private func post(_ message: [String: Any]) async throws -> String {
        let body = try JSONSerialization.data(withJSONObject: message)
        var head = "POST \(endpoint.path) HTTP/1.1\r\nHost: \(endpoint.host ?? "127.0.0.1")\r\n"
        head += "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        head += "MCP-Protocol-Version: \(modern ? "2026-07-28" : "2025-11-25")\r\n"
        if modern, let method = message["method"] as? String {
            head += "Mcp-Method: \(method)\r\n"
            if let name = (message["params"] as? [String: Any])?["name"] as? String { head += "Mcp-Name: \(name)\r\n" }
        }
        if let sessionID { head += "Mcp-Session-Id: \(sessionID)\r\n" }
        head += "Content-Length: \(body.count)\r\n\r\n"
        let response = try connection.exchange(Array(head.utf8) + body)
        if let id = response.headers["mcp-session-id"] { sessionID = id }
        return String(decoding: response.body, as: UTF8.self)
    }

    private lazy var connection = KeepAliveConnection(host: endpoint.host ?? "127.0.0.1", port: endpoint.port ?? 80)
}

/// One HTTP/1.1 keep-alive connection over a plain socket, written by hand for the benchmark: URLSession (libcurl)
/// cost the client more than the server cost (a raw client measured the same server at half the figure).
final class KeepAliveConnection {
    private let host: String
    private let port: Int
    private var fd: Int32 = -1
    private var buffer: [UInt8] = []

    init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    deinit { if fd >= 0 { close(fd) } }

    struct Response {
        var status: Int
        var headers: [String: String]
        var body: [UInt8]
    }

    func exchange(_ request: [UInt8]) throws -> Response {
        if fd < 0 { try connect() }
        var sent = 0
        while sent < request.count {
            let count = request[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { throw ValidationError("send: \(String(cString: strerror(errno)))") }
            sent += count
        }
        let headerEnd = try readUntil([13, 10, 13, 10])
        let head = String(decoding: buffer[0..<headerEnd], as: UTF8.self)
        buffer.removeFirst(headerEnd + 4)
        var lines = head.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ")
        var headers: [String: String] = [:]
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body: [UInt8] = []
        if let length = headers["content-length"].flatMap(Int.init) {
            try fill(length)
            body = Array(buffer[0..<length])
            buffer.removeFirst(length)
        } else if headers["transfer-encoding"]?.lowercased().contains("chunked") == true {
            while true {
                let lineEnd = try readUntil([13, 10])
                let size = Int(String(decoding: buffer[0..<lineEnd], as: UTF8.self).split(separator: ";").first ?? "", radix: 16) ?? 0
                buffer.removeFirst(lineEnd + 2)
                try fill(size + 2)
                body += buffer[0..<size]
                buffer.removeFirst(size + 2)
                if size == 0 { break }
            }
        }
        return Response(status: statusLine.count > 1 ? Int(statusLine[1]) ?? 0 : 0, headers: headers, body: body)
    }

    private func connect() throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr(host == "localhost" ? "127.0.0.1" : host)
        let connected = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw ValidationError("connect \(host):\(port): \(String(cString: strerror(errno)))") }
    }

    private func readMore() throws {
        var chunk = [UInt8](repeating: 0, count: 1 << 17)
        let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { throw ValidationError("the server closed the connection") }
        buffer += chunk[0..<count]
    }

    private func fill(_ count: Int) throws {
        while buffer.count < count { try readMore() }
    }

    /// The index where `pattern` starts, reading until it is there.
    private func readUntil(_ pattern: [UInt8]) throws -> Int {
        var from = 0
        while true {
            if buffer.count >= pattern.count {
                for index in from...(buffer.count - pattern.count) where buffer[index] == pattern[0] {
                    if Array(buffer[index..<(index + pattern.count)]) == pattern { return index }
                }
                from = buffer.count - pattern.count + 1
            }
            try readMore()
        }
    }
}

/// Newline-delimited JSON-RPC to a child process: enough for a benchmark, no MCP library in between.
final class RawClient {
    private let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private var buffer: [UInt8] = []
    private var nextID = 1
    let modern: Bool
    let tasks: Bool

    /// `modern`: every request carries the 2026-07-28 `_meta` (and no initialize is needed); `tasks`: it declares
    /// the Tasks extension too.
    init(binary: URL, arguments: [String], modern: Bool = false, tasks: Bool = false) throws {
        self.modern = modern || tasks
        self.tasks = tasks
        process.executableURL = binary
        process.arguments = arguments
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    func notify(_ method: String) {
        send(["jsonrpc": "2.0", "method": method])
    }

    func request(_ method: String, _ params: [String: Any]) throws -> [String: Any] {
        let id = nextID
        nextID += 1
        send(["jsonrpc": "2.0", "id": id, "method": method, "params": modern ? ModernMeta.stamp(params, tasks: tasks) : params])
        while true {
            let message = try readMessage()
            if message["id"] as? Int == id {
                if let error = message["error"] { throw ValidationError("\(method) failed: \(error)") }
                return message["result"] as? [String: Any] ?? [:]
            }
        }
    }

    func callTool(_ name: String, _ arguments: [String: Any]) throws -> [String: Any] {
        let result = try request("tools/call", ["name": name, "arguments": arguments])
        return result["structuredContent"] as? [String: Any] ?? [:]
    }

    /// A round trip whose answer is only checked (its id, and that it is no error), not decoded.
    func requestUnparsed(_ method: String, _ params: [String: Any]) throws {
        let id = nextID
        nextID += 1
        send(["jsonrpc": "2.0", "id": id, "method": method, "params": modern ? ModernMeta.stamp(params) : params])
        while true {
            let line = try readLine()
            guard let summary = JSONValue.summarizeMessage(line), summary.id == .int(id), summary.method == nil else { continue }
            if summary.hasError { throw ValidationError("\(method) failed: \(String(decoding: line.prefix(300), as: UTF8.self))") }
            return
        }
    }

    var pid: Int32 { process.processIdentifier }

    func close() {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
    }

    private func send(_ message: [String: Any]) {
        guard var data = try? JSONSerialization.data(withJSONObject: message) else { return }
        data.append(UInt8(ascii: "\n"))
        input.fileHandleForWriting.write(data)
    }

    private func readMessage() throws -> [String: Any] {
        while true {
            if let message = try? JSONSerialization.jsonObject(with: try readLine()) as? [String: Any] { return message }
        }
    }

    private var scanned = 0  // bytes of `buffer` known to hold no newline
    private var chunk = [UInt8](repeating: 0, count: 1 << 18)

    private func readLine() throws -> Data {
        while true {
            // memchr over a byte array: Data's generic index walk cost this client more than a big answer cost the
            // server (tools/list read at 1.9 ms here, 0.35 ms with a Python client).
            let newline = buffer.withUnsafeBytes { raw -> Int? in
                guard raw.count > scanned, let base = raw.baseAddress else { return nil }
                guard let found = memchr(base + scanned, 0x0A, raw.count - scanned) else { return nil }
                return base.distance(to: UnsafeRawPointer(found))
            }
            if let newline {
                let line = Data(buffer[0..<newline])
                buffer.removeSubrange(0...newline)
                scanned = 0
                return line
            }
            scanned = buffer.count
            // One large read(2): availableData reads a few KB at a time.
            let count = chunk.withUnsafeMutableBytes { read(output.fileHandleForReading.fileDescriptor, $0.baseAddress, $0.count) }
            if count <= 0 { throw ValidationError("allcanuse-mock closed its output") }
            buffer.append(contentsOf: chunk[0..<count])
        }
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
