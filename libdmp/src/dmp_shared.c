/*
 * dmp_shared.c - Python's Value, Array, RawValue, RawArray and get_lock().
 *
 * An object is created by the agent this process talks to, as one shm
 * segment (dmp_segment.c) that it owns. A process on the owner's host maps
 * it and works on it directly: the lock is the segment's robust lock, an
 * element is one atomic load or store. A process elsewhere sends each
 * operation to the owner (SharedOp, forwarded by its own agent), which
 * does it on the same segment, taking the same lock in the holder's name
 * for a remote acquire (node_shared.c); so mutual exclusion holds between
 * both kinds of holder.
 *
 * Recursion and thread ownership (Python's RLock) are counted here, per
 * process: the segment's lock is taken once per outermost acquire. A
 * process opens one handle per object (from_value of an object already
 * open gives the same one, counted), so that it holds the lock once.
 *
 * Remote holders: the owner knows each by (node, pid) and gives it a lease;
 * a background thread renews the leases of every object this process
 * holds remotely. A holder of the lock works on a copy of a small object
 * that the acquire reply brought along: its writes go to the owner with
 * the release, which goes out without waiting for an answer (requests keep
 * their order on the way; a failure comes back from the next call). So a
 * remote `with lock: v += 1` is one round trip and two messages. Nobody
 * can see the writes earlier anyway: every read of a locked object takes
 * the lock (only a lockless add could, and an add by the holder sends
 * them first).
 *
 * A handle travels as a value: 'S', the owner, the object id, the segment
 * name, the typecode, the lock flag and the length.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Requests that may wait at the owner for the lock: no limit of ours. */
#define S_FOREVER (86400.0 * 365)
/* A round trip's allowance on top of an owner-side timeout. */
#define S_MARGIN 10.0

struct dmp_lock {
    dmp_shared_t *s;        /* the object it guards */
    uintptr_t owner;        /* thread holding it (pthread_self), 0: none;
                             * atomic: other threads read it */
    unsigned depth;         /* acquires not yet released (RLock) */
    /* Remote objects: one thread of this process at a time talks to the
     * owner about the lock. Guarded by mx. */
    pthread_mutex_t mx;
    pthread_cond_t cv;      /* busy went false */
    bool busy;              /* a thread acquires or holds it remotely */
    bool lost;              /* its lease ran out while we held it */
    unsigned gen;           /* remote acquires so far: a renewal's news is
                             * about the hold it was sent for */
};

struct dmp_shared {
    struct dmp_shared *next;    /* in s_open */
    unsigned refs;              /* handles given out here (s_lock) */
    char node[DMP__NAME_MAX];   /* owner */
    uint64_t id;                /* object id at the owner */
    char seg_name[DMP__RING_NAME_MAX];
    char typecode;
    size_t itemsize;
    uint64_t length;
    bool has_lock;
    dmp__seg_t *seg;            /* mapped: the owner is on this host */
    uint8_t *data;              /* its elements (dmp__seg_data), or NULL */
    /* Remote only. */
    double lease;               /* seconds, from the owner (s_lock) */
    double renew_at;            /* monotonic (s_lock) */
    bool renewing;              /* the renewer thread uses it (s_lock) */
    bool gone;                  /* the owner removed it */
    bool cached;                /* cache holds the object (lock holder) */
    size_t dirty_lo, dirty_hi;  /* elements written into the cache and not
                                 * sent yet (none when equal): they go
                                 * with the release (write-back) */
    uint8_t cache[DMP__SHARED_PREFETCH_MAX];
    pthread_mutex_t amx;        /* guards the five below */
    pthread_cond_t acv;         /* inflight reached 0 */
    unsigned inflight;          /* writes and releases not answered yet */
    int async_error;            /* the first failure of one, reported once */
    bool via_chosen;            /* requests go to link, or to our agent */
    dmp_client_t *link;         /* direct link to the owner (dmp_direct.c):
                                 * chosen once, so that requests keep their
                                 * order on one path; again after a loss */
    dmp_lock_t lock;
};

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t s_cond = PTHREAD_COND_INITIALIZER; /* renewing off */
static dmp_shared_t *s_open;

/* The lease renewer: runs while any object is held remotely. */
static struct {
    pthread_t thread;
    bool running;
    bool stop;
    pthread_cond_t cv; /* a new deadline, or stop */
    bool cv_ready;
} s_ren;

/* The calling thread, as lock owners are recorded (never 0). */
static inline uintptr_t
s_me(void)
{
    return (uintptr_t)pthread_self();
}

static inline bool
s_holds(const dmp_lock_t *lock)
{
    return __atomic_load_n(&lock->owner, __ATOMIC_RELAXED) == s_me();
}

/* ---- handles ----------------------------------------------------------- */

static int
s_encode_handle(const dmp_shared_t *s, uint8_t *buf, size_t size)
{
    int n = dmp__obj_handle_put(buf, size, 'S', s->node, s->id);
    if (n < 0)
        return n;
    int m = dmp__obj_ring_name_put(buf + n, size - (size_t)n, s->seg_name);
    if (m < 0 || (size_t)(n + m) + 10 > size)
        return -ENAMETOOLONG;
    uint8_t *p = buf + n + m;
    p[0] = (uint8_t)s->typecode;
    p[1] = s->has_lock;
    for (int i = 0; i < 8; i++)
        p[2 + i] = (uint8_t)(s->length >> (8 * i));
    return n + m + 10;
}

