/*
 * dmp_pool.c - Python's Pool, with workers anywhere in the cluster, that
 * loses nothing when a worker or a whole node dies.
 *
 * Workers are dmp processes (the same executable, target DMP__POOL_WORKER,
 * dmp_pool_worker.c), each with its own task queue; all of them put
 * results on the pool's one result queue. Every queue belongs to the node
 * this program talks to, so on that host everything goes through shared
 * memory, and workers elsewhere get one message per round trip and put
 * results pipelined.
 *
 * The owner assigns the work: a call's items are cut into chunks
 * (chunksize items, and at most DMP__POOL_MSG_SOFT bytes), and chunks go
 * to the workers in messages. The owner knows at every moment which chunks
 * each worker holds (in the order it runs them), so when a worker dies
 * (its process handle says so: an exit, a signal, or DMP_ENODE when its
 * node is lost) they go back to the front of the pending list and a
 * replacement worker starts. A result is keyed by chunk id and item; the
 * job keeps the first result of each item and drops the others (a chunk
 * may run twice: exactly-once delivery, at-least-once execution).
 *
 * Speed comes from how much is in flight: each worker holds at most AHEAD
 * messages (one running, one waiting, so it never waits for the owner),
 * and a message carries as many chunks as take about TARGET_US by the
 * measured time per item (one chunk while that is unknown, so long tasks
 * spread evenly). An idle worker takes over a waiting message of a busy
 * one (steal-back: the owner gets it back from that worker's queue, which
 * gives each message to exactly one getter).
 *
 * Blame: when a worker dies of a crash or a signal, the culprit is among
 * the unfinished items of the first message it held (the worker flushes
 * results at the end of every message). Those chunks run again alone,
 * one per message, marked suspect; a suspect of several items is cut in
 * halves each time it is blamed, so a culprit is isolated in log2(n)
 * deaths, and a single item blamed more than `retries` times fails with
 * DMP_EWORKER. A lost node blames nothing. With a task_timeout, a worker
 * whose chunk runs longer is killed here and blamed the same way. Workers
 * that die before their first task (a failing initializer) are counted
 * per node: such a node gets no more workers, and with no node left every
 * call fails, instead of respawning for ever.
 *
 * Threads: calls from the program build their chunks, then assign what
 * workers can take at once, under the pool's lock. The pool's thread
 * takes results, watches the workers (every TICK), starts replacements,
 * pings idle workers (so that remote ones notice a dead program), and runs
 * callbacks without the lock. Lock order: the pool's, then a job's.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RETRIES_DEFAULT 3
#define TICK 0.02          /* seconds between looks at the workers */
#define PING_EVERY 2.0     /* an idle worker hears from us this often */
#define TARGET_US 5000.0   /* about this much work in one message */
#define BATCH_MAX 1024     /* chunks in one message at most */
#define AHEAD 2            /* messages a worker holds at most */
#define SPAWN_GIVE_UP 5.0  /* seconds with no worker at all: calls fail */
#define STOP_WAIT 2.0      /* terminate: SIGTERM, SIGKILL after this */
#define DRAIN_MAX 64       /* result messages taken per lock */
#define EST_TASKS 16       /* tasks whose time per item is remembered */

enum { C_PENDING = 1, C_OUT = 2, C_DONE = 3 };
enum { P_RUN = 0, P_CLOSE = 1, P_TERMINATE = 2 };

typedef struct s_chunk s_chunk_t;
typedef struct s_work s_work_t;
typedef struct s_worker s_worker_t;

struct s_chunk {
    s_chunk_t *prev, *next;   /* in the pending list or its worker's */
    s_work_t *work;
    uint64_t id;
    size_t first, n;          /* tasks [first, first + n) of the job */
    size_t off, len;          /* their items in work->payload */
    s_worker_t *worker;       /* holder while C_OUT */
    uint64_t msg;             /* the holder's message it went in */
    unsigned kills;           /* worker deaths blamed on it */
    size_t got;               /* items with an outcome */
    uint8_t state;
    bool suspect;             /* runs alone, its result sent at once */
};

typedef struct s_pieces {     /* chunks split off a blamed one */
    struct s_pieces *next;
    size_t n;
    s_chunk_t c[];
} s_pieces_t;

struct s_work {               /* one call, as the pool schedules it */
    s_work_t *prev, *next;
    dmp__job_t *job;
    char task[DMP__NAME_MAX];
    uint8_t *payload;         /* every item: u32 length, encoded value */
    s_chunk_t *chunks;
    size_t n_chunks;
    s_pieces_t *pieces;
    size_t left;              /* chunks not done */
    double est_us;            /* measured microseconds per item */
    bool est_known;
    bool cancelled;           /* the job wants nothing more */
};

typedef struct {
    char name[DMP__NAME_MAX];
    unsigned cores;
    unsigned workers;         /* running or starting there */
    bool local;               /* the node this program talks to */
    bool dead;                /* lost: no new worker goes there */
    unsigned init_failures;   /* workers that failed to start, in a row */
    bool init_broken;         /* too many: no new worker goes there */
} s_node_t;

typedef struct {
    uint64_t seq;
    size_t left;              /* its chunks the worker still holds */
} s_msgrec_t;

struct s_worker {
    uint64_t id;
    s_node_t *node;
    dmp_process_t *proc;
    dmp_queue_t *tasks;       /* its own queue; we created it */
    size_t msg_max;           /* largest message that reaches it */
    bool stopping;            /* told to stop: takes nothing more */
    bool hello;               /* its initializer ran */
    bool init_failed;         /* ... and failed ('X') */
    bool timed_out;           /* we killed it: its chunk ran too long */
    uint64_t head_id;         /* the chunk it runs (task_timeout) ... */
    double head_since;        /* ... since about then */
    unsigned assigned;        /* chunks given (maxtasksperchild) */
    s_chunk_t *head, *tail;   /* the chunks it holds, in its order */
    s_msgrec_t msgs[AHEAD];
    size_t n_msgs;
    uint64_t msg_seq;
    double last_sent;
};

typedef struct {              /* chunk id -> chunk, open addressing */
    uint64_t *keys;           /* 0: empty (ids start at 1) */
    s_chunk_t **vals;
    size_t cap, n;
} s_hash_t;

typedef struct {              /* jobs whose callbacks are due */
    dmp__job_t **jobs;
    size_t n, cap;
} s_due_t;

struct dmp_pool {
    dmp_pool_t *next_pool;    /* s_pools */
    pthread_mutex_t lock;
    pthread_cond_t cond;      /* the pool's thread ended */
    pthread_t thread;
    bool thread_started, thread_done, joined;
    int state;
    int processes, maxtasks, retries;
    double task_timeout;      /* 0: none */
    char initializer[DMP__NAME_MAX];
    dmp_value_t *initargs;
    char host_id[160];
    s_node_t *nodes;
    size_t n_nodes;
    dmp_queue_t *results;
    s_worker_t **slots;       /* processes entries; NULL: to start */
    unsigned rr;              /* where dispatch starts, round robin */
    uint64_t next_worker_id, next_chunk_id;
    s_work_t *works, *works_tail;
    s_chunk_t *pend_head, *pend_tail;
    s_hash_t hash;
    struct {                  /* per item, by task: for new calls */
        char task[DMP__NAME_MAX];
        double us;
    } est[EST_TASKS];
    unsigned est_next;        /* the entry to reuse next */
    dmp__buf_t msg;           /* a message being built */
    int broken_rc, broken_code; /* calls fail at once with these */
    char broken_text[DMP__TEXT_MAX];
    double spawn_failing_since; /* 0: the last start worked */
    double next_spawn;
    int spawn_rc;
    char spawn_text[DMP__TEXT_MAX];
    double next_check;
    int err_code;             /* the last failed synchronous call */
    char errmsg[DMP__TEXT_MAX];
};

static pthread_mutex_t s_pools_lock = PTHREAD_MUTEX_INITIALIZER;
static dmp_pool_t *s_pools;

/* ---- chunk ids ----------------------------------------------------------- */

static size_t
s_hslot(uint64_t k, size_t cap)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (size_t)k & (cap - 1);
}

static s_chunk_t *
s_hash_get(const s_hash_t *h, uint64_t k)
{
    if (!h->cap)
        return NULL;
    for (size_t i = s_hslot(k, h->cap);; i = (i + 1) & (h->cap - 1)) {
        if (h->keys[i] == k)
            return h->vals[i];
        if (h->keys[i] == 0)
            return NULL;
    }
}

