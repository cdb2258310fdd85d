/*
 * cli_map.c - `dmp map`: a pool map from the shell, over the cluster.
 *
 *   dmp map [options] MODULE.so:FUNC [ITEM ...]    a C function
 *   dmp map [options] -- CMD [ARG ...]             a command per item
 *
 * Items come from the arguments (after ':::' in command mode) or one per
 * line from stdin; results go to stdout one per line, in input order, as
 * they complete (the pool's imap). The pool's workers are this very
 * executable, started on the nodes as dmp children: the CLI registers the
 * tasks and initializers they run (below) like any dmp program.
 *
 * Module mode: the shared object is read here and sent to each worker in
 * its initializer's arguments, then written to a memfd there and loaded
 * with dlopen (so nothing is left on the nodes' disks). It is not put in
 * an agent's binary cache: that cache holds executables an agent runs for
 * a digest, and a worker has no way to read a file out of it. One copy per
 * worker, in its start request: a module must fit in one frame (MODULE_MAX).
 * FUNC has the task signature of dmp.h; the dmp functions it calls resolve
 * to this executable's (linked with -rdynamic).
 *
 * Command mode: every "{}" in CMD's arguments is replaced by the item (the
 * item is appended when there is none), and the worker runs it with
 * posix_spawn: no shell, and never a fork of a process that holds a
 * ZeroMQ context. It is spawned through this executable in a small exec
 * mode (cli_map_exec) that asks the kernel to kill it when the worker
 * dies (PR_SET_PDEATHSIG) and then execs CMD: a worker killed (terminate,
 * a task timeout, a lost node) leaves no command behind. Its stdout, one
 * trailing newline removed, is the result; a non-zero exit fails the
 * item. Its stderr goes where the worker's does.
 *
 * On a terminal a progress bar (done/total, rate, ETA, failures) is drawn
 * on stderr; a summary follows at the end. Exit status: 0 when every item
 * succeeded, 1 when some failed (they are listed), else as cli.h says.
 */
#define _GNU_SOURCE
#include "cli.h"

#include <dlfcn.h>
#include <sys/prctl.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define MODULE_MAX (DMP__WIRE_MAX - 64 * 1024) /* in one start request */
#define FAILED_SHOWN 20    /* failures listed at the end, at most */
#define BAR_EVERY 0.1      /* seconds between progress redraws */
#define OUTPUT_MAX (64u << 20) /* a command's stdout kept, at most */

static const char s_usage[] =
    "usage: dmp map [options] MODULE.so:FUNC [ITEM ...]\n"
    "       dmp map [options] -- CMD [ARG ...] [::: ITEM ...]\n"
    "\n"
    "Runs FUNC of a shared object, or the command CMD, on every item with a\n"
    "pool of workers over the cluster, and prints one result per line in\n"
    "the order of the items. Items are the arguments given (after ':::' in\n"
    "command mode), else the lines of stdin.\n"
    "\n"
    "FUNC: int FUNC(const dmp_value_t *arg, dmp_value_t **result), see\n"
    "dmp.h; arg is the item as a str; a str result prints as it is, others\n"
    "as their repr. Build the module with cc -shared -fPIC (no -ldmp).\n"
    "CMD: each {} in its arguments becomes the item (appended if none); its\n"
    "stdout is the result; a non-zero exit fails the item. No shell.\n"
    "\n"
    "  -p, --processes N       workers (default: the cores of the nodes)\n"
    "  -n, --nodes A,B         nodes to use (default: every alive node)\n"
    "  -c, --chunksize K       items per task (default 1)\n"
    "  -r, --retries R         runs of an item after it crashed its worker\n"
    "                          (default 3)\n"
    "  -t, --task-timeout SEC  an item running longer has its worker killed\n"
    "                          and counts as a crash (default: no limit)\n"
    "  -q, --quiet             no progress bar and no summary\n" CLI_CONN_USAGE
    "\n"
    "Exit status: 0 every item succeeded, 1 some failed (listed on stderr),\n"
    "2 usage, 3 key problem, 4 node unreachable.\n";

/* ---- in the workers --------------------------------------------------- */

static dmp_task_fn s_module_fn;
static char **s_cmd;       /* the command template, NULL-terminated */
static size_t s_cmd_n;

