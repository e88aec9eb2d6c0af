import MCPCore
import XCTest

/// `Authorization: Bearer <token68>` as RFC 7235 and 6750 spell it, and nothing looser.
final class BearerAuthenticationTests: XCTestCase {
    private struct OneToken: BearerAuthenticator {
        func principal(forToken token: String) -> String? { token == "t0k3n-A_b.c~d+e/f==" ? "team-a" : nil }
    }

    private func check(_ values: [String]) -> BearerCheck {
        BearerCheck.check(HTTPHeaderView(values.map { ("Authorization", $0) }), with: OneToken(), realm: "r")
    }

    func testTheSchemeInAnyCaseAndOneOrMoreSpacesAdmit() {
        for value in ["Bearer t0k3n-A_b.c~d+e/f==", "bearer t0k3n-A_b.c~d+e/f==", "BEARER    t0k3n-A_b.c~d+e/f=="] {
            XCTAssertEqual(check([value]), .admitted(principal: "team-a"), value)
        }
    }

    func testAnythingLooserIsRefusedWithAChallenge() {
        for value in [
            "Bearer\tt0k3n-A_b.c~d+e/f==", "Bearer  \t\tt0k3n-A_b.c~d+e/f==", "Bearer t0k3n-A_b.c~d+e/f== extra",
            "Bearer t0k3n-A_b.c~d+e/f==\t", "Bearer =t0k3n", "Bearer ", "Bearer", "Basic dXNlcjpwYXNz",
            "Bearer t0k3n-A_b.c~d+e/f==,", "Bearerx t0k3n-A_b.c~d+e/f==", "Bearer wrong",
        ] {
            guard case .refused(let challenge, let message) = check([value]) else {
                XCTFail("admitted \(value.debugDescription)")
                continue
            }
            XCTAssertEqual(challenge, #"Bearer realm="r", error="invalid_token""#, value)
            XCTAssertFalse(message.isEmpty)
        }
        guard case .refused(let challenge, _) = check([]) else { return XCTFail("admitted without a header") }
        XCTAssertEqual(challenge, #"Bearer realm="r""#)
        guard case .refused(_, let message) = check(["Bearer t0k3n-A_b.c~d+e/f==", "Bearer t0k3n-A_b.c~d+e/f=="]) else {
            return XCTFail("admitted two headers")
        }
        XCTAssertEqual(message, "more than one Authorization header")
    }
}
