/*
 * node_holds.c - what processes of this host hold at other nodes: pipe
 * ends, and direct links.
 *
 * A process that sends into a pipe owned by another node holds its end
 * there (a RingOp HOLD_WRITER we forward), and the owner keeps the ring
 * open for it until it closes. Only we can tell when such a process dies,
 * so we count its holds as they pass (holds minus closes, per process and
 * ring) and watch it through a pidfd: when it dies we send the owner the
 * closes it still owed, behind everything it sent (requests to one peer
 * leave in order), and the reader gets EOF once the data is drained.
 *
 * A child that got a pipe end in its arguments holds it from its start, as
 * a forked Python child does: its parent asks us (a RingOp naming the
 * owner) right after the spawn, we hold the end at the owner in the
 * child's name, and the child's own hold, when it attaches, takes that
 * one over instead of going to the owner again.
 *
 * A direct link (proto Direct): a process that uses objects of another
 * node asks us to vouch for a CURVE key it made; we do at that peer, which
 * admits the key as job/US/PID, and tell the process the address and key
 * we know the peer by. Its ring operations then cross one hop (its own
 * holds and closes still pass here, to be counted). When it dies we tell
 * the peer to forget the key; the peer forgets all we vouched for if we
 * die or restart. The peer's side is here too (vouch, drop).
 */
#define _GNU_SOURCE
#include "node.h"

#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <zmq.h>

#define HOLDS_MAX 65536      /* entries: bounded whatever clients claim */

struct node_hold {
    struct node_hold *next;
    pid_t pid;
    uint64_t start;          /* its start time: pids are reused */
    int pidfd;               /* -1: checked at every tick instead */
    char owner[DMP__NAME_MAX];
    uint64_t obj;
    uint32_t ring;
    uint32_t count;          /* holds at the owner not closed yet */
    bool reserved;           /* held for a child that has not attached */
    bool link;               /* a direct link: key vouched for at owner */
    uint8_t key[32];
};

static struct node_hold *
s_find(node_t *node, pid_t pid, uint64_t start, const char *owner,
       uint64_t obj, uint32_t ring)
{
    for (struct node_hold *h = node->holds; h; h = h->next)
        if (!h->link && h->pid == pid && h->start == start &&
            h->obj == obj && h->ring == ring && strcmp(h->owner, owner) == 0)
            return h;
    return NULL;
}

/* A new entry, watched through a pidfd while they last; NULL when the
 * process is gone or memory is short. */
static struct node_hold *
s_add(node_t *node, pid_t pid, uint64_t start, const char *owner,
      uint64_t obj, uint32_t ring)
{
    size_t n = 0, fds = 0;
    for (struct node_hold *h = node->holds; h; h = h->next) {
        n++;
        fds += h->pidfd >= 0;
    }
    if (n >= HOLDS_MAX)
        return NULL;
    struct node_hold *h = dmp__calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->pidfd = fds < NODE_HOLD_FDS_MAX
                   ? (int)syscall(SYS_pidfd_open, pid, 0)
                   : -1;
    /* The pidfd is of whoever has the pid now: the one we mean? */
    if (dmp__proc_starttime(pid) != start) {
        if (h->pidfd >= 0)
            close(h->pidfd);
        dmp__free(h);
        return NULL;
    }
    h->pid = pid;
    h->start = start;
    dmp__strlcpy(h->owner, owner, sizeof h->owner);
    h->obj = obj;
    h->ring = ring;
    h->next = node->holds;
    node->holds = h;
    return h;
}

static void
s_drop(node_t *node, struct node_hold *h)
{
    for (struct node_hold **hp = &node->holds; *hp; hp = &(*hp)->next)
        if (*hp == h) {
            *hp = h->next;
            break;
        }
    if (h->pidfd >= 0)
        close(h->pidfd);
    dmp__free(h);
}

