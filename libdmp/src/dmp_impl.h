/*
 * dmp_impl.h - the library's internal umbrella header.
 *
 * Every .c of libdmp (and of the agent and CLI, which link libdmp.a)
 * includes only this. Internal cross-file names carry the dmp__ prefix;
 * file-local ones are static s_*. No protobuf-c type appears here: the
 * wire module translates to the plain structs below.
 */
#ifndef DMP_IMPL_H
#define DMP_IMPL_H

#define DMP_BUILDING 1
#include "dmp.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Bump when an incompatible change is made to proto/dmp.proto. */
#define DMP_PROTOCOL_VERSION 1

/* Largest frame any dmp socket accepts (ZMQ_MAXMSGSIZE), checked again
 * before unpacking. Control messages are small; data frames come later. */
#define DMP__WIRE_MAX (1u << 20)
/* The largest item or message that crosses hosts in one frame, with room
 * for the envelope around it; a larger queue or pipe item crosses in parts
 * (RingOp PUT_PART, PEEK, TAKE). */
#define DMP__REMOTE_ITEM_MAX (DMP__WIRE_MAX - 4096)
/* A queue's or pipe's item_max when none is given. */
#define DMP__ITEM_MAX_DEFAULT (64u << 20)
#define DMP__NAME_MAX 64   /* node and key names, with the NUL */
#define DMP__ADDR_MAX 256  /* endpoints, with the NUL */
#define DMP__TEXT_MAX 512  /* error texts, with the NUL */
#define DMP__MEMBERS_MAX 1024
#define DMP__Z85_KEY_LEN 40

/* ---- Allocation: one indirection so tests can inject failures -------- */
void *dmp__malloc(size_t size);
void *dmp__calloc(size_t n, size_t size);
void *dmp__realloc(void *ptr, size_t size);
char *dmp__strdup(const char *s);
void dmp__free(void *ptr);
/* Test hook: the n-th allocation from now on fails (1 = the next one);
 * n <= 0 turns injection off. Returns how many allocations were made since
 * the last call, so fault loops know when to stop. */
long dmp__alloc_fail_after(long n);

