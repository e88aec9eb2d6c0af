import ArgumentParser
import CCorral
import Foundation
import Glibc

/// `corral bench pipe-echo`: the floor of a stdio call — a process that answers each request line at once with a
/// fixed result of a given size, doing nothing else. Timed with the same client as the server, it says what the
/// pipes, the wake-ups and the copying of that many bytes cost on this machine, so that a server's figure can be read
/// as "floor + what the server adds".
struct PipeEchoServer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pipe-echo", abstract: "A stdio floor for benchmarks: answers each request line with N bytes.",
        shouldDisplay: false)

    @Option(help: "Bytes per answer line, newline included.") var bytes = 512

    func validate() throws {
        guard bytes >= 64 else { throw ValidationError("--bytes must be at least 64") }
    }

    func run() throws {
        // As the server's: a 1 MiB stdout pipe takes a 95 KB answer in one write (StdioServer).
        _ = corral_set_pipe_size(STDOUT_FILENO, 1 << 20)
        let prefix = Array(#"{"jsonrpc":"2.0","id":"#.utf8)
        // The rest of an answer, padded for an id of each length, made once: per request only the id is new.
        var rests: [Int: [UInt8]] = [:]
        var lines = LineBuffer()
        while let (line, _) = try? lines.nextLine(from: STDIN_FILENO) {
            let id = Self.id(of: line)
            let rest = rests[id.count] ?? Self.rest(length: bytes - prefix.count - id.count)
            rests[id.count] = rest
            guard Self.writeAll(prefix + id, rest) else { return }
        }
    }

    /// `,"result":{"pad":"xx…"}}` and a newline, `length` bytes in all (at least its frame).
    private static func rest(length: Int) -> [UInt8] {
        let head = Array(#","result":{"pad":""#.utf8)
        let tail = Array("\"}}\n".utf8)
        return head + repeatElement(UInt8(ascii: "x"), count: max(0, length - head.count - tail.count)) + tail
    }

    /// The request's id as written, which `RawClient` puts first (`{"id":N,`); `null` when it is not there.
    private static func id(of line: Data) -> [UInt8] {
        let opening = Array(#"{"id":"#.utf8)
        guard line.starts(with: opening) else { return Array("null".utf8) }
        let digits = line.dropFirst(opening.count).prefix { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
        return digits.isEmpty ? Array("null".utf8) : Array(digits)
    }

    /// The head (prefix and id) and the rest with one `writev`, as the server writes its answers.
    private static func writeAll(_ head: [UInt8], _ rest: [UInt8]) -> Bool {
        head.withUnsafeBytes { first in
            rest.withUnsafeBytes { second in
                var pieces = [
                    iovec(iov_base: UnsafeMutableRawPointer(mutating: first.baseAddress), iov_len: first.count),
                    iovec(iov_base: UnsafeMutableRawPointer(mutating: second.baseAddress), iov_len: second.count),
                ]
                var left = first.count + second.count
                while left > 0 {
                    let count = writev(STDOUT_FILENO, &pieces, Int32(pieces.count))
                    if count < 0 && errno == EINTR { continue }
                    guard count > 0 else { return false }
                    left -= count
                    // Skip what was written: a partial write of a pipe is rare, and these are two pieces.
                    var skip = count
                    for index in pieces.indices where skip > 0 {
                        let taken = min(skip, pieces[index].iov_len)
                        pieces[index].iov_base = pieces[index].iov_base.map { $0 + taken }
                        pieces[index].iov_len -= taken
                        skip -= taken
                    }
                }
                return true
            }
        }
    }
}
