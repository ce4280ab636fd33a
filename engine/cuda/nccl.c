/* The all-reduce of GPU ranks (DESIGN §4): one NCCL communicator per rank on the backend's GPU,
 * gradients reduced where they are, in device memory, on a stream of the all-reduce's own. A
 * bucket starts when the backend's stream has issued the layers it covers (an event on that
 * stream which the all-reduce stream waits for), so it overlaps the rest of the backward pass;
 * the mean is the NCCL sum divided by the ranks (ms_cuk_div), which rounds once from the
 * exact sum as the CPU ranks' MPI_Allreduce path does. Every NCCL and CUDA call is checked
 * and its failure names the call, the rank and the device. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "engine/cuda/internal.h"
#include "engine/cuda/kernels.h"

_Static_assert(sizeof(ncclUniqueId) == MS_CUDA_NCCL_ID_BYTES, "MS_CUDA_NCCL_ID_BYTES");

struct ms_cuda_nccl {
    ncclComm_t comm;
    cudaStream_t stream;  /* the all-reduce's own */
    cudaStream_t compute; /* the backend's, which the all-reduce follows and which waits for it */
    cudaEvent_t ready;    /* recorded on compute before each bucket */
    cudaEvent_t done;     /* recorded on stream when waiting */
    int device, rank, ranks;
    int pending;          /* buckets started since the last wait */
    int broken;           /* an error left the communicator unusable: abort it on close */
};

static ms_status_t nccl_fail(const ms_cuda_nccl_t *c, ncclResult_t r, const char *call,
                             const char *file, int line)
{
    const char *detail = c->comm ? ncclGetLastError(c->comm) : NULL;
    return ms_error_set(MS_EBACKEND, file, line, "%s failed on rank %d of %d (cuda:%d): %s%s%s%s",
                        call, c->rank, c->ranks, c->device, ncclGetErrorString(r),
                        detail && *detail ? " (" : "", detail && *detail ? detail : "",
                        detail && *detail ? "); NCCL_DEBUG=WARN says more"
                                          : "; NCCL_DEBUG=WARN says more");
}

static ms_status_t cuda_fail(const ms_cuda_nccl_t *c, cudaError_t e, const char *call,
                             const char *file, int line)
{
    return ms_error_set(MS_EBACKEND, file, line, "%s failed on rank %d of %d (cuda:%d): %s (%s)",
                        call, c->rank, c->ranks, c->device, cudaGetErrorString(e),
                        cudaGetErrorName(e));
}

