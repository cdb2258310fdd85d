/*
 * dmp_wire.c - the only module that touches protobuf-c.
 *
 * Translates between one ZeroMQ frame holding a dmpwire.Envelope and the
 * plain dmp__msg_t of dmp_impl.h. Decoding bounds the size before
 * unpacking, unpacks with the library's allocator, and validates every
 * field afterwards (protobuf-c checks neither enum ranges nor string
 * contents): a dmp__msg_t that decode returns is safe to use as is.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "dmp.pb-c.h"

static void *
s_pb_alloc(void *data, size_t size)
{
    void *ptr = dmp__malloc(size);
    if (!ptr && data) /* tells an allocation failure from bad input */
        *(bool *)data = true;
    return ptr;
}

static void
s_pb_free(void *data, void *ptr)
{
    (void)data;
    dmp__free(ptr);
}

static ProtobufCAllocator s_allocator = {s_pb_alloc, s_pb_free, NULL};

/* ---- encode ---------------------------------------------------------- */

int
dmp__wire_encode(const dmp__msg_t *msg, uint8_t **buf_p, size_t *len_p)
{
    Dmpwire__Envelope env = DMPWIRE__ENVELOPE__INIT;
    Dmpwire__Hello hello = DMPWIRE__HELLO__INIT;
    Dmpwire__Error error = DMPWIRE__ERROR__INIT;
    Dmpwire__Heartbeat hb = DMPWIRE__HEARTBEAT__INIT;
    Dmpwire__NodesRequest nreq = DMPWIRE__NODES_REQUEST__INIT;
    Dmpwire__NodesReply nrep = DMPWIRE__NODES_REPLY__INIT;
    Dmpwire__Member *members = NULL, **member_ptrs = NULL;
    Dmpwire__NodeInfo *infos = NULL, **info_ptrs = NULL;
    Dmpwire__Ok ok = DMPWIRE__OK__INIT;
    Dmpwire__SpawnRequest sreq = DMPWIRE__SPAWN_REQUEST__INIT;
    Dmpwire__SpawnReply srep = DMPWIRE__SPAWN_REPLY__INIT;
    Dmpwire__Upload upload = DMPWIRE__UPLOAD__INIT;
    Dmpwire__ProcOutput pout = DMPWIRE__PROC_OUTPUT__INIT;
    Dmpwire__ProcExit pexit = DMPWIRE__PROC_EXIT__INIT;
    Dmpwire__ProcSignal psig = DMPWIRE__PROC_SIGNAL__INIT;
    Dmpwire__ProcListRequest plreq = DMPWIRE__PROC_LIST_REQUEST__INIT;
    Dmpwire__ProcListReply plrep = DMPWIRE__PROC_LIST_REPLY__INIT;
    Dmpwire__ProcInfo *pinfos = NULL, **pinfo_ptrs = NULL;
    Dmpwire__ObjNew onew = DMPWIRE__OBJ_NEW__INIT;
    Dmpwire__ObjInfo oinfo = DMPWIRE__OBJ_INFO__INIT;
    Dmpwire__ObjRelease orel = DMPWIRE__OBJ_RELEASE__INIT;
    Dmpwire__RingOp rop = DMPWIRE__RING_OP__INIT;
    Dmpwire__RingReply rrep = DMPWIRE__RING_REPLY__INIT;
    Dmpwire__SharedNew shnew = DMPWIRE__SHARED_NEW__INIT;
    Dmpwire__SharedOp shop = DMPWIRE__SHARED_OP__INIT;
    Dmpwire__SharedReply shrep = DMPWIRE__SHARED_REPLY__INIT;
    Dmpwire__MgrName mname = DMPWIRE__MGR_NAME__INIT;
    Dmpwire__Direct direct = DMPWIRE__DIRECT__INIT;
    char *ring_names[DMP__OBJ_RINGS_MAX];
    int rc = 0;

    env.id = msg->id;
    env.version = msg->version ? msg->version : DMP_PROTOCOL_VERSION;
    env.node = (char *)msg->node;
    switch (msg->kind) {
    case DMP__MSG_HELLO:
        hello.version = msg->u.hello.version;
        hello.node = (char *)msg->u.hello.node;
        hello.role = (char *)msg->u.hello.role;
        env.body_case = DMPWIRE__ENVELOPE__BODY_HELLO;
        env.hello = &hello;
        break;
    case DMP__MSG_ERROR:
        error.code = msg->u.error.code;
        error.text = (char *)msg->u.error.text;
        env.body_case = DMPWIRE__ENVELOPE__BODY_ERROR;
        env.error = &error;
        break;
    case DMP__MSG_HEARTBEAT: {
        size_t n = msg->u.heartbeat.n_members;
        hb.node = (char *)msg->u.heartbeat.node;
        hb.address = (char *)msg->u.heartbeat.address;
        hb.cores = msg->u.heartbeat.cores;
        hb.load = msg->u.heartbeat.load;
        hb.uptime_ms = msg->u.heartbeat.uptime_ms;
        hb.incarnation = msg->u.heartbeat.incarnation;
        hb.processes = msg->u.heartbeat.processes;
        if (n) {
            members = dmp__calloc(n, sizeof *members);
            member_ptrs = dmp__calloc(n, sizeof *member_ptrs);
            if (!members || !member_ptrs) {
                rc = -ENOMEM;
                goto out;
            }
            for (size_t i = 0; i < n; i++) {
                Dmpwire__Member init = DMPWIRE__MEMBER__INIT;
                members[i] = init;
                members[i].name = (char *)msg->u.heartbeat.members[i].name;
                members[i].address =
                    (char *)msg->u.heartbeat.members[i].address;
                member_ptrs[i] = &members[i];
            }
        }
        hb.n_members = n;
        hb.members = member_ptrs;
        env.body_case = DMPWIRE__ENVELOPE__BODY_HEARTBEAT;
        env.heartbeat = &hb;
        break;
    }
    case DMP__MSG_NODES_REQUEST:
        env.body_case = DMPWIRE__ENVELOPE__BODY_NODES_REQUEST;
        env.nodes_request = &nreq;
        break;
    case DMP__MSG_NODES_REPLY: {
        size_t n = msg->u.nodes_reply.n_nodes;
        if (n) {
            infos = dmp__calloc(n, sizeof *infos);
            info_ptrs = dmp__calloc(n, sizeof *info_ptrs);
            if (!infos || !info_ptrs) {
                rc = -ENOMEM;
                goto out;
            }
            for (size_t i = 0; i < n; i++) {
                const dmp_node_info_t *src = &msg->u.nodes_reply.nodes[i];
                Dmpwire__NodeInfo init = DMPWIRE__NODE_INFO__INIT;
                infos[i] = init;
                infos[i].name = (char *)src->name;
                infos[i].address = (char *)src->address;
                infos[i].state = (uint32_t)src->state;
                infos[i].cores = src->cores;
                infos[i].load = src->load;
                infos[i].uptime_ms = src->uptime_ms;
                infos[i].processes = src->processes;
                infos[i].last_seen_ms = src->last_seen_ms;
                info_ptrs[i] = &infos[i];
            }
        }
        nrep.n_nodes = n;
        nrep.nodes = info_ptrs;
        env.body_case = DMPWIRE__ENVELOPE__BODY_NODES_REPLY;
        env.nodes_reply = &nrep;
        break;
    }
    case DMP__MSG_OK:
        env.body_case = DMPWIRE__ENVELOPE__BODY_OK;
        env.ok = &ok;
        break;
    case DMP__MSG_SPAWN_REQUEST:
        sreq.name = (char *)msg->u.spawn_request.name;
        sreq.target = (char *)msg->u.spawn_request.target;
        sreq.args.data = msg->u.spawn_request.args;
        sreq.args.len = msg->u.spawn_request.args_len;
        sreq.digest = (char *)msg->u.spawn_request.digest;
        sreq.exe_size = msg->u.spawn_request.exe_size;
        sreq.parent_pid = msg->u.spawn_request.parent_pid;
        sreq.daemon = msg->u.spawn_request.daemon;
        sreq.zygote = msg->u.spawn_request.zygote;
        sreq.n_argv = msg->u.spawn_request.argc;
        sreq.argv = msg->u.spawn_request.argv;
        env.body_case = DMPWIRE__ENVELOPE__BODY_SPAWN_REQUEST;
        env.spawn_request = &sreq;
        break;
    case DMP__MSG_SPAWN_REPLY:
        srep.proc = msg->u.spawn_reply.proc;
        srep.pid = msg->u.spawn_reply.pid;
        srep.node = (char *)msg->u.spawn_reply.node;
        env.body_case = DMPWIRE__ENVELOPE__BODY_SPAWN_REPLY;
        env.spawn_reply = &srep;
        break;
    case DMP__MSG_UPLOAD:
        upload.digest = (char *)msg->u.upload.digest;
        upload.size = msg->u.upload.size;
        upload.offset = msg->u.upload.offset;
        upload.data.data = msg->u.upload.data;
        upload.data.len = msg->u.upload.len;
        env.body_case = DMPWIRE__ENVELOPE__BODY_UPLOAD;
        env.upload = &upload;
        break;
    case DMP__MSG_PROC_OUTPUT:
        pout.node = (char *)msg->u.proc_output.node;
        pout.proc = msg->u.proc_output.proc;
        pout.stream = msg->u.proc_output.stream;
        pout.data.data = msg->u.proc_output.data;
        pout.data.len = msg->u.proc_output.len;
        env.body_case = DMPWIRE__ENVELOPE__BODY_PROC_OUTPUT;
        env.proc_output = &pout;
        break;
    case DMP__MSG_PROC_EXIT:
        pexit.node = (char *)msg->u.proc_exit.node;
        pexit.proc = msg->u.proc_exit.proc;
        pexit.exitcode = msg->u.proc_exit.exitcode;
        pexit.error = msg->u.proc_exit.error;
        env.body_case = DMPWIRE__ENVELOPE__BODY_PROC_EXIT;
        env.proc_exit = &pexit;
        break;
    case DMP__MSG_PROC_SIGNAL:
        psig.proc = msg->u.proc_signal.proc;
        psig.signo = msg->u.proc_signal.signo;
        env.body_case = DMPWIRE__ENVELOPE__BODY_PROC_SIGNAL;
        env.proc_signal = &psig;
        break;
    case DMP__MSG_PROC_LIST_REQUEST:
        env.body_case = DMPWIRE__ENVELOPE__BODY_PROC_LIST_REQUEST;
        env.proc_list_request = &plreq;
        break;
    case DMP__MSG_PROC_LIST_REPLY: {
        size_t n = msg->u.proc_list_reply.n_procs;
        if (n) {
            pinfos = dmp__calloc(n, sizeof *pinfos);
            pinfo_ptrs = dmp__calloc(n, sizeof *pinfo_ptrs);
            if (!pinfos || !pinfo_ptrs) {
                rc = -ENOMEM;
                goto out;
            }
            for (size_t i = 0; i < n; i++) {
                const dmp__proc_info_t *src = &msg->u.proc_list_reply.procs[i];
                Dmpwire__ProcInfo init = DMPWIRE__PROC_INFO__INIT;
                pinfos[i] = init;
                pinfos[i].node = (char *)src->node;
                pinfos[i].proc = src->proc;
                pinfos[i].pid = src->pid;
                pinfos[i].name = (char *)src->name;
                pinfos[i].target = (char *)src->target;
                pinfos[i].running = src->running;
                pinfos[i].exitcode = src->exitcode;
                pinfos[i].runtime_ms = src->runtime_ms;
                pinfo_ptrs[i] = &pinfos[i];
            }
        }
        plrep.n_procs = n;
        plrep.procs = pinfo_ptrs;
        env.body_case = DMPWIRE__ENVELOPE__BODY_PROC_LIST_REPLY;
        env.proc_list_reply = &plrep;
        break;
    }
    case DMP__MSG_OBJ_NEW:
        onew.type = msg->u.obj_new.type;
        onew.maxsize = msg->u.obj_new.maxsize;
        onew.item_max = msg->u.obj_new.item_max;
        onew.capacity = msg->u.obj_new.capacity;
        onew.duplex = msg->u.obj_new.duplex;
        env.body_case = DMPWIRE__ENVELOPE__BODY_OBJ_NEW;
        env.obj_new = &onew;
        break;
    case DMP__MSG_OBJ_INFO:
        oinfo.id = msg->u.obj_info.id;
        oinfo.node = (char *)msg->u.obj_info.node;
        for (size_t i = 0; i < msg->u.obj_info.n_rings && i < DMP__OBJ_RINGS_MAX;
             i++)
            ring_names[i] = (char *)msg->u.obj_info.rings[i];
        oinfo.n_rings = msg->u.obj_info.n_rings;
        oinfo.rings = ring_names;
        env.body_case = DMPWIRE__ENVELOPE__BODY_OBJ_INFO;
        env.obj_info = &oinfo;
        break;
    case DMP__MSG_OBJ_RELEASE:
        orel.id = msg->u.obj_release.id;
        env.body_case = DMPWIRE__ENVELOPE__BODY_OBJ_RELEASE;
        env.obj_release = &orel;
        break;
    case DMP__MSG_RING_OP:
        rop.obj = msg->u.ring_op.obj;
        rop.ring = msg->u.ring_op.ring;
        rop.op = msg->u.ring_op.op;
        rop.data.data = msg->u.ring_op.data;
        rop.data.len = msg->u.ring_op.len;
        rop.timeout = msg->u.ring_op.timeout;
        rop.holder_pid = msg->u.ring_op.holder_pid;
        rop.owner = (char *)msg->u.ring_op.owner;
        rop.offset = msg->u.ring_op.offset;
        rop.total = msg->u.ring_op.total;
        rop.seq = msg->u.ring_op.seq;
        rop.died = msg->u.ring_op.died;
        env.body_case = DMPWIRE__ENVELOPE__BODY_RING_OP;
        env.ring_op = &rop;
        break;
    case DMP__MSG_RING_REPLY:
        rrep.data.data = msg->u.ring_reply.data;
        rrep.data.len = msg->u.ring_reply.len;
        rrep.count = msg->u.ring_reply.count;
        rrep.total = msg->u.ring_reply.total;
        rrep.seq = msg->u.ring_reply.seq;
        env.body_case = DMPWIRE__ENVELOPE__BODY_RING_REPLY;
        env.ring_reply = &rrep;
        break;
    case DMP__MSG_SHARED_NEW:
        shnew.typecode = (uint32_t)(unsigned char)msg->u.shared_new.typecode;
        shnew.length = msg->u.shared_new.length;
        shnew.lock = msg->u.shared_new.lock;
        env.body_case = DMPWIRE__ENVELOPE__BODY_SHARED_NEW;
        env.shared_new = &shnew;
        break;
    case DMP__MSG_SHARED_OP:
        shop.obj = msg->u.shared_op.obj;
        shop.op = msg->u.shared_op.op;
        shop.holder_node = (char *)msg->u.shared_op.holder_node;
        shop.holder_pid = msg->u.shared_op.holder_pid;
        shop.start = msg->u.shared_op.start;
        shop.count = msg->u.shared_op.count;
        shop.data.data = msg->u.shared_op.data;
        shop.data.len = msg->u.shared_op.len;
        shop.timeout = msg->u.shared_op.timeout;
        shop.holding = msg->u.shared_op.holding;
        env.body_case = DMPWIRE__ENVELOPE__BODY_SHARED_OP;
        env.shared_op = &shop;
        break;
    case DMP__MSG_SHARED_REPLY:
        shrep.data.data = msg->u.shared_reply.data;
        shrep.data.len = msg->u.shared_reply.len;
        shrep.lease = msg->u.shared_reply.lease;
        shrep.owner_died = msg->u.shared_reply.owner_died;
        env.body_case = DMPWIRE__ENVELOPE__BODY_SHARED_REPLY;
        env.shared_reply = &shrep;
        break;
    case DMP__MSG_MGR_NAME:
        mname.op = msg->u.mgr_name.op;
        mname.name = (char *)msg->u.mgr_name.name;
        mname.addr.data = msg->u.mgr_name.addr;
        mname.addr.len = msg->u.mgr_name.len;
        mname.proc = msg->u.mgr_name.proc;
        env.body_case = DMPWIRE__ENVELOPE__BODY_MGR_NAME;
        env.mgr_name = &mname;
        break;
    case DMP__MSG_DIRECT: {
        uint32_t op = msg->u.direct.op;
        direct.op = op;
        if (op != DMP__DIRECT_INFO) {
            direct.key.data = (uint8_t *)msg->u.direct.key;
            direct.key.len = sizeof msg->u.direct.key;
        }
        direct.pid = msg->u.direct.pid;
        direct.to = (char *)msg->u.direct.to;
        direct.address = (char *)msg->u.direct.address;
        direct.server_key = (char *)msg->u.direct.server_key;
        env.body_case = DMPWIRE__ENVELOPE__BODY_DIRECT;
        env.direct = &direct;
        break;
    }
    default:
        return -EINVAL;
    }

    size_t len = dmpwire__envelope__get_packed_size(&env);
    if (len > DMP__WIRE_MAX) {
        rc = -EMSGSIZE;
        goto out;
    }
    uint8_t *buf = dmp__malloc(len);
    if (!buf) {
        rc = -ENOMEM;
        goto out;
    }
    dmpwire__envelope__pack(&env, buf);
    *buf_p = buf;
    *len_p = len;
out:
    dmp__free(members);
    dmp__free(member_ptrs);
    dmp__free(infos);
    dmp__free(info_ptrs);
    dmp__free(pinfos);
    dmp__free(pinfo_ptrs);
    return rc;
}

