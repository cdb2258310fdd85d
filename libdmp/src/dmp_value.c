/*
 * dmp_value.c - dmp values: the C form of the Python objects dmp carries.
 *
 * A value is a tagged struct. Scalars (None, bool, int, float) live in the
 * struct. A str or bytes keeps its bytes in the same allocation, right
 * after the struct, followed by a NUL that len does not count: a str may
 * contain NUL and can still be handed out as a C string. A list owns a
 * growable array of items; a dict owns an insertion-ordered array of
 * key/item pairs, and every key lookup goes through s_map_find (a linear
 * scan today; it can become a hash without touching its callers).
 *
 * Invariants: values are trees (a container owns its items: no sharing, no
 * cycles); a str always holds valid UTF-8; dict keys are scalars and no two
 * keys of one dict are equal under Python's == (1, 1.0 and True are one
 * key; a NaN key never equals anything, as distinct float('nan') objects
 * in Python). Every allocation goes through dmp__malloc and friends, and
 * every failure leaves the values involved as they were, or destroyed when
 * the function took ownership of them. Reading never changes a value (no
 * caches), so threads may read one value at once; changes need a lock.
 *
 * Costs an attacker controls: decoding is linear in the input apart from
 * the duplicate-key check of each dict, which sorts (O(n log n)) rather
 * than calling s_map_find per key. Everything else recurses as deep as
 * the tree, which decode and encode bound to S_DEPTH_MAX; trees built
 * through the API deeper than that work, but cost stack in proportion.
 *
 * Encoding (dmp_value_encode/decode), independent of the host:
 *
 *   value := tag:u8 payload
 *     0 None      1 False      2 True
 *     3 int       zigzag(i) as a varint
 *     4 float     8 bytes, IEEE 754 binary64, little-endian
 *     5 str       varint byte length, then that many bytes of UTF-8
 *     6 bytes     varint length, then the bytes
 *     7 list      varint count, then count values
 *     8 dict      varint count, then count (key, item) pairs; keys are
 *                 scalars (tags 0-6) and pairwise unequal
 *     9 handle    varint length, then an opaque handle of a shared object
 *                 (a queue, a pipe end; read by its own module), at most
 *                 S_HANDLE_MAX bytes
 *     10-15       reserved
 *   varint := unsigned LEB128: 7 bits a byte, least significant first, the
 *             high bit set on every byte but the last; 1 to 10 bytes, fits
 *             in 64 bits, canonical (no needless trailing zero group)
 *
 * Containers nest at most S_DEPTH_MAX deep. The decoder accepts exactly
 * what the encoder writes (one value, nothing after it), so a buffer that
 * decodes re-encodes to the same bytes.
 */
#include "dmp_impl.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Containers on any path from the root, counting the root. Bounds the
 * decoder's recursion; encode refuses deeper trees, since no peer could
 * read them. */
#define S_DEPTH_MAX 64
/* Items a decoder reserves up front, whatever the count says: memory then
 * grows with the items actually read, not with a count an attacker
 * chose (64 nested lists each claiming a million items stay cheap). */
#define S_DECODE_RESERVE_MAX 1024
/* Largest handle payload: a node name, ids, segment names. */
#define S_HANDLE_MAX 1024

enum {
    S_TAG_NONE = 0,
    S_TAG_FALSE = 1,
    S_TAG_TRUE = 2,
    S_TAG_INT = 3,
    S_TAG_DOUBLE = 4,
    S_TAG_STR = 5,
    S_TAG_BYTES = 6,
    S_TAG_LIST = 7,
    S_TAG_DICT = 8,
    S_TAG_HANDLE = 9,
};

typedef struct {
    dmp_value_t *key;  /* a scalar; owned */
    dmp_value_t *item; /* owned */
} s_pair_t;

struct dmp_value {
    dmp_value_type_t type;
    union {
        bool b;    /* DMP_VALUE_BOOL */
        int64_t i; /* DMP_VALUE_INT */
        double d;  /* DMP_VALUE_DOUBLE */
        struct {
            char *data; /* just after the struct, NUL-terminated */
            size_t len; /* bytes, not counting that NUL */
        } buf;          /* DMP_VALUE_STR, DMP_VALUE_BYTES, DMP_VALUE_HANDLE */
        struct {
            dmp_value_t **items; /* owned, as is each item */
            size_t len, cap;
        } list; /* DMP_VALUE_LIST */
        struct {
            s_pair_t *pairs; /* insertion order */
            size_t len, cap;
        } map; /* DMP_VALUE_MAP */
    } u;
};

_Static_assert(sizeof(double) == 8 && sizeof(uint64_t) == 8,
               "the float encoding copies a double into a uint64_t");

/* ---- constructors ---------------------------------------------------- */

/* malloc, not calloc: glibc's calloc bypasses the per-thread cache that
 * malloc and free use, and a value is made and freed for every item a
 * pool or queue moves (an int's decode, copy and free took 860
 * instructions with calloc). */
static dmp_value_t *
s_new(dmp_value_type_t type)
{
    dmp_value_t *v = dmp__malloc(sizeof *v);
    if (v)
        *v = (dmp_value_t){.type = type};
    return v;
}

/* A str or bytes holding a copy of data, in one allocation. */
static dmp_value_t *
s_new_buf(dmp_value_type_t type, const void *data, size_t len)
{
    if (len > SIZE_MAX - sizeof(dmp_value_t) - 1)
        return NULL;
    dmp_value_t *v = dmp__malloc(sizeof *v + len + 1);
    if (!v)
        return NULL;
    memset(v, 0, sizeof *v);
    v->type = type;
    v->u.buf.data = (char *)(v + 1);
    v->u.buf.len = len;
    if (len)
        memcpy(v->u.buf.data, data, len);
    v->u.buf.data[len] = '\0';
    return v;
}

/* UTF-8 check of s[0..len), where s[len] is NUL and s may hold more NULs:
 * dmp__utf8_valid checks one NUL-terminated run at a time (it never reads
 * past a NUL, so a sequence cut by one fails there). */
static bool
s_text_valid(const char *s, size_t len)
{
    return dmp__utf8_valid_n(s, len);
}

dmp_value_t *
dmp_none(void)
{
    return s_new(DMP_VALUE_NONE);
}

dmp_value_t *
dmp_bool(int b)
{
    dmp_value_t *v = s_new(DMP_VALUE_BOOL);
    if (v)
        v->u.b = b != 0;
    return v;
}

dmp_value_t *
dmp_int(int64_t i)
{
    dmp_value_t *v = s_new(DMP_VALUE_INT);
    if (v)
        v->u.i = i;
    return v;
}

