/*
 * dmp_ring.c - the same-host data plane: a bounded multi-producer,
 * multi-consumer ring of variable-length items in a POSIX shm segment.
 *
 * Segment: one page of header (s_hdr_t), then `capacity` data bytes. A
 * record in the data area is an 8-byte s_rec_t {len, kind} and the payload
 * padded to 8. WRAP fills the rest of the area when the next record does
 * not fit before its end; OOL names an out-of-line segment "<ring>.ool.<n>"
 * holding a payload too big for the ring (more than a quarter of it).
 * head and tail are free-running byte counters; a position is counter %
 * capacity, so tail - head is the bytes in use.
 *
 * Two sides: putters serialize on the put side's lock and own the tail,
 * getters on the get side's lock and own the head, so a producer and a
 * consumer never wait for each other's lock and, in a steady stream, share
 * little more than the cache lines of the items. Each side keeps what the
 * other owns as last seen (a lower bound: counters only grow) and reads it
 * afresh only when that view says "full" or "empty".
 *
 * Main invariant (crash safety): each side's state (put: tail and items
 * put; get: head, items got, task_done calls) lives in two slots and the
 * side's `cur` names the valid one. A putter, holding the put lock, first
 * writes payload bytes into free space, then fills the other slot, then
 * advances `cur` (a commit counter: slot cur & 1 is valid) with one
 * aligned store; a getter copies its item out, then does the same on its
 * side. A reader without the lock reads again when cur moved under it.
 * A process killed at any instant leaves its side's old state or new one,
 * never a mix; the next locker gets EOWNERDEAD, marks the mutex
 * consistent and goes on, with nothing to repair. Out-of-line payloads are fully written before their record is
 * committed, and unlinked only after it is taken.
 *
 * Blocking: three futex words ("not empty", bumped by puts; "not full", by
 * gets; "joined", by the last task_done) are sequence counters bumped after
 * each commit. A sleeper reads the word, registers, then checks its
 * condition again with fresh reads; a waker commits, bumps the word, then
 * reads the registrations (all sequentially consistent): either the
 * sleeper sees the change or the waker sees the sleeper, and FUTEX_WAIT
 * fails when the word moved in between. A waker calls FUTEX_WAKE only for
 * a sleeper not already woken, so the uncontended path is lock, memcpy,
 * commit, unlock, with no syscall. Waiting spins briefly first on machines
 * with more than one CPU: a consumer keeping up with its producer then
 * never enters the kernel.
 *
 * Pipes: processes that send hold the ring as writers (pid and start time
 * in the header); once none is left, by close or death, a get on the empty
 * ring returns DMP_EEOF. A dead process wakes nobody, so a getter of such a
 * ring re-checks its writers' liveness every S_EOF_CHECK_NS while asleep.
 * The writer table is the get side's: getters read it under their lock.
 *
 * Ownership: a dmp__ring_t is one process's mapping; it holds no mutable
 * local state, so threads may share it. The segment belongs to whoever
 * unlinks it: the creator or the owning agent.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <assert.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define S_MAGIC 0x31474e4952504d44ull /* "DMPRING1" little-endian */
#define S_VERSION 2u
#define S_HDR_SIZE 4096u          /* header page; data starts page-aligned */
#define S_CAP_DEFAULT (1ull << 20)
#define S_CAP_MIN 64ull
#define S_CAP_LIMIT (1ull << 40)  /* sanity bound for options and headers */
#define S_NAME_MAX 200            /* leaves room for ".ool.<20 digits>" */
#define S_NOTIFY_MAX 256          /* FIFO path with its NUL */
#define S_OOL_TAG ".ool."

/* Lock waits at least this long even for timeout 0: holders keep the lock
 * for a memcpy, so giving up at once would make non-blocking calls fail
 * spuriously; a stopped holder still cannot block a timed call for ever. */
#define S_LOCK_GRACE_NS 50000000ll
/* A sleeper re-checks at least this often. Only matters when a waker was
 * killed after counting its wake and before issuing it, or a woken sleeper
 * before taking its item: the item then waits at most this long. */
#define S_SLEEP_MAX_NS 1000000000ll
/* A getter of a ring with writer holds (a pipe) re-checks this often
 * whether its writers are alive: a dead process wakes nobody. */
#define S_EOF_CHECK_NS 100000000ll
#define S_WRITERS_MAX 64
/* In s_writer_t.holds: a hold a parent took for a child that has not
 * attached yet; the child's own hold_writer takes it over. */
#define S_HOLD_RESERVED 0x80000000u
#define S_SPIN_WAIT 1000 /* pause loops watching a futex word (~40 us) */
/* After this many spins in a row that did not see the word move (the
 * other side is slow: a process elsewhere, through the agent), waits
 * sleep at once, spinning again only every S_SPIN_PROBE-th time: on a
 * busy machine a spin takes the CPU that the other side needs. */
#define S_SPIN_MISSES 4
#define S_SPIN_PROBE 16
#define S_SPIN_LOCK 200  /* trylock attempts before sleeping on the mutex */

enum {
    S_REC_DATA = 0x61746164, /* "data": payload follows */
    S_REC_WRAP = 0x70617277, /* "wrap": rest of the area is unused */
    S_REC_OOL = 0x6c6f6f6f,  /* "oool": s_ool_t follows */
};

typedef struct {
    uint32_t len;  /* payload bytes (DATA, OOL) */
    uint32_t kind; /* S_REC_* */
} s_rec_t;

typedef struct {
    uint64_t id;   /* segment "<ring>.ool.<id>" */
    uint64_t size; /* payload bytes in it */
} s_ool_t;
_Static_assert(sizeof(s_ool_t) % 8 == 0, "an OOL record is its own padding");

/* A process holding the ring as a writer (pipes). */
typedef struct {
    int32_t pid;    /* 0: free slot; written last when a slot is taken */
    uint32_t holds; /* hold_writer calls not yet matched by close_writer */
    uint64_t start; /* its start time (/proc stat), so that a reused pid
                     * is not taken for it; 0 if unknown */
} s_writer_t;

/* A side's committed state: one slot is valid, the other is scratch. */
typedef struct {
    uint64_t pos; /* put side: tail, the byte counter just past the newest
                   * record; get side: head, that of the oldest */
    int64_t n;    /* items put (put side) or got (get side), ever */
    int64_t done; /* get side: task_done calls, ever; put side: 0 */
} s_state_t;

/* One side: its lock and the other side's counters as last seen on the
 * first line (only this side's lockers touch it), the state and the futex
 * word that this side's commits bump on the second (read by the other
 * side when its view runs out, and by its spinning waiters). */
typedef struct {
    /* process-shared, robust; guards the rest of the side */
    alignas(64) pthread_mutex_t lock;
    uint64_t seen_pos; /* the other side's pos when last read */
    int64_t seen_n;    /* the other side's n when last read */
    alignas(64) s_state_t state[2]; /* see the invariant at the top */
    uint32_t cur;  /* index of the valid state slot (0 or 1) */
    uint32_t word; /* futex word: put side "not empty", get side "not
                    * full"; bumped after every commit */
} s_side_t;

/* Wait queues: a futex word each, with its sleeper accounting. */
enum { S_Q_NOT_EMPTY, S_Q_NOT_FULL, S_Q_JOINED, S_Q_N };

/* Sleepers registered on a queue (high half) and wakes issued to them not
 * yet absorbed (low half), in one word so that wakers and sleepers, who
 * hold different locks, change them together. wakes <= sleepers; a waker
 * enters the kernel only while sleepers > wakes, so a burst of puts wakes
 * a sleeper once. */
#define S_SLEEPER (1ull << 32)
#define S_WAKES(v) ((uint32_t)(v))
#define S_SLEEPERS(v) ((uint32_t)((v) >> 32))

/* Cache lines: sizes (read-only), then the two sides, then the sleeper
 * accounting (read by every put and get, written only by sleepers and
 * the wakes they need), then the notify path and the writer table (read
 * when empty, written by hold and close). The get side's lock also guards
 * the writer table, pipe_mode and the "joined" word; the notify path is
 * written under both locks, so either side reads it under its own. */
