/*
 * test_clock.c - the wall clock jumps while dmp waits (FAULTS: clock
 * jump): timeouts hold, because dmp times everything on CLOCK_MONOTONIC.
 *
 * The machine's clock is not touched: this binary runs itself again with
 * clock_shift.so preloaded (built beside it), whose CLOCK_REALTIME,
 * gettimeofday and time follow a file the test rewrites (0, then an hour
 * back or a day ahead) while CLOCK_MONOTONIC stays real. Its embedded
 * agent inherits the preload, so the agent's wall clock jumps too; jobs do
 * not (their environment is an allow-list). Durations are measured on the
 * monotonic clock. (libfaketime would do, but its pthread_cond_timedwait
 * wrapper times out at once on a condition variable of the monotonic
 * clock, which is what dmp uses.)
 */
#define _GNU_SOURCE
#include "dmp_test.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#define WAIT 1.0        /* each timeout */
#define JUMP_AT 0.3     /* the clock jumps this far into it */
#define SLACK 0.3       /* how late a timeout may be on a loaded machine */

static const char *s_ts_file;

static void
s_set_clock(const char *offset)
{
    char text[32];
    snprintf(text, sizeof text, "%s\n", offset);
    assert_dmp_ok(dmp_test_write_file(s_ts_file, 0644, text));
}

typedef struct {
    const char *offset;
} s_jump_t;

static void *
s_jump_thread(void *arg)
{
    struct timespec ts = {0, (long)(JUMP_AT * 1e9)};
    nanosleep(&ts, NULL);
    s_set_clock(((s_jump_t *)arg)->offset);
    return NULL;
}

/* Runs wait() with the wall clock jumping by `offset` during it; returns
 * how long it took (monotonic) and its result. */
static double
s_across_jump(const char *offset, int (*wait)(void *), void *arg, int *rc)
{
    s_set_clock("0");
    s_jump_t jump = {offset};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, s_jump_thread, &jump), 0);
    double t0 = dmp_test_now();
    *rc = wait(arg);
    double took = dmp_test_now() - t0;
    pthread_join(t, NULL);
    s_set_clock("0");
    return took;
}

static const char *s_offsets[] = {"-3600", "86400"};

static void
s_check(const char *what, const char *offset, double took, int rc, int want)
{
    print_message("# %s, wall clock %s meanwhile: %s after %.3f s\n", what,
                  offset, dmp_err_name(rc), took);
    assert_dmp_err(rc, want);
    if (took < WAIT - 0.005 || took > WAIT + SLACK)
        fail_msg("%s took %.3f s with the clock jumping %s (want %.1f s)",
                 what, took, offset, WAIT);
}

static void
test_the_wall_clock_really_jumps(void **state)
{
    (void)state;
    s_set_clock("0");
    time_t before = time(NULL);
    double mono = dmp_test_now();
    s_set_clock("-3600");
    time_t back = time(NULL);
    s_set_clock("86400");
    struct timespec ahead_ts;
    clock_gettime(CLOCK_REALTIME, &ahead_ts);
    time_t ahead = ahead_ts.tv_sec;
    s_set_clock("0");
    print_message("# wall clock: %+ld s, then %+ld s; monotonic moved "
                  "%.3f s\n", (long)(back - before), (long)(ahead - before),
                  dmp_test_now() - mono);
    assert_true(back - before < -3500 && back - before > -3700);
    assert_true(ahead - before > 86300 && ahead - before < 86500);
    assert_true(dmp_test_now() - mono < 1.0);
}

static int
s_queue_get(void *arg)
{
    dmp_value_t *v = NULL;
    int rc = dmp_queue_get(arg, &v, WAIT);
    dmp_value_destroy(&v);
    return rc;
}

static int
s_pipe_poll(void *arg)
{
    return dmp_conn_poll(arg, WAIT);
}

static int
s_lock_acquire(void *arg)
{
    return dmp_lock_acquire(arg, WAIT);
}

static int
s_join(void *arg)
{
    return dmp_process_join(arg, WAIT);
}

DMP_TARGET(sleeper)
{
    (void)args;
    sleep(30);
    return 0;
}

typedef struct {
    dmp_lock_t *lock;
    pthread_mutex_t mx;
    pthread_cond_t cv;
    bool held, release;
} s_holder_t;

/* Holds the lock from another thread until told. */
static void *
s_holder_thread(void *arg)
{
    s_holder_t *h = arg;
    int rc = dmp_lock_acquire(h->lock, DMP_FOREVER);
    pthread_mutex_lock(&h->mx);
    h->held = rc == 0;
    pthread_cond_broadcast(&h->cv);
    while (!h->release)
        pthread_cond_wait(&h->cv, &h->mx);
    pthread_mutex_unlock(&h->mx);
    if (rc == 0)
        dmp_lock_release(h->lock);
    return NULL;
}

