/*
 * node_server.c - the agent's main loop: sockets, requests, lifecycle.
 *
 * One thread polls everything: the tcp ROUTER (CURVE, peers and remote
 * clients), the ipc ROUTER (local processes, protected by the 0700 runtime
 * directory), the peer DEALERs, a signalfd and, in embedded mode, the
 * control socket to the parent program. Every frame is bounded by
 * ZMQ_MAXMSGSIZE, must be a single frame after the routing id, and is
 * validated by the wire module before use; anything else gets an Error
 * reply or is dropped, and the loop serves the next peer. The loop never
 * blocks on one peer: every send is ZMQ_DONTWAIT.
 */
#define _GNU_SOURCE
#include "node.h"

#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <signal.h>
#include <sodium.h>
#include <string.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>

#define UPLOADS_MAX 4          /* executables being received at once */
#define UPLOAD_IDLE 60.0       /* seconds before an idle upload is dropped */
#define CACHE_FILE_MAX (512ull << 20)

/* Executables arriving in chunks, one slot per digest. */
static struct {
    char digest[DMP__DIGEST_HEX + 1];
    node_cache_upload_t *up;
    double last;
} s_uploads[UPLOADS_MAX];

/* Handles one Upload chunk: OK when stored (or complete and verified). */
static void
s_upload(node_t *node, const dmp__msg_t *req, dmp__msg_t *rep)
{
    const char *digest = req->u.upload.digest;
    int slot = -1, free_slot = -1, rc = 0;
    double now = dmp__now();
    for (int i = 0; i < UPLOADS_MAX; i++) {
        if (s_uploads[i].up && now - s_uploads[i].last > UPLOAD_IDLE)
            node_cache_upload_abort(&s_uploads[i].up);
        if (s_uploads[i].up && strcmp(s_uploads[i].digest, digest) == 0)
            slot = i;
        else if (!s_uploads[i].up && free_slot < 0)
            free_slot = i;
    }
    if (req->u.upload.offset == 0) {
        if (slot >= 0) /* a restarted upload replaces the old one */
            node_cache_upload_abort(&s_uploads[slot].up);
        else
            slot = free_slot;
        if (slot < 0) {
            rc = -EBUSY;
            goto out;
        }
        rc = node_cache_upload_begin(node->cache, digest, req->u.upload.size,
                                     &s_uploads[slot].up);
        if (rc)
            goto out;
        dmp__strlcpy(s_uploads[slot].digest, digest, DMP__DIGEST_HEX + 1);
    } else if (slot < 0) {
        rc = -EINVAL; /* a chunk of no upload we know */
        goto out;
    }
    s_uploads[slot].last = now;
    rc = node_cache_upload_write(s_uploads[slot].up, req->u.upload.offset,
                                 req->u.upload.data, req->u.upload.len);
    if (rc) {
        node_cache_upload_abort(&s_uploads[slot].up);
    } else if (req->u.upload.offset + req->u.upload.len ==
               req->u.upload.size) {
        rc = node_cache_upload_finish(&s_uploads[slot].up);
    }
out:
    if (rc) {
        warn_f("upload of %.12s failed: %s", digest, dmp_strerror(rc));
        dmp__msg_error(rep, req->id, rc, "upload to node '%s' failed: %s",
                       node->cfg.name, dmp_strerror(rc));
        return;
    }
    rep->kind = DMP__MSG_OK;
}

/* Creates dir (and missing parents) 0700; refuses one others can open. */
static int
s_runtime_dir(const char *dir)
{
    char path[PATH_MAX];
    dmp__strlcpy(path, dir, sizeof path);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        /* 0711 when jobs run as another user: they must pass through. */
        if (mkdir(path, node_jail_dir_mode()) != 0 && errno != EEXIST)
            break; /* the final check reports it */
        *p = '/';
    }
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        error_f("cannot create runtime directory '%s': %s", dir,
                strerror(errno));
        return -errno;
    }
    struct stat st;
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        error_f("runtime directory '%s' is not a directory", dir);
        return -ENOTDIR;
    }
    /* Jobs of another user get search access through its group only. */
    mode_t others = node_jail_switches_user() ? 067 : 077;
    if (st.st_uid != geteuid() || (st.st_mode & others)) {
        error_f("runtime directory '%s' must be owned by uid %u and mode "
                "0700 (it is uid %u, mode %03o): others could reach the "
                "local socket", dir, (unsigned)geteuid(),
                (unsigned)st.st_uid, (unsigned)(st.st_mode & 0777));
        return -EPERM;
    }
    return node_jail_share(dir, 0710, false);
}

