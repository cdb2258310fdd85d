/*
 * dmp_manager_server.c - the manager's server process: shared objects in
 * memory, served to clients through dmp queues.
 *
 * The server is a dmp process (target DMP__MANAGER_TARGET) started by
 * dmp_manager_start. It owns one request queue, a dmp queue of its node:
 * clients on this host put requests straight into its shared-memory ring,
 * clients elsewhere through the agents (remote puts, pipelined). Each
 * client owns a reply queue of its own node and says so in its Hello; the
 * server puts each reply there. One thread does everything, so the objects
 * need no lock of their own.
 *
 * Blocking operations (acquire, queue get and put, event, condition and
 * barrier waits, join) that cannot complete now are parked here with their
 * deadline and answered when a change of their object lets them complete,
 * or when the deadline passes; the client waits on its reply queue, never
 * by polling.
 *
 * Clients that die: one on this host (its reply ring maps here) is checked
 * by pid and start time; one elsewhere holds a lease its connection renews
 * every second. A dead client's parked operations are dropped, the locks
 * and semaphores it held are released and marked, so that the next
 * acquirer gets DMP_EOWNERDEAD once, and a barrier it waited in breaks.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S_SCAN 0.2          /* seconds between liveness checks of clients */
#define S_IDLE_WAIT 0.5     /* longest wait for a request (stop flag) */
#define S_ARGS_MAX 4

/* ---- a vector of values: lists, arrays, queues ----------------------- */

typedef struct {
    dmp_value_t **items;
    size_t n, cap;
} s_vec_t;

static int
s_vec_reserve(s_vec_t *v, size_t more)
{
    if (v->n + more <= v->cap)
        return 0;
    size_t cap = v->cap ? v->cap : 8;
    while (cap < v->n + more)
        cap *= 2;
    dmp_value_t **items = dmp__realloc(v->items, cap * sizeof *items);
    if (!items)
        return -ENOMEM;
    v->items = items;
    v->cap = cap;
    return 0;
}

/* Inserts item (taken) at i <= n. */
static int
s_vec_insert(s_vec_t *v, size_t i, dmp_value_t *item)
{
    if (!item || s_vec_reserve(v, 1)) {
        dmp_value_destroy(&item);
        return -ENOMEM;
    }
    memmove(v->items + i + 1, v->items + i, (v->n - i) * sizeof *v->items);
    v->items[i] = item;
    v->n++;
    return 0;
}

/* Removes items [lo, hi), destroying them. */
static void
s_vec_erase(s_vec_t *v, size_t lo, size_t hi)
{
    for (size_t i = lo; i < hi; i++)
        dmp_value_destroy(&v->items[i]);
    if (hi < v->n) /* items is NULL in an empty vector */
        memmove(v->items + lo, v->items + hi,
                (v->n - hi) * sizeof *v->items);
    v->n -= hi - lo;
}

static void
s_vec_free(s_vec_t *v)
{
    s_vec_erase(v, 0, v->n);
    dmp__free(v->items);
    memset(v, 0, sizeof *v);
}

/* A list value holding copies of items [lo, hi). */
static dmp_value_t *
s_vec_list(const s_vec_t *v, size_t lo, size_t hi)
{
    dmp_value_t *l = dmp_list();
    for (size_t i = lo; l && i < hi; i++)
        if (dmp_list_append(l, dmp_value_copy(v->items[i])))
            dmp_value_destroy(&l);
    return l;
}

/* ---- objects --------------------------------------------------------- */

typedef struct {
    uint64_t client; /* a client holding units */
    int64_t count;
} s_hold_t;

typedef struct s_obj {
    uint64_t id;
    dmp_proxy_type_t type;
    char name[DMP__NAME_MAX];   /* "" when anonymous */
    char typecode;              /* Value, Array */
    dmp_value_t *map;           /* dict, namespace */
    s_vec_t vec;                /* list, array, queue items */
    dmp_value_t *value;         /* Value */
    /* Locks: holder (0 free) and depth; semaphores: value, bound. */
    uint64_t holder;
    int64_t depth;
    int64_t count, bound;
    s_hold_t *holds;            /* semaphore units per client */
    size_t n_holds;
    bool owner_died;            /* the next acquirer gets DMP_EOWNERDEAD */
    uint64_t lock;              /* condition: its lock object */
    bool flag;                  /* event */
    int64_t parties, waiting, generation; /* barrier */
    bool broken;
    int64_t maxsize, unfinished; /* queue */
} s_obj_t;

typedef struct s_client {
    struct s_client *next;
    uint64_t id;
    dmp_queue_t *reply;         /* the client's reply queue */
    pid_t pid;
    uint64_t start;             /* pid + start time name one process */
    bool same_host;             /* reply ring mapped: check the pid */
    double lease_until;         /* elsewhere: renewed by keepalives */
} s_client_t;

/* A parked blocking operation. */
typedef struct s_park {
    struct s_park *next;
    uint64_t client, seq;
    uint64_t obj;
    int op;
    double deadline;            /* INFINITY: none */
    dmp_value_t *item;          /* queue put */
    int64_t index, generation;  /* barrier */
    int stage;                  /* condition: 0 waits notify, 1 the lock */
    int result;                 /* condition: 0 notified, -ETIMEDOUT */
    int64_t depth;              /* condition: RLock depth to restore */
} s_park_t;

static struct {
    char name[DMP__NAME_MAX];
    uint64_t incarnation;
    dmp_queue_t *requests;
    s_obj_t **objs;             /* by id - 1 */
    size_t n_objs, cap_objs;
    s_client_t *clients;
    uint64_t next_client;
    s_park_t *parks;            /* oldest first */
    bool stop;
    char err[DMP__TEXT_MAX];    /* text of the current request's error */
} S;

static volatile sig_atomic_t s_signalled;

static void
s_on_signal(int signo)
{
    (void)signo;
    s_signalled = 1;
}

