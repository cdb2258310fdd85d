/*
 * fuzz_ring_header.c - dmp__ring_open on a shared-memory segment whose
 * bytes anyone holding the name may have written (a crashed or hostile
 * process of the same user), then the operations an opener makes on it.
 *
 * The input is the segment: a header page and the data area (zero-padded
 * to the smallest size open accepts). Two parts are not taken from the
 * input: the process-shared mutexes (a garbage pthread mutex is undefined
 * behaviour in any program, not a decoding question) and the notify FIFO
 * path (open(2) on an arbitrary path may block or touch a device); the
 * harness puts fresh mutexes there, and "" or a FIFO of its own in the
 * path, as the input's first path byte chooses.
 *
 * Promises checked: open refuses a bad header with DMP_EPROTO and maps
 * nothing; on a header it accepts, count, poll, get, put, task_done,
 * join and the writer holds return defined codes without waiting, every
 * item got is at most item_max bytes, and nothing reads or writes outside
 * the mapping (ASan/UBSan, and SIGBUS/SIGSEGV past the segment's end).
 */
#define _GNU_SOURCE
#include "fuzz.h"

#include <pthread.h>
#include <stdalign.h>
#include <sys/mman.h>

/* A copy of dmp_ring.c's s_hdr_t layout, as far as the harness needs it.
 * If dmp_ring.c changes, the check against a real ring in s_ring_init
 * fails: update this copy. */
typedef struct {
    int32_t pid;
    uint32_t holds;
    uint64_t start;
} s_ring_writer_t;
typedef struct {
    uint64_t pos;
    int64_t n, done;
} s_ring_state_t;
typedef struct {
    alignas(64) pthread_mutex_t lock;
    uint64_t seen_pos;
    int64_t seen_n;
    alignas(64) s_ring_state_t state[2];
    uint32_t cur;
    uint32_t word;
} s_ring_side_t;
typedef struct {
    uint64_t magic;
    uint32_t version, hdr_size, struct_size, shutdown;
    uint64_t capacity, seg_size, item_max;
    int64_t maxsize;
    s_ring_side_t put;
    s_ring_side_t get;
    alignas(64) uint64_t sleep[3];
    uint32_t joined;
    uint32_t pad0;
    uint64_t ool_next;
    alignas(64) char notify[256];
    uint32_t pipe_mode;
    uint32_t pad1;
    s_ring_writer_t writers[64];
} s_ring_hdr_t;

#define S_RING_HDR 4096u
#define S_RING_MIN (S_RING_HDR + 64u)
#define S_RING_MAGIC 0x31474e4952504d44ull

static char s_ring_name[64];
static char s_ring_fifo[PATH_MAX];
static pthread_mutex_t s_ring_fresh_lock; /* the bytes of a fresh mutex */

static void
s_ring_cleanup(void)
{
    if (s_ring_name[0])
        dmp__ring_unlink(s_ring_name);
}

#ifdef FUZZ_REPLAY
/* The replay runs open findings in children, each with its own segment
 * name: removes what one of them may have left behind. */
static void
s_ring_cleanup_pid(pid_t pid)
{
    char name[64];
    snprintf(name, sizeof name, "/dmp-fuzz-%d", (int)pid);
    dmp__ring_unlink(name);
}
#endif

/* Once: names, the FIFO, a real ring to check the layout copy against. */
static void
s_ring_init(void)
{
    if (s_ring_name[0])
        return;
    snprintf(s_ring_name, sizeof s_ring_name, "/dmp-fuzz-%d",
             (int)getpid());
    snprintf(s_ring_fifo, sizeof s_ring_fifo, "%s/wake", fuzz_tmpdir());
    FUZZ_CHECK(mkfifo(s_ring_fifo, 0600) == 0, "mkfifo: %s",
               strerror(errno));
    atexit(s_ring_cleanup);

    dmp__ring_unlink(s_ring_name);
    dmp__ring_t *r = NULL;
    dmp__ring_opts_t opts = {.capacity = 64};
    FUZZ_CHECK(dmp__ring_create(s_ring_name, &opts, &r) == 0,
               "cannot create a ring");
    int fd = shm_open(s_ring_name, O_RDONLY | O_CLOEXEC, 0);
    FUZZ_CHECK(fd >= 0, "shm_open");
    s_ring_hdr_t h;
    FUZZ_CHECK(pread(fd, &h, sizeof h, 0) == (ssize_t)sizeof h, "pread");
    close(fd);
    FUZZ_CHECK(h.magic == S_RING_MAGIC && h.hdr_size == S_RING_HDR &&
                   h.struct_size == sizeof(s_ring_hdr_t) &&
                   h.capacity == 64 && h.seg_size == S_RING_HDR + 64,
               "fuzz_ring_header.c's copy of s_hdr_t is out of date");
    dmp__ring_close(&r);
    dmp__ring_unlink(s_ring_name);

    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&s_ring_fresh_lock, &ma);
    pthread_mutexattr_destroy(&ma);
}

