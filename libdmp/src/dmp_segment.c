/*
 * dmp_segment.c - the same-host data plane of Value and Array: one POSIX
 * shm segment per object, mapped by every process of the owner's host
 * that holds a handle, and by the owning agent.
 *
 * Segment: a header page (s_hdr_t), a page of holders (s_holder_t), then
 * the elements, naturally aligned. Everything in the header is outside
 * input to whoever maps it: open checks it once and keeps its own copies
 * of the sizes, so a later change cannot make this process index out of
 * bounds.
 *
 * The lock is a robust process-shared lock of our own (see "the lock"
 * below for why not glibc's robust mutex): a process killed while holding
 * it is replaced by the next waiter, which learns it (DMP_EOWNERDEAD).
 * Whoever gets that news without being an explicit acquirer (a get or set
 * taking the lock for a moment) leaves it in `owner_died` for the next
 * explicit one, so "the holder died" is told to exactly one acquirer. The
 * owning agent holds the same lock in the name of a process on another
 * host; when that holder's lease runs out it sets `owner_died` and
 * releases.
 *
 * The agent's loop never waits for the lock: it only tries it. While
 * processes elsewhere wait for it at the agent, `remote_waiters` is set:
 * a release then pokes the agent's wake-up FIFO (once per attempt of the
 * agent: `want` is re-armed before each try), and local acquirers give the
 * agent up to S_DEFER_NS to take its turn (`handoff` moves when it did), so
 * a tight local loop cannot starve remote acquirers.
 *
 * Holders: a process of this host holding a handle has a slot (pid, start
 * time); a parent may reserve one for a child it just started. The agent
 * removes the object once no live holder is left here or elsewhere. The
 * table has its own lock (`meta`, a pthread robust mutex: rarely taken,
 * and held for a few stores at most).
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <assert.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <math.h>
#include <stdalign.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define S_MAGIC 0x3152485350504d44ull /* "DMPPSHR1" little-endian */
#define S_VERSION 2u
#define S_PAGE 4096u
#define S_HOLDERS_OFF S_PAGE
#define S_HOLDERS_MAX (S_PAGE / sizeof(s_holder_t))
#define S_DATA_OFF (2 * S_PAGE)
#define S_NOTIFY_MAX 256
/* A local acquirer waits at most this long for the agent to take the lock
 * for a process elsewhere (the agent is woken by the release it saw). */
#define S_DEFER_NS 1000000ll

enum {
    S_HOLD_OWN = 1u,      /* the process itself holds a handle */
    S_HOLD_RESERVED = 2u, /* its parent holds one for it */
};

typedef struct {
    int32_t pid;    /* 0: free; written last when a slot is taken */
    uint32_t flags; /* S_HOLD_* */
    uint64_t start; /* its start time, so that a reused pid is not it */
} s_holder_t;

_Static_assert(S_PAGE % sizeof(s_holder_t) == 0, "holder slots");

typedef struct {
    uint64_t magic;       /* S_MAGIC, written last by create */
    uint32_t version;     /* S_VERSION */
    uint32_t struct_size; /* sizeof(s_hdr_t): catches ABI mismatches */
    uint32_t typecode;    /* one of DMP__TYPECODES */
    uint32_t itemsize;    /* dmp__typecode_size(typecode) */
    uint64_t length;      /* elements */
    uint64_t seg_size;    /* S_DATA_OFF + length x itemsize, padded to 8 */
    uint32_t has_lock;    /* Value/Array: 1; Raw*: 0 */
    uint32_t pad0;
    char notify[S_NOTIFY_MAX]; /* the owner's wake-up FIFO; fixed */
    /* The object's lock (see "the lock" below) and what every acquire
     * and release reads. */
    alignas(64) uint64_t lockw; /* owner pid (low half, 0: free) and the
                                 * release count (high half: futex word) */
    uint64_t tag;            /* the holder's pid and start time (low 32
                              * bits), written after it took the lock */
    uint32_t sleepers;       /* waiters asleep on the release count */
    uint32_t wakes;          /* wakes issued to them, not yet absorbed */
    uint32_t owner_died;     /* a holder died; not told to anyone yet */
    uint32_t remote_waiters; /* processes elsewhere wait at the owner */
    uint32_t want;           /* the owner wants a poke at the next release */
    uint32_t handoff;        /* futex word: the owner took the lock */
    /* The holder table's lock. */
    alignas(64) pthread_mutex_t meta;
    uint32_t overflow; /* holds that found the table full */
} s_hdr_t;

