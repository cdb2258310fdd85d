/*
 * test_pipe.c - Pipe(duplex) and its Connection ends with real agents: on
 * one host (the embedded agent), across a cluster of three (the program on
 * node1's ipc endpoint, so its own ends are local and children on node2
 * and node3 reach node1 over direct links), and with the program on
 * node1's tcp endpoint (its children going through their own agents:
 * DMP_DIRECT=0).
 *
 * Covered: send/recv of values of every type, send_bytes with offset and
 * size, recv_bytes, poll with a timeout (precision printed), Pipe(False)
 * direction rules (-EINVAL), close, EOF once drained when the peer closed,
 * exited (after the parent closed its copy of the child's end) or was
 * killed, ends in processes on different nodes talking to each other,
 * messages up to 64 MiB across hosts (in parts, whole; over: -EMSGSIZE,
 * nothing sent), the owner node dying (DMP_ENODE, never a hang),
 * round-trip times, and no /dev/shm/dmp-* segment left.
 *
 * This binary is also the children's program: main() hands over to
 * dmp_init() first when DMP_CHILD or DMP_ZYGOTE says so. Children report
 * through a queue as lists [step, rc, t0, t1, result]; t0 and t1 are
 * CLOCK_MONOTONIC, shared by every process of this host.
 *
 * Node names carry this process's pid, so that the /dev/shm checks count
 * only our segments. Where a node is killed, heartbeat 0.2 s and liveness
 * 3; elsewhere heartbeat 1 s. DMP_TEST_GROUPS and DMP_TEST_FILTER run a
 * part (see test_queue.c).
 */
#define _GNU_SOURCE
#include "dmp_test.h"
#include "dmp_impl.h" /* dmp__handle_data */

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define HEARTBEAT 0.2
#define LIVENESS 3
#define ENODE_WITHIN 3.0  /* as test_process.c */
#define JOIN_LIMIT 30.0
#define LOCAL_SLACK 0.2   /* DESIGN.md 3b: within 200 ms after, locally */
#define REMOTE_SLACK 0.5  /* timeouts across hosts: at most this late */
#define EOF_WITHIN 0.25   /* EOF reaches a reader within this of the
                           * writer's close or death */
#define REPORT_WAIT 20.0

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

/* Every value type, with edge cases, and a handle (taken). */
static dmp_value_t *
s_sample(dmp_value_t *handle)
{
    static uint8_t all[256], big[200 * 1024];
    for (size_t i = 0; i < sizeof all; i++)
        all[i] = (uint8_t)i;
    s_fill(big, sizeof big, 9);
    static const uint8_t nothing[1];
    dmp_value_t *m = dmp_map();
    if (!m || !handle) {
        dmp_value_destroy(&m);
        dmp_value_destroy(&handle);
        return NULL;
    }
    if (dmp_map_set_str(m, "key", dmp_str("Python2")) ||
        dmp_map_set(m, dmp_int(1), dmp_list_of(2, dmp_none(), dmp_bool(0))) ||
        dmp_map_set(m, dmp_bytes("\0k", 2), dmp_double(2.5)) ||
        dmp_map_set(m, dmp_none(), dmp_str("")) ||
        dmp_map_set(m, dmp_double(0.5), dmp_map()) ||
        dmp_map_set(m, dmp_bool(0), dmp_int(-7))) {
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

/* ---- /dev/shm ------------------------------------------------------------ */

/* The first ring name a pipe end's handle carries ("/dmp-..."): 'P', name
 * length, name, id (8), end, duplex, then length-prefixed ring names. */
static void
s_ring_name(const dmp_conn_t *c, char *out, size_t size)
{
    dmp_value_t *v = dmp_conn_value(c);
    assert_non_null(v);
    size_t len = 0;
    const uint8_t *p = dmp__handle_data(v, &len);
    assert_non_null(p);
    assert_true(len > 2 && p[0] == 'P');
    size_t at = 2 + p[1] + 8 + 2;
    assert_true(at < len);
    size_t rl = p[at];
    assert_true(at + 1 + rl <= len && rl < size);
    memcpy(out, p + at + 1, rl);
    out[rl] = '\0';
    dmp_value_destroy(&v);
}

static bool
s_shm_exists(const char *ring)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "/dev/shm%s", ring);
    return access(path, F_OK) == 0;
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

/* ---- the children -------------------------------------------------------- */

static dmp_value_t *
s_op(const char *name, double timeout, dmp_value_t *arg)
{
    return dmp_list_of(3, dmp_str(name), dmp_double(timeout),
                       arg ? arg : dmp_none());
}

/*
 * args [C, R or None, [[op, timeout, arg], ...]]: runs the ops on the end
 * C and reports each to the queue R as [i, rc, t0, t1, result]. Ops: send
 * (arg a value), send_bytes (arg [bytes, offset, size]), send_size (arg
 * [n, seed]: n generated bytes), send_n (arg [n, size, first]: messages
 * first .. first+n-1 of size bytes, each its number, then s_fill(k)),
 * recv (result the value), recv_bytes
 * (result the bytes), recv_size (result [len, checksum]), poll (timeout;
 * result 0 or 1), close, destroy, echo (recv and send back until EOF;
 * result how many), ready, sleep, return (at once, ends left to dmp_fini),
 * die (SIGKILL itself). Exits 0 once every op ran; 100+ when it could not.
 */
DMP_TARGET(c_script)
{
    dmp_conn_t *c = NULL;
    dmp_queue_t *r = NULL;
    int rc = dmp_conn_from_value(dmp_list_get(args, 0), &c);
    if (rc) {
        fprintf(stderr, "c_script: conn_from_value: %s\n", dmp_strerror(rc));
        return 101;
    }
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
        rc = 0;
        double t0 = s_now();
        if (strcmp(name, "send") == 0) {
            rc = dmp_conn_send(c, arg);
        } else if (strcmp(name, "send_bytes") == 0) {
            size_t len = 0;
            const void *data = dmp_value_bytes(dmp_list_get(arg, 0), &len);
            int64_t off = 0, size = 0;
            dmp_value_get_int(dmp_list_get(arg, 1), &off);
            dmp_value_get_int(dmp_list_get(arg, 2), &size);
            rc = dmp_conn_send_bytes(c, data, (size_t)off, (size_t)size);
        } else if (strcmp(name, "send_size") == 0) {
            int64_t n = 0, seed = 0;
            dmp_value_get_int(dmp_list_get(arg, 0), &n);
            dmp_value_get_int(dmp_list_get(arg, 1), &seed);
            uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
            if (!buf)
                return 104;
            s_fill(buf, (size_t)n, (unsigned)seed);
            t0 = s_now();
            rc = dmp_conn_send_bytes(c, buf, 0, (size_t)n);
            free(buf);
        } else if (strcmp(name, "send_n") == 0) {
            int64_t n = 0, size = 0, first = 0;
            dmp_value_get_int(dmp_list_get(arg, 0), &n);
            dmp_value_get_int(dmp_list_get(arg, 1), &size);
            dmp_value_get_int(dmp_list_get(arg, 2), &first);
            uint8_t *buf = malloc(size > 8 ? (size_t)size : 8);
            if (!buf)
                return 104;
            for (int64_t k = first; rc == 0 && k < first + n; k++) {
                s_fill(buf, (size_t)size, (unsigned)k);
                memcpy(buf, &k, 8);
                rc = dmp_conn_send_bytes(c, buf, 0,
                                         size > 8 ? (size_t)size : 8);
            }
            free(buf);
        } else if (strcmp(name, "recv") == 0) {
            rc = dmp_conn_recv(c, &res);
        } else if (strcmp(name, "recv_bytes") == 0 ||
                   strcmp(name, "recv_size") == 0) {
            void *data = NULL;
            size_t len = 0;
            rc = dmp_conn_recv_bytes(c, &data, &len);
            if (rc == 0)
                res = name[5] == 'b'
                          ? dmp_bytes(data, len)
                          : dmp_list_of(2, dmp_int((int64_t)len),
                                        dmp_int(s_sum(data, len)));
            dmp_free(data);
        } else if (strcmp(name, "poll") == 0) {
            rc = dmp_conn_poll(c, timeout);
            res = dmp_int(rc);
            rc = rc < 0 ? rc : 0;
        } else if (strcmp(name, "close") == 0) {
            rc = dmp_conn_close(c);
        } else if (strcmp(name, "destroy") == 0) {
            dmp_conn_destroy(&c);
        } else if (strcmp(name, "echo") == 0) {
            int64_t n = 0;
            for (;;) {
                dmp_value_t *v = NULL;
                rc = dmp_conn_recv(c, &v);
                if (rc == 0)
                    rc = dmp_conn_send(c, v);
                dmp_value_destroy(&v);
                if (rc)
                    break;
                n++;
            }
            res = dmp_int(n);
        } else if (strcmp(name, "sleep") == 0) {
            s_sleep(timeout);
        } else if (strcmp(name, "return") == 0) {
            /* the reports so far are at their owner; c is left to
             * dmp_fini and the process's exit */
            return r && dmp_queue_close(r) ? 107 : 0;
        } else if (strcmp(name, "die") == 0) {
            if (r)
                dmp_queue_close(r); /* the reports so far arrive */
            raise(SIGKILL);
        } else if (strcmp(name, "ready") != 0) {
            return 105;
        }
        double t1 = s_now();
        if (r) {
            dmp_value_t *rep =
                dmp_list_of(5, dmp_int((int64_t)i), dmp_int(rc),
                            dmp_double(t0), dmp_double(t1),
                            res ? res : dmp_none());
            int prc = rep ? dmp_queue_put(r, rep, DMP_FOREVER) : -ENOMEM;
            dmp_value_destroy(&rep);
            if (prc)
                return 106;
        } else {
            dmp_value_destroy(&res);
        }
    }
    rc = r ? dmp_queue_close(r) : 0; /* reports at the owner before exit */
    dmp_conn_destroy(&c);
    dmp_queue_destroy(&r);
    return rc ? 107 : 0;
}

