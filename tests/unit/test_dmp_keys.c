/*
 * test_dmp_keys.c - key files: generate, load, permissions, fingerprints.
 *
 * Every file lives in one mkdtemp directory made by the group setup and
 * removed by its teardown. The mode checks are made by the library on
 * st_mode, so they hold even when the tests run as root.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "dmp_impl.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The ZeroMQ CURVE test keys (libzmq tests, RFC 26 examples). */
#define S_CLIENT_PUBLIC "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
#define S_CLIENT_SECRET "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs"
#define S_SERVER_PUBLIC "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"

static char s_dir[PATH_MAX]; /* this run's temporary directory */

static int
s_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int
s_setup(void **state)
{
    (void)state;
    snprintf(s_dir, sizeof s_dir, "%s/test_dmp_keys.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    return mkdtemp(s_dir) ? 0 : -1;
}

static int
s_teardown(void **state)
{
    (void)state;
    return nftw(s_dir, s_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* s_dir/name in a static buffer (one at a time is enough here). */
static const char *
s_path(const char *name)
{
    static char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", s_dir, name);
    return path;
}

/* Writes text to s_dir/name with exactly this mode; returns the path. */
static const char *
s_write(const char *name, mode_t mode, const char *text)
{
    const char *path = s_path(name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
    return path;
}

static bool
s_all_zero(const void *p, size_t len)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < len; i++)
        if (b[i])
            return false;
    return true;
}

static void
test_keys_keygen_then_load_both_halves(void **state)
{
    (void)state;
    /* What `dmp keygen alice` does, then what an agent does at start. */
    int rc = dmp_keygen(s_dir, "alice");
    assert_int_equal(rc, 0);

    dmp__keypair_t kp;
    char err[256] = "";
    rc = dmp__key_load_secret(s_path("alice.key"), &kp, err, sizeof err);
    assert_int_equal(rc, 0);
    assert_true(dmp__z85_key_valid(kp.secret_z85));

    char pub[DMP__Z85_KEY_LEN + 1];
    rc = dmp__key_load_public(s_path("alice.pub"), pub, err, sizeof err);
    assert_int_equal(rc, 0);
    assert_string_equal(kp.public_z85, pub); /* derived == published */

    dmp__keypair_wipe(&kp);
    assert_true(s_all_zero(&kp, sizeof kp));
}

static void
test_keys_keygen_writes_secret_0600_and_public_0644(void **state)
{
    (void)state;
    /* Whatever the umask, the secret is 0600 and the public key 0644. */
    static const mode_t masks[] = {0, 022, 077};
    for (size_t i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "mode%zu", i);
        mode_t old = umask(masks[i]);
        int rc = dmp_keygen(s_dir, name);
        umask(old);
        assert_int_equal(rc, 0);

        struct stat st;
        char file[64];
        snprintf(file, sizeof file, "%s.key", name);
        assert_int_equal(stat(s_path(file), &st), 0);
        assert_true(S_ISREG(st.st_mode));
        assert_int_equal(st.st_mode & 07777, 0600);
        snprintf(file, sizeof file, "%s.pub", name);
        assert_int_equal(stat(s_path(file), &st), 0);
        assert_int_equal(st.st_mode & 07777, 0644);
    }
}

static void
test_keys_keygen_refuses_to_overwrite(void **state)
{
    (void)state;
    assert_int_equal(dmp_keygen(s_dir, "bob"), 0);
    dmp__keypair_t before, after;
    char err[256];
    assert_int_equal(
        dmp__key_load_secret(s_path("bob.key"), &before, err, sizeof err), 0);

    assert_int_equal(dmp_keygen(s_dir, "bob"), -EEXIST);
    assert_int_equal(
        dmp__key_load_secret(s_path("bob.key"), &after, err, sizeof err), 0);
    assert_string_equal(before.secret_z85, after.secret_z85);

    /* A lone .pub (or .key) is enough to refuse, and nothing is written. */
    s_write("carol.pub", 0644, "# not ours\n");
    assert_int_equal(dmp_keygen(s_dir, "carol"), -EEXIST);
    assert_int_equal(access(s_path("carol.key"), F_OK), -1);
    s_write("dave.key", 0600, "# not ours\n");
    assert_int_equal(dmp_keygen(s_dir, "dave"), -EEXIST);
    assert_int_equal(access(s_path("dave.pub"), F_OK), -1);

    dmp__keypair_wipe(&before);
    dmp__keypair_wipe(&after);
}

static void
test_keys_keygen_rejects_bad_names(void **state)
{
    (void)state;
    char long_name[DMP__NAME_MAX + 1];
    memset(long_name, 'k', DMP__NAME_MAX);
    long_name[DMP__NAME_MAX] = '\0';
    const char *bad[] = {"", ".hidden", "a/b", "../up", "a b", "k\n",
                         "caf\xc3\xa9", long_name};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(dmp_keygen(s_dir, bad[i]), -EINVAL);
    assert_int_equal(dmp_keygen(s_dir, NULL), -EINVAL);
    assert_int_equal(dmp_keygen(NULL, "ok"), -EINVAL);
    assert_int_equal(access(s_path("up.key"), F_OK), -1);

    /* The longest valid name works. */
    long_name[DMP__NAME_MAX - 1] = '\0';
    assert_int_equal(dmp_keygen(s_dir, long_name), 0);

    assert_int_equal(dmp_keygen(s_path("no-such-dir"), "x"), -ENOENT);
}

static void
test_keys_load_secret_refuses_file_readable_by_others(void **state)
{
    (void)state;
    assert_int_equal(dmp_keygen(s_dir, "perm"), 0);
    const char *path = s_path("perm.key");
    char keep[PATH_MAX];
    snprintf(keep, sizeof keep, "%s", path);
    static const mode_t modes[] = {0644, 0640, 0604, 0620, 0660, 0602};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        assert_int_equal(chmod(keep, modes[i]), 0);
        dmp__keypair_t kp;
        memset(&kp, 0x55, sizeof kp);
        char err[512] = "";
        int rc = dmp__key_load_secret(keep, &kp, err, sizeof err);
        assert_int_equal(rc, DMP_EKEY);
        assert_non_null(strstr(err, "chmod 600"));
        assert_non_null(strstr(err, keep));
        assert_true(s_all_zero(&kp, sizeof kp));
    }
    static const mode_t fine[] = {0600, 0400, 0700};
    for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
        assert_int_equal(chmod(keep, fine[i]), 0);
        dmp__keypair_t kp;
        char err[512];
        assert_int_equal(dmp__key_load_secret(keep, &kp, err, sizeof err), 0);
        dmp__keypair_wipe(&kp);
    }
}

