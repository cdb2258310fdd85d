/*
 * node_poll.c - the agent keeps polling, without sleeping, while a pipe
 * conversation is likely to go on.
 *
 * A pipe round trip across hosts passes through the owner's agent twice:
 * the remote process's message arrives and we put it in the ring, waking
 * the local reader; its answer wakes us through the FIFO and we send it
 * on. Each of those wake-ups is a sleeping thread being scheduled again,
 * the costliest step of the trip on a virtual machine whose idle CPUs
 * halt. So after we serve a pipe (a put, get or poll of a process that
 * does not map the rings, or a parked one answered), the loop polls its
 * sockets and the FIFO with no timeout for busy_poll microseconds (like
 * Linux's busy_poll for sockets), and sees the answer without going to
 * sleep.
 *
 * Only pipes: a pipe is a conversation whose next message is likely to
 * come soon; queues carry streams (a pool's tasks among them), for which
 * a polling agent would take CPU from the workers. And only while it
 * pays: a window pays when, after at least one round that found nothing
 * (so polling, not sleeping, was what waited), a pipe is served again.
 * After POLL_MISSES windows in a row that did not pay, a window opens for
 * one serve in POLL_PROBE only (as the ring's waiters spin, dmp_ring.c),
 * so a pipe with a message now and then costs almost nothing.
 */
#define _GNU_SOURCE
#include "node.h"

#define POLL_MISSES 4
#define POLL_PROBE 16

void
node_poll_soon(node_t *node, double now)
{
    double len = node->cfg.busy_poll_us * 1e-6;
    if (len <= 0)
        return;
    if (node->poll_until > 0 && now < node->poll_until) { /* open */
        if (node->poll_waited) /* polling waited for this one: paid */
            node->poll_hit = true;
        node->poll_waited = false;
        node->poll_until = now + len;
        return;
    }
    node_poll_now(node, now); /* closes a window past its end */
    if (node->poll_misses >= POLL_MISSES &&
        ++node->poll_skips % POLL_PROBE != 0)
        return;
    node->poll_until = now + len;
    node->poll_hit = false;
    node->poll_waited = false;
    node->poll_rounds = 0;
}

bool
node_poll_now(node_t *node, double now)
{
    if (node->poll_until <= 0)
        return false;
    if (now < node->poll_until)
        return true;
    /* The window ended. One that never polled (the loop was busy all
     * along) says nothing either way. */
    if (node->poll_hit)
        node->poll_misses = 0;
    else if (node->poll_rounds > 0 && node->poll_misses < POLL_MISSES)
        node->poll_misses++;
    node->poll_until = 0;
    return false;
}

void
node_poll_saw(node_t *node, bool polled, int events)
{
    if (!polled)
        return;
    node->poll_rounds++;
    if (events == 0)
        node->poll_waited = true;
}
