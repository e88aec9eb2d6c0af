// Adversarial probe for confined tasks (non-root uid, no capabilities, seccomp, Landlock, a PID namespace shared
// by the server's tasks, a per-task cgroup). Each mode tries things a task must not be able to do and prints one
// line per attempt: "name=ok errno=0", "name=fail errno=EPERM" or "name=killed signal=SYS" (each attempt runs in
// a forked child, so a seccomp kill ends only that attempt). "fail errno=ENODATA" means the call worked but gave
// no data (an empty read or listing); "skip errno=0" means a step could not be tried because an earlier one
// failed. A failed undo prints "undo_name=fail errno=E".
// Every target is harmless: no-op changes (same time, same hostname, same mode/owner), scratch files the test
// owns, signal 0, detached mount clones that vanish on close; anything that succeeds is undone at once.
// It refuses to run (exit 3) unless a seccomp filter is active in its own process.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#define SYS_open_tree_attr_nr 467
#define SYS_above_table_nr 471

static const char *arg1, *arg2; // the mode's arguments, read by the attempts

static void report(const char *name, long rc) {
    if (rc >= 0) printf("%s=ok errno=0\n", name);
    else printf("%s=fail errno=%s\n", name, strerrorname_np(errno));
    fflush(stdout);
}

static void report_errno(const char *name, int error) { errno = error; report(name, error ? -1 : 0); }

static void report_fd(const char *name, long rc) { report(name, rc); if (rc >= 0) close((int)rc); }

static void undo(const char *name, int rc) {
    if (rc < 0) { printf("undo_%s=fail errno=%s\n", name, strerrorname_np(errno)); fflush(stdout); }
}

// Runs one attempt in a forked child and reports a kill; runs it inline if fork fails (e.g. a pids limit).
static void attempt(const char *name, void (*fn)(void)) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) { fn(); return; }
    if (pid == 0) { fn(); fflush(stdout); _exit(0); }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (WIFSIGNALED(status)) {
        printf("%s=killed signal=%s\n", name, sigabbrev_np(WTERMSIG(status)));
        fflush(stdout);
    }
}

static int filtered(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    int found = 0;
    while (fgets(line, sizeof line, f)) if (strcmp(line, "Seccomp:\t2\n") == 0) found = 1;
    fclose(f);
    return found;
}

// Copies the value of the "key:" line of a /proc status file into out (without the tab and newline).
static int status_field(const char *path, const char *key, char *out, size_t size) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[512];
    size_t len = strlen(key);
    int found = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, len) != 0 || line[len] != ':') continue;
        char *value = line + len + 1;
        value += strspn(value, " \t");
        value[strcspn(value, "\n")] = 0;
        snprintf(out, size, "%s", value);
        found = 0;
        break;
    }
    fclose(f);
    if (found < 0) errno = ENOENT;
    return found;
}

// ---- caps ----
static void caps(const char *prefix) {
    static const char *keys[] = {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"};
    static const char *names[] = {"cap_inh", "cap_prm", "cap_eff", "cap_bnd", "cap_amb"};
    for (int i = 0; i < 5; i++) {
        char value[64];
        if (status_field("/proc/self/status", keys[i], value, sizeof value) < 0) strcpy(value, "unknown");
        printf("%s%s=%s\n", prefix, names[i], value);
    }
    printf("%suid=%u %sgid=%u %sgroups=%d\n", prefix, getuid(), prefix, getgid(), prefix, getgroups(0, NULL));
    printf("%sno_new_privs=%d\n", prefix, prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
    fflush(stdout);
}

// ---- privileged WORKDIR ----
static void p_settimeofday(void) { report("settimeofday", syscall(SYS_settimeofday, NULL, NULL)); } // glibc derefs NULL
static void p_sethostname(void) {
    char name[256] = {0};
    if (gethostname(name, sizeof name - 1) < 0) { report("sethostname", -1); return; }
    report("sethostname", sethostname(name, strlen(name)));
}
static void p_mknod(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/kmsg-twin", arg1);
    int rc = mknod(path, S_IFCHR | 0600, makedev(1, 11));
    report("mknod_kmsg", rc);
    if (rc < 0) return;
    report_fd("open_kmsg_twin", open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)); // opened only, never read
    undo("mknod_kmsg", unlink(path));
}
static void p_raw_socket(void) { report_fd("raw_socket", socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)); }
static void p_setuid(void) { report("setuid_root", setuid(0)); } // in a child: nothing outlives it
static void p_chown_workdir(void) {
    struct stat before;
    if (stat(arg1, &before) < 0) { report("chown_workdir_root", -1); return; }
    int rc = chown(arg1, 0, 0);
    report("chown_workdir_root", rc);
    if (rc < 0) return;
    undo("chown_workdir_root", chown(arg1, before.st_uid, before.st_gid));
    struct stat after;
    if (stat(arg1, &after) == 0 && (after.st_mode & 07777) != (before.st_mode & 07777))
        undo("chown_workdir_root_mode", chmod(arg1, before.st_mode & 07777));
}

