/*
 * test_node_stage.c - items that cross hosts in parts, staged at their
 * owner until whole (node_stage.c): assembly, refusals that leave nothing
 * behind, the staging bound, and the ways a stage nobody finishes goes.
 *
 * The functions run on a zeroed node_t, as the agent's loop calls them;
 * no agent or socket is needed.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "node.h"

#include <stdlib.h>
#include <string.h>

#define MIB (1ull << 20)
#define ITEM_MAX (64 * MIB)

static node_t *
s_node(void)
{
    node_t *node = calloc(1, sizeof *node);
    assert_non_null(node);
    return node;
}

static void
s_free(node_t *node)
{
    node_stage_close(node);
    assert_int_equal(node->staged, 0);
    free(node);
}

/* Sends bytes [offset, offset + len) of an item of `total` bytes whose
 * byte k is (k * 7 + seq) & 0xff. */
static int
s_part(node_t *node, const char *from, uint64_t obj, uint64_t seq,
       uint64_t offset, size_t len, uint64_t total, uint8_t **item,
       size_t *item_len)
{
    uint8_t *data = malloc(len ? len : 1);
    assert_non_null(data);
    for (size_t k = 0; k < len; k++)
        data[k] = (uint8_t)((offset + k) * 7 + seq);
    dmp__msg_t req = {.kind = DMP__MSG_RING_OP};
    req.u.ring_op.obj = obj;
    req.u.ring_op.op = DMP__RING_PUT_PART;
    req.u.ring_op.data = data;
    req.u.ring_op.len = len;
    req.u.ring_op.seq = seq;
    req.u.ring_op.offset = offset;
    req.u.ring_op.total = total;
    int rc = node_stage_part(node, from, obj, 0, ITEM_MAX, &req, item,
                             item_len);
    free(data);
    return rc;
}

static void
test_stage_assembles_parts_in_order(void **state)
{
    (void)state;
    node_t *node = s_node();
    uint8_t *item = NULL;
    size_t len = 0;
    assert_int_equal(s_part(node, "node2", 1, 5, 0, 1000, 2500, &item, &len),
                     1);
    assert_int_equal(node->staged, 2500);
    assert_int_equal(s_part(node, "node2", 1, 5, 1000, 1000, 2500, &item,
                            &len), 1);
    assert_null(item);
    assert_int_equal(s_part(node, "node2", 1, 5, 2000, 500, 2500, &item,
                            &len), 0);
    assert_non_null(item);
    assert_int_equal(len, 2500);
    for (size_t k = 0; k < len; k++)
        assert_int_equal(item[k], (uint8_t)(k * 7 + 5));
    dmp__free(item);
    assert_int_equal(node->staged, 0);
    assert_null(node->stages);
    s_free(node);
}

/* Two senders may use the same number: stages are theirs. */
static void
test_stage_keeps_senders_apart(void **state)
{
    (void)state;
    node_t *node = s_node();
    uint8_t *item = NULL;
    size_t len = 0;
    assert_int_equal(s_part(node, "job/node3/42", 1, 9, 0, 10, 30, &item,
                            &len), 1);
    assert_int_equal(s_part(node, "node2", 1, 9, 0, 10, 20, &item, &len), 1);
    /* node2 starts its item over: only its own stage goes */
    assert_int_equal(s_part(node, "node2", 1, 9, 0, 10, 20, &item, &len), 1);
    assert_int_equal(node->staged, 50);
    assert_int_equal(s_part(node, "node2", 1, 9, 10, 10, 20, &item, &len), 0);
    assert_int_equal(len, 20);
    dmp__free(item);
    item = NULL;
    assert_int_equal(s_part(node, "job/node3/42", 1, 9, 10, 20, 30, &item,
                            &len), 0);
    assert_int_equal(len, 30);
    dmp__free(item);
    s_free(node);
}

/* A part out of order, another object or size: the item is dropped, not
 * put with a hole; a part of an unknown stage is stale. */
