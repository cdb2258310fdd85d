/*
 * bench_ring.c - the shared-memory ring, one producer process to one
 * consumer process: the same-host data plane of Queue and Pipe.
 *
 *   ring_queue_{64B,4KiB}_rate   items per second, put in one process and
 *                                got (into a fresh buffer, then freed) in
 *                                the other
 *   ring_queue_{64B,4KiB}_bw     the same in MB/s of payload
 *
 * The counterpart of tests/bench/py_queue.py (multiprocessing.Queue, same
 * sizes, same clocking: from before the producer starts to the last get).
 * Each figure is the median of RUNS runs. Prints `name value unit` lines;
 * never judges the numbers. Exits 1 only when an operation failed.
 *
 * Processes: the producer is forked (no ZeroMQ context or thread exists in
 * this binary) and maps the ring by name, as a separate process would.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define RUNS 5

typedef struct {
    const char *label; /* in metric names */
    size_t size;       /* payload bytes per item */
    long items;        /* per run */
} s_case_t;

static int
s_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The producer: puts `items` items of `size` bytes, then exits. */
static void
s_produce(const char *name, size_t size, long items)
{
    dmp__ring_t *ring = NULL;
    if (dmp__ring_open(name, &ring) != 0)
        _exit(2);
    uint8_t *buf = malloc(size);
    if (!buf)
        _exit(3);
    memset(buf, 0x5a, size);
    for (long i = 0; i < items; i++) {
        memcpy(buf, &i, sizeof i);
        if (dmp__ring_put(ring, buf, size, DMP_FOREVER) != 0)
            _exit(4);
    }
    dmp__ring_close(&ring);
    _exit(0);
}

/* One run: items per second, or a negative value on failure. */
static double
s_run(const s_case_t *c)
{
    char name[64];
    snprintf(name, sizeof name, "/dmp-bench-ring-%d", (int)getpid());
    dmp__ring_unlink(name);
    dmp__ring_t *ring = NULL;
    if (dmp__ring_create(name, NULL, &ring) != 0)
        return -1;

    double t0 = dmp__now();
    pid_t pid = fork();
    if (pid == 0)
        s_produce(name, c->size, c->items);
    double rate = -1;
    long got = 0;
    if (pid > 0) {
        for (; got < c->items; got++) {
            uint8_t *data = NULL;
            size_t len = 0;
            if (dmp__ring_get(ring, &data, &len, 10.0) != 0)
                break;
            long seq;
            memcpy(&seq, data, sizeof seq);
            dmp__free(data);
            if (len != c->size || seq != got)
                break;
        }
        double took = dmp__now() - t0;
        int st = 0;
        if (got < c->items)
            kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        if (got == c->items && WIFEXITED(st) && WEXITSTATUS(st) == 0)
            rate = (double)c->items / took;
    }
    dmp__ring_close(&ring);
    dmp__ring_unlink(name);
    return rate;
}

int
main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const s_case_t cases[] = {
        {"64B", 64, 2000000},
        {"4KiB", 4096, 400000},
    };
    int failures = 0;
    printf("# 1 producer process -> 1 consumer process, median of %d runs\n",
           RUNS);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double rates[RUNS];
        bool ok = true;
        for (int r = 0; r < RUNS && ok; r++) {
            rates[r] = s_run(&cases[i]);
            ok = rates[r] > 0;
        }
        if (!ok) {
            printf("# ring_queue_%s: failed\n", cases[i].label);
            failures++;
            continue;
        }
        qsort(rates, RUNS, sizeof rates[0], s_cmp_double);
        double rate = rates[RUNS / 2];
        printf("ring_queue_%s_rate %.0f msg/s\n", cases[i].label, rate);
        printf("ring_queue_%s_bw %.1f MB/s\n", cases[i].label,
               rate * (double)cases[i].size / 1e6);
    }
    return failures ? 1 : 0;
}
