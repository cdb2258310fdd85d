/*
 * dmp_util.c - allocation indirection, logging, clocks, input checks.
 *
 * Every allocation in libdmp goes through dmp__malloc and friends so that
 * tests can fail the n-th one (SQLite-style fault loops). The library logs
 * nothing until the program installs a handler.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <math.h>
#include <unistd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* ---- allocation ------------------------------------------------------ */

static atomic_long s_alloc_countdown; /* > 0: fail when it reaches 0 */
static atomic_long s_alloc_count;     /* allocations since last reset */

static bool
s_alloc_should_fail(void)
{
    atomic_fetch_add(&s_alloc_count, 1);
    long left = atomic_load(&s_alloc_countdown);
    if (left <= 0)
        return false;
    return atomic_fetch_sub(&s_alloc_countdown, 1) == 1;
}

long
dmp__alloc_fail_after(long n)
{
    long made = atomic_exchange(&s_alloc_count, 0);
    atomic_store(&s_alloc_countdown, n > 0 ? n : 0);
    return made;
}

void *
dmp__malloc(size_t size)
{
    return s_alloc_should_fail() ? NULL : malloc(size ? size : 1);
}

void *
dmp__calloc(size_t n, size_t size)
{
    return s_alloc_should_fail() ? NULL : calloc(n ? n : 1, size ? size : 1);
}

void *
dmp__realloc(void *ptr, size_t size)
{
    return s_alloc_should_fail() ? NULL : realloc(ptr, size ? size : 1);
}

char *
dmp__strdup(const char *s)
{
    size_t len = strlen(s) + 1;
    char *copy = dmp__malloc(len);
    if (copy)
        memcpy(copy, s, len);
    return copy;
}

void
dmp__free(void *ptr)
{
    free(ptr);
}

/* ---- logging --------------------------------------------------------- */

static pthread_mutex_t s_log_lock = PTHREAD_MUTEX_INITIALIZER;
static dmp_log_fn s_log_fn;
static void *s_log_arg;
static atomic_int s_log_level = -1; /* -1: silent */

void
dmp_set_log_handler(dmp_log_fn fn, dmp_log_level_t level, void *arg)
{
    pthread_mutex_lock(&s_log_lock);
    s_log_fn = fn;
    s_log_arg = arg;
    atomic_store(&s_log_level, fn ? (int)level : -1);
    pthread_mutex_unlock(&s_log_lock);
}

bool
dmp__log_enabled(dmp_log_level_t level)
{
    return (int)level <= atomic_load(&s_log_level);
}

void
dmp__log(dmp_log_level_t level, const char *fmt, ...)
{
    if (!dmp__log_enabled(level))
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&s_log_lock);
    if (s_log_fn)
        s_log_fn(level, line, s_log_arg);
    pthread_mutex_unlock(&s_log_lock);
}

/* ---- clocks and strings ---------------------------------------------- */

double
dmp__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void
dmp__cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &attr);
    pthread_condattr_destroy(&attr);
}