static int
s_decode_handle(const uint8_t *buf, size_t len, dmp_shared_t *s)
{
    int n = dmp__obj_handle_get(buf, len, 'S', s->node, &s->id);
    if (n < 0)
        return n;
    int m = dmp__obj_ring_name_get(buf + n, len - (size_t)n, s->seg_name);
    if (m < 0 || (size_t)(n + m) + 10 != len)
        return -EINVAL;
    const uint8_t *p = buf + n + m;
    uint64_t length = 0;
    for (int i = 0; i < 8; i++)
        length |= (uint64_t)p[2 + i] << (8 * i);
    s->typecode = (char)p[0];
    s->itemsize = dmp__typecode_size(p[0]);
    s->has_lock = p[1] != 0;
    s->length = length;
    if (!s->itemsize || p[1] > 1 || length == 0 ||
        length > DMP__SHARED_BYTES_MAX / s->itemsize)
        return -EINVAL;
    return 0;
}

static dmp_shared_t *
s_alloc(void)
{
    dmp_shared_t *s = dmp__calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->refs = 1;
    s->lock.s = s;
    pthread_mutex_init(&s->lock.mx, NULL);
    dmp__cond_init_monotonic(&s->lock.cv);
    pthread_mutex_init(&s->amx, NULL);
    pthread_cond_init(&s->acv, NULL);
    return s;
}

static void
s_free(dmp_shared_t *s)
{
    pthread_mutex_destroy(&s->lock.mx);
    pthread_cond_destroy(&s->lock.cv);
    pthread_mutex_destroy(&s->amx);
    pthread_cond_destroy(&s->acv);
    dmp__free(s);
}

/* ---- talking to the owner ---------------------------------------------- */

static void
s_op_init(const dmp_shared_t *s, dmp__msg_t *req, uint32_t op)
{
    memset(req, 0, sizeof *req);
    req->kind = DMP__MSG_SHARED_OP;
    req->u.shared_op.obj = s->id;
    req->u.shared_op.op = op;
    dmp__strlcpy(req->u.shared_op.holder_node, dmp_current_node(),
                 DMP__NAME_MAX);
    req->u.shared_op.holder_pid = (uint32_t)getpid();
}

/* Where s's requests go: its direct link to the owner, or our agent
 * (*route: the owner to forward to). Never called with amx held: making a
 * link waits for our agent, whose replies may need amx (s_async_done). */
static dmp_client_t *
s_via(dmp_shared_t *s, const char **route)
{
    pthread_mutex_lock(&s->amx);
    bool chosen = s->via_chosen;
    pthread_mutex_unlock(&s->amx);
    if (!chosen) {
        dmp_client_t *link = dmp__direct_client(s->node);
        pthread_mutex_lock(&s->amx);
        if (!s->via_chosen) {
            s->via_chosen = true;
            s->link = link;
        }
        pthread_mutex_unlock(&s->amx);
    }
    pthread_mutex_lock(&s->amx);
    dmp_client_t *link = s->link;
    pthread_mutex_unlock(&s->amx);
    *route = link ? NULL : dmp__obj_route(s->node);
    return link ? link : dmp_default_client();
}

/* A request on s's link gave DMP_ENODE: the next one chooses again
 * (whatever was in flight on it failed too, so order holds). */
static void
s_link_lost(dmp_shared_t *s, dmp_client_t *link)
{
    dmp__direct_lost(s->node, link);
    pthread_mutex_lock(&s->amx);
    if (s->link == link) {
        s->link = NULL;
        s->via_chosen = false;
    }
    pthread_mutex_unlock(&s->amx);
}

/* One SharedOp at the owner, waiting up to `wait` for the answer. rep is
 * filled on success (the caller clears it) when given. */
static int
s_request(dmp_shared_t *s, dmp__msg_t *req, double wait, dmp__msg_t *rep)
{
    const char *route;
    dmp_client_t *c = s_via(s, &route);
    if (!c)
        return -EBADF;
    dmp__msg_t scratch;
    dmp__msg_t *r = rep ? rep : &scratch;
    int rc = dmp__client_request(c, route, req, r, DMP__MSG_SHARED_REPLY,
                                 wait);
    dmp_client_t *agent = dmp_default_client();
    if (rc && c != agent && agent) /* the error's text where one looks */
        dmp__client_copy_errmsg(agent, c);
    if (rc == DMP_ENODE && c != agent)
        s_link_lost(s, c);
    if (rc == 0 && !rep)
        dmp__msg_clear(&scratch);
    if (rc == -EBADF)
        s->gone = true;
    return rc;
}

/* An earlier write's or release's failure, once. */
static int
s_async_error(dmp_shared_t *s)
{
    pthread_mutex_lock(&s->amx);
    int rc = s->async_error;
    s->async_error = 0;
    pthread_mutex_unlock(&s->amx);
    return rc;
}

static void
s_async_done(int rc, const dmp__msg_t *rep, void *arg)
{
    (void)rep;
    dmp_shared_t *s = arg;
    pthread_mutex_lock(&s->amx);
    dmp_client_t *link = rc == DMP_ENODE ? s->link : NULL;
    pthread_mutex_unlock(&s->amx);
    if (link) /* a link's I/O thread may say so: never a wait for our agent */
        s_link_lost(s, link);
    pthread_mutex_lock(&s->amx);
    if (rc && !s->async_error)
        s->async_error = rc;
    if (--s->inflight == 0)
        pthread_cond_broadcast(&s->acv);
    pthread_mutex_unlock(&s->amx);
}

/* Sends req without waiting for its answer (its failure comes from the
 * next call). Requests to one owner keep their order on the way. */
