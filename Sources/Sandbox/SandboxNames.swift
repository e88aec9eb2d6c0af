import CSeccomp
/// Name tables for profile values: errno names, socket families, ioctl requests and personality values.
/// Numbers are the Linux (x86_64 and arm64 shared) values.
enum SandboxNames {
    static let errnos: [String: Int32] = [
        "EPERM": 1, "ENOENT": 2, "ESRCH": 3, "EINTR": 4, "EIO": 5, "ENXIO": 6, "E2BIG": 7, "ENOEXEC": 8,
        "EBADF": 9, "ECHILD": 10, "EAGAIN": 11, "ENOMEM": 12, "EACCES": 13, "EFAULT": 14, "EBUSY": 16,
        "EEXIST": 17, "EXDEV": 18, "ENODEV": 19, "ENOTDIR": 20, "EISDIR": 21, "EINVAL": 22, "ENFILE": 23,
        "EMFILE": 24, "ENOTTY": 25, "ETXTBSY": 26, "EFBIG": 27, "ENOSPC": 28, "ESPIPE": 29, "EROFS": 30,
        "EMLINK": 31, "EPIPE": 32, "ERANGE": 34, "ENOSYS": 38, "EOPNOTSUPP": 95, "EAFNOSUPPORT": 97,
        "EADDRINUSE": 98, "ENETUNREACH": 101, "ECONNREFUSED": 111, "EPROTONOSUPPORT": 93,
    ]

    static let socketFamilies: [String: UInt32] = [
        "AF_UNSPEC": 0, "AF_UNIX": 1, "AF_INET": 2, "AF_AX25": 3, "AF_IPX": 4, "AF_APPLETALK": 5, "AF_NETROM": 6,
        "AF_BRIDGE": 7, "AF_ATMPVC": 8, "AF_X25": 9, "AF_INET6": 10, "AF_ROSE": 11, "AF_DECnet": 12,
        "AF_NETBEUI": 13, "AF_SECURITY": 14, "AF_KEY": 15, "AF_NETLINK": 16, "AF_PACKET": 17, "AF_ASH": 18,
        "AF_ECONET": 19, "AF_ATMSVC": 20, "AF_RDS": 21, "AF_SNA": 22, "AF_IRDA": 23, "AF_PPPOX": 24,
        "AF_WANPIPE": 25, "AF_LLC": 26, "AF_IB": 27, "AF_MPLS": 28, "AF_CAN": 29, "AF_TIPC": 30,
        "AF_BLUETOOTH": 31, "AF_IUCV": 32, "AF_RXRPC": 33, "AF_ISDN": 34, "AF_PHONET": 35, "AF_IEEE802154": 36,
        "AF_CAIF": 37, "AF_ALG": 38, "AF_NFC": 39, "AF_VSOCK": 40, "AF_KCM": 41, "AF_QIPCRTR": 42, "AF_SMC": 43,
        "AF_XDP": 44, "AF_MCTP": 45,
    ]

    static let ioctls: [String: UInt32] = [
        "TCGETS": 0x5401, "TCSETS": 0x5402, "TCSETSW": 0x5403, "TCSETSF": 0x5404, "TCGETA": 0x5405,
        "TCSETA": 0x5406, "TCSETAW": 0x5407, "TCSETAF": 0x5408, "TCSBRK": 0x5409, "TCXONC": 0x540A,
        "TCFLSH": 0x540B, "TIOCSCTTY": 0x540E, "TIOCGPGRP": 0x540F, "TIOCSPGRP": 0x5410, "TIOCOUTQ": 0x5411,
        "TIOCSTI": 0x5412, "TIOCGWINSZ": 0x5413, "TIOCSWINSZ": 0x5414, "FIONREAD": 0x541B, "TIOCLINUX": 0x541C,
        "FIONBIO": 0x5421, "TIOCNOTTY": 0x5422, "TIOCGSID": 0x5429, "TCGETS2": 0x802C542A, "TCSETS2": 0x402C542B,
        "TIOCGPTN": 0x80045430, "TIOCSPTLCK": 0x40045431, "TIOCGPTPEER": 0x5441, "FIONCLEX": 0x5450,
        "FIOCLEX": 0x5451, "FIOASYNC": 0x5452, "FS_IOC_GETFLAGS": 0x80086601, "FICLONE": 0x40049409,
    ]

    /// The clone flags that create namespaces (CLONE_NEWTIME shares its bit with the exit signal in clone(2) and
    /// can only be set through clone3/unshare, both denied).
    static let cloneNamespaceFlags: UInt32 =
        0x0002_0000 /* NEWNS */ | 0x0200_0000 /* NEWCGROUP */ | 0x0400_0000 /* NEWUTS */ | 0x0800_0000 /* NEWIPC */
        | 0x1000_0000 /* NEWUSER */ | 0x2000_0000 /* NEWPID */ | 0x4000_0000 /* NEWNET */

    /// A 32-bit value written as a name from `table` or as a number ("0x5412", "8").
    /// System calls newer than the libseccomp this is built with may know. Numbers from 424 on are the same on every
    /// architecture (the kernel unified its tables there), so one table serves x86_64 and arm64.
    static let newerSyscalls: [String: Int32] = [
        "cachestat": 451, "fchmodat2": 452, "map_shadow_stack": 453, "futex_wake": 454, "futex_wait": 455,
        "futex_requeue": 456, "statmount": 457, "listmount": 458, "lsm_get_self_attr": 459, "lsm_set_self_attr": 460,
        "lsm_list_modules": 461, "mseal": 462, "setxattrat": 463, "getxattrat": 464, "listxattrat": 465,
        "removexattrat": 466, "open_tree_attr": 467, "file_getattr": 468, "file_setattr": 469,
    ]

    /// The native number of a system call, from libseccomp's table or the one above; nil for an unknown name.
    static func syscallNumber(_ name: String) -> Int32? {
        let number = seccomp_syscall_resolve_name(name)
        if number != __NR_SCMP_ERROR && number >= 0 { return number }
        return newerSyscalls[name]
    }

    static func value(_ text: String, in table: [String: UInt32]) -> UInt32? {
        if let known = table[text] { return known }
        if text.hasPrefix("0x") || text.hasPrefix("0X") { return UInt32(text.dropFirst(2), radix: 16) }
        return UInt32(text)
    }
}
