/*
 * node_peers.c - membership: heartbeats, failure detection, gossip.
 *
 * Each agent keeps one DEALER (CURVE client, our node key) to every peer's
 * tcp ROUTER and sends it a Heartbeat each interval, one way. A peer is
 * alive while we heard it within two intervals, suspect after that, and
 * dead after heartbeat x liveness of silence (Paranoid Pirate's
 * liveness). Heartbeats carry the sender's members, so a node that names
 * one seed peer learns the rest; a learned member is contacted only if its
 * NAME.pub is in our keys directory. All times are monotonic: clock jumps
 * do not kill anyone.
 */
#define _GNU_SOURCE
#include "node.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

node_peer_t *
node_peers_find(node_t *node, const char *name)
{
    for (size_t i = 0; i < node->n_peers; i++)
        if (strcmp(node->peers[i].name, name) == 0)
            return &node->peers[i];
    return NULL;
}

/* Opens the DEALER to peer->address. */
static int
s_connect(node_t *node, node_peer_t *peer)
{
    void *sock = zmq_socket(node->ctx, ZMQ_DEALER);
    if (!sock)
        return -errno;
    int one = 1;
    int rc = dmp__sock_defaults(sock);
    if (rc == 0 &&
        zmq_setsockopt(sock, ZMQ_IMMEDIATE, &one, sizeof one) != 0)
        rc = -errno;
    if (rc == 0)
        rc = dmp__sock_curve_client(sock, &node->kp, peer->pubkey);
    if (rc == 0 && zmq_connect(sock, peer->address) != 0)
        rc = -errno;
    if (rc) {
        zmq_close(sock);
        return rc;
    }
    peer->sock = sock;
    return 0;
}

int
node_peers_add(node_t *node, const char *name, const char *address)
{
    if (strcmp(name, node->cfg.name) == 0)
        return 0;
    node_peer_t *peer = node_peers_find(node, name);
    if (peer) {
        if (strcmp(peer->address, address) == 0 || !address[0])
            return 0;
        info_f("node '%s' moved from '%s' to '%s'", name, peer->address,
               address);
        zmq_close(peer->sock);
        peer->sock = NULL;
        dmp__strlcpy(peer->address, address, sizeof peer->address);
        return s_connect(node, peer);
    }
    char path[PATH_MAX], pub[DMP__Z85_KEY_LEN + 1], err[256];
    snprintf(path, sizeof path, "%s/nodes/%s.pub", node->cfg.keys_dir, name);
    int rc = dmp__key_load_public(path, pub, err, sizeof err);
    if (rc) {
        warn_f("cannot add peer '%s': %s", name, err);
        return rc;
    }
    if (node->n_peers == node->cap_peers) {
        size_t cap = node->cap_peers ? node->cap_peers * 2 : 8;
        if (cap > DMP__MEMBERS_MAX)
            return -ENOSPC;
        node_peer_t *grown = dmp__realloc(node->peers, cap * sizeof *grown);
        if (!grown)
            return -ENOMEM;
        node->peers = grown;
        node->cap_peers = cap;
    }
    peer = &node->peers[node->n_peers];
    memset(peer, 0, sizeof *peer);
    dmp__strlcpy(peer->name, name, sizeof peer->name);
    dmp__strlcpy(peer->address, address, sizeof peer->address);
    memcpy(peer->pubkey, pub, sizeof peer->pubkey);
    peer->added = dmp__now();
    peer->state = DMP_NODE_SUSPECT; /* not heard yet */
    rc = s_connect(node, peer);
    if (rc) {
        warn_f("cannot connect to node '%s' at '%s': %s", name, address,
               dmp_strerror(rc));
        return rc;
    }
    node->n_peers++;
    char fp[13];
    dmp__key_fingerprint_z85(pub, fp);
    info_f("added peer '%s' address=%s fingerprint=%s", name, address, fp);
    return 0;
}

static dmp_node_state_t
s_state(const node_t *node, const node_peer_t *peer, double now)
{
    double since = now - (peer->heard ? peer->last_heard : peer->added);
    if (peer->heard && since <= 2 * node->cfg.heartbeat)
        return DMP_NODE_ALIVE;
    if (since <= node->cfg.heartbeat * node->cfg.liveness)
        return DMP_NODE_SUSPECT;
    return DMP_NODE_DEAD;
}

static double
s_load(void)
{
    double load[1] = {0};
    if (getloadavg(load, 1) != 1 || load[0] < 0)
        return 0;
    return load[0];
}

