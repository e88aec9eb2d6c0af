import CorralJSON
import Logging
import MCPCore
import Metrics
import NIOCore
import NIOHTTP1

/// Serves 2026-07-28 POSTs straight from a connection's channel pipeline, in front of Hummingbird's request
/// handling: those that name a 2026-07-28 version in `MCP-Protocol-Version`, which never touch a session. Everything
/// else (legacy sessions, GET, DELETE, a modern request without the header) is passed on to Hummingbird.
///
/// Why: a modern `server/discover` cost the server ~170 µs of CPU over HTTP against ~20 µs over stdio, and a
/// `get_background_task` 254 against 84 µs. Under callgrind, most of the difference was the path from the socket to
/// a router handler and back: `NIOAsyncChannel`'s inbound stream and outbound writer, the conversion of every head
/// to HTTPTypes, per-request `Request`/`Response` values and a logger with the request's id, a task and a timer
/// per answer. Here a request's parts are read, checked and answered by NIO handler calls on the event loop; only
/// the application's own work (`MCPHTTPEndpoint.exchange`) runs in a task, on the same loop.
///
/// Same rules and same answers as `MCPHTTPServer.post`: `Origin`, bearer token and `Accept` (`admitPost`), the body
/// limit, `HTTPRules.classifyPost`; an answer that comes within the JSON window is one JSON body, a later one or one
/// preceded by a notification is an SSE stream with keep-alive comments; a client that goes away cancels its request.
///
/// Answers leave in the order their requests came: a request is taken here only while Hummingbird owes no answer on
/// the connection, and what arrives while one taken here is being answered waits until it has been (past a few
/// parts waiting, the socket is not read meanwhile).
package final class ModernPostHandler: ChannelDuplexHandler, RemovableChannelHandler {
    package typealias InboundIn = HTTPServerRequestPart
    package typealias InboundOut = HTTPServerRequestPart
    package typealias OutboundIn = HTTPServerResponsePart
    package typealias OutboundOut = HTTPServerResponsePart

    private struct Collecting {
        let head: HTTPRequestHead
        let headers: HTTPHeaderView
        /// What the checks before the body said: who sent it, or the reply that refuses it.
        let admission: MCPHTTPServer.Admission
        var body: ByteBuffer
        var tooLarge = false
    }

    /// A request taken here whose answer is awaited or being streamed.
    private final class Answering {
        let serial: Int
        let head: HTTPRequestHead
        let label: String
        var task: Task<Void, Never>?
        var window: Scheduled<Void>?
        var keepAlive: RepeatedTask?
        var streaming = false

        init(serial: Int, head: HTTPRequestHead, label: String) {
            self.serial = serial
            self.head = head
            self.label = label
        }

        func stopTimers() {
            window?.cancel()
            keepAlive?.cancel()
        }
    }

    private enum State {
        case idle
        case collecting(Collecting)
        case answering(Answering)
    }

    private enum Held {
        case part(HTTPServerRequestPart)
        case event(Any)
    }

    private let server: MCPHTTPServer
    /// Where the application's work runs: the server's event loop (a test's or fuzzer's embedded loop).
    private let executor: any TaskExecutor
    private var context: ChannelHandlerContext?
    private var state = State.idle
    /// Requests passed on to Hummingbird whose answers have not ended yet.
    private var passedOn = 0
    private var held: [Held] = []
    private var readWithheld = false
    private var partsPassedOn = 0
    private var serial = 0

    /// `executor`: where `exchange` runs; by default the server's event loop, which serves the connections too.
    package init(server: MCPHTTPServer, executor: (any TaskExecutor)? = nil) {
        self.server = server
        self.executor = executor ?? server.executor
    }

    package func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        if case .answering(let answering) = state { abandon(answering) }
        self.context = nil
    }

    // MARK: - inbound

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        take(unwrapInboundIn(data), context: context)
    }

    private func take(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch state {
        case .answering:
            held.append(.part(part))
        case .collecting(var collecting):
            switch part {
            case .body(var buffer):
                if case .admitted = collecting.admission, !collecting.tooLarge {
                    if collecting.body.readableBytes + buffer.readableBytes > server.configuration.maximumBodyBytes {
                        collecting.tooLarge = true
                        collecting.body.clear()
                    } else {
                        collecting.body.writeBuffer(&buffer)
                    }
                }
                state = .collecting(collecting)
            case .end:
                state = .idle
                serve(collecting, context: context)
            case .head:
                // The decoder ends a request before it begins another; nothing to do with a second head.
                break
            }
        case .idle:
            if case .head(let head) = part {
                if passedOn == 0, let headers = Self.modernPost(head) {
                    server.sessions.reapIdleInBackground()
                    state = .collecting(
                        Collecting(
                            head: head, headers: headers, admission: server.admitPost(headers),
                            body: context.channel.allocator.buffer(capacity: 0)))
                    return
                }
                passedOn += 1
            }
            partsPassedOn &+= 1
            context.fireChannelRead(wrapInboundOut(part))
        }
    }

    /// The headers of a POST to `/mcp` that names a 2026-07-28 (or any non-legacy) version; nil for any other.
    private static func modernPost(_ head: HTTPRequestHead) -> HTTPHeaderView? {
        guard head.method == .POST, head.uri == "/mcp" || head.uri.hasPrefix("/mcp?") else { return nil }
        guard let version = head.headers.first(name: MCPHeader.protocolVersion),
            !ProtocolVersions.legacy.contains(version)
        else { return nil }
        return HTTPHeaderView(head.headers.map { (name: $0.name, value: $0.value) })
    }

    package func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch state {
        case .idle:
            context.fireUserInboundEventTriggered(event)
        case .collecting where event as? ChannelEvent == .inputClosed:
            // The request will never end: Hummingbird closes the connection.
            state = .idle
            context.fireUserInboundEventTriggered(event)
        case .collecting, .answering:
            // An end of input or a request to quiesce would make Hummingbird close the connection under an answer.
            held.append(.event(event))
        }
    }

    package func channelInactive(context: ChannelHandlerContext) {
        if case .answering(let answering) = state { clientWentAway(answering) }
        context.fireChannelInactive()
    }

    // MARK: - outbound

    package func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data), passedOn > 0 { passedOn -= 1 }
        context.write(data, promise: promise)
    }

    /// The socket is read on while an answer is awaited (withholding every read took two `epoll_ctl` calls per
    /// request), until a client that sends request after request without waiting has `heldLimit` parts waiting.
    package func read(context: ChannelHandlerContext) {
        if case .answering = state, held.count >= Self.heldLimit {
            readWithheld = true
        } else {
            context.read()
        }
    }

    private static let heldLimit = 16

    // MARK: - answering

    private func serve(_ request: Collecting, context: ChannelHandlerContext) {
        let principal: String?
        switch request.admission {
        case .refused(let reply): return finish(request.head, with: reply, context: context)
        case .admitted(let who): principal = who
        }
        if request.tooLarge { return finish(request.head, with: server.bodyTooLarge, context: context) }
        let body = Array(request.body.readableBytesView)
        let route = HTTPRules.classifyPost(
            headers: request.headers, body: body, allowedOrigins: server.configuration.allowedOrigins)
        guard case .modern(let id, let method, let params, let envelope) = route else {
            return finish(request.head, with: PlainReply(route), context: context)
        }
        let exchange = ModernHTTPRequest(
            id: id, method: method, params: params, envelope: envelope, headers: request.headers, body: body,
            principal: principal)
        if let immediate = server.endpoint.immediateAnswer(exchange) {
            return finish(request.head, with: PlainReply(status: immediate.status, json: immediate.text), context: context)
        }
        serial += 1
        let answering = Answering(serial: serial, head: request.head, label: "\(method) \(id.jsonString())")
        state = .answering(answering)
        let loop = context.eventLoop
        let this = NIOLoopBound(self, eventLoop: loop)
        let serial = self.serial
        let endpoint = server.endpoint
        answering.window = loop.scheduleTask(in: .nanoseconds(Self.nanoseconds(server.configuration.jsonWindow))) {
            this.value.openStream(serial)
        }
        // Both hops go through the loop's queue, so that a notification is never overtaken by the answer.
        answering.task = Task(executorPreference: executor) {
            let answer = await endpoint.exchange(exchange) { message in
                loop.execute { this.value.send(message, serial) }
            }
            loop.execute { this.value.answered(answer, serial) }
        }
    }

    private func current(_ serial: Int) -> (Answering, ChannelHandlerContext)? {
        guard case .answering(let answering) = state, answering.serial == serial, let context else { return nil }
        return (answering, context)
    }

    private func answered(_ answer: (text: String, status: Int), _ serial: Int) {
        guard let (answering, context) = current(serial) else { return }
        answering.stopTimers()
        if answering.streaming {
            writeEvent(answer.text, serial, context: context)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            Self.streamClosed()
            requestEnded(keepAlive: Self.streamKeepsConnection(answering.head), context: context)
        } else {
            finish(answering.head, with: PlainReply(status: answer.status, json: answer.text), context: context)
        }
    }

    private func send(_ message: JSONValue, _ serial: Int) {
        guard let (answering, context) = current(serial) else { return }
        if !answering.streaming { openStream(serial) }
        writeEvent(message.jsonString(), serial, context: context)
    }

    /// The answer did not come within the JSON window, or a notification came first: the rest goes as SSE.
    private func openStream(_ serial: Int) {
        guard let (answering, context) = current(serial), !answering.streaming else { return }
        answering.streaming = true
        Self.streamOpened()
        var headers = responseHeaders(
            keepAlive: Self.streamKeepsConnection(answering.head), version: answering.head.version)
        headers.add(name: "Content-Type", value: "text/event-stream")
        headers.add(name: "Cache-Control", value: "no-cache, no-transform")
        let head = HTTPResponseHead(version: answering.head.version, status: .ok, headers: headers)
        context.writeAndFlush(wrapOutboundOut(.head(head)), promise: nil)
        let interval = TimeAmount.nanoseconds(Self.nanoseconds(server.configuration.keepAliveInterval))
        let this = NIOLoopBound(self, eventLoop: context.eventLoop)
        answering.keepAlive = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            this.value.writeKeepAlive(serial)
        }
    }

    private func writeKeepAlive(_ serial: Int) {
        guard let (_, context) = current(serial) else { return }
        write(": keep-alive\n\n", serial, context: context)
    }

    private func writeEvent(_ text: String, _ serial: Int, context: ChannelHandlerContext) {
        write("event: message\ndata: \(text)\n\n", serial, context: context)
    }

    /// A failed write is how a closed stream is noticed (the end of the client's input may only mean it sent all).
    private func write(_ text: String, _ serial: Int, context: ChannelHandlerContext) {
        let promise = context.eventLoop.makePromise(of: Void.self)
        let this = NIOLoopBound(self, eventLoop: context.eventLoop)
        promise.futureResult.whenFailure { _ in
            guard let (answering, _) = this.value.current(serial) else { return }
            this.value.clientWentAway(answering)
        }
        let buffer = context.channel.allocator.buffer(string: text)
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: promise)
    }

    private func clientWentAway(_ answering: Answering) {
        server.logger.info("cancelled \(answering.label): the client closed its stream")
        abandon(answering)
        context?.close(promise: nil)
    }

    private func abandon(_ answering: Answering) {
        answering.stopTimers()
        answering.task?.cancel()
        if answering.streaming { Self.streamClosed() }
        state = .idle
        held.removeAll()
    }

    /// One complete response: the head with its length, the body, the end.
    private func finish(_ request: HTTPRequestHead, with reply: PlainReply, context: ChannelHandlerContext) {
        var headers = responseHeaders(keepAlive: request.isKeepAlive, version: request.version)
        let body = reply.json.map { context.channel.allocator.buffer(string: $0) }
        if body != nil { headers.add(name: "Content-Type", value: "application/json") }
        for header in reply.headers { headers.add(name: header.name, value: header.value) }
        headers.add(name: "Content-Length", value: String(body?.readableBytes ?? 0))
        let head = HTTPResponseHead(
            version: request.version, status: HTTPResponseStatus(statusCode: reply.status), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if let body { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        requestEnded(keepAlive: request.isKeepAlive, context: context)
    }

    /// A stream has no length: HTTP/1.1 frames it in chunks, HTTP/1.0 only by closing the connection after it (the
    /// fuzzer found an HTTP/1.0 keep-alive stream that never ended for the client).
    private static func streamKeepsConnection(_ request: HTTPRequestHead) -> Bool {
        request.isKeepAlive && (request.version.major, request.version.minor) >= (1, 1)
    }

    private func responseHeaders(keepAlive: Bool, version: HTTPVersion) -> HTTPHeaders {
        var headers = HTTPHeaders()
        headers.reserveCapacity(6)
        headers.add(name: "Date", value: HTTPDate.now())
        headers.add(name: "Server", value: server.configuration.serverName)
        if !keepAlive {
            headers.add(name: "Connection", value: "close")
        } else if version.minor == 0 {
            headers.add(name: "Connection", value: "keep-alive")
        }
        return headers
    }

    /// The answer is out: the connection closes if the client asked it to, and what waited is taken in order.
    private func requestEnded(keepAlive: Bool, context: ChannelHandlerContext) {
        state = .idle
        guard keepAlive else {
            held.removeAll()
            context.close(promise: nil)
            return
        }
        let passedBefore = partsPassedOn
        while !held.isEmpty {
            if case .answering = state { break }
            switch held.removeFirst() {
            case .part(let part): take(part, context: context)
            case .event(let event): context.fireUserInboundEventTriggered(event)
            }
        }
        // Hummingbird's channel hands reads on when a read completes.
        if partsPassedOn != passedBefore { context.fireChannelReadComplete() }
        if readWithheld {
            if case .answering = state { return }
            readWithheld = false
            context.read()
        }
    }

    // MARK: - helpers

    private static let openStreamsGauge = Gauge(label: "corral_http_open_streams")

    private static func streamOpened() {
        openStreamsGauge.record(MCPHTTPServer.openStreams.add(1, ordering: .relaxed).newValue)
    }

    private static func streamClosed() {
        openStreamsGauge.record(MCPHTTPServer.openStreams.subtract(1, ordering: .relaxed).newValue)
    }

    private static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds.multipliedReportingOverflow(by: 1_000_000_000).overflow
            ? Int64.max : seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
