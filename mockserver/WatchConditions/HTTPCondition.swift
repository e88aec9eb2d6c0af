import CorralJSON
import Glibc

/// `wait_http` / `wait_for_http`: a URL answers with one of the expected statuses (and, optionally, a text).
///
/// The request is plain HTTP/1.1 written here: the watcher must stay a small process (a thousand of them may run at
/// once), and the HTTP clients at hand (AsyncHTTPClient on NIO, URLSession on libcurl) would each bring a runtime of
/// their own into every watcher. No TLS, so `https://` is refused when the condition is made, with that reason.
public struct HTTPCondition: Sendable, Equatable {
    public var url: String
    public var target: HTTPTarget
    public var expectedStatuses: [Int]
    public var method: String
    public var headers: [String: String]
    public var body: String?
    public var requestTimeoutMilliseconds: Int
    public var textContains: String?

    static let fields: Set<String> = [
        "url", "expected_statuses", "method", "headers", "body", "request_timeout_ms", "text_contains",
    ]
    static let redirectLimit = 5
    static let bodyLimit = 8 << 20

    init(_ reader: FieldReader) throws(ConditionError) {
        try reader.allowOnly(Self.fields)
        url = try reader.string("url")
        do {
            target = try HTTPTarget(url)
        } catch {
            throw reader.error(error.message)
        }
        expectedStatuses = try reader.optionalInts("expected_statuses") ?? [200]
        guard !expectedStatuses.isEmpty else { throw reader.error("expected_statuses must not be empty") }
        if let bad = expectedStatuses.first(where: { !(100...599).contains($0) }) {
            throw reader.error("expected_statuses must be HTTP statuses (100-599), got \(bad)")
        }
        method = (try reader.optionalString("method") ?? "GET").uppercased()
        let token = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~")
        guard !method.isEmpty, method.allSatisfy(token.contains) else {
            throw reader.error("method must be an HTTP method such as GET or POST, got \(method)")
        }
        var headers: [String: String] = [:]
        for (name, value) in try reader.optionalObject("headers") ?? [:] {
            guard let text = value.stringValue else { throw reader.error("headers.\(name) must be a string, got \(value.typeName)") }
            guard !name.isEmpty, name.allSatisfy({ token.contains(Character($0.uppercased())) }),
                !text.contains("\r"), !text.contains("\n")
            else { throw reader.error("headers.\(name) is not a valid header") }
            headers[name] = text
        }
        self.headers = headers
        body = try reader.optionalString("body")
        requestTimeoutMilliseconds = try reader.positiveInt("request_timeout_ms", default: 5000)
        textContains = try reader.optionalString("text_contains")
    }

    var jsonValue: JSONValue {
        [
            "url": .string(url), "expected_statuses": .array(expectedStatuses.map(JSONValue.int)),
            "method": .string(method), "headers": .object(headers.mapValues(JSONValue.string)), "body": body.json,
            "request_timeout_ms": .int(requestTimeoutMilliseconds), "text_contains": textContains.json,
        ]
    }

    public func check() -> CheckResult {
        var result: [String: JSONValue] = [
            "url": .string(url), "final_url": .string(url), "method": .string(method), "status": .null,
            "reason": "", "expected_statuses": .array(expectedStatuses.map(JSONValue.int)), "text_match": .null,
            "error": "",
        ]
        var current = target
        var method = self.method
        var body = self.body
        for _ in 0...Self.redirectLimit {
            let response: HTTPResponse
            switch HTTPExchange.send(
                method: method, target: current, headers: headers, body: body,
                timeoutMilliseconds: requestTimeoutMilliseconds, bodyLimit: Self.bodyLimit)
            {
            case .failure(let failure):
                result["error"] = .string(failure.message)
                return CheckResult(conditionMet: false, lastResult: result)
            case .success(let value): response = value
            }
            result["final_url"] = .string(current.description)
            result["status"] = .int(response.status)
            result["reason"] = .string(response.reason)
            if [301, 302, 303, 307, 308].contains(response.status), let location = response.header("location"),
                let next = try? current.resolving(location)
            {
                if response.status == 303 || ((response.status == 301 || response.status == 302) && method == "POST") {
                    method = "GET"
                    body = nil
                }
                current = next
                continue
            }
            var met = expectedStatuses.contains(response.status)
            if met, let textContains {
                let match = textContains.isEmpty || String(decoding: response.body, as: UTF8.self).contains(textContains)
                result["text_match"] = .bool(match)
                met = met && match
            }
            return CheckResult(conditionMet: met, lastResult: result)
        }
        result["error"] = .string("more than \(Self.redirectLimit) redirects")
        return CheckResult(conditionMet: false, lastResult: result)
    }
}

