import CorralJSON
import Foundation
import Policy
import Synchronization

/// One decision as the audit trail keeps it: who, which tool, what was decided and why — the argument keys and a
/// SHA-256 of the arguments, never their values.
public struct AuditEntry: Sendable, Hashable {
    public let time: Date
    public let grant: String?
    public let session: String?
    public let tool: String
    /// `allow`, `deny` or `approval_required`; an approval's outcome is a second entry.
    public let decision: String
    public let rule: String
    public let message: String
    public let argumentKeys: [String]
    public let argumentsSHA256: String
    public let policyRevision: String
    public let latencyMicroseconds: Int
    /// True when the decision was recorded but not enforced (`--dry-run`).
    public let dryRun: Bool
    /// The MCP era of the call (`legacy` for 2025-11-25, `modern` for 2026-07-28), when it came over MCP.
    public let era: String?
    /// A `tasks/*` request's handle (the tool is then the method, the decision `forwarded` or `refused`).
    public let taskID: String?

    public init(
        decision: Decision, arguments: JSONValue?, identity: CallIdentity, latencyMicroseconds: Int,
        dryRun: Bool = false, era: String? = nil, time: Date = Date()
    ) {
        self.era = era
        self.time = time
        self.grant = identity.grant
        self.session = identity.session
        self.tool = decision.tool
        self.decision = decision.outcome.rawValue
        self.rule = decision.rule
        self.message = decision.message
        self.argumentKeys = arguments?.objectValue.map { $0.keys.sorted() } ?? []
        self.argumentsSHA256 = SHA256.hex((arguments ?? .null).jsonString().utf8)
        self.policyRevision = decision.revision.hex
        self.latencyMicroseconds = latencyMicroseconds
        self.dryRun = dryRun
        self.taskID = nil
    }

    /// A `tasks/*` request (Tasks extension): passed on for a handle the grant owns, refused otherwise (also when
    /// the policy store could not say who owns it: `storeProblem`).
    public init(
        taskMethod method: String, handle: String?, forwarded: Bool, identity: CallIdentity, policyRevision: String,
        latencyMicroseconds: Int, era: String? = "modern", storeProblem: String? = nil, time: Date = Date()
    ) {
        self.era = era
        self.time = time
        self.grant = identity.grant
        self.session = identity.session
        self.tool = method
        self.decision = forwarded ? "forwarded" : "refused"
        self.rule = storeProblem == nil ? "task_handle" : "policy_store"
        if let storeProblem {
            self.message = "policy store unavailable, task \(handle ?? "(no taskId)") cannot be checked: \(storeProblem)"
        } else if forwarded {
            self.message = "task \(handle ?? "") was created through this gateway for this grant"
        } else {
            self.message = "task \(handle ?? "(no taskId)") is not one this gateway saw created for this grant"
        }
        self.argumentKeys = ["taskId"]
        self.argumentsSHA256 = SHA256.hex((handle ?? "").utf8)
        self.policyRevision = policyRevision
        self.latencyMicroseconds = latencyMicroseconds
        self.dryRun = false
        self.taskID = handle
    }

    public var jsonValue: JSONValue { jsonValue(instance: nil) }

    /// `jsonValue(instance:)` as one line of text, byte for byte, written member by member in the keys' sorted
    /// order: building the dictionary and sorting its keys was a tenth of a proxied call's instructions.
    func line(instance: String?) -> [UInt8] {
        var line = JSONObjectWriter()
        line.member("argument_keys", argumentKeys)
        line.member("arguments_sha256", argumentsSHA256)
        line.member("decision", decision)
        if dryRun { line.member("dry_run", true) }
        if let era { line.member("era", era) }
        line.member("grant", grant)
        if let instance { line.member("instance", instance) }
        line.member("latency_us", latencyMicroseconds)
        line.member("message", message)
        line.member("policy_revision", policyRevision)
        line.member("rule", rule)
        line.member("session", session)
        if let taskID { line.member("task_id", taskID) }
        line.member("time", Timestamp.format(time))
        line.member("tool", tool)
        return line.line()
    }

