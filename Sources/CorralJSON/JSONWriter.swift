#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension JSONValue {
    /// Compact JSON text with sorted keys (stable, so it can be hashed and compared).
    public func jsonString(pretty: Bool = false) -> String {
        var out = JSONOutput(capacity: 512)
        JSONWriter.write(self, to: &out, pretty: pretty, indent: 0)
        return out.string()
    }
}

/// The JSON writer: UTF-8 bytes into one growing buffer, keys sorted.
///
/// Written by hand for the same reason as the parser: every answer a server sends goes through it, a tool result's
/// structured content twice (as itself and escaped into its text block). Appending to a `[UInt8]` run by run paid
/// Array's capacity and uniqueness checks per piece: writing was 176,000 of the 384,000 instructions of a
/// `get_background_task` in the server (callgrind), escaping 85,000 of them.
enum JSONWriter {
    static func write(_ value: JSONValue, to out: inout JSONOutput, pretty: Bool, indent: Int) {
        switch value {
        case .null: out.append("null")
        case .bool(let value): out.append(value ? "true" : "false")
        case .int(let value): writeInteger(value, to: &out)
        case .double(let value):
            if value.isFinite {
                if value.rounded() == value && abs(value) < 1e15 {
                    writeInteger(Int(value), to: &out)
                } else {
                    var text = "\(value)"
                    text.withUTF8 { out.append(UnsafeRawBufferPointer($0)) }
                }
            } else {
                out.append("null")  // JSON has no NaN or infinity
            }
        case .string(let value): writeEscaped(value, to: &out)
        case .array(let values):
            if values.isEmpty {
                out.append("[]")
                return
            }
            out.append(UInt8(ascii: "["))
            for (index, value) in values.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                if pretty { writeNewline(indent + 1, to: &out) }
                write(value, to: &out, pretty: pretty, indent: indent + 1)
            }
            if pretty { writeNewline(indent, to: &out) }
            out.append(UInt8(ascii: "]"))
        case .object(let object):
            if object.isEmpty {
                out.append("{}")
                return
            }
            out.append(UInt8(ascii: "{"))
            for (index, entry) in sortedMembers(object).enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                if pretty { writeNewline(indent + 1, to: &out) }
                writeEscaped(entry.key, to: &out)
                out.append(UInt8(ascii: ":"))
                if pretty { out.append(UInt8(ascii: " ")) }
                write(entry.value, to: &out, pretty: pretty, indent: indent + 1)
            }
            if pretty { writeNewline(indent, to: &out) }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// The members in the order of String's `<` on their keys. (Sorting by the keys' first eight bytes packed into
    /// integers was tried: more instructions under callgrind, not fewer.)
    static func sortedMembers(_ object: [String: JSONValue]) -> [(key: String, value: JSONValue)] {
        object.sorted { $0.key < $1.key }
    }

    private static func writeNewline(_ indent: Int, to out: inout JSONOutput) {
        out.append(UInt8(ascii: "\n"))
        for _ in 0..<(indent * 2) { out.append(UInt8(ascii: " ")) }
    }

