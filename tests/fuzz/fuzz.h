/*
 * fuzz.h - what every fuzz harness shares.
 *
 * A harness is one file, tests/fuzz/fuzz_NAME.c, that feeds one decoder
 * hostile bytes and checks the decoder's promises (never crash, reject
 * with the documented code, leave nothing allocated, accept only what is
 * valid). It is built two ways:
 *
 *   - alone, with clang -fsanitize=fuzzer: FUZZ_TARGET(NAME) becomes
 *     LLVMFuzzerTestOneInput (make fuzz, tests/fuzz/run.sh);
 *   - #included by tests/fuzz/replay.c with FUZZ_REPLAY defined: it
 *     becomes fuzz_NAME(), and the replay runs the committed corpus
 *     tests/fuzz/corpus/NAME/ through it in the normal make test, with
 *     gcc and no libFuzzer.
 *
 * Because the replay puts every harness in one translation unit, each
 * harness prefixes its file-local names with its own (s_wire_..., ...).
 *
 * A broken promise calls FUZZ_CHECK's fuzz_fail, which prints what and
 * aborts: libFuzzer saves the input as a crash, the replay names the file.
 */
#ifndef DMP_FUZZ_H
#define DMP_FUZZ_H

#include "dmp_impl.h"

#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef FUZZ_REPLAY
#define FUZZ_TARGET(name)                                                    \
    int fuzz_##name(const uint8_t *data, size_t size);                      \
    int fuzz_##name(const uint8_t *data, size_t size)
#else
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
#define FUZZ_TARGET(name)                                                    \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
#endif

/* A broken promise: print where and what, then abort. */
#define FUZZ_CHECK(cond, ...)                                                \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: fuzz check failed: %s: ", __FILE__,      \
                    __LINE__, #cond);                                        \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
            abort();                                                         \
        }                                                                    \
    } while (0)

/* A deterministic small number from the input, for choices a harness
 * makes on the input's behalf (which allocation to fail): the same bytes
 * always take the same path, so a crash replays. */
static inline uint64_t
fuzz_hash(const uint8_t *data, size_t size)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 1099511628211ull;
    return h;
}

/* Strict mode: also check promises that open findings break (see
 * tests/fuzz/README.md). Off while fuzzing, so that the fuzzer does
 * not stop at a known finding again and again; the replay turns it on for
 * the inputs in findings/. FUZZ_STRICT=1 turns it on anywhere. */
static int fuzz_strict_mode = -1;

static inline bool
fuzz_strict(void)
{
    if (fuzz_strict_mode < 0)
        fuzz_strict_mode = getenv("FUZZ_STRICT") != NULL;
    return fuzz_strict_mode;
}

/* ---- files: one scratch directory per process ----------------------- */

static char fuzz_tmp_path[PATH_MAX];

static inline void
fuzz_tmpdir_remove(void)
{
    if (fuzz_tmp_path[0])
        dmp__rmtree(fuzz_tmp_path);
}

/* $TMPDIR/dmp-fuzz.XXXXXX, made on first use and removed at exit (a
 * crash leaves it: the inputs that were in it are saved anyway). */
static inline const char *
fuzz_tmpdir(void)
{
    if (!fuzz_tmp_path[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(fuzz_tmp_path, sizeof fuzz_tmp_path, "%s/dmp-fuzz.XXXXXX",
                 t && *t ? t : "/tmp");
        FUZZ_CHECK(mkdtemp(fuzz_tmp_path) != NULL, "mkdtemp %s: %s",
                   fuzz_tmp_path, strerror(errno));
        atexit(fuzz_tmpdir_remove);
    }
    return fuzz_tmp_path;
}

/* path := the bytes, with exactly that mode. */
static inline void
fuzz_write_file(const char *path, const uint8_t *data, size_t size,
                mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    FUZZ_CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
    FUZZ_CHECK(fchmod(fd, mode) == 0, "fchmod: %s", strerror(errno));
    for (size_t off = 0; off < size;) {
        ssize_t n = write(fd, data + off, size - off);
        FUZZ_CHECK(n > 0, "write %s: %s", path, strerror(errno));
        off += (size_t)n;
    }
    close(fd);
}

/* Code under test that reports on stderr (the agent's config errors)
 * would flood the fuzzer's output: fuzz_quiet(true) sends fd 2 to
 * /dev/null until fuzz_quiet(false). FUZZ_VERBOSE=1 keeps it, to read
 * a crash report from inside such a call. */
static inline void
fuzz_quiet(bool on)
{
    static int saved = -1;
    static int verbose = -1;
    if (verbose < 0)
        verbose = getenv("FUZZ_VERBOSE") != NULL;
    if (verbose)
        return;
    fflush(stderr);
    if (on && saved < 0) {
        int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
        saved = fcntl(2, F_DUPFD_CLOEXEC, 3);
        if (null >= 0 && saved >= 0)
            dup2(null, 2);
        if (null >= 0)
            close(null);
    } else if (!on && saved >= 0) {
        dup2(saved, 2);
        close(saved);
        saved = -1;
    }
}

#endif /* DMP_FUZZ_H */
