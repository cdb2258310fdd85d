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
    struct dmp_conn *next;     /* in s_owned when this process created it */
    char node[DMP__NAME_MAX];  /* owner */
    uint64_t id;
    char names[DMP__OBJ_RINGS_MAX][DMP__RING_NAME_MAX];
    dmp__ring_t *rings[DMP__OBJ_RINGS_MAX]; /* mapped on the owner's host */
    uint8_t end;               /* 0: a, 1: b */
    bool duplex;
    bool owner;                /* created here: the last end destroyed
                                * removes the pipe */
    bool closed;
    struct dmp_conn *peer;     /* the other end, while both are ours */
};

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static dmp_conn_t *s_owned;

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
    size_t nl = strlen(c->node), need = 1 + 1 + nl + 8 + 2;
    for (size_t i = 0; i < s_n_rings(c); i++)
        need += 1 + strlen(c->names[i]);
    if (need > size)
        return -ENAMETOOLONG;
    uint8_t *p = buf;
    *p++ = 'P';
    *p++ = (uint8_t)nl;
    memcpy(p, c->node, nl);
    p += nl;
    for (int i = 0; i < 8; i++)
        *p++ = (uint8_t)(c->id >> (8 * i));
    *p++ = c->end;
    *p++ = c->duplex;
    for (size_t i = 0; i < s_n_rings(c); i++) {
        size_t rl = strlen(c->names[i]);
        *p++ = (uint8_t)rl;
        memcpy(p, c->names[i], rl);
        p += rl;
    }
    return (int)need;
}

static int
s_decode_handle(const uint8_t *p, size_t len, dmp_conn_t *c)
{
    const uint8_t *end = p + len;
    if (len < 2 || *p++ != 'P')
        return -EINVAL;
    size_t nl = *p++;
    if (nl == 0 || nl >= DMP__NAME_MAX || (size_t)(end - p) < nl + 10)
        return -EINVAL;
    memcpy(c->node, p, nl);
    c->node[nl] = '\0';
    p += nl;
    for (int i = 0; i < 8; i++)
        c->id |= (uint64_t)*p++ << (8 * i);
    c->end = *p++;
    c->duplex = *p++ != 0;
    if (c->end > 1 || !dmp__name_valid(c->node))
        return -EINVAL;
    for (size_t i = 0; i < s_n_rings(c); i++) {
        if (p >= end)
            return -EINVAL;
        size_t rl = *p++;
        if (rl == 0 || rl >= DMP__RING_NAME_MAX || (size_t)(end - p) < rl)
            return -EINVAL;
        memcpy(c->names[i], p, rl);
        c->names[i][rl] = '\0';
        p += rl;
        if (strncmp(c->names[i], "/dmp-", 5) != 0 ||
            !dmp__name_valid(c->names[i] + 1))
            return -EINVAL;
    }
    return p == end ? 0 : -EINVAL;
}

static int s_remote(dmp_conn_t *c, int ring, uint32_t op, const void *data,
                    size_t len, double timeout, uint8_t **out_p,
                    size_t *out_len);

static bool
s_owner_is_local(const dmp_conn_t *c)
{
    dmp_client_t *cl = dmp_default_client();
    return cl && dmp__client_is_local(cl) &&
           strcmp(c->node, dmp_client_node(cl)) == 0;
}

/* Maps the rings (owner on this host) and holds the send ring. */
static int
s_attach(dmp_conn_t *c)
{
    if (!s_owner_is_local(c)) {
        /* Through the owner, which holds the sending end in our name. */
        int send = s_send_ring(c);
        return send >= 0 ? s_remote(c, send, DMP__RING_HOLD_WRITER, NULL, 0,
                                    0, NULL, NULL)
                         : 0;
    }
    for (size_t i = 0; i < s_n_rings(c); i++) {
        int rc = dmp__ring_open(c->names[i], &c->rings[i]);
        if (rc)
            return rc;
    }
    int send = s_send_ring(c);
    return send >= 0 ? dmp__ring_hold_writer(c->rings[send]) : 0;
}

static int
s_remote(dmp_conn_t *c, int ring, uint32_t op, const void *data, size_t len,
         double timeout, uint8_t **out_p, size_t *out_len)
{
    dmp_client_t *cl = dmp_default_client();
    if (!cl)
        return -EBADF;
    if (len > DMP__WIRE_MAX - 4096)
        return -EMSGSIZE;
    dmp__msg_t req = {.kind = DMP__MSG_RING_OP}, rep;
    req.u.ring_op.obj = c->id;
    req.u.ring_op.ring = (uint32_t)ring;
    req.u.ring_op.op = op;
    req.u.ring_op.data = (uint8_t *)data;
    req.u.ring_op.len = len;
    bool forever = isinf(timeout) || timeout > 86400.0 * 24;
    req.u.ring_op.timeout = forever ? -1 : (timeout > 0 ? timeout : 0);
    double wait = forever ? 86400.0 * 365 : req.u.ring_op.timeout + 10.0;
    const char *node = strcmp(c->node, dmp_client_node(cl)) == 0 ? NULL
                                                                  : c->node;
    int rc = dmp__client_request(cl, node, &req, &rep, DMP__MSG_RING_REPLY,
                                 wait);
    if (rc)
        return rc;
    if (out_p) {
        *out_p = rep.u.ring_reply.data;
        *out_len = rep.u.ring_reply.len;
        rep.u.ring_reply.data = NULL;
    }
    dmp__msg_clear(&rep);
    return 0;
}