static void
s_reply(const node_sub_t *to, uint64_t id, int rc)
{
    dmp__msg_t rep = {.kind = DMP__MSG_RING_REPLY};
    rep.id = id;
    rep.version = DMP_PROTOCOL_VERSION;
    if (rc)
        dmp__msg_error(&rep, id, rc, "cannot hold a pipe end: %s",
                       dmp_strerror(rc));
    node_send_to(to, &rep);
}

/* The process of h died: the owner gets the closes it still owed. The
 * answers are for nobody. */
static void
s_gone(node_t *node, struct node_hold *h)
{
    node_peer_t *peer = node_peers_find(node, h->owner);
    if (peer && peer->state != DMP_NODE_DEAD && h->link) {
        debug_f("process %d ended: its direct link to '%s' goes",
                (int)h->pid, h->owner);
        node_sub_t nobody = {0};
        dmp__msg_t req = {.kind = DMP__MSG_DIRECT};
        req.version = DMP_PROTOCOL_VERSION;
        req.u.direct.op = DMP__DIRECT_DROP;
        memcpy(req.u.direct.key, h->key, sizeof h->key);
        req.u.direct.pid = (uint32_t)h->pid;
        node_route_forward(node, peer, &nobody, &req);
    } else if (peer && peer->state != DMP_NODE_DEAD && h->count) {
        debug_f("process %d ended holding %u end(s) of pipe %llu of node "
                "'%s': closing them", (int)h->pid, h->count,
                (unsigned long long)h->obj, h->owner);
        node_sub_t nobody = {0};
        for (uint32_t i = 0; i < h->count; i++) {
            dmp__msg_t req = {.kind = DMP__MSG_RING_OP};
            req.version = DMP_PROTOCOL_VERSION;
            req.u.ring_op.obj = h->obj;
            req.u.ring_op.ring = h->ring;
            req.u.ring_op.op = DMP__RING_CLOSE_WRITER;
            req.u.ring_op.holder_pid = (uint32_t)h->pid;
            req.u.ring_op.died = true;
            node_route_forward(node, peer, &nobody, &req);
        }
    }
    s_drop(node, h);
}

/* A parent asks us to hold a ring of `owner` for our process holder_pid. */
static void
s_hold_for(node_t *node, dmp__msg_t *req, const node_sub_t *from)
{
    pid_t pid = (pid_t)req->u.ring_op.holder_pid;
    char owner[DMP__NAME_MAX];
    dmp__strlcpy(owner, req->u.ring_op.owner, sizeof owner);
    uint64_t start = dmp__proc_starttime(pid);
    if (!dmp__proc_alive(pid, start) ||
        s_find(node, pid, start, owner, req->u.ring_op.obj,
               req->u.ring_op.ring)) {
        /* Gone already (its copy went with it), or it holds the end. */
        s_reply(from, req->id, 0);
        return;
    }
    node_peer_t *peer = node_peers_find(node, owner);
    if (!peer || peer->state == DMP_NODE_DEAD) {
        s_reply(from, req->id, DMP_ENODE);
        return;
    }
    struct node_hold *h = s_add(node, pid, start, owner, req->u.ring_op.obj,
                                req->u.ring_op.ring);
    if (!h) {
        s_reply(from, req->id, -ENOMEM);
        return;
    }
    h->count = 1;
    h->reserved = true;
    req->u.ring_op.owner[0] = '\0'; /* at the owner, a hold of ours */
    node_route_forward(node, peer, from, req);
}

