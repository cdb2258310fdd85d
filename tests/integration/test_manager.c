/*
 * test_manager.c - the Manager with real agents: on one host (the
 * embedded agent: requests and replies through shared-memory rings), and
 * on a cluster of three (this program on node1's ipc endpoint; servers
 * and children on other nodes, so calls cross hosts through the agents).
 *
 * Covered: start/shutdown, proxies of every type and their Python
 * methods and errors, proxies travelling to children and nested in
 * containers, blocking operations woken by another process, timeouts,
 * named managers and objects found by another process, a name taken
 * twice, a client killed while holding a lock and a semaphore (released,
 * DMP_EOWNERDEAD once), a killed server (DMP_ENODE, never a hang, also
 * for a blocked call), a restarted server that a connection by name
 * reaches again, a program outside the cluster connecting by address and
 * key, and nothing left behind (processes, /dev/shm).
 *
 * This binary is also the children's program (DMP_CHILD) and, with
 * "--outside ADDRESS KEY", the outside client.
 */
#define _GNU_SOURCE
#include "dmp_test.h"
#include "dmp_impl.h" /* dmp__handle_data */

#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define ENODE_WITHIN 5.0   /* a dead server is reported within this */
#define LEASE_WITHIN 12.0  /* a dead remote client's lease ends within */

static struct {
    bool cluster;
    dmp_test_sandbox_t *sb;
    dmp_test_agent_t *agents[3];
    char names[3][64];
} s_c;

