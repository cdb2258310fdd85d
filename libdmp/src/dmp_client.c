/*
 * dmp_client.c - one request/reply connection to one agent.
 *
 * A DEALER socket, CURVE over tcp, plain over ipc (the ipc endpoint lives
 * in a 0700 directory). Requests carry increasing ids; a reply with another
 * id is a late answer to a request that already timed out and is dropped.
 * ZMQ_IMMEDIATE keeps requests from queueing for a peer that is gone, so
 * a dead agent shows up as DMP_ENODE within the request timeout, never as
 * a hang. One mutex serialises requests: ZeroMQ sockets are not
 * thread-safe. The client owns its ZeroMQ context.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

struct dmp_client {
    void *ctx;                   /* owned ZeroMQ context */
    void *sock;                  /* DEALER connected to the agent */
    pthread_mutex_t lock;        /* serialises requests on sock */
    uint64_t next_id;            /* id of the next request */
    double request_timeout;      /* seconds */
    char node[DMP__NAME_MAX];    /* the agent's node name, from Hello */
    char errmsg[DMP__TEXT_MAX];  /* text of the last error reply */
};

void
dmp_client_destroy(dmp_client_t **client_p)
{
    if (!client_p || !*client_p)
        return;
    dmp_client_t *c = *client_p;
    if (c->sock)
        zmq_close(c->sock);
    if (c->ctx)
        zmq_ctx_term(c->ctx);
    pthread_mutex_destroy(&c->lock);
    dmp__free(c);
    *client_p = NULL;
}

/* Sends req and waits for the reply with the same id. An Error reply
 * becomes its code, its text kept in errmsg. Caller holds c->lock. */
static int
s_request_locked(dmp_client_t *c, dmp__msg_t *req, dmp__msg_t *rep)
{
    memset(rep, 0, sizeof *rep);
    req->id = ++c->next_id;
    req->version = DMP_PROTOCOL_VERSION;
    c->errmsg[0] = '\0';
    int rc = dmp__sock_send(c->sock, NULL, 0, req, ZMQ_DONTWAIT);
    if (rc == -EAGAIN) {
        snprintf(c->errmsg, sizeof c->errmsg, "node '%s' is not connected",
                 c->node);
        return DMP_ENODE;
    }
    if (rc)
        return rc;
    double deadline = dmp__now() + c->request_timeout;
    for (;;) {
        double left = deadline - dmp__now();
        zmq_pollitem_t item = {c->sock, 0, ZMQ_POLLIN, 0};
        if (left <= 0 || zmq_poll(&item, 1, dmp__timeout_ms(left)) <= 0) {
            snprintf(c->errmsg, sizeof c->errmsg,
                     "no reply from node '%s' within %.1f s", c->node,
                     c->request_timeout);
            return DMP_ENODE;
        }
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, c->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&frame);
            continue;
        }
        bool more = zmq_msg_more(&frame);
        rc = more ? DMP_EPROTO
                  : dmp__wire_decode(zmq_msg_data(&frame),
                                     zmq_msg_size(&frame), rep);
        zmq_msg_close(&frame);
        if (more) { /* not ours: drain the rest of it */
            int m = 1;
            size_t sz = sizeof m;
            while (m && zmq_getsockopt(c->sock, ZMQ_RCVMORE, &m, &sz) == 0 &&
                   m) {
                zmq_msg_init(&frame);
                zmq_msg_recv(&frame, c->sock, 0);
                zmq_msg_close(&frame);
            }
        }
        if (rc == -ENOMEM)
            return rc;
        if (rc || rep->id != req->id) {
            dmp__msg_clear(rep);
            continue; /* garbage or a late reply: keep waiting */
        }
        if (rep->version != DMP_PROTOCOL_VERSION) {
            snprintf(c->errmsg, sizeof c->errmsg,
                     "node speaks protocol %u, we speak %u", rep->version,
                     DMP_PROTOCOL_VERSION);
            dmp__msg_clear(rep);
            return DMP_EVERSION;
        }
        if (rep->kind == DMP__MSG_ERROR) {
            dmp__strlcpy(c->errmsg, rep->u.error.text, sizeof c->errmsg);
            rc = rep->u.error.code;
            dmp__msg_clear(rep);
            return rc;
        }
        return 0;
    }
}

static int
s_request(dmp_client_t *c, dmp__msg_t *req, dmp__msg_t *rep,
          dmp__msg_kind_t want)
{
    pthread_mutex_lock(&c->lock);
    int rc = s_request_locked(c, req, rep);
    pthread_mutex_unlock(&c->lock);
    if (rc == 0 && rep->kind != want) {
        dmp__msg_clear(rep);
        rc = DMP_EPROTO;
    }
    return rc;
}

static int
s_hello(dmp_client_t *c)
{
    dmp__msg_t req = {.kind = DMP__MSG_HELLO}, rep;
    req.u.hello.version = DMP_PROTOCOL_VERSION;
    dmp__strlcpy(req.u.hello.role, "client", sizeof req.u.hello.role);
    int rc = s_request(c, &req, &rep, DMP__MSG_HELLO);
    if (rc == 0) {
        dmp__strlcpy(c->node, rep.u.hello.node, sizeof c->node);
        dmp__msg_clear(&rep);
    }
    return rc;
}

