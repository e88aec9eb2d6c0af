import Foundation

/// Where a PostgreSQL policy store lives: `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=disable|prefer|require]`
/// (`postgresql://` too). User and password may be percent-encoded; the password is never printed.
public struct PostgresLocation: Sendable, Hashable, CustomStringConvertible {
    public enum TLSMode: String, Sendable, Hashable, CaseIterable {
        case disable, prefer, require
    }

    public let user: String
    public let password: String?
    public let host: String
    public let port: Int
    public private(set) var database: String
    public let tls: TLSMode

    public struct ParseError: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    public init(url text: String) throws(ParseError) {
        func fail(_ why: String) -> ParseError {
            ParseError(description: "\(Self.redacted(text)) is not a PostgreSQL URL: \(why) (expected postgres://USER[:PASSWORD]@HOST[:PORT]/DB)")
        }
        guard let schemeEnd = text.range(of: "://") else { throw fail("no scheme") }
        let scheme = text[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "postgres" || scheme == "postgresql" else { throw fail("the scheme is \(scheme), not postgres") }
        var rest = Substring(text[schemeEnd.upperBound...])
        var query: Substring = ""
        if let mark = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: mark)...]
            rest = rest[..<mark]
        }
        guard let at = rest.lastIndex(of: "@") else { throw fail("no USER@ before the host") }
        let credentials = rest[..<at]
        let location = rest[rest.index(after: at)...]
        let userPart: Substring
        var password: String?
        if let colon = credentials.firstIndex(of: ":") {
            userPart = credentials[..<colon]
            guard let decoded = String(credentials[credentials.index(after: colon)...]).removingPercentEncoding else {
                throw fail("the password is not valid percent-encoding")
            }
            password = decoded
        } else {
            userPart = credentials
        }
        guard let user = String(userPart).removingPercentEncoding, !user.isEmpty else { throw fail("no user name") }
        guard let slash = location.firstIndex(of: "/") else { throw fail("no /DB after the host") }
        let database = String(location[location.index(after: slash)...])
        guard !database.isEmpty, !database.contains("/") else { throw fail("no database name after the host") }
        let hostPort = location[..<slash]
        var host = String(hostPort)
        var port = 5432
        if hostPort.hasPrefix("[") {  // [IPv6]:port
            guard let close = hostPort.firstIndex(of: "]") else { throw fail("an IPv6 host without its ]") }
            host = String(hostPort[hostPort.index(after: hostPort.startIndex)..<close])
            let after = hostPort[hostPort.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":"), let number = Int(after.dropFirst()) else { throw fail("a bad port") }
                port = number
            }
        } else if let colon = hostPort.lastIndex(of: ":") {
            host = String(hostPort[..<colon])
            guard let number = Int(hostPort[hostPort.index(after: colon)...]) else { throw fail("the port is not a number") }
            port = number
        }
        guard !host.isEmpty else { throw fail("no host") }
        guard (1...65535).contains(port) else { throw fail("the port \(port) is not in 1–65535") }
        var tls = TLSMode.prefer
        for pair in query.split(separator: "&") where !pair.isEmpty {
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, parts[0] == "sslmode" else { throw fail("unknown parameter \(parts[0]) (only sslmode is read)") }
            guard let mode = TLSMode(rawValue: parts[1]) else {
                throw fail("sslmode must be \(TLSMode.allCases.map(\.rawValue).joined(separator: ", ")), not \(parts[1])")
            }
            tls = mode
        }
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.database = database
        self.tls = tls
    }

    /// The same server and login, another database.
    public func replacingDatabase(_ name: String) -> PostgresLocation {
        var copy = self
        copy.database = name
        return copy
    }

    /// The URL without its password.
    public var description: String {
        "postgres://\(user)\(password == nil ? "" : ":***")@\(host.contains(":") ? "[\(host)]" : host):\(port)/\(database)"
    }

    /// `text` with anything between `:` and `@` of its credentials masked, for error messages.
    public static func redacted(_ text: String) -> String {
        guard let schemeEnd = text.range(of: "://"), let at = text[schemeEnd.upperBound...].lastIndex(of: "@"),
            let colon = text[schemeEnd.upperBound..<at].firstIndex(of: ":")
        else { return text }
        return String(text[..<text.index(after: colon)]) + "***" + String(text[at...])
    }
}
