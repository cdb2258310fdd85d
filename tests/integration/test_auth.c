/*
 * test_auth.c - who may talk to an agent over tcp, and which keys and
 * directories it accepts at start-up (FAULTS.md, "Authentication
 * pitfalls" and the config rows of "Bad inputs").
 *
 * Every refusal must be fast (bounded, never a hang), must leave the agent
 * serving the allowed client, and where the key is known, must be logged
 * with its fingerprint.
 */
#define _GNU_SOURCE
#include "dmp_test.h"
#include "dmp_impl.h" /* dmp__wire_encode, key helpers */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

/* How long a refusal may take: the handshake is one round trip on
 * loopback; 3 s leaves room for a loaded machine, not for a hang. */
#define REFUSED_WITHIN 3.0

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
s_started_agent(dmp_test_sandbox_t *sb)
{
    dmp_test_agent_t *a;
    assert_dmp_ok(dmp_test_agent_new(sb, "node1", &a));
    assert_dmp_ok(dmp_test_agent_start(a));
    return a;
}

/* The allowed client still gets answers: a refusal harmed nobody else. */
static void
s_assert_serves(dmp_test_agent_t *a)
{
    assert_true(dmp_test_agent_is_running(a));
    assert_dmp_ok(dmp_test_agent_ping(a));
}

static int
s_connect_as(const dmp_test_agent_t *a, const char *key_file,
             const char *server_key, char *err, size_t errlen,
             double *elapsed)
{
    dmp_client_opts_t opts = {.address = a->address,
                              .key_file = key_file,
                              .server_key = server_key,
                              .connect_timeout = 10.0,
                              .request_timeout = 5.0};
    dmp_client_t *c = NULL;
    double t0 = dmp_test_now();
    int rc = dmp_client_connect(&opts, &c, err, errlen);
    if (elapsed)
        *elapsed = dmp_test_now() - t0;
    dmp_client_destroy(&c);
    return rc;
}

/* The happy path: the client whose key is in the allow-list, pinning the
 * node's real key, is admitted and answered. */
static void
test_allowed_client_is_admitted(void **state)
{
    dmp_test_sandbox_t *sb = *state;
    dmp_test_agent_t *a = s_started_agent(sb);
    dmp_client_t *c;
    assert_dmp_ok(dmp_test_agent_connect(a, &c, NULL, 0));
    assert_string_equal(dmp_client_node(c), "node1");
    assert_dmp_ok(dmp_client_ping(c));
    dmp_client_destroy(&c);
    /* the agent proved at start-up that strangers are refused */
    assert_false(dmp_test_log_has(a, "self-test failed", NULL));
}

static void
test_tcp_without_keys_fails_with_ekey_and_says_why(void **state)
{
    dmp_test_sandbox_t *sb = *state;
    dmp_test_agent_t *a = s_started_agent(sb);
    char err[512];
    assert_dmp_err(s_connect_as(a, NULL, a->pub_file, err, sizeof err, NULL),
                   DMP_EKEY);
    assert_contains(err, "no client key");
    assert_dmp_err(s_connect_as(a, "", a->pub_file, err, sizeof err, NULL),
                   DMP_EKEY);
    assert_dmp_err(
        s_connect_as(a, sb->client_key, NULL, err, sizeof err, NULL),
        DMP_EKEY);
    assert_contains(err, "no server key");
    char missing[PATH_MAX + 16];
    snprintf(missing, sizeof missing, "%s/nope.key", sb->secret_dir);
    assert_dmp_err(s_connect_as(a, missing, a->pub_file, err, sizeof err,
                                NULL),
                   DMP_EKEY);
    assert_contains(err, "nope.key");
    s_assert_serves(a);
}

