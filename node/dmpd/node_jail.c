/*
 * node_jail.c - what a job may do: its rlimits, no new privileges, its
 * user, and nothing but its own descriptors.
 *
 * Every process this agent starts (a target exec'd, a command, a zygote
 * that forks targets) goes through node_jail_spawn: fork, then in the
 * child only async-signal-safe calls (dup2, setrlimit, prctl, the raw
 * set*id system calls, exec), exec failure reported through a
 * close-on-exec pipe, as libuv does. posix_spawn cannot set rlimits or
 * drop privileges, hence the fork; the child of a fork is single-threaded
 * and execs at once, so no ZeroMQ state of ours is ever used in it.
 *
 * Order in the child, and why: limits before the user switch (lowering a
 * hard limit needs no privilege, but it is the last chance to set one the
 * job cannot raise again); PR_SET_NO_NEW_PRIVS before exec (set-user-id
 * binaries and file capabilities then give the job nothing); groups, gid,
 * then uid (after setuid the others are no longer allowed).
 *
 * The job user is resolved once at start (getpwnam is not safe after
 * fork). An agent that is not root can only run jobs as itself; one that
 * names a user who does not exist, or whose jobs could not reach the
 * agent's socket, refuses to start. State: the resolved user, static here
 * (one agent per process, like the zygotes).
 */
#define _GNU_SOURCE
#include "node.h"

#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define JAIL_GROUPS_MAX 64

/* The config keys and the resource each one limits. */
static const struct {
    const char *key;
    int resource;
    bool bytes;    /* accepts K, M, G, T suffixes */
} s_limits[NODE_JOB_RLIMITS] = {
    {"job_rlimit_nofile", RLIMIT_NOFILE, false},
    {"job_rlimit_as", RLIMIT_AS, true},
    {"job_rlimit_cpu", RLIMIT_CPU, false},
    {"job_rlimit_nproc", RLIMIT_NPROC, false},
};

static struct {
    bool switch_user;           /* jobs run as another uid/gid than ours */
    uid_t uid;
    gid_t gid;
    gid_t groups[JAIL_GROUPS_MAX];
    size_t n_groups;
    char home[PATH_MAX];
    char user[DMP__NAME_MAX];
    struct rlimit limits[NODE_JOB_RLIMITS];
    bool limit_set[NODE_JOB_RLIMITS];
    struct rlimit nofile_at_start; /* what jobs get without a setting */
    bool nofile_raised;            /* ours was raised from that */
} s_jail;

/* "unlimited", or a decimal number with an optional binary suffix. */
static int
s_parse_limit(const char *value, bool bytes, unsigned long long *out)
{
    if (strcmp(value, "unlimited") == 0) {
        *out = RLIM_INFINITY;
        return 0;
    }
    if (value[0] < '0' || value[0] > '9')
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long n = strtoull(value, &end, 10);
    if (errno)
        return -EINVAL;
    unsigned shift = 0;
    if (bytes && *end) {
        const char *units = "KMGT";
        const char *u = strchr(units, *end);
        if (!u || end[1])
            return -EINVAL;
        shift = 10 * (unsigned)(u - units + 1);
        end++;
    }
    if (*end || (shift && n > (ULLONG_MAX >> shift)) || n == 0)
        return -EINVAL;
    *out = n << shift;
    return 0;
}