static int
s_hash_put(s_hash_t *h, uint64_t k, s_chunk_t *v)
{
    if ((h->n + 1) * 2 > h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 1024;
        uint64_t *keys = dmp__calloc(cap, sizeof *keys);
        s_chunk_t **vals = dmp__calloc(cap, sizeof *vals);
        if (!keys || !vals) {
            dmp__free(keys);
            dmp__free(vals);
            return -ENOMEM;
        }
        for (size_t i = 0; i < h->cap; i++) {
            if (!h->keys[i])
                continue;
            size_t j = s_hslot(h->keys[i], cap);
            while (keys[j])
                j = (j + 1) & (cap - 1);
            keys[j] = h->keys[i];
            vals[j] = h->vals[i];
        }
        dmp__free(h->keys);
        dmp__free(h->vals);
        h->keys = keys;
        h->vals = vals;
        h->cap = cap;
    }
    size_t i = s_hslot(k, h->cap);
    while (h->keys[i] && h->keys[i] != k)
        i = (i + 1) & (h->cap - 1);
    h->n += h->keys[i] == 0;
    h->keys[i] = k;
    h->vals[i] = v;
    return 0;
}

/* Linear probing's deletion: later entries of the cluster move back. */
static void
s_hash_del(s_hash_t *h, uint64_t k)
{
    if (!h->cap)
        return;
    size_t mask = h->cap - 1, i = s_hslot(k, h->cap);
    while (h->keys[i] != k) {
        if (h->keys[i] == 0)
            return;
        i = (i + 1) & mask;
    }
    for (size_t j = (i + 1) & mask; h->keys[j]; j = (j + 1) & mask) {
        size_t ideal = s_hslot(h->keys[j], h->cap);
        bool move = i < j ? (ideal <= i || ideal > j)
                          : (ideal <= i && ideal > j);
        if (move) {
            h->keys[i] = h->keys[j];
            h->vals[i] = h->vals[j];
            i = j;
        }
    }
    h->keys[i] = 0;
    h->vals[i] = NULL;
    h->n--;
}

/* ---- lists --------------------------------------------------------------- */

static void
s_due_add(s_due_t *due, dmp__job_t *job)
{
    if (due->n == due->cap) {
        size_t cap = due->cap ? due->cap * 2 : 16;
        dmp__job_t **grown = dmp__realloc(due->jobs, cap * sizeof *grown);
        if (!grown)
            return; /* the callback is lost with the memory */
        due->jobs = grown;
        due->cap = cap;
    }
    dmp__job_ref(job);
    due->jobs[due->n++] = job;
}

static void
s_due_run(s_due_t *due)
{
    for (size_t i = 0; i < due->n; i++) {
        dmp__job_callback(due->jobs[i]);
        dmp__job_unref(&due->jobs[i]);
    }
    due->n = 0;
}

static void
s_list_remove(s_chunk_t **head, s_chunk_t **tail, s_chunk_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        *head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        *tail = c->prev;
    c->prev = c->next = NULL;
}

static void
s_list_append(s_chunk_t **head, s_chunk_t **tail, s_chunk_t *c)
{
    c->next = NULL;
    c->prev = *tail;
    if (*tail)
        (*tail)->next = c;
    else
        *head = c;
    *tail = c;
}

/* Moves the chunks [first .. last] (linked) to the front of pending. */
static void
s_pending_prepend(dmp_pool_t *pool, s_chunk_t *first, s_chunk_t *last)
{
    if (!first)
        return;
    first->prev = NULL;
    last->next = pool->pend_head;
    if (pool->pend_head)
        pool->pend_head->prev = last;
    else
        pool->pend_tail = last;
    pool->pend_head = first;
}

/* Takes c from the list it is on (pending, or its holder's). */
static void
s_chunk_unlink(dmp_pool_t *pool, s_chunk_t *c)
{
    if (c->state == C_PENDING) {
        s_list_remove(&pool->pend_head, &pool->pend_tail, c);
    } else if (c->state == C_OUT) {
        s_worker_t *w = c->worker;
        s_list_remove(&w->head, &w->tail, c);
        for (size_t i = 0; i < w->n_msgs; i++)
            if (w->msgs[i].seq == c->msg) {
                if (--w->msgs[i].left == 0) {
                    memmove(&w->msgs[i], &w->msgs[i + 1],
                            (w->n_msgs - i - 1) * sizeof w->msgs[0]);
                    w->n_msgs--;
                }
                break;
            }
        c->worker = NULL;
    }
}

static void
s_work_free(dmp_pool_t *pool, s_work_t *work)
{
    if (work->prev)
        work->prev->next = work->next;
    else
        pool->works = work->next;
    if (work->next)
        work->next->prev = work->prev;
    else
        pool->works_tail = work->prev;
    while (work->pieces) {
        s_pieces_t *p = work->pieces;
        work->pieces = p->next;
        dmp__free(p);
    }
    dmp__job_unref(&work->job);
    dmp__free(work->chunks);
    dmp__free(work->payload);
    dmp__free(work);
}

/* c needs nothing more (all its items have outcomes, or it was replaced
 * or dropped). May free its work, and c with it. */
static void
s_chunk_done(dmp_pool_t *pool, s_chunk_t *c)
{
    if (c->state != C_PENDING && c->state != C_OUT)
        return; /* done already, or never counted (a failed submit) */
    s_chunk_unlink(pool, c);
    s_hash_del(&pool->hash, c->id);
    c->state = C_DONE;
    s_work_t *work = c->work;
    if (--work->left == 0)
        s_work_free(pool, work);
}

/* The job wants nothing more: its pending chunks are dropped (those out
 * finish, their results are ignored). */
static void
s_work_cancel(dmp_pool_t *pool, s_work_t *work)
{
    if (work->cancelled)
        return;
    work->cancelled = true;
    work->left++; /* keep it alive while dropping */
    for (size_t i = 0; i < work->n_chunks; i++)
        if (work->chunks[i].state == C_PENDING)
            s_chunk_done(pool, &work->chunks[i]);
    for (s_pieces_t *p = work->pieces; p; p = p->next)
        for (size_t i = 0; i < p->n; i++)
            if (p->c[i].state == C_PENDING)
                s_chunk_done(pool, &p->c[i]);
    if (--work->left == 0)
        s_work_free(pool, work);
}

/* Sets every item of c without an outcome to rc, then c is done. */
static void
s_chunk_fail(dmp_pool_t *pool, s_chunk_t *c, int rc, const char *text,
             s_due_t *due)
{
    s_work_t *work = c->work;
    dmp__job_lock(work->job);
    for (size_t i = 0; i < c->n; i++)
        dmp__job_set_locked(work->job, c->first + i, rc, rc, NULL, 0, text);
    bool finished = dmp__job_finished_locked(work->job);
    bool due_now = dmp__job_callback_due_locked(work->job);
    dmp__job_unlock(work->job);
    if (due_now) /* it takes a reference: not under the job's lock */
        s_due_add(due, work->job);
    work->left++;
    s_chunk_done(pool, c);
    if (finished)
        s_work_cancel(pool, work);
    if (--work->left == 0)
        s_work_free(pool, work);
}

/* Every call fails with rc (terminate, a broken pool, no worker). */
static void
s_fail_all(dmp_pool_t *pool, int rc, int code, const char *text,
           s_due_t *due)
{
    while (pool->works) {
        s_work_t *work = pool->works;
        dmp__job_lock(work->job);
        dmp__job_fail_locked(work->job, rc, code, text);
        bool due_now = dmp__job_callback_due_locked(work->job);
        dmp__job_unlock(work->job);
        if (due_now) /* it takes a reference: not under the job's lock */
            s_due_add(due, work->job);
        work->left++;
        for (size_t i = 0; i < work->n_chunks; i++)
            s_chunk_done(pool, &work->chunks[i]);
        for (s_pieces_t *p = work->pieces; p; p = p->next)
            for (size_t i = 0; i < p->n; i++)
                s_chunk_done(pool, &p->c[i]);
        work->left = 1;
        s_work_free(pool, work);
    }
}

/* ---- the result queue -------------------------------------------------------- */

static s_worker_t *
s_worker_by_id(dmp_pool_t *pool, uint64_t id)
{
    for (int i = 0; i < pool->processes; i++)
        if (pool->slots[i] && pool->slots[i]->id == id)
            return pool->slots[i];
    return NULL;
}

/* Marks the pool broken: every call fails with this from now on. */
static void
s_break(dmp_pool_t *pool, int rc, int code, const char *text, s_due_t *due)
{
    if (pool->broken_rc)
        return;
    pool->broken_rc = rc;
    pool->broken_code = code;
    dmp__strlcpy(pool->broken_text, text, sizeof pool->broken_text);
    dmp__log(DMP_LOG_WARN, "pool: %s", text);
    s_fail_all(pool, rc, code, text, due);
}

/* Remembers a task's time per item for its next calls (apply_async
 * makes one call per item: each starts with what the last measured). */