_Static_assert(sizeof(s_hdr_t) <= S_PAGE, "segment header exceeds a page");

struct dmp__seg {
    s_hdr_t *hdr;
    s_holder_t *holders;
    uint8_t *data;
    size_t map_size;
    /* Copies of the header's sizes, checked at open. */
    char typecode;
    size_t itemsize;
    uint64_t length;
    bool has_lock;
    char notify[S_NOTIFY_MAX];
};

/* ---- typecodes and elements ------------------------------------------ */

size_t
dmp__typecode_size(int tc)
{
    switch (tc) {
    case 'c': case 'b': case 'B':
        return 1;
    case 'h': case 'H':
        return 2;
    case 'i': case 'I': case 'f':
        return 4;
    case 'l': case 'L': case 'q': case 'Q': case 'd':
        return 8;
    default:
        return 0;
    }
}

bool
dmp__typecode_is_float(int tc)
{
    return tc == 'f' || tc == 'd';
}

#define S_LOAD DMP__ELEM_LOAD
#define S_STORE DMP__ELEM_STORE

static float
s_load_f(const void *p)
{
    uint32_t bits = S_LOAD(const uint32_t, p);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static double
s_load_d(const void *p)
{
    uint64_t bits = S_LOAD(const uint64_t, p);
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

static void
s_store_f(void *p, float f)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    S_STORE(uint32_t, p, bits);
}

static void
s_store_d(void *p, double d)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    S_STORE(uint64_t, p, bits);
}

double
dmp__elem_get_double(int tc, const void *p)
{
    if (tc == 'f')
        return s_load_f(p);
    if (tc == 'd')
        return s_load_d(p);
    if (tc == 'L' || tc == 'Q')
        return (double)S_LOAD(const uint64_t, p);
    int64_t v = 0;
    dmp__elem_get_int(tc, p, &v);
    return (double)v;
}

int
dmp__elem_set_double(int tc, void *p, double v)
{
    if (tc == 'f')
        s_store_f(p, (float)v);
    else if (tc == 'd')
        s_store_d(p, v);
    else
        return -EINVAL;
    return 0;
}

/* Compare-and-swap loops for the floats; the integers add natively
 * (two's complement wraps as ctypes does). */
