/*
 * dmp_config.c - "key = value" configuration files.
 *
 * One setting a line; '#' starts a comment line; blank lines are skipped;
 * a key may repeat (the callback decides what repetition means, e.g. one
 * `peer` line per peer). Values may be wrapped in double quotes. Errors
 * name the file and the line, in git's style.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <stdio.h>
#include <string.h>

static char *
s_trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t len = strlen(s);
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t' ||
                   s[len - 1] == '\r' || s[len - 1] == '\n'))
        s[--len] = '\0';
    return s;
}

int
dmp__config_parse(const char *path, dmp__config_fn fn, void *arg, char *err,
                  size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(err, errlen, "cannot open config '%s': %s", path,
                 strerror(errno));
        return DMP_ECONFIG;
    }
    char line[1024];
    int lineno = 0;
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            snprintf(err, errlen, "%s:%d: line too long", path, lineno);
            rc = DMP_ECONFIG;
            break;
        }
        char *s = s_trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%d: expected 'key = value'", path,
                     lineno);
            rc = DMP_ECONFIG;
            break;
        }
        *eq = '\0';
        char *key = s_trim(s);
        char *value = s_trim(eq + 1);
        size_t vlen = strlen(value);
        if (vlen >= 2 && value[0] == '"' && value[vlen - 1] == '"') {
            value[vlen - 1] = '\0';
            value++;
        }
        if (*key == '\0') {
            snprintf(err, errlen, "%s:%d: empty key", path, lineno);
            rc = DMP_ECONFIG;
            break;
        }
        char why[512] = "";
        rc = fn(key, value, arg, why, sizeof why);
        if (rc)
            snprintf(err, errlen, "%s:%d: %s", path, lineno,
                     why[0] ? why : dmp_strerror(rc));
    }
    fclose(f);
    return rc;
}
