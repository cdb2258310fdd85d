/*
 * dmp_process.c - Python's Process, started on any node.
 *
 * A process is started by asking the agent (forwarded to the chosen node)
 * to run this very executable with a target name and encoded arguments. A
 * node that lacks the executable answers DMP_EBINARY; it is then uploaded
 * in chunks, verified by its SHA-256 there, and the start is retried once.
 * The agent reports the child's output and exit as events on the client's
 * I/O thread: output is written to our stdout/stderr as it arrives, and the
 * exit wakes join(). An exit can race ahead of start() recording the
 * process id, so unclaimed exits are parked until start() looks.
 *
 * Locking: s_procs.lock guards every field written after start (exited,
 * exitcode, error) and the lists; the condition variable wakes joiners.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PARKED_MAX 256

struct dmp_process {
    struct dmp_process *next;   /* in s_procs.list once started */
    char name[DMP__NAME_MAX];
    char target[DMP__NAME_MAX];
    char place[DMP__NAME_MAX];  /* node name, "local", "spread" or "" */
    uint8_t *args;              /* encoded argument list, owned */
    size_t args_len;
    bool daemon;
    char **argv;                /* command mode: the program's argv, owned */
    char exe[PATH_MAX];         /* command mode: file to ship, or "" */
    bool started;
    char node[DMP__NAME_MAX];   /* where it runs */
    uint64_t proc;              /* its id at that node */
    uint32_t pid;
    bool exited;                /* guarded by s_procs.lock from here */
    int exitcode;
    int error;                  /* DMP_ENODE when its node was lost */
};

typedef struct {
    char node[DMP__NAME_MAX];
    uint64_t proc;
    int exitcode;
    int error;
} s_parked_t;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool cond_ready;
    dmp_process_t *list;        /* started, handle alive */
    s_parked_t parked[PARKED_MAX];
    size_t n_parked;
    unsigned counter;           /* for "Process-N" names */
    unsigned spread_next;       /* round robin position */
    dmp_client_t *hooked;       /* client whose events we receive */
    char digest[DMP__DIGEST_HEX + 1]; /* of /proc/self/exe, once */
    uint64_t exe_size;
} s_procs = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void
s_cond_init_locked(void)
{
    if (s_procs.cond_ready)
        return;
    dmp__cond_init_monotonic(&s_procs.cond);
    s_procs.cond_ready = true;
}

static void
s_write_all(int fd, const uint8_t *data, size_t len)
{
    while (len) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* our stdout is gone: nothing sensible to do */
        data += n;
        len -= (size_t)n;
    }
}

static dmp_process_t *
s_find_locked(const char *node, uint64_t proc)
{
    for (dmp_process_t *p = s_procs.list; p; p = p->next)
        if (p->proc == proc && strcmp(p->node, node) == 0)
            return p;
    return NULL;
}

/* The client's I/O thread calls this for every pushed event. */
static void
s_on_event(const dmp__msg_t *msg, void *arg)
{
    (void)arg;
    if (msg && msg->kind == DMP__MSG_PROC_OUTPUT) {
        s_write_all(msg->u.proc_output.stream == 2 ? 2 : 1,
                    msg->u.proc_output.data, msg->u.proc_output.len);
        return;
    }
    pthread_mutex_lock(&s_procs.lock);
    if (!msg) { /* the agent is gone: nobody will report these exits */
        for (dmp_process_t *p = s_procs.list; p; p = p->next)
            if (!p->exited) {
                p->exited = true;
                p->error = DMP_ENODE;
            }
    } else if (msg->kind == DMP__MSG_PROC_EXIT) {
        dmp_process_t *p =
            s_find_locked(msg->u.proc_exit.node, msg->u.proc_exit.proc);
        if (p) {
            p->exited = true;
            p->exitcode = msg->u.proc_exit.exitcode;
            p->error = msg->u.proc_exit.error;
        } else if (s_procs.n_parked < PARKED_MAX) {
            s_parked_t *k = &s_procs.parked[s_procs.n_parked++];
            dmp__strlcpy(k->node, msg->u.proc_exit.node, sizeof k->node);
            k->proc = msg->u.proc_exit.proc;
            k->exitcode = msg->u.proc_exit.exitcode;
            k->error = msg->u.proc_exit.error;
        }
    }
    if (s_procs.cond_ready)
        pthread_cond_broadcast(&s_procs.cond);
    pthread_mutex_unlock(&s_procs.lock);
}

