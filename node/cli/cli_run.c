/*
 * cli_run.c - `dmp run [--node N] -- PROG ARGS`: run a program on a node,
 * stream its output here, exit with its status.
 */
#define _GNU_SOURCE
#include "cli.h"

#include <getopt.h>
#include <signal.h>
#include <string.h>

static const char s_usage[] =
    "usage: dmp run [options] [--node NODE] -- PROG [ARG ...]\n"
    "\n"
    "Runs PROG on a node of the cluster with its output on this terminal and\n"
    "exits with its exit status (128+N when killed by signal N). A PROG with\n"
    "a '/' is a file here, shipped to the node (cached there by SHA-256); a\n"
    "bare name is looked up in the node's PATH. Arguments are passed as they\n"
    "are, without a shell. Ctrl-C terminates the remote program.\n"
    "\n"
    "  -n, --node NODE         where to run (default: $DMP_PLACE, else the\n"
    "                          node this command talks to; 'spread' picks\n"
    "                          one in turn)\n" CLI_CONN_USAGE;

static volatile sig_atomic_t s_interrupted;

static void
s_on_signal(int signo)
{
    s_interrupted = signo;
}

int
cli_run(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_CONN_LONGOPTS,
        {"node", required_argument, 0, 'n'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    cli_conn_opts_t conn = {0};
    const char *node = NULL;
    bool bad = false;
    int opt;
    /* '+': stop at the first non-option, PROG's own options are its own. */
    while ((opt = getopt_long(argc, argv, "+C:k:S:T:n:h", longopts, NULL)) !=
           -1) {
        if (cli_conn_option(&conn, opt, optarg, &bad))
            continue;
        switch (opt) {
        case 'n':
            if (!dmp__name_valid(optarg)) {
                cli_error("invalid node name '%s'", optarg);
                bad = true;
            }
            node = optarg;
            break;
        case 'h': fputs(s_usage, stdout); return CLI_OK;
        default: bad = true;
        }
    }
    if (bad || optind >= argc) {
        fputs(s_usage, stderr);
        return CLI_USAGE;
    }
    dmp_process_t *proc;
    int rc = dmp__process_new_command(argv + optind, node, &proc);
    if (rc) {
        cli_error("cannot run '%s': %s", argv[optind],
                  rc == -ENOENT ? "no such executable file"
                                : dmp_strerror(rc));
        return CLI_USAGE;
    }
    dmp_client_t *client;
    int status = cli_connect(&conn, &client);
    if (status) {
        dmp_process_destroy(&proc);
        return status;
    }
    rc = dmp_process_start(proc);
    if (rc) {
        const char *why = dmp_client_errmsg(client);
        cli_error("cannot start '%s': %s%s%s", argv[optind], dmp_strerror(rc),
                  why[0] ? ": " : "", why);
        dmp_process_destroy(&proc);
        cli_disconnect(&client);
        return cli_status(rc);
    }
    struct sigaction sa = {.sa_handler = s_on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    bool forwarded = false;
    for (;;) {
        rc = dmp_process_join(proc, 0.1);
        if (rc != -ETIMEDOUT)
            break;
        if (s_interrupted && !forwarded) {
            dmp_process_terminate(proc);
            forwarded = true;
        }
    }
    int code = 0;
    if (rc == 0)
        dmp_process_exitcode(proc, &code);
    else
        cli_error("lost '%s' on node '%s': %s", argv[optind],
                  dmp_process_node(proc), dmp_strerror(rc));
    dmp_process_destroy(&proc);
    cli_disconnect(&client);
    if (rc)
        return cli_status(rc);
    return code < 0 ? 128 - code : code;
}
