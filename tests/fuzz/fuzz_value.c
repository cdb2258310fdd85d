/*
 * fuzz_value.c - dmp_value_decode: process arguments, queue items and
 * results, from any process of the cluster.
 *
 * Promises checked (dmp.h, the format comment of dmp_value.c):
 *   - a rejected buffer gives DMP_EPROTO (or -ENOMEM) and no value;
 *   - an accepted one holds the invariants: str is valid UTF-8, handles
 *     are 1..1024 bytes, dict keys are scalars and pairwise unequal
 *     under Python's == (NaN equal to nothing);
 *   - the encoding is canonical: what decodes re-encodes to the very
 *     same bytes, and a copy compares equal and encodes the same;
 *   - repr never overruns and is the same text at any buffer size;
 *   - failing any one allocation of the decode (chosen from the input)
 *     gives -ENOMEM, no value and no leak.
 */
#define _GNU_SOURCE
#include "fuzz.h"

#include "dmp_impl.h"

#include <math.h>
#include <string.h>

/* Dicts at most this big get the quadratic duplicate-key check. */
#define S_VALUE_PAIRWISE_MAX 256

static bool
s_value_is_nan(const dmp_value_t *v)
{
    double d;
    return dmp_value_type(v) == DMP_VALUE_DOUBLE &&
           dmp_value_get_double(v, &d) == 0 && isnan(d);
}

/* Walks the tree: invariants of every node; *has_nan when a NaN is
 * anywhere (a copy of it is then not equal: NaN != NaN). */
static void
s_value_check_tree(const dmp_value_t *v, int depth, bool *has_nan)
{
    FUZZ_CHECK(depth <= 64, "nested deeper than decode allows");
    size_t len = 0;
    switch (dmp_value_type(v)) {
    case DMP_VALUE_NONE:
    case DMP_VALUE_BOOL:
    case DMP_VALUE_INT:
        break;
    case DMP_VALUE_DOUBLE:
        if (s_value_is_nan(v))
            *has_nan = true;
        break;
    case DMP_VALUE_STR: {
        const char *s = dmp_value_str(v, &len);
        FUZZ_CHECK(s && s[len] == '\0', "str not NUL-terminated");
        for (const char *p = s; p < s + len; p += strlen(p) + 1)
            FUZZ_CHECK(dmp__utf8_valid(p), "str not UTF-8");
        break;
    }
    case DMP_VALUE_BYTES:
        FUZZ_CHECK(dmp_value_bytes(v, &len) != NULL, "bytes data");
        break;
    case DMP_VALUE_HANDLE:
        FUZZ_CHECK(dmp__handle_data(v, &len) != NULL && len >= 1 &&
                       len <= 1024,
                   "handle of %zu bytes", len);
        break;
    case DMP_VALUE_LIST:
        len = dmp_value_len(v);
        for (size_t i = 0; i < len; i++) {
            const dmp_value_t *item = dmp_list_get(v, (int64_t)i);
            FUZZ_CHECK(item != NULL, "list item %zu", i);
            s_value_check_tree(item, depth + 1, has_nan);
        }
        break;
    case DMP_VALUE_MAP:
        len = dmp_value_len(v);
        for (size_t i = 0; i < len; i++) {
            const dmp_value_t *key = dmp_map_key_at(v, i);
            const dmp_value_t *item = dmp_map_item_at(v, i);
            FUZZ_CHECK(key && item, "pair %zu", i);
            dmp_value_type_t kt = dmp_value_type(key);
            FUZZ_CHECK(kt != DMP_VALUE_LIST && kt != DMP_VALUE_MAP &&
                           kt != DMP_VALUE_HANDLE,
                       "dict key of type %s", dmp_value_type_name(kt));
            s_value_check_tree(key, depth + 1, has_nan);
            s_value_check_tree(item, depth + 1, has_nan);
            /* Unique keys: each key finds its own item, and no earlier
             * key equals it. */
            if (s_value_is_nan(key))
                continue;
            FUZZ_CHECK(dmp_map_get(v, key) == item,
                       "dict key %zu finds another pair", i);
            if (len <= S_VALUE_PAIRWISE_MAX)
                for (size_t j = 0; j < i; j++)
                    FUZZ_CHECK(!dmp_value_equal(dmp_map_key_at(v, j), key),
                               "dict keys %zu and %zu are equal", j, i);
        }
        break;
    default:
        FUZZ_CHECK(0, "unknown type %d", (int)dmp_value_type(v));
    }
}