static int
s_request_async(dmp_shared_t *s, dmp__msg_t *req)
{
    const char *route;
    dmp_client_t *c = s_via(s, &route);
    if (!c)
        return -EBADF;
    pthread_mutex_lock(&s->amx);
    s->inflight++;
    pthread_mutex_unlock(&s->amx);
    int rc = dmp__client_send_async(c, route, req, s_async_done, s, false);
    if (rc)
        s_async_done(0, NULL, s);
    return rc;
}

/* Waits until every write and release sent reached the owner. */
static int
s_flush(dmp_shared_t *s)
{
    pthread_mutex_lock(&s->amx);
    while (s->inflight)
        pthread_cond_wait(&s->acv, &s->amx);
    pthread_mutex_unlock(&s->amx);
    return s_async_error(s);
}

/* ---- the lease renewer -------------------------------------------------- */

static void
s_schedule(dmp_shared_t *s, double lease)
{
    /* Under s_lock. A third of the lease: two renewals may be lost. */
    s->lease = lease > 0 ? lease : 2.0;
    s->renew_at = dmp__now() + s->lease / 3;
    if (s_ren.cv_ready)
        pthread_cond_signal(&s_ren.cv);
}

/* Renews one object's lease (the renewer thread, without s_lock). */
static void
s_renew(dmp_shared_t *s)
{
    dmp__msg_t req, rep;
    s_op_init(s, &req, DMP__SHARED_RENEW);
    /* Whether we believe we hold the lock: the owner says if we lost it. */
    pthread_mutex_lock(&s->lock.mx);
    bool held = s->lock.busy && __atomic_load_n(&s->lock.owner,
                                                 __ATOMIC_RELAXED) != 0;
    unsigned gen = s->lock.gen;
    pthread_mutex_unlock(&s->lock.mx);
    req.u.shared_op.holding = held;
    int rc = s_request(s, &req, s->lease / 3, &rep);
    double lease = rc == 0 ? rep.u.shared_reply.lease : 0;
    if (rc == 0)
        dmp__msg_clear(&rep);
    if (rc == -EPERM) {
        /* The lease ran out (we were cut off or stopped): the owner has
         * given the lock to someone else. The renewal attached us again. */
        pthread_mutex_lock(&s->lock.mx);
        if (held && s->lock.gen == gen && s->lock.busy)
            s->lock.lost = true;
        pthread_mutex_unlock(&s->lock.mx);
        dmp__log(DMP_LOG_WARN, "the lease of a lock of node '%s' ran out "
                 "while this process held it", s->node);
        rc = 0;
    }
    pthread_mutex_lock(&s_lock);
    if (rc == 0 || !s->gone)
        s_schedule(s, lease ? lease : s->lease);
    if (rc && !s->gone)
        s->renew_at = dmp__now() + s->lease / 6; /* try again soon */
    pthread_mutex_unlock(&s_lock);
}

static void *
s_renewer(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&s_lock);
    while (!s_ren.stop) {
        dmp_shared_t *due = NULL;
        double next = INFINITY, now = dmp__now();
        for (dmp_shared_t *s = s_open; s; s = s->next) {
            if (s->seg || s->gone)
                continue;
            if (s->renew_at <= now) {
                due = s;
                break;
            }
            if (s->renew_at < next)
                next = s->renew_at;
        }
        if (due) {
            due->renewing = true;
            pthread_mutex_unlock(&s_lock);
            s_renew(due);
            pthread_mutex_lock(&s_lock);
            due->renewing = false;
            pthread_cond_broadcast(&s_cond);
            continue;
        }
        if (isinf(next)) {
            pthread_cond_wait(&s_ren.cv, &s_lock);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            double at = (double)ts.tv_sec + ts.tv_nsec / 1e9 + (next - now);
            ts.tv_sec = (time_t)at;
            ts.tv_nsec = (long)((at - (double)ts.tv_sec) * 1e9);
            pthread_cond_timedwait(&s_ren.cv, &s_lock, &ts);
        }
    }
    pthread_mutex_unlock(&s_lock);
    return NULL;
}

/* Under s_lock: starts the renewer once a remote object is open. */
static void
s_renewer_start(void)
{
    if (s_ren.running)
        return;
    if (!s_ren.cv_ready) {
        pthread_condattr_t a;
        pthread_condattr_init(&a);
        pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
        pthread_cond_init(&s_ren.cv, &a);
        pthread_condattr_destroy(&a);
        s_ren.cv_ready = true;
    }
    s_ren.stop = false;
    if (pthread_create(&s_ren.thread, NULL, s_renewer, NULL) == 0)
        s_ren.running = true;
    else
        dmp__log(DMP_LOG_WARN, "cannot start the lease renewer: locks "
                 "held across hosts may be lost after their lease");
}

static void
s_renewer_stop(void)
{
    pthread_mutex_lock(&s_lock);
    bool running = s_ren.running;
    s_ren.stop = true;
    if (s_ren.cv_ready)
        pthread_cond_signal(&s_ren.cv);
    s_ren.running = false;
    pthread_mutex_unlock(&s_lock);
    if (running)
        pthread_join(s_ren.thread, NULL);
}

/* ---- opening ------------------------------------------------------------ */

/* Maps the segment when the owner is this host's agent (or may be: then
 * the segment opens only if it is), and holds it in our name; else
 * attaches at the owner, which holds it for us while our lease lives. */
