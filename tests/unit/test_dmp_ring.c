/*
 * test_dmp_ring.c - the shared-memory ring: FIFO order, timeouts, bounds,
 * wrap-around, out-of-line items, exactly-once delivery under concurrency,
 * crash recovery, JoinableQueue counters, shutdown, header validation.
 *
 * Processes: tests fork children that map the ring by name, as separate
 * processes on one host do. No ZeroMQ context exists in this binary, so a
 * plain fork is safe. Children never call cmocka asserts (a failing one
 * would longjmp into the child's copy of the runner): they _exit with a
 * code the parent checks. Every child gets PDEATHSIG and is killed and
 * reaped by the teardown if a test fails halfway.
 *
 * Names: every segment is /dmp-test-ring-<pid>-<n>-<tag>. Each test's
 * teardown fails the test if any of its segments is left in /dev/shm (and
 * removes them), so every test checks that it cleans up after itself.
 *
 * `test_dmp_ring FILTER` runs only the tests whose names match FILTER
 * (cmocka wildcards), e.g. for a valgrind run of the single-process ones.
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
#include <sched.h>
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

/* Defined in dmp_ring.c: called at named points of put and get while the
 * lock is held ("put-locked", "put-written", "put-committed",
 * "get-copied", "get-committed", and "batch-written" in a batch put). */
extern void (*dmp__ring_test_hook)(const char *point);
/* Pipe support in dmp_ring.c, declared here too until dmp_impl.h carries
 * it everywhere. poll waits up to timeout for a get that would not block
 * (an item, EOF or shutdown): 1, or 0 when none came in time. */
int dmp__ring_poll(dmp__ring_t *ring, double timeout);
int dmp__ring_hold_writer(dmp__ring_t *ring);
int dmp__ring_close_writer(dmp__ring_t *ring);

/* ---- helpers --------------------------------------------------------- */

#define MAX_CHILDREN 64

static pid_t s_children[MAX_CHILDREN];
static int s_name_counter;

/* A fresh segment name for this test binary. */
static void
s_name(char *buf, size_t size, const char *tag)
{
    snprintf(buf, size, "/dmp-test-ring-%d-%d-%s", (int)getpid(),
             ++s_name_counter, tag);
}

/* Counts (and with remove, unlinks) this process's /dev/shm entries. */
static int
s_shm_entries(bool remove)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "dmp-test-ring-%d-", (int)getpid());
    DIR *dir = opendir("/dev/shm");
    if (!dir)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0)
            continue;
        n++;
        if (remove) {
            char full[300];
            snprintf(full, sizeof full, "/%s", e->d_name);
            shm_unlink(full);
        }
    }
    closedir(dir);
    return n;
}

/* Entries for one ring's out-of-line items ("<name>.ool.<n>"). */
static int
s_ool_entries(const char *ring_name)
{
    char prefix[300];
    snprintf(prefix, sizeof prefix, "%s.ool.", ring_name + 1);
    DIR *dir = opendir("/dev/shm");
    if (!dir)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL)
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
            n++;
    closedir(dir);
    return n;
}

static void
s_track(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (s_children[i] == 0) {
            s_children[i] = pid;
            return;
        }
}

static void
s_untrack(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (s_children[i] == pid)
            s_children[i] = 0;
}

/* Runs fn(arg) in a child process, which exits with its return value. */
static pid_t
s_spawn(int (*fn)(void *), void *arg)
{
    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(99);
        _exit(fn(arg));
    }
    if (pid > 0)
        s_track(pid);
    return pid;
}

/* Waits for a child: its exit code, or 128 + the signal that killed it. */
static int
s_reap(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    s_untrack(pid);
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    return 128 + WTERMSIG(st);
}

static int
s_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (s_children[i] > 0) {
            kill(s_children[i], SIGKILL);
            s_reap(s_children[i]);
        }
    dmp__ring_test_hook = NULL;
    dmp__alloc_fail_after(0);
    int left = s_shm_entries(true);
    if (left)
        fprintf(stderr, "test left %d /dev/shm entries\n", left);
    return left ? -1 : 0;
}

static void
s_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static uint64_t
s_rand(uint64_t *s)
{
    /* xorshift64* */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

/* Deterministic content for item i of a stream: a length and bytes. */
static size_t
s_item_len(uint64_t i, size_t max)
{
    uint64_t s = i * 0x9E3779B97F4A7C15ull + 1;
    return (size_t)(s_rand(&s) % (max + 1));
}

static void
s_item_fill(uint64_t i, uint8_t *buf, size_t len)
{
    uint64_t s = i * 0xBF58476D1CE4E5B9ull + 7;
    for (size_t k = 0; k < len; k++)
        buf[k] = (uint8_t)(s_rand(&s) >> 56);
}

#define assert_ok(expr)                                                      \
    do {                                                                     \
        int rc_ = (expr);                                                    \
        if (rc_ != 0)                                                        \
            fail_msg("%s: %s (%d)", #expr, dmp_strerror(rc_), rc_);          \
    } while (0)

static dmp__ring_t *
s_create(const char *name, uint64_t capacity, int64_t maxsize)
{
    dmp__ring_opts_t opts = {.capacity = capacity, .maxsize = maxsize};
    dmp__ring_t *ring = NULL;
    assert_ok(dmp__ring_create(name, &opts, &ring));
    return ring;
}

static void
s_destroy(dmp__ring_t **ring_p, const char *name)
{
    dmp__ring_close(ring_p);
    assert_null(*ring_p);
    assert_ok(dmp__ring_unlink(name));
}

/* Gets one item and checks it equals the expected bytes. */
static void
s_expect(dmp__ring_t *ring, const void *want, size_t want_len)
{
    uint8_t *data = NULL;
    size_t len = 0;
    assert_ok(dmp__ring_get(ring, &data, &len, 1.0));
    assert_int_equal(len, want_len);
    if (want_len)
        assert_memory_equal(data, want, want_len);
    dmp__free(data);
}

/* ---- the happy path, as example code --------------------------------- */

static void
test_ring_put_then_get_returns_the_item(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "happy");

    /* The owner creates the ring: 64 KiB of data, at most 100 items. */
    dmp__ring_opts_t opts = {.capacity = 64 * 1024, .maxsize = 100};
    dmp__ring_t *ring = NULL;
    assert_int_equal(dmp__ring_create(name, &opts, &ring), 0);

    /* Any process on the host maps it by name. */
    dmp__ring_t *other = NULL;
    assert_int_equal(dmp__ring_open(name, &other), 0);

    assert_int_equal(dmp__ring_put(ring, "hello", 5, DMP_FOREVER), 0);
    assert_int_equal(dmp__ring_count(other), 1);

    uint8_t *data = NULL;
    size_t len = 0;
    assert_int_equal(dmp__ring_get(other, &data, &len, 1.0), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(data, "hello", 5);
    dmp__free(data);
    assert_int_equal(dmp__ring_count(ring), 0);

    dmp__ring_close(&other);
    assert_null(other);
    dmp__ring_close(&ring);
    assert_int_equal(dmp__ring_unlink(name), 0);
}

/* ---- order, timeouts, bounds ----------------------------------------- */

static void
test_ring_keeps_fifo_order(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "fifo");
    dmp__ring_t *ring = s_create(name, 1 << 20, 0);
    char buf[32];
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(buf, sizeof buf, "item %d", i);
        assert_ok(dmp__ring_put(ring, buf, (size_t)n, 0));
    }
    assert_int_equal(dmp__ring_count(ring), 5000);
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(buf, sizeof buf, "item %d", i);
        s_expect(ring, buf, (size_t)n);
    }
    /* An empty item is an item too. */
    assert_ok(dmp__ring_put(ring, NULL, 0, 0));
    s_expect(ring, NULL, 0);
    s_destroy(&ring, name);
}

static void
test_ring_get_times_out_when_empty(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "empty");
    dmp__ring_t *ring = s_create(name, 0, 0);
    uint8_t *data = NULL;
    size_t len = 0;

    /* Zero, negative and NaN do not wait. */
    double t0 = dmp__now();
    assert_int_equal(dmp__ring_get(ring, &data, &len, 0), DMP_EEMPTY);
    assert_int_equal(dmp__ring_get(ring, &data, &len, -1), DMP_EEMPTY);
    assert_int_equal(dmp__ring_get(ring, &data, &len, NAN), DMP_EEMPTY);
    assert_true(dmp__now() - t0 < 0.1);

    /* A timeout returns no earlier than asked, and within 200 ms after. */
    const double waits[] = {0.001, 0.05, 0.3};
    for (size_t i = 0; i < sizeof waits / sizeof waits[0]; i++) {
        t0 = dmp__now();
        assert_int_equal(dmp__ring_get(ring, &data, &len, waits[i]),
                         DMP_EEMPTY);
        double took = dmp__now() - t0;
        if (took < waits[i] || took > waits[i] + 0.2)
            fail_msg("get(%.3f) returned after %.3f s", waits[i], took);
    }
    assert_null(data);
    s_destroy(&ring, name);
}

static void
test_ring_put_fails_full_at_maxsize(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "maxsize");
    dmp__ring_t *ring = s_create(name, 0, 3);
    for (int i = 0; i < 3; i++)
        assert_ok(dmp__ring_put(ring, "x", 1, 0));
    assert_int_equal(dmp__ring_put(ring, "x", 1, 0), DMP_EFULL);
    double t0 = dmp__now();
    assert_int_equal(dmp__ring_put(ring, "x", 1, 0.2), DMP_EFULL);
    double took = dmp__now() - t0;
    if (took < 0.2 || took > 0.4)
        fail_msg("put(0.2) on a full ring returned after %.3f s", took);
    assert_int_equal(dmp__ring_count(ring), 3);
    /* One get makes room for exactly one put. */
    s_expect(ring, "x", 1);
    assert_ok(dmp__ring_put(ring, "y", 1, 0));
    assert_int_equal(dmp__ring_put(ring, "z", 1, 0), DMP_EFULL);
    s_destroy(&ring, name);
}