bool
node_holds_request(node_t *node, dmp__msg_t *req, bool local,
                   const node_sub_t *from)
{
    const __typeof__(req->u.ring_op) *op = &req->u.ring_op;
    bool for_us = !req->node[0] || strcmp(req->node, node->cfg.name) == 0;
    if (op->owner[0]) {
        if (!for_us || strcmp(op->owner, node->cfg.name) == 0)
            return false; /* forwarded as is, or our own ring */
        s_hold_for(node, req, from);
        return true;
    }
    /* A hold or close of a ring elsewhere by a process of this host, on
     * its way: counted. Pids from elsewhere mean nothing here. */
    if (!local || for_us || op->holder_pid == 0 ||
        (op->op != DMP__RING_HOLD_WRITER && op->op != DMP__RING_CLOSE_WRITER))
        return false;
    pid_t pid = (pid_t)op->holder_pid;
    uint64_t start = dmp__proc_starttime(pid);
    if (start == 0)
        return false;
    struct node_hold *h = s_find(node, pid, start, req->node, op->obj,
                                 op->ring);
    if (op->op == DMP__RING_HOLD_WRITER) {
        if (h && h->reserved) { /* held since its start: taken over */
            h->reserved = false;
            s_reply(from, req->id, 0);
            return true;
        }
        if (h)
            h->count++;
        else if ((h = s_add(node, pid, start, req->node, op->obj,
                            op->ring)) != NULL)
            h->count = 1;
        /* Without an entry (memory short) it is held until closed. */
        return false;
    }
    if (h && h->count > 0 && --h->count == 0)
        s_drop(node, h);
    return false;
}

static void
s_direct_reply(const node_sub_t *to, uint64_t id, int rc, const char *what)
{
    dmp__msg_t rep = {.kind = DMP__MSG_OK};
    rep.id = id;
    rep.version = DMP_PROTOCOL_VERSION;
    if (rc)
        dmp__msg_error(&rep, id, rc, "direct link: %s: %s", what,
                       dmp_strerror(rc));
    node_send_to(to, &rep);
}

/* Our process asks for a direct link to a peer. */
static void
s_direct_ask(node_t *node, dmp__msg_t *req, const node_sub_t *from)
{
    pid_t pid = (pid_t)req->u.direct.pid;
    uint64_t start = dmp__proc_starttime(pid);
    node_peer_t *peer = node_peers_find(node, req->u.direct.to);
    if (!peer || peer->state == DMP_NODE_DEAD) {
        s_direct_reply(from, req->id, DMP_ENODE, "that node is unreachable");
        return;
    }
    if (!peer->address[0] || !dmp__z85_key_valid(peer->pubkey)) {
        s_direct_reply(from, req->id, -ENOTSUP, "no address or key known");
        return;
    }
    if (!dmp__proc_alive(pid, start) || start == 0) {
        s_direct_reply(from, req->id, -ESRCH, "no such process here");
        return;
    }
    struct node_hold *h = s_add(node, pid, start, peer->name, 0, 0);
    if (!h) {
        s_direct_reply(from, req->id, -ENOMEM, "cannot watch the process");
        return;
    }
    h->link = true;
    memcpy(h->key, req->u.direct.key, sizeof h->key);
    dmp__msg_t vouch = {.kind = DMP__MSG_DIRECT};
    vouch.id = req->id; /* the answer goes back under the asker's id */
    vouch.version = DMP_PROTOCOL_VERSION;
    vouch.u.direct.op = DMP__DIRECT_VOUCH;
    memcpy(vouch.u.direct.key, h->key, sizeof h->key);
    vouch.u.direct.pid = (uint32_t)pid;
    node_route_forward(node, peer, from, &vouch); /* its INFO: node_route */
}

