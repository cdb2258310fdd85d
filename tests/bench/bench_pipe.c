/*
 * bench_pipe.c - Pipe round trips and bulk transfer through the public
 * API, between this process and a child dmp process, beside what they are
 * compared with.
 *
 *   pipe_rtt_64B_{median,p99}  us, send_bytes + recv_bytes of 64 B to a
 *       child on this host that echoes them (py_pipe_rtt.py measures
 *       Python's Pipe the same way: py_pipe_rtt_64B_*)
 *   pipe_rtt_str_64B_{median,p99}  us, the same with dmp_conn_send/recv
 *       of a 64-character str value (encoded and decoded: Python's send)
 *   pipe_bulk_1MiB_bw  MB/s, a child on this host sends 1 MiB messages
 *       with send_bytes, this process recv_bytes them (py_pipe_bulk.py:
 *       py_pipe_bulk_1MiB_bw); clocked from the "go" this process sends
 *       to the last message received, so process start is outside
 *   pipe_rtt_remote_64B_{median,p99}  us, the echoing child on another
 *       node (the second in dmp_nodes); the pipe is this node's, so the
 *       child's sends and receives cross to the owner over its direct
 *       link (dmp_direct.c)
 *   pipe_stream_remote_64B_rate  msg/s, a child on that node sends
 *       200000 messages of 64 B as fast as it can, this process receives
 *       them (bench_queue's zmq_curve_pushpull_64B_rate is the raw
 *       reference)
 *   zmq_curve_reqrep_rtt_64B_{median,p99}  us, raw ZeroMQ REQ -> REP over
 *       tcp on 127.0.0.1 with CURVE (with DMP_BENCH_HOST, to a child on
 *       the other node, at this host's address), to a child of this
 *       binary: the reference for the remote round trip
 *
 * Prints `name value unit` lines; never judges the numbers. Exits 1 only
 * when an operation failed.
 *
 * Processes: every child is a dmp process (this binary re-entered through
 * dmp_init, which must therefore come first in main). Run it with
 * DMP_AGENT naming a cluster node's local socket (tests/bench/run.sh
 * does); without a second node the remote case is skipped with a note.
 */
#define _GNU_SOURCE
#include <dmp.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "bench_common.h"

#define WARMUP 200      /* round trips before measuring */
#define ROUNDS 2000     /* measured round trips, as py_pipe_rtt.py */
#define REMOTE_ROUNDS 1000
#define BULK_SIZE (1u << 20)
#define BULK_COUNT 300  /* messages per bulk run */
#define BULK_RUNS 3     /* the median is reported */
#define STREAM_COUNT 200000 /* 64 B messages from another node */
#define PAYLOAD 64

enum { MODE_BYTES = 0, MODE_STR = 1 };

static double
s_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int
s_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int64_t
s_arg_int(const dmp_value_t *args, int i)
{
    int64_t v = 0;
    dmp_value_get_int(dmp_list_get(args, i), &v);
    return v;
}

/* ---- children ------------------------------------------------------------ */

/* args: [conn, mode]. Echoes every message until an empty one or EOF. */
DMP_TARGET(echo)
{
    dmp_conn_t *c;
    if (dmp_conn_from_value(dmp_list_get(args, 0), &c) != 0)
        return 2;
    int mode = (int)s_arg_int(args, 1), rc = 0;
    for (;;) {
        if (mode == MODE_STR) {
            dmp_value_t *v = NULL;
            if ((rc = dmp_conn_recv(c, &v)) != 0)
                break;
            bool end = dmp_value_len(v) == 0;
            if (!end)
                rc = dmp_conn_send(c, v);
            dmp_value_destroy(&v);
            if (end || rc)
                break;
        } else {
            void *data = NULL;
            size_t len = 0;
            if ((rc = dmp_conn_recv_bytes(c, &data, &len)) != 0)
                break;
            if (len)
                rc = dmp_conn_send_bytes(c, data, 0, len);
            dmp_free(data);
            if (!len || rc)
                break;
        }
    }
    dmp_conn_destroy(&c);
    return rc == 0 || rc == DMP_EEOF ? 0 : 3;
}

/* args: [conn, size, count]. Waits for a "go", then sends count messages
 * of size bytes. */
