/*
 * node.h - the dmpd node agent's shared types.
 *
 * One thread owns everything here (the main loop in node_server.c); the
 * only other thread is the ZAP handler (node_auth.c), which shares nothing
 * with it but the ZeroMQ context and the keys directory on disk.
 */
#ifndef NODE_H
#define NODE_H

#include "dmp_impl.h"

#include <stdio.h>

/* ---- logging (node_log.c): stderr, house style, function stamped ---- */
extern dmp_log_level_t node_log_level;
void node_log(dmp_log_level_t level, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void node_log_set_name(const char *name);
#define error_f(...) node_log(DMP_LOG_ERROR, __func__, __VA_ARGS__)
#define warn_f(...) node_log(DMP_LOG_WARN, __func__, __VA_ARGS__)
#define info_f(...) node_log(DMP_LOG_INFO, __func__, __VA_ARGS__)
#define debug_f(...) node_log(DMP_LOG_DEBUG, __func__, __VA_ARGS__)

/* ---- configuration (node_config.c) ---------------------------------- */
typedef struct {
    char name[DMP__NAME_MAX];
    char address[DMP__ADDR_MAX];
} node_peer_addr_t;

#define NODE_PEERS_MAX 256

typedef struct {
    char name[DMP__NAME_MAX];          /* node name */
    char listen[DMP__ADDR_MAX];        /* tcp endpoint to bind, or "" */
    char advertise[DMP__ADDR_MAX];     /* address peers use to reach us */
    char key_file[PATH_MAX];           /* our secret key */
    char keys_dir[PATH_MAX];           /* allow-list: NAME.pub files */
    char runtime_dir[PATH_MAX];        /* 0700: ipc socket, lock */
    node_peer_addr_t peers[NODE_PEERS_MAX]; /* NAME@tcp://HOST:PORT */
    size_t n_peers;
    double heartbeat;                  /* seconds between heartbeats */
    unsigned liveness;                 /* missed heartbeats before dead */
    int control_fd;                    /* embedded mode: parent's link */
    bool embedded;                     /* private agent of one program */
    dmp_log_level_t log_level;
} node_config_t;

/* Fills cfg from argv (and the -c file it names; options win). Prints
 * usage or an error and returns the exit status to use, or -1 to go on. */
int node_config_load(node_config_t *cfg, int argc, char **argv);
/* "NAME@tcp://HOST:PORT" -> peer; false when malformed. */
bool node_config_parse_peer(const char *spec, node_peer_addr_t *peer);

/* ---- authentication (node_auth.c) ------------------------------------ */
typedef struct node_auth node_auth_t;

/* Starts the ZAP handler thread, bound before any socket binds. */
int node_auth_start(void *ctx, const char *keys_dir, node_auth_t **auth_p);
void node_auth_stop(node_auth_t **auth_p);
/* Connects to our own endpoint with a fresh unknown key and succeeds only
 * if the handshake is refused. Refusing to serve otherwise guards against
 * any misconfiguration that would let libzmq fail open. */
int node_auth_self_test(void *ctx, const char *endpoint,
                        const char *server_pub_z85);

/* ---- membership (node_peers.c) --------------------------------------- */
typedef struct {
    char name[DMP__NAME_MAX];
    char address[DMP__ADDR_MAX];
    char pubkey[DMP__Z85_KEY_LEN + 1];
    void *sock;             /* DEALER, CURVE client, to the peer's ROUTER */
    bool heard;             /* at least one heartbeat received */
    double last_heard;      /* monotonic seconds */
    double added;           /* when we started to track it */
    uint64_t incarnation;   /* from its heartbeats; changes on restart */
    uint32_t cores;
    double load;
    uint64_t uptime_ms;
    uint32_t processes;
    dmp_node_state_t state; /* last state we logged */
} node_peer_t;

typedef struct node node_t;

/* Adds a peer (or updates its address) and connects to it. */
int node_peers_add(node_t *node, const char *name, const char *address);
/* Sends a heartbeat to every peer and updates and logs their states. */
void node_peers_tick(node_t *node);
/* A heartbeat from `user_id` (the ZAP identity of its sender). */
void node_peers_on_heartbeat(node_t *node, const char *user_id,
                             const dmp__msg_t *msg);
/* Self first, then every known peer. Caller owns *nodes_p (dmp__free). */
int node_peers_list(node_t *node, dmp_node_info_t **nodes_p, size_t *n_p);
void node_peers_close(node_t *node);

/* ---- the agent (node_server.c) --------------------------------------- */
struct node {
    node_config_t cfg;
    void *ctx;                  /* ZeroMQ context */
    void *tcp;                  /* ROUTER, CURVE server; NULL if no listen */
    void *ipc;                  /* ROUTER on RUNTIME_DIR/dmpd.sock */
    node_auth_t *auth;          /* ZAP handler thread */
    dmp__keypair_t kp;          /* our node keypair (tcp only) */
    node_peer_t *peers;         /* membership, without ourselves */
    size_t n_peers, cap_peers;
    double started;             /* monotonic start time */
    uint64_t incarnation;       /* random per start, sent in heartbeats */
    int lock_fd;                /* flock on RUNTIME_DIR/dmpd.lock */
    int sig_fd;                 /* signalfd: SIGTERM, SIGINT */
    char ipc_endpoint[DMP__ADDR_MAX + 16];
    char ipc_path[PATH_MAX];
    bool stopping;
};

/* Sets up everything, runs until SIGTERM/SIGINT or the control fd closes,
 * tears down. Returns the process exit status. */
int node_run(node_t *node);

#endif /* NODE_H */
