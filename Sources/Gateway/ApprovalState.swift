import CorralJSON
import Crypto
import Foundation
import Policy

/// The `requestState` of a 2026-07-28 approval round trip: what the proxy asked about, sealed so that the client
/// cannot change it, and honoured once.
///
/// The client sends it back byte for byte with its answer; it is untrusted input. It binds the grant, the tool and
/// a SHA-256 of the arguments (so it cannot approve another call), expires with the approval timeout, carries a
/// random nonce that is redeemed once (a replay is refused), and is authenticated with HMAC-SHA256 under a key of
/// this process (or one given to it), so that a forged or altered state is refused. It is not a credential: the
/// call is still decided by the policy when it comes back. Redeemed nonces are claimed in the policy store, so
/// proxies sharing a store (and the key) honour a state once between them.
public final class ApprovalStates: Sendable {
    public enum Refusal: Error, Sendable, Equatable, CustomStringConvertible {
        case malformed
        case forged
        case expired
        case replayed
        case boundElsewhere(String)
        case storeUnavailable(String)

        public var description: String {
            switch self {
            case .malformed: "the requestState is not one this proxy issued"
            case .forged: "the requestState was altered or not issued by this proxy"
            case .expired: "the approval was not given in time"
            case .replayed: "the approval was already used"
            case .boundElsewhere(let what): "the requestState was issued for another \(what)"
            case .storeUnavailable(let why): "policy store unavailable: \(why)"
            }
        }
    }

    private let key: SymmetricKey
    private let lifetime: Duration
    /// Where redeemed nonces are claimed, until their states expire.
    private let store: any PolicyStore

    /// `secret`: a key shared by several proxies (32 bytes or more); nil draws one for this process.
    public init(secret: [UInt8]? = nil, lifetime: Duration, store: any PolicyStore = MemoryPolicyStore()) {
        key = secret.map { SymmetricKey(data: $0) } ?? SymmetricKey(size: .bits256)
        self.lifetime = lifetime
        self.store = store
    }

    /// A state for one call of `tool` with `arguments` by `grant`.
    public func issue(grant: String?, tool: String, arguments: JSONValue?, now: Date = Date()) -> String {
        var nonce = [UInt8](repeating: 0, count: 16)
        var generator = SystemRandomNumberGenerator()
        for index in nonce.indices { nonce[index] = generator.next() }
        let expiry = now.addingTimeInterval(Double(lifetime.components.seconds) + Double(lifetime.components.attoseconds) / 1e18)
        let payload: JSONValue = [
            "v": 1, "g": grant.map(JSONValue.string) ?? .null, "t": .string(tool),
            "a": .string(Self.hash(arguments)), "e": .int(Int(expiry.timeIntervalSince1970 * 1000)),
            "n": .string(Data(nonce).base64URL),
        ]
        let body = Data(payload.jsonString().utf8)
        let mac = HMAC<Crypto.SHA256>.authenticationCode(for: body, using: key)
        return body.base64URL + "." + Data(mac).base64URL
    }

    /// Checks a state sent back for this call and redeems it; any failure says why.
    public func redeem(
        _ state: String, grant: String?, tool: String, arguments: JSONValue?, now: Date = Date()
    ) async -> Result<Void, Refusal> {
        let parts = state.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let body = Data(base64URL: String(parts[0])), let mac = Data(base64URL: String(parts[1])) else {
            return .failure(.malformed)
        }
        // Constant time: the comparison must not tell how much of a forged code was right.
        guard HMAC<Crypto.SHA256>.isValidAuthenticationCode(mac, authenticating: body, using: key) else { return .failure(.forged) }
        guard let payload = try? JSONValue.parse(body), payload["v"] == 1, let nonce = payload["n"]?.stringValue,
            let expiry = payload["e"]?.intValue
        else { return .failure(.malformed) }
        guard Int(now.timeIntervalSince1970 * 1000) <= expiry else { return .failure(.expired) }
        guard payload["g"] == (grant.map(JSONValue.string) ?? .null) else { return .failure(.boundElsewhere("grant")) }
        guard payload["t"]?.stringValue == tool else { return .failure(.boundElsewhere("tool")) }
        guard payload["a"]?.stringValue == Self.hash(arguments) else { return .failure(.boundElsewhere("set of arguments")) }
        do {
            let fresh = try await store.claimOnce(
                "approval:" + nonce, expiresAtMs: Int64(expiry) + 1, nowMs: Int64(now.timeIntervalSince1970 * 1000))
            return fresh ? .success(()) : .failure(.replayed)
        } catch {
            return .failure(.storeUnavailable(error.message))
        }
    }

    static func hash(_ arguments: JSONValue?) -> String {
        let digest = Crypto.SHA256.hash(data: Data((arguments ?? .null).jsonString().utf8))
        return digest.map { String(format: "%02x", $0) }.joined()
    }
}

extension Data {
    var base64URL: String {
        base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    init?(base64URL text: String) {
        guard text.utf8.allSatisfy({ $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || (0x30...0x39).contains($0)
            || (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0) })
        else { return nil }
        var standard = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while standard.count % 4 != 0 { standard += "=" }
        self.init(base64Encoded: standard)
    }
}
