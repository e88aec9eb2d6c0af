import CCorral
import Foundation
import Synchronization

/// Ignores SIGPIPE in the whole process, for a server's `main` (a library must not): a closed reader is then only an
/// EPIPE, and lines are written without blocking SIGPIPE around each write (three system calls fewer per answer).
public func ignoreSIGPIPEProcessWide() {
    corral_ignore_sigpipe()
}

/// Writes one message and a newline with a single write, so concurrent writers never interleave inside a line.
/// Returns false when the reader is gone (EPIPE) or the write failed; SIGPIPE is never raised (see
/// `corral_write_all_nosigpipe`).
@discardableResult
public func writeLine(_ message: Data, to fd: Int32) -> Bool {
    message.withUnsafeBytes { bytes in
        writeWithNewline([iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)], to: fd)
    }
}

/// Writes the pieces of one message and a newline with a single `writev`: an answer assembled around a cached
/// body (a 95 KB `tools/list`) leaves without being copied together, or copied again to add its newline.
@discardableResult
public func writeLine(_ pieces: [String], to fd: Int32) -> Bool {
    var vectors: [iovec] = []
    vectors.reserveCapacity(pieces.count + 1)
    return withVectors(of: pieces, from: 0, into: &vectors) { writeWithNewline($0, to: fd) }
}

/// Each piece's UTF-8 stays valid while `body` runs: the pieces are opened one inside the other.
private func withVectors(
    of pieces: [String], from index: Int, into vectors: inout [iovec], _ body: ([iovec]) -> Bool
) -> Bool {
    guard index < pieces.count else { return body(vectors) }
    var piece = pieces[index]
    return piece.withUTF8 { bytes in
        vectors.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count))
        return withVectors(of: pieces, from: index + 1, into: &vectors, body)
    }
}

private func writeWithNewline(_ vectors: [iovec], to fd: Int32) -> Bool {
    var newline = UInt8(ascii: "\n")
    return withUnsafeMutablePointer(to: &newline) { newline in
        var all = vectors
        all.append(iovec(iov_base: UnsafeMutableRawPointer(newline), iov_len: 1))
        return all.withUnsafeMutableBufferPointer { buffer in
            corral_writev_all_nosigpipe(fd, buffer.baseAddress, Int32(buffer.count)) == 0
        }
    }
}

/// Splits a byte stream into lines, with blocking reads on the caller's (dedicated) thread.
public enum LineReader {
    public static func readLines(from handle: FileHandle, _ body: (Data) -> Void) {
        readLines(from: handle.fileDescriptor, body)
    }

    /// Reads `fd` to its end, calling `body` with each line (without its newline; a last line without one too).
    /// Raw `read(2)` into one buffer and `memchr` for line ends: `FileHandle.availableData` plus `Data` slicing
    /// spent most of the proxy's time per message in allocation and exclusivity checks.
    public static func readLines(from fd: Int32, _ body: (Data) -> Void) {
        var splitter = LineSplitter()
        while splitter.read(from: fd, body) {}
        splitter.finish(body)
    }
}

/// The lines of a byte stream read in chunks: what a read loop keeps between two reads.
public struct LineSplitter: ~Copyable {
    private static let capacity = 1 << 16
    private let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: LineSplitter.capacity, alignment: 1)
    private var pending = Data()  // the start of a line that continues in the next read

    public init() {}

    deinit { chunk.deallocate() }

    /// One `read(2)` of `fd`, calling `body` with each line it completed. False at the end of input (or an error).
    public mutating func read(from fd: Int32, _ body: (Data) -> Void) -> Bool {
        guard let base = chunk.baseAddress else { return false }
        var count = 0
        repeat { count = Glibc.read(fd, base, Self.capacity) } while count < 0 && errno == EINTR
        if count <= 0 { return false }
        var start = 0
        while start < count, let newline = memchr(base + start, 0x0A, count - start) {
            let end = base.distance(to: newline)
            if pending.isEmpty {
                if end > start { body(Data(bytes: base + start, count: end - start)) }
            } else {
                pending.append(base.assumingMemoryBound(to: UInt8.self) + start, count: end - start)
                body(pending)
                pending = Data()
            }
            start = end + 1
        }
        if start < count { pending.append(base.assumingMemoryBound(to: UInt8.self) + start, count: count - start) }
        return true
    }

    /// The last line, when the input ended without a newline.
    public mutating func finish(_ body: (Data) -> Void) {
        if !pending.isEmpty { body(pending) }
        pending = Data()
    }
}

extension LineReader {
    /// The lines of `fd` as an async sequence, read by a thread of their own: for consumers that must await
    /// between lines (a decision that asks a shared store) and still take them one at a time, in order. At most
    /// `backlog` lines wait unconsumed; then the reading thread stops reading, so a client that floods a slow
    /// gateway fills its own pipe, not the gateway's memory.
    public static func lines(from fd: Int32, backlog: Int = 256) -> BoundedLines {
        BoundedLines(fd: fd, backlog: max(1, backlog))
    }
}

public struct BoundedLines: AsyncSequence, Sendable {
    public typealias Element = Data

    fileprivate final class Gate: Sendable {
        let waiting = Atomic<Int>(0)
        let room = DispatchSemaphore(value: 0)
    }

    private let stream: AsyncStream<Data>
    private let gate: Gate
    private let backlog: Int

    init(fd: Int32, backlog: Int) {
        let gate = Gate()
        let (stream, continuation) = AsyncStream.makeStream(of: Data.self)
        self.stream = stream
        self.gate = gate
        self.backlog = backlog
        let reader = Thread {
            LineReader.readLines(from: fd) { line in
                continuation.yield(line)
                if gate.waiting.add(1, ordering: .acquiringAndReleasing).newValue > backlog { gate.room.wait() }
            }
            continuation.finish()
        }
        reader.start()
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncStream<Data>.Iterator
        fileprivate let gate: Gate
        let backlog: Int

        public mutating func next() async -> Data? {
            guard let line = await base.next() else { return nil }
            // The reader waits only after taking a line past the backlog; each of those is let go once.
            if gate.waiting.subtract(1, ordering: .acquiringAndReleasing).oldValue > backlog { gate.room.signal() }
            return line
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: stream.makeAsyncIterator(), gate: gate, backlog: backlog)
    }
}
