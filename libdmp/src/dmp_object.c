/*
 * dmp_object.c - what queues and pipes share: objects owned by a node.
 *
 * An object (a queue, a pipe) is created by the agent this process talks
 * to and lives in that node's shared memory. This module asks for one,
 * tells whether its rings can be mapped here (the owner is this host's
 * agent), routes operations to the owner (forwarded by our agent when it
 * is another node), and removes it. Handles start with the same header,
 * which this module writes and reads: a type letter, the owner's name and
 * the object id. An item too big for one frame crosses hosts in parts:
 * staged at the owner on a put, peeked for and then taken on a get, so it
 * is in the ring whole or not at all.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <math.h>
#include <sodium.h>
#include <string.h>
#include <unistd.h>

const char *
dmp__obj_route(const char *owner)
{
    dmp_client_t *c = dmp_default_client();
    return c && strcmp(owner, dmp_client_node(c)) == 0 ? NULL : owner;
}

bool
dmp__obj_is_local(const char *owner)
{
    dmp_client_t *c = dmp_default_client();
    return c && dmp__client_is_local(c) &&
           strcmp(owner, dmp_client_node(c)) == 0;
}

bool
dmp__obj_may_map(const char *owner)
{
    dmp_client_t *c = dmp_default_client();
    return c && strcmp(owner, dmp_client_node(c)) == 0;
}

int
dmp__obj_new(const dmp__msg_t *params, char owner[DMP__NAME_MAX],
             uint64_t *id, char rings[][DMP__RING_NAME_MAX], size_t *n_rings)
{
    int rc = dmp__init_lazy();
    if (rc)
        return rc;
    dmp__msg_t req = *params, rep;
    req.kind = DMP__MSG_OBJ_NEW;
    rc = dmp__client_request(dmp_default_client(), NULL, &req, &rep,
                             DMP__MSG_OBJ_INFO, 0);
    if (rc)
        return rc;
    dmp__strlcpy(owner, rep.u.obj_info.node, DMP__NAME_MAX);
    *id = rep.u.obj_info.id;
    *n_rings = rep.u.obj_info.n_rings;
    for (size_t i = 0; i < rep.u.obj_info.n_rings; i++)
        dmp__strlcpy(rings[i], rep.u.obj_info.rings[i], DMP__RING_NAME_MAX);
    dmp__msg_clear(&rep);
    return 0;
}

/* One RingOp to the owner, straight over our link to it when we have one;
 * holds and closes through our agent, which counts them for when we die
 * without closing. The owner answers when the operation is done or timed
 * out; wait allows the network a margin on top. */
static int
s_request(dmp_client_t *c, const char *owner, dmp__msg_t *req,
          dmp__msg_t *rep, double wait)
{
    dmp_client_t *link = req->u.ring_op.holder_pid
                             ? NULL
                             : dmp__direct_client(owner);
    int rc = link ? dmp__client_request(link, NULL, req, rep,
                                        DMP__MSG_RING_REPLY, wait)
                  : dmp__client_request(c, dmp__obj_route(owner), req, rep,
                                        DMP__MSG_RING_REPLY, wait);
    if (rc && link) /* the error's text where the caller looks */
        dmp__client_copy_errmsg(c, link);
    if (rc == DMP_ENODE && link)
        dmp__direct_lost(owner, link);
    return rc;
}

/* Time a part may take: a frame over a slow network. */
#define PART_WAIT 60.0

/* A put of an item larger than one frame: its parts are staged at the
 * owner (node_stage.c), the last one puts it and waits like a PUT. Parts
 * go in order on one connection; a failure leaves nothing in the ring
 * (the owner drops the stage). */
static int
s_put_parts(dmp_client_t *c, const char *owner, dmp__msg_t *req,
            const uint8_t *data, size_t len, double timeout, bool forever)
{
    uint64_t seq = 0;
    while (seq == 0)
        randombytes_buf(&seq, sizeof seq);
    req->u.ring_op.op = DMP__RING_PUT_PART;
    req->u.ring_op.seq = seq;
    req->u.ring_op.total = len;
    double deadline = dmp__now() + (timeout > 0 ? timeout : 0);
    for (size_t off = 0; off < len;) {
        size_t n = len - off < DMP__REMOTE_ITEM_MAX ? len - off
                                                    : DMP__REMOTE_ITEM_MAX;
        bool last = off + n == len;
        double left = deadline - dmp__now();
        req->u.ring_op.offset = off;
        req->u.ring_op.data = (uint8_t *)data + off;
        req->u.ring_op.len = n;
        req->u.ring_op.timeout = !last ? 0 : forever ? -1
                                           : (left > 0 ? left : 0);
        dmp__msg_t rep;
        int rc = s_request(c, owner, req, &rep,
                           last && forever ? 86400.0 * 365
                                           : req->u.ring_op.timeout +
                                                 PART_WAIT);
        if (rc)
            return rc;
        dmp__msg_clear(&rep);
        off += n;
    }
    return 0;
}

