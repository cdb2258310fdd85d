/*
 * test_jobs.c - what a job may do on a real agent: the configured
 * rlimits, PR_SET_NO_NEW_PRIVS, only descriptors 0-2 at start and then
 * only dmp's own channels, and (as root) jobs run as the unprivileged
 * user `nobody`, through both ways an agent starts them: a target forked
 * by the program's zygote, and a command exec'd from the binary cache.
 * Agents that are configured wrongly refuse to start, with a clear line.
 *
 * This binary is also the jobs' program: main() hands over to dmp_init()
 * when DMP_CHILD or DMP_ZYGOTE says so, and with --confinement it is a
 * command that checks itself and exits with what differed.
 */
#define _GNU_SOURCE
#include "dmp_test.h"
#include "dmp_impl.h" /* dmp__process_new_command */

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* What the agents are configured with. An address-space limit is not
 * tested under AddressSanitizer, whose shadow memory needs terabytes of
 * it. */
#define NOFILE 512
#define CPU_SECONDS 3600
#define NPROC 20000
#define AS_BYTES (64ULL << 30)
#define NOBODY_UID 65534
#define AGENT_SOFT_NOFILE 1000 /* the agents are started with */
#define STRAY_FD 78 /* a descriptor the agent inherits; no job may */

/* What a job checks about itself: -1 skips a check. */
enum { W_NOFILE, W_AS, W_CPU, W_NPROC, W_UID, W_GID, W_NOFILE_SOFT, W_N };

enum {
    BAD_NOFILE = 1 << 0,
    BAD_AS = 1 << 1,
    BAD_CPU = 1 << 2,
    BAD_NPROC = 1 << 3,
    BAD_NNP = 1 << 4,
    BAD_UID = 1 << 5,
    BAD_GID = 1 << 6,
    BAD_FDS = 1 << 7,
};

/* ---- the jobs ------------------------------------------------------------- */

/* Descriptors besides 0-2 (and the directory listing them) not matching
 * any of the allowed prefixes; each one named on stderr. */
static int
s_unexpected_fds(const char *const *allowed)
{
    DIR *dir = opendir("/proc/self/fd");
    if (!dir)
        return 100;
    int bad = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        int fd = atoi(de->d_name);
        if (de->d_name[0] == '.' || fd <= 2 || fd == dirfd(dir))
            continue;
        char path[64], target[256] = "?";
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t len = readlink(path, target, sizeof target - 1);
        target[len > 0 ? len : 0] = '\0';
        bool ok = false;
        for (size_t i = 0; allowed && allowed[i] && !ok; i++)
            ok = strncmp(target, allowed[i], strlen(allowed[i])) == 0;
        if (!ok) {
            fprintf(stderr, "# job pid %d: unexpected fd %d -> %s\n",
                    (int)getpid(), fd, target);
            bad++;
        }
    }
    closedir(dir);
    return bad;
}

static bool
s_limit_is(int resource, int64_t want, const char *what)
{
    struct rlimit rl;
    if (want < 0)
        return true;
    if (getrlimit(resource, &rl) != 0 || rl.rlim_cur != (rlim_t)want ||
        rl.rlim_max != (rlim_t)want) {
        fprintf(stderr, "# job: %s is %llu/%llu, expected %lld\n", what,
                (unsigned long long)rl.rlim_cur,
                (unsigned long long)rl.rlim_max, (long long)want);
        return false;
    }
    return true;
}

