/*
 * test_node_poll.c - when the agent's loop polls without sleeping
 * (node_poll.c): a window after a pipe is served, extended while the
 * conversation goes on, closed at its end; windows that see nothing turn
 * polling off but for a probe now and then; busy_poll 0 never polls.
 *
 * The functions run on a zeroed node_t with the times the loop would
 * pass them; no agent or socket is needed.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "node.h"

#include <stdlib.h>

#define US 1e-6

static node_t *
s_node(unsigned busy_poll_us)
{
    node_t *node = calloc(1, sizeof *node);
    assert_non_null(node);
    node->cfg.busy_poll_us = busy_poll_us;
    return node;
}

/* One window opened at t that sees nothing: closed as a miss at its end.
 * Returns whether it opened. */
static bool
s_empty_window(node_t *node, double t)
{
    node_poll_soon(node, t);
    bool open = node_poll_now(node, t);
    if (open)
        node_poll_saw(node, true, 0);
    assert_false(node_poll_now(node, t + 301 * US));
    return open;
}

static void
test_a_served_pipe_opens_a_window_that_ends(void **state)
{
    (void)state;
    node_t *node = s_node(300);
    assert_false(node_poll_now(node, 1.0)); /* nothing served yet */
    node_poll_soon(node, 1.0);
    assert_true(node_poll_now(node, 1.0));
    assert_true(node_poll_now(node, 1.0 + 299 * US));
    assert_false(node_poll_now(node, 1.0 + 300 * US));
    assert_false(node_poll_now(node, 1.0 + 299 * US)); /* stays closed */
    free(node);
}

static void
test_serving_again_extends_the_window(void **state)
{
    (void)state;
    node_t *node = s_node(300);
    node_poll_soon(node, 1.0);
    node_poll_soon(node, 1.0 + 200 * US);
    assert_true(node_poll_now(node, 1.0 + 450 * US));
    assert_false(node_poll_now(node, 1.0 + 500 * US));

    /* A window that saw something stays one that paid when extended. */
    double t = 2.0;
    for (int i = 0; i < 4; i++, t += 1.0) {
        node_poll_soon(node, t);
        assert_true(node_poll_now(node, t));
        node_poll_saw(node, true, 1);
        node_poll_soon(node, t + 100 * US);
        assert_false(node_poll_now(node, t + 401 * US));
    }
    node_poll_soon(node, t);
    assert_true(node_poll_now(node, t));
    free(node);
}

static void
test_zero_never_polls(void **state)
{
    (void)state;
    node_t *node = s_node(0);
    node_poll_soon(node, 1.0);
    assert_false(node_poll_now(node, 1.0));
    free(node);
}

/* After 4 windows that saw nothing, one window in 16 opens; one that sees
 * something turns polling fully on again. */
static void
test_windows_that_see_nothing_turn_it_off_but_for_probes(void **state)
{
    (void)state;
    node_t *node = s_node(300);
    double t = 1.0;
    for (int i = 0; i < 4; i++, t += 1.0)
        assert_true(s_empty_window(node, t));
    int opened = 0;
    for (int i = 0; i < 32; i++, t += 1.0)
        opened += s_empty_window(node, t);
    assert_int_equal(opened, 2);

    /* A probe that sees something: every window opens again. */
    while (node_poll_soon(node, t), !node_poll_now(node, t))
        t += 1.0;
    node_poll_saw(node, true, 1);
    assert_false(node_poll_now(node, t + 301 * US));
    for (int i = 0; i < 4; i++)
        assert_true(s_empty_window(node, t += 1.0));
    free(node);
}

/* What a sleeping poll returns is no proof that polling paid. */
static void
test_events_seen_while_sleeping_do_not_count(void **state)
{
    (void)state;
    node_t *node = s_node(300);
    double t = 1.0;
    for (int i = 0; i < 4; i++, t += 1.0) {
        node_poll_soon(node, t);
        assert_true(node_poll_now(node, t));
        node_poll_saw(node, false, 3);
        assert_false(node_poll_now(node, t + 301 * US));
    }
    node_poll_soon(node, t);
    assert_false(node_poll_now(node, t)); /* 4 misses: off */
    free(node);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_served_pipe_opens_a_window_that_ends),
        cmocka_unit_test(test_serving_again_extends_the_window),
        cmocka_unit_test(test_zero_never_polls),
        cmocka_unit_test(
            test_windows_that_see_nothing_turn_it_off_but_for_probes),
        cmocka_unit_test(test_events_seen_while_sleeping_do_not_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