static void
s_est_note(dmp_pool_t *pool, const char *task, double us)
{
    size_t i = 0;
    while (i < EST_TASKS && strcmp(pool->est[i].task, task) != 0)
        i++;
    if (i == EST_TASKS) {
        i = pool->est_next++ % EST_TASKS;
        dmp__strlcpy(pool->est[i].task, task, sizeof pool->est[i].task);
    }
    pool->est[i].us = us;
}

static void
s_on_results(dmp_pool_t *pool, const uint8_t *p, const uint8_t *end,
             s_due_t *due)
{
    if (end - p < 4)
        return;
    uint32_t n_runs = (uint32_t)dmp__le_get(p, 4);
    p += 4;
    for (uint32_t r = 0; r < n_runs; r++) {
        if (end - p < 20)
            return;
        uint64_t id = dmp__le_get(p, 8);
        uint32_t first = (uint32_t)dmp__le_get(p + 8, 4);
        uint32_t n = (uint32_t)dmp__le_get(p + 12, 4);
        uint32_t us = (uint32_t)dmp__le_get(p + 16, 4);
        p += 20;
        s_chunk_t *c = s_hash_get(&pool->hash, id);
        s_work_t *work = c ? c->work : NULL;
        if (work)
            dmp__job_lock(work->job);
        for (uint32_t k = 0; k < n; k++) {
            if (end - p < 8)
                break;
            int code = (int)(int32_t)dmp__le_get(p, 4);
            uint32_t len = (uint32_t)dmp__le_get(p + 4, 4);
            p += 8;
            if ((size_t)(end - p) < len)
                break;
            if (work && (size_t)first + k < c->n) {
                size_t i = c->first + first + k;
                bool set;
                if (code == 0) {
                    set = dmp__job_set_locked(work->job, i, 0, 0, p, len,
                                              NULL);
                } else {
                    char text[DMP__TEXT_MAX];
                    snprintf(text, sizeof text, "task '%s' failed on item "
                             "%zu: %.*s", work->task, i, (int)len, p);
                    set = dmp__job_set_locked(work->job, i, DMP_EREMOTE,
                                              code, NULL, 0, text);
                }
                c->got += set;
            }
            p += len;
        }
        if (!work)
            continue;
        bool finished = dmp__job_finished_locked(work->job);
        bool due_now = dmp__job_callback_due_locked(work->job);
        dmp__job_unlock(work->job);
        if (due_now) /* it takes a reference: not under the job's lock */
            s_due_add(due, work->job);
        if (n) {
            double per = (double)us / n;
            work->est_us = work->est_known ? 0.7 * work->est_us + 0.3 * per
                                           : per;
            work->est_known = true;
            s_est_note(pool, work->task, work->est_us);
        }
        work->left++; /* c's work outlives these two steps */
        if (finished)
            s_work_cancel(pool, work);
        if (c->got >= c->n)
            s_chunk_done(pool, c);
        if (--work->left == 0)
            s_work_free(pool, work);
    }
}

/* A worker on node failed before its first task (its initializer, or a
 * death). Past `retries` in a row there, no worker goes to that node any
 * more; when that leaves no node, every call fails with this error (and
 * later ones at once): no endless respawning, no hang. */
static void
s_init_failed(dmp_pool_t *pool, s_node_t *node, int code, const char *text,
              s_due_t *due)
{
    if (++node->init_failures <= (unsigned)pool->retries || node->init_broken)
        return;
    node->init_broken = true;
    dmp__log(DMP_LOG_WARN, "pool: no more workers on node '%s': %s",
             node->name, text);
    for (size_t i = 0; i < pool->n_nodes; i++)
        if (!pool->nodes[i].init_broken)
            return;
    s_break(pool, DMP_EREMOTE, code, text, due);
}

/* One message from the result queue. */
static void
s_on_message(dmp_pool_t *pool, const uint8_t *p, size_t len, s_due_t *due)
{
    if (len < 1)
        return;
    if (p[0] == 'R' && len >= 9) {
        s_on_results(pool, p + 9, p + len, due);
    } else if ((p[0] == 'H' || p[0] == 'X') && len >= 9) {
        s_worker_t *w = s_worker_by_id(pool, dmp__le_get(p + 1, 8));
        if (!w)
            return; /* its end was handled already */
        if (p[0] == 'H') {
            w->hello = true;
            w->node->init_failures = 0;
            return;
        }
        int code = len >= 13 ? (int)(int32_t)dmp__le_get(p + 9, 4) : -EINVAL;
        char text[DMP__TEXT_MAX];
        snprintf(text, sizeof text, "%.*s", len > 13 ? (int)(len - 13) : 0,
                 (const char *)p + 13);
        w->init_failed = true;
        s_init_failed(pool, w->node, code, text, due);
    }
}

/* Takes what the result queue holds now and handles it. */
static void
s_drain_locked(dmp_pool_t *pool, s_due_t *due)
{
    void *buf;
    size_t len;
    while (dmp_queue_get_bytes(pool->results, &buf, &len, 0) == 0) {
        s_on_message(pool, buf, len, due);
        dmp_free(buf);
    }
}

/* ---- giving work out ------------------------------------------------------------- */

static bool
s_can_take(const dmp_pool_t *pool, const s_worker_t *w)
{
    return w && w->proc && !w->stopping && !w->init_failed &&
           w->n_msgs < AHEAD &&
           (pool->maxtasks == 0 || w->assigned < (unsigned)pool->maxtasks);
}

/* How many chunks of work's size one message should carry. */
static size_t
s_batch(const dmp_pool_t *pool, const s_chunk_t *c)
{
    const s_work_t *work = c->work;
    double est = work->est_known ? work->est_us : -1;
    for (size_t i = 0; !work->est_known && i < EST_TASKS; i++)
        if (strcmp(pool->est[i].task, work->task) == 0)
            est = pool->est[i].us; /* the same task in an earlier call */
    if (est < 0 || pool->task_timeout > 0)
        return 1; /* unknown: long tasks must spread evenly; with a
                   * timeout, a chunk's clock starts when the last ends */
    double chunk_us = est * (double)c->n;
    if (chunk_us <= TARGET_US / BATCH_MAX)
        return BATCH_MAX;
    size_t n = (size_t)(TARGET_US / chunk_us);
    return n < 1 ? 1 : n > BATCH_MAX ? BATCH_MAX : n;
}

static size_t
s_chunk_msg_len(const s_chunk_t *c)
{
    return 14 + strlen(c->work->task) + c->len;
}

static void
s_put_chunk(dmp__buf_t *b, const s_chunk_t *c)
{
    size_t name_len = strlen(c->work->task);
    dmp__buf_put_le(b, c->id, 8);
    uint8_t flags = c->suspect ? DMP__POOL_CHUNK_FLUSH : 0;
    dmp__buf_put(b, &flags, 1);
    dmp__buf_put_le(b, name_len, 1);
    dmp__buf_put(b, c->work->task, name_len);
    dmp__buf_put_le(b, c->n, 4);
    dmp__buf_put(b, c->work->payload + c->off, c->len);
}

/* Sends the worker a message of pending chunks. True if it sent one. */
static bool
s_send_one(dmp_pool_t *pool, s_worker_t *w, s_due_t *due)
{
    dmp__buf_t *b = &pool->msg;
    b->len = 0;
    b->err = 0;
    dmp__buf_put(b, "T", 1);
    dmp__buf_put_le(b, 0, 4);
    s_chunk_t *first = NULL, *last = NULL;
    size_t count = 0, limit = 1;
    while (pool->pend_head) {
        s_chunk_t *c = pool->pend_head;
        size_t clen = s_chunk_msg_len(c);
        if (count == 0) {
            if (b->len + clen > w->msg_max) {
                char text[DMP__TEXT_MAX];
                snprintf(text, sizeof text, "items %zu..%zu of task '%s' "
                         "take %zu bytes: more than one message can carry "
                         "to node '%s'", c->first, c->first + c->n - 1,
                         c->work->task, c->len, w->node->name);
                s_chunk_fail(pool, c, -EMSGSIZE, text, due);
                continue;
            }
            limit = s_batch(pool, c);
        } else if (c->suspect || count >= limit ||
                   b->len + clen > DMP__POOL_MSG_SOFT ||
                   (pool->maxtasks &&
                    w->assigned + count >= (unsigned)pool->maxtasks)) {
            break;
        }
        s_put_chunk(b, c);
        s_list_remove(&pool->pend_head, &pool->pend_tail, c);
        c->next = NULL;
        c->prev = last;
        if (last)
            last->next = c;
        else
            first = c;
        last = c;
        count++;
        if (c->suspect)
            break;
    }
    if (!count)
        return false;
    int rc = b->err;
    if (rc == 0) {
        dmp__le_put(b->p + 1, count, 4);
        rc = dmp_queue_put_bytes(w->tasks, b->p, b->len, 0);
    }
    if (rc) {
        /* Back to the front, in order; a worker whose queue refuses
         * (other than full) is stopped and replaced. */
        s_pending_prepend(pool, first, last);
        if (rc != DMP_EFULL) {
            dmp__log(DMP_LOG_WARN, "pool: cannot send work to '%s': %s",
                     dmp_process_name(w->proc), dmp_strerror(rc));
            w->stopping = true;
            dmp_process_kill(w->proc);
        }
        return false;
    }
    uint64_t seq = ++w->msg_seq;
    for (s_chunk_t *c = first, *next; c; c = next) {
        next = c->next;
        c->state = C_OUT;
        c->worker = w;
        c->msg = seq;
        s_list_append(&w->head, &w->tail, c);
    }
    w->msgs[w->n_msgs].seq = seq;
    w->msgs[w->n_msgs].left = count;
    w->n_msgs++;
    w->assigned += (unsigned)count;
    w->last_sent = dmp__now();
    if (pool->maxtasks && w->assigned >= (unsigned)pool->maxtasks &&
        dmp_queue_put_bytes(w->tasks, "S", 1, 0) == 0)
        w->stopping = true; /* it exits after these; a fresh one follows */
    return true;
}

