/*
 * test_queue.c - Queue and JoinableQueue with real agents: on one host
 * (the embedded agent, rings in shared memory), across a cluster of three
 * (the program on node1's ipc endpoint, so its own operations are local
 * and children on node2 and node3 reach node1 over direct links), and
 * with the program on node1's tcp endpoint (its children going through
 * their own agents: DMP_DIRECT=0).
 *
 * Covered: put/get of values and raw bytes, timeouts (Empty/Full no
 * earlier than asked, within 200 ms after locally; remote precision
 * printed), put_nowait/get_nowait, qsize/empty/full, close, task_done and
 * join, handles travelling to children anywhere, values of every type,
 * the item size limit (configurable, 64 MiB by default, here and across
 * hosts, where larger items go in parts) with nothing half-delivered, a blocked get woken by a put and a
 * full queue's put by a get, exactly-once delivery with 4 producers and 4
 * consumers over 3 nodes, consumers killed while getting, the owner node
 * dying (DMP_ENODE, never a hang), and no /dev/shm/dmp-* segment left.
 *
 * This binary is also the children's program: main() hands over to
 * dmp_init() first when DMP_CHILD or DMP_ZYGOTE says so. Children report
 * through a second queue as lists [step, rc, t0, t1, result]; t0 and t1 are
 * CLOCK_MONOTONIC, which every process of this host shares, so the parent
 * can compare a child's times with its own.
 *
 * Node names carry this process's pid, so that the /dev/shm checks count
 * only our segments, whatever other test runs on this host do (and the
 * embedded group checks that another agent of our name leaves our rings
 * alone). Where a node is killed, heartbeat 0.2 s and liveness 3: it is
 * dead after about 0.6 s. Elsewhere heartbeat 1 s (dmpd's default).
 *
 * DMP_TEST_GROUPS=ipc (a substring of group names) and DMP_TEST_FILTER
 * (cmocka's test name pattern) run a part; DMP_TEST_EO_ITEMS and
 * DMP_TEST_EO_ITEMS_BOUNDED size the exactly-once runs.
 */
#define _GNU_SOURCE
#include "dmp_test.h"
#include "dmp_impl.h" /* dmp__handle_data, dmp__ring_test_hook */

#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define HEARTBEAT 0.2
#define LIVENESS 3
/* A lost node is reported within heartbeat x liveness, plus a heartbeat
 * of phase and slack for a loaded machine (as test_process.c). */
#define ENODE_WITHIN 3.0
#define JOIN_LIMIT 30.0   /* seconds any join in here may take at most */
#define LOCAL_SLACK 0.2   /* DESIGN.md 3b: within 200 ms after, locally */
#define REMOTE_SLACK 0.5  /* timeouts across hosts: at most this late */
#define REMOTE_WAKE 0.1   /* a blocked remote op wakes within this of the
                           * event (measured: about 1 ms; a heartbeat
                           * interval would mean a missed wake-up) */
#define REPORT_WAIT 20.0  /* a child's report arrives within this */

/* Exactly once: items per producer ($DMP_TEST_EO_ITEMS overrides). */
#define EO_ITEMS_DEFAULT 100000
#define EO_ITEMS_BOUNDED 5000 /* $DMP_TEST_EO_ITEMS_BOUNDED */
#define EO_PRODUCERS 4
#define EO_CONSUMERS 4
#define EO_STOP UINT32_MAX

static double
s_now(void)
{
    return dmp_test_now();
}

/* Fails unless lo <= took <= hi, printing the numbers. */
#define assert_took(took, lo, hi)                                            \
    do {                                                                     \
        double t_ = (took), lo_ = (lo), hi_ = (hi);                          \
        if (t_ < lo_ || t_ > hi_) {                                          \
            print_error("%s:%d: %s = %.3f s, expected [%.3f, %.3f]\n",      \
                        __FILE__, __LINE__, #took, t_, lo_, hi_);            \
            fail();                                                          \
        }                                                                    \
    } while (0)

static void
s_sleep(double seconds)
{
    struct timespec ts = {(time_t)seconds,
                          (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Deterministic content for sized items, and its FNV-1a checksum. */
static void
s_fill(uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t k = 0; k < len; k++)
        buf[k] = (uint8_t)(k * 131u + seed + (k >> 12));
}

static int64_t
s_sum(const uint8_t *buf, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t k = 0; k < len; k++)
        h = (h ^ buf[k]) * 1099511628211ull;
    return (int64_t)(h >> 1);
}

/* ---- values of every type ------------------------------------------------ */

/* Every value type, with edge cases, and `handle` (a queue handle) twice:
 * alone and inside a dict. Takes ownership of handle. */
static dmp_value_t *
s_sample(dmp_value_t *handle)
{
    static uint8_t all[256], big[200 * 1024];
    for (size_t i = 0; i < sizeof all; i++)
        all[i] = (uint8_t)i;
    s_fill(big, sizeof big, 7);
    static const uint8_t nothing[1];
    dmp_value_t *m = dmp_map();
    if (!m || !handle) {
        dmp_value_destroy(&m);
        dmp_value_destroy(&handle);
        return NULL;
    }
    dmp_value_t *h2 = dmp_value_copy(handle);
    if (dmp_map_set_str(m, "key", dmp_str("Python2")) ||
        dmp_map_set(m, dmp_int(1), dmp_list_of(2, dmp_none(), dmp_bool(0))) ||
        dmp_map_set(m, dmp_bytes("\0k", 2), dmp_double(2.5)) ||
        dmp_map_set(m, dmp_none(), dmp_str("")) ||
        dmp_map_set(m, dmp_double(0.5), dmp_map()) ||
        dmp_map_set(m, dmp_bool(0), dmp_int(-7)) ||
        dmp_map_set_str(m, "queue", h2)) {
        dmp_value_destroy(&m);
        dmp_value_destroy(&handle);
        return NULL;
    }
    return dmp_list_of(
        24, dmp_none(), dmp_bool(1), dmp_bool(0), dmp_int(0), dmp_int(-1),
        dmp_int(INT64_MIN), dmp_int(INT64_MAX), dmp_double(0.1),
        dmp_double(-0.0), dmp_double(1e300), dmp_double(INFINITY),
        dmp_double(-INFINITY), dmp_double(NAN), dmp_str(""),
        dmp_str("h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 \xf0\x9f\x90\x8d"),
        dmp_strn("a\0b", 3), dmp_bytes(all, sizeof all),
        dmp_bytes(nothing, 0), dmp_list(), dmp_map(),
        dmp_list_of(1, dmp_list_of(1, dmp_list_of(1, dmp_int(42)))), m,
        dmp_bytes(big, sizeof big), handle);
}

/* Bit-exact equality (NaN, -0.0, handles) through the codec. */
static bool
s_same_encoding(const dmp_value_t *a, const dmp_value_t *b)
{
    uint8_t *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    bool same = a && b && dmp_value_encode(a, &x, &nx) == 0 &&
                dmp_value_encode(b, &y, &ny) == 0 && nx == ny &&
                memcmp(x, y, nx) == 0;
    dmp_free(x);
    dmp_free(y);
    return same;
}

/* ---- handles and /dev/shm --------------------------------------------- */

/* The shared-memory ring name a queue handle carries ("/dmp-..."), from
 * its payload: 'Q', name length, name, id (8), ring length, ring, maxsize. */
static void
s_ring_name(const dmp_queue_t *q, char *out, size_t size)
{
    dmp_value_t *v = dmp_queue_value(q);
    assert_non_null(v);
    size_t len = 0;
    const uint8_t *p = dmp__handle_data(v, &len);
    assert_non_null(p);
    assert_true(len > 2 && p[0] == 'Q');
    size_t nl = p[1];
    size_t rl = p[2 + nl + 8];
    assert_true(3 + nl + 8 + rl <= len && rl < size);
    memcpy(out, p + 3 + nl + 8, rl);
    out[rl] = '\0';
    dmp_value_destroy(&v);
}

/* Whether /dev/shm holds a ring (name as in a handle: "/dmp-..."). */
static bool
s_shm_exists(const char *ring)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "/dev/shm%s", ring);
    return access(path, F_OK) == 0;
}

/* Entries of /dev/shm whose name starts with prefix (no leading '/');
 * prints each. */
static int
s_shm_count(const char *prefix)
{
    DIR *d = opendir("/dev/shm");
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0) {
            print_message("# left in /dev/shm: %s\n", de->d_name);
            n++;
        }
    closedir(d);
    return n;
}

/* Removes the entries of /dev/shm whose name starts with prefix. */
static void
s_shm_remove(const char *prefix)
{
    DIR *d = opendir("/dev/shm");
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0) {
            char name[PATH_MAX];
            snprintf(name, sizeof name, "/%s", de->d_name);
            shm_unlink(name);
        }
    closedir(d);
}

/* ---- the children: targets of this executable ------------------------- */

static dmp_value_t *
s_report_value(int64_t step, int rc, double t0, double t1, dmp_value_t *res)
{
    return dmp_list_of(5, dmp_int(step), dmp_int(rc), dmp_double(t0),
                       dmp_double(t1), res ? res : dmp_none());
}

/* One step of a script: [name, timeout, argument]. */
static dmp_value_t *
s_op(const char *name, double timeout, dmp_value_t *arg)
{
    return dmp_list_of(3, dmp_str(name), dmp_double(timeout),
                       arg ? arg : dmp_none());
}

/*
 * args [Q, R or None, [[op, timeout, arg], ...]]: runs the ops on Q in
 * turn and reports each to R as [i, rc, t0, t1, result]. Ops: put (arg a
 * value), put_bytes (arg bytes), put_size (arg [n, seed]: n generated
 * bytes), put_n (arg n: the ints 0 .. n-1), get (result the value),
 * get_size (result [len, checksum]),
 * qsize/empty/full (result the number), task_done, join, close, ready
 * (nothing: tells the parent we got here), sleep (timeout seconds),
 * return (at once, without destroying the handles).
 * Exits 0 once every op ran; 100+ when it could not start.
 */
