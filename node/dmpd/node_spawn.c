/*
 * node_spawn.c - the processes this agent starts, watches and reaps.
 *
 * A child is started by node_jail_spawn (fork and exec at once: nothing
 * of ours runs in a copy of a process that holds a ZeroMQ context; the
 * job's rlimits, no-new-privileges and user set in between), every fd but
 * 0/1/2 and its spawn record (fd 3) closed, signals reset, the
 * environment built from an allow-list, argv passed literally (no shell).
 * The executable is the parent's own (/proc/PID/exe) when the parent runs
 * on this host, else a verified file of the binary cache, found by digest.
 *
 * Output: when the parent is on this host and its stdout/stderr is a
 * terminal or a pipe, the child writes to it directly (same order, no
 * copy); otherwise (a file, a socket, another host) the child writes into a
 * pipe that this agent relays as ProcOutput events. A child's exit is seen
 * on its pidfd; its pipes are drained before the ProcExit event is sent, so
 * the parent has all output before join() returns. Ended processes are kept
 * a while for `dmp ps`.
 */
#define _GNU_SOURCE
#include "node.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#define KEEP_ENDED 64        /* ended processes remembered for `dmp ps` */
#define READ_CHUNK 65536

/* What a child may inherit from the agent's environment. */
/* DMP_DIRECT: an agent started with DMP_DIRECT=0 keeps its jobs off
 * direct links (dmp_direct.c). */
static const char *const s_env_allow[] = {"PATH", "HOME", "USER", "LOGNAME",
                                          "LANG", "LC_ALL", "LC_CTYPE",
                                          "TZ", "TERM", "TMPDIR",
                                          "DMP_DIRECT", NULL};

int
node_send_to(const node_sub_t *sub, const dmp__msg_t *msg)
{
    if (!sub->sock)
        return -ENOTCONN;
    return dmp__sock_send(sub->sock, sub->rid, sub->rid_len, msg,
                          ZMQ_DONTWAIT);
}

unsigned
node_spawn_running(node_t *node)
{
    unsigned n = 0;
    for (node_proc_t *p = node->procs; p; p = p->next)
        n += p->running;
    return n;
}

static node_proc_t *
s_find(node_t *node, uint64_t id)
{
    for (node_proc_t *p = node->procs; p; p = p->next)
        if (p->id == id)
            return p;
    return NULL;
}

/* Opens the parent's fd N for the child when that is safe: a terminal or
 * a pipe. A regular file would get a second offset and overwrite the
 * parent's output; a socket cannot be reopened. -1: relay instead. */
static int
s_parent_fd(uint32_t parent_pid, int n)
{
    if (!parent_pid)
        return -1;
    char path[64];
    snprintf(path, sizeof path, "/proc/%u/fd/%d", parent_pid, n);
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || !(S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode))) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The spawn record the child reads from fd 3: the request itself. */
static int
s_spawn_record(node_t *node, const dmp__msg_t *req, uint64_t id)
{
    dmp__msg_t rec = *req;
    rec.id = id;
    dmp__strlcpy(rec.node, node->cfg.name, sizeof rec.node);
    uint8_t *buf;
    size_t len;
    int rc = dmp__wire_encode(&rec, &buf, &len);
    if (rc)
        return rc;
    int fd = memfd_create("dmp-spawn", MFD_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
    } else if (write(fd, buf, len) != (ssize_t)len ||
               lseek(fd, 0, SEEK_SET) != 0) {
        rc = -EIO;
        close(fd);
        fd = -1;
    }
    dmp__free(buf);
    return fd >= 0 ? fd : rc;
}

/* The executable for req, or an error for the reply. */
static int
s_exe_path(node_t *node, const dmp__msg_t *req, bool local, char *path,
           size_t size)
{
    const char *digest = req->u.spawn_request.digest;
    if (local && req->u.spawn_request.parent_pid && !req->u.spawn_request.argc) {
        snprintf(path, size, "/proc/%u/exe", req->u.spawn_request.parent_pid);
        if (access(path, X_OK) == 0)
            return 0;
    }
    if (digest[0]) {
        int rc = node_cache_lookup(node->cache, digest, path, size);
        if (rc == 0) /* executable by job_user's group (0500 otherwise) */
            node_jail_share(path, 0550, false);
        return rc == -ENOENT ? DMP_EBINARY : rc;
    }
    if (req->u.spawn_request.argc) { /* a command from the node's PATH */
        dmp__strlcpy(path, req->u.spawn_request.argv[0], size);
        return 0;
    }
    return DMP_EBINARY;
}

