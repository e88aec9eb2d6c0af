import CorralJSON
import HummingbirdCore
import Logging
import MCPCore
import NIOCore
import NIOEmbedded
import NIOHTTP1
import FuzzHTTPEntryPoints
import Foundation
import XCTest

@testable import MCPHTTP

/// `ModernPostHandler` on an `EmbeddedChannel`: which requests it answers itself, which it passes on to Hummingbird,
/// and that an answer owed by Hummingbird holds back the next request instead of being overtaken.
final class ModernPostHandlerTests: XCTestCase {
    private var server: MCPHTTPServer!

    override func setUp() {
        let core = MCPServerCore(description: ServerDescription(name: "handler-test", version: "1")) {
            method, _, _ throws(JSONRPCError) in throw .methodNotFound(method, "nothing here")
        }
        server = MCPHTTPServer(
            configuration: .init(host: "127.0.0.1", port: 0, serverName: "handler-test", maximumBodyBytes: 4096),
            endpoint: CoreHTTPEndpoint(core: core), logger: Logger(label: "handler-test"))
    }

    override func tearDown() async throws {
        try await server.eventLoops.shutdownGracefully()
    }

    /// An embedded channel with the handler, active as an accepted connection is.
    private func connectedChannel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(handler: ModernPostHandler(server: server))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    private static let meta: JSONValue = [
        "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": [:],
        "io.modelcontextprotocol/clientInfo": ["name": "test", "version": "1"],
    ]

    private func send(
        _ channel: EmbeddedChannel, _ message: JSONValue, headers: [(String, String)], body: String? = nil
    ) throws {
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/mcp")
        head.headers.add(name: "Content-Type", value: "application/json")
        head.headers.add(name: "Accept", value: "application/json, text/event-stream")
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        try channel.writeInbound(HTTPServerRequestPart.head(head))
        try channel.writeInbound(HTTPServerRequestPart.body(ByteBuffer(string: body ?? message.jsonString())))
        try channel.writeInbound(HTTPServerRequestPart.end(nil))
    }

    private func sendDiscover(_ channel: EmbeddedChannel, id: Int, headers: [(String, String)] = []) throws {
        let message: JSONValue = ["jsonrpc": "2.0", "id": .int(id), "method": "server/discover", "params": ["_meta": Self.meta]]
        try send(
            channel, message,
            headers: [("MCP-Protocol-Version", "2026-07-28"), ("Mcp-Method", "server/discover")] + headers)
    }

    /// The response the handler wrote: its head, and its body as JSON.
    private func readAnswer(_ channel: EmbeddedChannel) throws -> (head: HTTPResponseHead, body: JSONValue?) {
        guard case .head(let head) = try channel.readOutbound(as: HTTPServerResponsePart.self) else {
            throw XCTSkip("no response head was written")
        }
        var body: JSONValue?
        while let part = try channel.readOutbound(as: HTTPServerResponsePart.self) {
            switch part {
            case .body(.byteBuffer(let buffer)): body = try JSONValue.parse(Data(buffer.readableBytesView))
            case .end: return (head, body)
            default: XCTFail("unexpected part \(part)")
            }
        }
        XCTFail("the response did not end")
        return (head, body)
    }

    private func passedOn(_ channel: EmbeddedChannel) throws -> [HTTPServerRequestPart] {
        var parts: [HTTPServerRequestPart] = []
        while let part = try channel.readInbound(as: HTTPServerRequestPart.self) { parts.append(part) }
        return parts
    }

    func testAModernPostIsAnsweredByTheHandlerItself() throws {
        let channel = try connectedChannel()
        try sendDiscover(channel, id: 7)
        XCTAssertTrue(try passedOn(channel).isEmpty, "a modern POST must not reach Hummingbird")
        let (head, body) = try readAnswer(channel)
        XCTAssertEqual(head.status, .ok)
        XCTAssertEqual(head.headers["Content-Type"], ["application/json"])
        XCTAssertEqual(head.headers["Server"], ["handler-test"])
        XCTAssertEqual(head.headers["Content-Length"].first.flatMap { Int($0) }, body?.jsonString().utf8.count)
        XCTAssertEqual(body?["id"], 7)
        XCTAssertEqual(body?["result"]?["supportedVersions"]?.arrayValue?.first, "2026-07-28")
        XCTAssertTrue(channel.isActive, "keep-alive: the connection stays open")
    }

