import ArgumentParser
import CorralJSON
import Foundation
import Glibc

/// A minimal Streamable HTTP client for the benchmark: POST, then the JSON-RPC response from the JSON or SSE body.
/// As with `RawClient`, a timed request is built before the clock starts and its answer checked after it stops.
final class HTTPClient: @unchecked Sendable {  // used from one task at a time
    private let endpoint: URL
    private var sessionID: String?
    private var nextID = 1
    private let modern: Bool
    /// When the last answer's last byte arrived.
    private(set) var lastArrival = ContinuousClock.now

    init(endpoint: URL, modern: Bool = false) {
        self.endpoint = endpoint
        self.modern = modern
    }

    func notify(_ method: String) async throws {
        _ = try exchange(post(try JSONSerialization.data(withJSONObject: ["jsonrpc": "2.0", "method": method]), method: method, name: nil))
    }

    func request(_ method: String, _ params: [String: Any]) async throws -> [String: Any] {
        let (id, request) = try encode(method, params)
        let response = try exchange(request)
        guard let payload = Self.payload(of: response, id: id),
            let message = try JSONSerialization.jsonObject(with: payload) as? [String: Any]
        else { throw ValidationError("\(method): no response in \(String(decoding: response.body.prefix(200), as: UTF8.self))") }
        return message["result"] as? [String: Any] ?? [:]
    }

    func callTool(_ name: String, _ arguments: [String: Any]) async throws -> [String: Any] {
        let result = try await request("tools/call", ["name": name, "arguments": arguments])
        return result["structuredContent"] as? [String: Any] ?? [:]
    }

    /// A round trip timed from the first byte sent to the last byte of the answer; its id and that it is no error
    /// are checked after the clock stopped.
    @discardableResult
    func requestUnparsed(_ method: String, _ params: [String: Any]) async throws -> Duration {
        let (id, request) = try encode(method, params)
        let began = ContinuousClock.now
        let response = try exchange(request)
        let elapsed = response.arrived - began
        guard let payload = Self.payload(of: response, id: id), let summary = JSONValue.summarizeMessage(payload),
            !summary.hasError
        else { throw ValidationError("\(method): no answer in \(String(decoding: response.body.prefix(200), as: UTF8.self))") }
        return elapsed
    }

    /// The request's bytes under a fresh id.
    private func encode(_ method: String, _ params: [String: Any]) throws -> (Int, [UInt8]) {
        let id = nextID
        nextID += 1
        let body = try JSONSerialization.data(
            withJSONObject: ["jsonrpc": "2.0", "id": id, "method": method, "params": modern ? ModernMeta.stamp(params) : params])
        return (id, post(body, method: method, name: params["name"] as? String))
    }

    private func post(_ body: Data, method: String, name: String?) -> [UInt8] {
        var head = "POST \(endpoint.path) HTTP/1.1\r\nHost: \(endpoint.host ?? "127.0.0.1")\r\n"
        head += "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        head += "MCP-Protocol-Version: \(modern ? "2026-07-28" : "2025-11-25")\r\n"
        if modern {
            head += "Mcp-Method: \(method)\r\n"
            if let name { head += "Mcp-Name: \(name)\r\n" }
        }
        if let sessionID { head += "Mcp-Session-Id: \(sessionID)\r\n" }
        head += "Content-Length: \(body.count)\r\n\r\n"
        return Array(head.utf8) + body
    }

    private func exchange(_ request: [UInt8]) throws -> KeepAliveConnection.Response {
        let response = try connection.exchange(request)
        lastArrival = response.arrived
        if let id = response.headers["mcp-session-id"] { sessionID = id }
        return response
    }

    /// The JSON-RPC message answering `id`: the whole body, or the SSE event that carries it.
    private static func payload(of response: KeepAliveConnection.Response, id: Int) -> Data? {
        let body = Data(response.body)
        if body.first == UInt8(ascii: "{") { return body }
        for line in String(decoding: body, as: UTF8.self).split(separator: "\n") where line.hasPrefix("data:") {
            let payload = Data(line.dropFirst(5).trimmingCharacters(in: .whitespaces).utf8)
            if JSONValue.summarizeMessage(payload)?.id == .int(id) { return payload }
        }
        return nil
    }

    private lazy var connection = KeepAliveConnection(host: endpoint.host ?? "127.0.0.1", port: endpoint.port ?? 80)
}

