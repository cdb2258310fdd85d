/*
 * node_config.c - dmpd's settings from a config file and the command line.
 *
 * The file (-c FILE) is read first; options given on the command line win.
 * Everything is validated here, so the rest of the agent can trust cfg:
 * names, endpoints, numbers in range, a key and a keys directory whenever
 * the agent listens on tcp.
 */
#define _GNU_SOURCE
#include "node.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char s_usage[] =
    "usage: dmpd [-c FILE] [options]\n"
    "\n"
    "Runs a dmp node agent in the foreground; logs go to stderr.\n"
    "\n"
    "  -c, --config FILE       read settings from FILE (options win)\n"
    "  -n, --name NAME         node name (default: the host name)\n"
    "  -l, --listen ENDPOINT   tcp endpoint to bind, e.g. tcp://0.0.0.0:7700\n"
    "      --advertise ADDR    address peers and clients use to reach us\n"
    "                          (default: the listen endpoint)\n"
    "  -p, --peer NAME@ADDR    a peer to join, e.g. node2@tcp://10.0.0.2:7700\n"
    "                          (repeatable; its key must be nodes/NAME.pub\n"
    "                          in the keys directory)\n"
    "  -k, --key FILE          this node's secret key (mode 0600)\n"
    "  -K, --keys-dir DIR      allow-list: DIR/NAME.pub for clients,\n"
    "                          DIR/nodes/NAME.pub for nodes\n"
    "  -r, --runtime-dir DIR   0700 directory for the local socket and lock\n"
    "                          (default: $XDG_RUNTIME_DIR/dmp/NAME or\n"
    "                          /tmp/dmp-UID/NAME)\n"
    "      --cache-dir DIR     binaries shipped by other nodes (default:\n"
    "                          RUNTIME_DIR/cache)\n"
    "      --heartbeat SEC     seconds between heartbeats (default 1)\n"
    "      --liveness N        missed heartbeats before a peer is dead\n"
    "                          (default 3)\n"
    "      --busy-poll US      after serving a pipe to a remote process,\n"
    "                          poll this long without sleeping for what\n"
    "                          comes next (default 300, at most 100000;\n"
    "                          0: never)\n"
    "  -v, --verbose           log debug lines too\n"
    "  -q, --quiet             log warnings and errors only\n"
    "  -h, --help              this text\n"
    "      --version           print the version\n"
    "\n"
    "Config file: one 'key = value' a line, keys as the long options\n"
    "(name, listen, advertise, peer, key, keys_dir, runtime_dir, cache_dir,\n"
    "heartbeat, liveness, busy_poll, log_level = error|warn|info|debug), and\n"
    "for the jobs it starts: job_user = NAME (needs root), job_rlimit_nofile,\n"
    "job_rlimit_as (K/M/G/T), job_rlimit_cpu (seconds), job_rlimit_nproc\n"
    "(a number or 'unlimited').\n";

bool
node_config_parse_peer(const char *spec, node_peer_addr_t *peer)
{
    const char *at = strchr(spec, '@');
    if (!at || (size_t)(at - spec) >= sizeof peer->name)
        return false;
    memcpy(peer->name, spec, (size_t)(at - spec));
    peer->name[at - spec] = '\0';
    if (!dmp__name_valid(peer->name) || strlen(at + 1) >= DMP__ADDR_MAX ||
        strncmp(at + 1, "tcp://", 6) != 0 || !dmp__endpoint_valid(at + 1))
        return false;
    dmp__strlcpy(peer->address, at + 1, sizeof peer->address);
    return true;
}

