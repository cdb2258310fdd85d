/*
 * dmp_test.c - throwaway agents, sandboxes and waits for the integration
 * tests (see dmp_test.h for the contract).
 *
 * Agents are spawned with posix_spawn, every descriptor of ours is
 * close-on-exec, and each agent is signalled and waited for through a
 * pidfd, never a cached pid. Every pid this binary starts is remembered,
 * so a test can check at the end that no agent outlived it.
 */
#define _GNU_SOURCE
#include "dmp_test.h"
#include "dmp_impl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ---- small things -------------------------------------------------------- */

double
dmp_test_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
s_nap(double seconds)
{
    struct timespec ts = {(time_t)seconds,
                          (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

bool
dmp_test_wait_until(bool (*cond)(void *arg), void *arg, double timeout)
{
    double deadline = dmp_test_now() + timeout;
    for (;;) {
        if (cond(arg))
            return true;
        if (dmp_test_now() >= deadline)
            return cond(arg);
        /* A condition poll, not a synchronisation sleep: the deadline
         * bounds the wait, the short interval bounds the latency. */
        s_nap(0.01);
    }
}

static int
s_pidfd_open(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

static int
s_pidfd_signal(int pidfd, int sig)
{
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

/* ---- the registry of agents this binary started -------------------------- */

#define REGISTRY_MAX 1024
static pid_t s_started[REGISTRY_MAX];
static size_t s_n_started;

/* True when /proc/PID/exe names a dmpd (so a recycled pid is not ours). */
static bool
s_is_dmpd(pid_t pid)
{
    char path[64], exe[PATH_MAX];
    snprintf(path, sizeof path, "/proc/%d/exe", (int)pid);
    ssize_t n = readlink(path, exe, sizeof exe - 1);
    if (n <= 0)
        return false;
    exe[n] = '\0';
    const char *base = strrchr(exe, '/');
    base = base ? base + 1 : exe;
    return strncmp(base, "dmpd", 4) == 0;
}

int
dmp_test_agents_running(void)
{
    int n = 0;
    for (size_t i = 0; i < s_n_started; i++)
        if (dmp_test_pid_alive(s_started[i]) && s_is_dmpd(s_started[i])) {
            print_message("# agent pid %d is still running\n",
                          (int)s_started[i]);
            n++;
        }
    return n;
}

/* Last resort when a test binary exits early: nothing of ours survives. */
static void
s_atexit(void)
{
    for (size_t i = 0; i < s_n_started; i++) {
        if (!dmp_test_pid_alive(s_started[i]) || !s_is_dmpd(s_started[i]))
            continue;
        int fd = s_pidfd_open(s_started[i]);
        if (fd >= 0) {
            s_pidfd_signal(fd, SIGKILL);
            close(fd);
        }
    }
}

void
dmp_test_init(unsigned timeout)
{
    signal(SIGPIPE, SIG_IGN);
    /* Orphans (the embedded agent of a killed child program) become our
     * children, so they can be waited for and reaped here. */
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    atexit(s_atexit);
    if (timeout)
        alarm(timeout);
}

/* ---- files ------------------------------------------------------------- */

const char *
dmp_test_bin(const char *name)
{
    static struct {
        char name[32];
        char path[PATH_MAX];
    } cache[8];
    for (size_t i = 0; i < 8; i++) {
        if (cache[i].name[0] && strcmp(cache[i].name, name) == 0)
            return cache[i].path;
        if (cache[i].name[0])
            continue;
        char dir[PATH_MAX];
        const char *env = getenv("DMP_BUILD");
        if (env && *env) {
            if (!realpath(env, dir))
                snprintf(dir, sizeof dir, "%s", env);
        } else {
            char self[PATH_MAX];
            ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
            self[n > 0 ? n : 0] = '\0';
            /* $(B)/tests/integration/test_x: strip three components */
            for (int k = 0; k < 3; k++) {
                char *slash = strrchr(self, '/');
                if (slash)
                    *slash = '\0';
            }
            snprintf(dir, sizeof dir, "%s", self[0] ? self : ".");
        }
        snprintf(cache[i].name, sizeof cache[i].name, "%s", name);
        snprintf(cache[i].path, sizeof cache[i].path, "%s/bin/%s", dir,
                 name);
        return cache[i].path;
    }
    return name; /* more names than slots: let PATH decide */
}

int
dmp_test_mkdtemp(const char *prefix, char *out, size_t size)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(out, size, "%s/%s-XXXXXX", tmp && *tmp ? tmp : "/tmp",
             prefix);
    return mkdtemp(out) ? 0 : -errno;
}

static int
s_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

int
dmp_test_rmtree(const char *path)
{
    if (!path || !path[0] || strcmp(path, "/") == 0)
        return -EINVAL;
    if (access(path, F_OK) != 0)
        return 0;
    chmod(path, 0700); /* tests make directories unreadable on purpose */
    nftw(path, s_rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return access(path, F_OK) == 0 ? -ENOTEMPTY : 0;
}

int
dmp_test_write_file(const char *path, int mode, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    size_t len = strlen(text);
    int rc = write(fd, text, len) == (ssize_t)len ? 0 : -EIO;
    if (fchmod(fd, (mode_t)mode) != 0 && rc == 0)
        rc = -errno;
    close(fd);
    return rc;
}

char *
dmp_test_read_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf)
            break;
        if (len + 1 >= cap) {
            char *grown = realloc(buf, cap * 2);
            if (!grown) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (buf)
        buf[len] = '\0';
    return buf;
}

int
dmp_test_copy_file(const char *from, const char *to, int mode)
{
    char *text = dmp_test_read_file(from);
    if (!text)
        return -errno ? -errno : -EIO;
    int rc = dmp_test_write_file(to, mode, text);
    free(text);
    return rc;
}

int
dmp_test_read_key(const char *path, char out[41])
{
    char *text = dmp_test_read_file(path);
    if (!text)
        return -EINVAL;
    int found = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        line[strcspn(line, "\r")] = '\0';
        if (line[0] == '#' || line[0] == '\0')
            continue;
        if (found++ || strlen(line) != 40)
            found = 2;
        else
            memcpy(out, line, 41);
    }
    free(text);
    return found == 1 ? 0 : -EINVAL;
}

/* ---- processes --------------------------------------------------------- */

int
dmp_test_count_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *dir = opendir(path);
    if (!dir)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL)
        if (de->d_name[0] != '.')
            n++;
    closedir(dir);
    return n;
}

long
dmp_test_rss_kib(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    char *text = dmp_test_read_file(path);
    if (!text)
        return -1;
    const char *p = strstr(text, "VmRSS:");
    long kib = p ? strtol(p + 6, NULL, 10) : -1;
    free(text);
    return kib;
}

bool
dmp_test_pid_alive(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ')
        return false;
    return p[2] != 'Z' && p[2] != 'X';
}

bool
dmp_test_wait_pid_gone(pid_t pid, double timeout)
{
    int fd = s_pidfd_open(pid);
    if (fd < 0)
        return true; /* no such process */
    /* A pidfd polls readable once the process has exited, whoever its
     * parent is. */
    struct pollfd p = {fd, POLLIN, 0};
    int ready;
    do
        ready = poll(&p, 1, (int)(timeout * 1000));
    while (ready < 0 && errno == EINTR);
    close(fd);
    if (ready > 0)
        waitpid(pid, NULL, WNOHANG); /* ours (or an orphan we adopted) */
    return ready > 0 || !dmp_test_pid_alive(pid);
}

/* ---- sandbox ----------------------------------------------------------- */

/* A keypair in the secret dir, its .pub published in `pub_dir` if set. */
static int
s_sandbox_key(dmp_test_sandbox_t *sb, const char *name, const char *pub_dir,
              char *secret_path)
{
    int rc = dmp_keygen(sb->secret_dir, name);
    if (rc)
        return rc;
    if (secret_path)
        snprintf(secret_path, PATH_MAX, "%s/%s.key", sb->secret_dir, name);
    if (pub_dir) {
        char from[PATH_MAX], to[PATH_MAX];
        snprintf(from, sizeof from, "%s/%s.pub", sb->secret_dir, name);
        snprintf(to, sizeof to, "%s/%s.pub", pub_dir, name);
        rc = dmp_test_copy_file(from, to, 0644);
    }
    return rc;
}

int
dmp_test_sandbox_key(dmp_test_sandbox_t *sb, const char *name, bool publish,
                     char *secret_path)
{
    return s_sandbox_key(sb, name, publish ? sb->keys_dir : NULL,
                         secret_path);
}

int
dmp_test_sandbox_new(dmp_test_sandbox_t **sb_p)
{
    dmp_test_sandbox_t *sb = calloc(1, sizeof *sb);
    if (!sb)
        return -ENOMEM;
    int rc = dmp_test_mkdtemp("dmp-test", sb->dir, sizeof sb->dir);
    if (rc) {
        free(sb);
        return rc;
    }
    char run[PATH_MAX];
    snprintf(sb->keys_dir, sizeof sb->keys_dir, "%s/keys", sb->dir);
    snprintf(sb->secret_dir, sizeof sb->secret_dir, "%s/secret", sb->dir);
    snprintf(run, sizeof run, "%s/run", sb->dir);
    snprintf(sb->client_pub, sizeof sb->client_pub, "%s/client.pub",
             sb->keys_dir);
    snprintf(sb->nodes_dir, sizeof sb->nodes_dir, "%s/nodes", sb->keys_dir);
    if (mkdir(sb->keys_dir, 0755) != 0 || mkdir(sb->nodes_dir, 0755) != 0 ||
        mkdir(sb->secret_dir, 0700) != 0 || mkdir(run, 0700) != 0)
        rc = -errno;
    if (rc == 0)
        rc = dmp_test_sandbox_key(sb, "client", true, sb->client_key);
    if (rc) {
        dmp_test_rmtree(sb->dir);
        free(sb);
        return rc;
    }
    *sb_p = sb;
    return 0;
}

static void s_agent_free(dmp_test_agent_t *a);

void
dmp_test_sandbox_destroy(dmp_test_sandbox_t **sb_p)
{
    if (!sb_p || !*sb_p)
        return;
    dmp_test_sandbox_t *sb = *sb_p;
    for (size_t i = 0; i < sb->n_agents; i++) {
        dmp_test_agent_kill(sb->agents[i]);
        s_agent_free(sb->agents[i]);
    }
    const char *keep = getenv("DMP_TEST_KEEP");
    if (keep && *keep)
        print_message("# kept %s\n", sb->dir);
    else
        dmp_test_rmtree(sb->dir);
    free(sb);
    *sb_p = NULL;
}

/* ---- agents ------------------------------------------------------------ */

static void
s_agent_free(dmp_test_agent_t *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->n_peers; i++)
        free(a->peers[i]);
    for (size_t i = 0; i < a->n_extra; i++)
        free(a->extra[i]);
    if (a->pidfd >= 0)
        close(a->pidfd);
    if (a->control_fd >= 0)
        close(a->control_fd);
    free(a);
}

