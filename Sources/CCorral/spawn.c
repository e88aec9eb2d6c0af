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
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
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

static void child_report(void *context, int stage, int error);

__attribute__((noreturn)) static void child_fail(void *context, int stage, int error) {
    child_report(context, stage, error);
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
                                                void *context) {
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
    if (sigprocmask(SIG_SETMASK, &empty, NULL) != 0) child_fail(context, CORRAL_STAGE_SIGNALS, errno);

    if (a->new_session && setsid() < 0) child_fail(context, CORRAL_STAGE_SETSID, errno);

    if (a->pdeathsig > 0) {
        if (prctl(PR_SET_PDEATHSIG, a->pdeathsig, 0, 0, 0) != 0) child_fail(context, CORRAL_STAGE_PDEATHSIG, errno);
        // The parent may have died before the prctl: then nobody would ever send the signal.
        if (a->expected_parent > 0 && getppid() != a->expected_parent) _exit(127);
    }

    if (a->cgroup_procs_fd >= 0) {
        if (write(a->cgroup_procs_fd, "0", 1) != 1) child_fail(context, CORRAL_STAGE_CGROUP, errno);
    }

    int in = move_above_stdio(a->stdin_fd, 0);
    int out = move_above_stdio(a->stdout_fd, 1);
    int err = move_above_stdio(a->stderr_fd, 2);
    if (in < 0 || out < 0 || err < 0) child_fail(context, CORRAL_STAGE_DUP2, errno);
    if (install_stdio(in, 0) != 0 || install_stdio(out, 1) != 0 || install_stdio(err, 2) != 0) {
        child_fail(context, CORRAL_STAGE_DUP2, errno);
    }
    // Nothing of the parent's may leak into the task, whether or not it was opened close-on-exec.
    mark_all_cloexec_from(3);

    if (a->cwd != NULL && chdir(a->cwd) != 0) child_fail(context, CORRAL_STAGE_CHDIR, errno);

    for (int i = 0; i < a->rlimit_count; i++) {
        if (setrlimit(a->rlimits[i].resource, &a->rlimits[i].limit) != 0) {
            child_fail(context, CORRAL_STAGE_RLIMIT, errno);
        }
    }

    if (a->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        child_fail(context, CORRAL_STAGE_NO_NEW_PRIVS, errno);
    }

    if (a->landlock_ruleset_fd >= 0 && syscall(SYS_landlock_restrict_self, a->landlock_ruleset_fd, 0) != 0) {
        child_fail(context, CORRAL_STAGE_LANDLOCK, errno);
    }

    // The filter goes last: from here on only what it allows can run, and execve must be among that.
    if (filter != NULL &&
        syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, (unsigned)a->seccomp_flags, filter) != 0) {
        child_fail(context, CORRAL_STAGE_SECCOMP, errno);
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
    child_fail(context, CORRAL_STAGE_EXEC, exec_error);
}

/// Shared between the parent and the vfork child (same memory until the child execs or exits).
typedef struct {
    const corral_spawn_attr *attr;
    const struct sock_fprog *filter;
    volatile int failed_stage;
    volatile int error;
} spawn_context;

static void child_report(void *argument, int stage, int error) {
    spawn_context *context = argument;
    context->failed_stage = stage;
    context->error = error;
}

static int child_entry(void *argument) {
    spawn_context *context = argument;
    child_main(context->attr, context->filter, context);
}

enum { CHILD_STACK_SIZE = 256 * 1024 };

int corral_spawn(const corral_spawn_attr *a, corral_spawn_result *r) {
    memset(r, 0, sizeof *r);
    r->pid = -1;
    r->pidfd = -1;

    // CLONE_VM | CLONE_VFORK, as glibc's posix_spawn: no copy of the parent's page tables (the main cost of fork in
    // a large process), and the parent sleeps until the child has called execve or exited, so the child can report a
    // failure through shared memory. The child runs on its own stack and only makes system calls.
    void *stack = mmap(NULL, CHILD_STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
        r->failed_stage = CORRAL_STAGE_CLONE;
        r->error = errno;
        return -1;
    }

    // Built before the clone: the child only reads it.
    struct sock_fprog program = {.len = a->seccomp_length, .filter = (struct sock_filter *)a->seccomp_instructions};
    spawn_context context = {
        .attr = a,
        .filter = a->seccomp_instructions != NULL ? &program : NULL,
        .failed_stage = 0,
        .error = 0,
    };

    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);

    int pidfd = -1;
    int flags = CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD;
    pid_t pid = clone(child_entry, (char *)stack + CHILD_STACK_SIZE, flags, &context, &pidfd);
    if (pid < 0 && errno == EINVAL) {
        // Before Linux 5.2 there is no CLONE_PIDFD: open one while the child is still unreaped (race-free).
        pid = clone(child_entry, (char *)stack + CHILD_STACK_SIZE, flags & ~CLONE_PIDFD, &context);
        if (pid > 0) pidfd = corral_pidfd_open(pid);
    }
    int clone_error = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    munmap(stack, CHILD_STACK_SIZE);

    if (pid < 0) {
        r->failed_stage = CORRAL_STAGE_CLONE;
        r->error = clone_error;
        return -1;
    }
    r->pid = pid;
    r->pidfd = pidfd;
    if (context.failed_stage != 0) {
        r->failed_stage = context.failed_stage;
        r->error = context.error;
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        if (r->pidfd >= 0) close(r->pidfd);
        r->pidfd = -1;
        return -1;
    }
    return 0;
}
