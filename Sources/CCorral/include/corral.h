#ifndef CORRAL_H
#define CORRAL_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/resource.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Where in the child a spawn failed; reported to the parent through a close-on-exec pipe.
typedef enum {
    CORRAL_STAGE_NONE = 0,
    CORRAL_STAGE_CLONE = 1,
    CORRAL_STAGE_SETSID = 2,
    CORRAL_STAGE_PDEATHSIG = 3,
    CORRAL_STAGE_CGROUP = 4,
    CORRAL_STAGE_DUP2 = 5,
    CORRAL_STAGE_CHDIR = 6,
    CORRAL_STAGE_RLIMIT = 7,
    CORRAL_STAGE_SIGNALS = 8,
    CORRAL_STAGE_NO_NEW_PRIVS = 9,
    CORRAL_STAGE_LANDLOCK = 10,
    CORRAL_STAGE_SECCOMP = 11,
    CORRAL_STAGE_EXEC = 12,
    CORRAL_STAGE_PIPE = 13,
    CORRAL_STAGE_IDENTITY = 14,
    CORRAL_STAGE_CAPABILITIES = 15,
    CORRAL_STAGE_PID_NAMESPACE = 16,
    CORRAL_STAGE_TIMEOUT = 17,       // the child did not reach execve in time (stopped by another process?): killed
} corral_stage;

typedef struct {
    int resource;          // RLIMIT_*
    struct rlimit limit;
} corral_rlimit;

/// Everything the child needs, prepared by the parent: the child allocates nothing and calls only raw syscalls.
typedef struct {
    /// Candidate executable paths, tried in order (the parent resolves PATH); NULL-terminated.
    const char *const *exec_paths;
    const char *const *argv;   // NULL-terminated
    const char *const *envp;   // NULL-terminated
    const char *cwd;           // NULL: inherit
    int stdin_fd;              // dup2'd to 0, 1, 2 in the child
    int stdout_fd;
    int stderr_fd;
    int new_session;           // setsid(): own session and process group
    int pdeathsig;             // 0: none
    pid_t expected_parent;     // the child exits at once if its parent is already gone
    int cgroup_procs_fd;       // -1: none; an open cgroup.procs the child writes "0" to, joining the cgroup
    int cgroup_dir_fd;         // -1: none; the same cgroup's directory, for clone3(CLONE_INTO_CGROUP): born in it
    const int *extra_procs_fds; // cgroup.procs of cgroup v1 hierarchies (pids, memory, cpu) the child joins
    int extra_procs_count;
    uid_t uid;                 // (uid_t)-1: keep; otherwise setgroups(0), setresgid(gid), setresuid(uid)
    gid_t gid;
    int drop_capabilities;     // empty every capability set (bounding too where CAP_SETPCAP allows), lock securebits
    int pid_namespace_fd;      // -1: none; the child is born in this PID namespace (setns around the clone)
    int own_pid_namespace_fd;  // the caller's own PID namespace, restored right after the clone
    int new_pid_namespace;     // CLONE_NEWPID: the child is the first process (init) of a new PID namespace
    const corral_rlimit *rlimits;
    int rlimit_count;
    int no_new_privs;
    int landlock_ruleset_fd;   // -1: none
    const void *seccomp_instructions; // struct sock_filter[seccomp_length], or NULL
    unsigned short seccomp_length;
    int seccomp_flags;          // extra flags for seccomp(SECCOMP_SET_MODE_FILTER)
} corral_spawn_attr;

typedef struct {
    pid_t pid;
    int pidfd;          // -1 if the kernel has no pidfds
    int failed_stage;   // corral_stage; 0 on success
    int error;          // errno of the failed stage
} corral_spawn_result;

/// Whether the last spawns could use clone3(CLONE_INTO_CGROUP): 1 yes, 0 fell back to clone + cgroup.procs.
int corral_clone3_available(void);

/// Spawns a child. Returns 0 when the child reached execve successfully, -1 otherwise (see `result`).
/// When the child failed after it was created, it has been reaped before this returns.
int corral_spawn(const corral_spawn_attr *attr, corral_spawn_result *result);

// pidfd helpers (raw syscalls; glibc 2.36 wraps only some of them)
int corral_pidfd_open(pid_t pid);
int corral_pidfd_send_signal(int pidfd, int sig, int flags);
/// Signals the process group of the pidfd's process (PIDFD_SIGNAL_PROCESS_GROUP, Linux 6.9); -1/EINVAL if unsupported.
int corral_pidfd_signal_group(int pidfd, int sig);

typedef struct {
    int exited;        // 1: exited normally; 0: killed by a signal
    int status;        // exit status or signal number
    int core_dumped;
    int64_t user_usec;
    int64_t system_usec;
    int64_t max_rss_kib;
} corral_exit_info;

/// Raises this process's soft open-file limit to its hard limit (a server holds several descriptors per task; at
/// the usual soft 1024 it runs out long before the machine does, and libdispatch aborts the process when it cannot
/// open a file). Tasks spawned afterwards get the soft limit back as it was. Returns the soft limit before, or -1
/// (errno) when it could not be raised; nothing to do returns the current one.
int64_t corral_raise_nofile_limit(void);

/// Non-blocking reap of an exited child through its pid (the pidfd said it has exited). 1: reaped; 0: still running;
/// -1: error (errno).
int corral_reap(pid_t pid, corral_exit_info *info);

