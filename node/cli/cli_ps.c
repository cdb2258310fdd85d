/*
 * cli_ps.c - `dmp ps`: dmp processes across the cluster.
 *
 * Asks each alive node in turn, through the node this command talks to,
 * for its running and recently ended processes.
 */
#define _GNU_SOURCE
#include "cli.h"

#include <getopt.h>
#include <string.h>

static const char s_usage[] =
    "usage: dmp ps [options]\n"
    "\n"
    "Lists processes started by dmp on every alive node: node, pid, name,\n"
    "target (or - for a command), state (running or exit N), runtime.\n"
    "\n" CLI_CONN_USAGE
    "  -a, --all               also ended processes (the last 64 a node)\n";

int
cli_ps(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_CONN_LONGOPTS,
        {"all", no_argument, 0, 'a'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    cli_conn_opts_t conn = {0};
    bool bad = false, all = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "C:k:S:T:ah", longopts, NULL)) !=
           -1) {
        if (cli_conn_option(&conn, opt, optarg, &bad))
            continue;
        switch (opt) {
        case 'a': all = true; break;
        case 'h': fputs(s_usage, stdout); return CLI_OK;
        default: bad = true;
        }
    }
    if (bad || optind != argc) {
        fputs(s_usage, stderr);
        return CLI_USAGE;
    }
    dmp_client_t *client;
    int status = cli_connect(&conn, &client);
    if (status)
        return status;
    dmp_node_info_t *nodes;
    size_t n;
    int rc = dmp_client_nodes(client, &nodes, &n);
    if (rc) {
        cli_error("cannot list nodes: %s", dmp_strerror(rc));
        cli_disconnect(&client);
        return cli_status(rc);
    }
    printf("%-16s %8s %-20s %-16s %-9s %8s\n", "NODE", "PID", "NAME",
           "TARGET", "STATE", "RUNTIME");
    for (size_t i = 0; i < n; i++) {
        if (nodes[i].state != DMP_NODE_ALIVE)
            continue;
        dmp__msg_t req = {.kind = DMP__MSG_PROC_LIST_REQUEST}, rep;
        rc = dmp__client_request(client, i == 0 ? NULL : nodes[i].name, &req,
                                 &rep, DMP__MSG_PROC_LIST_REPLY, 0);
        if (rc) {
            cli_error("cannot list processes of node '%s': %s",
                      nodes[i].name, dmp_strerror(rc));
            status = CLI_FAIL;
            continue;
        }
        for (size_t j = 0; j < rep.u.proc_list_reply.n_procs; j++) {
            const dmp__proc_info_t *p = &rep.u.proc_list_reply.procs[j];
            if (!p->running && !all)
                continue;
            char state[16];
            if (p->running)
                snprintf(state, sizeof state, "running");
            else
                snprintf(state, sizeof state, "exit %d", p->exitcode);
            printf("%-16s %8u %-20s %-16s %-9s %7.1fs\n", p->node, p->pid,
                   p->name, p->target, state, p->runtime_ms / 1000.0);
        }
        dmp__msg_clear(&rep);
    }
    dmp_nodes_free(&nodes);
    cli_disconnect(&client);
    return status;
}