int
dmp_pipe(int duplex, dmp_conn_t **a_p, dmp_conn_t **b_p)
{
    int rc = dmp__init_lazy();
    if (rc)
        return rc;
    dmp_conn_t *a = dmp__calloc(1, sizeof *a);
    dmp_conn_t *b = dmp__calloc(1, sizeof *b);
    if (!a || !b) {
        dmp__free(a);
        dmp__free(b);
        return -ENOMEM;
    }
    dmp__msg_t req = {.kind = DMP__MSG_OBJ_NEW}, rep;
    req.u.obj_new.type = DMP__OBJ_PIPE;
    req.u.obj_new.duplex = duplex != 0;
    req.u.obj_new.capacity = 1u << 20;
    rc = dmp__client_request(dmp_default_client(), NULL, &req, &rep,
                             DMP__MSG_OBJ_INFO, 0);
    if (rc) {
        dmp__free(a);
        dmp__free(b);
        return rc;
    }
    for (int e = 0; e < 2; e++) {
        dmp_conn_t *c = e ? b : a;
        dmp__strlcpy(c->node, rep.u.obj_info.node, sizeof c->node);
        c->id = rep.u.obj_info.id;
        c->end = (uint8_t)e;
        c->duplex = duplex != 0;
        c->owner = true;
        for (size_t i = 0; i < rep.u.obj_info.n_rings; i++)
            dmp__strlcpy(c->names[i], rep.u.obj_info.rings[i],
                         DMP__RING_NAME_MAX);
    }
    dmp__msg_clear(&rep);
    a->peer = b;
    b->peer = a;
    if ((rc = s_attach(a)) != 0 || (rc = s_attach(b)) != 0) {
        dmp_conn_destroy(&a);
        dmp_conn_destroy(&b);
        return rc;
    }
    pthread_mutex_lock(&s_lock);
    a->next = b;
    b->next = s_owned;
    s_owned = a;
    pthread_mutex_unlock(&s_lock);
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
    return s_remote(c, ring, DMP__RING_PUT, data, size, DMP_FOREVER, NULL,
                    NULL);
}

int
dmp_conn_recv_bytes(dmp_conn_t *c, void **data_p, size_t *len_p)
{
    int ring = s_recv_ring(c);
    if (c->closed)
        return -EBADF;
    if (ring < 0)
        return -EINVAL;
    int rc = c->rings[ring]
                 ? dmp__ring_get(c->rings[ring], (uint8_t **)data_p, len_p,
                                 DMP_FOREVER)
                 : s_remote(c, ring, DMP__RING_GET, NULL, 0, DMP_FOREVER,
                            (uint8_t **)data_p, len_p);
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
    if (!c->rings[ring]) {
        /* Remote: ask the owner how many items wait (no waiting there). */
        dmp_client_t *cl = dmp_default_client();
        if (!cl)
            return -EBADF;
        double deadline = dmp__now() + (timeout > 0 ? timeout : 0);
        for (;;) {
            dmp__msg_t req = {.kind = DMP__MSG_RING_OP}, rep;
            req.u.ring_op.obj = c->id;
            req.u.ring_op.ring = (uint32_t)ring;
            req.u.ring_op.op = DMP__RING_COUNT;
            const char *node =
                strcmp(c->node, dmp_client_node(cl)) == 0 ? NULL : c->node;
            int rc = dmp__client_request(cl, node, &req, &rep,
                                         DMP__MSG_RING_REPLY, 10.0);
            if (rc)
                return rc;
            int64_t n = rep.u.ring_reply.count;
            dmp__msg_clear(&rep);
            if (n != 0 || dmp__now() >= deadline)
                return n != 0;
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL); /* remote poll: a bounded re-ask */
        }
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
    return s_remote(c, ring, DMP__RING_CLOSE_WRITER, NULL, 0, 0, NULL, NULL);
}

static void
s_release(dmp_conn_t *c)
{
    dmp_client_t *cl = dmp_default_client();
    if (!cl)
        return;
    dmp__msg_t req = {.kind = DMP__MSG_OBJ_RELEASE}, rep;
    req.u.obj_release.id = c->id;
    const char *node = strcmp(c->node, dmp_client_node(cl)) == 0 ? NULL
                                                                  : c->node;
    if (dmp__client_request(cl, node, &req, &rep, DMP__MSG_OK, 5.0) == 0)
        dmp__msg_clear(&rep);
}

void
dmp_conn_destroy(dmp_conn_t **c_p)
{
    if (!c_p || !*c_p)
        return;
    dmp_conn_t *c = *c_p;
    dmp_conn_close(c);
    bool last = true;
    if (c->owner) {
        pthread_mutex_lock(&s_lock);
        for (dmp_conn_t **pp = &s_owned; *pp; pp = &(*pp)->next)
            if (*pp == c) {
                *pp = c->next;
                break;
            }
        if (c->peer) {
            c->peer->peer = NULL;
            last = false; /* the other end still uses the pipe */
        }
        pthread_mutex_unlock(&s_lock);
        if (last)
            s_release(c);
    }
    for (size_t i = 0; i < DMP__OBJ_RINGS_MAX; i++)
        dmp__ring_close(&c->rings[i]);
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
    *c_p = c;
    return 0;
}

void
dmp__pipe_atexit(void)
{
    for (;;) {
        pthread_mutex_lock(&s_lock);
        dmp_conn_t *c = s_owned;
        pthread_mutex_unlock(&s_lock);
        if (!c)
            return;
        dmp_conn_destroy(&c);
    }
}