static void
s_sleep(double seconds)
{
    struct timespec ts = {(time_t)seconds,
                          (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* A node for children: another one than ours on a cluster. */
static const char *
s_other(int i)
{
    return s_c.cluster ? s_c.names[i] : NULL;
}

static dmp_process_t *
s_start(const char *target, const char *node, dmp_value_t *args)
{
    assert_non_null(args);
    dmp_process_t *p = NULL;
    dmp_process_opts_t o = {.target = target, .node = node, .args = args};
    assert_dmp_ok(dmp_process_new(&o, &p));
    dmp_value_destroy(&args);
    assert_dmp_ok(dmp_process_start(p));
    return p;
}

static int
s_join(dmp_process_t **p)
{
    assert_dmp_ok(dmp_process_join(*p, 60.0));
    int code = -1;
    assert_dmp_ok(dmp_process_exitcode(*p, &code));
    dmp_process_destroy(p);
    return code;
}

static int64_t
s_int_of(const dmp_value_t *v)
{
    int64_t x = -999;
    assert_dmp_ok(dmp_value_get_int(v, &x));
    return x;
}

/* ---- children ---------------------------------------------------------- */

/* args: [proxy]: the child's own calls on what it got; exit code says. */
DMP_TARGET(mgr_child_dict)
{
    dmp_proxy_t *d = NULL;
    if (dmp_proxy_from_value(dmp_list_get(args, 0), &d))
        return 10;
    dmp_value_t *k = dmp_str("from"), *v = dmp_str(dmp_current_node());
    int rc = dmp_dict_set(d, k, v);
    dmp_value_destroy(&k);
    dmp_value_destroy(&v);
    /* a nested proxy: d["inner"] is a list proxy */
    dmp_value_t *ik = dmp_str("inner"), *iv = NULL;
    dmp_proxy_t *inner = NULL;
    if (rc == 0)
        rc = dmp_dict_get(d, ik, &iv);
    if (rc == 0)
        rc = dmp_proxy_from_value(iv, &inner);
    dmp_value_t *item = dmp_int(42);
    if (rc == 0)
        rc = dmp_mlist_append(inner, item);
    dmp_value_destroy(&item);
    dmp_value_destroy(&ik);
    dmp_value_destroy(&iv);
    dmp_proxy_destroy(&inner);
    dmp_proxy_destroy(&d);
    return rc ? 11 : 0;
}

/* args: [lock, sem, event]: takes the lock and a unit, sets the event,
 * and dies without releasing anything. */
DMP_TARGET(mgr_child_hold_and_die)
{
    dmp_proxy_t *l = NULL, *s = NULL, *e = NULL;
    if (dmp_proxy_from_value(dmp_list_get(args, 0), &l) ||
        dmp_proxy_from_value(dmp_list_get(args, 1), &s) ||
        dmp_proxy_from_value(dmp_list_get(args, 2), &e))
        return 10;
    if (dmp_mlock_acquire(l, 5.0) || dmp_mlock_acquire(s, 5.0) ||
        dmp_mevent_set(e))
        return 11;
    s_sleep(0.2);
    raise(SIGKILL);
    return 12;
}

/* args: [proxy, op]: one blocking call; exits with 100 + its code's
 * distance from the codes the parent expects (see s_code). */
static int
s_code(int rc)
{
    switch (rc) {
    case 0: return 0;
    case DMP_ENODE: return 1;
    case -ETIMEDOUT: return 2;
    case DMP_EBROKEN: return 3;
    case DMP_EOWNERDEAD: return 4;
    case DMP_EEMPTY: return 5;
    default: return 9;
    }
}

DMP_TARGET(mgr_child_block)
{
    dmp_proxy_t *p = NULL;
    const char *op = dmp_value_str(dmp_list_get(args, 1), NULL);
    if (!op || dmp_proxy_from_value(dmp_list_get(args, 0), &p))
        return 50;
    int rc;
    dmp_value_t *item = NULL;
    int64_t index = 0;
    if (strcmp(op, "acquire") == 0)
        rc = dmp_mlock_acquire(p, DMP_FOREVER);
    else if (strcmp(op, "event") == 0)
        rc = dmp_mevent_wait(p, DMP_FOREVER);
    else if (strcmp(op, "barrier") == 0)
        rc = dmp_mbarrier_wait(p, 30.0, &index);
    else if (strcmp(op, "get") == 0) {
        rc = dmp_mqueue_get(p, &item, DMP_FOREVER);
        if (rc == 0 && s_int_of(item) != 7)
            rc = -EINVAL;
        if (rc == 0)
            rc = dmp_mqueue_task_done(p);
    } else if (strcmp(op, "cond") == 0) {
        rc = dmp_mlock_acquire(p, 10.0);
        if (rc == 0)
            rc = dmp_mcond_notify(p, 1);
        if (rc == 0)
            rc = dmp_mlock_release(p);
    } else
        rc = -EINVAL;
    dmp_value_destroy(&item);
    dmp_proxy_destroy(&p);
    return s_code(rc);
}

/* args: [manager name, object name]: connects by name, looks up. */
DMP_TARGET(mgr_child_by_name)
{
    const char *mname = dmp_value_str(dmp_list_get(args, 0), NULL);
    const char *oname = dmp_value_str(dmp_list_get(args, 1), NULL);
    dmp_manager_t *m = NULL;
    dmp_proxy_t *d = NULL;
    if (!mname || !oname || dmp_manager_connect(mname, NULL, &m))
        return 20;
    int rc = dmp_manager_lookup(m, oname, &d);
    dmp_value_t *k = dmp_str("seen"), *v = dmp_bool(1);
    if (rc == 0)
        rc = dmp_dict_set(d, k, v);
    dmp_value_destroy(&k);
    dmp_value_destroy(&v);
    dmp_proxy_destroy(&d);
    dmp_manager_destroy(&m);
    return rc ? 21 : 0;
}

/* ---- tests, any mode ---------------------------------------------------- */

static dmp_manager_t *
s_manager(const char *name, const char *node)
{
    dmp_manager_opts_t o = {.name = name, .node = node};
    dmp_manager_t *m = NULL;
    assert_dmp_ok(dmp_manager_start(&o, &m));
    return m;
}

static void
test_dict_and_nested_proxy_from_a_child(void **state)
{
    (void)state;
    dmp_manager_t *m = s_manager(NULL, s_other(1));
    dmp_proxy_t *d = NULL, *l = NULL;
    assert_dmp_ok(dmp_manager_dict(m, NULL, NULL, &d));
    assert_dmp_ok(dmp_manager_list(m, NULL, NULL, &l));
    dmp_value_t *ik = dmp_str("inner"), *lv = dmp_proxy_value(l);
    assert_dmp_ok(dmp_dict_set(d, ik, lv));
    dmp_process_t *p = s_start("mgr_child_dict", s_other(2),
                               dmp_list_of(1, dmp_proxy_value(d)));
    assert_int_equal(s_join(&p), 0);
    dmp_value_t *k = dmp_str("from"), *v = NULL;
    assert_dmp_ok(dmp_dict_get(d, k, &v));
    if (s_c.cluster)
        assert_string_equal(dmp_value_str(v, NULL), s_c.names[2]);
    assert_int_equal(dmp_mlist_len(l), 1);
    char text[64];
    assert_true(dmp_proxy_repr(l, text, sizeof text) > 0);
    assert_string_equal(text, "[42]");
    /* Python's dict methods */
    dmp_value_t *missing = dmp_str("missing"), *dflt = dmp_int(3), *got = NULL;
    assert_dmp_err(dmp_dict_get(d, missing, &got), -ENOENT);
    assert_dmp_ok(dmp_dict_get_default(d, missing, dflt, &got));
    assert_int_equal(s_int_of(got), 3);
    dmp_value_destroy(&got);
    assert_int_equal(dmp_dict_contains(d, k), 1);
    assert_int_equal(dmp_dict_contains(d, missing), 0);
    assert_int_equal(dmp_dict_len(d), 2);
    dmp_value_t *upd = dmp_map();
    dmp_map_set_str(upd, "a", dmp_int(1));
    dmp_map_set_str(upd, "b", dmp_int(2));
    assert_dmp_ok(dmp_dict_update(d, upd));
    dmp_value_t *keys = NULL, *items = NULL, *vals = NULL;
    assert_dmp_ok(dmp_dict_keys(d, &keys));
    assert_dmp_ok(dmp_dict_values(d, &vals));
    assert_dmp_ok(dmp_dict_items(d, &items));
    assert_int_equal(dmp_value_len(keys), 4);
    assert_int_equal(dmp_value_len(vals), 4);
    assert_int_equal(dmp_value_len(dmp_list_get(items, 0)), 2);
    dmp_value_t *a = dmp_str("a");
    assert_dmp_ok(dmp_dict_pop(d, a, NULL, &got));
    assert_int_equal(s_int_of(got), 1);
    dmp_value_destroy(&got);
    assert_dmp_err(dmp_dict_pop(d, a, NULL, &got), -ENOENT);
    assert_dmp_ok(dmp_dict_pop(d, a, dflt, &got));
    assert_int_equal(s_int_of(got), 3);
    dmp_value_destroy(&got);
    assert_dmp_ok(dmp_dict_del(d, k));
    assert_dmp_err(dmp_dict_del(d, k), -ENOENT);
    dmp_value_t *bad = dmp_list();
    assert_dmp_err(dmp_dict_set(d, bad, dflt), -EINVAL); /* unhashable */
    assert_dmp_err(dmp_mlist_len(d), -EINVAL);           /* wrong type */
    assert_dmp_ok(dmp_dict_clear(d));
    assert_int_equal(dmp_dict_len(d), 0);
    dmp_value_t *vs[] = {ik, lv, k, v, missing, dflt, upd, keys, items, vals,
                         a, bad};
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++)
        dmp_value_destroy(&vs[i]);
    dmp_proxy_destroy(&d);
    dmp_proxy_destroy(&l);
    dmp_manager_destroy(&m);
}

static void
test_list_value_array_namespace(void **state)
{
    (void)state;
    dmp_manager_t *m = s_manager(NULL, NULL);
    dmp_value_t *r = dmp_list_range(0, 5), *got = NULL;
    dmp_proxy_t *l = NULL, *v = NULL, *a = NULL, *ns = NULL;
    assert_dmp_ok(dmp_manager_list(m, NULL, r, &l));
    dmp_value_t *x = dmp_int(9), *s = dmp_str("s");
    assert_dmp_ok(dmp_mlist_append(l, x));        /* 0 1 2 3 4 9 */
    assert_dmp_ok(dmp_mlist_insert(l, 0, x));     /* 9 0 1 2 3 4 9 */
    assert_dmp_ok(dmp_mlist_extend(l, r));        /* + 0 1 2 3 4 */
    assert_int_equal(dmp_mlist_len(l), 12);
    assert_int_equal(dmp_mlist_count(l, x), 2);
    assert_int_equal(dmp_mlist_index(l, x), 0);
    assert_dmp_err(dmp_mlist_index(l, s), -ENOENT);
    assert_dmp_ok(dmp_mlist_get(l, -1, &got));
    assert_int_equal(s_int_of(got), 4);
    dmp_value_destroy(&got);
    assert_dmp_err(dmp_mlist_get(l, 12, &got), -ERANGE);
    assert_dmp_ok(dmp_mlist_remove(l, x));        /* first 9 goes */
    assert_dmp_ok(dmp_mlist_pop(l, -1, &got));
    assert_int_equal(s_int_of(got), 4);
    dmp_value_destroy(&got);
    assert_dmp_ok(dmp_mlist_del_slice(l, 5, DMP_END)); /* 0 1 2 3 4 */
    assert_dmp_ok(dmp_mlist_set_slice(l, 1, 3, r));    /* 0 0..4 3 4 */
    assert_dmp_ok(dmp_mlist_get_slice(l, -3, DMP_END, &got));
    char text[128];
    dmp_value_repr(got, text, sizeof text);
    assert_string_equal(text, "[4, 3, 4]");
    dmp_value_destroy(&got);
    assert_dmp_ok(dmp_mlist_sort(l, 1));
    assert_dmp_ok(dmp_mlist_copy(l, &got));
    dmp_value_repr(got, text, sizeof text);
    assert_string_equal(text, "[4, 4, 3, 3, 2, 1, 0, 0]");
    dmp_value_destroy(&got);
    assert_dmp_ok(dmp_mlist_set(l, 0, s));
    assert_dmp_err(dmp_mlist_sort(l, 0), -EINVAL); /* str < int: TypeError */
    assert_dmp_ok(dmp_mlist_del(l, 0));
    /* Value and Array check their typecode */
    dmp_value_t *five = dmp_int(5), *big = dmp_int(1ll << 40);
    assert_dmp_err(dmp_manager_value(m, NULL, 'z', five, &v), -EINVAL);
    assert_dmp_ok(dmp_manager_value(m, NULL, 'i', five, &v));
    assert_true(dmp_proxy_repr(v, text, sizeof text) > 0);
    assert_string_equal(text, "Value('i', 5)");
    assert_dmp_err(dmp_mvalue_set(v, big), -ERANGE);
    assert_dmp_err(dmp_mvalue_set(v, s), -EINVAL);
    assert_dmp_ok(dmp_mvalue_set(v, x));
    assert_dmp_ok(dmp_mvalue_get(v, &got));
    assert_int_equal(s_int_of(got), 9);
    dmp_value_destroy(&got);
    assert_dmp_ok(dmp_manager_array(m, NULL, 'd', r, &a));
    assert_int_equal(dmp_marray_len(a), 5);
    assert_dmp_ok(dmp_marray_set(a, 1, x));
    assert_dmp_ok(dmp_marray_tolist(a, &got));
    dmp_value_repr(got, text, sizeof text);
    assert_string_equal(text, "[0.0, 9.0, 2.0, 3.0, 4.0]");
    dmp_value_destroy(&got);
    assert_dmp_err(dmp_marray_get(a, 5, &got), -ERANGE);
    /* Namespace */
    assert_dmp_ok(dmp_manager_namespace(m, NULL, &ns));
    assert_dmp_ok(dmp_namespace_set(ns, "x", x));
    assert_dmp_ok(dmp_namespace_get(ns, "x", &got));
    assert_int_equal(s_int_of(got), 9);
    dmp_value_destroy(&got);
    assert_dmp_err(dmp_namespace_get(ns, "y", &got), -ENOENT);
    assert_true(dmp_proxy_repr(ns, text, sizeof text) > 0);
    assert_string_equal(text, "Namespace(x=9)");
    assert_dmp_ok(dmp_namespace_del(ns, "x"));
    dmp_value_t *vs[] = {r, x, s, five, big};
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++)
        dmp_value_destroy(&vs[i]);
    dmp_proxy_destroy(&l);
    dmp_proxy_destroy(&v);
    dmp_proxy_destroy(&a);
    dmp_proxy_destroy(&ns);
    dmp_manager_destroy(&m);
}

static void
test_locks_semaphores_and_timeouts(void **state)
{
    (void)state;
    dmp_manager_t *m = s_manager(NULL, NULL);
    dmp_proxy_t *l = NULL, *rl = NULL, *bs = NULL;
    assert_dmp_ok(dmp_manager_lock(m, NULL, &l));
    assert_dmp_ok(dmp_manager_rlock(m, NULL, &rl));
    assert_dmp_ok(dmp_manager_bounded_semaphore(m, NULL, 1, &bs));
    assert_dmp_err(dmp_mlock_release(l), -EPERM);
    assert_dmp_ok(dmp_mlock_acquire(l, DMP_FOREVER));
    double t0 = dmp_test_now();
    assert_dmp_err(dmp_mlock_acquire(l, 0.3), -ETIMEDOUT);
    double took = dmp_test_now() - t0;
    assert_true(took >= 0.3 && took < 0.3 + 0.2);
    assert_dmp_err(dmp_mlock_acquire(l, 0), -ETIMEDOUT);
    assert_dmp_ok(dmp_mlock_release(l));
    assert_dmp_ok(dmp_mlock_acquire(rl, 1.0));
    assert_dmp_ok(dmp_mlock_acquire(rl, 1.0)); /* re-entrant */
    assert_dmp_ok(dmp_mlock_release(rl));
    assert_dmp_ok(dmp_mlock_release(rl));
    assert_dmp_err(dmp_mlock_release(rl), -EPERM);
    assert_dmp_err(dmp_mlock_release(bs), -EINVAL); /* released too often */
    assert_dmp_ok(dmp_mlock_acquire(bs, 0));
    assert_int_equal(dmp_msem_value(bs), 0);
    assert_dmp_err(dmp_mlock_acquire(bs, 0.05), -ETIMEDOUT);
    assert_dmp_ok(dmp_mlock_release(bs));
    dmp_proxy_destroy(&l);
    dmp_proxy_destroy(&rl);
    dmp_proxy_destroy(&bs);
    dmp_manager_destroy(&m);
}

/* A child blocked in each kind of wait is woken by the parent. */
static void
test_blocked_calls_are_woken_by_another_process(void **state)
{
    (void)state;
    dmp_manager_t *m = s_manager(NULL, s_other(1));
    dmp_proxy_t *l = NULL, *e = NULL, *b = NULL, *q = NULL, *c = NULL;
    assert_dmp_ok(dmp_manager_lock(m, NULL, &l));
    assert_dmp_ok(dmp_manager_event(m, NULL, &e));
    assert_dmp_ok(dmp_manager_barrier(m, NULL, 2, &b));
    assert_dmp_ok(dmp_manager_queue(m, NULL, 0, &q));
    assert_dmp_ok(dmp_manager_condition(m, NULL, NULL, &c));
    assert_dmp_ok(dmp_mlock_acquire(l, 1.0));
    dmp_process_t *pl = s_start("mgr_child_block", s_other(2),
                                dmp_list_of(2, dmp_proxy_value(l),
                                            dmp_str("acquire")));
    dmp_process_t *pe = s_start("mgr_child_block", s_other(2),
                                dmp_list_of(2, dmp_proxy_value(e),
                                            dmp_str("event")));
    dmp_process_t *pb = s_start("mgr_child_block", s_other(0),
                                dmp_list_of(2, dmp_proxy_value(b),
                                            dmp_str("barrier")));
    dmp_process_t *pq = s_start("mgr_child_block", s_other(1),
                                dmp_list_of(2, dmp_proxy_value(q),
                                            dmp_str("get")));
    s_sleep(0.3); /* they block (not needed for correctness) */
    assert_int_equal(dmp_process_is_alive(pl), 1);
    assert_dmp_ok(dmp_mlock_release(l));
    assert_int_equal(s_join(&pl), 0);
    assert_dmp_ok(dmp_mevent_set(e));
    assert_int_equal(dmp_mevent_is_set(e), 1);
    assert_int_equal(s_join(&pe), 0);
    int64_t index = -1;
    assert_dmp_ok(dmp_mbarrier_wait(b, 10.0, &index));
    assert_true(index == 0 || index == 1);
    assert_int_equal(s_join(&pb), 0);
    dmp_value_t *seven = dmp_int(7);
    assert_dmp_ok(dmp_mqueue_put(q, seven, 1.0));
    assert_dmp_ok(dmp_mqueue_join(q, 10.0)); /* the child's task_done */
    assert_int_equal(s_join(&pq), 0);
    dmp_value_t *got = NULL;
    assert_dmp_err(dmp_mqueue_get(q, &got, 0.1), DMP_EEMPTY);
    /* Condition: we wait, a child notifies. */
    assert_dmp_ok(dmp_mlock_acquire(c, 1.0));
    assert_dmp_err(dmp_mcond_wait(c, 0.1), -ETIMEDOUT); /* lock held again */
    dmp_process_t *pc = s_start("mgr_child_block", s_other(2),
                                dmp_list_of(2, dmp_proxy_value(c),
                                            dmp_str("cond")));
    assert_dmp_ok(dmp_mcond_wait(c, 20.0));
    assert_dmp_ok(dmp_mlock_release(c));
    assert_int_equal(s_join(&pc), 0);
    /* A barrier timeout breaks it for the others. */
    assert_dmp_err(dmp_mbarrier_wait(b, 0.1, NULL), -ETIMEDOUT);
    assert_int_equal(dmp_mbarrier_broken(b), 1);
    assert_dmp_err(dmp_mbarrier_wait(b, 0.1, NULL), DMP_EBROKEN);
    assert_dmp_ok(dmp_mbarrier_reset(b));
    assert_int_equal(dmp_mbarrier_parties(b), 2);
    dmp_value_destroy(&seven);
    dmp_proxy_destroy(&l);
    dmp_proxy_destroy(&e);
    dmp_proxy_destroy(&b);
    dmp_proxy_destroy(&q);
    dmp_proxy_destroy(&c);
    dmp_manager_destroy(&m);
}

static void
test_a_killed_client_releases_its_lock_and_semaphore(void **state)
{
    (void)state;
    dmp_manager_t *m = s_manager(NULL, NULL);
    dmp_proxy_t *l = NULL, *s = NULL, *e = NULL;
    assert_dmp_ok(dmp_manager_lock(m, NULL, &l));
    assert_dmp_ok(dmp_manager_semaphore(m, NULL, 1, &s));
    assert_dmp_ok(dmp_manager_event(m, NULL, &e));
    dmp_process_t *p = s_start("mgr_child_hold_and_die", s_other(1),
                               dmp_list_of(3, dmp_proxy_value(l),
                                           dmp_proxy_value(s),
                                           dmp_proxy_value(e)));
    assert_dmp_ok(dmp_mevent_wait(e, 20.0)); /* it holds both now */
    assert_int_equal(s_join(&p), -SIGKILL);
    /* The next acquirer gets them, with DMP_EOWNERDEAD once. */
    double within = s_c.cluster ? LEASE_WITHIN : 5.0;
    assert_dmp_err(dmp_mlock_acquire(l, within), DMP_EOWNERDEAD);
    assert_dmp_err(dmp_mlock_acquire(s, within), DMP_EOWNERDEAD);
    assert_dmp_ok(dmp_mlock_release(l));
    assert_dmp_ok(dmp_mlock_acquire(l, 1.0));
    assert_dmp_ok(dmp_mlock_release(l));
    assert_dmp_ok(dmp_mlock_release(s));
    dmp_proxy_destroy(&l);
    dmp_proxy_destroy(&s);
    dmp_proxy_destroy(&e);
    dmp_manager_destroy(&m);
}

static void
test_named_manager_and_objects_are_found_by_another_process(void **state)
{
    (void)state;
    char name[64];
    snprintf(name, sizeof name, "mgr-%d-named", (int)getpid());
    dmp_manager_t *m = s_manager(name, s_other(1));
    dmp_manager_opts_t o = {.name = name};
    dmp_manager_t *twice = NULL;
    assert_dmp_err(dmp_manager_start(&o, &twice), -EEXIST);
    dmp_proxy_t *d = NULL, *d2 = NULL;
    assert_dmp_ok(dmp_manager_dict(m, "shared", NULL, &d));
    assert_dmp_err(dmp_manager_dict(m, "shared", NULL, &d2), -EEXIST);
    dmp_process_t *p = s_start("mgr_child_by_name", s_other(2),
                               dmp_list_of(2, dmp_str(name),
                                           dmp_str("shared")));
    assert_int_equal(s_join(&p), 0);
    dmp_value_t *k = dmp_str("seen"), *v = NULL;
    assert_dmp_ok(dmp_dict_get(d, k, &v));
    dmp_value_destroy(&k);
    dmp_value_destroy(&v);
    assert_dmp_err(dmp_manager_connect("no-such-manager", NULL, &twice),
                   -ENOENT);
    dmp_proxy_destroy(&d);
    dmp_manager_destroy(&m);
}

/* A killed server: calls fail with DMP_ENODE, a blocked one too, never a
 * hang; a connection by name reaches the restarted server. */
static void
test_dead_manager_gives_enode_and_a_restart_is_reached(void **state)
{
    (void)state;
    char name[64];
    snprintf(name, sizeof name, "mgr-%d-restart", (int)getpid());
    dmp_manager_t *m = s_manager(name, s_other(1));
    dmp_manager_t *byname = NULL;
    assert_dmp_ok(dmp_manager_connect(name, NULL, &byname));
    dmp_proxy_t *l = NULL, *l2 = NULL;
    assert_dmp_ok(dmp_manager_lock(byname, NULL, &l));
    assert_dmp_ok(dmp_mlock_acquire(l, 1.0));
    dmp_process_t *blocked = s_start("mgr_child_block", s_other(2),
                                     dmp_list_of(2, dmp_proxy_value(l),
                                                 dmp_str("acquire")));
    s_sleep(0.3);
    assert_dmp_ok(dmp_manager_shutdown(m)); /* stopped under its clients */
    double t0 = dmp_test_now();
    assert_int_equal(s_join(&blocked), 1);  /* DMP_ENODE in the child */
    assert_true(dmp_test_now() - t0 < ENODE_WITHIN + 2);
    assert_dmp_err(dmp_mlock_release(l), DMP_ENODE);
    assert_contains(dmp_manager_errmsg(byname), name);
    dmp_manager_destroy(&m);
    /* The same name again: the connection by name follows it. */
    m = s_manager(name, s_other(2));
    assert_dmp_ok(dmp_manager_lock(byname, NULL, &l2));
    assert_dmp_ok(dmp_mlock_acquire(l2, 1.0));
    assert_dmp_ok(dmp_mlock_release(l2));
    assert_dmp_err(dmp_mlock_release(l), DMP_ENODE); /* old proxies stay dead */
    dmp_proxy_destroy(&l);
    dmp_proxy_destroy(&l2);
    dmp_manager_destroy(&byname);
    dmp_manager_destroy(&m);
}

/* The server's pid, from a proxy's value: 'M', then the encoded list
 * [address, object, type, typecode]; the address's third item. */
static pid_t
s_server_pid(const dmp_proxy_t *p)
{
    dmp_value_t *v = dmp_proxy_value(p), *l = NULL;
    size_t len = 0;
    const uint8_t *data = dmp__handle_data(v, &len);
    assert_non_null(data);
    assert_dmp_ok(dmp_value_decode(data + 1, len - 1, &l));
    pid_t pid = (pid_t)s_int_of(dmp_list_get(dmp_list_get(l, 0), 2));
    dmp_value_destroy(&l);
    dmp_value_destroy(&v);
    return pid;
}

/* The server killed with SIGKILL: a call blocked in it and the next ones
 * return DMP_ENODE, within a bound. */
static void
test_killed_server_gives_enode_never_a_hang(void **state)
{
    (void)state;
    dmp_manager_t *m = s_manager(NULL, s_other(1));
    dmp_proxy_t *e = NULL;
    assert_dmp_ok(dmp_manager_event(m, NULL, &e));
    dmp_process_t *p = s_start("mgr_child_block", s_other(2),
                               dmp_list_of(2, dmp_proxy_value(e),
                                           dmp_str("event")));
    s_sleep(0.3);
    pid_t pid = s_server_pid(e); /* every node of these tests is this host */
    assert_true(pid > 0);
    assert_int_equal(kill(pid, SIGKILL), 0);
    double t0 = dmp_test_now();
    assert_int_equal(s_join(&p), 1); /* DMP_ENODE in the child */
    assert_dmp_err(dmp_mevent_set(e), DMP_ENODE);
    assert_true(dmp_test_now() - t0 < ENODE_WITHIN);
    assert_contains(dmp_manager_errmsg(m), "gone");
    dmp_proxy_destroy(&e);
    dmp_manager_destroy(&m);
}

/* ---- outside the cluster ------------------------------------------------ */

static int
s_outside_main(const char *address, const char *key)
{
    dmp_manager_t *m = NULL;
    int rc = dmp_manager_connect(address, key, &m);
    if (rc) {
        fprintf(stderr, "outside: connect: %s\n", dmp_strerror(rc));
        return 30;
    }
    dmp_proxy_t *d = NULL;
    rc = dmp_manager_lookup(m, "shared", &d);
    dmp_value_t *k = dmp_str("outside"), *v = dmp_bool(1);
    if (rc == 0)
        rc = dmp_dict_set(d, k, v);
    dmp_value_destroy(&k);
    dmp_value_destroy(&v);
    dmp_proxy_destroy(&d);
    dmp_manager_destroy(&m);
    dmp_fini();
    return rc ? 31 : 0;
}

static int
s_run_outside(const char *address, const char *key, const char *server_key)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(n > 0);
    self[n] = '\0';
    char sk[PATH_MAX + 32];
    snprintf(sk, sizeof sk, "DMP_SERVER_KEY=%s", server_key);
    char *env[] = {sk, "PATH=/usr/bin:/bin", NULL};
    char *argv[] = {self, "--outside", (char *)address, (char *)key, NULL};
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, self, NULL, NULL, argv, env), 0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void
test_outside_program_connects_by_address_and_key(void **state)
{
    (void)state;
    char name[64];
    snprintf(name, sizeof name, "mgr-%d-outside", (int)getpid());
    dmp_manager_t *m = s_manager(name, s_other(1));
    dmp_proxy_t *d = NULL;
    assert_dmp_ok(dmp_manager_dict(m, "shared", NULL, &d));
    char address[256];
    /* through node3, which knows nothing of the manager but its name */
    snprintf(address, sizeof address, "%s@%s", name, s_c.agents[2]->address);
    assert_int_equal(s_run_outside(address, s_c.sb->client_key,
                                   s_c.agents[2]->pub_file), 0);
    dmp_value_t *k = dmp_str("outside"), *v = NULL;
    assert_dmp_ok(dmp_dict_get(d, k, &v));
    dmp_value_destroy(&k);
    dmp_value_destroy(&v);
    /* an unknown key is refused */
    char other[PATH_MAX];
    assert_dmp_ok(dmp_test_sandbox_key(s_c.sb, "stranger", false, other));
    assert_int_equal(s_run_outside(address, other, s_c.agents[2]->pub_file),
                     30);
    dmp_proxy_destroy(&d);
    dmp_manager_destroy(&m);
}

