/*
 * queue.c - the guide's Queue program: one process puts "Hello World",
 * another waits a second and gets it.
 *
 *   build/examples/queue                        on a private local node
 *   DMP_PLACE=spread build/examples/queue       over a cluster (. DIR/env)
 */
#include <dmp.h>
#include <stdio.h>
#include <unistd.h>

DMP_TARGET(set_data)
{
    dmp_queue_t *q;
    if (dmp_queue_from_value(dmp_list_get(args, 0), &q) != 0)
        return 1;
    const char *msg = "Hello World";
    dmp_value_t *item = dmp_str(msg);
    int rc = dmp_queue_put(q, item, DMP_FOREVER); /* insert into the queue */
    dmp_value_destroy(&item);
    printf("[%s] set queue data : %s\n", dmp_current_process_name(), msg);
    dmp_queue_destroy(&q);
    return rc != 0;
}

DMP_TARGET(get_data)
{
    dmp_queue_t *q;
    if (dmp_queue_from_value(dmp_list_get(args, 0), &q) != 0)
        return 1;
    sleep(1);
    dmp_value_t *item = NULL;
    int rc = dmp_queue_get(q, &item, DMP_FOREVER); /* take from the queue */
    if (rc == 0)
        printf("[%s] get queue data : %s\n", dmp_current_process_name(),
               dmp_value_str(item, NULL));
    dmp_value_destroy(&item);
    dmp_queue_destroy(&q);
    return rc != 0;
}

int
main(void)
{
    int rc = dmp_init(); /* in a child, this runs its target instead */
    dmp_queue_t *queue = NULL;
    if (rc == 0)
        rc = dmp_queue_new(NULL, &queue);
    if (rc) {
        fprintf(stderr, "queue: %s\n", dmp_strerror(rc));
        return 1;
    }
    dmp_value_t *args = dmp_list_of(1, dmp_queue_value(queue));
    dmp_process_t *p1 = NULL, *p2 = NULL;
    dmp_process_opts_t o1 = {.name = "set_data", .target = "set_data",
                             .args = args};
    dmp_process_opts_t o2 = {.name = "get_data", .target = "get_data",
                             .args = args};
    if ((rc = dmp_process_new(&o1, &p1)) == 0 &&
        (rc = dmp_process_start(p1)) == 0 &&
        (rc = dmp_process_new(&o2, &p2)) == 0 &&
        (rc = dmp_process_start(p2)) == 0) {
        dmp_process_join(p1, DMP_FOREVER);
        dmp_process_join(p2, DMP_FOREVER);
    }
    if (rc)
        fprintf(stderr, "queue: cannot start a process: %s\n",
                dmp_strerror(rc));
    int code1 = 1, code2 = 1;
    if (p1)
        dmp_process_exitcode(p1, &code1);
    if (p2)
        dmp_process_exitcode(p2, &code2);
    dmp_process_destroy(&p1);
    dmp_process_destroy(&p2);
    dmp_value_destroy(&args);
    dmp_queue_destroy(&queue);
    dmp_fini();
    return rc || code1 || code2;
}
