/*
 * hello.c - a process on every node of the cluster says where it runs.
 *
 *   build/examples/hello                 on a private local node
 *   . DIR/env && build/examples/hello    on every node of a cluster
 */
#include <dmp.h>
#include <stdio.h>
#include <unistd.h>

DMP_TARGET(hello)
{
    int64_t n = 0;
    dmp_value_get_int(dmp_list_get(args, 0), &n);
    printf("hello from %s on node %s (pid %d, number %lld)\n",
           dmp_current_process_name(), dmp_current_node(), (int)getpid(),
           (long long)n);
    return 0;
}

int
main(void)
{
    int rc = dmp_init(); /* in a child, this runs the target instead */
    if (rc) {
        fprintf(stderr, "hello: cannot join the cluster: %s\n",
                dmp_strerror(rc));
        return 1;
    }
    dmp_node_info_t *nodes;
    size_t n;
    if ((rc = dmp_nodes(&nodes, &n)) != 0) {
        fprintf(stderr, "hello: cannot list nodes: %s\n", dmp_strerror(rc));
        dmp_fini();
        return 1;
    }
    dmp_process_t *procs[64];
    size_t started = 0;
    for (size_t i = 0; i < n && started < 64; i++) {
        if (nodes[i].state != DMP_NODE_ALIVE)
            continue;
        dmp_value_t *args = dmp_list_of(1, dmp_int((int64_t)i));
        dmp_process_opts_t opts = {.target = "hello", .args = args,
                                   .node = nodes[i].name};
        rc = dmp_process_new(&opts, &procs[started]);
        dmp_value_destroy(&args);
        if (rc == 0 && (rc = dmp_process_start(procs[started])) != 0)
            dmp_process_destroy(&procs[started]);
        if (rc)
            fprintf(stderr, "hello: cannot start a process on '%s': %s\n",
                    nodes[i].name, dmp_strerror(rc));
        else
            started++;
    }
    int failed = 0;
    for (size_t i = 0; i < started; i++) {
        int code = -1;
        rc = dmp_process_join(procs[i], DMP_FOREVER);
        if (rc == 0)
            dmp_process_exitcode(procs[i], &code);
        printf("%s on %s: exitcode %d\n", dmp_process_name(procs[i]),
               dmp_process_node(procs[i]), code);
        failed |= rc != 0 || code != 0;
        dmp_process_destroy(&procs[i]);
    }
    dmp_nodes_free(&nodes);
    dmp_fini();
    return failed;
}