void
node_peers_tick(node_t *node)
{
    double now = dmp__now();
    /* Gossip only what fits; an allocation failure just skips gossip. */
    dmp__member_t *members =
        node->n_peers ? dmp__calloc(node->n_peers, sizeof *members) : NULL;
    size_t n = 0;
    for (size_t i = 0; i < node->n_peers; i++) {
        node_peer_t *peer = &node->peers[i];
        dmp_node_state_t state = s_state(node, peer, now);
        if (state != peer->state) {
            if (state == DMP_NODE_DEAD) {
                warn_f("node '%s' is dead: silent for %.1f s", peer->name,
                       now - (peer->heard ? peer->last_heard : peer->added));
                node_route_peer_lost(node, peer);
            }
            else
                info_f("node '%s' is %s", peer->name,
                       dmp_node_state_name(state));
            peer->state = state;
        }
        if (state == DMP_NODE_ALIVE && members) {
            dmp__strlcpy(members[n].name, peer->name, DMP__NAME_MAX);
            dmp__strlcpy(members[n].address, peer->address, DMP__ADDR_MAX);
            n++;
        }
    }
    dmp__msg_t hb = {.kind = DMP__MSG_HEARTBEAT};
    hb.version = DMP_PROTOCOL_VERSION;
    dmp__strlcpy(hb.u.heartbeat.node, node->cfg.name, DMP__NAME_MAX);
    dmp__strlcpy(hb.u.heartbeat.address, node->cfg.advertise, DMP__ADDR_MAX);
    hb.u.heartbeat.cores = (uint32_t)sysconf(_SC_NPROCESSORS_ONLN);
    hb.u.heartbeat.load = s_load();
    hb.u.heartbeat.uptime_ms = (uint64_t)((now - node->started) * 1000);
    hb.u.heartbeat.incarnation = node->incarnation;
    hb.u.heartbeat.processes = node_spawn_running(node);
    hb.u.heartbeat.members = members;
    hb.u.heartbeat.n_members = n;
    for (size_t i = 0; i < node->n_peers; i++) {
        /* DONTWAIT + IMMEDIATE: a dead peer costs nothing and never
         * blocks the loop; nothing queues up for it either. */
        int rc = dmp__sock_send(node->peers[i].sock, NULL, 0, &hb,
                                ZMQ_DONTWAIT);
        if (rc && rc != -EAGAIN)
            debug_f("heartbeat to '%s' failed: %s", node->peers[i].name,
                    dmp_strerror(rc));
    }
    dmp__free(members);
}

void
node_peers_on_heartbeat(node_t *node, const char *user_id,
                        const dmp__msg_t *msg)
{
    const char *name = msg->u.heartbeat.node;
    if (strcmp(name, user_id) != 0) {
        /* Client keys have User-Ids "client/NAME": never a node's name. */
        warn_f("dropped heartbeat: claims node '%s' but key is '%s'", name,
               user_id);
        return;
    }
    if (strcmp(name, node->cfg.name) == 0) {
        warn_f("dropped heartbeat from another node named '%s' (ours)",
               name);
        return;
    }
    node_peer_t *peer = node_peers_find(node, name);
    if (!peer || (msg->u.heartbeat.address[0] &&
                  strcmp(peer->address, msg->u.heartbeat.address) != 0)) {
        if (!msg->u.heartbeat.address[0] ||
            node_peers_add(node, name, msg->u.heartbeat.address) != 0)
            return;
        peer = node_peers_find(node, name);
        if (!peer)
            return;
    }
    if (peer->heard && peer->incarnation != msg->u.heartbeat.incarnation) {
        info_f("node '%s' restarted", name);
        /* Its processes and objects are not the ones we knew. */
        node_objects_peer_lost(node, name);
        node_holds_peer_lost(node, name);
    }
    peer->heard = true;
    peer->last_heard = dmp__now();
    peer->incarnation = msg->u.heartbeat.incarnation;
    peer->cores = msg->u.heartbeat.cores;
    peer->load = msg->u.heartbeat.load;
    peer->uptime_ms = msg->u.heartbeat.uptime_ms;
    peer->processes = msg->u.heartbeat.processes;
    if (peer->state != DMP_NODE_ALIVE) {
        info_f("node '%s' is alive", name);
        peer->state = DMP_NODE_ALIVE;
    }
    node_route_flush(node, peer); /* requests waiting for our link */
    /* Gossip: members we do not know yet, if we hold their keys. */
    for (size_t i = 0; i < msg->u.heartbeat.n_members; i++) {
        const dmp__member_t *m = &msg->u.heartbeat.members[i];
        if (strcmp(m->name, node->cfg.name) == 0 || node_peers_find(node, m->name) ||
            !m->address[0])
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/nodes/%s.pub", node->cfg.keys_dir,
                 m->name);
        if (access(path, R_OK) == 0)
            node_peers_add(node, m->name, m->address);
    }
}

int
node_peers_list(node_t *node, dmp_node_info_t **nodes_p, size_t *n_p)
{
    size_t n = node->n_peers + 1;
    dmp_node_info_t *nodes = dmp__calloc(n, sizeof *nodes);
    if (!nodes)
        return -ENOMEM;
    double now = dmp__now();
    dmp_node_info_t *self = &nodes[0];
    dmp__strlcpy(self->name, node->cfg.name, sizeof self->name);
    dmp__strlcpy(self->address, node->cfg.advertise, sizeof self->address);
    self->state = DMP_NODE_ALIVE;
    self->cores = (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
    self->load = s_load();
    self->uptime_ms = (uint64_t)((now - node->started) * 1000);
    self->processes = node_spawn_running(node);
    for (size_t i = 0; i < node->n_peers; i++) {
        const node_peer_t *peer = &node->peers[i];
        dmp_node_info_t *info = &nodes[i + 1];
        dmp__strlcpy(info->name, peer->name, sizeof info->name);
        dmp__strlcpy(info->address, peer->address, sizeof info->address);
        info->state = s_state(node, peer, now);
        info->cores = peer->cores;
        info->load = peer->load;
        info->uptime_ms = peer->uptime_ms;
        info->processes = peer->processes;
        double since = now - (peer->heard ? peer->last_heard : peer->added);
        info->last_seen_ms = (uint64_t)(since * 1000);
    }
    *nodes_p = nodes;
    *n_p = n;
    return 0;
}

void
node_peers_close(node_t *node)
{
    for (size_t i = 0; i < node->n_peers; i++)
        if (node->peers[i].sock)
            zmq_close(node->peers[i].sock);
    dmp__free(node->peers);
    node->peers = NULL;
    node->n_peers = node->cap_peers = 0;
}