/* args [module bytes, function name]: loads the module from a memfd. */
DMP_TARGET(dmp_map_load)
{
    size_t len = 0;
    const void *so = dmp_value_bytes(dmp_list_get(args, 0), &len);
    const char *fn = dmp_value_str(dmp_list_get(args, 1), NULL);
    if (!so || !fn)
        return 3;
    int fd = memfd_create("dmp-map-module", MFD_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "dmp map: memfd_create: %s\n", strerror(errno));
        return 4;
    }
    for (size_t off = 0; off < len;) {
        ssize_t n = write(fd, (const char *)so + off, len - off);
        if (n <= 0 && errno != EINTR) {
            fprintf(stderr, "dmp map: cannot write the module: %s\n",
                    strerror(errno));
            close(fd);
            return 4;
        }
        off += n > 0 ? (size_t)n : 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    close(fd);
    if (!h) {
        fprintf(stderr, "dmp map: cannot load the module: %s\n", dlerror());
        return 5;
    }
    s_module_fn = (dmp_task_fn)(uintptr_t)dlsym(h, fn);
    if (!s_module_fn) {
        fprintf(stderr, "dmp map: no function '%s' in the module\n", fn);
        return 6;
    }
    return 0;
}

DMP_TASK(dmp_map_call)
{
    return s_module_fn(arg, result);
}

/* args: the command's argv, as strs. */
DMP_TARGET(dmp_map_cmd_setup)
{
    s_cmd_n = dmp_value_len(args);
    s_cmd = calloc(s_cmd_n + 1, sizeof *s_cmd);
    if (!s_cmd || s_cmd_n == 0)
        return 3;
    for (size_t i = 0; i < s_cmd_n; i++) {
        const char *a = dmp_value_str(dmp_list_get(args, (int64_t)i), NULL);
        if (!a || !(s_cmd[i] = strdup(a)))
            return 3;
    }
    return 0;
}

/* s with every "{}" replaced by item; NULL when out of memory. */
static char *
s_subst(const char *s, const char *item, bool *used)
{
    size_t n = 0, il = strlen(item);
    for (const char *p = s; (p = strstr(p, "{}")); p += 2)
        n++;
    *used |= n > 0;
    char *out = malloc(strlen(s) + n * il + 1), *o = out;
    if (!out)
        return NULL;
    for (const char *p = s;;) {
        const char *q = strstr(p, "{}");
        size_t k = q ? (size_t)(q - p) : strlen(p);
        memcpy(o, p, k);
        o += k;
        if (!q)
            break;
        memcpy(o, item, il);
        o += il;
        p = q + 2;
    }
    *o = '\0';
    return out;
}

static void
s_free_argv(char **argv)
{
    for (size_t i = 0; argv && argv[i]; i++)
        free(argv[i]);
    free(argv);
}

/* Whether argv0 names something we can exec: a path, or a name found in
 * $PATH (so that a missing command is reported as such, not as the exec
 * helper's status 127). */
static bool
s_runnable(const char *argv0)
{
    if (strchr(argv0, '/'))
        return access(argv0, X_OK) == 0;
    const char *path = getenv("PATH");
    for (const char *p = path ? path : "/usr/bin:/bin"; *p;) {
        size_t l = strcspn(p, ":");
        char full[PATH_MAX];
        if (snprintf(full, sizeof full, "%.*s/%s", (int)(l ? l : 1),
                     l ? p : ".", argv0) < (int)sizeof full &&
            access(full, X_OK) == 0)
            return true;
        p += l + (p[l] == ':');
    }
    return false;
}

/* `dmp --map-exec PPID CMD ARG...`: the kernel kills us (and so CMD, which
 * replaces us) when our parent, the worker, dies; if it died already,
 * nothing runs. Called first thing in main, before any dmp state. */
int
cli_map_exec(int argc, char **argv)
{
    if (argc < 4)
        return 127;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if ((long)getppid() != atol(argv[2]))
        _exit(127); /* the worker is gone */
    execvp(argv[3], argv + 3);
    fprintf(stderr, "dmp map: cannot run '%s': %s\n", argv[3],
            strerror(errno));
    _exit(127);
}

