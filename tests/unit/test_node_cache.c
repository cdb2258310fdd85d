/*
 * test_node_cache.c - the agent's content-addressed binary cache.
 *
 * Each test gets a fresh cache in PARENT/cache under a mkdtemp directory;
 * the teardown checks that no fd leaked and removes everything. Every
 * refused upload is checked for what matters to a peer shipping an
 * executable: nothing visible under the digest, no temp file left behind,
 * nothing touched outside the cache. The whole suite runs twice: with
 * O_TMPFILE, and with the named temp-file fallback used where the
 * filesystem has no O_TMPFILE.
 */
#define _GNU_SOURCE /* PATH_MAX, O_TMPFILE, nftw, pipe2 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "node.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sched.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Test hook in node_cache.c: use the named temp-file fallback. */
void node_cache_test_no_tmpfile(bool on);

#define S_MAX_FILE (4u << 20)

/* Fails unless expr returns `want`, naming both codes. */
#define assert_rc(expr, want)                                                  \
    do {                                                                       \
        int s_rc_ = (expr), s_want_ = (want);                                  \
        if (s_rc_ != s_want_) {                                                \
            print_error("%s:%d: %s -> %s (%s), expected %s\n", __FILE__,       \
                        __LINE__, #expr, dmp_err_name(s_rc_),                  \
                        dmp_strerror(s_rc_), dmp_err_name(s_want_));           \
            fail();                                                            \
        }                                                                      \
    } while (0)
#define assert_ok(expr) assert_rc(expr, 0)

typedef struct {
    char parent[PATH_MAX]; /* mkdtemp directory, removed by the teardown */
    char dir[PATH_MAX];    /* PARENT/cache */
    char mnt[PATH_MAX];    /* a tmpfs mounted by the test, or "" */
    node_cache_t *cache;   /* open on dir */
    int fds;               /* open fds before the cache was opened */
} s_fix_t;

/* ---- helpers --------------------------------------------------------- */

