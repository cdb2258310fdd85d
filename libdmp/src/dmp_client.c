/*
 * dmp_client.c - one connection to one agent, read by an I/O thread.
 *
 * ZeroMQ sockets are not thread-safe, so every use of the DEALER socket
 * is under sock_mx. A caller sends its encoded request itself, from its
 * own thread (handing it to the I/O thread would put one more thread
 * wake-up on every round trip), then sleeps on a condition variable
 * until the reply with its request id arrives or its timeout passes. The
 * I/O thread reads: it polls the socket's ZMQ_FD, never the socket
 * itself, so it holds no lock while it waits.
 *
 * A direct link (caller_reads; no events come on it) saves the wake-up of
 * the I/O thread on the way back too: a caller waiting for its reply
 * reads the socket itself (one reader at a time; the others sleep and are
 * handed the role when it leaves), completing the requests of others as
 * the I/O thread would. The I/O thread then reads only when no caller
 * does and a reply is wanted without anyone waiting for it (a prompt
 * async request, or lazy ones someone asked for with dmp__client_watch);
 * it is woken to do so only when it is not watching already.
 *
 * Events the agent pushes without being asked (a child's output, its
 * exit) are handed to the event callback as they arrive, so a child's
 * output reaches the terminal while the parent is busy. A reply with an
 * unknown id answers a request that already timed out and is dropped.
 * ZMQ_IMMEDIATE keeps requests from queueing for an agent that is gone;
 * ZeroMQ heartbeats and the socket monitor turn a dead agent into
 * DMP_ENODE for every waiter and one "lost" event, never a hang.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

/* Tries (2 ms apart) to read a message we lacked the memory for. */
#define NOMEM_RETRIES 50

typedef struct s_pending {
    struct s_pending *next;
    uint64_t id;
    bool done;
    int rc;                     /* 0, or why no reply came */
    dmp__msg_t rep;             /* the reply, when rc == 0 */
    dmp__reply_fn fn;           /* async: called by the thread reading;
                                 * the record is heap-owned by the list */
    void *arg;
    pthread_cond_t cond;        /* sync: its waiter sleeps on it, so that
                                 * a reply wakes only the thread it is for */
    bool lazy;                  /* async: nobody waits for it (see top) */
} s_pending_t;

struct dmp_client {
    void *ctx;                   /* ZeroMQ context */
    bool own_ctx;                /* made here (else another client's) */
    void *sock;                  /* DEALER; used under sock_mx */
    pthread_mutex_t sock_mx;     /* one thread at a time on sock */
    int sock_fd;                 /* its ZMQ_FD: "look at the socket" */
    void *mon;                   /* PAIR reading the socket monitor */
    int wake_fd;                 /* eventfd: look at the socket, or stop */
    pthread_t io;                /* the I/O thread */
    bool io_started;
    pthread_mutex_t lock;        /* guards everything below */
    bool caller_reads;           /* a direct link: waiting callers read */
    int reader_fd;               /* eventfd: wakes the caller reading */
    bool reading;                /* a caller reads the socket now */
    bool io_watching;            /* the I/O thread polls the socket now */
    bool watch_wanted;           /* dmp__client_watch: read lazy replies */
    unsigned n_prompt;           /* async requests unanswered: not lazy */
    unsigned n_lazy;             /* and lazy */
    s_pending_t *pending;        /* requests waiting for replies */
    uint64_t next_id;
    bool stop;                   /* the I/O thread should exit */
    bool lost;                   /* the agent connection dropped */
    dmp__event_fn on_event;      /* pushed events; NULL msg = lost */
    void *on_event_arg;
    double request_timeout;      /* seconds */
    bool local;                  /* over ipc: the agent is on this host */
    char node[DMP__NAME_MAX];    /* the agent's node name, from Hello */
    char errmsg[DMP__TEXT_MAX];  /* text of the last error reply */
};

static bool
s_is_event(dmp__msg_kind_t kind)
{
    return kind == DMP__MSG_PROC_OUTPUT || kind == DMP__MSG_PROC_EXIT;
}

