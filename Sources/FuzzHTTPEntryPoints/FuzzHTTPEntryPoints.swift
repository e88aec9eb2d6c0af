import CorralJSON
import Foundation
import FuzzEntryPoints
import Logging
import MCPCore
import MCPHTTP
import NIOCore
import NIOEmbedded
import NIOHTTP1

/// An HTTP connection as the fuzzer drives it: the bytes a client sends, cut into reads, through NIO's HTTP/1.1
/// decoder and `ModernPostHandler`, with a stand-in for Hummingbird behind it that answers whatever is passed on.
///
/// Everything runs on one embedded event loop, the application's work included (`exchange` runs on the loop, and a
/// request to the method `slow` waits until the harness lets it go, after the JSON window has passed), so that the
/// handler's states are reached in every order the input can make: requests passed on and taken, parts held and
/// replayed, SSE streams, bodies past the limit, closes.
///
/// Invariants: what the server writes is a sequence of whole HTTP/1.1 responses; there are no more of them than
/// requests, and as many as whole requests while the connection stays open; and the requests' answers leave in the
/// order the requests came (each answer names its request's number, given to the request's head as it leaves the
/// decoder). Errors and the end of input take Hummingbird's part's way (400 and close, after what is owed).
public enum FuzzHTTPEntryPoints {
    public typealias Violation = FuzzEntryPoints.Violation

    /// First byte: how the rest is cut into reads (0: one read; n: reads of n bytes). The rest: the client's bytes.
    /// Returns how many requests the decoder gave and how many responses went out.
    @discardableResult
    public static func connection(_ bytes: [UInt8]) throws(Violation) -> (requests: Int, responses: Int) {
        guard let cut = bytes.first else { return (0, 0) }
        let input = Array(bytes.dropFirst())
        let channel = EmbeddedChannel()
        let sequencer = Sequencer()
        do {
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                withPipeliningAssistance: false, withErrorHandling: false)
            try channel.pipeline.syncOperations.addHandler(sequencer)
            try channel.pipeline.syncOperations.addHandler(
                ModernPostHandler(server: server, executor: EventLoopTaskExecutor(channel.eventLoop)))
            try channel.pipeline.syncOperations.addHandler(StandIn())
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        } catch {
            throw Violation(description: "the pipeline did not set up: \(error)")
        }
        let step = cut == 0 ? max(input.count, 1) : Int(cut)
        var written: [UInt8] = []
        var offset = 0
        while offset < input.count, channel.isActive {
            let end = min(offset + step, input.count)
            do {
                try channel.writeInbound(ByteBuffer(bytes: input[offset..<end]))
            } catch {
                throw Violation(description: "an error reached the end of the pipeline: \(error)")
            }
            channel.read()
            offset = end
            // Every other read, the JSON window passes before the slow calls are let go.
            if (offset / step) % 2 == 1 { channel.embeddedEventLoop.advanceTime(by: .milliseconds(150)) }
            Slow.releaseAll()
            channel.embeddedEventLoop.run()
            written += drain(channel)
        }
        // An odd first byte: the client then ends its input (which the decoder checks for a request cut short).
        if cut % 2 == 1, channel.isActive {
            channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
        for _ in 0..<3 {
            channel.embeddedEventLoop.advanceTime(by: .seconds(1))
            Slow.releaseAll()
            channel.embeddedEventLoop.run()
        }
        // Every task ends before the channel does (a task left waiting would be a leak to the sanitizer).
        while !Slow.waiting.isEmpty {
            Slow.releaseAll()
            channel.embeddedEventLoop.run()
        }
        written += drain(channel)
        let closed = !channel.isActive
        _ = try? channel.finish()
        let responses = try check(written, requests: sequencer.count, closed: closed)
        // Nothing ended the connection: every request that came whole has had its answer.
        if !closed, responses != sequencer.ended {
            throw Violation(description: "\(responses) responses to \(sequencer.ended) whole requests, connection open")
        }
        return (sequencer.count, responses)
    }

    private static func drain(_ channel: EmbeddedChannel) -> [UInt8] {
        var bytes: [UInt8] = []
        while let data = try? channel.readOutbound(as: IOData.self) {
            if case .byteBuffer(let buffer) = data { bytes += buffer.readableBytesView }
        }
        return bytes
    }

