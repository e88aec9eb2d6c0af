import CorralJSON

extension Policy {
    /// `tools/list` filtering: returns `tools` without the hidden ones (and without their look-alikes); every other
    /// tool object is returned exactly as given, `_meta` and unknown fields included. An entry without a string
    /// `name` cannot be judged, so it is dropped (fail closed).
    public func filterToolList(_ tools: [JSONValue]) -> [JSONValue] {
        tools.filter { tool in
            guard case .string(let name)? = tool["name"] else { return false }
            return !isHidden(name)
        }
    }

    /// Filters the `tools` array of a whole `tools/list` result; every other member (`nextCursor`, `_meta`, …) is
    /// kept. A result without a `tools` array is returned unchanged.
    public func filterToolsListResult(_ result: JSONValue) -> JSONValue {
        guard case .object(var members) = result, case .array(let tools)? = members["tools"] else { return result }
        members["tools"] = .array(filterToolList(tools))
        return .object(members)
    }
}
