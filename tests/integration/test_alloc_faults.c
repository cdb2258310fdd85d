/*
 * test_alloc_faults.c - allocation fault loops in the manner of SQLite.
 *
 * For each public constructor and main operation, the 1st, 2nd, ...
 * allocation of libdmp (dmp__alloc_fail_after) fails, one at a time,
 * until the call succeeds. Every failing call must return -ENOMEM (or a
 * code its header documents), never crash, and leave its arguments
 * usable: a constructor's half-built object is freed (LeakSanitizer checks
 * under make test-asan), an item whose put failed is not in the queue, an
 * item whose get failed is still there, and once the call succeeds the
 * result is exactly what it would have been without faults.
 *
 * A real agent (over ipc) serves the client, queue, pipe and process
 * loops; a second one owns a queue used remotely through the first. The library's client has an I/O thread; the count is global, so
 * a failure may land there instead, and the loop then checks that the
 * caller still gets an answer (an error or success), never a hang.
 *
 * This binary is also the children's program (DMP_CHILD, DMP_ZYGOTE).
 */
#define _GNU_SOURCE
#include "dmp_test.h"
#include "dmp_impl.h" /* dmp__alloc_fail_after */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LOOP_MAX 100000 /* a call that never succeeds is a failure too */

static dmp_test_sandbox_t *s_sb;
static dmp_test_agent_t *s_agent, *s_agent2;
static unsigned s_faults; /* injected failures seen, over all loops */

/* True when rc is what a call may return when an allocation failed. */
static bool
s_is_oom(int rc)
{
    return rc == -ENOMEM;
}

/* Arms the n-th allocation to fail. */
static void
s_arm(long n)
{
    dmp__alloc_fail_after(n);
}

/* Disarms; true when the armed failure happened (n allocations made). */
static bool
s_disarm(long n)
{
    return dmp__alloc_fail_after(0) >= n;
}

#define FAULT_LOOP_FAIL(what, n, rc)                                          \
    do {                                                                      \
        print_error("%s: allocation %ld failed -> %s (%s), expected "         \
                    "-ENOMEM\n", what, (long)(n), dmp_err_name(rc),           \
                    dmp_strerror(rc));                                        \
        fail();                                                               \
    } while (0)

/* ---- values ------------------------------------------------------------ */

static dmp_value_t *
s_build_value(void)
{
    dmp_value_t *m = dmp_map();
    if (!m)
        return NULL;
    if (dmp_map_set_str(m, "name", dmp_str("dmp")) ||
        dmp_map_set(m, dmp_int(7), dmp_list_of(3, dmp_none(), dmp_bool(1),
                                               dmp_double(2.5))) ||
        dmp_map_set(m, dmp_bytes("\0b", 2), dmp_list_range(0, 20))) {
        dmp_value_destroy(&m);
        return NULL;
    }
    return dmp_list_of(4, m, dmp_strn("a\0b", 3), dmp_list(),
                       dmp_list_of(1, dmp_map()));
}

static void
test_value_constructors_fail_cleanly(void **state)
{
    (void)state;
    dmp_value_t *want = s_build_value();
    assert_non_null(want);
    for (long n = 1;; n++) {
        assert_true(n < LOOP_MAX);
        s_arm(n);
        dmp_value_t *v = s_build_value();
        bool faulted = s_disarm(n);
        if (!faulted) {
            assert_non_null(v);
            assert_true(dmp_value_equal(v, want));
            dmp_value_destroy(&v);
            break;
        }
        s_faults++;
        assert_null(v); /* nested constructors: NULL all the way up */
    }
    dmp_value_destroy(&want);
}

