/// The built-in profiles. policies/sandbox/*.json hold the same data (a test checks that they agree).
public enum BuiltinProfiles {
    public static let names = ["default", "no-network", "strict"]

    public static func named(_ name: String) -> SandboxProfile? {
        switch name {
        case "default": return `default`
        case "no-network": return noNetwork
        case "strict": return strict
        default: return nil
        }
    }

    /// How strict a built-in is, for tightening: a request may only move up this order.
    static func rank(of name: String) -> Int? { names.firstIndex(of: name) }

    /// Denied with ENOSYS so that libc falls back to calls the filter can inspect (clone3 → clone) or treats the
    /// feature as missing (the new mount API).
    static let enosys = [
        "clone3", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
        "open_tree_attr",
    ]

    /// The newest system call the default profiles were reviewed against (Linux 6.17); anything numbered above it
    /// fails with ENOSYS until someone looks at it.
    static let newestReviewedSyscall = "file_setattr"

    /// Informed by the Docker, Flatpak and firejail defaults: kernel-wide state, other processes' memory, new
    /// namespaces and mounts, kernel attack surface with a history of escapes (io_uring, bpf, userfaultfd, perf).
    static let eperm = [
        "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "pivot_root", "chroot", "unshare",
        "setns", "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup",
        "io_uring_enter", "io_uring_register", "kexec_load", "kexec_file_load", "init_module", "finit_module",
        "delete_module", "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "syslog",
        // ptrace's relatives: another process's descriptors or memory (matters where Landlock cannot scope ptrace).
        "pidfd_getfd", "kcmp", "process_madvise", "process_mrelease",
    ]

    /// PER_LINUX, PER_LINUX32, UNAME26 (and combined), and the query value 0xffffffff.
    static let harmlessPersonalities = ["0x0", "0x8", "0x20000", "0x20008", "0xffffffff"]

    /// Everything read-only except the task's own directories and the character devices ordinary programs write.
    static let landlock = SandboxProfile.LandlockRules(
        readOnly: ["/"],
        readWrite: ["$CWD", "$TMP", "/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/dev/ptmx", "/dev/pts"])

    public static let `default` = SandboxProfile(
        name: "default",
        description: "Default-allow with a deny-list of kernel-wide, cross-process and namespace operations.",
        defaultAction: .allow,
        deny: [DenyRule(syscalls: eperm, errno: "EPERM"), DenyRule(syscalls: enosys, errno: "ENOSYS")],
        denyCloneNamespaces: true,
        personality: harmlessPersonalities,
        // AF_NETLINK is denied entirely: as root in the host's network namespace NETLINK_ROUTE can change
        // interfaces and routes; glibc (getaddrinfo AI_ADDRCONFIG, if_nameindex) falls back without it.
        socketFamilies: .init(deny: ["AF_NETLINK", "AF_PACKET", "AF_VSOCK", "AF_ALG", "AF_BLUETOOTH"]),
        ioctl: .init(deny: ["TIOCSTI", "TIOCLINUX"]),
        rlimits: ["core": 0],
        landlock: landlock,
        denySyscallsAbove: newestReviewedSyscall)

    public static let noNetwork: SandboxProfile = {
        var profile = `default`
        profile.name = "no-network"
        profile.description = "The default profile, and no sockets except AF_UNIX."
        profile.socketFamilies = .init(allow: ["AF_UNIX"])
        return profile
    }()

    /// Enough for sh, coreutils, python3, a C compiler and Swift binaries; nothing kernel-wide, no chown, no
    /// privilege changes, no sockets but AF_UNIX, a fixed list of terminal ioctls.
    static let strictAllow = [
        "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2",
        "open", "openat", "openat2", "close", "close_range", "creat", "lseek", "stat", "fstat", "lstat", "newfstatat",
        "statx", "statfs", "fstatfs", "access", "faccessat", "faccessat2", "readlink", "readlinkat", "getdents",
        "getdents64", "getcwd", "chdir", "fchdir", "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename",
        "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat", "chmod", "fchmod", "fchmodat",
        "truncate", "ftruncate", "fallocate", "fsync", "fdatasync", "utime", "utimes", "utimensat", "futimesat",
        "umask", "dup", "dup2", "dup3", "pipe", "pipe2", "fcntl", "flock", "mmap", "munmap", "mprotect", "mremap",
        "madvise", "brk", "msync", "mincore", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigsuspend",
        "rt_sigpending", "rt_sigtimedwait", "sigaltstack", "kill", "tgkill", "tkill", "fork", "vfork", "execve",
        "execveat", "exit", "exit_group", "wait4", "waitid", "getpid", "getppid", "gettid", "getuid", "geteuid",
        "getgid", "getegid", "getgroups", "getresuid", "getresgid", "getpgrp", "getpgid", "setpgid", "getsid",
        "setsid", "getrlimit", "prlimit64", "getrusage", "times", "sysinfo", "uname", "gettimeofday",
        "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "time", "getrandom", "futex",
        "set_robust_list", "get_robust_list", "set_tid_address", "arch_prctl", "prctl", "rseq", "sched_yield",
        "sched_getaffinity", "sched_getparam", "sched_getscheduler", "getpriority", "poll", "ppoll", "select",
        "pselect6", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
        "eventfd", "eventfd2", "signalfd", "signalfd4", "timerfd_create", "timerfd_settime", "timerfd_gettime",
        "alarm", "setitimer", "getitimer", "memfd_create", "connect", "bind", "listen", "accept", "accept4",
        "sendto", "recvfrom", "sendmsg", "recvmsg", "shutdown", "getsockname", "getpeername", "setsockopt",
        "getsockopt", "sendfile", "copy_file_range", "splice", "tee", "fadvise64", "readahead", "getxattr",
        "lgetxattr", "fgetxattr", "listxattr", "llistxattr", "flistxattr", "capget", "membarrier", "pidfd_open",
        "pidfd_send_signal", "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch",
        "restart_syscall", "pause", "clone",
    ]

    public static let strict = SandboxProfile(
        name: "strict",
        description: "Allow-list: ordinary command-line programs run, anything else fails with EPERM.",
        defaultAction: .deny,
        defaultErrno: "EPERM",
        allow: strictAllow,
        deny: [DenyRule(syscalls: enosys, errno: "ENOSYS")],
        denyCloneNamespaces: true,
        personality: harmlessPersonalities,
        socketFamilies: .init(allow: ["AF_UNIX"]),
        ioctl: .init(allow: [
            "TCGETS", "TCSETS", "TCSETSW", "TCSETSF", "TCGETS2", "TIOCGWINSZ", "TIOCSWINSZ", "TIOCGPGRP",
            "TIOCSPGRP", "TCFLSH", "TCXONC", "TCSBRK", "FIONREAD", "FIONBIO", "FIOCLEX", "FIONCLEX",
        ]),
        rlimits: ["core": 0, "nofile": 4096],
        landlock: landlock)

    typealias DenyRule = SandboxProfile.DenyRule
}
