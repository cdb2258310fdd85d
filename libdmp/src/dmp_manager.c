/*
 * dmp_manager.c - the client side of a manager: start, connect, calls.
 *
 * A connection (dmp_manager_t) is a reply queue of our own node, a handle
 * on the server's request queue, and the client id the server gave us in
 * its answer to our Hello. A call puts one request and waits for its reply
 * on the reply queue: on this host both are shared-memory rings, so a call
 * costs two futex wake-ups and no agent; across hosts the agents carry
 * both. While waiting, the connection checks now and then that the server
 * still lives (its pid on this host, its process at its node elsewhere),
 * so a dead manager gives DMP_ENODE instead of a hang.
 *
 * One connection per manager per process: proxies opened from values find
 * the connection of their manager (by incarnation) or make it, and hold a
 * reference on it. Calls on one connection are serialised by its lock.
 * A connection to a manager on another host renews its lease there every
 * second from a thread of its own.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S_SLICE_LOCAL 0.1   /* reply wait between liveness checks */
#define S_SLICE_REMOTE 1.0
#define S_KEEPALIVE 1.0     /* lease renewal, well within the lease */
#define S_BOOT_WAIT 30.0    /* a new server says where it listens */

struct dmp_manager {
    struct dmp_manager *next;  /* in s_conns */
    int refs;                  /* the user's handle and proxies (s_lock) */
    pthread_mutex_t call;      /* one call at a time */
    char name[DMP__NAME_MAX];
    char node[DMP__NAME_MAX];
    char lookup[DMP__ADDR_MAX + DMP__NAME_MAX]; /* connect()'s argument */
    pid_t pid;                 /* the server: pid, start time, proc id */
    uint64_t start, proc, incarnation;
    dmp_value_t *addr;         /* its address list, for proxy values */
    dmp_queue_t *requests;     /* the server's */
    dmp_queue_t *replies;      /* ours */
    uint64_t client, seq;
    bool same_host;            /* the request ring maps here */
    bool gone;                 /* the server is known to be dead */
    dmp_process_t *server;     /* when we started it */
    pthread_t keepalive;       /* lease renewal (other hosts only) */
    bool keepalive_running, keepalive_stop;
    pthread_mutex_t ka_mx;
    pthread_cond_t ka_cv;
    dmp_queue_t *ka_requests;  /* the keepalive thread's own handle */
    char errmsg[DMP__TEXT_MAX];
};

struct dmp_proxy {
    dmp_manager_t *m;          /* a reference */
    uint64_t obj;
    dmp_proxy_type_t type;
    char typecode;
    uint64_t incarnation;      /* of the server its object lives in */
};

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static dmp_manager_t *s_conns;
static unsigned s_started;

/* The target: this executable re-entered as a manager's server. The
 * registration lives here, in the file every manager user links. */
static int
s_target(const dmp_value_t *args)
{
    return dmp__manager_serve(args);
}
static dmp_target_t s_target_reg = {DMP__MANAGER_TARGET, s_target, NULL};
__attribute__((constructor)) static void
s_register_target(void)
{
    dmp_target_register(&s_target_reg);
}

static bool
s_pid_alive(pid_t pid, uint64_t start)
{
    return start != 0 && dmp__proc_starttime(pid) == start;
}

/* ---- liveness of the server ------------------------------------------- */

/* 0 while the server lives, DMP_ENODE (with errmsg) once it is gone. */
static int
s_check_alive(dmp_manager_t *m)
{
    if (m->gone)
        return DMP_ENODE;
    if (m->same_host) {
        if (s_pid_alive(m->pid, m->start))
            return 0;
    } else {
        dmp_client_t *c = dmp_default_client();
        dmp__msg_t req = {.kind = DMP__MSG_PROC_LIST_REQUEST}, rep;
        int rc = c ? dmp__client_request(c, dmp__obj_route(m->node), &req,
                                         &rep, DMP__MSG_PROC_LIST_REPLY, 5.0)
                   : DMP_ENODE;
        if (rc && rc != DMP_ENODE)
            return 0; /* cannot tell: keep waiting */
        if (rc == 0) {
            bool running = false;
            for (size_t i = 0; i < rep.u.proc_list_reply.n_procs; i++) {
                const dmp__proc_info_t *p = &rep.u.proc_list_reply.procs[i];
                if (p->proc == m->proc && p->pid == (uint32_t)m->pid)
                    running = p->running;
            }
            dmp__msg_clear(&rep);
            if (running || m->proc == 0)
                return 0;
        } else {
            snprintf(m->errmsg, sizeof m->errmsg, "manager '%s': its node "
                     "'%s' is unreachable", m->name, m->node);
            m->gone = true;
            return DMP_ENODE;
        }
    }
    snprintf(m->errmsg, sizeof m->errmsg, "manager '%s' on node '%s' is "
             "gone (its process ended)", m->name, m->node);
    m->gone = true;
    return DMP_ENODE;
}

/* ---- requests ------------------------------------------------------------ */

