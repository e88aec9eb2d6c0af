import CorralJSON
import Foundation
import Gateway
import Policy
import XCTest

/// AgentSandbox over HTTP against a server that talks on the POST's event stream before answering: a Python
/// server (python3 is on every machine the tests run on) that sends a `ping` and answers the call only once the
/// client replied, and one that ends the stream without answering.
final class StreamingHTTPTests: XCTestCase {
    static let server = #"""
        import json, threading
        from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
        replied = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"
            def log_message(self, *args): pass
            def event(self, message):
                self.wfile.write(b"data: " + json.dumps(message).encode() + b"\n\n"); self.wfile.flush()
            def do_DELETE(self):
                self.send_response(200); self.end_headers()
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
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

    func testServerRequestsOnThePOSTStreamAreAnsweredAndLostAnswersFailTheCall() async throws {
        let script = FileManager.default.temporaryDirectory.appendingPathComponent("corral-sse-\(UUID().uuidString).py")
        try Self.server.write(to: script, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script.path]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        defer {
            kill(process.processIdentifier, SIGKILL)  // SIGTERM may be ignored in a test process, and so inherited
            process.waitUntilExit()
            try? FileManager.default.removeItem(at: script)
        }
        let port = String(decoding: output.fileHandleForReading.availableData, as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let url = try XCTUnwrap(URL(string: "http://127.0.0.1:\(port)/mcp"))
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
}