static void
test_timeouts_hold_when_the_wall_clock_jumps(void **state)
{
    (void)state;
    dmp_queue_t *q;
    assert_dmp_ok(dmp_queue_new(NULL, &q));
    dmp_conn_t *a, *b;
    assert_dmp_ok(dmp_pipe(1, &a, &b));
    dmp_shared_t *v;
    int64_t zero = 0;
    assert_dmp_ok(dmp_shared_value_new('q', &zero, 1, &v));
    s_holder_t h = {.lock = dmp_shared_get_lock(v)};
    pthread_mutex_init(&h.mx, NULL);
    pthread_cond_init(&h.cv, NULL);
    pthread_t holder;
    assert_int_equal(pthread_create(&holder, NULL, s_holder_thread, &h), 0);
    pthread_mutex_lock(&h.mx);
    while (!h.held)
        pthread_cond_wait(&h.cv, &h.mx);
    pthread_mutex_unlock(&h.mx);
    dmp_process_opts_t o = {.target = "sleeper"};
    dmp_process_t *p;
    assert_dmp_ok(dmp_process_new(&o, &p));
    assert_dmp_ok(dmp_process_start(p));

    for (size_t i = 0; i < 2; i++) {
        const char *off = s_offsets[i];
        int rc;
        double took = s_across_jump(off, s_queue_get, q, &rc);
        s_check("queue get(timeout)", off, took, rc, DMP_EEMPTY);
        took = s_across_jump(off, s_pipe_poll, a, &rc);
        s_check("pipe poll(timeout)", off, took, rc, 0);
        took = s_across_jump(off, s_lock_acquire, h.lock, &rc);
        s_check("Value lock acquire(timeout)", off, took, rc, -ETIMEDOUT);
        took = s_across_jump(off, s_join, p, &rc);
        s_check("process join(timeout)", off, took, rc, -ETIMEDOUT);
    }
    /* The agent, whose wall clock jumped too, still serves. */
    dmp_node_info_t *nodes;
    size_t n;
    assert_dmp_ok(dmp_nodes(&nodes, &n));
    assert_int_equal(n, 1);
    dmp_free(nodes);

    assert_dmp_ok(dmp_process_kill(p));
    assert_dmp_ok(dmp_process_join(p, 10.0));
    dmp_process_destroy(&p);
    pthread_mutex_lock(&h.mx);
    h.release = true;
    pthread_cond_broadcast(&h.cv);
    pthread_mutex_unlock(&h.mx);
    pthread_join(holder, NULL);
    dmp_shared_destroy(&v);
    dmp_conn_destroy(&a);
    dmp_conn_destroy(&b);
    dmp_queue_destroy(&q);
}

/* Runs this binary again with clock_shift.so (beside it) preloaded and a
 * clock file in a fresh directory; returns its exit status. */
static int
s_rerun_shifted(char **argv)
{
    char exe[PATH_MAX], shim[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return 1;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    snprintf(shim, sizeof shim, "%s/clock_shift.so", exe);
    if (access(shim, R_OK) != 0) {
        fprintf(stderr, "test_clock: %s is missing (make builds it with "
                "the tests)\n", shim);
        return 1;
    }
    char dir[PATH_MAX], file[PATH_MAX + 16];
    if (dmp_test_mkdtemp("dmp-clock", dir, sizeof dir) != 0)
        return 1;
    snprintf(file, sizeof file, "%s/clock", dir);
    if (dmp_test_write_file(file, 0644, "0\n") != 0)
        return 1;
    setenv("LD_PRELOAD", shim, 1);
    setenv("DMP_CLOCK_SHIFT", file, 1);
    setenv("DMP_TEST_CLOCK_FILE", file, 1);
    pid_t pid = fork();
    if (pid == 0) {
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    int status = 1;
    if (pid > 0)
        waitpid(pid, &status, 0);
    dmp_test_rmtree(dir);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

int
main(int argc, char **argv)
{
    (void)argc;
    if (getenv("DMP_CHILD") || getenv("DMP_ZYGOTE"))
        dmp_init();
    s_ts_file = getenv("DMP_TEST_CLOCK_FILE");
    if (!s_ts_file)
        return s_rerun_shifted(argv);
    unsetenv("DMP_PLACE");
    unsetenv("DMP_AGENT");
    unsetenv("DMP_CLUSTER");
    dmp_test_init(60);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_wall_clock_really_jumps),
        cmocka_unit_test(test_timeouts_hold_when_the_wall_clock_jumps),
    };
    int failed = cmocka_run_group_tests_name("wall clock jumps", tests,
                                             NULL, NULL);
    dmp_fini();
    return failed ? 1 : 0;
}
