/* Buffers of the backends that compute in host memory (ref, cpu): 64-byte aligned and
 * zero-filled, with the memory functions of the backend table. */
#ifndef MS_HOST_H
#define MS_HOST_H

#include <stdlib.h>
#include <string.h>

#include "engine/backend.h"

static inline void *ms_host_alloc_raw(size_t bytes)
{
    size_t sz = bytes ? (bytes + 63) / 64 * 64 : 64;
    void *p = aligned_alloc(64, sz);
    if (p)
        memset(p, 0, sz);
    return p;
}

static inline ms_status_t ms_host_alloc(ms_backend_t *be, void **p, size_t bytes)
{
    (void)be;
    *p = ms_host_alloc_raw(bytes);
    return *p ? MS_OK : MS_ERR(MS_ENOMEM, "out of memory allocating %zu bytes", bytes);
}

static inline void ms_host_release(ms_backend_t *be, void *p)
{
    (void)be;
    free(p);
}

static inline ms_status_t ms_host_copy(ms_backend_t *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    memcpy(dst, src, bytes);
    return MS_OK;
}

static inline ms_status_t ms_host_zero(ms_backend_t *be, void *p, size_t bytes)
{
    (void)be;
    memset(p, 0, bytes);
    return MS_OK;
}

#endif