char **
node_spawn_env(node_t *node, uint64_t id, const char *proc_name,
               const char *mode)
{
    extern char **environ;
    size_t n = 0;
    char **env = dmp__calloc(32, sizeof *env);
    if (!env)
        return NULL;
    char buf[PATH_MAX + 32];
    for (char **e = environ; *e && n < 20; e++)
        for (const char *const *a = s_env_allow; *a; a++) {
            size_t len = strlen(*a);
            if (strncmp(*e, *a, len) != 0 || (*e)[len] != '=')
                continue;
            /* A job of job_user gets that user's HOME, USER, LOGNAME. */
            const char *own = node_jail_env(*a);
            if (own)
                snprintf(buf, sizeof buf, "%s=%s", *a, own);
            env[n++] = dmp__strdup(own ? buf : *e);
        }
    if (!proc_name && node_jail_cpu_limit() >= 0) {
        /* A zygote runs without job_rlimit_cpu and sets it in each child. */
        snprintf(buf, sizeof buf, "DMP_RLIMIT_CPU=%lld",
                 node_jail_cpu_limit());
        env[n++] = dmp__strdup(buf);
    }
    snprintf(buf, sizeof buf, "DMP_AGENT=%s", node->ipc_endpoint);
    env[n++] = dmp__strdup(buf);
    snprintf(buf, sizeof buf, "DMP_NODE=%s", node->cfg.name);
    env[n++] = dmp__strdup(buf);
    if (proc_name) {
        snprintf(buf, sizeof buf, "DMP_PROC=%llu", (unsigned long long)id);
        env[n++] = dmp__strdup(buf);
        snprintf(buf, sizeof buf, "DMP_PROCESS_NAME=%s", proc_name);
        env[n++] = dmp__strdup(buf);
    }
    env[n++] = dmp__strdup(mode);
    for (size_t i = 0; i < n; i++)
        if (!env[i]) {
            for (size_t j = 0; j < n; j++)
                dmp__free(env[j]);
            dmp__free(env);
            return NULL;
        }
    return env;
}

void
node_spawn_env_free(char **env)
{
    for (size_t i = 0; env && env[i]; i++)
        dmp__free(env[i]);
    dmp__free(env);
}

/* RUNTIME_DIR/children lists our running children ("pid starttime" a
 * line), so that an agent restarted after a SIGKILL can stop the orphans
 * of its predecessor (FAULTS: orphans reaped or killed). */
static void
s_record_children(node_t *node)
{
    char path[PATH_MAX], tmp[PATH_MAX + 8];
    snprintf(path, sizeof path, "%s/children", node->cfg.runtime_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "we");
    if (!f)
        return;
    for (node_proc_t *p = node->procs; p; p = p->next)
        if (p->running)
            fprintf(f, "%d %llu\n", (int)p->pid,
                    (unsigned long long)dmp__proc_starttime(p->pid));
    if (fclose(f) == 0)
        rename(tmp, path);
}

void
node_spawn_kill_orphans(node_t *node)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/children", node->cfg.runtime_dir);
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    int pid;
    unsigned long long start;
    unsigned killed = 0;
    while (fscanf(f, "%d %llu", &pid, &start) == 2) {
        if (pid <= 1)
            continue;
        int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (pidfd < 0)
            continue;
        /* Checked after opening the pidfd: a match means the pidfd is that
         * very child, however pids are reused later. */
        if (start && dmp__proc_starttime(pid) == start &&
            syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0) == 0)
            killed++;
        close(pidfd);
    }
    fclose(f);
    unlink(path);
    if (killed)
        warn_f("killed %u processes a previous agent left running", killed);
}

/* Forgets the oldest ended processes beyond KEEP_ENDED. */
static void
s_trim(node_t *node)
{
    unsigned ended = 0;
    for (node_proc_t **pp = &node->procs; *pp;) {
        node_proc_t *p = *pp;
        if (!p->running && p->pidfd < 0 && ++ended > KEEP_ENDED) {
            *pp = p->next;
            dmp__free(p);
            continue;
        }
        pp = &p->next;
    }
}

