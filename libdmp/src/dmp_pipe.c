/*
 * dmp_pipe.c - Python's Pipe(duplex) and its Connection ends.
 *
 * A pipe is an object of the node this process talks to, with one
 * shared-memory ring per direction: ring 0 carries b -> a, ring 1 (duplex
 * only) a -> b. As for queues, an end on the owner's host uses the rings
 * directly and an end elsewhere goes through the owner.
 *
 * EOF as in Python: every process holding an end that can send is
 * registered as a writer of that end's ring (with its pid, so a process
 * that dies stops counting); recv on an empty ring with no live writer
 * left returns DMP_EEOF. The creator holds both ends until it closes them,
 * as a Python parent does, so a child's exit alone gives EOF only once the
 * parent closed its copy of the child's end.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

struct dmp_conn {
    struct dmp_conn *next;     /* in s_held: every end this process holds */
    char node[DMP__NAME_MAX];  /* owner */
    uint64_t id;
    char names[DMP__OBJ_RINGS_MAX][DMP__RING_NAME_MAX];
    dmp__ring_t *rings[DMP__OBJ_RINGS_MAX]; /* mapped on the owner's host */
    uint8_t end;               /* 0: a, 1: b */
    bool duplex;
    bool owner;                /* created here: the last end destroyed
                                * removes the pipe */
    bool closed;
    bool feeding;              /* sends go through the feeder below */
    bool owner_lost;           /* the last operation at the owner gave
                                * DMP_ENODE: sends wait for its answer */
    dmp__feeder_t feeder;      /* remote sends, pipelined (dmp_feeder.c) */
    struct dmp_conn *peer;     /* the other end, while both are ours */
    void *undecoded;           /* a message received, then not decoded for
                                * lack of memory: the next recv returns it */
    size_t undecoded_len;
};

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
/* Every end this process holds, created or opened from a value: dmp_fini
 * closes and frees what is left, as a process's exit closes Python's
 * connections, so a peer sees EOF and nothing leaks. */
static dmp_conn_t *s_held;

static void
s_hold(dmp_conn_t *c)
{
    pthread_mutex_lock(&s_lock);
    c->next = s_held;
    s_held = c;
    pthread_mutex_unlock(&s_lock);
}

/* Which ring an end sends into and receives from (-1: cannot). */
static int
s_send_ring(const dmp_conn_t *c)
{
    if (c->duplex)
        return c->end == 0 ? 1 : 0;
    return c->end == 1 ? 0 : -1;
}

static int
s_recv_ring(const dmp_conn_t *c)
{
    if (c->duplex)
        return c->end == 0 ? 0 : 1;
    return c->end == 0 ? 0 : -1;
}

static size_t
s_n_rings(const dmp_conn_t *c)
{
    return c->duplex ? 2 : 1;
}

/* ---- handles: 'P', node, id, end, duplex, ring names ------------------ */

static int
s_encode_handle(const dmp_conn_t *c, uint8_t *buf, size_t size)
{
    int n = dmp__obj_handle_put(buf, size, 'P', c->node, c->id);
    if (n < 0 || (size_t)n + 2 > size)
        return -ENAMETOOLONG;
    buf[n++] = c->end;
    buf[n++] = c->duplex;
    for (size_t i = 0; i < s_n_rings(c); i++) {
        int m = dmp__obj_ring_name_put(buf + n, size - (size_t)n, c->names[i]);
        if (m < 0)
            return m;
        n += m;
    }
    return n;
}

static int
s_decode_handle(const uint8_t *buf, size_t len, dmp_conn_t *c)
{
    int n = dmp__obj_handle_get(buf, len, 'P', c->node, &c->id);
    if (n < 0 || (size_t)n + 2 > len)
        return -EINVAL;
    c->end = buf[n++];
    c->duplex = buf[n++] != 0;
    if (c->end > 1)
        return -EINVAL;
    for (size_t i = 0; i < s_n_rings(c); i++) {
        int m = dmp__obj_ring_name_get(buf + n, len - (size_t)n, c->names[i]);
        if (m < 0)
            return m;
        n += m;
    }
    return (size_t)n == len ? 0 : -EINVAL;
}

