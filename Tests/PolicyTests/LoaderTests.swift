import CorralJSON
import Foundation
import Testing

@testable import Policy

@Suite struct LoaderTests {
    // MARK: Valid documents

    @Test(arguments: ["allcanuse-recommended.json", "pause-rate-limit.json", "hide-cancel.json"])
    func examplePoliciesLoad(file: String) throws {
        let path = packageRoot.appendingPathComponent("policies").appendingPathComponent(file).path
        let policy = try Policy.load(contentsOfFile: path)
        #expect(policy.defaultEffect == .deny)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(policy.revision.hex == SHA256.hex(bytes))
    }

    @Test func shorthandForms() throws {
        let policy = try load(
            """
            {"version": "1", "default": "allow", "hide": ["*"],
             "all_tools": {"limits": [{"counter": "all", "window": 60, "max": 100}]},
             "tools": {
               "a": {"action": "deny", "reason": "no"},
               "b": {"action": "require_approval", "reason": "Requires human approval."},
               "c": {"action": "allow"},
               "d": {"require": [{"path": "args.x", "op": "exists"}]},
               "e": {"limits": [{"counter": "spend", "window": "day", "max": 5, "scope": "session", "increment_from": "args.n"},
                                {"counter": "twice", "window": "second", "max": 4, "scope": "global", "increment": 2}]}
             }}
            """)
        #expect(policy.hidesEverything)
        #expect(policy.allToolsLimits.first?.window == CounterWindow(seconds: 60))
        #expect(policy.allToolsLimits.first?.scope == .grant)  // default scope
        #expect(policy.allToolsLimits.first?.toolKey == "*")
        #expect(policy.tools["a"]?.action == .deny)
        #expect(policy.tools["b"]?.action == .requireApproval)
        #expect(policy.tools["c"]?.action == .allow)
        #expect(policy.tools["d"]?.require.first?.value == .bool(true))
        #expect(policy.tools["e"]?.limits.map(\.scope) == [.session, .global])
        let spendPath = try ArgumentPath.parse("args.n").get()
        #expect(policy.tools["e"]?.limits.map(\.increment) == [.fromArgument(spendPath), .fixed(2)])
        #expect(policy.tools["e"]?.limits.map(\.rule) == ["tools.e.limits[0]", "tools.e.limits[1]"])
        #expect(policy.tools["e"]?.limits.last?.message == "Rate limit of 4 per second reached. Try again later.")
    }

