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
#include <sys/types.h>

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

/* A job rlimit from the config: nofile, as, cpu, nproc (node_jail.c). */
#define NODE_JOB_RLIMITS 4
typedef struct {
    bool set;
    unsigned long long value;          /* RLIM_INFINITY: "unlimited" */
} node_rlimit_t;

#define NODE_BUSY_POLL_US 300 /* default: node_poll.c */

typedef struct {
    char name[DMP__NAME_MAX];          /* node name */
    char listen[DMP__ADDR_MAX];        /* tcp endpoint to bind, or "" */
    char advertise[DMP__ADDR_MAX];     /* address peers use to reach us */
    char key_file[PATH_MAX];           /* our secret key */
    char keys_dir[PATH_MAX];           /* allow-list: NAME.pub files */
    char runtime_dir[PATH_MAX];        /* 0700: ipc socket, lock */
    char cache_dir[PATH_MAX];          /* binary cache (default: in runtime) */
    node_peer_addr_t peers[NODE_PEERS_MAX]; /* NAME@tcp://HOST:PORT */
    size_t n_peers;
    double heartbeat;                  /* seconds between heartbeats */
    unsigned liveness;                 /* missed heartbeats before dead */
    unsigned busy_poll_us;             /* node_poll.c; 0: never poll */
    int control_fd;                    /* embedded mode: parent's link */
    bool embedded;                     /* private agent of one program */
    dmp_log_level_t log_level;
    char job_user[DMP__NAME_MAX];      /* run jobs as this user ("": us) */
    node_rlimit_t job_rlimits[NODE_JOB_RLIMITS]; /* see node_jail.c */
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
/* Admits a key vouched for by a peer, as `name` (job/NODE/PID). -ENOSPC
 * past the table's bound. Safe from the main thread. */
int node_auth_vouch(node_auth_t *auth, const uint8_t key[32],
                    const char *name);
void node_auth_unvouch(node_auth_t *auth, const uint8_t key[32]);
/* Forgets every vouched key whose name starts with prefix; returns how
 * many. */
size_t node_auth_unvouch_prefix(node_auth_t *auth, const char *prefix);
/* Connects to our own endpoint with a fresh unknown key and succeeds only
 * if the handshake is refused. Refusing to serve otherwise guards against
 * any misconfiguration that would let libzmq fail open. */
int node_auth_self_test(node_auth_t *auth, void *ctx, const char *endpoint,
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

/* ---- binary cache (node_cache.c) ------------------------------------- */
/*
 * Content-addressed store of executables shipped by other nodes. A file is
 * named by the lowercase hex SHA-256 of its content, computed here, never
 * a path from the wire; an upload is written to an unnamed temporary file
 * and linked under its digest only after the hash and size verify, so a
 * partial or corrupt upload is never visible.
 */
#define NODE_DIGEST_HEX 64
typedef struct node_cache node_cache_t;
typedef struct node_cache_upload node_cache_upload_t;

/* Opens (creating, 0700) the cache directory. max_file: largest accepted
 * upload in bytes. */
int node_cache_open(const char *dir, uint64_t max_file,
                    node_cache_t **cache_p);
void node_cache_close(node_cache_t **cache_p);
/* Exactly 64 lowercase hex digits. */
bool node_cache_digest_valid(const char *digest);
/* Path of the cached file for digest: 0, -ENOENT when absent, -EINVAL for
 * a malformed digest. */
int node_cache_lookup(node_cache_t *cache, const char *digest, char *path,
                      size_t size);
/* Starts an upload of `size` bytes claimed to hash to `digest`.
 * -EINVAL malformed digest, -EFBIG over max_file, -ENOSPC, -errno. */
int node_cache_upload_begin(node_cache_t *cache, const char *digest,
                            uint64_t size, node_cache_upload_t **up_p);
/* Appends data at `offset`, which must equal the bytes written so far
 * (-EINVAL otherwise; nothing past `size` is accepted: -EFBIG). */
int node_cache_upload_write(node_cache_upload_t *up, uint64_t offset,
                            const void *data, size_t len);
/* Verifies size and SHA-256 and publishes the file (mode 0500). Always
 * consumes the upload and nulls *up_p. -EBADMSG when the content does not
 * match the digest, -EIO short upload, -errno; an already cached digest
 * is success. */
int node_cache_upload_finish(node_cache_upload_t **up_p);
/* Drops an unfinished upload; nothing becomes visible. Safe on NULL. */
void node_cache_upload_abort(node_cache_upload_t **up_p);
/* Test hook: pretend O_TMPFILE is unsupported (the fallback path). */
void node_cache_test_no_tmpfile(bool on);
/* SHA-256 of a file as 64 lowercase hex digits (+NUL). */
int node_cache_file_digest(const char *path, char out[NODE_DIGEST_HEX + 1]);

/* ---- processes (node_spawn.c) ---------------------------------------- */
/* Where a process's events (output, exit) go: the socket and routing id
 * its spawn request came from. */
typedef struct {
    void *sock;
    uint8_t rid[256];
    size_t rid_len;
} node_sub_t;

typedef struct node_proc {
    struct node_proc *next;
    uint64_t id;            /* unique at this agent (incarnation-salted) */
    pid_t pid;
    int pidfd;              /* -1 once reaped */
    int out_fd, err_fd;     /* relay pipes' read ends, -1 if direct/closed */
    char name[DMP__NAME_MAX];
    char target[DMP__NAME_MAX];
    double started;         /* monotonic */
    double ended;
    bool running;
    int exitcode;           /* 0, N, -signal */
    node_sub_t sub;         /* who gets its events */
} node_proc_t;

/* Starts the process req asks for and fills rep with a SpawnReply or an
 * Error (DMP_EBINARY when the executable must be uploaded first). `local`:
 * the request came over the ipc socket, so its parent runs on this host. */
void node_spawn_start(node_t *node, const dmp__msg_t *req, bool local,
                      const node_sub_t *sub, dmp__msg_t *rep);
/* Adds pidfds and relay pipes to a poll set; returns how many. */
size_t node_spawn_poll_items(node_t *node, void *items, size_t max);
/* Handles a readable pidfd or pipe (from the poll set above). */
void node_spawn_on_fd(node_t *node, int fd);
int node_spawn_signal(node_t *node, uint64_t proc, int signo);
/* Running and recently ended processes. Caller owns *procs_p. */
int node_spawn_list(node_t *node, dmp__proc_info_t **procs_p, size_t *n_p);
unsigned node_spawn_running(node_t *node);
/* At start: kills the children a SIGKILLed predecessor left running. */
void node_spawn_kill_orphans(node_t *node);
/* Stops every child (SIGTERM, SIGKILL after a grace period) and reaps. */
void node_spawn_close(node_t *node);

/* The environment of a child (mode "DMP_CHILD=3") or a zygote
 * ("DMP_ZYGOTE=3", proc_name NULL): an allow-list of ours plus dmp's. */
char **node_spawn_env(node_t *node, uint64_t id, const char *proc_name,
                      const char *mode);
void node_spawn_env_free(char **env);

/* ---- job confinement (node_jail.c) ---------------------------------- */
/* job_user and job_rlimit_* settings; DMP_ECONFIG with err filled. */
int node_jail_config(node_config_t *cfg, const char *key, const char *value,
                     char *err, size_t errlen);
/* At start: resolves job_user; DMP_ECONFIG (logged) when it does not
 * exist, when we are not root and it is not us, or when it could not
 * reach the runtime directory. */
int node_jail_setup(const node_config_t *cfg);
bool node_jail_switches_user(void);
/* Mode for directories the agent creates above its runtime directory. */
mode_t node_jail_dir_mode(void);
/* Opens path to the job user's group with mode (and with `give`, makes
 * the job user its owner). No-op when jobs run as us. */
int node_jail_share(const char *path, mode_t mode, bool give);
/* HOME, USER, LOGNAME for jobs of another user; NULL: keep ours. */
const char *node_jail_env(const char *name);
/* job_rlimit_cpu in seconds, or -1 (a zygote applies it to its children). */
long long node_jail_cpu_limit(void);

#define NODE_JAIL_FDS_MAX 4
typedef struct {
    const char *exe;        /* path; a command name when search_path */
    char *const *argv;
    char *const *env;
    const int *fds;         /* fds[i] becomes the child's fd i; -1: /dev/null */
    int n_fds;              /* <= NODE_JAIL_FDS_MAX; every other fd closed */
    bool search_path;       /* exe is looked up on PATH (a command) */
    bool new_group;         /* the child leads a new process group */
    bool zygote;            /* no RLIMIT_CPU: its children get it */
} node_jail_spawn_t;
/* Starts a job with the configured rlimits, PR_SET_NO_NEW_PRIVS and
 * user. 0 and *pid_p once it has exec'd, or -errno of what failed. */
int node_jail_spawn(const node_jail_spawn_t *spawn, pid_t *pid_p);

/* ---- descriptor guard (node_fdguard.c) ------------------------------- */
/* After each round of the main loop: takes the local socket's name away
 * while fewer than a reserve of descriptors are free (libzmq aborts on
 * EMFILE in an ipc accept), gives it back once enough are. */
void node_fdguard_check(node_t *node);

/* ---- zygotes (node_zygote.c) ----------------------------------------- */
/* Starts a target's child by forking it from a zygote of `exe` (started
 * on first use): 0 and *pid_p, or an error after which the caller execs
 * instead. The child becomes ours (we are a child subreaper). */
int node_zygote_spawn(node_t *node, const char *exe, const uint8_t *record,
                      size_t len, int out_fd, int err_fd, pid_t *pid_p);
/* Closes zygotes idle for a while; reaps orphans re-parented to us. */
void node_zygote_tick(node_t *node);
void node_zygote_close_all(node_t *node);

/* ---- shared objects (node_objects.c) ---------------------------------- */
/* Queues and pipes this node owns: their rings in /dev/shm, mapped here
 * too, so that processes on other hosts can use them through us. */
void node_objects_new(node_t *node, const dmp__msg_t *req, dmp__msg_t *rep);
void node_objects_release(node_t *node, const dmp__msg_t *req,
                          dmp__msg_t *rep);
/* Does a ring operation now, or parks it until it can be done or its
 * timeout passes; replies through `from` either way. `sender`: the ZAP
 * identity of who sent it ("" over ipc): holds are counted by it. */
void node_objects_ring_op(node_t *node, const dmp__msg_t *req,
                          const node_sub_t *from, const char *sender);
/* A peer died or restarted: holds its processes had here are closed. */
void node_objects_peer_lost(node_t *node, const char *peer);
/* The wake-up FIFO rings write to while operations are parked here. */
int node_objects_wake_fd(node_t *node);
/* Retries parked operations (after a wake-up or when one times out). */
void node_objects_retry(node_t *node);
/* Seconds until the next parked operation times out (or 1). */
double node_objects_next_deadline(node_t *node);
/* Sends the answers to pipe puts kept for later that are due (or whose
 * connection waits for no item here); seconds until the next one is
 * (INFINITY: none kept). Called once per loop round. */
double node_objects_acks_due(node_t *node);
int node_objects_open(node_t *node);
void node_objects_close(node_t *node);

/* ---- items crossing hosts in parts (node_stage.c) --------------------- */
/* Adds a PUT_PART of ring `ring` of object obj from `from`: 1 while the
 * item is incomplete, 0 with the whole item (owned) in *item_p, or an
 * error (the stage is gone). */
int node_stage_part(node_t *node, const char *from, uint64_t obj,
                    uint32_t ring, uint64_t item_max, const dmp__msg_t *req,
                    uint8_t **item_p, size_t *len_p);
/* Drops stages without a part for a while (now: dmp__now()). */
void node_stage_tick(node_t *node, double now);
/* Drops the stages of a lost peer (and its jobs), or, peer NULL, of an
 * object that is gone. */
void node_stage_forget(node_t *node, const char *peer, uint64_t obj);
void node_stage_close(node_t *node);

/* ---- Values and Arrays (node_shared.c) ------------------------------- */
/* A new one: replies with an ObjInfo naming its segment, or an Error. */
void node_shared_new(node_t *node, const dmp__msg_t *req, dmp__msg_t *rep);
/* Does a SharedOp now, or parks it until the lock is free or its timeout
 * passes; replies through `from` either way. */
void node_shared_op(node_t *node, const dmp__msg_t *req,
                    const node_sub_t *from);
/* Retries parked operations (after a wake-up of the FIFO). */
void node_shared_retry(node_t *node);
/* Seconds until a parked operation times out or a lease runs out
 * (INFINITY: none); node_shared_timers handles what is due. */
double node_shared_next_deadline(node_t *node);
void node_shared_timers(node_t *node);
/* Every heartbeat: leases, holders that died, objects nobody holds. */
void node_shared_tick(node_t *node);
void node_shared_close(node_t *node);

/* ---- forwarding to peers (node_route.c) ------------------------------ */
/* A request for another node goes to that peer over our DEALER with a
 * fresh id; its reply comes back on the DEALER and is relayed to the
 * client under the client's id. Events of processes started that way are
 * relayed likewise. One hop only: a forwarded request is for its receiver.
 */
void node_route_forward(node_t *node, node_peer_t *peer,
                        const node_sub_t *client, dmp__msg_t *req);
/* Sends what waits for our link to peer to come up (or fails it). */
void node_route_flush(node_t *node, node_peer_t *peer);
void node_route_on_peer_msg(node_t *node, node_peer_t *peer,
                            dmp__msg_t *msg);
/* The peer died: pending forwards get DMP_ENODE, its processes' owners a
 * ProcExit with error DMP_ENODE, the pipe ends it held here close. */
void node_route_peer_lost(node_t *node, node_peer_t *peer);
/* Expires forwards that never got a reply. */
void node_route_tick(node_t *node);
void node_route_close(node_t *node);
/* Sends msg to a subscriber without blocking. */
int node_send_to(const node_sub_t *sub, const dmp__msg_t *msg);
node_peer_t *node_peers_find(node_t *node, const char *name);

/* ---- what our processes hold elsewhere (node_holds.c) ----------------- */
/* Watched processes at most through pidfds (the rest: at each tick). */
#define NODE_HOLD_FDS_MAX 1024
/* A RingOp passing through: counts a local process's holds and closes of
 * rings elsewhere, and does a hold for a child (RingOp.owner). True when
 * it answered the request itself. `local`: from the ipc socket. */
bool node_holds_request(node_t *node, dmp__msg_t *req, bool local,
                        const node_sub_t *from);
size_t node_holds_poll_items(node_t *node, void *items, size_t max);
/* A watched process ended: its owners get the closes it owed. */
void node_holds_on_fd(node_t *node, int fd);
void node_holds_tick(node_t *node);
/* Direct (proto): a local process's ask, or a peer's vouch or drop.
 * Replies through `from`. `local`: from the ipc socket; user_id: the
 * sender's ZAP identity. */
void node_holds_direct(node_t *node, dmp__msg_t *req, bool local,
                       const char *user_id, const node_sub_t *from);
/* A peer's answer to our vouch, on its way to our process: the address
 * and key are the ones we know the peer by. */
void node_holds_on_info(node_t *node, node_peer_t *peer, dmp__msg_t *msg);
/* The peer died or restarted: what was held there is gone, and so are
 * the keys it vouched for here. */
void node_holds_peer_lost(node_t *node, const char *peer);
void node_holds_close(node_t *node);

/* ---- managers by name (node_manager.c) ------------------------------- */
/* Registers, forgets or looks up a manager's address (MgrName); `local`:
 * the request came over the ipc socket. Fills rep. */
void node_manager_name(node_t *node, const dmp__msg_t *req, bool local,
                       dmp__msg_t *rep);
void node_manager_close(void);

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
    node_cache_t *cache;        /* binaries shipped to us */
    node_proc_t *procs;         /* children, running and recently ended */
    uint64_t next_proc;         /* id of the next child */
    struct node_fwd *fwds;      /* forwarded requests awaiting replies */
    struct node_rsub *rsubs;    /* processes we started on peers */
    uint64_t next_fwd;
    struct node_obj *objs;      /* queues and pipes we own */
    struct node_park *parked;   /* ring operations waiting for room/items */
    struct node_ack *acks;      /* answers to pipe puts kept for later */
    unsigned notify_idle;       /* rings keeping our FIFO path with
                                 * nothing parked on them */
    double reoffer_at;          /* retry parked operations then: items
                                 * offered, not taken; 0 after a park */
    uint64_t next_obj;
    struct node_stage *stages;  /* items arriving in parts (node_stage.c) */
    uint64_t staged;            /* bytes they hold */
    struct node_shobj *shobjs;  /* Values and Arrays we own */
    struct node_shpark *shparked; /* their operations waiting for a lock */
    struct node_hold *holds;    /* pipe ends our processes hold elsewhere */
    int wake_fd;                /* read end of RUNTIME_DIR/wake.fifo */
    int wake_wfd;               /* a write end we hold so it never EOFs */
    char wake_path[PATH_MAX];
    uint64_t served;            /* requests served, for: */
    uint64_t served_last_tick;  /* ... at the last heartbeat tick */
    uint64_t served_trimmed;    /* ... when memory was last trimmed */
    double poll_until;          /* node_poll.c: polling until (0: not) */
    bool poll_hit;              /* this window paid */
    bool poll_waited;           /* a polled round found nothing since the
                                 * last serve */
    unsigned poll_rounds;       /* polled rounds in this window */
    unsigned poll_misses;       /* windows in a row that did not pay */
    unsigned poll_skips;        /* serves since then */
};

/* ---- busy polling (node_poll.c) ------------------------------------- */
/* A pipe was served: poll without sleeping for busy_poll_us from now
 * (extending an open window), unless recent windows did not pay. */
void node_poll_soon(node_t *node, double now);
/* Whether the loop polls without waiting now; closes a window past its
 * end, counting it as a miss when it polled and did not pay. */
bool node_poll_now(node_t *node, double now);
/* The loop's poll returned `events` (polled: with no wait). */
void node_poll_saw(node_t *node, bool polled, int events);

/* Sets up everything, runs until SIGTERM/SIGINT or the control fd closes,
 * tears down. Returns the process exit status. */
int node_run(node_t *node);

#endif /* NODE_H */
