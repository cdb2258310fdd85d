/*
 * test_node_poll.c - when the agent's loop polls without sleeping
 * (node_poll.c): a window after a pipe is served, extended while the
 * conversation goes on, closed at its end; windows that do not pay (no
 * pipe served after polling waited) turn polling off but for a probe now
 * and then; busy_poll 0 never polls.
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

/* A pipe served at t: whether the loop polls then. */
static bool
s_serve(node_t *node, double t)
{
    node_poll_soon(node, t);
    return node_poll_now(node, t);
}

/* One window opened at t in which the loop polls and nothing comes:
 * closed as a miss at its end. Returns whether it opened. */
static bool
s_empty_window(node_t *node, double t)
{
    bool open = s_serve(node, t);
    if (open)
        node_poll_saw(node, true, 0);
    assert_false(node_poll_now(node, t + 301 * US));
    return open;
}

/* The window opened at t pays: polling waits for the next serve, which
 * comes; then it ends. */
static void
s_pay_and_close(node_t *node, double t)
{
    node_poll_saw(node, true, 0);
    node_poll_soon(node, t + 50 * US);
    assert_false(node_poll_now(node, t + 351 * US));
}

/* One window in which polling waited for the next serve: it paid. */
static void
s_paid_window(node_t *node, double t)
{
    assert_true(s_serve(node, t));
    s_pay_and_close(node, t);
}

static void
test_a_served_pipe_opens_a_window_that_ends(void **state)
{
    (void)state;
    node_t *node = s_node(300);
    assert_false(node_poll_now(node, 1.0)); /* nothing served yet */
    assert_true(s_serve(node, 1.0));
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
    /* A serve after the end opens a new window, not the old one. */
    node_poll_soon(node, 2.0);
    assert_true(node_poll_now(node, 2.0 + 299 * US));
    assert_false(node_poll_now(node, 2.0 + 300 * US));
    free(node);
}

/* A serve after a window's end, before the loop saw it end, closes it
 * (as a miss, when it polled for nothing) and opens a new one. */
static void
test_a_late_serve_closes_the_old_window_first(void **state)
{
    (void)state;
    node_t *node = s_node(300);
    double t = 1.0;
    for (int i = 0; i < 4; i++, t += 1.0) {
        assert_true(s_serve(node, t));
        node_poll_saw(node, true, 0);
    }
    assert_false(node_poll_now(node, t));
    assert_false(s_serve(node, t + 1.0)); /* 4 misses: off */
    free(node);
}

static void
test_zero_never_polls(void **state)
{
    (void)state;
    node_t *node = s_node(0);
    assert_false(s_serve(node, 1.0));
    free(node);
}

/* After 4 windows that did not pay, one serve in 16 opens a window; one
 * that pays turns polling fully on again. */
static void
test_windows_that_do_not_pay_turn_it_off_but_for_probes(void **state)
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

    /* A probe that pays: every window opens again. */
    while (!s_serve(node, t))
        t += 1.0;
    s_pay_and_close(node, t);
    for (int i = 0; i < 4; i++)
        assert_true(s_empty_window(node, t += 1.0));
    free(node);
}

/* Paying windows keep it on, however many there are; one paying window
 * among misses starts the count again. */
static void
test_paying_windows_keep_it_on(void **state)
{
    (void)state;
    node_t *node = s_node(300);
    double t = 1.0;
    for (int i = 0; i < 3; i++, t += 1.0)
        assert_true(s_empty_window(node, t));
    s_paid_window(node, t += 1.0);
    for (int i = 0; i < 3; i++, t += 1.0)
        assert_true(s_empty_window(node, t));
    for (int i = 0; i < 100; i++, t += 1.0)
        s_paid_window(node, t);
    assert_true(s_empty_window(node, t));
    free(node);
}

/* Other traffic (events in polled rounds, no pipe served after an empty
 * round) does not make a window pay: a busy agent still stops polling. */
static void
test_other_traffic_does_not_pay(void **state)
{
    (void)state;
    node_t *node = s_node(300);
    double t = 1.0;
    for (int i = 0; i < 4; i++, t += 1.0) {
        assert_true(s_serve(node, t));
        node_poll_saw(node, true, 2);
        node_poll_saw(node, true, 1);
        assert_false(node_poll_now(node, t + 301 * US));
    }
    assert_false(s_serve(node, t)); /* 4 misses: off */
    free(node);
}

/* A serve that comes while the loop is still busy (no polled round found
 * nothing before it) is no proof either; and a window the loop never
 * polled in (busy all along) is not a miss. */
static void
test_only_rounds_that_polled_count(void **state)
{
    (void)state;
    node_t *node = s_node(300);
    double t = 1.0;
    for (int i = 0; i < 4; i++, t += 1.0) {
        assert_true(s_serve(node, t));
        node_poll_saw(node, true, 1);
        node_poll_soon(node, t + 10 * US); /* no empty round before it */
        node_poll_saw(node, true, 0);
        assert_false(node_poll_now(node, t + 400 * US));
    }
    assert_false(s_serve(node, t)); /* 4 misses: off */

    node_t *busy = s_node(300);
    for (int i = 0; i < 10; i++, t += 1.0) {
        node_poll_soon(busy, t);
        node_poll_saw(busy, false, 5); /* the loop slept or was busy */
        assert_false(node_poll_now(busy, t + 301 * US));
    }
    assert_true(s_serve(busy, t)); /* no miss counted */
    free(busy);
    free(node);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_served_pipe_opens_a_window_that_ends),
        cmocka_unit_test(test_serving_again_extends_the_window),
        cmocka_unit_test(test_a_late_serve_closes_the_old_window_first),
        cmocka_unit_test(test_zero_never_polls),
        cmocka_unit_test(
            test_windows_that_do_not_pay_turn_it_off_but_for_probes),
        cmocka_unit_test(test_paying_windows_keep_it_on),
        cmocka_unit_test(test_other_traffic_does_not_pay),
        cmocka_unit_test(test_only_rounds_that_polled_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