static int
s_attach(dmp_shared_t *s)
{
    if (dmp__obj_is_local(s->node) || dmp__obj_may_map(s->node)) {
        int rc = dmp__seg_open(s->seg_name, &s->seg);
        if (rc == 0 && (dmp__seg_typecode(s->seg) != s->typecode ||
                        dmp__seg_length(s->seg) != s->length ||
                        dmp__seg_has_lock(s->seg) != s->has_lock))
            dmp__seg_close(&s->seg); /* not what the handle says */
        if (rc == 0 && s->seg &&
            dmp__seg_hold(s->seg, getpid(), false) == 0) {
            s->data = dmp__seg_data(s->seg);
            return 0;
        }
        dmp__seg_close(&s->seg);
        if (rc == -ENOENT && dmp__obj_is_local(s->node))
            return -EBADF; /* removed already */
    }
    dmp__msg_t req, rep;
    s_op_init(s, &req, DMP__SHARED_ATTACH);
    int rc = s_request(s, &req, 0, &rep);
    if (rc)
        return rc;
    pthread_mutex_lock(&s_lock);
    s_schedule(s, rep.u.shared_reply.lease);
    pthread_mutex_unlock(&s_lock);
    dmp__msg_clear(&rep);
    return 0;
}

/* Lets go: our hold here (and a check at the owner when it was the last
 * one of this host), or our attachment at the owner. */
static void
s_detach(dmp_shared_t *s)
{
    bool tell = true;
    if (s->seg) {
        tell = dmp__seg_unhold(s->seg, getpid()) == 0;
        dmp__seg_close(&s->seg);
    }
    if (tell && !s->gone && dmp_default_client()) {
        dmp__msg_t req;
        s_op_init(s, &req, DMP__SHARED_DETACH);
        s_request(s, &req, 5.0, NULL);
    }
}

static void
s_register(dmp_shared_t *s)
{
    pthread_mutex_lock(&s_lock);
    s->next = s_open;
    s_open = s;
    if (!s->seg)
        s_renewer_start();
    pthread_mutex_unlock(&s_lock);
}

static int
s_new(char typecode, size_t size, const void *init, int lock,
      dmp_shared_t **s_p)
{
    size_t itemsize = dmp__typecode_size((unsigned char)typecode);
    if (!itemsize || !typecode || size == 0 ||
        size > DMP__SHARED_BYTES_MAX / itemsize)
        return -EINVAL;
    int rc = dmp__init_lazy();
    if (rc)
        return rc;
    dmp_shared_t *s = s_alloc();
    if (!s)
        return -ENOMEM;
    dmp__msg_t req = {.kind = DMP__MSG_SHARED_NEW}, rep;
    req.u.shared_new.typecode = typecode;
    req.u.shared_new.length = size;
    req.u.shared_new.lock = lock != 0;
    rc = dmp__client_request(dmp_default_client(), NULL, &req, &rep,
                             DMP__MSG_OBJ_INFO, 0);
    if (rc) {
        s_free(s);
        return rc;
    }
    dmp__strlcpy(s->node, rep.u.obj_info.node, sizeof s->node);
    dmp__strlcpy(s->seg_name, rep.u.obj_info.rings[0], sizeof s->seg_name);
    s->id = rep.u.obj_info.id;
    dmp__msg_clear(&rep);
    s->typecode = typecode;
    s->itemsize = itemsize;
    s->length = size;
    s->has_lock = lock != 0;
    if ((rc = s_attach(s)) == 0 && init)
        rc = dmp_shared_write(s, 0, size, init);
    if (rc) {
        s_detach(s);
        s_free(s);
        return rc;
    }
    s_register(s);
    *s_p = s;
    return 0;
}

int
dmp_shared_value_new(char typecode, const void *init, int lock,
                     dmp_shared_t **s_p)
{
    return s_new(typecode, 1, init, lock, s_p);
}

int
dmp_shared_array_new(char typecode, size_t size, const void *init, int lock,
                     dmp_shared_t **s_p)
{
    return s_new(typecode, size, init, lock, s_p);
}

int
dmp_shared_from_value(const dmp_value_t *v, dmp_shared_t **s_p)
{
    size_t len;
    const uint8_t *data = dmp__handle_data(v, &len);
    if (!data || len < 1 || data[0] != 'S')
        return -EINVAL;
    dmp_shared_t *s = s_alloc();
    if (!s)
        return -ENOMEM;
    int rc = s_decode_handle(data, len, s);
    if (rc == 0)
        rc = dmp__init_lazy();
    if (rc) {
        s_free(s);
        return rc;
    }
    pthread_mutex_lock(&s_lock);
    for (dmp_shared_t *o = s_open; o; o = o->next)
        if (o->id == s->id && strcmp(o->node, s->node) == 0) {
            o->refs++;
            pthread_mutex_unlock(&s_lock);
            s_free(s);
            *s_p = o;
            return 0;
        }
    pthread_mutex_unlock(&s_lock);
    if ((rc = s_attach(s)) != 0) {
        s_free(s);
        return rc;
    }
    s_register(s);
    *s_p = s;
    return 0;
}

dmp_value_t *
dmp_shared_value(const dmp_shared_t *s)
{
    uint8_t buf[256];
    int len = s_encode_handle(s, buf, sizeof buf);
    return len > 0 ? dmp__handle_value(buf, (size_t)len) : NULL;
}

size_t
dmp_shared_len(const dmp_shared_t *s)
{
    return (size_t)s->length;
}

char
dmp_shared_typecode(const dmp_shared_t *s)
{
    return s->typecode;
}

size_t
dmp_shared_itemsize(const dmp_shared_t *s)
{
    return s->itemsize;
}

/* ---- the lock ------------------------------------------------------------ */

dmp_lock_t *
dmp_shared_get_lock(dmp_shared_t *s)
{
    return s->has_lock ? &s->lock : NULL;
}

