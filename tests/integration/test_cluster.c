/*
 * test_cluster.c - membership with real agents on loopback: a cluster
 * forms, a killed node is declared dead within heartbeat x liveness and
 * comes back when restarted, gossip spreads members, an agent stops
 * cleanly and guards its runtime directory, and idle clients leak nothing.
 *
 * Heartbeat 0.2 s, liveness 3: a silent node is dead after 0.6 s.
 */
#define _GNU_SOURCE
#include "dmp_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HEARTBEAT 0.2
#define LIVENESS 3
/* Detection bound: heartbeat x liveness, plus one interval of phase (the
 * last heartbeat may predate the kill by up to one interval) and slack
 * for a loaded CI machine. */
#define DEAD_WITHIN (HEARTBEAT * LIVENESS + HEARTBEAT + 0.7)

static int
s_setup(void **state)
{
    dmp_test_sandbox_t *sb;
    assert_dmp_ok(dmp_test_sandbox_new(&sb));
    *state = sb;
    return 0;
}

static int
s_teardown(void **state)
{
    dmp_test_sandbox_t *sb = *state;
    dmp_test_sandbox_destroy(&sb);
    return 0;
}

static dmp_test_agent_t *
s_agent(dmp_test_sandbox_t *sb, const char *name)
{
    dmp_test_agent_t *a;
    assert_dmp_ok(dmp_test_agent_new(sb, name, &a));
    a->heartbeat = HEARTBEAT;
    a->liveness = LIVENESS;
    return a;
}