static int
s_encode(uint8_t op, uint64_t client, uint64_t seq, uint64_t obj,
         double timeout, const dmp_value_t *const *args, size_t n,
         uint8_t **buf_p, size_t *len_p)
{
    uint8_t *enc[8] = {0};
    size_t enc_len[8] = {0}, total = DMP__MREQ_HEADER;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = dmp_value_encode(args[i], &enc[i], &enc_len[i]);
        total += 4 + enc_len[i];
    }
    uint8_t *buf = rc ? NULL : dmp__malloc(total);
    if (buf) {
        buf[0] = op;
        dmp__le64_put(buf + 1, client);
        dmp__le64_put(buf + 9, seq);
        dmp__le64_put(buf + 17, obj);
        uint64_t t;
        if (timeout > 1e9)
            timeout = INFINITY;
        memcpy(&t, &timeout, sizeof t);
        dmp__le64_put(buf + 25, t);
        buf[33] = (uint8_t)n;
        size_t off = DMP__MREQ_HEADER;
        for (size_t i = 0; i < n; i++) {
            dmp__le32_put(buf + off, (uint32_t)enc_len[i]);
            memcpy(buf + off + 4, enc[i], enc_len[i]);
            off += 4 + enc_len[i];
        }
    } else if (rc == 0) {
        rc = -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        dmp_free(enc[i]);
    if (rc == 0) {
        *buf_p = buf;
        *len_p = total;
    }
    return rc;
}

/* One request and its reply. The caller holds m->call. */
static int
s_call_locked(dmp_manager_t *m, uint8_t op, uint64_t obj, double timeout,
              const dmp_value_t *const *args, size_t n, dmp_value_t **res_p)
{
    if (m->gone)
        return DMP_ENODE;
    uint64_t seq = ++m->seq;
    uint8_t *buf;
    size_t len;
    int rc = s_encode(op, m->client, seq, obj, timeout, args, n, &buf, &len);
    if (rc)
        return rc;
    rc = dmp_queue_put_bytes(m->requests, buf, len, 5.0);
    dmp__free(buf);
    if (rc == DMP_EFULL) {
        snprintf(m->errmsg, sizeof m->errmsg, "manager '%s' does not take "
                 "requests (its queue is full)", m->name);
        return DMP_ENODE;
    }
    if (rc == -EBADF || rc == DMP_ENODE) {
        /* Its request queue is gone (a server that stopped removes it) or
         * unreachable: the manager is. */
        snprintf(m->errmsg, sizeof m->errmsg, "manager '%s' on node '%s' is "
                 "gone (%s)", m->name, m->node, dmp_strerror(rc));
        m->gone = true;
        return DMP_ENODE;
    }
    if (rc) {
        snprintf(m->errmsg, sizeof m->errmsg, "cannot reach manager '%s': "
                 "%s", m->name, dmp_strerror(rc));
        return rc;
    }
    if (op == DMP__MOP_KEEPALIVE || op == DMP__MOP_BYE)
        return 0; /* one way */
    double slice = m->same_host ? S_SLICE_LOCAL : S_SLICE_REMOTE;
    for (;;) {
        void *rep = NULL;
        size_t rep_len = 0;
        rc = dmp_queue_get_bytes(m->replies, &rep, &rep_len, slice);
        if (rc == DMP_EEMPTY) {
            if ((rc = s_check_alive(m)) != 0)
                return rc;
            continue;
        }
        if (rc) {
            snprintf(m->errmsg, sizeof m->errmsg, "manager '%s': reply "
                     "queue failed: %s", m->name, dmp_strerror(rc));
            return rc == DMP_ENODE ? rc : DMP_ENODE;
        }
        const uint8_t *p = rep;
        if (rep_len < DMP__MREP_HEADER || dmp__le64_get(p) != seq) {
            dmp__free(rep); /* a stale or malformed reply */
            continue;
        }
        rc = (int32_t)dmp__le32_get(p + 8);
        uint8_t kind = p[12];
        const uint8_t *body = p + DMP__MREP_HEADER;
        size_t body_len = rep_len - DMP__MREP_HEADER;
        if (rc == 0 && kind == 1 && res_p)
            rc = dmp_value_decode(body, body_len, res_p);
        else if (rc == 0 && res_p)
            *res_p = NULL;
        if (rc && kind == 2) {
            size_t l = body_len < sizeof m->errmsg - 1 ? body_len
                                                       : sizeof m->errmsg - 1;
            memcpy(m->errmsg, body, l);
            m->errmsg[l] = '\0';
        } else if (rc) {
            snprintf(m->errmsg, sizeof m->errmsg, "%s", dmp_strerror(rc));
        }
        dmp__free(rep);
        return rc;
    }
}

static int
s_call(dmp_manager_t *m, uint8_t op, uint64_t obj, double timeout,
       const dmp_value_t *const *args, size_t n, dmp_value_t **res_p)
{
    pthread_mutex_lock(&m->call);
    int rc = s_call_locked(m, op, obj, timeout, args, n, res_p);
    pthread_mutex_unlock(&m->call);
    return rc;
}

