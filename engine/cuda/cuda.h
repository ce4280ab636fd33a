/* What the CUDA backend offers beyond engine/backend.h: its memory accounting, for
 * `milscreen bench --gpu` (peak device memory next to PyTorch's max_memory_allocated). */
#ifndef MS_CUDA_H
#define MS_CUDA_H

#include <stddef.h>

#include "engine/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    size_t now;      /* bytes this backend holds now (buffers, plan arenas) */
    size_t peak;     /* the most it has held at once (not counting cuDNN's transient
                        allocations during the algorithm search at plan time) */
    size_t arena;    /* the current plan's arena */
    size_t workspace;/* of which convolution workspace */
} ms_cuda_memory_t;

/* Fails with MS_EARG when be is not the CUDA backend. */
ms_status_t ms_cuda_memory(ms_backend_t *be, ms_cuda_memory_t *m);
/* Forgets the peak: it becomes the bytes held now. */
void ms_cuda_memory_reset_peak(ms_backend_t *be);

#ifdef __cplusplus
}
#endif

#endif
