/*
 * node_shared.c - Values and Arrays owned by this node.
 *
 * Each object is one shared-memory segment (dmp_segment.c) created here,
 * named like a queue's ring after this agent's incarnation and the object
 * id, so that a killed agent's segments are removed by its successor
 * (node_objects.c). Processes on this host map it and never talk to us
 * for data; a process on another host sends SharedOps, which we do on the
 * same segment in its name: the holder (node, pid).
 *
 * The lock: a remote acquire takes the segment's lock in this agent's
 * name and keeps it until the holder releases it or its lease
 * (heartbeat x liveness, at least LEASE_MIN) runs out unrenewed; then the
 * next acquirer is told DMP_EOWNERDEAD, as after a local holder's death.
 * The loop never waits for the lock: it only tries it. An acquire that
 * must wait, or a read or write that needs the lock for a moment while
 * someone holds it, is parked; releases on this host poke our wake-up
 * FIFO while something is parked (dmp__seg_remote_wait), and we retry
 * parked operations then, when a remote holder releases, on timeouts, and
 * every heartbeat (a local holder that died wakes nobody).
 *
 * Lifetime: processes of this host holding a handle are in the segment's
 * table (by pid and start time); those elsewhere are records here, kept
 * while they renew (the hold's lease: two of the lock's) or until they
 * detach. An object nobody
 * holds any more, here or elsewhere, is removed: at once when the last
 * holder lets go, else at the next heartbeat once a holder died. A new
 * object gets GRACE to be held by its creator.
 */
#define _GNU_SOURCE
#include "node.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define SHARED_MAX 4096       /* objects at once */
#define PARKED_MAX 65536
#define LEASE_MIN 2.0         /* seconds: a remote lock holder's lease */
#define HOLD_LEASE_MIN 4.0    /* a remote handle's (at least 2 leases) */
#define GRACE 3.0             /* for the creator to hold a new object */
#define HOLDERS_MAX 65536     /* remote holders of one object: memory stays
                               * bounded whatever clients claim to be */

/* A process elsewhere that holds a handle (or will: HOLD_FOR). */
typedef struct node_shholder {
    struct node_shholder *next;
    char node[DMP__NAME_MAX];
    uint32_t pid;
    double until;               /* forgotten then, unless renewed */
} node_shholder_t;

struct node_shobj {
    struct node_shobj *next;
    uint64_t id;
    char name[DMP__RING_NAME_MAX];
    dmp__seg_t *seg;
    char typecode;
    size_t itemsize;
    uint64_t length;
    bool has_lock;
    double created;             /* monotonic */
    node_shholder_t *holders;   /* remote ones */
    node_shholder_t *locker;    /* we hold the lock in its name */
    double lock_until;          /* its lease */
    unsigned parked;            /* operations waiting for its lock */
};

struct node_shpark {
    struct node_shpark *next;
    node_sub_t from;
    uint64_t req_id;
    struct node_shobj *obj;
    uint32_t op;                /* acquire, read or write */
    char node[DMP__NAME_MAX];   /* the holder */
    uint32_t pid;
    uint64_t start;
    uint64_t count;
    uint8_t *data;              /* write: owned */
    size_t len;
    double deadline;            /* monotonic; INFINITY: none */
};

typedef __typeof__(((dmp__msg_t *)0)->u.shared_op) s_op_t;

static double
s_lease(const node_t *node)
{
    double lease = node->cfg.heartbeat * node->cfg.liveness;
    return lease > LEASE_MIN ? lease : LEASE_MIN;
}

static double
s_hold_lease(const node_t *node)
{
    /* A holder that cannot renew for this long is as good as dead, as
     * its node would be (heartbeat x liveness): the object it held may go
     * once nobody else holds it. A live one attaches again when it hears
     * back (then the object may be gone: -EBADF). */
    double lease = 2 * s_lease(node);
    return lease > HOLD_LEASE_MIN ? lease : HOLD_LEASE_MIN;
}

static struct node_shobj *
s_find(node_t *node, uint64_t id)
{
    for (struct node_shobj *o = node->shobjs; o; o = o->next)
        if (o->id == id)
            return o;
    return NULL;
}

