/*
 * fuzz_keys.c - key files and key strings (dmp_keys.c): what
 * dmp__key_load_secret and dmp__key_load_public accept decides who may
 * join the cluster, so they must accept exactly the documented format.
 *
 * The input is a key file. Format (dmp_keys.c): '#' comment lines, blank
 * lines, and exactly one line of 40 Z85 characters, which may carry
 * spaces, tabs and a '\r' around it; no NUL byte anywhere (it would hide
 * what follows), under 16383 bytes. Promises checked:
 *   - both loaders accept the file exactly when that format says so
 *     (an independent reading of the bytes is the oracle), and hand out
 *     that very key; the public key derived from a secret one is valid;
 *   - a secret key file readable by group or others is refused, and the
 *     keypair is wiped;
 *   - dmp__z85_key_valid on the bytes as a string agrees with the oracle.
 */
#define _GNU_SOURCE
#include "fuzz.h"

#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

static const char s_keys_z85[] =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    ".-:+=^!/*?&<>()[]{}@%$#";

/* 40 characters of the alphabet, each group of 5 a 32-bit value. */
static bool
s_keys_z85_ok(const char *s, size_t len)
{
    if (len != DMP__Z85_KEY_LEN)
        return false;
    for (size_t g = 0; g < len; g += 5) {
        uint64_t v = 0;
        for (size_t i = g; i < g + 5; i++) {
            const char *at = s[i] ? strchr(s_keys_z85, s[i]) : NULL;
            if (!at)
                return false;
            v = v * 85 + (uint64_t)(at - s_keys_z85);
        }
        if (v > UINT32_MAX)
            return false;
    }
    return true;
}

/* The oracle: the key of a well-formed file into key, or false. */
static bool
s_keys_expect(const uint8_t *data, size_t size, char key[41])
{
    if (size >= 16383 || memchr(data, '\0', size))
        return false;
    int found = 0;
    for (size_t at = 0; at <= size;) {
        const uint8_t *nl = memchr(data + at, '\n', size - at);
        size_t end = nl ? (size_t)(nl - data) : size;
        size_t b = at;
        while (b < end && (data[b] == ' ' || data[b] == '\t'))
            b++;
        size_t e = end;
        while (e > b && (data[e - 1] == ' ' || data[e - 1] == '\t' ||
                         data[e - 1] == '\r'))
            e--;
        if (e > b && data[b] != '#') {
            if (found++ || !s_keys_z85_ok((const char *)data + b, e - b))
                return false;
            memcpy(key, data + b, 40);
            key[40] = '\0';
        }
        if (!nl)
            break;
        at = end + 1;
    }
    return found == 1;
}

FUZZ_TARGET(keys)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/node.key", fuzz_tmpdir());
    fuzz_write_file(path, data, size, 0600);

    char want[41] = "";
    bool ok = s_keys_expect(data, size, want);

    dmp__keypair_t kp;
    char err[512] = "";
    int rc = dmp__key_load_secret(path, &kp, err, sizeof err);
    FUZZ_CHECK((rc == 0) == ok, "secret key file %s (oracle: %s)%s%s",
               rc == 0 ? "accepted" : "refused", ok ? "valid" : "invalid",
               rc ? ": " : "", err);
    if (rc == 0) {
        FUZZ_CHECK(strcmp(kp.secret_z85, want) == 0, "loaded another key");
        FUZZ_CHECK(dmp__z85_key_valid(kp.secret_z85) &&
                       dmp__z85_key_valid(kp.public_z85),
                   "loaded keypair not valid Z85");
        char pub[41];
        FUZZ_CHECK(zmq_curve_public(pub, kp.secret_z85) == 0 &&
                       strcmp(pub, kp.public_z85) == 0,
                   "public key not derived from the secret");
        char fp[13];
        dmp__key_fingerprint_z85(kp.public_z85, fp);
        FUZZ_CHECK(strlen(fp) == 12 && strspn(fp, "0123456789abcdef") == 12,
                   "fingerprint '%s'", fp);
    } else {
        FUZZ_CHECK(rc == DMP_EKEY && err[0], "rc %d err '%s'", rc, err);
        static const dmp__keypair_t zero;
        FUZZ_CHECK(memcmp(&kp, &zero, sizeof kp) == 0, "keypair not wiped");
    }
    dmp__keypair_wipe(&kp);

    char pub[DMP__Z85_KEY_LEN + 1] = "";
    rc = dmp__key_load_public(path, pub, err, sizeof err);
    FUZZ_CHECK((rc == 0) == ok, "public key file %s (oracle: %s)",
               rc == 0 ? "accepted" : "refused", ok ? "valid" : "invalid");
    FUZZ_CHECK(rc != 0 || strcmp(pub, want) == 0, "loaded another key");
    FUZZ_CHECK(rc == 0 || rc == DMP_EKEY, "rc %d", rc);

    /* The same file readable by the group: refused whatever it holds. */
    FUZZ_CHECK(chmod(path, 0640) == 0, "chmod");
    rc = dmp__key_load_secret(path, &kp, err, sizeof err);
    FUZZ_CHECK(rc == DMP_EKEY && strstr(err, "readable by others"),
               "group-readable secret key: rc %d '%s'", rc, err);
    dmp__keypair_wipe(&kp);

    /* The bytes as a key string (--server-key Z85). */
    if (size <= 64 && !memchr(data, '\0', size)) {
        char s[65];
        memcpy(s, data, size);
        s[size] = '\0';
        FUZZ_CHECK(dmp__z85_key_valid(s) == s_keys_z85_ok(s, size),
                   "dmp__z85_key_valid('%s') disagrees with Z85", s);
        char fp[13];
        dmp__key_fingerprint_z85(s, fp);
        FUZZ_CHECK(memchr(fp, '\0', sizeof fp) != NULL, "fingerprint");
    }
    return 0;
}
