/*
 * fuzz_shared_header.c - dmp__seg_open on the shared-memory segment of a
 * Value or Array whose bytes anyone holding the name may have written (a
 * crashed or hostile process of the same user), then what an opener does
 * with it: the lock, every element, an add, the holder table.
 *
 * The input is the segment: a header page, the holders page and the
 * elements (zero-padded to the smallest size open accepts). Two parts are
 * not taken from the input: the holder table's pthread mutex (a garbage
 * pthread mutex is undefined behaviour in any program, not a decoding
 * question) and the notify FIFO path (open(2) on an arbitrary path may
 * block or touch a device); the harness puts a fresh mutex there, and ""
 * or a FIFO of its own in the path, as the input's first path byte
 * chooses. The lock word is taken from the input: it may name any pid as
 * the holder, which only makes a one-try acquire fail or take over.
 *
 * Promises checked: open refuses a bad header with DMP_EPROTO and maps
 * nothing; on a header it accepts, the sizes are consistent and inside the
 * segment, a one-try lock returns 0, DMP_EOWNERDEAD or -EBUSY without
 * waiting, every element reads and writes inside the mapping (ASan/UBSan,
 * and SIGBUS/SIGSEGV past the segment's end), a release by the holder
 * succeeds, and hold, unhold and sweep return defined counts.
 */
#define _GNU_SOURCE
#include "fuzz.h"

#include <pthread.h>
#include <stdalign.h>
#include <sys/mman.h>

/* A copy of dmp_segment.c's s_hdr_t layout, as far as the harness needs
 * it. If dmp_segment.c changes, the check against a real segment in
 * s_shh_init fails: update this copy. */
typedef struct {
    uint64_t magic;
    uint32_t version, struct_size, typecode, itemsize;
    uint64_t length, seg_size;
    uint32_t has_lock, pad0;
    char notify[256];
    alignas(64) uint64_t lockw;
    uint64_t tag;
    uint32_t sleepers, wakes, owner_died, remote_waiters, want, handoff;
    alignas(64) pthread_mutex_t meta;
    uint32_t overflow;
} s_shh_hdr_t;

#define S_SHH_DATA 8192u
#define S_SHH_MIN (S_SHH_DATA + 8u)
#define S_SHH_MAGIC 0x3152485350504d44ull

static char s_shh_name[64];
static char s_shh_fifo[PATH_MAX];
static pthread_mutex_t s_shh_fresh_meta; /* the bytes of a fresh mutex */

static void
s_shh_cleanup(void)
{
    if (s_shh_name[0])
        dmp__seg_unlink(s_shh_name);
}

#ifdef FUZZ_REPLAY
/* The replay runs open findings in children, each with its own segment
 * name: removes what one of them may have left behind. */
static void
s_shh_cleanup_pid(pid_t pid)
{
    char name[64];
    snprintf(name, sizeof name, "/dmp-fuzz-seg-%d", (int)pid);
    dmp__seg_unlink(name);
}
#endif

/* Once: names, the FIFO, a real segment to check the layout copy. */
static void
s_shh_init(void)
{
    if (s_shh_name[0])
        return;
    snprintf(s_shh_name, sizeof s_shh_name, "/dmp-fuzz-seg-%d",
             (int)getpid());
    snprintf(s_shh_fifo, sizeof s_shh_fifo, "%s/seg-wake", fuzz_tmpdir());
    FUZZ_CHECK(mkfifo(s_shh_fifo, 0600) == 0, "mkfifo: %s",
               strerror(errno));
    atexit(s_shh_cleanup);

    dmp__seg_unlink(s_shh_name);
    dmp__seg_t *s = NULL;
    FUZZ_CHECK(dmp__seg_create(s_shh_name, 'h', 5, true, "", &s) == 0,
               "cannot create a segment");
    int fd = shm_open(s_shh_name, O_RDONLY | O_CLOEXEC, 0);
    FUZZ_CHECK(fd >= 0, "shm_open");
    s_shh_hdr_t h;
    FUZZ_CHECK(pread(fd, &h, sizeof h, 0) == (ssize_t)sizeof h, "pread");
    close(fd);
    FUZZ_CHECK(h.magic == S_SHH_MAGIC && h.struct_size == sizeof h &&
                   h.typecode == 'h' && h.itemsize == 2 && h.length == 5 &&
                   h.seg_size == S_SHH_DATA + 16 && h.has_lock == 1,
               "fuzz_shared_header.c's copy of s_hdr_t is out of date");
    dmp__seg_close(&s);
    dmp__seg_unlink(s_shh_name);

    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&s_shh_fresh_meta, &ma);
    pthread_mutexattr_destroy(&ma);
}