/* ---- Logging --------------------------------------------------------- */
void dmp__log(dmp_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
bool dmp__log_enabled(dmp_log_level_t level);

/* ---- Small utilities ------------------------------------------------- */
double dmp__now(void);      /* monotonic seconds */
/* A condition variable whose timed waits use the monotonic clock, and the
 * deadline for such a wait `seconds` from now: a wall-clock jump moves
 * neither timeouts nor leases. */
void dmp__cond_init_monotonic(pthread_cond_t *cv);
struct timespec dmp__deadline_in(double seconds);
uint64_t dmp__now_ms(void); /* monotonic milliseconds */
/* Copies with truncation, always NUL-terminates; returns strlen(src). */
size_t dmp__strlcpy(char *dst, const char *src, size_t size);
/* Node and key names: 1-63 of [A-Za-z0-9._-], not starting with '.' */
bool dmp__name_valid(const char *name);
/* tcp://HOST:PORT or ipc://PATH, printable ASCII, under DMP__ADDR_MAX */
bool dmp__endpoint_valid(const char *ep);
bool dmp__utf8_valid(const char *s);
/* The same for len bytes, which may include NULs (Python str). */
bool dmp__utf8_valid_n(const char *s, size_t len);
/* When pid started (ticks since boot, /proc/PID/stat), 0 if gone; with
 * the pid it names one process, whatever happens to pids later. *zombie
 * (may be NULL): it has exited, not reaped yet. */
uint64_t dmp__proc_start(pid_t pid, bool *zombie);
/* The same, 0 for a zombie too: the start of a live process. */
uint64_t dmp__proc_starttime(pid_t pid);
/* Removes a directory tree (no symlink is followed). */
int dmp__rmtree(const char *path);
/* Milliseconds for zmq_poll from seconds: DMP_FOREVER -> -1, <= 0 -> 0. */
long dmp__timeout_ms(double seconds);
/* Parses a duration/number; rejects junk, NaN, inf, negatives. */
int dmp__parse_seconds(const char *s, double *out);
int dmp__parse_uint(const char *s, unsigned long max, unsigned long *out);

/* A growable byte buffer (dmp_util.c): append, then hand out or reset.
 * err sticks at the first failed allocation; later appends do nothing. */
typedef struct {
    uint8_t *p;
    size_t len, cap;
    int err;
} dmp__buf_t;
/* Room for `more` bytes after len: a pointer to them, or NULL (err set). */
uint8_t *dmp__buf_room(dmp__buf_t *b, size_t more);
void dmp__buf_put(dmp__buf_t *b, const void *data, size_t len);
void dmp__buf_put_le(dmp__buf_t *b, uint64_t x, int bytes);
void dmp__buf_free(dmp__buf_t *b);
/* Little-endian integers of `bytes` bytes (1..8). */
static inline void
dmp__le_put(uint8_t *p, uint64_t x, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (uint8_t)(x >> (8 * i));
}
static inline uint64_t
dmp__le_get(const uint8_t *p, int bytes)
{
    uint64_t x = 0;
    for (int i = 0; i < bytes; i++)
        x |= (uint64_t)p[i] << (8 * i);
    return x;
}

/* ---- Keys ------------------------------------------------------------ */
typedef struct {
    char public_z85[DMP__Z85_KEY_LEN + 1];
    char secret_z85[DMP__Z85_KEY_LEN + 1]; /* wiped by dmp__keypair_wipe */
} dmp__keypair_t;

bool dmp__z85_key_valid(const char *z85);
/* Loads a secret key file: refuses group/other-readable files and
 * malformed keys (DMP_EKEY, reason in err), derives the public key. */
int dmp__key_load_secret(const char *path, dmp__keypair_t *kp, char *err,
                         size_t errlen);
/* A public key from a .pub file, or the 40 Z85 characters themselves. */
int dmp__key_load_public(const char *path_or_z85,
                         char out[DMP__Z85_KEY_LEN + 1], char *err,
                         size_t errlen);
/* A short fingerprint for logs: 12 hex characters of SHA-256(key). */
void dmp__key_fingerprint(const uint8_t key[32], char out[13]);
void dmp__key_fingerprint_z85(const char *z85, char out[13]);
void dmp__keypair_wipe(dmp__keypair_t *kp);
/* Refuses a directory others may write to (DMP_EKEY with reason). */
int dmp__keys_dir_check(const char *dir, char *err, size_t errlen);

/* ---- Config files: "key = value" lines, '#' comments ----------------- */
typedef int (*dmp__config_fn)(const char *key, const char *value, void *arg,
                              char *err, size_t errlen);
/* Calls fn for each setting in order. Errors name file and line. */
int dmp__config_parse(const char *path, dmp__config_fn fn, void *arg,
                      char *err, size_t errlen);

/* ---- Wire: plain messages; dmp_wire.c is the only protobuf-c user ---- */
typedef enum {
    DMP__MSG_NONE = 0,
    DMP__MSG_HELLO,
    DMP__MSG_ERROR,
    DMP__MSG_HEARTBEAT,
    DMP__MSG_NODES_REQUEST,
    DMP__MSG_NODES_REPLY,
    DMP__MSG_OK,
    DMP__MSG_SPAWN_REQUEST,
    DMP__MSG_SPAWN_REPLY,
    DMP__MSG_UPLOAD,
    DMP__MSG_PROC_OUTPUT,
    DMP__MSG_PROC_EXIT,
    DMP__MSG_PROC_SIGNAL,
    DMP__MSG_PROC_LIST_REQUEST,
    DMP__MSG_PROC_LIST_REPLY,
    DMP__MSG_OBJ_NEW,
    DMP__MSG_OBJ_INFO,
    DMP__MSG_OBJ_RELEASE,
    DMP__MSG_RING_OP,
    DMP__MSG_RING_REPLY,
    DMP__MSG_SHARED_NEW,
    DMP__MSG_SHARED_OP,
    DMP__MSG_SHARED_REPLY,
    DMP__MSG_MGR_NAME,
    DMP__MSG_DIRECT,
} dmp__msg_kind_t;

/* Direct.op: see proto/dmp.proto. */
typedef enum {
    DMP__DIRECT_ASK = 1,
    DMP__DIRECT_VOUCH = 2,
    DMP__DIRECT_DROP = 3,
    DMP__DIRECT_INFO = 4,
} dmp__direct_op_t;

/* Shared objects an agent owns, and what RingOp may ask of their rings. */
typedef enum { DMP__OBJ_QUEUE = 1, DMP__OBJ_PIPE = 2 } dmp__obj_type_t;
typedef enum {
    DMP__RING_PUT = 1,
    DMP__RING_GET = 2,
    DMP__RING_COUNT = 3,
    DMP__RING_TASK_DONE = 4,
    DMP__RING_JOIN = 5,
    DMP__RING_CLOSE_WRITER = 6, /* a pipe end closed: EOF for its reader */
    DMP__RING_HOLD_WRITER = 7,  /* a remote process holds a sending end */
    DMP__RING_PUT_BATCH = 8,    /* many items: u32 length + bytes each */
    DMP__RING_POLL = 9,         /* count 1 once a get would not block */
    DMP__RING_PUT_PART = 10,    /* part of an item too big for a frame */
    DMP__RING_PEEK = 11,        /* part of the oldest item, if still seq */
    DMP__RING_TAKE = 12,        /* remove the oldest item, if still seq */
    DMP__RING_OP_LAST = DMP__RING_TAKE,
} dmp__ring_op_t;
#define DMP__RING_NAME_MAX 128 /* "/dmp-NODE-INCARNATION-ID-RING" */

/* What SharedOp may ask of a Value or Array's owner (dmp_shared.c,
 * node_shared.c), in the name of a holder: a process (node, pid). */
typedef enum {
    DMP__SHARED_ATTACH = 1,   /* the holder opened a handle: hold it */
    DMP__SHARED_DETACH = 2,   /* it destroyed its last one (or, from the
                               * owner's host: check whether any is left) */
    DMP__SHARED_HOLD_FOR = 3, /* a parent holds it for a child starting */
    DMP__SHARED_RENEW = 4,    /* the holder is alive: extend its lease */
    DMP__SHARED_ACQUIRE = 5,  /* the lock, waiting up to timeout */
    DMP__SHARED_RELEASE = 6,
    DMP__SHARED_READ = 7,     /* elements start .. start + count */
    DMP__SHARED_WRITE = 8,    /* elements from start */
    DMP__SHARED_ADD = 9,      /* element start += delta, without the lock */
    DMP__SHARED_OP_LAST = DMP__SHARED_ADD,
} dmp__shared_op_t;
/* Largest Value or Array: elements, and bytes of the segment's data. */
#define DMP__SHARED_LENGTH_MAX (1ull << 36)
#define DMP__SHARED_BYTES_MAX (1ull << 36)
/* An acquire reply carries objects up to this size, so that the holder
 * reads them without another round trip. */
#define DMP__SHARED_PREFETCH_MAX 256
#define DMP__OBJ_RINGS_MAX 2

#define DMP__DIGEST_HEX 64
#define DMP__CHUNK_MAX (512u * 1024) /* upload and output chunks */
#define DMP__ARGV_MAX 256                /* command-mode arguments */
#define DMP__ARG_LEN_MAX 4096

/* One process as an agent reports it (dmp ps). */
typedef struct {
    char node[DMP__NAME_MAX];
    uint64_t proc;
    uint32_t pid;
    char name[DMP__NAME_MAX];
    char target[DMP__NAME_MAX];
    bool running;
    int exitcode;
    uint64_t runtime_ms;
} dmp__proc_info_t;

typedef struct {
    char name[DMP__NAME_MAX];
    char address[DMP__ADDR_MAX];
} dmp__member_t;

typedef struct {
    uint64_t id;        /* request id, echoed in replies */
    uint32_t version;   /* sender's DMP_PROTOCOL_VERSION */
    char node[DMP__NAME_MAX]; /* requests: node that should act, "" = you */
    dmp__msg_kind_t kind;
    union {
        struct {
            uint32_t version;
            char node[DMP__NAME_MAX];
            char role[16];
        } hello;
        struct {
            int code;
            char text[DMP__TEXT_MAX];
        } error;
        struct {
            char node[DMP__NAME_MAX];
            char address[DMP__ADDR_MAX];
            uint32_t cores;
            double load;
            uint64_t uptime_ms;
            uint64_t incarnation;
            uint32_t processes;
            dmp__member_t *members; /* owned; freed by dmp__msg_clear */
            size_t n_members;
        } heartbeat;
        struct {
            dmp_node_info_t *nodes; /* owned; freed by dmp__msg_clear */
            size_t n_nodes;
        } nodes_reply;
        struct {
            char name[DMP__NAME_MAX];
            char target[DMP__NAME_MAX];
            uint8_t *args;      /* owned on decode; borrowed on encode */
            size_t args_len;
            char digest[DMP__DIGEST_HEX + 1];
            uint64_t exe_size;
            uint32_t parent_pid;
            bool daemon;
            char **argv;        /* NULL-terminated; owned on decode */
            size_t argc;
            bool zygote;        /* the executable has zygote mode */
        } spawn_request;
        struct {
            uint64_t proc;
            uint32_t pid;
            char node[DMP__NAME_MAX];
        } spawn_reply;
        struct {
            char digest[DMP__DIGEST_HEX + 1];
            uint64_t size;
            uint64_t offset;
            uint8_t *data;      /* owned on decode; borrowed on encode */
            size_t len;
        } upload;
        struct {
            char node[DMP__NAME_MAX];
            uint64_t proc;
            uint32_t stream;
            uint8_t *data;      /* owned on decode; borrowed on encode */
            size_t len;
        } proc_output;
        struct {
            char node[DMP__NAME_MAX];
            uint64_t proc;
            int exitcode;
            int error;
        } proc_exit;
        struct {
            uint64_t proc;
            uint32_t signo;
        } proc_signal;
        struct {
            dmp__proc_info_t *procs; /* owned; freed by dmp__msg_clear */
            size_t n_procs;
        } proc_list_reply;
        struct {
            uint32_t type;
            int64_t maxsize;
            uint64_t item_max;
            uint64_t capacity;
            bool duplex;
        } obj_new;
        struct {
            uint64_t id;
            char node[DMP__NAME_MAX];
            char rings[DMP__OBJ_RINGS_MAX][DMP__RING_NAME_MAX];
            size_t n_rings;
        } obj_info;
        struct {
            uint64_t id;
        } obj_release;
        struct {
            uint64_t obj;
            uint32_t ring;
            uint32_t op;
            uint8_t *data;      /* owned on decode; borrowed on encode */
            size_t len;
            double timeout;
            uint32_t holder_pid;   /* hold/close writer: for this process */
            char owner[DMP__NAME_MAX]; /* hold for holder_pid at owner */
            uint64_t offset;    /* PUT_PART, PEEK: where data starts */
            uint64_t total;     /* PUT_PART: the whole item's size */
            uint64_t seq;       /* PUT_PART: stage; PEEK, TAKE: item */
            bool died;          /* CLOSE_WRITER for a dead holder */
        } ring_op;
        struct {
            uint8_t *data;      /* owned on decode; borrowed on encode */
            size_t len;
            int64_t count;
            uint64_t total;     /* > len: data is the item's first part */
            uint64_t seq;       /* the item, for PEEK and TAKE */
        } ring_reply;
        struct {
            char typecode;      /* one of DMP__TYPECODES */
            uint64_t length;    /* 1 .. DMP__SHARED_LENGTH_MAX */
            bool lock;
        } shared_new;
        struct {
            uint64_t obj;
            uint32_t op;        /* dmp__shared_op_t */
            char holder_node[DMP__NAME_MAX];
            uint32_t holder_pid; /* 1 .. INT32_MAX */
            uint64_t start;     /* <= DMP__SHARED_LENGTH_MAX */
            uint64_t count;     /* <= DMP__SHARED_LENGTH_MAX */
            uint8_t *data;      /* owned on decode; borrowed on encode */
            size_t len;
            double timeout;     /* not NaN */
            bool holding;
        } shared_op;
        struct {
            uint8_t *data;      /* owned on decode; borrowed on encode */
            size_t len;
            double lease;       /* finite, 0 .. 1e6 */
            bool owner_died;
        } shared_reply;
        struct {
            uint32_t op;        /* DMP__MGR_NAME_* */
            char name[DMP__NAME_MAX];
            uint8_t *addr;      /* owned on decode; borrowed on encode */
            size_t len;
            uint64_t proc;
        } mgr_name;
        struct {
            uint32_t op;        /* dmp__direct_op_t */
            uint8_t key[32];    /* ask, vouch, drop */
            uint32_t pid;       /* ask, vouch, drop: 1 .. INT32_MAX */
            char to[DMP__NAME_MAX];            /* ask */
            char address[DMP__ADDR_MAX];       /* info */
            char server_key[DMP__Z85_KEY_LEN + 1]; /* info */
        } direct;
    } u;
} dmp__msg_t;

/* Encodes into a new buffer. Caller owns *buf_p; free with dmp__free. */
int dmp__wire_encode(const dmp__msg_t *msg, uint8_t **buf_p, size_t *len_p);
/* Decodes and validates one frame. DMP_EPROTO for anything malformed or
 * out of range (size, enum, strings, numbers), -ENOMEM. On error *msg is
 * left empty. Free the result with dmp__msg_clear. */
int dmp__wire_decode(const uint8_t *buf, size_t len, dmp__msg_t *msg);
void dmp__msg_clear(dmp__msg_t *msg);
/* Fills an Error message. */
void dmp__msg_error(dmp__msg_t *msg, uint64_t id, int code, const char *fmt,
                    ...) __attribute__((format(printf, 4, 5)));
const char *dmp__msg_kind_name(dmp__msg_kind_t kind);

/* ---- Client internals (dmp_client.c) -------------------------------- */
/* Receives events the agent pushes (child output, exits) on the client's
 * I/O thread; msg is NULL once when the connection to the agent is lost. */
typedef void (*dmp__event_fn)(const dmp__msg_t *msg, void *arg);
void dmp__client_on_event(dmp_client_t *c, dmp__event_fn fn, void *arg);
/* Sends req to the agent (to be forwarded to `node` when not NULL/"") and
 * waits up to timeout seconds (0: the client's default) for the reply of
 * kind `want`. An Error reply becomes its code, with its text in
 * dmp_client_errmsg. Fills rep only on success; free it with
 * dmp__msg_clear. DMP_ENODE on timeout or a lost connection. */
int dmp__client_request(dmp_client_t *c, const char *node, dmp__msg_t *req,
                        dmp__msg_t *rep, dmp__msg_kind_t want, double timeout);
/* A tcp client with an in-memory keypair (a direct link's), pinning
 * server_pub (Z85), in the ZeroMQ context of `share` (which must outlive
 * it; NULL: its own). errbuf gets the reason of a failure. */
int dmp__client_connect_keys(dmp_client_t *share, const char *address,
                             const dmp__keypair_t *kp,
                             const char *server_pub, dmp_client_t **client_p,
                             char *errbuf, size_t errlen);

/* The text of from's last error becomes to's (dmp_client_errmsg). */
void dmp__client_copy_errmsg(dmp_client_t *to, dmp_client_t *from);

/* ---- Direct links to owners (dmp_direct.c) -------------------------- */
/* The client to send owner's ring operations to: a direct link to that
 * node, made on first use, or NULL to go through our own agent (owner is
 * our agent, we reach it over tcp, DMP_DIRECT=0, or no link could be made
 * lately). */
dmp_client_t *dmp__direct_client(const char *owner);
/* A request on link c gave DMP_ENODE: the next one makes a new link. */
void dmp__direct_lost(const char *owner, dmp_client_t *c);
/* dmp_fini: closes every link. */
void dmp__direct_fini(void);

/* ---- Processes (dmp_target.c, dmp_process.c, dmp_init.c) ----------- */
dmp_target_fn dmp__target_find(const char *name);
/* dmp_fini: the next connection may be to another node. */
void dmp__target_forget_node(void);
/* Runs this process as the child its spawn record (fd in DMP_CHILD)
 * describes; never returns. */
void dmp__child_main(const char *fd_text) __attribute__((noreturn));
/* Runs this process as the child a spawn record describes; never returns. */
void dmp__child_run(const uint8_t *record, size_t len)
    __attribute__((noreturn));
/* Serves as a fork server for the agent on the socket in DMP_ZYGOTE;
 * never returns (dmp_zygote.c). */
void dmp__zygote_main(const char *fd_text) __attribute__((noreturn));
#define DMP__ZYGOTE_FDS 2 /* fds passed with each request: stdout, stderr */
/* dmp_init for calls that connect on first use (a child connects only
 * when it needs its agent); -EBADF after dmp_fini. */
int dmp__init_lazy(void);
/* dmp_init's connection step without the child check. */
int dmp__init_connect(const dmp_client_opts_t *opts, char *errbuf,
                      size_t errlen);
/* True when the client talks to an agent on this host (ipc). */
bool dmp__client_is_local(const dmp_client_t *c);
/* A process that runs a program instead of a target (dmp run): argv[0]
 * with a '/' is shipped to the node; a bare name is found in its PATH. */
int dmp__process_new_command(char *const *argv, const char *node,
                             dmp_process_t **proc_p);
/* For pipe ends in a new child's args whose rings live on the child's
 * host (= ours): hold their sending side in the child's name. */
void dmp__pipe_hold_for_child(const dmp_value_t *args, const char *node,
                              pid_t pid);
/* dmp_fini: remove the queues and pipes this process created. */
void dmp__queue_atexit(void);
void dmp__pipe_atexit(void);
/* dmp_fini's first step: terminate daemons, join the others. */
void dmp__process_atexit(void);

/* ---- Pool (dmp_pool.c, dmp_pool_job.c, dmp_pool_worker.c) ----------- */
/* Encodes v into a caller's buffer: its size first, then the bytes at p
 * (returns the end). No allocation per value: the pool packs thousands
 * of items into one message (dmp_value.c). */
int dmp__value_encoded_size(const dmp_value_t *v, size_t *len_p);
uint8_t *dmp__value_write(const dmp_value_t *v, uint8_t *p);
/* The registered task of that name, or NULL. */
dmp_task_fn dmp__task_find(const char *name);
/* The target every pool worker runs (dmp_pool_worker.c). */
#define DMP__POOL_WORKER "dmp.pool.worker"
/* Who can see whose pids: "BOOT_ID:pid:[NS INODE]" of this process. */
void dmp__pool_host_id(char *out, size_t size);
/* dmp_fini's first step: terminate and join every pool still running. */
void dmp__pool_atexit(void);
/* Like dmp_process_new, named "PREFIX-N" with N from the counter that
 * numbers "Process-N" (Python's SpawnPoolWorker-N count the same way). */
int dmp__process_new_numbered(const dmp_process_opts_t *opts,
                              const char *prefix, dmp_process_t **proc_p);
/* True when this queue's ring is mapped here (no agent on its path). */
bool dmp__queue_is_mapped(const dmp_queue_t *q);

/*
 * Messages between a pool and its workers, as items of dmp queues (little
 * endian). Owner to a worker, on the worker's own queue:
 *   'T' u32 n_chunks, then per chunk: u64 id, u8 flags, u8 name_len, name,
 *       u32 n_items, then per item: u32 len, an encoded value
 *   'S' stop after what came before;  'P' a ping (the owner lives)
 * Workers to the owner, on the pool's result queue:
 *   'R' u64 worker, u32 n_runs, then per run: u64 chunk id, u32 first item
 *       (in the chunk), u32 n_items, u32 microseconds, then per item:
 *       i32 code, u32 len, bytes (code 0: an encoded value; else the
 *       error's UTF-8 text)
 *   'H' u64 worker: the initializer ran, tasks come next
 *   'X' u64 worker, i32 code, text: the initializer failed; it exits
 *   'K' (from the owner itself) wakes the pool's thread
 */
#define DMP__POOL_CHUNK_FLUSH 0x01 /* flags: send results right after */
/* Multi-chunk messages and result batches stay under this, so that they
 * cross hosts in one frame (a single larger item goes alone). */
#define DMP__POOL_MSG_SOFT (256u * 1024)

typedef struct dmp__job dmp__job_t;
typedef enum {
    DMP__JOB_MAP = 1,           /* map, starmap: one list, fails fast */
    DMP__JOB_APPLY = 2,         /* apply: one value */
    DMP__JOB_IMAP = 3,          /* results in order, one by one */
    DMP__JOB_IMAP_UNORDERED = 4 /* results as they come */
} dmp__job_kind_t;

/* A call's results (dmp_pool_job.c): its own lock; the pool sets items
 * under dmp__job_lock, users wait on it. One reference for the caller. */
int dmp__job_new(dmp__job_kind_t kind, size_t n, dmp_async_fn cb, void *arg,
                 dmp__job_t **job_p);
void dmp__job_ref(dmp__job_t *job);
void dmp__job_unref(dmp__job_t **job_p);
void dmp__job_lock(dmp__job_t *job);
/* Wakes the job's waiters when something changed, and unlocks. */
void dmp__job_unlock(dmp__job_t *job);
/* Item i's outcome, once: rc 0 with data/len an encoded value, or rc the
 * call's error (DMP_EREMOTE, DMP_EWORKER, ...) with the original code and
 * text. False when item i had one already (a duplicate: dropped). */
bool dmp__job_set_locked(dmp__job_t *job, size_t i, int rc, int code,
                         const void *data, size_t len, const char *text);
bool dmp__job_is_set_locked(const dmp__job_t *job, size_t i);
/* Nothing more is wanted: map failed or is complete, every item set. */
bool dmp__job_finished_locked(const dmp__job_t *job);
/* Sets every item not yet set to rc, with the original code and text
 * (the pool was terminated, its initializer fails, ...). */
void dmp__job_fail_locked(dmp__job_t *job, int rc, int code,
                          const char *text);
/* True once, when the job is ready and has a callback to run; the caller
 * then runs dmp__job_callback without any lock held. */
bool dmp__job_callback_due_locked(dmp__job_t *job);
void dmp__job_callback(dmp__job_t *job);
/* The user's handles on a job (each takes a reference). */
int dmp__async_new(dmp__job_t *job, dmp_async_t **ar_p);
int dmp__imap_new(dmp__job_t *job, dmp_imap_t **it_p);
/* Waits for a map or apply job and moves its result out (synchronous
 * calls). rc as dmp_async_get; the error's code and text copied out. */
int dmp__job_take(dmp__job_t *job, dmp_value_t **result_p, int *code,
                  char *text, size_t textlen);

/* ---- Handles of shared objects inside values (dmp_value.c) ---------- */
/* A handle value carrying an opaque payload (1..1024 bytes). */
dmp_value_t *dmp__handle_value(const void *data, size_t len);
/* The payload of a handle value; NULL if v is not a handle. Borrowed. */
const void *dmp__handle_data(const dmp_value_t *v, size_t *len_p);
/* Calls fn with the payload of every handle in v, lists and dicts
 * included (64 deep at most), as a child's args carry them. */
void dmp__handles_each(const dmp_value_t *v,
                       void (*fn)(const uint8_t *data, size_t len,
                                  void *arg),
                       void *arg);

/* ---- Objects owned by a node: queues, pipes (dmp_object.c) ---------- */
/* The node to address requests about owner's objects to: NULL when it is
 * our own agent, else owner (our agent forwards). */
const char *dmp__obj_route(const char *owner);
/* True when owner is this host's agent: its rings can be mapped here. */
bool dmp__obj_is_local(const char *owner);
/* True when owner is the agent we talk to, whichever way: over tcp it may
 * still run on this host (a program pointed at a local cluster), which
 * only opening a ring tells. Segment names carry the owner's name and a
 * random incarnation, so a ring that opens is the owner's own. */
bool dmp__obj_may_map(const char *owner);
/* Asks our agent for a new object (params: an ObjNew message body). */
int dmp__obj_new(const dmp__msg_t *params, char owner[DMP__NAME_MAX],
                 uint64_t *id, char rings[][DMP__RING_NAME_MAX],
                 size_t *n_rings);
/* A RingOp at the owner: waits up to timeout there (DMP_FOREVER: no
 * limit). out_p/count may be NULL; *out_p is the caller's (dmp__free). */
int dmp__obj_ring_op(const char *owner, uint64_t id, uint32_t ring,
                     uint32_t op, const void *data, size_t len,
                     double timeout, uint8_t **out_p, size_t *out_len,
                     int64_t *count);
/* Removes the object at its owner (best effort: it may be gone). */
/* Holds ring `ring` of object id (owned by `owner`) as a writer in the
 * name of process pid of node `node` (a child that got a pipe end in its
 * arguments), until it takes the hold over or dies; `node` watches it. */
int dmp__obj_hold_writer_for(const char *node, const char *owner,
                             uint64_t id, uint32_t ring, pid_t pid);
void dmp__obj_release(const char *owner, uint64_t id);
/* Handle header: type letter, owner, id. put returns bytes written, get
 * bytes read; negative on error. Ring names follow as length + name. */
int dmp__obj_handle_put(uint8_t *buf, size_t size, char type,
                        const char *owner, uint64_t id);
int dmp__obj_handle_get(const uint8_t *buf, size_t len, char type,
                        char owner[DMP__NAME_MAX], uint64_t *id);
int dmp__obj_ring_name_put(uint8_t *p, size_t room, const char *name);
int dmp__obj_ring_name_get(const uint8_t *p, size_t room,
                           char name[DMP__RING_NAME_MAX]);

/* ---- Pipelined puts to an owner on another host (dmp_feeder.c) ------- */
/* Python's feeder thread, for queues whose ring is not mapped here: put
 * buffers the item and returns; batches go to the owner one at a time; an
 * error of a batch is reported by the next call. A pipe's sends go out
 * before put returns (`at_once`), up to a window of batches on their way,
 * so that what a process sent outlives it; only a sender faster than the
 * window buffers (and a full buffer makes put wait). */
#define DMP__FEEDER_WINDOW_BATCHES 64
/* Larger items do not join a batch: they go alone, after the ones before
 * them (in parts when a frame cannot carry them). */
#define DMP__FEEDER_ITEM_MAX (DMP__WIRE_MAX / 4)
typedef struct {
    pthread_mutex_t mx;
    pthread_cond_t cv;      /* a batch completed */
    char node[DMP__NAME_MAX];
    uint64_t id;
    uint32_t ring;
    bool at_once;           /* a window of batches, not one (pipes) */
    dmp_client_t *client;   /* not dmp_default_client() at each call:
                             * replies run while dmp_fini holds its lock */
    dmp_client_t *via;      /* what carries the batches in flight: client,
                             * or a direct link (dmp_direct.c) */
    uint8_t *buf;           /* items waiting to go: u32 len + bytes */
    size_t len, cap;
    unsigned inflight;      /* batches sent, not answered yet */
    size_t inflight_bytes;
    size_t sizes[DMP__FEEDER_WINDOW_BATCHES]; /* theirs, oldest first */
    unsigned oldest;        /* index of the oldest in sizes */
    int error;              /* first failure of a batch, reported once */
} dmp__feeder_t;

void dmp__feeder_init(dmp__feeder_t *f, const char *node, uint64_t id,
                      uint32_t ring, bool at_once);
void dmp__feeder_fini(dmp__feeder_t *f);
/* 0 once sent or buffered; -EMSGSIZE over half a frame; an earlier
 * batch's error. */
int dmp__feeder_put(dmp__feeder_t *f, const void *data, size_t len);
/* Waits until every item put reached the owner: 0 or a batch's error. */
int dmp__feeder_flush(dmp__feeder_t *f);

/* ---- Shared-memory ring (dmp_ring.c) --------------------------------- */
/*
 * The same-host data plane of Queue, JoinableQueue, SimpleQueue and Pipe:
 * a POSIX shm segment holding a bounded multi-producer multi-consumer ring
 * of variable-length items, a process-shared robust mutex, and futex words
 * that blocked putters and getters sleep on (no polling). Every process on
 * the host that holds the name maps it and works on it directly; the owning
 * agent maps it too, to serve processes on other hosts.
 *
 * Crash safety: an item is committed by one index update under the lock, so
 * a process killed at any point (holding the lock or not) never leaves a
 * half-written or duplicated item visible; the next locker recovers the
 * mutex (EOWNERDEAD) and goes on.
 */
typedef struct dmp__ring dmp__ring_t;

typedef struct {
    uint64_t capacity;  /* data bytes (0: 1 MiB); the segment is sparse */
    int64_t maxsize;    /* items at most (Queue(maxsize)); <= 0: no limit
                         * but the capacity */
    uint64_t item_max;  /* largest item accepted (0: 64 MiB); items larger
                         * than fit in the ring go out of line (below) */
} dmp__ring_opts_t;

/* Creates a new segment `name` ("/dmp-..." , mode 0600, O_EXCL). */
int dmp__ring_create(const char *name, const dmp__ring_opts_t *opts,
                     dmp__ring_t **ring_p);
/* Maps an existing segment; checks magic, version and sizes (DMP_EPROTO). */
int dmp__ring_open(const char *name, dmp__ring_t **ring_p);
/* Unmaps (the segment stays until unlinked). Safe on NULL; nulls. */
void dmp__ring_close(dmp__ring_t **ring_p);
/* Removes the name and every out-of-line item segment it still holds. */
int dmp__ring_unlink(const char *name);
/* Appends one item. Waits up to timeout seconds for room (maxsize or
 * bytes): 0, DMP_EFULL when there is none in time (Python's queue.Full),
 * -EMSGSIZE larger than item_max, -EBADF after dmp__ring_shutdown. */
int dmp__ring_put(dmp__ring_t *ring, const void *data, size_t len,
                  double timeout);
/* Appends the items of a batch (records: u32 length, little-endian, then
 * the bytes) from *done on, without waiting, as many as fit under one
 * lock at a time (an out-of-line item alone): 0 when all are in, or the
 * error of the first item refused (-EMSGSIZE; the items after it still
 * go in); DMP_EFULL when the ring is full (*done says how far it got);
 * -EINVAL when a record runs past the end; -EBADF after shutdown. */
int dmp__ring_put_batch(dmp__ring_t *ring, const uint8_t *data, size_t len,
                        size_t *done);
/* Takes the oldest item into a new buffer (dmp__malloc; caller frees).
 * Waits up to timeout: 0, DMP_EEMPTY when none came in time (queue.Empty),
 * -EBADF after shutdown once empty. */
int dmp__ring_get(dmp__ring_t *ring, uint8_t **data_p, size_t *len_p,
                  double timeout);
/* The same, for a caller that can take at most max bytes (the owner's
 * agent answering a remote get within one frame): when the oldest item is
 * larger, -EMSGSIZE with its size in *len_p, and the item stays. */
int dmp__ring_get_max(dmp__ring_t *ring, uint8_t **data_p, size_t *len_p,
                      double timeout, size_t max);
/* An item read in parts (by the owner's agent, for a getter elsewhere),
 * never waiting: bytes offset .. offset + max of the oldest item, its
 * size in *total_p. *seq_p names the item: 0 asks for whichever is
 * oldest and is set to it; another value gives -ESTALE once that item is
 * gone. DMP_EEMPTY when there is none. The item stays. */
int dmp__ring_peek(dmp__ring_t *ring, uint64_t *seq_p, uint64_t offset,
                   size_t max, uint8_t **data_p, size_t *len_p,
                   uint64_t *total_p);
/* Removes the oldest item if it is still seq: 0 or -ESTALE. */
int dmp__ring_take(dmp__ring_t *ring, uint64_t seq);
/* The largest item it accepts. */
uint64_t dmp__ring_item_max(const dmp__ring_t *ring);
/* Items queued now (Python's qsize, approximate by nature). */
int64_t dmp__ring_count(dmp__ring_t *ring);
/* JoinableQueue: every put adds an unfinished task; task_done removes one
 * (-EINVAL when called more often than items were put: Python's
 * ValueError); join waits until none is unfinished: 0 or -ETIMEDOUT. */
int dmp__ring_task_done(dmp__ring_t *ring);
int dmp__ring_join(dmp__ring_t *ring, double timeout);
/* Wakes every waiter; later puts fail with -EBADF, gets drain what is left
 * then fail with -EBADF. For the owner tearing the queue down. */
void dmp__ring_shutdown(dmp__ring_t *ring);
/* Pipes: each process that may send into this ring holds it as a writer
 * (hold_writer, registered with its pid); close_writer drops this
 * process's hold. Once no live writer holds it (closed, or its process
 * died), a get on the empty ring returns DMP_EEOF instead of waiting. */
int dmp__ring_hold_writer(dmp__ring_t *ring);
int dmp__ring_close_writer(dmp__ring_t *ring);
/* A parent holds the ring as a writer in the name of a child it just
 * started (by pid, on this host), until the child attaches (its own
 * hold_writer takes the hold over) or dies. So a parent closing its copy
 * of the child's end right after start does not make EOF early. */
int dmp__ring_hold_writer_for(dmp__ring_t *ring, pid_t child);
/* 1 when a get would not block (an item, EOF or shutdown), 0 when nothing
 * came within timeout. */
int dmp__ring_poll(dmp__ring_t *ring, double timeout);
/* Test hook: called at named points inside put and get (kill tests). */
extern void (*dmp__ring_test_hook)(const char *point);
/* Changes on every put and get: lets the agent, which cannot sleep on a
 * futex, notice progress from its poll loop (see notify below). */
uint32_t dmp__ring_seq(dmp__ring_t *ring);
/* The agent registers a wake-up FIFO path (or "" to stop): while set,
 * every put and get writes one byte to it (non-blocking; a full FIFO is
 * fine), so the agent's poll loop wakes for parked remote requests. */
int dmp__ring_set_notify(dmp__ring_t *ring, const char *fifo_path);

/* One byte to a wake-up FIFO (the agent's), never blocking; anything but
 * a FIFO is left alone. */
void dmp__fifo_notify(const char *path);
/* True while pid runs and is not a zombie, and (when both are known) it
 * is the process that started at `start` (dmp__proc_starttime). */
bool dmp__proc_alive(pid_t pid, uint64_t start);
/* A loopback tcp port free now, below the kernel's ephemeral range (for
 * throwaway local clusters: tests, `dmp cluster up`), or -errno. */
int dmp__free_loopback_port(void);
/* For spinning waiters (ring and segment locks): more than one CPU this
 * process may run on (else spinning only delays the holder), and one pause
 * of a spin loop. */
bool dmp__multi_cpu(void);
static inline void
dmp__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}