/* An operation done by the owner of the rings (not mapped here). */
static int
s_owner_op(dmp_conn_t *c, uint32_t ring, uint32_t op, const void *data,
           size_t len, double timeout, uint8_t **out_p, size_t *out_len,
           int64_t *count)
{
    int rc = dmp__obj_ring_op(c->node, c->id, ring, op, data, len, timeout,
                              out_p, out_len, count);
    c->owner_lost = rc == DMP_ENODE;
    return rc;
}

/* Whether the rings of an owner that may be on this host open here
 * (dmp__obj_may_map): all of them, or none is kept. */
static bool
s_open_rings(dmp_conn_t *c)
{
    if (!dmp__obj_may_map(c->node))
        return false;
    for (size_t i = 0; i < s_n_rings(c); i++)
        if (dmp__ring_open(c->names[i], &c->rings[i]) != 0) {
            for (size_t k = 0; k < i; k++)
                dmp__ring_close(&c->rings[k]);
            return false;
        }
    return true;
}

/* Maps the rings (owner on this host) and holds the send ring; through
 * the owner otherwise, which then holds the sending end in our name. */
static int
s_attach(dmp_conn_t *c)
{
    int send = s_send_ring(c);
    if (!dmp__obj_is_local(c->node) && !s_open_rings(c)) {
        if (send < 0)
            return 0;
        dmp__feeder_init(&c->feeder, c->node, c->id, (uint32_t)send, true);
        c->feeding = true;
        return s_owner_op(c, (uint32_t)send,
                                DMP__RING_HOLD_WRITER, NULL, 0, 0, NULL, NULL,
                                NULL);
    }
    for (size_t i = 0; i < s_n_rings(c); i++) {
        int rc = c->rings[i] ? 0 : dmp__ring_open(c->names[i], &c->rings[i]);
        if (rc)
            return rc;
    }
    return send >= 0 ? dmp__ring_hold_writer(c->rings[send]) : 0;
}

int
dmp_pipe(int duplex, dmp_conn_t **a_p, dmp_conn_t **b_p)
{
    dmp_conn_t *a = dmp__calloc(1, sizeof *a);
    dmp_conn_t *b = dmp__calloc(1, sizeof *b);
    if (!a || !b) {
        dmp__free(a);
        dmp__free(b);
        return -ENOMEM;
    }
    dmp__msg_t params = {0};
    params.u.obj_new.type = DMP__OBJ_PIPE;
    params.u.obj_new.duplex = duplex != 0;
    /* 8 MiB per direction, sparse: pages are used only as data passes.
     * Messages up to a quarter of it (2 MiB) stay inline; beyond that each
     * one costs a segment of its own, whose fresh pages fault on both
     * sides (1 MiB messages went 3x faster than Python with a 1 MiB ring,
     * 7x with this one). */
    params.u.obj_new.capacity = 8u << 20;
    size_t n_rings;
    int rc = dmp__obj_new(&params, a->node, &a->id, a->names, &n_rings);
    if (rc) {
        dmp__free(a);
        dmp__free(b);
        return rc;
    }
    *b = *a;
    a->end = 0;
    b->end = 1;
    a->duplex = b->duplex = duplex != 0;
    a->owner = b->owner = true;
    a->peer = b;
    b->peer = a;
    if ((rc = s_attach(a)) != 0 || (rc = s_attach(b)) != 0) {
        dmp_conn_destroy(&a);
        dmp_conn_destroy(&b);
        return rc;
    }
    s_hold(a);
    s_hold(b);
    *a_p = a;
    *b_p = b;
    return 0;
}

