/*
 * test_dmp_config.c - "key = value" files: syntax, order, error messages.
 *
 * Each test writes a small file into one mkdtemp directory (removed by the
 * group teardown) and records what the parser hands to the callback.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "dmp_impl.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char s_dir[PATH_MAX];  /* this run's temporary directory */
static char s_file[PATH_MAX]; /* s_dir/dmpd.conf */

/* What the callback saw, and how it should answer. */
typedef struct {
    char keys[16][64];
    char values[16][1100];
    int n;
    const char *fail_key; /* answer fail_rc when this key comes */
    int fail_rc;
    const char *fail_why; /* reason to write into err, or NULL */
} s_seen_t;

static int
s_record(const char *key, const char *value, void *arg, char *err,
         size_t errlen)
{
    s_seen_t *seen = arg;
    assert_true(seen->n < 16);
    snprintf(seen->keys[seen->n], sizeof seen->keys[0], "%s", key);
    snprintf(seen->values[seen->n], sizeof seen->values[0], "%s", value);
    seen->n++;
    if (seen->fail_key && strcmp(key, seen->fail_key) == 0) {
        if (seen->fail_why)
            snprintf(err, errlen, "%s", seen->fail_why);
        return seen->fail_rc;
    }
    return 0;
}

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
    snprintf(s_dir, sizeof s_dir, "%s/test_dmp_config.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(s_dir))
        return -1;
    snprintf(s_file, sizeof s_file, "%s/dmpd.conf", s_dir);
    return 0;
}