/* ---- Value and Array segments (dmp_segment.c) ------------------------- */
/*
 * The same-host data plane of Value, Array, RawValue and RawArray: a POSIX
 * shm segment holding `length` elements of one typecode, a robust
 * process-shared lock (the object's lock: a holder killed while holding it
 * hands DMP_EOWNERDEAD to the next explicit acquirer), and the table of
 * the processes of this host that hold a handle (by pid and start time, so
 * that a dead one stops counting). The owning agent creates and maps it
 * too, to serve processes on other hosts; it only ever tries the lock.
 *
 * The lock names a process, not a thread: recursion (Python's RLock) and
 * thread ownership are counted by each process (dmp_shared.c), so that the
 * hot path is one compare-and-swap to take it and one to release it.
 */
#define DMP__TYPECODES "cbBhHiIlLqQfd"
typedef struct dmp__seg dmp__seg_t;

/* Bytes of one element of typecode tc: 1, 2, 4 or 8; 0 when tc is not
 * one of DMP__TYPECODES. l and L are 64-bit everywhere (C long on 64-bit
 * Linux), so that an object reads the same from any host. */
size_t dmp__typecode_size(int tc);
bool dmp__typecode_is_float(int tc);
/* Creates segment `name` (mode 0600, O_EXCL), zero-filled; fifo_path: the
 * owner's wake-up FIFO, poked when a lock it waits for is released. */
