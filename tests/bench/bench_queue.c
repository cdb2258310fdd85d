/*
 * bench_queue.c - Queue throughput through the public API, one producer
 * process to one consumer process, beside what it is compared with.
 *
 *   queue_{bytes,str}_{64B,4KiB}_rate  msg/s, producer and consumer on
 *       this host: dmp_queue_put_bytes/get_bytes (raw bytes), and
 *       dmp_queue_put/get with a str value of that many characters (the
 *       value is encoded and decoded, as Python pickles); _bw: MB/s
 *   queue_remote_put_64B_rate  msg/s, the producer on another node (the
 *       second in dmp_nodes) putting into a queue owned by this node: each
 *       put goes through the producer's agent to the owner; the consumer
 *       gets from shared memory here
 *   zmq_curve_pushpull_64B_rate  msg/s, raw ZeroMQ PUSH -> PULL over tcp
 *       on 127.0.0.1 with CURVE (with DMP_BENCH_HOST, from a process on
 *       the other node to this host's address), between two processes of
 *       this binary:
 *       the ceiling for the remote case
 *
 * The Python counterpart is py_queue.py (py_queue_{64B,4KiB}_rate). As
 * there, the clock runs from before the producer starts to the consumer's
 * last get, so process start is inside (a few ms of each run). Unlike
 * there, the producer puts for a fixed time (then one end marker) rather
 * than a fixed count, so a slow path still ends in time. Each figure is
 * the median of RUNS runs. Prints `name value unit` lines; never judges
 * the numbers. Exits 1 only when an operation failed.
 *
 * Processes: every producer is a dmp process (this binary re-entered
 * through dmp_init, which must therefore come first in main). Run it with
 * DMP_AGENT naming a cluster node's local socket (tests/bench/run.sh
 * does) so the queue is that node's and the remote case has a second node;
 * without a cluster the remote case is skipped with a note.
 */
#define _GNU_SOURCE
#include <dmp.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "bench_common.h"

#define RUNS 3
#define LOCAL_SECONDS 0.4  /* each same-host run: about 1 M small items */
#define REMOTE_SECONDS 0.5 /* each remote run: one request per put */

enum { MODE_BYTES = 0, MODE_STR = 1 };

static double
s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
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

static double
s_arg_double(const dmp_value_t *args, int i)
{
    double v = 0;
    dmp_value_get_double(dmp_list_get(args, i), &v);
    return v;
}

/* ---- the dmp side ------------------------------------------------------ */

/* args: [queue, size, seconds, mode]. Puts items of `size` bytes (or str
 * values of `size` characters) for `seconds`, then the end marker: an
 * empty item (bytes) or None (str). The clock is read every 64 puts. */
DMP_TARGET(producer)
{
    dmp_queue_t *q;
    if (dmp_queue_from_value(dmp_list_get(args, 0), &q) != 0)
        return 2;
    size_t size = (size_t)s_arg_int(args, 1);
    double until = s_now() + s_arg_double(args, 2);
    int mode = (int)s_arg_int(args, 3);
    char *buf = malloc(size + 1);
    if (!buf)
        return 3;
    memset(buf, 'x', size);
    buf[size] = '\0';
    dmp_value_t *item = mode == MODE_STR ? dmp_str(buf) : NULL;
    int rc = 0;
    for (long n = 0; rc == 0; n++) {
        if ((n & 63) == 0 && s_now() >= until)
            break;
        rc = mode == MODE_STR ? dmp_queue_put(q, item, DMP_FOREVER)
                              : dmp_queue_put_bytes(q, buf, size, DMP_FOREVER);
    }
    if (rc == 0) {
        dmp_value_t *end = dmp_none();
        rc = mode == MODE_STR ? dmp_queue_put(q, end, DMP_FOREVER)
                              : dmp_queue_put_bytes(q, "", 0, DMP_FOREVER);
        dmp_value_destroy(&end);
    }
    if (rc)
        fprintf(stderr, "bench_queue: producer: put: %s\n", dmp_strerror(rc));
    dmp_value_destroy(&item);
    free(buf);
    dmp_queue_destroy(&q);
    return rc ? 4 : 0;
}

typedef struct {
    const char *label; /* in metric names */
    size_t size;       /* payload bytes per item */
    int mode;          /* MODE_BYTES or MODE_STR */
} s_case_t;

