/*
 * fuzz_config.c - dmp__config_parse and dmpd's settings (node_config.c):
 * a config file is outside input (FAULTS.md: a bad one must stop the
 * agent with a clear message, never crash it or half-apply).
 *
 * The input is the file. Promises checked:
 *   - the parser hands out trimmed, non-empty keys without '=' and never
 *     a '#' comment, one call per setting line, in order;
 *   - a line of 1023 bytes or more is refused ("line too long"), and every
 *     error names the file and the line;
 *   - dmpd's loader accepts a file only if the plain parser does, and
 *     what it accepts is valid throughout (names, tcp endpoints, peers,
 *     heartbeat and liveness in range, key and keys dir when listening).
 */
#define _GNU_SOURCE
#include "fuzz.h"

#include "node.h"

#include <getopt.h>
#include <string.h>

/* What the plain parser should find, from the bytes alone. */
typedef struct {
    int settings;  /* setting lines */
    bool too_long; /* a line of 1023 bytes or more before any error */
    bool syntax;   /* a line that is neither blank, comment nor setting */
} s_config_expect_t;

static bool
s_config_blank(char c)
{
    return c == ' ' || c == '\t';
}

static void
s_config_expect(const uint8_t *data, size_t size, s_config_expect_t *e)
{
    memset(e, 0, sizeof *e);
    for (size_t at = 0; at < size && !e->too_long && !e->syntax;) {
        const uint8_t *nl = memchr(data + at, '\n', size - at);
        size_t len = (nl ? (size_t)(nl - data) : size) - at;
        const char *line = (const char *)data + at;
        at += len + (nl ? 1 : 0);
        if (len >= 1023) {
            e->too_long = true;
            break;
        }
        size_t b = 0, end = len;
        while (b < len && s_config_blank(line[b]))
            b++;
        while (end > b && (s_config_blank(line[end - 1]) ||
                           line[end - 1] == '\r'))
            end--;
        if (b == end || line[b] == '#')
            continue;
        const char *eq = memchr(line + b, '=', end - b);
        size_t klen = eq ? (size_t)(eq - line) : 0;
        while (klen > b && (s_config_blank(line[klen - 1]) ||
                            line[klen - 1] == '\r'))
            klen--;
        if (!eq || klen == b)
            e->syntax = true; /* no '=', or an empty key */
        else
            e->settings++;
    }
}

typedef struct {
    int calls;
} s_config_seen_t;

/* The parser's callback: checks what it is given, accepts everything
 * but the key "fail", which exercises the error path. */
static int
s_config_setting(const char *key, const char *value, void *arg, char *err,
                 size_t errlen)
{
    s_config_seen_t *seen = arg;
    seen->calls++;
    size_t klen = strlen(key), vlen = strlen(value);
    FUZZ_CHECK(klen > 0, "empty key");
    FUZZ_CHECK(!strchr(key, '='), "key '%s' holds '='", key);
    FUZZ_CHECK(key[0] != '#', "comment handed out as key '%s'", key);
    FUZZ_CHECK(!s_config_blank(key[0]) && !s_config_blank(key[klen - 1]) &&
                   key[klen - 1] != '\r',
               "key '%s' not trimmed", key);
    FUZZ_CHECK(!strchr(key, '\n') && !strchr(value, '\n'), "newline");
    FUZZ_CHECK(klen + vlen < 1023, "setting longer than a line");
    if (strcmp(key, "fail") == 0) {
        snprintf(err, errlen, "refused '%s'", value);
        return DMP_ECONFIG;
    }
    return 0;
}

