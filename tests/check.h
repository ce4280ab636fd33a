/* A tiny test harness: CHECK records a failure with file and line and goes on; every test
 * main ends with `return check_summary();` which prints "N passed, N failed" and exits
 * non-zero on any failure. */
#ifndef MS_CHECK_H
#define MS_CHECK_H

#include <math.h>
#include <stdio.h>

static int check_pass, check_fail;

#define CHECK(cond, ...)                                                               \
    do {                                                                               \
        if (cond) {                                                                    \
            check_pass++;                                                              \
        } else {                                                                       \
            check_fail++;                                                              \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);            \
            fprintf(stderr, __VA_ARGS__);                                              \
            fprintf(stderr, "\n");                                                     \
        }                                                                              \
    } while (0)

/* A status-returning call that must succeed. */
#define CHECK_OK(expr)                                                                 \
    do {                                                                               \
        ms_status_t s_ = (expr);                                                       \
        CHECK(s_ == MS_OK, "%s", ms_error_message());                                  \
    } while (0)

/* |a - b| <= tol * max(1, |b|)  (relative, with an absolute floor near zero) */
static inline int check_close(double a, double b, double tol)
{
    double scale = fabs(b) > 1 ? fabs(b) : 1;
    return fabs(a - b) <= tol * scale && !isnan(a) && !isnan(b);
}

static inline int check_summary(void)
{
    printf("%d passed, %d failed\n", check_pass, check_fail);
    return check_fail ? 1 : 0;
}

#endif