/* An idle worker takes the waiting message of a busy one: the owner gets
 * it back from that worker's queue (each message goes to one getter: the
 * worker has it, or we do). */
static bool
s_steal(dmp_pool_t *pool)
{
    s_worker_t *idle = NULL, *busy = NULL;
    for (int i = 0; i < pool->processes; i++) {
        s_worker_t *w = pool->slots[i];
        if (!idle && s_can_take(pool, w) && w->n_msgs == 0)
            idle = w;
        if (w && w->proc && w->n_msgs >= AHEAD && (!busy ||
                                                   w->last_sent <
                                                       busy->last_sent))
            busy = w;
    }
    if (!idle || !busy)
        return false;
    void *buf;
    size_t len;
    if (dmp_queue_get_bytes(busy->tasks, &buf, &len, 0) != 0)
        return false;
    const uint8_t *p = buf, *end = p + len;
    bool any = false;
    if (len >= 5 && p[0] == 'T') {
        uint32_t n = (uint32_t)dmp__le_get(p + 1, 4);
        p += 5;
        s_chunk_t *first = NULL, *last = NULL;
        for (uint32_t k = 0; k < n && end - p >= 10; k++) {
            s_chunk_t *c = s_hash_get(&pool->hash, dmp__le_get(p, 8));
            size_t name_len = p[9];
            p += 10 + name_len;
            if (end - p < 4)
                break;
            uint32_t items = (uint32_t)dmp__le_get(p, 4);
            p += 4;
            for (uint32_t j = 0; j < items && end - p >= 4; j++)
                p += 4 + dmp__le_get(p, 4);
            if (!c || c->state != C_OUT || c->worker != busy)
                continue;
            s_chunk_unlink(pool, c);
            c->state = C_PENDING;
            c->prev = last;
            c->next = NULL;
            if (last)
                last->next = c;
            else
                first = c;
            last = c;
            busy->assigned--;
            any = true;
        }
        s_pending_prepend(pool, first, last);
    } else if (len >= 1 && p[0] == 'S') {
        /* its stop: it goes back, as the last message again */
        dmp_queue_put_bytes(busy->tasks, "S", 1, 0);
    }
    dmp_free(buf);
    return any;
}

static void
s_dispatch_locked(dmp_pool_t *pool, s_due_t *due)
{
    if (pool->state == P_TERMINATE)
        return;
    for (int round = 0; round < 2; round++) {
        while (pool->pend_head) {
            bool sent = false;
            for (int k = 0; k < pool->processes && pool->pend_head; k++) {
                s_worker_t *w = pool->slots[(pool->rr + (unsigned)k) %
                                            (unsigned)pool->processes];
                if (s_can_take(pool, w))
                    sent |= s_send_one(pool, w, due);
            }
            pool->rr++;
            if (!sent)
                break;
        }
        if (pool->pend_head || !s_steal(pool))
            break;
    }
}

/* ---- workers ----------------------------------------------------------------- */

/* The node for a new worker: `prefer` when it lives, else the one with
 * the fewest workers per core. NULL when every node is lost. */
static s_node_t *
s_pick_node(dmp_pool_t *pool, s_node_t *prefer)
{
    if (prefer && !prefer->dead && !prefer->init_broken)
        return prefer;
    s_node_t *best = NULL;
    for (size_t i = 0; i < pool->n_nodes; i++) {
        s_node_t *n = &pool->nodes[i];
        if (n->dead || n->init_broken)
            continue;
        if (!best || (double)(n->workers + 1) / n->cores <
                         (double)(best->workers + 1) / best->cores)
            best = n;
    }
    return best;
}

/* Nodes marked lost may be back: ask the cluster. */
static void
s_refresh_nodes(dmp_pool_t *pool)
{
    dmp_node_info_t *info;
    size_t n;
    if (dmp_nodes(&info, &n) != 0)
        return;
    for (size_t i = 0; i < pool->n_nodes; i++)
        for (size_t j = 0; j < n; j++)
            if (strcmp(pool->nodes[i].name, info[j].name) == 0)
                pool->nodes[i].dead = info[j].state != DMP_NODE_ALIVE;
    dmp_nodes_free(&info);
}

static void
s_worker_free(s_worker_t **w_p)
{
    s_worker_t *w = *w_p;
    if (!w)
        return;
    dmp_process_destroy(&w->proc);
    dmp_queue_destroy(&w->tasks); /* we created it: this removes it */
    dmp__free(w);
    *w_p = NULL;
}

/* Starts one worker on node, without the pool's lock (it talks to the
 * agents). Fills *w_p on success. */
static int
s_spawn(dmp_pool_t *pool, s_node_t *node, uint64_t id, s_worker_t **w_p,
        char *err, size_t errlen)
{
    s_worker_t *w = dmp__calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->id = id;
    w->node = node;
    dmp_queue_opts_t qo = {.capacity = 8u << 20};
    int rc = dmp_queue_new(&qo, &w->tasks);
    dmp_value_t *args = NULL;
    if (rc == 0) {
        args = dmp_list_of(
            8, dmp_queue_value(w->tasks), dmp_queue_value(pool->results),
            dmp_int((int64_t)id),
            pool->initializer[0] ? dmp_str(pool->initializer) : dmp_none(),
            pool->initargs ? dmp_value_copy(pool->initargs) : dmp_none(),
            dmp_str(pool->host_id), dmp_int(getpid()),
            dmp_int((int64_t)dmp__proc_starttime(getpid())));
        rc = args ? 0 : -ENOMEM;
    }
    if (rc == 0) {
        dmp_process_opts_t po = {.target = DMP__POOL_WORKER,
                                 .args = args,
                                 .node = node->local ? "local" : node->name,
                                 .daemon = 1};
        rc = dmp__process_new_numbered(&po, "SpawnPoolWorker", &w->proc);
    }
    dmp_value_destroy(&args);
    if (rc == 0)
        rc = dmp_process_start(w->proc);
    if (rc) {
        dmp_client_t *c = dmp_default_client();
        const char *why = c ? dmp_client_errmsg(c) : "";
        snprintf(err, errlen, "cannot start a pool worker on node '%s': "
                 "%s%s%s", node->name, dmp_strerror(rc), why[0] ? ": " : "",
                 why);
        s_worker_free(&w);
        return rc;
    }
    /* Its queue's item limit, wherever it is: a message larger than a
     * frame crosses hosts in parts. */
    w->msg_max = DMP__ITEM_MAX_DEFAULT - 4096;
    w->last_sent = dmp__now();
    *w_p = w;
    return 0;
}

/* Starts workers for the empty slots (drops the lock while it talks to
 * the agents). */
