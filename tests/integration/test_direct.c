/*
 * test_direct.c - direct links (dmp_direct.c, node_holds.c) with real
 * agents: three nodes on loopback, this program on node1 over ipc, so the
 * pipes it makes are node1's and a child on node2 reaches them over a
 * link of its own, vouched for by node2.
 *
 * Covered: the owner admits the child's key as job/NODE2/PID and forgets
 * it when the child ends; the child's data goes straight to the owner (it
 * still echoes after its own agent was killed); the owner forgets every
 * key of a node it sees dead; only a process of the asking node's host
 * may ask, and only a peer node may vouch or drop (a client gets -EPERM);
 * asking for a dead process or an unknown node fails cleanly.
 *
 * This binary is also the children's program: main() hands over to
 * dmp_init() first when DMP_CHILD or DMP_ZYGOTE says so.
 */
#define _GNU_SOURCE
#include "dmp_test.h"
#include "dmp_impl.h" /* the Direct message, for the refusal tests */

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define HEARTBEAT 0.2
#define LIVENESS 3
#define WITHIN 5.0

static struct {
    dmp_test_sandbox_t *sb;
    dmp_test_agent_t *agents[3];
} s_c;

/* Echoes what comes through its end (args[0]) until EOF. */
DMP_TARGET(echo)
{
    dmp_conn_t *c;
    int rc = dmp_conn_from_value(dmp_list_get(args, 0), &c);
    if (rc)
        return 100;
    for (;;) {
        void *buf;
        size_t len;
        rc = dmp_conn_recv_bytes(c, &buf, &len);
        if (rc)
            break;
        rc = dmp_conn_send_bytes(c, buf, 0, len);
        dmp__free(buf);
        if (rc)
            break;
    }
    dmp_conn_destroy(&c);
    return rc == DMP_EEOF ? 0 : 101;
}

static int
s_up(void **state)
{
    (void)state;
    assert_dmp_ok(dmp_test_sandbox_new(&s_c.sb));
    for (size_t i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "d%d-node%zu", (int)getpid(), i + 1);
        assert_dmp_ok(dmp_test_agent_new(s_c.sb, name, &s_c.agents[i]));
        s_c.agents[i]->heartbeat = HEARTBEAT;
        s_c.agents[i]->liveness = LIVENESS;
    }
    dmp_test_agents_mesh(s_c.agents, 3);
    assert_dmp_ok(dmp_test_agents_start(s_c.agents, 3));
    assert_dmp_ok(dmp_test_init_ipc(s_c.agents[0]));
    return 0;
}

static int
s_down(void **state)
{
    (void)state;
    dmp_fini();
    dmp_test_sandbox_destroy(&s_c.sb);
    return 0;
}

/* Whether node i's log holds `needle`. */
static bool
s_logged(size_t i, const char *needle)
{
    char *text = dmp_test_read_file(s_c.agents[i]->log_path);
    bool found = text && strstr(text, needle);
    free(text);
    return found;
}

typedef struct {
    size_t node;
    char needle[256];
} s_log_wait_t;

static bool
s_log_has(void *arg)
{
    s_log_wait_t *w = arg;
    return s_logged(w->node, w->needle);
}

static void
s_wait_logged(size_t node, const char *needle)
{
    s_log_wait_t w = {.node = node};
    snprintf(w.needle, sizeof w.needle, "%s", needle);
    if (!dmp_test_wait_until(s_log_has, &w, WITHIN))
        fail_msg("%s's log never said: %s", s_c.agents[node]->name, needle);
}

/* A child on node2 echoing through the b end of a new duplex pipe. */
static dmp_process_t *
s_echo_on_node2(dmp_conn_t **a_p)
{
    dmp_conn_t *b;
    assert_dmp_ok(dmp_pipe(1, a_p, &b));
    dmp_value_t *args = dmp_list_of(1, dmp_conn_value(b));
    dmp_process_opts_t o = {.target = "echo",
                            .node = s_c.agents[1]->name,
                            .args = args};
    dmp_process_t *p;
    assert_dmp_ok(dmp_process_new(&o, &p));
    dmp_value_destroy(&args);
    assert_dmp_ok(dmp_process_start(p));
    dmp_conn_destroy(&b); /* the child holds its own from its start */
    return p;
}