/* args [R, CTL]: creates a duplex pipe on its node, sends both ends to R
 * and waits on CTL (the owner-dies group). */
DMP_TARGET(c_owner)
{
    dmp_queue_t *r = NULL, *ctl = NULL;
    if (dmp_queue_from_value(dmp_list_get(args, 0), &r) != 0 ||
        dmp_queue_from_value(dmp_list_get(args, 1), &ctl) != 0)
        return 101;
    dmp_conn_t *a = NULL, *b = NULL;
    if (dmp_pipe(1, &a, &b) != 0)
        return 102;
    dmp_value_t *h = dmp_list_of(2, dmp_conn_value(a), dmp_conn_value(b));
    int rc = h ? dmp_queue_put(r, h, 10.0) : -ENOMEM;
    dmp_value_destroy(&h);
    if (rc == 0)
        rc = dmp_queue_close(r);
    dmp_value_t *v = NULL;
    if (rc == 0)
        dmp_queue_get(ctl, &v, 60.0);
    dmp_value_destroy(&v);
    dmp_conn_destroy(&a);
    dmp_conn_destroy(&b);
    dmp_queue_destroy(&r);
    dmp_queue_destroy(&ctl);
    return 0;
}

/* ---- fixture --------------------------------------------------------------- */

/* Where this program talks to: a private agent, node1 or node2 over ipc,
 * or node1 over tcp, which is on this host all the same: its rings are
 * mapped here too (dmp__obj_may_map). Remote ends are those of children on
 * other nodes. */
typedef enum { S_EMBEDDED, S_IPC1, S_TCP1, S_IPC2 } s_mode_t;

static struct {
    s_mode_t mode;
    dmp_test_sandbox_t *sb;
    dmp_test_agent_t *agents[3];
    char names[3][DMP__NAME_MAX]; /* [0] is ours */
    char shm_prefix[3][DMP__NAME_MAX + 8];
    int group;
} s_c;

static const char *
s_node(size_t i)
{
    return s_c.names[i];
}

/* Where children go: "elsewhere" is node2 on a cluster, this node alone. */
static const char *
s_other(size_t i)
{
    return s_c.mode == S_EMBEDDED ? NULL : s_node(i);
}

#define HELD_MAX 64
static dmp_process_t *s_procs[HELD_MAX];
static dmp_conn_t *s_conns[HELD_MAX];
static dmp_queue_t *s_queues[HELD_MAX];

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

static void
s_destroy_proc(dmp_process_t **p)
{
    s_unhold((void **)s_procs, *p);
    dmp_process_destroy(p);
}

static void
s_destroy_conn(dmp_conn_t **c)
{
    s_unhold((void **)s_conns, *c);
    dmp_conn_destroy(c);
}

static void
s_destroy_queue(dmp_queue_t **q)
{
    s_unhold((void **)s_queues, *q);
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
    for (size_t i = 0; i < HELD_MAX; i++) {
        if (s_conns[i])
            s_destroy_conn(&s_conns[i]);
        if (s_queues[i])
            s_destroy_queue(&s_queues[i]);
    }
}

static void
s_pipe(int duplex, dmp_conn_t **a, dmp_conn_t **b)
{
    int rc = dmp_pipe(duplex, a, b);
    if (rc)
        print_error("dmp_pipe: %s: %s\n", dmp_strerror(rc),
                    dmp_default_client()
                        ? dmp_client_errmsg(dmp_default_client())
                        : "");
    assert_dmp_ok(rc);
    s_hold((void **)s_conns, *a);
    s_hold((void **)s_conns, *b);
}

static dmp_queue_t *
s_queue(void)
{
    dmp_queue_t *q = NULL;
    assert_dmp_ok(dmp_queue_new(NULL, &q));
    s_hold((void **)s_queues, q);
    return q;
}

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
                    node ? node : "(default)", dmp_strerror(rc),
                    dmp_client_errmsg(dmp_default_client()));
    assert_dmp_ok(rc);
    return p;
}

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

static dmp_process_t *
s_script(const char *node, dmp_conn_t *c, dmp_queue_t *r, dmp_value_t *ops)
{
    return s_start("c_script", node,
                   dmp_list_of(3, dmp_conn_value(c),
                               r ? dmp_queue_value(r) : dmp_none(), ops));
}

typedef struct {
    int64_t step;
    int rc;
    double t0, t1;
    dmp_value_t *res;
} s_rep_t;

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

static void
s_free_rep(s_rep_t *rep)
{
    dmp_value_destroy(&rep->res);
}

static void
s_send_str(dmp_conn_t *c, const char *s)
{
    dmp_value_t *v = dmp_str(s);
    assert_dmp_ok(dmp_conn_send(c, v));
    dmp_value_destroy(&v);
}

static void
s_recv_str(dmp_conn_t *c, const char *want)
{
    dmp_value_t *v = NULL;
    int rc = dmp_conn_recv(c, &v);
    if (rc)
        print_error("recv of '%s': %s\n", want, dmp_err_name(rc));
    assert_dmp_ok(rc);
    const char *s = dmp_value_str(v, NULL);
    assert_non_null(s);
    assert_string_equal(s, want);
    dmp_value_destroy(&v);
}

/* A recv on its own thread, so that a recv that never returns is seen
 * instead of hanging the test. */
typedef struct {
    dmp_conn_t *c;
    int rc;
    dmp_value_t *v;
    atomic_bool done;
} s_recv_job_t;

static void *
s_recv_thread(void *arg)
{
    s_recv_job_t *job = arg;
    job->rc = dmp_conn_recv(job->c, &job->v);
    atomic_store(&job->done, true);
    return NULL;
}

static bool
s_job_done(void *arg)
{
    return atomic_load(&((s_recv_job_t *)arg)->done);
}

/*
 * recv with a deadline: its rc, or -ETIMEDOUT while it still blocks. A
 * blocked recv is then released by a message sent from a new handle made
 * of `writer` (a value of an end that sends to c), so that c can be
 * destroyed safely; if even that fails, c and the job are leaked and *c
 * set to NULL (and dmp_fini may then free c under the blocked thread).
 */