/* One run: msg/s with the producer on `node` ("local" or a node name),
 * or -1 on failure (said on stderr). */
static double
s_run(const s_case_t *c, const char *node, double seconds)
{
    dmp_queue_t *q;
    int rc = dmp_queue_new(NULL, &q);
    if (rc) {
        fprintf(stderr, "bench_queue: queue: %s\n", dmp_strerror(rc));
        return -1;
    }
    dmp_value_t *args = dmp_list_of(4, dmp_queue_value(q),
                                    dmp_int((int64_t)c->size),
                                    dmp_double(seconds), dmp_int(c->mode));
    dmp_process_t *p = NULL;
    dmp_process_opts_t o = {.target = "producer", .args = args, .node = node};
    double t0 = s_now(), took = 0;
    long got = 0;
    if (!args)
        rc = -ENOMEM;
    if (rc == 0 && (rc = dmp_process_new(&o, &p)) == 0)
        rc = dmp_process_start(p);
    while (rc == 0) {
        double limit = seconds + 30; /* a dead producer ends the run */
        if (c->mode == MODE_STR) {
            dmp_value_t *v = NULL;
            rc = dmp_queue_get(q, &v, limit);
            bool end = rc == 0 && dmp_value_type(v) == DMP_VALUE_NONE;
            if (rc == 0 && !end && dmp_value_len(v) != c->size)
                rc = -EPROTO;
            dmp_value_destroy(&v);
            if (end)
                break;
        } else {
            void *data = NULL;
            size_t len = 0;
            rc = dmp_queue_get_bytes(q, &data, &len, limit);
            dmp_free(data);
            if (rc == 0 && len == 0)
                break;
            if (rc == 0 && len != c->size)
                rc = -EPROTO;
        }
        got++;
    }
    took = s_now() - t0;
    int code = -1;
    if (p && dmp_process_join(p, 30) == 0)
        dmp_process_exitcode(p, &code);
    if (rc || code != 0)
        fprintf(stderr, "bench_queue: %s on %s: %s, producer exit %d\n",
                c->label, node, dmp_strerror(rc), code);
    dmp_process_destroy(&p);
    dmp_value_destroy(&args);
    dmp_queue_destroy(&q);
    return rc == 0 && code == 0 && got > 0 ? (double)got / took : -1;
}

/* The median of RUNS runs, or -1 when one failed. */
static double
s_median(const s_case_t *c, const char *node, double seconds)
{
    double r[RUNS];
    for (int i = 0; i < RUNS; i++)
        if ((r[i] = s_run(c, node, seconds)) < 0)
            return -1;
    qsort(r, RUNS, sizeof r[0], s_cmp);
    return r[RUNS / 2];
}

/* ---- raw ZeroMQ CURVE PUSH/PULL ------------------------------------------ */

/* args: [endpoint, server public key, size, seconds]. A CURVE client
 * PUSH: sends `size`-byte messages for `seconds`, then an empty one. */
DMP_TARGET(zmq_push)
{
    const char *ep = dmp_value_str(dmp_list_get(args, 0), NULL);
    const char *server = dmp_value_str(dmp_list_get(args, 1), NULL);
    size_t size = (size_t)s_arg_int(args, 2);
    double until = s_now() + s_arg_double(args, 3);
    char pub[41], sec[41], buf[4096];
    if (!ep || !server || size > sizeof buf || zmq_curve_keypair(pub, sec))
        return 2;
    memset(buf, 'x', size);
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_PUSH);
    int rc = zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server, 40) ||
             zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, 40) ||
             zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, 40) ||
             zmq_connect(s, ep);
    for (long n = 0; rc == 0; n++) {
        if ((n & 63) == 0 && s_now() >= until)
            break;
        rc = zmq_send(s, buf, size, 0) < 0;
    }
    if (rc == 0)
        rc = zmq_send(s, "", 0, 0) < 0;
    zmq_close(s); /* lingers until everything is delivered */
    zmq_ctx_term(ctx);
    return rc ? 3 : 0;
}


/* One run of PULL (CURVE server, here) <- PUSH (a dmp process): msg/s,
 * or -1. */
