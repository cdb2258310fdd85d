/*
 * shared_memory.c - the guide's shared-memory program: a Value("i", 5) and
 * an Array("i", range(10)) passed to a child `worker`, which prints them,
 * sets the value to 50 and multiplies each element by 10; the parent then
 * prints what the child left.
 *
 *   build/examples/shared_memory                  on a private local node
 *   DMP_PLACE=spread build/examples/shared_memory over a cluster (. DIR/env)
 *
 * On the creating program's host both map the same shared memory; a worker
 * on another node reads and writes through the node that owns them.
 */
#include <dmp.h>
#include <stdint.h>
#include <stdio.h>

DMP_TARGET(worker)
{
    dmp_shared_t *num = NULL, *num_list = NULL;
    if (dmp_shared_from_value(dmp_list_get(args, 0), &num) != 0 ||
        dmp_shared_from_value(dmp_list_get(args, 1), &num_list) != 0)
        return 1;
    const char *me = dmp_current_process_name();
    int64_t v = 0;
    int rc = dmp_shared_get_int(num, 0, &v);
    printf("[%s] num : %lld\n", me, (long long)v);
    for (size_t i = 0; rc == 0 && i < dmp_shared_len(num_list); i++) {
        rc = dmp_shared_get_int(num_list, (int64_t)i, &v);
        printf("[%s] num list[%zu] : %lld\n", me, i, (long long)v);
    }
    if (rc == 0)
        rc = dmp_shared_set_int(num, 0, 50); /* change the value */
    for (size_t i = 0; rc == 0 && i < dmp_shared_len(num_list); i++) {
        /* num_list[i] = num_list[i] * 10: a read and a write, each under
         * the lock for its moment (not atomic together: with one writer,
         * as here, that is fine; see get_lock for the atomic form) */
        if ((rc = dmp_shared_get_int(num_list, (int64_t)i, &v)) == 0)
            rc = dmp_shared_set_int(num_list, (int64_t)i, v * 10);
    }
    if (rc)
        fprintf(stderr, "[%s] %s\n", me, dmp_strerror(rc));
    dmp_shared_destroy(&num);
    dmp_shared_destroy(&num_list);
    return rc != 0;
}

int
main(void)
{
    int rc = dmp_init(); /* in a child, this runs its target instead */
    int32_t five = 5, range10[10];
    for (int i = 0; i < 10; i++)
        range10[i] = i;
    dmp_shared_t *single_integer = NULL, *integer_list = NULL;
    if (rc == 0) /* Value("i", 5) */
        rc = dmp_shared_value_new('i', &five, 1, &single_integer);
    if (rc == 0) /* Array("i", range(10)) */
        rc = dmp_shared_array_new('i', 10, range10, 1, &integer_list);
    if (rc) {
        fprintf(stderr, "shared_memory: %s\n", dmp_strerror(rc));
        return 1;
    }
    dmp_value_t *args = dmp_list_of(2, dmp_shared_value(single_integer),
                                    dmp_shared_value(integer_list));
    dmp_process_t *p = NULL;
    dmp_process_opts_t o = {.name = "worker", .target = "worker",
                            .args = args};
    if ((rc = dmp_process_new(&o, &p)) == 0 &&
        (rc = dmp_process_start(p)) == 0)
        rc = dmp_process_join(p, DMP_FOREVER);
    if (rc)
        fprintf(stderr, "shared_memory: cannot run the worker: %s\n",
                dmp_strerror(rc));
    int code = 1;
    if (p)
        dmp_process_exitcode(p, &code);
    int64_t v = 0;
    if (rc == 0 && code == 0 &&
        (rc = dmp_shared_get_int(single_integer, 0, &v)) == 0)
        printf("num : %lld\n", (long long)v);
    for (size_t i = 0; rc == 0 && code == 0 && i < dmp_shared_len(integer_list);
         i++)
        if ((rc = dmp_shared_get_int(integer_list, (int64_t)i, &v)) == 0)
            printf("num list[%zu] : %lld\n", i, (long long)v);
    dmp_process_destroy(&p);
    dmp_value_destroy(&args);
    dmp_shared_destroy(&single_integer);
    dmp_shared_destroy(&integer_list);
    dmp_fini();
    return rc || code;
}
