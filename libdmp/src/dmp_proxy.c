/*
 * dmp_proxy.c - the typed calls of manager proxies: dict, list, Value,
 * Array, Namespace, locks, semaphores, Condition, Event, Barrier, Queue.
 *
 * Each is one request to the manager (dmp_manager.c carries it); the
 * server (dmp_manager_server.c) does the work and keeps Python's
 * semantics. Here only arguments are packed and results unpacked.
 */
#include "dmp_impl.h"

#include <stdio.h>
#include <string.h>

/* A call with up to three arguments, no timeout. */
static int
s_call(dmp_proxy_t *p, dmp_proxy_type_t want, int op, const dmp_value_t *a,
       const dmp_value_t *b, const dmp_value_t *c, dmp_value_t **res_p)
{
    const dmp_value_t *args[3] = {a, b, c};
    size_t n = c ? 3 : b ? 2 : a ? 1 : 0;
    return dmp__proxy_call(p, want, op, 0, args, n, res_p);
}

static int
s_timed(dmp_proxy_t *p, dmp_proxy_type_t want, int op, double timeout,
        const dmp_value_t *a, dmp_value_t **res_p)
{
    const dmp_value_t *args[1] = {a};
    return dmp__proxy_call(p, want, op, timeout, args, a ? 1 : 0, res_p);
}

/* A call whose result is an int (len, count, ...), or an error. */
static int64_t
s_int(dmp_proxy_t *p, dmp_proxy_type_t want, int op, const dmp_value_t *a)
{
    dmp_value_t *res = NULL;
    int rc = s_call(p, want, op, a, NULL, NULL, &res);
    int64_t n = rc;
    if (rc == 0 && dmp_value_get_int(res, &n) != 0)
        n = DMP_EPROTO;
    dmp_value_destroy(&res);
    return n;
}

/* A call with an int argument (index, n, flag). */
static int
s_call_i(dmp_proxy_t *p, dmp_proxy_type_t want, int op, int64_t i,
         const dmp_value_t *b, const dmp_value_t *c, dmp_value_t **res_p)
{
    dmp_value_t *iv = dmp_int(i);
    if (!iv)
        return -ENOMEM;
    int rc = s_call(p, want, op, iv, b, c, res_p);
    dmp_value_destroy(&iv);
    return rc;
}

/* ---- str(proxy) --------------------------------------------------------- */

int
dmp_proxy_repr(dmp_proxy_t *p, char *buf, size_t size)
{
    dmp_value_t *res = NULL;
    int rc = s_call(p, 0, DMP__MOP_REPR, NULL, NULL, NULL, &res);
    if (rc)
        return rc;
    size_t len = 0;
    const char *s = dmp_value_str(res, &len);
    if (!s) {
        dmp_value_destroy(&res);
        return DMP_EPROTO;
    }
    if (size)
        snprintf(buf, size, "%s", s);
    dmp_value_destroy(&res);
    return (int)len;
}

/* ---- dict ----------------------------------------------------------------- */

int
dmp_dict_get(dmp_proxy_t *p, const dmp_value_t *key, dmp_value_t **item_p)
{
    return s_call(p, DMP_PROXY_DICT, DMP__MOP_D_GET, key, NULL, NULL, item_p);
}

int
dmp_dict_get_default(dmp_proxy_t *p, const dmp_value_t *key,
                     const dmp_value_t *dflt, dmp_value_t **item_p)
{
    dmp_value_t *none = dflt ? NULL : dmp_none();
    int rc = s_call(p, DMP_PROXY_DICT, DMP__MOP_D_GET_DEFAULT, key,
                    dflt ? dflt : none, NULL, item_p);
    dmp_value_destroy(&none);
    return rc;
}

int
dmp_dict_set(dmp_proxy_t *p, const dmp_value_t *key, const dmp_value_t *item)
{
    if (!key || !item)
        return -EINVAL;
    return s_call(p, DMP_PROXY_DICT, DMP__MOP_D_SET, key, item, NULL, NULL);
}

int
dmp_dict_del(dmp_proxy_t *p, const dmp_value_t *key)
{
    return s_call(p, DMP_PROXY_DICT, DMP__MOP_D_DEL, key, NULL, NULL, NULL);
}

