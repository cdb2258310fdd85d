/*
 * node_auth.c - the ZAP handler: who may connect over tcp.
 *
 * libzmq asks this thread about every CURVE handshake on the agent's tcp
 * sockets (RFC 27, ZAP). Only public keys found as NAME.pub in the keys
 * directory are admitted, and the reply's User-Id is NAME: the agent takes
 * a peer's identity from that, never from the routing id, which peers
 * choose themselves. The handler is bound before any socket binds, the
 * server sockets enforce the "dmp" domain, and node_auth_self_test proves
 * at start-up that an unknown key is refused: libzmq fails open when any of
 * that is missing.
 *
 * The allow-list is re-read when an unknown key shows up (at most once a
 * second), so adding a node or rotating a key needs no restart.
 *
 * Keys vouched for by peers (node_direct.c) are admitted too, with the
 * identity job/NODE/PID: a process's direct link to this node. That table
 * is the one thing the main thread and this one share, under a mutex.
 */
#define _GNU_SOURCE
#include "node.h"

#include <dirent.h>
#include <pthread.h>
#include <sodium.h>
#include <sys/stat.h>
#include <string.h>
#include <zmq.h>

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_FRAMES_MAX 8
#define VOUCHED_MAX 65536   /* keys peers vouched for, all together */

typedef struct {
    char name[DMP__NAME_MAX];
    uint8_t key[32];
} s_allowed_t;

struct node_auth {
    void *ctx;
    void *rep;                 /* ZAP REP socket; owned by the thread */
    void *ctl;                 /* PAIR: main side, says "stop" */
    pthread_t thread;
    char keys_dir[PATH_MAX];
    char ctl_endpoint[64];
    s_allowed_t *allowed;      /* current allow-list */
    size_t n_allowed;
    double last_scan;          /* monotonic time of the last directory read */
    struct timespec dir_mtime; /* of the keys directory at that read */
    struct timespec nodes_mtime; /* of KEYS_DIR/nodes at that read */
    uint8_t self_test_key[32];   /* the start-up self-test's stranger: its
                                  * refusal is expected, logged at debug */
    pthread_mutex_t vouched_lock; /* guards the three below */
    s_allowed_t *vouched;        /* keys of processes on peers */
    size_t n_vouched, cap_vouched;
};

/* Adds the NAME.pub keys of one directory to list; `prefix` is put before
 * each name to make its ZAP User-Id. */
static void
s_scan_dir(node_auth_t *auth, const char *dir_path, const char *prefix,
           s_allowed_t **list, size_t *n, size_t *cap)
{
    DIR *dir = opendir(dir_path);
    if (!dir) {
        if (errno != ENOENT)
            warn_f("cannot read keys directory '%s': %s", dir_path,
                   strerror(errno));
        return;
    }
    (void)auth;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len < 5 || strcmp(de->d_name + len - 4, ".pub") != 0)
            continue;
        char name[DMP__NAME_MAX];
        if (len - 4 >= sizeof name)
            continue;
        memcpy(name, de->d_name, len - 4);
        name[len - 4] = '\0';
        if (!dmp__name_valid(name))
            continue;
        char path[PATH_MAX], z85[DMP__Z85_KEY_LEN + 1], err[256];
        snprintf(path, sizeof path, "%s/%s", dir_path, de->d_name);
        if (dmp__key_load_public(path, z85, err, sizeof err) != 0) {
            warn_f("skipping key: %s", err);
            continue;
        }
        if (*n == *cap) {
            size_t grown_cap = *cap ? *cap * 2 : 16;
            s_allowed_t *grown = dmp__realloc(*list, grown_cap * sizeof **list);
            if (!grown)
                break;
            *list = grown;
            *cap = grown_cap;
        }
        snprintf((*list)[*n].name, sizeof (*list)[*n].name, "%s%s", prefix,
                 name);
        zmq_z85_decode((*list)[*n].key, z85);
        (*n)++;
    }
    closedir(dir);
}

/* Re-reads the allow-list: KEYS_DIR/NAME.pub are clients (User-Id
 * "client/NAME"), KEYS_DIR/nodes/NAME.pub are nodes (User-Id "NAME"). Only
 * a node identity can take part in membership: a client key can never
 * pass for a node, whose names have no '/'. */
