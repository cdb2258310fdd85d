/*
 * node_objects.c - queues and pipes owned by this node.
 *
 * Each object is one or two shared-memory rings (dmp_ring.c) created here
 * and named after this agent's incarnation and the object id. Processes on
 * this host map the rings and never talk to us for data; processes on
 * other hosts send RingOps, which we do on the same rings, so that every
 * item still goes to exactly one getter. A RingOp that would block (a get
 * on an empty ring, a put on a full one, a join) is parked: the rings
 * write to our wake-up FIFO while something is parked on them, and we
 * retry the parked operations when it is readable or when one times out.
 * The agent's loop never blocks on a ring.
 */
#define _GNU_SOURCE
#include "node.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define OBJECTS_MAX 4096
#define PARKED_MAX 65536
#define REOFFER_S 0.02
/* A dead holder's close waits this long for what it sent over its direct
 * link, a connection of its own, which its node's close did not follow. */
#define LINK_DRAIN_S 0.1

/* A process elsewhere holding a pipe's sending end: we hold the ring in
 * our name once per hold it made. `from` is who sent the holds: a peer
 * node (which closes what its dead processes owed; a dead node's holds we
 * close ourselves) or the key of a client connected to us. */
struct node_rwriter {
    struct node_rwriter *next;
    char from[DMP__NAME_MAX];
    uint32_t pid;
    uint32_t ring;
    uint32_t holds;
};

#define RWRITERS_MAX 65536 /* per object: bounded whatever peers claim */

struct node_obj {
    struct node_obj *next;
    struct node_rwriter *rwriters;
    uint64_t id;
    uint32_t type;
    size_t n_rings;
    char names[DMP__OBJ_RINGS_MAX][DMP__RING_NAME_MAX];
    dmp__ring_t *rings[DMP__OBJ_RINGS_MAX];
    unsigned parked[DMP__OBJ_RINGS_MAX]; /* operations waiting on it */
    /* The ring writes to our FIFO: set when something parks on it; after
     * a get, left set until a wake-up finds nothing parked there (a
     * getter elsewhere parks again at once: setting the path each time
     * takes the ring's lock while the writer puts, and costs that writer
     * a futex wake). */
    bool notify[DMP__OBJ_RINGS_MAX];
    int64_t offered[DMP__OBJ_RINGS_MAX];  /* this retry pass: items told */
};

/* An operation waiting here: a put for room, a get for an item, a join,
 * or the close of a dead holder's end for what it sent to arrive. */
struct node_park {
    struct node_park *next;
    node_sub_t from;
    uint64_t req_id;
    struct node_obj *obj;
    uint32_t ring;
    uint32_t op;
    char sender[DMP__NAME_MAX]; /* who asked: its puts go in order */
    uint32_t pid;    /* a close: whose */
    bool behind;     /* a put parked behind an earlier one of its sender */
    uint8_t *data;   /* put: the item, owned */
    size_t len;
    size_t done;     /* put batch: bytes of data already put */
    double deadline; /* monotonic; INFINITY: none; a close: when due */
};

static struct node_obj *
s_find(node_t *node, uint64_t id)
{
    for (struct node_obj *o = node->objs; o; o = o->next)
        if (o->id == id)
            return o;
    return NULL;
}

/* Removes the segments a killed predecessor left in /dev/shm. Only those
 * of the incarnation recorded in RUNTIME_DIR/incarnation (we hold that
 * directory's lock, so that agent is gone): other agents may share our
 * name on this host (every embedded agent is named after the host) and
 * their segments are alive. Then records our own incarnation. */
