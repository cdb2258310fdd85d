/*
 * bench_common.h - what the benchmarks that reach another node share:
 * which node that is, and where their raw ZeroMQ reference runs.
 * Included by the benchmarks that use it (static inline: one copy each).
 */
#ifndef DMP_BENCH_COMMON_H
#define DMP_BENCH_COMMON_H

#include <dmp.h>
#include <stdio.h>
#include <stdlib.h>

/* The second alive node dmp_nodes lists (the first is ours), or "". */
static inline void
s_other_node(char *out, size_t size)
{
    dmp_node_info_t *nodes;
    size_t n;
    out[0] = '\0';
    if (dmp_nodes(&nodes, &n) != 0)
        return;
    for (size_t i = 1; i < n; i++)
        if (nodes[i].state == DMP_NODE_ALIVE) {
            snprintf(out, size, "%s", nodes[i].name);
            break;
        }
    dmp_nodes_free(&nodes);
}

/* Where the raw reference runs: DMP_BENCH_HOST (this host's address as
 * the other node reaches it; tests/bench/netns_bench.sh sets it) puts
 * its far end on the other node, across the same network as dmp's
 * traffic; else both ends are on this host, over 127.0.0.1. */
static inline void
s_raw_where(char bind[128], char node[256])
{
    const char *host = getenv("DMP_BENCH_HOST");
    snprintf(bind, 128, "tcp://%s:*", host && *host ? host : "127.0.0.1");
    snprintf(node, 256, "local");
    if (host && *host)
        s_other_node(node, 256);
}

#endif