static double
s_add_float(int tc, void *p, double delta)
{
    if (tc == 'f') {
        uint32_t old = S_LOAD(uint32_t, p), bits;
        float f;
        do {
            memcpy(&f, &old, sizeof f);
            f = (float)(f + delta);
            memcpy(&bits, &f, sizeof bits);
        } while (!__atomic_compare_exchange_n((uint32_t *)p, &old, bits, true,
                                              __ATOMIC_SEQ_CST,
                                              __ATOMIC_RELAXED));
        return f;
    }
    uint64_t old = S_LOAD(uint64_t, p), bits;
    double d;
    do {
        memcpy(&d, &old, sizeof d);
        d += delta;
        memcpy(&bits, &d, sizeof bits);
    } while (!__atomic_compare_exchange_n((uint64_t *)p, &old, bits, true,
                                          __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
    return d;
}

void
dmp__elem_add_int(int tc, void *p, int64_t delta, int64_t *after)
{
    uint64_t d = (uint64_t)delta;
    int64_t v;
    switch (tc) {
    case 'c': case 'B':
        v = __atomic_add_fetch((uint8_t *)p, (uint8_t)d, __ATOMIC_SEQ_CST);
        break;
    case 'b':
        v = (int8_t)__atomic_add_fetch((uint8_t *)p, (uint8_t)d,
                                       __ATOMIC_SEQ_CST);
        break;
    case 'h':
        v = (int16_t)__atomic_add_fetch((uint16_t *)p, (uint16_t)d,
                                        __ATOMIC_SEQ_CST);
        break;
    case 'H':
        v = __atomic_add_fetch((uint16_t *)p, (uint16_t)d, __ATOMIC_SEQ_CST);
        break;
    case 'i':
        v = (int32_t)__atomic_add_fetch((uint32_t *)p, (uint32_t)d,
                                        __ATOMIC_SEQ_CST);
        break;
    case 'I':
        v = __atomic_add_fetch((uint32_t *)p, (uint32_t)d, __ATOMIC_SEQ_CST);
        break;
    case 'f': case 'd':
        v = (int64_t)s_add_float(tc, p, (double)delta);
        break;
    default:
        v = (int64_t)__atomic_add_fetch((uint64_t *)p, d, __ATOMIC_SEQ_CST);
        break;
    }
    if (after)
        *after = v;
}

int
dmp__elem_add_double(int tc, void *p, double delta, double *after)
{
    if (!dmp__typecode_is_float(tc))
        return -EINVAL;
    double v = s_add_float(tc, p, delta);
    if (after)
        *after = v;
    return 0;
}

void
dmp__elem_to_le(int tc, void *p, size_t n)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    size_t size = dmp__typecode_size(tc);
    uint8_t *b = p;
    for (size_t i = 0; i < n; i++, b += size)
        for (size_t k = 0; k < size / 2; k++) {
            uint8_t t = b[k];
            b[k] = b[size - 1 - k];
            b[size - 1 - k] = t;
        }
#else
    (void)tc;
    (void)p;
    (void)n;
#endif
}

/* ---- create, open, close --------------------------------------------- */

static bool
s_name_valid(const char *name)
{
    size_t len = name ? strlen(name) : 0;
    return len >= 2 && len < DMP__RING_NAME_MAX && name[0] == '/' &&
           !strchr(name + 1, '/') && strcmp(name, "/.") != 0 &&
           strcmp(name, "/..") != 0;
}

static void
s_map(dmp__seg_t *s, void *p, size_t size)
{
    s->hdr = p;
    s->holders = (s_holder_t *)((uint8_t *)p + S_HOLDERS_OFF);
    s->data = (uint8_t *)p + S_DATA_OFF;
    s->map_size = size;
}

static int
s_mutex_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t ma;
    int rc = pthread_mutexattr_init(&ma);
    if (rc)
        return -rc;
    if ((rc = pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED)) ==
            0 &&
        (rc = pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST)) == 0)
        rc = pthread_mutex_init(m, &ma);
    pthread_mutexattr_destroy(&ma);
    return -rc;
}

int
dmp__seg_create(const char *name, char typecode, uint64_t length, bool lock,
                const char *fifo_path, dmp__seg_t **seg_p)
{
    assert(seg_p);
    size_t itemsize = dmp__typecode_size(typecode);
    const char *fifo = fifo_path ? fifo_path : "";
    if (!s_name_valid(name) || !itemsize || length == 0 ||
        length > DMP__SHARED_LENGTH_MAX ||
        length > DMP__SHARED_BYTES_MAX / itemsize ||
        strlen(fifo) >= S_NOTIFY_MAX)
        return -EINVAL;
    uint64_t seg_size = S_DATA_OFF + ((length * itemsize + 7) & ~7ull);
    if (seg_size > SIZE_MAX)
        return -EINVAL;
    dmp__seg_t *s = dmp__calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    int rc = 0;
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        dmp__free(s);
        return -errno;
    }
    void *p = MAP_FAILED;
    if (ftruncate(fd, (off_t)seg_size) != 0)
        rc = -errno;
    else if ((p = mmap(NULL, (size_t)seg_size, PROT_READ | PROT_WRITE,
                       MAP_SHARED, fd, 0)) == MAP_FAILED)
        rc = -errno;
    close(fd);
    if (rc == 0) {
        s_map(s, p, (size_t)seg_size);
        /* ftruncate zero-filled everything: the elements, the table. */
        s_hdr_t *h = s->hdr;
        h->version = S_VERSION;
        h->struct_size = sizeof(s_hdr_t);
        h->typecode = (uint32_t)(unsigned char)typecode;
        h->itemsize = (uint32_t)itemsize;
        h->length = length;
        h->seg_size = seg_size;
        h->has_lock = lock;
        memcpy(h->notify, fifo, strlen(fifo));
        rc = s_mutex_init(&h->meta);
    }
    if (rc) {
        if (p != MAP_FAILED)
            munmap(p, (size_t)seg_size);
        shm_unlink(name);
        dmp__free(s);
        return rc;
    }
    s->typecode = typecode;
    s->itemsize = itemsize;
    s->length = length;
    s->has_lock = lock;
    memcpy(s->notify, s->hdr->notify, S_NOTIFY_MAX);
    /* Last: an opener racing with us sees a bad magic, not half a header. */
    __atomic_store_n(&s->hdr->magic, S_MAGIC, __ATOMIC_RELEASE);
    *seg_p = s;
    return 0;
}

