/*
 * test_pool.c - Pool with real agents, against Python's documented
 * behaviour, and beyond it: workers and nodes that die mid-map.
 *
 * On one host (the embedded agent): map (order, Python's default
 * chunksize, chunks run whole by one worker), imap in order and
 * imap_unordered as results complete, starmap, apply and apply_async with
 * AsyncResult (get with a timeout, wait, ready, successful) and callbacks,
 * an error in a task raised from get() with its code and text, an
 * initializer run once in each worker, maxtasksperchild replacing workers,
 * close/join/terminate (nothing hangs), a task that keeps killing its
 * worker (DMP_EWORKER naming it), an initializer that fails (calls fail,
 * never hang), a hung task and a stopped worker (task_timeout), and one
 * worker killed with SIGKILL in the middle of a 100k-item map and of a
 * 100k-item imap: every result, once, in order.
 *
 * On a cluster of three (this program on node1's ipc endpoint, workers
 * spread): workers on every node, a map across hosts, and node3's agent
 * killed with SIGKILL in the middle of a 100k-item map: the full, correct,
 * ordered result, and no worker left behind.
 *
 * After each group: no worker process of this executable is left (live
 * processes running our binary that are not fork servers).
 *
 * This binary is also the workers' program: main() hands over to
 * dmp_init() first when DMP_CHILD or DMP_ZYGOTE says so.
 *
 * DMP_TEST_GROUPS (a substring of group names) and DMP_TEST_FILTER
 * (cmocka's test name pattern) run a part; DMP_TEST_POOL_ITEMS sizes the
 * kill tests (100000 by default).
 */
#define _GNU_SOURCE
#include "dmp_test.h"

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HEARTBEAT 0.2
#define LIVENESS 3
#define KILL_ITEMS_DEFAULT 100000
#define SPIN_US 25.0   /* per item in the kill tests: a map of a few s */
#define GONE_WAIT 10.0 /* workers of a lost node notice within this */

static struct {
    dmp_test_sandbox_t *sb;
    dmp_test_agent_t *agents[3];
    char names[3][64];
    bool cluster;
} s_c;

static double
s_now(void)
{
    return dmp_test_now();
}

