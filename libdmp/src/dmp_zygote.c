/*
 * dmp_zygote.c - a fork server: start children in a fraction of an exec.
 *
 * Exec-ing a program linked with libzmq costs milliseconds (a score of
 * shared libraries to map and relocate). So, like Python's forkserver, an
 * agent starts the program once in zygote mode: dmp_init sees DMP_ZYGOTE
 * and, before any ZeroMQ context or thread exists, serves spawn requests
 * on a unix socket. Each request is a spawn record plus the child's stdout
 * and stderr (SCM_RIGHTS). The zygote forks twice: the intermediate exits
 * at once, so the child is re-parented to the agent (a child subreaper),
 * which reaps it and reads its exit status like any child of its own. The
 * zygote answers with the child's pid. It exits when the agent closes the
 * socket. Nothing here ever creates a thread or a ZeroMQ context: fork is
 * safe exactly because of that.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define RECORD_MAX (DMP__WIRE_MAX + 4096)

/* RLIMIT_CPU for each child, from DMP_RLIMIT_CPU; 0: none. */
static unsigned long s_cpu_limit;

/* Receives one request: record bytes and DMP__ZYGOTE_FDS descriptors. */
static ssize_t
s_recv(int sock, uint8_t *buf, size_t size, int fds[DMP__ZYGOTE_FDS])
{
    char control[CMSG_SPACE(sizeof(int) * DMP__ZYGOTE_FDS)];
    struct iovec iov = {buf, size};
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = control,
                        .msg_controllen = sizeof control};
    ssize_t n;
    do
        n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    for (int i = 0; i < DMP__ZYGOTE_FDS; i++)
        fds[i] = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            memcpy(fds, CMSG_DATA(c),
                   sizeof(int) * (k < DMP__ZYGOTE_FDS ? k : DMP__ZYGOTE_FDS));
        }
    return n;
}

/* In the grandchild: becomes the process the record describes. */
static void __attribute__((noreturn))
s_become_child(int sock, const uint8_t *record, size_t len,
               const int fds[DMP__ZYGOTE_FDS])
{
    close(sock);
    setpgid(0, 0);
    if (dup2(fds[0], 1) < 0 || dup2(fds[1], 2) < 0)
        _exit(127);
    /* Nothing of the zygote's reaches the child: only 0, 1, 2. */
    closefrom(3);
    /* The agent's job_rlimit_cpu: the zygote runs without it (its own
     * CPU time would add up over its children's lives). */
    if (s_cpu_limit > 0) {
        struct rlimit cpu = {(rlim_t)s_cpu_limit, (rlim_t)s_cpu_limit};
        if (setrlimit(RLIMIT_CPU, &cpu) != 0)
            _exit(127);
    }
    signal(SIGCHLD, SIG_DFL);
    /* The record names the process; the environment says it to its own
     * children (like an exec-started child's DMP_PROCESS_NAME). */
    dmp__msg_t rec;
    if (dmp__wire_decode(record, len, &rec) == 0) {
        char id[32];
        snprintf(id, sizeof id, "%llu", (unsigned long long)rec.id);
        setenv("DMP_PROC", id, 1);
        setenv("DMP_PROCESS_NAME", rec.u.spawn_request.name, 1);
        dmp__msg_clear(&rec);
    }
    dmp__child_run(record, len);
}

void
dmp__zygote_main(const char *fd_text)
{
    unsigned long fd;
    if (dmp__parse_uint(fd_text, 1024, &fd) != 0)
        _exit(127);
    int sock = (int)fd;
    unsetenv("DMP_ZYGOTE");
    const char *cpu = getenv("DMP_RLIMIT_CPU");
    if (cpu && dmp__parse_uint(cpu, ULONG_MAX, &s_cpu_limit) != 0)
        _exit(127);
    unsetenv("DMP_RLIMIT_CPU");
    /* Die with the agent, even if it is SIGKILLed. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1)
        _exit(0);
    uint8_t *record = dmp__malloc(RECORD_MAX);
    if (!record || send(sock, "ready", 5, MSG_NOSIGNAL) != 5)
        _exit(127);
    for (;;) {
        int fds[DMP__ZYGOTE_FDS];
        ssize_t n = s_recv(sock, record, RECORD_MAX, fds);
        if (n <= 0)
            _exit(0); /* the agent is gone or done with us */
        int32_t reply = -EINVAL;
        int pipefd[2] = {-1, -1};
        if (fds[0] >= 0 && fds[1] >= 0 && pipe2(pipefd, O_CLOEXEC) == 0) {
            pid_t mid = fork();
            if (mid == 0) {
                pid_t child = fork();
                if (child == 0)
                    s_become_child(sock, record, (size_t)n, fds);
                int32_t pid = child > 0 ? (int32_t)child : -errno;
                ssize_t w = write(pipefd[1], &pid, sizeof pid);
                _exit(w == sizeof pid ? 0 : 1);
            }
            if (mid > 0) {
                close(pipefd[1]);
                pipefd[1] = -1;
                if (read(pipefd[0], &reply, sizeof reply) != sizeof reply)
                    reply = -ECHILD;
                waitpid(mid, NULL, 0);
            } else {
                reply = -errno;
            }
        }
        for (int i = 0; i < 2; i++) {
            if (pipefd[i] >= 0)
                close(pipefd[i]);
            if (fds[i] >= 0)
                close(fds[i]);
        }
        if (send(sock, &reply, sizeof reply, MSG_NOSIGNAL) != sizeof reply)
            _exit(0);
    }
}