DMP_TARGET(bulk_sender)
{
    dmp_conn_t *c;
    if (dmp_conn_from_value(dmp_list_get(args, 0), &c) != 0)
        return 2;
    size_t size = (size_t)s_arg_int(args, 1);
    long count = (long)s_arg_int(args, 2);
    char *buf = malloc(size);
    void *go = NULL;
    size_t len;
    int rc = buf ? dmp_conn_recv_bytes(c, &go, &len) : -ENOMEM;
    dmp_free(go);
    if (buf)
        memset(buf, 'x', size);
    for (long i = 0; rc == 0 && i < count; i++)
        rc = dmp_conn_send_bytes(c, buf, 0, size);
    free(buf);
    dmp_conn_destroy(&c);
    return rc ? 3 : 0;
}

/* args: [endpoint, server public key]. A CURVE client REP that echoes
 * until an empty message. */
DMP_TARGET(zmq_echo)
{
    const char *ep = dmp_value_str(dmp_list_get(args, 0), NULL);
    const char *server = dmp_value_str(dmp_list_get(args, 1), NULL);
    char pub[41], sec[41], buf[256];
    if (!ep || !server || zmq_curve_keypair(pub, sec))
        return 2;
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_REP);
    int rc = zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server, 40) ||
             zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, 40) ||
             zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, 40) ||
             zmq_connect(s, ep);
    while (rc == 0) {
        int n = zmq_recv(s, buf, sizeof buf, 0);
        if (n < 0 || zmq_send(s, buf, (size_t)n, 0) < 0)
            rc = 1;
        else if (n == 0)
            break;
    }
    zmq_close(s);
    zmq_ctx_term(ctx);
    return rc ? 3 : 0;
}

/* ---- measuring ------------------------------------------------------------ */

typedef struct {
    double median, p99; /* us; median < 0: not measured */
} s_stats_t;

typedef int (*s_op_fn)(void *arg);

/* WARMUP then `rounds` timed calls of op; its median and p99. */
static int
s_measure(s_op_fn op, void *arg, int rounds, s_stats_t *st)
{
    double *t = malloc(sizeof *t * (size_t)rounds);
    if (!t)
        return -ENOMEM;
    int rc = 0;
    for (int i = -WARMUP; rc == 0 && i < rounds; i++) {
        double t0 = s_now_us();
        rc = op(arg);
        if (i >= 0)
            t[i] = s_now_us() - t0;
    }
    if (rc == 0) {
        qsort(t, (size_t)rounds, sizeof t[0], s_cmp);
        st->median = t[rounds / 2];
        st->p99 = t[(int)ceil(0.99 * rounds) - 1];
    }
    free(t);
    return rc;
}

static void
s_report(const char *name, s_stats_t st)
{
    printf("%s_median %.1f us\n%s_p99 %.1f us\n", name, st.median, name,
           st.p99);
}

typedef struct {
    dmp_conn_t *c;
    int mode;
    char buf[PAYLOAD];
    dmp_value_t *v;
} s_rtt_t;

static int
s_rtt_op(void *arg)
{
    s_rtt_t *r = arg;
    int rc;
    if (r->mode == MODE_STR) {
        dmp_value_t *back = NULL;
        if ((rc = dmp_conn_send(r->c, r->v)) == 0 &&
            (rc = dmp_conn_recv(r->c, &back)) == 0 &&
            dmp_value_len(back) != PAYLOAD)
            rc = -EPROTO;
        dmp_value_destroy(&back);
        return rc;
    }
    void *data = NULL;
    size_t len = 0;
    if ((rc = dmp_conn_send_bytes(r->c, r->buf, 0, PAYLOAD)) == 0 &&
        (rc = dmp_conn_recv_bytes(r->c, &data, &len)) == 0 && len != PAYLOAD)
        rc = -EPROTO;
    dmp_free(data);
    return rc;
}

/* A started child and the pipe to it. */
typedef struct {
    dmp_process_t *p;
    dmp_conn_t *mine;   /* our end */
    dmp_conn_t *theirs; /* our copy of the child's end */
} s_child_t;

/* Starts `target` on node with [the child's end, extra...] (takes the
 * extras). Returns 0 or an error (said on stderr).
 *
 * Our copy of the child's end stays open until the child is joined, as in
 * libdmp/examples/pipe.c. Python closes it right after start; here that
 * races with the child attaching: with no writer left yet, our recv may
 * return EOF at once (and the pipe then be removed under the child). */
