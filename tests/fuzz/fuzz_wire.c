/*
 * fuzz_wire.c - dmp__wire_decode: one frame from any peer, before auth
 * has told us anything about it.
 *
 * Promises checked (dmp_impl.h, FAULTS.md "Bad inputs"):
 *   - a rejected frame gives DMP_EPROTO (or -ENOMEM) and an empty message;
 *   - an accepted one is "safe to use as is": every string fits and is
 *     NUL-terminated in its array, names and endpoints are valid, counts
 *     match their arrays, enums and numbers are in range;
 *   - no string on the wire holds a NUL (it would be cut short silently:
 *     "node1\0x" must not become "node1");
 *   - only the canonical encoding is accepted: encode writes back as
 *     the same bytes, and decode reads them
 *     again to the same message;
 *   - failing any one allocation of the decode (chosen from the input)
 *     gives an error, an empty message and no leak.
 */
#define _GNU_SOURCE
#include "fuzz.h"

#include "dmp_impl.h"

#include <math.h>
#include <string.h>

#include "dmp.pb-c.h"

/* A string field is a NUL-terminated string inside its array. */
#define S_WIRE_STR_OK(arr) (memchr((arr), '\0', sizeof(arr)) != NULL)

static bool
s_wire_name_ok(const char *name, size_t size, bool allow_empty)
{
    if (!memchr(name, '\0', size))
        return false;
    return name[0] == '\0' ? allow_empty : dmp__name_valid(name);
}

static bool
s_wire_addr_ok(const char *addr, size_t size)
{
    if (!memchr(addr, '\0', size))
        return false;
    return addr[0] == '\0' || dmp__endpoint_valid(addr);
}

static bool
s_wire_digest_ok(const char *d, bool allow_empty)
{
    size_t len = strnlen(d, DMP__DIGEST_HEX + 1);
    if (len == 0)
        return allow_empty;
    if (len != DMP__DIGEST_HEX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((d[i] >= '0' && d[i] <= '9') || (d[i] >= 'a' && d[i] <= 'f')))
            return false;
    return true;
}

