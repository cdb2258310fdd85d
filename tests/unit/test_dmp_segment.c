/*
 * test_dmp_segment.c - the segments of Value and Array (dmp_segment.c):
 * creation and header validation, elements of every typecode, the lock
 * (mutual exclusion between processes, timeouts, a holder that dies, the
 * news told once, a release by a non-holder), the owner's wake-ups, and
 * the table of holders.
 *
 * Processes: tests fork children that map the segment by name, as
 * processes of one host do. No ZeroMQ context exists in this binary, so a
 * plain fork is safe. Children never call cmocka asserts: they _exit with
 * a code the parent checks. Every segment is /dmp-test-seg-<pid>-<n>, and
 * each test's teardown fails it if one is left in /dev/shm.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "dmp_impl.h"

#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int s_counter;
static char s_name[64];

static double
s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char *
s_new_name(void)
{
    snprintf(s_name, sizeof s_name, "/dmp-test-seg-%d-%d", (int)getpid(),
             ++s_counter);
    return s_name;
}

/* Segments of this process left in /dev/shm: fails, and removes them. */
static int
s_teardown(void **state)
{
    (void)state;
    char prefix[64];
    snprintf(prefix, sizeof prefix, "dmp-test-seg-%d-", (int)getpid());
    DIR *d = opendir("/dev/shm");
    int left = 0;
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL)
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0) {
            char path[300];
            snprintf(path, sizeof path, "/%s", de->d_name);
            shm_unlink(path);
            left++;
        }
    if (d)
        closedir(d);
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    if (left)
        fail_msg("%d segment(s) left in /dev/shm", left);
    return 0;
}

/* A child that dies with us; runs fn(arg) and _exits with its result. */
static pid_t
s_fork(int (*fn)(const char *name, int arg), const char *name, int arg)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        _exit(fn(name, arg));
    }
    return pid;
}