/* repr at full size, then into a buffer cut somewhere: same text, cut. */
static void
s_value_check_repr(const dmp_value_t *v, uint64_t h)
{
    int n = dmp_value_repr(v, NULL, 0);
    FUZZ_CHECK(n >= 0, "repr length %d", n);
    char *full = malloc((size_t)n + 1);
    FUZZ_CHECK(full != NULL, "out of memory");
    FUZZ_CHECK(dmp_value_repr(v, full, (size_t)n + 1) == n, "repr length");
    FUZZ_CHECK(strlen(full) == (size_t)n, "repr holds a NUL");
    FUZZ_CHECK(dmp__utf8_valid(full), "repr not UTF-8");
    size_t cut = (size_t)(h % ((uint64_t)n + 1)) + 1; /* 1 .. n+1 */
    char *part = malloc(cut);
    FUZZ_CHECK(part != NULL, "out of memory");
    FUZZ_CHECK(dmp_value_repr(v, part, cut) == n, "cut repr length");
    FUZZ_CHECK(strlen(part) == cut - 1 && memcmp(part, full, cut - 1) == 0,
               "cut repr differs");
    free(part);
    free(full);
}

FUZZ_TARGET(value)
{
    if (size == 0)
        data = (const uint8_t *)""; /* decode asserts buf || len == 0 */
    dmp_value_t *v = NULL;
    dmp__alloc_fail_after(0);
    int rc = dmp_value_decode(data, size, &v);
    long allocs = dmp__alloc_fail_after(0);
    if (rc != 0) {
        FUZZ_CHECK(rc == DMP_EPROTO || rc == -ENOMEM, "rc %d", rc);
        FUZZ_CHECK(v == NULL, "rejected but a value came out");
    } else {
        FUZZ_CHECK(v != NULL, "accepted but no value");
        bool has_nan = false;
        s_value_check_tree(v, 0, &has_nan);

        uint8_t *buf = NULL;
        size_t len = 0;
        rc = dmp_value_encode(v, &buf, &len);
        FUZZ_CHECK(rc == 0, "re-encode: %s", dmp_strerror(rc));
        FUZZ_CHECK(len == size && memcmp(buf, data, size) == 0,
                   "not canonical: %zu bytes re-encode to %zu other bytes",
                   size, len);
        dmp_free(buf);

        dmp_value_t *copy = dmp_value_copy(v);
        FUZZ_CHECK(copy != NULL, "copy failed");
        FUZZ_CHECK(has_nan || dmp_value_equal(v, copy), "copy not equal");
        rc = dmp_value_encode(copy, &buf, &len);
        FUZZ_CHECK(rc == 0 && len == size && memcmp(buf, data, size) == 0,
                   "copy encodes differently");
        dmp_free(buf);
        dmp_value_destroy(&copy);

        s_value_check_repr(v, fuzz_hash(data, size));
        dmp_value_destroy(&v);
        FUZZ_CHECK(v == NULL, "destroy did not null");
    }

    /* The same buffer with one of its allocations failing. */
    if (allocs > 0) {
        long nth = 1 + (long)(fuzz_hash(data, size) % (uint64_t)allocs);
        dmp__alloc_fail_after(nth);
        int rc2 = dmp_value_decode(data, size, &v);
        dmp__alloc_fail_after(0);
        if (rc2 != 0) {
            FUZZ_CHECK(rc2 == DMP_EPROTO || rc2 == -ENOMEM, "rc %d", rc2);
            FUZZ_CHECK(v == NULL, "failed but a value came out");
            FUZZ_CHECK(rc != 0 || rc2 == -ENOMEM,
                       "valid input rejected when allocation %ld of %ld "
                       "failed: %s",
                       nth, allocs, dmp_strerror(rc2));
        } else {
            dmp_value_destroy(&v);
        }
    }
    return 0;
}
