/*
 * mathmod.c - functions for `dmp map MODULE.so:FUNC`, one item a call.
 *
 *   make                                  builds build/examples/mathmod.so
 *   seq 1 20 | dmp map build/examples/mathmod.so:collatz
 *
 * Each function has the task signature of dmp.h: the item comes as a str
 * (a line of input), the result is a new value. Built with
 * `cc -shared -fPIC` and no -ldmp: the dmp functions called here are
 * those of the dmp worker that loads the module.
 */
#include <dmp.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The item as an integer; -EINVAL with a message when it is not one. */
static int
s_number(const dmp_value_t *arg, long long *n, dmp_value_t **result)
{
    const char *s = dmp_value_str(arg, NULL);
    char *end = NULL;
    errno = 0;
    *n = s ? strtoll(s, &end, 10) : 0;
    if (!s || end == s || *end != '\0' || errno) {
        char text[128];
        snprintf(text, sizeof text, "not an integer: '%.80s'", s ? s : "");
        *result = dmp_str(text);
        return -EINVAL;
    }
    return 0;
}

/* n * n */
int
square(const dmp_value_t *arg, dmp_value_t **result)
{
    long long n;
    int rc = s_number(arg, &n, result);
    if (rc == 0)
        *result = dmp_int(n * n);
    return rc;
}

/* Steps of the Collatz sequence from n down to 1, and the largest value
 * on the way: "n: steps (peak)". */
int
collatz(const dmp_value_t *arg, dmp_value_t **result)
{
    long long n;
    int rc = s_number(arg, &n, result);
    if (rc)
        return rc;
    if (n < 1) {
        *result = dmp_str("collatz needs a positive integer");
        return -EDOM;
    }
    long long x = n, peak = n, steps = 0;
    while (x != 1) {
        x = x % 2 ? 3 * x + 1 : x / 2;
        peak = x > peak ? x : peak;
        steps++;
    }
    char text[96];
    snprintf(text, sizeof text, "%lld: %lld steps (peak %lld)", n, steps,
             peak);
    *result = dmp_str(text);
    return 0;
}
