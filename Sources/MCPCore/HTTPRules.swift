import CorralJSON
import Foundation

/// Where a Streamable HTTP POST goes, decided from its headers and body alone: the spec's HTTP rules for both eras,
/// kept apart from the HTTP server so that they can be tested and fuzzed without one.
public enum HTTPPostRoute: Sendable {
    /// Answered at once: an error message with its status, or (no message) an accepted notification (202).
    case reply(status: Int, message: JSONValue?)
    /// 406: the client accepts neither JSON nor SSE (or SSE is needed and not accepted).
    case notAcceptable
    /// A message (or batch) for the 2025-11-25 session with this id.
    case legacySession(id: String, message: JSONValue)
    /// An `initialize` without a session: a new 2025-11-25 session.
    case openSession(message: JSONValue)
    /// A 2026-07-28 request whose envelope and headers passed every check.
    case modern(id: JSONValue, method: String, params: JSONValue, envelope: ModernEnvelope)
}

public enum HTTPRules {
    /// The route of a POST. `allowedOrigins` are admitted besides loopback ones.
    public static func classifyPost(
        headers: HTTPHeaderView, body: [UInt8], allowedOrigins: Set<String> = [], rejectsDuplicateKeys: Bool = true
    ) -> HTTPPostRoute {
        if let refusal = originRefusal(headers, allowedOrigins: allowedOrigins) { return refusal }
        if !accepts(headers, sse: false) { return .notAcceptable }
        let message: JSONValue
        do {
            message = try rejectsDuplicateKeys ? JSONValue.parseRejectingDuplicateKeys(Data(body)) : JSONValue.parse(Data(body))
        } catch {
            return .reply(status: 400, message: JSONRPC.error(id: nil, .parseError("\(error)")))
        }
        // A 2026-07-28 request is stateless: a session id it carries (a client that kept one) is ignored.
        if let version = headers[MCPHeader.protocolVersion], !ProtocolVersions.legacy.contains(version) {
            return modern(message, headers: headers)
        }
        if let sessionID = headers[MCPHeader.sessionID] { return .legacySession(id: sessionID, message: message) }
        if isModern(message, headers: headers) { return modern(message, headers: headers) }
        guard message["method"]?.stringValue == "initialize", let id = message["id"], JSONRPC.isValidID(id) else {
            return .reply(
                status: 400,
                message: JSONRPC.error(
                    id: message["id"].flatMap { JSONRPC.isValidID($0) ? $0 : nil },
                    .invalidRequest(
                        "no Mcp-Session-Id: begin with initialize (2025-11-25), or send 2026-07-28 requests with their _meta and MCP-Protocol-Version")))
        }
        return .openSession(message: message)
    }

    /// 2026-07-28: by header when there is one (a handshake-era value means legacy), else by the body's `_meta`.
    static func isModern(_ message: JSONValue, headers: HTTPHeaderView) -> Bool {
        if let version = headers[MCPHeader.protocolVersion] { return !ProtocolVersions.legacy.contains(version) }
        return (message["params"] ?? .null).hasModernEnvelope
    }

    private static func modern(_ message: JSONValue, headers: HTTPHeaderView) -> HTTPPostRoute {
        guard message.arrayValue == nil else {
            return .reply(status: 400, message: JSONRPC.error(id: nil, .invalidRequest("2026-07-28 has no batches: one message per POST")))
        }
        switch JSONRPCMessage.classify(message) {
        case .failure(let shape):
            return .reply(status: 400, message: JSONRPC.error(id: shape.id, shape.error))
        case .success(.notification):
            // 2026-07-28 defines no client notifications over HTTP (a request is cancelled by closing its stream):
            // accepted and dropped, as the spec allows, once the version is one we serve.
            if let version = headers[MCPHeader.protocolVersion], !ProtocolVersions.modern.contains(version) {
                return .reply(status: 400, message: JSONRPC.error(id: nil, .unsupportedProtocolVersion(.string(version))))
            }
            return .reply(status: 202, message: nil)
        case .success(.response), .success(.errorResponse):
            return .reply(status: 400, message: JSONRPC.error(id: nil, .invalidRequest("a 2026-07-28 server sends no requests to answer")))
        case .success(.request(let id, let method, let params)):
            if method == "initialize" {
                return .reply(status: 404, message: JSONRPC.error(id: id, .methodNotFound(method, "removed in 2026-07-28")))
            }
            switch ModernEnvelope.validate(method: method, params: params, headers: headers) {
            case .failure(let error):
                return .reply(status: error.httpStatus, message: JSONRPC.error(id: id, error))
            case .success(let envelope):
                if method == "subscriptions/listen", !accepts(headers, sse: true) { return .notAcceptable }
                return .modern(id: id, method: method, params: params, envelope: envelope)
            }
        }
    }