/* ---- keepalive (a manager on another host) ---------------------------- */

static void *
s_keepalive_main(void *arg)
{
    dmp_manager_t *m = arg;
    pthread_mutex_lock(&m->ka_mx);
    while (!m->keepalive_stop) {
        struct timespec ts = dmp__deadline_in(S_KEEPALIVE);
        pthread_cond_timedwait(&m->ka_cv, &m->ka_mx, &ts);
        if (m->keepalive_stop)
            break;
        uint8_t *buf;
        size_t len;
        if (s_encode(DMP__MOP_KEEPALIVE, m->client, 0, 0, 0, NULL, 0, &buf,
                     &len) == 0) {
            dmp_queue_put_bytes(m->ka_requests, buf, len, 0);
            dmp__free(buf);
        }
    }
    pthread_mutex_unlock(&m->ka_mx);
    return NULL;
}

/* A manager on another host: renew our lease from a thread. */
static void
s_keepalive_start(dmp_manager_t *m)
{
    if (m->same_host || m->keepalive_running ||
        dmp_queue_from_value(dmp_list_get(m->addr, 5), &m->ka_requests))
        return;
    m->keepalive_stop = false;
    if (pthread_create(&m->keepalive, NULL, s_keepalive_main, m) == 0)
        m->keepalive_running = true;
    else
        dmp_queue_destroy(&m->ka_requests);
}

static void
s_keepalive_stop(dmp_manager_t *m)
{
    if (!m->keepalive_running)
        return;
    pthread_mutex_lock(&m->ka_mx);
    m->keepalive_stop = true;
    pthread_cond_signal(&m->ka_cv);
    pthread_mutex_unlock(&m->ka_mx);
    pthread_join(m->keepalive, NULL);
    m->keepalive_running = false;
    dmp_queue_destroy(&m->ka_requests);
}

/* ---- connections --------------------------------------------------------- */

static void
s_conn_free(dmp_manager_t *m)
{
    s_keepalive_stop(m);
    dmp_queue_destroy(&m->requests);
    dmp_queue_destroy(&m->replies);
    dmp_value_destroy(&m->addr);
    if (m->server) {
        dmp_process_join(m->server, 5.0);
        dmp_process_destroy(&m->server);
    }
    pthread_mutex_destroy(&m->call);
    pthread_mutex_destroy(&m->ka_mx);
    pthread_cond_destroy(&m->ka_cv);
    dmp__free(m);
}

/* Reads an address list into m. */
static int
s_addr_read(dmp_manager_t *m, const dmp_value_t *addr)
{
    int64_t pid, start, inc, proc;
    const char *name = dmp_value_str(dmp_list_get(addr, 0), NULL);
    const char *node = dmp_value_str(dmp_list_get(addr, 1), NULL);
    if (dmp_value_type(addr) != DMP_VALUE_LIST || dmp_value_len(addr) != 7 ||
        !name || !node || !dmp__name_valid(name) || !dmp__name_valid(node) ||
        dmp_value_get_int(dmp_list_get(addr, 2), &pid) ||
        dmp_value_get_int(dmp_list_get(addr, 3), &start) ||
        dmp_value_get_int(dmp_list_get(addr, 4), &inc) ||
        dmp_value_get_int(dmp_list_get(addr, 6), &proc) || pid <= 0)
        return -EINVAL;
    dmp__strlcpy(m->name, name, sizeof m->name);
    dmp__strlcpy(m->node, node, sizeof m->node);
    m->pid = (pid_t)pid;
    m->start = (uint64_t)start;
    m->incarnation = (uint64_t)inc;
    m->proc = (uint64_t)proc;
    return 0;
}

/* Connects to the server an address names: a new connection (1 ref), or,
 * with `share` (proxies opened from values), the existing one of that
 * incarnation with one more reference. Handles the user gets from start
 * and connect are their own: destroying one never affects another. */
