/* The one backend interface: a table of functions plus a context, filled with designated
 * initialisers by engine/ref (plain C, float and double), engine/cpu (oneDNN) and
 * engine/cuda (CUDA + cuDNN). Code above the engine sees only engine/net.h.
 *
 * Contract:
 * - Parameters, gradients and Adam moments are flat buffers in the plan's dtype, in
 *   PyTorch's layout (conv (O,I,kh,kw), fc (O,I)), allocated with alloc() (device memory
 *   for a device backend). A backend keeps private copies in its own layouts if it wants.
 * - Activations, workspaces and per-layer state belong to the backend: plan_create()
 *   allocates all of them for a fixed (batch, h, w, train), in layouts the backend
 *   chooses, and nothing is allocated again until plan_destroy().
 * - forward()/backward() are called layer by layer in order (backward in reverse); they may
 *   be asynchronous; the get_* calls and sync() are the only points the host waits.
 * - Dropout masks come from ms_dropout_keep() (engine/rng.h) on the logical NCHW index,
 *   so every backend drops the same units for the same (seed, step, layer).
 * - backward() overwrites the input gradient and ADDS into parameter gradients, and writes
 *   no parameter gradient but its own layer's: once backward() of layer l has been issued,
 *   the gradients of layers l..last are final as soon as the work issued so far has run (the
 *   net's backward hook, engine/net.h, starts the all-reduce of a bucket on that).
 * - A backend may live in a plugin loaded at run time (engine/cuda: libmilscreen-cuda.so,
 *   see engine/plugin.c); it then reaches the engine only through this table and the
 *   error functions of engine/status.h. */
#ifndef MS_BACKEND_H
#define MS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "engine/rng.h"
#include "engine/spec.h"
#include "engine/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { MS_F32 = 1, MS_F64 = 2 } ms_dtype_t;

static inline size_t ms_dtype_size(ms_dtype_t t) { return t == MS_F64 ? 8 : 4; }

typedef struct {
    const ms_spec_t *spec;
    int n, h, w;          /* batch and input size */
    int train;            /* dropout active; keep what backward needs */
    ms_dtype_t dtype;
    ms_layer_t *layers;   /* spec->nlayers, shapes resolved */
    int mh, mw;           /* instance map size (output of the layer before the MIL layer) */
    void *be;             /* the backend's plan state */
} ms_plan_t;

typedef struct {
    uint64_t seed;        /* run seed: dropout stream */
    uint64_t step;        /* training step: the dropout counter */
    uint64_t image0;      /* the batch's first image within the global batch (data-parallel
                             ranks): a dropout layer draws for the logical NCHW index i of its
                             output with counter image0 * C*H*W + i, so R ranks with batches
                             of B/R drop the same units as one rank with batch B */
} ms_pass_t;

/* The dropout key of layer l and the counter of the batch's first unit, for a pass that
 * may be NULL (no dropout stream: seed 0, step 0, image 0). */
static inline uint64_t ms_pass_key(const ms_pass_t *p, int layer)
{
    return ms_dropout_key(p ? p->seed : 0, p ? p->step : 0, layer);
}
static inline uint64_t ms_pass_index0(const ms_pass_t *p, size_t units_per_image)
{
    return p ? p->image0 * (uint64_t)units_per_image : 0;
}

/* backward() flags */
enum {
    MS_BWD_DATA = 1,      /* compute the gradient w.r.t. the layer's input */
    MS_BWD_WEIGHTS = 2,   /* accumulate parameter gradients */
    MS_BWD_GUIDED = 4     /* guided backprop: clamp the input gradient at 0 (paper eq. 4) */
};

/* What get_output() copies to the host, always plain row-major in the plan's dtype. */
typedef enum {
    MS_OUT_MAPS,          /* (N,K,mh,mw) instance probabilities p_ij = sigmoid(z_ij) */
    MS_OUT_LOGITS,        /* (N,K,mh,mw) z_ij */
    MS_OUT_MIL,           /* (N,K) bag probabilities P_i */
    MS_OUT_FC,            /* (N,K) head probabilities (softmax or sigmoid) */
    MS_OUT_INPUT_GRAD     /* (N,C,H,W) gradient w.r.t. the input after backward() of layer 0 */
} ms_output_t;

typedef struct {
    double lr, beta1, beta2, eps;
} ms_adam_t;

typedef struct ms_backend ms_backend_t;

#define MS_BACKEND_NOTE 320

struct ms_backend {
    const char *name;        /* "ref", "cpu", "cuda" */
    void *ctx;
    int device_memory;       /* buffers are not host memory: use upload/download */
    unsigned dtypes;         /* bitmask of supported ms_dtype_t */