dmp_value_t *
dmp_double(double d)
{
    dmp_value_t *v = s_new(DMP_VALUE_DOUBLE);
    if (v)
        v->u.d = d;
    return v;
}

dmp_value_t *
dmp_str(const char *s)
{
    return s ? dmp_strn(s, strlen(s)) : NULL;
}

dmp_value_t *
dmp_strn(const char *s, size_t len)
{
    if (!s)
        return NULL;
    dmp_value_t *v = s_new_buf(DMP_VALUE_STR, s, len);
    if (v && !s_text_valid(v->u.buf.data, len))
        dmp_value_destroy(&v);
    return v;
}

dmp_value_t *
dmp_bytes(const void *data, size_t len)
{
    if (!data && len)
        return NULL;
    return s_new_buf(DMP_VALUE_BYTES, data, len);
}

dmp_value_t *
dmp_list(void)
{
    return s_new(DMP_VALUE_LIST);
}

dmp_value_t *
dmp_map(void)
{
    return s_new(DMP_VALUE_MAP);
}

/* Room for `want` items; grows by doubling so appends are amortised O(1). */
static int
s_list_reserve(dmp_value_t *list, size_t want)
{
    if (want <= list->u.list.cap)
        return 0;
    size_t cap = list->u.list.cap ? list->u.list.cap * 2 : 4;
    if (cap < want)
        cap = want;
    if (cap > SIZE_MAX / sizeof(dmp_value_t *))
        return -ENOMEM;
    dmp_value_t **items =
        dmp__realloc(list->u.list.items, cap * sizeof *items);
    if (!items)
        return -ENOMEM;
    list->u.list.items = items;
    list->u.list.cap = cap;
    return 0;
}

/* Appends item (not NULL). On failure item is still the caller's. */
static int
s_list_push(dmp_value_t *list, dmp_value_t *item)
{
    int rc = s_list_reserve(list, list->u.list.len + 1);
    if (rc == 0)
        list->u.list.items[list->u.list.len++] = item;
    return rc;
}

dmp_value_t *
dmp_list_of(size_t n, ...)
{
    dmp_value_t *list = dmp_list();
    bool ok = list && s_list_reserve(list, n) == 0;
    va_list ap;
    va_start(ap, n);
    /* Every argument is read even after a failure: each must be freed. */
    for (size_t i = 0; i < n; i++) {
        dmp_value_t *item = va_arg(ap, dmp_value_t *);
        if (!item)
            ok = false;
        if (ok)
            list->u.list.items[list->u.list.len++] = item;
        else
            dmp_value_destroy(&item);
    }
    va_end(ap);
    if (!ok)
        dmp_value_destroy(&list);
    return list;
}

dmp_value_t *
dmp_list_range(int64_t start, int64_t stop)
{
    dmp_value_t *list = dmp_list();
    if (!list || stop <= start)
        return list;
    /* Unsigned: stop - start may not fit in an int64_t. */
    uint64_t n = (uint64_t)stop - (uint64_t)start;
    if (n > SIZE_MAX || s_list_reserve(list, (size_t)n) != 0) {
        dmp_value_destroy(&list);
        return NULL;
    }
    for (uint64_t k = 0; k < n; k++) {
        dmp_value_t *item = dmp_int((int64_t)((uint64_t)start + k));
        if (!item) {
            dmp_value_destroy(&list);
            return NULL;
        }
        list->u.list.items[list->u.list.len++] = item;
    }
    return list;
}

/* ---- destroy, copy, equal -------------------------------------------- */

void
dmp_value_destroy(dmp_value_t **v_p)
{
    if (!v_p || !*v_p)
        return;
    dmp_value_t *v = *v_p;
    *v_p = NULL;
    if (v->type == DMP_VALUE_LIST) {
        for (size_t i = 0; i < v->u.list.len; i++)
            dmp_value_destroy(&v->u.list.items[i]);
        dmp__free(v->u.list.items);
    } else if (v->type == DMP_VALUE_MAP) {
        for (size_t i = 0; i < v->u.map.len; i++) {
            dmp_value_destroy(&v->u.map.pairs[i].key);
            dmp_value_destroy(&v->u.map.pairs[i].item);
        }
        dmp__free(v->u.map.pairs);
    }
    dmp__free(v);
}

static int
s_map_reserve(dmp_value_t *map, size_t want)
{
    if (want <= map->u.map.cap)
        return 0;
    size_t cap = map->u.map.cap ? map->u.map.cap * 2 : 4;
    if (cap < want)
        cap = want;
    if (cap > SIZE_MAX / sizeof(s_pair_t))
        return -ENOMEM;
    s_pair_t *pairs = dmp__realloc(map->u.map.pairs, cap * sizeof *pairs);
    if (!pairs)
        return -ENOMEM;
    map->u.map.pairs = pairs;
    map->u.map.cap = cap;
    return 0;
}

dmp_value_t *
dmp_value_copy(const dmp_value_t *v)
{
    if (!v)
        return NULL;
    dmp_value_t *c;
    switch (v->type) {
    case DMP_VALUE_STR:
    case DMP_VALUE_BYTES:
    case DMP_VALUE_HANDLE:
        return s_new_buf(v->type, v->u.buf.data, v->u.buf.len);
    case DMP_VALUE_LIST:
        c = dmp_list();
        if (!c || s_list_reserve(c, v->u.list.len) != 0)
            goto fail;
        for (size_t i = 0; i < v->u.list.len; i++) {
            dmp_value_t *item = dmp_value_copy(v->u.list.items[i]);
            if (!item)
                goto fail;
            c->u.list.items[c->u.list.len++] = item;
        }
        return c;
    case DMP_VALUE_MAP:
        c = dmp_map();
        if (!c || s_map_reserve(c, v->u.map.len) != 0)
            goto fail;
        for (size_t i = 0; i < v->u.map.len; i++) {
            s_pair_t pair = {dmp_value_copy(v->u.map.pairs[i].key),
                             dmp_value_copy(v->u.map.pairs[i].item)};
            if (!pair.key || !pair.item) {
                dmp_value_destroy(&pair.key);
                dmp_value_destroy(&pair.item);
                goto fail;
            }
            c->u.map.pairs[c->u.map.len++] = pair;
        }
        return c;
    default:
        c = s_new(v->type);
        if (c)
            c->u = v->u;
        return c;
    }
fail:
    dmp_value_destroy(&c);
    return NULL;
}

static bool
s_is_number(const dmp_value_t *v)
{
    return v->type == DMP_VALUE_BOOL || v->type == DMP_VALUE_INT ||
           v->type == DMP_VALUE_DOUBLE;
}

