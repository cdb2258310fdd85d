/*
 * dmp_target.c - registered targets, and the child side of a spawn.
 *
 * DMP_TARGET/DMP_REGISTER add targets from constructors, before main, so
 * the registry is complete by the time main calls dmp_init. A child is the
 * same executable started by an agent with DMP_CHILD naming the fd of its
 * spawn record (the SpawnRequest it was started for); dmp_init sees that,
 * runs the target with the decoded arguments and exits with its return
 * value, like Python's spawn start method re-entering the main module.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static dmp_target_t *s_targets;
static char s_process_name[DMP__NAME_MAX] = "MainProcess";
static char s_node[DMP__NAME_MAX];

void
dmp_target_register(dmp_target_t *target)
{
    pthread_mutex_lock(&s_lock);
    target->next = s_targets;
    s_targets = target;
    pthread_mutex_unlock(&s_lock);
}

dmp_target_fn
dmp__target_find(const char *name)
{
    pthread_mutex_lock(&s_lock);
    dmp_target_fn fn = NULL;
    for (dmp_target_t *t = s_targets; t && !fn; t = t->next)
        if (strcmp(t->name, name) == 0)
            fn = t->fn;
    pthread_mutex_unlock(&s_lock);
    return fn;
}

const char *
dmp_current_process_name(void)
{
    return s_process_name;
}

void
dmp__target_forget_node(void)
{
    if (strcmp(s_process_name, "MainProcess") == 0)
        s_node[0] = '\0'; /* a child's node never changes */
}

const char *
dmp_current_node(void)
{
    if (!s_node[0]) {
        dmp_client_t *c = dmp_default_client();
        const char *env = getenv("DMP_NODE");
        if (env && dmp__name_valid(env))
            dmp__strlcpy(s_node, env, sizeof s_node);
        else if (c)
            dmp__strlcpy(s_node, dmp_client_node(c), sizeof s_node);
    }
    return s_node;
}

/* Reads everything from fd (a spawn record: bounded by the frame limit). */
static int
s_read_all(int fd, uint8_t **buf_p, size_t *len_p)
{
    size_t cap = 4096, len = 0;
    uint8_t *buf = dmp__malloc(cap);
    if (!buf)
        return -ENOMEM;
    for (;;) {
        if (len == cap) {
            if (cap >= DMP__WIRE_MAX * 2) {
                dmp__free(buf);
                return DMP_EPROTO;
            }
            uint8_t *grown = dmp__realloc(buf, cap * 2);
            if (!grown) {
                dmp__free(buf);
                return -ENOMEM;
            }
            buf = grown;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    *buf_p = buf;
    *len_p = len;
    return 0;
}

void
dmp__child_run(const uint8_t *record, size_t len)
{
    dmp__msg_t rec;
    if (dmp__wire_decode(record, len, &rec) != 0 ||
        rec.kind != DMP__MSG_SPAWN_REQUEST) {
        fprintf(stderr, "dmp: cannot read this child's spawn record\n");
        _exit(127);
    }
    unsetenv("DMP_CHILD"); /* our own children are spawned afresh */
    dmp__strlcpy(s_process_name, rec.u.spawn_request.name,
                 sizeof s_process_name);
    dmp__strlcpy(s_node, rec.node, sizeof s_node);
    dmp_target_fn fn = dmp__target_find(rec.u.spawn_request.target);
    if (!fn) {
        fprintf(stderr, "dmp: no target '%s' in this executable (register "
                "it with DMP_TARGET)\n", rec.u.spawn_request.target);
        _exit(127);
    }
    dmp_value_t *args = NULL;
    int rc = rec.u.spawn_request.args_len
                 ? dmp_value_decode(rec.u.spawn_request.args,
                                    rec.u.spawn_request.args_len, &args)
                 : ((args = dmp_list()) ? 0 : -ENOMEM);
    dmp__msg_clear(&rec);
    if (rc) {
        fprintf(stderr, "dmp: cannot decode the arguments of '%s': %s\n",
                s_process_name, dmp_strerror(rc));
        _exit(127);
    }
    /* No connection yet: a child that never needs its agent never pays for
     * one; the first call that does (dmp_process_start, dmp_nodes, ...)
     * connects through dmp_init and DMP_AGENT. */
    int status = fn(args);
    dmp_value_destroy(&args);
    fflush(stdout);
    fflush(stderr);
    dmp_fini();
    exit(status);
}

void
dmp__child_main(const char *fd_text)
{
    unsigned long fd;
    uint8_t *buf;
    size_t len;
    if (dmp__parse_uint(fd_text, 1024, &fd) != 0 ||
        s_read_all((int)fd, &buf, &len) != 0) {
        fprintf(stderr, "dmp: cannot read this child's spawn record\n");
        _exit(127);
    }
    close((int)fd);
    dmp__child_run(buf, len);
}
