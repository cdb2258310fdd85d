/*
 * dmp_keys.c - Curve key files: generate, load, validate, fingerprint.
 *
 * A key file holds '#' comment lines and one line of 40 Z85 characters.
 * NAME.key holds the secret key and must be mode 0600 (checked on the open
 * descriptor, so a swap between check and read cannot fool us); NAME.pub
 * holds the public key. Secrets live only in fixed arrays and are wiped
 * with sodium_memzero; they are never logged.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

static const char s_z85_alphabet[] =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    ".-:+=^!/*?&<>()[]{}@%$#";

bool
dmp__z85_key_valid(const char *z85)
{
    if (strlen(z85) != DMP__Z85_KEY_LEN)
        return false;
    for (const char *p = z85; *p; p++)
        if (!strchr(s_z85_alphabet, *p))
            return false;
    uint8_t bin[32];
    bool ok = zmq_z85_decode(bin, z85) != NULL;
    sodium_memzero(bin, sizeof bin);
    return ok;
}

/* Reads the one key line of an open key file into out (41 bytes). */
static int
s_read_key_line(int fd, const char *path, char *out, char *err, size_t errlen)
{
    /* Key files are small: comments and one line. Read all of it (up to a
     * bound), and refuse NUL bytes, which would hide what follows. */
    char buf[16384];
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof buf - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "cannot read key file '%s': %s", path,
                     strerror(errno));
            return DMP_EKEY;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n == sizeof buf - 1) {
            snprintf(err, errlen, "key file '%s' is too large", path);
            sodium_memzero(buf, sizeof buf);
            return DMP_EKEY;
        }
    }
    buf[n] = '\0';
    if (memchr(buf, '\0', n)) {
        snprintf(err, errlen, "malformed key file '%s': contains a NUL byte",
                 path);
        sodium_memzero(buf, sizeof buf);
        return DMP_EKEY;
    }
    int found = 0;
    int rc = 0;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        while (*line == ' ' || *line == '\t')
            line++;
        size_t len = strlen(line);
        while (len && (line[len - 1] == ' ' || line[len - 1] == '\t' ||
                       line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0 || line[0] == '#')
            continue;
        if (found++ || !dmp__z85_key_valid(line)) {
            rc = DMP_EKEY;
            break;
        }
        memcpy(out, line, DMP__Z85_KEY_LEN + 1);
    }
    sodium_memzero(buf, sizeof buf);
    if (rc == 0 && found != 1)
        rc = DMP_EKEY;
    if (rc)
        snprintf(err, errlen,
                 "malformed key file '%s': expected one line of 40 Z85 "
                 "characters",
                 path);
    return rc;
}

int
dmp__key_load_secret(const char *path, dmp__keypair_t *kp, char *err,
                     size_t errlen)
{
    memset(kp, 0, sizeof *kp);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open secret key '%s': %s", path,
                 strerror(errno));
        return DMP_EKEY;
    }
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "secret key '%s' is not a regular file", path);
        rc = DMP_EKEY;
    } else if (st.st_mode & 077) {
        snprintf(err, errlen,
                 "secret key '%s' is readable by others (mode %03o); "
                 "run: chmod 600 '%s'",
                 path, (unsigned)(st.st_mode & 0777), path);
        rc = DMP_EKEY;
    } else {
        rc = s_read_key_line(fd, path, kp->secret_z85, err, errlen);
    }
    close(fd);
    if (rc == 0 && zmq_curve_public(kp->public_z85, kp->secret_z85) != 0) {
        snprintf(err, errlen, "cannot derive public key from '%s'", path);
        rc = DMP_EKEY;
    }
    if (rc)
        dmp__keypair_wipe(kp);
    return rc;
}

int
dmp__key_load_public(const char *path_or_z85, char out[DMP__Z85_KEY_LEN + 1],
                     char *err, size_t errlen)
{
    /* A file wins: Z85's alphabet has '/', '.' and '-', so a 40-character
     * path can look like a key. */
    int fd = open(path_or_z85, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && dmp__z85_key_valid(path_or_z85)) {
        memcpy(out, path_or_z85, DMP__Z85_KEY_LEN + 1);
        return 0;
    }
    if (fd < 0) {
        snprintf(err, errlen, "cannot open public key '%s': %s", path_or_z85,
                 strerror(errno));
        return DMP_EKEY;
    }
    int rc = s_read_key_line(fd, path_or_z85, out, err, errlen);
    close(fd);
    return rc;
}

void
dmp__key_fingerprint(const uint8_t key[32], char out[13])
{
    uint8_t hash[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(hash, key, 32);
    sodium_bin2hex(out, 13, hash, 6);
}

void
dmp__key_fingerprint_z85(const char *z85, char out[13])
{
    uint8_t bin[32];
    if (strlen(z85) != DMP__Z85_KEY_LEN || !zmq_z85_decode(bin, z85)) {
        dmp__strlcpy(out, "invalid", 13);
        return;
    }
    dmp__key_fingerprint(bin, out);
}

void
dmp__keypair_wipe(dmp__keypair_t *kp)
{
    sodium_memzero(kp, sizeof *kp);
}

int
dmp__keys_dir_check(const char *dir, char *err, size_t errlen)
{
    struct stat st;
    if (stat(dir, &st) != 0) {
        snprintf(err, errlen, "cannot open keys directory '%s': %s", dir,
                 strerror(errno));
        return DMP_EKEY;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "keys directory '%s' is not a directory", dir);
        return DMP_EKEY;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        snprintf(err, errlen,
                 "keys directory '%s' is writable by others (mode %03o): "
                 "anyone could add a key; run: chmod go-w '%s'",
                 dir, (unsigned)(st.st_mode & 0777), dir);
        return DMP_EKEY;
    }
    return 0;
}

/* Writes text to a new file; O_EXCL so an existing key is never lost. */
static int
s_write_new(const char *path, mode_t mode, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    int rc = 0;
    size_t len = strlen(text);
    if (fchmod(fd, mode) != 0 || write(fd, text, len) != (ssize_t)len ||
        fsync(fd) != 0)
        rc = errno ? -errno : -EIO;
    close(fd);
    if (rc)
        unlink(path);
    return rc;
}

int
dmp_keygen(const char *dir, const char *name)
{
    if (!dir || !name || !dmp__name_valid(name))
        return -EINVAL;
    char sec_path[PATH_MAX], pub_path[PATH_MAX];
    if (snprintf(sec_path, sizeof sec_path, "%s/%s.key", dir, name) >=
            (int)sizeof sec_path ||
        snprintf(pub_path, sizeof pub_path, "%s/%s.pub", dir, name) >=
            (int)sizeof pub_path)
        return -ENAMETOOLONG;
    if (access(sec_path, F_OK) == 0 || access(pub_path, F_OK) == 0)
        return -EEXIST;
    dmp__keypair_t kp;
    if (zmq_curve_keypair(kp.public_z85, kp.secret_z85) != 0)
        return -ENOTSUP;
    char text[256];
    snprintf(text, sizeof text,
             "# dmp secret key '%s': keep private (mode 0600)\n%s\n", name,
             kp.secret_z85);
    int rc = s_write_new(sec_path, 0600, text);
    sodium_memzero(text, sizeof text);
    if (rc == 0) {
        snprintf(text, sizeof text, "# dmp public key '%s'\n%s\n", name,
                 kp.public_z85);
        rc = s_write_new(pub_path, 0644, text);
        if (rc)
            unlink(sec_path);
    }
    dmp__keypair_wipe(&kp);
    return rc;
}