/* Completes pending request id (or all, when all is set). Caller holds
 * the lock. Takes the reply's contents when rep is given. Completed async
 * records are unlinked and returned in *async_p, for the caller to run
 * (s_run_async) once it dropped the lock. */
static void
s_complete(dmp_client_t *c, uint64_t id, bool all, int rc, dmp__msg_t *rep,
           s_pending_t **async_p)
{
    for (s_pending_t **pp = &c->pending; *pp;) {
        s_pending_t *p = *pp;
        if (p->done || (!all && p->id != id)) {
            pp = &p->next;
            continue;
        }
        p->done = true;
        p->rc = rc;
        if (rep) {
            p->rep = *rep;
            memset(rep, 0, sizeof *rep);
        }
        if (p->fn) {
            *pp = p->next;
            p->next = *async_p;
            *async_p = p;
            if (p->lazy)
                c->n_lazy--;
            else
                c->n_prompt--;
        } else {
            pthread_cond_signal(&p->cond);
            pp = &p->next;
        }
        if (!all)
            break;
    }
}

/* Runs completed async requests' callbacks (without the lock held). */
static void
s_run_async(s_pending_t *list)
{
    while (list) {
        s_pending_t *p = list;
        list = p->next;
        int rc = p->rc;
        if (rc == 0 && p->rep.kind == DMP__MSG_ERROR)
            rc = p->rep.u.error.code;
        p->fn(rc, rc == 0 ? &p->rep : NULL, p->arg);
        dmp__msg_clear(&p->rep);
        dmp__free(p);
    }
}

static void
s_kick(int fd)
{
    uint64_t one = 1;
    if (write(fd, &one, sizeof one) < 0) {
        /* an eventfd write fails only on overflow: it is readable then */
    }
}

/* Under the lock: should the I/O thread read the socket? (See the top.)
 * Once it watches, it goes on until a caller reads: a producer's next
 * prompt request then needs no wake-up to be watched for. */
static bool
s_io_wanted(const dmp_client_t *c)
{
    return !c->caller_reads ||
           (!c->reading && (c->io_watching || c->n_prompt > 0 ||
                            (c->watch_wanted && c->n_lazy > 0)));
}

/* Under the lock, after a change that may want the I/O thread reading:
 * wakes it when it is not watching the socket already. */
static void
s_io_kick_if(dmp_client_t *c)
{
    if (!c->io_watching && s_io_wanted(c))
        s_kick(c->wake_fd);
}

/* Sends an encoded request from the caller's thread: 0, or DMP_ENODE
 * (no connection: ZMQ_IMMEDIATE). ZMQ_FD is edge-triggered: a send may
 * make ZeroMQ process the commands that say a reply is readable, and
 * then the descriptor says nothing; so the I/O thread is told to look. */
static int
s_send(dmp_client_t *c, const uint8_t *buf, size_t len)
{
    pthread_mutex_lock(&c->sock_mx);
    int rc = zmq_send(c->sock, buf, len, ZMQ_DONTWAIT) < 0 ? DMP_ENODE : 0;
    int events = 0;
    size_t size = sizeof events;
    bool readable = zmq_getsockopt(c->sock, ZMQ_EVENTS, &events, &size) ==
                    0 && (events & ZMQ_POLLIN);
    pthread_mutex_unlock(&c->sock_mx);
    if (readable) { /* tell all who poll; a new reader reads first */
        pthread_mutex_lock(&c->lock);
        if (c->reading)
            s_kick(c->reader_fd);
        /* Also the I/O thread: a reader may be leaving, with nothing to
         * read for itself, while it has a reply to read. */
        if (c->io_watching)
            s_kick(c->wake_fd);
        pthread_mutex_unlock(&c->lock);
    }
    return rc;
}

