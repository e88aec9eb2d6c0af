// Escape probe for the sandbox tests: tries each thing a sandbox profile forbids and prints one line per attempt,
// "name=ok errno=0", "name=fail errno=EPERM" or "name=killed signal=SYS". Every target is harmless: temp
// directories made by the test, invalid descriptors (-1), bad magic numbers. It refuses to run unconfined.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sched.h>
#include <unistd.h>

#define HIGH (1ULL << 32)

static void report(const char *name, long rc) {
    if (rc >= 0) printf("%s=ok errno=0\n", name);
    else printf("%s=fail errno=%s\n", name, strerrorname_np(errno));
    fflush(stdout);
}

// For calls that return a descriptor on success.
static void report_fd(const char *name, long rc) {
    report(name, rc);
    if (rc >= 0) close((int)rc);
}

// Runs `fn` in a forked child (it may change the process or be killed) and reports how the child died if killed.
static void in_child(const char *name, void (*fn)(const char *, const char *), const char *arg) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) { report(name, -1); return; }
    if (pid == 0) { fn(name, arg); fflush(stdout); _exit(0); }
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status)) {
        printf("%s=killed signal=%s\n", name, sigabbrev_np(WTERMSIG(status)));
        fflush(stdout);
    }
}

static void do_chroot(const char *name, const char *dir) { report(name, chroot(dir)); }
static void do_unshare(const char *name, const char *arg) { (void)arg; report(name, unshare(CLONE_NEWUTS)); }
static void do_personality(const char *name, const char *arg) {
    (void)arg;
    report(name, syscall(SYS_personality, ADDR_NO_RANDOMIZE));
}
static void do_int80(const char *name, const char *arg) {
    (void)arg;
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(20L) : "memory"); // i386 getpid
    printf("%s=ok ret=%ld\n", name, ret);
}
static void do_x32(const char *name, const char *arg) {
    (void)arg;
    report(name, syscall(0x40000000L | SYS_getpid));
}

static void try_clone(const char *name, unsigned long long flags) {
    long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) _exit(0);
    report(name, pid);
    if (pid > 0) waitpid((pid_t)pid, NULL, 0);
}

static void try_socket(const char *name, unsigned long long family, int type, int protocol) {
    report_fd(name, syscall(SYS_socket, family, type, protocol));
}

static void try_socketpair(const char *name, unsigned long long family) {
    int fds[2];
    long rc = syscall(SYS_socketpair, family, SOCK_STREAM, 0, fds);
    report(name, rc);
    if (rc == 0) { close(fds[0]); close(fds[1]); }
}

static void try_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) { report("connect_tcp", -1); return; }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    report("connect_tcp", connect(fd, (struct sockaddr *)&addr, sizeof addr));
    close(fd);
}

static void try_write(const char *name, const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    report(name, fd);
    if (fd >= 0) { (void)!write(fd, "x", 1); close(fd); unlink(path); }
}

static int filtered(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        if (strcmp(line, "Seccomp:\t2\n") == 0) found = 1;
    }
    fclose(f);
    return found;
}

