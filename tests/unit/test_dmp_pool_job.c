/*
 * test_dmp_pool_job.c - a pool call's results, without any process: the
 * slots the pool's thread fills (each once: this is where exactly-once
 * delivery is decided), map's fail-fast, apply, the imap iterator in
 * order and as completed, AsyncResult's waits and copies, callbacks once;
 * and the helpers the pool's messages are built with (growable buffers,
 * little-endian integers, values encoded into a caller's buffer).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "dmp_impl.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Sets slot i to the int v (encoded as a worker sends it). */
static bool
s_set_int(dmp__job_t *job, size_t i, int64_t v)
{
    dmp_value_t *x = dmp_int(v);
    uint8_t *buf;
    size_t len;
    assert_int_equal(dmp_value_encode(x, &buf, &len), 0);
    dmp__job_lock(job);
    bool set = dmp__job_set_locked(job, i, 0, 0, buf, len, NULL);
    dmp__job_unlock(job);
    dmp_free(buf);
    dmp_value_destroy(&x);
    return set;
}

static bool
s_set_err(dmp__job_t *job, size_t i, int code, const char *text)
{
    dmp__job_lock(job);
    bool set = dmp__job_set_locked(job, i, DMP_EREMOTE, code, NULL, 0, text);
    dmp__job_unlock(job);
    return set;
}

static int64_t
s_int(const dmp_value_t *v)
{
    int64_t x = -1;
    dmp_value_get_int(v, &x);
    return x;
}

/* The happy path: a map whose results come out of order and twice. */
static void
test_map_job_keeps_the_first_result_of_each_item_in_order(void **state)
{
    (void)state;
    dmp__job_t *job;
    assert_int_equal(dmp__job_new(DMP__JOB_MAP, 4, NULL, NULL, &job), 0);
    dmp_async_t *ar;
    assert_int_equal(dmp__async_new(job, &ar), 0);
    assert_true(s_set_int(job, 2, 20));
    assert_true(s_set_int(job, 0, 0));
    assert_false(s_set_int(job, 2, 99)); /* a chunk that ran twice */
    assert_int_equal(dmp_async_ready(ar), 0);
    assert_int_equal(dmp_async_successful(ar), -EINVAL);
    dmp_value_t *v = NULL;
    assert_int_equal(dmp_async_get(ar, &v, 0.01), -ETIMEDOUT);
    assert_true(s_set_int(job, 3, 30));
    assert_true(s_set_int(job, 1, 10));
    assert_false(s_set_int(job, 4, 40)); /* out of range */
    assert_int_equal(dmp_async_ready(ar), 1);
    assert_int_equal(dmp_async_successful(ar), 1);
    assert_int_equal(dmp_async_get(ar, &v, 0), 0);
    assert_int_equal(dmp_value_len(v), 4);
    for (int64_t i = 0; i < 4; i++)
        assert_int_equal(s_int(dmp_list_get(v, i)), i * 10);
    /* get hands out a copy each time */
    dmp_value_t *again = NULL;
    assert_int_equal(dmp_async_get(ar, &again, 0), 0);
    assert_true(dmp_value_equal(v, again));
    assert_true(v != again);
    dmp_value_destroy(&v);
    dmp_value_destroy(&again);
    dmp_async_destroy(&ar);
    dmp_async_destroy(&ar); /* safe twice */
    dmp__job_unref(&job);
}

/* As Python's MapResult: the first failure decides, at once. */
static void
test_map_job_fails_at_the_first_error(void **state)
{
    (void)state;
    dmp__job_t *job;
    assert_int_equal(dmp__job_new(DMP__JOB_MAP, 3, NULL, NULL, &job), 0);
    dmp_async_t *ar;
    assert_int_equal(dmp__async_new(job, &ar), 0);
    assert_true(s_set_int(job, 0, 0));
    assert_true(s_set_err(job, 1, -42, "task 'f' failed on item 1: no"));
    dmp__job_lock(job);
    assert_true(dmp__job_finished_locked(job));
    dmp__job_unlock(job);
    assert_true(s_set_err(job, 2, -7, "a later failure"));
    dmp_value_t *v = NULL;
    assert_int_equal(dmp_async_get(ar, &v, 0), DMP_EREMOTE);
    assert_null(v);
    assert_int_equal(dmp_async_successful(ar), 0);
    assert_int_equal(dmp_async_error(ar), -42);
    assert_string_equal(dmp_async_errmsg(ar), "task 'f' failed on item 1: no");
    dmp_async_destroy(&ar);
    dmp__job_unref(&job);
}

