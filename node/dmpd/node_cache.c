/*
 * node_cache.c - the binary cache: executables shipped by other nodes.
 *
 * Files are named by the lowercase hex SHA-256 of their content. Invariant:
 * a name in the cache directory is either absent or a complete, verified
 * file with mode 0500. The digest is checked (64 lowercase hex digits)
 * before it is used in any path, so a name from the wire can never point
 * outside the directory; every file operation is relative to the
 * directory's fd (openat, linkat), never to a path string.
 *
 * An upload is written to an unnamed file (O_TMPFILE) and hashed as data
 * arrives; only when size and hash verify is it fsynced, made 0500 and
 * linked under its digest. linkat never replaces, so a digest that is
 * already there stays as it is and the second upload is a success. Where
 * the filesystem has no O_TMPFILE, a hidden ".tmp-RANDOM" file stands in
 * (it can never collide with a digest) and is unlinked on every failure.
 *
 * Space for the declared size is reserved at begin (fallocate), so a full
 * disk is usually refused before any data is sent. A write that fails
 * anyway (ENOSPC, EIO, ...) drops the upload at once: its temporary file is
 * removed, later writes and finish return the same error, and the caller
 * still owns the handle until finish or abort. Bad offsets and writes past
 * the declared size are refused without changing the upload.
 *
 * Refusals of bad input (digest, size, hash) are logged at debug only: the
 * caller knows the peer and logs the one line a reject deserves. Faults of
 * this node (disk full, I/O errors, a bad directory) are warnings or errors.
 *
 * Ownership: the cache owns its directory fd; each upload owns its temp
 * fd and holds a reference to the cache, so closing the cache while
 * uploads are open is safe: the directory stays open until the last of
 * them is finished or aborted. The main loop is the only user, so nothing here
 * is locked; several agents may share one directory (linkat is atomic and
 * never replaces). Temp files a crash leaves behind in the fallback mode
 * are not collected.
 */
#define _GNU_SOURCE
#include "node.h"

#include <assert.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define S_TMP_PREFIX ".tmp-"
#define S_TMP_NAME_MAX 32 /* ".tmp-" + 16 hex + NUL */
#define S_READ_CHUNK (64 * 1024)

struct node_cache {
    int dir_fd;         /* the cache directory, O_DIRECTORY */
    char dir[PATH_MAX]; /* its absolute path, for lookup results */
    uint64_t max_file;  /* largest accepted upload, bytes */
    bool no_tmpfile;    /* the filesystem refused O_TMPFILE once */
    unsigned refs;      /* the owner's (until close) + one per upload */
};

struct node_cache_upload {
    node_cache_t *cache;              /* borrowed; outlives the upload */
    int fd;                           /* temp file, write-only; -1 if dropped */
    char tmp_name[S_TMP_NAME_MAX];    /* fallback name, "" with O_TMPFILE */
    char digest[NODE_DIGEST_HEX + 1]; /* claimed hash, validated */
    uint64_t size;                    /* declared size */
    uint64_t written;                 /* bytes accepted so far */
    int err;                          /* first system error: upload dead */
    crypto_hash_sha256_state hash;    /* over the bytes written so far */
};

/* Test hook (declared in tests/unit/test_node_cache.c only): behave as if
 * the filesystem had no O_TMPFILE, so the fallback path gets tested. */
static bool s_force_no_tmpfile;
void node_cache_test_no_tmpfile(bool on);
void
node_cache_test_no_tmpfile(bool on)
{
    s_force_no_tmpfile = on;
}