/* The rest of an item whose first part a get brought (rep): peeks for
 * the other parts, then takes it. -ESTALE when another getter took it
 * meanwhile (the caller asks again); else the whole item in *out_p. */
static int
s_get_rest(dmp_client_t *c, const char *owner, dmp__msg_t *req,
           dmp__msg_t *rep, uint8_t **out_p, size_t *out_len)
{
    uint64_t total = rep->u.ring_reply.total;
    uint64_t seq = rep->u.ring_reply.seq;
    if (total > SIZE_MAX || seq == 0)
        return DMP_EPROTO;
    uint8_t *item = dmp__malloc((size_t)total);
    if (!item)
        return -ENOMEM; /* nothing taken */
    memcpy(item, rep->u.ring_reply.data, rep->u.ring_reply.len);
    size_t have = rep->u.ring_reply.len;
    req->u.ring_op.seq = seq;
    req->u.ring_op.timeout = 0;
    int rc = 0;
    while (rc == 0) {
        bool done = have == total;
        req->u.ring_op.op = done ? DMP__RING_TAKE : DMP__RING_PEEK;
        req->u.ring_op.offset = have;
        dmp__msg_t part;
        rc = s_request(c, owner, req, &part, PART_WAIT);
        if (rc)
            break;
        size_t n = part.u.ring_reply.len;
        if (!done && (n == 0 || part.u.ring_reply.total != total ||
                      n > total - have)) {
            rc = DMP_EPROTO;
        } else if (!done) {
            memcpy(item + have, part.u.ring_reply.data, n);
            have += n;
        }
        dmp__msg_clear(&part);
        if (done)
            break;
    }
    if (rc) {
        dmp__free(item);
        return rc;
    }
    *out_p = item;
    *out_len = (size_t)total;
    return 0;
}

int
dmp__obj_ring_op(const char *owner, uint64_t id, uint32_t ring, uint32_t op,
                 const void *data, size_t len, double timeout,
                 uint8_t **out_p, size_t *out_len, int64_t *count)
{
    dmp_client_t *c = dmp_default_client();
    if (!c)
        return -EBADF;
    dmp__msg_t req = {.kind = DMP__MSG_RING_OP}, rep;
    req.u.ring_op.obj = id;
    req.u.ring_op.ring = ring;
    req.u.ring_op.op = op;
    req.u.ring_op.data = (uint8_t *)data;
    req.u.ring_op.len = len;
    /* A pipe end's hold is ours: our node tells the owner if we die. */
    if (op == DMP__RING_HOLD_WRITER || op == DMP__RING_CLOSE_WRITER)
        req.u.ring_op.holder_pid = (uint32_t)getpid();
    bool forever = isinf(timeout) || timeout > 86400.0 * 24;
    if (op == DMP__RING_PUT && len > DMP__REMOTE_ITEM_MAX)
        return s_put_parts(c, owner, &req, data, len, timeout, forever);
    double deadline = dmp__now() + (timeout > 0 ? timeout : 0);
    int rc;
    for (;;) {
        double left = deadline - dmp__now();
        req.u.ring_op.op = op;
        req.u.ring_op.timeout = forever ? -1 : (left > 0 ? left : 0);
        rc = s_request(c, owner, &req, &rep,
                       forever ? 86400.0 * 365
                               : req.u.ring_op.timeout + 10.0);
        /* A get that waited is told "an item is there" (-EAGAIN) rather
         * than sent it (node_objects.c): ask again, for what time is
         * left; the owner then answers at once. */
        if (rc == -EAGAIN && op == DMP__RING_GET)
            continue;
        if (rc || op != DMP__RING_GET ||
            rep.u.ring_reply.total <= rep.u.ring_reply.len)
            break;
        /* The first part of an item too big for one frame. */
        uint8_t *item = NULL;
        size_t item_len = 0;
        rc = s_get_rest(c, owner, &req, &rep, &item, &item_len);
        dmp__msg_clear(&rep);
        if (rc == 0) {
            rep.u.ring_reply.data = item;
            rep.u.ring_reply.len = item_len;
            break;
        }
        if (rc != -ESTALE)
            return rc;
        /* Another getter took it: ask again (with what time is left; the
         * owner answers at once when there is none). */
        req.u.ring_op.seq = 0;
        req.u.ring_op.offset = 0;
    }
    if (rc)
        return rc;
    if (count)
        *count = rep.u.ring_reply.count;
    if (out_p) {
        *out_p = rep.u.ring_reply.data;
        *out_len = rep.u.ring_reply.len;
        rep.u.ring_reply.data = NULL;
    }
    dmp__msg_clear(&rep);
    return 0;
}