static node_shholder_t *
s_holder(struct node_shobj *o, const char *name, uint32_t pid, bool create)
{
    unsigned n = 0;
    for (node_shholder_t *h = o->holders; h; h = h->next, n++)
        if (h->pid == pid && strcmp(h->node, name) == 0)
            return h;
    if (!create || n >= HOLDERS_MAX)
        return NULL;
    node_shholder_t *h = dmp__calloc(1, sizeof *h);
    if (h) {
        dmp__strlcpy(h->node, name, sizeof h->node);
        h->pid = pid;
        h->next = o->holders;
        o->holders = h;
    }
    return h;
}

static void
s_holder_drop(struct node_shobj *o, node_shholder_t *h)
{
    for (node_shholder_t **hp = &o->holders; *hp; hp = &(*hp)->next)
        if (*hp == h) {
            *hp = h->next;
            break;
        }
    if (o->locker == h)
        o->locker = NULL;
    dmp__free(h);
}

static void
s_reply(const node_sub_t *to, uint64_t id, int rc, const void *data,
        size_t len, double lease, bool owner_died)
{
    dmp__msg_t rep = {0};
    if (rc) {
        const char *why = rc == -EPERM
                              ? "this process does not hold the lock (its "
                                "lease ran out?)"
                          : rc == -EBADF ? "the Value or Array is gone"
                                         : dmp_strerror(rc);
        dmp__msg_error(&rep, id, rc, "%s", why);
    } else {
        rep.id = id;
        rep.version = DMP_PROTOCOL_VERSION;
        rep.kind = DMP__MSG_SHARED_REPLY;
        rep.u.shared_reply.data = (uint8_t *)data;
        rep.u.shared_reply.len = len;
        rep.u.shared_reply.lease = lease;
        rep.u.shared_reply.owner_died = owner_died;
    }
    node_send_to(to, &rep); /* borrowed data: no msg_clear */
}

/* ---- create and remove ----------------------------------------------- */

void
node_shared_new(node_t *node, const dmp__msg_t *req, dmp__msg_t *rep)
{
    unsigned n = 0;
    for (struct node_shobj *o = node->shobjs; o; o = o->next)
        n++;
    if (n >= SHARED_MAX) {
        dmp__msg_error(rep, req->id, -ENOSPC, "node '%s' owns %u Values and "
                       "Arrays already", node->cfg.name, n);
        return;
    }
    struct node_shobj *o = dmp__calloc(1, sizeof *o);
    if (!o) {
        dmp__msg_error(rep, req->id, -ENOMEM, "out of memory");
        return;
    }
    o->id = ++node->next_obj; /* shared with queues: names stay unique */
    o->typecode = req->u.shared_new.typecode;
    o->itemsize = dmp__typecode_size(o->typecode);
    o->length = req->u.shared_new.length;
    o->has_lock = req->u.shared_new.lock;
    o->created = dmp__now();
    snprintf(o->name, sizeof o->name, "/dmp-%s-%08llx-%llu-0",
             node->cfg.name,
             (unsigned long long)(node->incarnation & 0xffffffffu),
             (unsigned long long)o->id);
    int rc = dmp__seg_create(o->name, o->typecode, o->length, o->has_lock,
                             node->wake_path, &o->seg);
    if (rc) {
        warn_f("cannot create a Value or Array of %llu '%c': %s",
               (unsigned long long)o->length, o->typecode, dmp_strerror(rc));
        dmp__msg_error(rep, req->id, rc, "cannot create shared memory on "
                       "node '%s': %s", node->cfg.name, dmp_strerror(rc));
        dmp__free(o);
        return;
    }
    char shm[DMP__RING_NAME_MAX + 16]; /* jobs of job_user map it directly */
    snprintf(shm, sizeof shm, "/dev/shm%s", o->name);
    node_jail_share(shm, 0600, true);
    o->next = node->shobjs;
    node->shobjs = o;
    debug_f("created %s %llu of %llu '%c'", o->has_lock ? "Array" : "RawArray",
            (unsigned long long)o->id, (unsigned long long)o->length,
            o->typecode);
    rep->kind = DMP__MSG_OBJ_INFO;
    rep->u.obj_info.id = o->id;
    dmp__strlcpy(rep->u.obj_info.node, node->cfg.name, DMP__NAME_MAX);
    rep->u.obj_info.n_rings = 1;
    dmp__strlcpy(rep->u.obj_info.rings[0], o->name, DMP__RING_NAME_MAX);
}