/* n agents, each configured with every other as a peer, all serving. */
static void
s_full_mesh(dmp_test_sandbox_t *sb, dmp_test_agent_t **agents, size_t n)
{
    char name[16];
    for (size_t i = 0; i < n; i++) {
        snprintf(name, sizeof name, "node%zu", i + 1);
        agents[i] = s_agent(sb, name);
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            if (i != j)
                dmp_test_agent_add_peer(agents[i], agents[j]);
    for (size_t i = 0; i < n; i++)
        assert_dmp_ok(dmp_test_agent_spawn(agents[i]));
    for (size_t i = 0; i < n; i++)
        assert_dmp_ok(dmp_test_agent_wait_ready(agents[i], 10.0));
}

static void
s_connect_all(dmp_test_agent_t **agents, dmp_client_t **clients, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_dmp_ok(dmp_test_agent_connect(agents[i], &clients[i], NULL, 0));
}

static void
s_disconnect_all(dmp_client_t **clients, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dmp_client_destroy(&clients[i]);
}

/* The happy path, as a user would write it: three agents that name each
 * other as peers, and every one of them lists all three alive. */
static void
test_three_peers_form_a_cluster(void **state)
{
    dmp_test_sandbox_t *sb = *state;
    dmp_test_agent_t *agents[3];
    dmp_client_t *clients[3];
    s_full_mesh(sb, agents, 3);
    s_connect_all(agents, clients, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_dmp_ok(dmp_test_wait_alive(clients[i], 3, 5.0));
        assert_string_equal(dmp_client_node(clients[i]), agents[i]->name);
        dmp_node_info_t *nodes;
        size_t n;
        assert_dmp_ok(dmp_client_nodes(clients[i], &nodes, &n));
        assert_int_equal(n, 3);
        /* itself first, with its advertised address */
        assert_string_equal(nodes[0].name, agents[i]->name);
        assert_string_equal(nodes[0].address, agents[i]->address);
        for (size_t k = 0; k < n; k++) {
            assert_true(nodes[k].cores >= 1);
            if (k > 0)
                assert_true(nodes[k].last_seen_ms < 2000);
        }
        dmp_nodes_free(&nodes);
    }
    s_disconnect_all(clients, 3);
}

static void
test_killed_node_is_dead_within_liveness_and_alive_after_restart(
    void **state)
{
    dmp_test_sandbox_t *sb = *state;
    dmp_test_agent_t *agents[3];
    dmp_client_t *clients[3];
    s_full_mesh(sb, agents, 3);
    s_connect_all(agents, clients, 3);
    for (size_t i = 0; i < 3; i++)
        assert_dmp_ok(dmp_test_wait_alive(clients[i], 3, 5.0));

    dmp_test_agent_t *victim = agents[1];
    dmp_client_destroy(&clients[1]);
    double killed = dmp_test_now();
    dmp_test_agent_kill(victim);
    for (size_t i = 0; i < 3; i += 2) {
        double left = killed + DEAD_WITHIN - dmp_test_now();
        assert_dmp_ok(dmp_test_wait_node_state(clients[i], victim->name,
                                               DMP_NODE_DEAD, left));
        print_message("# %s saw %s dead after %.2f s\n", agents[i]->name,
                      victim->name, dmp_test_now() - killed);
        assert_int_equal(dmp_test_count_nodes(clients[i], DMP_NODE_ALIVE),
                         2);
    }
    assert_true(dmp_test_log_wait(agents[0], 2.0, "node 'node2' is dead",
                                  NULL));

    /* Same config, same port: it rejoins. */
    double restarted = dmp_test_now();
    assert_dmp_ok(dmp_test_agent_start(victim));
    assert_dmp_ok(dmp_test_agent_connect(victim, &clients[1], NULL, 0));
    for (size_t i = 0; i < 3; i++)
        assert_dmp_ok(dmp_test_wait_alive(clients[i], 3, 5.0));
    print_message("# cluster whole again %.2f s after the restart\n",
                  dmp_test_now() - restarted);
    assert_true(dmp_test_log_wait(agents[0], 2.0, "node 'node2' restarted",
                                  NULL));
    s_disconnect_all(clients, 3);
}

/* node3 names only node1; node1 and node2 know each other and nothing of
 * node3. Everyone must end up with all three alive: node1 hears node3's
 * heartbeats, node2 and node3 learn each other from node1's gossip. */
static void
test_node_naming_one_seed_learns_the_rest_by_gossip(void **state)
{
    dmp_test_sandbox_t *sb = *state;
    dmp_test_agent_t *a = s_agent(sb, "node1");
    dmp_test_agent_t *b = s_agent(sb, "node2");
    dmp_test_agent_t *c = s_agent(sb, "node3");
    dmp_test_agent_add_peer(a, b);
    dmp_test_agent_add_peer(b, a);
    dmp_test_agent_add_peer(c, a);
    assert_dmp_ok(dmp_test_agent_start(a));
    assert_dmp_ok(dmp_test_agent_start(b));
    assert_dmp_ok(dmp_test_agent_start(c));
    dmp_test_agent_t *agents[3] = {a, b, c};
    dmp_client_t *clients[3];
    s_connect_all(agents, clients, 3);
    for (size_t i = 0; i < 3; i++)
        assert_dmp_ok(dmp_test_wait_alive(clients[i], 3, 5.0));
    assert_int_equal(dmp_test_node_state(clients[1], "node3"),
                     DMP_NODE_ALIVE);
    assert_int_equal(dmp_test_node_state(clients[2], "node2"),
                     DMP_NODE_ALIVE);
    s_disconnect_all(clients, 3);
}

static void
test_sigterm_stops_cleanly_and_removes_lock_and_socket(void **state)
{
    dmp_test_sandbox_t *sb = *state;
    dmp_test_agent_t *a = s_agent(sb, "node1");
    a->tied = false; /* a plain agent, as an operator runs it */
    assert_dmp_ok(dmp_test_agent_start(a));
    char lock[PATH_MAX + 16], sock[PATH_MAX + 16];
    snprintf(lock, sizeof lock, "%s/dmpd.lock", a->runtime_dir);
    snprintf(sock, sizeof sock, "%s/dmpd.sock", a->runtime_dir);
    assert_int_equal(access(lock, F_OK), 0);
    assert_int_equal(access(sock, F_OK), 0);
    /* the lock names its holder */
    char *pid = dmp_test_read_file(lock);
    assert_non_null(pid);
    assert_int_equal(atoi(pid), a->pid);
    free(pid);

    assert_int_equal(dmp_test_agent_stop(a, 5.0), 0);
    assert_int_not_equal(access(lock, F_OK), 0);
    assert_int_not_equal(access(sock, F_OK), 0);
    assert_true(dmp_test_log_has(a, "stopping on signal 15", NULL));
    assert_true(dmp_test_log_has(a, "stopped", NULL));
}

static void
test_second_agent_on_same_runtime_dir_is_refused(void **state)
{
    dmp_test_sandbox_t *sb = *state;
    dmp_test_agent_t *first = s_agent(sb, "node1");
    dmp_test_agent_t *second = s_agent(sb, "node2");
    assert_dmp_ok(dmp_test_agent_start(first));
    snprintf(second->runtime_dir, sizeof second->runtime_dir, "%s",
             first->runtime_dir);
    assert_dmp_ok(dmp_test_agent_spawn(second));
    int code = dmp_test_agent_wait_exit(second, 10.0);
    assert_true(code > 0 && code < 128);
    assert_true(dmp_test_log_has(second, "in use", first->runtime_dir,
                                 NULL));
    /* the refusal names the holder */
    char holder[32];
    snprintf(holder, sizeof holder, "pid %d", (int)first->pid);
    assert_true(dmp_test_log_has(second, holder, NULL));

    /* the first one is untouched: still locked, still serving */
    char lock[PATH_MAX + 16];
    snprintf(lock, sizeof lock, "%s/dmpd.lock", first->runtime_dir);
    assert_int_equal(access(lock, F_OK), 0);
    dmp_client_t *c;
    assert_dmp_ok(dmp_test_agent_connect_ipc(first, &c));
    assert_string_equal(dmp_client_node(c), "node1");
    dmp_client_destroy(&c);
    assert_dmp_ok(dmp_test_agent_connect(first, &c, NULL, 0));
    assert_dmp_ok(dmp_client_ping(c));
    dmp_client_destroy(&c);
}

typedef struct {
    pid_t pid;
    int limit;
} s_fds_t;

static bool
s_fds_at_most(void *arg)
{
    s_fds_t *f = arg;
    int n = dmp_test_count_fds(f->pid);
    return n >= 0 && n <= f->limit;
}

static void
test_idle_agent_does_not_leak_fds_across_client_connects(void **state)
{
    dmp_test_sandbox_t *sb = *state;
    dmp_test_agent_t *a = s_agent(sb, "node1");
    assert_dmp_ok(dmp_test_agent_start(a));
    /* Warm up both paths once, so lazily opened descriptors count in the
     * baseline, then let the agent settle. */
    dmp_client_t *c;
    assert_dmp_ok(dmp_test_agent_connect(a, &c, NULL, 0));
    dmp_client_destroy(&c);
    assert_dmp_ok(dmp_test_agent_connect_ipc(a, &c));
    dmp_client_destroy(&c);
    int before = dmp_test_count_fds(a->pid);
    assert_true(before > 0);
    s_fds_t settle = {a->pid, before};
    dmp_test_wait_until(s_fds_at_most, &settle, 2.0);
    before = dmp_test_count_fds(a->pid);

    enum { ROUNDS = 60 };
    int peak = before;
    for (int i = 0; i < ROUNDS; i++) {
        assert_dmp_ok(dmp_test_agent_connect(a, &c, NULL, 0));
        assert_dmp_ok(dmp_client_ping(c));
        dmp_client_destroy(&c);
        assert_dmp_ok(dmp_test_agent_connect_ipc(a, &c));
        assert_dmp_ok(dmp_client_ping(c));
        dmp_client_destroy(&c);
        int now = dmp_test_count_fds(a->pid);
        if (now > peak)
            peak = now;
    }
    /* Closed connections are released asynchronously by libzmq: wait for
     * the count to come back rather than read it once. */
    s_fds_t want = {a->pid, before};
    bool back = dmp_test_wait_until(s_fds_at_most, &want, 5.0);
    print_message("# agent fds: %d before, peak %d, %d after %d connects\n",
                  before, peak, dmp_test_count_fds(a->pid), 2 * ROUNDS);
    assert_true(back);
    assert_true(dmp_test_agent_is_running(a));
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
        cmocka_unit_test_setup_teardown(test_three_peers_form_a_cluster,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_killed_node_is_dead_within_liveness_and_alive_after_restart,
            s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_node_naming_one_seed_learns_the_rest_by_gossip, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(
            test_sigterm_stops_cleanly_and_removes_lock_and_socket, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(
            test_second_agent_on_same_runtime_dir_is_refused, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(
            test_idle_agent_does_not_leak_fds_across_client_connects,
            s_setup, s_teardown),
        cmocka_unit_test(test_no_agent_outlives_the_tests),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