DMP_TARGET(q_script)
{
    dmp_queue_t *q = NULL, *r = NULL;
    if (dmp_queue_from_value(dmp_list_get(args, 0), &q) != 0)
        return 101;
    const dmp_value_t *rv = dmp_list_get(args, 1);
    if (dmp_value_type(rv) == DMP_VALUE_HANDLE &&
        dmp_queue_from_value(rv, &r) != 0)
        return 102;
    const dmp_value_t *ops = dmp_list_get(args, 2);
    for (size_t i = 0; i < dmp_value_len(ops); i++) {
        const dmp_value_t *op = dmp_list_get(ops, (int64_t)i);
        const char *name = dmp_value_str(dmp_list_get(op, 0), NULL);
        double timeout = 0;
        dmp_value_get_double(dmp_list_get(op, 1), &timeout);
        const dmp_value_t *arg = dmp_list_get(op, 2);
        if (!name)
            return 103;
        dmp_value_t *res = NULL;
        int rc = 0;
        double t0 = s_now();
        if (strcmp(name, "put") == 0) {
            rc = dmp_queue_put(q, arg, timeout);
        } else if (strcmp(name, "put_bytes") == 0) {
            size_t len = 0;
            const void *data = dmp_value_bytes(arg, &len);
            rc = dmp_queue_put_bytes(q, data, len, timeout);
        } else if (strcmp(name, "put_size") == 0) {
            int64_t n = 0, seed = 0;
            dmp_value_get_int(dmp_list_get(arg, 0), &n);
            dmp_value_get_int(dmp_list_get(arg, 1), &seed);
            uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
            if (!buf)
                return 104;
            s_fill(buf, (size_t)n, (unsigned)seed);
            t0 = s_now();
            rc = dmp_queue_put_bytes(q, buf, (size_t)n, timeout);
            free(buf);
        } else if (strcmp(name, "put_n") == 0) {
            int64_t n = 0;
            dmp_value_get_int(arg, &n);
            for (int64_t k = 0; rc == 0 && k < n; k++) {
                dmp_value_t *v = dmp_int(k);
                rc = dmp_queue_put(q, v, timeout);
                dmp_value_destroy(&v);
            }
        } else if (strcmp(name, "return") == 0) {
            return 0; /* leaves q and r to dmp_fini, as a careless user */
        } else if (strcmp(name, "get") == 0) {
            rc = dmp_queue_get(q, &res, timeout);
        } else if (strcmp(name, "get_size") == 0) {
            void *data = NULL;
            size_t len = 0;
            rc = dmp_queue_get_bytes(q, &data, &len, timeout);
            if (rc == 0)
                res = dmp_list_of(2, dmp_int((int64_t)len),
                                  dmp_int(s_sum(data, len)));
            dmp_free(data);
        } else if (strcmp(name, "qsize") == 0 || strcmp(name, "empty") == 0 ||
                   strcmp(name, "full") == 0) {
            int64_t n = name[0] == 'q'   ? dmp_queue_qsize(q)
                        : name[0] == 'e' ? dmp_queue_empty(q)
                                         : dmp_queue_full(q);
            rc = n < 0 ? (int)n : 0;
            res = dmp_int(n);
        } else if (strcmp(name, "task_done") == 0) {
            rc = dmp_queue_task_done(q);
        } else if (strcmp(name, "join") == 0) {
            rc = dmp_queue_join(q, timeout);
        } else if (strcmp(name, "close") == 0) {
            rc = dmp_queue_close(q);
        } else if (strcmp(name, "sleep") == 0) {
            s_sleep(timeout);
        } else if (strcmp(name, "ready") != 0) {
            return 105;
        }
        double t1 = s_now();
        if (r) {
            dmp_value_t *rep = s_report_value((int64_t)i, rc, t0, t1, res);
            int prc = dmp_queue_put(r, rep, DMP_FOREVER);
            dmp_value_destroy(&rep);
            if (prc) {
                fprintf(stderr, "q_script: report %zu: %s\n", i,
                        dmp_strerror(prc));
                return 106;
            }
        } else {
            dmp_value_destroy(&res);
        }
    }
    /* the reports are at the owner before we exit (close says if not) */
    int rc = r ? dmp_queue_close(r) : 0;
    if (rc)
        fprintf(stderr, "q_script: reports: %s\n", dmp_strerror(rc));
    dmp_queue_destroy(&q);
    dmp_queue_destroy(&r);
    return rc ? 107 : 0;
}

/* args [Q, R]: gets one item and puts it, unchanged, into R (values of
 * every type there and back). */
DMP_TARGET(q_echo)
{
    dmp_queue_t *q = NULL, *r = NULL;
    if (dmp_queue_from_value(dmp_list_get(args, 0), &q) != 0 ||
        dmp_queue_from_value(dmp_list_get(args, 1), &r) != 0)
        return 101;
    dmp_value_t *v = NULL;
    int rc = dmp_queue_get(q, &v, 10.0);
    if (rc == 0) {
        /* the handle inside works here too: it is R itself */
        dmp_queue_t *inner = NULL;
        rc = dmp_queue_from_value(dmp_list_get(v, -1), &inner);
        if (rc == 0)
            rc = dmp_queue_put(inner, v, 10.0);
        dmp_queue_destroy(&inner);
    }
    dmp_value_destroy(&v);
    dmp_queue_destroy(&q);
    dmp_queue_destroy(&r);
    return rc ? 1 : 0;
}

/* The test hook of the child below: dies holding an item it copied but
 * did not commit taking. */
static void
s_die_at(const char *point)
{
    if (strcmp(point, "get-copied") == 0)
        raise(SIGKILL);
}

/* args [Q]: killed by SIGKILL inside get, after copying the item. */
DMP_TARGET(q_die_in_get)
{
    dmp_queue_t *q = NULL;
    if (dmp_queue_from_value(dmp_list_get(args, 0), &q) != 0)
        return 101;
    dmp__ring_test_hook = s_die_at;
    void *data = NULL;
    size_t len = 0;
    int rc = dmp_queue_get_bytes(q, &data, &len, 10.0);
    dmp_free(data);
    dmp_queue_destroy(&q);
    return rc == 0 ? 2 : 3; /* not reached when the ring is local */
}

/* args [R]: creates a queue on its own node, puts its handle into R, and
 * returns without destroying it (dmp_fini must remove it). */
DMP_TARGET(q_create_and_leave)
{
    dmp_queue_t *r = NULL, *q = NULL;
    if (dmp_queue_from_value(dmp_list_get(args, 0), &r) != 0)
        return 101;
    if (dmp_queue_new(NULL, &q) != 0)
        return 102;
    dmp_value_t *item = dmp_str("left behind");
    int rc = dmp_queue_put(q, item, 5.0);
    dmp_value_destroy(&item);
    dmp_value_t *h = dmp_queue_value(q);
    if (rc == 0)
        rc = dmp_queue_put(r, h, 10.0);
    dmp_value_destroy(&h);
    dmp_queue_destroy(&r);
    return rc ? 1 : 0; /* q is not destroyed on purpose */
}

/* args [R, CTL]: the owner of the queues in the owner-dies group. Creates
 * Q (maxsize 1) and E on its node, sends [Q, E] to R, then waits on CTL
 * until told to stop or its node is gone. */
DMP_TARGET(q_owner)
{
    dmp_queue_t *r = NULL, *ctl = NULL, *q = NULL, *e = NULL;
    if (dmp_queue_from_value(dmp_list_get(args, 0), &r) != 0 ||
        dmp_queue_from_value(dmp_list_get(args, 1), &ctl) != 0)
        return 101;
    dmp_queue_opts_t o = {.maxsize = 1};
    if (dmp_queue_new(&o, &q) != 0 || dmp_queue_new(NULL, &e) != 0)
        return 102;
    dmp_value_t *h = dmp_list_of(2, dmp_queue_value(q), dmp_queue_value(e));
    int rc = h ? dmp_queue_put(r, h, 10.0) : -ENOMEM;
    dmp_value_destroy(&h);
    dmp_value_t *v = NULL;
    if (rc == 0)
        rc = dmp_queue_get(ctl, &v, 60.0);
    dmp_value_destroy(&v);
    dmp_queue_destroy(&q);
    dmp_queue_destroy(&e);
    dmp_queue_destroy(&r);
    dmp_queue_destroy(&ctl);
    return 0;
}

/* Exactly once: an item is {producer, seq} in 16 bytes. */
typedef struct {
    uint32_t producer;
    uint32_t magic;
    uint64_t seq;
} s_item_t;
#define EO_MAGIC 0x51554555u

/* args [Q, producer, n]: puts items 0..n-1 in order. Exit: 0, or 1 when a
 * put failed (the rc is printed). */
DMP_TARGET(eo_producer)
{
    dmp_queue_t *q = NULL;
    int64_t id = 0, n = 0;
    if (dmp_queue_from_value(dmp_list_get(args, 0), &q) != 0 ||
        dmp_value_get_int(dmp_list_get(args, 1), &id) != 0 ||
        dmp_value_get_int(dmp_list_get(args, 2), &n) != 0)
        return 101;
    for (int64_t i = 0; i < n; i++) {
        s_item_t it = {(uint32_t)id, EO_MAGIC, (uint64_t)i};
        int rc = dmp_queue_put_bytes(q, &it, sizeof it, DMP_FOREVER);
        if (rc) {
            fprintf(stderr, "producer %d: put %lld: %s\n", (int)id,
                    (long long)i, dmp_strerror(rc));
            return 1;
        }
    }
    /* close: every item is at the owner (remote puts are pipelined) */
    int rc = dmp_queue_close(q);
    if (rc)
        fprintf(stderr, "producer %d: close: %s\n", (int)id,
                dmp_strerror(rc));
    dmp_queue_destroy(&q);
    return rc ? 1 : 0;
}

/* args [Q, R, consumer, n]: gets until a stop item; reports [consumer,
 * count, duplicates, out of order, malformed, node, seconds, bitmap of
 * producer 0 .. 3] to R. */
DMP_TARGET(eo_consumer)
{
    dmp_queue_t *q = NULL, *r = NULL;
    int64_t id = 0, n = 0;
    if (dmp_queue_from_value(dmp_list_get(args, 0), &q) != 0 ||
        dmp_queue_from_value(dmp_list_get(args, 1), &r) != 0 ||
        dmp_value_get_int(dmp_list_get(args, 2), &id) != 0 ||
        dmp_value_get_int(dmp_list_get(args, 3), &n) != 0)
        return 101;
    size_t bm_len = ((size_t)n + 7) / 8;
    uint8_t *bm[EO_PRODUCERS];
    int64_t last[EO_PRODUCERS];
    for (int p = 0; p < EO_PRODUCERS; p++) {
        bm[p] = calloc(1, bm_len);
        last[p] = -1;
        if (!bm[p])
            return 102;
    }
    int64_t count = 0, dup = 0, ooo = 0, bad = 0;
    double t0 = s_now();
    int rc;
    for (;;) {
        void *data = NULL;
        size_t len = 0;
        rc = dmp_queue_get_bytes(q, &data, &len, 60.0);
        if (rc)
            break;
        s_item_t it;
        if (len != sizeof it) {
            bad++;
            dmp_free(data);
            continue;
        }
        memcpy(&it, data, sizeof it);
        dmp_free(data);
        if (it.magic != EO_MAGIC) {
            bad++;
            continue;
        }
        if (it.producer == EO_STOP)
            break;
        if (it.producer >= EO_PRODUCERS || it.seq >= (uint64_t)n) {
            bad++;
            continue;
        }
        int p = (int)it.producer;
        if ((int64_t)it.seq <= last[p])
            ooo++;
        last[p] = (int64_t)it.seq;
        uint8_t bit = (uint8_t)(1u << (it.seq % 8));
        if (bm[p][it.seq / 8] & bit)
            dup++;
        bm[p][it.seq / 8] |= bit;
        count++;
    }
    double secs = s_now() - t0;
    dmp_value_t *rep = dmp_list_of(
        12, dmp_int(id), dmp_int(count), dmp_int(dup), dmp_int(ooo),
        dmp_int(bad), dmp_str(dmp_current_node()), dmp_double(secs),
        dmp_int(rc), dmp_bytes(bm[0], bm_len), dmp_bytes(bm[1], bm_len),
        dmp_bytes(bm[2], bm_len), dmp_bytes(bm[3], bm_len));
    for (int p = 0; p < EO_PRODUCERS; p++)
        free(bm[p]);
    int prc = rep ? dmp_queue_put(r, rep, 30.0) : -ENOMEM;
    dmp_value_destroy(&rep);
    /* close: the report is at the owner (a pipelined put's error shows
     * here, destroy would drop it) */
    if (prc == 0)
        prc = dmp_queue_close(r);
    if (prc)
        fprintf(stderr, "consumer %d: report: %s\n", (int)id,
                dmp_strerror(prc));
    dmp_queue_destroy(&q);
    dmp_queue_destroy(&r);
    return prc ? 1 : 0;
}

/* ---- fixture ------------------------------------------------------------- */

typedef enum {
    S_EMBEDDED, /* dmp_init(): a private agent */
    S_IPC1,     /* cluster, the program on node1's ipc endpoint */
    S_TCP1,     /* cluster, the program on node1's tcp endpoint (on this
                 * host: it maps node1's rings all the same) */
    S_IPC2,     /* cluster, the program on node2's ipc endpoint */
} s_mode_t;

static struct {
    s_mode_t mode;
    dmp_test_sandbox_t *sb;
    dmp_test_agent_t *agents[3];
    char names[3][DMP__NAME_MAX]; /* node names; [0] is ours */
    char shm_prefix[3][DMP__NAME_MAX + 8]; /* "dmp-NAME-" */
    int group;                    /* a letter per cluster: fresh names */
} s_c;