/* Unlinks pending record p. Caller holds the lock. */
static void
s_unlink(dmp_client_t *c, s_pending_t *p)
{
    for (s_pending_t **pp = &c->pending; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
}

/* Reads every message there is, as the I/O thread or as the caller
 * reading (as_reader), and completes their requests. */
static void
s_io_recv(dmp_client_t *c, bool as_reader)
{
    for (;;) {
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        pthread_mutex_lock(&c->sock_mx);
        int got = zmq_msg_recv(&frame, c->sock, ZMQ_DONTWAIT);
        pthread_mutex_unlock(&c->sock_mx);
        if (got < 0) { /* EAGAIN: ZMQ_FD will say when there is more */
            zmq_msg_close(&frame);
            return;
        }
        dmp__msg_t msg;
        /* Agents send single frames; a multi-frame part is garbage. But a
         * reply we lack the memory to read is not: dropped, its request
         * would time out as DMP_ENODE, and one that succeeded (a put)
         * would look failed. So retry a while; if memory does not come
         * back, every waiter gets -ENOMEM. */
        int rc;
        for (int tries = 0;; tries++) {
            rc = zmq_msg_more(&frame)
                     ? DMP_EPROTO
                     : dmp__wire_decode(zmq_msg_data(&frame),
                                        zmq_msg_size(&frame), &msg);
            if (rc != -ENOMEM || tries == NOMEM_RETRIES)
                break;
            nanosleep(&(struct timespec){0, 2000000}, NULL);
        }
        zmq_msg_close(&frame);
        if (rc == -ENOMEM) {
            dmp__log(DMP_LOG_ERROR, "out of memory reading a message from "
                     "node '%s'", c->node);
            s_pending_t *async = NULL;
            pthread_mutex_lock(&c->lock);
            s_complete(c, 0, true, -ENOMEM, NULL, &async);
            if (!as_reader && c->reading)
                s_kick(c->reader_fd);
            pthread_mutex_unlock(&c->lock);
            s_run_async(async);
            continue;
        }
        if (rc) {
            dmp__log(DMP_LOG_WARN, "dropped a malformed message from node "
                     "'%s': %s", c->node, dmp_strerror(rc));
            continue;
        }
        if (s_is_event(msg.kind)) {
            if (c->on_event)
                c->on_event(&msg, c->on_event_arg);
            dmp__msg_clear(&msg);
            continue;
        }
        s_pending_t *async = NULL;
        pthread_mutex_lock(&c->lock);
        s_complete(c, msg.id, false, 0, &msg, &async);
        /* The reader may have looked before we took its reply: it polls
         * the socket, which says nothing more. */
        if (!as_reader && c->reading)
            s_kick(c->reader_fd);
        pthread_mutex_unlock(&c->lock);
        s_run_async(async);
        dmp__msg_clear(&msg); /* a late reply nobody took */
    }
}

static void
s_io_monitor(dmp_client_t *c)
{
    zmq_msg_t frame;
    zmq_msg_init(&frame);
    bool disconnected = false;
    while (zmq_msg_recv(&frame, c->mon, ZMQ_DONTWAIT) >= 0) {
        if (zmq_msg_size(&frame) >= 6) {
            uint16_t ev;
            memcpy(&ev, zmq_msg_data(&frame), 2);
            disconnected |= ev == ZMQ_EVENT_DISCONNECTED;
        }
        zmq_msg_close(&frame);
        zmq_msg_init(&frame);
    }
    zmq_msg_close(&frame);
    if (!disconnected)
        return;
    dmp__log(DMP_LOG_WARN, "lost the connection to node '%s'", c->node);
    s_pending_t *async = NULL;
    pthread_mutex_lock(&c->lock);
    c->lost = true;
    s_complete(c, 0, true, DMP_ENODE, NULL, &async);
    if (c->reading)
        s_kick(c->reader_fd);
    pthread_mutex_unlock(&c->lock);
    s_run_async(async);
    if (c->on_event)
        c->on_event(NULL, c->on_event_arg);
}

static void *
s_io(void *arg)
{
    dmp_client_t *c = arg;
    for (;;) {
        pthread_mutex_lock(&c->lock);
        bool watch = s_io_wanted(c);
        c->io_watching = watch;
        if (c->n_lazy == 0)
            c->watch_wanted = false;
        pthread_mutex_unlock(&c->lock);
        /* Whatever woke us, read all there is: ZMQ_FD only says "look",
         * and a caller's send may have looked first. Replies' callbacks
         * run here without sock_mx, so they may send. */
        if (watch)
            s_io_recv(c, false);
        zmq_pollitem_t items[3] = {{c->mon, 0, ZMQ_POLLIN, 0},
                                   {NULL, c->wake_fd, ZMQ_POLLIN, 0},
                                   {NULL, c->sock_fd, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, watch ? 3 : 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (items[1].revents & ZMQ_POLLIN) {
            uint64_t n;
            if (read(c->wake_fd, &n, sizeof n) < 0 && errno != EAGAIN)
                break;
            pthread_mutex_lock(&c->lock);
            bool stop = c->stop;
            pthread_mutex_unlock(&c->lock);
            if (stop)
                break;
        }
        if (items[0].revents & ZMQ_POLLIN)
            s_io_monitor(c);
    }
    return NULL;
}

void
dmp_client_destroy(dmp_client_t **client_p)
{
    if (!client_p || !*client_p)
        return;
    dmp_client_t *c = *client_p;
    if (c->io_started) {
        pthread_mutex_lock(&c->lock);
        c->stop = true;
        pthread_mutex_unlock(&c->lock);
        uint64_t one = 1;
        if (write(c->wake_fd, &one, sizeof one) < 0) {
            /* an eventfd write fails only on overflow: the thread wakes */
        }
        pthread_join(c->io, NULL);
    }
    s_pending_t *async = NULL;
    s_complete(c, 0, true, DMP_ENODE, NULL, &async);
    s_run_async(async); /* their owners learn the client is gone */
    if (c->sock) {
        zmq_socket_monitor(c->sock, NULL, 0);
        zmq_close(c->sock);
    }
    if (c->mon)
        zmq_close(c->mon);
    if (c->ctx && c->own_ctx)
        zmq_ctx_term(c->ctx);
    if (c->wake_fd >= 0)
        close(c->wake_fd);
    if (c->reader_fd >= 0)
        close(c->reader_fd);
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->sock_mx);
    dmp__free(c);
    *client_p = NULL;
}

/* Milliseconds from now until `until` (CLOCK_MONOTONIC), at most an hour;
 * 0 once it passed. */
static int
s_ms_until(const struct timespec *until)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double ms = (double)(until->tv_sec - now.tv_sec) * 1e3 +
                (double)(until->tv_nsec - now.tv_nsec) / 1e6;
    if (ms <= 0)
        return 0;
    return ms > 3600e3 ? 3600000 : (int)ms + 1;
}

/* Under the lock, a caller leaving the reader's role: it goes to another
 * caller waiting for its reply, else to the I/O thread if it is wanted. */
static void
s_pass_reading(dmp_client_t *c, const s_pending_t *mine)
{
    c->reading = false;
    for (s_pending_t *q = c->pending; q; q = q->next)
        if (!q->fn && !q->done && q != mine) {
            pthread_cond_signal(&q->cond);
            return;
        }
    s_io_kick_if(c);
}

/* Called with the lock held and nobody reading: reads the socket as the
 * I/O thread would until p is answered (false) or `until` passes (true).
 * Returns with the lock held and the role passed on. */
static bool
s_read_as_caller(dmp_client_t *c, s_pending_t *p,
                 const struct timespec *until)
{
    c->reading = true;
    bool expired = false;
    for (;;) {
        pthread_mutex_unlock(&c->lock);
        s_io_recv(c, true);
        pthread_mutex_lock(&c->lock);
        if (p->done)
            break;
        int ms = s_ms_until(until);
        if (ms == 0) {
            expired = true;
            break;
        }
        pthread_mutex_unlock(&c->lock);
        /* reader_fd: the I/O thread took our reply or lost the link. */
        zmq_pollitem_t items[2] = {{NULL, c->sock_fd, ZMQ_POLLIN, 0},
                                   {NULL, c->reader_fd, ZMQ_POLLIN, 0}};
        uint64_t n;
        if (zmq_poll(items, 2, ms) > 0 && (items[1].revents & ZMQ_POLLIN) &&
            read(c->reader_fd, &n, sizeof n) < 0) {
            /* EAGAIN: another read took it */
        }
        pthread_mutex_lock(&c->lock);
    }
    s_pass_reading(c, p);
    return expired;
}

int
dmp__client_request(dmp_client_t *c, const char *node, dmp__msg_t *req,
                    dmp__msg_t *rep, dmp__msg_kind_t want, double timeout)
{
    memset(rep, 0, sizeof *rep);
    if (timeout <= 0)
        timeout = c->request_timeout;
    pthread_mutex_lock(&c->lock);
    uint64_t id = ++c->next_id;
    pthread_mutex_unlock(&c->lock);
    req->id = id;
    req->version = DMP_PROTOCOL_VERSION;
    dmp__strlcpy(req->node, node ? node : "", sizeof req->node);
    uint8_t *buf;
    size_t len;
    int rc = dmp__wire_encode(req, &buf, &len);
    if (rc)
        return rc;
    s_pending_t pending = {.id = id};
    pthread_mutex_lock(&c->lock);
    /* A direct link that was lost stays lost (its owner makes a new one),
     * and one lost before this request was listed would never answer it:
     * the loss completed only the requests listed then. */
    if (c->lost && (!c->io_started || c->caller_reads)) {
        pthread_mutex_unlock(&c->lock);
        dmp__free(buf);
        return DMP_ENODE;
    }
    dmp__cond_init_monotonic(&pending.cond);
    /* Listed before it leaves: the reply may come at once. */
    pending.next = c->pending;
    c->pending = &pending;
    pthread_mutex_unlock(&c->lock);
    int sent = s_send(c, buf, len);
    dmp__free(buf);
    pthread_mutex_lock(&c->lock);
    if (sent && !pending.done) {
        pending.done = true;
        pending.rc = sent;
    }
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    double secs = timeout > 86400.0 * 365 ? 86400.0 * 365 : timeout;
    until.tv_sec += (time_t)secs;
    until.tv_nsec += (long)((secs - (double)(time_t)secs) * 1e9);
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    bool read_myself = false;
    while (!pending.done) {
        if (c->caller_reads && !c->reading) {
            read_myself = true;
            if (s_read_as_caller(c, &pending, &until))
                break;
            continue;
        }
        if (pthread_cond_timedwait(&pending.cond, &c->lock, &until) ==
            ETIMEDOUT)
            break;
    }
    s_unlink(c, &pending); /* the I/O thread sees it only under lock */
    /* Handed the role just as our wait ended (timed out, or our send
     * failed): whoever else waits still needs a reader. */
    if (c->caller_reads && !c->reading && !read_myself)
        s_pass_reading(c, &pending);
    c->errmsg[0] = '\0';
    if (!pending.done) {
        snprintf(c->errmsg, sizeof c->errmsg,
                 "no reply from node '%s' within %.1f s", c->node, timeout);
        rc = DMP_ENODE;
    } else if (pending.rc) {
        snprintf(c->errmsg, sizeof c->errmsg, pending.rc == -ENOMEM
                 ? "out of memory reading the reply of node '%s'"
                 : "lost the connection to node '%s'", c->node);
        rc = pending.rc;
    } else if (pending.rep.version != DMP_PROTOCOL_VERSION) {
        snprintf(c->errmsg, sizeof c->errmsg,
                 "node speaks protocol %u, we speak %u", pending.rep.version,
                 DMP_PROTOCOL_VERSION);
        rc = DMP_EVERSION;
    } else if (pending.rep.kind == DMP__MSG_ERROR) {
        dmp__strlcpy(c->errmsg, pending.rep.u.error.text, sizeof c->errmsg);
        rc = pending.rep.u.error.code;
    } else if (pending.rep.kind != want) {
        rc = DMP_EPROTO;
    } else {
        *rep = pending.rep;
        memset(&pending.rep, 0, sizeof pending.rep);
    }
    pthread_mutex_unlock(&c->lock);
    pthread_cond_destroy(&pending.cond);
    dmp__msg_clear(&pending.rep);
    return rc;
}

int
dmp__client_send_async(dmp_client_t *c, const char *node, dmp__msg_t *req,
                       dmp__reply_fn fn, void *arg, bool lazy)
{
    s_pending_t *p = dmp__calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    pthread_mutex_lock(&c->lock);
    uint64_t id = ++c->next_id;
    pthread_mutex_unlock(&c->lock);
    req->id = id;
    req->version = DMP_PROTOCOL_VERSION;
    dmp__strlcpy(req->node, node ? node : "", sizeof req->node);
    uint8_t *buf;
    size_t len;
    int rc = dmp__wire_encode(req, &buf, &len);
    if (rc) {
        dmp__free(p);
        return rc;
    }
    p->id = id;
    p->fn = fn;
    p->arg = arg;
    p->lazy = lazy;
    pthread_mutex_lock(&c->lock);
    if (c->lost) {
        pthread_mutex_unlock(&c->lock);
        dmp__free(buf);
        dmp__free(p);
        return DMP_ENODE;
    }
    p->next = c->pending;
    c->pending = p;
    if (lazy) {
        c->n_lazy++;
    } else {
        c->n_prompt++;
        s_io_kick_if(c);
    }
    pthread_mutex_unlock(&c->lock);
    rc = s_send(c, buf, len);
    dmp__free(buf);
    if (rc == 0)
        return 0;
    /* Not sent: the caller hears it now, fn never. Unless the connection
     * was lost meanwhile and fn already ran (with DMP_ENODE): then the
     * record is gone, and so is the need to tell. */
    pthread_mutex_lock(&c->lock);
    bool listed = false;
    for (s_pending_t *q = c->pending; q && !listed; q = q->next)
        listed = q == p && q->id == id;
    if (listed) {
        s_unlink(c, p);
        if (lazy)
            c->n_lazy--;
        else
            c->n_prompt--;
    }
    pthread_mutex_unlock(&c->lock);
    if (!listed)
        return 0;
    dmp__free(p);
    return rc;
}

void
dmp__client_watch(dmp_client_t *c)
{
    pthread_mutex_lock(&c->lock);
    c->watch_wanted = true;
    s_io_kick_if(c);
    pthread_mutex_unlock(&c->lock);
}

void
dmp__client_on_event(dmp_client_t *c, dmp__event_fn fn, void *arg)
{
    /* Set before any process exists, so the I/O thread reads a stable
     * pointer; the lock publishes it. */
    pthread_mutex_lock(&c->lock);
    c->on_event = fn;
    c->on_event_arg = arg;
    pthread_mutex_unlock(&c->lock);
}

static int
s_hello(dmp_client_t *c)
{
    dmp__msg_t req = {.kind = DMP__MSG_HELLO}, rep;
    req.u.hello.version = DMP_PROTOCOL_VERSION;
    dmp__strlcpy(req.u.hello.role, "client", sizeof req.u.hello.role);
    int rc = dmp__client_request(c, NULL, &req, &rep, DMP__MSG_HELLO, 0);
    if (rc == 0) {
        pthread_mutex_lock(&c->lock);
        dmp__strlcpy(c->node, rep.u.hello.node, sizeof c->node);
        pthread_mutex_unlock(&c->lock);
        dmp__msg_clear(&rep);
    }
    return rc;
}

/* Options on the DEALER before it connects. */
static int
s_setup_socket(dmp_client_t *c, bool tcp, const dmp__keypair_t *kp,
               const char *server_pub)
{
    int one = 1, hb_ivl = 1000, hb_timeout = 3000;
    int rc = dmp__sock_defaults(c->sock);
    if (rc == 0 &&
        (zmq_setsockopt(c->sock, ZMQ_IMMEDIATE, &one, sizeof one) != 0 ||
         zmq_setsockopt(c->sock, ZMQ_HEARTBEAT_IVL, &hb_ivl,
                        sizeof hb_ivl) != 0 ||
         zmq_setsockopt(c->sock, ZMQ_HEARTBEAT_TIMEOUT, &hb_timeout,
                        sizeof hb_timeout) != 0))
        rc = -errno;
    if (rc == 0 && tcp)
        rc = dmp__sock_curve_client(c->sock, kp, server_pub);
    return rc;
}

/* After the handshake: watch for disconnects, start the I/O thread. */
static int
s_start_io(dmp_client_t *c)
{
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://dmp-client-mon-%p", (void *)c);
    if (zmq_socket_monitor(c->sock, ep, ZMQ_EVENT_DISCONNECTED) != 0)
        return -errno;
    c->mon = zmq_socket(c->ctx, ZMQ_PAIR);
    if (!c->mon || zmq_connect(c->mon, ep) != 0)
        return -errno;
    size_t fd_len = sizeof c->sock_fd;
    if (zmq_getsockopt(c->sock, ZMQ_FD, &c->sock_fd, &fd_len) != 0)
        return -errno;
    if (pthread_create(&c->io, NULL, s_io, c) != 0)
        return -EAGAIN;
    c->io_started = true;
    return 0;
}

static int s_open(void *ctx, const char *address, bool tcp,
                  const dmp__keypair_t *kp, const char *server_pub,
                  double request_timeout, double connect_timeout,
                  bool caller_reads, dmp_client_t **client_p, char *errbuf,
                  size_t errlen);

int
dmp_client_connect(const dmp_client_opts_t *opts, dmp_client_t **client_p,
                   char *errbuf, size_t errlen)
{
    char scratch[DMP__TEXT_MAX];
    if (!errbuf) {
        errbuf = scratch;
        errlen = sizeof scratch;
    }
    errbuf[0] = '\0';
    if (!opts || !opts->address || !dmp__endpoint_valid(opts->address)) {
        snprintf(errbuf, errlen, "invalid node address '%s': expected "
                 "tcp://HOST:PORT or ipc://PATH",
                 opts && opts->address ? opts->address : "");
        return -EINVAL;
    }
    bool tcp = strncmp(opts->address, "tcp://", 6) == 0;
    dmp__keypair_t kp = {0};
    char server_pub[DMP__Z85_KEY_LEN + 1] = "";
    int rc = 0;
    if (tcp) {
        if (!opts->key_file || !*opts->key_file) {
            snprintf(errbuf, errlen, "no client key: tcp connections are "
                     "authenticated; give --key FILE or set DMP_KEY");
            return DMP_EKEY;
        }
        if (!opts->server_key || !*opts->server_key) {
            snprintf(errbuf, errlen, "no server key to pin: give "
                     "--server-key FILE or set DMP_SERVER_KEY");
            return DMP_EKEY;
        }
        if (sodium_init() < 0)
            return -ENOMEM;
        rc = dmp__key_load_secret(opts->key_file, &kp, errbuf, errlen);
        if (rc == 0)
            rc = dmp__key_load_public(opts->server_key, server_pub, errbuf,
                                      errlen);
        if (rc) {
            dmp__keypair_wipe(&kp);
            return rc;
        }
    }

    rc = s_open(NULL, opts->address, tcp, &kp, server_pub,
                opts->request_timeout, opts->connect_timeout, false,
                client_p, errbuf, errlen);
    dmp__keypair_wipe(&kp);
    return rc;
}

/* Connects, checks the handshake, starts the I/O thread, says hello.
 * ctx: another client's context to share (NULL: a context of its own). */
static int
s_open(void *ctx, const char *address, bool tcp, const dmp__keypair_t *kp,
       const char *server_pub, double request_timeout,
       double connect_timeout, bool caller_reads, dmp_client_t **client_p,
       char *errbuf, size_t errlen)
{
    int rc;
    dmp_client_t *c = dmp__calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->wake_fd = -1;
    c->reader_fd = -1;
    c->caller_reads = caller_reads;
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->sock_mx, NULL);
    c->request_timeout = request_timeout > 0 ? request_timeout : 10.0;
    c->local = !tcp;
    dmp__strlcpy(c->node, address, sizeof c->node);
    c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    c->reader_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    c->own_ctx = ctx == NULL;
    c->ctx = ctx ? ctx : zmq_ctx_new();
    c->sock = c->ctx ? zmq_socket(c->ctx, ZMQ_DEALER) : NULL;
    if (!c->sock || c->wake_fd < 0 || c->reader_fd < 0) {
        rc = -ENOMEM;
        goto out;
    }
    rc = s_setup_socket(c, tcp, kp, server_pub);
    if (rc)
        goto out;
    double ctimeout = connect_timeout > 0 ? connect_timeout : 5.0;
    rc = dmp__sock_connect_checked(c->ctx, c->sock, address, ctimeout,
                                   errbuf, errlen);
    if (rc == 0)
        rc = s_start_io(c);
    if (rc == 0) {
        rc = s_hello(c);
        if (rc)
            snprintf(errbuf, errlen, "hello to '%s' failed: %s%s%s",
                     address, dmp_strerror(rc),
                     c->errmsg[0] ? ": " : "", c->errmsg);
    }
out:
    if (rc) {
        dmp__log(DMP_LOG_WARN, "%s", errbuf[0] ? errbuf : dmp_strerror(rc));
        dmp_client_destroy(&c);
        return rc;
    }
    *client_p = c;
    return 0;
}

