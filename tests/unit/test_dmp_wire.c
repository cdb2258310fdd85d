/*
 * test_dmp_wire.c - encode/decode of every message, and hostile frames.
 *
 * Frames the encoder can express (NaN load, bad names, codes >= 0) are
 * made with dmp__wire_encode, which does not validate; frames it cannot
 * express (over-long strings, a missing body, unknown fields) are written
 * by hand with the tiny protobuf writer below, so the test does not depend
 * on the generated code. Every rejected frame must give DMP_EPROTO and
 * leave the message empty; random and mutated frames must never crash.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "dmp_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---------------------------------------------------------- */

/* Encodes msg (must succeed) and decodes it into out; returns decode's rc. */
static int
s_encode_decode(const dmp__msg_t *msg, dmp__msg_t *out)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(dmp__wire_encode(msg, &buf, &len), 0);
    assert_non_null(buf);
    int rc = dmp__wire_decode(buf, len, out);
    dmp__free(buf);
    return rc;
}

static bool
s_is_empty(const dmp__msg_t *msg)
{
    static const dmp__msg_t zero;
    return memcmp(msg, &zero, sizeof zero) == 0;
}

/* The encoder takes msg as is; the decoder must refuse it. */
static void
s_assert_rejected(const dmp__msg_t *msg)
{
    dmp__msg_t out;
    assert_int_equal(s_encode_decode(msg, &out), DMP_EPROTO);
    assert_true(s_is_empty(&out));
}

static void
s_assert_buf_rejected(const uint8_t *buf, size_t len)
{
    dmp__msg_t out;
    assert_int_equal(dmp__wire_decode(buf, len, &out), DMP_EPROTO);
    assert_true(s_is_empty(&out));
}

/* A heartbeat with n members; members allocated so msg_clear frees them. */
static void
s_heartbeat(dmp__msg_t *msg, size_t n)
{
    memset(msg, 0, sizeof *msg);
    msg->id = 7;
    msg->kind = DMP__MSG_HEARTBEAT;
    strcpy(msg->u.heartbeat.node, "n1");
    strcpy(msg->u.heartbeat.address, "tcp://10.0.0.1:7700");
    msg->u.heartbeat.cores = 8;
    msg->u.heartbeat.load = 0.75;
    msg->u.heartbeat.uptime_ms = 123456789012ull;
    msg->u.heartbeat.incarnation = 0xfeedfacecafebeefull;
    msg->u.heartbeat.processes = 3;
    if (n) {
        msg->u.heartbeat.members = dmp__calloc(n, sizeof(dmp__member_t));
        assert_non_null(msg->u.heartbeat.members);
    }
    msg->u.heartbeat.n_members = n;
    for (size_t i = 0; i < n; i++) {
        snprintf(msg->u.heartbeat.members[i].name, DMP__NAME_MAX, "m%zu", i);
        snprintf(msg->u.heartbeat.members[i].address, DMP__ADDR_MAX,
                 "tcp://10.0.%zu.%zu:7700", i / 256, i % 256);
    }
}

/* A nodes reply with n nodes, states cycling through alive/suspect/dead. */
static void
s_nodes_reply(dmp__msg_t *msg, size_t n)
{
    memset(msg, 0, sizeof *msg);
    msg->id = 99;
    msg->kind = DMP__MSG_NODES_REPLY;
    if (n) {
        msg->u.nodes_reply.nodes = dmp__calloc(n, sizeof(dmp_node_info_t));
        assert_non_null(msg->u.nodes_reply.nodes);
    }
    msg->u.nodes_reply.n_nodes = n;
    for (size_t i = 0; i < n; i++) {
        dmp_node_info_t *ni = &msg->u.nodes_reply.nodes[i];
        snprintf(ni->name, sizeof ni->name, "node-%zu", i);
        if (i % 4 != 3) /* some nodes are ipc only: empty address */
            snprintf(ni->address, sizeof ni->address, "tcp://h%zu:%zu", i,
                     7700 + i % 100);
        ni->state = (dmp_node_state_t)(i % 3);
        ni->cores = (unsigned)(1 + i % 64);
        ni->load = (double)i / 8.0;
        ni->uptime_ms = 1000 * i;
        ni->processes = (unsigned)i;
        ni->last_seen_ms = 10 * i;
    }
}

static void
s_assert_heartbeat_equal(const dmp__msg_t *a, const dmp__msg_t *b)
{
    assert_int_equal(a->kind, DMP__MSG_HEARTBEAT);
    assert_int_equal(b->kind, DMP__MSG_HEARTBEAT);
    assert_true(a->id == b->id);
    assert_string_equal(a->u.heartbeat.node, b->u.heartbeat.node);
    assert_string_equal(a->u.heartbeat.address, b->u.heartbeat.address);
    assert_int_equal(a->u.heartbeat.cores, b->u.heartbeat.cores);
    assert_true(a->u.heartbeat.load == b->u.heartbeat.load);
    assert_true(a->u.heartbeat.uptime_ms == b->u.heartbeat.uptime_ms);
    assert_true(a->u.heartbeat.incarnation == b->u.heartbeat.incarnation);
    assert_int_equal(a->u.heartbeat.processes, b->u.heartbeat.processes);
    assert_int_equal(a->u.heartbeat.n_members, b->u.heartbeat.n_members);
    for (size_t i = 0; i < a->u.heartbeat.n_members; i++) {
        assert_string_equal(a->u.heartbeat.members[i].name,
                            b->u.heartbeat.members[i].name);
        assert_string_equal(a->u.heartbeat.members[i].address,
                            b->u.heartbeat.members[i].address);
    }
}

static void
s_assert_nodes_equal(const dmp__msg_t *a, const dmp__msg_t *b)
{
    assert_int_equal(a->kind, DMP__MSG_NODES_REPLY);
    assert_int_equal(b->kind, DMP__MSG_NODES_REPLY);
    assert_true(a->id == b->id);
    assert_int_equal(a->u.nodes_reply.n_nodes, b->u.nodes_reply.n_nodes);
    for (size_t i = 0; i < a->u.nodes_reply.n_nodes; i++) {
        const dmp_node_info_t *x = &a->u.nodes_reply.nodes[i];
        const dmp_node_info_t *y = &b->u.nodes_reply.nodes[i];
        assert_string_equal(x->name, y->name);
        assert_string_equal(x->address, y->address);
        assert_int_equal(x->state, y->state);
        assert_int_equal(x->cores, y->cores);
        assert_true(x->load == y->load);
        assert_true(x->uptime_ms == y->uptime_ms);
        assert_int_equal(x->processes, y->processes);
        assert_true(x->last_seen_ms == y->last_seen_ms);
    }
}

/* What every successfully decoded message must satisfy, whatever bytes it
 * came from: the promise "safe to use as is" of dmp_impl.h. */
