/*
 * dmp_feeder.c - pipelined puts into a ring owned by another node.
 *
 * What Python's feeder thread does for a Queue: a put from this process
 * returns once the item is buffered, and the buffer goes to the owner as
 * one PUT_BATCH RingOp while the caller goes on. One batch is in flight at
 * a time; items put meanwhile gather into the next one, so a fast producer
 * sends few large frames and a slow one sends each item at once. A full
 * buffer makes put wait (memory stays bounded); a full ring makes the
 * batch wait at the owner, and so, in turn, the next put here.
 *
 * A pipe's send (at_once) leaves for the owner before put returns, as a
 * Python send writes into its socket, so what a process sent reaches the
 * reader even if it is killed right after: up to a window of batches
 * (DMP__FEEDER_WINDOW_BATCHES, and WINDOW_BYTES) may be on their way at
 * once, all on one connection, and the owner puts them in order
 * (node_objects.c). Only a sender faster than the window buffers, as a
 * queue does: what it sends meanwhile goes as one batch when the next
 * answer comes.
 *
 * An error the owner gave a batch (an item over its item_max, the owner
 * gone) is reported by the next call on the feeder once its answer was
 * read (a pipe's answers are lazy: at the latest by flush). The reply
 * callback runs on whichever thread reads the client's socket, never
 * with a caller's lock held.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <string.h>

/* A batch fills at most this much of a frame. */
#define BATCH_MAX (DMP__WIRE_MAX / 2)
/* Bytes of at_once batches on their way at most. */
#define WINDOW_BYTES (2 * DMP__WIRE_MAX)

void
dmp__feeder_init(dmp__feeder_t *f, const char *node, uint64_t id,
                 uint32_t ring, bool at_once)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mx, NULL);
    pthread_cond_init(&f->cv, NULL);
    dmp__strlcpy(f->node, node, sizeof f->node);
    f->id = id;
    f->ring = ring;
    f->at_once = at_once;
    f->client = dmp_default_client();
}

void
dmp__feeder_fini(dmp__feeder_t *f)
{
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mx);
    dmp__free(f->buf);
    f->buf = NULL;
}

/* Whether another batch may go now (else the buffer waits for an
 * answer). Caller holds f->mx. */
static bool
s_window_open(const dmp__feeder_t *f)
{
    if (f->inflight == 0)
        return true;
    return f->at_once && f->inflight < DMP__FEEDER_WINDOW_BATCHES &&
           f->inflight_bytes + f->len <= WINDOW_BYTES;
}

/* Whether put must wait before it adds len bytes: the buffer is full. */
static bool
s_must_wait(const dmp__feeder_t *f, size_t len)
{
    return !f->error && f->inflight > 0 && f->len + 4 + len > BATCH_MAX;
}

static void s_batch_done(int rc, const dmp__msg_t *rep, void *arg);

/* Sends the buffered items as one batch. Caller holds f->mx. Out of
 * memory: the items stay buffered, for the next put or flush to send
 * (nothing a put accepted is dropped); another error becomes the
 * feeder's, reported by the next call. The first batch of a run, sent
 * from a caller's thread (`choose`), may pick (or make) a direct link to
 * the owner; the others go the way it went, so that they arrive in order,
 * and so does one sent from a reply's callback (making a link there would
 * wait for a reply on the thread that reads it). */