int
dmp_test_agent_new(dmp_test_sandbox_t *sb, const char *name,
                   dmp_test_agent_t **agent_p)
{
    if (sb->n_agents == DMP_TEST_AGENTS_MAX)
        return -ENOSPC;
    dmp_test_agent_t *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    a->sb = sb;
    a->pidfd = a->control_fd = -1;
    a->tied = true;
    snprintf(a->name, sizeof a->name, "%s", name);
    int rc = s_sandbox_key(sb, name, sb->nodes_dir, a->key_file);
    a->port = rc == 0 ? dmp__free_loopback_port() : rc;
    if (a->port < 0) {
        rc = a->port;
        free(a);
        return rc;
    }
    snprintf(a->address, sizeof a->address, "tcp://127.0.0.1:%d", a->port);
    snprintf(a->pub_file, sizeof a->pub_file, "%s/%s.pub", sb->nodes_dir,
             name);
    snprintf(a->keys_dir, sizeof a->keys_dir, "%s", sb->keys_dir);
    snprintf(a->runtime_dir, sizeof a->runtime_dir, "%s/run/%s", sb->dir,
             name);
    snprintf(a->ipc_address, sizeof a->ipc_address, "ipc://%s/dmpd.sock",
             a->runtime_dir);
    snprintf(a->log_path, sizeof a->log_path, "%s/%s.log", sb->dir, name);
    sb->agents[sb->n_agents++] = a;
    *agent_p = a;
    return 0;
}