int
dmp_lock_is_owned(const dmp_lock_t *lock)
{
    return s_holds(lock);
}

/* Takes a remote lock at the owner (this thread set lock->busy). */
static int
s_remote_acquire(dmp_shared_t *s, double timeout)
{
    dmp__msg_t req, rep;
    s_op_init(s, &req, DMP__SHARED_ACQUIRE);
    bool forever = isinf(timeout) || timeout > 1e9;
    req.u.shared_op.timeout = forever ? -1 : (timeout > 0 ? timeout : 0);
    double wait = forever ? S_FOREVER : req.u.shared_op.timeout + S_MARGIN;
    int rc = s_request(s, &req, wait, &rep);
    if (rc == DMP_ENODE) {
        /* The answer may have been lost after the owner gave it to us:
         * give it back (if it did not, the owner refuses; if the owner is
         * gone, so is the lock). */
        dmp__msg_t rel;
        s_op_init(s, &rel, DMP__SHARED_RELEASE); /* holding 0: if held */
        s_request_async(s, &rel);
        return rc;
    }
    if (rc)
        return rc;
    size_t bytes = (size_t)s->length * s->itemsize;
    if (rep.u.shared_reply.len == bytes && bytes <= sizeof s->cache) {
        memcpy(s->cache, rep.u.shared_reply.data, bytes);
        dmp__elem_from_le(s->typecode, s->cache, (size_t)s->length);
        s->cached = true;
    }
    rc = rep.u.shared_reply.owner_died ? DMP_EOWNERDEAD : 0;
    dmp__msg_clear(&rep);
    return rc;
}

int
dmp_lock_acquire(dmp_lock_t *lock, double timeout)
{
    dmp_shared_t *s = lock->s;
    uintptr_t me = s_me();
    if (__atomic_load_n(&lock->owner, __ATOMIC_RELAXED) == me) {
        lock->depth++;
        return 0;
    }
    if (s->seg) {
        int rc = dmp__seg_lock(s->seg, timeout, true, true);
        if (rc == -EBUSY)
            rc = -ETIMEDOUT;
        if (rc == 0 || rc == DMP_EOWNERDEAD) {
            lock->depth = 1;
            __atomic_store_n(&lock->owner, me, __ATOMIC_RELAXED);
        }
        return rc;
    }
    int rc = s_async_error(s);
    if (rc)
        return rc;
    /* Other threads of this process first, then the owner. */
    bool forever = isnan(timeout) ? false : isinf(timeout) || timeout > 1e9;
    double deadline = dmp__now() + (timeout > 0 && !forever ? timeout : 0);
    pthread_mutex_lock(&lock->mx);
    while (lock->busy) {
        if (forever) {
            pthread_cond_wait(&lock->cv, &lock->mx);
            continue;
        }
        double left = deadline - dmp__now();
        if (left <= 0) {
            pthread_mutex_unlock(&lock->mx);
            return -ETIMEDOUT;
        }
        struct timespec ts = dmp__deadline_in(left);
        pthread_cond_timedwait(&lock->cv, &lock->mx, &ts);
    }
    lock->busy = true;
    lock->lost = false;
    pthread_mutex_unlock(&lock->mx);
    double left = forever ? INFINITY : deadline - dmp__now();
    rc = s_remote_acquire(s, left > 0 ? left : 0);
    pthread_mutex_lock(&lock->mx);
    if (rc == 0 || rc == DMP_EOWNERDEAD) {
        lock->depth = 1;
        lock->gen++;
        __atomic_store_n(&lock->owner, me, __ATOMIC_RELAXED);
    } else {
        lock->busy = false;
        pthread_cond_signal(&lock->cv);
    }
    pthread_mutex_unlock(&lock->mx);
    return rc;
}

/* Puts the holder's unsent writes into req (start, data: a copy in le,
 * little-endian) and forgets them. */
static void
s_dirty(dmp_shared_t *s, dmp__msg_t *req, uint8_t le[DMP__SHARED_PREFETCH_MAX])
{
    if (s->dirty_lo >= s->dirty_hi)
        return;
    size_t n = s->dirty_hi - s->dirty_lo;
    memcpy(le, s->cache + s->dirty_lo * s->itemsize, n * s->itemsize);
    dmp__elem_to_le(s->typecode, le, n);
    req->u.shared_op.start = s->dirty_lo;
    req->u.shared_op.data = le;
    req->u.shared_op.len = n * s->itemsize;
    s->dirty_lo = s->dirty_hi = 0;
}

/* Sends the holder's unsent writes now (before an add of its own). */
static int
s_flush_dirty(dmp_shared_t *s)
{
    if (s->dirty_lo >= s->dirty_hi)
        return 0;
    dmp__msg_t req;
    uint8_t le[DMP__SHARED_PREFETCH_MAX];
    s_op_init(s, &req, DMP__SHARED_WRITE);
    req.u.shared_op.holding = true;
    s_dirty(s, &req, le);
    return s_request_async(s, &req);
}

int
dmp_lock_release(dmp_lock_t *lock)
{
    dmp_shared_t *s = lock->s;
    if (!s_holds(lock))
        return -EPERM;
    if (--lock->depth > 0)
        return 0;
    __atomic_store_n(&lock->owner, 0, __ATOMIC_RELAXED);
    if (s->seg)
        return dmp__seg_unlock(s->seg);
    pthread_mutex_lock(&lock->mx);
    bool lost = lock->lost;
    int rc = 0;
    if (!lost) { /* with the writes made under it (lost: they are void) */
        dmp__msg_t req;
        uint8_t le[DMP__SHARED_PREFETCH_MAX];
        s_op_init(s, &req, DMP__SHARED_RELEASE);
        req.u.shared_op.holding = true; /* not holding it is an error */
        s_dirty(s, &req, le);
        rc = s_request_async(s, &req);
    }
    s->cached = false;
    s->dirty_lo = s->dirty_hi = 0;
    lock->busy = false;
    lock->lost = false;
    pthread_cond_signal(&lock->cv);
    pthread_mutex_unlock(&lock->mx);
    return lost ? -EPERM : rc;
}