    /// Whole responses, no more than the requests, their request numbers rising; returns how many.
    @discardableResult
    public static func check(_ written: [UInt8], requests: Int, closed: Bool = true) throws(Violation) -> Int {
        var reader = ResponseReader(bytes: written, closed: closed)
        var count = 0
        var lastNumber = -1
        while !reader.atEnd {
            let body = try reader.next()
            count += 1
            if let number = requestNumber(in: body) {
                guard number > lastNumber else {
                    throw Violation(description: "the answer to request \(number) came after the one to \(lastNumber)")
                }
                lastNumber = number
            }
        }
        guard count <= requests else { throw Violation(description: "\(count) responses to \(requests) requests") }
        return count
    }

    private static func requestNumber(in body: [UInt8]) -> Int? {
        guard var index = firstIndex(of: Array(#""request":"#.utf8), in: body) else { return nil }
        var value = 0
        var digits = 0
        while index < body.count, (48...57).contains(body[index]) {
            value = value * 10 + Int(body[index] - 48)
            index += 1
            digits += 1
        }
        return digits > 0 ? value : nil
    }

    /// The index just past the first occurrence of `marker` in `bytes`.
    static func firstIndex(of marker: [UInt8], in bytes: [UInt8]) -> Int? {
        guard bytes.count >= marker.count else { return nil }
        for start in 0...(bytes.count - marker.count) where bytes[start..<start + marker.count].elementsEqual(marker) {
            return start + marker.count
        }
        return nil
    }

    private static let server: MCPHTTPServer = {
        var logger = Logger(label: "fuzz-http-connection")
        logger.logLevel = .critical
        return MCPHTTPServer(
            configuration: .init(
                host: "127.0.0.1", port: 0, serverName: "fuzz", maximumBodyBytes: 2048,
                jsonWindow: .milliseconds(100), keepAliveInterval: .seconds(1)),
            endpoint: Endpoint(), logger: logger)
    }()
}

/// Numbers each request as it leaves the decoder, in a header the answers repeat.
private final class Sequencer: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    var count = 0
    var ended = 0

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .end = unwrapInboundIn(data) { ended += 1 }
        guard case .head(var head) = unwrapInboundIn(data) else { return context.fireChannelRead(data) }
        head.headers.replaceOrAdd(name: "X-Fuzz-Request", value: String(count))
        count += 1
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }
}