static void
test_unknown_key_is_refused_quickly_and_logged_with_fingerprint(
    void **state)
{
    dmp_test_sandbox_t *sb = *state;
    dmp_test_agent_t *a = s_started_agent(sb);
    char stranger[PATH_MAX];
    assert_dmp_ok(dmp_test_sandbox_key(sb, "stranger", false, stranger));
    char err[512];
    double took;
    assert_dmp_err(s_connect_as(a, stranger, a->pub_file, err, sizeof err,
                                &took),
                   DMP_EAUTH);
    print_message("# refused in %.3f s: %s\n", took, err);
    assert_true(took < REFUSED_WITHIN);
    assert_contains(err, "refused our key");

    /* logged with the stranger's fingerprint, not its key */
    char pub[DMP__Z85_KEY_LEN + 1], fp[13], want[32];
    char pub_path[PATH_MAX + 16];
    snprintf(pub_path, sizeof pub_path, "%s/stranger.pub", sb->secret_dir);
    /* read directly: dmp__key_load_public mistakes this very path (40
     * Z85 characters under /tmp) for a key; see the tests at the end */
    assert_int_equal(dmp_test_read_key(pub_path, pub), 0);
    dmp__key_fingerprint_z85(pub, fp);
    snprintf(want, sizeof want, "fingerprint=%s", fp);
    assert_true(dmp_test_log_wait(a, 2.0, "rejected", want, "127.0.0.1",
                                  NULL));
    assert_false(dmp_test_log_has(a, pub, NULL));
    s_assert_serves(a);
}

static void
test_pinning_the_wrong_server_key_fails_with_eserverkey(void **state)
{
    dmp_test_sandbox_t *sb = *state;
    dmp_test_agent_t *a = s_started_agent(sb);
    char err[512];
    double took;
    /* a valid key, but not node1's */
    assert_dmp_err(s_connect_as(a, sb->client_key, sb->client_pub, err,
                                sizeof err, &took),
                   DMP_ESERVERKEY);
    print_message("# failed in %.3f s: %s\n", took, err);
    assert_true(took < REFUSED_WITHIN);
    assert_contains(err, "server identity mismatch");
    s_assert_serves(a);
}

/* A raw DEALER with the given mechanism sends a well-formed Hello and
 * must get nothing back within a second. */
static void
s_raw_gets_no_reply(dmp_test_agent_t *a, int mechanism)
{
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    if (mechanism == ZMQ_PLAIN) {
        zmq_setsockopt(sock, ZMQ_PLAIN_USERNAME, "client", 6);
        zmq_setsockopt(sock, ZMQ_PLAIN_PASSWORD, "secret", 6);
    }
    assert_int_equal(zmq_connect(sock, a->address), 0);
    dmp__msg_t hello = {.kind = DMP__MSG_HELLO, .id = 1,
                        .version = DMP_PROTOCOL_VERSION};
    hello.u.hello.version = DMP_PROTOCOL_VERSION;
    strcpy(hello.u.hello.role, "client");
    uint8_t *buf;
    size_t len;
    assert_dmp_ok(dmp__wire_encode(&hello, &buf, &len));
    /* Queued until the handshake that never completes; DONTWAIT so a
     * full pipe cannot hang the test. */
    zmq_send(sock, buf, len, ZMQ_DONTWAIT);
    dmp__free(buf);
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    assert_int_equal(zmq_poll(&item, 1, 1000), 0);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    s_assert_serves(a);
}

static void
test_null_mechanism_client_gets_no_reply(void **state)
{
    dmp_test_sandbox_t *sb = *state;
    dmp_test_agent_t *a = s_started_agent(sb);
    s_raw_gets_no_reply(a, ZMQ_NULL);
}

static void
test_plain_mechanism_client_gets_no_reply(void **state)
{
    dmp_test_sandbox_t *sb = *state;
    dmp_test_agent_t *a = s_started_agent(sb);
    s_raw_gets_no_reply(a, ZMQ_PLAIN);
}

/* Spawns `a` expecting it to refuse to start: exit status 1 and a log
 * line holding `needle`. */