static void
s_unpark(struct node_shpark **pp)
{
    struct node_shpark *p = *pp;
    *pp = p->next;
    p->obj->parked--;
    dmp__free(p->data);
    dmp__free(p);
}

static void
s_remove(node_t *node, struct node_shobj *o)
{
    for (struct node_shpark **pp = &node->shparked; *pp;) {
        if ((*pp)->obj == o) {
            s_reply(&(*pp)->from, (*pp)->req_id, -EBADF, NULL, 0, 0, false);
            s_unpark(pp);
        } else {
            pp = &(*pp)->next;
        }
    }
    for (struct node_shobj **op = &node->shobjs; *op; op = &(*op)->next)
        if (*op == o) {
            *op = o->next;
            break;
        }
    /* Processes of this host may still map it: leave it free. */
    if (o->locker)
        dmp__seg_unlock(o->seg);
    while (o->holders)
        s_holder_drop(o, o->holders);
    dmp__seg_close(&o->seg);
    dmp__seg_unlink(o->name);
    debug_f("removed Value or Array %llu", (unsigned long long)o->id);
    dmp__free(o);
}

/* Nobody holds it any more: no record of a process elsewhere, no live
 * process of this host in its table (past the creator's grace unless
 * `now`). */
static bool
s_unused(struct node_shobj *o, bool now)
{
    if (o->holders || o->parked)
        return false;
    if (!now && dmp__now() - o->created < GRACE)
        return false;
    return dmp__seg_sweep(o->seg) == 0; /* -EBUSY: next time */
}

/* ---- operations -------------------------------------------------------- */

/* Writes p's elements (little-endian on the wire) into the segment. */
static void
s_write(struct node_shobj *o, const struct node_shpark *p)
{
    uint8_t *base = (uint8_t *)dmp__seg_data(o->seg) + p->start * o->itemsize;
    memcpy(base, p->data, p->len);
    dmp__elem_from_le(o->typecode, base, p->len / o->itemsize);
}

/* Reads or writes the elements of p now (the lock, if needed, is ours).
 * Replies. */
static void
s_io(struct node_shpark *p)
{
    struct node_shobj *o = p->obj;
    uint8_t *base = (uint8_t *)dmp__seg_data(o->seg) + p->start * o->itemsize;
    if (p->op == DMP__SHARED_READ) {
        size_t bytes = (size_t)p->count * o->itemsize;
        uint8_t *out = dmp__malloc(bytes);
        if (!out) {
            s_reply(&p->from, p->req_id, -ENOMEM, NULL, 0, 0, false);
            return;
        }
        memcpy(out, base, bytes);
        dmp__elem_to_le(o->typecode, out, (size_t)p->count);
        s_reply(&p->from, p->req_id, 0, out, bytes, 0, false);
        dmp__free(out);
        return;
    }
    s_write(o, p);
    s_reply(&p->from, p->req_id, 0, NULL, 0, 0, false);
}

/* An acquire got the lock: it is the holder's until release or lease. */
static void
s_granted(node_t *node, struct node_shpark *p, bool owner_died)
{
    struct node_shobj *o = p->obj;
    node_shholder_t *h = s_holder(o, p->node, p->pid, true);
    if (!h) {
        dmp__seg_unlock(o->seg);
        s_reply(&p->from, p->req_id, -ENOMEM, NULL, 0, 0, false);
        return;
    }
    double now = dmp__now();
    if (h->until < now + s_hold_lease(node))
        h->until = now + s_hold_lease(node);
    o->locker = h;
    o->lock_until = now + s_lease(node);
    dmp__seg_remote_served(o->seg);
    /* A small object comes along: the holder reads it without asking. */
    uint8_t copy[DMP__SHARED_PREFETCH_MAX];
    size_t bytes = (size_t)o->length * o->itemsize;
    if (bytes > sizeof copy)
        bytes = 0;
    memcpy(copy, dmp__seg_data(o->seg), bytes);
    dmp__elem_to_le(o->typecode, copy, bytes / o->itemsize);
    s_reply(&p->from, p->req_id, 0, copy, bytes, s_lease(node), owner_died);
    debug_f("lock of %llu taken for %s:%u", (unsigned long long)o->id,
            p->node, p->pid);
}

