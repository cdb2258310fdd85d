/*
 * dmp_test.h - helpers shared by the integration tests.
 *
 * A sandbox is a fresh temporary directory holding everything one test
 * needs: keys/ (the allow-list every agent reads, 0755), secret/ (0700,
 * secret keys), an allowed client keypair, one runtime directory and one
 * log per agent. Agents are real dmpd processes on free loopback ports,
 * started with posix_spawn and waited for by connecting and pinging them;
 * every wait has a deadline and polls a condition, never a bare sleep.
 *
 * Ownership: the sandbox owns its agents. dmp_test_sandbox_destroy kills
 * whatever still runs, reaps it and removes the directory, so a failed
 * assertion (cmocka longjmps out of the test, then runs the teardown)
 * leaves nothing behind. Agents are also tied to the test process through
 * dmpd's control socket (--control-fd): when the test binary is killed by
 * its timeout, its agents read EOF and exit.
 *
 * Include after the standard headers cmocka needs; this header includes
 * them itself, so including it first is fine too.
 */
#ifndef DMP_TEST_H
#define DMP_TEST_H

#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cmocka.h>

#include "dmp.h"

/* ---- assertions that explain dmp error codes ------------------------- */

/* Fails the test unless expr is 0, printing the code's name and text. */
#define assert_dmp_ok(expr)                                                   \
    do {                                                                      \
        int dmp_test_rc_ = (expr);                                            \
        if (dmp_test_rc_ != 0) {                                              \
            print_error("%s:%d: %s -> %s (%s)\n", __FILE__, __LINE__, #expr, \
                        dmp_err_name(dmp_test_rc_),                           \
                        dmp_strerror(dmp_test_rc_));                          \
            fail();                                                           \
        }                                                                     \
    } while (0)

/* Fails the test unless expr returns exactly `want`. */
#define assert_dmp_err(expr, want)                                            \
    do {                                                                      \
        int dmp_test_rc_ = (expr), dmp_test_want_ = (want);                   \
        if (dmp_test_rc_ != dmp_test_want_) {                                 \
            print_error("%s:%d: %s -> %s (%s), expected %s\n", __FILE__,      \
                        __LINE__, #expr, dmp_err_name(dmp_test_rc_),          \
                        dmp_strerror(dmp_test_rc_),                           \
                        dmp_err_name(dmp_test_want_));                        \
            fail();                                                           \
        }                                                                     \
    } while (0)

/* Fails unless `haystack` contains `needle`, printing both. */
#define assert_contains(haystack, needle)                                     \
    do {                                                                      \
        const char *dmp_test_h_ = (haystack), *dmp_test_n_ = (needle);        \
        if (!dmp_test_h_ || !strstr(dmp_test_h_, dmp_test_n_)) {              \
            print_error("%s:%d: '%s' does not contain '%s'\n", __FILE__,      \
                        __LINE__, dmp_test_h_ ? dmp_test_h_ : "(null)",       \
                        dmp_test_n_);                                         \
            fail();                                                           \
        }                                                                     \
    } while (0)

/* ---- process-wide set-up --------------------------------------------- */

/*
 * Call first in main: ignores SIGPIPE, makes this process the reaper of
 * its orphaned descendants (so the embedded agent of a killed child can be
 * reaped here, not left to a PID 1 that does not reap), and arms an alarm
 * of `timeout` seconds that kills the whole binary if a test hangs.
 */
void dmp_test_init(unsigned timeout);

/* Monotonic seconds. */
double dmp_test_now(void);

/* Polls cond(arg) every few milliseconds until it returns true or
 * `timeout` seconds pass. Returns the last value of cond. */
bool dmp_test_wait_until(bool (*cond)(void *arg), void *arg, double timeout);

/* ---- files and binaries ---------------------------------------------- */

/* Path of a built program ("dmpd", "dmp"): $DMP_BUILD/bin/NAME when
 * DMP_BUILD is set, else bin/NAME two levels above this test binary
 * ($(B)/tests/integration/test_x -> $(B)/bin/NAME). Static storage, one
 * slot per name. */
const char *dmp_test_bin(const char *name);

/* mkdtemp under $TMPDIR (or /tmp); fills out (PATH_MAX). 0 or -errno. */
int dmp_test_mkdtemp(const char *prefix, char *out, size_t size);
/* Removes path and everything under it; ignores what does not exist. */
int dmp_test_rmtree(const char *path);
/* Writes text to path with mode (created or truncated). 0 or -errno. */
int dmp_test_write_file(const char *path, int mode, const char *text);
/* Reads a whole file. Caller owns the result; free with free(). NULL if
 * it cannot be read. */