static void
test_ring_put_fails_full_when_bytes_run_out(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "bytes");
    /* 4 KiB of data, no item limit: 512 B items take 520 B each, so 7 fit
     * (the 8th would need 4160). */
    dmp__ring_t *ring = s_create(name, 4096, 0);
    uint8_t item[512];
    memset(item, 0xab, sizeof item);
    int n = 0;
    while (dmp__ring_put(ring, item, sizeof item, 0) == 0)
        n++;
    assert_int_equal(n, 7);
    assert_int_equal(dmp__ring_put(ring, item, sizeof item, 0.05),
                     DMP_EFULL);
    /* A small item still fits in the 456 bytes left. */
    assert_ok(dmp__ring_put(ring, "small", 5, 0));
    s_expect(ring, item, sizeof item);
    assert_ok(dmp__ring_put(ring, item, sizeof item, 0));
    for (int i = 0; i < 6; i++)
        s_expect(ring, item, sizeof item);
    s_expect(ring, "small", 5);
    s_expect(ring, item, sizeof item);
    assert_int_equal(dmp__ring_count(ring), 0);
    s_destroy(&ring, name);
}

static void
test_ring_put_rejects_item_over_item_max(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "itemmax");
    dmp__ring_opts_t opts = {.capacity = 4096, .item_max = 2000};
    dmp__ring_t *ring = NULL;
    assert_ok(dmp__ring_create(name, &opts, &ring));
    uint8_t *big = calloc(1, 2001);
    assert_non_null(big);
    assert_int_equal(dmp__ring_put(ring, big, 2001, 0), -EMSGSIZE);
    assert_int_equal(dmp__ring_count(ring), 0);
    assert_int_equal(s_ool_entries(name), 0);
    /* 2000 is allowed, and being over capacity/4 it goes out of line. */
    assert_ok(dmp__ring_put(ring, big, 2000, 0));
    assert_int_equal(s_ool_entries(name), 1);
    s_expect(ring, big, 2000);
    assert_int_equal(s_ool_entries(name), 0);
    free(big);
    s_destroy(&ring, name);
}

/* In a child: gets one item of at most `max` bytes from ring `name`,
 * waiting up to `timeout`. Its result, the item's length (also when too
 * big) and first byte (-1: none), and whether it equals `want` (NULL: not
 * asked); -ENOENT when the ring cannot be opened. */
static int
s_get_once(const char *name, size_t max, double timeout, size_t *len_p,
           int *first_p, const char *want, bool *same_p)
{
    dmp__ring_t *ring = NULL;
    if (dmp__ring_open(name, &ring) != 0)
        return -ENOENT;
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = dmp__ring_get_max(ring, &data, &len, timeout, max);
    *len_p = len;
    *first_p = rc == 0 && len ? data[0] : -1;
    if (want)
        *same_p = rc == 0 && len == strlen(want) &&
                  memcmp(data, want, len) == 0;
    dmp__free(data);
    dmp__ring_close(&ring);
    return rc;
}

/* ---- batches ---------------------------------------------------------- */

/* Appends one batch record (u32 length, little-endian, then the bytes). */
static size_t
s_record(uint8_t *batch, size_t at, const void *data, uint32_t n)
{
    dmp__le32_put(batch + at, n);
    memcpy(batch + at + 4, data, n);
    return at + 4 + n;
}

static void
test_ring_put_batch_puts_inline_out_of_line_and_refused_items_in_order(
    void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "batch");
    dmp__ring_opts_t opts = {.capacity = 8192, .item_max = 4000};
    dmp__ring_t *ring = NULL;
    assert_ok(dmp__ring_create(name, &opts, &ring));
    uint8_t big[4001], *batch = calloc(1, 16384);
    assert_non_null(batch);
    s_item_fill(7, big, sizeof big);
    size_t len = 0;
    len = s_record(batch, len, "a", 1);
    len = s_record(batch, len, "", 0);
    len = s_record(batch, len, big, 3000);  /* over capacity/4: out of line */
    len = s_record(batch, len, big, 4001);  /* over item_max: refused */
    len = s_record(batch, len, "bc", 2);
    size_t done = 0;
    assert_int_equal(dmp__ring_put_batch(ring, batch, len, &done), -EMSGSIZE);
    assert_int_equal(done, len);
    assert_int_equal(dmp__ring_count(ring), 4);
    s_expect(ring, "a", 1);
    s_expect(ring, "", 0);
    s_expect(ring, big, 3000);
    s_expect(ring, "bc", 2);
    assert_int_equal(dmp__ring_count(ring), 0);
    assert_int_equal(s_ool_entries(name), 0);
    /* A record that runs past the end: what came before it is in. */
    len = s_record(batch, 0, "x", 1);
    batch[len] = 9; /* says 9 bytes, 2 follow */
    len += 6;
    done = 0;
    assert_int_equal(dmp__ring_put_batch(ring, batch, len, &done), -EINVAL);
    assert_int_equal(done, 5);
    s_expect(ring, "x", 1);
    /* After shutdown nothing goes in. */
    dmp__ring_shutdown(ring);
    done = 0;
    assert_int_equal(dmp__ring_put_batch(ring, batch, 5, &done), -EBADF);
    assert_int_equal(done, 0);
    free(batch);
    s_destroy(&ring, name);
}

static void
test_ring_put_batch_stops_where_the_ring_is_full_and_goes_on_from_there(
    void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "batchfull");
    /* By count: maxsize 3 takes 3 of 5. */
    dmp__ring_t *ring = s_create(name, 0, 3);
    uint8_t batch[256];
    size_t len = 0;
    for (uint8_t i = 0; i < 5; i++)
        len = s_record(batch, len, &i, 1);
    size_t done = 0;
    assert_int_equal(dmp__ring_put_batch(ring, batch, len, &done), DMP_EFULL);
    assert_int_equal(done, 15);
    assert_int_equal(dmp__ring_count(ring), 3);
    uint8_t zero = 0, one = 1;
    s_expect(ring, &zero, 1);
    s_expect(ring, &one, 1);
    assert_ok(dmp__ring_put_batch(ring, batch, len, &done));
    assert_int_equal(done, len);
    for (uint8_t i = 2; i < 5; i++)
        s_expect(ring, &i, 1);
    s_destroy(&ring, name);
    /* By bytes, wrapping: 1000 items of 1..200 bytes through a 4 KiB ring,
     * in batches of 50, each put again from where it stopped; every item
     * comes out once, in order, whole. */
    s_name(name, sizeof name, "batchwrap");
    ring = s_create(name, 4096, 0);
    uint8_t *b = malloc(50 * 204), item[200];
    assert_non_null(b);
    uint64_t next_out = 0;
    for (uint64_t first = 0; first < 1000; first += 50) {
        len = 0;
        for (uint64_t i = first; i < first + 50; i++) {
            size_t n = s_item_len(i, sizeof item);
            s_item_fill(i, item, n);
            len = s_record(b, len, item, (uint32_t)n);
        }
        done = 0;
        for (;;) {
            int rc = dmp__ring_put_batch(ring, b, len, &done);
            if (rc == 0)
                break;
            assert_int_equal(rc, DMP_EFULL);
            assert_true(done < len);
            /* Room for the rest: take what is in. */
            while (dmp__ring_count(ring) > 0) {
                size_t n = s_item_len(next_out, sizeof item);
                s_item_fill(next_out++, item, n);
                s_expect(ring, item, n);
            }
        }
    }
    while (next_out < 1000) {
        size_t n = s_item_len(next_out, sizeof item);
        s_item_fill(next_out++, item, n);
        s_expect(ring, item, n);
    }
    assert_int_equal(dmp__ring_count(ring), 0);
    free(b);
    s_destroy(&ring, name);
}

/* A child's get of one item from ring `name`: 0 when it is want_len
 * bytes starting with want_first (-1: any), 2 when the ring is gone,
 * 3 otherwise. */
static int
s_child_get_check(const char *name, size_t want_len, int want_first)
{
    size_t len;
    int first;
    int rc = s_get_once(name, SIZE_MAX, 5.0, &len, &first, NULL, NULL);
    if (rc == -ENOENT)
        return 2;
    bool ok = rc == 0 && len == want_len &&
              (want_first < 0 || first == want_first);
    return ok ? 0 : 3;
}

static int
s_child_get_a_byte(void *arg)
{
    return s_child_get_check(arg, 1, -1);
}

/* One batch of three wakes the three getters sleeping on the ring (its
 * one wake-up is passed on while items remain). */
static void
test_ring_put_batch_wakes_every_sleeping_getter_it_feeds(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "batchwake");
    dmp__ring_t *ring = s_create(name, 0, 0);
    pid_t pids[3];
    for (int i = 0; i < 3; i++)
        assert_true((pids[i] = s_spawn(s_child_get_a_byte, name)) > 0);
    s_sleep_ms(200); /* past their spin: asleep in the kernel */
    uint8_t batch[64];
    size_t len = 0;
    for (uint8_t i = 0; i < 3; i++)
        len = s_record(batch, len, &i, 1);
    size_t done = 0;
    double t0 = dmp__now();
    assert_ok(dmp__ring_put_batch(ring, batch, len, &done));
    for (int i = 0; i < 3; i++)
        assert_int_equal(s_reap(pids[i]), 0);
    /* A wake-up lost would show as the 1 s safety re-check. */
    double took = dmp__now() - t0;
    if (took > 0.6)
        fail_msg("the getters took %.3f s to wake", took);
    assert_int_equal(dmp__ring_count(ring), 0);
    s_destroy(&ring, name);
}