static int
s_teardown(void **state)
{
    (void)state;
    return nftw(s_dir, s_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes text as the config file and parses it into *seen. */
static int
s_parse(const char *text, s_seen_t *seen, char *err, size_t errlen)
{
    FILE *f = fopen(s_file, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    err[0] = '\0';
    return dmp__config_parse(s_file, s_record, seen, err, errlen);
}

/* "path:line: " of the error every failure must start with. */
static void
s_assert_err_at(const char *err, int line, const char *what)
{
    char want[PATH_MAX + 32];
    snprintf(want, sizeof want, "%s:%d: %s", s_file, line, what);
    assert_string_equal(err, want);
}

static void
test_config_calls_back_for_each_setting_in_order(void **state)
{
    (void)state;
    s_seen_t seen = {.n = 0};
    char err[1024];
    int rc = s_parse("# dmpd.conf\n"
                     "name = n1\n"
                     "listen = tcp://*:7700\n"
                     "\n"
                     "heartbeat = 1.5\n",
                     &seen, err, sizeof err);
    assert_int_equal(rc, 0);
    assert_int_equal(seen.n, 3);
    assert_string_equal(seen.keys[0], "name");
    assert_string_equal(seen.values[0], "n1");
    assert_string_equal(seen.keys[1], "listen");
    assert_string_equal(seen.values[1], "tcp://*:7700");
    assert_string_equal(seen.keys[2], "heartbeat");
    assert_string_equal(seen.values[2], "1.5");
}

static void
test_config_skips_comments_and_blank_lines(void **state)
{
    (void)state;
    s_seen_t seen = {.n = 0};
    char err[1024];
    int rc = s_parse("#top\n"
                     "   # indented comment = not a setting\n"
                     "\t\n"
                     "   \n"
                     "\r\n"
                     "a = 1\r\n" /* CRLF files work */
                     "#b = 2\n",
                     &seen, err, sizeof err);
    assert_int_equal(rc, 0);
    assert_int_equal(seen.n, 1);
    assert_string_equal(seen.keys[0], "a");
    assert_string_equal(seen.values[0], "1");

    seen.n = 0;
    assert_int_equal(s_parse("", &seen, err, sizeof err), 0);
    assert_int_equal(seen.n, 0);
}

static void
test_config_trims_spaces_and_strips_quotes(void **state)
{
    (void)state;
    s_seen_t seen = {.n = 0};
    char err[1024];
    int rc = s_parse("  spaced\t=\t value with spaces  \n"
                     "quoted = \"  keep inner spaces  \"\n"
                     "empty_quotes = \"\"\n"
                     "empty =\n"
                     "lone = \"\n"
                     "eq = a = b\n"
                     "tight=x\n"
                     "last = no newline",
                     &seen, err, sizeof err);
    assert_int_equal(rc, 0);
    assert_int_equal(seen.n, 8);
    assert_string_equal(seen.keys[0], "spaced");
    assert_string_equal(seen.values[0], "value with spaces");
    assert_string_equal(seen.values[1], "  keep inner spaces  ");
    assert_string_equal(seen.values[2], "");
    assert_string_equal(seen.values[3], "");
    assert_string_equal(seen.values[4], "\""); /* one quote is not a pair */
    assert_string_equal(seen.keys[5], "eq");   /* the first '=' splits */
    assert_string_equal(seen.values[5], "a = b");
    assert_string_equal(seen.keys[6], "tight");
    assert_string_equal(seen.values[6], "x");
    assert_string_equal(seen.keys[7], "last");
    assert_string_equal(seen.values[7], "no newline");
}

static void
test_config_repeated_keys_come_in_file_order(void **state)
{
    (void)state;
    s_seen_t seen = {.n = 0};
    char err[1024];
    int rc = s_parse("peer = tcp://a:1\n"
                     "name = n1\n"
                     "peer = tcp://b:2\n"
                     "peer = tcp://c:3\n",
                     &seen, err, sizeof err);
    assert_int_equal(rc, 0);
    assert_int_equal(seen.n, 4);
    assert_string_equal(seen.values[0], "tcp://a:1");
    assert_string_equal(seen.keys[1], "name");
    assert_string_equal(seen.values[2], "tcp://b:2");
    assert_string_equal(seen.values[3], "tcp://c:3");
}

static void
test_config_error_names_file_and_line_of_missing_equals(void **state)
{
    (void)state;
    s_seen_t seen = {.n = 0};
    char err[1024];
    int rc = s_parse("a = 1\n"
                     "# fine\n"
                     "just words\n"
                     "b = 2\n",
                     &seen, err, sizeof err);
    assert_int_equal(rc, DMP_ECONFIG);
    s_assert_err_at(err, 3, "expected 'key = value'");
    assert_int_equal(seen.n, 1); /* stops at the first error */
}

static void
test_config_rejects_empty_key(void **state)
{
    (void)state;
    s_seen_t seen = {.n = 0};
    char err[1024];
    int rc = s_parse("\n  = value\n", &seen, err, sizeof err);
    assert_int_equal(rc, DMP_ECONFIG);
    s_assert_err_at(err, 2, "empty key");
    assert_int_equal(seen.n, 0);
}

static void
test_config_rejects_overlong_line(void **state)
{
    (void)state;
    /* 1022 characters and a newline fit the parser's 1 KiB line. */
    char text[4096];
    s_seen_t seen = {.n = 0};
    char err[1024];
    snprintf(text, sizeof text, "k = %01018d\n", 7);
    assert_int_equal(strlen(text), 1023);
    assert_int_equal(s_parse(text, &seen, err, sizeof err), 0);
    assert_int_equal(strlen(seen.values[0]), 1018);

    seen.n = 0;
    snprintf(text, sizeof text, "a = 1\nk = %02000d\nb = 2\n", 7);
    assert_int_equal(s_parse(text, &seen, err, sizeof err), DMP_ECONFIG);
    s_assert_err_at(err, 2, "line too long");
    assert_int_equal(seen.n, 1);

    /* The tail of a long line is never read as a line of its own, even
     * when it looks like a setting, and even without a final newline. */
    seen.n = 0;
    memset(text, '#', 1500);
    strcpy(text + 1500, "x = 1");
    assert_int_equal(s_parse(text, &seen, err, sizeof err), DMP_ECONFIG);
    s_assert_err_at(err, 1, "line too long");
    assert_int_equal(seen.n, 0);
}

static void
test_config_callback_error_propagates_with_its_reason(void **state)
{
    (void)state;
    s_seen_t seen = {.fail_key = "port", .fail_rc = DMP_ECONFIG,
                     .fail_why = "port: not a number"};
    char err[1024];
    int rc = s_parse("name = n1\nport = abc\nafter = 1\n", &seen, err,
                     sizeof err);
    assert_int_equal(rc, DMP_ECONFIG);
    s_assert_err_at(err, 2, "port: not a number");
    assert_int_equal(seen.n, 2); /* nothing after the failing line */

    /* Without a reason the code's text is used; the code is kept. */
    s_seen_t quiet = {.fail_key = "port", .fail_rc = -EINVAL};
    rc = s_parse("port = abc\n", &quiet, err, sizeof err);
    assert_int_equal(rc, -EINVAL);
    s_assert_err_at(err, 1, dmp_strerror(-EINVAL));
}

static void
test_config_missing_file_names_the_path(void **state)
{
    (void)state;
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/absent.conf", s_dir);
    s_seen_t seen = {.n = 0};
    char err[PATH_MAX + 128] = "";
    int rc = dmp__config_parse(path, s_record, &seen, err, sizeof err);
    assert_int_equal(rc, DMP_ECONFIG);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "cannot open"));
    assert_int_equal(seen.n, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_calls_back_for_each_setting_in_order),
        cmocka_unit_test(test_config_skips_comments_and_blank_lines),
        cmocka_unit_test(test_config_trims_spaces_and_strips_quotes),
        cmocka_unit_test(test_config_repeated_keys_come_in_file_order),
        cmocka_unit_test(
            test_config_error_names_file_and_line_of_missing_equals),
        cmocka_unit_test(test_config_rejects_empty_key),
        cmocka_unit_test(test_config_rejects_overlong_line),
        cmocka_unit_test(test_config_callback_error_propagates_with_its_reason),
        cmocka_unit_test(test_config_missing_file_names_the_path),
    };
    return cmocka_run_group_tests_name("dmp_config", tests, s_setup,
                                       s_teardown);
}
