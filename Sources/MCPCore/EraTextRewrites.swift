import CorralJSON
import Foundation

// A proxy between a 2026-07-28 client and a 2025-11-25 server rewrites every request and every answer; these do it
// on the text, changing only what differs between the eras, and say when the parsed message must be rewritten
// instead.

extension ModernEnvelope {
    /// A request's params as 2025-11-25 sends them: without the 2026-07-28 `_meta` keys (a progress token and
    /// anything else stays).
    public static func strippedParams(_ params: JSONValue?) -> JSONValue {
        guard var object = params?.objectValue else { return params ?? [:] }
        if var meta = object["_meta"]?.objectValue {
            for key in meta.keys where key.hasPrefix("io.modelcontextprotocol/") { meta[key] = nil }
            object["_meta"] = meta.isEmpty ? nil : .object(meta)
        }
        return .object(object)
    }

    /// `strippedParams` done on a request's text: the `io.modelcontextprotocol/` members cut out of `params._meta`
    /// (the whole `_meta` when nothing else is left in it), the rest as the client wrote it. Parsing and rewriting
    /// each request for that was a tenth of what a proxied call cost. Values are checked no further than brackets
    /// and strings, as the proxy's skim of a message it forwards checks them. `summary`: the text's skim, when the
    /// caller has it. Nil when the text is not one message, or its `params` is missing, or `params` or its `_meta` is
    /// not an object or repeats: the caller rewrites the parsed request then.
    public static func strippedRequest(_ data: Data, summary: JSONMessageSummary? = nil) -> Data? {
        TextRewrite.withMembers(of: data, at: (summary ?? JSONValue.summarizeMessage(data))?.paramsSpan) {
            bytes, _, members -> Data? in
            var metaIndex: Int?
            for (index, member) in members.enumerated() where member.key == "_meta" {
                guard metaIndex == nil else { return nil }
                metaIndex = index
            }
            guard let index = metaIndex else { return data }
            let meta = members[index]
            guard let metaMembers = JSONValue.memberSpans(bytes, objectAt: meta.value.lowerBound)?.members else {
                return nil
            }
            var kept: [JSONMemberSpan] = []
            for member in metaMembers {
                guard member.key.hasPrefix("io.modelcontextprotocol/") else {
                    kept.append(member)
                    continue
                }
                // A member cut out must have been JSON: cutting a bad value out would make a text the server refuses
                // (and the parsed path sends on as it is) into one it runs.
                guard (try? JSONValue.parse(UnsafeRawBufferPointer(rebasing: bytes[member.value]))) != nil else { return nil }
            }
            if !kept.isEmpty && kept.count == metaMembers.count { return data }
            var legacy = TextRewrite(capacity: bytes.count)
            if !kept.isEmpty {
                // The members left, each as written (a repeated key keeps every copy, as a text passed through
                // untouched does; the parsed path kept the first).
                legacy.append(bytes, ..<meta.value.lowerBound)
                legacy.append("{")
                for (position, member) in kept.enumerated() {
                    if position > 0 { legacy.append(",") }
                    legacy.append(bytes, member.keyStart..<member.value.upperBound)
                }
                legacy.append("}")
                legacy.append(bytes, meta.value.upperBound...)
            } else if index + 1 < members.count {
                legacy.append(bytes, ..<meta.keyStart)  // the member and its comma go
                legacy.append(bytes, members[index + 1].keyStart...)
            } else if index > 0 {
                legacy.append(bytes, ..<members[index - 1].value.upperBound)  // the comma before it goes too
                legacy.append(bytes, meta.value.upperBound...)
            } else {
                legacy.append(bytes, ..<meta.keyStart)
                legacy.append(bytes, meta.value.upperBound...)
            }
            return legacy.data
        }
    }
}

extension ServerDescription {
    /// `stamp` done on an answer's text: the members it adds are written in after the result's `{`, and the rest
    /// passes as the server wrote it. A proxy in front of a 2025-11-25 server stamps every answer for its 2026-07-28
    /// clients, and parsing and rewriting the whole answer for that was a tenth of what a proxied call cost.
    ///
    /// Nil when the text is not one JSON-RPC answer with an object result, when the result already has a `_meta`
    /// (which `stamp` merges into), or when a key `stamp` looks at appears twice: the caller stamps the parsed answer
    /// then.
    public func stampedAnswer(_ line: Data, method: String) -> Data? {
        AnswerStamp(self).stamped(line, method: method)
    }
}