/* The promise of dmp_impl.h for an accepted message, kind by kind. */
static void
s_wire_check_sane(const dmp__msg_t *m)
{
    FUZZ_CHECK(s_wire_name_ok(m->node, sizeof m->node, true), "envelope node");
    FUZZ_CHECK(strcmp(dmp__msg_kind_name(m->kind), "unknown") != 0 &&
                   m->kind != DMP__MSG_NONE,
               "kind %d", (int)m->kind);
    switch (m->kind) {
    case DMP__MSG_HELLO:
        FUZZ_CHECK(s_wire_name_ok(m->u.hello.node, sizeof m->u.hello.node,
                                  true),
                   "hello node");
        FUZZ_CHECK(S_WIRE_STR_OK(m->u.hello.role) &&
                       dmp__utf8_valid(m->u.hello.role),
                   "hello role");
        break;
    case DMP__MSG_ERROR:
        FUZZ_CHECK(m->u.error.code < 0, "error code %d", m->u.error.code);
        FUZZ_CHECK(S_WIRE_STR_OK(m->u.error.text) &&
                       dmp__utf8_valid(m->u.error.text),
                   "error text");
        break;
    case DMP__MSG_HEARTBEAT:
        FUZZ_CHECK(s_wire_name_ok(m->u.heartbeat.node,
                                  sizeof m->u.heartbeat.node, false),
                   "heartbeat node");
        FUZZ_CHECK(s_wire_addr_ok(m->u.heartbeat.address,
                                  sizeof m->u.heartbeat.address),
                   "heartbeat address");
        FUZZ_CHECK(isfinite(m->u.heartbeat.load) && m->u.heartbeat.load >= 0,
                   "heartbeat load %g", m->u.heartbeat.load);
        FUZZ_CHECK(m->u.heartbeat.cores <= 65536, "cores");
        FUZZ_CHECK(m->u.heartbeat.n_members <= DMP__MEMBERS_MAX &&
                       (m->u.heartbeat.n_members == 0) ==
                           (m->u.heartbeat.members == NULL),
                   "members %zu", m->u.heartbeat.n_members);
        for (size_t i = 0; i < m->u.heartbeat.n_members; i++) {
            const dmp__member_t *mb = &m->u.heartbeat.members[i];
            FUZZ_CHECK(s_wire_name_ok(mb->name, sizeof mb->name, false),
                       "member %zu name", i);
            FUZZ_CHECK(s_wire_addr_ok(mb->address, sizeof mb->address),
                       "member %zu address", i);
        }
        break;
    case DMP__MSG_NODES_REPLY:
        FUZZ_CHECK(m->u.nodes_reply.n_nodes <= DMP__MEMBERS_MAX &&
                       (m->u.nodes_reply.n_nodes == 0) ==
                           (m->u.nodes_reply.nodes == NULL),
                   "nodes %zu", m->u.nodes_reply.n_nodes);
        for (size_t i = 0; i < m->u.nodes_reply.n_nodes; i++) {
            const dmp_node_info_t *ni = &m->u.nodes_reply.nodes[i];
            FUZZ_CHECK(s_wire_name_ok(ni->name, sizeof ni->name, false),
                       "node %zu name", i);
            FUZZ_CHECK(s_wire_addr_ok(ni->address, sizeof ni->address),
                       "node %zu address", i);
            FUZZ_CHECK(ni->state <= DMP_NODE_DEAD, "node %zu state", i);
            FUZZ_CHECK(isfinite(ni->load) && ni->load >= 0, "node %zu load",
                       i);
            FUZZ_CHECK(ni->cores <= 65536, "node %zu cores", i);
        }
        break;
    case DMP__MSG_SPAWN_REQUEST: {
        const __typeof__(m->u.spawn_request) *r = &m->u.spawn_request;
        FUZZ_CHECK(s_wire_name_ok(r->name, sizeof r->name, false),
                   "spawn name");
        FUZZ_CHECK(s_wire_name_ok(r->target, sizeof r->target, true),
                   "spawn target");
        FUZZ_CHECK(s_wire_digest_ok(r->digest, true), "spawn digest");
        FUZZ_CHECK((r->target[0] != '\0') == (r->argc == 0),
                   "exactly one of target and argv");
        FUZZ_CHECK(r->argc <= DMP__ARGV_MAX, "argc %zu", r->argc);
        FUZZ_CHECK((r->argc == 0) == (r->argv == NULL), "argv array");
        for (size_t i = 0; i < r->argc; i++) {
            FUZZ_CHECK(r->argv[i] != NULL, "argv[%zu] NULL", i);
            FUZZ_CHECK(strlen(r->argv[i]) <= DMP__ARG_LEN_MAX,
                       "argv[%zu] length", i);
        }
        if (r->argc) {
            FUZZ_CHECK(r->argv[r->argc] == NULL, "argv not NULL-terminated");
            FUZZ_CHECK(r->argv[0][0] != '\0', "empty argv[0]");
        }
        FUZZ_CHECK((r->args_len == 0) == (r->args == NULL), "args");
        FUZZ_CHECK(r->args_len <= DMP__WIRE_MAX, "args_len");
        break;
    }
    case DMP__MSG_SPAWN_REPLY:
        FUZZ_CHECK(s_wire_name_ok(m->u.spawn_reply.node,
                                  sizeof m->u.spawn_reply.node, false),
                   "spawn reply node");
        FUZZ_CHECK(m->u.spawn_reply.pid != 0, "spawn reply pid 0");
        break;
    case DMP__MSG_UPLOAD:
        FUZZ_CHECK(s_wire_digest_ok(m->u.upload.digest, false),
                   "upload digest");
        FUZZ_CHECK(m->u.upload.offset <= m->u.upload.size &&
                       m->u.upload.len <=
                           m->u.upload.size - m->u.upload.offset,
                   "upload chunk beyond size");
        FUZZ_CHECK(m->u.upload.len <= DMP__CHUNK_MAX, "upload chunk size");
        FUZZ_CHECK((m->u.upload.len == 0) == (m->u.upload.data == NULL),
                   "upload data");
        break;
    case DMP__MSG_PROC_OUTPUT:
        FUZZ_CHECK(s_wire_name_ok(m->u.proc_output.node,
                                  sizeof m->u.proc_output.node, false),
                   "output node");
        FUZZ_CHECK(m->u.proc_output.stream == 1 ||
                       m->u.proc_output.stream == 2,
                   "output stream %u", m->u.proc_output.stream);
        FUZZ_CHECK(m->u.proc_output.len <= DMP__CHUNK_MAX &&
                       (m->u.proc_output.len == 0) ==
                           (m->u.proc_output.data == NULL),
                   "output data");
        break;
    case DMP__MSG_PROC_EXIT:
        FUZZ_CHECK(s_wire_name_ok(m->u.proc_exit.node,
                                  sizeof m->u.proc_exit.node, false),
                   "exit node");
        FUZZ_CHECK(m->u.proc_exit.exitcode >= -128 &&
                       m->u.proc_exit.exitcode <= 255 &&
                       m->u.proc_exit.error <= 0,
                   "exit code %d error %d", m->u.proc_exit.exitcode,
                   m->u.proc_exit.error);
        break;
    case DMP__MSG_PROC_SIGNAL:
        FUZZ_CHECK(m->u.proc_signal.signo >= 1 && m->u.proc_signal.signo <= 64,
                   "signo %u", m->u.proc_signal.signo);
        break;
    case DMP__MSG_PROC_LIST_REPLY:
        FUZZ_CHECK(m->u.proc_list_reply.n_procs <= 65536 &&
                       (m->u.proc_list_reply.n_procs == 0) ==
                           (m->u.proc_list_reply.procs == NULL),
                   "procs %zu", m->u.proc_list_reply.n_procs);
        for (size_t i = 0; i < m->u.proc_list_reply.n_procs; i++) {
            const dmp__proc_info_t *p = &m->u.proc_list_reply.procs[i];
            FUZZ_CHECK(s_wire_name_ok(p->node, sizeof p->node, false) &&
                           s_wire_name_ok(p->name, sizeof p->name, false) &&
                           s_wire_name_ok(p->target, sizeof p->target, false),
                       "proc %zu names", i);
        }
        break;
    case DMP__MSG_OBJ_NEW:
        FUZZ_CHECK(m->u.obj_new.type == DMP__OBJ_QUEUE ||
                       m->u.obj_new.type == DMP__OBJ_PIPE,
                   "obj type %u", m->u.obj_new.type);
        FUZZ_CHECK(m->u.obj_new.item_max <= (1ull << 40) &&
                       m->u.obj_new.capacity <= (1ull << 40),
                   "obj sizes");
        break;
    case DMP__MSG_OBJ_INFO:
        FUZZ_CHECK(s_wire_name_ok(m->u.obj_info.node,
                                  sizeof m->u.obj_info.node, false),
                   "obj node");
        FUZZ_CHECK(m->u.obj_info.n_rings >= 1 &&
                       m->u.obj_info.n_rings <= DMP__OBJ_RINGS_MAX,
                   "n_rings %zu", m->u.obj_info.n_rings);
        for (size_t i = 0; i < m->u.obj_info.n_rings; i++) {
            const char *ring = m->u.obj_info.rings[i];
            FUZZ_CHECK(memchr(ring, '\0', DMP__RING_NAME_MAX) != NULL,
                       "ring %zu unterminated", i);
            /* A shm name of ours: never a path, never "." or "..". */
            FUZZ_CHECK(strncmp(ring, "/dmp-", 5) == 0 &&
                           strchr(ring + 1, '/') == NULL &&
                           dmp__name_valid(ring + 1),
                       "ring %zu name '%s'", i, ring);
        }
        break;
    case DMP__MSG_RING_OP:
        FUZZ_CHECK(m->u.ring_op.ring < DMP__OBJ_RINGS_MAX, "ring index");
        FUZZ_CHECK(m->u.ring_op.op >= DMP__RING_PUT &&
                       m->u.ring_op.op <= DMP__RING_OP_LAST,
                   "ring op %u", m->u.ring_op.op);
        FUZZ_CHECK(!isnan(m->u.ring_op.timeout), "ring op NaN timeout");
        FUZZ_CHECK((m->u.ring_op.len == 0) == (m->u.ring_op.data == NULL),
                   "ring op data");
        /* What the agent and the client do with the timeout must be
         * defined for any value that got through (UBSan watches). */
        (void)dmp__timeout_ms(m->u.ring_op.timeout);
        break;
    case DMP__MSG_RING_REPLY:
        FUZZ_CHECK((m->u.ring_reply.len == 0) == (m->u.ring_reply.data == NULL),
                   "ring reply data");
        break;
    case DMP__MSG_SHARED_NEW:
        FUZZ_CHECK(m->u.shared_new.typecode != 0 &&
                       strchr(DMP__TYPECODES, m->u.shared_new.typecode) &&
                       dmp__typecode_size(m->u.shared_new.typecode) > 0,
                   "typecode %d", m->u.shared_new.typecode);
        FUZZ_CHECK(m->u.shared_new.length >= 1 &&
                       m->u.shared_new.length <= DMP__SHARED_LENGTH_MAX,
                   "length %llu",
                   (unsigned long long)m->u.shared_new.length);
        break;
    case DMP__MSG_SHARED_OP: {
        const __typeof__(m->u.shared_op) *o = &m->u.shared_op;
        FUZZ_CHECK(o->op >= DMP__SHARED_ATTACH && o->op <= DMP__SHARED_OP_LAST,
                   "shared op %u", o->op);
        FUZZ_CHECK(s_wire_name_ok(o->holder_node, sizeof o->holder_node,
                                  false),
                   "holder node");
        FUZZ_CHECK(o->holder_pid >= 1 && o->holder_pid <= INT32_MAX,
                   "holder pid %u", o->holder_pid);
        FUZZ_CHECK(o->start <= DMP__SHARED_LENGTH_MAX &&
                       o->count <= DMP__SHARED_LENGTH_MAX,
                   "range");
        FUZZ_CHECK(!isnan(o->timeout), "shared op NaN timeout");
        FUZZ_CHECK((o->len == 0) == (o->data == NULL) &&
                       o->len <= DMP__WIRE_MAX,
                   "shared op data");
        (void)dmp__timeout_ms(o->timeout);
        break;
    }
    case DMP__MSG_SHARED_REPLY:
        FUZZ_CHECK(isfinite(m->u.shared_reply.lease) &&
                       m->u.shared_reply.lease >= 0 &&
                       m->u.shared_reply.lease <= 1e6,
                   "lease %g", m->u.shared_reply.lease);
        FUZZ_CHECK((m->u.shared_reply.len == 0) ==
                       (m->u.shared_reply.data == NULL),
                   "shared reply data");
        break;
    default:
        break;
    }
}

