import CorralJSON
import Testing

@testable import Policy

@Suite struct EvaluationOrderTests {
    /// One policy exercising every stage; each row names the stage that must decide.
    static let policyText = """
        {"version": "1", "default": "deny", "hide": ["secret", "both"],
         "all_tools": {"limits": [{"counter": "everything", "window": "minute", "max": 100, "scope": "global"}]},
         "tools": {
           "both": {},
           "blocked": {"action": "deny", "reason": "Blocked for maintenance.", "deny_if": [{"conditions": []}]},
           "guarded": {"deny_if": [{"conditions": [], "on_deny": "never"}], "require": [{"path": "args.x", "op": "exists"}]},
           "needs": {"require": [{"path": "args.reason", "op": "exists"}], "action": "require_approval"},
           "approve": {"action": "require_approval", "reason": "Requires human approval.",
                       "limits": [{"counter": "approve_rate", "window": "minute", "max": 1}]},
           "limited": {"limits": [{"counter": "limited_rate", "window": "minute", "max": 1}]},
           "open": {},
           "open2": {"action": "allow"}
         }}
        """

    @Test(arguments: [
        ("secret", "deny", "hide", #"Tool "secret" is hidden by policy"#),
        ("both", "deny", "hide", #"Tool "both" is hidden by policy"#),  // hide beats a tools entry
        ("blocked", "deny", "tools.blocked.action", "Blocked for maintenance."),  // explicit deny before deny_if
        ("unlisted", "deny", "default_deny", #"Tool "unlisted" is not permitted by policy"#),
        ("guarded", "deny", "tools.guarded.deny_if[0]", "never"),  // deny_if before require
        ("needs", "deny", "tools.needs.require[0]", "Required condition not met: args.reason exists"),  // require before approval
        ("approve", "approval_required", "tools.approve.action", "Requires human approval."),
        ("limited", "allow", "tools.limited", "Allowed by policy"),
        ("open", "allow", "tools.open", "Allowed by policy"),
        ("open2", "allow", "tools.open2", "Allowed by policy"),
    ])
    func stageThatDecides(tool: String, outcome: String, rule: String, message: String) async throws {
        let engine = try evaluator(Self.policyText)
        let decision = await engine.decide(tool: tool, arguments: [:])
        #expect(decision.outcome.rawValue == outcome)
        #expect(decision.rule == rule)
        #expect(decision.message == message)
        #expect(decision.revision == engine.policy.revision)
    }

    /// Approval comes before limits: an unresolved approval reserves nothing; approving then counts.
    @Test func approvalThenLimits() async throws {
        let engine = try evaluator(Self.policyText)
        let first = await engine.decide(tool: "approve", arguments: ["k": 1], identity: CallIdentity(grant: "g"))
        let pending = try #require(first.pendingApproval)
        #expect(first.counters.isEmpty)
        #expect(pending.arguments == ["k": 1])
        let approved = await engine.resolveApproval(pending, approved: true)
        #expect(approved.outcome == .allow)
        #expect(approved.counters.first(where: { $0.key.counter == "approve_rate" })?.value == 1)
        // The limit still applies after approval.
        let again = try #require(await engine.decide(tool: "approve", arguments: [:], identity: CallIdentity(grant: "g")).pendingApproval)
        let limited = await engine.resolveApproval(again, approved: true)
        #expect(limited.outcome == .deny)
        #expect(limited.rule == "tools.approve.limits[0]")
        let refused = await engine.resolveApproval(again, approved: false)
        #expect(refused.outcome == .deny)
        #expect(refused.rule == "tools.approve.action")
        #expect(refused.message.contains("was refused"))
    }

    /// An approval resolved after a reload is judged by the new policy.
    @Test func approvalAfterReload() async throws {
        let engine = try evaluator(toolPolicy("t", #"{"action": "require_approval"}"#))
        let pending = try #require(await engine.decide(tool: "t", arguments: [:]).pendingApproval)
        #expect(pending.message == #"Tool "t" requires approval"#)
        engine.replacePolicy(try load(toolPolicy("t", #"{"action": "deny"}"#)))
        #expect(await engine.resolveApproval(pending, approved: true).rule == "tools.t.action")
    }

    @Test func defaultAllow() async throws {
        let engine = try evaluator(#"{"version": "1", "default": "allow", "hide": ["h"], "tools": {"d": {"action": "deny"}}}"#)
        #expect(await engine.decide(tool: "anything", arguments: [:]).rule == "default_allow")
        #expect(await engine.decide(tool: "anything", arguments: [:]).isAllowed)
        #expect(await engine.decide(tool: "h", arguments: [:]).rule == "hide")
        #expect(await engine.decide(tool: "d", arguments: [:]).message == #"Tool "d" is denied by policy"#)
    }

    @Test func hideEverything() async throws {
        let engine = try evaluator(#"{"version": "1", "default": "allow", "hide": ["*"], "tools": {"t": {}}}"#)
        #expect(await engine.decide(tool: "t", arguments: [:]).rule == "hide")
        #expect(await engine.decide(tool: "x", arguments: [:]).rule == "hide")
        #expect(engine.filterToolList([["name": "t"], ["name": "x"]]).isEmpty)
    }

    @Test func swapPolicy() async throws {
        let engine = try evaluator(toolPolicy("t", "{}"))
        #expect(await engine.decide(tool: "t", arguments: [:]).isAllowed)
        let old = engine.replacePolicy(try load(#"{"version": "1", "default": "deny", "hide": ["t"]}"#))
        #expect(old.tools["t"] != nil)
        #expect(await engine.decide(tool: "t", arguments: [:]).rule == "hide")
    }
}

@Suite struct FailClosedTests {
    @Test(arguments: [
        (JSONValue.array([1]), "array"), (.string("x"), "string"), (.int(1), "number"), (.null, "null"), (.bool(true), "boolean"),
    ])
    func argumentsMustBeAnObject(arguments: JSONValue, type: String) async throws {
        let engine = try evaluator(#"{"version": "1", "default": "allow"}"#)
        let decision = await engine.decide(tool: "t", arguments: arguments)
        #expect(decision.outcome == .deny)
        #expect(decision.rule == "invalid_call")
        #expect(decision.message == "Tool call arguments must be a JSON object, got \(type)")
    }

    @Test func missingArgumentsAreAnEmptyObject() async throws {
        let engine = try evaluator(#"{"version": "1", "default": "allow"}"#)
        #expect(await engine.decide(tool: "t", arguments: nil).isAllowed)
    }

    @Test(arguments: [nil, "", "\u{200B}", "\u{FEFF}\u{200D}"] as [String?])
    func missingOrEmptyName(name: String?) async throws {
        let engine = try evaluator(#"{"version": "1", "default": "allow"}"#)
        let decision = await engine.decide(tool: name, arguments: [:])
        #expect(decision.outcome == .deny)
        #expect(decision.rule == "invalid_call")
    }

    /// Names that a reader would take for a hidden, denied or limited tool are denied, even under `default: allow`.
    @Test(arguments: [
        "Cancel_background_task", "CANCEL_BACKGROUND_TASK",
        "c\u{0430}ncel_background_task",  // Cyrillic а
        "cancel_b\u{0430}ckground_t\u{0430}sk",
        "canc\u{0435}l_background_task",  // Cyrillic е
        "cancel_backgr\u{03BF}und_task",  // Greek ο
        "\u{0421}ancel_background_task",  // Cyrillic С
        "cancel\u{200B}_background_task",  // zero-width space
        "\u{FEFF}cancel_background_task",  // BOM
        "cancel_background_task\u{200D}",  // zero-width joiner
        "ｃａｎｃｅｌ_background_task",  // fullwidth (NFKC)
        "cancel＿background＿task",  // fullwidth low line (NFKC)
        "DELETE_EVERYTHING", "d\u{0435}lete_everything", "Pause_Task",
    ])
    func lookalikes(name: String) async throws {
        let engine = try evaluator(
            """
            {"version": "1", "default": "allow", "hide": ["cancel_background_task"],
             "tools": {"delete_everything": {"action": "deny"},
                       "pause_task": {"limits": [{"counter": "p", "window": "minute", "max": 1}]}}}
            """)
        let decision = await engine.decide(tool: name, arguments: [:])
        #expect(decision.outcome == .deny)
        #expect(decision.rule == "lookalike")
    }

    @Test func lookalikesOfHiddenToolsAreFilteredFromLists() async throws {
        let policy = try load(#"{"version": "1", "default": "allow", "hide": ["cancel_background_task"]}"#)
        #expect(policy.isHidden("Cancel_Background_Task"))
        #expect(policy.isHidden("c\u{0430}ncel_background_task"))
        #expect(!policy.isHidden("cancel_background_tasks"))
    }

    @Test func distinctNamesAreNotLookalikes() async throws {
        let engine = try evaluator(#"{"version": "1", "default": "allow", "hide": ["cancel_background_task"]}"#)
        #expect(await engine.decide(tool: "cancel_background_tasks", arguments: [:]).isAllowed)
        #expect(await engine.decide(tool: "get_background_task", arguments: [:]).isAllowed)
        #expect(await engine.decide(tool: "отмена", arguments: [:]).isAllowed)
    }
}

@Suite struct ToolListAndRenderingTests {
    @Test func filteringKeepsEveryOtherFieldUntouched() async throws {
        let policy = try load(try String(contentsOf: packageRoot.appendingPathComponent("policies/hide-cancel.json"), encoding: .utf8))
        let pause: JSONValue = [
            "name": "pause_background_task", "description": "Pause", "inputSchema": ["type": "object", "properties": [:]],
            "_meta": ["io.example/flag": true, "nested": [1, 2, ["x": nil]]], "execution": ["taskSupport": "optional"],
            "annotations": ["destructiveHint": false], "unknownField": 42,
        ]
        let cancel: JSONValue = ["name": "cancel_background_task", "_meta": ["a": 1]]
        let lookalike: JSONValue = ["name": "Cancel_background_task"]
        let nameless: JSONValue = ["description": "no name"]
        let filtered = policy.filterToolList([pause, cancel, lookalike, nameless, .string("junk")])
        #expect(filtered == [pause])

        let result: JSONValue = ["tools": [pause, cancel], "nextCursor": "abc", "_meta": ["trace": "t1"]]
        #expect(policy.filterToolsListResult(result) == ["tools": [pause], "nextCursor": "abc", "_meta": ["trace": "t1"]])
        #expect(policy.filterToolsListResult(["other": 1]) == ["other": 1])
    }

    @Test func filteringDoesNotRemoveDeniedOrUnlistedTools() async throws {
        // Listing and calling are separate: only `hide` removes a tool from the list.
        let policy = try load(#"{"version": "1", "default": "deny", "tools": {"d": {"action": "deny"}}}"#)
        #expect(policy.filterToolList([["name": "d"], ["name": "other"]]) == [["name": "d"], ["name": "other"]])
    }

    @Test func denialRendering() async throws {
        let engine = try evaluator(toolPolicy("t", #"{"limits": [{"counter": "c", "window": "minute", "max": 1}]}"#))
        #expect(await engine.decide(tool: "t", arguments: [:]).deniedToolResult == Optional<JSONValue>.none)
        let denied = await engine.decide(tool: "t", arguments: [:])
        let result = try #require(denied.deniedToolResult)
        #expect(
            result == [
                "content": [["type": "text", "text": "[POLICY DENIED] Rate limit of 1 per minute reached. Try again later."]],
                "isError": true,
                "structuredContent": [
                    "rule": "tools.t.limits[0]", "message": "Rate limit of 1 per minute reached. Try again later.",
                    "retry_after_ms": 60000,
                ],
            ])
        let hidden = try #require(await engine.decide(tool: "x", arguments: [:]).deniedToolResult)
        #expect(hidden["structuredContent"]?["retry_after_ms"] == Optional<JSONValue>.none)
        #expect(hidden["structuredContent"]?["rule"] == "default_deny")
        #expect(hidden["content"]?.arrayValue?.first?["text"] == #"[POLICY DENIED] Tool "x" is not permitted by policy"#)
    }
}