int
dmp_process_new(const dmp_process_opts_t *opts, dmp_process_t **proc_p)
{
    if (!opts || !opts->target || !dmp__target_find(opts->target) ||
        (opts->name && !dmp__name_valid(opts->name)) ||
        (opts->node && !dmp__name_valid(opts->node)) ||
        (opts->args && dmp_value_type(opts->args) != DMP_VALUE_LIST))
        return -EINVAL;
    dmp_process_t *p = dmp__calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    if (opts->args) {
        int rc = dmp_value_encode(opts->args, &p->args, &p->args_len);
        if (rc) {
            dmp__free(p);
            return rc;
        }
    }
    dmp__strlcpy(p->target, opts->target, sizeof p->target);
    pthread_mutex_lock(&s_procs.lock);
    unsigned n = ++s_procs.counter;
    pthread_mutex_unlock(&s_procs.lock);
    if (opts->name)
        dmp__strlcpy(p->name, opts->name, sizeof p->name);
    else
        snprintf(p->name, sizeof p->name, "Process-%u", n);
    const char *place = opts->node ? opts->node : getenv("DMP_PLACE");
    if (place && *place && !dmp__name_valid(place)) {
        dmp__free(p->args);
        dmp__free(p);
        return -EINVAL;
    }
    dmp__strlcpy(p->place, place ? place : "", sizeof p->place);
    p->daemon = opts->daemon != 0;
    *proc_p = p;
    return 0;
}

int
dmp__process_new_numbered(const dmp_process_opts_t *opts, const char *prefix,
                          dmp_process_t **proc_p)
{
    dmp_process_opts_t o = *opts;
    o.name = NULL; /* "Process-N": N is the number to keep */
    dmp_process_t *p;
    int rc = dmp_process_new(&o, &p);
    if (rc)
        return rc;
    char number[24] = ""; /* "-N" */
    const char *n = strrchr(p->name, '-');
    dmp__strlcpy(number, n ? n : "", sizeof number);
    snprintf(p->name, sizeof p->name, "%s%s", prefix, number);
    if (!dmp__name_valid(p->name)) {
        dmp_process_destroy(&p);
        return -EINVAL;
    }
    *proc_p = p;
    return 0;
}

int
dmp__process_new_command(char *const *argv, const char *node,
                          dmp_process_t **proc_p)
{
    size_t argc = 0;
    while (argv[argc])
        argc++;
    if (argc == 0 || argc > DMP__ARGV_MAX || (node && !dmp__name_valid(node)))
        return -EINVAL;
    dmp_process_t *p = dmp__calloc(1, sizeof *p);
    char **copy = dmp__calloc(argc + 1, sizeof *copy);
    if (!p || !copy) {
        dmp__free(p);
        dmp__free(copy);
        return -ENOMEM;
    }
    p->argv = copy;
    for (size_t i = 0; i < argc; i++) {
        if (strlen(argv[i]) > DMP__ARG_LEN_MAX ||
            !(copy[i] = dmp__strdup(argv[i]))) {
            dmp_process_destroy(&p);
            return strlen(argv[i]) > DMP__ARG_LEN_MAX ? -E2BIG : -ENOMEM;
        }
    }
    /* A path is shipped; a bare name is looked up on the node. */
    if (strchr(argv[0], '/')) {
        struct stat st;
        if (!realpath(argv[0], p->exe) || stat(p->exe, &st) != 0 ||
            !S_ISREG(st.st_mode) || access(p->exe, X_OK) != 0) {
            dmp_process_destroy(&p);
            return -ENOENT;
        }
    }
    const char *base = strrchr(argv[0], '/');
    base = base ? base + 1 : argv[0];
    size_t j = 0;
    for (size_t i = 0; base[i] && j < DMP__NAME_MAX - 1; i++)
        p->name[j++] = dmp__name_valid((char[]){base[i], 0}) ? base[i] : '_';
    p->name[j] = '\0';
    if (!dmp__name_valid(p->name))
        dmp__strlcpy(p->name, "command", sizeof p->name);
    dmp__strlcpy(p->place, node ? node : "", sizeof p->place);
    *proc_p = p;
    return 0;
}