typedef struct {
    uint64_t magic;       /* S_MAGIC, written last by create */
    uint32_t version;     /* S_VERSION */
    uint32_t hdr_size;    /* S_HDR_SIZE: offset of the data area */
    uint32_t struct_size; /* sizeof(s_hdr_t): catches ABI mismatches */
    uint32_t shutdown;    /* set once by dmp__ring_shutdown */
    uint64_t capacity;    /* data bytes, multiple of 8 */
    uint64_t seg_size;    /* hdr_size + capacity */
    uint64_t item_max;    /* largest item accepted */
    int64_t maxsize;      /* items at most; 0: bytes are the only bound */
    s_side_t put;
    s_side_t get;
    alignas(64) uint64_t sleep[S_Q_N]; /* S_SLEEPER, S_WAKES */
    uint32_t joined;   /* futex word: bumped by the last task_done */
    uint32_t pad0;
    uint64_t ool_next; /* next out-of-line id (atomic, lock-free) */
    alignas(64) char notify[S_NOTIFY_MAX]; /* wake-up FIFO, "" when none */
    /* Pipes: once any process held the ring as a writer, an empty ring
     * with no live writer left means EOF for getters. */
    uint32_t pipe_mode;
    uint32_t pad1;
    s_writer_t writers[S_WRITERS_MAX];
} s_hdr_t;

_Static_assert(sizeof(s_hdr_t) <= S_HDR_SIZE, "ring header exceeds a page");

/* A header's sizes as open checked them. */
typedef struct {
    uint64_t cap;
    uint64_t item_max;
    int64_t maxsize;
} s_sizes_t;

struct dmp__ring {
    s_hdr_t *hdr;     /* the mapping */
    uint8_t *data;    /* hdr + S_HDR_SIZE */
    size_t map_size;  /* bytes mapped */
    /* Copies of the header's sizes, checked once at open: later changes to
     * the shared header cannot make this process index out of bounds. */
    uint64_t cap;
    uint64_t item_max;
    int64_t maxsize;
    uint64_t inline_max; /* largest record (header + padded payload) kept
                          * in the ring */
    char name[S_NAME_MAX + 1];
    unsigned spin_misses; /* waits in a row a spin did not end (atomic) */
};

/* Test hook: called (when set) at named points of put and get while the
 * lock is held, so tests can kill a process exactly there. Points:
 * "put-locked", "put-written", "put-committed", "get-copied",
 * "get-committed". */
void (*dmp__ring_test_hook)(const char *point);
#define S_HOOK(point)                                                        \
    do {                                                                     \
        if (dmp__ring_test_hook)                                             \
            dmp__ring_test_hook(point);                                      \
    } while (0)

/* ---- small helpers --------------------------------------------------- */

static inline uint64_t
s_pad8(uint64_t n)
{
    return (n + 7) & ~(uint64_t)7;
}

/* CPUs this process may run on, 0: not counted yet (since the fork). */
static int s_ncpu;

static void
s_ncpu_reset(void)
{
    __atomic_store_n(&s_ncpu, 0, __ATOMIC_RELAXED);
}

static void
s_ncpu_atfork(void)
{
    pthread_atfork(NULL, NULL, s_ncpu_reset);
}

/* Whether spinning can pay: another CPU may run the process we wait for.
 * Counted on the CPUs this process may use (a process pinned to one CPU
 * only delays the other side by spinning), once per process. */
bool
dmp__multi_cpu(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    int n = __atomic_load_n(&s_ncpu, __ATOMIC_RELAXED);
    if (n == 0) { /* benign race: the same answer */
        pthread_once(&once, s_ncpu_atfork);
        cpu_set_t set;
        if (sched_getaffinity(0, sizeof set, &set) == 0)
            n = CPU_COUNT(&set);
        else
            n = (int)sysconf(_SC_NPROCESSORS_ONLN);
        n = n > 1 ? n : 1;
        __atomic_store_n(&s_ncpu, n, __ATOMIC_RELAXED);
    }
    return n > 1;
}

static int64_t
s_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static struct timespec
s_ts(int64_t ns)
{
    struct timespec ts = {.tv_sec = ns / 1000000000ll,
                          .tv_nsec = ns % 1000000000ll};
    return ts;
}

/* A timeout as an absolute CLOCK_MONOTONIC deadline. */
typedef struct {
    bool none;    /* 0, negative or NaN: do not wait */
    bool forever; /* DMP_FOREVER (or beyond any sane horizon) */
    int64_t at;   /* deadline in ns, when neither */
} s_deadline_t;

static s_deadline_t
s_deadline(double timeout)
{
    s_deadline_t d = {false, false, 0};
    if (isnan(timeout) || timeout <= 0)
        d.none = true;
    else if (isinf(timeout) || timeout > 1e9) /* ~31 years: forever */
        d.forever = true;
    else
        d.at = s_now_ns() + (int64_t)ceil(timeout * 1e9);
    return d;
}

static bool
s_expired(const s_deadline_t *d)
{
    return d->none || (!d->forever && s_now_ns() >= d->at);
}

static int
s_futex_wait(uint32_t *word, uint32_t seen, int64_t rel_ns)
{
    struct timespec rel = s_ts(rel_ns);
    return (int)syscall(SYS_futex, word, FUTEX_WAIT, seen, &rel, NULL, 0);
}

static void
s_futex_wake(uint32_t *word, int n)
{
    syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0);
}

static bool
s_name_valid(const char *name)
{
    size_t len = name ? strlen(name) : 0;
    if (len < 2 || len > S_NAME_MAX || name[0] != '/')
        return false;
    if (strchr(name + 1, '/') || strcmp(name, "/.") == 0 ||
        strcmp(name, "/..") == 0)
        return false;
    return true;
}

static void
s_ool_name(const char *ring_name, uint64_t id, char *buf, size_t size)
{
    snprintf(buf, size, "%s" S_OOL_TAG "%llu", ring_name,
             (unsigned long long)id);
}

/* ---- locking and waiting --------------------------------------------- */

/* The futex word of queue q. */
static uint32_t *
s_word(s_hdr_t *h, int q)
{
    return q == S_Q_NOT_EMPTY ? &h->put.word
           : q == S_Q_NOT_FULL ? &h->get.word
                               : &h->joined;
}

/* Takes a side's mutex. A dead previous holder needs no repair (see the
 * invariant at the top), so EOWNERDEAD just marks the mutex consistent.
 * With a finite deadline, gives up at max(deadline, now + grace) with
 * -ETIMEDOUT. */
static int
s_lock(s_hdr_t *h, s_side_t *side, const s_deadline_t *d)
{
    pthread_mutex_t *m = &side->lock;
    int rc = EBUSY;
    for (int i = 0; i < S_SPIN_LOCK && rc == EBUSY; i++) {
        rc = pthread_mutex_trylock(m);
        if (rc == EBUSY) {
            if (!dmp__multi_cpu())
                break;
            dmp__cpu_relax();
        }
    }
    if (rc == EBUSY) {
        if (d->forever) {
            rc = pthread_mutex_lock(m);
        } else {
            int64_t at = s_now_ns() + S_LOCK_GRACE_NS;
            if (!d->none && d->at > at)
                at = d->at;
            struct timespec ts = s_ts(at);
            rc = pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
        }
    }
    if (rc == EOWNERDEAD) {
        pthread_mutex_consistent(m);
        rc = 0;
        /* The dead holder may have counted a wake it never issued: forget
         * pending wakes and wake every sleeper once to re-check. */
        for (int q = 0; q < S_Q_N; q++) {
            uint64_t v = __atomic_load_n(&h->sleep[q], __ATOMIC_RELAXED);
            while (!__atomic_compare_exchange_n(&h->sleep[q], &v,
                                                v - S_WAKES(v), false,
                                                __ATOMIC_SEQ_CST,
                                                __ATOMIC_RELAXED))
                ;
            __atomic_add_fetch(s_word(h, q), 1, __ATOMIC_SEQ_CST);
            s_futex_wake(s_word(h, q), INT_MAX);
        }
    }
    return -rc;
}

static void
s_unlock(s_side_t *side)
{
    pthread_mutex_unlock(&side->lock);
}

/* True (and one more wake counted) when a sleeper on q is not yet covered
 * by a wake: the caller then calls FUTEX_WAKE for one. */