/* ---- elements: here ------------------------------------------------------ */

/* Python's index: negative counts from the end. */
static int
s_index(const dmp_shared_t *s, int64_t i, uint64_t *out)
{
    if (i < 0)
        i += (int64_t)s->length;
    if (i < 0 || (uint64_t)i >= s->length)
        return -EINVAL;
    *out = (uint64_t)i;
    return 0;
}

/* Takes the lock for one access, unless there is none or this thread
 * holds it; *took says whether to release it after. */
static int
s_enter(dmp_shared_t *s, bool *took)
{
    *took = false;
    if (!s->has_lock || s_holds(&s->lock))
        return 0;
    int rc = dmp__seg_lock(s->seg, DMP_FOREVER, false, true);
    *took = rc == 0;
    return rc;
}

static void
s_leave(dmp_shared_t *s, bool took)
{
    if (took)
        dmp__seg_unlock(s->seg);
}

/* ---- elements: at the owner ---------------------------------------------- */

/* Reads count elements from start at the owner into buf (native). */
static int
s_remote_read(dmp_shared_t *s, uint64_t start, size_t count, void *buf)
{
    int rc = s_async_error(s);
    if (rc)
        return rc;
    bool holding = s->has_lock && s_holds(&s->lock);
    if (holding && s->cached) {
        memcpy(buf, s->cache + start * s->itemsize, count * s->itemsize);
        return 0;
    }
    /* Pieces of a frame each: each under the lock, not the whole, unless
     * the caller holds it. */
    size_t per = DMP__REMOTE_ITEM_MAX / s->itemsize;
    for (size_t done = 0; done < count;) {
        size_t n = count - done < per ? count - done : per;
        dmp__msg_t req, rep;
        s_op_init(s, &req, DMP__SHARED_READ);
        req.u.shared_op.start = start + done;
        req.u.shared_op.count = n;
        req.u.shared_op.holding = holding;
        if ((rc = s_request(s, &req, S_FOREVER, &rep)) != 0)
            return rc;
        if (rep.u.shared_reply.len != n * s->itemsize) {
            dmp__msg_clear(&rep);
            return DMP_EPROTO;
        }
        uint8_t *dst = (uint8_t *)buf + done * s->itemsize;
        memcpy(dst, rep.u.shared_reply.data, n * s->itemsize);
        dmp__elem_from_le(s->typecode, dst, n);
        dmp__msg_clear(&rep);
        done += n;
    }
    return 0;
}

static int
s_remote_write(dmp_shared_t *s, uint64_t start, size_t count,
               const void *buf)
{
    int rc = s_async_error(s);
    if (rc)
        return rc;
    bool holding = s->has_lock && s_holds(&s->lock);
    if (holding && s->cached) { /* write-back: they go with the release */
        memcpy(s->cache + start * s->itemsize, buf, count * s->itemsize);
        if (s->dirty_lo >= s->dirty_hi) {
            s->dirty_lo = start;
            s->dirty_hi = start + count;
        } else {
            if (start < s->dirty_lo)
                s->dirty_lo = start;
            if (start + count > s->dirty_hi)
                s->dirty_hi = start + count;
        }
        return 0;
    }
    size_t per = DMP__REMOTE_ITEM_MAX / s->itemsize;
    uint8_t small[64];
    for (size_t done = 0; done < count;) {
        size_t n = count - done < per ? count - done : per;
        size_t bytes = n * s->itemsize;
        uint8_t *le = bytes <= sizeof small ? small : dmp__malloc(bytes);
        if (!le)
            return -ENOMEM;
        memcpy(le, (const uint8_t *)buf + done * s->itemsize, bytes);
        dmp__elem_to_le(s->typecode, le, n);
        dmp__msg_t req;
        s_op_init(s, &req, DMP__SHARED_WRITE);
        req.u.shared_op.start = start + done;
        req.u.shared_op.data = le;
        req.u.shared_op.len = bytes;
        req.u.shared_op.holding = holding;
        /* A holder's write cannot wait and cannot fail but for the owner
         * being gone or its lease: it goes without waiting. */
        rc = holding ? s_request_async(s, &req)
                     : s_request(s, &req, S_FOREVER, NULL);
        if (le != small)
            dmp__free(le);
        if (rc)
            return rc;
        done += n;
    }
    return 0;
}

/* ---- elements: the API ----------------------------------------------------- */

int
dmp_shared_read(dmp_shared_t *s, size_t start, size_t count, void *buf)
{
    if (start > s->length || count > s->length - start || (count && !buf))
        return -EINVAL;
    if (count == 0)
        return 0;
    if (!s->seg)
        return s_remote_read(s, start, count, buf);
    bool took;
    int rc = s_enter(s, &took);
    if (rc)
        return rc;
    const uint8_t *src = (const uint8_t *)dmp__seg_data(s->seg);
    memcpy(buf, src + start * s->itemsize, count * s->itemsize);
    s_leave(s, took);
    return 0;
}