static int
s_connect(const dmp_value_t *addr, bool share, dmp_manager_t **m_p)
{
    int rc = dmp__init_lazy();
    if (rc)
        return rc;
    dmp_manager_t *m = dmp__calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    pthread_mutex_init(&m->call, NULL);
    pthread_mutex_init(&m->ka_mx, NULL);
    dmp__cond_init_monotonic(&m->ka_cv);
    m->refs = 1;
    if ((rc = s_addr_read(m, addr)) != 0) {
        s_conn_free(m);
        return rc;
    }
    pthread_mutex_lock(&s_lock);
    for (dmp_manager_t *c = share ? s_conns : NULL; c; c = c->next)
        if (c->incarnation == m->incarnation && !c->gone) {
            c->refs++;
            pthread_mutex_unlock(&s_lock);
            s_conn_free(m);
            *m_p = c;
            return 0;
        }
    pthread_mutex_unlock(&s_lock);
    m->addr = dmp_value_copy(addr);
    if (!m->addr)
        rc = -ENOMEM;
    if (rc == 0)
        rc = dmp_queue_from_value(dmp_list_get(addr, 5), &m->requests);
    if (rc == 0)
        rc = dmp_queue_new(NULL, &m->replies);
    if (rc) {
        s_conn_free(m);
        return rc;
    }
    m->same_host = dmp__queue_is_mapped(m->requests) &&
                   s_pid_alive(m->pid, m->start);
    dmp_value_t *hello[3] = {
        dmp_queue_value(m->replies), dmp_int(getpid()),
        dmp_int((int64_t)dmp__proc_starttime(getpid()))};
    dmp_value_t *res = NULL;
    rc = hello[0] && hello[1] && hello[2] ? 0 : -ENOMEM;
    if (rc == 0)
        rc = s_call(m, DMP__MOP_HELLO, 0, 0, (const dmp_value_t **)hello, 3,
                    &res);
    for (int i = 0; i < 3; i++)
        dmp_value_destroy(&hello[i]);
    int64_t client = 0;
    if (rc == 0 && dmp_value_get_int(dmp_list_get(res, 0), &client) != 0)
        rc = DMP_EPROTO;
    dmp_value_destroy(&res);
    if (rc) {
        dmp__log(DMP_LOG_WARN, "cannot connect to manager '%s': %s", m->name,
                 m->errmsg);
        s_conn_free(m);
        return rc;
    }
    m->client = (uint64_t)client;
    s_keepalive_start(m);
    pthread_mutex_lock(&s_lock);
    m->next = s_conns;
    s_conns = m;
    pthread_mutex_unlock(&s_lock);
    *m_p = m;
    return 0;
}

/* Drops a reference; the last one says goodbye and frees. */
static void
s_unref(dmp_manager_t *m)
{
    pthread_mutex_lock(&s_lock);
    bool last = --m->refs == 0;
    if (last)
        for (dmp_manager_t **pp = &s_conns; *pp; pp = &(*pp)->next)
            if (*pp == m) {
                *pp = m->next;
                break;
            }
    pthread_mutex_unlock(&s_lock);
    if (!last)
        return;
    s_keepalive_stop(m);
    if (!m->gone)
        s_call(m, DMP__MOP_BYE, 0, 0, NULL, 0, NULL);
    s_conn_free(m);
}

static int s_resolve(const char *lookup, const char *key,
                     dmp_value_t **addr_p);

/* ---- the API: managers ----------------------------------------------- */

int
dmp_manager_start(const dmp_manager_opts_t *opts, dmp_manager_t **m_p)
{
    dmp_manager_opts_t none = {0};
    if (!opts)
        opts = &none;
    char name[DMP__NAME_MAX];
    if (opts->name) {
        if (!dmp__name_valid(opts->name))
            return -EINVAL;
        dmp__strlcpy(name, opts->name, sizeof name);
    } else {
        pthread_mutex_lock(&s_lock);
        unsigned n = ++s_started;
        pthread_mutex_unlock(&s_lock);
        snprintf(name, sizeof name, "manager-%d-%u-%04x", (int)getpid(), n,
                 (unsigned)(dmp__now_ms() & 0xffff));
    }
    int rc = dmp__init_lazy();
    if (rc)
        return rc;
    if (opts->name) {
        /* Names are the cluster's: refuse one a live manager holds on any
         * node (its own agent refuses it again at registration). */
        dmp_value_t *taken = NULL;
        if (s_resolve(name, NULL, &taken) == 0) {
            dmp_value_destroy(&taken);
            return -EEXIST;
        }
    }
    dmp_queue_t *boot = NULL;
    dmp_process_t *proc = NULL;
    dmp_value_t *args = NULL, *hello = NULL;
    if ((rc = dmp_queue_new(NULL, &boot)) != 0)
        return rc;
    args = dmp_list_of(2, dmp_str(name), dmp_queue_value(boot));
    dmp_process_opts_t po = {.target = DMP__MANAGER_TARGET, .name = name,
                             .args = args, .daemon = 1,
                             .node = opts->node ? opts->node : "local"};
    rc = args ? dmp_process_new(&po, &proc) : -ENOMEM;
    dmp_value_destroy(&args);
    if (rc == 0)
        rc = dmp_process_start(proc);
    /* Its first words: 0 and its address, or why it cannot serve. */
    double deadline = dmp__now() + S_BOOT_WAIT;
    while (rc == 0) {
        rc = dmp_queue_get(boot, &hello, 0.2);
        if (rc != DMP_EEMPTY)
            break;
        rc = 0;
        if (dmp_process_join(proc, 0) == 0 || dmp__now() > deadline) {
            rc = DMP_ENODE;
            dmp__log(DMP_LOG_WARN, "manager '%s' did not start", name);
        }
    }
    dmp_queue_destroy(&boot);
    int64_t code = 0;
    if (rc == 0 && (dmp_value_get_int(dmp_list_get(hello, 0), &code) != 0))
        rc = DMP_EPROTO;
    if (rc == 0 && code != 0)
        rc = (int)code;
    dmp_manager_t *m = NULL;
    if (rc == 0)
        rc = s_connect(dmp_list_get(hello, 1), false, &m);
    dmp_value_destroy(&hello);
    if (rc) {
        if (proc) {
            dmp_process_terminate(proc);
            dmp_process_join(proc, 5.0);
            dmp_process_destroy(&proc);
        }
        return rc;
    }
    m->server = proc;
    *m_p = m;
    return 0;
}