struct timespec
dmp__deadline_in(double seconds)
{
    double at = dmp__now() + (seconds > 0 ? seconds : 0);
    struct timespec ts;
    ts.tv_sec = (time_t)at;
    ts.tv_nsec = (long)((at - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

uint64_t
dmp__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

size_t
dmp__strlcpy(char *dst, const char *src, size_t size)
{
    size_t len = strlen(src);
    if (size) {
        size_t n = len < size - 1 ? len : size - 1;
        memcpy(dst, src, n);
        dst[n] = '\0';
    }
    return len;
}

bool
dmp__name_valid(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len >= DMP__NAME_MAX || name[0] == '.')
        return false;
    for (const char *p = name; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

bool
dmp__endpoint_valid(const char *ep)
{
    size_t len = strlen(ep);
    if (len >= DMP__ADDR_MAX)
        return false;
    if (strncmp(ep, "tcp://", 6) != 0 && strncmp(ep, "ipc://", 6) != 0)
        return false;
    if (len <= 6)
        return false;
    for (const char *p = ep; *p; p++)
        if (*p <= ' ' || *p > '~')
            return false;
    /* ipc://@name is an abstract socket: no permissions protect it. */
    if (strncmp(ep, "ipc://@", 7) == 0)
        return false;
    if (strncmp(ep, "tcp://", 6) == 0) {
        const char *colon = strrchr(ep + 6, ':');
        if (!colon || colon == ep + 6 || colon[1] == '\0')
            return false;
        unsigned long port;
        if (strcmp(colon + 1, "*") != 0 &&
            (dmp__parse_uint(colon + 1, 65535, &port) != 0))
            return false;
    }
    return true;
}

bool
dmp__utf8_valid_n(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        /* ASCII, the common case, 8 bytes at a time. */
        while (end - p >= 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            if (w & 0x8080808080808080ull)
                break;
            p += 8;
        }
        if (p == end)
            break;
        unsigned char c = *p;
        int extra;
        uint32_t cp;
        if (c < 0x80) {
            p++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            extra = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            extra = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            extra = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (end - p <= extra)
            return false;
        for (int i = 1; i <= extra; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        /* Overlong forms, surrogates and values past U+10FFFF. */
        static const uint32_t min_cp[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[extra] || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        p += extra + 1;
    }
    return true;
}

bool
dmp__utf8_valid(const char *s)
{
    return dmp__utf8_valid_n(s, strlen(s));
}

long
dmp__timeout_ms(double seconds)
{
    if (isnan(seconds) || seconds <= 0)
        return 0;
    if (isinf(seconds) || seconds > 86400.0 * 24) /* > 24 days: forever */
        return -1;
    long ms = (long)ceil(seconds * 1000.0);
    return ms;
}

int
dmp__parse_seconds(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno || !isfinite(v) || v < 0)
        return -EINVAL;
    *out = v;
    return 0;
}

int
dmp__parse_uint(const char *s, unsigned long max, unsigned long *out)
{
    if (*s < '0' || *s > '9')
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (*end != '\0' || errno || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

void
dmp_free(void *ptr)
{
    dmp__free(ptr);
}

static int
s_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

int
dmp__rmtree(const char *path)
{
    /* FTW_PHYS: never follow a symlink out of the tree. */
    return nftw(path, s_rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -errno;
}

uint64_t
dmp__proc_start(pid_t pid, bool *zombie)
{
    char path[64], buf[1024];
    if (zombie)
        *zombie = false;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC); /* no stdio: no malloc */
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    /* "pid (comm) S ppid ...": comm may hold spaces and parentheses, so
     * fields are counted after the last ')'; starttime is field 22 (the
     * 23rd, vsize, changes as the process runs). */
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ')
        return 0;
    if (zombie)
        *zombie = p[2] == 'Z' || p[2] == 'X';
    for (int field = 2; field < 22 && p; field++)
        p = strchr(p + 1, ' ');
    return p ? strtoull(p + 1, NULL, 10) : 0;
}

uint64_t
dmp__proc_starttime(pid_t pid)
{
    bool zombie;
    uint64_t start = dmp__proc_start(pid, &zombie);
    return zombie ? 0 : start;
}

bool
dmp__proc_alive(pid_t pid, uint64_t start)
{
    if (pid <= 0)
        return false;
    if (kill(pid, 0) != 0 && errno == ESRCH)
        return false;
    bool zombie;
    uint64_t now = dmp__proc_start(pid, &zombie);
    if (zombie)
        return false;
    /* Unreadable /proc: kill said it is there. */
    return now == 0 || start == 0 || now == start;
}

/* ---- growable buffers ------------------------------------------------- */

uint8_t *
dmp__buf_room(dmp__buf_t *b, size_t more)
{
    if (b->err)
        return NULL;
    if (more > SIZE_MAX / 2 - b->len) {
        b->err = -ENOMEM;
        return NULL;
    }
    if (b->len + more > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + more)
            cap *= 2;
        uint8_t *grown = dmp__realloc(b->p, cap);
        if (!grown) {
            b->err = -ENOMEM;
            return NULL;
        }
        b->p = grown;
        b->cap = cap;
    }
    return b->p + b->len;
}

void
dmp__buf_put(dmp__buf_t *b, const void *data, size_t len)
{
    uint8_t *p = dmp__buf_room(b, len);
    if (p) {
        if (len)
            memcpy(p, data, len);
        b->len += len;
    }
}

void
dmp__buf_put_le(dmp__buf_t *b, uint64_t x, int bytes)
{
    uint8_t *p = dmp__buf_room(b, (size_t)bytes);
    if (p) {
        dmp__le_put(p, x, bytes);
        b->len += (size_t)bytes;
    }
}

void
dmp__buf_free(dmp__buf_t *b)
{
    dmp__free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- ports for throwaway local clusters ------------------------------ */

/* Whether port is free on loopback now (bind succeeds); 0 asks the
 * kernel for one. The port, or a negative errno. */
static int
s_try_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int rc = -EADDRNOTAVAIL;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        rc = ntohs(sa.sin_port);
    close(fd);
    return rc;
}

/* A free loopback port below the kernel's ephemeral range: a port from
 * that range can be taken before the agent binds by any outgoing
 * connection, even by the peers' own reconnects to it (a TCP connection
 * to a port nobody listens on can get that very port as its source, and
 * connect to itself). Another program could still take ours, a race a
 * throwaway cluster accepts. */
int
dmp__free_loopback_port(void)
{
    int low = 32768, high = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%d %d", &low, &high) != 2)
            low = 32768;
        fclose(f);
    }
    /* One sequence per process: two agents made in a row differ. */
    static unsigned seed;
    if (!seed)
        seed = ((unsigned)getpid() << 16) ^ (unsigned)time(NULL) ^ 1u;
    if (low > 11000) {
        for (int i = 0; i < 200; i++) {
            int port = 10000 + (int)(rand_r(&seed) % (unsigned)(low - 10000));
            if (s_try_port(port) == port)
                return port;
        }
    }
    return s_try_port(0);
}