static int
s_errf(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int
s_errf(int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(S.err, sizeof S.err, fmt, ap);
    va_end(ap);
    return rc;
}

static s_obj_t *
s_obj(uint64_t id)
{
    return id >= 1 && id <= S.n_objs ? S.objs[id - 1] : NULL;
}

static s_obj_t *
s_obj_by_name(const char *name)
{
    for (size_t i = 0; i < S.n_objs; i++)
        if (S.objs[i]->name[0] && strcmp(S.objs[i]->name, name) == 0)
            return S.objs[i];
    return NULL;
}

static s_client_t *
s_client(uint64_t id)
{
    for (s_client_t *c = S.clients; c; c = c->next)
        if (c->id == id)
            return c;
    return NULL;
}

/* ---- typecodes (Value, Array) ---------------------------------------- */

static bool
s_typecode_valid(char tc)
{
    return tc && strchr("cbBhHiIlLqQfd", tc) != NULL;
}

/* Checks v against typecode tc; *out is the value to store (a copy, a
 * float for f and d). */
static int
s_typed(char tc, const dmp_value_t *v, dmp_value_t **out)
{
    if (tc == 'c') {
        size_t len = 0;
        if (!dmp_value_bytes(v, &len) || len != 1)
            return s_errf(-EINVAL, "typecode 'c' holds bytes of length 1");
        *out = dmp_value_copy(v);
        return *out ? 0 : -ENOMEM;
    }
    if (tc == 'f' || tc == 'd') {
        double d;
        if (dmp_value_type(v) == DMP_VALUE_BOOL ||
            dmp_value_get_double(v, &d) != 0)
            return s_errf(-EINVAL, "typecode '%c' holds numbers", tc);
        *out = dmp_double(d);
        return *out ? 0 : -ENOMEM;
    }
    int64_t i;
    if (dmp_value_get_int(v, &i) != 0)
        return s_errf(-EINVAL, "typecode '%c' holds integers", tc);
    int64_t lo = INT64_MIN, hi = INT64_MAX;
    switch (tc) {
    case 'b': lo = INT8_MIN; hi = INT8_MAX; break;
    case 'B': lo = 0; hi = UINT8_MAX; break;
    case 'h': lo = INT16_MIN; hi = INT16_MAX; break;
    case 'H': lo = 0; hi = UINT16_MAX; break;
    case 'i': lo = INT32_MIN; hi = INT32_MAX; break;
    case 'I': lo = 0; hi = UINT32_MAX; break;
    case 'L': case 'Q': lo = 0; break;
    default: break;
    }
    if (i < lo || i > hi)
        return s_errf(-ERANGE, "%lld out of range for typecode '%c'",
                      (long long)i, tc);
    *out = dmp_int(i);
    return *out ? 0 : -ENOMEM;
}

/* ---- comparison for sort (Python's <, within one kind of value) ------ */

static int s_cmp_err;

static int
s_cmp(const dmp_value_t *a, const dmp_value_t *b)
{
    dmp_value_type_t ta = dmp_value_type(a), tb = dmp_value_type(b);
    bool na = ta == DMP_VALUE_BOOL || ta == DMP_VALUE_INT ||
              ta == DMP_VALUE_DOUBLE;
    bool nb = tb == DMP_VALUE_BOOL || tb == DMP_VALUE_INT ||
              tb == DMP_VALUE_DOUBLE;
    if (na && nb) {
        int64_t x, y;
        if (ta != DMP_VALUE_DOUBLE && tb != DMP_VALUE_DOUBLE &&
            dmp_value_get_int(a, &x) == 0 && dmp_value_get_int(b, &y) == 0)
            return x < y ? -1 : x > y;
        double p = 0, q = 0;
        if (ta == DMP_VALUE_BOOL || ta == DMP_VALUE_INT) {
            dmp_value_get_int(a, &x);
            p = (double)x;
        } else {
            dmp_value_get_double(a, &p);
        }
        if (tb == DMP_VALUE_BOOL || tb == DMP_VALUE_INT) {
            dmp_value_get_int(b, &y);
            q = (double)y;
        } else {
            dmp_value_get_double(b, &q);
        }
        return p < q ? -1 : p > q;
    }
    if (ta != tb) {
        s_cmp_err = 1;
        return 0;
    }
    if (ta == DMP_VALUE_STR || ta == DMP_VALUE_BYTES) {
        size_t la = 0, lb = 0;
        const void *pa = ta == DMP_VALUE_STR ? (const void *)dmp_value_str(a, &la)
                                             : dmp_value_bytes(a, &la);
        const void *pb = ta == DMP_VALUE_STR ? (const void *)dmp_value_str(b, &lb)
                                             : dmp_value_bytes(b, &lb);
        int c = memcmp(pa, pb, la < lb ? la : lb);
        return c ? (c < 0 ? -1 : 1) : (la < lb ? -1 : la > lb);
    }
    if (ta == DMP_VALUE_LIST) {
        size_t la = dmp_value_len(a), lb = dmp_value_len(b);
        for (size_t i = 0; i < la && i < lb; i++) {
            const dmp_value_t *x = dmp_list_get(a, (int64_t)i);
            const dmp_value_t *y = dmp_list_get(b, (int64_t)i);
            if (!dmp_value_equal(x, y))
                return s_cmp(x, y);
        }
        return la < lb ? -1 : la > lb;
    }
    s_cmp_err = 1; /* None, dicts, handles: no order */
    return 0;
}

static int s_cmp_reverse;

static int
s_qsort_cmp(const void *a, const void *b)
{
    int c = s_cmp(*(dmp_value_t *const *)a, *(dmp_value_t *const *)b);
    return s_cmp_reverse ? -c : c;
}

/* Python's sort is stable: merge sort through an index-tagged qsort is
 * simplest: sort pointers, ties broken by original position. */
typedef struct {
    dmp_value_t *v;
    size_t pos;
} s_tagged_t;

static int
s_tagged_cmp(const void *a, const void *b)
{
    const s_tagged_t *x = a, *y = b;
    int c = s_qsort_cmp(&x->v, &y->v);
    return c ? c : (x->pos < y->pos ? -1 : x->pos > y->pos);
}

/* ---- indexes and slices ------------------------------------------------ */

/* Python's index: negative from the end; -ERANGE outside. */
static int
s_index(int64_t i, size_t n, size_t *out)
{
    if (i < 0)
        i += (int64_t)n;
    if (i < 0 || (uint64_t)i >= n)
        return s_errf(-ERANGE, "index out of range");
    *out = (size_t)i;
    return 0;
}

/* Python's slice bounds with step 1, clamped. */
static void
s_slice(int64_t start, int64_t stop, size_t n, size_t *lo, size_t *hi)
{
    int64_t len = (int64_t)n;
    if (start < 0)
        start = start + len < 0 ? 0 : start + len;
    if (stop < 0)
        stop = stop + len < 0 ? 0 : stop + len;
    if (start > len)
        start = len;
    if (stop > len)
        stop = len;
    if (stop < start)
        stop = start;
    *lo = (size_t)start;
    *hi = (size_t)stop;
}

/* ---- replies ----------------------------------------------------------- */

/* Sends one reply: rc, and a value (rc 0) or the error's text. A client
 * that cannot take it (gone, an item too large for its link) loses it. */
static void
s_reply(s_client_t *c, uint64_t seq, int rc, const dmp_value_t *result)
{
    if (!c)
        return;
    uint8_t *enc = NULL;
    size_t enc_len = 0;
    const char *text = S.err;
    if (rc == 0 && result && dmp_value_encode(result, &enc, &enc_len) != 0)
        rc = -ENOMEM, text = "out of memory in the manager";
    size_t body = rc == 0 ? enc_len : strlen(text);
    uint8_t *buf = dmp__malloc(13 + body);
    if (!buf) {
        dmp__free(enc);
        return;
    }
    dmp__le64_put(buf, seq);
    dmp__le32_put(buf + 8, (uint32_t)rc);
    buf[12] = rc == 0 ? (enc ? 1 : 0) : 2;
    if (rc == 0 && enc)
        memcpy(buf + 13, enc, enc_len);
    else if (rc)
        memcpy(buf + 13, text, body);
    int prc = dmp_queue_put_bytes(c->reply, buf, 13 + body, 0);
    if (prc == -EMSGSIZE && rc == 0) {
        /* Too large for the client's link: tell it so instead. */
        const char *t = "the result is larger than one frame across hosts";
        dmp__le32_put(buf + 8, (uint32_t)-EMSGSIZE);
        buf[12] = 2;
        memcpy(buf + 13, t, strlen(t));
        dmp_queue_put_bytes(c->reply, buf, 13 + strlen(t), 0);
    }
    dmp__free(buf);
    dmp__free(enc);
}

/* ---- locks and semaphores ----------------------------------------------- */

static bool
s_is_lock(const s_obj_t *o)
{
    return o->type == DMP_PROXY_LOCK || o->type == DMP_PROXY_RLOCK;
}

static bool
s_is_sem(const s_obj_t *o)
{
    return o->type == DMP_PROXY_SEMAPHORE ||
           o->type == DMP_PROXY_BOUNDED_SEMAPHORE;
}

/* The lock object behind o: itself, or a condition's lock. */
static s_obj_t *
s_lock_of(s_obj_t *o)
{
    return o->type == DMP_PROXY_CONDITION ? s_obj(o->lock) : o;
}

static void
s_hold_add(s_obj_t *o, uint64_t client, int64_t n)
{
    for (size_t i = 0; i < o->n_holds; i++)
        if (o->holds[i].client == client) {
            o->holds[i].count += n;
            return;
        }
    s_hold_t *h = dmp__realloc(o->holds, (o->n_holds + 1) * sizeof *h);
    if (!h)
        return; /* only death-release precision is lost */
    o->holds = h;
    o->holds[o->n_holds++] = (s_hold_t){client, n};
}

/* Tries to acquire: 0 or DMP_EOWNERDEAD when done, -EAGAIN when it must
 * wait. depth: the RLock depth to take (conditions restore theirs). */
static int
s_try_acquire(s_obj_t *o, uint64_t client, int64_t depth)
{
    if (s_is_sem(o)) {
        if (o->count <= 0)
            return -EAGAIN;
        o->count--;
        s_hold_add(o, client, 1);
    } else if (o->holder == 0) {
        o->holder = client;
        o->depth = depth;
    } else if (o->type == DMP_PROXY_RLOCK && o->holder == client) {
        o->depth += depth;
        return 0;
    } else {
        return -EAGAIN;
    }
    if (o->owner_died) {
        o->owner_died = false;
        return DMP_EOWNERDEAD;
    }
    return 0;
}

static int
s_release(s_obj_t *o, uint64_t client)
{
    if (s_is_sem(o)) {
        if (o->type == DMP_PROXY_BOUNDED_SEMAPHORE && o->count >= o->bound)
            return s_errf(-EINVAL, "semaphore released too many times");
        o->count++;
        /* Units come back from the releaser, or else from whoever holds
         * some (a release by another process, as a signal). */
        s_hold_t *h = NULL;
        for (size_t i = 0; i < o->n_holds; i++)
            if (o->holds[i].count > 0 &&
                (!h || o->holds[i].client == client))
                h = &o->holds[i];
        if (h)
            h->count--;
        return 0;
    }
    if (o->holder == 0)
        return s_errf(-EPERM, "release of an unlocked lock");
    if (o->type == DMP_PROXY_RLOCK) {
        if (o->holder != client)
            return s_errf(-EPERM, "cannot release an RLock another "
                          "process holds");
        if (--o->depth > 0)
            return 0;
    }
    o->holder = 0;
    o->depth = 0;
    return 0;
}

/* ---- parked operations -------------------------------------------------- */

static void s_wake(s_obj_t *o);

static int
s_park(uint64_t client, uint64_t seq, s_obj_t *o, int op, double timeout,
       s_park_t **park_p)
{
    s_park_t *p = dmp__calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->client = client;
    p->seq = seq;
    p->obj = o->id;
    p->op = op;
    p->deadline = isinf(timeout) ? INFINITY : dmp__now() + timeout;
    s_park_t **pp = &S.parks;
    while (*pp)
        pp = &(*pp)->next;
    *pp = p;
    if (park_p)
        *park_p = p;
    return 0;
}

static void
s_unpark(s_park_t *p)
{
    for (s_park_t **pp = &S.parks; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    dmp_value_destroy(&p->item);
    dmp__free(p);
}

/* Completes p if its object allows now: true when answered. */
static bool
s_retry(s_park_t *p)
{
    s_obj_t *o = s_obj(p->obj);
    s_client_t *c = s_client(p->client);
    if (!o || !c)
        return true; /* dropped */
    int rc;
    dmp_value_t *res = NULL;
    switch (p->op) {
    case DMP__MOP_ACQUIRE:
        rc = s_try_acquire(s_lock_of(o), p->client, 1);
        if (rc == -EAGAIN)
            return false;
        break;
    case DMP__MOP_C_WAIT:
        if (p->stage == 0)
            return false; /* not notified yet */
        rc = s_try_acquire(s_lock_of(o), p->client, p->depth);
        if (rc == -EAGAIN)
            return false;
        if (rc == 0)
            rc = p->result;
        break;
    case DMP__MOP_E_WAIT:
        if (!o->flag)
            return false;
        rc = 0;
        break;
    case DMP__MOP_Q_GET:
        if (o->vec.n == 0)
            return false;
        res = o->vec.items[0];
        o->vec.items[0] = NULL;
        s_vec_erase(&o->vec, 0, 1);
        rc = 0;
        s_reply(c, p->seq, rc, res);
        dmp_value_destroy(&res);
        s_wake(o); /* a putter may go on */
        return true;
    case DMP__MOP_Q_PUT:
        if (o->maxsize > 0 && (int64_t)o->vec.n >= o->maxsize)
            return false;
        if (s_vec_insert(&o->vec, o->vec.n, p->item) == 0)
            o->unfinished++;
        p->item = NULL;
        s_reply(c, p->seq, 0, NULL);
        s_wake(o);
        return true;
    case DMP__MOP_Q_JOIN:
        if (o->unfinished > 0)
            return false;
        rc = 0;
        break;
    case DMP__MOP_B_WAIT:
        if (o->broken && p->generation == o->generation) {
            rc = DMP_EBROKEN;
            break;
        }
        if (p->generation == o->generation)
            return false;
        rc = 0; /* the barrier passed */
        res = dmp_int(p->index);
        break;
    default:
        rc = -EINVAL;
        break;
    }
    s_reply(c, p->seq, rc, res);
    dmp_value_destroy(&res);
    return true;
}

/* Retries the parked operations of o (and, for a lock, of conditions on
 * it), oldest first, until none can go on. */
static void
s_wake(s_obj_t *o)
{
    static int depth;
    if (depth > 8)
        return; /* bounded recursion through queue puts and gets */
    depth++;
    bool progress = true;
    while (progress) {
        progress = false;
        for (s_park_t *p = S.parks; p; p = p->next) {
            s_obj_t *po = s_obj(p->obj);
            if (!po || (po != o && s_lock_of(po) != o))
                continue;
            if (s_retry(p)) {
                s_unpark(p);
                progress = true;
                break;
            }
        }
    }
    depth--;
}

/* Answers parked operations whose deadline passed. */
static void
s_expire(double now)
{
    for (s_park_t *p = S.parks, *next; p; p = next) {
        next = p->next;
        if (p->deadline > now)
            continue;
        s_client_t *c = s_client(p->client);
        s_obj_t *o = s_obj(p->obj);
        int rc = -ETIMEDOUT;
        if (p->op == DMP__MOP_Q_GET)
            rc = DMP_EEMPTY;
        else if (p->op == DMP__MOP_Q_PUT)
            rc = DMP_EFULL;
        else if (p->op == DMP__MOP_C_WAIT) {
            /* Python re-acquires the lock before wait returns, even
             * after a timeout: now it waits for the lock only. */
            p->stage = 1;
            p->result = -ETIMEDOUT;
            p->deadline = INFINITY;
            if (o)
                s_wake(s_lock_of(o));
            next = S.parks; /* the list may have changed */
            continue;
        } else if (p->op == DMP__MOP_B_WAIT && o &&
                   p->generation == o->generation) {
            o->broken = true; /* Python: a timeout breaks the barrier */
            o->waiting--;
        }
        S.err[0] = '\0';
        s_reply(c, p->seq, rc, NULL);
        bool barrier = p->op == DMP__MOP_B_WAIT; /* p is freed below */
        s_unpark(p);
        if (o && barrier)
            s_wake(o);
        next = S.parks;
    }
}

static double
s_next_deadline(void)
{
    double d = INFINITY;
    for (s_park_t *p = S.parks; p; p = p->next)
        if (p->deadline < d)
            d = p->deadline;
    return d;
}

/* ---- clients ------------------------------------------------------------- */

/* Releases what a gone client held and drops its parked operations. */
static void
s_client_gone(s_client_t *c, const char *why)
{
    dmp__log(DMP_LOG_INFO, "manager '%s': client %llu %s", S.name,
             (unsigned long long)c->id, why);
    for (s_park_t *p = S.parks, *next; p; p = next) {
        next = p->next;
        if (p->client != c->id)
            continue;
        s_obj_t *o = s_obj(p->obj);
        if (o && p->op == DMP__MOP_B_WAIT && p->generation == o->generation) {
            o->broken = true; /* the others would wait for it forever */
            o->waiting--;
        }
        s_unpark(p);
        if (o && p->op == DMP__MOP_B_WAIT)
            s_wake(o);
        next = S.parks;
    }
    for (size_t i = 0; i < S.n_objs; i++) {
        s_obj_t *o = S.objs[i];
        bool freed = false;
        if (s_is_lock(o) && o->holder == c->id) {
            o->holder = 0;
            o->depth = 0;
            freed = true;
        } else if (s_is_sem(o)) {
            for (size_t k = 0; k < o->n_holds; k++)
                if (o->holds[k].client == c->id && o->holds[k].count > 0) {
                    o->count += o->holds[k].count;
                    o->holds[k].count = 0;
                    freed = true;
                }
        }
        if (freed) {
            o->owner_died = true;
            s_wake(o);
        }
    }
    for (s_client_t **pp = &S.clients; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    dmp_queue_destroy(&c->reply);
    dmp__free(c);
}

static bool
s_pid_alive(pid_t pid, uint64_t start)
{
    return start != 0 && dmp__proc_starttime(pid) == start;
}

static void
s_scan_clients(double now)
{
    for (s_client_t *c = S.clients, *next; c; c = next) {
        next = c->next;
        bool alive = c->same_host ? s_pid_alive(c->pid, c->start)
                                  : now < c->lease_until;
        if (!alive) {
            s_client_gone(c, c->same_host ? "died" : "lost its lease");
            next = S.clients;
        }
    }
}

/* ---- request decoding -------------------------------------------------- */

typedef struct {
    int op;
    uint64_t client, seq, obj;
    double timeout;
    dmp_value_t *args[S_ARGS_MAX];
    size_t n_args;
} s_req_t;

static void
s_req_clear(s_req_t *r)
{
    for (size_t i = 0; i < r->n_args; i++)
        dmp_value_destroy(&r->args[i]);
    r->n_args = 0;
}

static int
s_req_decode(const uint8_t *buf, size_t len, s_req_t *r)
{
    memset(r, 0, sizeof *r);
    if (len < DMP__MREQ_HEADER)
        return DMP_EPROTO;
    r->op = buf[0];
    r->client = dmp__le64_get(buf + 1);
    r->seq = dmp__le64_get(buf + 9);
    r->obj = dmp__le64_get(buf + 17);
    uint64_t t = dmp__le64_get(buf + 25);
    memcpy(&r->timeout, &t, sizeof t);
    size_t n = buf[33];
    if (isnan(r->timeout) || n > S_ARGS_MAX)
        return DMP_EPROTO;
    if (r->timeout < 0)
        r->timeout = 0;
    size_t off = DMP__MREQ_HEADER;
    for (size_t i = 0; i < n; i++) {
        if (len - off < 4)
            goto bad;
        uint32_t al = dmp__le32_get(buf + off);
        off += 4;
        if (al > len - off ||
            dmp_value_decode(buf + off, al, &r->args[i]) != 0)
            goto bad;
        r->n_args++;
        off += al;
    }
    if (off != len)
        goto bad;
    return 0;
bad:
    s_req_clear(r);
    return DMP_EPROTO;
}

/* The argument i, or NULL. */
static const dmp_value_t *
s_arg(const s_req_t *r, size_t i)
{
    return i < r->n_args ? r->args[i] : NULL;
}

static int
s_arg_int(const s_req_t *r, size_t i, int64_t *out)
{
    const dmp_value_t *v = s_arg(r, i);
    if (!v || dmp_value_get_int(v, out) != 0)
        return s_errf(-EINVAL, "an integer argument is expected");
    return 0;
}

/* ---- object creation ---------------------------------------------------- */

static int
s_create(const s_req_t *r, dmp_value_t **res)
{
    int64_t type, tc = 0, n = 0;
    if (s_arg_int(r, 0, &type) || type < DMP_PROXY_DICT ||
        type > DMP_PROXY_QUEUE)
        return s_errf(-EINVAL, "unknown object type");
    const dmp_value_t *namev = s_arg(r, 1);
    const char *name = dmp_value_str(namev, NULL);
    if (name && (!dmp__name_valid(name)))
        return s_errf(-EINVAL, "invalid object name");
    if (name && s_obj_by_name(name))
        return s_errf(-EEXIST, "an object named '%s' exists", name);
    const dmp_value_t *init = s_arg(r, 2);
    s_obj_t *o = dmp__calloc(1, sizeof *o);
    if (!o)
        return -ENOMEM;
    o->type = (dmp_proxy_type_t)type;
    if (name)
        dmp__strlcpy(o->name, name, sizeof o->name);
    int rc = 0;
    switch (o->type) {
    case DMP_PROXY_DICT:
    case DMP_PROXY_NAMESPACE:
        if (init && dmp_value_type(init) != DMP_VALUE_NONE &&
            dmp_value_type(init) != DMP_VALUE_MAP) {
            rc = s_errf(-EINVAL, "a dict is expected");
            break;
        }
        o->map = init && dmp_value_type(init) == DMP_VALUE_MAP
                     ? dmp_value_copy(init) : dmp_map();
        rc = o->map ? 0 : -ENOMEM;
        break;
    case DMP_PROXY_LIST:
    case DMP_PROXY_ARRAY:
        if (init && dmp_value_type(init) != DMP_VALUE_NONE &&
            dmp_value_type(init) != DMP_VALUE_LIST) {
            rc = s_errf(-EINVAL, "a list is expected");
            break;
        }
        if (o->type == DMP_PROXY_ARRAY) {
            if (s_arg_int(r, 3, &tc) || !s_typecode_valid((char)tc)) {
                rc = s_errf(-EINVAL, "bad typecode");
                break;
            }
            o->typecode = (char)tc;
        }
        for (size_t i = 0; rc == 0 && init && i < dmp_value_len(init); i++) {
            dmp_value_t *item = NULL;
            const dmp_value_t *src = dmp_list_get(init, (int64_t)i);
            rc = o->typecode ? s_typed(o->typecode, src, &item)
                             : ((item = dmp_value_copy(src)) ? 0 : -ENOMEM);
            if (rc == 0)
                rc = s_vec_insert(&o->vec, o->vec.n, item);
        }
        break;
    case DMP_PROXY_VALUE:
        if (s_arg_int(r, 3, &tc) || !s_typecode_valid((char)tc)) {
            rc = s_errf(-EINVAL, "bad typecode");
            break;
        }
        o->typecode = (char)tc;
        rc = init ? s_typed(o->typecode, init, &o->value)
                  : s_errf(-EINVAL, "a value is expected");
        break;
    case DMP_PROXY_SEMAPHORE:
    case DMP_PROXY_BOUNDED_SEMAPHORE:
        if (s_arg_int(r, 3, &n) || n < 0) {
            rc = s_errf(-EINVAL, "semaphore initial value must be >= 0");
            break;
        }
        o->count = o->bound = n;
        break;
    case DMP_PROXY_CONDITION: {
        int64_t lock = 0;
        if (s_arg(r, 3) && dmp_value_type(s_arg(r, 3)) != DMP_VALUE_NONE) {
            s_obj_t *l = s_arg_int(r, 3, &lock) ? NULL : s_obj((uint64_t)lock);
            if (!l || !s_is_lock(l)) {
                rc = s_errf(-EINVAL, "a condition's lock must be a Lock or "
                            "RLock of the same manager");
                break;
            }
            o->lock = l->id;
        }
        break;
    }
    case DMP_PROXY_BARRIER:
        if (s_arg_int(r, 3, &n) || n < 1) {
            rc = s_errf(-EINVAL, "a barrier needs at least one party");
            break;
        }
        o->parties = n;
        break;
    case DMP_PROXY_QUEUE:
        if (s_arg_int(r, 3, &n) == 0)
            o->maxsize = n > 0 ? n : 0;
        break;
    default:
        break;
    }
    if (rc == 0 && S.n_objs == S.cap_objs) {
        size_t cap = S.cap_objs ? S.cap_objs * 2 : 64;
        s_obj_t **objs = dmp__realloc(S.objs, cap * sizeof *objs);
        if (!objs)
            rc = -ENOMEM;
        else {
            S.objs = objs;
            S.cap_objs = cap;
        }
    }
    if (rc == 0 && o->type == DMP_PROXY_CONDITION && !o->lock) {
        /* Condition(): a new RLock of its own */
        s_obj_t *l = dmp__calloc(1, sizeof *l);
        if (!l || S.n_objs + 1 >= S.cap_objs) {
            dmp__free(l);
            rc = -ENOMEM;
        } else {
            l->type = DMP_PROXY_RLOCK;
            l->id = ++S.n_objs;
            S.objs[l->id - 1] = l;
            o->lock = l->id;
        }
    }
    if (rc) {
        dmp_value_destroy(&o->map);
        dmp_value_destroy(&o->value);
        s_vec_free(&o->vec);
        dmp__free(o);
        return rc;
    }
    o->id = ++S.n_objs;
    S.objs[o->id - 1] = o;
    *res = dmp_list_of(3, dmp_int((int64_t)o->id), dmp_int(o->type),
                       dmp_int(o->typecode));
    return *res ? 0 : -ENOMEM;
}

/* ---- str(proxy) ------------------------------------------------------ */

static int
s_repr(s_obj_t *o, dmp_value_t **res)
{
    char *buf = NULL;
    size_t size = 256;
    for (int pass = 0; pass < 2; pass++) {
        dmp__free(buf);
        buf = dmp__malloc(size);
        if (!buf)
            return -ENOMEM;
        int n = 0;
        switch (o->type) {
        case DMP_PROXY_DICT:
            n = dmp_value_repr(o->map, buf, size);
            break;
        case DMP_PROXY_LIST:
        case DMP_PROXY_ARRAY: {
            dmp_value_t *l = s_vec_list(&o->vec, 0, o->vec.n);
            if (!l) {
                dmp__free(buf);
                return -ENOMEM;
            }
            size_t pre = 0;
            if (o->type == DMP_PROXY_ARRAY)
                pre = (size_t)snprintf(buf, size, "array('%c', ", o->typecode);
            int m = dmp_value_repr(l, pre < size ? buf + pre : NULL,
                                   pre < size ? size - pre : 0);
            dmp_value_destroy(&l);
            if (m < 0) {
                dmp__free(buf);
                return m;
            }
            n = (int)pre + m + (o->type == DMP_PROXY_ARRAY);
            if ((size_t)n < size && o->type == DMP_PROXY_ARRAY)
                strcat(buf, ")");
            break;
        }
        case DMP_PROXY_VALUE: {
            char v[128];
            dmp_value_repr(o->value, v, sizeof v);
            n = snprintf(buf, size, "Value('%c', %s)", o->typecode, v);
            break;
        }
        case DMP_PROXY_NAMESPACE: {
            size_t off = (size_t)snprintf(buf, size, "Namespace(");
            for (size_t i = 0; i < dmp_value_len(o->map); i++) {
                const char *k = dmp_value_str(dmp_map_key_at(o->map, i), NULL);
                off += (size_t)snprintf(off < size ? buf + off : NULL,
                                        off < size ? size - off : 0, "%s%s=",
                                        i ? ", " : "", k ? k : "?");
                int m = dmp_value_repr(dmp_map_item_at(o->map, i),
                                       off < size ? buf + off : NULL,
                                       off < size ? size - off : 0);
                off += m > 0 ? (size_t)m : 0;
            }
            off += (size_t)snprintf(off < size ? buf + off : NULL,
                                    off < size ? size - off : 0, ")");
            n = (int)off;
            break;
        }
        default: {
            static const char *names[] = {
                [DMP_PROXY_LOCK] = "Lock", [DMP_PROXY_RLOCK] = "RLock",
                [DMP_PROXY_SEMAPHORE] = "Semaphore",
                [DMP_PROXY_BOUNDED_SEMAPHORE] = "BoundedSemaphore",
                [DMP_PROXY_CONDITION] = "Condition",
                [DMP_PROXY_EVENT] = "Event", [DMP_PROXY_BARRIER] = "Barrier",
                [DMP_PROXY_QUEUE] = "Queue"};
            s_obj_t *l = s_lock_of(o);
            if (s_is_sem(o))
                n = snprintf(buf, size, "<%s(value=%lld)>", names[o->type],
                             (long long)o->count);
            else if (l && s_is_lock(l))
                n = snprintf(buf, size, "<%s(%s)>", names[o->type],
                             l->holder ? "locked" : "unlocked");
            else if (o->type == DMP_PROXY_EVENT)
                n = snprintf(buf, size, "<Event(%s)>",
                             o->flag ? "set" : "unset");
            else if (o->type == DMP_PROXY_BARRIER)
                n = snprintf(buf, size, "<Barrier(parties=%lld, waiting=%lld)>",
                             (long long)o->parties, (long long)o->waiting);
            else
                n = snprintf(buf, size, "<Queue(qsize=%zu)>", o->vec.n);
            break;
        }
        }
        if (n < 0) {
            dmp__free(buf);
            return n;
        }
        if ((size_t)n < size) {
            *res = dmp_str(buf);
            dmp__free(buf);
            return *res ? 0 : -ENOMEM;
        }
        size = (size_t)n + 1;
    }
    dmp__free(buf);
    return -ENOMEM;
}

/* ---- operations on objects -------------------------------------------- */

/* Type each operation needs (0: any). */
static bool
s_op_fits(int op, const s_obj_t *o)
{
    dmp_proxy_type_t t = o->type;
    if (op >= DMP__MOP_D_GET && op <= DMP__MOP_D_COPY)
        return t == DMP_PROXY_DICT;
    if (op >= DMP__MOP_L_APPEND && op <= DMP__MOP_L_COPY)
        return t == DMP_PROXY_LIST;
    switch (op) {
    case DMP__MOP_V_GET: case DMP__MOP_V_SET:
        return t == DMP_PROXY_VALUE;
    case DMP__MOP_A_LEN: case DMP__MOP_A_GET: case DMP__MOP_A_SET:
    case DMP__MOP_A_TOLIST:
        return t == DMP_PROXY_ARRAY;
    case DMP__MOP_N_GET: case DMP__MOP_N_SET: case DMP__MOP_N_DEL:
        return t == DMP_PROXY_NAMESPACE;
    case DMP__MOP_ACQUIRE: case DMP__MOP_RELEASE:
        return s_is_lock(o) || s_is_sem(o) || t == DMP_PROXY_CONDITION;
    case DMP__MOP_SEM_VALUE:
        return s_is_sem(o);
    case DMP__MOP_C_WAIT: case DMP__MOP_C_NOTIFY:
        return t == DMP_PROXY_CONDITION;
    case DMP__MOP_E_SET: case DMP__MOP_E_CLEAR: case DMP__MOP_E_IS_SET:
    case DMP__MOP_E_WAIT:
        return t == DMP_PROXY_EVENT;
    case DMP__MOP_B_WAIT: case DMP__MOP_B_RESET: case DMP__MOP_B_ABORT:
    case DMP__MOP_B_STATE:
        return t == DMP_PROXY_BARRIER;
    case DMP__MOP_Q_PUT: case DMP__MOP_Q_GET: case DMP__MOP_Q_QSIZE:
    case DMP__MOP_Q_TASK_DONE: case DMP__MOP_Q_JOIN:
        return t == DMP_PROXY_QUEUE;
    case DMP__MOP_REPR:
        return true;
    default:
        return false;
    }
}

/* Does one operation. Returns its code; *res a new result (or NULL);
 * *parked true when it waits here (the reply comes later). */
static int
s_op(const s_req_t *r, s_obj_t *o, dmp_value_t **res, bool *parked)
{
    const dmp_value_t *a0 = s_arg(r, 0), *a1 = s_arg(r, 1);
    int64_t i64 = 0, j64 = 0;
    size_t idx = 0, lo = 0, hi = 0;
    int rc = 0;
    if (!s_op_fits(r->op, o))
        return s_errf(-EINVAL, "operation %d does not apply to this object",
                      r->op);
    switch (r->op) {
    /* dict */
    case DMP__MOP_D_GET:
    case DMP__MOP_D_GET_DEFAULT: {
        const dmp_value_t *item = a0 ? dmp_map_get(o->map, a0) : NULL;
        if (!item && r->op == DMP__MOP_D_GET)
            return s_errf(-ENOENT, "KeyError");
        *res = item ? dmp_value_copy(item) : a1 ? dmp_value_copy(a1)
                                                 : dmp_none();
        return *res ? 0 : -ENOMEM;
    }
    case DMP__MOP_D_SET:
        if (!a0 || !a1)
            return s_errf(-EINVAL, "key and item expected");
        rc = dmp_map_set(o->map, dmp_value_copy(a0), dmp_value_copy(a1));
        return rc == -EINVAL ? s_errf(rc, "unhashable key") : rc;
    case DMP__MOP_D_DEL:
    case DMP__MOP_D_POP:
        if (!a0)
            return s_errf(-EINVAL, "a key is expected");
        if (r->op == DMP__MOP_D_POP) {
            const dmp_value_t *item = dmp_map_get(o->map, a0);
            if (!item) {
                if (r->n_args < 2)
                    return s_errf(-ENOENT, "KeyError");
                *res = dmp_value_copy(a1);
                return *res ? 0 : -ENOMEM;
            }
            *res = dmp_value_copy(item);
            if (!*res)
                return -ENOMEM;
        }
        rc = dmp_map_del(o->map, a0);
        return rc == -ENOENT ? s_errf(rc, "KeyError") : rc;
    case DMP__MOP_D_CONTAINS:
        *res = dmp_bool(a0 && dmp_map_get(o->map, a0) != NULL);
        return *res ? 0 : -ENOMEM;
    case DMP__MOP_D_LEN:
        *res = dmp_int((int64_t)dmp_value_len(o->map));
        return *res ? 0 : -ENOMEM;
    case DMP__MOP_D_KEYS:
    case DMP__MOP_D_VALUES:
    case DMP__MOP_D_ITEMS: {
        dmp_value_t *l = dmp_list();
        for (size_t i = 0; l && i < dmp_value_len(o->map); i++) {
            dmp_value_t *k = dmp_value_copy(dmp_map_key_at(o->map, i));
            dmp_value_t *v = dmp_value_copy(dmp_map_item_at(o->map, i));
            dmp_value_t *e = r->op == DMP__MOP_D_KEYS ? k
                             : r->op == DMP__MOP_D_VALUES ? v
                             : dmp_list_of(2, k, v);
            if (r->op == DMP__MOP_D_KEYS)
                dmp_value_destroy(&v);
            else if (r->op == DMP__MOP_D_VALUES)
                dmp_value_destroy(&k);
            if (dmp_list_append(l, e))
                dmp_value_destroy(&l);
        }
        *res = l;
        return l ? 0 : -ENOMEM;
    }
    case DMP__MOP_D_UPDATE:
        if (!a0 || dmp_value_type(a0) != DMP_VALUE_MAP)
            return s_errf(-EINVAL, "a dict is expected");
        for (size_t i = 0; rc == 0 && i < dmp_value_len(a0); i++)
            rc = dmp_map_set(o->map, dmp_value_copy(dmp_map_key_at(a0, i)),
                             dmp_value_copy(dmp_map_item_at(a0, i)));
        return rc;
    case DMP__MOP_D_CLEAR: {
        dmp_value_t *m = dmp_map();
        if (!m)
            return -ENOMEM;
        dmp_value_destroy(&o->map);
        o->map = m;
        return 0;
    }
    case DMP__MOP_D_COPY:
        *res = dmp_value_copy(o->map);
        return *res ? 0 : -ENOMEM;
    /* list */
    case DMP__MOP_L_APPEND:
        if (!a0)
            return s_errf(-EINVAL, "an item is expected");
        return s_vec_insert(&o->vec, o->vec.n, dmp_value_copy(a0));
    case DMP__MOP_L_EXTEND:
        if (!a0 || dmp_value_type(a0) != DMP_VALUE_LIST)
            return s_errf(-EINVAL, "a list is expected");
        for (size_t i = 0; rc == 0 && i < dmp_value_len(a0); i++)
            rc = s_vec_insert(&o->vec, o->vec.n,
                              dmp_value_copy(dmp_list_get(a0, (int64_t)i)));
        return rc;
    case DMP__MOP_L_INSERT:
        if (s_arg_int(r, 0, &i64) || !a1)
            return s_errf(-EINVAL, "an index and an item are expected");
        s_slice(i64, i64, o->vec.n, &lo, &hi); /* insert clamps */
        return s_vec_insert(&o->vec, lo, dmp_value_copy(a1));
    case DMP__MOP_L_GET:
    case DMP__MOP_A_GET:
        if (s_arg_int(r, 0, &i64) || (rc = s_index(i64, o->vec.n, &idx)))
            return rc ? rc : -EINVAL;
        *res = dmp_value_copy(o->vec.items[idx]);
        return *res ? 0 : -ENOMEM;
    case DMP__MOP_L_SET:
    case DMP__MOP_A_SET: {
        if (s_arg_int(r, 0, &i64) || !a1)
            return s_errf(-EINVAL, "an index and an item are expected");
        if ((rc = s_index(i64, o->vec.n, &idx)))
            return rc;
        dmp_value_t *item = NULL;
        rc = o->typecode ? s_typed(o->typecode, a1, &item)
                         : ((item = dmp_value_copy(a1)) ? 0 : -ENOMEM);
        if (rc)
            return rc;
        dmp_value_destroy(&o->vec.items[idx]);
        o->vec.items[idx] = item;
        return 0;
    }
    case DMP__MOP_L_DEL:
    case DMP__MOP_L_POP:
        if (s_arg_int(r, 0, &i64) || (rc = s_index(i64, o->vec.n, &idx)))
            return rc ? rc : -EINVAL;
        if (r->op == DMP__MOP_L_POP) {
            *res = o->vec.items[idx];
            o->vec.items[idx] = NULL;
        }
        s_vec_erase(&o->vec, idx, idx + 1);
        return 0;
    case DMP__MOP_L_GET_SLICE:
    case DMP__MOP_L_DEL_SLICE:
    case DMP__MOP_L_SET_SLICE:
        if (s_arg_int(r, 0, &i64) || s_arg_int(r, 1, &j64))
            return -EINVAL;
        s_slice(i64, j64, o->vec.n, &lo, &hi);
        if (r->op == DMP__MOP_L_GET_SLICE) {
            *res = s_vec_list(&o->vec, lo, hi);
            return *res ? 0 : -ENOMEM;
        }
        if (r->op == DMP__MOP_L_SET_SLICE) {
            const dmp_value_t *src = s_arg(r, 2);
            if (!src || dmp_value_type(src) != DMP_VALUE_LIST)
                return s_errf(-EINVAL, "a list is expected");
            size_t n = dmp_value_len(src);
            if (s_vec_reserve(&o->vec, n))
                return -ENOMEM;
            dmp_value_t *copy = dmp_value_copy(src); /* src may alias */
            if (!copy)
                return -ENOMEM;
            s_vec_erase(&o->vec, lo, hi);
            for (size_t i = 0; rc == 0 && i < n; i++)
                rc = s_vec_insert(&o->vec, lo + i, dmp_value_copy(
                                      dmp_list_get(copy, (int64_t)i)));
            dmp_value_destroy(&copy);
            return rc;
        }
        s_vec_erase(&o->vec, lo, hi);
        return 0;
    case DMP__MOP_L_LEN:
    case DMP__MOP_A_LEN:
        *res = dmp_int((int64_t)o->vec.n);
        return *res ? 0 : -ENOMEM;
    case DMP__MOP_L_INDEX:
    case DMP__MOP_L_COUNT:
    case DMP__MOP_L_REMOVE: {
        if (!a0)
            return -EINVAL;
        int64_t count = 0;
        for (size_t i = 0; i < o->vec.n; i++) {
            if (!dmp_value_equal(o->vec.items[i], a0))
                continue;
            if (r->op == DMP__MOP_L_INDEX) {
                *res = dmp_int((int64_t)i);
                return *res ? 0 : -ENOMEM;
            }
            if (r->op == DMP__MOP_L_REMOVE) {
                s_vec_erase(&o->vec, i, i + 1);
                return 0;
            }
            count++;
        }
        if (r->op != DMP__MOP_L_COUNT)
            return s_errf(-ENOENT, "ValueError: item not in list");
        *res = dmp_int(count);
        return *res ? 0 : -ENOMEM;
    }
    case DMP__MOP_L_SORT: {
        int64_t reverse = 0;
        s_arg_int(r, 0, &reverse);
        s_tagged_t *t = dmp__malloc((o->vec.n + 1) * sizeof *t);
        if (!t)
            return -ENOMEM;
        for (size_t i = 0; i < o->vec.n; i++)
            t[i] = (s_tagged_t){o->vec.items[i], i};
        s_cmp_err = 0;
        s_cmp_reverse = reverse != 0;
        qsort(t, o->vec.n, sizeof *t, s_tagged_cmp);
        if (!s_cmp_err)
            for (size_t i = 0; i < o->vec.n; i++)
                o->vec.items[i] = t[i].v;
        dmp__free(t);
        return s_cmp_err ? s_errf(-EINVAL, "TypeError: items do not "
                                  "compare") : 0;
    }
    case DMP__MOP_L_COPY:
    case DMP__MOP_A_TOLIST:
        *res = s_vec_list(&o->vec, 0, o->vec.n);
        return *res ? 0 : -ENOMEM;
    /* Value, Namespace */
    case DMP__MOP_V_GET:
        *res = dmp_value_copy(o->value);
        return *res ? 0 : -ENOMEM;
    case DMP__MOP_V_SET: {
        dmp_value_t *v = NULL;
        if (!a0)
            return -EINVAL;
        if ((rc = s_typed(o->typecode, a0, &v)))
            return rc;
        dmp_value_destroy(&o->value);
        o->value = v;
        return 0;
    }
    case DMP__MOP_N_GET: {
        const dmp_value_t *item = a0 ? dmp_map_get(o->map, a0) : NULL;
        if (!item)
            return s_errf(-ENOENT, "AttributeError");
        *res = dmp_value_copy(item);
        return *res ? 0 : -ENOMEM;
    }
    case DMP__MOP_N_SET:
        if (!a0 || !a1 || dmp_value_type(a0) != DMP_VALUE_STR)
            return -EINVAL;
        return dmp_map_set(o->map, dmp_value_copy(a0), dmp_value_copy(a1));
    case DMP__MOP_N_DEL:
        rc = a0 ? dmp_map_del(o->map, a0) : -EINVAL;
        return rc == -ENOENT ? s_errf(rc, "AttributeError") : rc;
    /* locks, semaphores */
    case DMP__MOP_ACQUIRE: {
        s_obj_t *l = s_lock_of(o);
        if (!l)
            return -EINVAL;
        rc = s_try_acquire(l, r->client, 1);
        if (rc != -EAGAIN)
            return rc;
        if (r->timeout <= 0)
            return -ETIMEDOUT;
        *parked = true;
        return s_park(r->client, r->seq, o, r->op, r->timeout, NULL);
    }
    case DMP__MOP_RELEASE: {
        s_obj_t *l = s_lock_of(o);
        if (!l)
            return -EINVAL;
        if ((rc = s_release(l, r->client)) == 0)
            s_wake(l);
        return rc;
    }
    case DMP__MOP_SEM_VALUE:
        *res = dmp_int(o->count);
        return *res ? 0 : -ENOMEM;
    /* condition */
    case DMP__MOP_C_WAIT: {
        s_obj_t *l = s_lock_of(o);
        if (!l || l->holder != r->client)
            return s_errf(-EPERM, "cannot wait on an un-acquired "
                          "condition");
        s_park_t *p;
        if ((rc = s_park(r->client, r->seq, o, r->op,
                         r->timeout > 0 ? r->timeout : 0, &p)))
            return rc;
        p->depth = l->depth > 0 ? l->depth : 1;
        l->holder = 0;
        l->depth = 0;
        *parked = true;
        s_wake(l);
        return 0;
    }
    case DMP__MOP_C_NOTIFY: {
        s_obj_t *l = s_lock_of(o);
        if (!l || l->holder != r->client)
            return s_errf(-EPERM, "cannot notify on an un-acquired "
                          "condition");
        if (s_arg_int(r, 0, &i64))
            return -EINVAL;
        for (s_park_t *p = S.parks; p && i64 > 0; p = p->next)
            if (p->obj == o->id && p->op == DMP__MOP_C_WAIT &&
                p->stage == 0) {
                p->stage = 1;
                p->result = 0;
                p->deadline = INFINITY;
                i64--;
            }
        return 0; /* they take the lock when the notifier releases it */
    }
    /* event */
    case DMP__MOP_E_SET:
        o->flag = true;
        s_wake(o);
        return 0;
    case DMP__MOP_E_CLEAR:
        o->flag = false;
        return 0;
    case DMP__MOP_E_IS_SET:
        *res = dmp_bool(o->flag);
        return *res ? 0 : -ENOMEM;
    case DMP__MOP_E_WAIT:
        if (o->flag)
            return 0;
        if (r->timeout <= 0)
            return -ETIMEDOUT;
        *parked = true;
        return s_park(r->client, r->seq, o, r->op, r->timeout, NULL);
    /* barrier */
    case DMP__MOP_B_WAIT: {
        if (o->broken)
            return s_errf(DMP_EBROKEN, "the barrier is broken");
        int64_t index = o->waiting++;
        if (o->waiting == o->parties) {
            o->waiting = 0;
            o->generation++;
            s_wake(o); /* the others pass */
            *res = dmp_int(index);
            return *res ? 0 : -ENOMEM;
        }
        if (r->timeout <= 0) {
            o->broken = true;
            o->waiting--;
            s_wake(o);
            return -ETIMEDOUT;
        }
        s_park_t *p;
        if ((rc = s_park(r->client, r->seq, o, r->op, r->timeout, &p))) {
            o->waiting--;
            return rc;
        }
        p->index = index;
        p->generation = o->generation;
        *parked = true;
        return 0;
    }
    case DMP__MOP_B_RESET:
    case DMP__MOP_B_ABORT:
        if (o->waiting > 0 || r->op == DMP__MOP_B_ABORT) {
            o->broken = true;
            s_wake(o); /* waiters of this generation: DMP_EBROKEN */
        }
        if (r->op == DMP__MOP_B_RESET) {
            o->generation++;
            o->waiting = 0;
            o->broken = false;
        }
        return 0;
    case DMP__MOP_B_STATE:
        *res = dmp_list_of(3, dmp_int(o->parties), dmp_int(o->waiting),
                           dmp_bool(o->broken));
        return *res ? 0 : -ENOMEM;
    /* queue */
    case DMP__MOP_Q_PUT:
        if (!a0)
            return -EINVAL;
        if (o->maxsize > 0 && (int64_t)o->vec.n >= o->maxsize) {
            s_park_t *p;
            if (r->timeout <= 0)
                return DMP_EFULL;
            if ((rc = s_park(r->client, r->seq, o, r->op, r->timeout, &p)))
                return rc;
            if (!(p->item = dmp_value_copy(a0))) {
                s_unpark(p);
                return -ENOMEM;
            }
            *parked = true;
            return 0;
        }
        if ((rc = s_vec_insert(&o->vec, o->vec.n, dmp_value_copy(a0))))
            return rc;
        o->unfinished++;
        s_wake(o);
        return 0;
    case DMP__MOP_Q_GET:
        if (o->vec.n == 0) {
            if (r->timeout <= 0)
                return DMP_EEMPTY;
            *parked = true;
            return s_park(r->client, r->seq, o, r->op, r->timeout, NULL);
        }
        *res = o->vec.items[0];
        o->vec.items[0] = NULL;
        s_vec_erase(&o->vec, 0, 1);
        s_wake(o);
        return 0;
    case DMP__MOP_Q_QSIZE:
        *res = dmp_list_of(2, dmp_int((int64_t)o->vec.n), dmp_int(o->maxsize));
        return *res ? 0 : -ENOMEM;
    case DMP__MOP_Q_TASK_DONE:
        if (o->unfinished <= 0)
            return s_errf(-EINVAL, "task_done() called too many times");
        if (--o->unfinished == 0)
            s_wake(o);
        return 0;
    case DMP__MOP_Q_JOIN:
        if (o->unfinished == 0)
            return 0;
        if (r->timeout <= 0)
            return -ETIMEDOUT;
        *parked = true;
        return s_park(r->client, r->seq, o, r->op, r->timeout, NULL);
    case DMP__MOP_REPR:
        return s_repr(o, res);
    default:
        return s_errf(-EINVAL, "unknown operation %d", r->op);
    }
}

/* ---- one request ----------------------------------------------------- */

static void
s_hello(const s_req_t *r)
{
    /* args: reply queue, pid, start time, lease (0: same host) */
    dmp_queue_t *q = NULL;
    int64_t pid = 0, start = 0;
    if (r->n_args < 3 || dmp_queue_from_value(r->args[0], &q) != 0 ||
        s_arg_int(r, 1, &pid) || s_arg_int(r, 2, &start)) {
        dmp_queue_destroy(&q);
        dmp__log(DMP_LOG_WARN, "manager '%s': malformed hello", S.name);
        return;
    }
    s_client_t *c = dmp__calloc(1, sizeof *c);
    if (!c) {
        dmp_queue_destroy(&q);
        return;
    }
    c->id = ++S.next_client;
    c->reply = q;
    c->pid = (pid_t)pid;
    c->start = (uint64_t)start;
    /* Its reply ring maps here: it runs on this host, and its pid tells
     * whether it lives. Elsewhere it renews a lease. */
    c->same_host = dmp__queue_is_mapped(q) && s_pid_alive(c->pid, c->start);
    c->lease_until = dmp__now() + DMP__MANAGER_LEASE;
    c->next = S.clients;
    S.clients = c;
    dmp_value_t *res = dmp_list_of(2, dmp_int((int64_t)c->id),
                                   dmp_int((int64_t)S.incarnation));
    S.err[0] = '\0';
    s_reply(c, r->seq, res ? 0 : -ENOMEM, res);
    dmp_value_destroy(&res);
}

static void
s_request(const uint8_t *buf, size_t len)
{
    s_req_t r;
    if (s_req_decode(buf, len, &r) != 0) {
        dmp__log(DMP_LOG_WARN, "manager '%s': dropped a malformed request",
                 S.name);
        return;
    }
    S.err[0] = '\0';
    if (r.op == DMP__MOP_HELLO) {
        s_hello(&r);
        s_req_clear(&r);
        return;
    }
    s_client_t *c = s_client(r.client);
    if (!c) {
        /* A client we declared dead (its lease ran out) or of another
         * incarnation: it must say hello again. Nowhere to reply. */
        s_req_clear(&r);
        return;
    }
    c->lease_until = dmp__now() + DMP__MANAGER_LEASE;
    dmp_value_t *res = NULL;
    bool parked = false;
    int rc = 0;
    switch (r.op) {
    case DMP__MOP_KEEPALIVE:
        s_req_clear(&r);
        return; /* one way */
    case DMP__MOP_BYE:
        s_client_gone(c, "left");
        s_req_clear(&r);
        return;
    case DMP__MOP_SHUTDOWN:
        S.stop = true;
        break;
    case DMP__MOP_CREATE:
        rc = s_create(&r, &res);
        break;
    case DMP__MOP_LOOKUP: {
        const char *name = dmp_value_str(s_arg(&r, 0), NULL);
        s_obj_t *o = name ? s_obj_by_name(name) : NULL;
        if (!o)
            rc = s_errf(-ENOENT, "no object named '%s' in manager '%s'",
                        name ? name : "", S.name);
        else if (!(res = dmp_list_of(3, dmp_int((int64_t)o->id),
                                     dmp_int(o->type),
                                     dmp_int(o->typecode))))
            rc = -ENOMEM;
        break;
    }
    default: {
        s_obj_t *o = s_obj(r.obj);
        rc = o ? s_op(&r, o, &res, &parked)
               : s_errf(-EINVAL, "no object %llu in manager '%s'",
                        (unsigned long long)r.obj, S.name);
        break;
    }
    }
    if (!parked || rc)
        s_reply(c, r.seq, rc, res);
    dmp_value_destroy(&res);
    s_req_clear(&r);
}

/* ---- the server process -------------------------------------------------- */

static int
s_serve(const dmp_value_t *args)
{
    const char *name = dmp_value_str(dmp_list_get(args, 0), NULL);
    dmp_queue_t *boot = NULL;
    if (!name || !dmp__name_valid(name) ||
        dmp_queue_from_value(dmp_list_get(args, 1), &boot) != 0) {
        fprintf(stderr, "dmp: manager: bad arguments\n");
        return 2;
    }
    dmp__strlcpy(S.name, name, sizeof S.name);
    struct sigaction sa = {.sa_handler = s_on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    while (S.incarnation == 0)
        S.incarnation = ((uint64_t)rand() << 32) ^ (uint64_t)getpid() ^
                        (uint64_t)(dmp__now() * 1e9);
    int rc = dmp_queue_new(NULL, &S.requests);
    dmp_value_t *addr = NULL;
    if (rc == 0) {
        const char *proc = getenv("DMP_PROC");
        addr = dmp_list_of(7, dmp_str(S.name), dmp_str(dmp_current_node()),
                           dmp_int(getpid()),
                           dmp_int((int64_t)dmp__proc_starttime(getpid())),
                           dmp_int((int64_t)S.incarnation),
                           dmp_queue_value(S.requests),
                           dmp_int(proc ? strtoll(proc, NULL, 10) : 0));
        rc = addr ? 0 : -ENOMEM;
    }
    if (rc == 0)
        rc = dmp__manager_register(S.name, addr);
    /* The starter gets our address, or why we could not serve. */
    dmp_value_t *hello = rc == 0 ? dmp_list_of(2, dmp_int(0), dmp_value_copy(addr))
                                 : dmp_list_of(2, dmp_int(rc), dmp_str(S.err));
    dmp_queue_put(boot, hello, 5.0);
    dmp_value_destroy(&hello);
    dmp_queue_destroy(&boot);
    if (rc) {
        dmp_value_destroy(&addr);
        dmp_queue_destroy(&S.requests);
        return 1;
    }
    double next_scan = dmp__now() + S_SCAN;
    while (!S.stop && !s_signalled) {
        double now = dmp__now();
        double wait = S_IDLE_WAIT;
        double d = s_next_deadline() - now;
        if (d < wait)
            wait = d > 0 ? d : 0;
        if (S.clients && next_scan - now < wait)
            wait = next_scan - now > 0 ? next_scan - now : 0;
        void *buf = NULL;
        size_t len = 0;
        int grc = dmp_queue_get_bytes(S.requests, &buf, &len, wait);
        if (grc == 0) {
            s_request(buf, len);
            dmp__free(buf);
        } else if (grc != DMP_EEMPTY) {
            dmp__log(DMP_LOG_ERROR, "manager '%s': request queue failed: %s",
                     S.name, dmp_strerror(grc));
            break;
        }
        now = dmp__now();
        if (S.parks && s_next_deadline() <= now)
            s_expire(now);
        if (now >= next_scan) {
            s_scan_clients(now);
            next_scan = now + S_SCAN;
        }
    }
    dmp__manager_unregister(S.name);
    while (S.parks)
        s_unpark(S.parks);
    while (S.clients) {
        s_client_t *c = S.clients;
        S.clients = c->next;
        dmp_queue_destroy(&c->reply);
        dmp__free(c);
    }
    for (size_t i = 0; i < S.n_objs; i++) {
        s_obj_t *o = S.objs[i];
        dmp_value_destroy(&o->map);
        dmp_value_destroy(&o->value);
        s_vec_free(&o->vec);
        dmp__free(o->holds);
        dmp__free(o);
    }
    dmp__free(S.objs);
    dmp_value_destroy(&addr);
    dmp_queue_destroy(&S.requests);
    return 0;
}

int
dmp__manager_serve(const dmp_value_t *args)
{
    return s_serve(args);
}