static bool
s_is_scalar(const dmp_value_t *v)
{
    return v->type != DMP_VALUE_LIST && v->type != DMP_VALUE_MAP &&
           v->type != DMP_VALUE_HANDLE;
}

/* Sign of i - d, exactly: Python compares an int and a float without
 * rounding the int to a double (2**53 + 1 != float(2**53)). d not NaN. */
static int
s_cmp_int_double(int64_t i, double d)
{
    if (d >= 0x1p63)
        return -1;
    if (d < -0x1p63)
        return 1;
    int64_t t = (int64_t)d; /* truncated; exact, as is d - t below */
    if (i != t)
        return i < t ? -1 : 1;
    double frac = d - (double)t;
    return frac > 0 ? -1 : frac < 0 ? 1 : 0;
}

static bool
s_number_equal(const dmp_value_t *a, const dmp_value_t *b)
{
    bool a_int = a->type != DMP_VALUE_DOUBLE;
    bool b_int = b->type != DMP_VALUE_DOUBLE;
    int64_t ai = a->type == DMP_VALUE_BOOL ? a->u.b : a->u.i;
    int64_t bi = b->type == DMP_VALUE_BOOL ? b->u.b : b->u.i;
    if (a_int && b_int)
        return ai == bi;
    if (!a_int && !b_int)
        return a->u.d == b->u.d;
    double d = a_int ? b->u.d : a->u.d;
    return !isnan(d) && s_cmp_int_double(a_int ? ai : bi, d) == 0;
}

static bool s_map_find(const dmp_value_t *map, const dmp_value_t *key,
                       size_t *at);

static bool
s_equal(const dmp_value_t *a, const dmp_value_t *b)
{
    if (s_is_number(a) && s_is_number(b))
        return s_number_equal(a, b);
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case DMP_VALUE_NONE:
        return true;
    case DMP_VALUE_STR:
    case DMP_VALUE_BYTES:
    case DMP_VALUE_HANDLE:
        return a->u.buf.len == b->u.buf.len &&
               memcmp(a->u.buf.data, b->u.buf.data, a->u.buf.len) == 0;
    case DMP_VALUE_LIST:
        if (a->u.list.len != b->u.list.len)
            return false;
        for (size_t i = 0; i < a->u.list.len; i++)
            if (!s_equal(a->u.list.items[i], b->u.list.items[i]))
                return false;
        return true;
    case DMP_VALUE_MAP:
        /* Keys are unique on both sides, so same size and every key of a
         * found in b with an equal item means equal dicts. */
        if (a->u.map.len != b->u.map.len)
            return false;
        for (size_t i = 0; i < a->u.map.len; i++) {
            size_t at;
            if (!s_map_find(b, a->u.map.pairs[i].key, &at) ||
                !s_equal(a->u.map.pairs[i].item, b->u.map.pairs[at].item))
                return false;
        }
        return true;
    default:
        return false;
    }
}

int
dmp_value_equal(const dmp_value_t *a, const dmp_value_t *b)
{
    if (!a || !b)
        return a == b;
    return s_equal(a, b);
}

/* ---- type and scalar access ------------------------------------------ */

dmp_value_type_t
dmp_value_type(const dmp_value_t *v)
{
    assert(v);
    return v->type;
}

const char *
dmp_value_type_name(dmp_value_type_t type)
{
    switch (type) {
    case DMP_VALUE_NONE: return "NoneType";
    case DMP_VALUE_BOOL: return "bool";
    case DMP_VALUE_INT: return "int";
    case DMP_VALUE_DOUBLE: return "float";
    case DMP_VALUE_STR: return "str";
    case DMP_VALUE_BYTES: return "bytes";
    case DMP_VALUE_LIST: return "list";
    case DMP_VALUE_MAP: return "dict";
    case DMP_VALUE_HANDLE: return "handle";
    }
    return "unknown";
}

/* The getters accept NULL (as "not that type") so that borrowed lookups
 * chain: dmp_value_get_int(dmp_map_get_str(m, "n"), &n). */
int
dmp_value_get_bool(const dmp_value_t *v, int *out)
{
    if (!v || v->type != DMP_VALUE_BOOL)
        return -EINVAL;
    *out = v->u.b;
    return 0;
}

int
dmp_value_get_int(const dmp_value_t *v, int64_t *out)
{
    if (v && v->type == DMP_VALUE_INT)
        *out = v->u.i;
    else if (v && v->type == DMP_VALUE_BOOL)
        *out = v->u.b;
    else
        return -EINVAL;
    return 0;
}

int
dmp_value_get_double(const dmp_value_t *v, double *out)
{
    if (v && v->type == DMP_VALUE_DOUBLE)
        *out = v->u.d;
    else if (v && v->type == DMP_VALUE_INT)
        *out = (double)v->u.i;
    else if (v && v->type == DMP_VALUE_BOOL)
        *out = v->u.b;
    else
        return -EINVAL;
    return 0;
}

const char *
dmp_value_str(const dmp_value_t *v, size_t *len_p)
{
    if (!v || v->type != DMP_VALUE_STR)
        return NULL;
    if (len_p)
        *len_p = v->u.buf.len;
    return v->u.buf.data;
}

const void *
dmp_value_bytes(const dmp_value_t *v, size_t *len_p)
{
    if (!v || v->type != DMP_VALUE_BYTES)
        return NULL;
    if (len_p)
        *len_p = v->u.buf.len;
    return v->u.buf.data;
}

size_t
dmp_value_len(const dmp_value_t *v)
{
    if (!v)
        return 0;
    switch (v->type) {
    case DMP_VALUE_STR:
    case DMP_VALUE_BYTES: return v->u.buf.len;
    case DMP_VALUE_LIST: return v->u.list.len;
    case DMP_VALUE_MAP: return v->u.map.len;
    default: return 0;
    }
}

/* ---- lists ----------------------------------------------------------- */

/* Python's index rule: negative counts from the end. */
static bool
s_list_index(const dmp_value_t *list, int64_t i, size_t *at)
{
    int64_t n = (int64_t)list->u.list.len;
    if (i < 0)
        i += n;
    if (i < 0 || i >= n)
        return false;
    *at = (size_t)i;
    return true;
}

dmp_value_t *
dmp_list_get(const dmp_value_t *list, int64_t i)
{
    size_t at;
    if (!list || list->type != DMP_VALUE_LIST || !s_list_index(list, i, &at))
        return NULL;
    return list->u.list.items[at];
}