int dmp__seg_create(const char *name, char typecode, uint64_t length,
                    bool lock, const char *fifo_path, dmp__seg_t **seg_p);
/* Maps an existing segment; checks everything in its header
 * (DMP_EPROTO); -ENOENT when it is gone. */
int dmp__seg_open(const char *name, dmp__seg_t **seg_p);
/* Unmaps. The caller must not hold its lock. Safe on NULL; nulls. */
void dmp__seg_close(dmp__seg_t **seg_p);
int dmp__seg_unlink(const char *name);
char dmp__seg_typecode(const dmp__seg_t *seg);
uint64_t dmp__seg_length(const dmp__seg_t *seg);
bool dmp__seg_has_lock(const dmp__seg_t *seg);
/* The elements (length x itemsize bytes, naturally aligned). */
void *dmp__seg_data(const dmp__seg_t *seg);

/* Takes the lock, waiting up to timeout (<= 0: one try, -EBUSY; the
 * forever of DMP_FOREVER). `tell`: an explicit acquire, which is told
 * DMP_EOWNERDEAD (holding the lock) once after a holder died; other
 * takers (a get, a set) leave that news for the next explicit one.
 * `defer`: a local acquirer, which first gives processes waiting at the
 * owning agent a moment (so that they are not starved). -ETIMEDOUT. */