static int
s_recv_within(dmp_conn_t **c, double timeout, const dmp_value_t *writer,
              dmp_value_t **v_p, double *took)
{
    s_recv_job_t *job = calloc(1, sizeof *job);
    assert_non_null(job);
    job->c = *c;
    pthread_t t;
    double t0 = s_now();
    assert_int_equal(pthread_create(&t, NULL, s_recv_thread, job), 0);
    bool done = dmp_test_wait_until(s_job_done, job, timeout);
    *took = s_now() - t0;
    int rc = done ? job->rc : -ETIMEDOUT;
    if (!done && writer) {
        dmp_conn_t *w = NULL;
        dmp_value_t *x = dmp_str("unblock");
        if (dmp_conn_from_value(writer, &w) == 0)
            dmp_conn_send(w, x);
        dmp_value_destroy(&x);
        done = dmp_test_wait_until(s_job_done, job, 5.0);
        dmp_conn_destroy(&w);
    }
    if (!done) {
        print_error("a recv stays blocked: its end is leaked\n");
        pthread_detach(t);
        s_unhold((void **)s_conns, *c);
        *c = NULL;
        return rc;
    }
    pthread_join(t, NULL);
    if (v_p && rc == 0)
        *v_p = job->v;
    else
        dmp_value_destroy(&job->v);
    free(job);
    return rc;
}

/* recv must give EOF within `within` seconds, and poll say 1 after it.
 * Returns how long the recv took. */
static double
s_recv_eof(dmp_conn_t **c, double within, const dmp_value_t *writer)
{
    double took = 0;
    int rc = s_recv_within(c, within, writer, NULL, &took);
    if (rc != DMP_EEOF)
        print_error("recv: %s after %.2f s, expected EOF within %.1f s\n",
                    dmp_err_name(rc), took, within);
    assert_dmp_err(rc, DMP_EEOF);
    int ready = dmp_conn_poll(*c, 0);
    if (ready != 1)
        print_error("poll after EOF: %s, expected 1 (recv would not "
                    "block)\n", ready < 0 ? dmp_err_name(ready) : "0");
    assert_int_equal(ready, 1);
    return took;
}