static void
test_keys_load_secret_rejects_malformed_files(void **state)
{
    (void)state;
    static const char *bad[] = {
        "",
        "\n\n",
        "# only a comment\n",
        "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%c\n",   /* 39 chars */
        "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%csX\n", /* 41 chars */
        "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%c~\n",  /* '~' not Z85 */
        "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%c\"\n", /* '"' not Z85 */
        "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs junk\n",
        S_CLIENT_SECRET "\n" S_CLIENT_SECRET "\n", /* two key lines */
        "# c\n" S_CLIENT_SECRET "\n" S_SERVER_PUBLIC "\n",
        "\x01\x02\x03\xff\xfe",
        "#####################################\x80\x80\x80\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *path = s_write("bad.key", 0600, bad[i]);
        dmp__keypair_t kp;
        char err[512] = "";
        int rc = dmp__key_load_secret(path, &kp, err, sizeof err);
        if (rc != DMP_EKEY)
            fail_msg("case %zu: want DMP_EKEY, got %s", i, dmp_err_name(rc));
        assert_non_null(strstr(err, "malformed"));
        assert_true(s_all_zero(&kp, sizeof kp));
        /* The same content as a public key file is refused too. */
        char pub[DMP__Z85_KEY_LEN + 1];
        rc = dmp__key_load_public(path, pub, err, sizeof err);
        assert_int_equal(rc, DMP_EKEY);
    }
}

