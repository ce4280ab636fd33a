/* The "cuda" backend: the engine on one NVIDIA GPU. Convolutions through cuDNN (legacy API)
 * in NHWC with algorithms found once per shape and cached; everything else in our own
 * kernels (engine/cuda/kernels.cu). One device arena per plan holds every activation, both
 * gradient buffers, the weight copies in the compute dtype and the bounded workspace.
 * Precisions: "bf16" (bf16 activations and weight copies, fp32 accumulation, fp32 master
 * weights, gradients and Adam), "tf32" and "fp32" (fp32 data; TF32 tensor cores or not). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "engine/backend.h"
#include "engine/cuda/cuda.h"
#include "engine/cuda/internal.h"
#include "engine/cuda/kernels.h"
#include "engine/rng.h"

enum { PREC_BF16, PREC_TF32, PREC_FP32 };
static const char *const prec_names[] = {"bf16", "tf32", "fp32"};

/* Convolution workspace bound per plan; MILSCREEN_CUDA_WORKSPACE_MB overrides it. */
#define DEFAULT_WORKSPACE_MB 1024

/* One convolution shape: the algorithm cache's key (ints only, so memcmp is exact). */
typedef struct {
    int n, c, h, w, o, k, stride, pad, prec;
} conv_key_t;

typedef struct {
    conv_key_t key;
    int have_fwd, have_data, have_filter;
    cudnnConvolutionFwdAlgo_t fwd;
    cudnnConvolutionBwdDataAlgo_t data;
    cudnnConvolutionBwdFilterAlgo_t filter;
    cudnnMathType_t fwd_math, data_math, filter_math;
    size_t fwd_ws, data_ws, filter_ws;
} conv_algos_t;

typedef struct {
    int device;
    int prec;
    int bf16;                /* activations in bf16 */
    size_t es;               /* activation element size */
    cudaStream_t stream;
    cudnnHandle_t dnn;
    size_t ws_limit;
    int deterministic;       /* prefer deterministic convolution algorithms */
    conv_algos_t *cache;     /* the algorithm cache, for the backend's lifetime */
    int ncache, capcache;
    ms_cuda_memory_t mem;
    char *lbp;               /* LBP scratch: unary, two message generations, the mask */
    size_t lbp_bytes;
    char desc[1024];
} cuda_ctx_t;

typedef struct {             /* per conv layer, hung on ms_layer_t.be */
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    conv_algos_t algo;
    int cp;                  /* input channels as cuDNN sees them: I, or I padded to 8 */
    void *wc;                /* (O,k,k,cp) weights in the compute dtype */
    void *xpad, *dxpad;      /* (N,H,W,cp) input and its gradient when cp != I */
} conv_state_t;

typedef struct {
    char *arena;
    size_t arena_bytes;
    float *stage;            /* host<->device staging, float: the larger of (N,C,H,W) and
                                (N,K,mh,mw) */
    void *x;                 /* (N,H,W,C) input in the compute dtype */
    void **act;              /* per layer before the MIL layer: (N,oh,ow,oc) compute dtype */
    uint8_t **arg;           /* per max-pooling layer: (N,oh,ow,oc) where each maximum was */
    void *g[2];              /* gradient ping-pong, each the largest of the above and x;
                                the gradient of layer l's output lives in g[(l+2)&1], so the
                                input gradient (l = -1) is in g[1] */
    float *P, *logP, *log1mP, *glogP, *glog1mP, *gP; /* (N,K): MIL output and gradients */
    float *y, *gy, *prob, *t, *dbbag;                 /* (N,K): head logits etc., targets */
    double *loss;
    float *partial;          /* (MS_CUK_BIAS_BLOCKS, max conv channels) */
    void *dw;                /* weight gradient scratch, largest conv, compute dtype */
    void *ws;
    size_t ws_bytes;
    conv_state_t *conv;      /* nlayers entries, used for conv layers */
} cuda_plan_t;

/* ---- errors ------------------------------------------------------------------------------ */

static ms_status_t cu_fail(cudaError_t e, const char *call, const cuda_ctx_t *c,
                           const char *where, const char *file, int line)
{
    return ms_error_set(MS_EBACKEND, file, line, "%s failed on cuda:%d%s%s: %s (%s)", call,
                        c->device, where ? ", layer " : "", where ? where : "",
                        cudaGetErrorString(e), cudaGetErrorName(e));
}

static ms_status_t dnn_fail(cudnnStatus_t e, const char *call, const cuda_ctx_t *c,
                            const char *where, const char *file, int line)
{
    return ms_error_set(MS_EBACKEND, file, line, "%s failed on cuda:%d%s%s: %s", call,
                        c->device, where ? ", layer " : "", where ? where : "",
                        cudnnGetErrorString(e));
}

/* Need `ms_status_t st`, a `done:` label, `c` (the context) and `where` (a layer name or
 * NULL) in scope. Kernel launchers return cudaGetLastError() after their launches. */
