/*
 * dmp_error.c - texts and names for every code the library returns.
 *
 * Generated from DMP_ERRNO_MAP in dmp.h, so a new code needs no edit here.
 * Both functions return static strings, never NULL, for any input.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <stdio.h>
#include <string.h>

const char *
dmp_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
#define DMP_XX_TEXT(name, code, text) \
    case code:                        \
        return text;
        DMP_ERRNO_MAP(DMP_XX_TEXT)
#undef DMP_XX_TEXT
    default:
        break;
    }
    if (err < 0 && err > -4096) {
        /* strerror is not thread-safe in theory; glibc's table texts are
         * static for every known errno, which is all we pass here. */
        const char *name = strerrorname_np(-err);
        if (name)
            return strerror(-err);
    }
    return "unknown error";
}

const char *
dmp_err_name(int err)
{
    switch (err) {
    case 0:
        return "OK";
#define DMP_XX_NAME(name, code, text) \
    case code:                        \
        return "DMP_" #name;
        DMP_ERRNO_MAP(DMP_XX_NAME)
#undef DMP_XX_NAME
    default:
        break;
    }
    if (err < 0 && err > -4096) {
        const char *name = strerrorname_np(-err);
        if (name)
            return name;
    }
    return "UNKNOWN";
}

const char *
dmp_node_state_name(dmp_node_state_t state)
{
    switch (state) {
    case DMP_NODE_ALIVE:
        return "alive";
    case DMP_NODE_SUSPECT:
        return "suspect";
    case DMP_NODE_DEAD:
        return "dead";
    }
    return "unknown";
}