static bool
s_claim_wake(s_hdr_t *h, int q)
{
    uint64_t v = __atomic_load_n(&h->sleep[q], __ATOMIC_SEQ_CST);
    do {
        if (S_SLEEPERS(v) <= S_WAKES(v))
            return false;
    } while (!__atomic_compare_exchange_n(&h->sleep[q], &v, v + 1, false,
                                          __ATOMIC_SEQ_CST,
                                          __ATOMIC_SEQ_CST));
    return true;
}

/* After a commit that sleepers on q wait for: bumps the word; true when
 * the caller should FUTEX_WAKE one (after unlocking). */
static bool
s_signal(s_hdr_t *h, int q)
{
    __atomic_add_fetch(s_word(h, q), 1, __ATOMIC_SEQ_CST);
    return s_claim_wake(h, q);
}

/* A sleeper leaves q: absorbs a pending wake (its own or not) and
 * unregisters, in one step. */
static void
s_sleeper_leave(s_hdr_t *h, int q)
{
    uint64_t v = __atomic_load_n(&h->sleep[q], __ATOMIC_RELAXED);
    uint64_t nv;
    do {
        if (S_SLEEPERS(v) == 0)
            return; /* reset by a garbage header: nothing to undo */
        nv = v - S_SLEEPER - (S_WAKES(v) ? 1 : 0);
    } while (!__atomic_compare_exchange_n(&h->sleep[q], &v, nv, false,
                                          __ATOMIC_SEQ_CST,
                                          __ATOMIC_RELAXED));
}

static bool s_ready(dmp__ring_t *r, int q, uint64_t need);

/*
 * Called with the lock of `side` held, after the caller found its
 * condition on q false; returns with the lock held (0: re-check the
 * condition) or without it (-ETIMEDOUT or -errno from s_lock). `need`:
 * the record's bytes a putter waits room for. Alternates two ways of
 * waiting, starting with the first: spin without the lock until word q
 * moves (on more than one CPU: a consumer keeping up with its producer
 * then never enters the kernel); sleep on the futex, registered as a
 * sleeper so that wakers know to call FUTEX_WAKE.
 *
 * No lost wake-up: the sleeper reads the word, registers, then checks the
 * condition afresh (s_ready); a waker commits, bumps the word, then reads
 * the registrations; all sequentially consistent. So the sleeper sees the
 * change, or the waker sees the sleeper and wakes it (the kernel refusing
 * the wait when the word moved after it was read).
 */
static int
s_wait(dmp__ring_t *r, s_side_t *side, int q, uint64_t need,
       const s_deadline_t *d, bool *spun)
{
    s_hdr_t *h = r->hdr;
    uint32_t *word = s_word(h, q);
    uint32_t seen = __atomic_load_n(word, __ATOMIC_SEQ_CST);
    unsigned misses = __atomic_load_n(&r->spin_misses, __ATOMIC_RELAXED);
    bool spin = misses < S_SPIN_MISSES || misses % S_SPIN_PROBE == 0;
    if (!*spun && dmp__multi_cpu() && !spin)
        __atomic_store_n(&r->spin_misses, misses + 1, __ATOMIC_RELAXED);
    if (!*spun && dmp__multi_cpu() && spin) {
        *spun = true;
        s_unlock(side);
        bool moved = false;
        for (int i = 0; i < S_SPIN_WAIT && !moved; i++) {
            moved = __atomic_load_n(word, __ATOMIC_ACQUIRE) != seen;
            if (!moved)
                dmp__cpu_relax();
        }
        __atomic_store_n(&r->spin_misses, moved ? 0 : misses + 1,
                         __ATOMIC_RELAXED);
        return s_lock(h, side, d);
    }
    *spun = false;
    int64_t rel = S_SLEEP_MAX_NS;
    if (q == S_Q_NOT_EMPTY && h->pipe_mode)
        rel = S_EOF_CHECK_NS;
    if (!d->forever) {
        int64_t left = d->at - s_now_ns();
        rel = left < rel ? left : rel;
    }
    if (rel <= 0)
        return 0; /* the caller finds the deadline passed */
    __atomic_add_fetch(&h->sleep[q], S_SLEEPER, __ATOMIC_SEQ_CST);
    if (s_ready(r, q, need)) {
        s_sleeper_leave(h, q);
        return 0;
    }
    s_unlock(side);
    /* EINTR, EAGAIN (word moved), ETIMEDOUT and spurious returns all mean
     * the same: re-check under the lock. */
    s_futex_wait(word, seen, rel);
    /* Leaves once it holds the lock again, to act on its wake. A crash
     * before, or a lock not taken in time, leaves one sleeper too many (a
     * spare wake later), never a wake too many (which would be a lost
     * one). */
    int rc = s_lock(h, side, d);
    if (rc == 0)
        s_sleeper_leave(h, q);
    return rc;
}

/* ---- state ----------------------------------------------------------- */

/* A side's committed state, read without its lock (the other side, qsize):
 * the slot named by cur, read again when a commit moved cur meanwhile (the
 * slot may then have been rewritten under the reader). */
static s_state_t
s_state(const s_side_t *side)
{
    s_state_t st;
    uint32_t c = __atomic_load_n(&side->cur, __ATOMIC_SEQ_CST);
    for (;;) {
        const s_state_t *slot = &side->state[c & 1];
        st.pos = __atomic_load_n(&slot->pos, __ATOMIC_ACQUIRE);
        st.n = __atomic_load_n(&slot->n, __ATOMIC_ACQUIRE);
        st.done = __atomic_load_n(&slot->done, __ATOMIC_ACQUIRE);
        uint32_t again = __atomic_load_n(&side->cur, __ATOMIC_SEQ_CST);
        if (again == c)
            return st;
        c = again;
    }
}

/* Publishes ns as the side's committed state: the scratch slot first, then
 * one store of `cur`, which counts commits (slot cur & 1 is the valid
 * one). Payload and slot are visible before it; sequentially consistent
 * for the wake-up protocol of s_wait. */
static void
s_commit(s_side_t *side, const s_state_t *ns)
{
    uint32_t next = __atomic_load_n(&side->cur, __ATOMIC_RELAXED) + 1;
    s_state_t *slot = &side->state[next & 1];
    __atomic_store_n(&slot->pos, ns->pos, __ATOMIC_RELEASE);
    __atomic_store_n(&slot->n, ns->n, __ATOMIC_RELEASE);
    __atomic_store_n(&slot->done, ns->done, __ATOMIC_RELEASE);
    __atomic_store_n(&side->cur, next, __ATOMIC_SEQ_CST);
}

/* a - b for item counters, wrapping instead of overflowing: counters from
 * a garbage header must not make undefined behaviour. */
static inline int64_t
s_diff(int64_t a, int64_t b)
{
    return (int64_t)((uint64_t)a - (uint64_t)b);
}

/* Does a record of `need` bytes fit after the tail and count in ns, given
 * the get side's head and count? *skip gets the size of the wrap marker
 * that goes first when the record does not fit before the area's end. */
static bool
s_fits(const dmp__ring_t *r, const s_state_t *ns, uint64_t head, int64_t got,
       uint64_t need, uint64_t *skip)
{
    if (r->maxsize > 0 && s_diff(ns->n, got) >= r->maxsize)
        return false;
    uint64_t used = ns->pos - head;
    if (used > r->cap)
        return false; /* a garbage header: write over nothing */
    uint64_t to_end = r->cap - ns->pos % r->cap;
    *skip = need > to_end ? to_end : 0;
    return *skip + need <= r->cap - used;
}

/* Under the put lock: room for `need` bytes after ns? Judged by the get
 * side as last seen (a lower bound: its head and count only grow), read
 * afresh when that says no, or when `fresh`. */
static bool
s_room(dmp__ring_t *r, const s_state_t *ns, uint64_t need, uint64_t *skip,
       bool fresh)
{
    s_side_t *put = &r->hdr->put;
    if (!fresh && s_fits(r, ns, put->seen_pos, put->seen_n, need, skip))
        return true;
    s_state_t g = s_state(&r->hdr->get);
    /* Atomic only for an opener's check (s_validate), which reads them
     * without the lock. */
    __atomic_store_n(&put->seen_pos, g.pos, __ATOMIC_RELAXED);
    __atomic_store_n(&put->seen_n, g.n, __ATOMIC_RELAXED);
    return s_fits(r, ns, g.pos, g.n, need, skip);
}

