/*
 * replay.c - runs the committed fuzz corpus through every harness,
 * without libFuzzer: part of the normal make test, built by the Makefile's
 * tests/% rule like any test (so with gcc, and with the sanitizers in
 * make test-asan).
 *
 *   replay [CORPUS_DIR]                 every harness on CORPUS_DIR/NAME/
 *   replay -t NAME FILE...              one harness on the given files
 *
 * CORPUS_DIR defaults to $DMP_FUZZ_CORPUS, else tests/fuzz/corpus (make
 * runs tests from the top of the tree). A harness without a corpus
 * directory, or with an empty one, fails the run: a corpus that went
 * missing must not pass as "nothing to replay".
 *
 * Then the open findings: findings/NAME/ beside CORPUS_DIR holds inputs that
 * show a bug not fixed yet. Each runs in a child in strict mode and is
 * expected to fail; the run says which still fail and which pass now (fixed:
 * move the file into the corpus), but findings never fail the run, so a
 * known bug does not block everyone's make test.
 */
#define _GNU_SOURCE
#define FUZZ_REPLAY 1

#include "fuzz_cache.c"
#include "fuzz_config.c"
#include "fuzz_keys.c"
#include "fuzz_ring_header.c"
#include "fuzz_shared_header.c"
#include "fuzz_value.c"
#include "fuzz_wire.c"

#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>

typedef int (*s_target_fn)(const uint8_t *data, size_t size);

static const struct {
    const char *name;
    s_target_fn fn;
} s_targets[] = {
    {"cache", fuzz_cache},   {"config", fuzz_config},
    {"keys", fuzz_keys},     {"ring_header", fuzz_ring_header},
    {"shared_header", fuzz_shared_header},
    {"value", fuzz_value},   {"wire", fuzz_wire},
};
#define S_N_TARGETS (sizeof s_targets / sizeof s_targets[0])

/* The input being replayed, for the crash handler. */
static char s_current[PATH_MAX];

static void
s_on_crash(int sig)
{
    /* Async-signal-safe: write(2) only, then the default action. */
    static const char msg[] = "\nfuzz replay: crashed on input ";
    ssize_t n = write(2, msg, sizeof msg - 1);
    n = write(2, s_current, strlen(s_current));
    n = write(2, "\n", 1);
    (void)n;
    signal(sig, SIG_DFL);
    raise(sig);
}

static void
s_catch_crashes(void)
{
    int sigs[] = {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = s_on_crash;
        sa.sa_flags = SA_RESETHAND;
        sigaction(sigs[i], &sa, NULL);
    }
}

/* Reads a whole file into a new buffer (malloc; a zero-length file gets
 * a 1-byte buffer, so data is never NULL). */
static uint8_t *
s_read_file(const char *path, size_t *size_p)
{
    FILE *f = fopen(path, "rbe");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap);
    for (size_t n; buf && (n = fread(buf + len, 1, cap - len, f)) > 0;) {
        len += n;
        if (len == cap) {
            uint8_t *bigger = realloc(buf, cap *= 2);
            if (!bigger) {
                free(buf);
                buf = NULL;
            }
            buf = bigger;
        }
    }
    bool failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        return NULL;
    }
    *size_p = len;
    return buf;
}

static int
s_run_file(s_target_fn fn, const char *path)
{
    size_t size = 0;
    uint8_t *data = s_read_file(path, &size);
    if (!data) {
        fprintf(stderr, "fuzz replay: cannot read '%s': %s\n", path,
                strerror(errno));
        return -1;
    }
    dmp__strlcpy(s_current, path, sizeof s_current);
    fn(data, size);
    s_current[0] = '\0';
    free(data);
    return 0;
}

static int
s_name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The regular files of dir, sorted (a stable replay order); NULL-
 * terminated, *n_p of them; NULL when dir cannot be read. */
