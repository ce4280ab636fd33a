/* Choosing a backend by name; constructors of backends absent from this build fail here
 * with the reason. The cuda backend's constructor is the plugin loader's (engine/plugin.c). */
#include "engine/backend.h"

#include <stdio.h>
#include <string.h>

#include "ms_build_config.h"

#if !MS_HAVE_DNNL
ms_status_t ms_backend_cpu(ms_backend_t **be, int threads, const char *precision)
{
    *be = NULL;
    return MS_ERR(MS_EBACKEND, "this milscreen was built without oneDNN (libdnnl-dev); "
                               "use --backend ref or rebuild");
}
#endif

#if !MS_HAVE_CUDA
ms_status_t ms_backend_cuda(ms_backend_t **be, int device, const char *precision)
{
    *be = NULL;
    return MS_ERR(MS_EBACKEND, "cuda backend absent: this milscreen was built without "
                               "CUDA/cuDNN");
}
#endif

ms_status_t ms_backend_open(ms_backend_t **be, const char *name, int device, int threads,
                            const char *precision)
{
    *be = NULL;
    int ref_ok = !precision || !strcmp(precision, "fp32");
    if (!strcmp(name, "ref"))
        return ref_ok ? ms_backend_ref(be)
                      : MS_ERR(MS_EARG, "precision '%s': the ref backend runs fp32 (or fp64) only",
                               precision);
    if (!strcmp(name, "cpu"))
        return ms_backend_cpu(be, threads, precision);
    if (!strcmp(name, "cuda"))
        return ms_backend_cuda(be, device, precision);
    if (!strcmp(name, "auto")) {
        /* each skipped backend's reason, for the start-up table */
        char why[MS_BACKEND_NOTE] = "";
        if (ms_backend_cuda(be, device, precision) == MS_OK)
            return MS_OK;
        snprintf(why, sizeof why, "%s", ms_error_message());
        ms_status_t st = ms_backend_cpu(be, threads, precision);
        if (st == MS_EARG) /* the precision, not the build: say so rather than fall back */
            return st;
        if (st != MS_OK) {
            size_t n = strlen(why);
            snprintf(why + n, sizeof why - n, "; %s", ms_error_message());
            st = ref_ok ? ms_backend_ref(be)
                        : MS_ERR(MS_EARG, "precision '%s': no backend here runs it", precision);
        }
        if (st == MS_OK)
            snprintf((*be)->note, MS_BACKEND_NOTE, "%s", why);
        return st;
    }
    *be = NULL;
    return MS_ERR(MS_EARG, "unknown backend '%s' (ref, cpu, cuda, auto)", name);
}

void ms_backend_describe(ms_backend_t *be, char *buf, size_t n)
{
    be->describe(be, buf, n);
    size_t len = strlen(buf);
    if (be->note[0] && len < n)
        snprintf(buf + len, n - len, "; auto: %s", be->note);
}

void ms_backend_close(ms_backend_t *be)
{
    if (be)
        be->destroy(be);
}
