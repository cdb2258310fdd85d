/*
 * test_dmp_util.c - input checks, parsers, timeouts, logging, allocation.
 *
 * Ends with the allocation fault loop (SQLite style): the n-th allocation
 * fails for n = 1, 2, ... while encoding and decoding the two messages
 * that allocate (heartbeat, nodes reply), until a run makes fewer than n
 * allocations. Every attempt must fail cleanly or succeed; run this binary
 * under `valgrind --leak-check=full` to see that the failures leak nothing.
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
#include <sys/wait.h>
#include <unistd.h>

static void
test_util_validates_inputs_like_the_agent_does(void **state)
{
    (void)state;
    /* A node reads its name, listen address and heartbeat from config. */
    assert_true(dmp__name_valid("node-1"));
    assert_true(dmp__endpoint_valid("tcp://10.0.0.1:7700"));
    double heartbeat;
    assert_int_equal(dmp__parse_seconds("1.5", &heartbeat), 0);
    assert_true(heartbeat == 1.5);
    assert_int_equal(dmp__timeout_ms(heartbeat), 1500);
    unsigned long port;
    assert_int_equal(dmp__parse_uint("7700", 65535, &port), 0);
    assert_int_equal(port, 7700);
}

static void
test_util_name_valid_accepts_only_safe_names(void **state)
{
    (void)state;
    char max[DMP__NAME_MAX], over[DMP__NAME_MAX + 1];
    memset(max, 'a', sizeof max - 1);
    max[sizeof max - 1] = '\0';
    memset(over, 'a', sizeof over - 1);
    over[sizeof over - 1] = '\0';

    const char *good[] = {"a", "n1", "Node_2.example-com", "a.", "0", "_",
                          max};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!dmp__name_valid(good[i]))
            fail_msg("refused good name '%s'", good[i]);

    const char *bad[] = {"", ".", ".hidden", "..", "a b", "a/b", "../x",
                         "a\\b", "a:b", "a@b", "n\n", "\t", "caf\xc3\xa9",
                         "\xff", over};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (dmp__name_valid(bad[i]))
            fail_msg("accepted bad name '%s'", bad[i]);
}

static void
test_util_endpoint_valid_accepts_tcp_and_ipc_paths(void **state)
{
    (void)state;
    char max[DMP__ADDR_MAX], over[DMP__ADDR_MAX + 1];
    memset(max, 'h', sizeof max - 1);
    max[sizeof max - 1] = '\0';
    memcpy(max, "tcp://", 6);
    memcpy(max + sizeof max - 1 - 5, ":7700", 5);
    memcpy(over, max, sizeof max - 1);
    strcpy(over + sizeof max - 1 - 5, "h:7700");
    assert_int_equal(strlen(over), DMP__ADDR_MAX);

    const char *good[] = {"tcp://h:1",          "tcp://*:7700",
                          "tcp://h:*",          "tcp://[::1]:7700",
                          "tcp://10.0.0.1:65535", "tcp://eth0;10.0.0.2:80",
                          "ipc:///tmp/dmp.sock", "ipc://relative/path",
                          max};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!dmp__endpoint_valid(good[i]))
            fail_msg("refused good endpoint '%s'", good[i]);

    const char *bad[] = {
        "",
        "tcp://",
        "ipc://",
        "tcp://h",          /* no port */
        "tcp://h:",         /* empty port */
        "tcp://:80",        /* no host */
        "tcp://h:65536",    /* port out of range */
        "tcp://h:-1",
        "tcp://h:+80",
        "tcp://h:80x",
        "tcp://h:0x50",
        "tcp://h:99999999999999999999999",
        "tcp://h: 80",
        "tcp://h :80",
        "tcp://h:80\n",
        "tcp://h\x01:80",
        "tcp://h\x80:80",
        "ipc://@abstract", /* abstract sockets have no permissions */
        "ipc://@",
        "udp://h:80",
        "TCP://h:80",
        "inproc://x",
        "h:80",
        over,
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (dmp__endpoint_valid(bad[i]))
            fail_msg("accepted bad endpoint '%s'", bad[i]);
}