    func testTheHandlerKeepsTheRulesOfThePostPath() throws {
        let channel = try connectedChannel()
        // A foreign Origin: 403 before anything else.
        try sendDiscover(channel, id: 1, headers: [("Origin", "http://evil.example")])
        XCTAssertEqual(try readAnswer(channel).head.status, .forbidden)
        // A header that disagrees with the body: 400 with -32020 and the request's id.
        let message: JSONValue = ["jsonrpc": "2.0", "id": 2, "method": "server/discover", "params": ["_meta": Self.meta]]
        try send(channel, message, headers: [("MCP-Protocol-Version", "2026-07-28"), ("Mcp-Method", "tools/list")])
        let mismatch = try readAnswer(channel)
        XCTAssertEqual(mismatch.head.status, .badRequest)
        XCTAssertEqual(mismatch.body?["error"]?["code"], -32020)
        XCTAssertEqual(mismatch.body?["id"], 2)
        // Past the body limit: 413.
        try send(
            channel, .null, headers: [("MCP-Protocol-Version", "2026-07-28"), ("Mcp-Method", "server/discover")],
            body: String(repeating: " ", count: 5000))
        XCTAssertEqual(try readAnswer(channel).head.status, .payloadTooLarge)
        // Not JSON: -32700 with id null.
        try send(channel, .null, headers: [("MCP-Protocol-Version", "2026-07-28"), ("Mcp-Method", "x")], body: "{nope")
        let parseError = try readAnswer(channel)
        XCTAssertEqual(parseError.body?["error"]?["code"], -32700)
        XCTAssertEqual(parseError.body?["id"], .null)
        XCTAssertTrue(try passedOn(channel).isEmpty)
    }

