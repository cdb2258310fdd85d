/*
 * bench_shared.c - Value and its lock through the public API, beside what
 * they are compared with.
 *
 *   shared_lock_incr_2proc_rate  increments/s: two processes on this host,
 *       each doing `with v.get_lock(): v.value += 1` (dmp_lock_acquire,
 *       get_int, set_int, dmp_lock_release) as fast as they can on one
 *       Value('i'); Python's is py_shared.py (py_shared_lock_incr_2proc_rate)
 *   shared_lock_incr_1proc_rate  the same from one process (no contention)
 *   shared_add_2proc_rate  dmp_shared_add(v, 0, 1) from two processes (no
 *       lock: beyond Python)
 *   shared_remote_lock_incr_{median,p99} us, shared_remote_lock_incr_rate
 *       increments/s: one process on another node (the second in
 *       dmp_nodes) doing the same increment on a Value owned by this node:
 *       each goes through its agent to the owner. Compare with a raw
 *       ZeroMQ CURVE request/reply round trip (zmq_curve_reqrep_rtt_64B,
 *       printed by bench_pipe)
 *   shared_remote_add_median us: an add from there
 *
 * Same-host runs: both children start, say they are ready, and wait for
 * the parent's go (a RawValue flag); the clock runs from the go to both
 * children's exit, for a fixed count each. Each figure is the median of
 * RUNS runs. Prints `name value unit` lines; never judges the numbers.
 * Exits 1 only when an operation failed.
 *
 * Processes are dmp processes (this binary re-entered through dmp_init,
 * which must therefore come first in main). Run it with DMP_AGENT naming a
 * cluster node's local socket (tests/bench/run.sh does) for the remote
 * case; without a cluster it is skipped with a note.
 */
#define _GNU_SOURCE
#include <dmp.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_common.h"

#define RUNS 3
#define LOCAL_INCRS 2000000 /* per process: about 0.1 to 0.5 s */
#define REMOTE_INCRS 2000   /* one round trip each */

enum { MODE_LOCK = 0, MODE_ADD = 1 };

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

/* One `with v.get_lock(): v.value += 1`. */
static int
s_incr(dmp_shared_t *v, dmp_lock_t *lock)
{
    int rc = dmp_lock_acquire(lock, DMP_FOREVER);
    if (rc && rc != DMP_EOWNERDEAD)
        return rc;
    int64_t x = 0;
    rc = dmp_shared_get_int(v, 0, &x);
    if (rc == 0)
        rc = dmp_shared_set_int(v, 0, x + 1);
    int rrc = dmp_lock_release(lock);
    return rc ? rc : rrc;
}

/* args: [V, FLAGS, n, mode]. FLAGS (RawArray('q', 2)): [0] counts ready
 * children, [1] is the parent's go. Then n increments (or adds). */
DMP_TARGET(incrementer)
{
    dmp_shared_t *v = NULL, *flags = NULL;
    int64_t n = 0, mode = 0;
    if (dmp_shared_from_value(dmp_list_get(args, 0), &v) != 0 ||
        dmp_shared_from_value(dmp_list_get(args, 1), &flags) != 0 ||
        dmp_value_get_int(dmp_list_get(args, 2), &n) != 0 ||
        dmp_value_get_int(dmp_list_get(args, 3), &mode) != 0)
        return 2;
    dmp_lock_t *lock = dmp_shared_get_lock(v);
    int rc = dmp_shared_add(flags, 0, 1, NULL);
    for (int64_t go = 0; rc == 0 && !go;)
        rc = dmp_shared_get_int(flags, 1, &go);
    for (int64_t i = 0; rc == 0 && i < n; i++)
        rc = mode == MODE_ADD ? dmp_shared_add(v, 0, 1, NULL)
                              : s_incr(v, lock);
    if (rc)
        fprintf(stderr, "bench_shared: incrementer: %s\n", dmp_strerror(rc));
    dmp_shared_destroy(&v);
    dmp_shared_destroy(&flags);
    return rc ? 3 : 0;
}