static void
test_keys_load_secret_accepts_comments_and_blank_lines(void **state)
{
    (void)state;
    const char *path =
        s_write("commented.key", 0600,
                "# dmp secret key 'client'\n\n# another comment\n"
                "  \t" S_CLIENT_SECRET " \t\r\n\n# trailing comment\n");
    dmp__keypair_t kp;
    char err[256] = "";
    assert_int_equal(dmp__key_load_secret(path, &kp, err, sizeof err), 0);
    assert_string_equal(kp.secret_z85, S_CLIENT_SECRET);
    /* Known answer: the public key libzmq's tests pair with this secret. */
    assert_string_equal(kp.public_z85, S_CLIENT_PUBLIC);
    dmp__keypair_wipe(&kp);

    /* No trailing newline at all. */
    path = s_write("bare.key", 0600, S_CLIENT_SECRET);
    assert_int_equal(dmp__key_load_secret(path, &kp, err, sizeof err), 0);
    assert_string_equal(kp.public_z85, S_CLIENT_PUBLIC);
    dmp__keypair_wipe(&kp);
}

static void
test_keys_load_secret_refuses_missing_symlink_and_directory(void **state)
{
    (void)state;
    dmp__keypair_t kp;
    char err[512] = "";
    assert_int_equal(
        dmp__key_load_secret(s_path("missing.key"), &kp, err, sizeof err),
        DMP_EKEY);
    assert_non_null(strstr(err, "missing.key"));

    /* A symlink could be swapped after the check: refused (O_NOFOLLOW). */
    char target[PATH_MAX];
    snprintf(target, sizeof target, "%s",
             s_write("real.key", 0600, S_CLIENT_SECRET "\n"));
    assert_int_equal(symlink(target, s_path("link.key")), 0);
    assert_int_equal(
        dmp__key_load_secret(s_path("link.key"), &kp, err, sizeof err),
        DMP_EKEY);

    assert_int_equal(mkdir(s_path("dir.key"), 0700), 0);
    assert_int_equal(
        dmp__key_load_secret(s_path("dir.key"), &kp, err, sizeof err),
        DMP_EKEY);
}

static void
test_keys_load_public_accepts_z85_literal_or_path(void **state)
{
    (void)state;
    char pub[DMP__Z85_KEY_LEN + 1];
    char err[512] = "";
    assert_int_equal(
        dmp__key_load_public(S_SERVER_PUBLIC, pub, err, sizeof err), 0);
    assert_string_equal(pub, S_SERVER_PUBLIC);

    const char *path =
        s_write("server.pub", 0644, "# dmp public key 'server'\n"
                                    S_SERVER_PUBLIC "\n");
    memset(pub, 0, sizeof pub);
    assert_int_equal(dmp__key_load_public(path, pub, err, sizeof err), 0);
    assert_string_equal(pub, S_SERVER_PUBLIC);

    /* Public keys need no particular mode. */
    assert_int_equal(chmod(path, 0666), 0);
    assert_int_equal(dmp__key_load_public(path, pub, err, sizeof err), 0);

    /* Neither a key nor a readable file. */
    assert_int_equal(dmp__key_load_public(s_path("nope.pub"), pub, err,
                                          sizeof err),
                     DMP_EKEY);
    assert_non_null(strstr(err, "nope.pub"));
    /* 40 characters that are not Z85 are taken as a (missing) path. */
    assert_int_equal(dmp__key_load_public(
                         "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf~", pub,
                         err, sizeof err),
                     DMP_EKEY);
}