void
node_spawn_start(node_t *node, const dmp__msg_t *req, bool local,
                 const node_sub_t *sub, dmp__msg_t *rep)
{
    const char *name = req->u.spawn_request.name;
    char exe[PATH_MAX];
    int rc = s_exe_path(node, req, local, exe, sizeof exe);
    if (rc) {
        if (rc == DMP_EBINARY)
            dmp__msg_error(rep, req->id, rc, "node '%s' needs executable "
                           "%.12s", node->cfg.name,
                           req->u.spawn_request.digest);
        else
            dmp__msg_error(rep, req->id, rc, "cannot find the executable: "
                           "%s", dmp_strerror(rc));
        return;
    }
    node_proc_t *p = dmp__calloc(1, sizeof *p);
    char **env = NULL;
    int rec_fd = -1, out[2] = {-1, -1}, err[2] = {-1, -1};
    int direct_out = -1, direct_err = -1;
    if (!p) {
        dmp__msg_error(rep, req->id, -ENOMEM, "out of memory");
        return;
    }
    p->id = ++node->next_proc;
    p->pidfd = p->out_fd = p->err_fd = -1;
    dmp__strlcpy(p->name, name, sizeof p->name);
    dmp__strlcpy(p->target,
                 req->u.spawn_request.argc ? "-" : req->u.spawn_request.target,
                 sizeof p->target);
    p->sub = *sub;
    uint32_t ppid = local ? req->u.spawn_request.parent_pid : 0;
    direct_out = s_parent_fd(ppid, 1);
    direct_err = s_parent_fd(ppid, 2);
    if ((direct_out < 0 && pipe2(out, O_CLOEXEC) != 0) ||
        (direct_err < 0 && pipe2(err, O_CLOEXEC) != 0)) {
        rc = -errno;
        goto fail;
    }
    int out_w = direct_out >= 0 ? direct_out : out[1];
    int err_w = direct_err >= 0 ? direct_err : err[1];
    bool zygote = false;
    if (req->u.spawn_request.zygote && !req->u.spawn_request.argc) {
        /* A target: fork it from the program's zygote, a fraction of an
         * exec; fall back to exec if the zygote cannot. */
        dmp__msg_t rec = *req;
        rec.id = p->id;
        dmp__strlcpy(rec.node, node->cfg.name, sizeof rec.node);
        uint8_t *buf;
        size_t len;
        if (dmp__wire_encode(&rec, &buf, &len) == 0) {
            zygote = node_zygote_spawn(node, exe, buf, len, out_w, err_w,
                                       &p->pid) == 0;
            dmp__free(buf);
        }
    }
    if (zygote)
        goto started;
    /* A target reads its spawn record from fd 3; a command gets neither
     * the record nor DMP_CHILD (it may itself be a dmp program). */
    bool command = req->u.spawn_request.argc != 0;
    rec_fd = command ? -1 : s_spawn_record(node, req, p->id);
    env = node_spawn_env(node, p->id, name,
                         command ? "DMP_COMMAND=1" : "DMP_CHILD=3");
    if ((!command && rec_fd < 0) || !env) {
        rc = rec_fd < 0 ? rec_fd : -ENOMEM;
        goto fail;
    }

    /* fds: 0 /dev/null, 1 and 2 the output, 3 the record (targets). Only
     * these reach the child, whatever the agent was started with. */
    char *target_argv[] = {exe, NULL};
    char **argv = req->u.spawn_request.argc ? req->u.spawn_request.argv
                                            : target_argv;
    char *argv0_saved = argv[0];
    if (req->u.spawn_request.argc && req->u.spawn_request.digest[0])
        argv[0] = exe; /* a shipped command runs from the cache */
    int fds[4] = {-1, out_w, err_w, rec_fd};
    node_jail_spawn_t js = {
        .exe = exe, .argv = argv, .env = env, .fds = fds,
        .n_fds = rec_fd >= 0 ? 4 : 3,
        .search_path = command && !req->u.spawn_request.digest[0],
        .new_group = true,
    };
    rc = node_jail_spawn(&js, &p->pid);
    argv[0] = argv0_saved;
    if (rc)
        goto fail;
started:
    p->pidfd = (int)syscall(SYS_pidfd_open, p->pid, 0);
    if (p->pidfd < 0) { /* cannot watch it: do not leave it unwatched */
        rc = -errno;
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
        goto fail;
    }
    p->running = true;
    p->started = dmp__now();
    p->out_fd = out[0];
    p->err_fd = err[0];
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    fcntl(err[0], F_SETFL, O_NONBLOCK);
    if (out[1] >= 0)
        close(out[1]);
    if (err[1] >= 0)
        close(err[1]);
    if (direct_out >= 0)
        close(direct_out);
    if (direct_err >= 0)
        close(direct_err);
    if (rec_fd >= 0)
        close(rec_fd);
    node_spawn_env_free(env);
    p->next = node->procs;
    node->procs = p;
    s_trim(node);
    s_record_children(node);
    info_f("started '%s' pid=%d proc=%llu target=%s output=%s via=%s",
           p->name, (int)p->pid, (unsigned long long)p->id, p->target,
           p->out_fd < 0 ? "direct" : "relayed", zygote ? "zygote" : "exec");
    memset(rep, 0, sizeof *rep);
    rep->id = req->id;
    rep->version = DMP_PROTOCOL_VERSION;
    rep->kind = DMP__MSG_SPAWN_REPLY;
    rep->u.spawn_reply.proc = p->id;
    rep->u.spawn_reply.pid = (uint32_t)p->pid;
    dmp__strlcpy(rep->u.spawn_reply.node, node->cfg.name, DMP__NAME_MAX);
    return;
fail:
    warn_f("cannot start '%s' from '%s': %s", name, exe, dmp_strerror(rc));
    dmp__msg_error(rep, req->id, rc, "cannot start '%s' on node '%s': %s",
                   name, node->cfg.name, dmp_strerror(rc));
    for (int i = 0; i < 2; i++) {
        if (out[i] >= 0)
            close(out[i]);
        if (err[i] >= 0)
            close(err[i]);
    }
    if (direct_out >= 0)
        close(direct_out);
    if (direct_err >= 0)
        close(direct_err);
    if (rec_fd >= 0)
        close(rec_fd);
    node_spawn_env_free(env);
    dmp__free(p);
}