int
dmp_dict_contains(dmp_proxy_t *p, const dmp_value_t *key)
{
    dmp_value_t *res = NULL;
    int rc = s_call(p, DMP_PROXY_DICT, DMP__MOP_D_CONTAINS, key, NULL, NULL,
                    &res);
    int b = 0;
    if (rc == 0 && dmp_value_get_bool(res, &b) != 0)
        rc = DMP_EPROTO;
    dmp_value_destroy(&res);
    return rc ? rc : b;
}

int64_t
dmp_dict_len(dmp_proxy_t *p)
{
    return s_int(p, DMP_PROXY_DICT, DMP__MOP_D_LEN, NULL);
}

int
dmp_dict_keys(dmp_proxy_t *p, dmp_value_t **list_p)
{
    return s_call(p, DMP_PROXY_DICT, DMP__MOP_D_KEYS, NULL, NULL, NULL,
                  list_p);
}

int
dmp_dict_values(dmp_proxy_t *p, dmp_value_t **list_p)
{
    return s_call(p, DMP_PROXY_DICT, DMP__MOP_D_VALUES, NULL, NULL, NULL,
                  list_p);
}

int
dmp_dict_items(dmp_proxy_t *p, dmp_value_t **list_p)
{
    return s_call(p, DMP_PROXY_DICT, DMP__MOP_D_ITEMS, NULL, NULL, NULL,
                  list_p);
}

int
dmp_dict_update(dmp_proxy_t *p, const dmp_value_t *map)
{
    if (!map || dmp_value_type(map) != DMP_VALUE_MAP)
        return -EINVAL;
    return s_call(p, DMP_PROXY_DICT, DMP__MOP_D_UPDATE, map, NULL, NULL,
                  NULL);
}

int
dmp_dict_pop(dmp_proxy_t *p, const dmp_value_t *key, const dmp_value_t *dflt,
             dmp_value_t **item_p)
{
    return s_call(p, DMP_PROXY_DICT, DMP__MOP_D_POP, key, dflt, NULL, item_p);
}

int
dmp_dict_clear(dmp_proxy_t *p)
{
    return s_call(p, DMP_PROXY_DICT, DMP__MOP_D_CLEAR, NULL, NULL, NULL,
                  NULL);
}

int
dmp_dict_copy(dmp_proxy_t *p, dmp_value_t **map_p)
{
    return s_call(p, DMP_PROXY_DICT, DMP__MOP_D_COPY, NULL, NULL, NULL, map_p);
}

/* ---- list ------------------------------------------------------------------- */

int
dmp_mlist_append(dmp_proxy_t *p, const dmp_value_t *item)
{
    if (!item)
        return -EINVAL;
    return s_call(p, DMP_PROXY_LIST, DMP__MOP_L_APPEND, item, NULL, NULL,
                  NULL);
}

int
dmp_mlist_extend(dmp_proxy_t *p, const dmp_value_t *list)
{
    if (!list || dmp_value_type(list) != DMP_VALUE_LIST)
        return -EINVAL;
    return s_call(p, DMP_PROXY_LIST, DMP__MOP_L_EXTEND, list, NULL, NULL,
                  NULL);
}

int
dmp_mlist_insert(dmp_proxy_t *p, int64_t i, const dmp_value_t *item)
{
    if (!item)
        return -EINVAL;
    return s_call_i(p, DMP_PROXY_LIST, DMP__MOP_L_INSERT, i, item, NULL,
                    NULL);
}

int
dmp_mlist_get(dmp_proxy_t *p, int64_t i, dmp_value_t **item_p)
{
    return s_call_i(p, DMP_PROXY_LIST, DMP__MOP_L_GET, i, NULL, NULL, item_p);
}

int
dmp_mlist_set(dmp_proxy_t *p, int64_t i, const dmp_value_t *item)
{
    if (!item)
        return -EINVAL;
    return s_call_i(p, DMP_PROXY_LIST, DMP__MOP_L_SET, i, item, NULL, NULL);
}

int
dmp_mlist_del(dmp_proxy_t *p, int64_t i)
{
    return s_call_i(p, DMP_PROXY_LIST, DMP__MOP_L_DEL, i, NULL, NULL, NULL);
}