/// Hummingbird's part, as far as ordering goes: each request passed on is answered once it has ended, in order, on
/// the loop's next turn (so that later requests arrive while the answer is owed); a decoder error is answered 400
/// and ends the connection, after what is owed; so does the end of input.
private final class StandIn: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    private var current: HTTPRequestHead?
    private var owed: [HTTPRequestHead] = []
    private var ending = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            current = head
        case .body:
            break
        case .end:
            guard let head = current else { return }
            current = nil
            owed.append(head)
            let this = NIOLoopBound(self, eventLoop: context.eventLoop)
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.eventLoop.execute { this.value.answerOwed(context: bound.value) }
        }
    }

    private func answerOwed(context: ChannelHandlerContext) {
        while !owed.isEmpty, context.channel.isActive {
            let head = owed.removeFirst()
            let keepAlive = head.isKeepAlive && !ending
            respond(context, version: head.version, status: .ok, keepAlive: keepAlive,
                    body: #"{"request":\#(head.headers.first(name: "X-Fuzz-Request") ?? "?")}"#)
            if !keepAlive { return context.close(promise: nil) }
        }
        if ending, context.channel.isActive { context.close(promise: nil) }
    }

    private func respond(
        _ context: ChannelHandlerContext, version: HTTPVersion, status: HTTPResponseStatus, keepAlive: Bool, body: String
    ) {
        let buffer = ByteBuffer(string: body)
        var headers = HTTPHeaders([("Content-Length", String(buffer.readableBytes))])
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard !ending else { return }
        ending = true
        current = nil
        answerOwed(context: context)
        guard context.channel.isActive else { return }
        respond(context, version: .http1_1, status: .badRequest, keepAlive: false, body: #"{"error":"bad request"}"#)
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event as? ChannelEvent == .inputClosed, !ending else { return }
        ending = true
        let this = NIOLoopBound(self, eventLoop: context.eventLoop)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.eventLoop.execute { this.value.answerOwed(context: bound.value) }
    }
}

/// Answers `server/discover` at once, `notify` after a notification, `slow` when the harness lets it go, and
/// anything else from its task; every answer names the request's number.
private struct Endpoint: MCPHTTPEndpoint {
    func exchange(_ request: ModernHTTPRequest, notify: @escaping @Sendable (JSONValue) async -> Void) async
        -> (text: String, status: Int)
    {
        switch request.method {
        case "notify": await notify(JSONRPC.notification("notifications/progress", ["progress": 1]))
        case "slow": await Slow.wait()
        default: break
        }
        return (answer(request), 200)
    }

    func immediateAnswer(_ request: ModernHTTPRequest) -> (text: String, status: Int)? {
        request.method == "server/discover" ? (answer(request), 200) : nil
    }

    func openLegacySession(id: String, principal: String?, outlet: LegacyOutlet) async throws(JSONRPCError)
        -> any LegacySession
    {
        throw JSONRPCError(code: -32601, message: "no sessions here")
    }

    private func answer(_ request: ModernHTTPRequest) -> String {
        let number = request.headers["X-Fuzz-Request"].flatMap { Int($0) } ?? -1
        return JSONRPC.response(id: request.id, result: ["request": .int(number)]).jsonString()
    }
}

/// The `slow` calls waiting to be let go. Only the fuzzing thread touches it (the embedded loop runs there).
private enum Slow {
    nonisolated(unsafe) static var waiting: [CheckedContinuation<Void, Never>] = []

    static func wait() async {
        await withCheckedContinuation { waiting.append($0) }
    }

    static func releaseAll() {
        let released = waiting
        waiting.removeAll()
        for continuation in released { continuation.resume() }
    }
}

/// Reads HTTP/1.1 responses off the bytes a server wrote: status line, headers, and a body framed by
/// `Content-Length` or chunked. Not the watchers' reader (`HTTPResponseReading`): that one is lenient on purpose,
/// reads one response, and skips what it cannot read; a checker of our own output must read them in a row and
/// reject anything malformed.
private struct ResponseReader {
    let bytes: [UInt8]
    /// Whether the server closed the connection (what ends a response without a length or chunks).
    let closed: Bool
    var offset = 0

    var atEnd: Bool { offset >= bytes.count }

    mutating func next() throws(FuzzEntryPoints.Violation) -> [UInt8] {
        let status = try line()
        guard status.hasPrefix("HTTP/1.1 ") || status.hasPrefix("HTTP/1.0 "), status.count >= 12,
            let code = Int(status.dropFirst(9).prefix(3)), (100...599).contains(code)
        else { throw FuzzEntryPoints.Violation(description: "a status line \(status)") }
        var length: Int?
        var chunked = false
        while true {
            let header = try line()
            if header.isEmpty { break }
            guard let colon = header.firstIndex(of: ":") else {
                throw FuzzEntryPoints.Violation(description: "a header line \(header)")
            }
            let name = header[..<colon].lowercased()
            let value = header[header.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            if name == "content-length" {
                guard length == nil, let parsed = Int(value), parsed >= 0 else {
                    throw FuzzEntryPoints.Violation(description: "Content-Length \(value)")
                }
                length = parsed
            }
            if name == "transfer-encoding" { chunked = value.lowercased() == "chunked" }
        }
        if let length {
            guard !chunked else { throw FuzzEntryPoints.Violation(description: "both a length and chunks") }
            return try take(length)
        }
        guard chunked else {
            // Framed by the end of the connection: HTTP/1.0, closed after it, and no response after it.
            guard status.hasPrefix("HTTP/1.0 "), closed else {
                throw FuzzEntryPoints.Violation(description: "a response without framing: \(status)")
            }
            let rest = Array(bytes[offset...])
            offset = bytes.count
            if FuzzHTTPEntryPoints.firstIndex(of: Array("HTTP/1.".utf8), in: rest) != nil {
                throw FuzzEntryPoints.Violation(description: "a response after one framed by closing the connection")
            }
            return rest
        }
        var body: [UInt8] = []
        while true {
            let size = try line()
            guard let count = Int(size, radix: 16), count >= 0 else {
                throw FuzzEntryPoints.Violation(description: "a chunk size \(size)")
            }
            if count == 0 {
                guard try line().isEmpty else { throw FuzzEntryPoints.Violation(description: "trailers after chunks") }
                return body
            }
            body += try take(count)
            guard try line().isEmpty else { throw FuzzEntryPoints.Violation(description: "a chunk longer than said") }
        }
    }

    private mutating func line() throws(FuzzEntryPoints.Violation) -> String {
        var index = offset
        while index + 1 < bytes.count, !(bytes[index] == 13 && bytes[index + 1] == 10) { index += 1 }
        guard index + 1 < bytes.count else { throw FuzzEntryPoints.Violation(description: "a response cut short") }
        let text = String(decoding: bytes[offset..<index], as: UTF8.self)
        offset = index + 2
        return text
    }

    private mutating func take(_ count: Int) throws(FuzzEntryPoints.Violation) -> [UInt8] {
        guard offset + count <= bytes.count else { throw FuzzEntryPoints.Violation(description: "a body cut short") }
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }
}