int dmp__seg_lock(dmp__seg_t *seg, double timeout, bool tell, bool defer);
/* Releases; pokes the owner's FIFO when it waits for it. -EPERM when this
 * process does not hold it. */
int dmp__seg_unlock(dmp__seg_t *seg);
/* The owner, for processes elsewhere: says that some wait for the lock
 * (on: the next release pokes its FIFO, and local acquirers defer), or
 * none any more; and that the one it took for is served. */
void dmp__seg_remote_wait(dmp__seg_t *seg, bool on);
void dmp__seg_remote_served(dmp__seg_t *seg);
/* The owner releases a lock whose remote holder's lease ran out: the
 * next explicit acquirer gets DMP_EOWNERDEAD. */
int dmp__seg_unlock_dead(dmp__seg_t *seg);

/* Holders on this host. hold: pid holds a handle (reserve: a parent holds
 * it for its child pid, until the child attaches or dies). unhold: pid
 * let go; returns how many live holders are left, or an error. A full
 * table (256) counts the hold as untracked: the segment then lives until
 * its agent stops. */
int dmp__seg_hold(dmp__seg_t *seg, pid_t pid, bool reserve);
int dmp__seg_unhold(dmp__seg_t *seg, pid_t pid);
/* The owner: forgets dead holders; how many live ones are left (-EBUSY
 * when the table is being changed: try later; the agent never waits). */
