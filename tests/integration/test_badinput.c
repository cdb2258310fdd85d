/*
 * test_badinput.c - an authenticated but hostile client (FAULTS.md, "Bad
 * inputs"): a raw ZeroMQ DEALER holding the allowed client key sends
 * arbitrary frames to a real agent.
 *
 * After each input the agent must still run and a second, separate client
 * must still get answers. Where the agent can answer (malformed or
 * unsupported messages) it answers with an Error of the right code;
 * frames over the size limit and extra frames are dropped.
 */
#define _GNU_SOURCE
#include "dmp_test.h"
#include "dmp_impl.h" /* dmp__wire_encode, dmp__keypair_t */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

typedef struct {
    dmp_test_sandbox_t *sb;
    dmp_test_agent_t *agent;
    void *ctx;
    void *sock; /* raw CURVE DEALER as "client" */
} s_fix_t;

/* A DEALER that completes the CURVE handshake with the client's keys but
 * then sends whatever the test wants. No frame limit of its own. */
static void *
s_raw_dealer(s_fix_t *f)
{
    dmp__keypair_t kp;
    char server[DMP__Z85_KEY_LEN + 1], err[512];
    assert_dmp_ok(dmp__key_load_secret(f->sb->client_key, &kp, err,
                                       sizeof err));
    assert_int_equal(dmp_test_read_key(f->agent->pub_file, server), 0);
    void *sock = zmq_socket(f->ctx, ZMQ_DEALER);
    assert_non_null(sock);
    int zero = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    assert_dmp_ok(dmp__sock_curve_client(sock, &kp, server));
    dmp__keypair_wipe(&kp);
    int rc = dmp__sock_connect_checked(f->ctx, sock, f->agent->address, 5.0,
                                       err, sizeof err);
    if (rc)
        print_error("raw dealer: %s\n", err);
    assert_dmp_ok(rc);
    return sock;
}

static int
s_setup(void **state)
{
    s_fix_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_dmp_ok(dmp_test_sandbox_new(&f->sb));
    assert_dmp_ok(dmp_test_agent_new(f->sb, "node1", &f->agent));
    assert_dmp_ok(dmp_test_agent_start(f->agent));
    f->ctx = zmq_ctx_new();
    f->sock = s_raw_dealer(f);
    *state = f;
    return 0;
}

static int
s_teardown(void **state)
{
    s_fix_t *f = *state;
    if (f->sock)
        zmq_close(f->sock);
    if (f->ctx)
        zmq_ctx_term(f->ctx);
    dmp_test_sandbox_destroy(&f->sb);
    free(f);
    return 0;
}

static void
s_send(void *sock, const void *data, size_t len, int flags)
{
    assert_true(zmq_send(sock, data, len, flags) == (int)len);
}

static void
s_send_msg(void *sock, const dmp__msg_t *msg)
{
    uint8_t *buf;
    size_t len;
    assert_dmp_ok(dmp__wire_encode(msg, &buf, &len));
    s_send(sock, buf, len, 0);
    dmp__free(buf);
}

/* Receives one single-frame reply within timeout and decodes it.
 * 0, -ETIMEDOUT, or the decode error. */
static int
s_recv_msg(void *sock, double timeout, dmp__msg_t *msg)
{
    memset(msg, 0, sizeof *msg);
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, (long)(timeout * 1000)) <= 0)
        return -ETIMEDOUT;
    zmq_msg_t frame;
    zmq_msg_init(&frame);
    assert_true(zmq_msg_recv(&frame, sock, 0) >= 0);
    assert_false(zmq_msg_more(&frame)); /* replies are single frames */
    int rc = dmp__wire_decode(zmq_msg_data(&frame), zmq_msg_size(&frame), msg);
    zmq_msg_close(&frame);
    return rc;
}

static void
s_hello(dmp__msg_t *msg, uint64_t id)
{
    memset(msg, 0, sizeof *msg);
    msg->kind = DMP__MSG_HELLO;
    msg->id = id;
    msg->version = DMP_PROTOCOL_VERSION;
    msg->u.hello.version = DMP_PROTOCOL_VERSION;
    strcpy(msg->u.hello.role, "client");
}

/* Expects an Error reply with `code` (and id `id` unless id is ~0). */
static void
s_expect_error(void *sock, int code, uint64_t id)
{
    dmp__msg_t rep;
    assert_dmp_ok(s_recv_msg(sock, 3.0, &rep));
    assert_int_equal(rep.kind, DMP__MSG_ERROR);
    if (rep.u.error.code != code)
        print_error("error reply %s (%s), expected %s\n",
                    dmp_err_name(rep.u.error.code), rep.u.error.text,
                    dmp_err_name(code));
    assert_int_equal(rep.u.error.code, code);
    if (id != UINT64_MAX)
        assert_int_equal(rep.id, id);
    dmp__msg_clear(&rep);
}