/* ---- blocking across processes --------------------------------------- */

typedef struct {
    const char *name;
    int delay_ms;
} s_delayed_t;

static int
s_child_put_later(void *arg)
{
    s_delayed_t *a = arg;
    dmp__ring_t *ring = NULL;
    if (dmp__ring_open(a->name, &ring) != 0)
        return 2;
    s_sleep_ms(a->delay_ms);
    int rc = dmp__ring_put(ring, "wake", 4, 1.0);
    dmp__ring_close(&ring);
    return rc == 0 ? 0 : 3;
}

static void
test_ring_blocked_get_wakes_when_another_process_puts(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "wakeget");
    dmp__ring_t *ring = s_create(name, 0, 0);
    s_delayed_t arg = {name, 150};
    pid_t pid = s_spawn(s_child_put_later, &arg);
    assert_true(pid > 0);

    double t0 = dmp__now();
    uint8_t *data = NULL;
    size_t len = 0;
    assert_ok(dmp__ring_get(ring, &data, &len, DMP_FOREVER));
    double took = dmp__now() - t0;
    assert_int_equal(len, 4);
    assert_memory_equal(data, "wake", 4);
    dmp__free(data);
    assert_int_equal(s_reap(pid), 0);
    /* It slept until the put (no busy loop can be told apart here, but a
     * wake-up lost would show as the 1 s safety re-check). */
    if (took < 0.1 || took > 0.6)
        fail_msg("blocked get returned after %.3f s", took);
    s_destroy(&ring, name);
}

static int
s_child_get_later(void *arg)
{
    s_delayed_t *a = arg;
    dmp__ring_t *ring = NULL;
    if (dmp__ring_open(a->name, &ring) != 0)
        return 2;
    s_sleep_ms(a->delay_ms);
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = dmp__ring_get(ring, &data, &len, 1.0);
    bool ok = rc == 0 && len == 1 && data[0] == '1';
    dmp__free(data);
    dmp__ring_close(&ring);
    return ok ? 0 : 3;
}

static void
test_ring_full_ring_blocks_put_until_a_get_frees_a_slot(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "wakeput");
    dmp__ring_t *ring = s_create(name, 0, 2);
    assert_ok(dmp__ring_put(ring, "1", 1, 0));
    assert_ok(dmp__ring_put(ring, "2", 1, 0));
    s_delayed_t arg = {name, 150};
    pid_t pid = s_spawn(s_child_get_later, &arg);
    assert_true(pid > 0);

    double t0 = dmp__now();
    assert_ok(dmp__ring_put(ring, "3", 1, 5.0));
    double took = dmp__now() - t0;
    assert_int_equal(s_reap(pid), 0);
    if (took < 0.1 || took > 0.6)
        fail_msg("blocked put returned after %.3f s", took);
    s_expect(ring, "2", 1);
    s_expect(ring, "3", 1);
    s_destroy(&ring, name);
}

/* ---- hand-offs between the two sides --------------------------------- */

/* The CPUs this process may run on (*all) and the first of them (*one),
 * for tests that pin processes to one CPU. */
static void
s_first_cpu(cpu_set_t *all, cpu_set_t *one)
{
    assert_int_equal(sched_getaffinity(0, sizeof *all, all), 0);
    CPU_ZERO(one);
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
        if (CPU_ISSET(cpu, all)) {
            CPU_SET(cpu, one);
            return;
        }
}

/* A putter and a getter that each wait for the other on every item: a
 * queue of one item (maxsize 1). First with both processes on one CPU, so
 * that each sleeps in the kernel and is preempted anywhere in put and get,
 * then on every CPU (spins and sleeps mixed). Putters and getters hold
 * different locks, so only the wake-up protocol stands between them and a
 * lost wake-up, which would show as an operation waiting for the 1 s
 * safety re-check: each side fails when one operation took 0.5 s. */
#define S_HANDOFF_ITEMS 20000
#define S_HANDOFF_STALL 0.5

static int
s_child_handoff_put(void *arg)
{
    dmp__ring_t *ring = NULL;
    if (dmp__ring_open(arg, &ring) != 0)
        return 2;
    int rc = 0;
    for (uint64_t i = 0; i < S_HANDOFF_ITEMS && rc == 0; i++) {
        double t0 = dmp__now();
        if (dmp__ring_put(ring, &i, sizeof i, 5.0) != 0)
            rc = 3;
        else if (dmp__now() - t0 > S_HANDOFF_STALL)
            rc = 4;
    }
    dmp__ring_close(&ring);
    return rc;
}

static void
test_ring_hands_every_item_over_without_a_lost_wake_up(void **state)
{
    (void)state;
    cpu_set_t all, one;
    s_first_cpu(&all, &one);
    for (int round = 0; round < 2; round++) {
        cpu_set_t *cpus = round == 0 ? &one : &all;
        assert_int_equal(sched_setaffinity(0, sizeof *cpus, cpus), 0);
        char name[96];
        s_name(name, sizeof name, "handoff");
        dmp__ring_t *ring = s_create(name, 0, 1);
        pid_t pid = s_spawn(s_child_handoff_put, name);
        assert_true(pid > 0);
        double worst = 0;
        for (uint64_t i = 0; i < S_HANDOFF_ITEMS; i++) {
            uint8_t *data = NULL;
            size_t len = 0;
            double t0 = dmp__now();
            assert_ok(dmp__ring_get(ring, &data, &len, 5.0));
            double took = dmp__now() - t0;
            worst = took > worst ? took : worst;
            assert_int_equal(len, sizeof i);
            uint64_t got;
            memcpy(&got, data, sizeof got);
            dmp__free(data);
            assert_int_equal(got, i);
        }
        assert_int_equal(s_reap(pid), 0);
        assert_int_equal(sched_setaffinity(0, sizeof all, &all), 0);
        print_message("      %s: longest get %.1f ms\n",
                      round == 0 ? "one CPU" : "all CPUs", worst * 1e3);
        if (worst > S_HANDOFF_STALL)
            fail_msg("a get waited %.3f s", worst);
        s_destroy(&ring, name);
    }
}

/* Two getters asleep on an empty ring, the first with room for one byte
 * only. A put of two bytes wakes the first, which leaves the item where it
 * is (-EMSGSIZE): it must pass the wake on, or the second would wait for
 * its 1 s re-check. */
static int
s_child_get_too_small(void *arg)
{
    size_t len;
    int first;
    int rc = s_get_once(arg, 1, 5.0, &len, &first, NULL, NULL);
    return rc == -ENOENT ? 2 : rc == -EMSGSIZE && len == 2 ? 0 : 3;
}

static int
s_child_get_hi(void *arg)
{
    return s_child_get_check(arg, 2, 'h');
}

static void
test_ring_getter_that_leaves_the_item_passes_its_wake_on(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "passwake");
    dmp__ring_t *ring = s_create(name, 0, 0);
    pid_t small = s_spawn(s_child_get_too_small, name);
    s_sleep_ms(100); /* asleep first: the kernel wakes it first */
    pid_t other = s_spawn(s_child_get_hi, name);
    s_sleep_ms(100);
    assert_true(small > 0 && other > 0);
    double t0 = dmp__now();
    assert_ok(dmp__ring_put(ring, "hi", 2, 0));
    assert_int_equal(s_reap(other), 0);
    double took = dmp__now() - t0;
    assert_int_equal(s_reap(small), 0);
    if (took > 0.5)
        fail_msg("the second getter got the item %.3f s after the put", took);
    s_destroy(&ring, name);
}

/* ---- wrap-around ----------------------------------------------------- */

static void
test_ring_wraps_around_with_random_sizes(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "wrap");
    /* 16 KiB: inline items up to 4 KiB, so the ring wraps constantly; a
     * few sizes above that go out of line. */
    dmp__ring_t *ring = s_create(name, 16384, 0);
    enum { MAXLEN = 5000, OPS = 20000 };
    uint8_t *want = malloc(MAXLEN);
    assert_non_null(want);
    uint64_t rng = 42, next_put = 0, next_get = 0;
    for (int op = 0; op < OPS; op++) {
        bool put = next_put == next_get || s_rand(&rng) % 100 < 52;
        if (put) {
            size_t len = s_item_len(next_put, MAXLEN);
            s_item_fill(next_put, want, len);
            int rc = dmp__ring_put(ring, want, len, 0);
            if (rc == DMP_EFULL) {
                assert_true(next_put > next_get);
                continue;
            }
            assert_ok(rc);
            next_put++;
        } else {
            size_t len = s_item_len(next_get, MAXLEN);
            s_item_fill(next_get, want, len);
            s_expect(ring, want, len);
            next_get++;
        }
        assert_int_equal(dmp__ring_count(ring),
                         (int64_t)(next_put - next_get));
    }
    while (next_get < next_put) {
        size_t len = s_item_len(next_get, MAXLEN);
        s_item_fill(next_get, want, len);
        s_expect(ring, want, len);
        next_get++;
    }
    assert_true(next_put > 5000);
    free(want);
    assert_int_equal(s_ool_entries(name), 0);
    s_destroy(&ring, name);
}

typedef struct {
    const char *name;
    uint64_t count;
    size_t maxlen;
} s_stream_t;