    /// DNS rebinding and cross-site requests: a browser always sends `Origin`; only loopback and configured origins
    /// pass (403 otherwise).
    public static func originRefusal(_ headers: HTTPHeaderView, allowedOrigins: Set<String>) -> HTTPPostRoute? {
        guard let origin = headers["origin"] else { return nil }
        if allowedOrigins.contains(origin) || isLoopbackOrigin(origin) { return nil }
        return .reply(status: 403, message: JSONRPC.error(id: nil, .invalidRequest("Origin \(origin) is not allowed")))
    }

    static func isLoopbackOrigin(_ origin: String) -> Bool {
        guard let components = URLComponents(string: origin), let host = components.host else { return false }
        return ["localhost", "127.0.0.1", "[::1]", "::1"].contains(host.lowercased())
    }

    /// Whether `Accept` admits JSON or SSE (`sse`: SSE itself). No header accepts everything.
    ///
    /// By media range (RFC 9110, 12.5.1): `text/event-stream`, `text/*` and `*/*` admit SSE, `application/json` and
    /// `application/*` JSON, in any letter case; a range with `q=0` admits nothing.
    ///
    /// Read on the header's bytes: every POST is checked, and the Foundation version of this (`trimmingCharacters`,
    /// `lowercased`, arrays of substrings) was a tenth of the server's CPU for a 2026-07-28 `server/discover` over
    /// HTTP. Whitespace around a range or parameter is HTTP's own (RFC 9110 OWS: space and tab).
    public static func accepts(_ headers: HTTPHeaderView, sse: Bool) -> Bool {
        guard var accept = headers["accept"] else { return !sse }
        return accept.withUTF8 { bytes in
            for element in bytes.split(separator: UInt8(ascii: ",")) {
                var parts = element.split(separator: UInt8(ascii: ";"))[...]
                guard let first = parts.popFirst() else { continue }
                if parts.contains(where: isZeroQuality) { continue }
                switch MediaRange(trimmed(first)) {
                case .anything: return true
                case .json: if !sse { return true }
                case .other: continue
                }
            }
            return false
        }
    }

    private enum MediaRange {
        case anything, json, other

        /// `*/*`, `text/*` and `text/event-stream` admit SSE (and so anything); `application/*` and
        /// `application/json` JSON only.
        init(_ range: Slice<UnsafeBufferPointer<UInt8>>) {
            if ASCII.equal(range, lowercase: "*/*") || ASCII.equal(range, lowercase: "text/*")
                || ASCII.equal(range, lowercase: "text/event-stream")
            {
                self = .anything
            } else if ASCII.equal(range, lowercase: "application/*")
                || ASCII.equal(range, lowercase: "application/json")
            {
                self = .json
            } else {
                self = .other
            }
        }
    }

    /// A `q` parameter whose value is a number equal to 0.
    private static func isZeroQuality(_ parameter: Slice<UnsafeBufferPointer<UInt8>>) -> Bool {
        let pair = parameter.split(separator: UInt8(ascii: "="), maxSplits: 1)
        guard pair.count == 2, ASCII.equal(trimmed(pair[0]), lowercase: "q") else { return false }
        return Double(String(decoding: trimmed(pair[1]), as: UTF8.self)) == 0
    }

    private static func trimmed(_ bytes: Slice<UnsafeBufferPointer<UInt8>>) -> Slice<UnsafeBufferPointer<UInt8>> {
        func isSpace(_ byte: UInt8) -> Bool { byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        var slice = bytes
        while let byte = slice.first, isSpace(byte) { slice.removeFirst() }
        while let byte = slice.last, isSpace(byte) { slice.removeLast() }
        return slice
    }
}
