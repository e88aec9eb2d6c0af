import CorralJSON
import Foundation
import MCPCore
import Synchronization
import WatchConditions

/// What the fuzz targets feed outside input to, with the invariants each must keep; the corpus replay tests call
/// the same functions, so that whatever the fuzzer found stays fixed.
public enum FuzzEntryPoints {
    /// An invariant broken by an input: the fuzz target traps on it, a test fails on it.
    public struct Violation: Error, CustomStringConvertible {
        public let description: String

        public init(description: String) { self.description = description }
    }

    /// What a condition watcher reads from outside: the first byte picks an HTTP response from any server (as
    /// bytes so far and as a closed connection), an `http://` URL a client gave, or a client's condition object for
    /// each condition type. Parsed results must be sane and stable: a URL prints as one that parses to itself, a
    /// condition's normalised form parses to the same condition.
    public static func watch(_ bytes: [UInt8]) throws(Violation) {
        guard let mode = bytes.first else { return }
        let rest = Array(bytes.dropFirst())
        switch mode % 3 {
        case 0:
            for (head, closed) in [(false, false), (false, true), (true, true)] {
                guard let response = HTTPResponseReading.read(rest, headRequest: head, peerClosed: closed) else { continue }
                guard (100...599).contains(response.status) else { throw Violation(description: "status \(response.status)") }
                guard response.body.count <= rest.count else { throw Violation(description: "a body longer than the input") }
            }
        case 1:
            let text = String(decoding: rest, as: UTF8.self)
            guard let target = try? HTTPTarget(text) else { return }
            guard let again = try? HTTPTarget(target.description), again == target else {
                throw Violation(description: "\(text) prints as \(target.description), which does not parse back to it")
            }
            guard (1...65535).contains(target.port), target.path.hasPrefix("/") else {
                throw Violation(description: "\(text) parsed to port \(target.port), path \(target.path)")
            }
        default:
            guard let fields = (try? JSONValue.parse(Data(rest)))?.objectValue else { return }
            for kind in WatchCondition.taskTypes {
                guard let condition = try? WatchCondition(kind: kind, fields: fields, context: "fuzz") else { continue }
                guard let normal = condition.jsonValue.objectValue,
                    let again = try? WatchCondition(kind: kind, fields: normal, context: "fuzz"), again == condition
                else { throw Violation(description: "\(kind): the normalised condition does not parse back to itself") }
            }
        }
    }

    /// An HTTP POST as text: `Name: value` header lines, an empty line, then the body. Its `Authorization` header
    /// is checked as `corral proxy --grants` checks it: only one header, `Bearer fuzz-token` (any case of the
    /// scheme), stands for the principal; every refusal carries a challenge.
    public static func httpPost(_ bytes: [UInt8]) throws(Violation) {
        let (headers, body) = split(bytes)
        switch BearerCheck.check(headers, with: FixedToken(), realm: "fuzz") {
        case .admitted(let principal):
            let values = headers.values("Authorization")
            let parts = values.first?.split(separator: " ", omittingEmptySubsequences: true) ?? []
            guard principal == "fuzz-principal", values.count == 1, parts.count == 2,
                parts[0].lowercased() == "bearer", parts[1] == "fuzz-token"
            else { throw Violation(description: "admitted \(principal ?? "nobody") for \(values)") }
        case .refused(let challenge, let message):
            guard challenge.hasPrefix("Bearer realm=\"fuzz\""), !message.isEmpty else {
                throw Violation(description: "a refusal with challenge \(challenge)")
            }
        }
        try checkAccepts(headers)
        let route = HTTPRules.classifyPost(headers: headers, body: body, allowedOrigins: ["https://allowed.example"])
        switch route {
        case .reply(let status, let message):
            guard [202, 400, 403, 404].contains(status) else { throw Violation(description: "status \(status)") }
            if let message { try checkError(message) }
            if status == 202, message != nil { throw Violation(description: "202 with a body") }
        case .modern(let id, let method, _, let envelope):
            guard JSONRPC.isValidID(id) else { throw Violation(description: "a modern request with id \(id)") }
            guard ProtocolVersions.modern.contains(envelope.protocolVersion),
                headers[MCPHeader.protocolVersion] == envelope.protocolVersion, headers[MCPHeader.method] == method
            else { throw Violation(description: "a modern request passed with headers that disagree with it") }
            guard method != "initialize" else { throw Violation(description: "initialize served as 2026-07-28") }
        case .openSession(let message):
            guard message["method"] == "initialize" else { throw Violation(description: "a session opened by \(message)") }
        case .legacySession, .notAcceptable:
            break
        }
    }