static int
s_slice_call(dmp_proxy_t *p, int op, int64_t start, int64_t stop,
             const dmp_value_t *list, dmp_value_t **res_p)
{
    dmp_value_t *b = dmp_int(stop);
    if (!b)
        return -ENOMEM;
    int rc = s_call_i(p, DMP_PROXY_LIST, op, start, b, list, res_p);
    dmp_value_destroy(&b);
    return rc;
}

int
dmp_mlist_get_slice(dmp_proxy_t *p, int64_t start, int64_t stop,
                    dmp_value_t **list_p)
{
    return s_slice_call(p, DMP__MOP_L_GET_SLICE, start, stop, NULL, list_p);
}

int
dmp_mlist_set_slice(dmp_proxy_t *p, int64_t start, int64_t stop,
                    const dmp_value_t *list)
{
    if (!list || dmp_value_type(list) != DMP_VALUE_LIST)
        return -EINVAL;
    return s_slice_call(p, DMP__MOP_L_SET_SLICE, start, stop, list, NULL);
}

int
dmp_mlist_del_slice(dmp_proxy_t *p, int64_t start, int64_t stop)
{
    return s_slice_call(p, DMP__MOP_L_DEL_SLICE, start, stop, NULL, NULL);
}

int64_t
dmp_mlist_len(dmp_proxy_t *p)
{
    return s_int(p, DMP_PROXY_LIST, DMP__MOP_L_LEN, NULL);
}

int
dmp_mlist_pop(dmp_proxy_t *p, int64_t i, dmp_value_t **item_p)
{
    return s_call_i(p, DMP_PROXY_LIST, DMP__MOP_L_POP, i, NULL, NULL, item_p);
}

int64_t
dmp_mlist_index(dmp_proxy_t *p, const dmp_value_t *item)
{
    return item ? s_int(p, DMP_PROXY_LIST, DMP__MOP_L_INDEX, item) : -EINVAL;
}

int64_t
dmp_mlist_count(dmp_proxy_t *p, const dmp_value_t *item)
{
    return item ? s_int(p, DMP_PROXY_LIST, DMP__MOP_L_COUNT, item) : -EINVAL;
}

int
dmp_mlist_remove(dmp_proxy_t *p, const dmp_value_t *item)
{
    return s_call(p, DMP_PROXY_LIST, DMP__MOP_L_REMOVE, item, NULL, NULL,
                  NULL);
}

int
dmp_mlist_sort(dmp_proxy_t *p, int reverse)
{
    return s_call_i(p, DMP_PROXY_LIST, DMP__MOP_L_SORT, reverse != 0, NULL,
                    NULL, NULL);
}

int
dmp_mlist_copy(dmp_proxy_t *p, dmp_value_t **list_p)
{
    return s_call(p, DMP_PROXY_LIST, DMP__MOP_L_COPY, NULL, NULL, NULL,
                  list_p);
}

/* ---- Value, Array, Namespace ---------------------------------------------- */

int
dmp_mvalue_get(dmp_proxy_t *p, dmp_value_t **v_p)
{
    return s_call(p, DMP_PROXY_VALUE, DMP__MOP_V_GET, NULL, NULL, NULL, v_p);
}

int
dmp_mvalue_set(dmp_proxy_t *p, const dmp_value_t *v)
{
    if (!v)
        return -EINVAL;
    return s_call(p, DMP_PROXY_VALUE, DMP__MOP_V_SET, v, NULL, NULL, NULL);
}

int64_t
dmp_marray_len(dmp_proxy_t *p)
{
    return s_int(p, DMP_PROXY_ARRAY, DMP__MOP_A_LEN, NULL);
}

int
dmp_marray_get(dmp_proxy_t *p, int64_t i, dmp_value_t **v_p)
{
    return s_call_i(p, DMP_PROXY_ARRAY, DMP__MOP_A_GET, i, NULL, NULL, v_p);
}

int
dmp_marray_set(dmp_proxy_t *p, int64_t i, const dmp_value_t *v)
{
    if (!v)
        return -EINVAL;
    return s_call_i(p, DMP_PROXY_ARRAY, DMP__MOP_A_SET, i, v, NULL, NULL);
}

