// CUDA backend (work in progress: not yet usable).
#include "engine/backend.h"

extern "C" ms_status_t ms_backend_cuda(ms_backend_t **be, int device, const char *precision)
{
    *be = NULL;
    return MS_ERR(MS_EBACKEND, "the CUDA backend is not implemented yet");
}
