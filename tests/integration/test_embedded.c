/*
 * test_embedded.c - the embedded default: with no cluster configured,
 * dmp_init starts a private dmpd that lives exactly as long as the program.
 *
 * The agent's runtime directory is $TMPDIR/dmp-embedded-XXXXXX and its
 * lock file names its pid; each test points TMPDIR at its sandbox, so the
 * agent can be found there. The "program" of the crash tests is this very
 * binary, re-executed with a mode flag (fork without exec would copy a
 * process that may hold ZeroMQ state).
 */
#define _GNU_SOURCE
#include "dmp_test.h"

#include <fcntl.h>
#include <glob.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static char s_saved_tmpdir[PATH_MAX];
static bool s_had_tmpdir;

static int
s_setup(void **state)
{
    dmp_test_sandbox_t *sb;
    assert_dmp_ok(dmp_test_sandbox_new(&sb));
    const char *tmp = getenv("TMPDIR");
    s_had_tmpdir = tmp != NULL;
    if (tmp)
        snprintf(s_saved_tmpdir, sizeof s_saved_tmpdir, "%s", tmp);
    setenv("TMPDIR", sb->dir, 1);
    *state = sb;
    return 0;
}

static int
s_teardown(void **state)
{
    dmp_fini();
    if (s_had_tmpdir)
        setenv("TMPDIR", s_saved_tmpdir, 1);
    else
        unsetenv("TMPDIR");
    dmp_test_sandbox_destroy((dmp_test_sandbox_t **)state);
    return 0;
}

/* The embedded agent's runtime directory under dir, or false. */
static bool
s_find_rundir(const char *dir, char *out, size_t size)
{
    char pattern[PATH_MAX + 32];
    snprintf(pattern, sizeof pattern, "%s/dmp-embedded-*", dir);
    glob_t g;
    bool found = glob(pattern, 0, NULL, &g) == 0 && g.gl_pathc == 1;
    if (found)
        snprintf(out, size, "%s", g.gl_pathv[0]);
    globfree(&g);
    return found;
}

/* The pid written in RUNDIR/dmpd.lock, or 0. */
static pid_t
s_lock_pid(const char *rundir)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/dmpd.lock", rundir);
    char *text = dmp_test_read_file(path);
    pid_t pid = text ? (pid_t)atoi(text) : 0;
    free(text);
    return pid;
}

/* The parent pid of pid, from /proc/PID/stat, or -1. */
static pid_t
s_ppid(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    char *text = dmp_test_read_file(path);
    if (!text)
        return -1;
    const char *p = strrchr(text, ')');
    int ppid = -1;
    if (p)
        sscanf(p + 2, "%*c %d", &ppid);
    free(text);
    return ppid;
}

/* How many live (non-zombie) children this process has. */
static int
s_live_children(void)
{
    glob_t g;
    int n = 0;
    if (glob("/proc/[0-9]*", 0, NULL, &g) != 0)
        return 0;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        pid_t pid = (pid_t)atoi(g.gl_pathv[i] + 6);
        if (s_ppid(pid) == getpid() && dmp_test_pid_alive(pid))
            n++;
    }
    globfree(&g);
    return n;
}

static void
s_embedded_env(void)
{
    unsetenv("DMP_CLUSTER");
    unsetenv("DMP_AGENT");
    setenv("DMP_DMPD", dmp_test_bin("dmpd"), 1);
}