int
dmp__client_connect_keys(dmp_client_t *share, const char *address,
                         const dmp__keypair_t *kp, const char *server_pub,
                         dmp_client_t **client_p, char *errbuf,
                         size_t errlen)
{
    errbuf[0] = '\0';
    /* No events come on a link: its waiting callers read (see top). */
    return s_open(share ? share->ctx : NULL, address, true, kp, server_pub,
                  0, 0, true, client_p, errbuf, errlen);
}

const char *
dmp_client_node(const dmp_client_t *client)
{
    return client->node;
}

bool
dmp__client_is_local(const dmp_client_t *c)
{
    return c->local;
}

const char *
dmp_client_errmsg(const dmp_client_t *client)
{
    return client->errmsg;
}

void
dmp__client_copy_errmsg(dmp_client_t *to, dmp_client_t *from)
{
    char text[DMP__TEXT_MAX];
    pthread_mutex_lock(&from->lock);
    dmp__strlcpy(text, from->errmsg, sizeof text);
    pthread_mutex_unlock(&from->lock);
    pthread_mutex_lock(&to->lock);
    dmp__strlcpy(to->errmsg, text, sizeof to->errmsg);
    pthread_mutex_unlock(&to->lock);
}

int
dmp_client_ping(dmp_client_t *client)
{
    return s_hello(client);
}

int
dmp_client_nodes(dmp_client_t *client, dmp_node_info_t **nodes_p,
                 size_t *count_p)
{
    dmp__msg_t req = {.kind = DMP__MSG_NODES_REQUEST}, rep;
    int rc = dmp__client_request(client, NULL, &req, &rep,
                                 DMP__MSG_NODES_REPLY, 0);
    if (rc)
        return rc;
    dmp_node_info_t *nodes = rep.u.nodes_reply.nodes;
    size_t n = rep.u.nodes_reply.n_nodes;
    if (!nodes) { /* an empty list still gets a freeable array */
        nodes = dmp__calloc(1, sizeof *nodes);
        if (!nodes)
            return -ENOMEM;
    }
    /* Ownership of the array moves to the caller. */
    rep.u.nodes_reply.nodes = NULL;
    dmp__msg_clear(&rep);
    *nodes_p = nodes;
    *count_p = n;
    return 0;
}

void
dmp_nodes_free(dmp_node_info_t **nodes_p)
{
    if (!nodes_p)
        return;
    dmp__free(*nodes_p);
    *nodes_p = NULL;
}