int
dmp_manager_shutdown(dmp_manager_t *m)
{
    assert(m);
    int rc = s_call(m, DMP__MOP_SHUTDOWN, 0, 0, NULL, 0, NULL);
    if (rc == 0 || rc == DMP_ENODE) {
        m->gone = true;
        snprintf(m->errmsg, sizeof m->errmsg, "manager '%s' was shut down",
                 m->name);
    }
    if (m->server) {
        if (dmp_process_join(m->server, 10.0) != 0) {
            dmp_process_kill(m->server);
            dmp_process_join(m->server, 5.0);
        }
        return 0;
    }
    return rc;
}

void
dmp_manager_destroy(dmp_manager_t **m_p)
{
    if (!m_p || !*m_p)
        return;
    dmp_manager_t *m = *m_p;
    if (m->server && !m->gone)
        dmp_manager_shutdown(m); /* as a Python manager at its with-exit */
    s_unref(m);
    *m_p = NULL;
}

const char *
dmp_manager_name(const dmp_manager_t *m)
{
    return m->name;
}

const char *
dmp_manager_node(const dmp_manager_t *m)
{
    return m->node;
}

const char *
dmp_manager_errmsg(const dmp_manager_t *m)
{
    return m->errmsg;
}

/* ---- proxies --------------------------------------------------------- */

static int
s_proxy_new(dmp_manager_t *m, const dmp_value_t *res, dmp_proxy_t **p_p)
{
    int64_t obj, type, tc;
    if (dmp_value_get_int(dmp_list_get(res, 0), &obj) ||
        dmp_value_get_int(dmp_list_get(res, 1), &type) ||
        dmp_value_get_int(dmp_list_get(res, 2), &tc) ||
        type < DMP_PROXY_DICT || type > DMP_PROXY_QUEUE)
        return DMP_EPROTO;
    dmp_proxy_t *p = dmp__calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->m = m;
    p->obj = (uint64_t)obj;
    p->type = (dmp_proxy_type_t)type;
    p->typecode = (char)tc;
    p->incarnation = m->incarnation;
    pthread_mutex_lock(&s_lock);
    m->refs++;
    pthread_mutex_unlock(&s_lock);
    *p_p = p;
    return 0;
}

/* Re-resolves a manager found by name when its server is gone: a
 * restarted one (a new incarnation) takes over this handle. */
static void s_keepalive_start(dmp_manager_t *m);

static int
s_reconnect(dmp_manager_t *m)
{
    if (!m->gone || !m->lookup[0])
        return DMP_ENODE;
    dmp_value_t *addr = NULL;
    dmp_manager_t tmp;
    memset(&tmp, 0, sizeof tmp);
    if (s_resolve(m->lookup, NULL, &addr) != 0 ||
        s_addr_read(&tmp, addr) != 0 || tmp.incarnation == m->incarnation) {
        dmp_value_destroy(&addr);
        return DMP_ENODE;
    }
    dmp_manager_t *fresh = NULL;
    int rc = s_connect(addr, false, &fresh);
    dmp_value_destroy(&addr);
    if (rc)
        return rc;
    /* Swap the insides: this handle now talks to the new server. The old
     * connection's proxies keep the old (dead) one and get DMP_ENODE. */
    s_keepalive_stop(m);
    s_keepalive_stop(fresh);
    pthread_mutex_lock(&s_lock);
    dmp_manager_t old = *m;
    m->pid = fresh->pid;
    m->start = fresh->start;
    m->proc = fresh->proc;
    m->incarnation = fresh->incarnation;
    m->addr = fresh->addr;
    m->requests = fresh->requests;
    m->replies = fresh->replies;
    m->client = fresh->client;
    m->seq = fresh->seq;
    m->same_host = fresh->same_host;
    m->gone = false;
    m->errmsg[0] = '\0';
    fresh->addr = old.addr;
    fresh->requests = old.requests;
    fresh->replies = old.replies;
    fresh->gone = true;
    pthread_mutex_unlock(&s_lock);
    s_keepalive_start(m);
    s_unref(fresh); /* gone: no goodbye; frees the old queues */
    return 0;
}

static int
s_manager_call(dmp_manager_t *m, uint8_t op, const dmp_value_t *const *args,
               size_t n, dmp_value_t **res_p)
{
    pthread_mutex_lock(&m->call);
    int rc = s_call_locked(m, op, 0, 0, args, n, res_p);
    if (rc == DMP_ENODE && s_reconnect(m) == 0)
        rc = s_call_locked(m, op, 0, 0, args, n, res_p);
    pthread_mutex_unlock(&m->call);
    return rc;
}

