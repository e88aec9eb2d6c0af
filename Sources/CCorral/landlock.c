// Landlock ruleset preparation in the parent; the child only calls landlock_restrict_self on the fd.
#define _GNU_SOURCE
#include "corral.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#endif
#ifndef SYS_landlock_add_rule
#define SYS_landlock_add_rule 445
#endif

// Our own copies: the distribution's <linux/landlock.h> may predate the ABI the kernel offers.
struct corral_ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
    uint64_t scoped;  // ABI 6
};

#define LL_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)
#define LL_SCOPE_SIGNAL (1ULL << 1)

struct corral_path_beneath_attr {
    uint64_t allowed_access;
    int32_t parent_fd;
} __attribute__((packed));

struct corral_net_port_attr {
    uint64_t allowed_access;
    uint64_t port;
};

#define LL_RULE_PATH_BENEATH 1
#define LL_RULE_NET_PORT 2
#define LL_FS_EXECUTE (1ULL << 0)
#define LL_FS_WRITE_FILE (1ULL << 1)
#define LL_FS_READ_FILE (1ULL << 2)
#define LL_FS_READ_DIR (1ULL << 3)
#define LL_FS_REFER (1ULL << 13)
#define LL_FS_TRUNCATE (1ULL << 14)
#define LL_FS_IOCTL_DEV (1ULL << 15)
#define LL_NET_BIND_TCP (1ULL << 0)
#define LL_NET_CONNECT_TCP (1ULL << 1)

static uint64_t handled_fs(int abi) {
    uint64_t rights = (1ULL << 13) - 1; // ABI 1: EXECUTE .. MAKE_SYM
    if (abi >= 2) rights |= LL_FS_REFER;
    if (abi >= 3) rights |= LL_FS_TRUNCATE;
    if (abi >= 5) rights |= LL_FS_IOCTL_DEV;
    return rights;
}

int corral_landlock_create_ruleset(int abi, int handle_tcp) {
    if (abi < 1) {
        errno = EOPNOTSUPP;
        return -1;
    }
    struct corral_ruleset_attr attr = {.handled_access_fs = handled_fs(abi), .handled_access_net = 0};
    size_t size = sizeof(uint64_t);
    if (handle_tcp) {
        if (abi < 4) {
            errno = EOPNOTSUPP;
            return -1;
        }
        attr.handled_access_net = LL_NET_BIND_TCP | LL_NET_CONNECT_TCP;
        size = 2 * sizeof(uint64_t);
    }
    if (abi >= 6) {
        // The task may signal and reach abstract sockets only within its own sandbox: not the supervisor, not the
        // host's abstract sockets.
        attr.scoped = LL_SCOPE_ABSTRACT_UNIX_SOCKET | LL_SCOPE_SIGNAL;
        size = sizeof(attr);
    }
    long fd = syscall(SYS_landlock_create_ruleset, &attr, size, 0);
    if (fd < 0) return -1;
    // The kernel sets O_CLOEXEC on ruleset fds already; keep it explicit.
    fcntl((int)fd, F_SETFD, FD_CLOEXEC);
    return (int)fd;
}

int corral_landlock_allow_path(int ruleset_fd, int abi, const char *path, int writable) {
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    uint64_t rights = writable ? handled_fs(abi) : (LL_FS_EXECUTE | LL_FS_READ_FILE | LL_FS_READ_DIR);
    if (!S_ISDIR(st.st_mode)) {
        // Only file rights may be granted on a non-directory (else EINVAL).
        rights &= LL_FS_EXECUTE | LL_FS_WRITE_FILE | LL_FS_READ_FILE | LL_FS_TRUNCATE | LL_FS_IOCTL_DEV;
    }
    struct corral_path_beneath_attr rule = {.allowed_access = rights, .parent_fd = fd};
    long rc = syscall(SYS_landlock_add_rule, ruleset_fd, LL_RULE_PATH_BENEATH, &rule, 0);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc == 0 ? 0 : -1;
}

int corral_landlock_allow_port(int ruleset_fd, uint64_t port, int bind, int connect) {
    struct corral_net_port_attr rule = {
        .allowed_access = (bind ? LL_NET_BIND_TCP : 0) | (connect ? LL_NET_CONNECT_TCP : 0),
        .port = port,
    };
    if (rule.allowed_access == 0) return 0;
    return syscall(SYS_landlock_add_rule, ruleset_fd, LL_RULE_NET_PORT, &rule, 0) == 0 ? 0 : -1;
}

int corral_memfd(const char *name) { return memfd_create(name, MFD_CLOEXEC); }