/* Checks a mapped header of `mapped` bytes; every field is outside input. */
static int
s_validate(const s_hdr_t *h, size_t mapped)
{
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != S_MAGIC ||
        h->version != S_VERSION || h->struct_size != sizeof(s_hdr_t))
        return DMP_EPROTO;
    uint32_t tc = h->typecode;
    size_t size = tc < 128 ? dmp__typecode_size((int)tc) : 0;
    if (!size || h->itemsize != size || h->length == 0 ||
        h->length > DMP__SHARED_LENGTH_MAX ||
        h->length > DMP__SHARED_BYTES_MAX / size || h->has_lock > 1)
        return DMP_EPROTO;
    if (h->seg_size != S_DATA_OFF + ((h->length * size + 7) & ~7ull) ||
        h->seg_size > mapped)
        return DMP_EPROTO;
    if (!memchr(h->notify, '\0', sizeof h->notify))
        return DMP_EPROTO;
    return 0;
}

int
dmp__seg_open(const char *name, dmp__seg_t **seg_p)
{
    assert(seg_p);
    if (!s_name_valid(name))
        return -EINVAL;
    int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct stat st;
    int rc = 0;
    void *p = MAP_FAILED;
    if (fstat(fd, &st) != 0)
        rc = -errno;
    else if (st.st_size < (off_t)(S_DATA_OFF + 8) ||
             (uint64_t)st.st_size > S_DATA_OFF + DMP__SHARED_BYTES_MAX ||
             (uint64_t)st.st_size > SIZE_MAX)
        rc = DMP_EPROTO;
    else if ((p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE,
                       MAP_SHARED, fd, 0)) == MAP_FAILED)
        rc = -errno;
    close(fd);
    if (rc == 0)
        rc = s_validate(p, (size_t)st.st_size);
    dmp__seg_t *s = rc == 0 ? dmp__calloc(1, sizeof *s) : NULL;
    if (rc == 0 && !s)
        rc = -ENOMEM;
    if (rc) {
        if (p != MAP_FAILED)
            munmap(p, (size_t)st.st_size);
        return rc;
    }
    s_map(s, p, (size_t)st.st_size);
    s->typecode = (char)s->hdr->typecode;
    s->itemsize = s->hdr->itemsize;
    s->length = s->hdr->length;
    s->has_lock = s->hdr->has_lock;
    memcpy(s->notify, s->hdr->notify, S_NOTIFY_MAX);
    *seg_p = s;
    return 0;
}

void
dmp__seg_close(dmp__seg_t **seg_p)
{
    if (!seg_p || !*seg_p)
        return;
    munmap((*seg_p)->hdr, (*seg_p)->map_size);
    dmp__free(*seg_p);
    *seg_p = NULL;
}

