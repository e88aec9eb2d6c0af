import Foundation

/// Who may use an HTTP endpoint: bearer tokens (RFC 6750) that stand for principals. A request without a token
/// that stands for one is answered 401 before its body is read: it never reaches the endpoint.
public protocol BearerAuthenticator: Sendable {
    /// The principal `token` stands for, or nil when it stands for none.
    func principal(forToken token: String) -> String?
}

/// The outcome of checking a request's `Authorization` header (here, beside the other HTTP rules, so that the fuzz
/// target reaches it without an HTTP server).
public enum BearerCheck: Equatable, Sendable {
    case admitted(principal: String?)
    /// 401, with the `WWW-Authenticate` challenge and a message that says what was wrong.
    case refused(challenge: String, message: String)

    /// RFC 6750: `Authorization: Bearer <token>` (the scheme is case-insensitive); one header only.
    public static func check(_ headers: HTTPHeaderView, with authenticator: (any BearerAuthenticator)?, realm: String) -> BearerCheck {
        guard let authenticator else { return .admitted(principal: nil) }
        let challenge = "Bearer realm=\"\(realm)\""
        let values = headers.values("Authorization")
        guard let value = values.first else {
            return .refused(challenge: challenge, message: "authentication required: send Authorization: Bearer <token>")
        }
        let invalid = challenge + ", error=\"invalid_token\""
        guard values.count == 1 else {
            return .refused(challenge: invalid, message: "more than one Authorization header")
        }
        // RFC 7235 credentials: the scheme, 1*SP, then a token68 (RFC 6750's b64token). Nothing looser: a gatekeeper
        // that trimmed a tab or read past a second word would admit texts its peers read otherwise (the fuzzer
        // found "bearer  \t\tfuzz-token" admitted).
        guard let space = value.firstIndex(of: " "), value[..<space].lowercased() == "bearer" else {
            return .refused(challenge: invalid, message: "the Authorization header is not a bearer token")
        }
        let token = String(value[space...].drop(while: { $0 == " " }))
        guard Self.isToken68(token) else {
            return .refused(challenge: invalid, message: "the Authorization header is not a bearer token")
        }
        guard let principal = authenticator.principal(forToken: token) else {
            return .refused(challenge: invalid, message: "the bearer token is not valid here")
        }
        return .admitted(principal: principal)
    }

    /// token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
    static func isToken68(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        var end = bytes.count
        while end > 0, bytes[end - 1] == UInt8(ascii: "=") { end -= 1 }
        guard end > 0 else { return false }
        return bytes[..<end].allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"):
                return true
            case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "+"),
                UInt8(ascii: "/"):
                return true
            default:
                return false
            }
        }
    }
}