int
dmp_list_append(dmp_value_t *list, dmp_value_t *item)
{
    int rc;
    if (!list || list->type != DMP_VALUE_LIST)
        rc = -EINVAL;
    else if (!item)
        rc = -ENOMEM; /* a nested constructor failed */
    else {
        assert(item != list); /* a value cannot contain itself */
        rc = s_list_push(list, item);
    }
    if (rc != 0)
        dmp_value_destroy(&item);
    return rc;
}

int
dmp_list_set(dmp_value_t *list, int64_t i, dmp_value_t *item)
{
    int rc = 0;
    size_t at = 0;
    if (!list || list->type != DMP_VALUE_LIST)
        rc = -EINVAL;
    else if (!item)
        rc = -ENOMEM;
    else if (!s_list_index(list, i, &at))
        rc = -ERANGE;
    if (rc != 0) {
        dmp_value_destroy(&item);
        return rc;
    }
    assert(item != list);
    dmp_value_destroy(&list->u.list.items[at]);
    list->u.list.items[at] = item;
    return 0;
}

/* ---- dicts ----------------------------------------------------------- */

/*
 * The index of the pair whose key equals key (Python's ==), in *at.
 * The one place keys are looked up, so a hash index can replace the scan
 * here alone (it would hash 1, 1.0 and True alike, as Python does).
 */
static bool
s_map_find(const dmp_value_t *map, const dmp_value_t *key, size_t *at)
{
    for (size_t i = 0; i < map->u.map.len; i++) {
        if (s_equal(map->u.map.pairs[i].key, key)) {
            *at = i;
            return true;
        }
    }
    return false;
}

int
dmp_map_set(dmp_value_t *map, dmp_value_t *key, dmp_value_t *item)
{
    int rc = 0;
    size_t at;
    if (!map || map->type != DMP_VALUE_MAP)
        rc = -EINVAL;
    else if (!key || !item)
        rc = -ENOMEM; /* a nested constructor failed */
    else if (!s_is_scalar(key))
        rc = -EINVAL;
    if (rc != 0) {
        dmp_value_destroy(&key);
        dmp_value_destroy(&item);
        return rc;
    }
    assert(item != map); /* a value cannot contain itself */
    if (s_map_find(map, key, &at)) {
        /* As in Python the first key stays ({1: 'a'}, then [True] = 'b',
         * gives {1: 'b'}); the item is replaced in place. */
        dmp_value_destroy(&map->u.map.pairs[at].item);
        map->u.map.pairs[at].item = item;
        dmp_value_destroy(&key);
        return 0;
    }
    if ((rc = s_map_reserve(map, map->u.map.len + 1)) != 0) {
        dmp_value_destroy(&key);
        dmp_value_destroy(&item);
        return rc;
    }
    map->u.map.pairs[map->u.map.len++] = (s_pair_t){key, item};
    return 0;
}

int
dmp_map_set_str(dmp_value_t *map, const char *key, dmp_value_t *item)
{
    if (!map || map->type != DMP_VALUE_MAP || !key ||
        !dmp__utf8_valid(key)) {
        dmp_value_destroy(&item);
        return -EINVAL;
    }
    return dmp_map_set(map, dmp_str(key), item);
}

dmp_value_t *
dmp_map_get(const dmp_value_t *map, const dmp_value_t *key)
{
    size_t at;
    if (!map || map->type != DMP_VALUE_MAP || !key ||
        !s_map_find(map, key, &at))
        return NULL;
    return map->u.map.pairs[at].item;
}

dmp_value_t *
dmp_map_get_str(const dmp_value_t *map, const char *key)
{
    if (!key)
        return NULL;
    /* A str on the stack, to look up without allocating. */
    dmp_value_t probe = {.type = DMP_VALUE_STR};
    probe.u.buf.data = (char *)key;
    probe.u.buf.len = strlen(key);
    return dmp_map_get(map, &probe);
}

dmp_value_t *
dmp_map_key_at(const dmp_value_t *map, size_t i)
{
    if (!map || map->type != DMP_VALUE_MAP || i >= map->u.map.len)
        return NULL;
    return map->u.map.pairs[i].key;
}

dmp_value_t *
dmp_map_item_at(const dmp_value_t *map, size_t i)
{
    if (!map || map->type != DMP_VALUE_MAP || i >= map->u.map.len)
        return NULL;
    return map->u.map.pairs[i].item;
}

int
dmp_map_del(dmp_value_t *map, const dmp_value_t *key)
{
    size_t at;
    if (!map || map->type != DMP_VALUE_MAP || !key)
        return -EINVAL;
    if (!s_map_find(map, key, &at))
        return -ENOENT;
    s_pair_t *pairs = map->u.map.pairs;
    dmp_value_destroy(&pairs[at].key);
    dmp_value_destroy(&pairs[at].item);
    memmove(&pairs[at], &pairs[at + 1],
            (map->u.map.len - at - 1) * sizeof *pairs);
    map->u.map.len--;
    return 0;
}

/* ---- repr ------------------------------------------------------------ */

/* snprintf-style output: writes what fits, counts everything. */
typedef struct {
    char *buf;   /* the caller's; may be NULL when size is 0 */
    size_t size; /* of buf, room for the NUL included */
    size_t len;  /* bytes the whole text needs so far */
} s_out_t;

static void
s_put(s_out_t *o, const char *s, size_t n)
{
    if (o->size && o->len < o->size - 1) {
        size_t room = o->size - 1 - o->len;
        memcpy(o->buf + o->len, s, n < room ? n : room);
    }
    o->len = n > SIZE_MAX - o->len ? SIZE_MAX : o->len + n;
}

static void
s_puts(s_out_t *o, const char *s)
{
    s_put(o, s, strlen(s));
}

/* Splits printf's "%.*e" text into its significant digits and exponent;
 * only digits and the exponent are read, so a locale's decimal comma
 * cannot get in. Returns the number of digits. */
static int
s_split_sci(const char *text, char *digits, int *exp10)
{
    int n = 0;
    const char *p = text;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9' && n < 20)
            digits[n++] = *p;
    *exp10 = *p == 'e' ? (int)strtol(p + 1, NULL, 10) : 0;
    return n;
}

/*
 * The shortest significant digits that read back exactly to a (finite,
 * > 0), and the decimal exponent of the first one; as Python's repr (David
 * Gay's shortest mode) picks them: fewest digits, then nearest to a.
 * Returns the number of digits, without trailing zeros.
 */