int
dmp_marray_tolist(dmp_proxy_t *p, dmp_value_t **list_p)
{
    return s_call(p, DMP_PROXY_ARRAY, DMP__MOP_A_TOLIST, NULL, NULL, NULL,
                  list_p);
}

static int
s_attr(dmp_proxy_t *p, int op, const char *attr, const dmp_value_t *v,
       dmp_value_t **res_p)
{
    if (!attr || !*attr)
        return -EINVAL;
    dmp_value_t *a = dmp_str(attr);
    if (!a)
        return -EINVAL; /* not UTF-8 (or no memory) */
    int rc = s_call(p, DMP_PROXY_NAMESPACE, op, a, v, NULL, res_p);
    dmp_value_destroy(&a);
    return rc;
}

int
dmp_namespace_get(dmp_proxy_t *p, const char *attr, dmp_value_t **v_p)
{
    return s_attr(p, DMP__MOP_N_GET, attr, NULL, v_p);
}

int
dmp_namespace_set(dmp_proxy_t *p, const char *attr, const dmp_value_t *v)
{
    return v ? s_attr(p, DMP__MOP_N_SET, attr, v, NULL) : -EINVAL;
}

int
dmp_namespace_del(dmp_proxy_t *p, const char *attr)
{
    return s_attr(p, DMP__MOP_N_DEL, attr, NULL, NULL);
}

/* ---- locks, semaphores, conditions ---------------------------------------- */

int
dmp_mlock_acquire(dmp_proxy_t *p, double timeout)
{
    return s_timed(p, DMP_PROXY_LOCK, DMP__MOP_ACQUIRE,
                   timeout > 0 ? timeout : 0, NULL, NULL);
}

int
dmp_mlock_release(dmp_proxy_t *p)
{
    return s_call(p, DMP_PROXY_LOCK, DMP__MOP_RELEASE, NULL, NULL, NULL,
                  NULL);
}

int64_t
dmp_msem_value(dmp_proxy_t *p)
{
    return s_int(p, DMP_PROXY_SEMAPHORE, DMP__MOP_SEM_VALUE, NULL);
}

int
dmp_mcond_wait(dmp_proxy_t *p, double timeout)
{
    return s_timed(p, DMP_PROXY_CONDITION, DMP__MOP_C_WAIT,
                   timeout > 0 ? timeout : 0, NULL, NULL);
}

int
dmp_mcond_notify(dmp_proxy_t *p, int64_t n)
{
    return s_call_i(p, DMP_PROXY_CONDITION, DMP__MOP_C_NOTIFY, n, NULL, NULL,
                    NULL);
}

int
dmp_mcond_notify_all(dmp_proxy_t *p)
{
    return dmp_mcond_notify(p, INT64_MAX);
}

/* ---- Event, Barrier ---------------------------------------------------------- */

int
dmp_mevent_set(dmp_proxy_t *p)
{
    return s_call(p, DMP_PROXY_EVENT, DMP__MOP_E_SET, NULL, NULL, NULL, NULL);
}

int
dmp_mevent_clear(dmp_proxy_t *p)
{
    return s_call(p, DMP_PROXY_EVENT, DMP__MOP_E_CLEAR, NULL, NULL, NULL,
                  NULL);
}

int
dmp_mevent_is_set(dmp_proxy_t *p)
{
    dmp_value_t *res = NULL;
    int rc = s_call(p, DMP_PROXY_EVENT, DMP__MOP_E_IS_SET, NULL, NULL, NULL,
                    &res);
    int b = 0;
    if (rc == 0 && dmp_value_get_bool(res, &b) != 0)
        rc = DMP_EPROTO;
    dmp_value_destroy(&res);
    return rc ? rc : b;
}

int
dmp_mevent_wait(dmp_proxy_t *p, double timeout)
{
    return s_timed(p, DMP_PROXY_EVENT, DMP__MOP_E_WAIT,
                   timeout > 0 ? timeout : 0, NULL, NULL);
}