/* Under the get lock: is there an item at `head`? Judged by the put
 * side's tail as last seen (get.seen_pos), read afresh when that says no,
 * or when `fresh`. */
static bool
s_has_item(dmp__ring_t *r, uint64_t head, bool fresh)
{
    s_side_t *get = &r->hdr->get;
    if (!fresh && get->seen_pos > head)
        return true;
    s_state_t p = s_state(&r->hdr->put);
    __atomic_store_n(&get->seen_pos, p.pos, __ATOMIC_RELAXED); /* as above */
    __atomic_store_n(&get->seen_n, p.n, __ATOMIC_RELAXED);
    return p.pos > head;
}

/* Under the get lock: is there an item to get? */
static bool
s_get_ready(dmp__ring_t *r)
{
    return s_has_item(r, s_state(&r->hdr->get).pos, false);
}

/* Puts not yet matched by task_done. */
static int64_t
s_unfinished(dmp__ring_t *r)
{
    return s_diff(s_state(&r->hdr->put).n, s_state(&r->hdr->get).done);
}

/* The condition a waiter on q waits for, read afresh (see s_wait). */
static bool
s_ready(dmp__ring_t *r, int q, uint64_t need)
{
    s_hdr_t *h = r->hdr;
    if (__atomic_load_n(&h->shutdown, __ATOMIC_SEQ_CST))
        return true;
    if (q == S_Q_NOT_EMPTY)
        return s_has_item(r, s_state(&h->get).pos, true);
    if (q == S_Q_NOT_FULL) {
        uint64_t skip;
        s_state_t ns = s_state(&h->put);
        return s_room(r, &ns, need, &skip, true);
    }
    return s_unfinished(r) <= 0;
}

/* Copies the notify path out under the lock ("" when none). */
static void
s_notify_path(const s_hdr_t *h, char out[S_NOTIFY_MAX])
{
    out[0] = '\0';
    if (h->notify[0]) {
        memcpy(out, h->notify, S_NOTIFY_MAX);
        out[S_NOTIFY_MAX - 1] = '\0';
    }
}

/* One byte to the agent's FIFO; never blocks. A FIFO without a reader
 * (ENXIO) or a full one (EAGAIN) is fine: the agent is awake or will be.
 * Anything but a FIFO is left untouched. (Value and Array locks use it
 * too: dmp_segment.c.) */
void
dmp__fifo_notify(const char *path)
{
    int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return;
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode)) {
        ssize_t n = write(fd, "", 1);
        (void)n;
    }
    close(fd);
}

/* ---- out-of-line items ----------------------------------------------- */

/* Writes a payload into a new segment; *id_p names it. */
static int
s_ool_write(dmp__ring_t *r, const void *data, size_t len, uint64_t *id_p)
{
    char name[S_NAME_MAX + 32];
    int fd = -1;
    uint64_t id = 0;
    /* Ids only grow, so EEXIST means a leftover of a ring of the same name
     * that was not unlinked: skip it. */
    for (int tries = 0; tries < 16 && fd < 0; tries++) {
        id = __atomic_fetch_add(&r->hdr->ool_next, 1, __ATOMIC_RELAXED);
        s_ool_name(r->name, id, name, sizeof name);
        fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            return -errno;
    }
    if (fd < 0)
        return -EEXIST;
    int rc = 0;
    if (ftruncate(fd, (off_t)len) != 0)
        rc = -errno;
    const uint8_t *p = data;
    for (size_t off = 0; rc == 0 && off < len;) {
        ssize_t n = pwrite(fd, p + off, len - off, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            rc = n < 0 ? -errno : -EIO;
        else
            off += (size_t)n;
    }
    close(fd);
    if (rc != 0)
        shm_unlink(name);
    else
        *id_p = id;
    return rc;
}

static void
s_ool_remove(const dmp__ring_t *r, uint64_t id)
{
    char name[S_NAME_MAX + 32];
    s_ool_name(r->name, id, name, sizeof name);
    shm_unlink(name);
}

/* Opens the segment of an OOL record and checks its size: the fd, or a
 * negative code (DMP_EPROTO when it is missing or does not match). */
static int
s_ool_open(const dmp__ring_t *r, const s_ool_t *ool)
{
    char name[S_NAME_MAX + 32];
    s_ool_name(r->name, ool->id, name, sizeof name);
    int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return errno == ENOENT ? DMP_EPROTO : -errno;
    struct stat st;
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size != ool->size) {
        close(fd);
        return DMP_EPROTO;
    }
    return fd;
}

/* Reads len bytes of the payload from byte `from` on. */
static int
s_ool_read(int fd, uint8_t *buf, size_t len, uint64_t from)
{
    for (size_t off = 0; off < len;) {
        ssize_t n = pread(fd, buf + off, len - off, (off_t)(from + off));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : DMP_EPROTO;
        off += (size_t)n;
    }
    return 0;
}

/* ---- create, open, close, unlink ------------------------------------- */

static dmp__ring_t *
s_ring_new(const char *name)
{
    dmp__ring_t *r = dmp__calloc(1, sizeof *r);
    if (r)
        dmp__strlcpy(r->name, name, sizeof r->name);
    return r;
}

static void
s_ring_sizes(dmp__ring_t *r, uint64_t cap, uint64_t item_max,
             int64_t maxsize)
{
    r->cap = cap;
    r->item_max = item_max;
    r->maxsize = maxsize;
    r->inline_max = cap / 4;
    r->data = (uint8_t *)r->hdr + S_HDR_SIZE;
}

int
dmp__ring_create(const char *name, const dmp__ring_opts_t *opts,
                 dmp__ring_t **ring_p)
{
    assert(ring_p);
    if (!s_name_valid(name))
        return -EINVAL;
    uint64_t cap = opts && opts->capacity ? opts->capacity : S_CAP_DEFAULT;
    uint64_t item_max =
        opts && opts->item_max ? opts->item_max : DMP__ITEM_MAX_DEFAULT;
    int64_t maxsize = opts && opts->maxsize > 0 ? opts->maxsize : 0;
    if (cap < S_CAP_MIN || cap > S_CAP_LIMIT || item_max > S_CAP_LIMIT)
        return -EINVAL;
    cap = s_pad8(cap);

    dmp__ring_t *r = s_ring_new(name);
    if (!r)
        return -ENOMEM;
    int rc = 0;
    bool created = false;
    pthread_mutexattr_t ma;
    bool ma_init = false;
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    created = true;
    r->map_size = S_HDR_SIZE + cap;
    if (ftruncate(fd, (off_t)r->map_size) != 0) {
        rc = -errno;
        goto out;
    }
    void *p = mmap(NULL, r->map_size, PROT_READ | PROT_WRITE, MAP_SHARED,
                   fd, 0);
    if (p == MAP_FAILED) {
        rc = -errno;
        goto out;
    }
    r->hdr = p;
    s_ring_sizes(r, cap, item_max, maxsize);

    /* ftruncate zero-filled the header: state, counters, notify. */
    s_hdr_t *h = r->hdr;
    h->version = S_VERSION;
    h->hdr_size = S_HDR_SIZE;
    h->struct_size = sizeof(s_hdr_t);
    h->capacity = cap;
    h->seg_size = r->map_size;
    h->item_max = item_max;
    h->maxsize = maxsize;
    if ((rc = -pthread_mutexattr_init(&ma)) != 0)
        goto out;
    ma_init = true;
    if ((rc = -pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED)) ||
        (rc = -pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST)) ||
        (rc = -pthread_mutex_init(&h->put.lock, &ma)) ||
        (rc = -pthread_mutex_init(&h->get.lock, &ma)))
        goto out;
    /* Last: an opener racing with us sees a bad magic, not half a header. */
    __atomic_store_n(&h->magic, S_MAGIC, __ATOMIC_RELEASE);

out:
    if (ma_init)
        pthread_mutexattr_destroy(&ma);
    if (fd >= 0)
        close(fd);
    if (rc != 0) {
        if (r->hdr)
            munmap(r->hdr, r->map_size);
        if (created)
            shm_unlink(name);
        dmp__free(r);
        return rc;
    }
    *ring_p = r;
    return 0;
}

/* Checks a mapped header; everything in it is outside input. The sizes
 * come out as checked (*sizes), read once: a writer of the segment cannot
 * change them after the check. */