    /// The line, with the gateway instance that wrote it when there is one. Built in one dictionary of its final
    /// size: merging the optional members in copied it once per member, on every call a proxy decides.
    func jsonValue(instance: String?) -> JSONValue {
        var line = [String: JSONValue](minimumCapacity: 16)
        // By hand: Foundation's ISO-8601 format style was most of the cost of an audit line.
        line["time"] = .string(Timestamp.format(time))
        line["grant"] = grant.map(JSONValue.string) ?? .null
        line["session"] = session.map(JSONValue.string) ?? .null
        line["tool"] = .string(tool)
        line["decision"] = .string(decision)
        line["rule"] = .string(rule)
        line["message"] = .string(message)
        line["argument_keys"] = .array(argumentKeys.map(JSONValue.string))
        line["arguments_sha256"] = .string(argumentsSHA256)
        line["policy_revision"] = .string(policyRevision)
        line["latency_us"] = .int(latencyMicroseconds)
        if dryRun { line["dry_run"] = true }
        if let era { line["era"] = .string(era) }
        if let taskID { line["task_id"] = .string(taskID) }
        if let instance { line["instance"] = .string(instance) }
        return .object(line)
    }
}

/// Why an audit entry could not be kept. A gateway refuses the call it could not record (fail closed).
public struct AuditFailure: Error, CustomStringConvertible, Sendable {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// Where audit entries go. Called on the caller's thread for every decision: keep it quick. Throwing means the
/// entry was not kept, and the call it records is refused: no call reaches a server without its audit line.
public protocol AuditSink: Sendable {
    func record(_ entry: AuditEntry) throws(AuditFailure)
}

/// An audit sink that appends one JSON line per entry to a file (created if missing; several processes may share it).
public final class AuditLog: AuditSink {
    private let file: JSONLinesFile
    private let instance: String?
    /// Whether the last write failed.
    private let failing = Mutex(false)
    /// Health reports, in the order the changes happened, off the caller's thread: a report may block (a full
    /// stderr pipe), and every call's audit line takes `failing`.
    private let reports = DispatchQueue(label: "corral.audit.health")
    private let onHealthChange: (@Sendable (AuditFailure?) -> Void)?

    /// `instance`: written into every line (`"instance"`), so that the streams of several gateways can be told apart.
    /// `onHealthChange` hears when writes start failing (with the first failure) and when they work again (nil),
    /// not once per call: a gateway says so on stderr.
    public init(
        path: String, instance: String? = nil, onHealthChange: (@Sendable (AuditFailure?) -> Void)? = nil
    ) throws(JSONLinesFileError) {
        file = try JSONLinesFile(appendingTo: path)
        self.instance = instance
        self.onHealthChange = onHealthChange
    }

    public func record(_ entry: AuditEntry) throws(AuditFailure) {
        let failure: AuditFailure?
        do {
            try file.append(line: entry.line(instance: instance))
            failure = nil
        } catch {
            failure = AuditFailure(error.description)
        }
        failing.withLock { failing in
            if failing != (failure != nil), let onHealthChange { reports.async { onHealthChange(failure) } }
            failing = failure != nil
        }
        if let failure { throw failure }
    }
}

/// An audit sink that calls a closure (an agent's own logger, a test's collector). A closure that throws refuses
/// the call it was asked to record, as a full audit file does.
public struct ClosureAuditSink: AuditSink {
    private let body: @Sendable (AuditEntry) throws -> Void
    public init(_ body: @escaping @Sendable (AuditEntry) throws -> Void) { self.body = body }
    public func record(_ entry: AuditEntry) throws(AuditFailure) {
        do {
            try body(entry)
        } catch let failure as AuditFailure {
            throw failure
        } catch {
            throw AuditFailure(String(describing: error))
        }
    }
}

/// Records `entry` in `audit`, if there is one; returns the failure, counted (`corral_audit_failures_total`), when
/// the entry could not be kept.
func recordAudit(_ entry: @autoclosure () -> AuditEntry, in audit: (any AuditSink)?) -> AuditFailure? {
    guard let audit else { return nil }
    do {
        try audit.record(entry())
        return nil
    } catch {
        GatewayMetrics.auditFailed()
        return error
    }
}

extension Decision {
    /// This decision once `audit` has recorded `entry`. A call the audit trail could not record is refused (rule
    /// `audit`) and its counters given back, unless it was denied already or nothing is enforced (`--dry-run`
    /// forwards everything, and says on stderr that its audit log fails).
    func audited(
        _ entry: @autoclosure () -> AuditEntry, to audit: (any AuditSink)?, enforced: Bool = true
    ) async -> Decision {
        guard let failure = recordAudit(entry(), in: audit), enforced, outcome != .deny else { return self }
        _ = try? await reservation?.rollback()  // if the store cannot take them back now, they stay spent (stricter)
        return overruled(
            rule: "audit", message: "the audit trail could not record this call, so it was not forwarded: \(failure)")
    }
}

extension Duration {
    var microseconds: Int { Int(components.seconds) * 1_000_000 + Int(components.attoseconds / 1_000_000_000_000) }
}