/* Known limitations of the remote paths, open in the Queue and Pipe issue:
 * such a test is skipped (and says why) in the groups where it would fail,
 * so it runs again as soon as the line below is removed. */
#define S_KNOWN_LIMIT(cond, why)                                              \
    do {                                                                      \
        if (cond) {                                                           \
            print_message("# known limitation, skipped: %s\n", why);          \
            skip();                                                           \
        }                                                                     \
    } while (0)


static const char *
s_node(size_t i)
{
    return s_c.names[i];
}

/* Handles a test still holds: when an assertion fails, cmocka leaves the
 * test midway and the group's teardown kills and frees what is left. */
#define HELD_MAX 64
static dmp_process_t *s_procs[HELD_MAX];
static dmp_queue_t *s_queues[HELD_MAX];

static dmp_process_t *
s_new_proc(const dmp_process_opts_t *o)
{
    dmp_process_t *p = NULL;
    assert_dmp_ok(dmp_process_new(o, &p));
    for (size_t i = 0; i < HELD_MAX; i++)
        if (!s_procs[i]) {
            s_procs[i] = p;
            break;
        }
    return p;
}

static void
s_destroy_proc(dmp_process_t **p)
{
    for (size_t i = 0; i < HELD_MAX; i++)
        if (*p && s_procs[i] == *p)
            s_procs[i] = NULL;
    dmp_process_destroy(p);
}

static dmp_queue_t *
s_queue(int64_t maxsize, uint64_t item_max)
{
    dmp_queue_opts_t o = {.maxsize = maxsize, .item_max = item_max};
    dmp_queue_t *q = NULL;
    int rc = dmp_queue_new(&o, &q);
    if (rc)
        print_error("dmp_queue_new: %s: %s\n", dmp_strerror(rc),
                    dmp_default_client()
                        ? dmp_client_errmsg(dmp_default_client())
                        : "");
    assert_dmp_ok(rc);
    for (size_t i = 0; i < HELD_MAX; i++)
        if (!s_queues[i]) {
            s_queues[i] = q;
            break;
        }
    return q;
}

static void
s_destroy_queue(dmp_queue_t **q)
{
    for (size_t i = 0; i < HELD_MAX; i++)
        if (*q && s_queues[i] == *q)
            s_queues[i] = NULL;
    dmp_queue_destroy(q);
}

static void
s_destroy_held(void)
{
    for (size_t i = 0; i < HELD_MAX; i++)
        if (s_procs[i]) {
            dmp_process_kill(s_procs[i]);
            dmp_process_join(s_procs[i], 5.0);
            s_destroy_proc(&s_procs[i]);
        }
    for (size_t i = 0; i < HELD_MAX; i++)
        if (s_queues[i])
            s_destroy_queue(&s_queues[i]);
}

/* Starts target on node (NULL: this program's node). Takes args. */
static dmp_process_t *
s_start(const char *target, const char *node, dmp_value_t *args)
{
    assert_non_null(args);
    dmp_process_opts_t o = {.target = target, .node = node, .args = args};
    dmp_process_t *p = s_new_proc(&o);
    dmp_value_destroy(&args);
    int rc = dmp_process_start(p);
    if (rc)
        print_error("start of '%s' on '%s': %s: %s\n", target,
                    node ? node : "(default)", dmp_strerror(rc),
                    dmp_client_errmsg(dmp_default_client()));
    assert_dmp_ok(rc);
    return p;
}

/* Joins within JOIN_LIMIT, expects exit code `want`, destroys. */
static void
s_join(dmp_process_t **p, int want)
{
    int rc = dmp_process_join(*p, JOIN_LIMIT);
    if (rc)
        print_error("join of %s (pid %d) on %s: %s\n", dmp_process_name(*p),
                    dmp_process_pid(*p), dmp_process_node(*p),
                    dmp_err_name(rc));
    assert_dmp_ok(rc);
    int code = -12345;
    assert_dmp_ok(dmp_process_exitcode(*p, &code));
    if (code != want)
        print_error("%s on %s: exit code %d, expected %d\n",
                    dmp_process_name(*p), dmp_process_node(*p), code, want);
    assert_int_equal(code, want);
    s_destroy_proc(p);
}

/* q_script on node with ops (taken), reporting to r (NULL: no reports). */
static dmp_process_t *
s_script(const char *node, dmp_queue_t *q, dmp_queue_t *r, dmp_value_t *ops)
{
    return s_start("q_script", node,
                   dmp_list_of(3, dmp_queue_value(q),
                               r ? dmp_queue_value(r) : dmp_none(), ops));
}

typedef struct {
    int64_t step;
    int rc;
    double t0, t1;
    dmp_value_t *res; /* owned */
} s_rep_t;

/* The next report from r (fails the test if none comes in time). */
static s_rep_t
s_report(dmp_queue_t *r)
{
    dmp_value_t *v = NULL;
    int rc = dmp_queue_get(r, &v, REPORT_WAIT);
    if (rc)
        print_error("no report from a child: %s\n", dmp_err_name(rc));
    assert_dmp_ok(rc);
    s_rep_t rep = {0};
    int64_t code = 0;
    assert_int_equal(dmp_value_len(v), 5);
    assert_dmp_ok(dmp_value_get_int(dmp_list_get(v, 0), &rep.step));
    assert_dmp_ok(dmp_value_get_int(dmp_list_get(v, 1), &code));
    assert_dmp_ok(dmp_value_get_double(dmp_list_get(v, 2), &rep.t0));
    assert_dmp_ok(dmp_value_get_double(dmp_list_get(v, 3), &rep.t1));
    rep.rc = (int)code;
    rep.res = dmp_value_copy(dmp_list_get(v, 4));
    dmp_value_destroy(&v);
    return rep;
}

/* The next report, which must be step `step` with rc `want`. */
static s_rep_t
s_expect(dmp_queue_t *r, int64_t step, int want)
{
    s_rep_t rep = s_report(r);
    if (rep.step != step || rep.rc != want)
        print_error("child step %lld: %s, expected step %lld: %s\n",
                    (long long)rep.step, dmp_err_name(rep.rc),
                    (long long)step, dmp_err_name(want));
    assert_int_equal(rep.step, step);
    assert_dmp_err(rep.rc, want);
    return rep;
}

/* The next n reports, whatever they say (for tests that print all the
 * facts before asserting). A missing one has step -1 and rc -ETIMEDOUT. */
static void
s_reports(dmp_queue_t *r, size_t n, s_rep_t *reps, double timeout)
{
    for (size_t i = 0; i < n; i++) {
        dmp_value_t *v = NULL;
        s_rep_t rep = {-1, -ETIMEDOUT, 0, 0, NULL};
        if (dmp_queue_get(r, &v, timeout) == 0 && dmp_value_len(v) == 5) {
            int64_t code = 0;
            dmp_value_get_int(dmp_list_get(v, 0), &rep.step);
            dmp_value_get_int(dmp_list_get(v, 1), &code);
            dmp_value_get_double(dmp_list_get(v, 2), &rep.t0);
            dmp_value_get_double(dmp_list_get(v, 3), &rep.t1);
            rep.rc = (int)code;
            rep.res = dmp_value_copy(dmp_list_get(v, 4));
        }
        dmp_value_destroy(&v);
        reps[i] = rep;
        timeout = 1.0; /* the rest follow the first closely */
    }
}

static int64_t
s_res_int(const s_rep_t *rep)
{
    int64_t n = INT64_MIN;
    assert_dmp_ok(dmp_value_get_int(rep->res, &n));
    return n;
}

static void
s_free_rep(s_rep_t *rep)
{
    dmp_value_destroy(&rep->res);
}

static void
s_put_str(dmp_queue_t *q, const char *s, double timeout)
{
    dmp_value_t *v = dmp_str(s);
    assert_dmp_ok(dmp_queue_put(q, v, timeout));
    dmp_value_destroy(&v);
}

static void
s_get_str(dmp_queue_t *q, const char *want, double timeout)
{
    dmp_value_t *v = NULL;
    int rc = dmp_queue_get(q, &v, timeout);
    if (rc)
        print_error("get of '%s': %s\n", want, dmp_err_name(rc));
    assert_dmp_ok(rc);
    const char *s = dmp_value_str(v, NULL);
    if (!s || strcmp(s, want) != 0)
        print_error("got '%s', expected '%s'\n", s ? s : "(not a str)", want);
    assert_non_null(s);
    assert_string_equal(s, want);
    dmp_value_destroy(&v);
}

static int
s_cluster_up(s_mode_t mode)
{
    memset(&s_c.agents, 0, sizeof s_c.agents);
    s_c.mode = mode;
    s_c.group++;
    assert_dmp_ok(dmp_test_sandbox_new(&s_c.sb));
    for (size_t i = 0; i < 3; i++) {
        snprintf(s_c.names[i], sizeof s_c.names[i], "q%d%c-node%zu",
                 (int)getpid(), 'a' + s_c.group, i + 1);
        snprintf(s_c.shm_prefix[i], sizeof s_c.shm_prefix[i], "dmp-%s-",
                 s_c.names[i]);
        assert_dmp_ok(dmp_test_agent_new(s_c.sb, s_c.names[i],
                                         &s_c.agents[i]));
        /* Fast failure detection only where a node is killed: elsewhere
         * dmpd's default (1 s), so that a loaded machine does not see a
         * busy node as dead. */
        s_c.agents[i]->heartbeat = mode == S_IPC2 ? HEARTBEAT : 1.0;
        s_c.agents[i]->liveness = LIVENESS;
    }
    dmp_test_agents_mesh(s_c.agents, 3);
    /* Both paths to an owner run: children reach it over direct links
     * here, through their agents in the tcp group (an agent passes
     * DMP_DIRECT to its jobs). */
    if (mode == S_TCP1)
        setenv("DMP_DIRECT", "0", 1);
    assert_dmp_ok(dmp_test_agents_start(s_c.agents, 3));
    unsetenv("DMP_DIRECT");
    dmp_test_agent_t *a = s_c.agents[mode == S_IPC2 ? 1 : 0];
    dmp_client_opts_t opts = {.address = a->ipc_address};
    if (mode == S_TCP1) {
        opts.address = a->address;
        opts.key_file = s_c.sb->client_key;
        opts.server_key = a->pub_file;
    }
    char err[512] = "";
    int rc = dmp_init_opts(&opts, err, sizeof err);
    if (rc)
        print_error("dmp_init_opts: %s\n", err);
    assert_dmp_ok(rc);
    assert_string_equal(dmp_client_node(dmp_default_client()), a->name);
    if (mode == S_IPC2) { /* node2 is "ours": swap, so s_node(0) is it */
        char tmp[DMP__NAME_MAX];
        memcpy(tmp, s_c.names[0], sizeof tmp);
        memcpy(s_c.names[0], s_c.names[1], sizeof tmp);
        memcpy(s_c.names[1], tmp, sizeof tmp);
    }
    return 0;
}

static int
s_up_embedded(void **state)
{
    (void)state;
    s_c.mode = S_EMBEDDED;
    s_c.sb = NULL;
    char err[512] = "";
    int rc = dmp_init_opts(NULL, err, sizeof err);
    if (rc)
        print_error("dmp_init: %s\n", err);
    assert_dmp_ok(rc);
    dmp__strlcpy(s_c.names[0], dmp_client_node(dmp_default_client()),
                 sizeof s_c.names[0]);
    s_c.names[1][0] = s_c.names[2][0] = '\0';
    return 0;
}

static int
s_up_ipc1(void **state)
{
    (void)state;
    return s_cluster_up(S_IPC1);
}

static int
s_up_tcp1(void **state)
{
    (void)state;
    return s_cluster_up(S_TCP1);
}

