import CorralJSON
import Foundation
import XCTest

@testable import Gateway

/// What an HTTP client of the proxy gets when the server's message is one the proxy cannot read.
final class ProxyHTTPEndpointTests: XCTestCase {
    func testAnUnreadableAnswerBecomesAnErrorUnderItsId() {
        // A lone surrogate escape (JSON.stringify of a string cut inside an emoji), a number out of range.
        for text in [#"{"jsonrpc":"2.0","id":"corral-3","result":{"text":"\ud83d"}}"#, #"{"jsonrpc":"2.0","id":"corral-3","result":{"n":1e400}}"#] {
            let message = ProxyHTTPEndpoint.readable(Data(text.utf8))
            XCTAssertEqual(message["id"], "corral-3", text)
            XCTAssertEqual(message["error"]?["code"], -32603, text)
            XCTAssertNil(message["result"], text)
        }
        XCTAssertEqual(ProxyHTTPEndpoint.readable(Data("not json".utf8))["id"], .null)
        let fine = #"{"jsonrpc":"2.0","id":"corral-4","result":{}}"#
        XCTAssertEqual(ProxyHTTPEndpoint.readable(Data(fine.utf8)), try JSONValue.parse(Data(fine.utf8)))
    }
}