static void
s_scan(node_auth_t *auth)
{
    auth->last_scan = dmp__now();
    struct stat st;
    if (stat(auth->keys_dir, &st) == 0)
        auth->dir_mtime = st.st_mtim;
    char nodes_dir[PATH_MAX];
    snprintf(nodes_dir, sizeof nodes_dir, "%s/nodes", auth->keys_dir);
    if (stat(nodes_dir, &st) == 0)
        auth->nodes_mtime = st.st_mtim;
    s_allowed_t *list = NULL;
    size_t n = 0, cap = 0;
    s_scan_dir(auth, auth->keys_dir, "client/", &list, &n, &cap);
    s_scan_dir(auth, nodes_dir, "", &list, &n, &cap);
    dmp__free(auth->allowed);
    auth->allowed = list;
    auth->n_allowed = n;
    debug_f("allow-list has %zu keys", n);
}

static bool
s_mtime_differs(const char *path, const struct timespec *seen)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return seen->tv_sec != 0 || seen->tv_nsec != 0;
    return st.st_mtim.tv_sec != seen->tv_sec ||
           st.st_mtim.tv_nsec != seen->tv_nsec;
}

/* True when a key was added to or removed from either directory. */
static bool
s_changed(node_auth_t *auth)
{
    char nodes_dir[PATH_MAX];
    snprintf(nodes_dir, sizeof nodes_dir, "%s/nodes", auth->keys_dir);
    return s_mtime_differs(auth->keys_dir, &auth->dir_mtime) ||
           s_mtime_differs(nodes_dir, &auth->nodes_mtime);
}

static const char *
s_lookup(node_auth_t *auth, const uint8_t key[32])
{
    for (size_t i = 0; i < auth->n_allowed; i++)
        if (memcmp(auth->allowed[i].key, key, 32) == 0)
            return auth->allowed[i].name;
    return NULL;
}

/* A vouched key's identity, copied out under the lock. */
static bool
s_lookup_vouched(node_auth_t *auth, const uint8_t key[32],
                 char name[DMP__NAME_MAX])
{
    bool found = false;
    pthread_mutex_lock(&auth->vouched_lock);
    for (size_t i = 0; !found && i < auth->n_vouched; i++)
        if (memcmp(auth->vouched[i].key, key, 32) == 0) {
            dmp__strlcpy(name, auth->vouched[i].name, DMP__NAME_MAX);
            found = true;
        }
    pthread_mutex_unlock(&auth->vouched_lock);
    return found;
}

int
node_auth_vouch(node_auth_t *auth, const uint8_t key[32], const char *name)
{
    int rc = 0;
    pthread_mutex_lock(&auth->vouched_lock);
    size_t i = 0;
    while (i < auth->n_vouched && memcmp(auth->vouched[i].key, key, 32) != 0)
        i++;
    if (i == auth->n_vouched) {
        if (i == VOUCHED_MAX) {
            rc = -ENOSPC;
            goto out;
        }
        if (i == auth->cap_vouched) {
            size_t cap = auth->cap_vouched ? auth->cap_vouched * 2 : 16;
            s_allowed_t *grown =
                dmp__realloc(auth->vouched, cap * sizeof *grown);
            if (!grown) {
                rc = -ENOMEM;
                goto out;
            }
            auth->vouched = grown;
            auth->cap_vouched = cap;
        }
        memcpy(auth->vouched[i].key, key, 32);
        auth->n_vouched++;
    }
    dmp__strlcpy(auth->vouched[i].name, name, sizeof auth->vouched[i].name);
out:
    pthread_mutex_unlock(&auth->vouched_lock);
    return rc;
}

/* Forgets the vouched keys whose identity is `name` (a whole key) or, with
 * prefix set, starts with it. */
static size_t
s_unvouch(node_auth_t *auth, const uint8_t *key, const char *prefix)
{
    size_t dropped = 0;
    pthread_mutex_lock(&auth->vouched_lock);
    for (size_t i = 0; i < auth->n_vouched;) {
        s_allowed_t *v = &auth->vouched[i];
        bool drop = key ? memcmp(v->key, key, 32) == 0
                        : strncmp(v->name, prefix, strlen(prefix)) == 0;
        if (!drop) {
            i++;
            continue;
        }
        sodium_memzero(v, sizeof *v);
        *v = auth->vouched[--auth->n_vouched];
        dropped++;
    }
    pthread_mutex_unlock(&auth->vouched_lock);
    return dropped;
}

