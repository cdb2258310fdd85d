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
#define DMP_FOREVER (1.0 / 0.0)

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
    XX(ENOAGENT, -1015, "cannot start the local agent")                   \
    XX(EBINARY, -1016, "executable not in the node's binary cache")        \
    XX(EWORKER, -1017, "a task kept killing its pool worker")

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
 *
 * In a child process started by dmp (see dmp_process_new), dmp_init runs
 * the child's target and exits with its return value: it never returns.
 * So call it first thing in main(), before anything a child must not do.
 * Returns 0, DMP_EAUTH, DMP_ESERVERKEY, DMP_ENODE, DMP_EKEY, DMP_ENOAGENT,
 * -ENOMEM. Calling it again after success returns 0 and does nothing.
 */
DMP_EXPORT int dmp_init(void);

/* dmp_init with explicit settings instead of the environment (opts NULL:
 * the environment). On failure `errbuf` (if given) says why. */
typedef struct dmp_client_opts dmp_client_opts_t;
DMP_EXPORT int dmp_init_opts(const dmp_client_opts_t *opts, char *errbuf,
                             size_t errlen);

/* As Python at exit: terminates daemon processes this program started,
 * joins the others, leaves the cluster, stops the embedded agent. Safe to
 * call twice. */
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

struct dmp_client_opts {
    const char *address;    /* ipc://PATH or tcp://HOST:PORT; required */
    const char *key_file;   /* client secret key; required for tcp */
    const char *server_key; /* node public key: .pub path or Z85; tcp */
    double connect_timeout; /* seconds; 0 means 5 */
    double request_timeout; /* seconds; 0 means 10 */
};

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

/* ---- Processes --------------------------------------------------------- */

typedef struct dmp_value dmp_value_t;

/*
 * A target is a function a child process runs, found by name: the child is
 * the same executable, re-entered through dmp_init() (Python's "spawn"
 * start method), so it must call dmp_init() first thing in main(). In a
 * child, dmp_init() runs the target and exits with its return value; it
 * never returns. `args` is the list given to the process (borrowed).
 */
typedef int (*dmp_target_fn)(const dmp_value_t *args);

typedef struct dmp_target {
    const char *name;
    dmp_target_fn fn;
    struct dmp_target *next; /* the registry's link; leave NULL */
} dmp_target_t;

/* Adds a target to the registry (normally through the macros below, which
 * run before main, so no -rdynamic is needed). */
DMP_EXPORT void dmp_target_register(dmp_target_t *target);