/* Need `ms_status_t st`, a `done:` label and `c` in scope. */
#define NC(call)                                                                       \
    do {                                                                               \
        ncclResult_t r_ = (call);                                                      \
        if (r_ != ncclSuccess) {                                                       \
            c->broken = 1;                                                             \
            st = nccl_fail(c, r_, #call, __FILE__, __LINE__);                          \
            goto done;                                                                 \
        }                                                                              \
    } while (0)
#define CU(call)                                                                       \
    do {                                                                               \
        cudaError_t e_ = (call);                                                       \
        if (e_ != cudaSuccess) {                                                       \
            st = cuda_fail(c, e_, #call, __FILE__, __LINE__);                          \
            goto done;                                                                 \
        }                                                                              \
    } while (0)

ms_status_t ms_cu_nccl_version(int *v)
{
    ms_status_t st = MS_OK;
    ms_cuda_nccl_t who = {.device = -1, .ranks = 1}, *c = &who;
    *v = 0;
    NC(ncclGetVersion(v));
done:
    return st;
}

ms_status_t ms_cu_nccl_id(void *id)
{
    ms_status_t st = MS_OK;
    ms_cuda_nccl_t who = {.device = -1, .ranks = 1}, *c = &who; /* rank 0 makes the id */
    ncclUniqueId uid;
    NC(ncclGetUniqueId(&uid));
    memcpy(id, &uid, sizeof uid);
done:
    return st;
}

void ms_cu_nccl_close(ms_cuda_nccl_t *c)
{
    if (!c)
        return;
    if (c->device >= 0)
        cudaSetDevice(c->device);
    if (c->comm) {
        if (c->broken)
            ncclCommAbort(c->comm); /* a destroy could wait for peers that are gone */
        else {
            cudaStreamSynchronize(c->stream);
            ncclCommDestroy(c->comm);
        }
    }
    if (c->ready)
        cudaEventDestroy(c->ready);
    if (c->done)
        cudaEventDestroy(c->done);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    free(c);
}

ms_status_t ms_cu_nccl_open(ms_cuda_nccl_t **out, ms_backend_t *be, const void *id, int rank,
                            int ranks)
{
    ms_status_t st = MS_OK;
    ms_cuda_nccl_t *c = NULL;
    *out = NULL;
    MS_ALLOC(c, 1, "NCCL communicator");
    c->rank = rank;
    c->ranks = ranks;
    c->device = -1;
    if (!ms_cu_stream(be, &c->compute, &c->device))
        MS_FAIL(MS_EARG, "NCCL all-reduce on rank %d: the %s backend is not the cuda backend",
                rank, be ? be->name : "(none)");
    CU(cudaSetDevice(c->device));
    /* the highest priority: a bucket's kernels are scheduled ahead of the backward kernels
     * queued behind them, so the all-reduce does not wait for the whole backward pass */
    int least = 0, greatest = 0;
    CU(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    CU(cudaStreamCreateWithPriority(&c->stream, cudaStreamNonBlocking, greatest));
    CU(cudaEventCreateWithFlags(&c->ready, cudaEventDisableTiming));
    CU(cudaEventCreateWithFlags(&c->done, cudaEventDisableTiming));
    ncclUniqueId uid;
    memcpy(&uid, id, sizeof uid);
    NC(ncclCommInitRank(&c->comm, ranks, uid, rank));
    *out = c;
    c = NULL;
done:
    ms_cu_nccl_close(c);
    return st;
}

ms_status_t ms_cu_nccl_start(ms_cuda_nccl_t *c, float *buf, size_t n)
{
    ms_status_t st = MS_OK;
    if (n == 0)
        return MS_OK;
    CU(cudaSetDevice(c->device));
    CU(cudaEventRecord(c->ready, c->compute));
    CU(cudaStreamWaitEvent(c->stream, c->ready, 0));
    NC(ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, c->comm, c->stream));
    if (c->ranks > 1)
        CU(ms_cuk_div(buf, n, (float)c->ranks, c->stream));
    c->pending++;
done:
    return st;
}

ms_status_t ms_cu_nccl_wait(ms_cuda_nccl_t *c)
{
    ms_status_t st = MS_OK;
    if (!c->pending)
        return MS_OK;
    CU(cudaSetDevice(c->device));
    CU(cudaEventRecord(c->done, c->stream));
    CU(cudaStreamWaitEvent(c->compute, c->done, 0)); /* Adam follows the all-reduce */
    /* poll rather than block, so that a peer's failure (NCCL's asynchronous error) ends the
     * wait with a message instead of a hang */
    for (;;) {
        cudaError_t e = cudaEventQuery(c->done);
        if (e == cudaSuccess)
            break;
        if (e != cudaErrorNotReady)
            CU(e);
        ncclResult_t async = ncclSuccess;
        NC(ncclCommGetAsyncError(c->comm, &async));
        if (async != ncclSuccess && async != ncclInProgress) {
            c->broken = 1;
            MS_FAIL(MS_EBACKEND, "the gradient all-reduce failed on rank %d of %d (cuda:%d): %s "
                    "(ncclCommGetAsyncError; another rank may have failed first)", c->rank,
                    c->ranks, c->device, ncclGetErrorString(async));
        }
        struct timespec ts = {0, 20000};
        nanosleep(&ts, NULL);
    }
    c->pending = 0;
done:
    return st;
}