int dmp__seg_sweep(dmp__seg_t *seg);

/* One element, at p, of typecode tc. Loads and stores are single atomic
 * accesses (never torn). get_int: -EINVAL for f and d (Python's int of a
 * float is explicit); set_int converts for f and d; set_double: -EINVAL
 * for the integer typecodes (Python's TypeError). Integers wrap to the
 * element's width, as ctypes does. */
double dmp__elem_get_double(int tc, const void *p);
int dmp__elem_set_double(int tc, void *p, double v);
/* (get_int and set_int are inline: the hot path of `v.value += 1`.) */
#define DMP__ELEM_LOAD(T, p) __atomic_load_n((T *)(p), __ATOMIC_RELAXED)
#define DMP__ELEM_STORE(T, p, v)                                             \
    __atomic_store_n((T *)(p), (T)(v), __ATOMIC_RELAXED)
static inline int
dmp__elem_get_int(int tc, const void *p, int64_t *out)
{
    switch (tc) {
    case 'c': case 'B': *out = DMP__ELEM_LOAD(const uint8_t, p); return 0;
    case 'b': *out = DMP__ELEM_LOAD(const int8_t, p); return 0;
    case 'h': *out = DMP__ELEM_LOAD(const int16_t, p); return 0;
    case 'H': *out = DMP__ELEM_LOAD(const uint16_t, p); return 0;
    case 'i': *out = DMP__ELEM_LOAD(const int32_t, p); return 0;
    case 'I': *out = DMP__ELEM_LOAD(const uint32_t, p); return 0;
    case 'l': case 'q': *out = DMP__ELEM_LOAD(const int64_t, p); return 0;
    case 'L': case 'Q':
        *out = (int64_t)DMP__ELEM_LOAD(const uint64_t, p);
        return 0;
    default: return -EINVAL;
    }
}
static inline void
dmp__elem_set_int(int tc, void *p, int64_t v)
{
    switch (tc) {
    case 'c': case 'b': case 'B':
        DMP__ELEM_STORE(uint8_t, p, (uint64_t)v);
        break;
    case 'h': case 'H':
        DMP__ELEM_STORE(uint16_t, p, (uint64_t)v);
        break;
    case 'i': case 'I':
        DMP__ELEM_STORE(uint32_t, p, (uint64_t)v);
        break;
    case 'f': case 'd':
        dmp__elem_set_double(tc, p, (double)v);
        break;
    default:
        DMP__ELEM_STORE(uint64_t, p, (uint64_t)v);
        break;
    }
}
/* Atomic += (no lock): add_int on any typecode (a float adds the delta
 * converted), add_double only on f and d. *after (may be NULL) gets the
 * element's new value. */
