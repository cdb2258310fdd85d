/*
 * cli_cluster.c - `dmp cluster up|down|start|stop`: a throwaway cluster of
 * agents on loopback, for trying dmp on one machine, for tests and demos.
 *
 * Layout of DIR (everything a later `down` or `start` needs is on disk):
 *   keys/NAME.pub       the allow-list every node reads: the client here,
 *   keys/nodes/NAME.pub the nodes there
 *   secret/NAME.key     secret keys, 0600, in a 0700 directory
 *   NODE.conf           each agent's config (dmpd -c DIR/NODE.conf)
 *   NODE.log            each agent's stderr
 *   NODE.pid            "PID STARTTIME": the start time guards against
 *                       signalling a recycled pid
 *   run/NODE/           each agent's runtime directory
 *   env                 `. DIR/env` exports DMP_CLUSTER, DMP_KEY,
 *                       DMP_SERVER_KEY for node1
 */
#define _GNU_SOURCE
#include "cli.h"

#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_NODES 64

extern char **environ;

static const char s_usage[] =
    "usage: dmp cluster up -n N --dir DIR [options]\n"
    "       dmp cluster down --dir DIR\n"
    "       dmp cluster start --dir DIR NODE\n"
    "       dmp cluster stop --dir DIR [--kill] NODE\n"
    "\n"
    "up     starts N agents (node1..nodeN) on 127.0.0.1 with fresh keys,\n"
    "       waits until every node sees every other, and writes DIR/env:\n"
    "       '. DIR/env' points dmp and libdmp programs at the cluster.\n"
    "down   stops every agent of DIR; keys, configs and logs stay.\n"
    "start  starts one stopped (or killed) node again.\n"
    "stop   stops one node (SIGTERM; --kill sends SIGKILL).\n"
    "\n"
    "  -n, --nodes N        how many agents (up; default 3)\n"
    "  -d, --dir DIR        the cluster's directory (required)\n"
    "  -p, --base-port P    first tcp port (default: free ports)\n"
    "      --heartbeat SEC  heartbeat interval (default 0.5)\n"
    "      --liveness N     missed heartbeats before dead (default 3)\n"
    "  -T, --timeout SEC    how long up waits for the cluster (default 20)\n"
    "      --kill           stop with SIGKILL\n";

typedef struct {
    const char *dir;
    unsigned long n;
    unsigned long base_port;
    double heartbeat;
    unsigned long liveness;
    double timeout;
    bool kill;
} s_opts_t;

/* ---- files ----------------------------------------------------------- */

static int
s_write_file(const char *path, mode_t mode, const char *text)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    size_t len = strlen(text);
    int rc = write(fd, text, len) == (ssize_t)len ? 0 : -EIO;
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc)
        unlink(tmp);
    return rc;
}

static int
s_copy_file(const char *from, const char *to)
{
    char buf[4096];
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return -errno;
    ssize_t n = read(in, buf, sizeof buf - 1);
    close(in);
    if (n < 0)
        return -errno;
    buf[n] = '\0';
    return s_write_file(to, 0644, buf);
}

static int
s_mkdir(const char *path, mode_t mode)
{
    if (mkdir(path, mode) != 0 && errno != EEXIST) {
        cli_error("cannot create '%s': %s", path, strerror(errno));
        return -errno;
    }
    chmod(path, mode);
    return 0;
}

/* Makes NAME's keypair under DIR/secret and publishes NAME.pub in
 * DIR/keys (clients) or DIR/keys/nodes (nodes); keeps an existing pair, so
 * `up` after `down` reuses keys. */
static int
s_keys(const char *dir, const char *name, bool node)
{
    char secret_dir[PATH_MAX], pub[PATH_MAX], published[PATH_MAX];
    snprintf(secret_dir, sizeof secret_dir, "%s/secret", dir);
    snprintf(pub, sizeof pub, "%s/secret/%s.pub", dir, name);
    snprintf(published, sizeof published, "%s/keys/%s%s.pub", dir,
             node ? "nodes/" : "", name);
    int rc = dmp_keygen(secret_dir, name);
    if (rc && rc != -EEXIST) {
        cli_error("cannot make keys for '%s': %s", name, dmp_strerror(rc));
        return rc;
    }
    rc = s_copy_file(pub, published);
    if (rc)
        cli_error("cannot publish '%s': %s", published, dmp_strerror(rc));
    return rc;
}

