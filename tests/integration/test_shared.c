/*
 * test_shared.c - Value, Array, RawValue, RawArray and get_lock() with real
 * agents: on one host (the embedded agent: every process maps the
 * segment) and across a cluster of three (the program on node1's ipc
 * endpoint owns the objects; children on node2 and node3 reach them
 * through node1, one on node1 maps them).
 *
 * Covered: the seed's program; every typecode, extremes and wrapping,
 * negative indexes, ranges; the errors (bad typecode, index, range, get_int
 * of a float, release of a lock not held, from_value of something else);
 * the recursive lock; acquire timeouts (no earlier than asked, within
 * 200 ms after locally); the increment race: N processes x M
 * `with get_lock(): v += 1` give exactly N x M, spread over the nodes too,
 * and without the lock updates are lost (reported); local and remote
 * holders exclude each other under contention; adds without the lock lose
 * nothing; a holder killed while holding (here: DMP_EOWNERDEAD to the next
 * acquirer, once; elsewhere: released when its lease runs out); the
 * lifetime (removed when the last handle goes, kept for a child the
 * creator passed it to, removed when every holder died) and no
 * /dev/shm/dmp-* segment of our nodes left; the owner node dying gives
 * DMP_ENODE, never a hang.
 *
 * This binary is also the children's program: main() hands over to
 * dmp_init() first when DMP_CHILD or DMP_ZYGOTE says so. Children report
 * through a queue as lists [step, rc, t0, t1, result]. Node names carry
 * this process's pid, so that /dev/shm checks count only our segments.
 *
 * DMP_TEST_GROUPS (a substring of group names) and DMP_TEST_FILTER
 * (cmocka's test name pattern) run a part.
 */
#define _GNU_SOURCE
#include "dmp_test.h"
#include "dmp_impl.h" /* dmp__handle_data */

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
#define ENODE_WITHIN 3.0  /* as test_queue.c: heartbeat x liveness + slack */
#define JOIN_LIMIT 60.0
#define LOCAL_SLACK 0.2   /* DESIGN.md 3b */
#define REMOTE_SLACK 0.5
#define REPORT_WAIT 30.0
/* The owner's lease of a remote lock holder: heartbeat x liveness, at
 * least 2 s (node_shared.c); released at most a heartbeat later. */
#define LEASE_WITHIN 6.0

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