static void
s_echo(dmp_conn_t *a, const char *text)
{
    assert_dmp_ok(dmp_conn_send_bytes(a, text, 0, strlen(text)));
    void *buf;
    size_t len;
    assert_dmp_ok(dmp_conn_recv_bytes(a, &buf, &len));
    assert_int_equal(len, strlen(text));
    assert_memory_equal(buf, text, len);
    dmp__free(buf);
}

static void
test_owner_admits_the_childs_key_and_forgets_it_when_it_ends(void **state)
{
    (void)state;
    dmp_conn_t *a;
    dmp_process_t *p = s_echo_on_node2(&a);
    s_echo(a, "ping");
    char who[128];
    snprintf(who, sizeof who, "job/%s/%d", s_c.agents[1]->name,
             dmp_process_pid(p));
    char needle[256];
    snprintf(needle, sizeof needle, "direct link for %s: its key is "
             "admitted", who);
    assert_true(s_logged(0, needle));
    dmp_conn_destroy(&a); /* EOF: the child ends */
    assert_dmp_ok(dmp_process_join(p, 10.0));
    int code = -1;
    assert_dmp_ok(dmp_process_exitcode(p, &code));
    assert_int_equal(code, 0);
    snprintf(needle, sizeof needle, "direct link of %s closed: its process "
             "ended", who);
    s_wait_logged(0, needle);
    dmp_process_destroy(&p);
}

/* The child's pipe traffic does not pass through its own agent: with
 * node2's agent killed, it still echoes (its link to node1 stands). Then
 * node1 sees node2 dead and forgets the keys node2 vouched for. */
static void
test_data_goes_straight_to_the_owner(void **state)
{
    (void)state;
    dmp_conn_t *a;
    dmp_process_t *p = s_echo_on_node2(&a);
    s_echo(a, "before");
    pid_t child = dmp_process_pid(p);
    dmp_test_agent_kill(s_c.agents[1]);
    bool alive = dmp_test_pid_alive(child);
    print_message("# child %s after its agent was killed\n",
                  alive ? "alive" : "gone");
    if (alive) {
        s_echo(a, "after its agent died");
        kill(child, SIGKILL);
    }
    char needle[256];
    snprintf(needle, sizeof needle, "direct link key(s) of node '%s'",
             s_c.agents[1]->name);
    s_wait_logged(0, needle);
    dmp_conn_destroy(&a);
    dmp_process_join(p, 10.0);
    dmp_process_destroy(&p);
    assert_dmp_ok(dmp_test_agent_start(s_c.agents[1]));
    assert_dmp_ok(dmp_test_agents_wait_alive(s_c.agents, 3, 10.0));
    assert_true(alive); /* else the test proved nothing */
}

/* A request made on a link after its loss was seen is refused at once.
 * Right after the loss ZeroMQ may still hold the connection's pipe, so a
 * send can succeed that nothing will ever answer (with DMP_FOREVER, as a
 * Value's get waits: for ever). The request is made from the loss's own
 * callback, the earliest moment a caller can know nothing about it. */
typedef struct {
    dmp_client_t *link;
    int rc;
    double took;
    bool done;
} s_after_loss_t;

static void
s_request_after_loss(const dmp__msg_t *msg, void *arg)
{
    s_after_loss_t *a = arg;
    if (msg)
        return;
    double t0 = dmp__now();
    a->rc = dmp_client_ping(a->link); /* its default timeout: 10 s */
    a->took = dmp__now() - t0;
    __atomic_store_n(&a->done, true, __ATOMIC_SEQ_CST);
}

static bool
s_after_loss_done(void *arg)
{
    return __atomic_load_n(&((s_after_loss_t *)arg)->done, __ATOMIC_SEQ_CST);
}