int
dmp_mbarrier_wait(dmp_proxy_t *p, double timeout, int64_t *index_p)
{
    dmp_value_t *res = NULL;
    int rc = s_timed(p, DMP_PROXY_BARRIER, DMP__MOP_B_WAIT,
                     timeout > 0 ? timeout : 0, NULL, &res);
    int64_t index = 0;
    if (rc == 0 && dmp_value_get_int(res, &index) != 0)
        rc = DMP_EPROTO;
    if (rc == 0 && index_p)
        *index_p = index;
    dmp_value_destroy(&res);
    return rc;
}

int
dmp_mbarrier_reset(dmp_proxy_t *p)
{
    return s_call(p, DMP_PROXY_BARRIER, DMP__MOP_B_RESET, NULL, NULL, NULL,
                  NULL);
}

int
dmp_mbarrier_abort(dmp_proxy_t *p)
{
    return s_call(p, DMP_PROXY_BARRIER, DMP__MOP_B_ABORT, NULL, NULL, NULL,
                  NULL);
}

/* Barrier state: [parties, n_waiting, broken]; item i of it. */
static int64_t
s_barrier_state(dmp_proxy_t *p, int64_t i)
{
    dmp_value_t *res = NULL;
    int rc = s_call(p, DMP_PROXY_BARRIER, DMP__MOP_B_STATE, NULL, NULL, NULL,
                    &res);
    int64_t v = rc;
    if (rc == 0 && dmp_value_get_int(dmp_list_get(res, i), &v) != 0)
        v = DMP_EPROTO;
    dmp_value_destroy(&res);
    return v;
}

int64_t
dmp_mbarrier_parties(dmp_proxy_t *p)
{
    return s_barrier_state(p, 0);
}

int64_t
dmp_mbarrier_n_waiting(dmp_proxy_t *p)
{
    return s_barrier_state(p, 1);
}

int
dmp_mbarrier_broken(dmp_proxy_t *p)
{
    return (int)s_barrier_state(p, 2);
}

/* ---- Queue ---------------------------------------------------------------------- */

int
dmp_mqueue_put(dmp_proxy_t *p, const dmp_value_t *item, double timeout)
{
    if (!item)
        return -EINVAL;
    return s_timed(p, DMP_PROXY_QUEUE, DMP__MOP_Q_PUT,
                   timeout > 0 ? timeout : 0, item, NULL);
}

int
dmp_mqueue_get(dmp_proxy_t *p, dmp_value_t **item_p, double timeout)
{
    return s_timed(p, DMP_PROXY_QUEUE, DMP__MOP_Q_GET,
                   timeout > 0 ? timeout : 0, NULL, item_p);
}

/* [qsize, maxsize] */
static int
s_qsize(dmp_proxy_t *p, int64_t *n, int64_t *max)
{
    dmp_value_t *res = NULL;
    int rc = s_call(p, DMP_PROXY_QUEUE, DMP__MOP_Q_QSIZE, NULL, NULL, NULL,
                    &res);
    if (rc == 0 && (dmp_value_get_int(dmp_list_get(res, 0), n) ||
                    dmp_value_get_int(dmp_list_get(res, 1), max)))
        rc = DMP_EPROTO;
    dmp_value_destroy(&res);
    return rc;
}

int64_t
dmp_mqueue_qsize(dmp_proxy_t *p)
{
    int64_t n = 0, max = 0;
    int rc = s_qsize(p, &n, &max);
    return rc ? rc : n;
}

int
dmp_mqueue_empty(dmp_proxy_t *p)
{
    int64_t n = 0, max = 0;
    int rc = s_qsize(p, &n, &max);
    return rc ? rc : n == 0;
}

int
dmp_mqueue_full(dmp_proxy_t *p)
{
    int64_t n = 0, max = 0;
    int rc = s_qsize(p, &n, &max);
    return rc ? rc : max > 0 && n >= max;
}

int
dmp_mqueue_task_done(dmp_proxy_t *p)
{
    return s_call(p, DMP_PROXY_QUEUE, DMP__MOP_Q_TASK_DONE, NULL, NULL, NULL,
                  NULL);
}

int
dmp_mqueue_join(dmp_proxy_t *p, double timeout)
{
    return s_timed(p, DMP_PROXY_QUEUE, DMP__MOP_Q_JOIN,
                   timeout > 0 ? timeout : 0, NULL, NULL);
}