int
node_jail_config(node_config_t *cfg, const char *key, const char *value,
                 char *err, size_t errlen)
{
    if (strcmp(key, "job_user") == 0) {
        if (!dmp__name_valid(value)) {
            snprintf(err, errlen, "invalid job_user '%s': a user name", value);
            return DMP_ECONFIG;
        }
        dmp__strlcpy(cfg->job_user, value, sizeof cfg->job_user);
        return 0;
    }
    for (int i = 0; i < NODE_JOB_RLIMITS; i++) {
        if (strcmp(key, s_limits[i].key) != 0)
            continue;
        unsigned long long n;
        if (s_parse_limit(value, s_limits[i].bytes, &n) != 0) {
            snprintf(err, errlen, "invalid %s '%s': a positive number%s or "
                     "'unlimited'", key, value,
                     s_limits[i].bytes ? " (suffix K, M, G or T allowed)" : "");
            return DMP_ECONFIG;
        }
        cfg->job_rlimits[i].set = true;
        cfg->job_rlimits[i].value = n;
        return 0;
    }
    snprintf(err, errlen, "unknown setting '%s'", key);
    return DMP_ECONFIG;
}

/* True when the job user can search (x) directory st. */
static bool
s_user_can_search(const struct stat *st)
{
    if (st->st_uid == s_jail.uid)
        return st->st_mode & S_IXUSR;
    bool in_group = st->st_gid == s_jail.gid;
    for (size_t i = 0; i < s_jail.n_groups && !in_group; i++)
        in_group = st->st_gid == s_jail.groups[i];
    return in_group ? (st->st_mode & S_IXGRP) : (st->st_mode & S_IXOTH);
}

int
node_jail_setup(const node_config_t *cfg)
{
    memset(&s_jail, 0, sizeof s_jail);
    for (int i = 0; i < NODE_JOB_RLIMITS; i++) {
        if (!cfg->job_rlimits[i].set)
            continue;
        rlim_t v = (rlim_t)cfg->job_rlimits[i].value;
        s_jail.limits[i] = (struct rlimit){v, v};
        s_jail.limit_set[i] = true;
    }
    /* Every client connection takes a descriptor here: take the hard
     * limit (systemd and shells start daemons with a soft 1024), and give
     * jobs back the limit we were started with. */
    if (getrlimit(RLIMIT_NOFILE, &s_jail.nofile_at_start) == 0 &&
        s_jail.nofile_at_start.rlim_cur < s_jail.nofile_at_start.rlim_max) {
        struct rlimit raised = s_jail.nofile_at_start;
        raised.rlim_cur = raised.rlim_max;
        s_jail.nofile_raised = setrlimit(RLIMIT_NOFILE, &raised) == 0;
    }
    if (!cfg->job_user[0])
        return 0;
    struct passwd pw, *found = NULL;
    char buf[4096];
    errno = 0;
    int rc = getpwnam_r(cfg->job_user, &pw, buf, sizeof buf, &found);
    if (rc != 0 || !found) {
        error_f("job_user '%s' does not exist on this host: create it "
                "(e.g. useradd --system %s) or change job_user",
                cfg->job_user, cfg->job_user);
        return DMP_ECONFIG;
    }
    if (pw.pw_uid == geteuid() && pw.pw_gid == getegid())
        return 0; /* jobs run as us anyway */
    if (geteuid() != 0) {
        error_f("job_user '%s' needs an agent started as root (this one "
                "runs as uid %u): start it as root, or as '%s', or drop "
                "job_user", cfg->job_user, (unsigned)geteuid(),
                cfg->job_user);
        return DMP_ECONFIG;
    }
    s_jail.switch_user = true;
    s_jail.uid = pw.pw_uid;
    s_jail.gid = pw.pw_gid;
    dmp__strlcpy(s_jail.user, cfg->job_user, sizeof s_jail.user);
    dmp__strlcpy(s_jail.home, pw.pw_dir, sizeof s_jail.home);
    int n = JAIL_GROUPS_MAX;
    if (getgrouplist(cfg->job_user, pw.pw_gid, s_jail.groups, &n) < 0) {
        error_f("job_user '%s' is in more than %d groups", cfg->job_user,
                JAIL_GROUPS_MAX);
        return DMP_ECONFIG;
    }
    s_jail.n_groups = (size_t)n;
    /* Its jobs must reach our socket: every directory above the runtime
     * directory must be searchable by that user (we open the runtime
     * directory itself to its group below). */
    char path[PATH_MAX];
    dmp__strlcpy(path, cfg->runtime_dir, sizeof path);
    for (char *slash = strrchr(path, '/'); slash; slash = strrchr(path, '/')) {
        *slash = '\0';
        const char *dir = path[0] ? path : "/";
        struct stat st;
        if (stat(dir, &st) != 0)
            continue; /* created below with the runtime directory */
        if (!s_user_can_search(&st)) {
            error_f("job_user '%s' cannot reach the runtime directory '%s': "
                    "'%s' (mode %03o) is not searchable by it; use another "
                    "runtime_dir or chmod o+x '%s'", cfg->job_user,
                    cfg->runtime_dir, dir, (unsigned)(st.st_mode & 0777),
                    dir);
            return DMP_ECONFIG;
        }
        if (!path[0])
            break;
    }
    info_f("jobs run as user '%s' uid=%u gid=%u", cfg->job_user,
           (unsigned)pw.pw_uid, (unsigned)pw.pw_gid);
    return 0;
}