/* One run of `procs` local processes doing n each: increments/s, or -1. */
static double
s_local_run(int procs, int64_t n, int mode)
{
    dmp_shared_t *v = NULL, *flags = NULL;
    int rc = dmp_shared_value_new('i', NULL, 1, &v);
    if (rc == 0)
        rc = dmp_shared_array_new('q', 2, NULL, 0, &flags);
    dmp_value_t *args = rc ? NULL
                           : dmp_list_of(4, dmp_shared_value(v),
                                         dmp_shared_value(flags), dmp_int(n),
                                         dmp_int(mode));
    dmp_process_t *p[2] = {NULL, NULL};
    if (!args && rc == 0)
        rc = -ENOMEM;
    for (int k = 0; rc == 0 && k < procs; k++) {
        dmp_process_opts_t o = {.target = "incrementer", .args = args,
                                .node = "local"};
        if ((rc = dmp_process_new(&o, &p[k])) == 0)
            rc = dmp_process_start(p[k]);
    }
    double deadline = s_now() + 30;
    for (int64_t ready = 0; rc == 0 && ready < procs; ) {
        rc = dmp_shared_get_int(flags, 0, &ready);
        if (s_now() > deadline)
            rc = -ETIMEDOUT;
    }
    double t0 = s_now();
    if (rc == 0)
        rc = dmp_shared_set_int(flags, 1, 1);
    int bad = 0;
    for (int k = 0; k < procs; k++) {
        int code = -1;
        if (p[k] && dmp_process_join(p[k], 60) == 0)
            dmp_process_exitcode(p[k], &code);
        bad |= code != 0;
        dmp_process_destroy(&p[k]);
    }
    double took = s_now() - t0;
    int64_t total = 0;
    if (rc == 0)
        rc = dmp_shared_get_int(v, 0, &total);
    if (rc == 0 && total != procs * n)
        rc = -EPROTO;
    if (rc || bad)
        fprintf(stderr, "bench_shared: %d local processes: %s, total %lld\n",
                procs, dmp_strerror(rc), (long long)total);
    dmp_value_destroy(&args);
    dmp_shared_destroy(&v);
    dmp_shared_destroy(&flags);
    return rc || bad ? -1 : (double)total / took;
}

static double
s_local_median(int procs, int64_t n, int mode)
{
    double r[RUNS];
    for (int i = 0; i < RUNS; i++)
        if ((r[i] = s_local_run(procs, n, mode)) < 0)
            return -1;
    qsort(r, RUNS, sizeof r[0], s_cmp);
    return r[RUNS / 2];
}

/* ---- from another node --------------------------------------------------- */

/* args: [V, TIMES, n]: n increments and n adds, each timed into
 * TIMES (RawArray('d', 2n): increments first). */
DMP_TARGET(remote_incrementer)
{
    dmp_shared_t *v = NULL, *times = NULL;
    int64_t n = 0;
    if (dmp_shared_from_value(dmp_list_get(args, 0), &v) != 0 ||
        dmp_shared_from_value(dmp_list_get(args, 1), &times) != 0 ||
        dmp_value_get_int(dmp_list_get(args, 2), &n) != 0)
        return 2;
    dmp_lock_t *lock = dmp_shared_get_lock(v);
    double *t = calloc((size_t)(2 * n), sizeof *t);
    int rc = t ? 0 : -ENOMEM;
    for (int64_t i = 0; rc == 0 && i < n; i++) {
        double t0 = s_now();
        rc = s_incr(v, lock);
        t[i] = s_now() - t0;
    }
    for (int64_t i = 0; rc == 0 && i < n; i++) {
        double t0 = s_now();
        rc = dmp_shared_add(v, 0, 1, NULL);
        t[n + i] = s_now() - t0;
    }
    if (rc == 0) /* one write of the whole array at the end */
        rc = dmp_shared_write(times, 0, (size_t)(2 * n), t);
    if (rc)
        fprintf(stderr, "bench_shared: remote: %s\n", dmp_strerror(rc));
    free(t);
    dmp_shared_destroy(&v);
    dmp_shared_destroy(&times);
    return rc ? 3 : 0;
}