static void
s_assert_sane(const dmp__msg_t *m)
{
    switch (m->kind) {
    case DMP__MSG_HELLO:
        assert_true(strlen(m->u.hello.node) < DMP__NAME_MAX);
        assert_true(m->u.hello.node[0] == '\0' ||
                    dmp__name_valid(m->u.hello.node));
        assert_true(strlen(m->u.hello.role) < sizeof m->u.hello.role);
        assert_true(dmp__utf8_valid(m->u.hello.role));
        break;
    case DMP__MSG_ERROR:
        assert_true(m->u.error.code < 0);
        assert_true(strlen(m->u.error.text) < DMP__TEXT_MAX);
        assert_true(dmp__utf8_valid(m->u.error.text));
        break;
    case DMP__MSG_HEARTBEAT:
        assert_true(dmp__name_valid(m->u.heartbeat.node));
        assert_true(m->u.heartbeat.address[0] == '\0' ||
                    dmp__endpoint_valid(m->u.heartbeat.address));
        assert_true(isfinite(m->u.heartbeat.load));
        assert_true(m->u.heartbeat.load >= 0);
        assert_true(m->u.heartbeat.n_members <= DMP__MEMBERS_MAX);
        assert_true((m->u.heartbeat.n_members == 0) ==
                    (m->u.heartbeat.members == NULL));
        for (size_t i = 0; i < m->u.heartbeat.n_members; i++) {
            assert_true(dmp__name_valid(m->u.heartbeat.members[i].name));
            const char *a = m->u.heartbeat.members[i].address;
            assert_true(a[0] == '\0' || dmp__endpoint_valid(a));
        }
        break;
    case DMP__MSG_NODES_REQUEST:
        break;
    case DMP__MSG_NODES_REPLY:
        assert_true(m->u.nodes_reply.n_nodes <= DMP__MEMBERS_MAX);
        assert_true((m->u.nodes_reply.n_nodes == 0) ==
                    (m->u.nodes_reply.nodes == NULL));
        for (size_t i = 0; i < m->u.nodes_reply.n_nodes; i++) {
            const dmp_node_info_t *ni = &m->u.nodes_reply.nodes[i];
            assert_true(dmp__name_valid(ni->name));
            assert_true(ni->address[0] == '\0' ||
                        dmp__endpoint_valid(ni->address));
            assert_true(ni->state <= DMP_NODE_DEAD);
            assert_true(isfinite(ni->load) && ni->load >= 0);
        }
        break;
    default:
        /* Kinds this file does not know yet: at least a named kind. */
        assert_int_not_equal(m->kind, DMP__MSG_NONE);
        assert_string_not_equal(dmp__msg_kind_name(m->kind), "unknown");
    }
}

/* A seeded generator, so a failure replays the same bytes. */
static uint64_t s_rng = 0x9e3779b97f4a7c15ull;

static uint32_t
s_rand(void)
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return (uint32_t)(s_rng >> 32);
}

/* A minimal protobuf writer for frames the encoder cannot produce. */
typedef struct {
    uint8_t b[8192];
    size_t n;
} s_pb_t;