/* ---- decode ---------------------------------------------------------- */

/* Copies a decoded string into a fixed field; false when it does not fit
 * or is not valid UTF-8. */
static bool
s_copy_str(char *dst, size_t size, const char *src)
{
    if (!src)
        src = "";
    if (strlen(src) >= size || !dmp__utf8_valid(src))
        return false;
    dmp__strlcpy(dst, src, size);
    return true;
}

/* A node name field: empty or a valid name. */
static bool
s_copy_name(char *dst, const char *src, bool allow_empty)
{
    if (!s_copy_str(dst, DMP__NAME_MAX, src))
        return false;
    if (dst[0] == '\0')
        return allow_empty;
    return dmp__name_valid(dst);
}

/* An address field: empty or a valid endpoint. */
static bool
s_copy_addr(char *dst, const char *src)
{
    if (!s_copy_str(dst, DMP__ADDR_MAX, src))
        return false;
    return dst[0] == '\0' || dmp__endpoint_valid(dst);
}

static bool
s_load_valid(double load)
{
    return isfinite(load) && load >= 0 && load < 1e6;
}

/* Copies a bytes field into an owned buffer (NULL for empty). */
static int
s_copy_bytes(uint8_t **dst, size_t *dst_len, const ProtobufCBinaryData *src,
             size_t max)
{
    if (src->len > max)
        return DMP_EPROTO;
    *dst_len = src->len;
    if (!src->len)
        return 0;
    *dst = dmp__malloc(src->len);
    if (!*dst)
        return -ENOMEM;
    memcpy(*dst, src->data, src->len);
    return 0;
}

