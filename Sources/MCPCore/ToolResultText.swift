import CorralJSON

/// The text block of a `tools/call` result, added by the core: a handler that returns only `structuredContent`
/// gets, as the spec asks for compatibility, the same JSON as a text content block.
///
/// Written once for both: a result carried its structured content twice, as a value and as JSON text, and
/// serializing it twice (then escaping the text) was a quarter of a task listing's CPU.
public enum ToolResultText {
    /// The result with its text block, as a value (batches, stored task results). Results that have `content`, or
    /// no `structuredContent`, are returned as they are.
    public static func completed(_ result: JSONValue) -> JSONValue {
        guard var object = lean(result), let structured = object["structuredContent"] else { return result }
        object["content"] = textBlock(structured.jsonString())
        return .object(object)
    }

    /// The completed result as JSON text, its structured content written once; nil when it needs no text block.
    /// The keys are sorted except `structuredContent`, which comes last.
    static func text(_ result: JSONValue) -> String? {
        guard var object = lean(result), let structured = object.removeValue(forKey: "structuredContent") else {
            return nil
        }
        let structuredText = structured.jsonString()
        object["content"] = textBlock(structuredText)
        var text = JSONValue.object(object).jsonString()
        text.removeLast()  // the closing brace: the object is not empty, it has `content`
        return text + #","structuredContent":"# + structuredText + "}"
    }

    /// The result's members when it is an object with `structuredContent` and without `content`.
    private static func lean(_ result: JSONValue) -> [String: JSONValue]? {
        guard let object = result.objectValue, object["content"] == nil, object["structuredContent"] != nil else {
            return nil
        }
        return object
    }

    private static func textBlock(_ text: String) -> JSONValue {
        [["type": "text", "text": .string(text)]]
    }
}
