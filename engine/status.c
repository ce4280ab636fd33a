/* Thread-local error message and trace behind MS_ERR / MS_TRY. */
#include "engine/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char msg[2048];
static _Thread_local char trace[2048];

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

ms_status_t ms_error_set(ms_status_t code, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(trace, sizeof trace, "at %s:%d", base_name(file), line);
    return code;
}

void ms_error_frame(const char *file, int line)
{
    size_t n = strlen(trace);
    if (n + 64 < sizeof trace)
        snprintf(trace + n, sizeof trace - n, "%sat %s:%d", n ? ", " : "", base_name(file), line);
}

const char *ms_error_message(void) { return msg; }
const char *ms_error_trace(void) { return trace; }

void ms_error_clear(void)
{
    msg[0] = 0;
    trace[0] = 0;
}

const char *ms_status_name(ms_status_t s)
{
    switch (s) {
    case MS_OK: return "ok";
    case MS_EARG: return "bad argument";
    case MS_ECONFIG: return "bad configuration";
    case MS_EIO: return "i/o error";
    case MS_EFORMAT: return "bad file format";
    case MS_ENOMEM: return "out of memory";
    case MS_EBACKEND: return "backend error";
    case MS_ESHAPE: return "shape mismatch";
    case MS_EINTERNAL: return "internal error";
    case MS_EINTERRUPT: return "interrupted";
    case MS_ENUMERIC: return "numerical error";
    }
    return "unknown error";
}