static int
s_start(const char *target, const char *node, dmp_value_t *extra1,
        dmp_value_t *extra2, s_child_t *ch)
{
    *ch = (s_child_t){0};
    int rc = dmp_pipe(1, &ch->mine, &ch->theirs);
    dmp_value_t *args = rc ? NULL
                           : dmp_list_of(1, dmp_conn_value(ch->theirs));
    if (!rc && !args)
        rc = -ENOMEM;
    if (!rc && extra1)
        rc = dmp_list_append(args, extra1);
    else
        dmp_value_destroy(&extra1);
    if (!rc && extra2)
        rc = dmp_list_append(args, extra2);
    else
        dmp_value_destroy(&extra2);
    dmp_process_opts_t o = {.target = target, .args = args, .node = node};
    if (rc == 0 && (rc = dmp_process_new(&o, &ch->p)) == 0)
        rc = dmp_process_start(ch->p);
    dmp_value_destroy(&args);
    if (rc) {
        fprintf(stderr, "bench_pipe: cannot start %s on %s: %s\n", target,
                node, dmp_strerror(rc));
        dmp_process_destroy(&ch->p);
        dmp_conn_destroy(&ch->theirs);
        dmp_conn_destroy(&ch->mine);
    }
    return rc;
}

/* Joins the child; 0 when it exited 0. A child still reading gets EOF. */
static int
s_finish(s_child_t *ch)
{
    dmp_conn_close(ch->mine);
    dmp_conn_close(ch->theirs);
    int code = -1, rc = dmp_process_join(ch->p, 30);
    if (rc == 0)
        dmp_process_exitcode(ch->p, &code);
    if (rc || code)
        fprintf(stderr, "bench_pipe: child %s: %s, exit %d\n",
                dmp_process_name(ch->p), dmp_strerror(rc), code);
    dmp_process_destroy(&ch->p);
    dmp_conn_destroy(&ch->theirs);
    dmp_conn_destroy(&ch->mine);
    return rc || code ? -1 : 0;
}

/* Round trips to an echoing child on node. */
static int
s_pipe_rtt(const char *name, const char *node, int mode, int rounds)
{
    s_child_t ch;
    if (s_start("echo", node, dmp_int(mode), NULL, &ch))
        return -1;
    dmp_conn_t *c = ch.mine;
    s_rtt_t r = {.c = c, .mode = mode};
    memset(r.buf, 'x', sizeof r.buf);
    r.buf[PAYLOAD - 1] = '\0';
    char text[PAYLOAD + 1];
    memset(text, 'x', PAYLOAD);
    text[PAYLOAD] = '\0';
    r.v = dmp_str(text);
    s_stats_t st;
    int rc = r.v ? s_measure(s_rtt_op, &r, rounds, &st) : -ENOMEM;
    dmp_value_destroy(&r.v);
    if (rc)
        fprintf(stderr, "bench_pipe: %s: %s\n", name, dmp_strerror(rc));
    else
        s_report(name, st);
    if (rc == 0 && mode == MODE_STR) { /* the end: an empty message */
        dmp_value_t *end = dmp_str("");
        rc = dmp_conn_send(c, end);
        dmp_value_destroy(&end);
    } else if (rc == 0) {
        rc = dmp_conn_send_bytes(c, "", 0, 0);
    }
    return s_finish(&ch) || rc ? -1 : 0;
}

/* One bulk run: MB/s, or -1. */
/* A child on `node` sends count messages of size bytes as fast as it can;
 * this process receives them. Messages per second from the "go" to the
 * last one (so process start is outside), or -1. */
static double
s_stream_run(const char *node, size_t size, long count)
{
    s_child_t ch;
    if (s_start("bulk_sender", node, dmp_int((int64_t)size),
                dmp_int(count), &ch))
        return -1;
    dmp_conn_t *c = ch.mine;
    double t0 = s_now_us();
    int rc = dmp_conn_send_bytes(c, "go", 0, 2);
    for (long i = 0; rc == 0 && i < count; i++) {
        void *data = NULL;
        size_t len = 0;
        rc = dmp_conn_recv_bytes(c, &data, &len);
        if (rc == 0 && len != size)
            rc = -EPROTO;
        dmp_free(data);
    }
    double took = s_now_us() - t0;
    if (rc)
        fprintf(stderr, "bench_pipe: stream from %s: %s\n", node,
                dmp_strerror(rc));
    if (s_finish(&ch) || rc)
        return -1;
    return (double)count / took * 1e6;
}

/* Raw CURVE REQ (here, the CURVE server, bound) -> REP (a local child). */
typedef struct {
    void *s;
    char buf[PAYLOAD];
} s_zmq_t;

static int
s_zmq_op(void *arg)
{
    s_zmq_t *z = arg;
    if (zmq_send(z->s, z->buf, PAYLOAD, 0) < 0 ||
        zmq_recv(z->s, z->buf, sizeof z->buf, 0) != PAYLOAD)
        return -EPROTO;
    return 0;
}


