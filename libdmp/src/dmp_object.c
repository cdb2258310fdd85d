/*
 * dmp_object.c - what queues and pipes share: objects owned by a node.
 *
 * An object (a queue, a pipe) is created by the agent this process talks
 * to and lives in that node's shared memory. This module asks for one,
 * tells whether its rings can be mapped here (the owner is this host's
 * agent), routes operations to the owner (forwarded by our agent when it
 * is another node), and removes it. Handles start with the same header,
 * which this module writes and reads: a type letter, the owner's name and
 * the object id.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <math.h>
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

int
dmp__obj_ring_op(const char *owner, uint64_t id, uint32_t ring, uint32_t op,
                 const void *data, size_t len, double timeout,
                 uint8_t **out_p, size_t *out_len, int64_t *count)
{
    dmp_client_t *c = dmp_default_client();
    if (!c)
        return -EBADF;
    if (len > DMP__REMOTE_ITEM_MAX)
        return -EMSGSIZE; /* across hosts an item is one frame */
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
    double deadline = dmp__now() + (timeout > 0 ? timeout : 0);
    /* Straight to the owner when we can; holds and closes through our
     * agent, which counts them for when we die without closing. */
    dmp_client_t *link = req.u.ring_op.holder_pid ? NULL
                                                  : dmp__direct_client(owner);
    int rc;
    do {
        /* A get that waited is told "an item is there" (-EAGAIN) rather
         * than sent it (node_objects.c): ask again, for what time is
         * left; the owner then answers at once. */
        double left = deadline - dmp__now();
        req.u.ring_op.timeout = forever ? -1 : (left > 0 ? left : 0);
        /* The owner answers when the operation is done or timed out;
         * allow the network a margin on top. */
        double wait = forever ? 86400.0 * 365 : req.u.ring_op.timeout + 10.0;
        rc = link ? dmp__client_request(link, NULL, &req, &rep,
                                        DMP__MSG_RING_REPLY, wait)
                  : dmp__client_request(c, dmp__obj_route(owner), &req, &rep,
                                        DMP__MSG_RING_REPLY, wait);
    } while (rc == -EAGAIN && op == DMP__RING_GET);
    if (rc && link) /* the error's text where the caller looks */
        dmp__client_copy_errmsg(c, link);
    if (rc == DMP_ENODE && link)
        dmp__direct_lost(owner, link);
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