// ---- metadata FILE ----
static void m_chmod(void) {
    struct stat st;
    if (stat(arg1, &st) < 0) { report("chmod", -1); return; }
    report("chmod", chmod(arg1, st.st_mode & 07777));
}
static void m_chown(void) {
    struct stat st, after;
    if (stat(arg1, &st) < 0) { report("chown", -1); return; }
    int rc = chown(arg1, st.st_uid, st.st_gid);
    report("chown", rc);
    if (rc == 0 && stat(arg1, &after) == 0 && (after.st_mode & 07777) != (st.st_mode & 07777))
        undo("chown_mode", chmod(arg1, st.st_mode & 07777)); // chown may clear set-id bits
}
static void m_setxattr(void) {
    int rc = setxattr(arg1, "user.corral_probe", "x", 1, 0);
    report("setxattr", rc);
    if (rc == 0) undo("setxattr", removexattr(arg1, "user.corral_probe"));
}
static void m_utimensat(void) {
    struct stat st;
    if (stat(arg1, &st) < 0) { report("utimensat", -1); return; }
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    report("utimensat", utimensat(AT_FDCWD, arg1, times, 0));
}
static void m_write(void) { report_fd("write_file", open(arg1, O_WRONLY | O_CLOEXEC)); } // never written

// ---- server PID STATEFILE ----
// Opens path and reads up to size bytes: ok only if the read returned > 0 bytes (ENODATA if it returned 0).
static void read_report(const char *name, const char *path, size_t size) {
    char buf[256];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { report(name, -1); return; }
    ssize_t n = read(fd, buf, size);
    int error = n > 0 ? 0 : n == 0 ? ENODATA : errno;
    close(fd);
    report_errno(name, error);
}
static void s_environ(void) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%s/environ", arg1);
    read_report("server_environ", path, 256);
}
static void s_mem(void) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%s/mem", arg1);
    report_fd("server_mem", open(path, O_RDONLY | O_CLOEXEC));
}
static void s_fd_dir(void) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%s/fd", arg1);
    DIR *dir = opendir(path);
    if (!dir) { report("server_fd_dir", -1); return; }
    int error = ENODATA;
    struct dirent *entry;
    errno = 0;
    while ((entry = readdir(dir))) {
        if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0) { error = 0; break; }
    }
    if (!entry && errno) error = errno;
    closedir(dir);
    report_errno("server_fd_dir", error);
}
static void s_state(void) { read_report("server_state", arg2, 1); }
static void s_signal(void) { report("signal_server", kill((pid_t)atoi(arg1), 0)); }
static void s_pid1(void) { report("signal_pid1", kill(1, 0)); }

// ---- signal OTHERPID ----
static void o_host(void) { report("signal_other_host_pid", kill((pid_t)atoi(arg1), 0)); }
static void o_ns(void) {
    char path[64], value[256];
    snprintf(path, sizeof path, "/proc/%s/status", arg1);
    if (status_field(path, "NSpid", value, sizeof value) < 0) {
        printf("other_nspid=none errno=%s\nsignal_other_ns_pid=skip errno=0\n", strerrorname_np(errno));
        fflush(stdout);
        return;
    }
    char *last = strrchr(value, '\t');
    if (!last) last = strrchr(value, ' ');
    long nspid = atol(last ? last + 1 : value);
    printf("other_nspid=%ld\n", nspid);
    fflush(stdout);
    if (nspid > 0) report("signal_other_ns_pid", kill((pid_t)nspid, 0));
    else { printf("signal_other_ns_pid=skip errno=0\n"); fflush(stdout); }
}
static void o_pidfd(void) {
    long fd = syscall(SYS_pidfd_open, atol(arg1), 0);
    report("pidfd_other", fd);
    if (fd < 0) { printf("pidfd_signal_other=skip errno=0\n"); fflush(stdout); return; }
    report("pidfd_signal_other", syscall(SYS_pidfd_send_signal, fd, 0, NULL, 0));
    close((int)fd);
}

// ---- open_tree_attr ----
// A detached clone of the mount tree: it is never attached anywhere and vanishes when the fd is closed.
static void t_attr(void) {
    report_fd("open_tree_attr", syscall(SYS_open_tree_attr_nr, AT_FDCWD, "/", OPEN_TREE_CLONE | AT_RECURSIVE, NULL, 0));
}
static void t_tree(void) { report_fd("open_tree", syscall(SYS_open_tree, AT_FDCWD, "/", OPEN_TREE_CLONE)); }
static void t_above(void) { report("syscall_above_table", syscall(SYS_above_table_nr, 0, 0, 0, 0, 0, 0)); }

