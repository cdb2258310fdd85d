/*
 * bench_pool.c - Pool throughput beside Python's (py_pool.py, same run),
 * as DESIGN.md §8 asks: map of a trivial function with the default
 * chunksize (>= Python), with chunksize 1 (>= 5x Python), apply_async of
 * a trivial function (>= 5x Python); and a CPU-bound map over the three
 * nodes of the bench cluster against the same map on one node.
 *
 * Uses whatever dmp_init connects to (run.sh: node1's local socket). The
 * pools have the default size, the cores of their nodes, as Python's has
 * os.cpu_count() workers. Each figure is the median of RUNS runs after a
 * warm-up (workers started, times per item learned).
 *
 * The three nodes of the bench cluster share this machine's cores: the
 * CPU-bound speedup is bounded by that (about 1 on one host); on three
 * hosts it would approach 3.
 */
#define _GNU_SOURCE
#include <dmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define RUNS 3
#define N_MAP 1000000       /* trivial map, default chunksize */
#define N_CS1 50000         /* trivial map, chunksize 1 */
#define N_APPLY 20000       /* apply_async */
#define CPU_ITEMS 48        /* CPU-bound items ... */
#define CPU_LOOPS 6000000   /* ... of about 20 ms each here */

DMP_TASK(nop)
{
    *result = dmp_value_copy(arg);
    return 0;
}

DMP_TASK(cpu)
{
    int64_t x = 0;
    dmp_value_get_int(arg, &x);
    uint64_t h = (uint64_t)x;
    for (int i = 0; i < CPU_LOOPS; i++)
        h = h * 6364136223846793005ULL + 1442695040888963407ULL;
    *result = dmp_int((int64_t)(h >> 1));
    return 0;
}

static double
s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
s_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double
s_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof v[0], s_cmp);
    return v[n / 2];
}

/* Seconds a map of items takes (-1 on error). */
static double
s_map(dmp_pool_t *pool, const char *task, const dmp_value_t *items,
      size_t chunksize)
{
    dmp_value_t *res = NULL;
    double t0 = s_now();
    int rc = dmp_pool_map(pool, task, items, chunksize, &res);
    double dt = s_now() - t0;
    if (rc || dmp_value_len(res) != dmp_value_len(items)) {
        fprintf(stderr, "bench_pool: map %s: %s %s\n", task,
                dmp_strerror(rc), dmp_pool_errmsg(pool));
        dt = -1;
    }
    dmp_value_destroy(&res);
    return dt;
}

static double
s_apply_async(dmp_pool_t *pool, int n)
{
    dmp_async_t **ars = calloc((size_t)n, sizeof *ars);
    dmp_value_t *args = dmp_list_of(1, dmp_int(7)), *res;
    int bad = 0;
    double t0 = s_now();
    for (int i = 0; i < n; i++)
        bad |= dmp_pool_apply_async(pool, "nop", args, NULL, NULL, &ars[i]);
    for (int i = 0; i < n; i++) {
        if (ars[i] && dmp_async_get(ars[i], &res, 60) == 0)
            dmp_value_destroy(&res);
        else
            bad = 1;
        dmp_async_destroy(&ars[i]);
    }
    double dt = s_now() - t0;
    dmp_value_destroy(&args);
    free(ars);
    if (bad)
        fprintf(stderr, "bench_pool: apply_async failed\n");
    return bad ? -1 : dt;
}

static int
s_rates(void)
{
    dmp_pool_t *pool;
    int rc = dmp_pool_new(NULL, &pool);
    if (rc) {
        fprintf(stderr, "bench_pool: pool: %s\n", dmp_strerror(rc));
        return 1;
    }
    printf("# pool of %d workers on this node\n", dmp_pool_processes(pool));
    dmp_value_t *big = dmp_list_range(0, N_MAP);
    dmp_value_t *cs1 = dmp_list_range(0, N_CS1);
    dmp_value_t *warm = dmp_list_range(0, 2000);
    double a[RUNS], b[RUNS], c[RUNS];
    int bad = s_map(pool, "nop", warm, 1) < 0 || s_apply_async(pool, 500) < 0;
    for (int r = 0; r < RUNS && !bad; r++) {
        a[r] = s_map(pool, "nop", big, 0);
        b[r] = s_map(pool, "nop", cs1, 1);
        c[r] = s_apply_async(pool, N_APPLY);
        bad = a[r] < 0 || b[r] < 0 || c[r] < 0;
    }
    if (!bad) {
        printf("pool_map_trivial_rate %.0f task/s\n", N_MAP / s_median(a, RUNS));
        printf("pool_map_cs1_rate %.0f task/s\n", N_CS1 / s_median(b, RUNS));
        printf("pool_apply_async_rate %.0f task/s\n",
               N_APPLY / s_median(c, RUNS));
    }
    dmp_value_destroy(&big);
    dmp_value_destroy(&cs1);
    dmp_value_destroy(&warm);
    dmp_pool_destroy(&pool);
    return bad;
}

/* The CPU-bound map on `placement`: seconds, and the workers in *n. */
static double
s_cpu(const char *placement, int *n)
{
    dmp_pool_t *pool;
    dmp_pool_opts_t o = {.placement = placement};
    int rc = dmp_pool_new(&o, &pool);
    if (rc) {
        fprintf(stderr, "bench_pool: pool on %s: %s\n", placement,
                dmp_strerror(rc));
        return -1;
    }
    *n = dmp_pool_processes(pool);
    dmp_value_t *items = dmp_list_range(0, CPU_ITEMS);
    dmp_value_t *warm = dmp_list_range(0, *n);
    double t[RUNS];
    int bad = s_map(pool, "cpu", warm, 1) < 0;
    for (int r = 0; r < RUNS && !bad; r++)
        bad = (t[r] = s_map(pool, "cpu", items, 1)) < 0;
    dmp_value_destroy(&items);
    dmp_value_destroy(&warm);
    dmp_pool_destroy(&pool);
    return bad ? -1 : s_median(t, RUNS);
}

int
main(void)
{
    if (dmp_init() != 0) { /* in a worker, this runs it instead */
        fprintf(stderr, "bench_pool: dmp_init failed\n");
        return 1;
    }
    int bad = s_rates();
    int n1 = 0, n3 = 0;
    double one = s_cpu("local", &n1), three = s_cpu("spread", &n3);
    if (one > 0 && three > 0) {
        printf("# CPU-bound map of %d items: %d workers on 1 node %.2f s, "
               "%d workers on 3 nodes %.2f s (the nodes share this "
               "machine's cores)\n", CPU_ITEMS, n1, one, n3, three);
        printf("pool_cpu_1node %.3f s\n", one);
        printf("pool_cpu_3nodes %.3f s\n", three);
        printf("pool_cpu_speedup_3nodes %.2f x\n", one / three);
    } else {
        bad = 1;
    }
    dmp_fini();
    return bad;
}
