/* The plugin's entry: fills the table of engine/cuda/plugin.h with the backend (backend.c),
 * the NCCL all-reduce (nccl.c) and a few device queries, and routes the plugin's errors to the
 * binary that loaded it. Everything here is hidden but the entry, so the plugin's symbols
 * never mix with the binary's. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "engine/cuda/internal.h"
#include "engine/cuda/plugin.h"
#include "ms_build_config.h"

#ifndef MS_HAVE_NCCL
#define MS_HAVE_NCCL 0
#endif
#if MS_HAVE_NCCL
#include <nccl.h>
#endif

static const ms_cuda_host_t *host;

/* engine/status.h inside the plugin: the message is formatted here and recorded by the
 * binary, in the calling thread's slot there (the binary's ms_error_message() reads it). */
ms_status_t ms_error_set(ms_status_t code, const char *file, int line, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return host ? host->error(code, file, line, msg) : code;
}

void ms_error_frame(const char *file, int line)
{
    if (host)
        host->frame(file, line);
}

static ms_status_t device_count(int *count)
{
    *count = 0;
    cudaError_t e = cudaGetDeviceCount(count);
    if (e != cudaSuccess || *count == 0) {
        *count = 0;
        return MS_ERR(MS_EBACKEND, "no CUDA device: %s",
                      e != cudaSuccess ? cudaGetErrorString(e) : "the driver sees none");
    }
    return MS_OK;
}

static ms_status_t device_memory(int device, size_t *free_bytes, size_t *total_bytes)
{
    *free_bytes = *total_bytes = 0;
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess)
        e = cudaMemGetInfo(free_bytes, total_bytes);
    return e == cudaSuccess ? MS_OK
                            : MS_ERR(MS_EBACKEND, "cudaMemGetInfo failed on cuda:%d: %s", device,
                                     cudaGetErrorString(e));
}

static ms_status_t host_alloc(void **p, size_t bytes)
{
    *p = NULL;
    cudaError_t e = cudaMallocHost(p, bytes);
    if (e != cudaSuccess) {
        *p = NULL;
        return MS_ERR(MS_ENOMEM, "cudaMallocHost of %zu MiB failed: %s", bytes >> 20,
                      cudaGetErrorString(e));
    }
    return MS_OK;
}

static void host_free(void *p)
{
    if (p)
        cudaFreeHost(p);
}

static const ms_cuda_plugin_t table = {
    .abi = MS_CUDA_PLUGIN_ABI,
    .backend_size = sizeof(ms_backend_t),
    .plan_size = sizeof(ms_plan_t),
    .layer_size = sizeof(ms_layer_t),
    .version = MS_VERSION,
    .backend = ms_cu_backend_open,
    .memory = ms_cu_memory,
    .memory_reset_peak = ms_cu_memory_reset_peak,
    .conv_algos = ms_cu_conv_algos,
    .lbp_binary = ms_cu_lbp_binary,
    .device_count = device_count,
    .device_memory = device_memory,
    .host_alloc = host_alloc,
    .host_free = host_free,
#if MS_HAVE_NCCL
    .nccl_version = NCCL_VERSION_CODE,
    .nccl_runtime_version = ms_cu_nccl_version,
    .nccl_id = ms_cu_nccl_id,
    .nccl_open = ms_cu_nccl_open,
    .nccl_start = ms_cu_nccl_start,
    .nccl_wait = ms_cu_nccl_wait,
    .nccl_close = ms_cu_nccl_close,
#endif
};

__attribute__((visibility("default"))) const ms_cuda_plugin_t *
ms_cuda_plugin_entry(const ms_cuda_host_t *h)
{
    host = h;
    return &table;
}
