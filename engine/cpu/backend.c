/* The "cpu" backend: oneDNN (v2 C API) convolutions and pooling in blocked layouts kept from
 * layer to layer, bias+ReLU fused into the convolution, every primitive and buffer made once
 * per plan; OpenMP for the element-wise rest. The tiny MIL layer, loss and FC head run the
 * float reference ops (engine/ref) on plain buffers. The host-visible dtype is float.
 * Precisions: "fp32" (the default) and "bf16": convolutions on bf16 activations and bf16
 * copies of the weights with fp32 accumulation (AVX512_BF16's vdpbf16ps), activations and
 * their gradients stored in bf16 from the first bf16 convolution to the instance map, fp32
 * weight and bias gradients, fp32 master weights and fp32 Adam, as the CUDA backend's bf16.
 * The network's input and the layers before the first bf16 convolution stay fp32, as do the
 * MIL layer, the loss and the head. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include "engine/backend.h"
#include "engine/host.h"
#include "engine/ref/ref.h"
#include "engine/rng.h"

/* Checks a oneDNN call inside a function with `st`, a `done:` label, and the layer name. */
#define DN(layer, call)                                                                    \
    do {                                                                                   \
        dnnl_status_t s_ = (call);                                                         \
        if (s_ != dnnl_success)                                                            \
            MS_FAIL(MS_EBACKEND, "oneDNN %.*s failed for layer %s: %s",                    \
                    (int)strcspn(#call, "("), #call, (layer), dnnl_status2str(s_));        \
    } while (0)

typedef struct {
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    int threads;
    int bf16;         /* precision = bf16 */
} cpu_ctx_t;

/* One reorder between two fixed memory objects (NULL primitive: layouts equal, no copy). */
typedef struct {
    dnnl_primitive_t p;
    dnnl_memory_t src, dst, scratch;
    int serial;       /* small: run on one thread (PAR_MIN) */
} reorder_t;

/* A primitive with its user-mode scratchpad memory (the plan's one shared buffer). */
typedef struct {
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t p;
    dnnl_memory_t scratch;
    int serial;       /* small pooling: run on one thread (PAR_MIN) */
} prim_t;

typedef struct {
    dnnl_memory_desc_t md;     /* output layout; padded channels stay zero */
    void *out, *dout;          /* (N, oc, oh, ow) output and its gradient in md's layout
                                * (nChw16c from conv1 on) and data type (f32, or bf16 after
                                * a bf16 convolution); an in-place dropout aliases the
                                * previous layer's buffers */
    int alias;
    dnnl_memory_t m_out, m_dout;
    /* conv */
    prim_t fwd, bwd_data, bwd_w;
    dnnl_memory_t m_wuser, m_buser;  /* flat params, handles set per call: (O,I,k,k), (O) */
    dnnl_memory_t m_src;             /* the convolution's input (m_in or a private copy) */
    dnnl_memory_t m_src_w;           /* the same in the weight gradient's layout */
    dnnl_memory_t m_wf, m_wb;        /* weights in the forward / backward-data layouts */
    dnnl_memory_t m_ddst_d, m_ddst_w, m_dsrc; /* dout / din in the backward layouts */
    dnnl_memory_t m_dw, m_dwplain, m_db;      /* weight gradient, its (O,I,k,k) form, bias */
    reorder_t r_src, r_src_w, r_wf, r_wb, r_ddst_d, r_ddst_w, r_dsrc, r_dw;
    float *dwplain, *db;             /* (O,I,k,k), (O) before adding into grads */
    /* pooling */
    dnnl_memory_t m_ws;              /* max pooling's argmax workspace */
    /* dropout */
    uint8_t *mask;                   /* keep flags of the last forward, in md's layout */
    int box;                         /* avg pooling by avgpool_plain_s1() in the forward */
    int bf16;                        /* conv: runs in bf16 */
    /* a deferred data backward (see cpu_backward) */
    int deferred, dflags, dhas_pass;
    ms_pass_t dpass;
    /* buffers and memory objects owned by this layer (freed at destroy) */
    void *own[12];
    int nown;
    dnnl_memory_t mems[24];
    int nmems;
} cpu_layer_t;

typedef struct {
    cpu_layer_t *L;
    dnnl_memory_desc_t in_md;  /* (N,C,H,W) plain */
    float *x, *dx;             /* (N, C, H, W) input and its gradient, plain */
    dnnl_memory_t m_x, m_dx;
    /* the input as the first layer reads it: x_md (MS_CPU_INPUT_LAYOUT) or plain; xb, dxb
     * alias x, dx when plain */
    dnnl_memory_desc_t x_md;
    float *xb, *dxb;
    dnnl_memory_t m_xb, m_dxb;
    reorder_t r_x, r_dx;
    void *scratch;             /* user-mode scratchpad shared by every primitive */
    size_t scratch_bytes;
    /* MIL: the map layer's output as plain (N, K, mh, mw), and its gradient */
    float *z, *dz;
    dnnl_memory_t m_z, m_dz;
    reorder_t r_z, r_dz;
    int own_z;                 /* z, dz are private buffers (not the map layer's own) */
    float *logP, *log1mP, *glogP, *glog1mP, *prob; /* (N,K) */
    int first_param;           /* the first layer with parameters */
    dnnl_memory_t mems[8];     /* memory objects owned by the plan itself */
    int nmems;
} cpu_plan_t;

static size_t md_bytes(const dnnl_memory_desc_t *md) { return dnnl_memory_desc_get_size(md); }

static size_t out_count(const ms_plan_t *pl, int l)
{
    const ms_layer_t *L = &pl->layers[l];
    return (size_t)pl->n * L->oc * L->oh * L->ow;
}

/* ---- element-wise work on any layout (OpenMP) --------------------------------------- */

/* Physical offsets of a 4-D plain or channel-blocked layout (nchw, nhwc, nChw8c, nChw16c). */
typedef struct {
    dnnl_dim_t sn, sc, sh, sw; /* strides of n, channel block, h, w */
    int blk;                   /* channel block (1: none) */
} layout_t;

static ms_status_t layout_of(const dnnl_memory_desc_t *md, layout_t *lo, const char *layer)
{
    const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
    if (md->format_kind != dnnl_blocked || md->ndims != 4 || b->inner_nblks > 1 ||
        (b->inner_nblks == 1 && b->inner_idxs[0] != 1))
        return MS_ERR(MS_EINTERNAL, "layer %s: unexpected oneDNN layout for element-wise work",
                      layer);
    *lo = (layout_t){b->strides[0], b->strides[1], b->strides[2], b->strides[3],
                     b->inner_nblks ? (int)b->inner_blks[0] : 1};
    return MS_OK;
}

/* Below this many elements a loop (or a pooling or reorder primitive) stays on one thread:
 * it takes well under a millisecond there, and waking the second thread costs more; on a
 * machine shared with other work, a parallel region may even wait a scheduler tick
 * (measured 8 ms per region here) for a thread that is not running. PyTorch's grain size
 * serves the same purpose. */
#define PAR_MIN (1 << 18)

/* Activations and their gradients are f32, or bf16 from the first bf16 convolution on
 * (precision = bf16). A bf16 is the upper half of an f32: widening is a shift, narrowing
 * rounds to nearest even as oneDNN's own conversions (vcvtneps2bf16) do, and keeps a NaN a
 * NaN (so that MS_CPU_POISON's NaNs survive). The element-wise kernels below are written
 * once over el_get/el_put and instantiated for each type with a constant `bf`, so each
 * instance vectorises without a branch per element. */
static inline float bf16_get(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t bf16_put(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t rne = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16, nan = (u >> 16) | 0x40u;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? nan : rne);
}

static inline __attribute__((always_inline)) float el_get(const void *p, size_t i, int bf)
{
    return bf ? bf16_get(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

static inline __attribute__((always_inline)) void el_put(void *p, size_t i, float v, int bf)
{
    if (bf)
        ((uint16_t *)p)[i] = bf16_put(v);
    else
        ((float *)p)[i] = v;
}

static int md_is_bf16(const dnnl_memory_desc_t *md) { return md->data_type == dnnl_bf16; }

static size_t md_elems(const dnnl_memory_desc_t *md)
{
    return md_bytes(md) / (md_is_bf16(md) ? 2 : 4);
}

/* Element i of a buffer of f32 (bf = 0) or bf16 elements, as a pointer. */
static void *el_at(void *p, size_t i, int bf) { return (char *)p + i * (bf ? 2 : 4); }

/* One row of dropout: W pixels x blk channels of one (n, channel block, h), element offsets
 * w * sw + ci from out/in/mask, logical NCHW indices i0 + ci * HW + w. The hash vectorises
 * with 64-bit lanes; AVX-512 (x86-64-v4) has the 64-bit multiply, so it is cloned for it. */
static inline __attribute__((always_inline)) void
dropout_row_impl(void *out, uint8_t *mask, const void *in, int W, long sw, int blk, int nc,
                 uint64_t i0, uint64_t HW, uint64_t key, float rate, float scale, int bf)
{
    if (sw == 1 && blk == 1) { /* plain NCHW: contiguous pixels */
        for (int w = 0; w < W; w++) {
            uint8_t k = (uint8_t)ms_dropout_keep(key, i0 + (uint64_t)w, rate);
            float v = el_get(in, (size_t)w, bf); /* loaded unconditionally: the select then
                                                    vectorises */
            mask[w] = k;
            el_put(out, (size_t)w, k ? v * scale : 0.0f, bf);
        }
        return;
    }
    if (sw == blk && nc == blk && (blk & (blk - 1)) == 0) { /* a full block: one run */
        const int sh = __builtin_ctz((unsigned)blk);
        const long n = (long)W * blk;
        for (long j = 0; j < n; j++) {
            uint64_t w = (uint64_t)(j >> sh), ci = (uint64_t)(j & (blk - 1));
            uint8_t k = (uint8_t)ms_dropout_keep(key, i0 + ci * HW + w, rate);
            float v = el_get(in, (size_t)j, bf);
            mask[j] = k;
            el_put(out, (size_t)j, k ? v * scale : 0.0f, bf);
        }
        return;
    }
    for (int w = 0; w < W; w++) {
        size_t j = (size_t)w * sw;
        for (int ci = 0; ci < nc; ci++) {
            uint8_t k = (uint8_t)ms_dropout_keep(key, i0 + ci * HW + (uint64_t)w, rate);
            float v = el_get(in, j + ci, bf);
            mask[j + ci] = k;
            el_put(out, j + ci, k ? v * scale : 0.0f, bf);
        }
    }
}

__attribute__((target_clones("arch=x86-64-v4", "default"))) static void
dropout_row_f32(void *out, uint8_t *mask, const void *in, int W, long sw, int blk, int nc,
                uint64_t i0, uint64_t HW, uint64_t key, float rate, float scale)
{
    dropout_row_impl(out, mask, in, W, sw, blk, nc, i0, HW, key, rate, scale, 0);
}

__attribute__((target_clones("arch=x86-64-v4", "default"))) static void
dropout_row_bf16(void *out, uint8_t *mask, const void *in, int W, long sw, int blk, int nc,
                 uint64_t i0, uint64_t HW, uint64_t key, float rate, float scale)
{
    dropout_row_impl(out, mask, in, W, sw, blk, nc, i0, HW, key, rate, scale, 1);
}

/* out = in * keep / (1 - rate), keep from ms_dropout_keep() on the LOGICAL NCHW index plus
 * first (the pass's image0 * C*H*W) as in every backend, recorded in mask (one byte per
 * element of the layout) for the backward. out may be in. Padded channels are not touched
 * (they stay zero; their mask stays 0). bf: the elements are bf16 (the product is rounded
 * once, to nearest even). */
static void dropout_apply(void *out, uint8_t *mask, const void *in, const layout_t *lo, int N,
                          int C, int H, int W, uint64_t first, uint64_t key, double rate,
                          int bf)
{
    const float scale = 1.0f / (1.0f - (float)rate);
    const int nb = (C + lo->blk - 1) / lo->blk;
    const uint64_t HW = (uint64_t)H * W;
#pragma omp parallel for collapse(3) schedule(static) if ((size_t)N * C * H * W > PAR_MIN)
    for (int n = 0; n < N; n++)
        for (int cb = 0; cb < nb; cb++)
            for (int h = 0; h < H; h++) {
                size_t base = (size_t)(n * lo->sn + cb * lo->sc + h * lo->sh);
                int c0 = cb * lo->blk, nc = C - c0 < lo->blk ? C - c0 : lo->blk;
                uint64_t i0 = first + (((uint64_t)n * C + c0) * H + h) * W;
                (bf ? dropout_row_bf16 : dropout_row_f32)(
                    el_at(out, base, bf), mask + base, el_at((void *)in, base, bf), W,
                    (long)lo->sw, lo->blk, nc, i0, HW, key, (float)rate, scale);
            }
}

/* The simple element-wise kernels, each over [0, n) of one chunk; el_kernels() below runs
 * one over a whole buffer in chunks, in parallel above PAR_MIN elements. Cloned for AVX-512
 * like dropout_row (the byte mask widens to float lanes there; SSE2 code does not vectorise
 * it). */
typedef enum { EL_RELU, EL_RELU_MASK, EL_CLAMP_NEG, EL_DROPOUT_BACK } el_op_t;

static inline __attribute__((always_inline)) void
el_run_impl(el_op_t op, void *dst, const void *a, const void *b, const uint8_t *mask, size_t n,
            float scale, int bf)
{
    switch (op) {
    case EL_RELU: /* dst = max(a, 0) */
    case EL_CLAMP_NEG:
        for (size_t i = 0; i < n; i++) {
            float v = el_get(a, i, bf);
            el_put(dst, i, v > 0.0f ? v : 0.0f, bf);
        }
        break;
    case EL_RELU_MASK: /* dst = a (a gradient) where b (the forward output) > 0, else 0 */
        for (size_t i = 0; i < n; i++) {
            float g = el_get(a, i, bf);
            el_put(dst, i, el_get(b, i, bf) > 0.0f ? g : 0.0f, bf);
        }
        break;
    case EL_DROPOUT_BACK: /* dst = a * mask * scale */
        for (size_t i = 0; i < n; i++) {
            float g = el_get(a, i, bf);
            el_put(dst, i, mask[i] ? g * scale : 0.0f, bf);
        }
        break;
    }
}

__attribute__((target_clones("arch=x86-64-v4", "default"))) static void
el_run_f32(el_op_t op, void *dst, const void *a, const void *b, const uint8_t *mask, size_t n,
           float scale)
{
    el_run_impl(op, dst, a, b, mask, n, scale, 0);
}

__attribute__((target_clones("arch=x86-64-v4", "default"))) static void
el_run_bf16(el_op_t op, void *dst, const void *a, const void *b, const uint8_t *mask, size_t n,
            float scale)
{
    el_run_impl(op, dst, a, b, mask, n, scale, 1);
}

/* op over n elements of type bf (all buffers alike; dst may be a); mask, b as the op needs. */
static void el_kernels(el_op_t op, void *dst, const void *a, const void *b, const uint8_t *mask,
                       size_t n, float scale, int bf)
{
    const size_t chunk = 1 << 16;
    const long nchunks = (long)((n + chunk - 1) / chunk);
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (long c = 0; c < nchunks; c++) {
        size_t s = (size_t)c * chunk, len = n - s < chunk ? n - s : chunk;
        (bf ? el_run_bf16 : el_run_f32)(op, el_at(dst, s, bf), el_at((void *)a, s, bf),
                                        b ? el_at((void *)b, s, bf) : NULL,
                                        mask ? mask + s : NULL, len, scale);
    }
}

/* din = dout * mask / (1 - rate) over the whole buffer (the forward's mask); din may be dout. */
static void dropout_back(void *din, const void *dout, const uint8_t *mask, size_t n,
                         double rate, int bf)
{
    el_kernels(EL_DROPOUT_BACK, din, dout, NULL, mask, n, 1.0f / (1.0f - (float)rate), bf);
}

/* Average pooling k x k, stride 1, no padding, on plain NCHW planes: every window lies
 * inside the input (out = in - k + 1, ceil or floor), so it is a box filter: column sums of
 * k rows, then k of them along the row. oneDNN has only a slow reference kernel for plain
 * layouts with few channels (the network's first layer on 3 channels). f32 only: the input
 * of the network is f32 in every precision. */
static void avgpool_plain_s1(float *out, const float *in, int NC, int H, int W, int k)
{
    const int OH = H - k + 1, OW = W - k + 1;
    const float inv = 1.0f / (float)(k * k);
#pragma omp parallel
    {
        float *col = malloc(sizeof(float) * (size_t)W); /* per thread, once per call */
#pragma omp for collapse(2) schedule(static)
        for (int p = 0; p < NC; p++)
            for (int oy = 0; oy < OH; oy++) {
                const float *x = in + ((size_t)p * H + oy) * W;
                float *restrict y = out + ((size_t)p * OH + oy) * OW;
                if (!col) /* no memory for the row: the plain sum */
                    for (int ox = 0; ox < OW; ox++) {
                        float s = 0;
                        for (int dy = 0; dy < k; dy++)
                            for (int dx = 0; dx < k; dx++)
                                s += x[(size_t)dy * W + ox + dx];
                        y[ox] = s * inv;
                    }
                else {
                    /* whole rows in the innermost loops, so that they vectorise: each
                     * column's k rows, then k columns, added in that order */
                    float *restrict cs = col;
                    for (int ix = 0; ix < W; ix++)
                        cs[ix] = x[ix];
                    for (int dy = 1; dy < k; dy++)
                        for (int ix = 0; ix < W; ix++)
                            cs[ix] += x[(size_t)dy * W + ix];
                    for (int ox = 0; ox < OW; ox++)
                        y[ox] = cs[ox];
                    for (int dx = 1; dx < k; dx++)
                        for (int ox = 0; ox < OW; ox++)
                            y[ox] += cs[ox + dx];
                    for (int ox = 0; ox < OW; ox++)
                        y[ox] *= inv;
                }
            }
        free(col);
    }
}

static void add_into(float *dst, const float *src, size_t n)
{
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++)
        dst[i] += src[i];
}

/* ---- oneDNN plumbing ------------------------------------------------------------------ */

/* A memory object recorded in list (of capacity cap) so that destroy frees it once. */
static ms_status_t mem_new_in(cpu_ctx_t *c, dnnl_memory_t *list, int *count, int cap,
                              dnnl_memory_t *m, const dnnl_memory_desc_t *md, void *handle,
                              const char *layer)
{
    ms_status_t st = MS_OK;
    if (*count >= cap)
        return MS_ERR(MS_EINTERNAL, "layer %s: too many oneDNN memory objects", layer);
    DN(layer, dnnl_memory_create(m, md, c->eng, handle ? handle : DNNL_MEMORY_NONE));
    list[(*count)++] = *m;
done:
    return st;
}

#define mem_new(c, cl, m, md, handle, layer)                                              \
    mem_new_in((c), (cl)->mems, &(cl)->nmems, (int)(sizeof(cl)->mems / sizeof(cl)->mems[0]), \
               (m), (md), (handle), (layer))

static ms_status_t set_handle(dnnl_memory_t m, const void *p, const char *layer)
{
    ms_status_t st = MS_OK;
    DN(layer, dnnl_memory_set_data_handle(m, (void *)p));
done:
    return st;
}

/* A buffer owned by layer cl, zero-filled. */
static ms_status_t own_buf(cpu_layer_t *cl, void **p, size_t bytes, const char *layer)
{
    if (cl->nown >= (int)(sizeof cl->own / sizeof cl->own[0]))
        return MS_ERR(MS_EINTERNAL, "layer %s: too many private buffers", layer);
    if (!(*p = ms_host_alloc_raw(bytes)))
        return MS_ERR(MS_ENOMEM, "out of memory (%zu bytes) for layer %s", bytes, layer);
    cl->own[cl->nown++] = *p;
    return MS_OK;
}

static ms_status_t attr_new(dnnl_primitive_attr_t *a, int relu, const char *layer)
{
    ms_status_t st = MS_OK;
    dnnl_post_ops_t po = NULL;
    DN(layer, dnnl_primitive_attr_create(a));
    DN(layer, dnnl_primitive_attr_set_scratchpad_mode(*a, dnnl_scratchpad_mode_user));
    if (relu) {
        DN(layer, dnnl_post_ops_create(&po));
        DN(layer, dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f));
        DN(layer, dnnl_primitive_attr_set_post_ops(*a, po));
    }
done:
    if (po)
        dnnl_post_ops_destroy(po);
    return st;
}

static const dnnl_memory_desc_t *pd_md(const prim_t *pr, dnnl_query_t q)
{
    return dnnl_primitive_desc_query_md(pr->pd, q, 0);
}

/* Creates the primitive of pd and records its scratchpad size into the plan's maximum. */
static ms_status_t prim_make(cpu_plan_t *cp, prim_t *pr, const char *layer)
{
    ms_status_t st = MS_OK;
    DN(layer, dnnl_primitive_create(&pr->p, pr->pd));
    const dnnl_memory_desc_t *smd = pd_md(pr, dnnl_query_scratchpad_md);
    size_t b = smd ? md_bytes(smd) : 0;
    if (b > cp->scratch_bytes)
        cp->scratch_bytes = b;
done:
    return st;
}

static ms_status_t prim_scratch(cpu_ctx_t *c, cpu_plan_t *cp, prim_t *pr, const char *layer)
{
    if (!pr->pd)
        return MS_OK;
    const dnnl_memory_desc_t *smd = pd_md(pr, dnnl_query_scratchpad_md);
    ms_status_t st = MS_OK;
    DN(layer, dnnl_memory_create(&pr->scratch, smd, c->eng, cp->scratch));
done:
    return st;
}

static void prim_free(prim_t *pr)
{
    if (pr->p)
        dnnl_primitive_destroy(pr->p);
    if (pr->pd)
        dnnl_primitive_desc_destroy(pr->pd);
    if (pr->scratch)
        dnnl_memory_destroy(pr->scratch);
}

/* Reorder src -> dst memory objects (owned by the caller). */
static ms_status_t reorder_make(cpu_ctx_t *c, cpu_plan_t *cp, reorder_t *r, dnnl_memory_t src,
                                dnnl_memory_t dst, const char *layer)
{
    ms_status_t st = MS_OK;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_attr_t a = NULL;
    const dnnl_memory_desc_t *smd, *dmd;
    DN(layer, dnnl_memory_get_memory_desc(src, &smd));
    DN(layer, dnnl_memory_get_memory_desc(dst, &dmd));
    MS_TRY(attr_new(&a, 0, layer));
    DN(layer, dnnl_reorder_primitive_desc_create(&pd, smd, c->eng, dmd, c->eng, a));
    DN(layer, dnnl_primitive_create(&r->p, pd));
    r->src = src;
    r->dst = dst;
    r->serial = md_bytes(dmd) / sizeof(float) <= PAR_MIN;
    const dnnl_memory_desc_t *scr = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    if (scr && md_bytes(scr) > cp->scratch_bytes)
        cp->scratch_bytes = md_bytes(scr);
    /* the scratchpad memory is bound once the plan's buffer exists */
    if (scr && md_bytes(scr))
        DN(layer, dnnl_memory_create(&r->scratch, scr, c->eng, DNNL_MEMORY_NONE));
done:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (a)
        dnnl_primitive_attr_destroy(a);
    return st;
}

static ms_status_t reorder_run(cpu_ctx_t *c, reorder_t *r, const char *layer)
{
    ms_status_t st = MS_OK;
    if (!r->p)
        return MS_OK;
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_FROM, r->src}, {DNNL_ARG_TO, r->dst},
                               {DNNL_ARG_SCRATCHPAD, r->scratch}};
    /* oneDNN's OpenMP runtime sizes reorders by the caller's thread count */
    int nt = omp_get_max_threads();
    if (r->serial)
        omp_set_num_threads(1);
    dnnl_status_t ds = dnnl_primitive_execute(r->p, c->stream, r->scratch ? 3 : 2, args);
    if (r->serial)
        omp_set_num_threads(nt);
    if (ds != dnnl_success)
        MS_FAIL(MS_EBACKEND, "oneDNN dnnl_primitive_execute failed for layer %s: %s", layer,
                dnnl_status2str(ds));
done:
    return st;
}