static void
s_pb_varint(s_pb_t *pb, uint64_t v)
{
    do {
        assert_true(pb->n < sizeof pb->b);
        pb->b[pb->n++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        v >>= 7;
    } while (v);
}

static void
s_pb_uint(s_pb_t *pb, unsigned field, uint64_t v)
{
    s_pb_varint(pb, (uint64_t)field << 3 | 0);
    s_pb_varint(pb, v);
}

static void
s_pb_bytes(s_pb_t *pb, unsigned field, const void *p, size_t len)
{
    s_pb_varint(pb, (uint64_t)field << 3 | 2);
    s_pb_varint(pb, len);
    assert_true(pb->n + len <= sizeof pb->b);
    memcpy(pb->b + pb->n, p, len);
    pb->n += len;
}

static void
s_pb_str(s_pb_t *pb, unsigned field, const char *s)
{
    s_pb_bytes(pb, field, s, strlen(s));
}

static void
s_pb_sub(s_pb_t *pb, unsigned field, const s_pb_t *sub)
{
    s_pb_bytes(pb, field, sub->b, sub->n);
}

/* Field numbers from proto/dmp.proto. */
enum {
    F_ENV_ID = 1, F_ENV_VERSION = 2, F_ENV_HELLO = 10, F_ENV_ERROR = 11,
    F_ENV_HEARTBEAT = 12, F_ENV_NODES_REPLY = 14, F_ENV_RING_REPLY = 28,
    F_RING_REPLY_DATA = 1,
    F_HELLO_VERSION = 1, F_HELLO_NODE = 2, F_HELLO_ROLE = 3,
    F_ERROR_CODE = 1, F_ERROR_TEXT = 2,
    F_HB_NODE = 1, F_HB_ADDRESS = 2,
};

/* A string of exactly len characters c. Caller frees. */
static char *
s_repeat(char c, size_t len)
{
    char *s = malloc(len + 1);
    assert_non_null(s);
    memset(s, c, len);
    s[len] = '\0';
    return s;
}

/* A valid tcp endpoint exactly len characters long. */
static char *
s_endpoint_of_len(size_t len)
{
    assert_true(len > 11);
    char *s = s_repeat('h', len);
    memcpy(s, "tcp://", 6);
    memcpy(s + len - 5, ":7700", 5);
    return s;
}

/* An envelope holding one Hello with the given node and role. */
static void
s_pb_hello_frame(s_pb_t *env, const char *node, const char *role)
{
    s_pb_t hello = {.n = 0};
    s_pb_uint(&hello, F_HELLO_VERSION, DMP_PROTOCOL_VERSION);
    s_pb_str(&hello, F_HELLO_NODE, node);
    s_pb_str(&hello, F_HELLO_ROLE, role);
    env->n = 0;
    s_pb_uint(env, F_ENV_ID, 1);
    s_pb_uint(env, F_ENV_VERSION, DMP_PROTOCOL_VERSION);
    s_pb_sub(env, F_ENV_HELLO, &hello);
}

/* ---- tests ------------------------------------------------------------ */

static void
test_wire_round_trips_a_heartbeat(void **state)
{
    (void)state;
    dmp__msg_t msg, got;
    s_heartbeat(&msg, 3); /* fills node, address, load, 3 members */

    uint8_t *buf;
    size_t len;
    int rc = dmp__wire_encode(&msg, &buf, &len);
    assert_int_equal(rc, 0);

    rc = dmp__wire_decode(buf, len, &got);
    dmp__free(buf);
    assert_int_equal(rc, 0);
    s_assert_heartbeat_equal(&msg, &got);
    assert_int_equal(got.version, DMP_PROTOCOL_VERSION);

    dmp__msg_clear(&got);
    dmp__msg_clear(&msg);
}

static void
test_wire_round_trips_every_message_kind(void **state)
{
    (void)state;
    dmp__msg_t msg, got;

    memset(&msg, 0, sizeof msg);
    msg.id = UINT64_MAX;
    msg.version = 42; /* decode keeps it; the caller checks versions */
    msg.kind = DMP__MSG_HELLO;
    msg.u.hello.version = 42;
    strcpy(msg.u.hello.node, "agent-1");
    strcpy(msg.u.hello.role, "agent");
    assert_int_equal(s_encode_decode(&msg, &got), 0);
    assert_int_equal(got.kind, DMP__MSG_HELLO);
    assert_true(got.id == UINT64_MAX);
    assert_int_equal(got.version, 42);
    assert_int_equal(got.u.hello.version, 42);
    assert_string_equal(got.u.hello.node, "agent-1");
    assert_string_equal(got.u.hello.role, "agent");
    dmp__msg_clear(&got);

    /* A plain client says hello with an empty node name. */
    msg.u.hello.node[0] = '\0';
    strcpy(msg.u.hello.role, "client");
    assert_int_equal(s_encode_decode(&msg, &got), 0);
    assert_string_equal(got.u.hello.node, "");
    assert_string_equal(got.u.hello.role, "client");
    dmp__msg_clear(&got);

    dmp__msg_error(&msg, 5, DMP_ENODE, "node '%s' unreachable", "n3");
    assert_int_equal(s_encode_decode(&msg, &got), 0);
    assert_int_equal(got.kind, DMP__MSG_ERROR);
    assert_true(got.id == 5);
    assert_int_equal(got.u.error.code, DMP_ENODE);
    assert_string_equal(got.u.error.text, "node 'n3' unreachable");
    dmp__msg_clear(&got);

    /* The most negative code survives the zigzag encoding. */
    dmp__msg_error(&msg, 6, INT_MIN, "x");
    assert_int_equal(s_encode_decode(&msg, &got), 0);
    assert_int_equal(got.u.error.code, INT_MIN);
    dmp__msg_clear(&got);

    memset(&msg, 0, sizeof msg);
    msg.id = 11;
    msg.kind = DMP__MSG_NODES_REQUEST;
    assert_int_equal(s_encode_decode(&msg, &got), 0);
    assert_int_equal(got.kind, DMP__MSG_NODES_REQUEST);
    assert_true(got.id == 11);
    /* Version 0 in a message to send means "ours". */
    assert_int_equal(got.version, DMP_PROTOCOL_VERSION);
    dmp__msg_clear(&got);

    s_nodes_reply(&msg, 7);
    assert_int_equal(s_encode_decode(&msg, &got), 0);
    s_assert_nodes_equal(&msg, &got);
    dmp__msg_clear(&got);
    dmp__msg_clear(&msg);

    s_nodes_reply(&msg, 0);
    assert_int_equal(s_encode_decode(&msg, &got), 0);
    assert_int_equal(got.kind, DMP__MSG_NODES_REPLY);
    assert_int_equal(got.u.nodes_reply.n_nodes, 0);
    assert_null(got.u.nodes_reply.nodes);
    dmp__msg_clear(&got);

    s_heartbeat(&msg, 0);
    msg.u.heartbeat.address[0] = '\0'; /* ipc-only agent */
    assert_int_equal(s_encode_decode(&msg, &got), 0);
    s_assert_heartbeat_equal(&msg, &got);
    assert_null(got.u.heartbeat.members);
    dmp__msg_clear(&got);
}

static void
test_wire_encode_refuses_unknown_kind(void **state)
{
    (void)state;
    dmp__msg_t msg;
    memset(&msg, 0, sizeof msg);
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(dmp__wire_encode(&msg, &buf, &len), -EINVAL);
    msg.kind = (dmp__msg_kind_t)99;
    assert_int_equal(dmp__wire_encode(&msg, &buf, &len), -EINVAL);
    assert_null(buf);
}

static void
test_wire_encode_refuses_frame_over_wire_max(void **state)
{
    (void)state;
    /* 5000 nodes with long addresses is well over 1 MiB. */
    dmp__msg_t msg;
    s_nodes_reply(&msg, 5000);
    char *addr = s_endpoint_of_len(DMP__ADDR_MAX - 1);
    for (size_t i = 0; i < 5000; i++)
        strcpy(msg.u.nodes_reply.nodes[i].address, addr);
    free(addr);
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(dmp__wire_encode(&msg, &buf, &len), -EMSGSIZE);
    assert_null(buf);
    dmp__msg_clear(&msg);
}

static void
test_wire_rejects_truncated_frame(void **state)
{
    (void)state;
    dmp__msg_t msgs[3];
    s_heartbeat(&msgs[0], 4);
    s_nodes_reply(&msgs[1], 4);
    dmp__msg_error(&msgs[2], 1, DMP_EAUTH, "refused");
    for (size_t k = 0; k < 3; k++) {
        uint8_t *buf;
        size_t len;
        assert_int_equal(dmp__wire_encode(&msgs[k], &buf, &len), 0);
        /* The body is the last field, so every strict prefix either cuts
         * a length-delimited field or has no body at all. */
        for (size_t cut = 0; cut < len; cut++) {
            uint8_t *copy = malloc(cut ? cut : 1); /* exact size: valgrind */
            assert_non_null(copy);
            memcpy(copy, buf, cut);
            s_assert_buf_rejected(copy, cut);
            free(copy);
        }
        dmp__free(buf);
        dmp__msg_clear(&msgs[k]);
    }
}

static void
test_wire_rejects_frame_without_body(void **state)
{
    (void)state;
    s_pb_t env = {.n = 0};
    s_pb_uint(&env, F_ENV_ID, 1);
    s_pb_uint(&env, F_ENV_VERSION, DMP_PROTOCOL_VERSION);
    s_assert_buf_rejected(env.b, env.n);
    s_assert_buf_rejected(env.b, 0); /* an empty frame */
}

/* A 3-byte varint, whatever the value (< 2^21): keeps sizes predictable. */
static uint8_t *
s_put_varint3(uint8_t *p, size_t v)
{
    assert_true(v >= (1u << 14) && v < (1u << 21));
    *p++ = (uint8_t)((v & 0x7f) | 0x80);
    *p++ = (uint8_t)(((v >> 7) & 0x7f) | 0x80);
    *p++ = (uint8_t)(v >> 14);
    return p;
}

static void
test_wire_rejects_oversized_frame(void **state)
{
    (void)state;
    /* A RingReply whose item fills the frame to a given size: the largest
     * frame decodes, one byte more is refused before unpacking. */
    s_pb_t head = {.n = 0};
    s_pb_uint(&head, F_ENV_ID, 1);
    s_pb_uint(&head, F_ENV_VERSION, DMP_PROTOCOL_VERSION);
    size_t big = DMP__WIRE_MAX + 1;
    uint8_t *buf = malloc(big);
    assert_non_null(buf);
    for (size_t total = DMP__WIRE_MAX; total <= big; total++) {
        /* head + tag(2) + len(3) + [tag(1) + len(3) + item] */
        size_t item = total - head.n - 2 - 3 - 1 - 3;
        memcpy(buf, head.b, head.n);
        uint8_t *p = buf + head.n;
        *p++ = (uint8_t)((F_ENV_RING_REPLY << 3 | 2) | 0x80);
        *p++ = (uint8_t)((F_ENV_RING_REPLY << 3 | 2) >> 7);
        p = s_put_varint3(p, 1 + 3 + item);
        *p++ = (uint8_t)(F_RING_REPLY_DATA << 3 | 2);
        p = s_put_varint3(p, item);
        memset(p, 'x', item);
        dmp__msg_t got;
        int rc = dmp__wire_decode(buf, total, &got);
        if (total <= DMP__WIRE_MAX) {
            /* Canonical (both lengths need their 3 bytes): it decodes. */
            assert_int_equal(rc, 0);
            assert_int_equal(got.kind, DMP__MSG_RING_REPLY);
            assert_int_equal(got.u.ring_reply.len, item);
            dmp__msg_clear(&got);
        } else {
            assert_int_equal(rc, DMP_EPROTO);
            assert_true(s_is_empty(&got));
        }
    }
    free(buf);
}

static void
test_wire_rejects_unknown_fields(void **state)
{
    (void)state;
    /* protobuf-c skips fields it does not know and packs them again, so
     * only an explicit check refuses them: in the envelope and inside a
     * message. */
    s_pb_t env;
    s_pb_hello_frame(&env, "n1", "agent");
    s_pb_str(&env, 100, "extra");
    s_assert_buf_rejected(env.b, env.n);

    s_pb_t hello = {.n = 0};
    s_pb_uint(&hello, F_HELLO_VERSION, DMP_PROTOCOL_VERSION);
    s_pb_str(&hello, F_HELLO_NODE, "n1");
    s_pb_str(&hello, F_HELLO_ROLE, "agent");
    s_pb_uint(&hello, 99, 7);
    env.n = 0;
    s_pb_uint(&env, F_ENV_ID, 1);
    s_pb_uint(&env, F_ENV_VERSION, DMP_PROTOCOL_VERSION);
    s_pb_sub(&env, F_ENV_HELLO, &hello);
    s_assert_buf_rejected(env.b, env.n);
}

static void
test_wire_rejects_noncanonical_encodings(void **state)
{
    (void)state;
    /* Same size as the canonical frame, different bytes: fields out of
     * order, and a version varint padded with a continuation byte. */
    s_pb_t env;
    s_pb_hello_frame(&env, "n1", "agent");
    dmp__msg_t got;
    assert_int_equal(dmp__wire_decode(env.b, env.n, &got), 0);
    dmp__msg_clear(&got);

    s_pb_t swapped = {.n = 0};
    s_pb_uint(&swapped, F_ENV_VERSION, DMP_PROTOCOL_VERSION);
    s_pb_uint(&swapped, F_ENV_ID, 1);
    memcpy(swapped.b + swapped.n, env.b + swapped.n, env.n - swapped.n);
    swapped.n = env.n;
    s_assert_buf_rejected(swapped.b, swapped.n);

    s_pb_t twice = env; /* the id given twice: the last wins in protobuf */
    s_pb_uint(&twice, F_ENV_ID, 1);
    s_assert_buf_rejected(twice.b, twice.n);
}

static void
test_wire_rejects_bad_node_names(void **state)
{
    (void)state;
    static const char *bad[] = {"bad name", ".hidden", "a/b", "a\tb",
                                "caf\xc3\xa9", "a:b", "n\n"};
    dmp__msg_t msg;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&msg, 0, sizeof msg);
        msg.kind = DMP__MSG_HELLO;
        strcpy(msg.u.hello.node, bad[i]);
        s_assert_rejected(&msg);

        s_heartbeat(&msg, 2);
        strcpy(msg.u.heartbeat.node, bad[i]);
        s_assert_rejected(&msg);
        dmp__msg_clear(&msg);

        s_heartbeat(&msg, 2);
        strcpy(msg.u.heartbeat.members[1].name, bad[i]);
        s_assert_rejected(&msg);
        dmp__msg_clear(&msg);

        s_nodes_reply(&msg, 2);
        strcpy(msg.u.nodes_reply.nodes[1].name, bad[i]);
        s_assert_rejected(&msg);
        dmp__msg_clear(&msg);
    }

    /* Only Hello may leave the node name empty. */
    s_heartbeat(&msg, 1);
    msg.u.heartbeat.node[0] = '\0';
    s_assert_rejected(&msg);
    dmp__msg_clear(&msg);
    s_heartbeat(&msg, 1);
    msg.u.heartbeat.members[0].name[0] = '\0';
    s_assert_rejected(&msg);
    dmp__msg_clear(&msg);
    s_nodes_reply(&msg, 1);
    msg.u.nodes_reply.nodes[0].name[0] = '\0';
    s_assert_rejected(&msg);
    dmp__msg_clear(&msg);
}