static int
s_shortest_digits(double a, char *digits, int *exp10)
{
    char text[48];
    int n = 0;
    for (int prec = 0; prec < 17; prec++) {
        /* The correctly rounded prec+1 digits: the nearest candidate. */
        snprintf(text, sizeof text, "%.*e", prec, a);
        double back = strtod(text, NULL);
        n = s_split_sci(text, digits, exp10);
        if (back == a)
            break; /* at prec 16 (17 digits) it always does */
        /* The other candidate with as many digits, on a's other side, may
         * still read back to a: next to a power of two the interval that
         * rounds to a is twice as wide above a as below it. */
        digits[n] = '\0';
        uint64_t m = strtoull(digits, NULL, 10);
        m = back < a ? m + 1 : m - 1;
        if (m == 0)
            continue;
        snprintf(text, sizeof text, "%" PRIu64 "e%d", m, *exp10 - prec);
        if (strtod(text, NULL) == a) {
            n = sprintf(digits, "%" PRIu64, m);
            *exp10 += n - (prec + 1); /* 9.99 + 0.01 is 1.000 one up */
            break;
        }
    }
    while (n > 1 && digits[n - 1] == '0')
        n--;
    return n;
}

/*
 * Python's repr of a float into out (at least 32 bytes); returns the
 * length. Laid out as Python's float_repr_style 'short': positional with
 * at least one digit after the point when 1e-4 <= |d| < 1e16, otherwise
 * d[.ddd]e+XX with at least two exponent digits.
 */
static size_t
s_format_double(double d, char *out)
{
    if (isnan(d))
        return (size_t)sprintf(out, "nan");
    if (isinf(d))
        return (size_t)sprintf(out, d > 0 ? "inf" : "-inf");
    char digits[24] = "0";
    int n = 1, exp10 = 0;
    if (d != 0)
        n = s_shortest_digits(fabs(d), digits, &exp10);

    char *o = out;
    if (signbit(d))
        *o++ = '-';
    if (exp10 < -4 || exp10 >= 16) {
        *o++ = digits[0];
        if (n > 1) {
            *o++ = '.';
            memcpy(o, digits + 1, (size_t)n - 1);
            o += n - 1;
        }
        o += sprintf(o, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    } else if (exp10 >= 0) {
        for (int i = 0; i <= exp10; i++)
            *o++ = i < n ? digits[i] : '0';
        *o++ = '.';
        if (n > exp10 + 1) {
            memcpy(o, digits + exp10 + 1, (size_t)(n - exp10 - 1));
            o += n - exp10 - 1;
        } else {
            *o++ = '0';
        }
    } else {
        *o++ = '0';
        *o++ = '.';
        for (int i = 0; i < -exp10 - 1; i++)
            *o++ = '0';
        memcpy(o, digits, (size_t)n);
        o += n;
    }
    *o = '\0';
    return (size_t)(o - out);
}

/*
 * Non-ASCII code points Python's repr escapes: Unicode's Cc, Cf, Zs, Zl,
 * Zp, Co (and Cs), from Python 3.13's unicodedata (Unicode 15.1), plus the
 * noncharacters, which never get assigned (s_printable). Other unassigned
 * code points are kept as is: which ones are unassigned depends on the
 * Python version, so no table could match every Python's repr there.
 */
static const uint32_t s_nonprintable[][2] = {
    {0x80, 0xA0},       {0xAD, 0xAD},       {0x600, 0x605},
    {0x61C, 0x61C},     {0x6DD, 0x6DD},     {0x70F, 0x70F},
    {0x890, 0x891},     {0x8E2, 0x8E2},     {0x1680, 0x1680},
    {0x180E, 0x180E},   {0x2000, 0x200F},   {0x2028, 0x202F},
    {0x205F, 0x2064},   {0x2066, 0x206F},   {0x3000, 0x3000},
    {0xD800, 0xF8FF},   {0xFDD0, 0xFDEF},   {0xFEFF, 0xFEFF},
    {0xFFF9, 0xFFFB},   {0x110BD, 0x110BD}, {0x110CD, 0x110CD},
    {0x13430, 0x1343F}, {0x1BCA0, 0x1BCA3}, {0x1D173, 0x1D17A},
    {0xE0001, 0xE0001}, {0xE0020, 0xE007F}, {0xF0000, 0xFFFFD},
    {0x100000, 0x10FFFD},
};

static bool
s_printable(uint32_t cp)
{
    if ((cp & 0xFFFE) == 0xFFFE) /* U+xFFFE and U+xFFFF of every plane */
        return false;
    size_t lo = 0, hi = sizeof s_nonprintable / sizeof s_nonprintable[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < s_nonprintable[mid][0])
            hi = mid;
        else if (cp > s_nonprintable[mid][1])
            lo = mid + 1;
        else
            return false;
    }
    return true;
}

/* Decodes one code point of text already known to be valid UTF-8. */
static size_t
s_utf8_next(const unsigned char *p, uint32_t *cp)
{
    if (p[0] < 0xE0) {
        *cp = (uint32_t)(p[0] & 0x1F) << 6 | (p[1] & 0x3F);
        return 2;
    }
    if (p[0] < 0xF0) {
        *cp = (uint32_t)(p[0] & 0x0F) << 12 | (uint32_t)(p[1] & 0x3F) << 6 |
              (p[2] & 0x3F);
        return 3;
    }
    *cp = (uint32_t)(p[0] & 0x07) << 18 | (uint32_t)(p[1] & 0x3F) << 12 |
          (uint32_t)(p[2] & 0x3F) << 6 | (p[3] & 0x3F);
    return 4;
}

/* A str or bytes literal as Python writes it: single quotes unless the
 * text has ' and no ", then escapes; bytes escape all of 0x7f-0xff. */
static void
s_repr_text(s_out_t *o, const dmp_value_t *v)
{
    const unsigned char *p = (const unsigned char *)v->u.buf.data;
    const unsigned char *end = p + v->u.buf.len;
    bool bytes = v->type == DMP_VALUE_BYTES;
    char quote = memchr(p, '\'', v->u.buf.len) &&
                         !memchr(p, '"', v->u.buf.len)
                     ? '"'
                     : '\'';
    if (bytes)
        s_put(o, "b", 1);
    s_put(o, &quote, 1);
    while (p < end) {
        uint32_t cp = *p;
        size_t n = 1;
        if (!bytes && cp >= 0x80)
            n = s_utf8_next(p, &cp);
        char esc[16];
        if (cp == (uint32_t)quote || cp == '\\') {
            esc[0] = '\\';
            esc[1] = (char)cp;
            s_put(o, esc, 2);
        } else if (cp == '\t') {
            s_put(o, "\\t", 2);
        } else if (cp == '\n') {
            s_put(o, "\\n", 2);
        } else if (cp == '\r') {
            s_put(o, "\\r", 2);
        } else if (cp >= 0x20 && (cp < 0x7f || (!bytes && cp >= 0x80 &&
                                                s_printable(cp)))) {
            s_put(o, (const char *)p, n);
        } else if (cp <= 0xff) {
            s_put(o, esc, (size_t)sprintf(esc, "\\x%02x", (unsigned)cp));
        } else if (cp <= 0xffff) {
            s_put(o, esc, (size_t)sprintf(esc, "\\u%04x", (unsigned)cp));
        } else {
            s_put(o, esc, (size_t)sprintf(esc, "\\U%08x", (unsigned)cp));
        }
        p += n;
    }
    s_put(o, &quote, 1);
}

