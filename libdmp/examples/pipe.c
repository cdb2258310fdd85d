/*
 * pipe.c - the guide's Pipe program: a child sends "Hello World" through
 * one end, the parent receives it from the other.
 *
 *   build/examples/pipe                         on a private local node
 *   DMP_PLACE=spread build/examples/pipe        over a cluster (. DIR/env)
 */
#include <dmp.h>
#include <stdio.h>

DMP_TARGET(child)
{
    dmp_conn_t *pipe;
    if (dmp_conn_from_value(dmp_list_get(args, 0), &pipe) != 0)
        return 1;
    const char *msg = "Hello World";
    dmp_value_t *obj = dmp_str(msg);
    int rc = dmp_conn_send(pipe, obj); /* send the data */
    dmp_value_destroy(&obj);
    printf("[%s] Send a message to pipe : %s\n", dmp_current_process_name(),
           msg);
    dmp_conn_destroy(&pipe);
    return rc != 0;
}

int
main(void)
{
    int rc = dmp_init(); /* in a child, this runs its target instead */
    dmp_conn_t *parent_pipe = NULL, *child_pipe = NULL;
    if (rc == 0)
        rc = dmp_pipe(1, &parent_pipe, &child_pipe); /* two ends */
    if (rc) {
        fprintf(stderr, "pipe: %s\n", dmp_strerror(rc));
        return 1;
    }
    dmp_value_t *args = dmp_list_of(1, dmp_conn_value(child_pipe));
    dmp_process_t *p = NULL;
    dmp_process_opts_t o = {.name = "child", .target = "child", .args = args};
    if ((rc = dmp_process_new(&o, &p)) == 0 &&
        (rc = dmp_process_start(p)) == 0) {
        dmp_value_t *msg = NULL;
        rc = dmp_conn_recv(parent_pipe, &msg); /* receive the data */
        if (rc == 0)
            printf("Recieved message : %s\n", dmp_value_str(msg, NULL));
        dmp_value_destroy(&msg);
        dmp_process_join(p, DMP_FOREVER);
    }
    if (rc)
        fprintf(stderr, "pipe: %s\n", dmp_strerror(rc));
    int code = 1;
    if (p)
        dmp_process_exitcode(p, &code);
    dmp_process_destroy(&p);
    dmp_value_destroy(&args);
    dmp_conn_destroy(&child_pipe);
    dmp_conn_destroy(&parent_pipe);
    dmp_fini();
    return rc || code;
}