/* A digest field: 64 lowercase hex digits, or empty when allowed. */
static bool
s_copy_digest(char *dst, const char *src, bool allow_empty)
{
    if (!s_copy_str(dst, DMP__DIGEST_HEX + 1, src))
        return false;
    size_t len = strlen(dst);
    if (len == 0)
        return allow_empty;
    if (len != DMP__DIGEST_HEX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((dst[i] >= '0' && dst[i] <= '9') ||
              (dst[i] >= 'a' && dst[i] <= 'f')))
            return false;
    return true;
}

static int
s_from_envelope(const Dmpwire__Envelope *env, dmp__msg_t *msg)
{
    msg->id = env->id;
    msg->version = env->version;
    if (!s_copy_name(msg->node, env->node, true))
        return DMP_EPROTO;
    switch (env->body_case) {
    case DMPWIRE__ENVELOPE__BODY_HELLO:
        msg->kind = DMP__MSG_HELLO;
        msg->u.hello.version = env->hello->version;
        if (!s_copy_name(msg->u.hello.node, env->hello->node, true) ||
            !s_copy_str(msg->u.hello.role, sizeof msg->u.hello.role,
                        env->hello->role))
            return DMP_EPROTO;
        return 0;
    case DMPWIRE__ENVELOPE__BODY_ERROR:
        msg->kind = DMP__MSG_ERROR;
        msg->u.error.code = env->error->code;
        /* Error codes are negative; 0 or positive would read as success. */
        if (env->error->code >= 0 ||
            !s_copy_str(msg->u.error.text, DMP__TEXT_MAX, env->error->text))
            return DMP_EPROTO;
        return 0;
    case DMPWIRE__ENVELOPE__BODY_HEARTBEAT: {
        const Dmpwire__Heartbeat *hb = env->heartbeat;
        msg->kind = DMP__MSG_HEARTBEAT;
        if (!s_copy_name(msg->u.heartbeat.node, hb->node, false) ||
            !s_copy_addr(msg->u.heartbeat.address, hb->address) ||
            !s_load_valid(hb->load) || hb->cores > 65536 ||
            hb->n_members > DMP__MEMBERS_MAX)
            return DMP_EPROTO;
        msg->u.heartbeat.cores = hb->cores;
        msg->u.heartbeat.load = hb->load;
        msg->u.heartbeat.uptime_ms = hb->uptime_ms;
        msg->u.heartbeat.incarnation = hb->incarnation;
        msg->u.heartbeat.processes = hb->processes;
        if (hb->n_members) {
            msg->u.heartbeat.members =
                dmp__calloc(hb->n_members, sizeof(dmp__member_t));
            if (!msg->u.heartbeat.members)
                return -ENOMEM;
            msg->u.heartbeat.n_members = hb->n_members;
            for (size_t i = 0; i < hb->n_members; i++) {
                dmp__member_t *m = &msg->u.heartbeat.members[i];
                if (!s_copy_name(m->name, hb->members[i]->name, false) ||
                    !s_copy_addr(m->address, hb->members[i]->address))
                    return DMP_EPROTO;
            }
        }
        return 0;
    }
    case DMPWIRE__ENVELOPE__BODY_NODES_REQUEST:
        msg->kind = DMP__MSG_NODES_REQUEST;
        return 0;
    case DMPWIRE__ENVELOPE__BODY_NODES_REPLY: {
        const Dmpwire__NodesReply *rep = env->nodes_reply;
        msg->kind = DMP__MSG_NODES_REPLY;
        if (rep->n_nodes > DMP__MEMBERS_MAX)
            return DMP_EPROTO;
        if (rep->n_nodes) {
            msg->u.nodes_reply.nodes =
                dmp__calloc(rep->n_nodes, sizeof(dmp_node_info_t));
            if (!msg->u.nodes_reply.nodes)
                return -ENOMEM;
            msg->u.nodes_reply.n_nodes = rep->n_nodes;
        }
        for (size_t i = 0; i < rep->n_nodes; i++) {
            const Dmpwire__NodeInfo *src = rep->nodes[i];
            dmp_node_info_t *dst = &msg->u.nodes_reply.nodes[i];
            if (!s_copy_name(dst->name, src->name, false) ||
                !s_copy_addr(dst->address, src->address) ||
                src->state > DMP_NODE_DEAD || !s_load_valid(src->load) ||
                src->cores > 65536)
                return DMP_EPROTO;
            dst->state = (dmp_node_state_t)src->state;
            dst->cores = src->cores;
            dst->load = src->load;
            dst->uptime_ms = src->uptime_ms;
            dst->processes = src->processes;
            dst->last_seen_ms = src->last_seen_ms;
        }
        return 0;
    }
    case DMPWIRE__ENVELOPE__BODY_OK:
        msg->kind = DMP__MSG_OK;
        return 0;
    case DMPWIRE__ENVELOPE__BODY_SPAWN_REQUEST: {
        const Dmpwire__SpawnRequest *r = env->spawn_request;
        msg->kind = DMP__MSG_SPAWN_REQUEST;
        if (!s_copy_name(msg->u.spawn_request.name, r->name, false) ||
            !s_copy_name(msg->u.spawn_request.target, r->target, true) ||
            !s_copy_digest(msg->u.spawn_request.digest, r->digest, true))
            return DMP_EPROTO;
        msg->u.spawn_request.exe_size = r->exe_size;
        msg->u.spawn_request.parent_pid = r->parent_pid;
        msg->u.spawn_request.daemon = r->daemon;
        msg->u.spawn_request.zygote = r->zygote;
        /* Exactly one of target and argv: a function or a command. */
        if ((r->target[0] != '\0') == (r->n_argv != 0) ||
            r->n_argv > DMP__ARGV_MAX)
            return DMP_EPROTO;
        if (r->n_argv) {
            char **argv = dmp__calloc(r->n_argv + 1, sizeof *argv);
            if (!argv)
                return -ENOMEM;
            msg->u.spawn_request.argv = argv;
            for (size_t i = 0; i < r->n_argv; i++) {
                if (strlen(r->argv[i]) > DMP__ARG_LEN_MAX ||
                    (i == 0 && r->argv[i][0] == '\0'))
                    return DMP_EPROTO;
                argv[i] = dmp__strdup(r->argv[i]);
                if (!argv[i])
                    return -ENOMEM;
                msg->u.spawn_request.argc = i + 1;
            }
        }
        return s_copy_bytes(&msg->u.spawn_request.args,
                            &msg->u.spawn_request.args_len, &r->args,
                            DMP__WIRE_MAX);
    }
    case DMPWIRE__ENVELOPE__BODY_SPAWN_REPLY:
        msg->kind = DMP__MSG_SPAWN_REPLY;
        if (!s_copy_name(msg->u.spawn_reply.node, env->spawn_reply->node,
                         false) ||
            env->spawn_reply->pid == 0)
            return DMP_EPROTO;
        msg->u.spawn_reply.proc = env->spawn_reply->proc;
        msg->u.spawn_reply.pid = env->spawn_reply->pid;
        return 0;
    case DMPWIRE__ENVELOPE__BODY_UPLOAD: {
        const Dmpwire__Upload *u = env->upload;
        msg->kind = DMP__MSG_UPLOAD;
        if (!s_copy_digest(msg->u.upload.digest, u->digest, false) ||
            u->offset > u->size || u->data.len > u->size - u->offset)
            return DMP_EPROTO;
        msg->u.upload.size = u->size;
        msg->u.upload.offset = u->offset;
        return s_copy_bytes(&msg->u.upload.data, &msg->u.upload.len,
                            &u->data, DMP__CHUNK_MAX);
    }
    case DMPWIRE__ENVELOPE__BODY_PROC_OUTPUT: {
        const Dmpwire__ProcOutput *o = env->proc_output;
        msg->kind = DMP__MSG_PROC_OUTPUT;
        if (!s_copy_name(msg->u.proc_output.node, o->node, false) ||
            (o->stream != 1 && o->stream != 2))
            return DMP_EPROTO;
        msg->u.proc_output.proc = o->proc;
        msg->u.proc_output.stream = o->stream;
        return s_copy_bytes(&msg->u.proc_output.data, &msg->u.proc_output.len,
                            &o->data, DMP__CHUNK_MAX);
    }
    case DMPWIRE__ENVELOPE__BODY_PROC_EXIT:
        msg->kind = DMP__MSG_PROC_EXIT;
        if (!s_copy_name(msg->u.proc_exit.node, env->proc_exit->node, false) ||
            env->proc_exit->error > 0 || env->proc_exit->exitcode < -128 ||
            env->proc_exit->exitcode > 255)
            return DMP_EPROTO;
        msg->u.proc_exit.proc = env->proc_exit->proc;
        msg->u.proc_exit.exitcode = env->proc_exit->exitcode;
        msg->u.proc_exit.error = env->proc_exit->error;
        return 0;
    case DMPWIRE__ENVELOPE__BODY_PROC_SIGNAL:
        msg->kind = DMP__MSG_PROC_SIGNAL;
        if (env->proc_signal->signo == 0 || env->proc_signal->signo > 64)
            return DMP_EPROTO;
        msg->u.proc_signal.proc = env->proc_signal->proc;
        msg->u.proc_signal.signo = env->proc_signal->signo;
        return 0;
    case DMPWIRE__ENVELOPE__BODY_PROC_LIST_REQUEST:
        msg->kind = DMP__MSG_PROC_LIST_REQUEST;
        return 0;
    case DMPWIRE__ENVELOPE__BODY_OBJ_NEW: {
        const Dmpwire__ObjNew *o = env->obj_new;
        msg->kind = DMP__MSG_OBJ_NEW;
        if ((o->type != DMP__OBJ_QUEUE && o->type != DMP__OBJ_PIPE) ||
            o->item_max > (1ull << 40) || o->capacity > (1ull << 40))
            return DMP_EPROTO;
        msg->u.obj_new.type = o->type;
        msg->u.obj_new.maxsize = o->maxsize;
        msg->u.obj_new.item_max = o->item_max;
        msg->u.obj_new.capacity = o->capacity;
        msg->u.obj_new.duplex = o->duplex;
        return 0;
    }
    case DMPWIRE__ENVELOPE__BODY_OBJ_INFO: {
        const Dmpwire__ObjInfo *o = env->obj_info;
        msg->kind = DMP__MSG_OBJ_INFO;
        if (o->n_rings == 0 || o->n_rings > DMP__OBJ_RINGS_MAX ||
            !s_copy_name(msg->u.obj_info.node, o->node, false))
            return DMP_EPROTO;
        msg->u.obj_info.id = o->id;
        msg->u.obj_info.n_rings = o->n_rings;
        for (size_t i = 0; i < o->n_rings; i++) {
            char *dst = msg->u.obj_info.rings[i];
            /* "/dmp-" and a valid name: a segment of ours, never a path. */
            if (!s_copy_str(dst, DMP__RING_NAME_MAX, o->rings[i]) ||
                strncmp(dst, "/dmp-", 5) != 0 || !dmp__name_valid(dst + 1))
                return DMP_EPROTO;
        }
        return 0;
    }
    case DMPWIRE__ENVELOPE__BODY_OBJ_RELEASE:
        msg->kind = DMP__MSG_OBJ_RELEASE;
        msg->u.obj_release.id = env->obj_release->id;
        return 0;
    case DMPWIRE__ENVELOPE__BODY_RING_OP: {
        const Dmpwire__RingOp *o = env->ring_op;
        msg->kind = DMP__MSG_RING_OP;
        if (o->ring >= DMP__OBJ_RINGS_MAX || o->op < DMP__RING_PUT ||
            o->op > DMP__RING_OP_LAST || isnan(o->timeout) ||
            o->holder_pid > INT32_MAX)
            return DMP_EPROTO;
        msg->u.ring_op.obj = o->obj;
        msg->u.ring_op.ring = o->ring;
        msg->u.ring_op.op = o->op;
        msg->u.ring_op.timeout = o->timeout;
        msg->u.ring_op.holder_pid = o->holder_pid;
        msg->u.ring_op.offset = o->offset;
        msg->u.ring_op.total = o->total;
        msg->u.ring_op.seq = o->seq;
        msg->u.ring_op.died = o->died;
        if (o->died && o->op != DMP__RING_CLOSE_WRITER)
            return DMP_EPROTO;
        /* A part lies inside its item; a stage has a number. */
        if (o->op == DMP__RING_PUT_PART &&
            (o->seq == 0 || o->offset > o->total ||
             o->data.len > o->total - o->offset))
            return DMP_EPROTO;
        /* A hold for another process names it. */
        if (!s_copy_name(msg->u.ring_op.owner, o->owner, true) ||
            (msg->u.ring_op.owner[0] &&
             (o->op != DMP__RING_HOLD_WRITER || o->holder_pid == 0)))
            return DMP_EPROTO;
        return s_copy_bytes(&msg->u.ring_op.data, &msg->u.ring_op.len,
                            &o->data, DMP__WIRE_MAX);
    }
    case DMPWIRE__ENVELOPE__BODY_RING_REPLY:
        msg->kind = DMP__MSG_RING_REPLY;
        msg->u.ring_reply.count = env->ring_reply->count;
        msg->u.ring_reply.total = env->ring_reply->total;
        msg->u.ring_reply.seq = env->ring_reply->seq;
        if (env->ring_reply->total &&
            env->ring_reply->data.len > env->ring_reply->total)
            return DMP_EPROTO;
        return s_copy_bytes(&msg->u.ring_reply.data, &msg->u.ring_reply.len,
                            &env->ring_reply->data, DMP__WIRE_MAX);
    case DMPWIRE__ENVELOPE__BODY_SHARED_NEW: {
        const Dmpwire__SharedNew *o = env->shared_new;
        msg->kind = DMP__MSG_SHARED_NEW;
        /* A typecode of Python's array module that ctypes shares. */
        if (o->typecode == 0 || o->typecode > 127 ||
            !strchr(DMP__TYPECODES, (int)o->typecode) || o->length == 0 ||
            o->length > DMP__SHARED_LENGTH_MAX)
            return DMP_EPROTO;
        msg->u.shared_new.typecode = (char)o->typecode;
        msg->u.shared_new.length = o->length;
        msg->u.shared_new.lock = o->lock;
        return 0;
    }
    case DMPWIRE__ENVELOPE__BODY_SHARED_OP: {
        const Dmpwire__SharedOp *o = env->shared_op;
        msg->kind = DMP__MSG_SHARED_OP;
        if (o->op < DMP__SHARED_ATTACH || o->op > DMP__SHARED_OP_LAST ||
            !s_copy_name(msg->u.shared_op.holder_node, o->holder_node,
                         false) ||
            o->holder_pid == 0 || o->holder_pid > INT32_MAX ||
            o->start > DMP__SHARED_LENGTH_MAX ||
            o->count > DMP__SHARED_LENGTH_MAX || isnan(o->timeout))
            return DMP_EPROTO;
        msg->u.shared_op.obj = o->obj;
        msg->u.shared_op.op = o->op;
        msg->u.shared_op.holder_pid = o->holder_pid;
        msg->u.shared_op.start = o->start;
        msg->u.shared_op.count = o->count;
        msg->u.shared_op.timeout = o->timeout;
        msg->u.shared_op.holding = o->holding;
        return s_copy_bytes(&msg->u.shared_op.data, &msg->u.shared_op.len,
                            &o->data, DMP__WIRE_MAX);
    }
    case DMPWIRE__ENVELOPE__BODY_SHARED_REPLY: {
        const Dmpwire__SharedReply *o = env->shared_reply;
        msg->kind = DMP__MSG_SHARED_REPLY;
        if (!isfinite(o->lease) || o->lease < 0 || o->lease > 1e6)
            return DMP_EPROTO;
        msg->u.shared_reply.lease = o->lease;
        msg->u.shared_reply.owner_died = o->owner_died;
        return s_copy_bytes(&msg->u.shared_reply.data,
                            &msg->u.shared_reply.len, &o->data, DMP__WIRE_MAX);
    }
    case DMPWIRE__ENVELOPE__BODY_MGR_NAME: {
        const Dmpwire__MgrName *o = env->mgr_name;
        msg->kind = DMP__MSG_MGR_NAME;
        /* A known op, a manager name, an address only where one goes. */
        if (o->op < DMP__MGR_NAME_REGISTER || o->op > DMP__MGR_NAME_LOOKUP ||
            !s_copy_name(msg->u.mgr_name.name, o->name, false) ||
            (o->op == DMP__MGR_NAME_UNREGISTER && o->addr.len))
            return DMP_EPROTO;
        msg->u.mgr_name.op = o->op;
        msg->u.mgr_name.proc = o->proc;
        return s_copy_bytes(&msg->u.mgr_name.addr, &msg->u.mgr_name.len,
                            &o->addr, DMP__MGR_ADDR_MAX);
    }
    case DMPWIRE__ENVELOPE__BODY_DIRECT: {
        const Dmpwire__Direct *o = env->direct;
        msg->kind = DMP__MSG_DIRECT;
        /* Each op carries its fields and no others. */
        bool info = o->op == DMP__DIRECT_INFO;
        if (o->op < DMP__DIRECT_ASK || o->op > DMP__DIRECT_INFO ||
            o->key.len != (info ? 0 : 32) ||
            (info ? o->pid != 0 : (o->pid == 0 || o->pid > INT32_MAX)) ||
            !s_copy_name(msg->u.direct.to, o->to,
                         o->op != DMP__DIRECT_ASK) ||
            (o->op == DMP__DIRECT_ASK) != (msg->u.direct.to[0] != '\0') ||
            !s_copy_addr(msg->u.direct.address, o->address) ||
            info != (msg->u.direct.address[0] != '\0') ||
            !s_copy_str(msg->u.direct.server_key,
                        sizeof msg->u.direct.server_key, o->server_key) ||
            (info ? !dmp__z85_key_valid(msg->u.direct.server_key)
                  : msg->u.direct.server_key[0] != '\0'))
            return DMP_EPROTO;
        msg->u.direct.op = o->op;
        msg->u.direct.pid = o->pid;
        if (!info)
            memcpy(msg->u.direct.key, o->key.data, 32);
        return 0;
    }
    case DMPWIRE__ENVELOPE__BODY_PROC_LIST_REPLY: {
        const Dmpwire__ProcListReply *rep = env->proc_list_reply;
        msg->kind = DMP__MSG_PROC_LIST_REPLY;
        if (rep->n_procs > 65536)
            return DMP_EPROTO;
        if (rep->n_procs) {
            msg->u.proc_list_reply.procs =
                dmp__calloc(rep->n_procs, sizeof(dmp__proc_info_t));
            if (!msg->u.proc_list_reply.procs)
                return -ENOMEM;
            msg->u.proc_list_reply.n_procs = rep->n_procs;
        }
        for (size_t i = 0; i < rep->n_procs; i++) {
            const Dmpwire__ProcInfo *src = rep->procs[i];
            dmp__proc_info_t *dst = &msg->u.proc_list_reply.procs[i];
            if (!s_copy_name(dst->node, src->node, false) ||
                !s_copy_name(dst->name, src->name, false) ||
                !s_copy_name(dst->target, src->target, false))
                return DMP_EPROTO;
            dst->proc = src->proc;
            dst->pid = src->pid;
            dst->running = src->running;
            dst->exitcode = src->exitcode;
            dst->runtime_ms = src->runtime_ms;
        }
        return 0;
    }
    default:
        return DMP_EPROTO;
    }
}