#define assert_took(took, lo, hi)                                            \
    do {                                                                     \
        double t_ = (took), lo_ = (lo), hi_ = (hi);                          \
        if (t_ < lo_ || t_ > hi_) {                                          \
            print_error("%s:%d: %s = %.3f s, expected [%.3f, %.3f]\n",      \
                        __FILE__, __LINE__, #took, t_, lo_, hi_);            \
            fail();                                                          \
        }                                                                    \
    } while (0)

/* ---- the children ---------------------------------------------------------- */

static dmp_value_t *
s_op(const char *name, dmp_value_t *a)
{
    return dmp_list_of(2, dmp_str(name), a ? a : dmp_none());
}

static double
s_num(const dmp_value_t *v)
{
    double d = 0;
    dmp_value_get_double(v, &d);
    return d;
}

/* Element i as a value: int, or float for 'f' and 'd'. */
static int
s_elem_value(dmp_shared_t *s, int64_t i, dmp_value_t **out)
{
    char tc = dmp_shared_typecode(s);
    if (tc == 'f' || tc == 'd') {
        double d = 0;
        int rc = dmp_shared_get_double(s, i, &d);
        *out = rc ? NULL : dmp_double(d);
        return rc;
    }
    int64_t v = 0;
    int rc = dmp_shared_get_int(s, i, &v);
    *out = rc ? NULL : dmp_int(v);
    return rc;
}

static int
s_elem_set(dmp_shared_t *s, int64_t i, const dmp_value_t *v)
{
    if (dmp_value_type(v) == DMP_VALUE_DOUBLE)
        return dmp_shared_set_double(s, i, s_num(v));
    int64_t n = 0;
    dmp_value_get_int(v, &n);
    return dmp_shared_set_int(s, i, n);
}

/* `with lock: v[0] += 1`, n times (or for `seconds`, when n < 0): the
 * count done goes to *done. */
static int
s_incr_locked(dmp_shared_t *s, int64_t n, double seconds, int64_t *done)
{
    dmp_lock_t *lock = dmp_shared_get_lock(s);
    double until = s_now() + seconds;
    int rc = 0;
    for (*done = 0; rc == 0 && (n < 0 ? s_now() < until : *done < n);) {
        rc = dmp_lock_acquire(lock, DMP_FOREVER);
        if (rc == DMP_EOWNERDEAD)
            rc = 0;
        int64_t v = 0;
        if (rc == 0)
            rc = dmp_shared_get_int(s, 0, &v);
        if (rc == 0)
            rc = dmp_shared_set_int(s, 0, v + 1);
        int rrc = dmp_lock_release(lock);
        if (rc == 0)
            rc = rrc;
        if (rc == 0)
            ++*done;
    }
    return rc;
}

/*
 * args [S, R or None, [[op, arg], ...]]: runs the ops on the Value or
 * Array S and reports each to R as [i, rc, t0, t1, result]. Ops: get (arg
 * index; result the element), set (arg [index, value]), read (result the
 * list of every element), write (arg the list), incr_locked (arg n),
 * incr_for (arg seconds: locked increments for that long; result the
 * count), incr_unlocked (arg n: get then set, no lock), add (arg n: adds
 * of 1 to element 0), acquire (arg timeout), release, sleep (arg
 * seconds), ready, die (SIGKILL, now), return (without destroying S).
 * Exits 0 once every op ran; 100+ when it could not start.
 */
DMP_TARGET(sh_script)
{
    dmp_shared_t *s = NULL;
    dmp_queue_t *r = NULL;
    if (dmp_shared_from_value(dmp_list_get(args, 0), &s) != 0)
        return 101;
    const dmp_value_t *rv = dmp_list_get(args, 1);
    if (dmp_value_type(rv) == DMP_VALUE_HANDLE &&
        dmp_queue_from_value(rv, &r) != 0)
        return 102;
    const dmp_value_t *ops = dmp_list_get(args, 2);
    for (size_t i = 0; i < dmp_value_len(ops); i++) {
        const dmp_value_t *op = dmp_list_get(ops, (int64_t)i);
        const char *name = dmp_value_str(dmp_list_get(op, 0), NULL);
        const dmp_value_t *arg = dmp_list_get(op, 1);
        if (!name)
            return 103;
        int64_t n = 0;
        dmp_value_get_int(arg, &n);
        dmp_value_t *res = NULL;
        int rc = 0;
        double t0 = s_now();
        if (strcmp(name, "get") == 0) {
            rc = s_elem_value(s, n, &res);
        } else if (strcmp(name, "set") == 0) {
            int64_t k = 0;
            dmp_value_get_int(dmp_list_get(arg, 0), &k);
            rc = s_elem_set(s, k, dmp_list_get(arg, 1));
        } else if (strcmp(name, "read") == 0) {
            res = dmp_list();
            for (size_t k = 0; rc == 0 && k < dmp_shared_len(s); k++) {
                dmp_value_t *e = NULL;
                if ((rc = s_elem_value(s, (int64_t)k, &e)) == 0)
                    dmp_list_append(res, e);
            }
        } else if (strcmp(name, "write") == 0) {
            for (size_t k = 0; rc == 0 && k < dmp_value_len(arg); k++)
                rc = s_elem_set(s, (int64_t)k, dmp_list_get(arg, (int64_t)k));
        } else if (strcmp(name, "incr_locked") == 0) {
            int64_t done = 0;
            rc = s_incr_locked(s, n, 0, &done);
            res = dmp_int(done);
        } else if (strcmp(name, "incr_for") == 0) {
            int64_t done = 0;
            rc = s_incr_locked(s, -1, s_num(arg), &done);
            res = dmp_int(done);
        } else if (strcmp(name, "incr_unlocked") == 0) {
            for (int64_t k = 0; rc == 0 && k < n; k++) {
                int64_t v = 0;
                if ((rc = dmp_shared_get_int(s, 0, &v)) == 0)
                    rc = dmp_shared_set_int(s, 0, v + 1);
            }
        } else if (strcmp(name, "add") == 0) {
            for (int64_t k = 0; rc == 0 && k < n; k++)
                rc = dmp_shared_add(s, 0, 1, NULL);
        } else if (strcmp(name, "acquire") == 0) {
            rc = dmp_lock_acquire(dmp_shared_get_lock(s), s_num(arg));
        } else if (strcmp(name, "release") == 0) {
            rc = dmp_lock_release(dmp_shared_get_lock(s));
        } else if (strcmp(name, "sleep") == 0) {
            s_sleep(s_num(arg));
        } else if (strcmp(name, "die") == 0) {
            raise(SIGKILL);
        } else if (strcmp(name, "return") == 0) {
            return 0; /* leaves S to dmp_fini, as a careless user */
        } else if (strcmp(name, "ready") != 0) {
            return 104;
        }
        double t1 = s_now();
        if (r) {
            dmp_value_t *rep = dmp_list_of(5, dmp_int((int64_t)i),
                                           dmp_int(rc), dmp_double(t0),
                                           dmp_double(t1),
                                           res ? res : dmp_none());
            int prc = dmp_queue_put(r, rep, DMP_FOREVER);
            dmp_value_destroy(&rep);
            if (prc == 0 && strcmp(name, "ready") == 0) {
                /* at the owner before we go on (remote puts are
                 * pipelined; qsize waits until they are there) */
                int64_t q = dmp_queue_qsize(r);
                prc = q < 0 ? (int)q : 0;
            }
            if (prc)
                return 105;
        } else {
            dmp_value_destroy(&res);
        }
    }
    int rc = r ? dmp_queue_close(r) : 0;
    dmp_shared_destroy(&s);
    dmp_queue_destroy(&r);
    return rc ? 106 : 0;
}

/* args [R, how]: creates an Array('q', 4) on its own node, puts its handle
 * into R, then: "return" without destroying it (dmp_fini lets go), or
 * "die" (SIGKILL: nobody lets go). */
DMP_TARGET(sh_create_and_leave)
{
    dmp_queue_t *r = NULL;
    dmp_shared_t *s = NULL;
    if (dmp_queue_from_value(dmp_list_get(args, 0), &r) != 0)
        return 101;
    const char *how = dmp_value_str(dmp_list_get(args, 1), NULL);
    int64_t init[4] = {1, 2, 3, 4};
    if (!how || dmp_shared_array_new('q', 4, init, 1, &s) != 0)
        return 102;
    dmp_value_t *h = dmp_shared_value(s);
    int rc = dmp_queue_put(r, h, 10.0);
    dmp_value_destroy(&h);
    if (rc == 0)
        rc = dmp_queue_close(r);
    if (rc)
        return 103;
    if (strcmp(how, "die") == 0)
        raise(SIGKILL);
    return 0; /* s and r left to dmp_fini */
}

/* args [R, CTL]: the owner in the owner-dies group: creates a Value('i',
 * 7) on its node, sends its handle to R, waits on CTL until told to stop
 * or its node is gone. */
DMP_TARGET(sh_owner)
{
    dmp_queue_t *r = NULL, *ctl = NULL;
    dmp_shared_t *s = NULL;
    int32_t seven = 7;
    if (dmp_queue_from_value(dmp_list_get(args, 0), &r) != 0 ||
        dmp_queue_from_value(dmp_list_get(args, 1), &ctl) != 0 ||
        dmp_shared_value_new('i', &seven, 1, &s) != 0)
        return 101;
    dmp_value_t *h = dmp_shared_value(s);
    int rc = dmp_queue_put(r, h, 10.0);
    dmp_value_destroy(&h);
    dmp_value_t *v = NULL;
    if (rc == 0)
        dmp_queue_get(ctl, &v, 60.0);
    dmp_value_destroy(&v);
    dmp_shared_destroy(&s);
    dmp_queue_destroy(&r);
    dmp_queue_destroy(&ctl);
    return 0;
}

/* ---- the cluster and what a test holds --------------------------------- */

typedef enum { S_EMBEDDED, S_IPC1, S_IPC2 } s_mode_t;

static struct {
    s_mode_t mode;
    dmp_test_sandbox_t *sb;
    dmp_test_agent_t *agents[3];
    char names[3][DMP__NAME_MAX];
    char shm_prefix[3][DMP__NAME_MAX + 8];
    int group;
} s_c;

static const char *
s_node(size_t i)
{
    return s_c.names[i];
}

/* Where children go: this program's node on one host, else the others. */
static const char *
s_other(size_t k)
{
    return s_c.mode == S_EMBEDDED ? NULL : s_node(1 + k % 2);
}

#define HELD_MAX 64
static dmp_process_t *s_procs[HELD_MAX];
static dmp_queue_t *s_queues[HELD_MAX];
static dmp_shared_t *s_shared[HELD_MAX];

static void
s_hold(void **slots, void *p)
{
    for (size_t i = 0; i < HELD_MAX; i++)
        if (!slots[i]) {
            slots[i] = p;
            return;
        }
}

static void
s_unhold(void **slots, void *p)
{
    for (size_t i = 0; i < HELD_MAX; i++)
        if (p && slots[i] == p)
            slots[i] = NULL;
}

static dmp_queue_t *
s_queue(void)
{
    dmp_queue_t *q = NULL;
    assert_dmp_ok(dmp_queue_new(NULL, &q));
    s_hold((void **)s_queues, q);
    return q;
}

static void
s_destroy_queue(dmp_queue_t **q)
{
    s_unhold((void **)s_queues, *q);
    dmp_queue_destroy(q);
}

static dmp_shared_t *
s_array(char tc, size_t n, const void *init, int lock)
{
    dmp_shared_t *s = NULL;
    int rc = n == 1 ? dmp_shared_value_new(tc, init, lock, &s)
                    : dmp_shared_array_new(tc, n, init, lock, &s);
    if (rc)
        print_error("new '%c' x %zu: %s: %s\n", tc, n, dmp_err_name(rc),
                    dmp_default_client()
                        ? dmp_client_errmsg(dmp_default_client())
                        : "");
    assert_dmp_ok(rc);
    s_hold((void **)s_shared, s);
    return s;
}

static void
s_destroy_shared(dmp_shared_t **s)
{
    s_unhold((void **)s_shared, *s);
    dmp_shared_destroy(s);
}

static void
s_destroy_held(void)
{
    for (size_t i = 0; i < HELD_MAX; i++)
        if (s_procs[i]) {
            dmp_process_kill(s_procs[i]);
            dmp_process_join(s_procs[i], 5.0);
            dmp_process_destroy(&s_procs[i]);
        }
    for (size_t i = 0; i < HELD_MAX; i++) {
        if (s_shared[i])
            dmp_shared_destroy(&s_shared[i]);
        if (s_queues[i])
            dmp_queue_destroy(&s_queues[i]);
    }
}

/* Starts target on node (NULL: ours). Takes args. */
static dmp_process_t *
s_start(const char *target, const char *node, dmp_value_t *args)
{
    assert_non_null(args);
    dmp_process_opts_t o = {.target = target, .node = node, .args = args};
    dmp_process_t *p = NULL;
    assert_dmp_ok(dmp_process_new(&o, &p));
    s_hold((void **)s_procs, p);
    dmp_value_destroy(&args);
    int rc = dmp_process_start(p);
    if (rc)
        print_error("start of '%s' on '%s': %s: %s\n", target,
                    node ? node : "(ours)", dmp_strerror(rc),
                    dmp_client_errmsg(dmp_default_client()));
    assert_dmp_ok(rc);
    return p;
}

static dmp_process_t *
s_script(const char *node, dmp_shared_t *s, dmp_queue_t *r, dmp_value_t *ops)
{
    return s_start("sh_script", node,
                   dmp_list_of(3, dmp_shared_value(s),
                               r ? dmp_queue_value(r) : dmp_none(), ops));
}

/* Joins within JOIN_LIMIT, expects exit code `want`, destroys. */
static void
s_join(dmp_process_t **p, int want)
{
    int rc = dmp_process_join(*p, JOIN_LIMIT);
    if (rc)
        print_error("join of %s on %s: %s\n", dmp_process_name(*p),
                    dmp_process_node(*p), dmp_err_name(rc));
    assert_dmp_ok(rc);
    int code = -12345;
    assert_dmp_ok(dmp_process_exitcode(*p, &code));
    if (code != want)
        print_error("%s on %s: exit code %d, expected %d\n",
                    dmp_process_name(*p), dmp_process_node(*p), code, want);
    assert_int_equal(code, want);
    s_unhold((void **)s_procs, *p);
    dmp_process_destroy(p);
}

typedef struct {
    int64_t step;
    int rc;
    double t0, t1;
    dmp_value_t *res; /* owned */
} s_rep_t;

/* The next report from r, which must be step `step` with rc `want`. */
static s_rep_t
s_expect(dmp_queue_t *r, int64_t step, int want)
{
    dmp_value_t *v = NULL;
    int rc = dmp_queue_get(r, &v, REPORT_WAIT);
    if (rc)
        print_error("no report from a child: %s\n", dmp_err_name(rc));
    assert_dmp_ok(rc);
    s_rep_t rep = {0};
    int64_t code = 0;
    assert_int_equal(dmp_value_len(v), 5);
    dmp_value_get_int(dmp_list_get(v, 0), &rep.step);
    dmp_value_get_int(dmp_list_get(v, 1), &code);
    dmp_value_get_double(dmp_list_get(v, 2), &rep.t0);
    dmp_value_get_double(dmp_list_get(v, 3), &rep.t1);
    rep.rc = (int)code;
    rep.res = dmp_value_copy(dmp_list_get(v, 4));
    dmp_value_destroy(&v);
    if (rep.step != step || rep.rc != want)
        print_error("child step %lld: %s, expected step %lld: %s\n",
                    (long long)rep.step, dmp_err_name(rep.rc),
                    (long long)step, dmp_err_name(want));
    assert_int_equal(rep.step, step);
    assert_dmp_err(rep.rc, want);
    return rep;
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

static int64_t
s_get(dmp_shared_t *s, int64_t i)
{
    int64_t v = INT64_MIN;
    assert_dmp_ok(dmp_shared_get_int(s, i, &v));
    return v;
}

/* The segment name a handle carries ("/dmp-..."): 'S', name length, name,
 * id (8), segment name length, segment name, ... */
static void
s_seg_name(const dmp_shared_t *s, char *out, size_t size)
{
    dmp_value_t *v = dmp_shared_value(s);
    assert_non_null(v);
    size_t len = 0;
    const uint8_t *p = dmp__handle_data(v, &len);
    assert_true(p && len > 2 && p[0] == 'S');
    size_t nl = p[1];
    size_t rl = p[2 + nl + 8];
    assert_true(3 + nl + 8 + rl <= len && rl < size);
    memcpy(out, p + 3 + nl + 8, rl);
    out[rl] = '\0';
    dmp_value_destroy(&v);
}

static bool
s_shm_exists(const char *seg)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "/dev/shm%s", seg);
    return access(path, F_OK) == 0;
}

