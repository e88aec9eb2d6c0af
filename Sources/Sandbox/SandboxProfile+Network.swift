/// Whether a profile lets a task open a TCP connection: the port and HTTP condition watchers need one, and under a
/// profile that forbids it they would fail every check until their timeout instead of saying why at once.
extension SandboxProfile {
    /// Why a process under this profile cannot connect a TCP socket to `port`, or nil when it can. Read from the
    /// profile's rules (system calls, socket families, Landlock's TCP ports), not by trying.
    public func tcpConnectRefusal(port: Int) -> String? {
        for syscall in ["socket", "connect"] where !allowsSyscall(syscall) {
            return "the profile \(name) does not allow the \(syscall) system call"
        }
        if let families = socketFamilies {
            let internet = ["AF_INET", "AF_INET6"]
            if let allowed = families.allow, !internet.contains(where: allowed.contains) {
                return "the profile \(name) allows only sockets of the families \(allowed.joined(separator: ", "))"
            }
            if let denied = families.deny, internet.allSatisfy(denied.contains) {
                return "the profile \(name) denies AF_INET and AF_INET6 sockets"
            }
        }
        if let ports = landlock?.tcpConnect, !ports.contains(where: { Int($0) == port }) {
            let listed = ports.map(String.init).joined(separator: ", ")
            return "the profile \(name) lets tasks connect only to TCP ports \(listed)"
        }
        return nil
    }

    private func allowsSyscall(_ syscall: String) -> Bool {
        switch defaultAction {
        case .allow: !deny.contains { $0.syscalls.contains(syscall) }
        case .deny: allow.contains(syscall)
        }
    }
}