static int
s_create(dmp_manager_t *m, dmp_proxy_type_t type, const char *name,
         const dmp_value_t *init, dmp_value_t *param, dmp_proxy_t **p_p)
{
    assert(m && p_p);
    if (name && !dmp__name_valid(name)) {
        dmp_value_destroy(&param);
        return -EINVAL;
    }
    dmp_value_t *t = dmp_int(type), *nm = name ? dmp_str(name) : dmp_none();
    dmp_value_t *in = init ? NULL : dmp_none();
    if (!param)
        param = dmp_none();
    int rc = t && nm && (init || in) && param ? 0 : -ENOMEM;
    dmp_value_t *res = NULL;
    if (rc == 0) {
        const dmp_value_t *args[4] = {t, nm, init ? init : in, param};
        rc = s_manager_call(m, DMP__MOP_CREATE, args, 4, &res);
    }
    if (rc == 0)
        rc = s_proxy_new(m, res, p_p);
    dmp_value_destroy(&res);
    dmp_value_destroy(&t);
    dmp_value_destroy(&nm);
    dmp_value_destroy(&in);
    dmp_value_destroy(&param);
    return rc;
}

int
dmp_manager_dict(dmp_manager_t *m, const char *name, const dmp_value_t *init,
                 dmp_proxy_t **p_p)
{
    return s_create(m, DMP_PROXY_DICT, name, init, NULL, p_p);
}

int
dmp_manager_list(dmp_manager_t *m, const char *name, const dmp_value_t *init,
                 dmp_proxy_t **p_p)
{
    return s_create(m, DMP_PROXY_LIST, name, init, NULL, p_p);
}

int
dmp_manager_value(dmp_manager_t *m, const char *name, char typecode,
                  const dmp_value_t *init, dmp_proxy_t **p_p)
{
    if (!init)
        return -EINVAL;
    return s_create(m, DMP_PROXY_VALUE, name, init, dmp_int(typecode), p_p);
}

int
dmp_manager_array(dmp_manager_t *m, const char *name, char typecode,
                  const dmp_value_t *init, dmp_proxy_t **p_p)
{
    return s_create(m, DMP_PROXY_ARRAY, name, init, dmp_int(typecode), p_p);
}

int
dmp_manager_namespace(dmp_manager_t *m, const char *name, dmp_proxy_t **p_p)
{
    return s_create(m, DMP_PROXY_NAMESPACE, name, NULL, NULL, p_p);
}

int
dmp_manager_lock(dmp_manager_t *m, const char *name, dmp_proxy_t **p_p)
{
    return s_create(m, DMP_PROXY_LOCK, name, NULL, NULL, p_p);
}

int
dmp_manager_rlock(dmp_manager_t *m, const char *name, dmp_proxy_t **p_p)
{
    return s_create(m, DMP_PROXY_RLOCK, name, NULL, NULL, p_p);
}

int
dmp_manager_semaphore(dmp_manager_t *m, const char *name, int64_t value,
                      dmp_proxy_t **p_p)
{
    return s_create(m, DMP_PROXY_SEMAPHORE, name, NULL, dmp_int(value), p_p);
}

int
dmp_manager_bounded_semaphore(dmp_manager_t *m, const char *name,
                              int64_t value, dmp_proxy_t **p_p)
{
    return s_create(m, DMP_PROXY_BOUNDED_SEMAPHORE, name, NULL,
                    dmp_int(value), p_p);
}

int
dmp_manager_condition(dmp_manager_t *m, const char *name,
                      const dmp_proxy_t *lock, dmp_proxy_t **p_p)
{
    if (lock && (lock->m->incarnation != m->incarnation ||
                 (lock->type != DMP_PROXY_LOCK &&
                  lock->type != DMP_PROXY_RLOCK)))
        return -EINVAL;
    return s_create(m, DMP_PROXY_CONDITION, name, NULL,
                    lock ? dmp_int((int64_t)lock->obj) : NULL, p_p);
}

int
dmp_manager_event(dmp_manager_t *m, const char *name, dmp_proxy_t **p_p)
{
    return s_create(m, DMP_PROXY_EVENT, name, NULL, NULL, p_p);
}

int
dmp_manager_barrier(dmp_manager_t *m, const char *name, int64_t parties,
                    dmp_proxy_t **p_p)
{
    return s_create(m, DMP_PROXY_BARRIER, name, NULL, dmp_int(parties), p_p);
}

int
dmp_manager_queue(dmp_manager_t *m, const char *name, int64_t maxsize,
                  dmp_proxy_t **p_p)
{
    return s_create(m, DMP_PROXY_QUEUE, name, NULL, dmp_int(maxsize), p_p);
}

int
dmp_manager_lookup(dmp_manager_t *m, const char *name, dmp_proxy_t **p_p)
{
    assert(m && p_p);
    if (!name || !dmp__name_valid(name))
        return -EINVAL;
    dmp_value_t *nm = dmp_str(name), *res = NULL;
    if (!nm)
        return -ENOMEM;
    const dmp_value_t *args[1] = {nm};
    int rc = s_manager_call(m, DMP__MOP_LOOKUP, args, 1, &res);
    if (rc == 0)
        rc = s_proxy_new(m, res, p_p);
    dmp_value_destroy(&res);
    dmp_value_destroy(&nm);
    return rc;
}