static bool
s_shm_gone(void *seg)
{
    return !s_shm_exists(seg);
}

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

static bool
s_none_left(void *prefix)
{
    DIR *d = opendir("/dev/shm");
    if (!d)
        return true;
    size_t len = strlen(prefix);
    bool none = true;
    struct dirent *de;
    while (none && (de = readdir(d)) != NULL)
        none = strncmp(de->d_name, prefix, len) != 0;
    closedir(d);
    return none;
}

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

static int
s_cluster_up(s_mode_t mode)
{
    memset(&s_c.agents, 0, sizeof s_c.agents);
    s_c.mode = mode;
    s_c.group++;
    assert_dmp_ok(dmp_test_sandbox_new(&s_c.sb));
    for (size_t i = 0; i < 3; i++) {
        snprintf(s_c.names[i], sizeof s_c.names[i], "s%d%c-node%zu",
                 (int)getpid(), 'a' + s_c.group, i + 1);
        snprintf(s_c.shm_prefix[i], sizeof s_c.shm_prefix[i], "dmp-%s-",
                 s_c.names[i]);
        assert_dmp_ok(dmp_test_agent_new(s_c.sb, s_c.names[i],
                                         &s_c.agents[i]));
        /* Fast failure detection only where a node is killed. */
        s_c.agents[i]->heartbeat = mode == S_IPC2 ? HEARTBEAT : 1.0;
        s_c.agents[i]->liveness = LIVENESS;
    }
    dmp_test_agents_mesh(s_c.agents, 3);
    assert_dmp_ok(dmp_test_agents_start(s_c.agents, 3));
    dmp_test_agent_t *a = s_c.agents[mode == S_IPC2 ? 1 : 0];
    dmp_client_opts_t opts = {.address = a->ipc_address};
    char err[512] = "";
    int rc = dmp_init_opts(&opts, err, sizeof err);
    if (rc)
        print_error("dmp_init_opts: %s\n", err);
    assert_dmp_ok(rc);
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
        for (size_t i = 0; i < 3; i++)
            if (s_c.agents[i] && dmp_test_agent_is_running(s_c.agents[i]))
                dmp_test_agent_stop(s_c.agents[i], 5.0);
        dmp_test_sandbox_destroy(&s_c.sb);
        for (size_t i = 0; i < 3; i++) /* last resort after a failure */
            s_shm_remove(s_c.shm_prefix[i]);
    }
    memset(s_c.agents, 0, sizeof s_c.agents);
    return 0;
}

/* ---- any mode ------------------------------------------------------------- */

/* The seed's program, as a user writes it: Value('i', 5) and
 * Array('i', range(10)) to a worker, which prints, sets 50, multiplies by
 * 10; on a cluster the worker runs on node2, through node1. */
