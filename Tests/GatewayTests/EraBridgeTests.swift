import CorralJSON
import Foundation
import Synchronization
import XCTest

@testable import Gateway

final class EraBridgeTests: XCTestCase {
    /// The proxy's own `notifications/cancelled` for a closed stream (no `_meta`) can reach the bridge before any
    /// request: it must not settle the era, or modern clients would reach a 2025-11-25-only server untranslated.
    func testANotificationBeforeTheFirstRequestSettlesNothing() async throws {
        let sent = Mutex<[String]>([])
        let bridge = EraBridge(toServer: { data in sent.withLock { $0.append(String(decoding: data, as: UTF8.self)) } })
        bridge.attach { _ in }
        await bridge.send(Data(#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"corral-1"}}"#.utf8))
        let modern = #"{"jsonrpc":"2.0","id":"corral-2","method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#
        await bridge.send(Data(modern.utf8))
        let lines = sent.withLock { $0 }
        XCTAssertEqual(lines.count, 2, "\(lines)")
        XCTAssertTrue(lines[0].contains("notifications/cancelled"))
        // The request is held while the server is asked which era it speaks.
        XCTAssertEqual(try JSONValue.parse(Data(lines[1].utf8))["method"], "server/discover")
    }

    /// A cancelled request or listen leaves nothing behind in a translating bridge (a 2025-11-25-only server need
    /// not answer it): a late answer passes as the server wrote it, and a cancelled listen hears nothing more.
    func testACancellationForgetsWhatWasKeptForTheRequest() async throws {
        let sent = Mutex<[JSONValue]>([])
        let delivered = Mutex<[JSONValue]>([])
        let bridge = EraBridge(toServer: { data in sent.withLock { $0.append((try? JSONValue.parse(data)) ?? .null) } })
        bridge.attach { data in delivered.withLock { $0.append((try? JSONValue.parse(data)) ?? .null) } }
        let meta = #""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}"#
        func request(_ id: String, _ method: String, _ params: String = "") async {
            await bridge.send(Data(#"{"jsonrpc":"2.0","id":"\#(id)","method":"\#(method)","params":{\#(params)\#(meta)}}"#.utf8))
        }
        await request("r1", "tools/list")
        await bridge.received(Data(#"{"jsonrpc":"2.0","id":"corral-era-discover","error":{"code":-32601,"message":"no"}}"#.utf8))
        await bridge.received(Data(#"{"jsonrpc":"2.0","id":"corral-era-initialize","result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"old","version":"1"}}}"#.utf8))
        XCTAssertEqual(sent.withLock { $0.last?["method"] }, "tools/list", "translating, the held request went on")
        await request("r2", "tools/list")
        await request("l1", "subscriptions/listen", #""notifications":{"toolsListChanged":true},"#)
        for id in ["r1", "l1"] {
            await bridge.send(Data(#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"\#(id)"}}"#.utf8))
        }
        await bridge.received(Data(#"{"jsonrpc":"2.0","id":"r1","result":{"tools":[]}}"#.utf8))
        await bridge.received(Data(#"{"jsonrpc":"2.0","id":"r2","result":{"tools":[]}}"#.utf8))
        await bridge.received(Data(#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#.utf8))
        let answers = delivered.withLock { $0 }.filter { $0["id"] == "r1" || $0["id"] == "r2" }
        XCTAssertEqual(answers.map { $0["result"]?["resultType"] }, [nil, "complete"], "r1 cancelled: as written; r2 stamped")
        XCTAssertFalse(delivered.withLock { $0 }.contains { $0["method"] == "notifications/tools/list_changed" }, "the listen was cancelled")
    }
}