    void (*destroy)(ms_backend_t *be);
    /* One line for the start-up table: device, ISA or GPU, threads, precision. */
    void (*describe)(ms_backend_t *be, char *buf, size_t n);

    ms_status_t (*alloc)(ms_backend_t *be, void **p, size_t bytes); /* zero-filled */
    void (*release)(ms_backend_t *be, void *p);
    ms_status_t (*upload)(ms_backend_t *be, void *dst, const void *src, size_t bytes);
    ms_status_t (*download)(ms_backend_t *be, void *dst, const void *src, size_t bytes);
    ms_status_t (*zero)(ms_backend_t *be, void *p, size_t bytes);
    ms_status_t (*sync)(ms_backend_t *be);

    ms_status_t (*plan_create)(ms_backend_t *be, ms_plan_t *plan);
    void (*plan_destroy)(ms_backend_t *be, ms_plan_t *plan);

    /* x: host (N,C,H,W) in the plan's dtype, already normalised. */
    ms_status_t (*set_input)(ms_backend_t *be, ms_plan_t *plan, const void *x);
    ms_status_t (*forward)(ms_backend_t *be, ms_plan_t *plan, int layer, const void *params,
                           const ms_pass_t *pass);
    /* t: host (N,K) targets (one-hot for a softmax head, multi-hot for sigmoid). Writes the
     * mean loss over the batch (eq. 2: BCE of every P_i plus the head's cross-entropy) and
     * seeds the gradients that backward() of the head layers starts from. */
    ms_status_t (*loss)(ms_backend_t *be, ms_plan_t *plan, const void *t, double *loss);
    /* Seeds guided backprop at the MIL layer: dz_ij = P_i * p_ij for class cls, every
     * class when cls < 0; backward() with MS_BWD_GUIDED then runs from the map layer down. */
    ms_status_t (*guided_seed)(ms_backend_t *be, ms_plan_t *plan, int cls);
    ms_status_t (*backward)(ms_backend_t *be, ms_plan_t *plan, int layer, const void *params,
                            void *grads, int flags, const ms_pass_t *pass);
    ms_status_t (*get_output)(ms_backend_t *be, ms_plan_t *plan, ms_output_t which, void *host);

    /* Adam (Kingma & Ba, as torch.optim.Adam) over n elements; step counts from 1. */
    ms_status_t (*adam)(ms_backend_t *be, void *p, const void *g, void *m, void *v, size_t n,
                        const ms_adam_t *hp, long step, ms_dtype_t dtype);
    ms_status_t (*clamp)(ms_backend_t *be, void *p, size_t n, double lo, double hi,
                         ms_dtype_t dtype);

    /* Set by ms_backend_open("auto") when it fell back: why the faster backends are absent
     * ("cuda backend absent: no CUDA device: ..."); "" otherwise. Constructors leave it zero. */
    char note[MS_BACKEND_NOTE];
};

/* Constructors; each returns MS_EBACKEND with a reason when unavailable in this build. */
ms_status_t ms_backend_ref(ms_backend_t **be);
/* precision: "fp32" (default) or "bf16" (bf16 convolutions, fp32 accumulation, fp32 master
 * weights and Adam; needs AVX-512, native with AVX512_BF16). */
ms_status_t ms_backend_cpu(ms_backend_t **be, int threads, const char *precision);
/* device: a GPU of this node, counted modulo the node's GPUs (so a rank passes its local
 * rank); precision: "bf16" (default), "tf32" or "fp32". The backend lives in a plugin loaded
 * on first use (engine/plugin.c); when the plugin, the CUDA libraries or a GPU are missing it
 * fails with MS_EBACKEND and "cuda backend absent: <reason>". */
ms_status_t ms_backend_cuda(ms_backend_t **be, int device, const char *precision);
/* By name: "ref", "cpu" (oneDNN), "cuda", or "auto" (cuda if a GPU is usable, else cpu,
 * else ref; the reason a faster one was skipped goes to be->note). precision: NULL for the
 * backend's default (cuda bf16, cpu fp32), else a name the backend must run; ref computes in
 * its plan's dtype and takes only NULL or "fp32". */
ms_status_t ms_backend_open(ms_backend_t **be, const char *name, int device, int threads,
                            const char *precision);
/* The start-up table's line: describe(), then "; auto: <note>" when auto fell back. */
void ms_backend_describe(ms_backend_t *be, char *buf, size_t n);
void ms_backend_close(ms_backend_t *be);

#ifdef __cplusplus
}
#endif

#endif
