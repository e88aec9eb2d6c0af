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
}
