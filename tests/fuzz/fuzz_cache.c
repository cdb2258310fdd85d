/*
 * fuzz_cache.c - the agent's binary cache (node_cache.c) driven the way
 * Upload messages from any peer drive it: digests from the wire, sizes,
 * offsets, chunks, finish and abort in any order, two uploads at once.
 *
 * The input is a script (below). Promises checked (node.h, FAULTS.md
 * "binary-cache digest that is a path, wrong length, content not
 * matching its hash, aborted upload, two uploads of one digest"):
 *   - node_cache_digest_valid accepts exactly 64 lowercase hex digits;
 *   - every call returns its documented code for the state it is in;
 *   - after every step, each name in the cache directory is a verified
 *     file (its SHA-256 is its name, mode 0500) or, while an upload is
 *     open in fallback mode, a ".tmp-" file; nothing else is there, and
 *     nothing appears beside the directory;
 *   - once every upload is finished or aborted, no temporary file is left,
 *     and every finish that returned 0 left its file in place.
 *
 * Script: a flags byte (bit 0: pretend there is no O_TMPFILE), then ops,
 * each an op byte and its arguments; a short read ends the script.
 *   0 begin  slot:u8 size:u16 digest     (size 0xffff: over max_file)
 *   1 write  slot:u8 offset:u8 len:u16   (offset 0: the right one, else a
 *                                         wrong one; bytes from the content)
 *   2 finish slot:u8
 *   3 abort  slot:u8
 *   4 lookup digest
 *   digest := how:u8, then for how%4 == 1 a length byte and that many raw
 *   bytes; 0: SHA-256 of the first `size` content bytes (the digest the
 *   upload will match; for lookup, the last begin's size), 2: valid hex
 *   of other content, 3: as 0 in upper case.
 */
#define _GNU_SOURCE
#include "fuzz.h"

#include "node.h"

#include <dirent.h>
#include <sodium.h>
#include <string.h>

#define S_CACHE_MAX_FILE 65534u /* 0xffff is "too large" */
#define S_CACHE_SLOTS 2

extern dmp_log_level_t node_log_level;

static uint8_t s_cache_content[S_CACHE_MAX_FILE];

typedef struct {
    const uint8_t *p, *end;
} s_cache_in_t;

static bool
s_cache_u8(s_cache_in_t *in, unsigned *out)
{
    if (in->p >= in->end)
        return false;
    *out = *in->p++;
    return true;
}

static bool
s_cache_u16(s_cache_in_t *in, unsigned *out)
{
    unsigned lo, hi;
    if (!s_cache_u8(in, &lo) || !s_cache_u8(in, &hi))
        return false;
    *out = lo | hi << 8;
    return true;
}