static int
s_child_produce_stream(void *arg)
{
    s_stream_t *a = arg;
    dmp__ring_t *ring = NULL;
    if (dmp__ring_open(a->name, &ring) != 0)
        return 2;
    uint8_t *buf = malloc(a->maxlen);
    int rc = buf ? 0 : 3;
    for (uint64_t i = 0; rc == 0 && i < a->count; i++) {
        size_t len = s_item_len(i, a->maxlen);
        s_item_fill(i, buf, len);
        rc = dmp__ring_put(ring, buf, len, 10.0);
    }
    free(buf);
    dmp__ring_close(&ring);
    return rc == 0 ? 0 : 4;
}

static void
test_ring_streams_random_sizes_between_processes(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "stream");
    dmp__ring_t *ring = s_create(name, 16384, 0);
    s_stream_t arg = {name, 20000, 4500};
    pid_t pid = s_spawn(s_child_produce_stream, &arg);
    assert_true(pid > 0);
    uint8_t *want = malloc(arg.maxlen);
    assert_non_null(want);
    for (uint64_t i = 0; i < arg.count; i++) {
        uint8_t *data = NULL;
        size_t len = 0;
        int rc = dmp__ring_get(ring, &data, &len, 10.0);
        if (rc != 0)
            fail_msg("item %llu: %s", (unsigned long long)i,
                     dmp_strerror(rc));
        size_t want_len = s_item_len(i, arg.maxlen);
        s_item_fill(i, want, want_len);
        if (len != want_len || memcmp(data, want, len) != 0)
            fail_msg("item %llu differs (len %zu, want %zu)",
                     (unsigned long long)i, len, want_len);
        dmp__free(data);
    }
    free(want);
    assert_int_equal(s_reap(pid), 0);
    assert_int_equal(dmp__ring_count(ring), 0);
    s_destroy(&ring, name);
}

/* ---- out-of-line items ----------------------------------------------- */

static void
test_ring_big_item_goes_out_of_line_and_back(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "big");
    dmp__ring_t *ring = s_create(name, 1 << 20, 0); /* 1 MiB ring */
    size_t big_len = 8u << 20;                      /* 8 MiB item */
    uint8_t *big = malloc(big_len);
    assert_non_null(big);
    s_item_fill(8, big, big_len);

    assert_ok(dmp__ring_put(ring, big, big_len, 0));
    assert_int_equal(s_ool_entries(name), 1);
    /* Just over a quarter of the ring goes out of line too; just under
     * stays in. */
    size_t quarter = (1u << 20) / 4;
    assert_ok(dmp__ring_put(ring, big, quarter - 8, 0));
    assert_int_equal(s_ool_entries(name), 1);
    assert_ok(dmp__ring_put(ring, big, quarter + 1, 0));
    assert_int_equal(s_ool_entries(name), 2);
    assert_int_equal(dmp__ring_count(ring), 3);

    s_expect(ring, big, big_len);
    assert_int_equal(s_ool_entries(name), 1);
    s_expect(ring, big, quarter - 8);
    s_expect(ring, big, quarter + 1);
    assert_int_equal(s_ool_entries(name), 0);
    free(big);
    s_destroy(&ring, name);
}

/* get_max: an item larger than the caller can take stays, its size told;
 * inline and out of line alike. */
static void
test_ring_get_max_leaves_a_bigger_item_in_place(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "max");
    dmp__ring_t *ring = s_create(name, 1 << 20, 0);
    uint8_t item[1000];
    s_item_fill(3, item, sizeof item);
    size_t big_len = 2u << 20; /* out of line */
    uint8_t *big = malloc(big_len);
    assert_non_null(big);
    s_item_fill(4, big, big_len);
    assert_ok(dmp__ring_put(ring, item, sizeof item, 0));
    assert_ok(dmp__ring_put(ring, big, big_len, 0));

    uint8_t *data = NULL;
    size_t len = 0;
    assert_int_equal(dmp__ring_get_max(ring, &data, &len, 0, 999), -EMSGSIZE);
    assert_null(data);
    assert_int_equal(len, sizeof item);
    assert_int_equal(dmp__ring_count(ring), 2);
    assert_ok(dmp__ring_get_max(ring, &data, &len, 0, sizeof item));
    assert_int_equal(len, sizeof item);
    assert_memory_equal(data, item, sizeof item);
    dmp__free(data);
    data = NULL;

    assert_int_equal(dmp__ring_get_max(ring, &data, &len, 0, 1u << 20),
                     -EMSGSIZE);
    assert_int_equal(len, big_len);
    assert_int_equal(s_ool_entries(name), 1);
    s_expect(ring, big, big_len); /* still there for a getter that can */
    assert_int_equal(s_ool_entries(name), 0);
    free(big);
    s_destroy(&ring, name);
}

/* Reads the whole oldest item in parts of `part` bytes with peek. */
static uint8_t *
s_peek_all(dmp__ring_t *ring, uint64_t *seq, size_t part, uint64_t *total)
{
    uint8_t *all = NULL;
    uint64_t off = 0;
    do {
        uint8_t *data = NULL;
        size_t len = 0;
        assert_ok(dmp__ring_peek(ring, seq, off, part, &data, &len, total));
        assert_true(len <= part);
        if (!all)
            all = malloc(*total ? *total : 1);
        memcpy(all + off, data, len);
        dmp__free(data);
        off += len;
    } while (off < *total);
    return all;
}

/* peek reads an item in parts without taking it, inline and out of line;
 * take removes it only while it is still the one named. */
static void
test_ring_peek_reads_parts_and_take_removes_the_named_item(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "peek");
    dmp__ring_t *ring = s_create(name, 1 << 20, 0);
    uint64_t seq = 0, total = 0;
    uint8_t *data = NULL;
    size_t len = 0;
    assert_int_equal(dmp__ring_peek(ring, &seq, 0, 10, &data, &len, &total),
                     DMP_EEMPTY);
    uint8_t item[1000];
    s_item_fill(5, item, sizeof item);
    size_t big_len = 3u << 20; /* out of line */
    uint8_t *big = malloc(big_len);
    assert_non_null(big);
    s_item_fill(6, big, big_len);
    assert_ok(dmp__ring_put(ring, item, sizeof item, 0));
    assert_ok(dmp__ring_put(ring, big, big_len, 0));

    uint8_t *got = s_peek_all(ring, &seq, 300, &total);
    assert_int_equal(total, sizeof item);
    assert_memory_equal(got, item, sizeof item);
    free(got);
    assert_int_equal(dmp__ring_count(ring), 2);
    uint64_t first = seq;
    assert_int_equal(dmp__ring_take(ring, first + 8), -ESTALE);
    assert_ok(dmp__ring_take(ring, first));
    assert_int_equal(dmp__ring_take(ring, first), -ESTALE);
    uint64_t stale = first;
    assert_int_equal(dmp__ring_peek(ring, &stale, 0, 10, &data, &len,
                                    &total), -ESTALE);

    seq = 0;
    got = s_peek_all(ring, &seq, 1u << 20, &total);
    assert_true(seq != first);
    assert_int_equal(total, big_len);
    assert_memory_equal(got, big, big_len);
    free(got);
    assert_int_equal(dmp__ring_peek(ring, &seq, big_len + 1, 10, &data, &len,
                                    &total), -EINVAL);
    /* Another getter takes it meanwhile: the reader's next part is stale. */
    uint8_t *taken = NULL;
    assert_ok(dmp__ring_get(ring, &taken, &len, 0));
    assert_int_equal(len, big_len);
    dmp__free(taken);
    assert_int_equal(dmp__ring_peek(ring, &seq, 0, 10, &data, &len, &total),
                     -ESTALE);
    assert_int_equal(dmp__ring_take(ring, seq), -ESTALE);
    assert_int_equal(s_ool_entries(name), 0);

    /* take of an out-of-line item removes its segment too. */
    assert_ok(dmp__ring_put(ring, big, big_len, 0));
    assert_int_equal(s_ool_entries(name), 1);
    seq = 0;
    assert_ok(dmp__ring_peek(ring, &seq, 0, 10, &data, &len, &total));
    dmp__free(data);
    assert_ok(dmp__ring_take(ring, seq));
    assert_int_equal(s_ool_entries(name), 0);
    assert_int_equal(dmp__ring_count(ring), 0);
    free(big);
    s_destroy(&ring, name);
}

static void
test_ring_unlink_removes_out_of_line_leftovers(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "leftover");
    dmp__ring_t *ring = s_create(name, 4096, 0);
    uint8_t item[2048] = {0};
    for (int i = 0; i < 3; i++)
        assert_ok(dmp__ring_put(ring, item, sizeof item, 0));
    assert_int_equal(s_ool_entries(name), 3);
    dmp__ring_close(&ring);
    assert_ok(dmp__ring_unlink(name));
    assert_int_equal(s_ool_entries(name), 0);
    assert_int_equal(dmp__ring_unlink(name), -ENOENT);
}

/* ---- exactly once under concurrency ---------------------------------- */

enum { EO_PRODUCERS = 4, EO_CONSUMERS = 4, EO_ITEMS = 100000 };

typedef struct {
    uint32_t producer; /* UINT32_MAX: stop */
    uint32_t seq;
    uint8_t pad[56];
} s_eo_item_t;

typedef struct {
    const char *name;
    uint8_t *seen;    /* shared: [producer * EO_ITEMS + seq] */
    uint32_t *errors; /* shared: bad items or order seen by consumers */
    uint32_t id;
} s_eo_arg_t;

static size_t
s_eo_pad(uint32_t producer, uint32_t seq)
{
    return (producer * 7u + seq) % 57u; /* 8 to 64 byte items */
}