static int
s_up_ipc2(void **state)
{
    (void)state;
    return s_cluster_up(S_IPC2);
}

static int
s_down(void **state)
{
    (void)state;
    s_destroy_held();
    dmp_fini();
    if (s_c.sb) {
        /* SIGTERM first: a stopping agent removes its rings */
        for (size_t i = 0; i < 3; i++)
            if (s_c.agents[i] && dmp_test_agent_is_running(s_c.agents[i]))
                dmp_test_agent_stop(s_c.agents[i], 5.0);
        dmp_test_sandbox_destroy(&s_c.sb);
        /* Last resort after a failed test (a node killed and not
         * restarted): segments of our nodes, whose names no one else
         * uses. test_no_ring_is_left_in_dev_shm checked before this. */
        for (size_t i = 0; i < 3; i++)
            s_shm_remove(s_c.shm_prefix[i]);
    }
    memset(s_c.agents, 0, sizeof s_c.agents);
    return 0;
}

/* ---- same tests, any mode -------------------------------------------------- */

/* The happy path, as a user writes it: one child puts "Hello World",
 * another gets it; the handle travels in their args. On a cluster the
 * putter runs on node2 and the getter on node3. */
static void
test_put_in_one_child_get_in_another(void **state)
{
    (void)state;
    dmp_queue_t *q = s_queue(0, 0), *r = s_queue(0, 0);
    const char *putter = s_c.mode == S_EMBEDDED ? NULL : s_node(1);
    const char *getter = s_c.mode == S_EMBEDDED ? NULL : s_node(2);
    dmp_process_t *p1 = s_script(
        putter, q, NULL, dmp_list_of(1, s_op("put", 5, dmp_str("Hello World"))));
    dmp_process_t *p2 = s_script(getter, q, r,
                                 dmp_list_of(1, s_op("get", 10, NULL)));
    s_rep_t rep = s_expect(r, 0, 0);
    assert_string_equal(dmp_value_str(rep.res, NULL), "Hello World");
    s_free_rep(&rep);
    s_join(&p1, 0);
    s_join(&p2, 0);
    assert_int_equal(dmp_queue_qsize(q), 0);
    assert_int_equal(dmp_queue_empty(q), 1);
    s_destroy_queue(&q);
    s_destroy_queue(&r);
}

/* This program's own operations: FIFO order, values and bytes, an empty
 * bytes item, qsize/empty/full, put_nowait/get_nowait. */
static void
test_own_put_get_nowait_qsize_empty_full(void **state)
{
    (void)state;
    dmp_queue_t *q = s_queue(3, 0);
    assert_int_equal(dmp_queue_qsize(q), 0);
    assert_int_equal(dmp_queue_empty(q), 1);
    assert_int_equal(dmp_queue_full(q), 0);
    void *data = NULL;
    size_t len = 99;
    assert_dmp_err(dmp_queue_get_bytes(q, &data, &len, 0), DMP_EEMPTY);
    s_put_str(q, "one", 0);
    assert_dmp_ok(dmp_queue_put_bytes(q, "", 0, 0)); /* empty item */
    assert_dmp_ok(dmp_queue_put_bytes(q, "\0\1\2", 3, 0));
    assert_int_equal(dmp_queue_qsize(q), 3);
    assert_int_equal(dmp_queue_empty(q), 0);
    assert_int_equal(dmp_queue_full(q), 1);
    dmp_value_t *extra = dmp_int(4);
    double t0 = s_now();
    assert_dmp_err(dmp_queue_put(q, extra, 0), DMP_EFULL);     /* put_nowait */
    assert_dmp_err(dmp_queue_put(q, extra, -1.0), DMP_EFULL);
    assert_true(s_now() - t0 < 0.2);
    s_get_str(q, "one", 0);
    assert_dmp_ok(dmp_queue_get_bytes(q, &data, &len, 0));
    assert_int_equal(len, 0);
    dmp_free(data);
    assert_dmp_ok(dmp_queue_put(q, extra, 0)); /* a slot is free again */
    assert_dmp_ok(dmp_queue_get_bytes(q, &data, &len, 0));
    assert_int_equal(len, 3);
    assert_memory_equal(data, "\0\1\2", 3);
    dmp_free(data);
    dmp_value_t *v = NULL;
    assert_dmp_ok(dmp_queue_get(q, &v, 0));
    assert_true(dmp_value_equal(v, extra));
    dmp_value_destroy(&v);
    dmp_value_destroy(&extra);
    t0 = s_now();
    assert_dmp_err(dmp_queue_get(q, &v, 0), DMP_EEMPTY); /* get_nowait */
    assert_dmp_err(dmp_queue_get(q, &v, -1.0), DMP_EEMPTY);
    assert_true(s_now() - t0 < 0.2);
    assert_null(v);
    /* bytes that are not an encoded value: get says so, not a crash */
    assert_dmp_ok(dmp_queue_put_bytes(q, "\xff\xfe", 2, 0));
    int rc = dmp_queue_get(q, &v, 0);
    assert_int_not_equal(rc, 0);
    assert_null(v);
    s_destroy_queue(&q);
}

/* Empty and Full after the timeout: no earlier, and within LOCAL_SLACK
 * when this program's operations are local (REMOTE_SLACK over tcp). */
static void
test_own_timeouts_are_honoured(void **state)
{
    (void)state;
    bool local = s_c.mode != S_TCP1;
    double slack = local ? LOCAL_SLACK : REMOTE_SLACK;
    dmp_queue_t *q = s_queue(1, 0);
    static const double waits[] = {0.1, 0.3, 0.5};
    double worst = 0;
    for (size_t i = 0; i < 3; i++) {
        dmp_value_t *v = NULL;
        double t0 = s_now();
        assert_dmp_err(dmp_queue_get(q, &v, waits[i]), DMP_EEMPTY);
        double late = s_now() - t0 - waits[i];
        assert_took(late, 0, slack);
        worst = late > worst ? late : worst;
    }
    s_put_str(q, "x", 0);
    for (size_t i = 0; i < 3; i++) {
        dmp_value_t *v = dmp_int(1);
        double t0 = s_now();
        assert_dmp_err(dmp_queue_put(q, v, waits[i]), DMP_EFULL);
        double late = s_now() - t0 - waits[i];
        dmp_value_destroy(&v);
        assert_took(late, 0, slack);
        worst = late > worst ? late : worst;
    }
    print_message("# %s get/put timeouts: at most %.1f ms late\n",
                  local ? "local" : "remote (tcp)", worst * 1e3);
    s_destroy_queue(&q);
}

/* A child blocked in get (on this node, and on node2 and node3) wakes
 * when this program puts; its wake-up latency is printed. */
static void
test_blocked_get_wakes_when_an_item_arrives(void **state)
{
    (void)state;
    const char *where[3] = {NULL, s_node(1), s_node(2)};
    size_t n = s_c.mode == S_EMBEDDED ? 1 : 3;
    for (size_t i = 0; i < n; i++) {
        dmp_queue_t *q = s_queue(0, 0), *r = s_queue(0, 0);
        dmp_process_t *p = s_script(
            where[i], q, r,
            dmp_list_of(2, s_op("ready", 0, NULL), s_op("get", 10, NULL)));
        s_rep_t ready = s_expect(r, 0, 0);
        s_free_rep(&ready);
        /* Give its get time to block (at the owner, for a remote one):
         * a wait for an event we cannot observe, not a synchronisation
         * the result depends on. */
        s_sleep(0.3);
        double put_at = s_now();
        s_put_str(q, "wake", 0);
        s_rep_t rep = s_expect(r, 1, 0);
        double latency = rep.t1 - put_at;
        print_message("# get blocked on %s woke %.2f ms after the put "
                      "(waited %.2f s)\n",
                      where[i] ? where[i] : "this node", latency * 1e3,
                      rep.t1 - rep.t0);
        assert_string_equal(dmp_value_str(rep.res, NULL), "wake");
        assert_true(rep.t1 - rep.t0 >= 0.3);
        bool local = where[i] == NULL && s_c.mode != S_TCP1;
        assert_took(latency, 0, local ? LOCAL_SLACK : REMOTE_WAKE);
        s_free_rep(&rep);
        s_join(&p, 0);
        s_destroy_queue(&q);
        s_destroy_queue(&r);
    }
}

/* A full queue blocks a child's put until this program gets. */
static void
test_full_queue_blocks_put_until_a_get_frees_a_slot(void **state)
{
    (void)state;
    const char *where[3] = {NULL, s_node(1), s_node(2)};
    size_t n = s_c.mode == S_EMBEDDED ? 1 : 3;
    for (size_t i = 0; i < n; i++) {
        dmp_queue_t *q = s_queue(2, 0), *r = s_queue(0, 0);
        s_put_str(q, "a", 0);
        s_put_str(q, "b", 0);
        dmp_process_t *p = s_script(
            where[i], q, r,
            dmp_list_of(4, s_op("put", 0, dmp_str("c")),
                        s_op("put", 0.2, dmp_str("c")),
                        s_op("ready", 0, NULL),
                        s_op("put", 10, dmp_str("c"))));
        s_rep_t rep = s_expect(r, 0, DMP_EFULL);
        s_free_rep(&rep);
        rep = s_expect(r, 1, DMP_EFULL);
        assert_true(rep.t1 - rep.t0 >= 0.2);
        s_free_rep(&rep);
        rep = s_expect(r, 2, 0);
        s_free_rep(&rep);
        s_sleep(0.3); /* let the put block (see the test above) */
        assert_int_equal(dmp_queue_full(q), 1);
        double get_at = s_now();
        s_get_str(q, "a", 0);
        rep = s_expect(r, 3, 0);
        double latency = rep.t1 - get_at;
        print_message("# put blocked on %s returned %.2f ms after the get\n",
                      where[i] ? where[i] : "this node", latency * 1e3);
        bool local = where[i] == NULL && s_c.mode != S_TCP1;
        assert_took(latency, 0, local ? LOCAL_SLACK : REMOTE_WAKE);
        s_free_rep(&rep);
        s_join(&p, 0);
        s_get_str(q, "b", 0);
        s_get_str(q, "c", 0);
        assert_int_equal(dmp_queue_qsize(q), 0);
        s_destroy_queue(&q);
        s_destroy_queue(&r);
    }
}

/* Timeouts of a child's own operations (remote ones on a cluster). */
static void
test_child_timeouts_are_honoured(void **state)
{
    (void)state;
    const char *where = s_c.mode == S_EMBEDDED ? NULL : s_node(1);
    bool local = where == NULL && s_c.mode != S_TCP1;
    dmp_queue_t *q = s_queue(1, 0), *r = s_queue(0, 0);
    dmp_process_t *p = s_script(
        where, q, r,
        dmp_list_of(7, s_op("get", 0, NULL), s_op("get", 0.1, NULL),
                    s_op("get", 0.5, NULL), s_op("put", 0, dmp_int(1)),
                    s_op("put", 0, dmp_int(2)), s_op("put", 0.3, dmp_int(3)),
                    s_op("put", 0.5, dmp_int(3))));
    static const double waits[] = {0, 0.1, 0.5, 0, 0, 0.3, 0.5};
    static const int want[] = {DMP_EEMPTY, DMP_EEMPTY, DMP_EEMPTY, 0,
                               DMP_EFULL, DMP_EFULL, DMP_EFULL};
    double worst = 0;
    for (int i = 0; i < 7; i++) {
        s_rep_t rep = s_expect(r, i, want[i]);
        double late = rep.t1 - rep.t0 - waits[i];
        print_message("# %s: op %d (%s, timeout %.1f) took %.2f ms\n",
                      where ? where : "this node", i, dmp_err_name(want[i]),
                      waits[i], (rep.t1 - rep.t0) * 1e3);
        if (waits[i] > 0)
            assert_true(late >= 0);
        worst = late > worst ? late : worst;
        s_free_rep(&rep);
    }
    print_message("# %s timeouts of a child on %s: at most %.1f ms late\n",
                  local ? "local" : "remote", where ? where : "this node",
                  worst * 1e3);
    assert_took(worst, 0, local ? LOCAL_SLACK : REMOTE_SLACK);
    s_join(&p, 0);
    s_destroy_queue(&q);
    s_destroy_queue(&r);
}