int
dmp_shared_write(dmp_shared_t *s, size_t start, size_t count,
                 const void *buf)
{
    if (start > s->length || count > s->length - start || (count && !buf))
        return -EINVAL;
    if (count == 0)
        return 0;
    if (!s->seg)
        return s_remote_write(s, start, count, buf);
    bool took;
    int rc = s_enter(s, &took);
    if (rc)
        return rc;
    uint8_t *dst = (uint8_t *)dmp__seg_data(s->seg) + start * s->itemsize;
    memcpy(dst, buf, count * s->itemsize);
    s_leave(s, took);
    return 0;
}

/* One element, native, into e (8 bytes, aligned). */
static int
s_get(dmp_shared_t *s, int64_t i, uint64_t *e)
{
    uint64_t k;
    int rc = s_index(s, i, &k);
    if (rc)
        return rc;
    if (!s->seg)
        return s_remote_read(s, k, 1, e);
    bool took;
    if ((rc = s_enter(s, &took)) != 0)
        return rc;
    const uint8_t *p = (const uint8_t *)dmp__seg_data(s->seg) +
                       k * s->itemsize;
    int64_t v = 0;
    if (dmp__typecode_is_float(s->typecode))
        dmp__elem_set_double(s->typecode, e,
                             dmp__elem_get_double(s->typecode, p));
    else if (dmp__elem_get_int(s->typecode, p, &v) == 0)
        dmp__elem_set_int(s->typecode, e, v);
    s_leave(s, took);
    return 0;
}

static int
s_set(dmp_shared_t *s, int64_t i, const uint64_t *e)
{
    uint64_t k;
    int rc = s_index(s, i, &k);
    if (rc)
        return rc;
    if (!s->seg)
        return s_remote_write(s, k, 1, e);
    bool took;
    if ((rc = s_enter(s, &took)) != 0)
        return rc;
    uint8_t *p = (uint8_t *)dmp__seg_data(s->seg) + k * s->itemsize;
    int64_t v = 0;
    if (dmp__typecode_is_float(s->typecode))
        dmp__elem_set_double(s->typecode, p,
                             dmp__elem_get_double(s->typecode, e));
    else if (dmp__elem_get_int(s->typecode, e, &v) == 0)
        dmp__elem_set_int(s->typecode, p, v);
    s_leave(s, took);
    return 0;
}

/* The element's address when this process maps the segment and may touch
 * it without taking the lock: no lock, or this thread holds it (the hot
 * path of `with lock: v += 1`). NULL otherwise, or out of range. */
static inline void *
s_direct(dmp_shared_t *s, int64_t i)
{
    if (!s->seg || (s->has_lock && !s_holds(&s->lock)))
        return NULL;
    if (i < 0)
        i += (int64_t)s->length;
    if (i < 0 || (uint64_t)i >= s->length)
        return NULL;
    return s->data + (uint64_t)i * s->itemsize;
}

int
dmp_shared_get_int(dmp_shared_t *s, int64_t i, int64_t *out)
{
    if (dmp__typecode_is_float(s->typecode))
        return -EINVAL;
    void *p = s_direct(s, i);
    if (p)
        return dmp__elem_get_int(s->typecode, p, out);
    uint64_t e = 0;
    int rc = s_get(s, i, &e);
    return rc ? rc : dmp__elem_get_int(s->typecode, &e, out);
}

int
dmp_shared_get_double(dmp_shared_t *s, int64_t i, double *out)
{
    uint64_t e = 0;
    int rc = s_get(s, i, &e);
    if (rc == 0)
        *out = dmp__elem_get_double(s->typecode, &e);
    return rc;
}

int
dmp_shared_set_int(dmp_shared_t *s, int64_t i, int64_t v)
{
    void *p = s_direct(s, i);
    if (p) {
        dmp__elem_set_int(s->typecode, p, v);
        return 0;
    }
    uint64_t e = 0;
    dmp__elem_set_int(s->typecode, &e, v);
    return s_set(s, i, &e);
}

int
dmp_shared_set_double(dmp_shared_t *s, int64_t i, double v)
{
    uint64_t e = 0;
    int rc = dmp__elem_set_double(s->typecode, &e, v);
    return rc ? rc : s_set(s, i, &e);
}

/* add at the owner: the delta as 8 little-endian bytes, and back. */
static int
s_remote_add(dmp_shared_t *s, uint64_t k, uint64_t delta_bits,
             uint64_t *after_bits)
{
    int rc = s_async_error(s);
    if (rc == 0 && s_holds(&s->lock))
        rc = s_flush_dirty(s); /* the owner adds to what we wrote */
    if (rc)
        return rc;
    uint8_t d[8];
    for (int b = 0; b < 8; b++)
        d[b] = (uint8_t)(delta_bits >> (8 * b));
    dmp__msg_t req, rep;
    s_op_init(s, &req, DMP__SHARED_ADD);
    req.u.shared_op.start = k;
    req.u.shared_op.data = d;
    req.u.shared_op.len = 8;
    if ((rc = s_request(s, &req, 0, &rep)) != 0)
        return rc;
    if (rep.u.shared_reply.len != 8) {
        dmp__msg_clear(&rep);
        return DMP_EPROTO;
    }
    uint64_t v = 0;
    for (int b = 0; b < 8; b++)
        v |= (uint64_t)rep.u.shared_reply.data[b] << (8 * b);
    dmp__msg_clear(&rep);
    *after_bits = v;
    return 0;
}

/* Keeps a lock holder's copy in step with an add it made. */
static void
s_cache_add(dmp_shared_t *s, uint64_t k, int64_t vi, double vd)
{
    if (!s->cached || !s_holds(&s->lock))
        return;
    uint8_t *p = s->cache + k * s->itemsize;
    if (dmp__typecode_is_float(s->typecode))
        dmp__elem_set_double(s->typecode, p, vd);
    else
        dmp__elem_set_int(s->typecode, p, vi);
}