/* SHA-256 and size of a file. */
static int
s_file_digest(const char *path, char *digest, uint64_t *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    uint8_t buf[16384];
    uint64_t total = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        crypto_hash_sha256_update(&st, buf, (size_t)n);
        total += (uint64_t)n;
    }
    int rc = n < 0 ? -errno : 0;
    close(fd);
    if (rc)
        return rc;
    uint8_t hash[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&st, hash);
    sodium_bin2hex(digest, DMP__DIGEST_HEX + 1, hash, sizeof hash);
    *size = total;
    return 0;
}

/* SHA-256 and size of our own executable, computed once. */
static int
s_self_digest(char *digest, uint64_t *size)
{
    pthread_mutex_lock(&s_procs.lock);
    int rc = 0;
    if (!s_procs.digest[0]) {
        int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
        crypto_hash_sha256_state st;
        crypto_hash_sha256_init(&st);
        static uint8_t buf[65536];
        uint64_t total = 0;
        ssize_t n = -1;
        while (fd >= 0 && (n = read(fd, buf, sizeof buf)) > 0) {
            crypto_hash_sha256_update(&st, buf, (size_t)n);
            total += (uint64_t)n;
        }
        if (fd < 0 || n < 0) {
            rc = -errno;
        } else {
            uint8_t hash[crypto_hash_sha256_BYTES];
            crypto_hash_sha256_final(&st, hash);
            sodium_bin2hex(s_procs.digest, sizeof s_procs.digest, hash,
                           sizeof hash);
            s_procs.exe_size = total;
        }
        if (fd >= 0)
            close(fd);
    }
    if (rc == 0) {
        dmp__strlcpy(digest, s_procs.digest, DMP__DIGEST_HEX + 1);
        *size = s_procs.exe_size;
    }
    pthread_mutex_unlock(&s_procs.lock);
    return rc;
}

/* Ships an executable to node, in chunks, each acknowledged. */
static int
s_upload(dmp_client_t *c, const char *node, const char *path,
         const char *digest, uint64_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    uint8_t *chunk = dmp__malloc(DMP__CHUNK_MAX);
    int rc = chunk ? 0 : -ENOMEM;
    uint64_t offset = 0;
    while (rc == 0 && offset < size) {
        ssize_t n = pread(fd, chunk, DMP__CHUNK_MAX, (off_t)offset);
        if (n <= 0) {
            rc = n < 0 ? -errno : -EIO; /* the file changed under us */
            break;
        }
        dmp__msg_t req = {.kind = DMP__MSG_UPLOAD}, rep;
        dmp__strlcpy(req.u.upload.digest, digest, sizeof req.u.upload.digest);
        req.u.upload.size = size;
        req.u.upload.offset = offset;
        req.u.upload.data = chunk;
        req.u.upload.len = (size_t)n;
        rc = dmp__client_request(c, node, &req, &rep, DMP__MSG_OK, 0);
        dmp__msg_clear(&rep);
        offset += (uint64_t)n;
    }
    dmp__free(chunk);
    close(fd);
    return rc;
}

/* Resolves the placement to a node name ("" = the agent's own node). */
static int
s_place(dmp_client_t *c, const char *place, char *node, size_t size)
{
    node[0] = '\0';
    if (!place[0] || strcmp(place, "local") == 0)
        return 0;
    if (strcmp(place, "spread") != 0) {
        dmp__strlcpy(node, place, size);
        return 0;
    }
    dmp_node_info_t *nodes;
    size_t n;
    int rc = dmp_client_nodes(c, &nodes, &n);
    if (rc)
        return rc;
    size_t alive = 0;
    for (size_t i = 0; i < n; i++)
        alive += nodes[i].state == DMP_NODE_ALIVE;
    if (alive) {
        pthread_mutex_lock(&s_procs.lock);
        size_t pick = s_procs.spread_next++ % alive;
        pthread_mutex_unlock(&s_procs.lock);
        /* The answering node lists itself first and the others in a
         * stable order, so round robin visits each in turn. */
        for (size_t i = 0; i < n; i++)
            if (nodes[i].state == DMP_NODE_ALIVE && pick-- == 0) {
                dmp__strlcpy(node, i == 0 ? "" : nodes[i].name, size);
                break;
            }
    }
    dmp_nodes_free(&nodes);
    return 0;
}

