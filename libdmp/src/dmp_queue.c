/*
 * dmp_queue.c - Python's Queue, JoinableQueue and SimpleQueue.
 *
 * A queue is an object of the node this process talks to: that agent
 * creates its shared-memory ring and owns it. A process on the owner's
 * host maps the ring and puts and gets directly (no agent hop: DESIGN.md
 * "data plane"); a process elsewhere sends each operation to the owner,
 * which does it on the same ring, so every item still goes to exactly one
 * getter. A blocked remote get waits at the owner, never by polling.
 *
 * Remote puts to a queue without maxsize are pipelined (dmp_feeder.c), as
 * Python's feeder thread does. An error of a batch (the owner gone)
 * comes back from the next call on the handle; every other call first
 * waits until what was put is at the owner, so a put followed by qsize or
 * get on the same handle sees its items. Bounded queues put one item per
 * round trip: Full needs the owner's answer.
 *
 * A handle travels as a value: 'Q', the owner's name, the object id, the
 * ring's name, maxsize and item_max. The process that created a queue
 * removes it on dmp_queue_destroy, or at dmp_fini if it did not.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

struct dmp_queue {
    struct dmp_queue *next;    /* in s_owned when this process created it */
    char node[DMP__NAME_MAX];  /* owner */
    uint64_t id;               /* object id at the owner */
    char ring_name[DMP__RING_NAME_MAX];
    int64_t maxsize;
    uint64_t item_max;         /* known here, so that a pipelined put is
                                * refused at once, not at the next call */
    dmp__ring_t *ring;         /* mapped when the owner is on this host */
    bool owner;                /* we created it: destroy removes it */
    bool closed;               /* close(): no more puts from us */
    bool attached;             /* the feeder is set up, q is in s_open */
    dmp__feeder_t feeder;      /* remote puts to an unbounded queue */
    void *undecoded;           /* an item taken, then not decoded for lack
                                * of memory: the next get returns it */
    size_t undecoded_len;
};

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static dmp_queue_t *s_owned;
/* Every open handle, so that dmp_fini can deliver what was put through
 * handles a child opened and did not destroy (as Python's feeder thread
 * is joined at exit). */
static dmp_queue_t *s_open[1024];

static dmp_queue_t *
s_alloc(void)
{
    return dmp__calloc(1, sizeof(dmp_queue_t));
}

static void
s_free(dmp_queue_t *q)
{
    if (q->attached) {
        pthread_mutex_lock(&s_lock);
        for (size_t i = 0; i < sizeof s_open / sizeof s_open[0]; i++)
            if (s_open[i] == q)
                s_open[i] = NULL;
        pthread_mutex_unlock(&s_lock);
        dmp__feeder_fini(&q->feeder);
    }
    dmp__free(q->undecoded);
    dmp__free(q);
}

/* ---- handles ---------------------------------------------------------- */

static int
s_encode_handle(const dmp_queue_t *q, uint8_t *buf, size_t size)
{
    int n = dmp__obj_handle_put(buf, size, 'Q', q->node, q->id);
    if (n < 0)
        return n;
    int m = dmp__obj_ring_name_put(buf + n, size - (size_t)n, q->ring_name);
    if (m < 0 || (size_t)(n + m) + 16 > size)
        return -ENAMETOOLONG;
    uint8_t *p = buf + n + m;
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)((uint64_t)q->maxsize >> (8 * i));
        p[8 + i] = (uint8_t)(q->item_max >> (8 * i));
    }
    return n + m + 16;
}

static int
s_decode_handle(const uint8_t *buf, size_t len, dmp_queue_t *q)
{
    int n = dmp__obj_handle_get(buf, len, 'Q', q->node, &q->id);
    if (n < 0)
        return n;
    int m = dmp__obj_ring_name_get(buf + n, len - (size_t)n, q->ring_name);
    if (m < 0 || (size_t)(n + m) + 16 != len)
        return -EINVAL;
    const uint8_t *p = buf + n + m;
    uint64_t maxsize = 0, item_max = 0;
    for (int i = 0; i < 8; i++) {
        maxsize |= (uint64_t)p[i] << (8 * i);
        item_max |= (uint64_t)p[8 + i] << (8 * i);
    }
    q->maxsize = (int64_t)maxsize;
    q->item_max = item_max;
    return 0;
}

/* Maps the ring when its owner is the agent of this host (or may be: then
 * the ring opens only if it is). Else every operation goes through the
 * owner. */
