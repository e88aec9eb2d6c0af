#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Why a JSON-lines file could not be opened.
public struct JSONLinesFileError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let reason: String
    public var description: String { "cannot open \(path) for appending: \(reason)" }
}

/// A file that JSON values are appended to, one line each (the audit log, allcanuse-mock's call log).
///
/// Opened with `O_APPEND`, and each line goes out in one `write(2)`: lines from several threads, or several
/// processes sharing the file (proxies writing one audit log), land whole and never overwrite each other, which a
/// `FileHandle` positioned at the end once does not promise.
public final class JSONLinesFile: Sendable {
    private let descriptor: Int32

    /// Creates the file (mode 0644) if it is missing.
    public init(appendingTo path: String) throws(JSONLinesFileError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw JSONLinesFileError(path: path, reason: String(cString: strerror(errno))) }
        descriptor = fd
    }

    deinit { close(descriptor) }

    /// Appends `value` as one line. A failed write (a full disk) is not retried; the caller's work goes on.
    public func append(_ value: JSONValue) {
        var line = Array(value.jsonString().utf8)
        line.append(0x0A)
        append(line: line)
    }

    /// Appends `line`, which ends with its line feed (see `JSONObjectWriter.line()`).
    public func append(line: [UInt8]) {
        line.withUnsafeBytes { bytes in
            guard let base = bytes.baseAddress else { return }
            var written = 0
            while written < bytes.count {
                let result = write(descriptor, base + written, bytes.count - written)
                if result < 0 && errno == EINTR { continue }
                if result <= 0 { return }
                written += result
            }
        }
    }
}