/* ---- proxy values -------------------------------------------------------- */

dmp_value_t *
dmp_proxy_value(const dmp_proxy_t *p)
{
    dmp_value_t *l = dmp_list_of(4, dmp_value_copy(p->m->addr),
                                 dmp_int((int64_t)p->obj), dmp_int(p->type),
                                 dmp_int(p->typecode));
    uint8_t *enc = NULL;
    size_t len = 0;
    dmp_value_t *v = NULL;
    if (l && dmp_value_encode(l, &enc, &len) == 0) {
        uint8_t *buf = dmp__malloc(len + 1);
        if (buf) {
            buf[0] = 'M';
            memcpy(buf + 1, enc, len);
            v = dmp__handle_value(buf, len + 1);
            dmp__free(buf);
        }
    }
    dmp_free(enc);
    dmp_value_destroy(&l);
    return v;
}

int
dmp_proxy_from_value(const dmp_value_t *v, dmp_proxy_t **p_p)
{
    size_t len = 0;
    const uint8_t *data = dmp__handle_data(v, &len);
    if (!data || len < 2 || data[0] != 'M')
        return -EINVAL;
    dmp_value_t *l = NULL;
    if (dmp_value_decode(data + 1, len - 1, &l) != 0)
        return -EINVAL;
    dmp_manager_t *m = NULL;
    int rc = dmp_value_type(l) == DMP_VALUE_LIST && dmp_value_len(l) == 4
                 ? s_connect(dmp_list_get(l, 0), true, &m) : -EINVAL;
    if (rc == 0) {
        dmp_value_t *res = dmp_list_of(3, dmp_value_copy(dmp_list_get(l, 1)),
                                       dmp_value_copy(dmp_list_get(l, 2)),
                                       dmp_value_copy(dmp_list_get(l, 3)));
        rc = res ? s_proxy_new(m, res, p_p) : -ENOMEM;
        dmp_value_destroy(&res);
        s_unref(m); /* the proxy holds its own reference */
    }
    dmp_value_destroy(&l);
    return rc;
}

dmp_proxy_type_t
dmp_proxy_type(const dmp_proxy_t *p)
{
    return p->type;
}

void
dmp_proxy_destroy(dmp_proxy_t **p_p)
{
    if (!p_p || !*p_p)
        return;
    s_unref((*p_p)->m);
    dmp__free(*p_p);
    *p_p = NULL;
}

/* A call on the object of a proxy (dmp_proxy.c). */
int
dmp__proxy_call(dmp_proxy_t *p, dmp_proxy_type_t want, int op,
                double timeout, const dmp_value_t *const *args, size_t n,
                dmp_value_t **res_p)
{
    assert(p);
    if (want && p->type != want &&
        !(want == DMP_PROXY_LOCK &&
          (p->type == DMP_PROXY_RLOCK || p->type == DMP_PROXY_SEMAPHORE ||
           p->type == DMP_PROXY_BOUNDED_SEMAPHORE ||
           p->type == DMP_PROXY_CONDITION)) &&
        !(want == DMP_PROXY_SEMAPHORE &&
          p->type == DMP_PROXY_BOUNDED_SEMAPHORE)) {
        snprintf(p->m->errmsg, sizeof p->m->errmsg, "this call does not "
                 "apply to a proxy of this type");
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++)
        if (!args[i])
            return -EINVAL;
    if (p->incarnation != p->m->incarnation) {
        /* Its connection follows a restarted server by name; the object
         * died with the old one. */
        snprintf(p->m->errmsg, sizeof p->m->errmsg, "the object's manager "
                 "'%s' was restarted: its objects are gone", p->m->name);
        return DMP_ENODE;
    }
    return s_call(p->m, (uint8_t)op, p->obj, timeout, args, n, res_p);
}

/* ---- names ------------------------------------------------------------------ */

/* One MgrName request to our agent (node NULL) or to `node`. */
static int
s_name_request(const char *node, uint32_t op, const char *name,
               const uint8_t *addr, size_t len, uint64_t proc,
               dmp_value_t **addr_p)
{
    dmp_client_t *c = dmp_default_client();
    if (!c)
        return -EBADF;
    dmp__msg_t req = {.kind = DMP__MSG_MGR_NAME}, rep;
    req.u.mgr_name.op = op;
    dmp__strlcpy(req.u.mgr_name.name, name, DMP__NAME_MAX);
    req.u.mgr_name.addr = (uint8_t *)addr;
    req.u.mgr_name.len = len;
    req.u.mgr_name.proc = proc;
    int rc = dmp__client_request(c, node ? dmp__obj_route(node) : NULL, &req,
                                 &rep, op == DMP__MGR_NAME_LOOKUP
                                           ? DMP__MSG_MGR_NAME
                                           : DMP__MSG_OK, 5.0);
    if (rc == 0 && addr_p)
        rc = dmp_value_decode(rep.u.mgr_name.addr, rep.u.mgr_name.len, addr_p);
    if (rc == 0)
        dmp__msg_clear(&rep);
    return rc;
}