static int
s_child_eo_produce(void *arg)
{
    s_eo_arg_t *a = arg;
    dmp__ring_t *ring = NULL;
    if (dmp__ring_open(a->name, &ring) != 0)
        return 2;
    s_eo_item_t it;
    int rc = 0;
    for (uint32_t i = 0; rc == 0 && i < EO_ITEMS; i++) {
        it.producer = a->id;
        it.seq = i;
        size_t pad = s_eo_pad(a->id, i);
        memset(it.pad, (int)(i & 0xff), pad);
        rc = dmp__ring_put(ring, &it, 8 + pad, 30.0);
    }
    dmp__ring_close(&ring);
    return rc == 0 ? 0 : 3;
}

static int
s_child_eo_consume(void *arg)
{
    s_eo_arg_t *a = arg;
    dmp__ring_t *ring = NULL;
    if (dmp__ring_open(a->name, &ring) != 0)
        return 2;
    int64_t last[EO_PRODUCERS];
    for (int p = 0; p < EO_PRODUCERS; p++)
        last[p] = -1;
    for (;;) {
        uint8_t *data = NULL;
        size_t len = 0;
        if (dmp__ring_get(ring, &data, &len, 30.0) != 0)
            return 3;
        s_eo_item_t it;
        memset(&it, 0, sizeof it);
        memcpy(&it, data, len < sizeof it ? len : sizeof it);
        dmp__free(data);
        if (it.producer == UINT32_MAX)
            break;
        bool bad = it.producer >= EO_PRODUCERS || it.seq >= EO_ITEMS ||
                   len != 8 + s_eo_pad(it.producer, it.seq) ||
                   (int64_t)it.seq <= last[it.producer];
        for (size_t k = 0; !bad && k + 8 < len; k++)
            bad = it.pad[k] != (uint8_t)(it.seq & 0xff);
        if (bad) {
            __atomic_add_fetch(a->errors, 1, __ATOMIC_SEQ_CST);
            continue;
        }
        last[it.producer] = it.seq;
        __atomic_add_fetch(&a->seen[it.producer * EO_ITEMS + it.seq], 1,
                           __ATOMIC_SEQ_CST);
    }
    dmp__ring_close(&ring);
    return 0;
}

static void
test_ring_delivers_each_item_exactly_once_4x4(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "4x4");
    /* A small ring so that producers also block on bytes. */
    dmp__ring_t *ring = s_create(name, 64 * 1024, 0);
    size_t shared_len = EO_PRODUCERS * EO_ITEMS + sizeof(uint32_t);
    uint8_t *shared = mmap(NULL, shared_len, PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(shared != MAP_FAILED);
    uint32_t errors = 0;
    uint32_t *errors_p = (uint32_t *)(shared + EO_PRODUCERS * EO_ITEMS);
    s_eo_arg_t args[EO_PRODUCERS + EO_CONSUMERS];
    pid_t pids[EO_PRODUCERS + EO_CONSUMERS];
    double t0 = dmp__now();
    for (int i = 0; i < EO_PRODUCERS + EO_CONSUMERS; i++) {
        args[i] = (s_eo_arg_t){name, shared, errors_p,
                               (uint32_t)(i % EO_PRODUCERS)};
        pids[i] = s_spawn(i < EO_CONSUMERS ? s_child_eo_consume
                                           : s_child_eo_produce,
                          &args[i]);
        assert_true(pids[i] > 0);
    }
    for (int i = EO_CONSUMERS; i < EO_CONSUMERS + EO_PRODUCERS; i++)
        assert_int_equal(s_reap(pids[i]), 0);
    s_eo_item_t stop = {UINT32_MAX, 0, {0}};
    for (int i = 0; i < EO_CONSUMERS; i++)
        assert_ok(dmp__ring_put(ring, &stop, 8, 10.0));
    for (int i = 0; i < EO_CONSUMERS; i++)
        assert_int_equal(s_reap(pids[i]), 0);
    double took = dmp__now() - t0;

    errors = *errors_p;
    assert_int_equal(errors, 0);
    size_t missing = 0, dup = 0;
    for (size_t i = 0; i < EO_PRODUCERS * EO_ITEMS; i++) {
        missing += shared[i] == 0;
        dup += shared[i] > 1;
    }
    if (missing || dup)
        fail_msg("%zu items missing, %zu received more than once", missing,
                 dup);
    assert_int_equal(dmp__ring_count(ring), 0);
    print_message("      %d items through 4 producers x 4 consumers in "
                  "%.2f s\n",
                  EO_PRODUCERS * EO_ITEMS, took);
    munmap(shared, shared_len);
    s_destroy(&ring, name);
}

/* ---- crash recovery -------------------------------------------------- */

static const char *s_kill_point;

static void
s_kill_hook(const char *point)
{
    if (s_kill_point && strcmp(point, s_kill_point) == 0)
        raise(SIGKILL);
}

typedef struct {
    const char *name;
    const char *point;
    bool put;
    size_t len; /* put: item size */
} s_kill_arg_t;

static int
s_child_die_at(void *arg)
{
    s_kill_arg_t *a = arg;
    dmp__ring_t *ring = NULL;
    if (dmp__ring_open(a->name, &ring) != 0)
        return 2;
    s_kill_point = a->point;
    dmp__ring_test_hook = s_kill_hook;
    if (a->put) {
        uint8_t *buf = malloc(a->len);
        if (!buf)
            return 3;
        memset(buf, 'B', a->len);
        dmp__ring_put(ring, buf, a->len, 1.0);
    } else {
        uint8_t *data = NULL;
        size_t len = 0;
        dmp__ring_get(ring, &data, &len, 1.0);
    }
    return 4; /* not reached when the hook fired */
}

static void
test_ring_recovers_from_a_process_killed_holding_the_lock(void **state)
{
    (void)state;
    static const struct {
        const char *point;
        bool put;
        int64_t count_after; /* items left once the child died */
    } cases[] = {
        {"put-locked", true, 1},     {"put-written", true, 1},
        {"put-committed", true, 2},  {"get-copied", false, 1},
        {"get-committed", false, 0},
    };
    /* Inline (64 B) and out of line (10 KiB in a 4 KiB ring). */
    const size_t sizes[] = {64, 10240};
    for (size_t s = 0; s < 2; s++)
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            char name[96];
            s_name(name, sizeof name, "kill");
            dmp__ring_t *ring = s_create(name, 4096, 0);
            uint8_t item_a[10240];
            memset(item_a, 'A', sizeof item_a);
            assert_ok(dmp__ring_put(ring, item_a, sizeof item_a, 0));
            assert_ok(dmp__ring_put(ring, item_a, 64, 0));
            /* Leave one item ("A" x 64) queued before the child runs. */
            s_expect(ring, item_a, sizeof item_a);

            s_kill_arg_t arg = {name, cases[c].point, cases[c].put,
                                sizes[s]};
            pid_t pid = s_spawn(s_child_die_at, &arg);
            assert_true(pid > 0);
            int st = s_reap(pid);
            if (st != 128 + SIGKILL)
                fail_msg("%s: child exited with %d", cases[c].point, st);

            /* The next user recovers the lock (EOWNERDEAD inside) and
             * sees either the old state or the new one, never a mix. */
            assert_int_equal(dmp__ring_count(ring), cases[c].count_after);
            uint8_t item_b[10240];
            memset(item_b, 'B', sizeof item_b);
            assert_ok(dmp__ring_put(ring, "C", 1, 1.0));
            if (cases[c].count_after >= 1 &&
                strcmp(cases[c].point, "get-committed") != 0)
                s_expect(ring, item_a, 64);
            if (cases[c].count_after == 2)
                s_expect(ring, item_b, sizes[s]);
            s_expect(ring, "C", 1);
            uint8_t *data = NULL;
            size_t len = 0;
            assert_int_equal(dmp__ring_get(ring, &data, &len, 0),
                             DMP_EEMPTY);
            /* A putter that died before its commit may leave its
             * out-of-line payload behind; unlink removes it. */
            dmp__ring_close(&ring);
            assert_ok(dmp__ring_unlink(name));
            assert_int_equal(s_ool_entries(name), 0);
        }
}

static int
s_child_block_in_get(void *arg)
{
    dmp__ring_t *ring = NULL;
    if (dmp__ring_open(arg, &ring) != 0)
        return 2;
    uint8_t *data = NULL;
    size_t len = 0;
    dmp__ring_get(ring, &data, &len, DMP_FOREVER);
    return 3;
}

static void
test_ring_works_after_a_sleeping_getter_is_killed(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "sleeper");
    dmp__ring_t *ring = s_create(name, 0, 0);
    pid_t pid = s_spawn(s_child_block_in_get, name);
    assert_true(pid > 0);
    s_sleep_ms(100);
    kill(pid, SIGKILL);
    assert_int_equal(s_reap(pid), 128 + SIGKILL);
    /* Its waiter count stays raised (only costs a wake syscall); puts and
     * gets go on. */
    assert_ok(dmp__ring_put(ring, "x", 1, 1.0));
    s_expect(ring, "x", 1);
    s_destroy(&ring, name);
}

static int
s_child_get_one(void *arg)
{
    return s_child_get_check(arg, 64, 'B');
}

static void
test_ring_sleeping_getter_gets_an_item_whose_putter_died(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "deadputter");
    dmp__ring_t *ring = s_create(name, 0, 0);
    pid_t getter = s_spawn(s_child_get_one, name);
    assert_true(getter > 0);
    s_sleep_ms(100); /* let it fall asleep */
    /* The putter commits and dies before unlocking and waking anyone. */
    s_kill_arg_t arg = {name, "put-committed", true, 64};
    double t0 = dmp__now();
    pid_t putter = s_spawn(s_child_die_at, &arg);
    assert_true(putter > 0);
    assert_int_equal(s_reap(putter), 128 + SIGKILL);
    /* The getter re-checks within its 1 s bound, recovers the lock and
     * takes the item. */
    assert_int_equal(s_reap(getter), 0);
    double took = dmp__now() - t0;
    if (took > 1.5)
        fail_msg("getter took %.3f s after the putter died", took);
    assert_int_equal(dmp__ring_count(ring), 0);
    s_destroy(&ring, name);
}