bool
node_cache_digest_valid(const char *digest)
{
    if (!digest)
        return false;
    /* Stops at the NUL of a short string: NUL is not a hex digit. */
    for (size_t i = 0; i < NODE_DIGEST_HEX; i++) {
        char c = digest[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return digest[NODE_DIGEST_HEX] == '\0';
}

int
node_cache_open(const char *dir, uint64_t max_file, node_cache_t **cache_p)
{
    assert(dir && cache_p);
    if (sodium_init() < 0) {
        error_f("cannot initialise libsodium");
        return -EIO;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        int rc = -errno;
        error_f("cannot create cache directory '%s': %s", dir, strerror(-rc));
        return rc;
    }
    /* Checked through the fd we keep, so the directory cannot be swapped
     * between the check and its use; O_NOFOLLOW refuses a symlink. */
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int rc = -errno;
        error_f("cannot open cache directory '%s': %s", dir, strerror(-rc));
        return rc;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int rc = -errno;
        error_f("cannot stat cache directory '%s': %s", dir, strerror(-rc));
        close(fd);
        return rc;
    }
    if (st.st_uid != geteuid() || (st.st_mode & 077)) {
        /* Anyone else who can write here could plant a file under a
         * digest, and the agent would execute it. */
        error_f("cache directory '%s' must be owned by uid %u and mode 0700 "
                "(it is uid %u, mode %03o): others could replace cached "
                "executables",
                dir, (unsigned)geteuid(), (unsigned)st.st_uid,
                (unsigned)(st.st_mode & 0777));
        close(fd);
        return -EPERM;
    }
    char abs[PATH_MAX];
    if (!realpath(dir, abs)) {
        int rc = -errno;
        error_f("cannot resolve cache directory '%s': %s", dir, strerror(-rc));
        close(fd);
        return rc;
    }
    node_cache_t *cache = dmp__calloc(1, sizeof *cache);
    if (!cache) {
        close(fd);
        return -ENOMEM;
    }
    cache->dir_fd = fd;
    cache->refs = 1;
    dmp__strlcpy(cache->dir, abs, sizeof cache->dir);
    cache->max_file = max_file;
    debug_f("opened cache '%s' max_file=%llu", cache->dir,
            (unsigned long long)max_file);
    *cache_p = cache;
    return 0;
}

/* Drops one reference; the last one closes the directory. */
static void
s_unref(node_cache_t *cache)
{
    assert(cache->refs > 0);
    if (--cache->refs > 0)
        return;
    if (cache->dir_fd >= 0)
        close(cache->dir_fd);
    dmp__free(cache);
}

void
node_cache_close(node_cache_t **cache_p)
{
    if (!cache_p || !*cache_p)
        return;
    s_unref(*cache_p);
    *cache_p = NULL;
}

int
node_cache_lookup(node_cache_t *cache, const char *digest, char *path,
                  size_t size)
{
    assert(cache && path);
    if (!node_cache_digest_valid(digest))
        return -EINVAL;
    struct stat st;
    if (fstatat(cache->dir_fd, digest, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return errno == ENOENT ? -ENOENT : -errno;
    if (!S_ISREG(st.st_mode)) {
        warn_f("ignored non-regular file in cache '%s' digest=%s", cache->dir,
               digest);
        return -ENOENT;
    }
    int n = snprintf(path, size, "%s/%s", cache->dir, digest);
    if (n < 0 || (size_t)n >= size)
        return -ENAMETOOLONG;
    return 0;
}

/* Creates the fallback temp file: a hidden random name nobody else uses. */
static int
s_open_named_tmp(node_cache_t *cache, char name[S_TMP_NAME_MAX])
{
    for (int tries = 0; tries < 8; tries++) {
        uint8_t rnd[8];
        randombytes_buf(rnd, sizeof rnd);
        memcpy(name, S_TMP_PREFIX, sizeof S_TMP_PREFIX - 1);
        sodium_bin2hex(name + sizeof S_TMP_PREFIX - 1,
                       S_TMP_NAME_MAX - (sizeof S_TMP_PREFIX - 1), rnd,
                       sizeof rnd);
        int fd =
            openat(cache->dir_fd, name,
                   O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0)
            return fd;
        if (errno != EEXIST)
            return -errno;
    }
    return -EEXIST;
}

/* Opens the upload's temp file: unnamed when the filesystem allows. */
static int
s_open_tmp(node_cache_t *cache, char name[S_TMP_NAME_MAX])
{
    name[0] = '\0';
    if (!cache->no_tmpfile && !s_force_no_tmpfile) {
        int fd =
            openat(cache->dir_fd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
        if (fd >= 0)
            return fd;
        /* EISDIR: a kernel without O_TMPFILE saw only O_DIRECTORY. */
        if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
            return -errno;
        debug_f("no O_TMPFILE in cache '%s' (%s); using named temp files",
                cache->dir, strerror(errno));
        cache->no_tmpfile = true;
    }
    return s_open_named_tmp(cache, name);
}

/* Closes and removes the temp file; the upload keeps its first error. */
static void
s_drop(node_cache_upload_t *up, int err)
{
    if (!up->err)
        up->err = err;
    if (up->fd >= 0) {
        close(up->fd);
        up->fd = -1;
    }
    if (up->tmp_name[0]) {
        if (unlinkat(up->cache->dir_fd, up->tmp_name, 0) != 0)
            warn_f("cannot remove temp file '%s/%s': %s", up->cache->dir,
                   up->tmp_name, strerror(errno));
        up->tmp_name[0] = '\0';
    }
}

static void
s_free(node_cache_upload_t *up)
{
    s_drop(up, 0);
    s_unref(up->cache);
    sodium_memzero(&up->hash, sizeof up->hash);
    dmp__free(up);
}

int
node_cache_upload_begin(node_cache_t *cache, const char *digest, uint64_t size,
                        node_cache_upload_t **up_p)
{
    assert(cache && up_p);
    if (!node_cache_digest_valid(digest)) {
        /* Not echoed: it came from the wire and may hold anything. */
        debug_f("refused upload to cache '%s': malformed digest", cache->dir);
        return -EINVAL;
    }
    if (size > cache->max_file) {
        debug_f("refused upload to cache '%s': file too large digest=%s "
                "size=%llu max_file=%llu",
                cache->dir, digest, (unsigned long long)size,
                (unsigned long long)cache->max_file);
        return -EFBIG;
    }
    if (size > (uint64_t)INT64_MAX)
        return -EFBIG; /* only reachable with max_file above off_t */
    node_cache_upload_t *up = dmp__calloc(1, sizeof *up);
    if (!up)
        return -ENOMEM;
    up->cache = cache;
    cache->refs++;
    up->size = size;
    dmp__strlcpy(up->digest, digest, sizeof up->digest);
    crypto_hash_sha256_init(&up->hash);
    up->fd = s_open_tmp(cache, up->tmp_name);
    if (up->fd < 0) {
        int rc = up->fd;
        up->fd = -1;
        error_f("cannot create temp file in cache '%s': %s", cache->dir,
                strerror(-rc));
        s_free(up);
        return rc;
    }
    /* Reserve the space now, so a full disk refuses the upload before the
     * peer sends megabytes. KEEP_SIZE: the file's size stays what was
     * written. Filesystems without fallocate simply skip this. */
    if (size > 0 &&
        fallocate(up->fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)size) != 0 &&
        errno != EOPNOTSUPP && errno != ENOSYS) {
        int rc = -errno;
        warn_f("cannot reserve space in cache '%s': %s digest=%s size=%llu",
               cache->dir, strerror(-rc), digest, (unsigned long long)size);
        s_free(up);
        return rc;
    }
    debug_f("upload started digest=%s size=%llu", digest,
            (unsigned long long)size);
    *up_p = up;
    return 0;
}

int
node_cache_upload_write(node_cache_upload_t *up, uint64_t offset,
                        const void *data, size_t len)
{
    assert(up && (data || len == 0));
    if (up->err)
        return up->err;
    if (offset != up->written)
        return -EINVAL;
    if (len > up->size - up->written)
        return -EFBIG;
    if (len == 0)
        return 0;
    const uint8_t *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(up->fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int rc = -errno;
            warn_f("cannot write to cache '%s': %s digest=%s offset=%llu "
                   "len=%zu; upload dropped",
                   up->cache->dir, strerror(-rc), up->digest,
                   (unsigned long long)offset, len);
            s_drop(up, rc);
            return rc;
        }
        p += n;
        left -= (size_t)n;
    }
    crypto_hash_sha256_update(&up->hash, data, len);
    up->written += len;
    return 0;
}

/* Links the verified temp file under its digest. An existing regular file
 * of the same size is the same content (it was verified the same way). */
static int
s_publish(node_cache_upload_t *up)
{
    node_cache_t *cache = up->cache;
    int rc = 0;
    if (up->tmp_name[0]) {
        if (linkat(cache->dir_fd, up->tmp_name, cache->dir_fd, up->digest, 0) !=
            0)
            rc = -errno;
    } else {
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", up->fd);
        if (linkat(AT_FDCWD, proc, cache->dir_fd, up->digest,
                   AT_SYMLINK_FOLLOW) != 0)
            rc = -errno;
        /* Without /proc, AT_EMPTY_PATH does the same (it needs
         * CAP_DAC_READ_SEARCH); its other failures keep the first error. */
        if (rc == -ENOENT) {
            if (linkat(up->fd, "", cache->dir_fd, up->digest, AT_EMPTY_PATH) ==
                0)
                rc = 0;
            else if (errno == EEXIST)
                rc = -EEXIST;
        }
    }
    if (rc == -EEXIST) {
        struct stat st;
        if (fstatat(cache->dir_fd, up->digest, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISREG(st.st_mode) && (uint64_t)st.st_size == up->size) {
            debug_f("already cached digest=%s", up->digest);
            return 0;
        }
        error_f("cannot cache file: something else is in '%s/%s'", cache->dir,
                up->digest);
        return -EEXIST;
    }
    if (rc) {
        error_f("cannot link file into cache '%s': %s digest=%s", cache->dir,
                strerror(-rc), up->digest);
        return rc;
    }
    /* The name itself must survive a crash too. */
    if (fsync(cache->dir_fd) != 0)
        warn_f("cannot sync cache directory '%s': %s", cache->dir,
               strerror(errno));
    debug_f("cached file digest=%s size=%llu", up->digest,
            (unsigned long long)up->size);
    return 0;
}

int
node_cache_upload_finish(node_cache_upload_t **up_p)
{
    assert(up_p && *up_p);
    node_cache_upload_t *up = *up_p;
    *up_p = NULL;
    int rc = up->err;
    if (rc == 0 && up->written != up->size) {
        debug_f("refused upload to cache '%s': short upload digest=%s "
                "size=%llu received=%llu",
                up->cache->dir, up->digest, (unsigned long long)up->size,
                (unsigned long long)up->written);
        rc = -EIO;
    }
    if (rc == 0) {
        uint8_t bin[crypto_hash_sha256_BYTES];
        char hex[NODE_DIGEST_HEX + 1];
        crypto_hash_sha256_final(&up->hash, bin);
        sodium_bin2hex(hex, sizeof hex, bin, sizeof bin);
        if (memcmp(hex, up->digest, NODE_DIGEST_HEX) != 0) {
            debug_f("refused upload to cache '%s': content does not match "
                    "its digest digest=%s actual=%s",
                    up->cache->dir, up->digest, hex);
            rc = -EBADMSG;
        }
    }
    if (rc == 0 && fsync(up->fd) != 0) {
        rc = -errno;
        error_f("cannot sync upload to cache '%s': %s digest=%s",
                up->cache->dir, strerror(-rc), up->digest);
    }
    if (rc == 0 && fchmod(up->fd, 0500) != 0) {
        rc = -errno;
        error_f("cannot chmod upload in cache '%s': %s digest=%s",
                up->cache->dir, strerror(-rc), up->digest);
    }
    if (rc == 0)
        rc = s_publish(up);
    s_free(up); /* closes the fd; unlinks the fallback temp name */
    return rc;
}

void
node_cache_upload_abort(node_cache_upload_t **up_p)
{
    if (!up_p || !*up_p)
        return;
    debug_f("upload aborted digest=%s received=%llu", (*up_p)->digest,
            (unsigned long long)(*up_p)->written);
    s_free(*up_p);
    *up_p = NULL;
}

int
node_cache_file_digest(const char *path, char out[NODE_DIGEST_HEX + 1])
{
    assert(path && out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    uint8_t *buf = dmp__malloc(S_READ_CHUNK);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    int rc = 0;
    for (;;) {
        ssize_t n = read(fd, buf, S_READ_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            break;
        }
        if (n == 0)
            break;
        crypto_hash_sha256_update(&st, buf, (unsigned long long)n);
    }
    if (rc == 0) {
        uint8_t bin[crypto_hash_sha256_BYTES];
        crypto_hash_sha256_final(&st, bin);
        sodium_bin2hex(out, NODE_DIGEST_HEX + 1, bin, sizeof bin);
    }
    dmp__free(buf);
    close(fd);
    return rc;
}