void
node_holds_direct(node_t *node, dmp__msg_t *req, bool local,
                  const char *user_id, const node_sub_t *from)
{
    uint32_t op = req->u.direct.op;
    if (op == DMP__DIRECT_ASK) {
        if (!local) /* only a process of this host can be watched here */
            s_direct_reply(from, req->id, -EPERM, "ask your own node");
        else
            s_direct_ask(node, req, from);
        return;
    }
    /* vouch and drop: from a peer node only (a client's identity has a
     * '/', never a peer's name). */
    if (op == DMP__DIRECT_INFO || local || strchr(user_id, '/') ||
        !node_peers_find(node, user_id) || !node->auth) {
        s_direct_reply(from, req->id, -EPERM, "not from a peer node");
        return;
    }
    char name[DMP__NAME_MAX];
    snprintf(name, sizeof name, "job/%s/%u", user_id, req->u.direct.pid);
    if (op == DMP__DIRECT_DROP) {
        node_auth_unvouch(node->auth, req->u.direct.key);
        info_f("direct link of %s closed: its process ended", name);
        s_direct_reply(from, req->id, 0, NULL);
        return;
    }
    int rc = node_auth_vouch(node->auth, req->u.direct.key, name);
    if (rc) {
        s_direct_reply(from, req->id, rc, "cannot admit the key");
        return;
    }
    info_f("direct link for %s: its key is admitted", name);
    dmp__msg_t rep = {.kind = DMP__MSG_DIRECT};
    rep.id = req->id;
    rep.version = DMP_PROTOCOL_VERSION;
    rep.u.direct.op = DMP__DIRECT_INFO;
    /* The asking node puts in what it knows us by; this is for show. */
    dmp__strlcpy(rep.u.direct.address,
                 node->cfg.advertise[0] ? node->cfg.advertise
                                        : node->cfg.listen,
                 sizeof rep.u.direct.address);
    dmp__strlcpy(rep.u.direct.server_key, node->kp.public_z85,
                 sizeof rep.u.direct.server_key);
    node_send_to(from, &rep);
}

void
node_holds_on_info(node_t *node, node_peer_t *peer, dmp__msg_t *msg)
{
    (void)node;
    /* Our process connects to the peer as we do, and pins the key we
     * pinned: never what the peer says about itself. */
    dmp__strlcpy(msg->u.direct.address, peer->address,
                 sizeof msg->u.direct.address);
    dmp__strlcpy(msg->u.direct.server_key, peer->pubkey,
                 sizeof msg->u.direct.server_key);
}

size_t
node_holds_poll_items(node_t *node, void *items_v, size_t max)
{
    zmq_pollitem_t *items = items_v;
    size_t n = 0;
    for (struct node_hold *h = node->holds; h && n < max; h = h->next)
        if (h->pidfd >= 0)
            items[n++] = (zmq_pollitem_t){NULL, h->pidfd, ZMQ_POLLIN, 0};
    return n;
}

void
node_holds_on_fd(node_t *node, int fd)
{
    for (struct node_hold *h = node->holds; h; h = h->next)
        if (h->pidfd == fd) {
            /* A number closed and reused in this round of the loop may
             * name a newer, live process's pidfd. */
            if (dmp__proc_alive(h->pid, h->start))
                return;
            pid_t pid = h->pid;
            uint64_t start = h->start;
            /* Every entry of that process: its other rings too. */
            struct node_hold *next;
            for (h = node->holds; h; h = next) {
                next = h->next;
                if (h->pid == pid && h->start == start)
                    s_gone(node, h);
            }
            return;
        }
}

void
node_holds_tick(node_t *node)
{
    struct node_hold *next;
    for (struct node_hold *h = node->holds; h; h = next) {
        next = h->next;
        if (h->pidfd < 0 && !dmp__proc_alive(h->pid, h->start))
            s_gone(node, h);
    }
}

void
node_holds_peer_lost(node_t *node, const char *peer)
{
    struct node_hold *next;
    for (struct node_hold *h = node->holds; h; h = next) {
        next = h->next;
        if (strcmp(h->owner, peer) == 0)
            s_drop(node, h); /* its objects are gone with it */
    }
    /* And the keys it vouched for: its processes are not the ones we
     * admitted. */
    if (node->auth) {
        char prefix[DMP__NAME_MAX + 8];
        snprintf(prefix, sizeof prefix, "job/%s/", peer);
        size_t n = node_auth_unvouch_prefix(node->auth, prefix);
        if (n)
            info_f("forgot %zu direct link key(s) of node '%s'", n, peer);
    }
}

void
node_holds_close(node_t *node)
{
    while (node->holds)
        s_drop(node, node->holds);
}