static void
s_report_us(const char *name, double *t, size_t n)
{
    qsort(t, n, sizeof *t, s_cmp);
    printf("%s_median %.1f us\n", name, t[n / 2] * 1e6);
    printf("%s_p99 %.1f us\n", name, t[n * 99 / 100] * 1e6);
}

static int
s_remote(const char *node)
{
    const int64_t n = REMOTE_INCRS;
    dmp_shared_t *v = NULL, *times = NULL;
    int rc = dmp_shared_value_new('i', NULL, 1, &v);
    if (rc == 0)
        rc = dmp_shared_array_new('d', (size_t)(2 * n), NULL, 0, &times);
    dmp_value_t *args = rc ? NULL
                           : dmp_list_of(3, dmp_shared_value(v),
                                         dmp_shared_value(times), dmp_int(n));
    dmp_process_t *p = NULL;
    dmp_process_opts_t o = {.target = "remote_incrementer", .args = args,
                            .node = node};
    if (!args && rc == 0)
        rc = -ENOMEM;
    if (rc == 0 && (rc = dmp_process_new(&o, &p)) == 0)
        rc = dmp_process_start(p);
    int code = -1;
    if (p && dmp_process_join(p, 120) == 0)
        dmp_process_exitcode(p, &code);
    double *t = malloc((size_t)(2 * n) * sizeof *t);
    int64_t total = 0;
    if (rc == 0 && code == 0 && t &&
        (rc = dmp_shared_read(times, 0, (size_t)(2 * n), t)) == 0 &&
        (rc = dmp_shared_get_int(v, 0, &total)) == 0 && total == 2 * n) {
        double sum = 0;
        for (int64_t i = 0; i < n; i++)
            sum += t[i];
        printf("# remote: %lld increments on %s, Value owned by %s\n",
               (long long)n, node, dmp_current_node());
        printf("shared_remote_lock_incr_rate %.0f incr/s\n", (double)n / sum);
        s_report_us("shared_remote_lock_incr", t, (size_t)n);
        s_report_us("shared_remote_add", t + n, (size_t)n);
    } else {
        fprintf(stderr, "bench_shared: remote on %s: %s, exit %d, total "
                "%lld\n", node, dmp_strerror(rc), code, (long long)total);
        rc = rc ? rc : -EPROTO;
    }
    free(t);
    dmp_process_destroy(&p);
    dmp_value_destroy(&args);
    dmp_shared_destroy(&v);
    dmp_shared_destroy(&times);
    return rc;
}

int
main(void)
{
    int rc = dmp_init(); /* in a child, this runs its target */
    if (rc) {
        fprintf(stderr, "bench_shared: dmp_init: %s\n", dmp_strerror(rc));
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    int failures = 0;
    printf("# Value('i') on node %s, median of %d runs of %d increments "
           "per process\n", dmp_current_node(), RUNS, LOCAL_INCRS);
    static const struct {
        const char *name;
        int procs, mode;
    } cases[] = {
        {"shared_lock_incr_2proc_rate", 2, MODE_LOCK},
        {"shared_lock_incr_1proc_rate", 1, MODE_LOCK},
        {"shared_add_2proc_rate", 2, MODE_ADD},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double rate = s_local_median(cases[i].procs, LOCAL_INCRS,
                                     cases[i].mode);
        if (rate < 0) {
            printf("# %s: failed\n", cases[i].name);
            failures++;
        } else {
            printf("%s %.0f incr/s\n", cases[i].name, rate);
        }
    }
    char other[256];
    s_other_node(other, sizeof other);
    if (other[0]) {
        if (s_remote(other) != 0) {
            printf("# shared_remote_lock_incr: failed\n");
            failures++;
        }
    } else {
        printf("# no second node alive: shared_remote_* skipped\n");
    }
    dmp_fini();
    return failures ? 1 : 0;
}