int
dmp_shared_add(dmp_shared_t *s, int64_t i, int64_t delta, int64_t *after)
{
    uint64_t k;
    int rc = s_index(s, i, &k);
    if (rc)
        return rc;
    if (dmp__typecode_is_float(s->typecode)) {
        double d;
        rc = dmp_shared_add_double(s, i, (double)delta, &d);
        if (rc == 0 && after)
            *after = (int64_t)d;
        return rc;
    }
    if (s->seg) {
        uint8_t *p = (uint8_t *)dmp__seg_data(s->seg) + k * s->itemsize;
        dmp__elem_add_int(s->typecode, p, delta, after);
        return 0;
    }
    uint64_t bits;
    if ((rc = s_remote_add(s, k, (uint64_t)delta, &bits)) != 0)
        return rc;
    s_cache_add(s, k, (int64_t)bits, 0);
    if (after)
        *after = (int64_t)bits;
    return 0;
}

int
dmp_shared_add_double(dmp_shared_t *s, int64_t i, double delta,
                      double *after)
{
    uint64_t k;
    int rc = s_index(s, i, &k);
    if (rc)
        return rc;
    if (!dmp__typecode_is_float(s->typecode))
        return -EINVAL;
    if (s->seg) {
        uint8_t *p = (uint8_t *)dmp__seg_data(s->seg) + k * s->itemsize;
        return dmp__elem_add_double(s->typecode, p, delta, after);
    }
    uint64_t bits, out;
    memcpy(&bits, &delta, sizeof bits);
    if ((rc = s_remote_add(s, k, bits, &out)) != 0)
        return rc;
    double d;
    memcpy(&d, &out, sizeof d);
    s_cache_add(s, k, 0, d);
    if (after)
        *after = d;
    return 0;
}

/* ---- letting go ------------------------------------------------------------ */

void
dmp_shared_destroy(dmp_shared_t **s_p)
{
    if (!s_p || !*s_p)
        return;
    dmp_shared_t *s = *s_p;
    *s_p = NULL;
    pthread_mutex_lock(&s_lock);
    if (--s->refs > 0) {
        pthread_mutex_unlock(&s_lock);
        return;
    }
    for (dmp_shared_t **pp = &s_open; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    while (s->renewing)
        pthread_cond_wait(&s_cond, &s_lock);
    pthread_mutex_unlock(&s_lock);
    /* A lock this thread holds goes back with the handle (a mutex must
     * not stay held in a mapping that goes away). */
    if (s->has_lock && s_holds(&s->lock)) {
        s->lock.depth = 1;
        dmp_lock_release(&s->lock);
    }
    uintptr_t other = __atomic_load_n(&s->lock.owner, __ATOMIC_RELAXED);
    if (s->seg && other) {
        /* Another thread holds it: keep the mapping (its release needs
         * it) and leave the object to the owner's sweep. */
        dmp__log(DMP_LOG_WARN, "a Value or Array was destroyed while "
                 "another thread held its lock");
        return;
    }
    if (!s->seg && s_flush(s) != 0)
        dmp__log(DMP_LOG_WARN, "a write to a Value or Array of node '%s' "
                 "may be lost: the owner refused it", s->node);
    s_detach(s);
    s_free(s);
}

void
dmp__shared_atexit(void)
{
    for (;;) {
        pthread_mutex_lock(&s_lock);
        dmp_shared_t *s = s_open;
        if (s)
            s->refs = 1;
        pthread_mutex_unlock(&s_lock);
        if (!s)
            break;
        dmp_shared_destroy(&s);
    }
    s_renewer_stop();
}

/* ---- handles passed to children ------------------------------------------ */

/* The child a spawn started: where it runs, its pid. */
typedef struct {
    const char *node;
    pid_t pid;
} s_child_t;

/* One handle of the child's args: a Value or Array is held in its name. */
static void
s_hold_for(const uint8_t *data, size_t len, void *arg)
{
    const char *node = ((const s_child_t *)arg)->node;
    pid_t pid = ((const s_child_t *)arg)->pid;
    dmp_shared_t probe;
    memset(&probe, 0, sizeof probe);
    if (len < 1 || data[0] != 'S' || s_decode_handle(data, len, &probe) != 0)
        return;
    pthread_mutex_lock(&s_lock);
    dmp__seg_t *seg = NULL;
    for (dmp_shared_t *o = s_open; o; o = o->next)
        if (o->id == probe.id && strcmp(o->node, probe.node) == 0)
            seg = o->seg;
    /* A child on the owner's host, and the segment mapped here: its slot
     * directly. (The handle cannot go while we are in s_lock.) */
    if (seg && strcmp(node, probe.node) == 0) {
        dmp__seg_hold(seg, pid, true);
        pthread_mutex_unlock(&s_lock);
        return;
    }
    pthread_mutex_unlock(&s_lock);
    dmp__msg_t req;
    s_op_init(&probe, &req, DMP__SHARED_HOLD_FOR);
    dmp__strlcpy(req.u.shared_op.holder_node, node, DMP__NAME_MAX);
    req.u.shared_op.holder_pid = (uint32_t)pid;
    s_request(&probe, &req, 5.0, NULL);
}

void
dmp__shared_hold_for_child(const dmp_value_t *args, const char *node,
                           pid_t pid)
{
    if (!node || !dmp__name_valid(node) || pid <= 0)
        return;
    s_child_t child = {node, pid};
    dmp__handles_each(args, s_hold_for, &child);
}