/* ---- the raw frame: NUL inside strings, unknown fields ------------- */

static bool
s_wire_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = x;
            return true;
        }
    }
    return false;
}

/* What a walk of the raw frame saw. */
typedef struct {
    const char *nul_field; /* first string field holding a NUL, or NULL */
    bool unknown;          /* a field number the schema does not have */
} s_wire_scan_t;

/* Walks a frame decode accepted, guided by the generated descriptors (so
 * it follows the schema without repeating it). */
static void
s_wire_scan(const ProtobufCMessageDescriptor *desc, const uint8_t *p,
            size_t len, int depth, s_wire_scan_t *scan)
{
    const uint8_t *end = p + len;
    while (p < end && depth < 8) {
        uint64_t key, n;
        if (!s_wire_varint(&p, end, &key))
            return;
        const ProtobufCFieldDescriptor *f =
            key >> 3 <= UINT32_MAX
                ? protobuf_c_message_descriptor_get_field(desc,
                                                          (unsigned)(key >> 3))
                : NULL;
        if (!f)
            scan->unknown = true;
        switch (key & 7) {
        case 0:
            if (!s_wire_varint(&p, end, &n))
                return;
            break;
        case 1:
            if ((size_t)(end - p) < 8)
                return;
            p += 8;
            break;
        case 5:
            if ((size_t)(end - p) < 4)
                return;
            p += 4;
            break;
        case 2:
            if (!s_wire_varint(&p, end, &n) || n > (uint64_t)(end - p))
                return;
            if (f && f->type == PROTOBUF_C_TYPE_STRING && !scan->nul_field &&
                memchr(p, '\0', (size_t)n))
                scan->nul_field = f->name;
            if (f && f->type == PROTOBUF_C_TYPE_MESSAGE)
                s_wire_scan(f->descriptor, p, (size_t)n, depth + 1, scan);
            p += n;
            break;
        default:
            return; /* groups: protobuf-c skipped or refused them */
        }
    }
}