void
node_auth_unvouch(node_auth_t *auth, const uint8_t key[32])
{
    s_unvouch(auth, key, NULL);
}

size_t
node_auth_unvouch_prefix(node_auth_t *auth, const char *prefix)
{
    return s_unvouch(auth, NULL, prefix);
}

static void
s_reply(void *rep, zmq_msg_t *request_id, const char *status,
        const char *text, const char *user_id)
{
    zmq_send(rep, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(rep, zmq_msg_data(request_id), zmq_msg_size(request_id),
             ZMQ_SNDMORE);
    zmq_send(rep, status, strlen(status), ZMQ_SNDMORE);
    zmq_send(rep, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(rep, user_id, strlen(user_id), ZMQ_SNDMORE);
    zmq_send(rep, "", 0, 0);
}

/* Copies a short frame into a C string. */
static void
s_frame_str(zmq_msg_t *frame, char *out, size_t size)
{
    size_t len = zmq_msg_size(frame);
    if (len >= size)
        len = size - 1;
    memcpy(out, zmq_msg_data(frame), len);
    out[len] = '\0';
    for (size_t i = 0; i < len; i++)
        if (out[i] < ' ' || out[i] > '~')
            out[i] = '?';
}

static void
s_handle_request(node_auth_t *auth)
{
    zmq_msg_t frames[ZAP_FRAMES_MAX];
    int n = 0;
    bool more = true;
    while (more) {
        zmq_msg_t f;
        zmq_msg_init(&f);
        if (zmq_msg_recv(&f, auth->rep, 0) < 0) {
            zmq_msg_close(&f);
            break;
        }
        more = zmq_msg_more(&f);
        if (n < ZAP_FRAMES_MAX)
            frames[n++] = f;
        else
            zmq_msg_close(&f);
    }
    /* version, request id, domain, address, routing id, mechanism, creds */
    if (n < 6) {
        error_f("malformed ZAP request with %d frames", n);
        if (n >= 2)
            s_reply(auth->rep, &frames[1], "500", "malformed request", "");
        goto out;
    }
    char domain[64], address[64], mechanism[16];
    s_frame_str(&frames[2], domain, sizeof domain);
    s_frame_str(&frames[3], address, sizeof address);
    s_frame_str(&frames[5], mechanism, sizeof mechanism);
    if (strcmp(domain, DMP__ZAP_DOMAIN) != 0) {
        warn_f("rejected connection from %s: reason=wrong zap domain "
               "domain='%s'", address, domain);
        s_reply(auth->rep, &frames[1], "400", "wrong domain", "");
        goto out;
    }
    if (strcmp(mechanism, "CURVE") != 0 || n < 7 ||
        zmq_msg_size(&frames[6]) != 32) {
        warn_f("rejected connection from %s: reason=not CURVE "
               "mechanism=%s", address, mechanism);
        s_reply(auth->rep, &frames[1], "400", "CURVE required", "");
        goto out;
    }
    const uint8_t *key = zmq_msg_data(&frames[6]);
    /* A key added or removed changes the directory's mtime: re-read it
     * then, so a revoked key is refused at its next connection. */
    if (s_changed(auth))
        s_scan(auth);
    const char *name = s_lookup(auth, key);
    char vouched[DMP__NAME_MAX];
    if (!name && s_lookup_vouched(auth, key, vouched))
        name = vouched;
    if (!name && dmp__now() - auth->last_scan >= 1.0) {
        s_scan(auth);
        name = s_lookup(auth, key);
    }
    char fp[13];
    dmp__key_fingerprint(key, fp);
    if (!name && memcmp(key, auth->self_test_key, 32) == 0) {
        debug_f("refused the self-test's unknown key, as it should");
        s_reply(auth->rep, &frames[1], "400", "key not allowed", "");
        goto out;
    }
    if (!name) {
        warn_f("rejected connection from %s: unknown key fingerprint=%s "
               "reason=not in allow-list", address, fp);
        s_reply(auth->rep, &frames[1], "400", "key not allowed", "");
        goto out;
    }
    debug_f("admitted '%s' from %s fingerprint=%s", name, address, fp);
    s_reply(auth->rep, &frames[1], "200", "OK", name);
out:
    for (int i = 0; i < n; i++)
        zmq_msg_close(&frames[i]);
}

static void *
s_thread(void *arg)
{
    node_auth_t *auth = arg;
    void *ctl = zmq_socket(auth->ctx, ZMQ_PAIR);
    zmq_connect(ctl, auth->ctl_endpoint);
    zmq_send(ctl, "up", 2, 0); /* handshake: the thread runs */
    for (;;) {
        zmq_pollitem_t items[2] = {{auth->rep, 0, ZMQ_POLLIN, 0},
                                   {ctl, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (items[1].revents & ZMQ_POLLIN)
            break; /* stop */
        if (items[0].revents & ZMQ_POLLIN)
            s_handle_request(auth);
    }
    zmq_close(auth->rep);
    zmq_close(ctl);
    return NULL;
}

int
node_auth_start(void *ctx, const char *keys_dir, node_auth_t **auth_p)
{
    node_auth_t *auth = dmp__calloc(1, sizeof *auth);
    if (!auth)
        return -ENOMEM;
    auth->ctx = ctx;
    pthread_mutex_init(&auth->vouched_lock, NULL);
    dmp__strlcpy(auth->keys_dir, keys_dir, sizeof auth->keys_dir);
    snprintf(auth->ctl_endpoint, sizeof auth->ctl_endpoint,
             "inproc://dmp-zap-ctl-%p", (void *)auth);
    s_scan(auth);
    auth->rep = zmq_socket(ctx, ZMQ_REP);
    auth->ctl = zmq_socket(ctx, ZMQ_PAIR);
    int zero = 0;
    if (!auth->rep || !auth->ctl ||
        zmq_setsockopt(auth->rep, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_bind(auth->rep, ZAP_ENDPOINT) != 0 ||
        zmq_bind(auth->ctl, auth->ctl_endpoint) != 0) {
        int rc = -errno;
        error_f("cannot bind the ZAP handler: %s", zmq_strerror(errno));
        if (auth->rep)
            zmq_close(auth->rep);
        if (auth->ctl)
            zmq_close(auth->ctl);
        dmp__free(auth->allowed);
        dmp__free(auth);
        return rc;
    }
    if (pthread_create(&auth->thread, NULL, s_thread, auth) != 0) {
        zmq_close(auth->rep);
        zmq_close(auth->ctl);
        dmp__free(auth->allowed);
        dmp__free(auth);
        return -EAGAIN;
    }
    char buf[4];
    zmq_recv(auth->ctl, buf, sizeof buf, 0);
    *auth_p = auth;
    return 0;
}

void
node_auth_stop(node_auth_t **auth_p)
{
    if (!auth_p || !*auth_p)
        return;
    node_auth_t *auth = *auth_p;
    zmq_send(auth->ctl, "stop", 4, 0);
    pthread_join(auth->thread, NULL);
    zmq_close(auth->ctl);
    dmp__free(auth->allowed);
    if (auth->vouched)
        sodium_memzero(auth->vouched, auth->cap_vouched *
                                          sizeof *auth->vouched);
    dmp__free(auth->vouched);
    pthread_mutex_destroy(&auth->vouched_lock);
    dmp__free(auth);
    *auth_p = NULL;
}

int
node_auth_self_test(node_auth_t *auth, void *ctx, const char *endpoint,
                    const char *server_pub_z85)
{
    dmp__keypair_t stranger;
    if (zmq_curve_keypair(stranger.public_z85, stranger.secret_z85) != 0)
        return -ENOTSUP;
    /* Written before the handshake; the ZAP thread reads it after the
     * handshake reached it through libzmq's queues (a full barrier). */
    zmq_z85_decode(auth->self_test_key, stranger.public_z85);
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    if (!sock)
        return -ENOMEM;
    int rc = dmp__sock_defaults(sock);
    if (rc == 0)
        rc = dmp__sock_curve_client(sock, &stranger, server_pub_z85);
    dmp__keypair_wipe(&stranger);
    char err[256] = "";
    if (rc == 0)
        rc = dmp__sock_connect_checked(ctx, sock, endpoint, 5.0, err,
                                       sizeof err);
    zmq_close(sock);
    if (rc == DMP_EAUTH) {
        info_f("authentication self-test passed: an unknown key is refused "
               "on '%s'", endpoint);
        return 0;
    }
    if (rc == 0) {
        error_f("self-test failed: an unknown key was admitted on '%s'; "
                "refusing to serve", endpoint);
        return -EPERM;
    }
    error_f("self-test could not verify authentication on '%s': %s",
            endpoint, err[0] ? err : dmp_strerror(rc));
    return rc;
}