    /// Decimal digits, written from the end of a small buffer (String(value) allocated a string per number).
    static func writeInteger(_ value: Int, to out: inout JSONOutput) {
        if value >= 0 && value < 10 {
            out.append(UInt8(ascii: "0") + UInt8(value))
            return
        }
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var magnitude = value.magnitude
            var start = digits.count
            repeat {
                start -= 1
                digits[start] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            if value < 0 { out.append(UInt8(ascii: "-")) }
            out.append(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(digits)[start...]))
        }
    }

    /// The string's UTF-8 as is, with quotes, backslashes and control characters escaped (the same text as before,
    /// byte for byte: hashes of it are kept, in audit lines and approval states).
    static func writeEscaped(_ string: String, to out: inout JSONOutput) {
        var string = string
        string.withUTF8 { bytes in
            let count = bytes.count
            // Room for every byte as two (`\"`, `\\`, `\n`…) and both quotes: within it, bytes are stored without a
            // check each. A control character written as \u00XX makes room for the rest again.
            out.reserve(count &* 2 &+ 2)
            out.store(UInt8(ascii: "\""))
            guard let start = bytes.baseAddress else {
                out.store(UInt8(ascii: "\""))
                return
            }
            // Eight bytes at a time: copied at once when none needs escaping (a result's text block is its
            // structured content escaped whole, a few kilobytes that byte by byte were a sixth of a get's
            // instructions); else the bytes before the first that does are kept from the same copy, that one is
            // escaped, and the next word starts after it (JSON in a string has a quote every few bytes: taking
            // such words byte by byte was 47,000 instructions of a get).
            var index = 0
            while index &+ 8 <= count {
                let word = UnsafeRawPointer(start + index).loadUnaligned(as: UInt64.self)
                let marks = escapeMarks(word)
                if marks == 0 {
                    out.store(word)
                    index &+= 8
                    continue
                }
                let plain = firstMarked(marks)
                out.store(word, keeping: plain)
                index &+= plain
                escape(start[index], at: index, of: count, to: &out)
                index &+= 1
            }
            while index < count {
                escape(start[index], at: index, of: count, to: &out)
                index &+= 1
            }
            out.store(UInt8(ascii: "\""))
        }
    }

    /// The high bit of each of the eight bytes that is below 0x20, a quote or a backslash, exact up to the first
    /// such byte in memory order (the classic "has a zero byte" and "has a byte less than n" tests on the word,
    /// whose false positives come only from bytes after the first true one); zero when none is.
    @inline(__always)
    static func escapeMarks(_ word: UInt64) -> UInt64 {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        let control = (word &- ones &* 0x20) & ~word
        let quote = word ^ (ones &* UInt64(UInt8(ascii: "\"")))
        let backslash = word ^ (ones &* UInt64(UInt8(ascii: "\\")))
        return (control | ((quote &- ones) & ~quote) | ((backslash &- ones) & ~backslash)) & highs
    }

    /// How many bytes come before the first marked one, in memory order.
    @inline(__always)
    static func firstMarked(_ marks: UInt64) -> Int {
        #if _endian(little)
            marks.trailingZeroBitCount >> 3
        #else
            marks.leadingZeroBitCount >> 3
        #endif
    }

    /// One byte of a string, escaped if it must be; `index` of `count` bytes, for the room an escape needs.
    @inline(__always)
    static func escape(_ byte: UInt8, at index: Int, of count: Int, to out: inout JSONOutput) {
        if byte >= 0x20 && byte != UInt8(ascii: "\"") && byte != UInt8(ascii: "\\") {
            out.store(byte)
            return
        }
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"): out.store(UInt8(ascii: "\\"), byte)
        case UInt8(ascii: "\n"): out.store(UInt8(ascii: "\\"), UInt8(ascii: "n"))
        case UInt8(ascii: "\r"): out.store(UInt8(ascii: "\\"), UInt8(ascii: "r"))
        case UInt8(ascii: "\t"): out.store(UInt8(ascii: "\\"), UInt8(ascii: "t"))
        default:
            out.reserve(6 &+ (count &- index &- 1) &* 2 &+ 1)
            out.store(UInt8(ascii: "\\"), UInt8(ascii: "u"))
            out.store(UInt8(ascii: "0"), UInt8(ascii: "0"))
            out.store(hexDigit(byte >> 4), hexDigit(byte & 0xF))
        }
    }

    private static func hexDigit(_ nibble: UInt8) -> UInt8 {
        nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10
    }
}

/// The writer's output: bytes behind a pointer, grown by doubling. `append` checks room; `store` does not and is
/// only used after `reserve` made room for what follows.
struct JSONOutput: ~Copyable {
    private var base: UnsafeMutablePointer<UInt8>
    private var capacity: Int
    private var count = 0

    init(capacity: Int) {
        self.capacity = max(16, capacity)
        base = .allocate(capacity: self.capacity)
    }

    deinit { base.deallocate() }

    /// Room for `extra` more bytes.
    @inline(__always)
    mutating func reserve(_ extra: Int) {
        if count &+ extra > capacity { grow(to: count + extra) }
    }

    private mutating func grow(to needed: Int) {
        let larger = max(needed, capacity * 2)
        let moved = UnsafeMutablePointer<UInt8>.allocate(capacity: larger)
        moved.update(from: base, count: count)
        base.deallocate()
        base = moved
        capacity = larger
    }

    @inline(__always)
    mutating func store(_ byte: UInt8) {
        base[count] = byte
        count &+= 1
    }

    /// Eight bytes as they lie in memory (little- or big-endian alike: loaded and stored the same way).
    @inline(__always)
    mutating func store(_ word: UInt64) {
        UnsafeMutableRawPointer(base + count).storeBytes(of: word, as: UInt64.self)
        count &+= 8
    }

    /// Eight bytes stored, the first `keeping` of them kept (the rest is written over next): room for eight is needed.
    @inline(__always)
    mutating func store(_ word: UInt64, keeping: Int) {
        UnsafeMutableRawPointer(base + count).storeBytes(of: word, as: UInt64.self)
        count &+= keeping
    }

    @inline(__always)
    mutating func store(_ first: UInt8, _ second: UInt8) {
        base[count] = first
        base[count &+ 1] = second
        count &+= 2
    }

    mutating func append(_ byte: UInt8) {
        reserve(1)
        store(byte)
    }

    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
        reserve(bytes.count)
        (base + count).update(from: source.assumingMemoryBound(to: UInt8.self), count: bytes.count)
        count += bytes.count
    }

    mutating func append(_ text: StaticString) {
        text.withUTF8Buffer { append(UnsafeRawBufferPointer($0)) }
    }

    func string() -> String {
        String(decoding: UnsafeBufferPointer(start: base, count: count), as: UTF8.self)
    }

    func bytes() -> [UInt8] {
        Array(UnsafeBufferPointer(start: base, count: count))
    }
}
