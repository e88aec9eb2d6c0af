import CorralJSON
import Glibc

/// `wait_file` / `wait_for_file`: a path exists (optionally with a size and a text) or is missing.
public struct FileCondition: Sendable, Equatable {
    public enum State: String, Sendable, CaseIterable { case exists, missing }
    /// The text encodings `text_contains` is matched in (the file is decoded, undecodable bytes replaced).
    public enum Encoding: String, Sendable, CaseIterable {
        case utf8 = "utf-8", ascii, latin1 = "latin-1"
    }

    public var path: String
    public var state: State
    public var minimumSize: Int?
    public var textContains: String?
    public var encoding: Encoding

    /// Files are read for `text_contains` up to this size; a larger file is matched on its first bytes only.
    public static let textReadLimit = 64 << 20

    static let fields: Set<String> = ["path", "state", "min_size_bytes", "text_contains", "encoding"]

    init(_ reader: FieldReader) throws(ConditionError) {
        try reader.allowOnly(Self.fields)
        path = try reader.string("path")
        guard path.hasPrefix("/") else { throw reader.error("path must be absolute, got \(path)") }
        state = try reader.choice("state", default: State.exists)
        minimumSize = try reader.optionalInt("min_size_bytes")
        if let minimumSize, minimumSize < 0 { throw reader.error("min_size_bytes must not be negative") }
        textContains = try reader.optionalString("text_contains")
        let encodingName = (try reader.optionalString("encoding") ?? "utf-8").lowercased()
        let aliases: [String: Encoding] = [
            "utf-8": .utf8, "utf8": .utf8, "ascii": .ascii, "us-ascii": .ascii, "latin-1": .latin1, "latin1": .latin1,
            "iso-8859-1": .latin1,
        ]
        guard let encoding = aliases[encodingName] else {
            throw reader.error("encoding must be one of utf-8, ascii, latin-1, got \(encodingName)")
        }
        self.encoding = encoding
    }

    var jsonValue: JSONValue {
        [
            "path": .string(path), "state": .string(state.rawValue), "min_size_bytes": minimumSize.json,
            "text_contains": textContains.json, "encoding": .string(encoding.rawValue),
        ]
    }

    /// One check, as the watcher's user: a path it cannot see is reported with the error, not guessed at.
    public func check() -> CheckResult {
        var info = stat()
        let found = stat(path, &info) == 0
        let code = errno
        var result: [String: JSONValue] = [
            "path": .string(path), "state": .string(state.rawValue), "exists": .bool(found),
            "is_file": .bool(found && (info.st_mode & S_IFMT) == S_IFREG),
            "size_bytes": found && (info.st_mode & S_IFMT) == S_IFREG ? .int(Int(info.st_size)) : .null, "text_match": .null,
        ]
        if !found && code != ENOENT && code != ENOTDIR {
            result["error"] = .string("stat: \(String(cString: strerror(code)))")
        }
        switch state {
        case .missing:
            return CheckResult(conditionMet: !found && (code == ENOENT || code == ENOTDIR), lastResult: result)
        case .exists:
            let isFile = found && (info.st_mode & S_IFMT) == S_IFREG
            var met = found
            if let minimumSize { met = met && isFile && Int(info.st_size) >= minimumSize }
            if met, let textContains {
                let match = isFile ? contains(textContains) : false
                result["text_match"] = .bool(match)
                met = met && match
            }
            return CheckResult(conditionMet: met, lastResult: result)
        }
    }

    private func contains(_ needle: String) -> Bool {
        if needle.isEmpty { return true }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while bytes.count < Self.textReadLimit {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            bytes += chunk[0..<count]
        }
        let text: String
        switch encoding {
        case .utf8, .ascii: text = String(decoding: bytes, as: UTF8.self)
        case .latin1: text = String(String.UnicodeScalarView(bytes.map { Unicode.Scalar($0) }))
        }
        return text.contains(needle)
    }

    /// Where inotify should look: the nearest existing directory on the way to the path (its parent once that
    /// exists, which also reports writes to the file itself).
    public var watchedDirectory: String {
        var directory = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
        while true {
            if directory.isEmpty { return "/" }
            var info = stat()
            if stat(directory, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR { return directory }
            directory = String(directory[..<(directory.lastIndex(of: "/") ?? directory.startIndex)])
        }
    }
}
