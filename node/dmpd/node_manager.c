/*
 * node_manager.c - managers by name: the agent of a manager's node keeps
 * its address, so that any process of the cluster (and a program outside
 * it, through any node) finds it by name.
 *
 * A manager registers over our local socket only (a process we started:
 * remote peers cannot claim names here), with its process id at this
 * node. An entry lives while that process runs: a lookup of a manager
 * whose process ended forgets it and answers -ENOENT, and a name held by
 * a running manager cannot be taken (-EEXIST). The address is opaque here.
 */
#define _GNU_SOURCE
#include "node.h"

#include <string.h>

#define NAMES_MAX 256

typedef struct {
    char name[DMP__NAME_MAX];
    uint8_t *addr;
    size_t len;
    uint64_t proc;
} s_entry_t;

static s_entry_t s_names[NAMES_MAX];

static bool
s_running(node_t *node, uint64_t proc)
{
    for (node_proc_t *p = node->procs; p; p = p->next)
        if (p->id == proc)
            return p->running;
    return false;
}

static void
s_forget(s_entry_t *e)
{
    dmp__free(e->addr);
    memset(e, 0, sizeof *e);
}

/* The live entry of name, or NULL (dead ones are forgotten on the way). */
static s_entry_t *
s_find(node_t *node, const char *name)
{
    for (size_t i = 0; i < NAMES_MAX; i++) {
        s_entry_t *e = &s_names[i];
        if (!e->name[0] || strcmp(e->name, name) != 0)
            continue;
        if (s_running(node, e->proc))
            return e;
        s_forget(e);
    }
    return NULL;
}

void
node_manager_name(node_t *node, const dmp__msg_t *req, bool local,
                  dmp__msg_t *rep)
{
    const char *name = req->u.mgr_name.name;
    s_entry_t *e = s_find(node, name);
    switch (req->u.mgr_name.op) {
    case DMP__MGR_NAME_REGISTER: {
        if (!local || !req->u.mgr_name.len ||
            !s_running(node, req->u.mgr_name.proc)) {
            dmp__msg_error(rep, req->id, -EPERM, "only a process of node "
                           "'%s' may register a manager there",
                           node->cfg.name);
            return;
        }
        if (e && e->proc != req->u.mgr_name.proc) {
            dmp__msg_error(rep, req->id, -EEXIST, "a manager named '%s' "
                           "runs on node '%s'", name, node->cfg.name);
            return;
        }
        if (!e)
            for (size_t i = 0; i < NAMES_MAX && !e; i++)
                if (!s_names[i].name[0])
                    e = &s_names[i];
        uint8_t *addr = e ? dmp__malloc(req->u.mgr_name.len) : NULL;
        if (!addr) {
            dmp__msg_error(rep, req->id, e ? -ENOMEM : -ENOSPC,
                           "cannot register manager '%s'", name);
            return;
        }
        memcpy(addr, req->u.mgr_name.addr, req->u.mgr_name.len);
        dmp__free(e->addr);
        dmp__strlcpy(e->name, name, sizeof e->name);
        e->addr = addr;
        e->len = req->u.mgr_name.len;
        e->proc = req->u.mgr_name.proc;
        info_f("manager '%s' registered proc=%llu", name,
               (unsigned long long)e->proc);
        rep->kind = DMP__MSG_OK;
        return;
    }
    case DMP__MGR_NAME_UNREGISTER:
        if (e && local)
            s_forget(e);
        rep->kind = DMP__MSG_OK;
        return;
    default:
        if (!e) {
            dmp__msg_error(rep, req->id, -ENOENT, "no manager named '%s' "
                           "on node '%s'", name, node->cfg.name);
            return;
        }
        rep->kind = DMP__MSG_MGR_NAME;
        rep->u.mgr_name.op = DMP__MGR_NAME_LOOKUP;
        dmp__strlcpy(rep->u.mgr_name.name, name, DMP__NAME_MAX);
        rep->u.mgr_name.addr = dmp__malloc(e->len);
        if (!rep->u.mgr_name.addr) {
            dmp__msg_error(rep, req->id, -ENOMEM, "out of memory");
            return;
        }
        memcpy(rep->u.mgr_name.addr, e->addr, e->len);
        rep->u.mgr_name.len = e->len;
        rep->u.mgr_name.proc = e->proc;
        return;
    }
}

void
node_manager_close(void)
{
    for (size_t i = 0; i < NAMES_MAX; i++)
        s_forget(&s_names[i]);
}