static void
test_empty_map_is_ready_with_an_empty_list(void **state)
{
    (void)state;
    dmp__job_t *job;
    assert_int_equal(dmp__job_new(DMP__JOB_MAP, 0, NULL, NULL, &job), 0);
    dmp_value_t *v = NULL;
    int code = 1;
    char text[64];
    assert_int_equal(dmp__job_take(job, &v, &code, text, sizeof text), 0);
    assert_int_equal(dmp_value_type(v), DMP_VALUE_LIST);
    assert_int_equal(dmp_value_len(v), 0);
    dmp_value_destroy(&v);
    dmp__job_unref(&job);
}

typedef struct {
    int calls, rc;
    int64_t value;
} s_cb_t;

static void
s_cb(int rc, const dmp_value_t *result, const char *errmsg, void *arg)
{
    (void)errmsg;
    s_cb_t *cb = arg;
    cb->calls++;
    cb->rc = rc;
    cb->value = rc ? 0 : s_int(result);
}

/* apply: one slot; its callback is due once, when ready. */
static void
test_apply_job_and_its_callback_once(void **state)
{
    (void)state;
    s_cb_t cb = {0};
    dmp__job_t *job;
    assert_int_equal(dmp__job_new(DMP__JOB_APPLY, 1, s_cb, &cb, &job), 0);
    dmp__job_lock(job);
    assert_false(dmp__job_callback_due_locked(job));
    dmp__job_unlock(job);
    assert_true(s_set_int(job, 0, 7));
    dmp__job_lock(job);
    assert_true(dmp__job_callback_due_locked(job));
    assert_false(dmp__job_callback_due_locked(job));
    dmp__job_unlock(job);
    dmp__job_callback(job);
    assert_int_equal(cb.calls, 1);
    assert_int_equal(cb.rc, 0);
    assert_int_equal(cb.value, 7);
    dmp_value_t *v = NULL;
    int code;
    char text[64];
    assert_int_equal(dmp__job_take(job, &v, &code, text, sizeof text), 0);
    assert_int_equal(s_int(v), 7);
    dmp_value_destroy(&v);
    dmp__job_unref(&job);
}

/* fail_locked: what was not set gets the pool's error (terminate). */
static void
test_fail_sets_what_is_unset(void **state)
{
    (void)state;
    dmp__job_t *job;
    assert_int_equal(dmp__job_new(DMP__JOB_IMAP, 3, NULL, NULL, &job), 0);
    dmp_imap_t *it;
    assert_int_equal(dmp__imap_new(job, &it), 0);
    assert_true(s_set_int(job, 1, 11));
    dmp__job_lock(job);
    dmp__job_fail_locked(job, -ECANCELED, -ECANCELED, "terminated");
    assert_true(dmp__job_finished_locked(job));
    dmp__job_unlock(job);
    dmp_value_t *v = NULL;
    assert_int_equal(dmp_imap_next(it, &v, 0), -ECANCELED);
    assert_string_equal(dmp_imap_errmsg(it), "terminated");
    assert_int_equal(dmp_imap_next(it, &v, 0), 0);
    assert_int_equal(s_int(v), 11);
    dmp_value_destroy(&v);
    assert_int_equal(dmp_imap_next(it, &v, 0), -ECANCELED);
    assert_int_equal(dmp_imap_next(it, &v, 0), DMP_EEOF);
    dmp_imap_destroy(&it);
    dmp__job_unref(&job);
}

typedef struct {
    dmp__job_t *job;
    int64_t n;
} s_filler_t;

/* Sets the slots from last to first, a little apart. */
static void *
s_fill_backwards(void *arg)
{
    s_filler_t *f = arg;
    for (int64_t i = f->n - 1; i >= 0; i--) {
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
        s_set_int(f->job, (size_t)i, i);
    }
    return NULL;
}

