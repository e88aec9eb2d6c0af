import Foundation
import Glibc
import Synchronization

/// Which output stream of a task.
public enum OutputStream: String, Sendable, CaseIterable, Codable {
    case stdout, stderr
}

/// The on-disk layout of one stream, bounded by `limit` bytes: the first `limit/2` bytes in `NAME.head`, then the
/// rest in segments of `limit/4` bytes named by their offset in the stream (`NAME.tail.OFFSET`), of which the newest
/// two are kept. The total is therefore always recoverable from the files alone, also after a crash.
struct OutputLayout {
    let directory: String
    let stream: OutputStream
    let limit: Int

    var headLimit: Int64 { Int64(limit / 2) }
    var segmentSize: Int64 { Int64(limit / 4) }
    var headPath: String { "\(directory)/\(stream.rawValue).head" }
    var segmentPrefix: String { "\(stream.rawValue).tail." }

    func segmentPath(start: Int64) -> String { "\(directory)/\(segmentPrefix)\(start)" }

    /// Creates both streams' head files, empty, in a task directory made ahead of its task: creating a file on ext4
    /// took the reactor 120 µs at a task's first output, on the CPU the task was running on.
    static func createEmptyHeads(in directory: String) throws(RuntimeError) {
        for stream in OutputStream.allCases {
            let path = OutputLayout(directory: directory, stream: stream, limit: 0).headPath
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard fd >= 0 else { throw RuntimeError.system("create \(path)", errno) }
            close(fd)
        }
    }

    /// The tail segments on disk with their start offsets, oldest first.
    func segments() -> [(start: Int64, path: String)] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return [] }
        return names.compactMap { name -> (Int64, String)? in
            guard name.hasPrefix(segmentPrefix), let start = Int64(name.dropFirst(segmentPrefix.count)) else {
                return nil
            }
            return (start, "\(directory)/\(name)")
        }.sorted { $0.0 < $1.0 }
    }
}

/// Writes one stream of a running task.
///
/// A file that a write failed on (a full disk, no descriptor left) is written no more: the files stay exact prefixes
/// of their ranges of the stream, and what could not be kept reads as a gap (dropped bytes), never as bytes at the
/// wrong offset, which `O_APPEND` onto a shorter file would give once there is room again.
///
/// `@unchecked Sendable`: everything but `total` and `loss` is touched only on the reactor thread; those two are read
/// elsewhere (a live task's sizes, its end).
final class StreamWriter: @unchecked Sendable {
    private let layout: OutputLayout
    private var headFD: Int32 = -1
    private var segmentFD: Int32 = -1
    /// The file being written failed: skip the rest of its range.
    private var headBroken = false
    private var segmentBroken = false
    private var segmentStart: Int64 = 0
    private var previousSegmentStart: Int64?
    private var written: Int64 = 0
    private let publishedTotal = Atomic<Int64>(0)
    private let lost = Mutex(OutputLoss(bytes: 0, error: 0))

    /// Bytes received so far (kept or dropped).
    var total: Int64 { publishedTotal.load(ordering: .relaxed) }

    /// Bytes the task wrote that could not be kept because of an error (not the output limit), and the first error.
    var loss: OutputLoss { lost.withLock { $0 } }

    init(layout: OutputLayout) {
        self.layout = layout
    }

    func append(_ bytes: UnsafeRawBufferPointer) {
        defer { publishedTotal.store(written, ordering: .relaxed) }
        guard let base = bytes.baseAddress else { return }
        var offset = 0
        while offset < bytes.count {
            let remaining = bytes.count - offset
            if written < layout.headLimit {
                let count = min(remaining, Int(layout.headLimit - written))
                if headFD < 0 && !headBroken { headFD = openForAppend(layout.headPath, broken: &headBroken) }
                keep(base + offset, count, in: headFD, broken: &headBroken)
                offset += count
                written += Int64(count)
                continue
            }
            guard layout.segmentSize > 0 else {
                written += Int64(remaining)  // nothing is kept beyond the head
                return
            }
            if (segmentFD < 0 && !segmentBroken) || written - segmentStart >= layout.segmentSize {
                startSegment()
            }
            let count = min(remaining, Int(layout.segmentSize - (written - segmentStart)))
            keep(base + offset, count, in: segmentFD, broken: &segmentBroken)
            offset += count
            written += Int64(count)
        }
    }

    func close() {
        if headFD >= 0 { Glibc.close(headFD) }
        if segmentFD >= 0 { Glibc.close(segmentFD) }
        headFD = -1
        segmentFD = -1
    }

    private func startSegment() {
        if segmentFD >= 0 { Glibc.close(segmentFD) }
        if segmentFD >= 0 || segmentBroken {
            if let previous = previousSegmentStart { unlink(layout.segmentPath(start: previous)) }
            previousSegmentStart = segmentStart
        }
        segmentStart = written
        segmentBroken = false
        segmentFD = openForAppend(layout.segmentPath(start: segmentStart), broken: &segmentBroken)
    }

    private func openForAppend(_ path: String, broken: inout Bool) -> Int32 {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        if fd < 0 {
            broken = true
            noteLoss(0, errno)
        }
        return fd
    }