/* Random kills of a producer and a consumer looping on one ring. */
enum { RK_INC_MAX = 64, RK_SEQ_MAX = 1 << 16, RK_ITEM = 1024 };

typedef struct {
    uint32_t done[RK_INC_MAX]; /* puts that returned, per incarnation */
    uint32_t errors;           /* bad content or order seen by consumers */
    uint8_t seen[RK_INC_MAX][RK_SEQ_MAX];
} s_rk_shared_t;

typedef struct {
    const char *name;
    s_rk_shared_t *sh;
    uint32_t inc;
} s_rk_arg_t;

static void
s_rk_fill(uint32_t inc, uint32_t seq, uint8_t *buf)
{
    memcpy(buf, &inc, 4);
    memcpy(buf + 4, &seq, 4);
    memset(buf + 8, (int)((inc * 31 + seq) & 0xff), RK_ITEM - 8);
}

static int
s_child_rk_produce(void *arg)
{
    s_rk_arg_t *a = arg;
    dmp__ring_t *ring = NULL;
    if (dmp__ring_open(a->name, &ring) != 0)
        return 2;
    uint8_t buf[RK_ITEM];
    for (uint32_t i = 0; i < RK_SEQ_MAX; i++) {
        s_rk_fill(a->inc, i, buf);
        if (dmp__ring_put(ring, buf, sizeof buf, DMP_FOREVER) != 0)
            return 3;
        __atomic_store_n(&a->sh->done[a->inc], i + 1, __ATOMIC_SEQ_CST);
    }
    pause();
    return 0;
}

/* Checks one item and marks it seen; last[] tracks per-incarnation order
 * for the calling consumer. */
static void
s_rk_check(s_rk_shared_t *sh, const uint8_t *data, size_t len,
           int64_t last[RK_INC_MAX])
{
    uint32_t inc, seq;
    uint8_t want[RK_ITEM];
    if (len != RK_ITEM)
        goto bad;
    memcpy(&inc, data, 4);
    memcpy(&seq, data + 4, 4);
    if (inc >= RK_INC_MAX || seq >= RK_SEQ_MAX || (int64_t)seq <= last[inc])
        goto bad;
    s_rk_fill(inc, seq, want);
    if (memcmp(want, data, RK_ITEM) != 0)
        goto bad;
    last[inc] = seq;
    __atomic_add_fetch(&sh->seen[inc][seq], 1, __ATOMIC_SEQ_CST);
    return;
bad:
    __atomic_add_fetch(&sh->errors, 1, __ATOMIC_SEQ_CST);
}

static int
s_child_rk_consume(void *arg)
{
    s_rk_arg_t *a = arg;
    dmp__ring_t *ring = NULL;
    if (dmp__ring_open(a->name, &ring) != 0)
        return 2;
    int64_t last[RK_INC_MAX];
    for (int i = 0; i < RK_INC_MAX; i++)
        last[i] = -1;
    for (;;) {
        uint8_t *data = NULL;
        size_t len = 0;
        if (dmp__ring_get(ring, &data, &len, DMP_FOREVER) != 0)
            return 3;
        s_rk_check(a->sh, data, len, last);
        dmp__free(data);
    }
}

static void
test_ring_loses_and_duplicates_nothing_under_random_kills(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "randkill");
    /* 32 KiB: 1 KiB items, so the producer also blocks when ahead. */
    dmp__ring_t *ring = s_create(name, 32 * 1024, 0);
    s_rk_shared_t *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(sh != MAP_FAILED);
    s_rk_arg_t pargs[RK_INC_MAX], carg = {name, sh, 0};
    pid_t producer = 0, consumer = 0;
    uint32_t incs = 0, consumer_kills = 0;
    uint64_t rng = 7;

    while (incs < RK_INC_MAX || producer) {
        if (!producer && incs < RK_INC_MAX) {
            pargs[incs] = (s_rk_arg_t){name, sh, incs};
            producer = s_spawn(s_child_rk_produce, &pargs[incs]);
            assert_true(producer > 0);
            incs++;
        }
        if (!consumer) {
            consumer = s_spawn(s_child_rk_consume, &carg);
            assert_true(consumer > 0);
        }
        /* 0.2 to 5 ms: lands inside puts, gets, sleeps and lock holds. */
        struct timespec ts = {0, 200000 + (long)(s_rand(&rng) % 4800000)};
        nanosleep(&ts, NULL);
        if (s_rand(&rng) % 3 == 0) {
            kill(consumer, SIGKILL);
            assert_int_equal(s_reap(consumer), 128 + SIGKILL);
            consumer = 0;
            consumer_kills++;
        } else {
            kill(producer, SIGKILL);
            assert_int_equal(s_reap(producer), 128 + SIGKILL);
            producer = 0;
        }
    }
    if (consumer) {
        /* Let it drain what it can, then stop it. */
        s_sleep_ms(50);
        kill(consumer, SIGKILL);
        s_reap(consumer);
        consumer_kills++;
    }
    int64_t last[RK_INC_MAX];
    for (int i = 0; i < RK_INC_MAX; i++)
        last[i] = -1;
    for (;;) {
        uint8_t *data = NULL;
        size_t len = 0;
        int rc = dmp__ring_get(ring, &data, &len, 0);
        if (rc == DMP_EEMPTY)
            break;
        assert_ok(rc);
        s_rk_check(sh, data, len, last);
        dmp__free(data);
    }

    assert_int_equal(sh->errors, 0);
    uint64_t delivered = 0, lost = 0;
    for (uint32_t k = 0; k < incs; k++) {
        uint32_t done = sh->done[k];
        for (uint32_t i = 0; i < RK_SEQ_MAX; i++) {
            uint8_t n = sh->seen[k][i];
            if (n > 1)
                fail_msg("incarnation %u item %u delivered %u times", k, i,
                         n);
            /* The item a producer died putting may or may not be in. */
            if (n && i > done)
                fail_msg("incarnation %u item %u delivered, never put", k,
                         i);
            if (!n && i < done)
                lost++;
            delivered += n;
        }
    }
    /* Only a consumer killed between its get and its bookkeeping can take
     * an item away with it. */
    if (lost > consumer_kills)
        fail_msg("%llu items lost with %u consumer kills",
                 (unsigned long long)lost, consumer_kills);
    print_message("      %u producers, %u consumer kills, %llu items "
                  "delivered, %llu taken by killed consumers\n",
                  incs, consumer_kills, (unsigned long long)delivered,
                  (unsigned long long)lost);
    munmap(sh, sizeof *sh);
    s_destroy(&ring, name);
}

/* ---- JoinableQueue, shutdown ----------------------------------------- */

static int
s_child_get_and_task_done(void *arg)
{
    dmp__ring_t *ring = NULL;
    if (dmp__ring_open(arg, &ring) != 0)
        return 2;
    s_sleep_ms(100);
    for (int i = 0; i < 2; i++) {
        uint8_t *data = NULL;
        size_t len = 0;
        if (dmp__ring_get(ring, &data, &len, 1.0) != 0)
            return 3;
        dmp__free(data);
        if (dmp__ring_task_done(ring) != 0)
            return 4;
    }
    dmp__ring_close(&ring);
    return 0;
}

static void
test_ring_join_waits_until_every_task_is_done(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "join");
    dmp__ring_t *ring = s_create(name, 0, 0);
    assert_ok(dmp__ring_join(ring, 0)); /* nothing put: done */
    assert_ok(dmp__ring_put(ring, "a", 1, 0));
    assert_ok(dmp__ring_put(ring, "b", 1, 0));
    assert_int_equal(dmp__ring_join(ring, 0), -ETIMEDOUT);
    double t0 = dmp__now();
    assert_int_equal(dmp__ring_join(ring, 0.1), -ETIMEDOUT);
    assert_true(dmp__now() - t0 >= 0.1);

    /* A worker process takes both and marks them done; join wakes. */
    pid_t pid = s_spawn(s_child_get_and_task_done, name);
    assert_true(pid > 0);
    assert_ok(dmp__ring_join(ring, 5.0));
    assert_int_equal(s_reap(pid), 0);

    /* More task_done calls than items: Python's ValueError. */
    assert_int_equal(dmp__ring_task_done(ring), -EINVAL);
    assert_ok(dmp__ring_put(ring, "c", 1, 0));
    assert_ok(dmp__ring_task_done(ring)); /* allowed before the get */
    assert_int_equal(dmp__ring_task_done(ring), -EINVAL);
    assert_ok(dmp__ring_join(ring, 0));
    s_expect(ring, "c", 1);
    s_destroy(&ring, name);
}

typedef struct {
    const char *name;
    int op; /* 0 get, 1 put, 2 join */
} s_block_arg_t;

static int
s_child_blocked_op(void *arg)
{
    s_block_arg_t *a = arg;
    dmp__ring_t *ring = NULL;
    if (dmp__ring_open(a->name, &ring) != 0)
        return 2;
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = a->op == 0   ? dmp__ring_get(ring, &data, &len, DMP_FOREVER)
             : a->op == 1 ? dmp__ring_put(ring, "y", 1, DMP_FOREVER)
                          : dmp__ring_join(ring, DMP_FOREVER);
    dmp__ring_close(&ring);
    return rc == -EBADF ? 0 : 3;
}