/* Runs the command for one item; its stdout is the result. */
DMP_TASK(dmp_map_cmd)
{
    const char *item = dmp_value_str(arg, NULL);
    if (!item || !s_cmd)
        return -EINVAL;
    char **argv = calloc(s_cmd_n + 2, sizeof *argv);
    bool used = false;
    for (size_t i = 0; argv && i < s_cmd_n; i++)
        if (!(argv[i] = s_subst(s_cmd[i], item, &used))) {
            s_free_argv(argv);
            return -ENOMEM;
        }
    if (argv && !used && !(argv[s_cmd_n] = strdup(item))) {
        s_free_argv(argv);
        return -ENOMEM;
    }
    if (argv && !s_runnable(argv[0])) {
        char text[DMP__TEXT_MAX];
        snprintf(text, sizeof text, "cannot run '%s': %s", argv[0],
                 strerror(ENOENT));
        s_free_argv(argv);
        *result = dmp_str(text);
        return -ENOENT;
    }
    /* dmp --map-exec PPID argv...: the command dies with this worker */
    char ppid[24];
    snprintf(ppid, sizeof ppid, "%ld", (long)getpid());
    char **full = argv ? calloc(s_cmd_n + 5, sizeof *full) : NULL;
    int out[2];
    if (!full || pipe2(out, O_CLOEXEC) != 0) {
        free(full);
        s_free_argv(argv);
        return -ENOMEM;
    }
    full[0] = "dmp";
    full[1] = "--map-exec";
    full[2] = ppid;
    for (size_t i = 0; argv[i]; i++)
        full[3 + i] = argv[i];
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    pid_t pid;
    int err = posix_spawn(&pid, "/proc/self/exe", &fa, NULL, full, environ);
    posix_spawn_file_actions_destroy(&fa);
    free(full);
    close(out[1]);
    if (err) {
        close(out[0]);
        char text[DMP__TEXT_MAX];
        snprintf(text, sizeof text, "cannot run '%s': %s", argv[0],
                 strerror(err));
        s_free_argv(argv);
        *result = dmp_str(text);
        return -err;
    }
    dmp__buf_t b = {0};
    for (;;) {
        uint8_t *p = dmp__buf_room(&b, 65536);
        ssize_t n = p ? read(out[0], p, 65536) : -1;
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || b.len + (size_t)n > OUTPUT_MAX)
            break;
        b.len += (size_t)n;
    }
    close(out[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    int code = WIFEXITED(status) ? WEXITSTATUS(status)
                                 : WIFSIGNALED(status) ? 128 + WTERMSIG(status)
                                                       : 1;
    if (code != 0) {
        char text[DMP__TEXT_MAX];
        if (WIFSIGNALED(status))
            snprintf(text, sizeof text, "'%s' was killed by signal %d (%s)",
                     argv[0], WTERMSIG(status), strsignal(WTERMSIG(status)));
        else
            snprintf(text, sizeof text, "'%s' exited with status %d",
                     argv[0], code);
        *result = dmp_str(text);
    } else {
        size_t len = b.len;
        if (len && b.p[len - 1] == '\n')
            len--;
        const char *text = len ? (const char *)b.p : "";
        *result = dmp__utf8_valid_n(text, len) ? dmp_strn(text, len)
                                                : dmp_bytes(text, len);
        if (!*result)
            code = -ENOMEM;
    }
    dmp__buf_free(&b);
    s_free_argv(argv);
    return code;
}

/* ---- in the command --------------------------------------------------- */

static volatile sig_atomic_t s_interrupted;

static void
s_on_signal(int signo)
{
    s_interrupted = signo;
}

/* Reads a whole file (the module). Caller frees. */
static uint8_t *
s_read_file(const char *path, size_t *len_p)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    uint8_t *buf = malloc(st.st_size ? (size_t)st.st_size : 1);
    size_t got = 0;
    while (buf && got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (buf && got != (size_t)st.st_size) {
        free(buf);
        return NULL;
    }
    *len_p = got;
    return buf;
}

/* Items from stdin, one per line (without its newline). */
static int
s_read_lines(FILE *f, dmp_value_t *items)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while (rc == 0 && (n = getline(&line, &cap, f)) >= 0) {
        if (n && line[n - 1] == '\n')
            line[--n] = '\0';
        dmp_value_t *v = dmp__utf8_valid_n(line, (size_t)n)
                             ? dmp_strn(line, (size_t)n)
                             : NULL;
        rc = v ? dmp_list_append(items, v) : -EILSEQ;
    }
    free(line);
    return rc;
}