static int
s_cluster_up(s_mode_t mode)
{
    memset(&s_c.agents, 0, sizeof s_c.agents);
    s_c.mode = mode;
    s_c.group++;
    assert_dmp_ok(dmp_test_sandbox_new(&s_c.sb));
    for (size_t i = 0; i < 3; i++) {
        snprintf(s_c.names[i], sizeof s_c.names[i], "p%d%c-node%zu",
                 (int)getpid(), 'a' + s_c.group, i + 1);
        snprintf(s_c.shm_prefix[i], sizeof s_c.shm_prefix[i], "dmp-%s-",
                 s_c.names[i]);
        assert_dmp_ok(dmp_test_agent_new(s_c.sb, s_c.names[i],
                                         &s_c.agents[i]));
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
    if (mode == S_IPC2) { /* s_node(0) is ours: node2 */
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
        for (size_t i = 0; i < 3; i++)
            if (s_c.agents[i] && dmp_test_agent_is_running(s_c.agents[i]))
                dmp_test_agent_stop(s_c.agents[i], 5.0);
        dmp_test_sandbox_destroy(&s_c.sb);
        for (size_t i = 0; i < 3; i++)
            s_shm_remove(s_c.shm_prefix[i]); /* last resort: see queue */
    }
    memset(s_c.agents, 0, sizeof s_c.agents);
    return 0;
}

/* ---- tests for every mode ------------------------------------------------ */

/* The happy path, as the guide's program: a child (on node2 when there is
 * a cluster) sends "Hello World" through its end, the parent receives it;
 * then the parent answers through the same duplex pipe. */
static void
test_child_sends_hello_world_and_parent_answers(void **state)
{
    (void)state;
    dmp_conn_t *parent_end, *child_end;
    s_pipe(1, &parent_end, &child_end);
    dmp_queue_t *r = s_queue();
    dmp_process_t *p = s_script(
        s_other(1), child_end, r,
        dmp_list_of(2, s_op("send", 0, dmp_str("Hello World")),
                    s_op("recv", 0, NULL)));
    s_recv_str(parent_end, "Hello World");
    s_send_str(parent_end, "Hello child");
    s_rep_t rep = s_expect(r, 0, 0);
    s_free_rep(&rep);
    rep = s_expect(r, 1, 0);
    assert_string_equal(dmp_value_str(rep.res, NULL), "Hello child");
    s_free_rep(&rep);
    s_join(&p, 0);
    s_destroy_conn(&child_end);
    s_destroy_conn(&parent_end);
    s_destroy_queue(&r);
}

/* Both ends in this program: order kept, values and bytes mixed, empty
 * messages, poll, close and EOF after the drain, errors after close. */
static void
test_own_ends_order_poll_close_and_eof(void **state)
{
    (void)state;
    dmp_conn_t *a, *b;
    s_pipe(1, &a, &b);
    assert_int_equal(dmp_conn_poll(a, 0), 0);
    assert_int_equal(dmp_conn_poll(b, 0), 0);
    for (int i = 0; i < 100; i++) {
        dmp_value_t *v = dmp_int(i);
        assert_dmp_ok(dmp_conn_send(b, v));
        dmp_value_destroy(&v);
    }
    assert_dmp_ok(dmp_conn_send_bytes(b, "", 0, 0));
    assert_dmp_ok(dmp_conn_send_bytes(a, "to b", 0, 4));
    assert_int_equal(dmp_conn_poll(a, 0), 1);
    assert_int_equal(dmp_conn_poll(b, 1.0), 1);
    for (int i = 0; i < 100; i++) {
        dmp_value_t *v = NULL;
        int64_t n = -1;
        assert_dmp_ok(dmp_conn_recv(a, &v));
        assert_dmp_ok(dmp_value_get_int(v, &n));
        assert_int_equal(n, i);
        dmp_value_destroy(&v);
    }
    void *data = NULL;
    size_t len = 99;
    assert_dmp_ok(dmp_conn_recv_bytes(a, &data, &len));
    assert_int_equal(len, 0);
    dmp_free(data);
    assert_dmp_ok(dmp_conn_recv_bytes(b, &data, &len));
    assert_int_equal(len, 4);
    assert_memory_equal(data, "to b", 4);
    dmp_free(data);
    /* b closes: a drains what b sent, then EOF, and EOF again */
    s_send_str(b, "last");
    dmp_value_t *bv = dmp_conn_value(b);
    assert_dmp_ok(dmp_conn_close(b));
    assert_dmp_ok(dmp_conn_close(b)); /* safe twice */
    s_recv_str(a, "last");
    s_recv_eof(&a, 1.0, bv);
    s_recv_eof(&a, 1.0, bv); /* and again */
    dmp_value_destroy(&bv);
    /* a closed end refuses everything */
    dmp_value_t *v = dmp_str("x");
    assert_dmp_err(dmp_conn_send(b, v), -EBADF);
    assert_dmp_err(dmp_conn_send_bytes(b, "x", 0, 1), -EBADF);
    assert_dmp_err(dmp_conn_recv_bytes(b, &data, &len), -EBADF);
    assert_dmp_err(dmp_conn_poll(b, 0), -EBADF);
    dmp_value_destroy(&v);
    s_destroy_conn(&a);
    s_destroy_conn(&b);
}

/* Bytes that are not an encoded value: recv says so, no crash. */
static void
test_recv_of_bytes_that_are_no_value_is_an_error(void **state)
{
    (void)state;
    dmp_conn_t *a, *b;
    s_pipe(0, &a, &b);
    assert_dmp_ok(dmp_conn_send_bytes(b, "\xff\xfe\x00", 0, 3));
    dmp_value_t *v = NULL;
    int rc = dmp_conn_recv(a, &v);
    assert_int_not_equal(rc, 0);
    assert_null(v);
    s_destroy_conn(&a);
    s_destroy_conn(&b);
}

/* send_bytes(buf, offset, size) sends exactly that slice, here and from a
 * child elsewhere; size 0 sends an empty message. */
static void
test_send_bytes_sends_the_slice_offset_size(void **state)
{
    (void)state;
    dmp_conn_t *a, *b;
    s_pipe(0, &a, &b);
    const char *buf = "0123456789";
    assert_dmp_ok(dmp_conn_send_bytes(b, buf, 3, 4));
    assert_dmp_ok(dmp_conn_send_bytes(b, buf, 10, 0));
    assert_dmp_ok(dmp_conn_send_bytes(b, buf, 0, 10));
    static const char *want[] = {"3456", "", "0123456789"};
    for (int i = 0; i < 3; i++) {
        void *data = NULL;
        size_t len = 99;
        assert_dmp_ok(dmp_conn_recv_bytes(a, &data, &len));
        assert_int_equal(len, strlen(want[i]));
        assert_memory_equal(data, want[i], len);
        dmp_free(data);
    }
    dmp_queue_t *r = s_queue();
    dmp_process_t *p = s_script(
        s_other(1), b, r,
        dmp_list_of(2,
                    s_op("send_bytes", 0,
                         dmp_list_of(3, dmp_bytes(buf, 10), dmp_int(7),
                                     dmp_int(3))),
                    s_op("send_bytes", 0,
                         dmp_list_of(3, dmp_bytes(buf, 10), dmp_int(0),
                                     dmp_int(1)))));
    static const char *from_child[] = {"789", "0"};
    for (int i = 0; i < 2; i++) {
        void *data = NULL;
        size_t len = 99;
        assert_dmp_ok(dmp_conn_recv_bytes(a, &data, &len));
        assert_int_equal(len, strlen(from_child[i]));
        assert_memory_equal(data, from_child[i], len);
        dmp_free(data);
        s_rep_t rep = s_expect(r, i, 0);
        s_free_rep(&rep);
    }
    s_join(&p, 0);
    s_destroy_conn(&a);
    s_destroy_conn(&b);
    s_destroy_queue(&r);
}

/* Pipe(False): a only receives, b only sends: -EINVAL otherwise, here
 * and in a child elsewhere; the allowed direction works. */
static void
test_one_way_pipe_direction_rules(void **state)
{
    (void)state;
    dmp_conn_t *a, *b;
    s_pipe(0, &a, &b);
    dmp_value_t *v = dmp_str("wrong way");
    void *data = NULL;
    size_t len = 0;
    assert_dmp_err(dmp_conn_send(a, v), -EINVAL);
    assert_dmp_err(dmp_conn_send_bytes(a, "x", 0, 1), -EINVAL);
    assert_dmp_err(dmp_conn_recv_bytes(b, &data, &len), -EINVAL);
    dmp_value_t *got = NULL;
    assert_dmp_err(dmp_conn_recv(b, &got), -EINVAL);
    assert_dmp_err(dmp_conn_poll(b, 0), -EINVAL);
    assert_int_equal(dmp_conn_poll(a, 0), 0); /* nothing was sent */
    s_send_str(b, "right way");
    s_recv_str(a, "right way");
    /* the reader end in a child: it cannot send; the writer end in
     * another: it cannot receive, and it can send */
    dmp_queue_t *r = s_queue(), *r2 = s_queue();
    dmp_process_t *reader = s_script(
        s_other(1), a, r,
        dmp_list_of(2, s_op("send", 0, dmp_str("no")), s_op("recv", 0, NULL)));
    s_rep_t rep = s_expect(r, 0, -EINVAL);
    s_free_rep(&rep);
    dmp_process_t *writer = s_script(
        s_other(2), b, r2,
        dmp_list_of(3, s_op("recv", 0, NULL), s_op("poll", 0, NULL),
                    s_op("send", 0, dmp_str("from the writer"))));
    rep = s_expect(r2, 0, -EINVAL);
    s_free_rep(&rep);
    rep = s_expect(r2, 1, -EINVAL);
    s_free_rep(&rep);
    rep = s_expect(r2, 2, 0);
    s_free_rep(&rep);
    rep = s_expect(r, 1, 0); /* the reader child got it */
    assert_string_equal(dmp_value_str(rep.res, NULL), "from the writer");
    s_free_rep(&rep);
    s_join(&reader, 0);
    s_join(&writer, 0);
    assert_int_equal(dmp_conn_poll(a, 0), 0); /* nothing else came */
    dmp_value_destroy(&v);
    s_destroy_conn(&a);
    s_destroy_conn(&b);
    s_destroy_queue(&r);
    s_destroy_queue(&r2);
}

/* poll(timeout): 0 no earlier than asked (within LOCAL_SLACK here, printed
 * and within REMOTE_SLACK for a remote end); 1 soon after data arrives. */
static void
test_poll_honours_its_timeout_and_wakes_on_data(void **state)
{
    (void)state;
    bool local = true; /* our own ends: mapped in every mode */
    dmp_conn_t *a, *b;
    s_pipe(1, &a, &b);
    static const double waits[] = {0.1, 0.3, 0.5};
    double worst = 0;
    double t0 = s_now();
    assert_int_equal(dmp_conn_poll(a, 0), 0);
    assert_int_equal(dmp_conn_poll(a, -1), 0);
    assert_took(s_now() - t0, 0, local ? 0.05 : REMOTE_SLACK);
    for (size_t i = 0; i < 3; i++) {
        t0 = s_now();
        assert_int_equal(dmp_conn_poll(a, waits[i]), 0);
        double late = s_now() - t0 - waits[i];
        assert_took(late, 0, local ? LOCAL_SLACK : REMOTE_SLACK);
        worst = late > worst ? late : worst;
    }
    print_message("# poll of a %s end: at most %.1f ms late\n",
                  local ? "local" : "remote (tcp)", worst * 1e3);
    /* a child elsewhere sends after a while: our poll wakes */
    dmp_queue_t *r = s_queue();
    dmp_process_t *p = s_script(
        s_other(1), b, r,
        dmp_list_of(5, s_op("poll", 0, NULL), s_op("poll", 0.3, NULL),
                    s_op("ready", 0, NULL), s_op("sleep", 0.3, NULL),
                    s_op("send", 0, dmp_str("now"))));
    s_rep_t rep = s_expect(r, 0, 0);
    int64_t ready = -1;
    dmp_value_get_int(rep.res, &ready);
    assert_int_equal(ready, 0);
    s_free_rep(&rep);
    rep = s_expect(r, 1, 0);
    dmp_value_get_int(rep.res, &ready);
    assert_int_equal(ready, 0);
    double child_late = rep.t1 - rep.t0 - 0.3;
    bool child_local = s_c.mode == S_EMBEDDED;
    print_message("# poll(0.3) of a %s end in a child on %s: %.1f ms late\n",
                  child_local ? "local" : "remote",
                  s_other(1) ? s_other(1) : "this node", child_late * 1e3);
    assert_took(child_late, 0, child_local ? LOCAL_SLACK : REMOTE_SLACK);
    s_free_rep(&rep);
    rep = s_expect(r, 2, 0);
    s_free_rep(&rep);
    assert_int_equal(dmp_conn_poll(a, 10.0), 1);
    double woke = s_now();
    rep = s_expect(r, 3, 0); /* the child's sleep */
    s_free_rep(&rep);
    rep = s_expect(r, 4, 0); /* its send: the message is in by rep.t1 */
    print_message("# poll(10) of a %s end woke %.2f ms after the child's "
                  "send began\n", local ? "local" : "remote (tcp)",
                  (woke - rep.t0) * 1e3);
    assert_took(woke - rep.t0, 0, local ? LOCAL_SLACK : 0.1);
    s_free_rep(&rep);
    s_recv_str(a, "now");
    s_join(&p, 0);
    s_destroy_conn(&a);
    s_destroy_conn(&b);
    s_destroy_queue(&r);
}

/* Every value type through a duplex pipe to a child and back, bit-exact,
 * with round-trip times of a small message printed. */
static void
test_values_of_every_type_there_and_back_and_round_trip_time(void **state)
{
    (void)state;
    const char *where[3] = {NULL, s_node(1), s_node(2)};
    size_t n = s_c.mode == S_EMBEDDED ? 1 : 3;
    for (size_t i = 0; i < n; i++) {
        dmp_conn_t *a, *b;
        s_pipe(1, &a, &b);
        dmp_queue_t *r = s_queue();
        dmp_value_t *sample = s_sample(dmp_conn_value(b));
        assert_non_null(sample);
        dmp_process_t *p = s_script(where[i], b, r,
                                    dmp_list_of(1, s_op("echo", 0, NULL)));
        assert_dmp_ok(dmp_conn_send(a, sample));
        dmp_value_t *back = NULL;
        assert_dmp_ok(dmp_conn_recv(a, &back));
        if (!s_same_encoding(back, sample))
            for (size_t k = 0; k < dmp_value_len(sample); k++)
                if (!s_same_encoding(dmp_list_get(back, (int64_t)k),
                                     dmp_list_get(sample, (int64_t)k)))
                    print_error("item %zu differs after %s\n", k,
                                where[i] ? where[i] : "this node");
        assert_true(s_same_encoding(back, sample));
        dmp_value_destroy(&back);
        dmp_value_destroy(&sample);
        /* round trips of 64 bytes */
        static uint8_t msg[64];
        dmp_value_t *small = dmp_bytes(msg, sizeof msg);
        enum { ROUNDS = 200 };
        double t0 = s_now();
        for (int k = 0; k < ROUNDS; k++) {
            assert_dmp_ok(dmp_conn_send(a, small));
            assert_dmp_ok(dmp_conn_recv(a, &back));
            dmp_value_destroy(&back);
        }
        double rtt = (s_now() - t0) / ROUNDS;
        print_message("# round trip to a child on %s (this program %s): "
                      "%.1f us\n", where[i] ? where[i] : "this node",
                      s_c.mode == S_TCP1 ? "over tcp" : "local",
                      rtt * 1e6);
        dmp_value_destroy(&small);
        assert_dmp_ok(dmp_conn_close(a)); /* the echo loop sees EOF */
        s_rep_t rep = s_expect(r, 0, DMP_EEOF);
        int64_t echoed = 0;
        dmp_value_get_int(rep.res, &echoed);
        assert_int_equal(echoed, 1 + ROUNDS);
        s_free_rep(&rep);
        s_join(&p, 0);
        s_destroy_conn(&a);
        s_destroy_conn(&b);
        s_destroy_queue(&r);
    }
}

/*
 * EOF when the writer process ends, after the parent closed its copy of
 * the child's end (as a Python parent must): the child sends three
 * messages and then closes, returns without closing, or is killed. The
 * parent, blocked in poll, reads the three and then EOF within EOF_WITHIN.
 */
static void
test_eof_when_the_writer_closes_exits_or_dies(void **state)
{
    (void)state;
    static const char *how[] = {"destroy", "return", "die"};
    const char *where[2] = {NULL, s_node(1)};
    size_t nw = s_c.mode == S_EMBEDDED ? 1 : 2;
    int failures = 0;
    for (size_t w = 0; w < nw; w++)
        for (size_t k = 0; k < 3; k++) {
            dmp_conn_t *a, *b;
            s_pipe(0, &a, &b);
            dmp_queue_t *r = s_queue();
            dmp_process_t *p = s_script(
                where[w], b, r,
                dmp_list_of(5, s_op("send", 0, dmp_str("1")),
                            s_op("send", 0, dmp_str("2")),
                            s_op("send", 0, dmp_str("3")),
                            s_op("ready", 0, NULL), s_op(how[k], 0, NULL)));
            dmp_value_t *bv = dmp_conn_value(b);
            s_destroy_conn(&b); /* our copy of the child's end */
            for (int i = 0; i < 4; i++) {
                s_rep_t rep = s_expect(r, i, 0);
                s_free_rep(&rep);
            }
            s_recv_str(a, "1");
            s_recv_str(a, "2");
            s_recv_str(a, "3");
            assert_dmp_ok(dmp_process_join(p, JOIN_LIMIT));
            double took = 0;
            int rc = s_recv_within(&a, 3.0, bv, NULL, &took);
            dmp_value_destroy(&bv);
            int ready = a ? dmp_conn_poll(a, 0) : -1;
            print_message("# writer on %s, then %s: recv %s %.0f ms after "
                          "it ended; then poll %d\n",
                          where[w] ? where[w] : "this node", how[k],
                          dmp_err_name(rc), took * 1e3, ready);
            if (rc != DMP_EEOF || took > EOF_WITHIN || ready != 1)
                failures++;
            s_destroy_proc(&p);
            s_destroy_conn(&a);
            s_destroy_queue(&r);
        }
    assert_int_equal(failures, 0);
}

/* As with a Python Pipe, what a writer sent before it was killed is read
 * before EOF. A writer on another node sends as fast as it can and
 * SIGKILLs itself 200 ms after its last send returned (a send is handed
 * to ZeroMQ before it returns, or, when the sender outruns its window,
 * buffered until the next answer: a process killed sooner can lose those;
 * the margin is for sanitized builds): 3000 small messages read as they
 * come; 130 of 64 KiB read only after the writer is dead, more than the
 * ring holds, so that the last ones wait at the owner for room when its
 * node reports the death; and 60 sent while the owner's agent is stopped,
 * so that they and the death report (which come on two connections)
 * reach it together when it goes on. */
static void
test_what_a_killed_writer_sent_is_read_before_eof(void **state)
{
    (void)state;
    static const struct {
        int n, size;
        bool after, stop;
    } cases[] = {{3000, 8, false, false},
                 {130, 64 << 10, true, false},
                 {61, 8, false, true}};
    uint8_t *want = malloc(64 << 10);
    assert_non_null(want);
    int failures = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        dmp_conn_t *a, *b;
        s_pipe(0, &a, &b);
        /* With the owner stopped: message 0, then the rest 0.15 s later. */
        int first = cases[c].stop ? 1 : 0;
        dmp_process_t *p = s_script(
            s_node(1), b, NULL,
            dmp_list_of(
                5,
                s_op("send_n", 0,
                     dmp_list_of(3, dmp_int(first), dmp_int(cases[c].size),
                                 dmp_int(0))),
                s_op("sleep", cases[c].stop ? 0.15 : 0, NULL),
                s_op("send_n", 0,
                     dmp_list_of(3, dmp_int(cases[c].n - first),
                                 dmp_int(cases[c].size), dmp_int(first))),
                s_op("sleep", 0.2, NULL), s_op("die", 0, NULL)));
        dmp_value_t *bv = dmp_conn_value(b);
        s_destroy_conn(&b);
        if (cases[c].after)
            dmp_process_join(p, JOIN_LIMIT);
        pid_t owner = cases[c].stop ? s_c.agents[0]->pid : 0;
        if (owner) {
            assert_int_equal(dmp_conn_poll(a, 10.0), 1); /* message 0 */
            kill(owner, SIGSTOP);
            s_sleep(0.5);
            kill(owner, SIGCONT);
        }
        int64_t next = 0;
        int rc = 0;
        while (rc == 0) {
            void *data = NULL;
            size_t len = 0;
            rc = dmp_conn_poll(a, 10.0) == 1 ? dmp_conn_recv_bytes(a, &data,
                                                                   &len)
                                             : -ETIMEDOUT;
            if (rc == 0) {
                s_fill(want, (size_t)cases[c].size, (unsigned)next);
                memcpy(want, &next, 8);
                if (len == (size_t)cases[c].size &&
                    memcmp(data, want, len) == 0)
                    next++;
                else
                    rc = DMP_EPROTO; /* out of order or damaged */
            }
            dmp_free(data);
        }
        print_message("# writer on %s killed 0.2 s after its last send (%d "
                      "x %d B, read %s): %lld read, then %s\n", s_node(1),
                      cases[c].n, cases[c].size,
                      cases[c].after  ? "after its death"
                      : cases[c].stop ? "with the owner stopped meanwhile"
                                      : "as they came",
                      (long long)next, dmp_err_name(rc));
        failures += next != cases[c].n || rc != DMP_EEOF;
        dmp_value_destroy(&bv);
        dmp_process_join(p, JOIN_LIMIT);
        s_destroy_proc(&p);
        s_destroy_conn(&a);
    }
    free(want);
    assert_int_equal(failures, 0);
}