/* Writes the segment the opener will find. */
static void
s_ring_make_segment(const uint8_t *data, size_t size)
{
    size_t seg = size < S_RING_MIN ? S_RING_MIN : size;
    uint8_t *img = calloc(1, seg);
    FUZZ_CHECK(img != NULL, "out of memory");
    memcpy(img, data, size);
    s_ring_hdr_t *h = (s_ring_hdr_t *)img;
    memcpy(&h->put.lock, &s_ring_fresh_lock, sizeof h->put.lock);
    memcpy(&h->get.lock, &s_ring_fresh_lock, sizeof h->get.lock);
    bool notify = h->notify[0] != 0;
    memset(h->notify, 0, sizeof h->notify);
    if (notify)
        dmp__strlcpy(h->notify, s_ring_fifo, sizeof h->notify);

    dmp__ring_unlink(s_ring_name);
    int fd = shm_open(s_ring_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
                      0600);
    FUZZ_CHECK(fd >= 0, "shm_open %s: %s", s_ring_name, strerror(errno));
    for (size_t off = 0; off < seg;) {
        ssize_t n = pwrite(fd, img + off, seg - off, (off_t)off);
        FUZZ_CHECK(n > 0, "pwrite: %s", strerror(errno));
        off += (size_t)n;
    }
    close(fd);
    free(img);
}

static bool
s_ring_rc_in(int rc, const int *ok, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (rc == ok[i])
            return true;
    return false;
}
#define S_RING_RC_IN(rc, ...)                                                \
    s_ring_rc_in((rc), (const int[]){__VA_ARGS__},                           \
                 sizeof((const int[]){__VA_ARGS__}) / sizeof(int))

FUZZ_TARGET(ring_header)
{
    s_ring_init();
    s_ring_make_segment(data, size);
    /* The fields the harness reads back come from the input as well. */
    s_ring_hdr_t h;
    memset(&h, 0, sizeof h);
    memcpy(&h, data, size < sizeof h ? size : sizeof h);

    dmp__ring_t *r = NULL;
    int rc = dmp__ring_open(s_ring_name, &r);
    if (rc != 0) {
        FUZZ_CHECK(rc == DMP_EPROTO, "open: %s", dmp_strerror(rc));
        FUZZ_CHECK(r == NULL, "refused but a ring came out");
        dmp__ring_unlink(s_ring_name);
        return 0;
    }
    /* Accepted: the sizes it trusts from here on are sane. */
    FUZZ_CHECK(h.capacity >= 64 && h.capacity % 8 == 0 &&
                   h.seg_size == S_RING_HDR + h.capacity,
               "accepted capacity %llu seg_size %llu",
               (unsigned long long)h.capacity,
               (unsigned long long)h.seg_size);

    FUZZ_CHECK(dmp__ring_count(r) >= 0, "count");
    rc = dmp__ring_poll(r, 0);
    FUZZ_CHECK(rc == 0 || rc == 1, "poll: %d", rc);
    (void)dmp__ring_seq(r);

    /* Take what is there, as a getter would. */
    for (int i = 0; i < 8; i++) {
        uint8_t *item = NULL;
        size_t len = 0;
        rc = dmp__ring_get(r, &item, &len, 0);
        FUZZ_CHECK(S_RING_RC_IN(rc, 0, DMP_EPROTO, DMP_EEMPTY, DMP_EEOF,
                                -EBADF, -ENOMEM),
                   "get: %s", dmp_strerror(rc));
        if (rc == 0) {
            FUZZ_CHECK(len <= h.item_max || len <= h.capacity,
                       "item of %zu bytes", len);
            dmp__free(item);
        }
        if (rc != 0 && rc != DMP_EPROTO)
            break;
    }

    /* Add items, inline and (over a quarter of the ring) out of line. */
    static uint8_t big[4096];
    size_t sizes[] = {0, 7, h.capacity / 4 + 1 <= sizeof big
                               ? (size_t)(h.capacity / 4 + 1)
                               : sizeof big};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        rc = dmp__ring_put(r, big, sizes[i], 0);
        FUZZ_CHECK(S_RING_RC_IN(rc, 0, DMP_EFULL, -EMSGSIZE, -EBADF, -EEXIST),
                   "put of %zu: %s", sizes[i], dmp_strerror(rc));
    }
    uint8_t *item = NULL;
    size_t len = 0;
    rc = dmp__ring_get(r, &item, &len, 0);
    FUZZ_CHECK(S_RING_RC_IN(rc, 0, DMP_EPROTO, DMP_EEMPTY, DMP_EEOF, -EBADF),
               "get after put: %s", dmp_strerror(rc));
    dmp__free(item);

    rc = dmp__ring_task_done(r);
    FUZZ_CHECK(rc == 0 || rc == -EINVAL, "task_done: %d", rc);
    rc = dmp__ring_join(r, 0);
    FUZZ_CHECK(S_RING_RC_IN(rc, 0, -ETIMEDOUT, -EBADF), "join: %d", rc);
    rc = dmp__ring_hold_writer(r);
    FUZZ_CHECK(rc == 0 || rc == -ENOSPC, "hold_writer: %d", rc);
    if (rc == 0)
        FUZZ_CHECK(dmp__ring_close_writer(r) == 0, "close_writer");
    FUZZ_CHECK(dmp__ring_count(r) >= 0, "count");

    dmp__ring_close(&r);
    FUZZ_CHECK(r == NULL, "close did not null");
    dmp__ring_unlink(s_ring_name);
    return 0;
}