static void
test_value_and_array_travel_to_a_child_and_back(void **state)
{
    (void)state;
    int32_t five = 5, range10[10];
    for (int i = 0; i < 10; i++)
        range10[i] = i;
    dmp_shared_t *num = s_array('i', 1, &five, 1);
    dmp_shared_t *list = s_array('i', 10, range10, 1);
    assert_int_equal(dmp_shared_len(num), 1);
    assert_int_equal(dmp_shared_len(list), 10);
    assert_int_equal(dmp_shared_typecode(list), 'i');
    assert_int_equal(dmp_shared_itemsize(list), 4);
    dmp_queue_t *r = s_queue();
    dmp_value_t *all = dmp_list();
    for (int i = 0; i < 10; i++)
        dmp_list_append(all, dmp_int(i * 10));
    dmp_process_t *p1 = s_script(
        s_other(0), num, r,
        dmp_list_of(2, s_op("get", dmp_int(0)),
                    s_op("set", dmp_list_of(2, dmp_int(0), dmp_int(50)))));
    dmp_process_t *p2 = s_script(
        s_other(0), list, r,
        dmp_list_of(2, s_op("read", NULL), s_op("write", all)));
    /* two children, one queue: whichever reports first */
    for (int k = 0; k < 4; k++) {
        dmp_value_t *v = NULL;
        assert_dmp_ok(dmp_queue_get(r, &v, REPORT_WAIT));
        int64_t step = -1, rc = -1;
        dmp_value_get_int(dmp_list_get(v, 0), &step);
        dmp_value_get_int(dmp_list_get(v, 1), &rc);
        assert_int_equal(rc, 0);
        const dmp_value_t *res = dmp_list_get(v, 4);
        if (dmp_value_type(res) == DMP_VALUE_INT) {
            int64_t n = 0;
            dmp_value_get_int(res, &n);
            assert_int_equal(n, 5);
        } else if (dmp_value_type(res) == DMP_VALUE_LIST) {
            assert_int_equal(dmp_value_len(res), 10);
            for (int i = 0; i < 10; i++) {
                int64_t n = -1;
                dmp_value_get_int(dmp_list_get(res, i), &n);
                assert_int_equal(n, i);
            }
        }
        dmp_value_destroy(&v);
    }
    s_join(&p1, 0);
    s_join(&p2, 0);
    assert_int_equal(s_get(num, 0), 50);
    for (int i = 0; i < 10; i++)
        assert_int_equal(s_get(list, i), i * 10);
    int32_t back[10];
    assert_dmp_ok(dmp_shared_read(list, 0, 10, back));
    for (int i = 0; i < 10; i++)
        assert_int_equal(back[i], i * 10);
    s_destroy_shared(&num);
    s_destroy_shared(&list);
    s_destroy_queue(&r);
}

/* Every typecode: extremes written here are read there (through the owner
 * on a cluster), written back plus one, and read here: sizes, signs,
 * wrapping as ctypes wraps, floats. */
static void
test_every_typecode_round_trips_with_wrapping(void **state)
{
    (void)state;
    static const struct {
        char tc;
        int64_t lo, hi; /* element 0 and 1; 2 gets hi + 1 (wraps) */
        int64_t wrapped;
    } ints[] = {
        {'c', 0, 255, 0},
        {'b', -128, 127, -128},
        {'B', 0, 255, 0},
        {'h', INT16_MIN, INT16_MAX, INT16_MIN},
        {'H', 0, UINT16_MAX, 0},
        {'i', INT32_MIN, INT32_MAX, INT32_MIN},
        {'I', 0, UINT32_MAX, 0},
        {'l', INT64_MIN, INT64_MAX, INT64_MIN},
        {'L', 0, -1 /* UINT64_MAX */, 0},
        {'q', INT64_MIN, INT64_MAX, INT64_MIN},
        {'Q', 0, -1, 0},
    };
    dmp_queue_t *r = s_queue();
    for (size_t t = 0; t < sizeof ints / sizeof ints[0]; t++) {
        dmp_shared_t *s = s_array(ints[t].tc, 3, NULL, t % 2);
        assert_int_equal(dmp_shared_itemsize(s),
                         ints[t].tc == 'c' || ints[t].tc == 'b' ||
                                 ints[t].tc == 'B'
                             ? 1
                         : ints[t].tc == 'h' || ints[t].tc == 'H' ? 2
                         : ints[t].tc == 'i' || ints[t].tc == 'I' ? 4
                                                                    : 8);
        assert_int_equal(s_get(s, 0), 0); /* zero-filled */
        assert_dmp_ok(dmp_shared_set_int(s, 0, ints[t].lo));
        assert_dmp_ok(dmp_shared_set_int(s, 1, ints[t].hi));
        assert_dmp_ok(dmp_shared_set_int(s, -1, ints[t].hi)); /* a[-1] */
        double d = 0;
        assert_dmp_err(dmp_shared_set_double(s, 0, 1.5), -EINVAL);
        assert_dmp_ok(dmp_shared_get_double(s, 0, &d));
        dmp_value_t *plus1 = dmp_list_of(
            3, dmp_int(ints[t].lo + 1), dmp_int(ints[t].hi),
            dmp_int((int64_t)((uint64_t)ints[t].hi + 1)));
        dmp_process_t *p = s_script(
            s_other(t), s, r,
            dmp_list_of(2, s_op("read", NULL), s_op("write", plus1)));
        s_rep_t rep = s_expect(r, 0, 0);
        assert_int_equal(dmp_value_len(rep.res), 3);
        int64_t got[3];
        for (int k = 0; k < 3; k++)
            assert_dmp_ok(dmp_value_get_int(dmp_list_get(rep.res, k),
                                            &got[k]));
        if (got[0] != ints[t].lo || got[1] != ints[t].hi ||
            got[2] != ints[t].hi)
            print_error("'%c': read %lld %lld %lld\n", ints[t].tc,
                        (long long)got[0], (long long)got[1],
                        (long long)got[2]);
        assert_true(got[0] == ints[t].lo && got[1] == ints[t].hi &&
                    got[2] == ints[t].hi);
        s_free_rep(&rep);
        s_free_rep((rep = s_expect(r, 1, 0), &rep));
        s_join(&p, 0);
        assert_true(s_get(s, 0) == ints[t].lo + 1);
        assert_true(s_get(s, 1) == ints[t].hi);
        assert_true(s_get(s, 2) == ints[t].wrapped);
        s_destroy_shared(&s);
    }
    /* f and d: get_int refuses, set_int converts, doubles travel */
    for (int t = 0; t < 2; t++) {
        char tc = t ? 'd' : 'f';
        dmp_shared_t *s = s_array(tc, 2, NULL, 1);
        int64_t n = 0;
        assert_dmp_err(dmp_shared_get_int(s, 0, &n), -EINVAL);
        assert_dmp_ok(dmp_shared_set_int(s, 0, 3));
        assert_dmp_ok(dmp_shared_set_double(s, 1, -0.25));
        dmp_process_t *p = s_script(
            s_other(t), s, r,
            dmp_list_of(2, s_op("read", NULL),
                        s_op("write", dmp_list_of(2, dmp_double(1e30),
                                                  dmp_double(0.1)))));
        s_rep_t rep = s_expect(r, 0, 0);
        assert_true(s_num(dmp_list_get(rep.res, 0)) == 3.0);
        assert_true(s_num(dmp_list_get(rep.res, 1)) == -0.25);
        s_free_rep(&rep);
        s_free_rep((rep = s_expect(r, 1, 0), &rep));
        s_join(&p, 0);
        double a = 0, b = 0;
        assert_dmp_ok(dmp_shared_get_double(s, 0, &a));
        assert_dmp_ok(dmp_shared_get_double(s, 1, &b));
        assert_true(a == (t ? 1e30 : (double)1e30f));
        assert_true(b == (t ? 0.1 : (double)0.1f));
        s_destroy_shared(&s);
    }
    s_destroy_queue(&r);
}

