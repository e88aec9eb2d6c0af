import CorralJSON
import Foundation
import Gateway
import Policy
import Synchronization
import XCTest

/// ProxyCore with its two sides captured: exactly what reaches the server and what the client is told.
final class ProxyCoreTests: XCTestCase {
    private final class Wire: Sendable {
        let toServer = Mutex<[String]>([])
        let toClient = Mutex<[String]>([])
        var server: [String] { toServer.withLock { $0 } }
        var client: [JSONValue] { toClient.withLock { $0 }.compactMap { try? JSONValue.parse($0) } }
    }

    private func core(_ policy: String, wire: Wire, audit: (any AuditSink)? = nil, dryRun: Bool = false) throws -> ProxyCore {
        ProxyCore(
            evaluator: PolicyEvaluator(policy: try Policy.load(text: policy)), identity: CallIdentity(grant: "g"),
            audit: audit, dryRun: dryRun,
            toClient: { data in wire.toClient.withLock { $0.append(String(decoding: data, as: UTF8.self)) } },
            toServer: { data in wire.toServer.withLock { $0.append(String(decoding: data, as: UTF8.self)) } })
    }

    private static let policy = """
        {"version": "1", "default": "allow", "hide": ["cancel_background_task"],
         "tools": {"list_background_tasks": {"limits": [{"counter": "one", "window": "minute", "max": 1, "scope": "grant"}]}}}
        """

    private func line(_ text: String) -> Data { Data(text.utf8) }

    func testLineBreaksCannotSmuggleASecondMessage() async throws {
        let wire = Wire()
        let proxy = try core(Self.policy, wire: wire)
        let smuggled = #"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"cancel_background_task","arguments":{}}}"#
        // After a bare CR (Python servers split lines there): two values on one line, refused.
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","method":"notifications/x"}"# + "\r" + smuggled))
        XCTAssertEqual(wire.server, [])
        XCTAssertEqual(wire.client.last?["error"]?["code"], -32700)
        // Inside an unjudged message, as an HTTP body may carry: forwarded, but as one line.
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":1,"method":"ping","pad":"# + "\n" + smuggled + "\r\n}"))
        XCTAssertEqual(wire.server.count, 1)
        XCTAssertFalse(wire.server[0].contains("\n") || wire.server[0].contains("\r"), "no line break reaches the server")
        // A CRLF line ending is fine.
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":2,"method":"ping"}"# + "\r"))
        XCTAssertEqual(wire.server.count, 2)
    }

    func testIdsMustBeStringsOrIntegers() async throws {
        let wire = Wire()
        let proxy = try core(Self.policy, wire: wire)
        for id in ["null", "true", "1.5", "[1]", #"{"a":1}"#] {
            await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":\#(id),"method":"ping"}"#))
            await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":\#(id),"method":"tools/list"}"#))
        }
        XCTAssertEqual(wire.server, [])
        XCTAssertEqual(wire.client.count, 10)
        XCTAssertTrue(wire.client.allSatisfy { $0["error"]?["code"] == -32600 })
    }