#define CU(call)                                                                       \
    do {                                                                               \
        cudaError_t e_ = (call);                                                       \
        if (e_ != cudaSuccess) {                                                       \
            st = cu_fail(e_, #call, c, where, __FILE__, __LINE__);                     \
            goto done;                                                                 \
        }                                                                              \
    } while (0)
#define DNN(call)                                                                      \
    do {                                                                               \
        cudnnStatus_t e_ = (call);                                                     \
        if (e_ != CUDNN_STATUS_SUCCESS) {                                              \
            st = dnn_fail(e_, #call, c, where, __FILE__, __LINE__);                    \
            goto done;                                                                 \
        }                                                                              \
    } while (0)

static cuda_ctx_t *ctx_of(ms_backend_t *be) { return be->ctx; }

/* ---- memory ------------------------------------------------------------------------------ */

static void mem_add(cuda_ctx_t *c, size_t bytes)
{
    c->mem.now += bytes;
    if (c->mem.now > c->mem.peak)
        c->mem.peak = c->mem.now;
}

/* Allocations carry their size in a 256-byte header so release() can account for them. */
#define HDR 256

static ms_status_t cuda_alloc(ms_backend_t *be, void **p, size_t bytes)
{
    ms_status_t st = MS_OK;
    cuda_ctx_t *c = ctx_of(be);
    const char *where = NULL;
    char *raw = NULL;
    *p = NULL;
    CU(cudaSetDevice(c->device));
    cudaError_t e = cudaMalloc((void **)&raw, bytes + HDR);
    if (e != cudaSuccess) {
        raw = NULL;
        MS_FAIL(MS_ENOMEM, "cudaMalloc of %zu bytes failed on cuda:%d: %s", bytes, c->device,
                cudaGetErrorString(e));
    }
    CU(cudaMemsetAsync(raw + HDR, 0, bytes, c->stream));
    CU(cudaMemcpyAsync(raw, &bytes, sizeof bytes, cudaMemcpyHostToDevice, c->stream));
    CU(cudaStreamSynchronize(c->stream));
    mem_add(c, bytes + HDR);
    *p = raw + HDR;
    raw = NULL;
done:
    if (raw)
        cudaFree(raw);
    return st;
}

static void cuda_release(ms_backend_t *be, void *p)
{
    cuda_ctx_t *c = ctx_of(be);
    if (!p)
        return;
    size_t bytes = 0;
    cudaSetDevice(c->device);
    cudaStreamSynchronize(c->stream); /* no kernel may still use it */
    if (cudaMemcpy(&bytes, (char *)p - HDR, sizeof bytes, cudaMemcpyDeviceToHost) == cudaSuccess)
        c->mem.now -= bytes + HDR <= c->mem.now ? bytes + HDR : c->mem.now;
    cudaFree((char *)p - HDR);
}

static ms_status_t cuda_upload(ms_backend_t *be, void *dst, const void *src, size_t bytes)
{
    ms_status_t st = MS_OK;
    cuda_ctx_t *c = ctx_of(be);
    const char *where = NULL;
    CU(cudaSetDevice(c->device));
    CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
    CU(cudaStreamSynchronize(c->stream));
done:
    return st;
}

static ms_status_t cuda_download(ms_backend_t *be, void *dst, const void *src, size_t bytes)
{
    ms_status_t st = MS_OK;
    cuda_ctx_t *c = ctx_of(be);
    const char *where = NULL;
    CU(cudaSetDevice(c->device));
    CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    CU(cudaStreamSynchronize(c->stream));
done:
    return st;
}

static ms_status_t cuda_zero(ms_backend_t *be, void *p, size_t bytes)
{
    ms_status_t st = MS_OK;
    cuda_ctx_t *c = ctx_of(be);
    const char *where = NULL;
    CU(cudaSetDevice(c->device)); /* the calling thread's current device may be another */
    CU(cudaMemsetAsync(p, 0, bytes, c->stream));
done:
    return st;
}

static ms_status_t cuda_sync(ms_backend_t *be)
{
    ms_status_t st = MS_OK;
    cuda_ctx_t *c = ctx_of(be);
    const char *where = NULL;
    CU(cudaSetDevice(c->device));
    CU(cudaStreamSynchronize(c->stream));
done:
    return st;
}

/* ---- convolution algorithms -------------------------------------------------------------- */

static cudnnDataType_t data_type(const cuda_ctx_t *c)
{
    return c->bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
}

/* fp32 must not silently run on TF32 tensor cores; tf32 and bf16 may use them. */
static cudnnMathType_t math_type(const cuda_ctx_t *c)
{
    if (c->prec == PREC_FP32)
        return CUDNN_FMA_MATH;
    return c->prec == PREC_TF32 ? CUDNN_DEFAULT_MATH : CUDNN_TENSOR_OP_MATH;
}

static int math_ok(const cuda_ctx_t *c, cudnnMathType_t m)
{
    return c->prec != PREC_FP32 ||
           (m != CUDNN_TENSOR_OP_MATH && m != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION);
}

/* The math type to run a found algorithm with: fp32 stays on FMA kernels whatever Find
 * reports (CUDNN_DEFAULT_MATH would allow TF32 on sm_80 and newer). */
static cudnnMathType_t exec_math(const cuda_ctx_t *c, cudnnMathType_t found)
{
    return c->prec == PREC_FP32 ? CUDNN_FMA_MATH : found;
}

/* No FFT or Winograd transforms in fp32 (fp32 means fp32's accuracy; their rounding errors
 * exceed a direct convolution's) nor in bf16 (its result is then the exact convolution of the
 * bf16 operands accumulated in fp32 and rounded once, which the GPU test reproduces on the
 * CPU; cuDNN is not known to offer transforms for NHWC bf16 anyway). tf32 may use them. */
static int exact_fwd(cudnnConvolutionFwdAlgo_t a)
{
    return a != CUDNN_CONVOLUTION_FWD_ALGO_FFT && a != CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING &&
           a != CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD &&
           a != CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED;
}

static int exact_data(cudnnConvolutionBwdDataAlgo_t a)
{
    return a != CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT &&
           a != CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING &&
           a != CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD &&
           a != CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED;
}

static int exact_filter(cudnnConvolutionBwdFilterAlgo_t a)
{
    return a != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT &&
           a != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING &&
           a != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED;
}

/* From cudnnFind's list (fastest first): the fastest deterministic algorithm that succeeded
 * within the workspace bound, else the fastest that did. Deterministic ones are preferred so
 * that a resumed run repeats its arithmetic; MILSCREEN_CUDA_DETERMINISTIC=0 takes the fastest
 * (to measure what the preference costs). Returns the index or -1. */
#define PICK(perf, n, c, exact)                                                        \
    ({                                                                                 \
        int best_ = -1, any_ = -1;                                                     \
        for (int i_ = 0; i_ < (n); i_++) {                                             \
            if ((perf)[i_].status != CUDNN_STATUS_SUCCESS ||                           \
                (perf)[i_].memory > (c)->ws_limit || !math_ok((c), (perf)[i_].mathType) || \
                ((c)->prec != PREC_TF32 && !exact((perf)[i_].algo)))                   \
                continue;                                                              \
            if (any_ < 0)                                                              \
                any_ = i_;                                                             \
            if (best_ < 0 && (perf)[i_].determinism == CUDNN_DETERMINISTIC)            \
                best_ = i_;                                                            \
        }                                                                              \
        best_ >= 0 && (c)->deterministic ? best_ : any_;                               \
    })

static ms_status_t find_algos(cuda_ctx_t *c, conv_state_t *cs, const conv_key_t *key,
                              int need_filter, const char *where)
{
    ms_status_t st = MS_OK;
    conv_algos_t *a = NULL;
    for (int i = 0; i < c->ncache; i++)
        if (!memcmp(&c->cache[i].key, key, sizeof *key))
            a = &c->cache[i];
    if (!a) {
        if (c->ncache == c->capcache) {
            int cap = c->capcache ? 2 * c->capcache : 16;
            conv_algos_t *n = realloc(c->cache, sizeof *n * (size_t)cap);
            if (!n)
                MS_FAIL(MS_ENOMEM, "out of memory for the algorithm cache");
            c->cache = n;
            c->capcache = cap;
        }
        a = &c->cache[c->ncache++];
        memset(a, 0, sizeof *a);
        a->key = *key;
    }
    if (!a->have_fwd) {
        cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        int n = 0;
        DNN(cudnnFindConvolutionForwardAlgorithm(c->dnn, cs->x, cs->w, cs->conv, cs->y,
                                                 CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf));
        int i = PICK(perf, n, c, exact_fwd);
        if (i < 0)
            MS_FAIL(MS_EBACKEND, "cuDNN has no forward algorithm for layer %s on cuda:%d "
                    "within the %zu MiB workspace bound", where, c->device, c->ws_limit >> 20);
        a->fwd = perf[i].algo;
        a->fwd_math = exec_math(c, perf[i].mathType);
        a->fwd_ws = perf[i].memory;
        a->have_fwd = 1;
    }
    if (!a->have_data) {
        cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        int n = 0;
        DNN(cudnnFindConvolutionBackwardDataAlgorithm(c->dnn, cs->w, cs->y, cs->conv, cs->x,
                                                      CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n,
                                                      perf));
        int i = PICK(perf, n, c, exact_data);
        if (i < 0)
            MS_FAIL(MS_EBACKEND, "cuDNN has no backward-data algorithm for layer %s on "
                    "cuda:%d within the %zu MiB workspace bound", where, c->device,
                    c->ws_limit >> 20);
        a->data = perf[i].algo;
        a->data_math = exec_math(c, perf[i].mathType);
        a->data_ws = perf[i].memory;
        a->have_data = 1;
    }
    if (need_filter && !a->have_filter) {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
        int n = 0;
        DNN(cudnnFindConvolutionBackwardFilterAlgorithm(c->dnn, cs->x, cs->y, cs->conv, cs->w,
                                                        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                                                        &n, perf));
        int i = PICK(perf, n, c, exact_filter);
        if (i < 0)
            MS_FAIL(MS_EBACKEND, "cuDNN has no backward-filter algorithm for layer %s on "
                    "cuda:%d within the %zu MiB workspace bound", where, c->device,
                    c->ws_limit >> 20);
        a->filter = perf[i].algo;
        a->filter_math = exec_math(c, perf[i].mathType);
        a->filter_ws = perf[i].memory;
        a->have_filter = 1;
    }
    cs->algo = *a;
done:
    return st;
}

static ms_status_t conv_setup(cuda_ctx_t *c, const ms_plan_t *pl, const ms_layer_t *L,
                              conv_state_t *cs)
{
    ms_status_t st = MS_OK;
    const char *where = L->spec->name;
    const ms_layer_spec_t *s = L->spec;
    cudnnDataType_t dt = data_type(c);
    DNN(cudnnCreateTensorDescriptor(&cs->x));
    DNN(cudnnCreateTensorDescriptor(&cs->y));
    DNN(cudnnCreateFilterDescriptor(&cs->w));
    DNN(cudnnCreateConvolutionDescriptor(&cs->conv));
    DNN(cudnnSetTensor4dDescriptor(cs->x, CUDNN_TENSOR_NHWC, dt, pl->n, cs->cp, L->h, L->w));
    DNN(cudnnSetTensor4dDescriptor(cs->y, CUDNN_TENSOR_NHWC, dt, pl->n, L->oc, L->oh, L->ow));
    DNN(cudnnSetFilter4dDescriptor(cs->w, dt, CUDNN_TENSOR_NHWC, L->oc, cs->cp, s->size,
                                   s->size));
    DNN(cudnnSetConvolution2dDescriptor(cs->conv, s->pad, s->pad, s->stride, s->stride, 1, 1,
                                        CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    DNN(cudnnSetConvolutionMathType(cs->conv, math_type(c)));
    {
        int n, oc, oh, ow;
        DNN(cudnnGetConvolution2dForwardOutputDim(cs->conv, cs->x, cs->w, &n, &oc, &oh, &ow));
        if (n != pl->n || oc != L->oc || oh != L->oh || ow != L->ow)
            MS_FAIL(MS_EINTERNAL, "layer %s: cuDNN gives %dx%dx%dx%d, the plan %dx%dx%dx%d",
                    where, n, oc, oh, ow, pl->n, L->oc, L->oh, L->ow);
    }
    conv_key_t key = {pl->n, cs->cp, L->h, L->w, L->oc, s->size, s->stride, s->pad, c->prec};
    MS_TRY(find_algos(c, cs, &key, pl->train, where));
done:
    return st;
}

static void conv_teardown(conv_state_t *cs)
{
    if (cs->x)
        cudnnDestroyTensorDescriptor(cs->x);
    if (cs->y)
        cudnnDestroyTensorDescriptor(cs->y);
    if (cs->w)
        cudnnDestroyFilterDescriptor(cs->w);
    if (cs->conv)
        cudnnDestroyConvolutionDescriptor(cs->conv);
    memset(cs, 0, sizeof *cs);
}

/* Tensor-core kernels want input channels in multiples of 8 (16 bytes of bf16); the first
 * convolution has 3. Padding with zero channels (and zero weights) costs 8/3 of that layer's
 * arithmetic on tensor cores instead of the whole of it on slower kernels. fp32 runs FMA
 * kernels, which gain nothing. MILSCREEN_CUDA_PAD_CHANNELS=0 turns it off (for measuring). */
static int padded_channels(const cuda_ctx_t *c, int channels)
{
    const char *env = getenv("MILSCREEN_CUDA_PAD_CHANNELS");
    if (c->prec == PREC_FP32 || channels % 8 == 0 || (env && !strcmp(env, "0")))
        return channels;
    return (channels + 7) / 8 * 8;
}

/* ---- plans ------------------------------------------------------------------------------- */

static size_t out_count(const ms_plan_t *pl, int l)
{
    const ms_layer_t *L = &pl->layers[l];
    return (size_t)pl->n * L->oc * L->oh * L->ow;
}

static size_t in_count(const ms_plan_t *pl, int l)
{
    const ms_layer_t *L = &pl->layers[l];
    return (size_t)pl->n * L->c * L->h * L->w;
}

static void *carve(char *base, size_t *off, size_t bytes)
{
    size_t o = (*off + 255) & ~(size_t)255;
    *off = o + bytes;
    return base ? base + o : NULL;
}

/* Lays the plan's buffers out from base (NULL: only counts); returns the bytes needed. */
static size_t layout(const cuda_ctx_t *c, ms_plan_t *pl, cuda_plan_t *p, char *base)
{
    const ms_spec_t *sp = pl->spec;
    const int mil = sp->mil;
    const size_t es = c->es, nk = (size_t)pl->n * sp->classes;
    size_t off = 0, biggest = in_count(pl, 0), maxw = 0;
    int maxc = 1;
    size_t stage = in_count(pl, 0), maps = (size_t)pl->n * sp->classes * pl->mh * pl->mw;
    p->stage = carve(base, &off, sizeof(float) * (stage > maps ? stage : maps));
    p->x = carve(base, &off, es * in_count(pl, 0));
    for (int l = 0; l < mil; l++) {
        /* Dropout after pooling runs in place: no backward pass reads a pooling layer's
         * output (max pooling's reads its input and the argmax bytes), so the pool's buffer
         * may hold the dropout's. Not after a convolution: its ReLU mask is its output. */
        const ms_layer_kind_t prev = l > 0 ? sp->layers[l - 1].kind : MS_LAYER_CONV;
        if (sp->layers[l].kind == MS_LAYER_DROPOUT &&
            (prev == MS_LAYER_MAXPOOL || prev == MS_LAYER_AVGPOOL))
            p->act[l] = p->act[l - 1];
        else
            p->act[l] = carve(base, &off, es * out_count(pl, l));
        if (sp->layers[l].kind == MS_LAYER_MAXPOOL &&
            sp->layers[l].size <= MS_CUK_POOL_ARG_MAX_K)
            p->arg[l] = carve(base, &off, out_count(pl, l));
        if (out_count(pl, l) > biggest)
            biggest = out_count(pl, l);
        if (sp->layers[l].kind == MS_LAYER_CONV) {
            const ms_layer_t *L = &pl->layers[l];
            conv_state_t *cs = &p->conv[l];
            size_t nw = (size_t)L->oc * cs->cp * L->spec->size * L->spec->size;
            cs->wc = carve(base, &off, es * nw);
            if (cs->cp != L->c) {
                cs->xpad = carve(base, &off, es * pl->n * L->h * L->w * cs->cp);
                cs->dxpad = carve(base, &off, es * pl->n * L->h * L->w * cs->cp);
            }
            if (nw > maxw)
                maxw = nw;
            if (L->oc > maxc)
                maxc = L->oc;
        }
    }
    p->g[0] = carve(base, &off, es * biggest);
    p->g[1] = carve(base, &off, es * biggest);
    float **head[] = {&p->P, &p->logP, &p->log1mP, &p->glogP, &p->glog1mP, &p->gP,
                      &p->y, &p->gy, &p->prob, &p->t, &p->dbbag};
    for (size_t i = 0; i < sizeof head / sizeof *head; i++)
        *head[i] = carve(base, &off, sizeof(float) * nk);
    p->loss = carve(base, &off, sizeof(double));
    p->partial = carve(base, &off, sizeof(float) * MS_CUK_BIAS_BLOCKS * (size_t)maxc);
    p->dw = carve(base, &off, es * (maxw ? maxw : 1));
    p->ws = carve(base, &off, p->ws_bytes ? p->ws_bytes : 1);
    return off;
}

static void cuda_plan_destroy(ms_backend_t *be, ms_plan_t *pl)
{
    cuda_ctx_t *c = ctx_of(be);
    cuda_plan_t *p = pl->be;
    if (!p)
        return;
    cudaSetDevice(c->device);
    if (p->arena) {
        cudaStreamSynchronize(c->stream);
        cudaFree(p->arena);
        c->mem.now -= p->arena_bytes <= c->mem.now ? p->arena_bytes : c->mem.now;
        c->mem.arena = c->mem.workspace = 0;
    }
    if (p->conv)
        for (int l = 0; l < pl->spec->nlayers; l++) {
            conv_teardown(&p->conv[l]);
            pl->layers[l].be = NULL;
        }
    free(p->conv);
    free(p->act);
    free(p->arg);
    free(p);
    pl->be = NULL;
}

static ms_status_t cuda_plan_create(ms_backend_t *be, ms_plan_t *pl)
{
    ms_status_t st = MS_OK;
    cuda_ctx_t *c = ctx_of(be);
    const char *where = NULL;
    const ms_spec_t *sp = pl->spec;
    cuda_plan_t *p = NULL;
    if (pl->dtype != MS_F32)
        return MS_ERR(MS_EARG, "the cuda backend keeps parameters in float (fp32 master "
                               "weights); double is the ref backend's");
    MS_ALLOC(p, 1, "CUDA plan");
    pl->be = p;
    MS_ALLOC(p->act, sp->nlayers, "activation table");
    MS_ALLOC(p->arg, sp->nlayers, "argmax table");
    MS_ALLOC(p->conv, sp->nlayers, "convolution table");
    CU(cudaSetDevice(c->device));

    /* algorithms first (cuDNN's search allocates its own memory), then the one arena */
    size_t ws = 0;
    for (int l = 0; l < sp->mil; l++) {
        if (sp->layers[l].kind != MS_LAYER_CONV)
            continue;
        conv_state_t *cs = &p->conv[l];
        pl->layers[l].be = cs;
        cs->cp = padded_channels(c, pl->layers[l].c);
        MS_TRY(conv_setup(c, pl, &pl->layers[l], cs));
        size_t need[3] = {cs->algo.fwd_ws, cs->algo.data_ws, pl->train ? cs->algo.filter_ws : 0};
        for (int i = 0; i < 3; i++)
            ws = need[i] > ws ? need[i] : ws;
    }
    for (int l = sp->mil; l < sp->nlayers; l++)
        if (sp->layers[l].kind == MS_LAYER_CONV)
            MS_FAIL(MS_EINTERNAL, "layer %s: a convolution after the MIL layer",
                    sp->layers[l].name);
    p->ws_bytes = ws;
    size_t bytes = layout(c, pl, p, NULL);
    {
        size_t free_b = 0, total_b = 0;
        cudaError_t e = cudaMalloc((void **)&p->arena, bytes);
        if (e != cudaSuccess) {
            cudaMemGetInfo(&free_b, &total_b);
            MS_FAIL(MS_ENOMEM, "cudaMalloc of the %.2f GiB arena for batch %d of %dx%d failed "
                    "on cuda:%d (%.2f GiB free of %.2f): %s; use a smaller batch or crop",
                    bytes / 1073741824.0, pl->n, pl->h, pl->w, c->device,
                    free_b / 1073741824.0, total_b / 1073741824.0, cudaGetErrorString(e));
        }
    }
    p->arena_bytes = bytes;
    mem_add(c, bytes);
    c->mem.arena = bytes;
    c->mem.workspace = ws;
    layout(c, pl, p, p->arena);
    /* Nothing unwritten is ever read, but a zeroed arena makes a bug reproducible; the tests
     * set MILSCREEN_CUDA_POISON=1 to fill it with NaN instead (0xffff is NaN in float and in
     * bf16), so that an element a kernel forgets to write fails the comparison. */
    {
        const char *poison = getenv("MILSCREEN_CUDA_POISON");
        CU(cudaMemsetAsync(p->arena, poison && *poison == '1' ? 0xff : 0, bytes, c->stream));
    }
    return MS_OK;
done:
    cuda_plan_destroy(be, pl);
    return st;
}

/* ---- layers ------------------------------------------------------------------------------ */

static void *grad_of(cuda_plan_t *p, int l) { return p->g[(l + 2) & 1]; }

static const void *layer_in(const ms_plan_t *pl, int l)
{
    const cuda_plan_t *p = pl->be;
    return l == 0 ? p->x : p->act[l - 1];
}

static ms_cuk_pool_t pool_shape(const ms_plan_t *pl, const ms_layer_t *L)
{
    ms_cuk_pool_t s = {.n = pl->n, .c = L->c, .h = L->h, .w = L->w, .oh = L->oh, .ow = L->ow,
                       .k = L->spec->size, .stride = L->spec->stride, .pad = L->spec->pad};
    return s;
}

static ms_status_t cuda_set_input(ms_backend_t *be, ms_plan_t *pl, const void *x)
{
    ms_status_t st = MS_OK;
    cuda_ctx_t *c = ctx_of(be);
    cuda_plan_t *p = pl->be;
    const char *where = "input";
    size_t n = in_count(pl, 0);
    CU(cudaSetDevice(c->device)); /* a pass starts here; the stream belongs to the device */
    CU(cudaMemcpyAsync(p->stage, x, n * sizeof(float), cudaMemcpyHostToDevice, c->stream));
    CU(ms_cuk_nchw_to_nhwc(p->x, p->stage, pl->n, pl->spec->channels, pl->h, pl->w, c->bf16,
                           c->stream));
done:
    return st;
}

static ms_status_t cuda_forward(ms_backend_t *be, ms_plan_t *pl, int l, const void *params,
                                const ms_pass_t *pass)
{
    ms_status_t st = MS_OK;
    cuda_ctx_t *c = ctx_of(be);
    cuda_plan_t *p = pl->be;
    const ms_layer_t *L = &pl->layers[l];
    const ms_layer_spec_t *s = L->spec;
    const char *where = s->name;
    const float *w = (const float *)params + L->w_off, *b = (const float *)params + L->b_off;
    const void *in = layer_in(pl, l);
    const float one = 1.0f, zero = 0.0f;
    switch (s->kind) {
    case MS_LAYER_CONV: {
        conv_state_t *cs = &p->conv[l];
        CU(ms_cuk_weights_krsc(cs->wc, w, L->oc, L->c, cs->cp, s->size, c->bf16, c->stream));
        if (cs->xpad) {
            CU(ms_cuk_pad_channels(cs->xpad, in, (size_t)pl->n * L->h * L->w, L->c, cs->cp, 1,
                                   c->bf16, c->stream));
            in = cs->xpad;
        }
        DNN(cudnnSetConvolutionMathType(cs->conv, cs->algo.fwd_math));
        DNN(cudnnConvolutionForward(c->dnn, &one, cs->x, in, cs->w, cs->wc, cs->conv,
                                    cs->algo.fwd, p->ws, p->ws_bytes, &zero, cs->y, p->act[l]));
        CU(ms_cuk_bias_act(p->act[l], b, (size_t)pl->n * L->oh * L->ow, L->oc, s->relu,
                           c->bf16, c->stream));
        break;
    }
    case MS_LAYER_MAXPOOL:
    case MS_LAYER_AVGPOOL: {
        ms_cuk_pool_t ps = pool_shape(pl, L);
        CU(ms_cuk_pool_fwd(p->act[l], p->arg[l], in, &ps, s->kind == MS_LAYER_MAXPOOL,
                           c->bf16, c->stream));
        break;
    }
    case MS_LAYER_RELU:
        CU(ms_cuk_relu_fwd(p->act[l], in, out_count(pl, l), c->bf16, c->stream));
        break;
    case MS_LAYER_DROPOUT:
        if (pl->train && s->rate > 0) {
            float scale = 1.0f / (1.0f - (float)s->rate); /* as the reference, in float */
            CU(ms_cuk_dropout(p->act[l], in, pl->n, L->oc, L->oh, L->ow,
                              ms_pass_index0(pass, (size_t)L->oc * L->oh * L->ow),
                              ms_pass_key(pass, l), (float)s->rate, scale, c->bf16, c->stream));
        } else if (p->act[l] != in) {
            CU(cudaMemcpyAsync(p->act[l], in, out_count(pl, l) * c->es,
                               cudaMemcpyDeviceToDevice, c->stream));
        }
        break;
    case MS_LAYER_MIL:
        CU(ms_cuk_mil_fwd(p->P, p->logP, p->log1mP, in, L->nb ? b : NULL, (int)s->pool,
                          (float)s->a, (float)s->r, pl->n, L->c, L->h * L->w, c->bf16,
                          c->stream));
        break;
    case MS_LAYER_FC:
        CU(ms_cuk_fc_fwd(p->y, p->P, w, b, pl->n, L->c, L->oc, c->stream));
        /* probabilities in the forward pass: eval reads them without a loss */
        CU(ms_cuk_head_prob(p->prob, p->y, (int)s->head, pl->n, L->oc, c->stream));
        break;
    }
done:
    return st;
}

static ms_status_t cuda_loss(ms_backend_t *be, ms_plan_t *pl, const void *t, double *loss)
{
    ms_status_t st = MS_OK;
    cuda_ctx_t *c = ctx_of(be);
    cuda_plan_t *p = pl->be;
    const ms_spec_t *sp = pl->spec;
    const char *where = "loss";
    const size_t nk = (size_t)pl->n * sp->classes;
    int fc = sp->fc;
    ms_head_t head = fc >= 0 ? sp->layers[fc].head : MS_HEAD_SOFTMAX;
    CU(cudaSetDevice(c->device));
    CU(cudaMemcpyAsync(p->t, t, nk * sizeof(float), cudaMemcpyHostToDevice, c->stream));
    CU(ms_cuk_loss(p->loss, p->glogP, p->glog1mP, p->gy, p->prob, p->logP, p->log1mP,
                   fc >= 0 ? p->y : NULL, p->t, (int)head, pl->n, sp->classes, c->stream));
    /* the MIL output's own gradient comes only from the head */
    CU(cudaMemsetAsync(p->gP, 0, nk * sizeof(float), c->stream));
    CU(cudaMemcpyAsync(loss, p->loss, sizeof(double), cudaMemcpyDeviceToHost, c->stream));
    CU(cudaStreamSynchronize(c->stream));
done:
    return st;
}

static ms_status_t cuda_guided_seed(ms_backend_t *be, ms_plan_t *pl, int cls)
{
    ms_status_t st = MS_OK;
    cuda_ctx_t *c = ctx_of(be);
    cuda_plan_t *p = pl->be;
    int mil = pl->spec->mil;
    const char *where = pl->spec->layers[mil].name;
    CU(cudaSetDevice(c->device)); /* a guided pass starts here */
    CU(ms_cuk_guided_seed(grad_of(p, mil - 1), p->act[mil - 1], p->P, cls, pl->n,
                          pl->spec->classes, pl->mh * pl->mw, c->bf16, c->stream));
done:
    return st;
}

static ms_status_t cuda_backward(ms_backend_t *be, ms_plan_t *pl, int l, const void *params,
                                 void *grads, int flags, const ms_pass_t *pass)
{
    ms_status_t st = MS_OK;
    cuda_ctx_t *c = ctx_of(be);
    cuda_plan_t *p = pl->be;
    const ms_layer_t *L = &pl->layers[l];
    const ms_layer_spec_t *s = L->spec;
    const char *where = s->name;
    const int mil = pl->spec->mil;
    const float *w = (const float *)params + L->w_off, *b = (const float *)params + L->b_off;
    const int wgrad = (flags & MS_BWD_WEIGHTS) && grads;
    float *dw = wgrad ? (float *)grads + L->w_off : NULL;
    float *db = wgrad ? (float *)grads + L->b_off : NULL;
    const void *in = layer_in(pl, l);
    /* layers before the MIL layer keep gradients in the ping-pong buffers, the head in fp32 */
    void *din = (flags & MS_BWD_DATA) && l <= mil ? grad_of(p, l - 1) : NULL;
    void *dout = l < mil ? grad_of(p, l) : NULL;
    const float one = 1.0f, zero = 0.0f;
    switch (s->kind) {
    case MS_LAYER_CONV: {
        conv_state_t *cs = &p->conv[l];
        size_t rows = (size_t)pl->n * L->oh * L->ow;
        if (s->relu || db)
            CU(ms_cuk_relu_bias_bwd(dout, p->act[l], db ? p->partial : NULL, rows, L->oc,
                                    s->relu, c->bf16, c->stream));
        if (db)
            CU(ms_cuk_bias_finish(db, p->partial, rows, L->oc, c->stream));
        if (dw) {
            if (!cs->algo.have_filter)
                MS_FAIL(MS_EINTERNAL, "layer %s: weight gradients asked of an inference plan",
                        where);
            DNN(cudnnSetConvolutionMathType(cs->conv, cs->algo.filter_math));
            /* the padded input is still the forward's: nothing writes it in between */
            DNN(cudnnConvolutionBackwardFilter(c->dnn, &one, cs->x, cs->xpad ? cs->xpad : in,
                                               cs->y, dout, cs->conv, cs->algo.filter, p->ws,
                                               p->ws_bytes, &zero, cs->w, p->dw));
            CU(ms_cuk_dw_add(dw, p->dw, L->oc, L->c, cs->cp, s->size, c->bf16, c->stream));
        }
        if (din) {
            DNN(cudnnSetConvolutionMathType(cs->conv, cs->algo.data_math));
            DNN(cudnnConvolutionBackwardData(c->dnn, &one, cs->w, cs->wc, cs->y, dout, cs->conv,
                                             cs->algo.data, p->ws, p->ws_bytes, &zero, cs->x,
                                             cs->dxpad ? cs->dxpad : din));
            if (cs->dxpad)
                CU(ms_cuk_pad_channels(din, cs->dxpad, (size_t)pl->n * L->h * L->w, L->c, cs->cp,
                                       0, c->bf16, c->stream));
        }
        break;
    }
    case MS_LAYER_MAXPOOL:
    case MS_LAYER_AVGPOOL:
        if (din) {
            ms_cuk_pool_t ps = pool_shape(pl, L);
            CU(ms_cuk_pool_bwd(din, dout, in, p->arg[l], &ps, s->kind == MS_LAYER_MAXPOOL,
                               c->bf16, c->stream));
        }
        break;
    case MS_LAYER_RELU:
        if (din)
            CU(ms_cuk_relu_bwd(din, dout, p->act[l], out_count(pl, l), c->bf16, c->stream));
        break;
    case MS_LAYER_DROPOUT:
        if (din && pl->train && s->rate > 0) {
            float scale = 1.0f / (1.0f - (float)s->rate);
            CU(ms_cuk_dropout(din, dout, pl->n, L->oc, L->oh, L->ow,
                              ms_pass_index0(pass, (size_t)L->oc * L->oh * L->ow),
                              ms_pass_key(pass, l), (float)s->rate, scale, c->bf16, c->stream));
        } else if (din) {
            CU(cudaMemcpyAsync(din, dout, out_count(pl, l) * c->es, cudaMemcpyDeviceToDevice,
                               c->stream));
        }
        break;
    case MS_LAYER_MIL:
        if (din) {
            const int nb = L->nb > 0;
            CU(ms_cuk_mil_bwd(din, p->dbbag, p->gP, p->glogP, p->glog1mP, in, nb ? b : NULL,
                              (int)s->pool, (float)s->a, (float)s->r, pl->n, L->c, L->h * L->w,
                              c->bf16, c->stream));
            if (nb && db)
                CU(ms_cuk_colsum_add(db, p->dbbag, pl->n, L->c, c->stream));
        }
        break;
    case MS_LAYER_FC:
        CU(ms_cuk_fc_bwd((flags & MS_BWD_DATA) ? p->gP : NULL, dw, db, p->gy, p->P, w, pl->n,
                         L->c, L->oc, c->stream));
        break;
    }
    if (din && (flags & MS_BWD_GUIDED) && l < mil)
        CU(ms_cuk_clamp(din, in_count(pl, l), 0.0f, INFINITY, c->bf16, c->stream));
done:
    return st;
}

static ms_status_t cuda_get_output(ms_backend_t *be, ms_plan_t *pl, ms_output_t which,
                                   void *host)
{
    ms_status_t st = MS_OK;
    cuda_ctx_t *c = ctx_of(be);
    cuda_plan_t *p = pl->be;
    const ms_spec_t *sp = pl->spec;
    const char *where = NULL;
    const int mil = sp->mil, K = sp->classes;
    const size_t nk = (size_t)pl->n * K;
    const float *src = NULL;
    size_t n = 0;
    CU(cudaSetDevice(c->device));
    switch (which) {
    case MS_OUT_MAPS:
    case MS_OUT_LOGITS:
        CU(ms_cuk_nhwc_to_nchw(p->stage, p->act[mil - 1], pl->n, K, pl->mh, pl->mw,
                               which == MS_OUT_MAPS, c->bf16, c->stream));
        src = p->stage;
        n = out_count(pl, mil - 1);
        break;
    case MS_OUT_MIL:
        src = p->P;
        n = nk;
        break;
    case MS_OUT_FC:
        if (sp->fc < 0)
            return MS_ERR(MS_EARG, "the network has no fc head");
        src = p->prob;
        n = nk;
        break;
    case MS_OUT_INPUT_GRAD:
        CU(ms_cuk_nhwc_to_nchw(p->stage, grad_of(p, -1), pl->n, sp->channels, pl->h, pl->w, 0,
                               c->bf16, c->stream));
        src = p->stage;
        n = in_count(pl, 0);
        break;
    default:
        return MS_ERR(MS_EARG, "unknown output %d", (int)which);
    }
    CU(cudaMemcpyAsync(host, src, n * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
    CU(cudaStreamSynchronize(c->stream));
done:
    return st;
}

static ms_status_t cuda_adam(ms_backend_t *be, void *p, const void *g, void *m, void *v,
                             size_t n, const ms_adam_t *hp, long step, ms_dtype_t dt)
{
    ms_status_t st = MS_OK;
    cuda_ctx_t *c = ctx_of(be);
    const char *where = "adam";
    if (dt != MS_F32)
        return MS_ERR(MS_EARG, "the cuda backend's Adam runs in float");
    /* the bias corrections exactly as the float reference computes them */
    const float b1 = (float)hp->beta1, b2 = (float)hp->beta2;
    const float bc1 = 1.0f - powf(b1, (float)step), bc2 = 1.0f - powf(b2, (float)step);
    const float step_size = (float)hp->lr / bc1, sbc2 = sqrtf(bc2);
    CU(cudaSetDevice(c->device));
    CU(ms_cuk_adam(p, g, m, v, n, b1, b2, step_size, sbc2, (float)hp->eps, c->stream));
done:
    return st;
}

static ms_status_t cuda_clamp(ms_backend_t *be, void *p, size_t n, double lo, double hi,
                              ms_dtype_t dt)
{
    ms_status_t st = MS_OK;
    cuda_ctx_t *c = ctx_of(be);
    const char *where = "clamp";
    if (dt != MS_F32)
        return MS_ERR(MS_EARG, "the cuda backend clamps float parameters only");
    CU(cudaSetDevice(c->device));
    CU(ms_cuk_clamp(p, n, (float)lo, (float)hi, 0, c->stream));
done:
    return st;
}

static void cuda_describe(ms_backend_t *be, char *buf, size_t n)
{
    snprintf(buf, n, "%s", ctx_of(be)->desc);
}

static void cuda_destroy(ms_backend_t *be)
{
    cuda_ctx_t *c = be ? be->ctx : NULL;
    if (c) {
        cudaSetDevice(c->device);
        if (c->lbp) {
            cudaStreamSynchronize(c->stream);
            cudaFree(c->lbp);
        }
        if (c->dnn)
            cudnnDestroy(c->dnn);
        if (c->stream)
            cudaStreamDestroy(c->stream);
        free(c->cache);
        free(c);
    }
    free(be);
}

int ms_cu_stream(ms_backend_t *be, cudaStream_t *stream, int *device)
{
    if (!be || strcmp(be->name, "cuda"))
        return 0;
    *stream = ctx_of(be)->stream;
    *device = ctx_of(be)->device;
    return 1;
}

ms_status_t ms_cu_memory(ms_backend_t *be, ms_cuda_memory_t *m)
{
    if (!be || strcmp(be->name, "cuda"))
        return MS_ERR(MS_EARG, "not the cuda backend");
    *m = ctx_of(be)->mem;
    return MS_OK;
}

void ms_cu_memory_reset_peak(ms_backend_t *be)
{
    if (be && !strcmp(be->name, "cuda"))
        ctx_of(be)->mem.peak = ctx_of(be)->mem.now;
}

ms_status_t ms_cu_lbp_binary(ms_backend_t *be, uint8_t *out, const float *unary, int H, int W,
                             double pairwise, int iterations, int max_product, double damping)
{
    ms_status_t st = MS_OK;
    const char *where = "lbp";
    if (!be || strcmp(be->name, "cuda"))
        return MS_ERR(MS_EARG, "LBP on the GPU needs the cuda backend");
    cuda_ctx_t *c = ctx_of(be);
    if (H < 0 || W < 0 || iterations < 0 || !(damping >= 0 && damping < 1) ||
        !(pairwise >= 0 && pairwise <= 50.0))
        return MS_ERR(MS_EARG, "LBP: bad arguments (%dx%d, %d iterations, damping %g, "
                      "pairwise %g)", W, H, iterations, damping, pairwise);
    size_t hw = (size_t)H * W;
    if (hw == 0)
        return MS_OK;
    /* unary (hw floats), msg and nxt (4 hw floats each), the mask (hw bytes) */
    size_t off_msg = (4 * hw + 63) / 64 * 64, off_nxt = off_msg + 16 * hw,
           off_out = off_nxt + 16 * hw, need = off_out + hw;
    CU(cudaSetDevice(c->device));
    if (need > c->lbp_bytes) {
        if (c->lbp) {
            CU(cudaStreamSynchronize(c->stream));
            CU(cudaFree(c->lbp));
            c->mem.now -= c->lbp_bytes <= c->mem.now ? c->lbp_bytes : c->mem.now;
            c->lbp = NULL;
            c->lbp_bytes = 0;
        }
        CU(cudaMalloc((void **)&c->lbp, need));
        c->lbp_bytes = need;
        mem_add(c, need);
    }
    float *u = (float *)c->lbp, *msg = (float *)(c->lbp + off_msg),
          *nxt = (float *)(c->lbp + off_nxt);
    uint8_t *mask = (uint8_t *)(c->lbp + off_out);
    CU(cudaMemcpyAsync(u, unary, 4 * hw, cudaMemcpyHostToDevice, c->stream));
    CU(cudaMemsetAsync(msg, 0, 32 * hw, c->stream)); /* both generations */
    CU(ms_cuk_lbp(mask, msg, nxt, u, H, W, (float)pairwise, iterations, max_product,
                  (float)damping, c->stream));
    CU(cudaMemcpyAsync(out, mask, hw, cudaMemcpyDeviceToHost, c->stream));
    CU(cudaStreamSynchronize(c->stream));
done:
    return st;
}

void ms_cu_conv_algos(ms_backend_t *be, const ms_plan_t *plan, int layer, char *buf,
                      size_t n)
{
    if (n)
        buf[0] = 0;
    if (!be || strcmp(be->name, "cuda") || !plan || layer < 0 || layer >= plan->spec->nlayers ||
        plan->layers[layer].spec->kind != MS_LAYER_CONV || !plan->layers[layer].be)
        return;
    const conv_state_t *cs = plan->layers[layer].be;
    const conv_algos_t *a = &cs->algo;
    snprintf(buf, n, "fwd %d data %d filter %d, ws %zu/%zu/%zu MiB%s", (int)a->fwd,
             (int)a->data, a->have_filter ? (int)a->filter : -1, a->fwd_ws >> 20,
             a->data_ws >> 20, a->filter_ws >> 20,
             cs->cp != plan->layers[layer].c ? ", channels padded" : "");
}

ms_status_t ms_cu_backend_open(ms_backend_t **out, int device, const char *precision)
{
    ms_status_t st = MS_OK;
    ms_backend_t *be = NULL;
    cuda_ctx_t *c = NULL;
    const char *where = NULL;
    *out = NULL;
    int prec = -1;
    if (!precision || !*precision)
        precision = "bf16";
    for (int i = 0; i < 3; i++)
        if (!strcmp(precision, prec_names[i]))
            prec = i;
    if (prec < 0)
        return MS_ERR(MS_EARG, "unknown CUDA precision '%s' (bf16, tf32, fp32)", precision);
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0)
        return MS_ERR(MS_EBACKEND, "no CUDA device: %s",
                      e != cudaSuccess ? cudaGetErrorString(e) : "the driver sees none");
    if (device < 0)
        return MS_ERR(MS_EARG, "CUDA device %d does not exist (this node has %d)", device,
                      count);
    device %= count; /* ranks: local rank mod the node's GPUs (DESIGN §4) */
    MS_ALLOC(be, 1, "CUDA backend");
    MS_ALLOC(c, 1, "CUDA context");
    be->ctx = c;
    c->device = device;
    c->prec = prec;
    c->bf16 = prec == PREC_BF16;
    c->es = c->bf16 ? 2 : 4;
    c->ws_limit = (size_t)DEFAULT_WORKSPACE_MB << 20;
    {
        const char *env = getenv("MILSCREEN_CUDA_DETERMINISTIC");
        c->deterministic = !(env && !strcmp(env, "0"));
    }
    {
        const char *env = getenv("MILSCREEN_CUDA_WORKSPACE_MB");
        char *end = NULL;
        long mb = env ? strtol(env, &end, 10) : 0;
        if (env && (!*env || *end || mb < 0))
            MS_FAIL(MS_EARG, "MILSCREEN_CUDA_WORKSPACE_MB='%s' is not a number of MiB", env);
        if (env)
            c->ws_limit = (size_t)mb << 20;
    }
    struct cudaDeviceProp prop;
    CU(cudaGetDeviceProperties(&prop, device));
    if (prop.major < 9)
        MS_FAIL(MS_EBACKEND, "cuda:%d is %s (compute capability %d.%d); this build carries "
                "code for sm_90 (Hopper) and newer only", device, prop.name, prop.major,
                prop.minor);
    CU(cudaSetDevice(device));
    CU(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    DNN(cudnnCreate(&c->dnn));
    DNN(cudnnSetStream(c->dnn, c->stream));
    int drv = 0;
    CU(cudaDriverGetVersion(&drv));
    size_t v = cudnnGetVersion();
    snprintf(c->desc, sizeof c->desc,
             "cuda:%d %s (sm_%d%d, %d SMs, %.0f GiB), driver for CUDA %d.%d, cuDNN %zu.%zu.%zu, "
             "%s",
             device, prop.name, prop.major, prop.minor, prop.multiProcessorCount,
             prop.totalGlobalMem / 1073741824.0, drv / 1000, drv % 1000 / 10, v / 10000,
             v / 100 % 100, v % 100,
             prec == PREC_BF16 ? "bf16 compute, fp32 master weights and Adam"
                               : (prec == PREC_TF32 ? "fp32 with TF32 tensor cores"
                                                    : "fp32 (no TF32)"));
    *be = (ms_backend_t){
        .name = "cuda",
        .ctx = c,
        .device_memory = 1,
        .dtypes = MS_F32,
        .destroy = cuda_destroy,
        .describe = cuda_describe,
        .alloc = cuda_alloc,
        .release = cuda_release,
        .upload = cuda_upload,
        .download = cuda_download,
        .zero = cuda_zero,
        .sync = cuda_sync,
        .plan_create = cuda_plan_create,
        .plan_destroy = cuda_plan_destroy,
        .set_input = cuda_set_input,
        .forward = cuda_forward,
        .loss = cuda_loss,
        .guided_seed = cuda_guided_seed,
        .backward = cuda_backward,
        .get_output = cuda_get_output,
        .adam = cuda_adam,
        .clamp = cuda_clamp,
    };
    *out = be;
    return MS_OK;
done:
    if (be)
        be->ctx = c;
    cuda_destroy(be);
    return st;
}
