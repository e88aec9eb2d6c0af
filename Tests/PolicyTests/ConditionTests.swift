import CorralJSON
import Testing

@testable import Policy

@Suite struct ConditionTests {
    struct OpCase: Sendable, CustomTestStringConvertible {
        let op: String
        let value: String  // JSON text
        let argument: JSONValue?  // nil: args.x missing
        let holds: Bool
        var testDescription: String { "\(op) \(value) on \(argument?.jsonString() ?? "missing") → \(holds)" }
    }

    static let opCases: [OpCase] = [
        OpCase(op: "eq", value: #""a""#, argument: "a", holds: true),
        OpCase(op: "eq", value: #""a""#, argument: "b", holds: false),
        OpCase(op: "eq", value: "1", argument: .double(1.0), holds: true),
        OpCase(op: "eq", value: "1", argument: "1", holds: false),
        OpCase(op: "eq", value: "null", argument: .null, holds: true),
        OpCase(op: "eq", value: #"{"k": [1, 2]}"#, argument: ["k": [1, 2]], holds: true),
        OpCase(op: "eq", value: #""a""#, argument: nil, holds: false),
        OpCase(op: "neq", value: #""a""#, argument: "b", holds: true),
        OpCase(op: "neq", value: #""a""#, argument: "a", holds: false),
        OpCase(op: "neq", value: #""a""#, argument: nil, holds: false),  // missing fails every op but exists
        OpCase(op: "in", value: #"["a", "b", 3]"#, argument: "b", holds: true),
        OpCase(op: "in", value: #"["a", "b", 3]"#, argument: .double(3), holds: true),
        OpCase(op: "in", value: #"["a", "b"]"#, argument: "c", holds: false),
        OpCase(op: "in", value: #"["a"]"#, argument: nil, holds: false),
        OpCase(op: "not_in", value: #"["a", "b"]"#, argument: "c", holds: true),
        OpCase(op: "not_in", value: #"["a", "b"]"#, argument: "a", holds: false),
        OpCase(op: "not_in", value: #"["a"]"#, argument: nil, holds: false),
        OpCase(op: "lt", value: "10", argument: 9, holds: true),
        OpCase(op: "lt", value: "10", argument: 10, holds: false),
        OpCase(op: "lt", value: "10", argument: .double(9.5), holds: true),
        OpCase(op: "lt", value: "10", argument: "9", holds: false),  // a string is not a number
        OpCase(op: "lte", value: "10", argument: 10, holds: true),
        OpCase(op: "lte", value: "10", argument: 11, holds: false),
        OpCase(op: "gt", value: "1.5", argument: 2, holds: true),
        OpCase(op: "gt", value: "1.5", argument: 1, holds: false),
        OpCase(op: "gte", value: "-1", argument: -1, holds: true),
        OpCase(op: "gte", value: "-1", argument: -2, holds: false),
        OpCase(op: "gte", value: "0", argument: nil, holds: false),
        OpCase(op: "regex", value: #""^ls( -l)?$""#, argument: "ls -l", holds: true),
        OpCase(op: "regex", value: #""rm\\s+-rf""#, argument: "sudo rm  -rf /", holds: true),  // search, not full match
        OpCase(op: "regex", value: #""^ls$""#, argument: "lsx", holds: false),
        OpCase(op: "regex", value: #""\\d+""#, argument: 12, holds: false),  // not a string
        OpCase(op: "contains", value: #""oo""#, argument: "foo", holds: true),
        OpCase(op: "contains", value: #""x""#, argument: "foo", holds: false),
        OpCase(op: "contains", value: #""--force""#, argument: ["git", "push", "--force"], holds: true),
        OpCase(op: "contains", value: "2", argument: [1, 2], holds: true),
        OpCase(op: "contains", value: "3", argument: [1, 2], holds: false),
        OpCase(op: "contains", value: #""a""#, argument: 5, holds: false),
        OpCase(op: "exists", value: "true", argument: "x", holds: true),
        OpCase(op: "exists", value: "true", argument: .null, holds: true),  // present, even when null
        OpCase(op: "exists", value: "true", argument: nil, holds: false),
        OpCase(op: "exists", value: "false", argument: nil, holds: true),
        OpCase(op: "exists", value: "false", argument: 1, holds: false),
        OpCase(op: "len_lte", value: "3", argument: "abc", holds: true),
        OpCase(op: "len_lte", value: "3", argument: "abcd", holds: false),
        OpCase(op: "len_lte", value: "2", argument: [1, 2], holds: true),
        OpCase(op: "len_lte", value: "1", argument: ["a": 1, "b": 2], holds: false),
        OpCase(op: "len_lte", value: "1", argument: "é", holds: true),  // characters, not bytes
        OpCase(op: "len_lte", value: "5", argument: 3, holds: false),
        OpCase(op: "len_gte", value: "1", argument: [], holds: false),
        OpCase(op: "len_gte", value: "1", argument: ["x"], holds: true),
        OpCase(op: "len_gte", value: "0", argument: "", holds: true),
        OpCase(op: "type", value: #""string""#, argument: "s", holds: true),
        OpCase(op: "type", value: #""string""#, argument: 1, holds: false),
        OpCase(op: "type", value: #""number""#, argument: .double(1.5), holds: true),
        OpCase(op: "type", value: #""integer""#, argument: 3, holds: true),
        OpCase(op: "type", value: #""integer""#, argument: .double(3.0), holds: true),
        OpCase(op: "type", value: #""integer""#, argument: .double(3.5), holds: false),
        OpCase(op: "type", value: #""boolean""#, argument: true, holds: true),
        OpCase(op: "type", value: #""null""#, argument: .null, holds: true),
        OpCase(op: "type", value: #""array""#, argument: [], holds: true),
        OpCase(op: "type", value: #""object""#, argument: [:], holds: true),
        OpCase(op: "type", value: #""object""#, argument: nil, holds: false),
    ]

    /// Every op through `require`: the call is allowed exactly when the condition holds.
    @Test(arguments: opCases)
    func opInRequire(_ c: OpCase) async throws {
        let engine = try evaluator(
            toolPolicy("t", #"{"require": [{"path": "args.x", "op": "\#(c.op)", "value": \#(c.value)}]}"#))
        let args: JSONValue = c.argument.map { .object(["x": $0]) } ?? .object([:])
        let decision = await engine.decide(tool: "t", arguments: args)
        #expect(decision.isAllowed == c.holds, "\(decision.message)")
        if !c.holds { #expect(decision.rule == "tools.t.require[0]") }
    }

    /// The same op through `deny_if`: a condition that holds denies; one that fails allows; one that cannot be
    /// checked (missing path, wrong type) denies too (fail closed).
    @Test(arguments: opCases)
    func opInDenyIf(_ c: OpCase) async throws {
        let engine = try evaluator(
            toolPolicy("t", #"{"deny_if": [{"conditions": [{"path": "args.x", "op": "\#(c.op)", "value": \#(c.value)}], "on_deny": "no"}]}"#))
        let args: JSONValue = c.argument.map { .object(["x": $0]) } ?? .object([:])
        let decision = await engine.decide(tool: "t", arguments: args)
        let condition = try #require(engine.policy.tools["t"]?.denyIf.first?.conditions.first)
        let outcome = condition.evaluate(args.objectValue ?? [:])
        let expectDeny: Bool
        switch outcome {
        case .holds: expectDeny = true
        case .fails: expectDeny = false
        case .undecidable: expectDeny = true
        }
        #expect(decision.isAllowed == !expectDeny)
        if expectDeny {
            #expect(decision.rule == "tools.t.deny_if[0]")
            #expect(decision.message.hasPrefix("no"))
        }
    }

    struct PathCase: Sendable, CustomTestStringConvertible {
        let path: String
        let expected: JSONValue?
        var testDescription: String { path }
    }

    static let arguments: [String: JSONValue] = [
        "argv": ["ls", "-l", ["nested": "deep"]],
        "opts": ["mode": "fast", "0": "zero-key", "list": [10, 20]],
        "a.b": "dotted",
    ]

    static let pathCases: [PathCase] = [
        PathCase(path: "args", expected: .object(arguments)),
        PathCase(path: "args.argv", expected: ["ls", "-l", ["nested": "deep"]]),
        PathCase(path: "args.argv.0", expected: "ls"),
        PathCase(path: "args.argv.1", expected: "-l"),
        PathCase(path: "args.argv[1]", expected: "-l"),
        PathCase(path: "args.argv.2.nested", expected: "deep"),
        PathCase(path: "args.argv[2].nested", expected: "deep"),
        PathCase(path: "args.argv.3", expected: nil),
        PathCase(path: "args.opts.mode", expected: "fast"),
        PathCase(path: "args.opts.0", expected: "zero-key"),  // a numeric segment is a key on an object
        PathCase(path: "args.opts[0]", expected: nil),  // a bracket is only ever an index
        PathCase(path: "args.opts.list.1", expected: 20),
        PathCase(path: "args.opts.list[0]", expected: 10),
        PathCase(path: "args.argv.x", expected: nil),
        PathCase(path: "args.missing.deeper", expected: nil),
        PathCase(path: "args.argv.0.length", expected: nil),
    ]

    @Test(arguments: pathCases)
    func pathForms(_ c: PathCase) async throws {
        let path = try ArgumentPath.parse(c.path).get()
        #expect(path.resolve(in: Self.arguments) == c.expected)
    }

    @Test func pathFormsDriveDecisions() async throws {
        let engine = try evaluator(
            toolPolicy("exec", #"{"require": [{"path": "args.argv.0", "op": "in", "value": ["ls", "cat"]}, {"path": "args.argv[1]", "op": "regex", "value": "^-"}]}"#))
        #expect(await engine.decide(tool: "exec", arguments: ["argv": ["ls", "-l"]]).isAllowed)
        #expect(await engine.decide(tool: "exec", arguments: ["argv": ["rm", "-rf"]]).rule == "tools.exec.require[0]")
        #expect(await engine.decide(tool: "exec", arguments: ["argv": ["ls", "/"]]).rule == "tools.exec.require[1]")
        #expect(await engine.decide(tool: "exec", arguments: ["argv": ["ls"]]).rule == "tools.exec.require[1]")
    }

    /// Conditions inside one deny_if item are ANDed; items are tried in order.
    @Test func denyIfConjunctionAndOrder() async throws {
        let engine = try evaluator(
            toolPolicy(
                "refund",
                #"""
                {"deny_if": [
                   {"conditions": [{"path": "args.amount", "op": "gt", "value": 100}, {"path": "args.currency", "op": "eq", "value": "USD"}], "on_deny": "too much"},
                   {"conditions": [{"path": "args.amount", "op": "gt", "value": 1000}], "on_deny": "way too much"}
                 ],
                 "require": [{"path": "args.reason", "op": "exists", "value": true}]}
                """#))
        let cases: [(JSONValue, String, Bool)] = [
            (["amount": 50, "currency": "USD", "reason": "r"], "tools.refund", true),
            (["amount": 150, "currency": "EUR", "reason": "r"], "tools.refund", true),
            (["amount": 150, "currency": "USD", "reason": "r"], "tools.refund.deny_if[0]", false),
            (["amount": 5000, "currency": "USD", "reason": "r"], "tools.refund.deny_if[0]", false),
            (["amount": 5000, "currency": "EUR", "reason": "r"], "tools.refund.deny_if[1]", false),
            (["amount": 50, "currency": "USD"], "tools.refund.require[0]", false),
            (["amount": "5000", "currency": "EUR", "reason": "r"], "tools.refund.deny_if[1]", false),  // wrong type: fail closed
        ]
        for (args, rule, allowed) in cases {
            let decision = await engine.decide(tool: "refund", arguments: args)
            #expect(decision.rule == rule, "\(args.jsonString())")
            #expect(decision.isAllowed == allowed, "\(args.jsonString())")
        }
        #expect(await engine.decide(tool: "refund", arguments: ["amount": 150, "currency": "USD", "reason": "r"]).message == "too much")
        #expect(await engine.decide(tool: "refund", arguments: ["amount": 50, "currency": "USD"]).message.contains("args.reason exists"))
    }

    @Test func emptyConditionsAlwaysDeny() async throws {
        let engine = try evaluator(toolPolicy("t", #"{"deny_if": [{"conditions": [], "on_deny": "Requires human approval."}]}"#))
        let decision = await engine.decide(tool: "t", arguments: [:])
        #expect(decision.outcome == .deny)
        #expect(decision.rule == "tools.t.deny_if[0]")
        #expect(decision.message == "Requires human approval.")
    }
}