void dmp__elem_add_int(int tc, void *p, int64_t delta, int64_t *after);
int dmp__elem_add_double(int tc, void *p, double delta, double *after);
/* Elements to and from their wire form (little-endian), in place. */
void dmp__elem_to_le(int tc, void *p, size_t n);
#define dmp__elem_from_le dmp__elem_to_le

/* ---- Value and Array handles (dmp_shared.c) --------------------------- */
/* dmp_fini: releases what this process holds, lets go of every handle. */
void dmp__shared_atexit(void);
/* For Value and Array handles in a new child's args: hold them in the
 * child's name (pid on node) until it attaches, so that a parent that
 * destroys its handle right after start does not remove them. */
void dmp__shared_hold_for_child(const dmp_value_t *args, const char *node,
                                pid_t pid);

/* Called when an async request completes: rc 0 with the reply (borrowed
 * for the call), or an error code. It runs on the client's I/O thread, or,
 * on a direct link, on whichever thread reads the socket (one waiting for
 * its own reply on that link): so it must not take a lock that a thread
 * holds around a request on a direct link. */
typedef void (*dmp__reply_fn)(int rc, const dmp__msg_t *rep, void *arg);
/* Sends req without waiting; fn runs once when its reply (or an error,
 * DMP_ENODE when the connection is lost or the client destroyed) comes.
 * fn may call dmp__client_send_async again. `lazy`: nobody waits for this
 * reply, so no thread needs waking to read it: on a direct link it is read
 * with the next reply some caller waits for, or once dmp__client_watch
 * asks for it (a pipe's send: the window of batches stays open). */
