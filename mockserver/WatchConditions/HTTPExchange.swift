import Foundation
import Glibc

/// What an HTTP server sent, read as the watcher reads it (for the fuzz target, which feeds it any bytes).
public enum HTTPResponseReading {
    /// The status and body of a complete response in `bytes`, or nil while it is incomplete or malformed.
    public static func read(_ bytes: [UInt8], headRequest: Bool, peerClosed: Bool) -> (status: Int, reason: String, body: [UInt8])? {
        HTTPExchange.parse(bytes, method: headRequest ? "HEAD" : "GET", atEnd: peerClosed).map { ($0.status, $0.reason, $0.body) }
    }
}

/// A response: status line, headers (names lowercased) and the body (de-chunked).
struct HTTPResponse {
    var status: Int
    var reason: String
    var headers: [(String, String)]
    var body: [UInt8]

    func header(_ name: String) -> String? {
        headers.first { $0.0 == name }?.1
    }
}

/// One HTTP/1.1 request with `Connection: close`, under one deadline for connect, send and receive.
enum HTTPExchange {
    static func send(
        method: String, target: HTTPTarget, headers: [String: String], body: String?, timeoutMilliseconds: Int,
        bodyLimit: Int
    ) -> Result<HTTPResponse, ConnectFailure> {
        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        let end = Int64(deadline.tv_sec) * 1000 + Int64(deadline.tv_nsec) / 1_000_000 + Int64(timeoutMilliseconds)
        func remaining() -> Int32 {
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            return Int32(clamping: max(0, end - (Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000)))
        }
        let fd: Int32
        switch TCPConnection.open(host: target.host, port: target.port, timeoutMilliseconds: timeoutMilliseconds) {
        case .failure(let failure): return .failure(failure)
        case .success(let opened): fd = opened
        }
        defer { close(fd) }
        let hostHeader = (target.host.contains(":") ? "[\(target.host)]" : target.host) + (target.port == 80 ? "" : ":\(target.port)")
        var request = "\(method) \(target.path) HTTP/1.1\r\nHost: \(hostHeader)\r\n"
        let lowered = Set(headers.keys.map { $0.lowercased() })
        if !lowered.contains("user-agent") { request += "User-Agent: allcanuse-mock-watch\r\n" }
        if !lowered.contains("accept") { request += "Accept: */*\r\n" }
        for (name, value) in headers.sorted(by: { $0.key < $1.key })
        where !["host", "connection", "content-length", "transfer-encoding"].contains(name.lowercased()) {
            request += "\(name): \(value)\r\n"
        }
        let bodyBytes = Array((body ?? "").utf8)
        if body != nil || ["POST", "PUT", "PATCH"].contains(method) { request += "Content-Length: \(bodyBytes.count)\r\n" }
        request += "Connection: close\r\n\r\n"
        let outgoing = Array(request.utf8) + bodyBytes
        var sent = 0
        while sent < outgoing.count {
            let count = outgoing[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count > 0 {
                sent += count
                continue
            }
            if count < 0 && errno == EINTR { continue }
            if count < 0 && errno == EAGAIN {
                var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                if poll(&poller, 1, remaining()) <= 0 { return .failure(ConnectFailure(message: timedOut(timeoutMilliseconds))) }
                continue
            }
            return .failure(ConnectFailure(message: "send: \(String(cString: strerror(errno)))"))
        }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while received.count <= bodyLimit + 65536 {
            if let complete = parse(received, method: method, atEnd: false) { return .success(complete) }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, remaining())
            if ready == 0 { return .failure(ConnectFailure(message: timedOut(timeoutMilliseconds))) }
            if ready < 0 && errno == EINTR { continue }
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            if count < 0 { return .failure(ConnectFailure(message: "recv: \(String(cString: strerror(errno)))")) }
            if count == 0 { break }
            received += buffer[0..<count]
        }
        guard let response = parse(received, method: method, atEnd: true) else {
            return .failure(ConnectFailure(message: received.isEmpty ? "the server closed the connection without an answer" : "malformed HTTP response"))
        }
        return .success(response)
    }

    private static func timedOut(_ milliseconds: Int) -> String { "request timed out after \(milliseconds) ms" }

    /// A complete response from the bytes so far, or nil if more are needed (`atEnd`: the peer closed).
    static func parse(_ bytes: [UInt8], method: String, atEnd: Bool) -> HTTPResponse? {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let headerEnd = firstIndex(of: separator, in: bytes, from: 0) else { return nil }
        let head = String(decoding: bytes[0..<headerEnd], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        guard !lines.isEmpty else { return nil }
        let statusLine = lines.removeFirst().split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard statusLine.count >= 2, statusLine[0].hasPrefix("HTTP/1."), let status = Int(statusLine[1]),
            (100...599).contains(status)
        else { return nil }
        let reason = statusLine.count > 2 ? String(statusLine[2]) : ""
        var headers: [(String, String)] = []
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.append((line[..<colon].lowercased(), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        let bodyStart = headerEnd + 4
        let rest = Array(bytes[bodyStart...])
        var response = HTTPResponse(status: status, reason: reason, headers: headers, body: [])
        if method == "HEAD" || status == 204 || status == 304 || (100..<200).contains(status) { return response }
        if response.header("transfer-encoding")?.lowercased().contains("chunked") == true {
            guard let body = dechunk(rest) else { return atEnd ? response : nil }
            response.body = body
            return response
        }
        if let lengthText = response.header("content-length") {
            // A length that is not a plain non-negative number makes the response unreadable, not a short body.
            guard let length = Int(lengthText), length >= 0, lengthText.allSatisfy(\.isASCII) else { return nil }
            guard rest.count >= length else { return nil }
            response.body = Array(rest[0..<length])
            return response
        }
        guard atEnd else { return nil }
        response.body = rest
        return response
    }

    /// The body of a complete chunked encoding, or nil while it is incomplete.
    private static func dechunk(_ bytes: [UInt8]) -> [UInt8]? {
        var body: [UInt8] = []
        var index = 0
        while true {
            guard let lineEnd = firstIndex(of: [13, 10], in: bytes, from: index) else { return nil }
            let sizeText = String(decoding: bytes[index..<lineEnd], as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16), size >= 0 else { return nil }
            index = lineEnd + 2
            if size == 0 { return body }
            guard bytes.count >= index + size + 2 else { return nil }
            body += bytes[index..<(index + size)]
            index += size + 2
        }
    }

    private static func firstIndex(of pattern: [UInt8], in bytes: [UInt8], from start: Int) -> Int? {
        guard bytes.count >= pattern.count, start <= bytes.count - pattern.count else { return nil }
        var index = start
        while index <= bytes.count - pattern.count {
            if bytes[index] == pattern[0] && Array(bytes[index..<(index + pattern.count)]) == pattern { return index }
            index += 1
        }
        return nil
    }
}

