/*
 * dmp_pool_worker.c - registered tasks, and the worker side of a pool.
 *
 * DMP_TASK adds tasks to a registry from constructors, before main, as
 * DMP_TARGET does for targets. A pool worker is an ordinary dmp child of
 * the pool's program (the same executable) running the internal target
 * DMP__POOL_WORKER: it runs the pool's initializer once, then takes
 * messages from its own queue (chunks of items the owner assigned to it,
 * see the message formats in dmp_impl.h), runs the task on each item in
 * order and puts the outcomes on the pool's result queue. Results of small
 * chunks are batched (sent when a message is done, every FLUSH_EVERY
 * seconds, or when the batch reaches DMP__POOL_MSG_SOFT), so that a map of
 * a trivial function costs a few queue operations per thousand items.
 *
 * A worker never decides what it runs: the owner tracks which chunks each
 * worker holds and runs them again elsewhere when it dies, so everything
 * here may be lost at any point without losing a result.
 *
 * The worker exits when told ('S'), when its queue goes away (the pool
 * was terminated or destroyed), or when the pool's program is gone: on
 * the same host it checks the program's pid and start time; from another
 * host, an idle worker that hears nothing (the owner pings idle workers
 * every 2 s) for IDLE_EXIT seconds assumes it is gone.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FLUSH_EVERY 0.002 /* seconds: results of a long message flow out */
#define IDLE_EXIT 15.0    /* seconds without a message from a remote owner */
#define GET_WAIT 1.0      /* seconds a get waits before checking the owner */

/* ---- the task registry ------------------------------------------------ */

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static dmp_task_t *s_tasks;

void
dmp_task_register(dmp_task_t *task)
{
    pthread_mutex_lock(&s_lock);
    task->next = s_tasks;
    s_tasks = task;
    pthread_mutex_unlock(&s_lock);
}

dmp_task_fn
dmp__task_find(const char *name)
{
    pthread_mutex_lock(&s_lock);
    dmp_task_fn fn = NULL;
    for (dmp_task_t *t = s_tasks; t && !fn; t = t->next)
        if (strcmp(t->name, name) == 0)
            fn = t->fn;
    pthread_mutex_unlock(&s_lock);
    return fn;
}

/* ---- the worker ------------------------------------------------------- */

typedef struct {
    dmp_queue_t *tasks, *results;
    uint64_t id;
    size_t result_max;     /* largest message the result queue takes */
    dmp__buf_t out;        /* the result batch being built */
    uint32_t n_runs;
    double last_flush;
    char task[DMP__NAME_MAX]; /* cached lookup */
    dmp_task_fn fn;
} s_worker_t;

static void
s_out_reset(s_worker_t *w)
{
    w->out.len = 0;
    w->out.err = 0;
    dmp__buf_put(&w->out, "R", 1);
    dmp__buf_put_le(&w->out, w->id, 8);
    dmp__buf_put_le(&w->out, 0, 4); /* n_runs, filled at flush */
    w->n_runs = 0;
}

/* Sends the batch, if it holds anything. */
static int
s_flush(s_worker_t *w)
{
    w->last_flush = dmp__now();
    if (w->n_runs == 0)
        return 0;
    if (w->out.err)
        return w->out.err;
    dmp__le_put(w->out.p + 9, w->n_runs, 4);
    int rc = dmp_queue_put_bytes(w->results, w->out.p, w->out.len,
                                 DMP_FOREVER);
    s_out_reset(w);
    return rc;
}

/* Appends one item's outcome to the run being built. */
static void
s_put_outcome(s_worker_t *w, int code, const dmp_value_t *v,
              const char *text)
{
    size_t len = 0;
    if (code == 0 && dmp__value_encoded_size(v, &len) != 0) {
        code = -EINVAL;
        text = "the task's result nests too deep to encode";
    }
    char big[160];
    if (code == 0 && len + 64 > w->result_max) {
        snprintf(big, sizeof big, "the task's result is %zu bytes: more "
                 "than the pool's result queue takes (%zu)", len,
                 w->result_max - 64);
        code = -EMSGSIZE;
        text = big;
    }
    if (code != 0)
        len = strlen(text);
    uint8_t *p = dmp__buf_room(&w->out, 8 + len);
    if (!p)
        return;
    dmp__le_put(p, (uint32_t)code, 4);
    dmp__le_put(p + 4, len, 4);
    if (code == 0)
        dmp__value_write(v, p + 8);
    else
        memcpy(p + 8, text, len);
    w->out.len += 8 + len;
}

