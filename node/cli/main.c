/*
 * main.c - the dmp command: keys, cluster membership, local clusters,
 * remote runs, pool maps.
 */
#define _GNU_SOURCE
#include "cli.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char s_usage[] =
    "usage: dmp COMMAND [options]\n"
    "\n"
    "  keygen [-o DIR] NAME      write a Curve keypair NAME.key, NAME.pub\n"
    "  nodes [options]           list the cluster's nodes\n"
    "  run [--node N] -- PROG ARGS   run a program on a node, stream its output\n"
    "  ps [options]              processes across the cluster\n"
    "  map [options] MODULE.so:FUNC [ITEM ...]   a function over items\n"
    "  map [options] -- CMD {} ...   a command over items, on the cluster\n"
    "  cluster up -n N --dir DIR start N local agents with fresh keys\n"
    "  cluster down --dir DIR    stop them\n"
    "  cluster start|stop --dir DIR NODE   one node of such a cluster\n"
    "\n"
    "'dmp COMMAND --help' tells more. Exit status: 0 success, 1 failure,\n"
    "2 usage error, 3 authentication or key problem, 4 node unreachable.\n";

void
cli_error(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "error: %s\n", msg);
}

int
cli_status(int rc)
{
    switch (rc) {
    case 0:
        return CLI_OK;
    case DMP_EAUTH:
    case DMP_ESERVERKEY:
    case DMP_EKEY:
        return CLI_AUTH;
    case DMP_ENODE:
    case DMP_ENOAGENT:
        return CLI_NODE;
    case -EINVAL:
        return CLI_USAGE;
    default:
        return CLI_FAIL;
    }
}

/* Library log lines (from dmp_init) go to stderr when DMP_DEBUG is set. */
static void
s_log(dmp_log_level_t level, const char *msg, void *arg)
{
    (void)level;
    (void)arg;
    fprintf(stderr, "dmp: %s\n", msg);
}

int
main(int argc, char **argv)
{
    /* `dmp map` runs its workers from this executable: a child or a fork
     * server started by an agent is served by dmp_init, which never
     * returns then; and a worker runs commands through --map-exec. */
    if (argc > 1 && strcmp(argv[1], "--map-exec") == 0)
        return cli_map_exec(argc, argv);
    if (getenv("DMP_CHILD") || getenv("DMP_ZYGOTE"))
        dmp_init();
    if (getenv("DMP_DEBUG"))
        dmp_set_log_handler(s_log, DMP_LOG_DEBUG, NULL);
    if (argc < 2 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        fputs(s_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_USAGE : CLI_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        puts("dmp " DMP_VERSION_STRING);
        return CLI_OK;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "keygen") == 0)
        return cli_keygen(argc - 1, argv + 1);
    if (strcmp(cmd, "nodes") == 0)
        return cli_nodes(argc - 1, argv + 1);
    if (strcmp(cmd, "cluster") == 0)
        return cli_cluster(argc - 1, argv + 1);
    if (strcmp(cmd, "run") == 0)
        return cli_run(argc - 1, argv + 1);
    if (strcmp(cmd, "ps") == 0)
        return cli_ps(argc - 1, argv + 1);
    if (strcmp(cmd, "map") == 0)
        return cli_map(argc - 1, argv + 1);
    cli_error("unknown command '%s'; see 'dmp --help'", cmd);
    return CLI_USAGE;
}