/* Takes RUNTIME_DIR/dmpd.lock; a second agent on the same directory is
 * refused. flock dies with its holder, so a killed agent leaves no stale
 * lock behind. */
static int
s_lock(node_t *node)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/dmpd.lock", node->cfg.runtime_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        error_f("cannot open lock '%s': %s", path, strerror(errno));
        return -errno;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        error_f("runtime directory '%s' is in use by another agent "
                "(pid %s); give each agent its own --runtime-dir",
                node->cfg.runtime_dir, pid[0] ? pid : "unknown");
        close(fd);
        return DMP_ELOCKED;
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len)
        warn_f("cannot write pid to '%s': %s", path, strerror(errno));
    node->lock_fd = fd;
    return 0;
}

static void *
s_router(node_t *node, const char *endpoint, bool curve)
{
    void *sock = zmq_socket(node->ctx, ZMQ_ROUTER);
    if (!sock)
        return NULL;
    int rc = dmp__sock_defaults(sock);
    if (rc == 0 && curve)
        rc = dmp__sock_curve_server(sock, &node->kp);
    /* A handshake that has not finished within 5 s (a slowloris, a port
     * scanner) is closed by libzmq. */
    int ivl = 5000;
    if (rc == 0 && zmq_setsockopt(sock, ZMQ_HANDSHAKE_IVL, &ivl, sizeof ivl))
        rc = -errno;
    if (rc == 0 && zmq_bind(sock, endpoint) != 0)
        rc = -errno;
    if (rc) {
        error_f("cannot listen on '%s': %s", endpoint, zmq_strerror(-rc));
        zmq_close(sock);
        return NULL;
    }
    return sock;
}