/* True when m or any message inside it carries fields our schema does not
 * know. protobuf-c keeps them and packs them again at the end, so neither
 * the size nor the bytes of a re-pack would show them. */
static bool
s_has_unknown_fields(const ProtobufCMessage *m)
{
    if (m->n_unknown_fields)
        return true;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *at = (const char *)m + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
            ProtobufCMessage *const *items = *(ProtobufCMessage *const **)at;
            for (size_t k = 0; k < n; k++)
                if (s_has_unknown_fields(items[k]))
                    return true;
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t set = *(const uint32_t *)((const char *)m +
                                               f->quantifier_offset);
            if (set != f->id)
                continue;
        }
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)at;
        if (sub && s_has_unknown_fields(sub))
            return true;
    }
    return false;
}

/* Only the canonical encoding (what our encoder writes) is accepted:
 * packing what was unpacked must give the input back byte for byte. This
 * catches what protobuf-c lets through silently: a string cut at an
 * embedded NUL, fields out of order, a bool of 2, a uint32 varint with bits
 * past 32, a field given twice. 0, DMP_EPROTO, or -ENOMEM. */
static int
s_check_canonical(const Dmpwire__Envelope *env, const uint8_t *buf,
                  size_t len)
{
    if (s_has_unknown_fields(&env->base))
        return DMP_EPROTO;
    if (dmpwire__envelope__get_packed_size(env) != len)
        return DMP_EPROTO;
    uint8_t small[512];
    uint8_t *out = len <= sizeof small ? small : dmp__malloc(len);
    if (!out)
        return -ENOMEM;
    int rc = dmpwire__envelope__pack(env, out) == len &&
                     memcmp(out, buf, len) == 0
                 ? 0
                 : DMP_EPROTO;
    if (out != small)
        dmp__free(out);
    return rc;
}