/* Everything a job checks at its start; a mask of BAD_*. */
static int
s_check_self(const int64_t want[W_N])
{
    int bad = s_unexpected_fds(NULL) ? BAD_FDS : 0;
    bad |= s_limit_is(RLIMIT_NOFILE, want[W_NOFILE], "nofile") ? 0 : BAD_NOFILE;
    struct rlimit rl;
    if (want[W_NOFILE_SOFT] >= 0 &&
        (getrlimit(RLIMIT_NOFILE, &rl) != 0 ||
         rl.rlim_cur != (rlim_t)want[W_NOFILE_SOFT])) {
        fprintf(stderr, "# job: soft nofile is %llu, expected %lld\n",
                (unsigned long long)rl.rlim_cur,
                (long long)want[W_NOFILE_SOFT]);
        bad |= BAD_NOFILE;
    }
    bad |= s_limit_is(RLIMIT_AS, want[W_AS], "as") ? 0 : BAD_AS;
    bad |= s_limit_is(RLIMIT_CPU, want[W_CPU], "cpu") ? 0 : BAD_CPU;
    bad |= s_limit_is(RLIMIT_NPROC, want[W_NPROC], "nproc") ? 0 : BAD_NPROC;
    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) {
        fprintf(stderr, "# job: no_new_privs is not set\n");
        bad |= BAD_NNP;
    }
    if (want[W_UID] >= 0) {
        uid_t r, e, s;
        getresuid(&r, &e, &s);
        struct passwd *pw = getpwuid((uid_t)want[W_UID]);
        const char *home = getenv("HOME");
        if (r != want[W_UID] || e != want[W_UID] || s != want[W_UID] || !pw ||
            !home || strcmp(home, pw->pw_dir) != 0) {
            fprintf(stderr, "# job: uid %u/%u/%u HOME=%s, expected %lld\n",
                    r, e, s, home ? home : "(none)", (long long)want[W_UID]);
            bad |= BAD_UID;
        }
    }
    if (want[W_GID] >= 0) {
        gid_t r, e, s, groups[64];
        getresgid(&r, &e, &s);
        int n = getgroups(64, groups);
        bool only_own = n >= 0;
        for (int i = 0; i < n; i++)
            only_own = only_own && groups[i] == (gid_t)want[W_GID];
        if (r != want[W_GID] || e != want[W_GID] || s != want[W_GID] ||
            !only_own) {
            fprintf(stderr, "# job: gid %u/%u/%u with %d groups, expected "
                    "%lld only\n", r, e, s, n, (long long)want[W_GID]);
            bad |= BAD_GID;
        }
    }
    return bad;
}

static void
s_want_from(const dmp_value_t *args, int64_t want[W_N])
{
    for (size_t i = 0; i < W_N; i++) {
        want[i] = -2;
        dmp_value_get_int(dmp_list_get(args, i), &want[i]);
    }
}

/* args [want...]: exits with the mask of what differs. */
DMP_TARGET(confinement)
{
    int64_t want[W_N];
    s_want_from(args, want);
    return s_check_self(want);
}

/* args [want..., queue]: the checks, then talks to its agent and puts
 * "uid N" into the queue; exits with the mask, or 200 + what failed. */
DMP_TARGET(confined_put)
{
    int64_t want[W_N];
    s_want_from(args, want);
    int bad = s_check_self(want);
    dmp_node_info_t *nodes;
    size_t n;
    if (dmp_nodes(&nodes, &n) != 0)
        return 201;
    dmp_free(nodes);
    dmp_queue_t *q;
    if (dmp_queue_from_value(dmp_list_get(args, W_N), &q) != 0)
        return 202;
    char text[32];
    snprintf(text, sizeof text, "uid %u", (unsigned)getuid());
    dmp_value_t *item = dmp_str(text);
    int rc = item ? dmp_queue_put(q, item, 10.0) : -ENOMEM;
    dmp_value_destroy(&item);
    dmp_queue_destroy(&q);
    return rc ? 203 : bad;
}

/* No descriptor but 0-2 at the start; after talking to its agent and
 * using a queue, only dmp's channels: sockets, eventfds and epoll (ZeroMQ)
 * and the queue's shared memory. Exits with the count of others, +100
 * when there were any at the start. */