/* ---- fixture ------------------------------------------------------------ */

static int
s_shm_count(const char *prefix)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "ls /dev/shm 2>/dev/null | grep -c '^%s'",
             prefix);
    FILE *f = popen(cmd, "r");
    int n = 0;
    if (f) {
        if (fscanf(f, "%d", &n) != 1)
            n = 0;
        pclose(f);
    }
    return n;
}

static int
s_up_embedded(void **state)
{
    (void)state;
    s_c.cluster = false;
    char err[512] = "";
    int rc = dmp_init_opts(NULL, err, sizeof err);
    if (rc)
        print_error("dmp_init: %s\n", err);
    assert_dmp_ok(rc);
    return 0;
}

static int
s_up_cluster(void **state)
{
    (void)state;
    s_c.cluster = true;
    assert_dmp_ok(dmp_test_sandbox_new(&s_c.sb));
    for (size_t i = 0; i < 3; i++) {
        snprintf(s_c.names[i], sizeof s_c.names[i], "m%d-node%zu",
                 (int)getpid(), i + 1);
        assert_dmp_ok(dmp_test_agent_new(s_c.sb, s_c.names[i],
                                         &s_c.agents[i]));
        s_c.agents[i]->heartbeat = 0.5;
        s_c.agents[i]->liveness = 4;
    }
    dmp_test_agents_mesh(s_c.agents, 3);
    assert_dmp_ok(dmp_test_agents_start(s_c.agents, 3));
    assert_dmp_ok(dmp_test_init_ipc(s_c.agents[0]));
    return 0;
}