static void
test_wire_rejects_bad_addresses(void **state)
{
    (void)state;
    static const char *bad[] = {"http://h:80", "tcp://h", "tcp://h:99999",
                                "ipc://@abstract", "tcp://h :1", "h:80"};
    dmp__msg_t msg;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s_heartbeat(&msg, 1);
        strcpy(msg.u.heartbeat.address, bad[i]);
        s_assert_rejected(&msg);
        dmp__msg_clear(&msg);

        s_heartbeat(&msg, 1);
        strcpy(msg.u.heartbeat.members[0].address, bad[i]);
        s_assert_rejected(&msg);
        dmp__msg_clear(&msg);

        s_nodes_reply(&msg, 1);
        strcpy(msg.u.nodes_reply.nodes[0].address, bad[i]);
        s_assert_rejected(&msg);
        dmp__msg_clear(&msg);
    }
}

static void
test_wire_rejects_invalid_utf8(void **state)
{
    (void)state;
    static const char *bad[] = {
        "\xff",             /* never valid */
        "ok \xc0\xaf",      /* overlong '/' */
        "\xed\xa0\x80",     /* surrogate U+D800 */
        "\xe2\x82",         /* truncated sequence */
        "\xf4\x90\x80\x80", /* past U+10FFFF */
        "\x80",             /* lone continuation byte */
    };
    dmp__msg_t msg;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dmp__msg_error(&msg, 1, DMP_EREMOTE, "%s", bad[i]);
        s_assert_rejected(&msg);

        memset(&msg, 0, sizeof msg);
        msg.kind = DMP__MSG_HELLO;
        strcpy(msg.u.hello.role, bad[i]);
        s_assert_rejected(&msg);
    }
    /* Valid multibyte text is fine. */
    dmp__msg_t got;
    dmp__msg_error(&msg, 1, DMP_EREMOTE, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    assert_int_equal(s_encode_decode(&msg, &got), 0);
    assert_string_equal(got.u.error.text, msg.u.error.text);
}

static void
test_wire_rejects_bad_load(void **state)
{
    (void)state;
    const double bad[] = {NAN, -NAN, INFINITY, -INFINITY, -1.0, -1e-300, 1e6,
                          1e300};
    dmp__msg_t msg;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s_heartbeat(&msg, 0);
        msg.u.heartbeat.load = bad[i];
        s_assert_rejected(&msg);

        s_nodes_reply(&msg, 3);
        msg.u.nodes_reply.nodes[2].load = bad[i];
        s_assert_rejected(&msg);
        dmp__msg_clear(&msg);
    }
    /* Zero and a large but plausible load are fine. */
    dmp__msg_t got;
    s_heartbeat(&msg, 0);
    msg.u.heartbeat.load = 0.0;
    assert_int_equal(s_encode_decode(&msg, &got), 0);
    msg.u.heartbeat.load = 999999.0;
    assert_int_equal(s_encode_decode(&msg, &got), 0);
    assert_true(got.u.heartbeat.load == 999999.0);
}

static void
test_wire_rejects_too_many_cores(void **state)
{
    (void)state;
    dmp__msg_t msg, got;
    s_heartbeat(&msg, 0);
    msg.u.heartbeat.cores = 65536;
    assert_int_equal(s_encode_decode(&msg, &got), 0);
    msg.u.heartbeat.cores = 65537;
    s_assert_rejected(&msg);
    msg.u.heartbeat.cores = UINT32_MAX;
    s_assert_rejected(&msg);

    s_nodes_reply(&msg, 1);
    msg.u.nodes_reply.nodes[0].cores = 65537;
    s_assert_rejected(&msg);
    dmp__msg_clear(&msg);
}