/* Writes the segment the opener will find. */
static void
s_shh_make_segment(const uint8_t *data, size_t size)
{
    size_t seg = size < S_SHH_MIN ? S_SHH_MIN : size;
    uint8_t *img = calloc(1, seg);
    FUZZ_CHECK(img != NULL, "out of memory");
    memcpy(img, data, size);
    s_shh_hdr_t *h = (s_shh_hdr_t *)img;
    memcpy(&h->meta, &s_shh_fresh_meta, sizeof h->meta);
    bool notify = h->notify[0] != 0;
    memset(h->notify, 0, sizeof h->notify);
    if (notify)
        dmp__strlcpy(h->notify, s_shh_fifo, sizeof h->notify);

    dmp__seg_unlink(s_shh_name);
    int fd = shm_open(s_shh_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
                      0600);
    FUZZ_CHECK(fd >= 0, "shm_open %s: %s", s_shh_name, strerror(errno));
    for (size_t off = 0; off < seg;) {
        ssize_t n = pwrite(fd, img + off, seg - off, (off_t)off);
        FUZZ_CHECK(n > 0, "pwrite: %s", strerror(errno));
        off += (size_t)n;
    }
    close(fd);
    free(img);
}

FUZZ_TARGET(shared_header)
{
    s_shh_init();
    s_shh_make_segment(data, size);
    s_shh_hdr_t h;
    memset(&h, 0, sizeof h);
    memcpy(&h, data, size < sizeof h ? size : sizeof h);
    size_t seg_bytes = size < S_SHH_MIN ? S_SHH_MIN : size;

    dmp__seg_t *s = NULL;
    int rc = dmp__seg_open(s_shh_name, &s);
    if (rc != 0) {
        FUZZ_CHECK(rc == DMP_EPROTO, "open: %s", dmp_strerror(rc));
        FUZZ_CHECK(s == NULL, "refused but a segment came out");
        dmp__seg_unlink(s_shh_name);
        return 0;
    }
    /* Accepted: what it trusts from here on is sane. */
    char tc = dmp__seg_typecode(s);
    uint64_t length = dmp__seg_length(s);
    size_t itemsize = dmp__typecode_size(tc);
    FUZZ_CHECK(itemsize > 0 && tc == (char)h.typecode, "typecode %d", tc);
    FUZZ_CHECK(length >= 1 && length == h.length &&
                   S_SHH_DATA + length * itemsize <= seg_bytes,
               "length %llu in a segment of %zu bytes",
               (unsigned long long)length, seg_bytes);

    /* The lock, once (it may be held by any pid the input named). */
    rc = dmp__seg_lock(s, 0, true, false);
    FUZZ_CHECK(rc == 0 || rc == DMP_EOWNERDEAD || rc == -EBUSY,
               "lock: %s", dmp_strerror(rc));
    bool locked = rc != -EBUSY;
    uint8_t *elems = dmp__seg_data(s);
    for (uint64_t i = 0; i < length && i < 4096; i++) {
        uint8_t *p = elems + i * itemsize;
        int64_t v = 0;
        if (dmp__typecode_is_float(tc)) {
            double d = dmp__elem_get_double(tc, p);
            FUZZ_CHECK(dmp__elem_set_double(tc, p, d) == 0, "set_double");
        } else {
            FUZZ_CHECK(dmp__elem_get_int(tc, p, &v) == 0, "get_int");
            dmp__elem_set_int(tc, p, v);
        }
    }
    int64_t after = 0;
    dmp__elem_add_int(tc, elems + (length - 1) * itemsize, 1, &after);
    if (locked)
        FUZZ_CHECK(dmp__seg_unlock(s) == 0, "unlock of a lock we hold");
    rc = dmp__seg_unlock(s);
    /* (unless the input named this very process as the holder) */
    FUZZ_CHECK(rc == -EPERM || (!locked && (uint32_t)h.lockw ==
                                               (uint32_t)getpid()),
               "unlock of a lock we do not hold: %d", rc);

    /* The holder table. */
    rc = dmp__seg_hold(s, getpid(), false);
    FUZZ_CHECK(rc == 0, "hold: %d", rc);
    rc = dmp__seg_sweep(s);
    FUZZ_CHECK(rc >= 1, "sweep after our hold: %d", rc);
    rc = dmp__seg_unhold(s, getpid());
    FUZZ_CHECK(rc >= 0, "unhold: %d", rc);

    dmp__seg_close(&s);
    FUZZ_CHECK(s == NULL, "close did not null");
    dmp__seg_unlink(s_shh_name);
    return 0;
}