/* qsize, empty and full as a child sees them; close stops our puts only. */
static void
test_qsize_empty_full_in_a_child_and_close(void **state)
{
    (void)state;
    const char *where = s_c.mode == S_EMBEDDED ? NULL : s_node(2);
    dmp_queue_t *q = s_queue(2, 0), *r = s_queue(0, 0);
    dmp_process_t *p = s_script(
        where, q, r,
        dmp_list_of(9, s_op("qsize", 0, NULL), s_op("empty", 0, NULL),
                    s_op("full", 0, NULL), s_op("put", 1, dmp_str("a")),
                    s_op("put", 1, dmp_str("b")), s_op("qsize", 0, NULL),
                    s_op("empty", 0, NULL), s_op("full", 0, NULL),
                    s_op("close", 0, NULL)));
    static const int64_t want[] = {0, 1, 0, -1, -1, 2, 0, 1, -1};
    for (int i = 0; i < 9; i++) {
        s_rep_t rep = s_expect(r, i, 0);
        if (want[i] >= 0)
            assert_int_equal(s_res_int(&rep), want[i]);
        s_free_rep(&rep);
    }
    s_join(&p, 0);
    assert_int_equal(dmp_queue_qsize(q), 2);
    assert_int_equal(dmp_queue_full(q), 1);
    /* close: our puts fail, gets go on, others still put */
    assert_dmp_ok(dmp_queue_close(q));
    dmp_value_t *v = dmp_str("late");
    assert_dmp_err(dmp_queue_put(q, v, 0), -EBADF);
    assert_dmp_err(dmp_queue_put_bytes(q, "x", 1, 0), -EBADF);
    dmp_value_destroy(&v);
    s_get_str(q, "a", 0);
    s_get_str(q, "b", 0);
    p = s_script(where, q, r,
                 dmp_list_of(2, s_op("put", 1, dmp_str("c")),
                             s_op("close", 0, NULL)));
    s_rep_t rep = s_expect(r, 0, 0);
    s_free_rep(&rep);
    rep = s_expect(r, 1, 0);
    s_free_rep(&rep);
    s_join(&p, 0);
    s_get_str(q, "c", 1.0);
    s_destroy_queue(&q);
    s_destroy_queue(&r);
}

/* JoinableQueue: join waits until every item put is task_done, across
 * processes (a child on node3 joins while this program and a child on
 * node2 do the work). */
static void
test_joinable_queue_task_done_and_join(void **state)
{
    (void)state;
    const char *worker = s_c.mode == S_EMBEDDED ? NULL : s_node(1);
    const char *joiner = s_c.mode == S_EMBEDDED ? NULL : s_node(2);
    dmp_queue_t *q = s_queue(0, 0), *r = s_queue(0, 0), *r2 = s_queue(0, 0);
    assert_dmp_ok(dmp_queue_join(q, 0)); /* nothing unfinished */
    assert_dmp_err(dmp_queue_task_done(q), -EINVAL); /* Python's ValueError */
    for (int i = 0; i < 4; i++)
        s_put_str(q, "task", 0);
    double t0 = s_now();
    assert_dmp_err(dmp_queue_join(q, 0.3), -ETIMEDOUT);
    assert_took(s_now() - t0, 0.3,
                0.3 + (s_c.mode == S_TCP1 ? REMOTE_SLACK : LOCAL_SLACK));
    dmp_process_t *j = s_script(joiner, q, r2,
                                dmp_list_of(2, s_op("join", 0.2, NULL),
                                            s_op("join", 20, NULL)));
    s_rep_t rep = s_expect(r2, 0, -ETIMEDOUT);
    s_free_rep(&rep);
    /* the worker takes two items and marks them done */
    dmp_process_t *w = s_script(
        worker, q, r,
        dmp_list_of(4, s_op("get", 5, NULL), s_op("task_done", 0, NULL),
                    s_op("get", 5, NULL), s_op("task_done", 0, NULL)));
    for (int i = 0; i < 4; i++) {
        rep = s_expect(r, i, 0);
        s_free_rep(&rep);
    }
    s_join(&w, 0);
    assert_dmp_err(dmp_queue_join(q, 0.05), -ETIMEDOUT); /* two left */
    s_get_str(q, "task", 0);
    assert_dmp_ok(dmp_queue_task_done(q));
    s_get_str(q, "task", 0);
    /* Let the owner settle after that get (it re-checks parked operations
     * when an item moves), so that only the task_done below can wake the
     * join. */
    s_sleep(0.05);
    double done_at = s_now();
    assert_dmp_ok(dmp_queue_task_done(q));
    rep = s_expect(r2, 1, 0);
    print_message("# join on %s returned %.2f ms after the last task_done\n",
                  joiner ? joiner : "this node", (rep.t1 - done_at) * 1e3);
    assert_took(rep.t1 - done_at, 0, REMOTE_WAKE);
    s_free_rep(&rep);
    s_join(&j, 0);
    assert_dmp_ok(dmp_queue_join(q, 0));
    assert_dmp_err(dmp_queue_task_done(q), -EINVAL);
    s_destroy_queue(&q);
    s_destroy_queue(&r);
    s_destroy_queue(&r2);
}

/* Every value type reaches a child and comes back bit-exact, handles
 * included (the child opens the queue a value carries and puts into it). */
static void
test_values_of_every_type_go_through_a_queue(void **state)
{
    (void)state;
    dmp_queue_t *q = s_queue(0, 0), *r = s_queue(0, 0);
    dmp_value_t *sample = s_sample(dmp_queue_value(r));
    assert_non_null(sample);
    /* here */
    assert_dmp_ok(dmp_queue_put(q, sample, 1.0));
    dmp_value_t *v = NULL;
    assert_dmp_ok(dmp_queue_get(q, &v, 1.0));
    assert_true(s_same_encoding(v, sample));
    assert_int_equal(dmp_value_type(dmp_list_get(v, -1)), DMP_VALUE_HANDLE);
    dmp_value_destroy(&v);
    /* there and back, from each node */
    const char *where[3] = {NULL, s_node(1), s_node(2)};
    size_t n = s_c.mode == S_EMBEDDED ? 1 : 3;
    for (size_t i = 0; i < n; i++) {
        dmp_process_t *p = s_start(
            "q_echo", where[i],
            dmp_list_of(2, dmp_queue_value(q), dmp_queue_value(r)));
        assert_dmp_ok(dmp_queue_put(q, sample, 1.0));
        int rc = dmp_queue_get(r, &v, REPORT_WAIT);
        if (rc)
            print_error("echo on %s: %s\n", where[i] ? where[i] : "here",
                        dmp_err_name(rc));
        assert_dmp_ok(rc);
        if (!s_same_encoding(v, sample))
            for (size_t k = 0; k < dmp_value_len(sample); k++)
                if (!s_same_encoding(dmp_list_get(v, (int64_t)k),
                                     dmp_list_get(sample, (int64_t)k)))
                    print_error("item %zu differs after %s\n", k,
                                where[i] ? where[i] : "this node");
        assert_true(s_same_encoding(v, sample));
        dmp_value_destroy(&v);
        s_join(&p, 0);
    }
    dmp_value_destroy(&sample);
    s_destroy_queue(&q);
    s_destroy_queue(&r);
}

/* Over the configured limit: -EMSGSIZE from that put, and nothing of it
 * is delivered, nor is anything else lost. */
static void
test_item_over_the_configured_limit_is_refused_whole(void **state)
{
    (void)state;
    dmp_queue_t *q = s_queue(0, 1024);
    static uint8_t buf[1025];
    s_fill(buf, sizeof buf, 3);
    int rc1 = dmp_queue_put_bytes(q, buf, 1025, 0);
    int rc2 = dmp_queue_put_bytes(q, buf, 1025, 1.0);
    int64_t n = dmp_queue_qsize(q);
    if (rc1 != -EMSGSIZE || rc2 != -EMSGSIZE || n != 0)
        print_error("1025 bytes, item_max 1024, by this program: put %s, "
                    "put(1.0) %s, then qsize %lld\n", dmp_err_name(rc1),
                    dmp_err_name(rc2), (long long)n);
    assert_dmp_err(rc1, -EMSGSIZE);
    assert_dmp_err(rc2, -EMSGSIZE);
    assert_int_equal(n, 0);
    void *data = NULL;
    size_t len = 0;
    assert_dmp_err(dmp_queue_get_bytes(q, &data, &len, 0), DMP_EEMPTY);
    assert_dmp_ok(dmp_queue_put_bytes(q, buf, 1024, 0));
    assert_dmp_ok(dmp_queue_get_bytes(q, &data, &len, 0));
    assert_int_equal(len, 1024);
    assert_memory_equal(data, buf, 1024);
    dmp_free(data);
    /* A child elsewhere puts a, the big item, b: the big one is refused
     * by its put, a and b arrive. */
    const char *where = s_c.mode == S_EMBEDDED ? NULL : s_node(1);
    dmp_queue_t *r = s_queue(0, 0);
    dmp_process_t *p = s_script(
        where, q, r,
        dmp_list_of(
            4, s_op("put", 1, dmp_str("a")),
            s_op("put_size", 1, dmp_list_of(2, dmp_int(1025), dmp_int(3))),
            s_op("put", 1, dmp_str("b")), s_op("qsize", 0, NULL)));
    s_rep_t reps[4];
    s_reports(r, 4, reps, REPORT_WAIT);
    s_join(&p, 0);
    static const char *what[] = {"put a", "put 1025 bytes", "put b",
                                 "qsize"};
    static const int want[] = {0, -EMSGSIZE, 0, 0};
    bool as_specified = true;
    for (int i = 0; i < 4; i++) {
        print_message("# child on %s, item_max 1024: %s -> %s\n",
                      where ? where : "this node", what[i],
                      dmp_err_name(reps[i].rc));
        as_specified &= reps[i].step == i && reps[i].rc == want[i];
    }
    int64_t left = dmp_queue_qsize(q);
    dmp_value_t *got[2] = {NULL, NULL};
    dmp_queue_get(q, &got[0], 0);
    dmp_queue_get(q, &got[1], 0);
    print_message("# then %lld item(s) in the queue: %s %s\n",
                  (long long)left,
                  got[0] ? dmp_value_str(got[0], NULL) : "-",
                  got[1] ? dmp_value_str(got[1], NULL) : "-");
    bool delivered = left == 2 && got[0] && got[1] &&
                     strcmp(dmp_value_str(got[0], NULL), "a") == 0 &&
                     strcmp(dmp_value_str(got[1], NULL), "b") == 0;
    for (int i = 0; i < 4; i++)
        s_free_rep(&reps[i]);
    dmp_value_destroy(&got[0]);
    dmp_value_destroy(&got[1]);
    s_destroy_queue(&q);
    s_destroy_queue(&r);
    assert_true(as_specified);
    assert_true(delivered);
}

/* The default limit, 64 MiB: one byte more is refused whole; a 16 MiB
 * item (out of line in its own segment) goes through. Local only. */
