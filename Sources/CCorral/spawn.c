// The spawn shim. Foundation.Process and swift-subprocess cannot run code between fork and exec on Linux, and the
// sandbox must be installed exactly there, so the child side is written here in C, using only raw,
// async-signal-safe system calls: in a multithreaded parent nothing else is safe after the clone.
#define _GNU_SOURCE
#include "corral.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef SYS_landlock_restrict_self
#define SYS_landlock_restrict_self 446
#endif

struct corral_clone_args {
    uint64_t flags;
    uint64_t pidfd;
    uint64_t child_tid;
    uint64_t parent_tid;
    uint64_t exit_signal;
    uint64_t stack;
    uint64_t stack_size;
    uint64_t tls;
    uint64_t set_tid;
    uint64_t set_tid_size;
    uint64_t cgroup;
};

__attribute__((noreturn)) static void child_fail(int report_fd, int stage, int error) {
    int message[2] = {stage, error};
    // Nothing to do if this write fails: the parent then sees EOF and a child that exited 127.
    ssize_t ignored = write(report_fd, message, sizeof message);
    (void)ignored;
    _exit(127);
}

static int move_above_stdio(int fd, int target) {
    if (fd >= 0 && fd < 3 && fd != target) {
        return fcntl(fd, F_DUPFD_CLOEXEC, 3);
    }
    return fd;
}

static int install_stdio(int fd, int target) {
    if (fd == target) {
        int flags = fcntl(fd, F_GETFD);
        if (flags < 0) return -1;
        return fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
    }
    return dup2(fd, target) < 0 ? -1 : 0;
}

static void mark_all_cloexec_from(int first) {
    if (syscall(SYS_close_range, (unsigned)first, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return;
    struct rlimit nofile;
    rlim_t last = 65536;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY && nofile.rlim_cur < last) {
        last = nofile.rlim_cur;
    }
    for (int fd = first; (rlim_t)fd < last; fd++) {
        int flags = fcntl(fd, F_GETFD);
        if (flags >= 0) fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    }
}

__attribute__((noreturn)) static void child_main(const corral_spawn_attr *a, const struct sock_fprog *filter,
                                                int report_fd) {
    // A clean signal state: every disposition back to default, then an empty mask (the parent blocked every signal
    // around the clone so that no parent handler can run in the child). Raw rt_sigaction, because glibc's wrapper
    // refuses its reserved signals (32, 33), whose ignored state would otherwise be inherited across exec.
    struct {
        void *handler;
        unsigned long flags;
        void *restorer;
        uint64_t mask;
    } dfl = {0};
    for (int sig = 1; sig <= 64; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof dfl.mask);
    }
    sigset_t empty;
    sigemptyset(&empty);
    if (sigprocmask(SIG_SETMASK, &empty, NULL) != 0) child_fail(report_fd, CORRAL_STAGE_SIGNALS, errno);

    if (a->new_session && setsid() < 0) child_fail(report_fd, CORRAL_STAGE_SETSID, errno);

    if (a->pdeathsig > 0) {
        if (prctl(PR_SET_PDEATHSIG, a->pdeathsig, 0, 0, 0) != 0) child_fail(report_fd, CORRAL_STAGE_PDEATHSIG, errno);
        // The parent may have died before the prctl: then nobody would ever send the signal.
        if (a->expected_parent > 0 && getppid() != a->expected_parent) _exit(127);
    }

    if (a->cgroup_procs_fd >= 0) {
        if (write(a->cgroup_procs_fd, "0", 1) != 1) child_fail(report_fd, CORRAL_STAGE_CGROUP, errno);
    }

    int in = move_above_stdio(a->stdin_fd, 0);
    int out = move_above_stdio(a->stdout_fd, 1);
    int err = move_above_stdio(a->stderr_fd, 2);
    if (in < 0 || out < 0 || err < 0) child_fail(report_fd, CORRAL_STAGE_DUP2, errno);
    if (install_stdio(in, 0) != 0 || install_stdio(out, 1) != 0 || install_stdio(err, 2) != 0) {
        child_fail(report_fd, CORRAL_STAGE_DUP2, errno);
    }
    // Nothing of the parent's may leak into the task, whether or not it was opened close-on-exec.
    mark_all_cloexec_from(3);

    if (a->cwd != NULL && chdir(a->cwd) != 0) child_fail(report_fd, CORRAL_STAGE_CHDIR, errno);

    for (int i = 0; i < a->rlimit_count; i++) {
        if (setrlimit(a->rlimits[i].resource, &a->rlimits[i].limit) != 0) {
            child_fail(report_fd, CORRAL_STAGE_RLIMIT, errno);
        }
    }

    if (a->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        child_fail(report_fd, CORRAL_STAGE_NO_NEW_PRIVS, errno);
    }

    if (a->landlock_ruleset_fd >= 0 && syscall(SYS_landlock_restrict_self, a->landlock_ruleset_fd, 0) != 0) {
        child_fail(report_fd, CORRAL_STAGE_LANDLOCK, errno);
    }

    // The filter goes last: from here on only what it allows can run, and execve must be among that.
    if (filter != NULL &&
        syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, (unsigned)a->seccomp_flags, filter) != 0) {
        child_fail(report_fd, CORRAL_STAGE_SECCOMP, errno);
    }

    int exec_error = ENOENT;
    int saw_eacces = 0;
    for (const char *const *path = a->exec_paths; *path != NULL; path++) {
        execve(*path, (char *const *)a->argv, (char *const *)a->envp);
        exec_error = errno;
        if (exec_error == EACCES) {
            saw_eacces = 1;
        } else if (exec_error != ENOENT && exec_error != ENOTDIR) {
            break;  // the file exists but cannot run: no other candidate would be the one the user meant
        }
    }
    if (saw_eacces && (exec_error == ENOENT || exec_error == ENOTDIR)) exec_error = EACCES;
    child_fail(report_fd, CORRAL_STAGE_EXEC, exec_error);
}