int
dmp__seg_unlink(const char *name)
{
    if (!s_name_valid(name))
        return -EINVAL;
    return shm_unlink(name) == 0 ? 0 : -errno;
}

char
dmp__seg_typecode(const dmp__seg_t *s)
{
    return s->typecode;
}

uint64_t
dmp__seg_length(const dmp__seg_t *s)
{
    return s->length;
}

bool
dmp__seg_has_lock(const dmp__seg_t *s)
{
    return s->has_lock;
}

void *
dmp__seg_data(const dmp__seg_t *s)
{
    return s->data;
}

/* ---- the lock ---------------------------------------------------------- */

/*
 * Not a pthread robust mutex: under contention between two processes
 * glibc's robust mutex sleeps in the kernel at once and makes every
 * release a FUTEX_WAKE, which costs more than the increment it guards
 * (measured: a third of the rate below). This lock is one 64-bit word: the
 * holder's pid (0: free) and the number of releases so far, the futex
 * word sleepers wait on. Taking it is one CAS; releasing is one CAS, and a
 * FUTEX_WAKE only when a waiter sleeps that no earlier wake covers (the
 * sleepers/wakes accounting of dmp_ring.c). A waiter first spins a moment
 * on more than one CPU, looking at the word less and less often (each look
 * pulls the word's cache line away from the holder, whose next release or
 * take then waits to get it back: a gap that doubles up to S_SPIN_GAP
 * made two processes incrementing under the lock 2.4x faster), then
 * sleeps, registered, and wakes at least every S_CHECK_NS to see whether
 * the holder still lives: a holder that died
 * (gone, a zombie, or its pid now another process: `tag` keeps its start
 * time) is replaced by the waiter, which is told DMP_EOWNERDEAD if it is
 * an explicit acquirer. Recursion and threads are counted per process
 * (dmp_shared.c): the word names a process.
 *
 * No lost wake-up: a sleeper registers, then reads the word; a releaser
 * changes the word, then reads the registrations (both sequentially
 * consistent). And a waiter never goes to sleep while a wake is pending
 * (it absorbs it and looks again instead), so a wake that found nobody in
 * the kernel is not mistaken for one delivered.
 */
#define S_CHECK_NS 50000000ll /* a sleeping waiter checks the holder */
#define S_SPIN 100            /* pause loops watching the word */
#define S_SPIN_GAP 32         /* at most this many between two looks */
#define S_OWNER(w) ((uint32_t)(w))
#define S_SEQ(w) ((uint32_t)((w) >> 32))

static int64_t
s_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/* This process as a holder: pid, and (in the tag) its start time. Reset in
 * a forked child, which is another process. */
static uint64_t s_ident;
static pthread_once_t s_ident_once = PTHREAD_ONCE_INIT;

static void
s_ident_reset(void)
{
    s_ident = 0;
}

static void
s_ident_atfork(void)
{
    pthread_atfork(NULL, NULL, s_ident_reset);
}

static inline uint64_t
s_me(void)
{
    uint64_t me = __atomic_load_n(&s_ident, __ATOMIC_RELAXED);
    if (__builtin_expect(me != 0, 1))
        return me;
    pthread_once(&s_ident_once, s_ident_atfork);
    pid_t pid = getpid();
    me = (uint32_t)pid | (dmp__proc_starttime(pid) & 0xffffffffull) << 32;
    __atomic_store_n(&s_ident, me, __ATOMIC_RELAXED);
    return me;
}

/* The futex word: the release count, the high half of lockw. */
static inline uint32_t *
s_seq_word(s_hdr_t *h)
{
    return (uint32_t *)&h->lockw + (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__);
}

/* Whether the holder named by word w (and the tag) is dead. Syscalls: only
 * for a waiter that found the lock taken. */