static int
s_spawn(dmp_client_t *c, dmp_process_t *p, const char *node, bool local,
        const char *digest, uint64_t size, dmp__msg_t *rep)
{
    dmp__msg_t req = {.kind = DMP__MSG_SPAWN_REQUEST};
    dmp__strlcpy(req.u.spawn_request.name, p->name, DMP__NAME_MAX);
    dmp__strlcpy(req.u.spawn_request.target, p->target, DMP__NAME_MAX);
    if (p->argv) {
        for (req.u.spawn_request.argc = 0; p->argv[req.u.spawn_request.argc];
             req.u.spawn_request.argc++)
            ;
        req.u.spawn_request.argv = p->argv;
        local = false; /* a command is never this program's executable */
    }
    req.u.spawn_request.args = p->args;
    req.u.spawn_request.args_len = p->args_len;
    dmp__strlcpy(req.u.spawn_request.digest, digest, DMP__DIGEST_HEX + 1);
    req.u.spawn_request.exe_size = size;
    req.u.spawn_request.parent_pid = local ? (uint32_t)getpid() : 0;
    req.u.spawn_request.daemon = p->daemon;
    /* This library's programs serve as their own fork server (only an
     * executable that says so is ever started in that mode). */
    req.u.spawn_request.zygote = !p->argv;
    return dmp__client_request(c, node, &req, rep, DMP__MSG_SPAWN_REPLY, 0);
}

int
dmp_process_start(dmp_process_t *p)
{
    if (p->started)
        return -EINVAL;
    int rc = dmp__init_lazy();
    if (rc)
        return rc;
    dmp_client_t *c = dmp_default_client();
    pthread_mutex_lock(&s_procs.lock);
    s_cond_init_locked();
    bool hook = s_procs.hooked != c;
    s_procs.hooked = c;
    pthread_mutex_unlock(&s_procs.lock);
    if (hook)
        dmp__client_on_event(c, s_on_event, NULL);

    char node[DMP__NAME_MAX];
    rc = s_place(c, p->place, node, sizeof node);
    if (rc)
        return rc;
    /* On our own host the agent runs our executable straight from
     * /proc/PID/exe: no digest needed. Elsewhere, by digest. */
    bool local = dmp__client_is_local(c) && !p->argv &&
                 (!node[0] || strcmp(node, dmp_client_node(c)) == 0);
    char digest[DMP__DIGEST_HEX + 1] = "";
    uint64_t size = 0;
    const char *exe = p->argv ? p->exe : "/proc/self/exe";
    if (p->argv && exe[0])
        rc = s_file_digest(exe, digest, &size);
    else if (!p->argv && !local)
        rc = s_self_digest(digest, &size);
    if (rc)
        return rc;
    dmp__msg_t rep;
    rc = s_spawn(c, p, node, local, digest, size, &rep);
    if (rc == DMP_EBINARY && exe[0]) {
        if (!digest[0] && (rc = s_self_digest(digest, &size)) != 0)
            return rc;
        rc = s_upload(c, node, exe, digest, size);
        if (rc == 0)
            rc = s_spawn(c, p, node, local, digest, size, &rep);
    }
    if (rc)
        return rc;
    if (p->args_len) {
        /* Like a forked Python child, which holds its pipe ends from the
         * start: hold them in its name until it attaches. */
        dmp_value_t *args;
        if (dmp_value_decode(p->args, p->args_len, &args) == 0) {
            dmp__pipe_hold_for_child(args, rep.u.spawn_reply.node,
                                     (pid_t)rep.u.spawn_reply.pid);
            /* And its Values and Arrays, so that ours may go at once. */
            dmp__shared_hold_for_child(args, rep.u.spawn_reply.node,
                                       (pid_t)rep.u.spawn_reply.pid);
            dmp_value_destroy(&args);
        }
    }
    pthread_mutex_lock(&s_procs.lock);
    p->started = true;
    dmp__strlcpy(p->node, rep.u.spawn_reply.node, sizeof p->node);
    p->proc = rep.u.spawn_reply.proc;
    p->pid = rep.u.spawn_reply.pid;
    p->next = s_procs.list;
    s_procs.list = p;
    for (size_t i = 0; i < s_procs.n_parked; i++) {
        s_parked_t *k = &s_procs.parked[i];
        if (k->proc == p->proc && strcmp(k->node, p->node) == 0) {
            p->exited = true;
            p->exitcode = k->exitcode;
            p->error = k->error;
            *k = s_procs.parked[--s_procs.n_parked];
            break;
        }
    }
    pthread_mutex_unlock(&s_procs.lock);
    dmp__msg_clear(&rep);
    return 0;
}