static void
test_default_limit_is_64_mib_and_big_items_pass(void **state)
{
    (void)state;
    dmp_queue_t *q = s_queue(0, 0);
    char ring[DMP__RING_NAME_MAX];
    s_ring_name(q, ring, sizeof ring);
    size_t over = (64u << 20) + 1, big = 16u << 20;
    uint8_t *buf = malloc(over);
    assert_non_null(buf);
    s_fill(buf, over, 11);
    assert_dmp_err(dmp_queue_put_bytes(q, buf, over, 0), -EMSGSIZE);
    assert_int_equal(dmp_queue_qsize(q), 0);
    double t0 = s_now();
    assert_dmp_ok(dmp_queue_put_bytes(q, buf, big, 0));
    void *data = NULL;
    size_t len = 0;
    assert_dmp_ok(dmp_queue_get_bytes(q, &data, &len, 0));
    double took = s_now() - t0;
    assert_int_equal(len, big);
    assert_true(memcmp(data, buf, big) == 0);
    dmp_free(data);
    print_message("# 16 MiB item put and got in %.1f ms\n", took * 1e3);
    /* and a child gets one too */
    dmp_queue_t *r = s_queue(0, 0);
    assert_dmp_ok(dmp_queue_put_bytes(q, buf, big, 0));
    dmp_process_t *p = s_script(NULL, q, r,
                                dmp_list_of(1, s_op("get_size", 5, NULL)));
    s_rep_t rep = s_expect(r, 0, 0);
    int64_t n = 0, sum = 0;
    assert_dmp_ok(dmp_value_get_int(dmp_list_get(rep.res, 0), &n));
    assert_dmp_ok(dmp_value_get_int(dmp_list_get(rep.res, 1), &sum));
    assert_int_equal(n, (int64_t)big);
    assert_true(sum == s_sum(buf, big));
    s_free_rep(&rep);
    s_join(&p, 0);
    free(buf);
    s_destroy_queue(&q);
    s_destroy_queue(&r);
    /* the item's own segment went with the queue */
    char ool[DMP__RING_NAME_MAX + 8];
    snprintf(ool, sizeof ool, "%s.ool.", ring + 1);
    assert_int_equal(s_shm_count(ool), 0);
    assert_false(s_shm_exists(ring));
}

/* A consumer killed inside get, after copying the item and before taking
 * it (the ring's test hook), loses nothing: the item is still there. */
static void
test_consumer_killed_inside_get_loses_no_item(void **state)
{
    (void)state;
    if (s_c.mode == S_TCP1)
        skip(); /* the hook needs a child on the owner's host: see ipc */
    dmp_queue_t *q = s_queue(0, 0);
    s_put_str(q, "precious", 0);
    dmp_process_t *p = s_start("q_die_in_get", NULL,
                               dmp_list_of(1, dmp_queue_value(q)));
    s_join(&p, -SIGKILL);
    assert_int_equal(dmp_queue_qsize(q), 1);
    s_get_str(q, "precious", 0);
    /* the lock it died holding is usable */
    s_put_str(q, "after", 0);
    s_get_str(q, "after", 0);
    s_destroy_queue(&q);
}

/*
 * A consumer killed while blocked in get (here, then on node2): the next
 * item goes to a live getter. Locally a second blocked child must wake at
 * once; remotely the owner must not hand the item to the dead one.
 */
static void
test_consumer_killed_while_blocked_loses_no_item(void **state)
{
    (void)state;
    const char *where[2] = {NULL, s_node(1)};
    size_t n = s_c.mode == S_EMBEDDED ? 1 : 2;
    for (size_t i = 0; i < n; i++) {
        dmp_queue_t *q = s_queue(0, 0), *r = s_queue(0, 0);
        dmp_process_t *victim = s_script(
            where[i], q, r,
            dmp_list_of(2, s_op("ready", 0, NULL), s_op("get", 30, NULL)));
        s_rep_t rep = s_expect(r, 0, 0);
        s_free_rep(&rep);
        s_sleep(0.3); /* let its get block */
        assert_dmp_ok(dmp_process_kill(victim));
        s_join(&victim, -SIGKILL);
        /* a live getter, blocked as the victim was */
        dmp_process_t *live = s_script(
            where[i], q, r,
            dmp_list_of(2, s_op("ready", 0, NULL), s_op("get", 2, NULL)));
        rep = s_expect(r, 0, 0);
        s_free_rep(&rep);
        s_sleep(0.3);
        double put_at = s_now();
        s_put_str(q, "survivor", 0);
        rep = s_report(r);
        print_message("# after a blocked getter on %s was killed: the next "
                      "one got %s after %.2f ms\n",
                      where[i] ? where[i] : "this node", dmp_err_name(rep.rc),
                      (rep.t1 - put_at) * 1e3);
        if (rep.rc != 0)
            print_error("the item went to the killed getter on %s\n",
                        where[i] ? where[i] : "this node");
        assert_int_equal(rep.step, 1);
        assert_dmp_ok(rep.rc);
        assert_string_equal(dmp_value_str(rep.res, NULL), "survivor");
        assert_took(rep.t1 - put_at, 0, where[i] ? REMOTE_WAKE : LOCAL_SLACK);
        s_free_rep(&rep);
        s_join(&live, 0);
        assert_int_equal(dmp_queue_qsize(q), 0);
        s_destroy_queue(&q);
        s_destroy_queue(&r);
    }
}

static bool
s_qsize_is(void *arg)
{
    void **a = arg;
    return dmp_queue_qsize(a[0]) == *(int64_t *)a[1];
}

/* A child that puts and returns without destroying its handle: every
 * item arrives (Python joins the queue's feeder thread at exit; here
 * remote puts to an unbounded queue are pipelined the same way). */
static void
test_puts_of_a_child_returning_without_destroy_all_arrive(void **state)
{
    (void)state;
    const char *where = s_c.mode == S_EMBEDDED ? NULL : s_node(1);
    dmp_queue_t *q = s_queue(0, 0);
    int64_t n = 3000;
    dmp_process_t *p = s_script(
        where, q, NULL,
        dmp_list_of(2, s_op("put_n", 0, dmp_int(n)), s_op("return", 0, NULL)));
    /* it exits at once: a short join, so a hang costs little */
    int jrc = dmp_process_join(p, 3.0), code = -1;
    if (jrc == 0)
        dmp_process_exitcode(p, &code);
    else
        dmp_process_kill(p);
    void *arg[2] = {q, &n};
    dmp_test_wait_until(s_qsize_is, arg, 2.0);
    int64_t got = dmp_queue_qsize(q);
    print_message("# child on %s put %lld items and returned without "
                  "destroying its handle: join %s, exit code %d, %lld "
                  "items arrived\n", where ? where : "this node",
                  (long long)n, dmp_err_name(jrc), code, (long long)got);
    assert_dmp_ok(jrc);
    assert_int_equal(code, 0);
    s_join(&p, 0);
    assert_int_equal(got, n);
    for (int64_t k = 0; k < n; k++) {
        dmp_value_t *v = NULL;
        int64_t i = -1;
        assert_dmp_ok(dmp_queue_get(q, &v, 0));
        assert_dmp_ok(dmp_value_get_int(v, &i));
        assert_int_equal(i, k);
        dmp_value_destroy(&v);
    }
    s_destroy_queue(&q);
}

/* A process's queues go when it ends without destroying them (dmp_fini). */
static void
test_queues_of_an_ended_child_are_removed(void **state)
{
    (void)state;
    const char *where = s_c.mode == S_EMBEDDED ? NULL : s_node(1);
    dmp_queue_t *r = s_queue(0, 0);
    dmp_process_t *p = s_start("q_create_and_leave", where,
                               dmp_list_of(1, dmp_queue_value(r)));
    dmp_value_t *h = NULL;
    assert_dmp_ok(dmp_queue_get(r, &h, REPORT_WAIT));
    s_join(&p, 0);
    dmp_queue_t *left = NULL;
    assert_dmp_ok(dmp_queue_from_value(h, &left));
    char ring[DMP__RING_NAME_MAX];
    s_ring_name(left, ring, sizeof ring);
    assert_false(s_shm_exists(ring));
    dmp_value_t *v = NULL;
    assert_dmp_err(dmp_queue_get(left, &v, 0), -EBADF);
    dmp_queue_destroy(&left);
    dmp_value_destroy(&h);
    s_destroy_queue(&r);
}

/* Handles that are not queues are refused. */
static void
test_from_value_refuses_what_is_not_a_queue(void **state)
{
    (void)state;
    dmp_queue_t *q = NULL;
    dmp_value_t *v = dmp_str("Q");
    assert_dmp_err(dmp_queue_from_value(v, &q), -EINVAL);
    dmp_value_destroy(&v);
    static const uint8_t junk[][12] = {
        {'Q'}, {'Q', 60, 'x'}, {'P', 1, 'n', 0, 0, 0, 0, 0, 0, 0, 0, 1}};
    static const size_t lens[] = {1, 3, 12};
    for (size_t i = 0; i < 3; i++) {
        v = dmp__handle_value(junk[i], lens[i]);
        assert_dmp_err(dmp_queue_from_value(v, &q), -EINVAL);
        dmp_value_destroy(&v);
    }
    assert_null(q);
}

/* Every ring this group made is gone once its queues are destroyed and
 * the program calls dmp_fini (which destroys what it did not). */
static void
test_no_ring_is_left_in_dev_shm(void **state)
{
    (void)state;
    char prefix[DMP__RING_NAME_MAX] = "";
    dmp_queue_t *forgotten = NULL; /* created and never destroyed */
    assert_dmp_ok(dmp_queue_new(NULL, &forgotten));
    s_put_str(forgotten, "x", 0);
    if (s_c.mode == S_EMBEDDED) {
        /* the embedded agent's prefix, from a ring name
         * "/dmp-NODE-INCARNATION-ID-RING" */
        s_ring_name(forgotten, prefix, sizeof prefix);
        for (int k = 0; k < 2; k++)
            *strrchr(prefix, '-') = '\0';
        strcat(prefix, "-");
        memmove(prefix, prefix + 1, strlen(prefix));
    }
    s_destroy_held();
    dmp_fini(); /* removes `forgotten` */
    if (s_c.mode == S_EMBEDDED) {
        assert_int_equal(s_shm_count(prefix), 0);
    } else {
        for (size_t i = 0; i < 3; i++)
            assert_int_equal(s_shm_count(s_c.shm_prefix[i]), 0);
    }
}

/* dmp_current_node() names the node this program talks to, also after
 * dmp_fini and dmp_init on another agent (each group connects anew). */
static void
test_current_node_is_the_node_we_talk_to(void **state)
{
    (void)state;
    const char *now = dmp_current_node();
    if (strcmp(now, s_node(0)) != 0)
        print_error("dmp_current_node() says '%s', connected to '%s'\n", now,
                    s_node(0));
    assert_string_equal(now, s_node(0));
}

/* ---- one host only ------------------------------------------------------ */

/* Two agents of one name on one host (two programs with embedded agents,
 * or two clusters with a "node1" each): the second one's start-up must not
 * remove the first one's live rings. */
static void
test_a_second_agent_of_the_same_name_leaves_our_rings_alone(void **state)
{
    (void)state;
    dmp_queue_t *q = s_queue(0, 0);
    char ring[DMP__RING_NAME_MAX];
    s_ring_name(q, ring, sizeof ring);
    assert_true(s_shm_exists(ring));
    s_put_str(q, "mine", 0);
    dmp_test_sandbox_t *sb = NULL;
    assert_dmp_ok(dmp_test_sandbox_new(&sb));
    dmp_test_agent_t *twin = NULL;
    assert_dmp_ok(dmp_test_agent_new(sb, s_node(0), &twin));
    assert_dmp_ok(dmp_test_agent_start(twin));
    bool kept = s_shm_exists(ring);
    dmp_test_agent_stop(twin, 5.0);
    dmp_test_sandbox_destroy(&sb);
    if (!kept)
        print_error("another agent named '%s' (its own runtime dir) removed "
                    "our live ring %s at its start\n", s_node(0),
                    ring);
    /* a child opens the queue by its ring name */
    dmp_queue_t *r = s_queue(0, 0);
    dmp_process_t *p = s_script(NULL, q, r,
                                dmp_list_of(1, s_op("get", 1, NULL)));
    int code = -1;
    assert_dmp_ok(dmp_process_join(p, JOIN_LIMIT));
    assert_dmp_ok(dmp_process_exitcode(p, &code));
    s_destroy_proc(&p);
    if (code == 0) {
        s_rep_t rep = s_expect(r, 0, 0);
        s_free_rep(&rep);
    } else {
        print_error("a child could not open the queue: exit %d\n", code);
    }
    s_destroy_queue(&q);
    s_destroy_queue(&r);
    assert_true(kept);
    assert_int_equal(code, 0);
}