DMP_TARGET(fd_channels)
{
    int at_start = s_unexpected_fds(NULL);
    dmp_queue_t *q;
    if (dmp_queue_from_value(dmp_list_get(args, 0), &q) != 0)
        return 250;
    dmp_value_t *item = dmp_str("fds");
    int rc = item ? dmp_queue_put(q, item, 10.0) : -ENOMEM;
    dmp_value_destroy(&item);
    dmp_node_info_t *nodes;
    size_t n;
    rc = rc ? rc : dmp_nodes(&nodes, &n);
    if (rc == 0)
        dmp_free(nodes);
    static const char *const dmp_channels[] = {
        "socket:", "anon_inode:[eventfd]", "anon_inode:[eventpoll]",
        "/dev/shm/dmp-", NULL};
    int later = s_unexpected_fds(dmp_channels);
    dmp_queue_destroy(&q);
    return rc ? 251 : (at_start ? 100 : 0) + later;
}

/* What the agents' environment holds and no job may inherit. */
static const char *const s_not_inherited[] = {"LD_LIBRARY_PATH", "LD_PRELOAD",
                                              "DMP_TEST_CANARY", NULL};
/* Arguments a shell would expand; a command gets them literally. */
static const char *const s_literal[] = {"a b", "$(touch /tmp/dmp-pwned)",
                                        "`id`;|&>*", "'\"", NULL};

static int
s_env_is_clean(void)
{
    int bad = 0;
    for (size_t i = 0; s_not_inherited[i]; i++)
        if (getenv(s_not_inherited[i])) {
            fprintf(stderr, "# job inherited %s\n", s_not_inherited[i]);
            bad++;
        }
    return bad;
}

/* A target's environment holds nothing of the agent's but the allow-list. */
DMP_TARGET(clean_env)
{
    (void)args;
    return s_env_is_clean();
}

/* ---- helpers ---------------------------------------------------------------- */

static struct {
    dmp_test_sandbox_t *sb;
    dmp_test_agent_t *agent;
    int64_t want[W_N];
} s_t;

static int64_t
s_as_limit(void)
{
    return UNDER_ASAN ? -1 : (int64_t)AS_BYTES;
}

/* The config file every agent of these tests reads, plus `extra`. */
static void
s_write_config(const char *path, const char *extra, bool nofile)
{
    char text[1024];
    char as[64] = "";
    if (!UNDER_ASAN)
        snprintf(as, sizeof as, "job_rlimit_as = %lluG\n", AS_BYTES >> 30);
    char nf[64] = "";
    if (nofile)
        snprintf(nf, sizeof nf, "job_rlimit_nofile = %d\n", NOFILE);
    snprintf(text, sizeof text,
             "%sjob_rlimit_cpu = %d\njob_rlimit_nproc = %d\n%s%s", nf,
             CPU_SECONDS, NPROC, as, extra ? extra : "");
    assert_dmp_ok(dmp_test_write_file(path, 0644, text));
}

static dmp_value_t *
s_want_args(const int64_t want[W_N])
{
    dmp_value_t *args = dmp_list();
    for (size_t i = 0; args && i < W_N; i++)
        if (dmp_list_append(args, dmp_int(want[i])) != 0)
            dmp_value_destroy(&args);
    assert_non_null(args);
    return args;
}

/* Starts target with args (taken) and returns its exit code. */
static int
s_run_target(const char *target, dmp_value_t *args)
{
    dmp_process_opts_t opts = {.target = target, .args = args};
    dmp_process_t *p = NULL;
    assert_dmp_ok(dmp_process_new(&opts, &p));
    dmp_value_destroy(&args);
    assert_dmp_ok(dmp_process_start(p));
    assert_dmp_ok(dmp_process_join(p, 30.0));
    int code = -1000;
    assert_dmp_ok(dmp_process_exitcode(p, &code));
    dmp_process_destroy(&p);
    return code;
}

/* Runs this binary as a command (`dmp run` style: shipped to the agent's
 * binary cache and exec'd from there) checking itself against want. */