/* The raw session still works: a valid Hello gets a Hello back (stale
 * replies with other ids are skipped). */
static void
s_expect_session_works(void *sock, uint64_t id)
{
    dmp__msg_t req, rep;
    s_hello(&req, id);
    s_send_msg(sock, &req);
    double deadline = dmp_test_now() + 3.0;
    for (;;) {
        double left = deadline - dmp_test_now();
        assert_true(left > 0);
        int rc = s_recv_msg(sock, left, &rep);
        assert_dmp_ok(rc);
        bool ours = rep.id == id && rep.kind == DMP__MSG_HELLO;
        if (ours)
            assert_string_equal(rep.u.hello.node, "node1");
        dmp__msg_clear(&rep);
        if (ours)
            return;
    }
}

/* The agent runs and a separate client is served. */
static void
s_assert_serves(s_fix_t *f)
{
    assert_true(dmp_test_agent_is_running(f->agent));
    assert_dmp_ok(dmp_test_agent_ping(f->agent));
}

/* ---- tests ------------------------------------------------------------- */

/* The happy path of the raw client: a valid Hello, a Hello back. */
static void
test_raw_client_with_valid_hello_gets_hello(void **state)
{
    s_fix_t *f = *state;
    s_expect_session_works(f->sock, 42);
    dmp__msg_t req = {.kind = DMP__MSG_NODES_REQUEST, .id = 43}, rep;
    s_send_msg(f->sock, &req);
    assert_dmp_ok(s_recv_msg(f->sock, 3.0, &rep));
    assert_int_equal(rep.kind, DMP__MSG_NODES_REPLY);
    assert_int_equal(rep.id, 43);
    assert_int_equal(rep.u.nodes_reply.n_nodes, 1);
    dmp__msg_clear(&rep);
    s_assert_serves(f);
}

static void
test_every_truncation_of_a_hello_gets_eproto(void **state)
{
    s_fix_t *f = *state;
    dmp__msg_t msg;
    s_hello(&msg, 7);
    dmp__strlcpy(msg.u.hello.node, "somebody", sizeof msg.u.hello.node);
    uint8_t *buf;
    size_t len;
    assert_dmp_ok(dmp__wire_encode(&msg, &buf, &len));
    /* Every proper prefix lacks the end of the hello body: either the
     * unpacking fails or no body is left. */
    for (size_t cut = 0; cut < len; cut++) {
        s_send(f->sock, buf, cut, 0);
        s_expect_error(f->sock, DMP_EPROTO, UINT64_MAX);
    }
    dmp__free(buf);
    assert_true(dmp_test_log_has(f->agent, "malformed message from",
                                 "key='client/client'", NULL));
    s_expect_session_works(f->sock, 8);
    s_assert_serves(f);
}

static void
test_empty_frame_gets_eproto(void **state)
{
    s_fix_t *f = *state;
    s_send(f->sock, "", 0, 0);
    s_expect_error(f->sock, DMP_EPROTO, UINT64_MAX);
    s_expect_session_works(f->sock, 9);
    s_assert_serves(f);
}

/* xorshift: the same "random" frames on every run. */
static uint64_t
s_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void
test_random_bytes_get_errors_and_the_agent_survives(void **state)
{
    s_fix_t *f = *state;
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    enum { FRAMES = 300 };
    static uint8_t buf[4096];
    int replies = 0, errors = 0, silent = 0;
    for (int i = 0; i < FRAMES && silent < 5; i++) {
        size_t len = 1 + s_rand(&seed) % sizeof buf;
        for (size_t k = 0; k < len; k++)
            buf[k] = (uint8_t)s_rand(&seed);
        s_send(f->sock, buf, len, 0);
        dmp__msg_t rep;
        /* Each frame is answered or dropped; never anything but an
         * Error for garbage. */
        if (s_recv_msg(f->sock, 0.5, &rep) != 0) {
            silent++; /* dropped; five in a row: the session is closed */
        } else {
            silent = 0;
            replies++;
            errors += rep.kind == DMP__MSG_ERROR &&
                      rep.u.error.code == DMP_EPROTO;
            dmp__msg_clear(&rep);
        }
    }
    print_message("# %d random frames: %d replies, %d EPROTO errors\n",
                  FRAMES, replies, errors);
    assert_int_equal(errors, replies);
    s_assert_serves(f);
}