/* What Python raises becomes a code; nothing changes. */
static void
test_bad_arguments_are_einval_and_unheld_release_eperm(void **state)
{
    (void)state;
    dmp_shared_t *s = NULL;
    assert_dmp_err(dmp_shared_value_new('x', NULL, 1, &s), -EINVAL);
    assert_dmp_err(dmp_shared_value_new('\0', NULL, 1, &s), -EINVAL);
    assert_dmp_err(dmp_shared_array_new('i', 0, NULL, 1, &s), -EINVAL);
    assert_dmp_err(dmp_shared_array_new('d', SIZE_MAX / 2, NULL, 1, &s),
                   -EINVAL);
    assert_null(s);
    int32_t init[3] = {7, 8, 9};
    s = s_array('i', 3, init, 1);
    int64_t v = 0;
    double d = 0;
    int32_t buf[4] = {0};
    assert_dmp_err(dmp_shared_get_int(s, 3, &v), -EINVAL);
    assert_dmp_err(dmp_shared_get_int(s, -4, &v), -EINVAL);
    assert_dmp_err(dmp_shared_set_int(s, 3, 1), -EINVAL);
    assert_dmp_err(dmp_shared_get_double(s, 99, &d), -EINVAL);
    assert_dmp_err(dmp_shared_add(s, 3, 1, NULL), -EINVAL);
    assert_dmp_err(dmp_shared_add_double(s, 0, 1.0, NULL), -EINVAL);
    assert_dmp_err(dmp_shared_read(s, 1, 3, buf), -EINVAL);
    assert_dmp_err(dmp_shared_read(s, 4, 0, buf), -EINVAL);
    assert_dmp_err(dmp_shared_write(s, 2, 2, buf), -EINVAL);
    assert_dmp_err(dmp_shared_write(s, SIZE_MAX, 2, buf), -EINVAL);
    assert_dmp_ok(dmp_shared_read(s, 3, 0, buf)); /* empty: fine */
    assert_int_equal(s_get(s, -1), 9);
    assert_int_equal(s_get(s, -3), 7);
    assert_dmp_ok(dmp_shared_read(s, 1, 2, buf));
    assert_int_equal(buf[0], 8);
    assert_int_equal(buf[1], 9);
    dmp_lock_t *lock = dmp_shared_get_lock(s);
    assert_non_null(lock);
    assert_dmp_err(dmp_lock_release(lock), -EPERM);
    assert_int_equal(dmp_lock_is_owned(lock), 0);
    /* Raw: no lock */
    dmp_shared_t *raw = s_array('i', 1, NULL, 0);
    assert_null(dmp_shared_get_lock(raw));
    int64_t after = 0;
    assert_dmp_ok(dmp_shared_add(raw, 0, -5, &after));
    assert_int_equal(after, -5);
    /* from_value: anything but a Value or Array */
    dmp_shared_t *x = NULL;
    dmp_value_t *n = dmp_int(3);
    assert_dmp_err(dmp_shared_from_value(n, &x), -EINVAL);
    dmp_value_destroy(&n);
    dmp_queue_t *q = s_queue();
    dmp_value_t *qv = dmp_queue_value(q);
    assert_dmp_err(dmp_shared_from_value(qv, &x), -EINVAL);
    dmp_value_destroy(&qv);
    assert_null(x);
    /* the same object twice in a process: one handle, counted */
    dmp_value_t *sv = dmp_shared_value(s);
    assert_dmp_ok(dmp_shared_from_value(sv, &x));
    assert_ptr_equal(x, s);
    dmp_value_destroy(&sv);
    dmp_shared_destroy(&x);
    assert_null(x);
    assert_int_equal(s_get(s, 0), 7); /* still open */
    dmp_shared_destroy(&x);           /* NULL: nothing */
    s_destroy_shared(&s);
    s_destroy_shared(&raw);
    s_destroy_queue(&q);
}

/* get_lock() is an RLock: the holder acquires again and must release as
 * often; get and set while held do not deadlock; a child cannot take it
 * meanwhile (0 timeout: at once), then can. */
static void
test_lock_is_recursive_and_excludes_a_child(void **state)
{
    (void)state;
    dmp_shared_t *s = s_array('i', 1, NULL, 1);
    dmp_lock_t *lock = dmp_shared_get_lock(s);
    assert_dmp_ok(dmp_lock_acquire(lock, DMP_FOREVER));
    assert_dmp_ok(dmp_lock_acquire(lock, 0));
    assert_int_equal(dmp_lock_is_owned(lock), 1);
    assert_dmp_ok(dmp_shared_set_int(s, 0, 41));
    assert_dmp_ok(dmp_shared_add(s, 0, 1, NULL));
    assert_int_equal(s_get(s, 0), 42);
    dmp_queue_t *r = s_queue();
    dmp_process_t *p = s_script(
        s_other(0), s, r,
        dmp_list_of(4, s_op("acquire", dmp_double(0)),
                    s_op("ready", NULL), s_op("acquire", dmp_double(20)),
                    s_op("release", NULL)));
    s_rep_t rep = s_expect(r, 0, -ETIMEDOUT);
    s_free_rep(&rep);
    rep = s_expect(r, 1, 0);
    s_free_rep(&rep);
    s_sleep(0.2);
    assert_dmp_ok(dmp_lock_release(lock));
    assert_int_equal(dmp_lock_is_owned(lock), 1); /* once more to go */
    s_sleep(0.2);
    double t = s_now();
    assert_dmp_ok(dmp_lock_release(lock));
    assert_dmp_err(dmp_lock_release(lock), -EPERM);
    rep = s_expect(r, 2, 0);
    /* It got the lock only after our last release. */
    if (rep.t1 < t)
        print_error("child acquired at %.3f, before our release at %.3f\n",
                    rep.t1, t);
    assert_true(rep.t1 >= t);
    s_free_rep(&rep);
    s_free_rep((rep = s_expect(r, 3, 0), &rep));
    s_join(&p, 0);
    s_destroy_shared(&s);
    s_destroy_queue(&r);
}

/* What a holder writes (and adds) lands in order, and nobody reads it
 * half-done: a child holds the lock, writes, adds and writes again; a read
 * here waits for its release and sees all of it. */