static int
s_run_command(const int64_t want[W_N])
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(n > 0);
    self[n] = '\0';
    char nums[W_N][24];
    char *argv[W_N + 3] = {self, "--confinement"};
    for (size_t i = 0; i < W_N; i++) {
        snprintf(nums[i], sizeof nums[i], "%lld", (long long)want[i]);
        argv[2 + i] = nums[i];
    }
    argv[W_N + 2] = NULL;
    dmp_process_t *p = NULL;
    assert_dmp_ok(dmp__process_new_command(argv, NULL, &p));
    assert_dmp_ok(dmp_process_start(p));
    assert_dmp_ok(dmp_process_join(p, 30.0));
    int code = -1000;
    assert_dmp_ok(dmp_process_exitcode(p, &code));
    dmp_process_destroy(&p);
    return code;
}

/* Starts an agent with the config (plus extra), an inheritable stray
 * descriptor, and connects this program to it over ipc. */
static void
s_agent_up(const char *name, const char *extra, bool nofile)
{
    /* A soft limit under the hard one, as systemd starts daemons: the
     * agent raises its own. */
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    assert_true(rl.rlim_max > AGENT_SOFT_NOFILE);
    rl.rlim_cur = AGENT_SOFT_NOFILE;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
    assert_dmp_ok(dmp_test_agent_new(s_t.sb, name, &s_t.agent));
    char conf[PATH_MAX + 32];
    snprintf(conf, sizeof conf, "%s/%s.conf", s_t.sb->dir, name);
    s_write_config(conf, extra, nofile);
    dmp_test_agent_add_arg(s_t.agent, "-c");
    dmp_test_agent_add_arg(s_t.agent, conf);
    int stray = fcntl(STDIN_FILENO, F_DUPFD, STRAY_FD);
    assert_int_equal(stray, STRAY_FD);
    int rc = dmp_test_agent_start(s_t.agent);
    close(stray);
    if (rc)
        dmp_test_agent_dump_log(s_t.agent);
    assert_dmp_ok(rc);
    dmp_client_opts_t opts = {.address = s_t.agent->ipc_address};
    char err[512] = "";
    rc = dmp_init_opts(&opts, err, sizeof err);
    if (rc)
        print_error("dmp_init_opts: %s\n", err);
    assert_dmp_ok(rc);
}

/* Runs dmpd with config text `conf` (as uid `as_uid` when >= 0) and
 * expects it to refuse to start, saying `needle`. */
static void
s_dmpd_refuses(const char *conf, int as_uid, const char *needle)
{
    char conf_path[PATH_MAX + 32], log_path[PATH_MAX + 32];
    char run_dir[PATH_MAX + 32];
    snprintf(conf_path, sizeof conf_path, "%s/refuse.conf", s_t.sb->dir);
    snprintf(log_path, sizeof log_path, "%s/refuse.log", s_t.sb->dir);
    snprintf(run_dir, sizeof run_dir, "%s/run/refused", s_t.sb->dir);
    assert_dmp_ok(dmp_test_write_file(conf_path, 0644, conf));
    int log = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(log >= 0);
    /* Handed over open: another uid could not walk into the sandbox. */
    int conf_fd = open(conf_path, O_RDONLY);
    assert_true(conf_fd >= 0);
    char conf_arg[64];
    snprintf(conf_arg, sizeof conf_arg, "/proc/self/fd/%d", conf_fd);
    /* The binary too: the checkout may be in a directory only we reach
     * (mktemp -d makes it 0700), and exec by descriptor needs no path. */
    int exe_fd = open(dmp_test_bin("dmpd"), O_RDONLY | O_CLOEXEC);
    assert_true(exe_fd >= 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(log, 1);
        dup2(log, 2);
        if (as_uid >= 0 &&
            (syscall(SYS_setgroups, 0, NULL) != 0 ||
             syscall(SYS_setresgid, as_uid, as_uid, as_uid) != 0 ||
             syscall(SYS_setresuid, as_uid, as_uid, as_uid) != 0))
            _exit(99);
        char *argv[] = {"dmpd", "-n", "refused", "-r", run_dir,
                        "-c", conf_arg, NULL};
        fexecve(exe_fd, argv, environ);
        _exit(98);
    }
    close(exe_fd);
    close(log);
    close(conf_fd);
    int status = 0;
    double deadline = dmp_test_now() + 10;
    pid_t r;
    while ((r = waitpid(pid, &status, WNOHANG)) == 0 &&
           dmp_test_now() < deadline)
        usleep(10000);
    if (r == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fail_msg("dmpd did not refuse to start with:\n%s", conf);
    }
    char *text = dmp_test_read_file(log_path);
    assert_true(WIFEXITED(status));
    assert_int_not_equal(WEXITSTATUS(status), 0);
    assert_int_not_equal(WEXITSTATUS(status), 98);
    assert_int_not_equal(WEXITSTATUS(status), 99);
    assert_contains(text, needle);
    free(text);
}