static void
test_oversized_frame_drops_the_connection_not_the_agent(void **state)
{
    s_fix_t *f = *state;
    long rss_before = dmp_test_rss_kib(f->agent->pid);
    size_t len = DMP__WIRE_MAX + 1;
    uint8_t *big = calloc(1, len);
    assert_non_null(big);
    /* Watch our side of the connection to see the agent close it. */
    assert_int_equal(zmq_socket_monitor(f->sock, "inproc://big-mon",
                                        ZMQ_EVENT_DISCONNECTED),
                     0);
    void *mon = zmq_socket(f->ctx, ZMQ_PAIR);
    assert_int_equal(zmq_connect(mon, "inproc://big-mon"), 0);
    /* Zeroes, one byte over the limit every dmp socket sets. */
    for (int i = 0; i < 8; i++)
        zmq_send(f->sock, big, len, ZMQ_DONTWAIT);
    free(big);
    /* The agent closes the connection (ZMQ_MAXMSGSIZE); what we send
     * later on this socket may never arrive. That is fine; the agent must
     * keep serving everybody else and not hold the data. */
    zmq_pollitem_t item = {mon, 0, ZMQ_POLLIN, 0};
    assert_int_equal(zmq_poll(&item, 1, 3000), 1);
    zmq_socket_monitor(f->sock, NULL, 0);
    zmq_close(mon);
    s_assert_serves(f);
    long rss_after = dmp_test_rss_kib(f->agent->pid);
    print_message("# agent RSS %ld KiB before, %ld KiB after 8 x %zu B\n",
                  rss_before, rss_after, len);
    assert_true(rss_after - rss_before < 4096);

    /* A new raw session of the same client works again. */
    zmq_close(f->sock);
    f->sock = s_raw_dealer(f);
    s_expect_session_works(f->sock, 10);
}

static void
test_multi_frame_messages_are_dropped(void **state)
{
    s_fix_t *f = *state;
    dmp__msg_t msg;
    s_hello(&msg, 11);
    uint8_t *buf;
    size_t len;
    assert_dmp_ok(dmp__wire_encode(&msg, &buf, &len));
    /* two frames: a valid hello and a tail */
    s_send(f->sock, buf, len, ZMQ_SNDMORE);
    s_send(f->sock, "tail", 4, 0);
    /* a hundred frames */
    for (int i = 0; i < 99; i++)
        s_send(f->sock, buf, len, ZMQ_SNDMORE);
    s_send(f->sock, buf, len, 0);
    dmp__free(buf);
    /* nothing comes back for either, and the session goes on */
    s_expect_session_works(f->sock, 12);
    assert_true(dmp_test_log_wait(f->agent, 2.0, "dropped a 3-frame message",
                                  "key='client/client'", NULL));
    assert_true(dmp_test_log_has(f->agent, "dropped a 101-frame message",
                                 NULL));
    s_assert_serves(f);
}

static void
test_wrong_protocol_version_gets_eversion(void **state)
{
    s_fix_t *f = *state;
    static const uint32_t versions[] = {DMP_PROTOCOL_VERSION + 1, 99,
                                        UINT32_MAX};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        dmp__msg_t msg;
        s_hello(&msg, 100 + i);
        msg.version = versions[i];
        msg.u.hello.version = versions[i];
        s_send_msg(f->sock, &msg);
        s_expect_error(f->sock, DMP_EVERSION, 100 + i);
    }
    /* Version 0 written out: the encoder never writes a zero field, so
     * this is not the canonical encoding and is refused as malformed
     * (DMP_EPROTO; the decoder accepts only what our encoder writes). With
     * version 99 the envelope holds tag 0x10, value 0x63. */
    dmp__msg_t msg;
    s_hello(&msg, 5);
    msg.version = 99;
    uint8_t *buf;
    size_t len;
    assert_dmp_ok(dmp__wire_encode(&msg, &buf, &len));
    uint8_t *p = memmem(buf, len, "\x10\x63", 2);
    assert_non_null(p);
    p[1] = 0;
    s_send(f->sock, buf, len, 0);
    dmp__free(buf);
    s_expect_error(f->sock, DMP_EPROTO, 0);
    assert_true(dmp_test_log_has(f->agent, "protocol version 99 from",
                                 "key='client/client'", NULL));
    s_expect_session_works(f->sock, 13);
    s_assert_serves(f);
}