/* ---- round trip ------------------------------------------------------ */

static void
s_wire_check_equal(const dmp__msg_t *a, const dmp__msg_t *b)
{
    /* Scalars and fixed strings compare as bytes (decode starts from a
     * zeroed message and strlcpy pads nothing, so unused bytes are 0);
     * owned arrays are compared by content, their pointers zeroed. */
    dmp__msg_t x = *a, y = *b;
    /* encode writes version 0 as DMP_PROTOCOL_VERSION. */
    if (x.version == 0)
        x.version = DMP_PROTOCOL_VERSION;
    FUZZ_CHECK(x.kind == y.kind, "kind %d became %d", (int)x.kind,
               (int)y.kind);
/* protobuf-c leaves out a double equal to 0, so -0.0 comes back as 0.0:
 * equal numbers, other bytes. */
#define S_WIRE_ZERO(d)                                                       \
    do {                                                                     \
        if ((d) == 0)                                                        \
            (d) = 0.0;                                                       \
    } while (0)
#define S_WIRE_SAME_BYTES(pa, pb, len, what)                                 \
    FUZZ_CHECK((len) == 0 || memcmp((pa), (pb), (len)) == 0,                 \
               "%s changed in a round trip", what)
    switch (x.kind) {
    case DMP__MSG_HEARTBEAT:
        S_WIRE_ZERO(x.u.heartbeat.load);
        S_WIRE_ZERO(y.u.heartbeat.load);
        FUZZ_CHECK(x.u.heartbeat.n_members == y.u.heartbeat.n_members,
                   "members");
        S_WIRE_SAME_BYTES(x.u.heartbeat.members, y.u.heartbeat.members,
                          x.u.heartbeat.n_members * sizeof(dmp__member_t),
                          "members");
        x.u.heartbeat.members = y.u.heartbeat.members = NULL;
        break;
    case DMP__MSG_NODES_REPLY:
        FUZZ_CHECK(x.u.nodes_reply.n_nodes == y.u.nodes_reply.n_nodes,
                   "nodes");
        for (size_t i = 0; i < x.u.nodes_reply.n_nodes; i++) {
            dmp_node_info_t nx = x.u.nodes_reply.nodes[i];
            dmp_node_info_t ny = y.u.nodes_reply.nodes[i];
            S_WIRE_ZERO(nx.load);
            S_WIRE_ZERO(ny.load);
            S_WIRE_SAME_BYTES(&nx, &ny, sizeof nx, "node info");
        }
        x.u.nodes_reply.nodes = y.u.nodes_reply.nodes = NULL;
        break;
    case DMP__MSG_SPAWN_REQUEST:
        FUZZ_CHECK(x.u.spawn_request.argc == y.u.spawn_request.argc, "argc");
        for (size_t i = 0; i < x.u.spawn_request.argc; i++)
            FUZZ_CHECK(strcmp(x.u.spawn_request.argv[i],
                              y.u.spawn_request.argv[i]) == 0,
                       "argv[%zu]", i);
        FUZZ_CHECK(x.u.spawn_request.args_len == y.u.spawn_request.args_len,
                   "args_len");
        S_WIRE_SAME_BYTES(x.u.spawn_request.args, y.u.spawn_request.args,
                          x.u.spawn_request.args_len, "args");
        x.u.spawn_request.argv = y.u.spawn_request.argv = NULL;
        x.u.spawn_request.args = y.u.spawn_request.args = NULL;
        break;
    case DMP__MSG_UPLOAD:
        FUZZ_CHECK(x.u.upload.len == y.u.upload.len, "upload len");
        S_WIRE_SAME_BYTES(x.u.upload.data, y.u.upload.data, x.u.upload.len,
                          "upload data");
        x.u.upload.data = y.u.upload.data = NULL;
        break;
    case DMP__MSG_PROC_OUTPUT:
        FUZZ_CHECK(x.u.proc_output.len == y.u.proc_output.len, "output len");
        S_WIRE_SAME_BYTES(x.u.proc_output.data, y.u.proc_output.data,
                          x.u.proc_output.len, "output data");
        x.u.proc_output.data = y.u.proc_output.data = NULL;
        break;
    case DMP__MSG_PROC_LIST_REPLY:
        FUZZ_CHECK(x.u.proc_list_reply.n_procs == y.u.proc_list_reply.n_procs,
                   "procs");
        S_WIRE_SAME_BYTES(x.u.proc_list_reply.procs,
                          y.u.proc_list_reply.procs,
                          x.u.proc_list_reply.n_procs *
                              sizeof(dmp__proc_info_t),
                          "procs");
        x.u.proc_list_reply.procs = y.u.proc_list_reply.procs = NULL;
        break;
    case DMP__MSG_RING_OP:
        S_WIRE_ZERO(x.u.ring_op.timeout);
        S_WIRE_ZERO(y.u.ring_op.timeout);
        FUZZ_CHECK(x.u.ring_op.len == y.u.ring_op.len, "ring op len");
        S_WIRE_SAME_BYTES(x.u.ring_op.data, y.u.ring_op.data, x.u.ring_op.len,
                          "ring op data");
        x.u.ring_op.data = y.u.ring_op.data = NULL;
        break;
    case DMP__MSG_RING_REPLY:
        FUZZ_CHECK(x.u.ring_reply.len == y.u.ring_reply.len, "ring reply len");
        S_WIRE_SAME_BYTES(x.u.ring_reply.data, y.u.ring_reply.data,
                          x.u.ring_reply.len, "ring reply data");
        x.u.ring_reply.data = y.u.ring_reply.data = NULL;
        break;
    case DMP__MSG_SHARED_OP:
        S_WIRE_ZERO(x.u.shared_op.timeout);
        S_WIRE_ZERO(y.u.shared_op.timeout);
        FUZZ_CHECK(x.u.shared_op.len == y.u.shared_op.len, "shared op len");
        S_WIRE_SAME_BYTES(x.u.shared_op.data, y.u.shared_op.data,
                          x.u.shared_op.len, "shared op data");
        x.u.shared_op.data = y.u.shared_op.data = NULL;
        break;
    case DMP__MSG_SHARED_REPLY:
        S_WIRE_ZERO(x.u.shared_reply.lease);
        S_WIRE_ZERO(y.u.shared_reply.lease);
        FUZZ_CHECK(x.u.shared_reply.len == y.u.shared_reply.len,
                   "shared reply len");
        S_WIRE_SAME_BYTES(x.u.shared_reply.data, y.u.shared_reply.data,
                          x.u.shared_reply.len, "shared reply data");
        x.u.shared_reply.data = y.u.shared_reply.data = NULL;
        break;
    default:
        break;
    }
#undef S_WIRE_SAME_BYTES
#undef S_WIRE_ZERO
    FUZZ_CHECK(memcmp(&x, &y, sizeof x) == 0,
               "%s message changed in a round trip",
               dmp__msg_kind_name(x.kind));
}