/* Tries an acquire, or a read or write that needs the lock: 1 when it
 * must wait (park it), else 0 after replying. */
static int
s_try(node_t *node, struct node_shpark *p, bool may_wait)
{
    struct node_shobj *o = p->obj;
    bool acquire = p->op == DMP__SHARED_ACQUIRE;
    int rc = o->locker ? -EBUSY : dmp__seg_lock(o->seg, 0, acquire, false);
    if (rc == -EBUSY) {
        if (may_wait)
            return 1;
        s_reply(&p->from, p->req_id, -ETIMEDOUT, NULL, 0, 0, false);
        return 0;
    }
    if (rc && rc != DMP_EOWNERDEAD) {
        s_reply(&p->from, p->req_id, rc, NULL, 0, 0, false);
        return 0;
    }
    if (acquire) {
        s_granted(node, p, rc == DMP_EOWNERDEAD);
        return 0;
    }
    s_io(p);
    dmp__seg_unlock(o->seg);
    return 0;
}

static void
s_park(node_t *node, struct node_shpark *p)
{
    unsigned n = 0;
    for (struct node_shpark *q = node->shparked; q; q = q->next)
        n++;
    struct node_shpark *copy = n < PARKED_MAX ? dmp__malloc(sizeof *copy)
                                              : NULL;
    if (!copy) {
        dmp__free(p->data);
        s_reply(&p->from, p->req_id, -ENOMEM, NULL, 0, 0, false);
        return;
    }
    *copy = *p;
    copy->next = NULL;
    /* Oldest first: append, so that waiters are served in order. */
    struct node_shpark **tail = &node->shparked;
    while (*tail)
        tail = &(*tail)->next;
    *tail = copy;
    p->obj->parked++;
    dmp__seg_remote_wait(p->obj->seg, true);
}

/* Validates the range of a read or write; fills p's start and count. */
static int
s_range(const struct node_shobj *o, const s_op_t *op, struct node_shpark *p)
{
    uint64_t count = op->op == DMP__SHARED_READ ? op->count
                                                : op->len / o->itemsize;
    if (op->op != DMP__SHARED_READ && op->len % o->itemsize != 0)
        return -EINVAL;
    if (count == 0 || op->start >= o->length ||
        count > o->length - op->start ||
        count * o->itemsize > DMP__REMOTE_ITEM_MAX)
        return -EINVAL;
    p->start = op->start;
    p->count = count;
    return 0;
}

/* add: no lock; the delta is 8 little-endian bytes (int64, or a double for
 * f and d), and so is the new value in the reply. */
static void
s_add(struct node_shobj *o, const s_op_t *op, const node_sub_t *from,
      uint64_t id)
{
    if (op->start >= o->length || op->len != 8) {
        s_reply(from, id, -EINVAL, NULL, 0, 0, false);
        return;
    }
    uint64_t bits = 0;
    for (int b = 0; b < 8; b++)
        bits |= (uint64_t)op->data[b] << (8 * b);
    void *elem = (uint8_t *)dmp__seg_data(o->seg) + op->start * o->itemsize;
    if (dmp__typecode_is_float(o->typecode)) {
        double d, after;
        memcpy(&d, &bits, sizeof d);
        dmp__elem_add_double(o->typecode, elem, d, &after);
        memcpy(&bits, &after, sizeof bits);
    } else {
        int64_t after;
        dmp__elem_add_int(o->typecode, elem, (int64_t)bits, &after);
        bits = (uint64_t)after;
    }
    uint8_t out[8];
    for (int b = 0; b < 8; b++)
        out[b] = (uint8_t)(bits >> (8 * b));
    s_reply(from, id, 0, out, sizeof out, 0, false);
}