/* Replies to one request. user_id is the ZAP identity ("" over ipc). */
static void
s_dispatch(node_t *node, void *sock, zmq_msg_t *rid, const char *user_id,
           const char *peer_addr, const dmp__msg_t *req)
{
    dmp__msg_t rep = {0};
    rep.id = req->id;
    rep.version = DMP_PROTOCOL_VERSION;
    bool tcp = sock == node->tcp;
    if (req->kind != DMP__MSG_HEARTBEAT)
        node->served++; /* see s_trim_when_quiet */
    node_sub_t from = {.sock = sock};
    from.rid_len = zmq_msg_size(rid) < sizeof from.rid ? zmq_msg_size(rid)
                                                        : sizeof from.rid;
    memcpy(from.rid, zmq_msg_data(rid), from.rid_len);
    if (req->kind == DMP__MSG_RING_OP &&
        node_holds_request(node, (dmp__msg_t *)req, !tcp, &from))
        return;
    if (req->node[0] && strcmp(req->node, node->cfg.name) != 0 &&
        req->kind != DMP__MSG_HEARTBEAT) {
        node_peer_t *peer = node_peers_find(node, req->node);
        if (!peer || peer->state == DMP_NODE_DEAD) {
            dmp__msg_error(&rep, req->id, DMP_ENODE, "node '%s' is %s",
                           req->node, peer ? "dead" : "not in the cluster");
            node_send_to(&from, &rep);
            return;
        }
        node_route_forward(node, peer, &from, (dmp__msg_t *)req);
        return;
    }
    switch (req->kind) {
    case DMP__MSG_HELLO:
        rep.kind = DMP__MSG_HELLO;
        rep.u.hello.version = DMP_PROTOCOL_VERSION;
        dmp__strlcpy(rep.u.hello.node, node->cfg.name, DMP__NAME_MAX);
        dmp__strlcpy(rep.u.hello.role, "agent", sizeof rep.u.hello.role);
        break;
    case DMP__MSG_NODES_REQUEST: {
        dmp_node_info_t *nodes;
        size_t n;
        int rc = node_peers_list(node, &nodes, &n);
        if (rc) {
            dmp__msg_error(&rep, req->id, rc, "cannot list nodes: %s",
                           dmp_strerror(rc));
            break;
        }
        rep.kind = DMP__MSG_NODES_REPLY;
        rep.u.nodes_reply.nodes = nodes;
        rep.u.nodes_reply.n_nodes = n;
        break;
    }
    case DMP__MSG_SPAWN_REQUEST:
        node_spawn_start(node, req, !tcp, &from, &rep);
        break;
    case DMP__MSG_UPLOAD:
        s_upload(node, req, &rep);
        break;
    case DMP__MSG_PROC_SIGNAL: {
        int rc = node_spawn_signal(node, req->u.proc_signal.proc,
                                   (int)req->u.proc_signal.signo);
        if (rc)
            dmp__msg_error(&rep, req->id, rc, "cannot signal process %llu "
                           "on node '%s': %s",
                           (unsigned long long)req->u.proc_signal.proc,
                           node->cfg.name, dmp_strerror(rc));
        else
            rep.kind = DMP__MSG_OK;
        break;
    }
    case DMP__MSG_PROC_LIST_REQUEST: {
        int rc = node_spawn_list(node, &rep.u.proc_list_reply.procs,
                                 &rep.u.proc_list_reply.n_procs);
        if (rc)
            dmp__msg_error(&rep, req->id, rc, "cannot list processes");
        else
            rep.kind = DMP__MSG_PROC_LIST_REPLY;
        break;
    }
    case DMP__MSG_OBJ_NEW:
        node_objects_new(node, req, &rep);
        break;
    case DMP__MSG_OBJ_RELEASE:
        node_objects_release(node, req, &rep);
        break;
    case DMP__MSG_RING_OP:
        node_objects_ring_op(node, req, &from, user_id);
        return; /* answered now or when it can be */
    case DMP__MSG_SHARED_NEW:
        node_shared_new(node, req, &rep);
        break;
    case DMP__MSG_SHARED_OP:
        node_shared_op(node, req, &from);
        return; /* answered now or when it can be */
    case DMP__MSG_MGR_NAME:
        node_manager_name(node, req, !tcp, &rep);
        break;
    case DMP__MSG_DIRECT:
        node_holds_direct(node, (dmp__msg_t *)req, !tcp, user_id, &from);
        return; /* answered there, or by the peer */
    case DMP__MSG_HEARTBEAT:
        if (tcp)
            node_peers_on_heartbeat(node, user_id, req);
        else
            warn_f("dropped heartbeat on the local socket");
        return; /* one way */
    default:
        warn_f("unexpected '%s' message from %s key='%s'",
               dmp__msg_kind_name(req->kind), peer_addr, user_id);
        dmp__msg_error(&rep, req->id, DMP_EPROTO,
                       "unexpected message '%s'",
                       dmp__msg_kind_name(req->kind));
        break;
    }
    int rc = dmp__sock_send(sock, zmq_msg_data(rid), zmq_msg_size(rid), &rep,
                            ZMQ_DONTWAIT);
    if (rc)
        debug_f("cannot reply to %s: %s", peer_addr, dmp_strerror(rc));
    dmp__msg_clear(&rep);
}

/* Reads one message from a ROUTER and answers it. */
static void
s_serve(node_t *node, void *sock)
{
    zmq_msg_t rid, body;
    zmq_msg_init(&rid);
    zmq_msg_init(&body);
    if (zmq_msg_recv(&rid, sock, ZMQ_DONTWAIT) < 0)
        goto out;
    if (!zmq_msg_more(&rid) || zmq_msg_recv(&body, sock, ZMQ_DONTWAIT) < 0)
        goto out;
    const char *uid = zmq_msg_gets(&body, "User-Id");
    const char *addr = zmq_msg_gets(&body, "Peer-Address");
    char user_id[DMP__NAME_MAX], peer_addr[64];
    dmp__strlcpy(user_id, uid ? uid : "", sizeof user_id);
    dmp__strlcpy(peer_addr, addr ? addr : "local", sizeof peer_addr);
    if (zmq_msg_more(&body)) {
        /* dmp messages are single frames; count and drop the rest. */
        int frames = 2;
        while (zmq_msg_more(&body)) {
            zmq_msg_close(&body);
            zmq_msg_init(&body);
            if (zmq_msg_recv(&body, sock, ZMQ_DONTWAIT) < 0)
                break;
            frames++;
        }
        warn_f("dropped a %d-frame message from %s key='%s'", frames,
               peer_addr, user_id);
        goto out;
    }
    dmp__msg_t req;
    int rc = dmp__wire_decode(zmq_msg_data(&body), zmq_msg_size(&body), &req);
    dmp__msg_t rep;
    if (rc) {
        warn_f("malformed message from %s key='%s' size=%zu: %s", peer_addr,
               user_id, zmq_msg_size(&body), dmp_strerror(rc));
        dmp__msg_error(&rep, 0, DMP_EPROTO, "malformed message");
    } else if (req.version != DMP_PROTOCOL_VERSION) {
        warn_f("protocol version %u from %s key='%s' (we speak %u)",
               req.version, peer_addr, user_id, DMP_PROTOCOL_VERSION);
        dmp__msg_error(&rep, req.id, DMP_EVERSION,
                       "protocol version %u not supported; node '%s' "
                       "speaks %u", req.version, node->cfg.name,
                       DMP_PROTOCOL_VERSION);
        dmp__msg_clear(&req);
        rc = DMP_EVERSION;
    }
    if (rc) {
        dmp__sock_send(sock, zmq_msg_data(&rid), zmq_msg_size(&rid), &rep,
                       ZMQ_DONTWAIT);
        goto out;
    }
    s_dispatch(node, sock, &rid, user_id, peer_addr, &req);
    dmp__msg_clear(&req);
out:
    zmq_msg_close(&rid);
    zmq_msg_close(&body);
}