/* The Python idiom: start the child, close our copy of its end at once.
 * The child attaches later; no EOF may come before what it sends. */
static void
test_closing_our_copy_right_after_start_gives_no_early_eof(void **state)
{
    (void)state;
    const char *where[2] = {NULL, s_node(1)};
    size_t nw = s_c.mode == S_EMBEDDED ? 1 : 2;
    int failures = 0;
    for (size_t w = 0; w < nw; w++) {
        dmp_conn_t *a, *b;
        s_pipe(0, &a, &b);
        dmp_process_t *p = s_script(
            where[w], b, NULL,
            dmp_list_of(2, s_op("sleep", 0.3, NULL),
                        s_op("send", 0, dmp_str("late"))));
        dmp_value_t *bv = dmp_conn_value(b);
        s_destroy_conn(&b);
        dmp_value_t *v = NULL;
        double took = 0;
        int rc = s_recv_within(&a, 5.0, bv, &v, &took);
        dmp_value_destroy(&bv);
        const char *got = rc == 0 ? dmp_value_str(v, NULL) : NULL;
        print_message("# child on %s, our copy closed at start: recv %s "
                      "(%s) after %.2f s\n", where[w] ? where[w] : "this node",
                      dmp_err_name(rc), got ? got : "-", took);
        failures += rc != 0 || !got || strcmp(got, "late") != 0;
        dmp_value_destroy(&v);
        s_join(&p, 0);
        s_destroy_conn(&a);
    }
    assert_int_equal(failures, 0);
}