/// One HTTP/1.1 keep-alive connection over a plain socket, written by hand for the benchmark: URLSession (libcurl)
/// cost the client more than the server cost (a raw client measured the same server at half the figure).
final class KeepAliveConnection {
    private let host: String
    private let port: Int
    private var fd: Int32 = -1
    private var storage = [UInt8](repeating: 0, count: 1 << 18)
    private var start = 0
    private var end = 0
    /// When the newest bytes were received: a response's arrival is its last read, not the end of this client's
    /// parsing of it.
    private var lastReceived = ContinuousClock.now

    init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    deinit { if fd >= 0 { close(fd) } }

    struct Response {
        var status: Int
        /// Names in lower case.
        var headers: [String: String]
        var body: [UInt8]
        /// When the read that completed the response returned.
        var arrived: ContinuousClock.Instant
    }

    func exchange(_ request: [UInt8]) throws -> Response {
        if fd < 0 { try connect() }
        try request.withUnsafeBytes { raw in
            guard let base = raw.baseAddress else { return }
            var sent = 0
            while sent < raw.count {
                let count = send(fd, base + sent, raw.count - sent, Int32(MSG_NOSIGNAL))
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { throw ValidationError("send: \(String(cString: strerror(errno)))") }
                sent += count
            }
        }
        let headerEnd = try find(Self.headerTerminator)
        let (status, headers) = Self.parseHead(storage[start..<headerEnd])
        start = headerEnd + 4
        var body: [UInt8] = []
        if let length = headers["content-length"].flatMap(Int.init) {
            try fill(length)
            body = Array(storage[start..<(start + length)])
            start += length
        } else if headers["transfer-encoding"]?.lowercased().contains("chunked") == true {
            while true {
                let lineEnd = try find(Self.lineTerminator)
                let sizeText = String(decoding: storage[start..<lineEnd], as: UTF8.self).split(separator: ";").first ?? ""
                let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) ?? 0
                start = lineEnd + 2
                try fill(size + 2)
                body += storage[start..<(start + size)]
                start += size + 2
                if size == 0 { break }
            }
        }
        let arrived = lastReceived
        if start == end { (start, end) = (0, 0) }
        return Response(status: status, headers: headers, body: body, arrived: arrived)
    }

    private static let headerTerminator: [UInt8] = [13, 10, 13, 10]
    private static let lineTerminator: [UInt8] = [13, 10]

    private static func parseHead(_ head: ArraySlice<UInt8>) -> (Int, [String: String]) {
        var lines = String(decoding: head, as: UTF8.self).components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ")
        var headers: [String: String] = [:]
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return (statusLine.count > 1 ? Int(statusLine[1]) ?? 0 : 0, headers)
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

    /// Reads once more into the buffer (moving unread bytes to its front, or growing it, when it is full).
    private func readMore() throws {
        if end == storage.count {
            if start > 0 {
                storage.withUnsafeMutableBytes { raw in
                    guard let base = raw.baseAddress else { return }
                    memmove(base, base + start, end - start)
                }
                (end, start) = (end - start, 0)
            } else {
                storage.append(contentsOf: repeatElement(0, count: storage.count))
            }
        }
        while true {
            let count = storage.withUnsafeMutableBytes { raw -> Int in
                guard let base = raw.baseAddress else { return -1 }
                return recv(fd, base + end, raw.count - end, 0)
            }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { throw ValidationError("the server closed the connection") }
            lastReceived = ContinuousClock.now
            end += count
            return
        }
    }

    /// At least `count` unread bytes.
    private func fill(_ count: Int) throws {
        while end - start < count { try readMore() }
    }

    /// Where `pattern` starts in the unread bytes (an index of the buffer), reading until it is there.
    private func find(_ pattern: [UInt8]) throws -> Int {
        while true {
            // memchr for the pattern's first byte, then a compare (Glibc's module does not export memmem).
            let found = storage.withUnsafeBytes { raw -> Int? in
                guard let base = raw.baseAddress else { return nil }
                var from = start
                while end - from >= pattern.count, let hit = memchr(base + from, Int32(pattern[0]), end - from) {
                    let at = base.distance(to: UnsafeRawPointer(hit))
                    if at + pattern.count > end { return nil }
                    if pattern.indices.allSatisfy({ raw[at + $0] == pattern[$0] }) { return at }
                    from = at + 1
                }
                return nil
            }
            if let found { return found }
            try readMore()
        }
    }
}
