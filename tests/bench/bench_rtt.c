/*
 * bench_rtt.c - request round trips to an agent, `dmp nodes` latency and
 * idle agent memory, each beside the raw mechanism underneath it.
 *
 *   dmp_client_ping (one Hello) over ipc, to the embedded agent and to a
 *   cluster node, and over tcp+CURVE to the cluster in the environment;
 *   raw ZeroMQ DEALER/ROUTER echo over ipc and tcp+CURVE with the same
 *   frame sizes as a Hello and its reply; a socketpair echo (the floor).
 *   These six run interleaved (see s_interleave).
 *   connect + nodes + destroy (what `dmp nodes` does) against a raw CURVE
 *   connect + one round trip, and the CLI binary end to end; how long
 *   dmp_init and dmp_fini take with the embedded agent; VmRSS of the
 *   cluster's agents (idle, before this run touches them) and of the
 *   embedded agent.
 *
 * Prints `name value unit` lines (and `# note` lines) on stdout; never
 * judges the numbers. Exits 1 only when an operation failed.
 *
 * Environment (tests/bench/run.sh sets it): DMP_CLUSTER, DMP_KEY,
 * DMP_SERVER_KEY from the cluster's env file; DMP_BENCH_CLUSTER_DIR, the
 * cluster's directory (node ipc endpoint, pid files); DMP_BUILD, the build
 * directory (bin/dmpd, bin/dmp). Anything missing skips what needs it.
 *
 * Processes: the socketpair echo child is forked before any ZeroMQ context
 * or thread exists and only reads, writes and _exits. The raw echo server
 * is this binary re-executed with --echo-server (a fresh process, so the
 * ZeroMQ baseline crosses a process boundary exactly as dmp's requests
 * do); it exits when its stdin reads EOF.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <sodium.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

extern char **environ;

#define WARMUP 200     /* round trips before measuring: handshakes, caches */
#define ROUNDS 2000    /* measured round trips per transport */
#define CONNECTS 50    /* measured connects (each builds a context) */
#define CLI_RUNS 30    /* measured fork/exec runs of `dmp nodes` */
#define PAYLOAD_MAX 256

static int s_failures; /* operations that errored (not slow: failed) */

/* ---- measuring ------------------------------------------------------- */

static double
s_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int
s_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    double median; /* microseconds */
    double p99;
    bool ok;
} s_stats_t;

/* Times op `rounds` times after `warmup` untimed calls. Stops at the first
 * failure (ok = false). */
static s_stats_t
s_measure(int (*op)(void *), void *arg, int warmup, int rounds)
{
    s_stats_t st = {0, 0, false};
    double *t = calloc((size_t)rounds, sizeof *t);
    if (!t)
        return st;
    for (int i = 0; i < warmup; i++)
        if (op(arg) != 0)
            goto out;
    for (int i = 0; i < rounds; i++) {
        double t0 = s_now_us();
        if (op(arg) != 0)
            goto out;
        t[i] = s_now_us() - t0;
    }
    qsort(t, (size_t)rounds, sizeof *t, s_cmp_double);
    st.median = rounds % 2 ? t[rounds / 2]
                           : (t[rounds / 2 - 1] + t[rounds / 2]) / 2;
    st.p99 = t[(int)ceil(0.99 * rounds) - 1];
    st.ok = true;
out:
    free(t);
    return st;
}

static void
s_report(const char *name, s_stats_t st, bool with_p99)
{
    if (!st.ok) {
        printf("# %s: failed\n", name);
        s_failures++;
        return;
    }
    printf("%s_median %.1f us\n", name, st.median);
    if (with_p99)
        printf("%s_p99 %.1f us\n", name, st.p99);
    fflush(stdout);
}

static void
s_report_ms(const char *name, s_stats_t st)
{
    if (!st.ok) {
        printf("# %s: failed\n", name);
        s_failures++;
        return;
    }
    printf("%s_median %.2f ms\n", name, st.median / 1000);
    printf("%s_p99 %.2f ms\n", name, st.p99 / 1000);
    fflush(stdout);
}