/* Without closing its copy of the child's end, the parent keeps the pipe
 * open: the child's exit gives no EOF (as in Python). */
static void
test_no_eof_while_the_parent_holds_the_childs_end(void **state)
{
    (void)state;
    dmp_conn_t *a, *b;
    s_pipe(0, &a, &b);
    dmp_process_t *p = s_script(s_other(1), b, NULL,
                                dmp_list_of(1, s_op("send", 0, dmp_str("x"))));
    s_join(&p, 0);
    s_recv_str(a, "x");
    assert_int_equal(dmp_conn_poll(a, 0.3), 0);
    dmp_value_t *bv = dmp_conn_value(b);
    assert_dmp_ok(dmp_conn_close(b));
    s_recv_eof(&a, 3.0, bv);
    dmp_value_destroy(&bv);
    s_destroy_conn(&a);
    s_destroy_conn(&b);
}

/* A reader blocked in recv (here, or in a child elsewhere) wakes with
 * EOF when the writer closes. */
static void
test_blocked_recv_wakes_with_eof_on_close(void **state)
{
    (void)state;
    dmp_conn_t *a, *b;
    s_pipe(0, &a, &b);
    dmp_queue_t *r = s_queue();
    dmp_process_t *p = s_script(
        s_other(1), a, r,
        dmp_list_of(3, s_op("ready", 0, NULL), s_op("recv", 0, NULL),
                    s_op("recv", 0, NULL)));
    s_rep_t rep = s_expect(r, 0, 0);
    s_free_rep(&rep);
    s_sleep(0.3); /* let its recv block (an unobservable event) */
    s_send_str(b, "before close");
    rep = s_expect(r, 1, 0);
    s_free_rep(&rep);
    s_sleep(0.3);
    double closed = s_now();
    assert_dmp_ok(dmp_conn_close(b));
    rep = s_expect(r, 2, DMP_EEOF);
    print_message("# blocked recv on %s: EOF %.1f ms after the close\n",
                  s_other(1) ? s_other(1) : "this node",
                  (rep.t1 - closed) * 1e3);
    assert_took(rep.t1 - closed, 0, EOF_WITHIN);
    s_free_rep(&rep);
    s_join(&p, 0);
    s_destroy_conn(&a);
    s_destroy_conn(&b);
    s_destroy_queue(&r);
}

/* A large message: 8 MiB here (out of line in the ring), and to a child
 * on this node. */
static void
test_large_message_on_one_host(void **state)
{
    (void)state;
    dmp_conn_t *a, *b;
    s_pipe(1, &a, &b);
    size_t big = 8u << 20;
    uint8_t *buf = malloc(big);
    assert_non_null(buf);
    s_fill(buf, big, 13);
    double t0 = s_now();
    assert_dmp_ok(dmp_conn_send_bytes(b, buf, 0, big));
    void *data = NULL;
    size_t len = 0;
    assert_dmp_ok(dmp_conn_recv_bytes(a, &data, &len));
    double took = s_now() - t0;
    assert_int_equal(len, big);
    assert_true(memcmp(data, buf, big) == 0);
    dmp_free(data);
    print_message("# 8 MiB through a pipe in %.1f ms\n", took * 1e3);
    dmp_queue_t *r = s_queue();
    dmp_process_t *p = s_script(NULL, b, r,
                                dmp_list_of(1, s_op("recv_size", 0, NULL)));
    assert_dmp_ok(dmp_conn_send_bytes(a, buf, 0, big));
    s_rep_t rep = s_expect(r, 0, 0);
    int64_t n = 0, sum = 0;
    dmp_value_get_int(dmp_list_get(rep.res, 0), &n);
    dmp_value_get_int(dmp_list_get(rep.res, 1), &sum);
    assert_int_equal(n, (int64_t)big);
    assert_true(sum == s_sum(buf, big));
    s_free_rep(&rep);
    s_join(&p, 0);
    free(buf);
    s_destroy_conn(&a);
    s_destroy_conn(&b);
    s_destroy_queue(&r);
}

/* Every ring is gone once the ends are destroyed and dmp_fini ran (it
 * destroys what the program did not). */
static void
test_no_ring_is_left_in_dev_shm(void **state)
{
    (void)state;
    dmp_conn_t *a = NULL, *b = NULL; /* created and never destroyed */
    assert_dmp_ok(dmp_pipe(1, &a, &b));
    s_send_str(a, "x");
    char prefix[DMP__RING_NAME_MAX] = "";
    if (s_c.mode == S_EMBEDDED) {
        s_ring_name(a, prefix, sizeof prefix);
        for (int k = 0; k < 2; k++)
            *strrchr(prefix, '-') = '\0';
        strcat(prefix, "-");
        memmove(prefix, prefix + 1, strlen(prefix));
    }
    s_destroy_held();
    dmp_fini();
    if (s_c.mode == S_EMBEDDED)
        assert_int_equal(s_shm_count(prefix), 0);
    else
        for (size_t i = 0; i < 3; i++)
            assert_int_equal(s_shm_count(s_c.shm_prefix[i]), 0);
}

/* ---- cluster only -------------------------------------------------------- */

/* The two ends in children on node2 and node3 (the pipe owned by node1,
 * both ends remote): a conversation, then EOF both ways. */
static void
test_ends_in_children_on_two_other_nodes_talk(void **state)
{
    (void)state;
    dmp_conn_t *a, *b;
    s_pipe(1, &a, &b);
    dmp_queue_t *ra = s_queue(), *rb = s_queue();
    dmp_process_t *pa = s_script(
        s_node(1), a, ra,
        dmp_list_of(4, s_op("send", 0, dmp_str("ping")), s_op("recv", 0, NULL),
                    s_op("destroy", 0, NULL), s_op("ready", 0, NULL)));
    dmp_process_t *pb = s_script(
        s_node(2), b, rb,
        dmp_list_of(3, s_op("recv", 0, NULL), s_op("send", 0, dmp_str("pong")),
                    s_op("recv", 0, NULL)));
    /* our copies: EOF depends on the children only (close, not destroy:
     * destroying both ends of the creator removes the pipe) */
    assert_dmp_ok(dmp_conn_close(a));
    assert_dmp_ok(dmp_conn_close(b));
    s_rep_t rep = s_expect(rb, 0, 0);
    assert_string_equal(dmp_value_str(rep.res, NULL), "ping");
    s_free_rep(&rep);
    rep = s_expect(ra, 0, 0);
    s_free_rep(&rep);
    rep = s_expect(ra, 1, 0);
    assert_string_equal(dmp_value_str(rep.res, NULL), "pong");
    s_free_rep(&rep);
    rep = s_expect(rb, 1, 0);
    s_free_rep(&rep);
    rep = s_expect(ra, 2, 0);
    double closed = rep.t0; /* the destroy began: EOF may come before it
                             * returns */
    s_free_rep(&rep);
    rep = s_expect(ra, 3, 0);
    s_free_rep(&rep);
    rep = s_report(rb);
    print_message("# recv on %s after the end on %s was destroyed: %s "
                  "%.1f ms after\n", s_node(2), s_node(1),
                  dmp_err_name(rep.rc), (rep.t1 - closed) * 1e3);
    assert_int_equal(rep.step, 2);
    assert_dmp_err(rep.rc, DMP_EEOF);
    assert_took(rep.t1 - closed, 0, EOF_WITHIN);
    s_free_rep(&rep);
    s_join(&pa, 0);
    s_join(&pb, 0);
    s_destroy_conn(&a);
    s_destroy_conn(&b);
    s_destroy_queue(&ra);
    s_destroy_queue(&rb);
}