static void
test_stage_drops_an_item_with_a_broken_part(void **state)
{
    (void)state;
    node_t *node = s_node();
    uint8_t *item = NULL;
    size_t len = 0;
    assert_int_equal(s_part(node, "n", 1, 1, 0, 10, 40, &item, &len), 1);
    assert_int_equal(s_part(node, "n", 1, 1, 20, 10, 40, &item, &len),
                     DMP_EPROTO);
    assert_int_equal(node->staged, 0);
    assert_int_equal(s_part(node, "n", 1, 1, 10, 10, 40, &item, &len),
                     -ESTALE);
    assert_int_equal(s_part(node, "n", 1, 2, 0, 10, 40, &item, &len), 1);
    assert_int_equal(s_part(node, "n", 2, 2, 10, 10, 40, &item, &len),
                     DMP_EPROTO);
    assert_int_equal(s_part(node, "n", 1, 3, 0, 10, 40, &item, &len), 1);
    assert_int_equal(s_part(node, "n", 1, 3, 10, 10, 50, &item, &len),
                     DMP_EPROTO);
    assert_null(item);
    assert_int_equal(node->staged, 0);
    s_free(node);
}

/* Over the ring's item_max: refused at the first part; over what all
 * stages may hold: -ENOBUFS until one goes. */
static void
test_stage_refuses_items_over_the_limits(void **state)
{
    (void)state;
    node_t *node = s_node();
    uint8_t *item = NULL;
    size_t len = 0;
    assert_int_equal(s_part(node, "n", 1, 1, 0, 10, ITEM_MAX + 1, &item,
                            &len), -EMSGSIZE);
    assert_int_equal(node->staged, 0);
    /* 8 x 64 MiB fill the 512 MiB (reserved, not touched) */
    for (uint64_t seq = 1; seq <= 8; seq++)
        assert_int_equal(s_part(node, "n", 1, seq, 0, 10, ITEM_MAX, &item,
                                &len), 1);
    assert_int_equal(s_part(node, "n", 1, 9, 0, 10, 1000, &item, &len),
                     -ENOBUFS);
    node_stage_forget(node, NULL, 1);
    assert_int_equal(node->staged, 0);
    assert_int_equal(s_part(node, "n", 1, 9, 0, 10, 1000, &item, &len), 1);
    s_free(node);
}

/* A lost peer takes its stages and its jobs' with it; an object that
 * goes, its own; a stage idle for 30 s goes at a tick. */
static void
test_stage_goes_with_its_peer_object_or_time(void **state)
{
    (void)state;
    node_t *node = s_node();
    uint8_t *item = NULL;
    size_t len = 0;
    const char *from[] = {"node2", "job/node2/7", "job/node22/7", "node22",
                          "job/node3/7"};
    for (uint64_t i = 0; i < 5; i++)
        assert_int_equal(s_part(node, from[i], 1 + i % 2, i + 1, 0, 10, 100,
                                &item, &len), 1);
    assert_int_equal(node->staged, 500);
    node_stage_forget(node, "node2", 0);
    assert_int_equal(node->staged, 300); /* not node22 nor its job */
    assert_int_equal(s_part(node, "node2", 1, 1, 10, 10, 100, &item, &len),
                     -ESTALE);
    node_stage_forget(node, NULL, 2); /* node22 staged for object 2 */
    assert_int_equal(node->staged, 200);
    double now = dmp__now();
    node_stage_tick(node, now + 1.0);
    assert_int_equal(node->staged, 200);
    node_stage_tick(node, now + 31.0);
    assert_int_equal(node->staged, 0);
    assert_null(node->stages);
    s_free(node);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stage_assembles_parts_in_order),
        cmocka_unit_test(test_stage_keeps_senders_apart),
        cmocka_unit_test(test_stage_drops_an_item_with_a_broken_part),
        cmocka_unit_test(test_stage_refuses_items_over_the_limits),
        cmocka_unit_test(test_stage_goes_with_its_peer_object_or_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