static void
s_clock(double secs, char *out, size_t size)
{
    if (secs < 0 || secs > 359999)
        snprintf(out, size, "--:--");
    else if (secs >= 3600)
        snprintf(out, size, "%d:%02d:%02d", (int)secs / 3600,
                 (int)secs / 60 % 60, (int)secs % 60);
    else
        snprintf(out, size, "%d:%02d", (int)secs / 60, (int)secs % 60);
}

/* "\r 512/10000 [====>     ]  1234/s  ETA 0:07  failed 2" */
static void
s_bar(size_t done, size_t total, size_t failed, double elapsed)
{
    char eta[16], bar[31];
    double rate = elapsed > 0 ? (double)done / elapsed : 0;
    s_clock(rate > 0 ? (double)(total - done) / rate : -1, eta, sizeof eta);
    size_t fill = total ? done * 30 / total : 30;
    for (size_t i = 0; i < 30; i++)
        bar[i] = i < fill ? '=' : i == fill ? '>' : ' ';
    bar[30] = '\0';
    fprintf(stderr, "\r%zu/%zu [%s] %.0f/s ETA %s", done, total, bar, rate,
            eta);
    if (failed)
        fprintf(stderr, " failed %zu", failed);
    fputs("\033[K", stderr);
    fflush(stderr);
}

/* Prints one result on its line: a str or bytes as they are (one trailing
 * newline dropped), another value as its repr. */
static void
s_print(const dmp_value_t *v)
{
    size_t len = 0;
    const char *s = dmp_value_str(v, &len);
    if (!s)
        s = dmp_value_bytes(v, &len);
    if (s) {
        if (len && s[len - 1] == '\n')
            len--;
        fwrite(s, 1, len, stdout);
    } else {
        char small[256];
        int n = dmp_value_repr(v, small, sizeof small);
        if (n >= (int)sizeof small) {
            char *big = malloc((size_t)n + 1);
            if (big && dmp_value_repr(v, big, (size_t)n + 1) == n)
                fwrite(big, 1, (size_t)n, stdout);
            free(big);
        } else if (n > 0) {
            fwrite(small, 1, (size_t)n, stdout);
        }
    }
    fputc('\n', stdout);
}

typedef struct {
    size_t index;
    char *text;
} s_failure_t;