static void
test_util_utf8_valid_refuses_overlong_and_surrogates(void **state)
{
    (void)state;
    const char *good[] = {
        "",
        "plain ascii ~\x7f",
        "\xc2\x80",         /* U+0080, first 2-byte */
        "caf\xc3\xa9",      /* é */
        "\xdf\xbf",         /* U+07FF */
        "\xe0\xa0\x80",     /* U+0800, first 3-byte */
        "\xe2\x82\xac",     /* € */
        "\xed\x9f\xbf",     /* U+D7FF, just below the surrogates */
        "\xee\x80\x80",     /* U+E000, just above them */
        "\xef\xbf\xbf",     /* U+FFFF */
        "\xf0\x90\x80\x80", /* U+10000, first 4-byte */
        "\xf0\x9f\x98\x80", /* 😀 */
        "\xf4\x8f\xbf\xbf", /* U+10FFFF, the last code point */
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!dmp__utf8_valid(good[i]))
            fail_msg("refused valid UTF-8 #%zu", i);

    const char *bad[] = {
        "\xc0\x80",         /* overlong NUL */
        "\xc0\xaf",         /* overlong '/' */
        "\xc1\xbf",         /* overlong U+007F */
        "\xe0\x80\x80",     /* overlong 3-byte */
        "\xe0\x9f\xbf",     /* overlong U+07FF */
        "\xf0\x80\x80\x80", /* overlong 4-byte */
        "\xf0\x8f\xbf\xbf", /* overlong U+FFFF */
        "\xed\xa0\x80",     /* U+D800 */
        "\xed\xbf\xbf",     /* U+DFFF */
        "\xed\xa0\xbd\xed\xb8\x80", /* CESU-8 pair */
        "\xf4\x90\x80\x80", /* U+110000 */
        "\xf5\x80\x80\x80",
        "\xf8\x88\x80\x80\x80", /* 5-byte form */
        "\xfc\x84\x80\x80\x80\x80",
        "\xfe",
        "\xff",
        "\x80",             /* lone continuation bytes */
        "a\xbf",
        "\xc3",             /* truncated at the end */
        "\xe2\x82",
        "\xf0\x9f\x98",
        "a\xc3" "b",        /* bad continuation */
        "\xe2\x28\xa1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (dmp__utf8_valid(bad[i]))
            fail_msg("accepted invalid UTF-8 #%zu", i);
}

static void
test_util_timeout_ms_rounds_up_and_maps_forever(void **state)
{
    (void)state;
    assert_int_equal(dmp__timeout_ms(0.0), 0);
    assert_int_equal(dmp__timeout_ms(-0.0), 0);
    assert_int_equal(dmp__timeout_ms(-1.0), 0);
    assert_int_equal(dmp__timeout_ms(-1e300), 0);
    assert_int_equal(dmp__timeout_ms(NAN), 0);
    assert_int_equal(dmp__timeout_ms(1.0), 1000);
    assert_int_equal(dmp__timeout_ms(2.5), 2500);
    /* Never shorter than asked: sub-millisecond waits round up. */
    assert_int_equal(dmp__timeout_ms(0.0001), 1);
    assert_int_equal(dmp__timeout_ms(1e-300), 1);
    assert_int_equal(dmp__timeout_ms(0.0015), 2);
    assert_int_equal(dmp__timeout_ms(86400.0), 86400000L);
    assert_int_equal(dmp__timeout_ms(INFINITY), -1);
    assert_int_equal(dmp__timeout_ms(1e300), -1);
    /* The documented constant waits forever (dmp.h, dmp_impl.h). */
    assert_int_equal(dmp__timeout_ms(DMP_FOREVER), -1);
}

static void
test_util_parse_seconds_rejects_junk(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        double v;
    } good[] = {{"0", 0}, {"1", 1}, {"1.5", 1.5}, {"0.001", 0.001},
                {"1e3", 1000}, {"86400", 86400}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        double v = -1;
        assert_int_equal(dmp__parse_seconds(good[i].s, &v), 0);
        assert_true(v == good[i].v);
    }
    const char *bad[] = {"",     "abc",  "1x",   "1.5s", "1 ",  "nan",
                         "NaN",  "-nan", "inf",  "-inf", "INF", "infinity",
                         "-1",   "-0.5", "-1e9", "1e400", "1e999999",
                         ".",    "e3",   "1e",   "--1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        double v = 42;
        if (dmp__parse_seconds(bad[i], &v) != -EINVAL)
            fail_msg("accepted '%s' as seconds", bad[i]);
        assert_true(v == 42); /* untouched on failure */
    }
}