void
dmp_test_agent_add_peer(dmp_test_agent_t *a, const dmp_test_agent_t *peer)
{
    char spec[256];
    snprintf(spec, sizeof spec, "%s@%s", peer->name, peer->address);
    if (a->n_peers < DMP_TEST_AGENTS_MAX)
        a->peers[a->n_peers++] = strdup(spec);
}

void
dmp_test_agent_add_arg(dmp_test_agent_t *a, const char *arg)
{
    if (a->n_extra < sizeof a->extra / sizeof a->extra[0])
        a->extra[a->n_extra++] = strdup(arg);
}

int
dmp_test_agent_spawn(dmp_test_agent_t *a)
{
    if (a->pid > 0)
        return -EBUSY;
    char *argv[64];
    size_t n = 0;
    char hb[32], lv[32];
    const char *dmpd = dmp_test_bin("dmpd");
    argv[n++] = (char *)dmpd;
    argv[n++] = "--name";
    argv[n++] = a->name;
    if (a->port > 0) {
        argv[n++] = "--listen";
        argv[n++] = a->address;
        argv[n++] = "--key";
        argv[n++] = a->key_file;
        argv[n++] = "--keys-dir";
        argv[n++] = a->keys_dir;
    }
    argv[n++] = "--runtime-dir";
    argv[n++] = a->runtime_dir;
    if (a->heartbeat > 0) {
        snprintf(hb, sizeof hb, "%g", a->heartbeat);
        argv[n++] = "--heartbeat";
        argv[n++] = hb;
    }
    if (a->liveness > 0) {
        snprintf(lv, sizeof lv, "%u", a->liveness);
        argv[n++] = "--liveness";
        argv[n++] = lv;
    }
    for (size_t i = 0; i < a->n_peers; i++) {
        argv[n++] = "--peer";
        argv[n++] = a->peers[i];
    }
    int sv[2] = {-1, -1};
    if (a->tied) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
            return -errno;
        if (sv[1] == 3) { /* dup2(3, 3) would keep it close-on-exec */
            int moved = fcntl(sv[1], F_DUPFD_CLOEXEC, 10);
            close(sv[1]);
            sv[1] = moved;
        }
        argv[n++] = "--control-fd";
        argv[n++] = "3";
    }
    for (size_t i = 0; i < a->n_extra; i++)
        argv[n++] = a->extra[i];
    argv[n] = NULL;

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, a->log_path,
                                     O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    if (a->tied)
        posix_spawn_file_actions_adddup2(&fa, sv[1], 3);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGINT);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSIGDEF);
    pid_t pid;
    int err = posix_spawn(&pid, dmpd, &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (sv[1] >= 0)
        close(sv[1]);
    if (err) {
        if (sv[0] >= 0)
            close(sv[0]);
        print_error("cannot start '%s': %s\n", dmpd, strerror(err));
        return -err;
    }
    a->pid = pid;
    a->pidfd = s_pidfd_open(pid);
    a->control_fd = sv[0];
    a->status = 0;
    if (s_n_started < REGISTRY_MAX)
        s_started[s_n_started++] = pid;
    return 0;
}