static void reorder_free(reorder_t *r)
{
    if (r->p)
        dnnl_primitive_destroy(r->p);
    if (r->scratch)
        dnnl_memory_destroy(r->scratch);
}

/* ---- plan ------------------------------------------------------------------------------ */

static void md_plain4(dnnl_memory_desc_t *md, int n, int c, int h, int w)
{
    dnnl_dims_t d = {n, c, h, w};
    dnnl_memory_desc_init_by_tag(md, 4, d, dnnl_f32, dnnl_nchw);
}

static void cpu_plan_destroy(ms_backend_t *be, ms_plan_t *pl)
{
    cpu_plan_t *cp = pl->be;
    if (!cp)
        return;
    for (int l = 0; cp->L && l < pl->spec->nlayers; l++) {
        cpu_layer_t *cl = &cp->L[l];
        prim_free(&cl->fwd);
        prim_free(&cl->bwd_data);
        prim_free(&cl->bwd_w);
        reorder_t *rs[] = {&cl->r_src, &cl->r_src_w, &cl->r_wf,    &cl->r_wb,
                           &cl->r_ddst_d, &cl->r_ddst_w, &cl->r_dsrc, &cl->r_dw};
        for (size_t i = 0; i < sizeof rs / sizeof rs[0]; i++)
            reorder_free(rs[i]);
        for (int i = 0; i < cl->nmems; i++)
            dnnl_memory_destroy(cl->mems[i]);
        if (!cl->alias) {
            free(cl->out);
            free(cl->dout);
        }
        for (int i = 0; i < cl->nown; i++)
            free(cl->own[i]);
    }
    reorder_free(&cp->r_z);
    reorder_free(&cp->r_dz);
    if (cp->own_z) {
        free(cp->z);
        free(cp->dz);
    }
    for (int i = 0; i < cp->nmems; i++)
        dnnl_memory_destroy(cp->mems[i]);
    free(cp->L);
    reorder_free(&cp->r_x);
    reorder_free(&cp->r_dx);
    if (cp->xb != cp->x)
        free(cp->xb);
    if (cp->dxb != cp->dx)
        free(cp->dxb);
    free(cp->x);
    free(cp->dx);
    free(cp->scratch);
    free(cp->logP);
    free(cp->log1mP);
    free(cp->glogP);
    free(cp->glog1mP);
    free(cp->prob);
    free(cp);
    pl->be = NULL;
}