int
dmp__wire_decode(const uint8_t *buf, size_t len, dmp__msg_t *msg)
{
    memset(msg, 0, sizeof *msg);
    if (len > DMP__WIRE_MAX)
        return DMP_EPROTO;
    bool out_of_memory = false;
    ProtobufCAllocator counting = {s_pb_alloc, s_pb_free, &out_of_memory};
    Dmpwire__Envelope *env = dmpwire__envelope__unpack(&counting, len, buf);
    if (!env)
        return out_of_memory ? -ENOMEM : DMP_EPROTO;
    int rc = s_check_canonical(env, buf, len);
    if (rc == 0)
        rc = s_from_envelope(env, msg);
    dmpwire__envelope__free_unpacked(env, &s_allocator);
    if (rc)
        dmp__msg_clear(msg);
    return rc;
}

void
dmp__msg_clear(dmp__msg_t *msg)
{
    if (!msg)
        return;
    switch (msg->kind) {
    case DMP__MSG_HEARTBEAT:
        dmp__free(msg->u.heartbeat.members);
        break;
    case DMP__MSG_NODES_REPLY:
        dmp__free(msg->u.nodes_reply.nodes);
        break;
    case DMP__MSG_SPAWN_REQUEST:
        dmp__free(msg->u.spawn_request.args);
        for (size_t i = 0; i < msg->u.spawn_request.argc; i++)
            dmp__free(msg->u.spawn_request.argv[i]);
        dmp__free(msg->u.spawn_request.argv);
        break;
    case DMP__MSG_UPLOAD:
        dmp__free(msg->u.upload.data);
        break;
    case DMP__MSG_PROC_OUTPUT:
        dmp__free(msg->u.proc_output.data);
        break;
    case DMP__MSG_PROC_LIST_REPLY:
        dmp__free(msg->u.proc_list_reply.procs);
        break;
    case DMP__MSG_RING_OP:
        dmp__free(msg->u.ring_op.data);
        break;
    case DMP__MSG_RING_REPLY:
        dmp__free(msg->u.ring_reply.data);
        break;
    case DMP__MSG_SHARED_OP:
        dmp__free(msg->u.shared_op.data);
        break;
    case DMP__MSG_SHARED_REPLY:
        dmp__free(msg->u.shared_reply.data);
        break;
    case DMP__MSG_MGR_NAME:
        dmp__free(msg->u.mgr_name.addr);
        break;
    default:
        break;
    }
    memset(msg, 0, sizeof *msg);
}