static void
test_wire_rejects_node_state_out_of_range(void **state)
{
    (void)state;
    const unsigned bad[] = {3, 4, 255, 0x7fffffffu, 0xffffffffu};
    dmp__msg_t msg;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s_nodes_reply(&msg, 2);
        msg.u.nodes_reply.nodes[1].state = (dmp_node_state_t)bad[i];
        s_assert_rejected(&msg);
        dmp__msg_clear(&msg);
    }
}

static void
test_wire_rejects_error_with_nonnegative_code(void **state)
{
    (void)state;
    const int bad[] = {0, 1, 5, INT_MAX};
    dmp__msg_t msg;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&msg, 0, sizeof msg);
        msg.kind = DMP__MSG_ERROR;
        msg.u.error.code = bad[i];
        strcpy(msg.u.error.text, "looks like success");
        s_assert_rejected(&msg);
    }
}

static void
test_wire_rejects_too_many_members(void **state)
{
    (void)state;
    dmp__msg_t msg, got;

    s_heartbeat(&msg, DMP__MEMBERS_MAX);
    assert_int_equal(s_encode_decode(&msg, &got), 0);
    s_assert_heartbeat_equal(&msg, &got);
    dmp__msg_clear(&got);
    dmp__msg_clear(&msg);
    s_heartbeat(&msg, DMP__MEMBERS_MAX + 1);
    s_assert_rejected(&msg);
    dmp__msg_clear(&msg);

    s_nodes_reply(&msg, DMP__MEMBERS_MAX);
    assert_int_equal(s_encode_decode(&msg, &got), 0);
    s_assert_nodes_equal(&msg, &got);
    dmp__msg_clear(&got);
    dmp__msg_clear(&msg);
    s_nodes_reply(&msg, DMP__MEMBERS_MAX + 1);
    s_assert_rejected(&msg);
    dmp__msg_clear(&msg);
}

static void
test_wire_round_trips_max_size_strings(void **state)
{
    (void)state;
    dmp__msg_t msg, got;
    char *name = s_repeat('n', DMP__NAME_MAX - 1);
    char *addr = s_endpoint_of_len(DMP__ADDR_MAX - 1);
    char *text = s_repeat('t', DMP__TEXT_MAX - 1);

    s_heartbeat(&msg, 2);
    strcpy(msg.u.heartbeat.node, name);
    strcpy(msg.u.heartbeat.address, addr);
    strcpy(msg.u.heartbeat.members[1].name, name);
    strcpy(msg.u.heartbeat.members[1].address, addr);
    assert_int_equal(s_encode_decode(&msg, &got), 0);
    s_assert_heartbeat_equal(&msg, &got);
    dmp__msg_clear(&got);
    dmp__msg_clear(&msg);

    s_nodes_reply(&msg, 1);
    strcpy(msg.u.nodes_reply.nodes[0].name, name);
    strcpy(msg.u.nodes_reply.nodes[0].address, addr);
    assert_int_equal(s_encode_decode(&msg, &got), 0);
    s_assert_nodes_equal(&msg, &got);
    dmp__msg_clear(&got);
    dmp__msg_clear(&msg);

    dmp__msg_error(&msg, 1, DMP_EREMOTE, "%s", text);
    assert_int_equal(s_encode_decode(&msg, &got), 0);
    assert_string_equal(got.u.error.text, text);

    memset(&msg, 0, sizeof msg);
    msg.kind = DMP__MSG_HELLO;
    strcpy(msg.u.hello.node, name);
    strcpy(msg.u.hello.role, "fifteen-chars-x");
    assert_int_equal(s_encode_decode(&msg, &got), 0);
    assert_string_equal(got.u.hello.node, name);
    assert_string_equal(got.u.hello.role, "fifteen-chars-x");

    free(name);
    free(addr);
    free(text);
}

static void
test_wire_rejects_strings_one_past_max(void **state)
{
    (void)state;
    s_pb_t env;
    dmp__msg_t got;

    /* Control: the hand-written frame decodes when the role fits. */
    s_pb_hello_frame(&env, "n1", "fifteen-chars-x");
    assert_int_equal(dmp__wire_decode(env.b, env.n, &got), 0);
    s_pb_hello_frame(&env, "n1", "sixteen-chars-xx");
    s_assert_buf_rejected(env.b, env.n);

    char *name = s_repeat('n', DMP__NAME_MAX);
    s_pb_hello_frame(&env, name, "agent");
    s_assert_buf_rejected(env.b, env.n);
    free(name);

    char *text = s_repeat('t', DMP__TEXT_MAX);
    s_pb_t err = {.n = 0};
    /* sint32 zigzag: -1 is 1 */
    s_pb_uint(&err, F_ERROR_CODE, 1);
    s_pb_str(&err, F_ERROR_TEXT, text + 1);
    env.n = 0;
    s_pb_sub(&env, F_ENV_ERROR, &err);
    assert_int_equal(dmp__wire_decode(env.b, env.n, &got), 0);
    assert_int_equal(got.u.error.code, -1);
    err.n = 0;
    s_pb_uint(&err, F_ERROR_CODE, 1);
    s_pb_str(&err, F_ERROR_TEXT, text);
    env.n = 0;
    s_pb_sub(&env, F_ENV_ERROR, &err);
    s_assert_buf_rejected(env.b, env.n);
    free(text);

    char *addr = s_endpoint_of_len(DMP__ADDR_MAX);
    s_pb_t hb = {.n = 0};
    s_pb_str(&hb, F_HB_NODE, "n1");
    s_pb_str(&hb, F_HB_ADDRESS, addr + 1); /* "cp://..." is not valid */
    env.n = 0;
    s_pb_sub(&env, F_ENV_HEARTBEAT, &hb);
    s_assert_buf_rejected(env.b, env.n);
    hb.n = 0;
    s_pb_str(&hb, F_HB_NODE, "n1");
    s_pb_str(&hb, F_HB_ADDRESS, addr);
    env.n = 0;
    s_pb_sub(&env, F_ENV_HEARTBEAT, &hb);
    s_assert_buf_rejected(env.b, env.n);
    free(addr);
}

static void
test_wire_survives_random_bytes(void **state)
{
    (void)state;
    s_rng = 0x2545f4914f6cdd1dull;
    size_t ok = 0;
    for (int i = 0; i < 5000; i++) {
        size_t len = (i % 2) ? 4 + s_rand() % 24 : s_rand() % 300;
        uint8_t *buf = malloc(len ? len : 1);
        assert_non_null(buf);
        for (size_t j = 0; j < len; j++)
            buf[j] = (uint8_t)s_rand();
        /* Half of them start like an envelope whose body fills the rest,
         * so the random bytes reach the body's own decoder. */
        if (i % 2) {
            buf[0] = 0x08; /* id, varint */
            buf[1] &= 0x7f;
            buf[2] = (uint8_t)(0x52 + 8 * (s_rand() % 5)); /* body 10..14 */
            buf[3] = (uint8_t)(len - 4);
        }
        dmp__msg_t got;
        int rc = dmp__wire_decode(buf, len, &got);
        if (rc == 0) {
            s_assert_sane(&got);
            ok++;
        } else {
            assert_int_equal(rc, DMP_EPROTO);
            assert_true(s_is_empty(&got));
        }
        dmp__msg_clear(&got);
        free(buf);
    }
    print_message("%zu of 5000 random frames decoded\n", ok);
}