/* ---- cluster only ---------------------------------------------------------- */

/* Across hosts an item larger than a frame goes in parts: up to the
 * queue's item_max (64 MiB by default) it arrives whole and in order with
 * the small ones, for a remote put (bounded and unbounded queue) and a
 * remote get; over item_max a put is a clean -EMSGSIZE at once, with
 * nothing of it in the queue. */
static void
test_items_up_to_the_limit_cross_hosts_whole(void **state)
{
    (void)state;
    size_t max = 64u << 20, small = 1000;
    uint8_t *buf = malloc(max);
    assert_non_null(buf);
    for (int bounded = 0; bounded < 2; bounded++) {
        dmp_queue_t *q = s_queue(bounded ? 10 : 0, 0), *r = s_queue(0, 0);
        dmp_process_t *p = s_script(
            s_node(1), q, r,
            dmp_list_of(
                4,
                s_op("put_size", 60,
                     dmp_list_of(2, dmp_int((int64_t)max), dmp_int(7))),
                s_op("put_size", 5,
                     dmp_list_of(2, dmp_int((int64_t)small), dmp_int(8))),
                s_op("put_size", 5,
                     dmp_list_of(2, dmp_int((int64_t)max + 1), dmp_int(9))),
                s_op("qsize", 0, NULL)));
        s_rep_t rep = s_expect(r, 0, 0);
        print_message("# %s queue: 64 MiB put from %s in %.2f s\n",
                      bounded ? "bounded" : "unbounded", s_node(1),
                      rep.t1 - rep.t0);
        s_free_rep(&rep);
        rep = s_expect(r, 1, 0);
        s_free_rep(&rep);
        rep = s_expect(r, 2, -EMSGSIZE);
        assert_true(rep.t1 - rep.t0 < 1.0);
        s_free_rep(&rep);
        rep = s_expect(r, 3, 0);
        assert_int_equal(s_res_int(&rep), 2);
        s_free_rep(&rep);
        s_join(&p, 0);
        void *data = NULL;
        size_t len = 0;
        assert_dmp_ok(dmp_queue_get_bytes(q, &data, &len, 1.0));
        assert_int_equal(len, max);
        s_fill(buf, max, 7);
        assert_true(memcmp(data, buf, max) == 0);
        dmp_free(data);
        assert_dmp_ok(dmp_queue_get_bytes(q, &data, &len, 1.0));
        assert_int_equal(len, small);
        s_fill(buf, small, 8);
        assert_true(memcmp(data, buf, small) == 0);
        dmp_free(data);
        assert_int_equal(dmp_queue_qsize(q), 0);
        s_destroy_queue(&q);
        s_destroy_queue(&r);
    }

    /* 64 MiB and 5 MiB items put here, got on node3 with a small one
     * between them */
    dmp_queue_t *q = s_queue(0, 0), *r = s_queue(0, 0);
    size_t sizes[3] = {max, small, 5u << 20};
    int64_t sums[3];
    for (int i = 0; i < 3; i++) {
        s_fill(buf, sizes[i], 20 + (unsigned)i);
        sums[i] = s_sum(buf, sizes[i]);
        assert_dmp_ok(dmp_queue_put_bytes(q, buf, sizes[i], 0));
    }
    dmp_process_t *p = s_script(s_node(2), q, r,
                                dmp_list_of(4, s_op("get_size", 60, NULL),
                                            s_op("get_size", 60, NULL),
                                            s_op("get_size", 60, NULL),
                                            s_op("qsize", 0, NULL)));
    for (int i = 0; i < 3; i++) {
        s_rep_t rep = s_expect(r, i, 0);
        if (i == 0)
            print_message("# 64 MiB got on %s in %.2f s\n", s_node(2),
                          rep.t1 - rep.t0);
        int64_t len = 0, sum = 0;
        assert_dmp_ok(dmp_value_get_int(dmp_list_get(rep.res, 0), &len));
        assert_dmp_ok(dmp_value_get_int(dmp_list_get(rep.res, 1), &sum));
        assert_int_equal(len, sizes[i]);
        assert_int_equal(sum, sums[i]);
        s_free_rep(&rep);
    }
    s_rep_t rep = s_expect(r, 3, 0);
    assert_int_equal(s_res_int(&rep), 0);
    s_free_rep(&rep);
    s_join(&p, 0);
    free(buf);
    s_destroy_queue(&q);
    s_destroy_queue(&r);
}

/* Getters on two other nodes race for items larger than a frame (each is
 * read in parts, then taken if nobody took it meanwhile): every item
 * reaches exactly one of them, whole. */
static void
test_big_items_reach_one_of_racing_remote_getters_whole(void **state)
{
    (void)state;
    enum { ITEMS = 8 };
    dmp_queue_t *q = s_queue(0, 0), *r = s_queue(0, 0);
    size_t size = (2u << 20) + 4096 * ITEMS;
    uint8_t *buf = malloc(size);
    assert_non_null(buf);
    int64_t sums[ITEMS];
    for (int i = 0; i < ITEMS; i++) {
        size_t n = (2u << 20) + 4096 * (size_t)i; /* the size names it */
        s_fill(buf, n, 40 + (unsigned)i);
        sums[i] = s_sum(buf, n);
        assert_dmp_ok(dmp_queue_put_bytes(q, buf, n, 0));
    }
    free(buf);
    dmp_process_t *ps[2];
    for (int c = 0; c < 2; c++) {
        dmp_value_t *ops = dmp_list();
        for (int i = 0; i < ITEMS; i++)
            dmp_list_append(ops, s_op("get_size", 2.0, NULL));
        ps[c] = s_script(s_node(1 + (size_t)c), q, r, ops);
    }
    int seen[ITEMS] = {0};
    int got = 0, empty = 0, other = 0;
    for (int k = 0; k < 2 * ITEMS; k++) {
        s_rep_t rep;
        s_reports(r, 1, &rep, 60.0);
        if (rep.rc == 0) {
            int64_t len = 0, sum = 0;
            dmp_value_get_int(dmp_list_get(rep.res, 0), &len);
            dmp_value_get_int(dmp_list_get(rep.res, 1), &sum);
            int64_t i = (len - (2 << 20)) / 4096;
            if (i >= 0 && i < ITEMS && sum == sums[i])
                seen[i]++;
            got++;
        } else if (rep.rc == DMP_EEMPTY) {
            empty++;
        } else {
            other++;
        }
        s_free_rep(&rep);
    }
    print_message("# %d items got, %d empty gets, %d other answers\n", got,
                  empty, other);
    s_join(&ps[0], 0);
    s_join(&ps[1], 0);
    assert_int_equal(got, ITEMS);
    assert_int_equal(other, 0);
    for (int i = 0; i < ITEMS; i++)
        assert_int_equal(seen[i], 1);
    assert_int_equal(dmp_queue_qsize(q), 0);
    s_destroy_queue(&q);
    s_destroy_queue(&r);
}

static size_t
s_popcount(const uint8_t *bm, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += (size_t)__builtin_popcount(bm[i]);
    return n;
}

/*
 * Exactly once: 4 producers (node1 twice, node2, node3) and 4 consumers
 * (node1, node2, node3 twice) on one queue owned by node1, n items per
 * producer. Every item arrives exactly once, each producer's items in
 * order at each consumer; the throughput is printed.
 */
static void
s_exactly_once(int64_t maxsize, int64_t n)
{
    dmp_queue_t *q = s_queue(maxsize, 0), *r = s_queue(0, 0);
    const char *pnode[EO_PRODUCERS] = {s_node(0), s_node(0), s_node(1),
                                       s_node(2)};
    const char *cnode[EO_CONSUMERS] = {s_node(0), s_node(1), s_node(2),
                                       s_node(2)};
    dmp_process_t *cons[EO_CONSUMERS], *prod[EO_PRODUCERS];
    double t0 = s_now();
    for (int i = 0; i < EO_CONSUMERS; i++)
        cons[i] = s_start("eo_consumer", cnode[i],
                          dmp_list_of(4, dmp_queue_value(q),
                                      dmp_queue_value(r), dmp_int(i),
                                      dmp_int(n)));
    for (int i = 0; i < EO_PRODUCERS; i++)
        prod[i] = s_start("eo_producer", pnode[i],
                          dmp_list_of(3, dmp_queue_value(q), dmp_int(i),
                                      dmp_int(n)));
    double produced[EO_PRODUCERS];
    for (int i = 0; i < EO_PRODUCERS; i++) {
        s_join(&prod[i], 0);
        produced[i] = s_now() - t0;
    }
    for (int i = 0; i < EO_CONSUMERS; i++) {
        s_item_t stop = {EO_STOP, EO_MAGIC, 0};
        assert_dmp_ok(dmp_queue_put_bytes(q, &stop, sizeof stop, 10.0));
    }
    size_t bm_len = ((size_t)n + 7) / 8;
    uint8_t *all[EO_PRODUCERS];
    for (int p = 0; p < EO_PRODUCERS; p++) {
        all[p] = calloc(1, bm_len);
        assert_non_null(all[p]);
    }
    int64_t total = 0, overlap = 0;
    for (int i = 0; i < EO_CONSUMERS; i++) {
        dmp_value_t *v = NULL;
        int grc = dmp_queue_get(r, &v, 30.0);
        if (grc)
            print_error("only %d of %d consumers reported\n", i,
                        EO_CONSUMERS);
        assert_dmp_ok(grc);
        int64_t id = 0, count = 0, dup = 0, ooo = 0, bad = 0, rc = 0;
        double secs = 0;
        dmp_value_get_int(dmp_list_get(v, 0), &id);
        dmp_value_get_int(dmp_list_get(v, 1), &count);
        dmp_value_get_int(dmp_list_get(v, 2), &dup);
        dmp_value_get_int(dmp_list_get(v, 3), &ooo);
        dmp_value_get_int(dmp_list_get(v, 4), &bad);
        dmp_value_get_double(dmp_list_get(v, 6), &secs);
        dmp_value_get_int(dmp_list_get(v, 7), &rc);
        print_message("# consumer %lld on %s: %lld items in %.2f s "
                      "(dup %lld, out of order %lld, malformed %lld, %s)\n",
                      (long long)id,
                      dmp_value_str(dmp_list_get(v, 5), NULL),
                      (long long)count, secs, (long long)dup,
                      (long long)ooo, (long long)bad,
                      dmp_err_name((int)rc));
        assert_int_equal(dup, 0);
        assert_int_equal(ooo, 0);
        assert_int_equal(bad, 0);
        assert_int_equal(rc, 0);
        total += count;
        for (int p = 0; p < EO_PRODUCERS; p++) {
            size_t len = 0;
            const uint8_t *bm = dmp_value_bytes(dmp_list_get(v, 8 + p), &len);
            assert_non_null(bm);
            assert_int_equal(len, bm_len);
            for (size_t k = 0; k < bm_len; k++) {
                overlap += __builtin_popcount(all[p][k] & bm[k]);
                all[p][k] |= bm[k];
            }
        }
        dmp_value_destroy(&v);
    }
    double secs = s_now() - t0;
    for (int i = 0; i < EO_CONSUMERS; i++)
        s_join(&cons[i], 0);
    print_message("# exactly once: %d x %lld items through a queue "
                  "(maxsize %lld) on %s in %.2f s: %.0f items/s (producers "
                  "done at %.2f %.2f %.2f %.2f s)\n",
                  EO_PRODUCERS, (long long)n, (long long)maxsize, s_node(0),
                  secs,
                  (double)(EO_PRODUCERS * n) / secs, produced[0],
                  produced[1], produced[2], produced[3]);
    assert_int_equal(overlap, 0);
    assert_int_equal(total, EO_PRODUCERS * n);
    for (int p = 0; p < EO_PRODUCERS; p++) {
        assert_int_equal(s_popcount(all[p], bm_len), (size_t)n);
        free(all[p]);
    }
    assert_int_equal(dmp_queue_qsize(q), 0);
    s_destroy_queue(&q);
    s_destroy_queue(&r);
}