/* The holder let go of the lock (or its lease ran out: dead). */
static void
s_unlock(node_t *node, struct node_shobj *o, bool dead)
{
    if (!o->locker)
        return;
    if (dead) {
        warn_f("lease of %s:%u on the lock of Value or Array %llu ran out: "
               "released", o->locker->node, o->locker->pid,
               (unsigned long long)o->id);
        dmp__seg_unlock_dead(o->seg);
    } else {
        dmp__seg_unlock(o->seg);
    }
    o->locker = NULL;
    if (o->parked)
        node_shared_retry(node);
}

void
node_shared_op(node_t *node, const dmp__msg_t *req, const node_sub_t *from)
{
    const s_op_t *op = &req->u.shared_op;
    struct node_shobj *o = s_find(node, op->obj);
    if (!o) {
        s_reply(from, req->id, -EBADF, NULL, 0, 0, false);
        return;
    }
    double now = dmp__now();
    node_shholder_t *h = s_holder(o, op->holder_node, op->holder_pid, false);
    /* Any operation of a holder but a detach or a parent's hold_for shows
     * it alive: (re)attach it. */
    if (op->op != DMP__SHARED_DETACH && op->op != DMP__SHARED_HOLD_FOR) {
        if (!h && !(h = s_holder(o, op->holder_node, op->holder_pid, true))) {
            s_reply(from, req->id, -ENOMEM, NULL, 0, 0, false);
            return;
        }
        h->until = now + s_hold_lease(node);
    }
    struct node_shpark p = {.from = *from, .req_id = req->id, .obj = o,
                            .op = op->op, .pid = op->holder_pid,
                            .deadline = INFINITY};
    dmp__strlcpy(p.node, op->holder_node, sizeof p.node);
    int rc = 0;
    switch (op->op) {
    case DMP__SHARED_ATTACH:
        s_reply(from, req->id, 0, NULL, 0, s_lease(node), false);
        return;
    case DMP__SHARED_HOLD_FOR:
        /* Until the child attaches (its own record then) or the hold's
         * lease runs out; a child on this host holds it in the table. */
        if (!h && !(h = s_holder(o, op->holder_node, op->holder_pid, true))) {
            s_reply(from, req->id, -ENOMEM, NULL, 0, 0, false);
            return;
        }
        if (h->until < now + s_hold_lease(node))
            h->until = now + s_hold_lease(node);
        s_reply(from, req->id, 0, NULL, 0, s_lease(node), false);
        return;
    case DMP__SHARED_DETACH:
        if (h) {
            if (o->locker == h)
                s_unlock(node, o, false);
            s_holder_drop(o, h);
        }
        if (s_unused(o, true)) /* gone before the holder hears back */
            s_remove(node, o);
        s_reply(from, req->id, 0, NULL, 0, 0, false);
        return;
    case DMP__SHARED_RENEW:
        if (o->locker == h)
            o->lock_until = now + s_lease(node);
        rc = op->holding && o->locker != h ? -EPERM : 0;
        s_reply(from, req->id, rc, NULL, 0, s_lease(node), false);
        return;
    case DMP__SHARED_RELEASE:
        if (o->locker == h) {
            /* The holder's last writes come with its release. */
            if (op->len && (rc = s_range(o, op, &p)) == 0) {
                p.data = op->data;
                p.len = op->len;
                p.op = DMP__SHARED_WRITE;
                s_write(o, &p);
            }
            s_unlock(node, o, false);
        } else if (op->holding) {
            rc = -EPERM; /* its writes are void: the lock went to another */
        }
        s_reply(from, req->id, rc, NULL, 0, 0, false);
        return;
    case DMP__SHARED_ADD:
        s_add(o, op, from, req->id);
        return;
    case DMP__SHARED_ACQUIRE:
        if (!o->has_lock || o->locker == h) {
            s_reply(from, req->id, o->has_lock ? -EDEADLK : -EINVAL, NULL, 0,
                    0, false);
            return;
        }
        if (op->timeout > 0)
            p.deadline = now + op->timeout;
        else if (op->timeout == 0)
            p.deadline = now; /* one try */
        break;
    case DMP__SHARED_READ:
    case DMP__SHARED_WRITE:
        if ((rc = s_range(o, op, &p)) != 0 ||
            (op->holding && (!o->has_lock || o->locker != h))) {
            s_reply(from, req->id, rc ? rc : -EPERM, NULL, 0, 0, false);
            return;
        }
        if (op->op == DMP__SHARED_WRITE) {
            p.data = op->data; /* borrowed until parked */
            p.len = op->len;
        }
        if (!o->has_lock || op->holding) {
            s_io(&p);
            return;
        }
        break;
    default:
        s_reply(from, req->id, -EINVAL, NULL, 0, 0, false);
        return;
    }
    /* An acquire, or a read or write that needs the lock for a moment. */
    if (!s_try(node, &p, now < p.deadline))
        return;
    if (p.data) {
        uint8_t *own = dmp__malloc(p.len);
        if (!own) {
            s_reply(from, req->id, -ENOMEM, NULL, 0, 0, false);
            return;
        }
        memcpy(own, op->data, op->len);
        p.data = own;
    }
    s_park(node, &p);
}