static int
s_validate(const s_hdr_t *h, size_t mapped, s_sizes_t *sizes)
{
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != S_MAGIC ||
        h->version != S_VERSION || h->hdr_size != S_HDR_SIZE ||
        h->struct_size != sizeof(s_hdr_t))
        return DMP_EPROTO;
    uint64_t cap = __atomic_load_n(&h->capacity, __ATOMIC_RELAXED);
    uint64_t seg_size = __atomic_load_n(&h->seg_size, __ATOMIC_RELAXED);
    uint64_t item_max = __atomic_load_n(&h->item_max, __ATOMIC_RELAXED);
    int64_t maxsize = __atomic_load_n(&h->maxsize, __ATOMIC_RELAXED);
    if (cap < S_CAP_MIN || cap > S_CAP_LIMIT || cap % 8 != 0 ||
        seg_size != S_HDR_SIZE + cap || seg_size > mapped ||
        item_max > S_CAP_LIMIT || maxsize < 0)
        return DMP_EPROTO;
    /* The views of the other side first, then the get side, then the put
     * side: each read lags behind the next, so a live ring's users moving
     * on meanwhile cannot fail these checks. (Upper bounds such as tail -
     * head <= capacity would: s_fits and s_head check those as they go.) */
    uint64_t put_seen = __atomic_load_n(&h->put.seen_pos, __ATOMIC_SEQ_CST);
    int64_t put_seen_n = __atomic_load_n(&h->put.seen_n, __ATOMIC_SEQ_CST);
    uint64_t get_seen = __atomic_load_n(&h->get.seen_pos, __ATOMIC_SEQ_CST);
    s_state_t g = s_state(&h->get);
    s_state_t p = s_state(&h->put);
    if (g.pos % 8 || p.pos % 8 || g.pos > p.pos || g.n < 0 || g.done < 0 || p.n < g.n || p.n < g.done || p.done ||
        p.n > INT64_MAX / 2 || /* counting on never overflows */
        (uint64_t)(p.n - g.n) > (p.pos - g.pos) / sizeof(s_rec_t))
        return DMP_EPROTO;
    if (put_seen > g.pos || put_seen_n < 0 || put_seen_n > g.n ||
        get_seen > p.pos)
        return DMP_EPROTO;
    if (memchr(h->notify, '\0', sizeof h->notify) == NULL)
        return DMP_EPROTO;
    *sizes = (s_sizes_t){cap, item_max, maxsize};
    return 0;
}

int
dmp__ring_open(const char *name, dmp__ring_t **ring_p)
{
    assert(ring_p);
    if (!s_name_valid(name))
        return -EINVAL;
    dmp__ring_t *r = s_ring_new(name);
    if (!r)
        return -ENOMEM;
    int rc = 0;
    int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto out;
    }
    if (st.st_size < (off_t)(S_HDR_SIZE + S_CAP_MIN) ||
        (uint64_t)st.st_size > S_HDR_SIZE + S_CAP_LIMIT) {
        rc = DMP_EPROTO;
        goto out;
    }
    r->map_size = (size_t)st.st_size;
    void *p = mmap(NULL, r->map_size, PROT_READ | PROT_WRITE, MAP_SHARED,
                   fd, 0);
    if (p == MAP_FAILED) {
        rc = -errno;
        goto out;
    }
    r->hdr = p;
    s_sizes_t sizes;
    if ((rc = s_validate(r->hdr, r->map_size, &sizes)) != 0)
        goto out;
    s_ring_sizes(r, sizes.cap, sizes.item_max, sizes.maxsize);

out:
    if (fd >= 0)
        close(fd);
    if (rc != 0) {
        if (r->hdr)
            munmap(r->hdr, r->map_size);
        dmp__free(r);
        return rc;
    }
    *ring_p = r;
    return 0;
}

void
dmp__ring_close(dmp__ring_t **ring_p)
{
    if (!ring_p || !*ring_p)
        return;
    dmp__ring_t *r = *ring_p;
    munmap(r->hdr, r->map_size);
    dmp__free(r);
    *ring_p = NULL;
}

int
dmp__ring_unlink(const char *name)
{
    if (!s_name_valid(name))
        return -EINVAL;
    int rc = shm_unlink(name) == 0 ? 0 : -errno;
    /* Out-of-line payloads still queued, or left by a putter killed before
     * its commit or a getter killed before its unlink: "<name>.ool.<n>". */
    char prefix[S_NAME_MAX + 8];
    snprintf(prefix, sizeof prefix, "%s" S_OOL_TAG, name + 1);
    size_t plen = strlen(prefix);
    DIR *dir = opendir("/dev/shm");
    if (!dir)
        return rc;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        const char *digits = e->d_name + plen;
        if (strncmp(e->d_name, prefix, plen) != 0 || !*digits ||
            strspn(digits, "0123456789") != strlen(digits))
            continue;
        char full[NAME_MAX + 2];
        snprintf(full, sizeof full, "/%s", e->d_name);
        shm_unlink(full);
    }
    closedir(dir);
    return rc;
}

/* ---- writer holds (pipes) ------------------------------------------- */

static bool
s_writer_alive(const s_writer_t *w)
{
    return dmp__proc_alive(w->pid, w->start);
}

/* Under the get lock: does any writer hold the ring? With check_alive, slots
 * of dead processes are freed first (syscalls: only before sleeping). */
static bool
s_writers_left(s_hdr_t *h, bool check_alive)
{
    bool any = false;
    for (int i = 0; i < S_WRITERS_MAX; i++) {
        s_writer_t *w = &h->writers[i];
        if (w->pid == 0)
            continue;
        if (check_alive && !s_writer_alive(w)) {
            w->pid = 0;
            w->holds = 0;
            continue;
        }
        any = true;
    }
    return any;
}

/* Under the get lock: this process's slot, or NULL. */
static s_writer_t *
s_writer_find(s_hdr_t *h, int32_t pid, uint64_t start)
{
    for (int i = 0; i < S_WRITERS_MAX; i++)
        if (h->writers[i].pid == pid && h->writers[i].start == start)
            return &h->writers[i];
    return NULL;
}

int
dmp__ring_hold_writer(dmp__ring_t *r)
{
    assert(r);
    s_hdr_t *h = r->hdr;
    int32_t pid = (int32_t)getpid();
    bool zombie;
    uint64_t start = dmp__proc_start(pid, &zombie);
    s_deadline_t forever = {false, true, 0};
    int rc = s_lock(h, &h->get, &forever);
    if (rc != 0)
        return rc;
    s_writer_t *w = s_writer_find(h, pid, start);
    if (w && (w->holds & S_HOLD_RESERVED)) {
        w->holds &= ~S_HOLD_RESERVED; /* the parent's reservation, taken */
    } else if (w) {
        w->holds++;
    } else {
        for (int i = 0; !w && i < S_WRITERS_MAX; i++)
            if (h->writers[i].pid == 0 || !s_writer_alive(&h->writers[i]))
                w = &h->writers[i];
        if (w) {
            /* A half-filled slot stays free. */
            __atomic_store_n(&w->pid, 0, __ATOMIC_SEQ_CST);
            w->start = start;
            w->holds = 1;
            __atomic_store_n(&w->pid, pid, __ATOMIC_RELEASE);
        } else {
            rc = -ENOSPC;
        }
    }
    if (rc == 0)
        h->pipe_mode = 1;
    s_unlock(&h->get);
    return rc;
}

int
dmp__ring_hold_writer_for(dmp__ring_t *r, pid_t child)
{
    assert(r);
    s_hdr_t *h = r->hdr;
    bool zombie;
    uint64_t start = dmp__proc_start(child, &zombie);
    if (start == 0 || zombie)
        return 0; /* gone already: nothing to hold for it */
    s_deadline_t forever = {false, true, 0};
    int rc = s_lock(h, &h->get, &forever);
    if (rc != 0)
        return rc;
    s_writer_t *w = s_writer_find(h, (int32_t)child, start);
    if (!w) { /* not attached yet: reserve its hold */
        for (int i = 0; !w && i < S_WRITERS_MAX; i++)
            if (h->writers[i].pid == 0 || !s_writer_alive(&h->writers[i]))
                w = &h->writers[i];
        if (w) {
            __atomic_store_n(&w->pid, 0, __ATOMIC_SEQ_CST);
            w->start = start;
            w->holds = 1 | S_HOLD_RESERVED;
            __atomic_store_n(&w->pid, (int32_t)child, __ATOMIC_RELEASE);
            h->pipe_mode = 1;
        } else {
            rc = -ENOSPC;
        }
    }
    s_unlock(&h->get);
    return rc;
}