static void
s_down(void)
{
    dmp_fini();
    dmp_test_sandbox_destroy(&s_t.sb);
    assert_int_equal(dmp_test_agents_running(), 0);
}

/* ---- group 1: limits and descriptors, jobs run as us ----------------------- */

static int
s_limits_up(void **state)
{
    (void)state;
    assert_dmp_ok(dmp_test_sandbox_new(&s_t.sb));
    /* FAULTS.md: environment injection. The agent gets these; its jobs
     * must not (harmless values: nothing is preloaded). */
    setenv("LD_LIBRARY_PATH", "/nonexistent-dmp-test", 1);
    setenv("DMP_TEST_CANARY", "leaked", 1);
    s_agent_up("limits", NULL, true);
    unsetenv("LD_LIBRARY_PATH");
    unsetenv("DMP_TEST_CANARY");
    int64_t want[W_N] = {NOFILE, s_as_limit(), CPU_SECONDS, NPROC,
                         -1, -1, -1};
    memcpy(s_t.want, want, sizeof want);
    return 0;
}

static int
s_group_down(void **state)
{
    (void)state;
    s_down();
    return 0;
}

/* The happy path: a target sees the configured limits, no new privileges
 * and only fds 0-2. */
static void
test_target_runs_with_the_configured_limits(void **state)
{
    (void)state;
    assert_int_equal(s_run_target("confinement", s_want_args(s_t.want)), 0);
}

/* The same for a command, exec'd from the binary cache, not forked. */
static void
test_command_runs_with_the_configured_limits(void **state)
{
    (void)state;
    assert_int_equal(s_run_command(s_t.want), 0);
}

/* A check that can fail: a wrong expectation is reported as such. */
static void
test_a_wrong_expectation_is_seen(void **state)
{
    (void)state;
    int64_t want[W_N];
    memcpy(want, s_t.want, sizeof want);
    want[W_NOFILE] = NOFILE + 1;
    assert_int_equal(s_run_target("confinement", s_want_args(want)),
                     BAD_NOFILE);
}

static void
test_job_has_only_fds_0_to_2_then_only_dmp_channels(void **state)
{
    (void)state;
    dmp_queue_t *q = NULL;
    assert_dmp_ok(dmp_queue_new(NULL, &q));
    dmp_value_t *args = dmp_list_of(1, dmp_queue_value(q));
    assert_non_null(args);
    assert_int_equal(s_run_target("fd_channels", args), 0);
    dmp_value_t *item = NULL;
    assert_dmp_ok(dmp_queue_get(q, &item, 10.0));
    assert_string_equal(dmp_value_str(item, NULL), "fds");
    dmp_value_destroy(&item);
    dmp_queue_destroy(&q);
}

/* A job limit is enforced, not only reported: past job_rlimit_nofile
 * opens fail with EMFILE (a job that runs out does not hurt the agent). */
DMP_TARGET(open_many)
{
    (void)args;
    static int fds[NOFILE + 1];
    int opened = 0, fd = -1;
    while (opened <= NOFILE && (fd = open("/dev/null", O_RDONLY)) >= 0)
        fds[opened++] = fd;
    bool limited = fd < 0 && errno == EMFILE && opened < NOFILE;
    while (opened > 0) /* what exit needs (a leak checker opens /proc) */
        close(fds[--opened]);
    return limited ? 0 : 1;
}