/* What node_config_load let through: the agent trusts it from here on. */
static void
s_config_check_node(const node_config_t *cfg)
{
    FUZZ_CHECK(dmp__name_valid(cfg->name), "name '%s'", cfg->name);
    if (cfg->listen[0]) {
        FUZZ_CHECK(strncmp(cfg->listen, "tcp://", 6) == 0 &&
                       dmp__endpoint_valid(cfg->listen),
                   "listen '%s'", cfg->listen);
        FUZZ_CHECK(strncmp(cfg->advertise, "tcp://", 6) == 0 &&
                       dmp__endpoint_valid(cfg->advertise),
                   "advertise '%s'", cfg->advertise);
        FUZZ_CHECK(cfg->key_file[0] && cfg->keys_dir[0],
                   "listening without key or keys dir");
    } else {
        FUZZ_CHECK(cfg->n_peers == 0, "peers without listen");
    }
    FUZZ_CHECK(cfg->n_peers <= NODE_PEERS_MAX, "n_peers");
    for (size_t i = 0; i < cfg->n_peers; i++)
        FUZZ_CHECK(dmp__name_valid(cfg->peers[i].name) &&
                       strncmp(cfg->peers[i].address, "tcp://", 6) == 0 &&
                       dmp__endpoint_valid(cfg->peers[i].address),
                   "peer %zu '%s@%s'", i, cfg->peers[i].name,
                   cfg->peers[i].address);
    FUZZ_CHECK(cfg->heartbeat >= 0.01 && cfg->heartbeat <= 3600,
               "heartbeat %g", cfg->heartbeat);
    FUZZ_CHECK(cfg->liveness >= 2 && cfg->liveness <= 1000, "liveness %u",
               cfg->liveness);
    FUZZ_CHECK(cfg->log_level >= DMP_LOG_ERROR &&
                   cfg->log_level <= DMP_LOG_DEBUG,
               "log level %d", (int)cfg->log_level);
    FUZZ_CHECK(memchr(cfg->key_file, '\0', sizeof cfg->key_file) &&
                   memchr(cfg->keys_dir, '\0', sizeof cfg->keys_dir) &&
                   memchr(cfg->runtime_dir, '\0', sizeof cfg->runtime_dir) &&
                   memchr(cfg->cache_dir, '\0', sizeof cfg->cache_dir),
               "unterminated path");
}

static node_config_t s_config_cfg; /* large: not on the stack */

FUZZ_TARGET(config)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/dmpd.conf", fuzz_tmpdir());
    fuzz_write_file(path, data, size, 0600);

    s_config_expect_t want;
    s_config_expect(data, size, &want);
    bool has_nul = memchr(data, '\0', size) != NULL;

    s_config_seen_t seen = {0};
    char err[512] = "";
    int rc = dmp__config_parse(path, s_config_setting, &seen, err, sizeof err);
    if (rc != 0) {
        FUZZ_CHECK(rc == DMP_ECONFIG, "rc %d", rc);
        FUZZ_CHECK(err[0] && memchr(err, '\0', sizeof err),
                   "error without a message");
        FUZZ_CHECK(strncmp(err, path, strlen(path)) == 0,
                   "error does not name the file: %s", err);
    }
    if (!has_nul) {
        bool fail_key = false; /* a "fail" key stops the parse early */
        if (rc == 0) {
            FUZZ_CHECK(!want.too_long, "a line over 1022 bytes accepted");
            FUZZ_CHECK(!want.syntax, "a malformed line accepted");
            FUZZ_CHECK(seen.calls == want.settings,
                       "%d settings handed out, %d in the file", seen.calls,
                       want.settings);
        } else {
            fail_key = strstr(err, ": refused '") != NULL;
            FUZZ_CHECK(fail_key || want.too_long || want.syntax,
                       "a well-formed file refused: %s", err);
        }
        if (want.too_long && !fail_key)
            FUZZ_CHECK(rc == DMP_ECONFIG && strstr(err, "line too long"),
                       "long line: rc %d '%s'", rc, err);
    }

    /* dmpd -c FILE: the same file through the agent's own settings. */
    char *argv[] = {"dmpd", "-c", path, NULL};
    optind = 0; /* getopt keeps state between calls */
    fuzz_quiet(true);
    int status = node_config_load(&s_config_cfg, 3, argv);
    fuzz_quiet(false);
    FUZZ_CHECK(status == -1 || status == 2, "node_config_load returned %d",
               status);
    if (status == -1) {
        FUZZ_CHECK(rc == 0 || strstr(err, ": refused '"),
                   "dmpd accepted a file the parser refused: %s", err);
        s_config_check_node(&s_config_cfg);
    }
    return 0;
}