static void
s_sleep(double seconds)
{
    struct timespec ts = {(time_t)seconds,
                          (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int64_t
s_int(const dmp_value_t *v)
{
    int64_t x = -1;
    dmp_value_get_int(v, &x);
    return x;
}

static size_t
s_kill_items(void)
{
    const char *env = getenv("DMP_TEST_POOL_ITEMS");
    return env && atol(env) > 0 ? (size_t)atol(env) : KILL_ITEMS_DEFAULT;
}

/* ---- the tasks and initializers of this executable ---------------------- */

DMP_TASK(square)
{
    int64_t x;
    if (dmp_value_get_int(arg, &x) != 0)
        return -EINVAL;
    *result = dmp_int(x * x);
    return 0;
}

/* x -> [x, pid, how many items this worker ran before] */
DMP_TASK(whose)
{
    static int64_t seq;
    int64_t x = dmp_value_type(arg) == DMP_VALUE_LIST
                    ? s_int(dmp_list_get(arg, 0))
                    : s_int(arg);
    *result = dmp_list_of(3, dmp_int(x), dmp_int(getpid()), dmp_int(seq++));
    return 0;
}

/* Fails on 7 with code -42 and a text, as a Python task raises. */
DMP_TASK(fail7)
{
    int64_t x = dmp_value_type(arg) == DMP_VALUE_LIST
                    ? s_int(dmp_list_get(arg, 0))
                    : s_int(arg);
    if (x == 7) {
        *result = dmp_str("seven is not welcome");
        return -42;
    }
    *result = dmp_int(x);
    return 0;
}

/* [ms] (apply) or ms (map): sleeps that long, returns ms. */
DMP_TASK(nap)
{
    int64_t ms = dmp_value_type(arg) == DMP_VALUE_LIST
                     ? s_int(dmp_list_get(arg, 0))
                     : s_int(arg);
    s_sleep((double)ms / 1000.0);
    *result = dmp_int(ms);
    return 0;
}

/* bytes b -> bytes of 2 x len(b) + 1: b, b reversed, then the first
 * byte again (a result larger than the item, built from all of it). */
DMP_TASK(double_bytes)
{
    size_t len = 0;
    const uint8_t *b = dmp_value_bytes(arg, &len);
    if (!b)
        return -EINVAL;
    uint8_t *out = malloc(2 * len + 1);
    if (!out)
        return -ENOMEM;
    memcpy(out, b, len);
    for (size_t i = 0; i < len; i++)
        out[len + i] = b[len - 1 - i];
    out[2 * len] = len ? b[0] : 0;
    *result = dmp_bytes(out, 2 * len + 1);
    free(out);
    return *result ? 0 : -ENOMEM;
}

/* x -> [x, pid] after 30 ms: every worker gets some of a few. */
DMP_TASK(pid_nap)
{
    s_sleep(0.03);
    *result = dmp_list_of(2, dmp_int(s_int(arg)), dmp_int(getpid()));
    return 0;
}

/* starmap: [a, b] -> a + b */
DMP_TASK(add)
{
    if (dmp_value_type(arg) != DMP_VALUE_LIST || dmp_value_len(arg) != 2)
        return -EINVAL;
    *result = dmp_int(s_int(dmp_list_get(arg, 0)) +
                      s_int(dmp_list_get(arg, 1)));
    return 0;
}

/* x -> [2x, pid, node] after SPIN_US of work. */
DMP_TASK(spin)
{
    double t0 = s_now();
    while (s_now() - t0 < SPIN_US * 1e-6)
        ;
    *result = dmp_list_of(3, dmp_int(2 * s_int(arg)), dmp_int(getpid()),
                          dmp_str(dmp_current_node()));
    return 0;
}

/* Item 37 kills its own worker, every time. */
DMP_TASK(die37)
{
    if (s_int(arg) == 37)
        raise(SIGKILL);
    *result = dmp_int(s_int(arg));
    return 0;
}

/* args [Q]: puts this worker's name there. */
DMP_TARGET(init_report)
{
    dmp_queue_t *q;
    if (dmp_queue_from_value(dmp_list_get(args, 0), &q) != 0)
        return 2;
    dmp_value_t *name = dmp_list_of(2, dmp_str(dmp_current_process_name()),
                                    dmp_int(getpid()));
    int rc = dmp_queue_put(q, name, 5.0);
    dmp_value_destroy(&name);
    dmp_queue_close(q);
    dmp_queue_destroy(&q);
    return rc ? 3 : 0;
}

DMP_TARGET(init_fails)
{
    (void)args;
    return 3;
}

/* ---- helpers --------------------------------------------------------------- */

static size_t s_worker_pids(dmp_pool_t *pool, int64_t *pids, size_t max);

static dmp_pool_t *
s_pool(int processes, const char *placement)
{
    dmp_pool_t *pool = NULL;
    dmp_pool_opts_t o = {.processes = processes, .placement = placement};
    assert_dmp_ok(dmp_pool_new(&o, &pool));
    return pool;
}

/* Whether pid runs our executable and is a pool worker (not a zygote). */
static bool
s_is_our_worker(pid_t pid)
{
    char path[64], exe[PATH_MAX], self[PATH_MAX];
    snprintf(path, sizeof path, "/proc/%d/exe", (int)pid);
    ssize_t n = readlink(path, exe, sizeof exe - 1);
    ssize_t m = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0 || m <= 0)
        return false; /* gone, or a zombie */
    exe[n] = self[m] = '\0';
    if (strcmp(exe, self) != 0 || pid == getpid())
        return false;
    snprintf(path, sizeof path, "/proc/%d/environ", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    char buf[8192];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = '\0';
    bool worker = false;
    for (size_t i = 0; i < len; i += strlen(buf + i) + 1)
        worker |= strncmp(buf + i, "DMP_PROCESS_NAME=SpawnPoolWorker", 32) == 0;
    return worker && dmp_test_pid_alive(pid);
}

static int
s_count_workers(bool print)
{
    DIR *d = opendir("/proc");
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] >= '1' && de->d_name[0] <= '9' &&
            s_is_our_worker((pid_t)atoi(de->d_name))) {
            if (print)
                print_message("# worker left: pid %s\n", de->d_name);
            n++;
        }
    closedir(d);
    return n;
}

static bool
s_no_workers(void *arg)
{
    (void)arg;
    return s_count_workers(false) == 0;
}

/* ---- group set-up ------------------------------------------------------------- */

static int
s_up_embedded(void **state)
{
    (void)state;
    memset(&s_c, 0, sizeof s_c);
    char err[512] = "";
    int rc = dmp_init_opts(NULL, err, sizeof err);
    if (rc)
        print_error("dmp_init: %s\n", err);
    assert_dmp_ok(rc);
    return 0;
}

static int
s_up_cluster(void **state)
{
    (void)state;
    memset(&s_c, 0, sizeof s_c);
    s_c.cluster = true;
    assert_dmp_ok(dmp_test_sandbox_new(&s_c.sb));
    for (size_t i = 0; i < 3; i++) {
        snprintf(s_c.names[i], sizeof s_c.names[i], "p%d-node%zu",
                 (int)getpid(), i + 1);
        assert_dmp_ok(dmp_test_agent_new(s_c.sb, s_c.names[i],
                                         &s_c.agents[i]));
        s_c.agents[i]->heartbeat = HEARTBEAT;
        s_c.agents[i]->liveness = LIVENESS;
    }
    dmp_test_agents_mesh(s_c.agents, 3);
    assert_dmp_ok(dmp_test_agents_start(s_c.agents, 3));
    assert_dmp_ok(dmp_test_init_ipc(s_c.agents[0]));
    return 0;
}

static int
s_down(void **state)
{
    (void)state;
    dmp_fini(); /* terminates and joins any pool a failed test left */
    if (s_c.sb) {
        for (size_t i = 0; i < 3; i++)
            if (s_c.agents[i] && dmp_test_agent_is_running(s_c.agents[i]))
                dmp_test_agent_stop(s_c.agents[i], 5.0);
        dmp_test_sandbox_destroy(&s_c.sb);
    }
    memset(&s_c, 0, sizeof s_c);
    return 0;
}

/* ---- one host ---------------------------------------------------------------- */

/* The happy path, as the guide writes it: map returns results in order. */
static void
test_map_returns_results_in_order(void **state)
{
    (void)state;
    dmp_pool_t *pool = s_pool(2, NULL);
    assert_int_equal(dmp_pool_processes(pool), 2);
    dmp_value_t *items = dmp_list_range(0, 100), *res = NULL;
    for (size_t cs = 0; cs <= 7; cs += 7) {
        assert_dmp_ok(dmp_pool_map(pool, "square", items, cs, &res));
        assert_int_equal(dmp_value_len(res), 100);
        for (int64_t i = 0; i < 100; i++)
            assert_int_equal(s_int(dmp_list_get(res, i)), i * i);
        dmp_value_destroy(&res);
    }
    /* map over nothing is [] */
    dmp_value_t *none = dmp_list();
    assert_dmp_ok(dmp_pool_map(pool, "square", none, 0, &res));
    assert_int_equal(dmp_value_len(res), 0);
    dmp_value_destroy(&res);
    dmp_value_destroy(&none);
    /* bad calls */
    assert_dmp_err(dmp_pool_map(pool, "no_such_task", items, 0, &res),
                   -EINVAL);
    dmp_value_t *notlist = dmp_int(3);
    assert_dmp_err(dmp_pool_map(pool, "square", notlist, 0, &res), -EINVAL);
    assert_dmp_err(dmp_pool_starmap(pool, "add", items, 0, &res), -EINVAL);
    dmp_value_destroy(&notlist);
    dmp_value_destroy(&items);
    dmp_pool_destroy(&pool);
}

/*
 * Python: chunksize, extra = divmod(len(iterable), len(pool) * 4), plus
 * one if extra. Each chunk runs whole, in order, in one worker: the items
 * of a chunk share a pid and come one after another in it.
 */
static void
test_chunks_are_pythons_and_run_whole(void **state)
{
    (void)state;
    dmp_pool_t *pool = s_pool(2, NULL);
    struct {
        size_t n, chunksize, expect;
    } cases[] = {{100, 0, 13}, {16, 0, 2}, {17, 0, 3}, {50, 5, 5}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        dmp_value_t *items = dmp_list_range(0, (int64_t)cases[k].n), *res;
        assert_dmp_ok(dmp_pool_map(pool, "whose", items, cases[k].chunksize,
                                   &res));
        size_t cs = cases[k].expect;
        for (size_t i = 0; i < cases[k].n; i++) {
            const dmp_value_t *r = dmp_list_get(res, (int64_t)i);
            assert_int_equal(s_int(dmp_list_get(r, 0)), (int64_t)i);
            if (i % cs == 0)
                continue; /* a chunk starts */
            const dmp_value_t *prev = dmp_list_get(res, (int64_t)i - 1);
            assert_int_equal(s_int(dmp_list_get(r, 1)),
                             s_int(dmp_list_get(prev, 1)));
            assert_int_equal(s_int(dmp_list_get(r, 2)),
                             s_int(dmp_list_get(prev, 2)) + 1);
        }
        dmp_value_destroy(&res);
        dmp_value_destroy(&items);
    }
    dmp_pool_destroy(&pool);
}

/* imap yields in input order; imap_unordered as results complete. */
static void
test_imap_in_order_and_unordered_as_completed(void **state)
{
    (void)state;
    dmp_pool_t *pool = s_pool(2, NULL);
    /* item 0 takes longest */
    dmp_value_t *items = dmp_list_of(6, dmp_int(400), dmp_int(1), dmp_int(2),
                                     dmp_int(3), dmp_int(4), dmp_int(5));
    dmp_imap_t *it;
    assert_dmp_ok(dmp_pool_imap(pool, "nap", items, 0, &it));
    for (int64_t i = 0; i < 6; i++) {
        dmp_value_t *v;
        assert_dmp_ok(dmp_imap_next(it, &v, 10.0));
        assert_int_equal(s_int(v), s_int(dmp_list_get(items, i)));
        assert_int_equal(dmp_imap_index(it), (size_t)i);
        dmp_value_destroy(&v);
    }
    dmp_value_t *v = NULL;
    assert_dmp_err(dmp_imap_next(it, &v, 1.0), DMP_EEOF);
    assert_dmp_err(dmp_imap_next(it, &v, 1.0), DMP_EEOF);
    dmp_imap_destroy(&it);

    assert_dmp_ok(dmp_pool_imap_unordered(pool, "nap", items, 1, &it));
    int64_t sum = 0, first = -1;
    for (int i = 0; i < 6; i++) {
        assert_dmp_ok(dmp_imap_next(it, &v, 10.0));
        if (first < 0)
            first = s_int(v);
        sum += s_int(v);
        dmp_value_destroy(&v);
    }
    assert_dmp_err(dmp_imap_next(it, &v, 1.0), DMP_EEOF);
    assert_true(first != 400); /* the slow one does not come first */
    assert_int_equal(sum, 415);
    dmp_imap_destroy(&it);

    /* next(timeout) gives TimeoutError while nothing is ready */
    dmp_value_t *slow = dmp_list_of(1, dmp_int(500));
    assert_dmp_ok(dmp_pool_imap(pool, "nap", slow, 0, &it));
    double t0 = s_now();
    assert_dmp_err(dmp_imap_next(it, &v, 0.1), -ETIMEDOUT);
    assert_true(s_now() - t0 >= 0.1 && s_now() - t0 < 0.4);
    assert_dmp_ok(dmp_imap_next(it, &v, 10.0));
    dmp_value_destroy(&v);
    dmp_imap_destroy(&it);
    dmp_value_destroy(&slow);
    dmp_value_destroy(&items);
    dmp_pool_destroy(&pool);
}

static void
test_starmap_passes_each_list_as_the_arguments(void **state)
{
    (void)state;
    dmp_pool_t *pool = s_pool(2, NULL);
    dmp_value_t *items = dmp_list(), *res = NULL;
    for (int i = 0; i < 20; i++)
        dmp_list_append(items, dmp_list_of(2, dmp_int(i), dmp_int(100 * i)));
    assert_dmp_ok(dmp_pool_starmap(pool, "add", items, 3, &res));
    for (int64_t i = 0; i < 20; i++)
        assert_int_equal(s_int(dmp_list_get(res, i)), 101 * i);
    dmp_value_destroy(&res);
    dmp_async_t *ar;
    assert_dmp_ok(dmp_pool_starmap_async(pool, "add", items, 0, NULL, NULL,
                                         &ar));
    assert_dmp_ok(dmp_async_get(ar, &res, 10.0));
    assert_int_equal(s_int(dmp_list_get(res, 19)), 1919);
    dmp_value_destroy(&res);
    dmp_async_destroy(&ar);
    dmp_value_destroy(&items);
    dmp_pool_destroy(&pool);
}

typedef struct {
    pthread_mutex_t lock;
    int calls, rc;
    int64_t value;
    char text[256];
} s_cb_t;

static void
s_callback(int rc, const dmp_value_t *result, const char *errmsg, void *arg)
{
    s_cb_t *cb = arg;
    pthread_mutex_lock(&cb->lock);
    cb->calls++;
    cb->rc = rc;
    if (rc == 0)
        cb->value = dmp_value_type(result) == DMP_VALUE_LIST
                        ? (int64_t)dmp_value_len(result)
                        : s_int(result);
    snprintf(cb->text, sizeof cb->text, "%s", errmsg);
    pthread_mutex_unlock(&cb->lock);
}

static bool
s_called(void *arg)
{
    s_cb_t *cb = arg;
    pthread_mutex_lock(&cb->lock);
    bool called = cb->calls > 0;
    pthread_mutex_unlock(&cb->lock);
    return called;
}

/* apply, apply_async and AsyncResult: get(timeout), wait, ready,
 * successful, and callback / error_callback. */
static void
test_apply_async_result_and_callbacks(void **state)
{
    (void)state;
    dmp_pool_t *pool = s_pool(2, NULL);
    dmp_value_t *args = dmp_list_of(1, dmp_int(300)), *res = NULL;
    assert_dmp_ok(dmp_pool_apply(pool, "nap", args, &res));
    assert_int_equal(s_int(res), 300);
    dmp_value_destroy(&res);

    s_cb_t cb = {.lock = PTHREAD_MUTEX_INITIALIZER};
    dmp_async_t *ar;
    assert_dmp_ok(dmp_pool_apply_async(pool, "nap", args, s_callback, &cb,
                                       &ar));
    assert_int_equal(dmp_async_ready(ar), 0);
    assert_dmp_err(dmp_async_successful(ar), -EINVAL); /* ValueError */
    double t0 = s_now();
    assert_dmp_err(dmp_async_get(ar, &res, 0.05), -ETIMEDOUT);
    assert_true(s_now() - t0 >= 0.05);
    assert_dmp_err(dmp_async_wait(ar, 0.01), -ETIMEDOUT);
    assert_dmp_ok(dmp_async_wait(ar, 10.0));
    assert_int_equal(dmp_async_ready(ar), 1);
    assert_int_equal(dmp_async_successful(ar), 1);
    assert_dmp_ok(dmp_async_get(ar, &res, 0));
    assert_int_equal(s_int(res), 300);
    dmp_value_destroy(&res);
    assert_true(dmp_test_wait_until(s_called, &cb, 5.0));
    assert_int_equal(cb.calls, 1);
    assert_int_equal(cb.rc, 0);
    assert_int_equal(cb.value, 300);
    dmp_async_destroy(&ar);

    /* the error callback, and a handle not kept (ar_p NULL) */
    s_cb_t ecb = {.lock = PTHREAD_MUTEX_INITIALIZER};
    dmp_value_t *seven = dmp_list_of(1, dmp_int(7));
    assert_dmp_ok(dmp_pool_apply_async(pool, "fail7", seven, s_callback,
                                       &ecb, NULL));
    assert_true(dmp_test_wait_until(s_called, &ecb, 5.0));
    assert_int_equal(ecb.calls, 1);
    assert_dmp_err(ecb.rc, DMP_EREMOTE);
    assert_contains(ecb.text, "seven is not welcome");
    dmp_value_destroy(&seven);

    /* a map_async callback gets the whole list */
    s_cb_t mcb = {.lock = PTHREAD_MUTEX_INITIALIZER};
    dmp_value_t *items = dmp_list_range(0, 50);
    assert_dmp_ok(dmp_pool_map_async(pool, "square", items, 0, s_callback,
                                     &mcb, NULL));
    assert_true(dmp_test_wait_until(s_called, &mcb, 5.0));
    assert_int_equal(mcb.rc, 0);
    assert_int_equal(mcb.value, 50);
    dmp_value_destroy(&items);

    /* many at once, each result to its own handle */
    enum { N = 2000 };
    static dmp_async_t *many[N];
    for (int i = 0; i < N; i++) {
        dmp_value_t *a = dmp_list_of(1, dmp_int(i));
        assert_dmp_ok(dmp_pool_apply_async(pool, "whose", a, NULL, NULL,
                                           &many[i]));
        dmp_value_destroy(&a);
    }
    for (int i = 0; i < N; i++) {
        assert_dmp_ok(dmp_async_get(many[i], &res, 10.0));
        /* apply's arg is the argument list [i]: whose takes its first */
        assert_int_equal(s_int(dmp_list_get(res, 0)), i);
        dmp_value_destroy(&res);
        dmp_async_destroy(&many[i]);
    }
    dmp_value_destroy(&args);
    dmp_pool_destroy(&pool);
}

/* An error raised by a task comes back from get() as DMP_EREMOTE with
 * the task's code and text; imap raises it for that item only. */
static void
test_task_error_is_raised_from_get(void **state)
{
    (void)state;
    dmp_pool_t *pool = s_pool(2, NULL);
    dmp_value_t *items = dmp_list_range(0, 20), *res = NULL;
    assert_dmp_err(dmp_pool_map(pool, "fail7", items, 0, &res), DMP_EREMOTE);
    assert_null(res);
    assert_int_equal(dmp_pool_error(pool), -42);
    assert_contains(dmp_pool_errmsg(pool), "seven is not welcome");
    assert_contains(dmp_pool_errmsg(pool), "item 7");
    assert_contains(dmp_pool_errmsg(pool), "fail7");

    dmp_async_t *ar;
    assert_dmp_ok(dmp_pool_map_async(pool, "fail7", items, 1, NULL, NULL,
                                     &ar));
    assert_dmp_err(dmp_async_get(ar, &res, 10.0), DMP_EREMOTE);
    assert_int_equal(dmp_async_successful(ar), 0);
    assert_int_equal(dmp_async_error(ar), -42);
    assert_contains(dmp_async_errmsg(ar), "seven is not welcome");
    dmp_async_destroy(&ar);

    dmp_imap_t *it;
    assert_dmp_ok(dmp_pool_imap(pool, "fail7", items, 3, &it));
    for (int64_t i = 0; i < 20; i++) {
        dmp_value_t *v = NULL;
        int rc = dmp_imap_next(it, &v, 10.0);
        if (i == 7) {
            assert_dmp_err(rc, DMP_EREMOTE);
            assert_int_equal(dmp_imap_error(it), -42);
            assert_contains(dmp_imap_errmsg(it), "seven");
        } else {
            assert_dmp_ok(rc);
            assert_int_equal(s_int(v), i);
        }
        dmp_value_destroy(&v);
    }
    dmp_imap_destroy(&it);
    /* the pool goes on working */
    assert_dmp_ok(dmp_pool_map(pool, "square", items, 0, &res));
    dmp_value_destroy(&res);
    dmp_value_destroy(&items);
    dmp_pool_destroy(&pool);
}

/* Names of the workers whose initializer reported to q: [name, pid]. */
static size_t
s_drain_names(dmp_queue_t *q, dmp_value_t *names)
{
    size_t n = 0;
    dmp_value_t *v;
    while (dmp_queue_get(q, &v, 0.5) == 0) {
        dmp_list_append(names, v);
        n++;
    }
    return n;
}

static bool
s_name_in(const dmp_value_t *names, const char *name, int64_t pid)
{
    for (size_t i = 0; i < dmp_value_len(names); i++) {
        const dmp_value_t *e = dmp_list_get(names, (int64_t)i);
        if ((!name || strcmp(dmp_value_str(dmp_list_get(e, 0), NULL),
                             name) == 0) &&
            (pid < 0 || s_int(dmp_list_get(e, 1)) == pid))
            return true;
    }
    return false;
}

/* The initializer runs once in each worker, before its first task; the
 * workers are SpawnPoolWorker-N. */
static void
test_initializer_runs_once_per_worker(void **state)
{
    (void)state;
    dmp_queue_t *q;
    assert_dmp_ok(dmp_queue_new(NULL, &q));
    dmp_value_t *initargs = dmp_list_of(1, dmp_queue_value(q));
    dmp_pool_opts_t o = {.processes = 3, .initializer = "init_report",
                         .initargs = initargs};
    dmp_pool_t *pool;
    assert_dmp_ok(dmp_pool_new(&o, &pool));
    dmp_value_t *items = dmp_list_range(0, 30), *res = NULL;
    assert_dmp_ok(dmp_pool_map(pool, "whose", items, 1, &res));
    assert_dmp_ok(dmp_pool_close(pool));
    assert_dmp_ok(dmp_pool_join(pool, 10.0));
    dmp_value_t *names = dmp_list();
    assert_int_equal(s_drain_names(q, names), 3);
    char seen[3][64];
    for (int i = 0; i < 3; i++) {
        const char *name =
            dmp_value_str(dmp_list_get(dmp_list_get(names, i), 0), NULL);
        assert_non_null(name);
        assert_true(strncmp(name, "SpawnPoolWorker-", 16) == 0);
        snprintf(seen[i], sizeof seen[i], "%s", name);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(seen[j], seen[i]);
    }
    /* every task ran in a worker whose initializer had run */
    for (int64_t i = 0; i < 30; i++)
        assert_true(s_name_in(names, NULL,
                              s_int(dmp_list_get(dmp_list_get(res, i), 1))));
    dmp_value_destroy(&names);
    dmp_value_destroy(&res);
    dmp_value_destroy(&items);
    dmp_value_destroy(&initargs);
    dmp_pool_destroy(&pool);
    dmp_queue_destroy(&q);
}

/* maxtasksperchild: a worker runs that many chunks, then a fresh one
 * (initializer and all) takes its place. */
static void
test_maxtasksperchild_replaces_workers(void **state)
{
    (void)state;
    dmp_queue_t *q;
    assert_dmp_ok(dmp_queue_new(NULL, &q));
    dmp_value_t *initargs = dmp_list_of(1, dmp_queue_value(q));
    dmp_pool_opts_t o = {.processes = 2, .initializer = "init_report",
                         .initargs = initargs, .maxtasksperchild = 2};
    dmp_pool_t *pool;
    assert_dmp_ok(dmp_pool_new(&o, &pool));
    dmp_value_t *items = dmp_list_range(0, 10), *res = NULL;
    assert_dmp_ok(dmp_pool_map(pool, "whose", items, 1, &res));
    /* 10 chunks, 2 a worker: at least 5 workers, none ran more than 2 */
    int64_t pids[10];
    size_t n_pids = 0;
    for (int64_t i = 0; i < 10; i++) {
        const dmp_value_t *r = dmp_list_get(res, i);
        assert_int_equal(s_int(dmp_list_get(r, 0)), i);
        assert_true(s_int(dmp_list_get(r, 2)) < 2);
        int64_t pid = s_int(dmp_list_get(r, 1));
        bool seen = false;
        for (size_t k = 0; k < n_pids; k++)
            seen |= pids[k] == pid;
        if (!seen)
            pids[n_pids++] = pid;
    }
    assert_true(n_pids >= 5);
    assert_dmp_ok(dmp_pool_close(pool));
    assert_dmp_ok(dmp_pool_join(pool, 10.0));
    dmp_value_t *names = dmp_list();
    size_t inits = s_drain_names(q, names);
    print_message("# maxtasksperchild=2: %zu workers ran 10 chunks, %zu "
                  "initializers ran\n", n_pids, inits);
    assert_true(inits >= n_pids);
    for (size_t k = 0; k < n_pids; k++)
        assert_true(s_name_in(names, NULL, pids[k]));
    dmp_value_destroy(&names);
    dmp_value_destroy(&res);
    dmp_value_destroy(&items);
    dmp_value_destroy(&initargs);
    dmp_pool_destroy(&pool);
    dmp_queue_destroy(&q);
}

/* close: no new calls, workers leave once done; join before close is
 * Python's ValueError; terminate fails what is unfinished, promptly. */
static void
test_close_join_terminate_never_hang(void **state)
{
    (void)state;
    dmp_pool_t *pool = s_pool(2, NULL);
    dmp_value_t *items = dmp_list_range(0, 4), *res = NULL;
    assert_dmp_err(dmp_pool_join(pool, 0.1), -EINVAL);
    dmp_async_t *ar;
    dmp_value_t *naps = dmp_list_of(2, dmp_int(300), dmp_int(300));
    assert_dmp_ok(dmp_pool_map_async(pool, "nap", naps, 1, NULL, NULL, &ar));
    assert_dmp_ok(dmp_pool_close(pool));
    assert_dmp_err(dmp_pool_map(pool, "square", items, 0, &res), -EBADF);
    assert_dmp_ok(dmp_pool_join(pool, 10.0)); /* after the naps */
    assert_int_equal(dmp_async_ready(ar), 1);
    assert_dmp_ok(dmp_async_get(ar, &res, 0));
    dmp_value_destroy(&res);
    dmp_async_destroy(&ar);
    dmp_pool_destroy(&pool);

    pool = s_pool(2, NULL);
    dmp_value_t *long_naps = dmp_list_of(3, dmp_int(20000), dmp_int(20000),
                                         dmp_int(20000));
    assert_dmp_ok(dmp_pool_map_async(pool, "nap", long_naps, 1, NULL, NULL,
                                     &ar));
    dmp_imap_t *it;
    assert_dmp_ok(dmp_pool_imap(pool, "nap", long_naps, 1, &it));
    s_sleep(0.2);
    double t0 = s_now();
    assert_dmp_ok(dmp_pool_terminate(pool));
    assert_dmp_err(dmp_async_get(ar, &res, 10.0), -ECANCELED);
    dmp_value_t *v = NULL;
    assert_dmp_err(dmp_imap_next(it, &v, 10.0), -ECANCELED);
    assert_dmp_ok(dmp_pool_join(pool, 10.0));
    double took = s_now() - t0;
    print_message("# terminate with 20 s tasks running: calls failed and "
                  "workers gone in %.2f s\n", took);
    assert_true(took < 5.0);
    dmp_imap_destroy(&it);
    dmp_async_destroy(&ar);
    dmp_pool_destroy(&pool);
    /* destroy of a running pool terminates it (Python's `with`) */
    pool = s_pool(2, NULL);
    assert_dmp_ok(dmp_pool_map_async(pool, "nap", long_naps, 1, NULL, NULL,
                                     NULL));
    t0 = s_now();
    dmp_pool_destroy(&pool);
    assert_true(s_now() - t0 < 5.0);
    dmp_value_destroy(&long_naps);
    dmp_value_destroy(&naps);
    dmp_value_destroy(&items);
}

/* A task that kills its worker every time fails the call with DMP_EWORKER
 * naming it, after the configured retries; the rest of the pool goes on
 * (Python's Pool hangs for ever here: bpo-22393). */
static void
test_task_that_keeps_killing_its_worker_fails_the_call(void **state)
{
    (void)state;
    dmp_pool_opts_t o = {.processes = 2, .retries = 2};
    dmp_pool_t *pool;
    assert_dmp_ok(dmp_pool_new(&o, &pool));
    dmp_value_t *items = dmp_list_range(0, 1000), *res = NULL;
    double t0 = s_now();
    assert_dmp_err(dmp_pool_map(pool, "die37", items, 0, &res), DMP_EWORKER);
    print_message("# %s (in %.2f s)\n", dmp_pool_errmsg(pool),
                  s_now() - t0);
    assert_contains(dmp_pool_errmsg(pool), "die37");
    assert_contains(dmp_pool_errmsg(pool), "item 37");
    assert_contains(dmp_pool_errmsg(pool), "3 times");
    assert_contains(dmp_pool_errmsg(pool), "signal 9");
    /* imap: that item fails, every other comes */
    dmp_imap_t *it;
    assert_dmp_ok(dmp_pool_imap(pool, "die37", items, 10, &it));
    for (int64_t i = 0; i < 1000; i++) {
        dmp_value_t *v = NULL;
        int rc = dmp_imap_next(it, &v, 30.0);
        if (i == 37) {
            assert_dmp_err(rc, DMP_EWORKER);
        } else {
            assert_dmp_ok(rc);
            assert_int_equal(s_int(v), i);
        }
        dmp_value_destroy(&v);
    }
    dmp_imap_destroy(&it);
    assert_dmp_ok(dmp_pool_map(pool, "square", items, 0, &res));
    dmp_value_destroy(&res);
    dmp_value_destroy(&items);
    dmp_pool_destroy(&pool);
}

/* Item 5 never ends (an endless wait), every time. */
DMP_TASK(hang5)
{
    if (s_int(arg) == 5)
        for (;;)
            pause();
    *result = dmp_int(s_int(arg));
    return 0;
}

/* task_timeout: a hung task is killed and retried, then fails with
 * DMP_EWORKER saying so; a worker stopped (SIGSTOP) mid-map loses its
 * chunk to another worker and the map completes. */
static void
test_hung_task_and_stopped_worker_are_timed_out(void **state)
{
    (void)state;
    dmp_pool_opts_t o = {.processes = 2, .retries = 1, .task_timeout = 0.5};
    dmp_pool_t *pool;
    assert_dmp_ok(dmp_pool_new(&o, &pool));
    dmp_value_t *items = dmp_list_range(0, 20), *res = NULL;
    double t0 = s_now();
    assert_dmp_err(dmp_pool_map(pool, "hang5", items, 1, &res), DMP_EWORKER);
    double took = s_now() - t0;
    print_message("# %s (in %.2f s)\n", dmp_pool_errmsg(pool), took);
    assert_contains(dmp_pool_errmsg(pool), "item 5 ran over the task timeout");
    assert_true(took >= 1.0 && took < 10.0);
    /* a stopped worker: its chunk runs elsewhere */
    int64_t pids[8];
    assert_true(s_worker_pids(pool, pids, 8) == 2);
    dmp_value_t *many = dmp_list_range(0, 200);
    dmp_async_t *ar;
    assert_dmp_ok(dmp_pool_map_async(pool, "pid_nap", many, 1, NULL, NULL,
                                     &ar));
    s_sleep(0.2);
    assert_int_equal(kill((pid_t)pids[0], SIGSTOP), 0);
    assert_dmp_ok(dmp_async_get(ar, &res, 60.0));
    for (int64_t i = 0; i < 200; i++)
        assert_int_equal(s_int(dmp_list_get(dmp_list_get(res, i), 0)), i);
    print_message("# worker %lld stopped mid-map: the map completed in "
                  "%.2f s\n", (long long)pids[0], s_now() - t0 - took);
    dmp_value_destroy(&res);
    dmp_async_destroy(&ar);
    kill((pid_t)pids[0], SIGCONT); /* killed already: harmless */
    dmp_value_destroy(&many);
    dmp_value_destroy(&items);
    dmp_pool_destroy(&pool);
    dmp_pool_opts_t bad = {.task_timeout = -1};
    assert_dmp_err(dmp_pool_new(&bad, &pool), -EINVAL);
}

/* An initializer that fails: calls fail with DMP_EREMOTE, never hang. */
static void
test_failing_initializer_fails_calls(void **state)
{
    (void)state;
    dmp_pool_opts_t o = {.processes = 2, .initializer = "init_fails"};
    dmp_pool_t *pool;
    assert_dmp_ok(dmp_pool_new(&o, &pool));
    dmp_value_t *items = dmp_list_range(0, 10), *res = NULL;
    double t0 = s_now();
    assert_dmp_err(dmp_pool_map(pool, "square", items, 0, &res),
                   DMP_EREMOTE);
    print_message("# %s (in %.2f s)\n", dmp_pool_errmsg(pool),
                  s_now() - t0);
    assert_contains(dmp_pool_errmsg(pool), "init_fails");
    assert_int_equal(dmp_pool_error(pool), 3);
    assert_true(s_now() - t0 < 10.0);
    /* and later calls at once */
    t0 = s_now();
    assert_dmp_err(dmp_pool_map(pool, "square", items, 0, &res),
                   DMP_EREMOTE);
    assert_true(s_now() - t0 < 1.0);
    dmp_value_destroy(&items);
    dmp_pool_destroy(&pool);
    dmp_pool_opts_t bad = {.initializer = "no_such_target"};
    assert_dmp_err(dmp_pool_new(&bad, &pool), -EINVAL);
    dmp_pool_opts_t neg = {.processes = -1};
    assert_dmp_err(dmp_pool_new(&neg, &pool), -EINVAL);
}

/* The pids of the workers, each seen running a task (a few naps). */
static size_t
s_worker_pids(dmp_pool_t *pool, int64_t *pids, size_t max)
{
    dmp_value_t *items = dmp_list(), *res = NULL;
    for (int i = 0; i < 4 * dmp_pool_processes(pool); i++)
        dmp_list_append(items, dmp_int(i));
    assert_dmp_ok(dmp_pool_map(pool, "pid_nap", items, 1, &res));
    size_t n = 0;
    for (size_t i = 0; i < dmp_value_len(res); i++) {
        int64_t pid = s_int(dmp_list_get(dmp_list_get(res, (int64_t)i), 1));
        bool seen = false;
        for (size_t k = 0; k < n; k++)
            seen |= pids[k] == pid;
        if (!seen && n < max)
            pids[n++] = pid;
    }
    dmp_value_destroy(&res);
    dmp_value_destroy(&items);
    return n;
}

/* Checks a spin result list: every item once, right and in order. Counts
 * the items each pid (and node) produced. */
static void
s_check_spun(const dmp_value_t *res, size_t n, int64_t victim,
             size_t *by_victim, size_t *by_others)
{
    assert_int_equal(dmp_value_len(res), n);
    *by_victim = *by_others = 0;
    for (size_t i = 0; i < n; i++) {
        const dmp_value_t *r = dmp_list_get(res, (int64_t)i);
        if (s_int(dmp_list_get(r, 0)) != 2 * (int64_t)i) {
            print_error("item %zu: got %lld\n", i,
                        (long long)s_int(dmp_list_get(r, 0)));
            fail();
        }
        if (s_int(dmp_list_get(r, 1)) == victim)
            (*by_victim)++;
        else
            (*by_others)++;
    }
}

/* kill -9 one worker in the middle of a 100k-item map: the full, correct,
 * ordered result; a replacement worker starts. */
static void
test_worker_killed_mid_map_loses_nothing(void **state)
{
    (void)state;
    dmp_pool_t *pool = s_pool(2, NULL);
    int64_t pids[8];
    assert_true(s_worker_pids(pool, pids, 8) == 2);
    size_t n = s_kill_items();
    dmp_value_t *items = dmp_list_range(0, (int64_t)n), *res = NULL;
    dmp_async_t *ar;
    double t0 = s_now();
    assert_dmp_ok(dmp_pool_map_async(pool, "spin", items, 0, NULL, NULL,
                                     &ar));
    s_sleep(0.4);
    assert_int_equal(dmp_async_ready(ar), 0); /* in the middle */
    assert_int_equal(kill((pid_t)pids[0], SIGKILL), 0);
    double killed = s_now() - t0;
    assert_dmp_ok(dmp_async_get(ar, &res, 120.0));
    size_t by_victim, by_others;
    s_check_spun(res, n, pids[0], &by_victim, &by_others);
    print_message("# map of %zu items: worker %lld killed at %.2f s, done "
                  "at %.2f s; %zu results from it, %zu from the others\n",
                  n, (long long)pids[0], killed, s_now() - t0, by_victim,
                  by_others);
    dmp_value_destroy(&res);
    dmp_async_destroy(&ar);
    /* a replacement runs */
    int64_t after[8];
    size_t n_after = s_worker_pids(pool, after, 8);
    print_message("# afterwards: %zu workers seen: %lld %lld\n", n_after,
                  (long long)after[0], (long long)after[n_after > 1]);
    assert_int_equal(n_after, 2);
    for (size_t k = 0; k < n_after; k++)
        assert_true(after[k] != pids[0]);
    dmp_value_destroy(&items);
    dmp_pool_destroy(&pool);
}

/* The same through imap: it yields every item once, in order. */
static void
test_worker_killed_mid_imap_yields_every_item_once(void **state)
{
    (void)state;
    dmp_pool_t *pool = s_pool(2, NULL);
    size_t n = s_kill_items();
    dmp_value_t *items = dmp_list_range(0, (int64_t)n);
    dmp_imap_t *it;
    assert_dmp_ok(dmp_pool_imap(pool, "spin", items, 50, &it));
    int64_t victim = 0;
    size_t got = 0;
    dmp_value_t *v;
    int rc;
    while ((rc = dmp_imap_next(it, &v, 60.0)) == 0) {
        assert_int_equal(s_int(dmp_list_get(v, 0)), 2 * (int64_t)got);
        if (got == n / 3) {
            victim = s_int(dmp_list_get(v, 1));
            assert_int_equal(kill((pid_t)victim, SIGKILL), 0);
        }
        got++;
        dmp_value_destroy(&v);
    }
    assert_dmp_err(rc, DMP_EEOF);
    assert_int_equal(got, n);
    assert_true(victim > 0);
    dmp_imap_destroy(&it);
    dmp_value_destroy(&items);
    dmp_pool_destroy(&pool);
}

/* dmp_fini terminates and joins a pool still running (its workers do not
 * outlive the program's dmp); destroying the pool afterwards is safe. */
static void
test_fini_stops_a_running_pool(void **state)
{
    (void)state;
    dmp_pool_t *pool = s_pool(2, NULL);
    dmp_value_t *naps = dmp_list_of(2, dmp_int(20000), dmp_int(20000));
    dmp_async_t *ar;
    assert_dmp_ok(dmp_pool_map_async(pool, "nap", naps, 1, NULL, NULL, &ar));
    double t0 = s_now();
    dmp_fini();
    assert_true(s_now() - t0 < 5.0);
    dmp_value_t *res = NULL;
    assert_dmp_err(dmp_async_get(ar, &res, 1.0), -ECANCELED);
    dmp_async_destroy(&ar);
    dmp_pool_destroy(&pool);
    dmp_value_destroy(&naps);
}

static void
test_no_worker_is_left(void **state)
{
    (void)state;
    bool gone = dmp_test_wait_until(s_no_workers, NULL, GONE_WAIT);
    if (!gone)
        s_count_workers(true);
    assert_true(gone);
}

/* ---- a cluster of three -------------------------------------------------------- */

/* spread: workers on every node, by cores; a map across hosts. */
static void
test_spread_pool_uses_every_node(void **state)
{
    (void)state;
    dmp_pool_t *pool = s_pool(0, "spread");
    print_message("# spread: %d workers\n", dmp_pool_processes(pool));
    assert_true(dmp_pool_processes(pool) >= 3);
    size_t n = 20000;
    dmp_value_t *items = dmp_list_range(0, (int64_t)n), *res = NULL;
    assert_dmp_ok(dmp_pool_map(pool, "spin", items, 100, &res));
    bool on[3] = {false, false, false};
    for (size_t i = 0; i < n; i++) {
        const dmp_value_t *r = dmp_list_get(res, (int64_t)i);
        assert_int_equal(s_int(dmp_list_get(r, 0)), 2 * (int64_t)i);
        const char *node = dmp_value_str(dmp_list_get(r, 2), NULL);
        for (int k = 0; k < 3; k++)
            on[k] |= node && strcmp(node, s_c.names[k]) == 0;
    }
    assert_true(on[0] && on[1] && on[2]);
    dmp_value_destroy(&res);
    /* a named list of nodes */
    char two[160];
    snprintf(two, sizeof two, "%s,%s", s_c.names[1], s_c.names[2]);
    dmp_pool_t *p2 = s_pool(2, two);
    assert_dmp_ok(dmp_pool_map(p2, "spin", items, 500, &res));
    for (size_t i = 0; i < n; i++) {
        const char *node = dmp_value_str(
            dmp_list_get(dmp_list_get(res, (int64_t)i), 2), NULL);
        assert_true(strcmp(node, s_c.names[0]) != 0);
    }
    dmp_value_destroy(&res);
    dmp_pool_destroy(&p2);
    dmp_pool_t *bad;
    dmp_pool_opts_t o = {.placement = "no-such-node"};
    assert_dmp_err(dmp_pool_new(&o, &bad), DMP_ENODE);
    dmp_value_destroy(&items);
    dmp_pool_destroy(&pool);
}

/* Items and results larger than a frame cross hosts (in parts, as queue
 * items do), up to the queue's item limit; above it, -EMSGSIZE with a
 * clear text and nothing else lost. */
static void
test_large_items_and_results_cross_hosts(void **state)
{
    (void)state;
    char two[160];
    snprintf(two, sizeof two, "%s,%s", s_c.names[1], s_c.names[2]);
    dmp_pool_t *pool = s_pool(2, two); /* workers elsewhere only */
    enum { N = 4 };
    const size_t sizes[N] = {3u << 20, 100, 9u << 20, (1u << 20) + 1};
    dmp_value_t *items = dmp_list();
    for (size_t i = 0; i < N; i++) {
        uint8_t *b = malloc(sizes[i]);
        assert_non_null(b);
        for (size_t k = 0; k < sizes[i]; k++)
            b[k] = (uint8_t)(k * 7 + i);
        assert_dmp_ok(dmp_list_append(items, dmp_bytes(b, sizes[i])));
        free(b);
    }
    dmp_value_t *res = NULL;
    assert_dmp_ok(dmp_pool_map(pool, "double_bytes", items, 1, &res));
    assert_int_equal(dmp_value_len(res), N);
    for (size_t i = 0; i < N; i++) {
        size_t len = 0, in_len = 0;
        const uint8_t *r = dmp_value_bytes(dmp_list_get(res, (int64_t)i),
                                           &len);
        const uint8_t *in = dmp_value_bytes(dmp_list_get(items, (int64_t)i),
                                            &in_len);
        assert_non_null(r);
        assert_int_equal(len, 2 * sizes[i] + 1);
        assert_memory_equal(r, in, in_len);
        for (size_t k = 0; k < in_len; k++)
            if (r[in_len + k] != in[in_len - 1 - k])
                fail_msg("result %zu differs at %zu", i, in_len + k);
        assert_int_equal(r[2 * in_len], in[0]);
    }
    dmp_value_destroy(&res);
    dmp_value_destroy(&items);
    /* A result over the limit (64 MiB): that call fails, clearly. */
    items = dmp_list();
    uint8_t *b = calloc(1, (32u << 20) + 1);
    assert_non_null(b);
    assert_dmp_ok(dmp_list_append(items, dmp_bytes(b, (32u << 20) + 1)));
    free(b);
    int rc = dmp_pool_map(pool, "double_bytes", items, 1, &res);
    int code = dmp_pool_error(pool);
    const char *text = dmp_pool_errmsg(pool);
    print_message("# over the limit: map %s\n", dmp_strerror(rc));
    assert_int_equal(rc, DMP_EREMOTE);
    print_message("# over the limit: %d %s\n", code, text ? text : "");
    assert_int_equal(code, -EMSGSIZE);
    assert_non_null(strstr(text, "bytes"));
    dmp_value_destroy(&items);
    /* An item over it: refused here, before anything is sent. */
    items = dmp_list();
    b = calloc(1, (64u << 20) + 1);
    assert_non_null(b);
    assert_dmp_ok(dmp_list_append(items, dmp_bytes(b, (64u << 20) + 1)));
    free(b);
    rc = dmp_pool_map(pool, "double_bytes", items, 1, &res);
    print_message("# item over the limit: map %s: %s\n", dmp_strerror(rc),
                  dmp_pool_errmsg(pool));
    assert_int_equal(rc, -EMSGSIZE);
    dmp_value_destroy(&items);
    /* and the pool goes on */
    items = dmp_list_range(0, 100);
    assert_dmp_ok(dmp_pool_map(pool, "whose", items, 10, &res));
    assert_int_equal(dmp_value_len(res), 100);
    dmp_value_destroy(&res);
    dmp_value_destroy(&items);
    dmp_pool_destroy(&pool);
}

/* A whole node (its agent SIGKILLed) dies in the middle of a 100k-item
 * map, after it has sent results: its unfinished chunks run again
 * elsewhere; every item comes once, right and in order (imap), and the
 * pool goes on with the nodes left (map). */
static void
test_node_killed_mid_map_loses_nothing(void **state)
{
    (void)state;
    dmp_pool_t *pool = s_pool(0, "spread");
    size_t n = s_kill_items(), got = 0, from3 = 0;
    dmp_value_t *items = dmp_list_range(0, (int64_t)n);
    dmp_imap_t *it;
    double t0 = s_now(), killed = 0;
    assert_dmp_ok(dmp_pool_imap(pool, "spin", items, 200, &it));
    dmp_value_t *v;
    int rc;
    while ((rc = dmp_imap_next(it, &v, 60.0)) == 0) {
        if (s_int(dmp_list_get(v, 0)) != 2 * (int64_t)got) {
            print_error("item %zu: got %lld\n", got,
                        (long long)s_int(dmp_list_get(v, 0)));
            fail();
        }
        bool on3 = strcmp(dmp_value_str(dmp_list_get(v, 2), NULL),
                          s_c.names[2]) == 0;
        from3 += on3;
        if (!killed && from3 > 0 && got >= n / 4) {
            dmp_test_agent_kill(s_c.agents[2]); /* node3 */
            killed = s_now() - t0;
        }
        got++;
        dmp_value_destroy(&v);
    }
    assert_dmp_err(rc, DMP_EEOF);
    assert_int_equal(got, n);
    assert_true(killed > 0);
    print_message("# imap of %zu items over 3 nodes: node3 killed at %.2f s "
                  "(after %zu of its results), done at %.2f s\n", n, killed,
                  from3, s_now() - t0);
    dmp_imap_destroy(&it);
    /* the pool goes on, on the two nodes left: a plain map */
    dmp_value_t *res = NULL;
    assert_dmp_ok(dmp_pool_map(pool, "spin", items, 0, &res));
    assert_int_equal(dmp_value_len(res), n);
    for (size_t i = 0; i < n; i++) {
        const dmp_value_t *r = dmp_list_get(res, (int64_t)i);
        assert_int_equal(s_int(dmp_list_get(r, 0)), 2 * (int64_t)i);
        assert_true(strcmp(dmp_value_str(dmp_list_get(r, 2), NULL),
                           s_c.names[2]) != 0);
    }
    dmp_value_destroy(&res);
    dmp_value_destroy(&items);
    dmp_pool_destroy(&pool);
}

int
main(void)
{
    /* A worker or a fork server started by an agent: dmp_init serves it
     * and never returns. */
    if (getenv("DMP_CHILD") || getenv("DMP_ZYGOTE"))
        dmp_init();
    unsetenv("DMP_PLACE");
    unsetenv("DMP_AGENT");
    unsetenv("DMP_CLUSTER");
    dmp_test_init(170);
    const struct CMUnitTest one_host[] = {
        cmocka_unit_test(test_map_returns_results_in_order),
        cmocka_unit_test(test_chunks_are_pythons_and_run_whole),
        cmocka_unit_test(test_imap_in_order_and_unordered_as_completed),
        cmocka_unit_test(test_starmap_passes_each_list_as_the_arguments),
        cmocka_unit_test(test_apply_async_result_and_callbacks),
        cmocka_unit_test(test_task_error_is_raised_from_get),
        cmocka_unit_test(test_initializer_runs_once_per_worker),
        cmocka_unit_test(test_maxtasksperchild_replaces_workers),
        cmocka_unit_test(test_close_join_terminate_never_hang),
        cmocka_unit_test(
            test_task_that_keeps_killing_its_worker_fails_the_call),
        cmocka_unit_test(test_failing_initializer_fails_calls),
        cmocka_unit_test(test_hung_task_and_stopped_worker_are_timed_out),
        cmocka_unit_test(test_worker_killed_mid_map_loses_nothing),
        cmocka_unit_test(test_worker_killed_mid_imap_yields_every_item_once),
        cmocka_unit_test(test_fini_stops_a_running_pool), /* dmp_fini: last */
        cmocka_unit_test(test_no_worker_is_left),
    };
    const struct CMUnitTest cluster[] = {
        cmocka_unit_test(test_spread_pool_uses_every_node),
        cmocka_unit_test(test_large_items_and_results_cross_hosts),
        cmocka_unit_test(test_node_killed_mid_map_loses_nothing),
        cmocka_unit_test(test_no_worker_is_left),
    };
    const char *only = getenv("DMP_TEST_GROUPS");
    if (getenv("DMP_TEST_FILTER"))
        cmocka_set_test_filter(getenv("DMP_TEST_FILTER"));
    int failed = 0;
    if (!only || strstr("one host, embedded agent", only))
        failed += cmocka_run_group_tests_name("one host, embedded agent",
                                              one_host, s_up_embedded,
                                              s_down);
    if (!only || strstr("cluster of three, spread", only))
        failed += cmocka_run_group_tests_name("cluster of three, spread",
                                              cluster, s_up_cluster, s_down);
    return failed ? 1 : 0;
}