static void
test_a_holders_writes_and_adds_land_in_order(void **state)
{
    (void)state;
    dmp_shared_t *s = s_array('q', 3, NULL, 1);
    dmp_queue_t *r = s_queue();
    dmp_process_t *p = s_script(
        s_other(1), s, r,
        dmp_list_of(7, s_op("acquire", dmp_double(10)),
                    s_op("set", dmp_list_of(2, dmp_int(0), dmp_int(10))),
                    s_op("add", dmp_int(5)),
                    s_op("set", dmp_list_of(2, dmp_int(2), dmp_int(7))),
                    s_op("ready", NULL), s_op("sleep", dmp_double(0.3)),
                    s_op("release", NULL)));
    for (int k = 0; k < 5; k++)
        s_free_rep((s_rep_t[]){s_expect(r, k, 0)});
    int64_t got[3] = {0};
    double t0 = s_now();
    assert_dmp_ok(dmp_shared_read(s, 0, 3, got)); /* waits for the release */
    double took = s_now() - t0;
    assert_true(took > 0.1);
    assert_int_equal(got[0], 15);
    assert_int_equal(got[1], 0);
    assert_int_equal(got[2], 7);
    for (int k = 5; k < 7; k++)
        s_free_rep((s_rep_t[]){s_expect(r, k, 0)});
    s_join(&p, 0);
    s_destroy_shared(&s);
    s_destroy_queue(&r);
}

/* acquire(timeout) while a child holds it: -ETIMEDOUT no earlier than
 * asked, within 200 ms after here; and the same for a child (across
 * hosts: within REMOTE_SLACK) while we hold it. */
static void
test_acquire_timeouts_are_honoured(void **state)
{
    (void)state;
    dmp_shared_t *s = s_array('q', 1, NULL, 1);
    dmp_lock_t *lock = dmp_shared_get_lock(s);
    dmp_queue_t *r = s_queue();
    dmp_process_t *p = s_script(
        s_other(0), s, r,
        dmp_list_of(3, s_op("acquire", dmp_double(10)), s_op("sleep",
                    dmp_double(1.5)), s_op("release", NULL)));
    s_rep_t rep = s_expect(r, 0, 0);
    s_free_rep(&rep);
    double t0 = s_now();
    assert_dmp_err(dmp_lock_acquire(lock, 0.3), -ETIMEDOUT);
    double took = s_now() - t0;
    print_message("# local acquire(0.3) while held: %.3f s\n", took);
    assert_took(took, 0.3, 0.3 + LOCAL_SLACK);
    t0 = s_now();
    assert_dmp_err(dmp_lock_acquire(lock, 0), -ETIMEDOUT);
    assert_took(s_now() - t0, 0, LOCAL_SLACK);
    /* once released, it is ours */
    assert_dmp_ok(dmp_lock_acquire(lock, 10));
    s_free_rep((rep = s_expect(r, 1, 0), &rep));
    s_free_rep((rep = s_expect(r, 2, 0), &rep));
    s_join(&p, 0);
    /* the other way round: we hold, the child waits 0.3 s */
    p = s_script(s_other(1), s, r,
                 dmp_list_of(1, s_op("acquire", dmp_double(0.3))));
    rep = s_expect(r, 0, -ETIMEDOUT);
    took = rep.t1 - rep.t0;
    print_message("# child acquire(0.3) while held here: %.3f s\n", took);
    assert_took(took, 0.3,
                0.3 + (s_c.mode == S_EMBEDDED ? LOCAL_SLACK : REMOTE_SLACK));
    s_free_rep(&rep);
    s_join(&p, 0);
    assert_dmp_ok(dmp_lock_release(lock));
    s_destroy_shared(&s);
    s_destroy_queue(&r);
}

/* The increment race the guide warns about: N processes each doing M
 * `with get_lock(): v.value += 1` end with exactly N x M (on a cluster:
 * one on each node, two of them through node1). */
static void
test_locked_increments_from_n_processes_lose_nothing(void **state)
{
    (void)state;
    const int n = 3;
    const int64_t m = s_c.mode == S_EMBEDDED ? 200000 : 2000;
    dmp_shared_t *s = s_array('i', 1, NULL, 1);
    dmp_queue_t *r = s_queue();
    dmp_process_t *p[3];
    double t0 = s_now();
    for (int k = 0; k < n; k++)
        p[k] = s_script(s_c.mode == S_EMBEDDED ? NULL : s_node((size_t)k), s,
                        r,
                        dmp_list_of(1, s_op("incr_locked", dmp_int(m))));
    for (int k = 0; k < n; k++) {
        s_rep_t rep = s_expect(r, 0, 0);
        assert_int_equal(s_res_int(&rep), m);
        s_free_rep(&rep);
    }
    for (int k = 0; k < n; k++)
        s_join(&p[k], 0);
    int64_t total = s_get(s, 0);
    print_message("# %d x %lld locked increments: %lld in %.2f s\n", n,
                  (long long)m, (long long)total, s_now() - t0);
    assert_int_equal(total, n * m);
    s_destroy_shared(&s);
    s_destroy_queue(&r);
}

/* Local and remote holders under contention for the same time: every
 * increment any of them counted is in the value (none lost to overlap),
 * and each got its turns (nobody starved). */
static void
test_local_and_remote_holders_exclude_each_other(void **state)
{
    (void)state;
    const int n = s_c.mode == S_EMBEDDED ? 2 : 4;
    dmp_shared_t *s = s_array('q', 1, NULL, 1);
    dmp_queue_t *r = s_queue();
    dmp_process_t *p[4];
    for (int k = 0; k < n; k++) /* cluster: node1, node1, node2, node3 */
        p[k] = s_script(s_c.mode == S_EMBEDDED ? NULL
                        : k < 2 ? s_node(0) : s_node((size_t)k - 1),
                        s, r,
                        dmp_list_of(1, s_op("incr_for", dmp_double(1.5))));
    int64_t sum = 0;
    for (int k = 0; k < n; k++) {
        s_rep_t rep = s_expect(r, 0, 0);
        int64_t got = s_res_int(&rep);
        print_message("# a holder counted %lld increments\n", (long long)got);
        assert_true(got > 0);
        sum += got;
        s_free_rep(&rep);
    }
    for (int k = 0; k < n; k++)
        s_join(&p[k], 0);
    int64_t total = 0;
    assert_dmp_ok(dmp_shared_read(s, 0, 1, &total));
    print_message("# counted %lld, value %lld\n", (long long)sum,
                  (long long)total);
    assert_int_equal(total, sum);
    s_destroy_shared(&s);
    s_destroy_queue(&r);
}

/* Atomic adds without the lock: N processes x M adds, none lost. */
static void
test_adds_without_the_lock_lose_nothing(void **state)
{
    (void)state;
    const int n = 3;
    const int64_t m = s_c.mode == S_EMBEDDED ? 300000 : 1000;
    dmp_shared_t *s = s_array('Q', 2, NULL, 0);
    dmp_queue_t *r = s_queue();
    dmp_process_t *p[3];
    for (int k = 0; k < n; k++)
        p[k] = s_script(s_c.mode == S_EMBEDDED ? NULL : s_node((size_t)k), s,
                        r, dmp_list_of(1, s_op("add", dmp_int(m))));
    for (int k = 0; k < n; k++)
        s_free_rep((s_rep_t[]){s_expect(r, 0, 0)});
    for (int k = 0; k < n; k++)
        s_join(&p[k], 0);
    assert_int_equal(s_get(s, 0), n * m);
    assert_int_equal(s_get(s, 1), 0);
    /* a double too */
    dmp_shared_t *d = s_array('d', 1, NULL, 1);
    double after = 0;
    assert_dmp_ok(dmp_shared_add_double(d, 0, 0.5, &after));
    assert_dmp_ok(dmp_shared_add(d, 0, 2, NULL));
    assert_dmp_ok(dmp_shared_get_double(d, 0, &after));
    assert_true(after == 2.5);
    s_destroy_shared(&s);
    s_destroy_shared(&d);
    s_destroy_queue(&r);
}