static void
test_heartbeat_claiming_another_node_is_dropped(void **state)
{
    s_fix_t *f = *state;
    static const char *const claims[] = {"node2", "node1"};
    for (size_t i = 0; i < 2; i++) {
        dmp__msg_t hb = {.kind = DMP__MSG_HEARTBEAT,
                         .version = DMP_PROTOCOL_VERSION};
        dmp__strlcpy(hb.u.heartbeat.node, claims[i], DMP__NAME_MAX);
        dmp__strlcpy(hb.u.heartbeat.address, "tcp://127.0.0.1:9",
                     DMP__ADDR_MAX);
        hb.u.heartbeat.cores = 1;
        hb.u.heartbeat.incarnation = 1;
        s_send_msg(f->sock, &hb);
        char want[128];
        snprintf(want, sizeof want, "claims node '%s' but key is 'client/client'",
                 claims[i]);
        assert_true(dmp_test_log_wait(f->agent, 2.0, "dropped heartbeat",
                                      want, NULL));
    }
    /* heartbeats are one way: nothing comes back */
    dmp__msg_t rep;
    assert_int_equal(s_recv_msg(f->sock, 0.3, &rep), -ETIMEDOUT);
    /* and membership did not change */
    dmp_client_t *c;
    assert_dmp_ok(dmp_test_agent_connect(f->agent, &c, NULL, 0));
    dmp_node_info_t *nodes;
    size_t n;
    assert_dmp_ok(dmp_client_nodes(c, &nodes, &n));
    assert_int_equal(n, 1);
    assert_string_equal(nodes[0].name, "node1");
    assert_string_equal(nodes[0].address, f->agent->address);
    dmp_nodes_free(&nodes);
    dmp_client_destroy(&c);
    s_expect_session_works(f->sock, 14);
}

/* The heartbeat's name matches its key here, but the key is a client's:
 * clients use a node, they are not members of the cluster, and the agent
 * must not start connecting to an address a client chose. */
static void
test_heartbeat_from_a_client_key_does_not_make_it_a_member(void **state)
{
    s_fix_t *f = *state;
    dmp__msg_t hb = {.kind = DMP__MSG_HEARTBEAT,
                     .version = DMP_PROTOCOL_VERSION};
    dmp__strlcpy(hb.u.heartbeat.node, "client", DMP__NAME_MAX);
    dmp__strlcpy(hb.u.heartbeat.address, "tcp://127.0.0.1:9",
                 DMP__ADDR_MAX);
    hb.u.heartbeat.cores = 1;
    hb.u.heartbeat.incarnation = 1;
    s_send_msg(f->sock, &hb);
    s_expect_session_works(f->sock, 15); /* the heartbeat was handled */
    dmp_client_t *c;
    assert_dmp_ok(dmp_test_agent_connect(f->agent, &c, NULL, 0));
    int state_of_client = dmp_test_node_state(c, "client");
    dmp_client_destroy(&c);
    if (state_of_client != -ENOENT)
        print_error("the agent lists client key 'client' as a node (%s) "
                    "after one heartbeat from it\n",
                    dmp_node_state_name((dmp_node_state_t)state_of_client));
    assert_int_equal(state_of_client, -ENOENT);
    assert_false(dmp_test_log_has(f->agent, "added peer 'client'", NULL));
}

static void
test_messages_only_an_agent_sends_get_an_error(void **state)
{
    s_fix_t *f = *state;
    /* A NodesReply and an Error are answers, not requests. */
    dmp_node_info_t info = {.name = "ghost", .state = DMP_NODE_ALIVE};
    dmp__msg_t msg = {.kind = DMP__MSG_NODES_REPLY, .id = 20,
                      .version = DMP_PROTOCOL_VERSION};
    msg.u.nodes_reply.nodes = &info;
    msg.u.nodes_reply.n_nodes = 1;
    s_send_msg(f->sock, &msg);
    s_expect_error(f->sock, DMP_EPROTO, 20);
    dmp__msg_t err;
    dmp__msg_error(&err, 21, DMP_EAUTH, "not really");
    s_send_msg(f->sock, &err);
    s_expect_error(f->sock, DMP_EPROTO, 21);
    s_expect_session_works(f->sock, 22);
    s_assert_serves(f);
}

static void
test_no_agent_outlives_the_tests(void **state)
{
    (void)state;
    assert_int_equal(dmp_test_agents_running(), 0);
}

int
main(void)
{
    dmp_test_init(120);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_raw_client_with_valid_hello_gets_hello, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(
            test_every_truncation_of_a_hello_gets_eproto, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(test_empty_frame_gets_eproto,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_random_bytes_get_errors_and_the_agent_survives, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(
            test_oversized_frame_drops_the_connection_not_the_agent,
            s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_multi_frame_messages_are_dropped,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_wrong_protocol_version_gets_eversion, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_heartbeat_claiming_another_node_is_dropped, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(
            test_heartbeat_from_a_client_key_does_not_make_it_a_member,
            s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_messages_only_an_agent_sends_get_an_error, s_setup,
            s_teardown),
        cmocka_unit_test(test_no_agent_outlives_the_tests),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
