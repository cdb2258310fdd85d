/*
 * node_zygote.c - fork servers that start targets without an exec.
 *
 * For each executable that targets are started from (a parent's own
 * binary, or one from the binary cache), the agent keeps one zygote: that
 * executable started in zygote mode (see libdmp/src/dmp_zygote.c), talking
 * over a SOCK_SEQPACKET pair. A spawn sends the child's record and its
 * stdout/stderr; the answer is the child's pid. The zygote forks twice, so
 * the child is re-parented to us: the agent is a child subreaper, and reaps
 * and watches the child like one it exec'd itself. Executables are told
 * apart by device, inode and mtime, so a rebuilt program gets a new zygote.
 * A zygote that misbehaves is killed and the caller falls back to exec.
 */
#define _GNU_SOURCE
#include "node.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define ZYGOTES_MAX 8
#define ZYGOTE_IDLE 120.0   /* seconds unused before a zygote is closed */
#define ZYGOTE_WAIT_MS 2000 /* for its start and each answer */

typedef struct {
    char key[96];   /* dev:ino:mtime of the executable */
    pid_t pid;
    int sock;       /* -1: free slot */
    double used;    /* monotonic time of the last spawn */
} s_zygote_t;

static s_zygote_t s_zygotes[ZYGOTES_MAX];
static bool s_ready;

static void
s_init(void)
{
    if (s_ready)
        return;
    for (int i = 0; i < ZYGOTES_MAX; i++)
        s_zygotes[i].sock = -1;
    /* Children a zygote forks are re-parented to us when the intermediate
     * exits, so we can wait for them and read their exit status. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    s_ready = true;
}

static void
s_close(s_zygote_t *z)
{
    if (z->sock < 0 || z->pid <= 0)
        return;
    close(z->sock); /* EOF: it exits */
    kill(z->pid, SIGKILL);
    waitpid(z->pid, NULL, 0);
    z->sock = -1;
}

/* Waits for one answer on the zygote's socket. */
static ssize_t
s_recv(int sock, void *buf, size_t size)
{
    struct pollfd p = {sock, POLLIN, 0};
    if (poll(&p, 1, ZYGOTE_WAIT_MS) <= 0)
        return -1;
    return recv(sock, buf, size, 0);
}

static s_zygote_t *
s_start(node_t *node, const char *exe, const char *key)
{
    s_zygote_t *z = NULL;
    for (int i = 0; i < ZYGOTES_MAX; i++)
        if (s_zygotes[i].sock < 0) {
            z = &s_zygotes[i];
            break;
        }
    if (!z) { /* all in use: replace the least recently used */
        z = &s_zygotes[0];
        for (int i = 1; i < ZYGOTES_MAX; i++)
            if (s_zygotes[i].used < z->used)
                z = &s_zygotes[i];
        s_close(z);
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        return NULL;
    char **env = node_spawn_env(node, 0, NULL, "DMP_ZYGOTE=3");
    /* Confined like any job (its children inherit it): 0 and 1 /dev/null,
     * 2 our stderr, 3 the socket. */
    char *argv[] = {(char *)exe, NULL};
    int fds[4] = {-1, -1, STDERR_FILENO, sv[1]};
    node_jail_spawn_t js = {.exe = exe, .argv = argv, .env = env,
                            .fds = fds, .n_fds = 4, .zygote = true};
    pid_t pid;
    int err = env ? node_jail_spawn(&js, &pid) : -ENOMEM;
    node_spawn_env_free(env);
    close(sv[1]);
    char ready[8];
    if (err || s_recv(sv[0], ready, sizeof ready) != 5 ||
        memcmp(ready, "ready", 5) != 0) {
        /* An old binary without zygote mode runs its main instead: it is
         * not ours to keep running. */
        if (!err) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        close(sv[0]);
        debug_f("no zygote for '%s'; children of it are exec'd", exe);
        return NULL;
    }
    dmp__strlcpy(z->key, key, sizeof z->key);
    z->pid = pid;
    z->sock = sv[0];
    z->used = dmp__now();
    debug_f("zygote for '%s' pid=%d", exe, (int)pid);
    return z;
}

int
node_zygote_spawn(node_t *node, const char *exe, const uint8_t *record,
                  size_t len, int out_fd, int err_fd, pid_t *pid_p)
{
    s_init();
    struct stat st;
    if (stat(exe, &st) != 0)
        return -errno;
    char key[96];
    snprintf(key, sizeof key, "%llx:%llx:%lld.%ld",
             (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
             (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    s_zygote_t *z = NULL;
    for (int i = 0; i < ZYGOTES_MAX && !z; i++)
        if (s_zygotes[i].sock >= 0 && strcmp(s_zygotes[i].key, key) == 0)
            z = &s_zygotes[i];
    if (!z && !(z = s_start(node, exe, key)))
        return -ENOEXEC;
    int fds[2] = {out_fd, err_fd};
    char control[CMSG_SPACE(sizeof fds)];
    memset(control, 0, sizeof control);
    struct iovec iov = {(void *)record, len};
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = control,
                        .msg_controllen = sizeof control};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(c), fds, sizeof fds);
    int32_t reply = 0;
    if (sendmsg(z->sock, &mh, MSG_NOSIGNAL) != (ssize_t)len ||
        s_recv(z->sock, &reply, sizeof reply) != sizeof reply || reply <= 0) {
        warn_f("zygote pid=%d failed (%d); closing it", (int)z->pid,
               (int)reply);
        s_close(z);
        return reply < 0 ? reply : -EIO;
    }
    z->used = dmp__now();
    *pid_p = (pid_t)reply;
    return 0;
}

void
node_zygote_tick(node_t *node)
{
    s_init();
    double now = dmp__now();
    for (int i = 0; i < ZYGOTES_MAX; i++)
        if (s_zygotes[i].sock >= 0 && now - s_zygotes[i].used > ZYGOTE_IDLE)
            s_close(&s_zygotes[i]);
    /* Orphans of our children are re-parented to us too: reap those we
     * do not track (a tracked one is reaped by its pidfd handler). */
    for (;;) {
        siginfo_t si = {0};
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) != 0 ||
            si.si_pid == 0)
            break;
        bool tracked = false;
        for (node_proc_t *p = node->procs; p && !tracked; p = p->next)
            tracked = p->pid == si.si_pid && p->pidfd >= 0;
        for (int i = 0; i < ZYGOTES_MAX && !tracked; i++)
            tracked = s_zygotes[i].sock >= 0 && s_zygotes[i].pid == si.si_pid;
        if (tracked)
            break;
        waitpid(si.si_pid, NULL, WNOHANG);
    }
}

void
node_zygote_close_all(node_t *node)
{
    (void)node;
    s_init();
    for (int i = 0; i < ZYGOTES_MAX; i++)
        s_close(&s_zygotes[i]);
}