int
dmp__manager_register(const char *name, const dmp_value_t *addr)
{
    const char *proc = getenv("DMP_PROC");
    uint8_t *enc = NULL;
    size_t len = 0;
    int rc = dmp_value_encode(addr, &enc, &len);
    if (rc == 0)
        rc = len <= DMP__MGR_ADDR_MAX
                 ? s_name_request(NULL, DMP__MGR_NAME_REGISTER, name, enc, len,
                                  proc ? strtoull(proc, NULL, 10) : 0, NULL)
                 : -ENAMETOOLONG;
    dmp_free(enc);
    return rc;
}

void
dmp__manager_unregister(const char *name)
{
    s_name_request(NULL, DMP__MGR_NAME_UNREGISTER, name, NULL, 0, 0, NULL);
}

/* "NAME", "NAME@NODE" or "NAME@tcp://HOST:PORT" to an address list. */
static int
s_resolve(const char *lookup, const char *key, dmp_value_t **addr_p)
{
    char name[DMP__NAME_MAX], where[DMP__ADDR_MAX] = "";
    const char *at = strchr(lookup, '@');
    size_t nl = at ? (size_t)(at - lookup) : strlen(lookup);
    if (nl == 0 || nl >= sizeof name ||
        (at && strlen(at + 1) >= sizeof where))
        return -EINVAL;
    memcpy(name, lookup, nl);
    name[nl] = '\0';
    if (at)
        dmp__strlcpy(where, at + 1, sizeof where);
    if (!dmp__name_valid(name))
        return -EINVAL;
    int rc;
    if (strstr(where, "://")) {
        /* From outside: join the cluster through that node, with our key,
         * pinning its public key (as dmp_init does from DMP_*). */
        if (!dmp__endpoint_valid(where))
            return -EINVAL;
        dmp_client_opts_t o = {.address = where,
                               .key_file = key ? key : getenv("DMP_KEY"),
                               .server_key = getenv("DMP_SERVER_KEY")};
        char err[DMP__TEXT_MAX] = "";
        rc = dmp_init_opts(&o, err, sizeof err);
        if (rc) {
            dmp__log(DMP_LOG_WARN, "cannot join the cluster at '%s': %s",
                     where, err);
            return rc;
        }
        where[0] = '\0';
    } else {
        if (where[0] && !dmp__name_valid(where))
            return -EINVAL;
        if ((rc = dmp__init_lazy()) != 0)
            return rc;
    }
    if (where[0])
        return s_name_request(where, DMP__MGR_NAME_LOOKUP, name, NULL, 0, 0,
                              addr_p);
    rc = s_name_request(NULL, DMP__MGR_NAME_LOOKUP, name, NULL, 0, 0, addr_p);
    if (rc != -ENOENT)
        return rc;
    /* Not at our node: ask every other alive one. */
    dmp_node_info_t *nodes = NULL;
    size_t n = 0;
    if (dmp_nodes(&nodes, &n) != 0)
        return -ENOENT;
    const char *self = dmp_client_node(dmp_default_client());
    rc = -ENOENT;
    for (size_t i = 0; i < n && rc == -ENOENT; i++)
        if (nodes[i].state == DMP_NODE_ALIVE && strcmp(nodes[i].name, self))
            rc = s_name_request(nodes[i].name, DMP__MGR_NAME_LOOKUP, name,
                                NULL, 0, 0, addr_p);
    dmp_nodes_free(&nodes);
    return rc == DMP_ENODE ? -ENOENT : rc;
}

int
dmp_manager_connect(const char *address_or_name, const char *key,
                    dmp_manager_t **m_p)
{
    assert(address_or_name && m_p);
    dmp_value_t *addr = NULL;
    int rc = s_resolve(address_or_name, key, &addr);
    if (rc)
        return rc;
    dmp_manager_t *m = NULL;
    rc = s_connect(addr, false, &m);
    dmp_value_destroy(&addr);
    if (rc)
        return rc;
    dmp__strlcpy(m->lookup, address_or_name, sizeof m->lookup);
    *m_p = m;
    return 0;
}

void
dmp__manager_atexit(void)
{
    /* Managers we started stop (gracefully: the process join in
     * dmp_fini then returns at once); every connection's keepalive stops
     * before the library's connection goes away. */
    for (;;) {
        pthread_mutex_lock(&s_lock);
        dmp_manager_t *pending = NULL;
        for (dmp_manager_t *m = s_conns; m && !pending; m = m->next)
            if ((m->server && !m->gone) || m->keepalive_running)
                pending = m;
        pthread_mutex_unlock(&s_lock);
        if (!pending)
            break;
        s_keepalive_stop(pending);
        if (pending->server && !pending->gone)
            dmp_manager_shutdown(pending);
        else if (!pending->gone)
            s_call(pending, DMP__MOP_BYE, 0, 0, NULL, 0, NULL);
        pending->gone = true;
    }
}
