/* Inside the CUDA plugin only (compiled with hidden visibility): the functions of backend.c
 * and nccl.c that plugin.c puts into the exported table (engine/cuda/plugin.h). */
#ifndef MS_CUDA_INTERNAL_H
#define MS_CUDA_INTERNAL_H

#include <cuda_runtime_api.h>

#include "engine/backend.h"
#include "engine/cuda/cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* backend.c */
ms_status_t ms_cu_backend_open(ms_backend_t **be, int device, const char *precision);
ms_status_t ms_cu_memory(ms_backend_t *be, ms_cuda_memory_t *m);
void ms_cu_memory_reset_peak(ms_backend_t *be);
void ms_cu_conv_algos(ms_backend_t *be, const ms_plan_t *plan, int layer, char *buf, size_t n);
ms_status_t ms_cu_lbp_binary(ms_backend_t *be, uint8_t *out, const float *unary, int H, int W,
                             double pairwise, int iterations, int max_product, double damping);
/* The backend's compute stream and device; 0 when be is not the cuda backend. */
int ms_cu_stream(ms_backend_t *be, cudaStream_t *stream, int *device);

/* nccl.c (present when the plugin is built with NCCL) */
ms_status_t ms_cu_nccl_version(int *v);
ms_status_t ms_cu_nccl_id(void *id);
ms_status_t ms_cu_nccl_open(ms_cuda_nccl_t **c, ms_backend_t *be, const void *id, int rank,
                            int ranks);
ms_status_t ms_cu_nccl_start(ms_cuda_nccl_t *c, float *buf, size_t n);
ms_status_t ms_cu_nccl_wait(ms_cuda_nccl_t *c);
void ms_cu_nccl_close(ms_cuda_nccl_t *c);

#ifdef __cplusplus
}
#endif

#endif