int
dmp__ring_close_writer(dmp__ring_t *r)
{
    assert(r);
    s_hdr_t *h = r->hdr;
    int32_t pid = (int32_t)getpid();
    bool zombie;
    uint64_t start = dmp__proc_start(pid, &zombie);
    s_deadline_t forever = {false, true, 0};
    int rc = s_lock(h, &h->get, &forever);
    if (rc != 0)
        return rc;
    s_writer_t *w = s_writer_find(h, pid, start);
    if (!w) {
        rc = -EINVAL; /* this process holds no hold */
    } else if (--w->holds == 0) {
        w->pid = 0;
        /* Getters re-check: EOF once the ring is drained. */
        __atomic_add_fetch(&h->put.word, 1, __ATOMIC_SEQ_CST);
    }
    bool wake = w && w->pid == 0 &&
                S_SLEEPERS(__atomic_load_n(&h->sleep[S_Q_NOT_EMPTY],
                                           __ATOMIC_SEQ_CST));
    char notify[S_NOTIFY_MAX];
    s_notify_path(h, notify);
    s_unlock(&h->get);
    if (wake)
        s_futex_wake(&h->put.word, INT_MAX);
    if (notify[0] && w && w->pid == 0) /* a recv parked at the agent: EOF */
        dmp__fifo_notify(notify);
    return rc;
}

/* Under the get lock, the ring being empty: no writer left (pipes)? Live
 * checks cost syscalls, so they are made only when `thorough`. */
static bool
s_eof(s_hdr_t *h, bool thorough)
{
    return h->pipe_mode && !s_writers_left(h, thorough);
}

/* ---- put and get ----------------------------------------------------- */

/* Appends one record (a wrap marker first when skip says so) after ns's
 * tail, into free space nobody reads, and counts it in ns: the caller
 * commits ns to make it exist. */
static void
s_append(dmp__ring_t *r, s_state_t *ns, uint64_t skip, uint32_t kind,
         const void *payload, uint32_t n)
{
    if (skip) {
        s_rec_t wrap = {0, S_REC_WRAP};
        memcpy(r->data + ns->pos % r->cap, &wrap, sizeof wrap);
        ns->pos += skip;
    }
    uint8_t *rec = r->data + ns->pos % r->cap;
    s_rec_t hd = {n, kind};
    memcpy(rec, &hd, sizeof hd);
    if (n)
        memcpy(rec + sizeof hd, payload, n);
    ns->pos += sizeof hd + s_pad8(n);
    ns->n++;
}

/* After a commit, under the lock of `side`: unlocks, then makes the futex
 * wakes decided under it and writes to the agent's FIFO (if it asked). */
static void
s_unlock_wake(dmp__ring_t *r, s_side_t *side, bool wake_getter,
              bool wake_putter)
{
    s_hdr_t *h = r->hdr;
    char notify[S_NOTIFY_MAX];
    s_notify_path(h, notify);
    s_unlock(side);

    if (wake_getter)
        s_futex_wake(&h->put.word, 1);
    if (wake_putter)
        s_futex_wake(&h->get.word, 1);
    if (notify[0])
        dmp__fifo_notify(notify);
}

/* Commits the puts written into ns (the items exist from then on),
 * unlocks, and wakes one getter (a getter passes the wake on while items
 * remain), another putter if room remains (a get wakes one putter, which
 * may not be the only one that fits now), and the agent's FIFO. */
static void
s_put_commit(dmp__ring_t *r, const s_state_t *ns)
{
    s_hdr_t *h = r->hdr;
    s_commit(&h->put, ns);
    S_HOOK("put-committed");
    bool wake_getter = s_signal(h, S_Q_NOT_EMPTY);
    uint64_t skip;
    bool wake_putter = s_room(r, ns, sizeof(s_rec_t), &skip, false) &&
                       s_claim_wake(h, S_Q_NOT_FULL);
    s_unlock_wake(r, &h->put, wake_getter, wake_putter);
}

int
dmp__ring_put(dmp__ring_t *r, const void *data, size_t len, double timeout)
{
    assert(r);
    assert(data || len == 0);
    s_hdr_t *h = r->hdr;
    if (len > r->item_max)
        return -EMSGSIZE;
    if (__atomic_load_n(&h->shutdown, __ATOMIC_RELAXED))
        return -EBADF;

    uint64_t need = sizeof(s_rec_t) + s_pad8(len);
    bool ool = need > r->inline_max || len > UINT32_MAX / 2;
    s_ool_t ool_rec = {0, len};
    int rc;
    if (ool) {
        /* The payload is written before the lock is taken; only the small
         * record naming it goes through the ring. */
        if ((rc = s_ool_write(r, data, len, &ool_rec.id)) != 0)
            return rc;
        need = sizeof(s_rec_t) + sizeof(s_ool_t);
    }

    s_deadline_t dl = s_deadline(timeout);
    uint64_t skip = 0;
    bool spun = false;
    if ((rc = s_lock(h, &h->put, &dl)) != 0) {
        rc = rc == -ETIMEDOUT ? DMP_EFULL : rc;
        goto fail;
    }
    s_state_t ns;
    for (;;) {
        if (__atomic_load_n(&h->shutdown, __ATOMIC_RELAXED)) {
            rc = -EBADF;
            break;
        }
        ns = s_state(&h->put);
        if (s_room(r, &ns, need, &skip, false))
            break;
        if (s_expired(&dl)) {
            rc = DMP_EFULL;
            break;
        }
        if ((rc = s_wait(r, &h->put, S_Q_NOT_FULL, need, &dl, &spun)) != 0) {
            rc = rc == -ETIMEDOUT ? DMP_EFULL : rc;
            goto fail; /* lock not held */
        }
    }
    if (rc != 0) {
        s_unlock(&h->put);
        goto fail;
    }
    S_HOOK("put-locked");

    if (ool)
        s_append(r, &ns, skip, S_REC_OOL, &ool_rec, sizeof ool_rec);
    else
        s_append(r, &ns, skip, S_REC_DATA, data, (uint32_t)len);
    S_HOOK("put-written");
    s_put_commit(r, &ns);
    return 0;

fail:
    if (ool)
        s_ool_remove(r, ool_rec.id);
    return rc;
}

/* Reads the length of the batch record at data + at: false when the
 * batch ends inside it (malformed). */
static bool
s_batch_record(const uint8_t *data, size_t len, size_t at, uint32_t *n_p)
{
    if (len - at < 4)
        return false;
    *n_p = dmp__le32_get(data + at);
    return *n_p <= len - at - 4;
}

/* Whether a record of n payload bytes goes inline (else out of line, or
 * refused as larger than item_max, both one at a time). */
static bool
s_batch_inline(const dmp__ring_t *r, uint32_t n)
{
    return n <= r->item_max && n <= UINT32_MAX / 2 &&
           sizeof(s_rec_t) + s_pad8(n) <= r->inline_max;
}

/* Puts, under one lock, the inline records from *done on that fit: 0
 * when at least one went in, DMP_EFULL when none fit, -EBADF after
 * shutdown. One commit, one wake-up for the lot: a getter woken passes
 * the wake on while items remain. */
static int
s_put_run(dmp__ring_t *r, const uint8_t *data, size_t len, size_t *done)
{
    s_hdr_t *h = r->hdr;
    s_deadline_t now = s_deadline(0);
    int rc = s_lock(h, &h->put, &now);
    if (rc)
        return rc == -ETIMEDOUT ? DMP_EFULL : rc;
    if (__atomic_load_n(&h->shutdown, __ATOMIC_RELAXED)) {
        s_unlock(&h->put);
        return -EBADF;
    }
    s_state_t ns = s_state(&h->put);
    size_t at = *done;
    uint32_t n;
    uint64_t skip = 0;
    while (at < len && s_batch_record(data, len, at, &n) &&
           s_batch_inline(r, n)) {
        if (!s_room(r, &ns, sizeof(s_rec_t) + s_pad8(n), &skip, false))
            break;
        s_append(r, &ns, skip, S_REC_DATA, data + at + 4, n);
        at += 4 + (size_t)n;
    }
    if (at == *done) {
        s_unlock(&h->put);
        return DMP_EFULL;
    }
    S_HOOK("batch-written");
    *done = at;
    s_put_commit(r, &ns);
    return 0;
}

