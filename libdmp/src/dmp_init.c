/*
 * dmp_init.c - the process-wide connection and the embedded agent.
 *
 * dmp_init connects the process to an agent: the one named by DMP_AGENT
 * (children started by an agent), the cluster node named by DMP_CLUSTER,
 * or, with neither, a private dmpd it starts itself (the embedded default).
 * The embedded agent is tied to us by a socketpair on its fd 3: it writes
 * "ready" once it serves, and it exits as soon as the pair reads EOF, that
 * is when this process exits for any reason, even SIGKILL. The agent is
 * spawned before any ZeroMQ context exists (contexts do not survive fork)
 * with posix_spawn, every other fd close-on-exec.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef DMP_DEFAULT_DMPD
#define DMP_DEFAULT_DMPD "/usr/local/bin/dmpd"
#endif

extern char **environ;

static struct {
    pthread_mutex_t lock;
    bool finished;          /* dmp_fini ran since the last dmp_init */
    dmp_client_t *client;   /* the process-wide connection */
    pid_t agent_pid;        /* embedded agent, 0 if none */
    int agent_fd;           /* our end of its control socketpair */
    char rundir[PATH_MAX];  /* embedded agent's runtime directory */
} s_lib = {PTHREAD_MUTEX_INITIALIZER, false, NULL, 0, -1, ""};

/* The dmpd to start: $DMP_DMPD, beside our executable, in ../bin or
 * ../../bin (build/examples, build/tests/X), or the installed default. */
static void
s_find_dmpd(char *out, size_t size)
{
    const char *env = getenv("DMP_DMPD");
    if (env && *env) {
        dmp__strlcpy(out, env, size);
        return;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        char *dir = dirname(self);
        snprintf(out, size, "%s/dmpd", dir);
        if (access(out, X_OK) == 0)
            return;
        snprintf(out, size, "%s/../bin/dmpd", dir);
        if (access(out, X_OK) == 0)
            return;
        snprintf(out, size, "%s/../../bin/dmpd", dir); /* build/tests/X */
        if (access(out, X_OK) == 0)
            return;
    }
    dmp__strlcpy(out, DMP_DEFAULT_DMPD, size);
}

/* This host's name made into a valid node name. */
static void
s_host_node_name(char *out, size_t size)
{
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    size_t j = 0;
    for (size_t i = 0; host[i] && j + 1 < size && j < DMP__NAME_MAX - 1; i++) {
        char c = host[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || c == '_' || c == '-' ||
                  (c == '.' && j > 0);
        out[j++] = ok ? c : '-';
    }
    out[j] = '\0';
    if (j == 0)
        dmp__strlcpy(out, "local", size);
}

static void
s_wait_agent(pid_t pid, double timeout)
{
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd >= 0) {
        struct pollfd p = {pidfd, POLLIN, 0};
        if (poll(&p, 1, (int)dmp__timeout_ms(timeout)) == 0)
            syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
        close(pidfd);
    }
    waitpid(pid, NULL, 0);
}

/* Removes what the embedded agent may have left in its directory (its
 * socket, lock, binary cache). The directory is ours: mkdtemp made it. */
static void
s_remove_rundir(const char *dir)
{
    dmp__rmtree(dir);
}