static void
test_util_parse_uint_rejects_junk_and_overflow(void **state)
{
    (void)state;
    unsigned long v = 0;
    assert_int_equal(dmp__parse_uint("0", 10, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(dmp__parse_uint("65535", 65535, &v), 0);
    assert_int_equal(v, 65535);
    assert_int_equal(dmp__parse_uint("007", 10, &v), 0);
    assert_int_equal(v, 7);
    assert_int_equal(dmp__parse_uint("18446744073709551615", ULONG_MAX, &v),
                     0);
    assert_true(v == ULONG_MAX);

    const char *bad[] = {"",    "-1",   "+1",   " 1",  "1 ",  "1.0",
                         "1e3", "0x10", "abc",  "nan", "inf", "12a",
                         "65536", "18446744073709551616",
                         "99999999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 42;
        if (dmp__parse_uint(bad[i], 65535, &v) != -EINVAL)
            fail_msg("accepted '%s' as a number <= 65535", bad[i]);
        assert_int_equal(v, 42);
    }
}

static void
test_util_strlcpy_truncates_and_terminates(void **state)
{
    (void)state;
    char buf[8];
    assert_int_equal(dmp__strlcpy(buf, "short", sizeof buf), 5);
    assert_string_equal(buf, "short");
    assert_int_equal(dmp__strlcpy(buf, "much too long", sizeof buf), 13);
    assert_string_equal(buf, "much to");
    assert_int_equal(dmp__strlcpy(buf, "exactly", sizeof buf), 7);
    assert_string_equal(buf, "exactly");
    buf[0] = 'x';
    assert_int_equal(dmp__strlcpy(buf, "abc", 0), 3); /* writes nothing */
    assert_int_equal(buf[0], 'x');
}

static void
test_util_clocks_are_monotonic(void **state)
{
    (void)state;
    double t0 = dmp__now();
    uint64_t m0 = dmp__now_ms();
    double prev = t0;
    for (int i = 0; i < 1000; i++) {
        double t = dmp__now();
        assert_true(t >= prev);
        prev = t;
    }
    uint64_t m1 = dmp__now_ms();
    assert_true(m1 >= m0);
    assert_true(fabs((double)m1 / 1000.0 - dmp__now()) < 1.0);
}

/* ---- logging ---------------------------------------------------------- */

typedef struct {
    int calls;
    dmp_log_level_t level;
    char last[1100];
} s_log_seen_t;

static void
s_log_record(dmp_log_level_t level, const char *msg, void *arg)
{
    s_log_seen_t *seen = arg;
    seen->calls++;
    seen->level = level;
    snprintf(seen->last, sizeof seen->last, "%s", msg);
}

static void
test_util_log_is_silent_until_a_handler_is_installed(void **state)
{
    (void)state;
    s_log_seen_t seen = {0};
    assert_false(dmp__log_enabled(DMP_LOG_ERROR));
    dmp__log(DMP_LOG_ERROR, "nobody hears this");

    dmp_set_log_handler(s_log_record, DMP_LOG_INFO, &seen);
    assert_true(dmp__log_enabled(DMP_LOG_ERROR));
    assert_true(dmp__log_enabled(DMP_LOG_INFO));
    assert_false(dmp__log_enabled(DMP_LOG_DEBUG));
    dmp__log(DMP_LOG_WARN, "cannot connect to node '%s': %s", "n3", "refused");
    assert_int_equal(seen.calls, 1);
    assert_int_equal(seen.level, DMP_LOG_WARN);
    assert_string_equal(seen.last, "cannot connect to node 'n3': refused");
    dmp__log(DMP_LOG_DEBUG, "too verbose");
    assert_int_equal(seen.calls, 1);

    /* Long lines are cut, not overflowed. */
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    dmp__log(DMP_LOG_ERROR, "%s", big);
    assert_int_equal(seen.calls, 2);
    assert_true(strlen(seen.last) < sizeof big - 1);

    dmp_set_log_handler(NULL, DMP_LOG_DEBUG, NULL);
    assert_false(dmp__log_enabled(DMP_LOG_ERROR));
    dmp__log(DMP_LOG_ERROR, "silent again");
    assert_int_equal(seen.calls, 2);
}

/* ---- allocation and the fault loop ------------------------------------ */

static void
test_util_alloc_fail_after_fails_exactly_the_nth(void **state)
{
    (void)state;
    dmp__alloc_fail_after(3);
    void *a = dmp__malloc(10);
    char *b = dmp__strdup("two");
    void *c = dmp__calloc(2, 8); /* the third */
    void *d = dmp__realloc(NULL, 4);
    long made = dmp__alloc_fail_after(0);
    assert_non_null(a);
    assert_non_null(b);
    assert_string_equal(b, "two");
    assert_null(c);
    assert_non_null(d); /* one failure, then normal again */
    assert_int_equal(made, 4);
    dmp__free(a);
    dmp__free(b);
    dmp__free(d);

    dmp__alloc_fail_after(1);
    assert_null(dmp__strdup("x"));
    dmp__alloc_fail_after(0);
    /* Zero-size requests still give a pointer that can be freed. */
    void *z = dmp__malloc(0);
    assert_non_null(z);
    dmp__free(z);
    dmp__free(NULL);
}

static void
s_fill_heartbeat(dmp__msg_t *msg)
{
    memset(msg, 0, sizeof *msg);
    msg->kind = DMP__MSG_HEARTBEAT;
    msg->id = 3;
    strcpy(msg->u.heartbeat.node, "n1");
    strcpy(msg->u.heartbeat.address, "tcp://10.0.0.1:7700");
    msg->u.heartbeat.cores = 4;
    msg->u.heartbeat.load = 0.5;
    msg->u.heartbeat.members = calloc(3, sizeof(dmp__member_t));
    assert_non_null(msg->u.heartbeat.members);
    msg->u.heartbeat.n_members = 3;
    for (int i = 0; i < 3; i++) {
        snprintf(msg->u.heartbeat.members[i].name, DMP__NAME_MAX, "m%d", i);
        snprintf(msg->u.heartbeat.members[i].address, DMP__ADDR_MAX,
                 "tcp://10.0.0.%d:7700", i + 2);
    }
}

static void
s_fill_nodes_reply(dmp__msg_t *msg)
{
    memset(msg, 0, sizeof *msg);
    msg->kind = DMP__MSG_NODES_REPLY;
    msg->id = 4;
    msg->u.nodes_reply.nodes = calloc(3, sizeof(dmp_node_info_t));
    assert_non_null(msg->u.nodes_reply.nodes);
    msg->u.nodes_reply.n_nodes = 3;
    for (int i = 0; i < 3; i++) {
        dmp_node_info_t *ni = &msg->u.nodes_reply.nodes[i];
        snprintf(ni->name, sizeof ni->name, "n%d", i);
        snprintf(ni->address, sizeof ni->address, "tcp://h%d:7700", i);
        ni->state = (dmp_node_state_t)(i % 3);
        ni->cores = 2;
        ni->load = 1.25;
    }
}

/* Fails the 1st, 2nd, ... allocation of encode, then of decode, until a
 * run makes fewer allocations than the one set to fail. Returns how many
 * attempts failed. */
static int
s_fault_loop(const dmp__msg_t *msg)
{
    int failures = 0;
    uint8_t *frame = NULL;
    size_t frame_len = 0;

    for (long n = 1;; n++) {
        uint8_t *buf = NULL;
        size_t len = 0;
        dmp__alloc_fail_after(n);
        int rc = dmp__wire_encode(msg, &buf, &len);
        long made = dmp__alloc_fail_after(0);
        if (made < n) { /* nothing failed: this is the clean run */
            assert_int_equal(rc, 0);
            frame = buf;
            frame_len = len;
            break;
        }
        /* An allocation failed; it must not be reported as success. */
        if (rc != -ENOMEM)
            fail_msg("encode with allocation %ld failing: %s", n,
                     dmp_err_name(rc));
        assert_null(buf);
        failures++;
        assert_true(n < 1000);
    }

    for (long n = 1;; n++) {
        dmp__msg_t got;
        memset(&got, 0x5a, sizeof got);
        dmp__alloc_fail_after(n);
        int rc = dmp__wire_decode(frame, frame_len, &got);
        long made = dmp__alloc_fail_after(0);
        if (made < n) {
            assert_int_equal(rc, 0);
            assert_int_equal(got.kind, msg->kind);
            assert_true(got.id == msg->id);
            dmp__msg_clear(&got);
            break;
        }
        /* protobuf-c reports its own failed allocation as a failed
         * unpack, which dmp sees as DMP_EPROTO. */
        if (rc != -ENOMEM && rc != DMP_EPROTO)
            fail_msg("decode with allocation %ld failing: %s", n,
                     dmp_err_name(rc));
        assert_int_equal(got.kind, DMP__MSG_NONE); /* left empty */
        dmp__msg_clear(&got);
        failures++;
        assert_true(n < 1000);
    }
    dmp__free(frame);
    return failures;
}

/* starttime is field 22 of /proc/PID/stat, which never changes while the
 * process lives (the field after it, vsize, does): so a pid and its start
 * time name one process. */
static void
test_util_proc_starttime_is_field_22_and_stays(void **state)
{
    (void)state;
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "re");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    assert_non_null(p);
    unsigned long long fields[24] = {0};
    int k = 3;
    for (p += 2; k < 24 && *p; k++) { /* field 3, the state, is a letter */
        fields[k] = strtoull(p, NULL, 10);
        p = strchr(p, ' ');
        if (!p)
            break;
        p++;
    }
    uint64_t start = dmp__proc_starttime(getpid());
    assert_true(start == fields[22]);
    void *big = malloc(64u << 20); /* vsize grows; starttime does not */
    assert_non_null(big);
    assert_true(dmp__proc_starttime(getpid()) == start);
    free(big);
}

/* A process that exited and is not reaped yet is dead to every check; a
 * reaped one is gone. */
static void
test_util_proc_zombie_is_dead_and_reaped_is_gone(void **state)
{
    (void)state;
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0)
        _exit(0);
    bool zombie = false;
    uint64_t start = 0;
    for (int i = 0; i < 500 && !zombie; i++) { /* until it has exited */
        start = dmp__proc_start(child, &zombie);
        if (!zombie)
            usleep(2000);
    }
    assert_true(zombie);
    assert_true(start != 0);
    assert_true(dmp__proc_starttime(child) == 0);
    assert_false(dmp__proc_alive(child, start));
    assert_true(dmp__proc_alive(getpid(), dmp__proc_starttime(getpid())));
    assert_false(dmp__proc_alive(getpid(), 12345)); /* another start: a
                                                      * reused pid */
    assert_int_equal(waitpid(child, NULL, 0), child);
    assert_true(dmp__proc_start(child, NULL) == 0);
    assert_false(dmp__proc_alive(child, start));
}

