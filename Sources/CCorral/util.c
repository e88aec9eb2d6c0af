// Thin wrappers for system calls and structures that do not import into Swift, or that glibc 2.36 does not wrap.
#define _GNU_SOURCE
#include "corral.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <time.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <limits.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#endif
#ifndef PIDFD_SIGNAL_PROCESS_GROUP
#define PIDFD_SIGNAL_PROCESS_GROUP (1UL << 2)
#endif
#ifndef LANDLOCK_CREATE_RULESET_VERSION
#define LANDLOCK_CREATE_RULESET_VERSION (1U << 0)
#endif

int corral_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

int corral_pidfd_send_signal(int pidfd, int sig, int flags) {
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, (unsigned)flags);
}

int corral_pidfd_signal_group(int pidfd, int sig) {
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, (unsigned)PIDFD_SIGNAL_PROCESS_GROUP);
}

int corral_reap(pid_t pid, corral_exit_info *info) {
    int status = 0;
    struct rusage usage;
    memset(&usage, 0, sizeof usage);
    pid_t got;
    do {
        got = wait4(pid, &status, WNOHANG, &usage);
    } while (got < 0 && errno == EINTR);
    if (got < 0) return -1;
    if (got == 0) return 0;
    memset(info, 0, sizeof *info);
    if (WIFEXITED(status)) {
        info->exited = 1;
        info->status = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        info->exited = 0;
        info->status = WTERMSIG(status);
        info->core_dumped = WCOREDUMP(status) ? 1 : 0;
    }
    info->user_usec = (int64_t)usage.ru_utime.tv_sec * 1000000 + usage.ru_utime.tv_usec;
    info->system_usec = (int64_t)usage.ru_stime.tv_sec * 1000000 + usage.ru_stime.tv_usec;
    info->max_rss_kib = usage.ru_maxrss;
    return 1;
}

int corral_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int corral_epoll_add(int epfd, int fd, uint32_t events, uint64_t token) {
    struct epoll_event event;
    memset(&event, 0, sizeof event);
    event.events = events;
    event.data.u64 = token;
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event);
}

int corral_epoll_del(int epfd, int fd) { return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL); }

int corral_epoll_wait(int epfd, uint64_t *tokens, uint32_t *events, int max, int timeout_ms) {
    struct epoll_event buffer[64];
    if (max > 64) max = 64;
    int count;
    do {
        count = epoll_wait(epfd, buffer, max, timeout_ms);
    } while (count < 0 && errno == EINTR);
    for (int i = 0; i < count; i++) {
        tokens[i] = buffer[i].data.u64;
        events[i] = buffer[i].events;
    }
    return count;
}

uint32_t corral_epollin(void) { return EPOLLIN; }
uint32_t corral_epollhup(void) { return EPOLLHUP; }
uint32_t corral_epollerr(void) { return EPOLLERR; }

int corral_eventfd(void) { return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }

int corral_eventfd_signal(int fd) {
    uint64_t one = 1;
    return write(fd, &one, sizeof one) == sizeof one ? 0 : -1;
}

int corral_eventfd_drain(int fd) {
    uint64_t value;
    return read(fd, &value, sizeof value) == sizeof value ? 0 : -1;
}

int corral_set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

int corral_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int corral_set_pipe_size(int fd, int size) { return fcntl(fd, F_SETPIPE_SZ, size); }

/// Reads a small /proc file whole into `buffer` (NUL-terminated); its length, or -1.
static ssize_t read_proc_file(const char *path, char *buffer, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t got = read(fd, buffer, size - 1);
    close(fd);
    if (got <= 0) return -1;
    buffer[got] = 0;
    return got;
}

int corral_count_open_fds(void) {
    DIR *dir = opendir("/proc/self/fd");
    if (dir == NULL) return -1;
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] != '.') count++;
    }
    closedir(dir);
    return count - 1;  // the directory's own descriptor
}

int corral_count_threads(void) {
    char buffer[1024];
    if (read_proc_file("/proc/self/stat", buffer, sizeof buffer) < 0) return -1;
    char *cursor = strrchr(buffer, ')');
    if (cursor == NULL) return -1;
    cursor++;
    int field = 2;
    char *save = NULL;
    for (char *token = strtok_r(cursor, " ", &save); token != NULL; token = strtok_r(NULL, " ", &save)) {
        field++;
        if (field == 20) return atoi(token);
    }
    return -1;
}

int corral_landlock_abi_version(void) {
    long version = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    return version < 0 ? 0 : (int)version;
}

const char *corral_signal_name(int sig) { return sigabbrev_np(sig); }

