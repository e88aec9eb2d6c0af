import CorralJSON
import Logging
import MCPCore
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
///
/// A connection that owes the client nothing must deliver its next request whole within `requestTimeout` (from the
/// end of the last answer, or from its opening), or it is closed: a client that opens connections and sends their
/// requests a byte at a time, or not at all, would otherwise hold a descriptor each for as long as it likes, until the
/// server has none left to accept with. A request being answered, a stream included, is never cut. This handler
/// keeps the time because it is the one that sees every request of the connection, both paths'.
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
        let method: String
        let id: JSONValue
        var task: Task<Void, Never>?
        var window: Scheduled<Void>?
        var keepAlive: RepeatedTask?
        var streaming = false
        /// Counted in `corral_http_open_streams` (uncounted once, by whichever path ends the stream first).
        var streamCounted = false
        var lastWrite = NIODeadline.now()

        init(serial: Int, head: HTTPRequestHead, method: String, id: JSONValue) {
            self.serial = serial
            self.head = head
            self.method = method
            self.id = id
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
        case error(any Error)
    }

    private let server: MCPHTTPServer
    /// Where the application's work runs: the server's event loop (a test's or fuzzer's embedded loop).
    private let executor: any TaskExecutor
    private var context: ChannelHandlerContext?
    private var state = State.idle
    /// Requests passed on to Hummingbird whose answers have not ended yet, oldest first: whether each keeps the
    /// connection open, and whether it is HTTP/1.0.
    private var passedOn: [(keepAlive: Bool, http10: Bool)] = []
    private var held: [Held] = []
    private var readWithheld = false
    private var partsPassedOn = 0
    private var serial = 0
    /// The connection is ending (a `Connection: close` answered, by either path; its output or itself closed):
    /// nothing more is taken or passed on.
    private var closing = false
    /// `requestEnded` is taking what waited: a request it serves at once ends inside it, and the loop goes on.
    private var replaying = false
    /// A request passed on to Hummingbird whose end has not arrived yet.
    private var passedOnRequestIncomplete = false
    /// When the request the connection waits for must have arrived whole; nil while it waits for none
    /// (`updateRequestTimer`).
    private var requestDeadline: NIODeadline?
    /// Armed for `requestDeadline` or an earlier one (it re-arms itself when it fires early).
    private var requestTimer: Scheduled<Void>?

    /// `executor`: where `exchange` runs; by default the server's event loop, which serves the connections too.
    package init(server: MCPHTTPServer, executor: (any TaskExecutor)? = nil) {
        self.server = server
        self.executor = executor ?? server.executor
    }

    package func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        updateRequestTimer(context: context)
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        if case .answering(let answering) = state { abandon(answering) }
        requestTimer?.cancel()
        requestTimer = nil
        requestDeadline = nil
        self.context = nil
    }

    package func channelActive(context: ChannelHandlerContext) {
        updateRequestTimer(context: context)
        context.fireChannelActive()
    }

    // MARK: - inbound

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        take(unwrapInboundIn(data), context: context)
        updateRequestTimer(context: context)
    }

    private func take(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        guard !closing else { return }
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
                if passedOn.isEmpty, let headers = Self.modernPost(head) {
                    server.sessions.reapIdleInBackground()
                    state = .collecting(
                        Collecting(
                            head: head, headers: headers, admission: server.admitPost(headers),
                            body: context.channel.allocator.buffer(capacity: 0)))
                    return
                }
                passedOn.append((head.isKeepAlive, head.version == .http1_0))
                passedOnRequestIncomplete = true
            }
            if case .end = part { passedOnRequestIncomplete = false }
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
        if event as? ChannelEvent == .outputClosed { closing = true }
        deliver(.event(event), context: context)
    }

    /// A decoder error (a malformed request behind the one being answered) would make Hummingbird answer 400 and
    /// close its side under the answer: it waits its turn too.
    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        deliver(.error(error), context: context)
    }

    /// An event or error goes on now when nothing is under way here. While a request's body is arriving, the end of
    /// input or an error means it will never end: it is dropped and the event goes on (Hummingbird closes). While
    /// an answer is awaited, it waits behind it.
    private func deliver(_ item: Held, context: ChannelHandlerContext) {
        if case .part(let part) = item { return take(part, context: context) }
        switch state {
        case .idle:
            pass(item, context: context)
        case .collecting where Self.endsTheRequest(item):
            state = .idle
            pass(item, context: context)
        case .collecting, .answering:
            held.append(item)
        }
    }

    /// An error, or the end of input: a request whose body is still arriving will never end.
    private static func endsTheRequest(_ item: Held) -> Bool {
        switch item {
        case .error: true
        case .event(let event): event as? ChannelEvent == .inputClosed
        case .part: false
        }
    }

    private func pass(_ item: Held, context: ChannelHandlerContext) {
        switch item {
        case .part(let part): take(part, context: context)
        case .event(let event): context.fireUserInboundEventTriggered(event)
        case .error(let error): context.fireErrorCaught(error)
        }
    }

    package func channelInactive(context: ChannelHandlerContext) {
        closing = true
        if case .answering(let answering) = state { clientWentAway(answering) }
        held.removeAll()
        updateRequestTimer(context: context)
        context.fireChannelInactive()
    }

    // MARK: - the time a request has to arrive

    /// Whether the connection owes the client nothing and waits for a request, or for the rest of one.
    private var awaitingRequest: Bool {
        switch state {
        case .collecting: true
        case .answering: false
        case .idle: passedOn.isEmpty || passedOnRequestIncomplete
        }
    }

    /// Starts the time when the connection begins to wait for a request, and stops it once one has arrived whole.
    /// Parts that trickle in do not restart it: the time runs from the start of the wait.
    ///
    /// The timer is not cancelled and re-armed per request (two heap allocations and a reordering of the loop's
    /// timer heap each, ~5 % of the server's CPU for a small request): one stays armed, and when it fires for a
    /// deadline that has since moved on, or while no request is awaited, it is re-armed for the deadline or left off.
    private func updateRequestTimer(context: ChannelHandlerContext) {
        let waits = awaitingRequest && !closing && context.channel.isActive
        guard waits != (requestDeadline != nil) else { return }
        guard waits else {
            requestDeadline = nil
            return
        }
        let deadline = context.eventLoop.now + TimeAmount(server.configuration.requestTimeout)
        requestDeadline = deadline
        if requestTimer == nil { armRequestTimer(for: deadline, context: context) }
    }

    private func armRequestTimer(for deadline: NIODeadline, context: ChannelHandlerContext) {
        let this = NIOLoopBound(self, eventLoop: context.eventLoop)
        requestTimer = context.eventLoop.scheduleTask(deadline: deadline) { this.value.requestTimerFired() }
    }

    /// An answer has ended: the time for the next request starts now.
    private func restartRequestTimer(context: ChannelHandlerContext) {
        requestDeadline = nil
        updateRequestTimer(context: context)
    }

    private func requestTimerFired() {
        requestTimer = nil
        guard let context, let deadline = requestDeadline, awaitingRequest, !closing else { return }
        guard context.eventLoop.now >= deadline else { return armRequestTimer(for: deadline, context: context) }
        server.logger.debug("closing a connection whose request did not arrive whole in time")
        MCPHTTPServer.requestTimeouts.increment()
        closing = true
        state = .idle
        held.removeAll()
        requestDeadline = nil
        context.close(promise: nil)
    }

    // MARK: - outbound

    package func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard let request = passedOn.first else { return context.write(data, promise: promise) }
        switch unwrapOutboundIn(data) {
        case .head(var head) where request.http10:
            // Hummingbird answers in HTTP/1.1 whatever was asked (its HTTP types carry no version), and frames a body
            // of unknown length in chunks, which an HTTP/1.0 client cannot read. Answered as 1.0: a length kept if
            // known, else the body runs to the connection's end (the encoder adds no framing to a 1.0 head).
            head.version = .http1_0
            head.headers.remove(name: "transfer-encoding")
            let keepsOpen = request.keepAlive && head.headers.contains(name: "content-length")
            head.headers.replaceOrAdd(name: "connection", value: keepsOpen ? "keep-alive" : "close")
            if !keepsOpen { passedOn[0].keepAlive = false }
            context.write(wrapOutboundOut(.head(head)), promise: promise)
        case .end:
            passedOn.removeFirst()
            // The connection ends after an answer that does not keep it open (output first).
            if !request.keepAlive { closing = true }
            defer { restartRequestTimer(context: context) }
            guard request.http10, !request.keepAlive else { return context.write(data, promise: promise) }
            // Hummingbird closes after an HTTP/1.1 request that asked it to, but not after an HTTP/1.0 one: here.
            let written = promise ?? context.eventLoop.makePromise()
            context.write(data, promise: written)
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            written.futureResult.whenComplete { _ in bound.value.close(promise: nil) }
        default:
            context.write(data, promise: promise)
        }
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
            headers: request.headers, body: body, allowedOrigins: server.configuration.allowedOrigins,
            rejectsDuplicateKeys: server.configuration.rejectsDuplicateKeys)
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
        let answering = Answering(serial: serial, head: request.head, method: method, id: id)
        state = .answering(answering)
        let loop = context.eventLoop
        let this = NIOLoopBound(self, eventLoop: loop)
        let serial = self.serial
        let endpoint = server.endpoint
        answering.window = loop.scheduleTask(in: TimeAmount(server.configuration.jsonWindow)) {
            this.value.openStream(serial)
        }
        // Both hops go through the loop's queue, so that a notification is never overtaken by the answer.
        let exchanges = server.exchanges
        let key = exchanges.add(id: id) { text, status in loop.execute { this.value.answered((text, status), serial) } }
        answering.task = Task(executorPreference: executor) {
            let answer = await endpoint.exchange(exchange) { message in
                loop.execute { this.value.send(message, serial) }
            }
            exchanges.remove(key)
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
            // A write that failed at once has abandoned the request (and closed the connection).
            guard current(serial) != nil else { return }
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            Self.streamEnded(answering)
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
        answering.streamCounted = true
        MCPHTTPServer.streamsChanged(by: 1)
        var headers = responseHeaders(
            keepAlive: Self.streamKeepsConnection(answering.head), version: answering.head.version)
        headers.add(name: "Content-Type", value: "text/event-stream")
        headers.add(name: "Cache-Control", value: "no-cache, no-transform")
        let head = HTTPResponseHead(version: answering.head.version, status: .ok, headers: headers)
        context.writeAndFlush(wrapOutboundOut(.head(head)), promise: nil)
        // The write may have closed the connection at once (and abandoned the request): no timer for it then.
        guard current(serial) != nil else { return }
        answering.lastWrite = .now()
        let interval = TimeAmount(server.configuration.keepAliveInterval)
        let this = NIOLoopBound(self, eventLoop: context.eventLoop)
        answering.keepAlive = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            this.value.writeKeepAlive(serial, after: interval)
        }
    }

    /// A comment after `interval` of silence, as on Hummingbird's path.
    private func writeKeepAlive(_ serial: Int, after interval: TimeAmount) {
        guard let (answering, context) = current(serial), NIODeadline.now() - answering.lastWrite >= interval else {
            return
        }
        write(SSEText.keepAlive, serial, context: context)
    }

    private func writeEvent(_ text: String, _ serial: Int, context: ChannelHandlerContext) {
        write(SSEText.event(text), serial, context: context)
    }

    /// A failed write is how a closed stream is noticed (the end of the client's input may only mean it sent all).
    private func write(_ text: String, _ serial: Int, context: ChannelHandlerContext) {
        if let (answering, _) = current(serial) { answering.lastWrite = .now() }
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
        server.logger.info("cancelled \(answering.method) \(answering.id.jsonString()): the client closed its stream")
        abandon(answering)
        closing = true
        context?.close(promise: nil)
    }

    private func abandon(_ answering: Answering) {
        answering.stopTimers()
        answering.task?.cancel()
        Self.streamEnded(answering)
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

    /// The answer is out: the connection closes if the client asked it to, and what waited is taken in order (a
    /// loop, not a recursion: a waiting request answered at once ends inside it).
    private func requestEnded(keepAlive: Bool, context: ChannelHandlerContext) {
        state = .idle
        guard keepAlive else {
            closing = true
            held.removeAll()
            context.close(promise: nil)
            return
        }
        guard !replaying else { return }
        replaying = true
        defer { replaying = false }
        let passedBefore = partsPassedOn
        while !held.isEmpty, !closing, context.channel.isActive {
            if case .answering = state { break }
            // An event behind a request whose body is still arriving waits for that request's answer.
            if case .collecting = state, case .event = held[0], !Self.endsTheRequest(held[0]) { break }
            deliver(held.removeFirst(), context: context)
        }
        // Hummingbird's channel hands reads on when a read completes.
        if partsPassedOn != passedBefore { context.fireChannelReadComplete() }
        restartRequestTimer(context: context)
        if readWithheld, !closing {
            if case .answering = state { return }
            readWithheld = false
            context.read()
        }
    }

    // MARK: - helpers

    private static func streamEnded(_ answering: Answering) {
        guard answering.streamCounted else { return }
        answering.streamCounted = false
        MCPHTTPServer.streamsChanged(by: -1)
    }
}