/* imap waits for the next item in order; imap_unordered hands out what
 * came, as it came; both end with DMP_EEOF. */
static void
test_imap_in_order_and_unordered(void **state)
{
    (void)state;
    for (int unordered = 0; unordered < 2; unordered++) {
        dmp__job_t *job;
        assert_int_equal(dmp__job_new(unordered ? DMP__JOB_IMAP_UNORDERED
                                                : DMP__JOB_IMAP,
                                      5, NULL, NULL, &job),
                         0);
        dmp_imap_t *it;
        assert_int_equal(dmp__imap_new(job, &it), 0);
        dmp_value_t *v = NULL;
        assert_int_equal(dmp_imap_next(it, &v, 0.01), -ETIMEDOUT);
        s_filler_t f = {job, 5};
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, s_fill_backwards, &f), 0);
        for (int64_t k = 0; k < 5; k++) {
            assert_int_equal(dmp_imap_next(it, &v, 5.0), 0);
            int64_t want = unordered ? 4 - k : k;
            assert_int_equal(s_int(v), want);
            assert_int_equal(dmp_imap_index(it), (size_t)want);
            dmp_value_destroy(&v);
        }
        assert_int_equal(dmp_imap_next(it, &v, 5.0), DMP_EEOF);
        pthread_join(t, NULL);
        dmp_imap_destroy(&it);
        dmp__job_unref(&job);
    }
}

/* The pool's message helpers. */
static void
test_buffers_and_little_endian_integers(void **state)
{
    (void)state;
    dmp__buf_t b = {0};
    for (int i = 0; i < 10000; i++)
        dmp__buf_put_le(&b, (uint64_t)i * 0x0101010101ULL, 8);
    dmp__buf_put(&b, "end", 3);
    assert_int_equal(b.err, 0);
    assert_int_equal(b.len, 80003);
    for (int i = 0; i < 10000; i++)
        assert_true(dmp__le_get(b.p + 8 * i, 8) ==
                    (uint64_t)i * 0x0101010101ULL);
    assert_memory_equal(b.p + 80000, "end", 3);
    uint8_t four[4];
    dmp__le_put(four, 0xdeadbeef, 4);
    assert_int_equal(four[0], 0xef);
    assert_int_equal(four[3], 0xde);
    assert_true(dmp__le_get(four, 4) == 0xdeadbeef);
    dmp__buf_free(&b);
    assert_null(b.p);
    assert_int_equal(b.len, 0);
}

/* Encoding into a caller's buffer writes what dmp_value_encode does. */
static void
test_value_written_in_place_is_the_encoding(void **state)
{
    (void)state;
    dmp_value_t *v = dmp_list_of(4, dmp_int(-5), dmp_str("h\xc3\xa9"),
                                 dmp_double(0.5),
                                 dmp_list_of(1, dmp_bytes("\0x", 2)));
    assert_non_null(v);
    uint8_t *enc;
    size_t len, size;
    assert_int_equal(dmp_value_encode(v, &enc, &len), 0);
    assert_int_equal(dmp__value_encoded_size(v, &size), 0);
    assert_int_equal(size, len);
    uint8_t buf[256];
    assert_true(size <= sizeof buf);
    assert_ptr_equal(dmp__value_write(v, buf), buf + size);
    assert_memory_equal(buf, enc, len);
    dmp_free(enc);
    dmp_value_destroy(&v);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_map_job_keeps_the_first_result_of_each_item_in_order),
        cmocka_unit_test(test_map_job_fails_at_the_first_error),
        cmocka_unit_test(test_empty_map_is_ready_with_an_empty_list),
        cmocka_unit_test(test_apply_job_and_its_callback_once),
        cmocka_unit_test(test_fail_sets_what_is_unset),
        cmocka_unit_test(test_imap_in_order_and_unordered),
        cmocka_unit_test(test_buffers_and_little_endian_integers),
        cmocka_unit_test(test_value_written_in_place_is_the_encoding),
    };
    return cmocka_run_group_tests_name("dmp_pool_job", tests, NULL, NULL);
}