/* The happy path, as a program uses it: init, ask, fini. */
static void
test_dmp_init_starts_a_private_agent_and_fini_stops_it(void **state)
{
    dmp_test_sandbox_t *sb = *state;
    s_embedded_env();
    assert_dmp_ok(dmp_init());
    dmp_node_info_t *nodes;
    size_t n;
    assert_dmp_ok(dmp_nodes(&nodes, &n));
    assert_int_equal(n, 1);
    assert_int_equal(nodes[0].state, DMP_NODE_ALIVE);
    assert_string_equal(nodes[0].address, ""); /* ipc only, no tcp port */
    assert_true(nodes[0].cores >= 1);
    dmp_nodes_free(&nodes);

    /* the agent is our child, in a 0700 directory under TMPDIR */
    char rundir[PATH_MAX];
    assert_true(s_find_rundir(sb->dir, rundir, sizeof rundir));
    pid_t agent = s_lock_pid(rundir);
    assert_true(agent > 0);
    assert_true(dmp_test_pid_alive(agent));
    assert_int_equal(s_ppid(agent), getpid());
    struct stat st;
    assert_int_equal(stat(rundir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    dmp_fini();
    assert_false(dmp_test_pid_alive(agent));
    assert_int_equal(s_live_children(), 0);
    assert_int_not_equal(access(rundir, F_OK), 0);
    assert_null(dmp_default_client());
    assert_dmp_err(dmp_nodes(&nodes, &n), -EBADF);
    dmp_fini(); /* twice is fine */
}

static void
test_dmp_init_twice_keeps_one_agent_and_init_after_fini_works(void **state)
{
    dmp_test_sandbox_t *sb = *state;
    s_embedded_env();
    assert_dmp_ok(dmp_init());
    dmp_client_t *first = dmp_default_client();
    assert_non_null(first);
    assert_dmp_ok(dmp_init());
    assert_ptr_equal(dmp_default_client(), first);
    assert_int_equal(s_live_children(), 1);
    dmp_fini();

    assert_dmp_ok(dmp_init());
    char rundir[PATH_MAX];
    assert_true(s_find_rundir(sb->dir, rundir, sizeof rundir));
    assert_dmp_ok(dmp_client_ping(dmp_default_client()));
    dmp_fini();
    assert_int_equal(s_live_children(), 0);
    assert_false(s_find_rundir(sb->dir, rundir, sizeof rundir));
}

static void
test_dmp_init_without_dmpd_fails_with_enoagent(void **state)
{
    dmp_test_sandbox_t *sb = *state;
    s_embedded_env();
    char missing[PATH_MAX + 16];
    snprintf(missing, sizeof missing, "%s/no-such-dmpd", sb->dir);
    setenv("DMP_DMPD", missing, 1);
    assert_dmp_err(dmp_init(), DMP_ENOAGENT);
    assert_null(dmp_default_client());
    char rundir[PATH_MAX];
    assert_false(s_find_rundir(sb->dir, rundir, sizeof rundir));
    assert_int_equal(s_live_children(), 0);
    /* an agent that refuses to start (here: not even a dmpd) */
    setenv("DMP_DMPD", "/bin/false", 1);
    assert_dmp_err(dmp_init(), DMP_ENOAGENT);
    assert_false(s_find_rundir(sb->dir, rundir, sizeof rundir));
    assert_int_equal(s_live_children(), 0);
}

/* ---- a program that dies with its embedded agent running ----------------- */

/* Child mode: dmp_init, report "ready" on stdout, then wait to be killed
 * (mode "wait") or return from main without dmp_fini (mode "exit"). */
static int
s_child_main(const char *mode)
{
    int rc = dmp_init();
    if (rc) {
        fprintf(stderr, "child: dmp_init: %s\n", dmp_strerror(rc));
        return 1;
    }
    dmp_node_info_t *nodes;
    size_t n;
    rc = dmp_nodes(&nodes, &n);
    if (rc == 0)
        dmp_nodes_free(&nodes);
    printf("ready %d\n", rc == 0 ? (int)n : rc);
    fflush(stdout);
    if (strcmp(mode, "exit") == 0) {
        /* Wait for the test's go (EOF on stdin), so that it sees this
         * process alive first; then return without dmp_fini: the agent
         * must notice anyway. */
        char c;
        while (read(0, &c, 1) > 0)
            ;
        return 0;
    }
    for (;;)
        pause();
}

typedef struct {
    pid_t pid;
    int pidfd;
    int out; /* read end of the child's stdout */
    int in;  /* write end of its stdin: closing it lets "exit" mode end */
} s_child_t;

static void
s_spawn_child(const char *mode, s_child_t *child)
{
    int fds[2], in[2];
    assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
    assert_int_equal(pipe2(in, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    char *argv[] = {"/proc/self/exe", "--embedded-child", (char *)mode,
                    NULL};
    int err = posix_spawn(&child->pid, "/proc/self/exe", &fa, NULL, argv,
                          environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    close(in[0]);
    child->in = in[1];
    assert_int_equal(err, 0);
    child->pidfd = (int)syscall(SYS_pidfd_open, child->pid, 0);
    assert_true(child->pidfd >= 0);
    child->out = fds[0];
}

/* Reads the child's "ready N" line within timeout; N is the node count
 * it saw. */
static int
s_child_ready(s_child_t *child, double timeout)
{
    char line[64] = "";
    size_t got = 0;
    double deadline = dmp_test_now() + timeout;
    while (!memchr(line, '\n', got) && got < sizeof line - 1) {
        struct pollfd p = {child->out, POLLIN, 0};
        double left = deadline - dmp_test_now();
        if (left <= 0 || poll(&p, 1, (int)(left * 1000) + 1) <= 0)
            return -ETIMEDOUT;
        ssize_t r = read(child->out, line + got, sizeof line - 1 - got);
        if (r <= 0)
            return -EPIPE;
        got += (size_t)r;
    }
    line[got] = '\0';
    int n = -1;
    return sscanf(line, "ready %d", &n) == 1 ? n : -EPROTO;
}

static int
s_child_reap(s_child_t *child)
{
    int status = 0;
    if (child->in >= 0)
        close(child->in);
    waitpid(child->pid, &status, 0);
    close(child->pidfd);
    close(child->out);
    return status;
}

static void
s_child_dies_agent_follows(dmp_test_sandbox_t *sb, const char *mode,
                           int signal_to_send)
{
    s_embedded_env();
    s_child_t child;
    s_spawn_child(mode, &child);
    assert_int_equal(s_child_ready(&child, 10.0), 1);
    char rundir[PATH_MAX];
    assert_true(s_find_rundir(sb->dir, rundir, sizeof rundir));
    pid_t agent = s_lock_pid(rundir);
    assert_true(agent > 0);
    assert_int_equal(s_ppid(agent), child.pid); /* the child's agent */

    if (signal_to_send)
        assert_int_equal(syscall(SYS_pidfd_send_signal, child.pidfd,
                                 signal_to_send, NULL, 0),
                         0);
    int status = s_child_reap(&child);
    if (signal_to_send)
        assert_true(WIFSIGNALED(status) &&
                    WTERMSIG(status) == signal_to_send);
    else
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* The orphaned agent reads EOF on its control socket and exits; this
     * process is the subreaper, so it can wait for and reap it. */
    double t0 = dmp_test_now();
    bool gone = dmp_test_wait_pid_gone(agent, 5.0);
    print_message("# agent %d %s %.2f s after its program ended\n",
                  (int)agent, gone ? "exited" : "still runs",
                  dmp_test_now() - t0);
    assert_true(gone);
    /* it cleaned up after itself: socket, lock, directory */
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/dmpd.sock", rundir);
    assert_int_not_equal(access(path, F_OK), 0);
    snprintf(path, sizeof path, "%s/dmpd.lock", rundir);
    assert_int_not_equal(access(path, F_OK), 0);
    assert_int_equal(s_live_children(), 0);
}

static void
test_program_killed_with_sigkill_takes_its_agent_along(void **state)
{
    s_child_dies_agent_follows(*state, "wait", SIGKILL);
}

static void
test_program_ended_by_sigterm_takes_its_agent_along(void **state)
{
    s_child_dies_agent_follows(*state, "wait", SIGTERM);
}

static void
test_program_returning_without_fini_takes_its_agent_along(void **state)
{
    s_child_dies_agent_follows(*state, "exit", 0);
}

int
main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--embedded-child") == 0)
        return s_child_main(argv[2]);
    dmp_test_init(120);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_dmp_init_starts_a_private_agent_and_fini_stops_it, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(
            test_dmp_init_twice_keeps_one_agent_and_init_after_fini_works,
            s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_dmp_init_without_dmpd_fails_with_enoagent, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(
            test_program_killed_with_sigkill_takes_its_agent_along, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(
            test_program_ended_by_sigterm_takes_its_agent_along, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(
            test_program_returning_without_fini_takes_its_agent_along,
            s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