// ---- forks N ----
static void forks(long max) {
    if (max < 0) max = 0;
    pid_t *pids = calloc((size_t)max + 1, sizeof *pids);
    if (!pids) { report("forks", -1); return; }
    long count = 0;
    int error = 0;
    pid_t parent = getpid();
    fflush(stdout);
    while (count < max) {
        pid_t pid = fork();
        if (pid < 0) { error = errno; break; }
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0); // never outlive the probe
            if (getppid() != parent) _exit(0);
            for (;;) pause();
        }
        pids[count++] = pid;
    }
    for (long i = 0; i < count; i++) kill(pids[i], SIGKILL);
    for (long i = 0; i < count; i++) while (waitpid(pids[i], NULL, 0) < 0 && errno == EINTR) {}
    free(pids);
    printf("forks_ok=%ld forks_errno=%s\n", count, error ? strerrorname_np(error) : "none");
    fflush(stdout);
}

// ---- memhog MB ----
static void memhog(long mib) {
    for (long i = 1; i <= mib; i++) {
        char *p = malloc(1 << 20); // kept until exit
        if (!p) { report("memhog", -1); return; }
        for (size_t j = 0; j < (1 << 20); j += 4096) p[j] = 1;
        if (i % 16 == 0) { printf("memhog_mib=%ld\n", i); fflush(stdout); }
    }
    printf("memhog=done\n");
    fflush(stdout);
}

// ---- pid ----
static void pid_mode(void) {
    char value[256];
    printf("getpid=%d getppid=%d\n", getpid(), getppid());
    if (status_field("/proc/self/status", "NSpid", value, sizeof value) < 0) snprintf(value, sizeof value, "unknown");
    for (char *c = value; *c; c++) if (*c == '\t' || *c == ' ') *c = ',';
    printf("nspid=%s\n", value);
    fflush(stdout);
}

struct step { const char *name; void (*fn)(void); };
static void run_steps(const struct step *steps) { for (; steps->name; steps++) attempt(steps->name, steps->fn); }

static int usage(void) {
    fprintf(stderr, "usage: task_probe caps | caps-after-exec | privileged WORKDIR | metadata FILE"
                    " | server PID STATEFILE | signal OTHERPID | open_tree_attr | forks N | memhog MB | pid\n");
    return 2;
}

int main(int argc, char **argv) {
    if (!filtered()) { fprintf(stderr, "refused: no seccomp filter\n"); return 3; }
    if (argc < 2) return usage();
    const char *mode = argv[1];
    arg1 = argc >= 3 ? argv[2] : NULL;
    arg2 = argc >= 4 ? argv[3] : NULL;
    if (strcmp(mode, "caps") == 0) {
        caps("");
        char *args[] = {argv[0], "caps-after-exec", NULL};
        execv("/proc/self/exe", args);
        report("exec_self", -1);
        return 1;
    } else if (strcmp(mode, "caps-after-exec") == 0) {
        caps("after_exec_");
    } else if (strcmp(mode, "privileged") == 0 && arg1) {
        static const struct step s[] = {{"settimeofday", p_settimeofday}, {"sethostname", p_sethostname},
            {"mknod_kmsg", p_mknod}, {"raw_socket", p_raw_socket}, {"setuid_root", p_setuid},
            {"chown_workdir_root", p_chown_workdir}, {NULL, NULL}};
        run_steps(s);
    } else if (strcmp(mode, "metadata") == 0 && arg1) {
        static const struct step s[] = {{"chmod", m_chmod}, {"chown", m_chown}, {"setxattr", m_setxattr},
            {"utimensat", m_utimensat}, {"write_file", m_write}, {NULL, NULL}};
        run_steps(s);
    } else if (strcmp(mode, "server") == 0 && arg2) {
        static const struct step s[] = {{"server_environ", s_environ}, {"server_mem", s_mem},
            {"server_fd_dir", s_fd_dir}, {"server_state", s_state}, {"signal_server", s_signal},
            {"signal_pid1", s_pid1}, {NULL, NULL}};
        run_steps(s);
    } else if (strcmp(mode, "signal") == 0 && arg1) {
        static const struct step s[] = {{"signal_other_host_pid", o_host}, {"signal_other_ns_pid", o_ns},
            {"pidfd_other", o_pidfd}, {NULL, NULL}};
        run_steps(s);
    } else if (strcmp(mode, "open_tree_attr") == 0) {
        static const struct step s[] = {{"open_tree_attr", t_attr}, {"open_tree", t_tree},
            {"syscall_above_table", t_above}, {NULL, NULL}};
        run_steps(s);
    } else if (strcmp(mode, "forks") == 0 && arg1) {
        forks(atol(arg1));
    } else if (strcmp(mode, "memhog") == 0 && arg1) {
        memhog(atol(arg1));
    } else if (strcmp(mode, "pid") == 0) {
        pid_mode();
    } else return usage();
    return 0;
}
