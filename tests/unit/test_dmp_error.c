/*
 * test_dmp_error.c - dmp_strerror, dmp_err_name, dmp_node_state_name.
 *
 * Walks DMP_ERRNO_MAP itself, so a code added to dmp.h is checked here
 * without editing this file: distinct, in the reserved block, with a text
 * and a name. Both functions must return a string for every int.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "dmp_impl.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name; /* "EEMPTY" */
    int code;
    const char *text;
} s_entry_t;

static const s_entry_t s_map[] = {
#define S_XX(name, code, text) {#name, code, text},
    DMP_ERRNO_MAP(S_XX)
#undef S_XX
};
#define S_N_MAP (sizeof s_map / sizeof s_map[0])

static void
test_error_names_and_texts_for_common_codes(void **state)
{
    (void)state;
    int rc = DMP_EEMPTY; /* what a failed dmp call returns */
    assert_string_equal(dmp_err_name(rc), "DMP_EEMPTY");
    assert_string_equal(dmp_strerror(rc), "queue is empty");

    assert_string_equal(dmp_err_name(0), "OK");
    assert_string_equal(dmp_strerror(0), "success");

    assert_string_equal(dmp_err_name(-ETIMEDOUT), "ETIMEDOUT");
    assert_string_equal(dmp_strerror(-ETIMEDOUT), strerror(ETIMEDOUT));
}

static void
test_error_map_codes_are_distinct_and_reserved(void **state)
{
    (void)state;
    assert_true(S_N_MAP > 0);
    for (size_t i = 0; i < S_N_MAP; i++) {
        assert_true(s_map[i].code <= -1001);
        /* Above the block no errno reaches: -errno values are > -4096. */
        for (size_t j = i + 1; j < S_N_MAP; j++)
            assert_int_not_equal(s_map[i].code, s_map[j].code);
    }
}

static void
test_error_map_entries_have_their_text_and_name(void **state)
{
    (void)state;
    for (size_t i = 0; i < S_N_MAP; i++) {
        char want[64];
        snprintf(want, sizeof want, "DMP_%s", s_map[i].name);
        assert_string_equal(dmp_err_name(s_map[i].code), want);
        assert_string_equal(dmp_strerror(s_map[i].code), s_map[i].text);
        assert_true(strlen(s_map[i].text) > 0);
    }
}

static void
test_error_names_negative_errno(void **state)
{
    (void)state;
    static const struct {
        int err;
        const char *name;
    } cases[] = {
        {ENOMEM, "ENOMEM"},   {EINVAL, "EINVAL"},
        {EEXIST, "EEXIST"},   {ETIMEDOUT, "ETIMEDOUT"},
        {EMSGSIZE, "EMSGSIZE"}, {EBADF, "EBADF"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_string_equal(dmp_err_name(-cases[i].err), cases[i].name);
        assert_string_equal(dmp_strerror(-cases[i].err),
                            strerror(cases[i].err));
    }
}

static void
test_error_unknown_codes_get_a_string(void **state)
{
    (void)state;
    /* Positive values are never returned by dmp, nor are numbers outside
     * both blocks; they still get a printable answer. */
    static const int odd[] = {1, 2, 42, 4096, INT_MAX, INT_MIN, INT_MIN + 1,
                              -1000, -1999, -4096, -4097, -100000};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        for (size_t j = 0; j < S_N_MAP; j++)
            assert_int_not_equal(odd[i], s_map[j].code); /* pick another */
        assert_string_equal(dmp_err_name(odd[i]), "UNKNOWN");
        assert_string_equal(dmp_strerror(odd[i]), "unknown error");
    }
}

static void
test_error_strings_never_null_for_any_int(void **state)
{
    (void)state;
    /* Every small code, then a sparse walk over the whole int range. */
    for (int err = -5000; err <= 5000; err++) {
        assert_non_null(dmp_strerror(err));
        assert_non_null(dmp_err_name(err));
        assert_true(dmp_err_name(err)[0] != '\0');
    }
    for (int64_t err = INT_MIN; err <= INT_MAX; err += 104729) {
        assert_non_null(dmp_strerror((int)err));
        assert_non_null(dmp_err_name((int)err));
    }
}

static void
test_error_node_state_names(void **state)
{
    (void)state;
    assert_string_equal(dmp_node_state_name(DMP_NODE_ALIVE), "alive");
    assert_string_equal(dmp_node_state_name(DMP_NODE_SUSPECT), "suspect");
    assert_string_equal(dmp_node_state_name(DMP_NODE_DEAD), "dead");
    assert_string_equal(dmp_node_state_name((dmp_node_state_t)3), "unknown");
    assert_string_equal(dmp_node_state_name((dmp_node_state_t)-1),
                        "unknown");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_names_and_texts_for_common_codes),
        cmocka_unit_test(test_error_map_codes_are_distinct_and_reserved),
        cmocka_unit_test(test_error_map_entries_have_their_text_and_name),
        cmocka_unit_test(test_error_names_negative_errno),
        cmocka_unit_test(test_error_unknown_codes_get_a_string),
        cmocka_unit_test(test_error_strings_never_null_for_any_int),
        cmocka_unit_test(test_error_node_state_names),
    };
    return cmocka_run_group_tests_name("dmp_error", tests, NULL, NULL);
}