static void
s_fill_slots(dmp_pool_t *pool, s_due_t *due)
{
    if (pool->state == P_TERMINATE || pool->broken_rc ||
        (pool->state == P_CLOSE && !pool->works))
        return;
    double now = dmp__now();
    if (now < pool->next_spawn)
        return;
    bool refreshed = false;
    for (int i = 0; i < pool->processes; i++) {
        if (pool->slots[i])
            continue;
        s_node_t *node = s_pick_node(pool, NULL);
        if (!node && !refreshed) {
            pthread_mutex_unlock(&pool->lock);
            s_refresh_nodes(pool); /* dead flags: only this thread */
            pthread_mutex_lock(&pool->lock);
            refreshed = true;
            node = s_pick_node(pool, NULL);
        }
        int rc = DMP_ENODE;
        char err[DMP__TEXT_MAX] = "every node of the pool is lost";
        s_worker_t *w = NULL;
        if (node) {
            node->workers++;
            uint64_t id = ++pool->next_worker_id;
            pthread_mutex_unlock(&pool->lock);
            rc = s_spawn(pool, node, id, &w, err, sizeof err);
            pthread_mutex_lock(&pool->lock);
            if (rc) {
                node->workers--;
                if (rc == DMP_ENODE)
                    node->dead = true;
            }
        }
        if (rc == 0 && pool->state == P_TERMINATE) {
            pool->slots[i] = w; /* terminate stops it with the others */
            return;
        }
        if (rc == 0) {
            pool->slots[i] = w;
            pool->spawn_failing_since = 0;
            continue;
        }
        if (!pool->spawn_failing_since)
            pool->spawn_failing_since = now;
        pool->spawn_rc = rc;
        dmp__strlcpy(pool->spawn_text, err, sizeof pool->spawn_text);
        pool->next_spawn = dmp__now() + 0.2;
        break;
    }
    /* Nothing hangs: with no worker at all for a while, calls fail. */
    bool any = false;
    for (int i = 0; i < pool->processes; i++)
        any |= pool->slots[i] != NULL;
    if (!any && pool->spawn_failing_since &&
        dmp__now() - pool->spawn_failing_since > SPAWN_GIVE_UP)
        s_fail_all(pool, pool->spawn_rc, pool->spawn_rc, pool->spawn_text,
                   due);
}

static void
s_describe_exit(int rc, int code, char *out, size_t size)
{
    if (rc)
        snprintf(out, size, "%s", dmp_strerror(rc));
    else if (code < 0)
        snprintf(out, size, "signal %d (%s)", -code, strsignal(-code));
    else
        snprintf(out, size, "exit %d", code);
}

/* Replaces the pending chunk c (blamed, several items) by suspects: its
 * items still without an outcome, each run of them cut in two halves, at
 * the front of the pending list. A culprit is so found in log2(n) deaths;
 * items that were only unlucky run in two messages. */
static void
s_split(dmp_pool_t *pool, s_chunk_t *c)
{
    s_work_t *work = c->work;
    s_pieces_t *ps = dmp__calloc(1, sizeof *ps + (c->n + 1) * sizeof ps->c[0]);
    if (!ps)
        return; /* it runs again whole */
    ps->next = work->pieces;
    work->pieces = ps;
    /* where each item starts, and whether it still needs running */
    size_t *at = dmp__calloc(c->n + 1, sizeof *at);
    bool *unfinished = dmp__calloc(c->n, sizeof *unfinished);
    if (!at || !unfinished) {
        dmp__free(at);
        dmp__free(unfinished);
        return;
    }
    at[0] = c->off;
    dmp__job_lock(work->job);
    for (size_t k = 0; k < c->n; k++) {
        at[k + 1] = at[k] + 4 + dmp__le_get(work->payload + at[k], 4);
        unfinished[k] = !dmp__job_is_set_locked(work->job, c->first + k);
    }
    dmp__job_unlock(work->job);
    s_chunk_t *first = NULL, *last = NULL;
    bool ok = true;
    for (size_t k = 0; k < c->n && ok;) {
        if (!unfinished[k]) {
            k++;
            continue;
        }
        size_t end = k;
        while (end < c->n && unfinished[end])
            end++;
        size_t half = k + (end - k + 1) / 2;
        size_t cuts[3] = {k, half, end};
        for (int h = 0; h < 2 && ok; h++) {
            if (cuts[h] == cuts[h + 1])
                continue;
            s_chunk_t *pc = &ps->c[ps->n];
            pc->work = work;
            pc->id = ++pool->next_chunk_id;
            pc->first = c->first + cuts[h];
            pc->n = cuts[h + 1] - cuts[h];
            pc->off = at[cuts[h]];
            pc->len = at[cuts[h + 1]] - at[cuts[h]];
            pc->suspect = true;
            if (s_hash_put(&pool->hash, pc->id, pc) != 0) {
                ok = false;
                break;
            }
            pc->state = C_PENDING;
            ps->n++;
            pc->prev = last;
            if (last)
                last->next = pc;
            else
                first = pc;
            last = pc;
        }
        k = end;
    }
    dmp__free(at);
    dmp__free(unfinished);
    if (!ok) { /* out of memory midway: c runs again whole */
        for (size_t i = 0; i < ps->n; i++)
            s_hash_del(&pool->hash, ps->c[i].id);
        ps->n = 0;
        return;
    }
    work->left += ps->n;
    s_pending_prepend(pool, first, last);
    s_chunk_done(pool, c); /* replaced */
}

/* A worker ended (rc: 0 with its exit code, or DMP_ENODE). What it held
 * goes back to the front of the pending list, blamed as the header says. */
static void
s_worker_lost(dmp_pool_t *pool, int slot, int rc, int code, s_due_t *due)
{
    s_worker_t *w = pool->slots[slot];
    pool->slots[slot] = NULL;
    w->node->workers--;
    char how[64];
    s_describe_exit(rc, code, how, sizeof how);
    if (w->timed_out && rc == 0)
        snprintf(how, sizeof how, "killed after %.3g s",
                 pool->task_timeout);
    bool crashed = rc == 0 && code != 0 && !w->init_failed &&
                   (w->hello || w->timed_out);
    if (rc == DMP_ENODE) {
        w->node->dead = true;
    } else if (!w->hello && !w->init_failed && code != 0) {
        char text[DMP__TEXT_MAX];
        snprintf(text, sizeof text, "pool workers die before their first "
                 "task (last: %s on node '%s')", how, w->node->name);
        s_init_failed(pool, w->node, code, text, due);
    }
    size_t held = 0;
    for (s_chunk_t *c = w->head; c; c = c->next)
        held++;
    if (held)
        dmp__log(DMP_LOG_INFO, "pool: %s on node '%s' ended (%s) holding "
                 "%zu chunks: they run again", dmp_process_name(w->proc),
                 w->node->name, how, held);
    /* The chunks of the first message it held are the suspects. */
    s_chunk_t **blamed = crashed && held ? dmp__calloc(held, sizeof *blamed)
                                         : NULL;
    size_t n_blamed = 0;
    uint64_t blamed_msg = w->head ? w->head->msg : 0;
    s_chunk_t *first = NULL, *last = NULL;
    while (w->head) {
        s_chunk_t *c = w->head;
        s_chunk_unlink(pool, c);
        c->state = C_PENDING;
        if (crashed && c->msg == blamed_msg) {
            c->kills += c->n == 1; /* a group is cut until one is left */
            c->suspect = true;
            if (blamed)
                blamed[n_blamed++] = c;
        }
        c->prev = last;
        c->next = NULL;
        if (last)
            last->next = c;
        else
            first = c;
        last = c;
    }
    s_pending_prepend(pool, first, last);
    /* Last to first, so that pieces prepended keep the items' order. */
    for (size_t i = n_blamed; i-- > 0;) {
        s_chunk_t *c = blamed[i];
        if (c->n == 1 && c->kills > (unsigned)pool->retries) {
            char text[DMP__TEXT_MAX];
            snprintf(text, sizeof text, "task '%s' on item %zu %s %u "
                     "time%s (last: %s in %s on node '%s'; retries: %d)",
                     c->work->task, c->first,
                     w->timed_out ? "ran over the task timeout"
                                  : "killed its worker",
                     c->kills, c->kills > 1 ? "s" : "", how,
                     dmp_process_name(w->proc), w->node->name,
                     pool->retries);
            s_chunk_fail(pool, c, DMP_EWORKER, text, due);
        } else if (c->n > 1) {
            s_split(pool, c);
        }
    }
    dmp__free(blamed);
    s_worker_free(&w);
}

/* Looks at every worker; handles those that ended. */
static void
s_check_workers(dmp_pool_t *pool, s_due_t *due)
{
    bool drained = false;
    for (int i = 0; i < pool->processes; i++) {
        s_worker_t *w = pool->slots[i];
        if (!w || dmp_process_is_alive(w->proc))
            continue;
        if (!drained) {
            /* what it sent before it died counts: take it first */
            s_drain_locked(pool, due);
            drained = true;
            if (pool->slots[i] != w)
                continue;
        }
        int code = 0;
        int rc = dmp_process_exitcode(w->proc, &code);
        s_worker_lost(pool, i, rc == -EAGAIN ? DMP_ENODE : rc, code, due);
    }
    double now = dmp__now();
    for (int i = 0; pool->task_timeout > 0 && i < pool->processes; i++) {
        /* a chunk's clock starts when it reaches the head of its worker's
         * list (sent to an idle worker, or the one before it ended) */
        s_worker_t *w = pool->slots[i];
        if (!w || !w->head || w->timed_out)
            continue;
        if (w->head_id != w->head->id) {
            w->head_id = w->head->id;
            w->head_since = now;
        } else if (now - w->head_since > pool->task_timeout) {
            dmp__log(DMP_LOG_INFO, "pool: %s on node '%s' ran a chunk for "
                     "more than %.3g s: killed", dmp_process_name(w->proc),
                     w->node->name, pool->task_timeout);
            w->timed_out = true;
            dmp_process_kill(w->proc);
        }
    }
    for (int i = 0; i < pool->processes; i++) {
        s_worker_t *w = pool->slots[i];
        if (w && !w->stopping && w->n_msgs == 0 &&
            now - w->last_sent > PING_EVERY &&
            dmp_queue_put_bytes(w->tasks, "P", 1, 0) == 0)
            w->last_sent = now;
    }
}