static void
s_ratio(const char *name, s_stats_t a, s_stats_t b)
{
    if (a.ok && b.ok && b.median > 0)
        printf("%s %.2f x\n", name, a.median / b.median);
}

/* ---- interleaved round trips ---------------------------------------- */

/*
 * Same-host round trips here swing by 3-5x with where the scheduler puts
 * the two ends (on this 2-vCPU VM a cross-CPU wakeup costs 30-60 us, a
 * same-CPU one a few). Measuring each transport in one stretch would let
 * that drift decide the ratios, so every transport gets BLOCKS turns of
 * ROUNDS / BLOCKS round trips, in rotation, and its median is over all
 * of its samples.
 */
#define BLOCKS 10

typedef struct {
    const char *name;   /* metric prefix */
    int (*op)(void *);  /* one round trip; 0 on success */
    void *arg;
    double t[ROUNDS];   /* samples, microseconds */
    int n;              /* samples taken */
    bool failed;        /* op failed once: no more turns */
} s_rtt_t;

static void
s_turn(s_rtt_t *r, int rounds, bool timed)
{
    for (int i = 0; i < rounds && !r->failed; i++) {
        double t0 = s_now_us();
        if (r->op(r->arg) != 0) {
            r->failed = true;
            printf("# %s: round trip failed\n", r->name);
            return;
        }
        if (timed && r->n < ROUNDS)
            r->t[r->n++] = s_now_us() - t0;
    }
}

static s_stats_t
s_rtt_stats(s_rtt_t *r)
{
    s_stats_t st = {0, 0, false};
    if (!r->op || r->failed || r->n == 0)
        return st;
    qsort(r->t, (size_t)r->n, sizeof r->t[0], s_cmp_double);
    st.median = r->n % 2 ? r->t[r->n / 2]
                         : (r->t[r->n / 2 - 1] + r->t[r->n / 2]) / 2;
    st.p99 = r->t[(int)ceil(0.99 * r->n) - 1];
    st.ok = true;
    return st;
}

/* Entries without op are skipped. The starting entry rotates too. */
static void
s_interleave(s_rtt_t *v, int nv)
{
    for (int j = 0; j < nv; j++)
        if (v[j].op)
            s_turn(&v[j], WARMUP, false);
    for (int b = 0; b < BLOCKS; b++)
        for (int j = 0; j < nv; j++)
            if (v[(b + j) % nv].op)
                s_turn(&v[(b + j) % nv], ROUNDS / BLOCKS, true);
}

/* ---- socketpair echo: the floor for any same-host round trip --------- */

typedef struct {
    int fd;
    pid_t pid;
    char buf[64];
} s_sp_t;

