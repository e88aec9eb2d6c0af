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
#include <linux/capability.h>
#include <linux/securebits.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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
#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

/// The kernel's clone_args up to `cgroup` (CLONE_ARGS_SIZE_VER2, Linux 5.7); declared here because glibc 2.36 has no
/// header for it.
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

// The soft open-file limit tasks get: this process's own before `corral_raise_nofile_limit` raised it.
// RLIM_INFINITY: never raised, tasks inherit ours.
static rlim_t task_nofile_soft = RLIM_INFINITY;

int64_t corral_raise_nofile_limit(void) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return -1;
    rlim_t before = limit.rlim_cur;
    if (limit.rlim_cur >= limit.rlim_max) return (int64_t)before;
    limit.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
        // A hard limit above fs.nr_open (an infinite one) is refused as it stands: both become nr_open.
        FILE *file = fopen("/proc/sys/fs/nr_open", "re");
        unsigned long long nr_open = 0;
        int read = file != NULL && fscanf(file, "%llu", &nr_open) == 1;
        if (file != NULL) fclose(file);
        if (!read || (rlim_t)nr_open <= before) return -1;
        limit.rlim_cur = (rlim_t)nr_open;
        limit.rlim_max = (rlim_t)nr_open;
        if (setrlimit(RLIMIT_NOFILE, &limit) != 0) return -1;
    }
    // Atomic: a spawn on another thread may read it meanwhile.
    __atomic_store_n(&task_nofile_soft, before, __ATOMIC_RELEASE);
    return (int64_t)before;
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

// Before giving up root: what only CAP_SETPCAP may do (corral_drop_thread_bounding_set, on the child's own
// credentials). The bounding set bounds what any later execve can gain; the securebits make a setuid-root program (or
// uid 0 regained some way) grant nothing, and are locked. Nothing to do when the spawning thread did it already.
static void drop_privileges_before_identity(void *context) {
    if (corral_drop_thread_bounding_set() < 0) child_fail(context, CORRAL_STAGE_CAPABILITIES, errno);
}

// Effective, permitted and inheritable to zero (always allowed), and the ambient set cleared.
static void clear_capability_sets(void *context) {
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capset, &header, data) != 0) child_fail(context, CORRAL_STAGE_CAPABILITIES, errno);
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
        child_fail(context, CORRAL_STAGE_CAPABILITIES, errno);
    }
}

