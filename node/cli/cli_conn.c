/*
 * cli_conn.c - how every dmp subcommand reaches a node.
 *
 * Options win over the environment; with no cluster named at all, the
 * command runs against a private local agent (dmp_init's embedded mode),
 * so `dmp nodes` works on a bare machine.
 */
#define _GNU_SOURCE
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

bool
cli_conn_option(cli_conn_opts_t *o, int opt, const char *arg, bool *bad)
{
    switch (opt) {
    case 'C':
        o->cluster = arg;
        return true;
    case 'k':
        o->key_file = arg;
        return true;
    case 'S':
        o->server_key = arg;
        return true;
    case 'T':
        if (dmp__parse_seconds(arg, &o->timeout) != 0 || o->timeout <= 0) {
            cli_error("invalid --timeout '%s': positive seconds", arg);
            *bad = true;
        }
        return true;
    default:
        return false;
    }
}

static const char *
s_pick(const char *opt, const char *env)
{
    if (opt && *opt)
        return opt;
    const char *v = getenv(env);
    return v && *v ? v : NULL;
}

int
cli_connect(const cli_conn_opts_t *o, dmp_client_t **client_p)
{
    const char *cluster = s_pick(o->cluster, "DMP_CLUSTER");
    dmp_client_opts_t opts = {
        .address = cluster,
        .key_file = s_pick(o->key_file, "DMP_KEY"),
        .server_key = s_pick(o->server_key, "DMP_SERVER_KEY"),
        .connect_timeout = o->timeout,
        .request_timeout = o->timeout,
    };
    /* No cluster named: the environment decides (DMP_AGENT, or a private
     * local agent). Either way this becomes the process-wide connection,
     * so processes started by the command report back to it. */
    char err[512];
    int rc = dmp_init_opts(cluster ? &opts : NULL, err, sizeof err);
    if (rc) {
        if (!cluster && !getenv("DMP_AGENT"))
            cli_error("cannot start a local node: %s (is dmpd installed? "
                      "set DMP_DMPD to its path)", err[0] ? err : dmp_strerror(rc));
        else
            cli_error("%s", err[0] ? err : dmp_strerror(rc));
        return cli_status(rc);
    }
    *client_p = dmp_default_client();
    return CLI_OK;
}

void
cli_disconnect(dmp_client_t **client_p)
{
    *client_p = NULL;
    dmp_fini();
}

int
cli_wait_alive(dmp_client_t *client, size_t want, double timeout)
{
    double deadline = dmp__now() + timeout;
    for (;;) {
        dmp_node_info_t *nodes;
        size_t n, alive = 0;
        int rc = dmp_client_nodes(client, &nodes, &n);
        if (rc == 0) {
            for (size_t i = 0; i < n; i++)
                alive += nodes[i].state == DMP_NODE_ALIVE;
            dmp_nodes_free(&nodes);
            if (alive >= want)
                return 0;
        }
        if (dmp__now() >= deadline)
            return rc ? rc : -ETIMEDOUT;
        /* Membership changes at heartbeat pace; asking every 50 ms is
         * plenty and keeps the agent idle. */
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