/* Runs one task on one encoded item, appending its outcome. */
static void
s_run_item(s_worker_t *w, const uint8_t *item, size_t len)
{
    dmp_value_t *arg = NULL, *res = NULL;
    int code;
    char text[DMP__TEXT_MAX]; /* set wherever code is set non-zero */
    text[0] = '\0';
    if (!w->fn) {
        code = -EINVAL;
        snprintf(text, sizeof text, "no task '%s' in this executable "
                 "(register it with DMP_TASK)", w->task);
    } else if ((code = dmp_value_decode(item, len, &arg)) != 0) {
        snprintf(text, sizeof text, "cannot decode the item: %s",
                 dmp_strerror(code));
    } else {
        code = w->fn(arg, &res);
        if (code != 0) {
            const char *msg = dmp_value_str(res, NULL);
            dmp__strlcpy(text, msg && *msg ? msg : dmp_strerror(code),
                         sizeof text);
        }
    }
    if (code == 0 && !res)
        res = dmp_none();
    if (code == 0 && !res) {
        code = -ENOMEM;
        dmp__strlcpy(text, "out of memory", sizeof text);
    }
    s_put_outcome(w, code, res, text);
    dmp_value_destroy(&arg);
    dmp_value_destroy(&res);
}

/* Runs a 'T' message: its chunks in order. 0, or DMP_EPROTO when it is
 * malformed, or the error of sending results. */
static int
s_run_message(s_worker_t *w, const uint8_t *p, size_t len)
{
    const uint8_t *end = p + len;
    if (len < 5)
        return DMP_EPROTO;
    uint32_t n_chunks = (uint32_t)dmp__le_get(p + 1, 4);
    p += 5;
    for (uint32_t c = 0; c < n_chunks; c++) {
        if (end - p < 10)
            return DMP_EPROTO;
        uint64_t id = dmp__le_get(p, 8);
        uint8_t flags = p[8], name_len = p[9];
        p += 10;
        if (end - p < name_len + 4 || name_len >= DMP__NAME_MAX)
            return DMP_EPROTO;
        if (strlen(w->task) != name_len ||
            memcmp(w->task, p, name_len) != 0) {
            memcpy(w->task, p, name_len);
            w->task[name_len] = '\0';
            w->fn = dmp__task_find(w->task);
        }
        p += name_len;
        uint32_t n_items = (uint32_t)dmp__le_get(p, 4);
        p += 4;
        uint32_t first = 0, k = 0;
        size_t run_at = 0;
        double t0 = 0;
        for (;;) {
            /* A run per chunk, cut where the batch grows past the soft
             * limit (a big chunk's results go out in pieces). */
            if (k == n_items || (k > first && w->out.len >
                                 DMP__POOL_MSG_SOFT)) {
                if (k > first) {
                    uint8_t *h = w->out.err ? NULL : w->out.p + run_at;
                    if (h) {
                        dmp__le_put(h + 12, k - first, 4);
                        double us = (dmp__now() - t0) * 1e6;
                        dmp__le_put(h + 16, us > 4e9 ? 4000000000u
                                                     : (uint32_t)us, 4);
                    }
                    w->n_runs++;
                }
                if (k == n_items)
                    break;
                int rc = s_flush(w);
                if (rc)
                    return rc;
                first = k;
            }
            if (k == first) {
                run_at = w->out.len;
                dmp__buf_put_le(&w->out, id, 8);
                dmp__buf_put_le(&w->out, first, 4);
                dmp__buf_put_le(&w->out, 0, 4); /* n_items */
                dmp__buf_put_le(&w->out, 0, 4); /* microseconds */
                t0 = dmp__now();
            }
            if (end - p < 4)
                return DMP_EPROTO;
            uint32_t ilen = (uint32_t)dmp__le_get(p, 4);
            p += 4;
            if ((size_t)(end - p) < ilen)
                return DMP_EPROTO;
            s_run_item(w, p, ilen);
            p += ilen;
            k++;
        }
        if ((flags & DMP__POOL_CHUNK_FLUSH) ||
            dmp__now() - w->last_flush >= FLUSH_EVERY ||
            w->out.len > DMP__POOL_MSG_SOFT) {
            int rc = s_flush(w);
            if (rc)
                return rc;
        }
    }
    return p == end ? 0 : DMP_EPROTO;
}

/* "BOOT_ID:pid:[INODE]": processes with the same one see the same pids. */
void
dmp__pool_host_id(char *out, size_t size)
{
    char boot[64] = "", ns[64] = "";
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
    if (f) {
        if (!fgets(boot, sizeof boot, f))
            boot[0] = '\0';
        fclose(f);
    }
    boot[strcspn(boot, "\n")] = '\0';
    ssize_t n = readlink("/proc/self/ns/pid", ns, sizeof ns - 1);
    ns[n > 0 ? n : 0] = '\0';
    snprintf(out, size, "%s:%s", boot, ns);
}