    func testOtherRequestsArePassedOnAndAModernOneWaitsWhileHummingbirdOwesAnAnswer() throws {
        let channel = try connectedChannel()
        // A legacy request (no version header): Hummingbird's.
        let legacy: JSONValue = ["jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": [:]]
        try send(channel, legacy, headers: [])
        XCTAssertEqual(try passedOn(channel).count, 3)
        // A modern one behind it is passed on too: answering it here would overtake Hummingbird's answer.
        try sendDiscover(channel, id: 2)
        XCTAssertEqual(try passedOn(channel).count, 3)
        XCTAssertNil(try channel.readOutbound(as: HTTPServerResponsePart.self))
        // Hummingbird answers both (its parts go out through the handler); then a modern request is the handler's.
        for _ in 0..<2 {
            try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok)))
            try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        }
        while try channel.readOutbound(as: HTTPServerResponsePart.self) != nil {}
        try sendDiscover(channel, id: 3)
        XCTAssertTrue(try passedOn(channel).isEmpty)
        XCTAssertEqual(try readAnswer(channel).body?["id"], 3)
        // GET, and a POST elsewhere or with a legacy version header, are never the handler's.
        try channel.writeInbound(HTTPServerRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/mcp")))
        try channel.writeInbound(HTTPServerRequestPart.end(nil))
        try sendDiscover(channel, id: 4, headers: [("MCP-Protocol-Version", "2025-11-25")])
        XCTAssertEqual(try passedOn(channel).count, 5)
    }

    /// A connection that owes the client nothing has `requestTimeout` (60 s here) for its next request to arrive
    /// whole, counted from its opening or its last answer; parts that trickle in do not extend it. A request being
    /// answered (here or by Hummingbird) is never cut.
    func testARequestThatDoesNotArriveWholeInTimeClosesTheConnection() throws {
        // Nothing sent at all.
        let silent = try connectedChannel()
        silent.embeddedEventLoop.advanceTime(by: .seconds(59))
        XCTAssertTrue(silent.isActive, "closed before its time")
        silent.embeddedEventLoop.advanceTime(by: .seconds(2))
        XCTAssertFalse(silent.isActive, "a connection that never sent a request stayed open")

        // A modern request's head, then its body a byte every 10 s, never ending.
        let trickling = try connectedChannel()
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/mcp")
        head.headers.add(name: "MCP-Protocol-Version", value: "2026-07-28")
        head.headers.add(name: "Mcp-Method", value: "server/discover")
        try trickling.writeInbound(HTTPServerRequestPart.head(head))
        for _ in 0..<5 {
            trickling.embeddedEventLoop.advanceTime(by: .seconds(10))
            try trickling.writeInbound(HTTPServerRequestPart.body(ByteBuffer(string: " ")))
        }
        XCTAssertTrue(trickling.isActive)
        trickling.embeddedEventLoop.advanceTime(by: .seconds(11))
        XCTAssertFalse(trickling.isActive, "a request trickling in held its connection past the timeout")
        XCTAssertNil(try trickling.readOutbound(as: HTTPServerResponsePart.self), "it was answered")

        // An answer starts the time again.
        let answered = try connectedChannel()
        answered.embeddedEventLoop.advanceTime(by: .seconds(50))
        try sendDiscover(answered, id: 1)
        XCTAssertEqual(try readAnswer(answered).body?["id"], 1)
        answered.embeddedEventLoop.advanceTime(by: .seconds(50))
        XCTAssertTrue(answered.isActive, "the time did not start again after the answer")
        answered.embeddedEventLoop.advanceTime(by: .seconds(11))
        XCTAssertFalse(answered.isActive)

        // A request passed on to Hummingbird: its head alone times out; once whole, its answer may take as long as it
        // takes (a legacy stream); after the answer the time starts again.
        let legacyHead = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/mcp")
        let halfPassed = try connectedChannel()
        try halfPassed.writeInbound(HTTPServerRequestPart.head(legacyHead))
        halfPassed.embeddedEventLoop.advanceTime(by: .seconds(61))
        XCTAssertFalse(halfPassed.isActive, "a passed-on request's missing end held the connection")
        let streaming = try connectedChannel()
        try streaming.writeInbound(HTTPServerRequestPart.head(legacyHead))
        try streaming.writeInbound(HTTPServerRequestPart.end(nil))
        try streaming.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok)))
        streaming.embeddedEventLoop.advanceTime(by: .seconds(600))
        XCTAssertTrue(streaming.isActive, "an answer under way was cut")
        try streaming.writeOutbound(HTTPServerResponsePart.end(nil))
        streaming.embeddedEventLoop.advanceTime(by: .seconds(59))
        XCTAssertTrue(streaming.isActive)
        streaming.embeddedEventLoop.advanceTime(by: .seconds(2))
        XCTAssertFalse(streaming.isActive)
    }

    func testConnectionCloseIsHonoured() throws {
        let channel = try connectedChannel()
        try sendDiscover(channel, id: 1, headers: [("Connection", "close")])
        let (head, body) = try readAnswer(channel)
        XCTAssertEqual(head.headers["Connection"], ["close"])
        XCTAssertEqual(body?["id"], 1)
        XCTAssertFalse(channel.isActive)
    }

    func testTheChildChannelServesAModernPostFromItsBytes() throws {
        let channel = EmbeddedChannel()
        let child = MCPHTTP1Channel(base: HTTP1Channel(responder: { _, _, _ in }), server: server)
        _ = try child.setup(channel: channel, logger: Logger(label: "handler-test")).wait()
        let body: JSONValue = ["jsonrpc": "2.0", "id": 9, "method": "server/discover", "params": ["_meta": Self.meta]]
        let text = body.jsonString()
        let request =
            "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: application/json\r\n"
            + "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: server/discover\r\nContent-Length: \(text.utf8.count)\r\n\r\n"
            + text
        try channel.writeInbound(ByteBuffer(string: request))
        var written = ""
        while let buffer = try channel.readOutbound(as: IOData.self) {
            guard case .byteBuffer(let bytes) = buffer else { continue }
            written += String(buffer: bytes)
        }
        XCTAssertTrue(written.hasPrefix("HTTP/1.1 200 OK\r\n"), written)
        XCTAssertTrue(written.contains(#""id":9"#), written)
    }
}

/// The answering path on the embedded loop itself (the application's work runs there too): what arrives behind an
/// awaited answer waits for it, in order, errors and events included; an SSE stream is counted once.
final class ModernPostHandlerAnsweringTests: XCTestCase {
    private struct TestError: Error {}

    /// Holds each exchange until the test lets it go. Only the test's thread touches it (the embedded loop runs there).
    private final class Gate: @unchecked Sendable {
        var waiting: [CheckedContinuation<Void, Never>] = []
        func wait() async { await withCheckedContinuation { waiting.append($0) } }
        func open() {
            let released = waiting
            waiting.removeAll()
            for continuation in released { continuation.resume() }
        }
    }

    private struct GatedEndpoint: MCPHTTPEndpoint {
        let gate: Gate
        func exchange(_ request: ModernHTTPRequest, notify: @escaping @Sendable (JSONValue) async -> Void) async
            -> (text: String, status: Int)
        {
            await gate.wait()
            return (JSONRPC.response(id: request.id, result: ["done": true]).jsonString(), 200)
        }
        func openLegacySession(id: String, principal: String?, outlet: LegacyOutlet) async throws(JSONRPCError)
            -> any LegacySession
        {
            throw JSONRPCError(code: -32601, message: "none")
        }
    }

    /// Records what the handler passes on, in order.
    private final class Recorder: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        var seen: [String] = []
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head): seen.append("head \(head.method)")
            case .body: seen.append("body")
            case .end: seen.append("end")
            }
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { seen.append("error") }
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) { seen.append("event") }
    }

    private var server: MCPHTTPServer!
    private let gate = Gate()

    override func setUp() {
        server = MCPHTTPServer(
            configuration: .init(host: "127.0.0.1", port: 0, serverName: "handler-test", jsonWindow: .milliseconds(100)),
            endpoint: GatedEndpoint(gate: gate), logger: Logger(label: "handler-test"))
    }

    override func tearDown() async throws {
        gate.open()
        try await server.eventLoops.shutdownGracefully()
    }

    private func channel(recorder: Recorder) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(
            ModernPostHandler(server: server, executor: EventLoopTaskExecutor(channel.eventLoop)))
        try channel.pipeline.syncOperations.addHandler(recorder)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    private func sendModern(_ channel: EmbeddedChannel, method: String, id: Int) throws {
        let meta: JSONValue = [
            "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": [:],
            "io.modelcontextprotocol/clientInfo": ["name": "test", "version": "1"],
        ]
        let body: JSONValue = ["jsonrpc": "2.0", "id": .int(id), "method": .string(method), "params": ["_meta": meta]]
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/mcp")
        head.headers.add(name: "Accept", value: "application/json, text/event-stream")
        head.headers.add(name: "MCP-Protocol-Version", value: "2026-07-28")
        head.headers.add(name: "Mcp-Method", value: method)
        try channel.writeInbound(HTTPServerRequestPart.head(head))
        try channel.writeInbound(HTTPServerRequestPart.body(ByteBuffer(string: body.jsonString())))
        try channel.writeInbound(HTTPServerRequestPart.end(nil))
    }

    private func written(_ channel: EmbeddedChannel) throws -> [HTTPServerResponsePart] {
        var parts: [HTTPServerResponsePart] = []
        while let part = try channel.readOutbound(as: HTTPServerResponsePart.self) { parts.append(part) }
        return parts
    }

    func testWhatComesBehindAnAwaitedAnswerWaitsForItInOrder() throws {
        let recorder = Recorder()
        let channel = try channel(recorder: recorder)
        try sendModern(channel, method: "x/slow", id: 1)
        channel.embeddedEventLoop.run()
        XCTAssertEqual(gate.waiting.count, 1, "the exchange runs, and waits")
        // Behind it: a legacy request, a decoder error, the end of input.
        var legacy = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/mcp")
        legacy.headers.add(name: "Accept", value: "application/json")
        try channel.writeInbound(HTTPServerRequestPart.head(legacy))
        try channel.writeInbound(HTTPServerRequestPart.end(nil))
        channel.pipeline.fireErrorCaught(TestError())
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        XCTAssertEqual(recorder.seen, [], "nothing may reach Hummingbird before the answer")
        XCTAssertTrue(try written(channel).isEmpty)
        gate.open()
        channel.embeddedEventLoop.run()
        let parts = try written(channel)
        guard case .head(let head) = parts.first else { return XCTFail("no answer: \(parts)") }
        XCTAssertEqual(head.status, .ok)
        XCTAssertEqual(head.headers["Content-Type"], ["application/json"])
        XCTAssertEqual(recorder.seen, ["head POST", "end", "error", "event"])
    }

    func testAStreamIsCountedOnceWhetherItEndsOrIsAbandoned() throws {
        let baseline = MCPHTTPServer.openStreams.load(ordering: .relaxed)
        let channel = try channel(recorder: Recorder())
        try sendModern(channel, method: "x/slow", id: 1)
        channel.embeddedEventLoop.run()
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(150))
        guard case .head(let head) = try written(channel).first else { return XCTFail("no stream opened") }
        XCTAssertEqual(head.headers["Content-Type"], ["text/event-stream"])
        XCTAssertEqual(MCPHTTPServer.openStreams.load(ordering: .relaxed), baseline + 1)
        gate.open()
        channel.embeddedEventLoop.run()
        XCTAssertEqual(MCPHTTPServer.openStreams.load(ordering: .relaxed), baseline, "the stream ended")
        // Another, abandoned mid-stream: the connection closes under it.
        try sendModern(channel, method: "x/slow", id: 2)
        channel.embeddedEventLoop.run()
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(150))
        XCTAssertEqual(MCPHTTPServer.openStreams.load(ordering: .relaxed), baseline + 1)
        _ = try? channel.finish()
        XCTAssertEqual(MCPHTTPServer.openStreams.load(ordering: .relaxed), baseline, "abandoned, counted down once")
        gate.open()
        channel.embeddedEventLoop.run()
        XCTAssertEqual(MCPHTTPServer.openStreams.load(ordering: .relaxed), baseline)
    }
}

