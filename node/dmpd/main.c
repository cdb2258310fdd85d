/*
 * main.c - dmpd, the dmp node agent.
 *
 * Reads its settings, then hands over to node_run. Exit status: 0 after a
 * clean stop, 1 when it could not start (the reason is logged), 2 for a
 * usage or configuration error.
 */
#define _GNU_SOURCE
#include "node.h"

#include <sodium.h>
#include <stdlib.h>

/* libdmp's own log lines (connect failures and the like) join ours. */
static void
s_lib_log(dmp_log_level_t level, const char *msg, void *arg)
{
    (void)arg;
    node_log(level, "libdmp", "%s", msg);
}

int
main(int argc, char **argv)
{
    static node_t node; /* large (peer addresses); keep it off the stack */
    int status = node_config_load(&node.cfg, argc, argv);
    if (status >= 0)
        return status;
    node_log_level = node.cfg.log_level;
    if (node.cfg.embedded && node.cfg.log_level == DMP_LOG_INFO)
        node_log_level = DMP_LOG_WARN; /* a private agent stays quiet */
    node_log_set_name(node.cfg.name);
    dmp_set_log_handler(s_lib_log, node_log_level, NULL);
    if (sodium_init() < 0) {
        error_f("cannot initialise libsodium");
        return 1;
    }
    return node_run(&node);
}