/* Whether the pool's program still runs, as far as we can tell. */
static bool
s_owner_alive(const dmp_value_t *args, double idle)
{
    char mine[160];
    dmp__pool_host_id(mine, sizeof mine);
    const char *theirs = dmp_value_str(dmp_list_get(args, 5), NULL);
    int64_t pid = 0, start = 0;
    dmp_value_get_int(dmp_list_get(args, 6), &pid);
    dmp_value_get_int(dmp_list_get(args, 7), &start);
    if (theirs && strcmp(theirs, mine) == 0 && pid > 0)
        return dmp__proc_starttime((pid_t)pid) == (uint64_t)start;
    return idle < IDLE_EXIT;
}

static void
s_say(s_worker_t *w, char kind, int code, const char *text)
{
    dmp__buf_t b = {0};
    dmp__buf_put(&b, &kind, 1);
    dmp__buf_put_le(&b, w->id, 8);
    if (kind == 'X') {
        dmp__buf_put_le(&b, (uint32_t)code, 4);
        dmp__buf_put(&b, text, strlen(text));
    }
    if (!b.err)
        dmp_queue_put_bytes(w->results, b.p, b.len, DMP_FOREVER);
    dmp__buf_free(&b);
}

/*
 * args: [tasks queue, results queue, worker id, initializer or None,
 * initargs or None, the owner's host id, pid, start time]. Exit codes:
 * 0 told to stop or the pool went away; 3 bad arguments; 4 the
 * initializer failed; 5 a malformed message.
 */
static int
s_worker_main(const dmp_value_t *args)
{
    s_worker_t w = {0};
    int64_t id = 0;
    if (dmp_queue_from_value(dmp_list_get(args, 0), &w.tasks) != 0 ||
        dmp_queue_from_value(dmp_list_get(args, 1), &w.results) != 0 ||
        dmp_value_get_int(dmp_list_get(args, 2), &id) != 0) {
        fprintf(stderr, "dmp: %s: bad pool worker arguments\n",
                dmp_current_process_name());
        return 3;
    }
    w.id = (uint64_t)id;
    w.result_max = DMP__ITEM_MAX_DEFAULT; /* in parts across hosts */
    int status = 0;
    const char *init = dmp_value_str(dmp_list_get(args, 3), NULL);
    if (init) {
        dmp_target_fn fn = dmp__target_find(init);
        dmp_value_t *none = NULL;
        const dmp_value_t *initargs = dmp_list_get(args, 4);
        if (dmp_value_type(initargs) != DMP_VALUE_LIST)
            initargs = none = dmp_list();
        int rc = fn ? fn(initargs) : -EINVAL;
        dmp_value_destroy(&none);
        fflush(stdout);
        fflush(stderr);
        if (rc != 0) {
            char text[DMP__TEXT_MAX];
            if (fn)
                snprintf(text, sizeof text, "initializer '%s' returned %d "
                         "in %s on node '%s'", init, rc,
                         dmp_current_process_name(), dmp_current_node());
            else
                snprintf(text, sizeof text, "no target '%s' in this "
                         "executable (register it with DMP_TARGET)", init);
            s_say(&w, 'X', rc, text);
            status = 4;
            goto out;
        }
    }
    s_say(&w, 'H', 0, NULL);
    s_out_reset(&w);
    double idle_since = dmp__now();
    for (;;) {
        void *buf = NULL;
        size_t len = 0;
        int rc = dmp_queue_get_bytes(w.tasks, &buf, &len, GET_WAIT);
        if (rc == DMP_EEMPTY) {
            if (!s_owner_alive(args, dmp__now() - idle_since))
                break;
            continue;
        }
        if (rc != 0)
            break; /* the queue is gone: the pool is */
        idle_since = dmp__now();
        const uint8_t *p = buf;
        if (len == 0 || p[0] == 'S') {
            dmp_free(buf);
            break;
        }
        if (p[0] == 'T') {
            rc = s_run_message(&w, p, len);
            if (rc == 0)
                rc = s_flush(&w);
            fflush(stdout);
            fflush(stderr);
        }
        dmp_free(buf);
        if (rc == DMP_EPROTO) {
            fprintf(stderr, "dmp: %s: malformed pool message\n",
                    dmp_current_process_name());
            status = 5;
            break;
        }
        if (rc)
            break; /* results cannot be sent: the pool is gone */
    }
out:
    /* What was put is at the owner before we exit (close waits). */
    dmp_queue_close(w.results);
    dmp_queue_destroy(&w.tasks);
    dmp_queue_destroy(&w.results);
    dmp__buf_free(&w.out);
    return status;
}

static dmp_target_t s_worker_target = {DMP__POOL_WORKER, s_worker_main,
                                       NULL};

__attribute__((constructor)) static void
s_register_worker(void)
{
    dmp_target_register(&s_worker_target);
}
