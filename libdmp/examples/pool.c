/*
 * pool.c - the guide's Pool program: four workers, each greets once from
 * its initializer; map doubles 0..9, a second per item; about 3 s.
 *
 *   build/examples/pool                         on a private local node
 *   DMP_PLACE=spread build/examples/pool        over a cluster (. DIR/env)
 */
#include <dmp.h>
#include <stdio.h>
#include <unistd.h>

DMP_TARGET(print_initial_msg) /* the initializer: once in each worker */
{
    (void)args;
    printf("Start process : %s\n", dmp_current_process_name());
    fflush(stdout);
    return 0;
}

DMP_TASK(worker)
{
    int64_t x;
    if (dmp_value_get_int(arg, &x) != 0)
        return -22; /* -EINVAL: not an int */
    sleep(1);
    printf("[%s] data : %lld\n", dmp_current_process_name(), (long long)x);
    fflush(stdout);
    *result = dmp_int(x * 2);
    return 0;
}

int
main(void)
{
    int rc = dmp_init(); /* in a worker, this runs it instead */
    dmp_pool_t *pool = NULL;
    if (rc == 0)
        rc = dmp_pool_new(&(dmp_pool_opts_t){.processes = 4,
                                             .initializer =
                                                 "print_initial_msg"},
                          &pool);
    dmp_value_t *items = dmp_list_range(0, 10), *result = NULL;
    if (rc == 0)
        rc = dmp_pool_map(pool, "worker", items, 0, &result);
    if (rc == 0) {
        dmp_pool_close(pool);
        dmp_pool_join(pool, DMP_FOREVER);
        char text[256];
        dmp_value_repr(result, text, sizeof text);
        printf("Result : %s\n", text);
    } else {
        fprintf(stderr, "pool: %s%s%s\n", dmp_strerror(rc),
                pool ? ": " : "", pool ? dmp_pool_errmsg(pool) : "");
    }
    dmp_value_destroy(&items);
    dmp_value_destroy(&result);
    dmp_pool_destroy(&pool);
    dmp_fini();
    return rc != 0;
}