/* ---- processes ------------------------------------------------------- */

/* Field 22 of /proc/PID/stat: when the process started, in ticks. */
static unsigned long long
s_starttime(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the name may contain spaces */
    if (!p)
        return 0;
    unsigned long long start = 0;
    /* after ')': state(3) ... starttime is the 20th field from here */
    p += 2;
    for (int field = 3; field < 22 && p; field++) {
        p = strchr(p, ' ');
        if (p)
            p++;
    }
    if (p)
        start = strtoull(p, NULL, 10);
    return start;
}

/* A pidfd for the node's recorded process, or -1 if it is not running. */
static int
s_node_pidfd(const char *dir, const char *name, pid_t *pid_out)
{
    char path[PATH_MAX], buf[64];
    snprintf(path, sizeof path, "%s/%s.pid", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    long pid = 0;
    unsigned long long start = 0;
    if (sscanf(buf, "%ld %llu", &pid, &start) != 2 || pid <= 1)
        return -1;
    int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
    if (pidfd < 0)
        return -1;
    /* Checked after opening the pidfd: if the start time matches now, the
     * pidfd refers to our agent, whatever happens to the pid later. */
    if (s_starttime((pid_t)pid) != start) {
        close(pidfd);
        return -1;
    }
    *pid_out = (pid_t)pid;
    return pidfd;
}

static pid_t
s_spawn_node(const char *dir, const char *name)
{
    char conf[PATH_MAX], log[PATH_MAX], dmpd[PATH_MAX];
    snprintf(conf, sizeof conf, "%s/%s.conf", dir, name);
    snprintf(log, sizeof log, "%s/%s.log", dir, name);
    const char *env = getenv("DMP_DMPD");
    if (env && *env) {
        dmp__strlcpy(dmpd, env, sizeof dmpd);
    } else {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        self[n > 0 ? n : 0] = '\0';
        char *slash = strrchr(self, '/');
        if (slash)
            *slash = '\0';
        snprintf(dmpd, sizeof dmpd, "%s/dmpd", self);
        if (access(dmpd, X_OK) != 0)
            dmp__strlcpy(dmpd, "dmpd", sizeof dmpd);
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log,
                                     O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    /* Its own session: a ^C in the terminal that ran `up` does not reach
     * the agents; `down` stops them. */
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID |
                                        POSIX_SPAWN_SETSIGMASK);
    char *argv[] = {dmpd, "-c", conf, NULL};
    pid_t pid;
    int err = posix_spawnp(&pid, dmpd, &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (err) {
        cli_error("cannot start '%s': %s", dmpd, strerror(err));
        return -1;
    }
    char pidfile[PATH_MAX], text[64];
    snprintf(pidfile, sizeof pidfile, "%s/%s.pid", dir, name);
    snprintf(text, sizeof text, "%d %llu\n", (int)pid, s_starttime(pid));
    s_write_file(pidfile, 0644, text);
    return pid;
}

/* SIGTERM (or SIGKILL), then wait up to 5 s, then SIGKILL. */
static int
s_stop_node(const char *dir, const char *name, bool kill_now)
{
    pid_t pid;
    int pidfd = s_node_pidfd(dir, name, &pid);
    if (pidfd < 0)
        return 0; /* not running */
    syscall(SYS_pidfd_send_signal, pidfd, kill_now ? SIGKILL : SIGTERM,
            NULL, 0);
    struct pollfd p = {pidfd, POLLIN, 0};
    if (poll(&p, 1, 5000) == 0) {
        syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
        poll(&p, 1, 5000);
    }
    close(pidfd);
    waitpid(pid, NULL, WNOHANG); /* ours only if this process started it */
    char pidfile[PATH_MAX];
    snprintf(pidfile, sizeof pidfile, "%s/%s.pid", dir, name);
    unlink(pidfile);
    return 1;
}

/* The last lines of a node's log, to explain why it did not start. */
static void
s_show_log(const char *dir, const char *name)
{
    char path[PATH_MAX], buf[2048];
    snprintf(path, sizeof path, "%s/%s.log", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > (off_t)sizeof buf - 1 ? size - (off_t)sizeof buf + 1
                                               : 0;
    ssize_t n = pread(fd, buf, sizeof buf - 1, from);
    close(fd);
    if (n > 0) {
        buf[n] = '\0';
        fprintf(stderr, "--- %s ---\n%s", path, buf);
    }
}

/* ---- subcommands ----------------------------------------------------- */

static int s_down(const s_opts_t *o);

/* Connects as the client to node `index` (1-based) of DIR. */
static int
s_connect_node(const char *dir, int port, const char *name,
               dmp_client_t **client_p)
{
    char address[64], key[PATH_MAX], server[PATH_MAX];
    snprintf(address, sizeof address, "tcp://127.0.0.1:%d", port);
    snprintf(key, sizeof key, "%s/secret/client.key", dir);
    snprintf(server, sizeof server, "%s/keys/nodes/%s.pub", dir, name);
    dmp_client_opts_t opts = {.address = address,
                              .key_file = key,
                              .server_key = server,
                              .connect_timeout = 2.0,
                              .request_timeout = 2.0};
    return dmp_client_connect(&opts, client_p, NULL, 0);
}

static int
s_up(const s_opts_t *o)
{
    char path[PATH_MAX];
    int ports[MAX_NODES];
    pid_t pids[MAX_NODES];
    char text[16384];
    if (s_mkdir(o->dir, 0700) != 0)
        return CLI_FAIL;
    for (unsigned long i = 1; i <= o->n; i++) {
        char name[16];
        snprintf(name, sizeof name, "node%lu", i);
        pid_t pid;
        int fd = s_node_pidfd(o->dir, name, &pid);
        if (fd >= 0) {
            close(fd);
            cli_error("node '%s' of '%s' is running (pid %d); run "
                      "'dmp cluster down --dir %s' first", name, o->dir,
                      (int)pid, o->dir);
            return CLI_FAIL;
        }
    }
    snprintf(path, sizeof path, "%s/keys", o->dir);
    if (s_mkdir(path, 0755) != 0)
        return CLI_FAIL;
    snprintf(path, sizeof path, "%s/secret", o->dir);
    if (s_mkdir(path, 0700) != 0)
        return CLI_FAIL;
    snprintf(path, sizeof path, "%s/run", o->dir);
    if (s_mkdir(path, 0700) != 0)
        return CLI_FAIL;
    snprintf(path, sizeof path, "%s/keys/nodes", o->dir);
    if (s_mkdir(path, 0755) != 0)
        return CLI_FAIL;
    if (s_keys(o->dir, "client", false) != 0)
        return CLI_FAIL;
    for (unsigned long i = 1; i <= o->n; i++) {
        char name[16];
        snprintf(name, sizeof name, "node%lu", i);
        if (s_keys(o->dir, name, true) != 0)
            return CLI_FAIL;
        int port = o->base_port ? (int)(o->base_port + i - 1) : dmp__free_loopback_port();
        if (port < 0) {
            cli_error("no free tcp port on 127.0.0.1");
            return CLI_FAIL;
        }
        ports[i - 1] = port;
    }
    for (unsigned long i = 1; i <= o->n; i++) {
        int len = snprintf(text, sizeof text,
                           "# node%lu of the local cluster in %s\n"
                           "name = node%lu\n"
                           "listen = tcp://127.0.0.1:%d\n"
                           "key = %s/secret/node%lu.key\n"
                           "keys_dir = %s/keys\n"
                           "runtime_dir = %s/run/node%lu\n"
                           "heartbeat = %g\n"
                           "liveness = %lu\n",
                           i, o->dir, i, ports[i - 1], o->dir, i, o->dir,
                           o->dir, i, o->heartbeat, o->liveness);
        for (unsigned long j = 1; j <= o->n; j++)
            if (j != i)
                len += snprintf(text + len, sizeof text - (size_t)len,
                                "peer = node%lu@tcp://127.0.0.1:%d\n", j,
                                ports[j - 1]);
        snprintf(path, sizeof path, "%s/node%lu.conf", o->dir, i);
        if (s_write_file(path, 0644, text) != 0) {
            cli_error("cannot write '%s': %s", path, strerror(errno));
            return CLI_FAIL;
        }
    }
    for (unsigned long i = 1; i <= o->n; i++) {
        char name[16];
        snprintf(name, sizeof name, "node%lu", i);
        pids[i - 1] = s_spawn_node(o->dir, name);
        if (pids[i - 1] < 0) {
            s_down(o);
            return CLI_FAIL;
        }
    }
    /* Wait until every node sees all N alive, watching for early exits. */
    double deadline = dmp__now() + o->timeout;
    for (unsigned long i = 1; i <= o->n; i++) {
        char name[16];
        snprintf(name, sizeof name, "node%lu", i);
        dmp_client_t *client = NULL;
        int rc = DMP_ENODE;
        while (dmp__now() < deadline) {
            int status;
            if (waitpid(pids[i - 1], &status, WNOHANG) == pids[i - 1]) {
                cli_error("node '%s' exited during start-up", name);
                s_show_log(o->dir, name);
                s_down(o);
                return CLI_FAIL;
            }
            if (!client)
                rc = s_connect_node(o->dir, ports[i - 1], name, &client);
            if (client) {
                rc = cli_wait_alive(client, o->n, 0.2);
                if (rc == 0)
                    break;
            }
        }
        dmp_client_destroy(&client);
        if (rc) {
            cli_error("cluster did not form within %.0f s: node '%s' "
                      "sees fewer than %lu nodes alive", o->timeout, name,
                      o->n);
            s_show_log(o->dir, name);
            s_down(o);
            return CLI_FAIL;
        }
    }
    snprintf(text, sizeof text,
             "# . this file to use the local cluster in %s\n"
             "export DMP_CLUSTER=tcp://127.0.0.1:%d\n"
             "export DMP_KEY=%s/secret/client.key\n"
             "export DMP_SERVER_KEY=%s/keys/nodes/node1.pub\n",
             o->dir, ports[0], o->dir, o->dir);
    snprintf(path, sizeof path, "%s/env", o->dir);
    if (s_write_file(path, 0644, text) != 0) {
        cli_error("cannot write '%s'", path);
        s_down(o);
        return CLI_FAIL;
    }
    printf("cluster of %lu nodes up in %s (node1 at tcp://127.0.0.1:%d)\n"
           "use it: . %s/env\n",
           o->n, o->dir, ports[0], o->dir);
    return CLI_OK;
}

static int
s_down(const s_opts_t *o)
{
    int stopped = 0;
    for (int i = 1; i <= MAX_NODES; i++) {
        char name[16], conf[PATH_MAX];
        snprintf(name, sizeof name, "node%d", i);
        snprintf(conf, sizeof conf, "%s/%s.conf", o->dir, name);
        if (access(conf, F_OK) != 0)
            continue;
        stopped += s_stop_node(o->dir, name, o->kill);
    }
    printf("stopped %d node%s in %s\n", stopped, stopped == 1 ? "" : "s",
           o->dir);
    return CLI_OK;
}

static int
s_start_one(const s_opts_t *o, const char *name)
{
    char conf[PATH_MAX];
    snprintf(conf, sizeof conf, "%s/%s.conf", o->dir, name);
    if (!dmp__name_valid(name) || access(conf, R_OK) != 0) {
        cli_error("no node '%s' in '%s'", name, o->dir);
        return CLI_FAIL;
    }
    pid_t pid;
    int fd = s_node_pidfd(o->dir, name, &pid);
    if (fd >= 0) {
        close(fd);
        cli_error("node '%s' is already running (pid %d)", name, (int)pid);
        return CLI_FAIL;
    }
    pid = s_spawn_node(o->dir, name);
    if (pid < 0)
        return CLI_FAIL;
    printf("started %s (pid %d)\n", name, (int)pid);
    return CLI_OK;
}

int
cli_cluster(int argc, char **argv)
{
    enum { OPT_HEARTBEAT = 256, OPT_LIVENESS, OPT_KILL };
    static const struct option longopts[] = {
        {"nodes", required_argument, 0, 'n'},
        {"dir", required_argument, 0, 'd'},
        {"base-port", required_argument, 0, 'p'},
        {"heartbeat", required_argument, 0, OPT_HEARTBEAT},
        {"liveness", required_argument, 0, OPT_LIVENESS},
        {"timeout", required_argument, 0, 'T'},
        {"kill", no_argument, 0, OPT_KILL},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    if (argc < 2 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "--help") == 0) {
        fputs(s_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_USAGE : CLI_OK;
    }
    const char *verb = argv[1];
    s_opts_t o = {.n = 3, .heartbeat = 0.5, .liveness = 3, .timeout = 20};
    bool bad = false;
    int opt;
    optind = 2;
    while ((opt = getopt_long(argc, argv, "n:d:p:T:h", longopts, NULL)) !=
           -1) {
        switch (opt) {
        case 'n':
            if (dmp__parse_uint(optarg, MAX_NODES, &o.n) || o.n < 1) {
                cli_error("invalid --nodes '%s': 1 to %d", optarg,
                          MAX_NODES);
                bad = true;
            }
            break;
        case 'd': o.dir = optarg; break;
        case 'p':
            if (dmp__parse_uint(optarg, 65535 - MAX_NODES, &o.base_port) ||
                o.base_port < 1024) {
                cli_error("invalid --base-port '%s'", optarg);
                bad = true;
            }
            break;
        case OPT_HEARTBEAT:
            if (dmp__parse_seconds(optarg, &o.heartbeat) ||
                o.heartbeat < 0.01) {
                cli_error("invalid --heartbeat '%s'", optarg);
                bad = true;
            }
            break;
        case OPT_LIVENESS:
            if (dmp__parse_uint(optarg, 1000, &o.liveness) ||
                o.liveness < 2) {
                cli_error("invalid --liveness '%s'", optarg);
                bad = true;
            }
            break;
        case 'T':
            if (dmp__parse_seconds(optarg, &o.timeout) || o.timeout <= 0) {
                cli_error("invalid --timeout '%s'", optarg);
                bad = true;
            }
            break;
        case OPT_KILL: o.kill = true; break;
        case 'h': fputs(s_usage, stdout); return CLI_OK;
        default: bad = true;
        }
    }
    if (!bad && !o.dir) {
        cli_error("--dir is required");
        bad = true;
    }
    bool one = strcmp(verb, "start") == 0 || strcmp(verb, "stop") == 0;
    if (bad || (one ? optind != argc - 1 : optind != argc)) {
        fputs(s_usage, stderr);
        return CLI_USAGE;
    }
    /* Absolute: the configs written here are read from other cwds. */
    char abs_dir[PATH_MAX];
    if (o.dir[0] != '/') {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof cwd)) {
            cli_error("cannot read the current directory");
            return CLI_FAIL;
        }
        snprintf(abs_dir, sizeof abs_dir, "%s/%s", cwd, o.dir);
        o.dir = abs_dir;
    }
    if (strcmp(verb, "up") == 0)
        return s_up(&o);
    if (strcmp(verb, "down") == 0)
        return s_down(&o);
    if (strcmp(verb, "start") == 0)
        return s_start_one(&o, argv[optind]);
    if (strcmp(verb, "stop") == 0) {
        if (!s_stop_node(o.dir, argv[optind], o.kill)) {
            cli_error("node '%s' is not running", argv[optind]);
            return CLI_FAIL;
        }
        printf("stopped %s\n", argv[optind]);
        return CLI_OK;
    }
    cli_error("unknown cluster command '%s'", verb);
    return CLI_USAGE;
}