void
dmp__msg_error(dmp__msg_t *msg, uint64_t id, int code, const char *fmt, ...)
{
    memset(msg, 0, sizeof *msg);
    msg->id = id;
    msg->version = DMP_PROTOCOL_VERSION;
    msg->kind = DMP__MSG_ERROR;
    msg->u.error.code = code < 0 ? code : DMP_EPROTO;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg->u.error.text, sizeof msg->u.error.text, fmt, ap);
    va_end(ap);
}

const char *
dmp__msg_kind_name(dmp__msg_kind_t kind)
{
    switch (kind) {
    case DMP__MSG_NONE:
        return "none";
    case DMP__MSG_HELLO:
        return "hello";
    case DMP__MSG_ERROR:
        return "error";
    case DMP__MSG_HEARTBEAT:
        return "heartbeat";
    case DMP__MSG_NODES_REQUEST:
        return "nodes-request";
    case DMP__MSG_NODES_REPLY:
        return "nodes-reply";
    case DMP__MSG_OK:
        return "ok";
    case DMP__MSG_SPAWN_REQUEST:
        return "spawn-request";
    case DMP__MSG_SPAWN_REPLY:
        return "spawn-reply";
    case DMP__MSG_UPLOAD:
        return "upload";
    case DMP__MSG_PROC_OUTPUT:
        return "proc-output";
    case DMP__MSG_PROC_EXIT:
        return "proc-exit";
    case DMP__MSG_PROC_SIGNAL:
        return "proc-signal";
    case DMP__MSG_PROC_LIST_REQUEST:
        return "proc-list-request";
    case DMP__MSG_PROC_LIST_REPLY:
        return "proc-list-reply";
    case DMP__MSG_OBJ_NEW:
        return "obj-new";
    case DMP__MSG_OBJ_INFO:
        return "obj-info";
    case DMP__MSG_OBJ_RELEASE:
        return "obj-release";
    case DMP__MSG_RING_OP:
        return "ring-op";
    case DMP__MSG_RING_REPLY:
        return "ring-reply";
    case DMP__MSG_SHARED_NEW:
        return "shared-new";
    case DMP__MSG_SHARED_OP:
        return "shared-op";
    case DMP__MSG_SHARED_REPLY:
        return "shared-reply";
    case DMP__MSG_MGR_NAME:
        return "mgr-name";
    case DMP__MSG_DIRECT:
        return "direct";
    }
    return "unknown";
}