static void
s_repr(s_out_t *o, const dmp_value_t *v)
{
    char num[40];
    switch (v->type) {
    case DMP_VALUE_NONE:
        s_puts(o, "None");
        break;
    case DMP_VALUE_BOOL:
        s_puts(o, v->u.b ? "True" : "False");
        break;
    case DMP_VALUE_INT:
        s_put(o, num, (size_t)sprintf(num, "%" PRId64, v->u.i));
        break;
    case DMP_VALUE_DOUBLE:
        s_put(o, num, s_format_double(v->u.d, num));
        break;
    case DMP_VALUE_STR:
    case DMP_VALUE_BYTES:
        s_repr_text(o, v);
        break;
    case DMP_VALUE_HANDLE:
        s_put(o, "<dmp handle>", 12);
        break;
    case DMP_VALUE_LIST:
        s_put(o, "[", 1);
        for (size_t i = 0; i < v->u.list.len; i++) {
            if (i)
                s_put(o, ", ", 2);
            s_repr(o, v->u.list.items[i]);
        }
        s_put(o, "]", 1);
        break;
    case DMP_VALUE_MAP:
        s_put(o, "{", 1);
        for (size_t i = 0; i < v->u.map.len; i++) {
            if (i)
                s_put(o, ", ", 2);
            s_repr(o, v->u.map.pairs[i].key);
            s_put(o, ": ", 2);
            s_repr(o, v->u.map.pairs[i].item);
        }
        s_put(o, "}", 1);
        break;
    }
}

int
dmp_value_repr(const dmp_value_t *v, char *buf, size_t size)
{
    assert(v && (buf || size == 0));
    s_out_t o = {buf, size, 0};
    s_repr(&o, v);
    if (size)
        buf[o.len < size - 1 ? o.len : size - 1] = '\0';
    return o.len > INT_MAX ? -EOVERFLOW : (int)o.len;
}

/* ---- encode ---------------------------------------------------------- */

static size_t
s_varint_len(uint64_t x)
{
    size_t n = 1;
    for (; x >= 0x80; x >>= 7)
        n++;
    return n;
}

static uint8_t *
s_put_varint(uint8_t *p, uint64_t x)
{
    for (; x >= 0x80; x >>= 7)
        *p++ = (uint8_t)(x | 0x80);
    *p++ = (uint8_t)x;
    return p;
}

/* Small magnitudes of either sign get short varints: 0 -1 1 -2 -> 0 1 2 3 */
static uint64_t
s_zigzag(int64_t i)
{
    return i < 0 ? ((uint64_t)~i << 1) | 1 : (uint64_t)i << 1;
}

static int64_t
s_unzigzag(uint64_t u)
{
    return (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
}

static int
s_add_size(size_t *total, size_t n)
{
    if (n > SIZE_MAX - *total)
        return -ENOMEM;
    *total += n;
    return 0;
}

/* Adds v's encoded size to *total. depth: containers above v. -EINVAL
 * when containers nest deeper than S_DEPTH_MAX. */
static int
s_encoded_size(const dmp_value_t *v, int depth, size_t *total)
{
    int rc;
    switch (v->type) {
    case DMP_VALUE_INT:
        return s_add_size(total, 1 + s_varint_len(s_zigzag(v->u.i)));
    case DMP_VALUE_DOUBLE:
        return s_add_size(total, 1 + 8);
    case DMP_VALUE_STR:
    case DMP_VALUE_BYTES:
    case DMP_VALUE_HANDLE:
        rc = s_add_size(total, 1 + s_varint_len(v->u.buf.len));
        return rc ? rc : s_add_size(total, v->u.buf.len);
    case DMP_VALUE_LIST:
        if (depth + 1 > S_DEPTH_MAX)
            return -EINVAL;
        rc = s_add_size(total, 1 + s_varint_len(v->u.list.len));
        for (size_t i = 0; rc == 0 && i < v->u.list.len; i++)
            rc = s_encoded_size(v->u.list.items[i], depth + 1, total);
        return rc;
    case DMP_VALUE_MAP:
        if (depth + 1 > S_DEPTH_MAX)
            return -EINVAL;
        rc = s_add_size(total, 1 + s_varint_len(v->u.map.len));
        for (size_t i = 0; rc == 0 && i < v->u.map.len; i++) {
            rc = s_encoded_size(v->u.map.pairs[i].key, depth + 1, total);
            if (rc == 0)
                rc = s_encoded_size(v->u.map.pairs[i].item, depth + 1,
                                    total);
        }
        return rc;
    default:
        return s_add_size(total, 1);
    }
}

/* Writes v at p (s_encoded_size made room); returns the end. */
static uint8_t *
s_write(const dmp_value_t *v, uint8_t *p)
{
    uint64_t bits;
    switch (v->type) {
    case DMP_VALUE_NONE:
        *p++ = S_TAG_NONE;
        break;
    case DMP_VALUE_BOOL:
        *p++ = v->u.b ? S_TAG_TRUE : S_TAG_FALSE;
        break;
    case DMP_VALUE_INT:
        *p++ = S_TAG_INT;
        p = s_put_varint(p, s_zigzag(v->u.i));
        break;
    case DMP_VALUE_DOUBLE:
        *p++ = S_TAG_DOUBLE;
        memcpy(&bits, &v->u.d, 8);
        for (int i = 0; i < 8; i++)
            *p++ = (uint8_t)(bits >> (8 * i));
        break;
    case DMP_VALUE_STR:
    case DMP_VALUE_BYTES:
    case DMP_VALUE_HANDLE:
        *p++ = v->type == DMP_VALUE_STR     ? S_TAG_STR
               : v->type == DMP_VALUE_BYTES ? S_TAG_BYTES
                                            : S_TAG_HANDLE;
        p = s_put_varint(p, v->u.buf.len);
        if (v->u.buf.len)
            memcpy(p, v->u.buf.data, v->u.buf.len);
        p += v->u.buf.len;
        break;
    case DMP_VALUE_LIST:
        *p++ = S_TAG_LIST;
        p = s_put_varint(p, v->u.list.len);
        for (size_t i = 0; i < v->u.list.len; i++)
            p = s_write(v->u.list.items[i], p);
        break;
    case DMP_VALUE_MAP:
        *p++ = S_TAG_DICT;
        p = s_put_varint(p, v->u.map.len);
        for (size_t i = 0; i < v->u.map.len; i++) {
            p = s_write(v->u.map.pairs[i].key, p);
            p = s_write(v->u.map.pairs[i].item, p);
        }
        break;
    }
    return p;
}

/*
 * Two passes: size, then one exact allocation and the write, so the only
 * failure after sizing is that allocation. -EINVAL when containers nest
 * deeper than decode accepts (S_DEPTH_MAX).
 */
int
dmp_value_encode(const dmp_value_t *v, uint8_t **buf_p, size_t *len_p)
{
    assert(v && buf_p && len_p);
    size_t len = 0;
    int rc = s_encoded_size(v, 0, &len);
    if (rc != 0)
        return rc;
    uint8_t *buf = dmp__malloc(len);
    if (!buf)
        return -ENOMEM;
    uint8_t *end = s_write(v, buf);
    assert((size_t)(end - buf) == len);
    (void)end;
    *buf_p = buf;
    *len_p = len;
    return 0;
}

/* Encoding into a caller's buffer, without an allocation per value (the
 * pool packs thousands of items into one message). */
int
dmp__value_encoded_size(const dmp_value_t *v, size_t *len_p)
{
    size_t len = 0;
    int rc = s_encoded_size(v, 0, &len);
    if (rc == 0)
        *len_p = len;
    return rc;
}

uint8_t *
dmp__value_write(const dmp_value_t *v, uint8_t *p)
{
    return s_write(v, p);
}

/* ---- decode ---------------------------------------------------------- */

/* Input not yet read: [p, end). Every read checks the bound first. */
typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} s_in_t;

