/*
 * dmp_pool_job.c - the results of one pool call: AsyncResult and the
 * iterator imap returns.
 *
 * A job has one slot per task (item). The pool's thread fills slots as
 * results arrive, each at most once (a second result for a slot, from a
 * chunk that ran twice because its first worker died, is dropped here:
 * this is where exactly-once delivery is decided). Callers wait on the
 * job's condition variable. A map or apply job is ready when every slot is
 * set or at the first failure (Python's MapResult fails fast); then its
 * result value is built once, and its callback, if any, runs once on the
 * pool's thread. An imap job hands slots out one by one, in input order or
 * in completion order.
 *
 * Ownership: reference counted under the job's lock; the pool holds one
 * reference while it has chunks of the job, each user handle one.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

typedef struct {
    dmp_value_t *value;     /* the result, until handed out */
    char *text;             /* when rc != 0: why (owned) */
    int rc;                 /* 0, or what the call returns for it */
    int code;               /* the original code (the task's own) */
    bool set;
} s_slot_t;

struct dmp__job {
    pthread_mutex_t lock;
    pthread_cond_t cond;     /* a slot was set, or the job became ready */
    unsigned refs;
    dmp__job_kind_t kind;
    size_t n, n_set;
    s_slot_t *slots;
    size_t *order;           /* imap_unordered: slot indexes as set */
    size_t n_order;
    size_t next;             /* imap: next index, or position in order */
    bool changed;            /* wake waiters at unlock */
    bool ready;              /* map, apply: the outcome is known */
    int rc, code;            /* map, apply: the failure, when rc != 0 */
    char *text;
    dmp_value_t *result;     /* map: the list; apply: the value */
    dmp_async_fn cb;
    void *cb_arg;
    bool cb_done;
};

struct dmp_async {
    dmp__job_t *job;
};

struct dmp_imap {
    dmp__job_t *job;
    size_t index;            /* the item the last next() was about */
    int code;                /* its failure, when it failed */
    char text[DMP__TEXT_MAX];
};

static char *
s_strdup(const char *s)
{
    return dmp__strdup(s ? s : "");
}

/* Builds the outcome of a map or apply job whose slots are all set. */
static void
s_build_locked(dmp__job_t *job)
{
    if (job->kind == DMP__JOB_APPLY) {
        job->result = job->slots[0].value;
        job->slots[0].value = NULL;
    } else {
        dmp_value_t *list = dmp_list();
        for (size_t i = 0; list && i < job->n; i++) {
            dmp_value_t *v = job->slots[i].value;
            job->slots[i].value = NULL;
            if (dmp_list_append(list, v ? v : dmp_none()) != 0)
                dmp_value_destroy(&list);
        }
        job->result = list;
        if (!list) {
            job->rc = job->code = -ENOMEM;
            job->text = s_strdup("out of memory building the result list");
        }
    }
    job->ready = true;
}

static bool
s_mapping(const dmp__job_t *job)
{
    return job->kind == DMP__JOB_MAP || job->kind == DMP__JOB_APPLY;
}

int
dmp__job_new(dmp__job_kind_t kind, size_t n, dmp_async_fn cb, void *arg,
             dmp__job_t **job_p)
{
    dmp__job_t *job = dmp__calloc(1, sizeof *job);
    if (!job)
        return -ENOMEM;
    job->slots = dmp__calloc(n ? n : 1, sizeof *job->slots);
    if (kind == DMP__JOB_IMAP_UNORDERED)
        job->order = dmp__calloc(n ? n : 1, sizeof *job->order);
    if (!job->slots || (kind == DMP__JOB_IMAP_UNORDERED && !job->order)) {
        dmp__free(job->slots);
        dmp__free(job);
        return -ENOMEM;
    }
    pthread_mutex_init(&job->lock, NULL);
    dmp__cond_init_monotonic(&job->cond);
    job->refs = 1;
    job->kind = kind;
    job->n = n;
    job->cb = cb;
    job->cb_arg = arg;
    if (n == 0 && kind == DMP__JOB_MAP)
        s_build_locked(job); /* map over nothing: [] at once */
    *job_p = job;
    return 0;
}

void
dmp__job_ref(dmp__job_t *job)
{
    pthread_mutex_lock(&job->lock);
    job->refs++;
    pthread_mutex_unlock(&job->lock);
}