static void
test_ring_shutdown_wakes_waiters_with_ebadf(void **state)
{
    (void)state;
    char full_name[96], empty_name[96];
    s_name(full_name, sizeof full_name, "shutfull");
    s_name(empty_name, sizeof empty_name, "shutempty");
    dmp__ring_t *full = s_create(full_name, 0, 1);
    dmp__ring_t *empty = s_create(empty_name, 0, 0);
    assert_ok(dmp__ring_put(full, "x", 1, 0));

    s_block_arg_t args[] = {
        {empty_name, 0}, {full_name, 1}, {full_name, 2}};
    pid_t pids[3];
    for (int i = 0; i < 3; i++) {
        pids[i] = s_spawn(s_child_blocked_op, &args[i]);
        assert_true(pids[i] > 0);
    }
    s_sleep_ms(100); /* let them block; they get EBADF either way */
    dmp__ring_shutdown(empty);
    dmp__ring_shutdown(full);
    for (int i = 0; i < 3; i++)
        assert_int_equal(s_reap(pids[i]), 0);

    /* Puts fail; gets drain what is left, then fail. */
    assert_int_equal(dmp__ring_put(full, "z", 1, 0), -EBADF);
    s_expect(full, "x", 1);
    uint8_t *data = NULL;
    size_t len = 0;
    assert_int_equal(dmp__ring_get(full, &data, &len, 1.0), -EBADF);
    assert_int_equal(dmp__ring_get(empty, &data, &len, DMP_FOREVER),
                     -EBADF);
    s_destroy(&full, full_name);
    s_destroy(&empty, empty_name);
}

/* ---- pipes: writer holds and EOF ------------------------------------ */

static void
test_ring_get_returns_eof_once_the_last_writer_closes(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "eof");
    dmp__ring_t *ring = s_create(name, 0, 0);
    uint8_t *data = NULL;
    size_t len = 0;
    /* No writer ever held it: a plain queue, no EOF. */
    assert_int_equal(dmp__ring_get(ring, &data, &len, 0), DMP_EEMPTY);
    assert_int_equal(dmp__ring_close_writer(ring), -EINVAL);

    /* Holds are counted per process. */
    assert_ok(dmp__ring_hold_writer(ring));
    assert_ok(dmp__ring_hold_writer(ring));
    assert_ok(dmp__ring_put(ring, "last", 4, 0));
    assert_ok(dmp__ring_close_writer(ring));
    assert_int_equal(dmp__ring_poll(ring, 0), 1); /* an item */
    s_expect(ring, "last", 4);
    assert_int_equal(dmp__ring_get(ring, &data, &len, 0), DMP_EEMPTY);
    assert_int_equal(dmp__ring_poll(ring, 0), 0);
    double t0 = dmp__now();
    assert_int_equal(dmp__ring_poll(ring, 0.1), 0);
    assert_true(dmp__now() - t0 >= 0.1);
    assert_ok(dmp__ring_close_writer(ring));
    /* What was sent is drained first, then EOF, for ever. */
    assert_int_equal(dmp__ring_poll(ring, 0), 1);
    assert_int_equal(dmp__ring_get(ring, &data, &len, 0), DMP_EEOF);
    assert_int_equal(dmp__ring_get(ring, &data, &len, DMP_FOREVER),
                     DMP_EEOF);
    assert_int_equal(dmp__ring_close_writer(ring), -EINVAL);
    s_destroy(&ring, name);
}

static int
s_child_get_expect_eof(void *arg)
{
    size_t len;
    int first;
    int rc = s_get_once(arg, SIZE_MAX, 5.0, &len, &first, NULL, NULL);
    return rc == -ENOENT ? 2 : rc == DMP_EEOF ? 0 : 3;
}

static void
test_ring_close_writer_wakes_a_blocked_getter_with_eof(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "eofwake");
    dmp__ring_t *ring = s_create(name, 0, 0);
    assert_ok(dmp__ring_hold_writer(ring));
    pid_t pid = s_spawn(s_child_get_expect_eof, name);
    assert_true(pid > 0);
    s_sleep_ms(100); /* let it fall asleep */
    double t0 = dmp__now();
    assert_ok(dmp__ring_close_writer(ring));
    assert_int_equal(s_reap(pid), 0);
    double took = dmp__now() - t0;
    if (took > 0.05)
        fail_msg("getter saw EOF %.3f s after the close", took);
    s_destroy(&ring, name);
}

static int
s_child_hold_then_exit(void *arg)
{
    dmp__ring_t *ring = NULL;
    if (dmp__ring_open(arg, &ring) != 0)
        return 2;
    if (dmp__ring_hold_writer(ring) != 0)
        return 3;
    if (dmp__ring_put(ring, "bye", 3, 1.0) != 0)
        return 4;
    s_sleep_ms(150);
    dmp__ring_close(&ring); /* unmaps, but no close_writer */
    return 0;
}

static void
test_ring_get_returns_eof_when_the_writer_process_dies(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "eofdeath");
    dmp__ring_t *ring = s_create(name, 0, 0);
    pid_t pid = s_spawn(s_child_hold_then_exit, name);
    assert_true(pid > 0);
    s_expect(ring, "bye", 3);
    /* Not reaped until get returns: a zombie writer is dead too. */
    double t0 = dmp__now();
    uint8_t *data = NULL;
    size_t len = 0;
    assert_int_equal(dmp__ring_get(ring, &data, &len, 5.0), DMP_EEOF);
    double took = dmp__now() - t0;
    assert_int_equal(s_reap(pid), 0);
    if (took > 0.5)
        fail_msg("EOF %.3f s after a 150 ms writer", took);
    s_destroy(&ring, name);
}

/* A getter that never spins (one CPU: spinning would only delay the
 * writer) waiting for ever: the writer's death is noticed by the re-check
 * after a sleep, not by a wake-up (a dead process wakes nobody). */
static int
s_child_get_until_eof(void *arg)
{
    size_t len;
    int first;
    bool bye = false;
    int rc = s_get_once(arg, SIZE_MAX, 5.0, &len, &first, "bye", &bye);
    if (rc == -ENOENT || !bye)
        return rc == -ENOENT ? 2 : 3;
    rc = s_get_once(arg, SIZE_MAX, DMP_FOREVER, &len, &first, NULL, NULL);
    return rc == DMP_EEOF ? 0 : 4;
}

static void
test_ring_getter_on_one_cpu_sees_eof_when_the_writer_dies(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "eofonecpu");
    dmp__ring_t *ring = s_create(name, 0, 0);
    cpu_set_t all, one;
    s_first_cpu(&all, &one);
    /* The children inherit the one CPU and count it afresh. */
    assert_int_equal(sched_setaffinity(0, sizeof one, &one), 0);
    pid_t writer = s_spawn(s_child_hold_then_exit, name);
    s_sleep_ms(50); /* the writer holds the ring before the getter sleeps */
    pid_t getter = s_spawn(s_child_get_until_eof, name);
    assert_int_equal(sched_setaffinity(0, sizeof all, &all), 0);
    assert_true(writer > 0 && getter > 0);
    assert_int_equal(s_reap(writer), 0);
    /* The getter sleeps for ever unless its re-checks notice the death. */
    double t0 = dmp__now();
    int st = -1;
    while (dmp__now() - t0 < 5.0 && waitpid(getter, &st, WNOHANG) == 0)
        s_sleep_ms(10);
    if (st == -1)
        fail_msg("the getter still waits %.1f s after its writer died",
                 dmp__now() - t0);
    s_untrack(getter);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    s_destroy(&ring, name);
}

/* ---- counters and notify --------------------------------------------- */

static void
test_ring_count_and_seq_follow_puts_and_gets(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "seq");
    dmp__ring_t *ring = s_create(name, 0, 0);
    uint32_t s0 = dmp__ring_seq(ring);
    assert_ok(dmp__ring_put(ring, "a", 1, 0));
    uint32_t s1 = dmp__ring_seq(ring);
    assert_true(s1 != s0);
    assert_int_equal(dmp__ring_count(ring), 1);
    s_expect(ring, "a", 1);
    assert_true(dmp__ring_seq(ring) != s1);
    assert_int_equal(dmp__ring_count(ring), 0);
    /* A failed get changes nothing. */
    uint32_t s2 = dmp__ring_seq(ring);
    uint8_t *data = NULL;
    size_t len = 0;
    assert_int_equal(dmp__ring_get(ring, &data, &len, 0), DMP_EEMPTY);
    assert_int_equal(dmp__ring_seq(ring), s2);
    s_destroy(&ring, name);
}