/// The HTTP connection fuzz target's seeds and every input it once broke (Fuzz/*/http-connection), through the same
/// entry point, so that what it found stays fixed without a fuzzing build.
final class HTTPConnectionFuzzCorpusTests: XCTestCase {
    func testHTTPConnectionInputs() throws {
        let fuzz = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Fuzz")
            .standardized
        var files: [URL] = []
        for folder in ["corpus", "regressions"] {
            let directory = fuzz.appendingPathComponent(folder).appendingPathComponent("http-connection")
            let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
            files += names.filter { !$0.hasPrefix(".") }.map { directory.appendingPathComponent($0) }
        }
        XCTAssertGreaterThan(files.count, 5)
        for file in files {
            XCTAssertNoThrow(try FuzzHTTPEntryPoints.connection(Array(try Data(contentsOf: file))), file.lastPathComponent)
        }
    }

    /// The harness reaches the handler: every request of a pipelined seed is answered, in whatever reads it comes.
    func testEveryPipelinedRequestIsAnswered() throws {
        let fuzz = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Fuzz")
            .standardized.appendingPathComponent("corpus/http-connection")
        for name in ["pipeline-one-read", "pipeline-small-reads"] {
            let seed = Array(try Data(contentsOf: fuzz.appendingPathComponent(name)))
            let outcome = try FuzzHTTPEntryPoints.connection(seed)
            XCTAssertEqual(outcome.requests, 7, name)
            XCTAssertEqual(outcome.responses, 7, name)
        }
        let close = Array(try Data(contentsOf: fuzz.appendingPathComponent("connection-close")))
        XCTAssertEqual(try FuzzHTTPEntryPoints.connection(close).responses, 1, "nothing after Connection: close")
    }

    /// The invariants themselves: a reordered pair of answers, or a response cut short, is caught.
    func testTheCheckerCatchesAnswersOutOfOrderAndResponsesCutShort() {
        func response(_ number: Int) -> String {
            let body = #"{"request":\#(number)}"#
            return "HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\n\r\n" + body
        }
        XCTAssertNoThrow(try FuzzHTTPEntryPoints.check(Array((response(0) + response(1)).utf8), requests: 2))
        XCTAssertThrowsError(try FuzzHTTPEntryPoints.check(Array((response(1) + response(0)).utf8), requests: 2))
        XCTAssertThrowsError(try FuzzHTTPEntryPoints.check(Array((response(0) + response(1)).utf8), requests: 1))
        XCTAssertThrowsError(try FuzzHTTPEntryPoints.check(Array(response(0).utf8.dropLast(2)), requests: 1))
    }
}