static void
s_remove_stale(node_t *node)
{
    char path[PATH_MAX], text[32] = "";
    snprintf(path, sizeof path, "%s/incarnation", node->cfg.runtime_dir);
    FILE *f = fopen(path, "re");
    if (f) {
        if (!fgets(text, sizeof text, f))
            text[0] = '\0';
        fclose(f);
    }
    text[strcspn(text, "\n")] = '\0';
    if (strlen(text) == 8 && strspn(text, "0123456789abcdef") == 8) {
        char prefix[DMP__NAME_MAX + 24];
        snprintf(prefix, sizeof prefix, "dmp-%s-%s-", node->cfg.name, text);
        DIR *dir = opendir("/dev/shm");
        unsigned removed = 0;
        struct dirent *de;
        while (dir && (de = readdir(dir)) != NULL) {
            if (strncmp(de->d_name, prefix, strlen(prefix)) != 0)
                continue;
            char name[300];
            snprintf(name, sizeof name, "/%s", de->d_name);
            removed += shm_unlink(name) == 0;
        }
        if (dir)
            closedir(dir);
        if (removed)
            info_f("removed %u shared-memory segments left by the previous "
                   "run", removed);
    }
    f = fopen(path, "we");
    if (f) {
        fprintf(f, "%08llx\n",
                (unsigned long long)(node->incarnation & 0xffffffffu));
        fclose(f);
    }
}

