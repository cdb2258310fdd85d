/*
 * test_dmp_value.c - dmp values: build, inspect, compare, repr, encode,
 * decode.
 *
 * Expected repr texts were produced by python3 (3.11) and pasted here, so
 * a change that drifts from Python's repr fails. The decoder is attacked
 * with every truncation of a valid buffer, hand-made malformed buffers and
 * thousands of seeded random and mutated ones: each must give DMP_EPROTO
 * or a value that re-encodes to the very same bytes. The allocation fault
 * loop fails the 1st, 2nd, ... allocation of a build/encode/decode/copy
 * run. Run the binary under valgrind --leak-check=full to check that no
 * error path leaks.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "dmp_impl.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- helpers ----------------------------------------------------------- */

/* repr of v into a static buffer (tests only). */
static const char *
s_repr(const dmp_value_t *v)
{
    static char buf[4096];
    int n = dmp_value_repr(v, buf, sizeof buf);
    assert_true(n >= 0 && (size_t)n < sizeof buf);
    assert_int_equal(strlen(buf), (size_t)n);
    return buf;
}

/* Asserts that v repr()s as want, then destroys v. */
static void
s_check_repr(dmp_value_t *v, const char *want)
{
    assert_non_null(v);
    assert_string_equal(s_repr(v), want);
    dmp_value_destroy(&v);
}

/* Encodes v, decodes the bytes and checks the result equals v. */
static void
s_check_round_trip(const dmp_value_t *v)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(dmp_value_encode(v, &buf, &len), 0);
    dmp_value_t *back = NULL;
    assert_int_equal(dmp_value_decode(buf, len, &back), 0);
    assert_true(dmp_value_equal(v, back));
    assert_true(dmp_value_equal(back, v));
    char a[4096], b[4096];
    dmp_value_repr(v, a, sizeof a);
    dmp_value_repr(back, b, sizeof b);
    assert_string_equal(a, b);
    /* Encoding is canonical: the decoded value encodes to the same bytes. */
    uint8_t *again = NULL;
    size_t again_len = 0;
    assert_int_equal(dmp_value_encode(back, &again, &again_len), 0);
    assert_int_equal(again_len, len);
    assert_memory_equal(again, buf, len);
    dmp_free(again);
    dmp_free(buf);
    dmp_value_destroy(&back);
}

/* Decoding buf must fail with DMP_EPROTO and leave *v_p alone. */
static void
s_check_rejected(const void *buf, size_t len)
{
    dmp_value_t *sentinel = (dmp_value_t *)&sentinel, *v = sentinel;
    int rc = dmp_value_decode(buf, len, &v);
    if (rc != DMP_EPROTO)
        print_error("decode of %zu bytes gave %s\n", len, dmp_err_name(rc));
    assert_int_equal(rc, DMP_EPROTO);
    assert_ptr_equal(v, sentinel);
}

#define S_REJECT(...)                                                         \
    do {                                                                      \
        static const uint8_t s_bad_[] = {__VA_ARGS__};                        \
        s_check_rejected(s_bad_, sizeof s_bad_);                              \
    } while (0)

/* The value the round-trip, truncation and fault tests share: every type,
 * nested three deep. Checked once; NULL when memory ran out. */
static dmp_value_t *
s_sample(void)
{
    dmp_value_t *m = dmp_map();
    if (dmp_map_set_str(m, "args",
                        dmp_list_of(5, dmp_int(-5), dmp_double(2.5),
                                    dmp_none(), dmp_bool(1),
                                    dmp_list_range(0, 3))) != 0 ||
        dmp_map_set_str(m, "name", dmp_str("job")) != 0 ||
        dmp_map_set(m, dmp_int(7), dmp_bytes("\0\1\xff", 3)) != 0 ||
        dmp_map_set(m, dmp_double(0.5),
                    dmp_list_of(1, dmp_map())) != 0 ||
        dmp_map_set_str(m, "name", dmp_strn("j\0b", 3)) != 0) {
        dmp_value_destroy(&m);
        return NULL;
    }
    /* A dict big enough for decode's sorted duplicate check. */
    dmp_value_t *big = dmp_map();
    for (int i = 0; i < 20; i++) {
        if (dmp_map_set(big, i % 2 ? dmp_int(i) : dmp_double(i / 4.0),
                        dmp_bool(i % 3)) != 0) {
            dmp_value_destroy(&big);
            break;
        }
    }
    if (dmp_map_set_str(m, "big", big) != 0)
        dmp_value_destroy(&m);
    return m;
}

static int s_decode_or_reject(const uint8_t *buf, size_t len);

/* xorshift64*: the fuzz tests are seeded, so a failure replays. */
static uint64_t
s_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 2685821657736338717ull;
}

/* ---- the happy path, as example code ---------------------------------- */

static void
test_value_build_send_and_read_back(void **state)
{
    (void)state;
    /* A job's arguments: build them (nested calls, checked once) ... */
    dmp_value_t *job = dmp_map();
    int rc = dmp_map_set_str(job, "name", dmp_str("resize"));
    if (rc == 0)
        rc = dmp_map_set_str(job, "sizes",
                             dmp_list_of(3, dmp_int(64), dmp_int(128),
                                         dmp_double(0.5)));
    if (rc == 0)
        rc = dmp_map_set_str(job, "data", dmp_bytes("\x89PNG", 4));
    assert_int_equal(rc, 0);
    assert_string_equal(
        s_repr(job),
        "{'name': 'resize', 'sizes': [64, 128, 0.5], 'data': b'\\x89PNG'}");

    /* ... encode them for the wire ... */
    uint8_t *buf;
    size_t len;
    assert_int_equal(dmp_value_encode(job, &buf, &len), 0);

    /* ... and on the other side decode and read them. */
    dmp_value_t *got;
    assert_int_equal(dmp_value_decode(buf, len, &got), 0);
    dmp_free(buf);
    assert_true(dmp_value_equal(got, job));
    assert_string_equal(dmp_value_str(dmp_map_get_str(got, "name"), NULL),
                        "resize");
    dmp_value_t *sizes = dmp_map_get_str(got, "sizes");
    int64_t first;
    double last;
    assert_int_equal(dmp_value_get_int(dmp_list_get(sizes, 0), &first), 0);
    assert_int_equal(dmp_value_get_double(dmp_list_get(sizes, -1), &last), 0);
    assert_int_equal(first, 64);
    assert_true(last == 0.5);
    assert_int_equal(dmp_value_len(sizes), 3);

    dmp_value_destroy(&got);
    dmp_value_destroy(&job);
    assert_null(job);
    dmp_value_destroy(&job); /* safe on NULL */
    dmp_value_destroy(NULL);
}

/* ---- scalars ----------------------------------------------------------- */