static int
s_wait(pid_t pid)
{
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- create, open ---------------------------------------------------- */

static void
test_segment_create_open_share_elements(void **state)
{
    (void)state;
    const char *name = s_new_name();
    dmp__seg_t *a = NULL, *b = NULL;
    assert_int_equal(dmp__seg_create(name, 'i', 10, true, "", &a), 0);
    assert_int_equal(dmp__seg_typecode(a), 'i');
    assert_int_equal(dmp__seg_length(a), 10);
    assert_true(dmp__seg_has_lock(a));
    int32_t *x = dmp__seg_data(a);
    for (int i = 0; i < 10; i++)
        assert_int_equal(x[i], 0); /* zero-filled */
    x[3] = 33;
    assert_int_equal(dmp__seg_open(name, &b), 0);
    assert_int_equal(((int32_t *)dmp__seg_data(b))[3], 33);
    assert_int_equal(dmp__seg_length(b), 10);
    /* the name is taken */
    dmp__seg_t *c = NULL;
    assert_int_equal(dmp__seg_create(name, 'i', 1, true, "", &c), -EEXIST);
    assert_null(c);
    dmp__seg_close(&a);
    assert_null(a);
    dmp__seg_close(&a); /* NULL: nothing */
    assert_int_equal(dmp__seg_unlink(name), 0);
    /* b still maps it, as a process that opened it before */
    assert_int_equal(((int32_t *)dmp__seg_data(b))[3], 33);
    dmp__seg_close(&b);
    assert_int_equal(dmp__seg_open(name, &b), -ENOENT);
}

static void
test_segment_create_refuses_bad_arguments(void **state)
{
    (void)state;
    dmp__seg_t *s = NULL;
    const char *name = s_new_name();
    char fifo[300];
    memset(fifo, 'f', sizeof fifo - 1);
    fifo[sizeof fifo - 1] = '\0';
    assert_int_equal(dmp__seg_create(name, 'x', 1, true, "", &s), -EINVAL);
    assert_int_equal(dmp__seg_create(name, 0, 1, true, "", &s), -EINVAL);
    assert_int_equal(dmp__seg_create(name, 'd', 0, true, "", &s), -EINVAL);
    assert_int_equal(dmp__seg_create(name, 'd', DMP__SHARED_BYTES_MAX / 8 + 1,
                                     true, "", &s),
                     -EINVAL);
    assert_int_equal(dmp__seg_create("no-slash", 'd', 1, true, "", &s),
                     -EINVAL);
    assert_int_equal(dmp__seg_create("/a/b", 'd', 1, true, "", &s), -EINVAL);
    assert_int_equal(dmp__seg_create(name, 'd', 1, true, fifo, &s), -EINVAL);
    assert_null(s);
    assert_int_equal(dmp__seg_open("/..", &s), -EINVAL);
    assert_null(s);
}

/* Everything in the header is outside input: open refuses what create
 * would never have written. */
static void
test_segment_open_refuses_a_damaged_header(void **state)
{
    (void)state;
    const char *name = s_new_name();
    dmp__seg_t *s = NULL;
    assert_int_equal(dmp__seg_create(name, 'q', 4, true, "", &s), 0);
    dmp__seg_close(&s);
    int fd = shm_open(name, O_RDWR, 0);
    assert_true(fd >= 0);
    uint8_t *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(p != MAP_FAILED);
    /* byte offsets of s_hdr_t: magic 0, version 8, struct_size 12,
     * typecode 16, itemsize 20, length 24, seg_size 32, has_lock 40,
     * notify 48 (256 bytes) */
    static const struct {
        size_t off, len;
        uint64_t value;
    } damage[] = {
        {0, 8, 0x1234},             /* magic */
        {8, 4, 99},                 /* version */
        {12, 4, 1},                 /* struct size */
        {16, 4, 'x'},               /* typecode */
        {16, 4, 'i'},               /* typecode of another size */
        {20, 4, 2},                 /* itemsize */
        {24, 8, 0},                 /* length */
        {24, 8, 1ull << 40},        /* length past the segment */
        {32, 8, 1ull << 20},        /* seg_size */
        {40, 4, 7},                 /* has_lock */
    };
    for (size_t i = 0; i < sizeof damage / sizeof damage[0]; i++) {
        uint8_t saved[8];
        memcpy(saved, p + damage[i].off, damage[i].len);
        memcpy(p + damage[i].off, &damage[i].value, damage[i].len);
        int rc = dmp__seg_open(name, &s);
        if (rc != DMP_EPROTO)
            fail_msg("damage %zu: open gave %d", i, rc);
        assert_null(s);
        memcpy(p + damage[i].off, saved, damage[i].len);
    }
    memset(p + 48, 'x', 256); /* the FIFO path without its NUL */
    assert_int_equal(dmp__seg_open(name, &s), DMP_EPROTO);
    memset(p + 48, 0, 256);
    assert_int_equal(dmp__seg_open(name, &s), 0); /* repaired */
    dmp__seg_close(&s);
    assert_int_equal(ftruncate(fd, 100), 0); /* too short */
    assert_int_equal(dmp__seg_open(name, &s), DMP_EPROTO);
    munmap(p, 4096);
    close(fd);
    dmp__seg_unlink(name);
}

/* ---- elements ------------------------------------------------------------ */

static void
test_elements_of_every_typecode_wrap_and_convert(void **state)
{
    (void)state;
    assert_int_equal(dmp__typecode_size('c'), 1);
    assert_int_equal(dmp__typecode_size('h'), 2);
    assert_int_equal(dmp__typecode_size('I'), 4);
    assert_int_equal(dmp__typecode_size('f'), 4);
    assert_int_equal(dmp__typecode_size('l'), 8);
    assert_int_equal(dmp__typecode_size('L'), 8);
    assert_int_equal(dmp__typecode_size('d'), 8);
    assert_int_equal(dmp__typecode_size('u'), 0);
    assert_int_equal(dmp__typecode_size(0), 0);
    assert_int_equal(dmp__typecode_size(-1), 0);
    assert_true(dmp__typecode_is_float('f') && dmp__typecode_is_float('d'));
    assert_false(dmp__typecode_is_float('q'));
    static const struct {
        char tc;
        int64_t set, got;
    } wraps[] = {
        {'b', 128, -128},     {'B', 256, 0},        {'B', -1, 255},
        {'c', 257, 1},        {'h', 32768, -32768}, {'H', 65536, 0},
        {'i', 1ll << 31, INT32_MIN},                {'I', -1, UINT32_MAX},
        {'q', INT64_MIN, INT64_MIN},                {'Q', -1, -1},
    };
    uint64_t e;
    for (size_t i = 0; i < sizeof wraps / sizeof wraps[0]; i++) {
        e = 0;
        int64_t v = 0;
        dmp__elem_set_int(wraps[i].tc, &e, wraps[i].set);
        assert_int_equal(dmp__elem_get_int(wraps[i].tc, &e, &v), 0);
        if (v != wraps[i].got)
            fail_msg("'%c': set %lld, got %lld", wraps[i].tc,
                     (long long)wraps[i].set, (long long)v);
    }
    /* adds wrap the same way; after gets the new value */
    e = 0;
    int64_t after = 0;
    dmp__elem_set_int('b', &e, 127);
    dmp__elem_add_int('b', &e, 1, &after);
    assert_int_equal(after, -128);
    dmp__elem_set_int('H', &e, 0);
    dmp__elem_add_int('H', &e, -1, &after);
    assert_int_equal(after, 65535);
    /* floats */
    int64_t v = 0;
    double d = 0;
    assert_int_equal(dmp__elem_get_int('d', &e, &v), -EINVAL);
    assert_int_equal(dmp__elem_set_double('i', &e, 1.0), -EINVAL);
    assert_int_equal(dmp__elem_add_double('q', &e, 1.0, &d), -EINVAL);
    assert_int_equal(dmp__elem_set_double('d', &e, 0.5), 0);
    assert_int_equal(dmp__elem_add_double('d', &e, 0.25, &d), 0);
    assert_true(d == 0.75);
    dmp__elem_add_int('d', &e, 2, &after); /* a float adds the delta */
    assert_int_equal(after, 2);
    assert_true(dmp__elem_get_double('d', &e) == 2.75);
    dmp__elem_set_int('f', &e, 3); /* set_int converts into a float */
    assert_true(dmp__elem_get_double('f', &e) == 3.0);
    dmp__elem_set_int('Q', &e, -1);
    assert_true(dmp__elem_get_double('Q', &e) == 18446744073709551615.0);
    /* the wire form is little-endian: nothing to do on this machine */
    uint32_t le[2] = {0x01020304, 0x05060708};
    dmp__elem_to_le('I', le, 2);
    uint8_t first;
    memcpy(&first, le, 1);
    assert_int_equal(first, 0x04);
}

/* ---- the lock -------------------------------------------------------------- */

/* Child: n times lock, a non-atomic increment of element 0, unlock. */
static int
s_child_increments(const char *name, int n)
{
    dmp__seg_t *s = NULL;
    if (dmp__seg_open(name, &s) != 0)
        return 10;
    volatile int64_t *v = dmp__seg_data(s);
    for (int i = 0; i < n; i++) {
        int rc = dmp__seg_lock(s, DMP_FOREVER, true, true);
        if (rc && rc != DMP_EOWNERDEAD)
            return 11;
        int64_t x = *v;
        *v = x + 1;
        if (dmp__seg_unlock(s) != 0)
            return 12;
    }
    dmp__seg_close(&s);
    return 0;
}

static void
test_lock_excludes_processes_and_loses_no_increment(void **state)
{
    (void)state;
    const char *name = s_new_name();
    dmp__seg_t *s = NULL;
    assert_int_equal(dmp__seg_create(name, 'q', 1, true, "", &s), 0);
    const int procs = 4, n = 200000;
    pid_t pid[4];
    for (int k = 0; k < procs; k++)
        pid[k] = s_fork(s_child_increments, name, n);
    for (int k = 0; k < procs; k++)
        assert_int_equal(s_wait(pid[k]), 0);
    assert_int_equal(*(int64_t *)dmp__seg_data(s), procs * n);
    dmp__seg_close(&s);
    dmp__seg_unlink(name);
}

/* Child: takes the lock, then says so on fd and waits to be killed (or
 * exits at once when arg is 1, as a crash would). */
static int s_pipe[2];

static int
s_child_holds(const char *name, int arg)
{
    dmp__seg_t *s = NULL;
    if (dmp__seg_open(name, &s) != 0 ||
        dmp__seg_lock(s, DMP_FOREVER, true, false) != 0)
        return 10;
    ((int64_t *)dmp__seg_data(s))[0] = 77; /* half an update */
    if (write(s_pipe[1], "x", 1) != 1)
        return 11;
    if (arg == 1)
        _exit(0); /* dies holding it, without being killed */
    for (;;)
        pause();
}

static pid_t
s_start_holder(const char *name, int arg)
{
    assert_int_equal(pipe(s_pipe), 0);
    pid_t pid = s_fork(s_child_holds, name, arg);
    char c;
    assert_int_equal(read(s_pipe[0], &c, 1), 1);
    close(s_pipe[0]);
    close(s_pipe[1]);
    return pid;
}

static void
test_lock_of_a_dead_holder_goes_to_the_next_with_eownerdead_once(void **state)
{
    (void)state;
    const char *name = s_new_name();
    dmp__seg_t *s = NULL;
    assert_int_equal(dmp__seg_create(name, 'q', 1, true, "", &s), 0);
    /* held by a live process: others wait, and time out */
    pid_t pid = s_start_holder(name, 0);
    assert_int_equal(dmp__seg_lock(s, 0, true, true), -EBUSY);
    double t0 = s_now();
    assert_int_equal(dmp__seg_lock(s, 0.2, true, true), -ETIMEDOUT);
    double took = s_now() - t0;
    assert_true(took >= 0.2 && took < 0.4);
    assert_int_equal(dmp__seg_unlock(s), -EPERM); /* not ours */
    /* killed: the next (waiting) acquirer gets it, told once */
    kill(pid, SIGKILL);
    t0 = s_now();
    assert_int_equal(dmp__seg_lock(s, 5.0, true, true), DMP_EOWNERDEAD);
    took = s_now() - t0;
    print_message("lock of a killed holder taken after %.3f s\n", took);
    assert_true(took < 0.2);
    assert_int_equal(s_wait(pid), 128 + SIGKILL);
    assert_int_equal(*(int64_t *)dmp__seg_data(s), 77);
    assert_int_equal(dmp__seg_unlock(s), 0);
    assert_int_equal(dmp__seg_lock(s, 0, true, true), 0);
    assert_int_equal(dmp__seg_unlock(s), 0);
    /* exited holding it; a one-try and a get (tell false) first: the news
     * waits for the next explicit acquirer */
    pid = s_start_holder(name, 1);
    assert_int_equal(s_wait(pid), 0);
    assert_int_equal(dmp__seg_lock(s, 0, false, false), 0);
    assert_int_equal(dmp__seg_unlock(s), 0);
    assert_int_equal(dmp__seg_lock(s, 0, false, false), 0);
    assert_int_equal(dmp__seg_unlock(s), 0);
    assert_int_equal(dmp__seg_lock(s, DMP_FOREVER, true, false),
                     DMP_EOWNERDEAD);
    assert_int_equal(dmp__seg_unlock(s), 0);
    assert_int_equal(dmp__seg_lock(s, DMP_FOREVER, true, false), 0);
    /* the owner releases in the name of a holder whose lease ran out */
    assert_int_equal(dmp__seg_unlock_dead(s), 0);
    assert_int_equal(dmp__seg_lock(s, 1.0, true, false), DMP_EOWNERDEAD);
    assert_int_equal(dmp__seg_unlock(s), 0);
    assert_int_equal(dmp__seg_unlock(s), -EPERM); /* free: not held */
    dmp__seg_close(&s);
    dmp__seg_unlink(name);
}

/* A waiter asleep is woken by the release at once (no lost wake-up). */
static int
s_child_holds_briefly(const char *name, int ms)
{
    dmp__seg_t *s = NULL;
    if (dmp__seg_open(name, &s) != 0)
        return 10;
    for (int i = 0; i < 20; i++) {
        if (dmp__seg_lock(s, DMP_FOREVER, false, false) != 0)
            return 11;
        struct timespec ts = {0, ms * 1000000l};
        nanosleep(&ts, NULL);
        if (dmp__seg_unlock(s) != 0)
            return 12;
        nanosleep(&ts, NULL);
    }
    dmp__seg_close(&s);
    return 0;
}

static void
test_lock_waiters_wake_at_the_release(void **state)
{
    (void)state;
    const char *name = s_new_name();
    dmp__seg_t *s = NULL;
    assert_int_equal(dmp__seg_create(name, 'q', 1, true, "", &s), 0);
    pid_t pid = s_fork(s_child_holds_briefly, name, 10);
    double worst = 0;
    for (int i = 0; i < 20; i++) {
        double t0 = s_now();
        assert_int_equal(dmp__seg_lock(s, 5.0, true, false), 0);
        double took = s_now() - t0;
        if (took > worst)
            worst = took;
        assert_int_equal(dmp__seg_unlock(s), 0);
        struct timespec ts = {0, 3000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(s_wait(pid), 0);
    print_message("longest wait for a 10 ms hold: %.1f ms\n", worst * 1e3);
    /* a hold is 10 ms; a lost wake-up would show as the 50 ms check */
    assert_true(worst < 0.045);
    dmp__seg_close(&s);
    dmp__seg_unlink(name);
}

/* The owner (the agent) waits for the lock for processes elsewhere: the
 * next release pokes its FIFO, once per arming. */
static void
test_release_pokes_the_owner_when_it_waits(void **state)
{
    (void)state;
    char fifo[64];
    snprintf(fifo, sizeof fifo, "/tmp/dmp-test-seg-%d.fifo", (int)getpid());
    unlink(fifo);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    int rfd = open(fifo, O_RDONLY | O_NONBLOCK);
    assert_true(rfd >= 0);
    const char *name = s_new_name();
    dmp__seg_t *s = NULL;
    assert_int_equal(dmp__seg_create(name, 'i', 1, true, fifo, &s), 0);
    char buf[16];
    assert_int_equal(dmp__seg_lock(s, 0, true, false), 0);
    assert_int_equal(dmp__seg_unlock(s), 0);
    assert_true(read(rfd, buf, sizeof buf) <= 0); /* nobody waits: quiet */
    dmp__seg_remote_wait(s, true);
    assert_int_equal(dmp__seg_lock(s, 0, true, false), 0);
    assert_int_equal(dmp__seg_unlock(s), 0);
    assert_int_equal(read(rfd, buf, sizeof buf), 1);
    assert_int_equal(dmp__seg_lock(s, 0, true, false), 0);
    assert_int_equal(dmp__seg_unlock(s), 0);
    assert_true(read(rfd, buf, sizeof buf) <= 0); /* once per arming */
    dmp__seg_remote_served(s);
    dmp__seg_remote_wait(s, false);
    close(rfd);
    unlink(fifo);
    dmp__seg_close(&s);
    dmp__seg_unlink(name);
}

/* ---- holders ----------------------------------------------------------------- */

static int
s_child_exits(const char *name, int arg)
{
    (void)name;
    (void)arg;
    return 0;
}

static void
test_holders_count_live_processes_only(void **state)
{
    (void)state;
    const char *name = s_new_name();
    dmp__seg_t *s = NULL;
    assert_int_equal(dmp__seg_create(name, 'd', 3, false, "", &s), 0);
    assert_int_equal(dmp__seg_sweep(s), 0);
    assert_int_equal(dmp__seg_hold(s, getpid(), false), 0);
    assert_int_equal(dmp__seg_hold(s, 0, false), -EINVAL);
    assert_int_equal(dmp__seg_sweep(s), 1);
    /* a child reserved by its parent, then dead: no longer counts */
    pid_t pid = s_fork(s_child_exits, name, 0);
    assert_int_equal(dmp__seg_hold(s, pid, true), 0);
    assert_int_equal(s_wait(pid), 0);
    assert_int_equal(dmp__seg_sweep(s), 1);
    /* our own reservation, then our own hold: one slot; unhold ends both
     * the hold and (a reservation taken over) the slot */
    assert_int_equal(dmp__seg_unhold(s, getpid()), 0);
    assert_int_equal(dmp__seg_hold(s, getpid(), true), 0);
    assert_int_equal(dmp__seg_hold(s, getpid(), false), 0);
    assert_int_equal(dmp__seg_sweep(s), 1);
    assert_int_equal(dmp__seg_unhold(s, getpid()), 0);
    /* a pid that does not exist is dead */
    assert_int_equal(dmp__seg_hold(s, 0x3ffffff0, false), 0);
    assert_int_equal(dmp__seg_sweep(s), 0);
    dmp__seg_close(&s);
    dmp__seg_unlink(name);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_segment_create_open_share_elements,
                                  s_teardown),
        cmocka_unit_test_teardown(test_segment_create_refuses_bad_arguments,
                                  s_teardown),
        cmocka_unit_test_teardown(test_segment_open_refuses_a_damaged_header,
                                  s_teardown),
        cmocka_unit_test_teardown(
            test_elements_of_every_typecode_wrap_and_convert, s_teardown),
        cmocka_unit_test_teardown(
            test_lock_excludes_processes_and_loses_no_increment, s_teardown),
        cmocka_unit_test_teardown(
            test_lock_of_a_dead_holder_goes_to_the_next_with_eownerdead_once,
            s_teardown),
        cmocka_unit_test_teardown(test_lock_waiters_wake_at_the_release,
                                  s_teardown),
        cmocka_unit_test_teardown(test_release_pokes_the_owner_when_it_waits,
                                  s_teardown),
        cmocka_unit_test_teardown(test_holders_count_live_processes_only,
                                  s_teardown),
    };
    return cmocka_run_group_tests_name("dmp_segment", tests, NULL, NULL);
}