static void
test_value_copy_encode_decode_fail_cleanly(void **state)
{
    (void)state;
    dmp_value_t *v = s_build_value();
    assert_non_null(v);
    for (long n = 1;; n++) {
        s_arm(n);
        dmp_value_t *copy = dmp_value_copy(v);
        if (!s_disarm(n)) {
            assert_true(dmp_value_equal(copy, v));
            dmp_value_destroy(&copy);
            break;
        }
        s_faults++;
        assert_null(copy);
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    for (long n = 1;; n++) {
        s_arm(n);
        int rc = dmp_value_encode(v, &buf, &len);
        if (!s_disarm(n)) {
            assert_dmp_ok(rc);
            break;
        }
        s_faults++;
        if (!s_is_oom(rc))
            FAULT_LOOP_FAIL("dmp_value_encode", n, rc);
        assert_null(buf);
    }
    for (long n = 1;; n++) {
        dmp_value_t *out = NULL;
        s_arm(n);
        int rc = dmp_value_decode(buf, len, &out);
        if (!s_disarm(n)) {
            assert_dmp_ok(rc);
            assert_true(dmp_value_equal(out, v));
            dmp_value_destroy(&out);
            break;
        }
        s_faults++;
        if (!s_is_oom(rc))
            FAULT_LOOP_FAIL("dmp_value_decode", n, rc);
        assert_null(out);
    }
    dmp_free(buf);
    /* Containers that take ownership destroy the item on failure. */
    dmp_value_t *list = dmp_list();
    assert_non_null(list);
    for (long n = 1;; n++) {
        s_arm(n);
        int rc = dmp_list_append(list, dmp_str("item"));
        if (!s_disarm(n)) {
            assert_dmp_ok(rc);
            break;
        }
        s_faults++;
        if (!s_is_oom(rc))
            FAULT_LOOP_FAIL("dmp_list_append", n, rc);
        assert_int_equal(dmp_value_len(list), 0);
    }
    assert_int_equal(dmp_value_len(list), 1);
    dmp_value_destroy(&list);
    dmp_value_destroy(&v);
}

/* ---- the client, queues, pipes, processes (a real agent) ---------------- */

static int
s_agent_up(void **state)
{
    (void)state;
    assert_dmp_ok(dmp_test_sandbox_new(&s_sb));
    assert_dmp_ok(dmp_test_agent_new(s_sb, "faults", &s_agent));
    assert_dmp_ok(dmp_test_agent_new(s_sb, "faults2", &s_agent2));
    dmp_test_agent_add_peer(s_agent, s_agent2);
    dmp_test_agent_add_peer(s_agent2, s_agent);
    assert_dmp_ok(dmp_test_agent_start(s_agent));
    assert_dmp_ok(dmp_test_agent_start(s_agent2));
    dmp_client_opts_t opts = {.address = s_agent->ipc_address};
    assert_dmp_ok(dmp_init_opts(&opts, NULL, 0));
    assert_dmp_ok(dmp_test_wait_alive(dmp_default_client(), 2, 10.0));
    return 0;
}

static int
s_agent_down(void **state)
{
    (void)state;
    dmp__alloc_fail_after(0);
    dmp_fini();
    dmp_test_sandbox_destroy(&s_sb);
    assert_int_equal(dmp_test_agents_running(), 0);
    return 0;
}

static void
test_client_connect_fails_cleanly(void **state)
{
    (void)state;
    dmp_client_opts_t opts = {.address = s_agent->ipc_address};
    for (long n = 1;; n++) {
        assert_true(n < LOOP_MAX);
        dmp_client_t *c = NULL;
        char err[256] = "";
        s_arm(n);
        int rc = dmp_client_connect(&opts, &c, err, sizeof err);
        bool faulted = s_disarm(n);
        if (rc == 0) {
            assert_non_null(c);
            assert_dmp_ok(dmp_client_ping(c));
            dmp_client_destroy(&c);
            if (!faulted)
                break;
            continue; /* the failure hit the I/O thread, harmlessly */
        }
        s_faults++;
        assert_null(c);
        if (!s_is_oom(rc))
            FAULT_LOOP_FAIL("dmp_client_connect", n, rc);
    }
    assert_dmp_ok(dmp_test_agent_ping(s_agent));
}

static void
test_queue_new_put_get_fail_cleanly(void **state)
{
    (void)state;
    dmp_queue_t *q = NULL;
    for (long n = 1;; n++) {
        assert_true(n < LOOP_MAX);
        s_arm(n);
        int rc = dmp_queue_new(NULL, &q);
        bool faulted = s_disarm(n);
        if (rc == 0 && !faulted)
            break;
        if (rc == 0) { /* the failure hit another thread */
            dmp_queue_destroy(&q);
            continue;
        }
        s_faults++;
        assert_null(q);
        if (!s_is_oom(rc))
            FAULT_LOOP_FAIL("dmp_queue_new", n, rc);
    }
    dmp_value_t *item = dmp_list_of(2, dmp_str("once"), dmp_int(42));
    assert_non_null(item);
    for (long n = 1;; n++) {
        assert_true(n < LOOP_MAX);
        s_arm(n);
        int rc = dmp_queue_put(q, item, 5.0);
        bool faulted = s_disarm(n);
        if (rc == 0)
            break; /* put: exactly once, checked below */
        assert_true(faulted);
        s_faults++;
        if (!s_is_oom(rc))
            FAULT_LOOP_FAIL("dmp_queue_put", n, rc);
    }
    for (long n = 1;; n++) {
        assert_true(n < LOOP_MAX);
        dmp_value_t *got = NULL;
        s_arm(n);
        int rc = dmp_queue_get(q, &got, 5.0);
        bool faulted = s_disarm(n);
        if (rc == 0) {
            assert_true(dmp_value_equal(got, item));
            dmp_value_destroy(&got);
            break;
        }
        assert_true(faulted);
        s_faults++;
        assert_null(got);
        /* DMP_EEMPTY here would mean the failed get lost the item. */
        if (!s_is_oom(rc))
            FAULT_LOOP_FAIL("dmp_queue_get", n, rc);
    }
    dmp_value_t *extra = NULL;
    assert_dmp_err(dmp_queue_get(q, &extra, 0), DMP_EEMPTY); /* no dup */
    dmp_value_destroy(&item);
    dmp_queue_destroy(&q);
}

static void
test_pipe_send_recv_fail_cleanly(void **state)
{
    (void)state;
    dmp_conn_t *a = NULL, *b = NULL;
    for (long n = 1;; n++) {
        assert_true(n < LOOP_MAX);
        s_arm(n);
        int rc = dmp_pipe(1, &a, &b);
        bool faulted = s_disarm(n);
        if (rc == 0 && !faulted)
            break;
        if (rc == 0) {
            dmp_conn_destroy(&a);
            dmp_conn_destroy(&b);
            continue;
        }
        s_faults++;
        assert_null(a);
        assert_null(b);
        if (!s_is_oom(rc))
            FAULT_LOOP_FAIL("dmp_pipe", n, rc);
    }
    dmp_value_t *msg = dmp_list_of(2, dmp_str("ping"), dmp_bytes("\1\2", 2));
    assert_non_null(msg);
    for (long n = 1;; n++) {
        assert_true(n < LOOP_MAX);
        s_arm(n);
        int rc = dmp_conn_send(a, msg);
        bool faulted = s_disarm(n);
        if (rc == 0)
            break;
        assert_true(faulted);
        s_faults++;
        if (!s_is_oom(rc))
            FAULT_LOOP_FAIL("dmp_conn_send", n, rc);
    }
    for (long n = 1;; n++) {
        assert_true(n < LOOP_MAX);
        dmp_value_t *got = NULL;
        s_arm(n);
        int rc = dmp_conn_recv(b, &got);
        bool faulted = s_disarm(n);
        if (rc == 0) {
            assert_true(dmp_value_equal(got, msg));
            dmp_value_destroy(&got);
            break;
        }
        assert_true(faulted);
        s_faults++;
        assert_null(got);
        if (!s_is_oom(rc))
            FAULT_LOOP_FAIL("dmp_conn_recv", n, rc);
    }
    assert_int_equal(dmp_conn_poll(b, 0), 0); /* nothing duplicated */
    dmp_value_destroy(&msg);
    dmp_conn_destroy(&a);
    dmp_conn_destroy(&b);
}

/* args [n]: exits with n. */
DMP_TARGET(exit_with)
{
    int64_t n = -1;
    dmp_value_get_int(dmp_list_get(args, 0), &n);
    return (int)n;
}

static void
test_process_new_and_start_fail_cleanly(void **state)
{
    (void)state;
    dmp_value_t *args = dmp_list_of(1, dmp_int(7));
    assert_non_null(args);
    dmp_process_opts_t opts = {.target = "exit_with", .args = args};
    dmp_process_t *p = NULL;
    for (long n = 1;; n++) {
        assert_true(n < LOOP_MAX);
        s_arm(n);
        int rc = dmp_process_new(&opts, &p);
        bool faulted = s_disarm(n);
        if (rc == 0 && !faulted)
            break;
        if (rc == 0) {
            dmp_process_destroy(&p);
            continue;
        }
        s_faults++;
        assert_null(p);
        if (!s_is_oom(rc))
            FAULT_LOOP_FAIL("dmp_process_new", n, rc);
    }
    /* start: a failed start starts nothing (the loop would otherwise
     * leave children behind), so it can be retried on the same handle. */
    unsigned started = 0;
    for (long n = 1;; n++) {
        assert_true(n < LOOP_MAX);
        s_arm(n);
        int rc = dmp_process_start(p);
        bool faulted = s_disarm(n);
        if (rc == 0) {
            started++;
            break;
        }
        assert_true(faulted);
        s_faults++;
        if (!s_is_oom(rc))
            FAULT_LOOP_FAIL("dmp_process_start", n, rc);
        assert_int_equal(dmp_process_pid(p), 0);
    }
    assert_int_equal(started, 1);
    assert_dmp_ok(dmp_process_join(p, 20.0));
    int code = -1;
    assert_dmp_ok(dmp_process_exitcode(p, &code));
    assert_int_equal(code, 7);
    dmp_process_destroy(&p);
    dmp_value_destroy(&args);
}

/* args [reply, done]: creates a queue on its node (faults2), sends its
 * handle through `reply`, and keeps it alive until `done` says so. */
DMP_TARGET(remote_owner)
{
    dmp_queue_t *reply = NULL, *done = NULL, *q = NULL;
    if (dmp_queue_from_value(dmp_list_get(args, 0), &reply) != 0 ||
        dmp_queue_from_value(dmp_list_get(args, 1), &done) != 0 ||
        dmp_queue_new(NULL, &q) != 0)
        return 2;
    dmp_value_t *h = dmp_queue_value(q);
    int rc = h ? dmp_queue_put(reply, h, 10.0) : -ENOMEM;
    dmp_value_destroy(&h);
    dmp_value_t *ok = NULL;
    if (rc == 0)
        rc = dmp_queue_get(done, &ok, 60.0);
    dmp_value_destroy(&ok);
    dmp_queue_destroy(&q);
    dmp_queue_destroy(&reply);
    dmp_queue_destroy(&done);
    return rc ? 3 : 0;
}

/* The same loops on a queue owned by another node: puts pipelined through
 * both agents, gets answered by the owner. */
static void
test_remote_queue_put_get_fail_cleanly(void **state)
{
    (void)state;
    dmp_queue_t *reply = NULL, *done = NULL;
    assert_dmp_ok(dmp_queue_new(NULL, &reply));
    assert_dmp_ok(dmp_queue_new(NULL, &done));
    dmp_value_t *args =
        dmp_list_of(2, dmp_queue_value(reply), dmp_queue_value(done));
    assert_non_null(args);
    dmp_process_opts_t po = {.target = "remote_owner", .node = "faults2",
                             .args = args};
    dmp_process_t *p = NULL;
    assert_dmp_ok(dmp_process_new(&po, &p));
    dmp_value_destroy(&args);
    assert_dmp_ok(dmp_process_start(p));
    dmp_value_t *h = NULL;
    assert_dmp_ok(dmp_queue_get(reply, &h, 20.0));
    dmp_queue_t *q = NULL;
    for (long n = 1;; n++) {
        assert_true(n < LOOP_MAX);
        s_arm(n);
        int rc = dmp_queue_from_value(h, &q);
        bool faulted = s_disarm(n);
        if (rc == 0 && !faulted)
            break;
        if (rc == 0) {
            dmp_queue_destroy(&q);
            continue;
        }
        s_faults++;
        assert_null(q);
        if (!s_is_oom(rc))
            FAULT_LOOP_FAIL("dmp_queue_from_value", n, rc);
    }
    dmp_value_t *item = dmp_list_of(2, dmp_str("remote"), dmp_int(7));
    assert_non_null(item);
    for (long n = 1;; n++) {
        assert_true(n < LOOP_MAX);
        s_arm(n);
        int rc = dmp_queue_put(q, item, 5.0);
        bool faulted = s_disarm(n);
        if (rc == 0)
            break;
        assert_true(faulted);
        s_faults++;
        if (!s_is_oom(rc))
            FAULT_LOOP_FAIL("remote dmp_queue_put", n, rc);
    }
    for (long n = 1;; n++) {
        assert_true(n < LOOP_MAX);
        dmp_value_t *got = NULL;
        s_arm(n);
        int rc = dmp_queue_get(q, &got, 5.0);
        bool faulted = s_disarm(n);
        if (rc == 0) {
            assert_true(dmp_value_equal(got, item));
            dmp_value_destroy(&got);
            break;
        }
        assert_true(faulted);
        s_faults++;
        assert_null(got);
        if (!s_is_oom(rc))
            FAULT_LOOP_FAIL("remote dmp_queue_get", n, rc);
    }
    dmp_value_t *extra = NULL;
    assert_dmp_err(dmp_queue_get(q, &extra, 0.5), DMP_EEMPTY); /* no dup */
    dmp_value_destroy(&item);

    /* An item larger than a frame: put in parts, got in parts. */
    size_t big = (2u << 20) + 12345;
    uint8_t *bytes = malloc(big);
    assert_non_null(bytes);
    for (size_t k = 0; k < big; k++)
        bytes[k] = (uint8_t)(k * 7 + (k >> 13));
    for (long n = 1;; n++) {
        assert_true(n < LOOP_MAX);
        s_arm(n);
        int rc = dmp_queue_put_bytes(q, bytes, big, 5.0);
        bool faulted = s_disarm(n);
        if (rc == 0)
            break;
        assert_true(faulted);
        s_faults++;
        if (!s_is_oom(rc))
            FAULT_LOOP_FAIL("remote dmp_queue_put_bytes of 2 MiB", n, rc);
    }
    for (long n = 1;; n++) {
        assert_true(n < LOOP_MAX);
        void *got = NULL;
        size_t len = 0;
        s_arm(n);
        int rc = dmp_queue_get_bytes(q, &got, &len, 5.0);
        bool faulted = s_disarm(n);
        if (rc == 0) {
            assert_int_equal(len, big);
            assert_memory_equal(got, bytes, big);
            dmp_free(got);
            break;
        }
        assert_true(faulted);
        s_faults++;
        assert_null(got);
        if (!s_is_oom(rc))
            FAULT_LOOP_FAIL("remote dmp_queue_get_bytes of 2 MiB", n, rc);
    }
    free(bytes);
    assert_dmp_err(dmp_queue_get(q, &extra, 0.5), DMP_EEMPTY); /* no dup */
    dmp_queue_destroy(&q);
    dmp_value_t *go = dmp_none();
    assert_dmp_ok(dmp_queue_put(done, go, 5.0));
    dmp_value_destroy(&go);
    assert_dmp_ok(dmp_process_join(p, 20.0));
    int code = -1;
    assert_dmp_ok(dmp_process_exitcode(p, &code));
    assert_int_equal(code, 0);
    dmp_process_destroy(&p);
    dmp_value_destroy(&h);
    dmp_queue_destroy(&reply);
    dmp_queue_destroy(&done);
}

/* args [reply]: makes a pipe on its node (faults2), sends one end through
 * `reply`, echoes one message back on the other, then waits for EOF. */
DMP_TARGET(pipe_echo)
{
    dmp_queue_t *reply = NULL;
    dmp_conn_t *a = NULL, *b = NULL;
    if (dmp_queue_from_value(dmp_list_get(args, 0), &reply) != 0 ||
        dmp_pipe(1, &a, &b) != 0)
        return 2;
    dmp_value_t *h = dmp_conn_value(b);
    int rc = h ? dmp_queue_put(reply, h, 10.0) : -ENOMEM;
    dmp_value_destroy(&h);
    dmp_value_t *msg = NULL;
    if (rc == 0)
        rc = dmp_conn_recv(a, &msg);
    /* The parent holds b now; our copy would keep the pipe from EOF. */
    dmp_conn_destroy(&b);
    if (rc == 0)
        rc = dmp_conn_send(a, msg);
    dmp_value_destroy(&msg);
    if (rc == 0 && dmp_conn_recv(a, &msg) != DMP_EEOF)
        rc = 4;
    dmp_value_destroy(&msg);
    dmp_conn_destroy(&a);
    dmp_conn_destroy(&b);
    dmp_queue_destroy(&reply);
    return rc ? 3 : 0;
}

/* The pipe loops with the pipe owned by another node: our end's sends go
 * pipelined through both agents, its receives are answered there. */
static void
test_remote_pipe_send_recv_fail_cleanly(void **state)
{
    (void)state;
    dmp_queue_t *reply = NULL;
    assert_dmp_ok(dmp_queue_new(NULL, &reply));
    dmp_value_t *args = dmp_list_of(1, dmp_queue_value(reply));
    assert_non_null(args);
    dmp_process_opts_t po = {.target = "pipe_echo", .node = "faults2",
                             .args = args};
    dmp_process_t *p = NULL;
    assert_dmp_ok(dmp_process_new(&po, &p));
    dmp_value_destroy(&args);
    assert_dmp_ok(dmp_process_start(p));
    dmp_value_t *h = NULL;
    assert_dmp_ok(dmp_queue_get(reply, &h, 20.0));
    dmp_conn_t *end = NULL;
    for (long n = 1;; n++) {
        assert_true(n < LOOP_MAX);
        s_arm(n);
        int rc = dmp_conn_from_value(h, &end);
        bool faulted = s_disarm(n);
        if (rc == 0 && !faulted)
            break;
        if (rc == 0) {
            dmp_conn_destroy(&end);
            continue;
        }
        s_faults++;
        assert_null(end);
        if (!s_is_oom(rc))
            FAULT_LOOP_FAIL("dmp_conn_from_value", n, rc);
    }
    dmp_value_t *msg = dmp_list_of(2, dmp_str("echo"), dmp_int(9));
    assert_non_null(msg);
    for (long n = 1;; n++) {
        assert_true(n < LOOP_MAX);
        s_arm(n);
        int rc = dmp_conn_send(end, msg);
        bool faulted = s_disarm(n);
        if (rc == 0)
            break;
        assert_true(faulted);
        s_faults++;
        if (!s_is_oom(rc))
            FAULT_LOOP_FAIL("remote dmp_conn_send", n, rc);
    }
    for (long n = 1;; n++) {
        assert_true(n < LOOP_MAX);
        dmp_value_t *got = NULL;
        s_arm(n);
        int rc = dmp_conn_recv(end, &got);
        bool faulted = s_disarm(n);
        if (rc == 0) {
            assert_true(dmp_value_equal(got, msg));
            dmp_value_destroy(&got);
            break;
        }
        assert_true(faulted);
        s_faults++;
        assert_null(got);
        if (!s_is_oom(rc))
            FAULT_LOOP_FAIL("remote dmp_conn_recv", n, rc);
    }
    dmp_value_destroy(&msg);
    dmp_conn_destroy(&end); /* EOF for the echo: it exits 0 */
    assert_dmp_ok(dmp_process_join(p, 20.0));
    int code = -1;
    assert_dmp_ok(dmp_process_exitcode(p, &code));
    assert_int_equal(code, 0); /* one message, echoed once, then EOF */
    dmp_process_destroy(&p);
    dmp_value_destroy(&h);
    dmp_queue_destroy(&reply);
}

/* dmp_init itself, after a dmp_fini: the process-wide connection. */
static void
test_init_fails_cleanly_and_can_be_retried(void **state)
{
    (void)state;
    dmp_fini();
    dmp_client_opts_t opts = {.address = s_agent->ipc_address};
    for (long n = 1;; n++) {
        assert_true(n < LOOP_MAX);
        s_arm(n);
        int rc = dmp_init_opts(&opts, NULL, 0);
        bool faulted = s_disarm(n);
        if (rc == 0 && !faulted)
            break;
        if (rc == 0) {
            dmp_fini();
            continue;
        }
        s_faults++;
        assert_null(dmp_default_client());
        if (!s_is_oom(rc))
            FAULT_LOOP_FAIL("dmp_init_opts", n, rc);
    }
    dmp_node_info_t *nodes = NULL;
    size_t count = 0;
    assert_dmp_ok(dmp_nodes(&nodes, &count));
    assert_int_equal(count, 2);
    dmp_nodes_free(&nodes);
}

static void
test_faults_were_injected_and_the_agent_still_serves(void **state)
{
    (void)state;
    print_message("# %u allocation failures injected\n", s_faults);
    assert_true(s_faults > 50);
    assert_dmp_ok(dmp_test_agent_ping(s_agent));
}

int
main(void)
{
    if (getenv("DMP_CHILD") || getenv("DMP_ZYGOTE"))
        dmp_init();
    unsetenv("DMP_PLACE");
    unsetenv("DMP_AGENT");
    unsetenv("DMP_CLUSTER");
    dmp_test_init(170);
    const struct CMUnitTest values[] = {
        cmocka_unit_test(test_value_constructors_fail_cleanly),
        cmocka_unit_test(test_value_copy_encode_decode_fail_cleanly),
    };
    const struct CMUnitTest agent[] = {
        cmocka_unit_test(test_client_connect_fails_cleanly),
        cmocka_unit_test(test_queue_new_put_get_fail_cleanly),
        cmocka_unit_test(test_pipe_send_recv_fail_cleanly),
        cmocka_unit_test(test_process_new_and_start_fail_cleanly),
        cmocka_unit_test(test_remote_queue_put_get_fail_cleanly),
        cmocka_unit_test(test_remote_pipe_send_recv_fail_cleanly),
        cmocka_unit_test(test_init_fails_cleanly_and_can_be_retried),
        cmocka_unit_test(test_faults_were_injected_and_the_agent_still_serves),
    };
    int failed = cmocka_run_group_tests_name("values", values, NULL, NULL);
    failed += cmocka_run_group_tests_name("with an agent", agent, s_agent_up,
                                          s_agent_down);
    return failed ? 1 : 0;
}