    /// Newline-separated messages on one stdio connection (the first request settles the era), served by a small
    /// core; every message written back must be a JSON-RPC message, and errors must carry a valid id or null.
    public static func stdio(_ bytes: [UInt8]) throws(Violation) {
        let written = Written()
        // A core of its own, so that listen streams end with the input, as a server's end at EOF (closeAll).
        let core = makeCore()
        let connection = StdioServerConnection(core: core, connectionID: "fuzz") { data in written.append(data) }
        for line in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
            connection.ingest(Data(line))
        }
        core.listeners.closeAll()
        // Every answer is in before the check (and no task outlives the input).
        let drained = DispatchSemaphore(value: 0)
        Task {
            await connection.waitUntilDrained(timeout: .seconds(5))
            drained.signal()
        }
        drained.wait()
        connection.endOfInput()
        for data in written.all {
            guard let message = try? JSONValue.parse(data) else { throw Violation(description: "wrote invalid JSON") }
            for element in message.arrayValue ?? [message] {
                guard element["jsonrpc"] == "2.0" else { throw Violation(description: "wrote \(element)") }
                if element["error"] != nil { try checkError(element) }
            }
        }
    }

    /// One text as a gatekeeper reads it (`corral proxy`): the skim of a message's top level, the strict parse that
    /// refuses repeated keys, and the one that refuses keys differing only in letter case too. What the stricter
    /// reading accepts, the laxer ones accept as the same value; no object it accepts has two keys that fold alike
    /// (`JSONKeyFolding`); a skim it returns agrees with the full parse on id and method, and names no routing
    /// member in another case.
    public static func gatekeeperJSON(_ bytes: [UInt8]) throws(Violation) {
        let data = Data(bytes)
        let lax = try? JSONValue.parse(data)
        let strict = try? JSONValue.parseRejectingDuplicateKeys(data)
        let strictest = try? JSONValue.parseRejectingAmbiguousKeys(data)
        if let strict, strict != lax { throw Violation(description: "strict parse \(strict) is not the lax one \(String(describing: lax))") }
        if let strictest {
            guard strictest == strict else { throw Violation(description: "the case-checking parse differs from the strict one") }
            try checkFoldedKeysDistinct(strictest)
        }
        try checkEraTextRewrites(data, parsed: lax)
        // The skim checks no more than brackets and strings below the top level: compared only where both read.
        guard let summary = JSONValue.summarizeMessage(data), let object = strict?.objectValue else { return }
        guard summary.id == object["id"], summary.method == object["method"]?.stringValue else {
            throw Violation(description: "summary \(summary) disagrees with \(object)")
        }
        for (key, span) in [("params", summary.paramsSpan), ("result", summary.resultSpan)] {
            let value = span.flatMap { span in data.withUnsafeBytes { try? JSONValue.parse(UnsafeRawBufferPointer(rebasing: $0[span])) } }
            guard value == object[key] else { throw Violation(description: "the summary's \(key) span reads \(String(describing: value))") }
        }
        let routing: Set<String> = ["jsonrpc", "id", "method", "params", "result", "error"]
        for key in object.keys where !routing.contains(key) && routing.contains(JSONKeyFolding.fold(key)) {
            throw Violation(description: "a summary of a message with member \(key)")
        }
    }

    /// The rewrites a proxy between the eras makes on a message's text say the same as the rewrites of the parsed
    /// message, wherever the text is JSON (they check no more than brackets and strings below what they change, as
    /// the skim does, so an invalid text is compared with nothing).
    /// A rewrite never makes a text that is not JSON into one that is, nor adds a repeated key to one without.
    static func checkEraTextRewrites(_ data: Data, parsed: JSONValue?) throws(Violation) {
        let server = ServerDescription(name: "fuzz", version: "1")
        var rewrites: [(String, Data, JSONValue?)] = []
        if let stripped = ModernEnvelope.strippedRequest(data) {
            let expected = parsed.map { $0.merging(["params": ModernEnvelope.strippedParams($0["params"])]) }
            rewrites.append(("strippedRequest", stripped, expected))
        }
        for method in ["tools/list", "tools/call"] {
            guard let stamped = server.stampedAnswer(data, method: method) else { continue }
            let expected = parsed.flatMap { parsed in parsed["result"].map { parsed.merging(["result": server.stamp($0, method: method)]) } }
            rewrites.append(("stampedAnswer \(method)", stamped, expected))
        }
        let withoutRepeats = (try? JSONValue.parseRejectingDuplicateKeys(data)) != nil
        for (name, rewritten, expected) in rewrites {
            let text = String(decoding: rewritten, as: UTF8.self)
            guard let expected else {
                if (try? JSONValue.parse(rewritten)) != nil { throw Violation(description: "\(name) made JSON of a text that was not: \(text)") }
                continue
            }
            guard let again = try? JSONValue.parse(rewritten), again == expected else {
                throw Violation(description: "\(name) wrote \(text), not \(expected)")
            }
            if withoutRepeats, (try? JSONValue.parseRejectingDuplicateKeys(rewritten)) == nil {
                throw Violation(description: "\(name) repeated a key: \(text)")
            }
        }
    }

    /// A time a client gives (`wait_until`'s timestamp, a sleep task's `wake_at`), read by `Timestamp.parse`. What
    /// it accepts is a real instant between years 1 and 9999 (an offset may move it a day past either end); what
    /// the fast path reads, the general parser reads as the same instant; and an instant in range, formatted and
    /// read back, is itself to the millisecond.
    public static func timestamp(_ bytes: [UInt8]) throws(Violation) {
        let text = String(decoding: bytes, as: UTF8.self)
        let fast = Timestamp.parseFormatted(text)
        guard let date = Timestamp.parse(text) else {
            if fast != nil { throw Violation(description: "\(text): the fast path read what parse refused") }
            return
        }
        let seconds = date.timeIntervalSince1970
        guard seconds.isFinite, seconds >= -62_135_596_800 - 86_400, seconds < 253_402_300_800 + 86_400 else {
            throw Violation(description: "\(text) read as \(seconds) s, outside years 1 to 9999")
        }
        func milliseconds(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded()) }
        if let fast, milliseconds(fast) != milliseconds(date) {
            throw Violation(description: "\(text): fast path \(fast) against \(date)")
        }
        guard let iso = Timestamp.parseISO8601(text), milliseconds(iso) == milliseconds(date) else {
            throw Violation(description: "\(text): the ISO 8601 parser disagrees with parse")
        }
        // `format` writes whole milliseconds, and years past 9999 by their last four digits: only instants that
        // round to a millisecond of years 1 to 9999 can read back.
        guard milliseconds(date) >= -62_135_596_800_000, milliseconds(date) < 253_402_300_800_000 else { return }
        let written = Timestamp.format(date)
        guard let again = Timestamp.parse(written), milliseconds(again) == milliseconds(date) else {
            throw Violation(description: "\(text) → \(written) does not read back as itself")
        }
    }

    private static func checkFoldedKeysDistinct(_ value: JSONValue) throws(Violation) {
        switch value {
        case .object(let object):
            let folded = Set(object.keys.map(JSONKeyFolding.fold))
            guard folded.count == object.count else { throw Violation(description: "keys that fold alike: \(object.keys.sorted())") }
            for member in object.values { try checkFoldedKeysDistinct(member) }
        case .array(let elements):
            for element in elements { try checkFoldedKeysDistinct(element) }
        default: break
        }
    }

    private static func checkError(_ message: JSONValue) throws(Violation) {
        guard message["jsonrpc"] == "2.0", let error = message["error"], error["code"]?.intValue != nil,
            error["message"]?.stringValue != nil
        else { throw Violation(description: "not a JSON-RPC error: \(message)") }
        guard let id = message["id"], id.isNull || JSONRPC.isValidID(id) else {
            throw Violation(description: "an error under id \(message["id"] ?? .null)")
        }
    }

    /// `HTTPRules.accepts` reads the header's bytes; on an ASCII header it must say what the Foundation reading it
    /// replaced says (kept here as the reference). Beyond ASCII they differ by design: only space and tab are
    /// HTTP's whitespace, and a comma or semicolon followed by a combining mark is not one Character there.
    private static func checkAccepts(_ headers: HTTPHeaderView) throws(Violation) {
        guard let accept = headers["accept"], accept.utf8.allSatisfy({ $0 < 0x80 }) else { return }
        for sse in [false, true] where HTTPRules.accepts(headers, sse: sse) != referenceAccepts(accept, sse: sse) {
            throw Violation(
                description: "Accept \(accept.debugDescription) (sse: \(sse)) read otherwise than the reference")
        }
    }

    private static func referenceAccepts(_ accept: String, sse: Bool) -> Bool {
        for element in accept.split(separator: ",") {
            let parts = element.split(separator: ";")
            guard let range = parts.first?.trimmingCharacters(in: .whitespaces).lowercased() else { continue }
            let refused = parts.dropFirst().contains { parameter in
                let pair = parameter.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                return pair.count == 2 && pair[0].lowercased() == "q" && (Double(pair[1]) ?? 1) == 0
            }
            if refused { continue }
            switch range {
            case "*/*", "text/*", "text/event-stream": return true
            case "application/*", "application/json": if !sse { return true }
            default: continue
            }
        }
        return false
    }

    private static func split(_ bytes: [UInt8]) -> (HTTPHeaderView, [UInt8]) {
        var pairs: [(name: String, value: String)] = []
        var index = 0
        while index < bytes.count {
            guard let end = bytes[index...].firstIndex(of: UInt8(ascii: "\n")) else { break }
            let line = bytes[index..<end]
            index = end + 1
            if line.isEmpty { break }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { continue }
            let name = String(decoding: line[line.startIndex..<colon], as: UTF8.self)
            let value = String(decoding: line[(colon + 1)...], as: UTF8.self).trimmingCharacters(in: .whitespaces)
            pairs.append((name, value))
        }
        return (HTTPHeaderView(pairs), Array(bytes[min(index, bytes.count)...]))
    }

    private static func makeCore() -> MCPServerCore {
        MCPServerCore(description: ServerDescription(name: "fuzz", version: "1")) { method, params, _ throws(JSONRPCError) in
            switch method {
            case "tools/list": return ["tools": [["name": "echo", "inputSchema": ["type": "object"]]]]
            case "tools/call": return ["content": [], "structuredContent": params["arguments"] ?? .null, "isError": false]
            default: throw .methodNotFound(method)
            }
        }
    }

    /// One token, one principal.
    private struct FixedToken: BearerAuthenticator {
        func principal(forToken token: String) -> String? { token == "fuzz-token" ? "fuzz-principal" : nil }
    }

    private final class Written: Sendable {
        private let messages = Mutex<[Data]>([])
        func append(_ data: Data) { messages.withLock { $0.append(data) } }
        var all: [Data] { messages.withLock { $0 } }
    }
}