static void
s_assert_refuses(dmp_test_agent_t *a, int want_code, const char *needle)
{
    assert_dmp_ok(dmp_test_agent_spawn(a));
    int code = dmp_test_agent_wait_exit(a, 10.0);
    if (code != want_code || !dmp_test_log_has(a, needle, NULL)) {
        print_error("expected exit %d and '%s' in the log, got exit %d\n",
                    want_code, needle, code);
        dmp_test_agent_dump_log(a);
    }
    assert_int_equal(code, want_code);
    assert_true(dmp_test_log_has(a, needle, NULL));
    /* it did not leave a lock or socket behind */
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/dmpd.sock", a->runtime_dir);
    assert_int_not_equal(access(path, F_OK), 0);
}

static void
test_agent_refuses_secret_key_readable_by_others(void **state)
{
    dmp_test_sandbox_t *sb = *state;
    static const int modes[] = {0644, 0640, 0604};
    char name[16];
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        dmp_test_agent_t *a;
        snprintf(name, sizeof name, "node%zu", i + 1);
        assert_dmp_ok(dmp_test_agent_new(sb, name, &a));
        assert_int_equal(chmod(a->key_file, (mode_t)modes[i]), 0);
        s_assert_refuses(a, 1, "chmod 600");
        assert_true(dmp_test_log_has(a, "readable by others", NULL));
    }
}

static void
test_agent_refuses_malformed_key(void **state)
{
    dmp_test_sandbox_t *sb = *state;
    static const char *const bad[] = {
        "not a key\n",
        "# only a comment\n",
        "",
        /* 39 and 41 characters */
        "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf\n",
        "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7w\n",
        /* two keys */
        "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\n"
        "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\n",
        /* a character outside Z85 */
        "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]y~7\n",
    };
    char name[16];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dmp_test_agent_t *a;
        snprintf(name, sizeof name, "bad%zu", i);
        assert_dmp_ok(dmp_test_agent_new(sb, name, &a));
        assert_dmp_ok(dmp_test_write_file(a->key_file, 0600, bad[i]));
        s_assert_refuses(a, 1, "malformed key file");
    }
    /* and a key file that is missing or not a regular file */
    dmp_test_agent_t *a;
    assert_dmp_ok(dmp_test_agent_new(sb, "missing", &a));
    unlink(a->key_file);
    s_assert_refuses(a, 1, "cannot open secret key");
    assert_dmp_ok(dmp_test_agent_new(sb, "dir", &a));
    unlink(a->key_file);
    assert_int_equal(mkdir(a->key_file, 0700), 0);
    s_assert_refuses(a, 1, "not a regular file");
}

static void
test_agent_refuses_world_writable_keys_dir(void **state)
{
    dmp_test_sandbox_t *sb = *state;
    dmp_test_agent_t *a;
    assert_dmp_ok(dmp_test_agent_new(sb, "node1", &a));
    snprintf(a->keys_dir, sizeof a->keys_dir, "%s/open-keys", sb->dir);
    assert_int_equal(mkdir(a->keys_dir, 0755), 0);
    char to[PATH_MAX + 16];
    snprintf(to, sizeof to, "%s/node1.pub", a->keys_dir);
    assert_dmp_ok(dmp_test_copy_file(a->pub_file, to, 0644));
    assert_int_equal(chmod(a->keys_dir, 0777), 0);
    s_assert_refuses(a, 1, "writable by others");
    /* group-writable is refused as well */
    assert_int_equal(chmod(a->keys_dir, 0775), 0);
    s_assert_refuses(a, 1, "writable by others");
}

static void
test_agent_refuses_runtime_dir_others_can_open(void **state)
{
    dmp_test_sandbox_t *sb = *state;
    dmp_test_agent_t *a;
    assert_dmp_ok(dmp_test_agent_new(sb, "node1", &a));
    assert_int_equal(mkdir(a->runtime_dir, 0755), 0);
    assert_int_equal(chmod(a->runtime_dir, 0755), 0);
    s_assert_refuses(a, 1, "mode 0700");
}

