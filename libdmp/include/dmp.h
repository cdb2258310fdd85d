/*
 * dmp.h - Python's multiprocessing API in C, across machines.
 *
 * The one public header of libdmp. It never exposes ZeroMQ or protobuf-c
 * types, so dmp stays free to change its transport.
 *
 * Conventions (the same in every module):
 *   - 0 is success; failures are negative: -errno for system errors
 *     (-ETIMEDOUT, -ENOMEM, -EINVAL, -EBADF) or one of the DMP_E* codes below.
 *   - Timeouts are double seconds; DMP_FOREVER waits forever, zero or a
 *     negative number does not wait at all.
 *   - Constructors return int and fill an out-pointer only on success.
 *     Destructors take a pointer to the handle, are safe on NULL and null it.
 *   - The library is silent until the program installs a log handler.
 */
#ifndef DMP_H
#define DMP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(DMP_BUILDING) && defined(__GNUC__)
#define DMP_EXPORT __attribute__((visibility("default")))
#else
#define DMP_EXPORT
#endif

#define DMP_VERSION_MAJOR 0
#define DMP_VERSION_MINOR 1
#define DMP_VERSION_PATCH 0
#define DMP_VERSION_STRING "0.1.0"

/* Wait forever (a timeout argument). */
#define DMP_FOREVER (-1.0 / 0.0)

/*
 * dmp's own error codes, a reserved negative block below -1000 so they never
 * collide with -errno. Adding a code? Add it here once; dmp_strerror and
 * dmp_err_name follow, and tests/unit/test_dmp_error.c checks every entry.
 */
#define DMP_ERRNO_MAP(XX)                                                     \
    XX(EEMPTY, -1001, "queue is empty")                                       \
    XX(EFULL, -1002, "queue is full")                                         \
    XX(EEOF, -1003, "end of file: the other end is closed")                   \
    XX(ENODE, -1004, "node unreachable")                                      \
    XX(EAUTH, -1005, "authentication refused")                                \
    XX(EVERSION, -1006, "protocol version mismatch")                          \
    XX(EREMOTE, -1007, "error raised by remote code")                         \
    XX(EBROKEN, -1008, "barrier is broken")                                   \
    XX(EOWNERDEAD, -1009, "previous holder died; protected data may be inconsistent") \
    XX(EPROTO, -1010, "malformed message")                                    \
    XX(ESERVERKEY, -1011, "server identity mismatch")                         \
    XX(ECONFIG, -1012, "invalid configuration")                               \
    XX(EKEY, -1013, "invalid or unsafe key file")                             \
    XX(ELOCKED, -1014, "runtime directory is in use by another agent")        \
    XX(ENOAGENT, -1015, "cannot start the local agent")

enum {
#define DMP_XX_ENUM(name, code, text) DMP_##name = (code),
    DMP_ERRNO_MAP(DMP_XX_ENUM)
#undef DMP_XX_ENUM
};

/* A human text for any code this library returns: dmp's own, -errno, or 0.
 * Never NULL; static storage. */
DMP_EXPORT const char *dmp_strerror(int err);

/* The symbolic name of a code: "DMP_EEMPTY", "ETIMEDOUT", "OK".
 * Never NULL; static storage. */
DMP_EXPORT const char *dmp_err_name(int err);

/* ---- Logging ---------------------------------------------------------- */

typedef enum {
    DMP_LOG_ERROR = 0,
    DMP_LOG_WARN = 1,
    DMP_LOG_INFO = 2,
    DMP_LOG_DEBUG = 3,
} dmp_log_level_t;

/* Receives each log line (no trailing newline). Called from any thread. */
typedef void (*dmp_log_fn)(dmp_log_level_t level, const char *msg, void *arg);

/* Installs a log handler for messages at `level` or more severe.
 * NULL silences the library again (the default). */
DMP_EXPORT void dmp_set_log_handler(dmp_log_fn fn, dmp_log_level_t level,
                                    void *arg);

/* ---- Library lifetime ------------------------------------------------- */

