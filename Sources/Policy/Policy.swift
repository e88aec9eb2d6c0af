#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CorralJSON

/// A loaded, validated policy: immutable, so an evaluator can swap it atomically on reload.
public struct Policy: Sendable {
    /// All fields live in one immutable object, so copying a `Policy` (e.g. out of the evaluator's lock on every
    /// decision) costs one retain.
    private final class Storage: Sendable {
        let defaultEffect: DefaultEffect
        let hidden: Set<String>
        let hidesEverything: Bool
        let allToolsLimits: [Limit]
        let tools: [String: ToolRule]
        let revision: PolicyRevision
        let foldedNames: [String: String]

        init(
            defaultEffect: DefaultEffect, hidden: Set<String>, hidesEverything: Bool, allToolsLimits: [Limit],
            tools: [String: ToolRule], revision: PolicyRevision, foldedNames: [String: String]
        ) {
            self.defaultEffect = defaultEffect
            self.hidden = hidden
            self.hidesEverything = hidesEverything
            self.allToolsLimits = allToolsLimits
            self.tools = tools
            self.revision = revision
            self.foldedNames = foldedNames
        }
    }

    private let storage: Storage

    public var defaultEffect: DefaultEffect { storage.defaultEffect }
    /// Names listed under `hide` (without `*`).
    public var hidden: Set<String> { storage.hidden }
    /// `hide` contains `"*"`: every tool is hidden.
    public var hidesEverything: Bool { storage.hidesEverything }
    public var allToolsLimits: [Limit] { storage.allToolsLimits }
    public var tools: [String: ToolRule] { storage.tools }
    /// SHA-256 of the bytes the policy was loaded from.
    public var revision: PolicyRevision { storage.revision }
    /// Folded name → policy name, for every hidden or listed tool (look-alike detection).
    var foldedNames: [String: String] { storage.foldedNames }

    init(
        defaultEffect: DefaultEffect, hidden: Set<String>, hidesEverything: Bool, allToolsLimits: [Limit],
        tools: [String: ToolRule], revision: PolicyRevision
    ) {
        var folded: [String: String] = [:]
        for name in hidden.sorted() + tools.keys.sorted() where folded[NameFolding.fold(name)] == nil {
            folded[NameFolding.fold(name)] = name
        }
        storage = Storage(
            defaultEffect: defaultEffect, hidden: hidden, hidesEverything: hidesEverything,
            allToolsLimits: allToolsLimits, tools: tools, revision: revision, foldedNames: folded)
    }

    /// Loads and validates a policy file; every problem is reported, each with its JSON path.
    public static func load(contentsOfFile path: String) throws(PolicyLoadError) -> Policy {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw PolicyLoadError(issues: [PolicyIssue(path: "(file)", message: "cannot read \(path): \(error)")])
        }
        return try load(data: data)
    }

    /// Loads and validates policy JSON text.
    public static func load(data: Data) throws(PolicyLoadError) -> Policy {
        let json: JSONValue
        do {
            json = try JSONValue.parse(data)
        } catch {
            throw PolicyLoadError(issues: [PolicyIssue(path: "(root)", message: "not valid JSON: \(describe(error))")])
        }
        let duplicates = DuplicateKeys.find(in: data)
        let validated: Result<Policy, PolicyLoadError>
        do {
            validated = .success(try PolicyValidator.validate(json, revision: PolicyRevision(of: data)))
        } catch {
            validated = .failure(error)
        }
        switch validated {
        case .success(let policy) where duplicates.isEmpty: return policy
        case .success: throw PolicyLoadError(issues: duplicates)
        case .failure(let error): throw PolicyLoadError(issues: duplicates + error.issues)
        }
    }

    /// Loads and validates policy JSON text given as a string.
    public static func load(text: String) throws(PolicyLoadError) -> Policy {
        try load(data: Data(text.utf8))
    }

    /// Whether calls to `name` are refused by `hide`, including names that only imitate a hidden name.
    public func isHidden(_ name: String) -> Bool {
        if hidesEverything || hidden.contains(name) { return true }
        guard let original = foldedNames[NameFolding.fold(name)] else { return false }
        return hidden.contains(original)
    }

    /// The policy name `name` imitates (same after case, NFKC, confusable and zero-width folding), when `name` is
    /// not itself hidden or listed. `folded` is `NameFolding.fold(name)`, which the caller needs too.
    func lookalikeTarget(of name: String, folded: String) -> String? {
        guard let original = foldedNames[folded], original != name else { return nil }
        return original
    }

    private static func describe(_ error: any Error) -> String {
        if let decoding = error as? DecodingError {
            switch decoding {
            case .dataCorrupted(let context):
                if let underlying = context.underlyingError { return "\(underlying)" }
                return context.debugDescription
            default: return "\(decoding)"
            }
        }
        return "\(error)"
    }
}

/// One problem found while loading a policy.
public struct PolicyIssue: Sendable, Hashable, CustomStringConvertible {
    /// JSON path of the offending value, e.g. `tools.pause_background_task.limits[0].window`.
    public let path: String
    public let message: String
    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { "\(path): \(message)" }
}

/// A policy was refused; `issues` lists every problem found, not just the first.
public struct PolicyLoadError: Error, Sendable, CustomStringConvertible {
    public let issues: [PolicyIssue]
    public init(issues: [PolicyIssue]) { self.issues = issues }
    public var description: String { issues.map(\.description).joined(separator: "\n") }
}