/* Builds a convolution layer: forward (bias+ReLU fused), backward data and weights, their
 * layouts and the reorders between the flat PyTorch-layout parameters and those layouts. */
/* The memory a primitive wants in layout want: have itself when its layout have_md agrees,
 * else a private buffer of the layer in layout want with a reorder from have into it (or, for
 * an output, from it into have). */
static ms_status_t in_layout(cpu_ctx_t *c, cpu_plan_t *cp, cpu_layer_t *cl,
                             const dnnl_memory_desc_t *want, const dnnl_memory_desc_t *have_md,
                             dnnl_memory_t have, int output, dnnl_memory_t *mem, reorder_t *r,
                             const char *nm)
{
    ms_status_t st = MS_OK;
    void *b;
    if (dnnl_memory_desc_equal(want, have_md)) {
        *mem = have;
        return MS_OK;
    }
    MS_TRY(own_buf(cl, &b, md_bytes(want), nm));
    MS_TRY(mem_new(c, cl, mem, want, b, nm));
    MS_TRY(reorder_make(c, cp, r, output ? *mem : have, output ? have : *mem, nm));
done:
    return st;
}

static ms_status_t plan_conv(cpu_ctx_t *c, cpu_plan_t *cp, ms_plan_t *pl, int l,
                             const dnnl_memory_desc_t *in_md, dnnl_memory_t m_in,
                             dnnl_memory_t m_din)
{
    ms_status_t st = MS_OK;
    const ms_layer_t *L = &pl->layers[l];
    const ms_layer_spec_t *s = L->spec;
    const char *nm = s->name;
    cpu_layer_t *cl = &cp->L[l];
    dnnl_primitive_attr_t a_fwd = NULL, a_bwd = NULL;
    dnnl_memory_desc_t src_any, w_any, dw_any, b_md, dst_any, w_user;
    dnnl_dims_t ds = {pl->n, L->c, L->h, L->w}, dw = {L->oc, L->c, s->size, s->size},
                db = {L->oc}, dd = {pl->n, L->oc, L->oh, L->ow};
    dnnl_dims_t strides = {s->stride, s->stride}, pad = {s->pad, s->pad};
    /* bf16: input, weights, output and both data gradients in bf16; bias, the weight and
     * bias gradients in f32 (oneDNN accumulates them in f32 and keeps them so) */
    cl->bf16 = c->bf16;
    const dnnl_data_type_t dt = cl->bf16 ? dnnl_bf16 : dnnl_f32;
    DN(nm, dnnl_memory_desc_init_by_tag(&src_any, 4, ds, dt, dnnl_format_tag_any));
    DN(nm, dnnl_memory_desc_init_by_tag(&w_any, 4, dw, dt, dnnl_format_tag_any));
    DN(nm, dnnl_memory_desc_init_by_tag(&dw_any, 4, dw, dnnl_f32, dnnl_format_tag_any));
    DN(nm, dnnl_memory_desc_init_by_tag(&w_user, 4, dw, dnnl_f32, dnnl_oihw));
    DN(nm, dnnl_memory_desc_init_by_tag(&b_md, 1, db, dnnl_f32, dnnl_x));
    DN(nm, dnnl_memory_desc_init_by_tag(&dst_any, 4, dd, dt, dnnl_format_tag_any));
    MS_TRY(attr_new(&a_fwd, s->relu, nm));
    MS_TRY(attr_new(&a_bwd, 0, nm));

    /* forward_training: the backward primitives take it as their hint */
    dnnl_convolution_desc_t fd, bdd, bwd;
    /* First the input exactly in the previous layer's layout (no reorder between layers);
     * if oneDNN has no JIT kernel for it, or it is of the other data type (the f32 layers
     * before the first bf16 convolution), whatever layout it prefers. */
    const char *impl = NULL;
    if (in_md->data_type == dt &&
        dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, dnnl_convolution_direct,
                                           in_md, &w_any, &b_md, &dst_any, strides, pad,
                                           pad) == dnnl_success &&
        dnnl_primitive_desc_create(&cl->fwd.pd, &fd, a_fwd, c->eng, NULL) == dnnl_success &&
        (dnnl_primitive_desc_query(cl->fwd.pd, dnnl_query_impl_info_str, 0, &impl) !=
             dnnl_success ||
         !impl || !strstr(impl, "jit"))) {
        dnnl_primitive_desc_destroy(cl->fwd.pd);
        cl->fwd.pd = NULL;
    }
    if (!cl->fwd.pd) {
        DN(nm, dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training,
                                                  dnnl_convolution_direct, &src_any, &w_any,
                                                  &b_md, &dst_any, strides, pad, pad));
        DN(nm, dnnl_primitive_desc_create(&cl->fwd.pd, &fd, a_fwd, c->eng, NULL));
    }
    MS_TRY(prim_make(cp, &cl->fwd, nm));
    DN(nm, dnnl_convolution_backward_data_desc_init(&bdd, dnnl_convolution_direct, &src_any,
                                                    &w_any, &dst_any, strides, pad, pad));
    DN(nm, dnnl_primitive_desc_create(&cl->bwd_data.pd, &bdd, a_bwd, c->eng, cl->fwd.pd));
    MS_TRY(prim_make(cp, &cl->bwd_data, nm));
    DN(nm, dnnl_convolution_backward_weights_desc_init(&bwd, dnnl_convolution_direct, &src_any,
                                                       &dw_any, &b_md, &dst_any, strides, pad,
                                                       pad));
    DN(nm, dnnl_primitive_desc_create(&cl->bwd_w.pd, &bwd, a_bwd, c->eng, cl->fwd.pd));
    MS_TRY(prim_make(cp, &cl->bwd_w, nm));

    /* the output in the forward's layout */
    cl->md = *pd_md(&cl->fwd, dnnl_query_dst_md);
    size_t ob = md_bytes(&cl->md);
    if (!(cl->out = ms_host_alloc_raw(ob)) || !(cl->dout = ms_host_alloc_raw(ob)))
        MS_FAIL(MS_ENOMEM, "out of memory (%zu bytes) for layer %s", ob, nm);
    MS_TRY(mem_new(c, cl, &cl->m_out, &cl->md, cl->out, nm));
    MS_TRY(mem_new(c, cl, &cl->m_dout, &cl->md, cl->dout, nm));

    /* input: the previous layer's layout, or a private copy in the one the forward wants */
    const dnnl_memory_desc_t *src_md = pd_md(&cl->fwd, dnnl_query_src_md);
    MS_TRY(in_layout(c, cp, cl, src_md, in_md, m_in, 0, &cl->m_src, &cl->r_src, nm));
    /* the weight gradient may want the input in yet another layout (small channel counts) */
    const dnnl_memory_desc_t *srcw_md = pd_md(&cl->bwd_w, dnnl_query_src_md);
    if (dnnl_memory_desc_equal(srcw_md, src_md)) {
        cl->m_src_w = cl->m_src;
    } else {
        void *b;
        MS_TRY(own_buf(cl, &b, md_bytes(srcw_md), nm));
        MS_TRY(mem_new(c, cl, &cl->m_src_w, srcw_md, b, nm));
        MS_TRY(reorder_make(c, cp, &cl->r_src_w, m_in, cl->m_src_w, nm));
    }

    /* weights: user (O,I,k,k) f32 -> forward layout, -> backward-data layout (bf16: the
     * reorders round to nearest even) */
    void *b;
    MS_TRY(mem_new(c, cl, &cl->m_wuser, &w_user, NULL, nm));
    MS_TRY(mem_new(c, cl, &cl->m_buser, &b_md, NULL, nm));
    const dnnl_memory_desc_t *wf_md = pd_md(&cl->fwd, dnnl_query_weights_md);
    MS_TRY(own_buf(cl, &b, md_bytes(wf_md), nm));
    MS_TRY(mem_new(c, cl, &cl->m_wf, wf_md, b, nm));
    MS_TRY(reorder_make(c, cp, &cl->r_wf, cl->m_wuser, cl->m_wf, nm));
    const dnnl_memory_desc_t *wb_md = pd_md(&cl->bwd_data, dnnl_query_weights_md);
    if (dnnl_memory_desc_equal(wb_md, wf_md)) {
        cl->m_wb = cl->m_wf;
    } else {
        MS_TRY(own_buf(cl, &b, md_bytes(wb_md), nm));
        MS_TRY(mem_new(c, cl, &cl->m_wb, wb_md, b, nm));
        MS_TRY(reorder_make(c, cp, &cl->r_wb, cl->m_wuser, cl->m_wb, nm));
    }

    /* output gradient in the layouts the two backward primitives want */
    MS_TRY(in_layout(c, cp, cl, pd_md(&cl->bwd_data, dnnl_query_diff_dst_md), &cl->md,
                     cl->m_dout, 0, &cl->m_ddst_d, &cl->r_ddst_d, nm));
    MS_TRY(in_layout(c, cp, cl, pd_md(&cl->bwd_w, dnnl_query_diff_dst_md), &cl->md, cl->m_dout,
                     0, &cl->m_ddst_w, &cl->r_ddst_w, nm));

    /* input gradient: straight into the previous layer's gradient when layouts agree */
    MS_TRY(in_layout(c, cp, cl, pd_md(&cl->bwd_data, dnnl_query_diff_src_md), in_md, m_din, 1,
                     &cl->m_dsrc, &cl->r_dsrc, nm));

    /* weight and bias gradients (f32), then reordered to (O,I,k,k) and added into grads */
    const dnnl_memory_desc_t *gw_md = pd_md(&cl->bwd_w, dnnl_query_diff_weights_md);
    MS_TRY(own_buf(cl, &b, md_bytes(gw_md), nm));
    MS_TRY(mem_new(c, cl, &cl->m_dw, gw_md, b, nm));
    MS_TRY(own_buf(cl, (void **)&cl->dwplain, L->nw * sizeof(float), nm));
    MS_TRY(mem_new(c, cl, &cl->m_dwplain, &w_user, cl->dwplain, nm));
    MS_TRY(reorder_make(c, cp, &cl->r_dw, cl->m_dw, cl->m_dwplain, nm));
    MS_TRY(own_buf(cl, (void **)&cl->db, L->nb * sizeof(float), nm));
    MS_TRY(mem_new(c, cl, &cl->m_db, &b_md, cl->db, nm));