static void
test_ring_notify_writes_one_byte_per_put_and_get(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "notify");
    dmp__ring_t *ring = s_create(name, 4u << 20, 0);
    char dir[] = "/tmp/dmp-test-ring-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char fifo[128], file[128];
    snprintf(fifo, sizeof fifo, "%s/wake", dir);
    snprintf(file, sizeof file, "%s/plain", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);

    /* No reader yet: the write fails with ENXIO, the put does not. */
    assert_ok(dmp__ring_set_notify(ring, fifo));
    assert_ok(dmp__ring_put(ring, "a", 1, 0));

    int rfd = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    assert_true(rfd >= 0);
    char buf[16];
    assert_ok(dmp__ring_put(ring, "b", 1, 0));
    assert_int_equal(read(rfd, buf, sizeof buf), 1);
    s_expect(ring, "a", 1);
    assert_int_equal(read(rfd, buf, sizeof buf), 1);
    /* A full FIFO does not block a put. */
    for (int i = 0; i < 70000; i++)
        assert_ok(dmp__ring_put(ring, "c", 1, 0));
    while (read(rfd, buf, sizeof buf) > 0)
        ;
    /* Unset: nothing more. */
    assert_ok(dmp__ring_set_notify(ring, ""));
    s_expect(ring, "b", 1);
    assert_true(read(rfd, buf, sizeof buf) <= 0);
    close(rfd);

    /* A path to anything but a FIFO is left alone. */
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("abc", f);
    fclose(f);
    assert_ok(dmp__ring_set_notify(ring, file));
    s_expect(ring, "c", 1);
    f = fopen(file, "r");
    assert_non_null(f);
    assert_non_null(fgets(buf, sizeof buf, f));
    fclose(f);
    assert_string_equal(buf, "abc");

    char long_path[400];
    memset(long_path, 'a', sizeof long_path - 1);
    long_path[sizeof long_path - 1] = '\0';
    assert_int_equal(dmp__ring_set_notify(ring, long_path), -ENAMETOOLONG);

    unlink(fifo);
    unlink(file);
    rmdir(dir);
    s_destroy(&ring, name);
}

/* ---- bad input ------------------------------------------------------- */

static void
test_ring_create_and_open_reject_bad_arguments(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "args");
    dmp__ring_t *ring = NULL;
    dmp__ring_opts_t tiny = {.capacity = 8};
    assert_int_equal(dmp__ring_create("no-slash", NULL, &ring), -EINVAL);
    assert_int_equal(dmp__ring_create("/a/b", NULL, &ring), -EINVAL);
    assert_int_equal(dmp__ring_create("/", NULL, &ring), -EINVAL);
    char long_name[300];
    long_name[0] = '/';
    memset(long_name + 1, 'a', sizeof long_name - 2);
    long_name[sizeof long_name - 1] = '\0';
    assert_int_equal(dmp__ring_create(long_name, NULL, &ring), -EINVAL);
    assert_int_equal(dmp__ring_create(name, &tiny, &ring), -EINVAL);
    assert_null(ring);
    assert_int_equal(dmp__ring_open(name, &ring), -ENOENT);
    assert_null(ring);

    assert_ok(dmp__ring_create(name, NULL, &ring));
    dmp__ring_t *again = NULL;
    assert_int_equal(dmp__ring_create(name, NULL, &again), -EEXIST);
    assert_null(again);
    dmp__ring_close(NULL);
    dmp__ring_close(&again);
    s_destroy(&ring, name);
}

/* Writes bytes into a new raw segment. */
static void
s_raw_segment(const char *name, const void *bytes, size_t len)
{
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    if (len)
        assert_int_equal(write(fd, bytes, len), (ssize_t)len);
    close(fd);
}

static void
test_ring_open_rejects_a_garbage_segment(void **state)
{
    (void)state;
    char name[96];
    dmp__ring_t *ring = NULL;

    /* Empty, tiny and random segments. */
    static uint8_t junk[64 * 1024];
    uint64_t rng = 99;
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t)s_rand(&rng);
    const size_t lens[] = {0, 100, 4096, sizeof junk};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        s_name(name, sizeof name, "junk");
        s_raw_segment(name, junk, lens[i]);
        assert_int_equal(dmp__ring_open(name, &ring), DMP_EPROTO);
        assert_null(ring);
        assert_int_equal(shm_unlink(name), 0);
    }

    /* A real ring cut short after creation. */
    s_name(name, sizeof name, "short");
    dmp__ring_t *real = s_create(name, 64 * 1024, 0);
    dmp__ring_close(&real);
    int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 8192), 0);
    close(fd);
    assert_int_equal(dmp__ring_open(name, &ring), DMP_EPROTO);
    assert_ok(dmp__ring_unlink(name));

    /* Random byte flips in a used ring's header: open refuses it, or
     * accepts it and then every call returns a code, without a crash or a
     * hang (timeouts bound the lock waits). */
    int refused = 0, accepted = 0;
    for (int round = 0; round < 300; round++) {
        s_name(name, sizeof name, "flip");
        real = s_create(name, 4096, 0);
        for (int i = 0; i < 5; i++)
            assert_ok(dmp__ring_put(real, "0123456789", 10, 0));
        s_expect(real, "0123456789", 10);
        dmp__ring_close(&real);
        fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
        assert_true(fd >= 0);
        uint8_t *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED,
                          fd, 0);
        close(fd);
        assert_true(p != MAP_FAILED);
        int flips = 1 + (int)(s_rand(&rng) % 3);
        for (int i = 0; i < flips; i++)
            p[s_rand(&rng) % 512] ^= (uint8_t)(1u << (s_rand(&rng) % 8));
        munmap(p, 4096);
        int rc = dmp__ring_open(name, &ring);
        if (rc == DMP_EPROTO) {
            refused++;
        } else {
            assert_ok(rc);
            accepted++;
            uint8_t *data = NULL;
            size_t len = 0;
            for (int i = 0; i < 6; i++) {
                rc = dmp__ring_get(ring, &data, &len, 0);
                if (rc == 0)
                    dmp__free(data);
            }
            dmp__ring_put(ring, "x", 1, 0);
            (void)dmp__ring_count(ring);
            (void)dmp__ring_join(ring, 0);
            dmp__ring_close(&ring);
        }
        assert_ok(dmp__ring_unlink(name));
    }
    assert_true(refused > 0);
    print_message("      byte flips: %d refused, %d accepted\n", refused,
                  accepted);
}

static void
test_ring_fails_cleanly_when_allocation_fails(void **state)
{
    (void)state;
    char name[96];
    s_name(name, sizeof name, "nomem");
    dmp__ring_t *ring = NULL;
    dmp__alloc_fail_after(1);
    assert_int_equal(dmp__ring_create(name, NULL, &ring), -ENOMEM);
    assert_null(ring);
    assert_int_equal(s_shm_entries(false), 0);
    dmp__alloc_fail_after(1);
    assert_int_equal(dmp__ring_open("/dmp-test-ring-none", &ring), -ENOMEM);
    dmp__alloc_fail_after(0);

    ring = s_create(name, 4096, 0);
    uint8_t big[2048] = {1};
    assert_ok(dmp__ring_put(ring, "abc", 3, 0));
    assert_ok(dmp__ring_put(ring, big, sizeof big, 0));
    /* A get that cannot allocate takes nothing. */
    uint8_t *data = NULL;
    size_t len = 0;
    for (int i = 0; i < 2; i++) {
        dmp__alloc_fail_after(1);
        assert_int_equal(dmp__ring_get(ring, &data, &len, 0), -ENOMEM);
        dmp__alloc_fail_after(0);
        assert_int_equal(dmp__ring_count(ring), 2 - i);
        s_expect(ring, i == 0 ? (const void *)"abc" : big,
                 i == 0 ? 3 : sizeof big);
    }
    s_destroy(&ring, name);
}

static void
test_ring_tests_leave_no_shm_segments_behind(void **state)
{
    (void)state;
    assert_int_equal(s_shm_entries(false), 0);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_teardown(fn, s_teardown)
        T(test_ring_put_then_get_returns_the_item),
        T(test_ring_keeps_fifo_order),
        T(test_ring_get_times_out_when_empty),
        T(test_ring_put_fails_full_at_maxsize),
        T(test_ring_put_fails_full_when_bytes_run_out),
        T(test_ring_put_rejects_item_over_item_max),
    T(test_ring_put_batch_puts_inline_out_of_line_and_refused_items_in_order),
    T(test_ring_put_batch_stops_where_the_ring_is_full_and_goes_on_from_there),
    T(test_ring_put_batch_wakes_every_sleeping_getter_it_feeds),
        T(test_ring_blocked_get_wakes_when_another_process_puts),
        T(test_ring_full_ring_blocks_put_until_a_get_frees_a_slot),
        T(test_ring_hands_every_item_over_without_a_lost_wake_up),
        T(test_ring_getter_that_leaves_the_item_passes_its_wake_on),
        T(test_ring_wraps_around_with_random_sizes),
        T(test_ring_streams_random_sizes_between_processes),
        T(test_ring_big_item_goes_out_of_line_and_back),
        T(test_ring_get_max_leaves_a_bigger_item_in_place),
        T(test_ring_peek_reads_parts_and_take_removes_the_named_item),
        T(test_ring_unlink_removes_out_of_line_leftovers),
        T(test_ring_delivers_each_item_exactly_once_4x4),
        T(test_ring_recovers_from_a_process_killed_holding_the_lock),
        T(test_ring_works_after_a_sleeping_getter_is_killed),
        T(test_ring_sleeping_getter_gets_an_item_whose_putter_died),
        T(test_ring_loses_and_duplicates_nothing_under_random_kills),
        T(test_ring_join_waits_until_every_task_is_done),
        T(test_ring_shutdown_wakes_waiters_with_ebadf),
        T(test_ring_get_returns_eof_once_the_last_writer_closes),
        T(test_ring_close_writer_wakes_a_blocked_getter_with_eof),
        T(test_ring_get_returns_eof_when_the_writer_process_dies),
        T(test_ring_getter_on_one_cpu_sees_eof_when_the_writer_dies),
        T(test_ring_count_and_seq_follow_puts_and_gets),
        T(test_ring_notify_writes_one_byte_per_put_and_get),
        T(test_ring_create_and_open_reject_bad_arguments),
        T(test_ring_open_rejects_a_garbage_segment),
        T(test_ring_fails_cleanly_when_allocation_fails),
        T(test_ring_tests_leave_no_shm_segments_behind),
#undef T
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests_name("dmp_ring", tests, NULL, NULL);
}
