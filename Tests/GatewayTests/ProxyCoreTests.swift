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

    private func core(_ policy: String, wire: Wire) throws -> ProxyCore {
        ProxyCore(
            evaluator: PolicyEvaluator(policy: try Policy.load(text: policy)), identity: CallIdentity(grant: "g"),
            audit: nil,
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

    func testUnreadableToolListAnswersAreNotPassedOn() async throws {
        let wire = Wire()
        let proxy = try core(Self.policy, wire: wire)
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#))
        await proxy.fromServer(line(#"{"jsonrpc":"2.0","id":"a","result":{"tools":[{"name":"cancel_background_task","description":"\ud83d"}]}}"#))
        XCTAssertEqual(wire.client.count, 1)
        XCTAssertEqual(wire.client.first?["error"]?["code"], -32603)
        XCTAssertFalse(wire.toClient.withLock { $0 }.joined().contains("cancel_background_task"))
    }

    func testCancelledRequestsFreeTheirIdAndOwedAnswersComeWhenTheServerEnds() async throws {
        let wire = Wire()
        let proxy = try core(Self.policy, wire: wire)
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#))
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}}"#))
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#))
        await proxy.fromClient(line(#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#))
        XCTAssertEqual(wire.server.count, 4)
        proxy.serverEnded("exited with status 1")
        let owed = wire.client.compactMap { $0["id"]?.intValue }.sorted()
        XCTAssertEqual(owed, [3, 4])
        XCTAssertTrue(wire.client.allSatisfy { $0["error"]?["message"]?.stringValue?.contains("exited with status 1") == true })
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