void
dmp__job_unref(dmp__job_t **job_p)
{
    if (!job_p || !*job_p)
        return;
    dmp__job_t *job = *job_p;
    *job_p = NULL;
    pthread_mutex_lock(&job->lock);
    bool last = --job->refs == 0;
    pthread_mutex_unlock(&job->lock);
    if (!last)
        return;
    for (size_t i = 0; i < job->n; i++) {
        dmp_value_destroy(&job->slots[i].value);
        dmp__free(job->slots[i].text);
    }
    dmp__free(job->slots);
    dmp__free(job->order);
    dmp__free(job->text);
    dmp_value_destroy(&job->result);
    pthread_cond_destroy(&job->cond);
    pthread_mutex_destroy(&job->lock);
    dmp__free(job);
}

void
dmp__job_lock(dmp__job_t *job)
{
    pthread_mutex_lock(&job->lock);
}

void
dmp__job_unlock(dmp__job_t *job)
{
    if (job->changed) {
        job->changed = false;
        pthread_cond_broadcast(&job->cond);
    }
    pthread_mutex_unlock(&job->lock);
}

bool
dmp__job_is_set_locked(const dmp__job_t *job, size_t i)
{
    return i < job->n && job->slots[i].set;
}

bool
dmp__job_finished_locked(const dmp__job_t *job)
{
    return (s_mapping(job) && job->ready) || job->n_set == job->n;
}

bool
dmp__job_set_locked(dmp__job_t *job, size_t i, int rc, int code,
                    const void *data, size_t len, const char *text)
{
    if (i >= job->n || job->slots[i].set)
        return false;
    s_slot_t *s = &job->slots[i];
    dmp_value_t *v = NULL;
    if (rc == 0 && dmp_value_decode(data, len, &v) != 0) {
        rc = code = DMP_EPROTO;
        text = "a worker sent a result that does not decode";
    }
    s->set = true;
    job->n_set++;
    job->changed = true;
    if (job->order)
        job->order[job->n_order++] = i;
    if (s_mapping(job) && job->ready) { /* failed already: nobody reads */
        dmp_value_destroy(&v);
        return true;
    }
    s->rc = rc;
    s->code = rc ? code : 0;
    s->value = v;
    if (rc) {
        s->text = s_strdup(text);
        if (s_mapping(job)) { /* the first failure decides, as Python */
            job->rc = rc;
            job->code = code;
            job->text = s_strdup(text);
            job->ready = true;
        }
    } else if (s_mapping(job) && job->n_set == job->n) {
        s_build_locked(job);
    }
    return true;
}

void
dmp__job_fail_locked(dmp__job_t *job, int rc, int code, const char *text)
{
    for (size_t i = 0; i < job->n && !dmp__job_finished_locked(job); i++)
        dmp__job_set_locked(job, i, rc, code, NULL, 0, text);
}

bool
dmp__job_callback_due_locked(dmp__job_t *job)
{
    if (!job->cb || job->cb_done || !s_mapping(job) || !job->ready)
        return false;
    job->cb_done = true;
    return true;
}

void
dmp__job_callback(dmp__job_t *job)
{
    /* Ready: result, rc and text no longer change (synchronous calls,
     * which move the result out, have no callback). */
    job->cb(job->rc, job->rc ? NULL : job->result, job->text ? job->text : "",
            job->cb_arg);
}

/* Waits on the job's condition until pred holds or timeout passes.
 * Caller holds the lock. false on timeout. */