static void
test_value_scalars_read_back_and_convert_like_python(void **state)
{
    (void)state;
    dmp_value_t *t = dmp_bool(42), *i = dmp_int(INT64_MIN),
                *d = dmp_double(-0.25), *n = dmp_none();
    int b = -1;
    int64_t iv = 0;
    double dv = 0;

    assert_int_equal(dmp_value_type(t), DMP_VALUE_BOOL);
    assert_int_equal(dmp_value_get_bool(t, &b), 0);
    assert_int_equal(b, 1); /* any non-zero is True */
    assert_int_equal(dmp_value_get_int(t, &iv), 0); /* int(True) */
    assert_int_equal(iv, 1);
    assert_int_equal(dmp_value_get_double(t, &dv), 0); /* float(True) */
    assert_true(dv == 1.0);

    assert_int_equal(dmp_value_get_int(i, &iv), 0);
    assert_true(iv == INT64_MIN);
    assert_int_equal(dmp_value_get_double(i, &dv), 0);
    assert_true(dv == -0x1p63);
    assert_int_equal(dmp_value_get_bool(i, &b), -EINVAL);

    assert_int_equal(dmp_value_get_double(d, &dv), 0);
    assert_true(dv == -0.25);
    assert_int_equal(dmp_value_get_int(d, &iv), -EINVAL);

    assert_int_equal(dmp_value_type(n), DMP_VALUE_NONE);
    assert_int_equal(dmp_value_get_int(n, &iv), -EINVAL);
    assert_int_equal(dmp_value_get_double(NULL, &dv), -EINVAL);
    assert_null(dmp_value_str(n, NULL));
    assert_null(dmp_value_bytes(n, NULL));
    assert_int_equal(dmp_value_len(n), 0);
    assert_int_equal(dmp_value_len(i), 0);
    assert_int_equal(dmp_value_len(NULL), 0);

    dmp_value_destroy(&t);
    dmp_value_destroy(&i);
    dmp_value_destroy(&d);
    dmp_value_destroy(&n);
}

static void
test_value_type_names_are_pythons(void **state)
{
    (void)state;
    static const char *const names[] = {"NoneType", "bool", "int", "float",
                                        "str", "bytes", "list", "dict"};
    for (int t = DMP_VALUE_NONE; t <= DMP_VALUE_MAP; t++)
        assert_string_equal(dmp_value_type_name((dmp_value_type_t)t),
                            names[t]);
    assert_string_equal(dmp_value_type_name((dmp_value_type_t)99),
                        "unknown");
}

static void
test_value_str_keeps_its_length_and_embedded_nul(void **state)
{
    (void)state;
    dmp_value_t *s = dmp_strn("a\0b\xc3\xa9", 5);
    assert_non_null(s);
    size_t len = 0;
    const char *text = dmp_value_str(s, &len);
    assert_int_equal(len, 5);
    assert_memory_equal(text, "a\0b\xc3\xa9", 6); /* NUL-terminated too */
    assert_int_equal(dmp_value_len(s), 5);         /* UTF-8 bytes */
    assert_null(dmp_value_bytes(s, NULL));
    dmp_value_destroy(&s);

    dmp_value_t *b = dmp_bytes(NULL, 0);
    assert_non_null(b);
    assert_non_null(dmp_value_bytes(b, &len));
    assert_int_equal(len, 0);
    assert_null(dmp_value_str(b, NULL));
    dmp_value_destroy(&b);

    assert_null(dmp_bytes(NULL, 1));
    assert_null(dmp_str(NULL));
    assert_null(dmp_strn(NULL, 0));
}

static void
test_value_str_refuses_invalid_utf8(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t len;
    } bad[] = {
        {"\xff", 1},             {"\xc0\x80", 2},     /* overlong NUL */
        {"\xed\xa0\x80", 3},     /* surrogate */      {"\xe2\x82", 2},
        {"ok\0\xc3(", 5},        /* after a NUL */    {"\xf4\x90\x80\x80", 4},
        {"\xc3", 1},             {"\x80", 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_null(dmp_strn(bad[i].s, bad[i].len));
        dmp_value_t *b = dmp_bytes(bad[i].s, bad[i].len); /* bytes: fine */
        assert_non_null(b);
        dmp_value_destroy(&b);
    }
    assert_null(dmp_str("caf\xe9")); /* Latin-1, not UTF-8 */
    /* A valid sequence cut by the length is invalid too. */
    assert_null(dmp_strn("\xc3\xa9", 1));
}

/* ---- repr -------------------------------------------------------------- */

static void
test_value_repr_of_scalars_matches_python(void **state)
{
    (void)state;
    s_check_repr(dmp_none(), "None");
    s_check_repr(dmp_bool(1), "True");
    s_check_repr(dmp_bool(0), "False");
    s_check_repr(dmp_int(0), "0");
    s_check_repr(dmp_int(5), "5");
    s_check_repr(dmp_int(-1), "-1");
    s_check_repr(dmp_int(INT64_MAX), "9223372036854775807");
    s_check_repr(dmp_int(INT64_MIN), "-9223372036854775808");
}