char *dmp_test_read_file(const char *path);
/* Copies a small file (keys). 0 or -errno. */
int dmp_test_copy_file(const char *from, const char *to, int mode);
/* The 40 Z85 characters of a .pub or .key file (its one non-comment
 * line) into out[41]. Read here, independently of libdmp's loader, so
 * tests can check what the library makes of the same file. 0 or -EINVAL. */
int dmp_test_read_key(const char *path, char out[41]);

/* ---- processes --------------------------------------------------------- */

/* Number of open descriptors of pid (entries of /proc/PID/fd), or -1. */
int dmp_test_count_fds(pid_t pid);
/* True while pid exists and is not a zombie (this machine's PID 1 does not
 * reap, so exited detached processes linger as zombies). */
bool dmp_test_pid_alive(pid_t pid);
/* Waits until pid is gone or a zombie; reaps it if it is ours. */
bool dmp_test_wait_pid_gone(pid_t pid, double timeout);
/* Resident memory of pid in KiB (VmRSS), or -1. */
long dmp_test_rss_kib(pid_t pid);
/* How many dmpd processes this binary started are still running. 0 means
 * nothing leaked. */
int dmp_test_agents_running(void);

/* ---- the sandbox ------------------------------------------------------- */

typedef struct dmp_test_agent dmp_test_agent_t;

#define DMP_TEST_AGENTS_MAX 16

typedef struct {
    char dir[PATH_MAX];        /* the temporary directory */
    char keys_dir[PATH_MAX];   /* DIR/keys: allow-list (NAME.pub), 0755 */
    char nodes_dir[PATH_MAX];  /* DIR/keys/nodes: node keys, 0755 */
    char secret_dir[PATH_MAX]; /* DIR/secret: secret keys, 0700 */
    char client_key[PATH_MAX]; /* DIR/secret/client.key, in the allow-list */
    char client_pub[PATH_MAX]; /* DIR/keys/client.pub */
    dmp_test_agent_t *agents[DMP_TEST_AGENTS_MAX]; /* owned */
    size_t n_agents;
} dmp_test_sandbox_t;

/* Makes the directory tree and the client key. */
int dmp_test_sandbox_new(dmp_test_sandbox_t **sb_p);
/* Kills and reaps every agent still running, removes the directory (unless
 * DMP_TEST_KEEP is set, for post-mortems). Safe on NULL. */
void dmp_test_sandbox_destroy(dmp_test_sandbox_t **sb_p);

/* A keypair NAME in DIR/secret; with `publish`, NAME.pub is also copied
 * into the allow-list. Fills the secret key path (PATH_MAX) if asked. */
int dmp_test_sandbox_key(dmp_test_sandbox_t *sb, const char *name,
                         bool publish, char *secret_path);

/* ---- agents ------------------------------------------------------------ */

struct dmp_test_agent {
    dmp_test_sandbox_t *sb;     /* borrowed: the owner */
    char name[64];              /* node name */
    int port;                   /* loopback tcp port (kept across restarts) */
    char address[64];           /* tcp://127.0.0.1:PORT */
    char ipc_address[PATH_MAX + 8]; /* ipc://RUNTIME/dmpd.sock */
    char key_file[PATH_MAX];    /* node secret key */
    char pub_file[PATH_MAX];    /* node public key, in the allow-list */
    char keys_dir[PATH_MAX];    /* allow-list it reads (sandbox's default) */
    char runtime_dir[PATH_MAX]; /* DIR/run/NAME */
    char log_path[PATH_MAX];    /* DIR/NAME.log: stdout and stderr */
    double heartbeat;           /* 0: dmpd's default */
    unsigned liveness;          /* 0: dmpd's default */
    bool tied;                  /* --control-fd to us: it exits when this
                                   process does (default true) */
    char *peers[DMP_TEST_AGENTS_MAX]; /* NAME@ADDR, owned */
    size_t n_peers;
    char *extra[16];            /* more dmpd arguments, owned */
    size_t n_extra;
    pid_t pid;                  /* running process, 0 when none */
    int pidfd;                  /* for signals and waiting; -1 when none */
    int control_fd;             /* our end of its --control-fd; -1 */
    int status;                 /* wait status of the last exit */
};

/*
 * Prepares an agent NAME: a fresh node keypair (published), a free port,
 * paths. Nothing runs yet: add peers or options, then start it.
 * Borrowed; owned by the sandbox.
 */