done:
    if (a_fwd)
        dnnl_primitive_attr_destroy(a_fwd);
    if (a_bwd)
        dnnl_primitive_attr_destroy(a_bwd);
    return st;
}

/* Max or average pooling in the input's layout; ceil rounding by extra right/bottom padding
 * so the output size is ms_window_out()'s; average excludes the padding as the reference. */
static ms_status_t plan_pool(cpu_ctx_t *c, cpu_plan_t *cp, ms_plan_t *pl, int l,
                             const dnnl_memory_desc_t *in_md)
{
    ms_status_t st = MS_OK;
    const ms_layer_t *L = &pl->layers[l];
    const ms_layer_spec_t *s = L->spec;
    const char *nm = s->name;
    cpu_layer_t *cl = &cp->L[l];
    dnnl_primitive_attr_t a = NULL;
    int is_max = s->kind == MS_LAYER_MAXPOOL;
    dnnl_alg_kind_t alg = is_max ? dnnl_pooling_max : dnnl_pooling_avg_exclude_padding;
    dnnl_memory_desc_t dst_any;
    dnnl_dims_t dd = {pl->n, L->oc, L->oh, L->ow};
    dnnl_dims_t strides = {s->stride, s->stride}, kernel = {s->size, s->size}, dil = {0, 0};
    dnnl_dims_t pad_l = {s->pad, s->pad}, pad_r;
    int pr_h = (L->oh - 1) * s->stride + s->size - L->h - s->pad;
    int pr_w = (L->ow - 1) * s->stride + s->size - L->w - s->pad;
    pad_r[0] = pr_h > 0 ? pr_h : 0;
    pad_r[1] = pr_w > 0 ? pr_w : 0;
    /* in the input's data type: bf16 after a bf16 convolution */
    DN(nm, dnnl_memory_desc_init_by_tag(&dst_any, 4, dd, in_md->data_type,
                                        dnnl_format_tag_any));
    MS_TRY(attr_new(&a, 0, nm));
    dnnl_pooling_v2_desc_t fd, bd;
    DN(nm, dnnl_pooling_v2_forward_desc_init(&fd, dnnl_forward_training, alg, in_md, &dst_any,
                                             strides, kernel, dil, pad_l, pad_r));
    DN(nm, dnnl_primitive_desc_create(&cl->fwd.pd, &fd, a, c->eng, NULL));
    MS_TRY(prim_make(cp, &cl->fwd, nm));
    cl->md = *pd_md(&cl->fwd, dnnl_query_dst_md);
    /* pooling threads over its output (forward) or input (backward) */
    cl->fwd.serial = md_elems(&cl->md) <= PAR_MIN;
    cl->bwd_data.serial = md_elems(in_md) <= PAR_MIN;
    DN(nm, dnnl_pooling_v2_backward_desc_init(&bd, alg, in_md, &cl->md, strides, kernel, dil,
                                              pad_l, pad_r));
    DN(nm, dnnl_primitive_desc_create(&cl->bwd_data.pd, &bd, a, c->eng, cl->fwd.pd));
    MS_TRY(prim_make(cp, &cl->bwd_data, nm));
    size_t ob = md_bytes(&cl->md);
    if (!(cl->out = ms_host_alloc_raw(ob)) || !(cl->dout = ms_host_alloc_raw(ob)))
        MS_FAIL(MS_ENOMEM, "out of memory (%zu bytes) for layer %s", ob, nm);
    MS_TRY(mem_new(c, cl, &cl->m_out, &cl->md, cl->out, nm));
    MS_TRY(mem_new(c, cl, &cl->m_dout, &cl->md, cl->dout, nm));
    dnnl_memory_desc_t pin, pout;
    md_plain4(&pin, pl->n, L->c, L->h, L->w);
    md_plain4(&pout, pl->n, L->oc, L->oh, L->ow);
    cl->box = !is_max && s->stride == 1 && s->pad == 0 && L->oh == L->h - s->size + 1 &&
              L->ow == L->w - s->size + 1 && dnnl_memory_desc_equal(in_md, &pin) &&
              dnnl_memory_desc_equal(&cl->md, &pout);
    const dnnl_memory_desc_t *ws = pd_md(&cl->fwd, dnnl_query_workspace_md);
    if (ws && md_bytes(ws)) {
        void *b;
        MS_TRY(own_buf(cl, &b, md_bytes(ws), nm));
        MS_TRY(mem_new(c, cl, &cl->m_ws, ws, b, nm));
    }
done:
    if (a)
        dnnl_primitive_attr_destroy(a);
    return st;
}

