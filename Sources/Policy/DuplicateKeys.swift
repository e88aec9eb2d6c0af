#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Finds object keys given twice in JSON text. JSON parsers (ours included) keep only one of them, so a policy such
/// as `{"tools": {"x": {…limits…}}, "tools": {}}` would silently lose rules; the loader refuses it instead.
///
/// A small scanner of our own: neither Foundation's nor the shared `JSONValue` decoder reports duplicates. It runs
/// only on text that has already parsed as JSON.
enum DuplicateKeys {
    private enum Frame {
        case object(path: String, keys: Set<String>, expectingKey: Bool, currentKey: String?)
        case array(path: String, index: Int)
    }

    /// One issue per duplicate, with the JSON path of the object that holds it.
    static func find(in data: Data) -> [PolicyIssue] {
        let bytes = [UInt8](data)
        var stack: [Frame] = []
        var issues: [PolicyIssue] = []
        var index = 0

        func childPath() -> String {
            switch stack.last {
            case .object(let path, _, _, let key?)?: return path.isEmpty ? key : path + "." + key
            case .array(let path, let position)?: return path + "[\(position)]"
            default: return ""
            }
        }

        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "{"):
                stack.append(.object(path: childPath(), keys: [], expectingKey: true, currentKey: nil))
            case UInt8(ascii: "["):
                stack.append(.array(path: childPath(), index: 0))
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                _ = stack.popLast()
            case UInt8(ascii: ","):
                switch stack.last {
                case .object(let path, let keys, _, _)?:
                    stack[stack.count - 1] = .object(path: path, keys: keys, expectingKey: true, currentKey: nil)
                case .array(let path, let position)?:
                    stack[stack.count - 1] = .array(path: path, index: position + 1)
                case nil: break
                }
            case UInt8(ascii: "\""):
                let start = index
                index += 1
                while index < bytes.count && bytes[index] != UInt8(ascii: "\"") {
                    index += bytes[index] == UInt8(ascii: "\\") ? 2 : 1
                }
                if case .object(let path, var keys, true, _)? = stack.last {
                    let raw = Data(bytes[start...min(index, bytes.count - 1)])
                    // Decoding resolves escapes, so "a" and "\u0061" count as the same key.
                    let key = (try? JSONDecoder().decode(String.self, from: raw)) ?? String(decoding: raw, as: UTF8.self)
                    if !keys.insert(key).inserted {
                        issues.append(
                            PolicyIssue(
                                path: path.isEmpty ? "(root)" : path,
                                message: "duplicate key \"\(key)\" (only one of them would take effect)"))
                    }
                    stack[stack.count - 1] = .object(path: path, keys: keys, expectingKey: false, currentKey: key)
                }
            default:
                break
            }
            index += 1
        }
        return issues
    }
}