/* Applies one setting; shared by the file and the command line. */
static int
s_set(const char *key, const char *value, void *arg, char *err,
      size_t errlen)
{
    node_config_t *cfg = arg;
    double secs;
    unsigned long n;
    if (strcmp(key, "name") == 0) {
        if (!dmp__name_valid(value)) {
            snprintf(err, errlen, "invalid node name '%s': use 1-63 of "
                     "letters, digits, '.', '_', '-'", value);
            return DMP_ECONFIG;
        }
        dmp__strlcpy(cfg->name, value, sizeof cfg->name);
    } else if (strcmp(key, "listen") == 0 || strcmp(key, "advertise") == 0) {
        if (strncmp(value, "tcp://", 6) != 0 || !dmp__endpoint_valid(value)) {
            snprintf(err, errlen, "invalid %s address '%s': expected "
                     "tcp://HOST:PORT", key, value);
            return DMP_ECONFIG;
        }
        dmp__strlcpy(key[0] == 'l' ? cfg->listen : cfg->advertise, value,
                     DMP__ADDR_MAX);
    } else if (strcmp(key, "peer") == 0) {
        if (cfg->n_peers == NODE_PEERS_MAX) {
            snprintf(err, errlen, "too many peers (at most %d)",
                     NODE_PEERS_MAX);
            return DMP_ECONFIG;
        }
        if (!node_config_parse_peer(value, &cfg->peers[cfg->n_peers])) {
            snprintf(err, errlen, "invalid peer '%s': expected "
                     "NAME@tcp://HOST:PORT", value);
            return DMP_ECONFIG;
        }
        cfg->n_peers++;
    } else if (strcmp(key, "key") == 0) {
        dmp__strlcpy(cfg->key_file, value, sizeof cfg->key_file);
    } else if (strcmp(key, "keys_dir") == 0 || strcmp(key, "keys-dir") == 0) {
        dmp__strlcpy(cfg->keys_dir, value, sizeof cfg->keys_dir);
    } else if (strcmp(key, "runtime_dir") == 0 ||
               strcmp(key, "runtime-dir") == 0) {
        dmp__strlcpy(cfg->runtime_dir, value, sizeof cfg->runtime_dir);
    } else if (strcmp(key, "cache_dir") == 0 ||
               strcmp(key, "cache-dir") == 0) {
        dmp__strlcpy(cfg->cache_dir, value, sizeof cfg->cache_dir);
    } else if (strcmp(key, "heartbeat") == 0) {
        if (dmp__parse_seconds(value, &secs) != 0 || secs < 0.01 ||
            secs > 3600) {
            snprintf(err, errlen, "invalid heartbeat '%s': seconds between "
                     "0.01 and 3600", value);
            return DMP_ECONFIG;
        }
        cfg->heartbeat = secs;
    } else if (strcmp(key, "liveness") == 0) {
        if (dmp__parse_uint(value, 1000, &n) != 0 || n < 2) {
            snprintf(err, errlen, "invalid liveness '%s': a count from 2 "
                     "to 1000", value);
            return DMP_ECONFIG;
        }
        cfg->liveness = (unsigned)n;
    } else if (strcmp(key, "busy_poll") == 0 ||
               strcmp(key, "busy-poll") == 0) {
        if (dmp__parse_uint(value, 100000, &n) != 0) {
            snprintf(err, errlen, "invalid busy_poll '%s': microseconds "
                     "from 0 (never) to 100000", value);
            return DMP_ECONFIG;
        }
        cfg->busy_poll_us = (unsigned)n;
    } else if (strcmp(key, "log_level") == 0) {
        static const char *const levels[] = {"error", "warn", "info",
                                             "debug"};
        size_t i;
        for (i = 0; i < 4 && strcmp(value, levels[i]) != 0; i++)
            ;
        if (i == 4) {
            snprintf(err, errlen, "invalid log_level '%s'", value);
            return DMP_ECONFIG;
        }
        cfg->log_level = (dmp_log_level_t)i;
    } else if (strncmp(key, "job_", 4) == 0) {
        return node_jail_config(cfg, key, value, err, errlen);
    } else {
        snprintf(err, errlen, "unknown setting '%s'", key);
        return DMP_ECONFIG;
    }
    return 0;
}

static void
s_defaults(node_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->heartbeat = 1.0;
    cfg->liveness = 3;
    cfg->busy_poll_us = NODE_BUSY_POLL_US;
    cfg->control_fd = -1;
    cfg->log_level = DMP_LOG_INFO;
}

/* Fills what the user did not set and checks the whole. */
static int
s_finish(node_config_t *cfg)
{
    if (!cfg->name[0]) {
        char host[256] = "";
        gethostname(host, sizeof host - 1);
        char *dot = strchr(host, '.');
        if (dot)
            *dot = '\0';
        if (!dmp__name_valid(host)) {
            fprintf(stderr, "dmpd: host name '%s' is not a valid node name; "
                    "give --name\n", host);
            return 2;
        }
        dmp__strlcpy(cfg->name, host, sizeof cfg->name);
    }
    if (!cfg->runtime_dir[0]) {
        const char *xdg = getenv("XDG_RUNTIME_DIR");
        if (xdg && *xdg)
            snprintf(cfg->runtime_dir, sizeof cfg->runtime_dir, "%s/dmp/%s",
                     xdg, cfg->name);
        else
            snprintf(cfg->runtime_dir, sizeof cfg->runtime_dir,
                     "/tmp/dmp-%u/%s", (unsigned)getuid(), cfg->name);
    }
    if (!cfg->cache_dir[0])
        snprintf(cfg->cache_dir, sizeof cfg->cache_dir, "%s/cache",
                 cfg->runtime_dir);
    if (cfg->listen[0]) {
        if (!cfg->key_file[0] || !cfg->keys_dir[0]) {
            fprintf(stderr, "dmpd: listening on tcp needs --key and "
                    "--keys-dir: every tcp connection is authenticated\n");
            return 2;
        }
        if (!cfg->advertise[0]) {
            if (strstr(cfg->listen, "://0.0.0.0:") ||
                strstr(cfg->listen, "://*:")) {
                fprintf(stderr, "dmpd: listening on all interfaces needs "
                        "--advertise tcp://HOST:PORT (the address peers "
                        "use)\n");
                return 2;
            }
            dmp__strlcpy(cfg->advertise, cfg->listen,
                         sizeof cfg->advertise);
        }
    } else if (cfg->n_peers) {
        fprintf(stderr, "dmpd: peers need a tcp --listen address\n");
        return 2;
    }
    return -1;
}

