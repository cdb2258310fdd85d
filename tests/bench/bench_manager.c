/*
 * bench_manager.c - the Manager, as DESIGN.md §8 asks: dict set/get from
 * a child (target >= 5x Python's Manager dict, measured by py_manager.py
 * in the same run) and connecting to a manager on another node (target
 * <= 10 ms; Python's BaseManager.connect() about 221 ms).
 *
 * Prints `name value unit` lines:
 *   manager_dict_setget_child         set or get calls per second, from a
 *                                     child on the server's host
 *   manager_dict_setget_child_remote  the same from a child on another node
 *   manager_connect_remote_median     dmp_manager_connect by name to a
 *                                     manager on another node + destroy, ms
 */
#define _GNU_SOURCE
#include <dmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define OPS 20000
#define REMOTE_OPS 2000
#define CONNECTS 30

static double
s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
s_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* args: [dict proxy, ops]: d[i % 100] = i; d[i % 100], timed; the rate
 * goes back in d["rate"]. */
DMP_TARGET(setget)
{
    dmp_proxy_t *d = NULL;
    int64_t ops = 0;
    if (dmp_proxy_from_value(dmp_list_get(args, 0), &d) ||
        dmp_value_get_int(dmp_list_get(args, 1), &ops))
        return 1;
    int rc = 0;
    double t0 = s_now();
    for (int64_t i = 0; rc == 0 && i < ops; i += 2) {
        dmp_value_t *k = dmp_int(i % 100), *v = dmp_int(i), *got = NULL;
        rc = dmp_dict_set(d, k, v);
        if (rc == 0)
            rc = dmp_dict_get(d, k, &got);
        dmp_value_destroy(&k);
        dmp_value_destroy(&v);
        dmp_value_destroy(&got);
    }
    double rate = ops / (s_now() - t0);
    dmp_value_t *k = dmp_str("rate"), *v = dmp_double(rate);
    if (rc == 0)
        rc = dmp_dict_set(d, k, v);
    dmp_value_destroy(&k);
    dmp_value_destroy(&v);
    dmp_proxy_destroy(&d);
    return rc != 0;
}

static double
s_child_rate(dmp_proxy_t *d, const char *node, int64_t ops)
{
    dmp_value_t *args = dmp_list_of(2, dmp_proxy_value(d), dmp_int(ops));
    dmp_process_opts_t o = {.target = "setget", .node = node, .args = args};
    dmp_process_t *p = NULL;
    int code = -1;
    int rc = dmp_process_new(&o, &p);
    if (rc == 0)
        rc = dmp_process_start(p);
    if (rc == 0)
        rc = dmp_process_join(p, 60);
    if (rc == 0)
        dmp_process_exitcode(p, &code);
    dmp_process_destroy(&p);
    dmp_value_destroy(&args);
    dmp_value_t *k = dmp_str("rate"), *v = NULL;
    double rate = -1;
    if (rc == 0 && code == 0 && dmp_dict_get(d, k, &v) == 0)
        dmp_value_get_double(v, &rate);
    dmp_value_destroy(&k);
    dmp_value_destroy(&v);
    return rate;
}

/* A node other than ours, or NULL. */
static const char *
s_other_node(char *buf, size_t size)
{
    dmp_node_info_t *nodes = NULL;
    size_t n = 0;
    const char *found = NULL;
    if (dmp_nodes(&nodes, &n) == 0) {
        for (size_t i = 1; i < n && !found; i++) /* [0] is ours */
            if (nodes[i].state == DMP_NODE_ALIVE) {
                snprintf(buf, size, "%s", nodes[i].name);
                found = buf;
            }
        dmp_nodes_free(&nodes);
    }
    return found;
}

int
main(void)
{
    int rc = dmp_init();
    if (rc) {
        fprintf(stderr, "bench_manager: %s\n", dmp_strerror(rc));
        return 1;
    }
    int status = 0;
    char other[64];
    const char *remote = s_other_node(other, sizeof other);
    dmp_manager_t *m = NULL;
    dmp_proxy_t *d = NULL;
    rc = dmp_manager_start(NULL, &m);
    if (rc == 0)
        rc = dmp_manager_dict(m, NULL, NULL, &d);
    if (rc == 0) {
        /* a warm-up round: the first child of a fresh cluster starts the
         * node's zygote and pages the program in */
        s_child_rate(d, "local", OPS / 10);
        double rate = s_child_rate(d, "local", OPS);
        if (rate > 0)
            printf("manager_dict_setget_child %.0f op/s\n", rate);
        else
            status = 1;
        if (remote) {
            rate = s_child_rate(d, remote, REMOTE_OPS);
            if (rate > 0)
                printf("manager_dict_setget_child_remote %.0f op/s\n", rate);
            else
                status = 1;
        }
    } else {
        fprintf(stderr, "bench_manager: %s\n", dmp_strerror(rc));
        status = 1;
    }
    dmp_proxy_destroy(&d);
    dmp_manager_destroy(&m);

    /* Connect by name to a manager on another node. */
    if (remote) {
        char name[64];
        snprintf(name, sizeof name, "bench-%d", (int)getpid());
        dmp_manager_opts_t o = {.name = name, .node = remote};
        rc = dmp_manager_start(&o, &m);
        double t[CONNECTS];
        int got = 0;
        for (int i = -2; rc == 0 && i < CONNECTS; i++) {
            dmp_manager_t *c = NULL;
            double t0 = s_now();
            rc = dmp_manager_connect(name, NULL, &c);
            /* a new connection each time: a different process would
             * have none; this one drops it right away */
            dmp_manager_destroy(&c);
            if (i >= 0)
                t[got++] = (s_now() - t0) * 1000;
        }
        if (rc) {
            fprintf(stderr, "bench_manager: manager on %s: %s (%s)\n", remote,
                    dmp_strerror(rc),
                    dmp_client_errmsg(dmp_default_client()));
            status = 1;
        } else {
            qsort(t, (size_t)got, sizeof t[0], s_cmp);
            printf("manager_connect_remote_median %.3f ms\n", t[got / 2]);
        }
        dmp_manager_destroy(&m);
    }
    dmp_fini();
    return status;
}