static int
s_sp_op(void *arg)
{
    s_sp_t *sp = arg;
    if (write(sp->fd, sp->buf, sizeof sp->buf) != (ssize_t)sizeof sp->buf)
        return -1;
    size_t got = 0;
    while (got < sizeof sp->buf) {
        ssize_t n = read(sp->fd, sp->buf + got, sizeof sp->buf - got);
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 0;
}

/* Forks the echo child: must run before any ZeroMQ context or thread
 * exists. The child echoes until EOF. */
static int
s_sp_start(s_sp_t *sp)
{
    int sv[2];
    memset(sp->buf, 'x', sizeof sp->buf);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return -errno;
    fflush(stdout);
    sp->pid = fork();
    if (sp->pid == 0) { /* async-signal-safe calls only */
        close(sv[0]);
        char buf[4096];
        ssize_t n;
        while ((n = read(sv[1], buf, sizeof buf)) > 0)
            if (write(sv[1], buf, (size_t)n) != n)
                break;
        _exit(0);
    }
    int err = errno;
    close(sv[1]);
    if (sp->pid < 0) {
        close(sv[0]);
        return -err;
    }
    sp->fd = sv[0];
    return 0;
}

static void
s_sp_stop(s_sp_t *sp)
{
    close(sp->fd);
    waitpid(sp->pid, NULL, 0);
}

/* ---- raw ZeroMQ echo server (this binary with --echo-server) ---------- */

/*
 * A ROUTER on ipc (plain) and a ROUTER on tcp with CURVE, answering every
 * request with a reply_size frame. The CURVE server runs without a ZAP
 * handler: libzmq then accepts any client key. dmp's agents authenticate
 * through ZAP, which costs at connect only, not per message. Prints
 * "IPC_ENDPOINT TCP_ENDPOINT SERVER_PUBLIC_KEY" on stdout, then serves
 * until stdin reads EOF.
 */
static int
s_echo_server(size_t reply_size)
{
    char pub[41], sec[41], dir[] = "/tmp/dmp-bench-XXXXXX";
    char ipc[DMP__ADDR_MAX], tcp[DMP__ADDR_MAX];
    uint8_t reply[PAYLOAD_MAX];
    if (reply_size > sizeof reply || zmq_curve_keypair(pub, sec) != 0 ||
        !mkdtemp(dir))
        return 1;
    memset(reply, 'r', sizeof reply);
    void *ctx = zmq_ctx_new();
    void *ipc_s = zmq_socket(ctx, ZMQ_ROUTER);
    void *tcp_s = zmq_socket(ctx, ZMQ_ROUTER);
    int one = 1, zero = 0;
    snprintf(ipc, sizeof ipc, "ipc://%s/echo.sock", dir);
    zmq_setsockopt(ipc_s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(tcp_s, ZMQ_LINGER, &zero, sizeof zero);
    int curve = zmq_setsockopt(tcp_s, ZMQ_CURVE_SERVER, &one, sizeof one) ||
                zmq_setsockopt(tcp_s, ZMQ_CURVE_SECRETKEY, sec, 40);
    sodium_memzero(sec, sizeof sec);
    size_t len = sizeof tcp;
    int rc = 1;
    if (curve != 0 || zmq_bind(ipc_s, ipc) != 0 ||
        zmq_bind(tcp_s, "tcp://127.0.0.1:*") != 0 ||
        zmq_getsockopt(tcp_s, ZMQ_LAST_ENDPOINT, tcp, &len) != 0)
        goto out;
    printf("%s %s %s\n", ipc, tcp, pub);
    fflush(stdout);
    zmq_pollitem_t items[] = {{ipc_s, 0, ZMQ_POLLIN, 0},
                              {tcp_s, 0, ZMQ_POLLIN, 0},
                              {NULL, 0, ZMQ_POLLIN, 0}};
    for (;;) {
        if (zmq_poll(items, 3, -1) < 0 && errno != EINTR)
            break;
        if (items[2].revents) { /* the parent closed our stdin */
            rc = 0;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (!items[i].revents)
                continue;
            void *s = items[i].socket;
            uint8_t rid[256], buf[PAYLOAD_MAX];
            int rid_len = zmq_recv(s, rid, sizeof rid, ZMQ_DONTWAIT);
            if (rid_len < 0)
                continue;
            int more = 0;
            size_t sz = sizeof more;
            do { /* the request; its content does not matter */
                zmq_recv(s, buf, sizeof buf, 0);
                zmq_getsockopt(s, ZMQ_RCVMORE, &more, &sz);
            } while (more);
            zmq_send(s, rid, (size_t)rid_len, ZMQ_SNDMORE);
            zmq_send(s, reply, reply_size, 0);
        }
    }
out:
    zmq_close(ipc_s);
    zmq_close(tcp_s);
    zmq_ctx_term(ctx);
    snprintf(ipc, sizeof ipc, "%s/echo.sock", dir);
    unlink(ipc);
    rmdir(dir);
    return rc;
}

typedef struct {
    pid_t pid;
    int in_fd; /* its stdin: closing it stops the server */
    char ipc[DMP__ADDR_MAX];
    char tcp[DMP__ADDR_MAX];
    char pub[41];
} s_echo_t;

static int
s_echo_start(s_echo_t *e, size_t reply_size)
{
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0)
        return -errno;
    if (pipe2(out, O_CLOEXEC) != 0) {
        close(in[0]);
        close(in[1]);
        return -errno;
    }
    char size_arg[32];
    snprintf(size_arg, sizeof size_arg, "%zu", reply_size);
    char *argv[] = {"bench_rtt", "--echo-server", size_arg, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    int err = posix_spawn(&e->pid, "/proc/self/exe", &fa, NULL, argv,
                          environ);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    e->in_fd = in[1];
    char line[3 * DMP__ADDR_MAX];
    FILE *f = err ? NULL : fdopen(out[0], "r");
    int rc = 0;
    if (!f || !fgets(line, sizeof line, f) ||
        sscanf(line, "%255s %255s %40s", e->ipc, e->tcp, e->pub) != 3)
        rc = -EPROTO;
    if (f)
        fclose(f);
    else
        close(out[0]);
    if (rc || err)
        close(e->in_fd);
    if (rc && !err)
        waitpid(e->pid, NULL, 0);
    return err ? -err : rc;
}

static void
s_echo_stop(s_echo_t *e)
{
    close(e->in_fd);
    waitpid(e->pid, NULL, 0);
}

/* ---- raw ZeroMQ client ----------------------------------------------- */

typedef struct {
    void *ctx;
    void *sock;
    size_t req_size;
    uint8_t buf[PAYLOAD_MAX];
} s_raw_t;

/* A DEALER, CURVE when server_pub is given, with a fresh keypair. */
static int
s_raw_open(s_raw_t *r, const char *endpoint, const char *server_pub)
{
    r->ctx = zmq_ctx_new();
    r->sock = r->ctx ? zmq_socket(r->ctx, ZMQ_DEALER) : NULL;
    if (!r->sock)
        return -1;
    int zero = 0;
    zmq_setsockopt(r->sock, ZMQ_LINGER, &zero, sizeof zero);
    if (server_pub) {
        char pub[41], sec[41];
        int bad = zmq_curve_keypair(pub, sec) != 0 ||
                  zmq_setsockopt(r->sock, ZMQ_CURVE_SERVERKEY, server_pub,
                                 40) != 0 ||
                  zmq_setsockopt(r->sock, ZMQ_CURVE_PUBLICKEY, pub, 40) != 0 ||
                  zmq_setsockopt(r->sock, ZMQ_CURVE_SECRETKEY, sec, 40) != 0;
        sodium_memzero(sec, sizeof sec);
        if (bad)
            return -1;
    }
    int timeout = 5000; /* a dead server fails the bench, never hangs it */
    zmq_setsockopt(r->sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(r->sock, ZMQ_SNDTIMEO, &timeout, sizeof timeout);
    return zmq_connect(r->sock, endpoint);
}

static void
s_raw_close(s_raw_t *r)
{
    if (r->sock)
        zmq_close(r->sock);
    if (r->ctx)
        zmq_ctx_term(r->ctx);
    r->sock = r->ctx = NULL;
}

static int
s_raw_op(void *arg)
{
    s_raw_t *r = arg;
    if (zmq_send(r->sock, r->buf, r->req_size, 0) < 0)
        return -1;
    return zmq_recv(r->sock, r->buf, sizeof r->buf, 0) < 0 ? -1 : 0;
}

/* What a fresh client pays: context, socket, CURVE handshake, one round
 * trip, teardown (the raw counterpart of connect + nodes + destroy). */
typedef struct {
    const char *endpoint;
    const char *server_pub;
    size_t req_size;
} s_raw_connect_t;

static int
s_raw_connect_op(void *arg)
{
    s_raw_connect_t *rc = arg;
    s_raw_t r = {.req_size = rc->req_size};
    int ret = s_raw_open(&r, rc->endpoint, rc->server_pub);
    if (ret == 0)
        ret = s_raw_op(&r);
    s_raw_close(&r);
    return ret;
}

/* ---- dmp ------------------------------------------------------------- */

static int
s_ping_op(void *arg)
{
    return dmp_client_ping(arg);
}

/* The encoded size of a Hello from `role` naming `node`, as sent with the
 * request ids this benchmark reaches, or `fallback` if encoding fails. */
static size_t
s_hello_size(const char *role, const char *node, size_t fallback)
{
    dmp__msg_t m = {.kind = DMP__MSG_HELLO, .id = ROUNDS,
                    .version = DMP_PROTOCOL_VERSION};
    m.u.hello.version = DMP_PROTOCOL_VERSION;
    dmp__strlcpy(m.u.hello.role, role, sizeof m.u.hello.role);
    dmp__strlcpy(m.u.hello.node, node, sizeof m.u.hello.node);
    uint8_t *buf;
    size_t len;
    if (dmp__wire_encode(&m, &buf, &len) != 0)
        return fallback;
    dmp__free(buf);
    return len;
}

static dmp_client_opts_t
s_env_opts(void)
{
    return (dmp_client_opts_t){.address = getenv("DMP_CLUSTER"),
                               .key_file = getenv("DMP_KEY"),
                               .server_key = getenv("DMP_SERVER_KEY")};
}

static int
s_connect_nodes_op(void *arg)
{
    const dmp_client_opts_t *opts = arg;
    dmp_client_t *c;
    int rc = dmp_client_connect(opts, &c, NULL, 0);
    if (rc)
        return rc;
    dmp_node_info_t *nodes;
    size_t n;
    rc = dmp_client_nodes(c, &nodes, &n);
    if (rc == 0)
        dmp_nodes_free(&nodes);
    dmp_client_destroy(&c);
    return rc;
}

/* `dmp nodes`, fork/exec to exit, output to /dev/null. */
static int
s_cli_op(void *arg)
{
    const char *dmp_bin = arg;
    char *argv[] = {(char *)dmp_bin, "nodes", NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int err = posix_spawn(&pid, dmp_bin, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    int status;
    if (err || waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* ---- memory ---------------------------------------------------------- */

/* VmRSS of pid in KiB, or -1. */
static long
s_rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

/* The pid recorded by `dmp cluster up` in DIR/NODE.pid (first field). */
static pid_t
s_node_pid(const char *dir, const char *node)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s.pid", dir, node);
    FILE *f = fopen(path, "re");
    long pid = -1;
    if (f) {
        if (fscanf(f, "%ld", &pid) != 1)
            pid = -1;
        fclose(f);
    }
    return (pid_t)pid;
}

/* Our child named dmpd: the embedded agent dmp_init started. */
static pid_t
s_embedded_pid(void)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    pid_t found = -1;
    while (d && found < 0 && (de = readdir(d))) {
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
        FILE *f = fopen(path, "re");
        if (!f)
            continue;
        int pid, ppid;
        char comm[64];
        if (fgets(buf, sizeof buf, f) &&
            sscanf(buf, "%d (%63[^)]) %*c %d", &pid, &comm[0], &ppid) == 3 &&
            ppid == getpid() && strcmp(comm, "dmpd") == 0)
            found = pid;
        fclose(f);
    }
    if (d)
        closedir(d);
    return found;
}

static void
s_report_rss(const char *name, pid_t pid)
{
    long kib = pid > 0 ? s_rss_kib(pid) : -1;
    if (kib < 0)
        printf("# %s: no VmRSS for pid %d\n", name, (int)pid);
    else
        printf("%s %.2f MiB\n", name, kib / 1024.0);
}

/* ---- main ------------------------------------------------------------ */

/* A client of the agent at opts, or NULL (with a note). */
static dmp_client_t *
s_connect(const char *what, const dmp_client_opts_t *opts)
{
    dmp_client_t *c = NULL;
    char err[DMP__TEXT_MAX];
    if (dmp_client_connect(opts, &c, err, sizeof err) != 0) {
        printf("# %s: %s\n", what, err);
        s_failures++;
    }
    return c;
}

/* dmp_init with the embedded agent: the cluster variables are put out of
 * the way for the length of the call. */
static int
s_init_embedded(void)
{
    char *saved = getenv("DMP_CLUSTER") ? strdup(getenv("DMP_CLUSTER"))
                                        : NULL;
    unsetenv("DMP_CLUSTER");
    unsetenv("DMP_AGENT");
    int rc = dmp_init();
    if (saved) {
        setenv("DMP_CLUSTER", saved, 1);
        free(saved);
    }
    return rc;
}

/* The round trips measured side by side; an entry without op is skipped
 * (what it needs is missing). Static: ROUNDS samples each. */
enum { R_SP, R_EMB, R_NODE, R_TCP, R_RAW_IPC, R_RAW_TCP, R_N };
static s_rtt_t s_rtt[R_N];

int
main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--echo-server") == 0)
        return s_echo_server(strtoul(argv[2], NULL, 10));
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);

    const char *build = getenv("DMP_BUILD");
    const char *dir = getenv("DMP_BENCH_CLUSTER_DIR");
    char dmp_bin[PATH_MAX] = "";
    if (build && *build) {
        char dmpd[PATH_MAX];
        snprintf(dmpd, sizeof dmpd, "%s/bin/dmpd", build);
        snprintf(dmp_bin, sizeof dmp_bin, "%s/bin/dmp", build);
        if (!getenv("DMP_DMPD"))
            setenv("DMP_DMPD", dmpd, 1);
    }
    if (dir && !*dir)
        dir = NULL;

    /* (d) idle memory first, before this run sends the agents anything. */
    if (dir) {
        s_report_rss("agent_idle_rss_node1", s_node_pid(dir, "node1"));
        s_report_rss("agent_idle_rss_node3", s_node_pid(dir, "node3"));
    }

    /* Forks: before any ZeroMQ context or thread. */
    s_sp_t sp;
    bool have_sp = s_sp_start(&sp) == 0;

    if (sodium_init() < 0)
        return 1;
    /* The raw baseline moves the same bytes as a client's Hello and
     * node1's reply to it. */
    size_t req_size = s_hello_size("client", "", 16);
    size_t rep_size = s_hello_size("agent", "node1", 24);
    printf("hello_request_size %zu B\nhello_reply_size %zu B\n", req_size,
           rep_size);

    s_echo_t echo;
    bool have_echo = s_echo_start(&echo, rep_size) == 0;
    if (!have_echo) {
        printf("# raw zmq echo server did not start\n");
        s_failures++;
    }

    /* The embedded agent: how long dmp_init takes to start it and
     * connect is a number worth having too. */
    double t0 = s_now_us();
    int rc = s_init_embedded();
    double init_us = s_now_us() - t0;
    if (rc == 0) {
        printf("dmp_init_embedded %.2f ms\n", init_us / 1000);
    } else {
        printf("# embedded agent: %s (set DMP_BUILD or DMP_DMPD)\n",
               dmp_strerror(rc));
        s_failures++;
    }

    /* (a) + (b): every round trip, interleaved. */
    char node_ep[DMP__ADDR_MAX] = "";
    dmp_client_t *node_ipc = NULL, *tcp = NULL;
    dmp_client_opts_t env_opts = s_env_opts();
    if (dir) {
        snprintf(node_ep, sizeof node_ep, "ipc://%s/run/node1/dmpd.sock",
                 dir);
        dmp_client_opts_t opts = {.address = node_ep};
        node_ipc = s_connect("node1 ipc", &opts);
    }
    if (env_opts.address)
        tcp = s_connect("cluster tcp", &env_opts);
    else
        printf("# no DMP_CLUSTER: tcp benchmarks skipped\n");
    s_raw_t raw_ipc = {.req_size = req_size}, raw_tcp = {.req_size = req_size};
    bool have_raw_ipc = false, have_raw_tcp = false;
    if (have_echo) {
        memset(raw_ipc.buf, 'q', sizeof raw_ipc.buf);
        memset(raw_tcp.buf, 'q', sizeof raw_tcp.buf);
        have_raw_ipc = s_raw_open(&raw_ipc, echo.ipc, NULL) == 0;
        have_raw_tcp = s_raw_open(&raw_tcp, echo.tcp, echo.pub) == 0;
        printf("# raw zmq: DEALER/ROUTER echo, %zu B request, %zu B reply, "
               "server in its own process; its CURVE server has no ZAP "
               "handler (dmp's agents run ZAP, a cost at connect only)\n",
               req_size, rep_size);
    }
    s_rtt_t *r = s_rtt;
    if (have_sp)
        r[R_SP] = (s_rtt_t){"socketpair_rtt_64B", s_sp_op, &sp};
    if (rc == 0)
        r[R_EMB] = (s_rtt_t){"dmp_ping_ipc_embedded", s_ping_op,
                             dmp_default_client()};
    if (node_ipc)
        r[R_NODE] = (s_rtt_t){"dmp_ping_ipc_node", s_ping_op, node_ipc};
    if (tcp)
        r[R_TCP] = (s_rtt_t){"dmp_ping_tcp_curve", s_ping_op, tcp};
    if (have_raw_ipc)
        r[R_RAW_IPC] = (s_rtt_t){"zmq_rtt_ipc", s_raw_op, &raw_ipc};
    if (have_raw_tcp)
        r[R_RAW_TCP] = (s_rtt_t){"zmq_rtt_tcp_curve", s_raw_op, &raw_tcp};
    s_interleave(r, R_N);
    s_stats_t st[R_N] = {{0}};
    for (int j = 0; j < R_N; j++)
        if (r[j].op)
            s_report(r[j].name, st[j] = s_rtt_stats(&r[j]), true);
    s_ratio("ratio_dmp_ping_ipc_embedded_over_zmq_ipc", st[R_EMB],
            st[R_RAW_IPC]);
    s_ratio("ratio_dmp_ping_ipc_node_over_zmq_ipc", st[R_NODE],
            st[R_RAW_IPC]);
    s_ratio("ratio_dmp_ping_tcp_curve_over_zmq_tcp_curve", st[R_TCP],
            st[R_RAW_TCP]);
    if (r[R_EMB].op)
        s_report_rss("agent_rss_embedded_after_ping", s_embedded_pid());
    s_raw_close(&raw_ipc);
    s_raw_close(&raw_tcp);
    dmp_client_destroy(&node_ipc);
    dmp_client_destroy(&tcp);
    if (have_sp)
        s_sp_stop(&sp);
    if (rc == 0) {
        t0 = s_now_us();
        dmp_fini();
        printf("dmp_fini_embedded %.2f ms\n", (s_now_us() - t0) / 1000);
    }

    /* (c) what `dmp nodes` costs: connect + handshake + request. */
    s_stats_t conn = {0}, raw_conn = {0}, cli = {0};
    if (env_opts.address) {
        conn = s_measure(s_connect_nodes_op, &env_opts, 3, CONNECTS);
        s_report_ms("dmp_connect_nodes_tcp_curve", conn);
    }
    if (have_echo) {
        s_raw_connect_t rcon = {echo.tcp, echo.pub, req_size};
        raw_conn = s_measure(s_raw_connect_op, &rcon, 3, CONNECTS);
        s_report_ms("zmq_connect_rtt_tcp_curve", raw_conn);
    }
    s_ratio("ratio_dmp_connect_nodes_over_zmq_connect_rtt", conn, raw_conn);
    if (env_opts.address && dmp_bin[0] && access(dmp_bin, X_OK) == 0) {
        cli = s_measure(s_cli_op, dmp_bin, 2, CLI_RUNS);
        s_report_ms("dmp_nodes_cli", cli);
    }
    if (have_echo)
        s_echo_stop(&echo);

    /* (d) memory again, after serving everything above. */
    if (dir)
        s_report_rss("agent_rss_node1_after_bench", s_node_pid(dir, "node1"));
    return s_failures ? 1 : 0;
}