static void
test_util_fault_loop_encode_decode_heartbeat(void **state)
{
    (void)state;
    dmp__msg_t msg;
    s_fill_heartbeat(&msg);
    int failures = s_fault_loop(&msg);
    assert_true(failures >= 3); /* the loop really injected something */
    print_message("heartbeat: %d failing allocations survived\n", failures);
    free(msg.u.heartbeat.members);
}

static void
test_util_fault_loop_encode_decode_nodes_reply(void **state)
{
    (void)state;
    dmp__msg_t msg;
    s_fill_nodes_reply(&msg);
    int failures = s_fault_loop(&msg);
    assert_true(failures >= 3);
    print_message("nodes reply: %d failing allocations survived\n",
                  failures);
    free(msg.u.nodes_reply.nodes);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_util_validates_inputs_like_the_agent_does),
        cmocka_unit_test(test_util_name_valid_accepts_only_safe_names),
        cmocka_unit_test(test_util_endpoint_valid_accepts_tcp_and_ipc_paths),
        cmocka_unit_test(test_util_utf8_valid_refuses_overlong_and_surrogates),
        cmocka_unit_test(test_util_timeout_ms_rounds_up_and_maps_forever),
        cmocka_unit_test(test_util_parse_seconds_rejects_junk),
        cmocka_unit_test(test_util_parse_uint_rejects_junk_and_overflow),
        cmocka_unit_test(test_util_strlcpy_truncates_and_terminates),
        cmocka_unit_test(test_util_clocks_are_monotonic),
        cmocka_unit_test(test_util_log_is_silent_until_a_handler_is_installed),
        cmocka_unit_test(test_util_alloc_fail_after_fails_exactly_the_nth),
        cmocka_unit_test(test_util_proc_starttime_is_field_22_and_stays),
        cmocka_unit_test(test_util_proc_zombie_is_dead_and_reaped_is_gone),
        cmocka_unit_test(test_util_fault_loop_encode_decode_heartbeat),
        cmocka_unit_test(test_util_fault_loop_encode_decode_nodes_reply),
    };
    return cmocka_run_group_tests_name("dmp_util", tests, NULL, NULL);
}