bool
dmp_test_agent_is_running(dmp_test_agent_t *a)
{
    if (a->pid <= 0)
        return false;
    struct pollfd p = {a->pidfd, POLLIN, 0};
    return a->pidfd >= 0 ? poll(&p, 1, 0) == 0 : dmp_test_pid_alive(a->pid);
}

/* Reaps an exited agent and releases its descriptors. */
static int
s_reap(dmp_test_agent_t *a)
{
    int status = 0;
    while (waitpid(a->pid, &status, 0) < 0 && errno == EINTR)
        ;
    a->status = status;
    a->pid = 0;
    if (a->pidfd >= 0)
        close(a->pidfd);
    if (a->control_fd >= 0)
        close(a->control_fd);
    a->pidfd = a->control_fd = -1;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 255;
}

int
dmp_test_agent_wait_exit(dmp_test_agent_t *a, double timeout)
{
    if (a->pid <= 0)
        return -ECHILD;
    struct pollfd p = {a->pidfd, POLLIN, 0};
    double deadline = dmp_test_now() + timeout;
    for (;;) {
        double left = deadline - dmp_test_now();
        int ready = poll(&p, 1, left > 0 ? (int)(left * 1000) + 1 : 0);
        if (ready > 0)
            return s_reap(a);
        if (ready == 0 || errno != EINTR)
            return -ETIMEDOUT;
    }
}

