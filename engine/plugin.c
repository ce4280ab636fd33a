/* The CUDA backend loaded at run time: finds libmilscreen-cuda.so, dlopens it on first use and
 * forwards ms_backend_cuda() and engine/cuda/cuda.h to its table (engine/cuda/plugin.h). The
 * milscreen binary links no CUDA library, so a CPU-only node runs the same binary; there the
 * cuda backend is reported absent with the reason (no plugin, a CUDA library missing, no GPU).
 *
 * Where the plugin is looked for: $MILSCREEN_PLUGIN_DIR alone when it is set (an override);
 * else beside the executable (the build tree: build/pipeline/), then ../lib/milscreen/ from
 * it (the install layout: bin/milscreen, lib/milscreen/). The executable is /proc/self/exe. */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/backend.h"
#include "engine/cuda/cuda.h"
#include "engine/cuda/plugin.h"
#include "ms_build_config.h"

static struct {
    pthread_once_t once;
    const ms_cuda_plugin_t *api; /* NULL: absent, for the reason in why */
    char path[PATH_MAX + 64];
    char why[3 * PATH_MAX];
} plugin = {.once = PTHREAD_ONCE_INIT};

static ms_status_t host_error(ms_status_t code, const char *file, int line, const char *msg)
{
    return ms_error_set(code, file, line, "%s", msg);
}

static const ms_cuda_host_t host = {.error = host_error, .frame = ms_error_frame};

/* Tries one file; returns 1 when the search should stop (loaded, or present but unusable). */
static int try_load(const char *path)
{
    if (access(path, F_OK) != 0)
        return 0;
    snprintf(plugin.path, sizeof plugin.path, "%s", path);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) { /* typically a CUDA library it needs is not on this node */
        const char *err = dlerror();
        if (strstr(err, path))
            snprintf(plugin.why, sizeof plugin.why, "%s", err);
        else
            snprintf(plugin.why, sizeof plugin.why, "loading %s: %s (the CUDA runtime, cuDNN and "
                     "NCCL must be on the library path: LD_LIBRARY_PATH or the site's CUDA "
                     "module)", path, err);
        return 1;
    }
    ms_cuda_plugin_entry_t entry = (ms_cuda_plugin_entry_t)dlsym(h, MS_CUDA_PLUGIN_ENTRY);
    const ms_cuda_plugin_t *api = entry ? entry(&host) : NULL;
    if (!api)
        snprintf(plugin.why, sizeof plugin.why, "%s has no %s: not a milscreen CUDA plugin", path,
                 MS_CUDA_PLUGIN_ENTRY);
    else if (api->abi != MS_CUDA_PLUGIN_ABI || api->backend_size != sizeof(ms_backend_t) ||
             api->plan_size != sizeof(ms_plan_t) || api->layer_size != sizeof(ms_layer_t))
        snprintf(plugin.why, sizeof plugin.why, "%s was built for another milscreen (version %s, "
                 "plugin interface %d; this is %s, interface %d): install the plugin built with "
                 "this binary", path, api->version, api->abi, MS_VERSION, MS_CUDA_PLUGIN_ABI);
    else {
        plugin.api = api;
        return 1;
    }
    dlclose(h);
    return 1;
}

static void load(void)
{
    const char *env = getenv("MILSCREEN_PLUGIN_DIR");
    char file[PATH_MAX + 64];
    if (env && *env) {
        snprintf(file, sizeof file, "%s/%s", env, MS_CUDA_PLUGIN_FILE);
        if (!try_load(file))
            snprintf(plugin.why, sizeof plugin.why, "%s not found (MILSCREEN_PLUGIN_DIR=%s)",
                     MS_CUDA_PLUGIN_FILE, env);
        return;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        snprintf(plugin.why, sizeof plugin.why, "cannot find the executable's folder "
                 "(/proc/self/exe); set MILSCREEN_PLUGIN_DIR to the folder of %s",
                 MS_CUDA_PLUGIN_FILE);
        return;
    }
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = 0;
    snprintf(file, sizeof file, "%s/%s", exe, MS_CUDA_PLUGIN_FILE);
    if (try_load(file))
        return;
    snprintf(file, sizeof file, "%s/../lib/milscreen/%s", exe, MS_CUDA_PLUGIN_FILE);
    if (try_load(file))
        return;
    snprintf(plugin.why, sizeof plugin.why, "%s not found beside %s/ nor in %s/../lib/milscreen/ "
             "(MILSCREEN_PLUGIN_DIR names another folder)", MS_CUDA_PLUGIN_FILE, exe, exe);
}

