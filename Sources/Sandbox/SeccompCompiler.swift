import CCorral
import CSeccomp
import Glibc
import Synchronization

/// Compiles a profile into a classic BPF program with libseccomp, in the parent, once per profile.
///
/// Pitfalls handled here (each has a test): `int` arguments are compared with SCMP_CMP_MASKED_EQ on the low 32 bits
/// only, so high bits cannot slip past a compare; only the native architecture is in the filter and libseccomp's
/// bad-architecture action (kill) stays, so `int 0x80` and x32 calls die; `seccomp_rule_add` is variadic, so rules
/// go through `seccomp_rule_add_array`.
public enum SeccompCompiler {
    /// Keyed by what shapes the filter only: profiles differing in name, limits or paths share one program.
    private struct FilterKey: Hashable {
        var profile: SandboxProfile

        init(_ profile: SandboxProfile) {
            var normalized = profile
            normalized.name = ""
            normalized.description = nil
            normalized.rlimits = [:]
            normalized.landlock = nil
            self.profile = normalized
        }
    }

    private static let cache = Mutex<[FilterKey: [UInt64]]>([:])

    /// The BPF program (8-byte `struct sock_filter` instructions in native layout) for a profile; cached.
    public static func program(for profile: SandboxProfile) throws(SandboxError) -> [UInt64] {
        let key = FilterKey(profile)
        if let cached = cache.withLock({ $0[key] }) { return cached }
        let context = try build(profile)
        defer { seccomp_release(context) }
        let bytes = try export(context, operation: "seccomp_export_bpf") { seccomp_export_bpf($0, $1) }
        var program = [UInt64](repeating: 0, count: bytes.count / 8)
        program.withUnsafeMutableBytes { target in
            bytes.withUnsafeBytes { source in
                target.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[0..<target.count]))
            }
        }
        if let above = profile.denySyscallsAbove, profile.defaultAction == .allow {
            guard let highest = SandboxNames.syscallNumber(above) else {
                throw .seccomp(operation: "unknown system call \(above)", errno: EINVAL)
            }
            program = try newerSyscallsPrologue(above: UInt32(highest)) + program
        }
        cache.withLock { $0[key] = program }
        return program
    }

    /// Written by hand because libseccomp has rules for single syscall numbers only, not "every number above N":
    /// on the native architecture, a number in (N, 0x40000000) returns ENOSYS; anything else (another architecture,
    /// an x32 number, N and below) falls through to libseccomp's program unchanged, which checks the architecture
    /// again first, so its bad-architecture kill still applies.
    static func newerSyscallsPrologue(above highest: UInt32) throws(SandboxError) -> [UInt64] {
        guard let architecture = nativeAuditArchitecture else {
            throw .seccomp(operation: "deny_syscalls_above on this architecture", errno: ENOTSUP)
        }
        func instruction(_ code: UInt16, _ jt: UInt8, _ jf: UInt8, _ k: UInt32) -> UInt64 {
            // struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; } in native (little-endian) layout
            UInt64(code) | UInt64(jt) << 16 | UInt64(jf) << 24 | UInt64(k) << 32
        }
        let loadWord: UInt16 = 0x20  // BPF_LD | BPF_W | BPF_ABS
        let jumpEqual: UInt16 = 0x15  // BPF_JMP | BPF_JEQ | BPF_K
        let jumpGreater: UInt16 = 0x25  // BPF_JMP | BPF_JGT | BPF_K
        let jumpGreaterOrEqual: UInt16 = 0x35  // BPF_JMP | BPF_JGE | BPF_K
        let returnConstant: UInt16 = 0x06  // BPF_RET | BPF_K
        return [
            instruction(loadWord, 0, 0, 4),  // seccomp_data.arch
            instruction(jumpEqual, 0, 4, architecture),  // not native: to libseccomp's program
            instruction(loadWord, 0, 0, 0),  // seccomp_data.nr
            instruction(jumpGreater, 0, 2, highest),  // N and below: to libseccomp's program
            instruction(jumpGreaterOrEqual, 1, 0, 0x4000_0000),  // x32: to libseccomp's program (it kills)
            instruction(returnConstant, 0, 0, errnoAction(ENOSYS)),
        ]
    }

    static var nativeAuditArchitecture: UInt32? {
        #if arch(x86_64)
            return 0xC000_003E  // AUDIT_ARCH_X86_64
        #elseif arch(arm64)
            return 0xC000_00B7  // AUDIT_ARCH_AARCH64
        #else
            return nil
        #endif
    }

    /// The filter in libseccomp's readable form (PFC).
    public static func printFilter(_ profile: SandboxProfile) throws(SandboxError) -> String {
        let context = try build(profile)
        defer { seccomp_release(context) }
        let bytes = try export(context, operation: "seccomp_export_pfc") { seccomp_export_pfc($0, $1) }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func errnoAction(_ code: Int32) -> UInt32 { 0x0005_0000 | (UInt32(code) & 0xFFFF) }

    static let actionAllow: UInt32 = 0x7FFF_0000

    /// A masked compare of an argument's low 32 bits: the high half is masked out, as the kernel ignores it for
    /// `int` arguments.
    struct Cube: Hashable {
        var mask: UInt32
        var value: UInt32
    }

    /// Cubes (mask, value) whose union is exactly the 32-bit values NOT in `values`.
    static func complement(of values: Set<UInt32>) -> [Cube] {
        if let compact = compactComplement(of: values) { return compact }
        return prefixComplement(of: values)
    }

    /// A short cover (32 cubes of 2 or 3 bits) for sets shaped like the harmless personalities: every combination
    /// of a few pairwise non-adjacent "free" bits, plus 0xFFFFFFFF. A value is outside such a set iff some other
    /// bit is 1 and some bit is 0: walking the bits cyclically from a set non-free bit, the last 1 before the first
    /// 0 is matched by the cube of its position. Shorter filters load faster (the kernel JITs each one).
    static func compactComplement(of values: Set<UInt32>) -> [Cube]? {
        guard values.contains(0xFFFF_FFFF) else { return nil }
        let free = values.subtracting([0xFFFF_FFFF]).reduce(UInt32(0)) { $0 | $1 }
        let freeBits = (0..<32).filter { free & (UInt32(1) << UInt32($0)) != 0 }
        let expected = 1 << freeBits.count
        guard freeBits.count < 8, values.count == expected + 1, free != 0xFFFF_FFFF else { return nil }
        // Every subset of the free bits must be in the set, and no two free bits may be neighbours.
        for subset in 0..<expected {
            var value: UInt32 = 0
            for (index, bit) in freeBits.enumerated() where subset & (1 << index) != 0 { value |= 1 << UInt32(bit) }
            guard values.contains(value) else { return nil }
        }
        func bit(_ position: Int) -> UInt32 { UInt32(1) << UInt32((position + 32) % 32) }
        if freeBits.contains(where: { free & bit($0 + 1) != 0 }) { return nil }
        return (0..<32).map { k in
            if free & bit(k) == 0 {
                return Cube(mask: bit(k) | bit(k + 1), value: bit(k))
            }
            return Cube(mask: bit(k - 1) | bit(k) | bit(k + 1), value: bit(k - 1) | bit(k))
        }
    }

    static func prefixComplement(of values: Set<UInt32>) -> [Cube] {
        var cubes: [Cube] = []
        func split(_ set: Set<UInt32>, bit: Int, mask: UInt32, prefix: UInt32) {
            if set.isEmpty {
                cubes.append(Cube(mask: mask, value: prefix))
                return
            }
            guard bit >= 0 else { return }
            let b = UInt32(1) << UInt32(bit)
            split(set.filter { $0 & b == 0 }, bit: bit - 1, mask: mask | b, prefix: prefix)
            split(set.filter { $0 & b != 0 }, bit: bit - 1, mask: mask | b, prefix: prefix | b)
        }
        split(values, bit: 31, mask: 0, prefix: 0)
        return cubes
    }

    static func build(_ profile: SandboxProfile) throws(SandboxError) -> UnsafeMutableRawPointer {
        let allowMode = profile.defaultAction == .allow
        let defaultErrno = SandboxNames.errnos[profile.defaultErrno ?? "EPERM"] ?? EPERM
        let defaultAction = allowMode ? actionAllow : errnoAction(defaultErrno)
        guard let raw = seccomp_init(defaultAction) else { throw .seccomp(operation: "seccomp_init", errno: EINVAL) }
        do throws(SandboxError) {
            // Binary tree of syscall numbers: lookup cost grows with log(rules), not their count.
            try check(seccomp_attr_set(raw, SCMP_FLTATR_CTL_OPTIMIZE, 2), "SCMP_FLTATR_CTL_OPTIMIZE")
            try addRules(profile, to: raw, allowMode: allowMode, defaultErrno: defaultErrno)
        } catch {
            seccomp_release(raw)
            throw error
        }
        return raw
    }

    private static func addRules(
        _ profile: SandboxProfile, to context: UnsafeMutableRawPointer, allowMode: Bool, defaultErrno: Int32
    ) throws(SandboxError) {
        func number(_ name: String) throws(SandboxError) -> Int32 {
            guard let nr = SandboxNames.syscallNumber(name) else {
                throw .seccomp(operation: "unknown system call \(name)", errno: EINVAL)
            }
            return nr
        }
        func add(_ action: UInt32, _ name: String, _ comparisons: [scmp_arg_cmp] = []) throws(SandboxError) {
            let nr = try number(name)
            let rc = comparisons.withUnsafeBufferPointer {
                seccomp_rule_add_array(context, action, nr, UInt32($0.count), $0.baseAddress)
            }
            try check(rc, "rule \(name)")
        }
        func masked(_ argument: UInt32, _ cube: Cube) -> scmp_arg_cmp {
            scmp_arg_cmp(arg: argument, op: SCMP_CMP_MASKED_EQ, datum_a: UInt64(cube.mask), datum_b: UInt64(cube.value))
        }
        let conditional: Set<String> = ["clone", "socket", "socketpair", "ioctl", "personality"]
        var denied = Set<String>()
        for rule in profile.deny {
            let code = SandboxNames.errnos[rule.errno] ?? EPERM
            for name in rule.syscalls where !denied.contains(name) {
                denied.insert(name)
                // In an allow-list profile a call denied with the default errno needs no rule.
                if allowMode || code != defaultErrno { try add(errnoAction(code), name) }
            }
        }
        if !allowMode {
            for name in profile.allow where !denied.contains(name) && !conditional.contains(name) {
                try add(actionAllow, name)
            }
            if profile.allow.contains("clone") && !denied.contains("clone") {
                let noNamespaces = masked(0, Cube(mask: SandboxNames.cloneNamespaceFlags, value: 0))
                try add(actionAllow, "clone", profile.denyCloneNamespaces ? [noNamespaces] : [])
            }
        } else if profile.denyCloneNamespaces && !denied.contains("clone") {
            // One rule per flag: the rules of a syscall are ORed, so any namespace flag matches.
            var flag: UInt32 = 1
            while flag != 0 {
                if SandboxNames.cloneNamespaceFlags & flag != 0 {
                    try add(errnoAction(EPERM), "clone", [masked(0, Cube(mask: flag, value: flag))])
                }
                flag <<= 1
            }
        }
        let argumentRules: [([String], UInt32, [String]?, [String]?, [String: UInt32])] = [
            (["personality"], 0, profile.personality, nil, [:]),
            (["socket", "socketpair"], 0, profile.socketFamilies?.allow, profile.socketFamilies?.deny,
             SandboxNames.socketFamilies),
            (["ioctl"], 1, profile.ioctl?.allow, profile.ioctl?.deny, SandboxNames.ioctls),
        ]
        for (syscalls, argument, allowList, denyList, table) in argumentRules {
            let allowed = allowList.map { Set($0.compactMap { SandboxNames.value($0, in: table) }) }
            let refused = Set((denyList ?? []).compactMap { SandboxNames.value($0, in: table) })
            for name in syscalls where !denied.contains(name) {
                if allowMode {
                    // Deny what is outside the allow-list, or each denied value.
                    let cubes = allowed.map { complement(of: $0) }
                        ?? refused.sorted().map { Cube(mask: 0xFFFF_FFFF, value: $0) }
                    for cube in cubes { try add(errnoAction(EPERM), name, [masked(argument, cube)]) }
                } else if let allowed {
                    for value in allowed.sorted() {
                        try add(actionAllow, name, [masked(argument, Cube(mask: 0xFFFF_FFFF, value: value))])
                    }
                } else if denyList != nil {
                    for cube in complement(of: refused) { try add(actionAllow, name, [masked(argument, cube)]) }
                } else if profile.allow.contains(name) {
                    try add(actionAllow, name)
                }
            }
        }
    }

    private static func check(_ rc: Int32, _ operation: String) throws(SandboxError) {
        if rc < 0 { throw .seccomp(operation: operation, errno: -rc) }
    }

    private static func export(
        _ context: UnsafeMutableRawPointer, operation: String, _ body: (UnsafeMutableRawPointer, Int32) -> Int32
    ) throws(SandboxError) -> [UInt8] {
        let fd = corral_memfd("corral-seccomp")
        guard fd >= 0 else { throw .seccomp(operation: "memfd_create", errno: errno) }
        defer { close(fd) }
        try check(body(context, fd), operation)
        guard lseek(fd, 0, SEEK_SET) == 0 else { throw .seccomp(operation: "lseek", errno: errno) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { throw .seccomp(operation: "read", errno: errno) }
            if count == 0 { break }
            bytes.append(contentsOf: buffer[0..<count])
        }
        return bytes
    }
}