static void
s_cache_hex_of(const uint8_t *data, size_t len, char out[65])
{
    uint8_t bin[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(bin, data, len);
    sodium_bin2hex(out, 65, bin, sizeof bin);
}

/* A digest string as the script says; false at the end of the input. */
static bool
s_cache_digest(s_cache_in_t *in, unsigned size, char *out, size_t outlen)
{
    unsigned how, n;
    if (!s_cache_u8(in, &how))
        return false;
    size = size > S_CACHE_MAX_FILE ? S_CACHE_MAX_FILE : size;
    switch (how % 4) {
    case 0:
    case 3:
        s_cache_hex_of(s_cache_content, size, out);
        if (how % 4 == 3)
            for (char *c = out; *c; c++)
                if (*c >= 'a' && *c <= 'f')
                    *c = (char)(*c - 'a' + 'A');
        return true;
    case 1:
        if (!s_cache_u8(in, &n) || (size_t)(in->end - in->p) < n ||
            n >= outlen)
            return false;
        memcpy(out, in->p, n);
        out[n] = '\0';
        in->p += n;
        return true;
    default:
        s_cache_hex_of(s_cache_content + 1, size / 2, out);
        return true;
    }
}

static bool
s_cache_digest_expect(const char *d)
{
    if (strlen(d) != 64)
        return false;
    for (const char *c = d; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
            return false;
    return true;
}

/* The directory holds only verified files and, while uploads are open
 * in fallback mode, temporary ones; its parent holds only it. */
static void
s_cache_check_dir(const char *root, const char *dir, bool tmp_allowed)
{
    DIR *d = opendir(root);
    FUZZ_CHECK(d != NULL, "opendir %s", root);
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        FUZZ_CHECK(strcmp(e->d_name, ".") == 0 ||
                       strcmp(e->d_name, "..") == 0 ||
                       strcmp(e->d_name, "cache") == 0,
                   "'%s' appeared beside the cache", e->d_name);
    closedir(d);

    d = opendir(dir);
    FUZZ_CHECK(d != NULL, "opendir %s", dir);
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        const char *name = e->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;
        if (strncmp(name, ".tmp-", 5) == 0) {
            FUZZ_CHECK(tmp_allowed, "temporary file '%s' left behind", name);
            continue;
        }
        FUZZ_CHECK(s_cache_digest_expect(name), "'%s' in the cache", name);
        char path[PATH_MAX], hex[65];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        struct stat st;
        FUZZ_CHECK(lstat(path, &st) == 0 && S_ISREG(st.st_mode) &&
                       (st.st_mode & 07777) == 0500,
                   "cached '%s' is not a 0500 file", name);
        FUZZ_CHECK(node_cache_file_digest(path, hex) == 0 &&
                       strcmp(hex, name) == 0,
                   "cached file '%s' has content of '%s'", name, hex);
    }
    closedir(d);
}

typedef struct {
    node_cache_upload_t *up;
    uint64_t size, written;
    char digest[65];
    bool matches; /* the digest is the hash of content[0..size) */
} s_cache_slot_t;

FUZZ_TARGET(cache)
{
    static bool ready;
    if (!ready) {
        for (size_t i = 0; i < sizeof s_cache_content; i++)
            s_cache_content[i] = (uint8_t)(i * 31 + 7);
        node_log_level = DMP_LOG_ERROR;
        ready = true;
    }
    char root[PATH_MAX], dir[PATH_MAX];
    snprintf(root, sizeof root, "%s/cache-root", fuzz_tmpdir());
    snprintf(dir, sizeof dir, "%s/cache", root);
    dmp__rmtree(root);
    FUZZ_CHECK(mkdir(root, 0700) == 0, "mkdir %s: %s", root, strerror(errno));

    s_cache_in_t in = {data, data + size};
    unsigned flags = 0;
    s_cache_u8(&in, &flags);
    node_cache_test_no_tmpfile(flags & 1);
    node_cache_t *cache = NULL;
    int rc = node_cache_open(dir, S_CACHE_MAX_FILE, &cache);
    FUZZ_CHECK(rc == 0, "node_cache_open: %s", strerror(-rc));

    s_cache_slot_t slots[S_CACHE_SLOTS];
    memset(slots, 0, sizeof slots);
    char published[8][65]; /* digests whose finish returned 0 */
    size_t n_published = 0;
    char digest[300];
    unsigned last_size = 0; /* lookups ask for the last upload's content */
    for (unsigned op, a; s_cache_u8(&in, &op);) {
        bool open_tmp = false;
        switch (op % 5) {
        case 0: { /* begin */
            unsigned sz;
            if (!s_cache_u8(&in, &a) || !s_cache_u16(&in, &sz) ||
                !s_cache_digest(&in, sz, digest, sizeof digest))
                goto out;
            last_size = sz;
            s_cache_slot_t *s = &slots[a % S_CACHE_SLOTS];
            if (s->up)
                node_cache_upload_abort(&s->up);
            node_cache_upload_t *up = NULL;
            rc = node_cache_upload_begin(cache, digest, sz, &up);
            bool valid = s_cache_digest_expect(digest);
            FUZZ_CHECK(node_cache_digest_valid(digest) == valid,
                       "digest_valid('%s')", digest);
            if (!valid)
                FUZZ_CHECK(rc == -EINVAL, "begin with digest '%s': %d",
                           digest, rc);
            else if (sz > S_CACHE_MAX_FILE)
                FUZZ_CHECK(rc == -EFBIG, "begin over max_file: %d", rc);
            else
                FUZZ_CHECK(rc == 0, "begin: %s", strerror(-rc));
            FUZZ_CHECK((rc == 0) == (up != NULL), "begin handle");
            if (rc == 0) {
                s->up = up;
                s->size = sz;
                s->written = 0;
                dmp__strlcpy(s->digest, digest, sizeof s->digest);
                char real[65];
                s_cache_hex_of(s_cache_content, sz, real);
                s->matches = strcmp(real, digest) == 0;
            }
            break;
        }
        case 1: { /* write */
            unsigned off, len;
            if (!s_cache_u8(&in, &a) || !s_cache_u8(&in, &off) ||
                !s_cache_u16(&in, &len))
                goto out;
            s_cache_slot_t *s = &slots[a % S_CACHE_SLOTS];
            if (!s->up)
                break;
            uint64_t offset = off == 0 ? s->written : s->written + off - 128;
            const uint8_t *chunk =
                offset < S_CACHE_MAX_FILE ? s_cache_content + offset
                                          : s_cache_content;
            if (len > S_CACHE_MAX_FILE - (size_t)(chunk - s_cache_content))
                len = S_CACHE_MAX_FILE - (unsigned)(chunk - s_cache_content);
            rc = node_cache_upload_write(s->up, offset, chunk, len);
            if (offset != s->written)
                FUZZ_CHECK(rc == -EINVAL, "write at a wrong offset: %d", rc);
            else if (len > s->size - s->written)
                FUZZ_CHECK(rc == -EFBIG, "write past the size: %d", rc);
            else
                FUZZ_CHECK(rc == 0, "write: %s", strerror(-rc));
            if (rc == 0)
                s->written += len;
            break;
        }
        case 2: /* finish */
        case 3: { /* abort */
            if (!s_cache_u8(&in, &a))
                goto out;
            s_cache_slot_t *s = &slots[a % S_CACHE_SLOTS];
            if (!s->up)
                break;
            if (op % 5 == 3) {
                node_cache_upload_abort(&s->up);
                FUZZ_CHECK(s->up == NULL, "abort did not null");
                break;
            }
            rc = node_cache_upload_finish(&s->up);
            FUZZ_CHECK(s->up == NULL, "finish did not null");
            if (s->written != s->size)
                FUZZ_CHECK(rc == -EIO, "short upload finished: %d", rc);
            else if (!s->matches)
                FUZZ_CHECK(rc == -EBADMSG, "wrong content finished: %d", rc);
            else
                FUZZ_CHECK(rc == 0, "finish: %s", strerror(-rc));
            if (rc == 0 && n_published < 8)
                dmp__strlcpy(published[n_published++], s->digest, 65);
            break;
        }
        default: { /* lookup */
            if (!s_cache_digest(&in, last_size, digest, sizeof digest))
                goto out;
            char path[PATH_MAX];
            rc = node_cache_lookup(cache, digest, path, sizeof path);
            if (!s_cache_digest_expect(digest))
                FUZZ_CHECK(rc == -EINVAL, "lookup of '%s': %d", digest, rc);
            else
                FUZZ_CHECK(rc == 0 || rc == -ENOENT, "lookup: %d", rc);
            if (rc == 0) {
                char want[PATH_MAX];
                snprintf(want, sizeof want, "%s/%s", dir, digest);
                char real[PATH_MAX];
                FUZZ_CHECK(realpath(dir, real) != NULL, "realpath");
                snprintf(want, sizeof want, "%s/%s", real, digest);
                FUZZ_CHECK(strcmp(path, want) == 0, "lookup path '%s'", path);
            }
            break;
        }
        }
        for (int i = 0; i < S_CACHE_SLOTS; i++)
            open_tmp = open_tmp || slots[i].up != NULL;
        s_cache_check_dir(root, dir, open_tmp && (flags & 1));
    }
out:
    for (int i = 0; i < S_CACHE_SLOTS; i++)
        node_cache_upload_abort(&slots[i].up);
    s_cache_check_dir(root, dir, false);
    for (size_t i = 0; i < n_published; i++) {
        char path[PATH_MAX];
        FUZZ_CHECK(node_cache_lookup(cache, published[i], path, sizeof path) ==
                       0,
                   "published '%s' is gone", published[i]);
    }
    node_cache_close(&cache);
    FUZZ_CHECK(cache == NULL, "close did not null");
    node_cache_test_no_tmpfile(false);
    dmp__rmtree(root);
    return 0;
}
