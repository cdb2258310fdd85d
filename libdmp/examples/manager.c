/*
 * manager.c - the guide's Manager program: a server process holds a
 * Value, an Array, a list and a dict; a child prints them through proxies
 * and changes them; the parent prints the changed objects.
 *
 *   build/examples/manager                      on a private local node
 *   DMP_PLACE=spread build/examples/manager     over a cluster (. DIR/env)
 */
#include <dmp.h>
#include <stdio.h>

/* print_array_or_list: "[name] num list[i] : value" for each item. */
static void
print_array_or_list(const char *name, const dmp_value_t *values)
{
    for (size_t i = 0; i < dmp_value_len(values); i++) {
        char text[64];
        dmp_value_repr(dmp_list_get(values, (int64_t)i), text, sizeof text);
        printf("[%s] num list[%zu] : %s\n", name, i, text);
    }
}

/* print ("[%s] value : %s, dict : %s" % (name, v, d["key"])) and the
 * array and list. */
static int
print_all(const char *name, dmp_proxy_t *v, dmp_proxy_t *a, dmp_proxy_t *l,
          dmp_proxy_t *d)
{
    char value[64];
    dmp_value_t *key = dmp_str("key"), *item = NULL, *al = NULL, *ll = NULL;
    int rc = dmp_proxy_repr(v, value, sizeof value);
    if (rc >= 0)
        rc = dmp_dict_get(d, key, &item);
    if (rc == 0)
        rc = dmp_marray_tolist(a, &al);
    if (rc == 0)
        rc = dmp_mlist_copy(l, &ll);
    if (rc == 0) {
        printf("[%s] value : %s, dict : %s\n", name, value,
               dmp_value_str(item, NULL));
        print_array_or_list(name, al);
        print_array_or_list(name, ll);
    }
    dmp_value_destroy(&key);
    dmp_value_destroy(&item);
    dmp_value_destroy(&al);
    dmp_value_destroy(&ll);
    return rc;
}

/* Multiplies every item of an Array or list proxy by 10, one by one. */
static int
times_ten(dmp_proxy_t *p, int is_array)
{
    int64_t n = is_array ? dmp_marray_len(p) : dmp_mlist_len(p);
    int rc = n < 0 ? (int)n : 0;
    for (int64_t i = 0; rc == 0 && i < n; i++) {
        dmp_value_t *item = NULL;
        int64_t x = 0;
        rc = is_array ? dmp_marray_get(p, i, &item) : dmp_mlist_get(p, i, &item);
        if (rc == 0 && dmp_value_get_int(item, &x) == 0) {
            dmp_value_t *ten = dmp_int(x * 10);
            rc = is_array ? dmp_marray_set(p, i, ten) : dmp_mlist_set(p, i, ten);
            dmp_value_destroy(&ten);
        }
        dmp_value_destroy(&item);
    }
    return rc;
}

DMP_TARGET(worker)
{
    dmp_proxy_t *v = NULL, *a = NULL, *l = NULL, *d = NULL;
    int rc = dmp_proxy_from_value(dmp_list_get(args, 0), &v);
    if (rc == 0)
        rc = dmp_proxy_from_value(dmp_list_get(args, 1), &a);
    if (rc == 0)
        rc = dmp_proxy_from_value(dmp_list_get(args, 2), &l);
    if (rc == 0)
        rc = dmp_proxy_from_value(dmp_list_get(args, 3), &d);
    if (rc == 0)
        rc = print_all(dmp_current_process_name(), v, a, l, d);
    dmp_value_t *fifty = dmp_int(50), *key = dmp_str("key"),
                *py3 = dmp_str("Python3");
    if (rc == 0)
        rc = dmp_mvalue_set(v, fifty); /* v.value = 50 */
    if (rc == 0)
        rc = times_ten(a, 1);
    if (rc == 0)
        rc = times_ten(l, 0);
    if (rc == 0)
        rc = dmp_dict_set(d, key, py3); /* d["key"] = "Python3" */
    if (rc)
        fprintf(stderr, "worker: %s\n", dmp_strerror(rc));
    dmp_value_destroy(&fifty);
    dmp_value_destroy(&key);
    dmp_value_destroy(&py3);
    dmp_proxy_destroy(&v);
    dmp_proxy_destroy(&a);
    dmp_proxy_destroy(&l);
    dmp_proxy_destroy(&d);
    return rc != 0;
}

int
main(void)
{
    int rc = dmp_init(); /* in a child, this runs its target instead */
    dmp_manager_t *manager = NULL;
    dmp_proxy_t *v = NULL, *a = NULL, *l = NULL, *d = NULL;
    dmp_value_t *five = dmp_int(5), *range = dmp_list_range(0, 10);
    dmp_value_t *key = dmp_str("key"), *py2 = dmp_str("Python2");
    if (rc == 0)
        rc = dmp_manager_start(NULL, &manager); /* multiprocessing.Manager() */
    if (rc == 0)
        rc = dmp_manager_value(manager, NULL, 'i', five, &v);
    if (rc == 0)
        rc = dmp_manager_array(manager, NULL, 'i', range, &a);
    if (rc == 0)
        rc = dmp_manager_list(manager, NULL, range, &l);
    if (rc == 0)
        rc = dmp_manager_dict(manager, NULL, NULL, &d);
    if (rc == 0)
        rc = dmp_dict_set(d, key, py2); /* d["key"] = "Python2" */
    if (rc) {
        fprintf(stderr, "manager: %s\n", dmp_strerror(rc));
        return 1;
    }
    dmp_value_t *args = dmp_list_of(4, dmp_proxy_value(v), dmp_proxy_value(a),
                                    dmp_proxy_value(l), dmp_proxy_value(d));
    dmp_process_t *p = NULL;
    dmp_process_opts_t o = {.name = "worker", .target = "worker",
                            .args = args};
    int code = 1;
    if ((rc = dmp_process_new(&o, &p)) == 0 &&
        (rc = dmp_process_start(p)) == 0 &&
        (rc = dmp_process_join(p, DMP_FOREVER)) == 0)
        dmp_process_exitcode(p, &code);
    if (rc)
        fprintf(stderr, "manager: cannot run the worker: %s\n",
                dmp_strerror(rc));
    if (rc == 0 && (rc = print_all("main", v, a, l, d)) != 0)
        fprintf(stderr, "manager: %s\n", dmp_strerror(rc));
    dmp_process_destroy(&p);
    dmp_value_destroy(&args);
    dmp_value_destroy(&five);
    dmp_value_destroy(&range);
    dmp_value_destroy(&key);
    dmp_value_destroy(&py2);
    dmp_proxy_destroy(&v);
    dmp_proxy_destroy(&a);
    dmp_proxy_destroy(&l);
    dmp_proxy_destroy(&d);
    dmp_manager_destroy(&manager); /* shuts the server down */
    dmp_fini();
    return rc || code;
}