/* A remote end's poll waits at the owner, as a get does, and wakes on data
 * and on EOF, soon after either. */
static void
test_remote_poll_wakes_on_data_and_on_eof(void **state)
{
    (void)state;
    dmp_conn_t *a, *b;
    s_pipe(0, &a, &b); /* the child reads a; we write b */
    dmp_queue_t *r = s_queue();
    dmp_process_t *p = s_script(
        s_node(1), a, r,
        dmp_list_of(6, s_op("poll", 0, NULL), s_op("poll", 0.3, NULL),
                    s_op("poll", 10, NULL), s_op("recv", 0, NULL),
                    s_op("poll", 10, NULL), s_op("recv", 0, NULL)));
    s_destroy_conn(&a); /* our copy of the child's end */
    s_rep_t rep = s_expect(r, 0, 0);
    int64_t ready = -1;
    assert_dmp_ok(dmp_value_get_int(rep.res, &ready));
    assert_int_equal(ready, 0);
    s_free_rep(&rep);
    rep = s_expect(r, 1, 0); /* nothing within its timeout */
    assert_dmp_ok(dmp_value_get_int(rep.res, &ready));
    assert_int_equal(ready, 0);
    assert_took(rep.t1 - rep.t0, 0.3, 0.3 + REMOTE_SLACK);
    s_free_rep(&rep);
    s_sleep(0.2); /* its poll(10) waits at the owner */
    double sent = s_now();
    s_send_str(b, "data");
    rep = s_expect(r, 2, 0);
    assert_dmp_ok(dmp_value_get_int(rep.res, &ready));
    assert_int_equal(ready, 1);
    assert_took(rep.t1 - sent, 0, REMOTE_SLACK);
    s_free_rep(&rep);
    rep = s_expect(r, 3, 0);
    assert_string_equal(dmp_value_str(rep.res, NULL), "data");
    s_free_rep(&rep);
    s_sleep(0.2);
    double closed = s_now();
    assert_dmp_ok(dmp_conn_close(b));
    rep = s_expect(r, 4, 0); /* EOF: a recv would not block */
    assert_dmp_ok(dmp_value_get_int(rep.res, &ready));
    assert_int_equal(ready, 1);
    assert_took(rep.t1 - closed, 0, REMOTE_SLACK);
    s_free_rep(&rep);
    rep = s_expect(r, 5, DMP_EEOF);
    s_free_rep(&rep);
    s_join(&p, 0);
    s_destroy_conn(&b);
    s_destroy_queue(&r);
}

/* Across hosts a message larger than a frame goes in parts and arrives
 * whole, in order with the small ones, both ways, up to the 64 MiB limit;
 * over it a send is a clean -EMSGSIZE at once, nothing sent. */
static void
test_messages_up_to_the_limit_cross_hosts_whole(void **state)
{
    (void)state;
    dmp_conn_t *a, *b;
    s_pipe(1, &a, &b);
    dmp_queue_t *r = s_queue();
    size_t max = 64u << 20, small = 900u * 1024, mid = 5u << 20;
    dmp_process_t *p = s_script(
        s_node(1), b, r,
        dmp_list_of(
            5,
            s_op("send_size", 0,
                 dmp_list_of(2, dmp_int((int64_t)max), dmp_int(1))),
            s_op("send_size", 0,
                 dmp_list_of(2, dmp_int((int64_t)max + 1), dmp_int(2))),
            s_op("send_size", 0,
                 dmp_list_of(2, dmp_int((int64_t)small), dmp_int(3))),
            s_op("recv_size", 0, NULL), s_op("recv_size", 0, NULL)));
    s_rep_t rep = s_expect(r, 0, 0);
    print_message("# 64 MiB sent from %s in %.2f s\n", s_node(1),
                  rep.t1 - rep.t0);
    s_free_rep(&rep);
    rep = s_expect(r, 1, -EMSGSIZE);
    assert_took(rep.t1 - rep.t0, 0, 1.0);
    s_free_rep(&rep);
    rep = s_expect(r, 2, 0);
    s_free_rep(&rep);
    uint8_t *buf = malloc(max);
    assert_non_null(buf);
    void *data = NULL;
    size_t len = 0;
    assert_dmp_ok(dmp_conn_recv_bytes(a, &data, &len));
    assert_int_equal(len, max);
    s_fill(buf, max, 1);
    assert_true(memcmp(data, buf, max) == 0);
    dmp_free(data);
    assert_dmp_ok(dmp_conn_recv_bytes(a, &data, &len));
    assert_int_equal(len, small);
    s_fill(buf, small, 3);
    assert_true(memcmp(data, buf, small) == 0);
    dmp_free(data);
    assert_int_equal(dmp_conn_poll(a, 0), 0);

    /* and 5 MiB then 64 MiB from here to the remote end */
    size_t sizes[2] = {mid, max};
    for (int i = 0; i < 2; i++) {
        s_fill(buf, sizes[i], 10 + (unsigned)i);
        int64_t want = s_sum(buf, sizes[i]);
        assert_dmp_ok(dmp_conn_send_bytes(a, buf, 0, sizes[i]));
        rep = s_expect(r, 3 + i, 0);
        int64_t n = 0, sum = 0;
        dmp_value_get_int(dmp_list_get(rep.res, 0), &n);
        dmp_value_get_int(dmp_list_get(rep.res, 1), &sum);
        assert_int_equal(n, sizes[i]);
        assert_int_equal(sum, want);
        s_free_rep(&rep);
    }
    free(buf);
    s_join(&p, 0);
    s_destroy_conn(&a);
    s_destroy_conn(&b);
    s_destroy_queue(&r);
}

/* ---- the owner node dies ------------------------------------------------- */

/*
 * The program talks to node2. A child on node1 creates a duplex pipe and
 * sends its ends here; this program keeps a, a child on node3 gets b and
 * blocks in recv; node1 is killed. The blocked recv, and every new
 * operation on a, fail with DMP_ENODE within ENODE_WITHIN (a first send
 * may be buffered: its failure comes with the next call); none hangs.
 */
