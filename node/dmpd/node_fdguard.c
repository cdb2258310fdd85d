/*
 * node_fdguard.c - stop accepting local connections before descriptors run
 * out.
 *
 * libzmq 4.3 aborts the whole process when accept() on an ipc listener
 * fails with EMFILE (an errno_assert in ipc_listener.cpp), so an agent
 * whose descriptors run out would die, taking every client and job with
 * it. Instead, the main loop calls node_fdguard_check after each round:
 * when fewer than a reserve of descriptors are free, the agent renames
 * its socket (RUNTIME_DIR/dmpd.sock -> dmpd.sock.full). New local
 * connections then fail in the kernel (a client's connect times out with
 * DMP_ENODE; libzmq retries), nothing reaches the listener, and the
 * established connections go on being served. Once enough descriptors are
 * free, the name comes back. (zmq_unbind would also drop every connection
 * accepted through the listener.) A tcp listener that cannot accept does
 * not abort: libzmq retries it until descriptors are free.
 *
 * Measure: the lowest free descriptor (what dup returns). Descriptors are
 * handed out lowest first, so when even the lowest free one is near the
 * limit, almost all are in use. One dup and one close a round.
 *
 * Known limit: libzmq accepts on its own thread; a burst of connections
 * larger than the reserve arriving within one round of the loop (at most
 * a heartbeat) can still reach the limit before the check sees it.
 */
#define _GNU_SOURCE
#include "node.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/resource.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define RESERVE_MIN 32
#define RESERVE_MAX 1024

static bool s_paused;

/* Where the socket waits while we do not accept. */
static void
s_paused_path(node_t *node, char *out, size_t size)
{
    snprintf(out, size, "%s.full", node->ipc_path);
}

/* Descriptors to keep free: an eighth of the limit, within bounds. */
static long
s_reserve(long limit)
{
    long r = limit / 8;
    return r < RESERVE_MIN ? RESERVE_MIN : r > RESERVE_MAX ? RESERVE_MAX : r;
}

/* How many descriptors lie above the lowest free one; 0 when none free. */
static long
s_headroom(node_t *node, long *limit_p)
{
    struct rlimit rl;
    long limit = INT_MAX;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)INT_MAX)
        limit = (long)rl.rlim_cur;
    *limit_p = limit;
    int fd = dup(node->sig_fd);
    if (fd < 0)
        return 0;
    close(fd);
    return limit - fd;
}

static void
s_pause(node_t *node, long headroom, long limit)
{
    char paused[PATH_MAX + 8];
    s_paused_path(node, paused, sizeof paused);
    if (rename(node->ipc_path, paused) != 0) {
        warn_f("cannot rename '%s': %s", node->ipc_path, strerror(errno));
        return;
    }
    s_paused = true;
    warn_f("descriptors nearly exhausted (%ld of %ld free): not accepting "
           "local connections until some are freed", headroom, limit);
}

static void
s_resume(node_t *node, long headroom, long limit)
{
    char paused[PATH_MAX + 8];
    s_paused_path(node, paused, sizeof paused);
    if (rename(paused, node->ipc_path) != 0) {
        warn_f("cannot rename '%s' back: %s", paused, strerror(errno));
        return; /* tried again next round */
    }
    s_paused = false;
    info_f("accepting local connections again (%ld of %ld descriptors "
           "free)", headroom, limit);
}

void
node_fdguard_check(node_t *node)
{
    long limit;
    long headroom = s_headroom(node, &limit);
    long reserve = s_reserve(limit);
    if (!s_paused && headroom < reserve)
        s_pause(node, headroom, limit);
    else if (s_paused && headroom >= 2 * reserve)
        s_resume(node, headroom, limit);
}