int
dmp_test_agent_stop(dmp_test_agent_t *a, double timeout)
{
    if (a->pid <= 0)
        return -ECHILD;
    s_pidfd_signal(a->pidfd, SIGTERM);
    int rc = dmp_test_agent_wait_exit(a, timeout);
    if (rc == -ETIMEDOUT) {
        dmp_test_agent_kill(a);
        return -ETIMEDOUT;
    }
    return rc;
}

void
dmp_test_agent_kill(dmp_test_agent_t *a)
{
    if (!a || a->pid <= 0)
        return;
    s_pidfd_signal(a->pidfd, SIGKILL);
    s_reap(a);
}

int
dmp_test_agent_connect(const dmp_test_agent_t *a, dmp_client_t **client_p,
                       char *errbuf, size_t errlen)
{
    dmp_client_opts_t opts = {.address = a->address,
                              .key_file = a->sb->client_key,
                              .server_key = a->pub_file,
                              .connect_timeout = 3.0,
                              .request_timeout = 3.0};
    return dmp_client_connect(&opts, client_p, errbuf, errlen);
}

int
dmp_test_agent_connect_ipc(const dmp_test_agent_t *a,
                           dmp_client_t **client_p)
{
    dmp_client_opts_t opts = {.address = a->ipc_address,
                              .connect_timeout = 3.0,
                              .request_timeout = 3.0};
    return dmp_client_connect(&opts, client_p, NULL, 0);
}

int
dmp_test_agent_ping(const dmp_test_agent_t *a)
{
    dmp_client_t *c = NULL;
    char err[512] = "";
    int rc = dmp_test_agent_connect(a, &c, err, sizeof err);
    if (rc)
        print_error("# a fresh client cannot connect to '%s': %s\n",
                    a->name, err);
    else if ((rc = dmp_client_ping(c)) != 0)
        print_error("# ping of '%s' failed: %s\n", a->name,
                    dmp_strerror(rc));
    dmp_client_destroy(&c);
    return rc;
}

int
dmp_test_agent_wait_ready(dmp_test_agent_t *a, double timeout)
{
    double deadline = dmp_test_now() + timeout;
    int rc = -ETIMEDOUT;
    while (dmp_test_now() < deadline) {
        if (!dmp_test_agent_is_running(a)) {
            int code = a->pid > 0 ? s_reap(a) : -1;
            print_error("agent '%s' exited during start-up (status %d); "
                        "its log:\n", a->name, code);
            dmp_test_agent_dump_log(a);
            return -ECHILD;
        }
        dmp_client_opts_t opts = {.address = a->address,
                                  .key_file = a->sb->client_key,
                                  .server_key = a->pub_file,
                                  .connect_timeout = 0.5,
                                  .request_timeout = 1.0};
        if (a->port <= 0) {
            opts.address = a->ipc_address;
            opts.key_file = opts.server_key = NULL;
        }
        dmp_client_t *c = NULL;
        rc = dmp_client_connect(&opts, &c, NULL, 0);
        if (rc == 0) {
            rc = dmp_client_ping(c);
            dmp_client_destroy(&c);
            if (rc == 0)
                return 0;
        }
        s_nap(0.02);
    }
    return rc;
}

int
dmp_test_agent_start(dmp_test_agent_t *a)
{
    int rc = dmp_test_agent_spawn(a);
    if (rc == 0)
        rc = dmp_test_agent_wait_ready(a, 10.0);
    return rc;
}

/* ---- membership -------------------------------------------------------- */

int
dmp_test_count_nodes(dmp_client_t *client, dmp_node_state_t state)
{
    dmp_node_info_t *nodes;
    size_t n;
    int rc = dmp_client_nodes(client, &nodes, &n);
    if (rc)
        return rc;
    int count = 0;
    for (size_t i = 0; i < n; i++)
        count += nodes[i].state == state;
    dmp_nodes_free(&nodes);
    return count;
}

int
dmp_test_node_state(dmp_client_t *client, const char *name)
{
    dmp_node_info_t *nodes;
    size_t n;
    int rc = dmp_client_nodes(client, &nodes, &n);
    if (rc)
        return rc;
    int state = -ENOENT;
    for (size_t i = 0; i < n; i++)
        if (strcmp(nodes[i].name, name) == 0)
            state = (int)nodes[i].state;
    dmp_nodes_free(&nodes);
    return state;
}