int
dmp_process_join(dmp_process_t *p, double timeout)
{
    if (!p->started)
        return -EINVAL;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    long ms = dmp__timeout_ms(timeout);
    if (ms > 0) {
        until.tv_sec += ms / 1000;
        until.tv_nsec += (ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&s_procs.lock);
    while (!p->exited && ms != 0) {
        int w = ms < 0 ? pthread_cond_wait(&s_procs.cond, &s_procs.lock)
                       : pthread_cond_timedwait(&s_procs.cond, &s_procs.lock,
                                                &until);
        if (w == ETIMEDOUT)
            break;
    }
    int rc = !p->exited ? -ETIMEDOUT : p->error ? p->error : 0;
    pthread_mutex_unlock(&s_procs.lock);
    return rc;
}

int
dmp_process_is_alive(dmp_process_t *p)
{
    pthread_mutex_lock(&s_procs.lock);
    int alive = p->started && !p->exited;
    pthread_mutex_unlock(&s_procs.lock);
    return alive;
}

int
dmp_process_exitcode(dmp_process_t *p, int *code)
{
    pthread_mutex_lock(&s_procs.lock);
    int rc = !p->started || !p->exited ? -EAGAIN : p->error;
    if (rc == 0)
        *code = p->exitcode;
    pthread_mutex_unlock(&s_procs.lock);
    return rc;
}

static int
s_signal(dmp_process_t *p, int signo)
{
    if (!p->started)
        return -EINVAL;
    if (!dmp_process_is_alive(p))
        return 0;
    dmp_client_t *c = dmp_default_client();
    if (!c)
        return -EBADF;
    dmp__msg_t req = {.kind = DMP__MSG_PROC_SIGNAL}, rep;
    req.u.proc_signal.proc = p->proc;
    req.u.proc_signal.signo = (uint32_t)signo;
    /* Our own agent's node is addressed as itself: no forwarding. */
    const char *node =
        strcmp(p->node, dmp_client_node(c)) == 0 ? NULL : p->node;
    int rc = dmp__client_request(c, node, &req, &rep, DMP__MSG_OK, 0);
    dmp__msg_clear(&rep);
    return rc;
}

int
dmp_process_terminate(dmp_process_t *p)
{
    return s_signal(p, SIGTERM);
}

int
dmp_process_kill(dmp_process_t *p)
{
    return s_signal(p, SIGKILL);
}

int
dmp_process_pid(const dmp_process_t *p)
{
    return (int)p->pid;
}

const char *
dmp_process_name(const dmp_process_t *p)
{
    return p->name;
}

const char *
dmp_process_node(const dmp_process_t *p)
{
    return p->node;
}

void
dmp_process_destroy(dmp_process_t **proc_p)
{
    if (!proc_p || !*proc_p)
        return;
    dmp_process_t *p = *proc_p;
    pthread_mutex_lock(&s_procs.lock);
    for (dmp_process_t **pp = &s_procs.list; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    pthread_mutex_unlock(&s_procs.lock);
    for (size_t i = 0; p->argv && p->argv[i]; i++)
        dmp__free(p->argv[i]);
    dmp__free(p->argv);
    dmp__free(p->args);
    dmp__free(p);
    *proc_p = NULL;
}

void
dmp__process_atexit(void)
{
    /* Snapshot under the lock; signalling and joining take it again. */
    dmp_process_t *todo[256];
    size_t n = 0;
    pthread_mutex_lock(&s_procs.lock);
    for (dmp_process_t *p = s_procs.list; p && n < 256; p = p->next)
        if (!p->exited)
            todo[n++] = p;
    pthread_mutex_unlock(&s_procs.lock);
    for (size_t i = 0; i < n; i++)
        if (todo[i]->daemon)
            dmp_process_terminate(todo[i]);
    for (size_t i = 0; i < n; i++)
        dmp_process_join(todo[i], DMP_FOREVER);
    /* The client goes away now: a later client (another dmp_init) may get
     * the same address and must be hooked again. */
    pthread_mutex_lock(&s_procs.lock);
    s_procs.hooked = NULL;
    pthread_mutex_unlock(&s_procs.lock);
}