size_t
node_spawn_poll_items(node_t *node, void *items_v, size_t max)
{
    zmq_pollitem_t *items = items_v;
    size_t n = 0;
    for (node_proc_t *p = node->procs; p; p = p->next) {
        int fds[3] = {p->pidfd, p->out_fd, p->err_fd};
        for (int i = 0; i < 3; i++)
            if (fds[i] >= 0 && n < max)
                items[n++] = (zmq_pollitem_t){NULL, fds[i], ZMQ_POLLIN, 0};
    }
    return n;
}

/* Relays what a pipe holds; closes it at EOF. `all`: until EOF or empty. */
static void
s_relay(node_t *node, node_proc_t *p, int *fd, uint32_t stream)
{
    static uint8_t buf[READ_CHUNK];
    for (;;) {
        ssize_t n = read(*fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0 || errno != EAGAIN) {
                close(*fd);
                *fd = -1;
            }
            return;
        }
        dmp__msg_t ev = {.kind = DMP__MSG_PROC_OUTPUT};
        ev.version = DMP_PROTOCOL_VERSION;
        dmp__strlcpy(ev.u.proc_output.node, node->cfg.name, DMP__NAME_MAX);
        ev.u.proc_output.proc = p->id;
        ev.u.proc_output.stream = stream;
        ev.u.proc_output.data = buf;
        ev.u.proc_output.len = (size_t)n;
        node_send_to(&p->sub, &ev); /* borrowed data: no msg_clear */
    }
}

