/* Errors as values. Every library function returns ms_status_t; MS_ERR records a message
 * with its origin, MS_TRY passes a failure up adding one "at file:line" frame, and only
 * main() turns a status into text and an exit code. The message is thread-local so a
 * loader thread can fail without disturbing the consumer. */
#ifndef MS_STATUS_H
#define MS_STATUS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    MS_OK = 0,
    MS_EARG,      /* bad command line or argument value */
    MS_ECONFIG,   /* bad configuration file or key */
    MS_EIO,       /* file missing, unreadable, or a write failed */
    MS_EFORMAT,   /* a file exists but is not what it should be */
    MS_ENOMEM,    /* allocation failed */
    MS_EBACKEND,  /* oneDNN, CUDA, cuDNN, NCCL or MPI reported an error */
    MS_ESHAPE,    /* tensor shapes do not fit */
    MS_EINTERNAL, /* a bug: an invariant did not hold */
    MS_EINTERRUPT, /* stopped on request (signal) */
    MS_ENUMERIC    /* training diverged: a loss or parameter is not finite */
} ms_status_t;

/* Records the message (printf-style) for this thread and returns code. */
ms_status_t ms_error_set(ms_status_t code, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Appends an "at file:line" frame to this thread's trace. */
void ms_error_frame(const char *file, int line);
/* This thread's message ("" when none) and its trace of frames. */
const char *ms_error_message(void);
const char *ms_error_trace(void);
void ms_error_clear(void);
const char *ms_status_name(ms_status_t s);

#ifdef __cplusplus
}
#endif

#define MS_ERR(code, ...) ms_error_set((code), __FILE__, __LINE__, __VA_ARGS__)

/* Needs `ms_status_t st` in scope and a `done:` cleanup label. */
#define MS_TRY(expr)                                                                   \
    do {                                                                               \
        st = (expr);                                                                   \
        if (st != MS_OK) {                                                             \
            ms_error_frame(__FILE__, __LINE__);                                        \
            goto done;                                                                 \
        }                                                                              \
    } while (0)

/* Sets st to an error and jumps to the cleanup label. */
#define MS_FAIL(code, ...)                                                             \
    do {                                                                               \
        st = MS_ERR((code), __VA_ARGS__);                                              \
        goto done;                                                                     \
    } while (0)

/* Allocation that fails with a message naming what was being allocated. */
#define MS_ALLOC(ptr, count, what)                                                     \
    do {                                                                               \
        size_t n_ = (size_t)(count);                                                   \
        (ptr) = n_ ? calloc(n_, sizeof(*(ptr))) : NULL;                                \
        if (n_ && !(ptr))                                                              \
            MS_FAIL(MS_ENOMEM, "out of memory allocating %zu bytes for %s",            \
                    n_ * sizeof(*(ptr)), (what));                                      \
    } while (0)

#endif
