import ArgumentParser
import CorralJSON
import Foundation
import Glibc

/// A JSON-RPC request encoded before any clock starts: the message without its id, which each send puts first.
struct EncodedRequest {
    let method: String
    /// The message's text after its opening brace (`"jsonrpc":"2.0","method":…}`).
    private let rest: [UInt8]

    init(method: String, params: [String: Any]?) throws {
        var message: [String: Any] = ["jsonrpc": "2.0", "method": method]
        if let params { message["params"] = params }
        rest = Array(try JSONSerialization.data(withJSONObject: message).dropFirst())
        self.method = method
    }

    /// The request's line under `id`, newline included, written into `buffer` (reused between sends).
    func line(id: Int, into buffer: inout [UInt8]) {
        buffer.removeAll(keepingCapacity: true)
        buffer.append(contentsOf: #"{"id":"#.utf8)
        buffer.append(contentsOf: String(id).utf8)
        buffer.append(UInt8(ascii: ","))
        buffer.append(contentsOf: rest)
        buffer.append(0x0A)
    }
}

/// Newline-delimited JSON-RPC to a child process: enough for a benchmark, no MCP library in between.
///
/// A timed round trip runs from the request's write to the arrival of its answer's newline: the request is encoded
/// before the clock starts and the answer checked after it stops, so what is measured is the pipes and the server,
/// not this client's JSON work. (Timing the whole call had this client's encoding, copies and answer scan in every
/// figure: a tools/list answer then measured 527 µs where a C client measured 117 µs against the same server.)
final class RawClient {
    private let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private var answers = LineBuffer()
    private var outgoing: [UInt8] = []
    private var nextID = 1
    let modern: Bool
    let tasks: Bool
    /// When the newest answer's newline arrived.
    private(set) var lastArrival = ContinuousClock.now
    /// The newest answer's size in bytes, newline included.
    private(set) var lastAnswerBytes = 0
    /// Set by a caller that did the 2025-11-25 handshake, so that it is done once.
    var initialized = false

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

    /// A request with this client's era stamped on (2026-07-28: the `_meta` of every request).
    func encode(_ method: String, _ params: [String: Any]) throws -> EncodedRequest {
        try EncodedRequest(method: method, params: modern ? ModernMeta.stamp(params, tasks: tasks) : params)
    }

    func notify(_ method: String) {
        guard var data = try? JSONSerialization.data(withJSONObject: ["jsonrpc": "2.0", "method": method]) else { return }
        data.append(0x0A)
        _ = try? writeAll(Array(data))
    }

    func request(_ method: String, _ params: [String: Any]) throws -> [String: Any] {
        let line = try roundTrip(try encode(method, params)).line
        guard let message = try JSONSerialization.jsonObject(with: line) as? [String: Any] else {
            throw ValidationError("\(method): the answer is not an object")
        }
        if let error = message["error"] { throw ValidationError("\(method) failed: \(error)") }
        return message["result"] as? [String: Any] ?? [:]
    }

    func callTool(_ name: String, _ arguments: [String: Any]) throws -> [String: Any] {
        let result = try request("tools/call", ["name": name, "arguments": arguments])
        return result["structuredContent"] as? [String: Any] ?? [:]
    }

    /// A timed round trip whose answer is checked (its id, and that it is no error) but not decoded.
    @discardableResult
    func requestUnparsed(_ method: String, _ params: [String: Any]) throws -> Duration {
        try timed(try encode(method, params))
    }

    /// Sends `request`, waits for its answer and checks it after the clock stopped; returns the round trip.
    @discardableResult
    func timed(_ request: EncodedRequest) throws -> Duration {
        let (line, elapsed) = try roundTrip(request)
        guard let summary = JSONValue.summarizeMessage(line), !summary.hasError else {
            throw ValidationError("\(request.method) failed: \(String(decoding: line.prefix(300), as: UTF8.self))")
        }
        return elapsed
    }

    var pid: Int32 { process.processIdentifier }

    func close() {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
    }

    /// The answer to `request` (other lines, such as notifications, are skipped) and the time from the write to its
    /// arrival.
    private func roundTrip(_ request: EncodedRequest) throws -> (line: Data, elapsed: Duration) {
        let id = nextID
        nextID += 1
        request.line(id: id, into: &outgoing)
        let began = ContinuousClock.now
        try writeAll(outgoing)
        while true {
            let (line, arrived) = try answers.nextLine(from: output.fileHandleForReading.fileDescriptor)
            guard let summary = JSONValue.summarizeMessage(line) else {
                throw ValidationError("\(request.method): not one JSON-RPC message: \(String(decoding: line.prefix(300), as: UTF8.self))")
            }
            guard summary.id == .int(id), summary.method == nil else { continue }  // a notification, or another answer
            lastArrival = arrived
            lastAnswerBytes = line.count + 1
            return (line, arrived - began)
        }
    }

    private func writeAll(_ bytes: [UInt8]) throws {
        let fd = input.fileHandleForWriting.fileDescriptor
        try bytes.withUnsafeBytes { raw in
            guard let base = raw.baseAddress else { return }
            var sent = 0
            while sent < raw.count {
                let count = write(fd, base + sent, raw.count - sent)
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { throw ValidationError("the server's input is closed") }
                sent += count
            }
        }
    }
}

/// Lines read from a descriptor with large reads into one buffer: no copy per read, a `memchr` for the newline, and
/// the arrival time taken as soon as a line is whole.
struct LineBuffer {
    private var storage = [UInt8](repeating: 0, count: 1 << 18)
    private var start = 0
    private var end = 0

    mutating func nextLine(from fd: Int32) throws -> (Data, ContinuousClock.Instant) {
        var scanned = start
        while true {
            let newline = storage.withUnsafeBytes { raw -> Int? in
                guard let base = raw.baseAddress, end > scanned,
                    let found = memchr(base + scanned, 0x0A, end - scanned)
                else { return nil }
                return base.distance(to: UnsafeRawPointer(found))
            }
            if let newline {
                let arrived = ContinuousClock.now
                let line = Data(storage[start..<newline])
                start = newline + 1
                if start == end { (start, end) = (0, 0) }
                return (line, arrived)
            }
            scanned = end
            if end == storage.count { makeRoom(&scanned) }
            let count = storage.withUnsafeMutableBytes { raw -> Int in
                guard let base = raw.baseAddress else { return -1 }
                return read(fd, base + end, raw.count - end)
            }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { throw ValidationError("the server closed its output") }
            end += count
        }
    }

    /// Moves the unread bytes to the front, or doubles the buffer when they fill it.
    private mutating func makeRoom(_ scanned: inout Int) {
        if start > 0 {
            storage.withUnsafeMutableBytes { raw in
                guard let base = raw.baseAddress else { return }
                memmove(base, base + start, end - start)
            }
            (scanned, end, start) = (scanned - start, end - start, 0)
        } else {
            storage.append(contentsOf: repeatElement(0, count: storage.count))
        }
    }
}
