/*
 * node_route.c - requests for other nodes, and the answers coming back.
 *
 * A client talks to one agent. A request whose envelope names another node
 * is sent on to that peer over our DEALER with an id of ours (the client's
 * ids may collide with other clients'); the reply comes back on the DEALER
 * and is relayed under the client's id. A process started that way sends
 * its events (output, exit) to us, and we relay them to the client that
 * asked. One hop only: the envelope's node is cleared when forwarded.
 * When a peer dies, every request waiting on it fails with DMP_ENODE and
 * every process of it that a client waits for is reported lost.
 */
#define _GNU_SOURCE
#include "node.h"

#include <string.h>
#include <zmq.h>

/* A forward ends with its reply or its peer's death; this bound only
 * frees memory if a live peer never answers (a blocked get may rightly
 * wait for hours). */
#define FORWARD_TIMEOUT (7 * 86400.0)

struct node_fwd {
    struct node_fwd *next;
    uint64_t id;                /* our id on the peer link */
    uint64_t client_id;         /* the client's request id */
    node_sub_t client;          /* where the reply goes */
    char peer[DMP__NAME_MAX];
    double deadline;
    uint8_t *unsent;            /* encoded request our link could not take
                                 * yet (a peer heard but not yet connected
                                 * back to); sent by node_route_flush */
    size_t unsent_len;
    double send_by;             /* give up on sending then: DMP_ENODE */
};

/* How long a request waits for our link to a live peer to come up (it
 * reconnects with a backoff of up to 2 s after a restart). */
#define SEND_WAIT 3.0

/* A process on a peer, started for one of our clients. */
struct node_rsub {
    struct node_rsub *next;
    char peer[DMP__NAME_MAX];
    uint64_t proc;
    node_sub_t client;
};

static void
s_reply_error(const node_sub_t *client, uint64_t id, int code,
              const char *peer)
{
    dmp__msg_t rep;
    dmp__msg_error(&rep, id, code, "node '%s' is unreachable", peer);
    node_send_to(client, &rep);
}

void
node_route_forward(node_t *node, node_peer_t *peer, const node_sub_t *client,
                   dmp__msg_t *req)
{
    struct node_fwd *f = dmp__calloc(1, sizeof *f);
    if (!f) {
        dmp__msg_t rep;
        dmp__msg_error(&rep, req->id, -ENOMEM, "out of memory");
        node_send_to(client, &rep);
        return;
    }
    f->id = ++node->next_fwd;
    f->client_id = req->id;
    f->client = *client;
    dmp__strlcpy(f->peer, peer->name, sizeof f->peer);
    f->deadline = dmp__now() + FORWARD_TIMEOUT;
    req->id = f->id;
    req->node[0] = '\0';
    int rc = dmp__wire_encode(req, &f->unsent, &f->unsent_len);
    req->id = f->client_id;
    if (rc) {
        dmp__msg_t rep;
        dmp__msg_error(&rep, f->client_id, rc, "cannot forward: %s",
                       dmp_strerror(rc));
        node_send_to(client, &rep);
        dmp__free(f);
        return;
    }
    f->send_by = dmp__now() + SEND_WAIT;
    f->next = node->fwds;
    node->fwds = f;
    node_route_flush(node, peer);
}

/* The oldest request for peer still waiting to be sent (ids grow). */
static struct node_fwd **
s_oldest_unsent(node_t *node, const node_peer_t *peer)
{
    struct node_fwd **best = NULL;
    for (struct node_fwd **fp = &node->fwds; *fp; fp = &(*fp)->next)
        if ((*fp)->unsent && strcmp((*fp)->peer, peer->name) == 0 &&
            (!best || (*fp)->id < (*best)->id))
            best = fp;
    return best;
}

/* Requests to one peer leave in the order they came (a holder's release
 * of a Value's lock must not overtake its writes, nor its next acquire
 * the release): oldest first, and none while an older one waits. */
void
node_route_flush(node_t *node, node_peer_t *peer)
{
    double now = dmp__now();
    struct node_fwd **fp;
    while ((fp = s_oldest_unsent(node, peer)) != NULL) {
        struct node_fwd *f = *fp;
        if (zmq_send(peer->sock, f->unsent, f->unsent_len, ZMQ_DONTWAIT) >=
            0) {
            dmp__free(f->unsent);
            f->unsent = NULL;
            continue;
        }
        if (now < f->send_by)
            return; /* the link is not up yet: the rest wait behind it */
        debug_f("cannot forward to '%s': %s", peer->name,
                zmq_strerror(errno));
        *fp = f->next;
        s_reply_error(&f->client, f->client_id, DMP_ENODE, peer->name);
        dmp__free(f->unsent);
        dmp__free(f);
    }
}