/* All bits set: a NaN both as f32 and as bf16. */
static void poison(void *p, size_t bytes)
{
    if (p)
        memset(p, 0xff, bytes);
}

/* Tests set MS_CPU_POISON: every buffer of the plan (activations, gradients, private copies,
 * padded channels, the scratchpad) starts as NaN instead of zero, so an element that no
 * step writes shows up in the outputs. */
static void poison_plan(ms_plan_t *pl)
{
    cpu_plan_t *cp = pl->be;
    size_t nk = (size_t)pl->n * pl->spec->classes * sizeof(float);
    for (int l = 0; l < pl->spec->nlayers; l++) {
        cpu_layer_t *cl = &cp->L[l];
        if (!cl->alias) {
            poison(cl->out, md_bytes(&cl->md));
            poison(cl->dout, md_bytes(&cl->md));
        }
        for (int i = 0; i < cl->nmems; i++) {
            void *h = NULL;
            const dnnl_memory_desc_t *md;
            if (dnnl_memory_get_data_handle(cl->mems[i], &h) == dnnl_success && h &&
                dnnl_memory_get_memory_desc(cl->mems[i], &md) == dnnl_success)
                poison(h, md_bytes(md));
        }
    }
    poison(cp->x, md_bytes(&cp->in_md));
    poison(cp->dx, md_bytes(&cp->in_md));
    poison(cp->xb, md_bytes(&cp->x_md));
    poison(cp->dxb, md_bytes(&cp->x_md));
    if (cp->own_z) {
        size_t zb = out_count(pl, pl->spec->mil - 1) * sizeof(float);
        poison(cp->z, zb);
        poison(cp->dz, zb);
    }
    poison(cp->logP, nk);
    poison(cp->log1mP, nk);
    poison(cp->glogP, nk);
    poison(cp->glog1mP, nk);
    poison(cp->prob, nk);
    poison(cp->scratch, cp->scratch_bytes);
}