    func testACancelledToolListIsStillFilteredWhenItsAnswerComes() async throws {
        let wire = Wire()
        let proxy = try core(Self.policy, wire: wire)
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#))
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2}}"#))
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#))  // the id is still taken
        await proxy.fromServer(line(#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"cancel_background_task"},{"name":"a"}]}}"#))
        XCTAssertEqual(wire.client.first?["error"]?["code"], -32600)
        let names = wire.client.last?["result"]?["tools"]?.arrayValue?.compactMap { $0["name"]?.stringValue }
        XCTAssertEqual(names, ["a"])
        // An answer we cannot read (a repeated key) is not passed on either.
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#))
        await proxy.fromServer(line(#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"cancel_background_task"}]},"jsonrpc":"2.0"}"#))
        XCTAssertEqual(wire.client.last?["error"]?["code"], -32603)
        XCTAssertFalse(wire.toClient.withLock { $0 }.joined().contains("cancel_background_task"))
    }

    func testAnIdInFlightCannotBeReused() async throws {
        let wire = Wire()
        let proxy = try core(Self.policy, wire: wire)
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#))
        // The same-id trick: a ping answered first would take the tools/list's place and let the list through unfiltered.
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#))
        XCTAssertEqual(wire.server.count, 1)
        XCTAssertEqual(wire.client.first?["id"], 7)
        XCTAssertEqual(wire.client.first?["error"]?["code"], -32600)
        await proxy.fromServer(line(#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"cancel_background_task"},{"name":"get_background_task"}]}}"#))
        let names = wire.client.last?["result"]?["tools"]?.arrayValue?.compactMap { $0["name"]?.stringValue }
        XCTAssertEqual(names, ["get_background_task"])
        // Once answered, the id is free again.
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#))
        XCTAssertEqual(wire.server.count, 2)
    }

    func testAReusedIdCannotRollBackACounter() async throws {
        let wire = Wire()
        let proxy = try core(Self.policy, wire: wire)
        let call = #"{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":{"name":"list_background_tasks","arguments":{}}}"#
        await proxy.fromClient(line(call.replacingOccurrences(of: "ID", with: "1")))
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":1,"method":"no/such_method"}"#))  // refused: id 1 is in flight
        await proxy.fromServer(line(#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":false}}"#))
        await proxy.fromClient(line(call.replacingOccurrences(of: "ID", with: "2")))
        XCTAssertEqual(wire.server.count, 1, "the second call is over the limit of one and never forwarded")
        XCTAssertEqual(wire.client.last?["result"]?["isError"], true)

        // A real JSON-RPC error answer does roll the counter back.
        let wire2 = Wire()
        let proxy2 = try core(Self.policy, wire: wire2)
        await proxy2.fromClient(line(call.replacingOccurrences(of: "ID", with: "1")))
        await proxy2.fromServer(line(#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"bad"}}"#))
        await proxy2.fromClient(line(call.replacingOccurrences(of: "ID", with: "2")))
        XCTAssertEqual(wire2.server.count, 2)
    }

    /// No call reaches the server without its audit line: one that cannot be recorded is refused, says why, and
    /// gives its counter back; a denial stays the policy's; a dry run forwards anyway.
    func testACallTheAuditTrailCannotRecordIsRefusedAndItsCounterGivenBack() async throws {
        let failing = Mutex(true)
        let recorded = Mutex<[String]>([])
        let audit = ClosureAuditSink { entry in
            if failing.withLock({ $0 }) { throw AuditFailure("cannot append to audit.jsonl: No space left on device") }
            recorded.withLock { $0.append("\(entry.tool) \(entry.decision)") }
        }
        let wire = Wire()
        let proxy = try core(Self.policy, wire: wire, audit: audit)
        let call = #"{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":{"name":"list_background_tasks","arguments":{}}}"#
        await proxy.fromClient(line(call.replacingOccurrences(of: "ID", with: "1")))
        XCTAssertEqual(wire.server, [], "a call without its audit line never reaches the server")
        XCTAssertEqual(wire.client.last?["id"], 1)
        XCTAssertEqual(wire.client.last?["result"]?["isError"], true)
        XCTAssertEqual(wire.client.last?["result"]?["structuredContent"]?["rule"], "audit")
        XCTAssertEqual(
            wire.client.last?["result"]?["content"]?.arrayValue?.first?["text"],
            "[POLICY DENIED] the audit trail could not record this call, so it was not forwarded: cannot append to audit.jsonl: No space left on device")
        // A 2026-07-28 call is refused the same way, as a complete result.
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_background_task","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#))
        XCTAssertEqual(wire.client.last?["result"]?["resultType"], "complete")
        XCTAssertEqual(wire.client.last?["result"]?["structuredContent"]?["rule"], "audit")
        // A denial is still the policy's own.
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"cancel_background_task","arguments":{}}}"#))
        XCTAssertEqual(wire.client.last?["result"]?["structuredContent"]?["rule"], "hide")
        XCTAssertEqual(wire.server, [])
        // Once lines can be written again, the limited tool's one call a minute is still there to spend.
        failing.withLock { $0 = false }
        await proxy.fromClient(line(call.replacingOccurrences(of: "ID", with: "4")))
        XCTAssertEqual(wire.server.count, 1)
        XCTAssertEqual(recorded.withLock { $0 }, ["list_background_tasks allow"])

        // A dry run enforces nothing, a missing audit line included: the call is forwarded and keeps its counter,
        // so the next one is recorded as over the limit.
        failing.withLock { $0 = true }
        let dryWire = Wire()
        let dry = try core(Self.policy, wire: dryWire, audit: audit, dryRun: true)
        await dry.fromClient(line(call.replacingOccurrences(of: "ID", with: "1")))
        failing.withLock { $0 = false }
        await dry.fromClient(line(call.replacingOccurrences(of: "ID", with: "2")))
        XCTAssertEqual(dryWire.server.count, 2)
        XCTAssertEqual(recorded.withLock { $0 }, ["list_background_tasks allow", "list_background_tasks deny"])
    }

    /// An error a transport made up because the answer never came (an HTTP stream that broke after the request
    /// left) says nothing about whether the call ran: its counter stays spent.
    func testALostAnswerDoesNotGiveTheCounterBack() async throws {
        let wire = Wire()
        let proxy = try core(Self.policy, wire: wire)
        let call = #"{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":{"name":"list_background_tasks","arguments":{}}}"#
        await proxy.fromClient(line(call.replacingOccurrences(of: "ID", with: "1")))
        await proxy.fromServer(line(#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"stream ended","data":{"corral/answerLost":true}}}"#))
        await proxy.fromClient(line(call.replacingOccurrences(of: "ID", with: "2")))
        XCTAssertEqual(wire.server.count, 1)
        XCTAssertEqual(wire.client.last?["result"]?["isError"], true)
        // The same inside a batch.
        let wire2 = Wire()
        let proxy2 = try core(Self.policy, wire: wire2)
        await proxy2.fromClient(line(call.replacingOccurrences(of: "ID", with: "1")))
        await proxy2.fromServer(line(#"[{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"lost","data":{"corral/answerLost":true}}}]"#))
        await proxy2.fromClient(line(call.replacingOccurrences(of: "ID", with: "2")))
        XCTAssertEqual(wire2.server.count, 1)
    }

    /// The user approves what they are shown: the arguments' values as well as their names, in both eras.
    func testTheApprovalQuestionShowsTheArguments() async throws {
        let policy = #"{"version": "1", "default": "allow", "tools": {"deploy": {"action": "require_approval", "reason": "Needs a human."}}}"#
        let wire = Wire()
        let proxy = try core(policy, wire: wire)
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"elicitation":{}},"clientInfo":{"name":"t","version":"1"}}}"#))
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"deploy","arguments":{"target":"production","force":true}}}"#))
        let long = String(repeating: "x", count: 3000)
        let modern = #"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"deploy","arguments":{"target":"LONG"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":{}}}}}"#
        await proxy.fromClient(line(modern.replacingOccurrences(of: "LONG", with: long)))
        let legacy = wire.client.first { $0["method"] == "elicitation/create" }?["params"]?["message"]?.stringValue
        XCTAssertEqual(legacy, #"Allow the call to tool "deploy" with arguments {"force":true,"target":"production"}? Needs a human."#)
        let question = wire.client.compactMap { $0["result"]?["inputRequests"]?["corral-approval"]?["params"]?["message"]?.stringValue }.first
        XCTAssertEqual(question?.hasPrefix(#"Allow the call to tool "deploy" with arguments {"target":"xxx"#), true)
        XCTAssertEqual(question?.hasSuffix("xxx…? Needs a human."), true, question ?? "no question")
        XCTAssertEqual(question.map { $0.count }, 1_000 + #"Allow the call to tool "deploy" with arguments …? Needs a human."#.count)
    }

    func testUnreadableToolListAnswersAreNotPassedOn() async throws {
        let wire = Wire()
        let proxy = try core(Self.policy, wire: wire)
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#))
        await proxy.fromServer(line(#"{"jsonrpc":"2.0","id":"a","result":{"tools":[{"name":"cancel_background_task","description":"\ud83d"}]}}"#))
        XCTAssertEqual(wire.client.count, 1)
        XCTAssertEqual(wire.client.first?["error"]?["code"], -32603)
        XCTAssertFalse(wire.toClient.withLock { $0 }.joined().contains("cancel_background_task"))
    }

    func testACancelledRequestKeepsItsIdUntilTheServerAnswersAndOwedAnswersComeWhenTheServerEnds() async throws {
        let wire = Wire()
        let proxy = try core(Self.policy, wire: wire)
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#))
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}}"#))
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#))  // the server may still answer 3
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#))
        XCTAssertEqual(wire.server.count, 3, "the first ping, its cancellation and ping 4; not the reused id")
        XCTAssertEqual(wire.client.first?["error"]?["code"], -32600)
        proxy.serverEnded("exited with status 1")
        let owed = wire.client.dropFirst().compactMap { $0["id"]?.intValue }.sorted()
        XCTAssertEqual(owed, [3, 4])
        XCTAssertTrue(wire.client.dropFirst().allSatisfy { $0["error"]?["message"]?.stringValue?.contains("exited with status 1") == true })
    }

    /// The review's sequence: a call is cancelled, its id reused, and the server (as the Python SDK does) answers the
    /// cancelled call with an error. That answer must neither be taken for the new request's nor give back the
    /// counter of a call that is then forwarded unfiltered or uncounted.
    func testALateAnswerToACancelledCallCannotStandInForALaterRequest() async throws {
        let wire = Wire()
        let proxy = try core(Self.policy, wire: wire)
        let call = #"{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":{"name":"list_background_tasks","arguments":{}}}"#
        await proxy.fromClient(line(call.replacingOccurrences(of: "ID", with: "7")))
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7}}"#))
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#))
        await proxy.fromClient(line(call.replacingOccurrences(of: "ID", with: "7")))
        XCTAssertEqual(wire.server.count, 2, "the call and its cancellation only")
        XCTAssertEqual(wire.client.map { $0["error"]?["code"] }, [-32600, -32600])
        // The server ran the call after all and says so: the counter stays spent, the next call is over the limit.
        await proxy.fromServer(line(#"{"jsonrpc":"2.0","id":7,"result":{"content":[],"isError":false}}"#))
        await proxy.fromClient(line(call.replacingOccurrences(of: "ID", with: "8")))
        XCTAssertEqual(wire.server.count, 2)
        XCTAssertEqual(wire.client.last?["result"]?["isError"], true)
        // Answered, id 7 is free again.
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#))
        XCTAssertEqual(wire.server.count, 3)
    }

    func testTheOldestCancelledRequestsAreForgottenPastTheLimit() async throws {
        let wire = Wire()
        let proxy = try core(Self.policy, wire: wire)
        let limit = 4096
        for id in 0...limit {
            await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":\#(id),"method":"ping"}"#))
            await proxy.fromClient(line(#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":\#(id)}}"#))
        }
        XCTAssertEqual(wire.client.count, 0)
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":0,"method":"ping"}"#))  // forgotten: free
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#))  // still owed
        XCTAssertEqual(wire.server.count, 2 * (limit + 1) + 1)
        XCTAssertEqual(wire.client.map { $0["id"] }, [1])
    }

    func testAnAnswerNoRequestAwaitsHasItsToolListFiltered() async throws {
        let wire = Wire()
        let proxy = try core(Self.policy, wire: wire)
        // A server that changed the id (a JavaScript server rounding a big integer), or a forgotten cancellation.
        await proxy.fromServer(line(#"{"jsonrpc":"2.0","id":9007199254740992,"result":{"tools":[{"name":"cancel_background_task"},{"name":"a"}]}}"#))
        await proxy.fromServer(line(#"[{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"cancel_background_task"},{"name":"b"}]}}]"#))
        let lists = wire.client.map { ($0.arrayValue?.first ?? $0)["result"]?["tools"]?.arrayValue?.compactMap { $0["name"]?.stringValue } }
        XCTAssertEqual(lists, [["a"], ["b"]])
        // Other unawaited answers pass as they are.
        await proxy.fromServer(line(#"{"jsonrpc":"2.0","id":6,"result":{"content":[]}}"#))
        XCTAssertEqual(wire.toClient.withLock { $0.last }, #"{"jsonrpc":"2.0","id":6,"result":{"content":[]}}"#)
    }

    func testIntegerIdsMustBeExactInADouble() async throws {
        let wire = Wire()
        let proxy = try core(Self.policy, wire: wire)
        for id in ["9007199254740992", "-9007199254740992", "9007199254740993", "9223372036854775807"] {
            await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":\#(id),"method":"tools/list"}"#))
            await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":\#(id),"method":"ping"}"#))
        }
        XCTAssertEqual(wire.server, [])
        XCTAssertEqual(wire.client.count, 8)
        XCTAssertTrue(wire.client.allSatisfy { $0["error"]?["code"] == -32600 })
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":9007199254740991,"method":"tools/list"}"#))
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":-9007199254740991,"method":"ping"}"#))
        XCTAssertEqual(wire.server.count, 2)
    }

    /// Go's encoding/json matches keys regardless of letter case (Unicode simple folding: the Kelvin sign is a k,
    /// the long s an s) and keeps the last: each of these is a call to a hidden tool, or other arguments, to it.
    func testKeysThatDifferOnlyInLetterCaseAreRefused() async throws {
        let wire = Wire()
        let proxy = try core(Self.policy, wire: wire)
        let attempts = [
            #"{"jsonrpc":"2.0","id":1,"Method":"tools/call","params":{"name":"cancel_background_task","arguments":{}}}"#,
            #"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_background_task","Name":"cancel_background_task","arguments":{}}}"#,
            #"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get_background_task","NAME":"cancel_background_task"}}"#,
            #"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"get_background_task","arguments":{"task_id":"a","Task_Id":"b"}}}"#,
            #"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"get_background_task","argumentſ":{"task_id":"b"}}}"#,
            #"{"jsonrpc":"2.0","id":6,"method":"tasks/get","params":{"taskId":"mine","tasKId":"theirs"}}"#,
            #"{"jsonrpc":"2.0","id":7,"method":"tasks/get","params":{"TaskId":"theirs"}}"#,
            #"[{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"get_background_task","Arguments":{}}}]"#,
            #"{"jsonrpc":"2.0","id":9,"method":"ping","Params":{}}"#,
            #"{"jsonrpc":"2.0","id":10,"method":"tasks/get","params":{"taskid":"theirs"}}"#,
        ]
        for attempt in attempts { await proxy.fromClient(line(attempt)) }
        XCTAssertEqual(wire.server, [], "nothing reaches the server")
        let answers = wire.client.map { $0.arrayValue?.first ?? $0 }
        XCTAssertEqual(answers.count, attempts.count)
        XCTAssertTrue(answers.allSatisfy { $0["error"]?["code"] == -32600 }, "\(answers)")
        XCTAssertEqual(answers.compactMap { $0["id"]?.intValue }, Array(1...10))
        // Keys spelled as the protocol spells them pass.
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"get_background_task","arguments":{"taskId":"a","TASK":"b"}}}"#))
        XCTAssertEqual(wire.server.count, 1)
    }

    func testBatchesAreDecidedPerCallAndIdsInsideThemAreChecked() async throws {
        let wire = Wire()
        let proxy = try core(Self.policy, wire: wire)
        await proxy.fromClient(line(#"""
            [{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"cancel_background_task"}},
             {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_background_task","arguments":{}}},
             {"jsonrpc":"2.0","id":2,"method":"ping"}]
            """#.replacingOccurrences(of: "\n", with: "")))
        let forwarded = try JSONValue.parse(Data(try XCTUnwrap(wire.server.first).utf8)).arrayValue ?? []
        XCTAssertEqual(forwarded.compactMap { $0["id"]?.intValue }, [2])
        XCTAssertEqual(Set(wire.client.compactMap { $0["id"]?.intValue }), [1, 2])
        XCTAssertEqual(wire.client.first { $0["id"] == 2 }?["error"]?["code"], -32600, "the second id 2 is refused")
    }
}