void
node_shared_retry(node_t *node)
{
    double now = dmp__now();
    /* Re-armed before the tries: a release either lets a try succeed or
     * pokes the FIFO again (dmp_segment.c). */
    for (struct node_shobj *o = node->shobjs; o; o = o->next)
        if (o->parked)
            dmp__seg_remote_wait(o->seg, true);
    for (struct node_shpark **pp = &node->shparked; *pp;) {
        struct node_shpark *p = *pp;
        if (!s_try(node, p, now < p->deadline))
            s_unpark(pp);
        else
            pp = &p->next;
    }
    for (struct node_shobj *o = node->shobjs; o; o = o->next)
        if (!o->parked)
            dmp__seg_remote_wait(o->seg, false);
}

/* Leases of lock holders, and parked timeouts. */
static void
s_timers(node_t *node)
{
    double now = dmp__now();
    for (struct node_shobj *o = node->shobjs; o; o = o->next)
        if (o->locker && now >= o->lock_until)
            s_unlock(node, o, true);
    for (struct node_shpark *p = node->shparked; p; p = p->next)
        if (now >= p->deadline) {
            node_shared_retry(node); /* answers the expired ones */
            break;
        }
}

double
node_shared_next_deadline(node_t *node)
{
    double next = INFINITY;
    for (struct node_shobj *o = node->shobjs; o; o = o->next)
        if (o->locker && o->lock_until < next)
            next = o->lock_until;
    for (struct node_shpark *p = node->shparked; p; p = p->next)
        if (p->deadline < next)
            next = p->deadline;
    if (isinf(next))
        return INFINITY;
    double left = next - dmp__now();
    return left > 0 ? left : 0;
}

void
node_shared_timers(node_t *node)
{
    if (node_shared_next_deadline(node) <= 0)
        s_timers(node);
}

void
node_shared_tick(node_t *node)
{
    s_timers(node);
    if (node->shparked) /* a local holder may have died: wakes nobody */
        node_shared_retry(node);
    double now = dmp__now();
    for (struct node_shobj *o = node->shobjs, *next; o; o = next) {
        next = o->next;
        for (node_shholder_t *h = o->holders, *hn; h; h = hn) {
            hn = h->next;
            if (now < h->until)
                continue;
            info_f("%s:%u stopped renewing its hold of Value or Array %llu",
                   h->node, h->pid, (unsigned long long)o->id);
            if (o->locker == h)
                s_unlock(node, o, true);
            s_holder_drop(o, h);
        }
        if (s_unused(o, false))
            s_remove(node, o);
    }
}

void
node_shared_close(node_t *node)
{
    while (node->shparked)
        s_unpark(&node->shparked);
    while (node->shobjs)
        s_remove(node, node->shobjs);
}