static int
s_start_embedded(char *endpoint, size_t size)
{
    char dmpd[PATH_MAX], name[DMP__NAME_MAX];
    s_find_dmpd(dmpd, sizeof dmpd);
    s_host_node_name(name, sizeof name);
    const char *tmp = getenv("TMPDIR");
    snprintf(s_lib.rundir, sizeof s_lib.rundir, "%s/dmp-embedded-XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(s_lib.rundir)) /* mkdtemp makes it 0700 */
        return DMP_ENOAGENT;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        rmdir(s_lib.rundir);
        return -errno;
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    /* dup2 onto 3 clears close-on-exec for that one descriptor. */
    posix_spawn_file_actions_adddup2(&fa, sv[1], 3);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGHUP);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    /* Own process group: a ^C meant for the program reaches the agent only
     * through the control socket, after the program has cleaned up. */
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSIGDEF |
                                        POSIX_SPAWN_SETPGROUP);
    char *argv[] = {dmpd,          "--embedded",   "--name",
                    name,          "--runtime-dir", s_lib.rundir,
                    "--control-fd", "3",           NULL};
    pid_t pid;
    int err = posix_spawn(&pid, dmpd, &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(sv[1]);
    if (err) {
        dmp__log(DMP_LOG_ERROR, "cannot start agent '%s': %s", dmpd,
                 strerror(err));
        close(sv[0]);
        rmdir(s_lib.rundir);
        return DMP_ENOAGENT;
    }
    s_lib.agent_pid = pid;
    s_lib.agent_fd = sv[0];
    /* Wait for "ready\n"; EOF means it refused to start (it says why on
     * stderr). */
    char buf[16];
    size_t got = 0;
    double deadline = dmp__now() + 10.0;
    while (got < 6) {
        struct pollfd p = {sv[0], POLLIN, 0};
        double left = deadline - dmp__now();
        if (left <= 0 || poll(&p, 1, (int)dmp__timeout_ms(left)) <= 0)
            break;
        ssize_t n = read(sv[0], buf + got, sizeof buf - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got < 6 || memcmp(buf, "ready\n", 6) != 0) {
        dmp__log(DMP_LOG_ERROR, "local agent '%s' did not start", dmpd);
        close(sv[0]);
        s_lib.agent_fd = -1;
        s_wait_agent(pid, 2.0);
        s_lib.agent_pid = 0;
        s_remove_rundir(s_lib.rundir);
        return DMP_ENOAGENT;
    }
    snprintf(endpoint, size, "ipc://%s/dmpd.sock", s_lib.rundir);
    return 0;
}

static void
s_stop_embedded(void)
{
    if (s_lib.agent_fd >= 0) {
        close(s_lib.agent_fd); /* EOF: the agent stops */
        s_lib.agent_fd = -1;
    }
    if (s_lib.agent_pid > 0) {
        s_wait_agent(s_lib.agent_pid, 5.0);
        s_lib.agent_pid = 0;
        s_remove_rundir(s_lib.rundir);
    }
}

int
dmp__init_connect(const dmp_client_opts_t *given, char *errbuf,
                  size_t errlen)
{
    char scratch[DMP__TEXT_MAX];
    if (!errbuf) {
        errbuf = scratch;
        errlen = sizeof scratch;
    }
    errbuf[0] = '\0';
    pthread_mutex_lock(&s_lib.lock);
    int rc = 0;
    if (s_lib.client)
        goto out;
    if (sodium_init() < 0) {
        rc = -ENOMEM;
        goto out;
    }
    dmp_client_opts_t opts = {0};
    char endpoint[DMP__ADDR_MAX];
    const char *agent = getenv("DMP_AGENT");
    const char *cluster = getenv("DMP_CLUSTER");
    if (given) {
        opts = *given;
    } else if (agent && *agent) {
        opts.address = agent;
    } else if (cluster && *cluster) {
        opts.address = cluster;
        opts.key_file = getenv("DMP_KEY");
        opts.server_key = getenv("DMP_SERVER_KEY");
    } else {
        rc = s_start_embedded(endpoint, sizeof endpoint);
        if (rc) {
            snprintf(errbuf, errlen, "cannot start a local agent: %s",
                     dmp_strerror(rc));
            goto out;
        }
        opts.address = endpoint;
    }
    rc = dmp_client_connect(&opts, &s_lib.client, errbuf, errlen);
    if (rc) {
        dmp__log(DMP_LOG_ERROR, "dmp_init: %s", errbuf);
        s_stop_embedded();
    }
out:
    pthread_mutex_unlock(&s_lib.lock);
    return rc;
}

int
dmp_init_opts(const dmp_client_opts_t *opts, char *errbuf, size_t errlen)
{
    const char *zygote = getenv("DMP_ZYGOTE");
    if (zygote && *zygote)
        dmp__zygote_main(zygote); /* never returns */
    const char *child = getenv("DMP_CHILD");
    if (child && *child)
        dmp__child_main(child); /* never returns */
    pthread_mutex_lock(&s_lib.lock);
    s_lib.finished = false;
    pthread_mutex_unlock(&s_lib.lock);
    return dmp__init_connect(opts, errbuf, errlen);
}

int
dmp_init(void)
{
    return dmp_init_opts(NULL, NULL, 0);
}

int
dmp__init_lazy(void)
{
    pthread_mutex_lock(&s_lib.lock);
    bool finished = s_lib.finished;
    pthread_mutex_unlock(&s_lib.lock);
    return finished ? -EBADF : dmp__init_connect(NULL, NULL, 0);
}

void
dmp_fini(void)
{
    dmp__manager_atexit(); /* servers stop, leases end */
    dmp__pool_atexit(); /* its workers and queues go first */
    dmp__process_atexit();
    dmp__queue_atexit();
    dmp__pipe_atexit();
    dmp__shared_atexit();
    dmp__direct_fini(); /* after everything that may still use a link */
    dmp__target_forget_node();
    pthread_mutex_lock(&s_lib.lock);
    s_lib.finished = true;
    dmp_client_destroy(&s_lib.client);
    s_stop_embedded();
    pthread_mutex_unlock(&s_lib.lock);
}

dmp_client_t *
dmp_default_client(void)
{
    pthread_mutex_lock(&s_lib.lock);
    dmp_client_t *c = s_lib.client;
    pthread_mutex_unlock(&s_lib.lock);
    return c;
}

int
dmp_nodes(dmp_node_info_t **nodes_p, size_t *count_p)
{
    int rc = dmp__init_lazy();
    if (rc)
        return rc;
    return dmp_client_nodes(dmp_default_client(), nodes_p, count_p);
}