static bool
s_holder_dead(const s_hdr_t *h, uint64_t w)
{
    pid_t pid = (pid_t)S_OWNER(w);
    if (pid <= 0)
        return false;
    if (!dmp__proc_alive(pid, 0))
        return true; /* gone, or a zombie */
    uint64_t tag = __atomic_load_n(&h->tag, __ATOMIC_ACQUIRE);
    if ((uint32_t)tag != (uint32_t)pid || (tag >> 32) == 0)
        return false; /* the tag is not written yet: it lives */
    uint64_t start = dmp__proc_starttime(pid);
    return start && (uint32_t)start != (uint32_t)(tag >> 32);
}

/* One try: true when taken (*dead: from a dead holder). `check`: look at
 * whether a holder is alive (syscalls). */
static bool
s_try(s_hdr_t *h, uint64_t me, bool check, bool *dead)
{
    uint64_t w = __atomic_load_n(&h->lockw, __ATOMIC_RELAXED);
    if (S_OWNER(w) == 0) {
        if (__atomic_compare_exchange_n(&h->lockw, &w, w | (uint32_t)me,
                                        false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_RELAXED))
            return true;
    }
    if (!check || S_OWNER(w) == 0 || !s_holder_dead(h, w))
        return false;
    uint64_t mine = (w & ~0xffffffffull) | (uint32_t)me;
    if (!__atomic_compare_exchange_n(&h->lockw, &w, mine, false,
                                     __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
        return false;
    *dead = true;
    return true;
}

/* Gives the owner's loop a moment to take the lock for a process waiting
 * elsewhere (it moves `handoff` when it did), at most until `until`. */
static void
s_defer(s_hdr_t *h, int64_t until)
{
    uint32_t seen = __atomic_load_n(&h->handoff, __ATOMIC_ACQUIRE);
    if (!__atomic_load_n(&h->remote_waiters, __ATOMIC_ACQUIRE))
        return;
    int64_t rel = S_DEFER_NS, left = until - s_now_ns();
    if (left < rel)
        rel = left;
    if (rel <= 0)
        return;
    struct timespec ts = {rel / 1000000000ll, rel % 1000000000ll};
    syscall(SYS_futex, &h->handoff, FUTEX_WAIT, seen, &ts, NULL, 0);
}

/* Sleeps until a release (or rel_ns), registered as a sleeper; returns at
 * once when the word moved since `w` or a wake is pending. */
static void
s_sleep(s_hdr_t *h, uint64_t w, int64_t rel_ns)
{
    uint32_t pending = __atomic_load_n(&h->wakes, __ATOMIC_SEQ_CST);
    if (pending) { /* not ours, perhaps: look again instead of sleeping */
        __atomic_compare_exchange_n(&h->wakes, &pending, pending - 1, false,
                                    __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
        return;
    }
    __atomic_add_fetch(&h->sleepers, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&h->lockw, __ATOMIC_SEQ_CST) == w) {
        struct timespec ts = {rel_ns / 1000000000ll, rel_ns % 1000000000ll};
        syscall(SYS_futex, s_seq_word(h), FUTEX_WAIT, S_SEQ(w), &ts, NULL, 0);
    }
    /* Absorb a wake (ours or not), then leave, in this order: a crash in
     * between leaves a sleeper too many (a spare wake later). */
    uint32_t wk = __atomic_load_n(&h->wakes, __ATOMIC_RELAXED);
    while (wk && !__atomic_compare_exchange_n(&h->wakes, &wk, wk - 1, false,
                                              __ATOMIC_SEQ_CST,
                                              __ATOMIC_RELAXED))
        ;
    __atomic_sub_fetch(&h->sleepers, 1, __ATOMIC_SEQ_CST);
}

int
dmp__seg_lock(dmp__seg_t *s, double timeout, bool tell, bool defer)
{
    s_hdr_t *h = s->hdr;
    uint64_t me = s_me();
    bool dead = false;
    if (__builtin_expect(s_try(h, me, false, &dead), 1)) {
        if (__builtin_expect(
                !__atomic_load_n(&h->owner_died, __ATOMIC_RELAXED), 1)) {
            __atomic_store_n(&h->tag, me, __ATOMIC_RELEASE);
            return 0;
        }
        goto got; /* taken; the news of a death is left to tell */
    }
    bool once = isnan(timeout) || timeout <= 0;
    bool forever = !once && (isinf(timeout) || timeout > 1e9);
    int64_t start = s_now_ns();
    int64_t at = once      ? start
                 : forever ? INT64_MAX
                           : start + (int64_t)ceil(timeout * 1e9);
    if (defer && !once &&
        __atomic_load_n(&h->remote_waiters, __ATOMIC_RELAXED)) {
        s_defer(h, at);
        if (s_try(h, me, false, &dead))
            goto got;
    }
    if (once) {
        if (s_try(h, me, true, &dead))
            goto got;
        return -EBUSY;
    }
    if (dmp__multi_cpu())
        for (int spent = 0, pauses = 1; spent < S_SPIN; spent += pauses) {
            uint64_t w = __atomic_load_n(&h->lockw, __ATOMIC_RELAXED);
            if (S_OWNER(w) == 0 && s_try(h, me, false, &dead))
                goto got;
            for (int k = 0; k < pauses; k++)
                dmp__cpu_relax();
            pauses = pauses < S_SPIN_GAP ? pauses * 2 : pauses;
        }
    int64_t check_at = 0; /* look at the holder at once, then every 50 ms */
    for (;;) {
        int64_t now = s_now_ns();
        bool check = now >= check_at;
        if (check)
            check_at = now + S_CHECK_NS;
        if (s_try(h, me, check, &dead))
            goto got;
        if (now >= at)
            return -ETIMEDOUT;
        uint64_t w = __atomic_load_n(&h->lockw, __ATOMIC_RELAXED);
        if (S_OWNER(w) == 0)
            continue;
        int64_t until = at < check_at ? at : check_at;
        s_sleep(h, w, until - now > 0 ? until - now : 1);
    }
got:
    __atomic_store_n(&h->tag, me, __ATOMIC_RELEASE);
    if (dead || __atomic_load_n(&h->owner_died, __ATOMIC_RELAXED)) {
        /* Nothing to repair here: what the dead holder left half-done is
         * the user's data, and the user is told (once). */
        __atomic_store_n(&h->owner_died, tell ? 0u : 1u, __ATOMIC_RELAXED);
        if (tell)
            return DMP_EOWNERDEAD;
    }
    return 0;
}

int
dmp__seg_unlock(dmp__seg_t *s)
{
    s_hdr_t *h = s->hdr;
    uint64_t w = __atomic_load_n(&h->lockw, __ATOMIC_RELAXED);
    if (S_OWNER(w) != (uint32_t)s_me())
        return -EPERM;
    /* Free, and one more release (the futex word moves). Only a waiter that
     * found us dead could have changed it meanwhile: then it is not ours. */
    uint64_t freed = (w & ~0xffffffffull) + (1ull << 32);
    if (!__atomic_compare_exchange_n(&h->lockw, &w, freed, false,
                                     __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
        return -EPERM;
    uint32_t n = __atomic_load_n(&h->sleepers, __ATOMIC_SEQ_CST);
    if (__builtin_expect(n != 0, 0)) {
        uint32_t wk = __atomic_load_n(&h->wakes, __ATOMIC_RELAXED);
        if (n > wk && __atomic_compare_exchange_n(&h->wakes, &wk, wk + 1,
                                                  false, __ATOMIC_SEQ_CST,
                                                  __ATOMIC_RELAXED))
            syscall(SYS_futex, s_seq_word(h), FUTEX_WAKE, 1, NULL, NULL, 0);
    }
    /* The owner re-arms `want` before each try of the lock: either its try
     * saw our release, or we see `want` (both are full barriers here). */
    if (__atomic_load_n(&h->want, __ATOMIC_SEQ_CST) &&
        __atomic_exchange_n(&h->want, 0, __ATOMIC_SEQ_CST) && s->notify[0])
        dmp__fifo_notify(s->notify);
    return 0;
}

void
dmp__seg_remote_wait(dmp__seg_t *s, bool on)
{
    __atomic_store_n(&s->hdr->remote_waiters, on ? 1u : 0u, __ATOMIC_SEQ_CST);
    __atomic_store_n(&s->hdr->want, on ? 1u : 0u, __ATOMIC_SEQ_CST);
}

void
dmp__seg_remote_served(dmp__seg_t *s)
{
    __atomic_add_fetch(&s->hdr->handoff, 1, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, &s->hdr->handoff, FUTEX_WAKE, INT32_MAX, NULL, NULL,
            0);
}

int
dmp__seg_unlock_dead(dmp__seg_t *s)
{
    __atomic_store_n(&s->hdr->owner_died, 1, __ATOMIC_RELAXED);
    return dmp__seg_unlock(s);
}

/* ---- holders ------------------------------------------------------------ */

static int
s_meta_lock(s_hdr_t *h, bool wait)
{
    int rc = wait ? pthread_mutex_lock(&h->meta)
                  : pthread_mutex_trylock(&h->meta);
    if (rc == EOWNERDEAD) {
        /* A slot is taken by one store of its pid, last: nothing can be
         * half-written. */
        pthread_mutex_consistent(&h->meta);
        rc = 0;
    }
    return -rc;
}

/* Under meta: the slot of (pid, start), or NULL. */
static s_holder_t *
s_find(dmp__seg_t *s, pid_t pid, uint64_t start)
{
    for (size_t i = 0; i < S_HOLDERS_MAX; i++) {
        s_holder_t *w = &s->holders[i];
        if (w->pid == pid && (w->start == start || !w->start || !start))
            return w;
    }
    return NULL;
}

/* Under meta: live holders, freeing the slots of dead ones. */
static int
s_live(dmp__seg_t *s)
{
    int n = 0;
    for (size_t i = 0; i < S_HOLDERS_MAX; i++) {
        s_holder_t *w = &s->holders[i];
        if (w->pid == 0)
            continue;
        if (w->flags && dmp__proc_alive(w->pid, w->start)) {
            n++;
            continue;
        }
        __atomic_store_n(&w->pid, 0, __ATOMIC_RELEASE);
        w->flags = 0;
        w->start = 0;
    }
    return n + (s->hdr->overflow ? 1 : 0);
}

int
dmp__seg_hold(dmp__seg_t *s, pid_t pid, bool reserve)
{
    if (pid <= 0)
        return -EINVAL;
    uint64_t start = dmp__proc_starttime(pid);
    int rc = s_meta_lock(s->hdr, true);
    if (rc)
        return rc;
    s_holder_t *w = s_find(s, pid, start);
    if (w) {
        /* The child's own hold takes its parent's over. */
        w->flags = reserve ? w->flags | S_HOLD_RESERVED : S_HOLD_OWN;
    } else {
        s_live(s); /* room from the dead */
        w = s_find(s, 0, 0);
        if (w) {
            w->start = start;
            w->flags = reserve ? S_HOLD_RESERVED : S_HOLD_OWN;
            __atomic_store_n(&w->pid, (int32_t)pid, __ATOMIC_RELEASE);
        } else {
            s->hdr->overflow++;
        }
    }
    pthread_mutex_unlock(&s->hdr->meta);
    return 0;
}

int
dmp__seg_unhold(dmp__seg_t *s, pid_t pid)
{
    int rc = s_meta_lock(s->hdr, true);
    if (rc)
        return rc;
    s_holder_t *w = s_find(s, pid, dmp__proc_starttime(pid));
    if (w) {
        w->flags &= ~(uint32_t)S_HOLD_OWN;
        if (!w->flags) {
            __atomic_store_n(&w->pid, 0, __ATOMIC_RELEASE);
            w->start = 0;
        }
    }
    int n = s_live(s);
    pthread_mutex_unlock(&s->hdr->meta);
    return n;
}

int
dmp__seg_sweep(dmp__seg_t *s)
{
    int rc = s_meta_lock(s->hdr, false);
    if (rc)
        return rc;
    int n = s_live(s);
    pthread_mutex_unlock(&s->hdr->meta);
    return n;
}