static int64_t
s_env_items(const char *name, int64_t dflt)
{
    const char *env = getenv(name);
    return env && atoll(env) > 0 ? atoll(env) : dflt;
}

/* Unbounded: remote puts are pipelined in batches. */
static void
test_exactly_once_four_producers_four_consumers_unbounded(void **state)
{
    (void)state;
    s_exactly_once(0, s_env_items("DMP_TEST_EO_ITEMS", EO_ITEMS_DEFAULT));
}

/* Bounded (maxsize 1000): one round trip per remote put, Full at the
 * owner makes producers wait. */
static void
test_exactly_once_four_producers_four_consumers_bounded(void **state)
{
    (void)state;
    s_exactly_once(1000, s_env_items("DMP_TEST_EO_ITEMS_BOUNDED",
                                     EO_ITEMS_BOUNDED));
}

/* ---- the owner node dies ----------------------------------------------------- */

/*
 * The program talks to node2. A child on node1 creates Q (maxsize 1) and E
 * there and sends their handles; Q is filled; a child on node3 blocks in a
 * put on Q, one on node2 in a get on E; node1 is killed. The blocked
 * operations, and new ones of this program, fail with DMP_ENODE within
 * ENODE_WITHIN seconds; none hangs. Restarted, node1 removes the rings its
 * killed predecessor left.
 */
static void
test_owner_node_killed_gives_enode_never_a_hang(void **state)
{
    (void)state;
    const char *node1 = s_c.names[1]; /* swapped: see s_cluster_up */
    dmp_queue_t *r = s_queue(0, 0), *ctl = s_queue(0, 0), *r2 = s_queue(0, 0),
                *r3 = s_queue(0, 0);
    dmp_process_t *owner = s_start(
        "q_owner", node1,
        dmp_list_of(2, dmp_queue_value(r), dmp_queue_value(ctl)));
    dmp_value_t *h = NULL;
    assert_dmp_ok(dmp_queue_get(r, &h, REPORT_WAIT));
    dmp_queue_t *q = NULL, *e = NULL;
    assert_dmp_ok(dmp_queue_from_value(dmp_list_get(h, 0), &q));
    assert_dmp_ok(dmp_queue_from_value(dmp_list_get(h, 1), &e));
    dmp_value_destroy(&h);
    char ring[DMP__RING_NAME_MAX];
    s_ring_name(q, ring, sizeof ring);
    /* it works while the owner lives (our operations go through node2) */
    s_put_str(q, "first", 1.0);
    assert_int_equal(dmp_queue_qsize(q), 1);
    assert_int_equal(dmp_queue_full(q), 1);
    s_get_str(q, "first", 1.0);
    s_put_str(q, "fills it", 1.0);
    dmp_process_t *putter = s_script(
        s_node(2), q, r3,
        dmp_list_of(2, s_op("ready", 0, NULL),
                    s_op("put", DMP_FOREVER, dmp_str("never"))));
    dmp_process_t *getter = s_script(
        s_node(0), e, r2,
        dmp_list_of(2, s_op("ready", 0, NULL),
                    s_op("get", DMP_FOREVER, NULL)));
    s_rep_t rep = s_expect(r3, 0, 0);
    s_free_rep(&rep);
    rep = s_expect(r2, 0, 0);
    s_free_rep(&rep);
    s_sleep(0.3); /* let both block at the owner */
    double killed = s_now();
    dmp_test_agent_kill(s_c.agents[0]); /* agents[0] is node1 */
    dmp_queue_t *rs[2] = {r3, r2};
    const char *who[2] = {"put on a full queue", "get on an empty queue"};
    const char *where[2] = {s_node(2), s_node(0)};
    for (int i = 0; i < 2; i++) {
        dmp_value_t *v = NULL;
        int rc = dmp_queue_get(rs[i], &v, ENODE_WITHIN + 2.0);
        if (rc) {
            print_error("blocked %s on %s: no answer %.1f s after node1 "
                        "was killed\n", who[i], where[i], s_now() - killed);
            fail();
        }
        int64_t step = -1, code = 0;
        double t1 = 0;
        dmp_value_get_int(dmp_list_get(v, 0), &step);
        dmp_value_get_int(dmp_list_get(v, 1), &code);
        dmp_value_get_double(dmp_list_get(v, 3), &t1);
        dmp_value_destroy(&v);
        print_message("# blocked %s on %s: %s %.2f s after node1 was "
                      "killed\n", who[i], where[i], dmp_err_name((int)code),
                      t1 - killed);
        assert_int_equal(step, 1);
        assert_dmp_err((int)code, DMP_ENODE);
        assert_true(t1 - killed < ENODE_WITHIN);
    }
    /* new operations fail, never hang */
    static const char *what[] = {"get(forever)", "put(forever)", "qsize",
                                 "join(forever)", "task_done"};
    for (int i = 0; i < 5; i++) {
        double t0 = s_now();
        int rc;
        dmp_value_t *v = NULL;
        switch (i) {
        case 0: rc = dmp_queue_get(q, &v, DMP_FOREVER); break;
        case 1:
            v = dmp_int(1);
            rc = dmp_queue_put(q, v, DMP_FOREVER);
            break;
        case 2: rc = (int)dmp_queue_qsize(q); break;
        case 3: rc = dmp_queue_join(q, DMP_FOREVER); break;
        default: rc = dmp_queue_task_done(q); break;
        }
        dmp_value_destroy(&v);
        double took = s_now() - t0;
        print_message("# %s after the kill: %s in %.3f s\n", what[i],
                      dmp_err_name(rc), took);
        assert_dmp_err(rc, DMP_ENODE);
        assert_true(took < ENODE_WITHIN);
    }
    dmp_queue_destroy(&q);
    dmp_queue_destroy(&e);
    s_join(&putter, 0);
    s_join(&getter, 0);
    /* the owner child lost its agent: whatever join says, it is stopped */
    dmp_process_kill(owner);
    dmp_process_join(owner, 5.0);
    s_destroy_proc(&owner);
    /* restarted, node1 removes the rings its killed predecessor left */
    assert_true(s_shm_exists(ring));
    assert_dmp_ok(dmp_test_agent_start(s_c.agents[0]));
    assert_false(s_shm_exists(ring));
    s_destroy_queue(&r);
    s_destroy_queue(&ctl);
    s_destroy_queue(&r2);
    s_destroy_queue(&r3);
}

static void
test_no_agent_outlives_the_tests(void **state)
{
    (void)state;
    assert_int_equal(dmp_test_agents_running(), 0);
}

int
main(void)
{
    /* A child or a zygote started by an agent: dmp_init runs the target
     * (or serves as the fork server) and never returns. */
    if (getenv("DMP_CHILD") || getenv("DMP_ZYGOTE"))
        dmp_init();
    unsetenv("DMP_PLACE");
    unsetenv("DMP_AGENT");
    unsetenv("DMP_CLUSTER");
    dmp_test_init(170);
#define COMMON                                                                \
    cmocka_unit_test(test_put_in_one_child_get_in_another),                   \
        cmocka_unit_test(test_own_put_get_nowait_qsize_empty_full),           \
        cmocka_unit_test(test_own_timeouts_are_honoured),                     \
        cmocka_unit_test(test_blocked_get_wakes_when_an_item_arrives),        \
        cmocka_unit_test(                                                     \
            test_full_queue_blocks_put_until_a_get_frees_a_slot),             \
        cmocka_unit_test(test_child_timeouts_are_honoured),                   \
        cmocka_unit_test(test_qsize_empty_full_in_a_child_and_close),         \
        cmocka_unit_test(test_joinable_queue_task_done_and_join),             \
        cmocka_unit_test(test_values_of_every_type_go_through_a_queue),       \
        cmocka_unit_test(                                                     \
            test_item_over_the_configured_limit_is_refused_whole),            \
        cmocka_unit_test(                                                     \
            test_puts_of_a_child_returning_without_destroy_all_arrive)
    const struct CMUnitTest embedded[] = {
        COMMON,
        cmocka_unit_test(test_current_node_is_the_node_we_talk_to),
        cmocka_unit_test(test_default_limit_is_64_mib_and_big_items_pass),
        cmocka_unit_test(test_consumer_killed_inside_get_loses_no_item),
        cmocka_unit_test(test_consumer_killed_while_blocked_loses_no_item),
        cmocka_unit_test(test_queues_of_an_ended_child_are_removed),
        cmocka_unit_test(test_from_value_refuses_what_is_not_a_queue),
        cmocka_unit_test(
            test_a_second_agent_of_the_same_name_leaves_our_rings_alone),
        cmocka_unit_test(test_no_ring_is_left_in_dev_shm),
    };
    const struct CMUnitTest ipc[] = {
        COMMON,
        cmocka_unit_test(test_current_node_is_the_node_we_talk_to),
        cmocka_unit_test(test_items_up_to_the_limit_cross_hosts_whole),
        cmocka_unit_test(
            test_big_items_reach_one_of_racing_remote_getters_whole),
        cmocka_unit_test(test_consumer_killed_inside_get_loses_no_item),
        cmocka_unit_test(test_consumer_killed_while_blocked_loses_no_item),
        cmocka_unit_test(test_queues_of_an_ended_child_are_removed),
        cmocka_unit_test(
            test_exactly_once_four_producers_four_consumers_unbounded),
        cmocka_unit_test(
            test_exactly_once_four_producers_four_consumers_bounded),
        cmocka_unit_test(test_no_ring_is_left_in_dev_shm),
    };
    const struct CMUnitTest tcp[] = {
        COMMON,
        cmocka_unit_test(test_current_node_is_the_node_we_talk_to),
        cmocka_unit_test(test_no_ring_is_left_in_dev_shm),
    };
    const struct CMUnitTest dying[] = {
        cmocka_unit_test(test_owner_node_killed_gives_enode_never_a_hang),
        cmocka_unit_test(test_no_ring_is_left_in_dev_shm),
    };
    const struct CMUnitTest after[] = {
        cmocka_unit_test(test_no_agent_outlives_the_tests),
    };
    /* DMP_TEST_GROUPS: run only the groups whose name contains it;
     * DMP_TEST_FILTER: only the tests matching it (cmocka's pattern). */
    const char *only = getenv("DMP_TEST_GROUPS");
    if (getenv("DMP_TEST_FILTER"))
        cmocka_set_test_filter(getenv("DMP_TEST_FILTER"));
#define RUN(name, tests, up)                                                  \
    (!only || strstr(name, only)                                              \
         ? cmocka_run_group_tests_name(name, tests, up, s_down)               \
         : 0)
    int failed = 0;
    failed += RUN("one host, embedded agent", embedded, s_up_embedded);
    failed += RUN("cluster, this program on node1 over ipc", ipc, s_up_ipc1);
    failed += RUN("cluster, this program on node1 over tcp", tcp, s_up_tcp1);
    failed += RUN("the owner node dies", dying, s_up_ipc2);
    failed += cmocka_run_group_tests_name("afterwards", after, NULL, NULL);
    return failed ? 1 : 0;
}