static char **
s_list_dir(const char *dir, size_t *n_p)
{
    DIR *d = opendir(dir);
    if (!d)
        return NULL;
    size_t n = 0, cap = 64;
    char **names = malloc(cap * sizeof *names);
    for (struct dirent *e; names && (e = readdir(d)) != NULL;) {
        char path[PATH_MAX];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (e->d_name[0] == '.' || stat(path, &st) != 0 ||
            !S_ISREG(st.st_mode))
            continue;
        if (n + 1 == cap) {
            char **bigger = realloc(names, (cap *= 2) * sizeof *names);
            if (!bigger)
                break;
            names = bigger;
        }
        names[n++] = strdup(path);
    }
    closedir(d);
    if (!names)
        return NULL;
    qsort(names, n, sizeof *names, s_name_cmp);
    names[n] = NULL;
    *n_p = n;
    return names;
}

static void
s_free_list(char **names)
{
    for (size_t i = 0; names && names[i]; i++)
        free(names[i]);
    free(names);
}

/* An open finding: run it in a child in strict mode; true when it still
 * fails there. */
static bool
s_finding_fails(s_target_fn fn, const char *path)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        fuzz_strict_mode = 1;
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0 && !getenv("FUZZ_VERBOSE"))
            dup2(null, 2);
        signal(SIGABRT, SIG_DFL);
        s_run_file(fn, path);
        _exit(0); /* no atexit: the scratch directory is the parent's */
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return false;
    s_ring_cleanup_pid(pid); /* a ring segment the child may have left */
    s_shh_cleanup_pid(pid);  /* a Value's segment likewise */
    return !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int
main(int argc, char **argv)
{
    s_catch_crashes();
    (void)fuzz_tmpdir(); /* made here, so children share and never own it */

    if (argc >= 3 && strcmp(argv[1], "-t") == 0) {
        for (size_t t = 0; t < S_N_TARGETS; t++) {
            if (strcmp(s_targets[t].name, argv[2]) != 0)
                continue;
            for (int i = 3; i < argc; i++) {
                if (s_run_file(s_targets[t].fn, argv[i]) != 0)
                    return 1;
                printf("fuzz replay: %s %s ok\n", argv[2], argv[i]);
            }
            return 0;
        }
        fprintf(stderr, "fuzz replay: no harness '%s'\n", argv[2]);
        return 2;
    }
    if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
        fprintf(stderr, "usage: replay [CORPUS_DIR] | replay -t NAME FILE...\n");
        return 2;
    }
    const char *corpus = argc == 2                     ? argv[1]
                         : getenv("DMP_FUZZ_CORPUS")   ? getenv("DMP_FUZZ_CORPUS")
                                                       : "tests/fuzz/corpus";
    int failures = 0;
    size_t total = 0;
    for (size_t t = 0; t < S_N_TARGETS; t++) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s/%s", corpus, s_targets[t].name);
        size_t n = 0;
        char **files = s_list_dir(dir, &n);
        if (!files || n == 0) {
            fprintf(stderr, "fuzz replay: %s: no corpus in '%s'\n",
                    s_targets[t].name, dir);
            failures++;
            s_free_list(files);
            continue;
        }
        for (size_t i = 0; i < n; i++)
            if (s_run_file(s_targets[t].fn, files[i]) != 0)
                failures++;
        printf("fuzz replay: %-12s %5zu inputs ok\n", s_targets[t].name, n);
        total += n;
        s_free_list(files);
    }

    /* Open findings: reported, never failing the run. */
    char findings[PATH_MAX];
    size_t clen = strlen(corpus);
    if (clen >= 7 && strcmp(corpus + clen - 7, "/corpus") == 0)
        snprintf(findings, sizeof findings, "%.*s/findings", (int)(clen - 7),
                 corpus);
    else
        snprintf(findings, sizeof findings, "%s/../findings", corpus);
    for (size_t t = 0; t < S_N_TARGETS; t++) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s/%s", findings, s_targets[t].name);
        size_t n = 0;
        char **files = s_list_dir(dir, &n);
        for (size_t i = 0; files && i < n; i++) {
            bool fails = s_finding_fails(s_targets[t].fn, files[i]);
            printf("fuzz replay: open finding %s: %s\n", files[i],
                   fails ? "still fails (expected until fixed)"
                         : "PASSES now: fixed? move it into the corpus");
        }
        s_free_list(files);
    }
    printf("fuzz replay: %zu inputs, %d failures\n", total, failures);
    return failures ? 1 : 0;
}