/* close(): once every call is done, each worker is told to stop. */
static void
s_stop_idle(dmp_pool_t *pool)
{
    for (int i = 0; i < pool->processes; i++) {
        s_worker_t *w = pool->slots[i];
        if (w && !w->stopping && dmp_queue_put_bytes(w->tasks, "S", 1, 0) == 0)
            w->stopping = true;
    }
}

/* terminate(): every worker gets SIGTERM, then SIGKILL, and is reaped. */
static void
s_stop_all(dmp_pool_t *pool)
{
    s_worker_t **ws = pool->slots;
    for (int i = 0; i < pool->processes; i++)
        if (ws[i])
            dmp_process_terminate(ws[i]->proc);
    pthread_mutex_unlock(&pool->lock);
    double until = dmp__now() + STOP_WAIT;
    for (int i = 0; i < pool->processes; i++) {
        if (!ws[i])
            continue;
        double left = until - dmp__now();
        if (dmp_process_join(ws[i]->proc, left > 0 ? left : 0) ==
            -ETIMEDOUT) {
            dmp_process_kill(ws[i]->proc);
            dmp_process_join(ws[i]->proc, STOP_WAIT);
        }
    }
    pthread_mutex_lock(&pool->lock);
    for (int i = 0; i < pool->processes; i++)
        if (ws[i]) {
            ws[i]->node->workers--;
            s_worker_free(&ws[i]);
        }
}

static bool
s_no_workers(const dmp_pool_t *pool)
{
    for (int i = 0; i < pool->processes; i++)
        if (pool->slots[i])
            return false;
    return true;
}

static void *
s_handler(void *arg)
{
    dmp_pool_t *pool = arg;
    s_due_t due = {0};
    void *bufs[DRAIN_MAX];
    size_t lens[DRAIN_MAX];
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        pthread_mutex_unlock(&pool->lock);
        size_t n = 0;
        int rc = dmp_queue_get_bytes(pool->results, &bufs[0], &lens[0], TICK);
        if (rc == 0)
            for (n = 1; n < DRAIN_MAX && dmp_queue_get_bytes(
                                             pool->results, &bufs[n],
                                             &lens[n], 0) == 0;
                 n++)
                ;
        pthread_mutex_lock(&pool->lock);
        for (size_t i = 0; i < n; i++) {
            s_on_message(pool, bufs[i], lens[i], &due);
            dmp_free(bufs[i]);
        }
        if (rc != 0 && rc != DMP_EEMPTY && pool->state != P_TERMINATE) {
            char text[DMP__TEXT_MAX];
            snprintf(text, sizeof text, "the pool's result queue failed: %s",
                     dmp_strerror(rc));
            s_break(pool, rc, rc, text, &due);
            pool->state = P_TERMINATE;
        }
        if (pool->state == P_TERMINATE) {
            s_fail_all(pool, -ECANCELED, -ECANCELED,
                       "the pool was terminated", &due);
            s_stop_all(pool);
        } else {
            double now = dmp__now();
            if (now >= pool->next_check || n == 0) {
                pool->next_check = now + TICK;
                s_check_workers(pool, &due);
                s_fill_slots(pool, &due);
            }
            s_dispatch_locked(pool, &due);
            if (pool->state == P_CLOSE && !pool->works)
                s_stop_idle(pool);
        }
        bool done = pool->state != P_RUN && !pool->works && s_no_workers(pool);
        if (due.n) {
            pthread_mutex_unlock(&pool->lock);
            s_due_run(&due);
            pthread_mutex_lock(&pool->lock);
        }
        if (done)
            break;
    }
    pool->thread_done = true;
    pthread_cond_broadcast(&pool->cond);
    pthread_mutex_unlock(&pool->lock);
    dmp__free(due.jobs);
    return NULL;
}

/* Wakes the pool's thread (close, terminate). */
static void
s_kick(dmp_pool_t *pool)
{
    if (pool->results) /* NULL after dmp_fini */
        dmp_queue_put_bytes(pool->results, "K", 1, 0);
}

/* ---- creating a pool ----------------------------------------------------------- */

/* The nodes `placement` names, with their cores. */
static int
s_place(dmp_pool_t *pool, const char *placement)
{
    dmp_node_info_t *info;
    size_t n;
    int rc = dmp_nodes(&info, &n);
    if (rc)
        return rc;
    pool->nodes = dmp__calloc(n ? n : 1, sizeof *pool->nodes);
    if (!pool->nodes) {
        dmp_nodes_free(&info);
        return -ENOMEM;
    }
    bool local = !placement[0] || strcmp(placement, "local") == 0;
    bool spread = strcmp(placement, "spread") == 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        /* the answering node (ours) is listed first */
        bool want = local ? i == 0 : spread ? info[i].state == DMP_NODE_ALIVE
                                            : false;
        if (!local && !spread) {
            size_t len = strlen(info[i].name);
            for (const char *p = placement; *p;) {
                size_t l = strcspn(p, ",");
                want |= l == len && strncmp(p, info[i].name, l) == 0;
                p += l + (p[l] == ',');
            }
            if (want && info[i].state == DMP_NODE_DEAD) {
                dmp__log(DMP_LOG_WARN, "pool: node '%s' is dead",
                         info[i].name);
                rc = DMP_ENODE;
            }
        }
        if (!want)
            continue;
        s_node_t *node = &pool->nodes[pool->n_nodes++];
        dmp__strlcpy(node->name, info[i].name, sizeof node->name);
        node->cores = info[i].cores ? info[i].cores : 1;
        node->local = i == 0;
    }
    /* every name given must be a node */
    if (rc == 0 && !local && !spread)
        for (const char *p = placement; *p && rc == 0;) {
            size_t l = strcspn(p, ",");
            bool found = false;
            for (size_t i = 0; i < pool->n_nodes; i++)
                found |= strlen(pool->nodes[i].name) == l &&
                         strncmp(p, pool->nodes[i].name, l) == 0;
            if (!found) {
                dmp__log(DMP_LOG_WARN, "pool: no node '%.*s'", (int)l, p);
                rc = l == 0 || l >= DMP__NAME_MAX ? -EINVAL : DMP_ENODE;
            }
            p += l + (p[l] == ',');
        }
    dmp_nodes_free(&info);
    if (rc == 0 && pool->n_nodes == 0)
        rc = DMP_ENODE;
    return rc;
}

static void
s_pool_free(dmp_pool_t *pool)
{
    if (!pool)
        return;
    if (pool->slots)
        for (int i = 0; i < pool->processes; i++)
            s_worker_free(&pool->slots[i]);
    while (pool->works)
        s_work_free(pool, pool->works);
    dmp_queue_destroy(&pool->results);
    dmp_value_destroy(&pool->initargs);
    dmp__free(pool->slots);
    dmp__free(pool->nodes);
    dmp__free(pool->hash.keys);
    dmp__free(pool->hash.vals);
    dmp__buf_free(&pool->msg);
    pthread_cond_destroy(&pool->cond);
    pthread_mutex_destroy(&pool->lock);
    dmp__free(pool);
}