int
dmp__obj_hold_writer_for(const char *node, const char *owner, uint64_t id,
                         uint32_t ring, pid_t pid)
{
    dmp_client_t *c = dmp_default_client();
    if (!c)
        return -EBADF;
    dmp__msg_t req = {.kind = DMP__MSG_RING_OP}, rep;
    req.u.ring_op.obj = id;
    req.u.ring_op.ring = ring;
    req.u.ring_op.op = DMP__RING_HOLD_WRITER;
    req.u.ring_op.holder_pid = (uint32_t)pid;
    dmp__strlcpy(req.u.ring_op.owner, owner, DMP__NAME_MAX);
    int rc = dmp__client_request(c, dmp__obj_route(node), &req, &rep,
                                 DMP__MSG_RING_REPLY, 30.0);
    if (rc == 0)
        dmp__msg_clear(&rep);
    return rc;
}

void
dmp__obj_release(const char *owner, uint64_t id)
{
    dmp_client_t *c = dmp_default_client();
    if (!c)
        return;
    dmp__msg_t req = {.kind = DMP__MSG_OBJ_RELEASE}, rep;
    req.u.obj_release.id = id;
    if (dmp__client_request(c, dmp__obj_route(owner), &req, &rep,
                            DMP__MSG_OK, 5.0) == 0)
        dmp__msg_clear(&rep);
}

int
dmp__obj_handle_put(uint8_t *buf, size_t size, char type, const char *owner,
                    uint64_t id)
{
    size_t nl = strlen(owner);
    if (2 + nl + 8 > size)
        return -ENAMETOOLONG;
    uint8_t *p = buf;
    *p++ = (uint8_t)type;
    *p++ = (uint8_t)nl;
    memcpy(p, owner, nl);
    p += nl;
    for (int i = 0; i < 8; i++)
        *p++ = (uint8_t)(id >> (8 * i));
    return (int)(p - buf);
}

int
dmp__obj_handle_get(const uint8_t *buf, size_t len, char type,
                    char owner[DMP__NAME_MAX], uint64_t *id)
{
    if (len < 2 || buf[0] != (uint8_t)type)
        return -EINVAL;
    size_t nl = buf[1];
    if (nl == 0 || nl >= DMP__NAME_MAX || len < 2 + nl + 8)
        return -EINVAL;
    memcpy(owner, buf + 2, nl);
    owner[nl] = '\0';
    if (!dmp__name_valid(owner))
        return -EINVAL;
    const uint8_t *p = buf + 2 + nl;
    *id = 0;
    for (int i = 0; i < 8; i++)
        *id |= (uint64_t)p[i] << (8 * i);
    return (int)(2 + nl + 8);
}

int
dmp__obj_ring_name_put(uint8_t *p, size_t room, const char *name)
{
    size_t rl = strlen(name);
    if (rl == 0 || rl >= DMP__RING_NAME_MAX || 1 + rl > room)
        return -ENAMETOOLONG;
    *p = (uint8_t)rl;
    memcpy(p + 1, name, rl);
    return (int)(1 + rl);
}

int
dmp__obj_ring_name_get(const uint8_t *p, size_t room,
                       char name[DMP__RING_NAME_MAX])
{
    if (room < 1)
        return -EINVAL;
    size_t rl = p[0];
    if (rl == 0 || rl >= DMP__RING_NAME_MAX || room < 1 + rl)
        return -EINVAL;
    memcpy(name, p + 1, rl);
    name[rl] = '\0';
    /* "/dmp-" and a valid name: a segment of ours, never a path. */
    if (strncmp(name, "/dmp-", 5) != 0 || !dmp__name_valid(name + 1))
        return -EINVAL;
    return (int)(1 + rl);
}