static void
test_wire_survives_mutated_frames(void **state)
{
    (void)state;
    s_rng = 0x853c49e6748fea9bull;
    dmp__msg_t seeds[4];
    s_heartbeat(&seeds[0], 3);
    s_nodes_reply(&seeds[1], 3);
    dmp__msg_error(&seeds[2], 3, DMP_ENODE, "gone");
    memset(&seeds[3], 0, sizeof seeds[3]);
    seeds[3].kind = DMP__MSG_HELLO;
    strcpy(seeds[3].u.hello.node, "n1");
    strcpy(seeds[3].u.hello.role, "cli");

    size_t ok = 0, total = 0;
    for (size_t k = 0; k < 4; k++) {
        uint8_t *frame;
        size_t len;
        assert_int_equal(dmp__wire_encode(&seeds[k], &frame, &len), 0);
        for (int i = 0; i < 2000; i++, total++) {
            uint8_t *buf = malloc(len);
            assert_non_null(buf);
            memcpy(buf, frame, len);
            int flips = 1 + (int)(s_rand() % 4);
            for (int f = 0; f < flips; f++) {
                size_t at = s_rand() % len;
                if (s_rand() % 2)
                    buf[at] ^= (uint8_t)(1u << (s_rand() % 8));
                else
                    buf[at] = (uint8_t)s_rand();
            }
            size_t cut = (s_rand() % 4 == 0) ? s_rand() % (len + 1) : len;
            dmp__msg_t got;
            int rc = dmp__wire_decode(buf, cut, &got);
            if (rc == 0) {
                s_assert_sane(&got);
                ok++;
            } else {
                assert_int_equal(rc, DMP_EPROTO);
                assert_true(s_is_empty(&got));
            }
            dmp__msg_clear(&got);
            free(buf);
        }
        dmp__free(frame);
        dmp__msg_clear(&seeds[k]);
    }
    print_message("%zu of %zu mutated frames decoded\n", ok, total);
}

static void
test_wire_msg_error_fills_an_error_message(void **state)
{
    (void)state;
    dmp__msg_t msg;
    dmp__msg_error(&msg, 12, DMP_EVERSION, "version %d, want %d", 2, 1);
    assert_int_equal(msg.kind, DMP__MSG_ERROR);
    assert_true(msg.id == 12);
    assert_int_equal(msg.version, DMP_PROTOCOL_VERSION);
    assert_int_equal(msg.u.error.code, DMP_EVERSION);
    assert_string_equal(msg.u.error.text, "version 2, want 1");

    /* A code that would read as success is turned into DMP_EPROTO. */
    dmp__msg_error(&msg, 1, 0, "oops");
    assert_int_equal(msg.u.error.code, DMP_EPROTO);
    dmp__msg_error(&msg, 1, 17, "oops");
    assert_int_equal(msg.u.error.code, DMP_EPROTO);

    /* Long texts are cut to fit, still NUL-terminated. */
    char *big = s_repeat('z', 2000);
    dmp__msg_error(&msg, 1, -EIO, "%s", big);
    assert_int_equal(strlen(msg.u.error.text), DMP__TEXT_MAX - 1);
    free(big);
}