static void escape(const char *dir, int port) {
    char mnt[4096], a[4096], b[4096], missing[4096], outside[4096], inside[4096];
    snprintf(mnt, sizeof mnt, "%s/mnt", dir);
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    snprintf(missing, sizeof missing, "%s/missing/file", dir);
    snprintf(outside, sizeof outside, "%s/outside/probe-file", dir);
    snprintf(inside, sizeof inside, "%s/work/probe-file", dir);

    report("ptrace", syscall(SYS_ptrace, 2 /* PEEKDATA */, 0x3ffffff0, 0, 0));
    report("process_vm_readv", syscall(SYS_process_vm_readv, getpid(), NULL, 0, NULL, 0, 0));
    report("process_vm_writev", syscall(SYS_process_vm_writev, getpid(), NULL, 0, NULL, 0, 0));
    long m = syscall(SYS_mount, "none", mnt, "tmpfs", 0, "size=1m");
    report("mount", m);
    if (m == 0) umount2(mnt, MNT_DETACH);
    report("umount2", syscall(SYS_umount2, mnt, 0));
    report("pivot_root", syscall(SYS_pivot_root, a, b));
    in_child("chroot", do_chroot, dir);
    in_child("unshare", do_unshare, NULL);
    report("setns", syscall(SYS_setns, -1, 0));
    report("keyctl", syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 0));
    report("add_key", syscall(SYS_add_key, "user", "corral-probe", "x", 1, 0));
    report("request_key", syscall(SYS_request_key, "user", "corral-probe-none", NULL, 0));
    report("bpf", syscall(SYS_bpf, -1, NULL, 0));
    report("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
    report("userfaultfd", syscall(SYS_userfaultfd, -1));
    report("io_uring_setup", syscall(SYS_io_uring_setup, 1, NULL));
    report("io_uring_enter", syscall(SYS_io_uring_enter, -1, 0, 0, 0, NULL, 0));
    report("io_uring_register", syscall(SYS_io_uring_register, -1, 0, NULL, 0));
    report("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0xdead0000UL));
    report("kexec_file_load", syscall(SYS_kexec_file_load, -1, -1, 0, NULL, 0xdead0000UL));
    report("init_module", syscall(SYS_init_module, NULL, 0, ""));
    report("finit_module", syscall(SYS_finit_module, -1, "", 0));
    report("delete_module", syscall(SYS_delete_module, "corral_probe_none", O_NONBLOCK));
    report("reboot", syscall(SYS_reboot, 0, 0, 0, NULL)); // bad magic: EINVAL when allowed
    report("swapon", syscall(SYS_swapon, missing, 0));
    report("swapoff", syscall(SYS_swapoff, missing));
    report("acct", syscall(SYS_acct, missing));
    report("quotactl", syscall(SYS_quotactl, 0x800001 /* Q_SYNC */, dir, 0, NULL));
    report("syslog", syscall(SYS_syslog, 10 /* SIZE_BUFFER */, NULL, 0));
    in_child("personality_addr_no_randomize", do_personality, NULL);
    report("personality_query", syscall(SYS_personality, 0xffffffffUL));
    report("ioctl_tiocsti", syscall(SYS_ioctl, -1, TIOCSTI, "x"));
    report("ioctl_tiocsti_high", syscall(SYS_ioctl, -1, HIGH | TIOCSTI, "x"));
    report("ioctl_tioclinux", syscall(SYS_ioctl, -1, TIOCLINUX, "x"));
    report("ioctl_tioclinux_high", syscall(SYS_ioctl, -1, HIGH | TIOCLINUX, "x"));
    report("ioctl_tcgets", syscall(SYS_ioctl, -1, TCGETS, NULL));
    try_clone("clone_plain", 0);
    try_clone("clone_newuser", CLONE_NEWUSER);
    try_clone("clone_newuser_high", HIGH | CLONE_NEWUSER);
    try_clone("clone_newnet", CLONE_NEWNET);
    try_clone("clone_newns", CLONE_NEWNS);
    report("clone3", syscall(SYS_clone3, NULL, 0));
    report_fd("fsopen", syscall(SYS_fsopen, "tmpfs", 0));
    report("fsconfig", syscall(SYS_fsconfig, -1, 0, NULL, NULL, 0));
    report("fsmount", syscall(SYS_fsmount, -1, 0, 0));
    report_fd("fspick", syscall(SYS_fspick, AT_FDCWD, dir, 0));
    report("move_mount", syscall(SYS_move_mount, -1, "", -1, "", 0));
    report_fd("open_tree", syscall(SYS_open_tree, AT_FDCWD, dir, 0));
    report("mount_setattr", syscall(SYS_mount_setattr, -1, "", 0, NULL, 0));
    // Newer than libseccomp 2.5's table: a detached clone of the tree, with attributes (Linux 6.15).
    report_fd("open_tree_attr", syscall(467, AT_FDCWD, dir, 1 /* OPEN_TREE_CLONE */, NULL, 0));
    try_socket("socket_unix", AF_UNIX, SOCK_STREAM, 0);
    try_socket("socket_inet", AF_INET, SOCK_STREAM, 0);
    try_socket("socket_inet_high", HIGH | AF_INET, SOCK_STREAM, 0);
    try_socket("socket_inet6", AF_INET6, SOCK_STREAM, 0);
    try_socket("socket_netlink", AF_NETLINK, SOCK_RAW, 0);
    try_socket("socket_netlink_high", HIGH | AF_NETLINK, SOCK_RAW, 0);
    try_socket("socket_packet", AF_PACKET, SOCK_RAW, 0);
    try_socket("socket_packet_high", HIGH | AF_PACKET, SOCK_RAW, 0);
    try_socket("socket_vsock", AF_VSOCK, SOCK_STREAM, 0);
    try_socket("socket_alg", AF_ALG, SOCK_SEQPACKET, 0);
    try_socket("socket_bluetooth", AF_BLUETOOTH, SOCK_STREAM, 0);
    try_socketpair("socketpair_unix", AF_UNIX);
    try_socketpair("socketpair_inet_high", HIGH | AF_INET);
    if (port > 0) try_connect(port);
    try_write("write_outside", outside);
    try_write("write_inside", inside);
    in_child("int80", do_int80, NULL);
    in_child("x32", do_x32, NULL);
}

// Forks until it fails (bounded by `max`); the children wait in pause() and are killed at the end.
static void forkbomb(int max) {
    pid_t pids[4096];
    int count = 0;
    int error = 0;
    while (count < max && count < 4096) {
        pid_t pid = fork();
        if (pid < 0) { error = errno; break; }
        if (pid == 0) { pause(); _exit(0); }
        pids[count++] = pid;
    }
    for (int i = 0; i < count; i++) { kill(pids[i], SIGKILL); waitpid(pids[i], NULL, 0); }
    if (error) printf("forkbomb=fail errno=%s count=%d\n", strerrorname_np(error), count);
    else printf("forkbomb=ok errno=0 count=%d\n", count);
}

static void hog(long mib) {
    size_t size = (size_t)mib << 20;
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { report("hog", -1); return; }
    for (size_t i = 0; i < size; i += 4096) p[i] = 1;
    munmap(p, size);
    report("hog", 0);
}

int main(int argc, char **argv) {
    if (!filtered()) {
        fprintf(stderr, "probe: refusing to run without a seccomp filter (Seccomp: 2 in /proc/self/status)\n");
        return 2;
    }
    if (argc >= 3 && strcmp(argv[1], "escape") == 0) escape(argv[2], argc >= 4 ? atoi(argv[3]) : 0);
    else if (argc >= 3 && strcmp(argv[1], "forkbomb") == 0) forkbomb(atoi(argv[2]));
    else if (argc >= 3 && strcmp(argv[1], "hog") == 0) hog(atol(argv[2]));
    else { fprintf(stderr, "usage: probe escape DIR [PORT] | forkbomb MAX | hog MIB\n"); return 64; }
    return 0;
}