/*
 * Joins the cluster named by the environment, or starts a private agent.
 *
 *   DMP_CLUSTER     tcp://HOST:PORT of any node of the cluster
 *   DMP_KEY         this client's secret key file (see `dmp keygen`)
 *   DMP_SERVER_KEY  the node's public key: a .pub file or 40 Z85 characters
 *   DMP_AGENT       an agent's local endpoint (ipc://PATH), set for children
 *   DMP_DMPD        path of the dmpd binary for the embedded agent
 *
 * With neither DMP_CLUSTER nor DMP_AGENT set, dmp_init starts a private
 * dmpd child (the embedded default) that exits when this process exits.
 * Returns 0, DMP_EAUTH, DMP_ESERVERKEY, DMP_ENODE, DMP_EKEY, DMP_ENOAGENT,
 * -ENOMEM. Calling it again after success returns 0 and does nothing.
 */
DMP_EXPORT int dmp_init(void);

/* Leaves the cluster, stops the embedded agent. Safe to call twice. */
DMP_EXPORT void dmp_fini(void);

/* ---- Cluster ---------------------------------------------------------- */

typedef enum {
    DMP_NODE_ALIVE = 0,   /* heard within two heartbeat intervals */
    DMP_NODE_SUSPECT = 1, /* missed heartbeats, not yet past liveness */
    DMP_NODE_DEAD = 2,    /* silent for heartbeat x liveness */
} dmp_node_state_t;

typedef struct {
    char name[64];          /* node name */
    char address[256];      /* advertised tcp address; "" when ipc only */
    dmp_node_state_t state; /* as seen by the node that answered */
    unsigned cores;         /* online CPUs */
    double load;            /* 1-minute load average */
    uint64_t uptime_ms;     /* since that agent started */
    unsigned processes;     /* dmp processes running there */
    uint64_t last_seen_ms;  /* how long since the answering node heard it */
} dmp_node_info_t;

/* "alive", "suspect", "dead". Never NULL. */
DMP_EXPORT const char *dmp_node_state_name(dmp_node_state_t state);

/* A connection to one agent. Most programs never see one: dmp_init makes
 * the process-wide connection. The CLI and tools use it directly. */
typedef struct dmp_client dmp_client_t;

typedef struct {
    const char *address;    /* ipc://PATH or tcp://HOST:PORT; required */
    const char *key_file;   /* client secret key; required for tcp */
    const char *server_key; /* node public key: .pub path or Z85; tcp */
    double connect_timeout; /* seconds; 0 means 5 */
    double request_timeout; /* seconds; 0 means 10 */
} dmp_client_opts_t;

/* Connects and says Hello. On failure, fills `errbuf` (if given) with a
 * sentence naming the cause. DMP_EAUTH: the node refused our key.
 * DMP_ESERVERKEY: the node is not the one pinned. DMP_ENODE: no answer. */
DMP_EXPORT int dmp_client_connect(const dmp_client_opts_t *opts,
                                  dmp_client_t **client_p, char *errbuf,
                                  size_t errlen);

/* Closes the connection. Safe on NULL; sets *client_p to NULL. */
DMP_EXPORT void dmp_client_destroy(dmp_client_t **client_p);

/* The name of the node this client talks to. Borrowed; valid until the
 * client is destroyed. */
DMP_EXPORT const char *dmp_client_node(const dmp_client_t *client);

/* The text of the last error a request on this client got from the
 * agent, or "" (attached to the client, not global). */
DMP_EXPORT const char *dmp_client_errmsg(const dmp_client_t *client);

/* Lists every node the answering agent knows, itself first.
 * Caller owns *nodes_p; free with dmp_nodes_free. */
DMP_EXPORT int dmp_client_nodes(dmp_client_t *client,
                                dmp_node_info_t **nodes_p, size_t *count_p);

/* Round trip of one Hello (a liveness check and a benchmark). */
DMP_EXPORT int dmp_client_ping(dmp_client_t *client);

/* The connection dmp_init made. Borrowed; valid until dmp_fini. NULL
 * before dmp_init succeeded. */
DMP_EXPORT dmp_client_t *dmp_default_client(void);

/* dmp_client_nodes on the connection made by dmp_init. */
DMP_EXPORT int dmp_nodes(dmp_node_info_t **nodes_p, size_t *count_p);
DMP_EXPORT void dmp_nodes_free(dmp_node_info_t **nodes_p);

/* ---- Keys ------------------------------------------------------------- */

/* Writes DIR/NAME.key (secret, mode 0600) and DIR/NAME.pub.
 * Refuses to overwrite (-EEXIST). NAME: letters, digits, '.', '_', '-'. */
DMP_EXPORT int dmp_keygen(const char *dir, const char *name);

#ifdef __cplusplus
}
#endif
#endif /* DMP_H */