static void
s_attach(dmp_queue_t *q)
{
    dmp__feeder_init(&q->feeder, q->node, q->id, 0, false);
    q->attached = true;
    pthread_mutex_lock(&s_lock);
    for (size_t i = 0; i < sizeof s_open / sizeof s_open[0]; i++)
        if (!s_open[i]) {
            s_open[i] = q;
            break;
        }
    pthread_mutex_unlock(&s_lock);
    if (dmp__obj_is_local(q->node) || dmp__obj_may_map(q->node))
        dmp__ring_open(q->ring_name, &q->ring);
}

/* ---- remote operations ------------------------------------------------- */

/* Waits until every pipelined put reached the owner; its error, if any. */
static int
s_flush(dmp_queue_t *q)
{
    return q->attached ? dmp__feeder_flush(&q->feeder) : 0;
}

/* One RingOp at the owner, after the pipelined puts got there. */
static int
s_remote(dmp_queue_t *q, uint32_t op, const void *data, size_t len,
         double timeout, uint8_t **out_p, size_t *out_len, int64_t *count)
{
    int rc = s_flush(q);
    if (rc)
        return rc;
    return dmp__obj_ring_op(q->node, q->id, 0, op, data, len, timeout, out_p,
                            out_len, count);
}

/* ---- the API ----------------------------------------------------------- */

int
dmp_queue_new(const dmp_queue_opts_t *opts, dmp_queue_t **q_p)
{
    dmp_queue_opts_t none = {0};
    if (!opts)
        opts = &none;
    dmp_queue_t *q = s_alloc();
    if (!q)
        return -ENOMEM;
    dmp__msg_t params = {0};
    params.u.obj_new.type = DMP__OBJ_QUEUE;
    params.u.obj_new.maxsize = opts->maxsize > 0 ? opts->maxsize : 0;
    params.u.obj_new.item_max = opts->item_max;
    params.u.obj_new.capacity = opts->capacity ? opts->capacity : 4u << 20;
    char rings[DMP__OBJ_RINGS_MAX][DMP__RING_NAME_MAX];
    size_t n_rings;
    int rc = dmp__obj_new(&params, q->node, &q->id, rings, &n_rings);
    if (rc) {
        s_free(q);
        return rc;
    }
    dmp__strlcpy(q->ring_name, rings[0], sizeof q->ring_name);
    q->maxsize = params.u.obj_new.maxsize;
    q->item_max = opts->item_max ? opts->item_max : DMP__ITEM_MAX_DEFAULT;
    q->owner = true;
    s_attach(q);
    pthread_mutex_lock(&s_lock);
    q->next = s_owned;
    s_owned = q;
    pthread_mutex_unlock(&s_lock);
    *q_p = q;
    return 0;
}

int
dmp_queue_put_bytes(dmp_queue_t *q, const void *data, size_t len,
                    double timeout)
{
    if (q->closed)
        return -EBADF;
    if (len > q->item_max)
        return -EMSGSIZE;
    if (q->ring)
        return dmp__ring_put(q->ring, data, len, timeout);
    if (q->maxsize <= 0 && len <= DMP__FEEDER_ITEM_MAX)
        return dmp__feeder_put(&q->feeder, data, len);
    /* A bounded queue's put waits for room; a large item goes alone (in
     * parts when a frame cannot carry it), after the pipelined ones. */
    return s_remote(q, DMP__RING_PUT, data, len, timeout, NULL, NULL, NULL);
}

int
dmp_queue_get_bytes(dmp_queue_t *q, void **data_p, size_t *len_p,
                    double timeout)
{
    if (q->undecoded) {
        *data_p = q->undecoded;
        *len_p = q->undecoded_len;
        q->undecoded = NULL;
        return 0;
    }
    if (q->ring)
        return dmp__ring_get(q->ring, (uint8_t **)data_p, len_p, timeout);
    return s_remote(q, DMP__RING_GET, NULL, 0, timeout, (uint8_t **)data_p,
                    len_p, NULL);
}

int
dmp_queue_put(dmp_queue_t *q, const dmp_value_t *item, double timeout)
{
    uint8_t *buf;
    size_t len;
    int rc = dmp_value_encode(item, &buf, &len);
    if (rc)
        return rc;
    rc = dmp_queue_put_bytes(q, buf, len, timeout);
    dmp__free(buf);
    return rc;
}