int
node_objects_open(node_t *node)
{
    s_remove_stale(node);
    node->wake_fd = node->wake_wfd = -1;
    snprintf(node->wake_path, sizeof node->wake_path, "%s/wake.fifo",
             node->cfg.runtime_dir);
    unlink(node->wake_path);
    if (mkfifo(node->wake_path, 0600) != 0) {
        error_f("cannot create '%s': %s", node->wake_path, strerror(errno));
        return -errno;
    }
    node_jail_share(node->wake_path, 0620, false); /* jobs wake us too */
    node->wake_fd = open(node->wake_path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    node->wake_wfd = open(node->wake_path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (node->wake_fd < 0 || node->wake_wfd < 0)
        return -errno;
    return 0;
}

int
node_objects_wake_fd(node_t *node)
{
    return node->wake_fd;
}

static void
s_destroy(struct node_obj *o)
{
    while (o->rwriters) {
        struct node_rwriter *w = o->rwriters;
        o->rwriters = w->next;
        dmp__free(w);
    }
    for (size_t i = 0; i < o->n_rings; i++) {
        if (o->rings[i])
            dmp__ring_shutdown(o->rings[i]);
        dmp__ring_close(&o->rings[i]);
        dmp__ring_unlink(o->names[i]);
    }
    dmp__free(o);
}

void
node_objects_new(node_t *node, const dmp__msg_t *req, dmp__msg_t *rep)
{
    unsigned n = 0;
    for (struct node_obj *o = node->objs; o; o = o->next)
        n++;
    if (n >= OBJECTS_MAX) {
        dmp__msg_error(rep, req->id, -ENOSPC, "node '%s' owns %u objects "
                       "already", node->cfg.name, n);
        return;
    }
    struct node_obj *o = dmp__calloc(1, sizeof *o);
    if (!o) {
        dmp__msg_error(rep, req->id, -ENOMEM, "out of memory");
        return;
    }
    o->id = ++node->next_obj;
    o->type = req->u.obj_new.type;
    o->n_rings = o->type == DMP__OBJ_PIPE && req->u.obj_new.duplex ? 2 : 1;
    dmp__ring_opts_t opts = {
        .capacity = req->u.obj_new.capacity,
        .maxsize = o->type == DMP__OBJ_QUEUE ? req->u.obj_new.maxsize : 0,
        .item_max = req->u.obj_new.item_max,
    };
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < o->n_rings; i++) {
        snprintf(o->names[i], sizeof o->names[i], "/dmp-%s-%08llx-%llu-%zu",
                 node->cfg.name,
                 (unsigned long long)(node->incarnation & 0xffffffffu),
                 (unsigned long long)o->id, i);
        rc = dmp__ring_create(o->names[i], &opts, &o->rings[i]);
        if (rc == 0) { /* jobs of job_user map it directly */
            char shm[DMP__RING_NAME_MAX + 16];
            snprintf(shm, sizeof shm, "/dev/shm%s", o->names[i]);
            node_jail_share(shm, 0600, true);
        }
    }
    if (rc) {
        warn_f("cannot create a %s: %s",
               o->type == DMP__OBJ_QUEUE ? "queue" : "pipe", dmp_strerror(rc));
        dmp__msg_error(rep, req->id, rc, "cannot create shared memory on "
                       "node '%s': %s", node->cfg.name, dmp_strerror(rc));
        s_destroy(o);
        return;
    }
    o->next = node->objs;
    node->objs = o;
    debug_f("created %s %llu", o->type == DMP__OBJ_QUEUE ? "queue" : "pipe",
            (unsigned long long)o->id);
    rep->kind = DMP__MSG_OBJ_INFO;
    rep->u.obj_info.id = o->id;
    dmp__strlcpy(rep->u.obj_info.node, node->cfg.name, DMP__NAME_MAX);
    rep->u.obj_info.n_rings = o->n_rings;
    for (size_t i = 0; i < o->n_rings; i++)
        dmp__strlcpy(rep->u.obj_info.rings[i], o->names[i],
                     DMP__RING_NAME_MAX);
}

/* A pipe's remote sender keeps a window of batches on their way
 * (dmp_feeder.c) and needs their answers only to reopen it or to flush.
 * When the same connection then waits here for an item (a recv after a
 * send: a round trip), a batch put whole is answered just before the
 * next reply to it, the item, or after ACK_DELAY_S: as with TCP's delayed
 * ACK, the two answers travel together and wake the sender's threads
 * once, not twice. A sender streaming waits for no item: its answers go
 * one message late (the next batch sends the one kept), the last once
 * the messages that came with it are done, so its window stays open. */
#define ACK_DELAY_S 0.002

struct node_ack {
    struct node_ack *next;
    node_sub_t to;
    uint64_t id; /* the request answered */
    double due;
};

static bool
s_same_sub(const node_sub_t *a, const node_sub_t *b)
{
    return a->sock == b->sock && a->rid_len == b->rid_len &&
           memcmp(a->rid, b->rid, a->rid_len) == 0;
}

static void
s_send_ok(const node_sub_t *to, uint64_t id)
{
    dmp__msg_t rep = {.id = id, .version = DMP_PROTOCOL_VERSION,
                      .kind = DMP__MSG_RING_REPLY};
    node_send_to(to, &rep);
}

/* Sends the answer kept in *ap and forgets it. */
static void
s_acks_send(struct node_ack **ap)
{
    struct node_ack *a = *ap;
    *ap = a->next;
    s_send_ok(&a->to, a->id);
    dmp__free(a);
}

/* Before anything else goes to `to`: the answer kept for it, so that
 * answers keep the order of their requests. */
static void
s_acks_flush_to(node_t *node, const node_sub_t *to)
{
    for (struct node_ack **ap = &node->acks; *ap; ap = &(*ap)->next)
        if (s_same_sub(&(*ap)->to, to)) {
            s_acks_send(ap);
            return;
        }
}

/* Keeps the success answer of request id for `to` (see above). */
static void
s_ack_later(node_t *node, const node_sub_t *to, uint64_t id)
{
    s_acks_flush_to(node, to); /* one kept per connection */
    struct node_ack *a = dmp__calloc(1, sizeof *a);
    if (!a) {
        s_send_ok(to, id); /* out of memory: at once */
        return;
    }
    a->to = *to;
    a->id = id;
    a->due = dmp__now() + ACK_DELAY_S;
    a->next = node->acks;
    node->acks = a;
}

/* Whether `to` waits here for an item (a get or poll parked). */
static bool
s_get_parked_for(node_t *node, const node_sub_t *to)
{
    for (struct node_park *p = node->parked; p; p = p->next)
        if ((p->op == DMP__RING_GET || p->op == DMP__RING_POLL) &&
            s_same_sub(&p->from, to))
            return true;
    return false;
}

double
node_objects_acks_due(node_t *node)
{
    double now = dmp__now(), next = INFINITY;
    for (struct node_ack **ap = &node->acks; *ap;) {
        if ((*ap)->due <= now || !s_get_parked_for(node, &(*ap)->to)) {
            s_acks_send(ap);
        } else {
            next = (*ap)->due < next ? (*ap)->due : next;
            ap = &(*ap)->next;
        }
    }
    return next - now;
}

/* Answers a parked or immediate operation. `total` > len: data is the
 * first part of item `seq`, whose rest the getter peeks for. */
static void
s_reply(node_t *node, const node_sub_t *to, uint64_t id, int rc, uint8_t *data,
        size_t len, int64_t count, uint64_t total, uint64_t seq)
{
    s_acks_flush_to(node, to);
    dmp__msg_t rep = {0};
    if (rc == -ENOBUFS) {
        dmp__msg_error(&rep, id, rc, "items arriving in parts fill this "
                       "node's staging memory; try again later");
    } else if (rc) {
        dmp__msg_error(&rep, id, rc, "%s", dmp_strerror(rc));
    } else {
        rep.id = id;
        rep.version = DMP_PROTOCOL_VERSION;
        rep.kind = DMP__MSG_RING_REPLY;
        rep.u.ring_reply.data = data;
        rep.u.ring_reply.len = len;
        rep.u.ring_reply.count = count;
        rep.u.ring_reply.total = total;
        rep.u.ring_reply.seq = seq;
    }
    node_send_to(to, &rep); /* borrowed data: no msg_clear */
}

/* Tries op without waiting. Returns 1 when it must wait (and should be
 * parked), else 0 after replying. `done`: progress of a put batch. */
static int
s_try(node_t *node, const node_sub_t *from, uint64_t req_id,
      struct node_obj *o, uint32_t ring, uint32_t op, const uint8_t *data,
      size_t len, bool may_wait, size_t *done)
{
    dmp__ring_t *r = o->rings[ring];
    uint8_t *item = NULL;
    size_t item_len = 0;
    int64_t count = 0;
    uint64_t total = 0, seq = 0;
    int rc;
    switch (op) {
    case DMP__RING_PUT:
        rc = dmp__ring_put(r, data, len, 0);
        if (rc == DMP_EFULL && may_wait)
            return 1;
        break;
    case DMP__RING_PUT_BATCH:
        rc = dmp__ring_put_batch(r, data, len, done);
        if (rc == DMP_EFULL && may_wait)
            return 1;
        if (rc == 0 && o->type == DMP__OBJ_PIPE) {
            s_ack_later(node, from, req_id);
            return 0;
        }
        break;
    case DMP__RING_GET:
        rc = dmp__ring_get_max(r, &item, &item_len, 0, DMP__REMOTE_ITEM_MAX);
        if (rc == DMP_EEMPTY && may_wait)
            return 1;
        /* An item a frame cannot carry stays: the getter is sent its
         * first part and peeks for the rest, then takes it (if nobody
         * took it meanwhile), so it leaves the ring only whole. */
        if (rc == -EMSGSIZE)
            rc = dmp__ring_peek(r, &seq, 0, DMP__REMOTE_ITEM_MAX, &item,
                                &item_len, &total);
        break;
    case DMP__RING_COUNT:
        count = dmp__ring_count(r);
        rc = count < 0 ? (int)count : 0;
        break;
    case DMP__RING_POLL:
        /* An item, EOF or shutdown: a get would not block. Takes nothing,
         * so it is safe to answer a waiter that may have died. */
        rc = dmp__ring_poll(r, 0);
        if (rc == 0 && may_wait)
            return 1;
        count = rc > 0;
        rc = rc < 0 ? rc : 0;
        break;
    case DMP__RING_TASK_DONE:
        rc = dmp__ring_task_done(r);
        break;
    case DMP__RING_JOIN:
        rc = dmp__ring_join(r, 0);
        if (rc == -ETIMEDOUT && may_wait)
            return 1;
        break;
    default: /* hold and close writer: node_objects_ring_op */
        rc = -EINVAL;
    }
    s_reply(node, from, req_id, rc, item, item_len, count, total, seq);
    dmp__free(item);
    return 0;
}

/* The rest of an item too big for a frame: PEEK a part, TAKE it whole. */
static void
s_part_op(node_t *node, const node_sub_t *from, uint64_t req_id,
          dmp__ring_t *r, const dmp__msg_t *req)
{
    uint64_t seq = req->u.ring_op.seq, total = 0;
    uint8_t *part = NULL;
    size_t len = 0;
    int rc = req->u.ring_op.op == DMP__RING_TAKE
                 ? dmp__ring_take(r, seq)
                 : seq == 0 ? -EINVAL
                            : dmp__ring_peek(r, &seq, req->u.ring_op.offset,
                                             DMP__REMOTE_ITEM_MAX, &part, &len,
                                             &total);
    s_reply(node, from, req_id, rc, part, len, 0, total, seq);
    dmp__free(part);
}

static struct node_rwriter *
s_rwriter(struct node_obj *o, const char *from, uint32_t pid, uint32_t ring,
          bool create)
{
    unsigned n = 0;
    for (struct node_rwriter *w = o->rwriters; w; w = w->next, n++)
        if (w->pid == pid && w->ring == ring && strcmp(w->from, from) == 0)
            return w;
    if (!create || n >= RWRITERS_MAX)
        return NULL;
    struct node_rwriter *w = dmp__calloc(1, sizeof *w);
    if (w) {
        dmp__strlcpy(w->from, from, sizeof w->from);
        w->pid = pid;
        w->ring = ring;
        w->next = o->rwriters;
        o->rwriters = w;
    }
    return w;
}

/* Closes the holds w made and forgets it. */
static void
s_rwriter_drop(struct node_obj *o, struct node_rwriter *w)
{
    for (struct node_rwriter **wp = &o->rwriters; *wp; wp = &(*wp)->next)
        if (*wp == w) {
            *wp = w->next;
            break;
        }
    while (w->holds-- > 0)
        dmp__ring_close_writer(o->rings[w->ring]);
    dmp__free(w);
}

/* Closes one hold of process pid (of sender) on ring. */
static void
s_writer_close(struct node_obj *o, uint32_t ring, const char *sender,
               uint32_t pid)
{
    struct node_rwriter *w = s_rwriter(o, sender, pid, ring, false);
    /* Nothing held: closed for it already (its node was lost). */
    if (w && w->holds > 0) {
        w->holds--;
        dmp__ring_close_writer(o->rings[ring]);
    }
    if (w && w->holds == 0)
        s_rwriter_drop(o, w);
}

/* A hold or close of a sending end by a process elsewhere, or a hold for
 * a child of this host from its start (RingOp.owner: us). */
static int
s_writer_op(struct node_obj *o, uint32_t ring, const dmp__msg_t *req,
            const char *sender)
{
    dmp__ring_t *r = o->rings[ring];
    uint32_t pid = req->u.ring_op.holder_pid;
    if (req->u.ring_op.owner[0])
        return dmp__ring_hold_writer_for(r, (pid_t)pid);
    bool hold = req->u.ring_op.op == DMP__RING_HOLD_WRITER;
    if (!hold) {
        s_writer_close(o, ring, sender, pid);
        return 0;
    }
    struct node_rwriter *w = s_rwriter(o, sender, pid, ring, true);
    if (!w)
        return -ENOMEM;
    int rc = dmp__ring_hold_writer(r);
    if (rc == 0)
        w->holds++;
    else if (w->holds == 0)
        s_rwriter_drop(o, w);
    return rc;
}

void
node_objects_peer_lost(node_t *node, const char *peer)
{
    node_stage_forget(node, peer, 0);
    for (struct node_obj *o = node->objs; o; o = o->next) {
        struct node_rwriter *next;
        for (struct node_rwriter *w = o->rwriters; w; w = next) {
            next = w->next;
            if (strcmp(w->from, peer) == 0) {
                debug_f("pipe %llu: closing %u end(s) held by process %u of "
                        "lost node '%s'", (unsigned long long)o->id,
                        w->holds, w->pid, peer);
                s_rwriter_drop(o, w);
            }
        }
    }
}

static bool
s_is_put(uint32_t op)
{
    return op == DMP__RING_PUT || op == DMP__RING_PUT_BATCH;
}

/* A message sent or asked for: on a pipe, another is likely to follow
 * soon (node_poll.c); holds, closes and counts say nothing of that. */
static bool
s_converses(uint32_t op)
{
    return s_is_put(op) || op == DMP__RING_PUT_PART ||
           op == DMP__RING_GET || op == DMP__RING_POLL;
}

/* Whether a put of sender to o's ring is parked before `upto` (NULL: at
 * all). A sender's batches may be on their way several at once (a pipe's
 * sends, dmp_feeder.c): each waits behind the ones before it. */
static bool
s_put_parked(node_t *node, struct node_obj *o, uint32_t ring,
             const char *sender, const struct node_park *upto)
{
    if (o->parked[ring] == 0)
        return false; /* the usual case, without a walk of the list */
    for (struct node_park *q = node->parked; q && q != upto; q = q->next)
        if (q->obj == o && q->ring == ring && s_is_put(q->op) &&
            (!sender || strcmp(q->sender, sender) == 0))
            return true;
    return false;
}

/* Appends an operation to the parked ones (oldest first, so that waiters
 * are served in order). Takes `owned` (data, or NULL: data is copied).
 * NULL when out of memory or when too many wait. */
static struct node_park *
s_park(node_t *node, struct node_obj *o, uint32_t ring, uint32_t op,
       const node_sub_t *from, uint64_t req_id, const char *sender,
       const uint8_t *data, uint8_t *owned, size_t len)
{
    unsigned n = 0;
    struct node_park **tail = &node->parked;
    for (; *tail; tail = &(*tail)->next)
        n++;
    struct node_park *p = n < PARKED_MAX ? dmp__calloc(1, sizeof *p) : NULL;
    if (p && len && !owned) {
        owned = dmp__malloc(len);
        if (owned) {
            memcpy(owned, data, len);
        } else {
            dmp__free(p);
            p = NULL;
        }
    }
    if (!p) {
        dmp__free(owned);
        return NULL;
    }
    p->from = *from;
    p->req_id = req_id;
    p->obj = o;
    p->ring = ring;
    p->op = op;
    dmp__strlcpy(p->sender, sender, sizeof p->sender);
    p->data = owned;
    p->len = len;
    *tail = p;
    /* A dead holder's close only waits for time; the rest for the ring. */
    if (op != DMP__RING_CLOSE_WRITER && o->parked[ring]++ == 0) {
        if (o->notify[ring]) {
            node->notify_idle--; /* kept from an earlier get: in use */
        } else {
            dmp__ring_set_notify(o->rings[ring], node->wake_path);
            o->notify[ring] = true;
            /* A put or get between s_try and here wrote no wake-up (the
             * ring had no notify path yet): retry once this loop round is
             * done. */
            node->reoffer_at = 0;
        }
    }
    return p;
}

void
node_objects_ring_op(node_t *node, const dmp__msg_t *req,
                     const node_sub_t *from, const char *sender)
{
    struct node_obj *o = s_find(node, req->u.ring_op.obj);
    uint32_t ring = req->u.ring_op.ring;
    if (!o || ring >= o->n_rings) {
        s_reply(node, from, req->id, -EBADF, NULL, 0, 0, 0, 0);
        return;
    }
    uint32_t op = req->u.ring_op.op;
    if (o->type == DMP__OBJ_PIPE && s_converses(op))
        node_poll_soon(node, dmp__now()); /* its answer may come soon */
    if (op == DMP__RING_CLOSE_WRITER && req->u.ring_op.died) {
        /* Its node saw it die; what it sent over its own link may still
         * be on its way, or parked here: EOF only after that. */
        struct node_park *p =
            s_park(node, o, ring, op, from, req->id, sender, NULL, NULL, 0);
        if (p) {
            p->pid = req->u.ring_op.holder_pid;
            p->deadline = dmp__now() + LINK_DRAIN_S;
        } else {
            s_writer_close(o, ring, sender, req->u.ring_op.holder_pid);
        }
        s_reply(node, from, req->id, 0, NULL, 0, 0, 0, 0); /* for nobody */
        return;
    }
    if (op == DMP__RING_HOLD_WRITER || op == DMP__RING_CLOSE_WRITER) {
        s_reply(node, from, req->id, s_writer_op(o, ring, req, sender), NULL,
                0, 0, 0, 0);
        return;
    }
    if (op == DMP__RING_PEEK || op == DMP__RING_TAKE) {
        s_part_op(node, from, req->id, o->rings[ring], req);
        return;
    }
    const uint8_t *data = req->u.ring_op.data;
    size_t len = req->u.ring_op.len;
    uint8_t *whole = NULL; /* an item put in parts, now complete */
    if (op == DMP__RING_PUT_PART) {
        int rc = node_stage_part(node, sender, o->id, ring,
                                 dmp__ring_item_max(o->rings[ring]), req,
                                 &whole, &len);
        if (rc != 0) { /* a part staged (1), or the item refused */
            s_reply(node, from, req->id, rc > 0 ? 0 : rc, NULL, 0, 0, 0, 0);
            return;
        }
        op = DMP__RING_PUT;
        data = whole;
    }
    double timeout = req->u.ring_op.timeout;
    bool may_wait = timeout != 0 && !(timeout > 0 && timeout < 1e-9);
    size_t done = 0;
    bool behind = s_is_put(op) && s_put_parked(node, o, ring, sender, NULL);
    if (behind && !may_wait) {
        dmp__free(whole);
        s_reply(node, from, req->id, DMP_EFULL, NULL, 0, 0, 0, 0);
        return;
    }
    if (!behind &&
        !s_try(node, from, req->id, o, ring, op, data, len, may_wait, &done)) {
        dmp__free(whole);
        return;
    }
    struct node_park *p =
        s_park(node, o, ring, op, from, req->id, sender, data, whole, len);
    if (!p) {
        s_reply(node, from, req->id, -ENOMEM, NULL, 0, 0, 0, 0);
        return;
    }
    p->deadline = timeout < 0 ? INFINITY : dmp__now() + timeout;
    p->done = done;
    p->behind = behind;
}

static void
s_unpark(node_t *node, struct node_park **pp)
{
    struct node_park *p = *pp;
    *pp = p->next;
    /* The notify path stays (see node_obj), but for a put that found
     * room: the local getters that made it would each tell us again. */
    if (p->op != DMP__RING_CLOSE_WRITER && --p->obj->parked[p->ring] == 0) {
        if (s_is_put(p->op)) {
            dmp__ring_set_notify(p->obj->rings[p->ring], "");
            p->obj->notify[p->ring] = false;
        } else {
            node->notify_idle++;
        }
    }
    dmp__free(p->data);
    dmp__free(p);
}

/* A parked get is not done in the getter's name: the getter, on another
 * host, may have died while it waited, and the item would go with the
 * reply. It is told that something is there (-EAGAIN) and asks again,
 * so an item leaves the ring only for a getter alive a round trip ago.
 * As many getters are told as there are items (all of them on EOF or
 * shutdown), oldest first; an item still there REOFFER_S later (its
 * getter died or is slow) is offered to the next one. True when p was
 * answered. */
static bool
s_offer(node_t *node, struct node_park *p)
{
    dmp__ring_t *r = p->obj->rings[p->ring];
    if (dmp__ring_poll(r, 0) != 1)
        return false;
    int64_t n = dmp__ring_count(r);
    if (n > 0 && p->obj->offered[p->ring] >= n)
        return false;
    p->obj->offered[p->ring]++;
    s_reply(node, &p->from, p->req_id, -EAGAIN, NULL, 0, 0, 0, 0);
    return true;
}

void
node_objects_retry(node_t *node)
{
    char buf[512];
    while (read(node->wake_fd, buf, sizeof buf) > 0)
        ; /* drain: one pass below serves every wake-up so far */
    /* A path kept with nothing parked on it that woke us: cleared. */
    for (struct node_obj *o = node->objs; o && node->notify_idle;
         o = o->next)
        for (size_t r = 0; r < o->n_rings; r++)
            if (o->notify[r] && o->parked[r] == 0) {
                dmp__ring_set_notify(o->rings[r], "");
                o->notify[r] = false;
                node->notify_idle--;
            }
    double now = dmp__now();
    node->reoffer_at = INFINITY;
    for (struct node_park *p = node->parked; p; p = p->next)
        p->obj->offered[p->ring] = 0;
    for (struct node_park **pp = &node->parked; *pp;) {
        struct node_park *p = *pp;
        bool expired = now >= p->deadline;
        if (p->op == DMP__RING_CLOSE_WRITER) { /* below */
            pp = &p->next;
            continue;
        }
        /* A put behind an earlier one of its sender waits for it. */
        if (p->behind && s_put_parked(node, p->obj, p->ring, p->sender, p)) {
            if (expired) {
                s_reply(node, &p->from, p->req_id, DMP_EFULL, NULL, 0, 0, 0,
                        0);
                s_unpark(node, pp);
            } else {
                pp = &p->next;
            }
            continue;
        }
        /* Only queues: a pipe end has one reader, whose death leaves
         * nobody else to read the message, and a recv across hosts would
         * pay a second round trip. */
        if (p->op == DMP__RING_GET && p->obj->type == DMP__OBJ_QUEUE &&
            !expired) {
            if (s_offer(node, p)) {
                node->reoffer_at = now + REOFFER_S;
                s_unpark(node, pp);
            } else {
                pp = &p->next;
            }
            continue;
        }
        if (!s_try(node, &p->from, p->req_id, p->obj, p->ring, p->op,
                   p->data, p->len, !expired, &p->done)) {
            if (p->obj->type == DMP__OBJ_PIPE && s_converses(p->op) &&
                !expired)
                node_poll_soon(node, now); /* and so may the next one */
            s_unpark(node, pp); /* answered: done, or Full/Empty/timeout */
            continue;
        }
        pp = &p->next;
    }
    /* A dead holder's close, once due and once no put to its ring waits
     * here (what it sent may be among them). */
    for (struct node_park **pp = &node->parked; *pp;) {
        struct node_park *p = *pp;
        if (p->op == DMP__RING_CLOSE_WRITER && now >= p->deadline &&
            !s_put_parked(node, p->obj, p->ring, NULL, NULL)) {
            s_writer_close(p->obj, p->ring, p->sender, p->pid);
            s_unpark(node, pp);
        } else {
            pp = &p->next;
        }
    }
}

double
node_objects_next_deadline(node_t *node)
{
    double next = node->parked ? node->reoffer_at : INFINITY;
    double now = dmp__now();
    for (struct node_park *p = node->parked; p; p = p->next)
        /* A due close that waits for parked puts: their progress
         * retries, not time. */
        if (p->deadline < next &&
            !(p->op == DMP__RING_CLOSE_WRITER && p->deadline <= now &&
              s_put_parked(node, p->obj, p->ring, NULL, NULL)))
            next = p->deadline;
    return isinf(next) ? 1.0 : (next > now ? next - now : 0);
}

void
node_objects_release(node_t *node, const dmp__msg_t *req, dmp__msg_t *rep)
{
    for (struct node_obj **op = &node->objs; *op; op = &(*op)->next) {
        struct node_obj *o = *op;
        if (o->id != req->u.obj_release.id)
            continue;
        /* Parked operations on it fail: the object is gone. */
        for (struct node_park **pp = &node->parked; *pp;) {
            if ((*pp)->obj == o) {
                s_reply(node, &(*pp)->from, (*pp)->req_id, -EBADF, NULL, 0,
                        0, 0, 0);
                s_unpark(node, pp);
            } else {
                pp = &(*pp)->next;
            }
        }
        for (size_t r = 0; r < o->n_rings; r++)
            node->notify_idle -= o->notify[r]; /* nothing parked by now */
        *op = o->next;
        node_stage_forget(node, NULL, o->id);
        s_destroy(o);
        rep->kind = DMP__MSG_OK;
        return;
    }
    dmp__msg_error(rep, req->id, -EBADF, "no object %llu on node '%s'",
                   (unsigned long long)req->u.obj_release.id, node->cfg.name);
}

void
node_objects_close(node_t *node)
{
    while (node->acks) {
        struct node_ack *a = node->acks;
        node->acks = a->next;
        dmp__free(a);
    }
    while (node->parked)
        s_unpark(node, &node->parked);
    node_stage_close(node);
    while (node->objs) {
        struct node_obj *o = node->objs;
        node->objs = o->next;
        s_destroy(o);
    }
    if (node->wake_fd >= 0)
        close(node->wake_fd);
    if (node->wake_wfd >= 0)
        close(node->wake_wfd);
    if (node->wake_path[0])
        unlink(node->wake_path);
}