static void
test_a_lost_link_refuses_requests_at_once(void **state)
{
    (void)state;
    dmp__keypair_t kp;
    char pub[DMP__Z85_KEY_LEN + 1], err[512] = "";
    assert_dmp_ok(dmp__key_load_secret(s_c.sb->client_key, &kp, err,
                                       sizeof err));
    assert_dmp_ok(dmp__key_load_public(s_c.agents[2]->pub_file, pub, err,
                                       sizeof err));
    for (int round = 0; round < 3; round++) {
        dmp_client_t *link = NULL;
        int rc = dmp__client_connect_keys(NULL, s_c.agents[2]->address, &kp,
                                          pub, &link, err, sizeof err);
        if (rc)
            print_error("# %s\n", err);
        assert_dmp_ok(rc);
        static s_after_loss_t a;
        a = (s_after_loss_t){.link = link};
        dmp__client_on_event(link, s_request_after_loss, &a);
        assert_dmp_ok(dmp_client_ping(link));
        dmp_test_agent_kill(s_c.agents[2]);
        assert_true(dmp_test_wait_until(s_after_loss_done, &a, 15.0));
        print_message("# round %d: a request after the loss: %s in %.3f s\n",
                      round, dmp_err_name(a.rc), a.took);
        assert_dmp_err(a.rc, DMP_ENODE);
        if (a.took > 1.0)
            fail_msg("a request on the lost link waited %.1f s", a.took);
        dmp_client_destroy(&link);
        assert_dmp_ok(dmp_test_agent_start(s_c.agents[2]));
        assert_dmp_ok(dmp_test_agents_wait_alive(s_c.agents, 3, 10.0));
    }
    dmp__keypair_wipe(&kp);
}

static int
s_direct(dmp_client_t *c, uint32_t op, uint32_t pid, const char *to)
{
    dmp__msg_t req = {.kind = DMP__MSG_DIRECT}, rep;
    req.u.direct.op = op;
    memset(req.u.direct.key, 0x42, sizeof req.u.direct.key);
    req.u.direct.pid = pid;
    if (to)
        dmp__strlcpy(req.u.direct.to, to, sizeof req.u.direct.to);
    int rc = dmp__client_request(c, NULL, &req, &rep, DMP__MSG_DIRECT, 5.0);
    if (rc == 0)
        dmp__msg_clear(&rep);
    return rc;
}

static void
test_only_local_processes_ask_and_only_peers_vouch(void **state)
{
    (void)state;
    dmp_client_t *tcp, *ipc;
    assert_dmp_ok(dmp_test_agent_connect(s_c.agents[0], &tcp, NULL, 0));
    assert_dmp_ok(dmp_test_agent_connect_ipc(s_c.agents[0], &ipc));
    uint32_t me = (uint32_t)getpid();
    const char *node2 = s_c.agents[1]->name;
    /* A client from outside is no process of this host. */
    assert_dmp_err(s_direct(tcp, DMP__DIRECT_ASK, me, node2), -EPERM);
    /* Nobody but a peer node vouches for a key, or drops one. */
    assert_dmp_err(s_direct(tcp, DMP__DIRECT_VOUCH, me, NULL), -EPERM);
    assert_dmp_err(s_direct(tcp, DMP__DIRECT_DROP, me, NULL), -EPERM);
    assert_dmp_err(s_direct(ipc, DMP__DIRECT_VOUCH, me, NULL), -EPERM);
    /* A process that is gone, a node that is not in the cluster. */
    pid_t gone = fork();
    if (gone == 0)
        _exit(0);
    assert_int_equal(waitpid(gone, NULL, 0), gone);
    assert_dmp_err(s_direct(ipc, DMP__DIRECT_ASK, (uint32_t)gone, node2),
                   -ESRCH);
    assert_dmp_err(s_direct(ipc, DMP__DIRECT_ASK, me, "no-such-node"),
                   DMP_ENODE);
    /* The agents serve on. */
    assert_dmp_ok(dmp_client_ping(tcp));
    assert_dmp_ok(dmp_client_ping(ipc));
    dmp_client_destroy(&tcp);
    dmp_client_destroy(&ipc);
}

int
main(void)
{
    if (getenv("DMP_CHILD") || getenv("DMP_ZYGOTE"))
        dmp_init();
    unsetenv("DMP_PLACE");
    unsetenv("DMP_AGENT");
    unsetenv("DMP_CLUSTER");
    unsetenv("DMP_DIRECT");
    dmp_test_init(120);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_owner_admits_the_childs_key_and_forgets_it_when_it_ends),
        cmocka_unit_test(test_only_local_processes_ask_and_only_peers_vouch),
        cmocka_unit_test(test_data_goes_straight_to_the_owner),
        cmocka_unit_test(test_a_lost_link_refuses_requests_at_once),
    };
    return cmocka_run_group_tests_name("direct links", tests, s_up, s_down);
}