static int
s_zmq_rtt(void)
{
    char bind[128], node[256];
    s_raw_where(bind, node);
    char pub[41], sec[41], ep[256];
    size_t eplen = sizeof ep;
    if (zmq_curve_keypair(pub, sec))
        return -1;
    void *ctx = zmq_ctx_new();
    s_zmq_t z = {.s = zmq_socket(ctx, ZMQ_REQ)};
    memset(z.buf, 'x', sizeof z.buf);
    int one = 1, timeout = 10000, zero = 0;
    int rc = zmq_setsockopt(z.s, ZMQ_CURVE_SERVER, &one, sizeof one) ||
             zmq_setsockopt(z.s, ZMQ_CURVE_SECRETKEY, sec, 40) ||
             zmq_setsockopt(z.s, ZMQ_RCVTIMEO, &timeout, sizeof timeout) ||
             zmq_setsockopt(z.s, ZMQ_LINGER, &zero, sizeof zero) ||
             zmq_bind(z.s, bind) ||
             zmq_getsockopt(z.s, ZMQ_LAST_ENDPOINT, ep, &eplen);
    dmp_value_t *args = rc ? NULL : dmp_list_of(2, dmp_str(ep), dmp_str(pub));
    dmp_process_t *p = NULL;
    dmp_process_opts_t o = {.target = "zmq_echo", .args = args,
                            .node = node};
    if (!args || dmp_process_new(&o, &p) || dmp_process_start(p))
        rc = -1;
    s_stats_t st;
    if (rc == 0 && (rc = s_measure(s_zmq_op, &z, REMOTE_ROUNDS, &st)) == 0)
        s_report("zmq_curve_reqrep_rtt_64B", st);
    if (rc == 0)
        rc = zmq_send(z.s, "", 0, 0) < 0 || zmq_recv(z.s, z.buf, 1, 0) != 0;
    int code = -1;
    if (p && dmp_process_join(p, 30) == 0)
        dmp_process_exitcode(p, &code);
    dmp_process_destroy(&p);
    dmp_value_destroy(&args);
    zmq_close(z.s);
    zmq_ctx_term(ctx);
    if (rc || code)
        fprintf(stderr, "bench_pipe: zmq req/rep: %s, child exit %d\n",
                rc ? zmq_strerror(zmq_errno()) : "ok", code);
    return rc || code ? -1 : 0;
}

/* ---- main ------------------------------------------------------------------ */


int
main(void)
{
    int rc = dmp_init(); /* in a child, this runs its target */
    if (rc) {
        fprintf(stderr, "bench_pipe: dmp_init: %s\n", dmp_strerror(rc));
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    int failures = 0;
    printf("# Pipe(duplex) between this process and a child; pipe on node "
           "%s; %d B round trips (%d warm-up), bulk %u x %u B, median of "
           "%d runs\n", dmp_current_node(), PAYLOAD, WARMUP, BULK_COUNT,
           BULK_SIZE, BULK_RUNS);
    failures += s_pipe_rtt("pipe_rtt_64B", "local", MODE_BYTES, ROUNDS) != 0;
    failures += s_pipe_rtt("pipe_rtt_str_64B", "local", MODE_STR, ROUNDS) != 0;

    double bw[BULK_RUNS];
    bool ok = true;
    for (int i = 0; i < BULK_RUNS && ok; i++)
        ok = (bw[i] = s_stream_run("local", BULK_SIZE, BULK_COUNT) *
                      BULK_SIZE / 1e6) > 0;
    if (ok) {
        qsort(bw, BULK_RUNS, sizeof bw[0], s_cmp);
        printf("pipe_bulk_1MiB_bw %.1f MB/s\n", bw[BULK_RUNS / 2]);
    } else {
        failures++;
    }

    char other[256];
    s_other_node(other, sizeof other);
    if (other[0]) {
        printf("# remote: echoing child on %s, pipe owned by %s\n", other,
               dmp_current_node());
        failures += s_pipe_rtt("pipe_rtt_remote_64B", other, MODE_BYTES,
                               REMOTE_ROUNDS) != 0;
        double rate = s_stream_run(other, PAYLOAD, STREAM_COUNT);
        if (rate > 0)
            printf("pipe_stream_remote_64B_rate %.0f msg/s\n", rate);
        else
            failures++;
    } else {
        printf("# no second node alive: pipe_rtt_remote_64B skipped\n");
    }
    failures += s_zmq_rtt() != 0;
    dmp_fini();
    return failures ? 1 : 0;
}