// epoll (struct epoll_event is packed on x86_64 and does not import into Swift correctly)
int corral_epoll_create(void);
int corral_epoll_add(int epfd, int fd, uint32_t events, uint64_t token);
int corral_epoll_del(int epfd, int fd);
/// Fills tokens/events; returns the count, or -1 (errno; EINTR is retried inside).
int corral_epoll_wait(int epfd, uint64_t *tokens, uint32_t *events, int max, int timeout_ms);
uint32_t corral_epollin(void);
uint32_t corral_epollhup(void);
uint32_t corral_epollerr(void);

int corral_eventfd(void);
int corral_eventfd_signal(int fd);
int corral_eventfd_drain(int fd);

int corral_set_nonblocking(int fd);
int corral_pipe_cloexec(int fds[2]);
/// Largest pipe buffer the caller may set; sets it on fd (best effort).
int corral_set_pipe_size(int fd, int size);

/// Count of open file descriptors of this process (entries of /proc/self/fd, less the directory's own).
int corral_count_open_fds(void);
/// Count of threads of this process (from /proc/self/stat).
int corral_count_threads(void);

/// Empties the bounding set of the calling *thread* and locks its securebits (NOROOT, no ambient raise, no keep-caps),
/// as a spawn's child would do for itself: each bounding-set drop is a credential commit (40 of them, ~0.1 ms), so a
/// thread that spawns tasks does it once and its children inherit the result. The thread keeps its effective and
/// permitted sets. Returns 0, 1 when not permitted (no CAP_SETPCAP: nothing done), or -1 (errno).
int corral_drop_thread_bounding_set(void);

/// PR_SET_DUMPABLE 0: /proc/<pid>/environ, mem, fd and the like of this process are closed to other users' and
/// unprivileged processes. Returns 0 or -1 (errno).
int corral_set_non_dumpable(void);
/// PR_GET_DUMPABLE: 1 dumpable, 0 not (prctl is variadic and does not import into Swift).
int corral_get_dumpable(void);
/// Reads read_bytes and write_bytes of /proc/PID/io with one read (also works on a zombie). Returns 0, or -1 when the
/// file is unavailable; a field that is missing is -1.
int corral_process_io_bytes(pid_t pid, int64_t *read_bytes, int64_t *write_bytes);
/// Opens /proc/PID/io (-1 on failure), to be read later with `corral_process_io_bytes_at`: while the process is not
/// reaped, its pid cannot be reused, so the descriptor stays its own.
int corral_open_process_io(pid_t pid);
/// The same read through a descriptor from `corral_open_process_io` (closed when `close_after` is not 0); -1 when
/// `fd` is below 0 or the read fails.
int corral_process_io_bytes_at(int fd, int close_after, int64_t *read_bytes, int64_t *write_bytes);

/// Landlock ABI version: > 0 when available, 0 when the kernel has none (or it is disabled).
int corral_landlock_abi_version(void);

/// The signal's name without "SIG" (e.g. "KILL"), or NULL.
const char *corral_signal_name(int sig);

#include <poll.h>
/// poll(2) with a timeout in microseconds (ppoll, which glibc declares only under _GNU_SOURCE and so Swift's Glibc
/// module does not see).
int corral_poll_microseconds(struct pollfd *fds, nfds_t count, long microseconds);

/// Writes all of `buffer` to `fd` (a pipe) without letting a closed reader raise SIGPIPE in the process: SIGPIPE is
/// blocked in this thread for the write, a pending one is consumed, and the caller gets -1 with errno EPIPE. A
/// library cannot ignore SIGPIPE process-wide on its host's behalf, and pipes have no MSG_NOSIGNAL.
/// Returns 0 when everything was written, -1 with errno on failure.
int corral_write_all_nosigpipe(int fd, const void *buffer, size_t length);

/// The same for several pieces written as one (writev): a message and its newline, or an answer assembled around a
/// cached body, leave in one system call without being copied together first. `pieces` is advanced in place on a
/// partial write.
int corral_writev_all_nosigpipe(int fd, struct iovec *pieces, int count);

/// Ignores SIGPIPE in the whole process and tells the two functions above so: they then write without blocking and
/// restoring it around each write (three system calls fewer per write). For programs that own their process (a
/// server's main); a library must not call it. Do not give SIGPIPE another disposition afterwards.
void corral_ignore_sigpipe(void);

// Landlock rulesets prepared in the parent (landlock.c); the child only calls landlock_restrict_self on the fd.

/// Creates a ruleset handling every filesystem right the given ABI knows (and TCP bind/connect when `handle_tcp` and
/// ABI >= 4). Returns a close-on-exec fd, or -1 (errno).
int corral_landlock_create_ruleset(int abi, int handle_tcp);
/// Allows `path` and what is beneath it: read and execute only, or every handled right when `writable`. Rights that
/// do not apply to a non-directory are dropped. Returns 0, or -1 (errno; ENOENT when the path is missing).
int corral_landlock_allow_path(int ruleset_fd, int abi, const char *path, int writable);
/// Allows binding and/or connecting to a TCP port (ABI >= 4). Returns 0 or -1 (errno).
int corral_landlock_allow_port(int ruleset_fd, uint64_t port, int bind, int connect);
/// An anonymous in-memory file (memfd, close-on-exec) for exporting a seccomp filter; -1 on error.
int corral_memfd(const char *name);

#ifdef __cplusplus
}
#endif

#endif
