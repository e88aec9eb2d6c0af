import CorralJSON
import Foundation
import Gateway
import Policy
import XCTest

/// AgentSandbox over HTTP against a Python server (python3 is on every machine the tests run on): one that talks on
/// the POST's event stream before answering (it sends a `ping` and answers the call only once the client replied),
/// one that ends the stream without answering, and calls that the server answers only once all of them are in.
final class StreamingHTTPTests: XCTestCase {
    /// How many calls `gather` holds until all have arrived: more than an HTTP client's usual per-host connection cap
    /// (AsyncHTTPClient's default is 8).
    static let gathered = 24

    static let server = #"""
        import json, sys, threading
        from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
        replied = threading.Event()
        gather = threading.Barrier(int(sys.argv[1]), timeout=10)
        arrived = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"
            def log_message(self, *args): pass
            def event(self, message):
                self.wfile.write(b"data: " + json.dumps(message).encode() + b"\n\n"); self.wfile.flush()
            def do_DELETE(self):
                self.send_response(200); self.end_headers()
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if isinstance(body, list):  # no batches here
                    self.send_response(500); self.send_header("Content-Length", "0"); self.end_headers()
                    return
                method = body.get("method")
                if method == "initialize":
                    data = json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": {
                        "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                        "serverInfo": {"name": "sse-test", "version": "1"}}}).encode()
                    self.send_response(200); self.send_header("Content-Type", "application/json")
                    self.send_header("Mcp-Session-Id", "s"); self.send_header("Content-Length", str(len(data)))
                    self.end_headers(); self.wfile.write(data)
                elif method is None or method.startswith("notifications/"):
                    if body.get("id") == "s1": replied.set()
                    self.send_response(202); self.end_headers()
                elif method == "tools/call" and body["params"]["name"] == "gather":
                    arrived.append(1)
                    try:
                        gather.wait(); text = "all in at once"
                    except threading.BrokenBarrierError:
                        text = "only %d of %d came within 10 s" % (len(arrived), gather.parties)
                    data = json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": {
                        "content": [{"type": "text", "text": text}], "isError": False}}).encode()
                    self.send_response(200); self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
                elif method == "tools/call" and body["params"]["name"] in ("whoami", "version"):
                    header = "Authorization" if body["params"]["name"] == "whoami" else "MCP-Protocol-Version"
                    data = json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": {
                        "content": [{"type": "text", "text": self.headers.get(header, "")}], "isError": False}}).encode()
                    self.send_response(200); self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
                elif method == "tools/call":
                    self.send_response(200); self.send_header("Content-Type", "text/event-stream"); self.end_headers()
                    if body["params"]["name"] == "drop":
                        return  # the stream ends without the answer
                    self.event({"jsonrpc": "2.0", "id": "s1", "method": "ping"})
                    text = "answered after the client replied" if replied.wait(10) else "the client never replied"
                    self.event({"jsonrpc": "2.0", "id": body["id"], "result": {
                        "content": [{"type": "text", "text": text}], "isError": False}})

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        print(server.server_address[1], flush=True)
        server.serve_forever()
        """#

    /// Starts the server; `stop` ends it.
    private func startServer() throws -> (url: URL, stop: () -> Void) {
        let script = FileManager.default.temporaryDirectory.appendingPathComponent("corral-sse-\(UUID().uuidString).py")
        try Self.server.write(to: script, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script.path, String(Self.gathered)]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let stop = {
            kill(process.processIdentifier, SIGKILL)  // SIGTERM may be ignored in a test process, and so inherited
            process.waitUntilExit()
            try? FileManager.default.removeItem(at: script)
        }
        let port = String(decoding: output.fileHandleForReading.availableData, as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        do {
            return (try XCTUnwrap(port.isEmpty ? nil : URL(string: "http://127.0.0.1:\(port)/mcp"), "the Python server did not start"), stop)
        } catch {
            stop()
            throw error
        }
    }

    /// A sandbox whose policy allows every call, over HTTP.
    private static func connectAllowingAll(to url: URL) async throws -> AgentSandbox {
        try await AgentSandbox.connect(
            policy: PolicyEvaluator(policy: try Policy.load(text: #"{"version": "1", "default": "allow"}"#)),
            identity: CallIdentity(grant: "g"), to: .http(url))
    }

    func testServerRequestsOnThePOSTStreamAreAnsweredAndLostAnswersFailTheCall() async throws {
        let (url, stop) = try startServer()
        defer { stop() }
        let policy = try Policy.load(text: #"""
            {"version": "1", "default": "allow",
             "tools": {"drop": {"limits": [{"counter": "d", "window": "minute", "max": 1, "scope": "grant"}]}}}
            """#)
        let sandbox = try await AgentSandbox.connect(
            policy: PolicyEvaluator(policy: policy), identity: CallIdentity(grant: "g"), to: .http(url))
        let result = try await sandbox.callTool("echo")
        XCTAssertEqual(result.text, "answered after the client replied")

        let start = ContinuousClock.now
        do {
            _ = try await sandbox.callTool("drop")
            XCTFail("a stream that ends without the answer must fail the call")
        } catch let error as AgentSandboxError {
            guard case .connectionLost(let why) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(why.contains("ended before the answer"), why)
        }
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(5))
        let again = try await sandbox.callTool("drop")
        XCTAssertTrue(again.wasDenied, "a lost answer keeps its counter: the call may have run")
        await sandbox.close()
    }

    /// Calls held by the server for long (a `wait_for_background_task` of an hour) must not queue behind each other
    /// in the client: every one is in flight at once, on a connection of its own.
    func testConcurrentCallsAreAllInFlightAtOnce() async throws {
        let (url, stop) = try startServer()
        defer { stop() }
        let sandbox = try await Self.connectAllowingAll(to: url)
        let texts = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<Self.gathered { group.addTask { try await sandbox.callTool("gather").text } }
            return try await group.reduce(into: [String]()) { $0.append($1) }
        }
        XCTAssertEqual(texts, Array(repeating: "all in at once", count: Self.gathered))
        await sandbox.close()
    }

    /// Credentials in the endpoint's URL go as Basic authorization, on every request.
    func testCredentialsInTheURLAreSentAsBasicAuthorization() async throws {
        let (url, stop) = try startServer()
        defer { stop() }
        var parts = try XCTUnwrap(URLComponents(url: url, resolvingAgainstBaseURL: false))
        parts.user = "agent"
        parts.password = "s3cret"
        let sandbox = try await Self.connectAllowingAll(to: try XCTUnwrap(parts.url))
        let text = try await sandbox.callTool("whoami").text
        XCTAssertEqual(text, "Basic " + Data("agent:s3cret".utf8).base64EncodedString())
        await sandbox.close()
    }

    /// A batch's requests are owed an answer each: when its POST fails, each gets an error in its place (the
    /// notification in it gets none), so no caller waits for ever.
    func testEveryRequestOfAFailedBatchGetsAnErrorInItsPlace() async throws {
        let (url, stop) = try startServer()
        defer { stop() }
        let transport = StreamableHTTPClientTransport(endpoint: url)
        let batch = #"[{"jsonrpc": "2.0", "id": 7, "method": "tools/list"}, {"jsonrpc": "2.0", "id": "eight", "method": "tools/list"}, {"jsonrpc": "2.0", "method": "notifications/progress"}]"#
        try await transport.send(Data(batch.utf8))
        var ids: Set<JSONValue> = []
        for try await message in transport.receive() {
            let answer = try JSONValue.parse(message)
            XCTAssertEqual(answer["error"]?["data"]?[MCPClient.answerLostKey], true, "\(answer)")
            XCTAssertTrue(answer["error"]?["message"]?.stringValue?.contains("HTTP 500") == true, "\(answer)")
            ids.insert(try XCTUnwrap(answer["id"]))
            if ids.count == 2 { break }
        }
        XCTAssertEqual(ids, [7, "eight"])
        await transport.disconnect()
    }

    /// A 2025-11-25 session's requests carry the version its `initialize` answer named (this server: 2025-06-18).
    func testTheNegotiatedVersionGoesOnLaterRequests() async throws {
        let (url, stop) = try startServer()
        defer { stop() }
        let sandbox = try await Self.connectAllowingAll(to: url)
        for _ in 0..<2 {
            let version = try await sandbox.callTool("version").text
            XCTAssertEqual(version, "2025-06-18")
        }
        await sandbox.close()
    }
}