static long raw_clone3(struct corral_clone_args *args) {
    return syscall(SYS_clone3, args, sizeof *args);
}

int corral_spawn(const corral_spawn_attr *a, corral_spawn_result *r) {
    memset(r, 0, sizeof *r);
    r->pid = -1;
    r->pidfd = -1;

    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) {
        r->failed_stage = CORRAL_STAGE_PIPE;
        r->error = errno;
        return -1;
    }

    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);

    int pidfd = -1;
    long pid = -1;
    corral_spawn_attr attr = *a;
    // Built before the clone: the child only reads it.
    struct sock_fprog program = {.len = a->seccomp_length, .filter = (struct sock_filter *)a->seccomp_instructions};
    const struct sock_fprog *filter = a->seccomp_instructions != NULL ? &program : NULL;

    struct corral_clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_PIDFD;
    args.pidfd = (uint64_t)(uintptr_t)&pidfd;
    args.exit_signal = SIGCHLD;
    if (a->cgroup_fd >= 0) {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = (uint64_t)a->cgroup_fd;
    }
    pid = raw_clone3(&args);
    if (pid == 0) {
        attr.cgroup_procs_fd = -1;  // CLONE_INTO_CGROUP placed us already
        close(report[0]);
        child_main(&attr, filter, report[1]);
    }
    if (pid > 0) {
        r->used_clone3 = 1;
    } else {
        // No clone3 (old kernel, or a container filter answering ENOSYS/EPERM): legacy clone, which gives a pidfd since
        // Linux 5.2; the child then joins its cgroup itself through cgroup.procs.
        int clone3_error = errno;
        pidfd = -1;
        pid = syscall(SYS_clone, (unsigned long)(CLONE_PIDFD | SIGCHLD), 0, &pidfd, 0, 0);
        if (pid < 0 && errno == EINVAL) {
            pid = syscall(SYS_clone, (unsigned long)SIGCHLD, 0, 0, 0, 0);
            if (pid > 0) pidfd = corral_pidfd_open((pid_t)pid);
        }
        if (pid == 0) {
            close(report[0]);
            child_main(&attr, filter, report[1]);
        }
        if (pid < 0) {
            int error = errno;
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            close(report[0]);
            close(report[1]);
            r->failed_stage = CORRAL_STAGE_CLONE;
            r->error = error != 0 ? error : clone3_error;
            return -1;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(report[1]);

    r->pid = (pid_t)pid;
    r->pidfd = pidfd;

    int message[2] = {0, 0};
    ssize_t got;
    do {
        got = read(report[0], message, sizeof message);
    } while (got < 0 && errno == EINTR);
    close(report[0]);

    if (got == (ssize_t)sizeof message) {
        r->failed_stage = message[0];
        r->error = message[1];
        int status;
        while (waitpid(r->pid, &status, 0) < 0 && errno == EINTR) {
        }
        if (r->pidfd >= 0) close(r->pidfd);
        r->pidfd = -1;
        return -1;
    }
    return 0;
}
