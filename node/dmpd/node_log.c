/*
 * node_log.c - the agent's log: one line per event on stderr.
 *
 * Format: "2026-11-26T15:04:05.123Z dmpd[node1] warn func: message k=v".
 * Messages follow git's style: lowercase, what failed first, subjects
 * quoted. Secret keys never reach this file; public keys appear as
 * fingerprints.
 */
#define _GNU_SOURCE
#include "node.h"

#include <stdarg.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

dmp_log_level_t node_log_level = DMP_LOG_INFO;
static char s_name[DMP__NAME_MAX] = "-";

void
node_log_set_name(const char *name)
{
    dmp__strlcpy(s_name, name, sizeof s_name);
}

void
node_log(dmp_log_level_t level, const char *func, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    if (level > node_log_level)
        return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* One fprintf per line: stderr is unbuffered, so lines from the ZAP
     * thread and the main loop do not interleave within a line. */
    fprintf(stderr, "%s.%03ldZ dmpd[%s] %s %s: %s\n", stamp,
            (long)(tv.tv_usec / 1000), s_name, names[level], func, msg);
}