/// An `http://` URL taken apart.
public struct HTTPTarget: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    /// Path and query, starting with "/".
    public var path: String

    public struct Invalid: Error, Sendable { public var message: String }

    public init(_ url: String) throws(Invalid) {
        let lower = url.lowercased()
        if lower.hasPrefix("https://") {
            throw Invalid(message: "url must be an http:// URL: the mock's watcher speaks plain HTTP/1.1 and no TLS, got \(url)")
        }
        guard lower.hasPrefix("http://") else { throw Invalid(message: "url must start with http://, got \(url)") }
        let rest = url.dropFirst("http://".count)
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex
        let authority = String(rest[..<authorityEnd])
        var pathPart = String(rest[authorityEnd...])
        if let hash = pathPart.firstIndex(of: "#") { pathPart = String(pathPart[..<hash]) }
        if pathPart.isEmpty || pathPart.hasPrefix("?") { pathPart = "/" + pathPart }
        guard !authority.isEmpty, !authority.contains("@") else {
            throw Invalid(message: "url must name a host (and no user info), got \(url)")
        }
        var hostPart = authority
        var port = 80
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw Invalid(message: "url has a bad IPv6 host: \(url)") }
            hostPart = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") {
                guard let number = Int(after.dropFirst()), (1...65535).contains(number) else {
                    throw Invalid(message: "url has a bad port: \(url)")
                }
                port = number
            }
        } else if let colon = authority.lastIndex(of: ":") {
            hostPart = String(authority[..<colon])
            guard let number = Int(authority[authority.index(after: colon)...]), (1...65535).contains(number) else {
                throw Invalid(message: "url has a bad port: \(url)")
            }
            port = number
        }
        guard !hostPart.isEmpty else { throw Invalid(message: "url must name a host, got \(url)") }
        // A name or IPv4 address, or (only in brackets) an IPv6 address: nothing that would print differently.
        let nameCharacters = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_~")
        let addressCharacters = Set("0123456789abcdefABCDEF:.")
        let valid = authority.hasPrefix("[")
            ? hostPart.contains(":") && hostPart.allSatisfy(addressCharacters.contains)
            : hostPart.allSatisfy(nameCharacters.contains)
        guard valid else { throw Invalid(message: "url has a bad host \(hostPart): \(url)") }
        guard pathPart.allSatisfy({ $0.isASCII && !$0.isWhitespace }) else {
            throw Invalid(message: "url must be percent-encoded (no spaces or non-ASCII characters), got \(url)")
        }
        self.host = hostPart
        self.port = port
        self.path = pathPart
    }

    public var description: String {
        let shownHost = host.contains(":") ? "[\(host)]" : host
        return "http://\(shownHost)\(port == 80 ? "" : ":\(port)")\(path)"
    }

    /// A redirect's `Location`, absolute or relative to this URL.
    func resolving(_ location: String) throws(Invalid) -> HTTPTarget {
        if location.lowercased().hasPrefix("http://") || location.lowercased().hasPrefix("https://") {
            return try HTTPTarget(location)
        }
        var next = self
        if location.hasPrefix("/") {
            next.path = location
        } else {
            let base = path.split(separator: "?", maxSplits: 1).first.map(String.init) ?? "/"
            next.path = String(base[...(base.lastIndex(of: "/") ?? base.startIndex)]) + location
        }
        return next
    }
}
