/// Whether a profile lets a task open a TCP connection: the port and HTTP condition watchers need one, and under a
/// profile that forbids it they would fail every check until their timeout instead of saying why at once.
extension SandboxProfile {
    /// Why a process under this profile cannot connect a TCP socket of one of `families` (either will do: a host
    /// name may resolve to both) to `port`, or nil when it can. Read from the rules as `SeccompCompiler` and
    /// `SandboxPreparation` apply them, not by trying: `socket` is allowed by its family rule, Landlock's TCP ports
    /// hold only where the kernel has Landlock ABI 4 (`landlockABI`).
    public func tcpConnectRefusal(
        port: Int, families: Set<String> = ["AF_INET", "AF_INET6"], landlockABI: Int = Landlock.abiVersion
    ) -> String? {
        for syscall in ["socket", "connect"] where !allowsSyscall(syscall) {
            return "the profile \(name) does not allow the \(syscall) system call"
        }
        if let allowed = socketFamilies?.allow {
            if families.isDisjoint(with: allowed) {
                return "the profile \(name) allows only sockets of the families \(allowed.joined(separator: ", "))"
            }
        } else if let denied = socketFamilies?.deny, families.isSubset(of: denied) {
            return "the profile \(name) denies \(families.sorted().joined(separator: " and ")) sockets"
        }
        if let rules = landlock, rules.tcpBind != nil || rules.tcpConnect != nil, landlockABI >= 4 {
            let ports = rules.tcpConnect ?? []
            if !ports.contains(where: { Int($0) == port }) {
                let listed = ports.map(String.init).joined(separator: ", ")
                return "the profile \(name) lets tasks connect to "
                    + (ports.isEmpty ? "no TCP port" : "TCP ports \(listed) only")
            }
        }
        return nil
    }

    /// As the compiled filter has it: a deny rule wins; an allow-list profile allows `socket` through its family
    /// rule when it has one.
    private func allowsSyscall(_ syscall: String) -> Bool {
        if deny.contains(where: { $0.syscalls.contains(syscall) }) { return false }
        switch defaultAction {
        case .allow: return true
        case .deny: return allow.contains(syscall) || (syscall == "socket" && socketFamilies != nil)
        }
    }
}
