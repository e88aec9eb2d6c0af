import CorralJSON

/// `wait_window` / `wait_for_window`: accepted with the real server's fields, and never met. The mock reads no
/// windows; it answers as the real server does on a Linux machine without a graphical session (a fatal check).
public struct WindowCondition: Sendable, Equatable {
    public enum State: String, Sendable, CaseIterable { case appeared, missing, foreground }

    public var titleFilter: String
    public var hwnd: String
    public var processName: String
    public var state: State
    public var includeInvisible: Bool
    public var limit: Int

    public static let noDesktop = "No graphical desktop session was detected."
    static let fields: Set<String> = ["title_filter", "hwnd", "process_name", "state", "include_invisible", "limit"]

    init(_ reader: FieldReader, requireFilter: Bool) throws(ConditionError) {
        try reader.allowOnly(Self.fields)
        titleFilter = try reader.optionalString("title_filter") ?? ""
        if let number = reader.fields["hwnd"]?.intValue {
            hwnd = String(number)  // the real server takes a number too
        } else {
            hwnd = try reader.optionalString("hwnd") ?? ""
        }
        processName = try reader.optionalString("process_name") ?? ""
        if requireFilter && titleFilter.isEmpty && hwnd.isEmpty && processName.isEmpty {
            throw reader.error("requires title_filter, hwnd, or process_name")
        }
        state = try reader.choice("state", default: State.appeared)
        includeInvisible = reader.fields["include_invisible"]?.boolValue ?? false
        limit = try reader.int("limit", default: 500)
    }

    var jsonValue: JSONValue {
        [
            "title_filter": .string(titleFilter), "hwnd": .string(hwnd), "process_name": .string(processName),
            "state": .string(state.rawValue), "include_invisible": .bool(includeInvisible), "limit": .int(limit),
        ]
    }

    public func check() -> CheckResult {
        CheckResult(
            conditionMet: false,
            lastResult: [
                "fatal_error": true, "state": .string(state.rawValue), "title_filter": .string(titleFilter),
                "hwnd": .string(hwnd), "process_name": .string(processName), "error": .string(Self.noDesktop),
                "details": [
                    "ok": false, "platform": "Linux", "error": .string(Self.noDesktop),
                    "hint": "Set DISPLAY/WAYLAND_DISPLAY or run inside a graphical desktop session.",
                ],
            ], fatal: true)
    }
}