static void
test_value_repr_of_floats_matches_python(void **state)
{
    (void)state;
    /* From python3: repr(float) for each C expression. */
    static const struct {
        double d;
        const char *repr;
    } cases[] = {
        {0.0, "0.0"},
        {-0.0, "-0.0"},
        {1.0, "1.0"},
        {2.5, "2.5"},
        {-2.5, "-2.5"},
        {0.1, "0.1"},
        {0.1 + 0.2, "0.30000000000000004"},
        {1.0 / 3.0, "0.3333333333333333"},
        {2.0 / 3.0, "0.6666666666666666"},
        {100.0, "100.0"},
        {1e15, "1000000000000000.0"},
        {1e16, "1e+16"},
        {-1e16, "-1e+16"},
        {9999999999999998.0, "9999999999999998.0"},
        {123456789012345678.0, "1.2345678901234568e+17"},
        {0x1p53, "9007199254740992.0"},
        {0x1p63, "9.223372036854776e+18"},
        {1e22, "1e+22"},
        {1e23, "1e+23"},
        {1e100, "1e+100"},
        {1.5e300, "1.5e+300"},
        {0.0001, "0.0001"},
        {0.00001, "1e-05"},
        {1.5e-7, "1.5e-07"},
        {1e-100, "1e-100"},
        {123.456, "123.456"},
        {1234567.0, "1234567.0"},
        {5e-324, "5e-324"},
        {2.2250738585072014e-308, "2.2250738585072014e-308"},
        {1.7976931348623157e308, "1.7976931348623157e+308"},
        /* Powers of two where the correctly rounded 16 digits do not read
         * back but the other 16-digit neighbour does (Python picks it). */
        {0x1p-44, "5.684341886080802e-14"},
        {0x1p-791, "7.678447687145631e-239"},
        {0x1p803, "5.334411546303884e+241"},
        {3.141592653589793, "3.141592653589793"},
        {-273.15, "-273.15"},
        {INFINITY, "inf"},
        {-INFINITY, "-inf"},
        {NAN, "nan"},
        {-NAN, "nan"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        s_check_repr(dmp_double(cases[i].d), cases[i].repr);
}

static void
test_value_repr_of_str_quotes_and_escapes_like_python(void **state)
{
    (void)state;
    /* From python3: repr(s) for each UTF-8 input. */
    static const struct {
        const char *s;
        size_t len;
        const char *repr;
    } cases[] = {
        {"Hello", 5, "'Hello'"},
        {"", 0, "''"},
        {"it's", 4, "\"it's\""},
        {"say \"hi\"", 8, "'say \"hi\"'"},
        {"both ' and \"", 12, "'both \\' and \"'"},
        {"a\\b", 3, "'a\\\\b'"},
        {"tab\there\nnew\rret", 16, "'tab\\there\\nnew\\rret'"},
        {"\0", 1, "'\\x00'"},
        {"nul\0inside", 10, "'nul\\x00inside'"},
        {"\x1b[0m", 4, "'\\x1b[0m'"},
        {"\x7f", 1, "'\\x7f'"},
        {"\xc2\x80", 2, "'\\x80'"},
        {"café", 5, "'café'"},
        {"€5", 4, "'€5'"},
        {"😀", 4, "'😀'"},
        {"\xc2\xa0", 2, "'\\xa0'"},              /* no-break space */
        {"\xc2\xad", 2, "'\\xad'"},              /* soft hyphen */
        {"\xe2\x80\x8b", 3, "'\\u200b'"},        /* zero width space */
        {"\xe2\x80\xa8", 3, "'\\u2028'"},        /* line separator */
        {"\xef\xbb\xbf", 3, "'\\ufeff'"},        /* BOM */
        {"\xef\xbf\xbe", 3, "'\\ufffe'"},        /* noncharacter */
        {"\xf4\x8f\xbf\xbf", 4, "'\\U0010ffff'"}, /* noncharacter */
        {"\xf3\xa0\x80\x81", 4, "'\\U000e0001'"}, /* language tag */
        {"\xee\x80\x80", 3, "'\\ue000'"},        /* private use */
        {"中文", 6, "'中文'"},
        {"Δα", 4, "'Δα'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        s_check_repr(dmp_strn(cases[i].s, cases[i].len), cases[i].repr);
}

static void
test_value_repr_of_bytes_matches_python(void **state)
{
    (void)state;
    static const struct {
        const char *b;
        size_t len;
        const char *repr;
    } cases[] = {
        {"", 0, "b''"},
        {"\x00\x01", 2, "b'\\x00\\x01'"},
        {"it's", 4, "b\"it's\""},
        {"say \"hi\"", 8, "b'say \"hi\"'"},
        {"both ' and \"", 12, "b'both \\' and \"'"},
        {"\xff\x80", 2, "b'\\xff\\x80'"},
        {"abc\n", 4, "b'abc\\n'"},
        {"\\", 1, "b'\\\\'"},
        {"\t\r\x7f", 3, "b'\\t\\r\\x7f'"},
        {"Python2", 7, "b'Python2'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        s_check_repr(dmp_bytes(cases[i].b, cases[i].len), cases[i].repr);
}

static void
test_value_repr_of_containers_matches_python(void **state)
{
    (void)state;
    s_check_repr(dmp_list(), "[]");
    s_check_repr(dmp_map(), "{}");
    s_check_repr(dmp_list_of(2, dmp_int(1), dmp_int(2)), "[1, 2]");
    s_check_repr(dmp_list_of(1, dmp_list()), "[[]]");

    dmp_value_t *m = dmp_map();
    assert_int_equal(dmp_map_set_str(m, "key", dmp_str("Python2")), 0);
    s_check_repr(m, "{'key': 'Python2'}");

    s_check_repr(
        dmp_list_of(7, dmp_none(), dmp_bool(1), dmp_double(2.5),
                    dmp_str("x"), dmp_bytes("y", 1),
                    dmp_list_of(2, dmp_int(1),
                                dmp_list_of(2, dmp_int(2), dmp_map())),
                    dmp_map()),
        "[None, True, 2.5, 'x', b'y', [1, [2, {}]], {}]");

    m = dmp_map();
    dmp_value_t *inner = dmp_map();
    assert_int_equal(dmp_map_set_str(inner, "n", dmp_int(-1)), 0);
    assert_int_equal(dmp_map_set(m, dmp_int(1), dmp_none()), 0);
    assert_int_equal(
        dmp_map_set_str(m, "a",
                        dmp_list_of(2, dmp_double(1.5), dmp_bytes("x", 1))),
        0);
    assert_int_equal(dmp_map_set(m, dmp_none(), dmp_bool(1)), 0);
    assert_int_equal(dmp_map_set(m, dmp_double(2.5), inner), 0);
    assert_int_equal(dmp_map_set_str(m, "quote", dmp_str("it's")), 0);
    assert_int_equal(dmp_map_set_str(m, "nul", dmp_strn("a\0b", 3)), 0);
    s_check_repr(m, "{1: None, 'a': [1.5, b'x'], None: True, "
                    "2.5: {'n': -1}, 'quote': \"it's\", 'nul': 'a\\x00b'}");
}

static void
test_value_repr_truncates_like_snprintf(void **state)
{
    (void)state;
    dmp_value_t *v = dmp_list_of(2, dmp_int(1), dmp_str("é"));
    assert_non_null(v);
    /* "[1, 'é']" is 9 bytes of UTF-8. */
    assert_int_equal(dmp_value_repr(v, NULL, 0), 9);
    char buf[16];
    memset(buf, 'X', sizeof buf);
    assert_int_equal(dmp_value_repr(v, buf, 1), 9);
    assert_string_equal(buf, "");
    assert_int_equal(dmp_value_repr(v, buf, 5), 9);
    assert_string_equal(buf, "[1, ");
    assert_int_equal(dmp_value_repr(v, buf, 9), 9);
    assert_string_equal(buf, "[1, '\xc3\xa9'");
    assert_int_equal(dmp_value_repr(v, buf, 10), 9);
    assert_string_equal(buf, "[1, 'é']");
    dmp_value_destroy(&v);
}

/* ---- equality and copy ------------------------------------------------- */

static void
test_value_equal_follows_python(void **state)
{
    (void)state;
    /* Pairs built inline; want is Python's a == b. */
    struct {
        dmp_value_t *a, *b;
        int want;
    } cases[] = {
        {dmp_int(1), dmp_double(1.0), 1},
        {dmp_int(1), dmp_bool(1), 1},
        {dmp_bool(1), dmp_double(1.0), 1},
        {dmp_int(0), dmp_double(-0.0), 1},
        {dmp_bool(0), dmp_double(-0.0), 1},
        {dmp_int(2), dmp_bool(1), 0},
        {dmp_double(NAN), dmp_double(NAN), 0},
        {dmp_list_of(1, dmp_double(NAN)), dmp_list_of(1, dmp_double(NAN)),
         0},
        /* int vs float compares exactly, as Python does. */
        {dmp_int((1LL << 53) + 1), dmp_double(0x1p53), 0},
        {dmp_int(1LL << 53), dmp_double(0x1p53), 1},
        {dmp_int(INT64_MAX), dmp_double(0x1p63), 0},
        {dmp_int(INT64_MIN), dmp_double(-0x1p63), 1},
        {dmp_int(1), dmp_double(1.5), 0},
        {dmp_int(0), dmp_double(INFINITY), 0},
        {dmp_str("a"), dmp_bytes("a", 1), 0},
        {dmp_str("a"), dmp_str("a"), 1},
        {dmp_strn("a\0b", 3), dmp_strn("a\0c", 3), 0},
        {dmp_str("a"), dmp_strn("a\0", 2), 0},
        {dmp_none(), dmp_none(), 1},
        {dmp_none(), dmp_int(0), 0},
        {dmp_list_of(2, dmp_int(1), dmp_int(2)),
         dmp_list_of(2, dmp_int(2), dmp_int(1)), 0},
        {dmp_list_of(2, dmp_int(1), dmp_double(2.0)),
         dmp_list_of(2, dmp_bool(1), dmp_int(2)), 1},
        {dmp_list(), dmp_map(), 0},
        {dmp_list(), dmp_list_of(1, dmp_none()), 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_non_null(cases[i].a);
        assert_non_null(cases[i].b);
        assert_int_equal(dmp_value_equal(cases[i].a, cases[i].b),
                         cases[i].want);
        assert_int_equal(dmp_value_equal(cases[i].b, cases[i].a),
                         cases[i].want);
        dmp_value_destroy(&cases[i].a);
        dmp_value_destroy(&cases[i].b);
    }

    /* Dicts: order does not matter, keys compare as numbers. */
    dmp_value_t *a = dmp_map(), *b = dmp_map();
    assert_int_equal(dmp_map_set_str(a, "x", dmp_int(1)), 0);
    assert_int_equal(dmp_map_set(a, dmp_int(1), dmp_str("one")), 0);
    assert_int_equal(dmp_map_set(b, dmp_double(1.0), dmp_str("one")), 0);
    assert_int_equal(dmp_map_set_str(b, "x", dmp_double(1.0)), 0);
    assert_true(dmp_value_equal(a, b));
    assert_int_equal(dmp_map_set_str(b, "y", dmp_none()), 0);
    assert_false(dmp_value_equal(a, b));
    assert_false(dmp_value_equal(b, a));
    assert_int_equal(dmp_map_set_str(a, "y", dmp_bool(0)), 0);
    assert_false(dmp_value_equal(a, b)); /* False != None */
    dmp_value_destroy(&a);
    dmp_value_destroy(&b);
}

static void
test_value_copy_is_deep(void **state)
{
    (void)state;
    dmp_value_t *v = s_sample();
    assert_non_null(v);
    dmp_value_t *c = dmp_value_copy(v);
    assert_non_null(c);
    assert_true(dmp_value_equal(v, c));
    char before[512];
    dmp_value_repr(v, before, sizeof before);
    /* Changing the copy leaves the original alone. */
    dmp_value_t *args = dmp_map_get_str(c, "args");
    assert_int_equal(dmp_list_set(args, 0, dmp_str("changed")), 0);
    assert_false(dmp_value_equal(v, c));
    assert_string_equal(s_repr(v), before);
    dmp_value_destroy(&v);
    assert_string_equal(dmp_value_str(dmp_list_get(args, 0), NULL),
                        "changed");
    dmp_value_destroy(&c);
    assert_null(dmp_value_copy(NULL));
}

/* ---- lists ------------------------------------------------------------- */

static void
test_list_indexes_count_from_the_end_when_negative(void **state)
{
    (void)state;
    dmp_value_t *l = dmp_list_range(10, 15); /* [10, 11, 12, 13, 14] */
    assert_non_null(l);
    int64_t x;
    assert_int_equal(dmp_value_get_int(dmp_list_get(l, -1), &x), 0);
    assert_int_equal(x, 14);
    assert_int_equal(dmp_value_get_int(dmp_list_get(l, -5), &x), 0);
    assert_int_equal(x, 10);
    assert_null(dmp_list_get(l, -6));
    assert_null(dmp_list_get(l, 5));
    assert_null(dmp_list_get(l, INT64_MIN));
    assert_null(dmp_list_get(l, INT64_MAX));

    assert_int_equal(dmp_list_set(l, -2, dmp_str("x")), 0);
    assert_int_equal(dmp_list_set(l, 0, dmp_none()), 0);
    assert_int_equal(dmp_list_set(l, 5, dmp_int(1)), -ERANGE); /* freed */
    assert_int_equal(dmp_list_set(l, -6, dmp_int(1)), -ERANGE);
    assert_int_equal(dmp_list_set(l, INT64_MIN, dmp_int(1)), -ERANGE);
    assert_int_equal(dmp_list_set(l, 0, NULL), -ENOMEM);
    assert_string_equal(s_repr(l), "[None, 11, 12, 'x', 14]");

    dmp_value_t *m = dmp_map();
    assert_int_equal(dmp_list_set(m, 0, dmp_int(1)), -EINVAL);
    assert_int_equal(dmp_list_append(m, dmp_int(1)), -EINVAL);
    assert_int_equal(dmp_list_append(NULL, dmp_int(1)), -EINVAL);
    assert_int_equal(dmp_list_append(l, NULL), -ENOMEM);
    assert_null(dmp_list_get(m, 0));
    assert_int_equal(dmp_value_len(l), 5);
    dmp_value_destroy(&m);
    dmp_value_destroy(&l);
}

static void
test_list_append_grows(void **state)
{
    (void)state;
    dmp_value_t *l = dmp_list();
    for (int i = 0; i < 1000; i++)
        assert_int_equal(dmp_list_append(l, dmp_int(i)), 0);
    dmp_value_t *r = dmp_list_range(0, 1000);
    assert_true(dmp_value_equal(l, r));
    assert_int_equal(dmp_value_len(l), 1000);
    s_check_round_trip(l);
    dmp_value_destroy(&l);
    dmp_value_destroy(&r);
}

static void
test_list_range_is_pythons(void **state)
{
    (void)state;
    s_check_repr(dmp_list_range(0, 0), "[]");
    s_check_repr(dmp_list_range(5, 2), "[]");
    s_check_repr(dmp_list_range(-2, 3), "[-2, -1, 0, 1, 2]");
    s_check_repr(dmp_list_range(INT64_MAX - 1, INT64_MAX),
                 "[9223372036854775806]");
    s_check_repr(dmp_list_range(INT64_MIN, INT64_MIN + 1),
                 "[-9223372036854775808]");
    /* 2**64 - 1 items cannot be allocated: NULL, nothing leaked. */
    assert_null(dmp_list_range(INT64_MIN, INT64_MAX));
}

static void
test_list_of_with_a_null_item_frees_the_others(void **state)
{
    (void)state;
    /* Under valgrind: the int, the str and the nested list are freed. */
    assert_null(dmp_list_of(4, dmp_int(1), NULL, dmp_str("x"),
                            dmp_list_of(1, dmp_str("y"))));
    assert_null(dmp_list_of(2, dmp_int(1), NULL));
    assert_null(dmp_list_of(1, NULL));
    s_check_repr(dmp_list_of(0), "[]");
}

/* ---- dicts ------------------------------------------------------------- */

static void
test_map_replacing_a_key_keeps_its_place(void **state)
{
    (void)state;
    dmp_value_t *m = dmp_map();
    assert_int_equal(dmp_map_set_str(m, "a", dmp_int(1)), 0);
    assert_int_equal(dmp_map_set_str(m, "b", dmp_int(2)), 0);
    assert_int_equal(dmp_map_set_str(m, "c", dmp_int(3)), 0);
    assert_int_equal(dmp_map_set_str(m, "b", dmp_int(20)), 0);
    assert_int_equal(dmp_value_len(m), 3);
    assert_string_equal(s_repr(m), "{'a': 1, 'b': 20, 'c': 3}");
    assert_string_equal(dmp_value_str(dmp_map_key_at(m, 1), NULL), "b");
    int64_t x;
    assert_int_equal(dmp_value_get_int(dmp_map_item_at(m, 1), &x), 0);
    assert_int_equal(x, 20);
    assert_null(dmp_map_key_at(m, 3));
    assert_null(dmp_map_item_at(m, 3));
    dmp_value_destroy(&m);

    /* As Python: d = {1: 'a'}; d[True] = 'b'; d[1.0] = 'c' -> {1: 'c'} */
    m = dmp_map();
    assert_int_equal(dmp_map_set(m, dmp_int(1), dmp_str("a")), 0);
    assert_int_equal(dmp_map_set(m, dmp_bool(1), dmp_str("b")), 0);
    assert_int_equal(dmp_map_set(m, dmp_double(1.0), dmp_str("c")), 0);
    assert_string_equal(s_repr(m), "{1: 'c'}");
    assert_int_equal(dmp_value_type(dmp_map_key_at(m, 0)), DMP_VALUE_INT);
    dmp_value_destroy(&m);
}

static void
test_map_get_and_del_find_keys_like_python(void **state)
{
    (void)state;
    dmp_value_t *m = dmp_map();
    assert_int_equal(dmp_map_set_str(m, "a", dmp_int(1)), 0);
    assert_int_equal(dmp_map_set(m, dmp_int(2), dmp_str("two")), 0);
    assert_int_equal(dmp_map_set(m, dmp_bytes("a", 1), dmp_str("bytes")),
                     0);
    assert_int_equal(dmp_map_set(m, dmp_strn("k\0x", 3), dmp_none()), 0);
    assert_int_equal(dmp_map_set_str(m, "z", dmp_int(26)), 0);

    dmp_value_t *k = dmp_double(2.0);
    assert_string_equal(dmp_value_str(dmp_map_get(m, k), NULL), "two");
    dmp_value_destroy(&k);
    k = dmp_bytes("a", 1);
    assert_string_equal(dmp_value_str(dmp_map_get(m, k), NULL), "bytes");
    dmp_value_destroy(&k);
    assert_null(dmp_map_get_str(m, "k")); /* "k\0x" is another key */
    assert_null(dmp_map_get_str(m, "missing"));
    assert_null(dmp_map_get_str(NULL, "a"));
    assert_null(dmp_map_get_str(m, NULL));

    k = dmp_str("a");
    assert_int_equal(dmp_map_del(m, k), 0);
    assert_int_equal(dmp_map_del(m, k), -ENOENT);
    dmp_value_destroy(&k);
    k = dmp_bool(0);
    assert_int_equal(dmp_map_del(m, k), -ENOENT);
    dmp_value_destroy(&k);
    assert_string_equal(s_repr(m), "{2: 'two', b'a': 'bytes', "
                                   "'k\\x00x': None, 'z': 26}");

    dmp_value_t *l = dmp_list();
    assert_int_equal(dmp_map_del(l, l), -EINVAL);
    assert_null(dmp_map_get(l, l));
    assert_int_equal(dmp_map_set_str(l, "a", dmp_int(1)), -EINVAL);
    assert_null(dmp_map_key_at(l, 0));
    dmp_value_destroy(&l);
    dmp_value_destroy(&m);
}

static void
test_map_keys_must_be_scalars(void **state)
{
    (void)state;
    dmp_value_t *m = dmp_map();
    /* Both key and item are freed on every failure (valgrind). */
    assert_int_equal(dmp_map_set(m, dmp_list(), dmp_int(1)), -EINVAL);
    assert_int_equal(dmp_map_set(m, dmp_map(), dmp_int(1)), -EINVAL);
    assert_int_equal(dmp_map_set(m, NULL, dmp_int(1)), -ENOMEM);
    assert_int_equal(dmp_map_set(m, dmp_int(1), NULL), -ENOMEM);
    assert_int_equal(dmp_map_set_str(m, "\xff", dmp_int(1)), -EINVAL);
    assert_int_equal(dmp_map_set_str(m, NULL, dmp_int(1)), -EINVAL);
    assert_int_equal(dmp_map_set(NULL, dmp_int(1), dmp_int(1)), -EINVAL);
    assert_int_equal(dmp_value_len(m), 0);
    /* Every scalar is a key, NaN included (it never finds itself). */
    assert_int_equal(dmp_map_set(m, dmp_none(), dmp_int(0)), 0);
    assert_int_equal(dmp_map_set(m, dmp_double(NAN), dmp_int(1)), 0);
    assert_int_equal(dmp_map_set(m, dmp_double(NAN), dmp_int(2)), 0);
    assert_int_equal(dmp_value_len(m), 3);
    assert_string_equal(s_repr(m), "{None: 0, nan: 1, nan: 2}");
    /* So such a dict is not equal to its own copy; it still travels. */
    dmp_value_t *c = dmp_value_copy(m);
    assert_false(dmp_value_equal(m, c));
    dmp_value_destroy(&c);
    uint8_t *buf;
    size_t len;
    assert_int_equal(dmp_value_encode(m, &buf, &len), 0);
    assert_int_equal(s_decode_or_reject(buf, len), 1);
    dmp_free(buf);
    dmp_value_destroy(&m);
}

/* ---- encoding ---------------------------------------------------------- */

static void
test_value_round_trips_every_type_and_nesting(void **state)
{
    (void)state;
    dmp_value_t *vals[] = {
        dmp_none(),
        dmp_bool(0),
        dmp_bool(1),
        dmp_int(0),
        dmp_int(-1),
        dmp_int(63),
        dmp_int(-64),
        dmp_int(64),
        dmp_int(INT64_MAX),
        dmp_int(INT64_MIN),
        dmp_double(0.0),
        dmp_double(-0.0),
        dmp_double(1e-310),
        dmp_double(INFINITY),
        dmp_double(-1.5e300),
        dmp_str(""),
        dmp_str("héllo 😀"),
        dmp_strn("\0\0", 2),
        dmp_bytes("", 0),
        dmp_bytes("\0\xff", 2),
        dmp_list(),
        dmp_map(),
        dmp_list_range(-300, 300),
        s_sample(),
        dmp_list_of(3, s_sample(), dmp_list_of(1, s_sample()), dmp_map()),
    };
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        assert_non_null(vals[i]);
        s_check_round_trip(vals[i]);
        dmp_value_destroy(&vals[i]);
    }

    /* A long str: its length varint takes three bytes. */
    static char big[100000];
    memset(big, 'x', sizeof big);
    dmp_value_t *v = dmp_strn(big, sizeof big);
    s_check_round_trip(v);
    dmp_value_destroy(&v);

    /* NaN is never equal to itself, so compare its bits instead. */
    v = dmp_double(NAN);
    uint8_t *buf;
    size_t len;
    assert_int_equal(dmp_value_encode(v, &buf, &len), 0);
    dmp_value_t *back;
    assert_int_equal(dmp_value_decode(buf, len, &back), 0);
    double d;
    assert_int_equal(dmp_value_get_double(back, &d), 0);
    assert_true(isnan(d));
    dmp_free(buf);
    dmp_value_destroy(&back);
    dmp_value_destroy(&v);
}

static void
test_value_encoding_is_the_documented_format(void **state)
{
    (void)state;
    static const struct {
        const char *repr; /* what the bytes decode to */
        uint8_t bytes[16];
        size_t len;
    } cases[] = {
        {"None", {0x00}, 1},
        {"False", {0x01}, 1},
        {"True", {0x02}, 1},
        {"0", {0x03, 0x00}, 2},
        {"-1", {0x03, 0x01}, 2},
        {"1", {0x03, 0x02}, 2},
        {"300", {0x03, 0xd8, 0x04}, 3}, /* zigzag 600 */
        {"-9223372036854775808",
         {0x03, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
         11},
        {"9223372036854775807",
         {0x03, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
         11},
        {"1.0", {0x04, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f}, 9},
        {"'hé'", {0x05, 0x03, 'h', 0xc3, 0xa9}, 5},
        {"b'\\x00'", {0x06, 0x01, 0x00}, 3},
        {"[1, None]", {0x07, 0x02, 0x03, 0x02, 0x00}, 5},
        {"{'a': 1}", {0x08, 0x01, 0x05, 0x01, 'a', 0x03, 0x02}, 7},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dmp_value_t *v = NULL;
        assert_int_equal(dmp_value_decode(cases[i].bytes, cases[i].len, &v),
                         0);
        assert_string_equal(s_repr(v), cases[i].repr);
        uint8_t *buf;
        size_t len;
        assert_int_equal(dmp_value_encode(v, &buf, &len), 0);
        assert_int_equal(len, cases[i].len);
        assert_memory_equal(buf, cases[i].bytes, len);
        dmp_free(buf);
        dmp_value_destroy(&v);
    }
}

/* n lists nested in one another, innermost empty: [[[...]]] */
static dmp_value_t *
s_nested_lists(int n)
{
    dmp_value_t *v = dmp_list();
    for (int i = 1; i < n && v; i++)
        v = dmp_list_of(1, v);
    return v;
}

static void
test_value_nesting_is_limited_to_64(void **state)
{
    (void)state;
    uint8_t buf[2 * 70];
    for (int depth = 1; depth <= 66; depth++) {
        /* 07 01 07 01 ... 07 00: depth lists */
        size_t len = 0;
        for (int i = 0; i < depth - 1; i++) {
            buf[len++] = 0x07;
            buf[len++] = 0x01;
        }
        buf[len++] = 0x07;
        buf[len++] = 0x00;
        dmp_value_t *v = NULL;
        if (depth <= 64) {
            assert_int_equal(dmp_value_decode(buf, len, &v), 0);
            dmp_value_destroy(&v);
        } else {
            s_check_rejected(buf, len);
        }

        /* Encode refuses what no peer could decode. */
        v = s_nested_lists(depth);
        assert_non_null(v);
        uint8_t *out = NULL;
        size_t out_len = 0;
        int rc = dmp_value_encode(v, &out, &out_len);
        assert_int_equal(rc, depth <= 64 ? 0 : -EINVAL);
        if (rc == 0) {
            assert_int_equal(out_len, len);
            assert_memory_equal(out, buf, len);
        }
        dmp_free(out);
        dmp_value_destroy(&v);
    }

    /* Dicts count too: {'a': {'a': ... {}}}, 65 deep. */
    uint8_t dict[5 * 64 + 2];
    size_t len = 0;
    for (int i = 0; i < 64; i++) {
        memcpy(dict + len, "\x08\x01\x05\x01" "a", 5);
        len += 5;
    }
    dict[len++] = 0x08;
    dict[len++] = 0x00;
    s_check_rejected(dict, len);
    dmp_value_t *v = NULL;
    assert_int_equal(dmp_value_decode(dict + 5, len - 5, &v), 0); /* 64 */
    dmp_value_destroy(&v);
}

/* ---- decoding hostile input -------------------------------------------- */

static void
test_decode_rejects_every_truncation(void **state)
{
    (void)state;
    dmp_value_t *v = dmp_list_of(2, s_sample(), dmp_double(-1.25));
    assert_non_null(v);
    uint8_t *buf;
    size_t len;
    assert_int_equal(dmp_value_encode(v, &buf, &len), 0);
    for (size_t cut = 0; cut < len; cut++)
        s_check_rejected(buf, cut);
    dmp_free(buf);
    dmp_value_destroy(&v);
}

static void
test_decode_rejects_trailing_bytes(void **state)
{
    (void)state;
    S_REJECT(0x00, 0x00);
    S_REJECT(0x03, 0x02, 0x00);
    S_REJECT(0x07, 0x00, 0x07, 0x00);
    S_REJECT(0x05, 0x01, 'a', 'b');
}

static void
test_decode_rejects_reserved_and_unknown_tags(void **state)
{
    (void)state;
    for (int tag = 9; tag <= 255; tag++) {
        uint8_t buf[] = {(uint8_t)tag, 0x00};
        s_check_rejected(buf, 1);
        s_check_rejected(buf, 2);
        uint8_t in_list[] = {0x07, 0x01, (uint8_t)tag};
        s_check_rejected(in_list, sizeof in_list);
    }
}

static void
test_decode_rejects_bad_varints(void **state)
{
    (void)state;
    /* 11 bytes */
    S_REJECT(0x03, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
             0x80, 0x00);
    /* 10th byte carries bits past 64 */
    S_REJECT(0x03, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
             0x02);
    S_REJECT(0x03, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
             0x7f);
    /* overlong: 0 and 1 written with two bytes */
    S_REJECT(0x03, 0x80, 0x00);
    S_REJECT(0x03, 0x81, 0x00);
    S_REJECT(0x05, 0x80, 0x00);
    /* unterminated */
    S_REJECT(0x03, 0x80);
    S_REJECT(0x07, 0xff);
}

static void
test_decode_rejects_counts_larger_than_the_input(void **state)
{
    (void)state;
    long made;
    dmp__alloc_fail_after(0);
    /* Counts and lengths up to 2**64 - 1: refused before any allocation. */
    S_REJECT(0x07, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
             0x01);
    S_REJECT(0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
             0x01);
    S_REJECT(0x05, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
             0x01, 'a');
    S_REJECT(0x06, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00);
    S_REJECT(0x07, 0x03, 0x00, 0x00);       /* 3 items, 2 bytes */
    S_REJECT(0x08, 0x02, 0x00, 0x00, 0x00); /* 2 pairs, 3 bytes */
    S_REJECT(0x06, 0x03, 0x00, 0x00);
    made = dmp__alloc_fail_after(0);
    assert_int_equal(made, 0);
    /* The float needs all of its 8 bytes. */
    S_REJECT(0x04, 0, 0, 0, 0, 0, 0, 0);
}

static void
test_decode_rejects_invalid_utf8_in_str(void **state)
{
    (void)state;
    S_REJECT(0x05, 0x01, 0xff);
    S_REJECT(0x05, 0x02, 0xc0, 0x80);             /* overlong NUL */
    S_REJECT(0x05, 0x03, 0xed, 0xa0, 0x80);       /* surrogate */
    S_REJECT(0x05, 0x02, 0xe2, 0x82);             /* cut sequence */
    S_REJECT(0x05, 0x03, 0x00, 0xc3, 0x28);       /* after a NUL */
    S_REJECT(0x05, 0x04, 0xf4, 0x90, 0x80, 0x80); /* past U+10FFFF */
    S_REJECT(0x05, 0x01, 0xc3, 0xa9);             /* length cuts it */
    /* The same bytes are fine as bytes, and NUL is fine in a str. */
    static const uint8_t ok1[] = {0x06, 0x01, 0xff};
    static const uint8_t ok2[] = {0x05, 0x03, 'a', 0x00, 'b'};
    dmp_value_t *v = NULL;
    assert_int_equal(dmp_value_decode(ok1, sizeof ok1, &v), 0);
    dmp_value_destroy(&v);
    assert_int_equal(dmp_value_decode(ok2, sizeof ok2, &v), 0);
    assert_string_equal(s_repr(v), "'a\\x00b'");
    dmp_value_destroy(&v);
}

static void
test_decode_rejects_non_scalar_and_duplicate_keys(void **state)
{
    (void)state;
    S_REJECT(0x08, 0x01, 0x07, 0x00, 0x00);             /* {[]: None} */
    S_REJECT(0x08, 0x01, 0x08, 0x00, 0x00);             /* {{}: None} */
    S_REJECT(0x08, 0x01, 0x0a, 0x00, 0x00);             /* reserved */
    S_REJECT(0x08, 0x02, 0x03, 0x02, 0x00, 0x02, 0x00); /* {1:, True:} */
    S_REJECT(0x08, 0x02, 0x05, 0x01, 'a', 0x00, 0x05, 0x01, 'a', 0x01);
    /* 'a' and b'a' are different keys. */
    static const uint8_t ok[] = {0x08, 0x02, 0x05, 0x01, 'a', 0x00,
                                 0x06, 0x01, 'a', 0x01};
    dmp_value_t *v = NULL;
    assert_int_equal(dmp_value_decode(ok, sizeof ok, &v), 0);
    assert_string_equal(s_repr(v), "{'a': None, b'a': False}");
    dmp_value_destroy(&v);
}

/* Appends the encoding of a scalar key to buf. */
static size_t
s_put_key(uint8_t *buf, const dmp_value_t *key)
{
    uint8_t *enc;
    size_t len;
    assert_int_equal(dmp_value_encode(key, &enc, &len), 0);
    memcpy(buf, enc, len);
    dmp_free(enc);
    return len;
}

static void
test_decode_finds_duplicate_keys_in_big_dicts(void **state)
{
    (void)state;
    /* Keys that are equal across types, as Python sees them. */
    dmp_value_t *pool[] = {
        dmp_int(1),           dmp_double(1.0),       dmp_bool(1),
        dmp_int(0),           dmp_double(-0.0),      dmp_bool(0),
        dmp_int(1LL << 53),   dmp_double(0x1p53),    dmp_int((1LL << 53) + 1),
        dmp_int(INT64_MIN),   dmp_double(-0x1p63),   dmp_int(INT64_MAX),
        dmp_double(0x1p63),   dmp_double(0.5),       dmp_double(-0.5),
        dmp_double(INFINITY), dmp_double(-INFINITY), dmp_double(NAN),
        dmp_none(),           dmp_str("a"),          dmp_bytes("a", 1),
        dmp_str(""),          dmp_bytes("", 0),      dmp_strn("a\0", 2),
    };
    const size_t n_pool = sizeof pool / sizeof pool[0];
    for (size_t i = 0; i < n_pool; i++)
        assert_non_null(pool[i]);

    uint64_t seed = 0x5eed0003;
    static uint8_t buf[8192];
    int seen[2] = {0, 0}; /* rounds without and with a duplicate */
    for (int round = 0; round < 3000; round++) {
        /* 20-40 keys: past the pairwise check's limit of 16. A few from
         * the pool, the rest distinct strings "k0", "k1", ... */
        size_t n = 20 + s_rand(&seed) % 21, len = 0;
        const dmp_value_t *keys[40];
        dmp_value_t *fillers[40] = {NULL};
        buf[len++] = 0x08;
        buf[len++] = (uint8_t)n;
        for (size_t i = 0; i < n; i++) {
            if (s_rand(&seed) % 8 == 0) {
                keys[i] = pool[s_rand(&seed) % n_pool];
            } else {
                char name[16];
                snprintf(name, sizeof name, "k%zu", i);
                keys[i] = fillers[i] = dmp_str(name);
            }
            len += s_put_key(buf + len, keys[i]);
            buf[len++] = 0x00; /* item: None */
        }
        int dup = 0;
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < i; j++)
                dup |= dmp_value_equal(keys[i], keys[j]);
        dmp_value_t *v = NULL;
        int rc = dmp_value_decode(buf, len, &v);
        seen[dup]++;
        assert_int_equal(rc, dup ? DMP_EPROTO : 0);
        assert_int_equal(dmp_value_len(v), dup ? 0 : n);
        dmp_value_destroy(&v);
        for (size_t i = 0; i < n; i++)
            dmp_value_destroy(&fillers[i]);
    }
    assert_true(seen[0] > 500 && seen[1] > 500);
    for (size_t i = 0; i < n_pool; i++)
        dmp_value_destroy(&pool[i]);
}

/* Decodes buf: it must be refused, or be a value that encodes back to
 * exactly buf. Returns 1 when it decoded. */
static int
s_decode_or_reject(const uint8_t *buf, size_t len)
{
    dmp_value_t *v = NULL;
    int rc = dmp_value_decode(buf, len, &v);
    if (rc != 0) {
        assert_int_equal(rc, DMP_EPROTO);
        assert_null(v);
        return 0;
    }
    uint8_t *again;
    size_t again_len;
    assert_int_equal(dmp_value_encode(v, &again, &again_len), 0);
    assert_int_equal(again_len, len);
    assert_memory_equal(again, buf, len);
    assert_true(dmp_value_repr(v, NULL, 0) > 0);
    dmp_value_t *c = dmp_value_copy(v);
    assert_non_null(c);
    dmp_free(again);
    dmp_value_destroy(&c);
    dmp_value_destroy(&v);
    return 1;
}

static void
test_decode_survives_random_bytes(void **state)
{
    (void)state;
    uint64_t seed = 0x5eed0001;
    uint8_t buf[64];
    int decoded = 0;
    for (int round = 0; round < 20000; round++) {
        size_t len = s_rand(&seed) % sizeof buf;
        for (size_t i = 0; i < len; i++) {
            uint64_t r = s_rand(&seed);
            /* Mostly small bytes, so tags and counts are often valid. */
            buf[i] = (r & 3) ? (uint8_t)((r >> 8) % 10) : (uint8_t)(r >> 8);
        }
        decoded += s_decode_or_reject(buf, len);
    }
    /* Some must get deep enough to decode, or the test tests nothing. */
    assert_true(decoded > 100);
}

static void
test_decode_survives_mutated_encodings(void **state)
{
    (void)state;
    dmp_value_t *v = s_sample();
    assert_non_null(v);
    uint8_t *orig;
    size_t len;
    assert_int_equal(dmp_value_encode(v, &orig, &len), 0);
    dmp_value_destroy(&v);

    uint64_t seed = 0x5eed0002;
    uint8_t buf[256];
    assert_true(len + 8 <= sizeof buf);
    int decoded = 0;
    for (int round = 0; round < 20000; round++) {
        size_t n = len;
        memcpy(buf, orig, len);
        int edits = 1 + (int)(s_rand(&seed) % 3);
        for (int e = 0; e < edits; e++) {
            uint64_t r = s_rand(&seed);
            size_t at = (size_t)(r >> 16) % n;
            switch (r % 4) {
            case 0: buf[at] ^= (uint8_t)(1u << ((r >> 8) % 8)); break;
            case 1: buf[at] = (uint8_t)(r >> 40); break;
            case 2: /* delete a byte */
                if (n > 1) {
                    memmove(buf + at, buf + at + 1, n - at - 1);
                    n--;
                }
                break;
            default: /* insert a byte */
                if (n < sizeof buf) {
                    memmove(buf + at + 1, buf + at, n - at);
                    buf[at] = (uint8_t)((r >> 40) % 10);
                    n++;
                }
                break;
            }
        }
        decoded += s_decode_or_reject(buf, n);
    }
    assert_true(decoded > 100);
    dmp_free(orig);
}

/* ---- running out of memory --------------------------------------------- */

static void
test_value_fails_cleanly_at_every_allocation(void **state)
{
    (void)state;
    long n;
    for (n = 1;; n++) {
        dmp__alloc_fail_after(n);
        dmp_value_t *v = s_sample(), *back = NULL, *copy = NULL;
        uint8_t *buf = NULL;
        size_t len = 0;
        int rc = v ? 0 : -ENOMEM;
        if (rc == 0)
            rc = dmp_value_encode(v, &buf, &len);
        if (rc == 0)
            rc = dmp_value_decode(buf, len, &back);
        if (rc == 0)
            rc = (copy = dmp_value_copy(back)) ? 0 : -ENOMEM;
        long made = dmp__alloc_fail_after(0);

        if (made >= n) {
            /* The n-th allocation failed: that must show, as -ENOMEM. */
            assert_int_equal(rc, -ENOMEM);
        } else {
            /* Nothing failed: the whole run works; the loop is done. */
            assert_int_equal(rc, 0);
            assert_true(dmp_value_equal(v, back));
            assert_true(dmp_value_equal(copy, v));
        }
        dmp_value_destroy(&copy);
        dmp_value_destroy(&back);
        dmp_value_destroy(&v);
        dmp_free(buf);
        if (made < n)
            break;
    }
    assert_true(n > 20); /* the loop did walk the allocations */
}

static void
test_list_and_map_edits_fail_cleanly_at_every_allocation(void **state)
{
    (void)state;
    long n;
    for (n = 1;; n++) {
        dmp__alloc_fail_after(n);
        dmp_value_t *l = dmp_list(), *m = dmp_map();
        int rc = l && m ? 0 : -ENOMEM;
        for (int i = 0; rc == 0 && i < 10; i++)
            rc = dmp_list_append(l, dmp_int(i));
        for (int i = 0; rc == 0 && i < 10; i++)
            rc = dmp_map_set(m, dmp_int(i % 7), dmp_list_range(0, i));
        if (rc == 0)
            rc = dmp_list_set(l, -1, dmp_value_copy(m));
        long made = dmp__alloc_fail_after(0);
        if (made >= n) {
            assert_int_equal(rc, -ENOMEM);
        } else {
            assert_int_equal(rc, 0);
            assert_int_equal(dmp_value_len(m), 7);
            assert_int_equal(dmp_value_len(l), 10);
        }
        dmp_value_destroy(&l);
        dmp_value_destroy(&m);
        if (made < n)
            break;
    }
    assert_true(n > 20); /* the loop did walk the allocations */
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_value_build_send_and_read_back),
        cmocka_unit_test(test_value_scalars_read_back_and_convert_like_python),
        cmocka_unit_test(test_value_type_names_are_pythons),
        cmocka_unit_test(test_value_str_keeps_its_length_and_embedded_nul),
        cmocka_unit_test(test_value_str_refuses_invalid_utf8),
        cmocka_unit_test(test_value_repr_of_scalars_matches_python),
        cmocka_unit_test(test_value_repr_of_floats_matches_python),
        cmocka_unit_test(test_value_repr_of_str_quotes_and_escapes_like_python),
        cmocka_unit_test(test_value_repr_of_bytes_matches_python),
        cmocka_unit_test(test_value_repr_of_containers_matches_python),
        cmocka_unit_test(test_value_repr_truncates_like_snprintf),
        cmocka_unit_test(test_value_equal_follows_python),
        cmocka_unit_test(test_value_copy_is_deep),
        cmocka_unit_test(test_list_indexes_count_from_the_end_when_negative),
        cmocka_unit_test(test_list_append_grows),
        cmocka_unit_test(test_list_range_is_pythons),
        cmocka_unit_test(test_list_of_with_a_null_item_frees_the_others),
        cmocka_unit_test(test_map_replacing_a_key_keeps_its_place),
        cmocka_unit_test(test_map_get_and_del_find_keys_like_python),
        cmocka_unit_test(test_map_keys_must_be_scalars),
        cmocka_unit_test(test_value_round_trips_every_type_and_nesting),
        cmocka_unit_test(test_value_encoding_is_the_documented_format),
        cmocka_unit_test(test_value_nesting_is_limited_to_64),
        cmocka_unit_test(test_decode_rejects_every_truncation),
        cmocka_unit_test(test_decode_rejects_trailing_bytes),
        cmocka_unit_test(test_decode_rejects_reserved_and_unknown_tags),
        cmocka_unit_test(test_decode_rejects_bad_varints),
        cmocka_unit_test(test_decode_rejects_counts_larger_than_the_input),
        cmocka_unit_test(test_decode_rejects_invalid_utf8_in_str),
        cmocka_unit_test(test_decode_rejects_non_scalar_and_duplicate_keys),
        cmocka_unit_test(test_decode_finds_duplicate_keys_in_big_dicts),
        cmocka_unit_test(test_decode_survives_random_bytes),
        cmocka_unit_test(test_decode_survives_mutated_encodings),
        cmocka_unit_test(test_value_fails_cleanly_at_every_allocation),
        cmocka_unit_test(
            test_list_and_map_edits_fail_cleanly_at_every_allocation),
    };
    return cmocka_run_group_tests_name("dmp_value", tests, NULL, NULL);
}