static ms_status_t cpu_plan_create(ms_backend_t *be, ms_plan_t *pl)
{
    ms_status_t st = MS_OK;
    cpu_ctx_t *c = be->ctx;
    const ms_spec_t *sp = pl->spec;
    int nl = sp->nlayers, mil = sp->mil;
    if (pl->dtype != MS_F32)
        return MS_ERR(MS_EARG, "the oneDNN backend runs in float only (use --backend ref for "
                               "double)");
    cpu_plan_t *cp = calloc(1, sizeof *cp);
    if (!cp)
        return MS_ERR(MS_ENOMEM, "out of memory planning the network");
    pl->be = cp;
    MS_ALLOC(cp->L, nl, "layer table");
    md_plain4(&cp->in_md, pl->n, sp->channels, pl->h, pl->w);
    size_t xb = md_bytes(&cp->in_md);
    if (!(cp->x = ms_host_alloc_raw(xb)) || !(cp->dx = ms_host_alloc_raw(xb)))
        MS_FAIL(MS_ENOMEM, "out of memory for the input of %dx%dx%dx%d", pl->n, sp->channels,
                pl->h, pl->w);
    MS_TRY(mem_new(c, cp, &cp->m_x, &cp->in_md, cp->x, "input"));
    MS_TRY(mem_new(c, cp, &cp->m_dx, &cp->in_md, cp->dx, "input"));
    cp->x_md = cp->in_md;
    const char *lay = getenv("MS_CPU_INPUT_LAYOUT");
    if (lay && strcmp(lay, "nchw")) {
        dnnl_dims_t d = {pl->n, sp->channels, pl->h, pl->w};
        dnnl_format_tag_t tag = !strcmp(lay, "nhwc")      ? dnnl_nhwc
                                : !strcmp(lay, "nChw8c")  ? dnnl_nChw8c
                                : !strcmp(lay, "nChw16c") ? dnnl_nChw16c
                                                          : dnnl_format_tag_undef;
        if (tag == dnnl_format_tag_undef)
            MS_FAIL(MS_EARG, "MS_CPU_INPUT_LAYOUT=%s: one of nchw, nhwc, nChw8c, nChw16c", lay);
        DN("input", dnnl_memory_desc_init_by_tag(&cp->x_md, 4, d, dnnl_f32, tag));
    }
    if (dnnl_memory_desc_equal(&cp->x_md, &cp->in_md)) {
        cp->xb = cp->x, cp->dxb = cp->dx, cp->m_xb = cp->m_x, cp->m_dxb = cp->m_dx;
    } else {
        size_t bb = md_bytes(&cp->x_md);
        if (!(cp->xb = ms_host_alloc_raw(bb)) || !(cp->dxb = ms_host_alloc_raw(bb)))
            MS_FAIL(MS_ENOMEM, "out of memory for the input");
        MS_TRY(mem_new(c, cp, &cp->m_xb, &cp->x_md, cp->xb, "input"));
        MS_TRY(mem_new(c, cp, &cp->m_dxb, &cp->x_md, cp->dxb, "input"));
        MS_TRY(reorder_make(c, cp, &cp->r_x, cp->m_x, cp->m_xb, "input"));
        MS_TRY(reorder_make(c, cp, &cp->r_dx, cp->m_dxb, cp->m_dx, "input"));
    }

    for (int l = 0; l < nl; l++) {
        const ms_layer_t *L = &pl->layers[l];
        const char *nm = L->spec->name;
        cpu_layer_t *cl = &cp->L[l];
        const dnnl_memory_desc_t *in_md = l ? &cp->L[l - 1].md : &cp->x_md;
        dnnl_memory_t m_in = l ? cp->L[l - 1].m_out : cp->m_xb;
        dnnl_memory_t m_din = l ? cp->L[l - 1].m_dout : cp->m_dxb;
        switch (L->spec->kind) {
        case MS_LAYER_CONV:
            MS_TRY(plan_conv(c, cp, pl, l, in_md, m_in, m_din));
            break;
        case MS_LAYER_MAXPOOL:
        case MS_LAYER_AVGPOOL:
            MS_TRY(plan_pool(c, cp, pl, l, in_md));
            break;
        case MS_LAYER_DROPOUT:
            if (l > 0) {
                /* in place: what follows reads the dropped values, what precedes needs only
                 * its workspace or a ReLU sign that a positive scale keeps */
                cl->md = *in_md;
                cl->alias = 1;
                cl->out = cp->L[l - 1].out;
                cl->dout = cp->L[l - 1].dout;
                MS_TRY(mem_new(c, cl, &cl->m_out, &cl->md, cl->out, nm));
                MS_TRY(mem_new(c, cl, &cl->m_dout, &cl->md, cl->dout, nm));
                MS_TRY(own_buf(cl, (void **)&cl->mask, md_elems(&cl->md), nm));
                break;
            }
            /* the first layer must not overwrite the input: its own buffers */
            __attribute__((fallthrough));
        case MS_LAYER_RELU: {
            cl->md = *in_md;
            size_t ob = md_bytes(&cl->md);
            if (!(cl->out = ms_host_alloc_raw(ob)) || !(cl->dout = ms_host_alloc_raw(ob)))
                MS_FAIL(MS_ENOMEM, "out of memory (%zu bytes) for layer %s", ob, nm);
            MS_TRY(mem_new(c, cl, &cl->m_out, &cl->md, cl->out, nm));
            MS_TRY(mem_new(c, cl, &cl->m_dout, &cl->md, cl->dout, nm));
            if (L->spec->kind == MS_LAYER_DROPOUT)
                MS_TRY(own_buf(cl, (void **)&cl->mask, md_elems(&cl->md), nm));
            break;
        }
        case MS_LAYER_MIL:
        case MS_LAYER_FC: {
            md_plain4(&cl->md, pl->n, L->oc, 1, 1);
            size_t ob = md_bytes(&cl->md);
            if (!(cl->out = ms_host_alloc_raw(ob)) || !(cl->dout = ms_host_alloc_raw(ob)))
                MS_FAIL(MS_ENOMEM, "out of memory (%zu bytes) for layer %s", ob, nm);
            MS_TRY(mem_new(c, cl, &cl->m_out, &cl->md, cl->out, nm));
            MS_TRY(mem_new(c, cl, &cl->m_dout, &cl->md, cl->dout, nm));
            break;
        }
        }
        if (L->spec->kind != MS_LAYER_MIL && L->spec->kind != MS_LAYER_FC && l > mil)
            MS_FAIL(MS_ECONFIG, "layer %s: the oneDNN backend expects only the fc head after "
                                "the MIL layer", nm);
    }

    cp->first_param = 0;
    while (cp->first_param < nl - 1 && !pl->layers[cp->first_param].nw &&
           !pl->layers[cp->first_param].nb)
        cp->first_param++;

    /* the instance map as plain (N,K,mh,mw) for the MIL layer, the loss and get_output */
    if (mil < 1)
        MS_FAIL(MS_ECONFIG, "the MIL layer must follow a layer that makes the instance map");
    {
        cpu_layer_t *zl = &cp->L[mil - 1];
        dnnl_memory_desc_t zmd;
        md_plain4(&zmd, pl->n, pl->layers[mil - 1].oc, pl->mh, pl->mw);
        if (dnnl_memory_desc_equal(&zmd, &zl->md)) {
            cp->z = zl->out;
            cp->dz = zl->dout;
        } else {
            cp->own_z = 1;
            size_t zb = md_bytes(&zmd);
            if (!(cp->z = ms_host_alloc_raw(zb)) || !(cp->dz = ms_host_alloc_raw(zb)))
                MS_FAIL(MS_ENOMEM, "out of memory for the instance maps");
            MS_TRY(mem_new(c, cp, &cp->m_z, &zmd, cp->z, "mil"));
            MS_TRY(mem_new(c, cp, &cp->m_dz, &zmd, cp->dz, "mil"));
            MS_TRY(reorder_make(c, cp, &cp->r_z, zl->m_out, cp->m_z, "mil"));
            MS_TRY(reorder_make(c, cp, &cp->r_dz, cp->m_dz, zl->m_dout, "mil"));
        }
    }
    size_t nk = (size_t)pl->n * sp->classes * sizeof(float);
    if (!(cp->logP = ms_host_alloc_raw(nk)) || !(cp->log1mP = ms_host_alloc_raw(nk)) ||
        !(cp->glogP = ms_host_alloc_raw(nk)) || !(cp->glog1mP = ms_host_alloc_raw(nk)) ||
        !(cp->prob = ms_host_alloc_raw(nk)))
        MS_FAIL(MS_ENOMEM, "out of memory for the MIL outputs");

    /* one scratchpad for every primitive, now that the largest is known */
    if (!(cp->scratch = ms_host_alloc_raw(cp->scratch_bytes)))
        MS_FAIL(MS_ENOMEM, "out of memory for the oneDNN scratchpad (%zu bytes)",
                cp->scratch_bytes);
    for (int l = 0; l < nl; l++) {
        cpu_layer_t *cl = &cp->L[l];
        const char *nm = pl->layers[l].spec->name;
        MS_TRY(prim_scratch(c, cp, &cl->fwd, nm));
        MS_TRY(prim_scratch(c, cp, &cl->bwd_data, nm));
        MS_TRY(prim_scratch(c, cp, &cl->bwd_w, nm));
        reorder_t *rs[] = {&cl->r_src, &cl->r_src_w, &cl->r_wf,    &cl->r_wb,
                           &cl->r_ddst_d, &cl->r_ddst_w, &cl->r_dsrc, &cl->r_dw};
        for (size_t i = 0; i < sizeof rs / sizeof rs[0]; i++)
            if (rs[i]->scratch)
                MS_TRY(set_handle(rs[i]->scratch, cp->scratch, nm));
    }
    if (cp->r_z.scratch)
        MS_TRY(set_handle(cp->r_z.scratch, cp->scratch, "mil"));
    if (cp->r_dz.scratch)
        MS_TRY(set_handle(cp->r_dz.scratch, cp->scratch, "mil"));
    if (getenv("MS_CPU_POISON"))
        poison_plan(pl);
    return MS_OK;
done:
    cpu_plan_destroy(be, pl);
    return st;
}

/* ---- running --------------------------------------------------------------------------- */

static ms_status_t exec(cpu_ctx_t *c, prim_t *pr, dnnl_exec_arg_t *args, int nargs,
                        const char *layer)
{
    ms_status_t st = MS_OK;
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, pr->scratch};
    int nt = omp_get_max_threads();
    if (pr->serial)
        omp_set_num_threads(1);
    dnnl_status_t ds = dnnl_primitive_execute(pr->p, c->stream, nargs, args);
    if (pr->serial)
        omp_set_num_threads(nt);
    if (ds != dnnl_success)
        MS_FAIL(MS_EBACKEND, "oneDNN dnnl_primitive_execute failed for layer %s: %s", layer,
                dnnl_status2str(ds));
done:
    return st;
}

static ms_status_t cpu_set_input(ms_backend_t *be, ms_plan_t *pl, const void *x)
{
    cpu_plan_t *cp = pl->be;
    memcpy(cp->x, x, (size_t)pl->n * pl->spec->channels * pl->h * pl->w * sizeof(float));
    return reorder_run(be->ctx, &cp->r_x, "input");
}

static void mil_params(const ms_layer_spec_t *s, ms_mil_params_t *m)
{
    *m = (ms_mil_params_t){.kind = s->pool, .a = s->a, .r = s->r};
}

/* The MIL layer is the reference's, one bag (image n, class k) per call so that bags run in
 * parallel: a few transcendental functions per instance (3 ms for 12 maps of 72x60 on one
 * thread). Each bag's arithmetic is the reference's own, so the results are the same. */
#define MIL_PAR_MIN (1 << 14) /* instances */

/* P (N,K) and cp->logP, cp->log1mP from the maps cp->z (N,K,J); b (K) or NULL */
static void mil_forward(cpu_plan_t *cp, float *P, const float *b, const ms_mil_params_t *m,
                        int N, int K, int J)
{
#pragma omp parallel for schedule(dynamic) if ((size_t)N * K * J > MIL_PAR_MIN)
    for (int i = 0; i < N * K; i++)
        ms_ref_mil_forward_f32(P + i, cp->logP + i, cp->log1mP + i, cp->z + (size_t)i * J,
                               b ? b + i % K : NULL, m, 1, 1, J);
}

/* cp->dz (N,K,J) from the gradients w.r.t. P (gP), cp->glogP and cp->glog1mP; adds into
 * db (K) when not NULL: one class per thread, its images in order, so db's sums are the
 * reference's */
static void mil_backward(cpu_plan_t *cp, float *db, const float *gP, const float *b,
                         const ms_mil_params_t *m, int N, int K, int J)
{
#pragma omp parallel for schedule(dynamic) if ((size_t)N * K * J > MIL_PAR_MIN)
    for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++) {
            size_t i = (size_t)n * K + k;
            ms_ref_mil_backward_f32(cp->dz + i * J, db ? db + k : NULL, gP + i, cp->glogP + i,
                                    cp->glog1mP + i, cp->z + i * J, b ? b + k : NULL, m, 1, 1,
                                    J);
        }
}

/* A new pass drops what an unfinished backward deferred. */
static void drop_deferred(ms_plan_t *pl)
{
    cpu_plan_t *cp = pl->be;
    for (int k = 0; k < pl->spec->nlayers; k++)
        cp->L[k].deferred = 0;
}