    /// Writes `count` bytes to `fd`, unless the file failed before; counts what does not land.
    private func keep(_ pointer: UnsafeRawPointer, _ count: Int, in fd: Int32, broken: inout Bool) {
        guard fd >= 0, !broken else { return noteLoss(count, 0) }
        var done = 0
        while done < count {
            let result = write(fd, pointer + done, count - done)
            if result < 0 && errno == EINTR { continue }
            if result <= 0 {
                broken = true
                return noteLoss(count - done, result < 0 ? errno : EIO)
            }
            done += result
        }
    }

    private func noteLoss(_ bytes: Int, _ error: Int32) {
        lost.withLock { loss in
            loss.bytes += Int64(bytes)
            if loss.error == 0 { loss.error = error }
        }
    }
}

/// Output a task wrote that could not be kept because of an error: how many bytes, and the first `errno`.
struct OutputLoss: Sendable, Equatable {
    var bytes: Int64
    var error: Int32
}

/// A piece of a task's output, read back from disk.
public struct OutputChunk: Sendable, Equatable {
    public var stream: OutputStream
    public var bytes: [UInt8]
    /// Offset of `bytes` in the whole stream.
    public var offset: Int64
    /// Bytes the task wrote to this stream in all.
    public var totalBytes: Int64
    /// Bytes not kept because of the output limit.
    public var droppedBytes: Int64
    /// Part of the requested range was dropped (or cut to `maxBytes`).
    public var truncated: Bool

    public var text: String { String(decoding: bytes, as: UTF8.self) }
}

/// Reads output from disk: works while the task runs and after a restart.
enum OutputReader {
    private struct Piece {
        var start: Int64
        var length: Int64
        var path: String
    }

    static func read(
        layout: OutputLayout, tailBytes: Int64?, offset: Int64?, maxBytes: Int64
    ) -> OutputChunk {
        let pieces = self.pieces(layout)
        let total = pieces.last.map { $0.start + $0.length } ?? 0
        let retained = pieces.reduce(Int64(0)) { $0 + $1.length }
        var requestedStart: Int64
        var requestedEnd: Int64 = total
        var skipped = false
        if let offset {
            requestedStart = max(0, min(offset, total))
            // An offset in the dropped middle moves on to the first byte that was kept.
            if !pieces.contains(where: { $0.start <= requestedStart && requestedStart < $0.start + $0.length }),
                let next = pieces.first(where: { $0.start > requestedStart })
            {
                requestedStart = next.start
                skipped = true
            }
            requestedEnd = min(total, requestedStart + maxBytes)
        } else {
            let tail = min(tailBytes ?? maxBytes, maxBytes)
            requestedStart = max(0, total - max(0, tail))
        }
        var bytes: [UInt8] = []
        var firstOffset: Int64?
        var missing: Int64 = 0
        var cursor = requestedStart
        for piece in pieces where piece.start + piece.length > cursor && piece.start < requestedEnd {
            if piece.start > cursor {
                missing += piece.start - cursor
                cursor = piece.start
            }
            let from = cursor - piece.start
            let count = min(piece.length - from, requestedEnd - cursor)
            let read = readRange(piece.path, from: from, count: count)
            // A segment rotated away between listing and reading: what was not read is reported missing, never
            // shifted onto the next offset.
            if read.isEmpty && count > 0 {
                if !bytes.isEmpty { break }
                missing += count
                cursor += count
                continue
            }
            if firstOffset == nil { firstOffset = cursor }
            bytes += read
            if Int64(read.count) < count {
                cursor += Int64(read.count)
                break  // the rest of the range counts as missing below
            }
            cursor += count
        }
        if cursor < requestedEnd { missing += requestedEnd - cursor }
        let cut = offset != nil && requestedStart + maxBytes < total
        return OutputChunk(
            stream: layout.stream, bytes: bytes, offset: firstOffset ?? requestedStart, totalBytes: total,
            droppedBytes: total - retained, truncated: missing > 0 || cut || skipped)
    }

    /// Total bytes written, from the files alone.
    static func totalBytes(layout: OutputLayout) -> Int64 {
        pieces(layout).last.map { $0.start + $0.length } ?? 0
    }

    private static func pieces(_ layout: OutputLayout) -> [Piece] {
        var pieces: [Piece] = []
        let headSize = fileSize(layout.headPath)
        if headSize > 0 { pieces.append(Piece(start: 0, length: headSize, path: layout.headPath)) }
        for segment in layout.segments().suffix(2) {
            pieces.append(Piece(start: segment.start, length: fileSize(segment.path), path: segment.path))
        }
        return pieces
    }

    private static func fileSize(_ path: String) -> Int64 {
        var info = stat()
        return stat(path, &info) == 0 ? Int64(info.st_size) : 0
    }

    private static func readRange(_ path: String, from: Int64, count: Int64) -> [UInt8] {
        guard count > 0 else { return [] }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: Int(count))
        var got = 0
        while got < buffer.count {
            let result = buffer.withUnsafeMutableBytes { raw -> Int in
                guard let base = raw.baseAddress else { return 0 }
                return pread(fd, base + got, raw.count - got, off_t(from) + off_t(got))
            }
            if result < 0 && errno == EINTR { continue }
            if result <= 0 { break }
            got += result
        }
        return Array(buffer[0..<got])
    }
}