int dmp__client_send_async(dmp_client_t *c, const char *node,
                           dmp__msg_t *req, dmp__reply_fn fn, void *arg,
                           bool lazy);
/* The replies of lazy requests on c are wanted now: have them read. */
void dmp__client_watch(dmp_client_t *c);

/* ---- ZeroMQ helpers shared by the library, the agent and the CLI ----- */
/* The ZAP domain every dmp CURVE server uses (never empty: see FAULTS). */
#define DMP__ZAP_DOMAIN "dmp"

/* Options every dmp socket gets: linger 0, frame limit, no handover. */
int dmp__sock_defaults(void *sock);
/* Makes sock a CURVE client of server_pub with our keypair. */
int dmp__sock_curve_client(void *sock, const dmp__keypair_t *kp,
                           const char *server_pub_z85);
/* Makes sock a CURVE server enforcing ZAP in the dmp domain. */
int dmp__sock_curve_server(void *sock, const dmp__keypair_t *kp);
/* Encodes and sends msg as one frame (after an optional routing id). */
int dmp__sock_send(void *sock, const void *rid, size_t rid_len,
                   const dmp__msg_t *msg, int flags);
/*
 * Connects sock to endpoint and waits for the ZMTP handshake to finish.
 * Returns 0 when it succeeded; DMP_EAUTH when the server refused our key;
 * DMP_ESERVERKEY when the handshake failed otherwise (wrong server key, or
 * not a dmp node); DMP_ENODE when nothing answered within timeout.
 */
int dmp__sock_connect_checked(void *ctx, void *sock, const char *endpoint,
                              double timeout, char *err, size_t errlen);

/* ---- Manager (dmp_manager.c, dmp_manager_server.c, dmp_proxy.c) ------ */
/* The target the manager's server process runs. */
#define DMP__MANAGER_TARGET "dmp.manager"
/* A client on another host than its manager holds a lease this long,
 * renewed every second by its connection; a client on the same host is
 * watched by pid and start time instead. */
#define DMP__MANAGER_LEASE 5.0
/* MgrName ops, and the largest address the agents keep. */
enum { DMP__MGR_NAME_REGISTER = 1, DMP__MGR_NAME_UNREGISTER = 2,
       DMP__MGR_NAME_LOOKUP = 3 };
#define DMP__MGR_ADDR_MAX 1024
/*
 * Requests, items of the manager's request queue (little endian):
 *   u8 op, u64 client, u64 seq, u64 object, f64 timeout, u8 n_args, then
 *   per argument: u32 length, an encoded value.
 * Replies, items of the client's reply queue:
 *   u64 seq, i32 code, u8 kind (0 nothing, 1 an encoded value, 2 the
 *   error's text), then the value or text.
 */
#define DMP__MREQ_HEADER 34
#define DMP__MREP_HEADER 13
enum {
    DMP__MOP_HELLO = 1, DMP__MOP_KEEPALIVE, DMP__MOP_BYE, DMP__MOP_SHUTDOWN,
    DMP__MOP_CREATE, DMP__MOP_LOOKUP, DMP__MOP_REPR,
    DMP__MOP_D_GET = 20, DMP__MOP_D_GET_DEFAULT, DMP__MOP_D_SET,
    DMP__MOP_D_DEL, DMP__MOP_D_CONTAINS, DMP__MOP_D_LEN, DMP__MOP_D_KEYS,
    DMP__MOP_D_VALUES, DMP__MOP_D_ITEMS, DMP__MOP_D_UPDATE, DMP__MOP_D_POP,
    DMP__MOP_D_CLEAR, DMP__MOP_D_COPY,
    DMP__MOP_L_APPEND = 40, DMP__MOP_L_EXTEND, DMP__MOP_L_INSERT,
    DMP__MOP_L_GET, DMP__MOP_L_SET, DMP__MOP_L_DEL, DMP__MOP_L_GET_SLICE,
    DMP__MOP_L_SET_SLICE, DMP__MOP_L_DEL_SLICE, DMP__MOP_L_LEN,
    DMP__MOP_L_POP, DMP__MOP_L_INDEX, DMP__MOP_L_COUNT, DMP__MOP_L_REMOVE,
    DMP__MOP_L_SORT, DMP__MOP_L_COPY,
    DMP__MOP_V_GET = 60, DMP__MOP_V_SET, DMP__MOP_A_LEN, DMP__MOP_A_GET,
    DMP__MOP_A_SET, DMP__MOP_A_TOLIST, DMP__MOP_N_GET, DMP__MOP_N_SET,
    DMP__MOP_N_DEL,
    DMP__MOP_ACQUIRE = 80, DMP__MOP_RELEASE, DMP__MOP_SEM_VALUE,
    DMP__MOP_C_WAIT, DMP__MOP_C_NOTIFY, DMP__MOP_E_SET, DMP__MOP_E_CLEAR,
    DMP__MOP_E_IS_SET, DMP__MOP_E_WAIT, DMP__MOP_B_WAIT, DMP__MOP_B_RESET,
    DMP__MOP_B_ABORT, DMP__MOP_B_STATE, DMP__MOP_Q_PUT, DMP__MOP_Q_GET,
    DMP__MOP_Q_QSIZE, DMP__MOP_Q_TASK_DONE, DMP__MOP_Q_JOIN,
};
static inline void
dmp__le64_put(uint8_t *p, uint64_t x)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(x >> (8 * i));
}
static inline uint64_t
dmp__le64_get(const uint8_t *p)
{
    uint64_t x = 0;
    for (int i = 0; i < 8; i++)
        x |= (uint64_t)p[i] << (8 * i);
    return x;
}
static inline void
dmp__le32_put(uint8_t *p, uint32_t x)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(x >> (8 * i));
}
static inline uint32_t
dmp__le32_get(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}
/* The server's main (dmp_manager_server.c), run by the target. */
int dmp__manager_serve(const dmp_value_t *args);
/* A manager's address (a list: name, node, pid, start time, incarnation,
 * request queue, proc id) under its name at its node's agent: -EEXIST
 * when a live manager holds the name. unregister: at exit (best effort;
 * the agent also forgets a manager whose process ended). */
int dmp__manager_register(const char *name, const dmp_value_t *addr);
void dmp__manager_unregister(const char *name);
/* dmp_fini's first step: leave every manager, stop the ones we started. */
void dmp__manager_atexit(void);
/* One call on a proxy's object (dmp_proxy.c): -EINVAL when the proxy is
 * not of type `want` (0: any; DMP_PROXY_LOCK: anything with a lock),
 * or an argument is NULL. *res_p (may be NULL) gets the result. */
int dmp__proxy_call(dmp_proxy_t *p, dmp_proxy_type_t want, int op,
                    double timeout, const dmp_value_t *const *args, size_t n,
                    dmp_value_t **res_p);

#endif /* DMP_IMPL_H */