static bool
s_wait_locked(dmp__job_t *job, bool (*pred)(const dmp__job_t *),
              double timeout)
{
    if (pred(job))
        return true;
    long ms = dmp__timeout_ms(timeout);
    if (ms == 0)
        return false;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    if (ms > 0) {
        until.tv_sec += ms / 1000;
        until.tv_nsec += (ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
    }
    while (!pred(job)) {
        int w = ms < 0 ? pthread_cond_wait(&job->cond, &job->lock)
                       : pthread_cond_timedwait(&job->cond, &job->lock,
                                                &until);
        if (w == ETIMEDOUT)
            return pred(job);
    }
    return true;
}

static bool
s_is_ready(const dmp__job_t *job)
{
    return job->ready;
}

int
dmp__job_take(dmp__job_t *job, dmp_value_t **result_p, int *code, char *text,
              size_t textlen)
{
    pthread_mutex_lock(&job->lock);
    s_wait_locked(job, s_is_ready, DMP_FOREVER);
    int rc = job->rc;
    if (rc == 0) {
        *result_p = job->result;
        job->result = NULL;
    }
    *code = job->code;
    dmp__strlcpy(text, job->text ? job->text : "", textlen);
    pthread_mutex_unlock(&job->lock);
    return rc;
}

/* ---- AsyncResult ------------------------------------------------------ */

int
dmp__async_new(dmp__job_t *job, dmp_async_t **ar_p)
{
    dmp_async_t *ar = dmp__calloc(1, sizeof *ar);
    if (!ar)
        return -ENOMEM;
    dmp__job_ref(job);
    ar->job = job;
    *ar_p = ar;
    return 0;
}

int
dmp_async_get(dmp_async_t *ar, dmp_value_t **result_p, double timeout)
{
    dmp__job_t *job = ar->job;
    pthread_mutex_lock(&job->lock);
    int rc = s_wait_locked(job, s_is_ready, timeout) ? job->rc : -ETIMEDOUT;
    if (rc == 0) {
        *result_p = job->result ? dmp_value_copy(job->result) : dmp_none();
        if (!*result_p)
            rc = -ENOMEM;
    }
    pthread_mutex_unlock(&job->lock);
    return rc;
}

int
dmp_async_wait(dmp_async_t *ar, double timeout)
{
    pthread_mutex_lock(&ar->job->lock);
    bool ready = s_wait_locked(ar->job, s_is_ready, timeout);
    pthread_mutex_unlock(&ar->job->lock);
    return ready ? 0 : -ETIMEDOUT;
}

int
dmp_async_ready(dmp_async_t *ar)
{
    pthread_mutex_lock(&ar->job->lock);
    int ready = ar->job->ready;
    pthread_mutex_unlock(&ar->job->lock);
    return ready;
}

int
dmp_async_successful(dmp_async_t *ar)
{
    pthread_mutex_lock(&ar->job->lock);
    int rc = !ar->job->ready ? -EINVAL : ar->job->rc == 0;
    pthread_mutex_unlock(&ar->job->lock);
    return rc;
}

int
dmp_async_error(dmp_async_t *ar)
{
    pthread_mutex_lock(&ar->job->lock);
    int code = ar->job->ready ? ar->job->code : 0;
    pthread_mutex_unlock(&ar->job->lock);
    return code;
}

const char *
dmp_async_errmsg(dmp_async_t *ar)
{
    /* Set once, when the job became ready: stable from then on. */
    pthread_mutex_lock(&ar->job->lock);
    const char *text = ar->job->ready && ar->job->text ? ar->job->text : "";
    pthread_mutex_unlock(&ar->job->lock);
    return text;
}

void
dmp_async_destroy(dmp_async_t **ar_p)
{
    if (!ar_p || !*ar_p)
        return;
    dmp__job_unref(&(*ar_p)->job);
    dmp__free(*ar_p);
    *ar_p = NULL;
}

/* ---- the imap iterator ----------------------------------------------- */

int
dmp__imap_new(dmp__job_t *job, dmp_imap_t **it_p)
{
    dmp_imap_t *it = dmp__calloc(1, sizeof *it);
    if (!it)
        return -ENOMEM;
    dmp__job_ref(job);
    it->job = job;
    *it_p = it;
    return 0;
}

/* Whether next() has something to hand out: the end, or a set slot. */
static bool
s_next_ready(const dmp__job_t *job)
{
    if (job->next >= job->n)
        return true;
    if (job->order)
        return job->next < job->n_order;
    return job->slots[job->next].set;
}

int
dmp_imap_next(dmp_imap_t *it, dmp_value_t **item_p, double timeout)
{
    dmp__job_t *job = it->job;
    pthread_mutex_lock(&job->lock);
    int rc;
    if (!s_wait_locked(job, s_next_ready, timeout)) {
        rc = -ETIMEDOUT;
    } else if (job->next >= job->n) {
        rc = DMP_EEOF;
    } else {
        size_t i = job->order ? job->order[job->next] : job->next;
        job->next++;
        s_slot_t *s = &job->slots[i];
        it->index = i;
        rc = s->rc;
        it->code = s->code;
        dmp__strlcpy(it->text, s->text ? s->text : "", sizeof it->text);
        if (rc == 0) {
            *item_p = s->value ? s->value : dmp_none();
            s->value = NULL;
            if (!*item_p)
                rc = -ENOMEM;
        }
    }
    pthread_mutex_unlock(&job->lock);
    return rc;
}

size_t
dmp_imap_index(const dmp_imap_t *it)
{
    return it->index;
}

int
dmp_imap_error(const dmp_imap_t *it)
{
    return it->code;
}

const char *
dmp_imap_errmsg(const dmp_imap_t *it)
{
    return it->text;
}

void
dmp_imap_destroy(dmp_imap_t **it_p)
{
    if (!it_p || !*it_p)
        return;
    dmp__job_unref(&(*it_p)->job);
    dmp__free(*it_p);
    *it_p = NULL;
}