/* The creator destroys its handle right after starting a child: the
 * object lives on for the child (held in its name), and is removed from
 * /dev/shm once the child let go too. */
static void
test_object_lives_while_a_child_holds_it_then_goes(void **state)
{
    (void)state;
    int64_t init = 99;
    dmp_shared_t *s = s_array('q', 1, &init, 1);
    char seg[DMP__RING_NAME_MAX];
    s_seg_name(s, seg, sizeof seg);
    assert_true(s_shm_exists(seg));
    dmp_queue_t *r = s_queue();
    dmp_process_t *p = s_script(s_other(0), s, r,
                                dmp_list_of(2, s_op("sleep", dmp_double(0.5)),
                                            s_op("get", dmp_int(0))));
    s_destroy_shared(&s);
    assert_true(s_shm_exists(seg));
    s_free_rep((s_rep_t[]){s_expect(r, 0, 0)});
    s_rep_t rep = s_expect(r, 1, 0);
    assert_int_equal(s_res_int(&rep), 99);
    s_free_rep(&rep);
    s_join(&p, 0);
    bool gone = dmp_test_wait_until(s_shm_gone, seg, 5.0);
    if (!gone)
        print_error("%s is still in /dev/shm\n", seg);
    assert_true(gone);
    /* destroyed by its only holder: gone at once */
    s = s_array('b', 1, NULL, 0);
    s_seg_name(s, seg, sizeof seg);
    assert_true(s_shm_exists(seg));
    s_destroy_shared(&s);
    assert_false(s_shm_exists(seg));
    s_destroy_queue(&r);
}

/* A child that creates an object and returns without destroying it lets
 * go at dmp_fini; one killed holding the only handle lets go by dying: the
 * owner removes both once nobody holds them. */
static void
test_objects_of_an_ended_or_killed_creator_are_removed(void **state)
{
    (void)state;
    const char *hows[] = {"return", "die"};
    for (int k = 0; k < 2; k++) {
        dmp_queue_t *r = s_queue();
        dmp_process_t *p = s_start("sh_create_and_leave", s_other(k),
                                   dmp_list_of(2, dmp_queue_value(r),
                                               dmp_str(hows[k])));
        dmp_value_t *h = NULL;
        assert_dmp_ok(dmp_queue_get(r, &h, REPORT_WAIT));
        s_join(&p, k ? -SIGKILL : 0);
        /* its segment's name, without opening it */
        size_t len = 0;
        const uint8_t *d = dmp__handle_data(h, &len);
        assert_non_null(d);
        char seg[DMP__RING_NAME_MAX];
        size_t nl = d[1], rl = d[2 + nl + 8];
        memcpy(seg, d + 3 + nl + 8, rl);
        seg[rl] = '\0';
        double t0 = s_now();
        /* the owner's sweep: a heartbeat, after a new object's grace */
        bool gone = dmp_test_wait_until(s_shm_gone, seg, 15.0);
        print_message("# creator %s: %s removed after %.2f s\n", hows[k], seg,
                      s_now() - t0);
        assert_true(gone);
        dmp_shared_t *x = NULL;
        assert_dmp_err(dmp_shared_from_value(h, &x), -EBADF);
        dmp_value_destroy(&h);
        s_destroy_queue(&r);
    }
}

/* ---- one host ---------------------------------------------------------- */

/* Without the lock, `v.value += 1` (a get and a set, each locked alone)
 * loses updates between processes, as the guide says. Reported, and
 * asserted only as "never more than N x M": the loss is a matter of
 * scheduling. */
static void
test_unlocked_increments_lose_updates(void **state)
{
    (void)state;
    const int64_t m = 1000000;
    int64_t total = 0;
    for (int tries = 0; tries < 3; tries++) {
        dmp_shared_t *s = s_array('i', 1, NULL, 1);
        dmp_queue_t *r = s_queue();
        dmp_process_t *p[2];
        for (int k = 0; k < 2; k++)
            p[k] = s_script(NULL, s, r,
                            dmp_list_of(1, s_op("incr_unlocked",
                                                dmp_int(m))));
        for (int k = 0; k < 2; k++)
            s_free_rep((s_rep_t[]){s_expect(r, 0, 0)});
        for (int k = 0; k < 2; k++)
            s_join(&p[k], 0);
        total = s_get(s, 0);
        print_message("# 2 x %lld unlocked increments: %lld (%lld lost)\n",
                      (long long)m, (long long)total,
                      (long long)(2 * m - total));
        assert_true(total <= 2 * m);
        s_destroy_shared(&s);
        s_destroy_queue(&r);
        if (total < 2 * m)
            break;
    }
    if (total == 2 * m)
        print_message("# no update lost this time (the processes never "
                      "overlapped: a very busy machine)\n");
}

/* A holder killed while holding: the next acquirer gets it at once with
 * DMP_EOWNERDEAD, the one after that with 0. */
static void
test_holder_killed_here_gives_eownerdead_once(void **state)
{
    (void)state;
    dmp_shared_t *s = s_array('i', 1, NULL, 1);
    dmp_lock_t *lock = dmp_shared_get_lock(s);
    dmp_queue_t *r = s_queue();
    dmp_process_t *p = s_script(
        NULL, s, r,
        dmp_list_of(4, s_op("acquire", dmp_double(5)),
                    s_op("set", dmp_list_of(2, dmp_int(0), dmp_int(13))),
                    s_op("ready", NULL), s_op("die", NULL)));
    for (int k = 0; k < 3; k++)
        s_free_rep((s_rep_t[]){s_expect(r, k, 0)});
    s_join(&p, -SIGKILL);
    double t0 = s_now();
    assert_dmp_err(dmp_lock_acquire(lock, 5.0), DMP_EOWNERDEAD);
    assert_took(s_now() - t0, 0, LOCAL_SLACK);
    assert_int_equal(s_get(s, 0), 13);
    assert_dmp_ok(dmp_lock_release(lock));
    assert_dmp_ok(dmp_lock_acquire(lock, 0));
    assert_dmp_ok(dmp_lock_release(lock));
    /* a plain get after a death takes the lock but leaves the news */
    p = s_script(NULL, s, r,
                 dmp_list_of(3, s_op("acquire", dmp_double(5)),
                             s_op("ready", NULL), s_op("die", NULL)));
    for (int k = 0; k < 2; k++)
        s_free_rep((s_rep_t[]){s_expect(r, k, 0)});
    s_join(&p, -SIGKILL);
    assert_int_equal(s_get(s, 0), 13);
    assert_dmp_ok(dmp_shared_set_int(s, 0, 14));
    assert_dmp_err(dmp_lock_acquire(lock, 5.0), DMP_EOWNERDEAD);
    assert_dmp_ok(dmp_lock_release(lock));
    s_destroy_shared(&s);
    s_destroy_queue(&r);
}

/* ---- cluster -------------------------------------------------------------- */

/* A holder on another node killed while holding (or cut off): the owner
 * releases the lock when its lease runs out, and tells the next acquirer
 * DMP_EOWNERDEAD; meanwhile nobody gets it. */