__attribute__((noreturn)) static void child_main(const corral_spawn_attr *a, const struct sock_fprog *filter,
                                                int born_in_cgroup, void *context) {
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

    // Cgroups first, while the child still has the parent's credentials (cgroup.procs is root's file). A child born
    // by clone3(CLONE_INTO_CGROUP) is already in its v2 cgroup; the v1 hierarchies (a hybrid setup's pids and
    // memory) have no such flag and are joined here.
    if (a->cgroup_procs_fd >= 0 && !born_in_cgroup) {
        if (write(a->cgroup_procs_fd, "0", 1) != 1) child_fail(context, CORRAL_STAGE_CGROUP, errno);
    }
    for (int i = 0; i < a->extra_procs_count; i++) {
        if (write(a->extra_procs_fds[i], "0", 1) != 1) child_fail(context, CORRAL_STAGE_CGROUP, errno);
    }

    if (a->drop_capabilities) drop_privileges_before_identity(context);
    int changes_identity = a->uid != (uid_t)-1 || a->gid != (gid_t)-1;
    // Raw syscalls: glibc's set*id wrappers would signal every thread of the parent (they share our memory).
    if (changes_identity && syscall(SYS_setgroups, 0, NULL) != 0) child_fail(context, CORRAL_STAGE_IDENTITY, errno);
    if (a->gid != (gid_t)-1 && syscall(SYS_setresgid, a->gid, a->gid, a->gid) != 0) {
        child_fail(context, CORRAL_STAGE_IDENTITY, errno);
    }
    if (a->uid != (uid_t)-1 && syscall(SYS_setresuid, a->uid, a->uid, a->uid) != 0) {
        child_fail(context, CORRAL_STAGE_IDENTITY, errno);
    }
    // The uid change set the mm we share with the parent to fs.suid_dumpable, which may be 1: the server stays
    // closed to other processes.
    if (changes_identity) prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    if (a->drop_capabilities) clear_capability_sets(context);

    // After the identity change, which clears the parent-death signal.
    if (a->pdeathsig > 0) {
        if (prctl(PR_SET_PDEATHSIG, a->pdeathsig, 0, 0, 0) != 0) child_fail(context, CORRAL_STAGE_PDEATHSIG, errno);
        // The parent may have died before the prctl: then nobody would ever send the signal. In another PID
        // namespace getppid() is 0; there the namespace's init, which dies with the parent, covers that race.
        if (a->expected_parent > 0 && a->pid_namespace_fd < 0 && !a->new_pid_namespace &&
            getppid() != a->expected_parent) {
            _exit(127);
        }
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

    rlim_t nofile_soft = __atomic_load_n(&task_nofile_soft, __ATOMIC_ACQUIRE);
    if (nofile_soft != RLIM_INFINITY) {
        // The task gets the soft limit the server started with (a profile's nofile, set below, still wins).
        struct rlimit nofile;
        if (getrlimit(RLIMIT_NOFILE, &nofile) != 0) child_fail(context, CORRAL_STAGE_RLIMIT, errno);
        nofile.rlim_cur = nofile_soft;
        if (setrlimit(RLIMIT_NOFILE, &nofile) != 0) child_fail(context, CORRAL_STAGE_RLIMIT, errno);
    }
    for (int i = 0; i < a->rlimit_count; i++) {
        if (setrlimit(a->rlimits[i].resource, &a->rlimits[i].limit) != 0) {
            child_fail(context, CORRAL_STAGE_RLIMIT, errno);
        }
    }

    // A task that gave up root must not win it back through a setuid-root or file-capability program.
    if ((a->no_new_privs || a->drop_capabilities || changes_identity) && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
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
    int born_in_cgroup;
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
    child_main(context->attr, context->filter, context->born_in_cgroup, context);
}

enum { CHILD_STACK_SIZE = 256 * 1024 };

// The vfork window: from its uid change until execve a child already belongs to the task user, so another task of
// that user (one without Landlock's signal scope) could SIGSTOP it there, and the spawning thread would wait forever.
// A watchdog thread SIGKILLs, through the pidfd the kernel wrote before the child ran, a child that has not reached
// execve in time; the spawn then fails with CORRAL_STAGE_TIMEOUT.
enum { WATCH_SLOTS = 64, WATCH_TIMEOUT_MS = 2000, WATCH_PERIOD_MS = 250 };

typedef struct {
    volatile int pidfd;
    struct timespec started;
    volatile int killed;
} watched_spawn;

static pthread_mutex_t watch_lock = PTHREAD_MUTEX_INITIALIZER;
static watched_spawn *watch_slots[WATCH_SLOTS];
static int watchdog_running;

static void *watchdog_main(void *unused) {
    (void)unused;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);  // process-directed signals go to the program's own threads
    for (;;) {
        struct timespec period = {.tv_sec = 0, .tv_nsec = WATCH_PERIOD_MS * 1000000L};
        nanosleep(&period, NULL);
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        pthread_mutex_lock(&watch_lock);
        for (int i = 0; i < WATCH_SLOTS; i++) {
            watched_spawn *slot = watch_slots[i];
            if (slot == NULL || slot->killed || slot->pidfd < 0) continue;
            long elapsed = (now.tv_sec - slot->started.tv_sec) * 1000 + (now.tv_nsec - slot->started.tv_nsec) / 1000000;
            if (elapsed >= WATCH_TIMEOUT_MS && corral_pidfd_send_signal(slot->pidfd, SIGKILL, 0) == 0) slot->killed = 1;
        }
        pthread_mutex_unlock(&watch_lock);
    }
    return NULL;
}

/// Registers a spawn; 0, or -1 when no slot or watchdog could be had (the spawn then goes on unwatched).
static int watch_spawn(watched_spawn *slot) {
    clock_gettime(CLOCK_MONOTONIC, &slot->started);
    slot->pidfd = -1;
    slot->killed = 0;
    int registered = -1;
    pthread_mutex_lock(&watch_lock);
    if (!watchdog_running) {
        pthread_t thread;
        pthread_attr_t attributes;
        pthread_attr_init(&attributes);
        pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attributes, 64 * 1024);
        if (pthread_create(&thread, &attributes, watchdog_main, NULL) == 0) watchdog_running = 1;
        pthread_attr_destroy(&attributes);
    }
    for (int i = 0; watchdog_running && i < WATCH_SLOTS; i++) {
        if (watch_slots[i] == NULL) {
            watch_slots[i] = slot;
            registered = 0;
            break;
        }
    }
    pthread_mutex_unlock(&watch_lock);
    return registered;
}

static void unwatch_spawn(watched_spawn *slot) {
    pthread_mutex_lock(&watch_lock);
    for (int i = 0; i < WATCH_SLOTS; i++) {
        if (watch_slots[i] == slot) watch_slots[i] = NULL;
    }
    pthread_mutex_unlock(&watch_lock);
}

/// Cleared for good the first time the kernel (or a filter around this process) refuses clone3.
static volatile int clone3_usable = 1;

int corral_clone3_available(void) { return clone3_usable; }