static void
s_sha256_hex(const void *data, size_t len, char out[NODE_DIGEST_HEX + 1])
{
    uint8_t bin[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(bin, data, len);
    sodium_bin2hex(out, NODE_DIGEST_HEX + 1, bin, sizeof bin);
}

/* Deterministic filler, different per seed. */
static uint8_t *
s_data(size_t len, uint32_t seed)
{
    uint8_t *p = malloc(len ? len : 1);
    assert_non_null(p);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
    return p;
}

/* The whole upload in `chunk`-sized writes; the first error, the upload
 * aborted if it was still open. */
static int
s_upload(node_cache_t *cache, const char *digest, const void *data, size_t len,
         size_t chunk)
{
    node_cache_upload_t *up = NULL;
    int rc = node_cache_upload_begin(cache, digest, len, &up);
    if (rc)
        return rc;
    const uint8_t *p = data;
    for (size_t off = 0; off < len; off += chunk) {
        size_t n = len - off < chunk ? len - off : chunk;
        rc = node_cache_upload_write(up, off, p + off, n);
        if (rc) {
            node_cache_upload_abort(&up);
            assert_null(up);
            return rc;
        }
    }
    rc = node_cache_upload_finish(&up);
    assert_null(up);
    return rc;
}

/* Entries in dir other than . and .. */
static int
s_count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static int
s_count_fds(void)
{
    return s_count_entries("/proc/self/fd") - 1; /* opendir's own fd */
}

static bool
s_file_equals(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    uint8_t *buf = malloc(len + 1);
    assert_non_null(buf);
    size_t n = fread(buf, 1, len + 1, f);
    fclose(f);
    bool same = n == len && memcmp(buf, data, len) == 0;
    free(buf);
    return same;
}

static int
s_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void
s_rmtree(const char *path)
{
    nftw(path, s_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- fixture --------------------------------------------------------- */

static int
s_setup(void **state)
{
    s_fix_t *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    strcpy(fx->parent, "/tmp/test_node_cache.XXXXXX");
    if (!mkdtemp(fx->parent)) {
        free(fx);
        return -1;
    }
    snprintf(fx->dir, sizeof fx->dir, "%s/cache", fx->parent);
    fx->fds = s_count_fds();
    if (node_cache_open(fx->dir, S_MAX_FILE, &fx->cache) != 0) {
        s_rmtree(fx->parent);
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int
s_teardown(void **state)
{
    s_fix_t *fx = *state;
    node_cache_close(&fx->cache);
    assert_null(fx->cache);
    int fds = s_count_fds();
    if (fx->mnt[0])
        umount2(fx->mnt, MNT_DETACH);
    s_rmtree(fx->parent);
    bool leaked = fds != fx->fds;
    if (leaked)
        print_error("fd leak: %d open before, %d after\n", fx->fds, fds);
    free(fx);
    return leaked ? -1 : 0;
}

static int
s_group_tmpfile(void **state)
{
    (void)state;
    node_cache_test_no_tmpfile(false);
    return 0;
}

static int
s_group_fallback(void **state)
{
    (void)state;
    node_cache_test_no_tmpfile(true);
    return 0;
}

/* ---- tests ----------------------------------------------------------- */

static void
test_cache_upload_then_lookup_and_run(void **state)
{
    s_fix_t *fx = *state;
    static const char script[] = "#!/bin/sh\n"
                                 "echo \"hello from the cache $1\"\n";
    size_t len = sizeof script - 1;

    /* The sender names the content by its SHA-256... */
    char digest[NODE_DIGEST_HEX + 1];
    s_sha256_hex(script, len, digest);
    assert_true(node_cache_digest_valid(digest));

    /* ...and ships it in chunks, each at the next offset. */
    node_cache_t *cache = fx->cache;
    node_cache_upload_t *up = NULL;
    assert_ok(node_cache_upload_begin(cache, digest, len, &up));
    for (size_t off = 0; off < len; off += 5) {
        size_t n = len - off < 5 ? len - off : 5;
        assert_ok(node_cache_upload_write(up, off, script + off, n));
    }
    assert_ok(node_cache_upload_finish(&up));
    assert_null(up);

    /* The receiver finds it by digest and can run it. */
    char path[PATH_MAX];
    assert_ok(node_cache_lookup(cache, digest, path, sizeof path));
    assert_true(s_file_equals(path, script, len));
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0500);

    char again[NODE_DIGEST_HEX + 1];
    assert_ok(node_cache_file_digest(path, again));
    assert_string_equal(again, digest);

    int pfd[2];
    assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(pfd[1], STDOUT_FILENO);
        char *argv[] = {path, "42", NULL};
        execv(path, argv);
        _exit(127);
    }
    close(pfd[1]);
    char out[128] = "";
    size_t got = 0;
    ssize_t n;
    while ((n = read(pfd[0], out + got, sizeof out - 1 - got)) > 0)
        got += (size_t)n;
    close(pfd[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_string_equal(out, "hello from the cache 42\n");

    /* Only the published file is in the directory. */
    assert_int_equal(s_count_entries(fx->dir), 1);
}

static void
test_cache_dir_created_0700(void **state)
{
    s_fix_t *fx = *state;
    struct stat st;
    assert_int_equal(lstat(fx->dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0700);
    assert_int_equal(st.st_uid, geteuid());
}

static void
test_cache_rejects_malformed_digests(void **state)
{
    s_fix_t *fx = *state;
    char hex[NODE_DIGEST_HEX + 1];
    s_sha256_hex("x", 1, hex);

    char upper[NODE_DIGEST_HEX + 1], short_[NODE_DIGEST_HEX],
        long_[NODE_DIGEST_HEX + 2], nonhex[NODE_DIGEST_HEX + 1],
        dotdot[NODE_DIGEST_HEX + 1], slash[NODE_DIGEST_HEX + 1],
        newline[NODE_DIGEST_HEX + 1], upper1[NODE_DIGEST_HEX + 1];
    strcpy(upper, hex);
    for (char *p = upper; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    strcpy(upper1, hex);
    upper1[10] = 'A'; /* a single uppercase digit */
    memcpy(short_, hex, NODE_DIGEST_HEX - 1);
    short_[NODE_DIGEST_HEX - 1] = '\0';
    snprintf(long_, sizeof long_, "%s0", hex);
    strcpy(nonhex, hex);
    nonhex[NODE_DIGEST_HEX - 1] = 'g';
    /* 64 characters, but a path: would escape the directory. */
    strcpy(dotdot, hex);
    memcpy(dotdot, "../", 3);
    strcpy(slash, hex);
    slash[32] = '/';
    strcpy(newline, hex);
    newline[NODE_DIGEST_HEX - 1] = '\n';

    const char *bad[] = {"../x", "../../etc/passwd",
                         "",     "/",
                         upper,  upper1,
                         short_, long_,
                         nonhex, dotdot,
                         slash,  newline};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(node_cache_digest_valid(bad[i]));
        char path[PATH_MAX] = "untouched";
        assert_rc(node_cache_lookup(fx->cache, bad[i], path, sizeof path),
                  -EINVAL);
        node_cache_upload_t *up = NULL;
        assert_rc(node_cache_upload_begin(fx->cache, bad[i], 1, &up), -EINVAL);
        assert_null(up);
    }
    assert_false(node_cache_digest_valid(NULL));
    assert_true(node_cache_digest_valid(hex));

    /* Nothing was created anywhere: the parent holds only the cache, the
     * cache is empty, and no "x" appeared next to the parent. */
    assert_int_equal(s_count_entries(fx->parent), 1);
    assert_int_equal(s_count_entries(fx->dir), 0);
    char outside[PATH_MAX];
    snprintf(outside, sizeof outside, "%s/x", fx->parent);
    assert_int_equal(access(outside, F_OK), -1);
}

static void
test_cache_refuses_content_not_matching_digest(void **state)
{
    s_fix_t *fx = *state;
    uint8_t *data = s_data(10000, 1);
    char digest[NODE_DIGEST_HEX + 1];
    s_sha256_hex(data, 10000, digest);
    data[5000] ^= 1; /* one bit flipped on the way */
    assert_rc(s_upload(fx->cache, digest, data, 10000, 4096), -EBADMSG);

    char path[PATH_MAX];
    assert_rc(node_cache_lookup(fx->cache, digest, path, sizeof path), -ENOENT);
    assert_int_equal(s_count_entries(fx->dir), 0);
    free(data);
}

static void
test_cache_short_upload_is_eio(void **state)
{
    s_fix_t *fx = *state;
    uint8_t *data = s_data(1000, 2);
    char digest[NODE_DIGEST_HEX + 1];
    s_sha256_hex(data, 1000, digest);

    node_cache_upload_t *up = NULL;
    assert_ok(node_cache_upload_begin(fx->cache, digest, 1000, &up));
    assert_ok(node_cache_upload_write(up, 0, data, 999));
    assert_rc(node_cache_upload_finish(&up), -EIO);
    assert_null(up);

    char path[PATH_MAX];
    assert_rc(node_cache_lookup(fx->cache, digest, path, sizeof path), -ENOENT);
    assert_int_equal(s_count_entries(fx->dir), 0);
    free(data);
}

static void
test_cache_write_past_size_is_efbig_and_changes_nothing(void **state)
{
    s_fix_t *fx = *state;
    uint8_t *data = s_data(100, 3);
    char digest[NODE_DIGEST_HEX + 1];
    s_sha256_hex(data, 100, digest);

    node_cache_upload_t *up = NULL;
    assert_ok(node_cache_upload_begin(fx->cache, digest, 100, &up));
    assert_ok(node_cache_upload_write(up, 0, data, 90));
    assert_rc(node_cache_upload_write(up, 90, data + 90, 11), -EFBIG);
    assert_rc(node_cache_upload_write(up, 90, data, SIZE_MAX), -EFBIG);
    /* The refused write was not applied: the rest still completes it. */
    assert_ok(node_cache_upload_write(up, 90, data + 90, 10));
    assert_rc(node_cache_upload_write(up, 100, data, 1), -EFBIG);
    assert_ok(node_cache_upload_finish(&up));

    char path[PATH_MAX];
    assert_ok(node_cache_lookup(fx->cache, digest, path, sizeof path));
    assert_true(s_file_equals(path, data, 100));
    free(data);
}

static void
test_cache_out_of_order_offset_is_einval(void **state)
{
    s_fix_t *fx = *state;
    uint8_t *data = s_data(100, 4);
    char digest[NODE_DIGEST_HEX + 1];
    s_sha256_hex(data, 100, digest);

    node_cache_upload_t *up = NULL;
    assert_ok(node_cache_upload_begin(fx->cache, digest, 100, &up));
    assert_ok(node_cache_upload_write(up, 0, data, 40));
    assert_rc(node_cache_upload_write(up, 60, data + 60, 40), -EINVAL);
    assert_rc(node_cache_upload_write(up, 0, data, 40), -EINVAL); /* replay */
    assert_rc(node_cache_upload_write(up, 39, data + 39, 1), -EINVAL);
    assert_rc(node_cache_upload_write(up, UINT64_MAX, data, 1), -EINVAL);
    assert_ok(node_cache_upload_write(up, 40, NULL, 0)); /* empty is fine */
    assert_rc(node_cache_upload_write(up, 41, NULL, 0), -EINVAL);
    node_cache_upload_abort(&up);
    assert_null(up);
    assert_int_equal(s_count_entries(fx->dir), 0);
    free(data);
}

static void
test_cache_over_max_file_refused_at_begin(void **state)
{
    s_fix_t *fx = *state;
    node_cache_t *small = NULL;
    assert_ok(node_cache_open(fx->dir, 1024, &small));
    char digest[NODE_DIGEST_HEX + 1];
    s_sha256_hex("", 0, digest);

    node_cache_upload_t *up = NULL;
    assert_rc(node_cache_upload_begin(small, digest, 1025, &up), -EFBIG);
    assert_null(up);
    assert_rc(node_cache_upload_begin(small, digest, UINT64_MAX, &up), -EFBIG);
    assert_null(up);
    assert_int_equal(s_count_entries(fx->dir), 0);

    assert_ok(node_cache_upload_begin(small, digest, 1024, &up));
    node_cache_upload_abort(&up);
    node_cache_close(&small);
    assert_null(small);
    assert_int_equal(s_count_entries(fx->dir), 0);
}

static void
test_cache_abort_leaves_nothing(void **state)
{
    s_fix_t *fx = *state;
    uint8_t *data = s_data(8192, 5);
    char digest[NODE_DIGEST_HEX + 1];
    s_sha256_hex(data, 8192, digest);

    node_cache_upload_t *up = NULL;
    assert_ok(node_cache_upload_begin(fx->cache, digest, 8192, &up));
    assert_ok(node_cache_upload_write(up, 0, data, 4096));
    node_cache_upload_abort(&up);
    assert_null(up);
    node_cache_upload_abort(&up); /* safe on a NULL handle */
    node_cache_upload_abort(NULL);

    assert_int_equal(s_count_entries(fx->dir), 0);
    char path[PATH_MAX];
    assert_rc(node_cache_lookup(fx->cache, digest, path, sizeof path), -ENOENT);

    /* A complete upload aborted before finish is not published either. */
    assert_ok(node_cache_upload_begin(fx->cache, digest, 8192, &up));
    assert_ok(node_cache_upload_write(up, 0, data, 8192));
    node_cache_upload_abort(&up);
    assert_int_equal(s_count_entries(fx->dir), 0);
    free(data);
}

static void
test_cache_same_digest_twice_both_succeed(void **state)
{
    s_fix_t *fx = *state;
    size_t len = 64 * 1024;
    uint8_t *data = s_data(len, 6);
    char digest[NODE_DIGEST_HEX + 1];
    s_sha256_hex(data, len, digest);

    /* Two peers ship the same binary at once, interleaved. */
    node_cache_upload_t *a = NULL, *b = NULL;
    assert_ok(node_cache_upload_begin(fx->cache, digest, len, &a));
    assert_ok(node_cache_upload_begin(fx->cache, digest, len, &b));
    for (size_t off = 0; off < len; off += 4096) {
        assert_ok(node_cache_upload_write(a, off, data + off, 4096));
        assert_ok(node_cache_upload_write(b, off, data + off, 4096));
    }
    assert_ok(node_cache_upload_finish(&a));
    char path[PATH_MAX];
    assert_ok(node_cache_lookup(fx->cache, digest, path, sizeof path));
    struct stat before;
    assert_int_equal(stat(path, &before), 0);
    assert_ok(node_cache_upload_finish(&b));

    /* The first file stays as it was; a third upload is fine too. */
    struct stat after;
    assert_int_equal(stat(path, &after), 0);
    assert_int_equal(before.st_ino, after.st_ino);
    assert_ok(s_upload(fx->cache, digest, data, len, len));
    assert_true(s_file_equals(path, data, len));
    assert_int_equal(s_count_entries(fx->dir), 1);
    free(data);
}

static void
test_cache_same_digest_from_two_processes(void **state)
{
    s_fix_t *fx = *state;
    size_t len = 1u << 20;
    uint8_t *data = s_data(len, 7);
    char digest[NODE_DIGEST_HEX + 1];
    s_sha256_hex(data, len, digest);

    /* Two agents sharing the directory; a pipe starts them together. */
    int go[2];
    assert_int_equal(pipe2(go, O_CLOEXEC), 0);
    pid_t pids[2];
    for (int i = 0; i < 2; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            close(go[1]);
            char c;
            while (read(go[0], &c, 1) > 0)
                ;
            node_cache_t *cache = NULL;
            int rc = node_cache_open(fx->dir, S_MAX_FILE, &cache);
            if (rc == 0)
                rc = s_upload(cache, digest, data, len, 8192);
            node_cache_close(&cache);
            free(data); /* so valgrind's leak check passes in the child */
            _exit(rc == 0 ? 0 : 1);
        }
    }
    close(go[0]);
    close(go[1]);
    for (int i = 0; i < 2; i++) {
        int status;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    char path[PATH_MAX];
    assert_ok(node_cache_lookup(fx->cache, digest, path, sizeof path));
    assert_true(s_file_equals(path, data, len));
    assert_int_equal(s_count_entries(fx->dir), 1);
    free(data);
}

static void
test_cache_disk_full_fails_cleanly(void **state)
{
    s_fix_t *fx = *state;
    snprintf(fx->mnt, sizeof fx->mnt, "%s/full", fx->parent);
    assert_int_equal(mkdir(fx->mnt, 0700), 0);
    /* In a private mount namespace the tmpfs goes away with this process,
     * even if it crashes before the teardown unmounts it. */
    if (unshare(CLONE_NEWNS) == 0)
        mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL);
    if (mount("tmpfs", fx->mnt, "tmpfs", 0, "size=64k,mode=0700") != 0) {
        print_message("skipping: cannot mount a tmpfs on '%s': %s (needs "
                      "root)\n",
                      fx->mnt, strerror(errno));
        fx->mnt[0] = '\0';
        skip();
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/cache", fx->mnt);
    node_cache_t *cache = NULL;
    assert_ok(node_cache_open(dir, S_MAX_FILE, &cache));

    size_t len = 40 * 1024;
    uint8_t *first = s_data(len, 8), *second = s_data(len, 9);
    char d1[NODE_DIGEST_HEX + 1], d2[NODE_DIGEST_HEX + 1];
    s_sha256_hex(first, len, d1);
    s_sha256_hex(second, len, d2);
    assert_ok(s_upload(cache, d1, first, len, 4096));

    /* 40 KiB more does not fit in 64 KiB. */
    assert_rc(s_upload(cache, d2, second, len, 4096), -ENOSPC);
    char path[PATH_MAX];
    assert_rc(node_cache_lookup(cache, d2, path, sizeof path), -ENOENT);
    assert_int_equal(s_count_entries(dir), 1);

    /* Nor does one upload bigger than the whole filesystem. */
    uint8_t *big = s_data(256 * 1024, 10);
    char d3[NODE_DIGEST_HEX + 1];
    s_sha256_hex(big, 256 * 1024, d3);
    assert_rc(s_upload(cache, d3, big, 256 * 1024, 4096), -ENOSPC);
    assert_int_equal(s_count_entries(dir), 1);

    /* The cache still works: the first file is intact, a small one fits. */
    assert_ok(node_cache_lookup(cache, d1, path, sizeof path));
    assert_true(s_file_equals(path, first, len));
    char d4[NODE_DIGEST_HEX + 1];
    s_sha256_hex(second, 1024, d4);
    assert_ok(s_upload(cache, d4, second, 1024, 1024));
    assert_ok(node_cache_lookup(cache, d4, path, sizeof path));
    assert_int_equal(s_count_entries(dir), 2);

    node_cache_close(&cache);
    free(first);
    free(second);
    free(big);
}

static void
test_cache_write_error_drops_upload(void **state)
{
    s_fix_t *fx = *state;
    /* A write the filesystem refuses mid-upload (here RLIMIT_FSIZE, after
     * the space was reserved): the error surfaces once and sticks. */
    size_t len = 32 * 1024;
    uint8_t *data = s_data(len, 11);
    char digest[NODE_DIGEST_HEX + 1];
    s_sha256_hex(data, len, digest);

    node_cache_upload_t *up = NULL;
    assert_ok(node_cache_upload_begin(fx->cache, digest, len, &up));
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 8192;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = node_cache_upload_write(up, 0, data, 16384);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, old_handler);
    assert_rc(rc, -EFBIG);

    /* Dropped: the temp file is already gone, later calls fail. */
    assert_int_equal(s_count_entries(fx->dir), 0);
    assert_rc(node_cache_upload_write(up, 16384, data + 16384, 16384), -EFBIG);
    assert_rc(node_cache_upload_finish(&up), -EFBIG);
    assert_null(up);
    char path[PATH_MAX];
    assert_rc(node_cache_lookup(fx->cache, digest, path, sizeof path), -ENOENT);
    assert_int_equal(s_count_entries(fx->dir), 0);

    assert_ok(s_upload(fx->cache, digest, data, len, 8192));
    assert_ok(node_cache_lookup(fx->cache, digest, path, sizeof path));
    free(data);
}

static void
test_cache_close_while_uploading_is_safe(void **state)
{
    s_fix_t *fx = *state;
    uint8_t *data = s_data(1000, 14);
    char digest[NODE_DIGEST_HEX + 1];
    s_sha256_hex(data, 1000, digest);

    /* The agent shuts its cache while a peer is still sending. */
    node_cache_upload_t *up = NULL;
    assert_ok(node_cache_upload_begin(fx->cache, digest, 1000, &up));
    assert_ok(node_cache_upload_write(up, 0, data, 500));
    node_cache_close(&fx->cache);
    assert_null(fx->cache);
    assert_ok(node_cache_upload_write(up, 500, data + 500, 500));
    assert_ok(node_cache_upload_finish(&up));

    assert_ok(node_cache_open(fx->dir, S_MAX_FILE, &fx->cache));
    char path[PATH_MAX];
    assert_ok(node_cache_lookup(fx->cache, digest, path, sizeof path));
    assert_true(s_file_equals(path, data, 1000));
    free(data);
}

static void
test_cache_empty_file(void **state)
{
    s_fix_t *fx = *state;
    char digest[NODE_DIGEST_HEX + 1];
    s_sha256_hex("", 0, digest);
    assert_string_equal(digest, "e3b0c44298fc1c149afbf4c8996fb924"
                                "27ae41e4649b934ca495991b7852b855");
    assert_ok(s_upload(fx->cache, digest, "", 0, 1));
    char path[PATH_MAX];
    assert_ok(node_cache_lookup(fx->cache, digest, path, sizeof path));
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 0);
}

static void
test_cache_lookup_sees_only_regular_files(void **state)
{
    s_fix_t *fx = *state;
    uint8_t *data = s_data(100, 12);
    char digest[NODE_DIGEST_HEX + 1], other[NODE_DIGEST_HEX + 1];
    s_sha256_hex(data, 100, digest);
    s_sha256_hex(data, 50, other);

    /* A directory and a symlink where files should be. */
    char p1[PATH_MAX], p2[PATH_MAX], path[PATH_MAX];
    snprintf(p1, sizeof p1, "%s/%s", fx->dir, digest);
    snprintf(p2, sizeof p2, "%s/%s", fx->dir, other);
    assert_int_equal(mkdir(p1, 0700), 0);
    assert_int_equal(symlink("/bin/sh", p2), 0);
    assert_rc(node_cache_lookup(fx->cache, digest, path, sizeof path), -ENOENT);
    assert_rc(node_cache_lookup(fx->cache, other, path, sizeof path), -ENOENT);

    /* Publishing over them fails and changes nothing. */
    assert_rc(s_upload(fx->cache, digest, data, 100, 100), -EEXIST);
    assert_rc(s_upload(fx->cache, other, data, 50, 50), -EEXIST);
    assert_int_equal(s_count_entries(fx->dir), 2);
    char target[16] = "";
    assert_int_equal(readlink(p2, target, sizeof target - 1), 7);
    assert_string_equal(target, "/bin/sh");
    free(data);
}

static void
test_cache_lookup_path_too_long(void **state)
{
    s_fix_t *fx = *state;
    char digest[NODE_DIGEST_HEX + 1];
    s_sha256_hex("y", 1, digest);
    assert_ok(s_upload(fx->cache, digest, "y", 1, 1));
    char path[NODE_DIGEST_HEX + 1];
    assert_rc(node_cache_lookup(fx->cache, digest, path, sizeof path),
              -ENAMETOOLONG);
}

static void
test_cache_file_digest(void **state)
{
    s_fix_t *fx = *state;
    char path[PATH_MAX], out[NODE_DIGEST_HEX + 1];
    snprintf(path, sizeof path, "%s/abc", fx->parent);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("abc", f);
    fclose(f);
    assert_ok(node_cache_file_digest(path, out));
    assert_string_equal(out, "ba7816bf8f01cfea414140de5dae2223"
                             "b00361a396177a9cb410ff61f20015ad");

    /* Larger than one read: streamed, same as hashing it in one go. */
    size_t len = 300 * 1000;
    uint8_t *data = s_data(len, 13);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
    char want[NODE_DIGEST_HEX + 1];
    s_sha256_hex(data, len, want);
    assert_ok(node_cache_file_digest(path, out));
    assert_string_equal(out, want);
    free(data);

    snprintf(path, sizeof path, "%s/missing", fx->parent);
    assert_rc(node_cache_file_digest(path, out), -ENOENT);
}

static void
test_cache_open_refuses_unsafe_dirs(void **state)
{
    s_fix_t *fx = *state;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/open", fx->parent);
    assert_int_equal(mkdir(dir, 0700), 0);
    node_cache_t *cache = NULL;

    /* Group or other access: someone else could plant an executable. */
    static const mode_t modes[] = {0777, 0750, 0705, 0720, 0701};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        assert_int_equal(chmod(dir, modes[i]), 0);
        assert_rc(node_cache_open(dir, S_MAX_FILE, &cache), -EPERM);
        assert_null(cache);
    }

    /* Another owner (we run as root in CI; skip that part otherwise). */
    assert_int_equal(chmod(dir, 0700), 0);
    if (geteuid() == 0) {
        assert_int_equal(chown(dir, 65534, 65534), 0);
        assert_rc(node_cache_open(dir, S_MAX_FILE, &cache), -EPERM);
        assert_null(cache);
        assert_int_equal(chown(dir, 0, 0), 0);
    }
    assert_ok(node_cache_open(dir, S_MAX_FILE, &cache));
    node_cache_close(&cache);
    node_cache_close(&cache); /* safe twice */
    node_cache_close(NULL);

    /* A symlink to a good directory, a file, a missing parent. */
    char link[PATH_MAX], file[PATH_MAX], deep[PATH_MAX];
    snprintf(link, sizeof link, "%s/link", fx->parent);
    assert_int_equal(symlink(dir, link), 0);
    assert_true(node_cache_open(link, S_MAX_FILE, &cache) < 0);
    assert_null(cache);
    snprintf(file, sizeof file, "%s/file", fx->parent);
    int fd = open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    close(fd);
    assert_rc(node_cache_open(file, S_MAX_FILE, &cache), -ENOTDIR);
    assert_null(cache);
    snprintf(deep, sizeof deep, "%s/no/such", fx->parent);
    assert_rc(node_cache_open(deep, S_MAX_FILE, &cache), -ENOENT);
    assert_null(cache);
}

#define S_TEST(fn) cmocka_unit_test_setup_teardown(fn, s_setup, s_teardown)

int
main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        S_TEST(test_cache_upload_then_lookup_and_run),
        S_TEST(test_cache_dir_created_0700),
        S_TEST(test_cache_rejects_malformed_digests),
        S_TEST(test_cache_refuses_content_not_matching_digest),
        S_TEST(test_cache_short_upload_is_eio),
        S_TEST(test_cache_write_past_size_is_efbig_and_changes_nothing),
        S_TEST(test_cache_out_of_order_offset_is_einval),
        S_TEST(test_cache_over_max_file_refused_at_begin),
        S_TEST(test_cache_abort_leaves_nothing),
        S_TEST(test_cache_same_digest_twice_both_succeed),
        S_TEST(test_cache_same_digest_from_two_processes),
        S_TEST(test_cache_disk_full_fails_cleanly),
        S_TEST(test_cache_write_error_drops_upload),
        S_TEST(test_cache_close_while_uploading_is_safe),
        S_TEST(test_cache_empty_file),
        S_TEST(test_cache_lookup_sees_only_regular_files),
        S_TEST(test_cache_lookup_path_too_long),
        S_TEST(test_cache_file_digest),
        S_TEST(test_cache_open_refuses_unsafe_dirs),
    };
    int failed = cmocka_run_group_tests_name("cache with O_TMPFILE", tests,
                                             s_group_tmpfile, NULL);
    failed += cmocka_run_group_tests_name("cache with named temp files", tests,
                                          s_group_fallback, NULL);
    return failed ? 1 : 0;
}