int corral_poll_microseconds(struct pollfd *fds, nfds_t count, long microseconds) {
    struct timespec timeout = {.tv_sec = microseconds / 1000000, .tv_nsec = (microseconds % 1000000) * 1000};
    return ppoll(fds, count, &timeout, NULL);
}

int corral_write_all_nosigpipe(int fd, const void *buffer, size_t length) {
    struct iovec piece = {.iov_base = (void *)buffer, .iov_len = length};
    return corral_writev_all_nosigpipe(fd, &piece, 1);
}

/// Set once by corral_ignore_sigpipe, read by every write after: SIGPIPE is ignored process-wide, no per-write mask.
static atomic_int sigpipe_ignored;

void corral_ignore_sigpipe(void) {
    signal(SIGPIPE, SIG_IGN);
    atomic_store(&sigpipe_ignored, 1);
}

/// Writes the pieces, skipping what each writev took; 0, or -1 with errno.
static int writev_all(int fd, struct iovec *pieces, int count) {
    while (count > 0) {
        if (pieces->iov_len == 0) {
            pieces++;
            count--;
            continue;
        }
        ssize_t written = writev(fd, pieces, count > IOV_MAX ? IOV_MAX : count);
        if (written < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        // Skip what was written: whole pieces, then part of the next one.
        while (count > 0 && (size_t)written >= pieces->iov_len) {
            written -= (ssize_t)pieces->iov_len;
            pieces++;
            count--;
        }
        if (count > 0) {
            pieces->iov_base = (char *)pieces->iov_base + written;
            pieces->iov_len -= (size_t)written;
        }
    }
    return 0;
}

int corral_writev_all_nosigpipe(int fd, struct iovec *pieces, int count) {
    if (atomic_load_explicit(&sigpipe_ignored, memory_order_relaxed)) return writev_all(fd, pieces, count);
    sigset_t pipe_only, previous;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    // Was a SIGPIPE already pending for another reason? Then it is not ours to consume.
    sigset_t pending;
    sigpending(&pending);
    int already_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_only, &previous);
    int result = writev_all(fd, pieces, count);
    int saved_errno = result == 0 ? 0 : errno;
    if (result == -1 && saved_errno == EPIPE && !already_pending) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_only, NULL, &zero) == -1 && errno == EINTR) {}
    }
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    errno = saved_errno;
    return result;
}

int corral_drop_thread_bounding_set(void) {
    if (prctl(PR_CAPBSET_READ, 8 /* CAP_SETPCAP */, 0, 0, 0) != 1) return 1;
    // SECBIT_NOROOT|_LOCKED, SECBIT_NO_SETUID_FIXUP_LOCKED, SECBIT_KEEP_CAPS_LOCKED, SECBIT_NO_CAP_AMBIENT_RAISE|_LOCKED
    unsigned long bits = 0x01 | 0x02 | 0x08 | 0x20 | 0x40 | 0x80;
    if (prctl(PR_SET_SECUREBITS, bits, 0, 0, 0) != 0) return errno == EPERM ? 1 : -1;
    for (int cap = 0; cap < 64; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) return -1;
    }
    return 0;
}

int corral_set_non_dumpable(void) { return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); }

int corral_get_dumpable(void) { return prctl(PR_GET_DUMPABLE, 0, 0, 0, 0); }

static int64_t io_field(const char *text, const char *field) {
    size_t length = strlen(field);
    for (const char *line = text; line != NULL && *line != 0;) {
        if (strncmp(line, field, length) == 0 && line[length] == ':') return strtoll(line + length + 1, NULL, 10);
        const char *next = strchr(line, '\n');
        line = next != NULL ? next + 1 : NULL;
    }
    return -1;
}

int corral_process_io_bytes(pid_t pid, int64_t *read_bytes, int64_t *write_bytes) {
    return corral_process_io_bytes_at(corral_open_process_io(pid), 1, read_bytes, write_bytes);
}

int corral_open_process_io(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/io", (int)pid);
    return open(path, O_RDONLY | O_CLOEXEC);
}

int corral_process_io_bytes_at(int fd, int close_after, int64_t *read_bytes, int64_t *write_bytes) {
    *read_bytes = -1;
    *write_bytes = -1;
    if (fd < 0) return -1;
    char buffer[1024];
    ssize_t got = pread(fd, buffer, sizeof buffer - 1, 0);
    if (close_after) close(fd);
    if (got <= 0) return -1;
    buffer[got] = 0;
    *read_bytes = io_field(buffer, "read_bytes");
    *write_bytes = io_field(buffer, "write_bytes");
    return 0;
}