static size_t
s_left(const s_in_t *in)
{
    return (size_t)(in->end - in->p);
}

/* A canonical varint of at most 10 bytes that fits in 64 bits. */
static int
s_get_varint(s_in_t *in, uint64_t *out)
{
    uint64_t x = 0;
    for (int i = 0; i < 10; i++) {
        if (in->p == in->end)
            return DMP_EPROTO;
        uint8_t byte = *in->p++;
        if (i == 9 && byte > 1) /* bit 64 and up, or an 11th byte */
            return DMP_EPROTO;
        x |= (uint64_t)(byte & 0x7f) << (7 * i);
        if (!(byte & 0x80)) {
            if (i > 0 && byte == 0) /* overlong: same number, more bytes */
                return DMP_EPROTO;
            *out = x;
            return 0;
        }
    }
    return DMP_EPROTO; /* not reached: the 10th byte ends it or fails */
}

/* Rank of a key's kind in s_key_cmp's order: numbers, None, str, bytes. */
static int
s_key_rank(const dmp_value_t *k)
{
    switch (k->type) {
    case DMP_VALUE_NONE: return 1;
    case DMP_VALUE_STR: return 2;
    case DMP_VALUE_BYTES: return 3;
    default: return 0; /* bool, int, float */
    }
}

/* qsort order on scalar keys (NaN excluded) that agrees with s_equal:
 * 0 exactly when the keys are equal, so equal keys end up adjacent. */
static int
s_key_cmp(const void *pa, const void *pb)
{
    const dmp_value_t *a = *(const dmp_value_t *const *)pa;
    const dmp_value_t *b = *(const dmp_value_t *const *)pb;
    int ra = s_key_rank(a), rb = s_key_rank(b);
    if (ra != rb)
        return ra < rb ? -1 : 1;
    if (ra == 1)
        return 0;
    if (ra >= 2) {
        size_t la = a->u.buf.len, lb = b->u.buf.len;
        int c = memcmp(a->u.buf.data, b->u.buf.data, la < lb ? la : lb);
        return c ? c : la < lb ? -1 : la > lb ? 1 : 0;
    }
    bool a_int = a->type != DMP_VALUE_DOUBLE;
    bool b_int = b->type != DMP_VALUE_DOUBLE;
    int64_t ai = a->type == DMP_VALUE_BOOL ? a->u.b : a->u.i;
    int64_t bi = b->type == DMP_VALUE_BOOL ? b->u.b : b->u.i;
    if (a_int && b_int)
        return ai < bi ? -1 : ai > bi ? 1 : 0;
    if (!a_int && !b_int)
        return a->u.d < b->u.d ? -1 : a->u.d > b->u.d ? 1 : 0;
    return a_int ? s_cmp_int_double(ai, b->u.d)
                 : -s_cmp_int_double(bi, a->u.d);
}

/* Whether no two keys of map are equal, in *unique. Small dicts compare
 * pairwise; larger ones sort a copy of the key pointers. -ENOMEM. */
static int
s_keys_unique(const dmp_value_t *map, bool *unique)
{
    size_t n = map->u.map.len;
    const s_pair_t *pairs = map->u.map.pairs;
    *unique = true;
    if (n <= 16) {
        for (size_t i = 1; i < n; i++)
            for (size_t j = 0; j < i; j++)
                if (s_equal(pairs[i].key, pairs[j].key))
                    *unique = false;
        return 0;
    }
    const dmp_value_t **keys = dmp__malloc(n * sizeof *keys);
    if (!keys)
        return -ENOMEM;
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (!(pairs[i].key->type == DMP_VALUE_DOUBLE &&
              isnan(pairs[i].key->u.d))) /* NaN equals no key */
            keys[m++] = pairs[i].key;
    qsort(keys, m, sizeof *keys, s_key_cmp);
    for (size_t i = 1; i < m; i++)
        if (s_key_cmp(&keys[i - 1], &keys[i]) == 0)
            *unique = false;
    dmp__free(keys);
    return 0;
}

static int s_decode(s_in_t *in, int depth, dmp_value_t **v_p);

static int
s_decode_list(s_in_t *in, int depth, dmp_value_t **v_p)
{
    uint64_t count;
    int rc = s_get_varint(in, &count);
    if (rc != 0)
        return rc;
    if (count > s_left(in) || depth + 1 > S_DEPTH_MAX)
        return DMP_EPROTO; /* every item takes at least one byte */
    dmp_value_t *list = dmp_list();
    if (!list)
        return -ENOMEM;
    rc = s_list_reserve(list, count < S_DECODE_RESERVE_MAX
                                  ? (size_t)count
                                  : S_DECODE_RESERVE_MAX);
    for (uint64_t i = 0; rc == 0 && i < count; i++) {
        dmp_value_t *item = NULL;
        rc = s_decode(in, depth + 1, &item);
        if (rc == 0 && (rc = s_list_push(list, item)) != 0)
            dmp_value_destroy(&item);
    }
    if (rc != 0)
        dmp_value_destroy(&list);
    *v_p = list;
    return rc;
}