/* Defines and registers a target:  DMP_TARGET(worker) { ...; return 0; } */
#define DMP_TARGET(fn)                                                       \
    static int fn(const dmp_value_t *args);                                  \
    static dmp_target_t dmp_target_##fn = {#fn, fn, NULL};                   \
    __attribute__((constructor)) static void dmp_target_init_##fn(void)      \
    {                                                                        \
        dmp_target_register(&dmp_target_##fn);                               \
    }                                                                        \
    static int fn(const dmp_value_t *args)

/* Registers a function defined elsewhere:  DMP_REGISTER(worker); */
#define DMP_REGISTER(fn)                                                     \
    static dmp_target_t dmp_target_##fn = {#fn, fn, NULL};                   \
    __attribute__((constructor)) static void dmp_target_init_##fn(void)      \
    {                                                                        \
        dmp_target_register(&dmp_target_##fn);                               \
    }

typedef struct dmp_process dmp_process_t;

typedef struct {
    const char *target;     /* registered target; required */
    const char *name;       /* default "Process-N", as Python numbers them */
    const dmp_value_t *args; /* a list (borrowed, copied); NULL: no args */
    /* Where to run: a node name, "local" (the node this program talks
     * to), or "spread" (round robin over alive nodes). NULL: $DMP_PLACE,
     * else "local". */
    const char *node;
    int daemon;             /* terminated by dmp_fini instead of joined */
} dmp_process_opts_t;

/* Python's Process(target=..., name=..., args=...). Does not start it.
 * -EINVAL: no such registered target, args not a list, bad name. */
DMP_EXPORT int dmp_process_new(const dmp_process_opts_t *opts,
                               dmp_process_t **proc_p);
/* Starts it (once: -EINVAL after). Ships the executable to a node that
 * lacks it (content-addressed, verified, cached). DMP_ENODE when the node
 * is unknown, dead or unreachable. Calls dmp_init() if needed. */
DMP_EXPORT int dmp_process_start(dmp_process_t *proc);
/* Waits until it exits: 0; -ETIMEDOUT after timeout seconds (DMP_FOREVER:
 * no limit; 0: just check); DMP_ENODE when its node was lost (exit code
 * unknown); -EINVAL when not started. Everything the child printed is out
 * before join returns 0. */
DMP_EXPORT int dmp_process_join(dmp_process_t *proc, double timeout);
/* 1 while started and not exited, else 0. */
DMP_EXPORT int dmp_process_is_alive(dmp_process_t *proc);
/* Python's exitcode: 0, the target's return value (or exit status), or
 * -signal. Returns 0 and fills *code once exited; -EAGAIN while it runs
 * or before start (Python's None); DMP_ENODE when its node was lost. */
DMP_EXPORT int dmp_process_exitcode(dmp_process_t *proc, int *code);
/* SIGTERM / SIGKILL, wherever it runs. 0 also when it already exited. */
DMP_EXPORT int dmp_process_terminate(dmp_process_t *proc);
DMP_EXPORT int dmp_process_kill(dmp_process_t *proc);
/* pid on its node (0 before start), its name, its node ("" before). */
DMP_EXPORT int dmp_process_pid(const dmp_process_t *proc);
DMP_EXPORT const char *dmp_process_name(const dmp_process_t *proc);
DMP_EXPORT const char *dmp_process_node(const dmp_process_t *proc);
/* Frees the handle; a running process goes on (see dmp_fini). Safe on
 * NULL; nulls *proc_p. */
DMP_EXPORT void dmp_process_destroy(dmp_process_t **proc_p);

/* Python's current_process().name: "MainProcess" in the program, the
 * process's name in a child. And the node this process runs on. */
DMP_EXPORT const char *dmp_current_process_name(void);
DMP_EXPORT const char *dmp_current_node(void);

/* ---- Values: what processes, queues, pipes and managers carry -------- */

/*
 * A dmp value (dmp_value_t, declared above) is the C counterpart of the picklable Python objects dmp
 * programs pass around: None, bool, int (64-bit), float (double), str
 * (UTF-8, may contain NUL), bytes, list, and dict (insertion-ordered; keys
 * are scalars: None, bool, int, float, str, bytes). Values are trees: a
 * container owns its items.
 *
 * Constructors return NULL only when memory runs out. Functions that take
 * an item "take ownership of item in all cases": on failure they destroy
 * it, so calls can be nested and checked once, as in
 *     dmp_value_t *args = dmp_list_of(2, dmp_int(5), dmp_str("x"));
 *     if (!args) return -ENOMEM;
 */
typedef enum {
    DMP_VALUE_NONE = 0,
    DMP_VALUE_BOOL = 1,
    DMP_VALUE_INT = 2,
    DMP_VALUE_DOUBLE = 3,
    DMP_VALUE_STR = 4,
    DMP_VALUE_BYTES = 5,
    DMP_VALUE_LIST = 6,
    DMP_VALUE_MAP = 7,
    DMP_VALUE_HANDLE = 8, /* a queue, connection, Value, ... (dmp_queue_value) */
} dmp_value_type_t;

DMP_EXPORT dmp_value_t *dmp_none(void);
DMP_EXPORT dmp_value_t *dmp_bool(int b);
DMP_EXPORT dmp_value_t *dmp_int(int64_t i);
DMP_EXPORT dmp_value_t *dmp_double(double d);
/* NULL s gives NULL. Invalid UTF-8 gives NULL (str is text, as in Python;
 * use dmp_bytes for binary data). */
DMP_EXPORT dmp_value_t *dmp_str(const char *s);
DMP_EXPORT dmp_value_t *dmp_strn(const char *s, size_t len);
DMP_EXPORT dmp_value_t *dmp_bytes(const void *data, size_t len);
DMP_EXPORT dmp_value_t *dmp_list(void);
DMP_EXPORT dmp_value_t *dmp_map(void);
/* A list of n items; takes ownership of every item; if any is NULL the
 * others are destroyed and NULL is returned. */
DMP_EXPORT dmp_value_t *dmp_list_of(size_t n, ...);
/* range(start, stop) as a list of ints, like Python's list(range(...)). */
DMP_EXPORT dmp_value_t *dmp_list_range(int64_t start, int64_t stop);

/* Frees a value and everything it contains. Safe on NULL; nulls *v. */
DMP_EXPORT void dmp_value_destroy(dmp_value_t **v);
/* A deep copy, or NULL when memory runs out (or v is NULL). */
DMP_EXPORT dmp_value_t *dmp_value_copy(const dmp_value_t *v);
/* Python's ==, recursively; int 1 equals float 1.0 as in Python. */
DMP_EXPORT int dmp_value_equal(const dmp_value_t *a, const dmp_value_t *b);

DMP_EXPORT dmp_value_type_t dmp_value_type(const dmp_value_t *v);
/* "NoneType", "bool", "int", "float", "str", "bytes", "list", "dict" */
DMP_EXPORT const char *dmp_value_type_name(dmp_value_type_t type);

/* Reads a scalar. -EINVAL when v has another type; get_double also reads
 * an int, get_int also a bool (as Python's int(True)). */
DMP_EXPORT int dmp_value_get_bool(const dmp_value_t *v, int *out);
DMP_EXPORT int dmp_value_get_int(const dmp_value_t *v, int64_t *out);
DMP_EXPORT int dmp_value_get_double(const dmp_value_t *v, double *out);
/* The text of a str (NUL-terminated; *len_p, if given, gets the length,
 * which counts any embedded NUL). NULL when v is not a str. Borrowed;
 * valid while v lives and is not modified. */
DMP_EXPORT const char *dmp_value_str(const dmp_value_t *v, size_t *len_p);
/* The content of bytes; NULL when v is not bytes. Borrowed likewise. */
DMP_EXPORT const void *dmp_value_bytes(const dmp_value_t *v, size_t *len_p);
/* Python's len(): items of a list or dict, bytes of bytes, UTF-8 bytes of
 * a str; 0 for scalars. */
DMP_EXPORT size_t dmp_value_len(const dmp_value_t *v);

/* Lists. Indexes may be negative, counted from the end as in Python.
 * get: borrowed item, or NULL when out of range or v is not a list. */
DMP_EXPORT dmp_value_t *dmp_list_get(const dmp_value_t *list, int64_t i);
/* Takes ownership of item in all cases. -EINVAL not a list, -ENOMEM. */
DMP_EXPORT int dmp_list_append(dmp_value_t *list, dmp_value_t *item);
/* Replaces item i (the old one is destroyed). Takes ownership of item in
 * all cases. -ERANGE out of range, -EINVAL not a list. */
DMP_EXPORT int dmp_list_set(dmp_value_t *list, int64_t i, dmp_value_t *item);

/* Dicts. Keys must be scalars (-EINVAL otherwise); keys compare as in
 * Python (1 == 1.0 == True). set takes ownership of key and item in all
 * cases; setting an existing key replaces the item in place (order kept). */
DMP_EXPORT int dmp_map_set(dmp_value_t *map, dmp_value_t *key,
                           dmp_value_t *item);
DMP_EXPORT int dmp_map_set_str(dmp_value_t *map, const char *key,
                               dmp_value_t *item);
/* Borrowed item for key, or NULL when absent or map is not a dict. */
DMP_EXPORT dmp_value_t *dmp_map_get(const dmp_value_t *map,
                                    const dmp_value_t *key);
DMP_EXPORT dmp_value_t *dmp_map_get_str(const dmp_value_t *map,
                                        const char *key);
/* The i-th key and item in insertion order (borrowed), NULL past the end. */
DMP_EXPORT dmp_value_t *dmp_map_key_at(const dmp_value_t *map, size_t i);
DMP_EXPORT dmp_value_t *dmp_map_item_at(const dmp_value_t *map, size_t i);
/* Removes key; -ENOENT when absent (Python's KeyError). */
DMP_EXPORT int dmp_map_del(dmp_value_t *map, const dmp_value_t *key);

/* Python's repr(): None, True, 5, 2.5, 'Hello', b'\x00', [1, 2],
 * {'key': 'Python2'}. Writes at most size bytes with a NUL; returns the
 * length the full text needs (as snprintf), or -ENOMEM. Floats print as
 * Python's repr does (shortest text that reads back exactly: 0.1, 1.0,
 * 1e+100, inf, nan). */
DMP_EXPORT int dmp_value_repr(const dmp_value_t *v, char *buf, size_t size);

/* Serialises a value (dmp's own compact binary format, independent of the
 * host's endianness). Caller owns *buf_p; free with dmp_free. */
DMP_EXPORT int dmp_value_encode(const dmp_value_t *v, uint8_t **buf_p,
                                size_t *len_p);
/* Parses what dmp_value_encode wrote. Input from the network is checked:
 * truncation, trailing bytes, unknown tags, invalid UTF-8 in str, nesting
 * deeper than 64, counts larger than the input could hold, non-scalar dict
 * keys: all give DMP_EPROTO and no value. Caller owns *v_p. */
DMP_EXPORT int dmp_value_decode(const void *buf, size_t len,
                                dmp_value_t **v_p);

/* Frees memory the library handed to the caller (encode buffers). */
DMP_EXPORT void dmp_free(void *ptr);

/* ---- Queues ----------------------------------------------------------- */

/*
 * Python's Queue, JoinableQueue and SimpleQueue. A queue is owned by the
 * node where it is created; processes on that host put and get directly in
 * shared memory; processes on other hosts go through the owning node. Each
 * item is delivered to exactly one getter. A queue handle travels to child
 * processes as a value (dmp_queue_value) inside their arguments.
 */
typedef struct dmp_queue dmp_queue_t;

typedef struct {
    int64_t maxsize;    /* Queue(maxsize): <= 0 means no limit */
    uint64_t item_max;  /* largest item in bytes; 0: 64 MiB */
    uint64_t capacity;  /* shared-memory ring bytes; 0: 4 MiB (sparse) */
} dmp_queue_opts_t;

/* A new queue on the node this process talks to. opts may be NULL. */
DMP_EXPORT int dmp_queue_new(const dmp_queue_opts_t *opts, dmp_queue_t **q_p);
/* put(obj, timeout): 0; DMP_EFULL when no slot freed in time (queue.Full;
 * timeout 0 is put_nowait); -EMSGSIZE over item_max; -EBADF after close;
 * DMP_ENODE when the owning node is unreachable. The item is copied. */
DMP_EXPORT int dmp_queue_put(dmp_queue_t *q, const dmp_value_t *item,
                             double timeout);
/* get(timeout): 0 and a new value (caller owns; dmp_value_destroy);
 * DMP_EEMPTY when nothing came in time (queue.Empty; timeout 0 is
 * get_nowait); DMP_ENODE when the owning node is unreachable. An item
 * larger than a frame crosses hosts in parts and is taken whole. */
DMP_EXPORT int dmp_queue_get(dmp_queue_t *q, dmp_value_t **item_p,
                             double timeout);
/* Raw bytes instead of values (no encoding). get: caller frees *data_p
 * with dmp_free. */
DMP_EXPORT int dmp_queue_put_bytes(dmp_queue_t *q, const void *data,
                                   size_t len, double timeout);
DMP_EXPORT int dmp_queue_get_bytes(dmp_queue_t *q, void **data_p,
                                   size_t *len_p, double timeout);
/* qsize(), empty(), full(): approximate, as in Python. Negative: error. */
DMP_EXPORT int64_t dmp_queue_qsize(dmp_queue_t *q);
DMP_EXPORT int dmp_queue_empty(dmp_queue_t *q);
DMP_EXPORT int dmp_queue_full(dmp_queue_t *q);
/* JoinableQueue: task_done() (-EINVAL when called more often than items
 * were put: Python's ValueError) and join(timeout): 0 or -ETIMEDOUT. */
DMP_EXPORT int dmp_queue_task_done(dmp_queue_t *q);
DMP_EXPORT int dmp_queue_join(dmp_queue_t *q, double timeout);
/* close(): this process puts no more (later puts: -EBADF). */
DMP_EXPORT int dmp_queue_close(dmp_queue_t *q);
/* Frees the handle. The process that created the queue also removes it
 * (and so does dmp_fini for queues it created and did not destroy). */
DMP_EXPORT void dmp_queue_destroy(dmp_queue_t **q_p);
/* The handle as a value, to pass in a process's args. NULL on ENOMEM. */
DMP_EXPORT dmp_value_t *dmp_queue_value(const dmp_queue_t *q);
/* Opens the queue a value carries (in a child, from its args): a new
 * handle the caller destroys. -EINVAL when v is not a queue. */
DMP_EXPORT int dmp_queue_from_value(const dmp_value_t *v, dmp_queue_t **q_p);

/* ---- Pipes ------------------------------------------------------------ */

/*
 * Python's Pipe(duplex) and its Connection objects. Each direction is a
 * bounded channel owned by the creating node. recv returns DMP_EEOF once
 * the other end is closed (or its process died) and what it sent is read.
 */
typedef struct dmp_conn dmp_conn_t;

/* Two connected ends. duplex 0: *a_p only receives, *b_p only sends (as
 * Python's Pipe(False) returns (reader, writer)). */
DMP_EXPORT int dmp_pipe(int duplex, dmp_conn_t **a_p, dmp_conn_t **b_p);
/* send(obj): 0 once the message is in the pipe. On an end whose pipe is
 * owned by another host, 0 once it is on its way (as a socket write
 * returns before the peer reads): a failure to deliver it (DMP_ENODE)
 * comes from the next call on the end; close and dmp_fini deliver what
 * was sent first. */
DMP_EXPORT int dmp_conn_send(dmp_conn_t *c, const dmp_value_t *obj);
/* recv(): blocks until something arrives: 0 and a new value; DMP_EEOF
 * once the peer closed (or died) and what it sent is read; DMP_ENODE
 * when the owning node is unreachable. */
DMP_EXPORT int dmp_conn_recv(dmp_conn_t *c, dmp_value_t **obj_p);
/* send_bytes(buf, offset, size) and recv_bytes: raw messages. */
DMP_EXPORT int dmp_conn_send_bytes(dmp_conn_t *c, const void *buf,
                                   size_t offset, size_t size);
DMP_EXPORT int dmp_conn_recv_bytes(dmp_conn_t *c, void **data_p,
                                   size_t *len_p);
/* poll(timeout): 1 when recv would not block (data or EOF), 0 if not. */
DMP_EXPORT int dmp_conn_poll(dmp_conn_t *c, double timeout);
/* close(): the other end sees EOF after draining. Safe twice. */
DMP_EXPORT int dmp_conn_close(dmp_conn_t *c);
/* Closes (if still open) and frees the handle. */
DMP_EXPORT void dmp_conn_destroy(dmp_conn_t **c_p);
/* The end as a value for a process's args; and back, in the child:
 * from_value gives a new handle the caller destroys. dmp_fini closes and
 * frees every end still held (as a process's exit closes Python's
 * connections): do not use a handle after dmp_fini. */
DMP_EXPORT dmp_value_t *dmp_conn_value(const dmp_conn_t *c);
DMP_EXPORT int dmp_conn_from_value(const dmp_value_t *v, dmp_conn_t **c_p);

/* ---- Pool ------------------------------------------------------------- */

/*
 * Python's Pool, with workers on any nodes of the cluster. A task is a
 * registered function, found by name in the workers (the same executable,
 * re-entered through dmp_init, as for targets):
 *
 *     DMP_TASK(square)          int square(const dmp_value_t *arg,
 *     {                                    dmp_value_t **result)
 *         int64_t x;
 *         if (dmp_value_get_int(arg, &x) != 0)
 *             return -EINVAL;
 *         *result = dmp_int(x * x);
 *         return 0;
 *     }
 *
 * `arg` is the item (map, imap, imap_unordered) or the list of arguments
 * (starmap, apply: Python's f(*args)); borrowed for the call. On success a
 * task returns 0 and sets *result to a new value (the pool takes it;
 * leaving NULL means None). On failure it returns a non-zero code, as a
 * Python task raises: the call that ran it then fails with DMP_EREMOTE,
 * and the code and a text come back with it (..._error, ..._errmsg). The
 * text is *result when the task set it to a str, else dmp_strerror(code).
 *
 * The same signature serves `dmp map MODULE.so:FUNC`: there FUNC is a
 * plain exported function of a shared object (no registration), called
 * with each input line as a str; a str result prints as it is, another
 * value as its repr. Build it with `cc -shared -fPIC -o m.so m.c`: the dmp
 * functions it calls come from the dmp worker that loads it.
 *
 * Beyond Python: when a worker or its node dies, what it had not finished
 * runs again on another worker and a replacement starts; every result is
 * delivered once. A task that kills its worker again and again (a crash,
 * a signal) fails with DMP_EWORKER, naming it, after `retries` runs.
 */
typedef int (*dmp_task_fn)(const dmp_value_t *arg, dmp_value_t **result);

typedef struct dmp_task {
    const char *name;
    dmp_task_fn fn;
    struct dmp_task *next; /* the registry's link; leave NULL */
} dmp_task_t;

/* Adds a task to the registry (normally through DMP_TASK, before main). */
DMP_EXPORT void dmp_task_register(dmp_task_t *task);

/* Defines and registers a task:  DMP_TASK(f) { *result = ...; return 0; } */
#define DMP_TASK(fn)                                                         \
    static int fn(const dmp_value_t *arg, dmp_value_t **result);             \
    static dmp_task_t dmp_task_##fn = {#fn, fn, NULL};                       \
    __attribute__((constructor)) static void dmp_task_init_##fn(void)        \
    {                                                                        \
        dmp_task_register(&dmp_task_##fn);                                   \
    }                                                                        \
    static int fn(const dmp_value_t *arg, dmp_value_t **result)

typedef struct dmp_pool dmp_pool_t;
typedef struct dmp_async dmp_async_t; /* AsyncResult */
typedef struct dmp_imap dmp_imap_t;   /* the iterator imap returns */

typedef struct {
    /* Workers. 0: as many as the chosen nodes have cores. */
    int processes;
    /* A registered target (DMP_TARGET) each worker runs once, with
     * initargs as its args, before its first task; a non-zero return
     * stops that worker (and, when every try fails, the pool's calls fail
     * with DMP_EREMOTE). NULL: none. */
    const char *initializer;
    const dmp_value_t *initargs; /* a list, borrowed and copied; NULL: [] */
    /* Chunks a worker runs before a fresh one replaces it; 0: no limit. */
    int maxtasksperchild;
    /* Where the workers run: "local" (the node this program talks to),
     * "spread" (every alive node, by cores), a node name, or names
     * separated by commas. NULL: $DMP_PLACE, else "local". */
    const char *placement;
    /* How many times a chunk runs again after its worker died while
     * running it (a crash or a signal; a lost node does not count).
     * 0: 3. Negative: never. */
    int retries;
    /* Seconds one chunk may run: a worker that takes longer (hung, in an
     * endless loop, stopped) is killed and the chunk runs again, counted
     * as above. 0: no limit. With a limit, a message carries one chunk. */
    double task_timeout;
} dmp_pool_opts_t;

/*
 * Python's callback and error_callback in one: called once when an
 * async call is ready, on the pool's own thread (it must not block or call
 * the pool's waiting functions). rc 0: result (borrowed for the call) is
 * the value; else rc is what get returns and errmsg says why.
 */
typedef void (*dmp_async_fn)(int rc, const dmp_value_t *result,
                             const char *errmsg, void *arg);

/* Pool(processes, initializer, initargs, maxtasksperchild): starts the
 * workers. opts may be NULL. -EINVAL: a negative count, no such
 * initializer, initargs not a list, a bad placement; DMP_ENODE: a named
 * node is unknown or dead, or no worker could start. */
DMP_EXPORT int dmp_pool_new(const dmp_pool_opts_t *opts, dmp_pool_t **pool_p);

/* map(func, iterable, chunksize): the task on every item of the list
 * `items`; *results_p gets the list of results, in order (caller owns).
 * chunksize 0 is Python's default: len / (4 x workers), rounded up.
 * Errors: DMP_EREMOTE when a task failed (the first failure to arrive,
 * as in Python: dmp_pool_error, dmp_pool_errmsg tell more), DMP_EWORKER,
 * -EINVAL (no such task, items not a list), -EBADF (pool closed),
 * -ECANCELED (pool terminated meanwhile), -EMSGSIZE (a chunk of items
 * larger than a queue item, 64 MiB; a result that large fails its task
 * with -EMSGSIZE, DMP_EREMOTE). */
DMP_EXPORT int dmp_pool_map(dmp_pool_t *pool, const char *task,
                            const dmp_value_t *items, size_t chunksize,
                            dmp_value_t **results_p);
/* starmap: each item is a list of arguments (-EINVAL otherwise), which
 * the task receives as its arg. */
DMP_EXPORT int dmp_pool_starmap(dmp_pool_t *pool, const char *task,
                                const dmp_value_t *items, size_t chunksize,
                                dmp_value_t **results_p);
/* apply(func, args): args a list (NULL: []), the task's arg. */
DMP_EXPORT int dmp_pool_apply(dmp_pool_t *pool, const char *task,
                              const dmp_value_t *args,
                              dmp_value_t **result_p);

/* The _async forms return at once with an AsyncResult in *ar_p (caller
 * destroys it; ar_p may be NULL when only the callback matters). The
 * callback (may be NULL) runs once when the call is ready. Items and
 * args are copied. */
DMP_EXPORT int dmp_pool_map_async(dmp_pool_t *pool, const char *task,
                                  const dmp_value_t *items, size_t chunksize,
                                  dmp_async_fn callback, void *arg,
                                  dmp_async_t **ar_p);
DMP_EXPORT int dmp_pool_starmap_async(dmp_pool_t *pool, const char *task,
                                      const dmp_value_t *items,
                                      size_t chunksize, dmp_async_fn callback,
                                      void *arg, dmp_async_t **ar_p);
DMP_EXPORT int dmp_pool_apply_async(dmp_pool_t *pool, const char *task,
                                    const dmp_value_t *args,
                                    dmp_async_fn callback, void *arg,
                                    dmp_async_t **ar_p);

/* imap / imap_unordered: an iterator over the results, in order or as
 * they complete. chunksize 0 means 1, as in Python. */
DMP_EXPORT int dmp_pool_imap(dmp_pool_t *pool, const char *task,
                             const dmp_value_t *items, size_t chunksize,
                             dmp_imap_t **it_p);
DMP_EXPORT int dmp_pool_imap_unordered(dmp_pool_t *pool, const char *task,
                                       const dmp_value_t *items,
                                       size_t chunksize, dmp_imap_t **it_p);

/* close(): no more calls (-EBADF after); workers exit once every call is
 * done. terminate(): stop the workers now; unfinished calls fail with
 * -ECANCELED. join(timeout): waits for the workers to exit after close or
 * terminate (-EINVAL before either, as Python's ValueError); 0 or
 * -ETIMEDOUT. */
DMP_EXPORT int dmp_pool_close(dmp_pool_t *pool);
DMP_EXPORT int dmp_pool_terminate(dmp_pool_t *pool);
DMP_EXPORT int dmp_pool_join(dmp_pool_t *pool, double timeout);
/* terminate() unless joined, then frees (Python's `with Pool() as p:`).
 * Safe on NULL; nulls *pool_p. */
DMP_EXPORT void dmp_pool_destroy(dmp_pool_t **pool_p);

/* How many workers the pool keeps running. */
DMP_EXPORT int dmp_pool_processes(const dmp_pool_t *pool);
/* The original code and the text of the last failed map, starmap or
 * apply of this pool (0 and "" when none failed). Borrowed. */
DMP_EXPORT int dmp_pool_error(const dmp_pool_t *pool);
DMP_EXPORT const char *dmp_pool_errmsg(const dmp_pool_t *pool);

/* AsyncResult.get(timeout): 0 and a new copy of the result (caller owns);
 * -ETIMEDOUT when not ready in time; else the call's error, as the
 * synchronous forms return. wait(timeout): 0 once ready, -ETIMEDOUT.
 * ready(): 1 or 0. successful(): 1 or 0, -EINVAL when not ready (Python's
 * ValueError). */
DMP_EXPORT int dmp_async_get(dmp_async_t *ar, dmp_value_t **result_p,
                             double timeout);
DMP_EXPORT int dmp_async_wait(dmp_async_t *ar, double timeout);
DMP_EXPORT int dmp_async_ready(dmp_async_t *ar);
DMP_EXPORT int dmp_async_successful(dmp_async_t *ar);
/* When it failed: the task's own code (or the call's error) and text.
 * Borrowed; valid until destroy. 0 and "" otherwise. */
DMP_EXPORT int dmp_async_error(dmp_async_t *ar);
DMP_EXPORT const char *dmp_async_errmsg(dmp_async_t *ar);
/* The call goes on without its handle. Safe on NULL; nulls *ar_p. */
DMP_EXPORT void dmp_async_destroy(dmp_async_t **ar_p);

/* next(timeout): 0 and the next result (caller owns); DMP_EEOF after the
 * last one (StopIteration); -ETIMEDOUT; or that item's error
 * (DMP_EREMOTE, ...: iteration goes on with the next item). */
DMP_EXPORT int dmp_imap_next(dmp_imap_t *it, dmp_value_t **item_p,
                             double timeout);
/* The item index (0-based, in the input) the last next() was about. */
DMP_EXPORT size_t dmp_imap_index(const dmp_imap_t *it);
/* The last failed next()'s original code and text. Borrowed. */
DMP_EXPORT int dmp_imap_error(const dmp_imap_t *it);
DMP_EXPORT const char *dmp_imap_errmsg(const dmp_imap_t *it);
DMP_EXPORT void dmp_imap_destroy(dmp_imap_t **it_p);

/* ---- Shared memory: Value and Array ----------------------------------- */

/*
 * Python's Value, Array, RawValue and RawArray (multiprocessing.sharedctypes)
 * and the lock of a Value or Array (get_lock(): an RLock). An object is
 * owned by the node where it is created. Processes on that host map its
 * shared-memory segment and work on it directly; the lock is a
 * robust process-shared lock, so a holder killed while holding it does
 * not block the others: the next acquirer gets DMP_EOWNERDEAD, once.
 * Processes on other hosts use the same handle: every read, write, lock
 * operation and add goes through the owning node, and mutual exclusion
 * holds between local and remote holders. A remote holder that dies (or
 * is cut off) loses the lock when its lease runs out (the owner's
 * heartbeat x liveness, renewed in the background while it lives).
 *
 * Typecodes, as Python's array module (l and L are 64-bit, as C long on
 * 64-bit Linux, on every host):
 *   'c' char (an unsigned byte here)  'b' int8_t   'B' uint8_t
 *   'h' int16_t  'H' uint16_t  'i' int32_t  'I' uint32_t
 *   'l' int64_t  'L' uint64_t  'q' int64_t  'Q' uint64_t
 *   'f' float    'd' double
 *
 * As in Python, each get and set of a Value or Array takes its lock for
 * the moment of the access (a thread holding it already just goes on); a
 * RawValue or RawArray has no lock, and an element is still read and
 * written in one piece. Indexes may be negative, counted from the end.
 * A handle travels to child processes as a value (dmp_shared_value)
 * inside their arguments, like a queue's. The object lives until no
 * process holds a handle any more (a dead process holds none), or until
 * its node's agent stops. Do not use a handle after dmp_fini, which lets
 * go of every one still held (releasing the lock if held).
 */
typedef struct dmp_shared dmp_shared_t;
typedef struct dmp_lock dmp_lock_t;

/* Value(typecode, init, lock=lock): one element. init points at one C
 * value of the typecode's type (int32_t for 'i', double for 'd', ...);
 * NULL: zero. lock 0 makes a RawValue (no lock, dmp_shared_get_lock
 * gives NULL). -EINVAL for a bad typecode; DMP_ENODE. */
DMP_EXPORT int dmp_shared_value_new(char typecode, const void *init,
                                    int lock, dmp_shared_t **s_p);
/* Array(typecode, size_or_initializer, lock=lock): `size` elements, from
 * init (size C values of the typecode's type) or zero when init is NULL.
 * -EINVAL for a bad typecode or size 0 (or over 2^36 bytes). */
DMP_EXPORT int dmp_shared_array_new(char typecode, size_t size,
                                    const void *init, int lock,
                                    dmp_shared_t **s_p);
/* len(): elements (1 for a Value); the typecode; sizeof one element. */
DMP_EXPORT size_t dmp_shared_len(const dmp_shared_t *s);
DMP_EXPORT char dmp_shared_typecode(const dmp_shared_t *s);
DMP_EXPORT size_t dmp_shared_itemsize(const dmp_shared_t *s);

/* v.value / a[i]: element i (0 for a Value). get_int: -EINVAL for 'f'
 * and 'd' (read those with get_double, which reads every typecode; L and
 * Q above INT64_MAX come back as their two's complement: use
 * dmp_shared_read for them). set_int stores into any typecode, wrapping
 * to the element's width as ctypes does; set_double: 'f' and 'd' only
 * (-EINVAL otherwise, Python's TypeError). -EINVAL when i is out of
 * range (Python's IndexError); DMP_ENODE when the owner is unreachable. */
DMP_EXPORT int dmp_shared_get_int(dmp_shared_t *s, int64_t i, int64_t *out);
DMP_EXPORT int dmp_shared_set_int(dmp_shared_t *s, int64_t i, int64_t v);
DMP_EXPORT int dmp_shared_get_double(dmp_shared_t *s, int64_t i,
                                     double *out);
DMP_EXPORT int dmp_shared_set_double(dmp_shared_t *s, int64_t i, double v);
/* a[start:start+count] into buf / from buf, as C values of the typecode's
 * type (count x itemsize bytes), in one piece under the lock. -EINVAL
 * when the range is not inside the object (no clamping: Python's slice
 * assignment of another length is an error too). */
DMP_EXPORT int dmp_shared_read(dmp_shared_t *s, size_t start, size_t count,
                               void *buf);
DMP_EXPORT int dmp_shared_write(dmp_shared_t *s, size_t start, size_t count,
                                const void *buf);
/* Atomic a[i] += delta without taking the lock (beyond Python: no lost
 * update between adds, however many processes add; an add does not wait
 * for a holder of the lock, so do not mix it with read-modify-write under
 * the lock on the same element). *after (may be NULL) gets the new value.
 * add on 'f'/'d' adds the delta as a double; add_double: 'f' and 'd' only
 * (-EINVAL otherwise). */
DMP_EXPORT int dmp_shared_add(dmp_shared_t *s, int64_t i, int64_t delta,
                              int64_t *after);
DMP_EXPORT int dmp_shared_add_double(dmp_shared_t *s, int64_t i,
                                     double delta, double *after);

/* get_lock(): the object's lock, a recursive lock (Python's RLock: the
 * thread holding it may acquire it again, and must release it as many
 * times). Borrowed; valid while s is. NULL for a RawValue or RawArray. */
DMP_EXPORT dmp_lock_t *dmp_shared_get_lock(dmp_shared_t *s);
/* acquire(timeout): 0 once held; -ETIMEDOUT when it was not free in time
 * (0: do not wait, Python's acquire(False); DMP_FOREVER: no limit);
 * DMP_EOWNERDEAD: held now, but the previous holder died holding it (or
 * its lease ran out), so what it protects may be half-updated: told to one
 * acquirer only; release it as usual. DMP_ENODE when the owner is
 * unreachable. */
DMP_EXPORT int dmp_lock_acquire(dmp_lock_t *lock, double timeout);
/* release(): 0; -EPERM when the calling thread does not hold it (Python's
 * RuntimeError "cannot release un-acquired lock"), also for a remote
 * holder whose lease ran out meanwhile (the lock was given to another). */
DMP_EXPORT int dmp_lock_release(dmp_lock_t *lock);
/* Whether the calling thread holds it. */
DMP_EXPORT int dmp_lock_is_owned(const dmp_lock_t *lock);

/* The handle as a value, to pass in a process's args. NULL on ENOMEM. */
DMP_EXPORT dmp_value_t *dmp_shared_value(const dmp_shared_t *s);
/* Opens the object a value carries (in a child, from its args): a handle
 * the caller destroys (opening one object twice in a process gives the
 * same handle, counted twice). -EINVAL when v is not a Value or Array;
 * -EBADF when the object is gone. */
DMP_EXPORT int dmp_shared_from_value(const dmp_value_t *v, dmp_shared_t **s_p);
/* Lets go of the handle (releasing the lock if this process holds it
 * through it). The object is removed once no process holds a handle.
 * Safe on NULL; nulls *s_p. */
DMP_EXPORT void dmp_shared_destroy(dmp_shared_t **s_p);

/* ---- Manager ---------------------------------------------------------- */

/*
 * Python's Manager() / BaseManager: a server process holding shared
 * objects, which other processes use through proxies. The server is a dmp
 * process (the same executable, re-entered through dmp_init), started on
 * any node and reaped by that node's agent. Clients on its host talk to it
 * through shared-memory rings (no agent hop); clients on other hosts, and
 * programs outside the cluster, through the agents (CurveZMQ, allow-list).
 *
 * A proxy travels to a child as a value (dmp_proxy_value) and is stored in
 * a container the same way: a dict or list holding a proxy value holds a
 * reference to that object (Python 3.6+ nested proxies); read it back and
 * open it with dmp_proxy_from_value.
 *
 * Every call returns 0 or an error; every call on a proxy may also fail
 * with DMP_ENODE when the manager is gone (dead process or node; the text
 * is in dmp_manager_errmsg), never hangs on a dead manager. Errors as
 * Python raises them: KeyError, IndexError, ValueError (not found) ->
 * -ENOENT, -ERANGE, -ENOENT; TypeError -> -EINVAL; a call on a proxy of
 * the wrong type -> -EINVAL. Objects live until the manager shuts down.
 *
 * Beyond Python: a client that dies releases the locks, semaphores and
 * condition locks it held; the next acquirer gets DMP_EOWNERDEAD once (it
 * holds the lock then), as a robust mutex says. A barrier a waiter died
 * in is broken (DMP_EBROKEN). A client reconnects to a restarted manager.
 * Calls on one connection are serialised: a thread blocked in acquire
 * holds it; give other threads their own dmp_manager_connect.
 */
typedef struct dmp_manager dmp_manager_t;
typedef struct dmp_proxy dmp_proxy_t;

typedef enum {
    DMP_PROXY_DICT = 1,
    DMP_PROXY_LIST = 2,
    DMP_PROXY_VALUE = 3,
    DMP_PROXY_ARRAY = 4,
    DMP_PROXY_NAMESPACE = 5,
    DMP_PROXY_LOCK = 6,
    DMP_PROXY_RLOCK = 7,
    DMP_PROXY_SEMAPHORE = 8,
    DMP_PROXY_BOUNDED_SEMAPHORE = 9,
    DMP_PROXY_CONDITION = 10,
    DMP_PROXY_EVENT = 11,
    DMP_PROXY_BARRIER = 12,
    DMP_PROXY_QUEUE = 13, /* a JoinableQueue */
} dmp_proxy_type_t;

typedef struct {
    /* The manager's name in the cluster (1-63 of [A-Za-z0-9._-]), by which
     * dmp_manager_connect finds it; -EEXIST when a live manager has it.
     * NULL: "manager-PID-N", unique to this program. */
    const char *name;
    /* Where it runs: a node name, "local", "spread". NULL: "local" (the
     * node this program talks to; not $DMP_PLACE). */
    const char *node;
} dmp_manager_opts_t;

/* Manager().start(): starts the server and connects to it. opts may be
 * NULL. The server is a daemon of this program: dmp_fini stops it, as a
 * Python manager ends with its program (dmp_manager_shutdown stops it
 * earlier). -EEXIST (name taken), DMP_ENODE, -EINVAL. */
DMP_EXPORT int dmp_manager_start(const dmp_manager_opts_t *opts,
                                 dmp_manager_t **m_p);
/*
 * BaseManager(address, authkey).connect(). address_or_name is
 *   "NAME"                      a manager of the cluster this program
 *                               joined (dmp_init), found through the
 *                               agents (this node first, then the others)
 *   "NAME@NODE"                 the same, asking only NODE
 *   "NAME@tcp://HOST:PORT"      from outside: joins the cluster through
 *                               that node, authenticated with `key` (a
 *                               client secret key file in the nodes'
 *                               allow-list; NULL: $DMP_KEY) and pinning
 *                               the node's public key from
 *                               $DMP_SERVER_KEY, as dmp_init does
 * -ENOENT no such manager, DMP_EAUTH, DMP_ESERVERKEY, DMP_ENODE.
 */
DMP_EXPORT int dmp_manager_connect(const char *address_or_name,
                                   const char *key, dmp_manager_t **m_p);
/* shutdown(): stops the server (every client's next call gets DMP_ENODE)
 * and waits for it to exit when this program started it. */
DMP_EXPORT int dmp_manager_shutdown(dmp_manager_t *m);
/* Closes the connection (and, for the program that started it, shuts the
 * server down). Safe on NULL; nulls *m_p. Proxies opened from it stay
 * usable (they hold their own reference to the connection). */
DMP_EXPORT void dmp_manager_destroy(dmp_manager_t **m_p);
/* The manager's name and node. Borrowed; valid until destroy. */
DMP_EXPORT const char *dmp_manager_name(const dmp_manager_t *m);
DMP_EXPORT const char *dmp_manager_node(const dmp_manager_t *m);
/* Text of the last failed call on this connection, or "". Borrowed. */
DMP_EXPORT const char *dmp_manager_errmsg(const dmp_manager_t *m);

/*
 * New shared objects, as manager.dict(), manager.list(seq), ... `name`
 * NULL: anonymous; else the object is also found by dmp_manager_lookup
 * (-EEXIST when the name is taken). Initial values are copied. Each
 * returns a new proxy the caller destroys.
 */
DMP_EXPORT int dmp_manager_dict(dmp_manager_t *m, const char *name,
                                const dmp_value_t *init, dmp_proxy_t **p_p);
DMP_EXPORT int dmp_manager_list(dmp_manager_t *m, const char *name,
                                const dmp_value_t *init, dmp_proxy_t **p_p);
/* Value(typecode, v) and Array(typecode, list): typecodes c b B h H i I l
 * L q Q f d; items are checked against the typecode (-EINVAL, -ERANGE). */
DMP_EXPORT int dmp_manager_value(dmp_manager_t *m, const char *name,
                                 char typecode, const dmp_value_t *init,
                                 dmp_proxy_t **p_p);
DMP_EXPORT int dmp_manager_array(dmp_manager_t *m, const char *name,
                                 char typecode, const dmp_value_t *init,
                                 dmp_proxy_t **p_p);
DMP_EXPORT int dmp_manager_namespace(dmp_manager_t *m, const char *name,
                                     dmp_proxy_t **p_p);
DMP_EXPORT int dmp_manager_lock(dmp_manager_t *m, const char *name,
                                dmp_proxy_t **p_p);
DMP_EXPORT int dmp_manager_rlock(dmp_manager_t *m, const char *name,
                                 dmp_proxy_t **p_p);
DMP_EXPORT int dmp_manager_semaphore(dmp_manager_t *m, const char *name,
                                     int64_t value, dmp_proxy_t **p_p);
DMP_EXPORT int dmp_manager_bounded_semaphore(dmp_manager_t *m,
                                             const char *name, int64_t value,
                                             dmp_proxy_t **p_p);
/* Condition(lock): lock a Lock or RLock proxy of the same manager, or
 * NULL for a new RLock. */
DMP_EXPORT int dmp_manager_condition(dmp_manager_t *m, const char *name,
                                     const dmp_proxy_t *lock,
                                     dmp_proxy_t **p_p);
DMP_EXPORT int dmp_manager_event(dmp_manager_t *m, const char *name,
                                 dmp_proxy_t **p_p);
DMP_EXPORT int dmp_manager_barrier(dmp_manager_t *m, const char *name,
                                   int64_t parties, dmp_proxy_t **p_p);
/* Queue(maxsize) / JoinableQueue(maxsize): maxsize <= 0 no limit. */
DMP_EXPORT int dmp_manager_queue(dmp_manager_t *m, const char *name,
                                 int64_t maxsize, dmp_proxy_t **p_p);
/* The object created under `name`: -ENOENT when there is none. */
DMP_EXPORT int dmp_manager_lookup(dmp_manager_t *m, const char *name,
                                  dmp_proxy_t **p_p);

/* Proxies. value: the proxy as a value (for args, or to store in a
 * container; NULL on ENOMEM). from_value: a new proxy for the object a
 * value names, connecting to its manager if this process is not yet
 * (-EINVAL when v is not a proxy value). */
DMP_EXPORT dmp_value_t *dmp_proxy_value(const dmp_proxy_t *p);
DMP_EXPORT int dmp_proxy_from_value(const dmp_value_t *v, dmp_proxy_t **p_p);
DMP_EXPORT dmp_proxy_type_t dmp_proxy_type(const dmp_proxy_t *p);
/* str(proxy) as Python prints it: {'key': 'Python2'}, [0, 1],
 * Value('i', 5), array('i', [0, 1]), Namespace(x=1), <Lock(unlocked)>.
 * As snprintf: returns the length the full text needs, or an error. */
DMP_EXPORT int dmp_proxy_repr(dmp_proxy_t *p, char *buf, size_t size);
DMP_EXPORT void dmp_proxy_destroy(dmp_proxy_t **p_p);

/* dict: get (-ENOENT: KeyError), get with default (dflt copied when key is
 * absent; NULL means None), set, del, contains (1 or 0), len, keys,
 * values, items (a list of [key, item] lists), update (from a dict value),
 * pop (dflt NULL: -ENOENT when absent), clear, copy (the whole dict as a
 * value). Results are new values the caller owns. */
DMP_EXPORT int dmp_dict_get(dmp_proxy_t *p, const dmp_value_t *key,
                            dmp_value_t **item_p);
DMP_EXPORT int dmp_dict_get_default(dmp_proxy_t *p, const dmp_value_t *key,
                                    const dmp_value_t *dflt,
                                    dmp_value_t **item_p);
DMP_EXPORT int dmp_dict_set(dmp_proxy_t *p, const dmp_value_t *key,
                            const dmp_value_t *item);
DMP_EXPORT int dmp_dict_del(dmp_proxy_t *p, const dmp_value_t *key);
DMP_EXPORT int dmp_dict_contains(dmp_proxy_t *p, const dmp_value_t *key);
DMP_EXPORT int64_t dmp_dict_len(dmp_proxy_t *p);
DMP_EXPORT int dmp_dict_keys(dmp_proxy_t *p, dmp_value_t **list_p);
DMP_EXPORT int dmp_dict_values(dmp_proxy_t *p, dmp_value_t **list_p);
DMP_EXPORT int dmp_dict_items(dmp_proxy_t *p, dmp_value_t **list_p);
DMP_EXPORT int dmp_dict_update(dmp_proxy_t *p, const dmp_value_t *map);
DMP_EXPORT int dmp_dict_pop(dmp_proxy_t *p, const dmp_value_t *key,
                            const dmp_value_t *dflt, dmp_value_t **item_p);
DMP_EXPORT int dmp_dict_clear(dmp_proxy_t *p);
DMP_EXPORT int dmp_dict_copy(dmp_proxy_t *p, dmp_value_t **map_p);

/* list (dmp_mlist_*, "managed list", apart from the dmp_list_* functions
 * of plain values). Indexes may be negative, as in Python; -ERANGE out of
 * range (IndexError). Slices [start:stop] clamp as Python's do; DMP_END
 * as stop means the end. set_slice replaces the slice with the items of a
 * list value. index and remove: -ENOENT when absent (ValueError). sort:
 * -EINVAL when items do not compare (TypeError). */
#define DMP_END INT64_MAX
DMP_EXPORT int dmp_mlist_append(dmp_proxy_t *p, const dmp_value_t *item);
DMP_EXPORT int dmp_mlist_extend(dmp_proxy_t *p, const dmp_value_t *list);
DMP_EXPORT int dmp_mlist_insert(dmp_proxy_t *p, int64_t i,
                                const dmp_value_t *item);
DMP_EXPORT int dmp_mlist_get(dmp_proxy_t *p, int64_t i, dmp_value_t **item_p);
DMP_EXPORT int dmp_mlist_set(dmp_proxy_t *p, int64_t i,
                             const dmp_value_t *item);
DMP_EXPORT int dmp_mlist_del(dmp_proxy_t *p, int64_t i);
DMP_EXPORT int dmp_mlist_get_slice(dmp_proxy_t *p, int64_t start,
                                   int64_t stop, dmp_value_t **list_p);
DMP_EXPORT int dmp_mlist_set_slice(dmp_proxy_t *p, int64_t start,
                                   int64_t stop, const dmp_value_t *list);
DMP_EXPORT int dmp_mlist_del_slice(dmp_proxy_t *p, int64_t start,
                                   int64_t stop);
DMP_EXPORT int64_t dmp_mlist_len(dmp_proxy_t *p);
/* pop(i): the item removed (i = -1 pops the last one). */
DMP_EXPORT int dmp_mlist_pop(dmp_proxy_t *p, int64_t i, dmp_value_t **item_p);
DMP_EXPORT int64_t dmp_mlist_index(dmp_proxy_t *p, const dmp_value_t *item);
DMP_EXPORT int64_t dmp_mlist_count(dmp_proxy_t *p, const dmp_value_t *item);
DMP_EXPORT int dmp_mlist_remove(dmp_proxy_t *p, const dmp_value_t *item);
DMP_EXPORT int dmp_mlist_sort(dmp_proxy_t *p, int reverse);
DMP_EXPORT int dmp_mlist_copy(dmp_proxy_t *p, dmp_value_t **list_p);

/* Value: get and set .value. Array: len, items by index, and the whole
 * array as a list value (tolist). */
DMP_EXPORT int dmp_mvalue_get(dmp_proxy_t *p, dmp_value_t **v_p);
DMP_EXPORT int dmp_mvalue_set(dmp_proxy_t *p, const dmp_value_t *v);
DMP_EXPORT int64_t dmp_marray_len(dmp_proxy_t *p);
DMP_EXPORT int dmp_marray_get(dmp_proxy_t *p, int64_t i, dmp_value_t **v_p);
DMP_EXPORT int dmp_marray_set(dmp_proxy_t *p, int64_t i,
                              const dmp_value_t *v);
DMP_EXPORT int dmp_marray_tolist(dmp_proxy_t *p, dmp_value_t **list_p);

/* Namespace: attributes by name (-ENOENT: AttributeError). */
DMP_EXPORT int dmp_namespace_get(dmp_proxy_t *p, const char *attr,
                                 dmp_value_t **v_p);
DMP_EXPORT int dmp_namespace_set(dmp_proxy_t *p, const char *attr,
                                 const dmp_value_t *v);
DMP_EXPORT int dmp_namespace_del(dmp_proxy_t *p, const char *attr);

/* Lock, RLock, Semaphore, BoundedSemaphore, and a Condition's lock:
 * acquire(timeout): 0, -ETIMEDOUT, or DMP_EOWNERDEAD (acquired; the last
 * holder died holding it). release: -EPERM when not held (RuntimeError;
 * an RLock by another client), -EINVAL for a BoundedSemaphore released
 * too often (ValueError). A Lock may be released by any client, as in
 * Python. */
DMP_EXPORT int dmp_mlock_acquire(dmp_proxy_t *p, double timeout);
DMP_EXPORT int dmp_mlock_release(dmp_proxy_t *p);
/* A semaphore's counter (for tests and monitoring). */
DMP_EXPORT int64_t dmp_msem_value(dmp_proxy_t *p);

/* Condition: acquire/release as dmp_mlock_*; wait(timeout) with the lock
 * held (-EPERM otherwise): 0 when notified, -ETIMEDOUT; the lock is held
 * again on return either way. notify(n), notify_all. */
DMP_EXPORT int dmp_mcond_wait(dmp_proxy_t *p, double timeout);
DMP_EXPORT int dmp_mcond_notify(dmp_proxy_t *p, int64_t n);
DMP_EXPORT int dmp_mcond_notify_all(dmp_proxy_t *p);

/* Event: set, clear, is_set (1 or 0), wait(timeout): 0 once set,
 * -ETIMEDOUT. */
DMP_EXPORT int dmp_mevent_set(dmp_proxy_t *p);
DMP_EXPORT int dmp_mevent_clear(dmp_proxy_t *p);
DMP_EXPORT int dmp_mevent_is_set(dmp_proxy_t *p);
DMP_EXPORT int dmp_mevent_wait(dmp_proxy_t *p, double timeout);

/* Barrier: wait(timeout) gives each party its index (0..parties-1;
 * index_p may be NULL); DMP_EBROKEN when broken (abort, a timeout, a
 * waiter that died), -ETIMEDOUT breaks it for the others. reset, abort,
 * and its state. */
DMP_EXPORT int dmp_mbarrier_wait(dmp_proxy_t *p, double timeout,
                                 int64_t *index_p);
DMP_EXPORT int dmp_mbarrier_reset(dmp_proxy_t *p);
DMP_EXPORT int dmp_mbarrier_abort(dmp_proxy_t *p);
DMP_EXPORT int64_t dmp_mbarrier_parties(dmp_proxy_t *p);
DMP_EXPORT int64_t dmp_mbarrier_n_waiting(dmp_proxy_t *p);
DMP_EXPORT int dmp_mbarrier_broken(dmp_proxy_t *p);

/* Queue and JoinableQueue, as dmp_queue_*: put (DMP_EFULL), get
 * (DMP_EEMPTY), qsize, empty, full, task_done (-EINVAL too often), join
 * (-ETIMEDOUT). */
DMP_EXPORT int dmp_mqueue_put(dmp_proxy_t *p, const dmp_value_t *item,
                              double timeout);
DMP_EXPORT int dmp_mqueue_get(dmp_proxy_t *p, dmp_value_t **item_p,
                              double timeout);
DMP_EXPORT int64_t dmp_mqueue_qsize(dmp_proxy_t *p);
DMP_EXPORT int dmp_mqueue_empty(dmp_proxy_t *p);
DMP_EXPORT int dmp_mqueue_full(dmp_proxy_t *p);
DMP_EXPORT int dmp_mqueue_task_done(dmp_proxy_t *p);
DMP_EXPORT int dmp_mqueue_join(dmp_proxy_t *p, double timeout);

/* ---- Keys ------------------------------------------------------------- */

/* Writes DIR/NAME.key (secret, mode 0600) and DIR/NAME.pub.
 * Refuses to overwrite (-EEXIST). NAME: letters, digits, '.', '_', '-'. */
DMP_EXPORT int dmp_keygen(const char *dir, const char *name);

#ifdef __cplusplus
}
#endif
#endif /* DMP_H */