static void
test_a_job_cannot_open_more_than_job_rlimit_nofile(void **state)
{
    (void)state;
    assert_int_equal(s_run_target("open_many", NULL), 0);
    assert_dmp_ok(dmp_test_agent_ping(s_t.agent));
}

/* The agent took its hard limit for itself (1000 clients need more than
 * a soft 1024), while its jobs got the configured one. */
static void
test_agent_raised_its_own_descriptor_limit(void **state)
{
    (void)state;
    char path[64], *text;
    snprintf(path, sizeof path, "/proc/%d/limits", (int)s_t.agent->pid);
    assert_non_null(text = dmp_test_read_file(path));
    const char *line = strstr(text, "Max open files");
    assert_non_null(line);
    unsigned long long soft = 0, hard = 0;
    assert_int_equal(sscanf(line + 14, "%llu %llu", &soft, &hard), 2);
    free(text);
    assert_true(soft > AGENT_SOFT_NOFILE);
    assert_true(soft == hard);
}

/* Environment from an allow-list, argv passed literally (no shell), for
 * a target and for a command. */
static void
test_environment_is_an_allow_list_and_argv_is_literal(void **state)
{
    (void)state;
    assert_int_equal(s_run_target("clean_env", NULL), 0);
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(n > 0);
    self[n] = '\0';
    char *argv[] = {self, "--literal", (char *)s_literal[0],
                    (char *)s_literal[1], (char *)s_literal[2],
                    (char *)s_literal[3], NULL};
    dmp_process_t *p = NULL;
    assert_dmp_ok(dmp__process_new_command(argv, NULL, &p));
    assert_dmp_ok(dmp_process_start(p));
    assert_dmp_ok(dmp_process_join(p, 30.0));
    int code = -1;
    assert_dmp_ok(dmp_process_exitcode(p, &code));
    dmp_process_destroy(&p);
    assert_int_equal(code, 0);
    assert_int_equal(access("/tmp/dmp-pwned", F_OK), -1);
}

static void
test_bad_settings_refuse_to_start(void **state)
{
    (void)state;
    s_dmpd_refuses("job_rlimit_nofile = lots\n", -1,
                   "invalid job_rlimit_nofile 'lots'");
    s_dmpd_refuses("job_rlimit_as = 12Q\n", -1, "invalid job_rlimit_as");
    s_dmpd_refuses("job_rlimit_cpu = -1\n", -1, "invalid job_rlimit_cpu");
    s_dmpd_refuses("job_rlimit_stack = 1\n", -1,
                   "unknown setting 'job_rlimit_stack'");
    s_dmpd_refuses("job_user = no-such-user-dmp\n", -1,
                   "job_user 'no-such-user-dmp' does not exist");
    if (geteuid() == 0) /* an unprivileged agent cannot switch users */
        s_dmpd_refuses("job_user = root\n", NOBODY_UID,
                       "job_user 'root' needs an agent started as root");
}

/* ---- group 2: jobs run as nobody (needs root) -------------------------------- */

static bool s_have_nobody;

static int
s_nobody_up(void **state)
{
    (void)state;
    struct passwd *pw = getpwnam("nobody");
    s_have_nobody = geteuid() == 0 && pw && pw->pw_uid != 0;
    if (!s_have_nobody)
        return 0;
    assert_dmp_ok(dmp_test_sandbox_new(&s_t.sb));
    /* No job_rlimit_nofile here: jobs get the soft limit the agent was
     * started with, not the hard one it takes for itself. */
    int64_t want[W_N] = {-1, s_as_limit(), CPU_SECONDS, NPROC,
                         (int64_t)pw->pw_uid, (int64_t)pw->pw_gid,
                         AGENT_SOFT_NOFILE};
    memcpy(s_t.want, want, sizeof want);
    /* The sandbox is 0700: nobody could not reach the agent's socket in
     * it, and the agent says so instead of starting jobs that cannot. */
    s_dmpd_refuses("job_user = nobody\n", -1, "cannot reach the runtime");
    char run[PATH_MAX + 8];
    snprintf(run, sizeof run, "%s/run", s_t.sb->dir);
    assert_int_equal(chmod(s_t.sb->dir, 0711), 0);
    assert_int_equal(chmod(run, 0711), 0);
    s_agent_up("nobody", "job_user = nobody\n", false);
    return 0;
}

