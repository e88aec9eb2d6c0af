// The keeper: first process (init) of the PID namespace a server's tasks are born in. When it dies, the kernel kills
// every process left in that namespace, however deep in a task's tree, so no task outlives its server: the keeper
// has PR_SET_PDEATHSIG SIGKILL towards the server's spawning thread and also watches a pidfd of the server (for a
// server that died before the prctl). Meanwhile it reaps the orphans the namespace hands it.
//
// It is the server's own executable run again (/proc/self/exe, argv[0] "corral-keeper", CORRAL_KEEPER=1 in the
// environment) and takes over in this constructor, before main and before the Swift runtime does anything: any
// program that links the runtime can start it, with no helper binary to install or find.
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

static int is_keeper_invocation(int argc, char **argv, char **envp) {
    if (argc < 1 || argv == NULL || argv[0] == NULL || strcmp(argv[0], "corral-keeper") != 0) return 0;
    for (char **entry = envp; entry != NULL && *entry != NULL; entry++) {
        if (strcmp(*entry, "CORRAL_KEEPER=1") == 0) return 1;
    }
    return 0;
}

/// Standard input is a pidfd of the server.
__attribute__((noreturn)) static void keeper_main(void) {
    prctl(PR_SET_NAME, "corral-keeper", 0, 0, 0);
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL);
    sigset_t child;
    sigemptyset(&child);
    sigaddset(&child, SIGCHLD);
    int children = signalfd(-1, &child, SFD_CLOEXEC | SFD_NONBLOCK);
    for (;;) {
        struct pollfd watched[2] = {{.fd = 0, .events = POLLIN}, {.fd = children, .events = POLLIN}};
        int ready = poll(watched, children >= 0 ? 2 : 1, children >= 0 ? -1 : 1000);
        if (ready < 0 && errno != EINTR) _exit(1);
        if (watched[0].revents != 0) _exit(0);  // the server is gone (or the descriptor is bad): end the namespace
        struct signalfd_siginfo info;
        while (children >= 0 && read(children, &info, sizeof info) == (ssize_t)sizeof info) {
        }
        while (waitpid(-1, NULL, WNOHANG | __WALL) > 0) {
        }
    }
}

__attribute__((constructor(101))) static void corral_keeper_entry(int argc, char **argv, char **envp) {
    if (is_keeper_invocation(argc, argv, envp)) keeper_main();
}