int dmp_test_agent_new(dmp_test_sandbox_t *sb, const char *name,
                       dmp_test_agent_t **agent_p);
/* Makes `peer` one of a's configured peers (NAME@ADDRESS). */
void dmp_test_agent_add_peer(dmp_test_agent_t *a,
                             const dmp_test_agent_t *peer);
/* Appends one raw dmpd argument (copied). */
void dmp_test_agent_add_arg(dmp_test_agent_t *a, const char *arg);

/* Spawns dmpd with a's settings (stdout and stderr appended to the log).
 * Does not wait for it to serve. 0 or -errno. */
int dmp_test_agent_spawn(dmp_test_agent_t *a);
/* Waits until a answers a ping over tcp as the sandbox's client (or over
 * ipc when it does not listen). Returns 0, or the last connect error, or
 * -ECHILD when it exited meanwhile (its status is kept in a->status). */
int dmp_test_agent_wait_ready(dmp_test_agent_t *a, double timeout);
/* spawn + wait_ready(10 s). */
int dmp_test_agent_start(dmp_test_agent_t *a);
/* Waits for the agent to exit by itself; reaps it. Returns its exit code
 * (0-255), 128+signal when killed, -ETIMEDOUT when still running. */
int dmp_test_agent_wait_exit(dmp_test_agent_t *a, double timeout);
/* SIGTERM and wait up to `timeout` s: returns as dmp_test_agent_wait_exit.
 * On timeout it is SIGKILLed and reaped, and -ETIMEDOUT returned. */
int dmp_test_agent_stop(dmp_test_agent_t *a, double timeout);
/* SIGKILL and reap. */
void dmp_test_agent_kill(dmp_test_agent_t *a);
bool dmp_test_agent_is_running(dmp_test_agent_t *a);

/* Connects to a as the sandbox's client: tcp with the client key and a's
 * pinned public key. errbuf may be NULL. */
int dmp_test_agent_connect(const dmp_test_agent_t *a, dmp_client_t **client_p,
                           char *errbuf, size_t errlen);
/* Same over the agent's local ipc endpoint. */
int dmp_test_agent_connect_ipc(const dmp_test_agent_t *a,
                               dmp_client_t **client_p);
/* A fresh, separate client connects over tcp and pings: the agent still
 * serves others. 0 or the failing call's code. */
int dmp_test_agent_ping(const dmp_test_agent_t *a);

/* Counts the nodes `client` lists in `state` (itself included), or a
 * negative dmp code when the request fails. */
int dmp_test_count_nodes(dmp_client_t *client, dmp_node_state_t state);
/* The state `client`'s agent reports for node `name`; -ENOENT if it does
 * not list it, or a negative dmp code. */
int dmp_test_node_state(dmp_client_t *client, const char *name);
/* Waits until `client` lists exactly `want` nodes alive. 0, -ETIMEDOUT. */
int dmp_test_wait_alive(dmp_client_t *client, int want, double timeout);
/* Makes each of the n agents a peer of every other. */
void dmp_test_agents_mesh(dmp_test_agent_t **agents, size_t n);
/* Spawns the n agents, waits until each serves and sees all n alive. */
int dmp_test_agents_start(dmp_test_agent_t **agents, size_t n);
/* dmp_init_opts on a's local socket: this program becomes a's local
 * process. Prints the reason of a failure. */
int dmp_test_init_ipc(const dmp_test_agent_t *a);
/* Waits until each of the n agents lists all n alive. 0, -ETIMEDOUT. */
int dmp_test_agents_wait_alive(dmp_test_agent_t **agents, size_t n,
                               double timeout);
/* Waits until `client` reports node `name` in `state`. 0, -ETIMEDOUT. */
int dmp_test_wait_node_state(dmp_client_t *client, const char *name,
                             dmp_node_state_t state, double timeout);

/* True when one line of a's log contains every one of the NULL-terminated
 * needles. */
bool dmp_test_log_has(const dmp_test_agent_t *a, ...);
/* Waits up to `timeout` for such a line. */
bool dmp_test_log_wait(const dmp_test_agent_t *a, double timeout, ...);
/* Same for any log file. */
bool dmp_test_file_has_line(const char *path, const char *const *needles);
/* Prints a's log through cmocka (on failure paths, to see why). */
void dmp_test_agent_dump_log(const dmp_test_agent_t *a);

#endif /* DMP_TEST_H */