static ms_status_t cpu_forward(ms_backend_t *be, ms_plan_t *pl, int l, const void *params,
                               const ms_pass_t *pass)
{
    ms_status_t st = MS_OK;
    cpu_ctx_t *c = be->ctx;
    cpu_plan_t *cp = pl->be;
    cpu_layer_t *cl = &cp->L[l];
    const ms_layer_t *L = &pl->layers[l];
    const ms_layer_spec_t *s = L->spec;
    const char *nm = s->name;
    const float *P = params;
    const void *in = l ? cp->L[l - 1].out : cp->xb; /* in the previous layer's md */
    dnnl_memory_t m_in = l ? cp->L[l - 1].m_out : cp->m_xb;
    if (l == 0)
        drop_deferred(pl);
    switch (s->kind) {
    case MS_LAYER_CONV: {
        MS_TRY(set_handle(cl->m_wuser, P + L->w_off, nm));
        MS_TRY(set_handle(cl->m_buser, P + L->b_off, nm));
        MS_TRY(reorder_run(c, &cl->r_wf, nm));
        MS_TRY(reorder_run(c, &cl->r_src, nm));
        dnnl_exec_arg_t a[5] = {{DNNL_ARG_SRC, cl->m_src}, {DNNL_ARG_WEIGHTS, cl->m_wf},
                                {DNNL_ARG_BIAS, cl->m_buser}, {DNNL_ARG_DST, cl->m_out}};
        MS_TRY(exec(c, &cl->fwd, a, 4, nm));
        break;
    }
    case MS_LAYER_MAXPOOL:
    case MS_LAYER_AVGPOOL: {
        if (cl->box) {
            avgpool_plain_s1(cl->out, in, pl->n * L->c, L->h, L->w, s->size);
            break;
        }
        dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, m_in}, {DNNL_ARG_DST, cl->m_out},
                                {DNNL_ARG_WORKSPACE, cl->m_ws}};
        MS_TRY(exec(c, &cl->fwd, a, cl->m_ws ? 3 : 2, nm));
        break;
    }
    case MS_LAYER_RELU:
        el_kernels(EL_RELU, cl->out, in, NULL, NULL, md_elems(&cl->md), 0, md_is_bf16(&cl->md));
        break;
    case MS_LAYER_DROPOUT:
        if (pl->train && s->rate > 0) {
            layout_t lo;
            MS_TRY(layout_of(&cl->md, &lo, nm));
            dropout_apply(cl->out, cl->mask, in, &lo, pl->n, L->c, L->h, L->w,
                          ms_pass_index0(pass, (size_t)L->c * L->h * L->w), ms_pass_key(pass, l),
                          s->rate, md_is_bf16(&cl->md));
        } else if (!cl->alias) {
            memcpy(cl->out, in, md_bytes(&cl->md));
        }
        break;
    case MS_LAYER_MIL: {
        ms_mil_params_t m;
        mil_params(s, &m);
        MS_TRY(reorder_run(c, &cp->r_z, nm));
        mil_forward(cp, cl->out, L->nb ? P + L->b_off : NULL, &m, pl->n, L->c, L->h * L->w);
        break;
    }
    case MS_LAYER_FC:
        ms_ref_fc_forward_f32(cl->out, in, P + L->w_off, P + L->b_off, pl->n, L->c, L->oc);
        ms_ref_head_prob_f32(cp->prob, cl->out, s->head, pl->n, L->oc);
        break;
    }
done:
    return st;
}

static ms_status_t cpu_loss(ms_backend_t *be, ms_plan_t *pl, const void *t, double *loss)
{
    cpu_plan_t *cp = pl->be;
    const ms_spec_t *sp = pl->spec;
    int fc = sp->fc;
    float *y = fc >= 0 ? cp->L[fc].out : NULL, *gy = fc >= 0 ? cp->L[fc].dout : NULL;
    ms_head_t head = fc >= 0 ? sp->layers[fc].head : MS_HEAD_SOFTMAX;
    drop_deferred(pl);
    *loss = ms_ref_loss_f32(cp->glogP, cp->glog1mP, gy, cp->prob, cp->logP, cp->log1mP, y, t,
                            head, pl->n, sp->classes);
    /* the MIL output's own gradient comes only from the head */
    memset(cp->L[sp->mil].dout, 0, out_count(pl, sp->mil) * sizeof(float));
    return MS_OK;
}

static ms_status_t cpu_guided_seed(ms_backend_t *be, ms_plan_t *pl, int cls)
{
    ms_status_t st = MS_OK;
    cpu_ctx_t *c = be->ctx;
    cpu_plan_t *cp = pl->be;
    int mil = pl->spec->mil, K = pl->spec->classes, J = pl->mh * pl->mw;
    const float *Pm = cp->L[mil].out;
    drop_deferred(pl);
    /* dz = P_i * sigmoid(z_ij) for the chosen classes, then into the map's layout */
    ms_ref_sigmoid_f32(cp->dz, cp->z, out_count(pl, mil - 1));
    for (int n = 0; n < pl->n; n++)
        for (int k = 0; k < K; k++) {
            size_t i = (size_t)n * K + k;
            float g = (cls < 0 || cls == k) ? Pm[i] : 0.0f;
            for (int j = 0; j < J; j++)
                cp->dz[i * J + j] *= g;
        }
    MS_TRY(reorder_run(c, &cp->r_dz, "mil"));
done:
    return st;
}

/* Internal backward flag: the ReLU mask of this conv's output gradient is already applied
 * (the data half of a deferred backward, see cpu_backward). */
#define BWD_MASKED 0x100

static ms_status_t backward_layer(ms_backend_t *be, ms_plan_t *pl, int l, const void *params,
                                  void *grads, int flags, const ms_pass_t *pass)
{
    ms_status_t st = MS_OK;
    cpu_ctx_t *c = be->ctx;
    cpu_plan_t *cp = pl->be;
    cpu_layer_t *cl = &cp->L[l];
    const ms_layer_t *L = &pl->layers[l];
    const ms_layer_spec_t *s = L->spec;
    const char *nm = s->name;
    const float *P = params;
    float *G = grads;
    const int data = flags & MS_BWD_DATA, wts = (flags & MS_BWD_WEIGHTS) && G;
    const void *in = l ? cp->L[l - 1].out : cp->xb; /* in in_md's layout and type */
    void *din = l ? cp->L[l - 1].dout : cp->dxb;
    dnnl_memory_t m_din = l ? cp->L[l - 1].m_dout : cp->m_dxb;
    const dnnl_memory_desc_t *in_md = l ? &cp->L[l - 1].md : &cp->x_md;
    switch (s->kind) {
    case MS_LAYER_CONV:
        if (s->relu && !(flags & BWD_MASKED))
            el_kernels(EL_RELU_MASK, cl->dout, cl->dout, cl->out, NULL, md_elems(&cl->md), 0,
                       md_is_bf16(&cl->md));
        if (data) {
            /* the forward of this pass left the weights in m_wf; the backward-data layout
             * may differ (then r_wb makes it from the flat parameters) */
            MS_TRY(set_handle(cl->m_wuser, P + L->w_off, nm));
            MS_TRY(reorder_run(c, &cl->r_wb, nm));
            MS_TRY(reorder_run(c, &cl->r_ddst_d, nm));
            dnnl_exec_arg_t a[4] = {{DNNL_ARG_DIFF_DST, cl->m_ddst_d},
                                    {DNNL_ARG_WEIGHTS, cl->m_wb},
                                    {DNNL_ARG_DIFF_SRC, cl->m_dsrc}};
            MS_TRY(exec(c, &cl->bwd_data, a, 3, nm));
            MS_TRY(reorder_run(c, &cl->r_dsrc, nm));
        }
        if (wts) {
            MS_TRY(reorder_run(c, &cl->r_src_w, nm));
            MS_TRY(reorder_run(c, &cl->r_ddst_w, nm));
            dnnl_exec_arg_t a[5] = {{DNNL_ARG_SRC, cl->m_src_w},
                                    {DNNL_ARG_DIFF_DST, cl->m_ddst_w},
                                    {DNNL_ARG_DIFF_WEIGHTS, cl->m_dw},
                                    {DNNL_ARG_DIFF_BIAS, cl->m_db}};
            MS_TRY(exec(c, &cl->bwd_w, a, 4, nm));
            MS_TRY(reorder_run(c, &cl->r_dw, nm));
            add_into(G + L->w_off, cl->dwplain, L->nw);
            add_into(G + L->b_off, cl->db, L->nb);
        }
        break;
    case MS_LAYER_MAXPOOL:
    case MS_LAYER_AVGPOOL:
        if (data) {
            dnnl_exec_arg_t a[4] = {{DNNL_ARG_DIFF_DST, cl->m_dout}, {DNNL_ARG_DIFF_SRC, m_din},
                                    {DNNL_ARG_WORKSPACE, cl->m_ws}};
            MS_TRY(exec(c, &cl->bwd_data, a, cl->m_ws ? 3 : 2, nm));
        }
        break;
    case MS_LAYER_RELU:
        if (data)
            el_kernels(EL_RELU_MASK, din, cl->dout, cl->out, NULL, md_elems(&cl->md), 0,
                       md_is_bf16(&cl->md));
        break;
    case MS_LAYER_DROPOUT:
        if (data && pl->train && s->rate > 0) {
            /* the forward's mask: backward() follows the forward() of the same pass */
            dropout_back(din, cl->dout, cl->mask, md_elems(&cl->md), s->rate,
                         md_is_bf16(&cl->md));
        } else if (data && !cl->alias) {
            memcpy(din, cl->dout, md_bytes(&cl->md));
        }
        break;
    case MS_LAYER_MIL: {
        ms_mil_params_t m;
        mil_params(s, &m);
        if (data) {
            mil_backward(cp, L->nb && wts ? G + L->b_off : NULL, cl->dout,
                         L->nb ? P + L->b_off : NULL, &m, pl->n, L->c, L->h * L->w);
            MS_TRY(reorder_run(c, &cp->r_dz, nm));
        }
        break;
    }
    case MS_LAYER_FC:
        ms_ref_fc_backward_f32(data ? din : NULL, wts ? G + L->w_off : NULL,
                               wts ? G + L->b_off : NULL, cl->dout, in, P + L->w_off, pl->n,
                               L->c, L->oc);
        break;
    }
    if (data && (flags & MS_BWD_GUIDED))
        el_kernels(EL_CLAMP_NEG, din, din, NULL, NULL, md_elems(in_md), 0, md_is_bf16(in_md));
    if (l == 0 && data)
        MS_TRY(reorder_run(c, &cp->r_dx, nm));
done:
    return st;
}

