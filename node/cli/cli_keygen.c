/*
 * cli_keygen.c - `dmp keygen [-o DIR] NAME`.
 */
#define _GNU_SOURCE
#include "cli.h"

#include <getopt.h>
#include <string.h>
#include <sys/stat.h>

static const char s_usage[] =
    "usage: dmp keygen [-o DIR] NAME\n"
    "\n"
    "Writes a Curve keypair: DIR/NAME.key (the secret, mode 0600) and\n"
    "DIR/NAME.pub. Give a node's key to dmpd --key and put NAME.pub in the\n"
    "keys directory of every node that should admit it. Never overwrites.\n"
    "\n"
    "  -o, --output DIR   where to write (default: .); created 0700\n";

int
cli_keygen(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"output", required_argument, 0, 'o'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *dir = ".";
    int opt;
    while ((opt = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'o': dir = optarg; break;
        case 'h': fputs(s_usage, stdout); return CLI_OK;
        default: fputs(s_usage, stderr); return CLI_USAGE;
        }
    }
    if (optind != argc - 1) {
        fputs(s_usage, stderr);
        return CLI_USAGE;
    }
    const char *name = argv[optind];
    if (!dmp__name_valid(name)) {
        cli_error("invalid key name '%s': use 1-63 of letters, digits, "
                  "'.', '_', '-'", name);
        return CLI_USAGE;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        cli_error("cannot create '%s': %s", dir, strerror(errno));
        return CLI_FAIL;
    }
    int rc = dmp_keygen(dir, name);
    if (rc == -EEXIST) {
        cli_error("'%s/%s.key' or '%s/%s.pub' already exists; not "
                  "overwriting", dir, name, dir, name);
        return CLI_FAIL;
    }
    if (rc) {
        cli_error("cannot write keys to '%s': %s", dir, dmp_strerror(rc));
        return CLI_FAIL;
    }
    printf("%s/%s.key\n%s/%s.pub\n", dir, name, dir, name);
    return CLI_OK;
}