static void
test_listening_without_keys_is_a_usage_error(void **state)
{
    dmp_test_sandbox_t *sb = *state;
    dmp_test_agent_t *a;
    assert_dmp_ok(dmp_test_agent_new(sb, "node1", &a));
    /* empty values override the harness's --key and --keys-dir */
    dmp_test_agent_add_arg(a, "--key=");
    dmp_test_agent_add_arg(a, "--keys-dir=");
    s_assert_refuses(a, 2, "needs --key and --keys-dir");
}

static void
test_local_endpoint_is_private(void **state)
{
    dmp_test_sandbox_t *sb = *state;
    dmp_test_agent_t *a = s_started_agent(sb);
    struct stat st;
    assert_int_equal(stat(a->runtime_dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(st.st_uid, geteuid());
    char sock[PATH_MAX + 16];
    snprintf(sock, sizeof sock, "%s/dmpd.sock", a->runtime_dir);
    assert_int_equal(stat(sock, &st), 0);
    assert_int_equal(st.st_mode & 077, 0);
}

typedef struct {
    const dmp_test_agent_t *a;
    const char *key;
    int rc;
} s_try_t;

static bool
s_admitted(void *arg)
{
    s_try_t *t = arg;
    t->rc = s_connect_as(t->a, t->key, t->a->pub_file, NULL, 0, NULL);
    return t->rc == 0;
}

static bool
s_refused(void *arg)
{
    return !s_admitted(arg);
}

static void
test_key_added_while_running_is_admitted_without_restart(void **state)
{
    dmp_test_sandbox_t *sb = *state;
    dmp_test_agent_t *a = s_started_agent(sb);
    pid_t pid = a->pid;
    char late[PATH_MAX];
    assert_dmp_ok(dmp_test_sandbox_key(sb, "late", false, late));
    assert_dmp_err(s_connect_as(a, late, a->pub_file, NULL, 0, NULL),
                   DMP_EAUTH);

    char from[PATH_MAX + 16], to[PATH_MAX + 16];
    snprintf(from, sizeof from, "%s/late.pub", sb->secret_dir);
    snprintf(to, sizeof to, "%s/late.pub", sb->keys_dir);
    assert_dmp_ok(dmp_test_copy_file(from, to, 0644));
    double t0 = dmp_test_now();
    s_try_t t = {a, late, 0};
    /* the allow-list is re-read at most once a second */
    bool ok = dmp_test_wait_until(s_admitted, &t, 5.0);
    print_message("# admitted %.2f s after the key was added\n",
                  dmp_test_now() - t0);
    assert_dmp_ok(t.rc);
    assert_true(ok);
    assert_int_equal(a->pid, pid); /* same process: no restart */
    s_assert_serves(a);
}

/* Revocation: a key taken out of the keys directory must stop working
 * without a restart, as adding one starts working. */
static void
test_key_removed_while_running_is_refused_without_restart(void **state)
{
    dmp_test_sandbox_t *sb = *state;
    char temp[PATH_MAX];
    assert_dmp_ok(dmp_test_sandbox_key(sb, "temp", true, temp));
    dmp_test_agent_t *a = s_started_agent(sb);
    assert_dmp_ok(s_connect_as(a, temp, a->pub_file, NULL, 0, NULL));

    char pub[PATH_MAX + 16];
    snprintf(pub, sizeof pub, "%s/temp.pub", sb->keys_dir);
    assert_int_equal(unlink(pub), 0);
    s_try_t t = {a, temp, 0};
    bool refused = dmp_test_wait_until(s_refused, &t, 5.0);
    if (!refused)
        print_error("key 'temp' still admitted 5 s after its .pub left "
                    "the keys directory\n");
    assert_dmp_err(t.rc, DMP_EAUTH);
    s_assert_serves(a);
}

/* A .pub path that happens to be 40 characters of the Z85 alphabet (a
 * plain path like /tmp/dmp-test-AbC123/secret/stranger.pub is one) must
 * still be read as a file, not taken as the key itself. */
static bool
s_z85_path(const char *path)
{
    static const char z85[] = "0123456789abcdefghijklmnopqrstuvwxyz"
                              "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                              ".-:+=^!/*?&<>()[]{}@%$#";
    return strlen(path) == DMP__Z85_KEY_LEN &&
           strspn(path, z85) == DMP__Z85_KEY_LEN;
}

static void
test_server_key_path_that_looks_like_z85_is_read_as_a_file(void **state)
{
    dmp_test_sandbox_t *sb = *state;
    char path[PATH_MAX + 64];
    int fill = DMP__Z85_KEY_LEN - (int)strlen(sb->dir) - 1 - 4;
    if (fill < 1)
        skip(); /* $TMPDIR too long to build such a path */
    snprintf(path, sizeof path, "%s/%.*s.pub", sb->dir, fill,
             "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk");
    if (!s_z85_path(path))
        skip(); /* $TMPDIR holds characters outside Z85 */
    dmp_test_agent_t *a = s_started_agent(sb);
    assert_dmp_ok(dmp_test_copy_file(a->pub_file, path, 0644));
    char err[512] = "";
    int rc = s_connect_as(a, sb->client_key, path, err, sizeof err, NULL);
    if (rc)
        print_error("--server-key %s: %s\n", path, err);
    assert_dmp_ok(rc);
}

/* The same mistake inside the agent: the allow-list entry KEYS/NAME.pub
 * of a client whose name makes that path 40 Z85 characters. */
static void
test_allowed_key_whose_pub_path_looks_like_z85_is_admitted(void **state)
{
    dmp_test_sandbox_t *sb = *state;
    int len = DMP__Z85_KEY_LEN - (int)strlen(sb->keys_dir) - 1 - 4;
    if (len < 1)
        skip();
    char name[64], path[PATH_MAX + 80], key[PATH_MAX];
    snprintf(name, sizeof name, "%.*s", len,
             "clientxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    snprintf(path, sizeof path, "%s/%s.pub", sb->keys_dir, name);
    if (!s_z85_path(path))
        skip();
    assert_dmp_ok(dmp_test_sandbox_key(sb, name, true, key));
    dmp_test_agent_t *a = s_started_agent(sb);
    char err[512] = "";
    int rc = s_connect_as(a, key, a->pub_file, err, sizeof err, NULL);
    if (rc)
        print_error("client '%s' (allow-list entry %s): %s\n", name, path,
                    err);
    assert_dmp_ok(rc);
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
        cmocka_unit_test_setup_teardown(test_allowed_client_is_admitted,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_tcp_without_keys_fails_with_ekey_and_says_why, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(
            test_unknown_key_is_refused_quickly_and_logged_with_fingerprint,
            s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_pinning_the_wrong_server_key_fails_with_eserverkey, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(
            test_null_mechanism_client_gets_no_reply, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_plain_mechanism_client_gets_no_reply, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_agent_refuses_secret_key_readable_by_others, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(test_agent_refuses_malformed_key,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_agent_refuses_world_writable_keys_dir, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_agent_refuses_runtime_dir_others_can_open, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(
            test_listening_without_keys_is_a_usage_error, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(test_local_endpoint_is_private,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_key_added_while_running_is_admitted_without_restart,
            s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_key_removed_while_running_is_refused_without_restart,
            s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_server_key_path_that_looks_like_z85_is_read_as_a_file,
            s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_allowed_key_whose_pub_path_looks_like_z85_is_admitted,
            s_setup, s_teardown),
        cmocka_unit_test(test_no_agent_outlives_the_tests),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