bool
node_jail_switches_user(void)
{
    return s_jail.switch_user;
}

mode_t
node_jail_dir_mode(void)
{
    return s_jail.switch_user ? 0711 : 0700;
}

int
node_jail_share(const char *path, mode_t mode, bool give)
{
    if (!s_jail.switch_user)
        return 0;
    uid_t owner = give ? s_jail.uid : (uid_t)-1;
    if (chown(path, owner, s_jail.gid) != 0 || chmod(path, mode) != 0) {
        int rc = -errno;
        warn_f("cannot open '%s' to job_user '%s': %s", path, s_jail.user,
               strerror(errno));
        return rc;
    }
    return 0;
}

const char *
node_jail_env(const char *name)
{
    if (!s_jail.switch_user)
        return NULL;
    if (strcmp(name, "HOME") == 0)
        return s_jail.home;
    if (strcmp(name, "USER") == 0 || strcmp(name, "LOGNAME") == 0)
        return s_jail.user;
    return NULL;
}

long long
node_jail_cpu_limit(void)
{
    for (int i = 0; i < NODE_JOB_RLIMITS; i++)
        if (s_limits[i].resource == RLIMIT_CPU && s_jail.limit_set[i])
            return (long long)s_jail.limits[i].rlim_cur;
    return -1;
}

/* Finds a command's file on PATH, before the fork (no allocation in the
 * child). */
static int
s_search_path(const char *file, char *out, size_t size)
{
    if (strchr(file, '/')) {
        dmp__strlcpy(out, file, size);
        return 0;
    }
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        size_t len = strcspn(path, ":");
        snprintf(out, size, "%.*s/%s", (int)len, len ? path : ".", file);
        if (access(out, X_OK) == 0)
            return 0;
        path += len + (path[len] == ':');
    }
    return -ENOENT;
}

