import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Why a JSON-lines file could not be opened, or a line could not be appended to it.
public struct JSONLinesFileError: Error, CustomStringConvertible, Sendable {
    public enum Operation: Sendable { case open, append }
    public let path: String
    public let operation: Operation
    public let reason: String

    public init(path: String, operation: Operation, reason: String) {
        self.path = path
        self.operation = operation
        self.reason = reason
    }

    public var description: String {
        switch operation {
        case .open: "cannot open \(path) for appending: \(reason)"
        case .append: "cannot append to \(path): \(reason)"
        }
    }
}

/// A file that JSON values are appended to, one line each (the audit log, allcanuse-mock's call log).
///
/// Opened with `O_APPEND`, and each line goes out in one `write(2)`: lines from several threads, or several
/// processes sharing the file (proxies writing one audit log), land whole and never overwrite each other, which a
/// `FileHandle` positioned at the end once does not promise.
public final class JSONLinesFile: Sendable {
    private let descriptor: Int32
    private let path: String
    /// True when a write stopped partway (a full disk): the file then ends inside a line, and the next line starts
    /// with a line feed of its own so that it is not glued onto the fragment. Held across the check and the write,
    /// so that no concurrent line slips in bare. (Another process appending to the same file meanwhile can still
    /// land on the fragment; only this writer knows it left one.)
    private let endsInsideALine = Mutex(false)
    /// Creates the file (mode 0644) if it is missing.
    public init(appendingTo path: String) throws(JSONLinesFileError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw JSONLinesFileError(path: path, operation: .open, reason: String(cString: strerror(errno)))
        }
        descriptor = fd
        self.path = path
    }

    deinit { close(descriptor) }

    /// Appends `value` as one line.
    public func append(_ value: JSONValue) throws(JSONLinesFileError) {
        var line = Array(value.jsonString().utf8)
        line.append(0x0A)
        try append(line: line)
    }

    /// Appends `line`, which ends with its line feed (see `JSONObjectWriter.line()`). Throws when the line did not
    /// land whole (a full disk, an I/O error); the caller decides what that means (the audit trail refuses the call
    /// it could not record).
    public func append(line: [UInt8]) throws(JSONLinesFileError) {
        let failure = endsInsideALine.withLock { endsInsideALine -> Int32? in
            let bytes = endsInsideALine ? [0x0A] + line : line  // one write, so that the line still lands whole
            let (written, failure) = Self.writeAll(bytes, to: descriptor)
            switch written {
            case bytes.count:
                endsInsideALine = false
                return nil
            case bytes.count - 1 where bytes.last == 0x0A:
                // Only the line feed is missing: the line is there whole and reads as written, so it counts.
                endsInsideALine = true
                return nil
            case 0:
                return failure  // nothing landed: the file ends where it did
            default:
                endsInsideALine = true  // a fragment (at worst a blank line later, never a glued one)
                return failure
            }
        }
        if let failure {
            throw JSONLinesFileError(path: path, operation: .append, reason: String(cString: strerror(failure)))
        }
    }

    /// How many bytes landed, and the error that stopped the rest.
    private static func writeAll(_ bytes: [UInt8], to descriptor: Int32) -> (Int, Int32?) {
        bytes.withUnsafeBytes { bytes in
            guard let base = bytes.baseAddress else { return (0, nil) }
            var written = 0
            while written < bytes.count {
                let result = write(descriptor, base + written, bytes.count - written)
                if result < 0 && errno == EINTR { continue }
                // A regular file never writes 0 bytes of a non-empty buffer; if one did, it is an I/O error.
                if result <= 0 { return (written, result < 0 ? errno : EIO) }
                written += result
            }
            return (written, nil)
        }
    }
}
