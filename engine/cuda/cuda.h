/* What the CUDA backend offers beyond engine/backend.h, for `milscreen bench --gpu`: its
 * memory accounting (next to PyTorch's max_memory_allocated) and the algorithms it chose. */
#ifndef MS_CUDA_H
#define MS_CUDA_H

#include <stddef.h>
#include <stdint.h>

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
/* The cuDNN algorithms a convolution layer of the plan runs with, as one short line
 * ("fwd 1 data 1 filter 0, ws 12/0/3 MiB, C 3->8"); "" for other layers or backends. */
void ms_cuda_conv_algos(ms_backend_t *be, const ms_plan_t *plan, int layer, char *buf,
                        size_t n);

/* Loopy belief propagation for the masks (paper §2.4) on the GPU: the same MRF, messages and
 * arithmetic order as ms_lbp_binary (pipeline/localise/localise.c), host arrays in and out: unary
 * (H,W) log-odds, out (H,W) 0/1. Scratch stays with the backend and grows as needed. */
ms_status_t ms_cuda_lbp_binary(ms_backend_t *be, uint8_t *out, const float *unary, int H, int W,
                               double pairwise, int iterations, int max_product,
                               double damping);

#ifdef __cplusplus
}
#endif

#endif