int
dmp_conn_send_bytes(dmp_conn_t *c, const void *buf, size_t offset,
                    size_t size)
{
    int ring = s_send_ring(c);
    if (c->closed)
        return -EBADF;
    if (ring < 0)
        return -EINVAL; /* the receive-only end of Pipe(False) */
    const uint8_t *data = (const uint8_t *)buf + offset;
    if (c->rings[ring])
        return dmp__ring_put(c->rings[ring], data, size, DMP_FOREVER);
    /* Remote: pipelined, as a send into a socket buffer returns before
     * the peer reads. A message too big for a batch goes alone, after
     * the ones before it, and so does any while the owner seems lost:
     * its answer tells whether it is back (else DMP_ENODE now). */
    int rc;
    if (size <= DMP__FEEDER_ITEM_MAX && !c->owner_lost) {
        rc = dmp__feeder_put(&c->feeder, data, size);
        c->owner_lost = rc == DMP_ENODE;
        return rc;
    }
    rc = dmp__feeder_flush(&c->feeder);
    return rc ? rc
              : s_owner_op(c, (uint32_t)ring,
                                 DMP__RING_PUT, data, size, DMP_FOREVER, NULL,
                                 NULL, NULL);
}

int
dmp_conn_recv_bytes(dmp_conn_t *c, void **data_p, size_t *len_p)
{
    int ring = s_recv_ring(c);
    if (c->closed)
        return -EBADF;
    if (ring < 0)
        return -EINVAL;
    if (c->undecoded) {
        *data_p = c->undecoded;
        *len_p = c->undecoded_len;
        c->undecoded = NULL;
        return 0;
    }
    int rc = c->rings[ring]
                 ? dmp__ring_get(c->rings[ring], (uint8_t **)data_p, len_p,
                                 DMP_FOREVER)
                 : s_owner_op(c, (uint32_t)ring,
                                    DMP__RING_GET, NULL, 0, DMP_FOREVER,
                                    (uint8_t **)data_p, len_p, NULL);
    return rc == -EBADF ? DMP_EEOF : rc;
}

int
dmp_conn_send(dmp_conn_t *c, const dmp_value_t *obj)
{
    uint8_t *buf;
    size_t len;
    int rc = dmp_value_encode(obj, &buf, &len);
    if (rc)
        return rc;
    rc = dmp_conn_send_bytes(c, buf, 0, len);
    dmp__free(buf);
    return rc;
}

int
dmp_conn_recv(dmp_conn_t *c, dmp_value_t **obj_p)
{
    void *buf;
    size_t len;
    int rc = dmp_conn_recv_bytes(c, &buf, &len);
    if (rc)
        return rc;
    rc = dmp_value_decode(buf, len, obj_p);
    if (rc == -ENOMEM) { /* taken from the pipe: not lost, kept here */
        c->undecoded = buf;
        c->undecoded_len = len;
        return rc;
    }
    dmp__free(buf);
    return rc;
}

int
dmp_conn_poll(dmp_conn_t *c, double timeout)
{
    int ring = s_recv_ring(c);
    if (c->closed)
        return -EBADF;
    if (ring < 0)
        return -EINVAL;
    if (c->undecoded)
        return 1;
    if (!c->rings[ring]) {
        /* Remote: the owner answers when a recv would not block (data or
         * EOF) or the time is up; it waits parked, as a get does. */
        int64_t ready = 0;
        int rc = s_owner_op(c, (uint32_t)ring,
                                  DMP__RING_POLL, NULL, 0, timeout, NULL,
                                  NULL, &ready);
        return rc ? rc : ready != 0;
    }
    return dmp__ring_poll(c->rings[ring], timeout);
}

int
dmp_conn_close(dmp_conn_t *c)
{
    if (c->closed)
        return 0;
    c->closed = true;
    int ring = s_send_ring(c);
    if (ring < 0)
        return 0;
    if (c->rings[ring])
        return dmp__ring_close_writer(c->rings[ring]);
    int frc = dmp__feeder_flush(&c->feeder); /* EOF after what was sent */
    int rc = s_owner_op(c, (uint32_t)ring,
                              DMP__RING_CLOSE_WRITER, NULL, 0, 0, NULL, NULL,
                              NULL);
    return frc ? frc : rc;
}