/* Value and Array: SharedNew, SharedOp and SharedReply there and back. */
static void
test_wire_round_trips_shared_messages(void **state)
{
    (void)state;
    dmp__msg_t msg, got;
    memset(&msg, 0, sizeof msg);
    msg.kind = DMP__MSG_SHARED_NEW;
    msg.u.shared_new.typecode = 'Q';
    msg.u.shared_new.length = DMP__SHARED_LENGTH_MAX;
    msg.u.shared_new.lock = true;
    assert_int_equal(s_encode_decode(&msg, &got), 0);
    assert_int_equal(got.kind, DMP__MSG_SHARED_NEW);
    assert_int_equal(got.u.shared_new.typecode, 'Q');
    assert_true(got.u.shared_new.length == DMP__SHARED_LENGTH_MAX);
    assert_true(got.u.shared_new.lock);
    dmp__msg_clear(&got);

    uint8_t data[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    memset(&msg, 0, sizeof msg);
    msg.kind = DMP__MSG_SHARED_OP;
    msg.u.shared_op.obj = UINT64_MAX;
    msg.u.shared_op.op = DMP__SHARED_WRITE;
    strcpy(msg.u.shared_op.holder_node, "node-2");
    msg.u.shared_op.holder_pid = INT32_MAX;
    msg.u.shared_op.start = 3;
    msg.u.shared_op.count = 2;
    msg.u.shared_op.data = data;
    msg.u.shared_op.len = sizeof data;
    msg.u.shared_op.timeout = -1;
    msg.u.shared_op.holding = true;
    assert_int_equal(s_encode_decode(&msg, &got), 0);
    assert_int_equal(got.kind, DMP__MSG_SHARED_OP);
    assert_true(got.u.shared_op.obj == UINT64_MAX);
    assert_int_equal(got.u.shared_op.op, DMP__SHARED_WRITE);
    assert_string_equal(got.u.shared_op.holder_node, "node-2");
    assert_int_equal(got.u.shared_op.holder_pid, INT32_MAX);
    assert_int_equal(got.u.shared_op.start, 3);
    assert_int_equal(got.u.shared_op.count, 2);
    assert_int_equal(got.u.shared_op.len, sizeof data);
    assert_memory_equal(got.u.shared_op.data, data, sizeof data);
    assert_true(got.u.shared_op.timeout == -1);
    assert_true(got.u.shared_op.holding);
    dmp__msg_clear(&got);

    memset(&msg, 0, sizeof msg);
    msg.kind = DMP__MSG_SHARED_REPLY;
    msg.u.shared_reply.data = data;
    msg.u.shared_reply.len = 8;
    msg.u.shared_reply.lease = 2.5;
    msg.u.shared_reply.owner_died = true;
    assert_int_equal(s_encode_decode(&msg, &got), 0);
    assert_int_equal(got.kind, DMP__MSG_SHARED_REPLY);
    assert_int_equal(got.u.shared_reply.len, 8);
    assert_memory_equal(got.u.shared_reply.data, data, 8);
    assert_true(got.u.shared_reply.lease == 2.5);
    assert_true(got.u.shared_reply.owner_died);
    dmp__msg_clear(&got);
    /* empty data comes back as NULL */
    msg.u.shared_reply.data = NULL;
    msg.u.shared_reply.len = 0;
    assert_int_equal(s_encode_decode(&msg, &got), 0);
    assert_null(got.u.shared_reply.data);
    dmp__msg_clear(&got);
}

/* A pipe end's hold names its process, and a hold for a child the ring's
 * owner; such a hold is refused for any other operation or without a
 * process. */
static void
test_wire_ring_op_holder_fields(void **state)
{
    (void)state;
    dmp__msg_t msg, got;
    memset(&msg, 0, sizeof msg);
    msg.kind = DMP__MSG_RING_OP;
    msg.u.ring_op.obj = 7;
    msg.u.ring_op.ring = 1;
    msg.u.ring_op.op = DMP__RING_HOLD_WRITER;
    msg.u.ring_op.holder_pid = INT32_MAX;
    strcpy(msg.u.ring_op.owner, "node-1");
    assert_int_equal(s_encode_decode(&msg, &got), 0);
    assert_int_equal(got.kind, DMP__MSG_RING_OP);
    assert_int_equal(got.u.ring_op.holder_pid, INT32_MAX);
    assert_string_equal(got.u.ring_op.owner, "node-1");
    dmp__msg_clear(&got);
    dmp__msg_t bad = msg;
    bad.u.ring_op.op = DMP__RING_CLOSE_WRITER;
    s_assert_rejected(&bad);
    bad = msg;
    bad.u.ring_op.holder_pid = 0;
    s_assert_rejected(&bad);
    bad = msg;
    bad.u.ring_op.holder_pid = (uint32_t)INT32_MAX + 1;
    s_assert_rejected(&bad);
    bad = msg;
    strcpy(bad.u.ring_op.owner, "../x");
    s_assert_rejected(&bad);
    bad = msg; /* a close of one's own hold names no owner */
    bad.u.ring_op.op = DMP__RING_CLOSE_WRITER;
    bad.u.ring_op.owner[0] = '\0';
    assert_int_equal(s_encode_decode(&bad, &got), 0);
    assert_string_equal(got.u.ring_op.owner, "");
    dmp__msg_clear(&got);
}

/* An item in parts: a part lies inside its item and its stage has a
 * number; a reply's first part is not larger than the item it is of. And
 * the mark of a dead holder's close. */
static void
test_wire_ring_op_part_fields(void **state)
{
    (void)state;
    uint8_t part[100] = {1, 2, 3};
    dmp__msg_t msg, got;
    memset(&msg, 0, sizeof msg);
    msg.kind = DMP__MSG_RING_OP;
    msg.u.ring_op.obj = 7;
    msg.u.ring_op.op = DMP__RING_PUT_PART;
    msg.u.ring_op.data = part;
    msg.u.ring_op.len = sizeof part;
    msg.u.ring_op.seq = UINT64_MAX;
    msg.u.ring_op.offset = 900;
    msg.u.ring_op.total = 1000;
    assert_int_equal(s_encode_decode(&msg, &got), 0);
    assert_int_equal(got.u.ring_op.seq, UINT64_MAX);
    assert_int_equal(got.u.ring_op.offset, 900);
    assert_int_equal(got.u.ring_op.total, 1000);
    assert_int_equal(got.u.ring_op.len, sizeof part);
    assert_memory_equal(got.u.ring_op.data, part, sizeof part);
    dmp__msg_clear(&got);
    dmp__msg_t bad = msg;
    bad.u.ring_op.seq = 0;
    s_assert_rejected(&bad);
    bad = msg;
    bad.u.ring_op.offset = 901; /* runs past the end */
    s_assert_rejected(&bad);
    bad = msg;
    bad.u.ring_op.offset = UINT64_MAX;
    s_assert_rejected(&bad);

    dmp__msg_t rep;
    memset(&rep, 0, sizeof rep);
    rep.kind = DMP__MSG_RING_REPLY;
    rep.u.ring_reply.data = part;
    rep.u.ring_reply.len = sizeof part;
    rep.u.ring_reply.total = 64u << 20;
    rep.u.ring_reply.seq = 42;
    assert_int_equal(s_encode_decode(&rep, &got), 0);
    assert_int_equal(got.u.ring_reply.total, 64u << 20);
    assert_int_equal(got.u.ring_reply.seq, 42);
    dmp__msg_clear(&got);
    bad = rep;
    bad.u.ring_reply.total = sizeof part - 1;
    s_assert_rejected(&bad);

    /* A dead holder's close is marked so; nothing else may be. */
    dmp__msg_t close;
    memset(&close, 0, sizeof close);
    close.kind = DMP__MSG_RING_OP;
    close.u.ring_op.op = DMP__RING_CLOSE_WRITER;
    close.u.ring_op.holder_pid = 42;
    close.u.ring_op.died = true;
    assert_int_equal(s_encode_decode(&close, &got), 0);
    assert_true(got.u.ring_op.died);
    dmp__msg_clear(&got);
    bad = close;
    bad.u.ring_op.op = DMP__RING_PUT;
    s_assert_rejected(&bad);
}

/* A Direct message carries, for each op, its fields and no others. */
static void
test_wire_direct_fields(void **state)
{
    (void)state;
    dmp__msg_t ask, got;
    memset(&ask, 0, sizeof ask);
    ask.kind = DMP__MSG_DIRECT;
    ask.u.direct.op = DMP__DIRECT_ASK;
    memset(ask.u.direct.key, 0xab, 32);
    ask.u.direct.pid = 4242;
    strcpy(ask.u.direct.to, "node-2");
    assert_int_equal(s_encode_decode(&ask, &got), 0);
    assert_int_equal(got.kind, DMP__MSG_DIRECT);
    assert_int_equal(got.u.direct.op, DMP__DIRECT_ASK);
    assert_memory_equal(got.u.direct.key, ask.u.direct.key, 32);
    assert_int_equal(got.u.direct.pid, 4242);
    assert_string_equal(got.u.direct.to, "node-2");
    dmp__msg_clear(&got);

    dmp__msg_t bad = ask;
    bad.u.direct.to[0] = '\0'; /* an ask names its node */
    s_assert_rejected(&bad);
    bad = ask;
    bad.u.direct.pid = 0;
    s_assert_rejected(&bad);
    bad.u.direct.pid = (uint32_t)INT32_MAX + 1;
    s_assert_rejected(&bad);
    bad = ask;
    bad.u.direct.op = 0;
    s_assert_rejected(&bad);
    bad.u.direct.op = DMP__DIRECT_INFO + 1;
    s_assert_rejected(&bad);
    bad = ask;
    strcpy(bad.u.direct.address, "tcp://127.0.0.1:1"); /* not an ask's */
    s_assert_rejected(&bad);

    dmp__msg_t vouch = ask; /* vouch and drop: no node named */
    vouch.u.direct.op = DMP__DIRECT_VOUCH;
    s_assert_rejected(&vouch);
    vouch.u.direct.to[0] = '\0';
    assert_int_equal(s_encode_decode(&vouch, &got), 0);
    dmp__msg_clear(&got);
    vouch.u.direct.op = DMP__DIRECT_DROP;
    assert_int_equal(s_encode_decode(&vouch, &got), 0);
    dmp__msg_clear(&got);

    dmp__msg_t info;
    memset(&info, 0, sizeof info);
    info.kind = DMP__MSG_DIRECT;
    info.u.direct.op = DMP__DIRECT_INFO;
    strcpy(info.u.direct.address, "tcp://127.0.0.1:7700");
    strcpy(info.u.direct.server_key,
           "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7");
    assert_int_equal(s_encode_decode(&info, &got), 0);
    assert_string_equal(got.u.direct.address, "tcp://127.0.0.1:7700");
    assert_string_equal(got.u.direct.server_key, info.u.direct.server_key);
    dmp__msg_clear(&got);
    bad = info;
    bad.u.direct.server_key[39] = '\0'; /* 39 characters: no key */
    s_assert_rejected(&bad);
    bad = info;
    bad.u.direct.address[0] = '\0';
    s_assert_rejected(&bad);
    bad = info;
    strcpy(bad.u.direct.address, "udp://x");
    s_assert_rejected(&bad);
    bad = info;
    bad.u.direct.pid = 7; /* an answer names no process */
    s_assert_rejected(&bad);
}

/* Every field of the shared messages is checked after decoding. */
static void
test_wire_rejects_bad_shared_fields(void **state)
{
    (void)state;
    dmp__msg_t msg;
    static const char bad_tc[] = {'x', 'u', 'e', ' ', 1, 0x7f};
    for (size_t i = 0; i < sizeof bad_tc; i++) {
        memset(&msg, 0, sizeof msg);
        msg.kind = DMP__MSG_SHARED_NEW;
        msg.u.shared_new.typecode = bad_tc[i];
        msg.u.shared_new.length = 1;
        s_assert_rejected(&msg);
    }
    msg.u.shared_new.typecode = 'd';
    msg.u.shared_new.length = 0;
    s_assert_rejected(&msg);
    msg.u.shared_new.length = DMP__SHARED_LENGTH_MAX + 1;
    s_assert_rejected(&msg);

    dmp__msg_t good;
    memset(&good, 0, sizeof good);
    good.kind = DMP__MSG_SHARED_OP;
    good.u.shared_op.op = DMP__SHARED_ACQUIRE;
    strcpy(good.u.shared_op.holder_node, "n1");
    good.u.shared_op.holder_pid = 42;
    dmp__msg_t out;
    assert_int_equal(s_encode_decode(&good, &out), 0);
    dmp__msg_clear(&out);
    msg = good;
    msg.u.shared_op.op = 0;
    s_assert_rejected(&msg);
    msg.u.shared_op.op = DMP__SHARED_OP_LAST + 1;
    s_assert_rejected(&msg);
    msg = good;
    msg.u.shared_op.holder_node[0] = '\0'; /* a holder names its node */
    s_assert_rejected(&msg);
    strcpy(msg.u.shared_op.holder_node, "../x");
    s_assert_rejected(&msg);
    msg = good;
    msg.u.shared_op.holder_pid = 0;
    s_assert_rejected(&msg);
    msg.u.shared_op.holder_pid = (uint32_t)INT32_MAX + 1;
    s_assert_rejected(&msg);
    msg = good;
    msg.u.shared_op.start = DMP__SHARED_LENGTH_MAX + 1;
    s_assert_rejected(&msg);
    msg = good;
    msg.u.shared_op.count = UINT64_MAX;
    s_assert_rejected(&msg);
    msg = good;
    msg.u.shared_op.timeout = NAN;
    s_assert_rejected(&msg);

    memset(&msg, 0, sizeof msg);
    msg.kind = DMP__MSG_SHARED_REPLY;
    static const double bad_lease[] = {-1, INFINITY, NAN, 1e7};
    for (size_t i = 0; i < sizeof bad_lease / sizeof bad_lease[0]; i++) {
        msg.u.shared_reply.lease = bad_lease[i];
        s_assert_rejected(&msg);
    }
}

static void
test_wire_kind_names(void **state)
{
    (void)state;
    assert_string_equal(dmp__msg_kind_name(DMP__MSG_NONE), "none");
    assert_string_equal(dmp__msg_kind_name(DMP__MSG_HELLO), "hello");
    assert_string_equal(dmp__msg_kind_name(DMP__MSG_ERROR), "error");
    assert_string_equal(dmp__msg_kind_name(DMP__MSG_HEARTBEAT), "heartbeat");
    assert_string_equal(dmp__msg_kind_name(DMP__MSG_NODES_REQUEST),
                        "nodes-request");
    assert_string_equal(dmp__msg_kind_name(DMP__MSG_NODES_REPLY),
                        "nodes-reply");
    assert_string_equal(dmp__msg_kind_name(DMP__MSG_SHARED_NEW),
                        "shared-new");
    assert_string_equal(dmp__msg_kind_name(DMP__MSG_SHARED_OP), "shared-op");
    assert_string_equal(dmp__msg_kind_name(DMP__MSG_SHARED_REPLY),
                        "shared-reply");
    assert_string_equal(dmp__msg_kind_name((dmp__msg_kind_t)77), "unknown");
}

static void
test_wire_msg_clear_is_safe_on_null_and_empty(void **state)
{
    (void)state;
    dmp__msg_clear(NULL);
    dmp__msg_t msg;
    memset(&msg, 0, sizeof msg);
    dmp__msg_clear(&msg);
    dmp__msg_clear(&msg);
    assert_true(s_is_empty(&msg));
    s_heartbeat(&msg, 2);
    dmp__msg_clear(&msg);
    assert_true(s_is_empty(&msg));
    dmp__msg_clear(&msg); /* twice: no double free */
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wire_round_trips_a_heartbeat),
        cmocka_unit_test(test_wire_round_trips_every_message_kind),
        cmocka_unit_test(test_wire_encode_refuses_unknown_kind),
        cmocka_unit_test(test_wire_encode_refuses_frame_over_wire_max),
        cmocka_unit_test(test_wire_rejects_truncated_frame),
        cmocka_unit_test(test_wire_rejects_frame_without_body),
        cmocka_unit_test(test_wire_rejects_oversized_frame),
        cmocka_unit_test(test_wire_rejects_unknown_fields),
        cmocka_unit_test(test_wire_rejects_noncanonical_encodings),
        cmocka_unit_test(test_wire_rejects_bad_node_names),
        cmocka_unit_test(test_wire_rejects_bad_addresses),
        cmocka_unit_test(test_wire_rejects_invalid_utf8),
        cmocka_unit_test(test_wire_rejects_bad_load),
        cmocka_unit_test(test_wire_rejects_too_many_cores),
        cmocka_unit_test(test_wire_rejects_node_state_out_of_range),
        cmocka_unit_test(test_wire_rejects_error_with_nonnegative_code),
        cmocka_unit_test(test_wire_rejects_too_many_members),
        cmocka_unit_test(test_wire_round_trips_max_size_strings),
        cmocka_unit_test(test_wire_rejects_strings_one_past_max),
        cmocka_unit_test(test_wire_survives_random_bytes),
        cmocka_unit_test(test_wire_survives_mutated_frames),
        cmocka_unit_test(test_wire_msg_error_fills_an_error_message),
        cmocka_unit_test(test_wire_round_trips_shared_messages),
        cmocka_unit_test(test_wire_ring_op_holder_fields),
        cmocka_unit_test(test_wire_ring_op_part_fields),
        cmocka_unit_test(test_wire_direct_fields),
        cmocka_unit_test(test_wire_rejects_bad_shared_fields),
        cmocka_unit_test(test_wire_kind_names),
        cmocka_unit_test(test_wire_msg_clear_is_safe_on_null_and_empty),
    };
    return cmocka_run_group_tests_name("dmp_wire", tests, NULL, NULL);
}