static void
test_target_runs_as_nobody_and_reaches_its_agent_and_queue(void **state)
{
    (void)state;
    if (!s_have_nobody)
        skip();
    dmp_queue_t *q = NULL;
    assert_dmp_ok(dmp_queue_new(NULL, &q));
    dmp_value_t *args = s_want_args(s_t.want);
    assert_dmp_ok(dmp_list_append(args, dmp_queue_value(q)));
    assert_int_equal(s_run_target("confined_put", args), 0);
    dmp_value_t *item = NULL;
    assert_dmp_ok(dmp_queue_get(q, &item, 10.0));
    char expect[32];
    snprintf(expect, sizeof expect, "uid %lld", (long long)s_t.want[W_UID]);
    assert_string_equal(dmp_value_str(item, NULL), expect);
    dmp_value_destroy(&item);
    dmp_queue_destroy(&q);
}

static void
test_command_runs_as_nobody_from_the_cache(void **state)
{
    (void)state;
    if (!s_have_nobody)
        skip();
    assert_int_equal(s_run_command(s_t.want), 0);
}

static void
test_nobody_job_has_only_dmp_channels(void **state)
{
    (void)state;
    if (!s_have_nobody)
        skip();
    test_job_has_only_fds_0_to_2_then_only_dmp_channels(state);
}

static int
s_nobody_down(void **state)
{
    (void)state;
    if (s_have_nobody)
        s_down();
    return 0;
}

int
main(int argc, char **argv)
{
    if (getenv("DMP_CHILD") || getenv("DMP_ZYGOTE"))
        dmp_init();
    if (argc >= 2 && strcmp(argv[1], "--literal") == 0) {
        int bad = s_env_is_clean();
        for (int i = 0; s_literal[i]; i++)
            bad += 2 + i >= argc || strcmp(argv[2 + i], s_literal[i]) != 0;
        return bad + (argc != 2 + 4);
    }
    if (argc == 2 + W_N && strcmp(argv[1], "--confinement") == 0) {
        int64_t want[W_N];
        for (size_t i = 0; i < W_N; i++)
            want[i] = atoll(argv[2 + i]);
        return s_check_self(want);
    }
    unsetenv("DMP_PLACE");
    unsetenv("DMP_AGENT");
    unsetenv("DMP_CLUSTER");
    dmp_test_init(150);
    const struct CMUnitTest limits[] = {
        cmocka_unit_test(test_target_runs_with_the_configured_limits),
        cmocka_unit_test(test_command_runs_with_the_configured_limits),
        cmocka_unit_test(test_a_wrong_expectation_is_seen),
        cmocka_unit_test(test_job_has_only_fds_0_to_2_then_only_dmp_channels),
        cmocka_unit_test(test_a_job_cannot_open_more_than_job_rlimit_nofile),
        cmocka_unit_test(test_agent_raised_its_own_descriptor_limit),
        cmocka_unit_test(test_environment_is_an_allow_list_and_argv_is_literal),
        cmocka_unit_test(test_bad_settings_refuse_to_start),
    };
    const struct CMUnitTest nobody[] = {
        cmocka_unit_test(
            test_target_runs_as_nobody_and_reaches_its_agent_and_queue),
        cmocka_unit_test(test_command_runs_as_nobody_from_the_cache),
        cmocka_unit_test(test_nobody_job_has_only_dmp_channels),
    };
    int failed = cmocka_run_group_tests_name("job limits", limits,
                                             s_limits_up, s_group_down);
    failed += cmocka_run_group_tests_name("jobs as nobody", nobody,
                                          s_nobody_up, s_nobody_down);
    return failed ? 1 : 0;
}