static void
test_owner_node_killed_gives_enode_never_a_hang(void **state)
{
    (void)state;
    const char *node1 = s_c.names[1];
    dmp_queue_t *r = s_queue(), *ctl = s_queue(), *r3 = s_queue();
    dmp_process_t *owner = s_start(
        "c_owner", node1,
        dmp_list_of(2, dmp_queue_value(r), dmp_queue_value(ctl)));
    dmp_value_t *h = NULL;
    assert_dmp_ok(dmp_queue_get(r, &h, REPORT_WAIT));
    dmp_conn_t *a = NULL;
    assert_dmp_ok(dmp_conn_from_value(dmp_list_get(h, 0), &a));
    s_hold((void **)s_conns, a);
    char ring[DMP__RING_NAME_MAX];
    s_ring_name(a, ring, sizeof ring);
    dmp_process_t *reader = s_start(
        "c_script", s_node(2),
        dmp_list_of(3, dmp_value_copy(dmp_list_get(h, 1)), dmp_queue_value(r3),
                    dmp_list_of(3, s_op("recv", 0, NULL),
                                s_op("ready", 0, NULL),
                                s_op("recv", 0, NULL))));
    dmp_value_destroy(&h);
    s_send_str(a, "works");
    s_rep_t rep = s_expect(r3, 0, 0);
    assert_string_equal(dmp_value_str(rep.res, NULL), "works");
    s_free_rep(&rep);
    rep = s_expect(r3, 1, 0);
    s_free_rep(&rep);
    s_sleep(0.3); /* let its recv block at the owner */
    double killed = s_now();
    dmp_test_agent_kill(s_c.agents[0]); /* node1 */
    dmp_value_t *v = NULL;
    int grc = dmp_queue_get(r3, &v, ENODE_WITHIN + 2.0);
    int64_t code = 0;
    double t1 = 0;
    dmp_value_get_int(dmp_list_get(v, 1), &code);
    dmp_value_get_double(dmp_list_get(v, 3), &t1);
    dmp_value_destroy(&v);
    if (grc)
        print_error("blocked recv on %s: no answer %.1f s after node1 was "
                    "killed\n", s_node(2), s_now() - killed);
    assert_dmp_ok(grc);
    print_message("# blocked recv on %s: %s %.2f s after node1 was killed\n",
                  s_node(2), dmp_err_name((int)code), t1 - killed);
    assert_dmp_err((int)code, DMP_ENODE);
    assert_took(t1 - killed, 0, ENODE_WITHIN);
    static const char *what[] = {"send", "recv", "poll(forever)",
                                 "send_bytes"};
    for (int i = 0; i < 4; i++) {
        double t0 = s_now();
        int rc;
        dmp_value_t *x = NULL;
        switch (i) {
        case 0:
            x = dmp_str("lost");
            rc = dmp_conn_send(a, x);
            break;
        case 1: rc = dmp_conn_recv(a, &x); break;
        case 2: rc = dmp_conn_poll(a, DMP_FOREVER); break;
        default: rc = dmp_conn_send_bytes(a, "x", 0, 1); break;
        }
        dmp_value_destroy(&x);
        double took = s_now() - t0;
        print_message("# %s after the kill: %s in %.3f s\n", what[i],
                      dmp_err_name(rc), took);
        /* A send across hosts is pipelined: the first after the loss may
         * be buffered (0), and its failure is what the next call says. */
        if (!(i == 0 && rc == 0))
            assert_dmp_err(rc, DMP_ENODE);
        assert_took(took, 0, ENODE_WITHIN);
    }
    s_destroy_conn(&a);
    s_join(&reader, 0);
    dmp_process_kill(owner);
    dmp_process_join(owner, 5.0);
    s_destroy_proc(&owner);
    assert_true(s_shm_exists(ring));
    assert_dmp_ok(dmp_test_agent_start(s_c.agents[0]));
    assert_false(s_shm_exists(ring)); /* removed by node1's next life */
    s_destroy_queue(&r);
    s_destroy_queue(&ctl);
    s_destroy_queue(&r3);
}

/*
 * The writer's node dies: a child on node3 holds the sending end (its
 * parent, this program on node2, closed its copy), sends one message and
 * waits; node3's agent is killed. Our recv gets the message, then EOF
 * once node2 sees node3 dead (heartbeat x liveness), as a Python reader
 * sees a reset connection: it never blocks forever on a writer nobody can
 * reach.
 */
static void
test_writer_node_killed_gives_eof_never_a_hang(void **state)
{
    (void)state;
    dmp_conn_t *a, *b;
    s_pipe(0, &a, &b);
    dmp_queue_t *r = s_queue();
    dmp_process_t *p = s_script(
        s_node(2), b, r,
        dmp_list_of(3, s_op("send", 0, dmp_str("last words")),
                    s_op("ready", 0, NULL), s_op("sleep", 60.0, NULL)));
    s_destroy_conn(&b);
    for (int i = 0; i < 2; i++) {
        s_rep_t rep = s_expect(r, i, 0);
        s_free_rep(&rep);
    }
    s_recv_str(a, "last words");
    pid_t child = dmp_process_pid(p);
    double killed = s_now();
    dmp_test_agent_kill(s_c.agents[2]); /* node3 */
    double took = 0;
    int rc = s_recv_within(&a, ENODE_WITHIN + 2.0, NULL, NULL, &took);
    print_message("# recv after the writer's node %s was killed: %s in "
                  "%.2f s\n", s_node(2), dmp_err_name(rc), s_now() - killed);
    assert_dmp_err(rc, DMP_EEOF);
    assert_took(took, 0, ENODE_WITHIN);
    if (child > 0)
        kill(child, SIGKILL); /* cut off with its node */
    dmp_process_join(p, 5.0);
    s_destroy_proc(&p);
    s_destroy_conn(&a);
    s_destroy_queue(&r);
    assert_dmp_ok(dmp_test_agent_start(s_c.agents[2]));
    /* every node sees node3 again */
    assert_dmp_ok(dmp_test_agents_wait_alive(s_c.agents, 3, 10.0));
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
    if (getenv("DMP_CHILD") || getenv("DMP_ZYGOTE"))
        dmp_init();
    unsetenv("DMP_PLACE");
    unsetenv("DMP_AGENT");
    unsetenv("DMP_CLUSTER");
    dmp_test_init(170);
#define COMMON                                                                \
    cmocka_unit_test(test_child_sends_hello_world_and_parent_answers),        \
        cmocka_unit_test(test_own_ends_order_poll_close_and_eof),             \
        cmocka_unit_test(test_recv_of_bytes_that_are_no_value_is_an_error),   \
        cmocka_unit_test(test_send_bytes_sends_the_slice_offset_size),        \
        cmocka_unit_test(test_one_way_pipe_direction_rules),                  \
        cmocka_unit_test(test_poll_honours_its_timeout_and_wakes_on_data),    \
        cmocka_unit_test(                                                     \
            test_values_of_every_type_there_and_back_and_round_trip_time),    \
        cmocka_unit_test(test_eof_when_the_writer_closes_exits_or_dies),      \
        cmocka_unit_test(test_no_eof_while_the_parent_holds_the_childs_end),  \
        cmocka_unit_test(                                                     \
            test_closing_our_copy_right_after_start_gives_no_early_eof),      \
        cmocka_unit_test(test_blocked_recv_wakes_with_eof_on_close),          \
        cmocka_unit_test(test_large_message_on_one_host)
    const struct CMUnitTest embedded[] = {
        COMMON,
        cmocka_unit_test(test_no_ring_is_left_in_dev_shm),
    };
    const struct CMUnitTest ipc[] = {
        COMMON,
        cmocka_unit_test(test_ends_in_children_on_two_other_nodes_talk),
        cmocka_unit_test(test_remote_poll_wakes_on_data_and_on_eof),
        cmocka_unit_test(test_messages_up_to_the_limit_cross_hosts_whole),
        cmocka_unit_test(test_what_a_killed_writer_sent_is_read_before_eof),
        cmocka_unit_test(test_no_ring_is_left_in_dev_shm),
    };
    const struct CMUnitTest tcp[] = {
        COMMON,
        cmocka_unit_test(test_ends_in_children_on_two_other_nodes_talk),
        cmocka_unit_test(test_what_a_killed_writer_sent_is_read_before_eof),
        cmocka_unit_test(test_no_ring_is_left_in_dev_shm),
    };
    const struct CMUnitTest dying[] = {
        cmocka_unit_test(test_writer_node_killed_gives_eof_never_a_hang),
        cmocka_unit_test(test_owner_node_killed_gives_enode_never_a_hang),
        cmocka_unit_test(test_no_ring_is_left_in_dev_shm),
    };
    const struct CMUnitTest after[] = {
        cmocka_unit_test(test_no_agent_outlives_the_tests),
    };
    /* DMP_TEST_GROUPS: only the groups whose name contains it;
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
    failed += RUN("a writer's or the owner's node dies", dying, s_up_ipc2);
    failed += cmocka_run_group_tests_name("afterwards", after, NULL, NULL);
    return failed ? 1 : 0;
}