int
dmp_test_wait_alive(dmp_client_t *client, int want, double timeout)
{
    double deadline = dmp_test_now() + timeout;
    for (;;) {
        if (dmp_test_count_nodes(client, DMP_NODE_ALIVE) == want)
            return 0;
        if (dmp_test_now() >= deadline)
            return -ETIMEDOUT;
        s_nap(0.02);
    }
}

void
dmp_test_agents_mesh(dmp_test_agent_t **agents, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            if (i != j)
                dmp_test_agent_add_peer(agents[i], agents[j]);
}

int
dmp_test_agents_wait_alive(dmp_test_agent_t **agents, size_t n,
                           double timeout)
{
    for (size_t i = 0; i < n; i++) {
        dmp_client_t *c = NULL;
        int rc = dmp_test_agent_connect(agents[i], &c, NULL, 0);
        if (rc == 0)
            rc = dmp_test_wait_alive(c, (int)n, timeout);
        dmp_client_destroy(&c);
        if (rc)
            return rc;
    }
    return 0;
}

int
dmp_test_agents_start(dmp_test_agent_t **agents, size_t n)
{
    /* All spawned first: they start side by side. */
    for (size_t i = 0; i < n; i++) {
        int rc = dmp_test_agent_spawn(agents[i]);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < n; i++) {
        int rc = dmp_test_agent_wait_ready(agents[i], 10.0);
        if (rc)
            return rc;
    }
    return dmp_test_agents_wait_alive(agents, n, 5.0);
}

int
dmp_test_init_ipc(const dmp_test_agent_t *a)
{
    dmp_client_opts_t opts = {.address = a->ipc_address};
    char err[512] = "";
    int rc = dmp_init_opts(&opts, err, sizeof err);
    if (rc)
        fprintf(stderr, "dmp_init_opts(%s): %s\n", a->ipc_address, err);
    return rc;
}

int
dmp_test_wait_node_state(dmp_client_t *client, const char *name,
                         dmp_node_state_t state, double timeout)
{
    double deadline = dmp_test_now() + timeout;
    for (;;) {
        if (dmp_test_node_state(client, name) == (int)state)
            return 0;
        if (dmp_test_now() >= deadline)
            return -ETIMEDOUT;
        s_nap(0.02);
    }
}

/* ---- logs -------------------------------------------------------------- */

bool
dmp_test_file_has_line(const char *path, const char *const *needles)
{
    char *text = dmp_test_read_file(path);
    if (!text)
        return false;
    bool found = false;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line && !found;
         line = strtok_r(NULL, "\n", &save)) {
        found = true;
        for (size_t i = 0; needles[i] && found; i++)
            found = strstr(line, needles[i]) != NULL;
    }
    free(text);
    return found;
}

#define NEEDLES_MAX 8

static void
s_collect(va_list ap, const char **needles)
{
    size_t n = 0;
    const char *s;
    while (n < NEEDLES_MAX && (s = va_arg(ap, const char *)) != NULL)
        needles[n++] = s;
    needles[n] = NULL;
}

bool
dmp_test_log_has(const dmp_test_agent_t *a, ...)
{
    const char *needles[NEEDLES_MAX + 1];
    va_list ap;
    va_start(ap, a);
    s_collect(ap, needles);
    va_end(ap);
    return dmp_test_file_has_line(a->log_path, needles);
}

typedef struct {
    const char *path;
    const char *const *needles;
} s_log_wait_t;

static bool
s_log_cond(void *arg)
{
    s_log_wait_t *w = arg;
    return dmp_test_file_has_line(w->path, w->needles);
}

bool
dmp_test_log_wait(const dmp_test_agent_t *a, double timeout, ...)
{
    const char *needles[NEEDLES_MAX + 1];
    va_list ap;
    va_start(ap, timeout);
    s_collect(ap, needles);
    va_end(ap);
    s_log_wait_t w = {a->log_path, needles};
    return dmp_test_wait_until(s_log_cond, &w, timeout);
}

void
dmp_test_agent_dump_log(const dmp_test_agent_t *a)
{
    char *text = dmp_test_read_file(a->log_path);
    print_message("--- %s ---\n%s--- end ---\n", a->log_path,
                  text ? text : "(no log)\n");
    free(text);
}