    @Test(arguments: [("second", Int64(1)), ("minute", 60), ("hour", 3600), ("day", 86400)])
    func windowWords(word: String, seconds: Int64) throws {
        let policy = try load(toolPolicy("t", #"{"limits": [{"counter": "c", "window": "\#(word)", "max": 1}]}"#))
        #expect(policy.tools["t"]?.limits.first?.window.seconds == seconds)
    }

    // MARK: Every load error, with its JSON path

    struct BadCase: Sendable, CustomTestStringConvertible {
        let json: String
        let path: String
        let fragment: String
        var testDescription: String { "\(path): \(fragment)" }
    }

    static let badCases: [BadCase] = [
        BadCase(json: "[]", path: "(root)", fragment: "must be an object"),
        BadCase(json: "{", path: "(root)", fragment: "not valid JSON"),
        BadCase(json: #"{"default": "deny"}"#, path: "version", fragment: "is required"),
        BadCase(json: #"{"version": "2", "default": "deny"}"#, path: "version", fragment: "not a supported version"),
        BadCase(json: #"{"version": 1, "default": "deny"}"#, path: "version", fragment: "not a supported version"),
        BadCase(json: #"{"version": "1"}"#, path: "default", fragment: "is required"),
        BadCase(json: #"{"version": "1", "default": "maybe"}"#, path: "default", fragment: #""maybe" is not "allow" or "deny""#),
        BadCase(json: #"{"version": "1", "default": "deny", "defualt": "allow"}"#, path: "defualt", fragment: #"unknown key (did you mean "default"?)"#),
        BadCase(json: #"{"version": "1", "default": "deny", "$schema": 3}"#, path: "$schema", fragment: "must be a string"),
        BadCase(json: #"{"version": "1", "default": "deny", "hide": "x"}"#, path: "hide", fragment: "must be a list"),
        BadCase(json: #"{"version": "1", "default": "deny", "hide": [1]}"#, path: "hide[0]", fragment: "must be a string"),
        BadCase(json: #"{"version": "1", "default": "deny", "hide": [""]}"#, path: "hide[0]", fragment: "must not be empty"),
        BadCase(json: #"{"version": "1", "default": "deny", "hide": ["a", "a"]}"#, path: "hide[1]", fragment: "listed twice"),
        BadCase(json: #"{"version": "1", "default": "deny", "all_tools": []}"#, path: "all_tools", fragment: "must be an object"),
        BadCase(json: #"{"version": "1", "default": "deny", "all_tools": {"limit": []}}"#, path: "all_tools.limit", fragment: "unknown key"),
        BadCase(json: #"{"version": "1", "default": "deny", "tools": []}"#, path: "tools", fragment: "must be an object"),
        BadCase(json: #"{"version": "1", "default": "deny", "tools": {"t": 1}}"#, path: "tools.t", fragment: "must be an object"),
        BadCase(json: #"{"version": "1", "default": "deny", "tools": {"a.b": 1}}"#, path: #"tools["a.b"]"#, fragment: "must be an object"),
        BadCase(json: #"{"version": "1", "default": "deny", "tools": {"": {}}}"#, path: #"tools[""]"#, fragment: "must not be empty"),
        BadCase(json: #"{"version": "1", "default": "deny", "tools": {"*": {}}}"#, path: #"tools["*"]"#, fragment: "use all_tools"),
        BadCase(json: toolPolicy("t", #"{"limitz": []}"#), path: "tools.t.limitz", fragment: #"did you mean "limits""#),
        BadCase(json: toolPolicy("t", #"{"action": "block"}"#), path: "tools.t.action", fragment: "is not \"allow\""),
        BadCase(json: toolPolicy("t", #"{"reason": "why"}"#), path: "tools.t.reason", fragment: "needs an action"),
        BadCase(json: toolPolicy("t", #"{"action": "allow", "reason": "why"}"#), path: "tools.t.reason", fragment: "only applies"),
        BadCase(json: toolPolicy("t", #"{"action": "deny", "reason": 5}"#), path: "tools.t.reason", fragment: "must be a string"),
        BadCase(json: toolPolicy("t", #"{"require": {}}"#), path: "tools.t.require", fragment: "must be a list"),
        BadCase(json: toolPolicy("t", #"{"require": [3]}"#), path: "tools.t.require[0]", fragment: "must be an object"),
        BadCase(json: toolPolicy("t", #"{"require": [{"op": "exists"}]}"#), path: "tools.t.require[0].path", fragment: "is required"),
        BadCase(json: toolPolicy("t", #"{"require": [{"path": 1, "op": "exists"}]}"#), path: "tools.t.require[0].path", fragment: "must be a string"),
        BadCase(json: toolPolicy("t", #"{"require": [{"path": "x.y", "op": "exists"}]}"#), path: "tools.t.require[0].path", fragment: #"must start with "args.""#),
        BadCase(json: toolPolicy("t", #"{"require": [{"path": "state.c", "op": "exists"}]}"#), path: "tools.t.require[0].path", fragment: "not supported"),
        BadCase(json: toolPolicy("t", #"{"require": [{"path": "args..x", "op": "exists"}]}"#), path: "tools.t.require[0].path", fragment: "empty segment"),
        BadCase(json: toolPolicy("t", #"{"require": [{"path": "args.x[a]", "op": "exists"}]}"#), path: "tools.t.require[0].path", fragment: "malformed [index]"),
        BadCase(json: toolPolicy("t", #"{"require": [{"path": "args.x", "op": "exist"}]}"#), path: "tools.t.require[0].op", fragment: #""exist" is not an op"#),
        BadCase(json: toolPolicy("t", #"{"require": [{"path": "args.x"}]}"#), path: "tools.t.require[0].op", fragment: "is required"),
        BadCase(json: toolPolicy("t", #"{"require": [{"path": "args.x", "op": "eq"}]}"#), path: "tools.t.require[0].value", fragment: #"is required for op "eq""#),
        BadCase(json: toolPolicy("t", #"{"require": [{"path": "args.x", "op": "eq", "value": 1, "val": 2}]}"#), path: "tools.t.require[0].val", fragment: "unknown key"),
        BadCase(json: toolPolicy("t", #"{"require": [{"path": "args.x", "op": "in", "value": "a"}]}"#), path: "tools.t.require[0].value", fragment: "needs a list"),
        BadCase(json: toolPolicy("t", #"{"require": [{"path": "args.x", "op": "not_in", "value": 1}]}"#), path: "tools.t.require[0].value", fragment: "needs a list"),
        BadCase(json: toolPolicy("t", #"{"require": [{"path": "args.x", "op": "lt", "value": "1"}]}"#), path: "tools.t.require[0].value", fragment: "needs a number"),
        BadCase(json: toolPolicy("t", #"{"require": [{"path": "args.x", "op": "gte", "value": null}]}"#), path: "tools.t.require[0].value", fragment: "needs a number"),
        BadCase(json: toolPolicy("t", #"{"require": [{"path": "args.x", "op": "regex", "value": "(unclosed"}]}"#), path: "tools.t.require[0].value", fragment: "does not compile"),
        BadCase(json: toolPolicy("t", #"{"require": [{"path": "args.x", "op": "regex", "value": 1}]}"#), path: "tools.t.require[0].value", fragment: "needs a string pattern"),
        BadCase(json: toolPolicy("t", #"{"require": [{"path": "args.x", "op": "exists", "value": "yes"}]}"#), path: "tools.t.require[0].value", fragment: "needs true or false"),
        BadCase(json: toolPolicy("t", #"{"require": [{"path": "args.x", "op": "len_lte", "value": -1}]}"#), path: "tools.t.require[0].value", fragment: "non-negative integer"),
        BadCase(json: toolPolicy("t", #"{"require": [{"path": "args.x", "op": "len_gte", "value": 1.5}]}"#), path: "tools.t.require[0].value", fragment: "non-negative integer"),
        BadCase(json: toolPolicy("t", #"{"require": [{"path": "args.x", "op": "type", "value": "str"}]}"#), path: "tools.t.require[0].value", fragment: "is not a JSON type"),
        BadCase(json: toolPolicy("t", #"{"deny_if": {}}"#), path: "tools.t.deny_if", fragment: "must be a list"),
        BadCase(json: toolPolicy("t", #"{"deny_if": [{"on_deny": "x"}]}"#), path: "tools.t.deny_if[0].conditions", fragment: "is required"),
        BadCase(json: toolPolicy("t", #"{"deny_if": [{"conditions": [], "on_deny": ""}]}"#), path: "tools.t.deny_if[0].on_deny", fragment: "must not be empty"),
        BadCase(json: toolPolicy("t", #"{"deny_if": [{"conditions": [], "message": "x"}]}"#), path: "tools.t.deny_if[0].message", fragment: "unknown key"),
        BadCase(json: toolPolicy("t", #"{"deny_if": [{"conditions": [{"path": "args.a", "op": "bogus", "value": 1}]}]}"#), path: "tools.t.deny_if[0].conditions[0].op", fragment: "is not an op"),
        BadCase(json: toolPolicy("t", #"{"limits": {}}"#), path: "tools.t.limits", fragment: "must be a list"),
        BadCase(json: toolPolicy("t", #"{"limits": [{"window": "minute", "max": 1}]}"#), path: "tools.t.limits[0].counter", fragment: "is required"),
        BadCase(json: toolPolicy("t", #"{"limits": [{"counter": "c", "max": 1}]}"#), path: "tools.t.limits[0].window", fragment: "is required"),
        BadCase(json: toolPolicy("t", #"{"limits": [{"counter": "c", "window": "minit", "max": 1}]}"#), path: "tools.t.limits[0].window", fragment: #""minit" is not a window"#),
        BadCase(json: toolPolicy("t", #"{"limits": [{"counter": "c", "window": 0, "max": 1}]}"#), path: "tools.t.limits[0].window", fragment: "0 is not a window"),
        BadCase(json: toolPolicy("t", #"{"limits": [{"counter": "c", "window": 1.5, "max": 1}]}"#), path: "tools.t.limits[0].window", fragment: "1.5 is not a window"),
        BadCase(json: toolPolicy("t", #"{"limits": [{"counter": "c", "window": "minute"}]}"#), path: "tools.t.limits[0].max", fragment: "is required"),
        BadCase(json: toolPolicy("t", #"{"limits": [{"counter": "c", "window": "minute", "max": 0}]}"#), path: "tools.t.limits[0].max", fragment: "positive integer, got 0"),
        BadCase(json: toolPolicy("t", #"{"limits": [{"counter": "c", "window": "minute", "max": -3}]}"#), path: "tools.t.limits[0].max", fragment: "positive integer, got -3"),
        BadCase(json: toolPolicy("t", #"{"limits": [{"counter": "c", "window": "minute", "max": 2.5}]}"#), path: "tools.t.limits[0].max", fragment: "positive integer, got 2.5"),
        BadCase(json: toolPolicy("t", #"{"limits": [{"counter": "c", "window": "minute", "max": "10"}]}"#), path: "tools.t.limits[0].max", fragment: "positive integer"),
        BadCase(json: toolPolicy("t", #"{"limits": [{"counter": "c", "window": "minute", "max": 1, "scope": "user"}]}"#), path: "tools.t.limits[0].scope", fragment: "is not a scope"),
        BadCase(json: toolPolicy("t", #"{"limits": [{"counter": "c", "window": "minute", "max": 9, "increment": 0}]}"#), path: "tools.t.limits[0].increment", fragment: "positive integer"),
        BadCase(json: toolPolicy("t", #"{"limits": [{"counter": "c", "window": "minute", "max": 1, "increment": 2}]}"#), path: "tools.t.limits[0].increment", fragment: "larger than max"),
        BadCase(json: toolPolicy("t", #"{"limits": [{"counter": "c", "window": "minute", "max": 9, "increment": 1, "increment_from": "args.n"}]}"#), path: "tools.t.limits[0]", fragment: "not both"),
        BadCase(json: toolPolicy("t", #"{"limits": [{"counter": "c", "window": "minute", "max": 9, "increment_from": "n"}]}"#), path: "tools.t.limits[0].increment_from", fragment: "must start with"),
        BadCase(json: toolPolicy("t", #"{"limits": [{"counter": "c", "window": "minute", "max": 9, "increment_from": "args"}]}"#), path: "tools.t.limits[0].increment_from", fragment: "must name an argument"),
        BadCase(json: toolPolicy("t", #"{"limits": [{"counter": "c", "window": "minute", "max": 9, "increment_from": 3}]}"#), path: "tools.t.limits[0].increment_from", fragment: "must be a string path"),
        BadCase(
            json: toolPolicy("t", #"{"limits": [{"counter": "c", "window": "minute", "max": 1}, {"counter": "c", "window": "hour", "max": 1}]}"#),
            path: "tools.t.limits[1].counter", fragment: #"counter "c" is already defined at tools.t.limits[0]"#),
        BadCase(
            json: #"{"version": "1", "default": "deny", "all_tools": {"limits": [{"counter": "c", "window": "minute", "max": 1}]}, "tools": {"t": {"limits": [{"counter": "c", "window": "minute", "max": 1}]}}}"#,
            path: "tools.t.limits[0].counter", fragment: "already defined at all_tools.limits[0]"),
    ]

    @Test(arguments: badCases)
    func rejected(_ bad: BadCase) {
        let found = issues(bad.json)
        #expect(
            found.contains { $0.path == bad.path && $0.message.contains(bad.fragment) },
            "expected \(bad.path): …\(bad.fragment)…, got \(found)")
    }

    @Test func theIssueExampleMessage() {
        let found = issues(
            toolPolicy("pause_background_task", #"{"limits": [{"counter": "c", "window": "minit", "max": 10, "scope": "grant"}]}"#))
        #expect(found.map(\.description).contains { $0.hasPrefix(#"tools.pause_background_task.limits[0].window: "minit" is not a window"#) })
    }

    /// Every problem is listed, not just the first.
    @Test func everyErrorIsListed() {
        let found = issues(
            """
            {"version": "2", "defualt": "deny", "hide": [1],
             "tools": {"t": {"limits": [{"counter": "c", "window": "minit", "max": 0, "scop": "grant"},
                                        {"counter": "c", "window": "minute", "max": 1}],
                             "require": [{"path": "args.x", "op": "regex", "value": "["}, {"path": "args.y", "op": "nope", "value": 1}]}}}
            """)
        let paths = Set(found.map(\.path))
        #expect(
            paths == [
                "version", "defualt", "default", "hide[0]", "tools.t.limits[0].window", "tools.t.limits[0].max",
                "tools.t.limits[0].scop", "tools.t.limits[1].counter", "tools.t.require[0].value", "tools.t.require[1].op",
            ])
        #expect(found.count == 10)
    }

    @Test func unreadableFile() {
        #expect(throws: PolicyLoadError.self) { try Policy.load(contentsOfFile: "/nonexistent/policy.json") }
    }
}

@Suite struct DuplicateKeyTests {
    @Test func duplicateKeysAreRefusedWithTheirPath() {
        let found = issues(
            """
            {"version": "1", "default": "deny",
             "tools": {"pause_background_task": {"limits": [{"counter": "c", "window": "minute", "max": 10,
                                                              "scope": "grant", "max": 1000}]},
                       "pause_background_task": {}},
             "default": "allow"}
            """)
        let rendered = found.map { "\($0.path): \($0.message)" }
        #expect(rendered.contains("(root): duplicate key \"default\" (only one of them would take effect)"))
        #expect(rendered.contains("tools: duplicate key \"pause_background_task\" (only one of them would take effect)"))
        #expect(
            rendered.contains(
                "tools.pause_background_task.limits[0]: duplicate key \"max\" (only one of them would take effect)"))
    }

    @Test func escapedSpellingsOfOneKeyAreTheSameKey() {
        let found = issues(#"{"version": "1", "default": "deny", "hid\u0065": [], "hide": ["x"]}"#)
        #expect(found.contains { $0.message.contains("duplicate key \"hide\"") })
    }

    @Test func keysInDifferentObjectsAndStringsWithBracesAreNotDuplicates() throws {
        _ = try load(
            """
            {"version": "1", "default": "deny",
             "tools": {"a": {"deny_if": [{"conditions": [], "on_deny": "no {\\"default\\": 1} ["}]},
                       "b": {"deny_if": [{"conditions": [], "on_deny": "x"}]}}}
            """)
    }
}