/* Replies and process events from a peer, on our DEALER to it. */
static void
s_from_peer(node_t *node, node_peer_t *peer)
{
    for (int k = 0; k < 64; k++) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, peer->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return;
        }
        dmp__msg_t msg;
        int rc = zmq_msg_more(&m) ? DMP_EPROTO
                                  : dmp__wire_decode(zmq_msg_data(&m),
                                                     zmq_msg_size(&m), &msg);
        zmq_msg_close(&m);
        if (rc) {
            warn_f("malformed message from node '%s': %s", peer->name,
                   dmp_strerror(rc));
            continue;
        }
        node_route_on_peer_msg(node, peer, &msg);
        dmp__msg_clear(&msg);
    }
}

static int
s_setup(node_t *node)
{
    const node_config_t *cfg = &node->cfg;
    char err[512];
    int rc;
    if (cfg->listen[0]) {
        rc = dmp__key_load_secret(cfg->key_file, &node->kp, err, sizeof err);
        if (rc == 0)
            rc = dmp__keys_dir_check(cfg->keys_dir, err, sizeof err);
        if (rc) {
            error_f("%s", err);
            return rc;
        }
    }
    if ((rc = node_jail_setup(cfg)) != 0 ||
        (rc = s_runtime_dir(cfg->runtime_dir)) != 0 ||
        (rc = s_lock(node)) != 0)
        return rc;
    node_spawn_kill_orphans(node); /* we hold the lock: they are orphans */
    if ((rc = node_objects_open(node)) != 0)
        return rc;
    if ((rc = node_cache_open(cfg->cache_dir, CACHE_FILE_MAX, &node->cache))) {
        error_f("cannot open binary cache '%s': %s", cfg->cache_dir,
                dmp_strerror(rc));
        return rc;
    }
    snprintf(node->ipc_path, sizeof node->ipc_path, "%s/dmpd.sock",
             cfg->runtime_dir);
    if (strlen(node->ipc_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        error_f("runtime directory '%s' is too long for a unix socket path",
                cfg->runtime_dir);
        return -ENAMETOOLONG;
    }
    snprintf(node->ipc_endpoint, sizeof node->ipc_endpoint, "ipc://%s",
             node->ipc_path);
    unlink(node->ipc_path); /* a killed agent's; we hold the lock */

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    node->sig_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (node->sig_fd < 0)
        return -errno;

    node->ctx = zmq_ctx_new();
    if (!node->ctx)
        return -ENOMEM;
    if (cfg->listen[0]) {
        /* The ZAP handler first: a CURVE socket bound without one admits
         * everybody. */
        if ((rc = node_auth_start(node->ctx, cfg->keys_dir, &node->auth)))
            return rc;
        node->tcp = s_router(node, cfg->listen, true);
        if (!node->tcp)
            return -EADDRINUSE;
        char test_ep[DMP__ADDR_MAX + 16];
        size_t len = sizeof test_ep;
        if (zmq_getsockopt(node->tcp, ZMQ_LAST_ENDPOINT, test_ep, &len) != 0)
            return -errno;
        char *any = strstr(test_ep, "://0.0.0.0:");
        if (any) { /* connect to what we bound, via loopback */
            char port[16];
            dmp__strlcpy(port, any + 11, sizeof port);
            snprintf(test_ep, sizeof test_ep, "tcp://127.0.0.1:%s", port);
        }
        if ((rc = node_auth_self_test(node->auth, node->ctx, test_ep,
                                      node->kp.public_z85)) != 0)
            return rc;
    }
    node->ipc = s_router(node, node->ipc_endpoint, false);
    if (!node->ipc)
        return -EADDRINUSE;
    chmod(node->ipc_path, 0600);
    node_jail_share(node->ipc_path, 0660, false); /* jobs of job_user */
    for (size_t i = 0; i < cfg->n_peers; i++)
        node_peers_add(node, cfg->peers[i].name, cfg->peers[i].address);
    return 0;
}

static void
s_teardown(node_t *node)
{
    node_spawn_close(node);
    node_zygote_close_all(node);
    node_objects_close(node);
    node_shared_close(node);
    node_holds_close(node);
    node_manager_close();
    node_route_close(node);
    for (int i = 0; i < UPLOADS_MAX; i++)
        node_cache_upload_abort(&s_uploads[i].up);
    node_cache_close(&node->cache);
    node_peers_close(node);
    if (node->tcp)
        zmq_close(node->tcp);
    if (node->ipc)
        zmq_close(node->ipc);
    node_auth_stop(&node->auth);
    if (node->ctx)
        zmq_ctx_term(node->ctx);
    if (node->ipc_path[0] && node->lock_fd >= 0)
        unlink(node->ipc_path);
    bool held_lock = node->lock_fd >= 0;
    if (held_lock) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/dmpd.lock", node->cfg.runtime_dir);
        unlink(path);
        close(node->lock_fd);
        node->lock_fd = -1;
    }
    if (node->sig_fd >= 0)
        close(node->sig_fd);
    /* A private agent's directory is its own (its program made it with
     * mkdtemp): leave nothing behind, even when the program was killed. */
    if (node->cfg.embedded && held_lock)
        dmp__rmtree(node->cfg.runtime_dir);
    dmp__keypair_wipe(&node->kp);
}

