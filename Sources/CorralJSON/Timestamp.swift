import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// UTC ISO-8601 with milliseconds ("2026-11-21T17:40:00.123Z"), the format of every time the runtime reports and of
/// the gateway's audit lines.
public enum Timestamp {
    /// "2026-12-01T20:21:07.123Z", to the nearest millisecond, so that formatting a parsed timestamp gives the same
    /// text back. The calendar date by arithmetic (days to civil, H. Hinnant's algorithm) and the digits stored
    /// straight into the string: `gmtime_r` and appending digit by digit to an array were 1,300 instructions per
    /// timestamp, and a task's rendering has six of them (a listing of ten, sixty). Years past 9999 keep their last
    /// four digits, as before; years before 0 (which no parse yields) are written as 0000.
    public static func format(_ date: Date) -> String {
        let milliseconds = Int64((date.timeIntervalSince1970 * 1000).rounded())
        let seconds = milliseconds.floorDivided(by: 1000)
        let fraction = Int(milliseconds - seconds * 1000)
        let days = seconds.floorDivided(by: 86_400)
        let secondOfDay = Int(seconds - days * 86_400)
        let (year, month, day) = civilDate(daysSince1970: days)
        return String(unsafeUninitializedCapacity: 24) { text in
            func put(_ value: Int, _ count: Int, at offset: Int) {
                var rest = value
                for index in stride(from: offset + count - 1, through: offset, by: -1) {
                    text[index] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: rest % 10)
                    rest /= 10
                }
            }
            put(year < 0 ? 0 : Int(year % 10_000), 4, at: 0)
            text[4] = UInt8(ascii: "-")
            put(month, 2, at: 5)
            text[7] = UInt8(ascii: "-")
            put(day, 2, at: 8)
            text[10] = UInt8(ascii: "T")
            put(secondOfDay / 3600, 2, at: 11)
            text[13] = UInt8(ascii: ":")
            put(secondOfDay / 60 % 60, 2, at: 14)
            text[16] = UInt8(ascii: ":")
            put(secondOfDay % 60, 2, at: 17)
            text[19] = UInt8(ascii: ".")
            put(fraction, 3, at: 20)
            text[23] = UInt8(ascii: "Z")
            return 24
        }
    }

    /// The proleptic Gregorian date of a day counted from 1970-01-01 (negative before it).
    static func civilDate(daysSince1970 days: Int64) -> (year: Int64, month: Int, day: Int) {
        let shifted = days + 719_468  // from 0000-03-01, so that a leap day ends each year
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shiftedMonth = (5 * dayOfYear + 2) / 153
        let day = Int(dayOfYear - (153 * shiftedMonth + 2) / 5 + 1)
        let month = Int(shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9)
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    /// Parses what `format` writes on a fast path, anything else as `parseISO8601` does.
    public static func parse(_ text: String) -> Date? {
        parseFormatted(text) ?? parseISO8601(text)
    }

    /// An ISO 8601 time as Python's `datetime.fromisoformat` reads it (what the Allcanuse server takes):
    /// `YYYY-MM-DD`, optionally followed by `T`, `t` or a space and `HH:MM`, `:SS`, `.` and 1–9 digits of fraction,
    /// then optionally `Z`, `z` or an offset `±HH:MM`, `±HHMM` or `±HH`; no offset is UTC (as the real server takes
    /// it). Nil for anything else, and for a date or offset that does not exist (February 30th, `+99:00`, hour 24).
    ///
    /// Written by hand: Foundation's ISO 8601 parsers took a 12-digit year and gave year 0, and rolled February 30th
    /// over to March 2nd; a wait until such a time answered at once.
    public static func parseISO8601(_ text: String) -> Date? {
        let bytes = Array(text.utf8)
        var index = 0
        func digits(_ count: Int) -> Int? {
            guard index + count <= bytes.count else { return nil }
            var value = 0
            for byte in bytes[index..<index + count] {
                guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
                value = value * 10 + Int(byte - UInt8(ascii: "0"))
            }
            index += count
            return value
        }
        func skip(_ byte: UInt8) -> Bool {
            guard index < bytes.count, bytes[index] == byte else { return false }
            index += 1
            return true
        }
        guard let year = digits(4), year >= 1, skip(UInt8(ascii: "-")), let month = digits(2), (1...12).contains(month),
            skip(UInt8(ascii: "-")), let day = digits(2), day >= 1, day <= daysIn(month: month, year: year)
        else { return nil }
        var seconds = Int64(daysSince1970(year: year, month: month, day: day)) * 86_400
        var nanoseconds = 0
        if index < bytes.count, [UInt8(ascii: "T"), UInt8(ascii: "t"), UInt8(ascii: " ")].contains(bytes[index]) {
            index += 1
            guard let hour = digits(2), hour < 24, skip(UInt8(ascii: ":")), let minute = digits(2), minute < 60 else { return nil }
            seconds += Int64(hour * 3600 + minute * 60)
            if skip(UInt8(ascii: ":")) {
                guard let second = digits(2), second < 60 else { return nil }
                seconds += Int64(second)
                if skip(UInt8(ascii: ".")) || skip(UInt8(ascii: ",")) {
                    var count = 0
                    while index < bytes.count, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") {
                        guard count < 9 else { return nil }
                        nanoseconds = nanoseconds * 10 + Int(bytes[index] - UInt8(ascii: "0"))
                        count += 1
                        index += 1
                    }
                    guard count > 0 else { return nil }
                    for _ in count..<9 { nanoseconds *= 10 }
                }
            }
            if skip(UInt8(ascii: "Z")) || skip(UInt8(ascii: "z")) {
                // UTC
            } else if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
                let sign: Int64 = bytes[index] == UInt8(ascii: "+") ? 1 : -1
                index += 1
                guard let hours = digits(2), hours < 24 else { return nil }
                var minutes = 0
                if skip(UInt8(ascii: ":")) {
                    guard let value = digits(2) else { return nil }
                    minutes = value
                } else if index < bytes.count {
                    guard let value = digits(2) else { return nil }
                    minutes = value
                }
                guard minutes < 60 else { return nil }
                seconds -= sign * Int64(hours * 3600 + minutes * 60)
            }
        }
        guard index == bytes.count else { return nil }
        return Date(timeIntervalSince1970: Double(seconds) + Double(nanoseconds) / 1e9)
    }

    private static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's days_from_civil; `civilDate` undoes it).
    static func daysSince1970(year: Int, month: Int, day: Int) -> Int {
        let shiftedYear = month <= 2 ? year - 1 : year
        let era = (shiftedYear >= 0 ? shiftedYear : shiftedYear - 399) / 400
        let yearOfEra = shiftedYear - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    /// Exactly "YYYY-MM-DDTHH:MM:SS.mmmZ", or nil.
    public static func parseFormatted(_ text: String) -> Date? {
        let bytes = Array(text.utf8)
        guard bytes.count == 24, bytes[4] == UInt8(ascii: "-"), bytes[7] == UInt8(ascii: "-"),
            bytes[10] == UInt8(ascii: "T"), bytes[13] == UInt8(ascii: ":"), bytes[16] == UInt8(ascii: ":"),
            bytes[19] == UInt8(ascii: "."), bytes[23] == UInt8(ascii: "Z")
        else { return nil }
        func number(_ range: Range<Int>) -> Int? {
            var value = 0
            for index in range {
                let byte = bytes[index]
                guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
                value = value * 10 + Int(byte - UInt8(ascii: "0"))
            }
            return value
        }
        guard let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
            let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19),
            let millisecond = number(20..<23), year >= 1, (1...12).contains(month), (1...31).contains(day), hour < 24,
            minute < 60, second < 60
        else { return nil }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        let seconds = timegm(&parts)
        // timegm normalises out-of-range days (February 30th): such a text is not one `format` wrote.
        guard parts.tm_mday == Int32(day), parts.tm_mon == Int32(month - 1) else { return nil }
        return Date(timeIntervalSince1970: (Double(Int64(seconds) * 1000 + Int64(millisecond))) / 1000)
    }
}

extension Int64 {
    fileprivate func floorDivided(by divisor: Int64) -> Int64 {
        let quotient = self / divisor
        return (self % divisor != 0 && (self < 0) != (divisor < 0)) ? quotient - 1 : quotient
    }
}