void
dmp_conn_destroy(dmp_conn_t **c_p)
{
    if (!c_p || !*c_p)
        return;
    dmp_conn_t *c = *c_p;
    dmp_conn_close(c);
    bool last = true;
    pthread_mutex_lock(&s_lock);
    for (dmp_conn_t **pp = &s_held; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    pthread_mutex_unlock(&s_lock);
    if (c->owner) {
        pthread_mutex_lock(&s_lock);
        if (c->peer) {
            c->peer->peer = NULL;
            last = false; /* the other end still uses the pipe */
        }
        pthread_mutex_unlock(&s_lock);
        if (last)
            dmp__obj_release(c->node, c->id);
    }
    for (size_t i = 0; i < DMP__OBJ_RINGS_MAX; i++)
        dmp__ring_close(&c->rings[i]);
    if (c->feeding)
        dmp__feeder_fini(&c->feeder);
    dmp__free(c->undecoded);
    dmp__free(c);
    *c_p = NULL;
}

dmp_value_t *
dmp_conn_value(const dmp_conn_t *c)
{
    uint8_t buf[512];
    int len = s_encode_handle(c, buf, sizeof buf);
    return len > 0 ? dmp__handle_value(buf, (size_t)len) : NULL;
}

int
dmp_conn_from_value(const dmp_value_t *v, dmp_conn_t **c_p)
{
    size_t len;
    const uint8_t *data = dmp__handle_data(v, &len);
    if (!data)
        return -EINVAL;
    int rc = dmp__init_lazy();
    if (rc)
        return rc;
    dmp_conn_t *c = dmp__calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    if ((rc = s_decode_handle(data, len, c)) != 0 ||
        (rc = s_attach(c)) != 0) {
        for (size_t i = 0; i < DMP__OBJ_RINGS_MAX; i++)
            dmp__ring_close(&c->rings[i]);
        dmp__free(c);
        return rc;
    }
    s_hold(c);
    *c_p = c;
    return 0;
}

void
dmp__pipe_atexit(void)
{
    for (;;) {
        pthread_mutex_lock(&s_lock);
        dmp_conn_t *c = s_held;
        pthread_mutex_unlock(&s_lock);
        if (!c)
            return;
        dmp_conn_destroy(&c);
    }
}

/* The child a spawn started: where it runs, its pid. */
typedef struct {
    const char *node;
    pid_t pid;
} s_child_t;

/* One handle of the child's args: a pipe end's sending ring is held in
 * the child's name, by us on its host when we map the ring there, else
 * by the child's node (which tells the owner if the child dies). */
static void
s_hold_one(const uint8_t *data, size_t len, void *arg)
{
    const s_child_t *child = arg;
    dmp_conn_t c = {0};
    if (s_decode_handle(data, len, &c) != 0)
        return; /* not a pipe end */
    int send = s_send_ring(&c);
    if (send < 0)
        return; /* the receive-only end holds nothing */
    if (strcmp(c.node, child->node) == 0 &&
        (dmp__obj_is_local(c.node) || dmp__obj_may_map(c.node))) {
        dmp__ring_t *ring = NULL;
        if (dmp__ring_open(c.names[send], &ring) == 0) {
            dmp__ring_hold_writer_for(ring, child->pid);
            dmp__ring_close(&ring);
        }
        return;
    }
    int rc = dmp__obj_hold_writer_for(child->node, c.node, c.id,
                                      (uint32_t)send, child->pid);
    if (rc)
        dmp__log(DMP_LOG_DEBUG, "no hold for child %d on node '%s' of a "
                 "pipe of node '%s': %s", (int)child->pid, child->node,
                 c.node, dmp_strerror(rc));
}

void
dmp__pipe_hold_for_child(const dmp_value_t *args, const char *node,
                         pid_t pid)
{
    s_child_t child = {node, pid};
    dmp__handles_each(args, s_hold_one, &child);
}
