/* What the CUDA backend offers beyond engine/backend.h: its memory accounting and the
 * algorithms it chose (for `milscreen bench --gpu`), the masks' belief propagation on the GPU
 * (score), a few device queries and pinned host memory (bench), and the NCCL all-reduce of GPU
 * ranks (pipeline/dist/allreduce.c). The backend lives in a plugin loaded at run time
 * (engine/plugin.c); these functions forward to it and fail with "cuda backend absent:
 * <reason>" when it cannot be loaded. No CUDA header is needed to call them. */
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

/* The GPUs this node's driver shows (fails, with the reason, when there are none). */
ms_status_t ms_cuda_device_count(int *count);
/* cudaMemGetInfo of a device: everything in use on it, other contexts included. */
ms_status_t ms_cuda_device_memory(int device, size_t *free_bytes, size_t *total_bytes);
/* Pinned (page-locked) host memory, as a loader feeding a GPU should use. */
ms_status_t ms_cuda_host_alloc(void **p, size_t bytes);
void ms_cuda_host_free(void *p);

/* Where the plugin was loaded from, or why it could not be ("" before the first use). */
const char *ms_cuda_plugin_status(void);

/* ---- NCCL (one communicator per GPU rank) -------------------------------------------------
 * Rank 0 makes the id, every rank receives it (MPI broadcast, pipeline/dist), then each opens
 * its communicator on the backend's GPU. The all-reduce runs on a stream of its own that
 * waits (an event) for the work issued so far on the backend's stream, so it overlaps
 * whatever the backend is given next. Every NCCL call's failure names the call, the rank and
 * the device. */
#define MS_CUDA_NCCL_ID_BYTES 128 /* NCCL_UNIQUE_ID_BYTES */
typedef struct ms_cuda_nccl ms_cuda_nccl_t;

/* The NCCL this plugin loaded (ncclGetVersion, e.g. 22809 for 2.28.9); fails when the plugin
 * was built without NCCL. */
ms_status_t ms_cuda_nccl_version(int *version);
ms_status_t ms_cuda_nccl_id(void *id);
ms_status_t ms_cuda_nccl_open(ms_cuda_nccl_t **c, ms_backend_t *be, const void *id, int rank,
                              int ranks);
/* buf[0, n) (device floats of be) = the sum over ranks of buf / ranks, computed once the work
 * issued on be's stream so far has run; returns at once. */
ms_status_t ms_cuda_nccl_start(ms_cuda_nccl_t *c, float *buf, size_t n);
/* Every started all-reduce has finished (and be's stream is ordered after them). */
ms_status_t ms_cuda_nccl_wait(ms_cuda_nccl_t *c);
void ms_cuda_nccl_close(ms_cuda_nccl_t *c);

#ifdef __cplusplus
}
#endif

#endif