static int
s_down(void **state)
{
    (void)state;
    dmp_fini();
    if (s_c.sb) {
        for (size_t i = 0; i < 3; i++)
            if (s_c.agents[i] && dmp_test_agent_is_running(s_c.agents[i]))
                dmp_test_agent_stop(s_c.agents[i], 5.0);
        dmp_test_sandbox_destroy(&s_c.sb);
        char prefix[80];
        for (size_t i = 0; i < 3; i++) {
            snprintf(prefix, sizeof prefix, "dmp-%s-", s_c.names[i]);
            if (s_shm_count(prefix) != 0)
                print_error("segments of %s left in /dev/shm\n",
                            s_c.names[i]);
        }
    }
    memset(&s_c, 0, sizeof s_c);
    return 0;
}

static void
test_nothing_left_behind(void **state)
{
    (void)state;
    assert_int_equal(dmp_test_agents_running(), 0);
}

int
main(int argc, char **argv)
{
    if (getenv("DMP_CHILD") || getenv("DMP_ZYGOTE"))
        dmp_init();
    if (argc == 4 && strcmp(argv[1], "--outside") == 0)
        return s_outside_main(argv[2], argv[3]);
    unsetenv("DMP_PLACE");
    unsetenv("DMP_AGENT");
    unsetenv("DMP_CLUSTER");
    dmp_test_init(280);
#define COMMON                                                               \
    cmocka_unit_test(test_dict_and_nested_proxy_from_a_child),               \
        cmocka_unit_test(test_list_value_array_namespace),                   \
        cmocka_unit_test(test_locks_semaphores_and_timeouts),                \
        cmocka_unit_test(test_blocked_calls_are_woken_by_another_process),   \
        cmocka_unit_test(                                                    \
            test_a_killed_client_releases_its_lock_and_semaphore),           \
        cmocka_unit_test(                                                    \
            test_named_manager_and_objects_are_found_by_another_process),    \
        cmocka_unit_test(                                                    \
            test_dead_manager_gives_enode_and_a_restart_is_reached),         \
        cmocka_unit_test(test_killed_server_gives_enode_never_a_hang)
    const struct CMUnitTest one_host[] = {COMMON};
    const struct CMUnitTest cluster[] = {
        COMMON,
        cmocka_unit_test(test_outside_program_connects_by_address_and_key),
    };
    const struct CMUnitTest after[] = {
        cmocka_unit_test(test_nothing_left_behind),
    };
    if (getenv("DMP_TEST_FILTER"))
        cmocka_set_test_filter(getenv("DMP_TEST_FILTER"));
    const char *only = getenv("DMP_TEST_GROUPS");
    int failed = 0;
    if (!only || strstr("one host", only))
        failed += cmocka_run_group_tests_name("one host", one_host,
                                              s_up_embedded, s_down);
    if (!only || strstr("cluster", only))
        failed += cmocka_run_group_tests_name("cluster", cluster,
                                              s_up_cluster, s_down);
    failed += cmocka_run_group_tests_name("afterwards", after, NULL, NULL);
    return failed ? 1 : 0;
}