/* The table, or NULL with "cuda backend absent: <why>" recorded. */
static const ms_cuda_plugin_t *api(void)
{
    pthread_once(&plugin.once, load);
    if (!plugin.api)
        MS_ERR(MS_EBACKEND, "cuda backend absent: %s", plugin.why);
    return plugin.api;
}

const char *ms_cuda_plugin_status(void)
{
    pthread_once(&plugin.once, load);
    return plugin.api ? plugin.path : plugin.why;
}

ms_status_t ms_backend_cuda(ms_backend_t **be, int device, const char *precision)
{
    *be = NULL;
    const ms_cuda_plugin_t *p = api();
    if (!p)
        return MS_EBACKEND;
    ms_status_t st = p->backend(be, device, precision);
    if (st == MS_EBACKEND) { /* no GPU, a driver too old, a GPU this build has no code for */
        char msg[2048];
        snprintf(msg, sizeof msg, "%s", ms_error_message());
        return MS_ERR(MS_EBACKEND, "cuda backend absent: %s", msg);
    }
    return st;
}

/* The forwarders: the plugin is loaded already wherever a cuda backend exists; the device
 * queries may be the first use. */
#define FORWARD(call)                                                                  \
    do {                                                                               \
        const ms_cuda_plugin_t *p_ = api();                                            \
        return p_ ? p_->call : MS_EBACKEND;                                            \
    } while (0)

ms_status_t ms_cuda_memory(ms_backend_t *be, ms_cuda_memory_t *m) { FORWARD(memory(be, m)); }

void ms_cuda_memory_reset_peak(ms_backend_t *be)
{
    const ms_cuda_plugin_t *p = api();
    if (p)
        p->memory_reset_peak(be);
}

void ms_cuda_conv_algos(ms_backend_t *be, const ms_plan_t *plan, int layer, char *buf,
                        size_t n)
{
    const ms_cuda_plugin_t *p = api();
    if (p)
        p->conv_algos(be, plan, layer, buf, n);
    else if (n)
        buf[0] = 0;
}

ms_status_t ms_cuda_lbp_binary(ms_backend_t *be, uint8_t *out, const float *unary, int H, int W,
                               double pairwise, int iterations, int max_product,
                               double damping)
{
    FORWARD(lbp_binary(be, out, unary, H, W, pairwise, iterations, max_product, damping));
}

ms_status_t ms_cuda_device_count(int *count)
{
    *count = 0;
    FORWARD(device_count(count));
}

ms_status_t ms_cuda_device_memory(int device, size_t *free_bytes, size_t *total_bytes)
{
    FORWARD(device_memory(device, free_bytes, total_bytes));
}

ms_status_t ms_cuda_host_alloc(void **p, size_t bytes)
{
    *p = NULL;
    FORWARD(host_alloc(p, bytes));
}

void ms_cuda_host_free(void *ptr)
{
    const ms_cuda_plugin_t *p = ptr ? api() : NULL;
    if (p)
        p->host_free(ptr);
}

/* NCCL: the plugin may have been built without it */
static const ms_cuda_plugin_t *nccl_api(void)
{
    const ms_cuda_plugin_t *p = api();
    if (p && !p->nccl_id)
        MS_ERR(MS_EBACKEND, "the CUDA plugin %s was built without NCCL", plugin.path);
    return p && p->nccl_id ? p : NULL;
}

#define FORWARD_NCCL(call)                                                             \
    do {                                                                               \
        const ms_cuda_plugin_t *p_ = nccl_api();                                       \
        return p_ ? p_->call : MS_EBACKEND;                                            \
    } while (0)

ms_status_t ms_cuda_nccl_version(int *version)
{
    *version = 0;
    FORWARD_NCCL(nccl_runtime_version(version));
}

ms_status_t ms_cuda_nccl_id(void *id) { FORWARD_NCCL(nccl_id(id)); }

ms_status_t ms_cuda_nccl_open(ms_cuda_nccl_t **c, ms_backend_t *be, const void *id, int rank,
                              int ranks)
{
    *c = NULL;
    FORWARD_NCCL(nccl_open(c, be, id, rank, ranks));
}

ms_status_t ms_cuda_nccl_start(ms_cuda_nccl_t *c, float *buf, size_t n)
{
    FORWARD_NCCL(nccl_start(c, buf, n));
}

ms_status_t ms_cuda_nccl_wait(ms_cuda_nccl_t *c) { FORWARD_NCCL(nccl_wait(c)); }

void ms_cuda_nccl_close(ms_cuda_nccl_t *c)
{
    const ms_cuda_plugin_t *p = c ? nccl_api() : NULL;
    if (p)
        p->nccl_close(c);
}