static void
s_reap(node_t *node, node_proc_t *p)
{
    int status;
    pid_t r = waitpid(p->pid, &status, WNOHANG);
    if (r != p->pid)
        return;
    /* Everything it wrote reaches the parent before its exit does. A
     * grandchild holding the pipe open must not stall us: take what is
     * there now. */
    if (p->out_fd >= 0)
        s_relay(node, p, &p->out_fd, 1);
    if (p->err_fd >= 0)
        s_relay(node, p, &p->err_fd, 2);
    for (int *fd = &p->out_fd; fd <= &p->err_fd; fd++)
        if (*fd >= 0) {
            close(*fd);
            *fd = -1;
        }
    close(p->pidfd);
    p->pidfd = -1;
    p->running = false;
    p->ended = dmp__now();
    p->exitcode = WIFEXITED(status)     ? WEXITSTATUS(status)
                  : WIFSIGNALED(status) ? -WTERMSIG(status)
                                        : 255;
    info_f("'%s' pid=%d exited exitcode=%d", p->name, (int)p->pid,
           p->exitcode);
    s_record_children(node);
    dmp__msg_t ev = {.kind = DMP__MSG_PROC_EXIT};
    ev.version = DMP_PROTOCOL_VERSION;
    dmp__strlcpy(ev.u.proc_exit.node, node->cfg.name, DMP__NAME_MAX);
    ev.u.proc_exit.proc = p->id;
    ev.u.proc_exit.exitcode = p->exitcode;
    node_send_to(&p->sub, &ev);
}

void
node_spawn_on_fd(node_t *node, int fd)
{
    for (node_proc_t *p = node->procs; p; p = p->next) {
        if (fd == p->out_fd)
            s_relay(node, p, &p->out_fd, 1);
        else if (fd == p->err_fd)
            s_relay(node, p, &p->err_fd, 2);
        else if (fd == p->pidfd)
            s_reap(node, p);
        else
            continue;
        return;
    }
}

int
node_spawn_signal(node_t *node, uint64_t proc, int signo)
{
    node_proc_t *p = s_find(node, proc);
    if (!p)
        return -ESRCH;
    if (!p->running || p->pidfd < 0)
        return 0; /* already exited: as Python, not an error */
    if (syscall(SYS_pidfd_send_signal, p->pidfd, signo, NULL, 0) != 0)
        return errno == ESRCH ? 0 : -errno;
    return 0;
}

int
node_spawn_list(node_t *node, dmp__proc_info_t **procs_p, size_t *n_p)
{
    size_t n = 0;
    for (node_proc_t *p = node->procs; p; p = p->next)
        n++;
    dmp__proc_info_t *procs = dmp__calloc(n ? n : 1, sizeof *procs);
    if (!procs)
        return -ENOMEM;
    double now = dmp__now();
    size_t i = 0;
    for (node_proc_t *p = node->procs; p; p = p->next, i++) {
        dmp__strlcpy(procs[i].node, node->cfg.name, DMP__NAME_MAX);
        procs[i].proc = p->id;
        procs[i].pid = (uint32_t)p->pid;
        dmp__strlcpy(procs[i].name, p->name, DMP__NAME_MAX);
        dmp__strlcpy(procs[i].target, p->target, DMP__NAME_MAX);
        procs[i].running = p->running;
        procs[i].exitcode = p->exitcode;
        procs[i].runtime_ms =
            (uint64_t)(((p->running ? now : p->ended) - p->started) * 1000);
    }
    *procs_p = procs;
    *n_p = n;
    return 0;
}

void
node_spawn_close(node_t *node)
{
    unsigned running = 0;
    for (node_proc_t *p = node->procs; p; p = p->next)
        if (p->running && p->pidfd >= 0) {
            syscall(SYS_pidfd_send_signal, p->pidfd, SIGTERM, NULL, 0);
            running++;
        }
    if (running)
        info_f("terminating %u processes", running);
    double deadline = dmp__now() + 2.0;
    for (node_proc_t *p = node->procs; p; p = p->next) {
        if (p->running && p->pidfd >= 0) {
            zmq_pollitem_t item = {NULL, p->pidfd, ZMQ_POLLIN, 0};
            double left = deadline - dmp__now();
            if (zmq_poll(&item, 1, dmp__timeout_ms(left)) <= 0)
                syscall(SYS_pidfd_send_signal, p->pidfd, SIGKILL, NULL, 0);
            waitpid(p->pid, NULL, 0);
        }
    }
    while (node->procs) {
        node_proc_t *p = node->procs;
        node->procs = p->next;
        if (p->pidfd >= 0)
            close(p->pidfd);
        if (p->out_fd >= 0)
            close(p->out_fd);
        if (p->err_fd >= 0)
            close(p->err_fd);
        dmp__free(p);
    }
}