int
node_config_load(node_config_t *cfg, int argc, char **argv)
{
    enum { OPT_ADVERTISE = 256, OPT_CACHE_DIR, OPT_HEARTBEAT, OPT_LIVENESS,
           OPT_BUSY_POLL, OPT_VERSION, OPT_EMBEDDED, OPT_CONTROL_FD };
    static const struct option longopts[] = {
        {"config", required_argument, 0, 'c'},
        {"name", required_argument, 0, 'n'},
        {"listen", required_argument, 0, 'l'},
        {"advertise", required_argument, 0, OPT_ADVERTISE},
        {"peer", required_argument, 0, 'p'},
        {"key", required_argument, 0, 'k'},
        {"keys-dir", required_argument, 0, 'K'},
        {"runtime-dir", required_argument, 0, 'r'},
        {"cache-dir", required_argument, 0, OPT_CACHE_DIR},
        {"heartbeat", required_argument, 0, OPT_HEARTBEAT},
        {"liveness", required_argument, 0, OPT_LIVENESS},
        {"busy-poll", required_argument, 0, OPT_BUSY_POLL},
        {"verbose", no_argument, 0, 'v'},
        {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, OPT_VERSION},
        {"embedded", no_argument, 0, OPT_EMBEDDED},
        {"control-fd", required_argument, 0, OPT_CONTROL_FD},
        {0, 0, 0, 0}};
    static const char shortopts[] = "c:n:l:p:k:K:r:vqh";
    s_defaults(cfg);
    char err[512];

    /* Pass 1: the config file, so that options can override it. */
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
        if (opt == 'c' && dmp__config_parse(optarg, s_set, cfg, err,
                                            sizeof err) != 0) {
            fprintf(stderr, "dmpd: %s\n", err);
            return 2;
        }
    }
    /* Pass 2: options. */
    optind = 0;
    opterr = 1;
    while ((opt = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
        const char *key = NULL;
        unsigned long fd;
        switch (opt) {
        case 'c': continue;
        case 'n': key = "name"; break;
        case 'l': key = "listen"; break;
        case OPT_ADVERTISE: key = "advertise"; break;
        case 'p': key = "peer"; break;
        case 'k': key = "key"; break;
        case 'K': key = "keys_dir"; break;
        case 'r': key = "runtime_dir"; break;
        case OPT_CACHE_DIR: key = "cache_dir"; break;
        case OPT_HEARTBEAT: key = "heartbeat"; break;
        case OPT_LIVENESS: key = "liveness"; break;
        case OPT_BUSY_POLL: key = "busy_poll"; break;
        case 'v': cfg->log_level = DMP_LOG_DEBUG; continue;
        case 'q': cfg->log_level = DMP_LOG_WARN; continue;
        case 'h': fputs(s_usage, stdout); return 0;
        case OPT_VERSION: puts("dmpd " DMP_VERSION_STRING); return 0;
        case OPT_EMBEDDED: cfg->embedded = true; continue;
        case OPT_CONTROL_FD:
            if (dmp__parse_uint(optarg, 1 << 20, &fd) != 0) {
                fprintf(stderr, "dmpd: invalid --control-fd '%s'\n", optarg);
                return 2;
            }
            cfg->control_fd = (int)fd;
            continue;
        default:
            fputs("usage: dmpd [-c FILE] [options]; see dmpd --help\n",
                  stderr);
            return 2;
        }
        if (s_set(key, optarg, cfg, err, sizeof err) != 0) {
            fprintf(stderr, "dmpd: %s\n", err);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "dmpd: unexpected argument '%s'; see dmpd --help\n",
                argv[optind]);
        return 2;
    }
    return s_finish(cfg);
}