static bool
s_wire_is_empty(const dmp__msg_t *m)
{
    static const dmp__msg_t zero;
    return memcmp(m, &zero, sizeof zero) == 0;
}

FUZZ_TARGET(wire)
{
    dmp__msg_t msg;
    dmp__alloc_fail_after(0); /* count this decode's allocations */
    int rc = dmp__wire_decode(data, size, &msg);
    long allocs = dmp__alloc_fail_after(0);
    if (rc != 0) {
        FUZZ_CHECK(rc == DMP_EPROTO || rc == -ENOMEM, "rc %d", rc);
        FUZZ_CHECK(s_wire_is_empty(&msg), "rejected but not empty");
    } else {
        s_wire_check_sane(&msg);
        s_wire_scan_t scan = {NULL, false};
        s_wire_scan(&dmpwire__envelope__descriptor, data, size, 0, &scan);
        FUZZ_CHECK(scan.nul_field == NULL,
                   "string field '%s' with a NUL byte accepted (cut short)",
                   scan.nul_field);

        uint8_t *buf = NULL;
        size_t len = 0;
        rc = dmp__wire_encode(&msg, &buf, &len);
        /* A message decode accepted fits: the frame it came from did. */
        FUZZ_CHECK(rc == 0, "re-encode failed: %s", dmp_strerror(rc));
        /* Only the canonical encoding is accepted (dmp__wire_decode); version 0 is absent on the wire, and encode
         * writes DMP_PROTOCOL_VERSION (2 bytes) instead. */
        size_t want = size + (msg.version == 0 ? 2 : 0);
        FUZZ_CHECK(!scan.unknown, "unknown fields accepted");
        FUZZ_CHECK(len == want, "%zu bytes accepted, re-encoded to %zu "
                   "(expected %zu)", size, len, want);
        /* Byte for byte: field order, bool values other than 1, varints
         * past 32 bits of a 5-byte uint32 keep the size. */
        FUZZ_CHECK(msg.version == 0 || memcmp(buf, data, size) == 0,
                   "accepted a non-canonical encoding of %zu bytes", size);
        dmp__msg_t again;
        rc = dmp__wire_decode(buf, len, &again);
        dmp__free(buf);
        FUZZ_CHECK(rc == 0, "re-encoded %s does not decode: %s",
                   dmp__msg_kind_name(msg.kind), dmp_strerror(rc));
        s_wire_check_equal(&msg, &again);
        dmp__msg_clear(&again);
        dmp__msg_clear(&msg);
        FUZZ_CHECK(s_wire_is_empty(&msg), "clear left something");
    }

    /* The same frame with one of its allocations failing. */
    if (allocs > 0) {
        long nth = 1 + (long)(fuzz_hash(data, size) % (uint64_t)allocs);
        dmp__alloc_fail_after(nth);
        int rc2 = dmp__wire_decode(data, size, &msg);
        dmp__alloc_fail_after(0);
        if (rc2 != 0) {
            FUZZ_CHECK(rc2 == DMP_EPROTO || rc2 == -ENOMEM, "rc %d", rc2);
            FUZZ_CHECK(s_wire_is_empty(&msg), "failed but not empty");
        } else {
            /* Possible only if that allocation's failure was tolerated. */
            dmp__msg_clear(&msg);
        }
    }
    return 0;
}