/// What `ServerDescription.stamp` adds to a result, as text made once: a proxy keeps one per server and stamps each
/// answer's text with it (`stamped`).
public struct AnswerStamp: Sendable {
    private let complete: [UInt8]
    private let ttl: [UInt8]
    private let scope: [UInt8]
    private let meta: [UInt8]

    public init(_ server: ServerDescription) {
        complete = Array(#""resultType":"complete""#.utf8)
        ttl = Array((#""ttlMs":"# + String(server.toolsListTTLMilliseconds)).utf8)
        scope = Array((#""cacheScope":"# + JSONValue.string(server.toolsListCacheScope).jsonString()).utf8)
        let serverInfo = JSONValue.string(MetaKey.serverInfo).jsonString() + ":" + server.serverInfo.jsonString()
        meta = Array((#""_meta":{"# + serverInfo + "}").utf8)
    }

    /// `ServerDescription.stampedAnswer`; `summary`: the line's skim, when the caller has it.
    public func stamped(_ line: Data, method: String, summary: JSONMessageSummary? = nil) -> Data? {
        TextRewrite.withMembers(of: line, at: (summary ?? JSONValue.summarizeMessage(line))?.resultSpan) {
            bytes, result, inner -> Data? in
            var resultType: JSONValue?
            var hasTTL = false
            var hasScope = false
            for member in inner {
                switch member.key {
                case "_meta": return nil
                case "resultType":
                    guard resultType == nil,
                        let value = try? JSONValue.parse(UnsafeRawBufferPointer(rebasing: bytes[member.value]))
                    else { return nil }
                    resultType = value
                case "ttlMs":
                    guard !hasTTL else { return nil }
                    hasTTL = true
                case "cacheScope":
                    guard !hasScope else { return nil }
                    hasScope = true
                default: continue
                }
            }
            // The same members, under the same conditions, as `stamp`.
            var stamped = TextRewrite(capacity: bytes.count + meta.count + 64)
            stamped.append(bytes, ...result.lowerBound)
            if resultType == nil { stamped.append(complete, then: ",") }
            if method == "tools/list", resultType == nil || resultType?.stringValue == "complete" {
                if !hasTTL { stamped.append(ttl, then: ",") }
                if !hasScope { stamped.append(scope, then: ",") }
            }
            stamped.append(meta, then: inner.isEmpty ? nil : ",")
            stamped.append(bytes, (result.lowerBound + 1)...)
            return stamped.data
        }
    }
}

/// A message's text put together from pieces of another and a few of its own, byte by byte into one buffer (a
/// `Data` appended to from strings went through a dynamic cast per piece).
struct TextRewrite {
    private var bytes: [UInt8] = []

    init(capacity: Int) { bytes.reserveCapacity(capacity) }

    /// `body` over the members of the object that lies at `span` in `text` (a skim's `params` or `result`), with
    /// the text's bytes; nil without a span or when its value is not an object.
    static func withMembers(
        of text: Data, at span: Range<Int>?,
        _ body: (UnsafeRawBufferPointer, Range<Int>, [JSONMemberSpan]) -> Data?
    ) -> Data? {
        guard let span else { return nil }
        return text.withUnsafeBytes { bytes in
            guard let members = JSONValue.memberSpans(bytes, objectAt: span.lowerBound)?.members else { return nil }
            return body(bytes, span, members)
        }
    }

    var data: Data { Data(bytes) }

    mutating func append(_ text: StaticString) {
        text.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    mutating func append(_ piece: [UInt8], then separator: StaticString? = nil) {
        bytes.append(contentsOf: piece)
        if let separator { append(separator) }
    }

    mutating func append<Span: RangeExpression<Int>>(_ source: UnsafeRawBufferPointer, _ span: Span) {
        bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: source[span.relative(to: 0..<source.count)]))
    }
}