static void
test_keys_z85_key_valid(void **state)
{
    (void)state;
    assert_true(dmp__z85_key_valid(S_CLIENT_PUBLIC));
    assert_true(dmp__z85_key_valid(S_CLIENT_SECRET));
    assert_false(dmp__z85_key_valid(""));
    assert_false(dmp__z85_key_valid("Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hI"));
    assert_false(
        dmp__z85_key_valid("Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hIDD"));
    assert_false(dmp__z85_key_valid("Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hI "));
    assert_false(dmp__z85_key_valid("Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hI~"));
}

static void
test_keys_dir_check_refuses_dir_writable_by_others(void **state)
{
    (void)state;
    char err[512] = "";
    const char *d = s_path("keys");
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", d);
    assert_int_equal(mkdir(dir, 0700), 0);

    static const mode_t ok[] = {0700, 0755, 0750, 0500};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        assert_int_equal(chmod(dir, ok[i]), 0);
        assert_int_equal(dmp__keys_dir_check(dir, err, sizeof err), 0);
    }
    static const mode_t bad[] = {0770, 0775, 0757, 0777, 01777, 0720};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(chmod(dir, bad[i]), 0);
        err[0] = '\0';
        assert_int_equal(dmp__keys_dir_check(dir, err, sizeof err), DMP_EKEY);
        assert_non_null(strstr(err, "chmod go-w"));
        assert_non_null(strstr(err, dir));
    }
    assert_int_equal(chmod(dir, 0700), 0);

    assert_int_equal(
        dmp__keys_dir_check(s_path("no-such-dir"), err, sizeof err),
        DMP_EKEY);
    s_write("plain-file", 0600, "x");
    assert_int_equal(dmp__keys_dir_check(s_path("plain-file"), err,
                                         sizeof err),
                     DMP_EKEY);
}

static void
test_keys_fingerprint_is_12_hex_and_stable(void **state)
{
    (void)state;
    /* SHA-256 of 32 zero bytes starts 66687aadf862. */
    const uint8_t zero[32] = {0};
    char fp[13];
    dmp__key_fingerprint(zero, fp);
    assert_string_equal(fp, "66687aadf862");

    char a[13], b[13], c[13];
    dmp__key_fingerprint_z85(S_CLIENT_PUBLIC, a);
    dmp__key_fingerprint_z85(S_CLIENT_PUBLIC, b);
    dmp__key_fingerprint_z85(S_SERVER_PUBLIC, c);
    assert_int_equal(strlen(a), 12);
    assert_int_equal(strspn(a, "0123456789abcdef"), 12);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);

    dmp__key_fingerprint_z85("short", a);
    assert_string_equal(a, "invalid");
    dmp__key_fingerprint_z85("", a);
    assert_string_equal(a, "invalid");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_keygen_then_load_both_halves),
        cmocka_unit_test(test_keys_keygen_writes_secret_0600_and_public_0644),
        cmocka_unit_test(test_keys_keygen_refuses_to_overwrite),
        cmocka_unit_test(test_keys_keygen_rejects_bad_names),
        cmocka_unit_test(test_keys_load_secret_refuses_file_readable_by_others),
        cmocka_unit_test(test_keys_load_secret_rejects_malformed_files),
        cmocka_unit_test(test_keys_load_secret_accepts_comments_and_blank_lines),
        cmocka_unit_test(
            test_keys_load_secret_refuses_missing_symlink_and_directory),
        cmocka_unit_test(test_keys_load_public_accepts_z85_literal_or_path),
        cmocka_unit_test(test_keys_z85_key_valid),
        cmocka_unit_test(test_keys_dir_check_refuses_dir_writable_by_others),
        cmocka_unit_test(test_keys_fingerprint_is_12_hex_and_stable),
    };
    return cmocka_run_group_tests_name("dmp_keys", tests, s_setup,
                                       s_teardown);
}