int
dmp_client_connect(const dmp_client_opts_t *opts, dmp_client_t **client_p,
                   char *errbuf, size_t errlen)
{
    char scratch[DMP__TEXT_MAX];
    if (!errbuf) {
        errbuf = scratch;
        errlen = sizeof scratch;
    }
    errbuf[0] = '\0';
    if (!opts || !opts->address || !dmp__endpoint_valid(opts->address)) {
        snprintf(errbuf, errlen, "invalid node address '%s': expected "
                 "tcp://HOST:PORT or ipc://PATH",
                 opts && opts->address ? opts->address : "");
        return -EINVAL;
    }
    bool tcp = strncmp(opts->address, "tcp://", 6) == 0;
    dmp__keypair_t kp;
    char server_pub[DMP__Z85_KEY_LEN + 1];
    int rc = 0;
    if (tcp) {
        if (!opts->key_file || !*opts->key_file) {
            snprintf(errbuf, errlen, "no client key: tcp connections are "
                     "authenticated; give --key FILE or set DMP_KEY");
            return DMP_EKEY;
        }
        if (!opts->server_key || !*opts->server_key) {
            snprintf(errbuf, errlen, "no server key to pin: give "
                     "--server-key FILE or set DMP_SERVER_KEY");
            return DMP_EKEY;
        }
        if (sodium_init() < 0)
            return -ENOMEM;
        rc = dmp__key_load_secret(opts->key_file, &kp, errbuf, errlen);
        if (rc == 0)
            rc = dmp__key_load_public(opts->server_key, server_pub, errbuf,
                                      errlen);
        if (rc) {
            dmp__keypair_wipe(&kp);
            return rc;
        }
    }

    dmp_client_t *c = dmp__calloc(1, sizeof *c);
    if (!c) {
        if (tcp)
            dmp__keypair_wipe(&kp);
        return -ENOMEM;
    }
    pthread_mutex_init(&c->lock, NULL);
    c->request_timeout =
        opts->request_timeout > 0 ? opts->request_timeout : 10.0;
    dmp__strlcpy(c->node, opts->address, sizeof c->node);
    c->ctx = zmq_ctx_new();
    c->sock = c->ctx ? zmq_socket(c->ctx, ZMQ_DEALER) : NULL;
    if (!c->sock) {
        rc = -ENOMEM;
        goto out;
    }
    int one = 1;
    rc = dmp__sock_defaults(c->sock);
    if (rc == 0 &&
        zmq_setsockopt(c->sock, ZMQ_IMMEDIATE, &one, sizeof one) != 0)
        rc = -errno;
    if (rc == 0 && tcp)
        rc = dmp__sock_curve_client(c->sock, &kp, server_pub);
    if (rc)
        goto out;
    double ctimeout = opts->connect_timeout > 0 ? opts->connect_timeout : 5.0;
    rc = dmp__sock_connect_checked(c->ctx, c->sock, opts->address, ctimeout,
                                   errbuf, errlen);
    if (rc == 0) {
        rc = s_hello(c);
        if (rc)
            snprintf(errbuf, errlen, "hello to '%s' failed: %s%s%s",
                     opts->address, dmp_strerror(rc),
                     c->errmsg[0] ? ": " : "", c->errmsg);
    }
out:
    if (tcp)
        dmp__keypair_wipe(&kp);
    if (rc) {
        dmp__log(DMP_LOG_WARN, "%s", errbuf[0] ? errbuf : dmp_strerror(rc));
        dmp_client_destroy(&c);
        return rc;
    }
    *client_p = c;
    return 0;
}

const char *
dmp_client_node(const dmp_client_t *client)
{
    return client->node;
}

const char *
dmp_client_errmsg(const dmp_client_t *client)
{
    return client->errmsg;
}

int
dmp_client_ping(dmp_client_t *client)
{
    return s_hello(client);
}

int
dmp_client_nodes(dmp_client_t *client, dmp_node_info_t **nodes_p,
                 size_t *count_p)
{
    dmp__msg_t req = {.kind = DMP__MSG_NODES_REQUEST}, rep;
    int rc = s_request(client, &req, &rep, DMP__MSG_NODES_REPLY);
    if (rc)
        return rc;
    dmp_node_info_t *nodes = rep.u.nodes_reply.nodes;
    size_t n = rep.u.nodes_reply.n_nodes;
    if (!nodes) { /* an empty list still gets a freeable array */
        nodes = dmp__calloc(1, sizeof *nodes);
        if (!nodes)
            return -ENOMEM;
    }
    /* Ownership of the array moves to the caller. */
    rep.u.nodes_reply.nodes = NULL;
    dmp__msg_clear(&rep);
    *nodes_p = nodes;
    *count_p = n;
    return 0;
}

void
dmp_nodes_free(dmp_node_info_t **nodes_p)
{
    if (!nodes_p)
        return;
    dmp__free(*nodes_p);
    *nodes_p = NULL;
}
