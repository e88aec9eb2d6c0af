/// One JSON object written member by member, in the order the caller gives: for lines whose members are known
/// ahead (an audit line), without building a dictionary and sorting its keys. Given in the order of String's `<`,
/// the members come out as `JSONValue.jsonString()` writes the same object, byte for byte.
public struct JSONObjectWriter: ~Copyable {
    private var out = JSONOutput(capacity: 512)
    private var empty = true

    public init() {
        out.append(UInt8(ascii: "{"))
    }

    /// `key` is written as it is: plain ASCII without quotes, backslashes or control characters.
    public mutating func member(_ key: StaticString, _ value: String) {
        open(key)
        JSONWriter.writeEscaped(value, to: &out)
    }

    public mutating func member(_ key: StaticString, _ value: String?) {
        if let value { member(key, value) } else { member(key, JSONValue.null) }
    }

    public mutating func member(_ key: StaticString, _ value: Int) {
        open(key)
        JSONWriter.writeInteger(value, to: &out)
    }

    public mutating func member(_ key: StaticString, _ value: Int?) {
        if let value { member(key, value) } else { member(key, JSONValue.null) }
    }

    public mutating func member(_ key: StaticString, _ value: Bool) {
        open(key)
        out.append(value ? "true" : "false")
    }

    public mutating func member(_ key: StaticString, _ values: [String]) {
        open(key)
        out.append(UInt8(ascii: "["))
        for (index, value) in values.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            JSONWriter.writeEscaped(value, to: &out)
        }
        out.append(UInt8(ascii: "]"))
    }

    public mutating func member(_ key: StaticString, _ value: JSONValue) {
        open(key)
        JSONWriter.write(value, to: &out, pretty: false, indent: 0)
    }

    /// The object's text followed by a line feed, as one buffer (for a one-`write` append).
    public consuming func line() -> [UInt8] {
        out.append("}\n")
        return out.bytes()
    }

    /// The object's text.
    public consuming func string() -> String {
        out.append(UInt8(ascii: "}"))
        return out.string()
    }

    private mutating func open(_ key: StaticString) {
        if !empty { out.append(UInt8(ascii: ",")) }
        empty = false
        out.append(UInt8(ascii: "\""))
        out.append(key)
        out.append("\":")
    }
}
