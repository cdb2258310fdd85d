/*
 * cli.h - shared pieces of the dmp command.
 *
 * Exit statuses, the same for every subcommand:
 *   0 success; 1 failure; 2 usage error; 3 authentication or key problem
 *   (refused key, wrong server key, unsafe key file); 4 node unreachable.
 */
#ifndef CLI_H
#define CLI_H

#include "dmp_impl.h"

#include <stdio.h>

enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2, CLI_AUTH = 3, CLI_NODE = 4 };

/* Where to connect: from options, else the environment, else embedded. */
typedef struct {
    const char *cluster;     /* --cluster or DMP_CLUSTER */
    const char *key_file;    /* --key or DMP_KEY */
    const char *server_key;  /* --server-key or DMP_SERVER_KEY */
    double timeout;          /* --timeout seconds, 0 for the default */
} cli_conn_opts_t;

/* getopt_long entries and handling for the options above. */
#define CLI_CONN_LONGOPTS                                \
    {"cluster", required_argument, 0, 'C'},              \
    {"key", required_argument, 0, 'k'},                  \
    {"server-key", required_argument, 0, 'S'},           \
    {"timeout", required_argument, 0, 'T'}
#define CLI_CONN_USAGE                                                      \
    "  -C, --cluster ADDR      a node of the cluster (default $DMP_CLUSTER;\n" \
    "                          with neither, a private local node)\n"         \
    "  -k, --key FILE          client secret key (default $DMP_KEY)\n"        \
    "  -S, --server-key KEY    the node's public key, a .pub file or Z85\n"   \
    "                          (default $DMP_SERVER_KEY)\n"                   \
    "  -T, --timeout SEC       give up after SEC seconds (default 10)\n"
/* Handles one of 'C', 'k', 'S', 'T'; false if opt is not one of them.
 * Sets *bad when the value is invalid. */
bool cli_conn_option(cli_conn_opts_t *o, int opt, const char *arg, bool *bad);

/* Connects as the options say, as the process-wide connection (dmp_init);
 * *client_p is borrowed; release with cli_disconnect. Prints the error
 * and returns an exit status on failure. */
int cli_connect(const cli_conn_opts_t *o, dmp_client_t **client_p);
void cli_disconnect(dmp_client_t **client_p);

/* Maps a dmp error code to the exit status above. */
int cli_status(int rc);

/* "error: ..." on stderr in git's style. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Subcommands: argv[0] is the subcommand name. */
int cli_keygen(int argc, char **argv);
int cli_nodes(int argc, char **argv);
int cli_cluster(int argc, char **argv);
int cli_run(int argc, char **argv);
int cli_ps(int argc, char **argv);
int cli_map(int argc, char **argv);
/* `dmp --map-exec PPID CMD ...`: how a `dmp map` worker runs a command. */
int cli_map_exec(int argc, char **argv);

/* Waits until the node behind client reports `want` alive nodes (itself
 * included). Returns 0, or DMP_ENODE/-ETIMEDOUT. */
int cli_wait_alive(dmp_client_t *client, size_t want, double timeout);

#endif