static void
s_relay_reply(node_t *node, node_peer_t *peer, dmp__msg_t *msg)
{
    for (struct node_fwd **fp = &node->fwds; *fp; fp = &(*fp)->next) {
        struct node_fwd *f = *fp;
        if (f->id != msg->id || strcmp(f->peer, peer->name) != 0)
            continue;
        *fp = f->next;
        if (msg->kind == DMP__MSG_SPAWN_REPLY) {
            struct node_rsub *s = dmp__calloc(1, sizeof *s);
            if (s) {
                dmp__strlcpy(s->peer, peer->name, sizeof s->peer);
                s->proc = msg->u.spawn_reply.proc;
                s->client = f->client;
                s->next = node->rsubs;
                node->rsubs = s;
            }
        }
        if (msg->kind == DMP__MSG_DIRECT &&
            msg->u.direct.op == DMP__DIRECT_INFO)
            node_holds_on_info(node, peer, msg);
        msg->id = f->client_id;
        node_send_to(&f->client, msg);
        dmp__free(f->unsent);
        dmp__free(f);
        return;
    }
    debug_f("late reply from '%s' id=%llu dropped", peer->name,
            (unsigned long long)msg->id);
}

static void
s_relay_event(node_t *node, node_peer_t *peer, dmp__msg_t *msg)
{
    const char *origin = msg->kind == DMP__MSG_PROC_OUTPUT
                             ? msg->u.proc_output.node
                             : msg->u.proc_exit.node;
    uint64_t proc = msg->kind == DMP__MSG_PROC_OUTPUT
                        ? msg->u.proc_output.proc
                        : msg->u.proc_exit.proc;
    if (strcmp(origin, peer->name) != 0) {
        warn_f("dropped an event from '%s' about node '%s'", peer->name,
               origin);
        return;
    }
    for (struct node_rsub **sp = &node->rsubs; *sp; sp = &(*sp)->next) {
        struct node_rsub *s = *sp;
        if (s->proc != proc || strcmp(s->peer, origin) != 0)
            continue;
        node_send_to(&s->client, msg);
        if (msg->kind == DMP__MSG_PROC_EXIT) {
            *sp = s->next;
            dmp__free(s);
        }
        return;
    }
}

void
node_route_on_peer_msg(node_t *node, node_peer_t *peer, dmp__msg_t *msg)
{
    if (msg->kind == DMP__MSG_PROC_OUTPUT || msg->kind == DMP__MSG_PROC_EXIT)
        s_relay_event(node, peer, msg);
    else
        s_relay_reply(node, peer, msg);
}

void
node_route_peer_lost(node_t *node, node_peer_t *peer)
{
    node_objects_peer_lost(node, peer->name);
    node_holds_peer_lost(node, peer->name);
    for (struct node_fwd **fp = &node->fwds; *fp;) {
        struct node_fwd *f = *fp;
        if (strcmp(f->peer, peer->name) != 0) {
            fp = &f->next;
            continue;
        }
        *fp = f->next;
        s_reply_error(&f->client, f->client_id, DMP_ENODE, peer->name);
        dmp__free(f->unsent);
        dmp__free(f);
    }
    for (struct node_rsub **sp = &node->rsubs; *sp;) {
        struct node_rsub *s = *sp;
        if (strcmp(s->peer, peer->name) != 0) {
            sp = &s->next;
            continue;
        }
        *sp = s->next;
        dmp__msg_t ev = {.kind = DMP__MSG_PROC_EXIT};
        ev.version = DMP_PROTOCOL_VERSION;
        dmp__strlcpy(ev.u.proc_exit.node, s->peer, DMP__NAME_MAX);
        ev.u.proc_exit.proc = s->proc;
        ev.u.proc_exit.error = DMP_ENODE;
        node_send_to(&s->client, &ev);
        dmp__free(s);
    }
}

void
node_route_tick(node_t *node)
{
    for (size_t i = 0; i < node->n_peers; i++)
        node_route_flush(node, &node->peers[i]);
    double now = dmp__now();
    for (struct node_fwd **fp = &node->fwds; *fp;) {
        struct node_fwd *f = *fp;
        if (f->deadline > now) {
            fp = &f->next;
            continue;
        }
        *fp = f->next;
        s_reply_error(&f->client, f->client_id, DMP_ENODE, f->peer);
        dmp__free(f->unsent);
        dmp__free(f);
    }
}

void
node_route_close(node_t *node)
{
    while (node->fwds) {
        struct node_fwd *f = node->fwds;
        node->fwds = f->next;
        dmp__free(f->unsent);
        dmp__free(f);
    }
    while (node->rsubs) {
        struct node_rsub *s = node->rsubs;
        node->rsubs = s->next;
        dmp__free(s);
    }
}