int
dmp__ring_put_batch(dmp__ring_t *r, const uint8_t *data, size_t len,
                    size_t *done)
{
    assert(r && (data || len == 0) && done);
    int refused = 0;
    while (*done < len) {
        uint32_t n;
        if (!s_batch_record(data, len, *done, &n))
            return -EINVAL;
        int rc;
        if (s_batch_inline(r, n)) {
            if ((rc = s_put_run(r, data, len, done)) != 0)
                return rc;
            continue;
        }
        /* Out of line, or refused: one at a time, in order. */
        rc = dmp__ring_put(r, data + *done + 4, n, 0);
        if (rc == DMP_EFULL || rc == -EBADF)
            return rc;
        /* One refused item (too large) does not cost the items after it;
         * its error is the batch's answer. */
        if (rc && !refused)
            refused = rc;
        *done += 4 + (size_t)n;
    }
    return refused;
}

int
dmp__ring_get(dmp__ring_t *r, uint8_t **data_p, size_t *len_p,
              double timeout)
{
    return dmp__ring_get_max(r, data_p, len_p, timeout, SIZE_MAX);
}

/* Reads the oldest record; every field is checked, the segment being
 * outside input. Caller holds the get lock and saw an item (s_has_item:
 * get.seen_pos is a tail past it). *ns: the get side's state with a WRAP
 * record skipped; *size: the record's bytes in the area;
 * *payload: its bytes (an s_ool_t for OOL). */
static int
s_head(dmp__ring_t *r, s_state_t *ns, s_rec_t *hd, uint64_t *size,
       const uint8_t **payload)
{
    *ns = s_state(&r->hdr->get);
    uint64_t tail = r->hdr->get.seen_pos;
    uint64_t pos = ns->pos % r->cap;
    memcpy(hd, r->data + pos, sizeof *hd);
    if (hd->kind == S_REC_WRAP) {
        ns->pos += r->cap - pos;
        pos = 0;
        memcpy(hd, r->data, sizeof *hd);
    }
    uint64_t used = tail - ns->pos;
    *size = sizeof *hd + s_pad8(hd->len);
    bool bad = ns->pos >= tail || *size > used ||
               *size > r->cap - pos ||
               (hd->kind != S_REC_DATA && hd->kind != S_REC_OOL) ||
               (hd->kind == S_REC_OOL && hd->len != sizeof(s_ool_t));
    *payload = r->data + pos + sizeof *hd;
    return bad ? DMP_EPROTO : 0;
}

/* Commits the removal of the head record (ns, size from s_head), unlocks
 * and wakes whom it concerns. */
static void
s_remove_head(dmp__ring_t *r, s_state_t *ns, uint64_t size)
{
    s_hdr_t *h = r->hdr;
    ns->pos += size;
    ns->n++;
    s_commit(&h->get, ns); /* the item is the taker's from here on */
    S_HOOK("get-committed");
    bool wake_putter = s_signal(h, S_Q_NOT_FULL);
    /* Pass a wake on while items remain (see put). */
    bool wake_getter = s_has_item(r, ns->pos, false) &&
                       s_claim_wake(h, S_Q_NOT_EMPTY);
    s_unlock_wake(r, &h->get, wake_getter, wake_putter);
}

/* Unlocks the get side with the head item left in place (too big for the
 * caller, a failed allocation, a poll): the wake this caller absorbed may
 * have been meant for that item, so it goes on to another sleeping getter
 * (which would otherwise wait for the next put or its re-check). */
static void
s_unlock_item_stays(dmp__ring_t *r)
{
    s_hdr_t *h = r->hdr;
    bool wake = s_claim_wake(h, S_Q_NOT_EMPTY);
    s_unlock(&h->get);
    if (wake)
        s_futex_wake(&h->put.word, 1);
}

int
dmp__ring_get_max(dmp__ring_t *r, uint8_t **data_p, size_t *len_p,
                  double timeout, size_t max)
{
    assert(r && data_p && len_p);
    s_hdr_t *h = r->hdr;
    s_deadline_t dl = s_deadline(timeout);
    bool spun = false, waited = false;
    int rc = s_lock(h, &h->get, &dl);
    if (rc != 0)
        return rc == -ETIMEDOUT ? DMP_EEMPTY : rc;
    for (;;) {
        if (s_get_ready(r))
            break;
        if (__atomic_load_n(&h->shutdown, __ATOMIC_RELAXED)) {
            s_unlock(&h->get);
            return -EBADF;
        }
        bool expired = s_expired(&dl);
        if (s_eof(h, expired || waited)) {
            s_unlock(&h->get);
            return DMP_EEOF;
        }
        if (expired) {
            s_unlock(&h->get);
            return DMP_EEMPTY;
        }
        if ((rc = s_wait(r, &h->get, S_Q_NOT_EMPTY, 0, &dl, &spun)) != 0)
            return rc == -ETIMEDOUT ? DMP_EEMPTY : rc;
        waited = true;
    }

    s_state_t ns;
    s_rec_t hd;
    uint64_t size;
    const uint8_t *payload;
    if (s_head(r, &ns, &hd, &size, &payload) != 0) {
        s_unlock(&h->get);
        return DMP_EPROTO;
    }
    uint8_t *buf = NULL;
    size_t len = hd.len;
    int ool_fd = -1;
    s_ool_t ool = {0, 0};
    if (hd.kind == S_REC_OOL) {
        memcpy(&ool, payload, sizeof ool);
        if (ool.size > r->item_max) {
            ool_fd = DMP_EPROTO;
        } else if (ool.size > max) {
            s_unlock_item_stays(r); /* too big for the caller */
            *len_p = (size_t)ool.size;
            return -EMSGSIZE;
        } else {
            ool_fd = s_ool_open(r, &ool);
            len = (size_t)ool.size;
        }
        if (ool_fd == DMP_EPROTO) {
            /* A record naming a missing or wrong segment cannot become an
             * item: drop it so the queue does not stay wedged on it. */
            rc = DMP_EPROTO;
        } else if (ool_fd < 0) {
            s_unlock_item_stays(r); /* e.g. EMFILE: for a retry */
            return ool_fd;
        }
    }
    if (hd.kind == S_REC_DATA && len > max) {
        s_unlock_item_stays(r); /* too big for the caller */
        *len_p = len;
        return -EMSGSIZE;
    }
    if (rc == 0) {
        buf = dmp__malloc(len);
        if (!buf) {
            s_unlock_item_stays(r);
            if (ool_fd >= 0)
                close(ool_fd);
            return -ENOMEM; /* nothing taken */
        }
        if (ool_fd < 0 && len)
            memcpy(buf, payload, len);
    }
    S_HOOK("get-copied");
    s_remove_head(r, &ns, size);

    if (hd.kind == S_REC_OOL) {
        if (ool_fd >= 0) {
            /* Committed already: a crash here loses the item with the
             * process that took it, like any crash after a get returns;
             * its segment is a leftover for dmp__ring_unlink. */
            rc = s_ool_read(ool_fd, buf, len, 0);
            close(ool_fd);
        }
        s_ool_remove(r, ool.id);
        if (rc != 0) {
            dmp__free(buf);
            return rc;
        }
    }
    *data_p = buf;
    *len_p = len;
    return 0;
}

/* ---- an item read in parts, then taken -------------------------------- */

/* Locks a ring that holds an item and finds its head: 0, DMP_EEMPTY when
 * empty, -ESTALE when *seq_p (not 0) is no longer the head. The record's
 * sequence number is its head counter + 1 (0 means "whichever is first").
 * On 0 the lock is held. */