/* The input gradient of the first parametrised layer (conv1 after pool0 and drop0) is only
 * needed when the caller wants the gradient w.r.t. the network's input (MS_BWD_DATA on
 * layer 0): the layers below it have nothing to learn. Its data half, and the parameter-free
 * layers' backward below it, are therefore deferred until layer 0's backward asks for data,
 * and dropped otherwise (a training step). The results are the same; conv1's backward-data
 * pass (as costly as its forward, into a 3-channel layout oneDNN handles slowly) is saved. */
static ms_status_t cpu_backward(ms_backend_t *be, ms_plan_t *pl, int l, const void *params,
                                void *grads, int flags, const ms_pass_t *pass)
{
    ms_status_t st = MS_OK;
    cpu_plan_t *cp = pl->be;
    if (l > 0 && l <= cp->first_param && (flags & MS_BWD_DATA)) {
        cpu_layer_t *cl = &cp->L[l];
        if (flags & MS_BWD_WEIGHTS)
            MS_TRY(backward_layer(be, pl, l, params, grads, flags & ~MS_BWD_DATA, pass));
        cl->dflags = (flags & ~MS_BWD_WEIGHTS) | ((flags & MS_BWD_WEIGHTS) ? BWD_MASKED : 0);
        cl->dpass = pass ? *pass : (ms_pass_t){0};
        cl->dhas_pass = pass != NULL;
        cl->deferred = 1;
        return MS_OK;
    }
    if (l == 0) {
        for (int k = cp->first_param; k > 0; k--) {
            cpu_layer_t *ck = &cp->L[k];
            if (ck->deferred && (flags & MS_BWD_DATA))
                MS_TRY(backward_layer(be, pl, k, params, NULL, ck->dflags,
                                      ck->dhas_pass ? &ck->dpass : NULL));
            ck->deferred = 0;
        }
    }
    MS_TRY(backward_layer(be, pl, l, params, grads, flags, pass));
done:
    return st;
}

static ms_status_t cpu_get_output(ms_backend_t *be, ms_plan_t *pl, ms_output_t which,
                                  void *host)
{
    ms_status_t st = MS_OK;
    cpu_ctx_t *c = be->ctx;
    cpu_plan_t *cp = pl->be;
    int mil = pl->spec->mil;
    DN("output", dnnl_stream_wait(c->stream));
    switch (which) {
    case MS_OUT_MAPS:
        ms_ref_sigmoid_f32(host, cp->z, out_count(pl, mil - 1));
        return MS_OK;
    case MS_OUT_LOGITS:
        memcpy(host, cp->z, out_count(pl, mil - 1) * sizeof(float));
        return MS_OK;
    case MS_OUT_MIL:
        memcpy(host, cp->L[mil].out, out_count(pl, mil) * sizeof(float));
        return MS_OK;
    case MS_OUT_FC:
        if (pl->spec->fc < 0)
            return MS_ERR(MS_EARG, "the network has no fc head");
        memcpy(host, cp->prob, (size_t)pl->n * pl->spec->classes * sizeof(float));
        return MS_OK;
    case MS_OUT_INPUT_GRAD:
        memcpy(host, cp->dx, md_bytes(&cp->in_md));
        return MS_OK;
    }
    return MS_ERR(MS_EARG, "unknown output %d", (int)which);
done:
    return st;
}

/* ---- memory, Adam, the table ----------------------------------------------------------- */

static ms_status_t cpu_sync(ms_backend_t *be)
{
    ms_status_t st = MS_OK;
    cpu_ctx_t *c = be->ctx;
    DN("sync", dnnl_stream_wait(c->stream));
done:
    return st;
}

static ms_status_t cpu_adam(ms_backend_t *be, void *pv, const void *gv, void *mv, void *vv,
                            size_t n, const ms_adam_t *hp, long step, ms_dtype_t dt)
{
    if (dt != MS_F32)
        return MS_ERR(MS_EARG, "the oneDNN backend runs in float only");
    float *p = pv, *m = mv, *v = vv;
    const float *g = gv;
    /* the arithmetic of ms_ref_adam_f32 (torch.optim.Adam), element by element */
    const float b1 = (float)hp->beta1, b2 = (float)hp->beta2;
    const float bc1 = 1.0f - pow(b1, (float)step), bc2 = 1.0f - pow(b2, (float)step);
    const float step_size = (float)hp->lr / bc1, sbc2 = sqrt(bc2), eps = (float)hp->eps;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        m[i] = m[i] * b1 + g[i] * (1.0f - b1);
        v[i] = v[i] * b2 + g[i] * g[i] * (1.0f - b2);
        float denom = sqrt(v[i]) / sbc2 + eps;
        p[i] -= step_size * m[i] / denom;
    }
    return MS_OK;
}

static ms_status_t cpu_clamp(ms_backend_t *be, void *p, size_t n, double lo, double hi,
                             ms_dtype_t dt)
{
    if (dt != MS_F32)
        return MS_ERR(MS_EARG, "the oneDNN backend runs in float only");
    ms_ref_clamp_f32(p, n, lo, hi);
    return MS_OK;
}

/* oneDNN's ISA values are bit sets, each a superset of the ones before it. */
static int isa_at_least(dnnl_cpu_isa_t isa, dnnl_cpu_isa_t want)
{
    return ((unsigned)isa & (unsigned)want) == (unsigned)want;
}
static int bf16_capable(dnnl_cpu_isa_t isa) { return isa_at_least(isa, dnnl_cpu_isa_avx512_core); }
static int bf16_native(dnnl_cpu_isa_t isa)
{
    return isa_at_least(isa, dnnl_cpu_isa_avx512_core_bf16);
}

static const char *isa_name(dnnl_cpu_isa_t isa)
{
    switch ((int)isa) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "all";
    }
}

/* The CPU model from /proc/cpuinfo ("unknown CPU" elsewhere). */
static void cpu_model(char *buf, size_t n)
{
    snprintf(buf, n, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            char *v = strchr(line, ':');
            if (v) {
                v += 1 + strspn(v + 1, " \t");
                v[strcspn(v, "\n")] = 0;
                snprintf(buf, n, "%s", v);
            }
            break;
        }
    fclose(f);
}

static void cpu_describe(ms_backend_t *be, char *buf, size_t n)
{
    cpu_ctx_t *c = be->ctx;
    char model[256];
    cpu_model(model, sizeof model);
    const dnnl_version_t *v = dnnl_version();
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    snprintf(buf, n, "cpu: oneDNN %d.%d.%d, %s, ISA %s, %d threads, %s", v->major, v->minor,
             v->patch, model, isa_name(isa), c->threads,
             !c->bf16 ? "fp32"
             : bf16_native(isa) ? "bf16 convolutions (fp32 accumulation, fp32 master weights "
                                  "and Adam)"
                                : "bf16 convolutions EMULATED (no AVX512_BF16: slower than "
                                  "fp32)");
}

static void cpu_destroy(ms_backend_t *be)
{
    cpu_ctx_t *c = be->ctx;
    if (c) {
        if (c->stream)
            dnnl_stream_destroy(c->stream);
        if (c->eng)
            dnnl_engine_destroy(c->eng);
        free(c);
    }
    free(be);
}

ms_status_t ms_backend_cpu(ms_backend_t **out, int threads, const char *precision)
{
    ms_status_t st = MS_OK;
    *out = NULL;
    int bf16 = 0;
    if (precision && strcmp(precision, "fp32")) {
        if (strcmp(precision, "bf16"))
            return MS_ERR(MS_EARG, "precision '%s' is not one the cpu backend runs (fp32, bf16)",
                          precision);
        /* oneDNN's bf16 kernels need AVX-512 (they emulate the bf16 instructions on
         * avx512_core, native from avx512_core_bf16 on) */
        dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
        if (!bf16_capable(isa))
            return MS_ERR(MS_EARG, "precision bf16 on the cpu backend needs AVX-512 (oneDNN ISA "
                                   "avx512_core or later); this CPU runs %s: use precision "
                                   "fp32", isa_name(isa));
        bf16 = 1;
    }
    ms_backend_t *be = calloc(1, sizeof *be);
    cpu_ctx_t *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return MS_ERR(MS_ENOMEM, "out of memory");
    }
    *be = (ms_backend_t){
        .name = "cpu",
        .ctx = c,
        .dtypes = MS_F32,
        .destroy = cpu_destroy,
        .describe = cpu_describe,
        .alloc = ms_host_alloc,
        .release = ms_host_release,
        .upload = ms_host_copy,
        .download = ms_host_copy,
        .zero = ms_host_zero,
        .sync = cpu_sync,
        .plan_create = cpu_plan_create,
        .plan_destroy = cpu_plan_destroy,
        .set_input = cpu_set_input,
        .forward = cpu_forward,
        .loss = cpu_loss,
        .guided_seed = cpu_guided_seed,
        .backward = cpu_backward,
        .get_output = cpu_get_output,
        .adam = cpu_adam,
        .clamp = cpu_clamp,
    };
    /* oneDNN's OpenMP runtime takes the process-wide thread count */
    if (threads > 0)
        omp_set_num_threads(threads);
    c->threads = omp_get_max_threads();
    c->bf16 = bf16;
    DN("engine", dnnl_engine_create(&c->eng, dnnl_cpu, 0));
    DN("engine", dnnl_stream_create(&c->stream, c->eng, dnnl_stream_default_flags));
    *out = be;
    return MS_OK;
done:
    cpu_destroy(be);
    return st;
}
