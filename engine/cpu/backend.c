/* oneDNN CPU backend (work in progress: not yet usable). */
#include "engine/backend.h"

ms_status_t ms_backend_cpu(ms_backend_t **be, int threads)
{
    *be = NULL;
    return MS_ERR(MS_EBACKEND, "the oneDNN backend is not implemented yet");
}