static double
s_zmq_run(size_t size, double seconds)
{
    char bind[128], node[256];
    s_raw_where(bind, node);
    char pub[41], sec[41], ep[256];
    size_t eplen = sizeof ep;
    if (zmq_curve_keypair(pub, sec))
        return -1;
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_PULL);
    int one = 1, timeout = (int)(seconds * 1000) + 30000;
    int rc = zmq_setsockopt(s, ZMQ_CURVE_SERVER, &one, sizeof one) ||
             zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, 40) ||
             zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, sizeof timeout) ||
             zmq_bind(s, bind) ||
             zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &eplen);
    dmp_value_t *args = rc ? NULL
                           : dmp_list_of(4, dmp_str(ep), dmp_str(pub),
                                         dmp_int((int64_t)size),
                                         dmp_double(seconds));
    dmp_process_t *p = NULL;
    dmp_process_opts_t o = {.target = "zmq_push", .args = args,
                            .node = node};
    double t0 = s_now();
    long got = 0;
    if (!args || dmp_process_new(&o, &p) || dmp_process_start(p))
        rc = -1;
    char buf[4096];
    while (rc == 0) {
        int n = zmq_recv(s, buf, sizeof buf, 0);
        if (n < 0)
            rc = -1;
        else if (n == 0)
            break;
        else
            got++;
    }
    double took = s_now() - t0;
    int code = -1;
    if (p && dmp_process_join(p, 30) == 0)
        dmp_process_exitcode(p, &code);
    dmp_process_destroy(&p);
    dmp_value_destroy(&args);
    zmq_close(s);
    zmq_ctx_term(ctx);
    if (rc || code)
        fprintf(stderr, "bench_queue: zmq push/pull: %s, pusher exit %d\n",
                rc ? zmq_strerror(zmq_errno()) : "ok", code);
    return rc == 0 && code == 0 && got > 0 ? (double)got / took : -1;
}

/* ---- main -------------------------------------------------------------- */


int
main(void)
{
    int rc = dmp_init(); /* in a producer, this runs its target */
    if (rc) {
        fprintf(stderr, "bench_queue: dmp_init: %s\n", dmp_strerror(rc));
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    int failures = 0;
    const s_case_t local[] = {
        {"bytes_64B", 64, MODE_BYTES},
        {"str_64B", 64, MODE_STR},
        {"bytes_4KiB", 4096, MODE_BYTES},
        {"str_4KiB", 4096, MODE_STR},
    };
    printf("# 1 producer process -> 1 consumer process, median of %d runs "
           "of %.1f s (remote: %.1f s), queue on node %s\n",
           RUNS, LOCAL_SECONDS, REMOTE_SECONDS, dmp_current_node());
    for (size_t i = 0; i < sizeof local / sizeof local[0]; i++) {
        double rate = s_median(&local[i], "local", LOCAL_SECONDS);
        if (rate < 0) {
            printf("# queue_%s: failed\n", local[i].label);
            failures++;
            continue;
        }
        printf("queue_%s_rate %.0f msg/s\n", local[i].label, rate);
        printf("queue_%s_bw %.1f MB/s\n", local[i].label,
               rate * (double)local[i].size / 1e6);
    }

    char other[256];
    s_other_node(other, sizeof other);
    if (other[0]) {
        const s_case_t remote = {"remote_put_64B", 64, MODE_BYTES};
        double rate = s_median(&remote, other, REMOTE_SECONDS);
        if (rate < 0) {
            printf("# queue_remote_put_64B: failed\n");
            failures++;
        } else {
            printf("# remote: producer on %s, queue owned by %s\n", other,
                   dmp_current_node());
            printf("queue_remote_put_64B_rate %.0f msg/s\n", rate);
        }
    } else {
        printf("# no second node alive: queue_remote_put_64B skipped\n");
    }

    double r[RUNS];
    bool ok = true;
    for (int i = 0; i < RUNS && ok; i++)
        ok = (r[i] = s_zmq_run(64, REMOTE_SECONDS)) > 0;
    if (ok) {
        qsort(r, RUNS, sizeof r[0], s_cmp);
        printf("zmq_curve_pushpull_64B_rate %.0f msg/s\n", r[RUNS / 2]);
    } else {
        printf("# zmq_curve_pushpull_64B: failed\n");
        failures++;
    }
    dmp_fini();
    return failures ? 1 : 0;
}
