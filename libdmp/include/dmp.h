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
    XX(EBINARY, -1016, "executable not in the node's binary cache")

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
    DMP_VALUE_HANDLE = 8, /* a queue, connection, ... (dmp_queue_value) */
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
 * get_nowait); DMP_ENODE; -EMSGSIZE from another host when the next item
 * is larger than one frame (about 1 MiB; its size is in
 * dmp_client_errmsg(dmp_default_client()); it stays in the queue). */
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
/* recv(): blocks until something arrives: 0 and a new value; DMP_EEOF;
 * -EMSGSIZE on an end whose pipe is owned by another host when the next
 * message is larger than one frame (about 1 MiB; it stays readable on the
 * owner's host). */
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

/* ---- Keys ------------------------------------------------------------- */

/* Writes DIR/NAME.key (secret, mode 0600) and DIR/NAME.pub.
 * Refuses to overwrite (-EEXIST). NAME: letters, digits, '.', '_', '-'. */
DMP_EXPORT int dmp_keygen(const char *dir, const char *name);

#ifdef __cplusplus
}
#endif
#endif /* DMP_H */
