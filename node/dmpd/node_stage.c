/*
 * node_stage.c - items that cross hosts in parts, staged here until whole.
 *
 * A frame carries at most DMP__WIRE_MAX bytes; an item put from another
 * host may be as large as its ring's item_max (64 MiB by default). Its
 * sender cuts it into PUT_PART RingOps, in order, under a number of its
 * own (seq); we gather them here and put the item once its last part is
 * in, so a getter sees the whole item or nothing. A sender that dies or
 * gives up halfway leaves a stage that nobody finishes: it is dropped
 * after STAGE_IDLE_S without a part, when its node is lost, or when its
 * object goes. All stages together hold at most STAGED_MAX bytes; beyond
 * that a new item is refused (-ENOBUFS), never half taken.
 */
#define _GNU_SOURCE
#include "node.h"

#include <string.h>

#define STAGE_IDLE_S 30.0
#define STAGED_MAX (512ull << 20)

struct node_stage {
    struct node_stage *next;
    char from[DMP__NAME_MAX]; /* who sends it: a peer or a linked job */
    uint64_t seq;             /* the sender's number for it */
    uint64_t obj;
    uint32_t ring;
    uint8_t *data;            /* total bytes, filled up to `have` */
    uint64_t total;
    uint64_t have;
    double touched;           /* monotonic: its last part */
};

static void
s_drop(node_t *node, struct node_stage **sp)
{
    struct node_stage *s = *sp;
    *sp = s->next;
    node->staged -= s->total;
    dmp__free(s->data);
    dmp__free(s);
}

/* Where the stage of (from, seq) is linked, or the list's end. */
static struct node_stage **
s_find(node_t *node, const char *from, uint64_t seq)
{
    struct node_stage **sp = &node->stages;
    while (*sp && !((*sp)->seq == seq && strcmp((*sp)->from, from) == 0))
        sp = &(*sp)->next;
    return sp;
}

int
node_stage_part(node_t *node, const char *from, uint64_t obj, uint32_t ring,
                uint64_t item_max, const dmp__msg_t *req, uint8_t **item_p,
                size_t *len_p)
{
    uint64_t seq = req->u.ring_op.seq;
    uint64_t offset = req->u.ring_op.offset;
    uint64_t total = req->u.ring_op.total;
    struct node_stage **sp = s_find(node, from, seq);
    if (*sp && offset == 0) {
        s_drop(node, sp); /* started over */
        sp = s_find(node, from, seq);
    }
    struct node_stage *s = *sp;
    if (!s) {
        if (offset != 0)
            return -ESTALE; /* its stage expired or its start was lost */
        if (total > item_max)
            return -EMSGSIZE;
        if (total > STAGED_MAX - node->staged)
            return -ENOBUFS;
        s = dmp__calloc(1, sizeof *s);
        uint8_t *data = s ? dmp__malloc(total ? total : 1) : NULL;
        if (!data) {
            dmp__free(s);
            return -ENOMEM;
        }
        dmp__strlcpy(s->from, from, sizeof s->from);
        s->seq = seq;
        s->obj = obj;
        s->ring = ring;
        s->data = data;
        s->total = total;
        node->staged += total;
        s->next = node->stages;
        node->stages = s;
        sp = &node->stages;
    }
    /* Parts come in order on one connection; anything else is a broken
     * sender, whose item is dropped rather than put with a hole. */
    if (s->obj != obj || s->ring != ring || s->total != total ||
        offset != s->have) {
        s_drop(node, sp);
        return DMP_EPROTO;
    }
    memcpy(s->data + s->have, req->u.ring_op.data, req->u.ring_op.len);
    s->have += req->u.ring_op.len;
    s->touched = dmp__now();
    if (s->have < s->total)
        return 1;
    *item_p = s->data;
    *len_p = (size_t)s->total;
    s->data = NULL;
    s_drop(node, sp);
    return 0;
}

void
node_stage_tick(node_t *node, double now)
{
    for (struct node_stage **sp = &node->stages; *sp;) {
        if (now - (*sp)->touched > STAGE_IDLE_S) {
            debug_f("dropping a part-sent item of %s (%llu of %llu bytes): "
                    "no part for %.0f s", (*sp)->from,
                    (unsigned long long)(*sp)->have,
                    (unsigned long long)(*sp)->total, STAGE_IDLE_S);
            s_drop(node, sp);
        } else {
            sp = &(*sp)->next;
        }
    }
}

void
node_stage_forget(node_t *node, const char *peer, uint64_t obj)
{
    size_t n = peer ? strlen(peer) : 0;
    for (struct node_stage **sp = &node->stages; *sp;) {
        struct node_stage *s = *sp;
        /* A peer's own stages, and those of its jobs' links (job/PEER/PID). */
        bool gone = peer ? strcmp(s->from, peer) == 0 ||
                               (strncmp(s->from, "job/", 4) == 0 &&
                                strncmp(s->from + 4, peer, n) == 0 &&
                                s->from[4 + n] == '/')
                         : s->obj == obj;
        if (gone)
            s_drop(node, sp);
        else
            sp = &s->next;
    }
}

void
node_stage_close(node_t *node)
{
    while (node->stages)
        s_drop(node, &node->stages);
}