/* Once a heartbeat passed with no request after some were served: the
 * memory that burst freed goes back to the system (the arena keeps it
 * otherwise, scattered among what stays live), so an idle agent is
 * small again. Not while requests come: they would fault it back in. */
static void
s_trim_when_quiet(node_t *node)
{
    if (node->served == node->served_last_tick &&
        node->served != node->served_trimmed) {
        malloc_trim(0);
        node->served_trimmed = node->served;
    }
    node->served_last_tick = node->served;
}

int
node_run(node_t *node)
{
    node->lock_fd = -1;
    node->sig_fd = -1;
    node->started = dmp__now();
    randombytes_buf(&node->incarnation, sizeof node->incarnation);
    /* Process ids differ across restarts, so a stale id never names a new
     * process. */
    node->next_proc = (node->incarnation & 0xffffffffu) << 16;
    int rc = s_setup(node);
    if (rc) {
        s_teardown(node);
        return 1;
    }
    char fp[13] = "none";
    if (node->tcp)
        dmp__key_fingerprint_z85(node->kp.public_z85, fp);
    info_f("serving name=%s listen=%s local=%s peers=%zu fingerprint=%s",
           node->cfg.name, node->cfg.listen[0] ? node->cfg.listen : "-",
           node->ipc_endpoint, node->n_peers, fp);
    int control = node->cfg.control_fd;
    if (control >= 0 && write(control, "ready\n", 6) != 6)
        node->stopping = true;

    double next_tick = dmp__now();
    while (!node->stopping) {
        size_t n_items = 0;
        zmq_pollitem_t items[5 + NODE_PEERS_MAX + 3 * 1024 +
                             NODE_HOLD_FDS_MAX];
        /* Fixed slots: 0 ipc, 1 signals, 2 ring wake-ups, 3 control
         * (embedded), then tcp, then one per peer, then children. */
        items[n_items++] = (zmq_pollitem_t){node->ipc, 0, ZMQ_POLLIN, 0};
        items[n_items++] = (zmq_pollitem_t){NULL, node->sig_fd, ZMQ_POLLIN, 0};
        items[n_items++] =
            (zmq_pollitem_t){NULL, node_objects_wake_fd(node), ZMQ_POLLIN, 0};
        if (control >= 0)
            items[n_items++] = (zmq_pollitem_t){NULL, control, ZMQ_POLLIN, 0};
        if (node->tcp)
            items[n_items++] = (zmq_pollitem_t){node->tcp, 0, ZMQ_POLLIN, 0};
        size_t first_peer = n_items;
        for (size_t i = 0; i < node->n_peers && n_items < 5 + NODE_PEERS_MAX;
             i++)
            items[n_items++] =
                (zmq_pollitem_t){node->peers[i].sock, 0, ZMQ_POLLIN, 0};
        size_t first_spawn = n_items;
        n_items += node_spawn_poll_items(node, items + n_items, 3 * 1024);
        size_t first_hold = n_items;
        n_items += node_holds_poll_items(node, items + n_items,
                                         NODE_HOLD_FDS_MAX);
        /* Busy polling (node_poll.c): no wait, so no deadlines to find. */
        bool polling = node_poll_now(node, dmp__now());
        double wait = 0;
        if (!polling) {
            wait = next_tick - dmp__now();
            double park = node->parked ? node_objects_next_deadline(node)
                                       : INFINITY;
            double shared = node_shared_next_deadline(node);
            wait = fmin(wait, fmin(park, shared));
        }
        double acks = node_objects_acks_due(node); /* sends those due */
        if (acks < wait)
            wait = acks;
        int n_events = zmq_poll(items, (int)n_items, dmp__timeout_ms(wait));
        if (n_events < 0 && errno != EINTR) {
            error_f("poll failed: %s", zmq_strerror(errno));
            break;
        }
        node_poll_saw(node, polling, n_events);
        for (size_t i = 0; i < n_items; i++) {
            /* A closed control socket shows as POLLERR (HUP), not POLLIN. */
            if (!(items[i].revents & (ZMQ_POLLIN | ZMQ_POLLERR)))
                continue;
            if (i == 1) {
                struct signalfd_siginfo si;
                if (read(node->sig_fd, &si, sizeof si) == sizeof si)
                    info_f("stopping on signal %u", si.ssi_signo);
                node->stopping = true;
            } else if (i == 2) {
                node_objects_retry(node); /* drains the FIFO */
                if (node->shparked)
                    node_shared_retry(node);
            } else if (control >= 0 && i == 3) {
                char buf[64];
                ssize_t n = read(control, buf, sizeof buf);
                if (n <= 0) { /* the program that owns us is gone */
                    debug_f("control link closed; stopping");
                    node->stopping = true;
                }
            } else if (i >= first_hold) {
                node_holds_on_fd(node, items[i].fd);
            } else if (i >= first_spawn) {
                node_spawn_on_fd(node, items[i].fd);
            } else if (i >= first_peer) {
                s_from_peer(node, &node->peers[i - first_peer]);
            } else {
                /* The ipc or tcp ROUTER. A bounded burst per wake-up, so
                 * one busy client cannot starve the timers. */
                for (int k = 0; k < 64; k++) {
                    int ev = 0;
                    size_t sz = sizeof ev;
                    zmq_getsockopt(items[i].socket, ZMQ_EVENTS, &ev, &sz);
                    if (!(ev & ZMQ_POLLIN))
                        break;
                    s_serve(node, items[i].socket);
                }
            }
        }
        if (node->parked && node_objects_next_deadline(node) <= 0)
            node_objects_retry(node); /* time-outs */
        node_shared_timers(node);   /* time-outs, leases */
        if (dmp__now() >= next_tick) {
            node_peers_tick(node);
            node_route_tick(node);
            node_zygote_tick(node);
            if (node->parked) /* a pipe's writer may have died: EOF */
                node_objects_retry(node);
            node_shared_tick(node);
            node_holds_tick(node);
            node_stage_tick(node, dmp__now());
            s_trim_when_quiet(node);
            next_tick = dmp__now() + node->cfg.heartbeat;
        }
        if (!polling || n_events > 0) /* a round that found nothing: no */
            node_fdguard_check(node); /* before libzmq's accept runs out */
    }
    info_f("stopped");
    s_teardown(node);
    return 0;
}