/* In the child of the fork: async-signal-safe calls only. */
static void __attribute__((noreturn))
s_child(const node_jail_spawn_t *s, const char *path, int exe_fd,
        int report_fd)
{
    int e = 0;
    /* Signals: the agent blocks some (signalfd) and ignores SIGPIPE; the
     * job starts with defaults and an empty mask. */
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (s->new_group && setpgid(0, 0) != 0)
        goto fail;
    /* fds[i] becomes i: first out of the way (above every target number),
     * then into place; dup2 clears close-on-exec on the copy. */
    int base = NODE_JAIL_FDS_MAX + 3;
    int moved[NODE_JAIL_FDS_MAX];
    int high = fcntl(report_fd, F_DUPFD_CLOEXEC, base);
    if (high < 0)
        goto fail;
    report_fd = high;
    if (exe_fd >= 0 && (exe_fd = fcntl(exe_fd, F_DUPFD_CLOEXEC, base)) < 0)
        goto fail;
    for (int i = 0; i < s->n_fds; i++) {
        moved[i] = s->fds[i] >= 0
                       ? fcntl(s->fds[i], F_DUPFD_CLOEXEC, base)
                       : open("/dev/null", (i == 0 ? O_RDONLY : O_WRONLY) |
                                               O_CLOEXEC);
        if (moved[i] < 0)
            goto fail;
    }
    for (int i = 0; i < s->n_fds; i++)
        if (dup2(moved[i], i) != i)
            goto fail;
    /* Then the report pipe and the executable (both closed by the exec)
     * right above them, and nothing else of the agent's reaches the job. */
    int keep = s->n_fds;
    if (dup3(report_fd, keep, O_CLOEXEC) != keep)
        goto fail;
    report_fd = keep++;
    if (exe_fd >= 0) {
        if (dup3(exe_fd, keep, O_CLOEXEC) != keep)
            goto fail;
        exe_fd = keep++;
    }
    if (syscall(SYS_close_range, (unsigned)keep, ~0U, 0) != 0)
        for (int fd = keep; fd < 65536; fd++)
            close(fd);
    if (s_jail.nofile_raised &&
        setrlimit(RLIMIT_NOFILE, &s_jail.nofile_at_start) != 0)
        goto fail;
    for (int i = 0; i < NODE_JOB_RLIMITS; i++) {
        /* A zygote's CPU time is not its children's: it sets theirs. */
        if (!s_jail.limit_set[i] ||
            (s->zygote && s_limits[i].resource == RLIMIT_CPU))
            continue;
        if (setrlimit(s_limits[i].resource, &s_jail.limits[i]) != 0)
            goto fail;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        goto fail;
    if (s_jail.switch_user &&
        (syscall(SYS_setgroups, s_jail.n_groups, s_jail.groups) != 0 ||
         syscall(SYS_setresgid, s_jail.gid, s_jail.gid, s_jail.gid) != 0 ||
         syscall(SYS_setresuid, s_jail.uid, s_jail.uid, s_jail.uid) != 0))
        goto fail;
    if (exe_fd >= 0)
        syscall(SYS_execveat, exe_fd, "", s->argv, s->env, AT_EMPTY_PATH);
    else
        execve(path, s->argv, s->env);
fail:
    e = errno;
    ssize_t w = write(report_fd, &e, sizeof e);
    (void)w;
    _exit(127);
}

int
node_jail_spawn(const node_jail_spawn_t *s, pid_t *pid_p)
{
    char path[PATH_MAX];
    int rc = s->search_path ? s_search_path(s->exe, path, sizeof path) : 0;
    if (rc)
        return rc;
    if (!s->search_path)
        dmp__strlcpy(path, s->exe, sizeof path);
    /* Another user may not be able to open the path (/proc/PID/exe of a
     * process of ours, a file in our 0700 cache): we open it, it execs
     * the descriptor. A command found on PATH is exec'd by path, so that
     * scripts work. */
    int exe_fd = -1;
    if (s_jail.switch_user && !s->search_path) {
        exe_fd = open(path, O_PATH | O_CLOEXEC);
        if (exe_fd < 0)
            return -errno;
    }
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) {
        rc = -errno;
        if (exe_fd >= 0)
            close(exe_fd);
        return rc;
    }
    pid_t pid = fork();
    if (pid == 0)
        s_child(s, path, exe_fd, report[1]);
    rc = pid < 0 ? -errno : 0;
    close(report[1]);
    if (exe_fd >= 0)
        close(exe_fd);
    if (rc == 0) {
        int e = 0;
        ssize_t n;
        do
            n = read(report[0], &e, sizeof e);
        while (n < 0 && errno == EINTR);
        if (n == sizeof e) { /* it did not get to exec: reap it */
            waitpid(pid, NULL, 0);
            rc = e ? -e : -ECHILD;
        }
    }
    close(report[0]);
    if (rc == 0)
        *pid_p = pid;
    return rc;
}