/// clone3 with CLONE_VM: the child starts on the new stack with the parent's registers, so the call and the jump
/// into `entry` are written in assembly (no C frame survives the stack switch). libc has no public clone3 wrapper.
/// Returns the pid, or -errno.
static long clone3_vfork(struct corral_clone_args *args, int (*entry)(void *), void *argument) {
#if defined(__x86_64__)
    long result;
    register void *function __asm__("r12") = (void *)entry;
    register void *data __asm__("r13") = argument;
    __asm__ volatile(
        "syscall\n\t"
        "test %%rax, %%rax\n\t"
        "jnz 1f\n\t"
        // Child: an aligned fresh stack (the kernel set rsp to stack + stack_size), no frame to return to.
        "xor %%ebp, %%ebp\n\t"
        "mov %%r13, %%rdi\n\t"
        "call *%%r12\n\t"
        "mov %%eax, %%edi\n\t"
        "mov $60, %%eax\n\t"  // exit
        "syscall\n\t"
        "hlt\n"
        "1:\n\t"
        : "=a"(result)
        : "0"((long)SYS_clone3), "D"(args), "S"(sizeof *args), "r"(function), "r"(data)
        : "rcx", "r11", "memory");
    return result;
#else
    (void)args;
    (void)entry;
    (void)argument;
    return -ENOSYS;  // other architectures use clone() and join the cgroup through cgroup.procs
#endif
}

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
        .born_in_cgroup = 0,
        .failed_stage = 0,
        .error = 0,
    };

    // Before the setns below: a thread created while this one's children go to another PID namespace is refused.
    watched_spawn watch;
    int watched = (a->uid != (uid_t)-1 || a->gid != (gid_t)-1) && watch_spawn(&watch) == 0;
    volatile int *pidfd_slot = &watch.pidfd;

    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);

    // A child meant for another PID namespace is born there: the calling thread's namespace for children is
    // switched for the clone alone (this thread runs nothing else meanwhile) and switched back at once.
    if (a->pid_namespace_fd >= 0 && setns(a->pid_namespace_fd, CLONE_NEWPID) != 0) {
        int error = errno;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (watched) unwatch_spawn(&watch);
        munmap(stack, CHILD_STACK_SIZE);
        r->failed_stage = CORRAL_STAGE_PID_NAMESPACE;
        r->error = error;
        return -1;
    }

    // The kernel writes the pidfd here before the child runs, where the watchdog can see it.
    int unwatched_pidfd = -1;
    int *pidfd_target = watched ? (int *)pidfd_slot : &unwatched_pidfd;
    pid_t pid = -1;
    int clone_error = 0;
    uint64_t namespace_flag = a->new_pid_namespace ? CLONE_NEWPID : 0;
    if (a->cgroup_dir_fd >= 0 && clone3_usable) {
        struct corral_clone_args args;
        memset(&args, 0, sizeof args);
        args.flags = CLONE_VM | CLONE_VFORK | CLONE_PIDFD | CLONE_INTO_CGROUP | namespace_flag;
        args.pidfd = (uint64_t)(uintptr_t)pidfd_target;
        args.exit_signal = SIGCHLD;
        args.stack = (uint64_t)(uintptr_t)stack;
        args.stack_size = CHILD_STACK_SIZE;
        args.cgroup = (uint64_t)a->cgroup_dir_fd;
        context.born_in_cgroup = 1;
        long rc = clone3_vfork(&args, child_entry, &context);
        if (rc >= 0) {
            pid = (pid_t)rc;
        } else {
            clone_error = (int)-rc;
            context.born_in_cgroup = 0;
            // No clone3, no CLONE_INTO_CGROUP (before 5.7), or a seccomp filter around us that refuses it: the
            // child joins through cgroup.procs instead, from now on.
            if (clone_error == ENOSYS || clone_error == E2BIG || clone_error == EINVAL || clone_error == EPERM) {
                clone3_usable = 0;
            } else {
                pid = -1;
                goto cloned;
            }
        }
    }
    if (pid < 0) {
        int flags = CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD | (int)namespace_flag;
        pid = clone(child_entry, (char *)stack + CHILD_STACK_SIZE, flags, &context, pidfd_target);
        if (pid < 0 && errno == EINVAL) {
            // Before Linux 5.2 there is no CLONE_PIDFD: open one while the child is still unreaped (race-free).
            pid = clone(child_entry, (char *)stack + CHILD_STACK_SIZE, flags & ~CLONE_PIDFD, &context);
            if (pid > 0) *pidfd_target = corral_pidfd_open(pid);
        }
        clone_error = errno;
    }
cloned:
    if (a->pid_namespace_fd >= 0 && setns(a->own_pid_namespace_fd, CLONE_NEWPID) != 0) {
        // /proc/thread-self/ns/pid is this thread's active namespace, always a valid target. If even that fails,
        // this thread's children would all land in the tasks' namespace: stop rather than go on.
        int own = open("/proc/thread-self/ns/pid", O_RDONLY | O_CLOEXEC);
        if (own < 0 || setns(own, CLONE_NEWPID) != 0) abort();
        close(own);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    munmap(stack, CHILD_STACK_SIZE);
    int pidfd = *pidfd_target;
    int timed_out = 0;
    if (watched) {
        unwatch_spawn(&watch);
        timed_out = watch.killed;
    }
    if (pid >= 0 && timed_out && context.failed_stage == 0) {
        context.failed_stage = CORRAL_STAGE_TIMEOUT;
        context.error = ETIMEDOUT;
    }

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