static void
test_remote_holder_killed_releases_by_lease(void **state)
{
    (void)state;
    dmp_shared_t *s = s_array('i', 1, NULL, 1);
    dmp_lock_t *lock = dmp_shared_get_lock(s);
    dmp_queue_t *r = s_queue();
    dmp_process_t *p = s_script(
        s_node(1), s, r,
        dmp_list_of(3, s_op("acquire", dmp_double(5)), s_op("ready", NULL),
                    s_op("sleep", dmp_double(60))));
    for (int k = 0; k < 2; k++)
        s_free_rep((s_rep_t[]){s_expect(r, k, 0)});
    assert_dmp_err(dmp_lock_acquire(lock, 0), -ETIMEDOUT);
    /* alive and renewing: still held well past one lease */
    assert_dmp_err(dmp_lock_acquire(lock, 3.0), -ETIMEDOUT);
    assert_dmp_ok(dmp_process_kill(p));
    double t0 = s_now();
    int rc = dmp_lock_acquire(lock, 20.0);
    double took = s_now() - t0;
    print_message("# the lock of a killed remote holder came back after "
                  "%.2f s: %s\n", took, dmp_err_name(rc));
    assert_dmp_err(rc, DMP_EOWNERDEAD);
    assert_took(took, 0, LEASE_WITHIN);
    assert_dmp_ok(dmp_lock_release(lock));
    s_join(&p, -SIGKILL);
    s_destroy_shared(&s);
    s_destroy_queue(&r);
}

/* The owner node dies while a process here holds a handle to an object it
 * owns: operations fail with DMP_ENODE within the heartbeat timeout,
 * never hang. */
static void
test_owner_node_killed_gives_enode_never_a_hang(void **state)
{
    (void)state;
    dmp_queue_t *r = s_queue(), *ctl = s_queue();
    dmp_process_t *p = s_start("sh_owner", s_node(1),
                               dmp_list_of(2, dmp_queue_value(r),
                                           dmp_queue_value(ctl)));
    dmp_value_t *h = NULL;
    assert_dmp_ok(dmp_queue_get(r, &h, REPORT_WAIT));
    dmp_shared_t *s = NULL;
    assert_dmp_ok(dmp_shared_from_value(h, &s));
    s_hold((void **)s_shared, s);
    dmp_value_destroy(&h);
    assert_int_equal(s_get(s, 0), 7);
    assert_dmp_ok(dmp_shared_add(s, 0, 1, NULL));
    assert_int_equal(s_get(s, 0), 8);
    dmp_test_agent_kill(s_c.agents[0]); /* node1: the object's owner */
    double t0 = s_now();
    int64_t v = 0;
    int rc = dmp_shared_get_int(s, 0, &v);
    double took = s_now() - t0;
    print_message("# get after the owner died: %s after %.2f s\n",
                  dmp_err_name(rc), took);
    assert_dmp_err(rc, DMP_ENODE);
    assert_took(took, 0, ENODE_WITHIN + 10.0);
    assert_dmp_err(dmp_lock_acquire(dmp_shared_get_lock(s), DMP_FOREVER),
                   DMP_ENODE);
    s_destroy_shared(&s);
    dmp_process_join(p, 5.0);
    s_unhold((void **)s_procs, p);
    dmp_process_destroy(&p);
}

/* Every segment of our nodes is gone once the handles are and the program
 * calls dmp_fini (which lets go of what it did not destroy). */
static void
test_no_segment_is_left_in_dev_shm(void **state)
{
    (void)state;
    dmp_shared_t *forgotten = NULL; /* created and never destroyed */
    assert_dmp_ok(dmp_shared_value_new('d', NULL, 1, &forgotten));
    char prefix[DMP__RING_NAME_MAX] = "";
    if (s_c.mode == S_EMBEDDED) {
        /* "/dmp-NODE-INCARNATION-ID-0" -> "dmp-NODE-INCARNATION-" */
        s_seg_name(forgotten, prefix, sizeof prefix);
        for (int k = 0; k < 2; k++)
            *strrchr(prefix, '-') = '\0';
        strcat(prefix, "-");
        memmove(prefix, prefix + 1, strlen(prefix));
    }
    s_destroy_held();
    dmp_fini(); /* lets go of `forgotten` */
    if (s_c.mode == S_EMBEDDED) {
        assert_int_equal(s_shm_count(prefix), 0);
        return;
    }
    /* A holder killed on another node counts until its hold's lease runs
     * out (two of the lock's: 6 s here). */
    for (size_t i = 0; i < 3; i++)
        if (dmp_test_agent_is_running(s_c.agents[i])) {
            dmp_test_wait_until(s_none_left, s_c.shm_prefix[i], 10.0);
            assert_int_equal(s_shm_count(s_c.shm_prefix[i]), 0);
        }
}

static void
test_no_agent_outlives_the_tests(void **state)
{
    (void)state;
    assert_int_equal(dmp_test_agents_running(), 0);
}

static void
s_log(dmp_log_level_t level, const char *msg, void *arg)
{
    (void)arg;
    fprintf(stderr, "# [%d] libdmp %d: %s\n", (int)getpid(), (int)level, msg);
}

int
main(void)
{
    if (getenv("DMP_TEST_LOG")) /* the library's log lines, children too */
        dmp_set_log_handler(s_log, DMP_LOG_DEBUG, NULL);
    if (getenv("DMP_CHILD") || getenv("DMP_ZYGOTE"))
        dmp_init(); /* a child: runs its target, never returns */
    unsetenv("DMP_PLACE");
    unsetenv("DMP_AGENT");
    unsetenv("DMP_CLUSTER");
    dmp_test_init(170);
#define COMMON                                                                \
    cmocka_unit_test(test_value_and_array_travel_to_a_child_and_back),        \
        cmocka_unit_test(test_every_typecode_round_trips_with_wrapping),      \
        cmocka_unit_test(                                                     \
            test_bad_arguments_are_einval_and_unheld_release_eperm),          \
        cmocka_unit_test(test_lock_is_recursive_and_excludes_a_child),        \
        cmocka_unit_test(test_acquire_timeouts_are_honoured),                 \
        cmocka_unit_test(test_a_holders_writes_and_adds_land_in_order),       \
        cmocka_unit_test(                                                     \
            test_locked_increments_from_n_processes_lose_nothing),            \
        cmocka_unit_test(test_local_and_remote_holders_exclude_each_other),   \
        cmocka_unit_test(test_adds_without_the_lock_lose_nothing),            \
        cmocka_unit_test(test_object_lives_while_a_child_holds_it_then_goes), \
        cmocka_unit_test(                                                     \
            test_objects_of_an_ended_or_killed_creator_are_removed)
    const struct CMUnitTest embedded[] = {
        COMMON,
        cmocka_unit_test(test_unlocked_increments_lose_updates),
        cmocka_unit_test(test_holder_killed_here_gives_eownerdead_once),
        cmocka_unit_test(test_no_segment_is_left_in_dev_shm),
    };
    const struct CMUnitTest ipc[] = {
        COMMON,
        cmocka_unit_test(test_remote_holder_killed_releases_by_lease),
        cmocka_unit_test(test_no_segment_is_left_in_dev_shm),
    };
    const struct CMUnitTest dying[] = {
        cmocka_unit_test(test_owner_node_killed_gives_enode_never_a_hang),
        cmocka_unit_test(test_no_segment_is_left_in_dev_shm),
    };
    const struct CMUnitTest after[] = {
        cmocka_unit_test(test_no_agent_outlives_the_tests),
    };
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
    failed += RUN("the owner node dies", dying, s_up_ipc2);
    failed += cmocka_run_group_tests_name("afterwards", after, NULL, NULL);
    return failed ? 1 : 0;
}