int
dmp_pool_new(const dmp_pool_opts_t *opts, dmp_pool_t **pool_p)
{
    dmp_pool_opts_t none = {0};
    if (!opts)
        opts = &none;
    if (opts->processes < 0 || opts->maxtasksperchild < 0 ||
        !(opts->task_timeout >= 0) ||
        (opts->initializer && !dmp__target_find(opts->initializer)) ||
        (opts->initializer && strlen(opts->initializer) >= DMP__NAME_MAX) ||
        (opts->initargs && dmp_value_type(opts->initargs) != DMP_VALUE_LIST))
        return -EINVAL;
    const char *placement = opts->placement ? opts->placement
                                            : getenv("DMP_PLACE");
    if (!placement)
        placement = "";
    int rc = dmp__init_lazy();
    if (rc)
        return rc;
    dmp_pool_t *pool = dmp__calloc(1, sizeof *pool);
    if (!pool)
        return -ENOMEM;
    pthread_mutex_init(&pool->lock, NULL);
    dmp__cond_init_monotonic(&pool->cond);
    pool->maxtasks = opts->maxtasksperchild;
    pool->retries = opts->retries < 0    ? 0
                    : opts->retries == 0 ? RETRIES_DEFAULT
                                         : opts->retries;
    pool->task_timeout = opts->task_timeout > 0 ? opts->task_timeout : 0;
    if (opts->initializer)
        dmp__strlcpy(pool->initializer, opts->initializer,
                     sizeof pool->initializer);
    if (opts->initargs && !(pool->initargs = dmp_value_copy(opts->initargs)))
        rc = -ENOMEM;
    dmp__pool_host_id(pool->host_id, sizeof pool->host_id);
    if (rc == 0)
        rc = s_place(pool, placement);
    if (rc == 0) {
        unsigned cores = 0;
        for (size_t i = 0; i < pool->n_nodes; i++)
            cores += pool->nodes[i].cores;
        pool->processes = opts->processes ? opts->processes : (int)cores;
        pool->slots = dmp__calloc((size_t)pool->processes,
                                  sizeof *pool->slots);
        if (!pool->slots)
            rc = -ENOMEM;
    }
    dmp_queue_opts_t qo = {.capacity = 16u << 20};
    if (rc == 0)
        rc = dmp_queue_new(&qo, &pool->results);
    /* The workers, placed by cores; those that cannot start now are
     * started by the pool's thread (on another node if theirs is lost). */
    int started = 0, last_rc = DMP_ENODE;
    char err[DMP__TEXT_MAX] = "";
    for (int i = 0; rc == 0 && i < pool->processes; i++) {
        s_node_t *node = s_pick_node(pool, NULL);
        if (!node)
            break; /* every node lost: the pool's thread tries again */
        node->workers++;
        last_rc = s_spawn(pool, node, ++pool->next_worker_id,
                          &pool->slots[i], err, sizeof err);
        if (last_rc == 0) {
            started++;
            continue;
        }
        node->workers--;
        dmp__log(DMP_LOG_WARN, "pool: %s", err);
        if (last_rc == DMP_ENODE)
            node->dead = true; /* another node takes its workers */
        else if (!started)
            rc = last_rc; /* it would fail again */
    }
    if (rc == 0 && started == 0)
        rc = last_rc;
    if (rc == 0 && pthread_create(&pool->thread, NULL, s_handler, pool) != 0)
        rc = -EAGAIN;
    if (rc) {
        if (pool->slots)
            for (int i = 0; i < pool->processes; i++)
                if (pool->slots[i]) {
                    dmp_process_kill(pool->slots[i]->proc);
                    dmp_process_join(pool->slots[i]->proc, STOP_WAIT);
                }
        s_pool_free(pool);
        return rc;
    }
    pool->thread_started = true;
    pthread_mutex_lock(&s_pools_lock);
    pool->next_pool = s_pools;
    s_pools = pool;
    pthread_mutex_unlock(&s_pools_lock);
    *pool_p = pool;
    return 0;
}

/* ---- calls --------------------------------------------------------------------- */

/* A call: chunks its items, then hands out what workers can take now.
 * items NULL: apply with `one` as the single item. */
static int
s_submit(dmp_pool_t *pool, dmp__job_kind_t kind, const char *task,
         const dmp_value_t *items, const dmp_value_t *one, bool star,
         size_t chunksize, dmp_async_fn cb, void *cbarg, dmp__job_t **job_p)
{
    if (!task || strlen(task) >= DMP__NAME_MAX || !dmp__task_find(task))
        return -EINVAL;
    if (items && dmp_value_type(items) != DMP_VALUE_LIST)
        return -EINVAL;
    size_t n = items ? dmp_value_len(items) : 1;
    if (star)
        for (size_t i = 0; i < n; i++)
            if (dmp_value_type(dmp_list_get(items, (int64_t)i)) !=
                DMP_VALUE_LIST)
                return -EINVAL;
    if (chunksize == 0)
        chunksize = kind != DMP__JOB_MAP ? 1 : 0;
    if (chunksize == 0) { /* Python: divmod(len, 4 * workers), rounded up */
        size_t per = (size_t)pool->processes * 4;
        chunksize = n / per + (n % per != 0);
        if (chunksize == 0)
            chunksize = 1;
    }
    /* sizes first, so the payload and the chunks are one allocation each */
    size_t *sizes = dmp__calloc(n ? n : 1, sizeof *sizes);
    if (!sizes)
        return -ENOMEM;
    size_t total = 0, n_chunks = 0, in_chunk = 0, chunk_bytes = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const dmp_value_t *v = items ? dmp_list_get(items, (int64_t)i) : one;
        rc = dmp__value_encoded_size(v, &sizes[i]);
        if (rc == 0 && sizes[i] > UINT32_MAX - 64)
            rc = -EMSGSIZE;
        total += 4 + sizes[i];
        if (in_chunk == 0 || in_chunk == chunksize ||
            chunk_bytes + 4 + sizes[i] > DMP__POOL_MSG_SOFT) {
            n_chunks++;
            in_chunk = 0;
            chunk_bytes = 0;
        }
        in_chunk++;
        chunk_bytes += 4 + sizes[i];
    }
    s_work_t *work = rc ? NULL : dmp__calloc(1, sizeof *work);
    if (work) {
        work->payload = dmp__malloc(total ? total : 1);
        work->chunks = dmp__calloc(n_chunks ? n_chunks : 1,
                                   sizeof *work->chunks);
    }
    if (rc == 0 && (!work || !work->payload || !work->chunks))
        rc = -ENOMEM;
    dmp__job_t *job = NULL;
    if (rc == 0)
        rc = dmp__job_new(kind, n, cb, cbarg, &job);
    if (rc) {
        if (work) {
            dmp__free(work->payload);
            dmp__free(work->chunks);
            dmp__free(work);
        }
        dmp__free(sizes);
        return rc;
    }
    work->job = job;
    dmp__job_ref(job); /* the work's; the caller keeps the first */
    dmp__strlcpy(work->task, task, sizeof work->task);
    uint8_t *p = work->payload;
    s_chunk_t *c = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!c || c->n == chunksize ||
            c->len + 4 + sizes[i] > DMP__POOL_MSG_SOFT) {
            c = &work->chunks[work->n_chunks++];
            c->work = work;
            c->first = i;
            c->off = (size_t)(p - work->payload);
        }
        dmp__le_put(p, sizes[i], 4);
        p = dmp__value_write(items ? dmp_list_get(items, (int64_t)i) : one,
                             p + 4);
        c->n++;
        c->len += 4 + sizes[i];
    }
    dmp__free(sizes);
    s_due_t due = {0};
    pthread_mutex_lock(&pool->lock);
    if (pool->state != P_RUN || pool->broken_rc) {
        int why = pool->state != P_RUN ? -EBADF : pool->broken_rc;
        if (why != -EBADF) { /* a broken pool: the call fails with it */
            dmp__job_lock(job);
            dmp__job_fail_locked(job, why, pool->broken_code,
                                 pool->broken_text);
            dmp__job_unlock(job);
        }
        pthread_mutex_unlock(&pool->lock);
        dmp__job_unref(&work->job);
        dmp__free(work->chunks);
        dmp__free(work->payload);
        dmp__free(work);
        if (why == -EBADF) {
            dmp__job_unref(&job);
            return -EBADF;
        }
        *job_p = job; /* its callback runs as Python's would: here */
        dmp__job_lock(job);
        bool due_now = dmp__job_callback_due_locked(job);
        dmp__job_unlock(job);
        if (due_now)
            dmp__job_callback(job);
        return 0;
    }
    work->prev = pool->works_tail;
    if (pool->works_tail)
        pool->works_tail->next = work;
    else
        pool->works = work;
    pool->works_tail = work;
    work->left = 1; /* while chunks go in */
    for (size_t i = 0; i < work->n_chunks && rc == 0; i++) {
        s_chunk_t *ch = &work->chunks[i];
        ch->id = ++pool->next_chunk_id;
        rc = s_hash_put(&pool->hash, ch->id, ch);
        if (rc == 0) {
            ch->state = C_PENDING;
            work->left++;
            s_list_append(&pool->pend_head, &pool->pend_tail, ch);
        }
    }
    if (rc) {
        dmp__job_lock(job);
        dmp__job_fail_locked(job, rc, rc, "out of memory");
        dmp__job_unlock(job);
        s_work_cancel(pool, work);
    }
    if (--work->left == 0) {
        /* nothing to run (map over []) or all failed at once */
        dmp__job_lock(job);
        bool due_now = dmp__job_callback_due_locked(job);
        dmp__job_unlock(job);
        if (due_now) /* it takes a reference: not under the job's lock */
            s_due_add(&due, job);
        s_work_free(pool, work);
    } else {
        s_dispatch_locked(pool, &due);
    }
    pthread_mutex_unlock(&pool->lock);
    s_due_run(&due);
    dmp__free(due.jobs);
    *job_p = job;
    return 0;
}

