/*
 * cli_nodes.c - `dmp nodes`: the cluster's membership as one node sees it.
 */
#define _GNU_SOURCE
#include "cli.h"

#include <getopt.h>
#include <string.h>

static const char s_usage[] =
    "usage: dmp nodes [options]\n"
    "\n"
    "Lists every node: name, address, state (alive, suspect, dead), cores,\n"
    "1-minute load, uptime, dmp processes, seconds since last heard.\n"
    "\n" CLI_CONN_USAGE
    "  -w, --wait N            first wait (up to --timeout) until N nodes\n"
    "                          are alive; exit 1 if they never are\n";

static void
s_duration(uint64_t ms, char *out, size_t size)
{
    uint64_t s = ms / 1000;
    if (s < 120)
        snprintf(out, size, "%llus", (unsigned long long)s);
    else if (s < 7200)
        snprintf(out, size, "%llum", (unsigned long long)(s / 60));
    else if (s < 172800)
        snprintf(out, size, "%lluh", (unsigned long long)(s / 3600));
    else
        snprintf(out, size, "%llud", (unsigned long long)(s / 86400));
}

int
cli_nodes(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_CONN_LONGOPTS,
        {"wait", required_argument, 0, 'w'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    cli_conn_opts_t conn = {0};
    unsigned long wait_for = 0;
    bool bad = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "C:k:S:T:w:h", longopts, NULL)) !=
           -1) {
        if (cli_conn_option(&conn, opt, optarg, &bad))
            continue;
        switch (opt) {
        case 'w':
            if (dmp__parse_uint(optarg, DMP__MEMBERS_MAX, &wait_for) != 0) {
                cli_error("invalid --wait '%s': a node count", optarg);
                bad = true;
            }
            break;
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
    int rc = 0;
    if (wait_for) {
        rc = cli_wait_alive(client, wait_for,
                            conn.timeout > 0 ? conn.timeout : 10.0);
        if (rc == -ETIMEDOUT) {
            cli_error("fewer than %lu nodes alive after waiting",
                      wait_for);
            status = CLI_FAIL;
        }
    }
    dmp_node_info_t *nodes = NULL;
    size_t n = 0;
    if (rc == 0 || rc == -ETIMEDOUT)
        rc = dmp_client_nodes(client, &nodes, &n);
    if (rc) {
        const char *why = dmp_client_errmsg(client);
        cli_error("cannot list nodes: %s%s%s", dmp_strerror(rc),
                  why[0] ? ": " : "", why);
        cli_disconnect(&client);
        return cli_status(rc);
    }
    printf("%-16s %-28s %-8s %5s %6s %7s %5s %6s\n", "NAME", "ADDRESS",
           "STATE", "CORES", "LOAD", "UPTIME", "PROCS", "SEEN");
    for (size_t i = 0; i < n; i++) {
        char up[16], seen[16];
        s_duration(nodes[i].uptime_ms, up, sizeof up);
        snprintf(seen, sizeof seen, "%.1fs", nodes[i].last_seen_ms / 1000.0);
        printf("%-16s %-28s %-8s %5u %6.2f %7s %5u %6s\n", nodes[i].name,
               nodes[i].address[0] ? nodes[i].address : "-",
               dmp_node_state_name(nodes[i].state), nodes[i].cores,
               nodes[i].load, nodes[i].state == DMP_NODE_ALIVE ? up : "-",
               nodes[i].processes, i == 0 ? "-" : seen);
    }
    fflush(stdout);
    dmp_nodes_free(&nodes);
    cli_disconnect(&client);
    return status;
}
