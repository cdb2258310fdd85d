/*
 * dmp_direct.c - direct links from this process to the nodes that own the
 * queues and pipes it uses.
 *
 * Through our own agent, a ring operation on another node's object
 * crosses two agents each way (ipc to ours, CURVE to the owner), twice
 * the hops of a plain request/reply. So the first operation on an owner
 * makes a link to it: a fresh CURVE keypair, which our agent vouches for
 * at the owner (proto Direct; node_holds.c), then a client connected
 * straight to the owner with that key, pinning the key our agent knows it
 * by. The secret key never leaves this process; the owner forgets the
 * public one when we die. Holds and closes of pipe ends still go through
 * our agent, which counts them for the day we die without closing.
 *
 * Only a process that talks to its agent over ipc makes links (one that
 * reaches its agent over tcp is a client from outside, with a key of its
 * own). A link that cannot be made is not tried again for RETRY_S: the
 * operations go through our agent meanwhile. A link that is lost gives
 * its waiters DMP_ENODE, as the agent path would, and the next operation
 * makes a new one. DMP_DIRECT=0 turns links off.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define LINKS_MAX 64     /* owners at once; more go through the agent */
#define RETRY_S 5.0      /* after a failed attempt */
#define ASK_TIMEOUT 10.0

typedef struct {
    char node[DMP__NAME_MAX];
    dmp_client_t *client;   /* NULL: none now */
    double retry_at;        /* monotonic: no attempt before */
} s_link_t;

/* Links lost while someone may still be waiting on them: closed at
 * dmp_fini, when nobody is. */
typedef struct s_dead {
    struct s_dead *next;
    dmp_client_t *client;
} s_dead_t;

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static s_link_t s_links[LINKS_MAX];
static size_t s_n_links;
static s_dead_t *s_dead;

static bool
s_enabled(void)
{
    const char *env = getenv("DMP_DIRECT");
    return !env || strcmp(env, "0") != 0;
}

/* Makes a link to owner through our agent c. */
static int
s_connect(dmp_client_t *c, const char *owner, dmp_client_t **link_p)
{
    dmp__keypair_t kp;
    if (zmq_curve_keypair(kp.public_z85, kp.secret_z85) != 0)
        return -ENOTSUP;
    dmp__msg_t req = {.kind = DMP__MSG_DIRECT}, rep;
    req.u.direct.op = DMP__DIRECT_ASK;
    zmq_z85_decode(req.u.direct.key, kp.public_z85);
    req.u.direct.pid = (uint32_t)getpid();
    dmp__strlcpy(req.u.direct.to, owner, sizeof req.u.direct.to);
    int rc = dmp__client_request(c, NULL, &req, &rep, DMP__MSG_DIRECT,
                                 ASK_TIMEOUT);
    if (rc == 0 && rep.u.direct.op != DMP__DIRECT_INFO)
        rc = DMP_EPROTO;
    char err[DMP__TEXT_MAX] = "";
    if (rc == 0)
        /* In our agent's client's context: no more threads per link
         * (dmp_fini closes the links first). */
        rc = dmp__client_connect_keys(c, rep.u.direct.address, &kp,
                                      rep.u.direct.server_key, link_p, err,
                                      sizeof err);
    if (rc == 0 && strcmp(dmp_client_node(*link_p), owner) != 0) {
        dmp_client_destroy(link_p); /* not the node we asked for */
        rc = DMP_EPROTO;
    }
    dmp__keypair_wipe(&kp);
    if (rc == 0)
        dmp__msg_clear(&rep);
    else
        dmp__log(DMP_LOG_DEBUG, "no direct link to node '%s' (through the "
                 "agent for %.0f s): %s%s%s", owner, RETRY_S,
                 dmp_strerror(rc), err[0] ? ": " : "", err);
    return rc;
}

dmp_client_t *
dmp__direct_client(const char *owner)
{
    dmp_client_t *c = dmp_default_client();
    if (!c || !dmp__client_is_local(c) || !s_enabled() ||
        strcmp(owner, dmp_client_node(c)) == 0)
        return NULL;
    /* Held while a link is made (a few ms, once): two threads never make
     * two links to one owner. */
    pthread_mutex_lock(&s_lock);
    s_link_t *l = NULL;
    for (size_t i = 0; !l && i < s_n_links; i++)
        if (strcmp(s_links[i].node, owner) == 0)
            l = &s_links[i];
    if (!l && s_n_links < LINKS_MAX) {
        l = &s_links[s_n_links++];
        memset(l, 0, sizeof *l);
        dmp__strlcpy(l->node, owner, sizeof l->node);
    }
    dmp_client_t *link = l ? l->client : NULL;
    if (l && !link && dmp__now() >= l->retry_at) {
        if (s_connect(c, owner, &link) == 0)
            l->client = link;
        else
            l->retry_at = dmp__now() + RETRY_S;
    }
    pthread_mutex_unlock(&s_lock);
    return link;
}

void
dmp__direct_lost(const char *owner, dmp_client_t *c)
{
    s_dead_t *d = dmp__calloc(1, sizeof *d);
    pthread_mutex_lock(&s_lock);
    for (size_t i = 0; i < s_n_links; i++)
        if (s_links[i].client == c && strcmp(s_links[i].node, owner) == 0) {
            s_links[i].client = NULL;
            if (d) {
                d->client = c;
                d->next = s_dead;
                s_dead = d;
                d = NULL;
            } /* else: left open until the process exits */
            break;
        }
    pthread_mutex_unlock(&s_lock);
    dmp__free(d);
}

void
dmp__direct_fini(void)
{
    dmp_client_t *links[LINKS_MAX];
    pthread_mutex_lock(&s_lock);
    size_t n = s_n_links;
    for (size_t i = 0; i < n; i++) {
        links[i] = s_links[i].client;
        s_links[i].client = NULL;
    }
    s_n_links = 0;
    s_dead_t *dead = s_dead;
    s_dead = NULL;
    pthread_mutex_unlock(&s_lock);
    /* Destroyed unlocked: a batch still on its way fails with DMP_ENODE,
     * and its callback tells dmp__direct_lost, which takes the lock. */
    for (size_t i = 0; i < n; i++)
        dmp_client_destroy(&links[i]);
    while (dead) {
        s_dead_t *d = dead;
        dead = d->next;
        dmp_client_destroy(&d->client);
        dmp__free(d);
    }
}