static int
s_lock_head(dmp__ring_t *r, uint64_t *seq_p, s_state_t *ns, s_rec_t *hd,
            uint64_t *size, const uint8_t **payload)
{
    s_hdr_t *h = r->hdr;
    s_deadline_t dl = s_deadline(0);
    int rc = s_lock(h, &h->get, &dl);
    if (rc != 0)
        return rc == -ETIMEDOUT ? -EAGAIN : rc;
    if (!s_get_ready(r)) {
        s_unlock(&h->get);
        return *seq_p ? -ESTALE : DMP_EEMPTY;
    }
    if (s_head(r, ns, hd, size, payload) != 0) {
        s_unlock(&h->get);
        return DMP_EPROTO;
    }
    if (*seq_p && *seq_p != ns->pos + 1) {
        s_unlock(&h->get);
        return -ESTALE;
    }
    *seq_p = ns->pos + 1;
    return 0;
}

int
dmp__ring_peek(dmp__ring_t *r, uint64_t *seq_p, uint64_t offset, size_t max,
               uint8_t **data_p, size_t *len_p, uint64_t *total_p)
{
    assert(r && seq_p && data_p && len_p && total_p);
    s_hdr_t *h = r->hdr;
    s_state_t ns;
    s_rec_t hd;
    uint64_t size;
    const uint8_t *payload;
    int rc = s_lock_head(r, seq_p, &ns, &hd, &size, &payload);
    if (rc != 0)
        return rc;
    s_ool_t ool = {0, hd.len};
    if (hd.kind == S_REC_OOL)
        memcpy(&ool, payload, sizeof ool);
    if (ool.size > r->item_max || offset > ool.size) {
        s_unlock(&h->get);
        return offset > ool.size ? -EINVAL : DMP_EPROTO;
    }
    size_t n = ool.size - offset < max ? (size_t)(ool.size - offset) : max;
    uint8_t *buf = dmp__malloc(n ? n : 1);
    if (!buf) {
        s_unlock(&h->get);
        return -ENOMEM;
    }
    int fd = -1;
    if (hd.kind == S_REC_OOL)
        rc = fd = s_ool_open(r, &ool);
    else
        memcpy(buf, payload + offset, n);
    s_unlock(&h->get);
    /* The segment stays readable through fd even if a taker unlinks it. */
    if (fd >= 0) {
        rc = s_ool_read(fd, buf, n, offset);
        close(fd);
    }
    if (rc < 0) {
        dmp__free(buf);
        return rc;
    }
    *data_p = buf;
    *len_p = n;
    *total_p = ool.size;
    return 0;
}

int
dmp__ring_take(dmp__ring_t *r, uint64_t seq)
{
    assert(r);
    if (seq == 0)
        return -EINVAL;
    s_state_t ns;
    s_rec_t hd;
    uint64_t size;
    const uint8_t *payload;
    int rc = s_lock_head(r, &seq, &ns, &hd, &size, &payload);
    if (rc != 0)
        return rc == DMP_EEMPTY ? -ESTALE : rc;
    s_ool_t ool = {0, 0};
    if (hd.kind == S_REC_OOL)
        memcpy(&ool, payload, sizeof ool);
    s_remove_head(r, &ns, size);
    if (hd.kind == S_REC_OOL)
        s_ool_remove(r, ool.id);
    return 0;
}

/* ---- counters, JoinableQueue, shutdown, notify ----------------------- */

int64_t
dmp__ring_count(dmp__ring_t *r)
{
    assert(r);
    /* Lock-free: a stopped lock holder must not block qsize. The get side
     * first: a put in between makes the count larger, never negative. */
    int64_t got = s_state(&r->hdr->get).n;
    int64_t n = s_diff(s_state(&r->hdr->put).n, got);
    return n < 0 ? 0 : n;
}

int
dmp__ring_poll(dmp__ring_t *r, double timeout)
{
    assert(r);
    s_hdr_t *h = r->hdr;
    s_deadline_t dl = s_deadline(timeout);
    bool spun = false, waited = false;
    int rc = s_lock(h, &h->get, &dl);
    if (rc != 0)
        return rc == -ETIMEDOUT ? 0 : rc;
    for (;;) {
        bool expired = s_expired(&dl);
        if (s_get_ready(r) || __atomic_load_n(&h->shutdown, __ATOMIC_RELAXED) ||
            s_eof(h, expired || waited)) {
            rc = 1;
            break;
        }
        if (expired) {
            rc = 0;
            break;
        }
        if ((rc = s_wait(r, &h->get, S_Q_NOT_EMPTY, 0, &dl, &spun)) != 0)
            return rc == -ETIMEDOUT ? 0 : rc;
        waited = true;
    }
    if (rc == 1)
        s_unlock_item_stays(r);
    else
        s_unlock(&h->get);
    return rc;
}

int
dmp__ring_task_done(dmp__ring_t *r)
{
    assert(r);
    s_hdr_t *h = r->hdr;
    s_deadline_t forever = {false, true, 0};
    int rc = s_lock(h, &h->get, &forever);
    if (rc != 0)
        return rc;
    int64_t unfinished = s_unfinished(r);
    if (unfinished <= 0) {
        s_unlock(&h->get);
        return -EINVAL;
    }
    s_state_t ns = s_state(&h->get);
    ns.done++;
    s_commit(&h->get, &ns);
    bool wake = false;
    if (--unfinished == 0) {
        __atomic_add_fetch(&h->joined, 1, __ATOMIC_SEQ_CST);
        wake = S_SLEEPERS(__atomic_load_n(&h->sleep[S_Q_JOINED],
                                          __ATOMIC_SEQ_CST));
    }
    char notify[S_NOTIFY_MAX];
    s_notify_path(h, notify);
    s_unlock(&h->get);
    if (wake) /* every joiner */
        s_futex_wake(&h->joined, INT_MAX);
    if (notify[0] && unfinished == 0) /* a join parked at the agent */
        dmp__fifo_notify(notify);
    return 0;
}

int
dmp__ring_join(dmp__ring_t *r, double timeout)
{
    assert(r);
    s_hdr_t *h = r->hdr;
    s_deadline_t dl = s_deadline(timeout);
    bool spun = false;
    int rc = s_lock(h, &h->get, &dl);
    if (rc != 0)
        return rc;
    for (;;) {
        if (s_unfinished(r) <= 0)
            break;
        if (__atomic_load_n(&h->shutdown, __ATOMIC_RELAXED)) {
            rc = -EBADF;
            break;
        }
        if (s_expired(&dl)) {
            rc = -ETIMEDOUT;
            break;
        }
        if ((rc = s_wait(r, &h->get, S_Q_JOINED, 0, &dl, &spun)) != 0)
            return rc;
    }
    s_unlock(&h->get);
    return rc;
}

void
dmp__ring_shutdown(dmp__ring_t *r)
{
    assert(r);
    s_hdr_t *h = r->hdr;
    /* No lock: a holder that does not let go (stopped) must not stop the
     * owner's teardown. Waiters re-check the flag after registering (see
     * s_wait); everyone is woken, whatever the sleeper counts say. */
    __atomic_store_n(&h->shutdown, 1, __ATOMIC_SEQ_CST);
    for (int q = 0; q < S_Q_N; q++)
        __atomic_add_fetch(s_word(h, q), 1, __ATOMIC_SEQ_CST);
    for (int q = 0; q < S_Q_N; q++)
        s_futex_wake(s_word(h, q), INT_MAX);
}

uint32_t
dmp__ring_seq(dmp__ring_t *r)
{
    assert(r);
    return (uint32_t)((uint64_t)s_state(&r->hdr->put).n +
                      (uint64_t)s_state(&r->hdr->get).n);
}

uint64_t
dmp__ring_item_max(const dmp__ring_t *r)
{
    assert(r);
    return r->item_max;
}

int
dmp__ring_set_notify(dmp__ring_t *r, const char *fifo_path)
{
    assert(r);
    const char *path = fifo_path ? fifo_path : "";
    if (strlen(path) >= S_NOTIFY_MAX)
        return -ENAMETOOLONG;
    /* Under both locks (get first), so either side reads it under its
     * own. */
    s_hdr_t *h = r->hdr;
    s_deadline_t forever = {false, true, 0};
    int rc = s_lock(h, &h->get, &forever);
    if (rc != 0)
        return rc;
    if ((rc = s_lock(h, &h->put, &forever)) == 0) {
        memset(h->notify, 0, sizeof h->notify);
        memcpy(h->notify, path, strlen(path));
        s_unlock(&h->put);
    }
    s_unlock(&h->get);
    return rc;
}