static int
s_decode_dict(s_in_t *in, int depth, dmp_value_t **v_p)
{
    uint64_t count;
    int rc = s_get_varint(in, &count);
    if (rc != 0)
        return rc;
    if (count > s_left(in) / 2 || depth + 1 > S_DEPTH_MAX)
        return DMP_EPROTO; /* every pair takes at least two bytes */
    dmp_value_t *map = dmp_map();
    if (!map)
        return -ENOMEM;
    rc = s_map_reserve(map, count < S_DECODE_RESERVE_MAX
                                ? (size_t)count
                                : S_DECODE_RESERVE_MAX);
    for (uint64_t i = 0; rc == 0 && i < count; i++) {
        s_pair_t pair = {NULL, NULL};
        /* Look at the key's tag first: a container key is refused before
         * anything inside it is decoded. */
        if (in->p == in->end || *in->p > S_TAG_BYTES)
            rc = DMP_EPROTO;
        if (rc == 0)
            rc = s_decode(in, depth + 1, &pair.key);
        if (rc == 0)
            rc = s_decode(in, depth + 1, &pair.item);
        if (rc == 0)
            rc = s_map_reserve(map, map->u.map.len + 1);
        if (rc == 0) {
            map->u.map.pairs[map->u.map.len++] = pair;
        } else {
            dmp_value_destroy(&pair.key);
            dmp_value_destroy(&pair.item);
        }
    }
    /* Duplicates are checked once at the end, in O(n log n): a check per
     * pair through s_map_find would let a 1 MiB frame of distinct keys
     * cost minutes of CPU while the lookup is a linear scan. */
    bool unique = true;
    if (rc == 0)
        rc = s_keys_unique(map, &unique);
    if (rc == 0 && !unique)
        rc = DMP_EPROTO; /* no encoder writes a key twice */
    if (rc != 0)
        dmp_value_destroy(&map);
    *v_p = map;
    return rc;
}

/* One value at in->p. depth: containers above it. On error *v_p is
 * untouched or NULL, and nothing is left allocated. */
static int
s_decode(s_in_t *in, int depth, dmp_value_t **v_p)
{
    if (in->p == in->end)
        return DMP_EPROTO;
    uint8_t tag = *in->p++;
    uint64_t u;
    int rc;
    dmp_value_t *v = NULL;
    switch (tag) {
    case S_TAG_NONE:
        v = dmp_none();
        break;
    case S_TAG_FALSE:
    case S_TAG_TRUE:
        v = dmp_bool(tag == S_TAG_TRUE);
        break;
    case S_TAG_INT:
        if ((rc = s_get_varint(in, &u)) != 0)
            return rc;
        v = dmp_int(s_unzigzag(u));
        break;
    case S_TAG_DOUBLE: {
        if (s_left(in) < 8)
            return DMP_EPROTO;
        uint64_t bits = 0;
        double d;
        for (int i = 0; i < 8; i++)
            bits |= (uint64_t)in->p[i] << (8 * i);
        in->p += 8;
        memcpy(&d, &bits, 8);
        v = dmp_double(d);
        break;
    }
    case S_TAG_HANDLE:
        if ((rc = s_get_varint(in, &u)) != 0)
            return rc;
        if (u > s_left(in) || u == 0 || u > S_HANDLE_MAX)
            return DMP_EPROTO;
        v = s_new_buf(DMP_VALUE_HANDLE, in->p, (size_t)u);
        in->p += u;
        break;
    case S_TAG_STR:
    case S_TAG_BYTES:
        if ((rc = s_get_varint(in, &u)) != 0)
            return rc;
        if (u > s_left(in))
            return DMP_EPROTO;
        v = s_new_buf(tag == S_TAG_STR ? DMP_VALUE_STR : DMP_VALUE_BYTES,
                      in->p, (size_t)u);
        in->p += u;
        if (v && tag == S_TAG_STR && !s_text_valid(v->u.buf.data, (size_t)u)) {
            dmp_value_destroy(&v);
            return DMP_EPROTO;
        }
        break;
    case S_TAG_LIST:
        return s_decode_list(in, depth, v_p);
    case S_TAG_DICT:
        return s_decode_dict(in, depth, v_p);
    default:
        return DMP_EPROTO; /* 10-15 reserved, the rest unknown */
    }
    if (!v)
        return -ENOMEM;
    *v_p = v;
    return 0;
}

int
dmp_value_decode(const void *buf, size_t len, dmp_value_t **v_p)
{
    assert(v_p && (buf || len == 0));
    if (len == 0)
        return DMP_EPROTO;
    s_in_t in = {buf, (const uint8_t *)buf + len};
    dmp_value_t *v = NULL;
    int rc = s_decode(&in, 0, &v);
    if (rc == 0 && in.p != in.end) {
        dmp_value_destroy(&v);
        rc = DMP_EPROTO; /* trailing bytes */
    }
    if (rc == 0)
        *v_p = v;
    return rc;
}

dmp_value_t *
dmp__handle_value(const void *data, size_t len)
{
    if (len == 0 || len > S_HANDLE_MAX)
        return NULL;
    return s_new_buf(DMP_VALUE_HANDLE, data, len);
}

const void *
dmp__handle_data(const dmp_value_t *v, size_t *len_p)
{
    if (!v || v->type != DMP_VALUE_HANDLE)
        return NULL;
    *len_p = v->u.buf.len;
    return v->u.buf.data;
}

static void
s_handles_walk(const dmp_value_t *v,
               void (*fn)(const uint8_t *data, size_t len, void *arg),
               void *arg, int depth)
{
    if (!v || depth > 64)
        return;
    switch (v->type) {
    case DMP_VALUE_LIST:
        for (size_t i = 0; i < dmp_value_len(v); i++)
            s_handles_walk(dmp_list_get(v, (int64_t)i), fn, arg, depth + 1);
        return;
    case DMP_VALUE_MAP:
        for (size_t i = 0; i < dmp_value_len(v); i++)
            s_handles_walk(dmp_map_item_at(v, i), fn, arg, depth + 1);
        return;
    case DMP_VALUE_HANDLE:
        fn((const uint8_t *)v->u.buf.data, v->u.buf.len, arg);
        return;
    default:
        return;
    }
}

void
dmp__handles_each(const dmp_value_t *v,
                  void (*fn)(const uint8_t *data, size_t len, void *arg),
                  void *arg)
{
    s_handles_walk(v, fn, arg, 0);
}