static int
s_send_locked(dmp__feeder_t *f, bool choose)
{
    dmp_client_t *via = f->via ? f->via : f->client;
    if (choose && f->inflight == 0) {
        dmp_client_t *link = dmp__direct_client(f->node);
        via = link ? link : f->client;
    }
    dmp__msg_t req = {.kind = DMP__MSG_RING_OP};
    req.u.ring_op.obj = f->id;
    req.u.ring_op.ring = f->ring;
    req.u.ring_op.op = DMP__RING_PUT_BATCH;
    req.u.ring_op.data = f->buf;
    req.u.ring_op.len = f->len;
    req.u.ring_op.timeout = -1; /* wait at the owner for room */
    bool direct = via && via != f->client;
    /* A pipe's answers are lazy: the window stays open without them, so
     * nobody is woken to read them (dmp__feeder_put asks when it must). */
    int rc = via ? dmp__client_send_async(via,
                                          direct ? NULL
                                                 : dmp__obj_route(f->node),
                                          &req, s_batch_done, f, f->at_once)
                 : -EBADF;
    if (rc == -ENOMEM)
        return rc;
    size_t sent = f->len;
    f->len = 0; /* encoded by now: the buffer can fill again */
    if (rc) {
        if (!f->error)
            f->error = rc;
        return rc;
    }
    f->sizes[(f->oldest + f->inflight) % DMP__FEEDER_WINDOW_BATCHES] = sent;
    f->inflight++;
    f->inflight_bytes += sent;
    f->via = via;
    return 0;
}

/* On the client's I/O thread: a batch is at the owner (or failed). */
static void
s_batch_done(int rc, const dmp__msg_t *rep, void *arg)
{
    (void)rep;
    dmp__feeder_t *f = arg;
    pthread_mutex_lock(&f->mx);
    /* Answers come in the order the batches went (one connection, put in
     * order); a lost connection answers them all. */
    if (f->inflight) {
        f->inflight_bytes -= f->sizes[f->oldest];
        f->oldest = (f->oldest + 1) % DMP__FEEDER_WINDOW_BATCHES;
        f->inflight--;
    }
    if (rc && !f->error)
        f->error = rc;
    if (rc == DMP_ENODE) {
        f->len = 0; /* the connection is gone: nothing can carry it */
        if (f->via != f->client && f->inflight == 0) {
            dmp__direct_lost(f->node, f->via); /* the next makes one */
            f->via = NULL;
        }
    } else if (f->len && s_window_open(f)) {
        s_send_locked(f, false);
    }
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mx);
}

int
dmp__feeder_put(dmp__feeder_t *f, const void *data, size_t len)
{
    if (len + 4 > BATCH_MAX)
        return -EMSGSIZE; /* across hosts an item is one frame */
    pthread_mutex_lock(&f->mx);
    while (s_must_wait(f, len)) {
        dmp__client_watch(f->via);
        pthread_cond_wait(&f->cv, &f->mx);
    }
    int rc = f->error;
    f->error = 0;
    if (rc == 0 && f->len + 4 + len > f->cap) {
        size_t cap = f->cap ? f->cap : 4096;
        while (cap < f->len + 4 + len)
            cap *= 2;
        uint8_t *grown = dmp__realloc(f->buf, cap);
        if (!grown) {
            rc = -ENOMEM;
        } else {
            f->buf = grown;
            f->cap = cap;
        }
    }
    if (rc == 0) {
        uint8_t *p = f->buf + f->len;
        for (int i = 0; i < 4; i++)
            p[i] = (uint8_t)(len >> (8 * i));
        memcpy(p + 4, data, len);
        f->len += 4 + len;
        if (s_window_open(f) && s_send_locked(f, true) == -ENOMEM) {
            f->len -= 4 + len; /* not sent: this put did not happen */
            rc = -ENOMEM;
        }
        /* The first item buffered behind a closed window: it leaves with
         * an answer, which someone must read even if this process waits
         * elsewhere (asked once: the answers are watched for until none
         * is due). */
        if (rc == 0 && f->len == 4 + len && f->inflight)
            dmp__client_watch(f->via);
    }
    pthread_mutex_unlock(&f->mx);
    return rc;
}

int
dmp__feeder_flush(dmp__feeder_t *f)
{
    pthread_mutex_lock(&f->mx);
    /* Items a send lacked the memory for are still here: send them. */
    int rc = f->len && s_window_open(f) ? s_send_locked(f, true) : 0;
    if (rc == -ENOMEM) {
        pthread_mutex_unlock(&f->mx);
        return rc;
    }
    while (f->inflight) {
        dmp__client_watch(f->via);
        pthread_cond_wait(&f->cv, &f->mx);
    }
    rc = f->error;
    f->error = 0;
    pthread_mutex_unlock(&f->mx);
    return rc;
}