int
dmp_queue_get(dmp_queue_t *q, dmp_value_t **item_p, double timeout)
{
    void *buf;
    size_t len;
    int rc = dmp_queue_get_bytes(q, &buf, &len, timeout);
    if (rc)
        return rc;
    rc = dmp_value_decode(buf, len, item_p);
    if (rc == -ENOMEM) { /* taken from the queue: not lost, kept here */
        q->undecoded = buf;
        q->undecoded_len = len;
        return rc;
    }
    dmp__free(buf);
    return rc;
}

int64_t
dmp_queue_qsize(dmp_queue_t *q)
{
    if (q->ring)
        return dmp__ring_count(q->ring);
    int64_t count = 0;
    int rc = s_remote(q, DMP__RING_COUNT, NULL, 0, 0, NULL, NULL, &count);
    return rc ? rc : count;
}

int
dmp_queue_empty(dmp_queue_t *q)
{
    int64_t n = dmp_queue_qsize(q);
    return n < 0 ? (int)n : n == 0;
}

int
dmp_queue_full(dmp_queue_t *q)
{
    if (q->maxsize <= 0)
        return 0;
    int64_t n = dmp_queue_qsize(q);
    return n < 0 ? (int)n : n >= q->maxsize;
}

int
dmp_queue_task_done(dmp_queue_t *q)
{
    if (q->ring)
        return dmp__ring_task_done(q->ring);
    return s_remote(q, DMP__RING_TASK_DONE, NULL, 0, 0, NULL, NULL, NULL);
}

int
dmp_queue_join(dmp_queue_t *q, double timeout)
{
    if (q->ring)
        return dmp__ring_join(q->ring, timeout);
    return s_remote(q, DMP__RING_JOIN, NULL, 0, timeout, NULL, NULL, NULL);
}

int
dmp_queue_close(dmp_queue_t *q)
{
    q->closed = true;
    return q->ring ? 0 : s_flush(q);
}

void
dmp_queue_destroy(dmp_queue_t **q_p)
{
    if (!q_p || !*q_p)
        return;
    dmp_queue_t *q = *q_p;
    if (s_flush(q) != 0) /* what was put reaches the owner before we go */
        dmp__log(DMP_LOG_WARN, "items put to a queue of node '%s' may be "
                 "lost: the owner refused a batch", q->node);
    if (q->owner) {
        pthread_mutex_lock(&s_lock);
        for (dmp_queue_t **pp = &s_owned; *pp; pp = &(*pp)->next)
            if (*pp == q) {
                *pp = q->next;
                break;
            }
        pthread_mutex_unlock(&s_lock);
        dmp__obj_release(q->node, q->id);
    }
    dmp__ring_close(&q->ring);
    s_free(q);
    *q_p = NULL;
}

dmp_value_t *
dmp_queue_value(const dmp_queue_t *q)
{
    uint8_t buf[256];
    int len = s_encode_handle(q, buf, sizeof buf);
    return len > 0 ? dmp__handle_value(buf, (size_t)len) : NULL;
}

int
dmp_queue_from_value(const dmp_value_t *v, dmp_queue_t **q_p)
{
    size_t len;
    const uint8_t *data = dmp__handle_data(v, &len);
    if (!data)
        return -EINVAL;
    int rc = dmp__init_lazy();
    if (rc)
        return rc;
    dmp_queue_t *q = s_alloc();
    if (!q)
        return -ENOMEM;
    if ((rc = s_decode_handle(data, len, q)) != 0) {
        s_free(q);
        return rc;
    }
    s_attach(q);
    *q_p = q;
    return 0;
}

bool
dmp__queue_is_mapped(const dmp_queue_t *q)
{
    return q->ring != NULL;
}

void
dmp__queue_atexit(void)
{
    for (size_t i = 0; i < sizeof s_open / sizeof s_open[0]; i++) {
        pthread_mutex_lock(&s_lock);
        dmp_queue_t *q = s_open[i];
        pthread_mutex_unlock(&s_lock);
        if (q && s_flush(q) != 0)
            dmp__log(DMP_LOG_WARN, "items put to a queue of node '%s' may "
                     "be lost: the connection failed", q->node);
    }
    for (;;) {
        pthread_mutex_lock(&s_lock);
        dmp_queue_t *q = s_owned;
        pthread_mutex_unlock(&s_lock);
        if (!q)
            return;
        dmp_queue_destroy(&q);
    }
}
