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
        let parts = value.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else {
            return .refused(challenge: invalid, message: "the Authorization header is not a bearer token")
        }
        let token = parts[1].trimmingCharacters(in: .whitespaces)
        guard !token.isEmpty, let principal = authenticator.principal(forToken: token) else {
            return .refused(challenge: invalid, message: "the bearer token is not valid here")
        }
        return .admitted(principal: principal)
    }
}