/* A synchronous call: submit, wait, and keep the error on the pool. */
static int
s_call(dmp_pool_t *pool, dmp__job_kind_t kind, const char *task,
       const dmp_value_t *items, const dmp_value_t *one, bool star,
       size_t chunksize, dmp_value_t **result_p)
{
    dmp__job_t *job;
    int rc = s_submit(pool, kind, task, items, one, star, chunksize, NULL,
                      NULL, &job);
    int code = rc;
    char text[DMP__TEXT_MAX] = "";
    if (rc == 0) {
        rc = dmp__job_take(job, result_p, &code, text, sizeof text);
        dmp__job_unref(&job);
    } else {
        snprintf(text, sizeof text, "%s", dmp_strerror(rc));
    }
    if (rc) {
        pthread_mutex_lock(&pool->lock);
        pool->err_code = code;
        dmp__strlcpy(pool->errmsg, text, sizeof pool->errmsg);
        pthread_mutex_unlock(&pool->lock);
    }
    return rc;
}

int
dmp_pool_map(dmp_pool_t *pool, const char *task, const dmp_value_t *items,
             size_t chunksize, dmp_value_t **results_p)
{
    return s_call(pool, DMP__JOB_MAP, task, items, NULL, false, chunksize,
                  results_p);
}

int
dmp_pool_starmap(dmp_pool_t *pool, const char *task, const dmp_value_t *items,
                 size_t chunksize, dmp_value_t **results_p)
{
    return s_call(pool, DMP__JOB_MAP, task, items, NULL, true, chunksize,
                  results_p);
}

static int
s_args(const dmp_value_t *args, dmp_value_t **empty)
{
    *empty = NULL;
    if (args)
        return dmp_value_type(args) == DMP_VALUE_LIST ? 0 : -EINVAL;
    *empty = dmp_list();
    return *empty ? 0 : -ENOMEM;
}

int
dmp_pool_apply(dmp_pool_t *pool, const char *task, const dmp_value_t *args,
               dmp_value_t **result_p)
{
    dmp_value_t *empty;
    int rc = s_args(args, &empty);
    if (rc == 0)
        rc = s_call(pool, DMP__JOB_APPLY, task, NULL, args ? args : empty,
                    false, 1, result_p);
    dmp_value_destroy(&empty);
    return rc;
}

static int
s_async(dmp_pool_t *pool, dmp__job_kind_t kind, const char *task,
        const dmp_value_t *items, const dmp_value_t *one, bool star,
        size_t chunksize, dmp_async_fn cb, void *arg, dmp_async_t **ar_p)
{
    dmp__job_t *job;
    int rc = s_submit(pool, kind, task, items, one, star, chunksize, cb, arg,
                      &job);
    if (rc == 0 && ar_p)
        rc = dmp__async_new(job, ar_p);
    dmp__job_unref(&job);
    return rc;
}

int
dmp_pool_map_async(dmp_pool_t *pool, const char *task,
                   const dmp_value_t *items, size_t chunksize,
                   dmp_async_fn callback, void *arg, dmp_async_t **ar_p)
{
    return s_async(pool, DMP__JOB_MAP, task, items, NULL, false, chunksize,
                   callback, arg, ar_p);
}

int
dmp_pool_starmap_async(dmp_pool_t *pool, const char *task,
                       const dmp_value_t *items, size_t chunksize,
                       dmp_async_fn callback, void *arg, dmp_async_t **ar_p)
{
    return s_async(pool, DMP__JOB_MAP, task, items, NULL, true, chunksize,
                   callback, arg, ar_p);
}

int
dmp_pool_apply_async(dmp_pool_t *pool, const char *task,
                     const dmp_value_t *args, dmp_async_fn callback,
                     void *arg, dmp_async_t **ar_p)
{
    dmp_value_t *empty;
    int rc = s_args(args, &empty);
    if (rc == 0)
        rc = s_async(pool, DMP__JOB_APPLY, task, NULL, args ? args : empty,
                     false, 1, callback, arg, ar_p);
    dmp_value_destroy(&empty);
    return rc;
}

static int
s_imap(dmp_pool_t *pool, dmp__job_kind_t kind, const char *task,
       const dmp_value_t *items, size_t chunksize, dmp_imap_t **it_p)
{
    dmp__job_t *job;
    int rc = s_submit(pool, kind, task, items, NULL, false, chunksize, NULL,
                      NULL, &job);
    if (rc == 0)
        rc = dmp__imap_new(job, it_p);
    dmp__job_unref(&job);
    return rc;
}

int
dmp_pool_imap(dmp_pool_t *pool, const char *task, const dmp_value_t *items,
              size_t chunksize, dmp_imap_t **it_p)
{
    return s_imap(pool, DMP__JOB_IMAP, task, items, chunksize, it_p);
}

int
dmp_pool_imap_unordered(dmp_pool_t *pool, const char *task,
                        const dmp_value_t *items, size_t chunksize,
                        dmp_imap_t **it_p)
{
    return s_imap(pool, DMP__JOB_IMAP_UNORDERED, task, items, chunksize,
                  it_p);
}

/* ---- lifetime ------------------------------------------------------------------ */

int
dmp_pool_close(dmp_pool_t *pool)
{
    pthread_mutex_lock(&pool->lock);
    if (pool->state == P_RUN)
        pool->state = P_CLOSE;
    pthread_mutex_unlock(&pool->lock);
    s_kick(pool);
    return 0;
}

int
dmp_pool_terminate(dmp_pool_t *pool)
{
    pthread_mutex_lock(&pool->lock);
    pool->state = P_TERMINATE;
    pthread_mutex_unlock(&pool->lock);
    s_kick(pool);
    return 0;
}

int
dmp_pool_join(dmp_pool_t *pool, double timeout)
{
    pthread_mutex_lock(&pool->lock);
    if (pool->state == P_RUN) {
        pthread_mutex_unlock(&pool->lock);
        return -EINVAL;
    }
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    long ms = dmp__timeout_ms(timeout);
    if (ms > 0) {
        until.tv_sec += ms / 1000;
        until.tv_nsec += (ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
    }
    while (!pool->thread_done && ms != 0) {
        int w = ms < 0 ? pthread_cond_wait(&pool->cond, &pool->lock)
                       : pthread_cond_timedwait(&pool->cond, &pool->lock,
                                                &until);
        if (w == ETIMEDOUT)
            break;
    }
    bool done = pool->thread_done, reap = done && !pool->joined;
    pool->joined |= done;
    pthread_mutex_unlock(&pool->lock);
    if (reap)
        pthread_join(pool->thread, NULL);
    return done ? 0 : -ETIMEDOUT;
}

int
dmp_pool_processes(const dmp_pool_t *pool)
{
    return pool->processes;
}

int
dmp_pool_error(const dmp_pool_t *pool)
{
    return pool->err_code;
}

const char *
dmp_pool_errmsg(const dmp_pool_t *pool)
{
    return pool->errmsg;
}

void
dmp_pool_destroy(dmp_pool_t **pool_p)
{
    if (!pool_p || !*pool_p)
        return;
    dmp_pool_t *pool = *pool_p;
    *pool_p = NULL;
    pthread_mutex_lock(&s_pools_lock);
    for (dmp_pool_t **pp = &s_pools; *pp; pp = &(*pp)->next_pool)
        if (*pp == pool) {
            *pp = pool->next_pool;
            break;
        }
    pthread_mutex_unlock(&s_pools_lock);
    pthread_mutex_lock(&pool->lock);
    bool running = !pool->thread_done;
    pthread_mutex_unlock(&pool->lock);
    if (running)
        dmp_pool_terminate(pool);
    dmp_pool_join(pool, DMP_FOREVER);
    s_pool_free(pool);
}

void
dmp__pool_atexit(void)
{
    for (;;) {
        pthread_mutex_lock(&s_pools_lock);
        dmp_pool_t *pool = s_pools;
        while (pool && pool->joined)
            pool = pool->next_pool;
        pthread_mutex_unlock(&s_pools_lock);
        if (!pool)
            return;
        dmp_pool_terminate(pool);
        dmp_pool_join(pool, DMP_FOREVER);
        /* The queues go with dmp_fini: a dmp_pool_destroy after it must
         * not touch them (the workers' went when they were stopped). */
        dmp_queue_destroy(&pool->results);
    }
}
