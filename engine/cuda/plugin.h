/* The CUDA backend as a plugin (libmilscreen-cuda.so): the one table of functions it exports,
 * shared by the plugin (engine/cuda/plugin.c fills it) and the loader in the milscreen binary
 * (engine/plugin.c, which dlopens the plugin and forwards engine/cuda/cuda.h to it). The binary
 * itself links no CUDA, cuDNN or NCCL library, so it starts on a node that has none of them.
 *
 * The plugin shares the binary's types (engine/backend.h), so the loader refuses a plugin
 * whose ABI number or struct sizes differ from its own. Errors: the plugin records them
 * through the host's functions (ms_cuda_host_t), so that ms_error_message() in the binary
 * names what failed inside the plugin. */
#ifndef MS_CUDA_PLUGIN_H
#define MS_CUDA_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#include "engine/backend.h"
#include "engine/cuda/cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever this table or a type it passes changes shape. */
#define MS_CUDA_PLUGIN_ABI 1
#define MS_CUDA_PLUGIN_FILE "libmilscreen-cuda.so"
#define MS_CUDA_PLUGIN_ENTRY "ms_cuda_plugin_entry"

/* What the binary gives the plugin: its error recording (engine/status.h). */
typedef struct {
    ms_status_t (*error)(ms_status_t code, const char *file, int line, const char *msg);
    void (*frame)(const char *file, int line);
} ms_cuda_host_t;

typedef struct {
    int abi;                                  /* MS_CUDA_PLUGIN_ABI */
    size_t backend_size, plan_size, layer_size; /* sizeof of the shared types, as compiled */
    const char *version;                      /* MS_VERSION the plugin was built as */

    ms_status_t (*backend)(ms_backend_t **be, int device, const char *precision);
    ms_status_t (*memory)(ms_backend_t *be, ms_cuda_memory_t *m);
    void (*memory_reset_peak)(ms_backend_t *be);
    void (*conv_algos)(ms_backend_t *be, const ms_plan_t *plan, int layer, char *buf,
                       size_t n);
    ms_status_t (*lbp_binary)(ms_backend_t *be, uint8_t *out, const float *unary, int H, int W,
                              double pairwise, int iterations, int max_product,
                              double damping);
    ms_status_t (*device_count)(int *count);
    ms_status_t (*device_memory)(int device, size_t *free_bytes, size_t *total_bytes);
    ms_status_t (*host_alloc)(void **p, size_t bytes);
    void (*host_free)(void *p);

    /* NCCL: all NULL (and nccl_version 0) when the plugin was built without it */
    int nccl_version;                         /* NCCL_VERSION_CODE it was compiled against */
    ms_status_t (*nccl_runtime_version)(int *v);
    ms_status_t (*nccl_id)(void *id);         /* MS_CUDA_NCCL_ID_BYTES */
    ms_status_t (*nccl_open)(ms_cuda_nccl_t **c, ms_backend_t *be, const void *id, int rank,
                             int ranks);
    ms_status_t (*nccl_start)(ms_cuda_nccl_t *c, float *buf, size_t n);
    ms_status_t (*nccl_wait)(ms_cuda_nccl_t *c);
    void (*nccl_close)(ms_cuda_nccl_t *c);
} ms_cuda_plugin_t;

/* The plugin's one exported symbol (MS_CUDA_PLUGIN_ENTRY). */
typedef const ms_cuda_plugin_t *(*ms_cuda_plugin_entry_t)(const ms_cuda_host_t *host);

#ifdef __cplusplus
}
#endif

#endif