int
cli_map(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_CONN_LONGOPTS,
        {"processes", required_argument, 0, 'p'},
        {"nodes", required_argument, 0, 'n'},
        {"chunksize", required_argument, 0, 'c'},
        {"retries", required_argument, 0, 'r'},
        {"task-timeout", required_argument, 0, 't'},
        {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    cli_conn_opts_t conn = {0};
    unsigned long processes = 0, chunksize = 1, retries = 3;
    const char *nodes = NULL;
    double task_timeout = 0;
    bool bad = false, quiet = false;
    int opt;
    /* '+': stop at the first non-option; '--' ends the options too */
    while ((opt = getopt_long(argc, argv, "+C:k:S:T:p:n:c:r:t:qh", longopts,
                              NULL)) != -1) {
        if (cli_conn_option(&conn, opt, optarg, &bad))
            continue;
        unsigned long *num = opt == 'p' ? &processes
                             : opt == 'c' ? &chunksize
                             : opt == 'r' ? &retries
                                          : NULL;
        switch (opt) {
        case 'p':
        case 'c':
        case 'r':
            if (dmp__parse_uint(optarg, 1000000, num) != 0 ||
                (opt != 'r' && *num == 0)) {
                cli_error("invalid --%s '%s'", opt == 'p'   ? "processes"
                                               : opt == 'c' ? "chunksize"
                                                            : "retries",
                          optarg);
                bad = true;
            }
            break;
        case 't':
            if (dmp__parse_seconds(optarg, &task_timeout) != 0 ||
                task_timeout <= 0) {
                cli_error("invalid --task-timeout '%s': positive seconds",
                          optarg);
                bad = true;
            }
            break;
        case 'n': nodes = optarg; break;
        case 'q': quiet = true; break;
        case 'h': fputs(s_usage, stdout); return CLI_OK;
        default: bad = true;
        }
    }
    bool command = optind > 1 && strcmp(argv[optind - 1], "--") == 0;
    if (bad || optind >= argc) {
        fputs(s_usage, stderr);
        return CLI_USAGE;
    }
    /* What runs, and the items. */
    int first_item = argc, cmd_end = argc;
    const char *spec = argv[optind];
    char module[PATH_MAX] = "", *func = NULL;
    if (command) {
        for (int i = optind; i < argc; i++)
            if (strcmp(argv[i], ":::") == 0) {
                cmd_end = i;
                first_item = i + 1;
                break;
            }
        if (cmd_end == optind) {
            cli_error("no command before ':::'");
            return CLI_USAGE;
        }
    } else {
        const char *colon = strrchr(spec, ':');
        if (!colon || colon == spec || !colon[1] ||
            (size_t)(colon - spec) >= sizeof module) {
            cli_error("'%s' is not MODULE.so:FUNC (for a command, put it "
                      "after --)", spec);
            return CLI_USAGE;
        }
        memcpy(module, spec, (size_t)(colon - spec));
        func = (char *)colon + 1;
        first_item = optind + 1;
    }
    dmp_value_t *items = dmp_list();
    int rc = items ? 0 : -ENOMEM;
    for (int i = first_item; rc == 0 && i < argc; i++) {
        dmp_value_t *v = dmp_str(argv[i]);
        rc = v ? dmp_list_append(items, v) : -EILSEQ;
    }
    if (rc == 0 && first_item >= argc)
        rc = s_read_lines(stdin, items);
    if (rc) {
        cli_error("cannot read the items: %s",
                  rc == -EILSEQ ? "not UTF-8 text" : dmp_strerror(rc));
        dmp_value_destroy(&items);
        return CLI_FAIL;
    }
    /* What each worker gets first: the module, or the command. */
    dmp_value_t *initargs = NULL;
    if (command) {
        initargs = dmp_list();
        for (int i = optind; initargs && i < cmd_end; i++)
            if (dmp_list_append(initargs, dmp_str(argv[i])) != 0)
                dmp_value_destroy(&initargs);
    } else {
        size_t len = 0;
        uint8_t *so = s_read_file(module, &len);
        if (!so) {
            cli_error("cannot read module '%s': %s", module, strerror(errno));
            dmp_value_destroy(&items);
            return CLI_USAGE;
        }
        if (len > MODULE_MAX) {
            cli_error("module '%s' is %zu bytes: at most %u fit in a "
                      "worker's start request", module, len, MODULE_MAX);
            free(so);
            dmp_value_destroy(&items);
            return CLI_USAGE;
        }
        /* Load it here first: a missing FUNC is a usage error, not a
         * failure of every item. */
        char path[PATH_MAX + 2];
        snprintf(path, sizeof path, "%s%s", strchr(module, '/') ? "" : "./",
                 module); /* a bare name would be searched for */
        void *h = dlopen(path, RTLD_LAZY | RTLD_LOCAL);
        if (!h || !dlsym(h, func)) {
            cli_error("no function '%s' in module '%s'%s%s", func, module,
                      h ? "" : ": ", h ? "" : dlerror());
            if (h)
                dlclose(h);
            free(so);
            dmp_value_destroy(&items);
            return CLI_USAGE;
        }
        dlclose(h);
        initargs = dmp_list_of(2, dmp_bytes(so, len), dmp_str(func));
        free(so);
    }
    if (!initargs) {
        cli_error("out of memory");
        dmp_value_destroy(&items);
        return CLI_FAIL;
    }
    double t0 = dmp__now(); /* the summary counts the workers' start */
    dmp_client_t *client;
    int status = cli_connect(&conn, &client);
    if (status) {
        dmp_value_destroy(&items);
        dmp_value_destroy(&initargs);
        return status;
    }
    dmp_pool_opts_t po = {
        .processes = (int)processes,
        .initializer = command ? "dmp_map_cmd_setup" : "dmp_map_load",
        .initargs = initargs,
        .placement = nodes ? nodes : "spread",
        .retries = retries ? (int)retries : -1,
        .task_timeout = task_timeout,
    };
    dmp_pool_t *pool = NULL;
    rc = dmp_pool_new(&po, &pool);
    dmp_value_destroy(&initargs);
    if (rc) {
        const char *why = dmp_client_errmsg(client);
        cli_error("cannot start the workers: %s%s%s", dmp_strerror(rc),
                  why[0] ? ": " : "", why);
        dmp_value_destroy(&items);
        cli_disconnect(&client);
        return cli_status(rc);
    }
    size_t total = dmp_value_len(items);
    dmp_imap_t *it = NULL;
    rc = dmp_pool_imap(pool, command ? "dmp_map_cmd" : "dmp_map_call", items,
                       chunksize, &it);
    if (rc) {
        cli_error("cannot map: %s", dmp_strerror(rc));
        dmp_pool_destroy(&pool);
        dmp_value_destroy(&items);
        cli_disconnect(&client);
        return cli_status(rc);
    }
    struct sigaction sa = {.sa_handler = s_on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    bool bar = !quiet && isatty(2);
    double last_bar = 0;
    size_t done = 0, n_failed = 0;
    s_failure_t failed[FAILED_SHOWN];
    static char outbuf[1 << 16];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    while (!s_interrupted) {
        dmp_value_t *v = NULL;
        rc = dmp_imap_next(it, &v, bar || !isatty(1) ? BAR_EVERY : 0.05);
        if (rc == DMP_EEOF)
            break;
        if (rc == -ETIMEDOUT) {
            fflush(stdout); /* what is done shows while we wait */
        } else if (rc == 0) {
            s_print(v);
            dmp_value_destroy(&v);
            done++;
        } else {
            fputc('\n', stdout); /* the item keeps its line */
            if (n_failed < FAILED_SHOWN) {
                failed[n_failed].index = dmp_imap_index(it);
                failed[n_failed].text = strdup(dmp_imap_errmsg(it));
            }
            n_failed++;
            done++;
        }
        double now = dmp__now();
        if (bar && (now - last_bar >= BAR_EVERY || done == total)) {
            s_bar(done, total, n_failed, now - t0);
            last_bar = now;
        }
    }
    fflush(stdout);
    double took = dmp__now() - t0;
    if (bar)
        fputs("\r\033[K", stderr);
    int workers = dmp_pool_processes(pool);
    dmp_imap_destroy(&it);
    if (s_interrupted) {
        dmp_pool_terminate(pool);
        cli_error("interrupted after %zu of %zu items", done, total);
    } else {
        dmp_pool_close(pool);
    }
    dmp_pool_join(pool, DMP_FOREVER);
    dmp_pool_destroy(&pool);
    if (!quiet && !s_interrupted)
        fprintf(stderr, "dmp map: %zu items in %.2f s (%.0f/s) on %d "
                "workers: %zu ok, %zu failed\n", total, took,
                took > 0 ? (double)total / took : 0.0, workers,
                done - n_failed, n_failed);
    for (size_t i = 0; i < n_failed && i < FAILED_SHOWN; i++) {
        const dmp_value_t *item = dmp_list_get(items, (int64_t)failed[i].index);
        /* the pool says "task 'dmp_map_call' failed on item 16: why":
         * the internal task's name and index mean nothing here */
        const char *why = failed[i].text ? failed[i].text : "";
        char at[32];
        snprintf(at, sizeof at, " item %zu", failed[i].index);
        const char *cut = strstr(why, at);
        if (cut) {
            why = cut + strlen(at);
            why += strspn(why, ": ");
        }
        fprintf(stderr, "failed: item %zu '%s': %s\n", failed[i].index + 1,
                dmp_value_str(item, NULL), why);
        free(failed[i].text);
    }
    if (n_failed > FAILED_SHOWN)
        fprintf(stderr, "failed: ... and %zu more\n",
                n_failed - FAILED_SHOWN);
    dmp_value_destroy(&items);
    cli_disconnect(&client);
    if (s_interrupted)
        return 128 + s_interrupted;
    return n_failed ? CLI_FAIL : CLI_OK;
}
